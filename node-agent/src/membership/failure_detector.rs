//! The phi accrual failure detector (Hayashibara et al., 2004), as Akka Cluster uses it,
//! and the choice of whom a node monitors.
//!
//! Instead of a yes/no timeout, the detector keeps the inter-arrival times of a peer's
//! heartbeats and answers with `phi`: how unlikely, on a -log10 scale, it is that a
//! heartbeat is still to come given how long it has been silent. The intervals are taken
//! as normally distributed with the history's mean plus `acceptable-heartbeat-pause` and
//! at least `min-std-deviation`; the normal tail is approximated by a logistic curve (as Akka does).
//! A peer is unavailable once `phi >= threshold`. With the defaults and steady 1 s
//! heartbeats, that is after about 4.5 s of silence.
//!
//! Pure: every call carries `now`.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use crate::address::UniqueAddress;
use crate::bootstrap::decider::Time;

/// Settings of one detector (`cluster.failure-detector.*`).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSettings {
    /// phi at and above which the peer counts as unavailable.
    pub threshold: f64,
    /// Intervals kept in the history.
    pub max_sample_size: usize,
    /// Lower bound of the standard deviation used, so a very regular history does not
    /// make the detector jumpy.
    pub min_std_deviation: Duration,
    /// Silence on top of the mean interval that is still normal (GC, scheduling, load).
    pub acceptable_heartbeat_pause: Duration,
    /// The interval assumed before two heartbeats have been seen: the heartbeat interval.
    pub first_heartbeat_estimate: Duration,
}

impl Default for DetectorSettings {
    /// Akka Cluster's defaults, as `cluster.failure-detector` has them.
    fn default() -> Self {
        Self::from(&crate::config::FailureDetectorConfig::default())
    }
}

impl From<&crate::config::FailureDetectorConfig> for DetectorSettings {
    fn from(c: &crate::config::FailureDetectorConfig) -> Self {
        Self {
            threshold: c.threshold,
            max_sample_size: c.max_sample_size,
            min_std_deviation: c.min_std_deviation,
            acceptable_heartbeat_pause: c.acceptable_heartbeat_pause,
            first_heartbeat_estimate: c.heartbeat_interval,
        }
    }
}

/// Inter-arrival times in milliseconds, with running sums for mean and variance.
#[derive(Debug, Clone)]
struct History {
    intervals: VecDeque<f64>,
    sum: f64,
    squares: f64,
    max: usize,
}

impl History {
    fn new(max: usize) -> Self {
        Self {
            intervals: VecDeque::new(),
            sum: 0.0,
            squares: 0.0,
            max: max.max(1),
        }
    }

    fn push(&mut self, ms: f64) {
        if self.intervals.len() == self.max
            && let Some(old) = self.intervals.pop_front()
        {
            self.sum -= old;
            self.squares -= old * old;
        }
        self.intervals.push_back(ms);
        self.sum += ms;
        self.squares += ms * ms;
    }

    fn mean(&self) -> f64 {
        self.sum / self.intervals.len() as f64
    }

    fn std_deviation(&self) -> f64 {
        let mean = self.mean();
        (self.squares / self.intervals.len() as f64 - mean * mean)
            .max(0.0)
            .sqrt()
    }
}

/// The detector for one monitored peer.
#[derive(Debug, Clone)]
pub struct PhiAccrual {
    settings: DetectorSettings,
    history: History,
    last: Option<Time>,
}

impl PhiAccrual {
    pub fn new(settings: DetectorSettings) -> Self {
        Self {
            history: History::new(settings.max_sample_size),
            settings,
            last: None,
        }
    }

    /// A heartbeat (or its answer) arrived at `now`.
    pub fn heartbeat(&mut self, now: Time) {
        match self.last {
            None => {
                // Seed the history with the estimate ± a quarter, so the first silence
                // is judged against the expected interval.
                let mean = self.settings.first_heartbeat_estimate.as_secs_f64() * 1000.0;
                let spread = mean / 4.0;
                self.history.push(mean - spread);
                self.history.push(mean + spread);
            }
            Some(last) if now > last => {
                self.history.push((now - last).as_secs_f64() * 1000.0);
            }
            Some(_) => {}
        }
        self.last = Some(self.last.map_or(now, |l| l.max(now)));
    }

    /// Has any heartbeat arrived yet?
    pub fn is_monitoring(&self) -> bool {
        self.last.is_some()
    }

    /// The suspicion level at `now`; 0 before the first heartbeat.
    pub fn phi(&self, now: Time) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        let silent = now.saturating_sub(last).as_secs_f64() * 1000.0;
        let mean =
            self.history.mean() + self.settings.acceptable_heartbeat_pause.as_secs_f64() * 1000.0;
        let deviation = self
            .history
            .std_deviation()
            .max(self.settings.min_std_deviation.as_secs_f64() * 1000.0);
        phi(silent, mean, deviation)
    }

    /// Is the peer available at `now` (phi below the threshold)?
    pub fn is_available(&self, now: Time) -> bool {
        self.phi(now) < self.settings.threshold
    }
}

/// phi for `silent` ms since the last heartbeat, given the intervals' mean and standard
/// deviation (ms): -log10 of the probability that the next interval is longer, with the
/// normal distribution's tail approximated by a logistic function (within 1.3e-4 of
/// the exact probability).
pub fn phi(silent: f64, mean: f64, std_deviation: f64) -> f64 {
    let y = (silent - mean) / std_deviation;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    if silent > mean {
        -(e / (1.0 + e)).log10()
    } else {
        -(1.0 - 1.0 / (1.0 + e)).log10()
    }
}

/// The members `me` sends heartbeats to: the next `count` members after it on the ring
/// of all members ordered by address, so every member is watched by `count` others
/// (`monitored-by-nr-of-members`) and the load is even. Members in `unreachable` are
/// skipped but still monitored when there are not enough reachable ones, so a member
/// that comes back is noticed.
pub fn ring_neighbours(
    me: &UniqueAddress,
    members: &BTreeSet<UniqueAddress>,
    unreachable: &BTreeSet<UniqueAddress>,
    count: usize,
) -> BTreeSet<UniqueAddress> {
    let after = members.range((std::ops::Bound::Excluded(me), std::ops::Bound::Unbounded));
    let before = members.range(..me);
    let ring: Vec<&UniqueAddress> = after.chain(before).filter(|m| *m != me).collect();
    let mut out: BTreeSet<UniqueAddress> = ring
        .iter()
        .filter(|m| !unreachable.contains(**m))
        .take(count)
        .map(|m| (*m).clone())
        .collect();
    // The unreachable ones among the first `count` stay monitored, to see them return.
    out.extend(
        ring.iter()
            .take(count)
            .filter(|m| unreachable.contains(**m))
            .map(|m| (*m).clone()),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::NodeAddress;

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
}
