//! The TLS Secrets of a cluster with `spec.tls`: the cluster's CA (made once, with the
//! agents' certificate, before any pod), the agents' certificate (issued again before
//! it ends), and the rotation of the CA without a restart or a split.
//!
//! A CA rotation is asked for with the annotation [`ROTATE_ANNOTATION`] on the
//! ClusterSpec (a value not handled yet), and starts by itself when the CA in use has
//! less than [`tls::CA_ROTATE_BEFORE`] left. The operator makes a new CA in a Secret of
//! its own (`<name>-<id>-muster-ca`, never mounted) and moves the agents' Secret
//! through the three steps of [`crate::rotation`]: the new CA trusted beside the old
//! one; a certificate of the new CA (both trusted); the old CA dropped — each written
//! only once every pod's agent reports the files before it (`/bootstrap/status.tls`),
//! or, for a pod whose agent is not running, once its volume surely holds them. The
//! agents' Secret records the rotation ([`TARGET_ANNOTATION`], [`HANDLED_ANNOTATION`],
//! [`WRITTEN_AT_ANNOTATION`]), so an operator that restarts, or a standby, goes on where
//! it stood. Which CA Secret holds which CA follows from the files themselves: each CA
//! the agents trust is found by its id.
//!
//! The old CA's Secret stays (the operator may not delete Secrets): no agent trusts it
//! any more, and the Event that ends the rotation names it for deletion by hand.

use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;

use super::apply::{controlled_by, create_once};
use super::build::tls::{self, CA_CERT, TLS_CERT, TLS_KEY};
use super::key_rotation::{self, Pods, Want, rfc3339};
use super::{Context, Error};
use crate::ClusterSpec;
use crate::ca::{Ca, Leaf};
use crate::ca_rotation::{self, Bundle, id_of};
use crate::crd::TlsStatus;
use crate::rotation::{self, Credentials, Id, Step};

/// On the ClusterSpec: a new value asks for a new CA.
pub const ROTATE_ANNOTATION: &str = "muster.dev/rotate-ca";
/// On the agents' Secret: the last value of [`ROTATE_ANNOTATION`] taken (by its hash
/// when long; a rotation the operator starts by itself leaves it as it is).
pub const HANDLED_ANNOTATION: &str = "muster.dev/ca-rotated-for";
/// On the agents' Secret, while a rotation runs: the id of the CA it moves to.
pub const TARGET_ANNOTATION: &str = "muster.dev/ca-target";
/// On the agents' Secret: when its CA bundle or certificate last changed by a rotation.
pub const WRITTEN_AT_ANNOTATION: &str = "muster.dev/ca-written-at";
/// On the agents' Secret, from the last step until the end: the CA Secrets no agent
/// trusts once the rotation ends (named in its Event).
pub const RETIRED_ANNOTATION: &str = "muster.dev/ca-retired";

/// The TLS Secrets of a cluster, as one reconcile read them (before anything else).
#[derive(Debug, Default, Clone)]
pub struct TlsSecrets {
    /// `<name>-muster-ca`: the cluster's first CA.
    pub first_ca: Option<Secret>,
    /// `<name>-muster-tls`: what the agent containers mount.
    pub mounted: Option<Secret>,
    /// The Secrets of CAs made by rotations that the mounted files trust or a
    /// rotation moves to (those found).
    pub rotated: Vec<Secret>,
}

/// A CA the operator holds: its id, its Secret's name, the CA with its key.
#[derive(Debug, Clone)]
pub struct Held {
    pub id: Id,
    pub secret: String,
    pub ca: Ca,
}

/// The text of `key` in `secret`, if any.
fn text<'a>(secret: &'a Secret, key: &str) -> Option<&'a str> {
    tls::text(secret, key).ok()
}

