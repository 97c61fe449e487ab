//! The handover gate: the application beside an agent says that its pod is not ready to
//! be stopped — shards or singletons still handing over — by holding the gate under a
//! name, and that it is by releasing that hold.
//!
//! A hold counts only once this member is being stopped: from the moment it is asked
//! to leave (a Leave, SIGTERM) the gate has `handover-timeout` to open. Until then
//! holds are kept and reported but stop nothing: an application may hold from the
//! start whatever it will have to hand over. While the gate is closed the agent stays
//! up after leaving (so the application can still reach it), and the operator neither
//! deletes the pod nor shrinks the StatefulSet over it.
//!
//! [`Gate`] is the pure state (time is an input); [`HandoverGate`] shares it between
//! the management routes, the agent and the binary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::handover::{HandoverBody, HoldBody};
use crate::base::time::{Clock, Time, sleep_until};

/// Holds one gate keeps at once: each is the application's, named by it.
pub const MAX_HOLDS: usize = 32;
/// The longest hold name (a DNS label's length).
pub const MAX_NAME_BYTES: usize = 63;
/// The longest reason.
pub const MAX_REASON_BYTES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hold {
    reason: Option<String>,
    since: Time,
}

/// Why a hold was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    #[error(
        "a hold's name is 1 to {MAX_NAME_BYTES} lowercase letters, digits, '-' or '.', starting and ending with a letter or digit (e.g. `singleton`), got {0:?}"
    )]
    BadName(String),
    #[error("a reason is at most {MAX_REASON_BYTES} bytes of printable text")]
    BadReason,
    #[error(
        "the gate already has {MAX_HOLDS} holds; release one first (DELETE /handover/holds/{{name}})"
    )]
    Full,
}

/// The gate's state at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    holds: BTreeMap<String, Hold>,
    /// When this member was first asked to stop.
    stopping_since: Option<Time>,
    timeout: Duration,
}

impl Gate {
    pub fn new(timeout: Duration) -> Self {
        Self {
            holds: BTreeMap::new(),
            stopping_since: None,
            timeout,
        }
    }

    /// Holds (or, when held already, keeps holding with the new reason) under `name`.
    pub fn hold(&mut self, name: &str, reason: Option<&str>, now: Time) -> Result<(), HoldError> {
        check_name(name)?;
        if reason.is_some_and(|r| r.len() > MAX_REASON_BYTES || r.chars().any(char::is_control)) {
            return Err(HoldError::BadReason);
        }
        let reason = reason.filter(|r| !r.is_empty()).map(str::to_owned);
        if let Some(h) = self.holds.get_mut(name) {
            h.reason = reason;
            return Ok(());
        }
        if self.holds.len() >= MAX_HOLDS {
            return Err(HoldError::Full);
        }
        self.holds
            .insert(name.to_owned(), Hold { reason, since: now });
        Ok(())
    }

    /// Releases the hold `name`; false if there was none.
    pub fn release(&mut self, name: &str) -> bool {
        self.holds.remove(name).is_some()
    }

    /// This member is being stopped: the timeout runs from the first call.
    pub fn stopping(&mut self, now: Time) {
        self.stopping_since.get_or_insert(now);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping_since.is_some()
    }

    /// When the timeout ends, once stopping.
    pub fn deadline(&self) -> Option<Time> {
        self.stopping_since.map(|t| t + self.timeout)
    }

    /// Whether the timeout ran out with holds left.
    pub fn timed_out(&self, now: Time) -> bool {
        !self.holds.is_empty() && self.deadline().is_some_and(|d| now >= d)
    }

    /// Whether the pod may be stopped: nothing is held, or the timeout ran out.
    pub fn ready_to_stop(&self, now: Time) -> bool {
        self.holds.is_empty() || self.timed_out(now)
    }

    /// The body of `GET /handover`.
    pub fn body(&self, now: Time) -> HandoverBody {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        HandoverBody {
            ready_to_stop: self.ready_to_stop(now),
            stopping: self.is_stopping(),
            stopping_for_millis: self.stopping_since.map(|t| millis(now.saturating_sub(t))),
            timeout_millis: millis(self.timeout),
            timed_out: self.timed_out(now),
            holds: self
                .holds
                .iter()
                .map(|(name, h)| HoldBody {
                    name: name.clone(),
                    reason: h.reason.clone(),
                    held_for_millis: millis(now.saturating_sub(h.since)),
                })
                .collect(),
        }
    }
}

fn check_name(name: &str) -> Result<(), HoldError> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && edge(name.chars().next())
        && edge(name.chars().last());
    if ok {
        Ok(())
    } else {
        Err(HoldError::BadName(name.chars().take(80).collect()))
    }
}

/// The agent's gate, shared; changes wake whoever waits for it to open.
#[derive(Debug, Clone)]
pub struct HandoverGate {
    gate: Arc<watch::Sender<Gate>>,
    clock: Clock,
}

impl HandoverGate {
    pub fn new(timeout: Duration, clock: Clock) -> Self {
        Self {
            gate: Arc::new(watch::Sender::new(Gate::new(timeout))),
            clock,
        }
    }

    pub fn hold(&self, name: &str, reason: Option<&str>) -> Result<(), HoldError> {
        let now = self.clock.now();
        let mut result = Ok(());
        self.gate
            .send_modify(|g| result = g.hold(name, reason, now));
        result
    }

