//! The ServiceAccount the pods run as.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::ResourceExt;

use super::meta;
use crate::crd::ClusterSpec;

pub fn build(cs: &ClusterSpec) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(cs, &cs.name_any()),
        ..ServiceAccount::default()
    }
}
