//! The task that owns the membership core. Everything else talks to it by message:
//! the transport hands it envelopes, bootstrap tells it to join or form, and it
//! publishes a [`ClusterView`] after every new version or phase for the management API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::core::{JoinError, MarkError, MembershipCore, Outgoing, Phase};
use super::events::EventHub;
use super::gossip::Gossip;
use crate::base::address::{NodeAddress, UniqueAddress};
use crate::base::member::MemberStatus;
use crate::base::rng::Rng;
use crate::base::time::{Clock, Time};
use crate::lease::KubernetesLease;
use crate::membership::messages::Envelope;
use crate::metrics::{Metrics, StatusLabel};
use crate::transport::Wire;
use crate::transport::tcp::Outbound;

/// Requests to the membership actor.
#[derive(Debug)]
pub enum Command {
    /// Join through these seed nodes (bootstrap decided).
    Join(Vec<NodeAddress>),
    /// Form a new cluster (bootstrap decided).
    Form,
    /// Explicit seed nodes from the configuration.
    JoinConfiguredSeeds(Vec<NodeAddress>),
    /// Leave the cluster gracefully (SIGTERM).
    Leave,
    /// `POST /cluster/members`: join the member at this address, or form a new
    /// cluster if it is this node's own (management API).
    JoinAsked {
        address: NodeAddress,
        reply: tokio::sync::oneshot::Sender<Result<(), JoinError>>,
    },
    /// `PUT /cluster operation=prepare-for-full-shutdown` (management API).
    PrepareForFullShutdown {
        reply: tokio::sync::oneshot::Sender<Result<(), MarkError>>,
    },
    /// The operator says the pod of the member at this address is gone (management
    /// API): whether there is such a member.
    PodGone {
        address: NodeAddress,
        uid: Option<u64>,
        reply: tokio::sync::oneshot::Sender<Result<bool, MarkError>>,
    },
    /// An operator marks a member Leaving or Down (management API).
    Mark {
        address: NodeAddress,
        status: MemberStatus,
        reply: tokio::sync::oneshot::Sender<Result<(), MarkError>>,
    },
}

/// What the rest of the agent may know about membership, published after each new version
/// of the state or phase (new seen marks alone are not published, see `same_as`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub self_node: UniqueAddress,
    pub phase: ViewPhase,
    /// This node's state of the cluster (empty until it is a member).
    pub gossip: Gossip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewPhase {
    Idle,
    Joining,
    Member,
    /// Downed or removed by the cluster: the agent must stop.
    Downed,
    /// Left gracefully (Exiting): the agent may stop.
    Left,
    /// Joining kept failing: the agent must stop.
    JoinFailed,
}

impl ViewPhase {
    fn of(phase: &Phase) -> Self {
        match phase {
            Phase::Idle => Self::Idle,
            Phase::Joining { .. } => Self::Joining,
            Phase::Member => Self::Member,
            Phase::Downed => Self::Downed,
            Phase::Left => Self::Left,
            Phase::JoinFailed => Self::JoinFailed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Joining => "joining",
            Self::Member => "member",
            Self::Downed => "downed",
            Self::Left => "left",
            Self::JoinFailed => "join-failed",
        }
    }
}

impl ClusterView {
    pub fn self_status(&self) -> Option<MemberStatus> {
        self.gossip.member(&self.self_node).map(|m| m.status)
    }

    pub fn is_member(&self) -> bool {
        self.phase == ViewPhase::Member
    }

    /// Whether this view still shows `core`'s state. Every change of the cluster state
    /// but a new seen mark makes a new version (that is how gossip knows what to
    /// send), so phase and version decide it without comparing members. New seen marks
    /// alone are not published: nothing outside the actor reads them (the convergence
    /// gauge is kept by the actor), and the leader of a forming cluster gets one per
    /// member per version — rebuilding the view for each (a copy of the whole state
    /// and an event diff) was most of what kept it busy at 100 members (issue 16).
    fn same_as(&self, core: &MembershipCore) -> bool {
        self.phase == ViewPhase::of(core.phase())
            && self.gossip.version() == core.gossip().version()
    }

