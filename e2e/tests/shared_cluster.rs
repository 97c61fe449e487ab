//! muster in a Kubernetes cluster shared with other teams' objects, on the local
//! platform with the operator as a process: a ClusterSpec named like an application's
//! ServiceAccount and ConfigMap neither changes nor adopts them (before, the operator
//! force-applied its own over them and deleting the ClusterSpec deleted them); it
//! reports the conflict by object, and forms once the names are free. Pods that carry
//! the cluster's labels but are not its StatefulSet's are never contact points (Helm's
//! instance label), never asked for members and never sent the management token. And
//! a leader that was paused mid-rollout writes nothing once it runs again (fenced
//! leadership). A cluster with `spec.tls` forms over TLS with the operator's CA, is
//! read and scaled by the operator over HTTPS, and takes a renewed certificate without
//! a restart or a split. A cluster key rotated on request moves every agent to the
//! new key, step by step, with every member Up throughout, the operator replaced by
//! another after the first step. Each cluster's agents reach their own objects only, and
//! the operator can grant no right it does not hold (least privilege, with each side's
//! token).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::ByteString;
use kube::ResourceExt;
use node_agent::api::{ClusterMembers, ManagementClient, check};
use operator::controller::build::tls::first_der;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

mod support;
use support::operator::{
    Cluster, Operator, OperatorLog, RolloutWatch, assert_events, condition, create_cluster,
    platform, retagged, running, setup, setup_with, status_of,
};
use support::poll;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_spec_never_takes_over_objects_of_others() {
    let (p, op) = setup("shared-cluster", (83, 84)).await;
    let ns = p.namespace.clone();
    let accounts: Api<ServiceAccount> = Api::namespaced(p.client.clone(), &ns);
    let maps: Api<ConfigMap> = Api::namespaced(p.client.clone(), &ns);

    // Another team's application, "cache": its ServiceAccount and its settings.
    let theirs = json!({"app": "cache", "team": "storage"});
    let account: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "cache", "labels": theirs},
    }))
    .expect("a ServiceAccount");
    let account = accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("create their ServiceAccount");
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "cache", "labels": theirs},
        "data": {"size": "4Gi"},
    }))
    .expect("a ConfigMap");
    let map = maps
        .create(&PostParams::default(), &map)
        .await
        .expect("create their ConfigMap");

    // A ClusterSpec of the same name.
    create_cluster(&p, "cache", 3, json!({})).await;
    let c = Cluster::of(&p, "cache");
    let message = conflict_reported(&c, &op).await;
    println!("reported: {message}");
    assert!(
        message.contains("ServiceAccount cache exists")
            && message.contains("ConfigMap cache exists"),
        "both objects named: {message}"
    );

    // Theirs, untouched (kube-controller-manager may write the ServiceAccount, so its
    // resourceVersion is no witness: no field of it is the operator's, and its labels
    // and owners are as made); nothing of the cluster's made meanwhile, not even the key.
    let untouched = |meta: &ObjectMeta, before: &ObjectMeta, what: &str| {
        let managers: Vec<String> = meta
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert!(
            !managers.iter().any(|m| m == "muster-operator"),
            "{what} was written by the operator: {managers:?}"
        );
        assert!(
            meta.owner_references.is_none(),
            "{what} got an owner: {meta:?}"
        );
        assert_eq!(meta.labels, before.labels, "{what}'s labels");
    };
    let account_now = accounts.get("cache").await.expect("their ServiceAccount");
    untouched(
        &account_now.metadata,
        &account.metadata,
        "their ServiceAccount",
    );
    let map_now = maps.get("cache").await.expect("their ConfigMap");
    untouched(&map_now.metadata, &map.metadata, "their ConfigMap");
    assert_eq!(
        map.metadata.resource_version, map_now.metadata.resource_version,
        "their ConfigMap was written"
    );
    let none_of = |what: &str, found: bool| assert!(!found, "{what} was created");
    none_of(
        "the StatefulSet",
        Api::<StatefulSet>::namespaced(p.client.clone(), &ns)
            .get_opt("cache")
            .await
            .expect("read")
            .is_some(),
    );
    none_of(
        "the Secret",
        Api::<Secret>::namespaced(p.client.clone(), &ns)
            .get_opt("cache-cluster-key")
            .await
            .expect("read")
            .is_some(),
    );
    none_of(
        "the formation record",
        Api::<Lease>::namespaced(p.client.clone(), &ns)
            .get_opt("cache-formation")
            .await
            .expect("read")
            .is_some(),
    );
    // The Event follows the status write.
    let events: Api<Event> = Api::namespaced(p.client.clone(), &ns);
    poll(
        "a Warning event naming the object",
        Duration::from_secs(30),
        || async {
            let found = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .into_iter()
                .any(|e| {
                    e.reason.as_deref() == Some("ObjectConflict")
                        && e.message
                            .as_deref()
                            .is_some_and(|m| m.contains("ServiceAccount cache"))
                });
            if found {
                Ok(())
            } else {
                Err("none yet".to_owned())
            }
        },
    )
    .await;

    // Deleting the ClusterSpec leaves theirs alone.
    c.api()
        .delete("cache", &DeleteParams::default())
        .await
        .expect("delete the ClusterSpec");
    poll("the ClusterSpec gone", Duration::from_secs(30), || async {
        match c.api().get_opt("cache").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let account_after = accounts
        .get("cache")
        .await
        .expect("their ServiceAccount is kept");
    assert_eq!(account_after.metadata.uid, account.metadata.uid);
    let map_after = maps.get("cache").await.expect("their ConfigMap is kept");
    assert_eq!(map_after.data, map.data);

    // Once the names are free, the same ClusterSpec forms.
    accounts
        .delete("cache", &DeleteParams::default())
        .await
        .expect("delete their ServiceAccount");
    maps.delete("cache", &DeleteParams::default())
        .await
        .expect("delete their ConfigMap");
    create_cluster(&p, "cache", 3, json!({})).await;
    c.wait_for(
        &op,
        "Running with 3 Up",
        Duration::from_secs(120),
        running(3),
    )
    .await;
    let cs = c.api().get("cache").await.expect("the ClusterSpec");
    assert!(
        condition(&cs, "Degraded").is_none_or(|(s, _, _)| s == "False"),
        "{:?}",
        condition(&cs, "Degraded")
    );
}

/// Leadership is fenced: the leader is stopped (SIGSTOP) in the middle of a rollout,
/// between deciding to delete a pod and deleting it; the standby takes the Lease once
/// it runs out and finishes the rollout; when the old leader runs again (SIGCONT) its
/// time is up: it sends nothing (no pod deleted, no object applied, no Leave) and
/// exits with code 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_was_paused_writes_nothing_when_it_runs_again() {
    use nix::sys::signal::Signal;
    let p = platform("fenced-leader", (85, 86), e2e::VolumeRefresh::default()).await;
    // The leader waits 3 s between deciding on a pod's deletion and doing it: the
    // test stops it in that window.
    let mut a = Operator::start_with(
        &p,
        "op-a",
        SocketAddr::from(([127, 0, 85, 10], 8080)),
        &["--test-delay-before-delete-ms", "3000"],
        // Every write its fence lets through is logged.
        "info,operator::leader=debug",
    );
    leads(&a, "op-a").await;
    let b = Operator::start(&p, "op-b", SocketAddr::from(([127, 0, 85, 11], 8080)));
    create_cluster(&p, "fenced", 3, json!({})).await;
    let c = Cluster::of(&p, "fenced");
    c.wait_for(
        &a,
        "Running with 3 Up",
        Duration::from_secs(120),
        running(3),
    )
    .await;

    let watch = RolloutWatch::start(&c).await;
    let started = Instant::now();
    let image = retagged(p.agent_image(), "v2");
    c.patch_spec(json!({"agent": {"image": image}})).await;
    let log = a.log_path().to_owned();
    poll(
        "op-a about to delete a pod",
        Duration::from_secs(120),
        || async {
            let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
            if text.contains("about to delete the pod") {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await;
    a.signal(Signal::SIGSTOP).expect("SIGSTOP op-a");
    let stopped = Instant::now();
    println!(
        "op-a stopped {} ms into the rollout, before its first deletion",
        started.elapsed().as_millis()
    );
    leads(&b, "op-b").await;
    println!(
        "op-b took the Lease {} ms after op-a stopped",
        stopped.elapsed().as_millis()
    );
    c.wait_for(
        &b,
        "the rollout finished by op-b",
        Duration::from_secs(240),
        |cs| {
            running(3)(cs)?;
            if status_of(cs).rollout.is_some() {
                return Err("rollout in progress".into());
            }
            Ok(())
        },
    )
    .await;
    let seen = watch.stop().await;
    println!(
        "rollout of 3 with the leader stopped mid-way: {} ms; {seen:?}",
        started.elapsed().as_millis()
    );
    assert!(seen.split.is_none(), "two clusters: {:?}", seen.split);
    let uids = |pods: Vec<k8s_openapi::api::core::v1::Pod>| -> Vec<(String, String)> {
        pods.into_iter()
            .map(|p| {
                (
                    p.metadata.name.unwrap_or_default(),
                    p.metadata.uid.unwrap_or_default(),
                )
            })
            .collect()
    };
    let before = uids(c.pods().await);
    for pod in c.pods().await {
        let image_now = &pod.spec.as_ref().expect("spec").containers[0].image;
        assert_eq!(
            image_now.as_deref(),
            Some(image.as_str()),
            "every pod rolled"
        );
    }

    // op-a runs again: its time is up.
    let mark = std::fs::metadata(&log).expect("op-a's log").len();
    a.signal(Signal::SIGCONT).expect("SIGCONT op-a");
    let resumed = Instant::now();
    let status = a
        .exited(Duration::from_secs(30))
        .await
        .expect("op-a exits once it runs again");
    println!(
        "op-a exited {} ms after SIGCONT with {status:?}",
        resumed.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(1), "lost leadership");
    let text = std::fs::read(&log).expect("op-a's log");
    let after = String::from_utf8_lossy(&text[usize::try_from(mark).unwrap_or(0)..]).into_owned();
    println!("op-a after SIGCONT:\n{after}");
    // Nothing went out: no write passed its fence, and none reached the API server (a
    // stale delete would come back 409, the pod it meant being op-b's new one).
    for wrote in [
        "write sent",
        "rollout: deleted the pod",
        "applied",
        "asked the member to leave",
        "Conflict",
    ] {
        assert!(
            !after.contains(wrote),
            "op-a wrote after it ran again ({wrote}):\n{after}"
        );
    }
    println!(
        "writes op-a tried and its fence refused: {}",
        after.matches("write refused").count()
    );
    // Nothing of op-b's rollout undone: the same pods, and op-b still leads.
    c.wait_for(&b, "still Running", Duration::from_secs(30), running(3))
        .await;
    assert_eq!(
        uids(c.pods().await),
        before,
        "no pod deleted after the rollout"
    );
}

/// Waits until `op` says it holds the leader Lease.
async fn leads(op: &Operator, who: &str) {
    poll(&format!("{who} leads"), Duration::from_secs(60), || async {
        match op.metrics().await?.get("muster_operator_leader") {
            Some(v) if *v == 1.0 => Ok(()),
            other => Err(format!("leader gauge {other:?}")),
        }
    })
    .await;
}

/// A pod in the namespace that is not the cluster's: a Python server on the agent's
/// port that answers everything as an agent would be asked (`/cluster/members` with
/// itself as the one Up member, so that an operator that asked it would believe it) and
/// prints each request's method, path and whether it carried a bearer token.
fn impostor(name: &str, labels: serde_json::Value) -> k8s_openapi::api::core::v1::Pod {
    const SERVER: &str = r#"
import http.server, json, os, sys
ip = os.environ["POD_IP"]
node = {"protocol": "muster", "system": "cache", "host": ip, "port": 2552}
members = json.dumps({"selfNode": node, "leader": node, "oldest": node,
    "members": [{"node": node, "nodeUid": "1", "status": "Up", "roles": [], "appVersion": "1"}],
    "unreachable": []}).encode()
class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self):
        token = "token" if self.headers.get("Authorization") else "-"
        print(self.command, self.path, token, flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(members)))
        self.end_headers()
        self.wfile.write(members)
    do_GET = do_PUT = do_POST = do_DELETE = answer
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((ip, 8558), Handler).serve_forever()
"#;
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "containers": [{
                "name": "server",
                "image": "python3",
                "command": ["python3", "-c", SERVER],
                "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                "ports": [{"name": "management", "containerPort": 8558}],
                "readinessProbe": {"tcpSocket": {"port": 8558}, "periodSeconds": 1},
            }],
        },
    }))
    .expect("a pod")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_only_look_like_the_clusters_are_never_its_members() {
    let (p, op) = setup("look-alike-pods", (87, 88)).await;
    let ns = p.namespace.clone();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(p.client.clone(), &ns);
    // Another team's Helm release named "cache" labels its pods with Helm's common
    // instance label. It exists before the cluster, so it holds the lowest address and
    // is Ready first: the pod an operator would ask first, and a contact point agents
    // selecting by that label would wait for.
    let helm = impostor("cache-helm", json!({"app.kubernetes.io/instance": "cache"}));
    // Later someone makes a pod that carries muster's labels too (not named
    // `cache-<n>`: the StatefulSet controller would adopt that one). Agents may probe
    // it (contact points are found by those labels; one there before forming would
    // stall it, as the README says), but the operator must never take it for one of
    // the cluster's.
    let lookalike = impostor(
        "cache-x",
        json!({"app.kubernetes.io/instance": "cache", "muster.dev/cluster": "cache",
               "app.kubernetes.io/name": "muster", "app.kubernetes.io/managed-by": "muster-operator"}),
    );
    let cp = p.control_plane().expect("the local platform");
    let log = |pod: &str| cp.dir.join(format!("{ns}_{pod}_server.log"));
    let started = |pod: k8s_openapi::api::core::v1::Pod| {
        let pods = pods.clone();
        async move {
            let name = pod.metadata.name.clone().unwrap_or_default();
            pods.create(&PostParams::default(), &pod)
                .await
                .expect("create the pod");
            poll("the pod Ready", Duration::from_secs(60), || async {
                let status = pods.get(&name).await.map_err(|e| e.to_string())?.status;
                let status = status.unwrap_or_default();
                let ready = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (ready && status.pod_ip.is_some())
                    .then_some(())
                    .ok_or_else(|| format!("{name} not Ready yet"))
            })
            .await;
        }
    };
    started(helm.clone()).await;

    // Agents discover by the Kubernetes API (the pods' labels); then, with the
    // look-alike running, scale 3 → 2: the operator reads member lists and sends a
    // Leave with the management token.
    create_cluster(
        &p,
        "cache",
        3,
        json!({"bootstrap": {"discovery": "kubernetes-api"}}),
    )
    .await;
    let c = Cluster::of(&p, "cache");
    c.wait_for(
        &op,
        "Running with 3 Up",
        Duration::from_secs(120),
        running(3),
    )
    .await;
    started(lookalike.clone()).await;
    c.patch_spec(json!({"replicas": 2})).await;
    c.wait_for(
        &op,
        "Running with 2 Up",
        Duration::from_secs(120),
        running(2),
    )
    .await;
    poll("one cluster of 2", Duration::from_secs(60), || async {
        c.one_cluster_of(2).await
    })
    .await;

    // The Service (what `dns` discovery finds through the cluster DNS, and what the
    // agents' peers are) selects the cluster's pods and the look-alike, never the Helm
    // release's pod. (The local platform cannot show this through Endpoints: they may
    // not hold loopback addresses.)
    let service: k8s_openapi::api::core::v1::Service = Api::namespaced(p.client.clone(), &ns)
        .get("cache")
        .await
        .expect("the Service");
    let selector = service.spec.and_then(|s| s.selector).unwrap_or_default();
    let selects = |pod: &k8s_openapi::api::core::v1::Pod| {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    assert!(
        !selects(&helm),
        "the Service selects the Helm release's pod: {selector:?}"
    );
    assert!(selects(&lookalike), "{selector:?}");
    for pod in c.pods().await {
        assert!(selects(&pod), "{selector:?}");
    }
    let set: StatefulSet = Api::namespaced(p.client.clone(), &ns)
        .get("cache")
        .await
        .expect("the StatefulSet");
    let selector = set.spec.selector.match_labels;
    assert_eq!(
        selector,
        Some([("muster.dev/cluster".to_owned(), "cache".to_owned())].into()),
        "selected by muster's own label"
    );
    // Nobody — agent or operator — asked the Helm release's pod anything; the operator
    // never asked the look-alike for members nor sent it the token (agents may probe
    // it: it carries muster's label, which is what contact points are found by).
    let helm_log = std::fs::read_to_string(log("cache-helm")).expect("the Helm pod's log");
    assert!(
        helm_log.trim().is_empty(),
        "the Helm release's pod was asked: {helm_log}"
    );
    let lookalike_log = std::fs::read_to_string(log("cache-x")).expect("the look-alike's log");
    for line in lookalike_log.lines() {
        assert!(
            !line.contains("/cluster/members") && !line.ends_with(" token"),
            "the operator asked the look-alike pod: {line}"
        );
    }
    // Both still run: no rollout or scale-down deleted them.
    for name in ["cache-helm", "cache-x"] {
        let pod = pods.get(name).await.expect("still there");
        assert!(
            pod.metadata.deletion_timestamp.is_none(),
            "{name} is being deleted"
        );
    }
    let pods_of_cluster = c.pods().await.len();
    assert_eq!(pods_of_cluster, 2, "the cluster's own pods");
    eprintln!(
        "look-alike pods: Helm's asked nothing; the look-alike was asked {} time(s), by agents only",
        lookalike_log.lines().count()
    );
}

/// A ClusterSpec's author chooses the agent image. Two tenants run one that answers
/// the operator's `/cluster/members` as badly as it can (`tests/fixtures/hostile-agent`:
/// an endless member list, one byte a second, no answer at all), with the operator
/// allowed fewer reconciles at once than there are such tenants plus one. Meanwhile
/// another team's cluster forms and scales: the operator stays up, keeps reconciling
/// it, reads no more of an answer than its bound, and says in each hostile tenant's
/// status what its agents did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_answer_garbage_cannot_stop_the_operator_serving_other_tenants() {
    let p = platform("hostile-agents", (89, 90), Default::default()).await;
    let mut op = Operator::start_with(
        &p,
        "op-a",
        SocketAddr::from(([127, 0, 89, 10], 8080)),
        &["--max-concurrent-reconciles", "2"],
        "info",
    );
    let hostile = ["evil-a", "evil-b"];
    for name in hostile {
        create_cluster(&p, name, 3, json!({"agent": {"image": "hostile-agent"}})).await;
    }
    for name in hostile {
        Cluster::of(&p, name)
            .wait_for(
                &op,
                "the agents' answers named in the status",
                Duration::from_secs(120),
                |cs| {
                    let (_, _, message) = condition(cs, "Available").unwrap_or_default();
                    // The endless list, and the silent or dribbling agents (asked in
                    // time, or not asked once the look's 5 s were up).
                    let too_large = message.contains("answer larger than 1048576 bytes");
                    let silent = message.contains("no answer within 2s")
                        || message.contains("agents not asked");
                    (too_large && silent)
                        .then_some(())
                        .ok_or_else(|| format!("Available says {message:?}"))
                },
            )
            .await;
    }

    let started = create_cluster(&p, "cache", 3, json!({})).await;
    let c = Cluster::of(&p, "cache");
    c.wait_for(
        &op,
        "Running with 3 Up",
        Duration::from_secs(180),
        running(3),
    )
    .await;
    let formed = started.elapsed();
    let scaled = Instant::now();
    c.patch_spec(json!({"replicas": 4})).await;
    c.wait_for(
        &op,
        "Running with 4 Up",
        Duration::from_secs(180),
        running(4),
    )
    .await;
    let scaled = scaled.elapsed();
    poll("one cluster of 4", Duration::from_secs(60), || async {
        c.one_cluster_of(4).await
    })
    .await;

    // Still the same process, leading, and within the chart's memory limit.
    assert!(
        op.exited(Duration::ZERO).await.is_none(),
        "the operator exited:\n{}",
        op.log_tail()
    );
    leads(&op, "op-a").await;
    let peak = support::operator::peak_rss_mib(op.pid());
    assert!(
        peak < 128.0,
        "the operator's resident memory peaked at {peak:.1} MiB"
    );
    // How often the hostile agents were asked (a failed look that took long is
    // repeated every 30 s, or when a pod changes, not every 2 s).
    let cp = p.control_plane().expect("the local platform");
    let mut asked = 0;
    for name in hostile {
        for i in 0..3 {
            let log = cp.dir.join(format!("{}_{name}-{i}_agent.log", p.namespace));
            let text = std::fs::read_to_string(&log).expect("a hostile agent's log");
            asked += text
                .lines()
                .filter(|l| l.contains("/cluster/members"))
                .count();
        }
    }
    let metrics = op.metrics().await.expect("metrics");
    let reconciles = metrics
        .get("muster_operator_reconciles_total")
        .copied()
        .unwrap_or_default();
    eprintln!(
        "hostile agents: {} tenants x 3 pods, 2 reconciles at once; the other cluster Running 3 after {:.1} s, scaled to 4 in {:.1} s; \
         operator peak RSS {peak:.1} MiB, {reconciles} reconciles, the hostile agents asked for members {asked} times",
        hostile.len(),
        formed.as_secs_f64(),
        scaled.as_secs_f64(),
    );
}

