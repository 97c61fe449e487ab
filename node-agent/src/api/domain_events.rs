//! `GET /cluster/domain-events`: the cluster events of `/cluster/events` in the shapes
//! of Akka Management's route of that name (a member as `{dataCenter, roles, status,
//! uniqueAddress: {address, longUid}}`, the leader as `address`), selected by Akka's
//! event types and their parents (`?type=MemberUp&type=LeaderChanged`).
//!
//! A [`ClusterEvent`] names a member by address and uid; Akka's payload also carries the
//! member's roles and status. [`Translator`] keeps them per member from the events it
//! has seen (a member's `MemberJoined` carries its roles, each status event its status),
//! starting from the members of the current state, so a stream resumed after
//! `Last-Event-ID`, which sees no `MemberJoined` of the members it knew, still tells
//! them whole.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ClusterEvent;
use crate::base::address::{NodeAddress, UniqueAddress};
use crate::base::member::MemberStatus;

/// Akka's event types this route can send, each with its parents (Akka's class
/// hierarchy): a `type` names one of these or a parent.
const TYPES: [(&str, &[&str]); 12] = [
    ("MemberJoined", &["MemberEvent"]),
    ("MemberWeaklyUp", &["MemberEvent"]),
    ("MemberUp", &["MemberEvent"]),
    ("MemberLeft", &["MemberEvent"]),
    ("MemberExited", &["MemberEvent"]),
    ("MemberDowned", &["MemberEvent"]),
    ("MemberRemoved", &["MemberEvent"]),
    ("UnreachableMember", &["ReachabilityEvent"]),
    ("ReachableMember", &["ReachabilityEvent"]),
    ("LeaderChanged", &[]),
    ("RoleLeaderChanged", &[]),
    ("ClusterShuttingDown", &[]),
];

/// Akka's types this agent never sends, accepted in a filter (it then selects nothing
/// of theirs): it has one data center, and Akka's route does not send the shutdown
/// statuses' events either.
const NEVER_SENT: [&str; 5] = [
    "DataCenterReachabilityEvent",
    "UnreachableDataCenter",
    "ReachableDataCenter",
    "MemberPreparingForShutdown",
    "MemberReadyForShutdown",
];

/// The most `type` values one request may name.
const MAX_TYPES: usize = 32;

/// Which event types a request asked for: all without a `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter(Option<Vec<&'static str>>);

impl Filter {
    /// From the request's query string: every `type=` value, each an Akka event type or
    /// parent (`ClusterDomainEvent`, `MemberEvent`, `ReachabilityEvent`); anything else
    /// is an error naming what is accepted.
    pub fn parse(query: Option<&str>) -> Result<Self, String> {
        let mut wanted: Vec<&'static str> = Vec::new();
        let (mut any, mut all) = (false, false);
        for (key, value) in query
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
        {
            if key != "type" {
                continue;
            }
            any = true;
            if wanted.len() >= MAX_TYPES {
                return Err(format!("at most {MAX_TYPES} `type` values"));
            }
            let value = percent_decoded(value);
            let value = value.trim();
            if value == "ClusterDomainEvent" {
                all = true;
                continue;
            }
            let selected: Vec<&'static str> = TYPES
                .iter()
                .filter(|(name, parents)| *name == value || parents.contains(&value))
                .map(|(name, _)| *name)
                .collect();
            if selected.is_empty() && !NEVER_SENT.contains(&value) {
                let known: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "unknown event type `{}`; use ClusterDomainEvent, MemberEvent, ReachabilityEvent or one of {}",
                    value.chars().take(64).collect::<String>(),
                    known.join(", ")
                ));
            }
            wanted.extend(selected);
        }
        Ok(Self((any && !all).then_some(wanted)))
    }

    fn selects(&self, name: &str) -> bool {
        self.0.as_ref().is_none_or(|w| w.contains(&name))
    }
}

/// `text` with its `%XX` escapes decoded (as a query value arrives from a client that
/// encodes it); an escape that is not one is kept as it is.
pub(crate) fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(
                    u8::try_from(hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)).unwrap_or(b'?'),
                );
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `uniqueAddress` of an Akka member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct AkkaUniqueAddress {
    address: NodeAddress,
    /// The uid's 64 bits read as a signed number, as Akka's `Long` uid.
    long_uid: i64,
}

