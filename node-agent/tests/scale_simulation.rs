//! Deterministic simulation of membership at scale and under CPU starvation: the real
//! membership core of every node (gossip, heartbeats, failure detection, leader actions
//! and the split brain resolver with its defaults), driven by a discrete-event scheduler
//! with simulated time, network and CPU.
//!
//! The CPU model is what makes starvation real here: the nodes share `cores` processors
//! (2, as on the machine the issue was found on). Handling an event takes
//! [`BASE_COST`] plus [`BYTE_COST`] per byte received and sent (JSON, as on the wire),
//! each node handles one event at a time, and an event waits until both its node and a
//! core are free. So the cost of the protocol itself slows every node down, as it does
//! for real processes; a protocol whose cost grows too fast starves itself. On top,
//! starvation runs add what a loaded Kubernetes node does to a pod: burner threads that
//! halve the cores, and pauses of 0.1–3 s on many nodes at random times (CPU throttling,
//! stop-the-world pauses, a noisy neighbour).
//!
//! Every node starts within `spread` of the first; the first forms the cluster and the
//! others join it, as bootstrap has them do (bootstrap itself is simulated in
//! `tests/simulation.rs`). Every node lives the whole run and no pause is long enough to
//! look like a crash, so any member the resolver downs is a healthy member downed.
//!
//! Checks, in every run: nobody is ever downed, and all N are Up in one cluster, with the
//! same members everywhere, before the deadline. Printed: per N, the simulated time until
//! all are Up (p50, max), and per node the messages and bytes sent per second while
//! forming and when idle.
//!
//! The test suite runs a bounded version (a debug build needs about 2.5 s per
//! starvation run); the full one is
//! `SIM_SCALE_RUNS=1000 SIM_SCALE_BIG=1000 cargo test --release -p node-agent --test
//! scale_simulation` (about 6 min for the starvation runs, 6 more for 1,000 nodes).
//! `SIM_SCALE_RUNS` (default 40 starvation runs of 20–60 nodes), `SIM_SCALE_SIZES`
//! (default `25,50,100`: healthy-CPU runs for the cost table), `SIM_SCALE_SIZE_RUNS`
//! (runs per size, default 1), `SIM_SCALE_BIG` (default 0: skip; N: one run of N nodes
//! without the CPU model, started over 10 s), `SIM_SEED=S` replays one starvation seed
//! with a trace.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use node_agent::base::address::{NodeAddress, UniqueAddress};
use node_agent::base::member::MemberStatus;
use node_agent::base::rng::Rng;
use node_agent::base::time::Time;
use node_agent::config::{FailureDetectorConfig, SplitBrainResolverConfig};
use node_agent::membership::core::{MembershipCore, MembershipSettings, Outgoing, Phase};
use node_agent::membership::member::MemberInfo;
use node_agent::membership::messages::{Envelope, Message};
use node_agent::membership::sbr::Downing;
use node_agent::membership::vclock::VectorClock;

const CLUSTER_PORT: u16 = 2552;
/// CPU time to handle one event (wake-up, syscalls, bookkeeping).
const BASE_COST: Duration = Duration::from_micros(40);
/// CPU time per byte received or sent: JSON encoding or decoding plus HMAC.
const BYTE_COST_NS: u64 = 12;
const BYTE_COST: &str = "12 ns";

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

#[derive(Debug, Clone)]
struct Scenario {
    n: usize,
    /// Spread of the start times.
    spread: Duration,
    /// Processors shared by all nodes; `None`: no CPU model (events cost nothing).
    cores: Option<usize>,
    /// Burner threads keep the cores busy: every cost counts this many times.
    slowdown: u32,
    /// Each node's pauses: (start, length).
    pauses: Vec<Vec<(Time, Duration)>>,
    message_loss: f64,
    deadline: Duration,
    /// How long the run goes on after everyone is Up (idle cost, late downings).
    settle: Duration,
}

