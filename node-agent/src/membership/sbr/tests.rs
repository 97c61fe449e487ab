//! Decision tables for every strategy, seen from both sides of a partition.

use super::*;
use crate::base::address::NodeAddress;
use crate::config::DownAllWhenUnstable;
use crate::membership::member::MemberInfo;

fn node(i: u8) -> UniqueAddress {
    UniqueAddress::new(NodeAddress::new("t", [10, 0, 0, i].into(), 2552), 1)
}

/// Member `i`, Up with age `i` (1 is the oldest), with `roles`.
fn up(i: u8, roles: &[&str]) -> Member {
    Member {
        status: MemberStatus::Up,
        up_number: u32::from(i),
        ..Member::joining(
            node(i),
            MemberInfo {
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                app_version: "1".into(),
            },
        )
    }
}

fn with(m: Member, status: MemberStatus) -> Member {
    Member { status, ..m }
}

fn set(ids: &[u8]) -> BTreeSet<UniqueAddress> {
    ids.iter().map(|i| node(*i)).collect()
}

/// The table of a clean partition as `side` sees it: some member of `side` observes
/// every member outside it as unreachable.
fn partition(members: &[Member], side: &[u8]) -> Reachability {
    let mut r = Reachability::default();
    let observer = node(side[0]);
    for m in members {
        if !side.iter().any(|i| node(*i) == m.node) {
            r.unreachable(&observer, &m.node);
        }
    }
    r
}

fn verdict(strategy: &Strategy, members: &[Member], side: &[u8]) -> Option<Verdict> {
    let r = partition(members, side);
    decide(
        strategy,
        View {
            members,
            reachability: &r,
        },
        None,
    )
}

fn downs(v: Option<Verdict>) -> BTreeSet<UniqueAddress> {
    match v {
        Some(Verdict::Down { members, .. }) => members,
        other => panic!("expected downing, got {other:?}"),
    }
}

fn five() -> Vec<Member> {
    (1..=5).map(|i| up(i, &[])).collect()
}

const MAJORITY: Strategy = Strategy::KeepMajority { role: None };

#[test]
fn nothing_unreachable_nothing_to_do() {
    let members = five();
    let r = Reachability::default();
    let view = View {
        members: &members,
        reachability: &r,
    };
    assert_eq!(decide(&MAJORITY, view, None), None);
    assert_eq!(decide(&Strategy::DownAll, view, None), None);
}

#[test]
fn keep_majority_keeps_the_bigger_side_from_both_sides() {
    let m = five();
    assert_eq!(downs(verdict(&MAJORITY, &m, &[1, 2, 3])), set(&[4, 5]));
    assert_eq!(downs(verdict(&MAJORITY, &m, &[4, 5])), set(&[4, 5]));
    // 4 | 1
    assert_eq!(downs(verdict(&MAJORITY, &m, &[2, 3, 4, 5])), set(&[1]));
    assert_eq!(downs(verdict(&MAJORITY, &m, &[1])), set(&[1]));
}

#[test]
fn keep_majority_tie_goes_to_the_side_with_the_lowest_address() {
    let m: Vec<Member> = (1..=4).map(|i| up(i, &[])).collect();
    assert_eq!(downs(verdict(&MAJORITY, &m, &[1, 4])), set(&[2, 3]));
    assert_eq!(downs(verdict(&MAJORITY, &m, &[2, 3])), set(&[2, 3]));
}

#[test]
fn joining_members_do_not_count_but_go_with_their_side() {
    // 2 Up + 2 Joining against 3 Up: the 3 win, the joining ones are downed with theirs.
    let m = vec![
        up(1, &[]),
        up(2, &[]),
        with(up(3, &[]), MemberStatus::Joining),
        with(up(4, &[]), MemberStatus::WeaklyUp),
        up(5, &[]),
        up(6, &[]),
        up(7, &[]),
    ];
    assert_eq!(
        downs(verdict(&MAJORITY, &m, &[5, 6, 7])),
        set(&[1, 2, 3, 4])
    );
    assert_eq!(
        downs(verdict(&MAJORITY, &m, &[1, 2, 3, 4])),
        set(&[1, 2, 3, 4])
    );
}

#[test]
fn a_role_restricts_what_counts() {
    // 3 | 2 by numbers, but only the 2 side has the "backend" members that count.
    let m = vec![
        up(1, &["frontend"]),
        up(2, &["frontend"]),
        up(3, &["frontend"]),
        up(4, &["backend"]),
        up(5, &["backend"]),
    ];
    let s = Strategy::KeepMajority {
        role: Some("backend".into()),
    };
    assert_eq!(downs(verdict(&s, &m, &[1, 2, 3])), set(&[1, 2, 3]));
    assert_eq!(downs(verdict(&s, &m, &[4, 5])), set(&[1, 2, 3]));
}

