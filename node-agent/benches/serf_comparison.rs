//! `cargo bench -p node-agent --bench serf_comparison`: muster's failure detection and
//! membership next to HashiCorp Serf's (Debian package `serf`), in one run, on the same
//! machine, with the same node counts, each node a real process on its own loopback
//! address. Default settings on both sides (muster: Akka's failure detector and
//! `stable-after: 20s`; Serf: its `lan` profile).
//!
//! Per cluster size (`BENCH_SIZES`, default `25,50,100`):
//! - formation: all N started together (Serf: the first, then the others joining it);
//!   the time from the last start until every node lists every node as up (muster:
//!   Up, nobody unreachable), over `BENCH_RUNS` runs (default 3; p50 and max). Each
//!   muster run is then watched for `BENCH_WATCH_SECS` (default 30): an agent that
//!   exits (downed) or a view that is no longer all Up fails the run. Per node during
//!   formation: CPU (% of one core) and bytes sent per second.
//! - idle CPU, bytes sent per second and RSS per node, over `BENCH_IDLE_SECS` (default
//!   20).
//! - SIGKILL of one node → every other node reports it unreachable (muster's
//!   `UnreachableMember`, Serf's `EventMemberFailed`); the first and the last observer.
//! - SIGKILL → removed on all (muster: the split brain resolver downs it after
//!   stable-after; Serf keeps failed members for its 24 h reconnect timeout: n/a).
//! - graceful stop → removed on all (muster: SIGTERM, leave; Serf: SIGINT, leave).
//!
//! Observed through event streams, timestamped when they arrive: each muster agent's
//! `GET /cluster/events` (SSE) and each Serf agent's log on stdout. Bytes sent are what
//! an iptables chain of this benchmark counts for each node's address (IP headers
//! included, this benchmark's own requests to 127.0.0.1 left out); without iptables or
//! root they are `n/a`.
//!
//! `BENCH_LOGS=<folder>` keeps each muster agent's log (`RUST_LOG=info`) there, one
//! file per address (a later run on the same address overwrites it).
//!
//! `BENCH_SERF=0` leaves Serf out (muster only, for quicker runs while profiling).
//! Each run's outcome is also printed to stderr as it ends.
//!
//! `BENCH_BUSY=1` keeps both cores busy with burner threads for the whole run, as on a
//! loaded Kubernetes node.
//!
//! `BENCH_SOAK_SECS` (default 0: off; the issue asks for 600): both clusters of the
//! largest size run that long while this process keeps both cores busy; every
//! unreachable/failed report in that time is a false positive and is counted.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use node_agent::api::{ClusterMembers, ManagementClient};
use node_agent::base::member::MemberStatus;

mod common;
use common::{Burners, KEY_HEX, MANAGEMENT_PORT, env_or};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Up,
    Unreachable,
    Removed,
}

/// (when, observer index, kind, subject address).
type Record = (Instant, usize, Kind, IpAddr);

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Record>>>);

