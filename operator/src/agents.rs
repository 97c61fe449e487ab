//! The operator's side of the agents' management API, through the agent's own client:
//! the member list (from any agent that answers; one down or partitioned pod must not
//! blind the operator) and Leave (with the management token from the cluster's Secret).
//!
//! A ClusterSpec's author chooses the agent image, so whatever answers on the agents'
//! port is hostile: every answer is bounded in size ([`MEMBERS_BODY_BYTES`]), every
//! request in time, and one look at a cluster's agents in total ([`Agents::new`]'s
//! `scan`), so that one cluster's agents cannot hold a reconcile, or the operator's
//! memory, for longer or more than that.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use node_agent::api::handover::HandoverBody;
use node_agent::api::{
    BootstrapStatusBody, ClientError, ClientTls, ClusterMembers, ManagementClient,
};
use node_agent::base::address::NodeAddress;
use node_agent::base::secret::ManagementToken;
use tokio::time::Instant;

use crate::controller::build::MANAGEMENT_PORT;
use crate::rollout::MemberView;

/// The largest `/cluster/members` answer read. A member is about 150 bytes of JSON, so
/// this holds several thousand; a longer answer is refused unread.
pub const MEMBERS_BODY_BYTES: usize = 1024 * 1024;
/// The longest name (in bytes) an agent's member list may hold (a node's system, an app
/// version, a role): a DNS subdomain's length; ClusterSpecs allow no longer roles. Longer ones are refused, so that nothing an agent
/// sends can make the status large.
pub const MAX_NAME_CHARS: usize = 253;
/// The most app versions (pod template revisions) a member list may hold at once.
pub const MAX_APP_VERSIONS: usize = 16;
/// The most roles of one member (ClusterSpecs allow no more).
pub const MAX_ROLES: usize = 64;
/// What is said of one agent's failure (in status and logs): at most this many
/// characters of it, and of at most [`QUOTED_AGENTS`] agents.
const QUOTED_ERROR_CHARS: usize = 200;
const QUOTED_AGENTS: usize = 4;
/// Each request to an agent gives up after this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// One look at a cluster's agents (asking one after another until one answers as a
/// member) gives up after this.
pub const SCAN_TIMEOUT: Duration = Duration::from_secs(5);

/// Agents asked at once for their status (a key rotation asks every pod's).
const STATUS_CONCURRENCY: usize = 8;

/// Talks to agents on their pod IPs.
#[derive(Debug, Clone)]
pub struct Agents {
    client: ManagementClient,
    scan: Duration,
}

impl Default for Agents {
    fn default() -> Self {
        Self::new(REQUEST_TIMEOUT, SCAN_TIMEOUT)
    }
}

impl Agents {
    /// Each request gives up after `timeout`, each look at a cluster's agents after
    /// `scan`.
    pub fn new(timeout: Duration, scan: Duration) -> Self {
        Self {
            client: ManagementClient::new(timeout).with_body_limit(MEMBERS_BODY_BYTES),
            scan,
        }
    }

    /// With the default timeouts, connecting from `local_ip` (the local test platform:
    /// as from a pod's IP).
    pub fn from_ip(local_ip: IpAddr) -> Self {
        Self {
            client: ManagementClient::from_ip(local_ip, REQUEST_TIMEOUT)
                .with_body_limit(MEMBERS_BODY_BYTES),
            scan: SCAN_TIMEOUT,
        }
    }

    /// The same, speaking HTTPS only: an agent must show a certificate for
    /// `server_name` from a CA of `ca_pem` (PEM certificates) before anything is sent
    /// to it — the management token above all.
    pub fn with_tls(&self, ca_pem: &[u8], server_name: &str) -> Result<Self, String> {
        Ok(Self {
            client: self
                .client
                .clone()
                .with_tls(client_tls(ca_pem, server_name)?),
            scan: self.scan,
        })
    }

