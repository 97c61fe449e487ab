//! The checks of the settings, one function per section, and the derived values the
//! agent needs. Pure: what the named files hold is read beforehand ([`Files::read`]),
//! so every check is a function of values. Every problem is collected, not just the
//! first, each naming its key and where its value came from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    ActiveStrategy, AgentConfig, BootstrapSettings, ClusterSettings, ConfigError, DiscoveryMethod,
    Environment, FailureDetectorConfig, ManagementSettings, Problem, Settings,
    SplitBrainResolverConfig, TlsSettings, duration, parse_endpoint, parse_nameserver,
};
use crate::base::address::NodeAddress;
use crate::base::member::MemberStatus;
use crate::base::secret::{ClusterKey, ManagementToken};
use crate::tls::{Material, TlsConfig, TlsFiles, TlsPem};
use rustls::pki_types::ServerName;
use std::sync::Arc;

/// What the files named in the settings hold: read once, at the edge.
#[derive(Debug, Default)]
pub struct Files {
    /// `management.token-file`: its bytes, or why it could not be read.
    pub token_file: Option<(PathBuf, Result<Vec<u8>, String>)>,
    /// `cluster.key-file`.
    pub key_file: Option<(PathBuf, Result<Vec<u8>, String>)>,
    /// `discovery.kubernetes-api.pod-namespace-path`, when the namespace may come from it.
    pub namespace_file: Option<String>,
    /// `tls.cert-file`, `tls.key-file` and `tls.ca-file`, when all three are named.
    pub tls: Option<Result<TlsPem, String>>,
}

impl Files {
    /// Reads every file `settings` names (the only file access of the checks); the
    /// namespace file only when neither the settings nor `POD_NAMESPACE` name one.
    pub fn read(settings: &Settings, env: &Environment) -> Self {
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {what}{}: {e}", path.display()))
        };
        Self {
            token_file: settings
                .management
                .token_file
                .as_ref()
                .map(|p| (p.clone(), read("", p))),
            key_file: settings
                .cluster
                .key_file
                .as_ref()
                .map(|p| (p.clone(), read("the cluster key file ", p))),
            tls: tls_files(&settings.tls).map(|f| f.read()),
            namespace_file: if settings.bootstrap.service_namespace.is_some()
                || env.get("POD_NAMESPACE").is_some_and(|n| !n.is_empty())
            {
                None
            } else {
                std::fs::read_to_string(&settings.discovery.kubernetes_api.pod_namespace_path).ok()
            },
        }
    }
}

/// The problems found so far; each names its key and, when the value came from the
/// environment, the variable.
struct Problems<'a> {
    origins: &'a BTreeMap<String, String>,
    found: Vec<Problem>,
}

impl Problems<'_> {
    fn bad(&mut self, key: &str, message: impl Into<String>) {
        self.found.push(Problem {
            key: Some(key.to_owned()),
            origin: self.origins.get(key).cloned(),
            message: message.into(),
        });
    }

    /// Each key whose duration is zero.
    fn positive(&mut self, durations: &[(&str, Duration)]) {
        for (key, value) in durations {
            if value.is_zero() {
                self.bad(key, "must be longer than 0s");
            }
        }
    }

    /// Each key whose value is not a fraction from 0 to 1.
    fn fractions(&mut self, values: &[(&str, f64)]) {
        for (key, value) in values {
            if !(0.0..=1.0).contains(value) {
                self.bad(
                    key,
                    format!("{value} is out of range; use a fraction from 0 to 1 (0.2 = 20%)"),
                );
            }
        }
    }
}

