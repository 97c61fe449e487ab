//! `GET /cluster/events` from a real agent: the current state first, then every change
//! in order with increasing ids; a client that reconnects with `Last-Event-ID` gets
//! exactly what it missed, and an unknown resume point gets a `Resync` and the state.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: String,
}

/// An open event stream (HTTP/1.0, so the body is the raw stream).
struct Stream {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Stream {
    async fn open(addr: std::net::SocketAddr, last_event_id: Option<u64>) -> Self {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("GET /cluster/events HTTP/1.0\r\n{resume}\r\n").as_bytes())
            .await
            .expect("send");
        let mut lines = BufReader::new(s).lines();
        let status = lines
            .next_line()
            .await
            .expect("read")
            .expect("a status line");
        assert!(status.contains(" 200 "), "{status}");
        while let Some(l) = lines.next_line().await.expect("read") {
            if l.is_empty() {
                break;
            }
        }
        Self { lines }
    }

    /// The next event (keep-alive comments skipped), within 20 s.
    async fn next(&mut self) -> Sse {
        let read = async {
            let mut e = Sse {
                id: None,
                event: String::new(),
                data: String::new(),
            };
            while let Some(l) = self.lines.next_line().await.expect("read") {
                if l.is_empty() {
                    if !e.event.is_empty() {
                        return e;
                    }
                    continue;
                }
                if let Some(v) = l.strip_prefix("id:") {
                    e.id = v.trim().parse().ok();
                } else if let Some(v) = l.strip_prefix("event:") {
                    e.event = v.trim().to_owned();
                } else if let Some(v) = l.strip_prefix("data:") {
                    e.data.push_str(v.trim());
                }
            }
            panic!("the stream ended");
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("an event within 20 s")
    }

    /// Events until one named `event` about `member` arrives; returns all of them.
    async fn until(&mut self, event: &str, member: &str) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let e = self.next().await;
            let done = e.event == event && e.data.contains(member);
            seen.push(e);
            if done {
                return seen;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tell_the_state_then_every_change_and_resume_without_loss() {
    let work = Workdir::new("events");
    let subnet = (23, 6);
    let config = config_discovery(&work, subnet, 4);
    let mut agents = start_agents(&work, &config, subnet, 4);
    wait_for_one_cluster(&agents, 4).await;
    let watcher = agents[0].management();

    let mut stream = Stream::open(watcher, None).await;
    let mut snapshot = Vec::new();
    loop {
        let e = stream.next().await;
        let last = e.event == "LeaderChanged";
        snapshot.push(e);
        if last {
            break;
        }
    }
    let ups = snapshot.iter().filter(|e| e.event == "MemberUp").count();
    assert_eq!(ups, 4, "{snapshot:?}");
    let snapshot_id = snapshot[0].id.expect("ids");
    assert!(
        snapshot.iter().all(|e| e.id == Some(snapshot_id)),
        "one id for the snapshot"
    );

    // A member leaves: Left, Exited, Removed, in that order, with increasing ids.
    let leaving = agents.remove(3);
    let member = format!("{}:{CLUSTER_PORT}", leaving.ip);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &leaving.pid().to_string()])
        .status();
    let seen = stream.until("MemberRemoved", &member).await;
    let about: Vec<&str> = seen
        .iter()
        .filter(|e| e.data.contains(&member))
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(
        about,
        ["MemberLeft", "MemberExited", "MemberRemoved"],
        "{seen:?}"
    );
    let ids: Vec<u64> = seen.iter().map(|e| e.id.expect("id")).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive ids: {ids:?}"
    );
    assert!(ids[0] > snapshot_id);
    drop(stream);

    // Reconnecting where the snapshot ended replays exactly the same changes.
    let mut again = Stream::open(watcher, Some(snapshot_id)).await;
    let replay = again.until("MemberRemoved", &member).await;
    assert_eq!(replay, seen, "resumed without loss or duplicates");
    drop(again);

    // A resume point this agent never issued: Resync, then the current state.
    let mut lost = Stream::open(watcher, Some(1_000_000)).await;
    assert_eq!(lost.next().await.event, "Resync");
    let first = lost.next().await;
    assert_eq!(first.event, "MemberJoined", "{first:?}");
    drop(leaving);
}
