//! The HTTP management API (Akka Management compatible where Akka has the endpoint).
//!
//! | route | answer |
//! |---|---|
//! | `GET /bootstrap/seed-nodes` | `{selfNode, seedNodes: [{node, nodeUid, status, roles}], contactPoints}` |
//! | `GET /bootstrap/status` | phase, the reason in words, contact points and their probe results |
//! | `GET /alive` | 200 while the agent runs |
//! | `GET /ready` | 200 when this member is in one of `management.ready-states` (Up or WeaklyUp), else 503 with the reason |
//! | `GET /cluster/members` | `{selfNode, members, unreachable, leader, oldest, oldestPerRole}` |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /cluster/events` | server-sent events: the current state, then every change; `Last-Event-ID` resumes |
//! | `GET /cluster/domain-events` | the same events in Akka Management's shapes, `?type=` selecting them |
//! | `GET /cluster/members/{address}` | `{node, nodeUid, status, roles, upNumber, appVersion}` of that member, 404 if none |
//! | `PUT /cluster/members/{address}` | `operation=Leave` or `Down` (query or form body), or muster's `PodGone`; bearer token |
//! | `DELETE /cluster/members/{address}` | Leave; bearer token |
//! | `PUT /cluster` | `operation=prepare-for-full-shutdown`: the whole cluster prepares to stop; bearer token |
//! | `POST /cluster/members` | `address=…`: this node joins that member's cluster (its own address: forms one); bearer token |
//! | `GET /handover` | the handover gate: `{readyToStop, stopping, stoppingForMillis, timeoutMillis, timedOut, holds: [{name, reason, heldForMillis}]}` |
//! | `PUT /handover/holds/{name}` | the application holds the gate (`reason=…` optional): its pod is not ready to be stopped; from this pod, or bearer token |
//! | `DELETE /handover/holds/{name}` | releases that hold; from this pod, or bearer token |
//!
//! An `{address}` is a member's full address (`muster://demo@10.0.0.1:2552`), or
//! without the scheme (`demo@10.0.0.1:2552`), or `host:port` alone (this cluster's name).
//!
//! The mutating routes need `Authorization: Bearer <management.token>`: 401 without it,
//! 403 when no token is configured (they are then off).
//! `fn router(state) -> Router` so tests drive it with `oneshot`; [`server`] serves it
//! with a header-read timeout and a connection cap.

pub mod server;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::extract::{Path, Query, RawQuery};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::api::{
    BootstrapPhase, BootstrapStatusBody, ErrorBody, PROBER_HEADER, SeedNodes, TlsInUse, seed_nodes,
};
use crate::base::address::{ContactPoint, NodeAddress};
use crate::base::member::MemberStatus;
use crate::base::secret::{ClusterKey, ManagementToken};
use crate::bootstrap::coordinator::StatusRequest;
use crate::bootstrap::probe::SelfProbes;
use crate::bootstrap::state::BootstrapStatus;
use crate::handover::HandoverGate;
use crate::membership::actor::{ClusterView, Command, ViewPhase};
use crate::membership::core::{JoinError, MarkError};
use crate::membership::events::EventHub;
use crate::membership::report;
use crate::metrics::Metrics;
use crate::tls::Tls;

