//! `muster-demo`: muster's job in one command (README's first command runs it through
//! `./demo`, which builds it). On the local Kubernetes platform it installs muster from
//! `manifests/` (the CRD, then the operator as a Deployment pod), applies a ClusterSpec of
//! three pods — each the agent beside the example application (`examples/keyowner`,
//! which takes its membership from its agent and names the owner of a key), with a
//! persistent volume claim — shows the cluster forming live (pods, member statuses,
//! leader, age, each agent's bootstrap decision, and what each pod's application sees),
//! changes the agent image tag and shows the oldest-last rolling update step by step,
//! then prints a summary: formation time, rollout order, final members and whether the
//! applications agree. It exits 1 when the cluster does not form, or the rollout does not
//! finish, within `--timeout`. With `--keep` everything stays up until Ctrl-C, and it
//! prints the KUBECONFIG and commands to look around.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use e2e::{ImageTable, LocalSettings, MANAGEMENT_PORT, Platform, Target};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use node_agent::api::{BootstrapStatusBody, ClusterMember, ClusterMembers, check};
use node_agent::base::address::NodeAddress;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "muster-demo",
    about = "Install muster on a local Kubernetes, form a cluster, roll it oldest-last"
)]
struct Args {
    /// Leave the platform, operator and cluster running at the end (until Ctrl-C) and
    /// print how to look around.
    #[arg(long)]
    keep: bool,
    /// Agents in the demo cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=9))]
    replicas: u8,
    /// Give up (exit 1) when a stage — install, forming, the rollout — takes longer
    /// than this many seconds.
    #[arg(long, default_value_t = 180)]
    timeout: u64,
}

