//! The router driven in-process with `oneshot`.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;
use crate::base::address::{NodeAddress, UniqueAddress};
use crate::bootstrap::decider::{DeciderSettings, SelfIdentity};
use crate::bootstrap::state::{Bootstrap, Schedule};
use crate::membership::core::{MembershipCore, MembershipSettings};
use crate::membership::member::MemberInfo;

struct Fixture {
    state: AppState,
    cluster: watch::Sender<Arc<ClusterView>>,
    nudges: mpsc::Receiver<ContactPoint>,
    /// The addresses `POST /cluster/members` asked the membership task to join.
    joins: mpsc::UnboundedReceiver<NodeAddress>,
    _seed: watch::Sender<Bytes>,
}

const TOKEN: &str = "0123456789abcdef-token";

fn node() -> UniqueAddress {
    UniqueAddress::new(
        NodeAddress::new("shop", "10.0.0.1".parse().unwrap(), 2552),
        7,
    )
}

fn fixture(with_bootstrap: bool) -> Fixture {
    fixture_with(with_bootstrap, |_| {})
}

/// With `setup` applied to the bootstrap state the coordinator reports.
fn fixture_with(with_bootstrap: bool, setup: impl FnOnce(&mut Bootstrap)) -> Fixture {
    let (cluster, cluster_rx) = watch::channel(Arc::new(ClusterView {
        self_node: node(),
        phase: ViewPhase::Idle,
        gossip: Default::default(),
    }));
    let (seed_tx, seed_rx) = watch::channel(Bytes::from_static(
        br#"{"selfNode":"muster://shop@10.0.0.1:2552","seedNodes":[]}"#,
    ));
    let (nudge_tx, nudges) = mpsc::channel(4);
    let bootstrap = with_bootstrap.then(|| {
        let (tx, mut rx) = mpsc::channel::<StatusRequest>(4);
        let me = "10.0.0.1:8558".parse::<ContactPoint>().unwrap();
        let mut core = Bootstrap::new(
            Schedule {
                interval: Duration::from_secs(1),
                exponential_backoff_random_factor: 0.2,
                exponential_backoff_max: Duration::from_secs(15),
                probe_interval: Duration::from_secs(1),
                probe_interval_jitter: 0.2,
                probing_failure_timeout: Duration::from_secs(3),
            },
            DeciderSettings::example(),
            SelfIdentity {
                management: me,
                address: node().address,
            },
            Duration::ZERO,
        );
        setup(&mut core);
        tokio::spawn(async move {
            while let Some(reply) = rx.recv().await {
                let _ = reply.send(core.status(Duration::ZERO));
            }
        });
        tx
    });
    // The membership actor's side of leave/down: knows only this node.
    // Joins: a node that is Idle once, a member after its first join.
    let (membership, mut marks) = mpsc::channel::<Command>(4);
    let (joined, joins) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut member = false;
        while let Some(cmd) = marks.recv().await {
            match cmd {
                Command::Mark { address, reply, .. } => {
                    let known = address == node().address;
                    let _ = reply.send(if known {
                        Ok(())
                    } else {
                        Err(MarkError::NoSuchMember)
                    });
                }
                Command::PrepareForFullShutdown { reply } => {
                    let _ = reply.send(Ok(()));
                }
                Command::PodGone {
                    address,
                    uid,
                    reply,
                } => {
                    let _ = reply.send(Ok(address == node().address && uid.is_none_or(|u| u == 7)));
                }
                Command::JoinAsked { address, reply } => {
                    let _ = reply.send(if member {
                        Err(JoinError::AlreadyMember)
                    } else {
                        Ok(())
                    });
                    member = true;
                    let _ = joined.send(address);
                }
                _ => {}
            }
        }
    });
    let state = AppState {
        seed_nodes: seed_rx,
        cluster: cluster_rx,
        bootstrap,
        nudges: Some(nudge_tx),
        metrics: Metrics::new(),
        max_body_bytes: 65536,
        token: Some(ManagementToken::new(TOKEN.as_bytes()).unwrap()),
        events: crate::membership::events::EventHub::new(16),
        membership,
        cluster_key: Some(key()),
        self_probes: Default::default(),
        own_ip: [10, 0, 0, 1].into(),
        body_timeout: Duration::from_secs(1),
        event_subscribers: Arc::new(tokio::sync::Semaphore::new(2)),
        tls: None,
        ready_states: Arc::from([MemberStatus::Up, MemberStatus::WeaklyUp]),
        handover: HandoverGate::new(Duration::from_secs(20), crate::base::time::Clock::start()),
    };
    Fixture {
        state,
        cluster,
        nudges,
        joins,
        _seed: seed_tx,
    }
}

