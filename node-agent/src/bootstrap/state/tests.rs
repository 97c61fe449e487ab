use super::*;
use crate::base::address::NodeAddress;

/// A claim by a node whose own new-cluster-enabled is on.
const CLAIM: Action = Action::ClaimFormation {
    new_cluster_enabled: true,
};
/// And by one whose own setting is off.
const OFF_HERE: Action = Action::ClaimFormation {
    new_cluster_enabled: false,
};

fn cp(s: &str) -> ContactPoint {
    s.parse().unwrap()
}

fn schedule() -> Schedule {
    Schedule {
        interval: Duration::from_secs(1),
        exponential_backoff_random_factor: 0.0,
        exponential_backoff_max: Duration::from_secs(15),
        probe_interval: Duration::from_secs(1),
        probe_interval_jitter: 0.0,
        probing_failure_timeout: Duration::from_secs(3),
    }
}

fn boot() -> Bootstrap {
    boot_as("10.0.0.1:8558")
}

/// A node at `me`.
fn boot_as(me: &str) -> Bootstrap {
    let me = cp(me);
    Bootstrap::new(
        schedule(),
        DeciderSettings::example(),
        SelfIdentity {
            address: NodeAddress::new("t", me.ip, 2552),
            management: me,
        },
        Duration::ZERO,
    )
}

const S: fn(u64) -> Duration = Duration::from_secs;

#[test]
fn looks_up_then_probes_every_point_then_reprobes_on_interval() {
    let mut b = boot();
    let mut rng = Rng::seeded(1);
    assert_eq!(b.poll(S(0)), vec![Action::Lookup]);
    assert_eq!(b.poll(S(0)), vec![], "nothing twice while in flight");
    b.on_lookup(
        S(0),
        &mut rng,
        Ok((vec![cp("10.0.0.2:8558"), cp("10.0.0.1:8558")], vec![])),
    );
    assert_eq!(
        b.poll(S(0)),
        vec![
            Action::Probe(cp("10.0.0.1:8558")),
            Action::Probe(cp("10.0.0.2:8558"))
        ]
    );
    assert_eq!(b.next_wakeup(S(0)), Some(S(1)), "next lookup");
    b.on_probe(
        S(0),
        &mut rng,
        &cp("10.0.0.2:8558"),
        Err("connection refused".into()),
    );
    assert_eq!(
        b.poll(S(1)),
        vec![Action::Lookup, Action::Probe(cp("10.0.0.2:8558"))]
    );
}

#[test]
fn failed_lookups_back_off_exponentially_up_to_the_max() {
    let mut b = boot();
    let mut rng = Rng::seeded(1);
    let mut now = S(0);
    let mut gaps = vec![];
    for _ in 0..6 {
        assert_eq!(b.poll(now), vec![Action::Lookup]);
        b.on_lookup(now, &mut rng, Err("dns down".into()));
        let next = b.next_wakeup(now).unwrap();
        gaps.push((next - now).as_secs());
        now = next;
    }
    assert_eq!(gaps, [2, 4, 8, 15, 15, 15]);
    assert!(matches!(
        b.decide(now),
        Decision::Wait(decider::Waiting::LookupFailed { .. })
    ));
}

#[test]
fn a_point_failing_for_the_timeout_triggers_rediscovery() {
    let mut b = boot();
    let mut rng = Rng::seeded(1);
    b.poll(S(0));
    b.on_lookup(S(0), &mut rng, Ok((vec![cp("10.0.0.2:8558")], vec![])));
    b.poll(S(0));
    // Let the periodic lookups run so only the failure can pull the next one in.
    let far = S(100);
    b.lookup.next_at = far;
    for t in [0, 1, 2] {
        b.on_probe(S(t), &mut rng, &cp("10.0.0.2:8558"), Err("refused".into()));
        assert_eq!(b.lookup.next_at, far);
        b.poll(S(t + 1));
    }
    b.on_probe(S(3), &mut rng, &cp("10.0.0.2:8558"), Err("refused".into()));
    assert_eq!(b.lookup.next_at, S(3));
    assert!(b.status(S(3)).contact_points[0].last_error.as_deref() == Some("refused"));
}

#[test]
fn removed_points_are_forgotten_but_remain_ever_seen() {
    let mut b = boot();
    let mut rng = Rng::seeded(1);
    b.poll(S(0));
    b.on_lookup(
        S(0),
        &mut rng,
        Ok((vec![cp("10.0.0.1:8558"), cp("10.0.0.2:8558")], vec![])),
    );
    b.poll(S(1));
    b.on_lookup(S(1), &mut rng, Ok((vec![cp("10.0.0.1:8558")], vec![])));
    assert_eq!(b.discovered().len(), 1);
    assert_eq!(b.ever_seen().len(), 2);
    assert_eq!(b.probes.len(), 1);
}

