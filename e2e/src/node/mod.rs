//! A process kubelet: registers a Node, runs the containers of the pods bound to it as
//! local processes, each pod on its own 127.x address, and reports them in pod status.
//!
//! What it does, as a kubelet would: container images map to local binaries through a
//! table (`…/muster-agent:TAG` → the built `muster-agent`); `env` is passed with
//! `value`, `configMapKeyRef`, `secretKeyRef` and `fieldRef` (`status.podIP`, `metadata.name`, `metadata.namespace`,
//! `metadata.labels['…']`, `spec.serviceAccountName`) resolved, and `$(NAME)` in
//! `command`/`args` expanded from it; `KUBERNETES_SERVICE_HOST`
//! and `_PORT` point at the API server; HTTP readiness probes set the Ready condition;
//! crashed containers restart per `restartPolicy` with `restartCount`; a deleted pod's
//! processes get SIGTERM, SIGKILL after the grace period, then the pod is removed.
//!
//! Each container runs in a mount namespace of its own (`unshare`, needs root) where the
//! pod's `/etc/resolv.conf` names the cluster DNS and, in the containers that mount a
//! token volume there (what the ServiceAccount admission plugin adds to every container
//! unless `automountServiceAccountToken` is false, or a projected token volume the pod
//! mounts itself), `/var/run/secrets/kubernetes.io/serviceaccount/` holds `ca.crt`,
//! `namespace` and a pod-bound TokenRequest token (renewed at 80 % of its hour), so
//! programs run unmodified, with RBAC applied to them as to a real pod; a container
//! without such a mount has no token, as on a real node.
//!
//! ConfigMap, Secret, emptyDir and persistentVolumeClaim volumes (the folder of the
//! claim's bound `hostPath` volume, once bound; see [`crate::provisioner`]) are
//! bind-mounted at their `mountPath` (the host gets an empty folder there as the mount
//! point) and kept in step with their
//! objects as late as a kubelet keeps them ([`VolumeRefresh`]: at pod syncs 60–90 s apart by default); `envFrom` is applied before `env`; startup, readiness and liveness probes (`httpGet`,
//! `tcpSocket`) follow the kubelet's timing and thresholds (readiness and liveness only
//! once a startup probe succeeded), and a container that fails its liveness or startup
//! probe is stopped and restarted, with events saying why. Pod IPs are
//! handed out round-robin over the node's /24 and reused once their pod is gone.
//!
//! Not supported (refused with a message naming it): other volume types, `subPath`,
//! `exec` and `grpc` probes.

//!
//! By concern: this file registers the node and follows the pods bound to it;
//! [`pod`] runs one pod (volumes, its containers, token renewal), [`container`] one
//! container (restarts, the process in its mount namespace, probes), [`env`] what a
//! container's environment holds, [`service_account`] the pod's resolv.conf and token
//! files, [`status`] what the pod status reports, [`volumes`] and [`probes`] those.

mod container;
mod env;
mod pod;
mod probes;
mod service_account;
mod status;
mod volumes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use crate::Error;

pub use service_account::SERVICE_ACCOUNT_DIR;
pub use volumes::VolumeRefresh;

/// Image name (last path segment, without tag) → binary.
#[derive(Debug, Clone, Default)]
pub struct ImageTable {
    binaries: BTreeMap<String, PathBuf>,
}

impl ImageTable {
    pub fn with(mut self, image_name: &str, binary: PathBuf) -> Self {
        self.binaries.insert(image_name.to_owned(), binary);
        self
    }

    /// The image names this table maps.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.binaries.keys()
    }

    /// `registry/muster/muster-agent:1.2` → the binary registered as `muster-agent`.
    pub fn binary(&self, image: &str) -> Option<&PathBuf> {
        let last = image.rsplit('/').next()?;
        let name = last.split([':', '@']).next()?;
        self.binaries.get(name)
    }
}

/// Settings of a local node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    /// Pods get `base.1`, `base.2`, … (the last octet counts up).
    pub pod_subnet: [u8; 3],
    pub images: ImageTable,
    /// Where containers' logs go (`NAMESPACE_POD_CONTAINER.log`).
    pub log_dir: PathBuf,
    /// API server port for `KUBERNETES_SERVICE_PORT` (host 127.0.0.1).
    pub api_port: u16,
    /// CA certificate of the API server, given to pods as `ca.crt`.
    pub ca_cert: PathBuf,
    /// The cluster DNS (listening on port 53), written into each pod's
    /// `/etc/resolv.conf`.
    pub dns: IpAddr,
    /// How late ConfigMap/Secret updates reach mounted volumes (default: a kubelet's).
    pub volume_refresh: VolumeRefresh,
}

/// The running node; stops its pods' processes when dropped.
#[derive(Debug)]
pub struct LocalNode {
    pub name: String,
    tasks: JoinSet<()>,
    pods: Arc<Mutex<HashMap<String, PodRun>>>,
}

/// One pod this node runs.
#[derive(Debug)]
struct PodRun {
    /// `namespace/name`.
    key: String,
    /// Last octet of the pod's IP.
    octet: u8,
    /// Process ids of the running containers.
    pids: Arc<Mutex<BTreeMap<String, u32>>>,
    tasks: JoinSet<()>,
    deleting: bool,
}

