use std::collections::BTreeSet;
use std::time::Duration;

use super::*;
use crate::api::{SeedNode, SeedNodes};
use crate::base::address::{ContactPoint, NodeAddress};
use crate::base::member::MemberStatus;

fn cp(s: &str) -> ContactPoint {
    s.parse().unwrap()
}

fn node(cp: &ContactPoint) -> NodeAddress {
    NodeAddress::new("shop", cp.ip, 2552)
}

/// `nodes` as seed nodes, Up.
fn seeds(nodes: &[NodeAddress]) -> Vec<SeedNode> {
    nodes
        .iter()
        .map(|n| SeedNode {
            node: n.clone(),
            node_uid: 1,
            status: MemberStatus::Up,
            roles: vec![],
        })
        .collect()
}

fn settings() -> DeciderSettings {
    DeciderSettings::example()
}

fn me(s: &str) -> SelfIdentity {
    let m = cp(s);
    SelfIdentity {
        address: node(&m),
        management: m,
    }
}

const T: Duration = Duration::from_secs(100);

/// Discovered `points` (changed at `changed_at`), every point answered at T without seeds
/// and reporting `reported` (None: Akka-style peer).
fn observed(points: &[&str], changed_at: Duration, reported: Option<&[&str]>) -> Observations {
    let discovered: BTreeSet<ContactPoint> = points.iter().map(|s| cp(s)).collect();
    let reported: Option<BTreeSet<ContactPoint>> =
        reported.map(|r| r.iter().map(|s| cp(s)).collect());
    Observations {
        lookups: 3,
        lookup_error: None,
        discovered_changed_at: changed_at,
        ever_seen: discovered.clone(),
        answers: discovered
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    ProbeAnswer {
                        from_self: false,
                        at: T,
                        answer: SeedNodes {
                            self_node: node(c),
                            seed_nodes: vec![],
                            contact_points: reported.clone(),
                        },
                    },
                )
            })
            .collect(),
        discovered,
    }
}

fn stable(points: &[&str]) -> Observations {
    observed(points, Duration::ZERO, None)
}

#[test]
fn lowest_forms_whatever_the_input_order() {
    let orders: [&[&str]; 3] = [
        &["10.0.0.1:8558", "10.0.0.2:8558", "10.0.0.10:8558"],
        &["10.0.0.10:8558", "10.0.0.2:8558", "10.0.0.1:8558"],
        &["10.0.0.2:8558", "10.0.0.10:8558", "10.0.0.1:8558"],
    ];
    for order in orders {
        let obs = stable(order);
        assert_eq!(
            decide(&obs, &settings(), &me("10.0.0.1:8558"), T),
            Decision::Form {
                by_agreement: false
            }
        );
        for other in ["10.0.0.2:8558", "10.0.0.10:8558"] {
            assert_eq!(
                decide(&obs, &settings(), &me(other), T),
                Decision::Wait(Waiting::NotLowest {
                    lowest: cp("10.0.0.1:8558"),
                    new_cluster_enabled: true,
                }),
                "{other} must wait, 10.0.0.10 sorts after 10.0.0.2 numerically"
            );
        }
    }
}

#[test]
fn seed_nodes_reported_anywhere_win_over_forming() {
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558"]);
    let seed = NodeAddress::new("shop", "10.0.0.9".parse().unwrap(), 2552);
    obs.answers
        .get_mut(&cp("10.0.0.2:8558"))
        .unwrap()
        .answer
        .seed_nodes = seeds(std::slice::from_ref(&seed));
    assert_eq!(
        decide(&obs, &settings(), &me("10.0.0.1:8558"), T),
        Decision::Join {
            seed_nodes: vec![seed.clone()]
        }
    );
    // Even while unstable, with too few answers, or with new clusters disabled.
    let mut s = settings();
    s.new_cluster_enabled = false;
    s.required_contact_point_nr = 5;
    obs.discovered_changed_at = T;
    assert_eq!(
        decide(&obs, &s, &me("10.0.0.1:8558"), T),
        Decision::Join {
            seed_nodes: vec![seed]
        }
    );
}

