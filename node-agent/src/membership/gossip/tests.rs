//! Property tests: the merge is a lattice join, and what is derived from a gossip is the
//! same on every node holding it.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::base::address::NodeAddress;
use crate::membership::member::MemberInfo;

fn node(i: u8, uid: u64) -> UniqueAddress {
    UniqueAddress::new(NodeAddress::new("t", [10, 0, 0, i].into(), 2552), uid)
}

/// Member `i` (uid 1) with status `s`.
fn with_status(i: u8, s: MemberStatus) -> Member {
    Member {
        status: s,
        ..Member::joining(
            node(i, 1),
            MemberInfo {
                roles: BTreeSet::new(),
                app_version: "1".into(),
            },
        )
    }
}

fn status() -> impl Strategy<Value = MemberStatus> {
    prop_oneof![
        Just(MemberStatus::Joining),
        Just(MemberStatus::WeaklyUp),
        Just(MemberStatus::Up),
        Just(MemberStatus::Leaving),
        Just(MemberStatus::Exiting),
        Just(MemberStatus::Down),
        Just(MemberStatus::Removed),
    ]
}

/// A small universe of nodes (address 1..6, uid 1..2) so gossips overlap often.
fn unique() -> impl Strategy<Value = UniqueAddress> {
    (1u8..6, 1u64..3).prop_map(|(i, u)| node(i, u))
}

fn member() -> impl Strategy<Value = Member> {
    (unique(), status(), 0u32..4, proptest::bool::ANY).prop_map(|(n, s, up, role)| Member {
        node: n,
        status: s,
        up_number: up,
        roles: if role {
            BTreeSet::from(["a".to_owned()])
        } else {
            BTreeSet::new()
        },
        app_version: "1".into(),
    })
}