/// What the handlers read (snapshots) and whom they ask (actors).
#[derive(Debug, Clone)]
pub struct AppState {
    /// The `/bootstrap/seed-nodes` body, rebuilt on every change (hot path: no work per request).
    pub seed_nodes: watch::Receiver<Bytes>,
    pub cluster: watch::Receiver<Arc<ClusterView>>,
    /// The bootstrap coordinator; `None` with explicit seed nodes.
    pub bootstrap: Option<mpsc::Sender<StatusRequest>>,
    pub nudges: Option<mpsc::Sender<ContactPoint>>,
    pub metrics: Metrics,
    pub max_body_bytes: usize,
    /// Bearer token of the mutating routes; `None`: they are refused.
    pub token: Option<ManagementToken>,
    /// The membership actor, for leave and down.
    pub membership: mpsc::Sender<Command>,
    /// Cluster events for `/cluster/events`.
    pub events: Arc<EventHub>,
    /// Signs `/bootstrap/seed-nodes` answers over the prober's nonce.
    pub cluster_key: Option<ClusterKey>,
    /// This node's own probes in flight: a probe from ourselves is marked as such.
    pub self_probes: SelfProbes,
    /// The address this node's prober connects from: only a probe on a connection from
    /// it can be this node's own (a relay elsewhere cannot pass as us).
    pub own_ip: std::net::IpAddr,
    /// A request body must arrive within this time (`management.header-read-timeout`).
    pub body_timeout: Duration,
    /// Slots for `/cluster/events` subscribers ([`MAX_EVENT_SUBSCRIBERS`]).
    pub event_subscribers: Arc<Semaphore>,
    /// TLS of both ports, reported in `/bootstrap/status`.
    pub tls: Option<Arc<Tls>>,
    /// The member statuses in which `/ready` answers 200 (`management.ready-states`).
    pub ready_states: Arc<[MemberStatus]>,
    /// The application's handover gate (`/handover`).
    pub handover: HandoverGate,
}

/// `/cluster/events` streams served at once: each holds a connection for as long as
/// the client likes, so they get a share of the connections of their own.
pub const MAX_EVENT_SUBSCRIBERS: usize = 128;

pub fn router(state: AppState) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/bootstrap/seed-nodes", get(seed_nodes))
        .route("/bootstrap/status", get(bootstrap_status))
        .route("/alive", get(alive))
        .route("/ready", get(ready))
        .route("/cluster/members", get(cluster_members).post(join_member))
        .route("/cluster/events", get(cluster_events))
        .route("/cluster/domain-events", get(domain_events))
        .route(
            "/cluster/members/{*address}",
            get(cluster_member).put(mark_member).delete(leave_member),
        )
        // Akka documents these two with a trailing slash: both forms are taken.
        .route("/cluster", axum::routing::put(cluster_operation))
        .route("/cluster/", axum::routing::put(cluster_operation))
        .route("/cluster/members/", get(cluster_members).post(join_member))
        .route("/metrics", get(metrics))
        .route("/handover", get(handover))
        .route(
            "/handover/holds/{name}",
            axum::routing::put(hold).delete(release),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: msg.into() })).into_response()
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint; see /bootstrap/seed-nodes, /bootstrap/status, /alive, /ready, /cluster/members, /cluster/members/{address}, /cluster/events, /cluster/domain-events, /handover, /metrics",
    )
}

/// The remote address of the connection a request came on (set by the server).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

async fn seed_nodes(
    State(s): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    headers: HeaderMap,
) -> Response {
    if let (Some(nudges), Some(prober)) = (&s.nudges, headers.get(PROBER_HEADER))
        && let Some(cp) = prober
            .to_str()
            .ok()
            .and_then(|v| v.parse::<ContactPoint>().ok())
    {
        // A peer is up and probing us: probe it back soon. Best effort.
        let _ = nudges.try_send(cp);
    }
    let body = s.seed_nodes.borrow().clone();
    let nonce = headers
        .get(seed_nodes::NONCE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|n| seed_nodes::valid_nonce(n));
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.clone(),
    )
        .into_response();
    if let Some(nonce) = nonce {
        // Our own nonce on a connection from our own address: our prober reached us.
        // The same nonce relayed by someone else arrives from their address.
        if peer.is_some_and(|p| p.0.0.ip().to_canonical() == s.own_ip) {
            s.self_probes.saw(nonce);
        }
        if let Some(key) = &s.cluster_key
            && let Ok(v) = HeaderValue::from_str(&seed_nodes::sign(key, nonce, &body))
        {
            resp.headers_mut().insert(seed_nodes::SIGNATURE_HEADER, v);
        }
    }
    resp
}

