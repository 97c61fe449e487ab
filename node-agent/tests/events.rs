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
    /// `UID-SEQ`: the agent incarnation and the event's sequence number.
    id: Option<String>,
    event: String,
    data: String,
}

impl Sse {
    /// The sequence number in the id (`UID-SEQ`).
    fn seq(&self) -> u64 {
        let id = self.id.as_deref().expect("an id");
        let (_, seq) = id.split_once('-').expect("UID-SEQ");
        seq.parse().expect("a number")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }
}

/// An open event stream (HTTP/1.0, so the body is the raw stream).
struct Stream {
    lines: tokio::io::Lines<BufReader<TcpStream>>,
}

impl Stream {
    async fn open(addr: std::net::SocketAddr, last_event_id: Option<&str>) -> Self {
        Self::open_at(addr, "/cluster/events", last_event_id).await
    }

    /// A stream of `path` (`/cluster/events`, `/cluster/domain-events?...`).
    async fn open_at(addr: std::net::SocketAddr, path: &str, last_event_id: Option<&str>) -> Self {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("GET {path} HTTP/1.0\r\n{resume}\r\n").as_bytes())
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
                    e.id = Some(v.trim().to_owned());
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

    /// The snapshot a new stream starts with (it ends with `LeaderChanged`).
    async fn snapshot(&mut self) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let e = self.next().await;
            let last = e.event == "LeaderChanged";
            seen.push(e);
            if last {
                return seen;
            }
        }
    }

    /// Whether the stream ends (the server closes it) within 10 s with no event more.
    async fn ended(&mut self) -> bool {
        let rest = async {
            while let Some(l) = self.lines.next_line().await.ok()? {
                if l.starts_with("event:") {
                    return Some(false);
                }
            }
            Some(true)
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(10), rest).await,
            Ok(Some(true))
        )
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
    let snapshot = stream.snapshot().await;
    let ups = snapshot.iter().filter(|e| e.event == "MemberUp").count();
    assert_eq!(ups, 4, "{snapshot:?}");
    // Only the snapshot's last event is a resume point: a client cut off inside it
    // resumes from its earlier id (or none) and gets the snapshot again.
    let last = snapshot.last().expect("a snapshot");
    let snapshot_id = last
        .id
        .clone()
        .expect("the snapshot's last event has an id");
    assert!(
        snapshot[..snapshot.len() - 1]
            .iter()
            .all(|e| e.id.is_none()),
        "ids inside the snapshot: {snapshot:?}"
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
    let ids: Vec<u64> = seen.iter().map(Sse::seq).collect();
    assert!(
        ids.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive ids: {ids:?}"
    );
    assert!(ids[0] > last.seq());
    drop(stream);

    // Reconnecting where the snapshot ended replays exactly the same changes.
    let mut again = Stream::open(watcher, Some(&snapshot_id)).await;
    let replay = again.until("MemberRemoved", &member).await;
    assert_eq!(replay, seen, "resumed without loss or duplicates");
    drop(again);

    // A resume point this agent never issued (its own uid with an unknown number, or
    // another agent's id that it could mistake for one of its own): Resync, then the
    // current state.
    let (uid, _) = snapshot_id.split_once('-').expect("UID-SEQ");
    let elsewhere = Stream::open(agents[1].management(), None)
        .await
        .snapshot()
        .await;
    let elsewhere = elsewhere.last().and_then(|e| e.id.clone()).expect("an id");
    for foreign in [format!("{uid}-1000000"), elsewhere] {
        let mut lost = Stream::open(watcher, Some(&foreign)).await;
        assert_eq!(lost.next().await.event, "Resync", "{foreign}");
        let first = lost.next().await;
        assert_eq!(first.event, "MemberJoined", "{first:?}");
    }
    drop(leaving);
}

