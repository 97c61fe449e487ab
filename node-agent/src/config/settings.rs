//! The agent's settings as written in the YAML file: every key, its default and its unit.
//!
//! Key names follow Akka Management / Akka Cluster where Akka has the same knob, with
//! Akka's defaults. `reference.yaml` in this crate documents the same keys for users; a
//! test keeps the two in step.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration;
use crate::base::member::MemberStatus;
use crate::base::secret::SecretText;

/// Everything the agent can be told, grouped as in the YAML file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    pub cluster: ClusterSettings,
    pub management: ManagementSettings,
    pub bootstrap: BootstrapSettings,
    pub discovery: DiscoverySettings,
    pub tls: TlsSettings,
}

impl Settings {
    /// These settings with every secret replaced by `<redacted>`: for printing.
    pub fn redacted(&self) -> Self {
        let mut s = self.clone();
        if s.management.token.is_some() {
            s.management.token = Some(SecretText::redacted());
        }
        s
    }

    /// The keys whose value differs from the default, as a YAML mapping: a settings file
    /// that says only what it changes (an agent fills in the rest with its defaults).
    pub fn changes(&self) -> serde_yaml::Value {
        let value = |s: &Settings| serde_yaml::to_value(s).unwrap_or(serde_yaml::Value::Null);
        changed(&value(self), &value(&Settings::default()))
            .unwrap_or_else(|| serde_yaml::Value::Mapping(Default::default()))
    }
}

/// What of `value` differs from `default`, mapping by mapping; `None` when nothing does.
fn changed(value: &serde_yaml::Value, default: &serde_yaml::Value) -> Option<serde_yaml::Value> {
    use serde_yaml::Value;
    match (value, default) {
        (Value::Mapping(v), Value::Mapping(d)) => {
            let mut out = serde_yaml::Mapping::new();
            for (key, x) in v {
                let differs = match d.get(key) {
                    Some(dx) => changed(x, dx),
                    None => Some(x.clone()),
                };
                if let Some(x) = differs {
                    out.insert(key.clone(), x);
                }
            }
            (!out.is_empty()).then_some(Value::Mapping(out))
        }
        _ if value == default => None,
        _ => Some(value.clone()),
    }
}

