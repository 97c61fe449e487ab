//! Running `muster-operator` beside the local platform and watching what it does: for
//! the operator's e2e tests and its benchmark.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{Platform, Target};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use node_agent::api::{ClusterMembers, ManagementClient, check};
use node_agent::base::address::NodeAddress;
use node_agent::base::member::MemberStatus;
use operator::{ClusterSpec, ClusterSpecStatus};
use serde_json::json;

use super::{built_binary, local, poll, wait_for_crd};

/// A `muster-operator` process; SIGKILLed when dropped.
pub struct Operator {
    child: Child,
    listen: SocketAddr,
    log: PathBuf,
}

impl Operator {
    /// Watches the platform's namespace, with the leader Lease there.
    pub fn start(p: &Platform, identity: &str, listen: SocketAddr) -> Self {
        Self::start_with(p, identity, listen, &[], "info")
    }

    /// As [`Operator::start`], with more arguments and `RUST_LOG`.
    pub fn start_with(
        p: &Platform,
        identity: &str,
        listen: SocketAddr,
        more: &[&str],
        log_filter: &str,
    ) -> Self {
        let cp = p.control_plane().expect("the local platform");
        let log = cp.dir.join(format!("operator-{identity}.log"));
        let file = std::fs::File::create(&log).expect("operator log");
        let child = Command::new(built_binary("muster-operator"))
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", log_filter)
            .args(["--listen", &listen.to_string()])
            .args(["--namespace", &p.namespace])
            .args(["--lease-namespace", &p.namespace])
            .args(["--identity", identity])
            .args(more)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start muster-operator");
        Self { child, listen, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `/metrics`, sample name (with labels) → value.
    pub async fn metrics(&self) -> Result<BTreeMap<String, f64>, String> {
        let (code, body) = ManagementClient::default()
            .get(self.listen, "/metrics")
            .await?;
        if code != 200 {
            return Err(format!("/metrics answered {code}"));
        }
        Ok(String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// SIGTERM, then its exit status within `limit` (`None`: still running).
    pub async fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        self.exited(limit).await
    }

    /// Sends `signal` to the process; `None` when that failed.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Option<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).ok()?);
        nix::sys::signal::kill(pid, signal).ok()
    }

    /// Its log file.
    pub fn log_path(&self) -> &std::path::Path {
        &self.log
    }

    /// Its exit status once it has exited, within `limit` (`None`: still running).
    pub async fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.child;
        tokio::time::timeout(limit, async {
            let mut every = tokio::time::interval(Duration::from_millis(50));
            loop {
                every.tick().await;
                if let Ok(Some(status)) = child.try_wait() {
                    return status;
                }
            }
        })
        .await
        .ok()
    }
}

/// The last 30 lines of a log file.
pub fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Where a test finds the operator's log when it waits in vain.
pub trait OperatorLog {
    fn log_tail(&self) -> String;
}

impl OperatorLog for Operator {
    fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

/// The log of an operator that runs as a pod (its container's log file).
pub struct PodLog(pub PathBuf);

impl OperatorLog for PodLog {
    fn log_tail(&self) -> String {
        tail(&self.0)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes by the operator: every request that is not a read.
pub fn writes(m: &BTreeMap<String, f64>) -> f64 {
    ["POST", "PATCH", "PUT", "DELETE"]
        .iter()
        .map(|v| {
            m.get(&format!(
                "muster_operator_api_requests_total{{verb=\"{v}\"}}"
            ))
            .copied()
            .unwrap_or(0.0)
        })
        .sum()
}

/// The sum of every sample whose name starts with `prefix`.
pub fn total(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// `kubectl apply -f manifests/<file>` on the local platform.
pub fn apply_manifest(p: &Platform, file: &str) {
    let cp = p.control_plane().expect("the local platform");
    let path = format!("{}/../manifests/{file}", env!("CARGO_MANIFEST_DIR"));
    if let Err(e) = e2e::kubectl::run(Some(&cp.kubeconfig), &["apply", "-f", &path], None) {
        panic!("{e}");
    }
}

/// The local platform whose process kubelet runs the built agent and operator for their
/// images: for tests that install the operator as a pod (on kind, the images are real).
pub async fn platform_with_images(test: &str, nets: (u8, u8)) -> Platform {
    let images = e2e::ImageTable::default()
        .with("muster-agent", super::agent_binary())
        .with("muster-operator", built_binary("muster-operator"));
    let p = Platform::start(
        test,
        e2e::LocalSettings {
            dns_net: nets.0,
            pod_net: nets.1,
            images,
            volume_refresh: e2e::VolumeRefresh::default(),
        },
    )
    .await
    .expect("platform");
    assert_eq!(
        p.target,
        Target::Local,
        "installs the operator on the local platform; on kind, e2e/kind/test.sh runs helm install"
    );
    p
}

/// Waits until Deployment `name` in `namespace` has one available replica (the
/// operator, installed as a pod); returns its container's log on the local platform.
pub async fn operator_pod(p: &Platform, namespace: &str, name: &str) -> PodLog {
    p.deployment_available(namespace, name, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let cp = p.control_plane().expect("the local platform");
    let pods: Api<Pod> = Api::namespaced(p.client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=muster-operator"))
        .await
        .expect("list the operator's pods");
    let pod = list
        .items
        .iter()
        .find_map(|pod| pod.metadata.name.clone())
        .expect("the operator's pod");
    PodLog(cp.dir.join(format!("{namespace}_{pod}_operator.log")))
}

/// Creates ClusterSpec `shop` of 3 and waits until it runs as one cluster, with forming
/// locked, under an operator installed as a pod; its log must show the leader Lease and
/// no "forbidden" (its RBAC grants all it uses). Returns the time from create to Running.
pub async fn a_cluster_forms_under(p: &Platform, log: &PodLog) -> Duration {
    let c = Cluster::of(p, "shop");
    let started = create_cluster(p, "shop", 3, json!({})).await;
    let cs = c
        .wait_for(
            log,
            "Running with 3 Up",
            Duration::from_secs(120),
            running(3),
        )
        .await;
    let formed = started.elapsed();
    assert_eq!(status_of(&cs).new_cluster_enabled, Some(false));
    // The newest agent may not have heard the last gossip round yet.
    poll("one cluster of 3", Duration::from_secs(30), || {
        c.one_cluster_of(3)
    })
    .await;
    let text = std::fs::read_to_string(&log.0).expect("the operator's log");
    assert!(text.contains("holding the leader Lease"), "{text}");
    assert!(
        !text.contains("forbidden"),
        "its RBAC grants all the operator uses:\n{text}"
    );
    formed
}

/// A ClusterSpec `stray` in namespace `elsewhere` (made here), for tests of an operator
/// installed for other namespaces only; see [`never_reconciled`].
pub async fn stray_cluster_elsewhere(p: &Platform) -> Api<ClusterSpec> {
    let cp = p.control_plane().expect("the local platform");
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "elsewhere"}});
    e2e::kubectl::run(
        Some(&cp.kubeconfig),
        &["apply", "-f", "-"],
        Some(&ns.to_string()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let api: Api<ClusterSpec> = Api::namespaced(p.client.clone(), "elsewhere");
    let cs: ClusterSpec = serde_json::from_value(json!({
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ClusterSpec",
        "metadata": {"name": "stray", "namespace": "elsewhere"},
        "spec": {"replicas": 1, "agent": {"image": p.agent_image()}},
    }))
    .expect("a ClusterSpec");
    api.create(&Default::default(), &cs)
        .await
        .expect("create the stray ClusterSpec");
    api
}

/// The stray ClusterSpec has no status and its namespace no StatefulSet: the operator
/// (which meanwhile ran a cluster of its own namespace) never reconciled it.
pub async fn never_reconciled(p: &Platform, api: &Api<ClusterSpec>) {
    let cs = api.get("stray").await.expect("the stray ClusterSpec");
    assert!(
        cs.status.is_none(),
        "a ClusterSpec outside the watched namespaces was reconciled: {:?}",
        cs.status
    );
    let sets: Api<k8s_openapi::api::apps::v1::StatefulSet> =
        Api::namespaced(p.client.clone(), "elsewhere");
    let list = sets
        .list(&ListParams::default())
        .await
        .expect("list StatefulSets");
    assert!(list.items.is_empty(), "a StatefulSet was made elsewhere");
}

/// The local platform with the CRD installed and an operator (`op-a`, metrics on
/// `127.0.<dns_net>.10:8080`).
pub async fn setup(test: &str, nets: (u8, u8)) -> (Platform, Operator) {
    setup_with(test, nets, e2e::VolumeRefresh::default()).await
}

/// [`setup`] with a kubelet that refreshes mounted ConfigMaps and Secrets as `refresh`
/// says.
pub async fn setup_with(
    test: &str,
    nets: (u8, u8),
    refresh: e2e::VolumeRefresh,
) -> (Platform, Operator) {
    let p = platform(test, nets, refresh).await;
    let op = Operator::start(&p, "op-a", SocketAddr::from(([127, 0, nets.0, 10], 8080)));
    (p, op)
}

/// The local platform with the CRD installed, no operator yet.
pub async fn platform(test: &str, nets: (u8, u8), refresh: e2e::VolumeRefresh) -> Platform {
    let settings = e2e::LocalSettings {
        volume_refresh: refresh,
        ..local(nets.0, nets.1)
    };
    let p = Platform::start(test, settings).await.expect("platform");
    assert_eq!(
        p.target,
        Target::Local,
        "the operator runs here as a process beside the platform (on kind: the Helm chart)"
    );
    apply_manifest(&p, "crd.yaml");
    wait_for_crd(&p.client).await;
    p
}

/// Creates ClusterSpec `name` with `replicas` pods of the agent image and `extra`
/// merged into the spec; returns when it was created. (The pods form by contact-point
/// agreement, as every replica is expected; the stable margin is the default.)
pub async fn create_cluster(
    p: &Platform,
    name: &str,
    replicas: i32,
    extra: serde_json::Value,
) -> Instant {
    let mut spec = json!({
        "replicas": replicas,
        "agent": {"image": p.agent_image()},
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        spec[k] = v;
    }
    let cs: ClusterSpec = serde_json::from_value(json!({
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ClusterSpec",
        "metadata": {"name": name, "namespace": p.namespace},
        "spec": spec,
    }))
    .expect("a ClusterSpec");
    let started = Instant::now();
    Api::<ClusterSpec>::namespaced(p.client.clone(), &p.namespace)
        .create(&Default::default(), &cs)
        .await
        .expect("create the ClusterSpec");
    started
}

/// The local platform and an operator with ClusterSpec `shop` of `replicas` pods
/// (`extra` merged into its spec) Running with every member Up.
pub async fn running_shop(
    test: &str,
    nets: (u8, u8),
    replicas: i32,
    extra: serde_json::Value,
) -> (Platform, Operator, Cluster) {
    let (p, op) = setup(test, nets).await;
    let c = Cluster::of(&p, "shop");
    create_cluster(&p, "shop", replicas, extra).await;
    c.wait_for(
        &op,
        &format!("Running with {replicas} Up"),
        Duration::from_secs(120),
        running(replicas),
    )
    .await;
    (p, op, c)
}

/// After every member of `c` is gone and the pods wait saying `message` (Degraded,
/// NoClusterToJoin): the operator says it forms the cluster again by itself, and one
/// cluster of `n` is back within `deadline` with no human step; how long that took.
pub async fn back_by_itself(c: &Cluster, message: &str, n: usize, deadline: Duration) -> Duration {
    assert!(message.contains("forms it again by itself"), "{message}");
    let waited = Instant::now();
    poll(
        &format!("one cluster of {n} again, with no human step"),
        deadline,
        || c.one_cluster_of(n),
    )
    .await;
    waited.elapsed()
}

/// Creates ClusterSpec `name` (as [`create_cluster`]) and waits until it is Running
/// with `n` Up and every agent sees one cluster of `n`.
pub async fn create_running(
    p: &Platform,
    op: &dyn OperatorLog,
    name: &str,
    n: i32,
    extra: serde_json::Value,
) -> Cluster {
    let c = Cluster::of(p, name);
    create_cluster(p, name, n, extra).await;
    c.wait_for(
        op,
        &format!("{name} Running with {n} Up"),
        Duration::from_secs(120),
        running(n),
    )
    .await;
    let size = usize::try_from(n).expect("a count");
    poll(
        &format!("one cluster of {n}"),
        Duration::from_secs(60),
        || c.one_cluster_of(size),
    )
    .await;
    c
}

/// Asserts that Events of each reason in `reasons` were recorded for object `name`.
pub fn assert_events(p: &Platform, name: &str, reasons: &[&str]) {
    let selector = format!("involvedObject.name={name}");
    let out = p
        .kubectl()
        .args(["get", "events", "--field-selector", &selector])
        .output()
        .expect("kubectl get events");
    let events = String::from_utf8_lossy(&out.stdout);
    for reason in reasons {
        assert!(events.contains(reason), "{reason}: {events}");
    }
}

pub fn status_of(cs: &ClusterSpec) -> ClusterSpecStatus {
    cs.status.clone().unwrap_or_default()
}

/// A condition's status, reason and message.
pub fn condition(cs: &ClusterSpec, type_: &str) -> Option<(String, String, String)> {
    status_of(cs)
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message))
}

/// Running with `n` Up members, not rolling, the current generation seen.
pub fn running(n: i32) -> impl Fn(&ClusterSpec) -> Result<(), String> {
    move |cs| {
        let s = status_of(cs);
        let up = s.members.as_ref().map_or(0, |m| m.up);
        let generation_seen = s.observed_generation == cs.metadata.generation;
        if s.phase.as_deref() == Some("Running")
            && up == n
            && s.rollout.is_none()
            && generation_seen
        {
            Ok(())
        } else {
            Err(format!("phase {:?}, {up} Up", s.phase))
        }
    }
}

pub fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

/// One ClusterSpec of the test namespace; cheap to clone into a watcher task.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    pub namespace: String,
    pub name: String,
}

impl Cluster {
    pub fn of(p: &Platform, name: &str) -> Self {
        Self {
            client: p.client.clone(),
            namespace: p.namespace.clone(),
            name: name.to_owned(),
        }
    }

    pub fn api(&self) -> Api<ClusterSpec> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Merges `spec` into the ClusterSpec's spec.
    pub async fn patch_spec(&self, spec: serde_json::Value) {
        self.api()
            .patch(
                &self.name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": spec })),
            )
            .await
            .expect("patch the ClusterSpec");
    }

    /// Polls the ClusterSpec until `check` accepts it; panics with the operator's log.
    pub async fn wait_for(
        &self,
        op: &dyn OperatorLog,
        what: &str,
        limit: Duration,
        check: impl Fn(&ClusterSpec) -> Result<(), String>,
    ) -> ClusterSpec {
        let api = self.api();
        let check = &check;
        let found = tokio::time::timeout(
            limit + Duration::from_secs(5),
            poll(what, limit, || {
                let api = api.clone();
                async move {
                    let cs = api.get(&self.name).await.map_err(|e| e.to_string())?;
                    check(&cs)
                        .map(|()| cs.clone())
                        .map_err(|e| format!("{e}; status {:?}", cs.status))
                }
            }),
        )
        .await;
        found.unwrap_or_else(|_| panic!("{what}: stuck; operator log:\n{}", op.log_tail()))
    }

    /// Sets `spec.replicas` to `n` and waits (within `limit`) for status Running with
    /// `n` Up, then (within 60 s more) for every agent to see one cluster of `n`.
    pub async fn scale_to(&self, op: &dyn OperatorLog, n: usize, limit: Duration) {
        self.patch_spec(json!({ "replicas": n })).await;
        let replicas = i32::try_from(n).expect("a replica count");
        self.wait_for(
            op,
            &format!("Running with {n} Up"),
            limit,
            running(replicas),
        )
        .await;
        poll(
            &format!("one cluster of {n}"),
            Duration::from_secs(60),
            || self.one_cluster_of(n),
        )
        .await;
    }

    /// The process id of every pod's agent, by pod name (the local platform).
    pub async fn agent_pids(&self, p: &Platform) -> BTreeMap<String, u32> {
        let node = p.node().expect("the local platform");
        let mut pids = BTreeMap::new();
        for pod in self.pods().await {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let pid = node
                .container_pid(&p.namespace, &name, "agent")
                .await
                .expect("the agent's process");
            pids.insert(name, pid);
        }
        pids
    }

    /// Kills every agent of `pids` at once (SIGKILL: no leave); the kubelet restarts
    /// the containers in the same pods.
    pub fn kill_agents(pids: &BTreeMap<String, u32>) {
        for (name, pid) in pids {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap_or_else(|e| panic!("kill the agent of {name}: {e}"));
        }
    }

    /// Deletes every pod of the cluster at once (`kubectl delete pods -l …`).
    pub fn delete_every_pod(&self, p: &Platform) {
        let selector = format!("muster.dev/cluster={}", self.name);
        let deleted = p
            .kubectl()
            .args(["delete", "pods", "-l", &selector, "--wait=false"])
            .output()
            .expect("kubectl delete");
        assert!(deleted.status.success(), "{deleted:?}");
    }

    /// The pods of the cluster's StatefulSet (a pod that only carries its labels is
    /// left out).
    pub async fn pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("muster.dev/cluster={}", self.name);
        let mut pods = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        pods.retain(|p| {
            p.metadata.owner_references.iter().flatten().any(|o| {
                o.kind == "StatefulSet" && o.name == self.name && o.controller == Some(true)
            })
        });
        pods
    }

    /// Every agent's `/cluster/members`, by pod name (agents that do not answer are
    /// left out).
    pub async fn views(&self) -> BTreeMap<String, ClusterMembers> {
        let client = ManagementClient::new(Duration::from_secs(1));
        let mut out = BTreeMap::new();
        for pod in self.pods().await {
            let Some(ip) = pod_ip(&pod) else { continue };
            if let Ok(m) = client
                .members(SocketAddr::new(ip, e2e::MANAGEMENT_PORT))
                .await
            {
                out.insert(pod.metadata.name.clone().unwrap_or_default(), m);
            }
        }
        out
    }

    /// Every one of `n` agents answers and they are one cluster of `n` Up members seen
    /// alike ([`check::one_cluster_of`]); panics at once on two clusters.
    pub async fn one_cluster_of(&self, n: usize) -> Result<(), String> {
        let v = self.views().await;
        if let Some(split) = two_clusters(&v) {
            panic!("{split}");
        }
        if v.len() != n {
            return Err(format!("{} of {n} agents answer", v.len()));
        }
        check::one_cluster_of(&v.into_values().collect::<Vec<_>>(), n)
    }
}

/// More than one cluster among the agents' views ([`check::no_split`]), in words.
pub fn two_clusters(views: &BTreeMap<String, ClusterMembers>) -> Option<String> {
    check::no_split(views.values()).err()
}

/// What a [`RolloutWatch`] saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Pod names in the order their pods were replaced (uid changed).
    pub replaced: Vec<String>,
    /// Every distinct `oldest` member reported, in order (the first is the one before).
    pub oldest: Vec<NodeAddress>,
    /// The fewest Up members any member reported.
    pub min_up: usize,
    /// Two clusters, if ever seen.
    pub split: Option<String>,
}

/// Watches a cluster every 100 ms while something happens to it.
pub struct RolloutWatch {
    seen: Arc<Mutex<Seen>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RolloutWatch {
    pub async fn start(c: &Cluster) -> Self {
        let views = c.views().await;
        let oldest = views.values().find_map(|v| v.oldest.clone());
        let seen = Arc::new(Mutex::new(Seen {
            min_up: usize::MAX,
            oldest: oldest.into_iter().collect(),
            ..Seen::default()
        }));
        let mut uids: BTreeMap<String, String> = c
            .pods()
            .await
            .into_iter()
            .map(|p| {
                (
                    p.metadata.name.unwrap_or_default(),
                    p.metadata.uid.unwrap_or_default(),
                )
            })
            .collect();
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        let task = {
            let (seen, c) = (seen.clone(), c.clone());
            tokio::spawn(async move {
                loop {
                    // After the stop, one more look: the last change is not missed.
                    let stopping = *stop_rx.borrow();
                    let pods = c.pods().await;
                    let v = c.views().await;
                    {
                        let mut s = seen.lock().expect("lock");
                        for pod in pods {
                            let name = pod.metadata.name.unwrap_or_default();
                            let uid = pod.metadata.uid.unwrap_or_default();
                            if uids.get(&name).is_some_and(|u| *u != uid) {
                                s.replaced.push(name.clone());
                            }
                            uids.insert(name, uid);
                        }
                        if let Some(split) = two_clusters(&v) {
                            s.split.get_or_insert(split);
                        }
                        if let Some(up) = v
                            .values()
                            .filter(|m| !m.members.is_empty())
                            .map(|m| m.count(MemberStatus::Up))
                            .min()
                        {
                            s.min_up = s.min_up.min(up);
                        }
                        for o in v.values().filter_map(|m| m.oldest.clone()) {
                            if !s.oldest.contains(&o) {
                                s.oldest.push(o);
                            }
                        }
                    }
                    if stopping {
                        break;
                    }
                    tokio::select! {
                        _ = stop_rx.changed() => {}
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            })
        };
        Self { seen, stop, task }
    }

    /// Pods replaced so far.
    pub fn replaced(&self) -> usize {
        self.seen.lock().expect("lock").replaced.len()
    }

    pub async fn stop(self) -> Seen {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

impl Cluster {
    /// The pods by their members' upNumber, youngest (highest) first: the order an
    /// oldest-last rollout replaces them in.
    pub async fn youngest_first(&self) -> Vec<String> {
        let views = self.views().await;
        let view = views
            .values()
            .find(|v| !v.members.is_empty())
            .expect("a member's view");
        let mut by_age: Vec<(u32, String)> = self
            .pods()
            .await
            .into_iter()
            .filter_map(|pod| {
                let ip = pod_ip(&pod)?;
                let m = view.members.iter().find(|m| m.node.ip == ip)?;
                Some((m.up_number, pod.metadata.name?))
            })
            .collect();
        by_age.sort_by(|a, b| b.cmp(a));
        by_age.into_iter().map(|(_, pod)| pod).collect()
    }

    /// Pokes the ClusterSpec (an annotation) `n` times, each time waiting for the
    /// reconcile it causes; what those reconciles cost: (reconciles, API requests,
    /// writes for the cluster — its objects, status, Events and formation record, not
    /// the operator's leader Lease renewals).
    pub async fn steady_state(&self, op: &Operator, n: usize) -> (f64, f64, f64) {
        let reconciles = |m: &BTreeMap<String, f64>| total(m, "muster_operator_reconciles_total");
        // The operator's PUTs are its leader Lease renewals (every 2 s, whatever the
        // clusters do) and updates of a formation record: those are compared directly.
        let puts = |m: &BTreeMap<String, f64>| {
            m.get("muster_operator_api_requests_total{verb=\"PUT\"}")
                .copied()
                .unwrap_or(0.0)
        };
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let record = format!("{}-formation", self.name);
        let record_version = || async {
            leases
                .get_opt(&record)
                .await
                .expect("read the formation record")
                .and_then(|l| l.metadata.resource_version)
        };
        let record_before = record_version().await;
        let before = op.metrics().await.expect("metrics");
        for i in 0..n {
            let seen = reconciles(&op.metrics().await.expect("metrics"));
            self.api()
                .patch(
                    &self.name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"metadata": {"annotations": {"test/poke": i.to_string()}}}),
                    ),
                )
                .await
                .expect("annotate");
            poll(
                "a reconcile after the poke",
                Duration::from_secs(30),
                || async {
                    let m = op.metrics().await?;
                    if reconciles(&m) > seen {
                        Ok(())
                    } else {
                        Err("no reconcile yet".into())
                    }
                },
            )
            .await;
        }
        let after = op.metrics().await.expect("metrics");
        let record_written = f64::from(u8::from(record_version().await != record_before));
        let requests = |m: &BTreeMap<String, f64>| total(m, "muster_operator_api_requests_total");
        (
            reconciles(&after) - reconciles(&before),
            requests(&after) - requests(&before),
            writes(&after) - writes(&before) - (puts(&after) - puts(&before)) + record_written,
        )
    }
}

/// Resident memory of a process, in MiB (from /proc).
pub fn rss_mib(pid: u32) -> f64 {
    proc_status_mib(pid, "VmRSS:")
}

/// The most resident memory a process had so far, in MiB (from /proc).
pub fn peak_rss_mib(pid: u32) -> f64 {
    proc_status_mib(pid, "VmHWM:")
}

fn proc_status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The agent image with another tag (the local node runs any tag of it).
pub fn retagged(image: &str, tag: &str) -> String {
    let repo = image.rsplit_once(':').map_or(image, |(repo, _)| repo);
    format!("{repo}:{tag}")
}
