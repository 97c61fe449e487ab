//! The ConfigMap: the agents' settings (`agent.yaml`, the agent's own settings type
//! written as YAML) and the `new-cluster-enabled` key they follow at run time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use node_agent::config::{ActiveStrategy, DiscoveryMethod, Settings, duration};

use super::{
    CLUSTER_KEY, CONFIG_DIR, KEY_DIR, MANAGEMENT_TOKEN, NEW_CLUSTER_ENABLED_KEY, Selection,
    TLS_DIR, meta,
};
use crate::crd::{ClusterSpec, Discovery, Downing};
use crate::validate::Problem;

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
fn spec_duration(field: &str, value: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
    duration::parse(value)
        .map_err(|message| {
            problems.push(Problem {
                field: field.to_owned(),
                message: format!("`{value}`: {message}"),
            });
        })
        .ok()
}

/// A count field of the spec.
fn spec_count(field: &str, value: i32, problems: &mut Vec<Problem>) -> Option<usize> {
    usize::try_from(value)
        .map_err(|_| {
            problems.push(Problem {
                field: field.to_owned(),
                message: format!("{value} is not a count"),
            });
        })
        .ok()
}

/// The agents' settings for `cs`: the agent's defaults, with what the spec and the pod
/// layout decide, then `spec.agent.config` merged in — all checked by the agent's own
/// loader, as an agent in a pod would load them. Every problem names its spec field.
pub fn agent_settings(cs: &ClusterSpec, selection: Selection) -> Result<Settings, Vec<Problem>> {
    let mut problems = Vec::new();
    let p = &mut problems;
    let s = &cs.spec;
    let b = &s.bootstrap;
    let m = &s.membership;
    let name = cs.name_any();
    let mut settings = Settings::default();

    let c = &mut settings.cluster;
    c.name = Some(name.clone());
    c.key_file = Some(PathBuf::from(format!("{KEY_DIR}/{CLUSTER_KEY}")));
    c.roles.clone_from(&s.agent.roles);
    if let Some(d) = spec_duration("spec.membership.leaveTimeout", &m.leave_timeout, p) {
        c.leave_timeout = d;
    }
    if let Some(d) = spec_duration("spec.membership.handoverTimeout", &m.handover_timeout, p) {
        c.handover_timeout = d;
    }
    let fd = &mut c.failure_detector;
    fd.threshold = m.failure_detector_threshold;
    let f = &m.failure_detector;
    for (field, value, slot) in [
        (
            "spec.membership.failureDetector.acceptableHeartbeatPause",
            &f.acceptable_heartbeat_pause,
            &mut fd.acceptable_heartbeat_pause,
        ),
        (
            "spec.membership.failureDetector.heartbeatInterval",
            &f.heartbeat_interval,
            &mut fd.heartbeat_interval,
        ),
        (
            "spec.membership.failureDetector.minStdDeviation",
            &f.min_std_deviation,
            &mut fd.min_std_deviation,
        ),
        (
            "spec.membership.failureDetector.expectedResponseAfter",
            &f.expected_response_after,
            &mut fd.expected_response_after,
        ),
    ] {
        if let Some(d) = value.as_deref().and_then(|v| spec_duration(field, v, p)) {
            *slot = d;
        }
    }
    for (field, value, slot) in [
        (
            "spec.membership.failureDetector.monitoredByNrOfMembers",
            f.monitored_by_nr_of_members,
            &mut fd.monitored_by_nr_of_members,
        ),
        (
            "spec.membership.failureDetector.maxSampleSize",
            f.max_sample_size,
            &mut fd.max_sample_size,
        ),
    ] {
        if let Some(n) = value.and_then(|v| spec_count(field, v, p)) {
            *slot = n;
        }
    }

    let sbr = &mut c.split_brain_resolver;
    sbr.active_strategy = match m.downing {
        Downing::KeepMajority => ActiveStrategy::KeepMajority,
        Downing::StaticQuorum => ActiveStrategy::StaticQuorum,
        Downing::KeepOldest => ActiveStrategy::KeepOldest,
        Downing::DownAll => ActiveStrategy::DownAll,
        Downing::LeaseMajority => ActiveStrategy::LeaseMajority,
        Downing::Off => ActiveStrategy::Off,
    };
    if let Some(d) = spec_duration("spec.membership.stableAfter", &m.stable_after, p) {
        sbr.stable_after = d;
    }
    match serde_yaml::from_value(serde_yaml::Value::String(m.down_all_when_unstable.clone())) {
        Ok(v) => sbr.down_all_when_unstable = v,
        Err(e) => p.push(Problem {
            field: "spec.membership.downAllWhenUnstable".into(),
            message: format!(
                "`{}`: {e} (`on`, `off` or a duration such as `15s`)",
                m.down_all_when_unstable
            ),
        }),
    }
    if let Some(q) = m
        .quorum_size
        .and_then(|q| spec_count("spec.membership.quorumSize", q, p))
    {
        sbr.static_quorum.quorum_size = q;
    }
    // Only the active strategy's role, so agent.yaml holds no unused keys.
    if let Some(role) = &m.downing_role {
        let slot = match m.downing {
            Downing::KeepMajority => Some(&mut sbr.keep_majority.role),
            Downing::StaticQuorum => Some(&mut sbr.static_quorum.role),
            Downing::KeepOldest => Some(&mut sbr.keep_oldest.role),
            Downing::LeaseMajority => Some(&mut sbr.lease_majority.role),
            Downing::DownAll | Downing::Off => None,
        };
        if let Some(slot) = slot {
            slot.clone_from(role);
        }
    }
    sbr.keep_oldest.down_if_alone = m.down_if_alone;
    let lease = &mut sbr.lease_majority;
    if m.downing == Downing::LeaseMajority {
        // The one Lease the agents' Role grants (the controller creates it).
        lease.lease_name = super::formation_lease::sbr_name(cs);
    }
    if let Some(d) = spec_duration(
        "spec.membership.lease.acquireLeaseDelayForMinority",
        &m.lease.acquire_lease_delay_for_minority,
        p,
    ) {
        lease.acquire_lease_delay_for_minority = d;
    }
    if let Some(d) = spec_duration(
        "spec.membership.lease.releaseAfter",
        &m.lease.release_after,
        p,
    ) {
        lease.release_after = d;
    }

    let bs = &mut settings.bootstrap;
    bs.service_name = Some(name);
    bs.discovery_method = match b.discovery {
        Discovery::KubernetesApi => DiscoveryMethod::KubernetesApi,
        Discovery::Dns => DiscoveryMethod::Dns,
    };
    bs.port_name = "management".into();
    let required = crate::status::agents_required_contact_points(s, cs.status.as_ref());
    if let Some(n) = spec_count("spec.bootstrap.requiredContactPoints", required, p) {
        bs.required_contact_point_nr = n;
    }
    // Agreement may skip the stable margin only on a set of every replica (see the
    // agent's bootstrap.expected-contact-point-nr): the replicas until formed, then
    // fixed (`status::expected_contact_points`).
    let expected = crate::status::expected_contact_points(s, cs.status.as_ref(), required);
    bs.expected_contact_point_nr = spec_count("spec.replicas", expected, p);
    if let Some(d) = spec_duration("spec.bootstrap.stableMargin", &b.stable_margin, p) {
        bs.stable_margin = d;
    }
    bs.contact_with_all_contact_points = b.contact_with_all_contact_points;
    bs.new_cluster_enabled_file = Some(PathBuf::from(format!(
        "{CONFIG_DIR}/{NEW_CLUSTER_ENABLED_KEY}"
    )));
    bs.formation_lease = Some(super::formation_lease::name(cs));

    settings.discovery.kubernetes_api.pod_label_selector = selection.discovery();
    settings.management.token_file = Some(PathBuf::from(format!("{KEY_DIR}/{MANAGEMENT_TOKEN}")));
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut settings = super::agent_config::checked(cs, &settings, s.agent.config.as_ref())?;
    if s.tls.enabled {
        // Set after the check, which has no files to read: the files are the operator's
        // own Secret (`tls::mounted` checks what it holds as the agents will), and
        // `spec.agent.config` may not set any `tls` key.
        let t = &mut settings.tls;
        let file = |key: &str| Some(PathBuf::from(format!("{TLS_DIR}/{key}")));
        t.cert_file = file(super::tls::TLS_CERT);
        t.key_file = file(super::tls::TLS_KEY);
        t.ca_file = file(super::tls::CA_CERT);
        t.server_name = Some(super::tls::server_name(cs));
    }
    Ok(settings)
}