/// A member as Akka's domain events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct AkkaMember {
    data_center: &'static str,
    roles: Vec<String>,
    status: MemberStatus,
    unique_address: AkkaUniqueAddress,
}

/// One event's payload, as Akka's route writes it (`type` beside the fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type")]
enum AkkaEvent {
    MemberJoined {
        member: AkkaMember,
    },
    MemberWeaklyUp {
        member: AkkaMember,
    },
    MemberUp {
        member: AkkaMember,
    },
    MemberLeft {
        member: AkkaMember,
    },
    MemberExited {
        member: AkkaMember,
    },
    MemberDowned {
        member: AkkaMember,
    },
    MemberRemoved {
        member: AkkaMember,
        #[serde(rename = "previousStatus")]
        previous_status: MemberStatus,
    },
    UnreachableMember {
        member: AkkaMember,
    },
    ReachableMember {
        member: AkkaMember,
    },
    LeaderChanged {
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<NodeAddress>,
    },
    RoleLeaderChanged {
        role: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<NodeAddress>,
    },
    ClusterShuttingDown,
}

/// Translates one stream's events, keeping each member's roles and status.
#[derive(Debug, Clone, Default)]
pub struct Translator {
    known: BTreeMap<UniqueAddress, (Vec<String>, MemberStatus)>,
}

impl Translator {
    /// Knowing the members of the current state: (member, roles, status).
    pub fn new(
        members: impl IntoIterator<Item = (UniqueAddress, Vec<String>, MemberStatus)>,
    ) -> Self {
        Self {
            known: members
                .into_iter()
                .map(|(node, roles, status)| (node, (roles, status)))
                .collect(),
        }
    }

    /// The SSE event name and JSON data of `event` in Akka's shape, if `filter` selects
    /// it. Every event is seen (selected or not): it keeps the members current.
    pub fn translate(
        &mut self,
        event: &ClusterEvent,
        filter: &Filter,
    ) -> Option<(&'static str, String)> {
        let name = event.name();
        let akka = self.akka(event)?;
        if !filter.selects(name) {
            return None;
        }
        serde_json::to_string(&akka).ok().map(|data| (name, data))
    }

    /// `event` in Akka's shape; `None` for those Akka's route does not send (the
    /// full-shutdown statuses'), whose status is kept for the member's later events.
    fn akka(&mut self, event: &ClusterEvent) -> Option<AkkaEvent> {
        use ClusterEvent as E;
        use MemberStatus as S;
        Some(match event {
            E::MemberPreparingForShutdown { member, uid } => {
                self.told(member, *uid, Some(S::PreparingForShutdown));
                return None;
            }
            E::MemberReadyForShutdown { member, uid } => {
                self.told(member, *uid, Some(S::ReadyForShutdown));
                return None;
            }
            E::MemberJoined { member, uid, roles } => {
                self.known.insert(
                    UniqueAddress::new(member.clone(), *uid),
                    (roles.clone(), S::Joining),
                );
                AkkaEvent::MemberJoined {
                    member: self.told(member, *uid, None),
                }
            }
            E::MemberWeaklyUp { member, uid } => AkkaEvent::MemberWeaklyUp {
                member: self.told(member, *uid, Some(S::WeaklyUp)),
            },
            E::MemberUp { member, uid, .. } => AkkaEvent::MemberUp {
                member: self.told(member, *uid, Some(S::Up)),
            },
            E::MemberLeft { member, uid } => AkkaEvent::MemberLeft {
                member: self.told(member, *uid, Some(S::Leaving)),
            },
            E::MemberExited { member, uid } => AkkaEvent::MemberExited {
                member: self.told(member, *uid, Some(S::Exiting)),
            },
            E::MemberDowned { member, uid } => AkkaEvent::MemberDowned {
                member: self.told(member, *uid, Some(S::Down)),
            },
            E::MemberRemoved {
                member,
                uid,
                previous_status,
            } => {
                let told = self.told(member, *uid, Some(S::Removed));
                self.known.remove(&UniqueAddress::new(member.clone(), *uid));
                AkkaEvent::MemberRemoved {
                    member: told,
                    previous_status: *previous_status,
                }
            }
            E::UnreachableMember { member, uid } => AkkaEvent::UnreachableMember {
                member: self.told(member, *uid, None),
            },
            E::ReachableMember { member, uid } => AkkaEvent::ReachableMember {
                member: self.told(member, *uid, None),
            },
            E::LeaderChanged { leader } => AkkaEvent::LeaderChanged {
                address: leader.clone(),
            },
            E::RoleLeaderChanged { role, leader } => AkkaEvent::RoleLeaderChanged {
                role: role.clone(),
                address: leader.clone(),
            },
            E::ClusterShuttingDown => AkkaEvent::ClusterShuttingDown,
        })
    }

