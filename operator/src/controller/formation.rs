//! The formation record (created when missing) and its holder, kept in step with `spec.bootstrap.newClusterEnabled`.
//! Agents claim the record just before forming and never form while it is held (see
//! the agent's `bootstrap.formation-lease`); the controller decides when it is open:
//!
//! - `false`: held by the operator, so no agent forms.
//! - `true`: never held; a claim is cleared at the next reconcile (any number of
//!   formations, Akka's `new-cluster-enabled = on`).
//! - `auto`: open until the cluster has formed, when the forming agent holds it. A
//!   cluster that formed without a claim (before the record existed, or under `true`) is
//!   recorded by the operator; the operator's `false` hold is lifted while no cluster
//!   has formed.
//!
//! Every write carries the `resourceVersion` read, so an agent's claim and the
//! operator's write never overwrite each other: the loser gets 409 and looks again.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, PostParams};

use super::build::formation_lease;
use super::{Context, Error};
use crate::crd::{ClusterSpec, NewClusterEnabled};
use node_agent::bootstrap::record::holder_of;

/// The operator's hold under `newClusterEnabled: false`.
pub const LOCKED: &str = "muster-operator: spec.bootstrap.newClusterEnabled is false";
/// The operator's record of a cluster that formed without a claim.
pub const FORMED: &str = "muster-operator: the cluster formed without claiming this record";

/// The holder to write, when it must change: `Some(None)` clears it.
pub fn change(
    mode: NewClusterEnabled,
    holder: Option<&str>,
    formed: bool,
) -> Option<Option<&'static str>> {
    match (mode, holder) {
        (NewClusterEnabled::True, Some(_)) => Some(None),
        (NewClusterEnabled::False, None) => Some(Some(LOCKED)),
        (NewClusterEnabled::Auto, Some(LOCKED)) if !formed => Some(None),
        (NewClusterEnabled::Auto, None) if formed => Some(Some(FORMED)),
        _ => None,
    }
}

/// Brings the record's holder in step; the holder after this reconcile (`None`: open).
/// A conflict (an agent claimed it meanwhile) is left to the next reconcile.
pub async fn keep(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    formed: bool,
) -> Result<Option<String>, Error> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), ns);
    let name = formation_lease::name(cs);
    let mode = cs.spec.bootstrap.new_cluster_enabled;
    let Some(mut lease) = api
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read Lease {name}"), e))?
    else {
        let mut fresh = formation_lease::build(cs);
        let holder = change(mode, None, formed).flatten();
        if let Some(spec) = &mut fresh.spec {
            spec.holder_identity = holder.map(str::to_owned);
        }
        return match api.create(&PostParams::default(), &fresh).await {
            Ok(_) => {
                tracing::info!(lease = %name, ?holder, "created the formation record");
                Ok(holder.map(str::to_owned))
            }
            // Created since we looked: the next reconcile looks at it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(Error::kube(format!("create Lease {name}"), e)),
        };
    };
    let holder = holder_of(lease.spec.as_ref()).map(str::to_owned);
    let Some(next) = change(mode, holder.as_deref(), formed) else {
        return Ok(holder);
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = next.map(str::to_owned);
    spec.acquire_time = next.map(|_| {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        )
    });
    match api.replace(&name, &PostParams::default(), &lease).await {
        Ok(_) => {
            tracing::info!(lease = %name, was = ?holder, now = ?next, ?mode, "formation record updated");
            Ok(next.map(str::to_owned))
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(holder),
        Err(e) => Err(Error::kube(format!("update Lease {name}"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use NewClusterEnabled::{Auto, False, True};

    const AGENT: &str = "muster://shop@10.0.0.1:2552#42";

    #[test]
    fn true_keeps_the_record_open() {
        assert_eq!(change(True, None, false), None);
        assert_eq!(change(True, Some(AGENT), true), Some(None));
        assert_eq!(change(True, Some(LOCKED), false), Some(None));
    }

    #[test]
    fn false_holds_it_unless_a_cluster_already_holds_it() {
        assert_eq!(change(False, None, false), Some(Some(LOCKED)));
        assert_eq!(change(False, None, true), Some(Some(LOCKED)));
        assert_eq!(change(False, Some(AGENT), true), None);
    }

    #[test]
    fn auto_is_open_until_formed_and_never_reopened_after() {
        assert_eq!(change(Auto, None, false), None, "open while forming");
        assert_eq!(change(Auto, Some(AGENT), true), None, "the former holds it");
        assert_eq!(
            change(Auto, Some(AGENT), false),
            None,
            "claimed, not yet seen"
        );
        assert_eq!(change(Auto, None, true), Some(Some(FORMED)));
        assert_eq!(
            change(Auto, Some(LOCKED), false),
            Some(None),
            "false → auto"
        );
        assert_eq!(change(Auto, Some(LOCKED), true), None);
        assert_eq!(change(Auto, Some(FORMED), false), None);
    }
}
