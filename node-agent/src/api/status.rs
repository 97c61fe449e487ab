//! `GET /bootstrap/status`: where the agent is on its way into the cluster, and why.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::base::address::NodeAddress;
use crate::base::member::MemberStatus;

/// Where an agent is (also the `phase` label of `muster_bootstrap_phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootstrapPhase {
    /// No discovery lookup has succeeded yet.
    Discovering,
    /// Probing contact points, deciding whether to join or form.
    Probing,
    /// Decided; waiting to be welcomed into the cluster.
    Joining,
    /// Joining the configured `cluster.seed-nodes`; bootstrap is not used.
    SeedNodes,
    /// A member of the cluster.
    Joined,
    /// Left the cluster gracefully; the agent is shutting down.
    Left,
    /// Downed or removed by the cluster; the agent is shutting down.
    Downed,
    /// Could not join in time; the agent exits to be restarted.
    JoinFailed,
}

impl BootstrapPhase {
    pub const ALL: [Self; 8] = [
        Self::Discovering,
        Self::Probing,
        Self::Joining,
        Self::SeedNodes,
        Self::Joined,
        Self::Left,
        Self::Downed,
        Self::JoinFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discovering => "discovering",
            Self::Probing => "probing",
            Self::Joining => "joining",
            Self::SeedNodes => "seed-nodes",
            Self::Joined => "joined",
            Self::Left => "left",
            Self::Downed => "downed",
            Self::JoinFailed => "join-failed",
        }
    }
}

impl fmt::Display for BootstrapPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body. `bootstrap` is the coordinator's detail (discovered contact points, each
/// one's last answer or error, the decision), present while bootstrap runs; it is for
/// people and logs, so clients read it as JSON (`D` = `serde_json::Value`) while the
/// server writes its own type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapStatusBody<D = serde_json::Value> {
    pub phase: BootstrapPhase,
    pub self_node: NodeAddress,
    pub self_status: Option<MemberStatus>,
    /// In plain words: what the agent is doing or waiting for.
    pub reason: String,
    pub bootstrap: Option<D>,
    /// With TLS on: what the agent serves and trusts now (fingerprints), so that
    /// whoever rotates certificates sees when every agent has taken the new files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInUse>,
    /// Ids of the cluster keys in use (the signing key first), from the key file as last
    /// read; a key's id reveals nothing of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_keys: Vec<String>,
}

/// The TLS material an agent uses now, by SHA-256 fingerprint (hex) of each DER certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsInUse {
    /// The agent's own certificate.
    pub certificate: String,
    /// The CAs it trusts, in the order of its CA file.
    pub trusted: Vec<String>,
    /// When its certificate expires (RFC 3339, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_written_in_kebab_case() {
        for p in BootstrapPhase::ALL {
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<BootstrapPhase>(&json).unwrap(), p);
        }
    }
}
