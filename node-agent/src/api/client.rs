//! The one client of the management API: the bootstrap prober, `muster-agent
//! local-cluster`, the operator, the tests, the benchmarks and the demo all use it.
//! Every request is bounded in time and every answer in size; errors say what happened
//! (unreachable, timed out, an HTTP status, too large, refused) for status pages and logs.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite};

use super::handover::HandoverBody;
use super::seed_nodes::{self, NONCE_HEADER, Refused, SIGNATURE_HEADER, SeedNodes};
use super::status::BootstrapStatusBody;
use super::{ClusterMembers, PROBER_HEADER};
use crate::base::address::{ContactPoint, NodeAddress};
use crate::base::secret::{ClusterKey, ManagementToken};

/// Largest body read, unless a call says less.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest `/bootstrap/seed-nodes` answer accepted.
pub const MAX_SEED_NODES_BYTES: usize = 256 * 1024;
/// Error bodies are quoted in messages up to this many characters.
const QUOTED_BODY_CHARS: usize = 200;

/// Why a request gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("answered HTTP {code}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { code: u16, body: String },
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// A `/bootstrap/seed-nodes` answer that is not acceptable.
    #[error(transparent)]
    Refused(#[from] Refused),
}

impl ClientError {
    /// The `result` label of `muster_bootstrap_probes_total`: `malformed` for answers
    /// that arrived but are not acceptable, `error` for the rest.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Refused(Refused::Unsigned | Refused::BadSignature) => "unauthenticated",
            Self::TooLarge(_) | Self::Malformed(_) | Self::Refused(_) => "malformed",
            _ => "error",
        }
    }
}

/// For callers that report errors as text (`?` in a `Result<_, String>`).
impl From<ClientError> for String {
    fn from(e: ClientError) -> Self {
        e.to_string()
    }
}

/// TLS for a client: the configuration (trusted CAs, and for agents their own
/// certificate) and the one name every agent's certificate is checked against.
pub type ClientTls = (Arc<rustls::ClientConfig>, ServerName<'static>);

#[derive(Debug, Clone)]
enum Http {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

/// An HTTP client for agents' management ports.
#[derive(Debug, Clone)]
pub struct ManagementClient {
    client: Http,
    timeout: Duration,
    local_ip: Option<IpAddr>,
    /// Largest body read (except `/bootstrap/seed-nodes`, which has its own).
    body_limit: usize,
}

impl Default for ManagementClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(2))
    }
}

