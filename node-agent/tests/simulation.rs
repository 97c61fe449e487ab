//! Deterministic simulation: the real bootstrap and membership cores of 3–9 nodes,
//! driven by a discrete-event scheduler with simulated time, network and discovery.
//!
//! Each run draws from its seed: node addresses, when each pod appears in discovery and
//! when its agent starts (random start delays), discovery that for the first seconds
//! answers with stale (partial), shuffled views of the growing set of pods and sometimes
//! fails, message delay and loss, probe loss, `required-contact-point-nr` (2 or N) and
//! contact-point agreement on or off. Every run must end with exactly one cluster that
//! contains every node, all Up, the same members everywhere — and exactly one node may
//! ever have formed a cluster.
//!
//! `SIM_RUNS=N` changes the number of runs (default 1200); `SIM_SEED=S` replays one
//! seed with a trace of every decision. A failing run prints its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use node_agent::api::{SeedNodes, check};
use node_agent::base::address::{ContactPoint, NodeAddress, UniqueAddress};
use node_agent::base::rng::Rng;
use node_agent::base::time::Time;
use node_agent::bootstrap::decider::{DeciderSettings, ProbeAnswer, SelfIdentity};
use node_agent::bootstrap::state::{Action, Bootstrap, Instruction, Schedule};
use node_agent::membership::core::{MembershipCore, MembershipSettings, Outgoing};
use node_agent::membership::member::MemberInfo;
use node_agent::membership::messages::Envelope;
use node_agent::membership::report;

const MANAGEMENT_PORT: u16 = 8558;
const CLUSTER_PORT: u16 = 2552;
/// Simulated time after which a run that has not formed one cluster fails.
const DEADLINE: Duration = Duration::from_secs(90);

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

#[derive(Debug, Clone)]
struct Scenario {
    n: usize,
    ips: Vec<IpAddr>,
    /// When each pod becomes visible in the discovery source.
    created: Vec<Time>,
    /// When each agent process starts.
    started: Vec<Time>,
    /// Until then discovery is stale by up to `max_lag` and fails with `lookup_failure`.
    chaos_until: Time,
    max_lag: Duration,
    lookup_failure: f64,
    message_loss: f64,
    probe_loss: f64,
    required: usize,
    agreement: bool,
}

impl Scenario {
    fn draw(rng: &mut Rng) -> Self {
        let n = 3 + rng.below(7) as usize;
        let mut octets: Vec<u8> = (1..=254).collect();
        rng.shuffle(&mut octets);
        let ips = octets[..n]
            .iter()
            .map(|o| IpAddr::V4(Ipv4Addr::new(10, 0, 0, *o)))
            .collect();
        let created: Vec<Time> = (0..n).map(|_| ms(rng.below(2000))).collect();
        let started = created.iter().map(|c| *c + ms(rng.below(1500))).collect();
        Self {
            n,
            ips,
            created,
            started,
            chaos_until: ms(4000),
            max_lag: ms(1500),
            lookup_failure: rng.unit() * 0.2,
            message_loss: rng.unit() * 0.1,
            probe_loss: rng.unit() * 0.1,
            required: if rng.chance(0.5) { 2 } else { n },
            agreement: rng.chance(0.85),
        }
    }
}

#[derive(Debug)]
enum Event {
    Start(usize),
    Wake(usize),
    LookupDone {
        node: usize,
        result: Result<Vec<ContactPoint>, String>,
    },
    /// A probe request reaches `to`; `answer` is false for the nudge round after joining.
    ProbeArrives {
        from: usize,
        to: usize,
        answer: bool,
    },
    ProbeAnswer {
        node: usize,
        cp: ContactPoint,
        result: Result<SeedNodes, String>,
    },
    Deliver {
        to: usize,
        env: Envelope,
    },
}

struct Node {
    boot: Bootstrap,
    member: MembershipCore,
    rng: Rng,
    wake_at: Option<Time>,
}

struct Sim {
    sc: Scenario,
    rng: Rng,
    now: Time,
    seq: u64,
    queue: BTreeMap<(Time, u64), Event>,
    nodes: Vec<Option<Node>>,
    formed: Vec<(usize, Time)>,
    trace: bool,
}

fn schedule_settings() -> Schedule {
    // Akka's defaults, as a user gets them.
    Schedule {
        interval: ms(1000),
        exponential_backoff_random_factor: 0.2,
        exponential_backoff_max: ms(15000),
        probe_interval: ms(1000),
        probe_interval_jitter: 0.2,
        probing_failure_timeout: ms(3000),
    }
}

