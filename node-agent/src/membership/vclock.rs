//! Vector clocks: which gossip version happened before which.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::base::address::UniqueAddress;

/// How two versions relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Same,
    Before,
    After,
    Concurrent,
}

/// One counter per node incarnation that changed the state (keyed by its unique address).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VectorClock(BTreeMap<String, u64>);

impl VectorClock {
    /// Saturating: received clocks are checked ([`VectorClock::max_counter`]) long
    /// before a counter could reach the end.
    pub fn increment(&mut self, node: &UniqueAddress) {
        let c = self.0.entry(node.to_string()).or_insert(0);
        *c = c.saturating_add(1);
    }

    /// The largest counter (0 when empty).
    pub fn max_counter(&self) -> u64 {
        self.0.values().copied().max().unwrap_or(0)
    }

    #[cfg(test)]
    pub(crate) fn set(&mut self, node: &UniqueAddress, value: u64) {
        self.0.insert(node.to_string(), value);
    }

    /// Pointwise maximum.
    pub fn merge(&self, other: &Self) -> Self {
        let mut out = self.0.clone();
        for (k, v) in &other.0 {
            let e = out.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
        Self(out)
    }

    pub fn compare(&self, other: &Self) -> Causality {
        let mut less = false;
        let mut greater = false;
        for k in self.0.keys().chain(other.0.keys()) {
            let a = self.0.get(k).copied().unwrap_or(0);
            let b = other.0.get(k).copied().unwrap_or(0);
            match a.cmp(&b) {
                Ordering::Less => less = true,
                Ordering::Greater => greater = true,
                Ordering::Equal => {}
            }
        }
        match (less, greater) {
            (false, false) => Causality::Same,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (true, true) => Causality::Concurrent,
        }
    }

    pub fn entries(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::address::NodeAddress;

    fn n(i: u8) -> UniqueAddress {
        UniqueAddress::new(
            NodeAddress::new("t", [10, 0, 0, i].into(), 2552),
            u64::from(i),
        )
    }

    #[test]
    fn causality() {
        let mut a = VectorClock::default();
        let b = a.clone();
        assert_eq!(a.compare(&b), Causality::Same);
        a.increment(&n(1));
        assert_eq!(a.compare(&b), Causality::After);
        assert_eq!(b.compare(&a), Causality::Before);
        let mut c = b.clone();
        c.increment(&n(2));
        assert_eq!(a.compare(&c), Causality::Concurrent);
        let m = a.merge(&c);
        assert_eq!(m.compare(&a), Causality::After);
        assert_eq!(m.compare(&c), Causality::After);
    }
}
