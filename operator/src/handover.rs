//! The handover gate, as the operator reads it: before it deletes a pod (a rollout) or
//! shrinks the StatefulSet over it (a scale-down), it asks that pod's agent
//! (`GET /handover`) whether the application beside it is ready to be stopped. The
//! agent's own `cluster.handover-timeout` bounds the wait, so the operator keeps no
//! clock of its own and an operator restart changes nothing.

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

/// The gate of `pod` from its agent's answer (`None`: no answer).
pub fn judge(pod: &str, answer: Option<&HandoverBody>) -> Gate {
    let Some(b) = answer else {
        return Gate::Open;
    };
    if b.holds.is_empty() || !b.stopping {
        return Gate::Open;
    }
    let secs = |ms: u64| ms.div_ceil(1000);
    if b.timed_out || b.ready_to_stop {
        return Gate::TimedOut(format!(
            "the application in pod {pod} still held the handover gate ({}) when its {} s handover timeout ran out; stopping it anyway",
            b.names(),
            secs(b.timeout_millis)
        ));
    }
    let waited = b.stopping_for_millis.unwrap_or(0);
    Gate::Held(format!(
        "the application in pod {pod} is handing over (holds: {}), {} s of at most {} s",
        b.names(),
        secs(waited),
        secs(b.timeout_millis)
    ))
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
    fn only_holds_on_a_stopping_member_hold_its_pod() {
        assert_eq!(judge("shop-2", None), Gate::Open, "no agent answered");
        assert_eq!(judge("shop-2", Some(&body(true, &[], false))), Gate::Open);
        assert_eq!(
            judge("shop-2", Some(&body(false, &["singleton"], false))),
            Gate::Open,
            "held from the start, but never asked to stop (e.g. a pod that never joined)"
        );
        assert_eq!(
            judge("shop-2", Some(&body(true, &["shards", "singleton"], false))),
            Gate::Held(
                "the application in pod shop-2 is handing over (holds: shards, singleton), 4 s of at most 20 s".into()
            )
        );
        assert!(matches!(
            judge("shop-2", Some(&body(true, &["singleton"], true))),
            Gate::TimedOut(w) if w.contains("20 s handover timeout")
        ));
    }
}
