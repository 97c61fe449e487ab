//! One pod on the node: its volumes set up before any container starts and kept in
//! step, each container kept running ([`super::container`]), its token renewed, and the
//! state all of them share for the pod status and events.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::service_account::{self, PodFiles};
use super::status::{self, PodState};
use super::volumes::{self, ObjectCache, PodVolume};
use super::{NodeConfig, PodRun, container, now};

/// What every task of one pod shares.
pub(super) struct PodCtx {
    pub client: Client,
    pub config: Arc<NodeConfig>,
    pub pod: Pod,
    pub name: String,
    pub ns: String,
    pub ip: IpAddr,
    api: Api<Pod>,
    pub pids: Arc<Mutex<BTreeMap<String, u32>>>,
    pub state: Mutex<PodState>,
    /// The last event recorded per container and reason, so a repeated failure is one
    /// event rather than a stream of them.
    events: Mutex<BTreeSet<(String, String, String)>>,
}

impl PodCtx {
    pub async fn patch_status(&self) {
        status::patch_status(&self.api, &self.name, &self.pod, self.ip, &self.state).await;
    }

    /// Marks the container as waiting for `reason`, reports it, and records a Warning
    /// event the first time this message is seen.
    pub async fn waiting(&self, container: &str, reason: &str, message: String) {
        self.waiting_because(container, reason, reason, message)
            .await;
    }

    /// [`PodCtx::waiting`] with an event reason of its own (e.g. `FailedMount` while
    /// the container is `ContainerCreating`).
    pub async fn waiting_because(
        &self,
        container: &str,
        reason: &str,
        event: &str,
        message: String,
    ) {
        tracing::warn!(pod = %self.name, container, reason, %message);
        self.event(container, "Warning", event, &message).await;
        self.state
            .lock()
            .await
            .waiting
            .insert(container.to_owned(), (reason.to_owned(), message));
        self.patch_status().await;
    }

    /// Records an event about the container, once per distinct message.
    pub async fn event(&self, container: &str, type_: &str, reason: &str, message: &str) {
        let key = (container.to_owned(), reason.to_owned(), message.to_owned());
        if !self.events.lock().await.insert(key) {
            return;
        }
        record_event(&self.client, &self.pod, container, type_, reason, message).await;
    }
}

/// Creates a core/v1 Event about the pod, as `kubectl describe pod` shows them.
pub(super) async fn record_event(
    client: &Client,
    pod: &Pod,
    container: &str,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let event: Event = match serde_json::from_value(json!({
        "metadata": {"name": format!("{name}.{stamp:x}"), "namespace": ns},
        "involvedObject": {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": name,
                           "uid": pod.metadata.uid, "fieldPath": format!("spec.containers{{{container}}}")},
        "type": type_, "reason": reason, "message": message,
        "source": {"component": "muster-local-kubelet", "host": pod.spec.as_ref().and_then(|s| s.node_name.clone())},
        "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
    })) {
        Ok(e) => e,
        Err(e) => return tracing::warn!(error = %e, "event not built"),
    };
    if let Err(e) = Api::<Event>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &event)
        .await
    {
        tracing::warn!(error = %e, "event not recorded");
    }
}

/// The folder of a pod's emptyDir, ConfigMap and Secret volumes: one per pod object
/// (by uid, as the kubelet's `pods/<uid>/volumes`), so that a pod of the same name
/// never shares or loses the folder of its predecessor.
pub(super) fn volumes_dir(config: &NodeConfig, pod: &Pod) -> std::path::PathBuf {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    config
        .log_dir
        .join("pods")
        .join(format!("{ns}_{name}"))
        .join(uid)
        .join("volumes")
}

/// Starts the pod's tasks: volumes, one per container, token renewal.
pub(super) fn run(
    client: Client,
    config: Arc<NodeConfig>,
    cache: ObjectCache,
    pod: Pod,
    ip: IpAddr,
) -> PodRun {
    let mut tasks = JoinSet::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let volumes_root = volumes_dir(&config, &pod);
    let pids: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let ctx = Arc::new(PodCtx {
        api: Api::namespaced(client.clone(), &ns),
        client,
        config,
        pod,
        name,
        ns,
        ip,
        pids: pids.clone(),
        state: Mutex::new(PodState::new()),
        events: Mutex::default(),
    });
    let files: Arc<tokio::sync::OnceCell<PodFiles>> = Arc::default();

    // Volumes are set up before any container starts, then kept in step.
    let (volumes_tx, volumes_rx) = tokio::sync::watch::channel(None::<Arc<Vec<PodVolume>>>);
    {
        let ctx = ctx.clone();
        let containers: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
        tasks.spawn(async move {
            let (planned, written) = loop {
                let attempt = async {
                    let mut planned = volumes::plan(&ctx.pod, &volumes_root)?;
                    volumes::resolve_claims(&ctx.client, &ctx.ns, &mut planned).await?;
                    let mut written = Vec::new();
                    for v in &planned {
                        written.push(volumes::set_up(&ctx.client, &cache, &ctx.ns, v).await?);
                    }
                    Ok::<_, String>((planned, written))
                };
                match attempt.await {
                    Ok(done) => break done,
                    Err(e) => {
                        for c in &containers {
                            ctx.waiting_because(c, "ContainerCreating", "FailedMount", e.clone())
                                .await;
                        }
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            };
            let _ = volumes_tx.send(Some(Arc::new(planned.clone())));
            volumes::keep_in_step(
                ctx.client.clone(),
                cache.clone(),
                ctx.config.volume_refresh.clone(),
                ctx.ns.clone(),
                planned.into_iter().zip(written).collect(),
            )
            .await;
            std::future::pending::<()>().await;
        });
    }

    let grace =
        Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
    for c in spec.containers.clone() {
        tasks.spawn(container::keep_running(
            ctx.clone(),
            c,
            files.clone(),
            volumes_rx.clone(),
            policy.clone(),
            grace,
        ));
    }
    tasks.spawn(service_account::renew_tokens(
        ctx.client.clone(),
        ctx.pod.clone(),
        files,
    ));
    PodRun {
        key: format!("{}/{}", ctx.ns, ctx.name),
        octet: 0,
        pids,
        tasks,
        deleting: false,
    }
}

/// Restart back-off after a container exits: doubling from 1 s to 30 s for a container
/// that keeps exiting within 10 s of its start (the kubelet's CrashLoopBackOff, shorter).
pub(super) fn restart_delay(quick_exits: u32) -> Duration {
    Duration::from_secs(1 << quick_exits.min(5)).min(Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_back_off_doubles_to_a_cap() {
        assert_eq!(restart_delay(0), Duration::from_secs(1));
        assert_eq!(restart_delay(1), Duration::from_secs(2));
        assert_eq!(restart_delay(3), Duration::from_secs(8));
        assert_eq!(restart_delay(40), Duration::from_secs(30));
    }
}