    fn of(core: &MembershipCore) -> Self {
        Self {
            self_node: core.me().clone(),
            phase: ViewPhase::of(core.phase()),
            gossip: core.gossip().clone(),
        }
    }
}

/// The actor's parts: the core and the channels around it.
#[derive(Debug)]
pub struct MembershipActor {
    pub core: MembershipCore,
    pub clock: Clock,
    pub rng: Rng,
    /// Heartbeat answers with their arrival time ([`super::responder`]), served
    /// before anything else.
    pub urgent: mpsc::Receiver<(Envelope, Time)>,
    pub inbound: mpsc::Receiver<Envelope>,
    pub commands: mpsc::Receiver<Command>,
    pub outbound: Outbound<Envelope>,
    /// Heartbeats go out on connections of their own, not behind state messages.
    pub urgent_outbound: Outbound<Envelope>,
    pub view: watch::Sender<Arc<ClusterView>>,
    /// When the actor last started to handle something (milliseconds of its clock):
    /// the heartbeat responder stops answering for an actor stuck far longer than any
    /// message takes.
    pub progress: Arc<AtomicU64>,
    pub metrics: Metrics,
    /// Every change becomes cluster events here (this task sees every state).
    pub events: Arc<EventHub>,
    /// lease-majority's Lease; `None` with other strategies.
    pub lease: Option<KubernetesLease>,
}

/// Heartbeat answers handled one after another at most, before the actor looks at its
/// other inputs.
const URGENT_IN_A_ROW: u32 = 32;

