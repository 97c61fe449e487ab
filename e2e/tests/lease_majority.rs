//! lease-majority on a real API server: five muster-agent pods whose service account
//! may only get and update the one Lease, made beforehand (the RBAC the operator's
//! per-cluster Role grants: no `create`, no other Lease), cut 3 | 2 by
//! iptables rules between their pod IPs. The majority's leader acquires the
//! `coordination.k8s.io/v1` Lease at once and keeps its side; the minority's leader
//! tries after `acquire-lease-delay-for-minority`, is refused, and its side downs itself
//! (the containers exit 3 and are restarted). After healing, the restarted pods join
//! the surviving cluster.
//!
//! Local platform only (it cuts traffic between the local node's pod addresses).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use e2e::partition::Partition;
use e2e::{Platform, Target};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use node_agent::api::check;
use node_agent::base::member::MemberStatus;
use serde_json::json;

mod support;
use support::{agents, create_headless_service, create_service_account, local, poll};

fn ip_of(pod: &Pod) -> IpAddr {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .expect("pod IP")
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

/// The Lease `demo-muster-sbr`, unheld, and a Role granting `get` and `update` on it
/// alone to the agents' service account (as the operator does).
async fn grant_the_lease_only(p: &Platform) {
    let ns = &p.namespace;
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "demo-muster-sbr"},
        "spec": {},
    }))
    .expect("lease");
    Api::<Lease>::namespaced(p.client.clone(), ns)
        .create(&PostParams::default(), &lease)
        .await
        .expect("lease");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "demo-sbr"},
        "rules": [{
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["demo-muster-sbr"],
            "verbs": ["get", "update"],
        }],
    }))
    .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "demo-sbr"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "demo-sbr"},
        "subjects": [{"kind": "ServiceAccount", "name": "demo", "namespace": ns}],
    }))
    .expect("binding");
    Api::<Role>::namespaced(p.client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(p.client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_majority_keeps_the_side_that_holds_the_lease() {
    let p = Platform::start("lease-majority", local(47, 48))
        .await
        .expect("platform");
    assert_eq!(
        p.target,
        Target::Local,
        "this test cuts the local node's pod traffic with iptables"
    );
    let ns = p.namespace.clone();
    create_headless_service(&p.client, &ns, "demo", true).await;
    create_service_account(&p.client, &ns).await;
    grant_the_lease_only(&p).await;
    let set = agents(
        p.agent_image(),
        5,
        json!([
            {"name": "MUSTER_BOOTSTRAP_DISCOVERY_METHOD", "value": "dns"},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "MUSTER_CLUSTER_SPLIT_BRAIN_RESOLVER_ACTIVE_STRATEGY", "value": "lease-majority"},
            {"name": "MUSTER_CLUSTER_SPLIT_BRAIN_RESOLVER_STABLE_AFTER", "value": "2s"},
        ]),
        json!({}),
    );
    Api::<StatefulSet>::namespaced(p.client.clone(), &ns)
        .create(&PostParams::default(), &set)
        .await
        .expect("statefulset");
    let pods = support::wait_for_one_cluster(&p, 5).await;

    // Majority: the three lowest addresses (their leader is the lowest of all).
    let mut by_ip: Vec<(IpAddr, String)> = pods
        .iter()
        .map(|pod| (ip_of(pod), pod.metadata.name.clone().expect("name")))
        .collect();
    by_ip.sort();
    let minority = by_ip.split_off(3);
    let majority = by_ip;
    let ips = |side: &[(IpAddr, String)]| side.iter().map(|(ip, _)| *ip).collect::<Vec<_>>();
    let partition = Partition::cut(&ips(&majority), &ips(&minority));
    let cut = Instant::now();

    // The majority's leader holds the Lease.
    let leases: Api<Lease> = Api::namespaced(p.client.clone(), &ns);
    let leader = format!("muster://demo@{}:2552", majority[0].0);
    let lease = poll(
        "the majority's leader holds the Lease",
        Duration::from_secs(40),
        || {
            let leases = leases.clone();
            async move {
                let l = leases
                    .get_opt("demo-muster-sbr")
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no Lease yet")?;
                let holder = l.spec.as_ref().and_then(|s| s.holder_identity.clone());
                if holder.is_some() {
                    Ok(l)
                } else {
                    Err(format!("{l:?}"))
                }
            }
        },
    )
    .await;
    println!("cut -> Lease acquired: {} ms", cut.elapsed().as_millis());
    let spec = lease.spec.expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(leader.as_str()));
    assert_eq!(spec.lease_duration_seconds, Some(40), "release-after");

    // The minority downs itself: both containers exit and are restarted.
    let pods_api: Api<Pod> = Api::namespaced(p.client.clone(), &ns);
    poll(
        "the minority's agents exited (downed)",
        Duration::from_secs(60),
        || {
            let (pods_api, minority) = (pods_api.clone(), &minority);
            async move {
                for (_, name) in minority {
                    let pod = pods_api.get(name).await.map_err(|e| e.to_string())?;
                    if restarts(&pod) == 0 {
                        return Err(format!("{name} not restarted yet"));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    println!(
        "cut -> minority downed and restarted: {} ms",
        cut.elapsed().as_millis()
    );
    if let Some(cp) = p.control_plane() {
        let log = |name: &str| {
            std::fs::read_to_string(cp.dir.join(format!("{ns}_{name}_agent.log")))
                .unwrap_or_default()
        };
        // Each side's leader asked once: the majority's got it, the minority's did not.
        let (won, lost) = (log(&majority[0].1), log(&minority[0].1));
        assert!(won.contains("held=true"), "{}:\n{won}", majority[0].1);
        assert!(lost.contains("held=false"), "{}:\n{lost}", minority[0].1);
        for (_, name) in &minority {
            assert!(
                log(name).contains("downed this member"),
                "{name}:\n{}",
                log(name)
            );
        }
    }
    // The majority keeps a cluster of three, and nobody there restarted.
    let (_, first) = &majority[0];
    poll(
        "the majority is three Up members",
        Duration::from_secs(30),
        || {
            let p = &p;
            async move {
                let m = p.members(first).await?;
                let up = m.count(MemberStatus::Up);
                if m.members.len() == 3 && up == 3 && m.unreachable.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{m:?}"))
                }
            }
        },
    )
    .await;
    for (_, name) in &majority {
        let pod = pods_api.get(name).await.expect("pod");
        assert_eq!(restarts(&pod), 0, "{name} kept running");
    }

    // Heal: the restarted minority joins the surviving cluster (one cluster of five).
    partition.heal();
    let healed = Instant::now();
    poll("one cluster of five again", Duration::from_secs(90), || {
        let (p, pods_api) = (&p, pods_api.clone());
        async move {
            let list = pods_api
                .list(&ListParams::default().labels("app=demo"))
                .await
                .map_err(|e| e.to_string())?;
            let mut views = Vec::new();
            for pod in &list.items {
                views.push(
                    p.members(pod.metadata.name.as_deref().unwrap_or_default())
                        .await?,
                );
            }
            check::one_cluster_of(&views, 5)
        }
    })
    .await;
    println!(
        "heal -> one cluster of five: {} ms",
        healed.elapsed().as_millis()
    );
}
