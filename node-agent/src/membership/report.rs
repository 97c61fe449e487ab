//! The cluster state told in the management API's terms: `/cluster/members` and the
//! seed nodes of `/bootstrap/seed-nodes`, from a gossip.

use std::collections::BTreeMap;

use super::gossip::Gossip;
use crate::api::{ClusterMember, ClusterMembers, ClusterUnreachableMember, SeedNode};
use crate::base::address::{NodeAddress, UniqueAddress};
use crate::base::member::MemberStatus;

/// `/cluster/members` of the node `self_node` holding `gossip`.
pub fn cluster_members(self_node: &NodeAddress, gossip: &Gossip) -> ClusterMembers {
    let mut oldest_per_role: BTreeMap<String, (u32, NodeAddress)> = BTreeMap::new();
    // As Akka: the oldest among Up members only (a Leaving member is on its way out).
    for m in gossip.members().filter(|m| m.status == MemberStatus::Up) {
        for r in &m.roles {
            let candidate = (m.up_number, m.node.address.clone());
            oldest_per_role
                .entry(r.clone())
                .and_modify(|cur| {
                    if candidate < *cur {
                        *cur = candidate.clone();
                    }
                })
                .or_insert(candidate);
        }
    }
    let reachability = gossip.reachability();
    ClusterMembers {
        self_node: self_node.clone(),
        members: gossip
            .members()
            .map(|m| ClusterMember {
                node: m.node.address.clone(),
                node_uid: m.node.uid,
                status: m.status,
                roles: m.roles.iter().cloned().collect(),
                up_number: m.up_number,
                app_version: m.app_version.clone(),
            })
            .collect(),
        unreachable: reachability
            .unreachable_members()
            .iter()
            .map(|node| ClusterUnreachableMember {
                node: node.address.clone(),
                observed_by: reachability
                    .observers_of(node)
                    .iter()
                    .map(|o| o.address.clone())
                    .collect(),
            })
            .collect(),
        leader: gossip.leader().map(|l| l.address.clone()),
        oldest: gossip
            .members()
            .filter(|m| m.status == MemberStatus::Up)
            .min_by(|a, b| a.age_order(b))
            .map(|m| m.node.address.clone()),
        oldest_per_role: oldest_per_role
            .into_iter()
            .map(|(r, (_, a))| (r, a))
            .collect(),
    }
}

/// The members a joining node is told about by node `me` (see [`Gossip::seed_nodes`]).
pub fn seed_nodes(gossip: &Gossip, me: &UniqueAddress) -> Vec<SeedNode> {
    gossip
        .seed_nodes(me)
        .into_iter()
        .map(|m| SeedNode {
            node: m.node.address.clone(),
            node_uid: m.node.uid,
            status: m.status,
            roles: m.roles.iter().cloned().collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::membership::member::{Member, MemberInfo};
    use crate::membership::vclock::VectorClock;

    #[test]
    fn the_oldest_is_the_oldest_up_member_as_akka_reports_it() {
        let member = |i: u8, status: MemberStatus, up_number: u32| Member {
            status,
            up_number,
            ..Member::joining(
                UniqueAddress::new(NodeAddress::new("t", [10, 0, 0, i].into(), 2552), 1),
                MemberInfo {
                    roles: BTreeSet::from(["r".to_owned()]),
                    app_version: "1".into(),
                },
            )
        };
        let gossip = Gossip::from_parts(
            [
                member(1, MemberStatus::Leaving, 1),
                member(2, MemberStatus::Up, 2),
                member(3, MemberStatus::Up, 3),
            ],
            BTreeSet::new(),
            VectorClock::default(),
            BTreeSet::new(),
        );
        let me = NodeAddress::new("t", [10, 0, 0, 3].into(), 2552);
        let m = cluster_members(&me, &gossip);
        let second = NodeAddress::new("t", [10, 0, 0, 2].into(), 2552);
        // The Leaving member is older, but on its way out.
        assert_eq!(m.oldest, Some(second.clone()));
        assert_eq!(m.oldest_per_role.get("r"), Some(&second));
        assert_eq!(m.members.len(), 3, "every member is listed");
    }
}