/// Where this agent is: the phase, why, and the coordinator's state when bootstrapping.
/// `Err` is the response to give when the coordinator does not answer.
async fn current_phase(
    s: &AppState,
) -> Result<(BootstrapPhase, String, Option<BootstrapStatus>), Response> {
    let view = s.cluster.borrow().clone();
    let bootstrap = match &s.bootstrap {
        Some(tx) => {
            let (reply, rx) = oneshot::channel();
            if tx.send(reply).await.is_err() {
                return Err(error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the bootstrap coordinator has stopped",
                ));
            }
            match tokio::time::timeout(Duration::from_secs(2), rx).await {
                Ok(Ok(st)) => Some(st),
                _ => {
                    return Err(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the bootstrap coordinator did not answer",
                    ));
                }
            }
        }
        None => None,
    };
    let self_status = view.self_status().map(|st| st.as_str());
    let (phase, reason) = match (view.phase, &bootstrap) {
        (ViewPhase::JoinFailed, _) => (
            BootstrapPhase::JoinFailed,
            "joining did not succeed within cluster.shutdown-after-unsuccessful-join-seed-nodes; the agent is exiting to be restarted".to_owned(),
        ),
        (ViewPhase::Left, _) => (
            BootstrapPhase::Left,
            "this member left the cluster gracefully; the agent is shutting down".to_owned(),
        ),
        (ViewPhase::Downed, _) => (
            BootstrapPhase::Downed,
            "the cluster downed or removed this member; the agent is shutting down".to_owned(),
        ),
        (ViewPhase::Member, _) => (
            BootstrapPhase::Joined,
            format!(
                "this node is a cluster member ({})",
                self_status.unwrap_or("unknown")
            ),
        ),
        (_, None) => (
            BootstrapPhase::SeedNodes,
            match view.phase {
                ViewPhase::Joining => {
                    "joining the configured seed nodes (cluster.seed-nodes); bootstrap is not used"
                        .to_owned()
                }
                _ => "waiting to join the configured seed nodes".to_owned(),
            },
        ),
        (ViewPhase::Joining, Some(b)) => (
            BootstrapPhase::Joining,
            format!("{}; waiting for a welcome", b.reason),
        ),
        (ViewPhase::Idle, Some(b)) => (
            if b.lookups == 0 {
                BootstrapPhase::Discovering
            } else {
                BootstrapPhase::Probing
            },
            b.reason.clone(),
        ),
    };
    Ok((phase, reason, bootstrap))
}

async fn bootstrap_status(State(s): State<AppState>) -> Response {
    let (phase, reason, bootstrap) = match current_phase(&s).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let view = s.cluster.borrow().clone();
    Json(BootstrapStatusBody {
        phase,
        self_node: view.self_node.address.clone(),
        self_status: view.self_status(),
        reason,
        bootstrap,
        tls: s.tls.as_ref().map(|t| {
            let (certificate, trusted) = t.in_use();
            TlsInUse {
                certificate,
                trusted,
                not_after: t.not_after().map(crate::tls::rfc3339),
            }
        }),
        cluster_keys: s.cluster_key.as_ref().map(|k| k.ids()).unwrap_or_default(),
    })
    .into_response()
}

async fn alive() -> &'static str {
    "OK"
}

async fn ready(State(s): State<AppState>) -> Response {
    let view = s.cluster.borrow().clone();
    match view.self_status() {
        Some(st) if s.ready_states.contains(&st) => (StatusCode::OK, st.as_str()).into_response(),
        Some(st) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "this member is {}, not {} (management.ready-states)",
                st.as_str(),
                s.ready_states
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node is not a cluster member yet; see /bootstrap/status",
        ),
    }
}

async fn cluster_members(State(s): State<AppState>) -> Response {
    let view = s.cluster.borrow().clone();
    Json(report::cluster_members(
        &view.self_node.address,
        &view.gossip,
    ))
    .into_response()
}

/// The bearer token check of the mutating routes: the refusal, if any.
fn unauthorized(s: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &s.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "join, leave and down over HTTP are off: set management.token-file (or MUSTER_MANAGEMENT_TOKEN) to enable them",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(p) if token.matches(p) => None,
        _ => {
            let mut r = error(
                StatusCode::UNAUTHORIZED,
                "this route needs `Authorization: Bearer <token>` with the agent's management token",
            );
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"muster\""),
            );
            Some(r)
        }
    }
}

