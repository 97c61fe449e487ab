//! The status the operator reports, computed as a pure function of what it observed
//! (pods, the agents' member list, the rollout step) and the status it reported last.
//! Nothing in it changes from one reconcile to the next unless the cluster did — no
//! per-reconcile timestamps, conditions keep their `lastTransitionTime` while their
//! status holds — so a steady cluster causes no status writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use node_agent::api::ClusterMembers;

use crate::crd::{
    ClusterSpecSpec, ClusterSpecStatus, MemberCounts, NewClusterEnabled, RolloutStatus,
};
use crate::validate::Problem;

/// Phases, as shown by `kubectl get`.
pub const PENDING: &str = "Pending";
pub const FORMING: &str = "Forming";
pub const RUNNING: &str = "Running";
pub const UPDATING: &str = "Updating";
pub const DEGRADED: &str = "Degraded";
/// Scaled to zero and no pod of the cluster left: the cluster stopped as a whole.
pub const STOPPED: &str = "Stopped";
pub const PAUSED: &str = "Paused";
/// Formed condition reason from a whole-cluster loss until the cluster forms again.
pub const CLUSTER_LOST: &str = "ClusterLost";

/// The annotation that pauses all reconciliation of a ClusterSpec (maintenance
/// windows): with the value `"true"` the operator writes nothing for it.
pub const PAUSE_ANNOTATION: &str = "muster.dev/reconcile-paused";

/// Everything the status is computed from.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    pub spec: &'a ClusterSpecSpec,
    pub generation: Option<i64>,
    pub previous: Option<&'a ClusterSpecStatus>,
    /// Pods that exist (not terminating).
    pub pods: i32,
    /// Scaled to zero, and no pod of the cluster exists, terminating or not (see
    /// [`stopped`]): the cluster is gone by the operator's own full shutdown, and
    /// scaling up forms a new one.
    pub stopped: bool,
    /// The pods' label selector (for the scale subresource).
    pub selector: String,
    /// The StatefulSet selects by the label pods were selected by before muster had its
    /// own: what to do about it, in words.
    pub legacy_selector: Option<String>,
    /// The cluster's NetworkPolicy.
    pub network_policy: NetworkPolicyState,
    /// The member list of the agent that answered; `Err`: why none did.
    pub members: Result<&'a ClusterMembers, String>,
    /// Problems of the spec; the controller changed nothing when there are any.
    pub problems: &'a [Problem],
    /// Objects of someone else's under the names of the cluster's objects.
    pub conflicts: &'a [Problem],
    /// A rolling update in progress: pods updated, of all, the pod being replaced and
    /// the step in words. `None` when every pod runs the current template.
    pub rollout: Option<RolloutStatus>,
    /// A scale-down waiting for members to leave, in words.
    pub scaling: Option<String>,
    /// A replaced pod that did not become Ready and an Up member in time, in words.
    pub stalled: Option<String>,
    /// False when the server has no `policy/v1` PodDisruptionBudget.
    pub pdb_supported: bool,
    /// False when the server has no StatefulSet persistentVolumeClaimRetentionPolicy.
    pub retention_supported: bool,
    /// Forming is allowed by the spec, but held off because some pod still runs an
    /// older template (its agent started with other settings; the controller's
    /// `build::pods_on_other_template`).
    pub forming_held: bool,
    /// Pods that may still run unseen ([`crate::stranded`]): forming is refused.
    pub stranded: &'a [crate::stranded::Stranded],
    /// Every member of the formed cluster is gone ([`crate::recovery`]): forming opens
    /// again, and the formed time is cleared.
    pub lost: bool,
    /// Why a formed cluster with no Up member is not (yet) found lost, in words.
    pub recovery: Option<String>,
    /// With spec.tls, what the operator keeps now (`None`: not looked at in this
    /// reconcile; the previous status's stays).
    pub tls: Option<crate::crd::TlsStatus>,
    /// The cluster key as the operator keeps it now (`None`: not looked at in this
    /// reconcile; the previous status's stays).
    pub cluster_key: Option<crate::crd::ClusterKeyStatus>,
    pub now: Timestamp,
}