/// `cluster:` — this node's membership in the cluster (Akka Cluster).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSettings {
    /// Cluster (system) name, part of every node address; nodes with another name are
    /// never joined. Default: `bootstrap.service-name`, else `muster`.
    pub name: Option<String>,
    /// This node's IP address, advertised to peers and bound. Default: `POD_IP`.
    pub hostname: Option<String>,
    /// Cluster (gossip) TCP port. Default 2552.
    pub port: u16,
    /// Explicit seed nodes (`muster://name@ip:port` or `ip:port`). When set, bootstrap is
    /// skipped: the node joins these; the first in the list forms the cluster if none
    /// answers within `seed-node-timeout`. Default: none.
    pub seed_nodes: Vec<String>,
    /// Roles of this member, shown to peers. Default: none.
    pub roles: Vec<String>,
    /// Version of the application, shown to peers (used by rolling updates). Default `0.0.0`.
    pub app_version: String,
    /// File holding the shared cluster key that authenticates agent-to-agent messages
    /// and probe answers (HMAC-SHA256). At least 16 bytes. Up to 4 keys, one per line:
    /// the first signs, all are accepted (key rotation); read again every second.
    /// Required unless `allow-unauthenticated` is true. Default: none.
    pub key_file: Option<PathBuf>,
    /// Run without a cluster key: anyone who can reach the cluster port can then down
    /// any member, and anyone on the pod network can take part in forming. Only for
    /// experiments on a trusted machine. Default false.
    pub allow_unauthenticated: bool,
    /// How often gossip is sent to a random peer. Default 1s.
    #[serde(with = "duration")]
    pub gossip_interval: Duration,
    /// How often the leader checks for convergence and moves members up. Default 1s.
    #[serde(with = "duration")]
    pub leader_actions_interval: Duration,
    /// Joining members become WeaklyUp after this long without convergence; `off`
    /// disables. Default 7s.
    #[serde(with = "duration::or_off")]
    pub allow_weakly_up_members: Option<Duration>,
    /// A join that got no welcome is sent again after this long. Default 2s (Akka: 10s;
    /// muster's join is idempotent and cheap, so it retries sooner).
    #[serde(with = "duration")]
    pub retry_unsuccessful_join_after: Duration,
    /// With `seed-nodes`, how long the first seed node waits for another seed before it
    /// forms the cluster itself. Default 5s.
    #[serde(with = "duration")]
    pub seed_node_timeout: Duration,
    /// On SIGTERM the member leaves the cluster (Leaving, Exiting, removed) and the
    /// process exits 0; it waits at most this long for that. Keep it below the pod's
    /// terminationGracePeriodSeconds (30s by default). Default 15s.
    #[serde(with = "duration")]
    pub leave_timeout: Duration,
    /// Once this member is asked to stop (a Leave, SIGTERM), how long the application's
    /// holds on the handover gate (`PUT /handover/holds/{name}`) may keep it from being
    /// stopped: the agent stays up after leaving, and the operator deletes no pod,
    /// until every hold is released or this runs out. On SIGTERM it runs beside
    /// `leave-timeout`: keep the longer of the two below the pod's
    /// terminationGracePeriodSeconds. Default 20s.
    #[serde(with = "duration")]
    pub handover_timeout: Duration,
    /// A node that has been trying to join for this long without success exits
    /// (status 4) so that Kubernetes restarts it and bootstrap starts afresh; `off`
    /// keeps trying. Default 60s (Akka: off; on Kubernetes a restart is the better
    /// recovery, as Akka Management's docs advise).
    #[serde(with = "duration::or_off")]
    pub shutdown_after_unsuccessful_join_seed_nodes: Option<Duration>,
    /// How members watch each other (phi accrual, Akka's settings and defaults).
    pub failure_detector: FailureDetectorConfig,
    /// What to do about unreachable members (Akka's split brain resolver).
    pub split_brain_resolver: SplitBrainResolverConfig,
}

/// `cluster.split-brain-resolver.active-strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActiveStrategy {
    KeepMajority,
    StaticQuorum,
    KeepOldest,
    DownAll,
    LeaseMajority,
    /// No automatic downing: unreachable members stay until downed by hand.
    Off,
}

/// `cluster.split-brain-resolver:` — which members to down when some are unreachable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct SplitBrainResolverConfig {
    /// keep-majority (default), static-quorum, keep-oldest, down-all or off.
    pub active_strategy: ActiveStrategy,
    /// Decide only after the set of unreachable members has not changed for this long.
    /// Default 20s.
    #[serde(with = "duration")]
    pub stable_after: Duration,
    /// `on` (3/4 of stable-after, at least 4s), `off`, or a duration: when the view
    /// keeps changing this long past stable-after, down every member. Default `on`.
    pub down_all_when_unstable: DownAllWhenUnstable,
    pub keep_majority: RoleOnly,
    pub static_quorum: StaticQuorumConfig,
    pub keep_oldest: KeepOldestConfig,
    pub lease_majority: LeaseMajorityConfig,
}

impl Default for SplitBrainResolverConfig {
    fn default() -> Self {
        Self {
            active_strategy: ActiveStrategy::KeepMajority,
            stable_after: Duration::from_secs(20),
            down_all_when_unstable: DownAllWhenUnstable::On,
            keep_majority: RoleOnly::default(),
            static_quorum: StaticQuorumConfig::default(),
            keep_oldest: KeepOldestConfig::default(),
            lease_majority: LeaseMajorityConfig::default(),
        }
    }
}

/// `cluster.split-brain-resolver.down-all-when-unstable`: `on`, `off` or a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownAllWhenUnstable {
    /// A limit derived from `stable-after` (the resolver's rule, as Akka's).
    On,
    Off,
    After(Duration),
}

