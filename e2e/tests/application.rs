//! A real application under muster, on the local platform with the operator as a
//! process: `manifests/examples/keyowner.yaml` (the Python example in
//! `examples/keyowner`, which uses nothing but its agent's HTTP API) applied with
//! kubectl forms one cluster; every pod's application sees the same Up members as the
//! agents and names the same owner for every key; the counters each application keeps
//! on its pod's persistent volume claim survive an oldest-last rollout; scaling to 5
//! makes them agree again on the new members. Also: the operator tells the application where its agent is
//! (`MUSTER_AGENT_URL`, expanded by the kubelet), the pod template override reaches
//! the pods, and a bad override or agent setting is refused by field while the running
//! pods stay as they are; while the pause annotation is set the operator writes nothing,
//! and the scale-down made meanwhile (5 → 3) is applied once it is removed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use e2e::Platform;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, ListParams};
use node_agent::base::member::MemberStatus;
use serde_json::{Value, json};

mod support;
use support::operator::{Cluster, Operator, condition, pod_ip, running, setup, status_of, writes};
use support::poll;

/// The application's port (the example's `PORT`).
const APP_PORT: u16 = 8080;
/// Keys whose owners every pod must agree on.
const KEYS: usize = 40;

async fn app_get(p: &Platform, pod: &str, path: &str) -> Result<Value, String> {
    let (code, body) = p.pod_get(pod, APP_PORT, path).await?;
    if code != 200 {
        return Err(format!("{pod} {path}: {code} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{pod} {path}: {e}: {body}"))
}

/// The owner of every key, once `n` pods' applications agree on them and each one's
/// Up members are the agents' (one cluster of `n`).
async fn owners_agree(p: &Platform, c: &Cluster, n: usize) -> Result<Vec<String>, String> {
    c.one_cluster_of(n).await?;
    let views = c.views().await;
    let agents_up: BTreeSet<String> = views
        .values()
        .next()
        .ok_or("no agent answers")?
        .members
        .iter()
        .filter(|m| m.status == MemberStatus::Up)
        .map(|m| m.node.to_string())
        .collect();
    let mut agreed: Option<Vec<String>> = None;
    for pod in views.keys() {
        let view = app_get(p, pod, "/members").await?;
        let up: BTreeSet<String> = view["up"]
            .as_array()
            .ok_or_else(|| format!("{pod}: no `up` in {view}"))?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        if up != agents_up {
            return Err(format!(
                "{pod}'s application sees Up {up:?}, its agents {agents_up:?}"
            ));
        }
        let mut owners = Vec::with_capacity(KEYS);
        for k in 0..KEYS {
            let answer = app_get(p, pod, &format!("/owner/key-{k}")).await?;
            let owner = answer["owner"].as_str().unwrap_or_default().to_owned();
            if !agents_up.contains(&owner) {
                return Err(format!(
                    "{pod}: key-{k} owned by {owner:?}, not an Up member"
                ));
            }
            owners.push(owner);
        }
        match &agreed {
            None => agreed = Some(owners),
            Some(first) if *first != owners => {
                return Err(format!("{pod} names other owners than the first pod"));
            }
            Some(_) => {}
        }
    }
    agreed.ok_or_else(|| "no pod".into())
}

/// How many keys each member owns.
fn spread(owners: &[String]) -> BTreeMap<&str, usize> {
    let mut out = BTreeMap::new();
    for o in owners {
        *out.entry(o.as_str()).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_application_agrees_on_owners_and_follows_scaling() {
    let (p, op) = setup("application", (81, 82)).await;
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/examples/keyowner.yaml"
    );
    let applied = p
        .kubectl()
        .args(["apply", "-f", example])
        .output()
        .expect("kubectl apply");
    assert!(applied.status.success(), "{applied:?}");
    let c = Cluster::of(&p, "keyowner");
    c.wait_for(
        &op,
        "Running with 3 Up",
        Duration::from_secs(120),
        running(3),
    )
    .await;

    // The pod template override is in the pods, and the application found its agent
    // where the operator said.
    let pods = c.pods().await;
    let pod = &pods[0];
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("app.kubernetes.io/part-of").map(String::as_str),
        Some("keyowner-example"),
        "{labels:?}"
    );
    let spec = pod.spec.clone().expect("a pod spec");
    let app = spec
        .containers
        .iter()
        .find(|c| c.name == "keyowner")
        .expect("the application container");
    assert!(app.readiness_probe.is_some(), "the template's probe");
    let url = app
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "MUSTER_AGENT_URL")
        .and_then(|e| e.value.clone());
    assert_eq!(url.as_deref(), Some("http://$(MUSTER_POD_IP):8558"));
    // The agents' Kubernetes token is in the agent container and nowhere else: what
    // each container sees at the token path, read through its /proc/PID/root.
    if let Some(node) = p.node() {
        let name = pod.metadata.name.clone().expect("a name");
        // Through /proc/PID/root, an absolute symlink (/var/run → /run) would resolve
        // against the test's root: resolve them inside the container's.
        let token = |pid: u32| {
            let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
            let mut at = std::path::PathBuf::from("/");
            for part in [
                "var",
                "run",
                "secrets",
                "kubernetes.io",
                "serviceaccount",
                "token",
            ] {
                let next = at.join(part);
                at = match std::fs::read_link(root.join(next.strip_prefix("/").unwrap_or(&next))) {
                    Ok(target) => at.join(target),
                    Err(_) => next,
                };
            }
            root.join(at.strip_prefix("/").unwrap_or(&at))
        };
        let pid = |container: &'static str| {
            let (node, ns, name) = (node, p.namespace.clone(), name.clone());
            async move {
                node.container_pid(&ns, &name, container)
                    .await
                    .unwrap_or_else(|| panic!("the {container} container's process"))
            }
        };
        let mounts = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("secrets"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let agent_pid = pid("agent").await;
        let agent = token(agent_pid);
        assert!(
            std::fs::read_to_string(&agent).is_ok_and(|t| t.len() > 100),
            "the agent reads no token at {}; its mounts:\n{}",
            agent.display(),
            mounts(agent_pid)
        );
        // (Compared by content: a host that is itself a pod has a token of its own
        // there, which the container's view inherits.)
        let agents_token = std::fs::read_to_string(&agent).expect("the agent's token");
        let application_pid = pid("keyowner").await;
        let application = token(application_pid);
        assert!(
            std::fs::read_to_string(&application).ok().as_ref() != Some(&agents_token),
            "the application container sees the agents' token at {}; its mounts:\n{}",
            application.display(),
            mounts(application_pid)
        );
    }
    // On any platform: no container automounts a token, the agent's alone mounts one.
    assert_eq!(spec.automount_service_account_token, Some(false));
    let mounting: Vec<&str> = spec
        .containers
        .iter()
        .filter(|c| {
            c.volume_mounts.iter().flatten().any(|m| {
                m.mount_path
                    .starts_with("/var/run/secrets/kubernetes.io/serviceaccount")
            })
        })
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(mounting, ["agent"]);
    // Each member's app version is its pod's template revision.
    let revision = labels
        .get("controller-revision-hash")
        .cloned()
        .expect("the StatefulSet's revision label");
    c.wait_for(
        &op,
        "app versions in status",
        Duration::from_secs(30),
        |cs| {
            let versions = status_of(cs).app_versions;
            (versions == BTreeMap::from([(revision.clone(), 3)]))
                .then_some(())
                .ok_or_else(|| format!("app versions {versions:?}, pods run {revision}"))
        },
    )
    .await;
    let name = pod.metadata.name.clone().expect("a name");
    let view = app_get(&p, &name, "/members")
        .await
        .expect("the application");
    assert!(view["events"].as_u64() > Some(0), "{view}");

    // The agents' liveness probe runs only once their startup probe succeeded: no pod
    // start is reported as a liveness failure.
    let events: Vec<String> = Api::<Event>::namespaced(p.client.clone(), &p.namespace)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Unhealthy"))
        .filter_map(|e| e.message)
        .collect();
    let startup = events.iter().filter(|m| m.starts_with("Startup")).count();
    println!("Unhealthy events while forming: {startup} startup probe failures");
    assert!(
        !events.iter().any(|m| m.starts_with("Liveness")),
        "{events:?}"
    );

    let owners = poll(
        "3 applications agree on owners",
        Duration::from_secs(30),
        || owners_agree(&p, &c, 3),
    )
    .await;
    let by_member = spread(&owners);
    println!("owners of {KEYS} keys over 3 members: {by_member:?}");
    assert_eq!(by_member.len(), 3, "rendezvous hashing spreads {KEYS} keys");

    // The size written another way (64Mi = 65536Ki) is no change of the claim
    // templates, and at steady state, with claim templates and a retention policy in
    // the StatefulSet, the operator writes nothing.
    c.patch_spec(json!({"volumeClaimTemplates": [{
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "65536Ki"}}},
    }]}))
    .await;
    c.wait_for(
        &op,
        "the edited spec observed",
        Duration::from_secs(30),
        |cs| {
            let seen = status_of(cs).observed_generation;
            (seen == cs.metadata.generation && seen.is_some())
                .then_some(())
                .ok_or_else(|| format!("observed generation {seen:?}"))
        },
    )
    .await;
    let (reconciled, requests, written) = c.steady_state(&op, 2).await;
    println!(
        "steady state with claims: {reconciled} reconciles, {:.1} API requests per reconcile, {written} writes",
        requests / reconciled
    );
    assert_eq!(written, 0.0, "no writes at steady state");
    let cs = c.api().get("keyowner").await.expect("the ClusterSpec");
    running(3)(&cs).expect("still Running, the claim templates unchanged");

    counters_survive_a_rollout(&p, &c).await;

    // Scale to 5: the new members join, every application learns of them from its
    // agent's events, and the owners move to the new members only.
    c.patch_spec(json!({"replicas": 5})).await;
    c.wait_for(
        &op,
        "Running with 5 Up",
        Duration::from_secs(120),
        running(5),
    )
    .await;
    let after = poll(
        "5 applications agree on owners",
        Duration::from_secs(30),
        || owners_agree(&p, &c, 5),
    )
    .await;
    let old: BTreeSet<&String> = owners.iter().collect();
    for (before, now) in owners.iter().zip(&after) {
        assert!(
            before == now || !old.contains(now),
            "a key moved between two old members ({before} → {now}): rendezvous hashing moves keys only to new members"
        );
    }
    println!("owners of {KEYS} keys over 5 members: {:?}", spread(&after));

    bad_specs_are_refused(&c, &op).await;
    pause_writes_nothing_until_removed(&p, &c, &op).await;
}