impl LocalNode {
    /// Registers the node (schedulable, Ready) and starts serving its pods.
    pub async fn start(client: Client, config: NodeConfig) -> Result<Self, Error> {
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": config.name, "labels": {"kubernetes.io/hostname": config.name}},
        }))
        .map_err(|e| Error::Setup(e.to_string()))?;
        nodes.create(&PostParams::default(), &node).await?;
        // Admission taints a new node not-ready; the node lifecycle controller (off here)
        // would lift it once the kubelet reports Ready.
        nodes
            .patch(
                &config.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"taints": null}})),
            )
            .await?;
        nodes
            .patch_status(
                &config.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                     "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                  {"type": "Hostname", "address": config.name}],
                    "capacity": {"cpu": "64", "memory": "256Gi", "pods": "250"},
                    "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "250"},
                }})),
            )
            .await?;

        let pods: Arc<Mutex<HashMap<String, PodRun>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let (p, name) = (pods.clone(), config.name.clone());
        let api: Api<Pod> = Api::all(client.clone());
        let stream = watcher(
            api,
            watcher::Config::default().fields(&format!("spec.nodeName={name}")),
        )
        .default_backoff()
        .applied_objects();
        let cache = volumes::ObjectCache::new(config.volume_refresh.cache_ttl);
        let config = Arc::new(config);
        tasks.spawn(async move {
            let mut last_ip: u8 = 0;
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(pod) = event else { continue };
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                let mut runs = p.lock().await;
                if pod.metadata.deletion_timestamp.is_some() {
                    if let Some(run) = runs.get_mut(&uid).filter(|r| !r.deleting) {
                        run.deleting = true;
                        let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
                        let pids = run.pids.clone();
                        let client = client.clone();
                        let p2 = p.clone();
                        let volumes = pod::volumes_dir(&config, &pod);
                        tokio::spawn(async move {
                            stop_pod(&pids, Duration::from_secs(grace.max(0) as u64)).await;
                            let run = p2.lock().await.remove(&uid);
                            if let Some(mut run) = run {
                                // Every task ended, so none writes a volume file again.
                                run.tasks.shutdown().await;
                            }
                            // The pod's own folders (emptyDir, ConfigMap and Secret copies;
                            // a claim's folder is the volume's, elsewhere) go with it.
                            if let Err(e) = std::fs::remove_dir_all(&volumes)
                                && e.kind() != std::io::ErrorKind::NotFound
                            {
                                tracing::warn!(folder = %volumes.display(), error = %e, "cannot remove a deleted pod's volumes");
                            }
                            remove_pod(&client, &pod, &uid).await;
                        });
                    } else if !runs.contains_key(&uid) {
                        // Never started here: nothing to stop.
                        remove_pod(&client, &pod, &uid).await;
                    }
                    continue;
                }
                if runs.contains_key(&uid) {
                    continue;
                }
                let used: BTreeSet<u8> = runs.values().map(|r| r.octet).collect();
                let Some(octet) = next_free(last_ip, &used) else {
                    tracing::warn!(pod = ?pod.metadata.name, "no free pod IP: 254 pods run on this node");
                    continue;
                };
                last_ip = octet;
                let [a, b, c] = config.pod_subnet;
                let ip = IpAddr::V4(Ipv4Addr::new(a, b, c, octet));
                let mut run = pod::run(client.clone(), config.clone(), cache.clone(), pod, ip);
                run.octet = octet;
                runs.insert(uid, run);
            }
        });
        Ok(Self { name, tasks, pods })
    }
}

/// The pod IP's last octet after `last`, round-robin over 1..=254 skipping those in
/// use (as CNI's host-local IPAM does), so a freed address is not handed out again at
/// once; `None` when all are taken.
fn next_free(last: u8, used: &BTreeSet<u8>) -> Option<u8> {
    (0..254u16)
        .map(|i| ((u16::from(last) + i) % 254 + 1) as u8)
        .find(|o| !used.contains(o))
}

impl LocalNode {
    /// The process id of a running container (for looking at what it sees, e.g.
    /// through `/proc/PID/root`).
    pub async fn container_pid(&self, namespace: &str, pod: &str, container: &str) -> Option<u32> {
        let key = format!("{namespace}/{pod}");
        let runs = self.pods.lock().await;
        let run = runs.values().find(|r| r.key == key)?;
        run.pids.lock().await.get(container).copied()
    }
}

async fn remove_pod(client: &Client, pod: &Pod, uid: &str) {
    let (Some(name), Some(ns)) = (&pod.metadata.name, &pod.metadata.namespace) else {
        return;
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let _ = api.delete(name, &dp).await;
}

async fn stop_pod(pids: &Mutex<BTreeMap<String, u32>>, grace: Duration) {
    let running: Vec<u32> = pids.lock().await.values().copied().collect();
    for pid in &running {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    let mut every = tokio::time::interval(Duration::from_millis(50));
    loop {
        every.tick().await;
        let alive = running
            .iter()
            .any(|p| kill(Pid::from_raw(*p as i32), None).is_ok());
        if !alive {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            for pid in &running {
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
            return;
        }
    }
}

/// The time now, as pod status and events write it.
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl Drop for LocalNode {
    fn drop(&mut self) {
        self.tasks.abort_all();
        if let Ok(mut pods) = self.pods.try_lock() {
            for run in pods.values_mut() {
                run.tasks.abort_all(); // kill_on_drop ends the processes
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ips_go_round_robin_and_are_reused_once_free() {
        let none = BTreeSet::new();
        assert_eq!(next_free(0, &none), Some(1));
        assert_eq!(next_free(7, &none), Some(8));
        assert_eq!(next_free(254, &none), Some(1), "wraps after .254");
        let used: BTreeSet<u8> = [1, 2, 4].into();
        assert_eq!(next_free(1, &used), Some(3));
        assert_eq!(next_free(254, &used), Some(3));
        let full: BTreeSet<u8> = (1..=254).collect();
        assert_eq!(next_free(9, &full), None);
        let one_left: BTreeSet<u8> = (1..=254).filter(|o| *o != 9).collect();
        assert_eq!(next_free(200, &one_left), Some(9));
    }
}