impl Scenario {
    fn healthy(n: usize, cores: Option<usize>) -> Self {
        Self {
            n,
            spread: ms(1000),
            cores,
            slowdown: 1,
            pauses: vec![vec![]; n],
            message_loss: 0.0,
            deadline: Duration::from_secs(if n > 200 { 600 } else { 120 }),
            settle: Duration::from_secs(30),
        }
    }

    fn starved(rng: &mut Rng) -> Self {
        let n = 20 + rng.below(41) as usize;
        let spread = ms(rng.below(3000));
        // Pauses: on a third to all of the nodes, during the first minute.
        let paused_share = 0.33 + rng.unit() * 0.67;
        let pauses = (0..n)
            .map(|_| {
                if !rng.chance(paused_share) {
                    return vec![];
                }
                let mut out = vec![];
                let mut t = ms(rng.below(5000));
                while t < Duration::from_secs(60) {
                    let len = ms(100 + rng.below(2901));
                    out.push((t, len));
                    t += len + ms(2000 + rng.below(15000));
                }
                out
            })
            .collect();
        Self {
            n,
            spread,
            cores: Some(2),
            slowdown: if rng.chance(0.5) { 2 } else { 1 },
            pauses,
            message_loss: rng.unit() * 0.02,
            deadline: Duration::from_secs(150),
            settle: Duration::from_secs(60),
        }
    }
}

/// Something for a node to handle.
#[derive(Debug)]
enum Work {
    Start,
    Wake,
    Deliver { env: Box<Envelope>, bytes: u64 },
}

#[derive(Debug)]
enum Event {
    /// Work arrives at a node (its timer fires, a message comes in).
    Arrive(usize, Work),
    /// A node finished handling one piece of work; its core is free again.
    Done(usize),
    /// A node's pause ends.
    Resume(usize),
}

type SizeKey = (VectorClock, usize, u64);

struct Node {
    core: MembershipCore,
    rng: Rng,
    wake_at: Option<Time>,
}

