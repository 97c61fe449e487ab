//! TCP connections of the cluster port: one listener, one outbound connection per peer.
//!
//! Inbound: each accepted connection is served by its own task that checks every frame
//! (size, signature, JSON) and hands the messages to their consumer; anything wrong
//! is counted in `muster_transport_messages_dropped_total` and never takes the agent
//! down. Outbound: a task per peer owns a queue and a kept-alive connection, reconnecting
//! with backoff; a full queue drops (gossip repairs itself), it never blocks the actor.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use std::sync::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::time::timeout;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::debug;

use super::frame::{self, FrameError, HEADER_LEN, Opener, Sealer};
use super::{Inbound, Wire};
use crate::base::rng::os_random_bytes;
use crate::base::secret::ClusterKey;
use crate::listener::CappedListener;
use crate::metrics::{KindLabel, Metrics};
use crate::tls::Tls;

/// Inbound connections served at once.
const MAX_INBOUND_CONNECTIONS: usize = 256;
/// Inbound connections from one IP address at once (a peer needs one).
const MAX_INBOUND_PER_SOURCE: usize = 8;
/// The first frame of a connection must start within this time after the greeting
/// (a peer connects when it has something to send).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// The first frame of a connection is at most this large: before it, nothing about
/// the sender is known. (A Welcome to a joiner of a 1,000-member cluster is far less.)
const MAX_FIRST_FRAME: usize = 1024 * 1024;
/// Bytes of frames not yet authenticated that all connections together may hold, in
/// KiB: the whole agent buffers at most this much for senders it does not know.
const UNAUTHENTICATED_BUDGET_KIB: usize = 16 * 1024;
/// Of that, what the connections from one IP address may hold together, in KiB: a
/// flood from a few addresses cannot take it all.
const UNAUTHENTICATED_PER_SOURCE_KIB: usize = 2 * 1024;
/// Frames up to this size need no budget (every first frame of a peer of a normal
/// cluster; they are bounded by the connection caps: 256 × 64 KiB).
const SMALL_FRAME: usize = 64 * 1024;
/// How long a large unauthenticated frame waits for the shared budget.
const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// The memory budget for frames not yet authenticated (see the constants above).
#[derive(Debug)]
struct Budget {
    global: Arc<Semaphore>,
    by_source: Mutex<HashMap<IpAddr, usize>>,
}

/// A share of the budget, given back on drop.
struct Held<'a> {
    budget: &'a Budget,
    source: IpAddr,
    kib: usize,
    _global: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.source, self.kib);
    }
}

impl Budget {
    fn new() -> Self {
        Self {
            global: Arc::new(Semaphore::new(UNAUTHENTICATED_BUDGET_KIB)),
            by_source: Mutex::new(HashMap::new()),
        }
    }

    /// Returns `kib` of `source`'s share.
    fn give_back(&self, source: IpAddr, kib: usize) {
        let mut m = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&source) {
            *n = n.saturating_sub(kib);
            if *n == 0 {
                m.remove(&source);
            }
        }
    }

    /// `len` bytes for `source`, or `OverBudget` when its share is used up or the
    /// shared budget stays full for [`BUDGET_WAIT`].
    async fn take(&self, source: IpAddr, len: usize) -> Result<Held<'_>, FrameError> {
        let kib = len.div_ceil(1024).max(1);
        {
            let mut m = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(source).or_insert(0);
            if *n + kib > UNAUTHENTICATED_PER_SOURCE_KIB {
                if *n == 0 {
                    m.remove(&source);
                }
                return Err(FrameError::OverBudget);
            }
            *n += kib;
        }
        let permits = u32::try_from(kib).unwrap_or(u32::MAX);
        let global = timeout(BUDGET_WAIT, self.global.clone().acquire_many_owned(permits)).await;
        let held = |g| Held {
            budget: self,
            source,
            kib,
            _global: g,
        };
        match global {
            Ok(Ok(g)) => Ok(held(g)),
            _ => {
                self.give_back(source, kib);
                Err(FrameError::OverBudget)
            }
        }
    }
}
/// An inbound connection with no frame for this long is closed (peers reconnect).
const INBOUND_IDLE: Duration = Duration::from_secs(300);
/// A started frame must arrive completely within this time.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting and greeting a peer must finish within this time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// An outbound connection with nothing to send for this long is closed.
const OUTBOUND_IDLE: Duration = Duration::from_secs(300);
/// Messages queued per peer.
const PEER_QUEUE: usize = 512;
/// Data written to a peer and not acknowledged for this long aborts the connection
/// (TCP_USER_TIMEOUT), so the next message goes out on a new one. Without it, a
/// connection to a peer that vanished behind a partition, or restarted on the same
/// address, swallows writes into its send buffer while TCP's retransmission backs off
/// for minutes; heartbeats flow every second, so a healthy connection never waits this long.
const UNACKED_LIMIT: Duration = Duration::from_secs(5);

