//! Configuration: a YAML file, then `POD_*` variables, then `MUSTER_*` variables, checked
//! once at start. Anything wrong stops the agent with one line per problem naming the
//! key, the value and what is allowed.
//!
//! Order of precedence, lowest first: defaults, the file, `POD_IP` (sets
//! `cluster.hostname`), `MUSTER_<SECTION>_<KEY>` (any key; `-` and `.` become `_`, lists
//! are comma-separated). `POD_NAMESPACE` is the namespace when none is configured and
//! `POD_NAME` names this node in logs and status.

pub mod duration;
mod env;
pub mod reference;
mod settings;

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use env::{Environment, all_variables, variable_for};
pub use settings::*;

use crate::address::{NodeAddress, canonical_ip};

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
}

impl AgentConfig {
    /// Reads `path` (if any) and `env`, applies overrides and checks everything.
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
        Self::from_document(doc, env)
    }

    /// As [`load`](Self::load), from YAML text (used by tests and the local cluster).
    pub fn from_yaml(text: &str, env: &Environment) -> Result<Self, ConfigError> {
        Self::from_document(parse_document(text, "the configuration")?, env)
    }

    fn from_document(mut doc: serde_yaml::Value, env: &Environment) -> Result<Self, ConfigError> {
        let origins = env::apply(&mut doc, env)?;
        let settings: Settings = serde_path_to_error::deserialize(doc).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { None } else { Some(key) };
            let origin = key.as_ref().and_then(|k| origins.get(k).cloned());
            let message = explain_serde(&e.inner().to_string());
            ConfigError::one(key.as_deref(), origin, message)
        })?;
        validate(settings, env, &origins)
    }
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

fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn validate(
    settings: Settings,
    env: &Environment,
    origins: &std::collections::BTreeMap<String, String>,
) -> Result<AgentConfig, ConfigError> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, message: String| {
        problems.push(Problem {
            key: Some(key.to_owned()),
            origin: origins.get(key).cloned(),
            message,
        });
    };
    let c = &settings.cluster;
    let m = &settings.management;
    let b = &settings.bootstrap;
    let d = &settings.discovery;

    let system_name = c
        .name
        .clone()
        .or_else(|| b.service_name.clone())
        .unwrap_or_else(|| "muster".to_owned());
    if !is_valid_name(&system_name) {
        bad(
            "cluster.name",
            format!(
                "`{system_name}` is not a valid cluster name; use letters, digits, `-`, `_` and `.`"
            ),
        );
    }

    let self_ip = match &c.hostname {
        None => {
            bad("cluster.hostname", "no address for this node: set POD_IP (from the downward API, `status.podIP`) or `cluster.hostname`".to_owned());
            None
        }
        Some(h) => match h.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {
                bad(
                    "cluster.hostname",
                    format!("`{h}` is not an address peers can reach; use this pod's IP"),
                );
                None
            }
            Ok(ip) => Some(canonical_ip(ip)),
            Err(_) => {
                bad(
                    "cluster.hostname",
                    format!("`{h}` is not an IP address; use this pod's IP (POD_IP)"),
                );
                None
            }
        },
    };
    let management_ip = match &m.hostname {
        None => self_ip,
        Some(h) => match h.parse::<IpAddr>() {
            Ok(ip) => Some(canonical_ip(ip)),
            Err(_) => {
                bad("management.hostname", format!("`{h}` is not an IP address"));
                None
            }
        },
    };
    if c.port == 0 {
        bad("cluster.port", "0 is not a port; use 1-65535".to_owned());
    }
    if m.port == 0 {
        bad("management.port", "0 is not a port; use 1-65535".to_owned());
    }
    if c.port == m.port && self_ip == management_ip {
        bad(
            "management.port",
            format!(
                "{} is also `cluster.port`; the two need different ports",
                m.port
            ),
        );
    }
    if m.max_connections == 0 {
        bad(
            "management.max-connections",
            "must be at least 1".to_owned(),
        );
    }
    if m.max_body_bytes < 1024 {
        bad(
            "management.max-body-bytes",
            format!("{} is too small; use at least 1024", m.max_body_bytes),
        );
    }
    let sbr = &c.split_brain_resolver;
    if sbr.stable_after.is_zero() {
        bad(
            "cluster.split-brain-resolver.stable-after",
            "must be longer than 0s".to_owned(),
        );
    }
    if let Err(e) =
        crate::membership::sbr::unstable_limit(&sbr.down_all_when_unstable, sbr.stable_after)
    {
        bad("cluster.split-brain-resolver.down-all-when-unstable", e);
    }
    match sbr.active_strategy {
        ActiveStrategy::StaticQuorum if sbr.static_quorum.quorum_size == 0 => bad(
            "cluster.split-brain-resolver.static-quorum.quorum-size",
            "is required with static-quorum: set it to cluster size / 2 + 1".to_owned(),
        ),
        ActiveStrategy::LeaseMajority => {
            let l = &sbr.lease_majority;
            if l.release_after < std::time::Duration::from_secs(1) {
                bad(
                    "cluster.split-brain-resolver.lease-majority.release-after",
                    format!(
                        "{:?} is too short: the Lease is held this long; use at least 1s (default 40s)",
                        l.release_after
                    ),
                );
            }
            if !l.lease_name.is_empty() && !is_dns_subdomain(&l.lease_name) {
                bad(
                    "cluster.split-brain-resolver.lease-majority.lease-name",
                    format!(
                        "`{}` is not a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253)",
                        l.lease_name
                    ),
                );
            }
        }
        _ => {}
    }
    let fd = &c.failure_detector;
    if !(fd.threshold.is_finite() && fd.threshold > 0.0) {
        bad(
            "cluster.failure-detector.threshold",
            format!(
                "{} is not a positive number (Akka's default: 8.0)",
                fd.threshold
            ),
        );
    }
    for (key, value) in [
        (
            "cluster.failure-detector.max-sample-size",
            fd.max_sample_size,
        ),
        (
            "cluster.failure-detector.monitored-by-nr-of-members",
            fd.monitored_by_nr_of_members,
        ),
    ] {
        if value == 0 {
            bad(key, "must be at least 1".to_owned());
        }
    }
    for role in &c.roles {
        if !is_valid_name(role) {
            bad(
                "cluster.roles",
                format!("`{role}` is not a valid role; use letters, digits, `-`, `_` and `.`"),
            );
        }
    }
    let positive = [
        ("cluster.gossip-interval", c.gossip_interval),
        ("cluster.leader-actions-interval", c.leader_actions_interval),
        (
            "cluster.retry-unsuccessful-join-after",
            c.retry_unsuccessful_join_after,
        ),
        ("cluster.seed-node-timeout", c.seed_node_timeout),
        ("cluster.leave-timeout", c.leave_timeout),
        (
            "cluster.failure-detector.heartbeat-interval",
            c.failure_detector.heartbeat_interval,
        ),
        (
            "cluster.failure-detector.min-std-deviation",
            c.failure_detector.min_std_deviation,
        ),
        (
            "cluster.failure-detector.expected-response-after",
            c.failure_detector.expected_response_after,
        ),
        ("management.header-read-timeout", m.header_read_timeout),
        ("bootstrap.interval", b.interval),
        ("bootstrap.resolve-timeout", b.resolve_timeout),
        ("bootstrap.probe-interval", b.probe_interval),
        (
            "bootstrap.probing-failure-timeout",
            b.probing_failure_timeout,
        ),
        (
            "bootstrap.exponential-backoff-max",
            b.exponential_backoff_max,
        ),
    ];
    for (key, value) in positive {
        if value.is_zero() {
            bad(key, "must be longer than 0s".to_owned());
        }
    }
    if b.exponential_backoff_max < b.interval {
        bad(
            "bootstrap.exponential-backoff-max",
            format!(
                "{} is shorter than `bootstrap.interval` ({})",
                duration::format(b.exponential_backoff_max),
                duration::format(b.interval)
            ),
        );
    }
    for (key, value) in [
        (
            "bootstrap.exponential-backoff-random-factor",
            b.exponential_backoff_random_factor,
        ),
        ("bootstrap.probe-interval-jitter", b.probe_interval_jitter),
    ] {
        if !(0.0..=1.0).contains(&value) {
            bad(
                key,
                format!("{value} is out of range; use a fraction from 0 to 1 (0.2 = 20%)"),
            );
        }
    }
    if b.required_contact_point_nr == 0 {
        bad(
            "bootstrap.required-contact-point-nr",
            "must be at least 1".to_owned(),
        );
    }
    if !matches!(b.protocol.as_str(), "tcp" | "udp") {
        bad(
            "bootstrap.protocol",
            format!("`{}` is not a protocol; use tcp or udp", b.protocol),
        );
    }
    if b.fallback_port == Some(0) {
        bad(
            "bootstrap.fallback-port",
            "0 is not a port; use 1-65535".to_owned(),
        );
    }
    if !b.port_name.is_empty() && !is_valid_name(&b.port_name) {
        bad(
            "bootstrap.port-name",
            format!("`{}` is not a valid port name", b.port_name),
        );
    }

    let seed_nodes: Vec<NodeAddress> = c
        .seed_nodes
        .iter()
        .filter_map(
            |s| match NodeAddress::parse_with_default_system(s, &system_name) {
                Ok(a) if a.system != system_name => {
                    bad(
                        "cluster.seed-nodes",
                        format!(
                            "`{s}` belongs to cluster `{}`, this node is in `{system_name}`",
                            a.system
                        ),
                    );
                    None
                }
                Ok(a) => Some(a),
                Err(e) => {
                    bad("cluster.seed-nodes", e.to_string());
                    None
                }
            },
        )
        .collect();

    if seed_nodes.is_empty() {
        let methods = match b.discovery_method {
            DiscoveryMethod::Aggregate => {
                let ms = &d.aggregate.discovery_methods;
                if ms.is_empty() {
                    bad(
                        "discovery.aggregate.discovery-methods",
                        "is empty; list the methods to try, e.g. [kubernetes-api, dns]".to_owned(),
                    );
                }
                if ms.contains(&DiscoveryMethod::Aggregate) {
                    bad(
                        "discovery.aggregate.discovery-methods",
                        "cannot contain `aggregate` itself".to_owned(),
                    );
                }
                let mut seen = std::collections::BTreeSet::new();
                for m in ms {
                    if !seen.insert(m.name()) {
                        bad(
                            "discovery.aggregate.discovery-methods",
                            format!("lists `{}` twice", m.name()),
                        );
                    }
                }
                ms.clone()
            }
            other => vec![other],
        };
        for method in methods {
            match method {
                DiscoveryMethod::Config => {
                    if d.config.endpoints.is_empty() {
                        bad("discovery.config.endpoints", "is empty; list the contact points (host:port) for discovery-method config".to_owned());
                    }
                    for e in &d.config.endpoints {
                        if let Err(msg) = parse_endpoint(e) {
                            bad("discovery.config.endpoints", msg);
                        }
                    }
                }
                DiscoveryMethod::Dns => {
                    if b.service_name.is_none() {
                        bad(
                            "bootstrap.service-name",
                            "is required with discovery-method dns (the headless Service's name)"
                                .to_owned(),
                        );
                    }
                    if let Some(ns) = &d.dns.nameserver
                        && parse_nameserver(ns).is_none()
                    {
                        bad(
                            "discovery.dns.nameserver",
                            format!("`{ns}` is not a name server; use ip or ip:port"),
                        );
                    }
                    if d.dns.cluster_domain.is_empty() {
                        bad(
                            "discovery.dns.cluster-domain",
                            "must not be empty".to_owned(),
                        );
                    }
                }
                DiscoveryMethod::KubernetesApi => {
                    let sel = &d.kubernetes_api.pod_label_selector;
                    if sel.trim().is_empty() {
                        bad(
                            "discovery.kubernetes-api.pod-label-selector",
                            "must not be empty".to_owned(),
                        );
                    }
                    if sel.contains("%s") && b.service_name.is_none() {
                        bad(
                            "bootstrap.service-name",
                            format!("is required: the pod-label-selector `{sel}` contains %s"),
                        );
                    }
                }
                DiscoveryMethod::Aggregate => {}
            }
        }
    }

    let mgmt = &settings.management;
    let management_token = match (&mgmt.token_file, &mgmt.token) {
        (Some(_), Some(_)) => {
            bad(
                "management.token",
                "set either management.token-file or management.token, not both".to_owned(),
            );
            None
        }
        (Some(path), None) => match std::fs::read(path) {
            Ok(bytes) => match ManagementToken::new(bytes.trim_ascii()) {
                Ok(t) => Some(t),
                Err(e) => {
                    bad("management.token-file", format!("{}: {e}", path.display()));
                    None
                }
            },
            Err(e) => {
                bad(
                    "management.token-file",
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        },
        (None, Some(t)) => match ManagementToken::new(t.trim().as_bytes()) {
            Ok(t) => Some(t),
            Err(e) => {
                bad("management.token", e);
                None
            }
        },
        (None, None) => None,
    };
    let cluster_key = match &c.key_file {
        None => None,
        Some(path) => match read_key(path) {
            Ok(k) => Some(k),
            Err(msg) => {
                bad("cluster.key-file", msg);
                None
            }
        },
    };

    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    let (Some(self_ip), Some(management_ip)) = (self_ip, management_ip) else {
        unreachable!("a missing address is reported as a problem above");
    };

    let namespace = b
        .service_namespace
        .clone()
        .or_else(|| {
            env.get("POD_NAMESPACE")
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .or_else(|| {
            std::fs::read_to_string(&d.kubernetes_api.pod_namespace_path)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "default".to_owned());
    let fallback_port = b.fallback_port.unwrap_or(m.port);
    Ok(AgentConfig {
        self_address: NodeAddress::new(system_name.clone(), self_ip, settings.cluster.port),
        system_name,
        management_ip,
        seed_nodes,
        cluster_key,
        management_token,
        namespace,
        pod_name: env
            .get("POD_NAME")
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        fallback_port,
        settings,
    })
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

fn read_key(path: &PathBuf) -> Result<ClusterKey, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the cluster key file {}: {e}", path.display()))?;
    let trimmed = bytes.trim_ascii().to_vec();
    ClusterKey::new(trimmed).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests;

/// A Kubernetes object name (RFC 1123 subdomain): lowercase letters, digits, '-' and
/// '.', starting and ending with a letter or digit, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    s.len() <= 253
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}