impl TlsSecrets {
    /// Reads the Secrets: the first CA, the mounted one, and the CA Secret of each
    /// other CA its bundle names or its rotation moves to (named by id).
    pub async fn read(ctx: &Context, cs: &ClusterSpec, ns: &str) -> Result<Self, Error> {
        let api = kube::Api::<Secret>::namespaced(ctx.client.clone(), ns);
        let get = |name: String| {
            let api = api.clone();
            async move {
                api.get_opt(&name)
                    .await
                    .map_err(|e| Error::kube(format!("read Secret {name}"), e))
            }
        };
        let first_ca = get(tls::ca_secret_name(cs)).await?;
        let mounted = get(tls::tls_secret_name(cs)).await?;
        let mut read = Self {
            first_ca,
            mounted,
            rotated: Vec::new(),
        };
        let mut names: Vec<String> = read
            .other_ids()
            .iter()
            .map(|id| tls::rotated_ca_secret_name(cs, id))
            .collect();
        // Nothing mounted: the CAs the status last showed, if rotations' (the agents'
        // files may trust one of them). Only a hint where to look: what the agents
        // trust is asked of them (see [`make`]).
        if read.mounted.is_none() {
            names.extend(
                status_hints(cs)
                    .iter()
                    .map(|id| tls::rotated_ca_secret_name(cs, id)),
            );
        }
        for name in names {
            if let Some(s) = get(name).await? {
                read.rotated.push(s);
            }
        }
        Ok(read)
    }

    /// The ids of CAs the mounted Secret trusts or moves to, but the first CA's.
    fn other_ids(&self) -> Vec<Id> {
        let first = self
            .first_ca
            .as_ref()
            .and_then(|s| text(s, CA_CERT))
            .and_then(|p| id_of(p).ok());
        let Some(mounted) = &self.mounted else {
            return Vec::new();
        };
        let mut ids: Vec<Id> = text(mounted, CA_CERT)
            .and_then(|t| Bundle::parse(t).ok())
            .map(|b| b.ids())
            .unwrap_or_default();
        ids.extend(mounted.annotations().get(TARGET_ANNOTATION).cloned());
        let mut seen = Vec::new();
        for id in ids {
            // (An annotation is anyone's text: only a fingerprint names a Secret.)
            let is_id = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
            if is_id && Some(&id) != first.as_ref() && !seen.contains(&id) {
                seen.push(id);
            }
        }
        seen.truncate(ca_rotation::MAX_TRUSTED + 1);
        seen
    }

    /// Every Secret read (each must be this ClusterSpec's: anything else is a conflict).
    pub fn all(&self) -> impl Iterator<Item = &Secret> {
        self.first_ca
            .iter()
            .chain(self.mounted.iter())
            .chain(self.rotated.iter())
    }

    /// The CAs at hand: each CA Secret read that is this ClusterSpec's, holds a usable
    /// CA and, for a rotation's, is named by that CA's id.
    pub fn held(&self, cs: &ClusterSpec) -> Vec<Held> {
        let uid = cs.uid().unwrap_or_default();
        let first = self.first_ca.iter().map(|s| (s, true));
        let rotated = self.rotated.iter().map(|s| (s, false));
        first
            .chain(rotated)
            .filter(|(s, _)| controlled_by(&s.metadata, &uid))
            .filter_map(|(s, is_first)| {
                let ca = tls::ca_of(s).ok()?;
                let id = id_of(&ca.cert_pem).ok()?;
                let name = s.name_any();
                (is_first || name == tls::rotated_ca_secret_name(cs, &id)).then_some(Held {
                    id,
                    secret: name,
                    ca,
                })
            })
            .collect()
    }

    /// The CA certificates (PEM) the operator's client trusts: the cluster's CAs that
    /// the mounted Secret trusts (never its text: a CA put there by hand is not
    /// trusted). Nothing mounted, no client: only [`make`] asks the agents then, with
    /// a client of its own that sends no token.
    pub fn client_pem(&self, cs: &ClusterSpec) -> Result<String, String> {
        let Some(mounted) = &self.mounted else {
            return Err(format!(
                "Secret {} (the agents' TLS files) is not there (yet)",
                tls::tls_secret_name(cs)
            ));
        };
        let ids: Vec<Id> = text(mounted, CA_CERT)
            .and_then(|t| Bundle::parse(t).ok())
            .map(|b| b.ids())
            .unwrap_or_default();
        let pem = pem_of(self.held(cs).iter().filter(|h| ids.contains(&h.id)));
        if pem.is_empty() {
            return Err("none of the CAs the agents trust is this ClusterSpec's".to_owned());
        }
        Ok(pem)
    }
}

/// The certificates (PEM) of `cas`, each ending its last line.
fn pem_of<'a>(cas: impl Iterator<Item = &'a Held>) -> String {
    // (A Secret restored by hand may lack the last line end.)
    cas.map(|h| format!("{}\n", h.ca.cert_pem.trim_end()))
        .collect()
}

