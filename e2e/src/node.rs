//! A process kubelet: registers a Node, runs the containers of the pods bound to it as
//! local processes, each pod on its own 127.x address, and reports them in pod status.
//!
//! What it does, as a kubelet would: container images map to local binaries through a
//! table (`…/muster-agent:TAG` → the built `muster-agent`); `env` is passed with
//! `value`, `configMapKeyRef`, `secretKeyRef` and `fieldRef` (`status.podIP`, `metadata.name`, `metadata.namespace`,
//! `metadata.labels['…']`, `spec.serviceAccountName`) resolved; `KUBERNETES_SERVICE_HOST`
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
//! Not yet: ConfigMap/Secret volumes, `envFrom`, liveness probes.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::task::JoinSet;

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

/// The container's environment as a kubelet would give it.
/// Values of `configMapKeyRef` / `secretKeyRef` env entries, read at container start
/// as the kubelet does. A missing required key is an error that names it (the kubelet's
/// `CreateContainerConfigError`); a missing optional one is left out.
async fn referenced_env(
    client: &Client,
    pod: &Pod,
    c: &Container,
) -> Result<BTreeMap<String, String>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    for e in c.env.iter().flatten() {
        let Some(from) = &e.value_from else { continue };
        let (kind, object, key, optional, value) = if let Some(r) = &from.config_map_key_ref {
            let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            let found = maps
                .get_opt(&r.name)
                .await
                .map_err(|err| err.to_string())?
                .and_then(|m| m.data?.get(&r.key).cloned());
            ("configmap", &r.name, &r.key, r.optional, found)
        } else if let Some(r) = &from.secret_key_ref {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let found = secrets
                .get_opt(&r.name)
                .await
                .map_err(|err| err.to_string())?
                .and_then(|s| s.data?.get(&r.key).cloned())
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            ("secret", &r.name, &r.key, r.optional, found)
        } else {
            continue;
        };
        match value {
            Some(v) => {
                out.insert(e.name.clone(), v);
            }
            None if optional == Some(true) => {}
            None => {
                return Err(format!(
                    "env {}: {kind} {ns}/{object} has no key {key:?} (or does not exist)",
                    e.name
                ));
            }
        }
    }
    Ok(out)
}

fn environment(
    pod: &Pod,
    c: &Container,
    ip: IpAddr,
    api_port: u16,
    referenced: &BTreeMap<String, String>,
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
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(from)) => match &from.field_ref {
                Some(f) => field(pod, ip, &f.field_path),
                None => referenced.get(&e.name).cloned(),
            },
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            env.push((e.name.clone(), v));
        }
    }
    env
}

async fn http_ok(ip: IpAddr, port: u16, path: &str) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        let code: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
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
            let mut next_ip: u8 = 1;
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
                let [a, b, c] = config.pod_subnet;
                let ip = IpAddr::V4(Ipv4Addr::new(a, b, c, next_ip));
                next_ip = next_ip.wrapping_add(1).max(1);
                let run = run_pod(client.clone(), config.clone(), pod, ip);
                runs.insert(uid, run);
            }
        });
        Ok(Self { name, tasks, pods })
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
#[derive(Debug, Default)]
struct PodState {
    restarts: BTreeMap<String, i32>,
    running: BTreeMap<String, bool>,
    /// Why a container is not running: (reason, message).
    waiting: BTreeMap<String, (String, String)>,
    ready: bool,
}

