//! Serving the router: HTTP/1.1 with a header-read timeout (`axum::serve` has none, so
//! slow clients could hold connections forever), a bound on the request head and a cap
//! on open connections. Bodies are bounded by `management.max-body-bytes` in the router.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use crate::listener::CappedListener;
use crate::tls::Tls;

/// The request line and headers must fit in this many bytes (hyper's smallest allowed
/// buffer is 8 KiB); a larger head gets 431 and the connection is closed.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Connections from one IP address at once: the operator, the kubelet and each peer
/// come from their own address and need a few.
pub const MAX_CONNECTIONS_PER_SOURCE: usize = 64;

/// Serves until the task is aborted. With `tls`, HTTPS only: the TLS handshake must
/// finish within `header_read_timeout` too.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    header_read_timeout: Duration,
    tls: Option<Arc<Tls>>,
) {
    let acceptor = tls.map(|t| TlsAcceptor::from(t.management_server()));
    let listener = CappedListener::new(
        listener,
        max_connections,
        MAX_CONNECTIONS_PER_SOURCE,
        "management",
    );
    loop {
        let (stream, peer, permit) = listener.accept().await;
        let _ = stream.set_nodelay(true);
        // Handlers learn who is connected (the seed-nodes route tells its own probes
        // apart by it).
        let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(super::Peer(peer));
                req
            },
        ));
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(true);
            let served = match acceptor {
                None => builder.serve_connection(TokioIo::new(stream), svc).await,
                Some(a) => match timeout(header_read_timeout, a.accept(stream)).await {
                    Ok(Ok(tls)) => builder.serve_connection(TokioIo::new(tls), svc).await,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "TLS handshake on the management port failed");
                        return;
                    }
                    Err(_) => return,
                },
            };
            if let Err(e) = served {
                debug!(%peer, error = %e, "management connection ended");
            }
        });
    }
}
