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
use k8s_openapi::api::apps::v1::StatefulSet;
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
    assert_eq!(
        (budget.0.as_str(), budget.1.as_str()),
        ("False", "PolicyV1Unavailable")
    );
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

/// Every pod Ready and one cluster of `n` Up members, as every agent sees it.
async fn one_cluster_of(p: &Platform, n: usize) -> Result<(), String> {
    let v = views(&Cluster::of(p)).await;
    if let Some(split) = two_clusters(&v) {
        panic!("two clusters: {split}");
    }
    if v.len() != n {
        return Err(format!("{} of {n} agents answer", v.len()));
    }
    for (pod, m) in &v {
        let up = m.members.iter().filter(|x| x.status == "Up").count();
        if up != n || m.members.len() != n {
            return Err(format!("{pod} sees {up} Up of {}", m.members.len()));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_restarts_scales_and_refuses_bad_specs() {
    let (p, op) = setup("operator-scale", (53, 54)).await;
    let started = create_cluster(&p, 3).await;
    let cs = wait_for(
        &p,
        &op,
        "Running with 3 Up",
        Duration::from_secs(120),
        running(3),
    )
    .await;
    println!(
        "apply → Running (3 replicas): {} ms",
        started.elapsed().as_millis()
    );
    let formed_at = status_of(&cs).formed_at.expect("formed");

    // Every pod deleted at once: no second cluster may form. Either some member
    // survives long enough for the new pods to join it, or none does and the pods
    // wait — with a status that says so and what to do.
    let deleted = p
        .kubectl()
        .args([
            "delete",
            "pods",
            "-l",
            "app.kubernetes.io/instance=shop",
            "--wait=false",
        ])
        .output()
        .expect("kubectl delete");
    assert!(deleted.status.success(), "{deleted:?}");
    let outcome = poll(
        "the pods rejoin, or wait with a clear status",
        Duration::from_secs(120),
        || async {
            let cs = specs(&p).get("shop").await.map_err(|e| e.to_string())?;
            if let Some((_, reason, message)) = condition(&cs, "Degraded").filter(|c| c.0 == "True")
                && reason == "NoClusterToJoin"
            {
                return Ok(Err(message));
            }
            one_cluster_of(&p, 3).await?;
            running(3)(&cs)?;
            Ok(Ok(()))
        },
    )
    .await;
    match outcome {
        Ok(()) => println!("after deleting every pod: a surviving member kept the cluster"),
        Err(message) => {
            println!("after deleting every pod: the pods wait ({message})");
            assert!(message.contains("newClusterEnabled"), "{message}");
            // The agents say why: the lowest contact point, which would form, may not
            // (the others wait for it); none is a member.
            poll(
                "the lowest agent says it may not form",
                Duration::from_secs(60),
                || async {
                    let all = pods(&Cluster::of(&p)).await;
                    if all.len() != 3 {
                        return Err(format!("{} pods", all.len()));
                    }
                    let mut bodies = Vec::new();
                    for pod in all {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        let (_, body) = p.pod_get(&name, 8558, "/bootstrap/status").await?;
                        assert!(
                            body.contains("\"selfStatus\":null"),
                            "{name} is not a member: {body}"
                        );
                        bodies.push(body);
                    }
                    if bodies.iter().any(|b| b.contains("new-cluster-enabled")) {
                        Ok(())
                    } else {
                        Err(bodies.join("\n"))
                    }
                },
            )
            .await;
            // The user's way out: allow forming until the cluster is back, then auto.
            patch_spec(&p, json!({"bootstrap": {"newClusterEnabled": "true"}})).await;
            poll("one cluster again", Duration::from_secs(120), || {
                one_cluster_of(&p, 3)
            })
            .await;
            patch_spec(&p, json!({"bootstrap": {"newClusterEnabled": "auto"}})).await;
        }
    }
    let cs = wait_for(
        &p,
        &op,
        "Running with 3 Up",
        Duration::from_secs(60),
        running(3),
    )
    .await;
    let s = status_of(&cs);
    assert_eq!(
        s.formed_at.as_deref(),
        Some(formed_at.as_str()),
        "formed once"
    );
    assert_eq!(s.new_cluster_enabled, Some(false));

    // 3 → 5: the new pods join the existing cluster.
    patch_spec(&p, json!({"replicas": 5})).await;
    wait_for(
        &p,
        &op,
        "Running with 5 Up",
        Duration::from_secs(120),
        running(5),
    )
    .await;
    poll("one cluster of 5", Duration::from_secs(30), || {
        one_cluster_of(&p, 5)
    })
    .await;

    // 5 → 2: shop-2, shop-3 and shop-4 are asked to leave before their pods go.
    let steps = |m: &BTreeMap<String, f64>| {
        m.get("muster_operator_rollout_steps_total{step=\"leave\"}")
            .copied()
            .unwrap_or(0.0)
    };
    let left_before = steps(&op.metrics().await.expect("metrics"));
    patch_spec(&p, json!({"replicas": 2})).await;
    wait_for(
        &p,
        &op,
        "Running with 2 Up",
        Duration::from_secs(120),
        running(2),
    )
    .await;
    poll(
        "two pods, one cluster of 2",
        Duration::from_secs(60),
        || async {
            let n = pods(&Cluster::of(&p)).await.len();
            if n != 2 {
                return Err(format!("{n} pods"));
            }
            one_cluster_of(&p, 2).await
        },
    )
    .await;
    let left = steps(&op.metrics().await.expect("metrics")) - left_before;
    assert!(
        left >= 3.0,
        "each removed member was asked to leave: {left}"
    );
    let events = p
        .kubectl()
        .args(["get", "events", "--field-selector", "reason=MemberLeaving"])
        .output()
        .expect("kubectl get events");
    let events = String::from_utf8_lossy(&events.stdout);
    for pod in ["shop-2", "shop-3", "shop-4"] {
        assert!(events.contains(pod), "{pod} asked to leave:\n{events}");
    }
    // Graceful: the members that stay saw nobody downed.
    for pod in ["shop-0", "shop-1"] {
        let (_, metrics) = p
            .pod_get(pod, 8558, "/metrics")
            .await
            .expect("agent metrics");
        let downed = metrics
            .lines()
            .find_map(|l| l.strip_prefix("muster_cluster_members_downed_total "))
            .unwrap_or("0");
        assert_eq!(downed.trim(), "0", "{pod}: members left, none was downed");
    }

    // An invalid spec: refused with the field and the fix; nothing else changes.
    let sets: Api<StatefulSet> = Api::namespaced(p.client.clone(), &p.namespace);
    let version = sets
        .get("shop")
        .await
        .expect("sts")
        .metadata
        .resource_version;
    patch_spec(&p, json!({"bootstrap": {"requiredContactPoints": 7}, "agent": {"image": "other/muster-agent:v9"}})).await;
    let cs = wait_for(
        &p,
        &op,
        "the spec refused",
        Duration::from_secs(30),
        |cs| match condition(cs, "Degraded") {
            Some((st, reason, _)) if st == "True" && reason == "InvalidSpec" => Ok(()),
            other => Err(format!("Degraded {other:?}")),
        },
    )
    .await;
    let message = condition(&cs, "Degraded").expect("Degraded").2;
    assert!(
        message.contains("spec.bootstrap.requiredContactPoints")
            && message.contains("at most spec.replicas"),
        "{message}"
    );
    assert_eq!(
        sets.get("shop")
            .await
            .expect("sts")
            .metadata
            .resource_version,
        version,
        "nothing applied from an invalid spec"
    );
    let events = p
        .kubectl()
        .args(["get", "events", "--field-selector", "reason=InvalidSpec"])
        .output()
        .expect("kubectl get events");
    assert!(
        String::from_utf8_lossy(&events.stdout).contains("requiredContactPoints"),
        "{events:?}"
    );
    // Fixed: reconciled again.
    patch_spec(
        &p,
        json!({"bootstrap": {"requiredContactPoints": null}, "agent": {"image": p.agent_image()}}),
    )
    .await;
    wait_for(&p, &op, "healthy again", Duration::from_secs(30), |cs| {
        running(2)(cs)?;
        match condition(cs, "Degraded") {
            Some((st, _, _)) if st == "False" => Ok(()),
            other => Err(format!("Degraded {other:?}")),
        }
    })
    .await;
}
