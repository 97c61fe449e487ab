//! The Secret with the cluster key and the management token.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::{CLUSTER_KEY, MANAGEMENT_TOKEN, meta};
use crate::crd::ClusterSpec;

/// Name of the Secret with the cluster key and the management token.
pub fn secret_name(cs: &ClusterSpec) -> String {
    format!("{}-cluster-key", cs.name_any())
}

/// The Secret, from 64 random bytes: the first half becomes the cluster key, the second
/// the management token (hex). The controller creates it once and never rebuilds it:
/// a new key would split running agents from restarted ones.
pub fn secret(cs: &ClusterSpec, random: &[u8; 64]) -> Secret {
    let hex = node_agent::base::hex;
    Secret {
        metadata: meta(cs, &secret_name(cs)),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                CLUSTER_KEY.to_owned(),
                ByteString(hex(&random[..32]).into_bytes()),
            ),
            (
                MANAGEMENT_TOKEN.to_owned(),
                ByteString(hex(&random[32..]).into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}
