//! `GET /bootstrap/seed-nodes`: what a contact point tells a prober — the one shape of a
//! probe answer, on the wire and in the bootstrap decision.

use std::collections::BTreeSet;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::base::address::{ContactPoint, NodeAddress};
use crate::base::member::MemberStatus;
use crate::base::secret::ClusterKey;

/// The prober's random nonce, which the answer's signature covers (a recorded answer
/// cannot be replayed to another probe).
pub const NONCE_HEADER: &str = "muster-nonce";
/// HMAC-SHA256 with the cluster key over the nonce and the body, hex.
pub const SIGNATURE_HEADER: &str = "muster-signature";

/// Whether `nonce` is one a prober sends: 32 to 64 hex digits.
pub fn valid_nonce(nonce: &str) -> bool {
    (32..=64).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_hexdigit())
}

fn mac(key: &[u8], nonce: &str, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(b"muster /bootstrap/seed-nodes v1\0");
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(body);
    mac
}

/// The signature of an answer `body` to the probe that sent `nonce`.
pub fn sign(key: &ClusterKey, nonce: &str, body: &[u8]) -> String {
    key.with_signing(|k| crate::base::hex(&mac(k, nonce, body).finalize().into_bytes()))
}

/// Checks `signature` (hex) in time independent of where it differs, with each key the
/// cluster accepts (two during a key rotation).
pub fn verify(key: &ClusterKey, nonce: &str, body: &[u8], signature: &str) -> Result<(), Refused> {
    let bytes: Option<Vec<u8>> = (signature.len() == 64)
        .then(|| {
            (0..64)
                .step_by(2)
                .map(|i| u8::from_str_radix(signature.get(i..i + 2)?, 16).ok())
                .collect()
        })
        .flatten();
    let Some(bytes) = bytes else {
        return Err(Refused::BadSignature);
    };
    key.any_accepts(|k| mac(k, nonce, body).verify_slice(&bytes).is_ok())
        .then_some(())
        .ok_or(Refused::BadSignature)
}

/// Seed nodes or contact points accepted in one answer.
pub const MAX_LIST: usize = 10_000;

/// Akka's `SeedNodes`, plus muster's `contactPoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedNodes {
    /// The answering node's cluster address.
    pub self_node: NodeAddress,
    /// Members it reports (Up, WeaklyUp or Joining); empty when it is not a member.
    pub seed_nodes: Vec<SeedNode>,
    /// muster: every contact point this node has discovered. Peers form early when all
    /// report the same set; Akka peers ignore the field (`None` from them, which then
    /// never agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_points: Option<BTreeSet<ContactPoint>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedNode {
    pub node: NodeAddress,
    /// A number here, as in Akka Management's `SeedNodes`.
    pub node_uid: u64,
    pub status: MemberStatus,
    pub roles: Vec<String>,
}

/// Why an answer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("belongs to another cluster: {0}")]
    OtherCluster(String),
    #[error(
        "not signed: the contact point has no cluster key (cluster.key-file), so its answer does not count"
    )]
    Unsigned,
    #[error(
        "bad signature: the contact point has another cluster key, or the answer was altered, so it does not count"
    )]
    BadSignature,
}

impl SeedNodes {
    /// The seed nodes' addresses.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeAddress> {
        self.seed_nodes.iter().map(|s| &s.node)
    }

    /// Parses an answer body and checks it against this node's cluster name: every
    /// address must be in cluster `system`, and lists are bounded.
    pub fn parse(body: &[u8], system: &str) -> Result<Self, Refused> {
        let answer: Self =
            serde_json::from_slice(body).map_err(|e| Refused::Malformed(e.to_string()))?;
        if answer.self_node.system != system {
            return Err(Refused::OtherCluster(format!(
                "{} is in cluster `{}`, this node is in `{system}`",
                answer.self_node, answer.self_node.system
            )));
        }
        if answer.seed_nodes.len() > MAX_LIST
            || answer
                .contact_points
                .as_ref()
                .is_some_and(|c| c.len() > MAX_LIST)
        {
            return Err(Refused::Malformed("too many entries".into()));
        }
        if let Some(bad) = answer.nodes().find(|s| s.system != system) {
            return Err(Refused::OtherCluster(format!("reports seed node {bad}")));
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_akka_and_muster_answers() {
        let akka = r#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[{"node":"muster://shop@10.0.0.1:2552","nodeUid":42,"status":"Up","roles":["dc-default"]}]}"#;
        let a = SeedNodes::parse(akka.as_bytes(), "shop").unwrap();
        assert_eq!(a.seed_nodes.len(), 1);
        assert_eq!(a.contact_points, None);
        let muster = r#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[],"contactPoints":["10.0.0.1:8558","10.0.0.2:8558"],"future":1}"#;
        let a = SeedNodes::parse(muster.as_bytes(), "shop").unwrap();
        assert_eq!(a.contact_points.unwrap().len(), 2);
    }

    #[test]
    fn the_text_form_is_what_it_always_was() {
        let a = SeedNodes {
            self_node: "muster://shop@10.0.0.1:2552".parse().unwrap(),
            seed_nodes: vec![SeedNode {
                node: "muster://shop@10.0.0.1:2552".parse().unwrap(),
                node_uid: 42,
                status: MemberStatus::Up,
                roles: vec!["a".into()],
            }],
            contact_points: Some(["10.0.0.2:8558".parse().unwrap()].into()),
        };
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[{"node":"muster://shop@10.0.0.1:2552","nodeUid":42,"status":"Up","roles":["a"]}],"contactPoints":["10.0.0.2:8558"]}"#
        );
    }

    #[test]
    fn refuses_garbage_and_other_clusters() {
        type Check = fn(&Refused) -> bool;
        let cases: [(&str, Check); 6] = [
            ("not json", |e| matches!(e, Refused::Malformed(_))),
            ("{}", |e| matches!(e, Refused::Malformed(_))),
            (r#"{"selfNode":"nonsense","seedNodes":[]}"#, |e| {
                matches!(e, Refused::Malformed(_))
            }),
            (
                r#"{"selfNode":"muster://other@10.0.0.1:2552","seedNodes":[]}"#,
                |e| matches!(e, Refused::OtherCluster(_)),
            ),
            (
                r#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[{"node":"muster://evil@10.6.6.6:2552","nodeUid":1,"status":"Up","roles":[]}]}"#,
                |e| matches!(e, Refused::OtherCluster(_)),
            ),
            (
                r#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[],"contactPoints":["x"]}"#,
                |e| matches!(e, Refused::Malformed(_)),
            ),
        ];
        for (body, check) in cases {
            let e = SeedNodes::parse(body.as_bytes(), "shop").unwrap_err();
            assert!(check(&e), "{body}: {e:?}");
        }
    }
}