impl Sim {
    fn new(seed: u64, trace: bool) -> Self {
        let mut rng = Rng::seeded(seed);
        let sc = Scenario::draw(&mut rng);
        let mut sim = Self {
            nodes: (0..sc.n).map(|_| None).collect(),
            sc,
            rng,
            now: Duration::ZERO,
            seq: 0,
            queue: BTreeMap::new(),
            formed: vec![],
            trace,
        };
        for i in 0..sim.sc.n {
            let at = sim.sc.started[i];
            sim.at(at, Event::Start(i));
        }
        sim
    }

    fn at(&mut self, t: Time, e: Event) {
        self.seq += 1;
        self.queue.insert((t, self.seq), e);
    }

    fn cp(&self, i: usize) -> ContactPoint {
        ContactPoint::new(self.sc.ips[i], MANAGEMENT_PORT)
    }

    fn index_of_ip(&self, ip: IpAddr) -> usize {
        self.sc
            .ips
            .iter()
            .position(|x| *x == ip)
            .expect("known node")
    }

    fn latency(&mut self, max_ms: u64) -> Duration {
        Duration::from_micros(500 + self.rng.below(max_ms * 1000))
    }

    fn log(&self, msg: impl FnOnce() -> String) {
        if self.trace {
            println!("{:>8.3}s {}", self.now.as_secs_f64(), msg());
        }
    }

    fn start(&mut self, i: usize) {
        let cp = self.cp(i);
        let address = NodeAddress::new("sim", self.sc.ips[i], CLUSTER_PORT);
        let decider = DeciderSettings {
            required_contact_point_nr: self.sc.required,
            stable_margin: ms(5000),
            contact_with_all_contact_points: true,
            new_cluster_enabled: true,
            probing_failure_timeout: ms(3000),
            contact_point_agreement: self.sc.agreement,
        };
        let membership = MembershipSettings {
            gossip_interval: ms(1000),
            leader_actions_interval: ms(1000),
            allow_weakly_up_members: Some(ms(7000)),
            retry_unsuccessful_join_after: ms(2000),
            seed_node_timeout: ms(5000),
            failure_detector: node_agent::config::FailureDetectorConfig::default(),
            downing: None,
            shutdown_after_unsuccessful_join: None,
        };
        let uid = self.rng.next_u64();
        let node = Node {
            boot: Bootstrap::new(
                schedule_settings(),
                decider,
                SelfIdentity {
                    management: cp,
                    address: address.clone(),
                },
                self.now,
            ),
            member: MembershipCore::new(
                UniqueAddress::new(address, uid),
                MemberInfo {
                    roles: BTreeSet::new(),
                    app_version: "1".into(),
                },
                membership,
                self.now,
            ),
            rng: Rng::seeded(self.rng.next_u64()),
            wake_at: None,
        };
        self.nodes[i] = Some(node);
        self.log(|| format!("node {i} ({}) starts", self.sc.ips[i]));
        self.after(i);
    }

    fn node(&mut self, i: usize) -> &mut Node {
        self.nodes[i].as_mut().expect("started")
    }

    /// The discovery source as one node's lookup sees it now: a possibly stale snapshot.
    fn lookup(&mut self) -> Result<Vec<ContactPoint>, String> {
        let chaos = self.now < self.sc.chaos_until;
        if chaos && self.rng.chance(self.sc.lookup_failure) {
            return Err("simulated lookup failure".into());
        }
        let lag = if chaos {
            ms(self.rng.below(self.sc.max_lag.as_millis() as u64 + 1))
        } else {
            Duration::ZERO
        };
        let view_at = self.now.saturating_sub(lag);
        let mut found: Vec<ContactPoint> = (0..self.sc.n)
            .filter(|k| self.sc.created[*k] <= view_at)
            .map(|k| self.cp(k))
            .collect();
        self.rng.shuffle(&mut found);
        Ok(found)
    }