/// Checks everything and derives the [`AgentConfig`].
pub(super) fn validate(
    settings: Settings,
    env: &Environment,
    origins: &BTreeMap<String, String>,
    files: Files,
) -> Result<AgentConfig, ConfigError> {
    let mut p = Problems {
        origins,
        found: Vec::new(),
    };
    let c = &settings.cluster;
    let m = &settings.management;
    let b = &settings.bootstrap;

    let system_name = system_name(c, b, &mut p);
    let (self_ip, management_ip) = addresses(c, m, &mut p);
    cluster(c, &mut p);
    failure_detector(&c.failure_detector, &mut p);
    split_brain_resolver(&c.split_brain_resolver, &mut p);
    management(m, &mut p);
    bootstrap(b, &mut p);
    let seed_nodes = seed_nodes(c, &system_name, &mut p);
    if seed_nodes.is_empty() {
        discovery(&settings, &mut p);
    }
    let management_token = management_token(m, files.token_file, &mut p);
    if c.key_file.is_none() && !c.allow_unauthenticated {
        p.bad(
            "cluster.key-file",
            "is required: without a cluster key anyone who can reach the cluster port can down any member; put at least 16 random bytes in a file (e.g. `head -c 32 /dev/urandom | base64 > cluster.key`) and name it here, or set cluster.allow-unauthenticated: true for an experiment on a trusted machine",
        );
    }
    let tls = tls(&settings.tls, &system_name, files.tls, &mut p);
    let cluster_key = files
        .key_file
        .and_then(|(path, bytes)| match cluster_key(&path, bytes) {
            Ok(k) => Some(k),
            Err(msg) => {
                p.bad("cluster.key-file", msg);
                None
            }
        });

    if !p.found.is_empty() {
        return Err(ConfigError { problems: p.found });
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
            files
                .namespace_file
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
        tls,
        settings,
    })
}

/// The three TLS files, when all are named.
fn tls_files(t: &TlsSettings) -> Option<TlsFiles> {
    Some(TlsFiles {
        cert: t.cert_file.clone()?,
        key: t.key_file.clone()?,
        ca: t.ca_file.clone()?,
    })
}

/// `tls:`: all three files or none; what they hold, checked as peers will check it.
fn tls(
    t: &TlsSettings,
    system_name: &str,
    pem: Option<Result<TlsPem, String>>,
    p: &mut Problems,
) -> Option<TlsConfig> {
    let named = [
        ("tls.cert-file", t.cert_file.is_some()),
        ("tls.key-file", t.key_file.is_some()),
        ("tls.ca-file", t.ca_file.is_some()),
    ];
    if t.reload_interval < Duration::from_millis(100) {
        p.bad(
            "tls.reload-interval",
            "must be at least 100ms: the three files are read and parsed each time (the default, 10s, is plenty for a rotation)",
        );
    }
    let Some(files) = tls_files(t) else {
        if named.iter().any(|(_, set)| *set) {
            for (key, _) in named.iter().filter(|(_, set)| !set) {
                p.bad(
                    key,
                    "is required when any of tls.cert-file, tls.key-file and tls.ca-file is set (TLS needs all three); remove the others to run without TLS",
                );
            }
        } else if t.server_name.is_some() {
            p.bad(
                "tls.server-name",
                "is set but TLS is off: name tls.cert-file, tls.key-file and tls.ca-file too, or remove it",
            );
        }
        return None;
    };
    let name = t
        .server_name
        .clone()
        .unwrap_or_else(|| system_name.to_owned());
    let server_name = match ServerName::try_from(name.clone()) {
        Ok(n) => n,
        Err(_) => {
            p.bad(
                "tls.server-name",
                format!("`{name}` is not a DNS name or IP address; certificates are checked against it (e.g. my-cluster.my-namespace.muster)"),
            );
            return None;
        }
    };
    let material = match pem {
        Some(Ok(pem)) => Material::load(pem, &server_name, &crate::tls::provider()),
        Some(Err(e)) => Err(e),
        None => Err("the TLS files were not read".to_owned()),
    };
    match material {
        Ok(m) => Some(TlsConfig {
            files,
            server_name,
            reload_interval: t.reload_interval,
            material: Arc::new(m),
        }),
        Err(e) => {
            p.bad("tls.cert-file", e);
            None
        }
    }
}

/// A cluster name or role: letters, digits, `-`, `_` and `.`.
fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

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

/// `cluster.name`, else `bootstrap.service-name`, else `muster`.
fn system_name(c: &ClusterSettings, b: &BootstrapSettings, p: &mut Problems) -> String {
    let name = c
        .name
        .clone()
        .or_else(|| b.service_name.clone())
        .unwrap_or_else(|| "muster".to_owned());
    if !is_valid_name(&name) {
        p.bad(
            "cluster.name",
            format!("`{name}` is not a valid cluster name; use letters, digits, `-`, `_` and `.`"),
        );
    }
    name
}