    /// `/cluster/members` of the first agent in `ips` that is a member (an agent that
    /// has not joined yet answers an empty list; that answer is kept only when no
    /// agent is a member); else every error, and how many were not asked in time.
    pub async fn members(&self, ips: &[IpAddr]) -> Result<ClusterMembers, String> {
        let mut errors = Vec::new();
        let mut gave_up = None;
        let mut not_joined = None;
        let deadline = Instant::now() + self.scan;
        for (asked, ip) in ips.iter().enumerate() {
            let addr = SocketAddr::new(*ip, MANAGEMENT_PORT);
            let Some(answer) = self.ask(addr, deadline).await else {
                gave_up = Some(format!(
                    "gave up after {:?}; {} of {} agents not asked",
                    self.scan,
                    ips.len() - asked,
                    ips.len()
                ));
                break;
            };
            match answer {
                Ok(m) if !m.members.is_empty() => return Ok(m),
                Ok(m) => not_joined = not_joined.or(Some(m)),
                Err(e) => errors.push(format!("{addr}: {}", quoted(&e.to_string()))),
            }
        }
        match not_joined {
            Some(m) => Ok(m),
            None if errors.is_empty() && gave_up.is_none() => Err("no pod has an IP yet".into()),
            None => {
                let more = errors.len().saturating_sub(QUOTED_AGENTS);
                errors.truncate(QUOTED_AGENTS);
                if more > 0 {
                    errors.push(format!("and {more} more"));
                }
                errors.extend(gave_up);
                Err(errors.join("; "))
            }
        }
    }

    /// Whether every agent at `ips` answers, in time, and none is a member (an empty
    /// list: no).
    pub async fn none_joined(&self, ips: &[IpAddr]) -> bool {
        if ips.is_empty() {
            return false;
        }
        let deadline = Instant::now() + self.scan;
        for ip in ips {
            match self
                .ask(SocketAddr::new(*ip, MANAGEMENT_PORT), deadline)
                .await
            {
                Some(Ok(m)) if m.members.is_empty() => {}
                _ => return false,
            }
        }
        true
    }

    /// One agent's member list; `None` when `deadline` passed first.
    async fn ask(
        &self,
        addr: SocketAddr,
        deadline: Instant,
    ) -> Option<Result<ClusterMembers, ClientError>> {
        let answer = tokio::time::timeout_at(deadline, self.client.members(addr))
            .await
            .ok()?;
        Some(answer.and_then(bounded))
    }

    /// `/cluster/members` of each agent of `targets` (pod name, IP), a few asked at
    /// once, all within one look's time (`scan`); in no particular order.
    pub async fn members_each(
        &self,
        targets: &[(String, IpAddr)],
    ) -> Vec<(String, Result<ClusterMembers, String>)> {
        use futures_util::StreamExt;
        let deadline = Instant::now() + self.scan;
        futures_util::stream::iter(targets.iter().cloned())
            .map(|(pod, ip)| async move {
                let answer = match self
                    .ask(SocketAddr::new(ip, MANAGEMENT_PORT), deadline)
                    .await
                {
                    Some(Ok(m)) => Ok(m),
                    Some(Err(e)) => Err(quoted(&e.to_string())),
                    None => Err(format!("no answer within {:?}", self.scan)),
                };
                (pod, answer)
            })
            .buffer_unordered(STATUS_CONCURRENCY)
            .collect()
            .await
    }

