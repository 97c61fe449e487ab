//! Discovery: where are my peers? One trait, four methods (Akka Discovery's model).
//!
//! Every method answers with [`ResolvedTarget`]s carrying an IP (names are resolved
//! inside the method, so every node orders the same numbers) and the targets it had to
//! skip with the reason, which bootstrap status and metrics show. [`contact_points`]
//! then applies the port rules shared by all methods.

pub mod aggregate;
pub mod config;
pub mod dns;
pub mod kubernetes;

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use crate::base::address::ContactPoint;
use crate::config::{AgentConfig, DiscoveryMethod};

/// A boxed future, so methods can be used as `dyn Discovery`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One peer as discovery reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    /// What discovery called it (pod name, SRV target, configured host).
    pub host: String,
    /// Management port, when discovery knows it.
    pub port: Option<u16>,
    pub ip: IpAddr,
}

/// A target left out, and why (shown in `/bootstrap/status`, counted in metrics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub target: String,
    pub reason: String,
}

/// The answer of one lookup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    pub targets: Vec<ResolvedTarget>,
    pub skipped: Vec<Skipped>,
}

/// Why a lookup failed. Bootstrap makes no decision after a failed lookup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("lookup timed out after {0:?} (bootstrap.resolve-timeout)")]
    Timeout(std::time::Duration),
    #[error("DNS lookup of {name} failed: {message}")]
    Dns { name: String, message: String },
    #[error("{0}")]
    Kubernetes(String),
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error("every discovery method failed: {}", .0.join("; "))]
    AllFailed(Vec<String>),
}

/// A way of finding contact points.
pub trait Discovery: Send + Sync + fmt::Debug {
    /// The method's name as in the configuration.
    fn method(&self) -> &'static str;
    /// One lookup. Callers bound it with `bootstrap.resolve-timeout`.
    fn lookup(&self) -> BoxFuture<'_, Result<Discovered, DiscoveryError>>;
}

/// Builds the configured method.
pub fn from_config(config: &AgentConfig) -> Result<Arc<dyn Discovery>, DiscoveryError> {
    build(config.settings.bootstrap.discovery_method, config)
}

fn build(
    method: DiscoveryMethod,
    config: &AgentConfig,
) -> Result<Arc<dyn Discovery>, DiscoveryError> {
    Ok(match method {
        DiscoveryMethod::Config => Arc::new(config::ConfigDiscovery::from_config(config)),
        DiscoveryMethod::Dns => Arc::new(dns::DnsDiscovery::from_config(config)?),
        DiscoveryMethod::KubernetesApi => {
            Arc::new(kubernetes::KubernetesDiscovery::from_config(config))
        }
        DiscoveryMethod::Aggregate => {
            let methods = config
                .settings
                .discovery
                .aggregate
                .discovery_methods
                .iter()
                .map(|m| build(*m, config))
                .collect::<Result<Vec<_>, _>>()?;
            Arc::new(aggregate::AggregateDiscovery::new(methods))
        }
    })
}

/// Port rules shared by every method (Akka's `fallback-port` and
/// `filter-on-fallback-port`): a target without a port gets the fallback port; without
/// a port name, targets on another port are dropped when filtering is on. Duplicates
/// (same IP and port) collapse into one.
pub fn contact_points(
    found: &Discovered,
    fallback_port: u16,
    port_name_set: bool,
    filter_on_fallback_port: bool,
) -> (Vec<ContactPoint>, Vec<Skipped>) {
    let mut points = std::collections::BTreeSet::new();
    let mut skipped = found.skipped.clone();
    for t in &found.targets {
        let port = t.port.unwrap_or(fallback_port);
        if !port_name_set && filter_on_fallback_port && port != fallback_port {
            skipped.push(Skipped {
                target: format!("{}:{port}", t.host),
                reason: format!("port {port} is not the fallback port {fallback_port} (bootstrap.filter-on-fallback-port)"),
            });
            continue;
        }
        points.insert(ContactPoint::named(t.ip, port, t.host.clone()));
    }
    (points.into_iter().collect(), skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: Option<u16>, ip: &str) -> ResolvedTarget {
        ResolvedTarget {
            host: host.into(),
            port,
            ip: ip.parse().unwrap(),
        }
    }

    #[test]
    fn fallback_port_fills_in_and_filters() {
        let found = Discovered {
            targets: vec![
                t("a", None, "10.0.0.1"),
                t("a", Some(8080), "10.0.0.1"),
                t("b", Some(8558), "10.0.0.2"),
                t("b-again", Some(8558), "10.0.0.2"),
            ],
            skipped: vec![],
        };
        let (points, skipped) = contact_points(&found, 8558, false, true);
        let shown: Vec<String> = points.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.1:8558", "10.0.0.2:8558"]);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].reason.contains("8080"));

        let (points, skipped) = contact_points(&found, 8558, false, false);
        assert_eq!(points.len(), 3);
        assert!(skipped.is_empty());
        let (points, _) = contact_points(&found, 8558, true, true);
        assert_eq!(
            points.len(),
            3,
            "with a port name every discovered port is a management port"
        );
    }
}
