//! muster node agent: finds its peers, forms or joins exactly one cluster, and keeps
//! gossip membership; tells the application through an HTTP management API.
//!
//! Layout: pure protocol cores ([`bootstrap::decider`], [`bootstrap::state`],
//! [`membership::core`]) that take time and randomness as inputs, and thin I/O shells
//! around them (discovery, probes, transport, management server) wired by [`Agent`].

pub mod address;
pub mod agent;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod discovery;
pub mod fuzzing;
pub mod lease;
pub mod listener;
pub mod local_cluster;
pub mod management;
pub mod membership;
pub mod metrics;
pub mod rng;
pub mod transport;

pub use agent::{Agent, AgentError};
pub use config::AgentConfig;