/// The demo's ClusterSpec.
const NAME: &str = "demo";
/// The example application's port, and the key whose owner the demo shows.
const APP_PORT: u16 = 8080;
const KEY: &str = "cart-42";
fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("muster-demo: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nmuster-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A binary built beside this one (`./demo` builds them all).
fn beside(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name(name);
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build -p node-agent -p operator` (./demo does)",
            bin.display()
        ))
    }
}

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// Prints a stage heading with the time since the demo started.
fn stage(start: Instant, text: &str) {
    println!("\n[{:>5.1} s] == {text}", start.elapsed().as_secs_f64());
}

async fn run(args: Args) -> Result<(), String> {
    if Target::from_env().map_err(|e| e.to_string())? != Target::Local {
        return Err("the demo runs on its own local platform: unset E2E_TARGET".into());
    }
    let limit = Duration::from_secs(args.timeout);
    let start = Instant::now();
    stage(
        start,
        "starting a local Kubernetes (etcd, API server, controllers, scheduler, cluster DNS, a process kubelet)",
    );
    let images = ImageTable::default()
        .with("muster-agent", beside("muster-agent")?)
        .with("muster-operator", beside("muster-operator")?)
        .with(e2e::EXAMPLE_IMAGE_NAME, e2e::example_application());
    let p = Platform::start(
        NAME,
        LocalSettings {
            dns_net: 67,
            pod_net: 68,
            images,
            volume_refresh: e2e::VolumeRefresh::default(),
        },
    )
    .await
    .map_err(|e| format!("the local platform did not start: {e}"))?;
    let cp = p.control_plane().ok_or("no local control plane")?;
    let kubeconfig = cp.kubeconfig.clone();
    println!("KUBECONFIG={}", kubeconfig.display());

    stage(
        start,
        "kubectl apply -f manifests/crd.yaml -f manifests/operator.yaml",
    );
    let installed = Instant::now();
    let kubectl =
        |args: &[&str], stdin: Option<&str>| e2e::kubectl::run(Some(&kubeconfig), args, stdin);
    let manifest = |file: &str| repo_file(file).to_string_lossy().into_owned();
    kubectl(&["apply", "-f", &manifest("manifests/crd.yaml")], None)?;
    e2e::crd_established(&p.client, "clusterspecs.muster.dev", limit)
        .await
        .map_err(|e| e.to_string())?;
    kubectl(&["apply", "-f", &manifest("manifests/operator.yaml")], None)?;
    p.deployment_available("muster-system", "muster-operator", limit)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "operator available {:.1} s after kubectl apply",
        installed.elapsed().as_secs_f64()
    );

    stage(
        start,
        &format!("applying ClusterSpec {NAME} ({} agents)", args.replicas),
    );
    let image = p.agent_image().to_owned();
    // The agent beside the example application, as manifests/examples/keyowner.yaml.
    let spec = json!({
        "apiVersion": "muster.dev/v1alpha1", "kind": "ClusterSpec",
        "metadata": {"name": NAME, "namespace": p.namespace},
        "spec": {
            "replicas": args.replicas,
            "agent": {"image": image},
            "application": {
                "name": "keyowner",
                "image": "ghcr.io/muster-dev/muster-example-keyowner:0.1.0",
                "env": [{"name": "DATA_DIR", "value": "/data"}],
            },
            "podTemplate": {"spec": {"containers": [{
                "name": "keyowner",
                "ports": [{"name": "http", "containerPort": APP_PORT}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 2},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }]}},
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
            }],
        },
    });
    kubectl(&["apply", "-f", "-"], Some(&spec.to_string()))?;
    let applied = Instant::now();
    let mut view = LiveView::new(&p, applied);
    let formed = view
        .until(limit, "the cluster to form", |s| {
            // Every agent sees every member Up, so the up-numbers (ages) taken from
            // one of them below are final (a member not yet Up has number 0).
            s.condition("Formed")
                && s.phase() == "Running"
                && s.up() == i64::from(args.replicas)
                && s.one_cluster(usize::from(args.replicas)).is_ok()
        })
        .await?;
    let formation = applied.elapsed();
    println!(
        "\nformed: {} Up members, one cluster, {:.1} s after kubectl apply",
        args.replicas,
        formation.as_secs_f64()
    );

    let new_image = retag(&image, "v2");
    stage(
        start,
        &format!("rolling update: spec.agent.image → {new_image} (oldest member last)"),
    );
    let ages = formed.up_numbers();
    let rollout_started = Instant::now();
    view.since = rollout_started;
    kubectl(
        &[
            "patch",
            "clusterspec",
            NAME,
            "-n",
            &p.namespace,
            "--type",
            "merge",
            "-p",
            &json!({"spec": {"agent": {"image": new_image}}}).to_string(),
        ],
        None,
    )?;
    let done = view
        .until(limit, "the rollout to finish", |s| {
            s.phase() == "Running"
                && s.up() == i64::from(args.replicas)
                && s.pods.len() == usize::from(args.replicas)
                && s.pods.iter().all(|pod| pod.image == new_image && pod.ready)
        })
        .await?;
    let rollout = rollout_started.elapsed();

    stage(start, "summary");
    println!(
        "formation: kubectl apply → Formed in {:.1} s",
        formation.as_secs_f64()
    );
    println!(
        "rollout:   {:.1} s, pods replaced in this order:",
        rollout.as_secs_f64()
    );
    let oldest = ages
        .iter()
        .min_by_key(|(_, up)| **up)
        .map(|(pod, _)| pod.clone());
    for (i, pod) in view.replaced.iter().enumerate() {
        let up = ages.get(pod).map_or("?".into(), |n| format!("#{n}"));
        let note = if Some(pod) == oldest.as_ref() {
            "  ← the oldest member"
        } else {
            ""
        };
        println!("  {}. {pod} (was up {up}){note}", i + 1);
    }
    let oldest_last = oldest.is_some() && view.replaced.last() == oldest.as_ref();
    println!(
        "oldest member replaced last: {}",
        if oldest_last { "yes" } else { "NO" }
    );
    println!("final members:");
    for line in done.member_lines() {
        println!("  {line}");
    }
    // The applications learn of the last change from their agents' events: give them
    // a moment to agree.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut apps = done.apps_agree(usize::from(args.replicas));
    while apps.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // A snapshot that fails (an API or agent read timing out) is one more try.
        apps = match view.snapshot().await {
            Ok(snapshot) => snapshot.apps_agree(usize::from(args.replicas)),
            Err(e) => Err(format!("no snapshot: {e}")),
        };
    }
    println!(
        "the applications see the same Up members and the same owner of {KEY}: {}",
        match &apps {
            Ok(owner) => format!("yes ({owner})"),
            Err(e) => format!("NO — {e}"),
        }
    );
    let agreed = done.one_cluster(usize::from(args.replicas));
    println!(
        "one cluster, seen alike by every agent: {}",
        match &agreed {
            Ok(()) => "yes".to_owned(),
            Err(e) => format!("NO — {e}"),
        }
    );
    if agreed.is_err() {
        return Err("the agents do not agree on one cluster".into());
    }
    if !oldest_last {
        return Err("the oldest member was not replaced last".into());
    }
    if let Err(e) = apps {
        return Err(format!("the applications do not agree: {e}"));
    }

    if args.keep {
        keep(&p, &kubeconfig, &done).await;
    }
    Ok(())
}

/// Leaves everything up until Ctrl-C, with commands to look around.
async fn keep(p: &Platform, kubeconfig: &Path, s: &Snapshot) {
    println!("\neverything is still running (Ctrl-C stops it). Look around:");
    println!("  export KUBECONFIG={}", kubeconfig.display());
    println!("  kubectl get clusterspecs -n {}", p.namespace);
    println!("  kubectl describe clusterspec {NAME} -n {}", p.namespace);
    println!(
        "  kubectl get pods,statefulsets,services,configmaps -n {}",
        p.namespace
    );
    println!(
        "  kubectl get events -n {} --sort-by=.lastTimestamp",
        p.namespace
    );
    println!("  kubectl logs -n muster-system deployment/muster-operator");
    if let Some(pod) = s.pods.first() {
        println!(
            "  curl -s http://{}:{MANAGEMENT_PORT}/cluster/members",
            pod.ip
        );
        println!(
            "  curl -s http://{}:{MANAGEMENT_PORT}/bootstrap/status",
            pod.ip
        );
        println!("  curl -s http://{}:{MANAGEMENT_PORT}/metrics", pod.ip);
    }
    let _ = tokio::signal::ctrl_c().await;
    println!("stopping");
}

fn retag(image: &str, tag: &str) -> String {
    let name = match image.rsplit_once(':') {
        Some((name, t)) if !t.contains('/') => name,
        _ => image,
    };
    format!("{name}:{tag}")
}

/// One pod as the demo shows it.
#[derive(Debug, Clone)]
struct PodRow {
    name: String,
    uid: String,
    ip: String,
    image: String,
    ready: bool,
    age: Duration,
    /// This agent's view of the cluster, when it answers.
    members: Option<ClusterMembers>,
    /// What the pod's application sees, when it answers: its Up members and the owner
    /// of [`KEY`].
    app: Option<(Vec<String>, String)>,
    /// Its `/bootstrap/status` reason, in words.
    decision: String,
}

/// Everything shown at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    status: Value,
    pods: Vec<PodRow>,
    elapsed: Duration,
}

impl Snapshot {
    fn phase(&self) -> &str {
        self.status["phase"].as_str().unwrap_or("-")
    }

    fn up(&self) -> i64 {
        self.status["members"]["up"].as_i64().unwrap_or(0)
    }

    fn condition(&self, type_: &str) -> bool {
        self.status["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == type_ && c["status"] == "True")
        })
    }

    /// The member entry for `pod` in `view`.
    fn member<'a>(view: &'a ClusterMembers, pod: &PodRow) -> Option<&'a ClusterMember> {
        let ip: IpAddr = pod.ip.parse().ok()?;
        view.members.iter().find(|m| m.node.ip == ip)
    }

    /// Pod name → upNumber (lower is older), from the first agent that answers.
    fn up_numbers(&self) -> BTreeMap<String, u32> {
        let Some(view) = self.pods.iter().find_map(|p| p.members.as_ref()) else {
            return BTreeMap::new();
        };
        self.pods
            .iter()
            .filter_map(|pod| Some((pod.name.clone(), Self::member(view, pod)?.up_number)))
            .collect()
    }

    /// Whether every pod's agent answers and they are one cluster of `n` Up members seen
    /// alike, by the checks every test uses ([`check::no_split`],
    /// [`check::one_cluster_of`]); else why not.
    fn one_cluster(&self, n: usize) -> Result<(), String> {
        let views: Vec<ClusterMembers> = self
            .pods
            .iter()
            .map(|p| {
                p.members
                    .clone()
                    .ok_or_else(|| format!("{} does not answer", p.name))
            })
            .collect::<Result<_, _>>()?;
        check::no_split(&views)?;
        check::one_cluster_of(&views, n)
    }

    /// This pod's member entry in its own agent's view: (status, up-number, node).
    fn own_member(pod: &PodRow) -> (String, Option<u32>, Option<&NodeAddress>) {
        let m = pod.members.as_ref().and_then(|v| Self::member(v, pod));
        (
            m.map_or("-".into(), |m| m.status.to_string()),
            m.map(|m| m.up_number),
            m.map(|m| &m.node),
        )
    }

    /// The owner of [`KEY`] when every pod's application answers, sees `n` Up members,
    /// the same ones, and names the same owner; else why not.
    fn apps_agree(&self, n: usize) -> Result<String, String> {
        let mut seen: Option<&(Vec<String>, String)> = None;
        for pod in &self.pods {
            let app = pod
                .app
                .as_ref()
                .ok_or_else(|| format!("{}'s application does not answer", pod.name))?;
            if app.0.len() != n {
                return Err(format!(
                    "{}'s application sees {} Up",
                    pod.name,
                    app.0.len()
                ));
            }
            match seen {
                Some(first) if first != app => {
                    return Err(format!(
                        "{} sees otherwise than {}",
                        pod.name, self.pods[0].name
                    ));
                }
                _ => seen = Some(app),
            }
        }
        seen.map(|(_, owner)| owner.clone())
            .ok_or_else(|| "no pods".into())
    }

    /// The app version `pod`'s member runs (its pod's template revision), shortened to
    /// the hash after the StatefulSet's name.
    fn revision(pod: &PodRow) -> String {
        pod.members
            .as_ref()
            .and_then(|v| Self::member(v, pod))
            .map_or("-".into(), |m| {
                m.app_version
                    .rsplit_once('-')
                    .map_or(m.app_version.clone(), |(_, h)| h.to_owned())
            })
    }

    /// One line per pod for the summary: name, IP, status, up-number, tag, leader.
    fn member_lines(&self) -> Vec<String> {
        self.pods
            .iter()
            .map(|pod| {
                let (status, up, node) = Self::own_member(pod);
                let leader = pod.members.as_ref().and_then(|v| v.leader.as_ref());
                let lead = if node.is_some() && leader == node {
                    " leader"
                } else {
                    ""
                };
                format!(
                    "{:<8} {:<14} {:<9} up {:<4} {} rev {}{lead}; application: {}",
                    pod.name,
                    pod.ip,
                    status,
                    up.map_or("-".into(), |n| format!("#{n}")),
                    pod.image.rsplit(':').next().unwrap_or(""),
                    Self::revision(pod),
                    app_words(pod)
                )
            })
            .collect()
    }

    /// The frame, without the parts that change every second (ages), so that a frame is
    /// printed only when something happened.
    fn essence(&self) -> String {
        let mut s = format!("{} {} {}", self.phase(), self.up(), self.status["rollout"]);
        for p in &self.pods {
            s.push_str(&format!("|{} {} {} {}", p.name, p.uid, p.ready, p.decision));
        }
        s.push_str(&self.member_lines().join("|"));
        s
    }

    fn print(&self) {
        let st = &self.status;
        let leader = st["leader"].as_str().unwrap_or("-");
        let mut head = format!(
            "\n[+{:>5.1} s] ClusterSpec {NAME}: phase {}, {} of {} Up, leader {leader}, newClusterEnabled {}",
            self.elapsed.as_secs_f64(),
            self.phase(),
            self.up(),
            st["members"]["total"].as_i64().unwrap_or(0),
            st["newClusterEnabled"]
                .as_bool()
                .map_or("-".into(), |b| b.to_string()),
        );
        if let Some(r) = st["rollout"].as_object() {
            head.push_str(&format!(
                "; rollout {}/{} updated{}",
                r.get("updated").and_then(Value::as_i64).unwrap_or(0),
                r.get("total").and_then(Value::as_i64).unwrap_or(0),
                r.get("currentPod")
                    .and_then(Value::as_str)
                    .map(|p| format!(", now {p}"))
                    .unwrap_or_default(),
            ));
        }
        println!("{head}");
        println!(
            "  {:<8} {:<12} {:<5} {:<4} {:<4} {:<10} {:<8} {:<4} {:<5} {:<22} bootstrap decision",
            "POD",
            "IP",
            "READY",
            "AGE",
            "TAG",
            "REVISION",
            "MEMBER",
            "UP#",
            "SEES",
            "APPLICATION SEES"
        );
        for pod in &self.pods {
            // Each agent's own view: its status, and how many members it sees.
            let (status, up, _) = Self::own_member(pod);
            let up = up.map_or("-".into(), |n| n.to_string());
            let sees = pod
                .members
                .as_ref()
                .map_or("-".into(), |m| m.members.len().to_string());
            let mut decision = pod.decision.clone();
            if decision.chars().count() > 90 {
                decision = decision.chars().take(89).collect::<String>() + "…";
            }
            println!(
                "  {:<8} {:<12} {:<5} {:<4} {:<4} {:<10} {:<8} {:<4} {:<5} {:<22} {decision}",
                pod.name,
                pod.ip,
                if pod.ready { "yes" } else { "no" },
                format!("{}s", pod.age.as_secs()),
                pod.image.rsplit(':').next().unwrap_or(""),
                Self::revision(pod),
                status,
                up,
                sees,
                app_words(pod),
            );
        }
    }
}

/// What `pod`'s application sees: its Up members and the owner of [`KEY`].
async fn app_view(p: &Platform, pod: &str) -> Option<(Vec<String>, String)> {
    let members: Value = p.pod_json(pod, APP_PORT, "/members").await.ok()?;
    let up = members["up"]
        .as_array()?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let owner: Value = p
        .pod_json(pod, APP_PORT, &format!("/owner/{KEY}"))
        .await
        .ok()?;
    Some((up, owner["owner"].as_str()?.to_owned()))
}

/// The application's view in a few words: `3 Up, cart-42 → 127.0.68.2`.
fn app_words(pod: &PodRow) -> String {
    match &pod.app {
        Some((up, owner)) => {
            let ip = owner
                .rsplit_once('@')
                .map_or(owner.as_str(), |(_, a)| a)
                .rsplit_once(':')
                .map_or(owner.as_str(), |(ip, _)| ip);
            format!("{} Up, {KEY} → {ip}", up.len())
        }
        None => "-".into(),
    }
}

/// Watches the demo cluster and prints a frame whenever something changes.
struct LiveView<'a> {
    p: &'a Platform,
    specs: Api<DynamicObject>,
    pods: Api<Pod>,
    /// Frames show the time since this instant (the stage's start).
    since: Instant,
    last: String,
    uids: BTreeMap<String, String>,
    /// Pods in the order they were replaced (a new uid under the same name).
    replaced: Vec<String>,
}

impl<'a> LiveView<'a> {
    fn new(p: &'a Platform, since: Instant) -> Self {
        let gvk = GroupVersionKind::gvk("muster.dev", "v1alpha1", "ClusterSpec");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "clusterspecs");
        Self {
            p,
            specs: Api::namespaced_with(p.client.clone(), &p.namespace, &resource),
            pods: Api::namespaced(p.client.clone(), &p.namespace),
            since,
            last: String::new(),
            uids: BTreeMap::new(),
            replaced: Vec::new(),
        }
    }

    async fn snapshot(&mut self) -> Result<Snapshot, String> {
        let status = self
            .specs
            .get_opt(NAME)
            .await
            .map_err(|e| e.to_string())?
            .map(|o| o.data["status"].clone())
            .unwrap_or(Value::Null);
        let list = self
            .pods
            .list(&ListParams::default().labels(&format!("muster.dev/cluster={NAME}")))
            .await
            .map_err(|e| e.to_string())?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut pods = Vec::new();
        for pod in list.items {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let age = pod
                .metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| (now - t.0).try_into().ok())
                .unwrap_or_default();
            let status = pod.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let image = pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            let ip = status.pod_ip.clone().unwrap_or_default();
            let app = if ip.is_empty() {
                None
            } else {
                app_view(self.p, &name).await
            };
            let (members, decision) = if ip.is_empty() {
                (None, "(no IP yet)".to_owned())
            } else {
                let members = self.p.members(&name).await.ok();
                let decision = match self
                    .p
                    .pod_json::<BootstrapStatusBody>(&name, MANAGEMENT_PORT, "/bootstrap/status")
                    .await
                {
                    Ok(b) => format!("{}: {}", b.phase, b.reason),
                    Err(_) => "(agent not answering yet)".to_owned(),
                };
                (members, decision)
            };
            if let Some(old) = self.uids.insert(name.clone(), uid.clone())
                && old != uid
            {
                self.replaced.push(name.clone());
            }
            pods.push(PodRow {
                name,
                uid,
                ip,
                image,
                ready,
                age,
                members,
                app,
                decision,
            });
        }
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Snapshot {
            status,
            pods,
            elapsed: self.since.elapsed(),
        })
    }

    /// Shows frames until `done` holds (returns that snapshot) or `limit` passes.
    async fn until(
        &mut self,
        limit: Duration,
        what: &str,
        done: impl Fn(&Snapshot) -> bool,
    ) -> Result<Snapshot, String> {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.snapshot().await;
            match &s {
                Ok(s) => {
                    let essence = s.essence();
                    if essence != self.last {
                        s.print();
                        self.last = essence;
                    }
                    if done(s) {
                        return Ok(s.clone());
                    }
                }
                Err(e) => println!("  (reading the cluster: {e})"),
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "gave up waiting for {what} after {} s; the last status: {}",
                    limit.as_secs(),
                    s.map(|s| s.status.to_string()).unwrap_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
