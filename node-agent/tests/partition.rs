//! A network partition between real `muster-agent` processes: five agents on their own
//! loopback addresses, cut 3 | 2 by iptables rules that drop every packet between the
//! two sides (the agents bind their outbound connections to their own address, so the
//! rules see the real source). With keep-majority the three keep the cluster and down
//! the two; the two down themselves and exit (status 3). No member is Up on both sides
//! once the resolver has acted. After the cut heals, the two restart (as Kubernetes
//! would restart their pods) and join the surviving cluster: there is never a second one.
//!
//! Needs iptables and root (CAP_NET_ADMIN); `./test` installs iptables.

mod support;

use std::time::{Duration, Instant};

use node_agent::api::ClusterMembers;
use node_agent::base::address::NodeAddress;
use support::*;

// Shared with the e2e tests (no crate dependency: e2e depends on node-agent).
#[path = "../../e2e/src/partition.rs"]
mod partition_rules;
use partition_rules::Partition;

async fn members(a: &AgentProcess) -> Result<ClusterMembers, String> {
    client()
        .members(a.management())
        .await
        .map_err(|e| format!("{}: {e}", a.name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3_2_partition_keeps_the_majority_and_never_makes_a_second_cluster() {
    let work = Workdir::new("partition");
    let subnet = (23, 8);
    let config = config_discovery_with(
        &work,
        subnet,
        5,
        "  split-brain-resolver:\n    stable-after: 2s\n",
    );
    let mut agents = start_agents(&work, &config, subnet, 5);
    wait_for_one_cluster(&agents, 5).await;
    let mut minority: Vec<AgentProcess> = agents.split_off(3);
    let majority = agents;
    let minority_nodes: Vec<NodeAddress> = minority.iter().map(AgentProcess::address).collect();

    let ips = |side: &[AgentProcess]| side.iter().map(|a| a.ip).collect::<Vec<_>>();
    let partition = Partition::cut(&ips(&majority), &ips(&minority));
    let cut = Instant::now();

    // Each side sees the other unreachable (the minority may already be going down).
    eventually(
        "the majority sees the minority unreachable",
        Duration::from_secs(30),
        || async {
            for a in &majority {
                let m = members(a).await?;
                let flagged: Vec<&NodeAddress> = m.unreachable.iter().map(|u| &u.node).collect();
                let all = minority_nodes.iter().all(|n| flagged.contains(&n));
                let gone = minority_nodes
                    .iter()
                    .all(|n| m.members.iter().all(|x| &x.node != n));
                if !(all || gone) {
                    return Err(format!("{} flags {flagged:?}", a.name));
                }
            }
            Ok(())
        },
    )
    .await;
    println!(
        "cut -> majority flags the minority unreachable: {} ms",
        cut.elapsed().as_millis()
    );

    // The minority downs itself: both processes exit with status 3.
    for a in &mut minority {
        let status = a.wait_for_exit("a minority member downs itself").await;
        assert_eq!(status.code(), Some(3), "{}: {}", a.name, a.log());
        assert!(a.log().contains("downed this member"), "{}", a.log());
    }
    println!(
        "cut -> both minority members exited (downed): {} ms",
        cut.elapsed().as_millis()
    );
    // The majority downed and removed them: three Up, converged, one leader.
    let m = wait_for_survivors(&majority, 3, "the majority keeps a cluster of three").await;
    println!(
        "cut -> majority converged on three members: {} ms",
        cut.elapsed().as_millis()
    );
    assert_eq!(m.leader, Some(majority[0].address()), "{m:?}");

    // Heal, and restart the two as Kubernetes would: they join the surviving cluster.
    partition.heal();
    let rejoined_at = Instant::now();
    let restarted: Vec<AgentProcess> = (4..=5)
        .map(|i| AgentProcess::start(&work, &config, ip(subnet, i), &format!("agent-{i}-again")))
        .collect();
    let mut all = majority;
    all.extend(restarted);
    let views = wait_for_one_cluster(&all, 5).await;
    println!(
        "heal + restart -> one cluster of five: {} ms",
        rejoined_at.elapsed().as_millis()
    );
    // The survivors' leader still leads: the restarted two joined, they did not form.
    assert_eq!(views[0].leader, Some(all[0].address()), "{views:?}");
    for a in &all[3..] {
        assert!(
            a.log().contains("joining cluster"),
            "{} should have joined the existing cluster:\n{}",
            a.name,
            a.log()
        );
    }
}
