//! The ground floor: the values every other module shares — time, addresses and the
//! order on them, member status, secrets and injected randomness. Nothing here imports
//! from any other module of the crate (a test, `tests/layers.rs`, checks it).

pub mod address;
pub mod member;
pub mod rng;
pub mod secret;
pub mod time;

/// Why [`read_capped`] returned no bytes.
#[derive(Debug)]
pub enum ReadError {
    Io(std::io::Error),
    /// The file is longer than the limit.
    TooLarge,
}

/// The bytes of the file at `path`, if it holds at most `limit` (no more than
/// `limit + 1` bytes are read). Blocking: on the runtime, call it in `spawn_blocking`.
pub fn read_capped(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

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
