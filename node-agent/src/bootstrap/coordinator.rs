//! The bootstrap coordinator: the task that owns the [`Bootstrap`] core and does its
//! I/O — lookups bounded by `resolve-timeout`, probes, and telling membership to join or
//! form. It stops probing once this node is a member, after one last round of probes
//! that tells waiting peers to look again (they probe back at once and find the seeds).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use super::decider::{Decision, ProbeAnswer, SelfIdentity};
use super::probe::{Probed, Prober};
use super::record::{FormationRecord, parse_flag};
use super::state::{Action, Bootstrap, BootstrapStatus, ClaimOutcome, Instruction};
use crate::api::ClientError;
use crate::base::address::{ContactPoint, NodeAddress};
use crate::base::rng::Rng;
use crate::base::time::{Clock, sleep_until};
use crate::discovery::{self, Discovery, Skipped};
use crate::membership::actor::{ClusterView, Command};
use crate::metrics::{Metrics, ResultLabel};

/// Port rules applied to every lookup (see [`discovery::contact_points`]).
#[derive(Debug, Clone)]
pub struct PortRules {
    pub fallback_port: u16,
    pub port_name_set: bool,
    pub filter_on_fallback_port: bool,
}

/// A request for the current status (from `/bootstrap/status`).
pub type StatusRequest = oneshot::Sender<BootstrapStatus>;

/// Channels and parts the coordinator works with.
#[derive(Debug)]
pub struct Coordinator {
    pub core: Bootstrap,
    pub clock: Clock,
    pub rng: Rng,
    pub discovery: Arc<dyn Discovery>,
    pub resolve_timeout: Duration,
    pub ports: PortRules,
    pub prober: Prober,
    pub membership: mpsc::Sender<Command>,
    pub cluster: watch::Receiver<Arc<ClusterView>>,
    pub nudges: mpsc::Receiver<ContactPoint>,
    pub status_requests: mpsc::Receiver<StatusRequest>,
    /// Every contact point discovered so far, reported in our probe answers.
    pub ever_seen: watch::Sender<Arc<BTreeSet<ContactPoint>>>,
    pub metrics: Metrics,
    /// `bootstrap.new-cluster-enabled-file`, followed every second.
    pub new_cluster_enabled_file: Option<PathBuf>,
    /// `bootstrap.formation-lease`: claimed before forming (the core must have been
    /// built [`Bootstrap::with_formation_record`]).
    pub formation_record: Option<FormationRecord>,
}

/// How often `bootstrap.new-cluster-enabled-file` is read.
const FLAG_FILE_INTERVAL: Duration = Duration::from_secs(1);

type LookupResult = Result<(Vec<ContactPoint>, Vec<Skipped>), String>;
type ProbeResult = (ContactPoint, Result<Probed, ClientError>);

