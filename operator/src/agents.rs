//! The operator's side of the agents' management API, through the agent's own client:
//! the member list (from any agent that answers; one down or partitioned pod must not
//! blind the operator) and Leave (with the management token from the cluster's Secret).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use node_agent::api::{ClientError, ClusterMembers, ManagementClient};
use node_agent::base::address::NodeAddress;
use node_agent::base::secret::ManagementToken;

use crate::controller::build::MANAGEMENT_PORT;
use crate::rollout::MemberView;

/// Talks to agents on their pod IPs.
#[derive(Debug, Clone)]
pub struct Agents {
    client: ManagementClient,
}

impl Default for Agents {
    fn default() -> Self {
        Self::new(Duration::from_secs(2))
    }
}

impl Agents {
    /// Each request gives up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            client: ManagementClient::new(timeout),
        }
    }

    /// `/cluster/members` of the first agent in `ips` that is a member (an agent that
    /// has not joined yet answers an empty list; that answer is kept only when no
    /// agent is a member); else every error.
    pub async fn members(&self, ips: &[IpAddr]) -> Result<ClusterMembers, String> {
        let mut errors = Vec::new();
        let mut not_joined = None;
        for ip in ips {
            let addr = SocketAddr::new(*ip, MANAGEMENT_PORT);
            match self.client.members(addr).await {
                Ok(m) if !m.members.is_empty() => return Ok(m),
                Ok(m) => not_joined = not_joined.or(Some(m)),
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        match not_joined {
            Some(m) => Ok(m),
            None if errors.is_empty() => Err("no pod has an IP yet".into()),
            None => Err(errors.join("; ")),
        }
    }

    /// Whether every agent at `ips` answers and none is a member (an empty list: no).
    pub async fn none_joined(&self, ips: &[IpAddr]) -> bool {
        if ips.is_empty() {
            return false;
        }
        for ip in ips {
            match self
                .client
                .members(SocketAddr::new(*ip, MANAGEMENT_PORT))
                .await
            {
                Ok(m) if m.members.is_empty() => {}
                _ => return false,
            }
        }
        true
    }

    /// Asks the agent at `ip` to make `member` leave the cluster gracefully.
    pub async fn leave(
        &self,
        ip: IpAddr,
        member: &NodeAddress,
        token: &ManagementToken,
    ) -> Result<(), ClientError> {
        self.client
            .leave(SocketAddr::new(ip, MANAGEMENT_PORT), member, token)
            .await
    }
}

/// The members as the rollout planner sees them.
pub fn member_views(m: &ClusterMembers) -> Vec<MemberView> {
    m.members
        .iter()
        .map(|x| MemberView {
            address: x.node.clone(),
            status: x.status,
            up_number: x.up_number,
            unreachable: m.is_unreachable(&x.node),
        })
        .collect()
}
