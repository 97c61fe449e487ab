//! What a pod spec asks of the node, seen through the agent: a config file from a Secret
//! volume, variables from `envFrom` with a prefix, ConfigMap volumes kept in step with
//! their object, liveness and startup probes that restart a container, and a missing volume source
//! reported as a kubelet reports it.

use std::time::{Duration, Instant};

use e2e::Platform;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

mod support;
use support::{
    agents, create_headless_service, create_service_account, first_container, local, poll,
    wait_for_one_cluster,
};

async fn create<K>(client: &kube::Client, ns: &str, object: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let object: K = serde_json::from_value(object).expect("a valid object");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("create");
}

/// Events about pod `name` with `reason`.
async fn events(p: &Platform, name: &str, reason: &str) -> Result<Vec<Event>, String> {
    let found = Api::<Event>::namespaced(p.client.clone(), &p.namespace)
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .map_err(|e| e.to_string())?;
    let matching: Vec<Event> = found
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect();
    if matching.is_empty() {
        Err(format!("no {reason} event for {name} yet"))
    } else {
        Ok(matching)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_env_from_and_probes_work_as_on_a_kubelet() {
    // This test checks that a ConfigMap update reaches a running pod at all, whole; how
    // late a kubelet brings it (60–90 s, the default) is the node's own unit test, so
    // pods are synced every 2 s here to keep the run short.
    let settings = e2e::LocalSettings {
        volume_refresh: e2e::VolumeRefresh {
            sync_period: Duration::from_secs(2),
            ..e2e::VolumeRefresh::default()
        },
        ..local(45, 46)
    };
    let p = Platform::start("pod-features", settings)
        .await
        .expect("platform");
    let ns = p.namespace.clone();
    create_headless_service(&p.client, &ns, "demo", true).await;
    create_service_account(&p.client, &ns).await;
    create::<Secret>(
        &p.client,
        &ns,
        json!({"metadata": {"name": "agent-config"},
               "stringData": {"agent.yaml": "cluster:\n  roles: [from-file]\n"}}),
    )
    .await;
    create::<ConfigMap>(
        &p.client,
        &ns,
        json!({"metadata": {"name": "agent-env"}, "data": {"APP_VERSION": "2.0.0"}}),
    )
    .await;
    create::<ConfigMap>(
        &p.client,
        &ns,
        json!({"metadata": {"name": "extra"}, "data": {"greeting": "hello"}}),
    )
    .await;
    let set = agents(
        p.agent_image(),
        1,
        json!([{"name": "MUSTER_BOOTSTRAP_DISCOVERY_METHOD", "value": "dns"}]),
        json!({
            "args": ["--config", "/etc/muster/agent.yaml"],
            "envFrom": [{"configMapRef": {"name": "agent-env"}, "prefix": "MUSTER_CLUSTER_"},
                        {"secretRef": {"name": "not-there", "optional": true}}],
            "volumeMounts": [{"name": "config", "mountPath": "/etc/muster"},
                             {"name": "extra", "mountPath": "/etc/muster-extra"},
                             {"name": "scratch", "mountPath": "/var/lib/muster-scratch"}],
            "volumes": [{"name": "config", "secret": {"secretName": "agent-config"}},
                        {"name": "extra", "configMap": {"name": "extra"}},
                        {"name": "scratch", "emptyDir": {}}],
        }),
    );
    Api::<StatefulSet>::namespaced(p.client.clone(), &ns)
        .create(&PostParams::default(), &set)
        .await
        .expect("statefulset");
    let pods = wait_for_one_cluster(&p, 1).await;
    let pod = pods[0].metadata.name.clone().expect("name");
    let m = p.members(&pod).await.expect("members");
    assert_eq!(
        m.members[0].roles,
        ["from-file"],
        "roles from the file in the Secret volume"
    );
    assert_eq!(
        m.members[0].app_version, "2.0.0",
        "version from envFrom with its prefix"
    );

    // On the local platform the container's own view of its files can be read through
    // /proc/PID/root: a ConfigMap change reaches it; the emptyDir is writable.
    if let Some(node) = p.node() {
        let pid = node
            .container_pid(&ns, &pod, "agent")
            .await
            .expect("the agent's process");
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        let greeting = root.join("etc/muster-extra/greeting");
        assert_eq!(
            std::fs::read_to_string(&greeting).expect("greeting"),
            "hello"
        );
        std::fs::write(root.join("var/lib/muster-scratch/x"), "1").expect("emptyDir is writable");
        let changed = Instant::now();
        Api::<ConfigMap>::namespaced(p.client.clone(), &ns)
            .patch(
                "extra",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"greeting": "bonjour"}})),
            )
            .await
            .expect("patch");
        poll(
            "the ConfigMap change inside the pod",
            Duration::from_secs(10),
            || {
                let greeting = greeting.clone();
                async move {
                    match std::fs::read_to_string(&greeting) {
                        Ok(s) if s == "bonjour" => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                }
            },
        )
        .await;
        println!(
            "ConfigMap change visible in the pod's volume after {} ms",
            changed.elapsed().as_millis()
        );
        let cp = p.control_plane().expect("local");
        let uid = pods[0].metadata.uid.clone().expect("uid");
        let scratch = cp
            .dir
            .join(format!("pods/{ns}_{pod}/{uid}/volumes/scratch/x"));
        assert_eq!(
            std::fs::read_to_string(&scratch).expect("the pod's emptyDir folder"),
            "1",
            "the emptyDir is the pod's own folder"
        );
    }

    // A liveness probe that fails: the container is stopped and started again.
    create::<Pod>(
        &p.client,
        &ns,
        json!({"metadata": {"name": "unhealthy"},
               "spec": {"terminationGracePeriodSeconds": 2,
                        "containers": [{"name": "agent", "image": p.agent_image(),
                                        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                                {"name": "MUSTER_BOOTSTRAP_SERVICE_NAME", "value": "unhealthy"},
                                                {"name": "MUSTER_CLUSTER_ALLOW_UNAUTHENTICATED", "value": "true"}],
                                        "livenessProbe": {"tcpSocket": {"port": 9},
                                                          "periodSeconds": 1, "failureThreshold": 2}}]}}),
    )
    .await;
    let pods_api: Api<Pod> = Api::namespaced(p.client.clone(), &ns);
    let restarted = poll(
        "a restart after failed liveness probes",
        Duration::from_secs(60),
        || {
            let pods_api = pods_api.clone();
            async move {
                let pod = pods_api.get("unhealthy").await.map_err(|e| e.to_string())?;
                let c = first_container(pod).ok_or("no container status yet")?;
                let terminated = c.last_state.and_then(|l| l.terminated);
                match terminated {
                    Some(t) if c.restart_count >= 1 => Ok(t),
                    _ => Err(format!("restartCount {}", c.restart_count)),
                }
            }
        },
    )
    .await;
    println!("after the liveness kill: {restarted:?}");
    let unhealthy = poll("an Unhealthy event", Duration::from_secs(10), || {
        events(&p, "unhealthy", "Unhealthy")
    })
    .await;
    let message = unhealthy[0].message.clone().unwrap_or_default();
    assert!(message.contains("Liveness probe failed"), "{message}");
    poll("a Killing event", Duration::from_secs(10), || {
        events(&p, "unhealthy", "Killing")
    })
    .await;

    // A startup probe that never succeeds: the container is never ready, its liveness
    // probe (which would fail too) is never run, and it is restarted once the startup
    // probe has failed failureThreshold times.
    create::<Pod>(
        &p.client,
        &ns,
        json!({"metadata": {"name": "slow-start"},
               "spec": {"terminationGracePeriodSeconds": 2,
                        "containers": [{"name": "agent", "image": p.agent_image(),
                                        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                                                {"name": "MUSTER_BOOTSTRAP_SERVICE_NAME", "value": "slow-start"},
                                                {"name": "MUSTER_CLUSTER_ALLOW_UNAUTHENTICATED", "value": "true"}],
                                        "ports": [{"name": "management", "containerPort": 8558}],
                                        "startupProbe": {"tcpSocket": {"port": 9},
                                                         "periodSeconds": 1, "failureThreshold": 3},
                                        "readinessProbe": {"httpGet": {"path": "/alive", "port": "management"},
                                                           "periodSeconds": 1},
                                        "livenessProbe": {"tcpSocket": {"port": 10},
                                                          "periodSeconds": 1, "failureThreshold": 1}}]}}),
    )
    .await;
    poll(
        "a restart after failed startup probes",
        Duration::from_secs(60),
        || {
            let pods_api = pods_api.clone();
            async move {
                let pod = pods_api
                    .get("slow-start")
                    .await
                    .map_err(|e| e.to_string())?;
                let c = first_container(pod).ok_or("no container status yet")?;
                assert!(!c.ready, "ready before its startup probe succeeded");
                assert_ne!(
                    c.started,
                    Some(true),
                    "started before its startup probe succeeded"
                );
                (c.restart_count >= 1)
                    .then_some(())
                    .ok_or_else(|| format!("restartCount {}", c.restart_count))
            }
        },
    )
    .await;
    let unhealthy = poll("Unhealthy events", Duration::from_secs(10), || {
        events(&p, "slow-start", "Unhealthy")
    })
    .await;
    for e in &unhealthy {
        let message = e.message.clone().unwrap_or_default();
        assert!(message.starts_with("Startup probe failed"), "{message}");
    }
    let killing = poll("a Killing event", Duration::from_secs(10), || {
        events(&p, "slow-start", "Killing")
    })
    .await;
    let message = killing[0].message.clone().unwrap_or_default();
    assert!(message.contains("failed startup probe"), "{message}");

    // A volume whose ConfigMap does not exist: the pod waits in ContainerCreating and
    // an event names what is missing.
    create::<Pod>(
        &p.client,
        &ns,
        json!({"metadata": {"name": "mountless"},
               "spec": {"containers": [{"name": "agent", "image": p.agent_image(),
                                        "volumeMounts": [{"name": "cfg", "mountPath": "/etc/muster"}]}],
                        "volumes": [{"name": "cfg", "configMap": {"name": "missing-settings"}}]}}),
    )
    .await;
    let failed = poll("a FailedMount event", Duration::from_secs(60), || {
        events(&p, "mountless", "FailedMount")
    })
    .await;
    let message = failed[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("missing-settings") && message.contains("not found"),
        "{message}"
    );
    let pod = pods_api.get("mountless").await.expect("pod");
    let waiting = first_container(pod)
        .and_then(|c| c.state)
        .and_then(|s| s.waiting)
        .expect("waiting");
    assert_eq!(waiting.reason.as_deref(), Some("ContainerCreating"));
}