/// Bad specs are refused with the field named, and the StatefulSet is not touched: a
/// pod template that leaves the agent no time to leave, and an agent setting the agent
/// does not know (checked by the agent's own loader inside the operator).
async fn bad_specs_are_refused(c: &Cluster, op: &Operator) {
    let sets: Api<StatefulSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let before = sets.get("keyowner").await.expect("the StatefulSet");
    for (patch, field, undo) in [
        (
            json!({"podTemplate": {"spec": {"terminationGracePeriodSeconds": 5}}}),
            "spec.podTemplate.spec.terminationGracePeriodSeconds",
            json!({"podTemplate": {"spec": {"terminationGracePeriodSeconds": 30}}}),
        ),
        (
            json!({"agent": {"config": {"cluster": {"gossip-intervall": "1s"}}}}),
            "spec.agent.config.cluster",
            json!({"agent": {"config": null}}),
        ),
    ] {
        c.patch_spec(patch).await;
        let cs = c
            .wait_for(op, field, Duration::from_secs(60), |cs| {
                match condition(cs, "Degraded") {
                    Some((_, reason, message)) if reason == "InvalidSpec" => {
                        if message.contains(field) {
                            Ok(())
                        } else {
                            Err(format!("another field: {message}"))
                        }
                    }
                    other => Err(format!("Degraded is {other:?}")),
                }
            })
            .await;
        println!("refused: {:?}", condition(&cs, "Degraded").map(|d| d.2));
        assert_eq!(status_of(&cs).members.map(|m| m.up), Some(5));
        c.patch_spec(undo).await;
    }
    c.wait_for(
        op,
        "valid again",
        Duration::from_secs(60),
        |cs| match condition(cs, "Degraded") {
            Some((_, reason, _)) if reason == "InvalidSpec" => Err("still InvalidSpec".into()),
            _ => running(5)(cs),
        },
    )
    .await;
    let after = sets.get("keyowner").await.expect("the StatefulSet");
    assert_eq!(
        (before.metadata.generation, before.spec.template),
        (after.metadata.generation, after.spec.template),
        "nothing applied"
    );
}

