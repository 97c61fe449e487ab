//! `cargo bench -p node-agent --bench attacks`: floods without credentials against one
//! release-built `muster-agent` on loopback (the attacks of issue 15, shared with the
//! `floods` test): per attack, the agent's peak RSS and the worst `/alive` latency while
//! it is held, against the targets (RSS < 64 MiB, the operator's limit for an agent;
//! `/alive` < 100 ms, well inside a kubelet's 1 s probe timeout). A `!` marks a miss.
//!
//! Environment: `BENCH_RUNS` (rounds of every attack, default 3; a fresh agent each),
//! `BENCH_SAMPLES` (`/alive` requests per attack, 100 ms apart, default 20),
//! `BENCH_BUSY` (1: keep both cores busy with burner threads meanwhile, default 0).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Duration;

use common::{Burners, env_or};
use support::floods::{Row, run_all, table};
use support::*;

const TARGETS: (u64, Duration) = (64 * 1024, Duration::from_millis(100));

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: u8 = env_or("BENCH_RUNS", 3);
    let samples: u32 = env_or("BENCH_SAMPLES", 20);
    let busy = env_or("BENCH_BUSY", 0u8) == 1;
    let _burners = busy.then(|| Burners::start(2));
    let mut worst: Vec<Row> = Vec::new();
    for run in 0..runs {
        let subnet = (24, 20 + run);
        let work = Workdir::new(&format!("bench-attacks-{run}"));
        let config = config_discovery(&work, subnet, 1);
        let mut agent = AgentProcess::start(&work, &config, ip(subnet, 1), "agent");
        wait_for_one_cluster(std::slice::from_ref(&agent), 1).await;
        let rows = run_all(&agent, subnet, samples).await;
        println!(
            "run {} of {runs} (release build{}):",
            run + 1,
            if busy { ", both cores busy" } else { "" }
        );
        print!("{}", table(&rows, TARGETS));
        assert_eq!(agent.exited(), None, "the agent must survive every attack");
        if worst.is_empty() {
            worst = rows;
        } else {
            for (w, r) in worst.iter_mut().zip(rows) {
                w.peak_kib = w.peak_kib.max(r.peak_kib);
                w.worst_alive = match (&w.worst_alive, r.worst_alive) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(_), Err(e)) => Err(e),
                    (Ok(a), Ok(b)) => Ok((*a).max(b)),
                };
                w.worst_greeting = match (w.worst_greeting.take(), r.worst_greeting) {
                    (Some(Ok(a)), Some(Ok(b))) => Some(Ok(a.max(b))),
                    (Some(Err(e)), _) | (_, Some(Err(e))) => Some(Err(e)),
                    (a, b) => a.or(b),
                };
            }
        }
    }
    println!(
        "\nworst over {runs} runs, {samples} /alive requests per attack (targets: RSS < 64 MiB, /alive < 100 ms; ! = missed):"
    );
    print!("{}", table(&worst, TARGETS));
}
