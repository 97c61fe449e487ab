//! The bootstrap core: observations, schedules and the decision, as a pure state machine.
//!
//! The coordinator (I/O) asks it what to do ([`Bootstrap::poll`]: look up, probe whom),
//! feeds results back (`on_lookup`, `on_probe`) and acts on [`Bootstrap::decide`]. The
//! simulation drives the very same object with simulated time and network.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use super::decider::{
    self, DeciderSettings, Decision, MAX_JOIN_SEED_NODES, Observations, ProbeAnswer, SelfIdentity,
    Waiting,
};
use crate::base::address::{ContactPoint, NodeAddress};
use crate::base::rng::Rng;
use crate::base::time::Time;
use crate::config::AgentConfig;
use crate::discovery::Skipped;

/// A node probes every contact point only while it may be the one to form: while it is
/// among this many lowest contact points that are not failing. Any other node cannot
/// form (rule (e): only the lowest answering point does), so it probes just those lowest
/// few — enough to hear of the cluster as soon as one of them forms it — and the
/// contact points below them that fail (to notice they are gone). Probing everyone from
/// everyone every second made bootstrap cost grow with N² (issue 16); this way the
/// lowest few probe N each and the rest a handful.
pub const PROBED_LOWEST: usize = 3;

/// Timing of lookups and probes (Akka's `contact-point-discovery` and `contact-point`).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub interval: Duration,
    pub exponential_backoff_random_factor: f64,
    pub exponential_backoff_max: Duration,
    pub probe_interval: Duration,
    pub probe_interval_jitter: f64,
    pub probing_failure_timeout: Duration,
}

impl Schedule {
    pub fn from_config(c: &AgentConfig) -> Self {
        let b = &c.settings.bootstrap;
        Self {
            interval: b.interval,
            exponential_backoff_random_factor: b.exponential_backoff_random_factor,
            exponential_backoff_max: b.exponential_backoff_max,
            probe_interval: b.probe_interval,
            probe_interval_jitter: b.probe_interval_jitter,
            probing_failure_timeout: b.probing_failure_timeout,
        }
    }
}

impl DeciderSettings {
    pub fn from_config(c: &AgentConfig) -> Self {
        let b = &c.settings.bootstrap;
        Self {
            required_contact_point_nr: b.required_contact_point_nr,
            stable_margin: b.stable_margin,
            contact_with_all_contact_points: b.contact_with_all_contact_points,
            new_cluster_enabled: b.new_cluster_enabled,
            probing_failure_timeout: b.probing_failure_timeout,
            contact_point_agreement: b.contact_point_agreement,
            expected_contact_point_nr: b.expected_contact_point_nr,
        }
    }
}

/// Something the I/O shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Lookup,
    Probe(ContactPoint),
    /// Claim the formation record (`bootstrap.formation-lease`); report the outcome to
    /// [`Bootstrap::on_claim`]. `new_cluster_enabled`: this node's own setting, which
    /// decides only where the record names no ConfigMap to read it from (see
    /// [`crate::bootstrap::record`]): read from the API server at the moment of the
    /// claim, that is fresher than a mounted file can be.
    ClaimFormation {
        new_cluster_enabled: bool,
    },
}

/// What claiming the formation record came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This node holds the record now: it forms.
    Claimed,
    /// Someone holds it (named): this node never forms.
    HeldBy(String),
    /// Nobody holds it, but forming is off: the ConfigMap the record names says so, read
    /// from the API server just now (`from_api`), or it names none and this node's own
    /// `new-cluster-enabled` is off. Looked at again like a held record.
    Disabled { from_api: bool },
    /// The record could not be read or written.
    Failed(String),
}

/// A held record is looked at again this often (the operator clears it when forming is
/// allowed again, e.g. `newClusterEnabled: true`).
pub const HELD_RECHECK: Duration = Duration::from_secs(10);
/// A free record that names no ConfigMap, found while this node's own setting is off,
/// is looked at again this often (or at once when the setting changes): only an
/// operator that starts naming one (an upgrade) makes it worth asking sooner.
pub const OFF_RECHECK: Duration = Duration::from_secs(60);
/// A claim that failed is tried again after this long, doubling while claims keep
/// failing, up to [`FAILED_CLAIM_RETRY_MAX`].
pub const FAILED_CLAIM_RETRY: Duration = Duration::from_secs(2);
pub const FAILED_CLAIM_RETRY_MAX: Duration = Duration::from_secs(30);