/// Who may hold the handover gate: the application beside the agent — a connection
/// from the agent's own IP, which only a process inside the pod's network namespace
/// has — or whoever has the management token. Other loopback addresses count only
/// where the agent itself listens on one (a single host): in a pod, a sidecar proxy
/// (a service mesh) connects from loopback on behalf of anyone. The refusal, if any.
fn not_from_this_pod(s: &AppState, peer: Option<Peer>, headers: &HeaderMap) -> Option<Response> {
    let ip = peer.map(|p| p.0.ip().to_canonical());
    if ip.is_some_and(|ip| ip == s.own_ip || (ip.is_loopback() && s.own_ip.is_loopback())) {
        return None;
    }
    if s.token.is_none() {
        return Some(error(
            StatusCode::FORBIDDEN,
            "the handover gate is held from this pod only (the application beside the agent, connecting to the agent's own address, MUSTER_AGENT_URL); no management token is configured",
        ));
    }
    unauthorized(s, headers)
}

async fn handover(State(s): State<AppState>) -> Response {
    Json(s.handover.body()).into_response()
}

async fn hold(
    State(s): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    Path(name): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    if let Some(r) = not_from_this_pod(&s, peer.map(|p| p.0), &headers) {
        return r;
    }
    let reason = match read_field(&s, &query, &headers, body, "reason").await {
        Ok(r) => r,
        Err(r) => return r,
    };
    match s.handover.hold(&name, reason.as_deref()) {
        Ok(()) => Json(s.handover.body()).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn release(
    State(s): State<AppState>,
    peer: Option<axum::Extension<Peer>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = not_from_this_pod(&s, peer.map(|p| p.0), &headers) {
        return r;
    }
    if s.handover.release(&name) {
        Json(s.handover.body()).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no hold {name:?}; see GET /handover"),
        )
    }
}

#[derive(Debug, serde::Serialize)]
struct Message {
    message: String,
}

/// The member address `text` names for a node of cluster `system`: a full address,
/// one without the scheme, or `host:port` alone (Akka takes the first two).
pub fn member_address(text: &str, system: &str) -> Result<NodeAddress, String> {
    let text = text.trim_start_matches('/');
    let full = if text.contains("://") {
        text.to_owned()
    } else if text.contains('@') {
        format!("{}://{text}", crate::base::address::SCHEME)
    } else {
        format!("{}://{system}@{text}", crate::base::address::SCHEME)
    };
    full.parse::<NodeAddress>().map_err(|_| {
        format!(
            "`{}` is not a member address; use the form in /cluster/members (e.g. muster://{system}@10.0.0.1:2552), without `muster://`, or host:port",
            text.chars().take(200).collect::<String>()
        )
    })
}

/// `GET /cluster/members/{address}`: that member as `/cluster/members` lists it.
async fn cluster_member(State(s): State<AppState>, Path(address): Path<String>) -> Response {
    let view = s.cluster.borrow().clone();
    let address = match member_address(&address, &view.self_node.address.system) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let all = report::cluster_members(&view.self_node.address, &view.gossip);
    match all.members.into_iter().find(|m| m.node == address) {
        Some(m) => Json(m).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no member {address} in the cluster this node sees; see /cluster/members"),
        ),
    }
}

/// Asks the membership task `command` (built around its reply channel) and waits for
/// the answer; `Err` is the 503 to give when it does not answer.
async fn ask<T>(
    s: &AppState,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    let (reply, answer) = oneshot::channel();
    let unanswered = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the membership task did not answer",
        )
    };
    if s.membership.send(command(reply)).await.is_err() {
        return Err(unanswered());
    }
    answer.await.map_err(|_| unanswered())
}

fn message(text: String) -> Response {
    Json(Message { message: text }).into_response()
}

const NOT_A_MEMBER: &str = "this node is not a cluster member; ask a member";