/// What became of the cluster's NetworkPolicy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkPolicyState {
    /// spec.networkPolicy.enabled is false.
    Disabled,
    /// The server cannot keep it (Kubernetes < 1.25).
    Unsupported,
    /// The operator may not read NetworkPolicies (its RBAC predates them).
    Forbidden,
    /// Kept; `other_ports_open`: it opens the pods' other ports to all (no other policy
    /// of the namespace applies to them).
    Applied { other_ports_open: bool },
}

/// The contact points required to form as status records them: fixed when first
/// reported, from the spec or the replica count at that time.
pub fn required_contact_points(
    spec: &ClusterSpecSpec,
    previous: Option<&ClusterSpecStatus>,
) -> i32 {
    previous
        .and_then(|s| s.required_contact_points)
        .or(spec.bootstrap.required_contact_points)
        // Scaled to zero, nothing forms; the agents' setting must still be a count.
        .unwrap_or(spec.replicas.max(1))
}

/// The contact points required to form as the agents get them: the spec's, else the
/// recorded default ([`required_contact_points`]).
pub fn agents_required_contact_points(
    spec: &ClusterSpecSpec,
    previous: Option<&ClusterSpecStatus>,
) -> i32 {
    spec.bootstrap
        .required_contact_points
        .unwrap_or_else(|| required_contact_points(spec, previous))
}

/// The contact points that must all agree to form without the stable margin (the
/// agents' `expected-contact-point-nr`), given the `required` ones. While the agents may
/// form, the replicas: forming is safe only if fewer than half of the agents starting
/// together can each agree on a set of their own, so a scale-up before forming must
/// reach them (it rolls the pods, which are not members yet). Once formed and locked,
/// fixed at the last value: the agents never form again, and a scale must not change
/// agent.yaml, whose digest is in the pod template (every scale would roll every pod).
pub fn expected_contact_points(
    spec: &ClusterSpecSpec,
    previous: Option<&ClusterSpecStatus>,
    required: i32,
) -> i32 {
    let follow = required.max(spec.replicas);
    match previous {
        Some(p)
            if p.formed_at.is_some()
                && spec.bootstrap.new_cluster_enabled != NewClusterEnabled::True =>
        {
            // Never below the required: the agent refuses expected < required.
            p.expected_contact_points
                .map_or(follow, |e| e.max(required))
        }
        _ => follow,
    }
}

/// Members by app version (the pod template revision their pod runs): during a
/// rollout, how many run the old and the new one.
fn app_versions(members: &ClusterMembers) -> std::collections::BTreeMap<String, i32> {
    let mut out = std::collections::BTreeMap::new();
    for m in &members.members {
        *out.entry(m.app_version.clone()).or_insert(0) += 1;
    }
    out
}

