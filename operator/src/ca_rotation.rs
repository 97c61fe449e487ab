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
//! the old CA dropped. Bundles are read with the agents' own PEM reader, and the
//! operator writes only bundles of the cluster's CAs, each file checked against the
//! files before it as agents check them.

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

/// The id of a CA: the fingerprint of its certificate.
pub fn id_of(cert_pem: &str) -> Result<Id, String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    Ok(fingerprint(&der))
}

/// The CAs of a trusted bundle (`ca.crt`) by id, in file order, read as an agent reads
/// its `ca-file` (the same PEM reader, each certificate a usable trust anchor): what
/// agents starting on this file will trust, never a view of it of our own. Anything an
/// agent would refuse, no CA, a CA twice or more than [`MAX_TRUSTED`] is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle(Vec<Id>);

impl Bundle {
    pub fn parse(pem: &str) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let mut ids: Vec<Id> = Vec::new();
        for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let der = der.map_err(|e| format!("not PEM certificates: {e}"))?;
            let id = fingerprint(&der);
            if ids.contains(&id) {
                return Err(format!("CA {} is in it twice", short(&id)));
            }
            roots
                .add(der)
                .map_err(|e| format!("CA {} is not a usable CA: {e}", short(&id)))?;
            ids.push(id);
            if ids.len() > MAX_TRUSTED {
                return Err(format!("more than {MAX_TRUSTED} CAs"));
            }
        }
        if ids.is_empty() {
            return Err("no CA certificate in it".into());
        }
        Ok(Self(ids))
    }

    /// The ids, in file order.
    pub fn ids(&self) -> Vec<Id> {
        self.0.clone()
    }
}

/// The CA of `cas` whose id is `id`.
fn ca_by_id<'a>(cas: &[&'a Ca], id: &str) -> Option<&'a Ca> {
    cas.iter()
        .find(|c| id_of(&c.cert_pem).is_ok_and(|i| i == id))
        .copied()
}

/// The state the agents' Secret holds: its bundle's CAs accepted (each must be one of
/// the cluster's CAs `cas`: a rotation writes only bundles of CAs the operator holds),
/// in use the first of them under which agents take its certificate `leaf` — or, once
/// it has ended (an operator that was away too long), would have taken it the second
/// before it ended: the CA that issued it, under which it is issued again.
pub fn mounted_state(
    bundle: &Bundle,
    leaf: &Leaf,
    cas: &[&Ca],
    server_name: &str,
) -> Result<Credentials, String> {
    let mut held = Vec::new();
    for id in &bundle.0 {
        let ca = ca_by_id(cas, id).ok_or_else(|| {
            format!(
                "it trusts CA {}, none of the cluster's CAs (an edit by hand?)",
                short(id)
            )
        })?;
        held.push((id, ca));
    }
    let before_end = leaf.not_after - std::time::Duration::from_secs(1);
    let under = |at: Option<std::time::SystemTime>| {
        held.iter().find(|(_, ca)| {
            let pems = [ca.cert_pem.as_str()];
            match at {
                None => ca::accepted_under(leaf, &pems, server_name).is_ok(),
                Some(at) => ca::accepted_under_at(leaf, &pems, server_name, at).is_ok(),
            }
        })
    };
    let (in_use, _) = under(None)
        .or_else(|| under(Some(before_end)))
        .ok_or("the agents would take its certificate under none of its CAs")?;
    Ok(Credentials {
        accepted: bundle.0.iter().cloned().collect(),
        in_use: (*in_use).clone(),
    })
}

