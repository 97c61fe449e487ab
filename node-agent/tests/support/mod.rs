//! Shared by the process tests: real `muster-agent` processes on their own loopback
//! addresses, a work folder per test, and polling with deadlines.
//!
//! Every test takes its own 127.x.y.0/24 subnet, so tests run in parallel without
//! sharing a port. Agent logs go to files in the test's folder and are printed when a
//! test fails.

#![allow(dead_code)] // each test binary uses a different part

pub mod certs;
pub mod dns;
pub mod floods;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use node_agent::api::{ClusterMembers, ManagementClient, check};
use node_agent::base::address::NodeAddress;
use node_agent::base::member::MemberStatus;

pub const MANAGEMENT_PORT: u16 = 8558;
pub const CLUSTER_PORT: u16 = 2552;
/// Hex of 32 fixed bytes: the cluster key of every test cluster.
pub const KEY_HEX: &str = "6d75737465722d746573742d636c75737465722d6b65792d3332627974657321";

/// The `n`-th address (1-based) of a test's subnet `127.a.b.0/24`.
pub fn ip(subnet: (u8, u8), n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, subnet.0, subnet.1, n))
}

pub fn management(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, MANAGEMENT_PORT)
}

/// A folder for one test's files, emptied at the start.
pub struct Workdir {
    pub path: PathBuf,
}

impl Workdir {
    pub fn new(test: &str) -> Self {
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(test);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test folder");
        std::fs::write(path.join("cluster.key"), KEY_HEX).expect("write the key");
        Self { path }
    }

    pub fn key_file(&self) -> PathBuf {
        self.path.join("cluster.key")
    }

    /// Writes `agent.yaml` with the key file prepended to the `cluster:` section given.
    pub fn config(&self, yaml: &str) -> PathBuf {
        self.config_named("agent", yaml)
    }

    /// Writes `<name>.yaml`: for tests whose agents differ in configuration.
    pub fn config_named(&self, name: &str, yaml: &str) -> PathBuf {
        let file = self.path.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml).expect("write the config");
        file
    }
}

/// One `muster-agent` process; killed when dropped. Its output goes to a log file that
/// is printed if the test panics.
pub struct AgentProcess {
    pub ip: IpAddr,
    pub name: String,
    log: PathBuf,
    child: Child,
}

impl AgentProcess {
    pub fn start(work: &Workdir, config: &Path, ip: IpAddr, name: &str) -> Self {
        Self::start_exe(
            Path::new(env!("CARGO_BIN_EXE_muster-agent")),
            work,
            config,
            ip,
            name,
        )
    }

    /// As [`Self::start`], with this `muster-agent` executable.
    pub fn start_exe(exe: &Path, work: &Workdir, config: &Path, ip: IpAddr, name: &str) -> Self {
        let log = work.path.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create the log file");
        let err = out.try_clone().expect("clone the log file");
        let child = Command::new(exe)
            .arg("--config")
            .arg(config)
            .env("POD_IP", ip.to_string())
            .env("POD_NAME", name)
            .env(
                "RUST_LOG",
                std::env::var("AGENT_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env("MUSTER_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start muster-agent");
        Self {
            ip,
            name: name.to_owned(),
            log,
            child,
        }
    }

    pub fn management(&self) -> SocketAddr {
        management(self.ip)
    }

    /// Its cluster node address (cluster `demo`, as every test config names it).
    pub fn address(&self) -> NodeAddress {
        NodeAddress::new("demo", self.ip, CLUSTER_PORT)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// None while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("query the agent process")
    }

    /// Waits (at most 20 s) for the process to exit; panics naming `what` otherwise.
    pub async fn wait_for_exit(&mut self, what: &str) -> ExitStatus {
        eventually(what, Duration::from_secs(20), || {
            let status = self.exited();
            async move { status.ok_or_else(|| "still running".to_owned()) }
        })
        .await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- log of {} ({}) -----\n{}",
                self.name,
                self.ip,
                self.log()
            );
        }
    }
}

