//! The split brain resolver's part of the core: each tick every member updates how
//! stable its view is; the leader of this side downs whom the strategy says once it is
//! stable (or everyone, when it never settles), asking for the Lease first with
//! lease-majority (the actor does that I/O).

use std::collections::BTreeSet;

use super::{MembershipCore, Outgoing};
use crate::base::address::UniqueAddress;
use crate::base::member::MemberStatus;
use crate::base::rng::Rng;
use crate::base::time::Time;
use crate::membership::member::Member;
use crate::membership::messages::Message;
use crate::membership::sbr::{Due, Verdict, View, decide};

/// lease-majority's progress on one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LeaseStep {
    None,
    /// Ask for the Lease at this time (the minority waits before asking).
    Due(Time),
    /// Asked; the outcome comes through `lease_outcome`.
    Asked,
    /// The outcome: this side holds the Lease, or not.
    Got(bool),
}

impl MembershipCore {
    /// The split brain resolver: every member tracks how stable its view is; the leader
    /// of this side downs whom the strategy says once it is stable.
    pub(super) fn resolve_split_brain(&mut self, now: Time, rng: &mut Rng) -> Vec<Outgoing> {
        let (Some(downing), Some(stability)) = (&self.settings.downing, &mut self.stability) else {
            return Vec::new();
        };
        if self.gossip.reachability().unreachable_members().is_empty() {
            // Nobody unreachable (the usual case): nothing to decide, and no copy of
            // every member on every tick.
            stability.healthy();
            self.sbr_wakeup = None;
            self.lease = LeaseStep::None;
            return Vec::new();
        }
        if self.gossip.shutting_down() {
            // A full shutdown: whoever is away has stopped, or will; no side is kept
            // or lost, so the leader of the members it reaches downs the rest at once
            // (nobody can join either side meanwhile).
            self.lease = LeaseStep::None;
            if self.gossip.leader() != Some(&self.me) {
                return Vec::new();
            }
            let away: BTreeSet<UniqueAddress> = self
                .gossip
                .members()
                .filter(|m| !self.gossip.is_reachable(&m.node))
                .filter(|m| {
                    !matches!(
                        m.status,
                        MemberStatus::Down | MemberStatus::Exiting | MemberStatus::Removed
                    )
                })
                .map(|m| m.node.clone())
                .collect();
            return self.down_now(
                now,
                rng,
                "full cluster shutdown: members that stopped are downed at once",
                away,
            );
        }
        let members: Vec<Member> = self.gossip.members().cloned().collect();
        let view = View {
            members: &members,
            reachability: self.gossip.reachability(),
        };
        stability.observe(now, view);
        let due = stability.due(now);
        self.sbr_wakeup = match due {
            Due::WaitUntil(t) => Some(t),
            _ => None,
        };
        if due != Due::Decide || self.gossip.leader() != Some(&self.me) {
            // A new view (or another decider) starts the Lease over.
            self.lease = LeaseStep::None;
        }
        if self.gossip.leader() != Some(&self.me) {
            return Vec::new();
        }
        let outcome = match self.lease {
            LeaseStep::Got(held) => Some(held),
            _ => None,
        };
        let (reason, to_down) = match due {
            Due::Decide => match decide(&downing.strategy, view, outcome) {
                Some(Verdict::Down {
                    mut members,
                    reason,
                }) => {
                    if !members.contains(&self.me) {
                        // This side stays: a Joining/WeaklyUp member that is only
                        // briefly away (a starved process) is not downed with the
                        // other side until it has stayed away for stable-after.
                        members.retain(|n| {
                            stability.settled(n, now)
                                || self.gossip.member(n).is_none_or(|m| {
                                    !matches!(
                                        m.status,
                                        MemberStatus::Joining | MemberStatus::WeaklyUp
                                    )
                                })
                        });
                    }
                    (reason, members)
                }
                Some(Verdict::AcquireLease { delay }) => {
                    if self.lease == LeaseStep::None {
                        self.lease = LeaseStep::Due(now + delay);
                    }
                    if let LeaseStep::Due(at) = self.lease {
                        if now >= at {
                            self.lease = LeaseStep::Asked;
                            self.lease_requested = true;
                        } else {
                            self.sbr_wakeup = Some(at);
                        }
                    }
                    return Vec::new();
                }
                None => return Vec::new(),
            },
            Due::DownAll => (
                "down-all-when-unstable: the view kept changing past stable-after and its limit while a member stayed unreachable",
                members
                    .iter()
                    .filter(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Removed))
                    .map(|m| m.node.clone())
                    .collect(),
            ),
            Due::Idle | Due::WaitUntil(_) => return Vec::new(),
        };
        self.down_now(now, rng, reason, to_down)
    }

    /// Marks `to_down` Down (those not Down yet) and tells the others; this node's
    /// own side first if it is among them.
    fn down_now(
        &mut self,
        now: Time,
        rng: &mut Rng,
        reason: &'static str,
        to_down: BTreeSet<UniqueAddress>,
    ) -> Vec<Outgoing> {
        let mut changed = false;
        for node in &to_down {
            if let Some(m) = self
                .gossip
                .member(node)
                .filter(|m| m.status != MemberStatus::Down)
            {
                let mut m = m.clone();
                m.status = MemberStatus::Down;
                self.gossip.put(m);
                changed = true;
            }
        }
        if !changed {
            return Vec::new();
        }
        self.downing_done = Some((reason, to_down.clone()));
        self.gossip.bump(&self.me);
        self.leader_actions(now);
        let out = if to_down.contains(&self.me) {
            // This side loses: tell every member on it, as this node stops now. They
            // are Down now, so `peers()` (which skips Down members) would miss them.
            self.gossip
                .members()
                .filter(|m| m.node != self.me && to_down.contains(&m.node))
                .filter(|m| self.gossip.is_reachable(&m.node))
                .map(|m| {
                    self.envelope(
                        &m.node.address,
                        Some(m.node.uid),
                        Message::Gossip {
                            gossip: self.gossip.clone(),
                        },
                    )
                })
                .collect()
        } else {
            self.push(now, rng, true)
        };
        self.check_done();
        out
    }

    /// The resolver's latest decision since the last call, if it downed anyone: why,
    /// and whom (for the log).
    pub fn take_downing(&mut self) -> Option<(&'static str, BTreeSet<UniqueAddress>)> {
        self.downing_done.take()
    }

    /// lease-majority: whether the actor must now try to acquire the Lease (once per
    /// request; the outcome goes to [`Self::lease_outcome`]).
    pub fn take_lease_request(&mut self) -> bool {
        std::mem::take(&mut self.lease_requested)
    }

    /// lease-majority: the outcome of the acquisition asked for; `held` false also
    /// when the Lease could not be reached (this side then downs itself). Ignored when
    /// the view changed meanwhile (a new decision asks again).
    pub fn lease_outcome(&mut self, now: Time, rng: &mut Rng, held: bool) -> Vec<Outgoing> {
        if self.lease != LeaseStep::Asked {
            return Vec::new();
        }
        self.lease = LeaseStep::Got(held);
        self.resolve_split_brain(now, rng)
    }
}
