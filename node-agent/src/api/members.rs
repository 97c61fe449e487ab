//! `GET /cluster/members` (Akka Management's `ClusterMembers`): the cluster as one agent
//! sees it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::base::address::NodeAddress;
use crate::base::member::MemberStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMembers {
    pub self_node: NodeAddress,
    pub members: Vec<ClusterMember>,
    pub unreachable: Vec<ClusterUnreachableMember>,
    /// Left out when there is none, as Akka Management leaves it out (not `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<NodeAddress>,
    /// Left out when there is none, as Akka Management leaves it out (not `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<NodeAddress>,
    pub oldest_per_role: BTreeMap<String, NodeAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMember {
    pub node: NodeAddress,
    /// A string on the wire, as in Akka Management.
    #[serde(with = "super::uid_text")]
    pub node_uid: u64,
    pub status: MemberStatus,
    pub roles: Vec<String>,
    /// muster: age, lower is older (0 until Up).
    pub up_number: u32,
    /// muster: the member's application version.
    pub app_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterUnreachableMember {
    pub node: NodeAddress,
    pub observed_by: Vec<NodeAddress>,
}

impl ClusterMembers {
    /// What an agent that is not a member (yet) answers.
    pub fn empty(self_node: NodeAddress) -> Self {
        Self {
            self_node,
            members: Vec::new(),
            unreachable: Vec::new(),
            leader: None,
            oldest: None,
            oldest_per_role: BTreeMap::new(),
        }
    }

    /// The member at `node`, if listed.
    pub fn member(&self, node: &NodeAddress) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.node == *node)
    }

    /// Whether some member reports `node` unreachable.
    pub fn is_unreachable(&self, node: &NodeAddress) -> bool {
        self.unreachable.iter().any(|u| u.node == *node)
    }

    /// How many members have `status`.
    pub fn count(&self, status: MemberStatus) -> usize {
        self.members.iter().filter(|m| m.status == status).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_is_akka_managements() {
        let a: NodeAddress = "muster://shop@10.0.0.1:2552".parse().unwrap();
        let m = ClusterMembers {
            members: vec![ClusterMember {
                node: a.clone(),
                node_uid: 7,
                status: MemberStatus::WeaklyUp,
                roles: vec![],
                up_number: 1,
                app_version: "1.0".into(),
            }],
            leader: Some(a.clone()),
            oldest_per_role: [("r".to_owned(), a.clone())].into(),
            ..ClusterMembers::empty(a.clone())
        };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(
            json,
            r#"{"selfNode":"muster://shop@10.0.0.1:2552","members":[{"node":"muster://shop@10.0.0.1:2552","nodeUid":"7","status":"WeaklyUp","roles":[],"upNumber":1,"appVersion":"1.0"}],"unreachable":[],"leader":"muster://shop@10.0.0.1:2552","oldestPerRole":{"r":"muster://shop@10.0.0.1:2552"}}"#
        );
        assert_eq!(serde_json::from_str::<ClusterMembers>(&json).unwrap(), m);
        // No leader, no oldest: both left out (an answer with `null` still reads).
        let alone = ClusterMembers::empty(a);
        let json = serde_json::to_string(&alone).unwrap();
        assert!(
            !json.contains("leader") && !json.contains("oldest\""),
            "{json}"
        );
        assert_eq!(
            serde_json::from_str::<ClusterMembers>(&json).unwrap(),
            alone
        );
        let with_nulls = format!(
            "{},\"leader\":null,\"oldest\":null}}",
            json.strip_suffix('}').expect("an object")
        );
        assert_eq!(
            serde_json::from_str::<ClusterMembers>(&with_nulls).unwrap(),
            alone
        );
    }
}