/// What keeping the TLS Secrets did and where they stand.
#[derive(Debug, Default)]
pub struct Kept {
    /// Events: (reason, action, note).
    pub done: Vec<(&'static str, &'static str, String)>,
    /// None after a lost race (looked at again next time).
    pub status: Option<TlsStatus>,
    /// A CA rotation is under way: look again soon.
    pub rotating: bool,
}

/// The CAs (their first hex characters, at least 12) the status last showed trusted:
/// where to look for rotations' CA Secrets when the agents' Secret is gone. Never more
/// than a hint: the status may be old, or written by someone else.
fn status_hints(cs: &ClusterSpec) -> Vec<String> {
    let Some(cas) = cs
        .status
        .as_ref()
        .and_then(|s| s.tls.as_ref())
        .map(|t| &t.cas)
    else {
        return Vec::new();
    };
    cas.iter()
        .filter(|id| id.len() >= 12 && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .take(ca_rotation::MAX_TRUSTED)
        .cloned()
        .collect()
}

/// Why a new CA is wanted, if one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The ClusterSpec's annotation, with a value (as recorded) not handled yet.
    Asked(String),
    /// The CA in use ends within [`tls::CA_ROTATE_BEFORE`].
    Ends,
}

/// Whether a new CA is wanted: the ClusterSpec's annotation `asked` when not `handled`
/// yet, else the CA in use (`in_use`) ending within [`tls::CA_ROTATE_BEFORE`] of `now`.
/// Only the annotation's value is ever recorded as handled: a rotation by age leaves
/// the record alone (the new CA is not due for years).
pub fn request(
    asked: Option<&str>,
    handled: Option<&str>,
    in_use: &Ca,
    now: SystemTime,
) -> Option<Request> {
    if let Some(a) = asked
        .map(key_rotation::mark)
        .filter(|a| Some(a.as_str()) != handled)
    {
        return Some(Request::Asked(a));
    }
    (in_use.not_after < now + tls::CA_ROTATE_BEFORE).then_some(Request::Ends)
}

/// The certificate and key the agents' Secret holds, if readable.
fn leaf_of(secret: &Secret) -> Option<Leaf> {
    let cert_pem = text(secret, TLS_CERT)?;
    let not_after = tls::first_der(cert_pem)
        .as_deref()
        .and_then(node_agent::tls::not_after)?;
    Some(Leaf {
        cert_pem: cert_pem.to_owned(),
        key_pem: text(secret, TLS_KEY)?.to_owned(),
        not_after: std::time::UNIX_EPOCH + Duration::from_secs(not_after),
    })
}

fn short(id: &str) -> &str {
    id.get(..16).unwrap_or(id)
}