#[test]
fn nudge_probes_back_soon_but_not_in_a_storm() {
    let mut b = boot();
    let mut rng = Rng::seeded(1);
    b.poll(S(0));
    b.on_lookup(S(0), &mut rng, Ok((vec![cp("10.0.0.2:8558")], vec![])));
    b.poll(S(0));
    b.on_probe(S(0), &mut rng, &cp("10.0.0.2:8558"), Err("refused".into()));
    let t = Duration::from_millis(100);
    b.nudge(t, &cp("10.0.0.2:8558"));
    assert_eq!(
        b.poll(t),
        vec![],
        "started 100ms ago: wait for a quarter interval"
    );
    let q = Duration::from_millis(250);
    assert_eq!(b.poll(q), vec![Action::Probe(cp("10.0.0.2:8558"))]);
    b.nudge(q, &cp("10.0.0.9:8558")); // unknown points are ignored
}

#[test]
fn a_passed_stable_margin_does_not_wake_again() {
    let mut b = boot();
    let mut rng = Rng::seeded(1);
    assert_eq!(b.poll(S(0)), vec![Action::Lookup]);
    b.on_lookup(
        S(0),
        &mut rng,
        Ok((vec![cp("10.0.0.1:8558"), cp("10.0.0.2:8558")], vec![])),
    );
    // Probes stay in flight (no answers), the lookup is in flight: only the stable
    // margin remains, and once it has passed nothing is due.
    b.poll(S(0));
    let lookup_at = b.next_wakeup(S(0)).unwrap();
    assert!(b.poll(lookup_at).contains(&Action::Lookup));
    assert_eq!(b.next_wakeup(S(4)), Some(S(5)), "stable margin ahead");
    assert_eq!(
        b.next_wakeup(S(5)),
        None,
        "stable margin passed, all in flight"
    );
}

#[test]
fn finished_does_nothing() {
    let mut b = boot();
    b.finish();
    assert!(b.poll(S(0)).is_empty());
    assert_eq!(b.next_wakeup(S(0)), None);
}

/// A node at 10.0.0.1 (with the formation record `ns/rec` when `record`) that has
/// discovered {1, 2} and heard both report that set: it may form by agreement at S(0).
fn may_form(record: bool) -> (Bootstrap, Rng) {
    heard_both(boot(), record)
}

/// `b` (with the formation record `ns/rec` when `record`) having discovered {1, 2} and
/// heard both report that set at S(0).
fn heard_both(mut b: Bootstrap, record: bool) -> (Bootstrap, Rng) {
    if record {
        b = b.with_formation_record("ns/rec".into(), S(0));
    }
    let mut rng = Rng::seeded(1);
    assert_eq!(b.poll(S(0)), vec![Action::Lookup]);
    b.on_lookup(
        S(0),
        &mut rng,
        Ok((vec![cp("10.0.0.1:8558"), cp("10.0.0.2:8558")], vec![])),
    );
    answered(&mut b, &mut rng, S(0));
    (b, rng)
}

/// Both of {1, 2} answer at `at`, reporting that set.
fn answered(b: &mut Bootstrap, rng: &mut Rng, at: Duration) {
    use crate::api::SeedNodes;
    let set = [cp("10.0.0.1:8558"), cp("10.0.0.2:8558")];
    for p in &set {
        let answer = ProbeAnswer {
            at,
            answer: SeedNodes {
                self_node: NodeAddress::new("t", p.ip, 2552),
                seed_nodes: vec![],
                contact_points: Some(set.iter().cloned().collect()),
            },
            from_self: false,
        };
        b.on_probe(at, rng, p, Ok(answer));
    }
}

#[test]
fn without_a_record_the_lowest_forms_at_once() {
    let (mut b, _) = may_form(false);
    assert_eq!(b.instruction(S(0)), Some(Instruction::Form));
}

#[test]
fn with_a_record_the_lowest_claims_it_before_forming() {
    let (mut b, _) = may_form(true);
    assert_eq!(b.instruction(S(0)), None, "no formation before the claim");
    assert!(matches!(
        b.decide(S(0)),
        Decision::Wait(Waiting::ClaimingFormation { .. })
    ));
    assert!(b.poll(S(0)).contains(&CLAIM));
    assert!(!b.poll(S(0)).contains(&CLAIM), "one claim at a time");
    b.on_claim(S(0), ClaimOutcome::Claimed);
    assert_eq!(b.next_wakeup(S(0)), Some(S(0)), "form now");
    assert_eq!(b.instruction(S(0)), Some(Instruction::Form));
    assert_eq!(b.status(S(0)).instruction, Some("form"));
    assert!(!b.poll(S(1)).contains(&CLAIM));
}