/// A config for `n` agents on `subnet` .1 ..= .n with config discovery, all required,
/// and a cluster key.
pub fn config_discovery(work: &Workdir, subnet: (u8, u8), n: u8) -> PathBuf {
    config_discovery_with(work, subnet, n, "")
}

/// [`config_discovery`] with more `cluster:` settings (YAML lines indented by two).
pub fn config_discovery_with(work: &Workdir, subnet: (u8, u8), n: u8, cluster: &str) -> PathBuf {
    let endpoints: Vec<String> = (1..=n)
        .map(|i| format!("'{}:{MANAGEMENT_PORT}'", ip(subnet, i)))
        .collect();
    work.config(&format!(
        "cluster:\n  key-file: {key}\n{cluster}bootstrap:\n  service-name: demo\n  discovery-method: config\n  required-contact-point-nr: {n}\n  expected-contact-point-nr: {n}\ndiscovery:\n  config:\n    endpoints: [{endpoints}]\n",
        key = work.key_file().display(),
        endpoints = endpoints.join(", "),
    ))
}

/// Starts `n` agents on `subnet` .1 ..= .n with one config.
pub fn start_agents(work: &Workdir, config: &Path, subnet: (u8, u8), n: u8) -> Vec<AgentProcess> {
    (1..=n)
        .map(|i| AgentProcess::start(work, config, ip(subnet, i), &format!("agent-{i}")))
        .collect()
}

/// The release-built `muster-agent` that `./test` builds before the tests and names in
/// `RELEASE_MUSTER_AGENT`, for tests whose load must be that of the build users run.
pub fn release_agent() -> PathBuf {
    let Some(exe) = std::env::var_os("RELEASE_MUSTER_AGENT") else {
        panic!(
            "this test runs release-built agents: run it through ./test (which builds them), \
             or `cargo build --release -p node-agent --bin muster-agent` and set \
             RELEASE_MUSTER_AGENT=target/release/muster-agent"
        )
    };
    let exe = PathBuf::from(exe);
    assert!(
        exe.is_file(),
        "RELEASE_MUSTER_AGENT={} is not a file: build it with `cargo build --release -p node-agent --bin muster-agent`",
        exe.display()
    );
    exe
}

/// Polls `probe` every 25 ms until it returns `Ok`; fails with its last error once
/// `deadline` has passed.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(25));
    loop {
        every.tick().await;
        let last = match probe().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        if start.elapsed() > deadline {
            panic!("{what}: not reached within {deadline:?}; last state: {last}");
        }
    }
}

pub fn client() -> ManagementClient {
    ManagementClient::new(Duration::from_secs(2))
}

/// Every agent's `/cluster/members` once they are one cluster of `n` Up members that
/// every agent sees alike ([`check::one_cluster_of`]); panics at once if they ever show
/// two clusters.
pub async fn wait_for_one_cluster(agents: &[AgentProcess], n: usize) -> Vec<ClusterMembers> {
    wait_for_one_cluster_with(&client(), agents, n).await
}

/// [`wait_for_one_cluster`], asking with `client` (e.g. one that speaks TLS).
pub async fn wait_for_one_cluster_with(
    client: &ManagementClient,
    agents: &[AgentProcess],
    n: usize,
) -> Vec<ClusterMembers> {
    eventually(
        "one cluster with every agent Up",
        Duration::from_secs(60),
        || {
            let client = client.clone();
            async move {
                let mut views = Vec::new();
                for a in agents {
                    let v = client
                        .members(a.management())
                        .await
                        .map_err(|e| format!("{}: {e}", a.name))?;
                    views.push(v);
                }
                if let Err(split) = check::no_split(&views) {
                    panic!("{split}");
                }
                check::one_cluster_of(&views, n)?;
                Ok(views)
            }
        },
    )
    .await
}

/// The value of one sample of `/metrics`, e.g. `muster_bootstrap_probes_total{result="malformed"}`.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(sample)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