/// An HTTPS client for the agents of cluster `name` in `ns`: trusting the CAs of
/// `ca_pem` alone, checking the cluster's name.
fn https_client(ca_pem: &str, name: &str, ns: &str) -> ManagementClient {
    let tls = operator::agents::client_tls(ca_pem.as_bytes(), &format!("{name}.{ns}.muster"))
        .expect("a TLS client");
    ManagementClient::new(Duration::from_secs(2)).with_tls(tls)
}

/// Every answering agent's member list and TLS certificate (fingerprint), by pod.
async fn tls_views(
    c: &Cluster,
    client: &ManagementClient,
) -> BTreeMap<String, (ClusterMembers, Option<String>)> {
    let mut out = BTreeMap::new();
    for pod in c.pods().await {
        let Some(ip) = support::operator::pod_ip(&pod) else {
            continue;
        };
        let addr = SocketAddr::new(ip, e2e::MANAGEMENT_PORT);
        if let (Ok(m), Ok(s)) = (
            client.members(addr).await,
            client.bootstrap_status(addr).await,
        ) {
            out.insert(pod.name_any(), (m, s.tls.map(|t| t.certificate)));
        }
    }
    out
}

/// The text under `key` of `secret`.
fn secret_text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("data");
    String::from_utf8(
        data.get(key)
            .unwrap_or_else(|| panic!("no {key}"))
            .0
            .clone(),
    )
    .expect("text")
}

