//! TLS on both ports, from three PEM files that may change while the agent runs: the
//! agent's certificate (chain), its private key, and the CAs it trusts (one or more: two
//! during a CA rotation, the old and the new).
//!
//! Peers are reached by IP address, which no certificate can name in advance, so every
//! certificate is checked against one fixed name, `tls.server-name`, that the agents of
//! a cluster share. The management port serves TLS to anyone (the kubelet's HTTPS probes
//! present no certificate and check none; the mutating routes keep their bearer token);
//! the cluster port also requires a client certificate from a trusted CA, so that a peer
//! without one never gets to send a frame.
//!
//! The configurations handed to rustls never change; what they use — the certificate,
//! the trusted CAs — is looked up at each handshake from the material last loaded, so a
//! reload takes effect on the next connection without rebuilding clients or listeners.
//! Connections already open keep the certificates they started with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::base::{ReadError, read_capped};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

/// The three files, as named in the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Largest TLS file read (a certificate chain or CA bundle is a few KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

impl TlsFiles {
    /// What the files hold now, or which one could not be read (or is larger than
    /// [`MAX_FILE_BYTES`]). Blocking: on the runtime, call it through `spawn_blocking`.
    pub fn read(&self) -> Result<TlsPem, String> {
        let read = |what: &str, path: &Path| match read_capped(path, MAX_FILE_BYTES) {
            Ok(bytes) => Ok(bytes),
            Err(ReadError::Io(e)) => Err(format!("cannot read {what} {}: {e}", path.display())),
            Err(ReadError::TooLarge) => Err(format!(
                "{what} {} is larger than {MAX_FILE_BYTES} bytes; it should hold PEM certificates or a key",
                path.display()
            )),
        };
        Ok(TlsPem {
            cert: read("tls.cert-file", &self.cert)?,
            key: read("tls.key-file", &self.key)?,
            ca: read("tls.ca-file", &self.ca)?,
        })
    }
}

/// The bytes of the three files.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub ca: Vec<u8>,
}

impl fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        write!(
            f,
            "TlsPem(cert {} bytes, key <{} bytes>, ca {} bytes)",
            self.cert.len(),
            self.key.len(),
            self.ca.len()
        )
    }
}