/// Keeps the TLS Secrets of `cs` as `secrets` read them: makes the CA and the agents'
/// certificate when nothing is mounted (see [`make`]), issues a new certificate under the CA in use before the current one ends
/// (rotation or not), and moves a CA rotation on by one step when every agent is ready
/// for it.
pub async fn keep(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    secrets: TlsSecrets,
    pods: &Pods<'_>,
    now: SystemTime,
) -> Result<Kept, Error> {
    let held = secrets.held(cs);
    let Some(live) = secrets.mounted else {
        return make(ctx, cs, ns, secrets.first_ca.is_some(), &held, pods, now).await;
    };
    let tls_name = tls::tls_secret_name(cs);
    let server_name = tls::server_name(cs);
    let names: Vec<String> = pods.pods.iter().map(ResourceExt::name_any).collect();
    let restore = format!(
        "Restore it from a backup taken since the last CA rotation step; or delete it and every pod of the cluster ({}): it is made anew before they start again",
        delete_pods(ns, &names)
    );
    let trusted = text(&live, CA_CERT).unwrap_or_default().to_owned();
    let bundle = Bundle::parse(&trusted).map_err(|e| {
        Error::Secret(format!(
            "Secret {ns}/{tls_name} cannot be kept: its {CA_CERT} is not what agents take ({e}); the operator writes nothing. {restore}"
        ))
    })?;
    // Each CA the agents trust must be at hand: a file without one would cut off the
    // agents that take it from those that have not.
    let mut cas: Vec<&Held> = Vec::new();
    for id in bundle.ids() {
        let ca = held.iter().find(|h| h.id == id).ok_or_else(|| {
            let first = tls::ca_secret_name(cs);
            let rotated = tls::rotated_ca_secret_name(cs, &id);
            Error::Secret(format!(
                "the agents trust CA {} but no CA Secret of this ClusterSpec holds it (it would be {ns}/{first} if it is the cluster's first CA, else {ns}/{rotated}; gone, or not this ClusterSpec's): a new CA would cut the agents that take it off from the others. Restore that Secret from a backup; or delete the ClusterSpec and create it again (the cluster starts anew)",
                short(&id)
            ))
        })?;
        cas.push(ca);
    }
    let ca_refs: Vec<&Ca> = cas.iter().map(|h| &h.ca).collect();
    let leaf = leaf_of(&live);
    let state = leaf
        .as_ref()
        .ok_or_else(|| format!("it holds no readable {TLS_CERT} and {TLS_KEY}"))
        .and_then(|l| ca_rotation::mounted_state(&bundle, l, &ca_refs, &server_name));
    // The CA in use: the one that issued the certificate, else (a certificate to issue
    // again) the bundle's first, which the operator writes first.
    let in_use: &Held = match &state {
        Ok(s) => cas
            .iter()
            .find(|h| h.id == s.in_use)
            .copied()
            .unwrap_or(cas[0]),
        Err(e) if cas.len() > 1 => {
            // Between two CAs, which one the neighbouring states serve is not known.
            return Err(Error::Secret(format!(
                "Secret {ns}/{tls_name} cannot be kept: {e}, and it trusts {} CAs (a rotation's files); the operator writes nothing. {restore}",
                cas.len()
            )));
        }
        Err(_) => cas[0],
    };
    let annotations = live.annotations().clone();
    let handled = annotations.get(HANDLED_ANNOTATION).map(String::as_str);
    // A target not in the file (a hand edit, a lost write) counts for nothing.
    let target = annotations
        .get(TARGET_ANNOTATION)
        .map(String::as_str)
        .filter(|t| bundle.ids().iter().any(|i| i == t));
    let asked = cs.annotations().get(ROTATE_ANNOTATION).map(String::as_str);
    let request = request(asked, handled, &in_use.ca, now);
    let status = |certificate_end: SystemTime,
                  ca: &Ca,
                  cas: Vec<String>,
                  rotation: Option<String>| TlsStatus {
        server_name: server_name.clone(),
        certificate_not_after: rfc3339(certificate_end),
        ca_not_after: rfc3339(ca.not_after),
        cas,
        rotation,
    };
    let ids: Vec<String> = bundle.ids().iter().map(|i| short(i).to_owned()).collect();
    let mut kept = Kept::default();

    // The certificate first, rotation or not: one about to end is issued again under
    // the CA in use, the trusted CAs kept, which every neighbouring state of a
    // rotation accepts (a rotation waiting on an agent must not let it expire).
    let end = match renew(ctx, cs, ns, &live, &in_use.ca, &trusted, now, &mut kept).await? {
        Renewal::Current(end) => end,
        renewed => {
            kept.rotating = target.is_some() || request.is_some() || cas.len() > 1;
            let rotation = kept
                .rotating
                .then(|| "the agents' certificate is issued again first; the CA rotation goes on once every agent serves it".to_owned());
            kept.status = match renewed {
                Renewal::Renewed(end) => Some(status(end, &in_use.ca, ids, rotation)),
                _ => None,
            };
            return Ok(kept);
        }
    };
    let (Ok(state), Some(leaf)) = (state, leaf) else {
        // (Renewal makes a readable certificate of a bundle CA, or fails above.)
        return Err(Error::Secret(format!(
            "Secret {ns}/{tls_name}: no certificate of its CAs"
        )));
    };
    let want = key_rotation::want(&state, target, request.as_ref().map(|_| "new"), None);
    let (target_id, new_ca) = match want {
        Want::Nothing => {
            kept.status = Some(status(end, &in_use.ca, ids, None));
            return Ok(kept);
        }
        Want::To(id) => (id, None),
        Want::NewKey => {
            let ca = crate::ca::new_ca(&tls::ca_name(cs, now), now, tls::CA_LIFETIME)
                .map_err(Error::Secret)?;
            (id_of(&ca.cert_pem).map_err(Error::Secret)?, Some(ca))
        }
    };
    let ring = |c: &Credentials| c.ring().iter().map(|i| short(i).to_owned()).collect();
    kept.rotating = true;
    let leaf_id = tls::first_der(&leaf.cert_pem)
        .map(|d| node_agent::tls::fingerprint(&d))
        .unwrap_or_default();
    let mounted_for = pods.mounted_for(&live, WRITTEN_AT_ANNOTATION);
    let (names, reports) = pods
        .reports(&cs.name_any(), |s| {
            ca_rotation::report_of(s.tls.as_ref(), &state, &leaf_id)
        })
        .await;
    let observed = rotation::Observed {
        mounted: &state,
        mounted_for,
        settle: pods.settle,
        pods: &names,
        reports: &reports,
    };
    let to = if new_ca.is_some() {
        // A new CA not written yet is made anew next time: no id to show.
        "to a new CA".to_owned()
    } else {
        format!("to CA {}", short(&target_id))
    };
    match rotation::plan(&observed, &target_id) {
        Step::Wait(lagging) => {
            let text = key_rotation::waiting_text(
                &to,
                "TLS files",
                Some("tls.reload-interval"),
                &lagging,
                mounted_for,
                pods.settle,
            );
            kept.status = Some(status(end, &in_use.ca, ring(&state), Some(text)));
        }
        Step::Done if target.is_none() => {
            kept.rotating = false;
            kept.status = Some(status(end, &in_use.ca, ring(&state), None));
        }
        Step::Done => {
            // Every agent trusts the target alone and serves its certificate.
            let mut next = live.clone();
            let a = next
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            a.remove(TARGET_ANNOTATION);
            let retired = a.remove(RETIRED_ANNOTATION);
            if key_rotation::write(ctx, ns, &tls_name, next).await? {
                kept.rotating = false;
                let mut note = format!(
                    "every agent trusts CA {} alone and serves a certificate of it",
                    short(&target_id)
                );
                if let Some(r) = retired.filter(|r| !r.is_empty()) {
                    note.push_str(&format!(
                        "; no agent trusts the CA in Secret {r} any more: delete it (kubectl delete secret -n {ns} {})",
                        r.replace(',', " ")
                    ));
                }
                tracing::info!(secret = %tls_name, "{note}");
                kept.done.push(("TlsCaRotated", "Rotate", note));
                kept.status = Some(status(end, &in_use.ca, ring(&state), None));
            }
        }
        Step::Mount(next_state) => {
            let mut at_hand: Vec<&Ca> = ca_refs.clone();
            if let Some(ca) = &new_ca {
                // The new CA's Secret before any file trusts it.
                let name = tls::rotated_ca_secret_name(cs, &target_id);
                let made = create_once(ctx, cs, ns, &tls::ca_secret_named(cs, &name, ca)).await?;
                if !tls::holds(&made, CA_CERT, &ca.cert_pem) {
                    // Another reconcile's (the same id, so the same certificate, or
                    // a race lost): looked at next time.
                    return Ok(kept);
                }
                // Named now: if the write below is lost, a later reconcile makes
                // another CA, and this Secret is trusted by nobody.
                kept.done.push((
                    "TlsCaCreated",
                    "Create",
                    format!(
                        "made CA {} for a rotation (Secret {name}); should no TLS file ever trust it (see the next Events), delete it",
                        short(&target_id)
                    ),
                ));
                at_hand.push(ca);
            }
            let issue =
                |ca: &Ca| crate::ca::issue(ca, &server_name, now, tls::CERTIFICATE_LIFETIME);
            let (bundle_text, next_leaf) = ca_rotation::files_of(
                &next_state,
                &trusted,
                &state.in_use,
                &leaf,
                &at_hand,
                &server_name,
                issue,
            )
            .map_err(|e| Error::Secret(format!("Secret {ns}/{tls_name}: {e}")))?;
            let mut next = live.clone();
            let data = next.data.get_or_insert_with(Default::default);
            for (key, value) in [
                (CA_CERT, &bundle_text),
                (TLS_CERT, &next_leaf.cert_pem),
                (TLS_KEY, &next_leaf.key_pem),
            ] {
                data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
            }
            let a = next
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            a.insert(TARGET_ANNOTATION.to_owned(), target_id.clone());
            a.insert(WRITTEN_AT_ANNOTATION.to_owned(), rfc3339(SystemTime::now()));
            if new_ca.is_some()
                && let Some(Request::Asked(r)) = &request
            {
                a.insert(HANDLED_ANNOTATION.to_owned(), r.clone());
            }
            let dropped: Vec<&str> = cas
                .iter()
                .filter(|h| !next_state.accepted.contains(&h.id))
                .map(|h| h.secret.as_str())
                .collect();
            if !dropped.is_empty() {
                a.insert(RETIRED_ANNOTATION.to_owned(), dropped.join(","));
            }
            if key_rotation::write(ctx, ns, &tls_name, next).await? {
                let what = if next_state.accepted.len() > 1 && next_state.in_use != target_id {
                    format!(
                        "CA {} trusted beside {} (its certificate not served yet)",
                        short(&target_id),
                        short(&next_state.in_use)
                    )
                } else if next_state.accepted.len() > 1 {
                    format!(
                        "a certificate of CA {} served now; the old CA is still trusted",
                        short(&target_id)
                    )
                } else {
                    format!("CA {} alone trusted", short(&next_state.in_use))
                };
                let reason = if new_ca.is_some() {
                    "TlsCaRotationStarted"
                } else {
                    "TlsCaRotationStep"
                };
                tracing::info!(secret = %tls_name, step = %what, "CA rotation");
                kept.done.push((reason, "Rotate", what.clone()));
                let next_ca = at_hand
                    .iter()
                    .find(|c| id_of(&c.cert_pem).is_ok_and(|i| i == next_state.in_use))
                    .copied()
                    .unwrap_or(&in_use.ca);
                kept.status = Some(status(
                    next_leaf.not_after,
                    next_ca,
                    ring(&next_state),
                    Some(format!(
                        "to CA {}: {what}; the next step once every agent uses it",
                        short(&target_id)
                    )),
                ));
            }
        }
    }
    Ok(kept)
}

