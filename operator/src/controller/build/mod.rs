//! The objects a `ClusterSpec` owns, built as pure functions of the resource (and, for
//! the ConfigMap, whether forming is allowed now): one file per kind. The controller
//! applies them in the order of [`Owned`]'s fields; each carries the owner reference and
//! the labels.

mod agent_config;
mod config_map;
pub mod formation_lease;
pub mod network_policy;
mod pod_disruption_budget;
mod role;
mod role_binding;
mod secret;
mod service;
mod service_account;
mod stateful_set;
pub mod tls;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

pub use config_map::{CONFIG_HASH, agent_settings, agent_yaml};
pub use secret::{secret, secret_name};

use crate::crd::{ClusterSpec, Discovery, Downing};

/// The pod volumes the operator adds: the agents' settings, the cluster key, (when
/// the agents use the Kubernetes API) their service-account token and (with
/// `spec.tls`) their TLS certificate.
pub const VOLUMES: [&str; 4] = ["config", "cluster-key", TOKEN_VOLUME, TLS_VOLUME];
/// The operator's volumes only the agent container may mount: they hold its secrets.
pub const AGENT_ONLY_VOLUMES: [&str; 3] = ["cluster-key", TOKEN_VOLUME, TLS_VOLUME];
/// The volume of the agents' TLS Secret ([`tls::tls_secret_name`]).
pub const TLS_VOLUME: &str = "muster-tls";
/// Where the agent container finds it.
pub const TLS_DIR: &str = "/etc/muster/tls";
/// The projected volume of the agents' service-account token, mounted into the agent
/// container alone (the pod does not automount a token into every container).
pub const TOKEN_VOLUME: &str = "kube-api-access";
/// Where a Kubernetes client looks for its in-cluster token, CA and namespace.
pub const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The keys of [`labels`], and [`CLUSTER_LABEL`] on the pods.
pub const OPERATOR_LABEL_KEYS: [&str; 4] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    CLUSTER_LABEL,
];
/// The label only muster puts on a cluster's pods (value: the ClusterSpec's name):
/// what the StatefulSet, the Service, the PDB, `kubernetes-api` discovery and the
/// operator select the pods by ([`Selection::Muster`]). Helm's common
/// `app.kubernetes.io/instance`, which pods were selected by before, is on many other
/// pods of a namespace (every release of a chart by that name).
pub const CLUSTER_LABEL: &str = "muster.dev/cluster";
/// The label a StatefulSet made by an earlier operator selects its pods by.
pub const LEGACY_SELECTOR_LABEL: &str = "app.kubernetes.io/instance";

/// What a cluster's pods are selected by. A StatefulSet's selector cannot change, so a
/// StatefulSet made by an earlier operator keeps selecting by [`LEGACY_SELECTOR_LABEL`]
/// and so do the Service, the PDB and discovery (they must find the same pods, or
/// a pod started during a rollout would find no contact point); its pods carry
/// [`CLUSTER_LABEL`] too, so that once the StatefulSet is deleted with
/// `--cascade=orphan` the operator makes it again selecting by [`CLUSTER_LABEL`] and
/// adopts them (a condition says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    Muster,
    Legacy,
}

impl Selection {
    /// How `live`, the cluster's StatefulSet, selects its pods: [`Selection::Muster`]
    /// unless it selects by the legacy label alone (and for a StatefulSet to be made).
    pub fn of(cs: &ClusterSpec, live: Option<&StatefulSet>) -> Self {
        let legacy = Some(Self::Legacy.labels(cs));
        match live {
            Some(s) if s.spec.selector.match_labels == legacy => Self::Legacy,
            _ => Self::Muster,
        }
    }

    /// The selector's labels.
    pub fn labels(self, cs: &ClusterSpec) -> BTreeMap<String, String> {
        let key = match self {
            Self::Muster => CLUSTER_LABEL,
            Self::Legacy => LEGACY_SELECTOR_LABEL,
        };
        BTreeMap::from([(key.to_owned(), cs.name_any())])
    }

