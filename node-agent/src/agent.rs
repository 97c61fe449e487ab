//! [`Agent`]: the node agent assembled — transport, membership actor, bootstrap
//! coordinator and management server — for the `muster-agent` binary or as a library.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::base::address::{ContactPoint, UniqueAddress};
use crate::base::rng::Rng;
use crate::base::secret::ClusterKey;
use crate::base::time::Clock;
use crate::base::{ReadError, read_capped};
use crate::bootstrap::coordinator::{self, Coordinator, PortRules};
use crate::bootstrap::decider::DeciderSettings;
use crate::bootstrap::probe::{Prober, SelfProbes};
use crate::bootstrap::record::FormationRecord;
use crate::bootstrap::state::{Bootstrap, Schedule};
use crate::config::{ActiveStrategy, AgentConfig};
use crate::discovery::{self, DiscoveryError};
use crate::handover::HandoverGate;
use crate::lease::{KubernetesLease, LeaseError};
use crate::management::{self, AppState};
use crate::membership::actor::{self, ClusterView, Command, ViewPhase};
use crate::membership::core::{MembershipCore, MembershipSettings};
use crate::membership::events::{EventHub, Subscription};
use crate::membership::member::MemberInfo;
use crate::membership::responder;
use crate::metrics::Metrics;
use crate::tls::Tls;
use crate::transport::Inbound;
use crate::transport::tcp::{self, InFlight, Outbound};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "cannot listen on {what} {addr}: {source} (another process on this address? change {key})"
    )]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        key: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("cannot set up lease-majority: {0}")]
    Lease(#[from] LeaseError),
    #[error("cannot set up the formation record: {0}")]
    FormationRecord(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// A running agent. Dropping it stops every task.
#[derive(Debug)]
pub struct Agent {
    node: UniqueAddress,
    management_addr: SocketAddr,
    cluster_addr: SocketAddr,
    cluster: watch::Receiver<Arc<ClusterView>>,
    commands: mpsc::Sender<Command>,
    events: Arc<EventHub>,
    metrics: Metrics,
    in_flight: InFlight,
    /// The slots of `/cluster/events` streams: all free once every stream has ended.
    event_streams: Arc<tokio::sync::Semaphore>,
    /// The application's handover gate.
    handover: HandoverGate,
    tasks: Tasks,
}

/// Cluster events kept for subscribers that reconnect (`Last-Event-ID`).
pub const EVENT_LOG_CAPACITY: usize = 4096;
/// Received cluster messages waiting for the membership actor; more are dropped (gossip
/// repairs what is lost).
const INBOUND_QUEUE: usize = 1024;
/// Received heartbeats and their answers waiting for it: a node monitors and is
/// monitored by about 9 members each second, so this is many seconds' worth.
const URGENT_QUEUE: usize = 256;

async fn bind(
    addr: SocketAddr,
    what: &'static str,
    key: &'static str,
) -> Result<TcpListener, AgentError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AgentError::Bind {
            what,
            addr,
            key,
            source,
        })
}

/// The Lease of the lease-majority resolver, when that is the strategy.
async fn lease_majority(
    config: &AgentConfig,
    node: &UniqueAddress,
) -> Result<Option<KubernetesLease>, AgentError> {
    let sbr = &config.settings.cluster.split_brain_resolver;
    if sbr.active_strategy != ActiveStrategy::LeaseMajority {
        return Ok(None);
    }
    let l = &sbr.lease_majority;
    let name = if l.lease_name.is_empty() {
        format!("{}-muster-sbr", config.system_name.to_ascii_lowercase())
    } else {
        l.lease_name.clone()
    };
    let namespace = if l.namespace.is_empty() {
        config.namespace.clone()
    } else {
        l.namespace.clone()
    };
    let lease = KubernetesLease::connect(
        &namespace,
        &name,
        &node.address.to_string(),
        l.release_after,
    )
    .await?;
    info!(
        lease = name,
        namespace, "split brain resolver: lease-majority"
    );
    Ok(Some(lease))
}

/// The formation record (`bootstrap.formation-lease`), when one is set.
async fn formation_record(
    config: &AgentConfig,
    node: &UniqueAddress,
) -> Result<Option<FormationRecord>, AgentError> {
    let Some(name) = &config.settings.bootstrap.formation_lease else {
        return Ok(None);
    };
    let client = kube::Client::try_default()
        .await
        .map_err(|e| AgentError::FormationRecord(format!("bootstrap.formation-lease `{name}` needs a Kubernetes client (in-cluster config or KUBECONFIG): {e}")))?;
    let record = FormationRecord::new(client, &config.namespace, name, &node.to_string());
    info!(lease = %record.describe(), "forming needs the formation record");
    Ok(Some(record))
}

