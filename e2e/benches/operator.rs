//! The operator's numbers on the local platform (optimised builds of `muster-operator`
//! and `muster-agent`, built first): time from `create` of a ClusterSpec to Formed and to
//! Running for 3 and 5 replicas; the API requests and writes of a reconcile at steady
//! state; a 5-pod rolling update with `OldestLast` and with `Ordinal` side by side
//! (wall time, how often the oldest member changed, the fewest Up members seen); the
//! example application (`manifests/examples/keyowner.yaml`: the agent beside a Python
//! application, a persistent volume claim per pod) from `kubectl apply` to Formed and
//! Running, and its oldest-last rollout of 3 pods, in the same run as the agent-only
//! figures; the operator's RSS.
//!
//! `cargo bench -p e2e --bench operator` (needs root, like the e2e tests).
//! `BENCH_RUNS=n` rolls each cluster n times (default 2: the second rollout shows how
//! `Ordinal` moves the oldest member once pod ages no longer follow ordinals).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "../tests/support/mod.rs"]
mod support;
use support::operator::{
    Cluster, Operator, RolloutWatch, create_cluster, retagged, rss_mib, running, setup, status_of,
};

/// What one rollout took.
struct Rollout {
    millis: u128,
    oldest_changes: usize,
    min_up: usize,
    order: Vec<String>,
}

fn build_release_binaries() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        // The bench profile (optimised, in target/release) reuses what `cargo bench`
        // compiled for this benchmark instead of a second, release, build.
        .args([
            "build",
            "--profile",
            "bench",
            "-p",
            "node-agent",
            "--bin",
            "muster-agent",
        ])
        .args(["-p", "operator", "--bin", "muster-operator"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --profile bench failed");
}

/// Creates `name` and returns (ms to Formed, ms to Running).
async fn form(
    p: &e2e::Platform,
    op: &Operator,
    name: &str,
    replicas: i32,
    extra: serde_json::Value,
) -> (u128, u128) {
    let started = create_cluster(p, name, replicas, extra).await;
    formed_then_running(&Cluster::of(p, name), op, started, replicas).await
}

/// `kubectl apply -f manifests/examples/keyowner.yaml`; returns (ms to Formed, ms to
/// Running).
async fn form_example(p: &e2e::Platform, op: &Operator) -> (u128, u128) {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/examples/keyowner.yaml"
    );
    let started = Instant::now();
    let out = p
        .kubectl()
        .args(["apply", "-f", file])
        .output()
        .expect("kubectl apply");
    assert!(out.status.success(), "{out:?}");
    formed_then_running(&Cluster::of(p, "keyowner"), op, started, 3).await
}

/// Waits until `c` is Formed, then Running with `replicas` Up: ms from `started` to
/// each.
async fn formed_then_running(
    c: &Cluster,
    op: &Operator,
    started: Instant,
    replicas: i32,
) -> (u128, u128) {
    c.wait_for(op, "formed", Duration::from_secs(180), |cs| {
        status_of(cs)
            .formed_at
            .map(|_| ())
            .ok_or_else(|| "not formed".into())
    })
    .await;
    let formed = started.elapsed().as_millis();
    c.wait_for(op, "running", Duration::from_secs(180), running(replicas))
        .await;
    (formed, started.elapsed().as_millis())
}

async fn roll(c: &Cluster, op: &Operator, image: &str, replicas: i32) -> Rollout {
    let watch = RolloutWatch::start(c).await;
    let started = Instant::now();
    c.patch_spec(json!({"agent": {"image": image}})).await;
    c.wait_for(op, "the rollout finished", Duration::from_secs(600), |cs| {
        running(replicas)(cs)?;
        let r = status_of(cs).replicas;
        if r == replicas {
            Ok(())
        } else {
            Err(format!("{r} pods"))
        }
    })
    .await;
    // Every pod runs the new image (Running also needs the rollout finished).
    support::poll("every pod replaced", Duration::from_secs(120), || async {
        let pods = c.pods().await;
        let old = pods
            .iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .and_then(|s| s.containers[0].image.as_deref())
                    != Some(image)
            })
            .count();
        if old == 0 && pods.len() == usize::try_from(replicas).unwrap_or(0) {
            Ok(())
        } else {
            Err(format!("{old} pods with the old image"))
        }
    })
    .await;
    let millis = started.elapsed().as_millis();
    let seen = watch.stop().await;
    assert!(seen.split.is_none(), "two clusters: {:?}", seen.split);
    Rollout {
        millis,
        oldest_changes: seen.oldest.len().saturating_sub(1),
        min_up: seen.min_up,
        order: seen.replaced,
    }
}

