//! Configuration: a YAML file, then `POD_*` variables, then `MUSTER_*` variables, checked
//! once at start. Anything wrong stops the agent with one line per problem naming the
//! key, the value and what is allowed.
//!
//! Order of precedence, lowest first: defaults, the file, `POD_IP` (sets
//! `cluster.hostname`), `MUSTER_<SECTION>_<KEY>` (any key; `-` and `.` become `_`, lists
//! are comma-separated). `POD_NAMESPACE` is the namespace when none is configured and
//! `POD_NAME` names this node in logs and status.
//!
//! Files are read at the edge ([`AgentConfig::load`] and [`validate::Files::read`]); the
//! checks themselves ([`validate`]) are pure, one function per section.

pub mod duration;
mod env;
pub mod reference;
mod settings;
mod validate;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

pub use env::{Environment, all_variables, variable_for};
pub use settings::*;
pub use validate::Files;

use crate::base::address::NodeAddress;
use crate::base::secret::{ClusterKey, ManagementToken};

/// The documented reference configuration: every key with its default.
pub const REFERENCE_YAML: &str = include_str!("../../reference.yaml");

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key (`bootstrap.stable-margin`), when the problem is with one key.
    pub key: Option<String>,
    /// Where the value came from, when not the file (`MUSTER_BOOTSTRAP_STABLE_MARGIN`).
    pub origin: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, &self.origin) {
            (Some(k), Some(o)) => write!(f, "`{k}` (from {o}): {}", self.message),
            (Some(k), None) => write!(f, "`{k}`: {}", self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

/// Why the agent cannot start with this configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl ConfigError {
    fn one(key: Option<&str>, origin: Option<String>, message: impl Into<String>) -> Self {
        Self {
            problems: vec![Problem {
                key: key.map(str::to_owned),
                origin,
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration:")?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// Validated configuration with everything derived that the agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub settings: Settings,
    /// Cluster (system) name in node addresses.
    pub system_name: String,
    /// This node's cluster address (ip, cluster port).
    pub self_address: NodeAddress,
    /// Where the management API binds and is reached by peers.
    pub management_ip: IpAddr,
    /// Explicit seed nodes, parsed.
    pub seed_nodes: Vec<NodeAddress>,
    pub cluster_key: Option<ClusterKey>,
    /// Bearer token of the mutating management routes; `None`: they are refused.
    pub management_token: Option<ManagementToken>,
    /// Namespace for discovery.
    pub namespace: String,
    /// This pod's name (`POD_NAME`), for logs and status.
    pub pod_name: Option<String>,
    /// Port of contact points that discovery returns without one.
    pub fallback_port: u16,
    /// TLS on both ports; `None`: plain TCP and HTTP.
    pub tls: Option<crate::tls::TlsConfig>,
}

impl AgentConfig {
    /// Reads `path` (if any), the files it names and `env`, applies overrides and checks
    /// everything.
    pub fn load(path: Option<&Path>, env: &Environment) -> Result<Self, ConfigError> {
        let doc = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError::one(
                        None,
                        None,
                        format!("cannot read config file {}: {e}", p.display()),
                    )
                })?;
                parse_document(&text, &p.display().to_string())?
            }
            None => serde_yaml::Value::Mapping(Default::default()),
        };
        let (settings, origins) = settings_from(doc, env)?;
        let files = Files::read(&settings, env);
        validate::validate(settings, env, &origins, files)
    }

    /// As an agent would load `text`, with `files` standing in for what the files it
    /// names hold: for a program that writes an agent's settings but cannot read the
    /// files its pods will have (the operator checks what it gives its agents).
    pub fn from_yaml_with_files(
        text: &str,
        env: &Environment,
        files: Files,
    ) -> Result<Self, ConfigError> {
        let (settings, origins) = settings_from(parse_document(text, "the configuration")?, env)?;
        validate::validate(settings, env, &origins, files)
    }

    /// As [`load`](Self::load), from YAML text (used by tests and the local cluster).
    pub fn from_yaml(text: &str, env: &Environment) -> Result<Self, ConfigError> {
        let (settings, origins) = settings_from(parse_document(text, "the configuration")?, env)?;
        let files = Files::read(&settings, env);
        validate::validate(settings, env, &origins, files)
    }
}

/// The settings from a document and the environment, and where each overridden key's
/// value came from.
fn settings_from(
    mut doc: serde_yaml::Value,
    env: &Environment,
) -> Result<(Settings, std::collections::BTreeMap<String, String>), ConfigError> {
    let origins = env::apply(&mut doc, env)?;
    let settings: Settings = serde_path_to_error::deserialize(doc).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { None } else { Some(key) };
        let origin = key.as_ref().and_then(|k| origins.get(k).cloned());
        let message = explain_serde(&e.inner().to_string());
        ConfigError::one(key.as_deref(), origin, message)
    })?;
    Ok((settings, origins))
}

fn parse_document(text: &str, what: &str) -> Result<serde_yaml::Value, ConfigError> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| ConfigError::one(None, None, format!("{what} is not valid YAML: {e}")))?;
    match doc {
        serde_yaml::Value::Null => Ok(serde_yaml::Value::Mapping(Default::default())),
        serde_yaml::Value::Mapping(_) => Ok(doc),
        other => Err(ConfigError::one(
            None,
            None,
            format!(
                "{what} must be a YAML mapping of sections (cluster, management, bootstrap, discovery), not `{}`",
                show_value(&other)
            ),
        )),
    }
}

/// serde's messages name Rust types; say it in the config's terms.
fn explain_serde(msg: &str) -> String {
    let msg = msg
        .replace("expected u16", "expected a port number 1-65535")
        .replace("expected usize", "expected a non-negative whole number")
        .replace("expected f64", "expected a number")
        .replace("expected a boolean", "expected true or false")
        .replace("expected a sequence", "expected a list, e.g. [a, b]")
        .replace("unknown variant", "unknown value");
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, allowed)) = rest.split_once("`, expected one of ")
    {
        let candidates: Vec<&str> = allowed.split(", ").map(|s| s.trim_matches('`')).collect();
        let hint = closest(field, &candidates)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        return format!(
            "unknown key `{field}`{hint}; allowed keys here: {}",
            candidates.join(", ")
        );
    }
    msg
}

/// The candidate within edit distance 3 of `word`, if any.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A YAML value as the user wrote it, for messages.
pub(crate) fn show_value(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
    }
}

/// Splits `host`, `host:port`, `ip`, `[v6]:port` into host and optional port.
pub fn parse_endpoint(s: &str) -> Result<(String, Option<u16>), String> {
    let s = s.trim();
    let bad = || format!("`{s}` is not an endpoint; use host:port, host, ip:port or [ipv6]:port");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), None));
    }
    if let Ok(sock) = s.parse::<std::net::SocketAddr>() {
        if sock.port() == 0 {
            return Err(bad());
        }
        return Ok((sock.ip().to_string(), Some(sock.port())));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (
            h,
            Some(p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?),
        ),
        None => (s, None),
    };
    let valid_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !valid_name {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// `ip` or `ip:port` (port 53 by default).
pub fn parse_nameserver(s: &str) -> Option<std::net::SocketAddr> {
    if let Ok(sock) = s.parse::<std::net::SocketAddr>() {
        return Some(sock);
    }
    s.parse::<IpAddr>()
        .ok()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
}

#[cfg(test)]
mod tests;