async fn get(app: &AppState, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut req = http::Request::get(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router(app.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    (status, ct, body)
}

fn member_view() -> ClusterView {
    let settings = MembershipSettings {
        gossip_interval: Duration::from_secs(1),
        leader_actions_interval: Duration::from_secs(1),
        allow_weakly_up_members: None,
        retry_unsuccessful_join_after: Duration::from_secs(2),
        seed_node_timeout: Duration::from_secs(5),
        failure_detector: crate::config::FailureDetectorConfig::default(),
        downing: None,
        shutdown_after_unsuccessful_join: None,
    };
    let mut core = MembershipCore::new(
        node(),
        MemberInfo {
            roles: BTreeSet::from(["backend".into()]),
            app_version: "1.2.3".into(),
        },
        settings,
        Duration::ZERO,
    );
    core.form(Duration::ZERO);
    ClusterView {
        self_node: node(),
        phase: ViewPhase::Member,
        gossip: core.gossip().clone(),
    }
}

#[tokio::test]
async fn seed_nodes_serves_the_cached_body_and_forwards_the_prober() {
    let mut f = fixture(true);
    let (status, ct, body) = get(
        &f.state,
        "/bootstrap/seed-nodes",
        &[(PROBER_HEADER, "10.0.0.2:8558")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/json");
    assert!(body.contains("\"seedNodes\":[]"));
    assert_eq!(
        f.nudges.try_recv().unwrap(),
        "10.0.0.2:8558".parse::<ContactPoint>().unwrap()
    );
    // Garbage in the header is ignored.
    get(
        &f.state,
        "/bootstrap/seed-nodes",
        &[(PROBER_HEADER, "not an address")],
    )
    .await;
    assert!(f.nudges.try_recv().is_err());
}

fn key() -> crate::base::secret::ClusterKey {
    crate::base::secret::ClusterKey::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
}

#[tokio::test]
async fn seed_nodes_answers_are_signed_over_the_probers_nonce() {
    use crate::api::seed_nodes::{NONCE_HEADER, SIGNATURE_HEADER, verify};
    let f = fixture(true);
    let nonce = "00112233445566778899aabbccddeeff";
    let resp = router(f.state.clone())
        .oneshot(
            http::Request::get("/bootstrap/seed-nodes")
                .header(NONCE_HEADER, nonce)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let sig = resp.headers()[SIGNATURE_HEADER]
        .to_str()
        .unwrap()
        .to_owned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(verify(&key(), nonce, &body, &sig), Ok(()));
    // Another nonce, another key or another body: refused.
    assert!(verify(&key(), "ffeeddccbbaa99887766554433221100", &body, &sig).is_err());
    let other = crate::base::secret::ClusterKey::new(vec![7; 32]).unwrap();
    assert!(verify(&other, nonce, &body, &sig).is_err());
    assert!(verify(&key(), nonce, b"{}", &sig).is_err());
    // No nonce, or a malformed one: nothing to sign.
    for headers in [vec![], vec![(NONCE_HEADER, "short")]] {
        let mut req = http::Request::get("/bootstrap/seed-nodes");
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = router(f.state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(resp.headers().get(SIGNATURE_HEADER).is_none());
    }
}

#[tokio::test]
async fn ready_only_when_up_and_members_in_akka_shape() {
    let f = fixture(true);
    let (status, _, body) = get(&f.state, "/ready", &[]).await;
    assert_eq!(status, 503);
    assert!(body.contains("/bootstrap/status"), "{body}");
    f.cluster.send_replace(Arc::new(member_view()));
    assert_eq!(get(&f.state, "/ready", &[]).await.0, 200);
    let (status, _, body) = get(&f.state, "/cluster/members", &[]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["selfNode"], "muster://shop@10.0.0.1:2552");
    assert_eq!(v["leader"], "muster://shop@10.0.0.1:2552");
    assert_eq!(v["oldest"], "muster://shop@10.0.0.1:2552");
    assert_eq!(v["members"][0]["status"], "Up");
    assert_eq!(v["members"][0]["nodeUid"], "7");
    assert_eq!(v["members"][0]["roles"][0], "backend");
    assert_eq!(v["members"][0]["upNumber"], 1);
    assert_eq!(v["members"][0]["appVersion"], "1.2.3");
    assert_eq!(v["oldestPerRole"]["backend"], "muster://shop@10.0.0.1:2552");
    assert_eq!(v["unreachable"], serde_json::json!([]));
}

#[tokio::test]
async fn status_explains_and_other_routes_answer() {
    let f = fixture(true);
    let (status, _, body) = get(&f.state, "/bootstrap/status", &[]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["phase"], "discovering");
    assert!(
        v["reason"]
            .as_str()
            .unwrap()
            .contains("no lookup has succeeded yet"),
        "{body}"
    );
    assert_eq!(v["bootstrap"]["decision"]["decision"], "wait");

    let f2 = fixture(false);
    let (_, _, body) = get(&f2.state, "/bootstrap/status", &[]).await;
    assert!(body.contains("\"phase\":\"seed-nodes\""), "{body}");

    assert_eq!(get(&f.state, "/alive", &[]).await.0, 200);
    let (status, ct, body) = get(&f.state, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/openmetrics-text"));
    assert!(
        body.contains("muster_transport_messages_dropped_total") || body.contains("# EOF"),
        "{body}"
    );
    // The phase metric says what /bootstrap/status says: one phase at 1, the rest 0.
    assert!(
        body.contains("muster_bootstrap_phase{phase=\"discovering\"} 1\n"),
        "{body}"
    );
    let ones = body
        .lines()
        .filter(|l| l.starts_with("muster_bootstrap_phase{") && l.ends_with(" 1"))
        .count();
    assert_eq!(ones, 1, "{body}");
    let (_, _, body) = get(&f2.state, "/metrics", &[]).await;
    assert!(
        body.contains("muster_bootstrap_phase{phase=\"seed-nodes\"} 1\n"),
        "{body}"
    );
    let (status, _, body) = get(&f.state, "/nope", &[]).await;
    assert_eq!(status, 404);
    assert!(body.contains("/cluster/members"));
}

#[tokio::test]
async fn the_seed_nodes_cache_follows_membership_and_discovery() {
    let (cluster_tx, cluster_rx) = watch::channel(Arc::new(ClusterView {
        self_node: node(),
        phase: ViewPhase::Idle,
        gossip: Default::default(),
    }));
    let (seen_tx, seen_rx) = watch::channel(Arc::new(BTreeSet::new()));
    let (out_tx, mut out_rx) = watch::channel(Bytes::new());
    tokio::spawn(run_seed_nodes_cache(cluster_rx, seen_rx, out_tx));
    let body = |rx: &watch::Receiver<Bytes>| serde_json::from_slice::<SeedNodes>(&rx.borrow()).ok();
    out_rx.changed().await.unwrap();
    let first = body(&out_rx).unwrap();
    assert!(first.seed_nodes.is_empty());
    seen_tx.send_replace(Arc::new(BTreeSet::from(["10.0.0.1:8558"
        .parse::<ContactPoint>()
        .unwrap()])));
    out_rx.changed().await.unwrap();
    assert_eq!(
        body(&out_rx).unwrap().contact_points,
        Some(BTreeSet::from(["10.0.0.1:8558".parse().unwrap()]))
    );
    // With the discovery side gone (explicit seed nodes), membership changes still show.
    drop(seen_tx);
    cluster_tx.send_replace(Arc::new(member_view()));
    loop {
        out_rx.changed().await.unwrap();
        if let Some(b) = body(&out_rx)
            && !b.seed_nodes.is_empty()
        {
            assert_eq!(b.seed_nodes[0].status, MemberStatus::Up);
            assert_eq!(b.seed_nodes[0].node_uid, 7);
            break;
        }
    }
}

async fn send(
    app: &AppState,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    send_with(app, method, path, &headers, body).await
}

#[tokio::test]
async fn leave_and_down_need_the_token() {
    let f = fixture(false);
    let me = "/cluster/members/muster://shop@10.0.0.1:2552";
    for token in [None, Some("wrong-token-of-enough-length")] {
        let (status, body) = send(&f.state, "DELETE", me, token, "").await;
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("Bearer"), "{body}");
        let (status, _) = send(&f.state, "PUT", &format!("{me}?operation=Down"), token, "").await;
        assert_eq!(status, 401);
    }
    let (status, body) = send(&f.state, "DELETE", me, Some(TOKEN), "").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"message":"Leaving muster://shop@10.0.0.1:2552"}"#)
    );
    let (status, body) = send(&f.state, "PUT", me, Some(TOKEN), "operation=Down").await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"message":"Downing muster://shop@10.0.0.1:2552"}"#)
    );
    let (status, body) = send(&f.state, "PUT", me, Some(TOKEN), "operation=Explode").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(
        &f.state,
        "DELETE",
        "/cluster/members/muster://shop@10.0.0.9:2552",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = send(
        &f.state,
        "DELETE",
        "/cluster/members/nonsense",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("muster://"), "{body}");
}

async fn send_with(
    app: &AppState,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut req = http::Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = router(app.clone())
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_join_takes_the_address_in_every_form_and_needs_the_token() {
    let mut f = fixture(false);
    let (status, _) = send(
        &f.state,
        "POST",
        "/cluster/members",
        None,
        "address=10.0.0.2:2552",
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = send(&f.state, "POST", "/cluster/members", Some(TOKEN), "").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("`address`"), "{body}");
    let (status, body) = send(
        &f.state,
        "POST",
        "/cluster/members",
        Some(TOKEN),
        "address=muster%3A%2F%2Fother%4010.0.0.2%3A2552",
    )
    .await;
    assert_eq!(status, 400, "another cluster's name: {body}");
    assert!(body.contains("cluster `other`"), "{body}");
    assert!(f.joins.try_recv().is_err(), "nothing asked");
    // Akka's documented call: `curl -F address=…`, a multipart form.
    let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"address\"\r\n\r\nshop@10.0.0.2:2552\r\n--XyZ--\r\n";
    let (status, body) = send_with(
        &f.state,
        "POST",
        "/cluster/members",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "multipart/form-data; boundary=XyZ"),
        ],
        multipart,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"message":"Joining muster://shop@10.0.0.2:2552"}"#)
    );
    assert_eq!(
        f.joins.try_recv().unwrap(),
        "muster://shop@10.0.0.2:2552"
            .parse::<NodeAddress>()
            .unwrap()
    );
    // Now a member: a second join is refused and says why.
    let (status, body) = send(
        &f.state,
        "POST",
        "/cluster/members?address=10.0.0.3:2552",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("joins no other cluster"), "{body}");
}

#[tokio::test]
async fn forming_over_the_api_is_refused_while_a_contact_point_reports_a_cluster() {
    use crate::api::SeedNode;
    use crate::bootstrap::decider::ProbeAnswer;
    let other = "10.0.0.2:8558".parse::<ContactPoint>().unwrap();
    let seed = NodeAddress::new("shop", other.ip, 2552);
    let answered = seed.clone();
    let mut f = fixture_with(true, move |b| {
        let mut rng = crate::base::rng::Rng::seeded(1);
        b.on_lookup(Duration::ZERO, &mut rng, Ok((vec![other.clone()], vec![])));
        let answer = ProbeAnswer {
            at: Duration::ZERO,
            answer: SeedNodes {
                self_node: answered.clone(),
                seed_nodes: vec![SeedNode {
                    node: answered,
                    node_uid: 3,
                    status: MemberStatus::Up,
                    roles: vec![],
                }],
                contact_points: None,
            },
            from_self: false,
        };
        b.on_probe(Duration::ZERO, &mut rng, &other, Ok(answer));
    });
    let (status, body) = send(
        &f.state,
        "POST",
        "/cluster/members",
        Some(TOKEN),
        "address=10.0.0.1:2552",
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("10.0.0.2:8558") && body.contains(&seed.to_string()),
        "{body}"
    );
    assert!(f.joins.try_recv().is_err(), "nothing asked of membership");
    // Joining that cluster is what it says to do, and is done.
    let (status, body) = send(
        &f.state,
        "POST",
        "/cluster/members",
        Some(TOKEN),
        "address=10.0.0.2:2552",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(f.joins.try_recv().unwrap(), seed);
}

#[tokio::test]
async fn a_full_shutdown_is_asked_with_the_token_at_either_path() {
    let f = fixture(false);
    let (status, _) = send(
        &f.state,
        "PUT",
        "/cluster?operation=prepare-for-full-shutdown",
        None,
        "",
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = send(&f.state, "PUT", "/cluster", Some(TOKEN), "operation=Leave").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("prepare-for-full-shutdown"), "{body}");
    for path in ["/cluster", "/cluster/"] {
        let (status, body) = send(
            &f.state,
            "PUT",
            path,
            Some(TOKEN),
            "operation=Prepare-for-full-shutdown",
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"message":"Preparing for full cluster shutdown"}"#)
        );
    }
    // Akka's spellings of the member list with a slash answer too.
    let (status, _, _) = get(&f.state, "/cluster/members/", &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_gone_pod_is_told_with_the_token() {
    let f = fixture(false);
    let me = "/cluster/members/10.0.0.1:2552?operation=PodGone";
    let (status, _) = send(&f.state, "PUT", me, None, "").await;
    assert_eq!(status, 401);
    let (status, body) = send(&f.state, "PUT", me, Some(TOKEN), "").await;
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            r#"{"message":"Pod of muster://shop@10.0.0.1:2552 gone"}"#
        )
    );
    let (status, body) = send(
        &f.state,
        "PUT",
        "/cluster/members/10.0.0.9:2552?operation=podgone",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // The incarnation meant: another uid at that address is not it.
    for (uid, code) in [("7", 200), ("8", 404), ("x", 400)] {
        let path = format!("/cluster/members/10.0.0.1:2552?operation=PodGone&uid={uid}");
        let (status, body) = send(&f.state, "PUT", &path, Some(TOKEN), "").await;
        assert_eq!(status, code, "uid {uid}: {body}");
    }
}

/// Finding H1 of helper-29's review: forming over the API fails closed — a contact
/// point that has not answered may hide a cluster, and without bootstrap there is
/// nothing to check with.
#[tokio::test]
async fn forming_over_the_api_is_refused_unless_bootstrap_would_allow_it() {
    let silent = "10.0.0.2:8558".parse::<ContactPoint>().unwrap();
    let mut f = fixture_with(true, move |b| {
        let mut rng = crate::base::rng::Rng::seeded(1);
        b.on_lookup(Duration::ZERO, &mut rng, Ok((vec![silent], vec![])));
    });
    let form = "address=10.0.0.1:2552";
    let (status, body) = send(&f.state, "POST", "/cluster/members", Some(TOKEN), form).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("10.0.0.2:8558") && body.contains("has not answered"),
        "{body}"
    );
    // Alone (helper-30's scenario 3): bootstrap would wait for its required contact
    // points, so no formation either.
    let mut alone = fixture_with(true, |b| {
        let mut rng = crate::base::rng::Rng::seeded(1);
        let me = "10.0.0.1:8558".parse::<ContactPoint>().unwrap();
        b.on_lookup(Duration::ZERO, &mut rng, Ok((vec![me], vec![])));
    });
    let (status, body) = send(&alone.state, "POST", "/cluster/members", Some(TOKEN), form).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("bootstrap would not form here now"), "{body}");
    assert!(alone.joins.try_recv().is_err());
    let mut without = fixture(false);
    let (status, body) = send(
        &without.state,
        "POST",
        "/cluster/members",
        Some(TOKEN),
        form,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("does not bootstrap"), "{body}");
    assert!(f.joins.try_recv().is_err() && without.joins.try_recv().is_err());
}

