use std::collections::BTreeSet;

use super::*;
use crate::base::address::NodeAddress;
use crate::base::member::MemberStatus;
use crate::membership::member::MemberInfo;
use crate::membership::vclock::VectorClock;

fn node(i: u8) -> UniqueAddress {
    UniqueAddress::new(NodeAddress::new("t", [10, 0, 0, i].into(), 2552), 1)
}

fn member(i: u8, status: MemberStatus) -> Member {
    Member {
        status,
        up_number: u32::from(i),
        ..Member::joining(
            node(i),
            MemberInfo {
                roles: BTreeSet::new(),
                app_version: "1".into(),
            },
        )
    }
}

fn gossip(members: &[Member]) -> Gossip {
    Gossip::from_parts(
        members.iter().cloned(),
        BTreeSet::new(),
        VectorClock::default(),
        BTreeSet::new(),
    )
}

fn names(events: &[ClusterEvent]) -> Vec<&'static str> {
    events.iter().map(ClusterEvent::name).collect()
}

#[test]
fn a_member_going_through_its_life_gives_one_event_per_step() {
    let steps = [
        gossip(&[member(1, MemberStatus::Up)]),
        gossip(&[
            member(1, MemberStatus::Up),
            member(2, MemberStatus::Joining),
        ]),
        gossip(&[member(1, MemberStatus::Up), member(2, MemberStatus::Up)]),
        gossip(&[
            member(1, MemberStatus::Up),
            member(2, MemberStatus::Leaving),
        ]),
        gossip(&[
            member(1, MemberStatus::Up),
            member(2, MemberStatus::Exiting),
        ]),
        gossip(&[member(1, MemberStatus::Up)]),
    ];
    let all: Vec<ClusterEvent> = steps.windows(2).flat_map(|w| diff(&w[0], &w[1])).collect();
    assert_eq!(
        names(&all),
        [
            "MemberJoined",
            "MemberUp",
            "MemberLeft",
            "MemberExited",
            "MemberRemoved"
        ]
    );
    assert_eq!(
        all[4],
        ClusterEvent::MemberRemoved {
            member: "muster://t@10.0.0.2:2552".parse().unwrap(),
            uid: 1,
            previous_status: MemberStatus::Exiting
        }
    );
}

#[test]
fn a_full_shutdown_is_told_member_by_member() {
    let up = gossip(&[member(1, MemberStatus::Up)]);
    let preparing = gossip(&[member(1, MemberStatus::PreparingForShutdown)]);
    let ready = gossip(&[member(1, MemberStatus::ReadyForShutdown)]);
    assert_eq!(
        names(&diff(&up, &preparing)),
        ["MemberPreparingForShutdown"]
    );
    assert_eq!(names(&diff(&preparing, &ready)), ["MemberReadyForShutdown"]);
    assert_eq!(
        names(&snapshot(&ready, false)),
        ["MemberJoined", "MemberReadyForShutdown", "LeaderChanged"]
    );
}

#[test]
fn a_jump_from_up_to_exiting_still_tells_that_the_member_left() {
    let up = gossip(&[member(1, MemberStatus::Up), member(2, MemberStatus::Up)]);
    let exiting = gossip(&[
        member(1, MemberStatus::Up),
        member(2, MemberStatus::Exiting),
    ]);
    assert_eq!(names(&diff(&up, &exiting)), ["MemberLeft", "MemberExited"]);
    // Other jumps are not filled in: Up to Down says only MemberDowned.
    let down = gossip(&[member(1, MemberStatus::Up), member(2, MemberStatus::Down)]);
    assert_eq!(names(&diff(&up, &down)), ["MemberDowned"]);
}

#[test]
fn reachability_and_leader_changes_are_events() {
    let before = gossip(&[member(1, MemberStatus::Up), member(2, MemberStatus::Up)]);
    let mut after = before.clone();
    after.set_reachability(&node(2), &[node(1)].into());
    assert_eq!(
        names(&diff(&before, &after)),
        ["UnreachableMember", "LeaderChanged"]
    );
    assert_eq!(
        names(&diff(&after, &before)),
        ["ReachableMember", "LeaderChanged"]
    );
    assert!(diff(&before, &before).is_empty());
}

