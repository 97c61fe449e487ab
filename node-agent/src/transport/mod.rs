//! Agent-to-agent messages on the cluster port: framing, authentication, connections.

pub mod frame;
pub mod messages;
pub mod tcp;
