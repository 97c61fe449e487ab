//! Probing a contact point: `GET http://CP/bootstrap/seed-nodes` over a kept-alive
//! connection (one per peer: the pool keeps one idle connection per host, and probes of
//! one peer never overlap). Answers are size-limited and validated; anything odd is a
//! clear error for `/bootstrap/status`, never a crash.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::address::{ContactPoint, NodeAddress};
use crate::management::api::SeedNodes;

/// Largest answer accepted.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// Seed nodes / contact points accepted in one answer.
const MAX_LIST: usize = 10_000;
/// Request header naming the prober's own contact point: the probed node may then probe
/// back at once instead of waiting for its next round.
pub const PROBER_HEADER: &str = "muster-prober";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("belongs to another cluster: {0}")]
    OtherCluster(String),
}

impl ProbeError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::TooLarge | Self::Malformed(_) | Self::OtherCluster(_) => "malformed",
            _ => "error",
        }
    }
}

/// What a valid answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub self_node: NodeAddress,
    pub seed_nodes: Vec<NodeAddress>,
    pub contact_points: Option<BTreeSet<ContactPoint>>,
}

/// Validates an answer body against our cluster name.
pub fn parse_answer(body: &[u8], system: &str) -> Result<Answer, ProbeError> {
    let wire: SeedNodes =
        serde_json::from_slice(body).map_err(|e| ProbeError::Malformed(e.to_string()))?;
    let self_node: NodeAddress = wire
        .self_node
        .parse()
        .map_err(|e: crate::address::AddressParseError| ProbeError::Malformed(e.to_string()))?;
    if self_node.system != system {
        return Err(ProbeError::OtherCluster(format!(
            "{self_node} is in cluster `{}`, this node is in `{system}`",
            self_node.system
        )));
    }
    if wire.seed_nodes.len() > MAX_LIST
        || wire
            .contact_points
            .as_ref()
            .is_some_and(|c| c.len() > MAX_LIST)
    {
        return Err(ProbeError::Malformed("too many entries".into()));
    }
    let seed_nodes = wire
        .seed_nodes
        .iter()
        .map(|s| s.node.parse::<NodeAddress>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ProbeError::Malformed(e.to_string()))?;
    if let Some(bad) = seed_nodes.iter().find(|s| s.system != system) {
        return Err(ProbeError::OtherCluster(format!("reports seed node {bad}")));
    }
    let contact_points = wire
        .contact_points
        .map(|cps| {
            cps.iter()
                .map(|c| c.parse::<ContactPoint>())
                .collect::<Result<BTreeSet<_>, _>>()
        })
        .transpose()
        .map_err(|e| ProbeError::Malformed(e.to_string()))?;
    Ok(Answer {
        self_node,
        seed_nodes,
        contact_points,
    })
}

/// The HTTP client of all probes of this node.
#[derive(Debug, Clone)]
pub struct Prober {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    me: String,
    system: String,
}

impl Prober {
    pub fn new(local_ip: IpAddr, me: &ContactPoint, system: &str, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        connector.set_local_address(Some(local_ip));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1)
            .build(connector);
        Self {
            client,
            timeout,
            me: me.to_string(),
            system: system.to_owned(),
        }
    }

    pub async fn probe(&self, cp: &ContactPoint) -> Result<Answer, ProbeError> {
        match tokio::time::timeout(self.timeout, self.fetch(cp)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout(self.timeout)),
        }
    }

    async fn fetch(&self, cp: &ContactPoint) -> Result<Answer, ProbeError> {
        let uri = format!("http://{cp}/bootstrap/seed-nodes");
        let req = http::Request::get(uri)
            .header(PROBER_HEADER, &self.me)
            .body(Empty::new())
            .map_err(|e| ProbeError::Unreachable(e.to_string()))?;
        let resp = self.client.request(req).await.map_err(|e| {
            use std::error::Error;
            let mut msg = e.to_string();
            if let Some(src) = e.source() {
                msg = format!("{msg}: {src}");
            }
            ProbeError::Unreachable(msg)
        })?;
        if !resp.status().is_success() {
            return Err(ProbeError::Status(resp.status().as_u16()));
        }
        let body = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    ProbeError::TooLarge
                } else {
                    ProbeError::Unreachable(e.to_string())
                }
            })?
            .to_bytes();
        parse_answer(&body, &self.system)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_akka_and_muster_answers() {
        let akka = r#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[{"node":"muster://shop@10.0.0.1:2552","nodeUid":42,"status":"Up","roles":["dc-default"]}]}"#;
        let a = parse_answer(akka.as_bytes(), "shop").unwrap();
        assert_eq!(a.seed_nodes.len(), 1);
        assert_eq!(a.contact_points, None);
        let muster = r#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[],"contactPoints":["10.0.0.1:8558","10.0.0.2:8558"],"future":1}"#;
        let a = parse_answer(muster.as_bytes(), "shop").unwrap();
        assert_eq!(a.contact_points.unwrap().len(), 2);
    }

    #[test]
    fn refuses_garbage_and_other_clusters() {
        type Check = fn(&ProbeError) -> bool;
        let cases: [(&str, Check); 6] = [
            ("not json", |e| matches!(e, ProbeError::Malformed(_))),
            ("{}", |e| matches!(e, ProbeError::Malformed(_))),
            (r#"{"selfNode":"nonsense","seedNodes":[]}"#, |e| {
                matches!(e, ProbeError::Malformed(_))
            }),
            (
                r#"{"selfNode":"muster://other@10.0.0.1:2552","seedNodes":[]}"#,
                |e| matches!(e, ProbeError::OtherCluster(_)),
            ),
            (
                r#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[{"node":"muster://evil@10.6.6.6:2552","nodeUid":1,"status":"Up","roles":[]}]}"#,
                |e| matches!(e, ProbeError::OtherCluster(_)),
            ),
            (
                r#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[],"contactPoints":["x"]}"#,
                |e| matches!(e, ProbeError::Malformed(_)),
            ),
        ];
        for (body, check) in cases {
            let e = parse_answer(body.as_bytes(), "shop").unwrap_err();
            assert!(check(&e), "{body}: {e:?}");
        }
    }
}