/// This node's IP and the management IP (`None` where they are wrong or missing), and
/// the ports that go with them.
fn addresses(
    c: &ClusterSettings,
    m: &ManagementSettings,
    p: &mut Problems,
) -> (Option<IpAddr>, Option<IpAddr>) {
    let self_ip = match &c.hostname {
        None => {
            p.bad(
                "cluster.hostname",
                "no address for this node: set POD_IP (from the downward API, `status.podIP`) or `cluster.hostname`",
            );
            None
        }
        Some(h) => match h.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() => {
                p.bad(
                    "cluster.hostname",
                    format!("`{h}` is not an address peers can reach; use this pod's IP"),
                );
                None
            }
            Ok(ip) => Some(ip.to_canonical()),
            Err(_) => {
                p.bad(
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
            Ok(ip) => Some(ip.to_canonical()),
            Err(_) => {
                p.bad("management.hostname", format!("`{h}` is not an IP address"));
                None
            }
        },
    };
    if c.port == 0 {
        p.bad("cluster.port", "0 is not a port; use 1-65535");
    }
    if m.port == 0 {
        p.bad("management.port", "0 is not a port; use 1-65535");
    }
    if let (Some(node), Some(mgmt)) = (self_ip, management_ip)
        && node != mgmt
        && !mgmt.is_unspecified()
    {
        p.bad(
            "management.hostname",
            format!(
                "{mgmt} differs from the node's address {node} (cluster.hostname / POD_IP): a peer probing this node's management address refuses an answer that names a node elsewhere; leave management.hostname unset"
            ),
        );
    }
    if c.port == m.port && self_ip == management_ip {
        p.bad(
            "management.port",
            format!(
                "{} is also `cluster.port`; the two need different ports",
                m.port
            ),
        );
    }
    (self_ip, management_ip)
}

/// `cluster.*` apart from its subsections.
fn cluster(c: &ClusterSettings, p: &mut Problems) {
    for role in &c.roles {
        if !is_valid_name(role) {
            p.bad(
                "cluster.roles",
                format!("`{role}` is not a valid role; use letters, digits, `-`, `_` and `.`"),
            );
        }
    }
    p.positive(&[
        ("cluster.gossip-interval", c.gossip_interval),
        ("cluster.leader-actions-interval", c.leader_actions_interval),
        (
            "cluster.retry-unsuccessful-join-after",
            c.retry_unsuccessful_join_after,
        ),
        ("cluster.seed-node-timeout", c.seed_node_timeout),
        ("cluster.leave-timeout", c.leave_timeout),
        ("cluster.handover-timeout", c.handover_timeout),
    ]);
    // `off` is how to turn these off; a zero would act at once.
    let on: Vec<(&str, Duration)> = [
        ("cluster.allow-weakly-up-members", c.allow_weakly_up_members),
        (
            "cluster.shutdown-after-unsuccessful-join-seed-nodes",
            c.shutdown_after_unsuccessful_join_seed_nodes,
        ),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    p.positive(&on);
}

/// `cluster.failure-detector`.
fn failure_detector(fd: &FailureDetectorConfig, p: &mut Problems) {
    if !(fd.threshold.is_finite() && fd.threshold > 0.0) {
        p.bad(
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
            p.bad(key, "must be at least 1");
        }
    }
    p.positive(&[
        (
            "cluster.failure-detector.heartbeat-interval",
            fd.heartbeat_interval,
        ),
        (
            "cluster.failure-detector.min-std-deviation",
            fd.min_std_deviation,
        ),
        (
            "cluster.failure-detector.expected-response-after",
            fd.expected_response_after,
        ),
    ]);
}

/// `cluster.split-brain-resolver`.
fn split_brain_resolver(sbr: &SplitBrainResolverConfig, p: &mut Problems) {
    if sbr.stable_after.is_zero() {
        p.bad(
            "cluster.split-brain-resolver.stable-after",
            "must be longer than 0s",
        );
    }
    match sbr.active_strategy {
        ActiveStrategy::StaticQuorum if sbr.static_quorum.quorum_size == 0 => p.bad(
            "cluster.split-brain-resolver.static-quorum.quorum-size",
            "is required with static-quorum: set it to cluster size / 2 + 1",
        ),
        ActiveStrategy::LeaseMajority => {
            let l = &sbr.lease_majority;
            if l.release_after < Duration::from_secs(1) {
                p.bad(
                    "cluster.split-brain-resolver.lease-majority.release-after",
                    format!(
                        "{:?} is too short: the Lease is held this long; use at least 1s (default 40s)",
                        l.release_after
                    ),
                );
            }
            if !l.lease_name.is_empty() && !is_dns_subdomain(&l.lease_name) {
                p.bad(
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
}

/// The fewest connections the management API may be limited to.
const MIN_MANAGEMENT_CONNECTIONS: usize = 16;

/// `management.*` apart from the token.
fn management(m: &ManagementSettings, p: &mut Problems) {
    // Peers probe, the kubelet probes, the operator and applications read: a handful
    // of connections at once is normal.
    if m.max_connections < MIN_MANAGEMENT_CONNECTIONS {
        p.bad(
            "management.max-connections",
            format!(
                "{} is too few; use at least {MIN_MANAGEMENT_CONNECTIONS} (peers' probes, the kubelet's probes and the operator share them)",
                m.max_connections
            ),
        );
    }
    if m.max_body_bytes < 1024 {
        p.bad(
            "management.max-body-bytes",
            format!("{} is too small; use at least 1024", m.max_body_bytes),
        );
    }
    if m.header_read_timeout < Duration::from_millis(100) {
        p.bad(
            "management.header-read-timeout",
            "must be at least 100ms: clients on a busy network need that long to send a request's headers",
        );
    }
    if m.ready_states.is_empty() {
        p.bad(
            "management.ready-states",
            "is empty: /ready would never answer 200; name at least one status (default: Up, WeaklyUp)",
        );
    }
    if m.ready_states.contains(&MemberStatus::Removed) {
        p.bad(
            "management.ready-states",
            "Removed is no state a running member reports; use Joining, WeaklyUp, Up, Leaving, Exiting or Down",
        );
    }
}

/// `bootstrap.*`.
fn bootstrap(b: &BootstrapSettings, p: &mut Problems) {
    p.positive(&[
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
    ]);
    if b.exponential_backoff_max < b.interval {
        p.bad(
            "bootstrap.exponential-backoff-max",
            format!(
                "{} is shorter than `bootstrap.interval` ({})",
                duration::format(b.exponential_backoff_max),
                duration::format(b.interval)
            ),
        );
    }
    p.fractions(&[
        (
            "bootstrap.exponential-backoff-random-factor",
            b.exponential_backoff_random_factor,
        ),
        ("bootstrap.probe-interval-jitter", b.probe_interval_jitter),
    ]);
    if b.required_contact_point_nr == 0 {
        p.bad("bootstrap.required-contact-point-nr", "must be at least 1");
    }
    if b.stable_margin <= b.probing_failure_timeout {
        p.bad(
            "bootstrap.stable-margin",
            format!(
                "{} must be longer than bootstrap.probing-failure-timeout ({}): answers that old still count, so a shorter margin lets a node form on a set some of its peers have not seen yet, and two clusters can form",
                duration::format(b.stable_margin),
                duration::format(b.probing_failure_timeout)
            ),
        );
    }
    match b.expected_contact_point_nr {
        Some(0) => p.bad(
            "bootstrap.expected-contact-point-nr",
            "must be at least 1 (the number of agents that start together), or null for no contact-point agreement",
        ),
        Some(e) if e < b.required_contact_point_nr => p.bad(
            "bootstrap.expected-contact-point-nr",
            format!(
                "{e} is fewer than bootstrap.required-contact-point-nr ({}); it is the number of agents that start together, so at least the required number",
                b.required_contact_point_nr
            ),
        ),
        _ => {}
    }
    if let Some(name) = &b.formation_lease
        && !is_dns_subdomain(name)
    {
        p.bad(
            "bootstrap.formation-lease",
            format!(
                "`{name}` is not a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253), or null for no formation record"
            ),
        );
    }
    if b.fallback_port == Some(0) {
        p.bad("bootstrap.fallback-port", "0 is not a port; use 1-65535");
    }
    if !b.port_name.is_empty() && !is_valid_name(&b.port_name) {
        p.bad(
            "bootstrap.port-name",
            format!("`{}` is not a valid port name", b.port_name),
        );
    }
}

/// `cluster.seed-nodes`, parsed; each must be in this cluster.
fn seed_nodes(c: &ClusterSettings, system_name: &str, p: &mut Problems) -> Vec<NodeAddress> {
    c.seed_nodes
        .iter()
        .filter_map(
            |s| match NodeAddress::parse_with_default_system(s, system_name) {
                Ok(a) if a.system != system_name => {
                    p.bad(
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
                    p.bad("cluster.seed-nodes", e.to_string());
                    None
                }
            },
        )
        .collect()
}

/// `discovery.*` (and what `bootstrap` must give it) for the method in use, or for each
/// of an aggregate's methods.
fn discovery(s: &Settings, p: &mut Problems) {
    let b = &s.bootstrap;
    let d = &s.discovery;
    let methods = match b.discovery_method {
        DiscoveryMethod::Aggregate => {
            let ms = &d.aggregate.discovery_methods;
            if ms.is_empty() {
                p.bad(
                    "discovery.aggregate.discovery-methods",
                    "is empty; list the methods to try, e.g. [kubernetes-api, dns]",
                );
            }
            if ms.contains(&DiscoveryMethod::Aggregate) {
                p.bad(
                    "discovery.aggregate.discovery-methods",
                    "cannot contain `aggregate` itself",
                );
            }
            let mut seen = BTreeSet::new();
            for m in ms {
                if !seen.insert(m.name()) {
                    p.bad(
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
                    p.bad(
                        "discovery.config.endpoints",
                        "is empty; list the contact points (host:port) for discovery-method config",
                    );
                }
                for e in &d.config.endpoints {
                    if let Err(msg) = parse_endpoint(e) {
                        p.bad("discovery.config.endpoints", msg);
                    }
                }
            }
            DiscoveryMethod::Dns => {
                if b.service_name.is_none() {
                    p.bad(
                        "bootstrap.service-name",
                        "is required with discovery-method dns (the headless Service's name)",
                    );
                }
                if let Some(ns) = &d.dns.nameserver
                    && parse_nameserver(ns).is_none()
                {
                    p.bad(
                        "discovery.dns.nameserver",
                        format!("`{ns}` is not a name server; use ip or ip:port"),
                    );
                }
                if d.dns.cluster_domain.is_empty() {
                    p.bad("discovery.dns.cluster-domain", "must not be empty");
                }
            }
            DiscoveryMethod::KubernetesApi => {
                let sel = &d.kubernetes_api.pod_label_selector;
                if sel.trim().is_empty() {
                    p.bad(
                        "discovery.kubernetes-api.pod-label-selector",
                        "must not be empty",
                    );
                }
                if sel.contains("%s") && b.service_name.is_none() {
                    p.bad(
                        "bootstrap.service-name",
                        format!("is required: the pod-label-selector `{sel}` contains %s"),
                    );
                }
            }
            DiscoveryMethod::Aggregate => {}
        }
    }
}

/// The management token, from `management.token-file` (read into `file`) or
/// `management.token`.
fn management_token(
    m: &ManagementSettings,
    file: Option<(PathBuf, Result<Vec<u8>, String>)>,
    p: &mut Problems,
) -> Option<ManagementToken> {
    match (file, &m.token) {
        (Some(_), Some(_)) => {
            p.bad(
                "management.token",
                "set either management.token-file or management.token, not both",
            );
            None
        }
        (Some((path, Ok(bytes))), None) => match ManagementToken::new(bytes.trim_ascii()) {
            Ok(t) => Some(t),
            Err(e) => {
                p.bad("management.token-file", format!("{}: {e}", path.display()));
                None
            }
        },
        (Some((_, Err(e))), None) => {
            p.bad("management.token-file", e);
            None
        }
        (None, Some(t)) => match ManagementToken::new(t.expose().trim().as_bytes()) {
            Ok(t) => Some(t),
            Err(e) => {
                p.bad("management.token", e);
                None
            }
        },
        (None, None) => None,
    }
}

/// The cluster key from the bytes of `cluster.key-file`.
fn cluster_key(path: &Path, bytes: Result<Vec<u8>, String>) -> Result<ClusterKey, String> {
    let bytes = bytes?;
    ClusterKey::from_file(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}