/// Members that count as Up (Up and WeaklyUp serve).
fn up(members: &ClusterMembers) -> i32 {
    let n = members.members.iter().filter(|m| m.status.is_up()).count();
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Whether the cluster stopped as a whole: `spec.replicas` is 0, the StatefulSet (if
/// any) has 0 replicas, and no pod the cluster's selector selects exists, terminating
/// or not. Then no member of it can be alive in a pod, and forming a new cluster on
/// the next scale-up is safe (the formed record and lock are cleared).
pub fn stopped(
    spec: &ClusterSpecSpec,
    stateful_set_replicas: Option<i32>,
    pods_of_the_cluster: usize,
) -> bool {
    spec.replicas == 0 && stateful_set_replicas.unwrap_or(0) == 0 && pods_of_the_cluster == 0
}

/// When the cluster counts as formed: the last report's time, or now when at least the
/// required contact points are Up members.
pub fn formed_at(
    spec: &ClusterSpecSpec,
    previous: Option<&ClusterSpecStatus>,
    members: Option<&ClusterMembers>,
    now: Timestamp,
) -> Option<String> {
    let before = previous.and_then(|s| s.formed_at.clone());
    before.or_else(|| {
        let required = required_contact_points(spec, previous);
        members
            .filter(|m| up(m) >= required)
            .map(|_| now.to_string())
    })
}

/// Whether the agents may form a new cluster: `auto` until formed, then never again
/// (re-enabling is the user's explicit `true`).
pub fn new_cluster_enabled(spec: &ClusterSpecSpec, formed: bool) -> bool {
    match spec.bootstrap.new_cluster_enabled {
        NewClusterEnabled::True => true,
        NewClusterEnabled::False => false,
        NewClusterEnabled::Auto => !formed,
    }
}

/// The status to report.
pub fn compute(seen: &Seen<'_>) -> ClusterSpecStatus {
    let spec = seen.spec;
    let required = required_contact_points(spec, seen.previous);
    let members = seen.members.as_ref().ok().copied();
    let formed_at =
        formed_at(spec, seen.previous, members, seen.now).filter(|_| !seen.stopped && !seen.lost);
    // Formed again after a loss? Until then the Formed condition keeps saying so.
    let recovering = seen.previous.is_some_and(|s| {
        s.formed_at.is_none()
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Formed" && c.reason == CLUSTER_LOST)
    });
    let counts = members.map(|m| MemberCounts {
        up: up(m),
        total: i32::try_from(m.members.len()).unwrap_or(i32::MAX),
        unreachable: i32::try_from(m.unreachable.len()).unwrap_or(i32::MAX),
    });
    // While forming, the agents that answer are no members yet: the pods are what is
    // coming (else `total` would read 0 until the cluster exists).
    let counts = if formed_at.is_none() {
        let c = counts.unwrap_or_default();
        Some(MemberCounts {
            total: c.total.max(seen.pods),
            ..c
        })
    } else {
        counts
    };
    let up_count = counts.as_ref().map_or(0, |c| c.up);
    let unreachable = counts.as_ref().map_or(0, |c| c.unreachable);

    let invalid = (!seen.problems.is_empty()).then(|| {
        seen.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    });
    let conflicting = (!seen.conflicts.is_empty()).then(|| {
        seen.conflicts
            .iter()
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    });
    let degraded: Option<(&str, String)> = if let Some(c) = &conflicting {
        Some(("ObjectConflict", format!("the spec was not applied: {c}")))
    } else if let Some(p) = &invalid {
        Some(("InvalidSpec", format!("the spec was not applied: {p}")))
    } else if spec.replicas > 0
        && members.is_some_and(|m| m.members.iter().any(|x| x.status.is_shutting_down()))
    {
        // Scaled to zero, then back before every pod stopped: a prepared cluster takes
        // nobody in and moves nobody Up, for good.
        Some((
            "FullShutdownUnfinished",
            "the cluster was prepared for a full shutdown (scaled to zero), which cannot be undone: it takes no new member and moves none Up. Scale to 0 to finish it (phase Stopped); scaling up then forms a new cluster".into(),
        ))
    } else if formed_at.is_some()
        && members.is_some_and(|m| up(m) == 0)
        && !new_cluster_enabled(spec, true)
    {
        Some((
            "NoClusterToJoin",
            match (&spec.bootstrap.new_cluster_enabled, &seen.recovery) {
                (NewClusterEnabled::Auto, Some(why)) => format!(
                    "no member is Up and forming a new cluster is off (the cluster formed before): the pods wait to join one. The operator forms it again by itself once it has evidence that no member is alive anywhere; not yet: {why}"
                ),
                _ => "no member is Up and forming a new cluster is off (the cluster formed before): the pods wait to join one. If the whole cluster is gone, set spec.bootstrap.newClusterEnabled: \"true\" until it has formed again, then back to auto".into(),
            },
        ))
    } else if let Some(s) = &seen.stalled {
        Some(("MemberUpTimeout", s.clone()))
    } else if unreachable > 0 {
        Some((
            "UnreachableMembers",
            format!(
                "{unreachable} member(s) unreachable; the split brain resolver decides after stableAfter"
            ),
        ))
    } else if let (Some(_), Err(e)) = (&formed_at, &seen.members) {
        Some((
            "AgentsNotAnswering",
            format!("no agent answered /cluster/members: {e}"),
        ))
    } else {
        None
    };
    let rollout_words = seen.rollout.as_ref().map(|r| {
        format!(
            "{} of {} pods updated; {}",
            r.updated,
            r.total,
            r.step.as_deref().unwrap_or("in progress")
        )
    });
    let progressing: Option<(&str, String)> = if seen.forming_held {
        Some((
            "FormingHeld",
            format!(
                "forming a new cluster waits until every pod runs the current template (pods that started before the last change count on other contact points){}",
                rollout_words.map(|w| format!("; {w}")).unwrap_or_default()
            ),
        ))
    } else if let Some(w) = rollout_words {
        Some(("RollingUpdate", w))
    } else if let Some(s) = &seen.scaling {
        Some(("ScalingDown", s.clone()))
    } else if formed_at.is_none() {
        Some((
            "Forming",
            format!("{up_count} of {required} required members Up"),
        ))
    } else if up_count != spec.replicas && degraded.is_none() {
        Some((
            "Scaling",
            format!("{up_count} of {} members Up", spec.replicas),
        ))
    } else {
        None
    };

    let phase = if seen.stopped {
        STOPPED
    } else if formed_at.is_none() {
        if seen.pods == 0 || members.is_none() {
            PENDING
        } else {
            FORMING
        }
    } else if degraded.is_some() && invalid.is_none() {
        DEGRADED
    } else if progressing.is_some() {
        UPDATING
    } else {
        RUNNING
    };

    let members_message = match &seen.members {
        Ok(_) => format!("{up_count} of {} members Up", spec.replicas),
        Err(e) => format!("no agent answered: {e}"),
    };
    const STOPPED_WORDS: &str = "scaled to zero and every pod gone: the cluster stopped as a whole; scaling up forms a new cluster";
    let mut conditions = vec![
        match &formed_at {
            None if seen.stopped => cond("Formed", false, "Stopped", STOPPED_WORDS.into()),
            None if seen.lost || recovering => cond(
                "Formed",
                false,
                CLUSTER_LOST,
                format!(
                    "every member of the cluster was gone (every pod's agent answered that it is no member, none was terminating or stranded, for {} s): forming is open again until one cluster forms; {up_count} of {required} required members Up",
                    crate::recovery::CONFIRM.as_secs()
                ),
            ),
            Some(at) => cond(
                "Formed",
                true,
                "ClusterFormed",
                format!("formed at {at} with {required} required contact points"),
            ),
            None => cond(
                "Formed",
                false,
                "WaitingForContactPoints",
                format!("{up_count} of {required} required members Up"),
            ),
        },
        if seen.stopped {
            cond("Available", false, "Stopped", STOPPED_WORDS.into())
        } else if up_count * 2 > spec.replicas {
            cond("Available", true, "MajorityUp", members_message)
        } else {
            cond("Available", false, "NoMajorityUp", members_message)
        },
        match progressing {
            _ if seen.stopped => cond("Progressing", false, "Stopped", STOPPED_WORDS.into()),
            Some((reason, message)) => cond("Progressing", true, reason, message),
            None => cond(
                "Progressing",
                false,
                "Complete",
                "every pod runs the current template and is an Up member".into(),
            ),
        },
        match degraded {
            Some((reason, message)) => cond("Degraded", true, reason, message),
            None => cond(
                "Degraded",
                false,
                "Healthy",
                "no unreachable members".into(),
            ),
        },
    ];
    let budget = &spec.disruption_budget;
    conditions.push(if !budget.enabled {
        cond("DisruptionBudget", false, "Disabled", "spec.disruptionBudget.enabled is false: no PodDisruptionBudget limits voluntary evictions".into())
    } else if seen.pdb_supported {
        cond(
            "DisruptionBudget",
            true,
            "Applied",
            format!(
                "a PodDisruptionBudget allows {} pod(s) down at a time",
                budget
                    .max_unavailable()
                    .map_or_else(|e| e, |m| crate::crd::int_or_string(&m))
            ),
        )
    } else {
        cond("DisruptionBudget", false, "PolicyV1Unavailable", "the API server has no policy/v1 PodDisruptionBudget (Kubernetes < 1.21): voluntary evictions are not limited".into())
    });
    if spec.volume_claim_retention != crate::crd::VolumeClaimRetention::default() {
        conditions.push(if seen.retention_supported {
            cond("VolumeClaimRetention", true, "Applied", "the StatefulSet's persistentVolumeClaimRetentionPolicy follows spec.volumeClaimRetention".into())
        } else {
            cond("VolumeClaimRetention", false, "Unsupported", "the API server has no StatefulSet persistentVolumeClaimRetentionPolicy (Kubernetes < 1.27): the pods' claims are kept whatever spec.volumeClaimRetention says; delete them by hand".into())
        });
    }
    conditions.push(match seen.network_policy {
        NetworkPolicyState::Disabled => cond("NetworkPolicy", false, "Disabled", "spec.networkPolicy.enabled is false: every pod that reaches the cluster's pods reaches the agents' ports".into()),
        NetworkPolicyState::Forbidden => cond("NetworkPolicy", false, "Forbidden", "the operator may not read NetworkPolicies in this namespace (its RBAC is older than the operator): the cluster's policy is neither written nor removed (one made earlier stays as it was, even with spec.networkPolicy.enabled false); re-apply manifests/operator.yaml (or manifests/namespaced/operator.yaml) or upgrade the Helm chart".into()),
        NetworkPolicyState::Unsupported => cond("NetworkPolicy", false, "Unsupported", "the API server is older than Kubernetes 1.25 and drops NetworkPolicy port ranges, which the policy needs to leave the pods' other ports as they are: none is kept, and every pod that reaches the cluster's pods reaches the agents' ports".into()),
        NetworkPolicyState::Applied { other_ports_open } => cond(
            "NetworkPolicy",
            true,
            "Applied",
            format!(
                "the agents' ports (8558, 2552) take connections from the cluster's pods and the operator{}{}; {} (enforced where the network plugin enforces NetworkPolicy, with port ranges)",
                if spec.network_policy.management_from.is_empty() { "" } else { ", and 8558 from spec.networkPolicy.managementFrom" },
                if other_ports_open { " only" } else { ", and from whatever the namespace's other NetworkPolicies allow" },
                if other_ports_open { "the pods' other ports are open to all, as without a policy" } else { "the pods' other ports are as those policies say" }
            ),
        ),
    });
    if let Some(m) = &seen.legacy_selector {
        conditions.push(cond("PodSelector", false, "LegacyLabel", m.clone()));
    }
    conditions.push(if seen.stranded.is_empty() {
        cond(
            "StrandedPods",
            false,
            "None",
            "no pod of the cluster is stuck terminating or on a node that is not Ready".into(),
        )
    } else {
        cond(
            "StrandedPods",
            true,
            "PodsMayStillRun",
            crate::stranded::words(seen.stranded),
        )
    });
    let previous_conditions = seen
        .previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    for c in &mut conditions {
        c.observed_generation = seen.generation;
        c.last_transition_time = previous_conditions
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .map_or_else(|| Time(seen.now), |p| p.last_transition_time.clone());
    }

    ClusterSpecStatus {
        observed_generation: seen.generation,
        phase: Some(phase.to_owned()),
        replicas: seen.pods,
        selector: Some(seen.selector.clone()),
        // After forming: unknown while no agent answers (the Degraded condition says
        // why), never stale. While forming: the pods.
        members: counts,
        app_versions: members.map(app_versions).unwrap_or_default(),
        leader: members.and_then(|m| m.leader.as_ref().map(ToString::to_string)),
        oldest: members.and_then(|m| m.oldest.as_ref().map(ToString::to_string)),
        new_cluster_enabled: Some(
            new_cluster_enabled(spec, formed_at.is_some())
                && !seen.forming_held
                && seen.stranded.is_empty(),
        ),
        formed_at,
        stranded_pods: seen.stranded.to_vec(),
        // Stopped: fixed anew when the next cluster forms.
        // Lost: fixed anew too (the pods that exist now are what forms).
        required_contact_points: (!seen.stopped && !seen.lost).then_some(required),
        // What the agents got: from a spec that was applied (an invalid one changed
        // nothing, so it may not move the kept number either).
        expected_contact_points: if seen.stopped || seen.lost {
            None
        } else if seen.problems.is_empty() && seen.conflicts.is_empty() {
            Some(expected_contact_points(
                spec,
                seen.previous,
                agents_required_contact_points(spec, seen.previous),
            ))
        } else {
            seen.previous.and_then(|p| p.expected_contact_points)
        },
        rollout: seen.rollout.clone(),
        // Kept while a refused spec (e.g. TLS turned off under running pods) leaves
        // the agents as they were.
        tls: if spec.tls.enabled || !seen.problems.is_empty() || !seen.conflicts.is_empty() {
            seen.tls
                .clone()
                .or_else(|| seen.previous.and_then(|p| p.tls.clone()))
        } else {
            None
        },
        cluster_key: seen
            .cluster_key
            .clone()
            .or_else(|| seen.previous.and_then(|p| p.cluster_key.clone())),
        conditions,
    }
}

/// The status while reconciliation is paused: the last one, with phase `Paused` and a
/// `ReconciliationPaused` condition (the next normal status drops it).
pub fn paused(
    previous: Option<&ClusterSpecStatus>,
    generation: Option<i64>,
    now: Timestamp,
) -> ClusterSpecStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.phase = Some(PAUSED.to_owned());
    let mut c = cond(
        "ReconciliationPaused",
        true,
        "Annotation",
        format!(
            "{PAUSE_ANNOTATION} is \"true\": the operator applies no change, takes no rollout or scaling step and updates no status until the annotation is removed"
        ),
    );
    // As it was when the pause began: a spec edited while paused writes nothing.
    let before = status.conditions.iter().find(|x| x.type_ == c.type_);
    c.observed_generation = before.map_or(generation, |x| x.observed_generation);
    c.last_transition_time = before.map_or(Time(now), |x| x.last_transition_time.clone());
    status.conditions.retain(|x| x.type_ != c.type_);
    status.conditions.push(c);
    status
}

/// The last status with `Degraded` saying why the last reconcile failed (e.g. a
/// permission the operator lacks); everything else as it was.
pub fn with_error(
    previous: Option<&ClusterSpecStatus>,
    generation: Option<i64>,
    error: &str,
    now: Timestamp,
) -> ClusterSpecStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let mut degraded = cond(
        "Degraded",
        true,
        "ReconcileError",
        format!("the last reconcile failed and is retried: {error}"),
    );
    degraded.observed_generation = generation;
    degraded.last_transition_time = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded" && c.status == "True")
        .map_or(Time(now), |c| c.last_transition_time.clone());
    status.conditions.retain(|c| c.type_ != "Degraded");
    status.conditions.push(degraded);
    status
}

fn cond(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: None,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

#[cfg(test)]
mod tests;