/// The CPU: nodes with work wait in one run queue (round robin, as a fair scheduler
/// does); `free` cores take the next one, one piece of work at a time.
#[derive(Default)]
struct Cpu {
    free: usize,
    runq: std::collections::VecDeque<usize>,
    inbox: Vec<std::collections::VecDeque<Work>>,
    queued: Vec<bool>,
    running: Vec<bool>,
    resume_at: Vec<Option<Time>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Traffic {
    messages: u64,
    bytes: u64,
}

struct Sim {
    sc: Scenario,
    rng: Rng,
    now: Time,
    seq: u64,
    queue: BTreeMap<(Time, u64), Event>,
    nodes: Vec<Option<Node>>,
    addresses: Vec<NodeAddress>,
    index: BTreeMap<NodeAddress, usize>,
    cpu: Cpu,
    /// Events handled, to stop a run that explodes.
    events: u64,
    /// Messages and bytes sent before all were Up, and after.
    forming: Traffic,
    idle: Traffic,
    all_up_at: Option<Time>,
    /// Each node's last encoded state: its version, seen count and reachability version,
    /// and its size.
    size_cache: Vec<Option<(SizeKey, u64)>>,
    /// Which nodes see all N Up, and how many do.
    sees_all_up: Vec<bool>,
    up_count: usize,
    trace: bool,
}

fn settings() -> MembershipSettings {
    MembershipSettings {
        gossip_interval: ms(1000),
        leader_actions_interval: ms(1000),
        allow_weakly_up_members: Some(ms(7000)),
        retry_unsuccessful_join_after: ms(5000),
        seed_node_timeout: ms(5000),
        failure_detector: FailureDetectorConfig::default(),
        downing: Downing::from_config(&SplitBrainResolverConfig::default()),
        shutdown_after_unsuccessful_join: None,
    }
}

/// Bytes of an envelope on the wire (its JSON; the frame adds a fixed few).
fn wire_bytes(env: &Envelope) -> u64 {
    serde_json::to_vec(env).map_or(0, |v| v.len() as u64)
}

impl Sim {
    fn new(sc: Scenario, seed: u64, trace: bool) -> Self {
        let n = sc.n;
        let mut rng = Rng::seeded(seed);
        let addresses: Vec<NodeAddress> = (0..sc.n)
            .map(|i| {
                let [_, _, a, b] = (i as u32 + 1).to_be_bytes();
                NodeAddress::new("sim", IpAddr::V4(Ipv4Addr::new(10, 1, a, b)), CLUSTER_PORT)
            })
            .collect();
        let index = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i))
            .collect();
        let mut sim = Self {
            nodes: (0..sc.n).map(|_| None).collect(),
            cpu: Cpu {
                free: sc.cores.unwrap_or(0),
                inbox: (0..sc.n).map(|_| Default::default()).collect(),
                queued: vec![false; sc.n],
                running: vec![false; sc.n],
                resume_at: vec![None; sc.n],
                ..Default::default()
            },
            events: 0,
            sc,
            now: Duration::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            addresses,
            index,
            forming: Traffic::default(),
            idle: Traffic::default(),
            all_up_at: None,
            sees_all_up: vec![false; n],
            size_cache: vec![None; n],
            up_count: 0,
            trace,
            rng: Rng::seeded(0),
        };
        // Node 0 starts first (it forms); the others within `spread`.
        for i in 0..sim.sc.n {
            let at = if i == 0 {
                Duration::ZERO
            } else {
                ms(rng.below(sim.sc.spread.as_millis() as u64 + 1))
            };
            sim.at(at, Event::Arrive(i, Work::Start));
        }
        sim.rng = rng;
        sim
    }

    fn at(&mut self, t: Time, e: Event) {
        self.seq += 1;
        self.queue.insert((t, self.seq), e);
    }

    fn log(&self, msg: impl FnOnce() -> String) {
        if self.trace {
            println!("{:>8.3}s {}", self.now.as_secs_f64(), msg());
        }
    }

    /// The end of the pause node `i` is in at `t`, if it is paused.
    fn paused_until(&self, i: usize, t: Time) -> Option<Time> {
        self.sc.pauses[i]
            .iter()
            .find(|(start, len)| (*start..*start + *len).contains(&t))
            .map(|(start, len)| *start + *len)
    }

    fn cost(&self, bytes: u64) -> Duration {
        (BASE_COST + Duration::from_nanos(bytes * BYTE_COST_NS)) * self.sc.slowdown
    }

    /// Runs until the deadline; `Err` names what went wrong.
    fn run(&mut self) -> Result<(), String> {
        let end = self.sc.deadline;
        let mut next_report = Duration::ZERO;
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            if t > end || self.all_up_at.is_some_and(|up| t > up + self.sc.settle) {
                break;
            }
            self.now = t;
            self.events += 1;
            if self.events > 50_000_000 {
                return Err(format!(
                    "more than 50 million events by {t:?}: {}",
                    self.summary()
                ));
            }
            if self.trace && t >= next_report {
                next_report = t + Duration::from_secs(1);
                println!(
                    "{:>8.3}s events {} queued {} runnable {} | {}",
                    t.as_secs_f64(),
                    self.events,
                    self.queue.len(),
                    self.cpu.runq.len(),
                    self.summary()
                );
            }
            match ev {
                Event::Arrive(i, work) if self.sc.cores.is_none() => {
                    self.work(i, work);
                    self.observe(i)?;
                }
                Event::Arrive(i, work) => {
                    self.cpu.inbox[i].push_back(work);
                    self.runnable(i);
                }
                Event::Done(i) => {
                    self.cpu.running[i] = false;
                    self.cpu.free += 1;
                    self.runnable(i);
                }
                Event::Resume(i) => {
                    self.cpu.resume_at[i] = None;
                    self.runnable(i);
                }
            }
            self.dispatch()?;
        }
        if self.all_up_at.is_none() {
            return Err(format!(
                "not all {} Up after {:?}: {}",
                self.sc.n,
                end,
                self.summary()
            ));
        }
        Ok(())
    }

    /// Node `i` joins the run queue if it has work and is neither running, queued nor
    /// paused (then it joins when its pause ends).
    fn runnable(&mut self, i: usize) {
        let c = &self.cpu;
        if c.inbox[i].is_empty() || c.running[i] || c.queued[i] || c.resume_at[i].is_some() {
            return;
        }
        if let Some(until) = self.paused_until(i, self.now) {
            self.cpu.resume_at[i] = Some(until);
            self.at(until, Event::Resume(i));
            return;
        }
        self.cpu.queued[i] = true;
        self.cpu.runq.push_back(i);
    }

    /// Free cores take runnable nodes, one piece of work each.
    fn dispatch(&mut self) -> Result<(), String> {
        while self.cpu.free > 0 {
            let Some(i) = self.cpu.runq.pop_front() else {
                return Ok(());
            };
            self.cpu.queued[i] = false;
            if let Some(until) = self.paused_until(i, self.now) {
                self.cpu.resume_at[i] = Some(until);
                self.at(until, Event::Resume(i));
                continue;
            }
            let Some(work) = self.cpu.inbox[i].pop_front() else {
                continue;
            };
            self.cpu.free -= 1;
            self.cpu.running[i] = true;
            let spent = self.work(i, work);
            let now = self.now;
            self.at(now + spent, Event::Done(i));
            self.observe(i)?;
        }
        Ok(())
    }

    /// Node `i` handles `work` at `now`; its messages leave when it is done. Returns the
    /// CPU time it took (zero without the CPU model).
    fn work(&mut self, i: usize, work: Work) -> Duration {
        let (received, out) = self.handle(i, work);
        // Encoding every message of a 1,000-node run would dominate it: without the
        // CPU model, sizes are only counted for small clusters.
        let sent_bytes: Vec<u64> = if self.sc.cores.is_some() || self.sc.n <= 200 {
            // State messages carry the node's state, the same until it changes: each
            // state is encoded once per node (the envelope around it varies by a few
            // bytes).
            out.iter()
                .map(|o| match &o.envelope.message {
                    Message::Gossip { gossip } | Message::Welcome { gossip } => {
                        let key = (
                            gossip.version().clone(),
                            gossip.seen().len(),
                            gossip.reachability().max_version(),
                        );
                        match &self.size_cache[i] {
                            Some((k, bytes)) if *k == key => *bytes,
                            _ => {
                                let bytes = wire_bytes(&o.envelope);
                                self.size_cache[i] = Some((key, bytes));
                                bytes
                            }
                        }
                    }
                    _ => wire_bytes(&o.envelope),
                })
                .collect()
        } else {
            vec![0; out.len()]
        };
        let spent = if self.sc.cores.is_some() {
            self.cost(received + sent_bytes.iter().sum::<u64>())
        } else {
            Duration::ZERO
        };
        let now = self.now;
        self.send(now + spent, out, sent_bytes);
        self.after(i, now + spent);
        spent
    }

    /// Handles one piece of work; returns the bytes received and what to send.
    fn handle(&mut self, i: usize, work: Work) -> (u64, Vec<Outgoing>) {
        let now = self.now;
        match work {
            Work::Start => {
                let uid = self.rng.next_u64();
                let me = UniqueAddress::new(self.addresses[i].clone(), uid);
                let mut core = MembershipCore::new(
                    me,
                    MemberInfo {
                        roles: BTreeSet::new(),
                        app_version: "1".into(),
                    },
                    settings(),
                    now,
                );
                let out = if i == 0 {
                    core.form(now)
                } else {
                    core.join(now, vec![self.addresses[0].clone()])
                };
                self.nodes[i] = Some(Node {
                    core,
                    rng: Rng::seeded(self.rng.next_u64()),
                    wake_at: None,
                });
                (0, out)
            }
            Work::Wake => {
                let Some(node) = self.nodes[i].as_mut() else {
                    return (0, vec![]);
                };
                if node.wake_at.is_some_and(|w| w > now) {
                    return (0, vec![]); // a newer timer replaced this one
                }
                node.wake_at = None;
                (0, node.core.tick(now, &mut node.rng))
            }
            Work::Deliver { env, bytes } => {
                let Some(node) = self.nodes[i].as_mut() else {
                    return (bytes, vec![]); // not started yet: connection refused
                };
                (
                    bytes,
                    node.core
                        .receive(now, &mut node.rng, *env)
                        .unwrap_or_default(),
                )
            }
        }
    }

    fn send(&mut self, at: Time, out: Vec<Outgoing>, sizes: Vec<u64>) {
        for (o, bytes) in out.into_iter().zip(sizes) {
            let traffic = if self.all_up_at.is_some() {
                &mut self.idle
            } else {
                &mut self.forming
            };
            traffic.messages += 1;
            traffic.bytes += bytes;
            let Some(&to) = self.index.get(&o.to) else {
                continue;
            };
            if self.rng.chance(self.sc.message_loss) {
                continue;
            }
            let d = Duration::from_micros(200 + self.rng.below(1800));
            self.at(
                at + d,
                Event::Arrive(
                    to,
                    Work::Deliver {
                        env: Box::new(o.envelope),
                        bytes,
                    },
                ),
            );
        }
    }

    /// Arms node `i`'s timer for its next wake-up (not before `earliest`).
    fn after(&mut self, i: usize, earliest: Time) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let next = node.core.next_wakeup().map(|t| t.max(earliest));
        if next.is_some() && next != node.wake_at {
            node.wake_at = next;
            if let Some(t) = next {
                self.at(t, Event::Arrive(i, Work::Wake));
            }
        }
    }

    /// After node `i` handled something: records downings it sees and whether it sees
    /// all N Up; notes the moment every node does.
    fn observe(&mut self, i: usize) -> Result<(), String> {
        let Some(node) = self.nodes[i].as_ref() else {
            return Ok(());
        };
        let downed: Vec<UniqueAddress> = node
            .core
            .gossip()
            .members()
            .filter(|m| m.status == MemberStatus::Down)
            .map(|m| m.node.clone())
            .chain(matches!(node.core.phase(), Phase::Downed).then(|| node.core.me().clone()))
            .collect();
        if !downed.is_empty() {
            self.log(|| format!("node {i} sees DOWN: {downed:?}"));
            return Err(format!(
                "{} healthy member(s) downed at {:.1}s: {}",
                downed.len(),
                self.now.as_secs_f64(),
                self.summary()
            ));
        }
        let g = node.core.gossip();
        let sees_all = node.core.is_member()
            && g.len() == self.sc.n
            && g.members().all(|m| m.status == MemberStatus::Up);
        if sees_all != self.sees_all_up[i] {
            self.sees_all_up[i] = sees_all;
            if sees_all {
                self.up_count += 1;
            } else {
                self.up_count -= 1;
            }
        }
        if self.all_up_at.is_none() && self.up_count == self.sc.n {
            self.all_up_at = Some(self.now);
            self.log(|| format!("all {} Up", self.sc.n));
        }
        Ok(())
    }

    fn summary(&self) -> String {
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        if let Some(n) = self.nodes.iter().flatten().next() {
            for m in n.core.gossip().members() {
                *by_status.entry(m.status.as_str().to_owned()).or_default() += 1;
            }
        }
        let unreachable = self.nodes.iter().flatten().next().map_or(0, |n| {
            n.core.gossip().reachability().unreachable_members().len()
        });
        format!("node 0 sees {by_status:?}, {unreachable} unreachable")
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed: u64 = seed.parse().expect("SIM_SEED is a number");
        let mut rng = Rng::seeded(seed);
        let sc = Scenario::starved(&mut rng);
        println!("seed {seed}: {sc:?}");
        let mut sim = Sim::new(sc, seed, true);
        match sim.run() {
            Ok(()) => println!("ok: all Up at {:?}", sim.all_up_at),
            Err(e) => {
                println!("FAILED: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let started = Instant::now();
    // Starvation: many seeds, sizes 20–60, pauses and burners.
    let runs = env_usize("SIM_SCALE_RUNS", 40);
    let mut failures = Vec::new();
    let mut up_times = Vec::new();
    for seed in 0..runs as u64 {
        let mut rng = Rng::seeded(seed);
        let sc = Scenario::starved(&mut rng);
        let n = sc.n;
        let mut sim = Sim::new(sc, seed, false);
        match sim.run() {
            Ok(()) => up_times.push(sim.all_up_at.expect("all up")),
            Err(e) => failures.push(format!("seed {seed} (N = {n}): {e}")),
        }
    }
    up_times.sort();
    println!(
        "starvation: {runs} runs of 20–60 nodes on 2 simulated cores (costs {BASE_COST:?} + {BYTE_COST}/byte, burners in half, pauses of 0.1–3 s): {} failed; all Up p50 {:.2}s max {:.2}s",
        failures.len(),
        up_times
            .first()
            .map_or(0.0, |_| percentile(&up_times, 0.5).as_secs_f64()),
        up_times.last().map_or(0.0, |t| t.as_secs_f64()),
    );
    // Cost per size, healthy CPU.
    let sizes: Vec<usize> = std::env::var("SIM_SCALE_SIZES")
        .unwrap_or_else(|_| "25,50,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "\n| N | all Up p50 | max | forming msgs/s/node | forming KiB/s/node | idle msgs/s/node | idle KiB/s/node |"
    );
    println!("|---|---|---|---|---|---|---|");
    for n in sizes {
        let mut times = Vec::new();
        let (mut f, mut fs, mut idle, mut is) = (Traffic::default(), 0.0, Traffic::default(), 0.0);
        for k in 0..env_usize("SIM_SCALE_SIZE_RUNS", 1) as u64 {
            let seed = 1_000_000 + n as u64 * 100 + k;
            let mut sim = Sim::new(Scenario::healthy(n, Some(2)), seed, false);
            match sim.run() {
                Ok(()) => {
                    let up = sim.all_up_at.expect("all up");
                    times.push(up);
                    f.messages += sim.forming.messages;
                    f.bytes += sim.forming.bytes;
                    fs += up.as_secs_f64() * n as f64;
                    idle.messages += sim.idle.messages;
                    idle.bytes += sim.idle.bytes;
                    is += sim.sc.settle.as_secs_f64() * n as f64;
                }
                Err(e) => failures.push(format!("healthy N = {n} seed {seed}: {e}")),
            }
        }
        times.sort();
        if times.is_empty() {
            continue;
        }
        println!(
            "| {n} | {:.2}s | {:.2}s | {:.1} | {:.1} | {:.1} | {:.1} |",
            percentile(&times, 0.5).as_secs_f64(),
            times.last().expect("times").as_secs_f64(),
            f.messages as f64 / fs,
            f.bytes as f64 / fs / 1024.0,
            idle.messages as f64 / is,
            idle.bytes as f64 / is / 1024.0,
        );
    }
    let big = env_usize("SIM_SCALE_BIG", 0);
    if big > 0 {
        let mut sc = Scenario::healthy(big, None);
        sc.spread = Duration::from_secs(10);
        let mut sim = Sim::new(sc, 7, false);
        match sim.run() {
            Ok(()) => println!(
                "\n{big} nodes (no CPU model, started over 10 s): all Up after {:.1}s simulated",
                sim.all_up_at.expect("all up").as_secs_f64()
            ),
            Err(e) => failures.push(format!("{big} nodes: {e}")),
        }
    }
    println!("(simulation took {:.1}s)", started.elapsed().as_secs_f64());
    if !failures.is_empty() {
        for f in failures.iter().take(20) {
            println!("FAILED {f}");
        }
        println!(
            "{} failures; replay one with SIM_SEED=<seed>",
            failures.len()
        );
        std::process::exit(1);
    }
}
