//! The oldest-last rollout planner: a pure function from what the operator observes
//! (pods, their revision and readiness, the cluster's members) to the one next step.
//! Because the plan is derived from the cluster and the pods alone, an operator that
//! restarts mid-rollout picks up where the last one stopped.
//!
//! Order: outdated pods that are not members go first (they hold nothing), then
//! members youngest first (highest `upNumber`), the oldest — which holds the cluster
//! singletons — last, so the oldest changes exactly once. A member is told to Leave,
//! and its pod is deleted once it has left. Nothing moves while a pod is missing or
//! not Ready, a member is not Up, or a member is unreachable.

use std::net::IpAddr;

use node_agent::base::address::NodeAddress;
use node_agent::base::member::MemberStatus;

/// A pod of the cluster, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// Its controller revision (the StatefulSet's `controller-revision-hash` label).
    pub revision: String,
    pub ready: bool,
    /// Being deleted (has a deletion timestamp).
    pub terminating: bool,
    pub ip: Option<IpAddr>,
}

/// A cluster member, as the agents report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// The member's address; its IP is its pod's.
    pub address: NodeAddress,
    pub status: MemberStatus,
    pub up_number: u32,
    pub unreachable: bool,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub pods: Vec<PodView>,
    pub members: Vec<MemberView>,
    /// An agent answered with the member list; when none did, `members` is empty for
    /// want of knowledge, not because no pod is a member.
    pub members_known: bool,
    /// The revision every pod should run.
    pub target_revision: String,
    pub replicas: usize,
    pub paused: bool,
}

/// The one next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Every pod runs the target revision.
    Done,
    /// `spec.rollout.paused` is set and pods remain to be replaced.
    Paused { remaining: usize },
    /// Nothing may move yet; the reason, in words (shown in status).
    Wait(String),
    /// Ask this member to leave the cluster (its pod is replaced once it has left).
    Leave { pod: String, member: NodeAddress },
    /// Delete this pod; the StatefulSet recreates it from the new template.
    Delete { pod: String },
}

/// Progress for status: pods at the target revision, of all.
pub fn progress(o: &Observed) -> (usize, usize) {
    let updated = o
        .pods
        .iter()
        .filter(|p| p.revision == o.target_revision && !p.terminating)
        .count();
    (updated, o.replicas)
}

/// The member running in `pod`, by IP.
pub fn member_of<'a>(members: &'a [MemberView], pod: &PodView) -> Option<&'a MemberView> {
    let ip = pod.ip?;
    members.iter().find(|m| m.address.ip == ip)
}

/// The next step of the rollout.
pub fn plan(o: &Observed) -> Step {
    let member_of = |p: &PodView| member_of(&o.members, p);
    let outdated: Vec<&PodView> = o
        .pods
        .iter()
        .filter(|p| p.revision != o.target_revision)
        .collect();
    if outdated.is_empty() && o.pods.len() == o.replicas {
        return Step::Done;
    }
    if o.paused {
        return Step::Paused {
            remaining: outdated.len(),
        };
    }
    if let Some(p) = o.pods.iter().find(|p| p.terminating) {
        return Step::Wait(format!("pod {} is terminating", p.name));
    }
    if o.pods.len() < o.replicas {
        return Step::Wait(format!(
            "{} of {} pods exist; waiting for the StatefulSet to recreate the rest",
            o.pods.len(),
            o.replicas
        ));
    }
    // A member that is leaving: finish that replacement first.
    for p in &outdated {
        if let Some(m) = member_of(p)
            && m.status.is_going()
        {
            return if matches!(m.status, MemberStatus::Exiting | MemberStatus::Down) {
                Step::Delete {
                    pod: p.name.clone(),
                }
            } else {
                Step::Wait(format!("member {} of pod {} is leaving", m.address, p.name))
            };
        }
    }
    // Without a member list nothing is known to hold nothing: only an outdated pod
    // that is not Ready (its agent cannot serve, e.g. a broken image being replaced)
    // is replaced, one at a time; the rest waits until an agent answers.
    if !o.members_known {
        if let Some(p) = o
            .pods
            .iter()
            .find(|p| !p.ready && p.revision == o.target_revision)
        {
            return Step::Wait(format!("pod {} is not Ready", p.name));
        }
        return match outdated.iter().find(|p| !p.ready) {
            Some(p) => Step::Delete {
                pod: p.name.clone(),
            },
            None => Step::Wait(
                "no agent answered /cluster/members: no Ready member is replaced unseen".into(),
            ),
        };
    }
    // Outdated pods that are not members hold nothing: replace them first.
    if let Some(p) = outdated.iter().find(|p| member_of(p).is_none()) {
        return Step::Delete {
            pod: p.name.clone(),
        };
    }
    // Members only move on a healthy cluster.
    if let Some(m) = o.members.iter().find(|m| m.unreachable) {
        return Step::Wait(format!("member {} is unreachable", m.address));
    }
    if let Some(p) = o.pods.iter().find(|p| !p.ready) {
        return Step::Wait(format!("pod {} is not Ready", p.name));
    }
    if let Some(m) = o.members.iter().find(|m| m.status != MemberStatus::Up) {
        return Step::Wait(format!("member {} is {}, not Up", m.address, m.status));
    }
    if let Some(p) = o.pods.iter().find(|p| member_of(p).is_none()) {
        return Step::Wait(format!("pod {} is not a cluster member yet", p.name));
    }
    // Youngest first: the highest upNumber; the oldest (lowest) goes last.
    let next = outdated
        .iter()
        .filter_map(|p| member_of(p).map(|m| (m, p)))
        .max_by_key(|(m, _)| m.up_number);
    match next {
        Some((m, p)) => Step::Leave {
            pod: p.name.clone(),
            member: m.address.clone(),
        },
        None => Step::Wait("no outdated member found".into()),
    }
}

#[cfg(test)]
mod tests;