    /// `/bootstrap/status` of each agent of `targets` (pod name, IP), a few asked at
    /// once, all within one look's time (`scan`): an agent not answered by then gets
    /// that as its error. In no particular order.
    pub async fn statuses(
        &self,
        targets: &[(String, IpAddr)],
    ) -> Vec<(String, Result<BootstrapStatusBody, String>)> {
        use futures_util::StreamExt;
        let deadline = Instant::now() + self.scan;
        futures_util::stream::iter(targets.iter().cloned())
            .map(|(pod, ip)| async move {
                let addr = SocketAddr::new(ip, MANAGEMENT_PORT);
                let answer =
                    match tokio::time::timeout_at(deadline, self.client.bootstrap_status(addr))
                        .await
                    {
                        Ok(Ok(s)) => Ok(s),
                        Ok(Err(e)) => Err(quoted(&e.to_string())),
                        Err(_) => Err(format!("no answer within {:?}", self.scan)),
                    };
                (pod, answer)
            })
            .buffer_unordered(STATUS_CONCURRENCY)
            .collect()
            .await
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

    /// Tells the agent at `ip` that the pod of `member` is gone.
    pub async fn pod_gone(
        &self,
        ip: IpAddr,
        (member, uid): (&NodeAddress, u64),
        token: &ManagementToken,
    ) -> Result<(), ClientError> {
        self.client
            .pod_gone(SocketAddr::new(ip, MANAGEMENT_PORT), member, uid, token)
            .await
    }

    /// The handover gate of the agent at `ip` (`GET /handover`).
    pub async fn handover(&self, ip: IpAddr) -> Result<HandoverBody, ClientError> {
        self.client
            .handover(SocketAddr::new(ip, MANAGEMENT_PORT))
            .await
    }

    /// Asks the agent at `ip` to prepare the whole cluster for a full shutdown.
    pub async fn prepare_for_full_shutdown(
        &self,
        ip: IpAddr,
        token: &ManagementToken,
    ) -> Result<(), ClientError> {
        self.client
            .prepare_for_full_shutdown(SocketAddr::new(ip, MANAGEMENT_PORT), token)
            .await
    }
}

/// An HTTPS client configuration trusting the CAs of `ca_pem` (PEM certificates)
/// alone, checking every agent's certificate against `server_name`.
pub fn client_tls(ca_pem: &[u8], server_name: &str) -> Result<ClientTls, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem) {
        let ca = ca.map_err(|e| format!("the cluster's CA is not a PEM certificate: {e}"))?;
        roots
            .add(ca)
            .map_err(|e| format!("the cluster's CA is not usable: {e}"))?;
    }
    if roots.is_empty() {
        return Err("the cluster's CA holds no certificate".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(node_agent::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("{server_name:?} is not a server name: {e}"))?;
    Ok((Arc::new(config), name))
}

/// At most [`QUOTED_ERROR_CHARS`] of `text` (an error can quote what an agent sent).
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_ERROR_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A member list whose names are of a size an agent sends ([`MAX_NAME_CHARS`],
/// [`MAX_ROLES`], [`MAX_APP_VERSIONS`]); else refused as malformed.
fn bounded(m: ClusterMembers) -> Result<ClusterMembers, ClientError> {
    let long = |s: &str| s.len() > MAX_NAME_CHARS;
    let nodes = std::iter::once(&m.self_node)
        .chain(m.leader.iter())
        .chain(m.oldest.iter())
        .chain(m.oldest_per_role.values())
        .chain(m.members.iter().map(|x| &x.node))
        .chain(
            m.unreachable
                .iter()
                .flat_map(|u| std::iter::once(&u.node).chain(&u.observed_by)),
        );
    let names = m
        .members
        .iter()
        .flat_map(|x| std::iter::once(&x.app_version).chain(&x.roles))
        .chain(m.oldest_per_role.keys());
    if nodes
        .map(|n| n.system.as_str())
        .chain(names.map(String::as_str))
        .any(long)
    {
        return Err(ClientError::Malformed(format!(
            "a name longer than {MAX_NAME_CHARS} bytes"
        )));
    }
    if m.members.iter().any(|x| x.roles.len() > MAX_ROLES) {
        return Err(ClientError::Malformed(format!(
            "more than {MAX_ROLES} roles"
        )));
    }
    let versions: HashSet<&str> = m.members.iter().map(|x| x.app_version.as_str()).collect();
    if versions.len() > MAX_APP_VERSIONS {
        return Err(ClientError::Malformed(format!(
            "{} app versions at once (at most {MAX_APP_VERSIONS})",
            versions.len()
        )));
    }
    Ok(m)
}

/// The members as the rollout planner sees them.
pub fn member_views(m: &ClusterMembers) -> Vec<MemberView> {
    let unreachable: HashSet<&NodeAddress> = m.unreachable.iter().map(|u| &u.node).collect();
    m.members
        .iter()
        .map(|x| MemberView {
            address: x.node.clone(),
            status: x.status,
            up_number: x.up_number,
            unreachable: unreachable.contains(&x.node),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use node_agent::api::ClusterMember;
    use node_agent::base::member::MemberStatus;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// `n` members of a cluster `s`, as JSON.
    fn members_json(n: u32) -> Vec<u8> {
        let node =
            |i: u32| NodeAddress::new("s", IpAddr::from([10, 0, (i >> 8) as u8, i as u8]), 2552);
        let mut m = ClusterMembers::empty(node(0));
        m.members = (0..n)
            .map(|i| ClusterMember {
                node: node(i),
                node_uid: u64::from(i) + 1,
                status: MemberStatus::Up,
                roles: vec!["a-role-name".into()],
                up_number: i,
                app_version: format!("{i:010}"),
            })
            .collect();
        serde_json::to_vec(&m).expect("JSON")
    }

    /// An "agent" on `ip`'s management port that answers every connection with
    /// `answer` (nothing at all when empty: it keeps the connection open, silent);
    /// the number of connections it took.
    async fn agent(ip: IpAddr, answer: Vec<u8>) -> Arc<AtomicUsize> {
        let listener = TcpListener::bind(SocketAddr::new(ip, MANAGEMENT_PORT))
            .await
            .expect("bind the agent's port");
        let taken = Arc::new(AtomicUsize::new(0));
        let count = taken.clone();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                if answer.is_empty() {
                    open.push(conn);
                    continue;
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    answer.len()
                );
                let answer = answer.clone();
                tokio::spawn(async move {
                    // The request's head, then the answer; then until the client closes
                    // (closing first with its request unread would reset the
                    // connection before the client read the answer).
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&answer).await;
                    while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        taken
    }

    #[tokio::test]
    async fn a_member_list_larger_than_the_bound_is_refused() {
        let big = members_json(8000);
        assert!(
            big.len() > MEMBERS_BODY_BYTES && big.len() < 4 * 1024 * 1024,
            "{} bytes",
            big.len()
        );
        let ok = members_json(3);
        let (a, b) = (IpAddr::from([127, 36, 0, 1]), IpAddr::from([127, 36, 0, 2]));
        agent(a, big).await;
        agent(b, ok).await;
        let agents = Agents::default();
        let error = match agents.members(&[a]).await {
            Ok(m) => panic!("a list of {} members was read", m.members.len()),
            Err(e) => e,
        };
        assert!(
            error.contains(&format!("larger than {MEMBERS_BODY_BYTES} bytes")),
            "{error}"
        );
        // The next agent is asked instead.
        let m = agents
            .members(&[a, b])
            .await
            .expect("the second agent's list");
        assert_eq!(m.members.len(), 3);
    }

    #[tokio::test]
    async fn what_agents_send_reaches_the_status_only_bounded() {
        // Six agents whose answers quote a long string back in the parse error.
        let garbage = format!(r#"{{"selfNode": "{}"}}"#, "x".repeat(5000)).into_bytes();
        let ips: Vec<IpAddr> = (1..=6).map(|i| IpAddr::from([127, 36, 2, i])).collect();
        for ip in &ips {
            agent(*ip, garbage.clone()).await;
        }
        let error = Agents::default().members(&ips).await.expect_err("garbage");
        assert!(error.len() < 1200, "{} characters: {error}", error.len());
        assert!(error.ends_with("and 2 more"), "{error}");

        // Names longer than any agent sends, or more app versions than a rollout makes.
        let mut m: ClusterMembers = serde_json::from_slice(&members_json(20)).expect("members");
        assert!(bounded(m.clone()).is_err(), "20 app versions");
        for (i, x) in m.members.iter_mut().enumerate() {
            x.app_version = format!("v{}", i % 2);
        }
        assert!(bounded(m.clone()).is_ok());
        m.members[3].roles.push("r".repeat(MAX_NAME_CHARS + 1));
        let e = bounded(m).expect_err("a long role");
        assert!(e.to_string().contains("longer than 253 bytes"), "{e}");
    }

    #[tokio::test]
    async fn a_tls_client_never_speaks_plain_http_to_an_agent() {
        // An "agent" answering plain HTTP with a good member list: the cluster's client
        // with TLS gets nothing from it (and so sends it nothing, no token).
        let ip = IpAddr::from([127, 36, 3, 1]);
        let taken = agent(ip, members_json(3)).await;
        let now = std::time::SystemTime::now();
        let ca = crate::ca::new_ca("test CA", now, Duration::from_secs(86400 * 30)).unwrap();
        let agents = Agents::default()
            .with_tls(ca.cert_pem.as_bytes(), "shop.prod.muster")
            .expect("a TLS client");
        let error = agents.members(&[ip]).await.expect_err("plain HTTP");
        assert!(error.contains(&ip.to_string()), "{error}");
        assert_eq!(
            taken.load(Ordering::SeqCst),
            1,
            "it connected, for a handshake"
        );
        // The same agent answers a plain client: only TLS made the difference.
        assert_eq!(
            Agents::default()
                .members(&[ip])
                .await
                .unwrap()
                .members
                .len(),
            3
        );
        // A CA that is no PEM certificate, or a name that is none, is refused at once.
        assert!(
            Agents::default()
                .with_tls(b"not a CA", "shop.prod.muster")
                .is_err()
        );
        assert!(
            Agents::default()
                .with_tls(ca.cert_pem.as_bytes(), "a b")
                .is_err()
        );
    }

    #[tokio::test]
    async fn silent_agents_hold_one_look_at_a_cluster_no_longer_than_the_scan() {
        let ips: Vec<IpAddr> = (1..=5).map(|i| IpAddr::from([127, 36, 1, i])).collect();
        let mut taken = Vec::new();
        for ip in &ips {
            taken.push(agent(*ip, Vec::new()).await);
        }
        let agents = Agents::new(Duration::from_millis(300), Duration::from_millis(700));
        let error = agents.members(&ips).await.expect_err("no answer");
        let asked: usize = taken.iter().map(|t| t.load(Ordering::SeqCst)).sum();
        assert!(asked < ips.len(), "{asked} asked: {error}");
        assert!(
            error.contains(&format!("of {} agents not asked", ips.len())),
            "{error}"
        );
        assert!(!agents.none_joined(&ips).await);
    }
}
