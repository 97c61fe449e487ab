//! What members say to each other on the cluster port (carried by [`crate::transport`]).

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::gossip::Gossip;
use super::member::MemberInfo;
use crate::base::address::{NodeAddress, UniqueAddress};
use crate::transport::Wire;

/// One message with its sender and recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub from: UniqueAddress,
    pub to: NodeAddress,
    /// The recipient's incarnation, when known; a restarted node ignores messages meant
    /// for its previous life.
    pub to_uid: Option<u64>,
    pub message: Message,
}

/// On the wire, a JSON object with the variant's name in `type` (`{"type": "seen",
/// "digest": 7}`). Read by a hand-written [`Deserialize`]: serde's derived one for this
/// shape buffers the whole message in a generic tree before reading it again, and that
/// doubled the cost of every state message a node receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Message {
    /// A node asks a member to let it in.
    Join { info: MemberInfo },
    /// The member's answer: the cluster state, which contains the joiner.
    Welcome { gossip: Gossip },
    /// Cluster state, pushed on change and periodically.
    Gossip { gossip: Gossip },
    /// "I have seen the state whose version has this digest" ([`Gossip::digest`]): a
    /// few bytes instead of the whole state, sent to the leader (which needs everyone's
    /// mark for convergence) when a member first sees a version.
    Seen { digest: u64 },
    /// "My state's version has this digest": the periodic gossip to a member that has
    /// seen our version already, a few bytes instead of the whole state. A member whose
    /// version differs answers with its whole state.
    Status { digest: u64 },
    /// Failure detection: a monitoring member asks "are you there?".
    Heartbeat { seq: u64 },
    /// The monitored member's answer.
    HeartbeatRsp { seq: u64 },
}

impl Message {
    /// Short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Join { .. } => "join",
            Self::Welcome { .. } => "welcome",
            Self::Gossip { .. } => "gossip",
            Self::Seen { .. } => "seen",
            Self::Status { .. } => "status",
            Self::Heartbeat { .. } => "heartbeat",
            Self::HeartbeatRsp { .. } => "heartbeat_rsp",
        }
    }
}

/// The names `type` can hold.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
enum Kind {
    Join,
    Welcome,
    Gossip,
    Seen,
    Status,
    Heartbeat,
    HeartbeatRsp,
}

/// The fields any message can have; others are ignored, as the derived reader did. (A
/// field of another kind of message is read, so it must be well-formed: the derived
/// reader ignored it.)
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum Field {
    Type,
    Info,
    Gossip,
    Digest,
    Seq,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(MessageVisitor)
    }
}

struct MessageVisitor;

/// Stores a field's value, refusing a second one.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    name: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(map.next_value()?);
    Ok(())
}

impl<'de> Visitor<'de> for MessageVisitor {
    type Value = Message;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a cluster message (an object with a `type`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message, A::Error> {
        let mut kind: Option<Kind> = None;
        let mut info: Option<MemberInfo> = None;
        let mut gossip: Option<Gossip> = None;
        let mut digest: Option<u64> = None;
        let mut seq: Option<u64> = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Type => once(&mut map, &mut kind, "type")?,
                Field::Info => once(&mut map, &mut info, "info")?,
                Field::Gossip => once(&mut map, &mut gossip, "gossip")?,
                Field::Digest => once(&mut map, &mut digest, "digest")?,
                Field::Seq => once(&mut map, &mut seq, "seq")?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let missing = de::Error::missing_field;
        let kind = kind.ok_or_else(|| missing("type"))?;
        let mut info = || info.take().ok_or_else(|| missing("info"));
        let mut gossip = || gossip.take().ok_or_else(|| missing("gossip"));
        let digest = || digest.ok_or_else(|| missing("digest"));
        let seq = || seq.ok_or_else(|| missing("seq"));
        Ok(match kind {
            Kind::Join => Message::Join { info: info()? },
            Kind::Welcome => Message::Welcome { gossip: gossip()? },
            Kind::Gossip => Message::Gossip { gossip: gossip()? },
            Kind::Seen => Message::Seen { digest: digest()? },
            Kind::Status => Message::Status { digest: digest()? },
            Kind::Heartbeat => Message::Heartbeat { seq: seq()? },
            Kind::HeartbeatRsp => Message::HeartbeatRsp { seq: seq()? },
        })
    }
}

impl Wire for Envelope {
    fn kind(&self) -> &'static str {
        self.message.kind()
    }

