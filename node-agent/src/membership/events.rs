//! Cluster events for applications: what changed between two states of the cluster, the
//! current state told as events, and a bounded, numbered log that lets a subscriber
//! resume where it stopped (`Last-Event-ID`) or learn that it must start over.
//!
//! Pure except [`EventHub`], which shares the log between the membership task (the only
//! writer, which sees every state) and the subscribers.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::gossip::Gossip;
use super::member::Member;
use crate::api::ClusterEvent;
use crate::base::address::{NodeAddress, UniqueAddress};
use crate::base::member::MemberStatus;

fn ids(node: &UniqueAddress) -> (NodeAddress, u64) {
    (node.address.clone(), node.uid)
}

/// The event that announces `m` in its current status (none for Joining, which
/// `MemberJoined` covers, and Removed, which is not kept in a gossip).
fn status_event(m: &Member) -> Option<ClusterEvent> {
    let (member, uid) = ids(&m.node);
    Some(match m.status {
        MemberStatus::Joining | MemberStatus::Removed => return None,
        MemberStatus::WeaklyUp => ClusterEvent::MemberWeaklyUp { member, uid },
        MemberStatus::Up => ClusterEvent::MemberUp {
            member,
            uid,
            up_number: m.up_number,
        },
        MemberStatus::PreparingForShutdown => {
            ClusterEvent::MemberPreparingForShutdown { member, uid }
        }
        MemberStatus::ReadyForShutdown => ClusterEvent::MemberReadyForShutdown { member, uid },
        MemberStatus::Leaving => ClusterEvent::MemberLeft { member, uid },
        MemberStatus::Exiting => ClusterEvent::MemberExited { member, uid },
        MemberStatus::Down => ClusterEvent::MemberDowned { member, uid },
    })
}

fn joined(m: &Member) -> ClusterEvent {
    let (member, uid) = ids(&m.node);
    ClusterEvent::MemberJoined {
        member,
        uid,
        roles: m.roles.iter().cloned().collect(),
    }
}

fn leader_of(g: &Gossip) -> Option<NodeAddress> {
    g.leader().map(|l| l.address.clone())
}

fn role_leader_of(g: &Gossip, role: &str) -> Option<NodeAddress> {
    g.role_leader(role).map(|l| l.address.clone())
}

/// The current state told as events, as a new subscriber first receives it: members,
/// reachability, role leaders, the leader (a client may take `LeaderChanged` as the
/// snapshot's end), and once this agent's membership ended `ClusterShuttingDown`, the
/// last event of every stream.
pub fn snapshot(g: &Gossip, shutting_down: bool) -> Vec<ClusterEvent> {
    let mut out = Vec::new();
    for m in g.members() {
        out.push(joined(m));
        out.extend(status_event(m));
    }
    for node in g.reachability().unreachable_members() {
        if g.has_member(&node) {
            let (member, uid) = ids(&node);
            out.push(ClusterEvent::UnreachableMember { member, uid });
        }
    }
    for role in g.roles() {
        out.push(ClusterEvent::RoleLeaderChanged {
            role: role.to_owned(),
            leader: role_leader_of(g, role),
        });
    }
    out.push(ClusterEvent::LeaderChanged {
        leader: leader_of(g),
    });
    if shutting_down {
        out.push(ClusterEvent::ClusterShuttingDown);
    }
    out
}

