//! A member's status: Akka Cluster's lifecycle, shared by membership, the management
//! API and the operator (which must never compare it as a string).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Akka Cluster's member lifecycle. Reachability is separate (`reachability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    Joining,
    WeaklyUp,
    Up,
    /// The whole cluster is to stop (`PUT /cluster operation=prepare-for-full-shutdown`):
    /// no one joins, nothing is handed over; the member moves itself on to
    /// ReadyForShutdown.
    PreparingForShutdown,
    /// This member may be stopped with the rest of the cluster; unreachable, it is
    /// downed at once rather than decided about.
    ReadyForShutdown,
    Leaving,
    Exiting,
    Down,
    Removed,
}

impl MemberStatus {
    /// Which of two views of the same member wins a merge: a status further along its
    /// lifecycle (Akka's `highestPriorityOf`): Removed > Down > Exiting > Leaving >
    /// ReadyForShutdown > PreparingForShutdown > Up > WeaklyUp > Joining.
    pub fn merge_rank(self) -> u8 {
        match self {
            Self::Joining => 0,
            Self::WeaklyUp => 1,
            Self::Up => 2,
            Self::PreparingForShutdown => 3,
            Self::ReadyForShutdown => 4,
            Self::Leaving => 5,
            Self::Exiting => 6,
            Self::Down => 7,
            Self::Removed => 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joining => "Joining",
            Self::WeaklyUp => "WeaklyUp",
            Self::Up => "Up",
            Self::PreparingForShutdown => "PreparingForShutdown",
            Self::ReadyForShutdown => "ReadyForShutdown",
            Self::Leaving => "Leaving",
            Self::Exiting => "Exiting",
            Self::Down => "Down",
            Self::Removed => "Removed",
        }
    }

    /// Statuses whose members must have seen a version for convergence (Akka).
    pub fn counts_for_convergence(self) -> bool {
        self.can_lead()
    }

    /// Statuses a leader is chosen from first (Akka's).
    pub fn can_lead(self) -> bool {
        matches!(
            self,
            Self::Up | Self::PreparingForShutdown | Self::ReadyForShutdown | Self::Leaving
        )
    }

    /// Reported as seed nodes to joining nodes. A cluster preparing for shutdown is
    /// still reported: an empty answer would read as "no cluster here" and let a
    /// prober form a second one (it is refused entry instead).
    pub fn is_seed_candidate(self) -> bool {
        matches!(
            self,
            Self::Up
                | Self::WeaklyUp
                | Self::Joining
                | Self::PreparingForShutdown
                | Self::ReadyForShutdown
        )
    }

    /// Statuses from which a member may leave gracefully.
    pub fn may_leave(self) -> bool {
        matches!(
            self,
            Self::Joining
                | Self::WeaklyUp
                | Self::Up
                | Self::PreparingForShutdown
                | Self::ReadyForShutdown
        )
    }

    /// PreparingForShutdown or ReadyForShutdown: part of a full cluster shutdown.
    pub fn is_shutting_down(self) -> bool {
        matches!(self, Self::PreparingForShutdown | Self::ReadyForShutdown)
    }
}

impl MemberStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 9] = [
        Self::Joining,
        Self::WeaklyUp,
        Self::Up,
        Self::PreparingForShutdown,
        Self::ReadyForShutdown,
        Self::Leaving,
        Self::Exiting,
        Self::Down,
        Self::Removed,
    ];

    /// Up or WeaklyUp: a member the application may use.
    pub fn is_up(self) -> bool {
        matches!(self, Self::Up | Self::WeaklyUp)
    }

    /// Leaving, Exiting or Down: on its way out of the cluster.
    pub fn is_going(self) -> bool {
        matches!(self, Self::Leaving | Self::Exiting | Self::Down)
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`MemberStatus::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a member status (Joining, WeaklyUp, Up, PreparingForShutdown, ReadyForShutdown, Leaving, Exiting, Down, Removed)"
)]
pub struct UnknownStatus(String);

impl FromStr for MemberStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.chars().take(40).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_text_and_json() {
        for st in MemberStatus::ALL {
            assert_eq!(st.as_str().parse::<MemberStatus>(), Ok(st));
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{st}\""));
            assert_eq!(serde_json::from_str::<MemberStatus>(&json).unwrap(), st);
        }
        assert!("up".parse::<MemberStatus>().is_err());
    }
}
