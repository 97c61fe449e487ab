//! Scaling down gracefully: the StatefulSet removes the highest ordinals, so the members
//! in those pods are told to Leave first, and the StatefulSet shrinks only once they
//! have left (Exiting, Down, or gone). Pure, like the rollout planner: the decision
//! follows from the pods and the members alone, so it survives an operator restart.

use node_agent::base::address::NodeAddress;
use node_agent::base::member::MemberStatus;

use crate::rollout::{MemberView, PodView, member_of};

/// What a scale-down needs now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScaleDown {
    /// The replica count to give the StatefulSet.
    pub replicas: i32,
    /// Members to tell to Leave: (pod, member address).
    pub leave: Vec<(String, NodeAddress)>,
    /// What the shrink waits for, in words (`None`: nothing).
    pub waiting: Option<String>,
    /// Scaling to zero: ask the cluster to prepare for a full shutdown first.
    pub prepare_shutdown: bool,
}

/// The StatefulSet kept at `current` replicas for the reason `waiting`.
fn hold(current: i32, waiting: String) -> ScaleDown {
    ScaleDown {
        replicas: current,
        waiting: Some(waiting),
        ..ScaleDown::default()
    }
}

/// The ordinal of a StatefulSet pod (`shop-2` → 2).
pub fn ordinal(pod: &str) -> Option<i32> {
    pod.rsplit_once('-')?.1.parse().ok()
}