/// What happened between `before` and `after`, in a fixed order: members (joins,
/// status changes, removals), then reachability, then role leaders, then the leader.
pub fn diff(before: &Gossip, after: &Gossip) -> Vec<ClusterEvent> {
    let mut out = Vec::new();
    for m in after.members() {
        match before.member(&m.node) {
            None => {
                out.push(joined(m));
                out.extend(status_event(m));
            }
            Some(old) if old.status != m.status => {
                // Exiting is only reached through Leaving: a subscriber whose state
                // jumped over it still hears MemberLeft first.
                if m.status == MemberStatus::Exiting && old.status != MemberStatus::Leaving {
                    let (member, uid) = ids(&m.node);
                    out.push(ClusterEvent::MemberLeft { member, uid });
                }
                out.extend(status_event(m));
            }
            Some(_) => {}
        }
    }
    for old in before.members().filter(|m| !after.has_member(&m.node)) {
        let (member, uid) = ids(&old.node);
        out.push(ClusterEvent::MemberRemoved {
            member,
            uid,
            previous_status: old.status,
        });
    }
    let was: BTreeSet<UniqueAddress> = before.reachability().unreachable_members();
    let is: BTreeSet<UniqueAddress> = after.reachability().unreachable_members();
    for node in is.difference(&was).filter(|n| after.has_member(n)) {
        let (member, uid) = ids(node);
        out.push(ClusterEvent::UnreachableMember { member, uid });
    }
    for node in was.difference(&is).filter(|n| after.has_member(n)) {
        let (member, uid) = ids(node);
        out.push(ClusterEvent::ReachableMember { member, uid });
    }
    for role in before.roles().union(&after.roles()) {
        let leader = role_leader_of(after, role);
        if leader != role_leader_of(before, role) {
            out.push(ClusterEvent::RoleLeaderChanged {
                role: (*role).to_owned(),
                leader,
            });
        }
    }
    let leader = leader_of(after);
    if leader != leader_of(before) {
        out.push(ClusterEvent::LeaderChanged { leader });
    }
    out
}

/// The last `capacity` events with increasing ids (the first is 1).
#[derive(Debug, Clone)]
pub struct EventLog {
    events: VecDeque<(u64, ClusterEvent)>,
    last_id: u64,
    capacity: usize,
}

/// A resume point older than the log holds: the subscriber must start over from a
/// snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    pub oldest_kept: u64,
}

impl EventLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            events: VecDeque::new(),
            last_id: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, events: impl IntoIterator<Item = ClusterEvent>) {
        for e in events {
            self.last_id += 1;
            if self.events.len() == self.capacity {
                self.events.pop_front();
            }
            self.events.push_back((self.last_id, e));
        }
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// The events after `id`; an error when some of them are no longer kept.
    pub fn since(&self, id: u64) -> Result<Vec<(u64, ClusterEvent)>, TooOld> {
        let oldest_kept = self.events.front().map_or(self.last_id + 1, |(i, _)| *i);
        if id > self.last_id || id + 1 < oldest_kept {
            return Err(TooOld { oldest_kept });
        }
        Ok(self
            .events
            .iter()
            .filter(|(i, _)| *i > id)
            .cloned()
            .collect())
    }
}

/// The log and the latest state, shared between the membership task and subscribers.
#[derive(Debug)]
pub struct EventHub {
    /// The log, the latest state, and whether this agent's membership ended.
    inner: Mutex<(EventLog, Gossip, bool)>,
    last_id: watch::Sender<u64>,
}

/// Where a subscriber starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Events to send first, each with its id (a snapshot carries the id it is
    /// current at).
    pub events: Vec<(u64, ClusterEvent)>,
    /// The asked resume point was too old: the events are a fresh snapshot.
    pub resynced: bool,
    /// The resume point is at or after this agent's `ClusterShuttingDown`: the
    /// subscriber saw the end already (the events hold it once more).
    pub after_the_end: bool,
}

