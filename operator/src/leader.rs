//! Leader election: of several operator replicas only the holder of a
//! `coordination.k8s.io/v1` Lease reconciles (and so writes). The holder renews every
//! [`RENEW_EVERY`]; one that could not renew for [`GIVE_UP_AFTER`] — well before the
//! Lease runs out for the others ([`LEASE_DURATION`]) — stops, so two never write at
//! once. A graceful stop releases the Lease for an immediate takeover.
//!
//! Leadership is fenced: every write through the operator's Kubernetes client (and
//! every Leave it sends an agent) first asks the [`Fence`], which is valid only until
//! [`GIVE_UP_AFTER`] after the start of the last successful renewal. Time is taken
//! before the request and on the monotonic clock, which runs on while the process is
//! stopped: a replica that was paused (SIGSTOP, a frozen node) or cut off for longer
//! finds its fence expired the moment it runs again, before any reconcile still in
//! flight can write, and a standby takes over only after the whole [`LEASE_DURATION`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use node_agent::lease::KubernetesLease;

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// Longest wait for one renewal: a request that hangs must not keep the keeper from
/// noticing that its time is up.
pub const RENEW_TIMEOUT: Duration = Duration::from_secs(4);

/// Until when this replica may write; shared by the keeper, the client layer
/// ([`FenceLayer`]) and the controller.
#[derive(Clone, Debug)]
pub struct Fence {
    origin: Instant,
    /// Milliseconds after `origin` until which writes are allowed; 0: never.
    until_ms: Arc<AtomicU64>,
}

impl Default for Fence {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            until_ms: Arc::default(),
        }
    }
}

impl Fence {
    /// A renewal that started at `started` succeeded.
    pub fn renewed(&self, started: Instant) {
        let until = started.saturating_duration_since(self.origin) + GIVE_UP_AFTER;
        let ms = u64::try_from(until.as_millis()).unwrap_or(u64::MAX).max(1);
        self.until_ms.fetch_max(ms, Ordering::SeqCst);
    }

    /// Leadership is gone: no write from now on.
    pub fn revoke(&self) {
        self.until_ms.store(0, Ordering::SeqCst);
    }

    /// Whether a write may go out now.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// When the fence ends (as it stands now); `None`: it does not hold.
    fn deadline(&self) -> Option<Instant> {
        let until = self.until_ms.load(Ordering::SeqCst);
        (until != 0).then(|| self.origin + Duration::from_millis(until))
    }

    fn holds_at(&self, now: Instant) -> bool {
        let until = self.until_ms.load(Ordering::SeqCst);
        let now_ms = u64::try_from(now.saturating_duration_since(self.origin).as_millis())
            .unwrap_or(u64::MAX);
        until != 0 && now_ms < until
    }
}