/// The formation record, when one is used.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Record {
    NotUsed,
    Open {
        lease: String,
        next_at: Time,
        /// A claim is in flight: `by_agreement` of the decision that started it, and
        /// this node's own `new-cluster-enabled` it went with.
        claiming: Option<(bool, bool)>,
        /// The last claim's outcome, if it was not a success.
        last: Option<ClaimOutcome>,
        /// Claims failed in a row (not: found held).
        failures: u32,
    },
    /// This node holds it; the decision that claimed it was by agreement or not.
    Claimed {
        by_agreement: bool,
    },
}

#[derive(Debug, Clone, Default)]
struct ProbeSchedule {
    next_at: Time,
    in_flight: bool,
    last_started: Option<Time>,
    /// Start of the current run of failures.
    failing_since: Option<Time>,
    last_error: Option<String>,
}

#[derive(Debug, Clone)]
struct LookupSchedule {
    next_at: Time,
    in_flight: bool,
    consecutive_failures: u32,
}

/// The bootstrap state of one node.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    schedule: Schedule,
    settings: DeciderSettings,
    me: SelfIdentity,
    obs: Observations,
    lookup: LookupSchedule,
    probes: BTreeMap<ContactPoint, ProbeSchedule>,
    skipped: Vec<Skipped>,
    finished: bool,
    /// The last instruction handed to membership, so each is given once.
    instructed: Option<Instruction>,
    /// This node was told to form: its reported ever-seen set stops growing for good.
    formed: bool,
    record: Record,
}

/// What membership must do, as decided by bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Join(Vec<NodeAddress>),
    Form,
}

fn jittered(base: Duration, factor: f64, rng: &mut Rng) -> Duration {
    base.mul_f64(1.0 + factor * rng.unit())
}

impl Bootstrap {
    pub fn new(schedule: Schedule, settings: DeciderSettings, me: SelfIdentity, now: Time) -> Self {
        Self {
            schedule,
            settings,
            me,
            obs: Observations {
                discovered_changed_at: now,
                ..Observations::default()
            },
            lookup: LookupSchedule {
                next_at: now,
                in_flight: false,
                consecutive_failures: 0,
            },
            probes: BTreeMap::new(),
            skipped: Vec::new(),
            finished: false,
            instructed: None,
            formed: false,
            record: Record::NotUsed,
        }
    }

    /// Forming needs the formation record `lease` first (`bootstrap.formation-lease`).
    pub fn with_formation_record(mut self, lease: String, now: Time) -> Self {
        self.record = Record::Open {
            lease,
            next_at: now,
            claiming: None,
            last: None,
            failures: 0,
        };
        self
    }

    pub fn settings(&self) -> &DeciderSettings {
        &self.settings
    }

    pub fn identity(&self) -> &SelfIdentity {
        &self.me
    }

    /// Every contact point ever discovered: reported in this node's probe answers. It
    /// stops growing once this node decided to form: a set reported later would let a
    /// peer agree on a set this node did not form on.
    pub fn ever_seen(&self) -> &BTreeSet<ContactPoint> {
        &self.obs.ever_seen
    }

    /// The contact points of the latest successful lookup.
    pub fn discovered(&self) -> &BTreeSet<ContactPoint> {
        &self.obs.discovered
    }