#[test]
fn a_snapshot_tells_the_current_state() {
    let mut g = gossip(&[
        member(1, MemberStatus::Up),
        member(2, MemberStatus::Joining),
    ]);
    g.set_reachability(&node(1), &[node(2)].into());
    assert_eq!(
        names(&snapshot(&g, false)),
        [
            "MemberJoined",
            "MemberUp",
            "MemberJoined",
            "UnreachableMember",
            "LeaderChanged"
        ]
    );
    let json = serde_json::to_value(&snapshot(&g, false)[1]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"type": "MemberUp", "member": "muster://t@10.0.0.1:2552", "uid": "1", "upNumber": 1})
    );
}

fn with_roles(mut m: Member, roles: &[&str]) -> Member {
    m.roles = roles.iter().map(|r| (*r).to_owned()).collect();
    m
}

#[test]
fn role_leaders_are_told_in_snapshots_and_when_they_change() {
    let front = |i: u8, status| with_roles(member(i, status), &["frontend"]);
    let both = |i: u8, status| with_roles(member(i, status), &["backend", "frontend"]);
    let before = gossip(&[front(1, MemberStatus::Up), both(2, MemberStatus::Up)]);
    let role_leaders = |events: &[ClusterEvent]| -> Vec<(String, Option<NodeAddress>)> {
        events
            .iter()
            .filter_map(|e| match e {
                ClusterEvent::RoleLeaderChanged { role, leader } => {
                    Some((role.clone(), leader.clone()))
                }
                _ => None,
            })
            .collect()
    };
    let snap = snapshot(&before, false);
    assert_eq!(
        role_leaders(&snap),
        [
            ("backend".to_owned(), Some(node(2).address)),
            ("frontend".to_owned(), Some(node(1).address)),
        ]
    );
    assert_eq!(names(&snap).last(), Some(&"LeaderChanged"));
    // Member 1 unreachable: the frontend's leader and the leader move to 2, the
    // backend's stays.
    let mut after = before.clone();
    after.set_reachability(&node(2), &[node(1)].into());
    let events = diff(&before, &after);
    assert_eq!(
        names(&events),
        ["UnreachableMember", "RoleLeaderChanged", "LeaderChanged"]
    );
    assert_eq!(
        role_leaders(&events),
        [("frontend".to_owned(), Some(node(2).address))]
    );
    // The last backend member removed: that role's leader is none.
    let gone = gossip(&[front(1, MemberStatus::Up)]);
    assert_eq!(
        role_leaders(&diff(&before, &gone)),
        [("backend".to_owned(), None)]
    );
}

#[test]
fn the_end_of_this_agents_membership_is_one_event_and_part_of_later_snapshots() {
    let hub = EventHub::new(16);
    hub.publish(&gossip(&[member(1, MemberStatus::Up)]));
    hub.shutting_down();
    hub.shutting_down();
    let told = hub.since(0).unwrap();
    assert_eq!(
        told.iter()
            .filter(|(_, e)| *e == ClusterEvent::ClusterShuttingDown)
            .count(),
        1
    );
    let snap: Vec<ClusterEvent> = hub.start(None).events.into_iter().map(|(_, e)| e).collect();
    assert_eq!(
        names(&snap),
        [
            "MemberJoined",
            "MemberUp",
            "LeaderChanged",
            "ClusterShuttingDown"
        ]
    );
}

#[test]
fn the_log_resumes_or_says_it_cannot() {
    let mut log = EventLog::new(3);
    let e = |i: u8| ClusterEvent::LeaderChanged {
        leader: Some(node(i).address),
    };
    log.push((1..=5).map(e));
    assert_eq!(log.last_id(), 5);
    let after3: Vec<u64> = log.since(3).unwrap().iter().map(|(i, _)| *i).collect();
    assert_eq!(after3, [4, 5]);
    assert_eq!(
        log.since(2).unwrap().len(),
        3,
        "2 is the last one dropped: 3..5 kept"
    );
    assert_eq!(log.since(1), Err(TooOld { oldest_kept: 3 }));
    assert!(log.since(5).unwrap().is_empty());
    assert!(
        log.since(9).is_err(),
        "an id from the future (another agent's log)"
    );
}

