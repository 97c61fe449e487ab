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
//! pod's `/etc/resolv.conf` names the cluster DNS and
//! `/var/run/secrets/kubernetes.io/serviceaccount/` holds `ca.crt`, `namespace` and a
//! pod-bound TokenRequest token (renewed at 80 % of its hour), so programs run
//! unmodified, with RBAC applied to them as to a real pod.
//!
//! ConfigMap, Secret and emptyDir volumes are bind-mounted at their `mountPath` (the
//! host gets an empty folder there as the mount point) and kept in step with their
//! objects; `envFrom` is applied before `env`; readiness and liveness probes (`httpGet`,
//! `tcpSocket`) follow the kubelet's timing and thresholds, and a container that fails
//! its liveness probe is stopped and restarted, with events saying why. Pod IPs are
//! handed out round-robin over the node's /24 and reused once their pod is gone.
//!
//! Not supported (refused with a message naming it): other volume types, `subPath`,
//! `exec` and `grpc` probes.

mod probes;
mod volumes;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Event, Node, Pod, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use volumes::PodVolume;

use crate::Error;

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
}

/// Where a pod's service-account files appear, as on a real node.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Lifetime asked for service-account tokens; they are renewed at 80 %.
const TOKEN_SECONDS: i64 = 3600;

/// Files a pod's processes see in place of the host's (bind-mounted in a mount
/// namespace of their own).
#[derive(Debug, Clone)]
struct PodFiles {
    resolv_conf: PathBuf,
    service_account: PathBuf,
}

async fn request_token(client: &Client, pod: &Pod) -> Result<String, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                               "name": pod.metadata.name, "uid": pod.metadata.uid},
        },
    });
    let issued: serde_json::Value = accounts
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("TokenRequest for {ns}/{account}: {e}"))?;
    issued["status"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "TokenRequest answered without a token".into())
}

fn write_atomically(path: &std::path::Path, contents: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes the pod's resolv.conf and service-account folder.
async fn prepare_pod_files(
    client: &Client,
    config: &NodeConfig,
    pod: &Pod,
) -> Result<PodFiles, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let dir = config.log_dir.join("pods").join(format!("{ns}_{name}"));
    let service_account = dir.join("serviceaccount");
    std::fs::create_dir_all(&service_account)
        .map_err(|e| format!("cannot create {}: {e}", service_account.display()))?;
    let resolv_conf = dir.join("resolv.conf");
    write_atomically(
        &resolv_conf,
        format!(
            "nameserver {}\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
            config.dns
        )
        .as_bytes(),
    )?;
    let ca = std::fs::read(&config.ca_cert)
        .map_err(|e| format!("cannot read {}: {e}", config.ca_cert.display()))?;
    write_atomically(&service_account.join("ca.crt"), &ca)?;
    write_atomically(&service_account.join("namespace"), ns.as_bytes())?;
    let token = request_token(client, pod).await?;
    write_atomically(&service_account.join("token"), token.as_bytes())?;
    // The mount point must exist on the host.
    std::fs::create_dir_all(SERVICE_ACCOUNT_DIR)
        .map_err(|e| format!("cannot create {SERVICE_ACCOUNT_DIR}: {e}"))?;
    Ok(PodFiles {
        resolv_conf,
        service_account,
    })
}

/// The running node; stops its pods' processes when dropped.
#[derive(Debug)]
pub struct LocalNode {
    pub name: String,
    tasks: JoinSet<()>,
    pods: Arc<Mutex<HashMap<String, PodRun>>>,
}

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

fn field(pod: &Pod, ip: IpAddr, path: &str) -> Option<String> {
    let m = &pod.metadata;
    match path {
        "status.podIP" => Some(ip.to_string()),
        "metadata.name" => m.name.clone(),
        "metadata.namespace" => m.namespace.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref()?.service_account_name.clone(),
        "spec.nodeName" => pod.spec.as_ref()?.node_name.clone(),
        other => {
            let key = other
                .strip_prefix("metadata.labels['")?
                .strip_suffix("']")?;
            m.labels.as_ref()?.get(key).cloned()
        }
    }
}