/// How often the cluster key file is read again.
const KEY_FILE_INTERVAL: Duration = Duration::from_secs(1);

/// Largest cluster key file read (4 keys of a few hundred bytes at most).
const KEY_FILE_MAX_BYTES: u64 = 64 * 1024;

/// The bytes of the key file, refused when longer than [`KEY_FILE_MAX_BYTES`].
async fn read_key_file(file: &Path) -> Result<Vec<u8>, String> {
    let path = file.to_owned();
    let read = tokio::task::spawn_blocking(move || read_capped(&path, KEY_FILE_MAX_BYTES)).await;
    match read {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(ReadError::Io(e))) => Err(format!("cannot read {}: {e}", file.display())),
        Ok(Err(ReadError::TooLarge)) => Err(format!(
            "{} is larger than {KEY_FILE_MAX_BYTES} bytes; a key file holds at most {} keys, one per line",
            file.display(),
            ClusterKey::MAX_KEYS
        )),
        Err(e) => Err(format!("cannot read {}: {e}", file.display())),
    }
}

/// Reads the key file every [`KEY_FILE_INTERVAL`] and puts what it holds in use (every
/// connection signs and checks with it from its next frame). An unreadable or invalid
/// file is logged once per distinct problem and the keys in use stay.
async fn follow_key_file(key: ClusterKey, file: PathBuf) {
    let mut last_error = None;
    // A change is used once two reads one interval apart agree, so a file caught
    // half-written (a truncated key is still a key) is not used, unless its writer
    // stalls that long: replace the file by a rename, as the kubelet does.
    let mut seen: Option<Vec<Vec<u8>>> = None;
    loop {
        tokio::time::sleep(KEY_FILE_INTERVAL).await;
        let keys = read_key_file(&file).await.and_then(|b| {
            ClusterKey::parse_file(&b).map_err(|e| format!("{}: {e}", file.display()))
        });
        match keys {
            Ok(keys) => {
                if seen.as_ref() == Some(&keys) {
                    match key.rotate(keys) {
                        Ok(true) => {
                            last_error = None;
                            info!(keys = ?key.ids(), "cluster key file changed: these keys are in use (the first signs)");
                        }
                        Ok(false) => last_error = None,
                        Err(e) => {
                            let e = format!("{}: {e}", file.display());
                            if last_error.as_ref() != Some(&e) {
                                error!(error = %e, "the cluster key file changed in a way that would split the cluster; the keys in use stay");
                                last_error = Some(e);
                            }
                        }
                    }
                } else {
                    seen = Some(keys);
                }
            }
            Err(e) => {
                seen = None;
                if last_error.as_ref() != Some(&e) {
                    warn!(error = %e, "the cluster key file cannot be used; the keys in use stay");
                    last_error = Some(e);
                }
            }
        }
    }
}

/// A new incarnation's uid: random in `1..=i64::MAX`, so that it reads the same as
/// Akka's signed `Long` uid wherever it is shown (a string in `/cluster/members`, a
/// number in `/bootstrap/seed-nodes` and `/cluster/domain-events`).
fn incarnation_uid(rng: &mut Rng) -> u64 {
    (rng.next_u64() >> 1).max(1)
}

impl Agent {
    /// Binds both ports and starts everything. Returns once the agent is serving.
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        let clock = Clock::start();
        let mut rng = Rng::from_entropy();
        let metrics = Metrics::new();
        let node = UniqueAddress::new(config.self_address.clone(), incarnation_uid(&mut rng));
        let s = &config.settings;

        let cluster_listener = bind(
            config.self_address.socket_addr(),
            "the cluster port",
            "cluster.port",
        )
        .await?;
        let management_addr = SocketAddr::new(config.management_ip, s.management.port);
        let management_listener =
            bind(management_addr, "the management port", "management.port").await?;
        let cluster_addr = cluster_listener
            .local_addr()
            .unwrap_or(config.self_address.socket_addr());
        let management_addr = management_listener.local_addr().unwrap_or(management_addr);
        if config.cluster_key.is_none() {
            warn!(
                "cluster.allow-unauthenticated is on and there is no cluster key: anyone who can reach the cluster port can down any member"
            );
        }