/// Makes what is missing when nothing is mounted: the agents' certificate, under the
/// first CA (made now if there is none) while no pod holds a copy of the agents'
/// files. A pod that mounts the agents' Secret (whoever's pod: an orphan or another
/// StatefulSet's too) and got past setting up its volumes keeps its copy until its
/// kubelet refreshes it, so new files must trust the CA its copy trusts: those pods'
/// agents are asked (over TLS trusting every CA of the cluster at hand, sending no
/// token; the status only says which rotated CAs' Secrets to read), and the files are
/// made anew only under the one CA every running agent trusts alone
/// ([`ca_rotation::trusted_alone`]); else nothing is written, and the error says why.
/// The annotation's value, if any, counts as handled only for a cluster made now (no
/// copy anywhere): files made anew may have missed it.
async fn make(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    first_exists: bool,
    held: &[Held],
    pods: &Pods<'_>,
    now: SystemTime,
) -> Result<Kept, Error> {
    let ca_name = tls::ca_secret_name(cs);
    let tls_name = tls::tls_secret_name(cs);
    let server_name = tls::server_name(cs);
    let first = held.iter().find(|h| h.secret == ca_name);
    let holders = holders_of(ctx, ns, &tls_name).await?;
    let mut kept = Kept::default();
    let ca = if !holders.is_empty() {
        let names: Vec<String> = holders.iter().map(ResourceExt::name_any).collect();
        let read: Vec<&str> = held.iter().map(|h| h.secret.as_str()).collect();
        let refuse = |why: String| {
            Error::Secret(format!(
                "Secret {ns}/{tls_name} (the agents' TLS files) is gone while {} pod(s) hold copies of it, and {why}: files under another CA would cut each agent that takes them off from the others, so nothing is written (the agents were asked trusting the CAs of Secrets {read:?}, those at hand and named by the status). Restore the Secret from a backup taken since the last CA rotation step; or delete those pods ({}): it is made anew before they start again",
                holders.len(),
                delete_pods(ns, &names)
            ))
        };
        if held.is_empty() {
            return Err(refuse(format!(
                "no CA of this ClusterSpec's is at hand either ({ns}/{ca_name} gone or not usable, and none of a rotation's that the status names)"
            )));
        }
        // A client of its own: it trusts every CA of the cluster's at hand, retired
        // ones too, so it asks and sends nothing more (no token).
        let client = ctx
            .agents
            .with_tls(pem_of(held.iter()).as_bytes(), &server_name);
        let look = Pods {
            pods: &holders,
            agents: client.as_ref().map_err(String::as_str),
            ..*pods
        };
        let (_, reports) = look
            .reports(&cs.name_any(), |s| {
                ca_rotation::files_reported(s.tls.as_ref())
            })
            .await;
        let id = ca_rotation::trusted_alone(&reports).map_err(refuse)?;
        let held = held.iter().find(|h| h.id == id).ok_or_else(|| {
            refuse(format!(
                "the agents trust CA {} alone, which no CA Secret of this ClusterSpec at hand holds ({ns}/{ca_name}, or {ns}/{})",
                short(&id),
                tls::rotated_ca_secret_name(cs, &id)
            ))
        })?;
        held.ca.clone()
    } else if let Some(h) = first {
        h.ca.clone()
    } else if first_exists {
        return Err(Error::Secret(format!(
            "Secret {ns}/{ca_name} does not hold a usable CA of this ClusterSpec; the operator never overwrites it: restore it from a backup, or delete it, and the cluster's CA and the agents' certificate are made anew (no pod holds a copy of them)"
        )));
    } else {
        let fresh = crate::ca::new_ca(&tls::ca_name(cs, now), now, tls::CA_LIFETIME)
            .map_err(Error::Secret)?;
        let made = create_once(ctx, cs, ns, &tls::ca_secret(cs, &fresh)).await?;
        // (Or another reconcile's, made meanwhile: that one is used.)
        if tls::holds(&made, CA_CERT, &fresh.cert_pem) {
            tracing::info!(secret = %ca_name, "made the cluster's CA");
            kept.done.push((
                "TlsCaCreated",
                "Create",
                format!("made the cluster's CA (Secret {ca_name})"),
            ));
        }
        tls::ca_of(&made).map_err(Error::Secret)?
    };
    let leaf = crate::ca::issue(&ca, &server_name, now, tls::CERTIFICATE_LIFETIME)
        .map_err(Error::Secret)?;
    let mut secret = tls::tls_secret(cs, &ca.cert_pem, &leaf);
    if holders.is_empty()
        && let Some(asked) = cs.annotations().get(ROTATE_ANNOTATION)
    {
        secret
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(HANDLED_ANNOTATION.to_owned(), key_rotation::mark(asked));
    }
    let made = create_once(ctx, cs, ns, &secret).await?;
    if tls::holds(&made, TLS_CERT, &leaf.cert_pem) {
        let id = id_of(&ca.cert_pem).map_err(Error::Secret)?;
        let note = if holders.is_empty() {
            format!("issued the agents' certificate for {server_name} (Secret {tls_name})")
        } else {
            let mut note = format!(
                "issued the agents' certificate for {server_name} anew (Secret {tls_name} was gone) under CA {}, which every running agent trusts alone",
                short(&id)
            );
            if cs.annotations().contains_key(ROTATE_ANNOTATION) {
                note.push_str(&format!(
                    "; the value of {ROTATE_ANNOTATION} counts as not taken yet (the record was in the lost Secret): a CA rotation follows"
                ));
            }
            note
        };
        tracing::info!(secret = %tls_name, "{note}");
        kept.done.push(("TlsCertificateIssued", "Issue", note));
        kept.status = Some(TlsStatus {
            server_name,
            certificate_not_after: rfc3339(leaf.not_after),
            ca_not_after: rfc3339(ca.not_after),
            cas: vec![short(&id).to_owned()],
            rotation: None,
        });
    }
    Ok(kept)
}

