//! The reconcile's exact API traffic, replayed against a tower-test mock of the API
//! server: a new ClusterSpec (every object read, then created by server-side apply in
//! order, the Secret and the agents' RoleBinding created once, the status written), the same cluster again (reads
//! only: no writes), and an invalid spec (only the status and a Warning event).

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::events::{Recorder, Reporter};
use node_agent::testing::{self as mock, Handle};
use serde_json::{Value, json};

use super::*;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// A ClusterSpec as the operator keeps it: with its finalizer (see
/// `a_new_cluster_spec_gets_the_finalizer_first`).
fn cluster(spec: Value) -> ClusterSpec {
    serde_json::from_value(json!({
        "apiVersion": "muster.dev/v1alpha1",
        "kind": "ClusterSpec",
        "metadata": {"name": "shop", "namespace": "prod", "uid": "u-1", "generation": 1,
            "resourceVersion": "7", "finalizers": [finalizer::FINALIZER]},
        "spec": spec,
    }))
    .expect("a ClusterSpec")
}

fn context() -> (Arc<Context>, ApiHandle) {
    context_with(false)
}

/// `network_policy`: the server keeps NetworkPolicy port ranges (Kubernetes ≥ 1.25).
fn context_with(network_policy: bool) -> (Arc<Context>, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some("test".into()),
    };
    let ctx = Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        agents: crate::agents::Agents::new(Duration::from_millis(200), Duration::from_millis(500)),
        metrics: Metrics::new(),
        pdb_supported: false,
        retention_supported: false,
        network_policy_supported: network_policy,
        operator_namespace: "muster-system".into(),
        reconcile_timeout: RECONCILE_TIMEOUT,
        concurrency: CONCURRENCY,
        secret_refresh: SECRET_REFRESH,
        failures: Default::default(),
        written: Default::default(),
        nodes_forbidden: Default::default(),
        handover_since: Default::default(),
        lost_since: Default::default(),
        fence: held(),
        delay_before_delete: Duration::ZERO,
    };
    (Arc::new(ctx), handle)
}

/// A fence that holds (for the length of a test).
fn held() -> crate::leader::Fence {
    let fence = crate::leader::Fence::default();
    fence.renewed(std::time::Instant::now());
    fence
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("a time")
}

/// One recorded request: method, path with query, JSON body.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    uri: String,
    body: Value,
}

const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","message":"not found","code":404}"#;

/// Answers every request with `answer` until the reconcile ends; returns the calls.
async fn serve(
    mut handle: ApiHandle,
    reconcile: tokio::task::JoinHandle<Result<Action, Error>>,
    answer: impl Fn(&Call) -> (u16, Value),
) -> (Vec<Call>, Result<Action, Error>) {
    serve_with(&mut handle, reconcile, answer).await
}

/// [`serve`], the mock API server kept for another reconcile.
async fn serve_with(
    handle: &mut ApiHandle,
    reconcile: tokio::task::JoinHandle<Result<Action, Error>>,
    answer: impl Fn(&Call) -> (u16, Value),
) -> (Vec<Call>, Result<Action, Error>) {
    let mut calls = Vec::new();
    tokio::pin!(reconcile);
    loop {
        tokio::select! {
            done = &mut reconcile => return (calls, done.expect("the reconcile task")),
            next = handle.next_request() => {
                let (request, send) = next.expect("a request");
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.expect("body");
                let call = Call {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let (code, value) = answer(&call);
                let text = if code == 404 { NOT_FOUND.to_owned() } else { value.to_string() };
                send.send_response(
                    Response::builder()
                        .status(code)
                        .body(Body::from(text.into_bytes()))
                        .expect("a response"),
                );
                calls.push(call);
            }
        }
    }
}

/// The API server of an empty namespace: nothing exists, writes echo their body.
fn empty_namespace(call: &Call) -> (u16, Value) {
    match call.method.as_str() {
        "GET" if call.uri.contains("/pods?") => (
            200,
            json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}),
        ),
        "GET" => (404, Value::Null),
        // The finalizers: the whole object, with them.
        "PATCH" if call.uri.contains("/clusterspecs/shop?") => (
            200,
            json!({
                "apiVersion": "muster.dev/v1alpha1",
                "kind": "ClusterSpec",
                "metadata": {"name": "shop", "namespace": "prod",
                    "finalizers": call.body["metadata"]["finalizers"]},
                "spec": {},
            }),
        ),
        // The status subresource answers with the whole object.
        "PATCH" if call.uri.contains("/status?") => (
            200,
            json!({
                "apiVersion": "muster.dev/v1alpha1",
                "kind": "ClusterSpec",
                "metadata": {"name": "shop", "namespace": "prod"},
                "spec": {},
                "status": call.body["status"],
            }),
        ),
        _ => (200, call.body.clone()),
    }
}

fn summary(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            let path = c.uri.split('?').next().unwrap_or_default();
            let path = path
                .trim_start_matches("/api/v1/namespaces/prod/")
                .trim_start_matches("/apis/");
            format!("{} {path}", c.method)
        })
        .collect()
}

#[tokio::test]
async fn a_new_cluster_spec_creates_everything_in_order_then_reports() {
    let (ctx, handle) = context();
    let cs = cluster(json!({"replicas": 3}));
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (calls, result) = serve(handle, task, empty_namespace).await;
    let action = result.expect("reconciled");
    assert_eq!(
        action,
        Action::requeue(BUSY_REQUEUE),
        "forming: looked at again soon"
    );
    assert_eq!(
        summary(&calls),
        [
            "GET apps/v1/namespaces/prod/statefulsets/shop",
            "GET pods",
            // Everything under the cluster's names is read before anything is written.
            "GET serviceaccounts/shop",
            "GET rbac.authorization.k8s.io/v1/namespaces/prod/roles/shop",
            "GET rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings/shop",
            "GET services/shop",
            "GET configmaps/shop",
            "GET secrets/shop-cluster-key",
            "GET coordination.k8s.io/v1/namespaces/prod/leases/shop-formation",
            "POST secrets",
            "POST coordination.k8s.io/v1/namespaces/prod/leases",
            "PATCH serviceaccounts/shop",
            "PATCH rbac.authorization.k8s.io/v1/namespaces/prod/roles/shop",
            "POST rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings",
            "PATCH services/shop",
            "PATCH configmaps/shop",
            "PATCH apps/v1/namespaces/prod/statefulsets/shop",
            "PATCH muster.dev/v1alpha1/namespaces/prod/clusterspecs/shop/status",
        ]
    );
    let record = calls
        .iter()
        .find(|c| c.method == "POST" && c.uri.contains("/leases"))
        .expect("the formation record");
    assert_eq!(record.body["metadata"]["name"], "shop-formation");
    assert_eq!(record.body["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert!(
        record.body["spec"].get("holderIdentity").is_none(),
        "auto, not formed: open for the agent that forms"
    );
    // It names the ConfigMap whose key agents read from the API server when they claim
    // it: the one made here, which the agents' Role lets them get (and nothing else).
    assert_eq!(
        record.body["metadata"]["annotations"]["muster.dev/new-cluster-enabled-config-map"],
        "shop"
    );
    let role = calls
        .iter()
        .find(|c| c.method == "PATCH" && c.uri.contains("/roles/shop"))
        .expect("the agents' Role");
    assert!(
        role.body["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .any(|r| r["resources"] == json!(["configmaps"])
                && r["resourceNames"] == json!(["shop"])
                && r["verbs"] == json!(["get"])),
        "{}",
        role.body["rules"]
    );
    for c in calls.iter().filter(|c| c.method == "PATCH") {
        assert!(
            c.uri.contains("fieldManager=muster-operator") && c.uri.contains("force=true"),
            "server-side apply, one field manager, forced: {}",
            c.uri
        );
        if !c.uri.contains("/status?") {
            assert_eq!(
                c.body["metadata"]["ownerReferences"][0]["uid"], "u-1",
                "owned by the ClusterSpec: {}",
                c.uri
            );
        }
    }
    let config = calls
        .iter()
        .find(|c| c.uri.contains("configmaps/shop") && c.method == "PATCH")
        .expect("the ConfigMap");
    assert_eq!(
        config.body["data"]["new-cluster-enabled"], "true",
        "not formed yet: forming allowed"
    );
    let secret = calls
        .iter()
        .find(|c| c.method == "POST")
        .expect("the Secret");
    assert_eq!(secret.body["metadata"]["name"], "shop-cluster-key");
    let status = &calls.last().expect("status").body["status"];
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["requiredContactPoints"], 3);
    assert_eq!(status["newClusterEnabled"], true);
    assert_eq!(status["observedGeneration"], 1);
}

/// Reconciles `cs` in an empty namespace; what it left behind, by path (as GETs find
/// it), and `cs` with the status it wrote.
async fn first_reconcile(
    cs: &ClusterSpec,
) -> (std::collections::BTreeMap<String, Value>, ClusterSpec) {
    let (ctx, handle) = context();
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (first, _) = serve(handle, task, empty_namespace).await;
    let mut stored: std::collections::BTreeMap<String, Value> = first
        .iter()
        .filter(|c| c.method != "GET")
        .map(|c| {
            (
                c.uri.split('?').next().unwrap_or_default().to_owned(),
                c.body.clone(),
            )
        })
        .collect();
    let secret = stored
        .remove("/api/v1/namespaces/prod/secrets")
        .expect("the Secret");
    stored.insert(
        "/api/v1/namespaces/prod/secrets/shop-cluster-key".into(),
        secret,
    );
    let record = stored
        .remove("/apis/coordination.k8s.io/v1/namespaces/prod/leases")
        .expect("the formation record");
    stored.insert(
        "/apis/coordination.k8s.io/v1/namespaces/prod/leases/shop-formation".into(),
        record,
    );
    let binding = stored
        .remove("/apis/rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings")
        .expect("the RoleBinding");
    stored.insert(
        "/apis/rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings/shop".into(),
        binding,
    );
    let status = stored
        .remove("/apis/muster.dev/v1alpha1/namespaces/prod/clusterspecs/shop/status")
        .expect("status")["status"]
        .clone();
    let mut again = cs.clone();
    again.status = Some(serde_json::from_value(status).expect("a status"));
    (stored, again)
}

/// Reconciles `cs` an hour later against `stored`; the calls it made.
async fn reconcile_again(
    cs: ClusterSpec,
    stored: std::collections::BTreeMap<String, Value>,
) -> Vec<Call> {
    let (ctx, handle) = context();
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let later = now()
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(3600))
                .expect("a time");
            reconcile_once(&cs, &ctx, later).await
        }
    });
    let (calls, result) = serve(handle, task, |call| {
        let path = call.uri.split('?').next().unwrap_or_default();
        match (call.method.as_str(), stored.get(path)) {
            ("GET", Some(obj)) => (200, obj.clone()),
            _ => empty_namespace(call),
        }
    })
    .await;
    result.expect("reconciled");
    calls
}

