//! TLS of a cluster's agents (`spec.tls`): the CA Secret that only the operator reads,
//! and the Secret mounted into the agent container (the CAs the agents trust, their
//! certificate and its key). Pure: the CA and the certificates are made by
//! [`crate::ca`], the time is given.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::meta;
use crate::ca::{self, Ca, Leaf};
use crate::crd::ClusterSpec;
use crate::validate::Problem;

const DAY: u64 = 24 * 3600;
/// How long a cluster's CA is valid.
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * DAY);
/// A CA in use with less than this left is rotated (a new one, without a restart).
pub const CA_ROTATE_BEFORE: Duration = Duration::from_secs(365 * DAY);
/// How long an agent certificate is valid (never beyond its CA).
pub const CERTIFICATE_LIFETIME: Duration = Duration::from_secs(180 * DAY);
/// An agent certificate with less than this left is issued anew.
pub const RENEW_BEFORE: Duration = Duration::from_secs(60 * DAY);

/// Keys of the CA Secret: the CA's certificate, its key, and its name (the issuer
/// name of what it signs, needed to sign again).
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const CA_NAME: &str = "ca.name";
/// Keys of the agents' Secret (a `kubernetes.io/tls` Secret, with the CA bundle).
pub const TLS_CERT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";

/// The Secret with the cluster's CA and its key: the operator's alone, never mounted.
pub fn ca_secret_name(cs: &ClusterSpec) -> String {
    format!("{}{CA_SECRET_SUFFIX}", cs.name_any())
}

/// The Secret of a CA made by a rotation, named by its id (the fingerprint of its
/// certificate): `<name>-<first 12 of the id>-muster-ca`. The first CA keeps
/// [`ca_secret_name`].
pub fn rotated_ca_secret_name(cs: &ClusterSpec, id: &str) -> String {
    format!(
        "{}-{}{CA_SECRET_SUFFIX}",
        cs.name_any(),
        id.get(..12).unwrap_or(id)
    )
}

/// The Secret the agent container mounts: the trusted CAs, the certificate, its key.
pub fn tls_secret_name(cs: &ClusterSpec) -> String {
    format!("{}{TLS_SECRET_SUFFIX}", cs.name_any())
}

/// How the two Secrets' names end (no pod template may mount one of any cluster).
pub const CA_SECRET_SUFFIX: &str = "-muster-ca";
pub const TLS_SECRET_SUFFIX: &str = "-muster-tls";

/// The name every agent of `cs` carries in its certificate and checks in its peers'.
pub fn server_name(cs: &ClusterSpec) -> String {
    ca::server_name(
        &cs.name_any(),
        cs.namespace().as_deref().unwrap_or_default(),
    )
}

/// The CA's name (its certificate's common name): the cluster and when it was made.
pub fn ca_name(cs: &ClusterSpec, now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!(
        "muster {}/{} CA {}",
        cs.namespace().unwrap_or_default(),
        cs.name_any(),
        &node_agent::tls::rfc3339(secs)[..10]
    )
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

/// The CA Secret for `ca` (the cluster's first CA).
pub fn ca_secret(cs: &ClusterSpec, ca: &Ca) -> Secret {
    ca_secret_named(cs, &ca_secret_name(cs), ca)
}

/// A CA Secret named `name` for `ca`.
pub fn ca_secret_named(cs: &ClusterSpec, name: &str, ca: &Ca) -> Secret {
    Secret {
        metadata: meta(cs, name),
        // Never changed: a CA edited in place would be a new CA for the agents.
        immutable: Some(true),
        type_: Some("Opaque".into()),
        data: Some(data(&[
            (CA_CERT, &ca.cert_pem),
            (CA_KEY, &ca.key_pem),
            (CA_NAME, &ca.name),
        ])),
        ..Secret::default()
    }
}

/// The agents' Secret: `trusted` (PEM CA certificates) and `leaf`.
pub fn tls_secret(cs: &ClusterSpec, trusted: &str, leaf: &Leaf) -> Secret {
    Secret {
        metadata: meta(cs, &tls_secret_name(cs)),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data(&[
            (CA_CERT, trusted),
            (TLS_CERT, &leaf.cert_pem),
            (TLS_KEY, &leaf.key_pem),
        ])),
        ..Secret::default()
    }
}