/// Values a container's environment takes from ConfigMaps and Secrets, read at
/// container start as the kubelet does.
#[derive(Debug, Default)]
struct Referenced {
    /// From `envFrom`, in order, prefix applied.
    from: Vec<(String, String)>,
    /// `configMapKeyRef` / `secretKeyRef` values by env name.
    keys: BTreeMap<String, String>,
}

/// A ConfigMap's or Secret's data as strings; `None` when it does not exist.
async fn object_data(
    client: &Client,
    ns: &str,
    secret: bool,
    name: &str,
) -> Result<Option<BTreeMap<String, String>>, String> {
    if secret {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        Ok(secrets
            .get_opt(name)
            .await
            .map_err(|e| format!("secret {ns}/{name}: {e}"))?
            .map(|s| {
                s.data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            }))
    } else {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
        Ok(maps
            .get_opt(name)
            .await
            .map_err(|e| format!("configmap {ns}/{name}: {e}"))?
            .map(|m| m.data.unwrap_or_default()))
    }
}

/// Resolves `envFrom` and the `configMapKeyRef` / `secretKeyRef` env entries. A missing
/// object or key that is not optional is an error naming it (the kubelet's
/// `CreateContainerConfigError`); a missing optional one is left out, as are `envFrom`
/// keys that cannot be variable names.
async fn referenced_env(client: &Client, pod: &Pod, c: &Container) -> Result<Referenced, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = Referenced::default();
    for source in c.env_from.iter().flatten() {
        let (secret, name, optional) = if let Some(r) = &source.config_map_ref {
            (false, &r.name, r.optional)
        } else if let Some(r) = &source.secret_ref {
            (true, &r.name, r.optional)
        } else {
            continue;
        };
        let kind = if secret { "secret" } else { "configmap" };
        match object_data(client, &ns, secret, name).await? {
            Some(data) => {
                let prefix = source.prefix.clone().unwrap_or_default();
                for (k, v) in data {
                    let var = format!("{prefix}{k}");
                    if var.is_empty() || var.contains('=') || var.contains('\0') {
                        tracing::warn!(%var, "envFrom {kind} {ns}/{name}: not a variable name, skipped");
                        continue;
                    }
                    out.from.push((var, v));
                }
            }
            None if optional == Some(true) => {}
            None => return Err(format!("envFrom: {kind} {ns}/{name} not found")),
        }
    }
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        let (secret, r_name, key, optional) = if let Some(r) = &from.config_map_key_ref {
            (false, &r.name, &r.key, r.optional)
        } else if let Some(r) = &from.secret_key_ref {
            (true, &r.name, &r.key, r.optional)
        } else {
            continue;
        };
        let kind = if secret { "secret" } else { "configmap" };
        let value = object_data(client, &ns, secret, r_name)
            .await?
            .and_then(|mut d| d.remove(key));
        match value {
            Some(v) => {
                out.keys.insert(e.name.clone(), v);
            }
            None if optional == Some(true) => {}
            None => {
                return Err(format!(
                    "env {}: {kind} {ns}/{r_name} has no key {key:?} (or does not exist)",
                    e.name
                ));
            }
        }
    }
    Ok(out)
}

