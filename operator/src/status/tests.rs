use node_agent::api::{ClusterMember, ClusterUnreachableMember};
use node_agent::base::address::NodeAddress;
use node_agent::base::member::MemberStatus;

use super::*;
use crate::crd::ClusterSpec;

fn spec(yaml: &str) -> ClusterSpecSpec {
    serde_yaml::from_str::<ClusterSpec>(&format!(
        "apiVersion: muster.dev/v1alpha1\nkind: ClusterSpec\nmetadata: {{name: shop, namespace: prod}}\nspec: {{{yaml}}}"
    ))
    .expect("a ClusterSpec")
    .spec
}

/// A member list: one entry per status, addresses 10.0.0.1, .2, …
fn members(statuses: &[MemberStatus], unreachable: &[usize]) -> ClusterMembers {
    let addr = |i: usize| {
        NodeAddress::new(
            "shop",
            [10, 0, 0, u8::try_from(i + 1).expect("small")].into(),
            2552,
        )
    };
    ClusterMembers {
        self_node: addr(0),
        members: statuses
            .iter()
            .enumerate()
            .map(|(i, s)| ClusterMember {
                node: addr(i),
                node_uid: u64::try_from(i).expect("small"),
                status: *s,
                roles: vec![],
                up_number: u32::try_from(i).expect("small"),
                app_version: "1".into(),
            })
            .collect(),
        unreachable: unreachable
            .iter()
            .map(|&i| ClusterUnreachableMember {
                node: addr(i),
                observed_by: vec![addr(0)],
            })
            .collect(),
        leader: Some(addr(0)),
        oldest: Some(addr(0)),
        oldest_per_role: Default::default(),
    }
}

const UP: MemberStatus = MemberStatus::Up;
const JOINING: MemberStatus = MemberStatus::Joining;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).expect("a time")
}

fn seen<'a>(
    spec: &'a ClusterSpecSpec,
    previous: Option<&'a ClusterSpecStatus>,
    members: Result<&'a ClusterMembers, String>,
    now: Timestamp,
) -> Seen<'a> {
    Seen {
        spec,
        generation: Some(1),
        previous,
        pods: spec.replicas,
        stopped: false,
        selector: "muster.dev/cluster=shop".into(),
        legacy_selector: None,
        network_policy: NetworkPolicyState::Applied {
            other_ports_open: true,
        },
        members,
        problems: &[],
        conflicts: &[],
        rollout: None,
        scaling: None,
        stalled: None,
        pdb_supported: true,
        retention_supported: false,
        forming_held: false,
        stranded: &[],
        lost: false,
        recovery: None,
        tls: None,
        cluster_key: None,
        now,
    }
}

fn condition<'a>(s: &'a ClusterSpecStatus, type_: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", s.conditions))
}

