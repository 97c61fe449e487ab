//! `muster-operator` (the built binary, as its own process) on the local platform with
//! the real agent in every pod: a ClusterSpec forms one cluster and locks forming off; a
//! second reconcile writes nothing; an image change rolls the pods oldest-last, and an
//! operator killed mid-rollout is replaced by one that finishes it; deleting every pod,
//! scaling 3 → 5 → 2 and invalid specs behave as documented.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::{Platform, Target};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use node_agent::management::api::ClusterMembers;
use node_agent::management::client::ManagementClient;
use operator::ClusterSpec;
use serde_json::json;

mod support;
use support::{built_binary, local, poll, wait_for_crd};

/// A `muster-operator` process; SIGKILLed when dropped.
struct Operator {
    child: Child,
    listen: SocketAddr,
    log: PathBuf,
}

impl Operator {
    fn start(p: &Platform, identity: &str, listen: SocketAddr) -> Self {
        let cp = p.control_plane().expect("the local platform");
        let log = cp.dir.join(format!("operator-{identity}.log"));
        let file = std::fs::File::create(&log).expect("operator log");
        let child = Command::new(built_binary("muster-operator"))
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info")
            .args(["--listen", &listen.to_string()])
            .args(["--namespace", &p.namespace])
            .args(["--lease-namespace", &p.namespace])
            .args(["--identity", identity])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .spawn()
            .expect("start muster-operator");
        Self { child, listen, log }
    }