fn median(mut v: Vec<u128>) -> u128 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Deletes the ClusterSpec and waits until its pods are gone.
async fn gone(c: &Cluster) {
    c.api()
        .delete(&c.name, &kube::api::DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete ClusterSpec {}: {e}", c.name));
    support::poll(
        &format!("the pods of {} gone", c.name),
        Duration::from_secs(180),
        || async {
            match c.pods().await.len() {
                0 => Ok(()),
                n => Err(format!("{n} pods left")),
            }
        },
    )
    .await;
}

fn main() {
    build_release_binaries();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut rows = Vec::new();
        for strategy in ["OldestLast", "Ordinal"] {
            let nets = if strategy == "OldestLast" { (55, 56) } else { (57, 58) };
            let (p, op) = setup(&format!("bench-{}", strategy.to_lowercase()), nets).await;
            if strategy == "OldestLast" {
                let (formed, running) = form(&p, &op, "three", 3, json!({})).await;
                println!("form 3 replicas: apply → Formed {formed} ms, → Running {running} ms");
                let (formed, running) = form_example(&p, &op).await;
                println!(
                    "form the keyowner example (3 replicas, application + claims): apply → Formed {formed} ms, → Running {running} ms"
                );
                let c = Cluster::of(&p, "keyowner");
                let image = retagged("ghcr.io/muster-dev/muster-agent:0.1.0", "v2");
                let r = roll(&c, &op, &image, 3).await;
                println!(
                    "rollout of the keyowner example (3, OldestLast): {} ms, oldest changed {}×, fewest Up {}, order {:?}",
                    r.millis, r.oldest_changes, r.min_up, r.order
                );
                // The 5-pod runs compare the two strategies: neither shares the cores
                // with clusters the other did not have.
                for name in ["three", "keyowner"] {
                    gone(&Cluster::of(&p, name)).await;
                }
            }
            let extra = json!({"rollout": {"strategy": strategy}});
            let (formed, running) = form(&p, &op, "five", 5, extra).await;
            println!("form 5 replicas ({strategy}): apply → Formed {formed} ms, → Running {running} ms");
            let c = Cluster::of(&p, "five");
            let (reconciles, requests, writes) = c.steady_state(&op, 3).await;
            println!(
                "steady state ({strategy}): {:.1} API requests per reconcile, {writes} writes in {reconciles} reconciles",
                requests / reconciles
            );
            let mut rollouts = Vec::new();
            for run in 0..runs {
                let image = retagged(p.agent_image(), &format!("v{}", run + 2));
                let r = roll(&c, &op, &image, 5).await;
                println!(
                    "rollout of 5 ({strategy}) #{}: {} ms, oldest changed {}×, fewest Up {}, order {:?}",
                    run + 1,
                    r.millis,
                    r.oldest_changes,
                    r.min_up,
                    r.order
                );
                rollouts.push(r);
            }
            let rss = rss_mib(op.pid());
            println!("operator RSS after the {strategy} runs: {rss:.1} MiB");
            rows.push((strategy, rollouts, rss));
            drop(op);
            drop(p);
        }
        println!();
        println!("| strategy | rollout of 5, median ms | oldest changes | fewest Up | operator RSS MiB |");
        println!("|---|---|---|---|---|");
        let mut medians = Vec::new();
        for (strategy, rollouts, rss) in &rows {
            let m = median(rollouts.iter().map(|r| r.millis).collect());
            medians.push(m);
            let changes: Vec<String> = rollouts.iter().map(|r| r.oldest_changes.to_string()).collect();
            let min_up = rollouts.iter().map(|r| r.min_up).min().unwrap_or(0);
            println!("| {strategy} | {m} | {} | {min_up} | {rss:.1} |", changes.join(", "));
        }
        if let [oldest_last, ordinal] = medians[..] {
            println!(
                "OldestLast / Ordinal wall time: {:.2}",
                oldest_last as f64 / ordinal.max(1) as f64
            );
        }
    });
}
