//! The `ClusterSpec` custom resource (group `muster.dev`, version `v1alpha1`): what a
//! user asks for — a number of pods that form exactly one cluster, how they find each
//! other, how the cluster treats failures and how updates roll — and the status the
//! operator reports. Every field says its default; the CRD YAML (`manifests/crd.yaml`)
//! is generated from these types (see [`crate::generated`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A cluster of pods that form exactly one cluster (muster agents, optionally beside an
/// application container), kept through failures and rolled oldest-last.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "muster.dev",
    version = "v1alpha1",
    kind = "ClusterSpec",
    namespaced,
    status = "ClusterSpecStatus",
    shortname = "mcs",
    doc = "A muster cluster: pods that form exactly one cluster and keep it through failures and updates.",
    category = "muster",
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}"#,
    printcolumn = r#"{"name":"Up","type":"integer","jsonPath":".status.members.up"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Leader","type":"string","jsonPath":".status.leader"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    scale = r#"{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas","labelSelectorPath":".status.selector"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpecSpec {
    /// Pods, each one cluster member. Default 3. 0 stops the cluster as a whole: it is
    /// asked to prepare for a full shutdown, then every pod stops; scaling up again
    /// forms a new cluster.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,
    /// The muster agent container every pod runs.
    #[serde(default)]
    pub agent: AgentSpec,
    /// The application container; when set, the agent runs beside it as a sidecar.
    /// Default: none (pods run the agent alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationSpec>,
    /// Where pods may run. Default: anywhere.
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    /// How pods find each other and when a new cluster may form.
    #[serde(default)]
    pub bootstrap: BootstrapSpec,
    /// Failure detection and what happens to unreachable members.
    #[serde(default)]
    pub membership: MembershipSpec,
    /// How pod template changes roll out.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// The PodDisruptionBudget the operator keeps for the pods (Kubernetes ≥ 1.21).
    #[serde(default)]
    pub disruption_budget: DisruptionBudgetSpec,
    /// The NetworkPolicy the operator keeps for the pods (Kubernetes ≥ 1.25): the
    /// agent ports open to the cluster's own pods and the operator only.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// TLS on the agents' two ports, with a CA the operator makes for this cluster.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Persistent volume claims of every pod (the StatefulSet's volumeClaimTemplates,
    /// PersistentVolumeClaims): each pod gets its own claim per template, named
    /// `<template>-<cluster>-<ordinal>`, which outlives the pod, so its data survives
    /// rollouts and restarts. Each needs metadata.name, spec.accessModes and
    /// spec.resources.requests.storage. Mount one with spec.podTemplate (a volumeMount
    /// named as the template). Set them when creating the ClusterSpec: Kubernetes does not let
    /// a StatefulSet's claim templates change. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "claim_templates_schema")]
    pub volume_claim_templates: Option<serde_json::Value>,
    /// What happens to the pods' claims when the ClusterSpec is deleted or scaled down
    /// (the StatefulSet's persistentVolumeClaimRetentionPolicy, Kubernetes ≥ 1.27;
    /// on older servers the claims are kept and the VolumeClaimRetention condition
    /// says so).
    #[serde(default)]
    pub volume_claim_retention: VolumeClaimRetention,
    /// A Kubernetes pod template merged into the one the operator builds: ports,
    /// probes, volumes and mounts of the application, init containers, labels and
    /// annotations, image pull secrets, topology spread, security context, grace
    /// period, … Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_template_schema")]
    pub pod_template: Option<serde_json::Value>,
}

/// `spec.volumeClaimTemplates` is checked by the operator, like the pod template.
fn claim_templates_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "PersistentVolumeClaims, one per pod and template (the StatefulSet's volumeClaimTemplates), named <template>-<cluster>-<ordinal> and kept when the pod is replaced. Mount one with spec.podTemplate. Cannot change once the cluster exists. Default: none.",
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