/// The pause annotation stops every write: a spec change made while it is set (a
/// scale-down) is applied only once it is removed. Then the 3 remaining applications
/// agree on the owners again.
async fn pause_writes_nothing_until_removed(p: &Platform, c: &Cluster, op: &Operator) {
    let annotate = |value: &str| {
        let out = p
            .kubectl()
            .args(["annotate", "--overwrite", "mcs", "keyowner", value])
            .output()
            .expect("kubectl annotate");
        assert!(out.status.success(), "{out:?}");
    };
    annotate("muster.dev/reconcile-paused=true");
    c.wait_for(
        op,
        "Paused",
        Duration::from_secs(30),
        |cs| match status_of(cs).phase.as_deref() {
            Some("Paused") => Ok(()),
            other => Err(format!("phase {other:?}")),
        },
    )
    .await;
    let metrics = || async { op.metrics().await.expect("the operator's metrics") };
    let reconciles = |m: &BTreeMap<String, f64>| m.get("muster_operator_reconciles_total").copied();
    let sets: Api<StatefulSet> = Api::namespaced(c.client.clone(), &c.namespace);
    let maps: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.namespace);
    let set_before = sets.get("keyowner").await.expect("the StatefulSet");
    let map_before = maps.get("keyowner").await.expect("the ConfigMap");
    let before = metrics().await;
    c.patch_spec(json!({"replicas": 3})).await;
    // The change was seen (a reconcile ran after it) and nothing was written: not the
    // objects, not the status (which would name the new generation).
    poll(
        "a reconcile after the change",
        Duration::from_secs(30),
        || async {
            let now = metrics().await;
            (reconciles(&now) > reconciles(&before))
                .then_some(())
                .ok_or_else(|| "no reconcile yet".to_owned())
        },
    )
    .await;
    let during = metrics().await;
    let cs = c.api().get("keyowner").await.expect("the ClusterSpec");
    assert!(
        status_of(&cs).observed_generation < cs.metadata.generation,
        "no status write while paused: {:?}",
        cs.status
    );
    let set = sets.get("keyowner").await.expect("the StatefulSet");
    assert_eq!(set.spec.replicas, Some(5), "not scaled");
    assert_eq!(set.metadata.generation, set_before.metadata.generation);
    let map = maps.get("keyowner").await.expect("the ConfigMap");
    assert_eq!(
        map.metadata.resource_version, map_before.metadata.resource_version,
        "the agents' settings untouched"
    );

    annotate("muster.dev/reconcile-paused-");
    c.wait_for(
        op,
        "Running with 3 Up",
        Duration::from_secs(120),
        running(3),
    )
    .await;
    let owners = poll(
        "3 applications agree on owners after scaling down",
        Duration::from_secs(30),
        || owners_agree(p, c, 3),
    )
    .await;
    println!(
        "owners of {KEYS} keys over 3 members again: {:?}",
        spread(&owners)
    );
    println!(
        "operator API writes while paused, none to the cluster's objects or status (leader Lease renewals, Events): {}",
        writes(&during) - writes(&before)
    );
}