impl EventHub {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new((EventLog::new(capacity), Gossip::default(), false)),
            last_id: watch::channel(0).0,
        })
    }

    /// Records the change to `after` (called by the membership task on every change).
    pub fn publish(&self, after: &Gossip) {
        let last = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let (log, state, _) = &mut *inner;
            let events = diff(state, after);
            if events.is_empty() && state == after {
                return;
            }
            log.push(events);
            *state = after.clone();
            log.last_id()
        };
        self.last_id.send_replace(last);
    }

    /// Records that this agent's membership ended (left, downed, or joining failed):
    /// one `ClusterShuttingDown`, however often it is called.
    pub fn shutting_down(&self) {
        let last = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let (log, _, shutting_down) = &mut *inner;
            if *shutting_down {
                return;
            }
            *shutting_down = true;
            log.push([ClusterEvent::ClusterShuttingDown]);
            log.last_id()
        };
        self.last_id.send_replace(last);
    }

    /// Where a subscriber resuming after `last_seen` (or new, with `None`) starts.
    pub fn start(&self, last_seen: Option<u64>) -> Start {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (log, state, shutting_down) = &*inner;
        let snapshot = || {
            snapshot(state, *shutting_down)
                .into_iter()
                .map(|e| (log.last_id(), e))
                .collect()
        };
        match last_seen.map(|id| log.since(id)) {
            Some(Ok(mut events)) => {
                // Resumed after the end (the client saw it; the agent still runs, e.g.
                // for its handover): the stream ends again, with the end.
                let after_the_end = *shutting_down
                    && !events
                        .iter()
                        .any(|(_, e)| *e == ClusterEvent::ClusterShuttingDown);
                if after_the_end {
                    events.push((log.last_id(), ClusterEvent::ClusterShuttingDown));
                }
                Start {
                    events,
                    resynced: false,
                    after_the_end,
                }
            }
            Some(Err(_)) => Start {
                events: snapshot(),
                resynced: true,
                after_the_end: false,
            },
            None => Start {
                events: snapshot(),
                resynced: false,
                after_the_end: false,
            },
        }
    }

    /// The events after `id`, or `Err` when the subscriber fell too far behind.
    pub fn since(&self, id: u64) -> Result<Vec<(u64, ClusterEvent)>, TooOld> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.since(id)
    }

    /// A subscriber that resumes after `last_seen` (or starts with a snapshot).
    pub fn subscribe(self: &Arc<Self>, last_seen: Option<u64>) -> Subscription {
        let mut changes = self.last_id.subscribe();
        changes.mark_unchanged();
        let start = self.start(last_seen);
        let position = match start.events.last() {
            Some((id, _)) => *id,
            None => last_seen.unwrap_or(*changes.borrow()),
        };
        let snapshot = start.resynced || last_seen.is_none();
        Subscription {
            hub: self.clone(),
            changes,
            position,
            snapshot_left: if snapshot { start.events.len() } else { 0 },
            pending: start.events.into(),
            resynced: start.resynced,
            after_the_end: start.after_the_end,
        }
    }
}

/// One subscriber's place in the event log (`Agent::subscribe`, `GET /cluster/events`).
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<EventHub>,
    changes: watch::Receiver<u64>,
    position: u64,
    pending: VecDeque<(u64, ClusterEvent)>,
    /// Events of the starting snapshot not yet returned.
    snapshot_left: usize,
    /// The resume point asked for was too old: the first events are a snapshot.
    pub resynced: bool,
    /// Resumed after this agent's `ClusterShuttingDown` (see [`Start::after_the_end`]).
    pub after_the_end: bool,
}

impl Subscription {
    /// Whether the event [`next`](Self::next) returned last is part of the starting
    /// snapshot and not its last one. Every snapshot event carries the id the snapshot
    /// is current at, so a subscriber that resumes from it before the snapshot's end
    /// would miss the rest of it: such an id is not a resume point (the SSE stream
    /// sends the id only with the snapshot's last event).
    pub fn inside_snapshot(&self) -> bool {
        self.snapshot_left > 0
    }

    /// The next event with its id; `Err` when this subscriber fell so far behind that
    /// events were dropped (subscribe again for a snapshot); `None` when the agent
    /// stopped.
    pub async fn next(&mut self) -> Option<Result<(u64, ClusterEvent), TooOld>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                self.snapshot_left = self.snapshot_left.saturating_sub(1);
                return Some(Ok(e));
            }
            if self.changes.changed().await.is_err() {
                return None;
            }
            match self.hub.since(self.position) {
                Ok(events) => {
                    if let Some((id, _)) = events.last() {
                        self.position = *id;
                    }
                    self.pending.extend(events);
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests;
