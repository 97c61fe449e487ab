//! The reconcile driver for one `ClusterSpec`: observe (the StatefulSet, the pods, the
//! agents' member list) → validate (pure) → build (pure) → apply → act (one rollout or
//! scale-down step) → status. An invalid spec changes nothing but the status; a
//! transient error requeues with backoff.

pub mod apply;
pub mod build;
pub mod certificates;
pub mod finalizer;
mod formation;
pub mod key_rotation;
mod observe;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use node_agent::base::address::NodeAddress;
use node_agent::base::secret::ManagementToken;
use serde_json::json;

use crate::agents::Agents;
use crate::crd::{ClusterSpec, NewClusterEnabled, RolloutStatus, RolloutStrategy};
use crate::metrics::Metrics;
use crate::rollout::{self, Step};
use crate::scale;
use crate::status::{self, Seen};
use crate::validate::validate;

pub use apply::FIELD_MANAGER;
use observe::World;

/// Label every owned object and pod carries (`build::labels`).
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by=muster-operator";

/// How often a cluster is looked at while something is happening (forming, rolling,
/// scaling: member changes do not wake the controller) and when all is quiet.
const BUSY_REQUEUE: Duration = Duration::from_secs(2);
const QUIET_REQUEUE: Duration = Duration::from_secs(30);
/// How often a cluster whose key is being rotated is looked at (each step waits for
/// the kubelets to refresh the pods' Secret volumes, a minute or so).
const ROTATION_REQUEUE: Duration = Duration::from_secs(5);
/// Default of [`Context::secret_refresh`]: a kubelet's sync period (1 min by
/// default) and its jitter, with room to spare.
pub const SECRET_REFRESH: Duration = Duration::from_secs(180);

/// After a failed reconcile the next try waits [`RETRY_FIRST`], doubling with every
/// further failure of the same ClusterSpec up to [`RETRY_MAX`]; a success resets it.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(300);
/// Default of [`Context::reconcile_timeout`].
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);
/// A failed reconcile's status write and Event give up after this.
const REPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Context::concurrency`].
pub const CONCURRENCY: u16 = 4;
/// ClusterSpecs whose failures are counted at once.
const MAX_TRACKED_FAILURES: usize = 4096;

/// The wait before the next try after `failures` failures in a row (at least 1).
pub fn retry_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (RETRY_FIRST * 2u32.pow(doublings)).min(RETRY_MAX)
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot build the owned objects: {0}")]
    Build(#[source] build::BuildError),
    #[error("cannot compare an object with the live one as JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("{0}")]
    Secret(String),
    #[error("the ClusterSpec has no namespace")]
    NoNamespace,
    #[error(
        "the reconcile took longer than {0:?} and was stopped (the API server or the cluster's agents answer too slowly); it is tried again"
    )]
    TimedOut(Duration),
}

impl Error {
    pub fn kube(what: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            what: what.into(),
            source,
        }
    }

    /// The `reason` label of `muster_operator_reconcile_failures_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::Build(_) | Self::Json(_) => "build",
            Self::Secret(_) => "secret",
            Self::NoNamespace => "no_namespace",
            Self::TimedOut(_) => "timeout",
        }
    }
}

/// What every reconcile uses.
pub struct Context {
    pub client: Client,
    pub agents: Agents,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// The API server serves `policy/v1` PodDisruptionBudgets (Kubernetes ≥ 1.21).
    pub pdb_supported: bool,
    /// The API server knows a StatefulSet's persistentVolumeClaimRetentionPolicy
    /// (Kubernetes ≥ 1.27, where it is on by default).
    pub retention_supported: bool,
    /// The API server keeps a NetworkPolicy port range (`endPort`, Kubernetes ≥ 1.25;
    /// an older one drops it, which would turn "every other port" into one port).
    pub network_policy_supported: bool,
    /// The operator's own namespace: its pods may reach the agents' management port.
    pub operator_namespace: String,
    /// Leadership: no Leave is sent to an agent once it no longer holds.
    pub fence: crate::leader::Fence,
    /// Tests of fencing only: a wait between deciding on a pod's deletion and doing it.
    pub delay_before_delete: Duration,
    /// One reconcile is stopped after this (and retried with the back-off): one
    /// cluster's slow agents or API calls cannot hold a reconcile slot for longer.
    pub reconcile_timeout: Duration,
    /// At most this many ClusterSpecs are reconciled at once (each one at most once).
    pub concurrency: u16,
    /// How late, at most, a kubelet shows a change of a Secret in a pod's volume: a
    /// key rotation takes a pod whose agent is not running as holding the key file
    /// written this long ago.
    pub secret_refresh: Duration,
    /// Failed reconciles in a row, per ClusterSpec (for the retry back-off).
    pub failures: Mutex<HashMap<ObjectRef<ClusterSpec>, u32>>,
    /// The last status written, per ClusterSpec, until the watch delivers it.
    pub written: Mutex<HashMap<String, Written>>,
    /// When reading a Node was last refused (a namespaced install has no right to):
    /// asked again only [`NODES_FORBIDDEN_RETRY`] later; meanwhile pods on unready
    /// nodes are seen only once stuck terminating.
    pub nodes_forbidden: Mutex<Option<std::time::Instant>>,
    /// When this operator first found each pod's handover gate held (by pod uid): its
    /// own bound on the wait ([`crate::handover::OPERATOR_MARGIN`]).
    pub handover_since: Mutex<HashMap<String, std::time::Instant>>,
    /// Since when the evidence of a whole-cluster loss has held, per ClusterSpec uid
    /// ([`crate::recovery::CONFIRM`]).
    pub lost_since: Mutex<HashMap<String, std::time::Instant>>,
}

/// A status the operator wrote, and the resource version the server gave it.
#[derive(Debug, Clone)]
pub struct Written {
    resource_version: u64,
    status: crate::ClusterSpecStatus,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("pdb_supported", &self.pdb_supported)
            .finish_non_exhaustive()
    }
}

/// Whether the API server's version is at least `want` (major, minor). Some
/// distributions report `minor` as "27+" or leave it empty; `gitVersion` ("v1.27.3-gke.100")
/// is read then.
fn at_least(major: &str, minor: &str, git_version: &str, want: (u32, u32)) -> bool {
    let number = |s: &str| -> Option<u32> {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()
    };
    let from_fields = number(major).zip(number(minor));
    let from_git = || {
        let mut parts = git_version.trim_start_matches('v').split('.');
        let major = parts.next().and_then(|p| p.parse().ok())?;
        let minor = parts.next().and_then(number)?;
        Some((major, minor))
    };
    from_fields.or_else(from_git).is_some_and(|v| v >= want)
}

