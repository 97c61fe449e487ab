//! Prometheus metrics of the agent (`GET /metrics`), all prefixed `muster_`. Every name is
//! documented in README.md ("Metrics"); a test fails when one is missing there.

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
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

/// The setting that names a file.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FileLabel {
    pub file: &'static str,
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
    pub formation_claims: Family<ResultLabel, Counter>,
    pub joined_seconds: Gauge<f64, AtomicU64>,
    pub members: Family<StatusLabel, Gauge>,
    pub is_leader: Gauge,
    pub unreachable: Gauge,
    pub convergence: Gauge,
    pub downed: Counter,
    pub phi: Family<PeerLabel, Gauge<f64, AtomicU64>>,
    pub bootstrap_phase: Family<PhaseLabel, Gauge>,
    /// No series without TLS.
    pub tls_not_after: Family<FileLabel, Gauge>,
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
            formation_claims: Family::default(),
            joined_seconds: Gauge::default(),
            members: Family::default(),
            is_leader: Gauge::default(),
            unreachable: Gauge::default(),
            convergence: Gauge::default(),
            downed: Counter::default(),
            phi: Family::default(),
            bootstrap_phase: Family::default(),
            tls_not_after: Family::default(),
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
            "bootstrap_formation_claims",
            "Claims of the formation record (bootstrap.formation-lease), by result: claimed, held, disabled, error",
            m.formation_claims.clone(),
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
        registry.register(
            "failure_detector_phi",
            "Phi of each monitored member as of the last heartbeat round",
            m.phi.clone(),
        );
        registry.register(
            "bootstrap_phase",
            "1 for the current phase of /bootstrap/status, 0 for the others",
            m.bootstrap_phase.clone(),
        );
        registry.register(
            "tls_certificate_not_after_seconds",
            "When the agent's TLS certificate expires, in seconds since the Unix epoch (only with TLS)",
            m.tls_not_after.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// Sets `phase` to 1 and every other of `all` to 0.
    pub fn set_bootstrap_phase(&self, phase: &'static str, all: &[&'static str]) {
        for p in all {
            self.bootstrap_phase
                .get_or_create(&PhaseLabel { phase: p })
                .set(i64::from(*p == phase));
        }
    }

    /// Reports phi for exactly the `monitored` members (others' series are removed).
    pub fn set_phi(&self, monitored: &[(String, f64)], previous: &mut Vec<String>) {
        for gone in previous
            .iter()
            .filter(|p| !monitored.iter().any(|(m, _)| m == *p))
        {
            self.phi.remove(&PeerLabel { peer: gone.clone() });
        }
        for (peer, phi) in monitored {
            self.phi
                .get_or_create(&PeerLabel { peer: peer.clone() })
                .set(*phi);
        }
        *previous = monitored.iter().map(|(p, _)| p.clone()).collect();
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
        encode(&self.registry)
    }
}

/// The Prometheus text exposition of a registry.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The metric families of an exposition (`# TYPE` lines), and those of them that
/// `readme` does not name in backquotes — for the tests that keep the docs complete.
pub fn undocumented<'a>(text: &'a str, readme: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let missing = names
        .iter()
        .copied()
        .filter(|n| !readme.contains(&format!("`{n}")))
        .collect();
    (names, missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented_in_the_readme() {
        let readme = include_str!("../../README.md");
        let m = Metrics::new();
        // Families without a sample are not encoded: give each one.
        m.set_bootstrap_phase("joined", &["joined"]);
        let kind = KindLabel { kind: "gossip" };
        m.messages_received.get_or_create(&kind).inc();
        m.messages_sent.get_or_create(&kind).inc();
        m.dropped("malformed");
        let result = ResultLabel { result: "ok" };
        m.lookups.get_or_create(&result).inc();
        m.probes.get_or_create(&result).inc();
        m.formation_claims.get_or_create(&result).inc();
        m.members
            .get_or_create(&StatusLabel { status: "Up" })
            .set(1);
        m.set_phi(
            &[("muster://a@10.0.0.1:2552".to_owned(), 0.5)],
            &mut Vec::new(),
        );
        let text = m.encode();
        let (names, missing) = undocumented(&text, readme);
        assert_eq!(names.len(), 15, "{text}");
        assert!(
            missing.is_empty(),
            "not in README.md's metrics table: {missing:?}"
        );
    }
}