#[test]
fn a_held_record_means_never_forming_and_is_looked_at_again_later() {
    let (mut b, mut rng) = may_form(true);
    assert!(b.poll(S(0)).contains(&CLAIM));
    b.on_claim(
        S(0),
        ClaimOutcome::HeldBy("muster://t@10.0.0.9:2552#1".into()),
    );
    assert_eq!(b.instruction(S(0)), None);
    let status = b.status(S(0));
    assert!(
        status.reason.contains("held by muster://t@10.0.0.9:2552#1"),
        "{}",
        status.reason
    );
    assert!(!b.poll(S(5)).contains(&CLAIM));
    assert!(b.next_wakeup(S(5)).is_some_and(|t| t <= HELD_RECHECK));
    assert_eq!(b.instruction(S(9)), None);
    answered(&mut b, &mut rng, HELD_RECHECK);
    assert!(b.poll(HELD_RECHECK).contains(&CLAIM));
    b.on_claim(HELD_RECHECK, ClaimOutcome::Claimed);
    assert_eq!(b.instruction(HELD_RECHECK), Some(Instruction::Form));
}

/// The claims among what is due at `t`.
fn claims(b: &mut Bootstrap, t: Duration) -> Vec<Action> {
    b.poll(t)
        .into_iter()
        .filter(|a| matches!(a, Action::ClaimFormation { .. }))
        .collect()
}

#[test]
fn with_forming_off_here_the_record_is_still_asked_and_its_say_decides() {
    let (mut b, mut rng) = may_form(true);
    b.set_new_cluster_enabled(false);
    // Off here: the rules alone say so, but the record is asked all the same (with
    // this node's setting, for a record that names no ConfigMap).
    assert_eq!(
        b.decide_unrecorded(S(0)),
        Decision::Wait(Waiting::NewClusterDisabled)
    );
    assert_eq!(claims(&mut b, S(0)), [OFF_HERE]);
    assert_eq!(b.instruction(S(0)), None);
    // No ConfigMap named: off, as this node says; said as before, asked again only
    // after a minute.
    b.on_claim(S(0), ClaimOutcome::Disabled { from_api: false });
    assert_eq!(b.decide(S(0)), Decision::Wait(Waiting::NewClusterDisabled));
    assert_eq!(claims(&mut b, HELD_RECHECK), []);
    assert_eq!(claims(&mut b, OFF_RECHECK - S(1)), []);
    let t = OFF_RECHECK;
    answered(&mut b, &mut rng, t);
    assert_eq!(claims(&mut b, t), [OFF_HERE]);
    // The named ConfigMap, read, says off: said so, asked again after 10 s.
    b.on_claim(t, ClaimOutcome::Disabled { from_api: true });
    assert!(matches!(
        b.decide(t),
        Decision::Wait(Waiting::NewClusterDisabledInConfigMap { .. })
    ));
    assert_eq!(b.instruction(t), None);
    // Held: said so.
    let t = t + HELD_RECHECK;
    answered(&mut b, &mut rng, t);
    assert_eq!(claims(&mut b, t), [OFF_HERE]);
    b.on_claim(t, ClaimOutcome::HeldBy("muster-operator: x".into()));
    assert!(matches!(
        b.decide(t),
        Decision::Wait(Waiting::FormationRecorded { .. })
    ));
    // Its own setting turned on while a claim went with it off: asked again at once.
    let t = t + HELD_RECHECK;
    answered(&mut b, &mut rng, t);
    assert_eq!(claims(&mut b, t), [OFF_HERE]);
    b.set_new_cluster_enabled(true);
    b.on_claim(t, ClaimOutcome::Disabled { from_api: false });
    assert!(matches!(
        b.decide(t),
        Decision::Wait(Waiting::ClaimingFormation { .. })
    ));
    assert_eq!(claims(&mut b, t), [CLAIM]);
    // The named ConfigMap says off although this node says on: the ConfigMap decides,
    // and a change of this node's setting does not hurry the next look.
    b.on_claim(t, ClaimOutcome::Disabled { from_api: true });
    assert!(matches!(
        b.decide(t),
        Decision::Wait(Waiting::NewClusterDisabledInConfigMap { .. })
    ));
    b.set_new_cluster_enabled(false);
    assert_eq!(claims(&mut b, t + S(1)), []);
    // Off by its own setting, stored; turned on: asked again at once.
    let t = t + HELD_RECHECK;
    answered(&mut b, &mut rng, t);
    assert_eq!(claims(&mut b, t), [OFF_HERE]);
    b.on_claim(t, ClaimOutcome::Disabled { from_api: false });
    assert_eq!(claims(&mut b, t + S(1)), []);
    b.set_new_cluster_enabled(true);
    assert_eq!(claims(&mut b, t + S(1)), [CLAIM]);
    b.on_claim(t + S(1), ClaimOutcome::HeldBy("muster-operator: x".into()));
    b.set_new_cluster_enabled(false);
    assert_eq!(
        claims(&mut b, t + S(2)),
        [],
        "a held record is not asked again sooner"
    );
    // Asking failed (the named ConfigMap missing, say): that is what it waits on, not
    // this node's own setting.
    let t = t + S(1) + HELD_RECHECK;
    answered(&mut b, &mut rng, t);
    assert_eq!(claims(&mut b, t), [OFF_HERE]);
    b.on_claim(t, ClaimOutcome::Failed("no ConfigMap".into()));
    assert!(matches!(
        b.decide(t),
        Decision::Wait(Waiting::FormationRecordUnavailable { ref error, .. }) if error == "no ConfigMap"
    ));
    // The operator allowed forming and opened the record: the claim went through, so
    // this node forms although its mounted setting still says false.
    let t = t + FAILED_CLAIM_RETRY;
    answered(&mut b, &mut rng, t);
    assert_eq!(claims(&mut b, t), [OFF_HERE]);
    b.on_claim(t, ClaimOutcome::Claimed);
    assert_eq!(b.instruction(t), Some(Instruction::Form));
}

