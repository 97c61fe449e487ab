//! Deterministic simulation: the real bootstrap and membership cores of 3–9 nodes,
//! driven by a discrete-event scheduler with simulated time, network and discovery.
//!
//! Each run draws from its seed: node addresses, pods created together or spread out,
//! random agent start delays, message delay and loss, probe loss,
//! `required-contact-point-nr` (2 or N), contact-point agreement on or off and
//! `expected-contact-point-nr` (N or unset) — and how discovery misbehaves ([`Views`]):
//! stale snapshots of a growing set, views split into two disjoint halves for 0.5–2 s,
//! answers stale by up to resolve-timeout + interval (so views shrink and are not
//! nested), two shared caches that keep an answer for a TTL, pods flapping in and out,
//! or pods of an earlier deployment that never answer and then vanish. Some runs add a
//! liar ([`Lie`]): a contact point that claims to be the prober, echoes each prober's
//! set, lists thousands of seed nodes, or reports a cluster that does not exist. Half the
//! runs use a formation record (`bootstrap.formation-lease`): a simulated API server
//! whose claims may fail, half of them after the write was applied (a lost answer),
//! answering after a delay.
//!
//! In every run at most one node may ever form a cluster (0 split clusters). The first
//! `SIM_LIVENESS_RUNS` seeds without a liar must also end in exactly one cluster of every
//! node, all Up, the same members everywhere; the others run until every node decided.
//!
//! `SIM_RUNS=N` changes the number of runs (default 10,000), `SIM_LIVENESS_RUNS` how
//! many of them run to one cluster (default 1,200); `SIM_SEED=S` replays one seed with a
//! trace of every decision. A failing run prints its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use node_agent::api::{SeedNode, SeedNodes, check};
use node_agent::base::address::{ContactPoint, NodeAddress, UniqueAddress};
use node_agent::base::member::MemberStatus;
use node_agent::base::rng::Rng;
use node_agent::base::time::Time;
use node_agent::bootstrap::decider::{DeciderSettings, ProbeAnswer, SelfIdentity};
use node_agent::bootstrap::state::{Action, Bootstrap, ClaimOutcome, Instruction, Schedule};
use node_agent::membership::core::{MembershipCore, MembershipSettings, Outgoing};
use node_agent::membership::member::MemberInfo;
use node_agent::membership::messages::Envelope;
use node_agent::membership::report;

const MANAGEMENT_PORT: u16 = 8558;
const CLUSTER_PORT: u16 = 2552;
/// Simulated time after which a run that has not formed one cluster fails.
const DEADLINE: Duration = Duration::from_secs(90);
/// Simulated time after which a run that only checks safety stops: long past every
/// stable margin, so a node that has not decided by then is blocked (by a liar).
const SAFETY_DEADLINE: Duration = Duration::from_secs(30);

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

/// How the discovery source misbehaves while `chaos_until` lasts (see [`Sim::lookup`]).
#[derive(Debug, Clone, PartialEq)]
enum Views {
    /// Snapshots of the growing set, each stale by up to `max_lag`.
    Growing,
    /// Two groups of agents see only their own group's pods (two DNS servers or caches
    /// that disagree) from `from` to `until`; then everyone sees everything.
    Split {
        group: Vec<bool>,
        from: Time,
        until: Time,
    },
    /// Every lookup independently stale by up to resolve-timeout + interval: a later
    /// lookup may return an older, smaller set (views shrink and are not nested).
    Stale,
    /// Agents share one of two caches; an answer is kept for `ttl` (DNS caching by TTL).
    Ttl { ttl: Duration, cache_of: Vec<usize> },
    /// Each lookup leaves each pod out with probability `drop` (pods that flap in and out
    /// of endpoints, a set that shrinks and grows again).
    Flapping { drop: f64 },
    /// Pods of an earlier deployment (`ghosts`, never answering) are in the source until
    /// `gone_at`: the set shrinks while they terminate.
    Ghosts { ghosts: usize, gone_at: Time },
}

