//! A member of the cluster: one incarnation of a node, its status and age.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::base::address::UniqueAddress;
use crate::base::member::MemberStatus;

/// What a node tells the cluster about itself when it joins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberInfo {
    pub roles: BTreeSet<String>,
    pub app_version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub node: UniqueAddress,
    pub status: MemberStatus,
    /// Age: assigned when the member first becomes Up; lower is older. 0 before that.
    pub up_number: u32,
    pub roles: BTreeSet<String>,
    pub app_version: String,
}

impl Member {
    pub fn joining(node: UniqueAddress, info: MemberInfo) -> Self {
        Self {
            node,
            status: MemberStatus::Joining,
            up_number: 0,
            roles: info.roles,
            app_version: info.app_version,
        }
    }

    /// Total order used when two views of the same member meet: lifecycle first, then
    /// the remaining fields so the merge is deterministic whatever the input order.
    pub fn merge_order(&self, other: &Self) -> Ordering {
        self.status
            .merge_rank()
            .cmp(&other.status.merge_rank())
            .then(self.up_number.cmp(&other.up_number))
            .then_with(|| self.roles.cmp(&other.roles))
            .then_with(|| self.app_version.cmp(&other.app_version))
    }

    /// Older first: lower up number, then lower address (Akka's age ordering).
    pub fn age_order(&self, other: &Self) -> Ordering {
        self.up_number
            .cmp(&other.up_number)
            .then_with(|| self.node.cmp(&other.node))
    }
}
