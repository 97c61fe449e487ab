//! The Role of the agents: only what they use of the Kubernetes API (see
//! `rbac_rules`), naming this cluster's objects.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role};
use kube::ResourceExt;

use super::meta;
use crate::crd::ClusterSpec;

pub fn build(cs: &ClusterSpec, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: meta(cs, &cs.name_any()),
        rules: Some(rules),
    }
}
