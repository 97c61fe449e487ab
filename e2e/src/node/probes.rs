//! Readiness and liveness probes (`httpGet` over HTTP or HTTPS, `tcpSocket`) with the
//! kubelet's timing settings and thresholds. As the kubelet does, an HTTPS probe checks
//! no certificate and presents none.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a probe checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Check {
    Http { port: u16, path: String, tls: bool },
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
        if get.host.is_some() || get.http_headers.as_ref().is_some_and(|h| !h.is_empty()) {
            return Err(format!(
                "container {:?}: this node's httpGet probes support neither host nor httpHeaders",
                c.name
            ));
        }
        let tls = match get.scheme.as_deref() {
            None | Some("HTTP") => false,
            Some("HTTPS") => true,
            Some(other) => {
                return Err(format!(
                    "container {:?}: httpGet scheme {other:?} is neither HTTP nor HTTPS",
                    c.name
                ));
            }
        };
        Check::Http {
            port: port_of(c, &get.port)?,
            path: get.path.clone().unwrap_or_else(|| "/".into()),
            tls,
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
            Check::Http { port, path, tls } => {
                let scheme = if *tls { "https" } else { "http" };
                let url = format!("{scheme}://{ip}:{port}{path}");
                let failed = |e: std::io::Error| format!("Get {url:?}: {e}");
                let s = tokio::net::TcpStream::connect((ip, *port))
                    .await
                    .map_err(failed)?;
                let code = if *tls {
                    let s = tokio_rustls::TlsConnector::from(unchecked_tls()?)
                        .connect(ServerName::IpAddress(ip.into()), s)
                        .await
                        .map_err(failed)?;
                    get(s, ip, *port, path).await
                } else {
                    get(s, ip, *port, path).await
                }
                .map_err(|e| format!("Get {url:?}: {e}"))?;
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

/// `GET path` on `s`: the status code.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    ip: IpAddr,
    port: u16,
    path: &str,
) -> Result<u16, String> {
    let host = std::net::SocketAddr::new(ip, port);
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.map_err(|e| e.to_string())?;
    if !head.starts_with(b"HTTP/") {
        return Err("not an HTTP answer".to_owned());
    }
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_owned())
}

/// The kubelet's TLS for HTTPS probes: any certificate is taken, none is presented.
/// Made once for every probe of the node.
fn unchecked_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS versions: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// Takes any server certificate (signatures are still checked), as the kubelet's probes do.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
                    path: "/".into(),
                    tls: false,
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
    fn https_probes_take_any_certificate_and_other_schemes_are_refused() {
        let (c, p) =
            container(json!({"httpGet": {"port": 8443, "path": "/ready", "scheme": "HTTPS"}}));
        let s = spec(&c, &p).unwrap();
        assert_eq!(
            s.check,
            Check::Http {
                port: 8443,
                path: "/ready".into(),
                tls: true
            }
        );
        let (c, p) = container(json!({"httpGet": {"port": 1, "scheme": "FTP"}}));
        assert!(spec(&c, &p).unwrap_err().contains("neither HTTP nor HTTPS"));
        let (c, p) = container(json!({"httpGet": {"port": 1, "host": "example.com"}}));
        assert!(
            spec(&c, &p)
                .unwrap_err()
                .contains("neither host nor httpHeaders")
        );
    }

    /// A real HTTPS server with a self-signed certificate for another name: the probe
    /// passes on 200 and fails on 503, as the kubelet's would; plain HTTP against it fails.
    #[tokio::test]
    async fn an_https_probe_reads_the_status_over_tls() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["somewhere.else".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.36.9.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable", "200 OK"] {
                let (s, _) = listener.accept().await.unwrap();
                let Ok(mut s) = acceptor.accept(s).await else {
                    continue; // the plain-HTTP probe
                };
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .await;
                let _ = s.shutdown().await;
            }
        });
        let probe = |tls| ProbeSpec {
            check: Check::Http {
                port,
                path: "/ready".into(),
                tls,
            },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            success_threshold: 1,
            failure_threshold: 1,
        };
        let ip: IpAddr = "127.36.9.1".parse().unwrap();
        run(ip, &probe(true)).await.expect("200 over TLS");
        let e = run(ip, &probe(true)).await.unwrap_err();
        assert!(e.contains("503"), "{e}");
        assert!(
            run(ip, &probe(false)).await.is_err(),
            "plain HTTP to a TLS port"
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
