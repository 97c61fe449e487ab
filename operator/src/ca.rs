//! The cluster's TLS material as the operator makes it: one CA per cluster, whose key
//! stays with the operator, and the agents' certificate, issued by it for the name
//! every agent of the cluster checks. Pure but for the randomness of the keys: the
//! time is given.

use std::fmt;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// Certificates start this long before they are made: clocks of nodes differ, and an
/// agent whose clock is behind must take a new certificate all the same.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);

/// The longest lifetime asked of a CA or a certificate.
pub const MAX_LIFETIME: Duration = Duration::from_secs(20 * 365 * 24 * 3600);

/// A certificate is not issued for less than this: a CA that expires sooner must be
/// rotated first.
pub const MIN_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// `now + lifetime`, for lifetimes up to [`MAX_LIFETIME`].
fn end_of(now: SystemTime, lifetime: Duration) -> Result<SystemTime, String> {
    if lifetime > MAX_LIFETIME {
        return Err(format!(
            "a lifetime of {}s is longer than the {}s allowed",
            lifetime.as_secs(),
            MAX_LIFETIME.as_secs()
        ));
    }
    now.checked_add(lifetime)
        .ok_or_else(|| "the end of the lifetime is beyond what the clock counts".to_owned())
}

/// The name the agents of cluster `name` in `namespace` carry in their certificate and
/// check in their peers' (`tls.server-name`): unique per cluster, so a certificate of
/// one cluster is refused by another even under a shared CA.
pub fn server_name(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.muster")
}

/// A CA as the operator keeps it. Its key is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    /// Its subject's common name: the issuer name of what it signs.
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("name", &self.name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// An agent certificate and its key, as PEM. The key is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: SystemTime,
}

impl fmt::Debug for Leaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Leaf")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "muster");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn validity(p: &mut CertificateParams, now: SystemTime, not_after: SystemTime) {
    p.not_before = (now.checked_sub(CLOCK_SKEW).unwrap_or(now)).into();
    p.not_after = not_after.into();
}

/// The CA's parameters, as they must be again to sign with it: the same subject and
/// key usages (the key identifier comes from the key).
fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = subject(name);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

