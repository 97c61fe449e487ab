//! The management API as its users see it: the request and response bodies
//! ([`seed_nodes`], [`members`], [`events`], [`status`]), the one typed [`client`] that
//! the prober, `local-cluster`, the tests, the demo and the operator all use, and the
//! one "is this one cluster?" [`check`] over what agents answer.
//!
//! Shapes follow Akka Management where it has the endpoint (field names included), with
//! muster's additions marked. Types are typed (addresses, member status); their JSON is
//! the documented text form. Part of the ground floor: it imports only [`crate::base`].

pub mod check;
pub mod client;
pub mod domain_events;
pub mod events;
pub mod handover;
pub mod members;
pub mod seed_nodes;
pub mod status;

use serde::{Deserialize, Serialize};

pub use client::{ClientError, ClientTls, ManagementClient};
pub use events::ClusterEvent;
pub use members::{ClusterMember, ClusterMembers, ClusterUnreachableMember};
pub use seed_nodes::{SeedNode, SeedNodes};
pub use status::{BootstrapPhase, BootstrapStatusBody, TlsInUse};

/// Request header naming the prober's own contact point on `GET /bootstrap/seed-nodes`:
/// the probed node may then probe back at once instead of waiting for its next round.
pub const PROBER_HEADER: &str = "muster-prober";

/// Error body of every endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `uid`s are strings on the wire (Akka Management's `nodeUid`), numbers in Rust.
pub(crate) mod uid_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(uid: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(uid)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