/// Waits until this replica holds the Lease; when the successful try started.
pub async fn acquire(lease: &KubernetesLease, fence: &Fence) -> Instant {
    let mut said = false;
    loop {
        let started = Instant::now();
        match tokio::time::timeout(RENEW_TIMEOUT, lease.try_acquire()).await {
            Ok(Ok(true)) => {
                fence.renewed(started);
                tracing::info!(
                    lease = lease.name(),
                    "holding the leader Lease: reconciling"
                );
                return started;
            }
            Ok(Ok(false)) if !said => {
                tracing::info!(
                    lease = lease.name(),
                    "another replica holds the leader Lease; standing by"
                );
                said = true;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot take the leader Lease; retrying"),
            Err(_) => tracing::warn!(
                timeout_s = RENEW_TIMEOUT.as_secs(),
                "taking the leader Lease timed out; retrying"
            ),
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// Renews the Lease, held since a try that started at `since`, until leadership is
/// lost: another replica holds it, or no renewal has succeeded for [`GIVE_UP_AFTER`]
/// (each try bounded by [`RENEW_TIMEOUT`] and by the time left). Revokes the fence,
/// then returns.
pub async fn keep(lease: &KubernetesLease, fence: &Fence, since: Instant) {
    let mut renewed = since;
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let started = Instant::now();
        let left = GIVE_UP_AFTER.saturating_sub(started.saturating_duration_since(renewed));
        if left.is_zero() || !fence.holds() {
            tracing::error!("no renewal of the leader Lease succeeded in time");
            fence.revoke();
            return;
        }
        match tokio::time::timeout(left.min(RENEW_TIMEOUT), lease.try_acquire()).await {
            Ok(Ok(true)) => {
                renewed = started;
                fence.renewed(started);
            }
            Ok(Ok(false)) => {
                tracing::error!("another replica took the leader Lease");
                fence.revoke();
                return;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the leader Lease"),
            Err(_) => tracing::warn!(
                timeout_s = left.min(RENEW_TIMEOUT).as_secs_f64(),
                "renewing the leader Lease timed out"
            ),
        }
    }
}

/// Why a write was not sent.
#[derive(Debug, thiserror::Error)]
#[error(
    "not sent: this replica no longer holds the leader Lease (its last renewal is more than {}s old)",
    GIVE_UP_AFTER.as_secs()
)]
pub struct NotLeader;

/// A layer of the operator's Kubernetes client that refuses every request but reads
/// (GET, HEAD: lists and watches too) unless the [`Fence`] holds.
#[derive(Clone, Debug)]
pub struct FenceLayer(pub Fence);

impl<S> tower::Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// The service of [`FenceLayer`].
#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for Fenced<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let read = matches!(*request.method(), http::Method::GET | http::Method::HEAD);
        if read {
            let sent = self.inner.call(request);
            return Box::pin(async move { sent.await.map_err(Into::into) });
        }
        let deadline = self.fence.deadline().filter(|_| self.fence.holds());
        let Some(deadline) = deadline else {
            tracing::error!(
                method = %request.method(),
                path = request.uri().path(),
                "write refused: no longer the leader"
            );
            return Box::pin(std::future::ready(Err(NotLeader.into())));
        };
        tracing::debug!(method = %request.method(), path = request.uri().path(), "write sent");
        let sent = self.inner.call(request);
        // Not past the fence either: a write whose answer is still awaited then is
        // abandoned (its client has no retries of its own, see the operator's main).
        Box::pin(async move {
            match tokio::time::timeout_at(deadline.into(), sent).await {
                Ok(answer) => answer.map_err(Into::into),
                Err(_) => Err(NotLeader.into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_holds_from_a_renewal_until_give_up_after_measured_from_its_start() {
        let fence = Fence::default();
        assert!(!fence.holds(), "not before the first renewal");
        let started = fence.origin + Duration::from_secs(100);
        fence.renewed(started);
        assert!(fence.holds_at(started));
        assert!(fence.holds_at(started + GIVE_UP_AFTER - Duration::from_millis(1)));
        assert!(!fence.holds_at(started + GIVE_UP_AFTER));
        // A late answer to an older renewal does not move it back.
        fence.renewed(started - Duration::from_secs(5));
        assert!(fence.holds_at(started + GIVE_UP_AFTER - Duration::from_millis(1)));
        fence.revoke();
        assert!(!fence.holds_at(started));
        assert!(
            GIVE_UP_AFTER < LEASE_DURATION,
            "the fence ends before a standby may take over"
        );
    }

    #[tokio::test]
    async fn writes_go_out_only_while_the_fence_holds_and_reads_always() {
        use tower::{Layer, Service, ServiceExt};
        let fence = Fence::default();
        let (inner, mut handle) = node_agent::testing::pair::<http::Request<()>, &'static str>();
        let mut client = FenceLayer(fence.clone()).layer(inner);
        let request = |method: http::Method| {
            http::Request::builder()
                .method(method)
                .uri("/api/v1/namespaces/prod/pods/shop-0")
                .body(())
                .expect("a request")
        };
        tokio::spawn(async move {
            while let Some((request, reply)) = handle.next_request().await {
                reply.send_response(if request.method() == http::Method::GET {
                    "read"
                } else {
                    "written"
                });
            }
        });
        let mut send = async |method| {
            client.ready().await.expect("ready");
            client
                .call(request(method))
                .await
                .map_err(|e| e.to_string())
        };
        assert_eq!(send(http::Method::GET).await, Ok("read"));
        let refused = send(http::Method::DELETE).await.expect_err("no leader yet");
        assert!(
            refused.contains("no longer holds the leader Lease"),
            "{refused}"
        );
        fence.renewed(Instant::now());
        assert_eq!(send(http::Method::DELETE).await, Ok("written"));
        assert_eq!(send(http::Method::PATCH).await, Ok("written"));
        fence.renewed(Instant::now() - GIVE_UP_AFTER);
        fence.revoke();
        assert!(send(http::Method::POST).await.is_err(), "revoked");
        assert_eq!(send(http::Method::GET).await, Ok("read"));
    }
}