    /// `/metrics`, sample name (with labels) → value.
    async fn metrics(&self) -> Result<BTreeMap<String, f64>, String> {
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

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes by the operator: every request that is not a read.
fn writes(m: &BTreeMap<String, f64>) -> f64 {
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

fn total(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

async fn setup(test: &str, nets: (u8, u8)) -> (Platform, Operator) {
    let p = Platform::start(test, local(nets.0, nets.1))
        .await
        .expect("platform");
    assert_eq!(
        p.target,
        Target::Local,
        "the operator runs here as a process beside the platform (on kind: the Helm chart)"
    );
    let cp = p.control_plane().expect("local");
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crd.yaml");
    let out = Command::new("kubectl")
        .args(["apply", "-f", crd])
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "{out:?}");
    wait_for_crd(&p.client).await;
    let op = Operator::start(&p, "op-a", SocketAddr::from(([127, 0, nets.0, 10], 8080)));
    (p, op)
}

/// Creates ClusterSpec `shop` with `replicas` pods of the agent image.
async fn create_cluster(p: &Platform, replicas: i32) -> Instant {
    let cs: ClusterSpec = serde_json::from_value(json!({
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ClusterSpec",
        "metadata": {"name": "shop", "namespace": p.namespace},
        "spec": {
            "replicas": replicas,
            "agent": {"image": p.agent_image()},
            "bootstrap": {"stableMargin": "1s"},
        },
    }))
    .expect("a ClusterSpec");
    let started = Instant::now();
    specs(p)
        .create(&Default::default(), &cs)
        .await
        .expect("create the ClusterSpec");
    started
}

fn specs(p: &Platform) -> Api<ClusterSpec> {
    Api::namespaced(p.client.clone(), &p.namespace)
}

async fn patch_spec(p: &Platform, spec: serde_json::Value) {
    specs(p)
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .expect("patch the ClusterSpec");
}

/// Polls the ClusterSpec until `check` accepts it.
async fn wait_for(
    p: &Platform,
    op: &Operator,
    what: &str,
    limit: Duration,
    check: impl Fn(&ClusterSpec) -> Result<(), String>,
) -> ClusterSpec {
    let api = specs(p);
    let check = &check;
    let found = tokio::time::timeout(
        limit + Duration::from_secs(5),
        poll(what, limit, || {
            let api = api.clone();
            async move {
                let cs = api.get("shop").await.map_err(|e| e.to_string())?;
                check(&cs)
                    .map(|()| cs.clone())
                    .map_err(|e| format!("{e}; status {:?}", cs.status))
            }
        }),
    )
    .await;
    found.unwrap_or_else(|_| panic!("{what}: stuck; operator log:\n{}", op.log_tail()))
}

fn status_of(cs: &ClusterSpec) -> operator::ClusterSpecStatus {
    cs.status.clone().unwrap_or_default()
}

fn condition(cs: &ClusterSpec, type_: &str) -> Option<(String, String, String)> {
    status_of(cs)
        .conditions
        .into_iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status, c.reason, c.message))
}

/// Running with `n` Up members, not rolling.
fn running(n: i32) -> impl Fn(&ClusterSpec) -> Result<(), String> {
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

async fn pods(p: &Cluster) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(p.client.clone(), &p.namespace);
    api.list(&ListParams::default().labels("app.kubernetes.io/instance=shop"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

/// The test namespace's API, cheap to clone into a watcher task.
#[derive(Clone)]
struct Cluster {
    client: kube::Client,
    namespace: String,
}

impl Cluster {
    fn of(p: &Platform) -> Self {
        Self {
            client: p.client.clone(),
            namespace: p.namespace.clone(),
        }
    }
}

/// Every agent's `/cluster/members`, by pod name (agents that do not answer are left out).
async fn views(p: &Cluster) -> BTreeMap<String, ClusterMembers> {
    let client = ManagementClient::new(Duration::from_secs(1));
    let mut out = BTreeMap::new();
    for pod in pods(p).await {
        let Some(ip) = pod_ip(&pod) else { continue };
        if let Ok(m) = client
            .get_json::<ClusterMembers>(SocketAddr::new(ip, 8558), "/cluster/members")
            .await
        {
            out.insert(pod.metadata.name.clone().unwrap_or_default(), m);
        }
    }
    out
}

/// Two agents that are members but share no member would be two clusters.
fn two_clusters(views: &BTreeMap<String, ClusterMembers>) -> Option<String> {
    let sets: Vec<(&String, BTreeSet<&str>)> = views
        .iter()
        .filter(|(_, v)| !v.members.is_empty())
        .map(|(pod, v)| (pod, v.members.iter().map(|m| m.node.as_str()).collect()))
        .collect();
    for (i, (a, sa)) in sets.iter().enumerate() {
        for (b, sb) in &sets[i + 1..] {
            if sa.is_disjoint(sb) {
                return Some(format!("{a} sees {sa:?}, {b} sees {sb:?}"));
            }
        }
    }
    None
}

/// What the rollout watcher saw.
#[derive(Debug, Default)]
struct Seen {
    /// Pod names in the order their pods were replaced (uid changed).
    replaced: Vec<String>,
    /// Every distinct `oldest` member reported, in order.
    oldest: Vec<String>,
    min_up: usize,
    split: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_forms_locks_and_rolls_oldest_last() {
    let (p, op) = setup("operator-rollout", (51, 52)).await;
    let started = create_cluster(&p, 3).await;
    let cs = wait_for(
        &p,
        &op,
        "the cluster formed",
        Duration::from_secs(120),
        |cs| {
            let s = status_of(cs);
            match (&s.formed_at, condition(cs, "Formed")) {
                (Some(_), Some((st, _, _))) if st == "True" => Ok(()),
                _ => Err("not formed".into()),
            }
        },
    )
    .await;
    println!(
        "apply → Formed (3 replicas): {} ms",
        started.elapsed().as_millis()
    );
    let cs = if status_of(&cs).phase.as_deref() == Some("Running") {
        cs
    } else {
        wait_for(
            &p,
            &op,
            "Running with 3 Up",
            Duration::from_secs(60),
            running(3),
        )
        .await
    };
    let s = status_of(&cs);
    assert_eq!(s.new_cluster_enabled, Some(false), "auto: off once formed");
    assert_eq!(s.required_contact_points, Some(3));
    assert!(s.leader.is_some() && s.oldest.is_some(), "{s:?}");
    // policy/v1 PodDisruptionBudget arrived in Kubernetes 1.21; this API server is 1.20:
    // the operator says so and goes on.
    let budget = condition(&cs, "DisruptionBudget").expect("the DisruptionBudget condition");
    assert_eq!((budget.0.as_str(), budget.1.as_str()), ("False", "PolicyV1Unavailable"));
    let cm: ConfigMap = Api::namespaced(p.client.clone(), &p.namespace)
        .get("shop")
        .await
        .expect("the agents' ConfigMap");
    assert_eq!(
        cm.data.expect("data")["new-cluster-enabled"],
        "false",
        "the agents follow the ConfigMap key"
    );
    let views_now = views(&Cluster::of(&p)).await;
    assert_eq!(views_now.len(), 3, "{views_now:?}");
    assert!(two_clusters(&views_now).is_none());

    // What a person sees.
    let get = p
        .kubectl()
        .args(["get", "mcs", "shop"])
        .output()
        .expect("kubectl get");
    let table = String::from_utf8_lossy(&get.stdout);
    println!("{table}");
    let row = table.lines().nth(1).expect("a row");
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..4], ["shop", "3", "3", "Running"], "{table}");
    let events = p
        .kubectl()
        .args([
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=shop",
        ])
        .output()
        .expect("kubectl get events");
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(
        events.contains("Formed") && events.contains("NewClusterDisabled"),
        "{events}"
    );

    // Idempotent: reconciles of an unchanged cluster write nothing.
    let before = op.metrics().await.expect("metrics");
    for i in 0..2 {
        let reconciles = total(
            &op.metrics().await.expect("metrics"),
            "muster_operator_reconciles_total",
        );
        specs(&p)
            .patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"test/poke": i.to_string()}}})),
            )
            .await
            .expect("annotate");
        poll(
            "a reconcile after the poke",
            Duration::from_secs(30),
            || async {
                let m = op.metrics().await?;
                if total(&m, "muster_operator_reconciles_total") > reconciles {
                    Ok(())
                } else {
                    Err("no reconcile yet".into())
                }
            },
        )
        .await;
    }
    let after = op.metrics().await.expect("metrics");
    let reconciled = total(&after, "muster_operator_reconciles_total")
        - total(&before, "muster_operator_reconciles_total");
    let requests = total(&after, "muster_operator_api_requests_total")
        - total(&before, "muster_operator_api_requests_total");
    println!(
        "steady state: {reconciled} reconciles, {requests} API requests ({:.1} per reconcile), {} writes",
        requests / reconciled,
        writes(&after) - writes(&before)
    );
    assert_eq!(writes(&after), writes(&before), "no writes at steady state");

    // The rollout: record the order pods are replaced in, the oldest member, the
    // fewest Up members and any split, while the operator works.
    let before_pods: BTreeMap<String, String> = pods(&Cluster::of(&p))
        .await
        .into_iter()
        .map(|pod| {
            (
                pod.metadata.name.clone().unwrap_or_default(),
                pod.metadata.uid.clone().unwrap_or_default(),
            )
        })
        .collect();
    let any_view = views_now.values().next().expect("a view").clone();
    let up_number: BTreeMap<String, u32> = pods(&Cluster::of(&p))
        .await
        .into_iter()
        .filter_map(|pod| {
            let ip = pod_ip(&pod)?.to_string();
            let m = any_view
                .members
                .iter()
                .find(|m| m.node.contains(&format!("@{ip}:")))?;
            Some((pod.metadata.name.clone()?, m.up_number))
        })
        .collect();
    let mut expected: Vec<(u32, String)> = up_number.iter().map(|(p, n)| (*n, p.clone())).collect();
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = expected.into_iter().map(|(_, p)| p).collect();
    println!("upNumbers before the rollout: {up_number:?}; expected order {expected:?}");

    let seen = Arc::new(Mutex::new(Seen {
        min_up: 3,
        oldest: vec![s.oldest.clone().unwrap_or_default()],
        ..Seen::default()
    }));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let watcher = {
        let seen = seen.clone();
        let c = Cluster::of(&p);
        let before_pods = before_pods.clone();
        tokio::spawn(async move {
            let mut uids = before_pods;
            while !*stop_rx.borrow() {
                for pod in pods(&c).await {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    if uids.get(&name).is_some_and(|u| *u != uid) {
                        seen.lock().expect("lock").replaced.push(name.clone());
                    }
                    uids.insert(name, uid);
                }
                let v = views(&c).await;
                {
                    let mut s = seen.lock().expect("lock");
                    if let Some(split) = two_clusters(&v) {
                        s.split.get_or_insert(split);
                    }
                    // The fewest Up members any member reports.
                    if let Some(up) = v
                        .values()
                        .filter(|m| !m.members.is_empty())
                        .map(|m| m.members.iter().filter(|x| x.status == "Up").count())
                        .min()
                    {
                        s.min_up = s.min_up.min(up);
                    }
                    for m in v.values() {
                        if let Some(o) = &m.oldest
                            && s.oldest.last() != Some(o)
                            && !s.oldest.contains(o)
                        {
                            s.oldest.push(o.clone());
                        }
                    }
                }
                tokio::select! {
                    _ = stop_rx.changed() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        })
    };

    let rollout_started = Instant::now();
    let repo = p
        .agent_image()
        .rsplit_once(':')
        .map_or(p.agent_image(), |(repo, _)| repo);
    let new_image = format!("{repo}:v2");
    patch_spec(&p, json!({"agent": {"image": new_image}})).await;

    // Kill the operator once the first pod has been replaced; a second one (after the
    // first's Lease runs out) must finish the rollout.
    poll("the first pod replaced", Duration::from_secs(120), || {
        let seen = seen.clone();
        async move {
            if seen.lock().expect("lock").replaced.is_empty() {
                Err("none yet".into())
            } else {
                Ok(())
            }
        }
    })
    .await;
    drop(op);
    println!(
        "operator A killed {} ms into the rollout",
        rollout_started.elapsed().as_millis()
    );
    let op = Operator::start(&p, "op-b", SocketAddr::from(([127, 0, 51, 11], 8080)));
    let done = wait_for(
        &p,
        &op,
        "the rollout finished",
        Duration::from_secs(240),
        move |cs| {
            running(3)(cs)?;
            Ok(())
        },
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = watcher.await;
    println!(
        "rollout of 3 (operator killed and replaced mid-way): {} ms",
        rollout_started.elapsed().as_millis()
    );
    let seen = std::mem::take(&mut *seen.lock().expect("lock"));
    println!("{seen:?}");
    assert!(seen.split.is_none(), "two clusters: {:?}", seen.split);
    assert_eq!(
        seen.replaced, expected,
        "youngest first, the oldest last, each once"
    );
    assert_eq!(
        seen.oldest.len(),
        2,
        "the oldest member changed exactly once: {:?}",
        seen.oldest
    );
    assert!(
        seen.min_up >= 2,
        "never fewer than replicas-1 Up: {}",
        seen.min_up
    );
    for pod in pods(&Cluster::of(&p)).await {
        let image = &pod.spec.as_ref().expect("spec").containers[0].image;
        assert_eq!(image.as_deref(), Some(new_image.as_str()));
    }
    assert!(status_of(&done).new_cluster_enabled == Some(false));
    let m = op.metrics().await.expect("metrics");
    assert!(
        m.get("muster_operator_leader").copied() == Some(1.0),
        "{m:?}"
    );
}
