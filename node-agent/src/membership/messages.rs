//! What members say to each other on the cluster port (carried by [`crate::transport`]).

use serde::{Deserialize, Serialize};

use super::gossip::Gossip;
use super::member::MemberInfo;
use crate::base::address::{NodeAddress, UniqueAddress};
use crate::transport::Wire;

/// One message with its sender and recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub from: UniqueAddress,
    pub to: NodeAddress,
    /// The recipient's incarnation, when known; a restarted node ignores messages meant
    /// for its previous life.
    pub to_uid: Option<u64>,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Message {
    /// A node asks a member to let it in.
    Join { info: MemberInfo },
    /// The member's answer: the cluster state, which contains the joiner.
    Welcome { gossip: Gossip },
    /// Cluster state, pushed on change and periodically.
    Gossip { gossip: Gossip },
    /// "I have seen the state whose version has this digest" ([`Gossip::digest`]): a
    /// few bytes instead of the whole state, sent to the leader (which needs everyone's
    /// mark for convergence) when a member first sees a version.
    Seen { digest: u64 },
    /// "My state's version has this digest": the periodic gossip to a member that has
    /// seen our version already, a few bytes instead of the whole state. A member whose
    /// version differs answers with its whole state.
    Status { digest: u64 },
    /// Failure detection: a monitoring member asks "are you there?".
    Heartbeat { seq: u64 },
    /// The monitored member's answer.
    HeartbeatRsp { seq: u64 },
}

impl Message {
    /// Short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Welcome { .. } => "welcome",
            Self::Gossip { .. } => "gossip",
            Self::Seen { .. } => "seen",
            Self::Status { .. } => "status",
            Self::Heartbeat { .. } => "heartbeat",
            Self::HeartbeatRsp { .. } => "heartbeat_rsp",
        }
    }
}

impl Wire for Envelope {
    fn kind(&self) -> &'static str {
        self.message.kind()
    }
}
