//! Secrets: the cluster key that authenticates agent-to-agent frames and the bearer
//! token of the management API's mutating routes. Neither is ever printed: `Debug`
//! shows only the length.

use std::fmt;
use std::sync::{Arc, RwLock};

/// The bearer token of the mutating management routes.
#[derive(Clone, PartialEq, Eq)]
pub struct ManagementToken(Vec<u8>);

impl ManagementToken {
    pub const MIN_LEN: usize = 16;

    pub fn new(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < Self::MIN_LEN || !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the token must be at least {} visible ASCII characters (e.g. `head -c 32 /dev/urandom | base64`)",
                Self::MIN_LEN
            ));
        }
        Ok(Self(bytes.to_vec()))
    }

    /// The `Authorization` header value that presents this token.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", String::from_utf8_lossy(&self.0))
    }

    /// Compares in time independent of where the inputs differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() != self.0.len() {
            return false;
        }
        presented
            .iter()
            .zip(&self.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for ManagementToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManagementToken(<{} bytes>)", self.0.len())
    }
}

/// A secret written in a configuration (e.g. `management.token`): read and written
/// like a string, but `Debug` never shows it, and [`SecretText::redacted`] stands in for
/// it wherever settings are printed.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    pub const REDACTED: &str = "<redacted>";

    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What printed settings show instead.
    pub fn redacted() -> Self {
        Self(Self::REDACTED.to_owned())
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::REDACTED)
    }
}

/// The shared secrets that authenticate agent-to-agent messages: the key that signs and,
/// during a key rotation, the others still accepted. The key file holds one key per line,
/// the signing key first.
///
/// Clones share one ring: when the key file changes ([`replace`](Self::replace)), every
/// connection signs and checks with the new keys from its next frame. A rotation that
/// splits nothing takes three steps, each once every agent has the previous one: add the
/// new key on the second line (accepted everywhere), move it to the first (now it signs,
/// and the old one is still accepted), drop the old line.
#[derive(Clone)]
pub struct ClusterKey(Arc<RwLock<Vec<Vec<u8>>>>);

impl ClusterKey {
    pub const MIN_LEN: usize = 16;
    /// Keys in one file at most (a rotation needs two).
    pub const MAX_KEYS: usize = 4;

    /// One key.
    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        Self::check(&bytes)?;
        Ok(Self(Arc::new(RwLock::new(vec![bytes]))))
    }

    fn check(key: &[u8]) -> Result<(), String> {
        if key.len() < Self::MIN_LEN {
            return Err(format!(
                "the cluster key has {} bytes; use at least {} random bytes (e.g. `head -c 32 /dev/urandom | base64`)",
                key.len(),
                Self::MIN_LEN
            ));
        }
        Ok(())
    }

    /// The keys of a key file: one per line, the signing key first; blank lines and the
    /// whitespace around each key are ignored.
    pub fn parse_file(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let keys: Vec<Vec<u8>> = text
            .split(|b| *b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        if keys.is_empty() {
            return Err(format!(
                "the cluster key file is empty; put at least {} random bytes in it (e.g. `head -c 32 /dev/urandom | base64`)",
                Self::MIN_LEN
            ));
        }
        if keys.len() > Self::MAX_KEYS {
            return Err(format!(
                "the cluster key file has {} keys (one per line); at most {} are accepted (a rotation needs two)",
                keys.len(),
                Self::MAX_KEYS
            ));
        }
        for (i, k) in keys.iter().enumerate() {
            Self::check(k).map_err(|e| format!("line {} of the key file: {e}", i + 1))?;
        }
        Ok(keys)
    }

    /// The keys of a key file ([`parse_file`](Self::parse_file)).
    pub fn from_file(text: &[u8]) -> Result<Self, String> {
        Ok(Self(Arc::new(RwLock::new(Self::parse_file(text)?))))
    }

    fn keys(&self) -> std::sync::RwLockReadGuard<'_, Vec<Vec<u8>>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` with the signing key.
    pub fn with_signing<T>(&self, f: impl FnOnce(&[u8]) -> T) -> T {
        f(&self.keys()[0])
    }

    /// Whether `check` accepts any of the keys (the signing key tried first).
    pub fn any_accepts(&self, mut check: impl FnMut(&[u8]) -> bool) -> bool {
        self.keys().iter().any(|k| check(k))
    }

    /// Uses `keys` (from [`parse_file`](Self::parse_file)) from now on, whatever they
    /// are; true if they differ. Tests only: the agent changes keys by
    /// [`rotate`](Self::rotate), which refuses what would split the cluster.
    #[cfg(test)]
    pub(crate) fn replace(&self, keys: Vec<Vec<u8>>) -> bool {
        let mut now = self.0.write().unwrap_or_else(|p| p.into_inner());
        if *now == keys || keys.is_empty() {
            return false;
        }
        *now = keys;
        true
    }

    /// Uses `keys` from now on, but only if that cuts no one off: the new signing key
    /// must be one this ring accepts already (every step of a rotation keeps to that;
    /// an unrelated key, e.g. from a Secret made anew, would split the agents that have
    /// it from those that do not). `Ok(true)` if the keys changed.
    pub fn rotate(&self, keys: Vec<Vec<u8>>) -> Result<bool, String> {
        let mut now = self.0.write().unwrap_or_else(|p| p.into_inner());
        let Some(signing) = keys.first() else {
            return Ok(false);
        };
        if *now == keys {
            return Ok(false);
        }
        if !now.contains(signing) {
            return Err(format!(
                "its first key (id {}) is not one of the keys in use ({:?}): signing with it would cut this agent off from every member without it. Rotate in steps (add the new key as the second line on every agent first), or restart the agent to start with other keys",
                key_id(signing),
                now.iter().map(|k| key_id(k)).collect::<Vec<_>>()
            ));
        }
        *now = keys;
        Ok(true)
    }

    /// A short name of each key, in order (the first 8 bytes of an HMAC of a fixed text
    /// under the key, hex): shows which keys an agent uses without revealing them.
    pub fn ids(&self) -> Vec<String> {
        self.keys().iter().map(|k| key_id(k)).collect()
    }
}

