//! muster-agent pods of a StatefulSet, run unmodified by the process kubelet on the
//! local control plane, find each other — through the cluster DNS (SRV records of their
//! headless Service, read via the pod's own /etc/resolv.conf) or through the Kubernetes
//! API (their service account's token, under RBAC) — and form one cluster.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e::{ClusterDns, ControlPlane, ImageTable, LocalNode, NodeConfig};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
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

struct Platform {
    cp: ControlPlane,
    client: kube::Client,
    _dns: ClusterDns,
    _node: LocalNode,
}

/// Control plane, cluster DNS on `127.0.<dns_net>.53:53`, and a node whose pods get
/// `127.0.<pod_net>.N`.
async fn platform(dns_net: u8, pod_net: u8) -> Platform {
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().await.expect("client");
    let dns_ip = IpAddr::V4(Ipv4Addr::new(127, 0, dns_net, 53));
    let dns = ClusterDns::start(client.clone(), SocketAddr::new(dns_ip, 53))
        .await
        .expect("cluster DNS on port 53 (needs root, as the process kubelet does)");
    let node = LocalNode::start(
        client.clone(),
        NodeConfig {
            name: "local-1".into(),
            pod_subnet: [127, 0, pod_net],
            images: ImageTable::default().with("muster-agent", agent_binary()),
            log_dir: cp.dir.clone(),
            api_port: cp.api_port,
            ca_cert: cp.pki.ca.cert.clone(),
            dns: dns_ip,
        },
    )
    .await
    .expect("local node");
    Platform {
        cp,
        client,
        _dns: dns,
        _node: node,
    }
}

/// A StatefulSet `demo` of `replicas` agents with extra env.
fn agents(replicas: i32, env: serde_json::Value) -> StatefulSet {
    let mut all_env = json!([
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MUSTER_BOOTSTRAP_SERVICE_NAME", "value": "demo"},
        {"name": "MUSTER_BOOTSTRAP_PORT_NAME", "value": "management"},
        {"name": "MUSTER_BOOTSTRAP_REQUIRED_CONTACT_POINT_NR", "value": replicas.to_string()},
    ]);
    all_env
        .as_array_mut()
        .expect("array")
        .extend(env.as_array().cloned().unwrap_or_default());
    serde_json::from_value(json!({
        "metadata": {"name": "demo"},
        "spec": {
            "replicas": replicas,
            "serviceName": "demo",
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {
                    "serviceAccountName": "demo",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "agent",
                        "image": "registry.example/muster/muster-agent:dev",
                        "ports": [{"name": "management", "containerPort": 8558}],
                        "env": all_env,
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": "management"},
                            "periodSeconds": 1,
                        },
                    }],
                },
            },
        },
    }))
    .expect("a valid StatefulSet")
}

async fn create_service_account(client: &kube::Client) {
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "demo"}})).expect("sa");
    Api::<ServiceAccount>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await
        .expect("service account");
}