/// What a lying contact point (a process on the pod network, listed in discovery)
/// answers every prober.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Lie {
    /// `selfNode` is the prober's own address: "you are talking to yourself".
    ProberIsSelf,
    /// The prober's own discovered set, so that every prober sees agreement.
    EchoSet,
    /// Thousands of seed nodes that do not exist.
    ManySeeds,
    /// Claims a cluster exists at one real node that has not formed one.
    FakeSeed,
}

#[derive(Debug, Clone)]
struct Scenario {
    n: usize,
    ips: Vec<IpAddr>,
    views: Views,
    /// A liar's address and lie; it is one more contact point in discovery.
    liar: Option<(IpAddr, Lie)>,
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
    /// `expected-contact-point-nr`: N, or unset (no agreement).
    expected: Option<usize>,
    /// A formation record is used; the API server fails a claim with this chance.
    record: Option<f64>,
}

/// Addresses of pods that are in discovery but never answer (see [`Views::Ghosts`]).
fn ghost_ip(k: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, k as u8 + 1))
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
        // Pods created together (a new StatefulSet) or spread out.
        let spread = if rng.chance(0.5) { 300 } else { 2000 };
        let created: Vec<Time> = (0..n).map(|_| ms(rng.below(spread))).collect();
        let started: Vec<Time> = created
            .iter()
            .map(|c| *c + ms(rng.below(spread.min(1500))))
            .collect();
        let views = match rng.below(6) {
            0 => Views::Growing,
            1 => {
                let mut group: Vec<bool> = (0..n)
                    .map(|k| k < 1 + rng.below(n as u64 - 1) as usize)
                    .collect();
                rng.shuffle(&mut group);
                // From the first start (the finding) or a little later.
                let first = *started.iter().min().expect("nodes");
                let from = first.saturating_sub(ms(500)) + ms(rng.below(2) * rng.below(1500));
                Views::Split {
                    group,
                    from,
                    until: from + ms(500 + rng.below(1501)),
                }
            }
            2 => Views::Stale,
            3 => Views::Ttl {
                ttl: ms(500 + rng.below(2501)),
                cache_of: (0..n).map(|_| rng.below(2) as usize).collect(),
            },
            4 => Views::Flapping {
                drop: 0.05 + rng.unit() * 0.25,
            },
            _ => Views::Ghosts {
                ghosts: 1 + rng.below(3) as usize,
                gone_at: ms(500 + rng.below(3000)),
            },
        };
        let split = matches!(views, Views::Split { .. });
        let liar = rng.chance(0.15).then(|| {
            let lie = match rng.below(4) {
                0 => Lie::ProberIsSelf,
                1 => Lie::EchoSet,
                2 => Lie::ManySeeds,
                _ => Lie::FakeSeed,
            };
            (
                IpAddr::V4(Ipv4Addr::new(10, 0, 2, rng.below(250) as u8 + 1)),
                lie,
            )
        });
        Self {
            n,
            ips,
            views,
            liar,
            created,
            started,
            chaos_until: ms(4000),
            // A split alone, as found: each half sees its own half at once.
            max_lag: if split { ms(0) } else { ms(1500) },
            lookup_failure: if split { 0.0 } else { rng.unit() * 0.2 },
            message_loss: rng.unit() * 0.1,
            probe_loss: rng.unit() * 0.1,
            required: if rng.chance(0.5) { 2 } else { n },
            agreement: rng.chance(0.85),
            // N, or (to test the bound itself) the least E with N + 2·liars < 2E.
            expected: rng.chance(0.85).then(|| {
                let least = (n + 2 * usize::from(liar.is_some())) / 2 + 1;
                if rng.chance(0.5) { n } else { least.min(n) }
            }),
            record: rng.chance(0.5).then(|| rng.unit() * 0.3),
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
        to: ContactPoint,
        answer: bool,
    },
    ProbeAnswer {
        node: usize,
        cp: ContactPoint,
        result: Result<SeedNodes, String>,
    },
    /// A claim of the formation record reaches the API server.
    /// A claim of the record, by a node whose own new-cluster-enabled was as given.
    ClaimArrives(usize, bool),
    ClaimDone {
        node: usize,
        outcome: ClaimOutcome,
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
    /// The formation record's holder (a node), when one is used.
    holder: Option<usize>,
    /// The two shared discovery caches of [`Views::Ttl`]: when filled, and with what.
    caches: [Option<(Time, Vec<ContactPoint>)>; 2],
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
            holder: None,
            caches: [None, None],
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

    /// The node at `ip`; none for ghosts, the liar and addresses the liar made up.
    fn index_of_ip(&self, ip: IpAddr) -> Option<usize> {
        self.sc.ips.iter().position(|x| *x == ip)
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
            expected_contact_point_nr: self.sc.expected,
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
        let mut boot = Bootstrap::new(
            schedule_settings(),
            decider,
            SelfIdentity {
                management: cp,
                address: address.clone(),
            },
            self.now,
        );
        if self.sc.record.is_some() {
            boot = boot.with_formation_record("sim/record".into(), self.now);
        }
        let node = Node {
            boot,
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

    /// The discovery source as node `i`'s lookup sees it now (see [`Views`]).
    fn lookup(&mut self, i: usize) -> Result<Vec<ContactPoint>, String> {
        let chaos = self.now < self.sc.chaos_until;
        if chaos && self.rng.chance(self.sc.lookup_failure) {
            return Err("simulated lookup failure".into());
        }
        let max_lag = match self.sc.views {
            // resolve-timeout + interval
            Views::Stale => ms(4000),
            _ => self.sc.max_lag,
        };
        let lag = if chaos {
            ms(self.rng.below(max_lag.as_millis() as u64 + 1))
        } else {
            Duration::ZERO
        };
        if let Views::Ttl { ttl, cache_of } = &self.sc.views {
            let (ttl, c) = (*ttl, cache_of[i]);
            if let Some((at, cached)) = &self.caches[c]
                && self.now < *at + ttl
            {
                return Ok(cached.clone());
            }
            let fresh = self.source(self.now.saturating_sub(lag), None);
            self.caches[c] = Some((self.now, fresh.clone()));
            return Ok(fresh);
        }
        let group = match &self.sc.views {
            Views::Split { group, from, until } if (*from..*until).contains(&self.now) => {
                Some(group[i])
            }
            _ => None,
        };
        let mut found = self.source(self.now.saturating_sub(lag), group);
        if let Views::Flapping { drop } = self.sc.views
            && chaos
        {
            found.retain(|_| !self.rng.chance(drop));
        }
        self.rng.shuffle(&mut found);
        Ok(found)
    }

    /// What the discovery source held at `view_at`, only pods of `group` if given.
    fn source(&self, view_at: Time, group: Option<bool>) -> Vec<ContactPoint> {
        let mut found: Vec<ContactPoint> = (0..self.sc.n)
            .filter(|k| self.sc.created[*k] <= view_at)
            .filter(|k| match (&self.sc.views, group) {
                (Views::Split { group: g, .. }, Some(want)) => g[*k] == want,
                _ => true,
            })
            .map(|k| self.cp(k))
            .collect();
        if let Views::Ghosts { ghosts, gone_at } = self.sc.views
            && view_at < gone_at
        {
            found.extend((0..ghosts).map(|k| ContactPoint::new(ghost_ip(k), MANAGEMENT_PORT)));
        }
        if let Some((ip, _)) = self.sc.liar {
            found.push(ContactPoint::new(ip, MANAGEMENT_PORT));
        }
        found
    }

    /// Runs the shell logic after any input to node `i` (as the coordinator and actor do).
    fn after(&mut self, i: usize) {
        let now = self.now;
        let actions = self.node(i).boot.poll(now);
        for a in actions {
            match a {
                Action::Lookup => {
                    let result = self.lookup(i);
                    let d = self.latency(50);
                    self.at(now + d, Event::LookupDone { node: i, result });
                }
                Action::Probe(cp) => {
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
                        self.probe(i, cp, true);
                    }
                }
                Action::ClaimFormation {
                    new_cluster_enabled,
                } => {
                    let d = self.latency(30);
                    self.at(now + d, Event::ClaimArrives(i, new_cluster_enabled));
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
                self.probe(i, cp, false);
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

    /// The liar's answer to a probe from node `from` (see [`Lie`]).
    fn lie(&self, from: usize) -> SeedNodes {
        let (ip, lie) = self.sc.liar.expect("a liar");
        let prober = self.nodes[from].as_ref().expect("started");
        let mut a = SeedNodes {
            self_node: NodeAddress::new("sim", ip, CLUSTER_PORT),
            seed_nodes: vec![],
            contact_points: Some(prober.boot.discovered().clone()),
        };
        let seed = |node: NodeAddress| SeedNode {
            node,
            node_uid: 7,
            status: MemberStatus::Up,
            roles: vec![],
        };
        match lie {
            Lie::ProberIsSelf => {
                a.self_node = prober.member.me().address.clone();
                a.contact_points = Some(prober.boot.ever_seen().clone());
            }
            Lie::EchoSet => {}
            Lie::ManySeeds => {
                a.seed_nodes = (0..2500u32)
                    .map(|k| {
                        let [_, _, x, y] = (k + 1).to_be_bytes();
                        seed(NodeAddress::new(
                            "sim",
                            IpAddr::V4(Ipv4Addr::new(10, 9, x, y)),
                            CLUSTER_PORT,
                        ))
                    })
                    .collect();
            }
            Lie::FakeSeed => {
                a.seed_nodes = vec![seed(NodeAddress::new("sim", self.sc.ips[0], CLUSTER_PORT))];
            }
        }
        a
    }

    /// A probe request from `from` reaches `to` after network latency.
    fn probe(&mut self, from: usize, to: ContactPoint, answer: bool) {
        let d = self.latency(20);
        self.at(self.now + d, Event::ProbeArrives { from, to, answer });
    }

    fn send(&mut self, out: Vec<Outgoing>) {
        for o in out {
            if self.rng.chance(self.sc.message_loss) {
                continue;
            }
            let Some(to) = self.index_of_ip(o.to.ip) else {
                continue;
            };
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
                let result = match self.index_of_ip(to.ip) {
                    None if self.sc.liar.is_some_and(|(ip, _)| ip == to.ip) => Ok(self.lie(from)),
                    None => Err("connection refused".to_owned()),
                    Some(k) => match self.nodes[k].as_mut() {
                        None => Err("connection refused".to_owned()),
                        Some(n) => {
                            n.boot.nudge(now, &from_cp);
                            let seed_nodes = if n.member.is_member() {
                                report::seed_nodes(n.member.gossip(), n.member.me())
                            } else {
                                vec![]
                            };
                            let a = SeedNodes {
                                self_node: n.member.me().address.clone(),
                                seed_nodes,
                                contact_points: Some(n.boot.ever_seen().clone()),
                            };
                            self.after(k);
                            Ok(a)
                        }
                    },
                };
                if answer {
                    let d = self.latency(20);
                    self.at(
                        now + d,
                        Event::ProbeAnswer {
                            node: from,
                            cp: to,
                            result,
                        },
                    );
                }
            }
            Event::ProbeAnswer { node, cp, result } => {
                let now = self.now;
                let n = self.node(node);
                let result = result.map(|answer| ProbeAnswer {
                    at: now,
                    answer,
                    from_self: false,
                });
                n.boot.on_probe(now, &mut n.rng, &cp, result);
                self.after(node);
            }
            Event::ClaimArrives(node, own) => {
                let fails = self.sc.record.unwrap_or(0.0);
                let outcome = if self.rng.chance(fails) {
                    // Half the failures lose only the answer: the write was applied.
                    if self.holder.is_none() && self.rng.chance(0.5) {
                        self.holder = Some(node);
                    }
                    ClaimOutcome::Failed("the API server is unavailable".into())
                } else {
                    // As the agent reads it (`record::judge`): its own claim is claimed;
                    // the record names no ConfigMap here, so a node's own setting
                    // decides whether it may take a free one.
                    match self.holder {
                        None if !own => ClaimOutcome::Disabled { from_api: false },
                        None => {
                            self.holder = Some(node);
                            ClaimOutcome::Claimed
                        }
                        Some(h) if h == node => ClaimOutcome::Claimed,
                        Some(h) => ClaimOutcome::HeldBy(format!("node {h}")),
                    }
                };
                self.log(|| format!("node {node} claims the record: {outcome:?}"));
                let d = self.latency(30);
                self.at(self.now + d, Event::ClaimDone { node, outcome });
            }
            Event::ClaimDone { node, outcome } => {
                let now = self.now;
                self.node(node).boot.on_claim(now, outcome);
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
    /// Runs one seed. Every run must never have two nodes form a cluster. With `liveness`
    /// it must end in one cluster of every node, and returns the time that took after the
    /// last agent started; without, it ends once every node has decided (no node forms
    /// after deciding anything) and returns `None`.
    fn run(mut self, seed: u64, liveness: bool) -> Result<Option<Duration>, String> {
        let last_start = *self.sc.started.iter().max().expect("nodes");
        let mut same_instant = 0u32;
        while let Some(((t, _), e)) = self.queue.pop_first() {
            if t > DEADLINE || (!liveness && t > SAFETY_DEADLINE) {
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
            if self.sc.record.is_some()
                && let Some((former, _)) = self.formed.first()
                && self.holder != Some(*former)
            {
                return Err(format!(
                    "seed {seed}: node {former} formed without holding the record (holder {:?})\n{:?}",
                    self.holder, self.sc
                ));
            }
            if liveness && membership_event && t >= last_start && self.one_cluster() {
                return Ok(Some(t - last_start));
            }
            if !liveness
                && self
                    .nodes
                    .iter()
                    .all(|n| n.as_ref().is_some_and(|n| n.boot.has_decided()))
            {
                return Ok(None);
            }
        }
        if !liveness {
            return Ok(None);
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
        let liveness = sim.sc.liar.is_none();
        match sim.run(seed, liveness) {
            Ok(Some(t)) => println!(
                "seed {seed}: one cluster {:.3}s after the last start",
                t.as_secs_f64()
            ),
            Ok(None) => println!("seed {seed}: never more than one node formed a cluster"),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let env = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .map(|s| s.parse().unwrap_or_else(|_| panic!("{name} is a number")))
            .unwrap_or(default)
    };
    let runs = env("SIM_RUNS", 10_000);
    let liveness_runs = env("SIM_LIVENESS_RUNS", 1_200);
    let base = env("SIM_BASE_SEED", 1);
    let mut times: BTreeMap<(usize, &str), Vec<Duration>> = BTreeMap::new();
    let mut per_view: BTreeMap<String, (u64, u64, Duration)> = BTreeMap::new();
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
        let view = match (&sim.sc.views, sim.sc.liar) {
            (v, None) => format!("{v:?}")
                .split([' ', '{', '('])
                .next()
                .unwrap_or("")
                .to_owned(),
            (_, Some((_, lie))) => format!("liar {lie:?}"),
        };
        let liveness = seed < base + liveness_runs && sim.sc.liar.is_none();
        let started = std::time::Instant::now();
        let result = sim.run(seed, liveness);
        let e = per_view.entry(view).or_default();
        e.0 += 1;
        e.1 += u64::from(liveness);
        e.2 += started.elapsed();
        match result {
            Ok(Some(t)) => times.entry(key).or_default().push(t),
            Ok(None) => {}
            Err(e) => failures.push(e),
        }
    }
    println!(
        "simulation: {runs} seeded runs (seeds {base}..{}); every one checks that at most one node forms a cluster",
        base + runs - 1
    );
    println!(
        "{:>18} {:>6} {:>24} {:>10}",
        "discovery", "runs", "also run to one cluster", "cpu time"
    );
    for (view, (n, live, cpu)) in &per_view {
        println!("{view:>18} {n:>6} {live:>24} {:>9.1}s", cpu.as_secs_f64());
    }
    println!("formation time after the last agent started (runs without a liar, to one cluster):");
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
        let splits = failures
            .iter()
            .filter(|f| f.contains("nodes formed a cluster"))
            .count();
        for f in failures.iter().take(5) {
            eprintln!("{f}\n");
        }
        eprintln!(
            "{} of {runs} runs failed ({splits} with more than one cluster formed); replay one with SIM_SEED=<seed>",
            failures.len()
        );
        std::process::exit(1);
    }
    println!("0 split clusters: in no run did two nodes form a cluster");
}
