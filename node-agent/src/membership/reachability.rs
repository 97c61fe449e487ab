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

use crate::base::address::UniqueAddress;

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
            // Saturating: received versions are checked (`max_version`) long before.
            row.version = row.version.saturating_add(1);
        }
        changed
    }

    /// The largest row version (0 when empty).
    pub fn max_version(&self) -> u64 {
        self.rows.values().map(|r| r.version).max().unwrap_or(0)
    }

    #[cfg(test)]
    pub(crate) fn set_version(&mut self, observer: &UniqueAddress, version: u64) {
        let row = self.rows.entry(observer.clone()).or_insert_with(|| Row {
            observer: observer.clone(),
            version: 0,
            unreachable: BTreeSet::new(),
        });
        row.version = version;
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
mod tests;