#[test]
fn forming_until_the_required_contact_points_are_up_then_formed_and_locked() {
    let sp = spec("replicas: 3");
    let none = Err("no pod has an IP yet".to_owned());
    let s0 = compute(&seen(&sp, None, none, at(0)));
    assert_eq!(s0.phase.as_deref(), Some(PENDING));
    assert_eq!(s0.required_contact_points, Some(3));
    assert_eq!(s0.new_cluster_enabled, Some(true));

    assert_eq!(s0.expected_contact_points, Some(3));
    // A pod of an older template: forming is held, and the status says why, with the
    // rollout that ends it.
    let held = compute(&Seen {
        forming_held: true,
        rollout: Some(RolloutStatus {
            updated: 1,
            total: 3,
            current_pod: Some("shop-1".into()),
            step: Some("pod shop-1 deleted; waiting for its replacement".into()),
        }),
        ..seen(&sp, Some(&s0), Err("no member yet".into()), at(1))
    });
    assert_eq!(held.new_cluster_enabled, Some(false));
    let progressing = condition(&held, "Progressing");
    assert_eq!(progressing.reason, "FormingHeld");
    assert!(
        progressing
            .message
            .contains("waits until every pod runs the current template")
            && progressing.message.contains("1 of 3 pods updated"),
        "{}",
        progressing.message
    );

    let two = members(&[UP, UP, JOINING], &[]);
    let s1 = compute(&seen(&sp, Some(&s0), Ok(&two), at(5)));
    assert_eq!(s1.phase.as_deref(), Some(FORMING));
    assert_eq!(s1.formed_at, None);
    assert_eq!(condition(&s1, "Formed").status, "False");
    assert_eq!(
        condition(&s1, "Available").status,
        "True",
        "2 of 3 is a majority"
    );
    assert_eq!(s1.new_cluster_enabled, Some(true));

    let three = members(&[UP, UP, UP], &[]);
    let s2 = compute(&seen(&sp, Some(&s1), Ok(&three), at(9)));
    assert_eq!(s2.phase.as_deref(), Some(RUNNING));
    assert_eq!(s2.formed_at, Some(at(9).to_string()));
    assert_eq!(s2.new_cluster_enabled, Some(false), "auto: off once formed");
    // Formed: a scale no longer moves the expected contact points.
    let five = spec("replicas: 5");
    let scaled = compute(&seen(&five, Some(&s2), Ok(&three), at(20)));
    assert_eq!(scaled.expected_contact_points, Some(3));
    let reform = spec("replicas: 5, bootstrap: {newClusterEnabled: \"true\"}");
    let reformed = compute(&seen(&reform, Some(&s2), Ok(&three), at(20)));
    assert_eq!(
        reformed.expected_contact_points,
        Some(5),
        "forming again: every replica"
    );
    assert_eq!(
        s2.members,
        Some(MemberCounts {
            up: 3,
            total: 3,
            unreachable: 0
        })
    );
    let formed = condition(&s2, "Formed");
    assert_eq!(
        (formed.status.as_str(), formed.last_transition_time.0),
        ("True", at(9))
    );
    assert_eq!(formed.observed_generation, Some(1));

    // Later the cluster loses every pod: formed stays formed, forming stays off, and
    // the new agents (answering, not members) are said to wait.
    let silent = compute(&seen(
        &sp,
        Some(&s2),
        Err("connection refused".into()),
        at(60),
    ));
    assert_eq!(condition(&silent, "Degraded").reason, "AgentsNotAnswering");
    assert_eq!(silent.members, None, "no stale counts");
    let waiting = members(&[], &[]);
    let s3 = compute(&seen(&sp, Some(&s2), Ok(&waiting), at(60)));
    assert_eq!(s3.formed_at, s2.formed_at);
    assert_eq!(s3.new_cluster_enabled, Some(false));
    assert_eq!(s3.phase.as_deref(), Some(DEGRADED));
    assert_eq!(condition(&s3, "Degraded").reason, "NoClusterToJoin");
    assert!(
        condition(&s3, "Degraded")
            .message
            .contains("newClusterEnabled: \"true\""),
        "says what to do"
    );
    // Under auto the operator says why it has not brought the cluster back yet …
    let mut look = seen(&sp, Some(&s2), Ok(&waiting), at(61));
    look.recovery = Some("pod shop-0's agent does not answer".into());
    let s4 = compute(&look);
    let m = &condition(&s4, "Degraded").message;
    assert!(
        m.contains("forms it again by itself")
            && m.contains("not yet: pod shop-0's agent does not answer"),
        "{m}"
    );
    // … and once every member is found gone, forming opens as before the first one.
    look.recovery = None;
    look.lost = true;
    let s5 = compute(&look);
    assert_eq!(
        (s5.formed_at.as_deref(), s5.new_cluster_enabled),
        (None, Some(true))
    );
    assert_eq!(s5.phase.as_deref(), Some(FORMING));
    // The counts the pods form with are fixed anew (a scale since the first formation
    // must not leave them waiting for pods that no longer exist).
    assert_eq!(
        (s5.required_contact_points, s5.expected_contact_points),
        (None, None)
    );
    assert_eq!(condition(&s5, "Formed").reason, CLUSTER_LOST);
    // Until it has formed again, Formed keeps saying so; then it is formed anew.
    let mut next = seen(&sp, Some(&s5), Ok(&waiting), at(70));
    next.lost = false;
    let s6 = compute(&next);
    assert_eq!(condition(&s6, "Formed").reason, CLUSTER_LOST);
    let up = members(&[MemberStatus::Up; 3], &[]);
    let s7 = compute(&seen(&sp, Some(&s6), Ok(&up), at(80)));
    assert_eq!(s7.formed_at, Some(at(80).to_string()));
    assert_eq!(condition(&s7, "Formed").reason, "ClusterFormed");
    assert_eq!(s7.new_cluster_enabled, Some(false), "locked again");
    // With forming allowed, the pods re-form by themselves: only the agents' silence
    // is reported.
    let on = spec("replicas: 3, bootstrap: {newClusterEnabled: \"true\"}");
    let s4 = compute(&seen(
        &on,
        Some(&s2),
        Err("connection refused".into()),
        at(60),
    ));
    assert_eq!(condition(&s4, "Degraded").reason, "AgentsNotAnswering");
}