impl Log {
    fn push(&self, r: Record) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(r);
    }

    fn snapshot(&self) -> Vec<Record> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until every observer in `observers` reported `kind` about `subject` after
    /// `since`; returns the first and the last report's delay, or `None` on timeout.
    fn wait_all(
        &self,
        observers: &[usize],
        kind: Kind,
        subject: IpAddr,
        since: Instant,
        limit: Duration,
    ) -> Option<(Duration, Duration)> {
        let deadline = since + limit;
        loop {
            let seen: Vec<(usize, Instant)> = self
                .snapshot()
                .into_iter()
                .filter(|(t, _, k, s)| *t >= since && *k == kind && *s == subject)
                .map(|(t, o, _, _)| (o, t))
                .collect();
            let firsts: Vec<Instant> = observers
                .iter()
                .filter_map(|o| seen.iter().filter(|(x, _)| x == o).map(|(_, t)| *t).min())
                .collect();
            if firsts.len() == observers.len() {
                let first = firsts.iter().min().copied().unwrap_or(since);
                let last = firsts.iter().max().copied().unwrap_or(since);
                return Some((first - since, last - since));
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// When every observer in `observers` had reported `kind` about every subject (first
    /// reports only, after `since`), or `None` on timeout.
    fn all_saw(
        &self,
        observers: &[usize],
        kind: Kind,
        subjects: &[IpAddr],
        since: Instant,
        limit: Duration,
    ) -> Option<Instant> {
        let deadline = since + limit;
        loop {
            let log = self.snapshot();
            let mut firsts: std::collections::HashMap<(usize, IpAddr), Instant> =
                std::collections::HashMap::new();
            for (t, o, k, s) in log {
                if t >= since && k == kind {
                    let e = firsts.entry((o, s)).or_insert(t);
                    *e = (*e).min(t);
                }
            }
            let mut last = since;
            let mut all = true;
            'pairs: for o in observers {
                for s in subjects {
                    match firsts.get(&(*o, *s)) {
                        Some(t) => last = last.max(*t),
                        None => {
                            all = false;
                            break 'pairs;
                        }
                    }
                }
            }
            if all {
                return Some(last);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count_since(&self, kind: Kind, since: Instant) -> usize {
        self.snapshot()
            .iter()
            .filter(|(t, _, k, _)| *t >= since && *k == kind)
            .count()
    }
}

struct Node {
    ip: IpAddr,
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

/// utime + stime of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of /proc/PID/stat: 12 and 13 after ')'.
    get(11) + get(12)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Bytes sent by a set of addresses to anyone but 127.0.0.1, counted by an iptables
/// chain that this benchmark adds to OUTPUT (and removes when dropped).
struct Traffic {
    chain: String,
}

fn iptables(args: &[&str]) -> Option<String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Traffic {
    /// `None` without iptables or the right to use it.
    fn start(name: &str, ips: &[IpAddr]) -> Option<Self> {
        let chain = format!("MB{}{name}", std::process::id());
        iptables(&["-N", &chain])?;
        let t = Self { chain };
        iptables(&["-I", "OUTPUT", "1", "-j", &t.chain])?;
        for ip in ips {
            let ip = ip.to_string();
            iptables(&[
                "-A",
                &t.chain,
                "-s",
                &ip,
                "!",
                "-d",
                "127.0.0.1",
                "-j",
                "RETURN",
            ])?;
        }
        Some(t)
    }

    /// Bytes counted so far, over all addresses.
    fn bytes(&self) -> u64 {
        iptables(&["-L", &self.chain, "-n", "-v", "-x"])
            .unwrap_or_default()
            .lines()
            .skip(2)
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        let _ = iptables(&["-D", "OUTPUT", "-j", &self.chain]);
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}

/// Mean CPU (% of one core) and RSS (MiB) per process over `secs`, and bytes sent per
/// second per process when `traffic` counts them.
fn idle(pids: &[u32], secs: u64, traffic: Option<&Traffic>) -> (f64, f64, f64, Option<f64>) {
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let bytes_before = traffic.map(Traffic::bytes);
    std::thread::sleep(Duration::from_secs(secs));
    let bytes = traffic
        .zip(bytes_before)
        .map(|(t, b)| (t.bytes() - b) as f64 / secs as f64 / pids.len() as f64);
    let after: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let pct: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a - b) as f64 / (secs as f64 * 100.0) * 100.0)
        .collect();
    let mean = pct.iter().sum::<f64>() / pct.len() as f64;
    let max = pct.iter().cloned().fold(0.0, f64::max);
    let rss = pids.iter().map(|p| rss_kib(*p) as f64).sum::<f64>() / pids.len() as f64 / 1024.0;
    (mean, max, rss, bytes)
}

#[derive(Debug, Default)]
struct Numbers {
    /// Per run: from the last start until all up.
    formed: Vec<Duration>,
    /// Runs that failed, and why.
    failed: Vec<String>,
    /// During formation, per node: CPU (% of one core) and bytes sent per second.
    forming_cpu: f64,
    forming_bytes: Option<f64>,
    cpu_mean: f64,
    cpu_max: f64,
    rss_mib: f64,
    idle_bytes: Option<f64>,
    detect: Option<(Duration, Duration)>,
    kill_removed: Option<(Duration, Duration)>,
    leave_removed: Option<(Duration, Duration)>,
}

fn ips(subnet: (u8, u8), n: usize) -> Vec<IpAddr> {
    (1..=n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, subnet.0, subnet.1, i as u8)))
        .collect()
}

/// What follows formation, the same for both systems: idle CPU and RSS, a SIGKILL (time
/// to unreachable on all, and to removed when `removes_failed`), then a graceful stop
/// by `leave_signal` (time to removed on all).
fn measure_failures(
    out: &mut Numbers,
    nodes: &[Node],
    log: &Log,
    idle_secs: u64,
    traffic: Option<&Traffic>,
    leave_signal: &str,
    removes_failed: bool,
) {
    let n = nodes.len();
    std::thread::sleep(Duration::from_secs(3));
    let pids: Vec<u32> = nodes.iter().map(|x| x.child.id()).collect();
    (out.cpu_mean, out.cpu_max, out.rss_mib, out.idle_bytes) = idle(&pids, idle_secs, traffic);

    // SIGKILL one (not the first, which leads, nor the newest).
    let victim = n - 2;
    let killed_ip = nodes[victim].ip;
    let survivors: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
    let killed = Instant::now();
    signal(&nodes[victim].child, "-KILL");
    let limit = Duration::from_secs(90);
    out.detect = log.wait_all(&survivors, Kind::Unreachable, killed_ip, killed, limit);
    if removes_failed {
        out.kill_removed = log.wait_all(&survivors, Kind::Removed, killed_ip, killed, limit);
    }

    // A graceful stop of another.
    let leaver = n - 3;
    let leaving_ip = nodes[leaver].ip;
    let rest: Vec<usize> = survivors.iter().copied().filter(|i| *i != leaver).collect();
    let asked = Instant::now();
    signal(&nodes[leaver].child, leave_signal);
    out.leave_removed = log.wait_all(
        &rest,
        Kind::Removed,
        leaving_ip,
        asked,
        Duration::from_secs(30),
    );
}

// ---------------------------------------------------------------- muster

/// Config discovery of `all`, every one of them required.
fn muster_config(dir: &Path, all: &[IpAddr]) -> PathBuf {
    let endpoints: Vec<String> = all
        .iter()
        .map(|ip| format!("'{ip}:{MANAGEMENT_PORT}'"))
        .collect();
    let path = dir.join(format!("muster-{}-{}.yaml", all[0], all.len()));
    let n = all.len();
    std::fs::write(
        &path,
        format!(
            "cluster:\n  key-file: {}\nbootstrap:\n  service-name: bench\n  discovery-method: config\n  required-contact-point-nr: {n}\n  expected-contact-point-nr: {n}\ndiscovery:\n  config:\n    endpoints: [{}]\n",
            dir.join("cluster.key").display(),
            endpoints.join(", ")
        ),
    )
    .expect("config");
    path
}

fn start_muster(config: &Path, ip: IpAddr) -> Node {
    // `BENCH_LOGS=<folder>`: each agent's log (RUST_LOG=info) goes to <folder>/<ip>.log.
    let log = std::env::var_os("BENCH_LOGS").map(|d| {
        let d = PathBuf::from(d);
        std::fs::create_dir_all(&d).expect("BENCH_LOGS folder");
        std::fs::File::create(d.join(format!("{ip}.log"))).expect("agent log file")
    });
    let level = if log.is_some() { "info" } else { "warn" };
    let child = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .arg("--config")
        .arg(config)
        .env("POD_IP", ip.to_string())
        .env("RUST_LOG", level)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.map_or(Stdio::null(), Stdio::from))
        .spawn()
        .expect("start muster-agent");
    Node { ip, child }
}

/// `/cluster/members` of the agent at `ip`, with the management API's client (on a
/// runtime of its own: the benchmark's threads are plain threads).
fn members(ip: IpAddr) -> Option<ClusterMembers> {
    static CLIENT: OnceLock<(tokio::runtime::Runtime, ManagementClient)> = OnceLock::new();
    let (rt, client) = CLIENT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the client");
        (rt, ManagementClient::new(Duration::from_secs(2)))
    });
    rt.block_on(client.members(SocketAddr::new(ip, MANAGEMENT_PORT)))
        .ok()
}

