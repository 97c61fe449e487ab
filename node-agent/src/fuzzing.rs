//! Entry points for fuzzing every decoder that takes bytes from the network: the
//! cluster port (greeting, frames, messages, and what the membership core does with a
//! decoded message), `/bootstrap/seed-nodes` answers, Kubernetes pod lists and DNS SRV
//! answers. Each must return, whatever the bytes: no panic, no hang, no unbounded
//! allocation.
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` call these (see `fuzz/README.md`), and
//! the tests below run them on random and mutated input in every `cargo test`.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::api::SeedNodes;
use crate::base::address::{NodeAddress, UniqueAddress};
use crate::base::rng::Rng;
use crate::config::FailureDetectorConfig;
use crate::discovery::dns::srv_targets;
use crate::discovery::kubernetes::select_pods;
use crate::membership::core::{MembershipCore, MembershipSettings};
use crate::membership::member::MemberInfo;
use crate::membership::messages::Envelope;
use crate::membership::sbr::{Downing, Strategy};
use crate::transport::frame::{self, HEADER_LEN, NONCE_LEN, Opener};

/// The cluster name and address of the node that receives fuzzed cluster messages.
pub const SYSTEM: &str = "fuzz";
pub const SELF_ADDRESS: &str = "muster://fuzz@10.0.0.1:2552";

fn core() -> MembershipCore {
    let me = UniqueAddress::new(SELF_ADDRESS.parse().unwrap_or_else(|_| unreachable!()), 1);
    let settings = MembershipSettings {
        gossip_interval: Duration::from_secs(1),
        leader_actions_interval: Duration::from_secs(1),
        allow_weakly_up_members: Some(Duration::from_secs(7)),
        retry_unsuccessful_join_after: Duration::from_secs(2),
        seed_node_timeout: Duration::from_secs(5),
        failure_detector: FailureDetectorConfig::default(),
        downing: Some(Downing {
            strategy: Strategy::KeepMajority { role: None },
            stable_after: Duration::from_secs(1),
            unstable_limit: None,
        }),
        shutdown_after_unsuccessful_join: None,
    };
    let info = MemberInfo {
        roles: BTreeSet::new(),
        app_version: "1".into(),
    };
    MembershipCore::new(me, info, settings, Duration::ZERO)
}

/// Bytes from the cluster port: the greeting, a frame (header and payload, without a
/// key: unsigned frames are accepted then), and the payload as a message, which a
/// member and a joining node then receive and act on (as sent, and re-addressed to
/// them so that the fuzzer need not guess their address).
pub fn cluster_message(data: &[u8]) {
    if let Some(Ok(greeting)) = data
        .get(..frame::GREETING_LEN)
        .map(<[u8; frame::GREETING_LEN]>::try_from)
    {
        let _ = frame::parse_greeting(&greeting);
    }
    let mut payload = data;
    if let Some(header) = data.get(..HEADER_LEN) {
        let header: [u8; HEADER_LEN] = header.try_into().unwrap_or([0; HEADER_LEN]);
        if let Ok(len) = Opener::payload_len(&header) {
            let rest = &data[HEADER_LEN..];
            let body = &rest[..len.min(rest.len())];
            if Opener::new(None, [7; NONCE_LEN])
                .open(&header, body)
                .is_ok()
            {
                payload = body;
            }
        }
    }
    let Ok(env) = serde_json::from_slice::<Envelope>(payload) else {
        return;
    };
    let mut rng = Rng::seeded(1);
    let mut readdressed = env.clone();
    readdressed.to = SELF_ADDRESS
        .parse::<NodeAddress>()
        .unwrap_or_else(|_| unreachable!());
    readdressed.to_uid = None;
    let mut member = core();
    member.form(Duration::ZERO);
    let mut joining = core();
    let seed = env.from.address.clone();
    joining.join(Duration::ZERO, vec![seed]);
    for c in [&mut member, &mut joining] {
        let mut now = Duration::from_secs(1);
        for e in [env.clone(), readdressed.clone(), readdressed.clone()] {
            let _ = c.receive(now, &mut rng, e);
            now += Duration::from_millis(700);
            let _ = c.tick(now, &mut rng);
        }
        // Let timers run: leader actions, failure detection and downing on what came in.
        for _ in 0..10 {
            now += Duration::from_secs(1);
            let _ = c.tick(now, &mut rng);
        }
    }
}

/// A `/bootstrap/seed-nodes` answer from a contact point.
pub fn seed_nodes(data: &[u8]) {
    let _ = SeedNodes::parse(data, SYSTEM);
}

/// A pod list from the Kubernetes API (the body of `GET /api/v1/namespaces/N/pods`).
pub fn pod_list(data: &[u8]) {
    use k8s_openapi::api::core::v1::Pod;
    let Ok(list) = serde_json::from_slice::<kube::core::ObjectList<Pod>>(data) else {
        return;
    };
    let _ = select_pods(&list.items, Some("management"), Some("agent"));
    let _ = select_pods(&list.items, None, None);
}

/// A DNS response to the SRV query.
pub fn dns_answer(data: &[u8]) {
    let Ok(message) = hickory_resolver::proto::op::Message::from_vec(data) else {
        return;
    };
    let _ = srv_targets(&message.answers, &message.additionals);
}

#[cfg(test)]
mod tests;
