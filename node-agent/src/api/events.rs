//! `GET /cluster/events`: one change of the cluster, named as Akka names its cluster
//! domain events. The SSE event name is [`ClusterEvent::name`], the data its JSON.

use serde::{Deserialize, Serialize};

use crate::base::address::NodeAddress;
use crate::base::member::MemberStatus;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
pub enum ClusterEvent {
    MemberJoined {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
        roles: Vec<String>,
    },
    MemberWeaklyUp {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
    },
    MemberUp {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
        up_number: u32,
    },
    MemberPreparingForShutdown {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
    },
    MemberReadyForShutdown {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
    },
    MemberLeft {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
    },
    MemberExited {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
    },
    MemberDowned {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
    },
    MemberRemoved {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
        previous_status: MemberStatus,
    },
    UnreachableMember {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
    },
    ReachableMember {
        member: NodeAddress,
        #[serde(with = "super::uid_text")]
        uid: u64,
    },
    LeaderChanged {
        leader: Option<NodeAddress>,
    },
    /// The leader of the members with `role` changed (Akka's role leader).
    RoleLeaderChanged {
        role: String,
        leader: Option<NodeAddress>,
    },
    /// This agent's membership ended (it left, was downed, or gave up joining): the
    /// stream closes when the agent stops.
    ClusterShuttingDown,
}

impl ClusterEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::MemberJoined { .. } => "MemberJoined",
            Self::MemberWeaklyUp { .. } => "MemberWeaklyUp",
            Self::MemberUp { .. } => "MemberUp",
            Self::MemberPreparingForShutdown { .. } => "MemberPreparingForShutdown",
            Self::MemberReadyForShutdown { .. } => "MemberReadyForShutdown",
            Self::MemberLeft { .. } => "MemberLeft",
            Self::MemberExited { .. } => "MemberExited",
            Self::MemberDowned { .. } => "MemberDowned",
            Self::MemberRemoved { .. } => "MemberRemoved",
            Self::UnreachableMember { .. } => "UnreachableMember",
            Self::ReachableMember { .. } => "ReachableMember",
            Self::LeaderChanged { .. } => "LeaderChanged",
            Self::RoleLeaderChanged { .. } => "RoleLeaderChanged",
            Self::ClusterShuttingDown => "ClusterShuttingDown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_form_names_the_type_and_keeps_uids_as_strings() {
        let e = ClusterEvent::MemberRemoved {
            member: "muster://t@10.0.0.2:2552".parse().unwrap(),
            uid: 1,
            previous_status: MemberStatus::Exiting,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"type":"MemberRemoved","member":"muster://t@10.0.0.2:2552","uid":"1","previousStatus":"Exiting"}"#
        );
        assert_eq!(serde_json::from_str::<ClusterEvent>(&json).unwrap(), e);
    }
}