#[tokio::test]
async fn a_down_in_akkas_multipart_form_is_understood() {
    let f = fixture(false);
    let multipart =
        "--b0\r\nContent-Disposition: form-data; name=\"operation\"\r\n\r\ndown\r\n--b0--\r\n";
    let (status, body) = send_with(
        &f.state,
        "PUT",
        "/cluster/members/shop@10.0.0.1:2552",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "multipart/form-data; boundary=\"b0\""),
        ],
        multipart,
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"message":"Downing muster://shop@10.0.0.1:2552"}"#)
    );
}

#[tokio::test]
async fn without_a_configured_token_mutating_routes_are_off() {
    let mut f = fixture(false);
    f.state.token = None;
    let (status, body) = send(
        &f.state,
        "DELETE",
        "/cluster/members/muster://shop@10.0.0.1:2552",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("management.token-file"), "{body}");
}

#[test]
fn event_ids_resume_only_on_the_incarnation_that_issued_them() {
    let header = |v: &str| HeaderValue::from_str(v).expect("header");
    assert_eq!(resume_point(7, None), None, "no header: a snapshot");
    assert_eq!(resume_point(7, Some(&header(&event_id(7, 42)))), Some(42));
    assert_eq!(resume_point(7, Some(&header(" 7-0 "))), Some(0));
    // Another agent's id, a bare number, garbage: beyond the log, so a resync.
    for other in ["8-42", "42", "7-", "-42", "x-y", ""] {
        assert_eq!(
            resume_point(7, Some(&header(other))),
            Some(u64::MAX),
            "{other}"
        );
    }
}

