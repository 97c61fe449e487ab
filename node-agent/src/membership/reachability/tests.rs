use proptest::prelude::*;

use super::*;
use crate::base::address::NodeAddress;

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
