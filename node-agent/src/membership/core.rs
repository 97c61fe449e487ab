//! The membership state machine of one node. Pure: every input carries `now`, randomness
//! comes from the caller's [`Rng`], and the outputs are messages to send.
//!
//! - Joining: `Join` to the seed nodes, retried every `retry-unsuccessful-join-after`
//!   until a `Welcome` arrives. Forming = joining oneself.
//! - A member that receives `Join` adds the node as Joining (a new incarnation on a known
//!   address first has its old one removed: marked Down, or Exiting if it was leaving)
//!   and answers `Welcome`.
//! - Gossip: a new version is pushed to up to three members that have not seen it (and
//!   to the leader, when the change is this node's own), at most once per
//!   [`PUSH_SPACING`] of `gossip-interval` (changes in between go together); every
//!   `gossip-interval` one random member gets the state if it has not seen it, and
//!   otherwise just the digest of its version (`Status`), answered with the state only
//!   when that differs. A received gossip is merged; a sender that lacked a change
//!   (never for seen marks alone) may get ours in the next push slot, ahead of members
//!   picked at random, up to the fanout per slot. A member that sees a version for the
//!   first time tells the leader with a few bytes (`Seen`), so that convergence does not
//!   need everyone's whole state at the leader; spaced so that the leader gets about
//!   [`SEEN_MARKS_PER_INTERVAL`] per `gossip-interval`, each for the member's newest
//!   version then (while joins and verdicts change the state many times a second, most
//!   marks would be stale on arrival: unspaced, they were nine in ten messages the
//!   leader of 100 forming members received). Per member and second, that is a bounded
//!   number of messages whose size grows linearly with the cluster (issue 16: pushing
//!   every seen mark to the leader made the leader's load grow with N³ during
//!   formation).
//! - Leader actions, on convergence: Joining/WeaklyUp → Up (assigning up numbers in
//!   address order), Down → removed. Without convergence for `allow-weakly-up-members`,
//!   Joining → WeaklyUp.
//!
//! Here: the state, joining, leaving, messages and timers; [`leader`] the leader
//! actions, [`detection`] failure detection, [`downing`] the split brain resolver.

use std::collections::BTreeSet;
use std::time::Duration;

use super::gossip::Gossip;
use super::heartbeat::Heartbeats;
use super::member::{Member, MemberInfo};
use super::sbr::{Downing, Stability};
use crate::base::address::{NodeAddress, UniqueAddress};
use crate::base::member::MemberStatus;
use crate::base::rng::Rng;
use crate::base::time::Time;
use crate::config::{AgentConfig, FailureDetectorConfig};
use crate::membership::messages::{Envelope, Message};

/// Members that are pushed a changed state at once (besides the leader).
const PUSH_FANOUT: usize = 3;
/// Pushes are at least `gossip-interval` / this apart.
pub const PUSH_SPACING: u32 = 5;
/// `Seen` marks the leader gets per `gossip-interval` from all members together, about:
/// each member spaces its marks by N / this of the interval (at most the interval), so
/// 250 ms apart in a cluster of 100 and 12.5 ms in a cluster of 5, where it costs
/// convergence nothing.
pub const SEEN_MARKS_PER_INTERVAL: u32 = 400;

#[derive(Debug, Clone, PartialEq)]
pub struct MembershipSettings {
    pub gossip_interval: Duration,
    pub leader_actions_interval: Duration,
    pub allow_weakly_up_members: Option<Duration>,
    pub retry_unsuccessful_join_after: Duration,
    pub seed_node_timeout: Duration,
    pub failure_detector: FailureDetectorConfig,
    /// Automatic downing of unreachable members; `None`: off.
    pub downing: Option<Downing>,
    /// Give up (the process exits) when joining has not succeeded for this long.
    pub shutdown_after_unsuccessful_join: Option<Duration>,
}

impl MembershipSettings {
    pub fn from_config(c: &AgentConfig) -> Self {
        let s = &c.settings.cluster;
        Self {
            gossip_interval: s.gossip_interval,
            leader_actions_interval: s.leader_actions_interval,
            allow_weakly_up_members: s.allow_weakly_up_members,
            retry_unsuccessful_join_after: s.retry_unsuccessful_join_after,
            seed_node_timeout: s.seed_node_timeout,
            failure_detector: s.failure_detector.clone(),
            downing: Downing::from_config(&s.split_brain_resolver),
            shutdown_after_unsuccessful_join: s.shutdown_after_unsuccessful_join_seed_nodes,
        }
    }
}

