//! Floods without credentials against one real agent on loopback (findings 15.6, 15.7
//! and 15.9): connections that hold the management port's slots, event subscribers
//! that never read, silent connections to the cluster port, and large unsigned frames.
//! During each, `/alive` must keep answering, new peers must be greeted, and memory
//! must stay bounded. Each flood is bounded in count and time and comes from test
//! addresses on 127.0.0.0/8. Prints, per attack, the agent's peak RSS and the worst
//! `/alive` latency (`cargo test -p node-agent --test floods -- --nocapture`).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use node_agent::transport::frame::{GREETING_LEN, HEADER_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use support::*;

/// The agent's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
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
/// so the test stays far below a default limit of 1,024 open files.
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

/// `GET /alive` from the test's own address: its latency, or why it failed. A kubelet
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

/// While a flood is held: `/alive` five times (each must answer) and the peak RSS.
async fn measure(agent: &AgentProcess, what: &str, rows: &mut Vec<String>) {
    let mut worst = Duration::ZERO;
    let mut peak = rss_kib(agent.pid());
    // Samples spread over half a second of the flood.
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..5 {
        pace.tick().await;
        let t = alive(agent.management())
            .await
            .unwrap_or_else(|e| panic!("{what}: the agent must keep answering /alive: {e}"));
        worst = worst.max(t);
        peak = peak.max(rss_kib(agent.pid()));
    }
    rows.push(format!(
        "{what:<58} {:>8.1} {:>10.1}",
        peak as f64 / 1024.0,
        worst.as_secs_f64() * 1000.0
    ));
    assert!(
        peak < 64 * 1024,
        "{what}: the agent's RSS reached {peak} KiB, above the 64 MiB the operator gives it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_without_credentials_do_not_knock_the_agent_over() {
    let subnet = (23, 20);
    let work = Workdir::new("floods");
    let config = config_discovery(&work, subnet, 1);
    let mut agent = AgentProcess::start(&work, &config, ip(subnet, 1), "agent");
    wait_for_one_cluster(std::slice::from_ref(&agent), 1).await;
    let management = agent.management();
    let cluster = SocketAddr::new(ip(subnet, 1), CLUSTER_PORT);
    let mut rows = vec![format!(
        "{:<58} {:>8} {:>10}",
        "attack", "RSS MiB", "/alive ms"
    )];
    measure(&agent, "none", &mut rows).await;

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
    measure(
        &agent,
        "1,030 PUTs with Content-Length: 100 and no body",
        &mut rows,
    )
    .await;
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
    measure(
        &agent,
        "1,030 /cluster/events subscribers that never read",
        &mut rows,
    )
    .await;
    drop(held);

    // 15.9: silent connections to the cluster port, then twelve new peers.
    let mut held = Vec::new();
    for _ in 0..1400 {
        if let Some(s) = connect_from(ip(subnet, 70), cluster).await {
            hold(&mut held, s);
        }
    }
    let mut worst_greeting = Duration::ZERO;
    for p in 0..12u8 {
        let started = Instant::now();
        let mut s = connect_from(ip(subnet, 80 + p), cluster)
            .await
            .expect("a new peer connects");
        let mut g = [0u8; GREETING_LEN];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut g))
            .await
            .unwrap_or_else(|_| panic!("new peer {p} got no greeting within 2 s"))
            .expect("greeting");
        worst_greeting = worst_greeting.max(started.elapsed());
    }
    measure(
        &agent,
        "1,400 silent connections to the cluster port",
        &mut rows,
    )
    .await;
    rows.push(format!(
        "{:<58} {:>8} {:>10.1}",
        "  (worst greeting of 12 new peers during it, ms)",
        "",
        worst_greeting.as_secs_f64() * 1000.0
    ));
    drop(held);

    // 15.7: large frames without a valid signature, from 32 addresses.
    for (size, label) in [
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
        let measuring = measure(&agent, label, &mut rows);
        let sending = async {
            while let Some(r) = senders.join_next().await {
                held.extend(r.ok().flatten());
            }
        };
        tokio::join!(measuring, sending);
        drop(held);
    }

    println!("floods against one agent (debug build), loopback:");
    for r in &rows {
        println!("{r}");
    }
    assert_eq!(agent.exited(), None, "the agent keeps running");
    wait_for_one_cluster(std::slice::from_ref(&agent), 1).await;
}
