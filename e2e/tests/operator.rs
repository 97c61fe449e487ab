//! `muster-operator` (the built binary, as its own process) on the local platform with
//! the real agent in every pod: a ClusterSpec forms one cluster and locks forming off; a
//! second reconcile writes nothing; an image change rolls the pods oldest-last, and an
//! operator killed mid-rollout is replaced by one that finishes it; deleting every pod,
//! scaling 3 → 5 → 2, invalid specs and a switch to DNS discovery (a rollout; the
//! Role narrowed to the formation record), and scaling to zero (a full shutdown, then a
//! new cluster on the next scale-up) behave as documented; deleting the ClusterSpec
//! asks its cluster to prepare for a full shutdown and leaves nothing behind, and a
//! graceful stop releases the leader Lease. Agents that read
//! a stale lock from a late kubelet never form a second cluster (the formation record).
//! A crashed pod's replacement is Up sooner with pod-aware downing (printed, both ways).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::Api;
use node_agent::base::member::MemberStatus;
use serde_json::json;

mod support;
use support::operator::{
    Cluster, Operator, OperatorLog, RolloutWatch, back_by_itself, condition, create_cluster,
    create_running, retagged, running, running_shop, setup, setup_with, status_of, two_clusters,
};
use support::poll;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_forms_locks_and_rolls_oldest_last() {
    let (p, op) = setup("operator-rollout", (51, 52)).await;
    let c = Cluster::of(&p, "shop");
    let started = create_cluster(&p, "shop", 3, json!({})).await;
    let cs = c
        .wait_for(&op, "the cluster formed", Duration::from_secs(120), |cs| {
            let s = status_of(cs);
            match (&s.formed_at, condition(cs, "Formed")) {
                (Some(_), Some((st, _, _))) if st == "True" => Ok(()),
                _ => Err("not formed".into()),
            }
        })
        .await;
    println!(
        "apply → Formed (3 replicas): {} ms",
        started.elapsed().as_millis()
    );
    let cs = if status_of(&cs).phase.as_deref() == Some("Running") {
        cs
    } else {
        c.wait_for(
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
    let views_now = c.views().await;
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
    let (reconciled, requests, written) = c.steady_state(&op, 2).await;
    println!(
        "steady state: {reconciled} reconciles, {requests} API requests ({:.1} per reconcile), {written} writes",
        requests / reconciled
    );
    assert_eq!(written, 0.0, "no writes at steady state");

    // The rollout: record the order pods are replaced in, the oldest member, the
    // fewest Up members and any split, while the operator works.
    let expected = c.youngest_first().await;
    println!("expected order (youngest first): {expected:?}");
    let watch = RolloutWatch::start(&c).await;
    let rollout_started = Instant::now();
    let new_image = retagged(p.agent_image(), "v2");
    c.patch_spec(json!({"agent": {"image": new_image}})).await;

    // Kill the operator once the first pod has been replaced; a second one (after the
    // first's Lease runs out) must finish the rollout.
    poll(
        "the first pod replaced",
        Duration::from_secs(120),
        || async {
            if watch.replaced() == 0 {
                Err("none yet".into())
            } else {
                Ok(())
            }
        },
    )
    .await;
    drop(op);
    println!(
        "operator A killed {} ms into the rollout",
        rollout_started.elapsed().as_millis()
    );
    let op = Operator::start(&p, "op-b", SocketAddr::from(([127, 0, 51, 11], 8080)));
    let done = c
        .wait_for(
            &op,
            "the rollout finished",
            Duration::from_secs(240),
            move |cs| {
                running(3)(cs)?;
                Ok(())
            },
        )
        .await;
    let seen = watch.stop().await;
    println!(
        "rollout of 3 (operator killed and replaced mid-way): {} ms",
        rollout_started.elapsed().as_millis()
    );
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
    for pod in c.pods().await {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_restarts_scales_and_refuses_bad_specs() {
    let (p, op) = setup("operator-scale", (53, 54)).await;
    let c = Cluster::of(&p, "shop");
    let started = create_cluster(&p, "shop", 3, json!({})).await;
    let cs = c
        .wait_for(
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
    c.delete_every_pod(&p);
    let outcome = poll(
        "the pods rejoin, or wait with a clear status",
        Duration::from_secs(120),
        || async {
            let cs = c.api().get("shop").await.map_err(|e| e.to_string())?;
            if let Some((_, reason, message)) = condition(&cs, "Degraded").filter(|c| c.0 == "True")
                && reason == "NoClusterToJoin"
            {
                return Ok(Err(message));
            }
            c.one_cluster_of(3).await?;
            running(3)(&cs)?;
            Ok(Ok(()))
        },
    )
    .await;
    let recovered = match outcome {
        Ok(()) => {
            println!("after deleting every pod: a surviving member kept the cluster");
            false
        }
        Err(message) => {
            println!("after deleting every pod: the pods wait ({message})");
            // Every member is gone: the operator forms the cluster again by itself
            // once the evidence holds (crate::a_lost_cluster… tests the refusals).
            let took = back_by_itself(&c, &message, 3, Duration::from_secs(180)).await;
            println!(
                "after deleting every pod: one cluster of 3 again by itself {} ms after the pods were seen waiting",
                took.as_millis()
            );
            true
        }
    };
    let cs = c
        .wait_for(
            &op,
            "Running with 3 Up",
            Duration::from_secs(60),
            running(3),
        )
        .await;
    let s = status_of(&cs);
    if recovered {
        assert_ne!(
            s.formed_at.as_deref(),
            Some(formed_at.as_str()),
            "formed anew"
        );
    } else {
        assert_eq!(
            s.formed_at.as_deref(),
            Some(formed_at.as_str()),
            "formed once"
        );
    }
    assert_eq!(s.new_cluster_enabled, Some(false));

    // 3 → 5: the new pods join the existing cluster; the running ones stay (a scale
    // changes no pod template, so nothing rolls).
    let uids = |pods: Vec<Pod>| -> BTreeMap<String, String> {
        pods.into_iter()
            .map(|p| {
                (
                    p.metadata.name.unwrap_or_default(),
                    p.metadata.uid.unwrap_or_default(),
                )
            })
            .collect()
    };
    let before_scale = uids(c.pods().await);
    c.scale_to(&op, 5, Duration::from_secs(120)).await;

    // 5 → 2: shop-2, shop-3 and shop-4 are asked to leave before their pods go.
    let steps = |m: &BTreeMap<String, f64>| {
        m.get("muster_operator_rollout_steps_total{step=\"leave\"}")
            .copied()
            .unwrap_or(0.0)
    };
    let left_before = steps(&op.metrics().await.expect("metrics"));
    c.patch_spec(json!({"replicas": 2})).await;
    c.wait_for(
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
            let n = c.pods().await.len();
            if n != 2 {
                return Err(format!("{n} pods"));
            }
            c.one_cluster_of(2).await
        },
    )
    .await;
    let after_scale = uids(c.pods().await);
    for pod in ["shop-0", "shop-1"] {
        assert_eq!(
            after_scale.get(pod),
            before_scale.get(pod),
            "{pod} kept running through 3 → 5 → 2 (no rollout)"
        );
    }
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
    c.patch_spec(json!({"bootstrap": {"requiredContactPoints": 7}, "agent": {"image": "other/muster-agent:v9"}})).await;
    let cs = c
        .wait_for(
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
    c.patch_spec(
        json!({"bootstrap": {"requiredContactPoints": null}, "agent": {"image": p.agent_image()}}),
    )
    .await;
    c.wait_for(&op, "healthy again", Duration::from_secs(30), |cs| {
        running(2)(cs)?;
        match condition(cs, "Degraded") {
            Some((st, _, _)) if st == "False" => Ok(()),
            other => Err(format!("Degraded {other:?}")),
        }
    })
    .await;

    // Agent settings roll out (agents read them at start), and what the agents no
    // longer need goes: with DNS discovery they no longer read pods.
    let watch = RolloutWatch::start(&c).await;
    c.patch_spec(json!({"bootstrap": {"discovery": "dns"}}))
        .await;
    c.wait_for(
        &op,
        "rolled to DNS discovery",
        Duration::from_secs(120),
        |cs| {
            running(2)(cs)?;
            Ok(())
        },
    )
    .await;
    poll("both pods replaced", Duration::from_secs(60), || async {
        match watch.replaced() {
            2 => Ok(()),
            n => Err(format!("{n} replaced")),
        }
    })
    .await;
    let seen = watch.stop().await;
    assert!(seen.split.is_none(), "{seen:?}");
    assert_eq!(seen.oldest.len(), 2, "oldest last: {seen:?}");
    // The last replacement may not have heard the last gossip round yet.
    poll(
        "one cluster of 2 after the switch",
        Duration::from_secs(30),
        || c.one_cluster_of(2),
    )
    .await;
    // What is left is the formation record, `get` and `update` on that one Lease, and
    // `get` on the cluster's own ConfigMap.
    let role = Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(p.client.clone(), &p.namespace)
        .get("shop")
        .await
        .expect("the agents' Role");
    let rules = role.rules.unwrap_or_default();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["leases".to_owned()][..])
    );
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["shop-formation".to_owned()][..])
    );
    assert_eq!(rules[0].verbs, ["get", "update"]);
    assert_eq!(
        rules[1].resources.as_deref(),
        Some(&["configmaps".to_owned()][..])
    );
    assert_eq!(
        rules[1].resource_names.as_deref(),
        Some(&["shop".to_owned()][..])
    );
    assert_eq!(rules[1].verbs, ["get"]);

    // Scaled to zero: the cluster is asked to prepare for a full shutdown (nobody is
    // told to leave one by one), every pod stops, and the status says Stopped with
    // the formation record open; scaled up again, a new cluster forms by itself.
    let formed_before = status_of(&c.api().get("shop").await.expect("the ClusterSpec")).formed_at;
    let steps = |m: &BTreeMap<String, f64>, step: &str| {
        m.get(&format!(
            "muster_operator_rollout_steps_total{{step=\"{step}\"}}"
        ))
        .copied()
        .unwrap_or(0.0)
    };
    let before = op.metrics().await.expect("metrics");
    let stopping = Instant::now();
    c.patch_spec(json!({"replicas": 0})).await;
    let cs = c
        .wait_for(&op, "Stopped", Duration::from_secs(120), |cs| {
            let s = status_of(cs);
            match (s.phase.as_deref(), s.replicas) {
                (Some("Stopped"), 0) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    println!(
        "replicas 2 → 0 → Stopped (every pod gone): {} ms",
        stopping.elapsed().as_millis()
    );
    assert!(c.pods().await.is_empty());
    let s = status_of(&cs);
    assert_eq!((s.formed_at, s.new_cluster_enabled), (None, Some(true)));
    let after = op.metrics().await.expect("metrics");
    assert!(
        steps(&after, "prepare_full_shutdown") > steps(&before, "prepare_full_shutdown"),
        "the cluster was asked to prepare for a full shutdown"
    );
    assert_eq!(
        steps(&after, "leave"),
        steps(&before, "leave"),
        "no member was told to leave"
    );
    let events = p
        .kubectl()
        .args([
            "get",
            "events",
            "--field-selector",
            "reason=FullShutdownPrepared",
        ])
        .output()
        .expect("kubectl get events");
    assert!(
        String::from_utf8_lossy(&events.stdout).contains("prepare for a full shutdown"),
        "{events:?}"
    );
    let record = Api::<Lease>::namespaced(p.client.clone(), &p.namespace)
        .get("shop-formation")
        .await
        .expect("the formation record");
    assert_eq!(
        record.spec.and_then(|s| s.holder_identity),
        None,
        "open for the next cluster"
    );
    let starting = Instant::now();
    c.patch_spec(json!({"replicas": 3})).await;
    let cs = c
        .wait_for(
            &op,
            "Running with 3 Up",
            Duration::from_secs(120),
            running(3),
        )
        .await;
    println!(
        "replicas 0 → 3 → Running (a new cluster): {} ms",
        starting.elapsed().as_millis()
    );
    assert_ne!(status_of(&cs).formed_at, formed_before, "formed anew");
    poll(
        "one cluster of 3 after the stop",
        Duration::from_secs(30),
        || c.one_cluster_of(3),
    )
    .await;

    // Deleting the ClusterSpec: its cluster is first asked to prepare for a full
    // shutdown (the finalizer), then nothing is left behind: every object it owns is
    // garbage-collected through the owner references.
    assert!(
        c.api()
            .get("shop")
            .await
            .expect("the ClusterSpec")
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"muster.dev/full-shutdown".to_owned()),
        "the operator's finalizer"
    );
    let prepared_before = steps(
        &op.metrics().await.expect("metrics"),
        "prepare_full_shutdown",
    );
    let deleting = Instant::now();
    c.api()
        .delete("shop", &Default::default())
        .await
        .expect("delete the ClusterSpec");
    poll(
        "everything owned is gone",
        Duration::from_secs(60),
        || async {
            let left = p
            .kubectl()
            .args([
                "get",
                "statefulsets,services,configmaps,secrets,serviceaccounts,roles,rolebindings,pods",
                "-l",
                "app.kubernetes.io/instance=shop",
                "-o",
                "name",
            ])
            .output()
            .map_err(|e| e.to_string())?;
            let mut names = String::from_utf8_lossy(&left.stdout).into_owned();
            // The cluster-key Secret has the same labels.
            let key = p
                .kubectl()
                .args([
                    "get",
                    "secret",
                    "shop-cluster-key",
                    "-o",
                    "name",
                    "--ignore-not-found",
                ])
                .output()
                .map_err(|e| e.to_string())?;
            names.push_str(&String::from_utf8_lossy(&key.stdout));
            if names.trim().is_empty() {
                Ok(())
            } else {
                Err(names)
            }
        },
    )
    .await;
    println!(
        "ClusterSpec deleted -> everything gone: {} ms",
        deleting.elapsed().as_millis()
    );
    assert!(
        steps(
            &op.metrics().await.expect("metrics"),
            "prepare_full_shutdown"
        ) > prepared_before,
        "the cluster was asked to prepare for a full shutdown"
    );
    // (Its Event joins the scale to zero's, of the same reason, as one series.)

    // A graceful stop releases the leader Lease at once.
    let mut op = op;
    let status = op.terminate(Duration::from_secs(10)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", op.log_tail());
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        p.client.clone(),
        &p.namespace,
    )
    .get("muster-operator")
    .await
    .expect("the leader Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "released on SIGTERM"
    );
}

/// A kubelet shows a running pod a ConfigMap change only at the pod's next sync (up to
/// 90 s later with the defaults), so an agent whose container restarts soon after the
/// cluster formed reads `new-cluster-enabled: true` although the operator turned it off.
/// Here pod syncs are five minutes apart (a `--sync-frequency` of 5m; at 1m the window
/// is shorter, not gone), and every agent is killed right after formation: the
/// restarted agents read `true`, find no member, and the lowest would form a second
/// cluster (it did before the formation record). It must refuse, and keep refusing;
/// the documented way out (`newClusterEnabled: "true"`, then `auto`) still brings the
/// cluster back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_reads_a_stale_lock_never_forms_a_second_cluster() {
    let refresh = e2e::VolumeRefresh {
        sync_period: Duration::from_secs(300),
        ..e2e::VolumeRefresh::default()
    };
    let (p, op) = setup_with("operator-stale-lock", (71, 72), refresh).await;
    let c = Cluster::of(&p, "shop");
    create_cluster(&p, "shop", 3, json!({})).await;
    let cs = c
        .wait_for(
            &op,
            "Running with 3 Up",
            Duration::from_secs(120),
            running(3),
        )
        .await;
    assert_eq!(status_of(&cs).new_cluster_enabled, Some(false));
    let cm = Api::<ConfigMap>::namespaced(p.client.clone(), &p.namespace)
        .get("shop")
        .await
        .expect("the ConfigMap");
    assert_eq!(cm.data.expect("data")["new-cluster-enabled"], "false");
    let leases: Api<Lease> = Api::namespaced(p.client.clone(), &p.namespace);
    let holder = leases
        .get("shop-formation")
        .await
        .expect("the formation record")
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.starts_with("muster://"),
        "held by the agent that formed: {holder:?}"
    );
    println!("formation record held by {holder}");
    // This is about what the agents and the record do on their own: a running
    // operator would, once every member has been gone for 10 s, open forming again
    // itself (a_lost_cluster_comes_back_by_itself…). It stops gracefully (releasing its
    // Lease) and a new one starts for the way out below.
    let mut op = op;
    op.terminate(Duration::from_secs(30)).await;

    // Every agent killed at once: the kubelet restarts the containers in the same pods,
    // whose mounted lock still says true.
    let node = p.node().expect("the local platform");
    let killed = c.agent_pids(&p).await;
    Cluster::kill_agents(&killed);
    // Every restarted agent, not a member; `Ok` once the lowest has been refused.
    let check = || async {
        let mut refusal = None;
        for (name, old) in &killed {
            let pid = match node.container_pid(&p.namespace, name, "agent").await {
                Some(pid) if pid != *old => pid,
                _ => return Err(format!("{name}: not restarted yet")),
            };
            let lock = format!("/proc/{pid}/root/etc/muster/config/new-cluster-enabled");
            let Ok(seen) = std::fs::read_to_string(&lock) else {
                return Err(format!("{name}: no lock file yet"));
            };
            assert_eq!(
                seen.trim(),
                "true",
                "{name} must read the stale lock for this test to mean anything"
            );
            let (_, body) = p.pod_get(name, 8558, "/bootstrap/status").await?;
            assert!(
                body.contains("\"selfStatus\":null"),
                "{name} is a member: a second cluster formed\n{body}"
            );
            if body.contains("is held by") {
                refusal = Some(format!("{name}: {body}"));
            }
        }
        refusal.ok_or_else(|| "no agent has tried to form yet".to_owned())
    };
    let refused = poll(
        "the lowest restarted agent refuses to form",
        Duration::from_secs(60),
        check,
    )
    .await;
    println!("refused: {refused}");
    // And keeps refusing: through a re-check of the record (10 s), a stable margin
    // (5 s) and more, every agent is asked twice a second and none may be a member.
    let until = Instant::now() + Duration::from_secs(20);
    let mut pace = tokio::time::interval(Duration::from_millis(500));
    while Instant::now() < until {
        pace.tick().await;
        if let Err(e) = check().await {
            panic!("while refusing: {e}");
        }
    }

    // The way out after losing the whole cluster by hand: allow forming, then auto
    // again (the operator would also do it by itself now).
    let op = Operator::start(&p, "op-b", SocketAddr::from(([127, 0, 71, 11], 8080)));
    c.patch_spec(json!({"bootstrap": {"newClusterEnabled": "true"}}))
        .await;
    let reformed = Instant::now();
    poll("one cluster again", Duration::from_secs(120), || {
        c.one_cluster_of(3)
    })
    .await;
    println!(
        "newClusterEnabled true → one cluster of 3 again: {} ms",
        reformed.elapsed().as_millis()
    );
    c.patch_spec(json!({"bootstrap": {"newClusterEnabled": "auto"}}))
        .await;
    c.wait_for(
        &op,
        "Running with 3 Up, forming off",
        Duration::from_secs(60),
        |cs| {
            running(3)(cs)?;
            match status_of(cs).new_cluster_enabled {
                Some(false) => Ok(()),
                other => Err(format!("newClusterEnabled {other:?}")),
            }
        },
    )
    .await;
    poll("the record held again", Duration::from_secs(30), || async {
        let spec = leases
            .get("shop-formation")
            .await
            .map_err(|e| e.to_string())?
            .spec;
        match spec.and_then(|s| s.holder_identity) {
            Some(h) if !h.is_empty() => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await;
}

/// Pod-aware downing, as a benchmark printed in the same run: a member's process
/// freezes (a crashed node) and its pod is force-deleted, so the StatefulSet makes a
/// replacement with a new IP, which becomes an Up member only once the old member is
/// downed. With `podAwareDowning` the operator tells the leader that the old pod is
/// gone and the resolver need not wait `stableAfter` (20 s); without, it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_pods_replacement_is_up_sooner_with_pod_aware_downing() {
    let (p, op, c) = running_shop("pod-aware", (103, 104), 3, json!({})).await;
    let node = p.node().expect("the local platform");
    let pods: Api<Pod> = Api::namespaced(p.client.clone(), &p.namespace);
    let hints = |m: &BTreeMap<String, f64>| {
        m.get("muster_operator_rollout_steps_total{step=\"pod_gone\"}")
            .copied()
            .unwrap_or(0.0)
    };
    let mut times = Vec::new();
    let mut told = Vec::new();
    for (pod, pod_aware) in [("shop-2", true), ("shop-1", false)] {
        if !pod_aware {
            c.patch_spec(json!({"membership": {"podAwareDowning": false}}))
                .await;
            c.wait_for(&op, "the change seen", Duration::from_secs(30), running(3))
                .await;
        }
        let hints_before = hints(&op.metrics().await.expect("metrics"));
        let old = pods.get(pod).await.expect("the pod");
        let old_ip = old.status.and_then(|s| s.pod_ip).expect("an IP");
        let pid = node
            .container_pid(&p.namespace, pod, "agent")
            .await
            .expect("the agent's process");
        // Frozen, it neither leaves nor answers: a crash, as the others see it.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("stop the agent");
        let crashed = Instant::now();
        pods.delete(
            pod,
            &kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("force-delete the pod");
        poll(
            "the replacement an Up member of one cluster of 3",
            Duration::from_secs(120),
            || async {
                let new = pods.get(pod).await.map_err(|e| e.to_string())?;
                let ip = new.status.and_then(|s| s.pod_ip).ok_or("no IP yet")?;
                if ip == old_ip {
                    return Err("the old pod".into());
                }
                c.one_cluster_of(3).await?;
                let views = c.views().await;
                let up = views.values().all(|v| {
                    v.members
                        .iter()
                        .any(|m| m.node.ip.to_string() == ip && m.status == MemberStatus::Up)
                });
                if up {
                    Ok(())
                } else {
                    Err(format!("{views:?}"))
                }
            },
        )
        .await;
        let took = crashed.elapsed();
        println!(
            "crash of {pod} -> replacement Up, pod-aware downing {}: {} ms",
            if pod_aware { "on" } else { "off" },
            took.as_millis()
        );
        times.push(took);
        told.push(hints(&op.metrics().await.expect("metrics")) - hints_before);
    }
    assert!(
        told[0] >= 1.0,
        "with it, the operator told the leader: {told:?}"
    );
    assert_eq!(told[1], 0.0, "without it, nobody was told: {told:?}");
    println!(
        "pod-aware downing: {:.1}x sooner (stableAfter 20s)",
        times[1].as_secs_f64() / times[0].as_secs_f64()
    );
}

/// The handover gate (issue 19 A4): the application in a pod holds its agent's gate
/// (here the test does, from loopback, as the local platform's applications do). A
/// scale-down asks that member to leave and then waits — the StatefulSet keeps the pod
/// — until the hold is released; a rollout waits for it as well, and replaces the pod
/// anyway once the agents' `handoverTimeout` (25 s here) has run out with the hold
/// never released. Both waits show in the Progressing condition; times printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_handover_gate_holds_a_scale_down_and_a_rollout() {
    let (p, op, c) = running_shop(
        "handover",
        (105, 106),
        3,
        json!({"membership": {"handoverTimeout": "25s"}}),
    )
    .await;
    let client = node_agent::api::ManagementClient::new(Duration::from_secs(2));
    let agent_of = |pod: &Pod| {
        SocketAddr::new(
            support::operator::pod_ip(pod).expect("an IP"),
            e2e::MANAGEMENT_PORT,
        )
    };
    let pods: Api<Pod> = Api::namespaced(p.client.clone(), &p.namespace);
    let sets: Api<StatefulSet> = Api::namespaced(p.client.clone(), &p.namespace);
    let waiting_on = |pod: String| {
        move |cs: &operator::ClusterSpec| match condition(cs, "Progressing") {
            Some((_, _, m))
                if m.contains(&format!("in pod {pod} is handing over (holds: singleton)")) =>
            {
                Ok(())
            }
            other => Err(format!("Progressing {other:?}")),
        }
    };

    // Scale 3 → 2 with the application in shop-2 holding: held until released.
    let shop2 = pods.get("shop-2").await.expect("shop-2");
    client
        .handover_hold(agent_of(&shop2), "singleton", true, None)
        .await
        .expect("hold shop-2's gate");
    let asked = Instant::now();
    c.patch_spec(json!({"replicas": 2})).await;
    c.wait_for(
        &op,
        "the scale-down waiting for shop-2's handover",
        Duration::from_secs(20),
        waiting_on("shop-2".into()),
    )
    .await;
    let seen = asked.elapsed();
    let set = sets.get("shop").await.expect("the StatefulSet");
    assert_eq!(
        set.spec.replicas,
        Some(3),
        "held: the StatefulSet keeps shop-2"
    );
    let gate = client
        .handover(agent_of(&shop2))
        .await
        .expect("the gate, from the agent that left and waits");
    assert!(gate.stopping && !gate.ready_to_stop, "{gate:?}");
    let released = Instant::now();
    client
        .handover_hold(agent_of(&shop2), "singleton", false, None)
        .await
        .expect("release");
    poll(
        "the StatefulSet shrunk to 2",
        Duration::from_secs(30),
        || async {
            let set = sets.get("shop").await.map_err(|e| e.to_string())?;
            match set.spec.replicas {
                Some(2) => Ok(()),
                other => Err(format!("replicas {other:?}")),
            }
        },
    )
    .await;
    println!(
        "scale-down 3 -> 2: handover wait in status after {} ms; released -> StatefulSet shrunk in {} ms",
        seen.as_millis(),
        released.elapsed().as_millis()
    );
    c.wait_for(
        &op,
        "Running with 2 Up",
        Duration::from_secs(60),
        running(2),
    )
    .await;

    // A rollout with the youngest member's application holding and never releasing.
    let views = c.views().await;
    let youngest_ip = views
        .values()
        .flat_map(|v| v.members.iter())
        .max_by_key(|m| m.up_number)
        .map(|m| m.node.ip)
        .expect("members");
    let youngest = c
        .pods()
        .await
        .into_iter()
        .find(|p| support::operator::pod_ip(p) == Some(youngest_ip))
        .expect("the youngest member's pod");
    let name = youngest.metadata.name.clone().expect("a name");
    let uid = youngest.metadata.uid.clone();
    client
        .handover_hold(agent_of(&youngest), "singleton", true, None)
        .await
        .expect("hold the youngest's gate");
    let rolled = Instant::now();
    c.patch_spec(json!({"podTemplate": {"metadata": {"annotations": {"example.com/roll": "1"}}}}))
        .await;
    c.wait_for(
        &op,
        "the rollout waiting for the youngest's handover",
        Duration::from_secs(30),
        waiting_on(name.clone()),
    )
    .await;
    let seen = rolled.elapsed();
    // While the pod exists, its agent says how long it has been stopping with the
    // gate held: the longest seen shows the pod was kept that long.
    let held_longest = std::sync::atomic::AtomicU64::new(0);
    let held_agent = agent_of(&youngest);
    poll(
        "the held pod replaced once the handover timeout ran out",
        Duration::from_secs(90),
        || async {
            if let Ok(g) = client.handover(held_agent).await
                && !g.holds.is_empty()
            {
                held_longest.fetch_max(
                    g.stopping_for_millis.unwrap_or(0),
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            match pods.get_opt(&name).await.map_err(|e| e.to_string())? {
                Some(p) if p.metadata.uid == uid => Err("the held pod still exists".into()),
                _ => Ok(()),
            }
        },
    )
    .await;
    let held_longest = held_longest.into_inner();
    println!(
        "rollout: handover wait in status after {} ms; the held pod replaced {} ms after the change, kept while its gate was held for at least {held_longest} ms (handoverTimeout 25 s, never released)",
        seen.as_millis(),
        rolled.elapsed().as_millis()
    );
    assert!(
        held_longest >= 15_000,
        "the pod was kept while its application held the gate: {held_longest} ms"
    );
    c.wait_for(&op, "the rollout done", Duration::from_secs(120), |cs| {
        running(2)(cs)?;
        match status_of(cs).rollout {
            None => Ok(()),
            Some(r) => Err(format!("rolling: {r:?}")),
        }
    })
    .await;
    poll("one cluster of 2", Duration::from_secs(60), || {
        c.one_cluster_of(2)
    })
    .await;
    // The Event is recorded only when the operator looks in the moment between the
    // timeout and the agent's exit: printed, not required.
    let events = p
        .kubectl()
        .args([
            "get",
            "events",
            "--field-selector",
            "reason=HandoverTimedOut",
        ])
        .output()
        .expect("kubectl get events");
    println!(
        "HandoverTimedOut Event recorded: {}",
        String::from_utf8_lossy(&events.stdout).contains("HandoverTimedOut")
    );
}

/// Sets the Ready condition of node `name` (the local node renews no heartbeat and no
/// node lifecycle controller runs, so it stays as set): `Unknown` is what Kubernetes
/// shows for a node whose kubelet is cut off.
async fn set_node_ready(p: &e2e::Platform, name: &str, status: &str) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(p.client.clone());
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let reason = if status == "True" {
        "KubeletReady"
    } else {
        "NodeStatusUnknown"
    };
    nodes
        .patch_status(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"conditions": [{
                "type": "Ready", "status": status, "reason": reason,
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }]}})),
        )
        .await
        .expect("patch the node's status");
}

