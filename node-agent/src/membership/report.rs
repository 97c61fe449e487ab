//! The cluster state told in the management API's terms: `/cluster/members` and the
//! seed nodes of `/bootstrap/seed-nodes`, from a gossip.

use std::collections::BTreeMap;

use super::gossip::Gossip;
use crate::api::{ClusterMember, ClusterMembers, ClusterUnreachableMember, SeedNode};
use crate::base::address::NodeAddress;

/// `/cluster/members` of the node `self_node` holding `gossip`.
pub fn cluster_members(self_node: &NodeAddress, gossip: &Gossip) -> ClusterMembers {
    let mut oldest_per_role: BTreeMap<String, (u32, NodeAddress)> = BTreeMap::new();
    for m in gossip.members().filter(|m| m.status.can_lead()) {
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
        oldest: gossip.oldest().map(|m| m.node.address.clone()),
        oldest_per_role: oldest_per_role
            .into_iter()
            .map(|(r, (_, a))| (r, a))
            .collect(),
    }
}

/// The members a joining node is told about (see [`Gossip::seed_nodes`]).
pub fn seed_nodes(gossip: &Gossip) -> Vec<SeedNode> {
    gossip
        .seed_nodes()
        .map(|m| SeedNode {
            node: m.node.address.clone(),
            node_uid: m.node.uid,
            status: m.status,
            roles: m.roles.iter().cloned().collect(),
        })
        .collect()
}