#[test]
fn stale_answers_do_not_count() {
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558"]);
    let seed = NodeAddress::new("shop", "10.0.0.9".parse().unwrap(), 2552);
    let a = obs.answers.get_mut(&cp("10.0.0.2:8558")).unwrap();
    a.answer.seed_nodes = seeds(&[seed]);
    a.at = T - Duration::from_millis(3001);
    assert_eq!(
        decide(&obs, &settings(), &me("10.0.0.1:8558"), T),
        Decision::Wait(Waiting::NotEnoughContactPoints {
            answered: 1,
            required: 2,
            not_answered: vec![cp("10.0.0.2:8558")]
        })
    );
}

#[test]
fn no_self_join_while_the_set_is_too_small() {
    let obs = stable(&["10.0.0.1:8558"]);
    let d = decide(&obs, &settings(), &me("10.0.0.1:8558"), T);
    assert!(
        matches!(
            d,
            Decision::Wait(Waiting::NotEnoughContactPoints {
                answered: 1,
                required: 2,
                ..
            })
        ),
        "{d:?}"
    );
    // Discovered but not answering does not count either.
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558", "10.0.0.3:8558"]);
    obs.answers.retain(|c, _| *c == cp("10.0.0.1:8558"));
    let mut s = settings();
    s.required_contact_point_nr = 3;
    let d = decide(&obs, &s, &me("10.0.0.1:8558"), T);
    let Decision::Wait(w @ Waiting::NotEnoughContactPoints { .. }) = d else {
        panic!("{d:?}")
    };
    assert!(
        w.explain().contains("10.0.0.2:8558, 10.0.0.3:8558"),
        "{}",
        w.explain()
    );
}

#[test]
fn no_self_join_while_the_set_changes() {
    let obs = observed(
        &["10.0.0.1:8558", "10.0.0.2:8558"],
        T - Duration::from_secs(2),
        None,
    );
    let d = decide(&obs, &settings(), &me("10.0.0.1:8558"), T);
    assert_eq!(
        d,
        Decision::Wait(Waiting::NotStable {
            changed_ago_ms: 2000,
            stable_margin_ms: 5000,
            agreement: Some(NoAgreement::Disagreeing {
                contact_points: vec![cp("10.0.0.1:8558"), cp("10.0.0.2:8558")]
            }),
        })
    );
    // Once stable for the margin, it forms.
    assert_eq!(
        decide(
            &obs,
            &settings(),
            &me("10.0.0.1:8558"),
            T + Duration::from_secs(3)
        ),
        Decision::Form {
            by_agreement: false
        }
    );
}

#[test]
fn agreement_skips_the_stable_margin_only_when_everyone_reports_the_same_set() {
    let set = ["10.0.0.1:8558", "10.0.0.2:8558", "10.0.0.3:8558"];
    let just_changed = T - Duration::from_millis(100);
    let obs = observed(&set, just_changed, Some(&set));
    assert_eq!(
        decide(&obs, &settings(), &me("10.0.0.1:8558"), T),
        Decision::Form { by_agreement: true }
    );

    // One reports a different set: back to the stable-margin rule, naming it.
    let mut obs2 = obs.clone();
    obs2.answers
        .get_mut(&cp("10.0.0.3:8558"))
        .unwrap()
        .answer
        .contact_points = Some(set[..2].iter().map(|s| cp(s)).collect());
    let d = decide(&obs2, &settings(), &me("10.0.0.1:8558"), T);
    assert!(
        matches!(&d, Decision::Wait(Waiting::NotStable { agreement: Some(NoAgreement::Disagreeing { contact_points }), .. }) if *contact_points == vec![cp("10.0.0.3:8558")]),
        "{d:?}"
    );

    // A peer that does not report its set (Akka) never agrees.
    let mut obs3 = obs.clone();
    obs3.answers
        .get_mut(&cp("10.0.0.2:8558"))
        .unwrap()
        .answer
        .contact_points = None;
    assert!(matches!(
        decide(&obs3, &settings(), &me("10.0.0.1:8558"), T),
        Decision::Wait(Waiting::NotStable { .. })
    ));

    // This node once saw a point that has gone: its view shrank, so no agreement.
    let mut obs4 = obs.clone();
    obs4.ever_seen.insert(cp("10.0.0.4:8558"));
    assert!(matches!(
        decide(&obs4, &settings(), &me("10.0.0.1:8558"), T),
        Decision::Wait(Waiting::NotStable { .. })
    ));

    // Switched off: Akka's behaviour.
    let mut s = settings();
    s.contact_point_agreement = false;
    assert!(matches!(
        decide(&obs, &s, &me("10.0.0.1:8558"), T),
        Decision::Wait(Waiting::NotStable { .. })
    ));
}