fn run_pod(client: Client, config: Arc<NodeConfig>, pod: Pod, ip: IpAddr) -> PodRun {
    let pids: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let state: Arc<Mutex<PodState>> = Arc::default();
    let mut tasks = JoinSet::new();
    let spec = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let files: Arc<tokio::sync::OnceCell<Result<PodFiles, String>>> = Arc::default();

    for c in spec.containers.clone() {
        let (pids, state, api, config, pod) = (
            pids.clone(),
            state.clone(),
            api.clone(),
            config.clone(),
            pod.clone(),
        );
        let (name, ns, policy) = (name.clone(), ns.clone(), restart_policy.clone());
        let (files, client) = (files.clone(), client.clone());
        tasks.spawn(async move {
            let log = config.log_dir.join(format!("{ns}_{name}_{}.log", c.name));
            let files = match files
                .get_or_init(|| prepare_pod_files(&client, &config, &pod))
                .await
            {
                Ok(f) => f.clone(),
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "cannot prepare the pod's files");
                    let _ = std::fs::write(&log, format!("process kubelet: {e}\n"));
                    return;
                }
            };
            // An image without a local binary never starts, as an image that cannot be
            // pulled: the status says so, and it is retried with a back-off.
            let image = c.image.clone().unwrap_or_default();
            let binary = loop {
                if let Some(b) = config.images.binary(&image) {
                    break b.clone();
                }
                let known: Vec<&String> = config.images.names().collect();
                let reason = if state.lock().await.waiting.contains_key(&c.name) {
                    "ImagePullBackOff"
                } else {
                    "ErrImagePull"
                };
                let message = format!(
                    "no local binary for image {image:?}; this node runs images named {known:?} (add it to the node's ImageTable)"
                );
                tracing::warn!(pod = %name, %message);
                state.lock().await.waiting.insert(c.name.clone(), (reason.into(), message));
                patch_status(&api, &name, &pod, ip, &state).await;
                tokio::time::sleep(Duration::from_secs(5)).await;
            };
            state.lock().await.waiting.remove(&c.name);
            loop {
                let referenced = match referenced_env(&client, &pod, &c).await {
                    Ok(r) => {
                        state.lock().await.waiting.remove(&c.name);
                        r
                    }
                    Err(message) => {
                        tracing::warn!(pod = %name, %message);
                        state.lock().await.waiting.insert(
                            c.name.clone(),
                            ("CreateContainerConfigError".into(), message),
                        );
                        patch_status(&api, &name, &pod, ip, &state).await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        continue;
                    }
                };
                let exit = run_container(
                    &config, &pod, &c, ip, &log, &binary, &referenced, &files, &pids, &state,
                    &api,
                )
                .await;
                state.lock().await.running.insert(c.name.clone(), false);
                patch_status(&api, &name, &pod, ip, &state).await;
                let restart = match policy.as_str() {
                    "Always" => true,
                    "OnFailure" => exit != Some(0),
                    _ => false,
                };
                if !restart {
                    return;
                }
                *state
                    .lock()
                    .await
                    .restarts
                    .entry(c.name.clone())
                    .or_default() += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    // Bound tokens expire: renew at 80 % of their life, as the kubelet does.
    {
        let (client, pod, files) = (client.clone(), pod.clone(), files.clone());
        tasks.spawn(async move {
            let renew = Duration::from_secs((TOKEN_SECONDS * 8 / 10) as u64);
            loop {
                tokio::time::sleep(renew).await;
                let Some(Ok(f)) = files.get() else { continue };
                match request_token(&client, &pod).await {
                    Ok(t) => {
                        let _ = write_atomically(&f.service_account.join("token"), t.as_bytes());
                    }
                    Err(e) => tracing::warn!(error = %e, "token renewal failed"),
                }
            }
        });
    }

    // Readiness: every container's httpGet probe (none: ready once running).
    let probes: Vec<(u16, String, u64)> = spec
        .containers
        .iter()
        .filter_map(|c| {
            let p = c.readiness_probe.as_ref()?;
            let get = p.http_get.as_ref()?;
            let port = match &get.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => {
                    u16::try_from(*n).ok()?
                }
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(n) => c
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(n.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok())?,
            };
            let period = p.period_seconds.unwrap_or(10).max(1) as u64;
            Some((port, get.path.clone().unwrap_or_else(|| "/".into()), period))
        })
        .collect();
    let containers = spec.containers.len();
    tasks.spawn(async move {
        let period = probes.iter().map(|p| p.2).min().unwrap_or(1);
        let mut every = tokio::time::interval(Duration::from_secs(period));
        loop {
            every.tick().await;
            let mut ok = state.lock().await.running.values().filter(|r| **r).count() == containers;
            for (port, path, _) in &probes {
                ok = ok && http_ok(ip, *port, path).await;
            }
            let changed = {
                let mut s = state.lock().await;
                let changed = s.ready != ok;
                s.ready = ok;
                changed
            };
            if changed {
                patch_status(&api, &name, &pod, ip, &state).await;
            }
        }
    });
    PodRun {
        pids,
        tasks,
        deleting: false,
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_container(
    config: &NodeConfig,
    pod: &Pod,
    c: &Container,
    ip: IpAddr,
    log: &std::path::Path,
    binary: &std::path::Path,
    referenced: &BTreeMap<String, String>,
    files: &PodFiles,
    pids: &Mutex<BTreeMap<String, u32>>,
    state: &Mutex<PodState>,
    api: &Api<Pod>,
) -> Option<i32> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .ok()?;
    let err = out.try_clone().ok()?;
    // A mount namespace of its own, where the pod's resolv.conf and service-account
    // folder are bind-mounted over the host's paths; then the container's program.
    let mut cmd = tokio::process::Command::new("/usr/bin/unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(
            "set -e; mount --bind \"$1\" /etc/resolv.conf; mount --bind \"$2\" \"$3\"; shift 3; exec \"$@\"",
        )
        .arg("sh")
        .arg(&files.resolv_conf)
        .arg(&files.service_account)
        .arg(SERVICE_ACCOUNT_DIR)
        .arg(binary)
        .args(c.command.iter().flatten().skip(1))
        .args(c.args.iter().flatten())
        .env_clear()
        .envs(environment(pod, c, ip, config.api_port, referenced))
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    let mut child = cmd.spawn().ok()?;
    if let Some(pid) = child.id() {
        pids.lock().await.insert(c.name.clone(), pid);
    }
    state.lock().await.running.insert(c.name.clone(), true);
    patch_status(api, &name, pod, ip, state).await;
    let status = child.wait().await.ok();
    pids.lock().await.remove(&c.name);
    status.and_then(|s| s.code())
}

async fn patch_status(api: &Api<Pod>, name: &str, pod: &Pod, ip: IpAddr, state: &Mutex<PodState>) {
    let s = state.lock().await;
    let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": now()});
    let statuses: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|sp| sp.containers.iter())
        .map(|c| {
            let running = s.running.get(&c.name).copied().unwrap_or(false);
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "ready": running && s.ready,
                "started": running,
                "restartCount": s.restarts.get(&c.name).copied().unwrap_or(0),
                "state": match (running, s.waiting.get(&c.name)) {
                    (true, _) => json!({"running": {"startedAt": now()}}),
                    (false, Some((reason, message))) => {
                        json!({"waiting": {"reason": reason, "message": message}})
                    }
                    (false, None) => json!({"waiting": {"reason": "ContainerCreating"}}),
                },
            })
        })
        .collect();
    let body = json!({"status": {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "startTime": now(),
        "conditions": [cond("Initialized", true), cond("PodScheduled", true),
                       cond("ContainersReady", s.ready), cond("Ready", s.ready)],
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
