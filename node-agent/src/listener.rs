//! Accepting TCP connections with a cap on how many are served at once, shared by the
//! management and cluster ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

#[derive(Debug)]
pub struct CappedListener {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    what: &'static str,
}

impl CappedListener {
    /// `what` names the port in logs.
    pub fn new(listener: TcpListener, max_connections: usize, what: &'static str) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(max_connections)),
            what,
        }
    }

    /// The next connection and the permit that holds its slot until dropped. At the cap
    /// it waits for a connection to close first; after an accept error (out of file
    /// descriptors and the like) it backs off instead of spinning.
    pub async fn accept(&self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        loop {
            let Ok(permit) = self.permits.clone().acquire_owned().await else {
                // The semaphore is never closed; should it be, accept nothing more.
                return std::future::pending().await;
            };
            match self.listener.accept().await {
                Ok((stream, peer)) => return (stream, peer, permit),
                Err(e) => {
                    warn!(port = self.what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}