#[tokio::test]
async fn event_subscribers_beyond_the_cap_get_503() {
    let f = fixture(true);
    let _taken = f
        .state
        .event_subscribers
        .clone()
        .try_acquire_many_owned(2)
        .unwrap();
    let (status, _, body) = get(&f.state, "/cluster/events", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("subscribers"), "{body}");
}

#[tokio::test]
async fn a_put_without_the_token_is_refused_before_its_body_is_read() {
    let f = fixture(true);
    // A body that never ends: reading it would hang the request.
    let never = axum::body::Body::from_stream(futures_util::stream::pending::<
        Result<bytes::Bytes, std::io::Error>,
    >());
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        router(f.state.clone()).oneshot(
            http::Request::put("/cluster/members/muster://shop@10.0.0.1:2552?operation=Leave")
                .header("content-length", "100")
                .body(never)
                .unwrap(),
        ),
    )
    .await
    .expect("answered without waiting for the body")
    .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // With the token, a body that does not come times out (fixture: 1 s).
    let never = axum::body::Body::from_stream(futures_util::stream::pending::<
        Result<bytes::Bytes, std::io::Error>,
    >());
    let resp = router(f.state.clone())
        .oneshot(
            http::Request::put("/cluster/members/muster://shop@10.0.0.1:2552")
                .header("authorization", format!("Bearer {TOKEN}"))
                .body(never)
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 408);
}