fn all_up(ip: IpAddr, n: usize) -> bool {
    members(ip).is_some_and(|m| {
        m.members.len() == n
            && m.members.iter().all(|x| x.status == MemberStatus::Up)
            && m.unreachable.is_empty()
    })
}

/// Follows one agent's `/cluster/events` on a thread, recording into `log`.
fn follow_muster(ip: IpAddr, observer: usize, log: Log) {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(SocketAddr::new(ip, MANAGEMENT_PORT)) else {
            return;
        };
        if s.write_all(b"GET /cluster/events HTTP/1.0\r\n\r\n")
            .is_err()
        {
            return;
        }
        let mut event = String::new();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            if let Some(e) = line.strip_prefix("event:") {
                event = e.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                let kind = match event.as_str() {
                    "MemberUp" => Kind::Up,
                    "UnreachableMember" => Kind::Unreachable,
                    "MemberRemoved" => Kind::Removed,
                    _ => continue,
                };
                let data: serde_json::Value = serde_json::from_str(d.trim()).unwrap_or_default();
                let subject = data["member"]
                    .as_str()
                    .and_then(|m| m.rsplit_once('@'))
                    .and_then(|(_, a)| a.parse::<SocketAddr>().ok());
                if let Some(a) = subject {
                    log.push((Instant::now(), observer, kind, a.ip()));
                }
            }
        }
    });
}