#[test]
fn static_quorum() {
    let s = Strategy::StaticQuorum {
        quorum_size: 3,
        role: None,
    };
    let m = five();
    assert_eq!(downs(verdict(&s, &m, &[1, 2, 3])), set(&[4, 5]));
    assert_eq!(downs(verdict(&s, &m, &[4, 5])), set(&[4, 5]));
    // Too many members for the quorum: 3 | 3 both reach it, so everyone goes.
    let six: Vec<Member> = (1..=6).map(|i| up(i, &[])).collect();
    assert_eq!(
        downs(verdict(&s, &six, &[1, 2, 3])),
        set(&[1, 2, 3, 4, 5, 6])
    );
    // Below quorum on both sides (a crash left 2 | 2): both sides down themselves.
    let four: Vec<Member> = (1..=4).map(|i| up(i, &[])).collect();
    assert_eq!(downs(verdict(&s, &four, &[1, 2])), set(&[1, 2]));
    assert_eq!(downs(verdict(&s, &four, &[3, 4])), set(&[3, 4]));
}

#[test]
fn keep_oldest() {
    let s = Strategy::KeepOldest {
        down_if_alone: false,
        role: None,
    };
    let m = five(); // 1 is the oldest
    assert_eq!(downs(verdict(&s, &m, &[1, 2])), set(&[3, 4, 5]));
    assert_eq!(downs(verdict(&s, &m, &[3, 4, 5])), set(&[3, 4, 5]));
    // Alone, it still wins without down-if-alone.
    assert_eq!(downs(verdict(&s, &m, &[1])), set(&[2, 3, 4, 5]));
}

#[test]
fn keep_oldest_down_if_alone() {
    let s = Strategy::KeepOldest {
        down_if_alone: true,
        role: None,
    };
    let m = five();
    assert_eq!(downs(verdict(&s, &m, &[1])), set(&[1]));
    assert_eq!(downs(verdict(&s, &m, &[2, 3, 4, 5])), set(&[1]));
    // Not alone: the usual rule.
    assert_eq!(downs(verdict(&s, &m, &[2, 3, 4])), set(&[2, 3, 4]));
}

#[test]
fn down_all() {
    let m = five();
    assert_eq!(
        downs(verdict(&Strategy::DownAll, &m, &[1, 2, 3])),
        set(&[1, 2, 3, 4, 5])
    );
}

#[test]
fn lease_majority_asks_for_the_lease_the_minority_later() {
    let s = Strategy::LeaseMajority {
        role: None,
        acquire_lease_delay_for_minority: Duration::from_secs(2),
    };
    let m = five();
    assert_eq!(
        verdict(&s, &m, &[1, 2, 3]),
        Some(Verdict::AcquireLease {
            delay: Duration::ZERO
        })
    );
    assert_eq!(
        verdict(&s, &m, &[4, 5]),
        Some(Verdict::AcquireLease {
            delay: Duration::from_secs(2)
        })
    );
    let r = partition(&m, &[4, 5]);
    let view = View {
        members: &m,
        reachability: &r,
    };
    assert_eq!(downs(decide(&s, view, Some(true))), set(&[1, 2, 3]));
    assert_eq!(downs(decide(&s, view, Some(false))), set(&[4, 5]));
}

#[test]
fn indirectly_connected_members_are_downed() {
    let m = five();
    // A flaky link between 1 and 3 only: each sees the other unreachable; 2, 4, 5 see
    // both fine. Both are indirectly connected; the rest stays.
    let mut r = Reachability::default();
    r.unreachable(&node(1), &node(3));
    r.unreachable(&node(3), &node(1));
    let view = View {
        members: &m,
        reachability: &r,
    };
    let v = decide(&MAJORITY, view, None);
    assert_eq!(
        v,
        Some(Verdict::Down {
            members: set(&[1, 3]),
            reason: "indirectly connected"
        })
    );
    // A clean 3 | 2 partition plus node 2 flagged by 1 while 2 flags 4: 2 is indirectly
    // connected and goes too; the majority rule decides the rest.
    let mut r = partition(&m, &[1, 2, 3]);
    r.unreachable(&node(1), &node(2));
    r.unreachable(&node(2), &node(4));
    let view = View {
        members: &m,
        reachability: &r,
    };
    assert_eq!(downs(decide(&MAJORITY, view, None)), set(&[2, 4, 5]));
}