#[tokio::test]
async fn a_member_is_found_by_its_address_in_any_of_the_accepted_forms() {
    let f = fixture(false);
    f.cluster.send_replace(Arc::new(member_view()));
    for form in [
        "muster://shop@10.0.0.1:2552",
        "shop@10.0.0.1:2552",
        "10.0.0.1:2552",
    ] {
        let (status, ct, body) = get(&f.state, &format!("/cluster/members/{form}"), &[]).await;
        assert_eq!(
            (status, ct.as_str()),
            (200, "application/json"),
            "{form}: {body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        // The member as /cluster/members lists it (Akka's four fields, then muster's).
        assert_eq!(v["node"], "muster://shop@10.0.0.1:2552", "{form}");
        assert_eq!(v["nodeUid"], "7");
        assert_eq!(v["status"], "Up");
        assert_eq!(v["roles"], serde_json::json!(["backend"]));
        assert_eq!(v["upNumber"], 1);
    }
    let (status, _, body) = get(&f.state, "/cluster/members/10.0.0.9:2552", &[]).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        body.contains("no member muster://shop@10.0.0.9:2552"),
        "{body}"
    );
    // Another cluster's name is another address.
    let (status, _, _) = get(&f.state, "/cluster/members/cart@10.0.0.1:2552", &[]).await;
    assert_eq!(status, 404);
    let (status, _, body) = get(&f.state, "/cluster/members/nonsense", &[]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("host:port"), "{body}");
    // The mutating routes take the same forms.
    let (status, body) = send(
        &f.state,
        "DELETE",
        "/cluster/members/10.0.0.1:2552",
        Some(TOKEN),
        "",
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"message":"Leaving muster://shop@10.0.0.1:2552"}"#)
    );
}

