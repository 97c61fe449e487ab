//! Leader election: of several operator replicas only the holder of a
//! `coordination.k8s.io/v1` Lease reconciles (and so writes). The holder renews every
//! [`RENEW_EVERY`]; one that could not renew for [`GIVE_UP_AFTER`] — well before the
//! Lease runs out for the others ([`LEASE_DURATION`]) — stops, so two never write at
//! once. A graceful stop releases the Lease for an immediate takeover.

use std::time::{Duration, Instant};

use node_agent::lease::KubernetesLease;

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_EVERY: Duration = Duration::from_secs(2);
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// Waits until this replica holds the Lease.
pub async fn acquire(lease: &KubernetesLease) {
    let mut said = false;
    loop {
        match lease.try_acquire().await {
            Ok(true) => {
                tracing::info!(
                    lease = lease.name(),
                    "holding the leader Lease: reconciling"
                );
                return;
            }
            Ok(false) if !said => {
                tracing::info!(
                    lease = lease.name(),
                    "another replica holds the leader Lease; standing by"
                );
                said = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "cannot take the leader Lease; retrying"),
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// Renews the Lease until a renewal has failed for [`GIVE_UP_AFTER`]; returns then
/// (leadership lost).
pub async fn keep(lease: &KubernetesLease) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match lease.try_acquire().await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => {
                tracing::error!("another replica took the leader Lease");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the leader Lease");
                if renewed.elapsed() >= GIVE_UP_AFTER {
                    return;
                }
            }
        }
    }
}
