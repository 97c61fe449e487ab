//! `manifests/crd.yaml` on a real API server, applied with kubectl as a user would:
//! it is accepted (a structural schema) and established, a ClusterSpec gets the
//! documented defaults from the server, `kubectl get` shows the printer columns, the
//! short name works, `kubectl scale` goes through the scale subresource, and the schema
//! refuses bad values with a message naming the field, and every example in
//! `manifests/examples` is accepted. Before it is installed,
//! `muster-operator` exits with the command that installs it.

use std::process::Command;

use e2e::ControlPlane;

mod support;
use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};

fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    match e2e::kubectl::run(Some(&cp.kubeconfig), args, stdin) {
        Ok(out) => (true, out),
        Err(out) => (false, out),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_installs_and_the_server_applies_its_schema() {
    let cp = ControlPlane::start().await.expect("control plane");
    // Before the CRD exists the operator refuses to start, and says what to run.
    let out = Command::new(support::built_binary("muster-operator"))
        .args(["--listen", "127.0.0.1:0"])
        .env("KUBECONFIG", &cp.kubeconfig)
        .output()
        .expect("run muster-operator");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kubectl apply -f manifests/crd.yaml"),
        "{stderr}"
    );

    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crd.yaml");
    let (ok, out) = kubectl(&cp, &["apply", "-f", crd], None);
    assert!(ok, "{out}");
    let client = cp.client().await.expect("client");
    support::wait_for_crd(&client).await;

    // The smallest ClusterSpec: the server fills in the defaults.
    let (ok, out) = kubectl(
        &cp,
        &["apply", "-f", "-"],
        Some(
            "apiVersion: muster.dev/v1alpha1\nkind: ClusterSpec\nmetadata:\n  name: demo\n  namespace: default\nspec: {}\n",
        ),
    );
    assert!(ok, "{out}");
    let gvk = GroupVersionKind::gvk("muster.dev", "v1alpha1", "ClusterSpec");
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
    let stored = api.get("demo").await.expect("the ClusterSpec");
    let spec: operator::ClusterSpecSpec =
        serde_json::from_value(stored.data["spec"].clone()).expect("a ClusterSpec spec");
    assert_eq!(spec.replicas, 3, "{:?}", stored.data);
    assert_eq!(spec.membership.stable_after, "20s");
    assert_eq!(
        stored.data["spec"]["bootstrap"]["newClusterEnabled"],
        "auto"
    );

    // What a person sees, by the short name.
    let (ok, out) = kubectl(&cp, &["get", "mcs", "-n", "default"], None);
    assert!(ok, "{out}");
    let header = out.lines().next().unwrap_or_default();
    for column in ["NAME", "REPLICAS", "UP", "PHASE", "LEADER", "AGE"] {
        assert!(header.contains(column), "{out}");
    }
    assert!(
        out.lines().nth(1).is_some_and(|l| l.starts_with("demo")),
        "{out}"
    );

    // The scale subresource.
    let (ok, out) = kubectl(
        &cp,
        &["scale", "mcs/demo", "-n", "default", "--replicas=5"],
        None,
    );
    assert!(ok, "{out}");
    let scaled = api.get("demo").await.expect("the ClusterSpec");
    assert_eq!(scaled.data["spec"]["replicas"], 5);

    // The schema refuses what it can express, naming the field.
    for (spec, field) in [
        ("replicas: -1", "spec.replicas"),
        ("bootstrap: {discovery: consul}", "spec.bootstrap.discovery"),
        ("rollout: {strategy: Random}", "spec.rollout.strategy"),
        (
            "membership: {downing: keep-biggest}",
            "spec.membership.downing",
        ),
    ] {
        let manifest = format!(
            "apiVersion: muster.dev/v1alpha1\nkind: ClusterSpec\nmetadata:\n  name: bad\n  namespace: default\nspec:\n  {spec}\n"
        );
        let (ok, out) = kubectl(&cp, &["apply", "-f", "-"], Some(&manifest));
        assert!(!ok, "{spec} was accepted:\n{out}");
        assert!(out.contains(field), "{spec}: {out}");
    }
    let bad: Result<DynamicObject, _> = api.get("bad").await;
    assert!(bad.is_err(), "nothing was stored");

    // Every example in manifests/examples is accepted as written. (What the operator
    // builds from a ClusterSpec is applied for real by tests/operator.rs.)
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/examples");
    let (ok, out) = kubectl(&cp, &["apply", "-n", "default", "-f", examples], None);
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&cp, &["get", "mcs", "-n", "default", "-o", "name"], None);
    assert!(ok, "{out}");
    for name in ["demo", "demo-dns", "shop", "keyowner"] {
        assert!(
            out.contains(&format!("clusterspec.muster.dev/{name}\n")),
            "{name}: {out}"
        );
    }
}
