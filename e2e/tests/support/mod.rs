//! Shared by the e2e tests.
#![allow(dead_code)] // each test file uses its own part of this

use std::path::PathBuf;
use std::time::Duration;

use e2e::{ImageTable, LocalSettings};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;

/// Creates the headless Service `name` in `ns` selecting `app=NAME`, with the agents'
/// management port (named `management`, 8558).
pub async fn create_headless_service(
    client: &kube::Client,
    ns: &str,
    name: &str,
    publish_not_ready: bool,
) {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": publish_not_ready,
            "selector": {"app": name},
            "ports": [{"name": "management", "port": 8558, "targetPort": "management"}],
        },
    }))
    .expect("a valid Service");
    Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .expect("create the Service");
}

/// The `muster-agent` built beside this test.
pub fn agent_binary() -> PathBuf {
    built_binary("muster-agent")
}

/// The local platform's settings: DNS on `127.0.<dns_net>.53`, pods on
/// `127.0.<pod_net>.N`, `muster-agent` images run the built agent and the example
/// application's images its script.
pub fn local(dns_net: u8, pod_net: u8) -> LocalSettings {
    LocalSettings {
        dns_net,
        pod_net,
        images: ImageTable::default()
            .with("muster-agent", agent_binary())
            .with(e2e::EXAMPLE_IMAGE_NAME, e2e::example_application())
            // Pods of other teams' in shared-namespace tests: a Python server.
            .with("python3", std::path::PathBuf::from("/usr/bin/python3"))
            // A tenant's agent image that answers the operator as badly as it can.
            .with(
                "hostile-agent",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/hostile-agent"),
            ),
        volume_refresh: e2e::VolumeRefresh::default(),
    }
}

/// Calls `f` every 100 ms until it gives a value; panics with its last error after
/// `limit` ([`e2e::poll`], for tests).
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    e2e::poll(what, limit, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A StatefulSet `demo` of `replicas` agents of `image` with extra env entries (and
/// extra container fields merged in), a readiness probe on `/ready` and a liveness
/// probe on `/alive`.
pub fn agents(
    image: &str,
    replicas: i32,
    env: serde_json::Value,
    container: serde_json::Value,
) -> k8s_openapi::api::apps::v1::StatefulSet {
    let mut all_env = json!([
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MUSTER_BOOTSTRAP_SERVICE_NAME", "value": "demo"},
        {"name": "MUSTER_BOOTSTRAP_PORT_NAME", "value": "management"},
        {"name": "MUSTER_BOOTSTRAP_REQUIRED_CONTACT_POINT_NR", "value": replicas.to_string()},
        {"name": "MUSTER_BOOTSTRAP_EXPECTED_CONTACT_POINT_NR", "value": replicas.to_string()},
        // These tests are about Kubernetes; the operator's tests run with the key.
        {"name": "MUSTER_CLUSTER_ALLOW_UNAUTHENTICATED", "value": "true"},
    ]);
    all_env
        .as_array_mut()
        .expect("array")
        .extend(env.as_array().cloned().unwrap_or_default());
    let mut c = json!({
        "name": "agent",
        "image": image,
        "ports": [{"name": "management", "containerPort": 8558}],
        "env": all_env,
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "management"},
            "periodSeconds": 1,
        },
        "livenessProbe": {
            "httpGet": {"path": "/alive", "port": "management"},
            "periodSeconds": 2,
            "failureThreshold": 3,
        },
    });
    for (k, v) in container.as_object().cloned().unwrap_or_default() {
        c[k] = v;
    }
    let volumes = c
        .as_object_mut()
        .and_then(|o| o.remove("volumes"))
        .unwrap_or(json!([]));
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
                    "containers": [c],
                    "volumes": volumes,
                },
            },
        },
    }))
    .expect("a valid StatefulSet")
}

/// Creates ServiceAccount `demo` in `ns`.
pub async fn create_service_account(client: &kube::Client, ns: &str) {
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "demo"}})).expect("sa");
    Api::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("service account");
}

/// Waits for StatefulSet `demo`'s `replicas` Ready pods, then checks they are one
/// cluster at once ([`check::no_split`], [`check::one_cluster_of`]: every member Up,
/// one leader, the same list everywhere) and that no container was restarted; returns
/// the pods.
pub async fn wait_for_one_cluster(
    p: &e2e::Platform,
    replicas: i32,
) -> Vec<k8s_openapi::api::core::v1::Pod> {
    use k8s_openapi::api::apps::v1::StatefulSet;
    use k8s_openapi::api::core::v1::Pod;
    use node_agent::api::check;

    let sets: Api<StatefulSet> = Api::namespaced(p.client.clone(), &p.namespace);
    poll("all replicas ready", Duration::from_secs(90), || {
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
    let pods: Api<Pod> = Api::namespaced(p.client.clone(), &p.namespace);
    let list = pods
        .list(&kube::api::ListParams::default().labels("app=demo"))
        .await
        .expect("pods");
    let mut views = Vec::new();
    for pod in &list.items {
        let name = pod.metadata.name.as_deref().expect("name");
        views.push(p.members(name).await.expect("members"));
    }
    if let Err(e) = check::no_split(&views)
        .and_then(|()| check::one_cluster_of(&views, usize::try_from(replicas).expect("replicas")))
    {
        panic!("not one cluster once every pod is Ready: {e}");
    }
    for pod in &list.items {
        let restarts: i32 = pod
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(
            restarts, 0,
            "{:?}: the liveness probe on /alive passes",
            pod.metadata.name
        );
    }
    list.items
}

/// The status of the pod's first container, once the node has reported it.
pub fn first_container(
    pod: k8s_openapi::api::core::v1::Pod,
) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status?.container_statuses?.into_iter().next()
}

/// Waits until the ClusterSpec CRD is Established.
pub async fn wait_for_crd(client: &kube::Client) {
    e2e::crd_established(client, "clusterspecs.muster.dev", Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A binary built beside this test (cargo test --workspace builds every package's).
pub fn built_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target folder")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first (cargo test --workspace does)",
        bin.display()
    );
    bin
}
pub mod chart;
pub mod operator;
