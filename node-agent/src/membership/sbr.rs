//! Split brain resolution: which members to down when some are unreachable, decided by
//! the leader of each side from that side's view alone, so that the sides reach
//! complementary decisions without talking to each other (Akka's strategies).
//!
//! - [`decide`]: the strategy's verdict for one view of the cluster.
//! - [`Stability`]: when to decide — only once the view has not changed for
//!   `stable-after`, and when it keeps changing for too long (`down-all-when-unstable`)
//!   while some member stays unreachable, down everyone rather than risk two sides
//!   deciding on different views.
//!
//! Where muster differs from Akka, and why (issue 16: under CPU starvation a forming
//! cluster of 50 downed 47 healthy members). A member that flaps — unreachable for a few
//! seconds, then answering again, as a starved or paused process does — is not a
//! partition: nobody is gone, and downing everyone gains nothing. So:
//! - `down-all-when-unstable` acts only when, besides the view never settling, some Up
//!   or Leaving member has stayed unreachable for at least `stable-after` without a
//!   break. Akka downs all after the limit whatever the cause; with muster, members
//!   that keep flapping are left in (they block convergence while unreachable, and the
//!   `muster_cluster_unreachable_members` metric shows them).
//! - Joining and WeaklyUp members do not count for either side, so their reachability
//!   does not make the view unstable, and a winning side downs such a member only once
//!   it has been unreachable for `stable-after` without a break ([`Stability::settled`]);
//!   a losing side still downs all of its own.
//!
//! Counting follows Akka: only Up and Leaving members count (Joining and WeaklyUp ones
//! may be seen by one side only), restricted to a role when the strategy names one;
//! everything not kept is downed, whatever its status. Members that are unreachable from
//! some observers while they themselves observe others as unreachable are *indirectly
//! connected* — a flaky link, not a clean partition — and are downed; the strategy then
//! decides between the cleanly separated rest.
//!
//! Pure: every input is a value, time included.

use std::collections::BTreeSet;
use std::time::Duration;

use super::member::Member;
use super::reachability::Reachability;
use crate::base::address::UniqueAddress;
use crate::base::member::MemberStatus;
use crate::base::time::Time;
use crate::config::{ActiveStrategy, DownAllWhenUnstable, SplitBrainResolverConfig};

/// `split-brain-resolver.active-strategy` and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Keep the side with more members; on a tie, the side with the lowest address.
    KeepMajority { role: Option<String> },
    /// Keep a side with at least `quorum_size` members; down a side with fewer.
    StaticQuorum {
        quorum_size: usize,
        role: Option<String>,
    },
    /// Keep the side with the oldest member. With `down_if_alone`, an oldest member that
    /// is alone on its side is downed instead and the other side kept.
    KeepOldest {
        down_if_alone: bool,
        role: Option<String>,
    },
    /// Down every member: the safest choice when the application can restart cheaply.
    DownAll,
    /// Keep the side that holds a Kubernetes Lease; the side without a majority waits
    /// `acquire_lease_delay_for_minority` before trying, so the majority usually wins.
    LeaseMajority {
        role: Option<String>,
        acquire_lease_delay_for_minority: Duration,
    },
}

/// A strategy's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Down these members (possibly including this node).
    Down {
        members: BTreeSet<UniqueAddress>,
        reason: &'static str,
    },
    /// lease-majority: try to acquire the lease after `delay`, then decide again with
    /// the outcome ([`decide`]'s `lease` argument).
    AcquireLease { delay: Duration },
}

/// One side's view: all members, and who cannot reach whom.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub members: &'a [Member],
    pub reachability: &'a Reachability,
}

struct Sides {
    /// Members on our side (reachable, not indirectly connected).
    reachable: Vec<Member>,
    /// The other side of a clean partition.
    unreachable: Vec<Member>,
    /// Unreachable members that themselves observe others as unreachable.
    indirectly_connected: BTreeSet<UniqueAddress>,
}