/// A connection of the cluster port: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type Conn = Box<dyn Io>;

/// Serves the cluster port until the task is aborted. With `tls`, every connection
/// starts with a TLS handshake in which the peer must present a certificate from a
/// trusted CA, for the cluster's name; one that does not (or takes longer than the
/// connect timeout) is closed before any frame is read. When a reload stops trusting a
/// CA, every connection closes between frames and peers connect anew.
pub async fn serve<M: Wire>(
    listener: TcpListener,
    key: Option<ClusterKey>,
    tls: Option<Arc<Tls>>,
    metrics: Metrics,
    inbound: Inbound<M>,
) {
    let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.cluster_server()));
    let listener = CappedListener::new(
        listener,
        MAX_INBOUND_CONNECTIONS,
        MAX_INBOUND_PER_SOURCE,
        "cluster",
    );
    let budget = Arc::new(Budget::new());
    loop {
        let (stream, peer, permit) = listener.accept().await;
        let (key, metrics, inbound) = (key.clone(), metrics.clone(), inbound.clone());
        let (budget, acceptor) = (budget.clone(), acceptor.clone());
        let mut dropped = tls.as_ref().map(|t| t.trust_dropped());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let stream: Conn = match acceptor {
                None => Box::new(stream),
                Some(a) => match timeout(CONNECT_TIMEOUT, a.accept(stream)).await {
                    Ok(Ok(s)) => Box::new(s),
                    failed => {
                        metrics.dropped("tls_handshake");
                        if let Ok(Err(e)) = failed {
                            debug!(%peer, error = %e, "TLS handshake on the cluster port failed");
                        }
                        return;
                    }
                },
            };
            if let Err(e) = serve_connection(
                stream,
                peer.ip().to_canonical(),
                key,
                &metrics,
                &inbound,
                &budget,
                &mut dropped,
            )
            .await
            {
                metrics.dropped(e.metric_label());
                debug!(%peer, error = %e, "closed cluster connection");
            }
        });
    }
}

