//! `muster-agent local-cluster`: N real agent processes on their own loopback addresses
//! (127.0.1.1, 127.0.1.2, …) with config discovery, started together, watched until they
//! form one cluster — the quickest way to see bootstrap work (like Akka's local
//! bootstrap example). Linux: every 127.0.0.0/8 address is bindable without setup.
//!
//! SIGTERM or SIGINT at any time stops every agent it started (each gets SIGTERM and
//! leaves gracefully, SIGKILL after [`STOP_GRACE`]) before it exits. The watcher asks
//! every agent at once, once per round, rounds [`round_interval`] apart, so watching
//! 100 agents costs each of them two requests a second.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::api::{ManagementClient, check};
use crate::base::address::NodeAddress;
use crate::base::rng::os_random_bytes;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Number of agents.
    #[arg(long, short, default_value_t = 3)]
    pub nodes: u8,
    /// First three octets of the agents' addresses; agent i gets .i (1-based).
    #[arg(long, default_value = "127.0.1")]
    pub subnet: String,
    /// bootstrap.required-contact-point-nr (default: the number of agents).
    #[arg(long)]
    pub required: Option<usize>,
    /// Stop the agents and exit once the cluster has formed.
    #[arg(long)]
    pub exit_when_formed: bool,
    /// Show the agents' own logs (RUST_LOG=info) instead of warnings only.
    #[arg(long)]
    pub verbose: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// The YAML configuration every local agent gets.
/// Every agent starts together, so `expected-contact-point-nr` is their number (at least
/// `required`).
pub fn config_yaml(ips: &[IpAddr], required: usize, key_file: &std::path::Path) -> String {
    let expected = ips.len().max(required);
    let endpoints: Vec<String> = ips
        .iter()
        .map(|ip| format!("'{}'", SocketAddr::new(*ip, 8558)))
        .collect();
    format!(
        "cluster:\n  key-file: {}\nbootstrap:\n  service-name: local\n  discovery-method: config\n  required-contact-point-nr: {required}\n  expected-contact-point-nr: {expected}\ndiscovery:\n  config:\n    endpoints: [{}]\n",
        key_file.display(),
        endpoints.join(", ")
    )
}

/// Agents still running this long after SIGTERM are killed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Time between two rounds of `/cluster/members` requests to every agent: 100 ms for a
/// handful, 10 ms per agent beyond, at most 500 ms.
pub fn round_interval(agents: usize) -> Duration {
    Duration::from_millis((agents as u64 * 10).clamp(100, 500))
}

/// Resolves on the first SIGTERM or SIGINT, with the signal's number.
async fn stop_signal() -> i32 {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => 15,
        _ = int.recv() => 2,
    }
}

/// SIGTERM to every agent, then waits for them (SIGKILL after [`STOP_GRACE`]).
async fn stop_agents(children: &mut [Child]) {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            // The agents are our own children; `kill` is the portable way to signal.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for c in children.iter_mut() {
        if tokio::time::timeout_at(deadline, c.wait()).await.is_err() {
            let _ = c.kill().await;
        }
    }
}

fn spawn_agent(
    config: &std::path::Path,
    ip: IpAddr,
    name: &str,
    verbose: bool,
) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--config")
        .arg(config)
        .env("POD_IP", ip.to_string())
        .env("POD_NAME", name)
        .env("RUST_LOG", if verbose { "info" } else { "warn" })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child.stderr.take().map(|p| Box::new(p) as _),
    ]
    .into_iter()
    .flatten()
    {
        let name = name.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                println!("[{name}] {line}");
            }
        });
    }
    Ok(child)
}

