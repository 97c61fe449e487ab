//! The `coordination.k8s.io/v1` Lease that `lease-majority` decides a partition with:
//! the side whose leader acquires it survives, the other side downs itself.
//!
//! Acquiring: the Lease is created when missing; it is taken over when nobody holds it,
//! when its holder's time has run out (`renewTime` + `leaseDurationSeconds`), or when
//! this node already holds it. Every write carries the `resourceVersion` that was read,
//! so of two sides that try at once exactly one succeeds (the other gets 409 Conflict).
//! The holder never renews: the Lease runs out `release-after` after the decision, so a
//! later partition is decided afresh.
//!
//! RBAC: the agent's service account needs `get` and `update` on that Lease (group
//! `coordination.k8s.io`, `resourceNames` may name it alone), and `create` on `leases`
//! in its namespace unless the Lease exists (the operator makes it for its clusters).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Error};

/// One Lease, and who this node is to it.
#[derive(Clone)]
pub struct KubernetesLease {
    api: Api<Lease>,
    name: String,
    namespace: String,
    holder: String,
    release_after: Duration,
}

impl std::fmt::Debug for KubernetesLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesLease")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("holder", &self.holder)
            .finish()
    }
}

/// Why the Lease could not be asked for (not: someone else holds it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LeaseError(String);

impl KubernetesLease {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        holder: &str,
        release_after: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            holder: holder.to_owned(),
            release_after,
        }
    }

    /// With in-cluster credentials, or KUBECONFIG outside a cluster.
    pub async fn connect(
        namespace: &str,
        name: &str,
        holder: &str,
        release_after: Duration,
    ) -> Result<Self, LeaseError> {
        let client = Client::try_default().await.map_err(|e| {
            LeaseError(format!(
                "no Kubernetes client for the lease (in-cluster config or KUBECONFIG): {e}"
            ))
        })?;
        Ok(Self::new(client, namespace, name, holder, release_after))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tries once to hold the Lease: `Ok(true)` when this node holds it now,
    /// `Ok(false)` when another holder's time has not run out or another writer won.
    pub async fn try_acquire(&self) -> Result<bool, LeaseError> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error("read", e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.error("create", e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        if !holder.is_empty() && holder != self.holder && !expired(&spec, now) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(holder != self.holder);
        lease.spec = Some(self.spec(now, transitions));
        // Replace carries the resourceVersion we read: a concurrent writer makes it 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.error("update", e)),
        }
    }

    /// Gives the Lease up when this node holds it (a graceful stop), so another holder
    /// need not wait for it to run out. Best effort: a conflict means someone else
    /// already took it.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error("read", e))?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.holder.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.error("update", e)),
        }
    }

    fn spec(&self, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.holder.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.release_after.as_secs().max(1)).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn error(&self, verb: &str, e: Error) -> LeaseError {
        let hint = match &e {
            Error::Api(s) if s.code == 403 => format!(
                " — the service account needs get and update on Lease `{}` (coordination.k8s.io) in namespace `{}`, and create on leases there unless the Lease exists (under the operator: it makes the Lease and the agents' Role grants the rest)",
                self.name, self.namespace
            ),
            _ => String::new(),
        };
        LeaseError(format!(
            "cannot {verb} Lease `{}` in namespace `{}`: {e}{hint}",
            self.name, self.namespace
        ))
    }
}

/// Has the holder's time run out at `now`? A Lease without times has.
fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let seconds = i64::from(spec.lease_duration_seconds.unwrap_or(0).max(0));
    match renewed
        .0
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
    {
        Ok(until) => until < now,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64, duration: i32) -> (LeaseSpec, Timestamp) {
        let now = Timestamp::from_second(1_800_000_000).expect("a time");
        let renewed = now
            .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(
                renewed_secs_ago,
            ))
            .expect("a time");
        (
            LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            },
            now,
        )
    }

    #[test]
    fn a_lease_runs_out_after_its_duration() {
        let (s, now) = spec("a", 39, 40);
        assert!(!expired(&s, now));
        let (s, now) = spec("a", 41, 40);
        assert!(expired(&s, now));
        let (mut s, now) = spec("a", 0, 40);
        s.renew_time = None;
        assert!(expired(&s, now), "no times: free");
    }
}
