use super::*;
use crate::base::address::NodeAddress;

fn ms(n: u64) -> Time {
    Duration::from_millis(n)
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

#[test]
fn phi_golden_values() {
    // At the mean the probability of a later heartbeat is one half.
    assert!(
        close(phi(1000.0, 1000.0, 100.0), std::f64::consts::LOG10_2, 1e-4),
        "{}",
        phi(1000.0, 1000.0, 100.0)
    );
    // One, two, three standard deviations later. The exact normal tails (0.1587,
    // 0.02275, 0.00135) give 0.7995, 1.6430, 2.8697; the logistic approximation is
    // within 1.3e-4 of those probabilities, which at 3 sigma is 2.9095.
    assert!(close(phi(1100.0, 1000.0, 100.0), 0.79951, 1e-4));
    assert!(close(phi(1200.0, 1000.0, 100.0), 1.64283, 1e-4));
    assert!(close(phi(1300.0, 1000.0, 100.0), 2.90948, 1e-4));
    // Early: well below a half's suspicion.
    assert!(phi(500.0, 1000.0, 100.0) < 1e-3);
}

#[test]
fn phi_grows_with_silence() {
    let mut last = 0.0;
    for silent in (0..10_000).step_by(50) {
        let p = phi(f64::from(silent), 4000.0, 100.0);
        assert!(p >= last, "phi({silent}) = {p} < {last}");
        last = p;
    }
}

/// A peer that beat every second for a minute, then went silent.
fn steady_peer() -> PhiAccrual {
    let mut d = PhiAccrual::new(DetectorSettings::default());
    for s in 0..=60 {
        d.heartbeat(Duration::from_secs(s));
    }
    d
}

#[test]
fn with_the_defaults_a_crash_is_detected_after_about_four_and_a_half_seconds() {
    let d = steady_peer();
    let last = Duration::from_secs(60);
    let detected = (0..10_000u64)
        .map(|n| last + ms(n))
        .find(|t| !d.is_available(*t))
        .expect("detected within 10 s")
        - last;
    println!("detected after {detected:?} of silence");
    assert!(
        detected >= ms(4400) && detected <= ms(4600),
        "detected after {detected:?}"
    );
    assert!(
        d.is_available(last + ms(4000)),
        "4 s is an acceptable pause"
    );
}

#[test]
fn irregular_heartbeats_widen_the_tolerance() {
    let mut d = PhiAccrual::new(DetectorSettings::default());
    let mut t = Duration::ZERO;
    for i in 0..100 {
        t += if i % 2 == 0 { ms(500) } else { ms(1500) };
        d.heartbeat(t);
    }
    let regular = steady_peer();
    let silence = ms(4500);
    assert!(d.phi(t + silence) < regular.phi(Duration::from_secs(60) + silence));
    assert!(d.is_available(t + silence));
}

#[test]
fn the_defaults_are_akkas() {
    let d = DetectorSettings::default();
    assert_eq!(d.threshold, 8.0);
    assert_eq!(d.max_sample_size, 1000);
    assert_eq!(d.min_std_deviation, ms(100));
    assert_eq!(d.acceptable_heartbeat_pause, ms(3000));
    assert_eq!(d.first_heartbeat_estimate, ms(1000));
}

#[test]
fn before_the_first_heartbeat_nothing_is_suspected() {
    let d = PhiAccrual::new(DetectorSettings::default());
    assert!(!d.is_monitoring());
    assert_eq!(d.phi(Duration::from_secs(1000)), 0.0);
    assert!(d.is_available(Duration::from_secs(1000)));
}

#[test]
fn first_heartbeat_uses_the_estimate() {
    let mut d = PhiAccrual::new(DetectorSettings::default());
    d.heartbeat(Duration::from_secs(10));
    // Estimate 1 s ± 250 ms: mean 1 s + 3 s pause, deviation 250 ms.
    let expected = phi(4000.0, 4000.0, 250.0);
    assert!(close(d.phi(Duration::from_secs(14)), expected, 1e-9));
    assert!(d.is_available(Duration::from_secs(15)));
    assert!(!d.is_available(Duration::from_secs(16)));
}

#[test]
fn the_history_is_bounded() {
    let mut d = PhiAccrual::new(DetectorSettings {
        max_sample_size: 10,
        ..DetectorSettings::default()
    });
    let mut t = Duration::ZERO;
    for _ in 0..100 {
        t += ms(5000);
        d.heartbeat(t);
    }
    for _ in 0..10 {
        t += ms(1000);
        d.heartbeat(t);
    }
    // Only the 1 s intervals remain: mean 1 s, so 4.5 s of silence is suspicious.
    assert!(close(d.history.mean(), 1000.0, 1e-6));
    assert!(!d.is_available(t + ms(4600)));
}

fn node(i: u8) -> UniqueAddress {
    UniqueAddress {
        address: NodeAddress::new("c", format!("127.0.0.{i}").parse().unwrap(), 2552),
        uid: u64::from(i),
    }
}

#[test]
fn each_member_watches_the_next_ones_on_the_ring() {
    let members: BTreeSet<_> = (1..=5).map(node).collect();
    let none = BTreeSet::new();
    let n = |ids: &[u8]| ids.iter().map(|i| node(*i)).collect::<BTreeSet<_>>();
    assert_eq!(ring_neighbours(&node(1), &members, &none, 2), n(&[2, 3]));
    assert_eq!(ring_neighbours(&node(4), &members, &none, 2), n(&[5, 1]));
    assert_eq!(
        ring_neighbours(&node(5), &members, &none, 9),
        n(&[1, 2, 3, 4])
    );
    // Every member is watched by exactly `count` others.
    for m in &members {
        let watchers = members
            .iter()
            .filter(|o| ring_neighbours(o, &members, &none, 2).contains(m))
            .count();
        assert_eq!(watchers, 2, "{m:?}");
    }
}

#[test]
fn unreachable_neighbours_are_replaced_but_still_watched() {
    let members: BTreeSet<_> = (1..=5).map(node).collect();
    let unreachable: BTreeSet<_> = [node(2)].into();
    let got = ring_neighbours(&node(1), &members, &unreachable, 2);
    let want: BTreeSet<_> = [node(2), node(3), node(4)].into();
    assert_eq!(got, want);
}