#[tokio::test]
async fn an_unchanged_cluster_is_read_but_not_written() {
    let (stored, again) = first_reconcile(&cluster(json!({"replicas": 3}))).await;
    let calls = reconcile_again(again, stored).await;
    let writes: Vec<&Call> = calls.iter().filter(|c| c.method != "GET").collect();
    assert!(writes.is_empty(), "no writes: {writes:?}");
    assert_eq!(calls.len(), 9, "reads: {:?}", summary(&calls));
}

#[tokio::test]
async fn the_agents_role_binding_is_only_ever_created() {
    let (stored, again) = first_reconcile(&cluster(json!({"replicas": 3}))).await;
    let path = "/apis/rbac.authorization.k8s.io/v1/namespaces/prod/rolebindings/shop";
    // Other labels (an older operator's): what it grants is the same, nothing written.
    let mut relabelled = stored.clone();
    relabelled.get_mut(path).expect("the binding")["metadata"]["labels"] = json!({"a": "b"});
    let calls = reconcile_again(again.clone(), relabelled).await;
    let writes: Vec<&Call> = calls.iter().filter(|c| c.method != "GET").collect();
    assert!(writes.is_empty(), "no writes: {writes:?}");
    // Someone added a subject, or took the agents' away: the operator, which may not
    // change RoleBindings, writes nothing but says so (and writes no pods over it).
    for subjects in [
        json!([{"kind": "ServiceAccount", "name": "shop", "namespace": "prod"},
               {"kind": "ServiceAccount", "name": "other", "namespace": "prod"}]),
        json!([]),
    ] {
        let mut edited = stored.clone();
        edited.get_mut(path).expect("the binding")["subjects"] = subjects.clone();
        let (ctx, handle) = context();
        let task = tokio::spawn({
            let (cs, ctx) = (again.clone(), ctx.clone());
            async move { reconcile_once(&cs, &ctx, now()).await }
        });
        let (calls, result) = serve(handle, task, move |call: &Call| {
            let at = call.uri.split('?').next().unwrap_or_default();
            match (call.method.as_str(), edited.get(at)) {
                ("GET", Some(obj)) => (200, obj.clone()),
                _ => empty_namespace(call),
            }
        })
        .await;
        let message = only_a_conflict_reported(&calls, result, &subjects.to_string());
        assert!(
            message.contains("RoleBinding shop was changed"),
            "{message}"
        );
    }
}

/// A RoleBinding made under the cluster's name between the operator's read and its
/// create: nothing after it is written (permissions before pods), and the reconcile
/// fails, so that the next one reads whose it is.
#[tokio::test]
async fn a_role_binding_made_meanwhile_stops_the_writes_after_it() {
    let (ctx, handle) = context();
    let cs = cluster(json!({"replicas": 3}));
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (calls, result) = serve(handle, task, |call: &Call| {
        if call.method == "POST" && call.uri.contains("/rolebindings") {
            return (
                409,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "AlreadyExists", "code": 409,
                       "message": "rolebindings.rbac.authorization.k8s.io \"shop\" already exists"}),
            );
        }
        empty_namespace(call)
    })
    .await;
    assert!(result.is_err(), "{result:?}");
    let after: Vec<String> = summary(&calls)
        .into_iter()
        .skip_while(|c| !c.contains("rolebindings") || c.starts_with("GET"))
        .skip(1)
        .collect();
    assert!(
        after.iter().all(|c| !c.contains("statefulsets")
            && !c.contains("configmaps")
            && !c.contains("services")),
        "written after the refused binding: {after:?}"
    );
}

#[tokio::test]
async fn an_older_operators_formation_record_is_made_to_name_the_config_map() {
    let (mut stored, again) = first_reconcile(&cluster(json!({"replicas": 3}))).await;
    let record = stored
        .get_mut("/apis/coordination.k8s.io/v1/namespaces/prod/leases/shop-formation")
        .expect("the formation record");
    record["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("annotations");
    let calls = reconcile_again(again, stored).await;
    let writes: Vec<&Call> = calls.iter().filter(|c| c.method != "GET").collect();
    assert_eq!(writes.len(), 1, "the record alone: {writes:?}");
    assert_eq!(writes[0].method, "PUT");
    assert!(
        writes[0].uri.contains("/leases/shop-formation"),
        "{}",
        writes[0].uri
    );
    assert_eq!(
        writes[0].body["metadata"]["annotations"]["muster.dev/new-cluster-enabled-config-map"],
        "shop"
    );
    assert!(
        writes[0].body["spec"].get("holderIdentity").is_none(),
        "its holder as it was"
    );
}

#[tokio::test]
async fn claim_templates_as_the_server_spells_them_are_not_written_again() {
    let spec = json!({"replicas": 3, "volumeClaimTemplates": [{
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1024Mi"}}},
    }]});
    let (mut stored, again) = first_reconcile(&cluster(spec)).await;
    // The API server keeps its own spelling of the size, a volume mode and a status.
    let set = stored
        .get_mut("/apis/apps/v1/namespaces/prod/statefulsets/shop")
        .expect("the StatefulSet");
    let template = &mut set["spec"]["volumeClaimTemplates"][0];
    assert_eq!(
        template["spec"]["resources"]["requests"]["storage"],
        "1024Mi"
    );
    template["spec"]["resources"]["requests"]["storage"] = json!("1Gi");
    template["spec"]["volumeMode"] = json!("Filesystem");
    template["status"] = json!({"phase": "Pending"});
    let calls = reconcile_again(again, stored).await;
    let writes: Vec<&Call> = calls.iter().filter(|c| c.method != "GET").collect();
    assert!(writes.is_empty(), "no writes: {writes:?}");
}

#[tokio::test]
async fn an_invalid_spec_changes_nothing_but_the_status() {
    let (ctx, handle) = context();
    let cs = cluster(json!({"replicas": 2, "bootstrap": {"requiredContactPoints": 5}}));
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (calls, result) = serve(handle, task, empty_namespace).await;
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(QUIET_REQUEUE),
        "waits for a change"
    );
    assert_eq!(
        summary(&calls),
        [
            "GET apps/v1/namespaces/prod/statefulsets/shop",
            "GET pods",
            "PATCH muster.dev/v1alpha1/namespaces/prod/clusterspecs/shop/status",
            "POST events.k8s.io/v1/namespaces/prod/events",
        ]
    );
    let degraded = degraded(&calls[2].body["status"]);
    assert_eq!(degraded["reason"], "InvalidSpec");
    assert!(
        degraded["message"]
            .as_str()
            .expect("text")
            .contains("spec.bootstrap.requiredContactPoints")
    );
    assert_eq!(calls[3].body["type"], "Warning");
    assert_eq!(calls[3].body["reason"], "InvalidSpec");
}

/// Asserts that the reconcile wrote only its status (Degraded, reason
/// `ObjectConflict`) and a Warning Event; returns the condition's message.
fn only_a_conflict_reported(calls: &[Call], result: Result<Action, Error>, what: &str) -> String {
    assert_eq!(result.expect("reconciled"), Action::requeue(QUIET_REQUEUE));
    let writes: Vec<String> = summary(calls)
        .into_iter()
        .filter(|c| !c.starts_with("GET"))
        .collect();
    assert_eq!(
        writes,
        [
            "PATCH muster.dev/v1alpha1/namespaces/prod/clusterspecs/shop/status",
            "POST events.k8s.io/v1/namespaces/prod/events",
        ],
        "{what}"
    );
    let degraded = degraded(&calls[calls.len() - 2].body["status"]);
    assert_eq!(degraded["reason"], "ObjectConflict");
    degraded["message"].as_str().expect("text").to_owned()
}

/// The Degraded condition of a written status.
fn degraded(status: &Value) -> Value {
    status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "Degraded")
        .expect("Degraded")
        .clone()
}

/// The API server of a namespace where a ServiceAccount named like the ClusterSpec
/// exists already, with `owners` as its owner references.
fn namespace_with_service_account(owners: Value) -> impl Fn(&Call) -> (u16, Value) {
    move |call: &Call| {
        if call.method == "GET"
            && call
                .uri
                .starts_with("/api/v1/namespaces/prod/serviceaccounts/shop")
        {
            return (
                200,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "shop", "namespace": "prod", "uid": "sa-1",
                                    "ownerReferences": owners}}),
            );
        }
        empty_namespace(call)
    }
}

#[tokio::test]
async fn an_object_of_someone_else_under_the_clusters_name_is_never_touched() {
    for (owners, says) in [
        (json!(null), "not made by this operator"),
        (
            json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop", "uid": "d-1", "controller": true}]),
            "belongs to Deployment shop",
        ),
        (
            json!([{"apiVersion": "muster.dev/v1alpha1", "kind": "ClusterSpec", "name": "shop", "uid": "u-0", "controller": true}]),
            "earlier ClusterSpec of this name (uid u-0)",
        ),
        (
            // Owned, but not controlled, by this ClusterSpec: still not its own.
            json!([{"apiVersion": "muster.dev/v1alpha1", "kind": "ClusterSpec", "name": "shop", "uid": "u-1"}]),
            "not made by this operator",
        ),
    ] {
        let (ctx, handle) = context();
        let cs = cluster(json!({"replicas": 3}));
        let task = tokio::spawn({
            let (cs, ctx) = (cs.clone(), ctx.clone());
            async move { reconcile_once(&cs, &ctx, now()).await }
        });
        let (calls, result) = serve(handle, task, namespace_with_service_account(owners)).await;
        let message = only_a_conflict_reported(
            &calls,
            result,
            &format!("nothing created or changed, not even the Secret: {says}"),
        );
        assert!(
            message.contains("ServiceAccount shop exists") && message.contains(says),
            "{message}"
        );
        let event = &calls[calls.len() - 1].body;
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["reason"], "ObjectConflict");
    }
}

#[tokio::test]
async fn a_cluster_spec_being_deleted_is_left_to_the_garbage_collector() {
    // Without the finalizer (removed already): nothing is read or written.
    let (ctx, handle) = context();
    let mut cs = cluster(json!({"replicas": 3}));
    cs.metadata.finalizers = None;
    cs.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (calls, result) = serve(handle, task, empty_namespace).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert!(calls.is_empty(), "{:?}", summary(&calls));
}

