//! The local control plane is a real Kubernetes: it starts, serves, enforces RBAC for
//! service-account tokens, and leaves nothing running when dropped.

use std::time::{Duration, Instant};

use e2e::ControlPlane;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

async fn token_for(client: &kube::Client, ns: &str, account: &str) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: named(account),
                ..Default::default()
            },
        )
        .await
        .expect("create the service account");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let issued: TokenRequest = accounts
        .create_subresource("token", account, &PostParams::default(), &request)
        .await
        .expect("TokenRequest");
    issued
        .status
        .and_then(|s| s.token)
        .expect("a token in the TokenRequest status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_serves_enforces_rbac_and_stops_cleanly() {
    let cp = ControlPlane::start().await.expect("control plane");
    let admin = cp.client().await.expect("admin client");
    println!(
        "control plane started in {:.1} s",
        cp.started_in.as_secs_f64()
    );

    let namespaces: Api<Namespace> = Api::all(admin.clone());
    namespaces
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: named("rbac-check"),
                ..Default::default()
            },
        )
        .await
        .expect("create a namespace");

    // A service account's token: authenticated, but without a Role it may not list pods.
    let token = token_for(&admin, "rbac-check", "reader").await;
    let reader = cp
        .client_with_token(&token, "rbac-check")
        .await
        .expect("token client");
    let pods: Api<Pod> = Api::default_namespaced(reader);
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("listing pods without a Role must be forbidden, got {other:?}"),
    }

    // Grant exactly that; RBAC then allows it.
    let roles: Api<Role> = Api::namespaced(admin.clone(), "rbac-check");
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: named("pod-reader"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["pods".into()]),
                    verbs: vec!["get".into(), "list".into()],
                    ..Default::default()
                }]),
            },
        )
        .await
        .expect("create the role");
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "rbac-check");
    bindings
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: named("reader-reads-pods"),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "Role".into(),
                    name: "pod-reader".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "reader".into(),
                    namespace: Some("rbac-check".into()),
                    ..Default::default()
                }]),
            },
        )
        .await
        .expect("create the binding");
    // RBAC caches are filled from watches: poll until the binding is seen.
    let start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        every.tick().await;
        match pods.list(&ListParams::default()).await {
            Ok(list) => {
                assert!(list.items.is_empty());
                break;
            }
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                panic!("the RoleBinding did not take effect: {e}")
            }
            Err(_) => {}
        }
    }

    let pids = cp.pids();
    let dir = cp.dir.clone();
    drop(cp);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "process {pid} still runs after drop"
        );
    }
    assert!(
        !dir.exists(),
        "the run folder is removed after a passing test"
    );
}
