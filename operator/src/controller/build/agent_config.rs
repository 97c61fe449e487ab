//! `spec.agent.config`: any agent setting, in the agent's own keys, merged over what the
//! operator writes, and the whole checked by the agent's own loader as an agent in a pod
//! would load it — so a bad key or value is a problem naming its field, never a pod
//! that crash-loops. Keys the operator sets are refused with the reason, keys that have
//! a ClusterSpec field with that field.

use node_agent::config::{Environment, Files, Settings};
use serde_yaml::{Mapping, Value};

use super::{CLUSTER_KEY, KEY_DIR, MANAGEMENT_TOKEN};
use crate::crd::ClusterSpec;
use crate::validate::Problem;

/// Where the field lives in the ClusterSpec.
pub const FIELD: &str = "spec.agent.config";

/// Agent keys (and the keys under them) the operator sets, and why.
const OPERATOR_OWNED: [(&str, &str); 26] = [
    (
        "cluster.app-version",
        "each pod's template revision (controller-revision-hash)",
    ),
    ("cluster.name", "the ClusterSpec's name"),
    ("cluster.hostname", "the pod IP"),
    ("cluster.port", "the pods' and the Service's ports"),
    ("management.hostname", "the pod IP"),
    ("management.port", "the pods' and the Service's ports"),
    (
        "cluster.seed-nodes",
        "the pods find each other by discovery",
    ),
    ("cluster.key-file", "the cluster key Secret"),
    (
        "cluster.allow-unauthenticated",
        "every cluster has a key (the Secret)",
    ),
    ("management.token-file", "the management token Secret"),
    ("management.token", "the management token Secret"),
    (
        "management.ready-states",
        "the pods' readiness: the operator's rollouts, scale-down and PodDisruptionBudget count a Ready pod as an Up (or WeaklyUp) member",
    ),
    (
        "bootstrap.formation-lease",
        "the cluster's formation record",
    ),
    ("bootstrap.service-name", "the headless Service"),
    ("bootstrap.service-namespace", "the ClusterSpec's namespace"),
    ("bootstrap.port-name", "the pods' ports"),
    ("bootstrap.protocol", "the pods' ports"),
    ("bootstrap.fallback-port", "the pods' ports"),
    ("bootstrap.filter-on-fallback-port", "the pods' ports"),
    (
        "bootstrap.contact-point-agreement",
        "agreement is what keeps a second cluster from forming",
    ),
    (
        "discovery.config",
        "discovery follows spec.bootstrap.discovery",
    ),
    (
        "discovery.kubernetes-api",
        "discovery follows spec.bootstrap.discovery",
    ),
    (
        "discovery.aggregate",
        "discovery follows spec.bootstrap.discovery",
    ),
    (
        "discovery.dns.nameserver",
        "the pods use the cluster DNS, which serves the headless Service",
    ),
    (
        "cluster.split-brain-resolver.lease-majority.lease-name",
        "the Lease the agents' Role grants",
    ),
    (
        "cluster.split-brain-resolver.lease-majority.namespace",
        "the ClusterSpec's namespace",
    ),
];