#[tokio::test]
async fn a_new_cluster_spec_gets_the_finalizer_first() {
    let (ctx, handle) = context();
    let mut cs = cluster(json!({"replicas": 3}));
    cs.metadata.finalizers = Some(vec!["example.com/backup".into()]);
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (calls, result) = serve(handle, task, empty_namespace).await;
    result.expect("reconciled");
    let first = &calls[0];
    assert_eq!(
        (first.method.as_str(), summary(&calls)[0].as_str()),
        (
            "PATCH",
            "PATCH muster.dev/v1alpha1/namespaces/prod/clusterspecs/shop"
        )
    );
    assert_eq!(
        first.body,
        json!({"metadata": {"finalizers": ["example.com/backup", finalizer::FINALIZER],
            "resourceVersion": "7"}}),
        "beside the others, at the version read"
    );
}

/// A deleted ClusterSpec: with its Secret (the token) and a member Up, the cluster is
/// asked to prepare for a full shutdown before the finalizer goes; deleted with
/// `--cascade=orphan`, its pods stay and nothing is asked.
#[tokio::test]
async fn a_deleted_cluster_spec_without_a_cluster_to_ask_lets_the_deletion_go_on() {
    for orphan in [false, true] {
        let (ctx, handle) = context();
        let mut cs = cluster(json!({"replicas": 3}));
        cs.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        if orphan {
            cs.metadata
                .finalizers
                .get_or_insert_default()
                .insert(0, "orphan".into());
        }
        let task = tokio::spawn({
            let ctx = ctx.clone();
            async move { reconcile_once(&cs, &ctx, now()).await }
        });
        let (calls, result) = serve(handle, task, empty_namespace).await;
        assert_eq!(result.expect("reconciled"), Action::await_change());
        let expected: Vec<&str> = if orphan {
            vec!["PATCH muster.dev/v1alpha1/namespaces/prod/clusterspecs/shop"]
        } else {
            // No Secret: no token, nobody asked.
            vec![
                "GET secrets/shop-cluster-key",
                "PATCH muster.dev/v1alpha1/namespaces/prod/clusterspecs/shop",
            ]
        };
        assert_eq!(summary(&calls), expected);
        let kept: Vec<&str> = if orphan { vec!["orphan"] } else { vec![] };
        assert_eq!(
            calls.last().expect("a call").body["metadata"]["finalizers"],
            json!(kept),
            "only the operator's own finalizer is removed"
        );
    }
}

#[tokio::test]
async fn failed_reconciles_back_off_per_cluster_and_a_success_resets() {
    assert_eq!(retry_after(0), RETRY_FIRST);
    assert_eq!(retry_after(1), RETRY_FIRST);
    assert_eq!(retry_after(4), RETRY_FIRST * 8);
    assert_eq!(retry_after(30), RETRY_MAX);
    assert_eq!(retry_after(u32::MAX), RETRY_MAX);
    let (ctx, _handle) = context();
    let shop = Arc::new(cluster(json!({"replicas": 3})));
    let mut other = cluster(json!({"replicas": 3}));
    other.metadata.name = Some("other".into());
    let other = Arc::new(other);
    let err = Error::NoNamespace;
    let waits: Vec<Action> = (0..3)
        .map(|_| error_policy(shop.clone(), &err, ctx.clone()))
        .collect();
    let secs = |s| Action::requeue(Duration::from_secs(s));
    assert_eq!(waits, [secs(1), secs(2), secs(4)]);
    assert_eq!(
        error_policy(other.clone(), &err, ctx.clone()),
        secs(1),
        "another ClusterSpec's failures do not count"
    );
    ctx.succeeded(&shop);
    assert_eq!(error_policy(shop, &err, ctx), secs(1));
}

#[tokio::test]
async fn a_paused_cluster_spec_gets_one_status_write_and_nothing_else() {
    let (ctx, handle) = context();
    let mut cs = cluster(json!({"replicas": 3}));
    cs.metadata.annotations = Some(std::collections::BTreeMap::from([(
        crate::status::PAUSE_ANNOTATION.to_owned(),
        "true".to_owned(),
    )]));
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (calls, result) = serve(handle, task, empty_namespace).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert_eq!(
        summary(&calls),
        [
            "PATCH muster.dev/v1alpha1/namespaces/prod/clusterspecs/shop/status",
            "POST events.k8s.io/v1/namespaces/prod/events",
        ],
        "no reads of the world, no objects applied"
    );
    assert_eq!(calls[0].body["status"]["phase"], "Paused");
    assert_eq!(calls[1].body["reason"], "ReconciliationPaused");

    // Once the status says so, a paused reconcile makes no call at all, also after the
    // spec was edited (a new generation).
    let (ctx, handle) = context();
    cs.status = Some(serde_json::from_value(calls[0].body["status"].clone()).expect("a status"));
    cs.metadata.generation = Some(cs.metadata.generation.unwrap_or(1) + 1);
    let task = tokio::spawn({
        let ctx = ctx.clone();
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (calls, result) = serve(handle, task, empty_namespace).await;
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert!(calls.is_empty(), "{:?}", summary(&calls));
}

#[test]
fn the_server_version_is_read_from_git_version_when_minor_is_not_a_number() {
    assert!(super::at_least("1", "27", "v1.27.0", (1, 27)));
    assert!(super::at_least("1", "30+", "v1.30.2-eks-1", (1, 27)));
    assert!(!super::at_least("1", "26", "v1.26.9", (1, 27)));
    assert!(super::at_least("", "", "v1.28.3-gke.100", (1, 27)));
    assert!(!super::at_least("1", "", "v1.25.1", (1, 27)));
    assert!(super::at_least("2", "0", "", (1, 27)));
    assert!(!super::at_least("", "", "unknown", (1, 27)));
}

/// With NetworkPolicy on the server, the namespace's policies are listed once: where none
/// applies to the pods, the cluster's opens their other ports to all (as they were);
/// where one does (a default deny), it adds the agents' ports only.
#[tokio::test]
async fn the_network_policy_leaves_the_other_ports_as_they_were() {
    let policy_of = |others: Value| async move {
        let (ctx, handle) = context_with(true);
        let cs = cluster(json!({"replicas": 3}));
        // The context outlives the task: its client is the mock's other end.
        let task = tokio::spawn({
            let ctx = ctx.clone();
            async move { reconcile_once(&cs, &ctx, now()).await }
        });
        let (calls, result) = serve(handle, task, move |call| {
            if call.method == "GET" && call.uri.contains("/networkpolicies?") {
                (200, json!({"kind": "NetworkPolicyList", "apiVersion": "networking.k8s.io/v1", "metadata": {}, "items": others.clone()}))
            } else {
                empty_namespace(call)
            }
        })
        .await;
        result.expect("reconciled");
        let order = summary(&calls);
        let at = |what: &str| order.iter().position(|c| c == what);
        let policy = at("PATCH networking.k8s.io/v1/namespaces/prod/networkpolicies/shop")
            .expect("the NetworkPolicy applied");
        assert!(
            policy < at("PATCH apps/v1/namespaces/prod/statefulsets/shop").expect("the pods"),
            "before the pods: {order:?}"
        );
        assert_eq!(
            order
                .iter()
                .filter(|c| c.contains("networkpolicies"))
                .count(),
            2,
            "one list, one apply: {order:?}"
        );
        calls[policy].body["spec"]["ingress"].clone()
    };
    let open = policy_of(json!([])).await;
    let rules = open.as_array().expect("rules");
    assert_eq!(rules.len(), 3, "{open}");
    assert_eq!(
        rules[0]["from"][0]["podSelector"]["matchLabels"]["muster.dev/cluster"],
        "shop"
    );
    assert_eq!(
        rules[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "muster-system"
    );
    assert_eq!(rules[2].get("from"), None, "every other port from anywhere");
    assert_eq!(
        rules[2]["ports"][2],
        json!({"protocol": "TCP", "port": 8559, "endPort": 65535})
    );
    let deny_all = json!([{"metadata": {"name": "default-deny", "namespace": "prod"}, "spec": {"podSelector": {}}}]);
    let closed = policy_of(deny_all).await;
    assert_eq!(
        closed.as_array().map(Vec::len),
        Some(2),
        "the agents' ports only: {closed}"
    );
}

/// A reconcile that starts before the watch delivered the operator's own status write
/// sees the ClusterSpec as it was: the status it would write is the one it wrote, so
/// nothing is written (nor announced) again.
#[tokio::test]
async fn a_view_older_than_the_operators_own_status_write_writes_nothing_again() {
    let mut cs = cluster(json!({"replicas": 3}));
    cs.metadata.resource_version = Some("5".into());
    let (stored, _) = first_reconcile(&cs).await;
    let (ctx, mut handle) = context();
    // The first reconcile, with the context kept: the server stores its status as
    // resource version 6.
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let answer = |call: &Call| {
        let path = call.uri.split('?').next().unwrap_or_default();
        match (call.method.as_str(), stored.get(path)) {
            ("GET", Some(obj)) => (200, obj.clone()),
            ("PATCH", _) if call.uri.contains("/status?") => {
                let (code, mut obj) = empty_namespace(call);
                obj["metadata"]["resourceVersion"] = json!("6");
                obj["metadata"]["uid"] = json!("u-1");
                (code, obj)
            }
            _ => empty_namespace(call),
        }
    };
    let (first, _) = serve_with(&mut handle, task, answer).await;
    assert!(
        first.iter().any(|c| c.uri.contains("/status?")),
        "the first reconcile writes the status: {:?}",
        summary(&first)
    );
    // The same, still unchanged view (resource version 5) again.
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (again, result) = serve_with(&mut handle, task, answer).await;
    result.expect("reconciled");
    let writes: Vec<String> = summary(&again)
        .into_iter()
        .filter(|c| !c.starts_with("GET"))
        .collect();
    assert!(writes.is_empty(), "nothing written again: {writes:?}");

    // A view at or past the write is taken as it is: a status someone else changed
    // since is written back.
    let task = tokio::spawn({
        let mut cs = cs.clone();
        cs.metadata.resource_version = Some("7".into());
        let ctx = ctx.clone();
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (later, _) = serve_with(&mut handle, task, answer).await;
    assert!(
        later.iter().any(|c| c.uri.contains("/status?")),
        "a newer view without the status gets it again: {:?}",
        summary(&later)
    );
}

/// An operator upgraded without its RBAC (the ClusterRole from before NetworkPolicies)
/// is refused every NetworkPolicy request: the cluster is still reconciled, without a
/// policy, and the condition says why and what to do. With the policy turned off, the
/// namespace's policies are not listed (only the cluster's own name is read, to remove
/// one made earlier).
#[tokio::test]
async fn network_policies_the_operator_may_not_read_are_reported_not_fatal() {
    const FORBIDDEN: &str = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Forbidden","message":"networkpolicies.networking.k8s.io is forbidden","code":403}"#;
    let run = |spec: Value| async move {
        let (ctx, handle) = context_with(true);
        let cs = cluster(spec);
        let task = tokio::spawn({
            let ctx = ctx.clone();
            async move { reconcile_once(&cs, &ctx, now()).await }
        });
        let (calls, result) = serve(handle, task, |call| {
            if call.uri.contains("/networkpolicies") {
                (403, serde_json::from_str(FORBIDDEN).expect("JSON"))
            } else {
                empty_namespace(call)
            }
        })
        .await;
        (summary(&calls), calls, result)
    };
    let policy_calls = |order: &[String]| -> Vec<String> {
        order
            .iter()
            .filter(|c| c.contains("networkpolicies"))
            .cloned()
            .collect()
    };
    let (order, calls, result) = run(json!({"replicas": 3})).await;
    result.expect("reconciled without the policy");
    assert!(
        order
            .iter()
            .any(|c| c == "PATCH apps/v1/namespaces/prod/statefulsets/shop"),
        "{order:?}"
    );
    assert_eq!(
        policy_calls(&order),
        ["GET networking.k8s.io/v1/namespaces/prod/networkpolicies"]
    );
    let status = &calls.last().expect("status").body["status"];
    let condition = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == "NetworkPolicy")
        .expect("the NetworkPolicy condition");
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "Forbidden");
    let message = condition["message"].as_str().unwrap_or_default();
    assert!(message.contains("manifests/operator.yaml"), "{message}");

    let (order, _, result) = run(json!({"replicas": 3, "networkPolicy": {"enabled": false}})).await;
    result.expect("reconciled");
    assert_eq!(
        policy_calls(&order),
        ["GET networking.k8s.io/v1/namespaces/prod/networkpolicies/shop"],
        "the cluster's own name only"
    );
}

/// A status write (the operator's own) does not start a reconcile; a change of the
/// spec, the labels, the annotations (the pause switch) or a deletion does.
#[test]
fn only_what_a_user_changes_starts_a_reconcile() {
    let cs = cluster(json!({"replicas": 3}));
    let key = starts_a_reconcile(&cs);
    let mut with_status = cs.clone();
    with_status.status = Some(crate::ClusterSpecStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    with_status.metadata.resource_version = Some("9".into());
    assert_eq!(starts_a_reconcile(&with_status), key);
    let changed = |f: &dyn Fn(&mut ClusterSpec)| {
        let mut c = cs.clone();
        f(&mut c);
        starts_a_reconcile(&c)
    };
    assert_ne!(changed(&|c| c.metadata.generation = Some(2)), key);
    assert_ne!(
        changed(&|c| {
            c.metadata.annotations =
                Some([(status::PAUSE_ANNOTATION.to_owned(), "true".to_owned())].into());
        }),
        key
    );
    assert_ne!(
        changed(&|c| c.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into())),
        key
    );
    assert_ne!(changed(&|c| c.metadata.uid = Some("u-2".into())), key);
    assert_ne!(
        changed(&|c| c.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()))),
        key
    );
}

#[tokio::test]
async fn a_cluster_with_tls_gets_its_ca_and_certificate_before_its_pods() {
    let (ctx, handle) = context();
    let cs = cluster(json!({"replicas": 3, "tls": {"enabled": true}}));
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    let (calls, result) = serve(handle, task, empty_namespace).await;
    result.expect("reconciled");
    let steps = summary(&calls);
    let at = |step: &str| {
        steps
            .iter()
            .position(|s| s == step)
            .unwrap_or_else(|| panic!("no {step}: {steps:?}"))
    };
    // The CA is read before any agent could be asked; both Secrets are read with the
    // other objects before anything is written.
    assert!(at("GET secrets/shop-muster-ca") < at("GET secrets/shop-muster-tls"));
    assert!(at("GET secrets/shop-muster-tls") < at("POST secrets"));
    let posted: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "POST" && c.uri.contains("/secrets"))
        .collect();
    let names: Vec<&str> = posted
        .iter()
        .map(|c| c.body["metadata"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["shop-cluster-key", "shop-muster-ca", "shop-muster-tls"]
    );
    let last_post = calls
        .iter()
        .rposition(|c| c.method == "POST" && c.uri.contains("/secrets"))
        .expect("posts");
    assert!(
        last_post < at("PATCH apps/v1/namespaces/prod/statefulsets/shop"),
        "the certificate exists before the pods: {steps:?}"
    );
    let (ca, tls) = (&posted[1].body, &posted[2].body);
    assert_eq!(ca["immutable"], true);
    assert_eq!(ca["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert_eq!(tls["type"], "kubernetes.io/tls");
    assert!(tls["data"].get("ca.key").is_none(), "{tls}");
    assert_eq!(
        tls["data"]["ca.crt"], ca["data"]["ca.crt"],
        "the agents trust the cluster's CA"
    );
    // Events say what was made.
    let reasons: Vec<&str> = calls
        .iter()
        .filter(|c| c.uri.contains("/events"))
        .filter_map(|c| c.body["reason"].as_str())
        .collect();
    assert_eq!(reasons, ["TlsCaCreated", "TlsCertificateIssued"]);
    // The status says what the agents carry and when it ends.
    let tls = &calls.last().expect("status").body["status"]["tls"];
    assert_eq!(tls["serverName"], "shop.prod.muster");
    let ends = |field: &str| tls[field].as_str().unwrap_or_default().to_owned();
    assert!(ends("certificateNotAfter") < ends("caNotAfter"), "{tls}");
    assert!(ends("certificateNotAfter").starts_with("20"), "{tls}");
}

/// A reconcile of a TLS cluster whose StatefulSet (with the TLS volume) has one pod in
/// `pod_status` and whose TLS Secrets are gone: the calls and the result.
async fn tls_secrets_gone(pod_status: Value) -> (Vec<Call>, Result<Action, Error>) {
    let (ctx, handle) = context();
    let cs = cluster(json!({"replicas": 1, "tls": {"enabled": true}}));
    let set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "shop", "namespace": "prod", "uid": "s-1",
            "ownerReferences": [{"apiVersion": "muster.dev/v1alpha1", "kind": "ClusterSpec",
                "name": "shop", "uid": "u-1", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"muster.dev/cluster": "shop"}},
            "serviceName": "shop",
            "template": {"spec": {"containers": [], "volumes": [
                {"name": "muster-tls", "secret": {"secretName": "shop-muster-tls"}}]}}},
    });
    let pods = one_pod(pod_status);
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    serve(handle, task, |call| match call.method.as_str() {
        "GET" if call.uri.contains("/statefulsets/shop") => (200, set.clone()),
        "GET" if call.uri.contains("/pods?") => (200, pods.clone()),
        _ => empty_namespace(call),
    })
    .await
}

