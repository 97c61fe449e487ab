//! Real `muster-agent` processes watch each other: a member killed with SIGKILL is
//! marked unreachable by the members that monitor it, every survivor learns that through
//! gossip, and a killed leader hands leadership to the next reachable member.
//! With the split brain resolver, the survivors' leader downs the dead member once the
//! view is stable and it is removed; a member that was only paused finds out it was
//! removed when it resumes, and exits (status 3) instead of coming back.

mod support;

use std::time::{Duration, Instant};

use node_agent::api::ClusterMembers;
use node_agent::base::member::MemberStatus;
use node_agent::base::secret::ManagementToken;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_unreachable_everywhere_and_leadership_moves_on() {
    let work = Workdir::new("fd-kill");
    let subnet = (23, 1);
    let config = config_discovery(&work, subnet, 5);
    let mut agents = start_agents(&work, &config, subnet, 5);
    let views = wait_for_one_cluster(&agents, 5).await;
    let leader = views[0].leader.clone().expect("a leader");
    let victim = agents.remove(0);
    let victim_node = victim.address();
    assert_eq!(leader, victim_node, "the lowest address leads");

    // Every member monitors the other four (monitored-by-nr-of-members 9 > 4): their phi
    // is reported, and low.
    let phi_of = |text: &str, node: &str| {
        metric(
            text,
            &format!("muster_failure_detector_phi{{peer=\"{node}\"}}"),
        )
    };
    let text = metrics(agents[1].management()).await.expect("metrics");
    assert_eq!(
        metric(&text, "muster_bootstrap_phase{phase=\"joined\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "muster_bootstrap_phase{phase=\"probing\"}"),
        Some(0.0),
        "{text}"
    );
    // agents[1]'s peers: the victim and the three other survivors.
    let others: Vec<String> = std::iter::once(victim_node.to_string())
        .chain([0, 2, 3].map(|i| agents[i].address().to_string()))
        .collect();
    eventually(
        "phi reported for the four monitored members",
        Duration::from_secs(10),
        || {
            let (others, agent) = (&others, &agents[1]);
            async move {
                let text = metrics(agent.management()).await?;
                for n in others {
                    match phi_of(&text, n) {
                        Some(phi) if phi < 8.0 => {}
                        other => return Err(format!("phi of {n}: {other:?}\n{text}")),
                    }
                }
                Ok(())
            }
        },
    )
    .await;

    let killed = Instant::now();
    drop(victim); // SIGKILL
    let client = client();
    let seen: Vec<ClusterMembers> = eventually(
        "every survivor sees the killed member unreachable",
        Duration::from_secs(30),
        || {
            let (client, agents, victim_node) = (client.clone(), &agents, victim_node.clone());
            async move {
                let mut views = Vec::new();
                for a in agents {
                    let m = client
                        .members(a.management())
                        .await
                        .map_err(|e| format!("{}: {e}", a.name))?;
                    let flagged = m
                        .unreachable
                        .iter()
                        .any(|u| u.node == victim_node && !u.observed_by.is_empty());
                    if !flagged {
                        return Err(format!(
                            "{} does not flag it yet: {:?}",
                            a.name, m.unreachable
                        ));
                    }
                    views.push(m);
                }
                Ok(views)
            }
        },
    )
    .await;
    println!(
        "SIGKILL -> unreachable on all 4 survivors: {} ms",
        killed.elapsed().as_millis()
    );
    // A survivor that flagged it itself (others may have learned it by gossip, and
    // need not monitor it at all) reports its phi above the threshold once its metric
    // snapshot, taken each heartbeat round, has caught up.
    let observer = seen
        .iter()
        .position(|m| {
            m.unreachable
                .iter()
                .any(|u| u.node == victim_node && u.observed_by.contains(&m.self_node))
        })
        .expect("some survivor observed it itself");
    let text = eventually(
        "the observer's phi of the killed member above the threshold",
        Duration::from_secs(10),
        || {
            let addr = agents[observer].management();
            let victim_node = victim_node.to_string();
            async move {
                let text = metrics(addr).await?;
                match phi_of(&text, &victim_node) {
                    Some(phi) if phi >= 8.0 => Ok(text),
                    other => Err(format!("phi {other:?}")),
                }
            }
        },
    )
    .await;
    assert_eq!(
        metric(&text, "muster_cluster_unreachable_members"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "muster_cluster_convergence"),
        Some(0.0),
        "{text}"
    );
    for m in &seen {
        assert_eq!(m.unreachable.len(), 1, "only the killed member: {m:?}");
        // Its observers are its monitors among the survivors.
        assert!(
            m.unreachable[0]
                .observed_by
                .iter()
                .all(|o| *o != victim_node),
            "{m:?}"
        );
    }
    // The next reachable member leads, the same on every survivor.
    let next = agents[0].address();
    eventually("leadership moved on", Duration::from_secs(10), || {
        let (client, agents, next) = (client.clone(), &agents, next.clone());
        async move {
            for a in agents {
                let m = client
                    .members(a.management())
                    .await
                    .map_err(|e| format!("{}: {e}", a.name))?;
                if m.leader.as_ref() != Some(&next) {
                    return Err(format!("{} says the leader is {:?}", a.name, m.leader));
                }
            }
            Ok(())
        }
    })
    .await;
    // The survivors do not suspect each other.
    let m = client
        .members(agents[3].management())
        .await
        .expect("members");
    assert!(m.unreachable.iter().all(|u| u.node == victim_node), "{m:?}");
}

const FAST_SBR: &str = "  split-brain-resolver:\n    stable-after: 2s\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_is_downed_and_removed_and_the_rest_converge() {
    let work = Workdir::new("sbr-kill");
    let subnet = (23, 2);
    let config = config_discovery_with(&work, subnet, 5, FAST_SBR);
    let mut agents = start_agents(&work, &config, subnet, 5);
    wait_for_one_cluster(&agents, 5).await;
    let victim = agents.remove(3);
    let gone = victim.address();
    let killed = Instant::now();
    drop(victim); // SIGKILL
    let m = wait_for_survivors(&agents, 4, "the killed member removed everywhere").await;
    println!(
        "SIGKILL -> Removed on all 4 survivors: {} ms (stable-after 2s)",
        killed.elapsed().as_millis()
    );
    assert!(m.members.iter().all(|x| x.node != gone), "{m:?}");
    // Convergence needs every survivor to have seen the latest state: poll for it.
    let leader = agents[0].management();
    let text = eventually(
        "metrics show the cluster healed",
        Duration::from_secs(10),
        || async move {
            let text = metrics(leader).await?;
            let healed = metric(&text, "muster_cluster_unreachable_members") == Some(0.0)
                && metric(&text, "muster_cluster_convergence") == Some(1.0);
            if healed { Ok(text) } else { Err(text) }
        },
    )
    .await;
    assert_eq!(
        metric(&text, "muster_cluster_members_downed_total"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_member_is_removed_and_exits_when_it_resumes() {
    let work = Workdir::new("sbr-pause");
    let subnet = (23, 3);
    let config = config_discovery_with(&work, subnet, 5, FAST_SBR);
    let mut agents = start_agents(&work, &config, subnet, 5);
    wait_for_one_cluster(&agents, 5).await;
    let mut paused = agents.remove(4);
    let signal = |sig: &str, pid: u32| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP", paused.pid());
    wait_for_survivors(&agents, 4, "the paused member removed by the others").await;
    let resumed = Instant::now();
    signal("-CONT", paused.pid());
    let status = paused.wait_for_exit("the resumed member exits").await;
    println!(
        "resumed member exited {} ms after SIGCONT: {status}",
        resumed.elapsed().as_millis()
    );
    assert_eq!(
        status.code(),
        Some(3),
        "exit status 3 means downed:\n{}",
        paused.log()
    );
    assert!(
        paused.log().contains("downed this member"),
        "{}",
        paused.log()
    );
    // It did not come back: still four.
    wait_for_survivors(&agents, 4, "still four members").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_gracefully_and_exits_zero() {
    let work = Workdir::new("leave");
    let subnet = (23, 4);
    let config = config_discovery(&work, subnet, 5);
    let mut agents = start_agents(&work, &config, subnet, 5);
    wait_for_one_cluster(&agents, 5).await;
    // The leader leaves: the hardest case, leadership moves while it goes.
    let mut leaving = agents.remove(0);
    let gone = leaving.address();
    let sent = Instant::now();
    sigterm(leaving.pid());
    let m = wait_for_survivors(&agents, 4, "the leaving member removed everywhere").await;
    println!(
        "SIGTERM -> Removed on all 4 others: {} ms",
        sent.elapsed().as_millis()
    );
    assert!(m.members.iter().all(|x| x.node != gone), "{m:?}");
    let status = leaving.wait_for_exit("the leaving agent exits").await;
    println!("SIGTERM -> process exit: {} ms", sent.elapsed().as_millis());
    assert_eq!(status.code(), Some(0), "{}", leaving.log());
    assert!(
        leaving.log().contains("left the cluster"),
        "{}",
        leaving.log()
    );
}

async fn send(addr: std::net::SocketAddr, method: &str, path: &str, token: &str) -> (u16, String) {
    send_with_token(addr, method, path, token, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_makes_members_leave_or_go_down_with_the_token() {
    const TOKEN: &str = "e2e-operator-token-123456";
    let work = Workdir::new("operator");
    let subnet = (23, 5);
    let extra = format!("management:\n  token: {TOKEN}\n");
    let config = config_discovery_with(&work, subnet, 5, &extra);
    let mut agents = start_agents(&work, &config, subnet, 5);
    wait_for_one_cluster(&agents, 5).await;
    let mut downed = agents.remove(4);
    let mut leaving = agents.remove(3);
    let entry = agents[0].management();
    let path = |a: &AgentProcess| format!("/cluster/members/muster://demo@{}:{CLUSTER_PORT}", a.ip);

    let (status, body) = send(entry, "DELETE", &path(&leaving), "not-the-token-at-all").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = send(entry, "DELETE", &path(&leaving), TOKEN).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Leaving"), "{body}");
    let token = ManagementToken::new(TOKEN.as_bytes()).expect("a token");
    client()
        .down(agents[1].management(), &downed.address(), &token)
        .await
        .expect("PUT …?operation=Down with the token");

    wait_for_survivors(&agents, 3, "both gone from the cluster").await;
    for (agent, code) in [(&mut leaving, 0), (&mut downed, 3)] {
        let status = agent.wait_for_exit("the agent exits").await;
        assert_eq!(status.code(), Some(code), "{}: {}", agent.name, agent.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_join_exits_with_status_4() {
    let work = Workdir::new("join-fails");
    let subnet = (23, 7);
    // Explicit seeds where this node is not the first: it only joins, and the first seed
    // never runs.
    let seed = ip(subnet, 1);
    let config = work.config(&format!(
        "cluster:\n  key-file: {key}\n  seed-nodes: ['muster://demo@{seed}:{CLUSTER_PORT}']\n  name: demo\n  shutdown-after-unsuccessful-join-seed-nodes: 2s\n",
        key = work.key_file().display(),
    ));
    let mut agent = AgentProcess::start(&work, &config, ip(subnet, 2), "lonely");
    let started = Instant::now();
    let status = agent.wait_for_exit("the agent gives up").await;
    println!(
        "gave up after {} ms: {status}",
        started.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(4), "{}", agent.log());
    assert!(
        agent
            .log()
            .contains("shutdown-after-unsuccessful-join-seed-nodes"),
        "{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_member_restarted_on_its_address_replaces_its_old_incarnation() {
    let work = Workdir::new("crash-restart");
    let subnet = (23, 10);
    let config = config_discovery(&work, subnet, 5);
    let mut agents = start_agents(&work, &config, subnet, 5);
    let before = wait_for_one_cluster(&agents, 5).await;
    let crashed = agents.remove(4);
    let node = crashed.address();
    let uid_of = |m: &ClusterMembers| m.member(&node).map(|x| x.node_uid);
    let old_uid = uid_of(&before[0]).expect("a member");
    let ip = crashed.ip;
    drop(crashed); // SIGKILL, and at once a new process on the same address (a container restart)
    let restarted = Instant::now();
    agents.push(AgentProcess::start(&work, &config, ip, "agent-5-again"));
    let after = wait_for_one_cluster(&agents, 5).await;
    println!(
        "SIGKILL + restart on the same address -> one cluster of five with the new incarnation: {} ms",
        restarted.elapsed().as_millis()
    );
    let new_uid = uid_of(&after[0]).expect("a member");
    assert_ne!(new_uid, old_uid, "the new incarnation replaced the old one");
    assert!(
        agents[4].log().contains("joining cluster"),
        "{}",
        agents[4].log()
    );
}

/// `PUT /cluster operation=prepare-for-full-shutdown` (Akka's, in its `curl -F` form):
/// every member becomes ReadyForShutdown, and when two of three then stop at once (their
/// pods gone, as the operator says with `PodGone`) the last one downs them at once
/// instead of downing itself as keep-majority's minority after stable-after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_prepared_for_a_full_shutdown_stops_without_downing_its_last_member() {
    const TOKEN: &str = "full-shutdown-token-0123456";
    let work = Workdir::new("full-shutdown");
    let subnet = (23, 15);
    let extra = format!("management:\n  token: {TOKEN}\n");
    let config = config_discovery_with(&work, subnet, 3, &extra);
    let mut agents = start_agents(&work, &config, subnet, 3);
    wait_for_one_cluster(&agents, 3).await;
    let last = agents[0].management();

    let (status, body) = send_with_token(
        agents[1].management(),
        "PUT",
        "/cluster/",
        TOKEN,
        Some((
            "multipart/form-data; boundary=fs",
            "--fs\r\nContent-Disposition: form-data; name=\"operation\"\r\n\r\nPrepare-for-full-shutdown\r\n--fs--\r\n",
        )),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"message":"Preparing for full cluster shutdown"}"#)
    );
    let client = client();
    eventually(
        "every member ReadyForShutdown everywhere",
        Duration::from_secs(20),
        || {
            let (client, agents) = (client.clone(), &agents);
            async move {
                for a in agents {
                    let m = client
                        .members(a.management())
                        .await
                        .map_err(|e| e.to_string())?;
                    if m.members.len() != 3
                        || m.members
                            .iter()
                            .any(|x| x.status != MemberStatus::ReadyForShutdown)
                    {
                        return Err(format!("{}: {m:?}", a.name));
                    }
                }
                Ok(())
            }
        },
    )
    .await;
    let (ready, _) = client.get(last, "/ready").await.expect("/ready");
    assert_eq!(ready, 503, "ready-states are Up and WeaklyUp");

    let stopped = Instant::now();
    let gone = [agents[1].address(), agents[2].address()];
    drop(agents.remove(2)); // SIGKILL
    drop(agents.remove(1));
    // Their pods are gone, as the operator then tells the agents.
    for member in &gone {
        let (status, body) = send_with_token(
            last,
            "PUT",
            &format!("/cluster/members/{member}?operation=PodGone"),
            TOKEN,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let m = eventually("the last member alone", Duration::from_secs(40), || {
        let client = client.clone();
        async move {
            let m = client.members(last).await.map_err(|e| e.to_string())?;
            if m.members.len() == 1 && m.unreachable.is_empty() {
                Ok(m)
            } else {
                Err(format!("{m:?}"))
            }
        }
    })
    .await;
    println!(
        "two of three prepared members SIGKILLed -> downed and removed by the last: {} ms (stable-after 20s)",
        stopped.elapsed().as_millis()
    );
    assert_eq!(m.members[0].status, MemberStatus::ReadyForShutdown);
    assert!(agents[0].exited().is_none(), "{}", agents[0].log());
}

/// The handover gate with real processes: an agent whose application holds the gate
/// stays up after an operator's Leave took it out of the cluster, until the hold is
/// released, then exits 0; on SIGTERM with a hold that is never released it exits once
/// `cluster.handover-timeout` has run out, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_handover_gate_keeps_a_leaving_agent_up_until_released_or_timed_out() {
    const TOKEN: &str = "handover-operator-token-123";
    const TIMEOUT: Duration = Duration::from_secs(4);
    let work = Workdir::new("handover");
    let subnet = (23, 16);
    let extra = format!("  handover-timeout: 4s\nmanagement:\n  token: {TOKEN}\n");
    let config = config_discovery_with(&work, subnet, 3, &extra);
    let mut agents = start_agents(&work, &config, subnet, 3);
    wait_for_one_cluster(&agents, 3).await;
    let token = ManagementToken::new(TOKEN.as_bytes()).expect("a token");
    let client = client();

    // An operator's Leave; the application (this test, on loopback as the local
    // platform's applications are) holds the gate from the start.
    let mut leaving = agents.remove(2);
    let held = client
        .handover_hold(leaving.management(), "singleton", true, None)
        .await
        .expect("hold from inside the pod");
    assert!(
        !held.ready_to_stop && !held.stopping,
        "held, and not yet asked to stop: {held:?}"
    );
    client
        .leave(agents[0].management(), &leaving.address(), &token)
        .await
        .expect("Leave with the token");
    wait_for_survivors(&agents, 2, "the leaving member removed everywhere").await;
    let gate = eventually(
        "its gate closed on the stop",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            let addr = leaving.management();
            async move {
                let g = client.handover(addr).await.map_err(|e| e.to_string())?;
                if g.stopping {
                    Ok(g)
                } else {
                    Err(format!("{g:?}"))
                }
            }
        },
    )
    .await;
    assert!(
        !gate.ready_to_stop && gate.names() == "singleton",
        "{gate:?}"
    );
    assert!(
        leaving.exited().is_none(),
        "it left, but waits for its application: {}",
        leaving.log()
    );
    // Its event stream ends with ClusterShuttingDown; resumed after that, it is
    // answered 204 (an EventSource then stops reconnecting while the agent lingers).
    let (status, body) = event_stream_once(leaving.management(), None).await;
    assert!(status.contains(" 200 "), "{status}");
    let end = body
        .split("\n\n")
        .find(|e| e.contains("event: ClusterShuttingDown"))
        .unwrap_or_else(|| panic!("the stream ends with ClusterShuttingDown: {body}"));
    let id = end
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("the end carries an id: {end}"));
    let (status, body) = event_stream_once(leaving.management(), Some(id)).await;
    assert!(status.contains(" 204 "), "{status}: {body}");
    let released = Instant::now();
    client
        .handover_hold(leaving.management(), "singleton", false, None)
        .await
        .expect("release");
    let status = leaving.wait_for_exit("the released agent exits").await;
    println!(
        "handover released -> agent exit: {} ms",
        released.elapsed().as_millis()
    );
    assert_eq!(status.code(), Some(0), "{}", leaving.log());
    assert!(
        leaving.log().contains("released its holds"),
        "{}",
        leaving.log()
    );

    // SIGTERM with a hold never released: out after the timeout, and only then.
    let mut stopped = agents.remove(1);
    client
        .handover_hold(stopped.management(), "shards", true, None)
        .await
        .expect("hold");
    let sent = Instant::now();
    sigterm(stopped.pid());
    wait_for_survivors(&agents, 1, "the stopped member removed").await;
    let status = stopped
        .wait_for_exit("the agent exits at the timeout")
        .await;
    let took = sent.elapsed();
    println!(
        "SIGTERM with a hold never released -> exit: {} ms (handover-timeout 4 s)",
        took.as_millis()
    );
    assert_eq!(status.code(), Some(0), "{}", stopped.log());
    assert!(took >= TIMEOUT, "it waited for the gate: {took:?}");
    assert!(
        stopped.log().contains("did not release"),
        "{}",
        stopped.log()
    );
}

/// `GET /cluster/events` (HTTP/1.0, resumed after `last_event_id`) read until the server
/// closes it, within 10 s: the status line and the body.
async fn event_stream_once(
    addr: std::net::SocketAddr,
    last_event_id: Option<&str>,
) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let read = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        s.write_all(format!("GET /cluster/events HTTP/1.0\r\n{resume}\r\n").as_bytes())
            .await
            .expect("send");
        let mut all = String::new();
        s.read_to_string(&mut all).await.expect("read");
        all
    };
    let all = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server closes the stream within 10 s");
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// SIGTERM, as the kubelet stops a container.
fn sigterm(pid: u32) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok);
}
