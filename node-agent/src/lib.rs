//! muster node agent: finds its peers, forms or joins exactly one cluster, and keeps
//! gossip membership; tells the application through an HTTP management API.
//!
//! Layout, from the ground up (a module imports only from the ones above it in this
//! list, never from below; `tests/layers.rs` checks it and that there is no cycle):
//!
//! 1. [`base`]: values everyone shares — time, addresses, member status, secrets,
//!    randomness.
//! 2. [`tls`]: certificates from files, checked and followed at run time.
//! 3. [`api`]: the management API's bodies, its one typed client and the "one cluster"
//!    check; [`config`]: the settings, validated; [`metrics`]; [`listener`].
//! 4. [`transport`]: authenticated frames on the cluster port, for any message type;
//!    [`discovery`]: where contact points come from; [`lease`]: a Kubernetes Lease;
//!    [`handover`]: the application's handover gate.
//! 5. [`membership`]: the gossip membership core, its messages and its task.
//! 6. [`bootstrap`]: the join-or-form decision, probing and its task.
//! 7. [`management`]: the HTTP server of the API.
//! 8. [`agent`] wires it all; [`local_cluster`] and [`fuzzing`] use it.
//!
//! [`testing`] stands in for an HTTP server in tests; it uses nothing of the crate.
//!
//! Protocol cores ([`bootstrap::decider`], [`bootstrap::state`], [`membership::core`])
//! are pure state machines that take time and randomness as inputs; the rest are thin
//! I/O shells around them.

pub mod agent;
pub mod api;
pub mod base;
pub mod bootstrap;
pub mod config;
pub mod discovery;
pub mod fuzzing;
pub mod handover;
pub mod lease;
pub mod listener;
pub mod local_cluster;
pub mod management;
pub mod membership;
pub mod metrics;
pub mod testing;
pub mod tls;
pub mod transport;

pub use agent::{Agent, AgentError};
pub use config::AgentConfig;