#[test]
fn stability_waits_for_a_quiet_view_and_gives_up_when_it_never_comes() {
    let m = five();
    let secs = Duration::from_secs;
    let on = |stable_after| unstable_limit(DownAllWhenUnstable::On, stable_after);
    let mut st = Stability::new(secs(20), on(secs(20)));
    assert_eq!(on(secs(20)), Some(secs(15)));
    assert_eq!(on(secs(2)), Some(secs(4)), "at least 4 s");
    let healthy = Reachability::default();
    st.observe(
        secs(0),
        View {
            members: &m,
            reachability: &healthy,
        },
    );
    assert_eq!(st.due(secs(1)), Due::Idle);

    let split = partition(&m, &[1, 2, 3]);
    st.observe(
        secs(10),
        View {
            members: &m,
            reachability: &split,
        },
    );
    assert_eq!(st.due(secs(11)), Due::WaitUntil(secs(30)));
    assert_eq!(st.due(secs(30)), Due::Decide);

    // Flapping: the view changes every 10 s; after 20 + 15 s of it, down all.
    let mut st = Stability::new(secs(20), Some(secs(15)));
    let other = partition(&m, &[1, 2, 3, 4]);
    for (k, t) in (0..5).map(|k| (k, secs(10 * k))) {
        let r = if k % 2 == 0 { &split } else { &other };
        st.observe(
            t,
            View {
                members: &m,
                reachability: r,
            },
        );
    }
    assert_eq!(st.due(secs(34)), Due::WaitUntil(secs(35)));
    assert_eq!(st.due(secs(35)), Due::DownAll);

    // Joining members coming and going do not reset the clock; healing does.
    let mut st = Stability::new(secs(20), None);
    st.observe(
        secs(0),
        View {
            members: &m,
            reachability: &split,
        },
    );
    let mut more = m.clone();
    more.push(with(up(9, &[]), MemberStatus::Joining));
    st.observe(
        secs(5),
        View {
            members: &more,
            reachability: &split,
        },
    );
    assert_eq!(st.due(secs(20)), Due::Decide);
    st.observe(
        secs(21),
        View {
            members: &m,
            reachability: &healthy,
        },
    );
    assert_eq!(st.due(secs(50)), Due::Idle);
}

#[test]
fn members_that_flap_never_make_it_down_all() {
    // Issue 16: starved members flagged unreachable for a few seconds at a time, a
    // different one every few seconds, for a minute. Nobody stays away: nobody is downed.
    let m = five();
    let secs = Duration::from_secs;
    let mut st = Stability::new(secs(20), unstable_limit(DownAllWhenUnstable::On, secs(20)));
    let healthy = Reachability::default();
    let mut t = secs(0);
    for k in 0..40u8 {
        let flapping = partition(
            &m,
            &[1, 2, 3, 4, 5].map(|i| if i == 2 + k % 4 { 1 } else { i }),
        );
        for (r, len) in [(&flapping, 1), (&healthy, 1)] {
            st.observe(
                t,
                View {
                    members: &m,
                    reachability: r,
                },
            );
            let due = st.due(t);
            assert!(
                !matches!(due, Due::DownAll | Due::Decide),
                "{due:?} at {t:?} for members that only flap"
            );
            if let Due::WaitUntil(w) = due {
                assert!(w > t, "a wake-up in the past: {w:?} at {t:?}");
            }
            t += secs(len);
        }
    }
    // Once one of them stays away past stable-after while the rest keep flapping, the
    // limit applies as before.
    let mut st = Stability::new(secs(20), Some(secs(15)));
    let mut t = secs(0);
    let mut seen = vec![];
    while t <= secs(60) {
        let mut r = partition(&m, &[1, 2, 3, 4]);
        if t.as_secs().is_multiple_of(2) {
            r.unreachable(&node(1), &node(4));
        }
        st.observe(
            t,
            View {
                members: &m,
                reachability: &r,
            },
        );
        seen.push((t, st.due(t)));
        t += secs(1);
    }
    let first_down_all = seen
        .iter()
        .find(|(_, d)| *d == Due::DownAll)
        .map(|(t, _)| *t);
    assert_eq!(first_down_all, Some(secs(35)), "{seen:?}");
}

#[test]
fn a_joining_member_away_for_a_moment_is_not_settled() {
    let mut m = five();
    m.push(with(up(9, &[]), MemberStatus::Joining));
    let secs = Duration::from_secs;
    let mut st = Stability::new(secs(20), None);
    let mut r = Reachability::default();
    r.unreachable(&node(1), &node(9));
    st.observe(
        secs(0),
        View {
            members: &m,
            reachability: &r,
        },
    );
    // Only a Joining member is away: the decision comes after stable-after, and the
    // member counts as settled only once it has been away that long.
    assert_eq!(st.due(secs(1)), Due::WaitUntil(secs(20)));
    assert!(!st.settled(&node(9), secs(19)));
    assert_eq!(st.due(secs(20)), Due::Decide);
    assert!(st.settled(&node(9), secs(20)));
}

#[test]
fn settings_give_the_strategy_and_its_limits() {
    let secs = Duration::from_secs;
    let mut c = crate::config::SplitBrainResolverConfig {
        active_strategy: crate::config::ActiveStrategy::KeepOldest,
        down_all_when_unstable: DownAllWhenUnstable::Off,
        ..Default::default()
    };
    let d = Downing::from_config(&c).expect("on");
    assert_eq!(
        d.strategy,
        Strategy::KeepOldest {
            down_if_alone: true,
            role: None
        }
    );
    assert_eq!(d.unstable_limit, None);
    assert_eq!(d.stable_after, secs(20));
    c.down_all_when_unstable = DownAllWhenUnstable::On;
    assert_eq!(
        Downing::from_config(&c).expect("on").unstable_limit,
        Some(secs(15))
    );
    c.active_strategy = crate::config::ActiveStrategy::Off;
    assert_eq!(Downing::from_config(&c), None);
}