/// CPU ticks of `pids` since they started, as % of one core per process over `secs`.
fn cpu_pct(pids: &[u32], secs: f64) -> f64 {
    let ticks: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
    ticks as f64 / 100.0 / secs.max(0.001) / pids.len() as f64 * 100.0
}

/// A formation: time from the last start, CPU (% of a core) and bytes sent per second
/// per node while forming, the running nodes, and their traffic counter.
type Formed = (Duration, f64, Option<f64>, Vec<Node>, Option<Traffic>);

/// One muster formation: N agents started together until all list N Up members and
/// nobody unreachable, then watched for `watch`. Returns the time from the last start,
/// CPU and bytes per node while forming, and the running agents.
fn form_muster(dir: &Path, subnet: (u8, u8), n: usize, watch: Duration) -> Result<Formed, String> {
    let all = ips(subnet, n);
    let config = muster_config(dir, &all);
    let traffic = Traffic::start(&format!("m{}x{}", subnet.0, subnet.1), &all);
    let mut nodes: Vec<Node> = all.iter().map(|ip| start_muster(&config, *ip)).collect();
    let started = Instant::now();
    let exited = |nodes: &mut [Node]| -> Result<(), String> {
        for (i, x) in nodes.iter_mut().enumerate() {
            if let Ok(Some(status)) = x.child.try_wait() {
                return Err(format!("agent {} ({}) exited: {status}", i + 1, x.ip));
            }
        }
        Ok(())
    };
    let mut done = vec![false; n];
    while done.iter().any(|d| !d) {
        exited(&mut nodes)?;
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!(
                "{} of {n} agents not all Up after 120 s",
                done.iter().filter(|d| !**d).count()
            ));
        }
        for (i, x) in nodes.iter().enumerate() {
            if !done[i] && all_up(x.ip, n) {
                done[i] = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    let pids: Vec<u32> = nodes.iter().map(|x| x.child.id()).collect();
    let cpu = cpu_pct(&pids, took.as_secs_f64());
    let bytes = traffic
        .as_ref()
        .map(|t| t.bytes() as f64 / took.as_secs_f64() / n as f64);
    // Still one cluster of N Up members, nobody downed, after `watch`.
    let until = Instant::now() + watch;
    while Instant::now() < until {
        exited(&mut nodes)?;
        std::thread::sleep(Duration::from_millis(500));
    }
    for (i, x) in nodes.iter().enumerate() {
        if !all_up(x.ip, n) {
            return Err(format!("agent {} ({}) no longer sees {n} Up", i + 1, x.ip));
        }
    }
    Ok((took, cpu, bytes, nodes, traffic))
}

fn run_muster(
    dir: &Path,
    size_index: u8,
    n: usize,
    runs: u8,
    watch: Duration,
    idle_secs: u64,
) -> Numbers {
    let mut out = Numbers::default();
    let mut last = None;
    for run in 0..runs {
        let subnet = (33 + run, 10 + size_index);
        // The previous run's agents stop first: idle, they would still take CPU from
        // this formation.
        last = None;
        let result = form_muster(dir, subnet, n, watch);
        eprintln!(
            "muster N = {n}, run {}: {}",
            run + 1,
            match &result {
                Ok((took, ..)) => format!("all Up after {:.2} s", took.as_secs_f64()),
                Err(e) => e.clone(),
            }
        );
        match result {
            Ok((took, cpu, bytes, nodes, traffic)) => {
                out.formed.push(took);
                out.forming_cpu = out.forming_cpu.max(cpu);
                out.forming_bytes = bytes.map(|b| out.forming_bytes.unwrap_or(0.0).max(b));
                last = Some((nodes, traffic));
            }
            Err(e) => out.failed.push(format!("run {}: {e}", run + 1)),
        }
    }
    // The last cluster that formed: idle costs, a crash and a graceful leave.
    if let Some((nodes, traffic)) = last {
        let log = Log::default();
        for (i, x) in nodes.iter().enumerate() {
            follow_muster(x.ip, i, log.clone());
        }
        std::thread::sleep(Duration::from_millis(500)); // the streams' snapshots
        measure_failures(
            &mut out,
            &nodes,
            &log,
            idle_secs,
            traffic.as_ref(),
            "-TERM",
            true,
        );
    }
    out
}

// ---------------------------------------------------------------- serf

fn start_serf(
    ip: IpAddr,
    join: Option<IpAddr>,
    observer: usize,
    log: Log,
    names: Arc<Vec<IpAddr>>,
) -> Node {
    let mut cmd = Command::new("serf");
    cmd.arg("agent")
        .arg(format!("-node=n{observer}"))
        .arg(format!("-bind={ip}:7946"))
        .arg(format!("-rpc-addr={ip}:7373"))
        .arg("-log-level=info");
    if let Some(j) = join {
        cmd.arg(format!("-join={j}:7946"));
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serf (apt-get install serf)");
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            let kind = if line.contains("EventMemberJoin: ") {
                Kind::Up
            } else if line.contains("EventMemberFailed: ") {
                Kind::Unreachable
            } else if line.contains("EventMemberLeave: ") || line.contains("EventMemberReap: ") {
                Kind::Removed
            } else {
                continue;
            };
            // "... serf: EventMemberJoin: n3 127.34.5.4"
            let subject = line
                .split_whitespace()
                .last()
                .and_then(|a| a.parse::<IpAddr>().ok());
            if let Some(ip) = subject.filter(|ip| names.contains(ip)) {
                log.push((Instant::now(), observer, kind, ip));
            }
        }
    });
    Node { ip, child }
}