/// Pods on an unready node (issue 19 A3, akka-management #570): under
/// `newClusterEnabled: true`, a node whose kubelet is cut off (Ready `Unknown`) makes its
/// pods stranded — they may still run behind the partition. The operator shows
/// condition StrandedPods and refuses forming whatever the spec says: when every pod is
/// then replaced, the new ones do not form a second cluster. Once the node is Ready
/// again the refusal lifts and they form. Times printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_on_an_unready_node_hold_forming_off_whatever_the_spec_says() {
    let (p, op, c) = running_shop(
        "stranded",
        (107, 108),
        3,
        json!({"bootstrap": {"newClusterEnabled": "true"}}),
    )
    .await;
    let node = p.node().expect("the local platform").name.clone();
    let cut = Instant::now();
    set_node_ready(&p, &node, "Unknown").await;
    let stranded = |cs: &operator::ClusterSpec| match condition(cs, "StrandedPods") {
        Some((s, _, m))
            if s == "True"
                && ["shop-0", "shop-1", "shop-2"]
                    .iter()
                    .all(|n| m.contains(&format!("pod {n} is on node {node}"))) =>
        {
            Ok(())
        }
        other => Err(format!("StrandedPods {other:?}")),
    };
    let cs = c
        .wait_for(&op, "StrandedPods", Duration::from_secs(60), stranded)
        .await;
    println!(
        "node Ready=Unknown -> condition StrandedPods: {} ms",
        cut.elapsed().as_millis()
    );
    assert_eq!(
        status_of(&cs).new_cluster_enabled,
        Some(false),
        "forming refused although the spec says true"
    );
    let leases: Api<Lease> = Api::namespaced(p.client.clone(), &p.namespace);
    let holder = leases
        .get("shop-formation")
        .await
        .expect("the formation record")
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(holder.contains("may still run unseen"), "{holder}");

    // Every pod replaced: the old cluster is gone here, but would be alive behind a
    // real partition. The new pods (on the same unready node) must not form.
    let old: Vec<Option<String>> = c
        .pods()
        .await
        .iter()
        .map(|p| p.metadata.uid.clone())
        .collect();
    c.delete_every_pod(&p);
    poll(
        "the new pods refusing to form",
        Duration::from_secs(120),
        || async {
            let pods = c.pods().await;
            if pods.len() != 3 || pods.iter().any(|p| old.contains(&p.metadata.uid)) {
                return Err(format!("{} pods, old ones among them", pods.len()));
            }
            let mut refusals = 0;
            for pod in &pods {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let (_, body) = p.pod_get(&name, 8558, "/bootstrap/status").await?;
                if body.contains("would form a new cluster, but") {
                    refusals += 1;
                }
            }
            let views = c.views().await;
            if let Some((pod, m)) = views.iter().find(|(_, m)| !m.members.is_empty()) {
                panic!("{pod} is a member of a new cluster while pods may still run unseen: {m:?}");
            }
            // The old pods, gone from the API server while their node is not Ready, are
            // remembered: they may run on there.
            let cs = c.api().get("shop").await.map_err(|e| e.to_string())?;
            let remembered = status_of(&cs)
                .stranded_pods
                .iter()
                .filter(|s| {
                    old.contains(&Some(s.uid.clone()))
                        && s.why.starts_with("gone from the API server")
                })
                .count();
            if views.len() == 3 && refusals >= 1 && remembered == 3 {
                Ok(())
            } else {
                Err(format!(
                    "{} agents answer, {refusals} refusals, {remembered} old pods remembered",
                    views.len()
                ))
            }
        },
    )
    .await;

    let healed = Instant::now();
    set_node_ready(&p, &node, "True").await;
    c.wait_for(
        &op,
        "a cluster formed once the node is Ready",
        Duration::from_secs(120),
        |cs| {
            running(3)(cs)?;
            match condition(cs, "StrandedPods") {
                Some((s, _, _)) if s == "False" => Ok(()),
                other => Err(format!("StrandedPods {other:?}")),
            }
        },
    )
    .await;
    poll("one cluster of 3", Duration::from_secs(60), || {
        c.one_cluster_of(3)
    })
    .await;
    println!(
        "node Ready again -> one cluster of 3 Running: {} ms",
        healed.elapsed().as_millis()
    );
    support::operator::assert_events(&p, "shop", &["PodsStranded"]);
}

