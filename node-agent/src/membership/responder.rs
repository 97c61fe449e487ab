//! Failure detection's messages, handled apart from the membership actor.
//!
//! A heartbeat asks whether this process is alive and reachable; it must not wait for
//! the membership actor. On a node starved of CPU (a throttled pod, a machine running
//! many agents), the actor can spend seconds of wall time on one large state message,
//! and a heartbeat queued behind it made its sender judge this live node dead. That was
//! a root of issue 16's mass downings: every overloaded node saw its peers go
//! unreachable, and the resolver acted on it.
//!
//! So this task answers `Heartbeat` itself (only while the node is a member, as the core
//! would) over its own connections, and stamps each `HeartbeatRsp` with its arrival
//! time before handing it to the actor: the failure detector then judges the peer by
//! when its answer arrived, not by when this node found time to look at it. Akka has
//! the same split (a heartbeat receiver apart from the cluster core).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::actor::{ClusterView, ViewPhase};
use super::messages::{Envelope, Message};
use crate::base::address::UniqueAddress;
use crate::base::time::{Clock, Time};
use crate::metrics::Metrics;
use crate::transport::tcp::Outbound;

/// An actor that has not started on anything for this long is stuck, not slow (on a
/// starved machine one message can take seconds): its node stops answering heartbeats,
/// so that the cluster can tell, as it could before heartbeats were answered here.
pub const STUCK_AFTER: Duration = Duration::from_secs(15);

/// The responder's parts.
#[derive(Debug)]
pub struct Responder {
    pub clock: Clock,
    /// Urgent messages from the transport.
    pub urgent: mpsc::Receiver<Envelope>,
    /// Heartbeat answers for the actor, with their arrival time.
    pub responses: mpsc::Sender<(Envelope, Time)>,
    /// The actor's view: who this node is and whether it is a member.
    pub view: watch::Receiver<Arc<ClusterView>>,
    /// Connections of its own, so that an answer does not queue behind state messages.
    pub outbound: Outbound<Envelope>,
    /// The actor's progress stamp ([`super::actor::MembershipActor::progress`]).
    pub progress: Arc<AtomicU64>,
    pub metrics: Metrics,
}

/// What to do with one urgent message, given the current view.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this answer.
    Answer(Envelope),
    /// Hand this answer to the actor.
    Forward(Envelope),
    /// Drop it, for this reason (a metrics label).
    Drop(&'static str),
}

/// Decides about one urgent message. A heartbeat is answered only when it is addressed
/// to this incarnation of a member (the core's rule) whose actor is not `stuck`; an
/// answer goes to the actor only from a member it knows (no one else's answer counts,
/// and a flood of them must not reach it).
pub fn decide(view: &ClusterView, stuck: bool, env: Envelope) -> Action {
    let me = &view.self_node;
    if env.to != me.address || env.to_uid.is_some_and(|u| u != me.uid) {
        return Action::Drop("wrong_recipient");
    }
    match env.message {
        Message::Heartbeat { seq } => {
            if view.phase != ViewPhase::Member || stuck {
                return Action::Drop("not_now");
            }
            Action::Answer(Envelope {
                from: me.clone(),
                to: env.from.address.clone(),
                to_uid: Some(env.from.uid),
                message: Message::HeartbeatRsp { seq },
            })
        }
        Message::HeartbeatRsp { .. } if view.gossip.has_member(&env.from) => Action::Forward(env),
        Message::HeartbeatRsp { .. } => Action::Drop("not_now"),
        _ => Action::Drop("not_urgent"),
    }
}

