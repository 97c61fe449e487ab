//! The heartbeat side of failure detection for one node: whom it monitors, when to send
//! heartbeats, and which monitored members it currently finds unreachable. Pure: every
//! call carries `now`; the caller sends the heartbeats and feeds back the responses.
//!
//! A member that never answers is not left unjudged: `expected-response-after` its
//! monitoring began, it is judged as if a first answer had arrived then, so it becomes
//! unreachable about `expected-response-after` + 5.3 s later with the defaults.
//!
//! A stalled observer does not blame others for its own stall. `tick` is called at
//! least once per heartbeat interval (the core's next wake-up includes the next beat);
//! when it comes later than that — the process was paused, throttled or starved of
//! CPU — the lateness is this node's own deafness, not its peers' silence, and every
//! detector forgives it. Without this, a member that stalled for a few seconds flagged
//! all its monitored members unreachable when it woke up, and they flagged it: under
//! CPU starvation that was a storm of false unreachability (issue 16). A real crash of a
//! peer during the stall is detected that much later.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::failure_detector::{DetectorSettings, PhiAccrual};
use crate::base::address::UniqueAddress;
use crate::base::time::Time;
use crate::config::FailureDetectorConfig;

#[derive(Debug, Clone)]
struct Monitored {
    detector: PhiAccrual,
    since: Time,
}

/// Heartbeats to send now: one message, the same sequence number to each target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    pub seq: u64,
    pub to: Vec<UniqueAddress>,
}

#[derive(Debug, Clone)]
pub struct Heartbeats {
    detector: DetectorSettings,
    interval: Duration,
    expected_response_after: Duration,
    monitored: BTreeMap<UniqueAddress, Monitored>,
    next_beat: Time,
    seq: u64,
    /// When `tick` last ran.
    last_tick: Option<Time>,
}

impl Heartbeats {
    pub fn new(config: &FailureDetectorConfig, now: Time) -> Self {
        Self {
            detector: DetectorSettings::from(config),
            interval: config.heartbeat_interval,
            expected_response_after: config.expected_response_after,
            monitored: BTreeMap::new(),
            next_beat: now,
            seq: 0,
            last_tick: None,
        }
    }

    /// Monitors exactly `targets` from now on: new ones start with a fresh detector,
    /// dropped ones are forgotten (a member that comes back starts afresh).
    pub fn set_targets(&mut self, targets: &BTreeSet<UniqueAddress>, now: Time) {
        self.monitored.retain(|m, _| targets.contains(m));
        for t in targets {
            self.monitored
                .entry(t.clone())
                .or_insert_with(|| Monitored {
                    detector: PhiAccrual::new(self.detector.clone()),
                    since: now,
                });
        }
    }

    /// Heartbeats due at `now`, if any.
    pub fn tick(&mut self, now: Time) -> Option<Beat> {
        // Later than the interval since the last tick: our own stall, forgiven.
        if let Some(last) = self.last_tick.replace(now) {
            let stall = now.saturating_sub(last + self.interval);
            if !stall.is_zero() {
                for m in self.monitored.values_mut() {
                    m.detector.forgive(stall, now);
                    m.since = (m.since + stall).min(now);
                }
            }
        }
        for m in self.monitored.values_mut() {
            let expected = m.since + self.expected_response_after;
            if !m.detector.is_monitoring() && now >= expected {
                m.detector.heartbeat(expected);
            }
        }
        if now < self.next_beat {
            return None;
        }
        // Never more than one beat per interval, even after a long pause of our own.
        self.next_beat = (self.next_beat + self.interval).max(now);
        if self.monitored.is_empty() {
            return None;
        }
        self.seq += 1;
        Some(Beat {
            seq: self.seq,
            to: self.monitored.keys().cloned().collect(),
        })
    }

    /// A response to a heartbeat arrived from `from`.
    pub fn on_response(&mut self, from: &UniqueAddress, now: Time) {
        if let Some(m) = self.monitored.get_mut(from) {
            m.detector.heartbeat(now);
        }
    }

    /// How long monitored member `node` has been silent; `None` when it is not
    /// monitored or has not answered yet.
    pub fn silent_for(&self, node: &UniqueAddress, now: Time) -> Option<Duration> {
        self.monitored.get(node)?.detector.silent_for(now)
    }