impl Context {
    /// Looks up what the API server supports; `instance` names this replica in Events;
    /// `fence` says whether it still leads (checked before every Leave it sends).
    pub async fn new(
        client: Client,
        metrics: Metrics,
        instance: &str,
        fence: crate::leader::Fence,
    ) -> Self {
        let pdb_supported = client
            .list_api_group_resources("policy/v1")
            .await
            .is_ok_and(|l| l.resources.iter().any(|r| r.kind == "PodDisruptionBudget"));
        if !pdb_supported {
            tracing::warn!(
                "the API server has no policy/v1 PodDisruptionBudget (Kubernetes < 1.21): clusters get none, and say so in their DisruptionBudget condition"
            );
        }
        let mut retention_supported = false;
        let mut network_policy_supported = false;
        for attempt in 1..=3 {
            match client.apiserver_version().await {
                Ok(v) => {
                    retention_supported = at_least(&v.major, &v.minor, &v.git_version, (1, 27));
                    network_policy_supported =
                        at_least(&v.major, &v.minor, &v.git_version, (1, 25));
                    break;
                }
                Err(e) if attempt < 3 => {
                    tracing::warn!(attempt, error = %e, "cannot read the API server's version; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot read the API server's version: taken as older than 1.25 (no StatefulSet retention policy, no NetworkPolicy)"
                ),
            }
        }
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(instance.into()),
        };
        Self {
            retention_supported,
            network_policy_supported,
            operator_namespace: crate::install::NAMESPACE.to_owned(),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            agents: Agents::default(),
            metrics,
            pdb_supported,
            reconcile_timeout: RECONCILE_TIMEOUT,
            concurrency: CONCURRENCY,
            secret_refresh: SECRET_REFRESH,
            failures: Mutex::default(),
            written: Mutex::default(),
            nodes_forbidden: Mutex::default(),
            handover_since: Mutex::default(),
            lost_since: Mutex::default(),
            fence,
            delay_before_delete: Duration::ZERO,
        }
    }

    /// Counts one more failure of `cs` in a row; the count.
    fn failed(&self, cs: &ClusterSpec) -> u32 {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Deleted ClusterSpecs are never reconciled again to reset theirs: bounded by
        // starting over (back-offs restart from the first step).
        if f.len() >= MAX_TRACKED_FAILURES {
            f.clear();
        }
        let n = f.entry(ObjectRef::from_obj(cs)).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    /// The newest status of `cs` the operator knows: its own last write when the
    /// view of `cs` (from the watch) is older than that write, else the view's.
    ///
    /// A reconcile that a pod's change starts right after a status write often sees
    /// the ClusterSpec before the write; taken as it is, the same status would be
    /// written, and its milestones announced, a second time. Resource versions are
    /// compared as numbers (etcd's revisions); one that is not a number is taken as
    /// newer, which costs at most that second write.
    fn known_status(&self, cs: &ClusterSpec) -> Option<crate::ClusterSpecStatus> {
        let (Some(uid), Some(seen)) = (cs.uid(), cs.resource_version()) else {
            return cs.status.clone();
        };
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match (written.get(&uid), seen.parse::<u64>()) {
            (Some(w), Ok(seen)) if seen < w.resource_version => Some(w.status.clone()),
            _ => {
                written.remove(&uid);
                cs.status.clone()
            }
        }
    }

    /// `status` was written to `cs`, and the server answered with `written`.
    fn wrote_status(
        &self,
        cs: &ClusterSpec,
        status: &crate::ClusterSpecStatus,
        written: &ClusterSpec,
    ) {
        let Some(uid) = cs.uid() else { return };
        let mut memo = self.written.lock().unwrap_or_else(|e| e.into_inner());
        match written.resource_version().and_then(|v| v.parse().ok()) {
            Some(resource_version) => {
                // Bounded like the failure counts.
                if memo.len() >= MAX_TRACKED_FAILURES {
                    memo.clear();
                }
                memo.insert(
                    uid,
                    Written {
                        resource_version,
                        status: status.clone(),
                    },
                );
            }
            None => {
                memo.remove(&uid);
            }
        }
    }

    /// A reconcile of `cs` succeeded: its next failure starts the back-off afresh.
    fn succeeded(&self, cs: &ClusterSpec) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.remove(&ObjectRef::from_obj(cs));
    }
}

/// Runs the controller until `stop` turns true: ClusterSpecs in each of `namespaces`
/// (one watch of each kind per namespace: a namespaced install may read nothing
/// else), or in every namespace when it is empty. At most `ctx.concurrency`
/// reconciles run at once across them all.
pub async fn run(
    ctx: Arc<Context>,
    namespaces: &[String],
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(usize::from(ctx.concurrency)));
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|ns| Some(ns.as_str())).collect()
    };
    futures_util::future::join_all(
        scopes
            .into_iter()
            .map(|ns| run_in(ctx.clone(), ns, slots.clone(), stop.clone())),
    )
    .await;
}

/// What of a ClusterSpec starts a reconcile when it changes: its spec (the
/// generation), labels, annotations (the pause switch) and deletion, not its status.
/// The status is the operator's own: were its writes to start reconciles, agents whose
/// answers vary from one look to the next would keep one running without pause.
/// (Reconciles also follow the cluster's StatefulSet, ConfigMap and pods, and their own
/// requeue.)
fn starts_a_reconcile(cs: &ClusterSpec) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let m = &cs.metadata;
    (&m.uid, m.generation, &m.labels, &m.annotations).hash(&mut h);
    m.deletion_timestamp.is_some().hash(&mut h);
    Some(h.finish())
}

