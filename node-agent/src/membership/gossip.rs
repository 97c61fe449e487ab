//! The replicated cluster state: members, removed incarnations, version and seen set.
//!
//! Merging two gossips is a lattice join, so it is commutative, associative and
//! idempotent (property-tested): members meet by lifecycle order, tombstones by union,
//! versions by pointwise maximum, and the seen set keeps the observers of whichever
//! input carries the merged version. Every node that holds the same gossip computes the
//! same convergence, leader and seed nodes: they depend on the gossip alone.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::member::Member;
use super::reachability::Reachability;
use super::vclock::VectorClock;
use crate::base::address::UniqueAddress;
use crate::base::member::MemberStatus;

/// At most this many seed nodes are reported to a joining node (Akka).
pub const MAX_SEED_NODES: usize = 5;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gossip {
    #[serde(
        serialize_with = "members_as_list",
        deserialize_with = "members_from_list"
    )]
    members: BTreeMap<UniqueAddress, Member>,
    /// Incarnations that were removed; they never come back.
    tombstones: BTreeSet<UniqueAddress>,
    version: VectorClock,
    /// Incarnations that have seen exactly `version`.
    seen: BTreeSet<UniqueAddress>,
    /// Who cannot reach whom (failure detection), merged per observer.
    #[serde(default)]
    reachability: Reachability,
}

fn members_as_list<S: Serializer>(
    m: &BTreeMap<UniqueAddress, Member>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(m.values())
}

fn members_from_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<UniqueAddress, Member>, D::Error> {
    let list = Vec::<Member>::deserialize(d)?;
    Ok(list.into_iter().map(|m| (m.node.clone(), m)).collect())
}

/// Largest `upNumber` accepted from the wire: one per member ever moved Up, so a
/// cluster reaching it would have made a billion members Up.
pub const MAX_UP_NUMBER: u32 = 1 << 30;
/// Largest vector-clock counter or reachability version accepted from the wire: one
/// per state change, so 2^53 is out of reach of any honest cluster.
pub const MAX_COUNTER: u64 = 1 << 53;

impl Gossip {
    /// Why a received gossip cannot come from an honest cluster, if it cannot: a counter
    /// no cluster reaches (and that would overflow when this node next counts on).
    pub fn implausible(&self) -> Option<String> {
        if let Some(m) = self.members.values().find(|m| m.up_number > MAX_UP_NUMBER) {
            return Some(format!("member {} has upNumber {}", m.node, m.up_number));
        }
        if self.version.max_counter() > MAX_COUNTER {
            return Some(format!(
                "a version counter is {}",
                self.version.max_counter()
            ));
        }
        if self.reachability.max_version() > MAX_COUNTER {
            return Some(format!(
                "a reachability version is {}",
                self.reachability.max_version()
            ));
        }
        None
    }

    #[cfg(test)]
    pub(crate) fn set_version_entry(&mut self, node: &UniqueAddress, value: u64) {
        self.version.set(node, value);
    }

    #[cfg(test)]
    pub(crate) fn set_reachability_version(&mut self, observer: &UniqueAddress, version: u64) {
        self.reachability.set_version(observer, version);
    }

    /// Builds a gossip, dropping tombstoned members (the invariant every gossip keeps).
    pub fn from_parts(
        members: impl IntoIterator<Item = Member>,
        tombstones: BTreeSet<UniqueAddress>,
        version: VectorClock,
        seen: BTreeSet<UniqueAddress>,
    ) -> Self {
        let members = members
            .into_iter()
            .filter(|m| !tombstones.contains(&m.node))
            .map(|m| (m.node.clone(), m))
            .collect();
        Self {
            members,
            tombstones,
            version,
            seen,
            reachability: Reachability::default(),
        }
    }

    pub fn version(&self) -> &VectorClock {
        &self.version
    }

    pub fn seen(&self) -> &BTreeSet<UniqueAddress> {
        &self.seen
    }

    pub fn tombstones(&self) -> &BTreeSet<UniqueAddress> {
        &self.tombstones
    }