    /// The heartbeat interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The monitored members whose phi is at or above the threshold.
    pub fn unreachable(&self, now: Time) -> BTreeSet<UniqueAddress> {
        self.monitored
            .iter()
            .filter(|(_, m)| !m.detector.is_available(now))
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// Phi of every monitored member at `now` (0 until its first response is due).
    pub fn phis(&self, now: Time) -> Vec<(UniqueAddress, f64)> {
        self.monitored
            .iter()
            .map(|(a, m)| (a.clone(), m.detector.phi(now)))
            .collect()
    }

    /// When the next heartbeat is due.
    pub fn next_wakeup(&self) -> Time {
        self.next_beat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::address::NodeAddress;

    fn node(i: u8) -> UniqueAddress {
        UniqueAddress::new(NodeAddress::new("t", [10, 0, 0, i].into(), 2552), 1)
    }

    fn ms(n: u64) -> Time {
        Duration::from_millis(n)
    }

    /// Runs `until` in 100 ms steps; `answers(target, t)` says whether a heartbeat sent
    /// at `t` is answered (10 ms later). Returns when each target first became
    /// unreachable.
    fn run(
        hb: &mut Heartbeats,
        until: Time,
        answers: impl Fn(&UniqueAddress, Time) -> bool,
    ) -> BTreeMap<UniqueAddress, Time> {
        let mut first_unreachable = BTreeMap::new();
        let mut pending: Vec<(Time, UniqueAddress)> = Vec::new();
        let mut t = Duration::ZERO;
        while t <= until {
            pending.retain(|(at, from)| {
                if *at <= t {
                    hb.on_response(from, *at);
                    false
                } else {
                    true
                }
            });
            if let Some(beat) = hb.tick(t) {
                for to in beat.to {
                    if answers(&to, t) {
                        pending.push((t + ms(10), to));
                    }
                }
            }
            for u in hb.unreachable(t) {
                first_unreachable.entry(u).or_insert(t);
            }
            t += ms(100);
        }
        first_unreachable
    }

    #[test]
    fn answering_members_stay_reachable_and_beats_keep_their_interval() {
        let mut hb = Heartbeats::new(&FailureDetectorConfig::default(), Duration::ZERO);
        hb.set_targets(&[node(2), node(3)].into(), Duration::ZERO);
        let first = hb.tick(Duration::ZERO).expect("a beat at once");
        assert_eq!(first.to, vec![node(2), node(3)]);
        assert_eq!(hb.tick(ms(500)), None);
        assert_eq!(hb.tick(ms(1000)).map(|b| b.seq), Some(2));
        let flagged = run(&mut hb, Duration::from_secs(60), |_, _| true);
        assert!(flagged.is_empty(), "{flagged:?}");
    }

    #[test]
    fn a_crashed_member_is_unreachable_about_four_and_a_half_seconds_after_its_last_answer() {
        let mut hb = Heartbeats::new(&FailureDetectorConfig::default(), Duration::ZERO);
        hb.set_targets(&[node(2), node(3)].into(), Duration::ZERO);
        let crash = Duration::from_secs(30);
        let flagged = run(&mut hb, Duration::from_secs(40), |to, t| {
            *to != node(3) || t < crash
        });
        let at = flagged.get(&node(3)).expect("node 3 detected");
        let after = *at - (crash - Duration::from_secs(1) + ms(10));
        assert!(
            after >= ms(4300) && after <= ms(4800),
            "{after:?} after its last answer"
        );
        assert!(!flagged.contains_key(&node(2)));
    }

    #[test]
    fn a_member_that_never_answers_becomes_unreachable() {
        let mut hb = Heartbeats::new(&FailureDetectorConfig::default(), Duration::ZERO);
        hb.set_targets(&[node(2)].into(), Duration::ZERO);
        let flagged = run(&mut hb, Duration::from_secs(20), |_, _| false);
        let at = flagged.get(&node(2)).expect("detected");
        // Judged from 1 s (expected-response-after), estimate 1 s ± 250 ms + 3 s pause.
        assert!(*at >= ms(6000) && *at <= ms(6600), "{at:?}");
    }

    #[test]
    fn a_stall_of_our_own_is_not_blamed_on_the_monitored() {
        let mut hb = Heartbeats::new(&FailureDetectorConfig::default(), Duration::ZERO);
        hb.set_targets(&[node(2)].into(), Duration::ZERO);
        // Steady answers for 20 s.
        let flagged = run(&mut hb, Duration::from_secs(20), |_, _| true);
        assert!(flagged.is_empty());
        // Then this node stalls 8 s (no tick, no answer read); it wakes up at 28 s and
        // ticks before it reads the answers that queued meanwhile.
        let woke = Duration::from_secs(28);
        hb.tick(woke);
        assert!(
            hb.unreachable(woke).is_empty(),
            "blamed for our stall: phi {:?}",
            hb.phis(woke)
        );
        // A peer that really stays silent after the stall is still found.
        let mut t = woke;
        while hb.unreachable(t).is_empty() {
            assert!(t < woke + Duration::from_secs(10), "never detected");
            t += ms(100);
            hb.tick(t);
        }
        // Its silence counts from the end of our stall: about 4.5 s after its last answer
        // (19 s), moved on by the 7 s we were deaf.
        assert!(t >= woke + ms(2000), "detected {:?} after waking", t - woke);
    }

    #[test]
    fn dropped_targets_are_forgotten_and_start_afresh() {
        let mut hb = Heartbeats::new(&FailureDetectorConfig::default(), Duration::ZERO);
        hb.set_targets(&[node(2)].into(), Duration::ZERO);
        let flagged = run(&mut hb, Duration::from_secs(10), |_, _| false);
        assert!(flagged.contains_key(&node(2)));
        hb.set_targets(&BTreeSet::new(), Duration::from_secs(10));
        assert!(hb.unreachable(Duration::from_secs(10)).is_empty());
        assert_eq!(hb.tick(Duration::from_secs(11)), None, "nobody to beat");
        hb.set_targets(&[node(2)].into(), Duration::from_secs(11));
        assert!(hb.unreachable(Duration::from_secs(12)).is_empty());
    }
}