async fn mark(s: &AppState, address: &str, status: MemberStatus) -> Response {
    let system = s.cluster.borrow().self_node.address.system.clone();
    let address = match member_address(address, &system) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let answer = ask(s, |reply| Command::Mark {
        address: address.clone(),
        status,
        reply,
    })
    .await;
    match answer {
        Ok(Ok(())) => message(format!(
            "{} {address}",
            if status == MemberStatus::Down {
                "Downing"
            } else {
                "Leaving"
            }
        )),
        Ok(Err(MarkError::NoSuchMember)) => error(
            StatusCode::NOT_FOUND,
            format!("no member {address}; see /cluster/members"),
        ),
        Ok(Err(MarkError::NotMember)) => error(StatusCode::SERVICE_UNAVAILABLE, NOT_A_MEMBER),
        Err(r) => r,
    }
}

async fn mark_member(
    State(s): State<AppState>,
    Path(address): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let operation = match field(&s, &query, &headers, body, "operation").await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let status = match operation.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("leave") => MemberStatus::Leaving,
        Some("down") => MemberStatus::Down,
        Some("podgone") => {
            // The incarnation meant, if said (`uid`, in the query).
            let uid = match query.get("uid").map(|u| u.parse::<u64>()) {
                None => None,
                Some(Ok(u)) => Some(u),
                Some(Err(_)) => {
                    return error(StatusCode::BAD_REQUEST, "uid must be a member's nodeUid");
                }
            };
            return pod_gone(&s, &address, uid).await;
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("operation must be Leave, Down or PodGone, got {other:?}"),
            );
        }
    };
    mark(&s, &address, status).await
}

/// muster's `operation=PodGone`: Kubernetes says the pod of that member is gone, so
/// the resolver need not wait `stable-after` for it (`MembershipCore::pod_gone`).
async fn pod_gone(s: &AppState, address: &str, uid: Option<u64>) -> Response {
    let system = s.cluster.borrow().self_node.address.system.clone();
    let address = match member_address(address, &system) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let answer = ask(s, |reply| Command::PodGone {
        address: address.clone(),
        uid,
        reply,
    })
    .await;
    match answer {
        Ok(Ok(true)) => message(format!("Pod of {address} gone")),
        Ok(Ok(false)) => error(
            StatusCode::NOT_FOUND,
            format!("no member {address} that is not down; see /cluster/members"),
        ),
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, NOT_A_MEMBER),
        Err(r) => r,
    }
}

/// Field `name` of a mutating request: from the query, or else from a form body
/// (Akka's `-F operation=Leave`, multipart, or urlencoded), which must arrive within
/// the body timeout and fit in `management.max-body-bytes`. The token is checked
/// first: nobody without it makes the agent wait for, or hold, a body.
async fn field(
    s: &AppState,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
    body: axum::body::Body,
    name: &str,
) -> Result<Option<String>, Response> {
    if let Some(r) = unauthorized(s, headers) {
        return Err(r);
    }
    read_field(s, query, headers, body, name).await
}

/// Field `name` from the query or a form body, with no check of who asks.
async fn read_field(
    s: &AppState,
    query: &std::collections::HashMap<String, String>,
    headers: &HeaderMap,
    body: axum::body::Body,
    name: &str,
) -> Result<Option<String>, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let body =
        match tokio::time::timeout(s.body_timeout, axum::body::to_bytes(body, s.max_body_bytes))
            .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body is larger than management.max-body-bytes ({} bytes)",
                        s.max_body_bytes
                    ),
                ));
            }
            Err(_) => {
                return Err(error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the body did not arrive within {:?} (management.header-read-timeout)",
                        s.body_timeout
                    ),
                ));
            }
        };
    Ok(query
        .get(name)
        .cloned()
        .or_else(|| form_value(content_type, &body, name)))
}