/// A cluster lost as a whole comes back by itself, and not while a member may live
/// (issue 19 A1). The operator connects to agents from its own address here, so that
/// a cut can take it off some pods as a node partition would.
///
/// 1. `keep-oldest` (not down-if-alone): the oldest member is cut off from the other
///    pods and from the operator. The others down themselves and restart as idle
///    agents; the oldest lives on behind the cut. The operator must not form anew and
///    says why (condition Degraded); once the cut heals the others join the oldest.
/// 2. `down-all`, a second cluster: a cut makes both sides down every member; the agents
///    restart idle. The operator finds every member gone and opens forming: one cluster
///    again with no human step (time printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_cluster_comes_back_by_itself_but_not_while_a_member_may_live() {
    use e2e::partition::Partition;
    let nets = (109, 110);
    let p = support::operator::platform("recovery", nets, e2e::VolumeRefresh::default()).await;
    let operator_ip = std::net::IpAddr::from([127, 0, nets.0, 10]);
    let source = operator_ip.to_string();
    let op = Operator::start_with(
        &p,
        "op-a",
        SocketAddr::new(operator_ip, 8080),
        &["--test-agents-source-ip", &source],
        "info",
    );
    let c = support::operator::create_running(
        &p,
        &op,
        "shop",
        3,
        json!({"membership": {"downing": "keep-oldest", "downIfAlone": false, "stableAfter": "3s"}}),
    )
    .await;
    let pod_ips = |pods: &[Pod]| -> Vec<(String, std::net::IpAddr)> {
        pods.iter()
            .filter_map(|p| Some((p.metadata.name.clone()?, support::operator::pod_ip(p)?)))
            .collect()
    };
    let views = c.views().await;
    let oldest = views
        .values()
        .find_map(|v| v.oldest.clone())
        .expect("an oldest member");
    let all = pod_ips(&c.pods().await);
    let (oldest_pod, _) = all
        .iter()
        .find(|(_, ip)| *ip == oldest.ip)
        .cloned()
        .expect("the oldest's pod");
    let others: Vec<std::net::IpAddr> = all
        .iter()
        .filter(|(_, ip)| *ip != oldest.ip)
        .map(|(_, ip)| *ip)
        .collect();
    let oldest_uid = views
        .values()
        .flat_map(|v| v.members.iter())
        .find(|m| m.node == oldest)
        .map(|m| m.node_uid)
        .expect("the oldest's uid");

    // 1. The oldest lives on behind a cut.
    let mut cut_off = others.clone();
    cut_off.push(operator_ip);
    let cut = Partition::cut(&[oldest.ip], &cut_off);
    let refused = c
        .wait_for(
            &op,
            "the operator refusing to form anew, saying why",
            Duration::from_secs(90),
            |cs| match condition(cs, "Degraded") {
                Some((_, r, m))
                    if r == "NoClusterToJoin"
                        && m.contains(&format!(
                            "not yet: pod {oldest_pod}'s agent does not answer"
                        )) =>
                {
                    Ok(())
                }
                other => Err(format!("Degraded {other:?}")),
            },
        )
        .await;
    println!(
        "oldest cut off, the others downed: the operator says {:?}",
        condition(&refused, "Degraded").map(|c| c.2)
    );
    // Longer than the evidence would need to be confirmed: still nobody forms.
    let refusing_since = Instant::now();
    poll(
        "the others staying idle while the oldest may live",
        Duration::from_secs(60),
        || async {
            let views = c.views().await;
            if let Some((pod, m)) = views
                .iter()
                .find(|(pod, m)| **pod != oldest_pod && !m.members.is_empty())
            {
                panic!(
                    "{pod} formed or joined a cluster while the oldest lives behind the cut: {m:?}"
                );
            }
            let cs = c.api().get("shop").await.map_err(|e| e.to_string())?;
            assert_eq!(
                status_of(&cs).new_cluster_enabled,
                Some(false),
                "forming stays off"
            );
            // The record is what the agents read at once: it stays held.
            let holder = Api::<Lease>::namespaced(p.client.clone(), &p.namespace)
                .get("shop-formation")
                .await
                .map_err(|e| e.to_string())?
                .spec
                .and_then(|s| s.holder_identity)
                .unwrap_or_default();
            assert!(!holder.is_empty(), "the formation record stays held");
            if refusing_since.elapsed() > crate::RECOVERY_CONFIRM + Duration::from_secs(8) {
                Ok(())
            } else {
                Err("still watching".into())
            }
        },
    )
    .await;
    let healed = Instant::now();
    drop(cut);
    poll(
        "the others joined the oldest",
        Duration::from_secs(120),
        || c.one_cluster_of(3),
    )
    .await;
    let views = c.views().await;
    assert!(
        views
            .values()
            .flat_map(|v| v.members.iter())
            .any(|m| m.node == oldest && m.node_uid == oldest_uid),
        "the oldest's incarnation is still the member: {views:?}"
    );
    println!(
        "cut healed -> the others joined the oldest: {} ms",
        healed.elapsed().as_millis()
    );

    // 2. down-all, in a second cluster: every member downed; it comes back by itself.
    let c = support::operator::create_running(
        &p,
        &op,
        "cart",
        3,
        json!({"membership": {"downing": "down-all", "stableAfter": "3s"}}),
    )
    .await;
    // The members' own addresses, as they answer.
    let mut ips: Vec<std::net::IpAddr> = c.views().await.values().map(|v| v.self_node.ip).collect();
    ips.sort();
    let rest = ips.split_off(1);
    let cut = Partition::cut(&ips, &rest);
    let started = Instant::now();
    poll(
        "every member downed (the agents restarted idle)",
        Duration::from_secs(120),
        || async {
            let views = c.views().await;
            if views.len() == 3 && views.values().all(|v| v.members.is_empty()) {
                Ok(())
            } else {
                Err(format!("{views:?}"))
            }
        },
    )
    .await;
    let gone = started.elapsed();
    drop(cut);
    let healed = Instant::now();
    c.wait_for(
        &op,
        "one cluster again, with no human step",
        Duration::from_secs(240),
        running(3),
    )
    .await;
    poll("one cluster of 3", Duration::from_secs(60), || {
        c.one_cluster_of(3)
    })
    .await;
    println!(
        "down-all: every member gone {} ms after the cut; cut healed -> one cluster of 3 Running in {} ms",
        gone.as_millis(),
        healed.elapsed().as_millis()
    );
    support::operator::assert_events(&p, "cart", &["ClusterLost"]);
}

