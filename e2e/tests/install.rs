//! `kubectl apply -f manifests/` installs muster as a user would: the CRD, then the
//! operator as a Deployment in `muster-system`, running under the generated ClusterRole
//! (the process kubelet runs the built `muster-operator` for its image, with its service
//! account's token, so RBAC applies to it as to a real pod). A ClusterSpec in another
//! namespace then forms, with no permission error in the operator's log.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::{ImageTable, LocalSettings, Platform, Target};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::json;

mod support;
use support::operator::{Cluster, PodLog, apply_manifest, create_cluster, running, status_of};
use support::{agent_binary, built_binary, poll, wait_for_crd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_install_an_operator_that_forms_a_cluster() {
    let images = ImageTable::default()
        .with("muster-agent", agent_binary())
        .with("muster-operator", built_binary("muster-operator"));
    let p = Platform::start(
        "install",
        LocalSettings {
            dns_net: 59,
            pod_net: 60,
            images,
        },
    )
    .await
    .expect("platform");
    assert_eq!(
        p.target,
        Target::Local,
        "on kind the Helm chart installs it"
    );
    let cp = p.control_plane().expect("local");
    let installed = Instant::now();
    apply_manifest(&p, "crd.yaml");
    wait_for_crd(&p.client).await;
    apply_manifest(&p, "operator.yaml");
    let deployments: Api<Deployment> = Api::namespaced(p.client.clone(), "muster-system");
    poll(
        "the operator Deployment available",
        Duration::from_secs(120),
        || async {
            let d = deployments
                .get("muster-operator")
                .await
                .map_err(|e| e.to_string())?;
            match d.status.and_then(|s| s.available_replicas) {
                Some(1) => Ok(()),
                other => Err(format!("available: {other:?}")),
            }
        },
    )
    .await;
    println!(
        "kubectl apply -f manifests/ → operator available: {} ms",
        installed.elapsed().as_millis()
    );
    let pod = Command::new("kubectl")
        .args(["get", "pods", "-n", "muster-system", "-o", "name"])
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .expect("kubectl get pods");
    let pod = String::from_utf8_lossy(&pod.stdout)
        .trim()
        .trim_start_matches("pod/")
        .to_owned();
    let log = PodLog(cp.dir.join(format!("muster-system_{pod}_operator.log")));

    let c = Cluster::of(&p, "shop");
    let started = create_cluster(&p, "shop", 3, json!({})).await;
    let cs = c
        .wait_for(
            &log,
            "Running with 3 Up",
            Duration::from_secs(120),
            running(3),
        )
        .await;
    println!(
        "ClusterSpec created → Running (operator as a pod): {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(status_of(&cs).new_cluster_enabled, Some(false));
    c.one_cluster_of(3).await.expect("one cluster of 3");
    let text = std::fs::read_to_string(&log.0).expect("the operator's log");
    assert!(text.contains("holding the leader Lease"), "{text}");
    assert!(
        !text.contains("forbidden"),
        "the ClusterRole grants all the operator uses:\n{text}"
    );
}