fn gossip() -> impl Strategy<Value = Gossip> {
    (
        proptest::collection::vec(member(), 0..6),
        proptest::collection::btree_set(unique(), 0..2),
        proptest::collection::vec(unique(), 0..5),
        proptest::collection::btree_set(unique(), 0..4),
    )
        .prop_map(|(members, tombstones, bumps, seen)| {
            let mut version = VectorClock::default();
            for b in &bumps {
                version.increment(b);
            }
            Gossip::from_parts(members, tombstones, version, seen)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merge_is_commutative(a in gossip(), b in gossip()) {
        prop_assert_eq!(a.merge(&b), b.merge(&a));
    }

    #[test]
    fn merge_is_associative(a in gossip(), b in gossip(), c in gossip()) {
        prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
    }

    #[test]
    fn merge_is_idempotent(a in gossip(), b in gossip()) {
        prop_assert_eq!(a.merge(&a), a.clone());
        let ab = a.merge(&b);
        prop_assert_eq!(ab.merge(&b), ab.clone());
    }

    #[test]
    fn merged_version_dominates_and_tombstones_stay_removed(a in gossip(), b in gossip()) {
        let m = a.merge(&b);
        for g in [&a, &b] {
            prop_assert!(matches!(m.version().compare(g.version()), crate::membership::vclock::Causality::After | crate::membership::vclock::Causality::Same));
            for t in g.tombstones() {
                prop_assert!(!m.has_member(t));
            }
        }
    }

    /// Nodes receive the same pieces of gossip in different orders and groupings: they
    /// end with the same state, hence the same convergence, leader, oldest and seeds.
    #[test]
    fn every_node_derives_the_same_view(parts in proptest::collection::vec(gossip(), 1..5), seed in any::<u64>()) {
        let mut rng = crate::base::rng::Rng::seeded(seed);
        let in_order = parts.iter().fold(Gossip::default(), |acc, g| acc.merge(g));
        let mut shuffled = parts.clone();
        rng.shuffle(&mut shuffled);
        let other = shuffled.iter().rev().fold(Gossip::default(), |acc, g| g.merge(&acc));
        prop_assert_eq!(&in_order, &other);
        prop_assert_eq!(in_order.convergence(), other.convergence());
        prop_assert_eq!(in_order.leader(), other.leader());
        prop_assert_eq!(in_order.oldest(), other.oldest());
        let me = node(1, 1);
        prop_assert_eq!(in_order.seed_nodes(&me), other.seed_nodes(&me));
    }
}

#[test]
fn leader_is_lowest_up_then_lowest_joining() {
    let j = with_status;
    let g = Gossip::from_parts(
        [j(3, MemberStatus::Joining), j(2, MemberStatus::Joining)],
        BTreeSet::new(),
        VectorClock::default(),
        BTreeSet::new(),
    );
    assert_eq!(g.leader(), Some(&node(2, 1)));
    let g = Gossip::from_parts(
        [
            j(1, MemberStatus::Joining),
            j(3, MemberStatus::Up),
            j(2, MemberStatus::Down),
        ],
        BTreeSet::new(),
        VectorClock::default(),
        BTreeSet::new(),
    );
    assert_eq!(
        g.leader(),
        Some(&node(3, 1)),
        "an Up member leads before a lower Joining one"
    );
}

#[test]
fn convergence_needs_only_up_and_leaving_members() {
    let j = with_status;
    let members = [
        j(1, MemberStatus::Up),
        j(2, MemberStatus::Joining),
        j(3, MemberStatus::Leaving),
    ];
    let g = Gossip::from_parts(
        members.clone(),
        BTreeSet::new(),
        VectorClock::default(),
        BTreeSet::from([node(1, 1)]),
    );
    assert!(!g.convergence());
    let g = Gossip::from_parts(
        members,
        BTreeSet::new(),
        VectorClock::default(),
        BTreeSet::from([node(1, 1), node(3, 1)]),
    );
    assert!(g.convergence());
}

#[test]
fn at_most_five_reachable_seed_nodes_in_address_order() {
    let members = (1..=7).map(|i| {
        Member::joining(
            node(i, 1),
            MemberInfo {
                roles: BTreeSet::new(),
                app_version: "1".into(),
            },
        )
    });
    let mut g = Gossip::from_parts(
        members,
        BTreeSet::new(),
        VectorClock::default(),
        BTreeSet::new(),
    );
    let seeds = |g: &Gossip, me: u8| -> Vec<u8> {
        g.seed_nodes(&node(me, 1))
            .into_iter()
            .map(|m| match m.node.address.ip {
                std::net::IpAddr::V4(v4) => v4.octets()[3],
                _ => 0,
            })
            .collect()
    };
    assert_eq!(seeds(&g, 1), [1, 2, 3, 4, 5]);
    // Members some member finds unreachable are left out (as Akka does), but never the
    // node answering: a member's answer always shows a cluster.
    g.set_reachability(&node(3, 1), &BTreeSet::from([node(2, 1), node(1, 1)]));
    assert_eq!(seeds(&g, 4), [3, 4, 5, 6, 7]);
    assert_eq!(seeds(&g, 1), [1, 3, 4, 5, 6]);
    // A member that is itself no candidate (Leaving) and finds every other one
    // unreachable still names them: an empty answer would read as "no cluster here".
    let mut g = Gossip::from_parts(
        [
            with_status(1, MemberStatus::Leaving),
            with_status(2, MemberStatus::Up),
        ],
        BTreeSet::new(),
        VectorClock::default(),
        BTreeSet::new(),
    );
    g.set_reachability(&node(1, 1), &BTreeSet::from([node(2, 1)]));
    assert_eq!(seeds(&g, 1), [2]);
    g.set_reachability(&node(1, 1), &BTreeSet::new());
    assert_eq!(seeds(&g, 1), [2]);
}

#[test]
fn gossip_round_trips_through_json() {
    let m = Member::joining(
        node(1, 9),
        MemberInfo {
            roles: BTreeSet::from(["r".to_owned()]),
            app_version: "2".into(),
        },
    );
    let mut g = Gossip::from_parts(
        [m],
        BTreeSet::from([node(2, 1)]),
        VectorClock::default(),
        BTreeSet::new(),
    );
    g.bump(&node(1, 9));
    let json = serde_json::to_string(&g).unwrap();
    assert_eq!(serde_json::from_str::<Gossip>(&json).unwrap(), g);
}

#[test]
fn an_unreachable_member_blocks_convergence_until_down_and_cannot_lead() {
    let j = with_status;
    let all: BTreeSet<_> = (1..=3).map(|i| node(i, 1)).collect();
    let mut g = Gossip::from_parts(
        [
            j(1, MemberStatus::Up),
            j(2, MemberStatus::Up),
            j(3, MemberStatus::Up),
        ],
        BTreeSet::new(),
        VectorClock::default(),
        all,
    );
    assert!(g.convergence());
    assert_eq!(g.leader(), Some(&node(1, 1)));
    let flagged: BTreeSet<_> = [node(1, 1)].into();
    assert!(g.set_reachability(&node(2, 1), &flagged));
    assert!(
        !g.set_reachability(&node(2, 1), &flagged),
        "no change the second time"
    );
    assert!(!g.convergence(), "an Up member is unreachable");
    assert_eq!(
        g.leader(),
        Some(&node(2, 1)),
        "the lowest reachable member leads"
    );
    let mut downed = j(1, MemberStatus::Down);
    downed.up_number = 0;
    g.put(downed);
    assert!(g.convergence(), "a Down member may be unreachable");
    g.remove(&node(1, 1));
    assert!(
        g.reachability().unreachable_members().is_empty(),
        "pruned with the member"
    );
    // Verdicts about strangers are not recorded.
    assert!(!g.set_reachability(&node(2, 1), &[node(9, 1)].into()));
}
