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
    let mut metadata = meta(cs, &secret_name(cs));
    // A rotation asked for before the key existed is no reason to rotate it.
    if let Some(asked) = cs
        .annotations()
        .get(crate::controller::key_rotation::ROTATE_ANNOTATION)
    {
        metadata.annotations = Some(BTreeMap::from([(
            crate::controller::key_rotation::HANDLED_ANNOTATION.to_owned(),
            asked.clone(),
        )]));
    }
    Secret {
        metadata,
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