#[test]
fn a_cluster_scaled_to_zero_stops_and_forms_anew_when_scaled_up() {
    let three = spec("replicas: 3");
    let all = members(&[UP, UP, UP], &[]);
    let running = compute(&seen(&three, None, Ok(&all), at(0)));
    assert!(running.formed_at.is_some());
    assert_eq!(
        running.new_cluster_enabled,
        Some(false),
        "locked once formed"
    );
    // Scaled to zero, the pods still stopping: still the formed cluster.
    let zero = spec("replicas: 0");
    let stopping = compute(&Seen {
        scaling: Some("scaling 3 → 0: …".into()),
        ..seen(&zero, Some(&running), Ok(&all), at(5))
    });
    assert_eq!(stopping.formed_at, running.formed_at);
    assert_eq!(stopping.phase.as_deref(), Some(UPDATING));
    // Every pod gone.
    let stopped = compute(&Seen {
        pods: 0,
        stopped: true,
        ..seen(&zero, Some(&stopping), Err("no pod".into()), at(9))
    });
    assert_eq!(stopped.phase.as_deref(), Some(STOPPED));
    assert_eq!(
        (
            stopped.formed_at.as_deref(),
            stopped.required_contact_points,
            stopped.expected_contact_points,
            stopped.new_cluster_enabled
        ),
        (None, None, None, Some(true))
    );
    for c in ["Formed", "Available", "Progressing"] {
        let c = condition(&stopped, c);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Stopped"));
    }
    assert_eq!(condition(&stopped, "Degraded").status, "False");
    // Scaled back up before every pod stopped: the prepared cluster cannot be used.
    let prepared = members(
        &[
            MemberStatus::ReadyForShutdown,
            MemberStatus::ReadyForShutdown,
            MemberStatus::PreparingForShutdown,
        ],
        &[],
    );
    let reverted = compute(&seen(&three, Some(&stopping), Ok(&prepared), at(7)));
    let degraded = condition(&reverted, "Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "FullShutdownUnfinished")
    );
    assert!(
        degraded.message.contains("Scale to 0"),
        "{}",
        degraded.message
    );
    // Scaled up: forming, with the new replicas required, as a new cluster.
    let up_again = compute(&seen(
        &three,
        Some(&stopped),
        Err("no member yet".into()),
        at(12),
    ));
    assert_eq!(
        up_again.phase.as_deref(),
        Some(PENDING),
        "no member answers yet"
    );
    assert_eq!(
        (
            up_again.required_contact_points,
            up_again.new_cluster_enabled
        ),
        (Some(3), Some(true))
    );
    assert_eq!(up_again.formed_at, None);
}

#[test]
fn explicit_true_and_false_override_the_lock() {
    assert!(new_cluster_enabled(
        &spec("bootstrap: {newClusterEnabled: \"true\"}"),
        true
    ));
    assert!(!new_cluster_enabled(
        &spec("bootstrap: {newClusterEnabled: \"false\"}"),
        false
    ));
    assert!(new_cluster_enabled(&spec(""), false));
    assert!(!new_cluster_enabled(&spec(""), true));
}

#[test]
fn required_contact_points_are_fixed_at_the_first_report() {
    let sp = spec("replicas: 3");
    let s0 = compute(&seen(&sp, None, Err("none".into()), at(0)));
    let scaled = spec("replicas: 5");
    let s1 = compute(&seen(&scaled, Some(&s0), Err("none".into()), at(1)));
    assert_eq!(
        s1.required_contact_points,
        Some(3),
        "scaling does not move it"
    );
    let explicit = spec("replicas: 5, bootstrap: {requiredContactPoints: 2}");
    assert_eq!(required_contact_points(&explicit, None), 2);
}

#[test]
fn a_steady_cluster_reports_the_same_status_every_time() {
    let sp = spec("replicas: 3");
    let three = members(&[UP, UP, UP], &[]);
    let s1 = compute(&seen(&sp, None, Ok(&three), at(0)));
    let s2 = compute(&seen(&sp, Some(&s1), Ok(&three), at(30)));
    let s3 = compute(&seen(&sp, Some(&s2), Ok(&three), at(600)));
    assert_eq!(s2, s1);
    assert_eq!(s3, s1, "no per-reconcile timestamps");
}