impl ManagementClient {
    /// Each request (connect, send, read the whole answer) gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self::build(timeout, None)
    }

    /// An agent's client for its peers: connections come from `local_ip` (peers see the
    /// pod IP), and one kept-alive connection per peer is reused by the next request.
    pub fn from_ip(local_ip: IpAddr, timeout: Duration) -> Self {
        Self::build(timeout, Some(local_ip))
    }

    fn build(timeout: Duration, local_ip: Option<IpAddr>) -> Self {
        Self {
            client: Http::Plain(Self::builder().build(Self::connector(timeout, local_ip))),
            timeout,
            local_ip,
            body_limit: MAX_BODY_BYTES,
        }
    }

    fn connector(timeout: Duration, local_ip: Option<IpAddr>) -> HttpConnector {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        connector.set_local_address(local_ip);
        connector
    }

    fn builder() -> hyper_util::client::legacy::Builder {
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1);
        b
    }

    /// The same client speaking HTTPS only: each agent's certificate is checked with
    /// `tls`'s configuration against its fixed name, whatever address is asked.
    pub fn with_tls(mut self, tls: ClientTls) -> Self {
        let (config, name) = tls;
        let mut http = Self::connector(self.timeout, self.local_ip);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*config).clone())
            .https_only()
            .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            .enable_http1()
            .wrap_connector(http);
        self.client = Http::Tls(Self::builder().build(https));
        self
    }

    /// Whether requests go over TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.client, Http::Tls(_))
    }

    /// The same client, reading at most `bytes` of any answer (default
    /// [`MAX_BODY_BYTES`]); a longer one is [`ClientError::TooLarge`], and no more of
    /// it is read.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// `GET /bootstrap/seed-nodes` of a contact point, checked against this node's
    /// cluster name `system`; `prober` names the asking node's own contact point, so
    /// that the contact point may probe back at once.
    ///
    /// Sends `nonce`; with a cluster `key` the answer must carry a valid signature over
    /// that nonce and its body, checked before the body is parsed.
    pub async fn seed_nodes(
        &self,
        cp: &ContactPoint,
        system: &str,
        prober: Option<&ContactPoint>,
        nonce: &str,
        key: Option<&ClusterKey>,
    ) -> Result<SeedNodes, ClientError> {
        let mut headers = vec![(NONCE_HEADER, nonce.to_owned())];
        headers.extend(prober.map(|p| (PROBER_HEADER, p.to_string())));
        let (code, answer_headers, body) = self
            .send_with_headers(
                http::Method::GET,
                cp.socket_addr(),
                "/bootstrap/seed-nodes",
                &headers,
                MAX_SEED_NODES_BYTES,
            )
            .await?;
        if !(200..300).contains(&code) {
            return Err(status_error(code, &body));
        }
        if let Some(key) = key {
            let signature = answer_headers
                .get(SIGNATURE_HEADER)
                .ok_or(Refused::Unsigned)?
                .to_str()
                .map_err(|_| Refused::BadSignature)?;
            seed_nodes::verify(key, nonce, &body, signature)?;
        }
        Ok(SeedNodes::parse(&body, system)?)
    }

    /// `GET /cluster/members`.
    pub async fn members(&self, addr: SocketAddr) -> Result<ClusterMembers, ClientError> {
        self.get_json(addr, "/cluster/members").await
    }

    /// `GET /bootstrap/status`.
    pub async fn bootstrap_status(
        &self,
        addr: SocketAddr,
    ) -> Result<BootstrapStatusBody, ClientError> {
        self.get_json(addr, "/bootstrap/status").await
    }

    /// `GET /metrics`, the Prometheus text.
    pub async fn metrics(&self, addr: SocketAddr) -> Result<String, ClientError> {
        let body = self
            .ok_body(http::Method::GET, addr, "/metrics", None, self.body_limit)
            .await?;
        String::from_utf8(body.to_vec()).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    /// Asks the agent at `addr` to make `member` leave the cluster gracefully.
    pub async fn leave(
        &self,
        addr: SocketAddr,
        member: &NodeAddress,
        token: &ManagementToken,
    ) -> Result<(), ClientError> {
        self.mark(addr, member, "Leave", token).await
    }

    /// Asks the agent at `addr` to down `member`.
    pub async fn down(
        &self,
        addr: SocketAddr,
        member: &NodeAddress,
        token: &ManagementToken,
    ) -> Result<(), ClientError> {
        self.mark(addr, member, "Down", token).await
    }

    /// Tells the agent at `addr` that the pod of `member`'s incarnation `uid` is gone
    /// (muster's `operation=PodGone`).
    pub async fn pod_gone(
        &self,
        addr: SocketAddr,
        member: &NodeAddress,
        uid: u64,
        token: &ManagementToken,
    ) -> Result<(), ClientError> {
        let path = format!("/cluster/members/{member}?operation=PodGone&uid={uid}");
        let auth = (http::header::AUTHORIZATION.as_str(), token.bearer());
        self.ok_body(http::Method::PUT, addr, &path, Some(auth), self.body_limit)
            .await
            .map(drop)
    }

    /// `GET /handover`: the agent's handover gate.
    pub async fn handover(&self, addr: SocketAddr) -> Result<HandoverBody, ClientError> {
        self.get_json(addr, "/handover").await
    }

    /// Holds (`hold`) or releases the handover gate of the agent at `addr` under `name`
    /// (`PUT`/`DELETE /handover/holds/{name}`): from inside its pod, or with `token`.
    pub async fn handover_hold(
        &self,
        addr: SocketAddr,
        name: &str,
        hold: bool,
        token: Option<&ManagementToken>,
    ) -> Result<HandoverBody, ClientError> {
        let path = format!("/handover/holds/{name}");
        let method = if hold {
            http::Method::PUT
        } else {
            http::Method::DELETE
        };
        let auth = token.map(|t| (http::header::AUTHORIZATION.as_str(), t.bearer()));
        let body = self
            .ok_body(method, addr, &path, auth, self.body_limit)
            .await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    /// Asks the agent at `addr` to prepare the whole cluster for a full shutdown
    /// (`PUT /cluster operation=prepare-for-full-shutdown`).
    pub async fn prepare_for_full_shutdown(
        &self,
        addr: SocketAddr,
        token: &ManagementToken,
    ) -> Result<(), ClientError> {
        let auth = (http::header::AUTHORIZATION.as_str(), token.bearer());
        self.ok_body(
            http::Method::PUT,
            addr,
            "/cluster?operation=prepare-for-full-shutdown",
            Some(auth),
            self.body_limit,
        )
        .await
        .map(drop)
    }

    async fn mark(
        &self,
        addr: SocketAddr,
        member: &NodeAddress,
        operation: &str,
        token: &ManagementToken,
    ) -> Result<(), ClientError> {
        let path = format!("/cluster/members/{member}?operation={operation}");
        let auth = (http::header::AUTHORIZATION.as_str(), token.bearer());
        self.ok_body(http::Method::PUT, addr, &path, Some(auth), self.body_limit)
            .await
            .map(drop)
    }

    /// `GET` a JSON body (any 2xx).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
    ) -> Result<T, ClientError> {
        let body = self
            .ok_body(http::Method::GET, addr, path, None, self.body_limit)
            .await?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Malformed(e.to_string()))
    }

    /// `GET http(s)://addr/path`: the status and the body, whatever the status.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<(u16, Bytes), ClientError> {
        self.send(http::Method::GET, addr, path, None, self.body_limit)
            .await
    }

    /// `PUT http(s)://addr/path` with `Authorization: Bearer <token>` as given (tests send
    /// wrong ones): the status and the body.
    pub async fn put(
        &self,
        addr: SocketAddr,
        path: &str,
        token: &str,
    ) -> Result<(u16, Bytes), ClientError> {
        let auth = (
            http::header::AUTHORIZATION.as_str(),
            format!("Bearer {token}"),
        );
        self.send(http::Method::PUT, addr, path, Some(auth), self.body_limit)
            .await
    }

    /// The body of a 2xx answer; any other status is [`ClientError::Status`].
    async fn ok_body(
        &self,
        method: http::Method,
        addr: SocketAddr,
        path: &str,
        header: Option<(&str, String)>,
        limit: usize,
    ) -> Result<Bytes, ClientError> {
        let (code, body) = self.send(method, addr, path, header, limit).await?;
        if (200..300).contains(&code) {
            Ok(body)
        } else {
            Err(status_error(code, &body))
        }
    }

    async fn send(
        &self,
        method: http::Method,
        addr: SocketAddr,
        path: &str,
        header: Option<(&str, String)>,
        limit: usize,
    ) -> Result<(u16, Bytes), ClientError> {
        let headers: Vec<(&str, String)> = header.into_iter().collect();
        let (code, _, body) = self
            .send_with_headers(method, addr, path, &headers, limit)
            .await?;
        Ok((code, body))
    }

    /// The status, the answer's headers and at most `limit` bytes of body.
    async fn send_with_headers(
        &self,
        method: http::Method,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, String)],
        limit: usize,
    ) -> Result<(u16, http::HeaderMap, Bytes), ClientError> {
        let exchange = async {
            let scheme = if self.is_tls() { "https" } else { "http" };
            let mut req = http::Request::builder()
                .method(method)
                .uri(format!("{scheme}://{addr}{path}"));
            for (name, value) in headers {
                req = req.header(*name, value);
            }
            let req = req
                .body(Empty::new())
                .map_err(|e| ClientError::Unreachable(e.to_string()))?;
            let resp = match &self.client {
                Http::Plain(c) => c.request(req).await,
                Http::Tls(c) => c.request(req).await,
            }
            .map_err(|e| ClientError::Unreachable(with_source(&e)))?;
            let answer_headers = resp.headers().clone();
            let (code, body) = read(resp, limit).await?;
            Ok((code, answer_headers, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }
}

/// `GET path` over a connection someone else opened (e.g. a Kubernetes port-forward to
/// a pod that this machine cannot reach directly): the status and the body.
pub async fn get_over<S>(
    stream: S,
    path: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Unreachable(with_source(&e)))?;
        let driver = tokio::spawn(connection);
        let req = http::Request::get(path)
            .header(http::header::HOST, "pod")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Unreachable(with_source(&e)));
        let answer = match resp {
            Ok(resp) => read(resp, MAX_BODY_BYTES).await,
            Err(e) => Err(e),
        };
        driver.abort();
        answer
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

/// The status and at most `limit` bytes of body.
async fn read(resp: http::Response<Incoming>, limit: usize) -> Result<(u16, Bytes), ClientError> {
    let code = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                ClientError::TooLarge(limit)
            } else {
                ClientError::Unreachable(e.to_string())
            }
        })?
        .to_bytes();
    Ok((code, body))
}

fn status_error(code: u16, body: &[u8]) -> ClientError {
    ClientError::Status {
        code,
        body: String::from_utf8_lossy(body)
            .chars()
            .take(QUOTED_BODY_CHARS)
            .collect(),
    }
}

/// The error and its first cause (hyper's own message is often just "client error").
fn with_source(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(src) => format!("{e}: {src}"),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_quote_a_bounded_body() {
        let e = status_error(503, "x".repeat(1000).as_bytes());
        let text = e.to_string();
        assert!(text.starts_with("answered HTTP 503: xxx"), "{text}");
        assert!(text.len() < 250, "{text}");
        assert_eq!(status_error(404, b"").to_string(), "answered HTTP 404");
        assert_eq!(e.metric_label(), "error");
        assert_eq!(ClientError::TooLarge(1).metric_label(), "malformed");
    }
}