/// The text under `key` of `secret`; why not, naming both.
pub fn text<'a>(secret: &'a Secret, key: &str) -> Result<&'a str, String> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| format!("Secret {name} has no {key}"))?;
    std::str::from_utf8(&bytes.0).map_err(|_| format!("{key} of Secret {name} is not text"))
}

/// Whether `secret` holds `value` under `key`.
pub fn holds(secret: &Secret, key: &str, value: &str) -> bool {
    text(secret, key).is_ok_and(|t| t == value)
}

/// The DER of the first PEM certificate in `pem`.
pub fn first_der(pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

/// The CA kept in `secret` (made by [`ca_secret`]).
pub fn ca_of(secret: &Secret) -> Result<Ca, String> {
    let cert_pem = text(secret, CA_CERT)?;
    let not_after = first_der(cert_pem)
        .as_deref()
        .and_then(node_agent::tls::not_after)
        .ok_or_else(|| format!("{CA_CERT} holds no readable PEM certificate"))?;
    Ok(Ca {
        name: text(secret, CA_NAME)?.to_owned(),
        cert_pem: cert_pem.to_owned(),
        key_pem: text(secret, CA_KEY)?.to_owned(),
        not_after: UNIX_EPOCH + Duration::from_secs(not_after),
    })
}

/// What the agents' Secret holds, against the cluster's CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mounted {
    /// A certificate the agents accept under the CA, valid for longer than
    /// [`RENEW_BEFORE`] or until the CA ends (only a CA rotation gives a longer one
    /// then).
    Current { not_after: SystemTime },
    /// The agents trust the CA, and their certificate ends within [`RENEW_BEFORE`] (or
    /// has ended, or is not one they accept): a new one from the CA replaces it — the
    /// trusted CAs stay, so every agent accepts the old and the new alike.
    Renew { trusted: String, why: String },
    /// The agents do not trust the CA: a certificate from it would cut the agents that
    /// take it off from the others. Nothing is written.
    Unusable(String),
}

/// Whether the agents' Secret `mounted` is current under `ca` at `now`.
pub fn mounted(mounted: &Secret, ca: &Ca, server_name: &str, now: SystemTime) -> Mounted {
    let trusted = match text(mounted, CA_CERT) {
        Ok(t) => t,
        Err(e) => return Mounted::Unusable(e),
    };
    let ca_der = first_der(&ca.cert_pem);
    let trusts_ca = CertificateDer::pem_slice_iter(trusted.as_bytes())
        .filter_map(Result::ok)
        .any(|c| Some(&c) == ca_der.as_ref());
    if !trusts_ca {
        return Mounted::Unusable(format!(
            "its {CA_CERT} does not hold the cluster's CA ({:?})",
            ca.name
        ));
    }
    let renew = |why: String| Mounted::Renew {
        trusted: trusted.to_owned(),
        why,
    };
    let (Ok(cert_pem), Ok(key_pem)) = (text(mounted, TLS_CERT), text(mounted, TLS_KEY)) else {
        return renew(format!("it lacks {TLS_CERT} or {TLS_KEY}"));
    };
    let Some(end) = first_der(cert_pem)
        .as_deref()
        .and_then(node_agent::tls::not_after)
    else {
        return renew(format!("its {TLS_CERT} holds no readable certificate"));
    };
    let not_after = UNIX_EPOCH + Duration::from_secs(end);
    // A certificate that ends with its CA is as long as one can be: issuing again would
    // not help (only a CA rotation does).
    let ends_with_ca = end
        >= ca
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
    if not_after < now + RENEW_BEFORE && !ends_with_ca {
        let secs = end.saturating_sub(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        return renew(format!(
            "its certificate ends at {} ({} days left)",
            node_agent::tls::rfc3339(end),
            secs / DAY
        ));
    }
    let leaf = Leaf {
        cert_pem: cert_pem.to_owned(),
        key_pem: key_pem.to_owned(),
        not_after,
    };
    match ca::agents_accept(&leaf, &[ca], server_name) {
        Ok(_) => Mounted::Current { not_after },
        Err(e) => renew(format!("the agents would refuse its certificate: {e}")),
    }
}

/// Whether `live` (the cluster's StatefulSet) runs its agents with TLS: its pods
/// mount the agents' TLS Secret.
pub fn live_tls(cs: &ClusterSpec, live: &StatefulSet) -> bool {
    let secret = tls_secret_name(cs);
    live.spec
        .template
        .spec
        .as_ref()
        .and_then(|p| p.volumes.as_ref())
        .is_some_and(|v| {
            v.iter().any(|v| {
                v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret.as_str())
            })
        })
}

