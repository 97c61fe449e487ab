//! Pod-aware downing, the operator's part: which members' pods are gone. Kubernetes
//! removes a pod object only once its kubelet confirmed that the containers stopped
//! (or someone forced it); a member that is unreachable while no pod of the cluster has
//! its IP is a process that ended, and its replacement cannot become Up until it is
//! downed. The leader is told (`operation=PodGone`); its resolver decides as ever,
//! only without waiting for `stable-after`, and acts early only on a verdict that
//! keeps its side (`MembershipCore::pod_gone`). Pure.

use std::net::IpAddr;

use node_agent::api::ClusterMembers;
use node_agent::base::address::NodeAddress;
use node_agent::base::member::MemberStatus;

/// A pod of the cluster as this needs it: its IP, and whether its containers have
/// ended for good (phase Succeeded or Failed, e.g. evicted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodIp {
    pub ip: IpAddr,
    pub ended: bool,
}

/// The members whose pods are gone: in `members` (the answering agent's view), not
/// Down or Exiting, and no pod in `pods` — running, starting or terminating — has
/// their IP. Whether they are unreachable is the agent's to judge: it acts on the hint
/// only for an unreachable member, so it is told at once, before failure detection
/// ends, and decides the moment it does.
pub fn gone_members(members: &ClusterMembers, pods: &[PodIp]) -> Vec<(NodeAddress, u64)> {
    members
        .members
        .iter()
        .filter(|m| {
            !matches!(
                m.status,
                MemberStatus::Down | MemberStatus::Exiting | MemberStatus::Removed
            )
        })
        .filter(|m| !pods.iter().any(|p| p.ip == m.node.ip && !p.ended))
        .map(|m| (m.node.clone(), m.node_uid))
        .collect()
}

#[cfg(test)]
mod tests {
    use node_agent::api::{ClusterMember, ClusterUnreachableMember};

    use super::*;

    fn addr(i: u8) -> NodeAddress {
        NodeAddress::new("shop", [10, 0, 0, i].into(), 2552)
    }

    fn view(statuses: &[(u8, MemberStatus)], unreachable: &[u8]) -> ClusterMembers {
        ClusterMembers {
            self_node: addr(1),
            members: statuses
                .iter()
                .map(|(i, s)| ClusterMember {
                    node: addr(*i),
                    node_uid: u64::from(*i),
                    status: *s,
                    roles: vec![],
                    up_number: u32::from(*i),
                    app_version: "1".into(),
                })
                .collect(),
            unreachable: unreachable
                .iter()
                .map(|i| ClusterUnreachableMember {
                    node: addr(*i),
                    observed_by: vec![addr(1)],
                })
                .collect(),
            leader: Some(addr(1)),
            oldest: Some(addr(1)),
            oldest_per_role: Default::default(),
        }
    }

    fn pod(i: u8, ended: bool) -> PodIp {
        PodIp {
            ip: [10, 0, 0, i].into(),
            ended,
        }
    }

    #[test]
    fn only_unreachable_members_without_a_pod_that_may_run_are_gone() {
        use MemberStatus::{Down, Exiting, Joining, Up};
        let members = view(
            &[
                (1, Up),
                (2, Up),
                (3, Up),
                (4, Joining),
                (5, Down),
                (6, Exiting),
            ],
            &[2, 5, 6],
        );
        // 2: its pod still exists (maybe behind a partition): never. 3: no pod with its
        // IP (reachable or not: the agent judges that). 4: Joining, its pod gone. 5, 6:
        // on their way out already.
        let pods = [pod(1, false), pod(2, false), pod(7, false)];
        assert_eq!(gone_members(&members, &pods), [(addr(3), 3), (addr(4), 4)]);
        // A pod whose containers ended for good (evicted) holds no member.
        let pods = [pod(1, false), pod(2, true)];
        assert_eq!(
            gone_members(&members, &pods),
            [(addr(2), 2), (addr(3), 3), (addr(4), 4)],
            "each with its uid: the incarnation meant"
        );
        // Every pod there: nobody.
        let members = view(&[(1, Up), (2, Up)], &[]);
        assert!(gone_members(&members, &[pod(1, false), pod(2, false)]).is_empty());
    }
}