        let mut tasks = Tasks::default();
        if let (Some(key), Some(file)) = (&config.cluster_key, &s.cluster.key_file) {
            tasks.spawn(
                "cluster key file",
                follow_key_file(key.clone(), file.clone()),
            );
        }
        let tls = match &config.tls {
            Some(t) => {
                let tls = Tls::new(t).map_err(AgentError::Tls)?;
                let (certificate, trusted) = tls.in_use();
                info!(server_name = ?t.server_name, %certificate, not_after = tls.not_after().map(crate::tls::rfc3339), ?trusted, "TLS on both ports");
                crate::tls::warn_if_expiring(tls.not_after());
                tasks.spawn("TLS files", tls.clone().follow());
                Some(tls)
            }
            None => None,
        };
        let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let (urgent_tx, urgent_rx) = mpsc::channel(URGENT_QUEUE);
        let (responses_tx, responses_rx) = mpsc::channel(URGENT_QUEUE);
        let (commands_tx, commands_rx) = mpsc::channel(16);
        let (cluster_tx, cluster_rx) = watch::channel(Arc::new(ClusterView {
            self_node: node.clone(),
            phase: actor::ViewPhase::Idle,
            gossip: Default::default(),
        }));
        let (ever_seen_tx, ever_seen_rx) =
            watch::channel(Arc::new(BTreeSet::<ContactPoint>::new()));
        let (seed_nodes_tx, seed_nodes_rx) = watch::channel(Bytes::new());

        tasks.spawn(
            "cluster transport",
            tcp::serve(
                cluster_listener,
                config.cluster_key.clone(),
                tls.clone(),
                metrics.clone(),
                Inbound {
                    urgent: urgent_tx,
                    normal: inbound_tx,
                },
            ),
        );

        let info = MemberInfo {
            roles: s.cluster.roles.iter().cloned().collect(),
            app_version: s.cluster.app_version.clone(),
        };
        let core = MembershipCore::new(
            node.clone(),
            info,
            MembershipSettings::from_config(&config),
            clock.now(),
        );
        let outbound = Outbound::new(
            config.self_address.ip,
            config.cluster_key.clone(),
            tls.clone(),
            metrics.clone(),
        );
        let in_flight = outbound.in_flight();
        let progress = Arc::new(AtomicU64::new(0));
        let lease = lease_majority(&config, &node).await?;
        let events = EventHub::new(EVENT_LOG_CAPACITY);
        tasks.spawn(
            "membership",
            actor::run(actor::MembershipActor {
                core,
                clock,
                rng: Rng::seeded(rng.next_u64()),
                urgent: responses_rx,
                inbound: inbound_rx,
                commands: commands_rx,
                outbound,
                urgent_outbound: Outbound::new(
                    config.self_address.ip,
                    config.cluster_key.clone(),
                    tls.clone(),
                    metrics.clone(),
                ),
                view: cluster_tx,
                progress: progress.clone(),
                metrics: metrics.clone(),
                events: events.clone(),
                lease,
            }),
        );

        tasks.spawn(
            "heartbeat responder",
            responder::run(responder::Responder {
                clock,
                urgent: urgent_rx,
                responses: responses_tx,
                view: cluster_rx.clone(),
                outbound: Outbound::new(
                    config.self_address.ip,
                    config.cluster_key.clone(),
                    tls.clone(),
                    metrics.clone(),
                ),
                progress,
                metrics: metrics.clone(),
            }),
        );

        let self_probes = SelfProbes::default();
        let (bootstrap, nudges) = if config.seed_nodes.is_empty() {
            let me = ContactPoint::new(config.management_ip, management_addr.port());
            let (nudge_tx, nudge_rx) = mpsc::channel(64);
            let (status_tx, status_rx) = mpsc::channel(16);
            let b = &s.bootstrap;
            let mut core = Bootstrap::new(
                Schedule::from_config(&config),
                DeciderSettings::from_config(&config),
                coordinator::identity(me.clone(), config.self_address.clone()),
                clock.now(),
            );
            let formation_record = formation_record(&config, &node).await?;
            if let Some(r) = &formation_record {
                core = core.with_formation_record(r.describe(), clock.now());
            }
            let coordinator = Coordinator {
                core,
                clock,
                rng: Rng::seeded(rng.next_u64()),
                discovery: discovery::from_config(&config)?,
                resolve_timeout: b.resolve_timeout,
                ports: PortRules {
                    fallback_port: config.fallback_port,
                    port_name_set: !b.port_name.is_empty(),
                    filter_on_fallback_port: b.filter_on_fallback_port,
                },
                prober: Prober::new(
                    config.management_ip,
                    &me,
                    &config.system_name,
                    b.probe_interval,
                    config.cluster_key.clone(),
                    tls.as_deref(),
                    self_probes.clone(),
                ),
                membership: commands_tx.clone(),
                cluster: cluster_rx.clone(),
                nudges: nudge_rx,
                status_requests: status_rx,
                ever_seen: ever_seen_tx,
                metrics: metrics.clone(),
                new_cluster_enabled_file: b.new_cluster_enabled_file.clone(),
                formation_record,
            };
            tasks.spawn("bootstrap", coordinator.run());
            (Some(status_tx), Some(nudge_tx))
        } else {
            info!(seed_nodes = ?config.seed_nodes.iter().map(ToString::to_string).collect::<Vec<_>>(), "joining the configured seed nodes; bootstrap is off");
            let _ = commands_tx
                .send(Command::JoinConfiguredSeeds(config.seed_nodes.clone()))
                .await;
            drop(ever_seen_tx);
            (None, None)
        };

