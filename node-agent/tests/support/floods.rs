//! Floods without credentials against one running agent (findings 15.6, 15.7 and
//! 15.9), shared by the test `floods` (debug build, bounds asserted) and the benchmark
//! `attacks` (release build, numbers printed): connections that hold the management
//! port's slots, event subscribers that never read, silent connections to the cluster
//! port, and large unsigned frames. Each flood is bounded in count and time and comes
//! from test addresses on 127.0.0.0/8; while it is held, `/alive` is asked `samples`
//! times and the agent's RSS read.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use node_agent::transport::frame::{GREETING_LEN, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::{AgentProcess, CLUSTER_PORT, ip};

/// What one attack did to the agent.
#[derive(Debug, Clone)]
pub struct Row {
    pub attack: &'static str,
    /// Peak resident memory while it was held.
    pub peak_kib: u64,
    /// The slowest `/alive`; `Err` when one did not answer.
    pub worst_alive: Result<Duration, String>,
    /// The slowest greeting of a new peer during the attack, where that was measured.
    pub worst_greeting: Option<Result<Duration, String>>,
}

/// The agent's resident memory, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Keeps `s` open, and from time to time lets go of connections the agent has closed,
/// so the attacker stays far below a default limit of 1,024 open files.
fn hold(held: &mut Vec<TcpStream>, s: TcpStream) {
    held.push(s);
    if held.len().is_multiple_of(256) {
        held.retain(|s| {
            let mut buf = [0u8; 64];
            loop {
                match s.try_read(&mut buf) {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
                    Err(_) => return false,
                }
            }
        });
    }
}

async fn connect_from(source: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let s = TcpSocket::new_v4().ok()?;
    s.bind(SocketAddr::new(source, 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(2), s.connect(to))
        .await
        .ok()?
        .ok()
}

/// `GET /alive` from the caller's own address: its latency, or why it failed. A kubelet
/// gives up after its probe timeout (1 s by default); this waits 5 s.
async fn alive(addr: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let c = node_agent::api::ManagementClient::new(Duration::from_secs(5));
    match c.get(addr, "/alive").await {
        Ok((200, _)) => Ok(started.elapsed()),
        Ok((code, _)) => Err(format!("/alive answered {code}")),
        Err(e) => Err(format!("/alive: {e}")),
    }
}

/// While a flood is held: `/alive` `samples` times, 100 ms apart, and the peak RSS.
async fn measure(agent: &AgentProcess, attack: &'static str, samples: u32) -> Row {
    let mut worst = Ok(Duration::ZERO);
    let mut peak = rss_kib(agent.pid());
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..samples {
        pace.tick().await;
        let t = alive(agent.management()).await;
        worst = match (worst, t) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            (Ok(w), Ok(t)) => Ok(w.max(t)),
        };
        peak = peak.max(rss_kib(agent.pid()));
    }
    Row {
        attack,
        peak_kib: peak,
        worst_alive: worst,
        worst_greeting: None,
    }
}

/// A new peer's wait for the cluster port's greeting (at most 2 s).
async fn greeting(source: IpAddr, cluster: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut s = connect_from(source, cluster)
        .await
        .ok_or("a new peer cannot connect")?;
    let mut g = [0u8; GREETING_LEN];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut g))
        .await
        .map_err(|_| "no greeting within 2 s".to_owned())?
        .map_err(|e| format!("greeting: {e}"))?;
    Ok(started.elapsed())
}

