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

/// How long a [`MembershipCore::pod_gone`] hint counts: the operator sends it again
/// while the member is still there.
pub const GONE_HINT_TTL: std::time::Duration = std::time::Duration::from_secs(60);

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
        let gone = &self.gone;
        let known_gone = |n: &UniqueAddress| gone.get(n).is_some_and(|t| now < *t + GONE_HINT_TTL);
        // A full shutdown: a member that is ReadyForShutdown set that status itself, so
        // it knew the cluster was stopping as a whole; once its pod is gone too
        // (`pod_gone`), its silence is its stop, and the leader of the members this
        // node reaches downs it at once, whatever the strategy. Any other unreachable
        // member — one that may never have heard of the shutdown (the request can reach
        // one side of a partition only), or one that is ready but may still run (a
        // scale to zero taken back) — is left to the strategy, as always.
        let ready_away: BTreeSet<UniqueAddress> = self
            .gossip
            .members()
            .filter(|m| m.status == MemberStatus::ReadyForShutdown)
            .filter(|m| !self.gossip.is_reachable(&m.node) && known_gone(&m.node))
            .map(|m| m.node.clone())
            .collect();
        if !ready_away.is_empty() {
            self.lease = LeaseStep::None;
            if self.gossip.leader() != Some(&self.me) {
                return Vec::new();
            }
            return self.down_now(
                now,
                rng,
                "full cluster shutdown: members ready for it that stopped are downed at once",
                ready_away,
            );
        }
        let members: Vec<Member> = self.gossip.members().cloned().collect();
        let view = View {
            members: &members,
            reachability: self.gossip.reachability(),
        };
        stability.observe(now, view);
        // Pod-aware downing: when every member this node finds unreachable is one whose
        // pod is known gone (`pod_gone`) and every other member answered this node's
        // heartbeats just now, there is no view to wait for — those processes ended,
        // and nobody else is away (a member cut off with them would be silent by now
        // too: a hint for part of a partitioned side must not decide it) — so the
        // strategy decides now; its verdict is taken early only if it keeps this side
        // (below). A member this node does not watch (clusters beyond
        // monitored-by-nr-of-members) cannot be vouched for: then no early decision.
        let away: Vec<&Member> = members
            .iter()
            .filter(|m| !self.gossip.is_reachable(&m.node))
            .filter(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Exiting))
            .collect();
        let fresh = self.heartbeats.interval() * 3 / 2;
        let others_answer = members
            .iter()
            .filter(|m| m.node != self.me && !known_gone(&m.node))
            .filter(|m| {
                !matches!(
                    m.status,
                    MemberStatus::Down | MemberStatus::Exiting | MemberStatus::Removed
                )
            })
            .all(|m| {
                self.heartbeats
                    .silent_for(&m.node, now)
                    .is_some_and(|s| s < fresh)
            });
        let due = stability.due(now);
        let early = matches!(due, Due::WaitUntil(_))
            && !away.is_empty()
            && away.iter().all(|m| known_gone(&m.node))
            && others_answer;
        let due = if early { Due::Decide } else { due };
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
                // Early, only a verdict that keeps this side: one that would down it
                // waits for stable-after as always (the view may yet change).
                Some(Verdict::Down { members, .. }) if early && members.contains(&self.me) => {
                    return Vec::new();
                }
                Some(Verdict::AcquireLease { .. }) if early => return Vec::new(),
                Some(Verdict::Down {
                    mut members,
                    reason,
                }) => {
                    let reason = if early {
                        "pod-aware downing: every unreachable member's pod is gone, and the strategy keeps this side"
                    } else {
                        reason
                    };
                    if !members.contains(&self.me) {
                        // This side stays: a Joining/WeaklyUp member that is only
                        // briefly away (a starved process) is not downed with the
                        // other side until it has stayed away for stable-after
                        // (or its pod is known gone).
                        members.retain(|n| {
                            stability.settled(n, now)
                                || known_gone(n)
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

    /// Kubernetes says the pod of the member at `address` is gone (the operator, with
    /// the management token): its process has ended, so the resolver need not wait
    /// `stable-after` for it. The hint counts for [`GONE_HINT_TTL`], only while the
    /// member is unreachable (which it becomes after two heartbeat intervals of silence,
    /// not the usual pause), and only for a verdict that keeps this side; the strategy
    /// decides as ever. Returns whether such a member exists, and what to send.
    pub fn pod_gone(
        &mut self,
        now: Time,
        rng: &mut Rng,
        address: &crate::base::address::NodeAddress,
        uid: Option<u64>,
    ) -> Result<(bool, Vec<Outgoing>), super::MarkError> {
        if !self.is_member() {
            return Err(super::MarkError::NotMember);
        }
        // With `uid`, that incarnation only: a new one at the same address (its pod's IP
        // not yet reported when the operator looked) is not the one that is gone.
        let nodes: Vec<UniqueAddress> = self
            .gossip
            .members()
            .filter(|m| m.node.address == *address && m.node != self.me)
            .filter(|m| uid.is_none_or(|u| m.node.uid == u))
            .filter(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Removed))
            .map(|m| m.node.clone())
            .collect();
        if nodes.is_empty() {
            return Ok((false, Vec::new()));
        }
        // Hints of members no longer here, or too old, go.
        let gossip = &self.gossip;
        self.gone
            .retain(|n, at| gossip.has_member(n) && now < *at + GONE_HINT_TTL);
        for n in nodes {
            self.gone.insert(n, now);
        }
        Ok((true, self.resolve_split_brain(now, rng)))
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
