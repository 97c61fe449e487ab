//! muster's end-to-end platform: a real Kubernetes control plane (etcd, kube-apiserver
//! with RBAC, kube-controller-manager, kube-scheduler) started from local binaries on
//! loopback ports, for tests that must run against real API semantics on a machine
//! without Docker. See `../shared/LOCAL-K8S.md` for where the binaries come from.
//!
//! ```no_run
//! # async fn demo() -> Result<(), e2e::Error> {
//! let cp = e2e::ControlPlane::start().await?;
//! let client = cp.client().await?;
//! // ... create objects; everything stops when `cp` is dropped.
//! # Ok(()) }
//! ```

pub mod binaries;
pub mod certs;
pub mod control_plane;
pub mod dns;
pub mod kubectl;
pub mod node;
pub mod partition;
pub mod platform;
mod process;

pub use control_plane::ControlPlane;
pub use dns::ClusterDns;
pub use node::{ImageTable, LocalNode, NodeConfig};
pub use platform::{LocalSettings, Platform, Target};

use std::time::Duration;

/// Why the platform could not be provided; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("{name} exited ({status}) during start-up; last lines of {log}:\n{tail}")]
    Exited {
        name: &'static str,
        status: String,
        log: String,
        tail: String,
    },
    #[error("{what} not within {after:?}; last error: {last}")]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}