async fn serve_connection<M: Wire>(
    mut stream: Conn,
    source: IpAddr,
    key: Option<ClusterKey>,
    metrics: &Metrics,
    inbound: &Inbound<M>,
    budget: &Budget,
    dropped: &mut Option<watch::Receiver<u64>>,
) -> Result<(), FrameError> {
    let keyed = key.is_some();
    let mut nonce = [0u8; frame::NONCE_LEN];
    os_random_bytes(&mut nonce);
    if !matches!(
        timeout(
            CONNECT_TIMEOUT,
            write(&mut stream, &frame::greeting(&nonce))
        )
        .await,
        Ok(Ok(()))
    ) {
        return Ok(());
    }
    let mut opener = Opener::new(key, nonce);
    // A peer connects when it has something to send: a connection that stays silent
    // after the greeting only holds a slot, so it gets a short deadline, not the idle one.
    let mut idle_limit = FIRST_FRAME_TIMEOUT;
    // Until a frame carries the cluster key's signature, the sender is unknown: its
    // frames are small and count against the shared budget. Without a key, always.
    let mut authenticated = false;
    loop {
        let mut header = [0u8; HEADER_LEN];
        tokio::select! {
            read = timeout(idle_limit, stream.read_exact(&mut header[..1])) => match read {
                Ok(Ok(_)) => {}
                _ => return Ok(()), // closed, reset or idle
            },
            // Between frames: the peer was authenticated with a CA no longer trusted.
            () = trust_dropped(dropped) => return Ok(()),
        }
        idle_limit = INBOUND_IDLE;
        // Once a frame has started, all of it must arrive within the frame timeout.
        let frame = async {
            if stream.read_exact(&mut header[1..]).await.is_err() {
                return Ok(None);
            }
            let len = Opener::payload_len(&header)?;
            let held = if authenticated || len <= SMALL_FRAME {
                None
            } else if len > MAX_FIRST_FRAME {
                return Err(FrameError::Oversized(len));
            } else {
                Some(budget.take(source, len).await?)
            };
            // Grows with the bytes actually received, so a lying header costs the sender.
            let mut payload = Vec::new();
            match (&mut stream)
                .take(len as u64)
                .read_to_end(&mut payload)
                .await
            {
                Ok(n) if n == len => Ok(Some((payload, held))),
                _ => Ok(None),
            }
        };
        let (payload, _held) = match timeout(FRAME_READ_TIMEOUT, frame).await {
            Ok(Ok(Some(p))) => p,
            Ok(Err(e)) => return Err(e),
            _ => return Ok(()), // stalled, closed or cut short
        };
        opener.open(&header, &payload)?;
        authenticated = keyed;
        match serde_json::from_slice::<M>(&payload) {
            Ok(message) => {
                metrics
                    .messages_received
                    .get_or_create(&KindLabel {
                        kind: message.kind(),
                    })
                    .inc();
                let queue = if message.urgent() {
                    &inbound.urgent
                } else {
                    &inbound.normal
                };
                if queue.try_send(message).is_err() {
                    metrics.dropped("queue_full");
                }
            }
            Err(e) => {
                metrics.dropped("malformed");
                debug!(error = %e, "malformed cluster message");
            }
        }
    }
}

/// How many outbound messages are queued or being written, over all peers: the agent
/// waits for its last words (a losing leader's Down gossip, a leave) to be written
/// before the process exits.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    count: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

/// One message's share of [`InFlight`], given back when it is dropped: written,
/// dropped from a full queue, or lost with a connection.
#[derive(Debug)]
struct Ticket(InFlight);

impl InFlight {
    fn ticket(&self) -> Ticket {
        self.count.fetch_add(1, Ordering::SeqCst);
        Ticket(self.clone())
    }

    /// Waits until nothing is in flight; false if that took longer than `limit`.
    pub async fn drained(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.count.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        timeout(limit, wait).await.is_ok()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

type Queued<M> = (M, Ticket);

/// Outbound connections, owned by one task (no sharing, no locks). The membership actor
/// has two sets, one for heartbeats so that they do not queue behind state messages;
/// the heartbeat responder has its own.
#[derive(Debug)]
pub struct Outbound<M> {
    local_ip: IpAddr,
    key: Option<ClusterKey>,
    tls: Option<Arc<Tls>>,
    metrics: Metrics,
    peers: HashMap<SocketAddr, mpsc::Sender<Queued<M>>>,
    in_flight: InFlight,
}

impl<M: Wire> Outbound<M> {
    pub fn new(
        local_ip: IpAddr,
        key: Option<ClusterKey>,
        tls: Option<Arc<Tls>>,
        metrics: Metrics,
    ) -> Self {
        Self {
            local_ip,
            key,
            tls,
            metrics,
            peers: HashMap::new(),
            in_flight: InFlight::default(),
        }
    }

    /// The count of messages not yet written, shared with whoever waits for it.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight.clone()
    }

    /// Drops the connection to `to` (and what is queued for it): the member there is
    /// gone, and a new incarnation at the same address must get a fresh connection.
    pub fn forget(&mut self, to: SocketAddr) {
        self.peers.remove(&to);
    }

    /// Queues a message; never waits.
    pub fn send(&mut self, to: SocketAddr, message: M) {
        let queued = (message, self.in_flight.ticket());
        let queued = match self.peers.get(&to) {
            None => queued,
            Some(tx) => match tx.try_send(queued) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.dropped("queue_full");
                    return;
                }
                // The peer task ended (idle); start a new one.
                Err(mpsc::error::TrySendError::Closed(queued)) => queued,
            },
        };
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        tokio::spawn(peer(
            to,
            self.local_ip,
            self.key.clone(),
            self.tls.clone(),
            self.metrics.clone(),
            rx,
        ));
        let _ = tx.try_send(queued);
        self.peers.insert(to, tx);
    }
}

