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
//!   has formed. A claim by an agent that is gone before the operator ever saw the
//!   cluster formed (it died right after forming, before the others joined) is cleared
//!   once the evidence says no member is left: the claim is older than [`CLAIM_GRACE`],
//!   no pod of the cluster is terminating, and every pod's agent answers and is no
//!   member. That is when the ConfigMap lock, still `true`, would let the pods form
//!   anyway; without it the cluster would never form.
//!
//! The record names the cluster's ConfigMap (annotation
//! [`CONFIG_MAP_ANNOTATION`]): agents read its `new-cluster-enabled` key from the API
//! server when they claim a free record, so a key turned on reaches them at once, where
//! the mounted file follows at the kubelet's pace (a minute or more), and a key turned
//! off stops them while a kubelet still shows an old `true`. The record is written
//! before the ConfigMap in every reconcile, so a hold comes before the key it goes
//! with; where the key turns off with no hold (`FormingHeld` under `true`), a claim
//! that read the key just before can still go through (one round trip, where a mounted
//! file lagged a minute).
//!
//! Every write carries the `resourceVersion` read, so an agent's claim and the
//! operator's write never overwrite each other: the loser gets 409 and looks again.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;

use super::build::formation_lease;
use super::{Context, Error};
use crate::agents::Agents;
use crate::crd::{ClusterSpec, Downing, NewClusterEnabled};
use node_agent::bootstrap::record::{CONFIG_MAP_ANNOTATION, holder_of};

/// The operator's hold under `newClusterEnabled: false`.
pub const LOCKED: &str = "muster-operator: spec.bootstrap.newClusterEnabled is false";
/// The operator's record of a cluster that formed without a claim.
pub const FORMED: &str = "muster-operator: the cluster formed without claiming this record";

/// The operator's hold while pods of the cluster may still run unseen
/// ([`crate::stranded`]): no agent forms then, whatever the mode.
pub const STRANDED: &str = "muster-operator: pods of the cluster may still run unseen (stuck terminating, or on a node that is not Ready)";

/// An agent's claim is at least this old before the operator may find its claimant
/// gone: a live claimant is a member within moments of its claim.
pub const CLAIM_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Is `holder` an agent (not one of the operator's own holds)?
fn is_agent(holder: &str) -> bool {
    !holder.starts_with("muster-operator:")
}

/// The holder to write, when it must change: `Some(None)` clears it. `claimant_gone`:
/// the evidence that an agent's claim was left by an agent that is gone and no member
/// is left (see the module docs); only asked for under `auto` before formation.
/// `stopped`: the cluster was scaled to zero and no pod of it is left
/// ([`crate::status::stopped`]); under `auto` the record then opens for the next one.
pub fn change(
    mode: NewClusterEnabled,
    holder: Option<&str>,
    (formed, stopped): (bool, bool),
    claimant_gone: bool,
) -> Option<Option<&'static str>> {
    match (mode, holder) {
        (NewClusterEnabled::Auto, Some(_)) if stopped => Some(None),
        (NewClusterEnabled::True, Some(_)) => Some(None),
        (NewClusterEnabled::False, None) => Some(Some(LOCKED)),
        (NewClusterEnabled::Auto, Some(LOCKED)) if !formed => Some(None),
        (NewClusterEnabled::Auto, Some(h)) if !formed && is_agent(h) && claimant_gone => Some(None),
        (NewClusterEnabled::Auto, None) if formed => Some(Some(FORMED)),
        _ => None,
    }
}

/// [`change`], fenced: while pods of the cluster may still run unseen (`stranded`) the
/// record stays held whatever the mode — a free record becomes the operator's
/// [`STRANDED`] hold, any other hold is kept as it is (an agent's claim above all: it
/// stands for a cluster that exists) — and once none is left, the operator's own
/// [`STRANDED`] hold goes as the mode says with nobody holding it.
pub fn change_fenced(
    mode: NewClusterEnabled,
    holder: Option<&str>,
    state: (bool, bool),
    claimant_gone: bool,
    stranded: bool,
) -> Option<Option<&'static str>> {
    if stranded {
        return holder.is_none().then_some(Some(STRANDED));
    }
    if holder == Some(STRANDED) {
        return Some(change(mode, None, state, false).unwrap_or(None));
    }
    change(mode, holder, state, claimant_gone)
}