/// An `Api` of `K` in `namespace`, or in all.
fn api_in<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn run_in(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    slots: Arc<tokio::sync::Semaphore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use kube::runtime::WatchStreamExt;
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(MANAGED_BY);
    let config = kube::runtime::controller::Config::default().concurrency(ctx.concurrency);
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let (store, writer) = kube::runtime::reflector::store::<ClusterSpec>();
    let specs = kube::runtime::watcher(
        api_in::<ClusterSpec>(&client, namespace),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .predicate_filter(
        starts_a_reconcile,
        kube::runtime::PredicateConfig::default(),
    );
    let current = store.clone();
    Controller::for_stream(specs, store)
        .with_config(config)
        .owns(api_in::<StatefulSet>(&client, namespace), owned.clone())
        .owns(api_in::<ConfigMap>(&client, namespace), owned.clone())
        // Pods are the StatefulSet's, not ours: map them by their cluster label (the
        // legacy one for pods made before it), so a pod turning Ready or going away
        // moves a rollout on at once.
        .watches(api_in::<Pod>(&client, namespace), owned, |pod: Pod| {
            let labels = pod.labels();
            let name = labels
                .get(build::CLUSTER_LABEL)
                .or_else(|| labels.get(build::LEGACY_SELECTOR_LABEL))?
                .clone();
            let ns = pod.namespace()?;
            Some(ObjectRef::<ClusterSpec>::new(&name).within(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(
            move |cs: Arc<ClusterSpec>, ctx| {
                let (slots, current) = (slots.clone(), current.clone());
                async move {
                    // A slot first: the reconcile's deadline starts once it runs.
                    let _slot = slots.acquire_owned().await;
                    // The ClusterSpec as it is now (it may have changed, or gone, while
                    // this waited for the slot).
                    match current.get(&ObjectRef::from_obj(&*cs)) {
                        Some(now) if now.uid() == cs.uid() => reconcile(now, ctx).await,
                        _ => Ok(Action::await_change()),
                    }
                }
            },
            error_policy,
            ctx,
        )
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile ended with an error");
            }
        })
        .await;
}

fn error_policy(cs: Arc<ClusterSpec>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = ctx.failed(&cs);
    let after = retry_after(failures);
    tracing::warn!(clusterspec = %cs.name_any(), %error, failures, retry_in_s = after.as_secs(), "reconcile failed; retrying");
    Action::requeue(after)
}

/// One reconcile of `cs`, timed and counted.
#[tracing::instrument(skip_all, fields(clusterspec = %cs.name_any(), namespace = cs.namespace().unwrap_or_default()))]
pub async fn reconcile(cs: Arc<ClusterSpec>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = tokio::time::timeout(
        ctx.reconcile_timeout,
        reconcile_once(&cs, &ctx, Timestamp::now()),
    )
    .await
    .unwrap_or(Err(Error::TimedOut(ctx.reconcile_timeout)));
    match &result {
        Ok(_) => ctx.succeeded(&cs),
        // Bounded too: the slot is free again within the reconcile's deadline and this.
        Err(e) => {
            if tokio::time::timeout(REPORT_TIMEOUT, report_error(&ctx, &cs, e))
                .await
                .is_err()
            {
                tracing::debug!("reporting the failure in status took too long");
            }
        }
    }
    ctx.metrics.reconciled(
        started.elapsed(),
        result.as_ref().err().map(Error::metric_label),
    );
    result
}

async fn reconcile_once(cs: &ClusterSpec, ctx: &Context, now: Timestamp) -> Result<Action, Error> {
    let ns = cs.namespace().ok_or(Error::NoNamespace)?;
    if cs.metadata.deletion_timestamp.is_some() {
        // Being deleted: the garbage collector removes what it owns; applying now would
        // only recreate it. The cluster is first asked to prepare for a full shutdown
        // (even while paused: the deletion was asked for).
        if let Some(uid) = cs.uid() {
            ctx.written
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&uid);
        }
        if finalizer::has(cs) {
            finalizer::finish(ctx, cs, &ns).await?;
        }
        return Ok(Action::await_change());
    }
    if cs
        .annotations()
        .get(status::PAUSE_ANNOTATION)
        .is_some_and(|v| v == "true")
    {
        // A maintenance window: no reads of the world, no writes but this one status
        // (so `kubectl get` shows it), until the annotation goes (a watch event).
        let known = ctx.known_status(cs);
        let previous = known.as_ref();
        let next = status::paused(previous, cs.meta().generation, now);
        if previous != Some(&next) {
            write_status(ctx, cs, &ns, &next).await?;
            event(
                ctx,
                cs,
                None,
                EventType::Normal,
                "ReconciliationPaused",
                "Pause",
                format!(
                    "{} is \"true\": nothing is changed until it is removed",
                    status::PAUSE_ANNOTATION
                ),
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    if !finalizer::has(cs) {
        finalizer::add(ctx, cs, &ns).await?;
    }
    let world = observe::world(ctx, cs, &ns).await?;
    let selection = build::Selection::of(cs, world.stateful_set.as_ref());
    let mut site = build::Site {
        selection,
        operator_namespace: &ctx.operator_namespace,
        open_other_ports: true,
        network_policy_supported: ctx.network_policy_supported,
    };
    let mut problems = validate(&cs.spec);
    problems.extend(build::tls::switched(
        cs,
        world.stateful_set.as_ref(),
        world.pods.len(),
    ));
    problems.extend(crate::pod_template::secret_references(
        cs.spec
            .application
            .as_ref()
            .map(|a| a.env.as_slice())
            .unwrap_or_default(),
        cs.spec.pod_template.as_ref(),
        &build::secret_name(cs),
        &cs.name_any(),
    ));
    // Objects of someone else's under the names this ClusterSpec's take.
    let mut conflicts = Vec::new();
    let mut lives = None;
    let mut lives_forbid_policies = false;
    // What only building finds: the agent settings as the agent's own loader sees them
    // (`spec.agent.config`), the merged pod template. Pure and cheap.
    if problems.is_empty() {
        match build::owned(cs, true, &site) {
            Err(e) => problems = e.0,
            Ok(built) => {
                let read =
                    apply::read(ctx, cs, &ns, world.stateful_set.as_ref(), world.tls.clone())
                        .await?;
                // Pods another NetworkPolicy isolates keep getting their other ports
                // from it; else the cluster's policy opens them, as they were.
                let pod_labels = built
                    .stateful_set
                    .spec
                    .template
                    .metadata
                    .as_ref()
                    .and_then(|m| m.labels.clone())
                    .unwrap_or_default();
                // (The pods' own labels count too: the StatefulSet adds some, e.g.
                // statefulset.kubernetes.io/pod-name, that a policy may select by.)
                site.open_other_ports = !read.other_network_policies.iter().any(|p| {
                    build::network_policy::isolates(p, &pod_labels)
                        || world
                            .pods
                            .iter()
                            .any(|pod| build::network_policy::isolates(p, pod.labels()))
                });
                conflicts = apply::conflicts(cs, &built, &read, ctx.pdb_supported);
                lives_forbid_policies = read.network_policy_forbidden;
                lives = Some(read);
                // Claim templates (as built, with the operator's labels) that the API
                // server would refuse to change.
                if conflicts.is_empty()
                    && let Some(live) = &world.stateful_set
                {
                    let wanted = built.stateful_set.spec.volume_claim_templates;
                    let live = live
                        .spec
                        .volume_claim_templates
                        .as_deref()
                        .unwrap_or_default();
                    problems.extend(crate::claims::changed(
                        wanted.as_deref().unwrap_or_default(),
                        live,
                    ));
                }
            }
        }
    }
    let known = ctx.known_status(cs);
    let previous = known.as_ref();
    let members = world.members.as_ref().ok();
    let member_views = members.map(crate::agents::member_views).unwrap_or_default();
    let pod_views: Vec<rollout::PodView> = world.pods.iter().map(observe::pod_view).collect();

    let stopped = status::stopped(
        &cs.spec,
        world.stateful_set.as_ref().and_then(|s| s.spec.replicas),
        world.pods.len(),
    );
    let before = previous
        .map(|s| s.stranded_pods.as_slice())
        .unwrap_or_default();
    let nodes = node_states(
        ctx,
        &world.pods,
        crate::stranded::nodes_of_remembered(before),
    )
    .await;
    let confirmed: Vec<&str> = cs
        .annotations()
        .get(crate::stranded::CONFIRMED_GONE)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let stranded = crate::stranded::remembered(
        before,
        crate::stranded::stranded(&world.pods, &nodes, now),
        &world.pods,
        &nodes,
        &confirmed,
    );
    let (lost, recovery) = if problems.is_empty() && conflicts.is_empty() {
        look_for_loss(ctx, cs, &world, previous, stopped, stranded.len()).await
    } else {
        // Nothing of the spec is applied now: neither is a recovery, and the evidence
        // must hold on end once it is.
        ctx.lost_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&cs.uid().unwrap_or_default());
        (false, None)
    };
    // Forming was opened after a whole-cluster loss and the cluster has not formed
    // again yet (condition Formed, reason ClusterLost, kept until it has).
    let recovering = lost
        || previous.is_some_and(|s| {
            s.formed_at.is_none()
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Formed" && c.reason == status::CLUSTER_LOST)
        });
    let mut rollout_status = None;
    let mut scaling = None;
    let mut forming_held = false;
    let mut tls_status = None;
    let mut key_status = None;
    let mut rotating = false;
    if let Some(mut lives) = lives.filter(|_| problems.is_empty() && conflicts.is_empty()) {
        // Stopped as a whole (scaled to zero, no pod left): the next scale-up forms anew.
        let formed =
            status::formed_at(&cs.spec, previous, members, now).is_some() && !stopped && !lost;
        // In the reconcile that finds the cluster lost the key stays as it was: the
        // recorded counts are reset by this status, and whether the pods run the
        // settings they give (FormingHeld) is known only at the next reconcile.
        // Pods that may still run unseen hold forming off whatever the spec says, through
        // the formation record alone (below): agents read it at once and re-read it
        // every 10 s, where a changed ConfigMap reaches them only at the kubelet's
        // pace, which would hold the cluster off long after the pods are accounted for.
        let lock = status::new_cluster_enabled(&cs.spec, formed || lost);
        let current = world.stateful_set.as_ref().and_then(|s| s.spec.replicas);
        let known = world.members_known().then_some(member_views.as_slice());
        let mut shrink = scale::scale_down(cs.spec.replicas, current, &pod_views, known);
        // Shrinking over pods whose application is still handing over waits for it
        // (bounded by the agents' handover timeout). A scale to zero stops everyone:
        // nothing is handed over then, and each agent waits for its own gate on SIGTERM.
        if let Some(now_replicas) = current
            && shrink.replicas < now_replicas
            && shrink.replicas > 0
        {
            let going: Vec<&str> = pod_views
                .iter()
                .filter(|p| scale::ordinal(&p.name).is_some_and(|o| o >= shrink.replicas))
                .map(|p| p.name.as_str())
                .collect();
            if let Some(words) = handover_held(ctx, cs, &world, &going, "ScaleDown").await {
                shrink = scale::ScaleDown {
                    replicas: now_replicas,
                    waiting: Some(format!(
                        "scaling {now_replicas} → {}: {words}",
                        cs.spec.replicas
                    )),
                    ..scale::ScaleDown::default()
                };
            }
        }
        let (token, key_secret) = apply::secret(ctx, cs, &ns, lives.secret.take()).await?;
        let look = key_rotation::Pods {
            stateful_set: world.stateful_set.as_ref(),
            pods: &world.pods,
            agents: world.agents.as_ref().map_err(String::as_str),
            settle: ctx.secret_refresh,
            // Taken before the pods were read.
            read_at: std::time::SystemTime::from(now),
        };
        if cs.spec.tls.enabled {
            // Before the pods: they cannot start without their certificate.
            let secrets = lives.tls.take().unwrap_or_default();
            let kept =
                certificates::keep(ctx, cs, &ns, secrets, &look, std::time::SystemTime::now())
                    .await?;
            for (reason, action, note) in kept.done {
                event(ctx, cs, None, EventType::Normal, reason, action, note).await;
            }
            tls_status = kept.status;
            rotating |= kept.rotating;
        }
        let kept = key_rotation::keep(ctx, cs, &ns, &key_secret, &look).await?;
        for (reason, action, note) in kept.done {
            event(ctx, cs, None, EventType::Normal, reason, action, note).await;
        }
        key_status = kept.status;
        rotating |= kept.rotating;
        let mut owned = build::owned(cs, lock, &site).map_err(Error::Build)?;
        // Agents read agent.yaml (expected-contact-point-nr among it) only at start, the
        // new-cluster-enabled key at run time. Forming again under an explicit `true`
        // (the formed cluster is gone; the operator clears the formation record) waits
        // until every pod runs this template: an agent started before a scale-up would
        // count on fewer contact points than now start together, and two groups could
        // each agree on their own. The key was off before (formed), so holding it takes
        // effect at once. The oldest-last rollout replaces pods that are not members
        // first, so this ends (unless paused; status says why). The StatefulSet's own
        // RollingUpdate waits for Ready pods, which never come, so `Ordinal` is not
        // held. Before the first formation the formation record guards instead.
        if lock
            && (cs.spec.bootstrap.new_cluster_enabled == NewClusterEnabled::True || recovering)
            && cs.spec.rollout.strategy == RolloutStrategy::OldestLast
            && build::pods_on_other_template(&owned, &world.pods)
        {
            forming_held = true;
            owned = build::owned(cs, false, &site).map_err(Error::Build)?;
        }
        owned.stateful_set.spec.replicas = Some(shrink.replicas);
        // The same claim templates as the live ones (checked above), sent back as the
        // server keeps them: its own spelling of a size would otherwise look like a
        // difference, and the StatefulSet would be written at every reconcile.
        if let Some(live) = &world.stateful_set {
            owned.stateful_set.spec.volume_claim_templates =
                live.spec.volume_claim_templates.clone();
        }
        // The default retention policy is sent only to undo another one: where the live
        // StatefulSet has no policy (a new one, or a server whose
        // StatefulSetAutoDeletePVC gate is off and drops the field) it would differ at
        // every reconcile.
        let live_policy = world
            .stateful_set
            .as_ref()
            .and_then(|l| l.spec.persistent_volume_claim_retention_policy.as_ref());
        if cs.spec.volume_claim_retention == crate::crd::VolumeClaimRetention::default()
            && live_policy.is_none()
        {
            owned
                .stateful_set
                .spec
                .persistent_volume_claim_retention_policy = None;
        }
        // The record before the pods: an agent must find it when it may form.
        formation::keep(
            ctx,
            cs,
            &ns,
            (formed, stopped, !stranded.is_empty()),
            (lost, recovering),
            (&world.pods, world.agents.as_ref().ok()),
            lives.formation.take(),
        )
        .await?;
        formation::keep_sbr(ctx, cs, &ns, lives.sbr.as_ref()).await?;
        apply::owned(ctx, cs, &ns, owned, lives).await?;
        for (pod, member) in &shrink.leave {
            leave(ctx, cs, &world, pod, member, &token).await;
        }
        if shrink.prepare_shutdown {
            prepare_full_shutdown(ctx, cs, &world, &token, "scaled to zero").await;
        }
        if cs.spec.membership.pod_aware_downing {
            tell_gone_pods(ctx, cs, &world, &token).await?;
        }
        scaling = shrink.waiting;
        if scaling.is_none() {
            rollout_status = roll(ctx, cs, &world, pod_views, member_views, &token).await?;
        }
    }

    let seen = Seen {
        spec: &cs.spec,
        generation: cs.meta().generation,
        previous,
        pods: world.live_pods(),
        stopped,
        selector: selection.query(cs),
        network_policy: if lives_forbid_policies {
            status::NetworkPolicyState::Forbidden
        } else if !cs.spec.network_policy.enabled {
            status::NetworkPolicyState::Disabled
        } else if !ctx.network_policy_supported {
            status::NetworkPolicyState::Unsupported
        } else {
            status::NetworkPolicyState::Applied {
                other_ports_open: site.open_other_ports,
            }
        },
        legacy_selector: (selection == build::Selection::Legacy).then(|| {
            let unlabelled = world
                .pods
                .iter()
                .filter(|p| !p.labels().contains_key(build::CLUSTER_LABEL))
                .count();
            let when = if unlabelled == 0 && world.pods.len() == usize::try_from(cs.spec.replicas).unwrap_or(0) {
                format!(
                    "Every pod carries {}={} now, so it is safe to run `kubectl delete statefulset {} -n {ns} --cascade=orphan`",
                    build::CLUSTER_LABEL,
                    cs.name_any(),
                    cs.name_any()
                )
            } else {
                format!(
                    "Not yet: {unlabelled} of {} pods do not carry {}={} (they get it from the current template, as the rollout replaces them); once all do, run `kubectl delete statefulset {} -n {ns} --cascade=orphan` (before, the pods without it would not be adopted and their names stay taken)",
                    world.pods.len(),
                    build::CLUSTER_LABEL,
                    cs.name_any(),
                    cs.name_any()
                )
            };
            format!(
                "the StatefulSet, made by an earlier operator, selects its pods by {} alone, a label other pods can carry (they count as contact points and fall under the PodDisruptionBudget); a StatefulSet's selector cannot change. {when}: the operator makes it again selecting by {}, it adopts the running pods, and the operator rolls them oldest-last",
                selection.query(cs),
                build::CLUSTER_LABEL
            )
        }),
        members: world.members.as_ref().map_err(Clone::clone),
        problems: &problems,
        conflicts: &conflicts,
        rollout: rollout_status,
        scaling,
        stalled: observe::stalled(cs, &world, now),
        pdb_supported: ctx.pdb_supported,
        retention_supported: ctx.retention_supported,
        forming_held,
        stranded: &stranded,
        lost,
        recovery,
        tls: tls_status,
        cluster_key: key_status,
        now,
    };
    let next = status::compute(&seen);
    if previous != Some(&next) {
        write_status(ctx, cs, &ns, &next).await?;
        announce(ctx, cs, previous, &next).await;
    }
    // Agents that hang or dribble are not asked again every 2 s (each look holds a
    // reconcile slot for seconds): every 30 s, or at once when a pod changes.
    // Stranded pods are looked at often: Node changes wake no reconcile.
    let quiet = (next.phase.as_deref() == Some(status::RUNNING) && stranded.is_empty())
        || !problems.is_empty()
        || !conflicts.is_empty()
        || world.members_slow;
    let after = if quiet { QUIET_REQUEUE } else { BUSY_REQUEUE };
    Ok(Action::requeue(if rotating {
        after.min(ROTATION_REQUEUE)
    } else {
        after
    }))
}

/// One step of an oldest-last rollout (the StatefulSet rolls `Ordinal` itself); the
/// progress to report, `None` when every pod runs the current template.
async fn roll(
    ctx: &Context,
    cs: &ClusterSpec,
    world: &World,
    pods: Vec<rollout::PodView>,
    members: Vec<rollout::MemberView>,
    token: &ManagementToken,
) -> Result<Option<RolloutStatus>, Error> {
    let Some(target) = world.update_revision() else {
        return Ok(None);
    };
    let observed = rollout::Observed {
        pods,
        members,
        members_known: world.members_known(),
        target_revision: target,
        replicas: usize::try_from(cs.spec.replicas).unwrap_or(0),
        paused: cs.spec.rollout.paused,
    };
    let (updated, total) = rollout::progress(&observed);
    let step = if cs.spec.rollout.strategy == RolloutStrategy::Ordinal {
        if updated == total {
            return Ok(None);
        }
        Step::Wait("the StatefulSet's RollingUpdate replaces pods, highest ordinal first".into())
    } else {
        rollout::plan(&observed)
    };
    let (current_pod, words) = match &step {
        Step::Done => return Ok(None),
        Step::Paused { remaining } => (
            None,
            format!("paused with {remaining} pod(s) left (spec.rollout.paused)"),
        ),
        Step::Wait(why) => (None, format!("waiting: {why}")),
        Step::Leave { pod, member } => {
            leave(ctx, cs, world, pod, member, token).await;
            (
                Some(pod.clone()),
                format!("member {member} of pod {pod} asked to leave"),
            )
        }
        Step::Delete { pod } => 'delete: {
            if let Some(words) = handover_held(ctx, cs, world, &[pod.as_str()], "Rollout").await {
                break 'delete (Some(pod.clone()), format!("waiting: {words}"));
            }
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &world.namespace);
            if !ctx.delay_before_delete.is_zero() {
                tracing::info!(%pod, "rollout: about to delete the pod (test delay)");
                tokio::time::sleep(ctx.delay_before_delete).await;
            }
            // That pod only: not one made under its name since it was looked at.
            let dp = DeleteParams {
                preconditions: world
                    .pod(pod)
                    .and_then(|p| p.metadata.uid.clone())
                    .map(|uid| Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                ..DeleteParams::default()
            };
            api.delete(pod, &dp)
                .await
                .map_err(|e| Error::kube(format!("delete pod {pod}"), e))?;
            ctx.metrics.step("delete");
            tracing::info!(%pod, "rollout: deleted the pod; the StatefulSet recreates it from the new template");
            event(
                ctx,
                cs,
                world.pod(pod),
                EventType::Normal,
                "PodReplaced",
                "Rollout",
                format!("deleted pod {pod} to replace it with the current template"),
            )
            .await;
            (
                Some(pod.clone()),
                format!("pod {pod} deleted; waiting for its replacement"),
            )
        }
    };
    Ok(Some(RolloutStatus {
        updated: i32::try_from(updated).unwrap_or(i32::MAX),
        total: i32::try_from(total).unwrap_or(i32::MAX),
        current_pod,
        step: Some(words),
    }))
}

/// Whether the whole cluster is lost ([`crate::recovery`]): `(lost, why not yet)`.
/// Every pod's agent is asked only when the cluster formed under `auto` and no member
/// is Up in the list at hand; the evidence must then hold for
/// [`crate::recovery::CONFIRM`] on end.
async fn look_for_loss(
    ctx: &Context,
    cs: &ClusterSpec,
    world: &World,
    previous: Option<&crate::ClusterSpecStatus>,
    stopped: bool,
    stranded: usize,
) -> (bool, Option<String>) {
    use crate::recovery::{self, PodLook, Verdict};
    let uid = cs.uid().unwrap_or_default();
    let formed = previous.is_some_and(|s| s.formed_at.is_some()) && !stopped;
    let up = world.members.as_ref().ok().map(|m| {
        i32::try_from(m.members.iter().filter(|x| x.status.is_up()).count()).unwrap_or(i32::MAX)
    });
    let verdict = if recovery::worth_looking(
        cs.spec.bootstrap.new_cluster_enabled,
        formed,
        cs.spec.replicas,
        up,
    ) {
        let targets: Vec<(String, std::net::IpAddr)> = world
            .pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| Some((p.name_any(), observe::pod_ip(p)?)))
            .collect();
        let answers: HashMap<String, Result<usize, String>> = match &world.agents {
            Ok(agents) => agents
                .members_each(&targets)
                .await
                .into_iter()
                .map(|(pod, a)| (pod, a.map(|m| m.members.len())))
                .collect(),
            Err(_) => HashMap::new(),
        };
        let looks: Vec<PodLook> = world
            .pods
            .iter()
            .map(|p| PodLook {
                name: p.name_any(),
                terminating: p.metadata.deletion_timestamp.is_some(),
                has_ip: observe::pod_ip(p).is_some(),
                members: answers.get(&p.name_any()).cloned(),
            })
            .collect();
        recovery::judge(cs.spec.replicas, &looks, stranded)
    } else {
        Verdict::NotLost
    };
    let mut since = ctx.lost_since.lock().unwrap_or_else(|e| e.into_inner());
    match verdict {
        Verdict::NotLost => {
            since.remove(&uid);
            (false, None)
        }
        Verdict::Unproven(why) => {
            since.remove(&uid);
            (false, Some(why))
        }
        Verdict::Lost => {
            let held = since
                .entry(uid)
                .or_insert_with(std::time::Instant::now)
                .elapsed();
            if held >= recovery::CONFIRM {
                tracing::warn!(cluster = %cs.name_any(), "every member of the cluster is gone: forming is opened again");
                (true, None)
            } else {
                (
                    false,
                    Some(format!(
                        "every pod's agent answers that it is no member and none is terminating or stranded, for {} s of the {} s that confirm it",
                        held.as_secs(),
                        recovery::CONFIRM.as_secs()
                    )),
                )
            }
        }
    }
}

/// How long after a refused Node read the operator asks again (RBAC granted late).
const NODES_FORBIDDEN_RETRY: Duration = Duration::from_secs(600);

/// The readiness of each node that runs a pod of the cluster, as far as the operator
/// may read it (see [`crate::stranded`]).
async fn node_states(
    ctx: &Context,
    pods: &[Pod],
    also: Vec<String>,
) -> std::collections::BTreeMap<String, crate::stranded::NodeState> {
    use crate::stranded::NodeState;
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(ctx.client.clone());
    let mut out = std::collections::BTreeMap::new();
    let forbidden = || {
        ctx.nodes_forbidden
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < NODES_FORBIDDEN_RETRY)
    };
    let mut names = crate::stranded::nodes_of(pods);
    names.extend(also);
    names.sort();
    names.dedup();
    for name in names {
        let state = if forbidden() {
            NodeState::Unknown
        } else {
            match api.get_opt(&name).await {
                Ok(Some(node)) => NodeState::of(&node),
                Ok(None) => NodeState::Gone,
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    *ctx.nodes_forbidden
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
                    tracing::info!(
                        "no right to read Nodes (a namespaced install): pods on unready nodes count as stranded only once stuck terminating"
                    );
                    NodeState::Unknown
                }
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "cannot read the node; its pods count as stranded until it is read");
                    // Words that do not change from one failure to the next (status
                    // is written only when it changes).
                    NodeState::Unreadable(match &e {
                        kube::Error::Api(s) => format!("the API server answered {}", s.code),
                        _ => "the request failed".to_owned(),
                    })
                }
            }
        };
        out.insert(name, state);
    }
    out
}

