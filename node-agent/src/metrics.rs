//! Prometheus metrics of the agent (`GET /metrics`). Names, all prefixed `muster_`:
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `muster_transport_messages_received_total` | `kind` | cluster messages accepted |
//! | `muster_transport_messages_sent_total` | `kind` | cluster messages written |
//! | `muster_transport_messages_dropped_total` | `reason` | messages dropped: `unsigned`, `bad_signature`, `malformed`, `oversized`, `wrong_recipient`, `foreign_gossip`, `not_now`, `queue_full`, `send_failed` |
//! | `muster_bootstrap_lookups_total` | `result` | discovery lookups: `ok`, `error` |
//! | `muster_bootstrap_skipped_targets_total` | | discovered targets left out (unresolvable, terminating, …) |
//! | `muster_bootstrap_probes_total` | `result` | seed-node probes: `ok`, `error`, `malformed` |
//! | `muster_bootstrap_joined_seconds` | | seconds from start until this node became a member |
//! | `muster_cluster_members` | `status` | members in this node's view, by status |
//! | `muster_cluster_is_leader` | | 1 if this node is the leader |

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: &'static str,
}

/// Every metric, cloned cheaply into the tasks that update them.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub messages_received: Family<KindLabel, Counter>,
    pub messages_sent: Family<KindLabel, Counter>,
    pub messages_dropped: Family<ReasonLabel, Counter>,
    pub lookups: Family<ResultLabel, Counter>,
    pub skipped_targets: Counter,
    pub probes: Family<ResultLabel, Counter>,
    pub joined_seconds: Gauge<f64, AtomicU64>,
    pub members: Family<StatusLabel, Gauge>,
    pub is_leader: Gauge,
    pub unreachable: Gauge,
    pub convergence: Gauge,
    pub downed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("muster");
        let m = Self {
            registry: Arc::new(Registry::default()),
            messages_received: Family::default(),
            messages_sent: Family::default(),
            messages_dropped: Family::default(),
            lookups: Family::default(),
            skipped_targets: Counter::default(),
            probes: Family::default(),
            joined_seconds: Gauge::default(),
            members: Family::default(),
            is_leader: Gauge::default(),
            unreachable: Gauge::default(),
            convergence: Gauge::default(),
            downed: Counter::default(),
        };
        registry.register(
            "transport_messages_received",
            "Cluster messages accepted, by kind",
            m.messages_received.clone(),
        );
        registry.register(
            "transport_messages_sent",
            "Cluster messages written, by kind",
            m.messages_sent.clone(),
        );
        registry.register(
            "transport_messages_dropped",
            "Cluster messages dropped, by reason",
            m.messages_dropped.clone(),
        );
        registry.register(
            "bootstrap_lookups",
            "Discovery lookups, by result",
            m.lookups.clone(),
        );
        registry.register(
            "bootstrap_skipped_targets",
            "Discovered targets left out (unresolvable, terminating, not running)",
            m.skipped_targets.clone(),
        );
        registry.register(
            "bootstrap_probes",
            "Probes of contact points' seed nodes, by result",
            m.probes.clone(),
        );
        registry.register(
            "bootstrap_joined_seconds",
            "Seconds from start until this node became a cluster member",
            m.joined_seconds.clone(),
        );
        registry.register(
            "cluster_members",
            "Members in this node's view, by status",
            m.members.clone(),
        );
        registry.register(
            "cluster_is_leader",
            "1 if this node is the cluster leader",
            m.is_leader.clone(),
        );
        registry.register(
            "cluster_unreachable_members",
            "Members some observer cannot reach, in this node's view",
            m.unreachable.clone(),
        );
        registry.register(
            "cluster_convergence",
            "1 when every reachable member has seen the current state (members can move Up)",
            m.convergence.clone(),
        );
        registry.register(
            "cluster_members_downed",
            "Members this node saw become Down (split brain resolver or by hand)",
            m.downed.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..m
        }
    }

    pub fn dropped(&self, reason: &'static str) {
        self.messages_dropped
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn dropped_count(&self, reason: &'static str) -> u64 {
        self.messages_dropped
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