    /// The selector as a label query (`key=name`).
    pub fn query(self, cs: &ClusterSpec) -> String {
        self.labels(cs)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The selector for the agents' `kubernetes-api` discovery (`%s`: the name).
    fn discovery(self) -> String {
        match self {
            Self::Muster => format!("{CLUSTER_LABEL}=%s"),
            Self::Legacy => format!("{LEGACY_SELECTOR_LABEL}=%s"),
        }
    }
}

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

/// Every owned object but the Secrets (made by the controller, never rebuilt),
/// in apply order: identity and permissions first, the pods last. Every cluster's
/// agents use the Kubernetes API (their formation record at least), so the Role and
/// its binding always exist.
#[derive(Debug, Clone)]
pub struct Owned {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub service: Service,
    pub config_map: ConfigMap,
    pub stateful_set: StatefulSet,
    /// `None` when spec.disruptionBudget turns it off.
    pub pod_disruption_budget: Option<PodDisruptionBudget>,
    /// `None` when spec.networkPolicy turns it off or the server cannot keep it.
    pub network_policy: Option<NetworkPolicy>,
}

/// What the objects depend on besides the ClusterSpec: the live StatefulSet's selector,
/// where the operator runs, the namespace's other NetworkPolicies, the server.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    /// How the pods are selected.
    pub selection: Selection,
    /// The operator's namespace (its pods may reach the management port).
    pub operator_namespace: &'a str,
    /// No other NetworkPolicy of the namespace applies to the pods: the cluster's
    /// policy opens their ports other than the agents' to all, as they were.
    pub open_other_ports: bool,
    /// The server keeps a NetworkPolicy port range (`endPort`, Kubernetes ≥ 1.25).
    pub network_policy_supported: bool,
}

impl Site<'static> {
    /// A new cluster (muster's selector) on a current server, the operator in
    /// `muster-system`, no other NetworkPolicy.
    pub fn new(selection: Selection) -> Self {
        Self {
            selection,
            operator_namespace: crate::install::NAMESPACE,
            open_other_ports: true,
            network_policy_supported: true,
        }
    }
}

/// Every owned object for `cs`; `new_cluster_enabled` goes to the ConfigMap; the pods
/// are selected as `site` says.
pub fn owned(
    cs: &ClusterSpec,
    new_cluster_enabled: bool,
    site: &Site<'_>,
) -> Result<Owned, BuildError> {
    let selection = site.selection;
    let agent_yaml = agent_yaml(&agent_settings(cs, selection)?);
    Ok(Owned {
        service_account: service_account::build(cs),
        role: role::build(cs, rbac_rules(cs)),
        role_binding: role_binding::build(cs),
        service: service::build(cs, selection),
        config_map: config_map::build(cs, &agent_yaml, new_cluster_enabled),
        stateful_set: stateful_set::build(cs, &agent_yaml, selection)?,
        pod_disruption_budget: pod_disruption_budget::build(cs, selection),
        network_policy: network_policy::build(cs, site),
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

/// Labels of every owned object (the claim templates among them, which cannot change:
/// so these stay as they are); the pods carry [`CLUSTER_LABEL`] too.
pub fn labels(cs: &ClusterSpec) -> BTreeMap<String, String> {
    let [name, instance, managed_by, _] = OPERATOR_LABEL_KEYS.map(str::to_owned);
    BTreeMap::from([
        (name, "muster".to_owned()),
        (instance, cs.name_any()),
        (managed_by, "muster-operator".to_owned()),
    ])
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
/// record (that one Lease), read their own ConfigMap (`new-cluster-enabled` as it is
/// now, when they claim the record; read only), read pods for `kubernetes-api`
/// discovery, take the Lease of `lease-majority` (that one Lease, which the controller
/// creates).
fn rbac_rules(cs: &ClusterSpec) -> Vec<PolicyRule> {
    let rule = |group: &str, resource: &str, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![group.to_owned()]),
        resources: Some(vec![resource.to_owned()]),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    let mut rules = vec![
        PolicyRule {
            resource_names: Some(vec![formation_lease::name(cs)]),
            ..rule("coordination.k8s.io", "leases", &["get", "update"])
        },
        PolicyRule {
            resource_names: Some(vec![cs.name_any()]),
            ..rule("", "configmaps", &["get"])
        },
    ];
    if cs.spec.bootstrap.discovery == Discovery::KubernetesApi {
        rules.push(rule("", "pods", &["get", "list", "watch"]));
    }
    if cs.spec.membership.downing == Downing::LeaseMajority {
        rules.push(PolicyRule {
            resource_names: Some(vec![formation_lease::sbr_name(cs)]),
            ..rule("coordination.k8s.io", "leases", &["get", "update"])
        });
    }
    rules
}

#[cfg(test)]
mod tests;