async fn connect(
    to: SocketAddr,
    local_ip: IpAddr,
    tls: Option<&Tls>,
) -> std::io::Result<(Conn, [u8; frame::NONCE_LEN])> {
    let socket = if to.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Bind our own address so peers see the pod IP as the source.
    if local_ip.is_ipv4() == to.is_ipv4() {
        socket.bind(SocketAddr::new(local_ip, 0))?;
    }
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(UNACKED_LIMIT))?;
    let mut stream: Conn = match tls {
        None => Box::new(stream),
        Some(t) => Box::new(
            TlsConnector::from(t.client())
                .connect(t.server_name(), stream)
                .await?,
        ),
    };
    let mut g = [0u8; frame::GREETING_LEN];
    stream.read_exact(&mut g).await?;
    let nonce = frame::parse_greeting(&g)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok((stream, nonce))
}

async fn peer<M: Wire>(
    to: SocketAddr,
    local_ip: IpAddr,
    key: Option<ClusterKey>,
    tls: Option<Arc<Tls>>,
    metrics: Metrics,
    mut rx: mpsc::Receiver<Queued<M>>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut pending: Option<Queued<M>> = None;
    loop {
        let mut dropped = tls.as_ref().map(|t| t.trust_dropped());
        let queued = match pending.take() {
            Some(q) => q,
            None => match timeout(OUTBOUND_IDLE, rx.recv()).await {
                Ok(Some(q)) => q,
                _ => return, // idle or the actor is gone
            },
        };
        let (mut stream, nonce) =
            match timeout(CONNECT_TIMEOUT, connect(to, local_ip, tls.as_deref())).await {
                Ok(Ok(c)) => c,
                failed => {
                    let error = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_owned(),
                    };
                    debug!(%to, %error, "cannot reach peer");
                    metrics.dropped("send_failed");
                    drop(queued);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
        backoff = Duration::from_millis(100);
        let mut sealer = Sealer::new(key.clone(), nonce);
        let mut next = Some(queued);
        while let Some((message, ticket)) = next.take() {
            let kind = message.kind();
            let payload = match serde_json::to_vec(&message) {
                Ok(p) => p,
                Err(_) => continue,
            };
            if write(&mut stream, &sealer.seal(&payload)).await.is_err() {
                // The connection broke: retry this message once on a new one.
                pending = Some((message, ticket));
                break;
            }
            drop(ticket);
            metrics
                .messages_sent
                .get_or_create(&KindLabel { kind })
                .inc();
            next = tokio::select! {
                q = timeout(OUTBOUND_IDLE, rx.recv()) => match q {
                    Ok(Some(q)) => Some(q),
                    _ => return,
                },
                // A CA was dropped: the next message goes on a connection made anew.
                () = trust_dropped(&mut dropped) => None,
            };
        }
    }
}

/// Writes all of `bytes` and flushes them: a TLS stream may keep written bytes in its
/// buffer until flushed, and a message counted as written must be on its way.
async fn write(stream: &mut Conn, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// Resolves when a reload stops trusting a CA ([`Tls::trust_dropped`]); never without TLS.
async fn trust_dropped(rx: &mut Option<watch::Receiver<u64>>) {
    if let Some(rx) = rx
        && rx.changed().await.is_ok()
    {
        return;
    }
    std::future::pending().await
}