/// The handover gates of `pods` (by name), asked of their agents one after another:
/// the first that the application holds, in words (the pods wait). A gate whose
/// timeout ran out lets its pod go, with an Event; a pod whose agent does not answer
/// has nothing that could hold it.
async fn handover_held(
    ctx: &Context,
    cs: &ClusterSpec,
    world: &World,
    pods: &[&str],
    action: &str,
) -> Option<String> {
    let agents = world.agents.as_ref().ok()?;
    let cap = node_agent::config::duration::parse(&cs.spec.membership.handover_timeout)
        .unwrap_or_else(|_| {
            node_agent::config::Settings::default()
                .cluster
                .handover_timeout
        })
        + crate::handover::OPERATOR_MARGIN;
    for name in pods {
        let Some(pod) = world.pod(name) else {
            continue;
        };
        let Some(ip) = observe::pod_ip(pod) else {
            continue;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let answer = agents.handover(ip).await;
        let held_for = {
            let since = ctx.handover_since.lock().unwrap_or_else(|e| e.into_inner());
            since.get(&uid).map_or(Duration::ZERO, |t| t.elapsed())
        };
        let gate = crate::handover::judge(name, answer.as_ref(), held_for, cap);
        {
            let mut since = ctx.handover_since.lock().unwrap_or_else(|e| e.into_inner());
            // Forget what is long over (pods deleted by others), so the map stays small.
            since.retain(|_, t| t.elapsed() < cap * 4);
            if matches!(gate, crate::handover::Gate::Held(_)) {
                since.entry(uid).or_insert_with(std::time::Instant::now);
            } else {
                since.remove(&uid);
            }
        }
        match gate {
            crate::handover::Gate::Open => {}
            crate::handover::Gate::Held(words) => {
                ctx.metrics.step("handover_wait");
                tracing::info!(pod = %name, "{words}");
                return Some(words);
            }
            crate::handover::Gate::TimedOut(words) => {
                tracing::warn!(pod = %name, "{words}");
                event(
                    ctx,
                    cs,
                    Some(pod),
                    EventType::Warning,
                    "HandoverTimedOut",
                    action,
                    words,
                )
                .await;
            }
        }
    }
    None
}

/// Asks `member` (in `pod`) to leave; a failure is logged and retried next time.
async fn leave(
    ctx: &Context,
    cs: &ClusterSpec,
    world: &World,
    pod: &str,
    member: &NodeAddress,
    token: &ManagementToken,
) {
    let Some(ip) = world.pod(pod).and_then(observe::pod_ip) else {
        tracing::warn!(%pod, "cannot ask the member to leave: the pod has no IP");
        return;
    };
    // A Leave changes the cluster like a write: only while this replica leads.
    if !ctx.fence.holds() {
        tracing::error!(%pod, %member, "Leave not sent: no longer the leader");
        return;
    }
    let agents = match &world.agents {
        Ok(agents) => agents,
        Err(e) => {
            tracing::warn!(%pod, error = %e, "cannot ask the member to leave");
            return;
        }
    };
    match agents.leave(ip, member, token).await {
        Ok(()) => {
            ctx.metrics.step("leave");
            tracing::info!(%pod, %member, "asked the member to leave");
            event(
                ctx,
                cs,
                world.pod(pod),
                EventType::Normal,
                "MemberLeaving",
                "Leave",
                format!("asked member {member} of pod {pod} to leave the cluster"),
            )
            .await;
        }
        Err(e) => {
            tracing::warn!(%pod, %member, error = %e, "the member could not be asked to leave; retrying")
        }
    }
}

/// Pod-aware downing (`spec.membership.podAwareDowning`): tells the leader about
/// each member whose pod is gone ([`crate::gone`]), confirmed by a list of
/// the namespace's pods read after the member list (a pod made since the first list
/// would otherwise look missing), so that its resolver need not wait `stableAfter`.
async fn tell_gone_pods(
    ctx: &Context,
    cs: &ClusterSpec,
    world: &World,
    token: &ManagementToken,
) -> Result<(), Error> {
    let (Ok(members), Ok(agents)) = (&world.members, &world.agents) else {
        return Ok(());
    };
    let ips = |pods: &[Pod]| -> Vec<crate::gone::PodIp> {
        pods.iter()
            .filter_map(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                Some(crate::gone::PodIp {
                    ip: observe::pod_ip(p)?,
                    ended: matches!(phase, Some("Succeeded" | "Failed")),
                })
            })
            .collect()
    };
    let seen = crate::gone::gone_members(members, &ips(&world.pods));
    if seen.is_empty() {
        return Ok(());
    }
    // Every pod of the namespace, whoever's: one holding the IP may hold the member.
    // Not to be had: no hint this time (the rest of the reconcile goes on).
    let all = match Api::<Pod>::namespaced(ctx.client.clone(), &world.namespace)
        .list(&kube::api::ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the namespace's pods: no pod-gone hint this time");
            return Ok(());
        }
    };
    let gone: Vec<(NodeAddress, u64)> = crate::gone::gone_members(members, &ips(&all))
        .into_iter()
        .filter(|m| seen.contains(m))
        .collect();
    // The leader decides; else any Ready pod's agent passes it on by being asked.
    let leader_ip = members.leader.as_ref().map(|l| l.ip);
    let ask = world
        .pods
        .iter()
        .filter_map(|p| Some((observe::pod_ip(p)?, p)))
        .find(|(ip, _)| Some(*ip) == leader_ip)
        .or_else(|| {
            world
                .pods
                .iter()
                .filter(|p| observe::pod_view(p).ready)
                .find_map(|p| Some((observe::pod_ip(p)?, p)))
        });
    let Some((ip, _)) = ask else {
        return Ok(());
    };
    for (member, uid) in gone {
        if !ctx.fence.holds() {
            tracing::error!(%member, "PodGone not sent: no longer the leader");
            return Ok(());
        }
        // Told again at every look while it lasts (a hint is kept for a while); said
        // in an Event only once the member is away, when the hint matters.
        let away = members.unreachable.iter().any(|u| u.node == member);
        match agents.pod_gone(ip, (&member, uid), token).await {
            Ok(()) if !away => {
                ctx.metrics.step("pod_gone");
                tracing::debug!(%member, "told the leader that the member's pod is gone");
            }
            Ok(()) => {
                ctx.metrics.step("pod_gone");
                tracing::info!(%member, "told the leader that the member's pod is gone");
                event(
                    ctx,
                    cs,
                    None,
                    EventType::Normal,
                    "MemberPodGone",
                    "PodGone",
                    format!(
                        "no pod has the IP of member {member} any more: told the leader, whose resolver need not wait stableAfter for it once it is unreachable"
                    ),
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(%member, error = %e, "could not tell the leader that the member's pod is gone")
            }
        }
    }
    Ok(())
}

