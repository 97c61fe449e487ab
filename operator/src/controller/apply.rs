//! Applying the owned objects: server-side apply with one field manager, forced (the
//! operator owns these fields), in the order of [`Owned`]'s fields. An object whose live
//! state already has every field we would set is not written at all, so a reconcile of
//! an unchanged cluster makes no writes; a field someone changed by hand differs and is
//! put back. The Secrets and the agents' RoleBinding are the exceptions: created once,
//! never rewritten (a changed RoleBinding is reported, for the operator may not change
//! RoleBindings). Nothing is
//! written over an object that is not this ClusterSpec's (its controller owner
//! reference): what exists is read first ([`read`]) and any such object stops the
//! reconcile before a write ([`conflicts`]).

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use node_agent::base::secret::ManagementToken;

use super::build::{self, MANAGEMENT_TOKEN, Owned, formation_lease};
use super::{Context, Error};
use crate::ClusterSpec;
use crate::validate::Problem;

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

/// What exists under the names of a ClusterSpec's objects, read once per reconcile
/// before anything is written, so that a name taken by someone else's object is found
/// before any of the cluster's objects is changed ([`conflicts`]).
#[derive(Debug, Default)]
pub struct Lives {
    service_account: Option<Value>,
    role: Option<Value>,
    role_binding: Option<Value>,
    service: Option<Value>,
    config_map: Option<Value>,
    stateful_set: Option<Value>,
    pod_disruption_budget: Option<Value>,
    network_policy: Option<Value>,
    /// The namespace's other NetworkPolicies (they decide whether the cluster's opens
    /// the pods' other ports).
    pub other_network_policies: Vec<NetworkPolicy>,
    /// The operator may not read NetworkPolicies in the namespace (its RBAC predates
    /// them): the cluster's is neither written nor removed.
    pub network_policy_forbidden: bool,
    /// The Secret with the cluster key and the management token.
    pub secret: Option<Secret>,
    /// The formation record.
    pub formation: Option<Lease>,
    /// With `lease-majority` downing: the resolver's Lease.
    pub sbr: Option<Lease>,
    /// With `spec.tls`: the TLS Secrets (as the look at the agents read them).
    pub tls: Option<super::certificates::TlsSecrets>,
}

/// Reads what exists under every name the ClusterSpec's objects take (the StatefulSet
/// was read already, with the pods).
pub async fn read(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    stateful_set: Option<&StatefulSet>,
    tls: Option<super::certificates::TlsSecrets>,
) -> Result<Lives, Error> {
    let name = cs.name_any();
    let as_json = |o: Option<&StatefulSet>| o.map(serde_json::to_value).transpose();
    let (network_policy, other_network_policies, network_policy_forbidden) = match network_policies(
        ctx,
        ns,
        &name,
        cs.spec.network_policy.enabled,
    )
    .await
    {
        Err(kube::Error::Api(e)) if e.code == 403 => {
            tracing::warn!(namespace = ns, error = %e.message, "may not read NetworkPolicies: the operator's RBAC predates them; re-apply manifests/operator.yaml or upgrade the chart");
            (None, Vec::new(), true)
        }
        Err(e) => {
            return Err(Error::kube(
                format!("read the NetworkPolicies of namespace {ns}"),
                e,
            ));
        }
        Ok((ours, others)) => (ours, others, false),
    };
    Ok(Lives {
        service_account: live::<ServiceAccount>(ctx, ns, &name).await?,
        role: live::<Role>(ctx, ns, &name).await?,
        role_binding: live::<RoleBinding>(ctx, ns, &name).await?,
        service: live::<Service>(ctx, ns, &name).await?,
        config_map: live::<ConfigMap>(ctx, ns, &name).await?,
        stateful_set: as_json(stateful_set).map_err(Error::Json)?,
        pod_disruption_budget: if ctx.pdb_supported {
            live::<PodDisruptionBudget>(ctx, ns, &name).await?
        } else {
            None
        },
        network_policy,
        other_network_policies,
        network_policy_forbidden,
        secret: typed::<Secret>(ctx, ns, &build::secret_name(cs)).await?,
        formation: typed::<Lease>(ctx, ns, &formation_lease::name(cs)).await?,
        sbr: if cs.spec.membership.downing == crate::crd::Downing::LeaseMajority {
            typed::<Lease>(ctx, ns, &formation_lease::sbr_name(cs)).await?
        } else {
            None
        },
        tls,
    })
}

