//! Agent-to-agent frames on the cluster port: framing, authentication, connections. The
//! transport carries any [`Wire`] message and knows nothing of what it means (the
//! membership messages are `membership::messages`).

pub mod frame;
pub mod tcp;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message the transport can carry: written as JSON in a frame, named for metrics.
pub trait Wire: Serialize + DeserializeOwned + Send + 'static {
    /// Short name for the `kind` label of the message metrics.
    fn kind(&self) -> &'static str;

    /// Whether the message goes on the urgent queue (see [`Inbound`]).
    fn urgent(&self) -> bool {
        false
    }
}

/// Where received messages go. Urgent ones (failure detection) have their own queue,
/// which the receiver serves first: behind a backlog of large state messages on an
/// overloaded node, a heartbeat would wait (or be dropped from a full queue) until
/// its sender judged this node dead.
#[derive(Debug)]
pub struct Inbound<M> {
    pub urgent: tokio::sync::mpsc::Sender<M>,
    pub normal: tokio::sync::mpsc::Sender<M>,
}

// Not derived: that would require `M: Clone`, and senders clone without it.
impl<M> Clone for Inbound<M> {
    fn clone(&self) -> Self {
        Self {
            urgent: self.urgent.clone(),
            normal: self.normal.clone(),
        }
    }
}
