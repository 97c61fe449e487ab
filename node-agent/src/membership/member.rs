//! A member of the cluster: one incarnation of a node, its status and age.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::address::UniqueAddress;

/// Akka Cluster's member lifecycle. Reachability is separate (`reachability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    Joining,
    WeaklyUp,
    Up,
    Leaving,
    Exiting,
    Down,
    Removed,
}

impl MemberStatus {
    /// Which of two views of the same member wins a merge: a status further along its
    /// lifecycle (Akka's `highestPriorityOf`): Removed > Down > Exiting > Leaving > Up >
    /// WeaklyUp > Joining.
    pub fn merge_rank(self) -> u8 {
        match self {
            Self::Joining => 0,
            Self::WeaklyUp => 1,
            Self::Up => 2,
            Self::Leaving => 3,
            Self::Exiting => 4,
            Self::Down => 5,
            Self::Removed => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "Joining",
            Self::WeaklyUp => "WeaklyUp",
            Self::Up => "Up",
            Self::Leaving => "Leaving",
            Self::Exiting => "Exiting",
            Self::Down => "Down",
            Self::Removed => "Removed",
        }
    }

    /// Statuses whose members must have seen a version for convergence (Akka).
    pub fn counts_for_convergence(self) -> bool {
        matches!(self, Self::Up | Self::Leaving)
    }

    /// Statuses a leader is chosen from first.
    pub fn can_lead(self) -> bool {
        matches!(self, Self::Up | Self::Leaving)
    }

    /// Reported as seed nodes to joining nodes.
    pub fn is_seed_candidate(self) -> bool {
        matches!(self, Self::Up | Self::WeaklyUp | Self::Joining)
    }
}

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