/// Runs until the transport's urgent queue or the actor's response queue closes.
pub async fn run(r: Responder) {
    let Responder {
        clock,
        mut urgent,
        responses,
        view,
        mut outbound,
        progress,
        metrics,
    } = r;
    let mut known: BTreeSet<UniqueAddress> = BTreeSet::new();
    let mut last: Option<Arc<ClusterView>> = None;
    while let Some(env) = urgent.recv().await {
        let arrived = clock.now();
        let current = view.borrow().clone();
        // A removed incarnation's connection may be stale (its address may now belong
        // to a new process): forget it, as the actor does for its own.
        if last.as_ref().is_none_or(|l| !Arc::ptr_eq(l, &current)) {
            last = Some(current.clone());
            let now_known: BTreeSet<UniqueAddress> =
                current.gossip.members().map(|m| m.node.clone()).collect();
            for gone in known.difference(&now_known) {
                outbound.forget(gone.address.socket_addr());
            }
            known = now_known;
        }
        let stamp = Time::from_millis(progress.load(Ordering::Relaxed));
        let stuck = arrived.saturating_sub(stamp) > STUCK_AFTER;
        match decide(&current, stuck, env) {
            Action::Answer(answer) => outbound.send(answer.to.socket_addr(), answer),
            Action::Forward(env) => {
                if responses.is_closed() {
                    break;
                }
                if responses.try_send((env, arrived)).is_err() {
                    metrics.dropped("queue_full");
                }
            }
            Action::Drop(reason) => metrics.dropped(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::address::NodeAddress;
    use crate::membership::gossip::Gossip;
    use crate::membership::member::{Member, MemberInfo};

    fn node(i: u8) -> UniqueAddress {
        UniqueAddress::new(
            NodeAddress::new("t", std::net::IpAddr::from([10, 0, 0, i]), 2552),
            u64::from(i),
        )
    }

    /// Node 1's view, node 2 a fellow member.
    fn view(phase: ViewPhase) -> ClusterView {
        let info = MemberInfo {
            roles: Default::default(),
            app_version: "1".to_owned(),
        };
        let mut gossip = Gossip::default();
        for n in [node(1), node(2)] {
            gossip.put(Member::joining(n, info.clone()));
        }
        ClusterView {
            self_node: node(1),
            phase,
            gossip,
        }
    }

    fn to_me(message: Message, uid: Option<u64>) -> Envelope {
        Envelope {
            from: node(2),
            to: node(1).address,
            to_uid: uid,
            message,
        }
    }

    fn decide_now(view: &ClusterView, env: Envelope) -> Action {
        decide(view, false, env)
    }

    #[test]
    fn a_member_answers_a_heartbeat_to_its_sender() {
        let action = decide_now(
            &view(ViewPhase::Member),
            to_me(Message::Heartbeat { seq: 9 }, Some(1)),
        );
        assert_eq!(
            action,
            Action::Answer(Envelope {
                from: node(1),
                to: node(2).address,
                to_uid: Some(2),
                message: Message::HeartbeatRsp { seq: 9 },
            })
        );
    }

    #[test]
    fn only_a_member_answers_and_only_for_this_incarnation() {
        for phase in [
            ViewPhase::Idle,
            ViewPhase::Joining,
            ViewPhase::Downed,
            ViewPhase::Left,
            ViewPhase::JoinFailed,
        ] {
            let action = decide_now(&view(phase), to_me(Message::Heartbeat { seq: 1 }, None));
            assert_eq!(action, Action::Drop("not_now"), "{phase:?}");
        }
        let earlier_life = to_me(Message::Heartbeat { seq: 1 }, Some(7));
        assert_eq!(
            decide_now(&view(ViewPhase::Member), earlier_life),
            Action::Drop("wrong_recipient")
        );
        let mut elsewhere = to_me(Message::Heartbeat { seq: 1 }, None);
        elsewhere.to = node(3).address;
        assert_eq!(
            decide_now(&view(ViewPhase::Member), elsewhere),
            Action::Drop("wrong_recipient")
        );
    }

    #[test]
    fn a_stuck_actor_answers_nothing() {
        let action = decide(
            &view(ViewPhase::Member),
            true,
            to_me(Message::Heartbeat { seq: 9 }, Some(1)),
        );
        assert_eq!(action, Action::Drop("not_now"));
    }

    #[test]
    fn only_answers_from_members_reach_the_actor() {
        let mut stranger = to_me(Message::HeartbeatRsp { seq: 3 }, Some(1));
        stranger.from = node(9);
        assert_eq!(
            decide_now(&view(ViewPhase::Member), stranger),
            Action::Drop("not_now")
        );
    }

    #[test]
    fn answers_go_to_the_actor_and_nothing_else_is_urgent() {
        let rsp = to_me(Message::HeartbeatRsp { seq: 3 }, Some(1));
        assert_eq!(
            decide_now(&view(ViewPhase::Member), rsp.clone()),
            Action::Forward(rsp)
        );
        let seen = to_me(Message::Seen { digest: 1 }, Some(1));
        assert_eq!(
            decide_now(&view(ViewPhase::Member), seen),
            Action::Drop("not_urgent")
        );
    }
}
