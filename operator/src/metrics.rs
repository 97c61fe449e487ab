//! Prometheus metrics of the operator (`GET /metrics` on its metrics port), all prefixed
//! `muster_operator_`; every name is in README.md ("Operator metrics").

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use node_agent::metrics::ReasonLabel;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    pub step: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    pub verb: String,
}

/// Every metric; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub reconciles: Counter,
    pub failures: Family<ReasonLabel, Counter>,
    pub duration: Histogram,
    pub rollout_steps: Family<StepLabel, Counter>,
    pub api_requests: Family<VerbLabel, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("muster_operator");
        let m = Self {
            registry: Arc::new(Registry::default()),
            reconciles: Counter::default(),
            failures: Family::default(),
            // 1 ms … ~16 s.
            duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            rollout_steps: Family::default(),
            api_requests: Family::default(),
            leader: Gauge::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles of ClusterSpecs, finished or failed",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Failed reconciles, by reason",
            m.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            m.duration.clone(),
        );
        registry.register(
            "rollout_steps",
            "Steps taken by rollouts and scale-downs: leave (a member asked to leave), delete (a pod deleted), handover_wait (a stop held by the application's handover gate), prepare_full_shutdown, pod_gone",
            m.rollout_steps.clone(),
        );
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API server, by HTTP method",
            m.api_requests.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and reconciles",
            m.leader.clone(),
        );
        Self {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// One reconcile ended (`failure`: its error's reason).
    pub fn reconciled(&self, took: Duration, failure: Option<&'static str>) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
        if let Some(reason) = failure {
            self.failures.get_or_create(&ReasonLabel { reason }).inc();
        }
    }

    pub fn step(&self, step: &'static str) {
        self.rollout_steps.get_or_create(&StepLabel { step }).inc();
    }

    pub fn api_request(&self, method: &http::Method) {
        self.api_requests
            .get_or_create(&VerbLabel {
                verb: method.as_str().to_owned(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        node_agent::metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_documented_in_the_readme() {
        let readme = include_str!("../../README.md");
        let m = Metrics::new();
        m.reconciled(Duration::from_millis(3), Some("kube"));
        m.step("leave");
        m.api_request(&http::Method::GET);
        m.leader.set(1);
        let text = m.encode();
        let (names, missing) = node_agent::metrics::undocumented(&text, readme);
        assert_eq!(names.len(), 6, "{text}");
        assert!(
            missing.is_empty(),
            "not in README.md's operator metrics table: {missing:?}"
        );
    }
}