    fn urgent(&self) -> bool {
        matches!(
            self.message,
            Message::Heartbeat { .. } | Message::HeartbeatRsp { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// The reader serde derives for this shape, which the hand-written one replaced:
    /// both must accept and refuse the same input, and read the same message.
    #[derive(Debug, PartialEq, Deserialize)]
    #[serde(tag = "type", rename_all = "camelCase")]
    enum Derived {
        Join { info: MemberInfo },
        Welcome { gossip: Gossip },
        Gossip { gossip: Gossip },
        Seen { digest: u64 },
        Status { digest: u64 },
        Heartbeat { seq: u64 },
        HeartbeatRsp { seq: u64 },
    }

    impl From<Derived> for Message {
        fn from(d: Derived) -> Self {
            match d {
                Derived::Join { info } => Self::Join { info },
                Derived::Welcome { gossip } => Self::Welcome { gossip },
                Derived::Gossip { gossip } => Self::Gossip { gossip },
                Derived::Seen { digest } => Self::Seen { digest },
                Derived::Status { digest } => Self::Status { digest },
                Derived::Heartbeat { seq } => Self::Heartbeat { seq },
                Derived::HeartbeatRsp { seq } => Self::HeartbeatRsp { seq },
            }
        }
    }

    fn values() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!("join")),
            Just(json!("welcome")),
            Just(json!("gossip")),
            Just(json!("seen")),
            Just(json!("status")),
            Just(json!("heartbeat")),
            Just(json!("heartbeatRsp")),
            Just(json!("HeartbeatRsp")),
            Just(json!(7)),
            Just(json!(-1)),
            Just(json!(null)),
            Just(json!({"roles": ["a"], "appVersion": "1"})),
            Just(serde_json::to_value(Gossip::default()).expect("json")),
            Just(json!([1, 2])),
        ]
    }

    fn keys() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("type"),
            Just("info"),
            Just("gossip"),
            Just("digest"),
            Just("seq"),
            Just("extra"),
        ]
    }

    proptest! {
        #[test]
        fn reads_what_the_derived_reader_read(
            fields in proptest::collection::vec((keys(), values()), 0..6),
        ) {
            // Written by hand so that a key can repeat, as on a hostile wire.
            let body: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", json!(k)))
                .collect();
            let text = format!("{{{}}}", body.join(","));
            let ours = serde_json::from_str::<Message>(&text);
            let derived = serde_json::from_str::<Derived>(&text);
            match (ours, derived) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, Message::from(b), "{}", text),
                (Err(_), Err(_)) => {}
                // Stricter in one way only: a field of another kind of message must be
                // well-formed too (no agent sends one).
                (Err(_), Ok(b)) => {
                    let own = match Message::from(b) {
                        Message::Join { .. } => "info",
                        Message::Welcome { .. } | Message::Gossip { .. } => "gossip",
                        Message::Seen { .. } | Message::Status { .. } => "digest",
                        Message::Heartbeat { .. } | Message::HeartbeatRsp { .. } => "seq",
                    };
                    prop_assert!(
                        fields.iter().any(|(k, _)| !["type", "extra", own].contains(k)),
                        "{}: refused, but the derived reader read it",
                        text
                    );
                }
                (Ok(a), Err(e)) => prop_assert!(false, "{text}: ours {a:?}, derived {e}"),
            }
        }
    }

    #[test]
    fn every_message_round_trips_in_any_field_order() {
        let info = MemberInfo {
            roles: ["backend".to_owned()].into(),
            app_version: "1.2".to_owned(),
        };
        for m in [
            Message::Join { info },
            Message::Welcome {
                gossip: Gossip::default(),
            },
            Message::Gossip {
                gossip: Gossip::default(),
            },
            Message::Seen { digest: u64::MAX },
            Message::Status { digest: 1 },
            Message::Heartbeat { seq: 2 },
            Message::HeartbeatRsp { seq: 3 },
        ] {
            let text = serde_json::to_string(&m).expect("json");
            assert!(text.starts_with(r#"{"type":"#), "{text}");
            assert_eq!(serde_json::from_str::<Message>(&text).expect(&text), m);
            // The type last, and a field this version does not know.
            let Value::Object(mut fields) = serde_json::to_value(&m).expect("json") else {
                panic!("{text}: not an object")
            };
            let kind = fields.remove("type").expect("a type");
            fields.insert("future".to_owned(), json!({"x": 1}));
            fields.insert("type".to_owned(), kind);
            let moved = serde_json::to_string(&fields).expect("json");
            assert_eq!(serde_json::from_str::<Message>(&moved).expect(&moved), m);
        }
    }
}