#[test]
fn conditions_keep_their_transition_time_while_their_status_holds() {
    let sp = spec("replicas: 3");
    let three = members(&[UP, UP, UP], &[]);
    let s1 = compute(&seen(&sp, None, Ok(&three), at(0)));
    let one_unreachable = members(&[UP, UP, UP], &[2]);
    let s2 = compute(&seen(&sp, Some(&s1), Ok(&one_unreachable), at(10)));
    assert_eq!(s2.phase.as_deref(), Some(DEGRADED));
    let d = condition(&s2, "Degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "UnreachableMembers")
    );
    assert_eq!(d.last_transition_time.0, at(10));
    assert_eq!(condition(&s2, "Formed").last_transition_time.0, at(0));
    let s3 = compute(&seen(&sp, Some(&s2), Ok(&three), at(20)));
    assert_eq!(condition(&s3, "Degraded").last_transition_time.0, at(20));
    assert_eq!(s3.phase.as_deref(), Some(RUNNING));
}

#[test]
fn rollouts_scaling_and_invalid_specs_are_reported() {
    let sp = spec("replicas: 3");
    let three = members(&[UP, UP, UP], &[]);
    let mut s = seen(&sp, None, Ok(&three), at(0));
    s.rollout = Some(RolloutStatus {
        updated: 1,
        total: 3,
        current_pod: Some("shop-1".into()),
        step: Some("member of shop-1 is leaving".into()),
    });
    let r = compute(&s);
    assert_eq!(r.phase.as_deref(), Some(UPDATING));
    let p = condition(&r, "Progressing");
    assert_eq!(
        (p.status.as_str(), p.reason.as_str()),
        ("True", "RollingUpdate")
    );
    assert!(p.message.contains("1 of 3 pods updated"), "{}", p.message);

    let formed = compute(&seen(&sp, None, Ok(&three), at(0)));
    let five = spec("replicas: 5");
    let r = compute(&seen(&five, Some(&formed), Ok(&three), at(1)));
    assert_eq!(r.phase.as_deref(), Some(UPDATING), "scaling up");
    assert_eq!(condition(&r, "Progressing").reason, "Scaling");

    let problems = [Problem {
        field: "spec.bootstrap.stableMargin".into(),
        message: "`soon` is not a duration".into(),
    }];
    let mut s = seen(&sp, None, Ok(&three), at(0));
    s.problems = &problems;
    let r = compute(&s);
    let d = condition(&r, "Degraded");
    assert_eq!(d.reason, "InvalidSpec");
    assert!(
        d.message.contains("spec.bootstrap.stableMargin"),
        "{}",
        d.message
    );
    assert_eq!(
        r.phase.as_deref(),
        Some(RUNNING),
        "the cluster itself runs on"
    );

    // An invalid spec moves neither the recorded required contact points nor the kept
    // expected ones (e2e: requiredContactPoints 7 of 2 replicas, refused, then removed,
    // had left 7 behind and rolled every pod).
    let two = spec("replicas: 2");
    let kept = compute(&seen(&two, Some(&formed), Ok(&three), at(2)));
    assert_eq!(
        (kept.required_contact_points, kept.expected_contact_points),
        (Some(3), Some(3))
    );
    let bad = spec("replicas: 2, bootstrap: {requiredContactPoints: 7}");
    let problems = crate::validate::validate(&bad);
    assert!(!problems.is_empty());
    let mut s = seen(&bad, Some(&kept), Ok(&three), at(3));
    s.problems = &problems;
    let refused = compute(&s);
    assert_eq!(
        (
            refused.required_contact_points,
            refused.expected_contact_points
        ),
        (Some(3), Some(3))
    );
    let fixed = compute(&seen(&two, Some(&refused), Ok(&three), at(4)));
    assert_eq!(
        (fixed.required_contact_points, fixed.expected_contact_points),
        (Some(3), Some(3))
    );

    let mut s = seen(&sp, None, Ok(&three), at(0));
    s.pdb_supported = false;
    let r = compute(&s);
    assert_eq!(
        condition(&r, "DisruptionBudget").reason,
        "PolicyV1Unavailable"
    );
}

