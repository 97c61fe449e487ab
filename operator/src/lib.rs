//! muster's operator: turns a `ClusterSpec` resource into a self-forming cluster of
//! agent pods and keeps it healthy through updates (ARCHITECTURE.md maps the code).
//!
//! Pure parts: the resource's types ([`crd`]), the checks the schema cannot make
//! ([`validate`]), the owned objects (`controller::build`, one file per kind), the
//! oldest-last rollout planner ([`rollout`]), the rotation planner for the cluster key
//! and the TLS CA ([`rotation`]; the controller drives it for the key), the
//! per-cluster CA and agent certificates ([`ca`]) and the CA's side of a rotation
//! ([`ca_rotation`], not driven yet), graceful scale-down ([`scale`]) and the reported
//! status ([`status`]). The I/O shell: the reconcile driver ([`controller`]),
//! the agents' management API through the agent's own client ([`agents`]), leader
//! election ([`leader`]), metrics and health endpoints ([`metrics`], [`server`]).
//! Generated files ([`generated`]): `cargo run -p operator --bin generate` writes them
//! all, and a test fails when a committed one differs.

pub mod agents;
pub mod ca;
pub mod ca_rotation;
pub mod claims;
pub mod controller;
pub mod crd;
pub mod generated;
pub mod gone;
pub mod handover;
pub mod install;
pub mod leader;
pub mod metrics;
pub mod pod_template;
pub mod recovery;
pub mod reference;
pub mod rollout;
pub mod rotation;
pub mod scale;
pub mod server;
pub mod status;
pub mod stranded;
pub mod validate;

pub use crd::{ClusterSpec, ClusterSpecSpec, ClusterSpecStatus};

/// The CustomResourceDefinition as YAML, as committed in `manifests/crd.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let body = serde_yaml::to_string(&ClusterSpec::crd())?;
    Ok(format!(
        "{}{}",
        generated::yaml_header(),
        generated::quote_yaml11_booleans(&body)
    ))
}