/// Waits for `replicas` Ready pods, then checks they are one cluster; returns the pods.
async fn wait_for_one_cluster(client: &kube::Client, replicas: i32, since: Instant) -> Vec<Pod> {
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    poll("all replicas ready", Duration::from_secs(60), || {
        let sets = sets.clone();
        async move {
            let s = sets.get("demo").await.map_err(|e| e.to_string())?;
            let ready = s.status.and_then(|st| st.ready_replicas).unwrap_or(0);
            if ready == replicas {
                Ok(())
            } else {
                Err(format!("{ready} ready"))
            }
        }
    })
    .await;
    println!(
        "{replicas} pods Ready (members Up) {} ms after the StatefulSet was created",
        since.elapsed().as_millis()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods
        .list(&ListParams::default().labels("app=demo"))
        .await
        .expect("pods");
    let http = ManagementClient::new(Duration::from_secs(2));
    let mut views = Vec::new();
    for p in &list.items {
        let ip = ip_of(p);
        let m: ClusterMembers = http
            .get_json(SocketAddr::new(ip, 8558), "/cluster/members")
            .await
            .expect("members");
        assert_eq!(m.members.len(), replicas as usize, "{m:?}");
        assert!(m.members.iter().all(|m| m.status == "Up"), "{m:?}");
        views.push(m);
    }
    assert!(
        views
            .windows(2)
            .all(|w| w[0].leader == w[1].leader && w[0].members == w[1].members),
        "{views:?}"
    );
    list.items
}

fn ip_of(pod: &Pod) -> IpAddr {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_ref())
        .and_then(|ip| ip.parse().ok())
        .expect("pod IP")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_form_one_cluster_with_dns_discovery() {
    let p = platform(41, 42).await;
    create_headless_service(&p.client, "demo", true).await;
    create_service_account(&p.client).await;
    let sets: Api<StatefulSet> = Api::namespaced(p.client.clone(), "default");
    let created = Instant::now();
    let set = agents(
        3,
        json!([{"name": "MUSTER_BOOTSTRAP_DISCOVERY_METHOD", "value": "dns"}]),
    );
    sets.create(&PostParams::default(), &set)
        .await
        .expect("statefulset");
    let pods = wait_for_one_cluster(&p.client, 3, created).await;

    // What a person sees: three Running pods with their own IPs.
    let wide = std::process::Command::new("kubectl")
        .args(["get", "pods", "-o", "wide", "-l", "app=demo"])
        .env("KUBECONFIG", &p.cp.kubeconfig)
        .output()
        .expect("run kubectl");
    let table = String::from_utf8_lossy(&wide.stdout);
    println!("{table}");
    for pod in &pods {
        let line = table
            .lines()
            .find(|l| l.contains(pod.metadata.name.as_deref().expect("name")))
            .unwrap_or_else(|| panic!("kubectl lists every pod:\n{table}"));
        assert!(line.contains("Running") && line.contains("1/1"), "{line}");
        assert!(line.contains(&ip_of(pod).to_string()), "{line}");
    }

    // Deleting a pod stops its process: its management port goes away.
    let victim = ip_of(&pods[2]);
    let name = pods[2].metadata.name.clone().expect("name");
    Api::<Pod>::namespaced(p.client.clone(), "default")
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    let http = ManagementClient::new(Duration::from_secs(1));
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

    // The StatefulSet controller recreates it; the new pod joins the existing cluster.
    let recreated = Instant::now();
    let again = poll(
        "the pod recreated and Ready",
        Duration::from_secs(60),
        || {
            let pods: Api<Pod> = Api::namespaced(p.client.clone(), "default");
            let name = name.clone();
            async move {
                let pod = pods.get(&name).await.map_err(|e| e.to_string())?;
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready && ip_of(&pod) != victim {
                    Ok(pod)
                } else {
                    Err("not yet".to_owned())
                }
            }
        },
    )
    .await;
    println!(
        "deleted pod recreated and Ready in {} ms",
        recreated.elapsed().as_millis()
    );
    let m: ClusterMembers = http
        .get_json(SocketAddr::new(ip_of(&again), 8558), "/cluster/members")
        .await
        .expect("members");
    let first: ClusterMembers = http
        .get_json(SocketAddr::new(ip_of(&pods[0]), 8558), "/cluster/members")
        .await
        .expect("members");
    assert_eq!(
        m.leader, first.leader,
        "the new pod joined the same cluster"
    );

    // An image the node has no binary for: a clear waiting reason, as for a failed pull.
    let stray: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray"},
        "spec": {"containers": [{"name": "app", "image": "registry.example/unknown/app:1"}]},
    }))
    .expect("pod");
    let pods_api: Api<Pod> = Api::namespaced(p.client.clone(), "default");
    pods_api
        .create(&PostParams::default(), &stray)
        .await
        .expect("create");
    let waiting = poll(
        "ErrImagePull on the stray pod",
        Duration::from_secs(30),
        || {
            let pods_api = pods_api.clone();
            async move {
                let pod = pods_api.get("stray").await.map_err(|e| e.to_string())?;
                let w = pod
                    .status
                    .and_then(|s| s.container_statuses)
                    .and_then(|cs| cs.into_iter().next())
                    .and_then(|c| c.state)
                    .and_then(|st| st.waiting)
                    .ok_or("no waiting state yet")?;
                if w.reason.as_deref().is_some_and(|r| r.contains("ImagePull")) {
                    Ok(w)
                } else {
                    Err(format!("{w:?}"))
                }
            }
        },
    )
    .await;
    let message = waiting.message.unwrap_or_default();
    assert!(
        message.contains("registry.example/unknown/app:1") && message.contains("muster-agent"),
        "{message}"
    );
    drop(p.cp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_rbac_for_kubernetes_api_discovery_then_form() {
    let p = platform(43, 44).await;
    create_headless_service(&p.client, "demo", true).await;
    create_service_account(&p.client).await;
    let sets: Api<StatefulSet> = Api::namespaced(p.client.clone(), "default");
    // Settings from a ConfigMap and a Secret reach the agent through env refs.
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "demo-settings"}, "data": {"roles": "backend"},
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(p.client.clone(), "default")
        .create(&PostParams::default(), &config)
        .await
        .expect("configmap");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "demo-secret"}, "stringData": {"version": "1.2.3"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(p.client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let set = agents(
        3,
        json!([{"name": "MUSTER_BOOTSTRAP_DISCOVERY_METHOD", "value": "kubernetes-api"},
               {"name": "MUSTER_DISCOVERY_KUBERNETES_API_CONTAINER_NAME", "value": "agent"},
               {"name": "MUSTER_CLUSTER_ROLES", "valueFrom": {"configMapKeyRef": {"name": "demo-settings", "key": "roles"}}},
               {"name": "MUSTER_CLUSTER_APP_VERSION", "valueFrom": {"secretKeyRef": {"name": "demo-secret", "key": "version"}}}]),
    );
    sets.create(&PostParams::default(), &set)
        .await
        .expect("statefulset");

    // Without a Role the token is refused, and the agent says what grants it.
    let pods: Api<Pod> = Api::namespaced(p.client.clone(), "default");
    let http = ManagementClient::new(Duration::from_secs(1));
    let error = poll(
        "a discovery error naming RBAC",
        Duration::from_secs(30),
        || {
            let (pods, http) = (pods.clone(), http.clone());
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=demo"))
                    .await
                    .map_err(|e| e.to_string())?;
                let pod = list.items.first().ok_or("no pod yet")?;
                let ip = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref())
                    .ok_or("no IP yet")?;
                let ip: IpAddr = ip.parse().map_err(|_| "bad IP")?;
                let status: serde_json::Value = http
                    .get_json(SocketAddr::new(ip, 8558), "/bootstrap/status")
                    .await?;
                let err = status["bootstrap"]["lookupError"]
                    .as_str()
                    .ok_or(format!("no lookup error: {status}"))?;
                Ok(err.to_owned())
            }
        },
    )
    .await;
    assert!(
        error.contains("403") || error.contains("forbidden"),
        "{error}"
    );
    assert!(
        error.contains("list") && error.contains("pods") && error.contains("Role"),
        "{error}"
    );

    let rbac: Role = serde_json::from_value(json!({
        "metadata": {"name": "demo-discovery"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    }))
    .expect("role");
    Api::<Role>::namespaced(p.client.clone(), "default")
        .create(&PostParams::default(), &rbac)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "demo-discovery"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "demo-discovery"},
        "subjects": [{"kind": "ServiceAccount", "name": "demo", "namespace": "default"}],
    }))
    .expect("binding");
    let granted = Instant::now();
    Api::<RoleBinding>::namespaced(p.client.clone(), "default")
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let pods = wait_for_one_cluster(&p.client, 3, granted).await;
    let m: ClusterMembers = ManagementClient::new(Duration::from_secs(2))
        .get_json(SocketAddr::new(ip_of(&pods[0]), 8558), "/cluster/members")
        .await
        .expect("members");
    for member in &m.members {
        assert_eq!(
            member.roles,
            ["backend"],
            "role from the ConfigMap: {member:?}"
        );
        assert_eq!(
            member.app_version, "1.2.3",
            "version from the Secret: {member:?}"
        );
    }
}