impl Serialize for DownAllWhenUnstable {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::On => s.serialize_str("on"),
            Self::Off => s.serialize_str("off"),
            Self::After(d) => duration::serialize(d, s),
        }
    }
}

impl<'de> Deserialize<'de> for DownAllWhenUnstable {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::Bool(true) => Ok(Self::On),
            serde_yaml::Value::Bool(false) => Ok(Self::Off),
            serde_yaml::Value::String(s) => match s.trim() {
                "on" | "true" => Ok(Self::On),
                "off" | "false" => Ok(Self::Off),
                other => duration::parse(other)
                    .map(Self::After)
                    .map_err(|e| serde::de::Error::custom(format!("{e}, or `on` / `off`"))),
            },
            other => Err(serde::de::Error::custom(format!(
                "`{}` is not `on`, `off` or a duration",
                super::show_value(&other)
            ))),
        }
    }
}

/// `bootstrap.protocol`: of the SRV lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

/// `lease-majority`: the side whose leader acquires a `coordination.k8s.io/v1` Lease
/// survives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LeaseMajorityConfig {
    /// Name of the Lease; "" means `<cluster name>-muster-sbr`.
    pub lease_name: String,
    /// Namespace of the Lease; "" means the pod's namespace.
    pub namespace: String,
    /// The side without a majority waits this long before trying, so that the
    /// majority usually wins. Default 2s.
    #[serde(with = "duration")]
    pub acquire_lease_delay_for_minority: Duration,
    /// The Lease is held this long after a decision (it is not renewed). Default 40s.
    #[serde(with = "duration")]
    pub release_after: Duration,
    /// Count only members with this role for the majority ("" = all).
    pub role: String,
}

impl Default for LeaseMajorityConfig {
    fn default() -> Self {
        Self {
            lease_name: String::new(),
            namespace: String::new(),
            acquire_lease_delay_for_minority: Duration::from_secs(2),
            release_after: Duration::from_secs(40),
            role: String::new(),
        }
    }
}

/// A strategy's `role`: only members with it count ("" = all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RoleOnly {
    pub role: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct StaticQuorumConfig {
    /// Members a side needs to survive; required with static-quorum. Set it to
    /// (cluster size / 2) + 1.
    pub quorum_size: usize,
    pub role: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KeepOldestConfig {
    /// An oldest member alone on its side is downed and the other side kept.
    /// Default true.
    pub down_if_alone: bool,
    pub role: String,
}

impl Default for KeepOldestConfig {
    fn default() -> Self {
        Self {
            down_if_alone: true,
            role: String::new(),
        }
    }
}

/// `cluster.failure-detector:` — heartbeats between ring neighbours and the phi accrual
/// detector that judges them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FailureDetectorConfig {
    /// A member is unreachable from an observer once phi reaches this. Lower reacts
    /// sooner with more false alarms. Default 8.0.
    pub threshold: f64,
    /// Heartbeat intervals kept per monitored member. Default 1000.
    pub max_sample_size: usize,
    /// Lower bound of the intervals' standard deviation. Default 100ms.
    #[serde(with = "duration")]
    pub min_std_deviation: Duration,
    /// Silence beyond the usual interval that is still normal (GC, CPU starvation).
    /// Default 3s; with the other defaults a crash is detected after about 4.5s.
    #[serde(with = "duration")]
    pub acceptable_heartbeat_pause: Duration,
    /// How often heartbeats are sent. Default 1s.
    #[serde(with = "duration")]
    pub heartbeat_interval: Duration,
    /// A member that has not answered its first heartbeat within this long starts being
    /// judged as if one had arrived. Default 1s.
    #[serde(with = "duration")]
    pub expected_response_after: Duration,
    /// Members that watch each member (its successors on the address ring). Default 9.
    pub monitored_by_nr_of_members: usize,
}

