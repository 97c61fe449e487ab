//! JSON bodies of the management API. Shapes follow Akka Management where it has the
//! endpoint (field names included), with muster's additions marked.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::address::ContactPoint;
use crate::membership::gossip::Gossip;

/// `GET /bootstrap/seed-nodes` (Akka's `SeedNodes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedNodes {
    pub self_node: String,
    pub seed_nodes: Vec<SeedNode>,
    /// muster: every contact point this node has discovered. Peers form early when all
    /// report the same set; Akka peers ignore the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_points: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeedNode {
    pub node: String,
    pub node_uid: u64,
    pub status: String,
    pub roles: Vec<String>,
}

impl SeedNodes {
    pub fn from_state(
        self_node: &str,
        gossip: Option<&Gossip>,
        contact_points: &BTreeSet<ContactPoint>,
    ) -> Self {
        Self {
            self_node: self_node.to_owned(),
            seed_nodes: gossip
                .map(|g| {
                    g.seed_nodes()
                        .map(|m| SeedNode {
                            node: m.node.address.to_string(),
                            node_uid: m.node.uid,
                            status: m.status.as_str().to_owned(),
                            roles: m.roles.iter().cloned().collect(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            contact_points: Some(contact_points.iter().map(ToString::to_string).collect()),
        }
    }
}

/// `GET /cluster/members` (Akka Management's `ClusterMembers`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMembers {
    pub self_node: String,
    pub members: Vec<ClusterMember>,
    pub unreachable: Vec<ClusterUnreachableMember>,
    pub leader: Option<String>,
    pub oldest: Option<String>,
    pub oldest_per_role: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    pub node: String,
    /// A string, as in Akka Management.
    pub node_uid: String,
    pub status: String,
    pub roles: Vec<String>,
    /// muster: age, lower is older (0 until Up).
    pub up_number: u32,
    /// muster: the member's application version.
    pub app_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUnreachableMember {
    pub node: String,
    pub observed_by: Vec<String>,
}

impl ClusterMembers {
    pub fn from_gossip(self_node: &str, gossip: &Gossip) -> Self {
        let mut oldest_per_role: BTreeMap<String, (u32, String)> = BTreeMap::new();
        for m in gossip.members().filter(|m| m.status.can_lead()) {
            for r in &m.roles {
                let candidate = (m.up_number, m.node.address.to_string());
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
        Self {
            self_node: self_node.to_owned(),
            members: gossip
                .members()
                .map(|m| ClusterMember {
                    node: m.node.address.to_string(),
                    node_uid: m.node.uid.to_string(),
                    status: m.status.as_str().to_owned(),
                    roles: m.roles.iter().cloned().collect(),
                    up_number: m.up_number,
                    app_version: m.app_version.clone(),
                })
                .collect(),
            unreachable: gossip
                .reachability()
                .unreachable_members()
                .iter()
                .map(|node| ClusterUnreachableMember {
                    node: node.address.to_string(),
                    observed_by: gossip
                        .reachability()
                        .observers_of(node)
                        .iter()
                        .map(|o| o.address.to_string())
                        .collect(),
                })
                .collect(),
            leader: gossip.leader().map(|l| l.address.to_string()),
            oldest: gossip.oldest().map(|m| m.node.address.to_string()),
            oldest_per_role: oldest_per_role
                .into_iter()
                .map(|(r, (_, a))| (r, a))
                .collect(),
        }
    }
}

/// Error body of every endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: String,
}
