//! Leader actions: on convergence the leader moves Joining and WeaklyUp members Up
//! (assigning up numbers), Leaving ones to Exiting, and removes the Exiting and the
//! Down; without convergence for `allow-weakly-up-members`, Joining ones become WeaklyUp.
//! And the end of this node's own membership, once it is Down or Exiting.

use super::{MembershipCore, Phase};
use crate::base::address::UniqueAddress;
use crate::base::member::MemberStatus;
use crate::base::time::Time;
use crate::membership::member::Member;

impl MembershipCore {
    /// Leader actions; true if the state changed.
    pub(super) fn leader_actions(&mut self, now: Time) -> bool {
        if self.gossip.leader() != Some(&self.me) {
            self.unconverged_since = None;
            return false;
        }
        let mut changed = false;
        if self.gossip.shutting_down() {
            // A full shutdown: whoever became Up concurrently with the request is
            // prepared too, and nobody moves Up any more.
            changed |= self.move_all(MemberStatus::Up, MemberStatus::PreparingForShutdown);
            changed |= self.move_all(MemberStatus::WeaklyUp, MemberStatus::PreparingForShutdown);
        }
        if self.gossip.convergence() {
            self.unconverged_since = None;
            let mut next_up = self
                .gossip
                .members()
                .map(|m| m.up_number)
                .max()
                .unwrap_or(0);
            let moving: Vec<Member> = self
                .gossip
                .members()
                .filter(|m| matches!(m.status, MemberStatus::Joining | MemberStatus::WeaklyUp))
                .filter(|_| !self.gossip.shutting_down())
                .cloned()
                .collect();
            for mut m in moving {
                // Received gossip is checked (`Gossip::implausible`); never overflow.
                let Some(up) = next_up.checked_add(1) else {
                    break;
                };
                next_up = up;
                m.status = MemberStatus::Up;
                m.up_number = next_up;
                self.gossip.put(m);
                changed = true;
            }
            // Exiting members have been seen Exiting by everyone (convergence): remove
            // them with the downed; then Leaving members move on to Exiting.
            let downed: Vec<UniqueAddress> = self
                .gossip
                .members()
                .filter(|m| matches!(m.status, MemberStatus::Down | MemberStatus::Exiting))
                .map(|m| m.node.clone())
                .collect();
            changed |= self.move_all(MemberStatus::Leaving, MemberStatus::Exiting);
            for d in downed {
                self.gossip.remove(&d);
                changed = true;
            }
        } else {
            let since = *self.unconverged_since.get_or_insert(now);
            if let Some(after) = self.settings.allow_weakly_up_members
                && now.saturating_sub(since) >= after
                && !self.gossip.shutting_down()
            {
                changed |= self.move_all(MemberStatus::Joining, MemberStatus::WeaklyUp);
            }
        }
        if changed {
            self.gossip.bump(&self.me);
        }
        changed
    }

    /// Moves every member in status `from` to `to` (callers bump the version); true if
    /// any moved.
    fn move_all(&mut self, from: MemberStatus, to: MemberStatus) -> bool {
        let moving: Vec<Member> = self
            .gossip
            .members()
            .filter(|m| m.status == from)
            .cloned()
            .collect();
        let any = !moving.is_empty();
        for mut m in moving {
            m.status = to;
            self.gossip.put(m);
        }
        any
    }

    /// A member asked to prepare for a full shutdown is ready at once (nothing of the
    /// agent's own to hand over); true if its status changed (callers push).
    pub(super) fn ready_for_shutdown(&mut self) -> bool {
        let Some(mut m) = self
            .self_member()
            .filter(|m| m.status == MemberStatus::PreparingForShutdown)
            .cloned()
        else {
            return false;
        };
        m.status = MemberStatus::ReadyForShutdown;
        self.gossip.put(m);
        self.gossip.bump(&self.me);
        true
    }

    /// A member whose own status is Down stops: its incarnation is over. One that is
    /// Exiting has left.
    pub(super) fn check_done(&mut self) {
        if !self.is_member() {
            return;
        }
        match self.self_member().map(|m| m.status) {
            Some(MemberStatus::Down) => self.phase = Phase::Downed,
            Some(MemberStatus::Exiting) => self.phase = Phase::Left,
            _ => {}
        }
    }
}
