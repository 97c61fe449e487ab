//! The rotation planner: a pure function from what the operator has mounted into the
//! pods and what each pod's agent reports it uses, to the one next step. It rotates
//! anything with the shape "a set of accepted credentials and one in use": the cluster
//! key (the key file's lines; the first signs) and the TLS CA (the CAs of `ca-file`;
//! the one that issued the agents' certificate is the one in use).
//!
//! Two agents can talk while each one's credential in use is accepted by the other.
//! A rotation from `old` to `new` therefore moves through states that are pairwise
//! compatible, and moves on only once every pod's agent shows the current one:
//!
//! 1. accepted {old}      in use old  →  accepted {old, new} in use old
//! 2. accepted {old, new} in use old  →  accepted {old, new} in use new
//! 3. accepted {old, new} in use new  →  accepted {new}      in use new
//!
//! While the pods are between two adjacent states every pair can talk; the next state
//! is written only when none is left behind, so no pod is ever two states away from
//! another. A running agent shows where it is. A pod whose agent is not running shows
//! nothing, and its Secret volume may still hold an older state (the kubelet refreshes
//! volumes late): started now, it could join the members on that state and be cut off
//! by the next one. So it is waited for until the mounted state is older than the
//! kubelet's refresh bound (`settle`), counted up to when its report was read: by then
//! its volume holds it, whenever it starts. A running agent only moves toward the
//! mounted state, so an older report never lets a step through that a fresh one would
//! not. A pod that should exist but has no report at all is waited for.
//!
//! What the caller owes: the mounted state is read fresh (not from a cache) and written
//! with a precondition on what was read, its mount time in the same write, so an
//! operator that restarts derives the same plan; `settle` bounds the kubelets' refresh
//! of Secret volumes (a node cut off from the API server refreshes nothing: its pods
//! are not running as far as the API knows, and the caller must not count them so).
//! A rotation waits for ever on an agent that does not answer: safety over progress;
//! the wait names the pod.

use std::collections::BTreeSet;
use std::time::Duration;

/// Names a credential (a key id, a CA fingerprint).
pub type Id = String;

/// A state of the credentials: the ones accepted and the one in use (always accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub accepted: BTreeSet<Id>,
    pub in_use: Id,
}

impl Credentials {
    /// One credential, accepted and in use.
    pub fn single(id: &str) -> Self {
        Self {
            accepted: BTreeSet::from([id.to_owned()]),
            in_use: id.to_owned(),
        }
    }

    /// Whether agents in these two states accept each other's credential in use.
    pub fn compatible(&self, other: &Self) -> bool {
        self.accepted.contains(&other.in_use) && other.accepted.contains(&self.in_use)
    }

    /// The key file's lines: the key in use first, then the others accepted.
    pub fn ring(&self) -> Vec<Id> {
        std::iter::once(self.in_use.clone())
            .chain(self.accepted.iter().filter(|i| **i != self.in_use).cloned())
            .collect()
    }
}

/// What one pod's agent reports, or why it reports nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The agent answered with the credentials it uses.
    Uses(Credentials),
    /// The agent container is not running (waiting, crash-looping, not started). Its
    /// volume holds the mounted state once that is older than `settle`.
    NotRunning,
    /// The agent runs but did not answer (or its answer could not be read).
    Unknown(String),
}

/// The one next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The mounted state is `target` alone and every agent uses it.
    Done,
    /// Some agents do not show the mounted state yet (the kubelet refreshes Secret
    /// volumes with a delay): the pods, with what each shows.
    Wait(Vec<(String, String)>),
    /// Mount this state (write the Secret the pods read).
    Mount(Credentials),
}

/// What the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The state the pods' Secret holds.
    pub mounted: &'a Credentials,
    /// How long it had been mounted when the oldest report was read.
    pub mounted_for: Duration,
    /// How late, at most, a kubelet shows a Secret change in a pod's volume.
    pub settle: Duration,
    /// Every pod that must report (the StatefulSet's, terminating ones included).
    pub pods: &'a [String],
    /// What was read of each pod's agent.
    pub reports: &'a [(String, Report)],
}