/// Agent keys with a ClusterSpec field: problems with them name the field, and
/// `spec.agent.config` may not set them.
const IN_THE_SPEC: [(&str, &str); 26] = [
    ("cluster.roles", "spec.agent.roles"),
    ("cluster.leave-timeout", "spec.membership.leaveTimeout"),
    (
        "cluster.handover-timeout",
        "spec.membership.handoverTimeout",
    ),
    (
        "cluster.failure-detector.threshold",
        "spec.membership.failureDetectorThreshold",
    ),
    (
        "cluster.failure-detector.acceptable-heartbeat-pause",
        "spec.membership.failureDetector.acceptableHeartbeatPause",
    ),
    (
        "cluster.failure-detector.heartbeat-interval",
        "spec.membership.failureDetector.heartbeatInterval",
    ),
    (
        "cluster.failure-detector.min-std-deviation",
        "spec.membership.failureDetector.minStdDeviation",
    ),
    (
        "cluster.failure-detector.expected-response-after",
        "spec.membership.failureDetector.expectedResponseAfter",
    ),
    (
        "cluster.failure-detector.monitored-by-nr-of-members",
        "spec.membership.failureDetector.monitoredByNrOfMembers",
    ),
    (
        "cluster.failure-detector.max-sample-size",
        "spec.membership.failureDetector.maxSampleSize",
    ),
    (
        "cluster.split-brain-resolver.active-strategy",
        "spec.membership.downing",
    ),
    (
        "cluster.split-brain-resolver.stable-after",
        "spec.membership.stableAfter",
    ),
    (
        "cluster.split-brain-resolver.down-all-when-unstable",
        "spec.membership.downAllWhenUnstable",
    ),
    (
        "cluster.split-brain-resolver.static-quorum.quorum-size",
        "spec.membership.quorumSize",
    ),
    (
        "cluster.split-brain-resolver.keep-majority.role",
        "spec.membership.downingRole",
    ),
    (
        "cluster.split-brain-resolver.static-quorum.role",
        "spec.membership.downingRole",
    ),
    (
        "cluster.split-brain-resolver.keep-oldest.role",
        "spec.membership.downingRole",
    ),
    (
        "cluster.split-brain-resolver.lease-majority.role",
        "spec.membership.downingRole",
    ),
    (
        "cluster.split-brain-resolver.keep-oldest.down-if-alone",
        "spec.membership.downIfAlone",
    ),
    (
        "cluster.split-brain-resolver.lease-majority.acquire-lease-delay-for-minority",
        "spec.membership.lease.acquireLeaseDelayForMinority",
    ),
    (
        "cluster.split-brain-resolver.lease-majority.release-after",
        "spec.membership.lease.releaseAfter",
    ),
    ("bootstrap.stable-margin", "spec.bootstrap.stableMargin"),
    (
        "bootstrap.contact-with-all-contact-points",
        "spec.bootstrap.contactWithAllContactPoints",
    ),
    (
        "bootstrap.required-contact-point-nr",
        "spec.bootstrap.requiredContactPoints",
    ),
    ("bootstrap.expected-contact-point-nr", "spec.replicas"),
    ("bootstrap.discovery-method", "spec.bootstrap.discovery"),
];

/// Keys of the new-cluster lock: the operator's alone.
const LOCK: [&str; 2] = [
    "bootstrap.new-cluster-enabled",
    "bootstrap.new-cluster-enabled-file",
];

