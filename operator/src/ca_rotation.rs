//! Rotating a cluster's CA through [`crate::rotation`]: what the agents' TLS Secret
//! holds, and what each agent reports, as the planner's credentials, and the files of
//! the state it plans next. Pure but for the randomness of a new certificate's key.
//!
//! A CA is named by the fingerprint of its certificate (as agents report the CAs they
//! trust). The accepted credentials are the CAs of the Secret's `ca.crt`; the one in
//! use is the CA that issued its `tls.crt`. An agent reports the CAs it trusts and the
//! fingerprint of the certificate it serves: it uses the mounted state when it trusts
//! the same CAs and serves the mounted certificate. The three steps are then: the new
//! CA trusted beside the old one; a certificate of the new CA (both still trusted);
//! the old CA dropped.

use std::collections::BTreeSet;

use node_agent::api::TlsInUse;
use node_agent::tls::fingerprint;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::ca::{self, Ca, Leaf};
use crate::rotation::{Credentials, Id, Report};

/// The most CAs a trusted bundle holds (a rotation needs two; a hand-made bundle a few
/// more); an agent's report of more is malformed.
pub const MAX_TRUSTED: usize = 8;

/// The longest id an agent may report (a SHA-256 fingerprint is 64 hex characters).
const MAX_ID_CHARS: usize = 64;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The id of a CA: the fingerprint of its certificate.
pub fn id_of(cert_pem: &str) -> Result<Id, String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    Ok(fingerprint(&der))
}

/// A trusted bundle (`ca.crt`): each CA certificate as PEM with its id, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle(Vec<(Id, String)>);

impl Bundle {
    /// The certificates of `pem`, each kept as written. Text outside the certificate
    /// blocks is dropped; a block that is no certificate, none at all, a certificate
    /// twice or more than [`MAX_TRUSTED`] is an error.
    pub fn parse(pem: &str) -> Result<Self, String> {
        let mut out: Vec<(Id, String)> = Vec::new();
        let mut rest = pem;
        while let Some(start) = rest.find(BEGIN) {
            let after = &rest[start..];
            let end = after
                .find(END)
                .ok_or("a certificate block has no END line")?
                + END.len();
            let block = format!("{}\n", &after[..end]);
            let id = id_of(&block)?;
            if out.iter().any(|(i, _)| *i == id) {
                return Err(format!("CA {} is in it twice", short(&id)));
            }
            out.push((id, block));
            if out.len() > MAX_TRUSTED {
                return Err(format!("more than {MAX_TRUSTED} CAs"));
            }
            rest = &after[end..];
        }
        if out.is_empty() {
            return Err("no CA certificate in it".into());
        }
        Ok(Self(out))
    }

    /// The ids, in file order.
    pub fn ids(&self) -> Vec<Id> {
        self.0.iter().map(|(i, _)| i.clone()).collect()
    }

    /// The PEM of the CA `id`.
    pub fn pem_of(&self, id: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p.as_str())
    }

    /// The bundle as a file.
    pub fn text(&self) -> String {
        self.0.iter().map(|(_, p)| p.as_str()).collect()
    }
}

/// The state the agents' Secret holds: its bundle's CAs accepted, the one of them
/// under which the agents take its certificate `leaf` in use.
pub fn mounted_state(
    bundle: &Bundle,
    leaf: &Leaf,
    server_name: &str,
) -> Result<Credentials, String> {
    let in_use = bundle
        .0
        .iter()
        .find(|(_, pem)| ca::accepted_under(leaf, &[pem.as_str()], server_name).is_ok())
        .map(|(id, _)| id.clone())
        .ok_or("the agents would take its certificate under none of its CAs")?;
    Ok(Credentials {
        accepted: bundle.ids().into_iter().collect(),
        in_use,
    })
}

/// What one agent's `/bootstrap/status` says of its TLS, as a report against the
/// mounted state (`mounted`, whose certificate has the fingerprint `mounted_leaf`).
pub fn report_of(tls: Option<&TlsInUse>, mounted: &Credentials, mounted_leaf: &str) -> Report {
    let Some(tls) = tls else {
        return Report::Unknown("it reports no TLS in use".into());
    };
    if tls.trusted.is_empty()
        || tls.trusted.len() > MAX_TRUSTED
        || tls.certificate.len() > MAX_ID_CHARS
        || tls.trusted.iter().any(|t| t.len() > MAX_ID_CHARS)
    {
        return Report::Unknown("what it reports of its TLS is malformed".into());
    }
    // Another certificate than the mounted one (an older file, or a certificate renewed
    // since): not the mounted state, whichever CA issued it.
    let in_use = if tls.certificate == mounted_leaf {
        mounted.in_use.clone()
    } else {
        format!("certificate {}", short(&tls.certificate))
    };
    Report::Uses(Credentials {
        accepted: tls.trusted.iter().cloned().collect::<BTreeSet<_>>(),
        in_use,
    })
}