/// Where the server can keep the cluster's NetworkPolicy: the one under the cluster's
/// name, and (when the cluster has one, `enabled`) the namespace's others, in one list.
/// Without a policy only the cluster's name is read, to remove one made earlier.
async fn network_policies(
    ctx: &Context,
    ns: &str,
    name: &str,
    enabled: bool,
) -> Result<(Option<Value>, Vec<NetworkPolicy>), kube::Error> {
    if !ctx.network_policy_supported {
        return Ok((None, Vec::new()));
    }
    let api = Api::<NetworkPolicy>::namespaced(ctx.client.clone(), ns);
    let all = if enabled {
        api.list(&ListParams::default()).await?.items
    } else {
        api.get_opt(name).await?.into_iter().collect()
    };
    let (ours, others): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|p| p.metadata.name.as_deref() == Some(name));
    let ours = ours
        .into_iter()
        .next()
        .map(serde_json::to_value)
        .transpose()
        .map_err(kube::Error::SerdeError)?;
    Ok((ours, others))
}

async fn typed<K: Child>(ctx: &Context, ns: &str, name: &str) -> Result<Option<K>, Error> {
    Api::<K>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube(format!("read {} {name}", K::kind(&())), e))
}

async fn live<K: Child>(ctx: &Context, ns: &str, name: &str) -> Result<Option<Value>, Error> {
    typed::<K>(ctx, ns, name)
        .await?
        .map(|o| serde_json::to_value(o).map_err(Error::Json))
        .transpose()
}

/// Whether `meta` names the ClusterSpec of `uid` as its controller.
pub(super) fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    !uid.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && r.uid == uid)
}

fn meta_of(live: &Value) -> ObjectMeta {
    live.get("metadata")
        .and_then(|m| serde_json::from_value(m.clone()).ok())
        .unwrap_or_default()
}

/// The objects the operator would write (or read its key from) that exist but are not
/// this ClusterSpec's: it never changes, adopts or uses an object it did not create. A
/// ClusterSpec named like an application's ServiceAccount, StatefulSet or ConfigMap
/// would otherwise take it over, and deleting the ClusterSpec would delete it.
pub fn conflicts(cs: &ClusterSpec, owned: &Owned, lives: &Lives, pdb: bool) -> Vec<Problem> {
    let uid = cs.uid().unwrap_or_default();
    let wanted: [(&str, bool, Option<&Value>); 8] = [
        ("ServiceAccount", true, lives.service_account.as_ref()),
        ("Role", true, lives.role.as_ref()),
        ("RoleBinding", true, lives.role_binding.as_ref()),
        ("Service", true, lives.service.as_ref()),
        ("ConfigMap", true, lives.config_map.as_ref()),
        ("StatefulSet", true, lives.stateful_set.as_ref()),
        (
            "PodDisruptionBudget",
            pdb && owned.pod_disruption_budget.is_some(),
            lives.pod_disruption_budget.as_ref(),
        ),
        (
            "NetworkPolicy",
            owned.network_policy.is_some(),
            lives.network_policy.as_ref(),
        ),
    ];
    let mut found: Vec<(&str, ObjectMeta)> = wanted
        .into_iter()
        .filter(|(_, wanted, _)| *wanted)
        .filter_map(|(kind, _, live)| live.map(|l| (kind, meta_of(l))))
        .collect();
    found.extend(
        lives
            .secret
            .as_ref()
            .map(|s| ("Secret", s.metadata.clone())),
    );
    found.extend(
        lives
            .formation
            .as_ref()
            .map(|l| ("Lease", l.metadata.clone())),
    );
    // (The resolver's Lease without any owner is the one agents of older operators
    // created themselves: theirs to go on with. Another's is a conflict.)
    found.extend(
        lives
            .sbr
            .as_ref()
            .filter(|l| {
                l.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| !o.is_empty())
            })
            .map(|l| ("Lease", l.metadata.clone())),
    );
    found.extend(
        lives
            .tls
            .iter()
            .flat_map(|t| t.all())
            .map(|s| ("Secret", s.metadata.clone())),
    );
    let mut problems: Vec<Problem> = found
        .into_iter()
        .filter(|(_, meta)| !controlled_by(meta, &uid))
        .map(|(kind, meta)| conflict(cs, kind, &meta))
        .collect();
    // The agents' binding is this ClusterSpec's but grants otherwise: the operator,
    // which may not change RoleBindings, cannot put it back (and writes no pods over it).
    if let Some(live) = lives
        .role_binding
        .as_ref()
        .filter(|l| controlled_by(&meta_of(l), &uid))
        .filter(|l| grants_otherwise(l, &owned.role_binding))
    {
        let name = meta_of(live).name.unwrap_or_default();
        problems.push(Problem {
            field: "metadata.name".to_owned(),
            message: format!(
                "RoleBinding {name} was changed: it no longer binds Role {name} to ServiceAccount {name} alone; the operator creates it but may not change it (least privilege): delete it and the operator makes it again"
            ),
        });
    }
    problems
}