/// The next step of the rotation to `target`.
pub fn plan(o: &Observed<'_>, target: &str) -> Step {
    let mounted = o.mounted;
    let mut lagging: Vec<(String, String)> = o
        .pods
        .iter()
        .filter(|p| !o.reports.iter().any(|(r, _)| r == *p))
        .map(|p| (p.clone(), "no report: the pod was not seen".to_owned()))
        .collect();
    lagging.extend(o.reports.iter().filter_map(|(pod, r)| match r {
        Report::Uses(c) if c == mounted => None,
        Report::NotRunning if o.mounted_for >= o.settle => None,
        Report::NotRunning => Some((
            pod.clone(),
            format!(
                "not running; its volume may hold an older state until {}s after the last change",
                o.settle.as_secs()
            ),
        )),
        Report::Uses(c) => Some((
            pod.clone(),
            format!(
                "uses {} and accepts {:?}",
                short(&c.in_use),
                c.accepted.iter().map(|i| short(i)).collect::<Vec<_>>()
            ),
        )),
        Report::Unknown(why) => Some((pod.clone(), format!("no answer: {why}"))),
    }));
    if !lagging.is_empty() {
        return Step::Wait(lagging);
    }
    let target = target.to_owned();
    if mounted.in_use != target {
        if !mounted.accepted.contains(&target) {
            // A target that changed mid-rotation: drop the other credentials first,
            // so at most two are ever accepted (a key file holds four at most).
            if mounted.accepted.len() > 1 {
                return Step::Mount(Credentials::single(&mounted.in_use));
            }
            let mut accepted = mounted.accepted.clone();
            accepted.insert(target);
            return Step::Mount(Credentials {
                accepted,
                in_use: mounted.in_use.clone(),
            });
        }
        return Step::Mount(Credentials {
            accepted: mounted.accepted.clone(),
            in_use: target,
        });
    }
    if mounted.accepted.len() > 1 {
        return Step::Mount(Credentials::single(&target));
    }
    Step::Done
}

