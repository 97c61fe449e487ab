//! `muster-agent local-cluster` stops every agent it started when it is told to stop
//! (SIGTERM or SIGINT), both while it still waits for a cluster and after one formed;
//! none is left running as an orphan (issue 16).

mod support;

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use node_agent::api::check;
use support::*;

/// A `local-cluster` process; a test that fails leaves none of its processes behind.
struct LocalCluster(Child);

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let pid = self.0.id();
        for p in agents_of(pid).into_iter().chain([pid]) {
            let _ = Command::new("kill")
                .args(["-KILL", &p.to_string()])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.0.wait();
    }
}

/// Starts `local-cluster` on `subnet` with `args` after `--nodes 3`.
fn local_cluster(subnet: (u8, u8), args: &[&str]) -> LocalCluster {
    let child = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .args(["local-cluster", "--nodes", "3", "--timeout", "60"])
        .args(["--subnet", &format!("127.{}.{}", subnet.0, subnet.1)])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start local-cluster");
    LocalCluster(child)
}

/// Reads `lc`'s output until a line contains `text` (the reader thread keeps draining
/// it afterwards, so `local-cluster` never blocks on a full pipe).
async fn wait_for_line(lc: &mut LocalCluster, text: &'static str, within: Duration) {
    use std::io::BufRead;
    let out = lc.0.stdout.take().expect("stdout is piped");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains(text)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        }
    });
    tokio::time::timeout(within, rx)
        .await
        .unwrap_or_else(|_| panic!("no line with {text:?} within {within:?}"))
        .unwrap_or_else(|_| panic!("local-cluster ended before printing {text:?}"));
}

/// Processes whose command line names `local-cluster`'s folder for `pid`'s agents.
fn agents_of(pid: u32) -> Vec<u32> {
    let folder = format!("muster-local-{pid}/");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&folder))
        })
        .collect()
}

async fn all_alive(ips: &[IpAddr]) -> Result<(), String> {
    for ip in ips {
        match client().get(management(*ip), "/alive").await {
            Ok((200, _)) => {}
            other => return Err(format!("{ip}: {other:?}")),
        }
    }
    Ok(())
}

/// SIGTERM to `lc`; then it must exit with 128 + 15 and leave no agent behind.
async fn terminate_and_check(mut lc: LocalCluster, ips: &[IpAddr]) {
    let pid = lc.0.id();
    assert_eq!(agents_of(pid).len(), 3, "three agents run");
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = eventually("local-cluster exits", Duration::from_secs(20), || {
        let r =
            lc.0.try_wait()
                .map_err(|e| e.to_string())
                .and_then(|s| s.ok_or_else(|| "running".to_owned()));
        async move { r }
    })
    .await;
    assert_eq!(status.code(), Some(143), "exit status after SIGTERM");
    // Stopped before it exited: nothing is left to wait for.
    assert_eq!(agents_of(pid), Vec::<u32>::new(), "agents left running");
    for ip in ips {
        assert!(
            client().get(management(*ip), "/alive").await.is_err(),
            "{ip} still answers"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_a_cluster_stops_every_agent() {
    let subnet = (23, 41);
    // Four required of three: they never form, local-cluster keeps watching.
    let lc = local_cluster(subnet, &["--required", "4"]);
    let ips: Vec<IpAddr> = (1..=3).map(|i| ip(subnet, i)).collect();
    eventually("every agent answers", Duration::from_secs(30), || {
        all_alive(&ips)
    })
    .await;
    terminate_and_check(lc, &ips).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_the_cluster_formed_stops_every_agent() {
    let subnet = (23, 42);
    let mut lc = local_cluster(subnet, &[]);
    let ips: Vec<IpAddr> = (1..=3).map(|i| ip(subnet, i)).collect();
    // local-cluster's own watcher has seen the cluster: the signal comes after formation.
    wait_for_line(&mut lc, "formed ONE cluster", Duration::from_secs(30)).await;
    eventually("one cluster of 3", Duration::from_secs(30), || async {
        let mut views = Vec::new();
        for ip in &ips {
            views.push(
                client()
                    .members(management(*ip))
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        check::one_cluster_of(&views, 3)
    })
    .await;
    terminate_and_check(lc, &ips).await;
}