/// The files of state `next`: the trusted bundle (the CA in use first, then the others
/// in their order in `mounted`) and the certificate, which stays while `next` uses the
/// CA `mounted_in_use` that issued `leaf`, else is issued by `issue` under the CA of
/// `cas` that `next` uses. A CA's certificate comes from the mounted bundle or `cas`.
/// What is made is checked as every agent checks it.
pub fn files_of(
    next: &Credentials,
    mounted: &Bundle,
    mounted_in_use: &str,
    leaf: &Leaf,
    cas: &[&Ca],
    server_name: &str,
    issue: impl FnOnce(&Ca) -> Result<Leaf, String>,
) -> Result<(String, Leaf), String> {
    let pem_of = |id: &str| -> Result<String, String> {
        mounted
            .pem_of(id)
            .map(str::to_owned)
            .or_else(|| {
                cas.iter()
                    .find(|c| id_of(&c.cert_pem).is_ok_and(|i| i == id))
                    .map(|c| c.cert_pem.clone())
            })
            .ok_or_else(|| format!("no certificate of CA {} at hand", short(id)))
    };
    let mut trusted = String::new();
    for id in next.ring() {
        let pem = pem_of(&id)?;
        trusted.push_str(&pem);
        if !pem.ends_with('\n') {
            trusted.push('\n');
        }
    }
    let leaf = if next.in_use == mounted_in_use {
        leaf.clone()
    } else {
        let ca = cas
            .iter()
            .find(|c| id_of(&c.cert_pem).is_ok_and(|i| i == next.in_use))
            .ok_or_else(|| format!("the key of CA {} is not at hand", short(&next.in_use)))?;
        issue(ca)?
    };
    ca::accepted_under(&leaf, &[trusted.as_str()], server_name)
        .map_err(|e| format!("the agents would refuse the planned files: {e}"))?;
    Ok((trusted, leaf))
}

