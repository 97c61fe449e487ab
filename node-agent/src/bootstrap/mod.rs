//! Cluster bootstrap (Akka Cluster Bootstrap semantics): discover contact points, probe
//! their `/bootstrap/seed-nodes`, then join an existing cluster or — the lowest node,
//! when everything agrees — form a new one.

pub mod coordinator;
pub mod decider;
pub mod probe;
pub mod record;
pub mod state;