#[test]
fn a_failed_reconcile_is_reported_in_degraded_and_nothing_else_changes() {
    let sp = spec("replicas: 3");
    let three = members(&[UP, UP, UP], &[]);
    let s1 = compute(&seen(&sp, None, Ok(&three), at(0)));
    let failed = with_error(
        Some(&s1),
        Some(2),
        "serviceaccounts \"shop\" is forbidden",
        at(5),
    );
    let d = failed
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("True", "ReconcileError")
    );
    assert!(d.message.contains("forbidden"), "{}", d.message);
    assert_eq!(d.last_transition_time.0, at(5));
    assert_eq!(failed.phase, s1.phase);
    assert_eq!(failed.conditions.len(), s1.conditions.len());
    let again = with_error(
        Some(&failed),
        Some(2),
        "serviceaccounts \"shop\" is forbidden",
        at(9),
    );
    assert_eq!(again, failed, "a repeated failure writes nothing new");
}

#[test]
fn while_forming_the_total_counts_the_pods_and_versions_are_counted() {
    let sp = spec("replicas: 3");
    let none = members(&[], &[]);
    let r = compute(&seen(&sp, None, Ok(&none), at(0)));
    assert_eq!(r.phase.as_deref(), Some(FORMING));
    let c = r.members.expect("counts while forming");
    assert_eq!((c.up, c.total), (0, 3), "the pods that will be members");
    // No agent answers yet: still the pods.
    let r = compute(&seen(&sp, None, Err("connection refused".into()), at(0)));
    assert_eq!(r.members.map(|c| c.total), Some(3));
    // Formed: the members, by app version.
    let mut three = members(&[UP, UP, UP], &[]);
    three.members[2].app_version = "shop-abc".into();
    let r = compute(&seen(&sp, None, Ok(&three), at(1)));
    assert_eq!(r.members.map(|c| c.total), Some(3));
    assert_eq!(
        r.app_versions,
        std::collections::BTreeMap::from([("1".to_owned(), 2), ("shop-abc".to_owned(), 1)])
    );
}

#[test]
fn a_disabled_budget_says_so() {
    let sp = spec("disruptionBudget: {enabled: false}");
    let three = members(&[UP, UP, UP], &[]);
    let r = compute(&seen(&sp, None, Ok(&three), at(0)));
    let d = condition(&r, "DisruptionBudget");
    assert_eq!(
        (d.status.as_str(), d.reason.as_str()),
        ("False", "Disabled")
    );
}

#[test]
fn the_tls_status_stays_until_tls_is_off_for_good() {
    let on = spec("tls: {enabled: true}");
    let kept = crate::crd::TlsStatus {
        server_name: "shop.prod.muster".into(),
        certificate_not_after: "2027-06-01T00:00:00Z".into(),
        ca_not_after: "2036-12-01T00:00:00Z".into(),
        ..Default::default()
    };
    let members = Err("no pod has an IP yet".to_owned());
    let first = compute(&Seen {
        tls: Some(kept.clone()),
        ..seen(&on, None, members.clone(), at(0))
    });
    assert_eq!(first.tls.as_ref(), Some(&kept));
    // A reconcile that did not look (it failed before): the last one stays.
    let again = compute(&seen(&on, Some(&first), members.clone(), at(1)));
    assert_eq!(again.tls.as_ref(), Some(&kept));
    // TLS turned off but refused (pods run with it): still what the agents carry.
    let off = spec("tls: {enabled: false}");
    let refused = [Problem {
        field: "spec.tls.enabled".into(),
        message: "cannot turn TLS off".into(),
    }];
    let held = compute(&Seen {
        problems: &refused,
        ..seen(&off, Some(&first), members.clone(), at(2))
    });
    assert_eq!(held.tls.as_ref(), Some(&kept));
    // Off and applied: gone.
    let gone = compute(&seen(&off, Some(&first), members, at(3)));
    assert_eq!(gone.tls, None);
}

#[test]
fn stranded_pods_are_a_condition_and_lock_forming_whatever_the_spec_says() {
    let spec = spec("replicas: 3, bootstrap: {newClusterEnabled: 'true'}");
    let stranded = [crate::stranded::Stranded {
        pod: "shop-1".into(),
        why: "on node b, which is not Ready (Ready is Unknown)".into(),
        ..Default::default()
    }];
    let members = members(&[], &[]);
    let mut look = seen(&spec, None, Ok(&members), at(0));
    let free = compute(&look);
    assert_eq!(free.new_cluster_enabled, Some(true));
    assert_eq!(condition(&free, "StrandedPods").status, "False");
    look.stranded = &stranded;
    let held = compute(&look);
    assert_eq!(
        held.new_cluster_enabled,
        Some(false),
        "refused although the spec says true"
    );
    let c = condition(&held, "StrandedPods");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "PodsMayStillRun")
    );
    assert!(
        c.message.contains("pod shop-1 is on node b"),
        "{}",
        c.message
    );
}
