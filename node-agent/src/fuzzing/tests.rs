//! The fuzz entry points on the seed corpus (which must stay valid input: a seed that
//! no longer decodes fails here), on mutations of it and on random bytes.

use proptest::prelude::*;

use super::*;

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 4] = [
    ("cluster_message", cluster_message),
    ("seed_nodes", seed_nodes),
    ("pod_list", pod_list),
    ("dns_answer", dns_answer),
];

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|f| {
            let path = f.expect("a corpus entry").path();
            let bytes = std::fs::read(&path).expect("a seed");
            (path.display().to_string(), bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// The frame's payload, when `data` is a frame (unsigned, as the fuzz target reads it).
fn unframed(data: &[u8]) -> &[u8] {
    let Some(header) = data.get(..HEADER_LEN) else {
        return data;
    };
    let header: [u8; HEADER_LEN] = header.try_into().expect("a header");
    match Opener::payload_len(&header) {
        Ok(len) if data.len() == HEADER_LEN + len => {
            let body = &data[HEADER_LEN..];
            match Opener::new(None, [7; NONCE_LEN]).open(&header, body) {
                Ok(()) => body,
                Err(_) => data,
            }
        }
        _ => data,
    }
}

#[test]
fn every_seed_is_valid_input_of_its_decoder() {
    for (name, bytes) in seeds("cluster_message") {
        let env: Envelope =
            serde_json::from_slice(unframed(&bytes)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(env.to.to_string(), SELF_ADDRESS, "{name}");
    }
    for (name, bytes) in seeds("seed_nodes") {
        SeedNodes::parse(&bytes, SYSTEM).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, bytes) in seeds("pod_list") {
        let list: kube::core::ObjectList<k8s_openapi::api::core::v1::Pod> =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let found = select_pods(&list.items, Some("management"), Some("agent"));
        assert!(!found.targets.is_empty(), "{name}: {found:?}");
        assert!(!found.skipped.is_empty(), "{name}: {found:?}");
    }
    for (name, bytes) in seeds("dns_answer") {
        let m = hickory_resolver::proto::op::Message::from_vec(&bytes)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let srv = srv_targets(&m.answers, &m.additionals);
        assert!(
            srv.iter().any(|t| t.ips.is_some()),
            "{name}: an SRV target with its address: {srv:?}"
        );
    }
    for (target, run) in TARGETS {
        for (_, bytes) in seeds(target) {
            run(&bytes);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_are_survived(target in 0..TARGETS.len(), data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        (TARGETS[target].1)(&data);
    }

    #[test]
    fn mutated_seeds_are_survived(
        target in 0..TARGETS.len(),
        pick in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let (name, run) = TARGETS[target];
        let seeds = seeds(name);
        let mut data = seeds[pick.index(seeds.len())].1.clone();
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        if let Some(cut) = cut {
            data.truncate(cut.index(data.len() + 1));
        }
        run(&data);
    }
}