/// How long one attempt to acquire the Lease may take; a timeout counts as not held.
const LEASE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the actor until an input channel closes.
pub async fn run(actor: MembershipActor) {
    let MembershipActor {
        mut core,
        clock,
        mut rng,
        mut urgent,
        mut inbound,
        mut commands,
        mut outbound,
        mut urgent_outbound,
        view,
        progress,
        metrics,
        events,
        lease,
    } = actor;
    let (lease_tx, mut lease_rx) = mpsc::channel::<bool>(4);
    let mut published = Arc::new(ClusterView::of(&core));
    view.send_replace(published.clone());
    let mut phi_peers = Vec::new();
    let mut urgent_in_a_row = 0;
    // The seen marks the convergence gauge was last computed from.
    let mut gauged_seen = core.gossip().seen().len();
    loop {
        progress.store(clock.now().as_millis() as u64, Ordering::Relaxed);
        let wake = core.next_wakeup().map(|t| clock.instant(t));
        let served_urgent = urgent_in_a_row;
        let out: Vec<Outgoing> = tokio::select! {
            // In this order: heartbeat answers (timed on arrival) before the backlog of
            // state messages an overloaded node may have, and timers and commands (a
            // leave) however many of those wait.
            biased;
            // (The responder ends only when the agent stops, or with the process.) At
            // most URGENT_IN_A_ROW at a time: a flood of answers must not hold off
            // everything else.
            Some((env, arrived)) = urgent.recv(), if urgent_in_a_row < URGENT_IN_A_ROW => {
                urgent_in_a_row += 1;
                receive(&mut core, arrived.min(clock.now()), &mut rng, &metrics, env)
            }
            _ = crate::base::time::sleep_until(wake) => {
                let now = clock.now();
                let out = core.tick(now, &mut rng);
                let phis: Vec<(String, f64)> = core
                    .phis(now)
                    .into_iter()
                    .map(|(peer, phi)| (peer.address.to_string(), phi))
                    .collect();
                metrics.set_phi(&phis, &mut phi_peers);
                out
            }
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { break };
                let now = clock.now();
                match cmd {
                    Command::Join(seeds) => {
                        info!(seeds = ?seeds.iter().map(ToString::to_string).collect::<Vec<_>>(), "joining cluster");
                        core.join(now, seeds)
                    }
                    Command::Form => {
                        info!(node = %core.me(), "forming a new cluster");
                        core.form(now)
                    }
                    Command::JoinConfiguredSeeds(seeds) => core.join_configured_seeds(now, &seeds),
                    Command::Leave => {
                        info!(node = %core.me(), "leaving the cluster");
                        core.leave(now, &mut rng)
                    }
                    Command::JoinAsked { address, reply } => {
                        info!(to = %address, "asked over the management API to join");
                        let (answer, out) = match core.join_asked(now, address) {
                            Ok(out) => (Ok(()), out),
                            Err(e) => (Err(e), Vec::new()),
                        };
                        let _ = reply.send(answer);
                        out
                    }
                    Command::PrepareForFullShutdown { reply } => {
                        warn!("asked over the management API to prepare the cluster for a full shutdown");
                        let (answer, out) = match core.prepare_for_full_shutdown(now, &mut rng) {
                            Ok(out) => (Ok(()), out),
                            Err(e) => (Err(e), Vec::new()),
                        };
                        let _ = reply.send(answer);
                        out
                    }
                    Command::PodGone { address, uid, reply } => {
                        let (answer, out) = match core.pod_gone(now, &mut rng, &address, uid) {
                            Ok((found, out)) => (Ok(found), out),
                            Err(e) => (Err(e), Vec::new()),
                        };
                        if answer == Ok(true) {
                            info!(member = %address, "told that the member's pod is gone");
                        }
                        let _ = reply.send(answer);
                        out
                    }
                    Command::Mark { address, status, reply } => {
                        info!(member = %address, status = status.as_str(), "asked to mark a member");
                        let result = core.mark(now, &mut rng, &address, status);
                        let (answer, out) = match result {
                            Ok(out) => (Ok(()), out),
                            Err(e) => (Err(e), Vec::new()),
                        };
                        let _ = reply.send(answer);
                        out
                    }
                }
            }
            Some(held) = lease_rx.recv() => core.lease_outcome(clock.now(), &mut rng, held),
            env = inbound.recv() => {
                let Some(env) = env else { break };
                receive(&mut core, clock.now(), &mut rng, &metrics, env)
            }
        };
        if urgent_in_a_row == served_urgent {
            urgent_in_a_row = 0;
        }
        if core.take_lease_request() {
            start_lease_attempt(lease.clone(), lease_tx.clone());
        }
        if let Some((reason, downed)) = core.take_downing() {
            warn!(
                reason,
                members = ?downed.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "split brain resolver: downing {} member(s)",
                downed.len()
            );
        }
        // Most messages change nothing this node publishes (a heartbeat, a stale
        // mark): the view is rebuilt, compared and published only when it changed.
        let changed = (!published.same_as(&core)).then(|| ClusterView::of(&core));
        if let Some(now_view) = &changed {
            // A removed incarnation's connection may be stale (it vanished behind a
            // partition, or its address now belongs to a new process): forget it
            // before sending, so that messages to the address go out on a new
            // connection.
            for gone in published
                .gossip
                .members()
                .filter(|m| !now_view.gossip.has_member(&m.node))
            {
                outbound.forget(gone.node.address.socket_addr());
                urgent_outbound.forget(gone.node.address.socket_addr());
            }
        }
        // Queued before the view is published: an agent that sees itself Downed or
        // Left in the view waits for what is in flight (its last words) and exits.
        for o in out {
            if o.envelope.urgent() {
                urgent_outbound.send(o.to.socket_addr(), o.envelope);
            } else {
                outbound.send(o.to.socket_addr(), o.envelope);
            }
        }
        if let Some(now_view) = changed
            && now_view != *published
        {
            events.publish(&now_view.gossip);
            if matches!(
                now_view.phase,
                ViewPhase::Left | ViewPhase::Downed | ViewPhase::JoinFailed
            ) {
                events.shutting_down();
            }
            report(&published, &now_view, &metrics, clock);
            published = Arc::new(now_view);
            view.send_replace(published.clone());
        } else if core.gossip().seen().len() != gauged_seen {
            // Within one version seen marks only grow, so their number tells a new one.
            metrics
                .convergence
                .set(i64::from(core.gossip().convergence()));
        }
        gauged_seen = core.gossip().seen().len();
    }
    warn!("membership actor stopped");
}

