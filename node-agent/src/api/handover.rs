//! `GET /handover`: the handover gate of one agent (muster's, Akka has none), which the
//! application beside it holds while it is not ready to be stopped.

use serde::{Deserialize, Serialize};

/// The gate, as `GET /handover` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HandoverBody {
    /// Nothing is held, or the member is stopping and `handover-timeout` ran out.
    pub ready_to_stop: bool,
    /// The member was asked to stop (a Leave, SIGTERM): the timeout runs.
    pub stopping: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_for_millis: Option<u64>,
    /// `cluster.handover-timeout`.
    pub timeout_millis: u64,
    /// The timeout ran out with holds left.
    pub timed_out: bool,
    pub holds: Vec<HoldBody>,
}

/// One hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldBody {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub held_for_millis: u64,
}

impl HandoverBody {
    /// The holds' names, for messages.
    pub fn names(&self) -> String {
        self.holds
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}