    /// Whether a join or formation was instructed (no formation follows a decision).
    pub fn has_decided(&self) -> bool {
        self.instructed.is_some()
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// `new-cluster-enabled` changed at run time (`bootstrap.new-cluster-enabled-file`).
    /// A claim that found forming off by this node's own setting is tried again at once.
    pub fn set_new_cluster_enabled(&mut self, on: bool) {
        if on != self.settings.new_cluster_enabled
            && let Record::Open {
                next_at,
                last: last @ Some(ClaimOutcome::Disabled { from_api: false }),
                ..
            } = &mut self.record
        {
            *next_at = Time::ZERO;
            *last = None;
        }
        self.settings.new_cluster_enabled = on;
    }

    pub fn new_cluster_enabled(&self) -> bool {
        self.settings.new_cluster_enabled
    }

    /// The node has joined: no more lookups or probes. Returns the other contact points,
    /// to be probed once more as a nudge: peers still waiting then probe back at once and
    /// find the seed nodes now rather than at their next round.
    ///
    /// Only the node that formed nudges (everyone, once); a node that joined nudges
    /// nobody, so that N joins do not make N² requests.
    pub fn finish(&mut self) -> Vec<ContactPoint> {
        self.finished = true;
        if !self.formed {
            return Vec::new();
        }
        let me = &self.me.management;
        self.obs
            .discovered
            .iter()
            .filter(|cp| *cp != me)
            .cloned()
            .collect()
    }

    /// The contact points this node probes now; `None`: all of them (it may be the one
    /// to form). See [`PROBED_LOWEST`].
    pub fn probed(&self) -> Option<BTreeSet<ContactPoint>> {
        let mut picked = BTreeSet::new();
        let mut answering = 0;
        for cp in &self.obs.discovered {
            if self.me.is_self(cp, self.obs.answers.get(cp)) {
                return None;
            }
            picked.insert(cp.clone());
            let failing = self.probes.get(cp).is_some_and(|p| p.last_error.is_some());
            if !failing {
                answering += 1;
                if answering == PROBED_LOWEST {
                    return Some(picked);
                }
            }
        }
        None
    }

    /// What is due now; marks it in flight.
    pub fn poll(&mut self, now: Time) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.finished {
            return actions;
        }
        if !self.lookup.in_flight && self.lookup.next_at <= now {
            self.lookup.in_flight = true;
            actions.push(Action::Lookup);
        }
        let probed = self.probed();
        for (cp, p) in &mut self.probes {
            if probed.as_ref().is_some_and(|set| !set.contains(cp)) {
                continue;
            }
            if !p.in_flight && p.next_at <= now {
                p.in_flight = true;
                p.last_started = Some(now);
                actions.push(Action::Probe(cp.clone()));
            }
        }
        if let Record::Open {
            next_at, claiming, ..
        } = &self.record
            && claiming.is_none()
            && *next_at <= now
            && self.instructed.is_none()
            && let Decision::Form { by_agreement } = self.decide_rules(now, true)
            && let Record::Open { claiming, .. } = &mut self.record
        {
            // Claimed also while this node's own new-cluster-enabled is off: read from
            // the API server, the setting may say otherwise before a kubelet has
            // refreshed the mounted file (the operator allows forming again).
            let own = self.settings.new_cluster_enabled;
            *claiming = Some((by_agreement, own));
            actions.push(Action::ClaimFormation {
                new_cluster_enabled: own,
            });
        }
        actions
    }

    /// The last claim's outcome while the record is not claimed (held, or failed).
    pub fn last_claim(&self) -> Option<&ClaimOutcome> {
        match &self.record {
            Record::Open { last, .. } => last.as_ref(),
            _ => None,
        }
    }

    /// The outcome of a claim of the formation record.
    pub fn on_claim(&mut self, now: Time, outcome: ClaimOutcome) {
        let own_now = self.settings.new_cluster_enabled;
        let Record::Open {
            next_at,
            claiming,
            last,
            failures,
            ..
        } = &mut self.record
        else {
            return;
        };
        let (by_agreement, own) = claiming.take().unwrap_or((false, own_now));
        match outcome {
            ClaimOutcome::Claimed => self.record = Record::Claimed { by_agreement },
            // Off by this node's own setting, which changed while the claim was in
            // flight: asked again at once, with the new one.
            ClaimOutcome::Disabled { from_api: false } if own != own_now => {
                *failures = 0;
                *next_at = now;
                *last = None;
            }
            ClaimOutcome::HeldBy(_) | ClaimOutcome::Disabled { .. } => {
                *failures = 0;
                *next_at = now
                    + match outcome {
                        ClaimOutcome::Disabled { from_api: false } => OFF_RECHECK,
                        _ => HELD_RECHECK,
                    };
                *last = Some(outcome);
            }
            ClaimOutcome::Failed(_) => {
                let wait = FAILED_CLAIM_RETRY
                    .saturating_mul(1 << (*failures).min(8))
                    .min(FAILED_CLAIM_RETRY_MAX);
                *failures = failures.saturating_add(1);
                *next_at = now + wait;
                *last = Some(outcome);
            }
        }
    }