/// Fingerprint of the first certificate in `pem`, as agents report theirs.
fn fingerprint_of(pem: &str) -> String {
    node_agent::tls::fingerprint(&first_der(pem).expect("a certificate"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_forms_scales_and_renews_its_certificate_without_restarts() {
    // The kubelet refreshes mounted Secrets every 10-15 s here, not every 60-90 s as by
    // default: the renewal's safety does not depend on it (every agent trusts the same
    // CA throughout), only this test's length.
    let refresh = e2e::VolumeRefresh {
        sync_period: Duration::from_secs(10),
        ..e2e::VolumeRefresh::default()
    };
    let (p, op) = setup_with("tls", (95, 96), refresh).await;
    let c = Cluster::of(&p, "vault");
    let started = create_cluster(&p, "vault", 3, json!({"tls": {"enabled": true}})).await;
    // Running with 3 Up: the operator read the members over HTTPS, trusting the
    // cluster's CA (it never falls back to plain HTTP), and the HTTPS probes passed.
    c.wait_for(
        &op,
        "Running with 3 Up over TLS",
        Duration::from_secs(180),
        running(3),
    )
    .await;
    println!(
        "apply → Running (3 replicas, TLS): {} ms",
        started.elapsed().as_millis()
    );

    let secrets: Api<Secret> = Api::namespaced(p.client.clone(), &p.namespace);
    let ca_secret = secrets.get("vault-muster-ca").await.expect("the CA Secret");
    let tls_secret = secrets
        .get("vault-muster-tls")
        .await
        .expect("the agents' Secret");
    let cs = c.api().get("vault").await.expect("the ClusterSpec");
    for s in [&ca_secret, &tls_secret] {
        let owner = s.metadata.owner_references.iter().flatten().next();
        assert!(
            owner.is_some_and(
                |o| o.controller == Some(true) && Some(&o.uid) == cs.metadata.uid.as_ref()
            ),
            "{:?}",
            s.metadata
        );
    }
    assert_eq!(tls_secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert!(secret_text(&ca_secret, "ca.key").contains("PRIVATE KEY"));
    assert!(
        !tls_secret
            .data
            .as_ref()
            .expect("data")
            .contains_key("ca.key"),
        "the CA's key never reaches a pod"
    );
    let ca_pem = secret_text(&ca_secret, "ca.crt");
    assert_eq!(secret_text(&tls_secret, "ca.crt"), ca_pem);
    // Only the agent container mounts it.
    for pod in c.pods().await {
        let spec = pod.spec.as_ref().expect("spec");
        for container in &spec.containers {
            let mounts_tls = container
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "muster-tls");
            assert_eq!(mounts_tls, container.name == "agent", "{}", container.name);
        }
    }

    // Every agent answers over HTTPS with a certificate of the cluster's CA for the
    // cluster's name, and they are one cluster; plain HTTP and another cluster's name
    // get nothing.
    let client = https_client(&ca_pem, "vault", &p.namespace);
    let first_cert = fingerprint_of(&secret_text(&tls_secret, "tls.crt"));
    // Running says the agent the operator asked sees 3 Up; the newest agent may not
    // have heard the last gossip round yet (CI saw one still Joining).
    poll("one cluster of 3 over TLS", Duration::from_secs(60), || {
        let (c, client, first_cert) = (c.clone(), client.clone(), first_cert.clone());
        async move {
            let views = tls_views(&c, &client).await;
            let members: Vec<ClusterMembers> = views.values().map(|v| v.0.clone()).collect();
            if let Err(split) = check::no_split(members.iter()) {
                panic!("two clusters over TLS: {split}");
            }
            if views.len() != 3 {
                return Err(format!("{} of 3 answer over TLS", views.len()));
            }
            for (pod, (_, cert)) in &views {
                assert_eq!(cert.as_ref(), Some(&first_cert), "{pod}");
            }
            check::one_cluster_of(&members, 3)
        }
    })
    .await;
    let some_ip = c
        .pods()
        .await
        .iter()
        .find_map(support::operator::pod_ip)
        .expect("a pod IP");
    let addr = SocketAddr::new(some_ip, e2e::MANAGEMENT_PORT);
    // (The same agent answered over HTTPS just above.)
    let plain = ManagementClient::new(Duration::from_secs(2))
        .members(addr)
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // The certificate names this cluster alone: a client of another cluster's name
    // refuses it, under the same CA.
    let elsewhere = https_client(&ca_pem, "other", &p.namespace)
        .members(addr)
        .await;
    assert!(
        elsewhere.is_err(),
        "the certificate passed for another cluster's name: {elsewhere:?}"
    );

    // A scale-down: the operator's Leave, with the management token, goes over TLS.
    c.patch_spec(json!({"replicas": 2})).await;
    c.wait_for(
        &op,
        "Running with 2 Up",
        Duration::from_secs(120),
        running(2),
    )
    .await;

    // Renewal: the agents' certificate has two days left (issued by the same CA);
    // the operator issues a new one, and every agent takes it with no restart, no
    // member lost and no split.
    let ca = operator::controller::build::tls::ca_of(&ca_secret).expect("the CA");
    let server = format!("vault.{}.muster", p.namespace);
    let short = operator::ca::issue(
        &ca,
        &server,
        SystemTime::now(),
        Duration::from_secs(2 * 86400),
    )
    .expect("a short certificate");
    let mut shortened = secrets.get("vault-muster-tls").await.expect("the Secret");
    let data = shortened.data.as_mut().expect("data");
    data.insert(
        "tls.crt".into(),
        ByteString(short.cert_pem.clone().into_bytes()),
    );
    data.insert(
        "tls.key".into(),
        ByteString(short.key_pem.clone().into_bytes()),
    );
    secrets
        .replace("vault-muster-tls", &PostParams::default(), &shortened)
        .await
        .expect("shorten the certificate");
    let before = pods_and_restarts(&c).await;
    let members_before = members_of(&c, &client).await;
    // A change of the ClusterSpec's annotations starts a reconcile at once (a quiet
    // cluster is otherwise looked at every 30 s).
    c.api()
        .patch(
            "vault",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {"test/wake": "1"}}})),
        )
        .await
        .expect("annotate");
    let renewed = poll("the certificate renewed", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        let short = short.cert_pem.clone();
        async move {
            let s = secrets
                .get("vault-muster-tls")
                .await
                .map_err(|e| e.to_string())?;
            let cert = secret_text(&s, "tls.crt");
            if cert == short {
                return Err("still the short one".into());
            }
            Ok(cert)
        }
    })
    .await;
    // The status tells the renewed certificate's end.
    let renewed_end = first_der(&renewed)
        .and_then(|der| node_agent::tls::not_after(&der))
        .map(node_agent::tls::rfc3339)
        .expect("the renewed certificate's end");
    let renewed = fingerprint_of(&renewed);
    c.wait_for(
        &op,
        "the status shows the renewed certificate's end",
        Duration::from_secs(60),
        |cs| {
            let end = status_of(cs).tls.map(|t| t.certificate_not_after);
            match end {
                Some(end) if end == renewed_end => Ok(()),
                other => Err(format!("certificateNotAfter {other:?}")),
            }
        },
    )
    .await;
    assert_ne!(renewed, first_cert);
    let renewing = Instant::now();
    poll(
        "every agent uses the renewed certificate",
        Duration::from_secs(120),
        || {
            let (c, client, renewed) = (c.clone(), client.clone(), renewed.clone());
            async move {
                let views = tls_views(&c, &client).await;
                let members: Vec<ClusterMembers> = views.values().map(|v| v.0.clone()).collect();
                if let Err(split) = check::no_split(members.iter()) {
                    panic!("two clusters during the renewal: {split}");
                }
                check::one_cluster_of(&members, 2)?;
                let behind: Vec<&String> = views
                    .iter()
                    .filter(|(_, (_, cert))| cert.as_ref() != Some(&renewed))
                    .map(|(pod, _)| pod)
                    .collect();
                if views.len() == 2 && behind.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} answer; not yet on it: {behind:?}", views.len()))
                }
            }
        },
    )
    .await;
    println!(
        "renewed certificate in use by every agent after {} ms",
        renewing.elapsed().as_millis()
    );
    assert_eq!(
        pods_and_restarts(&c).await,
        before,
        "the same pods, not restarted"
    );
    assert_eq!(
        members_of(&c, &client).await,
        members_before,
        "the same members throughout"
    );
    assert_events(
        &p,
        "vault",
        &[
            "TlsCaCreated",
            "TlsCertificateIssued",
            "TlsCertificateRenewed",
        ],
    );
}