/// Whether `key` is `prefix` or under it.
fn under(key: &str, prefix: &str) -> bool {
    key == prefix
        || key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Why `key`, written in `spec.agent.config` with `value`, may not be set there.
fn refused(key: &str, value: &Value) -> Option<String> {
    if let Some((_, why)) = OPERATOR_OWNED.iter().find(|(k, _)| under(key, k)) {
        return Some(format!("is set by the operator ({why})"));
    }
    if let Some((_, field)) = IN_THE_SPEC.iter().find(|(k, _)| under(key, k)) {
        return Some(format!("has a field of its own: use {field}"));
    }
    // The files, the name and turning TLS on are the operator's; how often agents read
    // the files again is the user's.
    let tls_section = key == "tls" && value.is_mapping();
    if under(key, "tls") && !tls_section && key != "tls.reload-interval" {
        return Some(
            "is set by the operator: use spec.tls (it makes the CA and the certificates, mounts them and probes over HTTPS)".into(),
        );
    }
    if LOCK.iter().any(|k| under(key, k)) {
        return Some(
            "is the operator's new-cluster lock: use spec.bootstrap.newClusterEnabled".into(),
        );
    }
    // A section written as something else than a mapping would replace keys the
    // operator sets.
    let holds_owned = OPERATOR_OWNED
        .iter()
        .map(|(k, _)| *k)
        .chain(IN_THE_SPEC.iter().map(|(k, _)| *k))
        .chain(LOCK)
        .any(|k| under(k, key));
    (holds_owned && !value.is_mapping())
        .then(|| "must be a mapping: it holds keys the operator sets".to_owned())
}

/// Every key written in `user`, with its value, depth first.
fn written(user: &Mapping, prefix: &str, out: &mut Vec<(String, Value)>) {
    for (k, v) in user {
        let k = match k {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim_end()
                .to_owned(),
        };
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        out.push((key.clone(), v.clone()));
        if let Value::Mapping(m) = v {
            written(m, &key, out);
        }
    }
}

/// `user` merged into `base`, mapping by mapping.
fn merge(base: &mut Value, user: &Value) {
    match (base, user) {
        (Value::Mapping(b), Value::Mapping(u)) => {
            for (k, v) in u {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, u) => *b = u.clone(),
    }
}

/// `settings` (what the operator decided) with `user` (`spec.agent.config`) merged in,
/// checked by the agent's loader.
pub fn checked(
    cs: &ClusterSpec,
    settings: &Settings,
    user: Option<&serde_json::Value>,
) -> Result<Settings, Vec<Problem>> {
    let problem = |field: String, message: String| Problem { field, message };
    let mut doc = serde_yaml::to_value(settings)
        .map_err(|e| vec![problem("spec".into(), format!("cannot be written: {e}"))])?;
    let mut keys = Vec::new();
    if let Some(user) = user {
        let user: Value = serde_json::from_value(user.clone())
            .map_err(|e| vec![problem(FIELD.into(), e.to_string())])?;
        let Value::Mapping(map) = &user else {
            return Err(vec![problem(
                FIELD.into(),
                "must be a mapping of the agent's sections (cluster, management, bootstrap, discovery)".into(),
            )]);
        };
        written(map, "", &mut keys);
        // A refused key, not also every key under it.
        let mut refused_keys: Vec<&str> = Vec::new();
        let mut refusals = Vec::new();
        for (k, v) in &keys {
            if refused_keys.iter().any(|r| under(k, r)) {
                continue;
            }
            if let Some(why) = refused(k, v) {
                refused_keys.push(k);
                refusals.push(problem(format!("{FIELD}.{k}"), why));
            }
        }
        if !refusals.is_empty() {
            return Err(refusals);
        }
        merge(&mut doc, &user);
    }
    let text = serde_yaml::to_string(&doc)
        .map_err(|e| vec![problem("spec".into(), format!("cannot be written: {e}"))])?;
    // What a pod gives its agent: its address and names, and the Secret's files.
    let ns = cs.metadata.namespace.clone().unwrap_or_default();
    let env = Environment::from_pairs([
        ("POD_IP", "10.0.0.1".to_owned()),
        (
            "POD_NAME",
            format!("{}-0", cs.metadata.name.clone().unwrap_or_default()),
        ),
        ("POD_NAMESPACE", ns),
    ]);
    let secret_file = |name: &str| Some((format!("{KEY_DIR}/{name}").into(), Ok(vec![b'k'; 32])));
    let files = Files {
        key_file: secret_file(CLUSTER_KEY),
        token_file: secret_file(MANAGEMENT_TOKEN),
        namespace_file: None,
        tls: None,
    };
    if let Err(e) = node_agent::AgentConfig::from_yaml_with_files(&text, &env, files) {
        return Err(e
            .problems
            .into_iter()
            .map(|p| {
                let field = p
                    .key
                    .as_deref()
                    .map_or_else(|| "spec".to_owned(), |key| field_of(key, &keys));
                problem(field, p.message)
            })
            .collect());
    }
    // The merged document, not the loaded settings: those hold what the environment
    // above added (the pod IP), which every pod sets for itself.
    serde_yaml::from_value(doc).map_err(|e| vec![problem(FIELD.into(), e.to_string())])
}

/// The spec field behind agent key `key`: in `spec.agent.config` when the user wrote
/// it (a value, not a section: a key under a section the user wrote can still be the
/// operator's), or a key below it; else the field the operator set it from.
fn field_of(key: &str, written: &[(String, Value)]) -> String {
    if written
        .iter()
        .any(|(w, v)| (!v.is_mapping() && under(key, w)) || under(w, key))
    {
        return format!("{FIELD}.{key}");
    }
    IN_THE_SPEC.iter().find(|(k, _)| under(key, k)).map_or_else(
        || format!("spec (the agent's `{key}`)"),
        |(_, field)| (*field).to_owned(),
    )
}

#[cfg(test)]
mod tests;