    /// Members in address order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member(&self, node: &UniqueAddress) -> Option<&Member> {
        self.members.get(node)
    }

    pub fn has_member(&self, node: &UniqueAddress) -> bool {
        self.members.contains_key(node)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// A short fingerprint of `version` (the first 8 bytes of the SHA-256 of its JSON):
    /// what a [`super::messages::Message::Seen`] names.
    pub fn digest(&self) -> u64 {
        use sha2::Digest;
        let json = serde_json::to_vec(&self.version).unwrap_or_default();
        let hash = sha2::Sha256::digest(&json);
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_be_bytes(first)
    }

    pub fn has_seen(&self, node: &UniqueAddress) -> bool {
        self.seen.contains(node)
    }

    /// The lattice join of two gossips.
    pub fn merge(&self, other: &Self) -> Self {
        let tombstones: BTreeSet<UniqueAddress> =
            self.tombstones.union(&other.tombstones).cloned().collect();
        let mut members = self.members.clone();
        for (k, theirs) in &other.members {
            match members.get(k) {
                Some(ours) if ours.merge_order(theirs).is_ge() => {}
                _ => {
                    members.insert(k.clone(), theirs.clone());
                }
            }
        }
        members.retain(|k, _| !tombstones.contains(k));
        let version = self.version.merge(&other.version);
        let mut seen = BTreeSet::new();
        for g in [self, other] {
            if g.version == version {
                seen.extend(g.seen.iter().cloned());
            }
        }
        let reachability = self
            .reachability
            .merge(&other.reachability)
            .without(&tombstones);
        Self {
            members,
            tombstones,
            version,
            seen,
            reachability,
        }
    }

    pub fn reachability(&self) -> &Reachability {
        &self.reachability
    }

    /// `observer`'s verdicts about `subjects`: set as unreachable those in `now_unreachable`,
    /// reachable the rest. Returns whether anything changed (callers bump the version).
    pub fn set_reachability(
        &mut self,
        observer: &UniqueAddress,
        now_unreachable: &BTreeSet<UniqueAddress>,
    ) -> bool {
        let mut changed = false;
        for gone in self
            .reachability
            .seen_by(observer)
            .difference(now_unreachable)
        {
            changed |= self.reachability.reachable(observer, gone);
        }
        for subject in now_unreachable {
            if self.members.contains_key(subject) {
                changed |= self.reachability.unreachable(observer, subject);
            }
        }
        changed
    }

    /// No observer among the members reports `node` unreachable.
    pub fn is_reachable(&self, node: &UniqueAddress) -> bool {
        self.reachability.is_reachable(node)
    }

    /// This incarnation has seen the current version.
    pub fn mark_seen(&mut self, node: &UniqueAddress) -> bool {
        self.seen.insert(node.clone())
    }

    /// Records a local change: new version by `by`, seen only by it.
    pub fn bump(&mut self, by: &UniqueAddress) {
        self.version.increment(by);
        self.seen.clear();
        self.seen.insert(by.clone());
    }

    /// Adds or replaces a member (callers bump the version).
    pub fn put(&mut self, member: Member) {
        if !self.tombstones.contains(&member.node) {
            self.members.insert(member.node.clone(), member);
        }
    }

    /// Removes a member for good (callers bump the version).
    pub fn remove(&mut self, node: &UniqueAddress) {
        self.members.remove(node);
        self.tombstones.insert(node.clone());
        self.reachability = self.reachability.without(&self.tombstones);
    }

    /// Every reachable member whose status counts for convergence has seen this version,
    /// and every unreachable member is Down or Exiting (Akka's rule: an unreachable
    /// member blocks convergence until it is downed).
    pub fn convergence(&self) -> bool {
        let unreachable = self.reachability.unreachable_members();
        let blocked = self.members.values().any(|m| {
            unreachable.contains(&m.node)
                && !matches!(m.status, MemberStatus::Down | MemberStatus::Exiting)
        });
        !blocked
            && self
                .members
                .values()
                .filter(|m| m.status.counts_for_convergence() && !unreachable.contains(&m.node))
                .all(|m| self.seen.contains(&m.node))
    }

    /// The lowest reachable Up/Leaving member; before any is Up, the lowest reachable
    /// Joining/WeaklyUp one.
    pub fn leader(&self) -> Option<&UniqueAddress> {
        self.leader_among(|_| true)
    }

    /// The leader of the members with `role`, chosen as [`Gossip::leader`] chooses
    /// among all (Akka's role leader).
    pub fn role_leader(&self, role: &str) -> Option<&UniqueAddress> {
        self.leader_among(|m| m.roles.contains(role))
    }

    /// Whether a full shutdown was asked for: some member is PreparingForShutdown or
    /// ReadyForShutdown. Then nobody joins or moves Up, the leader prepares every Up
    /// member too, and unreachable members are downed at once.
    pub fn shutting_down(&self) -> bool {
        self.members.values().any(|m| m.status.is_shutting_down())
    }

    /// Every role some member has.
    pub fn roles(&self) -> BTreeSet<&str> {
        self.members
            .values()
            .flat_map(|m| m.roles.iter().map(String::as_str))
            .collect()
    }

    fn leader_among(&self, counts: impl Fn(&Member) -> bool) -> Option<&UniqueAddress> {
        let candidate = |m: &&Member| counts(m) && self.reachability.is_reachable(&m.node);
        self.members
            .values()
            .filter(candidate)
            .find(|m| m.status.can_lead())
            .or_else(|| {
                self.members
                    .values()
                    .filter(candidate)
                    .find(|m| matches!(m.status, MemberStatus::Joining | MemberStatus::WeaklyUp))
            })
            .map(|m| &m.node)
    }

    /// The oldest Up/Leaving member (lowest up number).
    pub fn oldest(&self) -> Option<&Member> {
        self.members
            .values()
            .filter(|m| m.status.can_lead())
            .min_by(|a, b| a.age_order(b))
    }

    /// What `/bootstrap/seed-nodes` reports on node `me`: up to five Up, WeaklyUp or
    /// Joining members, leaving out (as Akka does) those some member finds unreachable
    /// but `me` — unless that leaves none while there are such members: a member must
    /// never answer as if there were no cluster (a prober would form a second one), so
    /// then it names them, reachable or not, as before.
    pub fn seed_nodes<'a>(&'a self, me: &'a UniqueAddress) -> Vec<&'a Member> {
        let candidates = || {
            self.members
                .values()
                .filter(|m| m.status.is_seed_candidate())
        };
        let reachable: Vec<&Member> = candidates()
            .filter(|m| m.node == *me || self.is_reachable(&m.node))
            .take(MAX_SEED_NODES)
            .collect();
        if reachable.is_empty() {
            candidates().take(MAX_SEED_NODES).collect()
        } else {
            reachable
        }
    }

    /// Members of another incarnation on the same address as `node`.
    pub fn other_incarnations<'a>(
        &'a self,
        node: &'a UniqueAddress,
    ) -> impl Iterator<Item = &'a Member> + 'a {
        self.members
            .values()
            .filter(move |m| m.node.address == node.address && m.node.uid != node.uid)
    }
}

#[cfg(test)]
mod tests;
