//! `kubectl apply -f manifests/` installs muster as a user would: the CRD, then the
//! operator as a Deployment in `muster-system`, running under the generated ClusterRole
//! (the process kubelet runs the built `muster-operator` for its image, with its service
//! account's token, so RBAC applies to it as to a real pod). A ClusterSpec in another
//! namespace then forms, with no permission error in the operator's log. The namespaced
//! install (`namespaced/operator.yaml`, Roles only) does the same for its namespace and
//! leaves a ClusterSpec of any other alone.

use std::time::Instant;

mod support;
use support::operator::{
    a_cluster_forms_under, apply_manifest, never_reconciled, operator_pod, platform_with_images,
    stray_cluster_elsewhere,
};
use support::wait_for_crd;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_install_an_operator_that_forms_a_cluster() {
    let p = platform_with_images("install", (59, 60)).await;
    let installed = Instant::now();
    apply_manifest(&p, "crd.yaml");
    wait_for_crd(&p.client).await;
    apply_manifest(&p, "operator.yaml");
    let log = operator_pod(&p, "muster-system", "muster-operator").await;
    println!(
        "kubectl apply -f manifests/ → operator available: {} ms",
        installed.elapsed().as_millis()
    );

    let formed = a_cluster_forms_under(&p, &log).await;
    println!(
        "ClusterSpec created → Running (operator as a pod): {} ms",
        formed.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_namespaced_manifests_install_an_operator_for_one_namespace() {
    let p = platform_with_images("install-namespaced", (91, 92)).await;
    apply_manifest(&p, "crd.yaml");
    wait_for_crd(&p.client).await;
    let stray = stray_cluster_elsewhere(&p).await;
    // As the file's header says: its example namespace replaced by the user's.
    let path = format!(
        "{}/../manifests/namespaced/operator.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let yaml = std::fs::read_to_string(&path)
        .expect("the namespaced manifest")
        .replace("muster-apps", &p.namespace);
    let cp = p.control_plane().expect("the local platform");
    e2e::kubectl::run(Some(&cp.kubeconfig), &["apply", "-f", "-"], Some(&yaml))
        .unwrap_or_else(|e| panic!("{e}"));
    let log = operator_pod(&p, "muster-system", "muster-operator").await;
    let formed = a_cluster_forms_under(&p, &log).await;
    println!(
        "ClusterSpec created → Running (namespaced install): {} ms",
        formed.as_millis()
    );
    never_reconciled(&p, &stray).await;
}