#[test]
fn the_hub_starts_new_subscribers_with_a_snapshot_and_resyncs_lost_ones() {
    let hub = EventHub::new(2);
    let one = gossip(&[member(1, MemberStatus::Up)]);
    hub.publish(&one);
    let start = hub.start(None);
    assert!(!start.resynced);
    assert!(start.events.iter().all(|(id, _)| *id == 3), "{start:?}");
    let two = gossip(&[
        member(1, MemberStatus::Up),
        member(2, MemberStatus::Joining),
    ]);
    hub.publish(&two);
    let resumed = hub.start(Some(3));
    assert_eq!(resumed.events.len(), 1);
    assert_eq!(resumed.events[0].0, 4);
    assert!(!resumed.resynced);
    let lost = hub.start(Some(1));
    assert!(lost.resynced);
    assert_eq!(
        names(
            &lost
                .events
                .iter()
                .map(|(_, e)| e.clone())
                .collect::<Vec<_>>()
        )
        .len(),
        4
    );
}

#[tokio::test]
async fn a_subscription_follows_the_log_and_reports_falling_behind() {
    let hub = EventHub::new(4);
    hub.publish(&gossip(&[member(1, MemberStatus::Up)]));
    let mut sub = hub.subscribe(None);
    let mut first = Vec::new();
    let mut inside = Vec::new();
    for _ in 0..3 {
        first.push(sub.next().await.unwrap().unwrap().1);
        inside.push(sub.inside_snapshot());
    }
    assert_eq!(names(&first), ["MemberJoined", "MemberUp", "LeaderChanged"]);
    // Only the snapshot's last event is a place to resume from.
    assert_eq!(inside, [true, true, false]);
    hub.publish(&gossip(&[
        member(1, MemberStatus::Up),
        member(2, MemberStatus::Joining),
    ]));
    let (id, e) = sub.next().await.unwrap().unwrap();
    assert_eq!((id, e.name()), (4, "MemberJoined"));
    assert!(!sub.inside_snapshot());
    // A subscriber that resumes gets no snapshot.
    let mut resumed = hub.subscribe(Some(3));
    assert_eq!(resumed.next().await.unwrap().unwrap().0, 4);
    assert!(!resumed.inside_snapshot());
    // Far behind: more events than the log keeps arrive before it reads again.
    for i in 3..9 {
        hub.publish(&gossip(&[
            member(1, MemberStatus::Up),
            member(i, MemberStatus::Joining),
        ]));
    }
    assert!(matches!(sub.next().await, Some(Err(TooOld { .. }))));
    let again = hub.subscribe(Some(id));
    assert!(again.resynced);
}

#[test]
fn a_stream_resumed_after_the_end_is_told_the_end_again() {
    let hub = EventHub::new(16);
    hub.publish(&gossip(&[member(1, MemberStatus::Up)]));
    hub.shutting_down();
    let end = hub
        .since(0)
        .unwrap()
        .into_iter()
        .find(|(_, e)| *e == ClusterEvent::ClusterShuttingDown)
        .map(|(id, _)| id)
        .expect("the end in the log");
    // Resumed from the end itself (the client saw it, the agent still runs: e.g. its
    // handover): nothing after it in the log, but the stream must end again.
    let resumed = hub.start(Some(end));
    assert!(!resumed.resynced && resumed.after_the_end);
    assert_eq!(
        names(
            &resumed
                .events
                .iter()
                .map(|(_, e)| e.clone())
                .collect::<Vec<_>>()
        ),
        ["ClusterShuttingDown"]
    );
    // Resumed from before it: the end once, not twice.
    let earlier = hub.start(Some(end - 1));
    assert!(!earlier.after_the_end);
    assert_eq!(
        earlier
            .events
            .iter()
            .filter(|(_, e)| *e == ClusterEvent::ClusterShuttingDown)
            .count(),
        1
    );
}
