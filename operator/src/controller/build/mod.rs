//! The objects a `ClusterSpec` owns, built as pure functions of the resource (and, for
//! the ConfigMap, whether forming is allowed now): one file per kind. The controller
//! applies them in the order of [`Owned`]'s fields; each carries the owner reference and
//! the labels.

mod agent_config;
mod config_map;
pub mod formation_lease;
mod pod_disruption_budget;
mod role;
mod role_binding;
mod secret;
mod service;
mod service_account;
mod stateful_set;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

pub use config_map::{CONFIG_HASH, agent_settings, agent_yaml};
pub use secret::{secret, secret_name};

use crate::crd::{ClusterSpec, Discovery, Downing};

/// The pod volumes the operator adds (the agents' settings and cluster key).
pub const VOLUMES: [&str; 2] = ["config", "cluster-key"];
/// The keys of [`labels`].
pub const OPERATOR_LABEL_KEYS: [&str; 3] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
];

/// Ports of the agent (its defaults, `management.port` and `cluster.port`).
pub const MANAGEMENT_PORT: u16 = 8558;
pub const CLUSTER_PORT: u16 = 2552;
/// Where the pods find the agent settings and the cluster key.
pub const CONFIG_DIR: &str = "/etc/muster/config";
pub const KEY_DIR: &str = "/etc/muster/key";
/// ConfigMap key the agents follow at run time (`bootstrap.new-cluster-enabled-file`).
pub const NEW_CLUSTER_ENABLED_KEY: &str = "new-cluster-enabled";
/// Secret keys: the key that authenticates agent-to-agent traffic, and the bearer
/// token of the agents' mutating management routes (the operator's Leave).
pub const CLUSTER_KEY: &str = "cluster.key";
pub const MANAGEMENT_TOKEN: &str = "management.token";

/// Why the objects cannot be built: problems of the spec that only building finds (the
/// agent's own loader on the agent settings, the merged pod template), each naming its
/// field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct BuildError(pub Vec<crate::validate::Problem>);

impl From<Vec<crate::validate::Problem>> for BuildError {
    fn from(problems: Vec<crate::validate::Problem>) -> Self {
        Self(problems)
    }
}

/// Every owned object but the Secret (created once by the controller, never rebuilt),
/// in apply order: identity and permissions first, the pods last. The Role and its
/// binding exist only when the agents use the Kubernetes API; otherwise the controller
/// removes any left from before (minimal RBAC).
#[derive(Debug, Clone)]
pub struct Owned {
    pub service_account: ServiceAccount,
    pub role: Option<Role>,
    pub role_binding: Option<RoleBinding>,
    pub service: Service,
    pub config_map: ConfigMap,
    pub stateful_set: StatefulSet,
    /// `None` when spec.disruptionBudget turns it off.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
}

/// Every owned object for `cs`; `new_cluster_enabled` goes to the ConfigMap.
pub fn owned(cs: &ClusterSpec, new_cluster_enabled: bool) -> Result<Owned, BuildError> {
    let agent_yaml = agent_yaml(&agent_settings(cs)?);
    let rules = rbac_rules(cs);
    let uses_api = !rules.is_empty();
    Ok(Owned {
        service_account: service_account::build(cs),
        role: uses_api.then(|| role::build(cs, rules)),
        role_binding: uses_api.then(|| role_binding::build(cs)),
        service: service::build(cs),
        config_map: config_map::build(cs, &agent_yaml, new_cluster_enabled),
        stateful_set: stateful_set::build(cs, &agent_yaml, uses_api)?,
        pod_disruption_budget: pod_disruption_budget::build(cs),
    })
}

/// Whether a live pod runs another template than `owned`'s: its agent started with
/// other settings (e.g. fewer expected contact points before a scale).
pub fn pods_on_other_template(owned: &Owned, pods: &[Pod]) -> bool {
    let hash = |meta: Option<&ObjectMeta>| {
        meta.and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(CONFIG_HASH))
            .cloned()
    };
    let wanted = hash(owned.stateful_set.spec.template.metadata.as_ref());
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .any(|p| hash(Some(&p.metadata)) != wanted)
}

/// Labels of every owned object; the pods' selector is the `instance` one.
pub fn labels(cs: &ClusterSpec) -> BTreeMap<String, String> {
    let [name, instance, managed_by] = OPERATOR_LABEL_KEYS.map(str::to_owned);
    BTreeMap::from([
        (name, "muster".to_owned()),
        (instance, cs.name_any()),
        (managed_by, "muster-operator".to_owned()),
    ])
}

/// The pods' selector.
fn selector(cs: &ClusterSpec) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/instance".to_owned(), cs.name_any())])
}

/// Name, namespace, labels and owner reference.
fn meta(cs: &ClusterSpec, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: cs.namespace(),
        labels: Some(labels(cs)),
        owner_references: Some(cs.controller_owner_ref(&()).into_iter().collect()),
        ..ObjectMeta::default()
    }
}

/// What the agents may do through the Kubernetes API: read and claim their formation
/// record (that one Lease), read pods for `kubernetes-api` discovery, take the Lease
/// for `lease-majority`.
fn rbac_rules(cs: &ClusterSpec) -> Vec<PolicyRule> {
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    let mut rules = vec![PolicyRule {
        resource_names: Some(vec![formation_lease::name(cs)]),
        ..rule("coordination.k8s.io", "leases", &["get", "update"])
    }];
    if cs.spec.bootstrap.discovery == Discovery::KubernetesApi {
        rules.push(rule("", "pods", &["get", "list", "watch"]));
    }
    if cs.spec.membership.downing == Downing::LeaseMajority {
        rules.push(rule(
            "coordination.k8s.io",
            "leases",
            &["get", "create", "update"],
        ));
    }
    rules
}

#[cfg(test)]
mod tests;