impl Coordinator {
    pub async fn run(mut self) {
        let span = info_span!("bootstrap", method = self.discovery.method());
        async move {
            let mut lookups: JoinSet<LookupResult> = JoinSet::new();
            let mut probes: JoinSet<ProbeResult> = JoinSet::new();
            let mut claims: JoinSet<ClaimOutcome> = JoinSet::new();
            let mut last_reason = String::new();
            let mut flag_file = tokio::time::interval(FLAG_FILE_INTERVAL);
            flag_file.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut flag_error = String::new();
            // Before the first decision, so a file saying false is never too late.
            self.follow_flag_file(&mut flag_error);
            loop {
                let wake = self
                    .core
                    .next_wakeup(self.clock.now())
                    .map(|t| self.clock.instant(t));
                tokio::select! {
                    Some(r) = lookups.join_next(), if !lookups.is_empty() => {
                        let result = r.unwrap_or_else(|e| Err(format!("lookup task failed: {e}")));
                        self.on_lookup(result);
                    }
                    Some(r) = probes.join_next(), if !probes.is_empty() => {
                        if let Ok((cp, result)) = r {
                            self.on_probe(&cp, result);
                        }
                    }
                    Some(r) = claims.join_next(), if !claims.is_empty() => {
                        let outcome = r.unwrap_or_else(|e| ClaimOutcome::Failed(format!("claim task failed: {e}")));
                        self.on_claim(outcome);
                    }
                    Some(cp) = self.nudges.recv() => self.core.nudge(self.clock.now(), &cp),
                    Some(reply) = self.status_requests.recv() => {
                        let _ = reply.send(self.core.status(self.clock.now()));
                    }
                    changed = self.cluster.changed(), if !self.core.is_finished() => {
                        if changed.is_err() {
                            return;
                        }
                        if self.cluster.borrow().is_member() {
                            self.finish(&mut probes);
                        }
                    }
                    _ = flag_file.tick(), if self.new_cluster_enabled_file.is_some() => {
                        self.follow_flag_file(&mut flag_error);
                    }
                    _ = sleep_until(wake) => {}
                }
                if self.core.is_finished() {
                    continue;
                }
                let now = self.clock.now();
                for action in self.core.poll(now) {
                    match action {
                        Action::Lookup => {
                            let d = self.discovery.clone();
                            let timeout = self.resolve_timeout;
                            let ports = self.ports.clone();
                            lookups.spawn(async move {
                                match tokio::time::timeout(timeout, d.lookup()).await {
                                    Ok(Ok(found)) => Ok(discovery::contact_points(
                                        &found,
                                        ports.fallback_port,
                                        ports.port_name_set,
                                        ports.filter_on_fallback_port,
                                    )),
                                    Ok(Err(e)) => Err(e.to_string()),
                                    Err(_) => {
                                        Err(discovery::DiscoveryError::Timeout(timeout).to_string())
                                    }
                                }
                            });
                        }
                        Action::Probe(cp) => {
                            let prober = self.prober.clone();
                            probes.spawn(async move {
                                let r = prober.probe(&cp).await;
                                (cp, r)
                            });
                        }
                        Action::ClaimFormation { new_cluster_enabled } => match self.formation_record.clone() {
                            Some(record) => {
                                // Said once; looks again (every 10 s) at debug level.
                                if new_cluster_enabled && self.core.last_claim().is_none() {
                                    info!(lease = %record.describe(), "this node may form the cluster: claiming the formation record");
                                } else {
                                    debug!(lease = %record.describe(), new_cluster_enabled, "looking whether the formation record allows forming");
                                }
                                claims.spawn(async move { record.claim(new_cluster_enabled).await });
                            }
                            None => self.core.on_claim(
                                now,
                                ClaimOutcome::Failed("no Kubernetes client for bootstrap.formation-lease".into()),
                            ),
                        },
                    }
                }
                match self.core.instruction(now) {
                    Some(Instruction::Join(seeds)) => {
                        let _ = self.membership.send(Command::Join(seeds)).await;
                    }
                    Some(Instruction::Form) => {
                        info!(
                            by_agreement = matches!(
                                self.core.decide(now),
                                Decision::Form { by_agreement: true }
                            ),
                            "this node is the lowest contact point: forming the cluster"
                        );
                        let _ = self.membership.send(Command::Form).await;
                    }
                    None => {
                        if let Decision::Wait(w) = self.core.decide(now) {
                            let reason = w.explain();
                            if reason != last_reason {
                                debug!(%reason, "waiting");
                                last_reason = reason;
                            }
                        }
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Applies `bootstrap.new-cluster-enabled-file` when its value changed; a file that
    /// cannot be read or parsed keeps the last value (warned about once per error).
    fn follow_flag_file(&mut self, last_error: &mut String) {
        let Some(path) = &self.new_cluster_enabled_file else {
            return;
        };
        let read = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| parse_flag(&t));
        match read {
            Ok(on) => {
                last_error.clear();
                if on != self.core.new_cluster_enabled() {
                    info!(file = %path.display(), new_cluster_enabled = on, "new-cluster-enabled changed");
                    self.core.set_new_cluster_enabled(on);
                }
            }
            Err(e) if e != *last_error => {
                warn!(file = %path.display(), error = %e, keeps = self.core.new_cluster_enabled(), "cannot read bootstrap.new-cluster-enabled-file; keeping the last value");
                *last_error = e;
            }
            Err(_) => {}
        }
    }

    fn on_claim(&mut self, outcome: ClaimOutcome) {
        let lease = self
            .formation_record
            .as_ref()
            .map(FormationRecord::describe)
            .unwrap_or_default();
        // Said once while it stays the same; retries are counted in the metric.
        let again = self.core.last_claim() == Some(&outcome);
        let label = match &outcome {
            ClaimOutcome::Claimed => {
                info!(%lease, "claimed the formation record");
                "claimed"
            }
            ClaimOutcome::HeldBy(holder) => {
                if !again {
                    warn!(%lease, %holder, "the formation record is held: a cluster was formed before (or forming is locked), so this node does not form one");
                }
                "held"
            }
            ClaimOutcome::Disabled { from_api } => {
                if !again && *from_api {
                    info!(%lease, "the ConfigMap the formation record names says forming is off (new-cluster-enabled: false), so this node does not form one");
                }
                "disabled"
            }
            ClaimOutcome::Failed(error) => {
                if !again {
                    warn!(%lease, %error, "cannot claim the formation record; not forming yet (retried with back-off)");
                }
                "error"
            }
        };
        self.metrics
            .formation_claims
            .get_or_create(&ResultLabel { result: label })
            .inc();
        self.core.on_claim(self.clock.now(), outcome);
    }

    fn on_lookup(&mut self, result: LookupResult) {
        let now = self.clock.now();
        match &result {
            Ok((points, skipped)) => {
                self.metrics
                    .lookups
                    .get_or_create(&ResultLabel { result: "ok" })
                    .inc();
                self.metrics.skipped_targets.inc_by(skipped.len() as u64);
                for s in skipped {
                    debug!(target = %s.target, reason = %s.reason, "discovery skipped a target");
                }
                if points.iter().collect::<BTreeSet<_>>() != self.core.discovered().iter().collect()
                {
                    info!(contact_points = ?points.iter().map(ToString::to_string).collect::<Vec<_>>(), "discovered contact points");
                }
            }
            Err(e) => {
                self.metrics
                    .lookups
                    .get_or_create(&ResultLabel { result: "error" })
                    .inc();
                warn!(error = %e, "discovery lookup failed");
            }
        }
        self.core.on_lookup(now, &mut self.rng, result);
        if self.core.ever_seen().len() != self.ever_seen.borrow().len() {
            self.ever_seen
                .send_replace(Arc::new(self.core.ever_seen().clone()));
        }
    }

    fn on_probe(&mut self, cp: &ContactPoint, result: Result<Probed, ClientError>) {
        let now = self.clock.now();
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => e.metric_label(),
        };
        self.metrics
            .probes
            .get_or_create(&ResultLabel { result: label })
            .inc();
        let result = result
            .map(|p| ProbeAnswer {
                at: now,
                answer: p.answer,
                from_self: p.from_self,
            })
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            debug!(contact_point = %cp, error = %e, "probe failed");
        }
        self.core.on_probe(now, &mut self.rng, cp, result);
    }

    /// Joined: stop probing; nudge the others once (see [`Bootstrap::finish`]).
    fn finish(&mut self, probes: &mut JoinSet<ProbeResult>) {
        probes.abort_all();
        for cp in self.core.finish() {
            let prober = self.prober.clone();
            tokio::spawn(async move {
                let _ = prober.probe(&cp).await;
            });
        }
        info!("bootstrap finished: this node is a member");
    }
}

/// The management address as a contact point and the node address: who "self" is.
pub fn identity(management: ContactPoint, address: NodeAddress) -> SelfIdentity {
    SelfIdentity {
        management,
        address,
    }
}

#[cfg(test)]
mod flag_tests {
    use super::parse_flag;

    #[test]
    fn a_flag_file_says_true_or_false() {
        for (text, want) in [
            ("true\n", true),
            (" on ", true),
            ("false", false),
            ("off\n", false),
        ] {
            assert_eq!(parse_flag(text), Ok(want), "{text:?}");
        }
        for text in ["", "yes", "False", "1"] {
            assert!(parse_flag(text).is_err(), "{text:?}");
        }
    }
}