/// What happens to the claims of `spec.volumeClaimTemplates`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeClaimRetention {
    /// When the ClusterSpec (and so its StatefulSet) is deleted: `Retain` keeps the
    /// claims and their data, `Delete` removes them. Default `Retain`.
    #[serde(default)]
    pub when_deleted: Retention,
    /// When a scale-down removes pods: `Retain` keeps their claims (a later scale-up
    /// gets the data back), `Delete` removes them. Default `Retain`.
    #[serde(default)]
    pub when_scaled: Retention,
}

/// Keep or delete claims.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Retention {
    /// Keep the claims and their data.
    #[default]
    Retain,
    /// Delete the claims.
    Delete,
}

/// `spec.podTemplate` is checked by the operator (it names the field of any problem),
/// not by the API server: a full PodTemplateSpec schema would make the CRD larger than
/// `kubectl apply` can store.
fn pod_template_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "A Kubernetes pod template (metadata and spec) merged into the one the operator builds. Containers, init containers, volumes, env and image pull secrets merge by name, ports by containerPort, volume mounts by mountPath; other lists are replaced; null removes. The container named `agent` takes only env, volumeMounts and securityContext; a container named as spec.application merges into it. Default: none.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn default_replicas() -> i32 {
    3
}

/// The pods' NetworkPolicy. The agents' ports (management 8558, cluster 2552) are open
/// to the cluster's own pods and the operator's, and to `managementFrom` on 8558; the
/// pods' other ports stay as they were: open to all where no other NetworkPolicy of the
/// namespace applies to the pods, else as those policies say. Only enforced where the
/// cluster's network plugin enforces NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Keep a NetworkPolicy. false: none (one the operator made is removed), and every
    /// pod that can reach the pods reaches the agents' ports. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who else may reach the management port (8558): NetworkPolicy peers, e.g. the
    /// monitoring namespace that scrapes /metrics. Default: nobody else.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub management_from: Vec<k8s_openapi::api::networking::v1::NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            management_from: Vec::new(),
        }
    }
}

/// TLS on the agents' ports. The operator makes a CA for the cluster (Secret
/// `<name>-muster-ca`, which no pod mounts) and one agent certificate for the name
/// `<name>.<namespace>.muster`, signed by it (Secret `<name>-muster-tls`, mounted into
/// the agent container alone). Agents then require each other's certificate on the
/// cluster port; the management port serves HTTPS only (the probes use HTTPS, an
/// application beside the agent must too); the operator checks the agents'
/// certificate before it sends them the management token. The certificate is renewed
/// before it expires, without restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Run the agents with TLS. Cannot change while the cluster has pods (agents with
    /// and without TLS cannot reach each other): set it when creating the ClusterSpec.
    /// Default false.
    #[serde(default)]
    pub enabled: bool,
}

/// The pods' PodDisruptionBudget: how many a voluntary disruption (a node drain, an
/// eviction) may take at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudgetSpec {
    /// Keep a PodDisruptionBudget. false: none (one the operator made is removed), for
    /// clusters whose own tooling limits evictions. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Pods that may be down at once: a number (at least 1) or a percentage of the
    /// replicas, e.g. `25%`. Default 1.
    #[serde(default = "default_max_unavailable")]
    #[schemars(schema_with = "int_or_string_schema")]
    pub max_unavailable: serde_json::Value,
}

impl DisruptionBudgetSpec {
    /// `maxUnavailable` as Kubernetes takes it; `Err` says what is wrong (the value is
    /// kept as written, so that no value the API server accepts makes the ClusterSpec
    /// unreadable).
    pub fn max_unavailable(&self) -> Result<IntOrString, String> {
        match &self.max_unavailable {
            serde_json::Value::Number(n) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .map(IntOrString::Int)
                .ok_or_else(|| format!("`{n}` is not a number of pods (at least 1)")),
            serde_json::Value::String(s) => {
                let percent = s
                    .strip_suffix('%')
                    .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|n| (1..=100).contains(n));
                percent
                    .map(|_| IntOrString::String(s.clone()))
                    .ok_or_else(|| format!("`{s}` is not a percentage from 1% to 100%"))
            }
            other => Err(format!("`{other}` is neither a number nor a percentage")),
        }
    }
}