/// The events about one member address, in the order they came: (event, uid).
fn history_of(events: &[Sse], member: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.event != "LeaderChanged")
        .filter_map(|e| {
            let j = e.json();
            let about = j["member"].as_str().unwrap_or_default();
            about.ends_with(&format!("@{member}")).then(|| {
                (
                    e.event.clone(),
                    j["uid"].as_str().unwrap_or_default().to_owned(),
                )
            })
        })
        .collect()
}

/// Restarts agent `i` as Kubernetes restarts a pod: SIGTERM (it leaves and exits 0), then
/// a new process on the same address, which must join the cluster, never form one.
async fn restart(
    work: &Workdir,
    config: &std::path::Path,
    agents: &mut Vec<AgentProcess>,
    i: usize,
) {
    let mut old = agents.remove(i);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &old.pid().to_string()])
        .status();
    let status = old.wait_for_exit("the restarted agent leaves").await;
    assert_eq!(status.code(), Some(0), "{}", old.log());
    let again = AgentProcess::start(work, config, old.ip, &format!("{}-again", old.name));
    agents.insert(i, again);
    wait_for_one_cluster(agents, 5).await;
    assert!(
        agents[i].log().contains("joining cluster"),
        "the new incarnation joins, it never forms:\n{}",
        agents[i].log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_one_cluster_and_the_event_history_complete() {
    let work = Workdir::new("rolling");
    let subnet = (23, 9);
    let config = config_discovery(&work, subnet, 5);
    let mut agents = start_agents(&work, &config, subnet, 5);
    let before = wait_for_one_cluster(&agents, 5).await;
    let uid_of = |views: &[node_agent::api::ClusterMembers], member: &str| {
        views[0]
            .members
            .iter()
            .find(|m| m.node.to_string().ends_with(member))
            .map(|m| m.node_uid.to_string())
            .expect("a member")
    };
    let member = |a: &AgentProcess| format!("{}:{CLUSTER_PORT}", a.ip);

    // The consumer follows agent-1, which restarts last (oldest-last, as the operator
    // rolls); it disconnects around two of the restarts and resumes with Last-Event-ID.
    let watcher = agents[0].management();
    let mut stream = Stream::open(watcher, None).await;
    let mut history = stream.snapshot().await;
    let snapshot_len = history.len();
    for i in [4, 3, 2, 1] {
        let m = member(&agents[i]);
        let disconnect = i % 2 == 1;
        if disconnect {
            drop(stream);
            restart(&work, &config, &mut agents, i).await;
            let resume = history.last().and_then(|e| e.id.clone()).expect("an id");
            stream = Stream::open(watcher, Some(&resume)).await;
        } else {
            restart(&work, &config, &mut agents, i).await;
        }
        history.extend(stream.until("MemberUp", &m).await);
    }
    drop(stream);

    // The oldest restarts last; a consumer of another agent sees it go and come back.
    let mut other = Stream::open(agents[1].management(), None).await;
    other.snapshot().await;
    let oldest = member(&agents[0]);
    restart(&work, &config, &mut agents, 0).await;
    let last_roll = other.until("MemberUp", &oldest).await;
    let after = wait_for_one_cluster(&agents, 5).await;

    // Complete and ordered: ids consecutive across the reconnects (nothing lost, nothing
    // twice), and for every restarted member: the old incarnation leaves, exits and is
    // removed, then the new one joins and comes up.
    let changes = &history[snapshot_len..];
    let seqs: Vec<u64> = changes.iter().map(Sse::seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == history[snapshot_len - 1].seq() + 1,
        "consecutive ids after the snapshot: {seqs:?}"
    );
    for (events, m) in agents[1..]
        .iter()
        .map(|a| (changes, member(a)))
        .chain([(&last_roll[..], oldest.clone())])
    {
        let (old, new) = (uid_of(&before, &m), uid_of(&after, &m));
        assert_ne!(old, new, "{m} restarted as a new incarnation");
        let seen: Vec<(String, String)> = history_of(events, &m)
            .into_iter()
            .filter(|(e, _)| e != "MemberWeaklyUp")
            .collect();
        let expected: Vec<(String, String)> = [
            ("MemberLeft", &old),
            ("MemberExited", &old),
            ("MemberRemoved", &old),
            ("MemberJoined", &new),
            ("MemberUp", &new),
        ]
        .iter()
        .map(|(e, u)| (e.to_string(), u.to_string()))
        .collect();
        assert_eq!(seen, expected, "the history of {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_events_tell_akkas_shapes_and_only_the_types_asked_for() {
    let work = Workdir::new("domain-events");
    let subnet = (23, 12);
    let config = config_discovery_with(&work, subnet, 3, "  roles: [backend]\n");
    let mut agents = start_agents(&work, &config, subnet, 3);
    let views = wait_for_one_cluster(&agents, 3).await;
    let watcher = agents[0].management();

    // An event type Akka does not have is refused, saying what is accepted.
    let mut s = TcpStream::connect(watcher).await.expect("connect");
    s.write_all(b"GET /cluster/domain-events?type=MemberUpp HTTP/1.0\r\n\r\n")
        .await
        .expect("send");
    let mut answer = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut answer)
        .await
        .expect("read");
    assert!(
        answer.starts_with("HTTP/1.0 400") && answer.contains("MemberEvent"),
        "{answer}"
    );

    let mut stream = Stream::open_at(
        watcher,
        "/cluster/domain-events?type=MemberUp&type=MemberRemoved",
        None,
    )
    .await;
    // The current state: the three members Up, as Akka's example shows them.
    let mut ups = Vec::new();
    while ups.len() < 3 {
        let e = stream.next().await;
        assert_eq!(e.event, "MemberUp", "only the types asked for: {e:?}");
        ups.push(e.json());
    }
    for up in &ups {
        assert_eq!(up["type"], "MemberUp");
        let m = &up["member"];
        assert_eq!(m["status"], "Up");
        assert_eq!(m["dataCenter"], "default");
        assert!(m["roles"].is_array(), "{up}");
        let address = m["uniqueAddress"]["address"].as_str().expect("an address");
        let listed = views[0]
            .members
            .iter()
            .find(|x| x.node.to_string() == address)
            .unwrap_or_else(|| panic!("{address} is a member"));
        // Akka's longUid is a JSON number, the uid's bits as a signed Long.
        assert_eq!(
            m["uniqueAddress"]["longUid"].as_i64(),
            Some(listed.node_uid.cast_signed()),
            "{up}"
        );
    }

    // The leaving member's own stream: the role's leader, then, as its last event
    // before the agent stops, ClusterShuttingDown.
    let leaving = agents.remove(2);
    let mut own = Stream::open_at(
        leaving.management(),
        "/cluster/domain-events?type=RoleLeaderChanged&type=ClusterShuttingDown",
        None,
    )
    .await;
    let role_leader = own.next().await;
    assert_eq!(role_leader.event, "RoleLeaderChanged", "{role_leader:?}");
    assert_eq!(
        role_leader.json(),
        serde_json::json!({"type": "RoleLeaderChanged", "role": "backend",
            "address": views[0].leader.as_ref().expect("a leader").to_string()})
    );

    // A member leaves: of its Left, Exited and Removed only Removed is asked for.
    let member = format!("{}:{CLUSTER_PORT}", leaving.ip);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &leaving.pid().to_string()])
        .status();
    let seen = stream.until("MemberRemoved", &member).await;
    let removed = seen.last().expect("an event").json();
    assert_eq!(removed["member"]["status"], "Removed", "{removed}");
    assert_eq!(removed["previousStatus"], "Exiting", "{removed}");
    assert!(
        seen.iter()
            .all(|e| e.event == "MemberUp" || e.event == "MemberRemoved"),
        "{seen:?}"
    );
    let last = own.next().await;
    assert_eq!(
        (last.event.as_str(), last.json()),
        (
            "ClusterShuttingDown",
            serde_json::json!({"type": "ClusterShuttingDown"})
        )
    );
    assert!(
        own.ended().await,
        "the stream closes after ClusterShuttingDown"
    );
    drop(leaving);
}