pub async fn run(args: Args) -> ExitCode {
    let n = usize::from(args.nodes.max(1));
    let octets: Vec<u8> = args
        .subnet
        .split('.')
        .filter_map(|o| o.parse().ok())
        .collect();
    let [a, b, c] = octets[..] else {
        eprintln!("--subnet must be three octets like 127.0.1");
        return ExitCode::from(2);
    };
    let ips: Vec<IpAddr> = (1..=n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(a, b, c, i as u8)))
        .collect();
    let dir = std::env::temp_dir().join(format!("muster-local-{}", std::process::id()));
    let prepared = (|| -> std::io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(&dir)?;
        let mut key = [0u8; 32];
        os_random_bytes(&mut key);
        let key_file = dir.join("cluster.key");
        std::fs::write(&key_file, crate::base::hex(&key))?;
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            config_yaml(&ips, args.required.unwrap_or(n), &key_file),
        )?;
        Ok((config, key_file))
    })();
    let (config, _) = match prepared {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot prepare {}: {e}", dir.display());
            return ExitCode::from(1);
        }
    };
    println!(
        "starting {n} agents on {} .. {} (config discovery, required-contact-point-nr {})",
        ips[0],
        ips[n - 1],
        args.required.unwrap_or(n)
    );
    let mut children = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        match spawn_agent(&config, *ip, &format!("agent-{}", i + 1), args.verbose) {
            Ok(c) => children.push(c),
            Err(e) => {
                eprintln!("cannot start agent-{}: {e}", i + 1);
                return ExitCode::from(1);
            }
        }
    }
    let started = Instant::now();
    let client = ManagementClient::new(Duration::from_millis(500));
    let mut last: Vec<String> = vec![String::new(); n];
    let mut rounds = tokio::time::interval(round_interval(n));
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stop_signal();
    tokio::pin!(stop);
    let watching = async {
        loop {
            rounds.tick().await;
            if started.elapsed() > Duration::from_secs(args.timeout) {
                break None;
            }
            // All agents at once: a round takes as long as the slowest answer, not the
            // sum of all of them (each agent still gets one request per round).
            let answers = futures_util::future::join_all(
                ips.iter()
                    .map(|ip| client.members(SocketAddr::new(*ip, 8558))),
            )
            .await;
            let mut views = Vec::new();
            for (i, v) in answers.into_iter().enumerate() {
                let v = v.ok();
                let line = match &v {
                    Some(m) => format!(
                        "{} members [{}], leader {}",
                        m.members.len(),
                        m.members
                            .iter()
                            .map(|m| format!("{} {}", host(&m.node), m.status))
                            .collect::<Vec<_>>()
                            .join(", "),
                        m.leader.as_ref().map_or("-".into(), host)
                    ),
                    None => "not answering yet".into(),
                };
                if line != last[i] {
                    println!(
                        "{:>7.3}s agent-{} ({}): {line}",
                        started.elapsed().as_secs_f64(),
                        i + 1,
                        ips[i]
                    );
                    last[i] = line;
                }
                views.push(v);
            }
            let answered: Vec<_> = views.into_iter().flatten().collect();
            if answered.len() == n && check::one_cluster_of(&answered, n).is_ok() {
                break answered.into_iter().next();
            }
        }
    };
    // Stopped by a signal: the exit status says so (128 + its number), whether it came
    // while watching or after the cluster formed.
    let stopped_by = |signo: i32| {
        eprintln!("signal {signo}: stopping the {n} agents");
        ExitCode::from(128 + signo as u8)
    };
    let watched = tokio::select! {
        formed = watching => Ok(formed),
        signo = &mut stop => Err(signo),
    };
    let code = match watched {
        Err(signo) => stopped_by(signo),
        Ok(Some(m)) => {
            println!(
                "\nformed ONE cluster of {n} in {} ms after the agents started; leader {}, oldest {}",
                started.elapsed().as_millis(),
                m.leader.as_ref().map_or("-".into(), ToString::to_string),
                m.oldest.as_ref().map_or("-".into(), ToString::to_string)
            );
            if !args.exit_when_formed {
                println!(
                    "try: curl -s http://{}:8558/cluster/members   (and /bootstrap/status, /metrics)",
                    ips[0]
                );
                println!("Ctrl-C (or SIGTERM) stops the agents.");
                stopped_by((&mut stop).await)
            } else {
                ExitCode::SUCCESS
            }
        }
        Ok(None) => {
            eprintln!(
                "no single cluster after {}s; bootstrap status of each agent:",
                args.timeout
            );
            for ip in &ips {
                let s = client
                    .get(SocketAddr::new(*ip, 8558), "/bootstrap/status")
                    .await;
                eprintln!(
                    "{ip}: {}",
                    s.map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_else(|e| e.to_string())
                );
            }
            ExitCode::from(1)
        }
    };
    stop_agents(&mut children).await;
    let _ = std::fs::remove_dir_all(&dir);
    code
}

/// `ip:port` of a node address, for short lines.
fn host(node: &NodeAddress) -> String {
    node.socket_addr().to_string()
}