/// An int-or-string field, kept as written.
fn int_or_string_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Pods that may be down at once: a number (at least 1) or a percentage of the replicas, e.g. `25%`. Default 1.",
        "x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "default": 1
    })
}

impl Default for DisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: default_max_unavailable(),
        }
    }
}

fn default_max_unavailable() -> serde_json::Value {
    serde_json::Value::from(1)
}

/// An int-or-string as written.
pub fn int_or_string(v: &IntOrString) -> String {
    match v {
        IntOrString::Int(n) => n.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// The agent container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Image of `muster-agent`. Default `ghcr.io/muster-dev/muster-agent:0.1.0`.
    #[serde(default = "default_agent_image")]
    pub image: String,
    /// Kubernetes image pull policy: `Always`, `IfNotPresent` or `Never`. Default
    /// `IfNotPresent`.
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: String,
    /// CPU and memory of the agent container. Default: requests of 10m CPU and 32Mi
    /// memory, a 64Mi memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Roles of every member (the agent's `cluster.roles`), shown in
    /// `/cluster/members`; `membership.downingRole` can count only one of them.
    /// Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Any other agent setting, in the agent's own keys (`node-agent/reference.yaml`),
    /// e.g. `{cluster: {gossip-interval: 500ms}}`. Merged over what the operator
    /// writes and checked by the agent's own loader: a bad key or value is an
    /// `InvalidSpec` condition naming it. Keys the operator sets, or that have a field
    /// here, are refused with the field to use. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "agent_config_schema")]
    pub config: Option<serde_json::Value>,
}

impl Default for AgentSpec {
    fn default() -> Self {
        Self {
            image: default_agent_image(),
            image_pull_policy: default_pull_policy(),
            resources: None,
            roles: Vec::new(),
            config: None,
        }
    }
}

/// `spec.agent.config` is checked by the agent's loader inside the operator.
fn agent_config_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Any other agent setting, in the agent's own keys (node-agent/reference.yaml), e.g. {cluster: {gossip-interval: 500ms}}. Merged over what the operator writes and checked by the agent's own loader: a bad key or value is an InvalidSpec condition naming it. Keys the operator sets, or that have a field in this spec, are refused with the field to use. Default: none.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

fn default_agent_image() -> String {
    "ghcr.io/muster-dev/muster-agent:0.1.0".to_owned()
}

fn default_pull_policy() -> String {
    "IfNotPresent".to_owned()
}

/// The application container that the agent runs beside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSpec {
    /// Container image (required).
    pub image: String,
    /// Container name. Default `app`.
    #[serde(default = "default_app_name")]
    pub name: String,
    /// Environment variables, as in a pod's container. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// CPU and memory, as in a pod's container. Default: none set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Command, replacing the image's entrypoint. Default: the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments. Default: the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

fn default_app_name() -> String {
    "app".to_owned()
}

/// Pod scheduling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a pod's node must have. Default: none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity and anti-affinity rules. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Priority class of the pods. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// How the agents find each other (Akka Cluster Bootstrap's settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// `kubernetes-api` (pods by label; the operator grants the RBAC) or `dns` (the
    /// headless Service's SRV records). Default `kubernetes-api`.
    #[serde(default)]
    pub discovery: Discovery,
    /// Contact points that must be found before a new cluster may form. Default: the
    /// replica count when the ClusterSpec is created (recorded in status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub required_contact_points: Option<i32>,
    /// How long the set of contact points must stay unchanged before forming, e.g.
    /// `5s`. Default `5s`.
    #[serde(default = "default_stable_margin")]
    pub stable_margin: String,
    /// Form only when every discovered contact point answered. Default true.
    #[serde(default = "default_true")]
    pub contact_with_all_contact_points: bool,
    /// `auto`: on until the cluster has formed, then turned off by the operator so that
    /// no second cluster can ever form; `true` / `false`: always on / off. Default
    /// `auto`.
    #[serde(default)]
    pub new_cluster_enabled: NewClusterEnabled,
}