/// The PodList of the StatefulSet "shop" (uid s-1) with one pod in `status`, which
/// mounts the agents' TLS Secret.
fn one_pod(status: Value) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
        "metadata": {"name": "shop-0", "namespace": "prod",
            "labels": {"muster.dev/cluster": "shop"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                "name": "shop", "uid": "s-1", "controller": true}]},
        "spec": {"containers": [], "volumes": [
            {"name": "muster-tls", "secret": {"secretName": "shop-muster-tls"}}]},
        "status": status,
    }]})
}

fn secrets_made(calls: &[Call]) -> Vec<&Value> {
    calls
        .iter()
        .filter(|c| c.method == "POST" && c.uri.contains("/secrets"))
        .map(|c| &c.body["metadata"]["name"])
        .collect()
}

#[tokio::test]
async fn tls_secrets_gone_under_running_pods_are_not_made_anew() {
    let agent = |state: Value| {
        json!({"podIP": "127.36.4.1", "containerStatuses": [{"name": "agent", "ready": false,
            "restartCount": 0, "image": "agent:1", "imageID": "", "state": state}]})
    };
    let (calls, result) = tls_secrets_gone(agent(json!({"running": {}}))).await;
    let error = result.expect_err("refused").to_string();
    assert!(
        error.contains("is gone while 1 pod(s) hold copies of it")
            && error.contains("no CA of this ClusterSpec's is at hand either")
            && error.contains("Restore"),
        "{error}"
    );
    assert_eq!(
        secrets_made(&calls),
        ["shop-cluster-key"],
        "no new CA: {:?}",
        summary(&calls)
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.uri.contains("/statefulsets/shop") && c.method != "GET"),
        "nothing applied"
    );
    // A pod that never started (it waits for the Secret to mount) holds no
    // certificate: both are made anew, and it starts with them.
    let waiting = agent(json!({"waiting": {"reason": "ContainerCreating"}}));
    let (calls, result) = tls_secrets_gone(waiting).await;
    result.expect("reconciled");
    assert_eq!(
        secrets_made(&calls),
        ["shop-cluster-key", "shop-muster-ca", "shop-muster-tls"]
    );
}

/// One reconcile of a cluster of one pod (agent in `pod_status`) whose key Secret holds
/// `key_file`, with `secret_annotations`, the ClusterSpec asking for rotation "first";
/// the Secret's replace is answered with `replace_code`.
async fn key_rotation(
    key_file: &str,
    secret_annotations: Value,
    pod_status: Value,
    replace_code: u16,
) -> (Vec<Call>, Result<Action, Error>) {
    let (ctx, handle) = context();
    let mut cs = cluster(json!({"replicas": 1}));
    cs.metadata.annotations = Some(
        [(
            key_rotation::ROTATE_ANNOTATION.to_owned(),
            "first".to_owned(),
        )]
        .into_iter()
        .collect(),
    );
    let owner = json!([{"apiVersion": "muster.dev/v1alpha1", "kind": "ClusterSpec",
        "name": "shop", "uid": "u-1", "controller": true}]);
    let secret = serde_json::to_value(k8s_openapi::api::core::v1::Secret {
        data: Some(
            [
                ("cluster.key", key_file),
                ("management.token", "token-0123456789abcdef"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
            .collect(),
        ),
        ..Default::default()
    })
    .expect("a Secret");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "shop-cluster-key", "namespace": "prod", "resourceVersion": "7",
            "creationTimestamp": "2020-01-01T00:00:00Z",
            "annotations": secret_annotations, "ownerReferences": owner},
        "data": secret["data"],
    });
    let set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "shop", "namespace": "prod", "uid": "s-1", "ownerReferences": owner},
        "spec": {"selector": {"matchLabels": {"muster.dev/cluster": "shop"}},
            "serviceName": "shop", "template": {"spec": {"containers": []}}},
    });
    let pods = one_pod(pod_status);
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    serve(handle, task, |call| match call.method.as_str() {
        "GET" if call.uri.contains("/secrets/shop-cluster-key") => (200, secret.clone()),
        "GET" if call.uri.contains("/statefulsets/shop") => (200, set.clone()),
        "GET" if call.uri.contains("/pods?") => (200, pods.clone()),
        "PUT" if call.uri.contains("/secrets/") => (
            replace_code,
            if replace_code == 409 {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "Conflict", "message": "changed", "code": 409})
            } else {
                call.body.clone()
            },
        ),
        _ => empty_namespace(call),
    })
    .await
}