impl Default for FailureDetectorConfig {
    fn default() -> Self {
        Self {
            threshold: 8.0,
            max_sample_size: 1000,
            min_std_deviation: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_secs(3),
            heartbeat_interval: Duration::from_secs(1),
            expected_response_after: Duration::from_secs(1),
            monitored_by_nr_of_members: 9,
        }
    }
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            name: None,
            hostname: None,
            port: 2552,
            seed_nodes: Vec::new(),
            roles: Vec::new(),
            app_version: "0.0.0".to_owned(),
            key_file: None,
            allow_unauthenticated: false,
            gossip_interval: Duration::from_secs(1),
            leader_actions_interval: Duration::from_secs(1),
            allow_weakly_up_members: Some(Duration::from_secs(7)),
            retry_unsuccessful_join_after: Duration::from_secs(2),
            seed_node_timeout: Duration::from_secs(5),
            leave_timeout: Duration::from_secs(15),
            handover_timeout: Duration::from_secs(20),
            shutdown_after_unsuccessful_join_seed_nodes: Some(Duration::from_secs(60)),
            failure_detector: FailureDetectorConfig::default(),
            split_brain_resolver: SplitBrainResolverConfig::default(),
        }
    }
}

/// `management:` — the HTTP management API (Akka Management).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManagementSettings {
    /// Address to bind and advertise. Default: `cluster.hostname`.
    pub hostname: Option<String>,
    /// HTTP port. Default 8558.
    pub port: u16,
    /// Open connections accepted at once; further clients wait. Default 1024.
    pub max_connections: usize,
    /// A client must send its request headers within this time. Default 10s.
    #[serde(with = "duration")]
    pub header_read_timeout: Duration,
    /// Largest request body accepted, in bytes. Default 65536.
    pub max_body_bytes: usize,
    /// File holding the bearer token that the mutating routes (leave, down) require.
    /// At least 16 bytes. Default: none (those routes are refused).
    pub token_file: Option<PathBuf>,
    /// The token itself, for `MUSTER_MANAGEMENT_TOKEN` from a Secret; use one of the two.
    pub token: Option<SecretText>,
    /// Member statuses in which `/ready` answers 200. Default: Up, WeaklyUp.
    pub ready_states: Vec<MemberStatus>,
}

impl Default for ManagementSettings {
    fn default() -> Self {
        Self {
            hostname: None,
            port: 8558,
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            token_file: None,
            token: None,
            ready_states: vec![MemberStatus::Up, MemberStatus::WeaklyUp],
        }
    }
}

/// `tls:` — TLS on the management and cluster ports. Off unless the three files are
/// named; then all three are required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSettings {
    /// PEM file with this agent's certificate (then any intermediates). It must be valid
    /// for `server-name`, allow serverAuth and clientAuth, and chain to a CA of `ca-file`.
    /// Default: none (TLS off).
    pub cert_file: Option<PathBuf>,
    /// PEM file with the certificate's private key. Default: none.
    pub key_file: Option<PathBuf>,
    /// PEM file with the CA certificates trusted for peers (during a CA rotation, the old
    /// and the new). Default: none.
    pub ca_file: Option<PathBuf>,
    /// The name every peer's certificate is checked against (peers are reached by IP,
    /// so the agents of a cluster share one name). Default: the cluster name.
    pub server_name: Option<String>,
    /// How often the three files are read again; a change is used from the next
    /// connection (for certificate rotation without a restart). Default 10s.
    #[serde(with = "duration")]
    pub reload_interval: Duration,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            ca_file: None,
            server_name: None,
            reload_interval: Duration::from_secs(10),
        }
    }
}

/// Where contact points come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiscoveryMethod {
    /// Pods in the namespace selected by `discovery.kubernetes-api.pod-label-selector`.
    KubernetesApi,
    /// SRV (with `port-name`) or A/AAAA records of the headless Service.
    Dns,
    /// The static list `discovery.config.endpoints`.
    Config,
    /// `discovery.aggregate.discovery-methods`, in order, the first that answers.
    Aggregate,
}

impl DiscoveryMethod {
    pub fn name(self) -> &'static str {
        match self {
            Self::KubernetesApi => "kubernetes-api",
            Self::Dns => "dns",
            Self::Config => "config",
            Self::Aggregate => "aggregate",
        }
    }
}

