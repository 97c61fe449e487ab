//! muster-agent pods of a StatefulSet, run by the process kubelet on the local control
//! plane, find each other through the cluster DNS (SRV records of their headless
//! Service) and form one cluster; deleting a pod stops its process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{ClusterDns, ControlPlane, ImageTable, LocalNode, NodeConfig};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use node_agent::management::api::ClusterMembers;
use node_agent::management::client::ManagementClient;
use serde_json::json;

mod support;
use support::create_headless_service;

/// The `muster-agent` built beside this test (cargo test --workspace builds it).
fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target folder")
        .join("muster-agent");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p node-agent` first (cargo test --workspace does)",
        bin.display()
    );
    bin
}

async fn poll<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        match f().await {
            Ok(v) => return v,
            Err(e) if start.elapsed() > limit => panic!("{what}: not within {limit:?}: {e}"),
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_of_agents_forms_one_cluster() {
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().await.expect("client");
    let dns = ClusterDns::start(
        client.clone(),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 41, 53)), 0),
    )
    .await
    .expect("cluster DNS");
    let _node = LocalNode::start(
        client.clone(),
        NodeConfig {
            name: "local-1".into(),
            pod_subnet: [127, 0, 42],
            images: ImageTable::default().with("muster-agent", agent_binary()),
            log_dir: cp.dir.clone(),
            api_port: cp.api_port,
        },
    )
    .await
    .expect("local node");

    create_headless_service(&client, "demo", true).await;

    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let set: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "demo"},
        "spec": {
            "replicas": 3,
            "serviceName": "demo",
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "agent",
                        "image": "registry.example/muster/muster-agent:dev",
                        "ports": [{"name": "management", "containerPort": 8558}],
                        "env": [
                            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                            {"name": "MUSTER_BOOTSTRAP_SERVICE_NAME", "value": "demo"},
                            {"name": "MUSTER_BOOTSTRAP_DISCOVERY_METHOD", "value": "dns"},
                            {"name": "MUSTER_BOOTSTRAP_PORT_NAME", "value": "management"},
                            {"name": "MUSTER_BOOTSTRAP_REQUIRED_CONTACT_POINT_NR", "value": "3"},
                            // Until pods get the cluster DNS in their own /etc/resolv.conf.
                            {"name": "MUSTER_DISCOVERY_DNS_NAMESERVER", "value": dns.addr.to_string()},
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": "management"},
                            "periodSeconds": 1,
                        },
                    }],
                },
            },
        },
    }))
    .expect("statefulset");
    let created = Instant::now();
    sets.create(&PostParams::default(), &set)
        .await
        .expect("statefulset");

    poll("3 ready replicas", Duration::from_secs(60), || {
        let sets = sets.clone();
        async move {
            let s = sets.get("demo").await.map_err(|e| e.to_string())?;
            let ready = s.status.and_then(|st| st.ready_replicas).unwrap_or(0);
            if ready == 3 {
                Ok(())
            } else {
                Err(format!("{ready} ready"))
            }
        }
    })
    .await;
    println!(
        "StatefulSet created -> 3 pods Ready (members Up): {} ms",
        created.elapsed().as_millis()
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels("app=demo"))
        .await
        .expect("pods");
    let ips: Vec<IpAddr> = list
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
        .collect();
    assert_eq!(ips.len(), 3);
    let http = ManagementClient::new(Duration::from_secs(2));
    let mut leaders = Vec::new();
    for ip in &ips {
        let m: ClusterMembers = http
            .get_json(SocketAddr::new(*ip, 8558), "/cluster/members")
            .await
            .expect("members");
        assert_eq!(m.members.len(), 3, "{m:?}");
        assert!(m.members.iter().all(|m| m.status == "Up"), "{m:?}");
        leaders.push(m.leader);
    }
    assert!(leaders.windows(2).all(|w| w[0] == w[1]), "{leaders:?}");

    // Deleting a pod stops its process: its management port goes away.
    let victim = ips[2];
    let name = list.items[2].metadata.name.clone().expect("name");
    pods.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    poll(
        "deleted pod's agent stopped",
        Duration::from_secs(20),
        || {
            let http = http.clone();
            async move {
                match http.get(SocketAddr::new(victim, 8558), "/alive").await {
                    Err(_) => Ok(()),
                    Ok(_) => Err("still answering".to_owned()),
                }
            }
        },
    )
    .await;
}