    /// When something becomes due or the decision may change with time alone. Never a
    /// time at or before `now` unless a lookup or probe is due, or a claimed formation
    /// record waits to be instructed (the owner calls [`Bootstrap::instruction`] after
    /// every wake-up, which then instructs it): a past stable-margin deadline has
    /// already been acted on and must not wake the owner again and again.
    pub fn next_wakeup(&self, now: Time) -> Option<Time> {
        if self.finished {
            return None;
        }
        let lookup = (!self.lookup.in_flight).then_some(self.lookup.next_at);
        let probed = self.probed();
        let probes = self
            .probes
            .iter()
            .filter(|(cp, p)| !p.in_flight && probed.as_ref().is_none_or(|set| set.contains(*cp)))
            .map(|(_, p)| p.next_at);
        let stable_at = (self.obs.lookups > 0)
            .then(|| self.obs.discovered_changed_at + self.settings.stable_margin)
            .filter(|t| *t > now);
        let claim = match &self.record {
            Record::Open {
                next_at,
                claiming: None,
                ..
            } if *next_at > now => Some(*next_at),
            // Claimed: the formation is instructed at once.
            Record::Claimed { .. } if self.instructed.is_none() => Some(now),
            _ => None,
        };
        lookup
            .into_iter()
            .chain(probes)
            .chain(stable_at)
            .chain(claim)
            .min()
    }

    /// A lookup finished.
    pub fn on_lookup(
        &mut self,
        now: Time,
        rng: &mut Rng,
        result: Result<(Vec<ContactPoint>, Vec<Skipped>), String>,
    ) {
        self.lookup.in_flight = false;
        match result {
            Ok((points, skipped)) => {
                self.lookup.consecutive_failures = 0;
                self.lookup.next_at = now
                    + jittered(
                        self.schedule.interval,
                        self.schedule.exponential_backoff_random_factor,
                        rng,
                    );
                self.obs.lookup_error = None;
                self.obs.lookups += 1;
                self.skipped = skipped;
                let set: BTreeSet<ContactPoint> = points.into_iter().collect();
                if set != self.obs.discovered || self.obs.lookups == 1 {
                    // Names may differ between lookups; identity is ip and port.
                    if set != self.obs.discovered {
                        self.obs.discovered_changed_at = now;
                    }
                    self.obs.answers.retain(|cp, _| set.contains(cp));
                    self.probes.retain(|cp, _| set.contains(cp));
                    for cp in &set {
                        self.probes
                            .entry(cp.clone())
                            .or_insert_with(|| ProbeSchedule {
                                next_at: now,
                                ..Default::default()
                            });
                    }
                    if !self.formed {
                        self.obs.ever_seen.extend(set.iter().cloned());
                    }
                    self.obs.discovered = set;
                }
            }
            Err(error) => {
                self.lookup.consecutive_failures += 1;
                let exp = self.lookup.consecutive_failures.min(16);
                let backoff = self
                    .schedule
                    .interval
                    .saturating_mul(1 << exp)
                    .min(self.schedule.exponential_backoff_max);
                self.lookup.next_at = now
                    + jittered(
                        backoff,
                        self.schedule.exponential_backoff_random_factor,
                        rng,
                    );
                self.obs.lookup_error = Some(error);
            }
        }
    }

    /// A probe finished.
    pub fn on_probe(
        &mut self,
        now: Time,
        rng: &mut Rng,
        cp: &ContactPoint,
        result: Result<ProbeAnswer, String>,
    ) {
        let Some(p) = self.probes.get_mut(cp) else {
            return;
        };
        p.in_flight = false;
        p.next_at = now
            + jittered(
                self.schedule.probe_interval,
                self.schedule.probe_interval_jitter,
                rng,
            );
        let result = result.and_then(|mut a| {
            // Honest agents list at most five; more is kept out of every later decision.
            a.answer.seed_nodes.truncate(MAX_JOIN_SEED_NODES);
            if a.from_self || a.answer.self_node.ip == cp.ip {
                Ok(a)
            } else {
                Err(format!(
                    "refused: the answer names {} as the node answering, which is not at this contact point's address",
                    a.answer.self_node
                ))
            }
        });
        match result {
            Ok(answer) => {
                p.failing_since = None;
                p.last_error = None;
                self.obs.answers.insert(cp.clone(), answer);
            }
            Err(error) => {
                p.last_error = Some(error);
                let since = *p.failing_since.get_or_insert(now);
                // A contact point failing this long may be gone: look again (Akka).
                if now.saturating_sub(since) >= self.schedule.probing_failure_timeout {
                    p.failing_since = Some(now);
                    if !self.lookup.in_flight {
                        self.lookup.next_at = self.lookup.next_at.min(now);
                    }
                }
            }
        }
    }