/// `bootstrap:` — Akka Cluster Bootstrap's `contact-point-discovery` and `contact-point`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct BootstrapSettings {
    /// May this node form a new cluster when no contact point reports one? The operator
    /// turns this off once the cluster has formed. Default true.
    pub new_cluster_enabled: bool,
    /// A file holding `true` or `false` that overrides `new-cluster-enabled` and is
    /// followed at run time (read every second), e.g. a ConfigMap key mounted into the
    /// pod: the operator turns forming off there without restarting anything. A missing
    /// or unreadable file keeps the last value. Default: none.
    pub new_cluster_enabled_file: Option<PathBuf>,
    /// muster: a `coordination.k8s.io/v1` Lease in this pod's namespace that records
    /// which node formed the cluster. Before forming, a node claims it (writes itself as
    /// holder, conditional on the version it read); if it is already held, the node
    /// never forms, whatever `new-cluster-enabled` says, and waits for a cluster to join.
    /// It closes the window in which a mounted `new-cluster-enabled-file` still says
    /// true (a kubelet refreshes mounted ConfigMaps only every minute or so). Needs
    /// `get` and `update` on that Lease. The operator sets it. A record annotated
    /// `muster.dev/new-cluster-enabled-config-map: NAME` (the operator's are; the record
    /// must be called `NAME-formation`) also says where `new-cluster-enabled` is now:
    /// claiming a free record reads that ConfigMap's key from the API server, and it
    /// decides over `new-cluster-enabled` and its file (needs `get` on it; without, the
    /// node's own setting decides). Default: none.
    pub formation_lease: Option<String>,
    /// Name looked up in discovery (the headless Service, `app` label). Default: none.
    pub service_name: Option<String>,
    /// Namespace of the service. Default: `POD_NAMESPACE`, else the service account's
    /// namespace file, else `default`.
    pub service_namespace: Option<String>,
    /// How contact points are found. Default `kubernetes-api`.
    pub discovery_method: DiscoveryMethod,
    /// Name of the management port in discovery (SRV port name, container port name).
    /// Empty: none, the `fallback-port` is used. Default empty.
    pub port_name: String,
    /// Protocol of the SRV lookup: `tcp` or `udp`. Default `tcp`.
    pub protocol: Protocol,
    /// The discovered set must be unchanged this long before a new cluster is formed
    /// (unless every contact point agrees, see `contact-point-agreement`). Default 5s.
    #[serde(with = "duration")]
    pub stable_margin: Duration,
    /// Discovery is polled this often. Default 1s.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Random share added to each discovery retry interval (0.2 = up to 20%). Default 0.2.
    pub exponential_backoff_random_factor: f64,
    /// Failed lookups back off exponentially up to this interval. Default 15s.
    #[serde(with = "duration")]
    pub exponential_backoff_max: Duration,
    /// Contact points that must have answered before a new cluster is formed. Set it to
    /// the number of replicas for the safest formation. Default 2.
    pub required_contact_point_nr: usize,
    /// Each discovery lookup gives up after this long. Default 3s.
    #[serde(with = "duration")]
    pub resolve_timeout: Duration,
    /// Must every discovered contact point have answered before forming? Default true.
    pub contact_with_all_contact_points: bool,
    /// Management port of contact points when discovery gives none. Default:
    /// `management.port`.
    pub fallback_port: Option<u16>,
    /// Without `port-name`, keep only targets on `fallback-port`. Default true.
    pub filter_on_fallback_port: bool,
    /// A contact point failing this long triggers rediscovery, and answers older than
    /// this do not count. Default 3s.
    #[serde(with = "duration")]
    pub probing_failure_timeout: Duration,
    /// Each contact point is probed this often. Default 1s.
    #[serde(with = "duration")]
    pub probe_interval: Duration,
    /// Random share added to each probe interval (0.2 = up to 20%). Default 0.2.
    pub probe_interval_jitter: f64,
    /// muster: form without waiting `stable-margin` when at least
    /// `expected-contact-point-nr` contact points are discovered and every one reports
    /// the same contact-point set as this node sees and has ever seen. Default true.
    pub contact_point_agreement: bool,
    /// muster: how many agents will start together (a StatefulSet's replicas; the
    /// operator sets it). Contact-point agreement only applies to a set of at least this
    /// many, which is what makes it safe when discovery views disagree: two disjoint
    /// sets of this size cannot both exist. Unset: no agreement, Akka's stable margin
    /// only. Default unset.
    pub expected_contact_point_nr: Option<usize>,
}