pub async fn metrics(addr: SocketAddr) -> Result<String, String> {
    Ok(client().metrics(addr).await?)
}

/// One HTTP/1.1 request with the management token and, if any, a body of
/// `content_type`; (status, body).
pub async fn send_with_token(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (content_type, body) = body
        .map(|(t, b)| (format!("Content-Type: {t}\r\n"), b))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

pub async fn json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    Ok(client().get_json(addr, path).await?)
}

/// Every agent in `agents` lists exactly `n` members, all Up, none unreachable.
pub async fn wait_for_survivors(agents: &[AgentProcess], n: usize, what: &str) -> ClusterMembers {
    let client = client();
    eventually(what, Duration::from_secs(40), || {
        let (client, agents) = (client.clone(), agents);
        async move {
            let mut last = None;
            for a in agents {
                let m = client
                    .members(a.management())
                    .await
                    .map_err(|e| format!("{}: {e}", a.name))?;
                let ok = m.members.len() == n
                    && m.members.iter().all(|x| x.status == MemberStatus::Up)
                    && m.unreachable.is_empty();
                if !ok {
                    return Err(format!(
                        "{}: {:?} unreachable {:?}",
                        a.name, m.members, m.unreachable
                    ));
                }
                last = Some(m);
            }
            last.ok_or_else(|| "no agents".to_owned())
        }
    })
    .await
}

/// Asserts that every agent shows `before`'s members (by uid: none restarted), all Up
/// and none unreachable.
pub async fn same_members_all_up(
    client: &ManagementClient,
    agents: &[AgentProcess],
    before: &ClusterMembers,
) {
    let uids = |m: &ClusterMembers| {
        let mut v: Vec<(String, u64)> = m
            .members
            .iter()
            .map(|x| (x.node.to_string(), x.node_uid))
            .collect();
        v.sort();
        v
    };
    for a in agents {
        let m = client.members(a.management()).await.expect("members");
        assert_eq!(uids(&m), uids(before), "{}: members changed", a.name);
        assert!(
            m.members.iter().all(|x| x.status == MemberStatus::Up) && m.unreachable.is_empty(),
            "{}: {:?} unreachable {:?}",
            a.name,
            m.members,
            m.unreachable
        );
    }
}

/// Asserts that every member of `before` is in `after` with the same uid (not restarted).
pub fn still_members(before: &ClusterMembers, after: &ClusterMembers) {
    for m in &before.members {
        let now = after
            .members
            .iter()
            .find(|x| x.node == m.node)
            .unwrap_or_else(|| panic!("{} is no longer a member", m.node));
        assert_eq!(now.node_uid, m.node_uid, "{} was restarted", m.node);
    }
}

/// Heartbeats and heartbeat answers each agent has accepted so far (their signatures
/// checked, over TLS where it is on).
async fn heartbeats(client: &ManagementClient, agents: &[AgentProcess]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for a in agents {
        let text = client.metrics(a.management()).await.unwrap_or_default();
        let count = |kind: &str| {
            metric(
                &text,
                &format!("muster_transport_messages_received_total{{kind=\"{kind}\"}}"),
            )
            .unwrap_or(0.0)
        };
        out.push((count("heartbeat"), count("heartbeat_rsp")));
    }
    out
}

/// Waits until every agent has accepted heartbeats and heartbeat answers sent after
/// this call: what changed on the senders (keys, certificates) works on the wire.
pub async fn fresh_heartbeats(client: &ManagementClient, agents: &[AgentProcess]) {
    let seen = heartbeats(client, agents).await;
    eventually(
        "fresh heartbeats accepted by every agent",
        Duration::from_secs(10),
        || {
            let seen = &seen;
            async move {
                let now = heartbeats(client, agents).await;
                if now.iter().zip(seen).all(|(n, s)| n.0 > s.0 && n.1 > s.1) {
                    Ok(())
                } else {
                    Err(format!("accepted: {now:?}, before {seen:?}"))
                }
            }
        },
    )
    .await;
}
