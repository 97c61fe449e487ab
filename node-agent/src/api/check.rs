//! "Is this one cluster?" — the one check, over what agents answer on
//! `/cluster/members`, used by the agent's tests, the simulation, the e2e tests and the
//! demo, so that all of them mean the same thing:
//!
//! - [`clusters`] (safety): the agents that are members fall into groups whose member
//!   lists share no member. Two groups are two clusters, whatever happens next. An agent
//!   whose list is merely stale (it has not heard that a member left) still shares a
//!   member with the rest, so it is not counted apart.
//! - [`one_cluster_of`] (done): every agent lists the same `n` members, every one Up,
//!   with the same leader and none unreachable.

use std::collections::BTreeSet;

use super::ClusterMembers;
use crate::base::address::NodeAddress;
use crate::base::member::MemberStatus;

/// The clusters the views show: for each group of agents connected by shared members,
/// every member any of them lists. Agents that are not members (an empty list) are left
/// out; more than one group is a split brain.
pub fn clusters<'a>(
    views: impl IntoIterator<Item = &'a ClusterMembers>,
) -> Vec<BTreeSet<NodeAddress>> {
    let mut groups: Vec<BTreeSet<NodeAddress>> = Vec::new();
    for v in views {
        let mut group: BTreeSet<NodeAddress> = v.members.iter().map(|m| m.node.clone()).collect();
        if group.is_empty() {
            continue;
        }
        // Merge every group this list touches into it.
        groups.retain(|g| {
            if g.is_disjoint(&group) {
                true
            } else {
                group.extend(g.iter().cloned());
                false
            }
        });
        groups.push(group);
    }
    groups.sort();
    groups
}

/// `Err` naming the groups when the views show more than one cluster.
pub fn no_split<'a>(views: impl IntoIterator<Item = &'a ClusterMembers>) -> Result<(), String> {
    let groups = clusters(views);
    if groups.len() <= 1 {
        return Ok(());
    }
    let shown: Vec<String> = groups
        .iter()
        .map(|g| {
            let names: Vec<String> = g.iter().map(ToString::to_string).collect();
            format!("{{{}}}", names.join(", "))
        })
        .collect();
    Err(format!(
        "{} clusters: {}",
        groups.len(),
        shown.join(" and ")
    ))
}

/// `Ok` when the views are one cluster of `n` Up members that every agent sees alike:
/// the same members (address, incarnation, status), the same leader, none unreachable.
/// Otherwise what differs, for a poll's last error.
pub fn one_cluster_of(views: &[ClusterMembers], n: usize) -> Result<(), String> {
    let summary = |v: &ClusterMembers| {
        v.members
            .iter()
            .map(|m| (m.node.clone(), m.node_uid, m.status))
            .collect::<Vec<_>>()
    };
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
        if summary(v) != summary(first) {
            return Err(format!(
                "{} sees {:?} but {} sees {:?}",
                v.self_node,
                summary(v),
                first.self_node,
                summary(first)
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
    fn disjoint_groups_are_separate_clusters_and_stale_lists_are_not() {
        assert_eq!(clusters(&[view(1, &[1, 2]), view(2, &[1, 2])]).len(), 1);
        let split = [view(1, &[1, 2]), view(3, &[3, 4]), view(4, &[3, 4])];
        assert_eq!(clusters(&split).len(), 2);
        assert!(no_split(&split).unwrap_err().starts_with("2 clusters"));
        // 1 has not heard that 2 removed it; 2 and 3 are one cluster: one group.
        let stale = [view(1, &[1, 2]), view(2, &[2, 3]), view(3, &[2, 3])];
        assert_eq!(clusters(&stale).len(), 1);
        // A chain joined late: groups merge through a later view.
        let late = [view(1, &[1]), view(3, &[3]), view(2, &[1, 3])];
        assert_eq!(clusters(&late).len(), 1);
        // Agents that are not members are not a cluster.
        assert!(no_split(&[view(1, &[1, 2]), view(5, &[])]).is_ok());
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
        assert!(one_cluster_of(&[], 0).is_err());
    }
}