/// `POST /counter` on the application at `ip` (the local platform reaches pod IPs):
/// the new value.
async fn add_one(ip: std::net::IpAddr) -> Result<u64, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect((ip, APP_PORT))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"POST /counter HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .ok_or_else(|| format!("no body: {answer}"))?;
        let v: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
        v["value"]
            .as_u64()
            .ok_or_else(|| format!("no value: {body}"))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
}

/// Counts on every pod's claim (pod `keyowner-i` counts i + 1), then an oldest-last
/// rollout replaces every pod: each new pod finds its predecessor's count, and the
/// applications agree on the owners again.
async fn counters_survive_a_rollout(p: &Platform, c: &Cluster) {
    let pods = c.pods().await;
    let mut counted = BTreeMap::new();
    let mut uids = BTreeMap::new();
    for pod in &pods {
        let name = pod.metadata.name.clone().expect("a name");
        let ordinal: u64 = name
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("an ordinal");
        let ip = pod_ip(pod).expect("a pod IP");
        let mut value = 0;
        for _ in 0..=ordinal {
            value = add_one(ip).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert_eq!(value, ordinal + 1, "{name} starts from zero");
        counted.insert(name.clone(), value);
        uids.insert(name, pod.metadata.uid.clone());
    }
    let started = std::time::Instant::now();
    c.patch_spec(
        json!({"podTemplate": {"metadata": {"annotations": {"example.muster.dev/rolled": "1"}}}}),
    )
    .await;
    poll(
        "every pod replaced, 3 Up",
        Duration::from_secs(300),
        || async {
            let now = c.pods().await;
            let replaced = now
                .iter()
                .filter(|p| {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    uids.get(&name) != Some(&p.metadata.uid)
                        && p.metadata.deletion_timestamp.is_none()
                })
                .count();
            if replaced < 3 {
                return Err(format!("{replaced} of 3 pods replaced"));
            }
            let cs = c.api().get("keyowner").await.map_err(|e| e.to_string())?;
            running(3)(&cs)
        },
    )
    .await;
    println!(
        "oldest-last rollout of 3 keyowner pods: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    for (name, value) in &counted {
        let now = app_get(p, name, "/counter")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            now["value"].as_u64(),
            Some(*value),
            "{name}'s counter after its pod was replaced"
        );
        // And it is the claim's volume that holds it, not a folder of the pod's.
        assert_eq!(
            counter_on_claim(c, name).await,
            *value,
            "{name}'s counter in its claim's volume"
        );
    }
    poll(
        "3 applications agree on owners after the rollout",
        Duration::from_secs(30),
        || owners_agree(p, c, 3),
    )
    .await;
}

/// The counter in the folder of pod `pod`'s claim `data-<pod>`, which must be Bound to a
/// volume of the local platform's provisioner.
async fn counter_on_claim(c: &Cluster, pod: &str) -> u64 {
    let claim = format!("data-{pod}");
    let pvc = Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), &c.namespace)
        .get(&claim)
        .await
        .unwrap_or_else(|e| panic!("claim {claim}: {e}"));
    let status = pvc.status.unwrap_or_default();
    assert_eq!(status.phase.as_deref(), Some("Bound"), "claim {claim}");
    let volume = pvc
        .spec
        .and_then(|s| s.volume_name)
        .unwrap_or_else(|| panic!("claim {claim} names no volume"));
    let pv = Api::<PersistentVolume>::all(c.client.clone())
        .get(&volume)
        .await
        .unwrap_or_else(|e| panic!("volume {volume}: {e}"));
    let folder = pv
        .spec
        .and_then(|s| s.host_path)
        .map(|h| h.path)
        .unwrap_or_else(|| panic!("volume {volume} has no folder"));
    let file = std::path::Path::new(&folder).join("counter");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {text:?}: {e}", file.display()))
}