fn agent_in(state: Value) -> Value {
    json!({"podIP": "127.36.4.1", "containerStatuses": [{"name": "agent", "ready": false,
        "restartCount": 0, "image": "agent:1", "imageID": "", "state": state}]})
}

fn secret_writes(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.method == "PUT" && c.uri.contains("/secrets/shop-cluster-key"))
        .collect()
}

fn reasons(calls: &[Call]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.method == "POST" && c.uri.contains("/events"))
        .map(|c| c.body["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn written_status(calls: &[Call]) -> Value {
    calls
        .iter()
        .rev()
        .find(|c| c.uri.contains("/status?"))
        .map(|c| c.body["status"].clone())
        .expect("a status write")
}

const OLD_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[tokio::test]
async fn a_key_rotation_adds_the_new_key_beside_the_old_once_every_pod_holds_the_file() {
    // The only pod's agent is not running and the key file was written long ago: its
    // volume holds it. The new key goes in beside the old one, which still signs.
    let waiting = agent_in(json!({"waiting": {"reason": "CrashLoopBackOff"}}));
    let (calls, result) = key_rotation(OLD_KEY, json!({}), waiting, 200).await;
    result.expect("reconciled");
    let writes = secret_writes(&calls);
    assert_eq!(writes.len(), 1, "{:?}", summary(&calls));
    let body = &writes[0].body;
    assert_eq!(
        body["metadata"]["resourceVersion"], "7",
        "over the Secret as read"
    );
    let file: k8s_openapi::ByteString =
        serde_json::from_value(body["data"]["cluster.key"].clone()).expect("a key file");
    let keys = node_agent::base::secret::ClusterKey::parse_file(&file.0).expect("keys");
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], OLD_KEY.as_bytes(), "the old key still signs");
    let new_id = node_agent::base::secret::key_id(&keys[1]);
    let annotations = &body["metadata"]["annotations"];
    assert_eq!(
        annotations[key_rotation::TARGET_ANNOTATION],
        new_id.as_str()
    );
    assert_eq!(annotations[key_rotation::HANDLED_ANNOTATION], "first");
    assert!(annotations[key_rotation::WRITTEN_AT_ANNOTATION].is_string());
    let token: k8s_openapi::ByteString =
        serde_json::from_value(body["data"]["management.token"].clone()).expect("a token");
    assert_eq!(token.0, b"token-0123456789abcdef", "the token stays");
    assert_eq!(reasons(&calls), ["ClusterKeyRotationStarted"]);
    let status = written_status(&calls);
    assert_eq!(
        status["clusterKey"]["keys"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        status["clusterKey"]["rotation"]
            .as_str()
            .is_some_and(|r| r.contains("added beside")),
        "{status}"
    );
}

#[tokio::test]
async fn a_pod_not_running_is_waited_for_until_its_volume_surely_holds_the_file() {
    // The key file was written a minute before the reconcile: a kubelet may not have
    // refreshed the pod's volume yet, and its agent may start on the older file.
    let waiting = agent_in(json!({"waiting": {"reason": "CrashLoopBackOff"}}));
    let recent = json!({(key_rotation::WRITTEN_AT_ANNOTATION): "2027-01-15T07:59:00Z"});
    assert_eq!(now().to_string(), "2027-01-15T08:00:00Z");
    let (calls, result) = key_rotation(OLD_KEY, recent, waiting, 200).await;
    result.expect("reconciled");
    assert!(secret_writes(&calls).is_empty(), "{:?}", summary(&calls));
    let status = written_status(&calls);
    let rotation = status["clusterKey"]["rotation"]
        .as_str()
        .unwrap_or_default();
    assert!(
        rotation.contains("shop-0: not running") && !rotation.contains("refused"),
        "{status}"
    );
}