/// The first 12 characters of an id, for messages.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use node_agent::base::rng::Rng;

    const SETTLE: Duration = Duration::from_secs(180);
    const LONG_AGO: Duration = Duration::from_secs(3600);

    fn uses(c: &Credentials) -> Report {
        Report::Uses(c.clone())
    }

    fn names(reports: &[(String, Report)]) -> Vec<String> {
        reports.iter().map(|(p, _)| p.clone()).collect()
    }

    fn all(n: usize, r: Report) -> Vec<(String, Report)> {
        (0..n).map(|i| (format!("pod-{i}"), r.clone())).collect()
    }

    /// Planned long after the last change, every pod reporting.
    fn step(mounted: &Credentials, target: &str, reports: &[(String, Report)]) -> Step {
        step_at(mounted, LONG_AGO, target, reports)
    }

    fn step_at(
        mounted: &Credentials,
        mounted_for: Duration,
        target: &str,
        reports: &[(String, Report)],
    ) -> Step {
        let pods = names(reports);
        plan(
            &Observed {
                mounted,
                mounted_for,
                settle: SETTLE,
                pods: &pods,
                reports,
            },
            target,
        )
    }

    #[test]
    fn three_steps_each_once_every_agent_shows_the_last() {
        let mut mounted = Credentials::single("old");
        let mut states = vec![mounted.clone()];
        loop {
            match step(&mounted, "new", &all(3, uses(&mounted))) {
                Step::Mount(next) => {
                    assert!(next.compatible(&mounted), "{next:?} after {mounted:?}");
                    mounted = next;
                    states.push(mounted.clone());
                }
                Step::Done => break,
                Step::Wait(w) => panic!("nobody lags: {w:?}"),
            }
        }
        let rings: Vec<Vec<Id>> = states.iter().map(Credentials::ring).collect();
        let expected: Vec<Vec<Id>> = [
            &["old"][..],
            &["old", "new"][..],
            &["new", "old"][..],
            &["new"][..],
        ]
        .iter()
        .map(|r| r.iter().map(|s| s.to_string()).collect())
        .collect();
        assert_eq!(rings, expected);
        // Two states apart are not compatible: why no pod may be left two behind.
        assert!(!states[0].compatible(&states[2]));
        assert!(!states[1].compatible(&states[3]));
    }

    #[test]
    fn waits_for_every_running_agent_and_every_pod_and_names_who_lags() {
        let old = Credentials::single("old");
        let step1 = match step(&old, "new", &all(2, uses(&old))) {
            Step::Mount(c) => c,
            s => panic!("{s:?}"),
        };
        let reports = vec![
            ("pod-0".to_owned(), uses(&step1)),
            ("pod-1".to_owned(), uses(&old)),
            ("pod-2".to_owned(), Report::Unknown("timed out".into())),
            ("pod-3".to_owned(), Report::NotRunning),
        ];
        match step(&step1, "new", &reports) {
            Step::Wait(w) => {
                let pods: Vec<&str> = w.iter().map(|(p, _)| p.as_str()).collect();
                assert_eq!(pods, ["pod-1", "pod-2"], "{w:?}");
                assert!(w[1].1.contains("timed out"), "{w:?}");
            }
            s => panic!("{s:?}"),
        }
        // A pod that should exist but was not seen (an operator whose cache is not
        // filled yet, a pod being made) is waited for: no report is no consent.
        let pods = vec!["pod-0".to_owned(), "pod-1".to_owned()];
        let seen = vec![("pod-0".to_owned(), uses(&step1))];
        let o = Observed {
            mounted: &step1,
            mounted_for: LONG_AGO,
            settle: SETTLE,
            pods: &pods,
            reports: &seen,
        };
        match plan(&o, "new") {
            Step::Wait(w) => assert!(w[0].0 == "pod-1" && w[0].1.contains("not seen"), "{w:?}"),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn a_pod_not_running_is_waited_for_until_its_volume_surely_holds_the_state() {
        let old = Credentials::single("old");
        let reports = vec![
            ("pod-0".to_owned(), uses(&old)),
            ("pod-1".to_owned(), Report::NotRunning),
        ];
        match step_at(&old, Duration::from_secs(30), "new", &reports) {
            Step::Wait(w) => {
                assert_eq!(w.len(), 1);
                assert!(w[0].0 == "pod-1" && w[0].1.contains("not running"), "{w:?}");
            }
            s => panic!("{s:?}"),
        }
        assert!(matches!(
            step_at(&old, SETTLE, "new", &reports),
            Step::Mount(_)
        ));
    }

    #[test]
    fn nothing_to_do_when_the_target_is_in_use_alone() {
        let c = Credentials::single("k");
        assert_eq!(step(&c, "k", &all(3, uses(&c))), Step::Done);
        assert_eq!(step(&c, "k", &[]), Step::Done);
    }

    #[test]
    fn a_target_changed_midway_moves_one_step_at_a_time_and_never_piles_up() {
        // Back to "old" after step 2 (e.g. the new CA was withdrawn).
        let mid = Credentials {
            accepted: BTreeSet::from(["old".to_owned(), "new".to_owned()]),
            in_use: "new".to_owned(),
        };
        match step(&mid, "old", &all(2, uses(&mid))) {
            Step::Mount(c) => {
                assert_eq!(c.in_use, "old");
                assert!(c.compatible(&mid));
            }
            s => panic!("{s:?}"),
        }
        // On to a third key instead: the second is dropped before the third comes.
        match step(&mid, "third", &all(2, uses(&mid))) {
            Step::Mount(c) => assert_eq!(c, Credentials::single("new")),
            s => panic!("{s:?}"),
        }
    }

    /// One pod of the simulation.
    #[derive(Debug, Clone)]
    struct Pod {
        /// What its Secret volume holds: the kubelet refreshes it at most `volume_lag`
        /// ticks late, whether the agent runs or not, and may skip states.
        volume: Credentials,
        next_refresh: u64,
        /// What its agent uses: the volume's state when it started, then each change
        /// of the volume whose credential in use it accepts already (the agent's rule
        /// for the key file), seen `adopt_lag` ticks late at most.
        uses: Credentials,
        adopt_at: u64,
        running: bool,
        /// A cluster member: running since it joined. A pod that starts joins once it
        /// can talk to every member (before, it is no member and can down no one).
        member: bool,
    }

    /// How a run cheats, for the negative controls.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Cheat {
        None,
        /// The planner is told a settle time shorter than the volumes' lag.
        ShortSettle,
        /// Pods not running are left out of the expected pods and the reports.
        HideDownPods,
    }

    /// One seeded run: rotations to random targets (changed midway now and then)
    /// under crashes, late volumes and late agents, reports read several ticks before
    /// the plan. The ticks it took and how many pods joined again after a restart, or
    /// the first two members that could not talk.
    fn simulate(seed: u64, cheat: Cheat) -> Result<(u64, usize), String> {
        let mut rng = Rng::seeded(seed);
        let n = 1 + rng.below(9) as usize;
        let volume_lag = 1 + rng.below(20);
        let adopt_lag = 1 + rng.below(3);
        let staleness = rng.below(4);
        let settle_ticks = match cheat {
            Cheat::ShortSettle => volume_lag / 2,
            _ => volume_lag + 1,
        };
        let settle = Duration::from_secs(settle_ticks);
        let mut mounted = Credentials::single("k0");
        let mut mounted_at = 0u64;
        let mut pods: Vec<Pod> = (0..n)
            .map(|_| Pod {
                volume: mounted.clone(),
                next_refresh: rng.below(volume_lag),
                uses: mounted.clone(),
                adopt_at: 0,
                running: true,
                member: true,
            })
            .collect();
        let mut history: Vec<Vec<Pod>> = vec![pods.clone()];
        let (mut target, mut rotations, mut tick, mut rejoined) = ("k1".to_owned(), 0, 0u64, 0);
        loop {
            tick += 1;
            if tick >= 50_000 {
                return Err(format!("seed {seed}: the rotations never end: {pods:?}"));
            }
            for p in pods.iter_mut() {
                if tick >= p.next_refresh {
                    if p.volume != mounted {
                        p.adopt_at = tick + rng.below(adopt_lag + 1);
                    }
                    p.volume = mounted.clone();
                    p.next_refresh = tick + 1 + rng.below(volume_lag);
                }
                if p.running && tick >= p.adopt_at && p.uses.accepted.contains(&p.volume.in_use) {
                    p.uses = p.volume.clone();
                }
                if p.running && rng.chance(0.02) {
                    p.running = false;
                    p.member = false;
                } else if !p.running && rng.chance(0.2) {
                    p.running = true;
                    p.uses = p.volume.clone();
                } else if p.running && !p.member && rng.chance(0.05) {
                    // Stuck outside (its key follower refused a jump): the agent's
                    // unsuccessful-join timeout restarts it on its volume.
                    p.uses = p.volume.clone();
                }
            }
            let members: Vec<Credentials> = pods
                .iter()
                .filter(|p| p.member)
                .map(|p| p.uses.clone())
                .collect();
            for a in &members {
                if let Some(b) = members.iter().find(|b| !a.compatible(b)) {
                    return Err(format!(
                        "seed {seed} tick {tick}: members using {a:?} and {b:?} cannot talk (mounted {mounted:?} at {mounted_at})"
                    ));
                }
            }
            if mounted.accepted.len() > 2 {
                return Err(format!("seed {seed}: {mounted:?} piles up credentials"));
            }
            for p in pods.iter_mut().filter(|p| p.running && !p.member) {
                if members.iter().all(|m| m.compatible(&p.uses)) {
                    p.member = true;
                    rejoined += 1;
                }
            }
            history.push(pods.clone());
            // Now and then the wanted credential changes, even mid-rotation.
            if rng.chance(0.01) {
                target = format!("k{}", rng.below(6));
            }
            if !rng.chance(0.5) {
                continue;
            }
            // The operator plans on reports read up to `staleness` ticks ago.
            let age = rng.below(staleness + 1);
            let seen = &history[history.len().saturating_sub(1 + age as usize)];
            let mut expected = Vec::new();
            let mut reports = Vec::new();
            for (i, p) in seen.iter().enumerate() {
                let name = format!("pod-{i}");
                if !p.running && cheat == Cheat::HideDownPods {
                    continue;
                }
                expected.push(name.clone());
                let r = if !p.running {
                    Report::NotRunning
                } else if rng.chance(0.05) {
                    Report::Unknown("timed out".into())
                } else {
                    Report::Uses(p.uses.clone())
                };
                reports.push((name, r));
            }
            let o = Observed {
                mounted: &mounted,
                mounted_for: Duration::from_secs(
                    tick.saturating_sub(age).saturating_sub(mounted_at),
                ),
                settle,
                pods: &expected,
                reports: &reports,
            };
            match plan(&o, &target) {
                Step::Mount(next) => {
                    mounted = next;
                    mounted_at = tick;
                }
                Step::Done => {
                    rotations += 1;
                    if rotations >= 3 && pods.iter().all(|p| p.member) {
                        return Ok((tick, rejoined));
                    }
                    target = format!("k{}", rng.below(6));
                }
                Step::Wait(_) => {}
            }
        }
    }

    /// Seeded runs: volumes refreshed late (skipping states), agents adopting changes
    /// late, pods crashing and restarting from whatever their volume holds, reports
    /// read several ticks before the plan, agents that do not answer, targets that
    /// change midway. After every tick every two members accept each other and at
    /// most two credentials are mounted; every run ends with every pod a member.
    #[test]
    fn seeded_simulation_never_splits_and_always_finishes() {
        let runs = 2000;
        let mut ticks = Vec::new();
        let mut rejoined = 0;
        for seed in 1..=runs {
            let (t, r) = simulate(seed, Cheat::None).unwrap_or_else(|e| panic!("{e}"));
            ticks.push(t);
            rejoined += r;
        }
        ticks.sort_unstable();
        println!(
            "rotation simulation: {runs} seeded runs of at least 3 rotations, 1–9 pods, crashes, late volumes and agents, stale reports, changing targets: 0 splits among members; {rejoined} restarted pods joined again; ticks p50 {} max {}",
            ticks[ticks.len() / 2],
            ticks[ticks.len() - 1]
        );
    }

    /// The simulation can tell a planner whose assumptions are broken: a settle time
    /// below the volumes' lag, or pods not running left out of what it is told. Either
    /// lets a pod restart on an old volume, join, and be cut off by the next step.
    #[test]
    fn with_a_broken_assumption_the_simulation_finds_the_split() {
        for cheat in [Cheat::ShortSettle, Cheat::HideDownPods] {
            let split = (1..=2000).find_map(|seed| simulate(seed, cheat).err());
            println!("{cheat:?}: {split:?}");
            assert!(
                split.is_some_and(|e| e.contains("cannot talk")),
                "{cheat:?} must be found"
            );
        }
    }
}