/// With `lease-majority` downing: creates the resolver's Lease (`existing`, as read)
/// when missing, unheld, so that the agents need no right to create Leases. Never
/// changes one: its holder is the agents'.
pub async fn keep_sbr(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    existing: Option<&Lease>,
) -> Result<(), Error> {
    if cs.spec.membership.downing != Downing::LeaseMajority || existing.is_some() {
        return Ok(());
    }
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), ns);
    let name = formation_lease::sbr_name(cs);
    match api
        .create(&PostParams::default(), &formation_lease::sbr_build(cs))
        .await
    {
        Ok(_) => {
            tracing::info!(lease = %name, "created the lease-majority Lease");
            Ok(())
        }
        // Created since we looked: looked at next time.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::kube(format!("create Lease {name}"), e)),
    }
}

/// Whether a whole-cluster loss opens the record held by `holder`: the operator's own
/// holds always (also on the reconciles after the loss until the cluster has formed
/// again, `recovering`: nothing else would lift them), an agent's claim only in the
/// reconcile that found the loss and only if it is older than the evidence
/// (`old_claim`) — a younger one may be the agent forming the cluster anew.
pub fn opens_after_loss(
    (lost, recovering): (bool, bool),
    holder: Option<&str>,
    old_claim: bool,
) -> bool {
    let operator_hold = holder.is_some_and(|h| !is_agent(h));
    (lost && (operator_hold || old_claim)) || (recovering && operator_hold)
}

/// Whether the record's holder took it at least `age` ago (a record without a time is
/// taken as old: the operator's own holds always carry one).
fn held_longer_than(lease: &Lease, age: std::time::Duration) -> bool {
    let Some(at) = lease.spec.as_ref().and_then(|s| s.acquire_time.as_ref()) else {
        return true;
    };
    k8s_openapi::jiff::Timestamp::now().duration_since(at.0)
        >= k8s_openapi::jiff::SignedDuration::try_from(age).unwrap_or_default()
}

/// Whether the claimant of an agent's claim may be gone: under `auto`, not formed, held
/// by an agent for at least [`CLAIM_GRACE`]. Only then are the agents asked.
fn worth_asking(mode: NewClusterEnabled, lease: &Lease, formed: bool) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let held_since = spec.acquire_time.as_ref().map(|t| t.0);
    mode == NewClusterEnabled::Auto
        && !formed
        && holder_of(Some(spec)).is_some_and(is_agent)
        && held_since.is_some_and(|t| {
            k8s_openapi::jiff::Timestamp::now().duration_since(t)
                >= k8s_openapi::jiff::SignedDuration::try_from(CLAIM_GRACE).unwrap_or_default()
        })
}

/// No member is left among the pods: none terminating, and every pod has an IP and
/// its agent answers that it is no member.
async fn no_member_left(agents: Option<&Agents>, pods: &[Pod]) -> bool {
    let Some(agents) = agents else {
        return false;
    };
    if pods.is_empty() || pods.iter().any(|p| p.metadata.deletion_timestamp.is_some()) {
        return false;
    }
    let Some(ips) = pods
        .iter()
        .map(super::observe::pod_ip)
        .collect::<Option<Vec<_>>>()
    else {
        return false;
    };
    agents.none_joined(&ips).await
}

/// Makes `lease` name `config_map` (see the module docs); whether that changed it.
fn name_config_map(lease: &mut Lease, config_map: &str) -> bool {
    let annotations = lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    if annotations.get(CONFIG_MAP_ANNOTATION).map(String::as_str) == Some(config_map) {
        return false;
    }
    annotations.insert(CONFIG_MAP_ANNOTATION.to_owned(), config_map.to_owned());
    true
}