#[tokio::test]
async fn a_key_rotation_waits_for_an_agent_that_does_not_answer_and_writes_nothing() {
    // Running, but nothing answers at its address: it may not hold the file yet.
    let running = agent_in(json!({"running": {}}));
    let (calls, result) = key_rotation(OLD_KEY, json!({}), running, 200).await;
    result.expect("reconciled");
    assert!(secret_writes(&calls).is_empty(), "{:?}", summary(&calls));
    assert!(reasons(&calls).is_empty(), "{:?}", reasons(&calls));
    let status = written_status(&calls);
    let rotation = status["clusterKey"]["rotation"]
        .as_str()
        .unwrap_or_default();
    assert!(
        rotation.starts_with("to a new key: waiting") && rotation.contains("shop-0: no answer"),
        "{status}"
    );
    assert_eq!(
        status["clusterKey"]["keys"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_key_rotation_step_lost_to_a_concurrent_write_is_not_reported_done() {
    let waiting = agent_in(json!({"waiting": {"reason": "CrashLoopBackOff"}}));
    let (calls, result) = key_rotation(OLD_KEY, json!({}), waiting, 409).await;
    result.expect("a conflict is looked at again, not an error");
    assert_eq!(secret_writes(&calls).len(), 1);
    assert!(reasons(&calls).is_empty(), "{:?}", reasons(&calls));
    let status = written_status(&calls);
    assert_eq!(
        status["clusterKey"]["keys"].as_array().map(Vec::len),
        Some(1)
    );
}

#[tokio::test]
async fn a_request_already_handled_and_one_key_asks_no_agent_and_writes_nothing() {
    let running = agent_in(json!({"running": {}}));
    let handled = json!({(key_rotation::HANDLED_ANNOTATION): "first"});
    let (calls, result) = key_rotation(OLD_KEY, handled, running, 200).await;
    result.expect("reconciled");
    assert!(secret_writes(&calls).is_empty(), "{:?}", summary(&calls));
    let status = written_status(&calls);
    assert_eq!(
        status["clusterKey"],
        json!({"keys": [node_agent::base::secret::key_id(OLD_KEY.as_bytes())]})
    );
}

/// A new CA, its Secret (named `name`, controlled by `owner_uid`) and its id.
fn ca_secret(name: &str, owner_uid: &str) -> (crate::ca::Ca, Value, String) {
    let ca = crate::ca::new_ca(
        &format!("muster prod/shop CA {name}"),
        std::time::SystemTime::now(),
        Duration::from_secs(10 * 365 * 24 * 3600),
    )
    .expect("a CA");
    let secret = secret_of_ca(&ca, name, owner_uid);
    let id = crate::ca_rotation::id_of(&ca.cert_pem).expect("an id");
    (ca, secret, id)
}

/// The Secret of `ca` named `name`, controlled by `owner_uid`.
fn secret_of_ca(ca: &crate::ca::Ca, name: &str, owner_uid: &str) -> Value {
    let mut secret =
        serde_json::to_value(build::tls::ca_secret(&cluster(json!({})), ca)).expect("a Secret");
    secret["apiVersion"] = json!("v1");
    secret["kind"] = json!("Secret");
    secret["metadata"]["name"] = json!(name);
    secret["metadata"]["ownerReferences"] = json!([{"apiVersion": "muster.dev/v1alpha1",
        "kind": "ClusterSpec", "name": "shop", "uid": owner_uid, "controller": true}]);
    secret
}

/// A CA made by a rotation: the CA, its id, its Secret's name and the Secret (the
/// ClusterSpec's).
fn rotated_ca() -> (crate::ca::Ca, String, String, Value) {
    let (ca, _, id) = ca_secret("new", "u-1");
    let name = format!("shop-{}-muster-ca", &id[..12]);
    let secret = secret_of_ca(&ca, &name, "u-1");
    (ca, id, name, secret)
}

/// `status.tls.rotation` as the reconcile wrote it.
fn tls_rotation(calls: &[Call]) -> String {
    written_status(calls)["tls"]["rotation"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The agents' Secret trusting `trusted` (PEM, in order) with `leaf`, written long ago
/// unless `annotations` say otherwise.
fn mounted_secret(trusted: &[&crate::ca::Ca], leaf: &crate::ca::Leaf, annotations: Value) -> Value {
    let bundle: String = trusted.iter().map(|c| c.cert_pem.as_str()).collect();
    let mut secret =
        serde_json::to_value(build::tls::tls_secret(&cluster(json!({})), &bundle, leaf))
            .expect("a Secret");
    secret["apiVersion"] = json!("v1");
    secret["kind"] = json!("Secret");
    secret["metadata"]["resourceVersion"] = json!("11");
    secret["metadata"]["creationTimestamp"] = json!("2020-01-01T00:00:00Z");
    secret["metadata"]["annotations"] = annotations;
    secret["metadata"]["ownerReferences"] = json!([{"apiVersion": "muster.dev/v1alpha1",
        "kind": "ClusterSpec", "name": "shop", "uid": "u-1", "controller": true}]);
    secret
}

fn leaf_of(ca: &crate::ca::Ca) -> crate::ca::Leaf {
    crate::ca::issue(
        ca,
        "shop.prod.muster",
        std::time::SystemTime::now(),
        Duration::from_secs(180 * 24 * 3600),
    )
    .expect("a certificate")
}

/// One reconcile of a TLS cluster of one pod whose agent is not running (its volume
/// long settled), the ClusterSpec asking for CA rotation "first", with `secrets`
/// (name → object) in the namespace.
async fn ca_rotation(secrets: Vec<(String, Value)>) -> (Vec<Call>, Result<Action, Error>) {
    let waiting = agent_in(json!({"waiting": {"reason": "CrashLoopBackOff"}}));
    ca_rotation_with(secrets, waiting, Some("first")).await
}

/// [`ca_rotation`] with the agent in `pod_status` and the annotation's value `asked`.
async fn ca_rotation_with(
    secrets: Vec<(String, Value)>,
    pod_status: Value,
    asked: Option<&str>,
) -> (Vec<Call>, Result<Action, Error>) {
    let mut cs = cluster(json!({"replicas": 1, "tls": {"enabled": true}}));
    cs.metadata.annotations = asked.map(|a| {
        [(certificates::ROTATE_ANNOTATION.to_owned(), a.to_owned())]
            .into_iter()
            .collect()
    });
    tls_reconcile(cs, secrets, pod_status).await
}

/// One reconcile of `cs` (TLS, one pod in `pod_status`) with `secrets` (name → object)
/// in the namespace.
async fn tls_reconcile(
    cs: ClusterSpec,
    secrets: Vec<(String, Value)>,
    pod_status: Value,
) -> (Vec<Call>, Result<Action, Error>) {
    tls_reconcile_of(cs, secrets, one_pod(pod_status), true).await
}

/// [`tls_reconcile`] with the PodList `pods`, and the StatefulSet if `with_set`.
async fn tls_reconcile_of(
    cs: ClusterSpec,
    secrets: Vec<(String, Value)>,
    pods: Value,
    with_set: bool,
) -> (Vec<Call>, Result<Action, Error>) {
    let (ctx, handle) = context();
    let owner = json!([{"apiVersion": "muster.dev/v1alpha1", "kind": "ClusterSpec",
        "name": "shop", "uid": "u-1", "controller": true}]);
    let set = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "shop", "namespace": "prod", "uid": "s-1", "ownerReferences": owner},
        "spec": {"selector": {"matchLabels": {"muster.dev/cluster": "shop"}},
            "serviceName": "shop",
            "template": {"spec": {"containers": [], "volumes": [
                {"name": "muster-tls", "secret": {"secretName": "shop-muster-tls"}}]}}},
    });
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    serve(handle, task, |call| {
        let path = call.uri.split('?').next().unwrap_or_default();
        match call.method.as_str() {
            "GET" if path.contains("/secrets/") => secrets
                .iter()
                .find(|(name, _)| path.ends_with(&format!("/secrets/{name}")))
                .map_or((404, Value::Null), |(_, s)| (200, s.clone())),
            "GET" if with_set && call.uri.contains("/statefulsets/shop") => (200, set.clone()),
            "GET" if path.ends_with("/pods") => (200, pods.clone()),
            _ => empty_namespace(call),
        }
    })
    .await
}

/// The certificate the agents' Secret `secret` (as written) holds, which agents must
/// take under `ca` (`what` it is said to be).
fn served_under(secret: &Value, ca: &crate::ca::Ca, what: &str) -> crate::ca::Leaf {
    let served = crate::ca::Leaf {
        cert_pem: data_text(secret, "tls.crt"),
        key_pem: data_text(secret, "tls.key"),
        not_after: std::time::SystemTime::now(),
    };
    crate::ca::accepted_under(&served, &[ca.cert_pem.as_str()], "shop.prod.muster")
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    served
}

/// The one write of a reconcile that renewed the agents' certificate: the trusted CAs
/// (`ids`) kept, a certificate of `ca` (the one in use), nothing else done.
fn renewed_under(calls: &[Call], ca: &crate::ca::Ca, ids: Vec<String>) -> crate::ca::Leaf {
    let writes = tls_writes(calls);
    assert_eq!(writes.len(), 1, "{:?}", summary(calls));
    let body = &writes[0].body;
    assert_eq!(
        crate::ca_rotation::Bundle::parse(&data_text(body, "ca.crt")).map(|b| b.ids()),
        Ok(ids),
        "the trusted CAs stay"
    );
    assert_eq!(reasons(calls), ["TlsCertificateRenewed"]);
    served_under(body, ca, "under the CA in use")
}

fn tls_writes(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| c.method == "PUT" && c.uri.contains("/secrets/shop-muster-tls"))
        .collect()
}

fn data_text(secret: &Value, key: &str) -> String {
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(secret["data"][key].clone()).expect("data");
    String::from_utf8(bytes.0).expect("text")
}

#[tokio::test]
async fn a_ca_rotation_makes_its_ca_before_any_file_trusts_it() {
    let (old, old_secret, old_id) = ca_secret("shop-muster-ca", "u-1");
    let leaf = leaf_of(&old);
    let mounted = mounted_secret(&[&old], &leaf, json!({}));
    let (calls, result) = ca_rotation(vec![
        ("shop-muster-ca".into(), old_secret),
        ("shop-muster-tls".into(), mounted),
    ])
    .await;
    result.expect("reconciled");
    let made: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "POST" && c.uri.contains("/secrets"))
        .filter(|c| c.body["metadata"]["name"] != "shop-cluster-key")
        .collect();
    assert_eq!(made.len(), 1, "{:?}", summary(&calls));
    let new_ca = &made[0].body;
    let new_pem = data_text(new_ca, "ca.crt");
    let new_id = crate::ca_rotation::id_of(&new_pem).expect("an id");
    assert_eq!(
        new_ca["metadata"]["name"],
        format!("shop-{}-muster-ca", &new_id[..12])
    );
    assert_eq!(new_ca["immutable"], true);
    assert_eq!(new_ca["metadata"]["ownerReferences"][0]["uid"], "u-1");
    let writes = tls_writes(&calls);
    assert_eq!(writes.len(), 1, "{:?}", summary(&calls));
    let made_at = calls
        .iter()
        .position(|c| std::ptr::eq(c, made[0]))
        .expect("made");
    let written_at = calls
        .iter()
        .position(|c| std::ptr::eq(c, writes[0]))
        .expect("written");
    assert!(
        made_at < written_at,
        "the CA exists before a file trusts it"
    );
    let body = &writes[0].body;
    assert_eq!(
        body["metadata"]["resourceVersion"], "11",
        "over the Secret as read"
    );
    let bundle = crate::ca_rotation::Bundle::parse(&data_text(body, "ca.crt")).expect("a bundle");
    assert_eq!(
        bundle.ids(),
        [old_id.clone(), new_id.clone()],
        "the old CA in use first"
    );
    assert_eq!(
        data_text(body, "tls.crt"),
        leaf.cert_pem,
        "the certificate stays"
    );
    assert!(
        body["data"].get("ca.key").is_none(),
        "no CA key in the pods' Secret"
    );
    let a = &body["metadata"]["annotations"];
    assert_eq!(a[certificates::TARGET_ANNOTATION], new_id.as_str());
    assert_eq!(a[certificates::HANDLED_ANNOTATION], "first");
    assert!(a[certificates::WRITTEN_AT_ANNOTATION].is_string());
    assert_eq!(reasons(&calls), ["TlsCaCreated", "TlsCaRotationStarted"]);
    let status = written_status(&calls);
    assert_eq!(
        status["tls"]["cas"],
        json!([&old_id[..16], &new_id[..16]]),
        "{status}"
    );
    assert!(
        status["tls"]["rotation"]
            .as_str()
            .is_some_and(|r| r.contains("trusted beside")),
        "{status}"
    );
}

#[tokio::test]
async fn a_ca_rotation_goes_on_from_what_the_agents_secret_records() {
    // An operator (this one, or one before it) trusted the new CA beside the old one;
    // every pod holds that: a certificate of the new CA is served next, both trusted.
    let (old, old_secret, old_id) = ca_secret("shop-muster-ca", "u-1");
    let (new, new_id, new_name, new_secret) = rotated_ca();
    let leaf = leaf_of(&old);
    let recorded = json!({
        (certificates::TARGET_ANNOTATION): new_id,
        (certificates::HANDLED_ANNOTATION): "first",
    });
    let mounted = mounted_secret(&[&old, &new], &leaf, recorded);
    let (calls, result) = ca_rotation(vec![
        ("shop-muster-ca".into(), old_secret.clone()),
        ("shop-muster-tls".into(), mounted.clone()),
        (new_name.clone(), new_secret),
    ])
    .await;
    result.expect("reconciled");
    assert!(
        !calls.iter().any(|c| c.method == "POST"
            && c.uri.contains("/secrets")
            && c.body["metadata"]["name"] != "shop-cluster-key"),
        "no other CA: {:?}",
        summary(&calls)
    );
    let writes = tls_writes(&calls);
    assert_eq!(writes.len(), 1, "{:?}", summary(&calls));
    let body = &writes[0].body;
    let bundle = crate::ca_rotation::Bundle::parse(&data_text(body, "ca.crt")).expect("a bundle");
    assert_eq!(
        bundle.ids(),
        [new_id.clone(), old_id.clone()],
        "the new CA in use first"
    );
    let served = served_under(body, &new, "a certificate of the new CA");
    crate::ca::accepted_under(&served, &[old.cert_pem.as_str()], "shop.prod.muster")
        .expect_err("not of the old one");
    assert_eq!(reasons(&calls), ["TlsCaRotationStep"]);

    // The same files, but the new CA's Secret is gone: nothing is written, and the
    // error names the Secret to restore.
    let (calls, result) = ca_rotation(vec![
        ("shop-muster-ca".into(), old_secret),
        ("shop-muster-tls".into(), mounted),
    ])
    .await;
    let error = result.expect_err("refused").to_string();
    assert!(
        error.contains(&new_name) && error.contains("Restore"),
        "{error}"
    );
    assert!(tls_writes(&calls).is_empty(), "{:?}", summary(&calls));
}

#[tokio::test]
async fn a_ca_secret_of_someone_else_under_a_rotated_name_is_a_conflict_and_nothing_is_written() {
    let (old, old_secret, _) = ca_secret("shop-muster-ca", "u-1");
    let (new, _, new_id) = ca_secret("new", "u-1");
    let new_name = format!("shop-{}-muster-ca", &new_id[..12]);
    // Made by another ClusterSpec (uid u-9) under the name a rotation of ours takes.
    let theirs = secret_of_ca(&new, &new_name, "u-9");
    let recorded = json!({(certificates::TARGET_ANNOTATION): new_id});
    let mounted = mounted_secret(&[&old, &new], &leaf_of(&old), recorded);
    let (calls, result) = ca_rotation(vec![
        ("shop-muster-ca".into(), old_secret),
        ("shop-muster-tls".into(), mounted),
        (new_name.clone(), theirs),
    ])
    .await;
    result.expect("a conflict is a condition, not an error");
    assert!(tls_writes(&calls).is_empty(), "{:?}", summary(&calls));
    let status = written_status(&calls);
    assert!(
        status.to_string().contains(&new_name),
        "the conflict names the Secret: {status}"
    );
}

/// A certificate of `ca` for the cluster's name, valid for `days`.
fn leaf_for(ca: &crate::ca::Ca, days: u64) -> crate::ca::Leaf {
    crate::ca::issue(
        ca,
        "shop.prod.muster",
        std::time::SystemTime::now(),
        Duration::from_secs(days * 24 * 3600),
    )
    .expect("a certificate")
}