/// A problem when `spec.tls.enabled` differs from how the `live` StatefulSet's `pods`
/// run: agents with and without TLS cannot reach each other, so a rollout from one to
/// the other would stall at its first pod, or, with the new-cluster lock open, form a
/// second cluster.
pub fn switched(cs: &ClusterSpec, live: Option<&StatefulSet>, pods: usize) -> Option<Problem> {
    let live = live?;
    let was = live_tls(cs, live);
    if pods == 0 || was == cs.spec.tls.enabled {
        return None;
    }
    let (from, to) = if was { ("on", "off") } else { ("off", "on") };
    Some(Problem {
        field: "spec.tls.enabled".into(),
        message: format!(
            "cannot turn TLS {to} while the cluster has pods ({pods} run with TLS {from}): agents with and without TLS cannot reach each other, so replacing them one by one would split the cluster. Set it back to {was}; to change it, delete the ClusterSpec and create it again with the new setting (the cluster starts anew)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> ClusterSpec {
        let spec = serde_yaml::from_str("{}").expect("a spec");
        let mut cs = ClusterSpec::new("cache", spec);
        cs.metadata.namespace = Some("team-a".into());
        cs.spec.tls.enabled = true;
        cs
    }

    #[test]
    fn the_ca_secret_gives_back_the_ca_and_it_signs_what_agents_accept() {
        let cs = cluster();
        let now = SystemTime::now();
        let ca = ca::new_ca(&ca_name(&cs, now), now, CA_LIFETIME).unwrap();
        assert!(
            ca.name.starts_with("muster team-a/cache CA 20"),
            "{}",
            ca.name
        );
        let secret = ca_secret(&cs, &ca);
        assert_eq!(secret.metadata.name.as_deref(), Some("cache-muster-ca"));
        let back = ca_of(&secret).unwrap();
        // The end as the certificate holds it: whole seconds.
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(back.not_after), secs(ca.not_after));
        assert_eq!((&back.name, &back.key_pem), (&ca.name, &ca.key_pem));
        let name = server_name(&cs);
        assert_eq!(name, "cache.team-a.muster");
        let leaf = ca::issue(&back, &name, now, CERTIFICATE_LIFETIME).unwrap();
        let mounted_secret = tls_secret(&cs, &ca.cert_pem, &leaf);
        match mounted(&mounted_secret, &back, &name, now) {
            Mounted::Current { not_after } => assert_eq!(secs(not_after), secs(leaf.not_after)),
            other => panic!("{other:?}"),
        }
        // Its key is never printed.
        assert!(!format!("{back:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_certificate_near_its_end_is_renewed_under_the_same_trust() {
        let cs = cluster();
        let now = SystemTime::now();
        let ca = ca::new_ca("muster team-a/cache CA", now, CA_LIFETIME).unwrap();
        let other = ca::new_ca("another CA", now, CA_LIFETIME).unwrap();
        let name = server_name(&cs);
        let leaf = ca::issue(&ca, &name, now, CERTIFICATE_LIFETIME).unwrap();
        let trusted = format!("{}{}", ca.cert_pem, other.cert_pem);
        let secret = tls_secret(&cs, &trusted, &leaf);
        let later = now + CERTIFICATE_LIFETIME - RENEW_BEFORE + Duration::from_secs(1);
        match mounted(&secret, &ca, &name, later) {
            Mounted::Renew { trusted: t, why } => {
                assert_eq!(t, trusted, "the trusted CAs stay as they are");
                assert!(why.contains("59 days left"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        // In the CA's last days a certificate ends with it: not issued again and again.
        let ending = ca::new_ca("an ending CA", now, Duration::from_secs(40 * DAY)).unwrap();
        let last = ca::issue(&ending, &name, now, CERTIFICATE_LIFETIME).unwrap();
        let secret = tls_secret(&cs, &ending.cert_pem, &last);
        assert!(matches!(
            mounted(&secret, &ending, &name, now),
            Mounted::Current { .. }
        ));
        // A certificate of another CA (that the agents trust) is replaced too.
        let foreign = ca::issue(&other, &name, now, CERTIFICATE_LIFETIME).unwrap();
        let secret = tls_secret(&cs, &trusted, &foreign);
        assert!(matches!(
            mounted(&secret, &ca, &name, now),
            Mounted::Renew { why, .. } if why.contains("would refuse")
        ));
        // Agents that do not trust the cluster's CA get nothing from it.
        let secret = tls_secret(&cs, &other.cert_pem, &foreign);
        assert!(matches!(
            mounted(&secret, &ca, &name, now),
            Mounted::Unusable(why) if why.contains("does not hold the cluster's CA")
        ));
    }

    #[test]
    fn the_agent_container_alone_mounts_the_certificate_and_is_probed_over_https() {
        let mut cs = cluster();
        cs.spec.application = serde_json::from_value(serde_json::json!({
            "name": "app", "image": "app:1",
        }))
        .unwrap();
        let site = super::super::Site::new(super::super::Selection::Muster);
        let o = super::super::owned(&cs, true, &site).unwrap();
        let pod = o.stateful_set.spec.template.spec.unwrap();
        let volume = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == super::super::TLS_VOLUME)
            .expect("the TLS volume");
        assert_eq!(
            volume.secret.unwrap().secret_name.as_deref(),
            Some("cache-muster-tls")
        );
        let (agent, app) = (&pod.containers[0], &pod.containers[1]);
        assert!(
            agent
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "muster-tls"
                    && m.mount_path == super::super::TLS_DIR
                    && m.read_only == Some(true))
        );
        assert!(
            app.volume_mounts
                .iter()
                .flatten()
                .all(|m| m.name != "muster-tls")
        );
        let url = app
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "MUSTER_AGENT_URL");
        assert_eq!(
            url.and_then(|e| e.value.as_deref()),
            Some("https://$(MUSTER_POD_IP):8558")
        );
        for probe in [
            &agent.readiness_probe,
            &agent.liveness_probe,
            &agent.startup_probe,
        ] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.scheme.as_deref(), Some("HTTPS"));
        }
        let yaml = o.config_map.data.unwrap()["agent.yaml"].clone();
        for line in [
            "cert-file: /etc/muster/tls/tls.crt",
            "key-file: /etc/muster/tls/tls.key",
            "ca-file: /etc/muster/tls/ca.crt",
            "server-name: cache.team-a.muster",
        ] {
            assert!(yaml.contains(line), "{line} not in\n{yaml}");
        }
        // No pod template may mount either Secret, of this cluster or another.
        for secret in ["cache-muster-tls", "cache-muster-ca", "other-muster-ca"] {
            let template = serde_json::json!({"spec": {"volumes": [
                {"name": "x", "secret": {"secretName": secret}}
            ]}});
            let p = crate::pod_template::secret_references(
                &[],
                Some(&template),
                "cache-cluster-key",
                "cache",
            );
            assert_eq!(p.len(), 1, "{secret}: {p:?}");
        }
        // Without TLS: plain HTTP probes, no volume, no tls section.
        cs.spec.tls.enabled = false;
        let o = super::super::owned(&cs, true, &site).unwrap();
        let pod = o.stateful_set.spec.template.spec.unwrap();
        assert!(pod.volumes.unwrap().iter().all(|v| v.name != "muster-tls"));
        let get = pod.containers[0]
            .readiness_probe
            .clone()
            .unwrap()
            .http_get
            .unwrap();
        assert_eq!(get.scheme, None);
        assert!(!o.config_map.data.unwrap()["agent.yaml"].contains("tls"));
    }

    #[test]
    fn tls_cannot_be_switched_under_running_pods() {
        let mut cs = cluster();
        let site = super::super::Site::new(super::super::Selection::Muster);
        let with = super::super::owned(&cs, true, &site).unwrap().stateful_set;
        assert!(live_tls(&cs, &with));
        assert_eq!(switched(&cs, Some(&with), 3), None);
        cs.spec.tls.enabled = false;
        let without = super::super::owned(&cs, true, &site).unwrap().stateful_set;
        assert!(!live_tls(&cs, &without));
        let p = switched(&cs, Some(&with), 3).expect("a problem");
        assert_eq!(p.field, "spec.tls.enabled");
        assert!(p.message.contains("cannot turn TLS off"), "{}", p.message);
        // No pods: the next ones start with the new setting.
        assert_eq!(switched(&cs, Some(&with), 0), None);
        assert_eq!(switched(&cs, None, 3), None);
    }
}
