//! The wire format of the cluster port, and its authentication.
//!
//! A connection carries messages one way, from the connecting node to the listening
//! one. On accept, the listener sends a greeting: 8 bytes of protocol magic and a fresh
//! 16-byte random nonce. Then each frame is
//!
//! ```text
//! u32 big-endian payload length | 32-byte tag | payload (JSON Envelope)
//! ```
//!
//! With a cluster key the tag is HMAC-SHA256(key, magic ‖ nonce ‖ frame number ‖
//! payload), the frame number counting from 0 on the connection. A frame recorded on one
//! connection fails on any other (other nonce) and on its own (other number): replays
//! are rejected without any clock. Without a key the tag is all zeros and not checked.
//! A receiver with a key drops the connection at the first bad frame, since the
//! sequence is then broken.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::base::secret::ClusterKey;

pub const MAGIC: &[u8; 8] = b"MUSTER1\n";
pub const NONCE_LEN: usize = 16;
pub const GREETING_LEN: usize = MAGIC.len() + NONCE_LEN;
pub const TAG_LEN: usize = 32;
pub const HEADER_LEN: usize = 4 + TAG_LEN;
/// Largest payload accepted (a gossip of thousands of members fits easily).
pub const MAX_PAYLOAD: usize = 4 * 1024 * 1024;

/// Why a frame was refused; each is counted under its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit")]
    Oversized(usize),
    #[error("frame is not signed but a cluster key is configured")]
    Unsigned,
    #[error("frame signature does not verify (wrong key, tampered or replayed)")]
    BadSignature,
    #[error("the peer did not greet with the muster protocol")]
    BadGreeting,
    #[error("frames not yet authenticated already hold the agent's whole budget for them")]
    OverBudget,
}

impl FrameError {
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Oversized(_) => "oversized",
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::BadGreeting => "bad_greeting",
            Self::OverBudget => "over_budget",
        }
    }
}

pub fn greeting(nonce: &[u8; NONCE_LEN]) -> [u8; GREETING_LEN] {
    let mut g = [0u8; GREETING_LEN];
    g[..MAGIC.len()].copy_from_slice(MAGIC);
    g[MAGIC.len()..].copy_from_slice(nonce);
    g
}

pub fn parse_greeting(g: &[u8; GREETING_LEN]) -> Result<[u8; NONCE_LEN], FrameError> {
    if &g[..MAGIC.len()] != MAGIC {
        return Err(FrameError::BadGreeting);
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&g[MAGIC.len()..]);
    Ok(nonce)
}