/// Each pod's uid and container restarts, by name.
async fn pods_and_restarts(c: &Cluster) -> BTreeMap<String, (Option<String>, i32)> {
    c.pods()
        .await
        .iter()
        .map(|p| (p.name_any(), (p.metadata.uid.clone(), restarts(p))))
        .collect()
}

/// The members (address and incarnation) one agent lists.
async fn members_of(
    c: &Cluster,
    client: &ManagementClient,
) -> Vec<(node_agent::base::address::NodeAddress, u64)> {
    let (members, _) = tls_views(c, client)
        .await
        .into_values()
        .next()
        .expect("a view");
    members
        .members
        .iter()
        .map(|m| (m.node.clone(), m.node_uid))
        .collect()
}

/// Container restarts of `pod`.
fn restarts(pod: &k8s_openapi::api::core::v1::Pod) -> i32 {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_key_rotation_moves_every_agent_to_a_new_key_without_a_split() {
    let p = rotation_platform("keyrot", 97).await;
    let start = |identity: &str, host: u8| rotation_operator(&p, identity, 97, host);
    let mut op = start("op-a", 10);
    let c = Cluster::of(&p, "keys");
    create_cluster(&p, "keys", 3, json!({})).await;
    let cs = c
        .wait_for(
            &op,
            "Running with 3 Up",
            Duration::from_secs(180),
            running(3),
        )
        .await;
    poll("one cluster of 3", Duration::from_secs(60), || {
        c.one_cluster_of(3)
    })
    .await;
    let old = status_of(&cs).cluster_key.expect("status.clusterKey").keys;
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(
        agent_keys(&c).await.into_values().collect::<Vec<_>>(),
        vec![old.clone(); 3]
    );
    let secrets: Api<Secret> = Api::namespaced(p.client.clone(), &p.namespace);
    let before_secret = secrets.get("keys-cluster-key").await.expect("the Secret");
    let before = pods_and_restarts(&c).await;
    let members_before = c.views().await.into_values().next().expect("a view");
    let original: Vec<(node_agent::base::address::NodeAddress, u64)> = members_before
        .members
        .iter()
        .map(|m| (m.node.clone(), m.node_uid))
        .collect();

    // Traffic throughout: every agent asked for its members again and again (and the
    // agents gossip and check each other's heartbeats, every frame signed). At every
    // look: one cluster, every original member listed and Up.
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn({
        let (c, original) = (c.clone(), original.clone());
        async move {
            let (mut looks, mut unreachable_seen) = (0u32, 0u32);
            let deadline = Instant::now() + Duration::from_secs(400);
            while !*stopped.borrow() && Instant::now() < deadline {
                let views = c.views().await;
                if all_up(views.iter(), &original)? {
                    unreachable_seen += 1;
                }
                looks += 1;
                let _ = tokio::time::timeout(Duration::from_millis(200), stopped.changed()).await;
            }
            Ok::<_, String>((looks, unreachable_seen))
        }
    });

    let asked = Instant::now();
    annotate(
        &c,
        "keys",
        operator::controller::key_rotation::ROTATE_ANNOTATION,
        "first",
    )
    .await;
    // The operator stops right after the first step and another one takes over: it
    // goes on from what the Secret records, with the same new key.
    let first_step = poll(
        "the new key beside the old one",
        Duration::from_secs(120),
        || {
            let secrets = secrets.clone();
            async move {
                let s = secrets
                    .get("keys-cluster-key")
                    .await
                    .map_err(|e| e.to_string())?;
                let file = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get("cluster.key"))
                    .ok_or("no key file")?;
                let keys = node_agent::base::secret::ClusterKey::parse_file(&file.0)?;
                let target = s
                    .annotations()
                    .get(operator::controller::key_rotation::TARGET_ANNOTATION)
                    .cloned();
                match target {
                    Some(t) if keys.len() == 2 => Ok(t),
                    _ => Err(format!("{} key(s), target {target:?}", keys.len())),
                }
            }
        },
    )
    .await;
    assert!(
        op.terminate(Duration::from_secs(20)).await.is_some(),
        "the operator stops on SIGTERM"
    );
    op = start("op-b", 11);
    let new = poll(
        "every agent signs with the new key alone",
        Duration::from_secs(300),
        || {
            let (c, old) = (c.clone(), old.clone());
            async move {
                let cs = c.api().get("keys").await.map_err(|e| e.to_string())?;
                let key = status_of(&cs).cluster_key.ok_or("no status.clusterKey")?;
                if key.keys.len() != 1 || key.keys == old || key.rotation.is_some() {
                    return Err(format!("status.clusterKey {key:?}"));
                }
                let agents = agent_keys(&c).await;
                if agents.len() != 3 || agents.values().any(|k| *k != key.keys) {
                    return Err(format!("agents use {agents:?}, status {key:?}"));
                }
                Ok(key.keys)
            }
        },
    )
    .await;
    let took = asked.elapsed();
    stop.send(true).expect("the monitor runs");
    let (looks, unreachable_seen) = monitor
        .await
        .expect("the monitor")
        .unwrap_or_else(|e| panic!("{e}; operator log:\n{}", op.log_tail()));
    println!(
        "cluster key rotated on 3 agents in {} ms (kubelet refresh 10-15 s); {looks} looks at every agent, all one cluster with every member Up; looks with an unreachable member: {unreachable_seen}",
        took.as_millis()
    );
    assert!(looks > 0);

    let after_secret = secrets.get("keys-cluster-key").await.expect("the Secret");
    let data = |s: &Secret, k: &str| s.data.as_ref().and_then(|d| d.get(k)).cloned();
    assert_eq!(
        data(&after_secret, "management.token"),
        data(&before_secret, "management.token"),
        "the management token stays"
    );
    let file = data(&after_secret, "cluster.key").expect("cluster.key").0;
    let keys = node_agent::base::secret::ClusterKey::parse_file(&file).expect("a key file");
    assert_eq!(keys.len(), 1);
    assert_eq!(vec![node_agent::base::secret::key_id(&keys[0])], new);
    assert_eq!(new, [first_step], "the key the first operator added");
    let annotations = after_secret.annotations();
    assert_eq!(
        annotations
            .get(operator::controller::key_rotation::HANDLED_ANNOTATION)
            .map(String::as_str),
        Some("first")
    );
    assert!(
        !annotations.contains_key(operator::controller::key_rotation::TARGET_ANNOTATION),
        "{annotations:?}"
    );
    assert_eq!(
        pods_and_restarts(&c).await,
        before,
        "the same pods, not restarted"
    );
    let members_after = c.views().await.into_values().next().expect("a view");
    assert_eq!(
        members_after
            .members
            .iter()
            .map(|m| (m.node.clone(), m.node_uid))
            .collect::<Vec<_>>(),
        original,
        "the same members throughout"
    );
    let started = events_of(&p, "ClusterKeyRotationStarted");
    assert_eq!(
        started.matches("ClusterKeyRotationStarted").count(),
        1,
        "one new key, not another after the restart: {started}"
    );
    assert_events(
        &p,
        "keys",
        &[
            "ClusterKeyRotationStarted",
            "ClusterKeyRotationStep",
            "ClusterKeyRotated",
        ],
    );

    // A pod made after the rotation starts on the new key and joins.
    c.scale_to(&op, 4, Duration::from_secs(180)).await;
    assert_eq!(
        agent_keys(&c).await.into_values().collect::<Vec<_>>(),
        vec![new; 4]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_moves_every_agent_to_a_new_ca_without_a_split() {
    let p = rotation_platform("carot", 99).await;
    let start = |identity: &str, host: u8| rotation_operator(&p, identity, 99, host);
    let mut op = start("op-a", 10);
    let c = Cluster::of(&p, "certs");
    // Agents read their files every second (default 10 s, in step with each other
    // here, as they start together): each follows its own volume closely, so a step
    // written before every agent had the one before shows as a pair that cannot
    // connect.
    create_cluster(
        &p,
        "certs",
        3,
        json!({"tls": {"enabled": true},
            "agent": {"config": {"tls": {"reload-interval": "1s"}}}}),
    )
    .await;
    let cs = c
        .wait_for(
            &op,
            "Running with 3 Up over TLS",
            Duration::from_secs(180),
            running(3),
        )
        .await;
    let secrets: Api<Secret> = Api::namespaced(p.client.clone(), &p.namespace);
    // What the agents mount, read anew at each look: a client trusting its CAs.
    let mounted_client = {
        let (secrets, ns) = (secrets.clone(), p.namespace.clone());
        move || {
            let (secrets, ns) = (secrets.clone(), ns.clone());
            async move {
                let s = secrets
                    .get("certs-muster-tls")
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(https_client(&secret_text(&s, "ca.crt"), "certs", &ns))
            }
        }
    };
    let old_ca = secret_text(
        &secrets.get("certs-muster-ca").await.expect("the CA"),
        "ca.crt",
    );
    let old_id = fingerprint_of(&old_ca);
    let old_tls = status_of(&cs).tls.expect("status.tls");
    assert_eq!(old_tls.cas, [old_id[..16].to_owned()], "{old_tls:?}");
    let first_views = poll("one cluster of 3 over TLS", Duration::from_secs(60), || {
        let (c, mounted_client) = (c.clone(), mounted_client.clone());
        async move {
            let views = tls_views(&c, &mounted_client().await?).await;
            let members: Vec<ClusterMembers> = views.values().map(|v| v.0.clone()).collect();
            check::one_cluster_of(&members, 3)?;
            Ok(members)
        }
    })
    .await;
    let original: Vec<(node_agent::base::address::NodeAddress, u64)> = first_views[0]
        .members
        .iter()
        .map(|m| (m.node.clone(), m.node_uid))
        .collect();
    let before = pods_and_restarts(&c).await;

    // Traffic throughout, over TLS: every agent asked for its members and status again
    // and again (the agents gossip and check each other's heartbeats over mutual TLS).
    // At every look: one cluster, every original member listed and Up, and — what the
    // rotation must keep — every agent trusts the CA of every other agent's
    // certificate (an open connection outlives a change of trust, so the members alone
    // would not show a pair that could not connect anew).
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let monitor = tokio::spawn({
        let (c, original, secrets, ns) = (
            c.clone(),
            original.clone(),
            secrets.clone(),
            p.namespace.clone(),
        );
        async move {
            let server_name = format!("certs.{ns}.muster");
            let (mut looks, mut short_looks, mut unreachable_seen) = (0u32, 0u32, 0u32);
            // Every CA the agents were given, and the CA of each certificate they were.
            let mut cas: BTreeMap<String, String> = BTreeMap::new();
            let mut issuer: BTreeMap<String, String> = BTreeMap::new();
            let deadline = Instant::now() + Duration::from_secs(400);
            while !*stopped.borrow() && Instant::now() < deadline {
                let Ok(mounted) = secrets.get("certs-muster-tls").await else {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), stopped.changed()).await;
                    continue;
                };
                let bundle = secret_text(&mounted, "ca.crt");
                for pem in pem_blocks(&bundle) {
                    cas.insert(fingerprint_of(&pem), pem);
                }
                let leaf = operator::ca::Leaf {
                    cert_pem: secret_text(&mounted, "tls.crt"),
                    key_pem: secret_text(&mounted, "tls.key"),
                    not_after: SystemTime::now(),
                };
                let of = cas
                    .iter()
                    .find(|(_, pem)| {
                        operator::ca::accepted_under(&leaf, &[pem.as_str()], &server_name).is_ok()
                    })
                    .map(|(id, _)| id.clone())
                    .ok_or("the mounted certificate is of no CA it was given")?;
                issuer.insert(fingerprint_of(&leaf.cert_pem), of);
                let all: String = cas.values().map(String::as_str).collect();
                let client = https_client(&all, "certs", &ns);
                let mut tls = BTreeMap::new();
                let mut views = BTreeMap::new();
                for pod in c.pods().await {
                    let Some(ip) = support::operator::pod_ip(&pod) else {
                        continue;
                    };
                    let addr = SocketAddr::new(ip, e2e::MANAGEMENT_PORT);
                    if let (Ok(m), Ok(s)) = (
                        client.members(addr).await,
                        client.bootstrap_status(addr).await,
                    ) {
                        tls.insert(pod.name_any(), s.tls.ok_or("an agent reports no TLS")?);
                        views.insert(pod.name_any(), m);
                    }
                }
                for (a, ta) in &tls {
                    for (b, tb) in &tls {
                        let ca = issuer.get(&tb.certificate).ok_or_else(|| {
                            format!("{b} serves a certificate the operator never mounted")
                        })?;
                        if !ta.trusted.contains(ca) {
                            return Err(format!(
                                "{a} does not trust CA {} of {b}'s certificate: they could not connect",
                                &ca[..12]
                            ));
                        }
                    }
                }
                if all_up(views.iter(), &original)? {
                    unreachable_seen += 1;
                }
                if views.len() < 3 {
                    short_looks += 1;
                }
                looks += 1;
                let _ = tokio::time::timeout(Duration::from_millis(200), stopped.changed()).await;
            }
            Ok::<_, String>((looks, short_looks, unreachable_seen))
        }
    });

    let asked = Instant::now();
    annotate(
        &c,
        "certs",
        operator::controller::certificates::ROTATE_ANNOTATION,
        "first",
    )
    .await;
    // The operator stops right after the first step and another one takes over: it
    // goes on from what the agents' Secret records, with the same new CA.
    let target = poll(
        "the new CA trusted beside the old one",
        Duration::from_secs(120),
        || {
            let secrets = secrets.clone();
            async move {
                let s = secrets
                    .get("certs-muster-tls")
                    .await
                    .map_err(|e| e.to_string())?;
                let bundle = operator::ca_rotation::Bundle::parse(&secret_text(&s, "ca.crt"))?;
                let target = s
                    .annotations()
                    .get(operator::controller::certificates::TARGET_ANNOTATION)
                    .cloned();
                match target {
                    Some(t) if bundle.ids().len() == 2 => Ok(t),
                    _ => Err(format!("{:?}, target {target:?}", bundle.ids())),
                }
            }
        },
    )
    .await;
    assert!(
        op.terminate(Duration::from_secs(20)).await.is_some(),
        "the operator stops on SIGTERM"
    );
    op = start("op-b", 11);
    let rotated = poll(
        "every agent trusts the new CA alone and serves its certificate",
        Duration::from_secs(300),
        || {
            let (c, secrets, mounted_client) = (c.clone(), secrets.clone(), mounted_client.clone());
            async move {
                let cs = c.api().get("certs").await.map_err(|e| e.to_string())?;
                let tls = status_of(&cs).tls.ok_or("no status.tls")?;
                if tls.cas.len() != 1 || tls.rotation.is_some() {
                    return Err(format!("status.tls {tls:?}"));
                }
                let s = secrets
                    .get("certs-muster-tls")
                    .await
                    .map_err(|e| e.to_string())?;
                let cert = fingerprint_of(&secret_text(&s, "tls.crt"));
                let client = mounted_client().await?;
                let mut agents = BTreeMap::new();
                for pod in c.pods().await {
                    let ip = support::operator::pod_ip(&pod).ok_or("no pod IP")?;
                    let addr = SocketAddr::new(ip, e2e::MANAGEMENT_PORT);
                    let status = client
                        .bootstrap_status(addr)
                        .await
                        .map_err(|e| e.to_string())?;
                    let t = status.tls.ok_or("no TLS reported")?;
                    agents.insert(pod.name_any(), (t.trusted, t.certificate));
                }
                if agents.len() != 3 || agents.values().any(|(t, c)| t.len() != 1 || *c != cert) {
                    return Err(format!("agents use {agents:?}, mounted certificate {cert}"));
                }
                Ok((tls, s, agents))
            }
        },
    )
    .await;
    let took = asked.elapsed();
    // (A monitor that found a fault has ended: its error is below.)
    let _ = stop.send(true);
    let (looks, short_looks, unreachable_seen) = monitor
        .await
        .expect("the monitor")
        .unwrap_or_else(|e| panic!("{e}; operator log:\n{}", op.log_tail()));
    println!(
        "CA rotated on 3 agents in {} ms (kubelet refresh 10-15 s); {looks} looks at every agent over TLS, all one cluster with every member Up; looks with fewer than 3 answers: {short_looks}; with an unreachable member: {unreachable_seen}",
        took.as_millis()
    );
    // The pairwise check counts only where every agent answered.
    assert!(
        looks > 0 && short_looks * 10 <= looks,
        "{short_looks} of {looks} looks without every agent's answer"
    );
    let (tls, mounted, agents) = rotated;
    // The new CA: the one the first operator made, in a Secret of its own (never
    // mounted), owned by the ClusterSpec; the agents trust it alone.
    assert_eq!(tls.cas, [target[..16].to_owned()]);
    assert_ne!(target, old_id);
    let new_secret = secrets
        .get(&format!("certs-{}-muster-ca", &target[..12]))
        .await
        .expect("the new CA's Secret");
    assert_eq!(new_secret.immutable, Some(true));
    assert_eq!(
        new_secret
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone()),
        cs.metadata.uid
    );
    let new_ca = secret_text(&new_secret, "ca.crt");
    assert_eq!(fingerprint_of(&new_ca), target);
    assert_eq!(
        secret_text(&mounted, "ca.crt"),
        new_ca,
        "the old CA dropped"
    );
    for (pod, (trusted, _)) in &agents {
        assert_eq!(trusted, std::slice::from_ref(&target), "{pod}");
    }
    // Its certificate is of the new CA, for the cluster's name.
    let leaf = operator::ca::Leaf {
        cert_pem: secret_text(&mounted, "tls.crt"),
        key_pem: secret_text(&mounted, "tls.key"),
        not_after: SystemTime::now(),
    };
    operator::ca::accepted_under(
        &leaf,
        &[new_ca.as_str()],
        &format!("certs.{}.muster", p.namespace),
    )
    .expect("a certificate of the new CA");
    assert!(
        operator::ca::accepted_under(
            &leaf,
            &[old_ca.as_str()],
            &format!("certs.{}.muster", p.namespace)
        )
        .is_err(),
        "not of the old CA"
    );
    let annotations = mounted.annotations();
    assert_eq!(
        annotations
            .get(operator::controller::certificates::HANDLED_ANNOTATION)
            .map(String::as_str),
        Some("first")
    );
    for gone in [
        operator::controller::certificates::TARGET_ANNOTATION,
        operator::controller::certificates::RETIRED_ANNOTATION,
    ] {
        assert!(!annotations.contains_key(gone), "{annotations:?}");
    }
    assert_eq!(
        pods_and_restarts(&c).await,
        before,
        "the same pods, not restarted"
    );
    let started = events_of(&p, "TlsCaRotationStarted");
    assert_eq!(
        started.matches("TlsCaRotationStarted").count(),
        1,
        "one new CA, not another after the restart: {started}"
    );
    assert_events(
        &p,
        "certs",
        &["TlsCaRotationStarted", "TlsCaRotationStep", "TlsCaRotated"],
    );
    assert!(
        events_of(&p, "TlsCaRotated").contains("certs-muster-ca"),
        "the old CA's Secret is named for deletion"
    );

    // A pod made after the rotation starts on the new CA and joins.
    c.patch_spec(json!({"replicas": 4})).await;
    c.wait_for(
        &op,
        "Running with 4 Up",
        Duration::from_secs(180),
        running(4),
    )
    .await;
    poll("one cluster of 4 over TLS", Duration::from_secs(60), || {
        let (c, mounted_client) = (c.clone(), mounted_client.clone());
        async move {
            let views = tls_views(&c, &mounted_client().await?).await;
            let members: Vec<ClusterMembers> = views.values().map(|v| v.0.clone()).collect();
            check::no_split(members.iter()).unwrap_or_else(|e| panic!("{e}"));
            if views.len() != 4 {
                return Err(format!("{} of 4 answer over TLS", views.len()));
            }
            check::one_cluster_of(&members, 4)
        }
    })
    .await;

    // The agents' Secret deleted by mistake while the pods run on their copies: the
    // operator asks the agents which CA they trust (the new one, alone) and makes it
    // anew under that CA, never under the first CA, whose Secret is still there. (The
    // request is taken away first: a value present then counts as not yet taken, and
    // would start another rotation.)
    c.api()
        .patch(
            "certs",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
                operator::controller::certificates::ROTATE_ANNOTATION: null}}})),
        )
        .await
        .expect("remove the request");
    let lost = secrets
        .get("certs-muster-tls")
        .await
        .expect("the agents' Secret");
    secrets
        .delete("certs-muster-tls", &Default::default())
        .await
        .expect("delete the agents' Secret");
    let deleted = Instant::now();
    let remade = poll(
        "the agents' Secret made anew",
        Duration::from_secs(60),
        || {
            let secrets = secrets.clone();
            let lost_uid = lost.metadata.uid.clone();
            async move {
                match secrets.get_opt("certs-muster-tls").await {
                    Ok(Some(s)) if s.metadata.uid != lost_uid => Ok(s),
                    other => Err(format!("{:?}", other.map(|s| s.map(|s| s.metadata.uid)))),
                }
            }
        },
    )
    .await;
    let remade_after = deleted.elapsed();
    assert_eq!(
        secret_text(&remade, "ca.crt"),
        new_ca,
        "the CA every agent trusts, alone"
    );
    let leaf = operator::ca::Leaf {
        cert_pem: secret_text(&remade, "tls.crt"),
        key_pem: secret_text(&remade, "tls.key"),
        not_after: SystemTime::now(),
    };
    operator::ca::accepted_under(
        &leaf,
        &[new_ca.as_str()],
        &format!("certs.{}.muster", p.namespace),
    )
    .expect("a certificate of the CA in use");
    assert!(
        events_of(&p, "TlsCertificateIssued").contains("anew"),
        "{}",
        events_of(&p, "TlsCertificateIssued")
    );
    poll(
        "every agent serves the certificate made anew, one cluster of 4",
        Duration::from_secs(90),
        || {
            let (c, mounted_client) = (c.clone(), mounted_client.clone());
            let cert = fingerprint_of(&leaf.cert_pem);
            async move {
                let client = mounted_client().await?;
                let views = tls_views(&c, &client).await;
                let members: Vec<ClusterMembers> = views.values().map(|v| v.0.clone()).collect();
                check::no_split(members.iter()).unwrap_or_else(|e| panic!("{e}"));
                check::one_cluster_of(&members, 4)?;
                for pod in c.pods().await {
                    let ip = support::operator::pod_ip(&pod).ok_or("no pod IP")?;
                    let addr = SocketAddr::new(ip, e2e::MANAGEMENT_PORT);
                    let s = client
                        .bootstrap_status(addr)
                        .await
                        .map_err(|e| e.to_string())?;
                    let t = s.tls.ok_or("no TLS reported")?;
                    if t.certificate != cert {
                        return Err(format!("{} serves {}", pod.name_any(), t.certificate));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    println!(
        "agents' Secret deleted: made anew under the agents' CA after {} ms; every agent serves it after {} ms, one cluster of 4 throughout the looks",
        remade_after.as_millis(),
        deleted.elapsed().as_millis()
    );
}

/// The PEM certificates of a bundle, each on its own.
fn pem_blocks(bundle: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle
        .split_inclusive(END)
        .filter_map(|b| b.find("-----BEGIN").map(|at| format!("{}\n", &b[at..])))
        .filter(|b| b.trim_end().ends_with(END))
        .collect()
}

/// A platform for a rotation test on loopback nets `net` and `net + 1`, whose kubelets
/// refresh Secret volumes every 10-15 s (not 60-90 s): the test is shorter; the
/// protocol waits on what the agents report either way.
async fn rotation_platform(name: &str, net: u8) -> e2e::Platform {
    let refresh = e2e::VolumeRefresh {
        sync_period: Duration::from_secs(10),
        ..e2e::VolumeRefresh::default()
    };
    platform(name, (net, net + 1), refresh).await
}

/// An operator (`identity`, at 127.0.`net`.`host`) told so: a pod whose agent is not
/// running counts as holding the files written 20 s ago.
fn rotation_operator(p: &e2e::Platform, identity: &str, net: u8, host: u8) -> Operator {
    Operator::start_with(
        p,
        identity,
        SocketAddr::from(([127, 0, net, host], 8080)),
        &["--secret-refresh-seconds", "20"],
        "info",
    )
}

/// One look during a rotation: the agents' views (by pod) are one cluster, and each
/// lists every `original` member (node and uid) Up; whether any view has an
/// unreachable member.
fn all_up<'a>(
    views: impl Iterator<Item = (&'a String, &'a ClusterMembers)> + Clone,
    original: &[(node_agent::base::address::NodeAddress, u64)],
) -> Result<bool, String> {
    check::no_split(views.clone().map(|(_, v)| v))
        .map_err(|e| format!("two clusters during the rotation: {e}"))?;
    let mut unreachable = false;
    for (pod, v) in views {
        for (node, uid) in original {
            let listed = v
                .members
                .iter()
                .find(|m| &m.node == node && m.node_uid == *uid);
            match listed {
                Some(m) if m.status == node_agent::base::member::MemberStatus::Up => {}
                other => {
                    return Err(format!(
                        "{pod} lists {node} as {:?} during the rotation",
                        other.map(|m| m.status)
                    ));
                }
            }
        }
        unreachable |= !v.unreachable.is_empty();
    }
    Ok(unreachable)
}

/// Sets annotation `key` of ClusterSpec `name` to `value`.
async fn annotate(c: &Cluster, name: &str, key: &str, value: &str) {
    c.api()
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("annotate {name} {key}={value}: {e}"));
}

/// `kubectl get events` of one reason, as printed.
fn events_of(p: &e2e::Platform, reason: &str) -> String {
    let out = p
        .kubectl()
        .args([
            "get",
            "events",
            "--field-selector",
            &format!("reason={reason}"),
        ])
        .output()
        .expect("kubectl get events");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The cluster keys (ids, the signing one first) each answering agent uses, by pod.
async fn agent_keys(c: &Cluster) -> BTreeMap<String, Vec<String>> {
    let client = ManagementClient::new(Duration::from_secs(2));
    let mut out = BTreeMap::new();
    for pod in c.pods().await {
        let Some(ip) = support::operator::pod_ip(&pod) else {
            continue;
        };
        if let Ok(s) = client
            .bootstrap_status(SocketAddr::new(ip, e2e::MANAGEMENT_PORT))
            .await
        {
            out.insert(pod.name_any(), s.cluster_keys);
        }
    }
    out
}

/// Least privilege (issue 18, finding 3), with each side's own token on the API server.
/// Cluster `a`'s agents, under their Role, read and claim their own formation record and
/// `lease-majority` Lease and read their own ConfigMap; they may not read or write
/// cluster `b`'s, nor the operator's leader Lease, nor create a Lease, nor read a
/// Secret. The operator, under the ClusterRole `manifests/operator.yaml` ships, is
/// refused by the API server a Role that grants a right it lacks, a binding to a role
/// it does not hold in full, the removal of any Role or RoleBinding, a change to a
/// RoleBinding, and the creation of a ClusterRole; and it leaves another team's Role
/// that bears a cluster's name alone. Last, why each cluster gets a Role of its own
/// rather than a fixed ClusterRole bound to it: a ClusterRole cannot name one
/// cluster's Leases, and the same rights without names let `a`'s agents rewrite `b`'s
/// formation record (and so drop the holds that keep `b` from forming twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_clusters_agents_reach_only_their_own_objects_and_the_operator_grants_only_what_it_holds()
 {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

    let (p, op) = setup("agent-rights", (113, 114)).await;
    let ns = p.namespace.clone();
    let spec = json!({"membership": {"downing": "lease-majority"}});
    for name in ["a", "b"] {
        create_cluster(&p, name, 1, spec.clone()).await;
    }
    for name in ["a", "b"] {
        Cluster::of(&p, name)
            .wait_for(&op, "Running", Duration::from_secs(90), running(1))
            .await;
    }
    let cp = p.control_plane().expect("the local platform");

    // Cluster a's agents, with their own token.
    let agent = cp
        .client_with_token(&token_of(&p.client, &ns, "a").await, &ns)
        .await
        .expect("a's token client");
    let leases: Api<Lease> = Api::namespaced(agent.clone(), &ns);
    let admin_leases: Api<Lease> = Api::namespaced(p.client.clone(), &ns);
    for own in ["a-formation", "a-muster-sbr"] {
        // Read and written back as it was (again on a conflict with a concurrent write).
        poll(
            &format!("a's agents updating {own}"),
            Duration::from_secs(10),
            || {
                let leases = leases.clone();
                async move {
                    let lease = leases.get(own).await.map_err(|e| format!("get: {e}"))?;
                    match leases.replace(own, &PostParams::default(), &lease).await {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(e)) if e.code == 409 => Err(format!("{e}")),
                        Err(e) => panic!("update {own}: {e}"),
                    }
                }
            },
        )
        .await;
    }
    Api::<ConfigMap>::namespaced(agent.clone(), &ns)
        .get("a")
        .await
        .expect("a's agents read their ConfigMap");
    for theirs in ["b-formation", "b-muster-sbr", "muster-operator"] {
        forbidden(&format!("get Lease {theirs}"), leases.get(theirs).await);
        let lease = admin_leases.get(theirs).await.expect("the Lease");
        forbidden(
            &format!("update Lease {theirs}"),
            leases.replace(theirs, &PostParams::default(), &lease).await,
        );
    }
    let mut fresh = admin_leases.get("a-formation").await.expect("a Lease");
    fresh.metadata = ObjectMeta {
        name: Some("a-new".into()),
        ..ObjectMeta::default()
    };
    forbidden(
        "create a Lease",
        leases.create(&PostParams::default(), &fresh).await,
    );
    forbidden(
        "get ConfigMap b",
        Api::<ConfigMap>::namespaced(agent.clone(), &ns)
            .get("b")
            .await,
    );
    forbidden(
        "get Secret a-cluster-key",
        Api::<Secret>::namespaced(agent.clone(), &ns)
            .get("a-cluster-key")
            .await,
    );

    // The operator's shipped rights (not the admin's the process here runs with).
    for object in operator::install::objects("unused") {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let post = PostParams::default();
        let created = match kind.as_str() {
            "Namespace" => Api::<Namespace>::all(p.client.clone())
                .create(&post, &serde_json::from_value(object).expect("Namespace"))
                .await
                .map(drop),
            "ServiceAccount" => {
                Api::<ServiceAccount>::namespaced(p.client.clone(), operator::install::NAMESPACE)
                    .create(
                        &post,
                        &serde_json::from_value(object).expect("ServiceAccount"),
                    )
                    .await
                    .map(drop)
            }
            "ClusterRole" => Api::<ClusterRole>::all(p.client.clone())
                .create(&post, &serde_json::from_value(object).expect("ClusterRole"))
                .await
                .map(drop),
            "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(p.client.clone())
                .create(&post, &serde_json::from_value(object).expect("binding"))
                .await
                .map(drop),
            _ => continue, // the Deployment: its rights are what is looked at here
        };
        created.unwrap_or_else(|e| panic!("create the operator's {kind}: {e}"));
    }
    let operator_client = cp
        .client_with_token(
            &token_of(
                &p.client,
                operator::install::NAMESPACE,
                operator::install::NAME,
            )
            .await,
            &ns,
        )
        .await
        .expect("the operator's token client");
    let roles: Api<Role> = Api::namespaced(operator_client.clone(), &ns);
    let role = |name: &str, group: &str, resource: &str, verbs: &[&str]| -> Role {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "rules": [{"apiGroups": [group], "resources": [resource], "verbs": verbs}],
        }))
        .expect("a Role")
    };
    // What it holds, it may grant (as it grants the agents theirs; polled: the API
    // server's RBAC cache takes the new ClusterRoleBinding in a moment) ...
    poll(
        "the operator creating a Role with rights it holds",
        Duration::from_secs(30),
        || {
            let roles = roles.clone();
            let held = role("held", "coordination.k8s.io", "leases", &["get", "update"]);
            async move {
                roles
                    .create(&PostParams::default(), &held)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    // ... but may remove no Role or RoleBinding, not even one it made, ...
    forbidden(
        "the operator deleting a Role",
        roles.delete("held", &DeleteParams::default()).await,
    );
    let bindings: Api<RoleBinding> = Api::namespaced(operator_client.clone(), &ns);
    forbidden(
        "the operator deleting a RoleBinding",
        bindings.delete("a", &DeleteParams::default()).await,
    );
    forbidden(
        "the operator changing a RoleBinding",
        bindings
            .patch(
                "a",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({"subjects": []})),
            )
            .await,
    );
    // ... and grant nothing more.
    for (name, group, resource, verbs) in [
        ("secrets-delete", "", "secrets", &["delete"][..]),
        ("pods-create", "", "pods", &["create"][..]),
        ("pods-exec", "", "pods/exec", &["create"][..]),
        ("everything", "*", "*", &["*"][..]),
    ] {
        forbidden(
            &format!("the operator creating Role {name}"),
            roles
                .create(&PostParams::default(), &role(name, group, resource, verbs))
                .await,
        );
    }
    for cluster_role in ["cluster-admin", "admin", "edit"] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("to-{cluster_role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": ns}],
        }))
        .expect("a RoleBinding");
        forbidden(
            &format!("the operator binding ClusterRole {cluster_role}"),
            bindings.create(&PostParams::default(), &binding).await,
        );
    }
    let cluster_role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "muster-agent-everywhere"},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}],
    }))
    .expect("a ClusterRole");
    forbidden(
        "the operator creating a ClusterRole",
        Api::<ClusterRole>::all(operator_client.clone())
            .create(&PostParams::default(), &cluster_role)
            .await,
    );

    // Another team's Role named like a new cluster is reported, not taken over.
    let admin_roles: Api<Role> = Api::namespaced(p.client.clone(), &ns);
    let theirs = admin_roles
        .create(
            &PostParams::default(),
            &role("c", "", "configmaps", &["get"]),
        )
        .await
        .expect("their Role");
    create_cluster(&p, "c", 1, json!({})).await;
    let message = conflict_reported(&Cluster::of(&p, "c"), &op).await;
    assert!(message.contains("Role c exists"), "{message}");
    let now = admin_roles.get("c").await.expect("their Role");
    assert_eq!(
        now.metadata.resource_version, theirs.metadata.resource_version,
        "their Role was written"
    );

    // The rights a fixed ClusterRole would have to give (it cannot name `a-formation`),
    // bound to a's agents in their namespace: they may now rewrite b's record.
    Api::<ClusterRole>::all(p.client.clone())
        .create(&PostParams::default(), &cluster_role_for_agents())
        .await
        .expect("the fixed ClusterRole");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "a-fixed"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "muster-agent-fixed"},
        "subjects": [{"kind": "ServiceAccount", "name": "a", "namespace": ns}],
    }))
    .expect("a RoleBinding");
    Api::<RoleBinding>::namespaced(p.client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind it");
    let rewritten = poll(
        "a's agents rewriting b's record under the fixed ClusterRole",
        Duration::from_secs(30),
        || {
            let leases = leases.clone();
            async move {
                let mut record = leases.get("b-formation").await.map_err(|e| e.to_string())?;
                record.metadata.annotations = None;
                leases
                    .replace("b-formation", &PostParams::default(), &record)
                    .await
                    .map_err(|e| e.to_string())
            }
        },
    )
    .await;
    println!(
        "under a fixed ClusterRole, cluster a's token rewrote b-formation (resourceVersion {:?})",
        rewritten.metadata.resource_version
    );
}

