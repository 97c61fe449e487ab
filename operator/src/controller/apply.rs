//! Applying the owned objects: server-side apply with one field manager, forced (the
//! operator owns these fields), in the order of [`Owned`]'s fields. An object whose live
//! state already has every field we would set is not written at all, so a reconcile of
//! an unchanged cluster makes no writes; a field someone changed by hand differs and is
//! put back. The Secret is the exception: created once, never rewritten.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use node_agent::base::secret::ManagementToken;

use super::build::{self, MANAGEMENT_TOKEN, Owned};
use super::{Context, Error};
use crate::ClusterSpec;

/// The one field manager of every write.
pub const FIELD_MANAGER: &str = "muster-operator";

/// A namespaced object kind the operator owns.
trait Child:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + Debug
    + Serialize
    + DeserializeOwned
{
}

impl<K> Child for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
{
}

/// Applies every owned object; the number written (0 when all were up to date).
pub async fn owned(ctx: &Context, ns: &str, o: Owned) -> Result<usize, Error> {
    // Destructured without `..`: a new kind that is never applied fails to compile.
    let Owned {
        service_account,
        role,
        role_binding,
        service,
        config_map,
        stateful_set,
        pod_disruption_budget,
    } = o;
    let name = service_account.name_any();
    let mut written = 0;
    // Identity and permissions first, so pods never start without them; the agents'
    // Service and settings next; the StatefulSet (the pods) last but for the budget.
    written += usize::from(one(ctx, ns, service_account).await?);
    written += usize::from(optional(ctx, ns, role, &name).await?);
    written += usize::from(optional(ctx, ns, role_binding, &name).await?);
    written += usize::from(one(ctx, ns, service).await?);
    written += usize::from(one(ctx, ns, config_map).await?);
    let mut stateful_set = stateful_set;
    if !ctx.retention_supported {
        // Kubernetes < 1.27: the field is unknown (the status says so).
        stateful_set.spec.persistent_volume_claim_retention_policy = None;
    }
    written += usize::from(one(ctx, ns, stateful_set).await?);
    if ctx.pdb_supported {
        written += usize::from(optional(ctx, ns, pod_disruption_budget, &name).await?);
    }
    Ok(written)
}

/// Applies `obj` when wanted; when not, removes the one of that `name` this operator
/// made before (an orphan, e.g. the Role after a switch to DNS discovery).
async fn optional<K: Child>(
    ctx: &Context,
    ns: &str,
    obj: Option<K>,
    name: &str,
) -> Result<bool, Error> {
    if let Some(obj) = obj {
        return one(ctx, ns, obj).await;
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let kind = K::kind(&());
    let live = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read {kind} {name}"), e))?;
    let ours = live.is_some_and(|o| {
        o.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some(FIELD_MANAGER)
    });
    if !ours {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(Error::kube(format!("delete {kind} {name}"), e)),
    }
    tracing::info!(%kind, %name, "removed: no longer needed");
    Ok(true)
}

/// Server-side applies `obj` unless the live object already matches; true when written.
async fn one<K: Child>(ctx: &Context, ns: &str, obj: K) -> Result<bool, Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.name_any();
    let kind = K::kind(&());
    let live = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read {kind} {name}"), e))?;
    let desired = serde_json::to_value(&obj).map_err(Error::Json)?;
    if let Some(live) = live {
        let live = serde_json::to_value(&live).map_err(Error::Json)?;
        if contains(&live, &desired) {
            return Ok(false);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await
    .map_err(|e| Error::kube(format!("apply {kind} {name}"), e))?;
    tracing::info!(%kind, %name, "applied");
    Ok(true)
}

/// Does `live` hold every value of `desired`? Objects: each desired key, recursively
/// (the server adds defaults we do not set); arrays: same length, element by element.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d
            .iter()
            .all(|(k, dv)| l.get(k).is_some_and(|lv| contains(lv, dv)) || is_empty(dv)),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        _ => live == desired,
    }
}

/// Values the server drops instead of storing (an empty list or map, null).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The management token from the cluster's Secret, creating the Secret (with a fresh
/// random key and token) when it does not exist. An existing Secret is never changed.
pub async fn secret(ctx: &Context, cs: &ClusterSpec, ns: &str) -> Result<ManagementToken, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = build::secret_name(cs);
    let existing = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Secret {name}"), e))?;
    let secret = match existing {
        Some(s) => s,
        None => {
            let mut random = [0u8; 64];
            getrandom::fill(&mut random)
                .map_err(|e| Error::Secret(format!("no randomness for the cluster key: {e}")))?;
            let fresh = build::secret(cs, &random);
            match api.create(&PostParams::default(), &fresh).await {
                Ok(s) => {
                    tracing::info!(secret = %name, "created the cluster key and management token");
                    s
                }
                // Created since we looked (another reconcile): use that one.
                Err(kube::Error::Api(e)) if e.code == 409 => api
                    .get(&name)
                    .await
                    .map_err(|e| Error::kube(format!("read Secret {name}"), e))?,
                Err(e) => return Err(Error::kube(format!("create Secret {name}"), e)),
            }
        }
    };
    let data = secret.data.unwrap_or_default();
    let missing: Vec<&str> = [build::CLUSTER_KEY, MANAGEMENT_TOKEN]
        .into_iter()
        .filter(|k| data.get(*k).is_none_or(|v| v.0.len() < 16))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Secret(format!(
            "Secret {ns}/{name} lacks {} (at least 16 bytes each); the operator never overwrites it — delete the Secret to get a new key (every pod then restarts with it)",
            missing.join(" and ")
        )));
    }
    let token = data
        .get(MANAGEMENT_TOKEN)
        .map(|v| v.0.trim_ascii())
        .unwrap_or_default();
    ManagementToken::new(token).map_err(|e| {
        Error::Secret(format!(
            "Secret {ns}/{name} has an unusable {MANAGEMENT_TOKEN}: {e}; the operator never overwrites it — delete the Secret to get a new one (every pod then restarts with it)"
        ))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn live_objects_with_server_defaults_contain_what_we_set() {
        let desired = json!({"spec": {"ports": [{"port": 1, "name": "a"}], "x": [], "y": null}});
        let live = json!({"spec": {"ports": [{"port": 1, "name": "a", "protocol": "TCP"}], "clusterIP": "None"}});
        assert!(contains(&live, &desired));
        let changed = json!({"spec": {"ports": [{"port": 2, "name": "a"}]}});
        assert!(!contains(&changed, &desired));
        let more = json!({"spec": {"ports": [{"port": 1, "name": "a"}, {"port": 3}]}});
        assert!(!contains(&more, &desired), "a list must match in length");
        assert!(!contains(&json!({}), &json!({"a": 1})));
    }
}