/// A rotation asked for on a cluster whose first CA is `first` (as [`ca_secret`] made
/// it) and whose agents' Secret holds `leaf`; the one agent runs but does not answer.
async fn asked_with_a_silent_agent(
    first: &(crate::ca::Ca, Value, String),
    leaf: &crate::ca::Leaf,
) -> (Vec<Call>, Result<Action, Error>) {
    let mounted = mounted_secret(&[&first.0], leaf, json!({}));
    ca_rotation_with(
        vec![
            ("shop-muster-ca".into(), first.1.clone()),
            ("shop-muster-tls".into(), mounted),
        ],
        agent_in(json!({"running": {}})),
        Some("first"),
    )
    .await
}

#[tokio::test]
async fn a_ca_rotation_waits_for_a_running_agent_that_does_not_answer() {
    // Running, but nothing answers at its address: it may hold older files.
    let old = ca_secret("shop-muster-ca", "u-1");
    let leaf = leaf_of(&old.0);
    let (calls, result) = asked_with_a_silent_agent(&old, &leaf).await;
    result.expect("reconciled");
    assert!(tls_writes(&calls).is_empty(), "{:?}", summary(&calls));
    assert!(
        !calls.iter().any(|c| c.method == "POST"
            && c.body["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-muster-ca"))),
        "no CA made while nothing is written: {:?}",
        summary(&calls)
    );
    let status = written_status(&calls);
    let rotation = status["tls"]["rotation"].as_str().unwrap_or_default();
    assert!(
        rotation.starts_with("to a new CA: waiting") && rotation.contains("shop-0: no answer"),
        "{status}"
    );
}

#[tokio::test]
async fn a_certificate_about_to_end_is_issued_again_while_a_rotation_waits() {
    // The rotation cannot move (the agent does not answer), and the certificate has
    // ten days left: it is issued again under the CA in use, the bundle kept.
    let first = ca_secret("shop-muster-ca", "u-1");
    let ending = leaf_for(&first.0, 10);
    let (calls, result) = asked_with_a_silent_agent(&first, &ending).await;
    let (old, _, old_id) = first;
    result.expect("reconciled");
    let served = renewed_under(&calls, &old, vec![old_id]);
    assert_ne!(served.cert_pem, ending.cert_pem);
    let rotation = tls_rotation(&calls);
    assert!(rotation.contains("issued again first"), "{rotation}");
}

#[tokio::test]
async fn a_ca_rotation_drops_the_old_ca_then_ends_naming_its_secret() {
    // Every pod serves a certificate of the new CA and trusts both: the old CA goes.
    let (old, old_secret, _) = ca_secret("shop-muster-ca", "u-1");
    let (new, new_id, new_name, new_secret) = rotated_ca();
    let leaf = leaf_of(&new);
    let recorded = json!({(certificates::TARGET_ANNOTATION): new_id});
    let mounted = mounted_secret(&[&new, &old], &leaf, recorded);
    let (calls, result) = ca_rotation(vec![
        ("shop-muster-ca".into(), old_secret.clone()),
        ("shop-muster-tls".into(), mounted),
        (new_name.clone(), new_secret.clone()),
    ])
    .await;
    result.expect("reconciled");
    let writes = tls_writes(&calls);
    assert_eq!(writes.len(), 1, "{:?}", summary(&calls));
    let body = &writes[0].body;
    assert_eq!(data_text(body, "ca.crt"), new.cert_pem, "the new CA alone");
    assert_eq!(
        data_text(body, "tls.crt"),
        leaf.cert_pem,
        "the certificate stays"
    );
    assert_eq!(
        body["metadata"]["annotations"][certificates::RETIRED_ANNOTATION],
        "shop-muster-ca"
    );
    assert_eq!(reasons(&calls), ["TlsCaRotationStep"]);

    // Next: every pod holds that; the rotation ends, and its Event names the old
    // CA's Secret (the operator may not delete Secrets).
    let ended = json!({
        (certificates::TARGET_ANNOTATION): new_id,
        (certificates::RETIRED_ANNOTATION): "shop-muster-ca",
    });
    let mounted = mounted_secret(&[&new], &leaf, ended);
    let (calls, result) = ca_rotation(vec![
        ("shop-muster-ca".into(), old_secret),
        ("shop-muster-tls".into(), mounted),
        (new_name, new_secret),
    ])
    .await;
    result.expect("reconciled");
    let writes = tls_writes(&calls);
    assert_eq!(writes.len(), 1, "{:?}", summary(&calls));
    let a = &writes[0].body["metadata"]["annotations"];
    assert!(a.get(certificates::TARGET_ANNOTATION).is_none(), "{a}");
    assert!(a.get(certificates::RETIRED_ANNOTATION).is_none(), "{a}");
    assert_eq!(data_text(&writes[0].body, "ca.crt"), new.cert_pem);
    let events: Vec<&Call> = calls
        .iter()
        .filter(|c| c.method == "POST" && c.uri.contains("/events"))
        .collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].body["reason"], "TlsCaRotated");
    assert!(
        events[0].body["note"]
            .as_str()
            .is_some_and(|n| n.contains("kubectl delete secret -n prod shop-muster-ca")),
        "{}",
        events[0].body
    );
    let status = written_status(&calls);
    assert_eq!(status["tls"]["cas"], json!([&new_id[..16]]));
    assert!(status["tls"].get("rotation").is_none(), "{status}");
}

#[tokio::test]
async fn a_ca_that_ends_within_a_year_is_rotated_without_being_asked() {
    // The cluster's CA ends in 200 days.
    let ending = crate::ca::new_ca(
        "muster prod/shop CA old",
        std::time::SystemTime::now(),
        Duration::from_secs(200 * 24 * 3600),
    )
    .expect("a CA");
    let ending_id = crate::ca_rotation::id_of(&ending.cert_pem).expect("an id");
    let secret = secret_of_ca(&ending, "shop-muster-ca", "u-1");
    let mounted = mounted_secret(&[&ending], &leaf_for(&ending, 120), json!({}));
    let waiting = agent_in(json!({"waiting": {"reason": "CrashLoopBackOff"}}));
    let (calls, result) = ca_rotation_with(
        vec![
            ("shop-muster-ca".into(), secret),
            ("shop-muster-tls".into(), mounted),
        ],
        waiting,
        None,
    )
    .await;
    result.expect("reconciled");
    let writes = tls_writes(&calls);
    assert_eq!(writes.len(), 1, "{:?}", summary(&calls));
    let body = &writes[0].body;
    let ids = crate::ca_rotation::Bundle::parse(&data_text(body, "ca.crt"))
        .expect("a bundle")
        .ids();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ending_id);
    let a = &body["metadata"]["annotations"];
    assert_eq!(a[certificates::TARGET_ANNOTATION], ids[1].as_str());
    assert!(
        a.get(certificates::HANDLED_ANNOTATION).is_none(),
        "a rotation by age records no request: {a}"
    );
    assert_eq!(reasons(&calls), ["TlsCaCreated", "TlsCaRotationStarted"]);
}

/// A stand-in agent on `ip`'s management port: over HTTPS with `leaf`, it answers
/// every request with a `/bootstrap/status` telling that it trusts `trusted` and
/// serves `leaf`. Stops when the test's runtime ends.
async fn https_agent(ip: std::net::IpAddr, leaf: &crate::ca::Leaf, trusted: &[&crate::ca::Ca]) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("a certificate");
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("a key");
    let config = rustls::ServerConfig::builder_with_provider(node_agent::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain.clone(), key)
        .expect("a server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let body = node_agent::api::BootstrapStatusBody::<Value> {
        phase: node_agent::api::BootstrapPhase::Joined,
        self_node: node_agent::base::address::NodeAddress::new("shop", ip, 2552),
        self_status: None,
        reason: "a member".into(),
        bootstrap: None,
        tls: Some(node_agent::api::TlsInUse {
            certificate: node_agent::tls::fingerprint(&chain[0]),
            trusted: trusted
                .iter()
                .map(|c| crate::ca_rotation::id_of(&c.cert_pem).expect("an id"))
                .collect(),
            not_after: None,
        }),
        cluster_keys: Vec::new(),
    };
    let body = serde_json::to_vec(&body).expect("JSON");
    let listener = tokio::net::TcpListener::bind((ip, build::MANAGEMENT_PORT))
        .await
        .expect("bind the agent's port");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(mut conn) = acceptor.accept(conn).await else {
                    return;
                };
                // Each request's head (no request here has a body), then the answer,
                // on the same connection until the client closes it.
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = conn.write_all(head.as_bytes()).await;
                        let _ = conn.write_all(&body).await;
                        let _ = conn.flush().await;
                    }
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
}

