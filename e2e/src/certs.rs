//! The control plane's certificates, generated for every run: one CA, the API server's
//! serving certificate, client certificates for the admin and the controllers, and the
//! service-account signing key. All X.509 v3 (rustls, under kube-rs, refuses v1).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, date_time_ymd,
};

use crate::Error;

/// A certificate and its key, written as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Every file the control plane's processes are given.
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: CertFiles,
    pub apiserver: CertFiles,
    pub admin: CertFiles,
    pub controller_manager: CertFiles,
    pub scheduler: CertFiles,
    /// Private key that signs service-account tokens.
    pub service_account_key: PathBuf,
    /// Its public half, which verifies them.
    pub service_account_public_key: PathBuf,
}

fn cert_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Setup(format!("cannot create the {what} certificate: {e}"))
}

fn params(common_name: &str, organization: Option<&str>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.not_before = date_time_ymd(2020, 1, 1);
    p.not_after = date_time_ymd(2099, 12, 31);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    p.distinguished_name = dn;
    p
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents)
        .map_err(|e| Error::Setup(format!("cannot write {}: {e}", path.display())))
}

impl Pki {
    /// Generates everything into `dir`. `service_ip` is the first address of the
    /// service range (the `kubernetes` Service), which the serving certificate names.
    pub fn generate(dir: &Path, service_ip: Ipv4Addr) -> Result<Self, Error> {
        let ca_key = KeyPair::generate().map_err(|e| cert_error("CA", e))?;
        let mut ca_params = params("muster-e2e-ca", None);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem_key = ca_key.serialize_pem();
        let ca =
            CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| cert_error("CA", e))?;
        let ca_files = CertFiles {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        };
        write(&ca_files.cert, &ca.pem())?;
        write(&ca_files.key, &ca_pem_key)?;

        let leaf = |name: &str,
                    file: &str,
                    organization: Option<&str>,
                    server: bool|
         -> Result<CertFiles, Error> {
            let key = KeyPair::generate().map_err(|e| cert_error(name, e))?;
            let mut p = params(name, organization);
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            if server {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                p.subject_alt_names = [
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                ]
                .iter()
                .map(|n| {
                    (*n).to_owned()
                        .try_into()
                        .map(rcgen::SanType::DnsName)
                        .map_err(|e| cert_error(name, e))
                })
                .collect::<Result<_, _>>()?;
                p.subject_alt_names.extend([
                    rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    rcgen::SanType::IpAddress(IpAddr::V4(service_ip)),
                ]);
            } else {
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            let cert = p.signed_by(&key, &ca).map_err(|e| cert_error(name, e))?;
            let files = CertFiles {
                cert: dir.join(format!("{file}.crt")),
                key: dir.join(format!("{file}.key")),
            };
            write(&files.cert, &cert.pem())?;
            write(&files.key, &key.serialize_pem())?;
            Ok(files)
        };
        let apiserver = leaf("kube-apiserver", "apiserver", None, true)?;
        let admin = leaf("muster-e2e-admin", "admin", Some("system:masters"), false)?;
        let controller_manager = leaf(
            "system:kube-controller-manager",
            "controller-manager",
            None,
            false,
        )?;
        let scheduler = leaf("system:kube-scheduler", "scheduler", None, false)?;

        let sa = KeyPair::generate().map_err(|e| cert_error("service-account key", e))?;
        let service_account_key = dir.join("service-account.key");
        write(&service_account_key, &sa.serialize_pem())?;
        let service_account_public_key = dir.join("service-account.pub");
        write(&service_account_public_key, &sa.public_key_pem())?;
        Ok(Self {
            ca: ca_files,
            apiserver,
            admin,
            controller_manager,
            scheduler,
            service_account_key,
            service_account_public_key,
        })
    }
}