fn sides(view: View<'_>) -> Sides {
    // Exiting members are on their way out: their silence decides nothing.
    let alive: Vec<&Member> = view
        .members
        .iter()
        .filter(|m| {
            !matches!(
                m.status,
                MemberStatus::Down | MemberStatus::Removed | MemberStatus::Exiting
            )
        })
        .collect();
    let alive_nodes: BTreeSet<&UniqueAddress> = alive.iter().map(|m| &m.node).collect();
    let subjects: BTreeSet<UniqueAddress> = view
        .reachability
        .unreachable_members()
        .into_iter()
        .filter(|n| alive_nodes.contains(n))
        .collect();
    let indirectly_connected: BTreeSet<UniqueAddress> = subjects
        .iter()
        .filter(|s| {
            subjects
                .iter()
                .any(|other| view.reachability.observers_of(other).contains(*s))
        })
        .cloned()
        .collect();
    // The indirectly connected are downed anyway: they count for neither side.
    let (unreachable, reachable): (Vec<Member>, Vec<Member>) = alive
        .into_iter()
        .filter(|m| !indirectly_connected.contains(&m.node))
        .cloned()
        .partition(|m| subjects.contains(&m.node));
    Sides {
        reachable,
        unreachable,
        indirectly_connected,
    }
}

fn counted<'a>(
    members: &'a [Member],
    role: &'a Option<String>,
) -> impl Iterator<Item = &'a Member> {
    members.iter().filter(move |m| {
        // Up and Leaving, and an Up member preparing for a full shutdown.
        m.status.can_lead() && role.as_ref().is_none_or(|r| m.roles.contains(r))
    })
}

fn nodes(members: &[Member]) -> BTreeSet<UniqueAddress> {
    members.iter().map(|m| m.node.clone()).collect()
}

fn down(members: BTreeSet<UniqueAddress>, reason: &'static str) -> Verdict {
    Verdict::Down { members, reason }
}

/// The verdict of `strategy` for `view`, or `None` when nobody is unreachable. `lease`
/// is the outcome of a lease acquisition asked for by an earlier
/// [`Verdict::AcquireLease`] (lease-majority only).
pub fn decide(strategy: &Strategy, view: View<'_>, lease: Option<bool>) -> Option<Verdict> {
    let s = sides(view);
    if s.unreachable.is_empty() && s.indirectly_connected.is_empty() {
        return None;
    }
    let ours = nodes(&s.reachable);
    // Only a flaky link, no clean partition: down just the indirectly connected.
    if s.unreachable.is_empty() {
        return Some(down(s.indirectly_connected, "indirectly connected"));
    }
    let mut theirs = nodes(&s.unreachable);
    theirs.extend(s.indirectly_connected.iter().cloned());
    let keep_ours = || Some(down(theirs.clone(), "the other side loses"));
    let keep_theirs = || {
        let mut all = ours.clone();
        all.extend(s.indirectly_connected.iter().cloned());
        Some(down(all, "this side loses"))
    };
    match strategy {
        Strategy::DownAll => {
            let mut all = ours.clone();
            all.extend(theirs.iter().cloned());
            Some(down(all, "down-all"))
        }
        Strategy::KeepMajority { role } => {
            let a: Vec<&Member> = counted(&s.reachable, role).collect();
            let b: Vec<&Member> = counted(&s.unreachable, role).collect();
            if a.len() != b.len() {
                return if a.len() > b.len() {
                    keep_ours()
                } else {
                    keep_theirs()
                };
            }
            // A tie: the side holding the lowest address among the counted members; with
            // none counted at all, the lowest address of any member.
            let lowest = |xs: &[&Member], all: &[Member]| {
                xs.iter()
                    .map(|m| m.node.clone())
                    .min()
                    .or_else(|| all.iter().map(|m| m.node.clone()).min())
            };
            match (lowest(&a, &s.reachable), lowest(&b, &s.unreachable)) {
                (Some(x), Some(y)) if x < y => keep_ours(),
                (Some(_), None) => keep_ours(),
                _ => keep_theirs(),
            }
        }
        Strategy::StaticQuorum { quorum_size, role } => {
            let a = counted(&s.reachable, role).count();
            let b = counted(&s.unreachable, role).count();
            if a >= *quorum_size && b >= *quorum_size {
                // More members than 2 × quorum - 1: both sides could reach the quorum.
                let mut all = ours.clone();
                all.extend(theirs.iter().cloned());
                Some(down(
                    all,
                    "both sides have a quorum: too many members for quorum-size",
                ))
            } else if a >= *quorum_size {
                keep_ours()
            } else {
                keep_theirs()
            }
        }
        Strategy::KeepOldest {
            down_if_alone,
            role,
        } => {
            let all: Vec<Member> = s.reachable.iter().chain(&s.unreachable).cloned().collect();
            let Some(oldest) = counted(&all, role).min_by(|x, y| x.age_order(y)) else {
                return keep_theirs();
            };
            let oldest_is_ours = ours.contains(&oldest.node);
            let a = counted(&s.reachable, role).count();
            let b = counted(&s.unreachable, role).count();
            match (oldest_is_ours, *down_if_alone) {
                (true, true) if a == 1 && b > 0 => keep_theirs(),
                (true, _) => keep_ours(),
                (false, true) if b == 1 && a > 0 => keep_ours(),
                (false, _) => keep_theirs(),
            }
        }
        Strategy::LeaseMajority {
            role,
            acquire_lease_delay_for_minority,
        } => match lease {
            Some(true) => keep_ours(),
            Some(false) => keep_theirs(),
            None => {
                let a = counted(&s.reachable, role).count();
                let b = counted(&s.unreachable, role).count();
                let majority = a > b
                    || (a == b
                        && s.reachable.iter().map(|m| &m.node).min()
                            < s.unreachable.iter().map(|m| &m.node).min());
                Some(Verdict::AcquireLease {
                    delay: if majority {
                        Duration::ZERO
                    } else {
                        *acquire_lease_delay_for_minority
                    },
                })
            }
        },
    }
}

