//! Floods without credentials against one real agent on loopback (findings 15.6, 15.7
//! and 15.9; the attacks are in `support/floods.rs`): connections that hold the
//! management port's slots, event subscribers that never read, silent connections to
//! the cluster port, and large unsigned frames. During each, `/alive` must keep
//! answering, new peers must be greeted, and memory must stay under the 64 MiB the
//! operator gives an agent. Prints, per attack, the agent's peak RSS and the worst
//! `/alive` latency (`cargo test -p node-agent --test floods -- --nocapture`; the
//! release-build numbers: `cargo bench -p node-agent --bench attacks`).

mod support;

use std::time::Duration;

use support::floods::{run_all, table};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_without_credentials_do_not_knock_the_agent_over() {
    let subnet = (23, 20);
    let work = Workdir::new("floods");
    let config = config_discovery(&work, subnet, 1);
    let mut agent = AgentProcess::start(&work, &config, ip(subnet, 1), "agent");
    wait_for_one_cluster(std::slice::from_ref(&agent), 1).await;
    let rows = run_all(&agent, subnet, 5).await;
    println!("floods against one agent (debug build), loopback:");
    print!("{}", table(&rows, (64 * 1024, Duration::from_millis(100))));
    for r in &rows {
        if let Err(e) = &r.worst_alive {
            panic!("{}: the agent must keep answering /alive: {e}", r.attack);
        }
        if let Some(Err(e)) = &r.worst_greeting {
            panic!("{}: new peers must be greeted: {e}", r.attack);
        }
        assert!(
            r.peak_kib < 64 * 1024,
            "{}: the agent's RSS reached {} KiB, above the 64 MiB the operator gives it",
            r.attack,
            r.peak_kib
        );
    }
    assert_eq!(agent.exited(), None, "the agent keeps running");
    wait_for_one_cluster(std::slice::from_ref(&agent), 1).await;
}
