//! Readiness and liveness probes (`httpGet`, `tcpSocket`) with the kubelet's timing
//! settings and thresholds.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a probe checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Check {
    Http { port: u16, path: String },
    Tcp { port: u16 },
}

/// A probe with its timing, defaults as the kubelet's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProbeSpec {
    pub check: Check,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

fn port_of(c: &Container, port: &IntOrString) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} is out of range")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("container {:?} has no port named {name:?}", c.name)),
    }
}

/// The probe as this node runs it; `exec` and `grpc` probes are refused with a message.
pub(crate) fn spec(c: &Container, p: &Probe) -> Result<ProbeSpec, String> {
    let check = if let Some(get) = &p.http_get {
        Check::Http {
            port: port_of(c, &get.port)?,
            path: get.path.clone().unwrap_or_else(|| "/".into()),
        }
    } else if let Some(tcp) = &p.tcp_socket {
        Check::Tcp {
            port: port_of(c, &tcp.port)?,
        }
    } else {
        return Err(format!(
            "container {:?}: this node runs httpGet and tcpSocket probes only",
            c.name
        ));
    };
    let secs =
        |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    Ok(ProbeSpec {
        check,
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}

/// Runs the check once; the error says what failed, as in the kubelet's events.
pub(crate) async fn run(ip: IpAddr, p: &ProbeSpec) -> Result<(), String> {
    let attempt = async {
        match &p.check {
            Check::Tcp { port } => tokio::net::TcpStream::connect((ip, *port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {ip}:{port}: {e}")),
            Check::Http { port, path } => {
                let url = format!("http://{ip}:{port}{path}");
                let mut s = tokio::net::TcpStream::connect((ip, *port))
                    .await
                    .map_err(|e| format!("Get {url:?}: {e}"))?;
                s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
                    .await
                    .map_err(|e| format!("Get {url:?}: {e}"))?;
                let mut head = [0u8; 12];
                s.read_exact(&mut head)
                    .await
                    .map_err(|e| format!("Get {url:?}: {e}"))?;
                let code: u16 = std::str::from_utf8(&head[9..12])
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("Get {url:?}: not an HTTP answer"))?;
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("HTTP probe failed with statuscode: {code}"))
                }
            }
        }
    };
    tokio::time::timeout(p.timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("timeout after {:?}", p.timeout)))
}

/// Consecutive results against the thresholds: the state flips to failed after
/// `failure_threshold` failures in a row and back after `success_threshold` successes.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    healthy: bool,
    streak: u32,
    success_threshold: u32,
    failure_threshold: u32,
}

impl Verdict {
    /// `healthy` is the state before any result: false for readiness, true for liveness.
    pub fn new(p: &ProbeSpec, healthy: bool) -> Self {
        Self {
            healthy,
            streak: 0,
            success_threshold: p.success_threshold,
            failure_threshold: p.failure_threshold,
        }
    }

    /// Records a result; returns the state after it.
    pub fn record(&mut self, ok: bool) -> bool {
        if ok == self.healthy {
            self.streak = 0;
            return self.healthy;
        }
        self.streak += 1;
        let needed = if ok {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
        }
        self.healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(probe: serde_json::Value) -> (Container, Probe) {
        let c: Container = serde_json::from_value(json!({
            "name": "app", "ports": [{"name": "http", "containerPort": 8080}],
        }))
        .unwrap();
        (c, serde_json::from_value(probe).unwrap())
    }

    #[test]
    fn defaults_are_the_kubelets() {
        let (c, p) = container(json!({"httpGet": {"port": "http"}}));
        let s = spec(&c, &p).unwrap();
        assert_eq!(
            s,
            ProbeSpec {
                check: Check::Http {
                    port: 8080,
                    path: "/".into()
                },
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
    }

    #[test]
    fn unknown_port_names_and_exec_probes_are_refused() {
        let (c, p) = container(json!({"tcpSocket": {"port": "grpc"}}));
        assert!(spec(&c, &p).unwrap_err().contains("no port named \"grpc\""));
        let (c, p) = container(json!({"exec": {"command": ["true"]}}));
        assert!(spec(&c, &p).unwrap_err().contains("httpGet and tcpSocket"));
    }

    #[test]
    fn thresholds_need_results_in_a_row() {
        let (c, p) = container(
            json!({"tcpSocket": {"port": 1}, "failureThreshold": 3, "successThreshold": 2}),
        );
        let mut live = Verdict::new(&spec(&c, &p).unwrap(), true);
        assert!(live.record(false));
        assert!(live.record(false));
        assert!(live.record(true), "a success breaks the streak");
        assert!(live.record(false));
        assert!(live.record(false));
        assert!(!live.record(false), "third failure in a row");
        assert!(!live.record(true));
        assert!(live.record(true), "second success in a row");
    }
}
