//! 100 real agents on this machine, started together (issue 16): they form one cluster
//! of 100 Up members that every agent sees alike, and nobody is downed while they form
//! or in the half minute after. The agents are the release build users run (`./test`
//! builds it first; see [`support::release_agent`]), on whatever cores the machine has
//! (2 on CI), each on its own loopback address with config discovery listing all of
//! them, every one required — as `local-cluster --nodes 100` starts them. How long they
//! take is the `serf_comparison` benchmark's to report; here it is only printed.
//!
//! Why not the debug build the other tests use: it costs about ten times the CPU per
//! message, and 100 of them on 2 cores are a machine overloaded many times over for
//! minutes, which is not the load this test is about (the starvation simulation and the
//! benchmark's busy-core runs are).

mod support;

use std::time::{Duration, Instant};

use node_agent::api::check;
use support::*;

/// How long the agents may take to form: a deadline, far above the seconds they take.
const FORM_WITHIN: Duration = Duration::from_secs(120);
/// How long the formed cluster is then watched for downings.
const WATCH: Duration = Duration::from_secs(30);

/// Every agent's view, or the first that does not answer.
async fn views(agents: &[AgentProcess]) -> Result<Vec<node_agent::api::ClusterMembers>, String> {
    let client = client();
    let answers =
        futures_util::future::join_all(agents.iter().map(|a| client.members(a.management()))).await;
    agents
        .iter()
        .zip(answers)
        .map(|(a, v)| v.map_err(|e| format!("{}: {e}", a.name)))
        .collect()
}

/// Fails the test if any agent has exited (downed: status 3; or anything else).
fn none_exited(agents: &mut [AgentProcess]) {
    for a in agents.iter_mut() {
        if let Some(status) = a.exited() {
            panic!(
                "{} ({}) exited while the cluster formed: {status}",
                a.name, a.ip
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_agents_started_together_form_one_cluster_and_nobody_is_downed() {
    let n: u8 = 100;
    let subnet = (23, 100);
    let work = Workdir::new("hundred");
    let config = config_discovery(&work, subnet, n);
    let exe = release_agent();
    let mut agents: Vec<AgentProcess> = (1..=n)
        .map(|i| {
            AgentProcess::start_exe(&exe, &work, &config, ip(subnet, i), &format!("agent-{i}"))
        })
        .collect();
    let started = Instant::now();
    // Half a second between rounds: watching must not load the agents it watches.
    let mut rounds = tokio::time::interval(Duration::from_millis(500));
    loop {
        rounds.tick().await;
        none_exited(&mut agents);
        let state = match views(&agents).await {
            Ok(v) => {
                if let Err(split) = check::no_split(&v) {
                    panic!("{split}");
                }
                match check::one_cluster_of(&v, usize::from(n)) {
                    Ok(()) => break,
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        assert!(
            started.elapsed() < FORM_WITHIN,
            "no cluster of {n} Up members within {FORM_WITHIN:?}; last: {state}"
        );
    }
    eprintln!(
        "{n} agents: one cluster of {n} Up members {:.1} s after they started (release build)",
        started.elapsed().as_secs_f64()
    );
    // Nobody is downed afterwards either (the mass downing of issue 16 came ~50 s in).
    let watched = Instant::now();
    while watched.elapsed() < WATCH {
        rounds.tick().await;
        none_exited(&mut agents);
    }
    let v = views(&agents).await.expect("every agent answers");
    check::one_cluster_of(&v, usize::from(n)).expect("still one cluster of 100 Up members");
}