/// How long the view may keep changing past `stable-after` before every member is
/// downed; `None` when off. `on` is 3/4 of `stable-after`, at least 4 s (Akka's rule).
pub fn unstable_limit(setting: DownAllWhenUnstable, stable_after: Duration) -> Option<Duration> {
    match setting {
        DownAllWhenUnstable::On => Some((stable_after * 3 / 4).max(Duration::from_secs(4))),
        DownAllWhenUnstable::Off => None,
        DownAllWhenUnstable::After(d) => Some(d),
    }
}

/// The resolver's settings, from `cluster.split-brain-resolver`; `None` when off.
#[derive(Debug, Clone, PartialEq)]
pub struct Downing {
    pub strategy: Strategy,
    pub stable_after: Duration,
    pub unstable_limit: Option<Duration>,
}

impl Downing {
    /// From checked settings (see `AgentConfig`'s validation); `None` for `off`.
    pub fn from_config(c: &SplitBrainResolverConfig) -> Option<Self> {
        use ActiveStrategy as A;
        let role = |r: &str| (!r.is_empty()).then(|| r.to_owned());
        let strategy = match c.active_strategy {
            A::Off => return None,
            A::KeepMajority => Strategy::KeepMajority {
                role: role(&c.keep_majority.role),
            },
            A::StaticQuorum => Strategy::StaticQuorum {
                quorum_size: c.static_quorum.quorum_size,
                role: role(&c.static_quorum.role),
            },
            A::KeepOldest => Strategy::KeepOldest {
                down_if_alone: c.keep_oldest.down_if_alone,
                role: role(&c.keep_oldest.role),
            },
            A::DownAll => Strategy::DownAll,
            A::LeaseMajority => Strategy::LeaseMajority {
                role: role(&c.lease_majority.role),
                acquire_lease_delay_for_minority: c.lease_majority.acquire_lease_delay_for_minority,
            },
        };
        Some(Self {
            strategy,
            stable_after: c.stable_after,
            unstable_limit: unstable_limit(c.down_all_when_unstable, c.stable_after),
        })
    }
}

/// What the resolver should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing unreachable: nothing to do.
    Idle,
    /// Wait until this time (the view must stay unchanged until then).
    WaitUntil(Time),
    /// The view has been stable for `stable-after`: decide.
    Decide,
    /// The view kept changing past `stable-after` + the unstable limit: down everyone.
    DownAll,
}