/// Field `name` of a form body: `multipart/form-data` (what `curl -F` sends, as Akka's
/// documentation does) or urlencoded (`curl -d`, anything else).
fn form_value(content_type: Option<&str>, body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let boundary = content_type
        .filter(|c| {
            c.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
        .and_then(|c| {
            c.split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
                .map(|(_, v)| v.trim_matches('"').to_owned())
        });
    match boundary {
        Some(boundary) => text.split(&format!("--{boundary}")).find_map(|part| {
            let (head, value) = part.split_once("\r\n\r\n")?;
            let named = head.lines().any(|l| {
                l.to_ascii_lowercase().starts_with("content-disposition:")
                    && l.split(';')
                        .filter_map(|p| p.trim().split_once('='))
                        .any(|(k, v)| k == "name" && v.trim_matches('"') == name)
            });
            named.then(|| value.trim_end_matches("\r\n").trim().to_owned())
        }),
        None => text
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| crate::api::domain_events::percent_decoded(&v.trim().replace('+', " "))),
    }
}

/// Whether this node may form a new cluster when asked over the API: only where
/// bootstrap itself would form now, checked failing closed — bootstrap runs and
/// answers, `new-cluster-enabled` is on, no formation record is used (under the
/// operator, forming goes through the record and `newClusterEnabled`, never through
/// this), every other discovered contact point answered just now with no cluster, and
/// bootstrap's decision is to form (this node is the lowest contact point, and the
/// required ones agree or stayed stable). `Err`: why not, in words.
async fn may_form(s: &AppState) -> Result<(), String> {
    let bootstrap = match current_phase(s).await {
        Ok((_, _, Some(b))) => b,
        Ok((_, _, None)) => {
            return Err(
                "this node does not bootstrap (cluster.seed-nodes are configured): the first seed node forms".into(),
            );
        }
        Err(_) => return Err("the bootstrap coordinator did not answer; try again".into()),
    };
    if !bootstrap.new_cluster_enabled {
        return Err("bootstrap.new-cluster-enabled is off (the cluster formed before, or forming is locked)".into());
    }
    if bootstrap.formation_record {
        return Err("this node forms only through its formation record (bootstrap.formation-lease), as bootstrap decides; under the operator, spec.bootstrap.newClusterEnabled decides".into());
    }
    if bootstrap.contact_points.is_empty() {
        return Err("no contact point has been discovered yet".into());
    }
    for c in bootstrap.contact_points.iter().filter(|c| !c.is_self) {
        match &c.answer {
            Some(a) if !a.seed_nodes.is_empty() => {
                return Err(format!(
                    "contact point {} reports one (seed nodes {}); join one of them instead",
                    c.contact_point,
                    a.seed_nodes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            Some(a) if a.fresh => {}
            _ => {
                return Err(format!(
                    "contact point {} has not answered just now, so a cluster may exist there",
                    c.contact_point
                ));
            }
        }
    }
    // Bootstrap's own rule: only the lowest contact point forms, once the required
    // contact points agree or stayed stable (two nodes asked at once cannot both pass).
    if !matches!(
        bootstrap.decision,
        crate::bootstrap::decider::Decision::Form { .. }
    ) {
        return Err(format!(
            "bootstrap would not form here now: {}",
            bootstrap.reason
        ));
    }
    Ok(())
}

/// `POST /cluster/members` with `address` (query or form body): this node joins the
/// cluster of the member at that address, or forms a new cluster when the address is
/// its own — refused while a contact point it probed reports a cluster.
async fn join_member(
    State(s): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let address = match field(&s, &query, &headers, body, "address").await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return error(
                StatusCode::BAD_REQUEST,
                "give the member to join as `address` (query or form field), e.g. address=10.0.0.1:2552",
            );
        }
        Err(r) => return r,
    };
    let (me, idle) = {
        let view = s.cluster.borrow();
        (
            view.self_node.address.clone(),
            view.phase == ViewPhase::Idle,
        )
    };
    let address = match member_address(&address, &me.system) {
        Ok(a) => a,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    if address.system != me.system {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{address} is in cluster `{}`; this node belongs to cluster `{}` (cluster.name)",
                address.system, me.system
            ),
        );
    }
    // (Not idle: membership says why it does nothing.)
    if address == me
        && idle
        && let Err(why) = may_form(&s).await
    {
        return error(
            StatusCode::CONFLICT,
            format!("not forming a new cluster: {why}"),
        );
    }
    let answer = ask(&s, |reply| Command::JoinAsked {
        address: address.clone(),
        reply,
    })
    .await;
    match answer {
        Ok(Ok(())) => message(format!("Joining {address}")),
        Ok(Err(e)) => error(
            StatusCode::CONFLICT,
            match e {
                JoinError::AlreadyMember => {
                    "this node is a cluster member already; a member joins no other cluster (see /cluster/members)"
                }
                JoinError::AlreadyJoining => {
                    "this node is joining a cluster already; see /bootstrap/status"
                }
                JoinError::Ended => {
                    "this agent's membership has ended (left, downed, or joining failed); it is shutting down"
                }
            },
        ),
        Err(r) => r,
    }
}

/// `PUT /cluster` with `operation=prepare-for-full-shutdown` (Akka's): the whole
/// cluster prepares to stop (see `MembershipCore::prepare_for_full_shutdown`).
async fn cluster_operation(
    State(s): State<AppState>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let operation = match field(&s, &query, &headers, body, "operation").await {
        Ok(o) => o,
        Err(r) => return r,
    };
    if !operation
        .as_deref()
        .is_some_and(|o| o.eq_ignore_ascii_case("prepare-for-full-shutdown"))
    {
        return error(
            StatusCode::BAD_REQUEST,
            format!("operation must be prepare-for-full-shutdown, got {operation:?}"),
        );
    }
    match ask(&s, |reply| Command::PrepareForFullShutdown { reply }).await {
        Ok(Ok(())) => message("Preparing for full cluster shutdown".to_owned()),
        Ok(Err(_)) => error(StatusCode::SERVICE_UNAVAILABLE, NOT_A_MEMBER),
        Err(r) => r,
    }
}

async fn leave_member(
    State(s): State<AppState>,
    Path(address): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    mark(&s, &address, MemberStatus::Leaving).await
}

/// The SSE id of event `seq` of the agent incarnation `uid`: `UID-SEQ`. The uid makes an
/// id from another agent (or an earlier run of this one) a resume point this agent does
/// not know, so the client resyncs instead of silently skipping events.
fn event_id(uid: u64, seq: u64) -> String {
    format!("{uid}-{seq}")
}

/// Where a `Last-Event-ID` resumes: `None` without the header, `Some(seq)` for one of
/// this incarnation's ids, `Some(u64::MAX)` (beyond the log: a resync) for anything else.
fn resume_point(uid: u64, header: Option<&HeaderValue>) -> Option<u64> {
    let value = header?.to_str().ok().map(str::trim).unwrap_or_default();
    let seq = value
        .split_once('-')
        .filter(|(u, _)| u.parse() == Ok(uid))
        .and_then(|(_, seq)| seq.parse().ok());
    Some(seq.unwrap_or(u64::MAX))
}

/// Server-sent cluster events. Each has an `id`; a client that reconnects with
/// `Last-Event-ID` gets exactly the events it missed while they are still kept, else a
/// `Resync` event followed by the current state.
async fn cluster_events(State(s): State<AppState>, headers: HeaderMap) -> Response {
    event_stream(&s, &headers, |e| {
        serde_json::to_string(e).ok().map(|data| (e.name(), data))
    })
}

/// `/cluster/domain-events`: the same stream in Akka Management's shapes, selected by
/// `type` (see [`crate::api::domain_events`]).
async fn domain_events(
    State(s): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    use crate::api::domain_events::{Filter, Translator};
    let filter = match Filter::parse(query.as_deref()) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let view = s.cluster.borrow().clone();
    let mut translator = Translator::new(
        view.gossip
            .members()
            .map(|m| (m.node.clone(), m.roles.iter().cloned().collect(), m.status)),
    );
    event_stream(&s, &headers, move |e| translator.translate(e, &filter))
}

/// An SSE stream of the cluster's events, each told by `tell` as (name, JSON data), or
/// not sent when it gives none; ids, resumption and the subscriber cap as
/// [`cluster_events`] says.
fn event_stream(
    s: &AppState,
    headers: &HeaderMap,
    tell: impl FnMut(&crate::api::ClusterEvent) -> Option<(&'static str, String)> + Send + 'static,
) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Ok(slot) = s.event_subscribers.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{MAX_EVENT_SUBSCRIBERS} event stream subscribers are served already; try again later"
            ),
        );
    };
    let uid = s.cluster.borrow().self_node.uid;
    let sub = s
        .events
        .subscribe(resume_point(uid, headers.get("last-event-id")));
    if sub.after_the_end {
        // The client saw ClusterShuttingDown already: 204 tells an EventSource to stop
        // reconnecting (each retry would otherwise get the end again while this agent
        // lingers, e.g. for its handover).
        return StatusCode::NO_CONTENT.into_response();
    }
    let resync = sub.resynced.then(|| {
        Event::default().event("Resync").data(
            "the events after Last-Event-ID are no longer kept (or come from another agent); what follows is the current state",
        )
    });
    let first =
        futures_util::stream::iter(resync.into_iter().map(Ok::<_, std::convert::Infallible>));
    // The slot lives as long as the stream.
    // `done`: the last event was handed on; the slot is given back only at the poll
    // after it, once the server has taken that event to write.
    let rest =
        futures_util::stream::unfold(Some((sub, slot, tell, false)), move |state| async move {
            let (mut sub, slot, mut tell, done) = state?;
            if done {
                drop(slot);
                return None;
            }
            loop {
                match sub.next().await? {
                    Ok((id, e)) => {
                        // The last event of every stream: the agent stops soon and waits
                        // for its streams to close (`Agent::close_event_streams`).
                        let last = e == crate::api::ClusterEvent::ClusterShuttingDown;
                        let Some((name, data)) = tell(&e) else {
                            if last {
                                return None;
                            }
                            continue;
                        };
                        // Within the first snapshot an id is no resume point (see
                        // `Subscription::inside_snapshot`): a client that reconnects before
                        // the snapshot ended sends its earlier id and gets the snapshot again.
                        let event = if sub.inside_snapshot() {
                            Event::default()
                        } else {
                            Event::default().id(event_id(uid, id))
                        };
                        let event = event.event(name).data(data);
                        return Some((Ok(event), Some((sub, slot, tell, last))));
                    }
                    // Fell behind the log: say so and end; the client reconnects and resyncs.
                    Err(_) => {
                        return Some((
                            Ok(Event::default().event("Resync").data(
                                "this stream fell behind; reconnect to get the current state",
                            )),
                            None,
                        ));
                    }
                }
            }
        });
    Sse::new(futures_util::StreamExt::chain(first, rest))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    // The phase is read when scraped, from the same place as /bootstrap/status.
    if let Ok((phase, _, _)) = current_phase(&s).await {
        s.metrics
            .set_bootstrap_phase(phase.as_str(), &BootstrapPhase::ALL.map(|p| p.as_str()));
    }
    if let Some(tls) = &s.tls {
        let label = crate::metrics::FileLabel {
            file: "tls.cert-file",
        };
        match tls.not_after() {
            Some(end) => {
                s.metrics
                    .tls_not_after
                    .get_or_create(&label)
                    .set(i64::try_from(end).unwrap_or(i64::MAX));
            }
            // A certificate whose end cannot be read shows none, not the last one's.
            None => {
                s.metrics.tls_not_after.remove(&label);
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// Keeps the `/bootstrap/seed-nodes` body current: rebuilt when membership or the
/// discovered contact points change.
pub async fn run_seed_nodes_cache(
    mut cluster: watch::Receiver<Arc<ClusterView>>,
    mut ever_seen: watch::Receiver<Arc<BTreeSet<ContactPoint>>>,
    out: watch::Sender<Bytes>,
) {
    let mut seen_open = true;
    loop {
        let body = {
            let view = cluster.borrow_and_update().clone();
            let cps = ever_seen.borrow_and_update().clone();
            SeedNodes {
                self_node: view.self_node.address.clone(),
                seed_nodes: if view.is_member() {
                    report::seed_nodes(&view.gossip, &view.self_node)
                } else {
                    Vec::new()
                },
                contact_points: Some((*cps).clone()),
            }
        };
        out.send_replace(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()));
        // Either source may end (no bootstrap with explicit seed nodes); follow the other.
        tokio::select! {
            r = cluster.changed() => if r.is_err() { return },
            r = ever_seen.changed(), if seen_open => if r.is_err() { seen_open = false },
        }
    }
}

#[cfg(test)]
mod tests;
