//! The formation record (`bootstrap.formation-lease`): a `coordination.k8s.io/v1` Lease
//! whose holder is the node that formed the cluster. A node claims it just before it
//! forms; while it is held, no node forms.
//!
//! Why: `new-cluster-enabled` reaches pods through a mounted ConfigMap key, and a
//! kubelet refreshes mounted volumes only when it syncs the pod (every minute or so,
//! plus its cache). A container that starts in that window reads `true` although the
//! cluster formed long ago, and if it cannot see the members (a partition, a discovery
//! view without them) it would form a second cluster. The record is read from the API
//! server at the moment of forming, and the claim is a write conditional on the
//! `resourceVersion` read, so of two claims exactly one wins: whatever a kubelet shows,
//! at most one node forms per record.
//!
//! The record never runs out (no `renewTime`, no duration): only the operator clears it,
//! when forming is allowed again (`newClusterEnabled: true`). A node that claims it and
//! dies in the moment before it forms leaves it held: no cluster forms until someone
//! allows forming again, as after losing a formed cluster (see the README).
//!
//! RBAC: `get` and `update` on that one Lease (`resourceNames`).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Error};

use super::state::ClaimOutcome;

/// A claim gives up after this long (the API server may be slow or cut off).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// The record, and who this node is to it.
#[derive(Clone)]
pub struct FormationRecord {
    api: Api<Lease>,
    name: String,
    namespace: String,
    holder: String,
}

impl std::fmt::Debug for FormationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormationRecord")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("holder", &self.holder)
            .finish()
    }
}

/// Who holds a record, from its spec: `None` when it is free.
pub fn holder_of(spec: Option<&LeaseSpec>) -> Option<&str> {
    spec.and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.trim().is_empty())
}

/// What a record held by `holder` means to node `me` (its holder string, which carries
/// its uid): `None` when it is free to claim. A record held by `me` is this very
/// process's own claim whose answer was lost (a timeout or reset after the write was
/// applied): it is claimed, not held by someone else.
pub fn judge(holder: Option<&str>, me: &str) -> Option<ClaimOutcome> {
    match holder {
        None => None,
        Some(h) if h == me => Some(ClaimOutcome::Claimed),
        Some(h) => Some(ClaimOutcome::HeldBy(h.to_owned())),
    }
}

impl FormationRecord {
    /// `holder`: what this node writes as holder (its unique cluster address).
    pub fn new(client: Client, namespace: &str, name: &str, holder: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            holder: holder.to_owned(),
        }
    }

    /// `namespace/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Claims the record, bounded by [`CLAIM_TIMEOUT`].
    pub async fn claim(&self) -> ClaimOutcome {
        match tokio::time::timeout(CLAIM_TIMEOUT, self.try_claim()).await {
            Ok(outcome) => outcome,
            Err(_) => ClaimOutcome::Failed(format!(
                "no answer from the Kubernetes API server within {}s",
                CLAIM_TIMEOUT.as_secs()
            )),
        }
    }

    async fn try_claim(&self) -> ClaimOutcome {
        let lease = match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                return ClaimOutcome::Failed(format!(
                    "Lease {} does not exist; whoever set bootstrap.formation-lease (the operator) creates it, and no node forms without it",
                    self.describe()
                ));
            }
            Err(e) => return ClaimOutcome::Failed(self.error("read", &e)),
        };
        if let Some(outcome) = judge(holder_of(lease.spec.as_ref()), &self.holder) {
            return outcome;
        }
        let mut claimed = lease;
        let now = MicroTime(Timestamp::now());
        let spec = claimed.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.holder.clone());
        spec.acquire_time = Some(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        // The replace carries the resourceVersion read: a concurrent claim makes it 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &claimed)
            .await
        {
            Ok(_) => ClaimOutcome::Claimed,
            Err(Error::Api(s)) if s.code == 409 => match self.api.get_opt(&self.name).await {
                Ok(l) => match judge(
                    l.as_ref().and_then(|l| holder_of(l.spec.as_ref())),
                    &self.holder,
                ) {
                    Some(outcome) => outcome,
                    None => ClaimOutcome::Failed(format!(
                        "Lease {} changed while it was claimed; trying again",
                        self.describe()
                    )),
                },
                Err(e) => ClaimOutcome::Failed(self.error("read", &e)),
            },
            Err(e) => ClaimOutcome::Failed(self.error("update", &e)),
        }
    }

    fn error(&self, verb: &str, e: &Error) -> String {
        let hint = match e {
            Error::Api(s) if s.code == 403 => format!(
                " — the service account needs get and update on leases.coordination.k8s.io `{}` in namespace `{}`",
                self.name, self.namespace
            ),
            _ => String::new(),
        };
        format!("cannot {verb} Lease {}: {e}{hint}", self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_free_only_without_a_holder() {
        assert_eq!(holder_of(None), None);
        assert_eq!(holder_of(Some(&LeaseSpec::default())), None);
        let blank = LeaseSpec {
            holder_identity: Some("  ".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(holder_of(Some(&blank)), None);
        let held = LeaseSpec {
            holder_identity: Some("muster://shop@10.0.0.1:2552#7".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(
            holder_of(Some(&held)),
            Some("muster://shop@10.0.0.1:2552#7")
        );
    }

    #[test]
    fn our_own_claim_with_a_lost_answer_is_ours_and_an_earlier_incarnation_is_not() {
        let me = "muster://shop@10.0.0.1:2552#7";
        assert_eq!(judge(None, me), None);
        assert_eq!(judge(Some(me), me), Some(ClaimOutcome::Claimed));
        let before_restart = "muster://shop@10.0.0.1:2552#6";
        assert_eq!(
            judge(Some(before_restart), me),
            Some(ClaimOutcome::HeldBy(before_restart.into()))
        );
    }
}
