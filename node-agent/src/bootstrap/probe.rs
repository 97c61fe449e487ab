//! Probing a contact point: `GET /bootstrap/seed-nodes` with the management API's
//! client, from this node's own address, over one kept-alive connection per peer (probes
//! of one peer never overlap). Answers are size-limited and checked against this node's
//! cluster name; anything odd is a clear error for `/bootstrap/status`, never a crash.

use std::net::IpAddr;
use std::time::Duration;

use crate::api::{ClientError, ManagementClient, SeedNodes};
use crate::base::address::ContactPoint;

/// The client of all probes of this node.
#[derive(Debug, Clone)]
pub struct Prober {
    client: ManagementClient,
    me: ContactPoint,
    system: String,
}

impl Prober {
    /// Probes from `local_ip`, naming `me` as the prober, for cluster `system`; each
    /// probe gives up after `timeout`.
    pub fn new(local_ip: IpAddr, me: &ContactPoint, system: &str, timeout: Duration) -> Self {
        Self {
            client: ManagementClient::from_ip(local_ip, timeout),
            me: me.clone(),
            system: system.to_owned(),
        }
    }

    pub async fn probe(&self, cp: &ContactPoint) -> Result<SeedNodes, ClientError> {
        self.client
            .seed_nodes(cp, &self.system, Some(&self.me))
            .await
    }
}