        tasks.spawn(
            "seed-nodes cache",
            management::run_seed_nodes_cache(cluster_rx.clone(), ever_seen_rx, seed_nodes_tx),
        );
        let event_streams = Arc::new(tokio::sync::Semaphore::new(
            management::MAX_EVENT_SUBSCRIBERS,
        ));
        let handover = HandoverGate::new(s.cluster.handover_timeout, clock);
        tasks.spawn(
            "handover gate",
            stopping_when_going(cluster_rx.clone(), handover.clone()),
        );
        let app = management::router(AppState {
            seed_nodes: seed_nodes_rx,
            cluster: cluster_rx.clone(),
            bootstrap,
            nudges,
            metrics: metrics.clone(),
            max_body_bytes: s.management.max_body_bytes,
            token: config.management_token.clone(),
            events: events.clone(),
            membership: commands_tx.clone(),
            cluster_key: config.cluster_key.clone(),
            self_probes,
            own_ip: config.management_ip.to_canonical(),
            body_timeout: s.management.header_read_timeout,
            event_subscribers: event_streams.clone(),
            tls: tls.clone(),
            ready_states: s.management.ready_states.clone().into(),
            handover: handover.clone(),
        });
        tasks.spawn(
            "management server",
            management::server::serve(
                management_listener,
                app,
                s.management.max_connections,
                s.management.header_read_timeout,
                tls,
            ),
        );

