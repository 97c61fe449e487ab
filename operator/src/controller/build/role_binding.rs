//! The RoleBinding of the agents' Role to their ServiceAccount. It never changes, so
//! the operator only creates it (no right to patch or delete RoleBindings).

use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::ResourceExt;

use super::meta;
use crate::crd::ClusterSpec;

pub fn build(cs: &ClusterSpec) -> RoleBinding {
    let name = cs.name_any();
    RoleBinding {
        metadata: meta(cs, &name),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: cs.namespace(),
            ..Subject::default()
        }]),
    }
}