    /// Runs the shell logic after any input to node `i` (as the coordinator and actor do).
    fn after(&mut self, i: usize) {
        let now = self.now;
        let actions = self.node(i).boot.poll(now);
        for a in actions {
            match a {
                Action::Lookup => {
                    let result = self.lookup();
                    let d = self.latency(50);
                    self.at(now + d, Event::LookupDone { node: i, result });
                }
                Action::Probe(cp) => {
                    let to = self.index_of_ip(cp.ip);
                    if self.rng.chance(self.sc.probe_loss) {
                        // Lost request or answer: the prober times out after probe-interval.
                        self.at(
                            now + ms(1000),
                            Event::ProbeAnswer {
                                node: i,
                                cp,
                                result: Err("timed out".into()),
                            },
                        );
                    } else {
                        self.probe(i, to, true);
                    }
                }
            }
        }
        let instruction = self.node(i).boot.instruction(now);
        let out = match instruction {
            Some(Instruction::Join(seeds)) => {
                self.log(|| {
                    format!(
                        "node {i} joins {}",
                        seeds
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                });
                self.node(i).member.join(now, seeds)
            }
            Some(Instruction::Form) => {
                self.log(|| format!("node {i} FORMS a cluster"));
                self.formed.push((i, now));
                self.node(i).member.form(now)
            }
            None => vec![],
        };
        self.send(out);
        if self.node(i).member.is_member() && !self.node(i).boot.is_finished() {
            for cp in self.node(i).boot.finish() {
                let to = self.index_of_ip(cp.ip);
                self.probe(i, to, false);
            }
        }
        let n = self.node(i);
        let next = [n.boot.next_wakeup(now), n.member.next_wakeup()]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(now));
        if next.is_some() && next != n.wake_at {
            n.wake_at = next;
            if let Some(t) = next {
                self.at(t, Event::Wake(i));
            }
        }
    }

    /// A probe request from `from` reaches `to` after network latency.
    fn probe(&mut self, from: usize, to: usize, answer: bool) {
        let d = self.latency(20);
        self.at(self.now + d, Event::ProbeArrives { from, to, answer });
    }

    fn send(&mut self, out: Vec<Outgoing>) {
        for o in out {
            if self.rng.chance(self.sc.message_loss) {
                continue;
            }
            let to = self.index_of_ip(o.to.ip);
            let d = self.latency(30);
            self.at(
                self.now + d,
                Event::Deliver {
                    to,
                    env: o.envelope,
                },
            );
        }
    }

    fn step(&mut self, e: Event) {
        match e {
            Event::Start(i) => self.start(i),
            Event::Wake(i) => {
                let now = self.now;
                let n = self.node(i);
                if n.wake_at != Some(now) {
                    return; // superseded
                }
                n.wake_at = None;
                let out = n.member.tick(now, &mut n.rng);
                self.send(out);
                self.after(i);
            }
            Event::LookupDone { node, result } => {
                let now = self.now;
                let n = self.node(node);
                n.boot
                    .on_lookup(now, &mut n.rng, result.map(|v| (v, vec![])));
                self.after(node);
            }
            Event::ProbeArrives { from, to, answer } => {
                let now = self.now;
                let from_cp = self.cp(from);
                let to_cp = self.cp(to);
                let result = match self.nodes[to].as_mut() {
                    None => Err("connection refused".to_owned()),
                    Some(n) => {
                        n.boot.nudge(now, &from_cp);
                        let seed_nodes = if n.member.is_member() {
                            report::seed_nodes(n.member.gossip())
                        } else {
                            vec![]
                        };
                        Ok(SeedNodes {
                            self_node: n.member.me().address.clone(),
                            seed_nodes,
                            contact_points: Some(n.boot.ever_seen().clone()),
                        })
                    }
                };
                if self.nodes[to].is_some() {
                    self.after(to);
                }
                if answer {
                    let d = self.latency(20);
                    self.at(
                        now + d,
                        Event::ProbeAnswer {
                            node: from,
                            cp: to_cp,
                            result,
                        },
                    );
                }
            }
            Event::ProbeAnswer { node, cp, result } => {
                let now = self.now;
                let n = self.node(node);
                let result = result.map(|answer| ProbeAnswer { at: now, answer });
                n.boot.on_probe(now, &mut n.rng, &cp, result);
                self.after(node);
            }
            Event::Deliver { to, env } => {
                let now = self.now;
                let Some(n) = self.nodes[to].as_mut() else {
                    return;
                };
                if let Ok(out) = n.member.receive(now, &mut n.rng, env) {
                    self.send(out);
                }
                self.after(to);
            }
        }
    }