/// Whether the live RoleBinding binds another role or other subjects than `desired`
/// (its labels do not count: an older operator's may carry others).
fn grants_otherwise(live: &Value, desired: &RoleBinding) -> bool {
    let Ok(desired) = serde_json::to_value(desired) else {
        return true;
    };
    ["roleRef", "subjects"]
        .iter()
        .any(|field| !contains(&live[*field], &desired[*field]))
}

fn conflict(cs: &ClusterSpec, kind: &str, meta: &ObjectMeta) -> Problem {
    let name = meta.name.clone().unwrap_or_default();
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    let whose = match controller {
        Some(r) if r.kind == "ClusterSpec" && r.name == cs.name_any() => format!(
            "it belongs to an earlier ClusterSpec of this name (uid {}), whose objects Kubernetes has not deleted yet or that was deleted with --cascade=orphan",
            r.uid
        ),
        Some(r) => format!("it belongs to {} {}", r.kind, r.name),
        None => "it was not made by this operator for this ClusterSpec".to_owned(),
    };
    Problem {
        field: "metadata.name".to_owned(),
        message: format!(
            "{kind} {name} exists and is not this ClusterSpec's ({whose}); the operator changes nothing until it is gone: delete or rename that {kind}, or create the ClusterSpec under another name"
        ),
    }
}

/// Applies every owned object, given what exists ([`read`], with no [`conflicts`]);
/// the number written (0 when all were up to date).
pub async fn owned(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    o: Owned,
    lives: Lives,
) -> Result<usize, Error> {
    // Destructured without `..`: a new kind that is never applied fails to compile.
    let Owned {
        service_account,
        role,
        role_binding,
        service,
        config_map,
        stateful_set,
        pod_disruption_budget,
        network_policy,
    } = o;
    let uid = cs.uid().unwrap_or_default();
    let mut written = 0;
    // Identity and permissions first, so pods never start without them; the agents'
    // Service, settings and the agent ports' NetworkPolicy next; the StatefulSet (the
    // pods) last but for the budget.
    written += usize::from(one(ctx, ns, service_account, lives.service_account).await?);
    written += usize::from(one(ctx, ns, role, lives.role).await?);
    written += usize::from(created_once(ctx, ns, role_binding, lives.role_binding).await?);
    written += usize::from(one(ctx, ns, service, lives.service).await?);
    written += usize::from(one(ctx, ns, config_map, lives.config_map).await?);
    if ctx.network_policy_supported && !lives.network_policy_forbidden {
        written +=
            usize::from(optional(ctx, ns, network_policy, lives.network_policy, &uid).await?);
    }
    let mut stateful_set = stateful_set;
    if !ctx.retention_supported {
        // Kubernetes < 1.27: the field is unknown (the status says so).
        stateful_set.spec.persistent_volume_claim_retention_policy = None;
    }
    // A StatefulSet being deleted (e.g. with --cascade=orphan, to move its selector) is
    // not written: an apply that reached the server just after it is gone would make
    // it again as it was. The next reconcile, once it is gone, makes the new one.
    let deleting = lives
        .stateful_set
        .as_ref()
        .is_some_and(|l| meta_of(l).deletion_timestamp.is_some());
    if deleting {
        tracing::info!(name = %stateful_set.name_any(), "StatefulSet being deleted: not written until it is gone");
    } else {
        written += usize::from(one(ctx, ns, stateful_set, lives.stateful_set).await?);
    }
    if ctx.pdb_supported {
        written += usize::from(
            optional(
                ctx,
                ns,
                pod_disruption_budget,
                lives.pod_disruption_budget,
                &uid,
            )
            .await?,
        );
    }
    Ok(written)
}