impl Default for BootstrapSpec {
    fn default() -> Self {
        Self {
            discovery: Discovery::default(),
            required_contact_points: None,
            stable_margin: default_stable_margin(),
            contact_with_all_contact_points: true,
            new_cluster_enabled: NewClusterEnabled::default(),
        }
    }
}

fn default_stable_margin() -> String {
    "5s".to_owned()
}

fn default_true() -> bool {
    true
}

/// Discovery method of the agents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Discovery {
    /// Pods by label through the Kubernetes API.
    #[default]
    KubernetesApi,
    /// SRV records of the headless Service.
    Dns,
}

/// Whether agents may form a new cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NewClusterEnabled {
    /// On until the cluster has formed, then off.
    #[default]
    Auto,
    /// Always on.
    True,
    /// Always off: the pods only join an existing cluster.
    False,
}

/// Failure detection and downing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembershipSpec {
    /// Phi accrual failure detector threshold: higher detects later and wrongly less
    /// often. Default 8.
    #[serde(default = "default_threshold")]
    pub failure_detector_threshold: f64,
    /// What the split brain resolver does with unreachable members. Default
    /// `keep-majority`.
    #[serde(default)]
    pub downing: Downing,
    /// How long the set of unreachable members must stay unchanged before the resolver
    /// acts, e.g. `20s`. Default `20s`.
    #[serde(default = "default_stable_after")]
    pub stable_after: String,
    /// `on` (3/4 of stableAfter, at least 4s), `off`, or a duration: when the set of
    /// unreachable members keeps changing this long past stableAfter, down every member
    /// rather than risk two sides deciding on different views. Quote on and off in
    /// YAML (`'off'`): kubectl reads them bare as booleans. Default `on`.
    #[serde(default = "default_on")]
    pub down_all_when_unstable: String,
    /// `static-quorum`: the members a side needs to survive (required with it; more
    /// than half of the replicas, so that two sides cannot both have it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub quorum_size: Option<i32>,
    /// The resolver counts only members with this role (keep-majority, static-quorum,
    /// lease-majority), or picks the oldest among them (keep-oldest). Default: every
    /// member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downing_role: Option<String>,
    /// `keep-oldest`: an oldest member alone on its side is downed and the other side
    /// kept. Default true.
    #[serde(default = "default_true")]
    pub down_if_alone: bool,
    /// `lease-majority`: how the side that takes the Lease is chosen.
    #[serde(default)]
    pub lease: LeaseSpec,
    /// On SIGTERM a member leaves the cluster and waits at most this long for it, e.g.
    /// `15s`; the pods' terminationGracePeriodSeconds must be longer. Default `15s`.
    #[serde(default = "default_leave_timeout")]
    pub leave_timeout: String,
    /// Once a member is being stopped (asked to leave, or its pod deleted), how long
    /// its application's holds on the handover gate (`PUT /handover/holds/{name}` on
    /// its agent) may delay that: a rollout deletes no pod, and a scale-down does not
    /// shrink over one, while its application holds the gate, for at most this long,
    /// e.g. `20s`. On SIGTERM it runs beside leaveTimeout: the longer of the two must
    /// fit in the pods' terminationGracePeriodSeconds. Default `20s`.
    #[serde(default = "default_handover_timeout")]
    pub handover_timeout: String,
    /// The failure detector's other settings (Akka's names). Default: the agent's.
    #[serde(default)]
    pub failure_detector: FailureDetectorSpec,
    /// Pod-aware downing: when no pod has a member's IP any more (its pod was deleted or
    /// evicted and replaced), the operator tells the leader, which judges it
    /// unreachable after 2 heartbeat intervals of silence and decides without waiting
    /// for stableAfter — acting early only on a verdict that keeps its own side. A
    /// member whose pod still exists (running or terminating) is never named. Default
    /// true.
    #[serde(default = "default_true")]
    pub pod_aware_downing: bool,
}