#[test]
fn no_self_join_with_an_unanswered_contact_point() {
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558", "10.0.0.3:8558"]);
    obs.answers.remove(&cp("10.0.0.3:8558"));
    assert_eq!(
        decide(&obs, &settings(), &me("10.0.0.1:8558"), T),
        Decision::Wait(Waiting::Unanswered {
            contact_points: vec![cp("10.0.0.3:8558")]
        })
    );
    // Without contact-with-all the answering majority suffices.
    let mut s = settings();
    s.contact_with_all_contact_points = false;
    assert_eq!(
        decide(&obs, &s, &me("10.0.0.1:8558"), T),
        Decision::Form {
            by_agreement: false
        }
    );
    // The lowest among the *answering* points forms: if 10.0.0.1 is silent, 10.0.0.2 does.
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558", "10.0.0.3:8558"]);
    obs.answers.remove(&cp("10.0.0.1:8558"));
    assert_eq!(
        decide(&obs, &s, &me("10.0.0.2:8558"), T),
        Decision::Form {
            by_agreement: false
        }
    );
}

#[test]
fn never_forms_with_new_cluster_disabled() {
    let obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558"]);
    let mut s = settings();
    s.new_cluster_enabled = false;
    let d = decide(&obs, &s, &me("10.0.0.1:8558"), T);
    assert_eq!(d, Decision::Wait(Waiting::NewClusterDisabled));
    let Decision::Wait(w) = d else { unreachable!() };
    assert!(w.explain().contains("new-cluster-enabled is off"));
    // The others do not wait for the lowest in vain: they say it will not form either.
    let d = decide(&obs, &s, &me("10.0.0.2:8558"), T);
    let Decision::Wait(w) = d else {
        panic!("{d:?}")
    };
    assert!(
        matches!(
            w,
            Waiting::NotLowest {
                new_cluster_enabled: false,
                ..
            }
        ),
        "{w:?}"
    );
    assert!(
        w.explain().contains("new-cluster-enabled is off"),
        "{}",
        w.explain()
    );
}

#[test]
fn no_decision_after_a_failed_lookup_or_before_any() {
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558"]);
    obs.lookup_error = Some("timed out".into());
    assert!(matches!(
        decide(&obs, &settings(), &me("10.0.0.1:8558"), T),
        Decision::Wait(Waiting::LookupFailed { .. })
    ));
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558"]);
    obs.lookups = 0;
    assert_eq!(
        decide(&obs, &settings(), &me("10.0.0.1:8558"), T),
        Decision::Wait(Waiting::NoLookupYet)
    );
}

