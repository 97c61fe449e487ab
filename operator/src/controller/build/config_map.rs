//! The ConfigMap: the agents' settings (`agent.yaml`, the agent's own settings type
//! written as YAML) and the `new-cluster-enabled` key they follow at run time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use node_agent::config::{ActiveStrategy, DiscoveryMethod, Settings, duration};

use super::{
    BuildError, CLUSTER_KEY, CONFIG_DIR, KEY_DIR, MANAGEMENT_TOKEN, NEW_CLUSTER_ENABLED_KEY, meta,
};
use crate::crd::{ClusterSpec, Discovery, Downing};

/// Pod template annotation: a digest of the agents' settings.
pub const CONFIG_HASH: &str = "muster.dev/config-hash";

/// `agent_yaml`: the settings file ([`agent_yaml`]).
pub fn build(cs: &ClusterSpec, agent_yaml: &str, new_cluster_enabled: bool) -> ConfigMap {
    ConfigMap {
        metadata: meta(cs, &cs.name_any()),
        data: Some(BTreeMap::from([
            ("agent.yaml".to_owned(), agent_yaml.to_owned()),
            (
                NEW_CLUSTER_ENABLED_KEY.to_owned(),
                new_cluster_enabled.to_string(),
            ),
        ])),
        ..ConfigMap::default()
    }
}

/// The settings as the agents read them (`node-agent/reference.yaml` documents every
/// key): the ones that differ from the agent's defaults, so an agent of another version
/// is not given keys it may not know.
pub fn agent_yaml(settings: &Settings) -> String {
    serde_yaml::to_string(&settings.changes()).unwrap_or_default()
}

/// The first 16 hex digits of the settings file's SHA-256.
pub(super) fn config_hash(agent_yaml: &str) -> String {
    use sha2::Digest;
    node_agent::base::hex(&sha2::Sha256::digest(agent_yaml.as_bytes())[..8])
}

/// A duration field of the spec.
fn spec_duration(field: &'static str, value: &str) -> Result<Duration, BuildError> {
    duration::parse(value).map_err(|message| BuildError { field, message })
}

/// The agents' settings for `cs`: the agent's defaults, with what the spec and the pod
/// layout decide.
pub fn agent_settings(cs: &ClusterSpec) -> Result<Settings, BuildError> {
    let s = &cs.spec;
    let b = &s.bootstrap;
    let name = cs.name_any();
    let mut settings = Settings::default();

    let c = &mut settings.cluster;
    c.name = Some(name.clone());
    c.key_file = Some(PathBuf::from(format!("{KEY_DIR}/{CLUSTER_KEY}")));
    c.failure_detector.threshold = s.membership.failure_detector_threshold;
    let sbr = &mut c.split_brain_resolver;
    sbr.active_strategy = match s.membership.downing {
        Downing::KeepMajority => ActiveStrategy::KeepMajority,
        Downing::KeepOldest => ActiveStrategy::KeepOldest,
        Downing::DownAll => ActiveStrategy::DownAll,
        Downing::LeaseMajority => ActiveStrategy::LeaseMajority,
        Downing::Off => ActiveStrategy::Off,
    };
    sbr.stable_after = spec_duration("spec.membership.stableAfter", &s.membership.stable_after)?;

    let bs = &mut settings.bootstrap;
    bs.service_name = Some(name);
    bs.discovery_method = match b.discovery {
        Discovery::KubernetesApi => DiscoveryMethod::KubernetesApi,
        Discovery::Dns => DiscoveryMethod::Dns,
    };
    bs.port_name = "management".into();
    let required = crate::status::agents_required_contact_points(s, cs.status.as_ref());
    bs.required_contact_point_nr = usize::try_from(required).map_err(|_| BuildError {
        field: "spec.bootstrap.requiredContactPoints",
        message: format!("{required} is not a number of contact points"),
    })?;
    // Agreement may skip the stable margin only on a set of every replica (see the
    // agent's bootstrap.expected-contact-point-nr): the replicas until formed, then
    // fixed (`status::expected_contact_points`).
    let expected = crate::status::expected_contact_points(s, cs.status.as_ref(), required);
    bs.expected_contact_point_nr = Some(usize::try_from(expected).map_err(|_| BuildError {
        field: "spec.replicas",
        message: format!("{expected} is not a number of contact points"),
    })?);
    bs.stable_margin = spec_duration("spec.bootstrap.stableMargin", &b.stable_margin)?;
    bs.contact_with_all_contact_points = b.contact_with_all_contact_points;
    bs.new_cluster_enabled_file = Some(PathBuf::from(format!(
        "{CONFIG_DIR}/{NEW_CLUSTER_ENABLED_KEY}"
    )));
    bs.formation_lease = Some(super::formation_lease::name(cs));

    settings.discovery.kubernetes_api.pod_label_selector = "app.kubernetes.io/instance=%s".into();
    settings.management.token_file = Some(PathBuf::from(format!("{KEY_DIR}/{MANAGEMENT_TOKEN}")));
    Ok(settings)
}