impl Default for MembershipSpec {
    fn default() -> Self {
        Self {
            failure_detector_threshold: default_threshold(),
            downing: Downing::default(),
            stable_after: default_stable_after(),
            down_all_when_unstable: default_on(),
            quorum_size: None,
            downing_role: None,
            down_if_alone: true,
            lease: LeaseSpec::default(),
            leave_timeout: default_leave_timeout(),
            handover_timeout: default_handover_timeout(),
            failure_detector: FailureDetectorSpec::default(),
            pod_aware_downing: true,
        }
    }
}

fn default_on() -> String {
    "on".to_owned()
}

fn default_leave_timeout() -> String {
    "15s".to_owned()
}

fn default_handover_timeout() -> String {
    "20s".to_owned()
}

/// The `lease-majority` resolver's Lease (`<cluster name>-muster-sbr` in the namespace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseSpec {
    /// The side without a majority waits this long before trying for the Lease, e.g.
    /// `2s`. Default `2s`.
    #[serde(default = "default_acquire_delay")]
    pub acquire_lease_delay_for_minority: String,
    /// The winner holds the Lease this long (never renewed), then a new partition is
    /// decided afresh, e.g. `40s`. Default `40s`.
    #[serde(default = "default_release_after")]
    pub release_after: String,
}

impl Default for LeaseSpec {
    fn default() -> Self {
        Self {
            acquire_lease_delay_for_minority: default_acquire_delay(),
            release_after: default_release_after(),
        }
    }
}

fn default_acquire_delay() -> String {
    "2s".to_owned()
}

fn default_release_after() -> String {
    "40s".to_owned()
}

/// Phi accrual failure detector settings besides the threshold; each left out is the
/// agent's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureDetectorSpec {
    /// Silence beyond the usual heartbeat interval that is still normal (GC, CPU
    /// starvation), e.g. `3s`. Default `3s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptable_heartbeat_pause: Option<String>,
    /// How often heartbeats are sent, e.g. `1s`. Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<String>,
    /// Lower bound of the heartbeat intervals' standard deviation, e.g. `100ms`.
    /// Default `100ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_std_deviation: Option<String>,
    /// A member that has not answered its first heartbeat within this long is judged
    /// as if one had arrived then, e.g. `1s`. Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_response_after: Option<String>,
    /// How many members watch each member. Default 9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub monitored_by_nr_of_members: Option<i32>,
    /// Heartbeat intervals kept per watched member. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_sample_size: Option<i32>,
}

fn default_threshold() -> f64 {
    8.0
}

fn default_stable_after() -> String {
    "20s".to_owned()
}

/// Split brain resolver strategy (the agent's `cluster.split-brain-resolver.active-strategy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Downing {
    /// Keep the side with more members (a tie: the side with the lowest address).
    #[default]
    KeepMajority,
    /// Keep a side with at least `quorumSize` members.
    StaticQuorum,
    /// Keep the side with the oldest member.
    KeepOldest,
    /// Down every member.
    DownAll,
    /// Keep the side that acquires a Kubernetes Lease (the operator grants leases).
    LeaseMajority,
    /// Never down automatically. (In YAML write it quoted, `'off'`: kubectl reads a
    /// bare off as the boolean false.)
    Off,
}

/// Rolling updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// `OldestLast`: one pod at a time, non-members first, then members youngest first,
    /// the oldest last, each only when the cluster is converged. `Ordinal`: the
    /// StatefulSet's own rolling update. Default `OldestLast`.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// How long a replaced pod may take to become Ready and an Up member before the
    /// rollout stops and reports Degraded, e.g. `5m`. Default `5m`.
    #[serde(default = "default_member_up_timeout")]
    pub member_up_timeout: String,
    /// Stop rolling (the current step finishes). Default false.
    #[serde(default)]
    pub paused: bool,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::default(),
            member_up_timeout: default_member_up_timeout(),
            paused: false,
        }
    }
}