/// What a decision depends on: the unreachable members and the members with their
/// status, Joining and WeaklyUp ones left out of both.
type Signature = (
    BTreeSet<UniqueAddress>,
    BTreeSet<(UniqueAddress, &'static str)>,
);

/// Tracks how long the view has been stable.
#[derive(Debug, Clone)]
pub struct Stability {
    stable_after: Duration,
    unstable_limit: Option<Duration>,
    /// What the decision depends on, as last observed.
    last: Option<Signature>,
    changed_at: Time,
    unreachable_since: Option<Time>,
    /// Every member unreachable now, and since when without a break.
    since: std::collections::BTreeMap<UniqueAddress, Time>,
    /// Up and Leaving members among them.
    counted: BTreeSet<UniqueAddress>,
}

impl Stability {
    pub fn new(stable_after: Duration, unstable_limit: Option<Duration>) -> Self {
        Self {
            stable_after,
            unstable_limit,
            last: None,
            changed_at: Duration::ZERO,
            unreachable_since: None,
            since: Default::default(),
            counted: BTreeSet::new(),
        }
    }

    /// Feeds the current view; changes of Joining/WeaklyUp members do not count.
    pub fn observe(&mut self, now: Time, view: View<'_>) {
        let s = sides(view);
        let mut unreachable = nodes(&s.unreachable);
        unreachable.extend(s.indirectly_connected);
        self.since.retain(|n, _| unreachable.contains(n));
        for n in &unreachable {
            self.since.entry(n.clone()).or_insert(now);
        }
        if unreachable.is_empty() {
            self.unreachable_since = None;
        } else {
            self.unreachable_since.get_or_insert(now);
        }
        let not_counted: BTreeSet<&UniqueAddress> = view
            .members
            .iter()
            .filter(|m| matches!(m.status, MemberStatus::Joining | MemberStatus::WeaklyUp))
            .map(|m| &m.node)
            .collect();
        unreachable.retain(|n| !not_counted.contains(n));
        self.counted = unreachable.clone();
        let members = view
            .members
            .iter()
            .filter(|m| !matches!(m.status, MemberStatus::Joining | MemberStatus::WeaklyUp))
            .map(|m| (m.node.clone(), m.status.as_str()))
            .collect();
        let current = (unreachable, members);
        if self.last.as_ref() != Some(&current) {
            self.changed_at = now;
            self.last = Some(current);
        }
    }

    /// Feeds a view in which nobody is unreachable: nothing to track (the next
    /// unreachable member starts the stable-after clock afresh).
    pub fn healthy(&mut self) {
        self.last = None;
        self.unreachable_since = None;
        self.since.clear();
        self.counted.clear();
    }

    /// Whether `node`, unreachable now, has been so without a break for `stable-after`
    /// (a Joining or WeaklyUp member is downed by a winning side only then).
    pub fn settled(&self, node: &UniqueAddress, now: Time) -> bool {
        self.since
            .get(node)
            .is_some_and(|t| now >= *t + self.stable_after)
    }

    pub fn due(&self, now: Time) -> Due {
        let Some(since) = self.unreachable_since else {
            return Due::Idle;
        };
        // Instability alone is flapping; it takes a member that stays away as well.
        let someone_stays_away = self.counted.iter().any(|n| self.settled(n, now));
        if let Some(limit) = self.unstable_limit
            && now >= since + self.stable_after + limit
            && now < self.changed_at + self.stable_after
            && someone_stays_away
        {
            return Due::DownAll;
        }
        let at = self.changed_at + self.stable_after;
        if now >= at {
            return Due::Decide;
        }
        let mut wake = at;
        if let Some(limit) = self.unstable_limit {
            let give_up = since + self.stable_after + limit;
            if give_up > now {
                wake = wake.min(give_up);
            } else if let Some(t) = self
                .counted
                .iter()
                .filter_map(|n| self.since.get(n))
                .map(|t| *t + self.stable_after)
                .filter(|t| *t > now)
                .min()
            {
                // Past the limit, but only flapping so far: look again when a member
                // could have stayed away long enough.
                wake = wake.min(t);
            }
        }
        Due::WaitUntil(wake)
    }
}

#[cfg(test)]
mod tests;
