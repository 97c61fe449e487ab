//! Certificates for tests and benchmarks: a CA, and agent certificates it signs for a
//! name, as PEM text (rcgen). Shared by the unit tests of `src/tls.rs`, the process
//! tests and the formation benchmark through `#[path]`.

#![allow(dead_code)] // each user takes a different part

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};

/// A certificate authority that lives as long as the test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

fn params(common_name: &str, years: (i32, i32)) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.not_before = date_time_ymd(years.0, 1, 1);
    p.not_after = date_time_ymd(years.1, 12, 31);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut p = params(name, (2020, 2099));
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(p, key).expect("CA certificate"),
        }
    }

    /// The CA's certificate.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// An agent certificate for `server_name`: serverAuth and clientAuth, valid 2020–2099.
    pub fn issue(&self, server_name: &str) -> Leaf {
        self.issue_with(
            server_name,
            (2020, 2099),
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    /// A certificate for `server_name`, valid from the first year's 1 January to the
    /// second's 31 December, with these extended key usages.
    pub fn issue_with(
        &self,
        server_name: &str,
        years: (i32, i32),
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Leaf {
        let mut p = params(server_name, years);
        p.subject_alt_names = vec![SanType::DnsName(
            server_name.to_owned().try_into().expect("a DNS name"),
        )];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = usages.to_vec();
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("certificate");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Where one agent's three TLS files are.
#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl TlsPaths {
    /// `<dir>/<name>.crt`, `.key` and `-ca.crt`.
    pub fn new(dir: &Path, name: &str) -> Self {
        Self {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{name}-ca.crt")),
        }
    }

    /// Writes `leaf` and the bundle of `cas` (in order). Each file is written to a
    /// temporary name and renamed, so a reader never sees half of one.
    pub fn write(&self, leaf: &Leaf, cas: &[&str]) {
        let put = |path: &Path, text: &str| {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write a TLS file");
            std::fs::rename(&tmp, path).expect("rename a TLS file");
        };
        put(&self.key, &leaf.key);
        put(&self.cert, &leaf.cert);
        put(&self.ca, &cas.concat());
    }

    /// The agent's `tls:` section naming these files, for `server_name`.
    pub fn yaml(&self, server_name: &str) -> String {
        format!(
            "tls:\n  cert-file: {}\n  key-file: {}\n  ca-file: {}\n  server-name: {server_name}\n  reload-interval: 200ms\n",
            self.cert.display(),
            self.key.display(),
            self.ca.display()
        )
    }
}