/// The crypto of every TLS connection of the agent (ring, as the Kubernetes client uses).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One DER element at the start of `der`: its tag, its content and what follows it;
/// None if it is cut short or its length takes more than 4 bytes.
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The end of a certificate's validity (seconds since the Unix epoch), read from its
/// DER: `tbsCertificate.validity.notAfter`. None if it cannot be read.
pub fn not_after(der: &[u8]) -> Option<u64> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, certificate, _) = der_element(der)? else {
        return None;
    };
    let (SEQUENCE, mut tbs, _) = der_element(certificate)? else {
        return None;
    };
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    for _ in 0..3 {
        tbs = der_element(tbs)?.2;
    }
    let (SEQUENCE, validity, _) = der_element(tbs)? else {
        return None;
    };
    let (_, _, rest) = der_element(validity)?; // notBefore
    let (tag, time, _) = der_element(rest)?;
    let text = std::str::from_utf8(time).ok()?;
    // UTCTime YYMMDDHHMMSSZ (years 1950–2049) or GeneralizedTime YYYYMMDDHHMMSSZ.
    let (year, rest) = match tag {
        0x17 if text.len() == 13 => {
            let yy: u64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 if text.len() == 15 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<u64> { rest.get(i..i + 2)?.parse().ok() };
    if !rest.ends_with('Z') {
        return None;
    }
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    Some(days_from_civil(year, month, day)? * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// `secs` since the Unix epoch as RFC 3339 in UTC (`2027-01-31T12:00:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // The inverse of days_from_civil.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Hex SHA-256 of a DER certificate: how logs and status name a certificate.
pub fn fingerprint(der: &[u8]) -> String {
    crate::base::hex(&Sha256::digest(der))
}

/// Checked TLS material: a certificate and key that belong together, valid now for
/// `server_name` and signed by one of the trusted CAs, for use as server and as client.
pub struct Material {
    pem: TlsPem,
    /// The name every peer's certificate must carry, client or server.
    server_name: ServerName<'static>,
    certified: Arc<CertifiedKey>,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    /// Fingerprint of this agent's certificate.
    pub certificate: String,
    /// Fingerprints of the trusted CAs, in file order.
    pub trusted: Vec<String>,
    /// When this agent's certificate expires (seconds since the Unix epoch).
    pub not_after: Option<u64>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("certificate", &self.certificate)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Parses and checks `pem`; the message says which file is wrong and how.
    pub fn load(
        pem: TlsPem,
        server_name: &ServerName<'static>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        Self::load_at(pem, server_name, provider, UnixTime::now())
    }

    /// [`Material::load`] with the certificate checked as at `now` (which CA issued a
    /// certificate that has ended, say).
    pub fn load_at(
        pem: TlsPem,
        server_name: &ServerName<'static>,
        provider: &Arc<CryptoProvider>,
        now: UnixTime,
    ) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert-file is not PEM certificates: {e}"))?;
        let Some(end_entity) = chain.first().cloned() else {
            return Err("tls.cert-file holds no certificate (expected PEM `CERTIFICATE` blocks, the agent's own first)".to_owned());
        };
        let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|e| {
            format!("tls.key-file holds no private key in PEM (PKCS#8, PKCS#1 or SEC1): {e}")
        })?;
        let certified = CertifiedKey::from_der(chain.clone(), key, provider).map_err(|e| {
            format!("tls.key-file does not belong to the certificate in tls.cert-file: {e}")
        })?;
        let mut roots = RootCertStore::empty();
        let mut trusted = Vec::new();
        for ca in CertificateDer::pem_slice_iter(&pem.ca) {
            let ca = ca.map_err(|e| format!("tls.ca-file is not PEM certificates: {e}"))?;
            trusted.push(fingerprint(&ca));
            roots.add(ca).map_err(|e| {
                format!("tls.ca-file holds a certificate that is not a usable CA: {e}")
            })?;
        }
        if roots.is_empty() {
            return Err("tls.ca-file holds no certificate (expected the PEM `CERTIFICATE` of each trusted CA)".to_owned());
        }
        let roots = Arc::new(roots);
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| format!("tls.ca-file: {e}"))?;
        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("tls.ca-file: {e}"))?;
        // What peers will check, checked here first: a certificate they would refuse
        // is refused at start (or not loaded), not discovered as a cluster that never forms.
        server_verifier
            .verify_server_cert(&end_entity, &chain[1..], server_name, &[], now)
            .map_err(|e| {
                format!(
                    "the certificate in tls.cert-file is not valid as a server for `{}` under the CAs of tls.ca-file: {e} (it must name `{}` as a DNS name, be within its validity dates, allow serverAuth and chain to a CA in tls.ca-file)",
                    server_name.to_str(),
                    server_name.to_str()
                )
            })?;
        client_verifier
            .verify_client_cert(&end_entity, &chain[1..], now)
            .map_err(|e| {
                format!("the certificate in tls.cert-file is not valid as a client under the CAs of tls.ca-file: {e} (peers require it on the cluster port: it must allow clientAuth too)")
            })?;
        Ok(Self {
            certificate: fingerprint(&end_entity),
            not_after: not_after(&end_entity),
            trusted,
            pem,
            server_name: server_name.clone(),
            certified: Arc::new(certified),
            server_verifier,
            client_verifier,
        })
    }
}

/// What is in use now, shared by every configuration.
#[derive(Debug)]
struct Current(RwLock<Arc<Material>>);

impl Current {
    fn get(&self) -> Arc<Material> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[derive(Debug)]
struct Resolver(Arc<Current>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().certified.clone())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks a server's certificate with the CAs trusted now; signatures with the
/// provider's algorithms.
#[derive(Debug)]
struct ServerCheck(Arc<Current>, WebPkiSupportedAlgorithms);

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.get().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.1)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.1)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.supported_schemes()
    }
}

/// Checks a client's certificate (cluster port) with the CAs trusted now, and that it
/// carries the cluster's name; signatures with the provider's algorithms.
#[derive(Debug)]
struct ClientCheck(Arc<Current>, WebPkiSupportedAlgorithms);

impl ClientCertVerifier for ClientCheck {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; an agent has one certificate and sends it whatever they say.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let m = self.0.get();
        let verified = m
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        // A trusted CA may issue for others too (a company CA, a shared issuer): the
        // peer must also be a member by name. Every agent's certificate is checked as a
        // server for the name at load, so a member's passes.
        m.server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            &m.server_name,
            &[],
            now,
        )?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.1)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.1)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.1.supported_schemes()
    }
}

