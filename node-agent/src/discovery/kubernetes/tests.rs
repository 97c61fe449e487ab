use super::*;

fn pod(yaml: &str) -> Pod {
    serde_yaml::from_str(yaml).unwrap()
}

fn running(name: &str, ip: &str) -> String {
    format!(
        r#"
metadata: {{ name: {name} }}
spec:
  containers:
  - name: app
    ports: [{{ name: http, containerPort: 8080 }}]
  - name: agent
    ports: [{{ name: management, containerPort: 9558 }}]
status:
  phase: Running
  podIP: "{ip}"
  containerStatuses:
  - {{ name: agent, state: {{ running: {{}} }}, ready: true, restartCount: 0, image: x, imageID: y }}
"#
    )
}

#[test]
fn keeps_running_pods_with_their_named_port() {
    let pods = [
        pod(&running("a", "10.0.0.1")),
        pod(&running("b", "fd00::2")),
    ];
    let found = select_pods(&pods, Some("management"), Some("agent"));
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    assert_eq!(found.targets.len(), 2);
    assert_eq!(found.targets[0].port, Some(9558));
    assert_eq!(found.targets[1].ip.to_string(), "fd00::2");
    let found = select_pods(&pods, None, None);
    assert_eq!(
        found.targets[0].port, None,
        "no port name: the fallback port applies"
    );
}

#[test]
fn skips_pods_that_cannot_answer_and_says_why() {
    let terminating = running("t", "10.0.0.3").replace(
        "metadata: { name: t }",
        "metadata: { name: t, deletionTimestamp: '2026-01-01T00:00:00Z' }",
    );
    let pending = running("p", "10.0.0.4").replace("phase: Running", "phase: Pending");
    let finished = running("f", "10.0.0.5").replace("phase: Running", "phase: Succeeded");
    let no_ip = running("n", "").replace("podIP: \"\"", "podIP: null");
    let crash = running("c", "10.0.0.6").replace(
        "state: { running: {} }",
        "state: { waiting: { reason: CrashLoopBackOff } }",
    );
    let not_started = running("s", "10.0.0.7").replace(
        "name: agent, state: { running: {} }",
        "name: app, state: { running: {} }",
    );
    let pods: Vec<Pod> = [terminating, pending, finished, no_ip, crash, not_started]
        .iter()
        .map(|y| pod(y))
        .collect();
    let found = select_pods(&pods, Some("management"), Some("agent"));
    assert!(found.targets.is_empty(), "{:?}", found.targets);
    let reasons: Vec<String> = found
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.target, s.reason))
        .collect();
    assert_eq!(
        reasons,
        [
            "pod t: terminating",
            "pod p: phase Pending, not Running",
            "pod f: phase Succeeded, not Running",
            "pod n: no pod IP yet",
            "pod c: container `agent` is waiting (CrashLoopBackOff)",
            "pod s: container `agent` is not running",
        ]
    );
    // Without container-name the waiting container is not a reason to skip.
    let crash = pod(&running("c", "10.0.0.6").replace(
        "state: { running: {} }",
        "state: { waiting: { reason: CrashLoopBackOff } }",
    ));
    assert_eq!(select_pods(&[crash], None, None).targets.len(), 1);
}

mod api {
    use super::*;
    use http_body_util::BodyExt;
    use kube::client::Body;

    type Handle = crate::testing::Handle<http::Request<Body>, http::Response<Body>>;

    fn mocked() -> (KubernetesDiscovery, Handle) {
        let (svc, handle) = crate::testing::pair::<http::Request<Body>, http::Response<Body>>();
        let client = Client::new(svc, "shop");
        (
            KubernetesDiscovery::with_client(client, "shop", "app=shop", Some("management"), None),
            handle,
        )
    }

    #[tokio::test]
    async fn lists_pods_by_label_in_the_namespace() {
        let (d, mut handle) = mocked();
        let server = tokio::spawn(async move {
            let (req, send) = handle.next_request().await.unwrap();
            assert_eq!(req.method(), http::Method::GET);
            let uri = req.uri().to_string();
            assert!(uri.starts_with("/api/v1/namespaces/shop/pods?"), "{uri}");
            assert!(uri.contains("labelSelector=app%3Dshop"), "{uri}");
            let pod: serde_json::Value = serde_yaml::from_str(&running("a", "10.0.0.1")).unwrap();
            let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]});
            send.send_response(
                http::Response::builder()
                    .body(Body::from(serde_json::to_vec(&list).unwrap()))
                    .unwrap(),
            );
        });
        let found = d.lookup().await.unwrap();
        server.await.unwrap();
        assert_eq!(found.targets.len(), 1);
        assert_eq!(found.targets[0].port, Some(9558));
    }

    #[tokio::test]
    async fn forbidden_says_which_verb_resource_and_role() {
        let (d, mut handle) = mocked();
        tokio::spawn(async move {
            let (_req, send) = handle.next_request().await.unwrap();
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "pods is forbidden: User \"system:serviceaccount:shop:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\"",
                "reason": "Forbidden", "code": 403
            });
            send.send_response(
                http::Response::builder()
                    .status(403)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
        });
        let e = d.lookup().await.unwrap_err().to_string();
        for needle in [
            "namespace `shop`",
            "verb `list`",
            "resource `pods`",
            "Role",
            "RoleBinding",
            "system:serviceaccount:shop:default",
        ] {
            assert!(e.contains(needle), "{needle} missing in: {e}");
        }
        let _ = Body::empty().collect().await;
    }
}