/// A new CA named `name` (e.g. `muster team-a/cache CA 2026-12-02`), valid for `lifetime`.
pub fn new_ca(name: &str, now: SystemTime, lifetime: Duration) -> Result<Ca, String> {
    let not_after = end_of(now, lifetime)?;
    let mut p = ca_params(name);
    validity(&mut p, now, not_after);
    let key = KeyPair::generate().map_err(|e| format!("cannot make a CA key: {e}"))?;
    let cert = p
        .self_signed(&key)
        .map_err(|e| format!("cannot make the CA certificate: {e}"))?;
    Ok(Ca {
        name: name.to_owned(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// An agent certificate for `server_name`, signed by `ca`: serverAuth and clientAuth
/// (agents are both), valid for `lifetime` but never beyond the CA. What is made is
/// checked as every agent checks it (`Material::load`) before it is returned.
pub fn issue(
    ca: &Ca,
    server_name: &str,
    now: SystemTime,
    lifetime: Duration,
) -> Result<Leaf, String> {
    let leaf = sign(ca, server_name, now, lifetime)?;
    // The issuer is rebuilt from the stored name: should it differ in any byte from
    // the CA certificate's subject, agents would refuse the certificate. Checked here.
    agents_accept(&leaf, &[ca], server_name)?;
    Ok(leaf)
}

/// The certificate of [`issue`], not checked.
fn sign(ca: &Ca, server_name: &str, now: SystemTime, lifetime: Duration) -> Result<Leaf, String> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)
        .map_err(|e| format!("the CA key of {:?} cannot be read: {e}", ca.name))?;
    let issuer = Issuer::new(ca_params(&ca.name), ca_key);
    let not_after = end_of(now, lifetime)?.min(ca.not_after);
    if not_after < now + MIN_CERTIFICATE_LIFETIME {
        return Err(format!(
            "the CA {:?} expires too soon to sign a certificate ({}s left, at least {}s needed): rotate the CA first",
            ca.name,
            ca.not_after
                .duration_since(now)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            MIN_CERTIFICATE_LIFETIME.as_secs()
        ));
    }
    let mut p = CertificateParams::default();
    p.distinguished_name = subject(server_name);
    p.subject_alt_names = vec![SanType::DnsName(
        server_name
            .to_owned()
            .try_into()
            .map_err(|e| format!("{server_name:?} cannot be a certificate's DNS name: {e}"))?,
    )];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut p, now, not_after);
    let key = KeyPair::generate().map_err(|e| format!("cannot make an agent key: {e}"))?;
    let cert = p
        .signed_by(&key, &issuer)
        .map_err(|e| format!("cannot sign the agents' certificate: {e}"))?;
    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// A certificate issued at `then`, checked as agents took it then (tests of
/// certificates that have ended since; [`issue`] hands out no such thing).
#[cfg(test)]
pub fn issued_then(
    ca: &Ca,
    server_name: &str,
    then: SystemTime,
    lifetime: Duration,
) -> Result<Leaf, String> {
    let leaf = sign(ca, server_name, then, lifetime)?;
    accepted_under_at(&leaf, &[ca.cert_pem.as_str()], server_name, then)?;
    Ok(leaf)
}

/// Whether an agent takes `leaf` under the CAs `cas` for `server_name`, as
/// `node_agent::tls::Material::load` checks it; the agent's message if not.
pub fn agents_accept(leaf: &Leaf, cas: &[&Ca], server_name: &str) -> Result<String, String> {
    let pems: Vec<&str> = cas.iter().map(|c| c.cert_pem.as_str()).collect();
    accepted_under(leaf, &pems, server_name)
}

/// [`agents_accept`] under the CA certificates (PEM) `ca_pems`, their keys not needed.
pub fn accepted_under(leaf: &Leaf, ca_pems: &[&str], server_name: &str) -> Result<String, String> {
    accepted_under_at(leaf, ca_pems, server_name, SystemTime::now())
}

/// [`accepted_under`] as at `at` (which CA issued a certificate that has ended).
pub fn accepted_under_at(
    leaf: &Leaf,
    ca_pems: &[&str],
    server_name: &str,
    at: SystemTime,
) -> Result<String, String> {
    let pem = node_agent::tls::TlsPem {
        cert: leaf.cert_pem.clone().into_bytes(),
        key: leaf.key_pem.clone().into_bytes(),
        ca: ca_pems.concat().into_bytes(),
    };
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned())
        .map_err(|e| format!("{server_name:?} is not a server name: {e}"))?;
    let at = rustls::pki_types::UnixTime::since_unix_epoch(
        at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default(),
    );
    node_agent::tls::Material::load_at(pem, &name, &node_agent::tls::provider(), at)
        .map(|m| m.certificate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    #[test]
    fn the_agents_accept_what_the_operator_makes() {
        let now = SystemTime::now();
        let name = server_name("cache", "team-a");
        assert_eq!(name, "cache.team-a.muster");
        let ca = new_ca("muster team-a/cache CA 1", now, YEAR).unwrap();
        let leaf = issue(&ca, &name, now, YEAR / 4).unwrap();
        agents_accept(&leaf, &[&ca], &name).expect("the agent takes it");
        // Signed again later from the stored CA alone (the operator keeps no state
        // but its Secrets): another certificate, valid under the same CA.
        let again = issue(&ca, &name, now, YEAR / 4).unwrap();
        assert_ne!(again.cert_pem, leaf.cert_pem);
        agents_accept(&again, &[&ca], &name).expect("the agent takes it");
        // During a rotation the bundle holds two CAs: both leaves load under it.
        let next = new_ca("muster team-a/cache CA 2", now, YEAR).unwrap();
        let new_leaf = issue(&next, &name, now, YEAR / 4).unwrap();
        agents_accept(&leaf, &[&ca, &next], &name).expect("old leaf, both CAs");
        agents_accept(&new_leaf, &[&ca, &next], &name).expect("new leaf, both CAs");
        assert!(
            agents_accept(&new_leaf, &[&ca], &name).is_err(),
            "not under the old CA alone"
        );
    }

    #[test]
    fn a_certificate_is_for_its_cluster_only_and_never_outlives_its_ca() {
        let now = SystemTime::now();
        let ca = new_ca("muster shared CA", now, YEAR).unwrap();
        let other = issue(&ca, &server_name("cache", "team-b"), now, YEAR).unwrap();
        let e = agents_accept(&other, &[&ca], &server_name("cache", "team-a")).unwrap_err();
        assert!(e.contains("cache.team-a.muster"), "{e}");
        let long = issue(&ca, &server_name("cache", "team-a"), now, 10 * YEAR).unwrap();
        assert_eq!(long.not_after, ca.not_after);
        // What would be expired by now is never handed out (the agents' check runs on
        // the real clock)...
        let short = new_ca("muster short CA", now - 2 * YEAR, YEAR).unwrap();
        let e = issue(&short, "cache.team-a.muster", now - 2 * YEAR, YEAR).unwrap_err();
        assert!(e.contains("expired"), "{e}");
        // ...and a CA this close to its end signs nothing more.
        let e = issue(&short, "cache.team-a.muster", now, YEAR).unwrap_err();
        assert!(e.contains("rotate the CA first"), "{e}");
        let e = new_ca("muster CA", now, Duration::MAX).unwrap_err();
        assert!(e.contains("longer than"), "{e}");
    }

    #[test]
    fn keys_are_never_printed_and_bad_input_says_what_is_wrong() {
        let now = SystemTime::now();
        let ca = new_ca("muster CA", now, YEAR).unwrap();
        let leaf = issue(&ca, "a.b.muster", now, YEAR).unwrap();
        for text in [format!("{ca:?}"), format!("{leaf:?}")] {
            assert!(!text.contains("PRIVATE KEY"), "{text}");
        }
        let broken = Ca {
            key_pem: "not a key".into(),
            ..ca.clone()
        };
        let e = issue(&broken, "a.b.muster", now, YEAR).unwrap_err();
        assert!(e.contains("CA key") && e.contains("muster CA"), "{e}");
        assert!(
            !e.contains("not a key"),
            "the key's text is not quoted: {e}"
        );
        // A stored name that is not the certificate's subject: what it signs would be
        // refused by every agent, so it is refused here.
        let renamed = Ca {
            name: "muster CA (renamed)".into(),
            ..ca.clone()
        };
        let e = issue(&renamed, "a.b.muster", now, YEAR).unwrap_err();
        assert!(e.contains("a.b.muster"), "{e}");
    }
}