#[tokio::test]
async fn ready_answers_in_the_configured_states_only() {
    let mut f = fixture(false);
    f.cluster.send_replace(Arc::new(member_view()));
    assert_eq!(get(&f.state, "/ready", &[]).await.0, 200, "Up, by default");
    // Ready while Joining too, not when Up (Akka's ready-states takes any statuses).
    f.state.ready_states = Arc::from([MemberStatus::Joining]);
    let (status, _, body) = get(&f.state, "/ready", &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("this member is Up, not Joining (management.ready-states)"),
        "{body}"
    );
    f.state.ready_states = Arc::from([MemberStatus::Joining, MemberStatus::Up]);
    assert_eq!(get(&f.state, "/ready", &[]).await.0, 200);
}

/// A request to the handover routes from `peer`.
async fn from(
    app: &AppState,
    peer: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (u16, String) {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(t) = auth {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(Peer(format!("{peer}:40000").parse().unwrap()));
    let resp = router(app.clone()).oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_handover_gate_is_held_from_this_pod_or_with_the_token_and_reported() {
    let f = fixture(false);
    let put = "/handover/holds/singleton?reason=handing%20over";
    // Another pod, without the token: refused, nothing held.
    let (status, body) = from(&f.state, "10.0.0.2", "PUT", put, None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = from(
        &f.state,
        "10.0.0.2",
        "PUT",
        put,
        Some("wrong-token-0123456789"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(f.state.handover.body().holds.is_empty());
    // Loopback is no proof of the pod where the agent listens on the pod's IP (a
    // mesh proxy connects from loopback for anyone).
    let (status, body) = from(&f.state, "127.0.0.6", "PUT", put, None).await;
    assert_eq!(status, 401, "{body}");
    // The application beside the agent: from the agent's own IP (v4 or v4-mapped).
    let (status, body) = from(&f.state, "10.0.0.1", "PUT", put, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = from(
        &f.state,
        "[::ffff:10.0.0.1]",
        "PUT",
        "/handover/holds/shards",
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Or anyone with the token.
    let (status, body) = from(
        &f.state,
        "10.0.0.9",
        "PUT",
        "/handover/holds/cache",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = get(&f.state, "/handover", &[]).await;
    assert_eq!(status, 200);
    let b: crate::api::handover::HandoverBody = serde_json::from_str(&body).unwrap();
    assert_eq!(b.names(), "cache, shards, singleton");
    assert_eq!(b.holds[2].reason.as_deref(), Some("handing over"));
    assert!(!b.ready_to_stop && !b.stopping && !b.timed_out, "{body}");
    // Bad names change nothing; releasing what is not held is a 404.
    let (status, body) = from(
        &f.state,
        "10.0.0.1",
        "PUT",
        "/handover/holds/Bad_Name",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = from(
        &f.state,
        "10.0.0.1",
        "DELETE",
        "/handover/holds/other",
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(f.state.handover.body().holds.len(), 3);
    // Released by another pod without the token: refused.
    let (status, _) = from(
        &f.state,
        "10.0.0.2",
        "DELETE",
        "/handover/holds/cache",
        None,
    )
    .await;
    assert_eq!(status, 401);
    for name in ["cache", "shards", "singleton"] {
        let (status, body) = from(
            &f.state,
            "10.0.0.1",
            "DELETE",
            &format!("/handover/holds/{name}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let b = f.state.handover.body();
    assert!(b.ready_to_stop && b.holds.is_empty(), "{b:?}");
}

#[tokio::test]
async fn on_one_host_loopback_is_this_node_and_without_a_token_others_are_forbidden() {
    let mut f = fixture(false);
    f.state.own_ip = [127, 0, 23, 1].into();
    let (status, body) = from(
        &f.state,
        "127.0.0.1",
        "PUT",
        "/handover/holds/a?reason=x",
        None,
    )
    .await;
    assert_eq!(status, 200, "an agent listening on loopback: {body}");
    f.state.token = None;
    let (status, body) = from(&f.state, "10.0.0.9", "PUT", "/handover/holds/b", None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(f.state.handover.body().names(), "a");
    // The reason from a form body; one too long is refused and holds nothing.
    let mut req = http::Request::builder()
        .method("PUT")
        .uri("/handover/holds/c")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("reason={}", "r".repeat(300))))
        .unwrap();
    req.extensions_mut()
        .insert(Peer("127.0.0.1:4000".parse().unwrap()));
    let resp = router(f.state.clone()).oneshot(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(f.state.handover.body().names(), "a");
}
