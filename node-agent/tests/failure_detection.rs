//! Real `muster-agent` processes watch each other: a member killed with SIGKILL is
//! marked unreachable by the members that monitor it, every survivor learns that through
//! gossip, and a killed leader hands leadership to the next reachable member.
//! (Downing and removal of the dead member come with the split brain resolver.)

mod support;

use std::time::{Duration, Instant};

use node_agent::management::api::ClusterMembers;
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
    let victim_node = format!("muster://demo@{}:{CLUSTER_PORT}", victim.ip);
    assert_eq!(leader, victim_node, "the lowest address leads");

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
                    let m: ClusterMembers = client
                        .get_json(a.management(), "/cluster/members")
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
    let next = format!("muster://demo@{}:{CLUSTER_PORT}", agents[0].ip);
    eventually("leadership moved on", Duration::from_secs(10), || {
        let (client, agents, next) = (client.clone(), &agents, next.clone());
        async move {
            for a in agents {
                let m: ClusterMembers = client
                    .get_json(a.management(), "/cluster/members")
                    .await
                    .map_err(|e| format!("{}: {e}", a.name))?;
                if m.leader.as_deref() != Some(next.as_str()) {
                    return Err(format!("{} says the leader is {:?}", a.name, m.leader));
                }
            }
            Ok(())
        }
    })
    .await;
    // The survivors do not suspect each other.
    let m: ClusterMembers = client
        .get_json(agents[3].management(), "/cluster/members")
        .await
        .expect("members");
    assert!(m.unreachable.iter().all(|u| u.node == victim_node), "{m:?}");
}
