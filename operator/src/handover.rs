//! The handover gate, as the operator reads it: before it deletes a pod (a rollout) or
//! shrinks the StatefulSet over it (a scale-down), it asks that pod's agent
//! (`GET /handover`) whether the application beside it is ready to be stopped. The
//! agent's own `cluster.handover-timeout` bounds the wait, so the operator keeps no
//! clock of its own and an operator restart changes nothing.

use std::time::Duration;

use node_agent::api::ClientError;
use node_agent::api::handover::HandoverBody;

/// What the gate of one pod says about stopping it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Nothing held, the member is not being stopped, or its agent is gone or older
    /// than the gate (stopping it waits for nothing that could answer).
    Open,
    /// The application holds it: wait, for this reason (in words).
    Held(String),
    /// The timeout ran out with holds left: stop anyway, and say so.
    TimedOut(String),
}

/// How much longer than the agents' handover timeout the operator itself waits at
/// most, by its own clock, for a gate it found held: an agent that stops answering, or
/// anything else answering on its port, cannot hold a pod for ever.
pub const OPERATOR_MARGIN: Duration = Duration::from_secs(10);

/// The gate of `pod` from its agent's answer. `held_for`: how long this operator has
/// found it held (or unanswered) already; `cap`: the most it waits
/// (`handoverTimeout` plus [`OPERATOR_MARGIN`]).
pub fn judge(
    pod: &str,
    answer: Result<&HandoverBody, &ClientError>,
    held_for: Duration,
    cap: Duration,
) -> Gate {
    let secs = |ms: u64| ms.div_ceil(1000);
    let held = match answer {
        // Nobody listens: the agent has exited (it does once its gate opened).
        Err(ClientError::Unreachable(_)) => return Gate::Open,
        // An agent older than the gate.
        Err(ClientError::Status { code: 404, .. }) => return Gate::Open,
        Err(e) => format!("the agent in pod {pod} did not answer GET /handover ({e})"),
        Ok(b) if b.holds.is_empty() || !b.stopping => return Gate::Open,
        Ok(b) if b.timed_out || b.ready_to_stop => {
            return Gate::TimedOut(format!(
                "the application in pod {pod} still held the handover gate ({}) when its {} s handover timeout ran out; stopping it anyway",
                b.names(),
                secs(b.timeout_millis)
            ));
        }
        Ok(b) => format!(
            "the application in pod {pod} is handing over (holds: {}), {} s of at most {} s",
            b.names(),
            secs(b.stopping_for_millis.unwrap_or(0)),
            secs(b.timeout_millis)
        ),
    };
    if held_for >= cap {
        Gate::TimedOut(format!(
            "{held}; the operator has waited {} s, past handoverTimeout and a {} s margin: stopping it anyway",
            held_for.as_secs(),
            OPERATOR_MARGIN.as_secs()
        ))
    } else {
        Gate::Held(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_agent::api::handover::HoldBody;

    fn body(stopping: bool, holds: &[&str], timed_out: bool) -> HandoverBody {
        HandoverBody {
            ready_to_stop: holds.is_empty() || timed_out,
            stopping,
            stopping_for_millis: stopping.then_some(3_200),
            timeout_millis: 20_000,
            timed_out,
            holds: holds
                .iter()
                .map(|n| HoldBody {
                    name: (*n).into(),
                    reason: None,
                    held_for_millis: 9_000,
                })
                .collect(),
        }
    }

    #[test]
    fn only_holds_on_a_stopping_member_hold_its_pod_and_never_past_the_cap() {
        const CAP: Duration = Duration::from_secs(30);
        let j = |answer: Result<&HandoverBody, &ClientError>| {
            judge("shop-2", answer, Duration::from_secs(1), CAP)
        };
        let gone = ClientError::Unreachable("connection refused".into());
        assert_eq!(j(Err(&gone)), Gate::Open, "the agent exited");
        let old = ClientError::Status {
            code: 404,
            body: String::new(),
        };
        assert_eq!(j(Err(&old)), Gate::Open, "an agent older than the gate");
        assert_eq!(j(Ok(&body(true, &[], false))), Gate::Open);
        assert_eq!(
            j(Ok(&body(false, &["singleton"], false))),
            Gate::Open,
            "held from the start, but never asked to stop (e.g. a pod that never joined)"
        );
        let held = body(true, &["shards", "singleton"], false);
        assert_eq!(
            j(Ok(&held)),
            Gate::Held(
                "the application in pod shop-2 is handing over (holds: shards, singleton), 4 s of at most 20 s".into()
            )
        );
        assert!(matches!(
            j(Ok(&body(true, &["singleton"], true))),
            Gate::TimedOut(w) if w.contains("20 s handover timeout")
        ));
        // An agent that hangs holds the pod too, but neither it nor a held gate does
        // beyond the operator's own cap.
        let hung = ClientError::Timeout(Duration::from_secs(2));
        assert!(matches!(j(Err(&hung)), Gate::Held(w) if w.contains("did not answer")));
        for answer in [Ok(&held), Err(&hung)] {
            assert!(matches!(
                judge("shop-2", answer, CAP, CAP),
                Gate::TimedOut(w) if w.contains("the operator has waited 30 s")
            ));
        }
    }
}
