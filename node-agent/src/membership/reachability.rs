//! Who cannot reach whom: each observer's verdicts about the members it monitors, as
//! gossiped through the cluster (Akka Cluster's reachability table).
//!
//! Only an observer writes its own row, and every write bumps the row's version, so two
//! tables merge by keeping, per observer, the row with the higher version (ties, which
//! honest nodes never produce, go to the larger row so the merge stays a lattice join:
//! commutative, associative, idempotent). A member is unreachable while any observer's
//! row says so; it is reachable again once every observer that flagged it has cleared
//! it (or has left the cluster).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::address::UniqueAddress;

/// One observer's verdicts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub observer: UniqueAddress,
    pub version: u64,
    /// Members this observer cannot reach.
    pub unreachable: BTreeSet<UniqueAddress>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reachability {
    rows: BTreeMap<UniqueAddress, Row>,
}

impl Serialize for Reachability {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Rows that became empty are sent too: they carry the version that clears an
        // older verdict elsewhere.
        s.collect_seq(self.rows.values())
    }
}

impl<'de> Deserialize<'de> for Reachability {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let rows = Vec::<Row>::deserialize(d)?;
        let mut out = Self::default();
        for row in rows {
            out.absorb(row);
        }
        Ok(out)
    }
}

impl Reachability {
    fn absorb(&mut self, row: Row) {
        match self.rows.get(&row.observer) {
            Some(ours) if (ours.version, &ours.unreachable) >= (row.version, &row.unreachable) => {}
            _ => {
                self.rows.insert(row.observer.clone(), row);
            }
        }
    }

    fn write(
        &mut self,
        observer: &UniqueAddress,
        change: impl FnOnce(&mut BTreeSet<UniqueAddress>) -> bool,
    ) -> bool {
        let row = self.rows.entry(observer.clone()).or_insert_with(|| Row {
            observer: observer.clone(),
            version: 0,
            unreachable: BTreeSet::new(),
        });
        let changed = change(&mut row.unreachable);
        if changed {
            row.version += 1;
        }
        changed
    }

    /// `observer` cannot reach `subject` (any more). Returns whether this changed.
    pub fn unreachable(&mut self, observer: &UniqueAddress, subject: &UniqueAddress) -> bool {
        self.write(observer, |set| set.insert(subject.clone()))
    }

    /// `observer` reaches `subject` again. Returns whether this changed.
    pub fn reachable(&mut self, observer: &UniqueAddress, subject: &UniqueAddress) -> bool {
        self.write(observer, |set| set.remove(subject))
    }

    /// The join of two tables: per observer, the newer row.
    pub fn merge(&self, other: &Self) -> Self {
        let mut out = self.clone();
        for row in other.rows.values() {
            out.absorb(row.clone());
        }
        out
    }

    /// No observer reports `subject` unreachable.
    pub fn is_reachable(&self, subject: &UniqueAddress) -> bool {
        !self.rows.values().any(|r| r.unreachable.contains(subject))
    }

    /// Every member some observer cannot reach.
    pub fn unreachable_members(&self) -> BTreeSet<UniqueAddress> {
        self.rows
            .values()
            .flat_map(|r| r.unreachable.iter().cloned())
            .collect()
    }

    /// The observers that cannot reach `subject`.
    pub fn observers_of(&self, subject: &UniqueAddress) -> BTreeSet<UniqueAddress> {
        self.rows
            .values()
            .filter(|r| r.unreachable.contains(subject))
            .map(|r| r.observer.clone())
            .collect()
    }

    /// What `observer` itself reports unreachable.
    pub fn seen_by(&self, observer: &UniqueAddress) -> BTreeSet<UniqueAddress> {
        self.rows
            .get(observer)
            .map(|r| r.unreachable.clone())
            .unwrap_or_default()
    }