/// Where this node is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Not yet told whom to join.
    Idle,
    /// Asking `seeds` to let us in; with explicit seed nodes, the first seed forms the
    /// cluster alone at `form_at`.
    Joining {
        seeds: Vec<NodeAddress>,
        next_attempt: Time,
        form_at: Option<Time>,
    },
    /// In the cluster.
    Member,
    /// Downed or removed by the cluster: this incarnation is over and must not come
    /// back (the process exits; a restart joins as a new member).
    Downed,
    /// Left gracefully: this member reached Exiting (or was never a member); the
    /// process may exit, the others remove it.
    Left,
    /// Joining did not succeed within `shutdown-after-unsuccessful-join-seed-nodes`:
    /// the process exits so that Kubernetes restarts it and bootstrap starts afresh.
    JoinFailed,
}

/// Why an incoming message was dropped (counted in metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Meant for another node or another incarnation of this one.
    WrongRecipient,
    /// A gossip that does not contain this node, or from a sender outside it.
    ForeignGossip,
    /// Not applicable in the current phase (e.g. a join to a node that is not a member).
    NotNow,
    /// Holds values no honest cluster produces (counters near their end).
    Implausible,
}

impl Dropped {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongRecipient => "wrong_recipient",
            Self::ForeignGossip => "foreign_gossip",
            Self::NotNow => "not_now",
            Self::Implausible => "implausible",
        }
    }
}

/// Why [`MembershipCore::mark`] did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkError {
    /// This node is not a member (yet or any more).
    NotMember,
    /// No member has that address.
    NoSuchMember,
}

/// Why [`MembershipCore::join_asked`] did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// This node is a member already: a member joins no other cluster.
    AlreadyMember,
    /// This node is joining already (bootstrap, configured seed nodes, or an earlier
    /// request).
    AlreadyJoining,
    /// This incarnation's membership ended (left, downed, or joining failed).
    Ended,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: NodeAddress,
    pub envelope: Envelope,
}

#[derive(Debug, Clone)]
pub struct MembershipCore {
    me: UniqueAddress,
    info: MemberInfo,
    settings: MembershipSettings,
    phase: Phase,
    gossip: Gossip,
    next_gossip: Time,
    next_leader_actions: Time,
    unconverged_since: Option<Time>,
    heartbeats: Heartbeats,
    stability: Option<Stability>,
    /// When the split brain resolver next needs a look (set by every tick).
    sbr_wakeup: Option<Time>,
    /// lease-majority: where this node is with the Lease (the actor does the I/O).
    lease: downing::LeaseStep,
    /// A Lease acquisition the actor must start (taken by `take_lease_request`).
    lease_requested: bool,
    /// The resolver's last decision, for the actor to log (taken by `take_downing`).
    downing_done: Option<(&'static str, BTreeSet<UniqueAddress>)>,
    /// When this node started to join (cleared on success).
    joining_since: Option<Time>,
    /// Someone with the management token asked this node to join (or form) over the
    /// API: bootstrap's instructions no longer apply to it.
    asked: bool,
    /// Members whose pods Kubernetes says are gone, and since when (`pod_gone`).
    gone: std::collections::BTreeMap<UniqueAddress, Time>,
    /// A new version waits for the next push slot.
    push_pending: bool,
    /// ... and it holds a change of our own, which the leader must get too.
    push_leader: bool,
    /// The next push slot.
    next_push: Time,
    /// Senders whose gossip lacked something of ours: the next push slot picks its
    /// targets among them first, and forgets the rest (see `on_gossip`).
    lacking: BTreeSet<UniqueAddress>,
    /// The leader's repair: the version it last saw, since when, and whether members
    /// still have to see it (then it pushes to them at every free slot).
    repair_version: super::vclock::VectorClock,
    version_at: Time,
    repairing: bool,
    /// A `Seen` mark for the leader waits for its slot ...
    seen_pending: bool,
    /// ... which is then.
    next_seen: Time,
    /// The digest of a version, kept: it is asked for on most messages.
    digest: Option<(super::vclock::VectorClock, u64)>,
}

impl MembershipCore {
    pub fn new(
        me: UniqueAddress,
        info: MemberInfo,
        settings: MembershipSettings,
        now: Time,
    ) -> Self {
        Self {
            me,
            info,
            heartbeats: Heartbeats::new(&settings.failure_detector, now),
            stability: settings
                .downing
                .as_ref()
                .map(|d| Stability::new(d.stable_after, d.unstable_limit)),
            sbr_wakeup: None,
            lease: downing::LeaseStep::None,
            lease_requested: false,
            downing_done: None,
            joining_since: None,
            asked: false,
            gone: Default::default(),
            push_pending: false,
            push_leader: false,
            next_push: now,
            lacking: BTreeSet::new(),
            repair_version: Default::default(),
            version_at: now,
            repairing: false,
            seen_pending: false,
            next_seen: now,
            digest: None,
            next_gossip: now + settings.gossip_interval,
            next_leader_actions: now + settings.leader_actions_interval,
            settings,
            phase: Phase::Idle,
            gossip: Gossip::default(),
            unconverged_since: None,
        }
    }