#[test]
fn ipv6_and_mixed_families_order_numerically() {
    let set = ["[fd00::10]:8558", "[fd00::9]:8558", "[fd00::a]:8558"];
    let obs = stable(&set);
    assert_eq!(
        decide(&obs, &settings(), &me("[fd00::9]:8558"), T),
        Decision::Form {
            by_agreement: false
        }
    );
    assert!(matches!(
        decide(&obs, &settings(), &me("[fd00::a]:8558"), T),
        Decision::Wait(Waiting::NotLowest { .. })
    ));
    // Mixed: IPv4 sorts on the mapped scale, below fd00::/8 and above ::1.
    let mixed = ["[fd00::1]:8558", "10.0.0.5:8558"];
    assert_eq!(
        decide(&stable(&mixed), &settings(), &me("10.0.0.5:8558"), T),
        Decision::Form {
            by_agreement: false
        }
    );
    let mixed = ["[::1]:8558", "10.0.0.5:8558"];
    assert_eq!(
        decide(&stable(&mixed), &settings(), &me("[::1]:8558"), T),
        Decision::Form {
            by_agreement: false
        }
    );
    // An IPv4-mapped self address is the same node.
    let obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558"]);
    assert_eq!(
        decide(&obs, &settings(), &me("[::ffff:10.0.0.1]:8558"), T),
        Decision::Form {
            by_agreement: false
        }
    );
}

#[test]
fn self_recognised_by_ip_when_discovery_returns_names() {
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558"]);
    // Discovery named the points (SRV targets / pod names), the node knows only its IP.
    obs.discovered = obs
        .discovered
        .iter()
        .map(|c| {
            ContactPoint::named(
                c.ip,
                c.port,
                format!("pod-{}.shop.prod.svc.cluster.local", c.ip),
            )
        })
        .collect();
    assert_eq!(
        decide(&obs, &settings(), &me("10.0.0.1:8558"), T),
        Decision::Form {
            by_agreement: false
        }
    );
}

#[test]
fn self_recognised_when_its_own_server_answered_under_another_address() {
    // Discovery reports this node under an address it does not bind (e.g. a NAT); its
    // own server saw the probe's nonce, so the answer is marked as coming from itself.
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558"]);
    obs.answers.get_mut(&cp("10.0.0.1:8558")).unwrap().from_self = true;
    let mut me = me("10.0.0.1:8558");
    me.management = cp("192.168.0.1:8558");
    assert_eq!(
        decide(&obs, &settings(), &me, T),
        Decision::Form {
            by_agreement: false
        }
    );
}

/// Finding 15.2: an answer claiming the prober's own address made every prober
/// believe it was the lowest, and three agents formed three clusters.
#[test]
fn an_answer_that_claims_to_be_the_prober_does_not_make_it_self() {
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558", "10.0.0.3:8558"]);
    // The liar at .1 (lowest) tells .3 "you are me".
    obs.answers
        .get_mut(&cp("10.0.0.1:8558"))
        .unwrap()
        .answer
        .self_node = node(&cp("10.0.0.3:8558"));
    let d = decide(&obs, &settings(), &me("10.0.0.3:8558"), T);
    assert!(
        matches!(&d, Decision::Wait(Waiting::NotLowest { lowest, .. }) if *lowest == cp("10.0.0.1:8558")),
        "{d:?}"
    );
}

#[test]
fn an_existing_cluster_is_joined_through_at_most_five_seed_nodes_most_reported_first() {
    let mut obs = stable(&["10.0.0.1:8558", "10.0.0.2:8558"]);
    let honest: Vec<NodeAddress> = (1..=2)
        .map(|i| node(&cp(&format!("10.0.0.{i}:8558"))))
        .collect();
    let many: Vec<NodeAddress> = (1..=2500u32)
        .map(|k| {
            let [_, _, x, y] = k.to_be_bytes();
            NodeAddress::new("shop", std::net::IpAddr::from([10, 9, x, y]), 2552)
        })
        .collect();
    obs.answers
        .get_mut(&cp("10.0.0.1:8558"))
        .unwrap()
        .answer
        .seed_nodes = seeds(&[honest.clone(), many].concat());
    obs.answers
        .get_mut(&cp("10.0.0.2:8558"))
        .unwrap()
        .answer
        .seed_nodes = seeds(&honest);
    let Decision::Join { seed_nodes } = decide(&obs, &settings(), &me("10.0.0.3:8558"), T) else {
        panic!("joins");
    };
    assert_eq!(seed_nodes.len(), MAX_JOIN_SEED_NODES);
    for h in &honest {
        assert!(seed_nodes.contains(h), "{seed_nodes:?}");
    }
}