/// The first 12 characters of an id, for messages.
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::rotation::{self, Observed, Step};

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    const NAME: &str = "cache.team-a.muster";

    fn ca(n: &str) -> Ca {
        ca::new_ca(
            &format!("muster team-a/cache CA {n}"),
            SystemTime::now(),
            YEAR,
        )
        .expect("a CA")
    }

    fn leaf_of(ca: &Ca) -> Leaf {
        ca::issue(ca, NAME, SystemTime::now(), YEAR / 2).expect("a certificate")
    }

    fn tls(trusted: &[&Ca], leaf: &Leaf) -> TlsInUse {
        TlsInUse {
            certificate: fingerprint(
                &CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("PEM"),
            ),
            trusted: trusted
                .iter()
                .map(|c| id_of(&c.cert_pem).expect("an id"))
                .collect(),
            not_after: None,
        }
    }

    #[test]
    fn a_bundle_keeps_each_certificate_as_written_and_refuses_garbage() {
        let (a, b) = (ca("a"), ca("b"));
        let text = format!("# trusted\n{}{}", a.cert_pem, b.cert_pem);
        let bundle = Bundle::parse(&text).expect("a bundle");
        let ids = bundle.ids();
        assert_eq!(
            ids,
            [id_of(&a.cert_pem).unwrap(), id_of(&b.cert_pem).unwrap()]
        );
        assert_eq!(bundle.text(), format!("{}{}", a.cert_pem, b.cert_pem));
        assert_eq!(Bundle::parse(&bundle.text()), Ok(bundle.clone()));
        assert!(Bundle::parse("").is_err());
        assert!(Bundle::parse(&format!("{}{}", a.cert_pem, a.cert_pem)).is_err());
        let cut = &a.cert_pem[..a.cert_pem.len() - 30];
        assert!(Bundle::parse(cut).is_err());
        let many: String = (0..=MAX_TRUSTED)
            .map(|i| ca(&i.to_string()).cert_pem)
            .collect();
        assert!(Bundle::parse(&many).is_err());
    }

    #[test]
    fn the_ca_in_use_is_the_one_that_issued_the_certificate() {
        let (old, new) = (ca("old"), ca("new"));
        let bundle = Bundle::parse(&format!("{}{}", old.cert_pem, new.cert_pem)).unwrap();
        let state = mounted_state(&bundle, &leaf_of(&new), NAME).expect("a state");
        assert_eq!(state.in_use, id_of(&new.cert_pem).unwrap());
        assert_eq!(state.accepted.len(), 2);
        // A certificate of a CA the bundle does not hold: no state (nothing written).
        let alone = Bundle::parse(&old.cert_pem).unwrap();
        assert!(mounted_state(&alone, &leaf_of(&new), NAME).is_err());
    }

    #[test]
    fn an_agent_uses_the_mounted_state_only_with_the_same_cas_and_certificate() {
        let (old, new) = (ca("old"), ca("new"));
        let leaf = leaf_of(&old);
        let bundle = Bundle::parse(&old.cert_pem).unwrap();
        let mounted = mounted_state(&bundle, &leaf, NAME).unwrap();
        let fp = tls(&[], &leaf).certificate;
        assert_eq!(
            report_of(Some(&tls(&[&old], &leaf)), &mounted, &fp),
            Report::Uses(mounted.clone())
        );
        // Trusting more, or serving another certificate of the same CA: not there yet.
        assert_ne!(
            report_of(Some(&tls(&[&old, &new], &leaf)), &mounted, &fp),
            Report::Uses(mounted.clone())
        );
        let renewed = leaf_of(&old);
        assert_ne!(
            report_of(Some(&tls(&[&old], &renewed)), &mounted, &fp),
            Report::Uses(mounted.clone())
        );
        assert!(matches!(report_of(None, &mounted, &fp), Report::Unknown(_)));
        let mut hostile = tls(&[&old], &leaf);
        hostile.trusted = vec!["x".repeat(65)];
        assert!(matches!(
            report_of(Some(&hostile), &mounted, &fp),
            Report::Unknown(_)
        ));
        hostile.trusted = vec!["a".into(); MAX_TRUSTED + 1];
        assert!(matches!(
            report_of(Some(&hostile), &mounted, &fp),
            Report::Unknown(_)
        ));
    }

    /// The agents' files of each planned state, every agent following at once: each
    /// pair of adjacent states' certificates is taken under the other's bundle, and
    /// the rotation ends on the new CA alone.
    #[test]
    fn the_planned_files_move_from_the_old_ca_to_the_new_one_in_three_steps() {
        let (old, new) = (ca("old"), ca("new"));
        let target = id_of(&new.cert_pem).unwrap();
        let mut leaf = leaf_of(&old);
        let mut bundle = Bundle::parse(&old.cert_pem).unwrap();
        let pods = vec!["cache-0".to_owned()];
        let mut files = vec![(bundle.text(), leaf.clone())];
        for _ in 0..4 {
            let mounted = mounted_state(&bundle, &leaf, NAME).unwrap();
            let fp = tls(&[], &leaf).certificate;
            let report = TlsInUse {
                certificate: fp.clone(),
                trusted: bundle.ids(),
                not_after: None,
            };
            let reports = vec![(pods[0].clone(), report_of(Some(&report), &mounted, &fp))];
            let observed = Observed {
                mounted: &mounted,
                mounted_for: YEAR,
                settle: Duration::from_secs(180),
                pods: &pods,
                reports: &reports,
            };
            let next = match rotation::plan(&observed, &target) {
                Step::Done => break,
                Step::Wait(w) => panic!("{w:?}"),
                Step::Mount(next) => next,
            };
            let (trusted, next_leaf) = files_of(
                &next,
                &bundle,
                &mounted.in_use,
                &leaf,
                &[&old, &new],
                NAME,
                |ca| Ok(leaf_of(ca)),
            )
            .expect("files");
            bundle = Bundle::parse(&trusted).unwrap();
            leaf = next_leaf;
            files.push((trusted, leaf.clone()));
        }
        assert_eq!(files.len(), 4, "three steps");
        assert_eq!(bundle.ids(), std::slice::from_ref(&target));
        assert_eq!(mounted_state(&bundle, &leaf, NAME).unwrap().in_use, target);
        for pair in files.windows(2) {
            let ((a_ca, a_leaf), (b_ca, b_leaf)) = (&pair[0], &pair[1]);
            assert!(ca::accepted_under(a_leaf, &[b_ca.as_str()], NAME).is_ok());
            assert!(ca::accepted_under(b_leaf, &[a_ca.as_str()], NAME).is_ok());
        }
        // Skipping the middle step would cut agents off: the check itself can fail.
        let (first, last) = (&files[0], &files[3]);
        assert!(ca::accepted_under(&last.1, &[first.0.as_str()], NAME).is_err());
    }

    #[test]
    fn a_step_without_the_new_cas_key_is_an_error_not_an_empty_file() {
        let (old, new) = (ca("old"), ca("new"));
        let leaf = leaf_of(&old);
        let bundle = Bundle::parse(&format!("{}{}", old.cert_pem, new.cert_pem)).unwrap();
        let mounted = mounted_state(&bundle, &leaf, NAME).unwrap();
        let target = id_of(&new.cert_pem).unwrap();
        let next = Credentials {
            accepted: mounted.accepted.clone(),
            in_use: target,
        };
        let made = files_of(
            &next,
            &bundle,
            &mounted.in_use,
            &leaf,
            &[&old],
            NAME,
            |ca| Ok(leaf_of(ca)),
        );
        assert!(made.is_err_and(|e| e.contains("not at hand")));
    }
}
