//! The operator's side of the agents' management API: the member list (from any agent
//! that answers; one down or partitioned pod must not blind the operator) and Leave
//! (with the management token from the cluster's Secret).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use node_agent::management::api::ClusterMembers;
use node_agent::management::client::ManagementClient;

use crate::build::MANAGEMENT_PORT;
use crate::rollout::MemberView;

/// Talks to agents on their pod IPs.
#[derive(Debug, Clone)]
pub struct Agents {
    client: ManagementClient,
    port: u16,
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
            port: u16::try_from(MANAGEMENT_PORT).unwrap_or(8558),
        }
    }

    /// `/cluster/members` of the first agent in `ips` that is a member (an agent that
    /// has not joined yet answers an empty list; that answer is kept only when no
    /// agent is a member); else every error.
    pub async fn members(&self, ips: &[IpAddr]) -> Result<ClusterMembers, String> {
        let mut errors = Vec::new();
        let mut not_joined = None;
        for ip in ips {
            let addr = SocketAddr::new(*ip, self.port);
            match self
                .client
                .get_json::<ClusterMembers>(addr, "/cluster/members")
                .await
            {
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

    /// Asks the agent at `ip` to make `member` leave the cluster gracefully.
    pub async fn leave(&self, ip: IpAddr, member: &str, token: &str) -> Result<(), String> {
        let addr = SocketAddr::new(ip, self.port);
        let path = format!("/cluster/members/{member}?operation=Leave");
        match self.client.put(addr, &path, token).await? {
            (200..=299, _) => Ok(()),
            (code, body) => Err(format!(
                "{addr} answered {code} to Leave of {member}: {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }
}

/// The members as the rollout planner sees them: IP from the address, reachability.
pub fn member_views(m: &ClusterMembers) -> Vec<MemberView> {
    m.members
        .iter()
        .map(|x| MemberView {
            address: x.node.clone(),
            ip: ip_of(&x.node).unwrap_or_default(),
            status: x.status.clone(),
            up_number: x.up_number,
            unreachable: m.unreachable.iter().any(|u| u.node == x.node),
        })
        .collect()
}

/// `muster://name@10.0.0.1:2552` → `10.0.0.1` (`[::1]` → `::1`).
pub fn ip_of(address: &str) -> Option<String> {
    let host_port = address.rsplit_once('@')?.1;
    let host = host_port.rsplit_once(':')?.0;
    Some(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_addresses_give_their_ip() {
        assert_eq!(
            ip_of("muster://shop@10.0.0.1:2552").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            ip_of("muster://shop@[fd00::1]:2552").as_deref(),
            Some("fd00::1")
        );
        assert_eq!(ip_of("nonsense"), None);
    }
}
