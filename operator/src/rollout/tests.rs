use super::*;

fn address(i: usize) -> NodeAddress {
    NodeAddress::new(
        "shop",
        [10, 0, 0, u8::try_from(i + 1).expect("small")].into(),
        2552,
    )
}

/// Pods `shop-0..n` on 10.0.0.(i+1), all Ready members Up; `up[i]` is pod i's
/// upNumber and `new[i]` whether it already runs the target revision.
fn cluster(up: &[u32], new: &[bool]) -> Observed {
    let pods = (0..up.len())
        .map(|i| PodView {
            name: format!("shop-{i}"),
            revision: if new[i] { "v2".into() } else { "v1".into() },
            ready: true,
            terminating: false,
            ip: Some(address(i).ip),
        })
        .collect();
    let members = up
        .iter()
        .enumerate()
        .map(|(i, n)| MemberView {
            address: address(i),
            status: MemberStatus::Up,
            up_number: *n,
            unreachable: false,
        })
        .collect();
    Observed {
        pods,
        members,
        members_known: true,
        target_revision: "v2".into(),
        replicas: up.len(),
        paused: false,
    }
}

fn leave(pod: &str) -> Step {
    let i: usize = pod.trim_start_matches("shop-").parse().expect("ordinal");
    Step::Leave {
        pod: pod.into(),
        member: address(i),
    }
}

fn delete(pod: &str) -> Step {
    Step::Delete { pod: pod.into() }
}

#[test]
fn members_go_youngest_first_and_the_oldest_last() {
    // upNumbers: shop-0 is the oldest (1), shop-3 the youngest (9).
    let up = [1, 7, 3, 9];
    assert_eq!(plan(&cluster(&up, &[false; 4])), leave("shop-3"));
    assert_eq!(
        plan(&cluster(&up, &[false, false, false, true])),
        leave("shop-1")
    );
    assert_eq!(
        plan(&cluster(&up, &[false, true, false, true])),
        leave("shop-2")
    );
    assert_eq!(
        plan(&cluster(&up, &[false, true, true, true])),
        leave("shop-0")
    );
    assert_eq!(plan(&cluster(&up, &[true; 4])), Step::Done);
}

#[test]
fn the_whole_rollout_replaces_the_oldest_exactly_once_and_last() {
    // Simulated: each Leave is followed by the pod's replacement joining as the
    // youngest member; the order of replaced pods is recorded.
    let mut o = cluster(&[2, 1, 4, 3, 5], &[false; 5]);
    let mut order = Vec::new();
    let mut next_up = 6;
    loop {
        match plan(&o) {
            Step::Done => break,
            Step::Leave { pod, .. } => {
                let i = o.pods.iter().position(|p| p.name == pod).expect("pod");
                o.pods[i].revision = "v2".into();
                o.members[i].up_number = next_up;
                next_up += 1;
                order.push(pod);
            }
            other => panic!("unexpected {other:?} after {order:?}"),
        }
    }
    assert_eq!(order, ["shop-4", "shop-2", "shop-3", "shop-0", "shop-1"]);
}

#[test]
fn pods_that_are_not_members_go_first() {
    let mut o = cluster(&[1, 2, 3], &[false; 3]);
    o.members.remove(1); // shop-1 never joined (crash-looping, say)
    o.pods[1].ready = false;
    assert_eq!(plan(&o), delete("shop-1"));
}

#[test]
fn a_leaving_member_is_waited_for_then_its_pod_deleted() {
    let mut o = cluster(&[1, 2, 3], &[false; 3]);
    o.members[2].status = MemberStatus::Leaving;
    assert!(matches!(plan(&o), Step::Wait(w) if w.contains("leaving")));
    o.members[2].status = MemberStatus::Exiting;
    assert_eq!(plan(&o), delete("shop-2"));
    o.members.remove(2); // removed; the pod still runs the old revision
    assert_eq!(plan(&o), delete("shop-2"));
}

#[test]
fn nothing_moves_on_an_unhealthy_cluster() {
    type Breaks = fn(&mut Observed);
    let cases: [(&str, Breaks); 5] = [
        ("unreachable", |o| o.members[0].unreachable = true),
        ("not Ready", |o| o.pods[2].ready = false),
        ("not Up", |o| o.members[1].status = MemberStatus::Joining),
        ("terminating", |o| o.pods[1].terminating = true),
        ("2 of 3 pods exist", |o| {
            o.pods.pop();
        }),
    ];
    for (why, break_it) in cases {
        let mut o = cluster(&[1, 2, 3], &[false, false, true]);
        break_it(&mut o);
        match plan(&o) {
            Step::Wait(w) => assert!(w.contains(why), "{why}: {w}"),
            other => panic!("{why}: {other:?}"),
        }
    }
}

#[test]
fn the_replacement_must_be_an_up_member_before_the_next_step() {
    let mut o = cluster(&[1, 2, 3], &[false, false, true]);
    o.members.remove(2); // the new shop-2 runs but has not joined yet
    assert!(matches!(plan(&o), Step::Wait(w) if w.contains("shop-2 is not a cluster member")));
}

#[test]
fn paused_stops_and_progress_counts_updated_pods() {
    let mut o = cluster(&[1, 2, 3], &[false, true, true]);
    o.paused = true;
    assert_eq!(plan(&o), Step::Paused { remaining: 1 });
    assert_eq!(progress(&o), (2, 3));
}

/// When no agent answered, a Ready pod is never taken for one that holds nothing (it
/// was deleted unseen, and the next one before its replacement was Ready); a pod that
/// is not Ready is still replaced (a broken agent image can be rolled away).
#[test]
fn without_a_member_list_only_pods_that_are_not_ready_are_replaced() {
    let mut o = cluster(&[1, 2, 3], &[false, false, false]);
    o.members.clear();
    o.members_known = false;
    assert!(matches!(plan(&o), Step::Wait(_)), "{:?}", plan(&o));
    o.pods[1].ready = false;
    assert_eq!(
        plan(&o),
        Step::Delete {
            pod: "shop-1".into()
        }
    );
    // Its replacement, at the new revision, not Ready yet: wait for it.
    o.pods[1].revision = "v2".into();
    o.pods[2].ready = false;
    assert!(matches!(plan(&o), Step::Wait(_)), "{:?}", plan(&o));
}