/// Asks an agent of the cluster (the first pod's that answers, Ready ones first) to prepare the
/// whole cluster for a full shutdown, before all its pods stop (`why`, in words).
async fn prepare_full_shutdown(
    ctx: &Context,
    cs: &ClusterSpec,
    world: &World,
    token: &ManagementToken,
    why: &str,
) {
    // Changes the cluster like a write: only while this replica leads.
    if !ctx.fence.holds() {
        tracing::error!("prepare-for-full-shutdown not sent: no longer the leader");
        return;
    }
    let agents = match &world.agents {
        Ok(agents) => agents,
        Err(e) => {
            tracing::warn!(error = %e, "cannot ask the cluster to prepare for a full shutdown");
            return;
        }
    };
    // Ready pods first; then any other that runs: a member whose application is not
    // ready (a common reason to stop a cluster) still has an agent that answers.
    let mut pods: Vec<&Pod> = world
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    pods.sort_by_key(|p| !observe::pod_view(p).ready);
    let mut last = None;
    for pod in pods {
        let Some(ip) = observe::pod_ip(pod) else {
            continue;
        };
        match agents.prepare_for_full_shutdown(ip, token).await {
            Ok(()) => {
                ctx.metrics.step("prepare_full_shutdown");
                let name = pod.name_any();
                tracing::info!(pod = %name, "asked the cluster to prepare for a full shutdown");
                event(
                    ctx,
                    cs,
                    None,
                    EventType::Normal,
                    "FullShutdownPrepared",
                    "PrepareForFullShutdown",
                    format!(
                        "{why}: asked the cluster (through pod {name}) to prepare for a full shutdown, so that its members stop together instead of leaving one by one"
                    ),
                )
                .await;
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        tracing::warn!(error = %e, "no agent could be asked to prepare for a full shutdown; retrying");
    }
}

/// Puts a failed reconcile's error in the Degraded condition (and a Warning event), so
/// `kubectl describe` shows it, not only the operator's log. Best effort: the status
/// write may fail for the same reason.
async fn report_error(ctx: &Context, cs: &ClusterSpec, error: &Error) {
    let Some(ns) = cs.namespace() else { return };
    let known = ctx.known_status(cs);
    let previous = known.as_ref();
    let next = status::with_error(
        previous,
        cs.meta().generation,
        &error.to_string(),
        Timestamp::now(),
    );
    if previous == Some(&next) {
        return;
    }
    if let Err(e) = write_status(ctx, cs, &ns, &next).await {
        tracing::debug!(error = %e, "could not report the failure in status either");
    }
    announce(ctx, cs, previous, &next).await;
}

async fn write_status(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    status: &crate::ClusterSpecStatus,
) -> Result<(), Error> {
    let api: Api<ClusterSpec> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ClusterSpec",
        "status": status,
    });
    let written = api
        .patch_status(
            &cs.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::kube("write the status", e))?;
    ctx.wrote_status(cs, status, &written);
    Ok(())
}