/// What one agent's `/bootstrap/status` says of its TLS, as a report against the
/// mounted state (`mounted`, whose certificate has the fingerprint `mounted_leaf`).
pub fn report_of(tls: Option<&TlsInUse>, mounted: &Credentials, mounted_leaf: &str) -> Report {
    let tls = match well_formed(tls) {
        Ok(t) => t,
        Err(why) => return Report::Unknown(why),
    };
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

/// What an agent reports of its TLS, if it is within what agents send.
fn well_formed(tls: Option<&TlsInUse>) -> Result<&TlsInUse, String> {
    let tls = tls.ok_or("it reports no TLS in use: an agent too old to report it (update its image), or one without TLS")?;
    if tls.trusted.is_empty()
        || tls.trusted.len() > MAX_TRUSTED
        || tls.certificate.len() > MAX_ID_CHARS
        || tls.trusted.iter().any(|t| t.len() > MAX_ID_CHARS)
    {
        return Err("what it reports of its TLS is malformed".into());
    }
    Ok(tls)
}

/// What one agent's `/bootstrap/status` says of its TLS on its own (no mounted state to
/// hold it against): the CAs it trusts; in use, its certificate's fingerprint.
pub fn files_reported(tls: Option<&TlsInUse>) -> Report {
    match well_formed(tls) {
        Ok(tls) => Report::Uses(Credentials {
            accepted: tls.trusted.iter().cloned().collect(),
            in_use: format!("certificate {}", short(&tls.certificate)),
        }),
        Err(why) => Report::Unknown(why),
    }
}

/// The one CA that the files of every pod surely trust alone, from the reports of the
/// pods' agents (as [`files_reported`] reads them) when the agents' Secret is gone
/// while pods run: files made anew under it are the files every running agent holds
/// (but for the certificate, of the same CA), and a pod whose agent is not running
/// holds the files of a rotation's step next to them, which take its certificates too.
/// Anything less is an error saying why: an agent that runs but does not tell, no agent
/// running, agents that trust different CAs, or two CAs trusted (a rotation's files,
/// whose CA in use cannot be told from the reports).
pub fn trusted_alone(reports: &[(String, Report)]) -> Result<Id, String> {
    let mut seen: Option<(&BTreeSet<Id>, &str)> = None;
    for (pod, report) in reports {
        match report {
            Report::NotRunning => {}
            Report::Unknown(why) => {
                return Err(format!(
                    "which CAs the agent of {pod} trusts is not known ({why})"
                ));
            }
            Report::Uses(c) => match seen {
                None => seen = Some((&c.accepted, pod)),
                Some((accepted, first)) if accepted != &c.accepted => {
                    return Err(format!(
                        "the agents of {first} and {pod} trust different CAs ({} and {}: a rotation's step half taken)",
                        names(accepted),
                        names(&c.accepted)
                    ));
                }
                Some(_) => {}
            },
        }
    }
    let (accepted, _) =
        seen.ok_or("no agent of the cluster runs to tell which CAs its files trust")?;
    match accepted.iter().collect::<Vec<_>>().as_slice() {
        [one] => Ok((*one).clone()),
        _ => Err(format!(
            "the agents trust CAs {} (the files of a rotation under way), and which one issued their certificate cannot be told from what they report",
            names(accepted)
        )),
    }
}

/// CA ids, shortened, for a message.
fn names(ids: &BTreeSet<Id>) -> String {
    ids.iter().map(|i| short(i)).collect::<Vec<_>>().join(", ")
}

/// The files of state `next`, the agents' Secret holding `mounted_text` (its
/// `ca.crt`) and `leaf` under the CA `mounted_in_use`: the trusted bundle (the CA in
/// use first, then the others accepted), each CA's certificate from `cas`; and the
/// certificate, kept while `next` uses the same CA, else issued by `issue` under the
/// CA `next` uses. Agents on the mounted files and agents on these must take each
/// other's certificates: checked as agents check them, with the new certificate
/// taken under its CA alone.
pub fn files_of(
    next: &Credentials,
    mounted_text: &str,
    mounted_in_use: &str,
    leaf: &Leaf,
    cas: &[&Ca],
    server_name: &str,
    issue: impl FnOnce(&Ca) -> Result<Leaf, String>,
) -> Result<(String, Leaf), String> {
    let mut trusted = String::new();
    for id in next.ring() {
        let ca = ca_by_id(cas, &id)
            .ok_or_else(|| format!("CA {} is none of the cluster's CAs at hand", short(&id)))?;
        trusted.push_str(&ca.cert_pem);
        if !ca.cert_pem.ends_with('\n') {
            trusted.push('\n');
        }
    }
    let issuer = ca_by_id(cas, &next.in_use)
        .ok_or_else(|| format!("the key of CA {} is not at hand", short(&next.in_use)))?;
    let next_leaf = if next.in_use == mounted_in_use {
        leaf.clone()
    } else {
        issue(issuer)?
    };
    let refused =
        |what: &str, e: String| format!("the planned files would cut agents off: {what}: {e}");
    ca::accepted_under(&next_leaf, &[issuer.cert_pem.as_str()], server_name)
        .map_err(|e| refused("the certificate is not of the CA in use", e))?;
    ca::accepted_under(&next_leaf, &[mounted_text], server_name).map_err(|e| {
        refused(
            "agents on the mounted files would refuse the new certificate",
            e,
        )
    })?;
    ca::accepted_under(leaf, &[trusted.as_str()], server_name).map_err(|e| {
        refused(
            "agents on the new files would refuse the mounted certificate",
            e,
        )
    })?;
    Ok((trusted, next_leaf))
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

    fn id(ca: &Ca) -> Id {
        id_of(&ca.cert_pem).expect("an id")
    }

    /// What an agent started on these files reports, by the agent's own loader.
    fn agent_on(trusted: &str, leaf: &Leaf) -> TlsInUse {
        let pem = node_agent::tls::TlsPem {
            cert: leaf.cert_pem.clone().into_bytes(),
            key: leaf.key_pem.clone().into_bytes(),
            ca: trusted.as_bytes().to_vec(),
        };
        let name = rustls::pki_types::ServerName::try_from(NAME).expect("a name");
        let m = node_agent::tls::Material::load(pem, &name, &node_agent::tls::provider())
            .expect("the agent takes its files");
        TlsInUse {
            certificate: m.certificate,
            trusted: m.trusted,
            not_after: None,
        }
    }

    #[test]
    fn a_bundle_is_read_as_agents_read_their_ca_file() {
        let (a, b) = (ca("a"), ca("b"));
        let leaf = leaf_of(&a);
        // Comments, CRLF line ends, text between blocks and an indented block (which
        // the agent's reader does not take for one): the ids are what an agent trusts.
        let crlf = b.cert_pem.replace('\n', "\r\n");
        let indented = b.cert_pem.replace("-----BEGIN", "  -----BEGIN");
        for text in [
            format!("# trusted\n{}between\n{}", a.cert_pem, b.cert_pem),
            format!("{}{crlf}", a.cert_pem),
            format!("{}{indented}", a.cert_pem),
        ] {
            match Bundle::parse(&text) {
                Ok(bundle) => assert_eq!(bundle.ids(), agent_on(&text, &leaf).trusted, "{text}"),
                Err(e) => assert!(!e.is_empty()),
            }
        }
        assert_eq!(
            Bundle::parse(&format!("{}{}", a.cert_pem, b.cert_pem)).map(|b| b.ids()),
            Ok(vec![id(&a), id(&b)])
        );
        assert!(Bundle::parse("").is_err());
        assert!(Bundle::parse("no PEM at all").is_err());
        assert!(Bundle::parse(&format!("{}{}", a.cert_pem, a.cert_pem)).is_err());
        let cut = &a.cert_pem[..a.cert_pem.len() - 30];
        assert!(Bundle::parse(cut).is_err());
        // A block that is no certificate: agents refuse the whole file.
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(Bundle::parse(&format!("{}{garbage}", a.cert_pem)).is_err());
        assert!(Bundle::parse(&leaf.key_pem).is_err(), "a key is no CA");
        let many: String = (0..=MAX_TRUSTED)
            .map(|i| ca(&i.to_string()).cert_pem)
            .collect();
        assert!(Bundle::parse(&many).is_err());
    }

    #[test]
    fn the_ca_in_use_is_the_one_that_issued_the_certificate() {
        let (old, new) = (ca("old"), ca("new"));
        // The issuer listed second: not simply the first CA of the bundle.
        let bundle = Bundle::parse(&format!("{}{}", old.cert_pem, new.cert_pem)).unwrap();
        let state = mounted_state(&bundle, &leaf_of(&new), &[&old, &new], NAME).expect("a state");
        assert_eq!(state.in_use, id(&new));
        assert_eq!(state.accepted, [id(&old), id(&new)].into_iter().collect());
        // A certificate of a CA the bundle does not hold: no state (nothing written).
        let alone = Bundle::parse(&old.cert_pem).unwrap();
        assert!(mounted_state(&alone, &leaf_of(&new), &[&old, &new], NAME).is_err());
        // A CA in the bundle that is none of the cluster's: no state either.
        let foreign = ca("foreign");
        let added = Bundle::parse(&format!("{}{}", old.cert_pem, foreign.cert_pem)).unwrap();
        let refused = mounted_state(&added, &leaf_of(&old), &[&old, &new], NAME);
        assert!(refused.is_err_and(|e| e.contains("none of the cluster's CAs")));
    }

    #[test]
    fn an_agent_uses_the_mounted_state_only_with_the_same_cas_and_certificate() {
        let (old, new) = (ca("old"), ca("new"));
        let leaf = leaf_of(&old);
        let bundle = Bundle::parse(&old.cert_pem).unwrap();
        let mounted = mounted_state(&bundle, &leaf, &[&old], NAME).unwrap();
        let on = agent_on(&old.cert_pem, &leaf);
        let fp = on.certificate.clone();
        assert_eq!(
            report_of(Some(&on), &mounted, &fp),
            Report::Uses(mounted.clone())
        );
        // Trusting more, or serving another certificate of the same CA: not there yet.
        let both = format!("{}{}", old.cert_pem, new.cert_pem);
        assert_ne!(
            report_of(Some(&agent_on(&both, &leaf)), &mounted, &fp),
            Report::Uses(mounted.clone())
        );
        let renewed = agent_on(&old.cert_pem, &leaf_of(&old));
        assert_ne!(
            report_of(Some(&renewed), &mounted, &fp),
            Report::Uses(mounted.clone())
        );
        assert!(matches!(report_of(None, &mounted, &fp), Report::Unknown(_)));
        let mut hostile = on.clone();
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

    /// The agents' files of each planned state, every agent following (its report made
    /// by the agent's own loader from the files): each pair of adjacent states' agents
    /// take each other's certificates, the certificate changes only with the CA in
    /// use, and the rotation ends on the new CA alone.
    #[test]
    fn the_planned_files_move_from_the_old_ca_to_the_new_one_in_three_steps() {
        let (old, new) = (ca("old"), ca("new"));
        let target = id(&new);
        let mut leaf = leaf_of(&old);
        let mut text = old.cert_pem.clone();
        let pods = vec!["cache-0".to_owned()];
        let mut files = vec![(text.clone(), leaf.clone())];
        loop {
            let bundle = Bundle::parse(&text).unwrap();
            let mounted = mounted_state(&bundle, &leaf, &[&old, &new], NAME).unwrap();
            let on = agent_on(&text, &leaf);
            let reports = vec![(
                pods[0].clone(),
                report_of(Some(&on), &mounted, &on.certificate),
            )];
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
                &text,
                &mounted.in_use,
                &leaf,
                &[&old, &new],
                NAME,
                |ca| Ok(leaf_of(ca)),
            )
            .expect("files");
            assert_eq!(
                next_leaf == leaf,
                next.in_use == mounted.in_use,
                "a new certificate exactly when the CA in use changes"
            );
            text = trusted;
            leaf = next_leaf;
            files.push((text.clone(), leaf.clone()));
            assert!(files.len() <= 4, "at most three steps");
        }
        assert_eq!(files.len(), 4, "three steps");
        assert_eq!(
            Bundle::parse(&text).unwrap().ids(),
            std::slice::from_ref(&target)
        );
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
    fn files_that_would_cut_agents_off_are_refused() {
        let (old, new) = (ca("old"), ca("new"));
        let leaf = leaf_of(&old);
        let text = format!("{}{}", old.cert_pem, new.cert_pem);
        let mounted =
            mounted_state(&Bundle::parse(&text).unwrap(), &leaf, &[&old, &new], NAME).unwrap();
        let next = Credentials {
            accepted: mounted.accepted.clone(),
            in_use: id(&new),
        };
        // Planned `to`, mounted `on`, with the CAs `cas` and an issuer.
        let files = |to: &Credentials,
                     on: &str,
                     cas: &[&Ca],
                     issue: &dyn Fn(&Ca) -> Result<Leaf, String>| {
            files_of(to, on, &mounted.in_use, &leaf, cas, NAME, |ca| issue(ca))
        };
        let good = |ca: &Ca| Ok(leaf_of(ca));
        // The new CA not at hand.
        let made = files(&next, &text, &[&old], &good);
        assert!(made.is_err_and(|e| e.contains("at hand")));
        // An issuer that signs with another CA than the one asked.
        let made = files(&next, &text, &[&old, &new], &|_| Ok(leaf_of(&old)));
        assert!(made.is_err_and(|e| e.contains("not of the CA in use")));
        // Dropping the CA of the mounted certificate while it is still in use.
        let drop_old = Credentials::single(&id(&new));
        let made = files(&drop_old, &text, &[&old, &new], &good);
        assert!(made.is_err_and(|e| e.contains("would refuse the mounted certificate")));
        // Agents on a file that trusts the old CA only would refuse a certificate of
        // the new one.
        let made = files(&next, &old.cert_pem, &[&old, &new], &good);
        assert!(made.is_err_and(|e| e.contains("would refuse the new certificate")));
    }

    #[test]
    fn files_are_made_anew_only_under_the_one_ca_every_running_agent_trusts_alone() {
        let (old, new) = (ca("1"), ca("2"));
        let on = |trusted: &str, leaf: &Leaf| files_reported(Some(&agent_on(trusted, leaf)));
        let alone = on(&old.cert_pem, &leaf_of(&old));
        // Another certificate of the same CA (a renewal half taken): the same CA.
        let renewed = on(&old.cert_pem, &leaf_of(&old));
        let both = format!("{}{}", old.cert_pem, new.cert_pem);
        let step_one = on(&both, &leaf_of(&old));
        let pods = |reports: Vec<Report>| -> Vec<(String, Report)> {
            reports
                .into_iter()
                .enumerate()
                .map(|(i, r)| (format!("cache-{i}"), r))
                .collect()
        };
        assert_eq!(
            trusted_alone(&pods(vec![alone.clone(), Report::NotRunning, renewed])),
            Ok(id(&old))
        );
        let refused = |reports: Vec<Report>, why: &str| {
            let e = trusted_alone(&pods(reports)).expect_err("no CA");
            assert!(e.contains(why), "{e}");
        };
        refused(vec![Report::NotRunning], "no agent of the cluster runs");
        refused(
            vec![alone.clone(), Report::Unknown("no answer".into())],
            "the agent of cache-1 trusts is not known (no answer)",
        );
        refused(vec![alone.clone(), step_one.clone()], "trust different CAs");
        refused(vec![step_one.clone(), step_one], "a rotation under way");
        // The other CA alone (the end of a rotation): that one.
        let moved = on(&new.cert_pem, &leaf_of(&new));
        assert_eq!(trusted_alone(&pods(vec![moved])), Ok(id(&new)));
        // What no agent sends is no report.
        assert!(matches!(files_reported(None), Report::Unknown(_)));
        let mut odd = agent_on(&old.cert_pem, &leaf_of(&old));
        odd.trusted = vec![String::new(); MAX_TRUSTED + 1];
        assert!(matches!(files_reported(Some(&odd)), Report::Unknown(_)));
    }

    #[test]
    fn the_ca_in_use_of_a_certificate_that_has_ended_is_the_one_that_issued_it() {
        // An operator away for longer than the certificate lasted: mid-rotation (two
        // CAs trusted, the second's certificate served), it must still tell which CA is
        // in use, to issue the certificate again under it.
        let long_ago = SystemTime::now() - YEAR;
        let made = |n: &str| {
            ca::new_ca(&format!("muster team-a/cache CA {n}"), long_ago, 3 * YEAR).expect("a CA")
        };
        let (old, new) = (made("1"), made("2"));
        let ended = ca::issued_then(&new, NAME, long_ago, YEAR / 12).expect("a certificate");
        assert!(ended.not_after < SystemTime::now());
        let both = Bundle::parse(&format!("{}{}", old.cert_pem, new.cert_pem)).expect("bundle");
        let state = mounted_state(&both, &ended, &[&old, &new], NAME).expect("a state");
        assert_eq!(state.in_use, id(&new));
        // One that neither issued is still no state.
        let other = made("3");
        let stranger = ca::issued_then(&other, NAME, long_ago, YEAR / 12).expect("a certificate");
        assert!(mounted_state(&both, &stranger, &[&old, &new], NAME).is_err());
    }
}