    /// One cluster of every node, all Up, seen alike everywhere: the check every test
    /// uses ([`check::one_cluster_of`]), on what each node would answer.
    fn one_cluster(&self) -> bool {
        let mut views = Vec::with_capacity(self.sc.n);
        for n in &self.nodes {
            // Cheap first: most events happen long before this can hold.
            let Some(n) = n else { return false };
            if !n.member.is_member() || n.member.gossip().len() != self.sc.n {
                return false;
            }
            views.push(report::cluster_members(
                &n.member.me().address,
                n.member.gossip(),
            ));
        }
        check::one_cluster_of(&views, self.sc.n).is_ok()
    }

    /// Runs to one cluster; returns the formation time after the last agent started.
    fn run(mut self, seed: u64) -> Result<Duration, String> {
        let last_start = *self.sc.started.iter().max().expect("nodes");
        let mut same_instant = 0u32;
        while let Some(((t, _), e)) = self.queue.pop_first() {
            if t > DEADLINE {
                break;
            }
            same_instant = if t == self.now { same_instant + 1 } else { 0 };
            if same_instant > 10_000 {
                return Err(format!(
                    "seed {seed}: livelock, events keep coming at {t:?}; last: {e:?}\n{:?}",
                    self.sc
                ));
            }
            self.now = t;
            let membership_event = matches!(e, Event::Deliver { .. } | Event::Wake(_));
            self.step(e);
            if self.formed.len() > 1 {
                return Err(format!(
                    "seed {seed}: {} nodes formed a cluster: {:?}\n{:?}",
                    self.formed.len(),
                    self.formed,
                    self.sc
                ));
            }
            if membership_event && t >= last_start && self.one_cluster() {
                return Ok(t - last_start);
            }
        }
        let states: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| match n {
                None => format!("node {i}: not started"),
                Some(n) => format!(
                    "node {i} ({}): member={} members={:?} decision={:?}",
                    self.sc.ips[i],
                    n.member.is_member(),
                    n.member
                        .gossip()
                        .members()
                        .map(|m| (m.node.address.ip, m.status))
                        .collect::<Vec<_>>(),
                    n.boot.decide(self.now)
                ),
            })
            .collect();
        Err(format!(
            "seed {seed}: no single cluster after {DEADLINE:?}\n{:?}\n{}",
            self.sc,
            states.join("\n")
        ))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed: u64 = seed.parse().expect("SIM_SEED is a number");
        let sim = Sim::new(seed, true);
        println!("{:?}", sim.sc);
        match sim.run(seed) {
            Ok(t) => println!(
                "seed {seed}: one cluster {:.3}s after the last start",
                t.as_secs_f64()
            ),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let runs: u64 = std::env::var("SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200);
    let base: u64 = std::env::var("SIM_BASE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut times: BTreeMap<(usize, &str), Vec<Duration>> = BTreeMap::new();
    let mut failures = Vec::new();
    for seed in base..base + runs {
        let sim = Sim::new(seed, false);
        let key = (
            sim.sc.n,
            if sim.sc.required == sim.sc.n {
                "required=N"
            } else {
                "required=2"
            },
        );
        match sim.run(seed) {
            Ok(t) => times.entry(key).or_default().push(t),
            Err(e) => failures.push(e),
        }
    }
    println!(
        "simulation: {runs} seeded runs (seeds {base}..{}), formation time after the last agent started:",
        base + runs - 1
    );
    println!(
        "{:>5} {:>11} {:>5} {:>8} {:>8} {:>8}",
        "nodes", "setting", "runs", "p50", "p95", "max"
    );
    let mut all = Vec::new();
    for ((n, setting), mut ts) in times {
        ts.sort();
        println!(
            "{n:>5} {setting:>11} {:>5} {:>7.2}s {:>7.2}s {:>7.2}s",
            ts.len(),
            percentile(&ts, 0.5).as_secs_f64(),
            percentile(&ts, 0.95).as_secs_f64(),
            ts[ts.len() - 1].as_secs_f64()
        );
        all.extend(ts);
    }
    all.sort();
    if !all.is_empty() {
        println!(
            "  all {:>11} {:>5} {:>7.2}s {:>7.2}s {:>7.2}s",
            "",
            all.len(),
            percentile(&all, 0.5).as_secs_f64(),
            percentile(&all, 0.95).as_secs_f64(),
            all[all.len() - 1].as_secs_f64()
        );
    }
    if !failures.is_empty() {
        for f in failures.iter().take(5) {
            eprintln!("{f}\n");
        }
        eprintln!(
            "{} of {runs} runs failed; replay one with SIM_SEED=<seed>",
            failures.len()
        );
        std::process::exit(1);
    }
    println!("every run ended with exactly one cluster containing every node");
}