    /// A contact point probed us: it is up, so probe it back soon (at most four times
    /// per probe interval) instead of waiting for its turn.
    pub fn nudge(&mut self, now: Time, cp: &ContactPoint) {
        if self.finished {
            return;
        }
        let quarter = self.schedule.probe_interval / 4;
        if let Some(p) = self.probes.get_mut(cp)
            && !p.in_flight
        {
            let earliest = p.last_started.map_or(now, |s| (s + quarter).max(now));
            p.next_at = p.next_at.min(earliest);
        }
    }

    /// The decision, with the formation record: a formation waits for this node to
    /// hold it, and once it does, the formation goes ahead (a cluster reported in the
    /// meantime is still joined instead).
    pub fn decide(&self, now: Time) -> Decision {
        let d = self.decide_unrecorded(now);
        match (&self.record, d) {
            (Record::Claimed { by_agreement }, Decision::Wait(_)) if self.instructed.is_none() => {
                Decision::Form {
                    by_agreement: *by_agreement,
                }
            }
            (Record::Open { lease, last, .. }, Decision::Form { .. }) => {
                let lease = lease.clone();
                Decision::Wait(match last {
                    Some(ClaimOutcome::HeldBy(holder)) => Waiting::FormationRecorded {
                        lease,
                        holder: holder.clone(),
                    },
                    Some(ClaimOutcome::Failed(error)) => Waiting::FormationRecordUnavailable {
                        lease,
                        error: error.clone(),
                    },
                    Some(ClaimOutcome::Disabled { from_api: true }) => {
                        Waiting::NewClusterDisabledInConfigMap { lease }
                    }
                    _ => Waiting::ClaimingFormation { lease },
                })
            }
            // Off here, and the record (looked at all the same) held, or forming off there too.
            (
                Record::Open {
                    lease,
                    last: Some(ClaimOutcome::HeldBy(holder)),
                    ..
                },
                Decision::Wait(Waiting::NewClusterDisabled),
            ) => Decision::Wait(Waiting::FormationRecorded {
                lease: lease.clone(),
                holder: holder.clone(),
            }),
            (
                Record::Open {
                    lease,
                    last: Some(ClaimOutcome::Disabled { from_api: true }),
                    ..
                },
                Decision::Wait(Waiting::NewClusterDisabled),
            ) => Decision::Wait(Waiting::NewClusterDisabledInConfigMap {
                lease: lease.clone(),
            }),
            // Asking failed: that, not this node's own setting, is what it waits on.
            (
                Record::Open {
                    lease,
                    last: Some(ClaimOutcome::Failed(error)),
                    ..
                },
                Decision::Wait(Waiting::NewClusterDisabled),
            ) => Decision::Wait(Waiting::FormationRecordUnavailable {
                lease: lease.clone(),
                error: error.clone(),
            }),
            (_, d) => d,
        }
    }

    /// The decision of the rules alone, without the formation record. A node that is
    /// not among the lowest few contact points waits for the lowest to form, whatever
    /// else it lacks (it does not probe everyone, see [`PROBED_LOWEST`]).
    fn decide_unrecorded(&self, now: Time) -> Decision {
        self.decide_rules(now, self.settings.new_cluster_enabled)
    }

    /// [`Bootstrap::decide_unrecorded`] with `new-cluster-enabled` as given.
    fn decide_rules(&self, now: Time, new_cluster_enabled: bool) -> Decision {
        let settings = DeciderSettings {
            new_cluster_enabled,
            ..self.settings.clone()
        };
        let d = decider::decide(&self.obs, &settings, &self.me, now);
        match d {
            Decision::Wait(
                Waiting::NotEnoughContactPoints { .. }
                | Waiting::NotStable { .. }
                | Waiting::Unanswered { .. },
            ) if self.probed().is_some() => match self.obs.discovered.first() {
                Some(lowest) => Decision::Wait(Waiting::NotLowest {
                    lowest: lowest.clone(),
                    new_cluster_enabled,
                }),
                None => d,
            },
            d => d,
        }
    }

