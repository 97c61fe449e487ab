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
pub mod provisioner;

pub use control_plane::ControlPlane;
pub use dns::ClusterDns;
pub use node::{ImageTable, LocalNode, NodeConfig, VolumeRefresh};
pub use platform::{LocalSettings, MANAGEMENT_PORT, Platform, Target};

/// The image name of the example application (`examples/keyowner`).
pub const EXAMPLE_IMAGE_NAME: &str = "muster-example-keyowner";

/// The example application's program, which the process kubelet runs for
/// [`EXAMPLE_IMAGE_NAME`] images (a Python script: python3 must be installed).
pub fn example_application() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/keyowner/keyowner.py")
}

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

/// Calls `f` every 100 ms until it gives a value; after `limit`, [`Error::Timeout`] with
/// its last error.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        match f().await {
            Ok(v) => return Ok(v),
            Err(last) if start.elapsed() > limit => {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    after: limit,
                    last,
                });
            }
            Err(_) => {}
        }
    }
}

/// Waits until CustomResourceDefinition `name` is Established (polled: `kubectl wait`
/// of a newer client fails at once while a 1.20 server has not written any condition).
pub async fn crd_established(
    client: &kube::Client,
    name: &str,
    limit: Duration,
) -> Result<(), Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    poll(&format!("CRD {name} established"), limit, || async {
        let crd = crds.get(name).await.map_err(|e| e.to_string())?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        if conditions
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            Ok(())
        } else {
            Err(format!("conditions: {conditions:?}"))
        }
    })
    .await
}