/// The container's environment as a kubelet gives it: the service variables, then
/// `envFrom`, then `env` (a later entry wins).
/// `$(NAME)` in a command or argument becomes the container's variable NAME, as the
/// kubelet does; `$$` is a literal `$`; an undefined name is left as written.
fn expand(arg: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after.strip_prefix('(').and_then(|a| a.split_once(')'))
            && let Some((_, value)) = env.iter().rev().find(|(k, _)| k == name)
        {
            out.push_str(value);
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn environment(
    pod: &Pod,
    c: &Container,
    ip: IpAddr,
    api_port: u16,
    referenced: &Referenced,
) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
        (
            "HOSTNAME".to_owned(),
            pod.metadata.name.clone().unwrap_or_default(),
        ),
        ("KUBERNETES_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), api_port.to_string()),
    ];
    env.extend(referenced.from.iter().cloned());
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(from)) => match &from.field_ref {
                Some(f) => field(pod, ip, &f.field_path),
                None => referenced.keys.get(&e.name).cloned(),
            },
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            env.push((e.name.clone(), v));
        }
    }
    env
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
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
                        tokio::spawn(async move {
                            stop_pod(&pids, Duration::from_secs(grace.max(0) as u64)).await;
                            if let Some(mut run) = p2.lock().await.remove(&uid) {
                                run.tasks.abort_all();
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
                let mut run = run_pod(client.clone(), config.clone(), pod, ip);
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

/// Shared, per pod: what the status patch reports.
#[derive(Debug)]
struct PodState {
    started: String,
    restarts: BTreeMap<String, i32>,
    /// Running containers, with the time they started.
    running: BTreeMap<String, String>,
    /// Why a container is not running: (reason, message).
    waiting: BTreeMap<String, (String, String)>,
    /// Containers whose readiness probe passes (or that have none and run).
    ready: BTreeSet<String>,
    /// How a container's previous run ended: (exit code, reason, message).
    last: BTreeMap<String, (i32, String, String)>,
}

impl PodState {
    fn new() -> Self {
        Self {
            started: now(),
            restarts: BTreeMap::new(),
            running: BTreeMap::new(),
            waiting: BTreeMap::new(),
            ready: BTreeSet::new(),
            last: BTreeMap::new(),
        }
    }
}

/// What every task of one pod shares.
struct PodCtx {
    client: Client,
    config: Arc<NodeConfig>,
    pod: Pod,
    name: String,
    ns: String,
    ip: IpAddr,
    api: Api<Pod>,
    pids: Arc<Mutex<BTreeMap<String, u32>>>,
    state: Mutex<PodState>,
    /// The last event recorded per container and reason, so a repeated failure is one
    /// event rather than a stream of them.
    events: Mutex<BTreeSet<(String, String, String)>>,
}

impl PodCtx {
    async fn patch_status(&self) {
        patch_status(&self.api, &self.name, &self.pod, self.ip, &self.state).await;
    }

    /// Marks the container as waiting for `reason`, reports it, and records a Warning
    /// event the first time this message is seen.
    async fn waiting(&self, container: &str, reason: &str, message: String) {
        self.waiting_because(container, reason, reason, message)
            .await;
    }

    /// [`PodCtx::waiting`] with an event reason of its own (e.g. `FailedMount` while
    /// the container is `ContainerCreating`).
    async fn waiting_because(&self, container: &str, reason: &str, event: &str, message: String) {
        tracing::warn!(pod = %self.name, container, reason, %message);
        self.event(container, "Warning", event, &message).await;
        self.state
            .lock()
            .await
            .waiting
            .insert(container.to_owned(), (reason.to_owned(), message));
        self.patch_status().await;
    }

    async fn event(&self, container: &str, type_: &str, reason: &str, message: &str) {
        let key = (container.to_owned(), reason.to_owned(), message.to_owned());
        if !self.events.lock().await.insert(key) {
            return;
        }
        record_event(&self.client, &self.pod, container, type_, reason, message).await;
    }
}

/// Creates a core/v1 Event about the pod, as `kubectl describe pod` shows them.
async fn record_event(
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

/// Restart back-off after a container exits: doubling from 1 s to 30 s for a container
/// that keeps exiting within 10 s of its start (the kubelet's CrashLoopBackOff, shorter).
fn restart_delay(quick_exits: u32) -> Duration {
    Duration::from_secs(1 << quick_exits.min(5)).min(Duration::from_secs(30))
}

fn run_pod(client: Client, config: Arc<NodeConfig>, pod: Pod, ip: IpAddr) -> PodRun {
    let mut tasks = JoinSet::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let root = config.log_dir.join("pods").join(format!("{ns}_{name}"));
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
            let planned = loop {
                let attempt = async {
                    let planned = volumes::plan(&ctx.pod, &root.join("volumes"))?;
                    for v in &planned {
                        volumes::set_up(&ctx.client, &ctx.ns, v).await?;
                    }
                    Ok::<_, String>(planned)
                };
                match attempt.await {
                    Ok(planned) => break planned,
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
            let syncing = planned
                .into_iter()
                .map(|v| volumes::keep_in_sync(ctx.client.clone(), ctx.ns.clone(), v));
            futures_util::future::join_all(syncing).await;
            std::future::pending::<()>().await;
        });
    }

    for c in spec.containers.clone() {
        let (ctx, files, policy) = (ctx.clone(), files.clone(), policy.clone());
        let mut volumes_rx = volumes_rx.clone();
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        tasks.spawn(async move {
            let log = ctx
                .config
                .log_dir
                .join(format!("{}_{}_{}.log", ctx.ns, ctx.name, c.name));
            let files = loop {
                match files
                    .get_or_try_init(|| prepare_pod_files(&ctx.client, &ctx.config, &ctx.pod))
                    .await
                {
                    Ok(f) => break f.clone(),
                    Err(e) => {
                        let _ = std::fs::write(&log, format!("process kubelet: {e}\n"));
                        ctx.waiting(&c.name, "ContainerCreating", e).await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            };
            // An image without a local binary never starts, as an image that cannot be
            // pulled: the status says so, and it is retried with a back-off.
            let image = c.image.clone().unwrap_or_default();
            let binary = loop {
                if let Some(b) = ctx.config.images.binary(&image) {
                    break b.clone();
                }
                let known: Vec<&String> = ctx.config.images.names().collect();
                let reason = if ctx.state.lock().await.waiting.contains_key(&c.name) {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                let message = format!(
                    "no local binary for image {image:?}; this node runs images named {known:?} (add it to the node's ImageTable)"
                );
                ctx.waiting(&c.name, reason, message).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            };
            let Ok(planned) = volumes_rx.wait_for(Option::is_some).await.map(|v| v.clone()) else {
                return;
            };
            let planned = planned.unwrap_or_default();
            // Errors in the container's own spec cannot change (a pod is immutable):
            // reported once, and the container never starts.
            let setup = (|| {
                let mounts = volumes::mounts(&c, &planned)?;
                for (_, target, _) in &mounts {
                    std::fs::create_dir_all(target).map_err(|e| {
                        format!("cannot create the mount point {}: {e}", target.display())
                    })?;
                }
                let readiness = c.readiness_probe.as_ref().map(|p| probes::spec(&c, p)).transpose()?;
                let liveness = c.liveness_probe.as_ref().map(|p| probes::spec(&c, p)).transpose()?;
                Ok::<_, String>((mounts, readiness, liveness))
            })();
            let (mounts, readiness, liveness) = match setup {
                Ok(s) => s,
                Err(e) => return ctx.waiting(&c.name, "CreateContainerConfigError", e).await,
            };
            let container = ContainerPlan {
                c: &c,
                log: &log,
                binary: &binary,
                files: &files,
                mounts: &mounts,
                readiness: readiness.as_ref(),
                liveness: liveness.as_ref(),
                grace,
            };
            let mut quick_exits = 0;
            loop {
                let referenced = match referenced_env(&ctx.client, &ctx.pod, &c).await {
                    Ok(r) => {
                        ctx.state.lock().await.waiting.remove(&c.name);
                        r
                    }
                    Err(message) => {
                        ctx.waiting(&c.name, "CreateContainerConfigError", message).await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                };
                let started = tokio::time::Instant::now();
                let exit = run_container(&ctx, &container, &referenced).await;
                {
                    let mut s = ctx.state.lock().await;
                    s.running.remove(&c.name);
                    s.ready.remove(&c.name);
                    s.last.insert(c.name.clone(), exit.clone());
                }
                ctx.patch_status().await;
                let restart = match policy.as_str() {
                    "Always" => true,
                    "OnFailure" => exit.0 != 0,
                    _ => false,
                };
                if !restart {
                    return;
                }
                quick_exits = if started.elapsed() < Duration::from_secs(10) {
                    quick_exits + 1
                } else {
                    0
                };
                let delay = restart_delay(quick_exits);
                *ctx.state.lock().await.restarts.entry(c.name.clone()).or_default() += 1;
                if quick_exits > 1 {
                    ctx.state.lock().await.waiting.insert(
                        c.name.clone(),
                        (
                            "CrashLoopBackOff".into(),
                            format!("back-off {delay:?} restarting failed container"),
                        ),
                    );
                    ctx.patch_status().await;
                }
                tokio::time::sleep(delay).await;
            }
        });
    }

    // Bound tokens expire: renew at 80 % of their life, as the kubelet does.
    {
        let (ctx, files) = (ctx.clone(), files.clone());
        tasks.spawn(async move {
            let renew = Duration::from_secs((TOKEN_SECONDS * 8 / 10) as u64);
            loop {
                tokio::time::sleep(renew).await;
                let Some(f) = files.get() else { continue };
                match request_token(&ctx.client, &ctx.pod).await {
                    Ok(t) => {
                        let _ = write_atomically(&f.service_account.join("token"), t.as_bytes());
                    }
                    Err(e) => tracing::warn!(error = %e, "token renewal failed"),
                }
            }
        });
    }
    PodRun {
        key: format!("{}/{}", ctx.ns, ctx.name),
        octet: 0,
        pids,
        tasks,
        deleting: false,
    }
}

/// One container of a pod, as the node runs it.
struct ContainerPlan<'a> {
    c: &'a Container,
    log: &'a std::path::Path,
    binary: &'a std::path::Path,
    files: &'a PodFiles,
    /// (host folder, mount path, read-only)
    mounts: &'a [(PathBuf, PathBuf, bool)],
    readiness: Option<&'a probes::ProbeSpec>,
    liveness: Option<&'a probes::ProbeSpec>,
    grace: Duration,
}

/// Runs the container's process once, with its probes; returns how it ended:
/// (exit code, reason, message), a signal `n` giving code 128 + n.
async fn run_container(
    ctx: &PodCtx,
    k: &ContainerPlan<'_>,
    referenced: &Referenced,
) -> (i32, String, String) {
    let c = k.c;
    let failed = |e: String| (128, "StartError".to_owned(), e);
    let out = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(k.log)
    {
        Ok(f) => f,
        Err(e) => return failed(format!("cannot open {}: {e}", k.log.display())),
    };
    let Ok(err) = out.try_clone() else {
        return failed("cannot duplicate the log file".into());
    };
    // A mount namespace of its own, where the pod's resolv.conf, service-account folder
    // and volumes are bind-mounted over the host's paths; then the container's program.
    let mut script = String::from(
        "set -e; mount --bind \"$1\" /etc/resolv.conf; mount --bind \"$2\" \"$3\"; shift 3; \
         while [ \"$1\" != -- ]; do mount --bind \"$1\" \"$2\"; \
         if [ \"$3\" = ro ]; then mount -o remount,bind,ro \"$2\"; fi; shift 3; done; shift; ",
    );
    script.push_str("exec \"$@\"");
    let mut cmd = tokio::process::Command::new("/usr/bin/unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(script)
        .arg("sh")
        .arg(&k.files.resolv_conf)
        .arg(&k.files.service_account)
        .arg(SERVICE_ACCOUNT_DIR);
    for (host, target, read_only) in k.mounts {
        cmd.arg(host)
            .arg(target)
            .arg(if *read_only { "ro" } else { "rw" });
    }
    let env = environment(&ctx.pod, c, ctx.ip, ctx.config.api_port, referenced);
    let expanded = |a: &String| expand(a, &env);
    cmd.arg("--")
        .arg(k.binary)
        .args(c.command.iter().flatten().skip(1).map(expanded))
        .args(c.args.iter().flatten().map(expanded))
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot start {}: {e}", k.binary.display())),
    };
    let pid = child.id();
    if let Some(pid) = pid {
        ctx.pids.lock().await.insert(c.name.clone(), pid);
    }
    ctx.state.lock().await.running.insert(c.name.clone(), now());
    ctx.patch_status().await;

    let readiness = async {
        let Some(p) = k.readiness else {
            ctx.state.lock().await.ready.insert(c.name.clone());
            ctx.patch_status().await;
            return std::future::pending().await;
        };
        tokio::time::sleep(p.initial_delay).await;
        let mut verdict = probes::Verdict::new(p, false);
        let mut every = tokio::time::interval(p.period);
        loop {
            every.tick().await;
            let ready = verdict.record(probes::run(ctx.ip, p).await.is_ok());
            let changed = {
                let mut s = ctx.state.lock().await;
                if ready {
                    s.ready.insert(c.name.clone())
                } else {
                    s.ready.remove(&c.name)
                }
            };
            if changed {
                ctx.patch_status().await;
            }
        }
    };
    let liveness = async {
        let Some(p) = k.liveness else {
            return std::future::pending().await;
        };
        tokio::time::sleep(p.initial_delay).await;
        let mut verdict = probes::Verdict::new(p, true);
        let mut every = tokio::time::interval(p.period);
        loop {
            every.tick().await;
            match probes::run(ctx.ip, p).await {
                Ok(()) => {
                    verdict.record(true);
                }
                Err(e) => {
                    ctx.event(
                        &c.name,
                        "Warning",
                        "Unhealthy",
                        &format!("Liveness probe failed: {e}"),
                    )
                    .await;
                    if !verdict.record(false) {
                        return e;
                    }
                }
            }
        }
    };
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        () = readiness => None,
        why = liveness => {
            let message = format!("Container {} failed liveness probe, will be restarted", c.name);
            tracing::warn!(pod = %ctx.name, %message, probe = %why);
            record_event(&ctx.client, &ctx.pod, &c.name, "Normal", "Killing", &message).await;
            if let Some(pid) = pid {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            match tokio::time::timeout(k.grace, child.wait()).await {
                Ok(status) => status.ok(),
                Err(_) => {
                    let _ = child.kill().await;
                    child.wait().await.ok()
                }
            }
        }
    };
    ctx.pids.lock().await.remove(&c.name);
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(0), _) => (0, "Completed".into(), String::new()),
            (Some(code), _) => (code, "Error".into(), String::new()),
            (None, Some(signal)) => (
                128 + signal,
                "Error".into(),
                format!("killed by signal {signal}"),
            ),
            (None, None) => (128, "Error".into(), String::new()),
        },
        None => (128, "Error".into(), "lost track of the process".into()),
    }
}

async fn patch_status(api: &Api<Pod>, name: &str, pod: &Pod, ip: IpAddr, state: &Mutex<PodState>) {
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
                "started": running.is_some(),
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
    fn variables_in_arguments_are_expanded_as_the_kubelet_does() {
        let env = vec![
            ("POD_IP".to_owned(), "10.0.0.7".to_owned()),
            ("PORT".to_owned(), "80".to_owned()),
        ];
        assert_eq!(expand("$(POD_IP):8080", &env), "10.0.0.7:8080");
        assert_eq!(expand("a$(PORT)b$(PORT)", &env), "a80b80");
        assert_eq!(expand("$$(POD_IP)", &env), "$(POD_IP)", "escaped");
        assert_eq!(
            expand("$(NOPE) $ $(", &env),
            "$(NOPE) $ $(",
            "left as written"
        );
    }

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

    #[test]
    fn restart_back_off_doubles_to_a_cap() {
        assert_eq!(restart_delay(0), Duration::from_secs(1));
        assert_eq!(restart_delay(1), Duration::from_secs(2));
        assert_eq!(restart_delay(3), Duration::from_secs(8));
        assert_eq!(restart_delay(40), Duration::from_secs(30));
    }
}