/// The StatefulSet's replicas for `desired`, given what runs (`current`: the replicas
/// the StatefulSet has now; `None` before it exists).
/// `members`: `None` when no agent answered with the member list (then a Ready pod
/// that would go is not removed unseen: it may be a member that has to leave first).
pub fn scale_down(
    desired: i32,
    current: Option<i32>,
    pods: &[PodView],
    members: Option<&[MemberView]>,
) -> ScaleDown {
    let current = current.unwrap_or(desired);
    let shrink = ScaleDown {
        replicas: desired,
        ..ScaleDown::default()
    };
    if current <= desired {
        return shrink;
    }
    let Some(members) = members else {
        let going: Vec<&str> = pods
            .iter()
            .filter(|p| p.ready && ordinal(&p.name).is_some_and(|o| o >= desired))
            .map(|p| p.name.as_str())
            .collect();
        return if going.is_empty() {
            shrink
        } else {
            hold(
                current,
                format!(
                    "scaling {current} → {desired}: no agent answered /cluster/members, so {} (Ready) may be members that must leave first",
                    going.join(", ")
                ),
            )
        };
    };
    if desired == 0 {
        // The whole cluster goes: rather than members leaving one by one (the leader
        // and the oldest moving from member to member, and the last ones downing
        // themselves as a minority while the others vanish), it prepares for a full
        // shutdown, and then every pod stops at once.
        let up: Vec<&str> = pods
            .iter()
            .filter(|p| {
                member_of(members, p)
                    .is_some_and(|m| matches!(m.status, MemberStatus::Up | MemberStatus::WeaklyUp))
            })
            .map(|p| p.name.as_str())
            .collect();
        return if up.is_empty() {
            shrink
        } else {
            ScaleDown {
                prepare_shutdown: true,
                ..hold(
                    current,
                    format!(
                        "scaling {current} → 0: the cluster is asked to prepare for a full shutdown; {} not ready for it yet",
                        up.join(", ")
                    ),
                )
            }
        };
    }
    let mut leave = Vec::new();
    let mut staying = Vec::new();
    for p in pods
        .iter()
        .filter(|p| ordinal(&p.name).is_some_and(|o| o >= desired))
    {
        let Some(m) = member_of(members, p) else {
            continue;
        };
        match m.status {
            MemberStatus::Joining
            | MemberStatus::WeaklyUp
            | MemberStatus::Up
            | MemberStatus::PreparingForShutdown
            | MemberStatus::ReadyForShutdown => {
                leave.push((p.name.clone(), m.address.clone()));
                staying.push(p.name.clone());
            }
            MemberStatus::Leaving => staying.push(p.name.clone()),
            MemberStatus::Exiting | MemberStatus::Down | MemberStatus::Removed => {}
        }
    }
    if staying.is_empty() {
        shrink
    } else {
        ScaleDown {
            replicas: current,
            leave,
            waiting: Some(format!(
                "scaling {current} → {desired}: waiting for the members of {} to leave",
                staying.join(", ")
            )),
            prepare_shutdown: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(i: usize) -> NodeAddress {
        NodeAddress::new(
            "shop",
            [10, 0, 0, u8::try_from(i).expect("small")].into(),
            2552,
        )
    }

    fn pod(i: usize) -> PodView {
        PodView {
            name: format!("shop-{i}"),
            revision: "r1".into(),
            ready: true,
            terminating: false,
            ip: Some(address(i).ip),
        }
    }

    fn member(i: usize, status: MemberStatus) -> MemberView {
        MemberView {
            address: address(i),
            status,
            up_number: u32::try_from(i).expect("small"),
            unreachable: false,
        }
    }

    #[test]
    fn the_highest_ordinals_leave_before_the_statefulset_shrinks() {
        let pods: Vec<_> = (0..5).map(pod).collect();
        let up: Vec<_> = (0..5).map(|i| member(i, MemberStatus::Up)).collect();
        let s = scale_down(2, Some(5), &pods, Some(&up));
        assert_eq!(s.replicas, 5, "nothing removed before they leave");
        let leaving: Vec<_> = s.leave.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(leaving, ["shop-2", "shop-3", "shop-4"]);
        assert!(s.waiting.expect("waits").contains("shop-2, shop-3, shop-4"));

        let mut after = up.clone();
        after[2].status = MemberStatus::Exiting;
        after[3].status = MemberStatus::Leaving;
        after.remove(4);
        let s = scale_down(2, Some(5), &pods, Some(&after));
        assert_eq!(
            (s.replicas, s.leave.len()),
            (5, 0),
            "shop-3 is still leaving"
        );

        after[3].status = MemberStatus::Exiting;
        let s = scale_down(2, Some(5), &pods, Some(&after));
        assert_eq!(
            s,
            ScaleDown {
                replicas: 2,
                leave: vec![],
                waiting: None,
                prepare_shutdown: false,
            }
        );
    }

    #[test]
    fn growing_or_unknown_members_shrink_at_once() {
        let pods: Vec<_> = (0..3).map(pod).collect();
        assert_eq!(scale_down(5, Some(3), &pods, Some(&[])).replicas, 5);
        assert_eq!(scale_down(3, None, &[], Some(&[])).replicas, 3);
        // No agent answered: the pods' own SIGTERM handling leaves gracefully.
        assert_eq!(scale_down(1, Some(3), &pods, Some(&[])).replicas, 1);
        assert_eq!(ordinal("my-shop-12"), Some(12));
        assert_eq!(ordinal("shop"), None);
    }

    #[test]
    fn to_zero_the_cluster_prepares_for_a_full_shutdown_instead_of_leaving_one_by_one() {
        let pods: Vec<_> = (0..3).map(pod).collect();
        let mut members: Vec<_> = (0..3).map(|i| member(i, MemberStatus::Up)).collect();
        members[2].status = MemberStatus::Joining;
        let s = scale_down(0, Some(3), &pods, Some(&members));
        assert_eq!((s.replicas, s.prepare_shutdown), (3, true));
        assert!(s.leave.is_empty(), "nobody is told to leave");
        assert!(
            s.waiting
                .as_deref()
                .is_some_and(|w| w.contains("shop-0, shop-1")),
            "{s:?}"
        );
        // Prepared (a Joining member never moves Up now, and does not hold it up).
        members[0].status = MemberStatus::ReadyForShutdown;
        let s = scale_down(0, Some(3), &pods, Some(&members));
        assert_eq!(
            (s.replicas, s.prepare_shutdown),
            (3, true),
            "shop-1 still Up"
        );
        members[1].status = MemberStatus::PreparingForShutdown;
        let s = scale_down(0, Some(3), &pods, Some(&members));
        assert_eq!(
            s,
            ScaleDown {
                replicas: 0,
                ..ScaleDown::default()
            }
        );
        // Not to zero: a prepared member that must go leaves as any other.
        let s = scale_down(1, Some(3), &pods, Some(&members));
        assert_eq!(s.replicas, 3);
        assert_eq!(
            s.leave.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
            ["shop-1", "shop-2"]
        );
    }

    #[test]
    fn without_a_member_list_ready_pods_are_not_removed_unseen() {
        let mut pods: Vec<_> = (0..3).map(pod).collect();
        let s = scale_down(1, Some(3), &pods, None);
        assert_eq!(s.replicas, 3);
        assert!(s.waiting.is_some_and(|w| w.contains("shop-1, shop-2")));
        pods[1].ready = false;
        pods[2].ready = false;
        assert_eq!(scale_down(1, Some(3), &pods, None).replicas, 1);
    }
}