/// Starts a Serf agent on each of `ips`: the first alone, the others (once the first
/// runs: a failed `-join` ends a Serf agent) joining it.
fn start_serf_cluster(ips: &[IpAddr], log: &Log, all: &Arc<Vec<IpAddr>>) -> Vec<Node> {
    let t0 = Instant::now();
    let first = start_serf(ips[0], None, 0, log.clone(), all.clone());
    log.wait_all(&[0], Kind::Up, ips[0], t0, Duration::from_secs(30))
        .expect("serf: the first agent did not start");
    let mut nodes = vec![first];
    for (i, ip) in ips.iter().enumerate().skip(1) {
        nodes.push(start_serf(*ip, Some(ips[0]), i, log.clone(), all.clone()));
    }
    nodes
}

fn run_serf(subnet: (u8, u8), n: usize, idle_secs: u64) -> Numbers {
    let all = Arc::new(ips(subnet, n));
    let log = Log::default();
    let traffic = Traffic::start(&format!("s{}x{}", subnet.0, subnet.1), &all);
    let t0 = Instant::now();
    let first = start_serf(all[0], None, 0, log.clone(), all.clone());
    log.wait_all(&[0], Kind::Up, all[0], t0, Duration::from_secs(30))
        .expect("serf: the first agent did not start");
    let mut nodes = vec![first];
    for (i, ip) in all.iter().enumerate().skip(1) {
        nodes.push(start_serf(*ip, Some(all[0]), i, log.clone(), all.clone()));
    }
    let started = Instant::now();
    let everyone: Vec<usize> = (0..n).collect();
    let mut out = Numbers::default();
    match log.all_saw(&everyone, Kind::Up, &all, t0, Duration::from_secs(120)) {
        Some(at) => {
            let took = at.saturating_duration_since(started);
            let secs = started.elapsed().as_secs_f64();
            let pids: Vec<u32> = nodes.iter().map(|x| x.child.id()).collect();
            out.forming_cpu = cpu_pct(&pids, secs);
            out.forming_bytes = traffic.as_ref().map(|t| t.bytes() as f64 / secs / n as f64);
            out.formed.push(took);
        }
        None => out
            .failed
            .push("not every agent saw all alive within 120 s".into()),
    }
    // Serf keeps failed members until its reconnect timeout (24 h): no removal to time.
    measure_failures(
        &mut out,
        &nodes,
        &log,
        idle_secs,
        traffic.as_ref(),
        "-INT",
        false,
    );
    out
}

