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

use crate::base::address::UniqueAddress;
use crate::base::time::Time;

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

    /// How long since the last heartbeat (after forgiveness); `None` before the first.
    pub fn silent_for(&self, now: Time) -> Option<Duration> {
        self.last.map(|l| now.saturating_sub(l))
    }

    /// This node itself could not listen for `pause` (it was stalled): that silence is
    /// not the peer's. Moves the last arrival forward by it, never past `now`; the
    /// history is left as it was.
    pub fn forgive(&mut self, pause: Duration, now: Time) {
        if let Some(last) = self.last {
            self.last = Some((last + pause).min(now).max(last));
        }
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
mod tests;