/// The name of one key (see [`ClusterKey::ids`]).
pub fn key_id(key: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    #[allow(clippy::expect_used)]
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"muster cluster key id v1");
    super::hex(&mac.finalize().into_bytes()[..8])
}

impl PartialEq for ClusterKey {
    fn eq(&self, other: &Self) -> bool {
        *self.keys() == *other.keys()
    }
}

impl Eq for ClusterKey {}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(ids {:?})", self.ids())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_holds_one_key_per_line_signing_key_first() {
        let keys =
            ClusterKey::parse_file(b"  first-key-0123456789 \n\nsecond-key-0123456789\n").unwrap();
        assert_eq!(
            keys,
            vec![
                b"first-key-0123456789".to_vec(),
                b"second-key-0123456789".to_vec()
            ]
        );
        let ring = ClusterKey::from_file(b"first-key-0123456789\nsecond-key-0123456789").unwrap();
        assert_eq!(ring.with_signing(<[u8]>::to_vec), b"first-key-0123456789");
        let mut tried = Vec::new();
        assert!(ring.any_accepts(|k| {
            tried.push(k.to_vec());
            k == b"second-key-0123456789"
        }));
        assert_eq!(tried.len(), 2, "the signing key is tried first");
        assert!(!ring.any_accepts(|k| k == b"third-key-0123456789"));
        // Ids name keys without revealing them; equal keys, equal ids.
        let ids = ring.ids();
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        assert_eq!(ids[0], key_id(b"first-key-0123456789"));
        assert_eq!(ids[0].len(), 16);
        assert!(!format!("{ring:?}").contains("first-key"));
    }

    #[test]
    fn bad_key_files_are_refused_with_the_reason() {
        let e = ClusterKey::parse_file(b" \n\n").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = ClusterKey::parse_file(b"long-enough-key-0123\nshort\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("5 bytes"), "{e}");
        let five = (0..5)
            .map(|i| format!("key-number-{i}-0123456789\n"))
            .collect::<String>();
        let e = ClusterKey::parse_file(five.as_bytes()).unwrap_err();
        assert!(e.contains("5 keys") && e.contains("at most 4"), "{e}");
    }

    #[test]
    fn a_rotation_step_must_sign_with_a_key_already_accepted() {
        let (old, new) = (
            b"old-key-0123456789ab".to_vec(),
            b"new-key-0123456789ab".to_vec(),
        );
        let ring = ClusterKey::new(old.clone()).unwrap();
        // Signing at once with a key nobody has yet: refused, the ring stays.
        let e = ring.rotate(vec![new.clone()]).unwrap_err();
        assert!(e.contains(&key_id(&new)) && e.contains("in steps"), "{e}");
        assert_eq!(ring.ids(), vec![key_id(&old)]);
        // The three steps.
        assert_eq!(ring.rotate(vec![old.clone(), new.clone()]), Ok(true));
        assert_eq!(ring.rotate(vec![new.clone(), old.clone()]), Ok(true));
        assert_eq!(ring.rotate(vec![new.clone(), old.clone()]), Ok(false));
        assert_eq!(ring.rotate(vec![new.clone()]), Ok(true));
        // And back to the old key alone is refused now.
        assert!(ring.rotate(vec![old]).is_err());
        assert_eq!(ring.rotate(Vec::new()), Ok(false));
        assert_eq!(ring.ids(), vec![key_id(&new)]);
    }

    #[test]
    fn replacing_the_ring_reaches_every_clone_and_ignores_no_change() {
        let ring = ClusterKey::new(b"first-key-0123456789".to_vec()).unwrap();
        let clone = ring.clone();
        assert!(!ring.replace(vec![b"first-key-0123456789".to_vec()]));
        assert!(!ring.replace(Vec::new()), "an empty ring is never used");
        assert!(ring.replace(vec![b"second-key-0123456789".to_vec()]));
        assert_eq!(clone.with_signing(<[u8]>::to_vec), b"second-key-0123456789");
        assert_eq!(clone, ring);
    }
}
