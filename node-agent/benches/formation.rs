//! `cargo bench -p node-agent --bench formation`: the numbers issue #2 asks for, with
//! real release-built `muster-agent` processes on loopback addresses.
//!
//! 1. Formation time of 3, 5 and 9 co-started agents, default settings and
//!    `required-contact-point-nr` = N: from the start of the last process until every
//!    agent reports all N members Up and the same leader (p50/p95/max over the runs).
//! 2. `/bootstrap/seed-nodes` throughput and latency: one agent, a load generator in
//!    this process with kept-alive connections (both share the machine's cores).
//! 3. Agent RSS at idle (VmRSS from /proc), after formation and after the load.
//!
//! Each is measured with TLS off and on (both ports, one CA and one certificate shared by
//! the agents, as the operator gives them), in the same run, one after the other.
//!
//! Environment: `BENCH_RUNS` (formation runs per size, default 20), `BENCH_SIZES`
//! (default `3,5,9`), `BENCH_LOAD_SECS` (default 5), `BENCH_CONNECTIONS` (default 16),
//! `BENCH_TLS` (`off`, `on` or `both`, default `both`), `BENCH_BUSY` (`1`: two threads
//! spin throughout, as on a node whose cores are already busy).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use node_agent::api::{ManagementClient, check};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

#[path = "../tests/support/certs.rs"]
mod certs;
mod common;
use common::{Burners, KEY_HEX, MANAGEMENT_PORT, env_or};

/// The name in the agents' certificate.
const TLS_NAME: &str = "bench.muster";

/// TLS for one run: the agents' files and what a client trusts.
struct BenchTls {
    yaml: String,
    client: Arc<rustls::ClientConfig>,
}

impl BenchTls {
    fn new(dir: &Path) -> Self {
        let ca = certs::TestCa::new("bench-ca");
        let paths = certs::TlsPaths::new(dir, "agents");
        paths.write(&ca.issue(TLS_NAME), &[&ca.pem()]);
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
            roots.add(c.expect("CA pem")).expect("CA");
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Self {
            yaml: paths.yaml(TLS_NAME),
            client: Arc::new(client),
        }
    }

    fn name() -> ServerName<'static> {
        ServerName::try_from(TLS_NAME).expect("name")
    }

    fn management_client(&self, timeout: Duration) -> ManagementClient {
        ManagementClient::new(timeout).with_tls((self.client.clone(), Self::name()))
    }
}

struct Agents {
    children: Vec<Child>,
    ips: Vec<IpAddr>,
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn workdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("muster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench folder");
    std::fs::write(dir.join("cluster.key"), KEY_HEX).expect("key file");
    dir
}

/// Starts `n` agents on 127.<a>.<b>.1..=n with default settings and required = n (and
/// TLS when given); returns them with the instant the last process was started.
fn start(dir: &Path, subnet: (u8, u8), n: u8, tls: Option<&BenchTls>) -> (Agents, Instant) {
    let ips: Vec<IpAddr> = (1..=n)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, subnet.0, subnet.1, i)))
        .collect();
    let endpoints: Vec<String> = ips
        .iter()
        .map(|ip| format!("'{ip}:{MANAGEMENT_PORT}'"))
        .collect();
    let config = dir.join(format!("agent-{}-{}.yaml", subnet.0, subnet.1));
    std::fs::write(
        &config,
        format!(
            "cluster:\n  key-file: {}\nbootstrap:\n  service-name: bench\n  discovery-method: config\n  required-contact-point-nr: {n}\n  expected-contact-point-nr: {n}\ndiscovery:\n  config:\n    endpoints: [{}]\n{}",
            dir.join("cluster.key").display(),
            endpoints.join(", "),
            tls.map_or("", |t| t.yaml.as_str()),
        ),
    )
    .expect("config");
    let mut children = Vec::new();
    let mut last = Instant::now();
    for ip in &ips {
        let child = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
            .arg("--config")
            .arg(&config)
            .env("POD_IP", ip.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start muster-agent");
        last = Instant::now();
        children.push(child);
    }
    (Agents { children, ips }, last)
}

/// Polls every agent until they are one cluster of all of them ([`check::one_cluster_of`]).
async fn wait_formed(client: &ManagementClient, agents: &Agents, deadline: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < deadline {
        let mut views = Vec::new();
        for ip in &agents.ips {
            match client.members(SocketAddr::new(*ip, MANAGEMENT_PORT)).await {
                Ok(m) => views.push(m),
                Err(_) => break,
            }
        }
        if views.len() == agents.ips.len() && check::one_cluster_of(&views, views.len()).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// User + system CPU time of a process so far (from /proc, in clock ticks of 10 ms).
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The TLS modes to measure (`BENCH_TLS`).
fn tls_modes() -> Vec<bool> {
    match std::env::var("BENCH_TLS").as_deref() {
        Ok("off") => vec![false],
        Ok("on") => vec![true],
        _ => vec![false, true],
    }
}

fn on_off(tls: bool) -> &'static str {
    if tls { "on" } else { "off" }
}

async fn formation(dir: &Path, plain: &ManagementClient, tls: &BenchTls) {
    let runs: u8 = env_or("BENCH_RUNS", 20);
    let sizes: Vec<u8> = std::env::var("BENCH_SIZES")
        .unwrap_or_else(|_| "3,5,9".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!("formation: default settings, required-contact-point-nr = N, {runs} runs per size");
    println!(
        "  (time from starting the last agent until all N report N members Up and one leader)"
    );
    println!(
        "{:>6} {:>4} {:>5} {:>9} {:>9} {:>9}",
        "agents", "tls", "runs", "p50", "p95", "max"
    );
    let secure = tls.management_client(Duration::from_millis(500));
    for (s, n) in sizes.iter().enumerate() {
        for with_tls in tls_modes() {
            let mut times = Vec::new();
            for run in 0..runs {
                // A fresh subnet per run and mode: no port of an earlier run is in the way.
                let subnet = (31 + s as u8, run * 2 + u8::from(with_tls));
                let (agents, last) = start(dir, subnet, *n, with_tls.then_some(tls));
                let client = if with_tls { &secure } else { plain };
                if wait_formed(client, &agents, Duration::from_secs(60)).await {
                    times.push(last.elapsed());
                } else {
                    eprintln!(
                        "  {n} agents, TLS {}, run {run}: did not form within 60 s",
                        on_off(with_tls)
                    );
                }
            }
            times.sort();
            if times.is_empty() {
                continue;
            }
            println!(
                "{n:>6} {:>4} {:>5} {:>7.0}ms {:>7.0}ms {:>7.0}ms",
                on_off(with_tls),
                times.len(),
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.95)),
                ms(times[times.len() - 1])
            );
        }
    }
}