/// The pods of the namespace that mount Secret `tls_name` and got past setting up
/// their volumes (so hold a copy of it): any container started, or waiting for
/// another reason than its volumes (an image to pull, a crash loop). Whoever's pods:
/// an orphan keeps its copy as well as the StatefulSet's own.
async fn holders_of(ctx: &Context, ns: &str, tls_name: &str) -> Result<Vec<Pod>, Error> {
    let pods = kube::Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&Default::default())
        .await
        .map_err(|e| Error::kube(format!("list the pods of namespace {ns}"), e))?
        .items;
    Ok(pods
        .into_iter()
        .filter(|p| mounts_secret(p, tls_name) && past_volume_setup(p))
        .collect())
}

/// Whether `pod` has a volume of Secret `name`.
fn mounts_secret(pod: &Pod, name: &str) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(name))
}

/// Whether the kubelet set up `pod`'s volumes: a container (or init container) ever
/// ran, or waits for another reason than `ContainerCreating` / `PodInitializing`
/// (which is where a pod whose Secret is missing waits).
pub(super) fn past_volume_setup(pod: &Pod) -> bool {
    super::observe::started(pod)
        || pod
            .status
            .iter()
            .flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            })
            .any(|c| {
                let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
                waiting.is_some_and(|w| {
                    !matches!(
                        w.reason.as_deref(),
                        None | Some("ContainerCreating" | "PodInitializing")
                    )
                })
            })
}