    /// Member `address`/`uid` as known, its status now `status` if given (a member
    /// never seen joining is told with no roles).
    fn told(
        &mut self,
        address: &NodeAddress,
        uid: u64,
        status: Option<MemberStatus>,
    ) -> AkkaMember {
        let (roles, known_status) = self
            .known
            .entry(UniqueAddress::new(address.clone(), uid))
            .or_insert_with(|| (Vec::new(), MemberStatus::Joining));
        if let Some(s) = status {
            *known_status = s;
        }
        AkkaMember {
            data_center: "default",
            roles: roles.clone(),
            status: *known_status,
            unique_address: AkkaUniqueAddress {
                address: address.clone(),
                long_uid: uid.cast_signed(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> NodeAddress {
        NodeAddress::new("shop", [10, 0, 0, i].into(), 2552)
    }

    #[test]
    fn events_are_told_in_akkas_shapes_with_roles_and_status() {
        let mut t = Translator::default();
        let all = Filter::parse(None).unwrap();
        let told = |t: &mut Translator, e: ClusterEvent| t.translate(&e, &all).expect("sent");
        let (name, data) = told(
            &mut t,
            ClusterEvent::MemberJoined {
                member: addr(1),
                uid: 7,
                roles: vec!["backend".into()],
            },
        );
        assert_eq!(name, "MemberJoined");
        assert_eq!(
            data,
            r#"{"type":"MemberJoined","member":{"dataCenter":"default","roles":["backend"],"status":"Joining","uniqueAddress":{"address":"muster://shop@10.0.0.1:2552","longUid":7}}}"#
        );
        let (_, data) = told(
            &mut t,
            ClusterEvent::MemberUp {
                member: addr(1),
                uid: 7,
                up_number: 1,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["member"]["status"], "Up");
        assert_eq!(
            v["member"]["roles"][0], "backend",
            "roles kept from the join"
        );
        // Reachability tells the status the member has.
        let (_, data) = told(
            &mut t,
            ClusterEvent::UnreachableMember {
                member: addr(1),
                uid: 7,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["member"]["status"].as_str()),
            (Some("UnreachableMember"), Some("Up"))
        );
        let (_, data) = told(
            &mut t,
            ClusterEvent::MemberRemoved {
                member: addr(1),
                uid: 7,
                previous_status: MemberStatus::Exiting,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["member"]["status"], "Removed");
        assert_eq!(v["previousStatus"], "Exiting");
        let (_, data) = told(
            &mut t,
            ClusterEvent::LeaderChanged {
                leader: Some(addr(2)),
            },
        );
        assert_eq!(
            data,
            r#"{"type":"LeaderChanged","address":"muster://shop@10.0.0.2:2552"}"#
        );
        let (_, data) = told(&mut t, ClusterEvent::LeaderChanged { leader: None });
        assert_eq!(
            data, r#"{"type":"LeaderChanged"}"#,
            "no leader: no address, as Akka omits it"
        );
        let (name, data) = told(
            &mut t,
            ClusterEvent::RoleLeaderChanged {
                role: "backend".into(),
                leader: Some(addr(2)),
            },
        );
        assert_eq!(
            (name, data.as_str()),
            (
                "RoleLeaderChanged",
                r#"{"type":"RoleLeaderChanged","role":"backend","address":"muster://shop@10.0.0.2:2552"}"#
            )
        );
        let (_, data) = told(
            &mut t,
            ClusterEvent::RoleLeaderChanged {
                role: "backend".into(),
                leader: None,
            },
        );
        assert_eq!(data, r#"{"type":"RoleLeaderChanged","role":"backend"}"#);
        let (_, data) = told(&mut t, ClusterEvent::ClusterShuttingDown);
        assert_eq!(data, r#"{"type":"ClusterShuttingDown"}"#);
        // A uid above i64::MAX is Akka's negative Long, bit for bit.
        let (_, data) = told(
            &mut t,
            ClusterEvent::MemberJoined {
                member: addr(3),
                uid: u64::MAX,
                roles: vec![],
            },
        );
        assert!(data.contains(r#""longUid":-1"#), "{data}");
    }

    #[test]
    fn the_full_shutdown_statuses_are_not_sent_but_kept() {
        let node = UniqueAddress::new(addr(2), 9);
        let mut t = Translator::new([(node, vec![], MemberStatus::Up)]);
        let all = Filter::parse(None).unwrap();
        for e in [
            ClusterEvent::MemberPreparingForShutdown {
                member: addr(2),
                uid: 9,
            },
            ClusterEvent::MemberReadyForShutdown {
                member: addr(2),
                uid: 9,
            },
        ] {
            assert_eq!(t.translate(&e, &all), None, "Akka's route sends neither");
        }
        let (_, data) = t
            .translate(
                &ClusterEvent::UnreachableMember {
                    member: addr(2),
                    uid: 9,
                },
                &all,
            )
            .expect("sent");
        assert!(data.contains(r#""status":"ReadyForShutdown""#), "{data}");
    }

    #[test]
    fn a_resumed_stream_tells_members_it_knew_whole() {
        // Resumed after Last-Event-ID: no MemberJoined of a member already there.
        let node = UniqueAddress::new(addr(2), 9);
        let mut t = Translator::new([(node, vec!["frontend".to_owned()], MemberStatus::Up)]);
        let (_, data) = t
            .translate(
                &ClusterEvent::MemberLeft {
                    member: addr(2),
                    uid: 9,
                },
                &Filter::parse(None).unwrap(),
            )
            .expect("sent");
        let v: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(v["member"]["roles"][0], "frontend");
        assert_eq!(v["member"]["status"], "Leaving");
    }

    #[test]
    fn types_select_events_and_their_parents() {
        let f = Filter::parse(Some("type=MemberUp&type=LeaderChanged")).unwrap();
        assert!(f.selects("MemberUp") && f.selects("LeaderChanged"));
        assert!(!f.selects("MemberJoined") && !f.selects("UnreachableMember"));
        let f = Filter::parse(Some("type=MemberEvent")).unwrap();
        assert!(f.selects("MemberRemoved") && !f.selects("LeaderChanged"));
        let f = Filter::parse(Some("type=ReachabilityEvent")).unwrap();
        assert!(f.selects("ReachableMember") && !f.selects("MemberUp"));
        assert_eq!(
            Filter::parse(Some("type=ClusterDomainEvent")).unwrap(),
            Filter(None)
        );
        assert_eq!(Filter::parse(Some("other=1")).unwrap(), Filter(None));
        let f = Filter::parse(Some("type=RoleLeaderChanged")).unwrap();
        assert!(f.selects("RoleLeaderChanged") && !f.selects("LeaderChanged"));
        // Akka's types this agent never sends select nothing; unknown ones are refused.
        let f = Filter::parse(Some("type=ReachableDataCenter")).unwrap();
        assert!(!f.selects("MemberUp") && !f.selects("LeaderChanged"));
        let e = Filter::parse(Some("type=MemberUpp")).unwrap_err();
        assert!(
            e.contains("unknown event type `MemberUpp`") && e.contains("MemberEvent"),
            "{e}"
        );
        // Every value is checked, in whatever order; values may come %-encoded.
        assert!(Filter::parse(Some("type=ClusterDomainEvent&type=Bogus")).is_err());
        assert!(Filter::parse(Some("type=Bogus&type=ClusterDomainEvent")).is_err());
        let f = Filter::parse(Some("type=Member%55p")).unwrap();
        assert!(f.selects("MemberUp") && !f.selects("MemberLeft"));
        assert!(Filter::parse(Some("type=MemberReadyForShutdown")).is_ok());
        let many = vec!["type=MemberUp"; MAX_TYPES + 1].join("&");
        assert!(Filter::parse(Some(&many)).is_err());
        // Even so, every event keeps the members current.
        let mut t = Translator::default();
        let only_up = Filter::parse(Some("type=MemberUp")).unwrap();
        let join = ClusterEvent::MemberJoined {
            member: addr(4),
            uid: 1,
            roles: vec!["r".into()],
        };
        assert_eq!(t.translate(&join, &only_up), None);
        let (_, data) = t
            .translate(
                &ClusterEvent::MemberUp {
                    member: addr(4),
                    uid: 1,
                    up_number: 1,
                },
                &only_up,
            )
            .expect("sent");
        assert!(data.contains(r#""roles":["r"]"#), "{data}");
    }
}
