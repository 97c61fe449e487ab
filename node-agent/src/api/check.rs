//! "Is this one cluster?" — the one check, over what agents answer on
//! `/cluster/members`, used by the agent's tests, the simulation, the e2e tests, the
//! benchmarks, `local-cluster` and the demo, so that all of them mean the same thing:
//!
//! - [`no_split`] (safety): two agents that are members and whose member lists share no
//!   member are in two clusters — whatever a third agent lists, and whatever happens
//!   next. Agents that are not members (an empty list) are not a cluster.
//! - [`one_cluster_of`] (done): every agent lists the same `n` members — the same
//!   entries, every one Up — with the same leader and none unreachable.

use std::collections::BTreeSet;

use super::ClusterMembers;
use crate::base::address::NodeAddress;
use crate::base::member::MemberStatus;

/// `Err` naming two agents whose member lists share no member: two clusters.
pub fn no_split<'a>(views: impl IntoIterator<Item = &'a ClusterMembers>) -> Result<(), String> {
    let lists: Vec<(&NodeAddress, BTreeSet<&NodeAddress>)> = views
        .into_iter()
        .filter(|v| !v.members.is_empty())
        .map(|v| (&v.self_node, v.members.iter().map(|m| &m.node).collect()))
        .collect();
    for (i, (a, la)) in lists.iter().enumerate() {
        for (b, lb) in &lists[i + 1..] {
            if la.is_disjoint(lb) {
                let show = |l: &BTreeSet<&NodeAddress>| {
                    l.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                return Err(format!(
                    "two clusters: {a} sees {{{}}}, {b} sees {{{}}}",
                    show(la),
                    show(lb)
                ));
            }
        }
    }
    Ok(())
}

/// `Ok` when the views are one cluster of `n` Up members that every agent sees alike:
/// the same member entries (address, incarnation, status, age, roles, version), the
/// same leader, none unreachable. Otherwise what differs, for a poll's last error.
pub fn one_cluster_of(views: &[ClusterMembers], n: usize) -> Result<(), String> {
    let Some(first) = views.first() else {
        return Err("no agent answered".into());
    };
    for v in views {
        if v.members.len() != n || v.members.iter().any(|m| m.status != MemberStatus::Up) {
            let seen: Vec<String> = v
                .members
                .iter()
                .map(|m| format!("{} {}", m.node, m.status))
                .collect();
            return Err(format!(
                "{} sees {} members, want {n} Up: [{}]",
                v.self_node,
                v.members.len(),
                seen.join(", ")
            ));
        }
        if v.members != first.members {
            return Err(format!(
                "{} sees {:?} but {} sees {:?}",
                v.self_node, v.members, first.self_node, first.members
            ));
        }
        if v.leader.is_none() || v.leader != first.leader {
            return Err(format!(
                "leaders differ: {:?} at {}, {:?} at {}",
                v.leader, v.self_node, first.leader, first.self_node
            ));
        }
        if !v.unreachable.is_empty() {
            return Err(format!(
                "{} reports unreachable members: {:?}",
                v.self_node, v.unreachable
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ClusterMember;

    fn addr(i: u8) -> NodeAddress {
        NodeAddress::new("t", [10, 0, 0, i].into(), 2552)
    }

    /// Agent `me`'s view listing `members`, all Up, the lowest leading.
    fn view(me: u8, members: &[u8]) -> ClusterMembers {
        ClusterMembers {
            members: members
                .iter()
                .map(|i| ClusterMember {
                    node: addr(*i),
                    node_uid: u64::from(*i),
                    status: MemberStatus::Up,
                    roles: vec![],
                    up_number: u32::from(*i),
                    app_version: String::new(),
                })
                .collect(),
            leader: members.iter().min().map(|i| addr(*i)),
            ..ClusterMembers::empty(addr(me))
        }
    }

    #[test]
    fn two_members_with_disjoint_lists_are_two_clusters_whatever_others_see() {
        assert_eq!(no_split(&[view(1, &[1, 2]), view(2, &[1, 2])]), Ok(()));
        let split = [view(1, &[1, 2]), view(3, &[3, 4]), view(4, &[3, 4])];
        let e = no_split(&split).unwrap_err();
        assert!(
            e.starts_with("two clusters") && e.contains("10.0.0.3"),
            "{e}"
        );
        // Two nodes that each formed alone are two clusters, even when a third lists both.
        assert!(no_split(&[view(1, &[1]), view(3, &[3]), view(2, &[1, 3])]).is_err());
        // 1 has not yet heard that 3 joined: its list still shares a member with 3's.
        assert_eq!(no_split(&[view(1, &[1, 2]), view(3, &[1, 2, 3])]), Ok(()));
        // Agents that are not members are not a cluster.
        assert_eq!(no_split(&[view(1, &[1, 2]), view(5, &[])]), Ok(()));
    }

    #[test]
    fn one_cluster_needs_everyone_up_alike() {
        let good = [
            view(1, &[1, 2, 3]),
            view(2, &[1, 2, 3]),
            view(3, &[1, 2, 3]),
        ];
        assert_eq!(one_cluster_of(&good, 3), Ok(()));
        assert!(one_cluster_of(&good, 4).is_err());
        let mut joining = good.clone();
        joining[1].members[2].status = MemberStatus::Joining;
        assert!(one_cluster_of(&joining, 3).unwrap_err().contains("Joining"));
        let mut other_leader = good.clone();
        other_leader[2].leader = Some(addr(2));
        assert!(
            one_cluster_of(&other_leader, 3)
                .unwrap_err()
                .contains("leaders")
        );
        let mut restarted = good.clone();
        restarted[0].members[1].node_uid = 99;
        assert!(one_cluster_of(&restarted, 3).is_err());
        let mut older = good.clone();
        older[2].members[0].up_number = 7;
        assert!(one_cluster_of(&older, 3).is_err(), "ages differ");
        assert!(one_cluster_of(&[], 0).is_err());
    }
}
