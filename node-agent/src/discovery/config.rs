//! `config` discovery: a static list of endpoints (Akka's config discovery). Names are
//! resolved with the system resolver on every lookup, so a changed name follows.

use crate::config::{AgentConfig, parse_endpoint};

use super::{BoxFuture, Discovered, Discovery, DiscoveryError, ResolvedTarget, Skipped};

#[derive(Debug, Clone)]
pub struct ConfigDiscovery {
    endpoints: Vec<(String, Option<u16>)>,
}

impl ConfigDiscovery {
    pub fn new(endpoints: Vec<(String, Option<u16>)>) -> Self {
        Self { endpoints }
    }

    pub fn from_config(config: &AgentConfig) -> Self {
        // Validated at load: every endpoint parses.
        Self::new(
            config
                .settings
                .discovery
                .config
                .endpoints
                .iter()
                .filter_map(|e| parse_endpoint(e).ok())
                .collect(),
        )
    }
}

impl Discovery for ConfigDiscovery {
    fn method(&self) -> &'static str {
        "config"
    }

    fn lookup(&self) -> BoxFuture<'_, Result<Discovered, DiscoveryError>> {
        Box::pin(async move {
            let mut out = Discovered::default();
            for (host, port) in &self.endpoints {
                if let Ok(ip) = host.parse() {
                    out.targets.push(ResolvedTarget {
                        host: host.clone(),
                        port: *port,
                        ip,
                    });
                    continue;
                }
                match tokio::net::lookup_host((host.as_str(), port.unwrap_or(0))).await {
                    Ok(addrs) => {
                        let mut any = false;
                        for a in addrs {
                            any = true;
                            out.targets.push(ResolvedTarget {
                                host: host.clone(),
                                port: *port,
                                ip: a.ip(),
                            });
                        }
                        if !any {
                            out.skipped.push(Skipped {
                                target: host.clone(),
                                reason: "name has no addresses".into(),
                            });
                        }
                    }
                    Err(e) => out.skipped.push(Skipped {
                        target: host.clone(),
                        reason: format!("cannot resolve: {e}"),
                    }),
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ips_pass_through_and_names_resolve() {
        let d = ConfigDiscovery::new(vec![
            ("10.0.0.1".into(), Some(8558)),
            ("localhost".into(), None),
            ("no-such-host.invalid".into(), Some(1)),
        ]);
        let found = d.lookup().await.unwrap();
        assert_eq!(found.targets[0].ip.to_string(), "10.0.0.1");
        assert!(
            found
                .targets
                .iter()
                .any(|t| t.host == "localhost" && t.ip.is_loopback())
        );
        assert_eq!(found.skipped.len(), 1);
        assert_eq!(found.skipped[0].target, "no-such-host.invalid");
    }
}