impl Default for BootstrapSettings {
    fn default() -> Self {
        Self {
            new_cluster_enabled: true,
            new_cluster_enabled_file: None,
            formation_lease: None,
            service_name: None,
            service_namespace: None,
            discovery_method: DiscoveryMethod::KubernetesApi,
            port_name: String::new(),
            protocol: Protocol::Tcp,
            stable_margin: Duration::from_secs(5),
            interval: Duration::from_secs(1),
            exponential_backoff_random_factor: 0.2,
            exponential_backoff_max: Duration::from_secs(15),
            required_contact_point_nr: 2,
            resolve_timeout: Duration::from_secs(3),
            contact_with_all_contact_points: true,
            fallback_port: None,
            filter_on_fallback_port: true,
            probing_failure_timeout: Duration::from_secs(3),
            probe_interval: Duration::from_secs(1),
            probe_interval_jitter: 0.2,
            contact_point_agreement: true,
            expected_contact_point_nr: None,
        }
    }
}

/// `discovery:` — settings of each discovery method.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DiscoverySettings {
    pub config: ConfigDiscoverySettings,
    pub dns: DnsDiscoverySettings,
    pub kubernetes_api: KubernetesDiscoverySettings,
    pub aggregate: AggregateDiscoverySettings,
}

/// `discovery.config:` — a static list (Akka's config discovery).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigDiscoverySettings {
    /// Contact points as `host:port` or `host` (then `fallback-port`); hosts may be names.
    pub endpoints: Vec<String>,
}

/// `discovery.dns:` — DNS lookups with hickory-resolver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DnsDiscoverySettings {
    /// Name server as `ip` or `ip:port`. Default: from `/etc/resolv.conf`.
    pub nameserver: Option<String>,
    /// Cluster DNS domain. Default `cluster.local`.
    pub cluster_domain: String,
}

impl Default for DnsDiscoverySettings {
    fn default() -> Self {
        Self {
            nameserver: None,
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// `discovery.kubernetes-api:` — pods listed from the API server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesDiscoverySettings {
    /// Label selector of the pods; `%s` is replaced by `bootstrap.service-name`.
    /// Default `app=%s`.
    pub pod_label_selector: String,
    /// Namespace to list pods in. Default: `bootstrap.service-namespace`, `POD_NAMESPACE`,
    /// then the file at `pod-namespace-path`.
    pub pod_namespace: Option<String>,
    /// File with the pod's namespace. Default
    /// `/var/run/secrets/kubernetes.io/serviceaccount/namespace`.
    pub pod_namespace_path: PathBuf,
    /// Name of the agent's container: pods where it is waiting (crash-looping, pulling)
    /// are skipped. Default: none (no filter).
    pub container_name: Option<String>,
}

impl Default for KubernetesDiscoverySettings {
    fn default() -> Self {
        Self {
            pod_label_selector: "app=%s".to_owned(),
            pod_namespace: None,
            pod_namespace_path: PathBuf::from(
                "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
            ),
            container_name: None,
        }
    }
}

/// `discovery.aggregate:` — several methods in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AggregateDiscoverySettings {
    /// Methods tried in order; the first with a non-empty answer wins.
    /// Default `[kubernetes-api, dns]`.
    pub discovery_methods: Vec<DiscoveryMethod>,
}

impl Default for AggregateDiscoverySettings {
    fn default() -> Self {
        Self {
            discovery_methods: vec![DiscoveryMethod::KubernetesApi, DiscoveryMethod::Dns],
        }
    }
}
