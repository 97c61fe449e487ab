//! Secrets: the cluster key that authenticates agent-to-agent frames and the bearer
//! token of the management API's mutating routes. Neither is ever printed: `Debug`
//! shows only the length.

use std::fmt;

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

/// The shared secret that authenticates agent-to-agent messages.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(Vec<u8>);

impl ClusterKey {
    pub const MIN_LEN: usize = 16;

    pub fn new(bytes: Vec<u8>) -> Result<Self, String> {
        if bytes.len() < Self::MIN_LEN {
            return Err(format!(
                "the cluster key has {} bytes; use at least {} random bytes (e.g. `head -c 32 /dev/urandom | base64`)",
                bytes.len(),
                Self::MIN_LEN
            ));
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey(<{} bytes>)", self.0.len())
    }
}
