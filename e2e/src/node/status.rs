//! What the pod status reports: its IP, conditions and every container's state,
//! restarts and last termination, from the state the pod's tasks share.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::Mutex;

use super::now;

/// Shared, per pod: what the status patch reports.
#[derive(Debug)]
pub(super) struct PodState {
    pub started: String,
    pub restarts: BTreeMap<String, i32>,
    /// Running containers, with the time they started.
    pub running: BTreeMap<String, String>,
    /// Why a container is not running: (reason, message).
    pub waiting: BTreeMap<String, (String, String)>,
    /// Containers whose readiness probe passes (or that have none and run).
    pub ready: BTreeSet<String>,
    /// Running containers whose startup probe passed (or that have none).
    pub started_ok: BTreeSet<String>,
    /// How a container's previous run ended: (exit code, reason, message).
    pub last: BTreeMap<String, (i32, String, String)>,
}

impl PodState {
    pub fn new() -> Self {
        Self {
            started: now(),
            restarts: BTreeMap::new(),
            running: BTreeMap::new(),
            waiting: BTreeMap::new(),
            ready: BTreeSet::new(),
            started_ok: BTreeSet::new(),
            last: BTreeMap::new(),
        }
    }
}

/// Reports the pod's state in its status: phase, IP, conditions, each container.
pub(super) async fn patch_status(
    api: &Api<Pod>,
    name: &str,
    pod: &Pod,
    ip: IpAddr,
    state: &Mutex<PodState>,
) {
    let s = state.lock().await;
    let containers: Vec<&Container> = pod
        .spec
        .iter()
        .flat_map(|sp| sp.containers.iter())
        .collect();
    let ready = containers
        .iter()
        .all(|c| s.running.contains_key(&c.name) && s.ready.contains(&c.name));
    let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now()});
    let statuses: Vec<_> = containers
        .iter()
        .map(|c| {
            let running = s.running.get(&c.name);
            let mut status = json!({
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": running.is_some() && s.ready.contains(&c.name),
                "started": running.is_some() && s.started_ok.contains(&c.name),
                "restartCount": s.restarts.get(&c.name).copied().unwrap_or(0),
                "state": match (running, s.waiting.get(&c.name)) {
                    (Some(at), _) => json!({"running": {"startedAt": at}}),
                    (None, Some((reason, message))) => {
                        json!({"waiting": {"reason": reason, "message": message}})
                    }
                    (None, None) => json!({"waiting": {"reason": "ContainerCreating"}}),
                },
            });
            if let Some((code, reason, message)) = s.last.get(&c.name) {
                status["lastState"] = json!({"terminated": {
                    "exitCode": code, "reason": reason, "message": message, "finishedAt": now(),
                }});
            }
            status
        })
        .collect();
    let body = json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "startTime": s.started,
        "conditions": [cond("Initialized", true), cond("PodScheduled", true),
                       cond("ContainersReady", ready), cond("Ready", ready)],
        "containerStatuses": statuses,
    }});
    drop(s);
    if let Err(e) = api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        tracing::debug!(pod = name, error = %e, "pod status patch failed");
    }
}
