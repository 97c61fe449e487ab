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
}
