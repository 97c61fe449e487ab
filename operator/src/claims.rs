//! `spec.volumeClaimTemplates`: the pods' persistent volume claims (the StatefulSet's
//! volumeClaimTemplates). The templates are parsed here, with the field of any problem
//! named; a claim template needs a name (a DNS label no pod volume uses) and a storage
//! request. Kubernetes does not let a StatefulSet's claim templates change, so a
//! change after the StatefulSet exists is refused before it is sent ([`changed`]).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use serde_json::Value;

use crate::validate::Problem;

/// Where the field lives in the ClusterSpec.
pub const FIELD: &str = "spec.volumeClaimTemplates";

/// The templates of `raw`, or the problems that keep it from being used.
pub fn parse(raw: &Value) -> Result<Vec<PersistentVolumeClaim>, Vec<Problem>> {
    let claims: Vec<PersistentVolumeClaim> =
        serde_path_to_error::deserialize(raw).map_err(|e| {
            vec![Problem {
                field: format!("{FIELD}{}", path_suffix(&e.path().to_string())),
                message: format!(
                    "{} (each must be a Kubernetes PersistentVolumeClaim)",
                    e.inner()
                ),
            }]
        })?;
    Ok(claims)
}

/// `[0].spec` from serde_path_to_error's `[0].spec` or `.` (the whole list).
fn path_suffix(path: &str) -> String {
    match path {
        "." => String::new(),
        p if p.starts_with('[') => p.to_owned(),
        p => format!(".{p}"),
    }
}

/// The problems of the templates; `taken`: volume names of the pod (the operator's and
/// the pod template's), which a claim template may not reuse.
pub fn check(claims: &[PersistentVolumeClaim], taken: &BTreeSet<String>) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for (i, c) in claims.iter().enumerate() {
        let name = c.metadata.name.clone().unwrap_or_default();
        let at = format!("{FIELD}[{i}]");
        let mut bad = |field: String, message: String| out.push(Problem { field, message });
        if !crate::validate::is_dns_label(&name) {
            bad(
                format!("{at}.metadata.name"),
                format!(
                    "`{name}` cannot name a claim template: use a DNS label (lowercase letters, digits, '-', at most 63)"
                ),
            );
        } else if taken.contains(&name) {
            bad(
                format!("{at}.metadata.name"),
                format!(
                    "`{name}` is the name of a pod volume already; name the claim template otherwise"
                ),
            );
        } else if !names.insert(name.clone()) {
            bad(
                format!("{at}.metadata.name"),
                format!("`{name}` is listed twice"),
            );
        }
        let storage = c
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        if storage.is_none() {
            bad(
                format!("{at}.spec.resources.requests.storage"),
                "is required: how much storage each pod's claim asks for, e.g. 1Gi".into(),
            );
        }
    }
    out
}

/// What of a claim template the API server keeps as written (it adds defaults to the
/// rest): name, storage class, access modes, storage request.
fn summary(
    c: &PersistentVolumeClaim,
) -> (Option<String>, Option<String>, Vec<String>, Option<String>) {
    let spec = c.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").map(|q| q.0.clone()));
    (
        c.metadata.name.clone(),
        spec.storage_class_name,
        spec.access_modes.unwrap_or_default(),
        storage,
    )
}

/// The problem when `wanted` differs from the live StatefulSet's `live` templates (the
/// API server refuses such an update). A storage class or access modes the server
/// filled in where the template left them out do not count.
pub fn changed(
    wanted: &[PersistentVolumeClaim],
    live: &[PersistentVolumeClaim],
) -> Option<Problem> {
    let differs = wanted.len() != live.len()
        || wanted.iter().zip(live).any(|(w, l)| {
            let (wn, wc, wm, ws) = summary(w);
            let (ln, lc, lm, ls) = summary(l);
            wn != ln || ws != ls || (wc.is_some() && wc != lc) || (!wm.is_empty() && wm != lm)
        });
    differs.then(|| {
        let names = |l: &[PersistentVolumeClaim]| {
            l.iter()
                .map(|c| {
                    let (n, _, _, s) = summary(c);
                    format!("{} ({})", n.unwrap_or_default(), s.unwrap_or_default())
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        Problem {
            field: FIELD.to_owned(),
            message: format!(
                "cannot change once the cluster's StatefulSet exists (Kubernetes forbids it): it has [{}], the spec asks for [{}]; change it back, or recreate the cluster (claims are kept unless their retention says Delete)",
                names(live),
                names(wanted)
            ),
        }
    })
}

#[cfg(test)]
mod tests;