/// Brings the record's holder in step, and has it name the cluster's ConfigMap; the
/// holder after this reconcile (`None`: open). A conflict (an agent claimed it
/// meanwhile) is left to the next reconcile.
pub async fn keep(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    (formed, stopped, stranded): (bool, bool, bool),
    (lost, recovering): (bool, bool),
    (pods, agents): (&[Pod], Option<&Agents>),
    existing: Option<Lease>,
) -> Result<Option<String>, Error> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), ns);
    let name = formation_lease::name(cs);
    let mode = cs.spec.bootstrap.new_cluster_enabled;
    let Some(mut lease) = existing else {
        let mut fresh = formation_lease::build(cs);
        let holder = change_fenced(
            mode,
            None,
            (formed, stopped || lost || recovering),
            false,
            stranded,
        )
        .flatten();
        if let Some(spec) = &mut fresh.spec {
            spec.holder_identity = holder.map(str::to_owned);
        }
        name_config_map(&mut fresh, &cs.name_any());
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
    let gone = worth_asking(mode, &lease, formed) && no_member_left(agents, pods).await;
    // A cluster lost as a whole opens the record as one stopped does (see
    // crate::recovery for the evidence), but never over a claim younger than the
    // evidence: that agent may be forming the cluster anew right now (a second
    // operator, or a retried status write, must not open the record under it).
    let lost = opens_after_loss(
        (lost, recovering),
        holder.as_deref(),
        held_longer_than(&lease, crate::recovery::CONFIRM),
    );
    let opening = (formed, stopped || lost);
    let named = name_config_map(&mut lease, &cs.name_any());
    let Some(next) = change_fenced(mode, holder.as_deref(), opening, gone, stranded) else {
        if named {
            // A record of an older operator: it names the ConfigMap from now on. Not
            // written: agents go by their own setting, as before; tried again next time.
            match api.replace(&name, &PostParams::default(), &lease).await {
                Ok(_) => {
                    tracing::info!(lease = %name, "the formation record names the cluster's ConfigMap now")
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => {
                    tracing::warn!(lease = %name, error = %e, "cannot name the cluster's ConfigMap on the formation record; agents go by their mounted new-cluster-enabled until it is")
                }
            }
        }
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
            if lost && holder.is_some() {
                let note = format!(
                    "opened the formation record {name}, held by {}: every member of the cluster is gone (every pod's agent answers that it is no member, no pod is terminating or stranded, for {} s), so the pods may form it again; exactly one forms, the one that claims the record",
                    holder.as_deref().unwrap_or_default(),
                    crate::recovery::CONFIRM.as_secs()
                );
                super::event(
                    ctx,
                    cs,
                    None,
                    EventType::Warning,
                    "ClusterLost",
                    "Recover",
                    note,
                )
                .await;
            } else if stopped && holder.is_some() {
                let note = format!(
                    "opened the formation record {name}, held by {}: the cluster was scaled to zero and no pod of it is left, so the next scale-up forms a new cluster",
                    holder.as_deref().unwrap_or_default()
                );
                super::event(
                    ctx,
                    cs,
                    None,
                    EventType::Normal,
                    "ClusterStopped",
                    "Clear",
                    note,
                )
                .await;
            } else if gone {
                let note = format!(
                    "cleared the formation record {name}, held by {}: that agent is gone, no pod's agent is a member and the cluster was never seen formed, so the pods may form it again",
                    holder.as_deref().unwrap_or_default()
                );
                super::event(
                    ctx,
                    cs,
                    None,
                    EventType::Warning,
                    "FormationRecordCleared",
                    "Clear",
                    note,
                )
                .await;
            }
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
        assert_eq!(change(True, None, (false, false), false), None);
        assert_eq!(change(True, Some(AGENT), (true, false), false), Some(None));
        assert_eq!(
            change(True, Some(LOCKED), (false, false), false),
            Some(None)
        );
    }

    #[test]
    fn false_holds_it_unless_a_cluster_already_holds_it() {
        assert_eq!(
            change(False, None, (false, false), false),
            Some(Some(LOCKED))
        );
        assert_eq!(
            change(False, None, (true, false), false),
            Some(Some(LOCKED))
        );
        assert_eq!(change(False, Some(AGENT), (true, false), true), None);
    }

    #[test]
    fn auto_is_open_until_formed_and_never_reopened_after() {
        assert_eq!(
            change(Auto, None, (false, false), false),
            None,
            "open while forming"
        );
        assert_eq!(
            change(Auto, Some(AGENT), (true, false), true),
            None,
            "the former holds it"
        );
        assert_eq!(
            change(Auto, Some(AGENT), (false, false), false),
            None,
            "claimed, not yet seen"
        );
        assert_eq!(change(Auto, None, (true, false), false), Some(Some(FORMED)));
        assert_eq!(
            change(Auto, Some(LOCKED), (false, false), false),
            Some(None),
            "false → auto"
        );
        assert_eq!(change(Auto, Some(LOCKED), (true, false), false), None);
        assert_eq!(change(Auto, Some(FORMED), (false, false), true), None);
    }

    #[test]
    fn a_gone_claimant_is_cleared_only_under_auto_before_formation() {
        assert_eq!(change(Auto, Some(AGENT), (false, false), true), Some(None));
        assert_eq!(
            change(Auto, Some(AGENT), (true, false), true),
            None,
            "formed: never"
        );
        assert_eq!(change(False, Some(AGENT), (false, false), true), None);
        assert_eq!(change(Auto, Some(LOCKED), (true, false), true), None);
    }

    #[test]
    fn a_cluster_stopped_as_a_whole_opens_the_record_under_auto_only() {
        for holder in [AGENT, FORMED] {
            assert_eq!(change(Auto, Some(holder), (false, true), false), Some(None));
        }
        assert_eq!(change(Auto, None, (false, true), false), None);
        assert_eq!(
            change(False, Some(LOCKED), (false, true), false),
            None,
            "false stays locked"
        );
    }

    #[test]
    fn a_loss_opens_the_operators_holds_and_only_old_claims() {
        for holder in [FORMED, LOCKED, STRANDED] {
            assert!(
                opens_after_loss((true, false), Some(holder), false),
                "{holder}"
            );
            assert!(
                opens_after_loss((false, true), Some(holder), false),
                "{holder}: still lifted after the loss"
            );
        }
        assert!(
            opens_after_loss((true, false), Some(AGENT), true),
            "an old claim"
        );
        assert!(
            !opens_after_loss((true, false), Some(AGENT), false),
            "a fresh claim may be the new cluster forming"
        );
        assert!(
            !opens_after_loss((false, true), Some(AGENT), true),
            "after the loss an agent's claim is the new cluster's"
        );
        assert!(!opens_after_loss((false, false), Some(FORMED), true));
    }

    #[test]
    fn stranded_pods_hold_the_record_whatever_the_mode_and_release_it_to_the_mode() {
        for mode in [Auto, True, False] {
            for state in [(false, false), (true, false), (false, true)] {
                assert_eq!(
                    change_fenced(mode, None, state, true, true),
                    Some(Some(STRANDED)),
                    "a free record is held: {mode:?} {state:?}"
                );
                // Any other hold stays: an agent's claim is a cluster that exists (it
                // must never be replaced by a hold that is later released), and even
                // `true` and a stopped cluster do not clear it now.
                for holder in [AGENT, LOCKED, FORMED, STRANDED] {
                    assert_eq!(
                        change_fenced(mode, Some(holder), state, true, true),
                        None,
                        "{mode:?} {holder:?} {state:?}"
                    );
                }
            }
        }
        // None left: what the mode says with nobody holding it.
        assert_eq!(
            change_fenced(True, Some(STRANDED), (true, false), false, false),
            Some(None)
        );
        assert_eq!(
            change_fenced(False, Some(STRANDED), (false, false), false, false),
            Some(Some(LOCKED))
        );
        assert_eq!(
            change_fenced(Auto, Some(STRANDED), (true, false), false, false),
            Some(Some(FORMED)),
            "formed: the record stays held"
        );
        assert_eq!(
            change_fenced(Auto, Some(STRANDED), (false, false), false, false),
            Some(None),
            "not formed: open again"
        );
        // Otherwise as before.
        assert_eq!(
            change_fenced(Auto, Some(AGENT), (false, false), true, false),
            change(Auto, Some(AGENT), (false, false), true)
        );
    }

    #[test]
    fn the_record_names_the_config_map_and_is_written_only_on_a_change() {
        let mut lease = Lease::default();
        assert!(
            name_config_map(&mut lease, "shop"),
            "an older operator's record"
        );
        assert_eq!(
            node_agent::bootstrap::record::config_map_of(&lease, "shop-formation"),
            Some(Ok("shop")),
            "as agents read it"
        );
        assert!(
            !name_config_map(&mut lease, "shop"),
            "unchanged: nothing to write"
        );
        assert!(
            name_config_map(&mut lease, "other"),
            "set right if changed by hand"
        );
    }
}