    pub fn release(&self, name: &str) -> bool {
        let mut released = false;
        self.gate.send_modify(|g| released = g.release(name));
        released
    }

    /// This member is being stopped (asked to leave, or SIGTERM).
    pub fn stopping(&self) {
        let now = self.clock.now();
        self.gate.send_if_modified(|g| {
            let was = g.is_stopping();
            g.stopping(now);
            !was
        });
    }

    pub fn body(&self) -> HandoverBody {
        self.gate.borrow().body(self.clock.now())
    }

    /// Marks the member stopping and waits until the gate opens: true when every hold
    /// was released, false when the timeout ran out with holds left.
    pub async fn opened(&self) -> bool {
        self.stopping();
        let mut changes = self.gate.subscribe();
        loop {
            let (ready, timed_out, deadline) = {
                let g = changes.borrow_and_update();
                let now = self.clock.now();
                (g.ready_to_stop(now), g.timed_out(now), g.deadline())
            };
            if ready {
                return !timed_out;
            }
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return false;
                    }
                }
                () = sleep_until(deadline.map(|d| self.clock.instant(d))) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(20);

    fn s(secs: u64) -> Time {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_hold_stops_nothing_until_the_member_is_stopping_then_until_the_timeout() {
        let mut g = Gate::new(T);
        assert!(g.ready_to_stop(s(0)), "nothing held");
        g.hold("singleton", Some("hands over to the next oldest"), s(1))
            .unwrap();
        assert!(!g.ready_to_stop(s(2)), "held");
        assert!(!g.timed_out(s(1000)), "no timeout before a stop is asked");
        g.stopping(s(10));
        g.stopping(s(15)); // the first ask counts
        assert_eq!(g.deadline(), Some(s(30)));
        assert!(!g.ready_to_stop(s(29)));
        assert!(g.ready_to_stop(s(30)) && g.timed_out(s(30)));
        let b = g.body(s(12));
        assert!(!b.ready_to_stop && b.stopping && !b.timed_out);
        assert_eq!(b.stopping_for_millis, Some(2000));
        assert_eq!(b.holds[0].held_for_millis, 11_000);
        assert_eq!(
            b.holds[0].reason.as_deref(),
            Some("hands over to the next oldest")
        );
    }

    #[test]
    fn the_gate_opens_when_every_hold_is_released() {
        let mut g = Gate::new(T);
        g.hold("shards", None, s(0)).unwrap();
        g.hold("singleton", None, s(0)).unwrap();
        g.stopping(s(1));
        assert!(g.release("shards"));
        assert!(!g.ready_to_stop(s(2)), "one hold left");
        assert!(!g.release("shards"), "released already");
        assert!(g.release("singleton"));
        assert!(g.ready_to_stop(s(2)) && !g.timed_out(s(100)));
    }

    #[test]
    fn holding_again_keeps_the_first_time_and_bad_holds_change_nothing() {
        let mut g = Gate::new(T);
        g.hold("a", Some("x"), s(1)).unwrap();
        g.hold("a", None, s(5)).unwrap();
        let b = g.body(s(6));
        assert_eq!(b.holds.len(), 1);
        assert_eq!(b.holds[0].held_for_millis, 5000);
        assert_eq!(b.holds[0].reason, None);
        let before = g.clone();
        for name in ["", "A", "-a", "a-", "a/b", "a b", &"x".repeat(64)] {
            assert!(
                matches!(g.hold(name, None, s(7)), Err(HoldError::BadName(_))),
                "{name:?}"
            );
        }
        assert_eq!(
            g.hold("b", Some("line\nbreak"), s(7)),
            Err(HoldError::BadReason)
        );
        assert_eq!(
            g.hold("b", Some(&"r".repeat(257)), s(7)),
            Err(HoldError::BadReason)
        );
        assert_eq!(g, before);
        for i in 1..MAX_HOLDS {
            g.hold(&format!("h{i}"), None, s(8)).unwrap();
        }
        assert_eq!(g.hold("one-more", None, s(8)), Err(HoldError::Full));
        g.hold("a", None, s(8))
            .expect("an existing hold is no new one");
    }

    #[tokio::test]
    async fn the_shared_gate_wakes_its_waiter_on_release_or_at_the_timeout() {
        let gate = HandoverGate::new(T, Clock::start());
        assert!(gate.opened().await, "nothing held: open at once");

        let gate = HandoverGate::new(T, Clock::start());
        gate.hold("singleton", None).unwrap();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.opened().await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !gate.body().stopping {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the waiter never started"
            );
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "held: the waiter waits");
        gate.release("singleton");
        let opened = tokio::time::timeout(Duration::from_secs(10), waiter).await;
        assert!(
            opened.expect("woken by the release").unwrap(),
            "released, not timed out"
        );

        let short = Duration::from_millis(300);
        let gate = HandoverGate::new(short, Clock::start());
        gate.hold("singleton", None).unwrap();
        let started = tokio::time::Instant::now();
        assert!(!gate.opened().await, "the timeout ran out");
        assert!(started.elapsed() >= short);
        assert!(gate.body().timed_out && gate.body().ready_to_stop);
    }
}