/// Validated TLS settings: what [`Tls::new`] starts from.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub files: TlsFiles,
    pub server_name: ServerName<'static>,
    /// How often the files are read again.
    pub reload_interval: Duration,
    /// What the files held when the settings were checked.
    pub material: Arc<Material>,
}

/// What a reload found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files hold what is in use.
    Unchanged,
    /// New material is in use.
    Loaded,
    /// The files changed but cannot be used (or read); the old material stays.
    Failed(String),
}

/// A certificate closer to its end than this is logged as a warning when loaded.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Warns when the certificate in use expires within [`EXPIRY_WARNING`].
pub fn warn_if_expiring(not_after: Option<u64>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Some(end) = not_after
        && end < now + EXPIRY_WARNING.as_secs()
    {
        warn!(not_after = %rfc3339(end), "the TLS certificate in tls.cert-file expires within 14 days: peers will refuse it then; put a new one in place (it is picked up without a restart)");
    }
}

/// The agent's TLS: configurations for both ports and for its clients, following the files.
pub struct Tls {
    files: TlsFiles,
    server_name: ServerName<'static>,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    management: Arc<ServerConfig>,
    cluster: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    reload_interval: Duration,
    /// Counts the reloads that dropped a trusted CA: connections made before one end.
    trust_dropped: tokio::sync::watch::Sender<u64>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("server_name", &self.server_name)
            .field("material", &self.current.get())
            .finish_non_exhaustive()
    }
}