    /// The decision turned into an instruction for membership, given only when it is
    /// new: a join when the seed nodes change, a formation once (never after a join was
    /// started, whose retries continue).
    pub fn instruction(&mut self, now: Time) -> Option<Instruction> {
        if self.finished {
            return None;
        }
        let next = match self.decide(now) {
            Decision::Join { seed_nodes } => Instruction::Join(seed_nodes),
            Decision::Form { .. } if self.instructed.is_none() => Instruction::Form,
            _ => return None,
        };
        if self.instructed.as_ref() == Some(&next) {
            return None;
        }
        self.formed |= next == Instruction::Form;
        self.instructed = Some(next.clone());
        Some(next)
    }

    /// The state explained, for `/bootstrap/status`.
    pub fn status(&self, now: Time) -> BootstrapStatus {
        let decision = self.decide(now);
        let reason = match &decision {
            Decision::Wait(w) => w.explain(),
            Decision::Join { seed_nodes } => format!(
                "joining the existing cluster through {}",
                seed_nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            Decision::Form { by_agreement: true } => "forming a new cluster: this node is the lowest contact point and every contact point reports the same set".into(),
            Decision::Form { by_agreement: false } => "forming a new cluster: this node is the lowest contact point and the set was stable for bootstrap.stable-margin".into(),
        };
        let fresh_for = self.settings.probing_failure_timeout;
        BootstrapStatus {
            new_cluster_enabled: self.settings.new_cluster_enabled,
            // (Claimed: this node formed, under the record it claimed.)
            formation_record: !matches!(self.record, Record::NotUsed),
            instruction: match (&self.instructed, self.formed) {
                (_, true) => Some("form"),
                (Some(Instruction::Join(_)), false) => Some("join"),
                _ => None,
            },
            discovered: self.obs.discovered.iter().cloned().collect(),
            lookups: self.obs.lookups,
            lookup_error: self.obs.lookup_error.clone(),
            stable_for_ms: (self.obs.lookups > 0)
                .then(|| ms(now.saturating_sub(self.obs.discovered_changed_at))),
            skipped: self.skipped.clone(),
            contact_points: self
                .obs
                .discovered
                .iter()
                .map(|cp| {
                    let answer = self.obs.answers.get(cp);
                    let probe = self.probes.get(cp);
                    ContactPointStatus {
                        contact_point: cp.clone(),
                        name: cp.name.clone(),
                        is_self: self.me.is_self(cp, answer),
                        answer: answer.map(|a| AnswerStatus {
                            age_ms: ms(now.saturating_sub(a.at)),
                            fresh: now.saturating_sub(a.at) <= fresh_for,
                            self_node: a.answer.self_node.clone(),
                            seed_nodes: a.answer.nodes().cloned().collect(),
                            contact_points: a.answer.contact_points.clone(),
                        }),
                        last_error: probe.and_then(|p| p.last_error.clone()),
                        failing_for_ms: probe
                            .and_then(|p| p.failing_since)
                            .map(|s| ms(now.saturating_sub(s))),
                    }
                })
                .collect(),
            reason,
            decision,
        }
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// `/bootstrap/status` body (the phase is added by the coordinator).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapStatus {
    /// In plain words: what the node is doing or waiting for.
    pub reason: String,
    /// Whether this node may form a new cluster by its own setting
    /// (`bootstrap.new-cluster-enabled`, or its file, as read now); where the formation
    /// record names a ConfigMap, that ConfigMap's key, read at each claim, decides
    /// instead (`reason` says what it said).
    pub new_cluster_enabled: bool,
    /// Whether a formation must claim the formation record first
    /// (`bootstrap.formation-lease`).
    pub formation_record: bool,
    pub decision: Decision,
    /// What this node was told to do, once it was: `form` or `join`. Unlike `decision`
    /// (computed now, from answers that age), it does not change afterwards.
    pub instruction: Option<&'static str>,
    pub discovered: Vec<ContactPoint>,
    pub lookups: u64,
    pub lookup_error: Option<String>,
    pub stable_for_ms: Option<u64>,
    pub skipped: Vec<Skipped>,
    pub contact_points: Vec<ContactPointStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactPointStatus {
    pub contact_point: ContactPoint,
    pub name: Option<String>,
    #[serde(rename = "self")]
    pub is_self: bool,
    pub answer: Option<AnswerStatus>,
    pub last_error: Option<String>,
    pub failing_for_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AnswerStatus {
    pub age_ms: u64,
    pub fresh: bool,
    pub self_node: NodeAddress,
    pub seed_nodes: Vec<NodeAddress>,
    pub contact_points: Option<BTreeSet<ContactPoint>>,
}

#[cfg(test)]
mod tests;