fn tag(key: &[u8], nonce: &[u8; NONCE_LEN], seq: u64, payload: &[u8]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length; ClusterKey guarantees at least 16 bytes.
    #[allow(clippy::expect_used)]
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(MAGIC);
    mac.update(nonce);
    mac.update(&seq.to_be_bytes());
    mac.update(payload);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// The sending half of one connection.
#[derive(Debug)]
pub struct Sealer {
    key: Option<ClusterKey>,
    nonce: [u8; NONCE_LEN],
    seq: u64,
}

impl Sealer {
    pub fn new(key: Option<ClusterKey>, nonce: [u8; NONCE_LEN]) -> Self {
        Self { key, nonce, seq: 0 }
    }

    /// Header and payload of the next frame.
    pub fn seal(&mut self, payload: &[u8]) -> Vec<u8> {
        let tag = match &self.key {
            Some(k) => k.with_signing(|k| tag(k, &self.nonce, self.seq, payload)),
            None => [0u8; TAG_LEN],
        };
        self.seq += 1;
        let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(&tag);
        frame.extend_from_slice(payload);
        frame
    }
}

/// The receiving half of one connection.
#[derive(Debug)]
pub struct Opener {
    key: Option<ClusterKey>,
    nonce: [u8; NONCE_LEN],
    seq: u64,
}

impl Opener {
    pub fn new(key: Option<ClusterKey>, nonce: [u8; NONCE_LEN]) -> Self {
        Self { key, nonce, seq: 0 }
    }

    /// Checks a header's length before the payload is read.
    pub fn payload_len(header: &[u8; HEADER_LEN]) -> Result<usize, FrameError> {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::Oversized(len));
        }
        Ok(len)
    }

    /// Verifies the frame's tag; the payload may then be trusted to come from a key holder.
    pub fn open(&mut self, header: &[u8; HEADER_LEN], payload: &[u8]) -> Result<(), FrameError> {
        let seq = self.seq;
        self.seq += 1;
        let Some(key) = &self.key else { return Ok(()) };
        let got = &header[4..];
        if got.iter().all(|b| *b == 0) {
            return Err(FrameError::Unsigned);
        }
        // Each accepted key (two during a key rotation), the signing key first; each
        // comparison in constant time.
        let nonce = &self.nonce;
        key.any_accepts(|k| {
            <Hmac<Sha256> as KeyInit>::new_from_slice(k).is_ok_and(|mut mac| {
                mac.update(MAGIC);
                mac.update(nonce);
                mac.update(&seq.to_be_bytes());
                mac.update(payload);
                mac.verify_slice(got).is_ok()
            })
        })
        .then_some(())
        .ok_or(FrameError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Option<ClusterKey> {
        Some(ClusterKey::new(vec![b; 32]).unwrap())
    }

    fn split(frame: &[u8]) -> ([u8; HEADER_LEN], Vec<u8>) {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&frame[..HEADER_LEN]);
        (h, frame[HEADER_LEN..].to_vec())
    }

    #[test]
    fn signed_frames_verify_in_order() {
        let nonce = [7u8; NONCE_LEN];
        let mut s = Sealer::new(key(1), nonce);
        let mut o = Opener::new(key(1), nonce);
        for msg in [&b"one"[..], b"two", b""] {
            let (h, p) = split(&s.seal(msg));
            assert_eq!(Opener::payload_len(&h).unwrap(), msg.len());
            o.open(&h, &p).unwrap();
            assert_eq!(p, msg);
        }
    }

    #[test]
    fn replays_tampering_wrong_keys_and_unsigned_frames_fail() {
        let nonce = [7u8; NONCE_LEN];
        let mut s = Sealer::new(key(1), nonce);
        let first = s.seal(b"hello");
        // Replay on the same connection: the frame number moved on.
        let mut o = Opener::new(key(1), nonce);
        let (h, p) = split(&first);
        o.open(&h, &p).unwrap();
        assert_eq!(o.open(&h, &p), Err(FrameError::BadSignature));
        // Replay on another connection: another nonce.
        let mut o2 = Opener::new(key(1), [8u8; NONCE_LEN]);
        assert_eq!(o2.open(&h, &p), Err(FrameError::BadSignature));
        // Tampered payload.
        let mut o3 = Opener::new(key(1), nonce);
        assert_eq!(o3.open(&h, b"hellp"), Err(FrameError::BadSignature));
        // Wrong key.
        let mut o4 = Opener::new(key(2), nonce);
        assert_eq!(o4.open(&h, &p), Err(FrameError::BadSignature));
        // No key on the sender.
        let unsigned = Sealer::new(None, nonce).seal(b"hello");
        let (h, p) = split(&unsigned);
        assert_eq!(
            Opener::new(key(1), nonce).open(&h, &p),
            Err(FrameError::Unsigned)
        );
        // A receiver without a key accepts anything.
        assert_eq!(Opener::new(None, nonce).open(&h, &p), Ok(()));
    }

    #[test]
    fn a_key_ring_signs_with_its_first_key_and_accepts_all_while_rotating() {
        let (old, new) = (vec![1u8; 32], vec![2u8; 32]);
        let nonce = [7u8; NONCE_LEN];
        // The sender's ring changes between frames of one connection, as a key file
        // rotates; the receiver holds each ring of the three steps in turn.
        let sender = ClusterKey::new(old.clone()).unwrap();
        let receiver = ClusterKey::new(old.clone()).unwrap();
        let (mut s, mut o) = (
            Sealer::new(Some(sender.clone()), nonce),
            Opener::new(Some(receiver.clone()), nonce),
        );
        let send = |s: &mut Sealer, o: &mut Opener| {
            let (h, p) = split(&s.seal(b"frame"));
            o.open(&h, &p)
        };
        // 1. The receiver accepts the new key too: old-signed frames still pass.
        receiver.replace(vec![old.clone(), new.clone()]);
        assert_eq!(send(&mut s, &mut o), Ok(()));
        // 2. The sender signs with the new key; the receiver accepts it second.
        sender.replace(vec![new.clone(), old.clone()]);
        assert_eq!(send(&mut s, &mut o), Ok(()));
        // 3. The receiver drops the old key; new-signed frames pass.
        receiver.replace(vec![new.clone()]);
        assert_eq!(send(&mut s, &mut o), Ok(()));
        // A sender back on the old key alone is refused.
        sender.replace(vec![old.clone()]);
        assert_eq!(send(&mut s, &mut o), Err(FrameError::BadSignature));
        // Skipping step 1 (signing with a key the receiver does not know yet) fails.
        let (mut s2, mut o2) = (
            Sealer::new(Some(ClusterKey::new(new.clone()).unwrap()), nonce),
            Opener::new(Some(ClusterKey::new(old).unwrap()), nonce),
        );
        assert_eq!(send(&mut s2, &mut o2), Err(FrameError::BadSignature));
    }

    #[test]
    fn oversized_and_bad_greetings_are_refused() {
        let mut h = [0u8; HEADER_LEN];
        h[..4].copy_from_slice(&((MAX_PAYLOAD + 1) as u32).to_be_bytes());
        assert_eq!(
            Opener::payload_len(&h),
            Err(FrameError::Oversized(MAX_PAYLOAD + 1))
        );
        let mut g = greeting(&[1; NONCE_LEN]);
        assert_eq!(parse_greeting(&g).unwrap(), [1; NONCE_LEN]);
        g[0] = b'X';
        assert_eq!(parse_greeting(&g), Err(FrameError::BadGreeting));
    }
}
