//! The formation record: a Lease whose holder is the node that formed the cluster
//! (the agents' `bootstrap.formation-lease`). Built with no holder; an agent claims it
//! just before forming, and the controller creates it, then holds or clears it as
//! `spec.bootstrap.newClusterEnabled` says (`controller::formation`). It is not applied
//! with the other objects: its holder is written by agents and the controller alone,
//! each write conditional on the version read.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::ResourceExt;

use super::meta;
use crate::crd::ClusterSpec;

/// `<name>-formation`.
pub fn name(cs: &ClusterSpec) -> String {
    format!("{}-formation", cs.name_any())
}

pub fn build(cs: &ClusterSpec) -> Lease {
    unheld(cs, &name(cs))
}

/// The Lease `name` of `cs`, owned by it, held by nobody.
fn unheld(cs: &ClusterSpec, name: &str) -> Lease {
    Lease {
        metadata: meta(cs, name),
        spec: Some(LeaseSpec::default()),
    }
}

/// `<name>-muster-sbr`: the Lease of the `lease-majority` split brain resolver (the
/// agents' own default name for it). The controller creates it, with no holder, so
/// that the agents' Role grants `get` and `update` on that one Lease and no `create`
/// (which RBAC cannot limit to a name).
pub fn sbr_name(cs: &ClusterSpec) -> String {
    format!("{}-muster-sbr", cs.name_any())
}

/// The `lease-majority` Lease, unheld.
pub fn sbr_build(cs: &ClusterSpec) -> Lease {
    unheld(cs, &sbr_name(cs))
}
