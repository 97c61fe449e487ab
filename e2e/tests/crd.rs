//! `manifests/crd.yaml` on a real API server, applied with kubectl as a user would:
//! it is accepted (a structural schema) and established, a ClusterSpec gets the
//! documented defaults from the server, `kubectl get` shows the printer columns, the
//! short name works, `kubectl scale` goes through the scale subresource, and the schema
//! refuses bad values with a message naming the field.

use std::process::Command;

use e2e::ControlPlane;

mod support;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};

fn kubectl(cp: &ControlPlane, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", &cp.kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("kubectl output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crd_installs_and_the_server_applies_its_schema() {
    let cp = ControlPlane::start().await.expect("control plane");
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crd.yaml");
    let (ok, out) = kubectl(&cp, &["apply", "-f", crd], None);
    assert!(ok, "{out}");
    // Established (polled: `kubectl wait` of a newer client fails at once while the
    // 1.20 server has not written any condition yet).
    let client = cp.client().await.expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    support::poll(
        "the CRD is established",
        std::time::Duration::from_secs(60),
        || {
            let crds = crds.clone();
            async move {
                let crd = crds
                    .get("clusterspecs.muster.dev")
                    .await
                    .map_err(|e| e.to_string())?;
                let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
                if conditions
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                {
                    Ok(())
                } else {
                    Err(format!("conditions: {conditions:?}"))
                }
            }
        },
    )
    .await;

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
        ("replicas: 0", "spec.replicas"),
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

    // What the operator builds for the stored resource is accepted by the server as
    // applied (server-side apply, one field manager), and owned by the resource.
    let typed: Api<operator::ClusterSpec> = Api::namespaced(client.clone(), "default");
    let cs = typed.get("demo").await.expect("typed ClusterSpec");
    let owned = operator::build::owned(&cs, true).expect("built");
    let pp = PatchParams::apply("muster-operator").force();
    macro_rules! apply {
        ($t:ty, $obj:expr) => {{
            let obj: $t = $obj;
            let name = obj.metadata.name.clone().expect("name");
            let api: Api<$t> = Api::namespaced(client.clone(), "default");
            api.patch(&name, &pp, &Patch::Apply(&obj))
                .await
                .unwrap_or_else(|e| panic!("apply {} {name}: {e}", stringify!($t)))
        }};
    }
    let operator::build::Owned {
        service_account,
        role,
        role_binding,
        service,
        config_map,
        stateful_set,
        pod_disruption_budget,
    } = owned;
    apply!(k8s_openapi::api::core::v1::ServiceAccount, service_account);
    apply!(k8s_openapi::api::rbac::v1::Role, role);
    apply!(k8s_openapi::api::rbac::v1::RoleBinding, role_binding);
    apply!(k8s_openapi::api::core::v1::Service, service);
    apply!(k8s_openapi::api::core::v1::ConfigMap, config_map);
    let set = apply!(k8s_openapi::api::apps::v1::StatefulSet, stateful_set);
    let owner = set.metadata.owner_references.unwrap_or_default();
    assert_eq!(owner.len(), 1, "{owner:?}");
    assert_eq!(owner[0].uid, cs.metadata.uid.clone().expect("uid"));
    // policy/v1 PodDisruptionBudget arrived in Kubernetes 1.21; this API server is 1.20,
    // so the operator must report it missing and go on (issue 5).
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), "default");
    let name = pod_disruption_budget.metadata.name.clone().expect("name");
    match pdbs
        .patch(&name, &pp, &Patch::Apply(&pod_disruption_budget))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        other => panic!("policy/v1 on a 1.20 API server: {other:?}"),
    }
}