    /// Drops the rows of, and verdicts about, members that are gone for good, so a
    /// removed member neither blocks nor judges anyone. Meant to be applied after every
    /// merge with the gossip's tombstones: it depends on those alone, so every node
    /// prunes alike and pruned rows keep their versions.
    pub fn without(&self, gone: &BTreeSet<UniqueAddress>) -> Self {
        let rows = self
            .rows
            .iter()
            .filter(|(observer, _)| !gone.contains(*observer))
            .map(|(observer, row)| {
                let mut row = row.clone();
                row.unreachable.retain(|s| !gone.contains(s));
                (observer.clone(), row)
            })
            .collect();
        Self { rows }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::address::NodeAddress;

    fn node(i: u8) -> UniqueAddress {
        UniqueAddress::new(NodeAddress::new("t", [10, 0, 0, i].into(), 2552), 1)
    }

    #[test]
    fn unreachable_until_every_observer_clears_it() {
        let mut r = Reachability::default();
        assert!(r.unreachable(&node(1), &node(3)));
        assert!(
            !r.unreachable(&node(1), &node(3)),
            "no change, no new version"
        );
        assert!(r.unreachable(&node(2), &node(3)));
        assert!(!r.is_reachable(&node(3)));
        assert_eq!(r.observers_of(&node(3)), [node(1), node(2)].into());
        assert!(r.reachable(&node(1), &node(3)));
        assert!(!r.is_reachable(&node(3)), "node 2 still cannot reach it");
        assert!(r.reachable(&node(2), &node(3)));
        assert!(r.is_reachable(&node(3)));
        assert!(r.unreachable_members().is_empty());
    }

    #[test]
    fn the_newer_row_of_an_observer_wins() {
        let mut a = Reachability::default();
        a.unreachable(&node(1), &node(3));
        let mut b = a.clone();
        b.reachable(&node(1), &node(3)); // version 2: reachable again
        assert!(a.merge(&b).is_reachable(&node(3)));
        assert!(b.merge(&a).is_reachable(&node(3)));
    }

    #[test]
    fn removed_members_neither_block_nor_judge() {
        let mut r = Reachability::default();
        r.unreachable(&node(1), &node(3));
        r.unreachable(&node(3), &node(2));
        let gone: BTreeSet<_> = [node(3)].into();
        let pruned = r.without(&gone);
        assert!(
            pruned.is_reachable(&node(2)),
            "node 3's verdicts are dropped"
        );
        assert!(pruned.unreachable_members().is_empty());
    }

    #[test]
    fn travels_as_json_rows_and_a_cleared_verdict_reaches_others() {
        let mut r = Reachability::default();
        r.unreachable(&node(1), &node(3));
        r.unreachable(&node(2), &node(4));
        let before = r.clone();
        r.reachable(&node(2), &node(4));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json.as_array().map(Vec::len), Some(2), "{json}");
        let back: Reachability = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        let elsewhere = before.merge(&back);
        assert!(
            elsewhere.is_reachable(&node(4)),
            "the empty row carried the news"
        );
    }

    fn table() -> impl Strategy<Value = Reachability> {
        proptest::collection::vec((1u8..5, 1u8..5, proptest::bool::ANY), 0..12).prop_map(|ops| {
            let mut r = Reachability::default();
            for (o, s, down) in ops {
                if down {
                    r.unreachable(&node(o), &node(s));
                } else {
                    r.reachable(&node(o), &node(s));
                }
            }
            r
        })
    }

    proptest! {
        #[test]
        fn merge_is_a_lattice_join(a in table(), b in table(), c in table()) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            prop_assert_eq!(a.merge(&a), a.clone());
        }

        #[test]
        fn merging_an_observers_later_state_takes_its_verdicts(a in table(), more in table()) {
            // An observer's own later state (same history, more writes) wins the merge.
            let mut later = a.clone();
            for row in more.rows.values() {
                for s in &row.unreachable {
                    later.unreachable(&node(1), s);
                }
            }
            let merged = a.merge(&later);
            prop_assert_eq!(merged.seen_by(&node(1)), later.seen_by(&node(1)));
        }
    }
}