/// A token of ServiceAccount `account` in `ns`, as its pods get.
async fn token_of(admin: &kube::Client, ns: &str, account: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued: TokenRequest = Api::<ServiceAccount>::namespaced(admin.clone(), ns)
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("a token of {ns}/{account}: {e}"));
    issued
        .status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest status")
}

/// Refused by RBAC (403), and nothing else.
fn forbidden<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) {
    match r {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("{what} must be forbidden, got {other:?}"),
    }
}

/// What the agents use, as a ClusterRole must say it: without the names of one
/// cluster's objects.
fn cluster_role_for_agents() -> k8s_openapi::api::rbac::v1::ClusterRole {
    serde_json::from_value(json!({
        "metadata": {"name": "muster-agent-fixed"},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        ],
    }))
    .expect("a ClusterRole")
}

/// Waits for `c`'s Degraded condition with reason `ObjectConflict`; returns its message.
async fn conflict_reported(c: &Cluster, op: &Operator) -> String {
    let cs = c
        .wait_for(
            op,
            "the conflict reported",
            Duration::from_secs(60),
            |cs| match condition(cs, "Degraded") {
                Some((s, reason, _)) if s == "True" && reason == "ObjectConflict" => Ok(()),
                other => Err(format!("Degraded {other:?}")),
            },
        )
        .await;
    condition(&cs, "Degraded").expect("Degraded").2
}