/// A TLS cluster whose agents' Secret is gone while its one pod's agent runs at `ip`,
/// the status last showing `shown` (CA ids), a rotation asked for ("first"); the first
/// CA `first` and the rotated CA `rotated` (its Secret's name and object) at hand.
async fn tls_files_gone(
    ip: [u8; 4],
    shown: &[&str],
    first: &(crate::ca::Ca, Value, String),
    rotated: (&str, &Value),
) -> (Vec<Call>, Result<Action, Error>) {
    let mut cs = cluster(json!({"replicas": 1, "tls": {"enabled": true}}));
    cs.metadata.annotations = Some(
        [(
            certificates::ROTATE_ANNOTATION.to_owned(),
            "first".to_owned(),
        )]
        .into_iter()
        .collect(),
    );
    cs.status = Some(crate::ClusterSpecStatus {
        tls: Some(crate::crd::TlsStatus {
            cas: shown.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = json!({"podIP": std::net::IpAddr::from(ip).to_string(),
        "containerStatuses": [{"name": "agent", "ready": true, "restartCount": 0,
            "image": "agent:1", "imageID": "", "state": {"running": {}}}]});
    tls_reconcile(
        cs,
        vec![
            ("shop-muster-ca".into(), first.1.clone()),
            (rotated.0.to_owned(), rotated.1.clone()),
        ],
        pod,
    )
    .await
}

/// The agents' Secret made by a reconcile, if any.
fn tls_made(calls: &[Call]) -> Option<&Value> {
    calls
        .iter()
        .find(|c| c.method == "POST" && c.body["metadata"]["name"] == "shop-muster-tls")
        .map(|c| &c.body)
}

/// [`tls_files_gone`] after a rotation: the agent at 127.36.4.`host` serves a
/// certificate of the rotated CA (returned with its id) and trusts it, and the first CA
/// too if `mid_rotation`; the status shows the rotated CA, or the first one if
/// `status_old`.
async fn gone_after_rotation(
    host: u8,
    mid_rotation: bool,
    status_old: bool,
) -> (crate::ca::Ca, String, Vec<Call>, Result<Action, Error>) {
    let first = ca_secret("shop-muster-ca", "u-1");
    let (new, new_id, new_name, new_secret) = rotated_ca();
    let ip = [127, 36, 4, host];
    let trusted: Vec<&crate::ca::Ca> = if mid_rotation {
        vec![&new, &first.0]
    } else {
        vec![&new]
    };
    https_agent(ip.into(), &leaf_of(&new), &trusted).await;
    let shown = if status_old { &first.2 } else { &new_id };
    let (calls, result) =
        tls_files_gone(ip, &[&shown[..16]], &first, (&new_name, &new_secret)).await;
    (new, new_id, calls, result)
}

#[tokio::test]
async fn tls_files_gone_under_running_pods_are_made_anew_under_the_ca_their_agents_trust() {
    // After a rotation the agents trust the rotated CA alone; the status shows it.
    let (new, new_id, calls, result) = gone_after_rotation(21, false, false).await;
    result.expect("reconciled");
    let made = tls_made(&calls).unwrap_or_else(|| panic!("made anew: {:?}", summary(&calls)));
    assert_eq!(
        crate::ca_rotation::Bundle::parse(&data_text(made, "ca.crt")).map(|b| b.ids()),
        Ok(vec![new_id.clone()]),
        "the CA the agents trust, alone"
    );
    served_under(made, &new, "a certificate of the CA in use");
    // The request may have been taken with the files lost: it is not marked as taken
    // (at worst one more rotation, never one dropped).
    assert!(
        made["metadata"]["annotations"][certificates::HANDLED_ANNOTATION].is_null(),
        "{made}"
    );
    assert_eq!(reasons(&calls), ["TlsCertificateIssued"]);
    assert_eq!(written_status(&calls)["tls"]["cas"], json!([&new_id[..16]]));
}

#[tokio::test]
async fn tls_files_gone_are_not_made_anew_from_a_status_that_names_another_ca() {
    // The status is old (or edited): it shows the first CA, while the agents trust the
    // rotated one alone. Files of the first CA would cut every agent off from the
    // others: nothing is written.
    let (_, _, calls, result) = gone_after_rotation(22, false, true).await;
    let error = result.expect_err("refused").to_string();
    assert!(
        error.contains("is gone while 1 pod(s) hold copies")
            && error.contains("which CAs the agent of shop-0 trusts is not known")
            && error.contains("trusting the CAs of Secrets [\"shop-muster-ca\"]")
            && error.contains("(kubectl delete pod -n prod shop-0)"),
        "{error}"
    );
    assert!(tls_made(&calls).is_none(), "{:?}", summary(&calls));
}

#[tokio::test]
async fn tls_files_gone_mid_rotation_are_not_made_anew() {
    // The agents trust both CAs: which one issued their certificate is not told.
    let (_, _, calls, result) = gone_after_rotation(23, true, false).await;
    let error = result.expect_err("refused").to_string();
    assert!(error.contains("a rotation under way"), "{error}");
    assert!(tls_made(&calls).is_none(), "{:?}", summary(&calls));
}

#[tokio::test]
async fn a_certificate_that_ended_mid_rotation_is_issued_again_under_the_ca_in_use() {
    // The operator was away for longer than the certificate lasted, between a
    // rotation's second and third steps: both CAs trusted, the new one's certificate
    // served and ended. Issued again under the new CA, the bundle kept.
    let year = Duration::from_secs(365 * 24 * 3600);
    let long_ago = std::time::SystemTime::now() - year;
    let made = |n: &str| {
        crate::ca::new_ca(&format!("muster prod/shop CA {n}"), long_ago, 10 * year).expect("a CA")
    };
    let (old, new) = (made("1"), made("2"));
    let (old_id, new_id) = (
        crate::ca_rotation::id_of(&old.cert_pem).expect("an id"),
        crate::ca_rotation::id_of(&new.cert_pem).expect("an id"),
    );
    let new_name = format!("shop-{}-muster-ca", &new_id[..12]);
    let ended =
        crate::ca::issued_then(&new, "shop.prod.muster", long_ago, year / 12).expect("a cert");
    let mounted = mounted_secret(
        &[&new, &old],
        &ended,
        json!({ certificates::TARGET_ANNOTATION: new_id, certificates::HANDLED_ANNOTATION: "first" }),
    );
    let (calls, result) = ca_rotation(vec![
        (
            "shop-muster-ca".into(),
            secret_of_ca(&old, "shop-muster-ca", "u-1"),
        ),
        (new_name.clone(), secret_of_ca(&new, &new_name, "u-1")),
        ("shop-muster-tls".into(), mounted),
    ])
    .await;
    result.expect("reconciled");
    renewed_under(&calls, &new, vec![new_id, old_id]);
}

/// One reconcile of a new `lease-majority` cluster whose namespace holds `sbr` (the
/// resolver's Lease, if any): the calls and the result.
async fn lease_majority_with(sbr: Option<Value>) -> (Vec<Call>, Result<Action, Error>) {
    let (ctx, handle) = context();
    let cs = cluster(json!({"replicas": 3, "membership": {"downing": "lease-majority"}}));
    let task = tokio::spawn({
        let (cs, ctx) = (cs.clone(), ctx.clone());
        async move { reconcile_once(&cs, &ctx, now()).await }
    });
    serve(handle, task, move |call| {
        match (call.method.as_str(), &sbr) {
            ("GET", Some(lease)) if call.uri.contains("/leases/shop-muster-sbr") => {
                (200, lease.clone())
            }
            _ => empty_namespace(call),
        }
    })
    .await
}

fn leases_made(calls: &[Call]) -> Vec<&Value> {
    calls
        .iter()
        .filter(|c| c.method == "POST" && c.uri.contains("/leases"))
        .map(|c| &c.body)
        .collect()
}

#[tokio::test]
async fn the_lease_majority_lease_is_made_by_the_operator_so_agents_need_not_create_leases() {
    let (calls, result) = lease_majority_with(None).await;
    result.expect("reconciled");
    let made = leases_made(&calls);
    let sbr = made
        .iter()
        .find(|l| l["metadata"]["name"] == "shop-muster-sbr")
        .unwrap_or_else(|| panic!("the resolver's Lease: {:?}", summary(&calls)));
    assert_eq!(sbr["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert!(sbr["spec"].get("holderIdentity").is_none(), "unheld");
    // Before the pods: made before the StatefulSet is applied.
    let at = |what: &str| {
        calls
            .iter()
            .position(|c| c.method != "GET" && c.uri.contains(what))
            .unwrap_or_else(|| panic!("{what}: {:?}", summary(&calls)))
    };
    assert!(at("/leases") < at("/statefulsets/shop"));

    // Made by agents of an older operator (no owner): theirs to go on with, unchanged.
    let old = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "shop-muster-sbr", "namespace": "prod"},
        "spec": {"holderIdentity": "muster://shop@10.0.0.1:2552"}});
    let (calls, result) = lease_majority_with(Some(old)).await;
    result.expect("reconciled");
    assert!(
        !calls
            .iter()
            .any(|c| c.uri.contains("/leases/shop-muster-sbr") && c.method != "GET"),
        "{:?}",
        summary(&calls)
    );
    assert_eq!(leases_made(&calls).len(), 1, "the formation record only");

    // Another's: a conflict, nothing written (the agents would be given it).
    let theirs = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "shop-muster-sbr", "namespace": "prod", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "lb", "uid": "d-9",
             "controller": true}]}});
    let (calls, result) = lease_majority_with(Some(theirs)).await;
    result.expect("reconciled");
    assert!(leases_made(&calls).is_empty(), "{:?}", summary(&calls));
    let degraded = degraded(&written_status(&calls));
    assert_eq!(degraded["reason"], "ObjectConflict");
    let message = degraded["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Lease shop-muster-sbr exists") && message.contains("Deployment lb"),
        "{message}"
    );
}

#[tokio::test]
async fn tls_files_gone_are_made_anew_under_what_an_orphaned_pod_trusts() {
    // The StatefulSet was deleted with --cascade=orphan after a rotation: its pod runs
    // on, trusting the rotated CA alone, and is no pod of any StatefulSet of ours. The
    // files are made anew under that CA, not under the first CA (still at hand).
    let first = ca_secret("shop-muster-ca", "u-1");
    let (new, new_id, new_name, new_secret) = rotated_ca();
    let ip = [127, 36, 4, 24];
    https_agent(ip.into(), &leaf_of(&new), &[&new]).await;
    let mut cs = cluster(json!({"replicas": 1, "tls": {"enabled": true}}));
    cs.status = Some(crate::ClusterSpecStatus {
        tls: Some(crate::crd::TlsStatus {
            cas: vec![new_id[..16].to_owned()],
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut orphans = one_pod(json!({"podIP": "127.36.4.24", "containerStatuses": [
        {"name": "agent", "ready": true, "restartCount": 0, "image": "agent:1",
         "imageID": "", "state": {"running": {}}}]}));
    orphans["items"][0]["metadata"]["ownerReferences"] = Value::Null;
    let secrets = vec![
        ("shop-muster-ca".to_owned(), first.1.clone()),
        (new_name.clone(), new_secret.clone()),
    ];
    let (calls, result) = tls_reconcile_of(cs, secrets, orphans, false).await;
    result.expect("reconciled");
    let made = tls_made(&calls).unwrap_or_else(|| panic!("made anew: {:?}", summary(&calls)));
    assert_eq!(
        crate::ca_rotation::Bundle::parse(&data_text(made, "ca.crt")).map(|b| b.ids()),
        Ok(vec![new_id]),
        "the CA the orphan trusts"
    );
    served_under(made, &new, "a certificate of that CA");
}

#[test]
fn a_pod_holds_a_copy_of_its_secrets_once_its_volumes_are_set_up() {
    let pod = |state: Value| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(json!({"metadata": {"name": "shop-0"}, "status": {
            "containerStatuses": [{"name": "agent", "ready": false, "restartCount": 0,
                "image": "agent:1", "imageID": "", "state": state}]}}))
        .expect("a pod")
    };
    let waiting = |reason: &str| pod(json!({"waiting": {"reason": reason}}));
    assert!(certificates::past_volume_setup(&pod(
        json!({"running": {}})
    )));
    for reason in [
        "ImagePullBackOff",
        "ErrImagePull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
    ] {
        assert!(
            certificates::past_volume_setup(&waiting(reason)),
            "{reason}"
        );
    }
    // Where a pod whose Secret is missing waits.
    assert!(!certificates::past_volume_setup(&waiting(
        "ContainerCreating"
    )));
    assert!(!certificates::past_volume_setup(&pod(Value::Null)));
}