/// Events for the milestones between two statuses.
async fn announce(
    ctx: &Context,
    cs: &ClusterSpec,
    before: Option<&crate::ClusterSpecStatus>,
    after: &crate::ClusterSpecStatus,
) {
    let was = |f: fn(&crate::ClusterSpecStatus) -> bool| before.is_some_and(f);
    if after.formed_at.is_some() && !was(|s| s.formed_at.is_some()) {
        let up = after.members.as_ref().map_or(0, |m| m.up);
        event(
            ctx,
            cs,
            None,
            EventType::Normal,
            "Formed",
            "Form",
            format!(
                "one cluster formed with {up} Up members; leader {}",
                after.leader.as_deref().unwrap_or("?")
            ),
        )
        .await;
    }
    if after.new_cluster_enabled == Some(false) && !was(|s| s.new_cluster_enabled == Some(false)) {
        event(
            ctx,
            cs,
            None,
            EventType::Normal,
            "NewClusterDisabled",
            "Lock",
            "new-cluster-enabled is now false: restarted pods only join the existing cluster"
                .into(),
        )
        .await;
    }
    let stranded = |s: &crate::ClusterSpecStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "StrandedPods" && c.status == "True")
            .map(|c| c.message.clone())
    };
    if let Some(words) = stranded(after)
        && before.and_then(stranded).is_none()
    {
        event(
            ctx,
            cs,
            None,
            EventType::Warning,
            "PodsStranded",
            "Lock",
            words,
        )
        .await;
    }
    if after.rollout.is_some() && !was(|s| s.rollout.is_some()) {
        event(
            ctx,
            cs,
            None,
            EventType::Normal,
            "RolloutStarted",
            "Rollout",
            "the pod template changed: replacing pods one at a time, the oldest member last".into(),
        )
        .await;
    }
    if after.rollout.is_none() && was(|s| s.rollout.is_some()) {
        event(
            ctx,
            cs,
            None,
            EventType::Normal,
            "RolloutFinished",
            "Rollout",
            "every pod runs the current template".into(),
        )
        .await;
    }
    let degraded = |s: &crate::ClusterSpecStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "Degraded" && c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    if let Some((reason, message)) = degraded(after)
        && before.and_then(degraded).map(|d| d.0) != Some(reason.clone())
    {
        event(
            ctx,
            cs,
            None,
            EventType::Warning,
            &reason,
            "Observe",
            message,
        )
        .await;
    }
}

/// Records an Event about `cs` (`related`: the pod it concerns; events about different
/// pods are then kept apart instead of counted as one series).
async fn event(
    ctx: &Context,
    cs: &ClusterSpec,
    related: Option<&Pod>,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: related.map(|p| p.object_ref(&())),
    };
    if let Err(e) = ctx.recorder.publish(&ev, &cs.object_ref(&())).await {
        tracing::warn!(error = %e, %reason, "could not record an event");
    }
}

#[cfg(test)]
mod tests;