        info!(node = %node, management = %management_addr, cluster = %cluster_addr, pod = config.pod_name.as_deref().unwrap_or("-"), "muster agent started");
        Ok(Self {
            node,
            management_addr,
            cluster_addr,
            cluster: cluster_rx,
            commands: commands_tx,
            events,
            metrics,
            in_flight,
            event_streams,
            handover,
            tasks,
        })
    }

    pub fn node(&self) -> &UniqueAddress {
        &self.node
    }

    pub fn management_addr(&self) -> SocketAddr {
        self.management_addr
    }

    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster_addr
    }

    /// Membership as this node sees it; `changed()` wakes on every change.
    pub fn cluster(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.cluster.clone()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Cluster events: first the current state as events (or, with `last_seen`, the
    /// events after that id, if still kept), then every change, in order.
    pub fn subscribe(&self, last_seen: Option<u64>) -> Subscription {
        self.events.subscribe(last_seen)
    }

    /// Leaves the cluster gracefully (Leaving → Exiting, then the others remove this
    /// member) and waits until this member has left or was downed, at most `timeout`.
    /// Returns whether it left in time.
    pub async fn leave(&self, timeout: Duration) -> bool {
        // A member is being stopped: its application's handover gate counts from now.
        // A node that never became one has nothing to hand over.
        if self.cluster.borrow().phase == ViewPhase::Member {
            self.handover.stopping();
        }
        if self.commands.send(Command::Leave).await.is_err() {
            return false;
        }
        let left = async {
            matches!(
                self.ended().await,
                Some(ViewPhase::Left | ViewPhase::Downed)
            )
        };
        tokio::time::timeout(timeout, left).await.unwrap_or(false)
    }

    /// The application's handover gate (`/handover`).
    pub fn handover(&self) -> &HandoverGate {
        &self.handover
    }

    /// Waits until the application's handover gate opens: every hold released (true),
    /// or `cluster.handover-timeout` run out since this member was asked to stop
    /// (false). Marks the member stopping if nothing had yet.
    pub async fn handed_over(&self) -> bool {
        self.handover.opened().await
    }

    /// Waits until the cluster is done with this member — it left, was downed, or
    /// could not join — and says which; `None` if the membership task stopped.
    pub async fn ended(&self) -> Option<ViewPhase> {
        ended(self.cluster.clone()).await
    }

    /// Waits (at most `limit`) until every queued cluster message has been written,
    /// so that the last words before an exit — a losing leader's Down gossip, a leave —
    /// reach the others. False if some were still queued.
    pub async fn flush(&self, limit: Duration) -> bool {
        self.in_flight.drained(limit).await
    }

    /// Tells event streams that this agent stops (`ClusterShuttingDown`, once) and
    /// waits (at most `limit`) until every stream has sent it and closed: stopping
    /// before that would cut it off. False if some were still open.
    pub async fn close_event_streams(&self, limit: Duration) -> bool {
        // Stopping ends the membership too (a leave that timed out did not say so).
        self.events.shutting_down();
        let all = u32::try_from(management::MAX_EVENT_SUBSCRIBERS).unwrap_or(u32::MAX);
        tokio::time::timeout(limit, self.event_streams.acquire_many(all))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until one of the agent's tasks ends — which none does while the agent
    /// works: a task that returned or panicked leaves an agent that answers `/alive`
    /// but no longer does its job. The owner must then stop (the binary exits with
    /// [`TASK_ENDED_EXIT_CODE`]). Says which task and how.
    pub async fn failed(&mut self) -> TaskEnded {
        self.tasks.ended().await
    }

    /// Stops every task.
    pub async fn shutdown(mut self) {
        self.tasks.set.shutdown().await;
    }
}

/// Waits until `view` says the cluster is done with this member (see [`Agent::ended`]).
pub async fn ended(mut view: watch::Receiver<Arc<ClusterView>>) -> Option<ViewPhase> {
    loop {
        let phase = view.borrow_and_update().phase;
        if matches!(
            phase,
            ViewPhase::Left | ViewPhase::Downed | ViewPhase::JoinFailed
        ) {
            return Some(phase);
        }
        view.changed().await.ok()?;
    }
}

/// Marks the handover gate stopping once this member is on its way out (Leaving,
/// Exiting, Down, or left), whoever asked; then idles (a task that returns would stop
/// the agent). A node that never became a member has nothing to hand over.
async fn stopping_when_going(mut view: watch::Receiver<Arc<ClusterView>>, gate: HandoverGate) {
    let mut was_member = false;
    loop {
        let going = {
            let v = view.borrow_and_update();
            was_member |= v.phase == ViewPhase::Member || v.gossip.member(&v.self_node).is_some();
            was_member
                && (matches!(v.phase, ViewPhase::Left | ViewPhase::Downed)
                    || v.gossip
                        .member(&v.self_node)
                        .is_some_and(|m| m.status.is_going()))
        };
        if going {
            gate.stopping();
            break;
        }
        if view.changed().await.is_err() {
            break;
        }
    }
    std::future::pending::<()>().await;
}

/// Exit status of `muster-agent` when one of its tasks ended (documented in README.md).
pub const TASK_ENDED_EXIT_CODE: u8 = 70;

/// A task of the agent that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEnded {
    pub task: &'static str,
    /// `returned`, or the panic message.
    pub how: String,
}

impl std::fmt::Display for TaskEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} task ended ({})", self.task, self.how)
    }
}

/// The agent's tasks, by name.
#[derive(Debug, Default)]
struct Tasks {
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
}

impl Tasks {
    fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let id = self.set.spawn(task).id();
        self.names.insert(id, name);
    }

    /// The first task to end; pending forever if there are none.
    async fn ended(&mut self) -> TaskEnded {
        let Some(joined) = self.set.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, how) = match joined {
            Ok((id, ())) => (id, "returned".to_owned()),
            Err(e) => {
                let id = e.id();
                let how = if e.is_panic() {
                    let p = e.into_panic();
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".to_owned());
                    format!("panicked: {msg}")
                } else {
                    "cancelled".to_owned()
                };
                (id, how)
            }
        };
        TaskEnded {
            task: self.names.get(&id).copied().unwrap_or("unnamed"),
            how,
        }
    }
}

#[cfg(test)]
mod task_tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_returns_or_panics_is_reported_by_name() {
        let mut t = Tasks::default();
        t.spawn("forever", std::future::pending());
        t.spawn("returns", async {});
        assert_eq!(
            t.ended().await,
            TaskEnded {
                task: "returns",
                how: "returned".into()
            }
        );
        t.spawn("panics", async { panic!("on purpose") });
        assert_eq!(
            t.ended().await,
            TaskEnded {
                task: "panics",
                how: "panicked: on purpose".into()
            }
        );
    }
}

#[cfg(test)]
mod uid_tests {
    use super::*;

    #[test]
    fn an_incarnation_uid_is_a_positive_signed_long() {
        let mut rng = Rng::seeded(7);
        for _ in 0..10_000 {
            let uid = incarnation_uid(&mut rng);
            assert!(uid >= 1 && i64::try_from(uid).is_ok(), "{uid}");
        }
    }
}
