use std::time::Duration;

use super::*;
use crate::crd::ClusterSpecSpec;

fn cluster(spec_yaml: &str) -> ClusterSpec {
    let spec: ClusterSpecSpec = serde_yaml::from_str(spec_yaml).expect("a spec");
    let mut cs = ClusterSpec::new("shop", spec);
    cs.metadata.namespace = Some("prod".into());
    cs
}

/// The problems of the agent settings of `spec_yaml`, as (field, message).
fn problems(spec_yaml: &str) -> Vec<(String, String)> {
    match super::super::agent_settings(&cluster(spec_yaml), super::super::Selection::Muster) {
        Ok(_) => Vec::new(),
        Err(p) => p.into_iter().map(|p| (p.field, p.message)).collect(),
    }
}

fn fields(spec_yaml: &str) -> Vec<String> {
    problems(spec_yaml).into_iter().map(|(f, _)| f).collect()
}

#[test]
fn agent_config_is_merged_over_the_operators_settings() {
    let s = super::super::agent_settings(&cluster(
        "agent: {config: {cluster: {gossip-interval: 500ms, allow-weakly-up-members: 'off'}, management: {max-connections: 100}}}",
    ), super::super::Selection::Muster)
    .expect("valid");
    assert_eq!(s.cluster.gossip_interval, Duration::from_millis(500));
    assert_eq!(s.cluster.allow_weakly_up_members, None);
    assert_eq!(s.management.max_connections, 100);
    assert_eq!(
        s.cluster.name.as_deref(),
        Some("shop"),
        "the operator's stay"
    );
    assert_eq!(
        s.cluster.hostname, None,
        "no pod IP from the check's environment"
    );
}

#[test]
fn a_bad_key_or_value_in_agent_config_names_its_field() {
    let p = problems("agent: {config: {cluster: {gossip-intervall: 1s}}}");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].0.starts_with("spec.agent.config.cluster"), "{p:?}");
    assert!(p[0].1.contains("gossip-interval"), "a hint: {p:?}");
    assert_eq!(
        fields("agent: {config: {cluster: {gossip-interval: soon}}}"),
        ["spec.agent.config.cluster.gossip-interval"]
    );
    assert_eq!(fields("agent: {config: {clustr: {}}}").len(), 1);
}

#[test]
fn keys_the_operator_sets_are_refused_with_the_field_to_use() {
    let p = problems(
        "agent: {config: {cluster: {port: 2553, failure-detector: {threshold: 5}}, discovery: {kubernetes-api: {pod-label-selector: x}}, bootstrap: {new-cluster-enabled: true}}}",
    );
    let named: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        named,
        [
            "spec.agent.config.bootstrap.new-cluster-enabled",
            "spec.agent.config.cluster.failure-detector.threshold",
            "spec.agent.config.cluster.port",
            "spec.agent.config.discovery.kubernetes-api",
        ],
        "{p:?}"
    );
    assert!(
        p[1].1.contains("spec.membership.failureDetectorThreshold"),
        "{p:?}"
    );
    assert_eq!(
        problems("agent: {config: {cluster: {failure-detector: 3}}}")[0].1,
        "must be a mapping: it holds keys the operator sets"
    );
    // Readiness means an Up member to the operator's rollouts and disruption budget.
    let p = problems("agent: {config: {management: {ready-states: [Joining, Up]}}}");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].0, "spec.agent.config.management.ready-states");
    assert!(p[0].1.contains("PodDisruptionBudget"), "{p:?}");
    assert_eq!(fields("agent: {config: [1]}"), ["spec.agent.config"]);
    let p = problems(
        "agent: {config: {tls: {cert-file: /x.pem, key-file: /x.key, ca-file: /ca.pem, reload-interval: 1s}}}",
    );
    assert_eq!(
        p.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
        [
            "spec.agent.config.tls.ca-file",
            "spec.agent.config.tls.cert-file",
            "spec.agent.config.tls.key-file"
        ],
        "the files are the operator's, how often they are read is not: {p:?}"
    );
    assert!(p.iter().all(|p| p.1.contains("use spec.tls")), "{p:?}");
    assert_eq!(
        fields("agent: {config: {tls: on}}"),
        ["spec.agent.config.tls"]
    );
    assert!(problems("agent: {config: {tls: {reload-interval: 1s}}}").is_empty());
    assert!(
        problems("tls: {enabled: true}\nagent: {config: {tls: {reload-interval: 1s}}}").is_empty()
    );
    assert_eq!(
        fields("agent: {config: {tls: {reload-interval: 1ms}}}"),
        ["spec.agent.config.tls.reload-interval"],
        "the agent's own bounds hold"
    );
}

#[test]
fn the_resolver_and_failure_detector_fields_reach_the_agent() {
    let s = super::super::agent_settings(
        &cluster(
            "agent: {roles: [backend]}
membership:
  downing: static-quorum
  quorumSize: 2
  downingRole: backend
  downAllWhenUnstable: 'off'
  leaveTimeout: 20s
  failureDetector: {acceptableHeartbeatPause: 5s, monitoredByNrOfMembers: 5}",
        ),
        super::super::Selection::Muster,
    )
    .expect("valid");
    let c = &s.cluster;
    assert_eq!(c.roles, ["backend"]);
    assert_eq!(c.leave_timeout, Duration::from_secs(20));
    assert_eq!(
        c.failure_detector.acceptable_heartbeat_pause,
        Duration::from_secs(5)
    );
    assert_eq!(c.failure_detector.monitored_by_nr_of_members, 5);
    let sbr = &c.split_brain_resolver;
    assert_eq!(
        sbr.active_strategy,
        node_agent::config::ActiveStrategy::StaticQuorum
    );
    assert_eq!(sbr.static_quorum.quorum_size, 2);
    assert_eq!(sbr.static_quorum.role, "backend");
    assert_eq!(
        sbr.keep_majority.role, "",
        "only the active strategy's role"
    );
    // The agent's own checks name the ClusterSpec field.
    assert_eq!(
        fields("membership: {downing: static-quorum}"),
        ["spec.membership.quorumSize"]
    );
    assert_eq!(
        fields(
            "membership: {downing: static-quorum}\nagent: {config: {cluster: {gossip-interval: 2s}}}"
        ),
        ["spec.membership.quorumSize"],
        "a section the user wrote does not make the operator's keys in it the user's"
    );
    assert_eq!(
        fields("agent: {config: {discovery: {dns: {nameserver: '10.0.0.1:53'}}}}"),
        ["spec.agent.config.discovery.dns.nameserver"]
    );
    assert_eq!(
        fields("membership: {downAllWhenUnstable: sometimes}"),
        ["spec.membership.downAllWhenUnstable"]
    );
    assert_eq!(
        fields("membership: {leaveTimeout: soon, lease: {releaseAfter: never}}"),
        [
            "spec.membership.leaveTimeout",
            "spec.membership.lease.releaseAfter"
        ]
    );
}