/// Applies `obj` when wanted; when not, removes the `live` one if this ClusterSpec
/// made it (an orphan, e.g. the budget after `spec.disruptionBudget` turned it off).
async fn optional<K: Child>(
    ctx: &Context,
    ns: &str,
    obj: Option<K>,
    live: Option<Value>,
    uid: &str,
) -> Result<bool, Error> {
    if let Some(obj) = obj {
        return one(ctx, ns, obj, live).await;
    }
    let Some(live) = live else {
        return Ok(false);
    };
    let meta = meta_of(&live);
    if !controlled_by(&meta, uid) {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let kind = K::kind(&());
    let name = meta.name.unwrap_or_default();
    let dp = DeleteParams {
        // Only that object, not one made under its name since it was read.
        preconditions: meta.uid.map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            tracing::info!(%kind, %name, "removed: no longer needed");
            Ok(true)
        }
        // Gone already, or another object under that name now (the next reconcile
        // looks at it).
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(format!("delete {kind} {name}"), e)),
    }
}

/// Creates the RoleBinding `obj` when there is none (`live`); true when written. It
/// never changes (its subject and role are the cluster's name), so the operator needs
/// no right to patch or delete RoleBindings; one of this ClusterSpec's that grants
/// otherwise is a conflict ([`conflicts`]), so never reaches here.
async fn created_once<K: Child>(
    ctx: &Context,
    ns: &str,
    obj: K,
    live: Option<Value>,
) -> Result<bool, Error> {
    let name = obj.name_any();
    let kind = K::kind(&());
    if live.is_some() {
        return Ok(false);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match api.create(&pp, &obj).await {
        Ok(_) => {
            tracing::info!(%kind, %name, "created");
            Ok(true)
        }
        // Made since it was read (a 409): whose it is is not known, so nothing more is
        // written; the next reconcile reads it and looks ([`conflicts`]).
        Err(e) => Err(Error::kube(format!("create {kind} {name}"), e)),
    }
}

/// Server-side applies `obj` unless `live` already matches; true when written. (An
/// object someone makes under that name between the read and this apply is still
/// taken over: a create would close that window, but would leave every field owned by
/// an Update entry that later applies could never remove.)
async fn one<K: Child>(
    ctx: &Context,
    ns: &str,
    obj: K,
    live: Option<Value>,
) -> Result<bool, Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.name_any();
    let kind = K::kind(&());
    let desired = serde_json::to_value(&obj).map_err(Error::Json)?;
    if live.is_some_and(|live| contains(&live, &desired)) {
        return Ok(false);
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
pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The management token from the cluster's Secret (`existing`, as read), and the
/// Secret, creating it (with a fresh random key and token) when it does not exist. An
/// existing Secret is not changed here (only a key rotation changes its key file).
pub async fn secret(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    existing: Option<Secret>,
) -> Result<(ManagementToken, Secret), Error> {
    let name = build::secret_name(cs);
    let secret = match existing {
        Some(s) => s,
        None => {
            let mut random = [0u8; 64];
            getrandom::fill(&mut random)
                .map_err(|e| Error::Secret(format!("no randomness for the cluster key: {e}")))?;
            // Created since we looked: that one, if it is this ClusterSpec's (another
            // reconcile's); anyone else's key is never used.
            let made = create_once(ctx, cs, ns, &build::secret(cs, &random)).await?;
            tracing::info!(secret = %name, "the cluster key and management token exist");
            made
        }
    };
    let data = secret.data.clone().unwrap_or_default();
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
    let token = ManagementToken::new(token).map_err(|e| {
        Error::Secret(format!(
            "Secret {ns}/{name} has an unusable {MANAGEMENT_TOKEN}: {e}; the operator never overwrites it — delete the Secret to get a new one (every pod then restarts with it)"
        ))
    })?;
    Ok((token, secret))
}

/// Creates `secret` unless it exists; the one there if another reconcile made it
/// meanwhile (this ClusterSpec's only).
pub(super) async fn create_once(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    secret: &Secret,
) -> Result<Secret, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = secret.name_any();
    match api.create(&PostParams::default(), secret).await {
        Ok(s) => Ok(s),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let found = api
                .get(&name)
                .await
                .map_err(|e| Error::kube(format!("read Secret {name}"), e))?;
            if !controlled_by(&found.metadata, &cs.uid().unwrap_or_default()) {
                return Err(Error::Secret(
                    conflict(cs, "Secret", &found.metadata).message,
                ));
            }
            Ok(found)
        }
        Err(e) => Err(Error::kube(format!("create Secret {name}"), e)),
    }
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
