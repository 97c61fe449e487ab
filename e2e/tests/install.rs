//! `kubectl apply -f manifests/` installs muster as a user would: the CRD, then the
//! operator as a Deployment in `muster-system`, running under the generated ClusterRole
//! (the process kubelet runs the built `muster-operator` for its image, with its service
//! account's token, so RBAC applies to it as to a real pod). A ClusterSpec in another
//! namespace then forms, with no permission error in the operator's log.

use std::time::Instant;

mod support;
use support::operator::{
    a_cluster_forms_under, apply_manifest, operator_pod, platform_with_images,
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
