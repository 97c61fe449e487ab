use super::*;
use crate::base::address::NodeAddress;

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
    let me = cp("10.0.0.1:8558");
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