    pub fn me(&self) -> &UniqueAddress {
        &self.me
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    pub fn is_member(&self) -> bool {
        self.phase == Phase::Member
    }

    pub fn self_member(&self) -> Option<&Member> {
        self.gossip.member(&self.me)
    }

    fn envelope(&self, to: &NodeAddress, to_uid: Option<u64>, message: Message) -> Outgoing {
        Outgoing {
            to: to.clone(),
            envelope: Envelope {
                from: self.me.clone(),
                to: to.clone(),
                to_uid,
                message,
            },
        }
    }

    fn send_joins(&self, seeds: &[NodeAddress]) -> Vec<Outgoing> {
        seeds
            .iter()
            .map(|s| {
                self.envelope(
                    s,
                    None,
                    Message::Join {
                        info: self.info.clone(),
                    },
                )
            })
            .collect()
    }

    /// Join an existing cluster through these seed nodes (from bootstrap).
    pub fn join(&mut self, now: Time, seeds: Vec<NodeAddress>) -> Vec<Outgoing> {
        if self.is_member() || self.asked || self.ended() {
            return Vec::new();
        }
        let seeds: Vec<NodeAddress> = seeds
            .into_iter()
            .filter(|s| *s != self.me.address)
            .collect();
        if seeds.is_empty() {
            return Vec::new();
        }
        if let Phase::Joining { seeds: current, .. } = &self.phase
            && *current == seeds
        {
            return Vec::new(); // already asking them; the retry timer resends
        }
        let out = self.send_joins(&seeds);
        self.joining_since.get_or_insert(now);
        self.phase = Phase::Joining {
            seeds,
            next_attempt: now + self.settings.retry_unsuccessful_join_after,
            form_at: None,
        };
        out
    }

    /// Explicit seed nodes (Akka's seed-node process): join the others; the first seed
    /// forms the cluster alone if none of them answers within `seed-node-timeout`.
    pub fn join_configured_seeds(&mut self, now: Time, seeds: &[NodeAddress]) -> Vec<Outgoing> {
        if self.ended() {
            return Vec::new();
        }
        let first_is_me = seeds.first() == Some(&self.me.address);
        let others: Vec<NodeAddress> = seeds
            .iter()
            .filter(|s| **s != self.me.address)
            .cloned()
            .collect();
        if others.is_empty() {
            return if first_is_me {
                self.form(now)
            } else {
                Vec::new()
            };
        }
        let out = self.send_joins(&others);
        self.joining_since.get_or_insert(now);
        self.phase = Phase::Joining {
            seeds: others,
            next_attempt: now + self.settings.retry_unsuccessful_join_after,
            form_at: first_is_me.then(|| now + self.settings.seed_node_timeout),
        };
        out
    }

    /// Akka's `POST /cluster/members`: join the cluster of the member at `address`,
    /// or form a new cluster when it is this node's own. Only from Idle: a node that
    /// is a member, or joining already, is left as it is. Afterwards bootstrap's
    /// instructions are ignored: they must not turn this join into a formation of its
    /// own (or the other way round).
    pub fn join_asked(
        &mut self,
        now: Time,
        address: NodeAddress,
    ) -> Result<Vec<Outgoing>, JoinError> {
        match self.phase {
            Phase::Idle => {}
            Phase::Member => return Err(JoinError::AlreadyMember),
            Phase::Joining { .. } => return Err(JoinError::AlreadyJoining),
            Phase::Downed | Phase::Left | Phase::JoinFailed => return Err(JoinError::Ended),
        }
        let out = if address == self.me.address {
            self.form(now)
        } else {
            self.join(now, vec![address])
        };
        self.asked = true;
        Ok(out)
    }

    /// Form a new cluster: join ourselves.
    pub fn form(&mut self, now: Time) -> Vec<Outgoing> {
        if self.is_member() || self.asked || self.ended() {
            return Vec::new();
        }
        self.gossip = Gossip::default();
        self.gossip
            .put(Member::joining(self.me.clone(), self.info.clone()));
        self.gossip.bump(&self.me);
        self.phase = Phase::Member;
        self.joining_since = None;
        self.leader_actions(now);
        Vec::new()
    }

    /// This node is done: it left, was downed, or gave up joining. It never joins or
    /// forms again (a process that lingers, e.g. for its application's handover, must
    /// not come back as a member that then vanishes); a new incarnation does.
    fn ended(&self) -> bool {
        matches!(self.phase, Phase::Downed | Phase::Left | Phase::JoinFailed)
    }

    /// Leave the cluster gracefully: Leaving now; the leader moves it to Exiting once
    /// everyone has seen that, and then removes it.
    pub fn leave(&mut self, now: Time, rng: &mut Rng) -> Vec<Outgoing> {
        if !self.is_member() {
            if self.phase != Phase::Downed {
                self.phase = Phase::Left;
            }
            return Vec::new();
        }
        let Some(mut m) = self.self_member().cloned() else {
            return Vec::new();
        };
        if !m.status.may_leave() {
            return Vec::new();
        }
        m.status = MemberStatus::Leaving;
        self.gossip.put(m);
        self.gossip.bump(&self.me);
        self.leader_actions(now);
        let out = self.push(now, rng, true);
        self.check_done();
        out
    }

    /// An operator's `Leave` or `Down` of the member at `address` (any member may ask;
    /// the change spreads by gossip). Leaving this node is [`MembershipCore::leave`].
    pub fn mark(
        &mut self,
        now: Time,
        rng: &mut Rng,
        address: &NodeAddress,
        status: MemberStatus,
    ) -> Result<Vec<Outgoing>, MarkError> {
        if !self.is_member() {
            return Err(MarkError::NotMember);
        }
        let m = self
            .gossip
            .members()
            .find(|m| m.node.address == *address)
            .cloned()
            .ok_or(MarkError::NoSuchMember)?;
        if m.node == self.me && status == MemberStatus::Leaving {
            return Ok(self.leave(now, rng));
        }
        let allowed = match status {
            MemberStatus::Leaving => m.status.may_leave(),
            MemberStatus::Down => !matches!(m.status, MemberStatus::Down | MemberStatus::Removed),
            _ => false,
        };
        if !allowed {
            return Ok(Vec::new()); // already on its way
        }
        let mut m = m;
        m.status = status;
        self.gossip.put(m);
        self.gossip.bump(&self.me);
        self.leader_actions(now);
        let out = self.push(now, rng, true);
        self.check_done();
        Ok(out)
    }

    /// `PUT /cluster operation=prepare-for-full-shutdown` (Akka's): every Up and
    /// WeaklyUp member becomes PreparingForShutdown, and each then ReadyForShutdown.
    /// From then on nobody joins or moves Up, a leaving member is let go as usual, and
    /// an unreachable member is downed at once, whatever the strategy (see
    /// `resolve_split_brain`): the cluster is stopping as a whole, so the resolver
    /// must not make the members that stop last down themselves as a minority one by
    /// one. There is no way back, as in Akka.
    pub fn prepare_for_full_shutdown(
        &mut self,
        now: Time,
        rng: &mut Rng,
    ) -> Result<Vec<Outgoing>, MarkError> {
        if !self.is_member() {
            return Err(MarkError::NotMember);
        }
        let moving: Vec<Member> = self
            .gossip
            .members()
            .filter(|m| matches!(m.status, MemberStatus::Up | MemberStatus::WeaklyUp))
            .cloned()
            .collect();
        if moving.is_empty() {
            return Ok(Vec::new());
        }
        for mut m in moving {
            m.status = MemberStatus::PreparingForShutdown;
            self.gossip.put(m);
        }
        self.gossip.bump(&self.me);
        self.ready_for_shutdown();
        self.leader_actions(now);
        Ok(self.push(now, rng, true))
    }

    /// An incoming message.
    pub fn receive(
        &mut self,
        now: Time,
        rng: &mut Rng,
        env: Envelope,
    ) -> Result<Vec<Outgoing>, Dropped> {
        if env.to != self.me.address || env.to_uid.is_some_and(|u| u != self.me.uid) {
            return Err(Dropped::WrongRecipient);
        }
        if matches!(self.phase, Phase::Downed | Phase::Left | Phase::JoinFailed) {
            return Err(Dropped::NotNow);
        }
        if let Message::Welcome { gossip } | Message::Gossip { gossip } = &env.message
            && gossip.implausible().is_some()
        {
            return Err(Dropped::Implausible);
        }
        match env.message {
            Message::Join { info } => self.on_join(now, rng, env.from, info),
            Message::Welcome { gossip } => {
                if self.is_member() {
                    return self.on_gossip(now, rng, env.from, gossip);
                }
                if !matches!(self.phase, Phase::Joining { .. }) || !gossip.has_member(&self.me) {
                    return Err(Dropped::NotNow);
                }
                self.phase = Phase::Member;
                self.joining_since = None;
                self.gossip = Gossip::default();
                self.on_gossip(now, rng, env.from, gossip)
            }
            Message::Gossip { gossip } => {
                if !self.is_member() {
                    return Err(Dropped::NotNow);
                }
                self.on_gossip(now, rng, env.from, gossip)
            }
            Message::Heartbeat { seq } => {
                // Answered by members to any sender that addressed this node by its
                // cluster name (and, with a cluster key, authenticated): a member that
                // has not yet heard of a new monitor must not look dead to it. The
                // answer is no larger than the question.
                if !self.is_member() {
                    return Err(Dropped::NotNow);
                }
                Ok(vec![self.envelope(
                    &env.from.address,
                    Some(env.from.uid),
                    Message::HeartbeatRsp { seq },
                )])
            }
            Message::HeartbeatRsp { .. } => {
                self.heartbeats.on_response(&env.from, now);
                Ok(Vec::new())
            }
            Message::Status { digest } => {
                if !self.is_member() {
                    return Err(Dropped::NotNow);
                }
                if !self.gossip.has_member(&env.from) {
                    if !self.gossip.tombstones().contains(&env.from) {
                        return Err(Dropped::NotNow);
                    }
                    // A removed incarnation that still gossips missed its removal (a
                    // leaving member whose Exiting push was lost holds every mark for
                    // its Leaving version and sends only digests): it gets our state,
                    // which tells it so, in the next push slot, within the push
                    // fanout like any sender that lacks our version.
                    self.lacking.insert(env.from);
                    if now >= self.next_push {
                        return Ok(self.push_now(now, rng));
                    }
                    return Ok(Vec::new());
                }
                if digest != self.digest() {
                    // Different states: ours goes back (and if the sender had something
                    // we lack, its answer brings that).
                    return Ok(vec![self.envelope(
                        &env.from.address,
                        Some(env.from.uid),
                        Message::Gossip {
                            gossip: self.gossip.clone(),
                        },
                    )]);
                }
                // The same state: the sender has seen it.
                Ok(self.on_seen(now, rng, &env.from))
            }
            Message::Seen { digest } => {
                if !self.is_member() || !self.gossip.has_member(&env.from) {
                    return Err(Dropped::NotNow);
                }
                // Only a mark for our current version counts; an older one is stale.
                if digest != self.digest() {
                    return Ok(Vec::new());
                }
                Ok(self.on_seen(now, rng, &env.from))
            }
        }
    }

    /// `from` has seen our current version. The last mark the leader waited for makes it
    /// act now, not on its next tick.
    fn on_seen(&mut self, now: Time, rng: &mut Rng, from: &UniqueAddress) -> Vec<Outgoing> {
        if self.gossip.mark_seen(from)
            && self.gossip.leader() == Some(&self.me)
            && self.gossip.convergence()
            && self.leader_actions(now)
        {
            let out = self.push(now, rng, true);
            self.check_done();
            return out;
        }
        Vec::new()
    }

    fn on_join(
        &mut self,
        now: Time,
        rng: &mut Rng,
        from: UniqueAddress,
        info: MemberInfo,
    ) -> Result<Vec<Outgoing>, Dropped> {
        // Nobody joins a cluster that is shutting down (as Akka's full shutdown).
        let me_ok = !self.gossip.shutting_down()
            && self.self_member().is_some_and(|m| {
                matches!(
                    m.status,
                    MemberStatus::Up | MemberStatus::WeaklyUp | MemberStatus::Joining
                )
            });
        if !self.is_member() || !me_ok || self.gossip.tombstones().contains(&from) {
            return Err(Dropped::NotNow);
        }
        if !self.gossip.has_member(&from) {
            let old: Vec<Member> = self.gossip.other_incarnations(&from).cloned().collect();
            if !old.is_empty() {
                // A restarted node: its previous incarnation cannot come back (it held
                // this address), so it is marked for removal; the leader removes it and
                // the retried join is then accepted. One that was leaving has left: it
                // goes (or stays) Exiting, which an unreachable member may be without
                // blocking convergence. Marking it Down would tell applications it
                // failed; a rolling restart starts the new process right after the old
                // one stopped, often before every member saw it Exiting. Any other
                // status: Down.
                let mut changed = false;
                for mut m in old {
                    let status = match m.status {
                        MemberStatus::Down | MemberStatus::Exiting => continue,
                        MemberStatus::Leaving => MemberStatus::Exiting,
                        _ => MemberStatus::Down,
                    };
                    m.status = status;
                    self.gossip.put(m);
                    changed = true;
                }
                if changed {
                    self.gossip.bump(&self.me);
                    self.leader_actions(now);
                    return Ok(self.push(now, rng, true));
                }
                return Ok(Vec::new());
            }
            self.gossip.put(Member::joining(from.clone(), info));
            self.gossip.bump(&self.me);
            self.leader_actions(now);
        }
        let mut out = vec![self.envelope(
            &from.address,
            Some(from.uid),
            Message::Welcome {
                gossip: self.gossip.clone(),
            },
        )];
        out.extend(self.push(now, rng, true));
        Ok(out)
    }

    fn on_gossip(
        &mut self,
        now: Time,
        rng: &mut Rng,
        from: UniqueAddress,
        remote: Gossip,
    ) -> Result<Vec<Outgoing>, Dropped> {
        // The cluster removed this incarnation (e.g. downed while we were paused).
        if remote.tombstones().contains(&self.me) && self.is_member() {
            let leaving = self
                .self_member()
                .is_some_and(|m| matches!(m.status, MemberStatus::Leaving | MemberStatus::Exiting));
            self.phase = if leaving { Phase::Left } else { Phase::Downed };
            return Ok(Vec::new());
        }
        // Only state of our own cluster: it must hold us (this incarnation) and its sender.
        if !remote.has_member(&self.me) || !remote.has_member(&from) {
            return Err(Dropped::ForeignGossip);
        }
        let before = self.gossip.version().clone();
        let seen_before = self.gossip.seen().len();
        let mut merged = self.gossip.merge(&remote);
        let first_seen = merged.mark_seen(&self.me);
        self.gossip = merged;
        // A new version (not just new seen marks): it spreads on.
        let changed = *self.gossip.version() != before;
        let seen_grew = changed || self.gossip.seen().len() != seen_before;
        let acted = seen_grew && self.leader_actions(now);
        // The sender lacked a change (perhaps the leader's, just made): it gets ours in
        // this node's next push slot (now, if the slot is free), ahead of members picked
        // at random. Not at once to every such sender: while a big cluster forms, most
        // gossip a member receives is a version or two behind its own, and answering
        // each with the whole state was most of the traffic (3 to 6 answers per push at
        // 100 members, issue 16). A member that is not picked still gets the version
        // from the pushes of the members that have it, the periodic gossip to members
        // that have not seen it, and the leader's repair; one that is not a peer any
        // more (Down, removed) when it gossips again.
        if self.gossip.version() != remote.version() {
            self.lacking.insert(from.clone());
        }
        let mut out = Vec::new();
        if acted {
            // The leader's own change (members moved Up, removed): a new version of ours.
            out.extend(self.push(now, rng, true));
        } else if changed {
            out.extend(self.push(now, rng, false));
        } else if !self.lacking.is_empty() && now >= self.next_push {
            out.extend(self.push_now(now, rng));
        }
        // Our mark for this version, to a sender that does not know we have it, and
        // (first time, in its slot) to the leader.
        let told_sender = self.gossip.version() == remote.version() && !remote.has_seen(&self.me);
        if told_sender {
            let digest = self.digest();
            out.push(self.envelope(&from.address, Some(from.uid), Message::Seen { digest }));
        }
        if first_seen {
            self.seen_pending = true;
            let leader_is_sender = self.gossip.leader() == Some(&from);
            if told_sender && leader_is_sender {
                self.seen_pending = false;
            }
            out.extend(self.seen_to_leader(now));
        }
        self.check_done();
        Ok(out)
    }

    /// How far apart this member's `Seen` marks to the leader are.
    fn seen_spacing(&self) -> Duration {
        let n = self.gossip.members().count() as u32;
        (self.settings.gossip_interval * n / SEEN_MARKS_PER_INTERVAL)
            .min(self.settings.gossip_interval)
    }

    /// The pending `Seen` mark to the leader, if its slot has come: for the version we
    /// hold now, which may be newer than the one that made it pending.
    fn seen_to_leader(&mut self, now: Time) -> Vec<Outgoing> {
        if !self.seen_pending || now < self.next_seen {
            return Vec::new();
        }
        self.seen_pending = false;
        let Some(leader) = self.gossip.leader().cloned() else {
            return Vec::new();
        };
        if leader == self.me || !self.gossip.has_seen(&self.me) {
            return Vec::new();
        }
        self.next_seen = now + self.seen_spacing();
        let digest = self.digest();
        vec![self.envelope(&leader.address, Some(leader.uid), Message::Seen { digest })]
    }

    /// Timers: join retries, seed-node timeout, periodic gossip and leader actions.
    pub fn tick(&mut self, now: Time, rng: &mut Rng) -> Vec<Outgoing> {
        let mut out = Vec::new();
        if let Phase::Joining {
            seeds,
            next_attempt,
            form_at,
        } = &self.phase
        {
            if form_at.is_some_and(|t| now >= t) {
                return self.form(now);
            }
            if let Some(give_up) = self.join_deadline()
                && now >= give_up
            {
                self.phase = Phase::JoinFailed;
                return out;
            }
            if now >= *next_attempt {
                out = self.send_joins(seeds);
                let seeds = seeds.clone();
                let form_at = *form_at;
                self.phase = Phase::Joining {
                    seeds,
                    next_attempt: now + self.settings.retry_unsuccessful_join_after,
                    form_at,
                };
            }
            return out;
        }
        if !self.is_member() {
            return out;
        }
        out.extend(self.failure_detection(now, rng));
        out.extend(self.resolve_split_brain(now, rng));
        if !self.is_member() {
            return out;
        }
        if self.ready_for_shutdown() {
            self.leader_actions(now);
            out.extend(self.push(now, rng, true));
        }
        if now >= self.next_leader_actions {
            self.next_leader_actions = now + self.settings.leader_actions_interval;
            if self.leader_actions(now) {
                out.extend(self.push(now, rng, true));
            }
            self.check_done();
        }
        if (self.push_pending || !self.lacking.is_empty()) && now >= self.next_push {
            out.extend(self.push_now(now, rng));
        }
        out.extend(self.seen_to_leader(now));
        out.extend(self.repair(now, rng));
        if now >= self.next_gossip {
            self.next_gossip = now + self.settings.gossip_interval;
            let peers: Vec<&Member> = self.peers().collect();
            let unseen: Vec<&Member> = peers
                .iter()
                .copied()
                .filter(|m| !self.gossip.has_seen(&m.node))
                .collect();
            // One that has not seen our version gets it; when all have (the steady
            // state), a random member gets the version's digest only, and answers with
            // its state if that differs. Idle gossip costs a few bytes, not the state.
            let (pool, whole) = if unseen.is_empty() {
                (&peers, false)
            } else {
                (&unseen, true)
            };
            if !pool.is_empty() {
                let target = pool[rng.below(pool.len() as u64) as usize].node.clone();
                let message = if whole {
                    Message::Gossip {
                        gossip: self.gossip.clone(),
                    }
                } else {
                    Message::Status {
                        digest: self.digest(),
                    }
                };
                out.push(self.envelope(&target.address, Some(target.uid), message));
            }
        }
        out
    }

    /// When an unsuccessful join gives up, if it ever does.
    fn join_deadline(&self) -> Option<Time> {
        Some(self.joining_since? + self.settings.shutdown_after_unsuccessful_join?)
    }

    /// When `tick` next has something to do.
    pub fn next_wakeup(&self) -> Option<Time> {
        match &self.phase {
            Phase::Idle => None,
            Phase::Joining {
                next_attempt,
                form_at,
                ..
            } => {
                let next = form_at.map_or(*next_attempt, |f| f.min(*next_attempt));
                Some(self.join_deadline().map_or(next, |d| d.min(next)))
            }
            Phase::Member => {
                let sbr = self.sbr_wakeup;
                let mut next = self
                    .next_gossip
                    .min(self.next_leader_actions)
                    .min(self.heartbeats.next_wakeup());
                if self.push_pending || !self.lacking.is_empty() {
                    next = next.min(self.next_push);
                }
                if self.seen_pending {
                    next = next.min(self.next_seen);
                }
                if self.repairing {
                    let spacing = self.settings.gossip_interval / PUSH_SPACING;
                    next = next.min(self.next_push.max(self.version_at + spacing));
                }
                Some(sbr.map_or(next, |t| t.min(next)))
            }
            Phase::Downed | Phase::Left | Phase::JoinFailed => None,
        }
    }

    /// [`Gossip::digest`] of the current version, computed once per version.
    fn digest(&mut self) -> u64 {
        match &self.digest {
            Some((v, d)) if v == self.gossip.version() => *d,
            _ => {
                let d = self.gossip.digest();
                self.digest = Some((self.gossip.version().clone(), d));
                d
            }
        }
    }

    /// Members other than us that can receive gossip.
    fn peers(&self) -> impl Iterator<Item = &Member> {
        self.gossip.members().filter(|m| {
            m.node != self.me && !matches!(m.status, MemberStatus::Down | MemberStatus::Removed)
        })
    }

    /// The leader's repair of a push that missed members. A push reaches each member
    /// with high probability, not certainty (about 5 % are missed with a fanout of 3),
    /// and convergence waits for every one; the leader knows from the `Seen` marks who
    /// has not seen its version, so a push-spacing after the version appeared it pushes
    /// to those at every free slot, instead of leaving them to the periodic gossip.
    fn repair(&mut self, now: Time, rng: &mut Rng) -> Vec<Outgoing> {
        if self.gossip.leader() != Some(&self.me) {
            self.repairing = false;
            return Vec::new();
        }
        if *self.gossip.version() != self.repair_version {
            self.repair_version = self.gossip.version().clone();
            self.version_at = now;
        }
        let unreachable = self.gossip.reachability().unreachable_members();
        let repairing = self.peers().any(|m| {
            m.status.counts_for_convergence()
                && !unreachable.contains(&m.node)
                && !self.gossip.has_seen(&m.node)
        });
        self.repairing = repairing;
        let spacing = self.settings.gossip_interval / PUSH_SPACING;
        if self.repairing && now >= self.next_push && now >= self.version_at + spacing {
            return self.push_now(now, rng);
        }
        Vec::new()
    }

    /// A new version to push: now if the push slot is free, else at the next slot
    /// (with whatever else changed by then). `own`: the change is this node's, so the
    /// leader gets it too.
    fn push(&mut self, now: Time, rng: &mut Rng, own: bool) -> Vec<Outgoing> {
        self.push_pending = true;
        self.push_leader |= own;
        // Last words (this member is Exiting or Down, so it stops now) never wait.
        let last_words = self
            .self_member()
            .is_some_and(|m| matches!(m.status, MemberStatus::Exiting | MemberStatus::Down));
        if now < self.next_push && !last_words {
            return Vec::new();
        }
        self.push_now(now, rng)
    }

    /// Sends the current state to up to [`PUSH_FANOUT`] nodes that have not seen it
    /// (and the leader, for a change of our own), and takes the push slot. Senders that
    /// lacked our state come first (any incarnation, even one no longer a member);
    /// peers picked at random fill the rest when the version is new (a pending push) or
    /// the leader's repair is due, and then at least one is picked at random if any is
    /// left, so that senders cannot take a new version's whole fanout. Senders beyond
    /// the fanout are forgotten.
    fn push_now(&mut self, now: Time, rng: &mut Rng) -> Vec<Outgoing> {
        let spacing = self.settings.gossip_interval / PUSH_SPACING;
        self.next_push = now + spacing;
        let repair_due = self.repairing && now >= self.version_at + spacing;
        let spread = std::mem::take(&mut self.push_pending) || repair_due;
        let to_leader = std::mem::take(&mut self.push_leader);
        let lacking = std::mem::take(&mut self.lacking);
        let unseen: Vec<UniqueAddress> = self
            .peers()
            .filter(|m| !self.gossip.has_seen(&m.node))
            .map(|m| m.node.clone())
            .collect();
        // Any sender that has not seen this version, whatever its status: a member
        // marked Down, or removed while it was paused, learns so this way.
        let mut wanting: Vec<UniqueAddress> = lacking
            .into_iter()
            .filter(|m| *m != self.me && !self.gossip.has_seen(m))
            .collect();
        rng.shuffle(&mut wanting);
        let mut wanting = wanting.into_iter();
        let answered = if spread { PUSH_FANOUT - 1 } else { PUSH_FANOUT };
        let mut targets: BTreeSet<UniqueAddress> = wanting.by_ref().take(answered).collect();
        if spread && targets.len() < PUSH_FANOUT {
            let others: Vec<UniqueAddress> = unseen
                .into_iter()
                .filter(|m| !targets.contains(m))
                .collect();
            targets.extend(rng.sample(&others, PUSH_FANOUT - targets.len()));
        }
        // No peer left to pick at random: the room goes to senders after all.
        let room = PUSH_FANOUT.saturating_sub(targets.len());
        targets.extend(wanting.take(room));
        if to_leader
            && let Some(leader) = self.gossip.leader()
            && *leader != self.me
            && !self.gossip.has_seen(leader)
        {
            targets.insert(leader.clone());
        }
        targets
            .into_iter()
            .map(|t| {
                self.envelope(
                    &t.address,
                    Some(t.uid),
                    Message::Gossip {
                        gossip: self.gossip.clone(),
                    },
                )
            })
            .collect()
    }
}

mod detection;
mod downing;
mod leader;

#[cfg(test)]
mod tests;