/// Hands one received message to the core.
fn receive(
    core: &mut MembershipCore,
    now: Time,
    rng: &mut Rng,
    metrics: &Metrics,
    env: Envelope,
) -> Vec<Outgoing> {
    // The sender is kept for the log only when debug logging is on: this runs for
    // every message.
    let origin =
        tracing::enabled!(tracing::Level::DEBUG).then(|| (env.from.clone(), env.message.kind()));
    match core.receive(now, rng, env) {
        Ok(out) => out,
        Err(d) => {
            if let Some((from, kind)) = origin {
                debug!(%from, kind, reason = d.as_str(), "dropped a cluster message");
            }
            metrics.dropped(d.as_str());
            Vec::new()
        }
    }
}

/// Tries once for the Lease in the background and reports whether this side holds it
/// (an error or a timeout: not held, so this side downs itself).
fn start_lease_attempt(lease: Option<KubernetesLease>, out: mpsc::Sender<bool>) {
    tokio::spawn(async move {
        let held = match &lease {
            None => {
                warn!("lease-majority asked for the Lease, but none is configured");
                false
            }
            Some(l) => match tokio::time::timeout(LEASE_ATTEMPT_TIMEOUT, l.try_acquire()).await {
                Ok(Ok(held)) => {
                    info!(
                        lease = l.name(),
                        held, "split brain resolver: lease acquisition"
                    );
                    held
                }
                Ok(Err(e)) => {
                    warn!(error = %e, "split brain resolver: cannot acquire the lease; this side downs itself");
                    false
                }
                Err(_) => {
                    warn!(timeout = ?LEASE_ATTEMPT_TIMEOUT, "split brain resolver: the lease did not answer in time; this side downs itself");
                    false
                }
            },
        };
        let _ = out.send(held).await;
    });
}

/// Logs member changes and updates gauges.
fn report(before: &ClusterView, after: &ClusterView, metrics: &Metrics, clock: Clock) {
    if !before.is_member() && after.is_member() {
        metrics.joined_seconds.set(clock.now().as_secs_f64());
        info!(node = %after.self_node, after_ms = clock.now().as_millis() as u64, "this node is now a cluster member");
    }
    for m in after.gossip.members() {
        let old = before.gossip.member(&m.node).map(|o| o.status);
        if old != Some(m.status) {
            info!(member = %m.node, status = m.status.as_str(), up_number = m.up_number, "member status");
        }
    }
    // Removed members are not kept in a state.
    for status in MemberStatus::ALL
        .into_iter()
        .filter(|s| *s != MemberStatus::Removed)
    {
        let n = after
            .gossip
            .members()
            .filter(|m| m.status == status)
            .count();
        metrics
            .members
            .get_or_create(&StatusLabel {
                status: status.as_str(),
            })
            .set(n as i64);
    }
    metrics
        .is_leader
        .set(i64::from(after.gossip.leader() == Some(&after.self_node)));
    let unreachable = after.gossip.reachability().unreachable_members();
    let was_unreachable = before.gossip.reachability().unreachable_members();
    for m in unreachable.difference(&was_unreachable) {
        let observers: Vec<String> = after
            .gossip
            .reachability()
            .observers_of(m)
            .iter()
            .map(ToString::to_string)
            .collect();
        info!(member = %m, ?observers, "member unreachable");
    }
    for m in was_unreachable.difference(&unreachable) {
        if after.gossip.has_member(m) {
            info!(member = %m, "member reachable again");
        }
    }
    metrics.unreachable.set(
        after
            .gossip
            .members()
            .filter(|m| unreachable.contains(&m.node))
            .count() as i64,
    );
    metrics
        .convergence
        .set(i64::from(after.gossip.convergence()));
    for m in after
        .gossip
        .members()
        .filter(|m| m.status == MemberStatus::Down)
    {
        if before.gossip.member(&m.node).map(|o| o.status) != Some(MemberStatus::Down) {
            metrics.downed.inc();
        }
    }
}