/// A connection of the load generator: plain TCP or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One kept-alive connection sending requests back to back until `until`.
async fn load_connection(
    addr: SocketAddr,
    until: Instant,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Vec<Duration>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let stream: Box<dyn Io> = match tls {
        None => Box::new(stream),
        Some(config) => Box::new(
            tokio_rustls::TlsConnector::from(config)
                .connect(BenchTls::name(), stream)
                .await
                .map_err(|e| e.to_string())?,
        ),
    };
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(1 << 16);
    while Instant::now() < until {
        let req = http::Request::get("/bootstrap/seed-nodes")
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let t = Instant::now();
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        if resp.status() != 200 {
            return Err(format!("answered {}", resp.status()));
        }
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

async fn throughput(dir: &Path, plain: &ManagementClient, tls: &BenchTls, with_tls: bool) {
    let secs: u64 = env_or("BENCH_LOAD_SECS", 5);
    let connections: usize = env_or("BENCH_CONNECTIONS", 16);
    let (agents, _) = start(
        dir,
        (30, 1 + u8::from(with_tls)),
        3,
        with_tls.then_some(tls),
    );
    let secure = tls.management_client(Duration::from_millis(500));
    let client = if with_tls { &secure } else { plain };
    let load_tls = with_tls.then(|| tls.client.clone());
    if !wait_formed(client, &agents, Duration::from_secs(60)).await {
        eprintln!("throughput: the 3 agents did not form; skipped");
        return;
    }
    // Idle: formed, then left alone for a few gossip rounds.
    let idle_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < idle_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle: Vec<u64> = agents
        .children
        .iter()
        .filter_map(|c| rss_kib(c.id()))
        .collect();
    let target = SocketAddr::new(agents.ips[0], MANAGEMENT_PORT);
    let loaded_pid = agents.children[0].id();
    let cpu_before = cpu_time(loaded_pid);
    // The load generator runs on one thread of its own, so that the agent (2 worker
    // threads) gets most of the machine, as it would with the clients elsewhere.
    let (results, elapsed) = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("load generator runtime");
        rt.block_on(async move {
            let warmup = Instant::now() + Duration::from_millis(500);
            let _ = futures_join(target, 4, warmup, load_tls.clone()).await;
            let until = Instant::now() + Duration::from_secs(secs);
            let started = Instant::now();
            let results = futures_join(target, connections, until, load_tls).await;
            (results, started.elapsed())
        })
    })
    .join()
    .expect("load generator thread");
    let agent_cpu = cpu_time(loaded_pid)
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let mut all: Vec<Duration> = Vec::new();
    let mut errors = 0;
    for r in results {
        match r {
            Ok(l) => all.extend(l),
            Err(e) => {
                errors += 1;
                eprintln!("  connection failed: {e}");
            }
        }
    }
    all.sort();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "\nGET /bootstrap/seed-nodes, TLS {}: 1 agent of a 3-member cluster, {connections} kept-alive connections from one client thread, {secs} s, {cores} cores shared by agents and client",
        on_off(with_tls)
    );
    if all.is_empty() {
        println!("  no request completed ({errors} connections failed)");
        return;
    }
    println!(
        "  {} requests, {:.0} req/s, latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {errors} failed connections",
        all.len(),
        all.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        ms(all[all.len() - 1])
    );
    if let Some(cpu) = agent_cpu {
        // Includes the 0.5 s warm-up; an upper bound of the agent's cost per request.
        println!(
            "  the agent used {:.2} cores while serving ({:.1} µs of CPU per request)",
            cpu.as_secs_f64() / (elapsed.as_secs_f64() + 0.5),
            cpu.as_secs_f64() * 1e6 / all.len() as f64
        );
    }
    let loaded = rss_kib(agents.children[0].id()).unwrap_or(0);
    println!(
        "\nRSS: idle agents (3-member cluster) {} KiB; the loaded agent after the run {loaded} KiB",
        idle.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

async fn futures_join(
    target: SocketAddr,
    connections: usize,
    until: Instant,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Vec<Result<Vec<Duration>, String>> {
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(load_connection(target, until, tls.clone())))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; filters are not supported.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let busy = env_or("BENCH_BUSY", 0u8) == 1;
    if busy {
        println!("both cores busy: two threads spin throughout");
    }
    let _burners = busy.then(|| Burners::start(2));
    rt.block_on(async {
        let dir = workdir();
        let client = ManagementClient::new(Duration::from_millis(500));
        let tls = BenchTls::new(&dir);
        formation(&dir, &client, &tls).await;
        for with_tls in tls_modes() {
            throughput(&dir, &client, &tls, with_tls).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}