fn default_member_up_timeout() -> String {
    "5m".to_owned()
}

/// Rollout strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RolloutStrategy {
    /// Oldest member last.
    #[default]
    OldestLast,
    /// The StatefulSet's RollingUpdate, highest ordinal first.
    Ordinal,
}

/// What the operator observed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpecStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Forming`, `Running`, `Updating`, `Degraded`, `Stopped` (scaled to
    /// zero, every pod gone), or `Paused` while the
    /// annotation `muster.dev/reconcile-paused: "true"` stops all reconciliation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Pods that exist (for the scale subresource).
    #[serde(default)]
    pub replicas: i32,
    /// Label selector of the pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Members by state, as the agents report them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<MemberCounts>,
    /// Members by app version, as the agents report them: the pod template revision
    /// (`controller-revision-hash`) each member's pod runs, so a rollout shows how
    /// many run the old and the new template.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub app_versions: BTreeMap<String, i32>,
    /// Address of the cluster leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Address of the oldest member (it holds cluster singletons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<String>,
    /// When the cluster was first seen formed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formed_at: Option<String>,
    /// The contact points required to form, fixed when first reported (the agents get
    /// spec.bootstrap.requiredContactPoints when set, else this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_contact_points: Option<i32>,
    /// The contact points that must all report the same set for the agents to form
    /// without the stable margin: the replicas (at least the required) while the
    /// cluster may form, then fixed, so that scaling a formed cluster rolls no pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_contact_points: Option<i32>,
    /// Whether the agents may currently form a new cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_cluster_enabled: Option<bool>,
    /// Progress of a rolling update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// With spec.tls: the agents' certificate and the cluster's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    /// The cluster key, by id, and a rotation under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_key: Option<ClusterKeyStatus>,
    /// Pods of the cluster that may still run where nobody sees them: stuck
    /// terminating, on a node that is not Ready, or gone from the API server (e.g.
    /// force-deleted) while they were so and their node has not been Ready since.
    /// Forming is refused while any is listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stranded_pods: Vec<StrandedPod>,
    /// `Formed`, `Available`, `Progressing` and `Degraded`, each with the generation
    /// it was computed for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A pod that may still run unseen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StrandedPod {
    pub pod: String,
    pub uid: String,
    /// The node it was last seen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Why, in words.
    pub why: String,
}

/// The TLS material the operator keeps for the agents.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// The name the agents' certificate carries and every agent checks.
    pub server_name: String,
    /// When the agents' certificate ends (RFC 3339); it is renewed before.
    pub certificate_not_after: String,
    /// When the CA in use (the one that issued the agents' certificate) ends (RFC
    /// 3339); a year before, the operator rotates it.
    pub ca_not_after: String,
    /// The CAs the agents trust, by the start of each certificate's SHA-256
    /// fingerprint, the one in use first (two while a rotation runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cas: Vec<String>,
    /// While a CA rotation (annotation `muster.dev/rotate-ca`, or a CA with less than
    /// a year left) runs: its step and what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
}

/// The cluster key, by id (an id, the start of an HMAC under the key, reveals nothing
/// of it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterKeyStatus {
    /// The ids of the keys in the cluster's key file, the signing one first (two
    /// while a rotation runs).
    pub keys: Vec<String>,
    /// While a rotation (annotation `muster.dev/rotate-cluster-key`) runs: its step
    /// and what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
}

/// Members by state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberCounts {
    pub up: i32,
    pub total: i32,
    pub unreachable: i32,
}

/// A rolling update in progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Pods already running the current template.
    pub updated: i32,
    /// Pods in all.
    pub total: i32,
    /// The pod being replaced now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_pod: Option<String>,
    /// What the rollout waits for, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}