/// Every attack in turn against `agent` (on `subnet`, attackers from .50 up); one row
/// each, the first with no attack at all.
pub async fn run_all(agent: &AgentProcess, subnet: (u8, u8), samples: u32) -> Vec<Row> {
    let management = agent.management();
    let cluster = SocketAddr::new(management.ip(), CLUSTER_PORT);
    let mut rows = vec![measure(agent, "none", samples).await];

    // 15.6: PUTs that announce a body and never send it, from one address.
    let mut held = Vec::new();
    for _ in 0..1030 {
        if let Some(mut s) = connect_from(ip(subnet, 50), management).await {
            let _ = s
                .write_all(
                    b"PUT /cluster/members/x HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n",
                )
                .await;
            hold(&mut held, s);
        }
    }
    rows.push(
        measure(
            agent,
            "1,030 PUTs with Content-Length: 100 and no body",
            samples,
        )
        .await,
    );
    drop(held);

    // 15.6: /cluster/events subscribers that never read, from four addresses.
    let mut held = Vec::new();
    for i in 0..1030u32 {
        let source = ip(subnet, 60 + (i % 4) as u8);
        if let Some(mut s) = connect_from(source, management).await {
            let _ = s
                .write_all(b"GET /cluster/events HTTP/1.1\r\nhost: a\r\n\r\n")
                .await;
            hold(&mut held, s);
        }
    }
    rows.push(
        measure(
            agent,
            "1,030 /cluster/events subscribers that never read",
            samples,
        )
        .await,
    );
    drop(held);

    // 15.9: silent connections to the cluster port, then twelve new peers.
    let mut held = Vec::new();
    for _ in 0..1400 {
        if let Some(s) = connect_from(ip(subnet, 70), cluster).await {
            hold(&mut held, s);
        }
    }
    let mut worst_greeting = Ok(Duration::ZERO);
    for p in 0..12u8 {
        let g = greeting(ip(subnet, 80 + p), cluster).await;
        worst_greeting = match (worst_greeting, g) {
            (Err(e), _) | (Ok(_), Err(e)) => Err(format!("new peer {p}: {e}")),
            (Ok(w), Ok(t)) => Ok(w.max(t)),
        };
    }
    let mut row = measure(
        agent,
        "1,400 silent connections to the cluster port",
        samples,
    )
    .await;
    row.worst_greeting = Some(worst_greeting);
    rows.push(row);
    drop(held);

    // 15.7: large frames without a valid signature, from 32 addresses.
    for (size, attack) in [
        (
            4 << 20,
            "250 connections each sending an unsigned 4 MiB frame",
        ),
        (
            1 << 20,
            "250 connections each sending an unsigned 1 MiB frame",
        ),
    ] {
        let payload = Arc::new(vec![b'x'; size]);
        let mut senders = tokio::task::JoinSet::new();
        for i in 0..250u32 {
            let source = ip(subnet, 100 + (i % 32) as u8);
            let payload = payload.clone();
            senders.spawn(async move {
                let mut s = connect_from(source, cluster).await?;
                let mut g = [0u8; GREETING_LEN];
                tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut g))
                    .await
                    .ok()?
                    .ok()?;
                let mut header = [0u8; HEADER_LEN];
                header[..4].copy_from_slice(&(payload.len() as u32).to_be_bytes());
                let _ = s.write_all(&header).await;
                let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&payload)).await;
                Some(s)
            });
        }
        let mut held = Vec::new();
        let measuring = measure(agent, attack, samples);
        let sending = async {
            while let Some(r) = senders.join_next().await {
                held.extend(r.ok().flatten());
            }
        };
        let (row, ()) = tokio::join!(measuring, sending);
        rows.push(row);
        drop(held);
    }
    rows
}

/// The rows as a table: peak RSS, worst `/alive`, and where they miss `targets` (RSS,
/// `/alive`), a mark.
pub fn table(rows: &[Row], targets: (u64, Duration)) -> String {
    let mut out = format!("{:<58} {:>8} {:>10}\n", "attack", "RSS MiB", "/alive ms");
    let ms = |d: &Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    for r in rows {
        let alive = match &r.worst_alive {
            Ok(d) if *d >= targets.1 => format!("{} !", ms(d)),
            Ok(d) => ms(d),
            Err(e) => format!("FAILED: {e}"),
        };
        let rss = r.peak_kib as f64 / 1024.0;
        let mark = if r.peak_kib >= targets.0 { " !" } else { "" };
        out.push_str(&format!(
            "{:<58} {:>8} {:>10}\n",
            r.attack,
            format!("{rss:.1}{mark}"),
            alive
        ));
        if let Some(g) = &r.worst_greeting {
            let g = match g {
                Ok(d) => ms(d),
                Err(e) => format!("FAILED: {e}"),
            };
            out.push_str(&format!(
                "{:<58} {:>8} {:>10}\n",
                "  (worst greeting of 12 new peers during it, ms)", "", g
            ));
        }
    }
    out
}
