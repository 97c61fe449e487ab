//! Failure detection in the core: heartbeats to this node's ring neighbours, and its
//! verdicts about them written into the gossip's reachability table.

use std::collections::BTreeSet;

use super::{MembershipCore, Outgoing};
use crate::base::address::UniqueAddress;
use crate::base::member::MemberStatus;
use crate::base::rng::Rng;
use crate::base::time::Time;
use crate::membership::failure_detector::ring_neighbours;
use crate::membership::messages::Message;

impl MembershipCore {
    /// Phi of every member this node monitors at `now`.
    pub fn phis(&self, now: Time) -> Vec<(UniqueAddress, f64)> {
        self.heartbeats.phis(now)
    }

    /// Heartbeats to our ring neighbours, and our verdicts about them into the gossip's
    /// reachability table (a change is a new version, pushed at once).
    pub(super) fn failure_detection(&mut self, now: Time, rng: &mut Rng) -> Vec<Outgoing> {
        let members: BTreeSet<UniqueAddress> = self
            .gossip
            .members()
            .filter(|m| m.status != MemberStatus::Removed)
            .map(|m| m.node.clone())
            .collect();
        let mine = self.gossip.reachability().seen_by(&self.me);
        let targets = ring_neighbours(
            &self.me,
            &members,
            &mine,
            self.settings.failure_detector.monitored_by_nr_of_members,
        );
        self.heartbeats.set_targets(&targets, now);
        let mut out: Vec<Outgoing> = self
            .heartbeats
            .tick(now)
            .map(|beat| {
                beat.to
                    .iter()
                    .map(|t| {
                        self.envelope(
                            &t.address,
                            Some(t.uid),
                            Message::Heartbeat { seq: beat.seq },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut unreachable = self.heartbeats.unreachable(now);
        // Pod-aware downing: a member whose pod Kubernetes says is gone needs none of
        // the patience a live but slow process gets (`acceptable-heartbeat-pause`):
        // silent for two heartbeat intervals, it is unreachable. One that answers is
        // never.
        let patience = self.heartbeats.interval() * 2;
        for (node, at) in &self.gone {
            if now < *at + super::downing::GONE_HINT_TTL
                && self
                    .heartbeats
                    .silent_for(node, now)
                    .is_some_and(|s| s >= patience)
            {
                unreachable.insert(node.clone());
            }
        }
        if self.gossip.set_reachability(&self.me, &unreachable) {
            self.gossip.bump(&self.me);
            self.leader_actions(now);
            out.extend(self.push(now, rng, true));
        }
        out
    }
}