impl Tls {
    pub fn new(config: &TlsConfig) -> Result<Arc<Self>, String> {
        let provider = provider();
        let current = Arc::new(Current(RwLock::new(config.material.clone())));
        let algorithms = provider.signature_verification_algorithms;
        let versions = |e: rustls::Error| format!("TLS protocol versions: {e}");
        let management = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(current.clone())));
        let cluster = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_client_cert_verifier(Arc::new(ClientCheck(current.clone(), algorithms)))
            .with_cert_resolver(Arc::new(Resolver(current.clone())));
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerCheck(current.clone(), algorithms)))
            .with_client_cert_resolver(Arc::new(Resolver(current.clone())));
        // No session resumption: a resumed session skips the certificate checks, so a
        // peer whose CA was dropped by a rotation could come back on an old ticket.
        // Connections are long-lived; a full handshake each time costs little.
        let (mut management, mut cluster, mut client) = (management, cluster, client);
        for server in [&mut management, &mut cluster] {
            server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            server.send_tls13_tickets = 0;
        }
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(Self {
            files: config.files.clone(),
            server_name: config.server_name.clone(),
            provider,
            current,
            management: Arc::new(management),
            cluster: Arc::new(cluster),
            client: Arc::new(client),
            reload_interval: config.reload_interval,
            trust_dropped: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// For the management port: no client certificate asked.
    pub fn management_server(&self) -> Arc<ServerConfig> {
        self.management.clone()
    }

    /// For the cluster port: a client certificate from a trusted CA required.
    pub fn cluster_server(&self) -> Arc<ServerConfig> {
        self.cluster.clone()
    }

    /// For connections to peers (both ports): checks their certificate against the
    /// trusted CAs and [`server_name`](Self::server_name), presents this agent's own.
    pub fn client(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// What a management API client needs: [`client`](Self::client) and [`server_name`](Self::server_name).
    pub fn for_clients(&self) -> (Arc<ClientConfig>, ServerName<'static>) {
        (self.client(), self.server_name())
    }

    /// The name every peer's certificate is checked against.
    pub fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }

    /// Fingerprints of the certificate and the CAs in use.
    pub fn in_use(&self) -> (String, Vec<String>) {
        let m = self.current.get();
        (m.certificate.clone(), m.trusted.clone())
    }

    /// When the certificate in use expires (seconds since the Unix epoch).
    pub fn not_after(&self) -> Option<u64> {
        self.current.get().not_after
    }

    /// Changes each time a reload stops trusting a CA. A connection authenticated
    /// before (its peer's certificate maybe from that CA) closes on it, so a dropped CA
    /// cuts its peers off at once; the connections are made anew with the new material.
    pub fn trust_dropped(&self) -> tokio::sync::watch::Receiver<u64> {
        self.trust_dropped.subscribe()
    }

    /// Reads the files (blocking); when they changed and are usable, uses them from the
    /// next handshake.
    pub fn reload(&self) -> Reloaded {
        self.use_pem(self.files.read())
    }

    fn use_pem(&self, pem: Result<TlsPem, String>) -> Reloaded {
        let pem = match pem {
            Ok(p) => p,
            Err(e) => return Reloaded::Failed(e),
        };
        let before = self.current.get();
        if pem == before.pem {
            return Reloaded::Unchanged;
        }
        match Material::load(pem, &self.server_name, &self.provider) {
            Ok(m) => {
                let dropped: Vec<&String> = before
                    .trusted
                    .iter()
                    .filter(|ca| !m.trusted.contains(ca))
                    .collect();
                info!(certificate = %m.certificate, not_after = m.not_after.map(rfc3339), trusted = ?m.trusted, no_longer_trusted = ?dropped, "TLS files changed: new certificate and CAs in use from the next connection");
                warn_if_expiring(m.not_after);
                let dropped = !dropped.is_empty();
                *self.current.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
                if dropped {
                    self.trust_dropped.send_modify(|n| *n += 1);
                }
                Reloaded::Loaded
            }
            Err(e) => Reloaded::Failed(e),
        }
    }

    /// Reloads every `tls.reload-interval`, until the task is aborted. A failed reload
    /// is logged (once per distinct error) and the material in use stays.
    pub async fn follow(self: Arc<Self>) {
        let mut last_error = None;
        loop {
            tokio::time::sleep(self.reload_interval).await;
            let files = self.files.clone();
            let pem = tokio::task::spawn_blocking(move || files.read())
                .await
                .unwrap_or_else(|e| Err(format!("reading the TLS files failed: {e}")));
            match self.use_pem(pem) {
                Reloaded::Failed(e) => {
                    if last_error.as_ref() != Some(&e) {
                        warn!(error = %e, "TLS files changed but cannot be used; the certificate and CAs in use stay");
                        last_error = Some(e);
                    }
                }
                _ => last_error = None,
            }
        }
    }
}

#[cfg(test)]
#[path = "../tests/support/certs.rs"]
mod certs;

#[cfg(test)]
mod tests {
    use super::certs::{Leaf, TestCa, TlsPaths};
    use super::*;
    use rcgen::ExtendedKeyUsagePurpose;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const NAME: &str = "cache.team-a.muster";

    fn name() -> ServerName<'static> {
        ServerName::try_from(NAME).expect("name")
    }

    fn pem(leaf: &Leaf, cas: &[&TestCa]) -> TlsPem {
        TlsPem {
            cert: leaf.cert.clone().into_bytes(),
            key: leaf.key.clone().into_bytes(),
            ca: cas.iter().map(|c| c.pem()).collect::<String>().into_bytes(),
        }
    }

    fn load(leaf: &Leaf, cas: &[&TestCa]) -> Result<Material, String> {
        Material::load(pem(leaf, cas), &name(), &provider())
    }

    #[test]
    fn good_material_loads_and_names_its_certificates() {
        let (old, new) = (TestCa::new("old"), TestCa::new("new"));
        let m = load(&old.issue(NAME), &[&old, &new]).expect("loads");
        assert_eq!(m.trusted.len(), 2);
        assert_eq!(m.certificate.len(), 64);
        assert_ne!(m.trusted[0], m.trusted[1]);
        // A certificate of the new CA under a bundle of both: the middle of a rotation.
        load(&new.issue(NAME), &[&old, &new]).expect("the new CA's certificate loads");
    }

    #[test]
    fn bad_material_is_refused_naming_the_file_and_the_fix() {
        let ca = TestCa::new("ca");
        let other = TestCa::new("other");
        let good = ca.issue(NAME);
        let cases = [
            (
                Leaf {
                    cert: good.cert.clone(),
                    key: ca.issue(NAME).key,
                },
                vec![&ca],
                "tls.key-file does not belong",
            ),
            (ca.issue("other.team-b.muster"), vec![&ca], "must name"),
            (other.issue(NAME), vec![&ca], "chain to a CA in tls.ca-file"),
            (
                ca.issue_with(
                    NAME,
                    (2020, 2021),
                    &[
                        ExtendedKeyUsagePurpose::ServerAuth,
                        ExtendedKeyUsagePurpose::ClientAuth,
                    ],
                ),
                vec![&ca],
                "validity dates",
            ),
            (
                ca.issue_with(NAME, (2020, 2099), &[ExtendedKeyUsagePurpose::ServerAuth]),
                vec![&ca],
                "clientAuth",
            ),
            (good.clone(), vec![], "tls.ca-file holds no certificate"),
            (
                Leaf {
                    cert: String::new(),
                    key: good.key.clone(),
                },
                vec![&ca],
                "tls.cert-file holds no certificate",
            ),
            (
                Leaf {
                    cert: good.cert.clone(),
                    key: "not a key".into(),
                },
                vec![&ca],
                "tls.key-file holds no private key",
            ),
        ];
        for (leaf, cas, expected) in cases {
            let e = load(&leaf, &cas).expect_err(expected);
            assert!(e.contains(expected), "{expected:?} not in: {e}");
            assert!(!e.contains("PRIVATE KEY"), "the key is never quoted: {e}");
        }
    }

    fn tls_in(dir: &Path, leaf: &Leaf, cas: &[&TestCa]) -> (Arc<Tls>, TlsPaths) {
        tls_named(dir, leaf, cas, name())
    }

    /// An agent's TLS that takes `server_name` as the cluster's name.
    fn tls_named(
        dir: &Path,
        leaf: &Leaf,
        cas: &[&TestCa],
        server_name: ServerName<'static>,
    ) -> (Arc<Tls>, TlsPaths) {
        let paths = TlsPaths::new(dir, "agent");
        let bundle: Vec<String> = cas.iter().map(|c| c.pem()).collect();
        let refs: Vec<&str> = bundle.iter().map(String::as_str).collect();
        paths.write(leaf, &refs);
        let files = TlsFiles {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            ca: paths.ca.clone(),
        };
        let material = Material::load(files.read().expect("read"), &server_name, &provider())
            .expect("material");
        let tls = Tls::new(&TlsConfig {
            files,
            server_name,
            reload_interval: Duration::from_millis(100),
            material: Arc::new(material),
        })
        .expect("tls");
        (tls, paths)
    }

    fn folder(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("muster-tls-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("folder");
        dir
    }

    #[test]
    fn the_end_of_a_certificate_is_read_from_its_der() {
        let ca = TestCa::new("dates");
        let leaf = ca.issue_with(
            NAME,
            (2020, 2049),
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        );
        let der = CertificateDer::from_pem_slice(leaf.cert.as_bytes()).expect("pem");
        let end = not_after(&der).expect("notAfter");
        assert_eq!(rfc3339(end), "2049-12-31T00:00:00Z");
        // GeneralizedTime from 2050 on.
        let later = ca.issue_with(NAME, (2020, 2099), &[ExtendedKeyUsagePurpose::ServerAuth]);
        let der = CertificateDer::from_pem_slice(later.cert.as_bytes()).expect("pem");
        assert_eq!(
            rfc3339(not_after(&der).expect("notAfter")),
            "2099-12-31T00:00:00Z"
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(days_from_civil(2000, 2, 29), Some(11_016));
        // Whatever else is in the file, no panic and no date.
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            &der[..40],
        ] {
            assert_eq!(not_after(bad), None);
        }
        for cut in 0..der.len() {
            let _ = not_after(&der[..cut]);
        }
        for i in 0..der.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bytes = der.to_vec();
                bytes[i] ^= flip;
                let _ = not_after(&bytes);
            }
        }
        let m = load(&leaf, &[&ca]).expect("loads");
        assert_eq!(m.not_after, Some(end));
    }

    #[test]
    fn a_reload_takes_a_good_change_and_keeps_the_old_on_a_bad_one() {
        let dir = folder("reload");
        let (a, b) = (TestCa::new("a"), TestCa::new("b"));
        let (tls, paths) = tls_in(&dir, &a.issue(NAME), &[&a]);
        let (first, _) = tls.in_use();
        assert_eq!(tls.reload(), Reloaded::Unchanged);
        paths.write(&b.issue(NAME), &[&a.pem(), &b.pem()]);
        assert_eq!(tls.reload(), Reloaded::Loaded);
        let (second, trusted) = tls.in_use();
        assert_ne!(first, second);
        assert_eq!(trusted.len(), 2);
        // A certificate of a CA no longer trusted: refused, the one in use stays.
        paths.write(&a.issue(NAME), &[&b.pem()]);
        assert!(matches!(tls.reload(), Reloaded::Failed(e) if e.contains("chain")));
        assert_eq!(tls.in_use().0, second);
        std::fs::remove_file(&paths.key).expect("remove");
        assert!(matches!(tls.reload(), Reloaded::Failed(e) if e.contains("tls.key-file")));
        assert_eq!(tls.in_use().0, second);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One handshake on the cluster port's configuration, the client asking for the
    /// server's name; the byte echoed proves it. The server's error comes first.
    async fn handshake(server: &Tls, client: &Tls) -> Result<(), String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(server.cluster_server());
        let serving = tokio::spawn(async move {
            let (s, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut s = acceptor.accept(s).await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            s.write_all(&b).await.map_err(|e| e.to_string())
        });
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let connector = tokio_rustls::TlsConnector::from(client.client());
        let result = async {
            let mut s = connector
                .connect(server.server_name(), tcp)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(&[7]).await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            (b == [7])
                .then_some(())
                .ok_or_else(|| "wrong echo".to_owned())
        }
        .await;
        let served = serving.await.expect("server task");
        served.and(result)
    }

    #[tokio::test]
    async fn the_cluster_port_takes_only_peers_with_a_trusted_certificate_and_follows_rotation() {
        let dir = folder("handshake");
        let (old, new, stranger) = (TestCa::new("old"), TestCa::new("new"), TestCa::new("x"));
        let _ = std::fs::create_dir_all(dir.join("s"));
        let (server, server_files) = tls_in(&dir.join("s"), &old.issue(NAME), &[&old]);
        let _ = std::fs::create_dir_all(dir.join("c"));
        let (client, client_files) = tls_in(&dir.join("c"), &old.issue(NAME), &[&old]);
        handshake(&server, &client).await.expect("same CA");

        // A client whose certificate comes from another CA is refused by the server.
        let _ = std::fs::create_dir_all(dir.join("x"));
        let (outsider, _) = tls_in(&dir.join("x"), &stranger.issue(NAME), &[&stranger, &old]);
        let e = handshake(&server, &outsider).await.expect_err("another CA");
        assert!(e.contains("certificate"), "refused by the server: {e}");

        // A certificate of the same CA for another name (a shared issuer's) is refused
        // by the cluster port too: a peer must be a member by name.
        let _ = std::fs::create_dir_all(dir.join("n"));
        let other_name = ServerName::try_from("other.team-b.muster").expect("name");
        let (neighbour, _) = tls_named(
            &dir.join("n"),
            &old.issue("other.team-b.muster"),
            &[&old],
            other_name,
        );
        let e = handshake(&server, &neighbour)
            .await
            .expect_err("a certificate for another name");
        println!("another name: {e}");
        assert!(
            e.contains("Name") || e.contains("name"),
            "refused by the server for its name: {e}"
        );
        // It is a good certificate otherwise: the neighbour's own port takes it.
        handshake(&neighbour, &neighbour)
            .await
            .expect("the neighbour's own name");

        // Rotation: both trust old and new, then the server moves to a certificate of
        // the new CA while the client still has an old one: both directions still work.
        server_files.write(&old.issue(NAME), &[&old.pem(), &new.pem()]);
        client_files.write(&old.issue(NAME), &[&old.pem(), &new.pem()]);
        assert_eq!(server.reload(), Reloaded::Loaded);
        assert_eq!(client.reload(), Reloaded::Loaded);
        server_files.write(&new.issue(NAME), &[&old.pem(), &new.pem()]);
        assert_eq!(server.reload(), Reloaded::Loaded);
        handshake(&server, &client)
            .await
            .expect("overlap, server on new");
        handshake(&client, &server)
            .await
            .expect("overlap, client on new");
        // The end of the rotation on the server: the old CA is no longer trusted, so
        // the client still on an old certificate is refused until it moves too.
        server_files.write(&new.issue(NAME), &[&new.pem()]);
        assert_eq!(server.reload(), Reloaded::Loaded);
        assert!(handshake(&server, &client).await.is_err());
        client_files.write(&new.issue(NAME), &[&new.pem()]);
        assert_eq!(client.reload(), Reloaded::Loaded);
        handshake(&server, &client).await.expect("both on new");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
