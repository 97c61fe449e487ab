//! `dns` discovery with hickory-resolver (kept inside this file: its API moves between
//! minor versions).
//!
//! With a port name: SRV `_{port-name}._{protocol}.{service}.{namespace}.svc.{domain}.`,
//! each target resolved to its IPs (from the answer's additional records, else by an
//! A/AAAA lookup). Without: A/AAAA of `{service}.{namespace}.svc.{domain}.` and the
//! fallback port. A `service-name` containing a dot is taken as the full name. Answers
//! are not cached: every lookup asks the server, so changes show at the next interval.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, Record};

use crate::config::{AgentConfig, parse_nameserver};

use super::{BoxFuture, Discovered, Discovery, DiscoveryError, ResolvedTarget, Skipped};

#[derive(Debug, Clone)]
pub struct DnsDiscovery {
    resolver: TokioResolver,
    /// Fully-qualified SRV name, when a port name is configured.
    srv_name: Option<String>,
    /// Fully-qualified service name for A/AAAA.
    host_name: String,
}

/// One SRV record of an answer: its target, port, and the addresses the answer carried
/// for the target (`None`: not there, to be looked up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget {
    pub target: String,
    pub port: u16,
    pub ips: Option<Vec<IpAddr>>,
}

/// Reads an SRV answer as a DNS server sent it (pure; fuzzed): every SRV record in
/// `answers`, in order, with the A/AAAA records of `additionals` that name its target
/// (a headless Service's answer carries them; names compared case-insensitively).
pub fn srv_targets(answers: &[Record], additionals: &[Record]) -> Vec<SrvTarget> {
    let mut glue: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for r in additionals {
        let ip = match &r.data {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        glue.entry(r.name.to_ascii().to_ascii_lowercase())
            .or_default()
            .push(ip);
    }
    answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .map(|srv| {
            let target = srv.target.to_ascii();
            SrvTarget {
                ips: glue.get(&target.to_ascii_lowercase()).cloned(),
                target,
                port: srv.port,
            }
        })
        .collect()
}

/// The fully-qualified (trailing dot) name of the service.
pub fn service_fqdn(service: &str, namespace: &str, domain: &str) -> String {
    let base = if service.contains('.') {
        service.trim_end_matches('.').to_owned()
    } else {
        format!("{service}.{namespace}.svc.{}", domain.trim_matches('.'))
    };
    format!("{base}.")
}

fn dns_error(name: &str, e: impl std::fmt::Display) -> DiscoveryError {
    DiscoveryError::Dns {
        name: name.to_owned(),
        message: e.to_string(),
    }
}

impl DnsDiscovery {
    pub fn from_config(config: &AgentConfig) -> Result<Self, DiscoveryError> {
        let b = &config.settings.bootstrap;
        let service = b.service_name.clone().unwrap_or_default();
        let host_name = service_fqdn(
            &service,
            &config.namespace,
            &config.settings.discovery.dns.cluster_domain,
        );
        let srv_name = (!b.port_name.is_empty())
            .then(|| format!("_{}._{}.{host_name}", b.port_name, b.protocol.name()));
        let nameserver = config
            .settings
            .discovery
            .dns
            .nameserver
            .as_deref()
            .and_then(parse_nameserver);
        Ok(Self {
            resolver: resolver(nameserver, b.resolve_timeout)?,
            srv_name,
            host_name,
        })
    }

    /// A discovery with explicit names and server (tests, tools).
    pub fn new(
        srv_name: Option<String>,
        host_name: String,
        nameserver: Option<SocketAddr>,
    ) -> Result<Self, DiscoveryError> {
        Ok(Self {
            resolver: resolver(nameserver, std::time::Duration::from_secs(3))?,
            srv_name,
            host_name,
        })
    }

    async fn lookup_srv(&self, name: &str) -> Result<Discovered, DiscoveryError> {
        let answer = match self.resolver.srv_lookup(name).await {
            Ok(a) => a,
            Err(e) if e.is_no_records_found() => return Ok(Discovered::default()),
            Err(e) => return Err(dns_error(name, e)),
        };
        let mut out = Discovered::default();
        for srv in srv_targets(answer.answers(), answer.additionals()) {
            let ips = match srv.ips {
                Some(ips) => ips,
                None => match self.resolver.lookup_ip(srv.target.as_str()).await {
                    Ok(found) => found.iter().collect(),
                    Err(e) => {
                        out.skipped.push(Skipped {
                            target: format!("{}:{}", srv.target, srv.port),
                            reason: format!("SRV target has no address: {e}"),
                        });
                        continue;
                    }
                },
            };
            if ips.is_empty() {
                out.skipped.push(Skipped {
                    target: format!("{}:{}", srv.target, srv.port),
                    reason: "SRV target has no address".into(),
                });
            }
            for ip in ips {
                out.targets.push(ResolvedTarget {
                    host: srv.target.trim_end_matches('.').to_owned(),
                    port: Some(srv.port),
                    ip,
                });
            }
        }
        Ok(out)
    }

    async fn lookup_host(&self, name: &str) -> Result<Discovered, DiscoveryError> {
        match self.resolver.lookup_ip(name).await {
            Ok(found) => Ok(Discovered {
                targets: found
                    .iter()
                    .map(|ip| ResolvedTarget {
                        host: ip.to_string(),
                        port: None,
                        ip,
                    })
                    .collect(),
                skipped: vec![],
            }),
            Err(e) if e.is_no_records_found() => Ok(Discovered::default()),
            Err(e) => Err(dns_error(name, e)),
        }
    }
}

fn resolver(
    nameserver: Option<SocketAddr>,
    timeout: std::time::Duration,
) -> Result<TokioResolver, DiscoveryError> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match nameserver {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                provider,
            )
        }
        None => TokioResolver::builder(provider).map_err(|e| {
            dns_error(
                "/etc/resolv.conf",
                format!("cannot read the system resolver configuration: {e}"),
            )
        })?,
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    // Discovery must see changes at the next poll, not after a TTL.
    opts.cache_size = 0;
    opts.timeout = timeout;
    opts.attempts = 1;
    builder.build().map_err(|e| dns_error("resolver", e))
}

impl Discovery for DnsDiscovery {
    fn method(&self) -> &'static str {
        "dns"
    }

    fn lookup(&self) -> BoxFuture<'_, Result<Discovered, DiscoveryError>> {
        Box::pin(async move {
            match &self.srv_name {
                Some(srv) => self.lookup_srv(srv).await,
                None => self.lookup_host(&self.host_name).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kubernetes_scheme() {
        assert_eq!(
            service_fqdn("shop", "prod", "cluster.local"),
            "shop.prod.svc.cluster.local."
        );
        assert_eq!(
            service_fqdn("shop", "prod", ".cluster.local."),
            "shop.prod.svc.cluster.local."
        );
        assert_eq!(
            service_fqdn("shop.prod.svc.example.org.", "x", "y"),
            "shop.prod.svc.example.org."
        );
    }
}
