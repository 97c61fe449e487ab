//! Agent-to-agent messages on the cluster port: framing, authentication, connections.

pub mod messages;
