//! The ground floor: the values every other module shares — time, addresses and the
//! order on them, member status, secrets and injected randomness. Nothing here imports
//! from any other module of the crate (a test, `tests/layers.rs`, checks it).

pub mod address;
pub mod member;
pub mod rng;
pub mod secret;
pub mod time;

/// `bytes` as lowercase hex: keys, tokens, nonces, signatures and digests.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