/// The command that deletes the pods `names` (by name: a selector of an older
/// cluster's labels would match other workloads' pods too).
fn delete_pods(ns: &str, names: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut text = format!(
        "kubectl delete pod -n {ns} {}",
        names
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    );
    if names.len() > SHOWN {
        text.push_str(&format!(" … and {} more", names.len() - SHOWN));
    }
    text
}

/// What [`renew`] found.
#[derive(Debug)]
enum Renewal {
    /// The certificate is current; it ends then.
    Current(SystemTime),
    /// Issued again; the new one ends then.
    Renewed(SystemTime),
    /// Issued again, but the Secret changed since read: looked at next time.
    Lost,
}

/// Issues the agents' certificate again under `ca` (the CA in use, the bundle
/// `trusted` kept) when it ends within [`tls::RENEW_BEFORE`] or the agents would refuse
/// it.
#[allow(clippy::too_many_arguments)]
async fn renew(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    live: &Secret,
    ca: &Ca,
    trusted: &str,
    now: SystemTime,
    kept: &mut Kept,
) -> Result<Renewal, Error> {
    let tls_name = tls::tls_secret_name(cs);
    let server_name = tls::server_name(cs);
    match tls::mounted(live, ca, &server_name, now) {
        tls::Mounted::Current { not_after } => Ok(Renewal::Current(not_after)),
        tls::Mounted::Unusable(why) => Err(Error::Secret(format!(
            "Secret {ns}/{tls_name} cannot be kept: {why}. A certificate of the cluster's CA would cut each agent that takes it off from those that have not yet; the operator writes nothing. Restore it from a backup; or delete it and every pod of the cluster, and it is made anew before they start again"
        ))),
        tls::Mounted::Renew { why, .. } => {
            let leaf = crate::ca::issue(ca, &server_name, now, tls::CERTIFICATE_LIFETIME)
                .map_err(Error::Secret)?;
            let mut renewed = live.clone();
            let data = renewed.data.get_or_insert_with(Default::default);
            for (key, value) in [
                (CA_CERT, trusted),
                (TLS_CERT, leaf.cert_pem.as_str()),
                (TLS_KEY, leaf.key_pem.as_str()),
            ] {
                data.insert(key.to_owned(), ByteString(value.as_bytes().to_vec()));
            }
            // Only over the Secret as read: a write since then is looked at anew.
            if !key_rotation::write(ctx, ns, &tls_name, renewed).await? {
                return Ok(Renewal::Lost);
            }
            tracing::info!(secret = %tls_name, %why, "renewed the agents' certificate");
            kept.done.push((
                "TlsCertificateRenewed",
                "Renew",
                format!(
                    "renewed the agents' certificate ({why}); agents take it within their tls.reload-interval after the kubelet updates the files"
                ),
            ));
            Ok(Renewal::Renewed(leaf.not_after))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

    #[test]
    fn a_ca_is_rotated_on_request_once_and_by_itself_a_year_before_it_ends() {
        let now = SystemTime::now();
        let ca = crate::ca::new_ca("muster team-a/cache CA", now, 10 * YEAR).expect("a CA");
        assert_eq!(request(None, None, &ca, now), None);
        assert_eq!(
            request(Some("first"), None, &ca, now),
            Some(Request::Asked("first".into()))
        );
        // Taken: asked again only with another value.
        assert_eq!(request(Some("first"), Some("first"), &ca, now), None);
        assert_eq!(
            request(Some("second"), Some("first"), &ca, now),
            Some(Request::Asked("second".into()))
        );
        // Nine years and a day on: less than a year left.
        let late = now + 9 * YEAR + Duration::from_secs(24 * 3600);
        assert_eq!(
            request(Some("first"), Some("first"), &ca, late),
            Some(Request::Ends)
        );
        // A request of the user's not taken yet comes first (and is the one recorded).
        assert_eq!(
            request(Some("second"), Some("first"), &ca, late),
            Some(Request::Asked("second".into()))
        );
        // After a rotation by age the record is unchanged and the new CA is not due:
        // nothing more, although the annotation still holds the value taken before.
        let next = crate::ca::new_ca("muster team-a/cache CA", late, 10 * YEAR).expect("a CA");
        assert_eq!(request(Some("first"), Some("first"), &next, late), None);
        // A long value is recorded by its hash, and compared so.
        let long = "x".repeat(300);
        let recorded = key_rotation::mark(&long);
        assert!(
            recorded.len() < 80 && recorded.starts_with("sha256:"),
            "{recorded}"
        );
        assert_eq!(request(Some(&long), Some(&recorded), &ca, now), None);
    }
}