// ---------------------------------------------------------------- report

fn span(d: Option<(Duration, Duration)>) -> String {
    d.map_or("n/a".into(), |(a, b)| {
        format!("{} – {} ms", a.as_millis(), b.as_millis())
    })
}

fn kib(b: Option<f64>) -> String {
    b.map_or("n/a".into(), |b| format!("{:.1} KiB/s", b / 1024.0))
}

fn row(name: &str, n: usize, x: &Numbers) {
    let mut formed = x.formed.clone();
    formed.sort();
    let formation = match (formed.get(formed.len() / 2), formed.last()) {
        (Some(p50), Some(max)) => format!(
            "{:.2} s / {:.2} s ({} of {})",
            p50.as_secs_f64(),
            max.as_secs_f64(),
            formed.len(),
            formed.len() + x.failed.len()
        ),
        _ => format!("failed ({} of {})", x.failed.len(), x.failed.len()),
    };
    println!(
        "| {name} | {n} | {formation} | {:.1} % | {} | {} | {} | {} | {:.2} % (max {:.2} %) | {} | {:.1} MiB |",
        x.forming_cpu,
        kib(x.forming_bytes),
        span(x.detect),
        span(x.kill_removed),
        span(x.leave_removed),
        x.cpu_mean,
        x.cpu_max,
        kib(x.idle_bytes),
        x.rss_mib,
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("serf_comparison: benchmark");
        return;
    }
    if Command::new("serf").arg("version").output().is_err() {
        eprintln!("serf is not installed: apt-get install serf (Debian), then run again");
        std::process::exit(2);
    }
    let sizes: Vec<usize> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "25,50,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|n| (4..=250).contains(n))
        .collect();
    let runs = env_or("BENCH_RUNS", 3u8).clamp(1, 20);
    let watch = Duration::from_secs(env_or("BENCH_WATCH_SECS", 30u64));
    let idle_secs = env_or("BENCH_IDLE_SECS", 20u64);
    let soak_secs = env_or("BENCH_SOAK_SECS", 0u64);
    let busy = env_or("BENCH_BUSY", 0u8) == 1;
    let serf = env_or("BENCH_SERF", 1u8) == 1;
    let _burners = busy.then(|| Burners::start(2));
    let dir = std::env::temp_dir().join(format!("muster-serf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    std::fs::write(dir.join("cluster.key"), KEY_HEX).expect("key");

    println!(
        "muster vs Serf {} — default settings, one process per node on loopback{}",
        serf_version(),
        if busy {
            ", both cores kept busy by burner threads"
        } else {
            ""
        }
    );
    println!(
        "(formation: all started together, last start → every node lists all as up, p50 / max over runs; muster runs also watched {} s for downings; detection: SIGKILL → first – last observer reports it unreachable/failed; removed: first – last observer; CPU in % of one core and bytes sent, per node)",
        watch.as_secs()
    );
    println!();
    println!(
        "| system | nodes | formation | CPU forming | sent forming | SIGKILL → unreachable on all | SIGKILL → removed on all | graceful stop → removed on all | idle CPU | sent idle | RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failures = Vec::new();
    for (i, n) in sizes.iter().copied().enumerate() {
        let m = run_muster(&dir, i as u8, n, runs, watch, idle_secs);
        row("muster", n, &m);
        failures.extend(m.failed.iter().map(|f| format!("muster N = {n}: {f}")));
        if serf {
            let s = run_serf((40, 10 + i as u8), n, idle_secs);
            row("serf", n, &s);
            failures.extend(s.failed.iter().map(|f| format!("serf N = {n}: {f}")));
        }
    }
    for f in &failures {
        println!("FAILED {f}");
    }

    if soak_secs > 0 {
        let n = sizes.iter().copied().max().unwrap_or(25);
        println!();
        println!(
            "soak: {n} muster agents and {n} Serf agents for {soak_secs} s, both cores kept busy by this process"
        );
        let (muster_nodes, muster_log) = soak_cluster_muster(&dir, n);
        let (serf_nodes, serf_log) = soak_cluster_serf(n);
        let burners = (!busy).then(|| Burners::start(2));
        let since = Instant::now();
        std::thread::sleep(Duration::from_secs(soak_secs));
        drop(burners);
        println!(
            "false positives (unreachable/failed reports while nobody failed): muster {}, serf {}",
            muster_log.count_since(Kind::Unreachable, since),
            serf_log.count_since(Kind::Unreachable, since),
        );
        let still = muster_nodes.iter().filter(|x| all_up(x.ip, n)).count();
        println!("muster agents still seeing {n} Up members afterwards: {still} of {n}");
        drop(serf_nodes);
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !failures.is_empty() {
        std::process::exit(1);
    }
}

fn serf_version() -> String {
    Command::new("serf")
        .arg("version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default()
}

fn soak_cluster_muster(dir: &Path, n: usize) -> (Vec<Node>, Log) {
    let all = ips((33, 200), n);
    let config = muster_config(dir, &all);
    let nodes: Vec<Node> = all.iter().map(|ip| start_muster(&config, *ip)).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !nodes.iter().all(|x| all_up(x.ip, n)) {
        assert!(
            Instant::now() < deadline,
            "muster soak cluster did not form"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = Log::default();
    for (i, x) in nodes.iter().enumerate() {
        follow_muster(x.ip, i, log.clone());
    }
    (nodes, log)
}

fn soak_cluster_serf(n: usize) -> (Vec<Node>, Log) {
    let all = Arc::new(ips((34, 200), n));
    let log = Log::default();
    let t0 = Instant::now();
    let nodes = start_serf_cluster(&all, &log, &all);
    let everyone: Vec<usize> = (0..n).collect();
    for ip in all.iter() {
        log.wait_all(&everyone, Kind::Up, *ip, t0, Duration::from_secs(120))
            .expect("serf soak cluster did not form");
    }
    (nodes, log)
}
