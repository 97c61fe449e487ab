use super::*;

fn spec(yaml: &str) -> ClusterSpecSpec {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}:\n{yaml}"))
}

fn problems(yaml: &str) -> Vec<String> {
    validate(&spec(yaml))
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn an_empty_spec_gets_the_documented_defaults_and_is_valid() {
    let s = spec("{}");
    assert_eq!(s.replicas, 3);
    assert_eq!(s.agent.image_pull_policy, "IfNotPresent");
    assert_eq!(s.bootstrap.stable_margin, "5s");
    assert!(s.bootstrap.contact_with_all_contact_points);
    assert_eq!(s.membership.failure_detector_threshold, 8.0);
    assert_eq!(s.membership.stable_after, "20s");
    assert_eq!(s.rollout.member_up_timeout, "5m");
    assert!(validate(&s).is_empty(), "{:?}", validate(&s));
}

#[test]
fn each_bad_field_is_named_with_what_to_write() {
    let table: [(&str, &str, &str); 10] = [
        ("replicas: -1", "spec.replicas", "use 0"),
        (
            "agent: {image: ' '}",
            "spec.agent.image",
            "muster-agent image",
        ),
        (
            "agent: {imagePullPolicy: Sometimes}",
            "spec.agent.imagePullPolicy",
            "Always, IfNotPresent, Never",
        ),
        (
            "application: {image: shop:1, name: agent}",
            "spec.application.name",
            "other than `agent`",
        ),
        (
            "application: {image: ''}",
            "spec.application.image",
            "remove `application`",
        ),
        (
            "replicas: 3\nbootstrap: {requiredContactPoints: 5}",
            "spec.bootstrap.requiredContactPoints",
            "could never form",
        ),
        (
            "bootstrap: {stableMargin: soon}",
            "spec.bootstrap.stableMargin",
            "e.g. `5s`",
        ),
        (
            "membership: {stableAfter: '20'}",
            "spec.membership.stableAfter",
            "e.g. `20s`",
        ),
        (
            "membership: {stableAfter: 1.5ms}",
            "spec.membership.stableAfter",
            "whole number of milliseconds",
        ),
        (
            "membership: {failureDetectorThreshold: -1}",
            "spec.membership.failureDetectorThreshold",
            "positive",
        ),
    ];
    for (yaml, field, hint) in table {
        let p = problems(yaml);
        assert_eq!(p.len(), 1, "{yaml}: {p:?}");
        assert!(
            p[0].starts_with(field) && p[0].contains(hint),
            "{yaml}: {p:?}"
        );
    }
}

#[test]
fn zero_replicas_stop_the_cluster_and_keep_the_numbers_for_the_next_scale() {
    assert!(problems("replicas: 0").is_empty());
    assert!(
        problems("replicas: 0\nbootstrap: {requiredContactPoints: 3}\nmembership: {downing: static-quorum, quorumSize: 2}")
            .is_empty()
    );
}

#[test]
fn problems_are_all_reported_at_once() {
    let p = problems("replicas: -2\nrollout: {memberUpTimeout: never}\nagent: {image: ''}");
    assert_eq!(p.len(), 3, "{p:?}");
}

/// Finding 15.3: `stableMargin: 0s` voided the formation proof and was accepted.
#[test]
fn a_stable_margin_not_longer_than_the_agents_probing_failure_timeout_is_refused() {
    for margin in ["0s", "3s", "2500ms"] {
        let p = problems(&format!("bootstrap: {{stableMargin: {margin}}}"));
        assert!(
            p.iter().any(|p| p.contains("spec.bootstrap.stableMargin")
                && p.contains("probing-failure-timeout")
                && p.contains("longer")),
            "{margin}: {p:?}"
        );
    }
    assert!(problems("bootstrap: {stableMargin: 3001ms}").is_empty());
}

#[test]
fn a_bad_pod_template_is_refused_with_the_field() {
    let spec: ClusterSpecSpec = serde_yaml::from_str(
        "application: {image: 'shop:1'}\nscheduling: {nodeSelector: {a: b}}\npodTemplate: {spec: {nodeSelector: {c: d}, terminationGracePeriodSeconds: 5, containers: [{name: agent, image: x}]}}",
    )
    .expect("a spec");
    let fields: Vec<String> = validate(&spec).into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "spec.podTemplate.spec.terminationGracePeriodSeconds",
            "spec.podTemplate.spec.nodeSelector",
            "spec.podTemplate.spec.containers[agent].image",
        ]
    );
}

#[test]
fn a_quorum_must_be_a_majority_and_a_downing_role_a_members_role() {
    let fields = |yaml: &str| -> Vec<String> {
        let spec: ClusterSpecSpec = serde_yaml::from_str(yaml).expect("a spec");
        validate(&spec).into_iter().map(|p| p.field).collect()
    };
    let ok: Vec<String> = Vec::new();
    assert_eq!(
        fields("replicas: 5\nmembership: {downing: static-quorum, quorumSize: 3}"),
        ok
    );
    assert_eq!(
        fields("replicas: 5\nmembership: {downing: static-quorum, quorumSize: 2}"),
        ["spec.membership.quorumSize"],
        "two sides of 2 and 3 could both keep running"
    );
    assert_eq!(
        fields("replicas: 3\nmembership: {downing: static-quorum, quorumSize: 4}"),
        ["spec.membership.quorumSize"]
    );
    assert_eq!(
        fields("agent: {roles: [backend]}\nmembership: {downingRole: backend}"),
        ok
    );
    assert_eq!(
        fields("membership: {downingRole: backend}"),
        ["spec.membership.downingRole"]
    );
    assert_eq!(
        fields("agent: {roles: [backend]}\nmembership: {downing: down-all, downingRole: backend}"),
        ["spec.membership.downingRole"]
    );
}

#[test]
fn the_grace_period_must_cover_the_leave_timeout_written_in_the_spec() {
    let fields = |yaml: &str| -> Vec<String> {
        let spec: ClusterSpecSpec = serde_yaml::from_str(yaml).expect("a spec");
        validate(&spec).into_iter().map(|p| p.field).collect()
    };
    assert_eq!(
        fields(
            "membership: {leaveTimeout: 60s}\npodTemplate: {spec: {terminationGracePeriodSeconds: 25}}"
        ),
        ["spec.podTemplate.spec.terminationGracePeriodSeconds"]
    );
    assert_eq!(
        fields("membership: {leaveTimeout: 25.5s}"),
        ["spec.membership.leaveTimeout"],
        "25.5 s and 5 s to exit do not fit 30 s"
    );
    assert_eq!(
        fields(
            "membership: {leaveTimeout: 60s}\npodTemplate: {spec: {terminationGracePeriodSeconds: 65}}"
        ),
        Vec::<String>::new()
    );
    // The handover timeout runs beside the leave timeout: the longer one must fit.
    assert_eq!(
        fields("membership: {handoverTimeout: 26s}"),
        ["spec.membership.handoverTimeout"],
        "26 s and 5 s to exit do not fit 30 s"
    );
    assert_eq!(
        fields(
            "membership: {handoverTimeout: 40s}\npodTemplate: {spec: {terminationGracePeriodSeconds: 44}}"
        ),
        ["spec.podTemplate.spec.terminationGracePeriodSeconds"]
    );
    assert_eq!(
        fields(
            "membership: {handoverTimeout: 40s, leaveTimeout: 10s}\npodTemplate: {spec: {terminationGracePeriodSeconds: 45}}"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        fields("membership: {handoverTimeout: 25s}"),
        Vec::<String>::new()
    );
}
