//! A small client for the management API, used by `muster-agent local-cluster`, the
//! tests and the benchmarks (and by anyone scripting against an agent).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

/// Largest body read.
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ManagementClient {
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
}

impl Default for ManagementClient {
    fn default() -> Self {
        Self::new(Duration::from_secs(2))
    }
}

impl ManagementClient {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            timeout,
        }
    }

    /// `GET http://addr/path`: status and body.
    pub async fn get(&self, addr: SocketAddr, path: &str) -> Result<(u16, Bytes), String> {
        self.send(http::Method::GET, addr, path, None).await
    }

    /// `PUT http://addr/path` with `Authorization: Bearer <token>` (the mutating routes,
    /// e.g. `/cluster/members/{address}?operation=Leave`): status and body.
    pub async fn put(
        &self,
        addr: SocketAddr,
        path: &str,
        token: &str,
    ) -> Result<(u16, Bytes), String> {
        self.send(http::Method::PUT, addr, path, Some(token)).await
    }

    async fn send(
        &self,
        method: http::Method,
        addr: SocketAddr,
        path: &str,
        token: Option<&str>,
    ) -> Result<(u16, Bytes), String> {
        let fut = async {
            let uri = format!("http://{addr}{path}");
            let mut req = http::Request::builder().method(method).uri(uri);
            if let Some(t) = token {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| format!("no answer from {addr} within {:?}", self.timeout))?
    }

    /// `GET` a JSON body (any 2xx).
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        path: &str,
    ) -> Result<T, String> {
        let (status, body) = self.get(addr, path).await?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "{path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))
    }
}