/// [`operator::recovery::CONFIRM`], for the test's own bound.
const RECOVERY_CONFIRM: Duration = operator::recovery::CONFIRM;

/// Every agent killed at once, on a local kubelet that refreshes mounted ConfigMaps
/// only five minutes after a pod starts (a real one: one to one and a half minutes): the
/// restarted agents, in the same pods (started after the cluster formed), read the key
/// off in their files until then.
/// Once the operator finds the cluster lost, it opens the formation record and turns
/// the key on; the lowest agent reads the key from the API server when it claims the
/// record (the record names the ConfigMap), so one cluster of 3 is back long before
/// any kubelet could show the key. Before, the agents waited for the kubelet (64–72 s
/// after every pod was deleted, at the default refresh; here it would be more than
/// five minutes, beyond the deadline). Time printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_agents_all_died_comes_back_before_a_kubelet_shows_the_key() {
    let refresh = e2e::VolumeRefresh {
        sync_period: Duration::from_secs(300),
        ..e2e::VolumeRefresh::default()
    };
    let (p, op) = setup_with("operator-key-from-api", (111, 112), refresh).await;
    let c = create_running(&p, &op, "shop", 3, json!({})).await;
    // Every pod replaced once forming is locked, so that every file says so (the
    // first pods started while the key was on, and their files say that still).
    let new_image = retagged(p.agent_image(), "v2");
    c.patch_spec(json!({"agent": {"image": new_image}})).await;
    // (Running alone may be seen before the StatefulSet has the new revision.)
    poll("every pod replaced", Duration::from_secs(180), || async {
        let pods = c.pods().await;
        let old: Vec<String> = pods
            .iter()
            .filter(|pod| {
                let containers = pod.spec.as_ref().map(|s| s.containers.as_slice());
                !containers
                    .unwrap_or_default()
                    .iter()
                    .any(|k| k.image.as_deref() == Some(new_image.as_str()))
            })
            .filter_map(|pod| pod.metadata.name.clone())
            .collect();
        match (pods.len(), old.is_empty()) {
            (3, true) => Ok(()),
            (n, _) => Err(format!("{n} pods, on the old image: {old:?}")),
        }
    })
    .await;
    c.wait_for(
        &op,
        "Running with 3 Up on the new template",
        Duration::from_secs(120),
        running(3),
    )
    .await;
    let key_file = |pid: u32| format!("/proc/{pid}/root/etc/muster/config/new-cluster-enabled");
    // Every agent killed at once (no leave): the kubelet restarts the containers.
    let node = p.node().expect("the local platform");
    let killed = c.agent_pids(&p).await;
    for (name, pid) in &killed {
        let seen = std::fs::read_to_string(key_file(*pid)).expect("the mounted key");
        assert_eq!(
            seen.trim(),
            "false",
            "{name} must see forming off in its file for this test to mean anything"
        );
    }
    Cluster::kill_agents(&killed);
    let died = Instant::now();
    // Every member gone: the restarted agents wait, and the operator says it brings
    // the cluster back by itself.
    let message = poll(
        "the restarted agents wait for the operator",
        Duration::from_secs(120),
        || async {
            let cs = c.api().get("shop").await.map_err(|e| e.to_string())?;
            match condition(&cs, "Degraded") {
                Some((status, reason, message))
                    if status == "True" && reason == "NoClusterToJoin" =>
                {
                    Ok(message)
                }
                other => Err(format!("Degraded: {other:?}")),
            }
        },
    )
    .await;
    // Far within the first refresh of the pods' volumes (five minutes or more after
    // each pod's start, which was before the kill).
    let took = back_by_itself(&c, &message, 3, Duration::from_secs(200)).await;
    println!(
        "every agent killed → one cluster of 3 again: {} ms after the agents were seen waiting ({} ms after the kill)",
        took.as_millis(),
        died.elapsed().as_millis()
    );
    // The restarted agents formed it, their files still showing the key as it was
    // when they were killed.
    for (name, old) in &killed {
        let pid = node
            .container_pid(&p.namespace, name, "agent")
            .await
            .expect("the agent's process");
        assert_ne!(pid, *old, "{name}: the agent was restarted");
        let seen = std::fs::read_to_string(key_file(pid)).expect("the mounted key");
        assert_eq!(seen.trim(), "false", "{name}");
    }
    c.wait_for(
        &op,
        "Running with 3 Up",
        Duration::from_secs(60),
        running(3),
    )
    .await;
}
