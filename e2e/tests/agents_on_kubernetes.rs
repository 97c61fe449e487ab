//! muster-agent pods of a StatefulSet, run unmodified by the process kubelet on the
//! local control plane, find each other — through the cluster DNS (SRV records of their
//! headless Service, read via the pod's own /etc/resolv.conf) or through the Kubernetes
//! API (their service account's token, under RBAC) — and form one cluster.

use std::time::{Duration, Instant};

use e2e::{Platform, Target};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

mod support;
use support::{
    agents, create_headless_service, create_service_account, first_container, local, poll,
    wait_for_one_cluster,
};

fn ip_of(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP")
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().expect("name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_form_one_cluster_with_dns_discovery() {
    let p = Platform::start("dns-discovery", local(41, 42))
        .await
        .expect("platform");
    let ns = p.namespace.clone();
    create_headless_service(&p.client, &ns, "demo", true).await;
    create_service_account(&p.client, &ns).await;
    let sets: Api<StatefulSet> = Api::namespaced(p.client.clone(), &ns);
    let created = Instant::now();
    let set = agents(
        p.agent_image(),
        3,
        json!([{"name": "MUSTER_BOOTSTRAP_DISCOVERY_METHOD", "value": "dns"}]),
        json!({}),
    );
    sets.create(&PostParams::default(), &set)
        .await
        .expect("statefulset");
    let pods = wait_for_one_cluster(&p, 3).await;
    println!(
        "3 pods Ready (members Up) {} ms after the StatefulSet was created",
        created.elapsed().as_millis()
    );
    let ips: std::collections::BTreeSet<String> = pods.iter().map(ip_of).collect();
    assert_eq!(ips.len(), 3, "distinct pod IPs: {ips:?}");

    // What a person sees: three Running pods with their own IPs.
    let wide = p
        .kubectl()
        .args(["get", "pods", "-o", "wide", "-l", "app=demo"])
        .output()
        .expect("run kubectl");
    let table = String::from_utf8_lossy(&wide.stdout);
    println!("{table}");
    for pod in &pods {
        let line = table
            .lines()
            .find(|l| l.contains(&name_of(pod)))
            .unwrap_or_else(|| panic!("kubectl lists every pod:\n{table}"));
        assert!(line.contains("Running") && line.contains("1/1"), "{line}");
        assert!(line.contains(&ip_of(pod)), "{line}");
    }

    // Deleting a pod SIGTERMs its process, and the StatefulSet controller recreates it.
    let victim = pods[2].clone();
    let name = name_of(&victim);
    let old_uid = victim.metadata.uid.clone().expect("uid");
    let pods_api: Api<Pod> = Api::namespaced(p.client.clone(), &ns);
    pods_api
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    if let Some(cp) = p.control_plane() {
        // The process itself is visible here: it shuts down on SIGTERM (the agent
        // logs that; a SIGKILL would leave no line).
        let log = cp.dir.join(format!("{ns}_{name}_agent.log"));
        poll(
            "the deleted pod's agent shut down",
            Duration::from_secs(20),
            || {
                let log = log.clone();
                async move {
                    let text = std::fs::read_to_string(&log).map_err(|e| e.to_string())?;
                    if text.contains("shutting down") {
                        Ok(())
                    } else {
                        Err("no shutdown line yet".into())
                    }
                }
            },
        )
        .await;
    }
    let recreated = Instant::now();
    let again = poll(
        "the pod recreated and Ready",
        Duration::from_secs(60),
        || {
            let (pods_api, name, old_uid) = (pods_api.clone(), name.clone(), old_uid.clone());
            async move {
                let pod = pods_api.get(&name).await.map_err(|e| e.to_string())?;
                let ready = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if ready && pod.metadata.uid.as_deref() != Some(old_uid.as_str()) {
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
    let m = p.members(&name_of(&again)).await.expect("members");
    let first = p.members(&name_of(&pods[0])).await.expect("members");
    assert_eq!(
        m.leader, first.leader,
        "the new pod joined the same cluster"
    );

    // An image that cannot be had: a clear waiting reason, as for a failed pull.
    let stray: Pod = serde_json::from_value(json!({
        "metadata": {"name": "stray"},
        "spec": {"containers": [{"name": "app", "image": "registry.invalid/unknown/app:1"}]},
    }))
    .expect("pod");
    pods_api
        .create(&PostParams::default(), &stray)
        .await
        .expect("create");
    let waiting = poll(
        "ErrImagePull on the stray pod",
        Duration::from_secs(60),
        || {
            let pods_api = pods_api.clone();
            async move {
                let pod = pods_api.get("stray").await.map_err(|e| e.to_string())?;
                let w = first_container(pod)
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
        message.contains("registry.invalid/unknown/app:1"),
        "{message}"
    );
    if p.target == Target::Local {
        assert!(
            message.contains("muster-agent"),
            "names what the node runs: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_need_rbac_for_kubernetes_api_discovery_then_form() {
    let p = Platform::start("api-discovery", local(43, 44))
        .await
        .expect("platform");
    let ns = p.namespace.clone();
    create_headless_service(&p.client, &ns, "demo", true).await;
    create_service_account(&p.client, &ns).await;
    // Settings from a ConfigMap and a Secret reach the agent through env refs.
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "demo-settings"}, "data": {"roles": "backend"},
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(p.client.clone(), &ns)
        .create(&PostParams::default(), &config)
        .await
        .expect("configmap");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "demo-secret"}, "stringData": {"version": "1.2.3"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(p.client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
    let set = agents(
        p.agent_image(),
        3,
        json!([{"name": "MUSTER_BOOTSTRAP_DISCOVERY_METHOD", "value": "kubernetes-api"},
               {"name": "MUSTER_DISCOVERY_KUBERNETES_API_CONTAINER_NAME", "value": "agent"},
               {"name": "MUSTER_CLUSTER_ROLES", "valueFrom": {"configMapKeyRef": {"name": "demo-settings", "key": "roles"}}},
               {"name": "MUSTER_CLUSTER_APP_VERSION", "valueFrom": {"secretKeyRef": {"name": "demo-secret", "key": "version"}}}]),
        json!({}),
    );
    Api::<StatefulSet>::namespaced(p.client.clone(), &ns)
        .create(&PostParams::default(), &set)
        .await
        .expect("statefulset");

    // Without a Role the token is refused, and the agent says what grants it.
    let pods: Api<Pod> = Api::namespaced(p.client.clone(), &ns);
    let error = poll(
        "a discovery error naming RBAC",
        Duration::from_secs(60),
        || {
            let (pods, p) = (pods.clone(), &p);
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=demo"))
                    .await
                    .map_err(|e| e.to_string())?;
                let pod = list.items.first().ok_or("no pod yet")?;
                let status: serde_json::Value =
                    p.pod_json(&name_of(pod), 8558, "/bootstrap/status").await?;
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
    Api::<Role>::namespaced(p.client.clone(), &ns)
        .create(&PostParams::default(), &rbac)
        .await
        .expect("role");
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "demo-discovery"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "demo-discovery"},
        "subjects": [{"kind": "ServiceAccount", "name": "demo", "namespace": ns}],
    }))
    .expect("binding");
    let granted = Instant::now();
    Api::<RoleBinding>::namespaced(p.client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    let pods = wait_for_one_cluster(&p, 3).await;
    println!(
        "3 pods Ready (members Up) {} ms after the RoleBinding was created",
        granted.elapsed().as_millis()
    );
    let m = p.members(&name_of(&pods[0])).await.expect("members");
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