#[test]
fn only_the_node_that_would_form_asks_the_record() {
    // Node 2 of {1, 2}: not the lowest, so it never claims, on or off.
    for on in [true, false] {
        let (mut b, _) = heard_both(boot_as("10.0.0.2:8558"), true);
        b.set_new_cluster_enabled(on);
        assert_eq!(claims(&mut b, S(0)), [], "on: {on}");
    }
}

#[test]
fn a_failed_claim_is_retried_and_said() {
    let (mut b, mut rng) = may_form(true);
    assert!(b.poll(S(0)).contains(&CLAIM));
    b.on_claim(S(0), ClaimOutcome::Failed("forbidden".into()));
    assert!(matches!(
        b.decide(S(1)),
        Decision::Wait(Waiting::FormationRecordUnavailable { ref error, .. }) if error == "forbidden"
    ));
    assert!(!b.poll(S(1)).contains(&CLAIM));
    // Retried, waiting twice as long after each failure, up to the max.
    let mut now = S(0);
    let mut gaps = vec![];
    for _ in 0..6 {
        let Record::Open { next_at: next, .. } = b.record else {
            panic!("open")
        };
        gaps.push((next - now).as_secs());
        now = next;
        answered(&mut b, &mut rng, now);
        assert!(b.poll(now).contains(&CLAIM));
        b.on_claim(now, ClaimOutcome::Failed("forbidden".into()));
    }
    assert_eq!(gaps, [2, 4, 8, 16, 30, 30]);
}

#[test]
fn a_claimed_record_forms_even_if_the_view_changed_meanwhile() {
    let (mut b, mut rng) = may_form(true);
    assert!(b.poll(S(0)).contains(&CLAIM));
    // While the claim was in flight a lower contact point appeared: the rules alone
    // would now wait for it, but this node holds the record, so no one else could form.
    b.on_lookup(
        S(0),
        &mut rng,
        Ok((
            vec![
                cp("10.0.0.0:8558"),
                cp("10.0.0.1:8558"),
                cp("10.0.0.2:8558"),
            ],
            vec![],
        )),
    );
    assert!(matches!(b.decide_unrecorded(S(0)), Decision::Wait(_)));
    b.on_claim(S(0), ClaimOutcome::Claimed);
    assert_eq!(b.instruction(S(0)), Some(Instruction::Form));
}

#[test]
fn a_cluster_reported_after_a_claim_is_joined() {
    use crate::api::{SeedNode, SeedNodes};
    let (mut b, mut rng) = may_form(true);
    assert!(b.poll(S(0)).contains(&CLAIM));
    b.on_claim(S(0), ClaimOutcome::Claimed);
    let seed = NodeAddress::new("t", cp("10.0.0.2:8558").ip, 2552);
    let answer = ProbeAnswer {
        at: S(0),
        answer: SeedNodes {
            self_node: seed.clone(),
            seed_nodes: vec![SeedNode {
                node: seed.clone(),
                node_uid: 7,
                status: crate::base::member::MemberStatus::Up,
                roles: vec![],
            }],
            contact_points: None,
        },
        from_self: false,
    };
    b.on_probe(S(0), &mut rng, &cp("10.0.0.2:8558"), Ok(answer));
    assert_eq!(b.instruction(S(0)), Some(Instruction::Join(vec![seed])));
}
