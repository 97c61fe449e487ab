//! Accepting TCP connections with a cap on how many are served at once, and a cap per
//! source address, shared by the management and cluster ports.
//!
//! The per-source cap is what keeps one flooding client — idle connections, slow heads,
//! bodies that never come — from holding every slot: its extra connections are closed
//! at once, so the kubelet's probes and the peers, which come from other addresses,
//! still get a slot. (Clients spread over many addresses are for a NetworkPolicy.)

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

#[derive(Debug)]
pub struct CappedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    per_source: usize,
    by_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
    what: &'static str,
}

/// The slot of one accepted connection: freed (globally and for its source) on drop.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    source: IpAddr,
    by_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.by_source.lock()
            && let Some(n) = m.get_mut(&self.source)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.source);
            }
        }
    }
}

impl CappedListener {
    /// At most `max_connections` at once, at most `per_source` of them from one IP
    /// address; `what` names the port in logs.
    pub fn new(
        listener: TcpListener,
        max_connections: usize,
        per_source: usize,
        what: &'static str,
    ) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(max_connections)),
            per_source: per_source.max(1),
            by_source: Arc::default(),
            what,
        }
    }

    /// The next connection and the slot that holds it until dropped. At the cap it
    /// waits for a connection to close first; a connection from a source that already
    /// holds its share is closed at once; after an accept error (out of file
    /// descriptors and the like) it backs off instead of spinning.
    pub async fn accept(&self) -> (TcpStream, SocketAddr, Slot) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; should it be, accept nothing more.
                return std::future::pending().await;
            };
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let source = peer.ip().to_canonical();
                    let admitted = {
                        let mut m = self.by_source.lock().unwrap_or_else(|p| p.into_inner());
                        let n = m.entry(source).or_insert(0);
                        if *n < self.per_source {
                            *n += 1;
                            true
                        } else {
                            false
                        }
                    };
                    if admitted {
                        let slot = Slot {
                            _permit: permit,
                            source,
                            by_source: self.by_source.clone(),
                        };
                        return (stream, peer, slot);
                    }
                    debug!(port = self.what, %peer, limit = self.per_source, "too many connections from one address; closed");
                    drop(stream);
                }
                Err(e) => {
                    warn!(port = self.what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn one_source_gets_its_share_and_others_still_get_in() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let capped = Arc::new(CappedListener::new(l, 8, 2, "test"));
        let accepter = capped.clone();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let accepted = accepter.accept().await;
                if tx.send(accepted).is_err() {
                    return;
                }
            }
        });
        let from = |ip: [u8; 4]| async move {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(SocketAddr::from((ip, 0))).unwrap();
            s.connect(addr).await.unwrap()
        };
        let (mut clients, mut slots) = (vec![], vec![]);
        for _ in 0..2 {
            clients.push(from([127, 0, 0, 2]).await);
            slots.push(rx.recv().await.unwrap());
        }
        // A third from the same source is closed at once: it reads end of stream.
        let mut third = from([127, 0, 0, 2]).await;
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
            .await
            .expect("closed promptly");
        assert!(matches!(n, Ok(0) | Err(_)));
        // Another source is served.
        let _other = from([127, 0, 0, 3]).await;
        let (_, peer, _) = rx.recv().await.unwrap();
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 3]));
        // Dropping a slot gives the first source room again.
        slots.pop();
        let _again = from([127, 0, 0, 2]).await;
        let (_, peer, _) = rx.recv().await.unwrap();
        assert_eq!(peer.ip(), IpAddr::from([127, 0, 0, 2]));
    }
}
