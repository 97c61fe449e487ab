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
        let spec = c.spec.as_ref();
        let storage = spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"));
        match storage {
            None => bad(
                format!("{at}.spec.resources.requests.storage"),
                "is required: how much storage each pod's claim asks for, e.g. 1Gi".into(),
            ),
            Some(q) if quantity(&q.0).is_none_or(|v| v <= 0) => bad(
                format!("{at}.spec.resources.requests.storage"),
                format!(
                    "`{}` is not a size: use a positive Kubernetes quantity, e.g. 1Gi or 500Mi",
                    q.0
                ),
            ),
            Some(_) => {}
        }
        // What the API server compares but would not let change, or sets itself.
        let mut meta = serde_json::to_value(&c.metadata).unwrap_or_default();
        prune(&mut meta);
        for key in meta.as_object().into_iter().flat_map(|m| m.keys()) {
            if !["name", "labels", "annotations"].contains(&key.as_str()) {
                bad(
                    format!("{at}.metadata.{key}"),
                    "a claim template takes only a name, labels and annotations in its metadata; leave it out".into(),
                );
            }
        }
        if c.status.is_some() {
            bad(
                format!("{at}.status"),
                "is the API server's; leave it out".into(),
            );
        }
        // The StatefulSet takes a template without them, but every claim made from it
        // would be refused ("at least 1 access mode is required"), and the pods would
        // wait for it for ever.
        if spec
            .and_then(|s| s.access_modes.as_ref())
            .is_none_or(Vec::is_empty)
        {
            bad(
                format!("{at}.spec.accessModes"),
                "is required: e.g. [ReadWriteOnce] (one pod mounts each claim)".into(),
            );
        }
    }
    out
}

/// The value of a Kubernetes quantity (`1Gi`, `500M`, `1.5Ki`, `2e3`, `100m`) in
/// billionths, so that two spellings of one amount compare equal (the API server keeps
/// its own canonical form: `1024Mi` comes back as `1Gi`). `None` when it is not a
/// quantity or too large to count.
pub fn quantity(s: &str) -> Option<i128> {
    let s = s.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return None;
    }
    let (binary, mut exponent): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (1, 0),
        "Mi" => (2, 0),
        "Gi" => (3, 0),
        "Ti" => (4, 0),
        "Pi" => (5, 0),
        "Ei" => (6, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        e => {
            let digits = e.strip_prefix(['e', 'E'])?;
            let parsed: i32 = digits.parse().ok()?;
            if !(-30..=30).contains(&parsed) {
                return None;
            }
            (0, parsed)
        }
    };
    // digits × 10^(exponent − fraction digits + 9) × 1024^binary, exactly.
    let mut value: i128 = 0;
    for d in whole.chars().chain(fraction.chars()) {
        value = value
            .checked_mul(10)?
            .checked_add(i128::from(d.to_digit(10)?))?;
    }
    exponent = exponent - i32::try_from(fraction.len()).ok()? + 9;
    value = value.checked_mul(1024i128.checked_pow(binary)?)?;
    if exponent >= 0 {
        value = value.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?;
    } else {
        // Finer than a billionth: Kubernetes rounds up.
        let divisor = 10i128.checked_pow(exponent.unsigned_abs())?;
        value = value / divisor + i128::from(value % divisor != 0);
    }
    Some(if negative { -value } else { value })
}

/// A claim template as the API server compares it: the whole spec, with what the
/// server fills in filled in (volume mode; dataSourceRef from dataSource and back),
/// sizes by value rounded up to thousandths as the server rounds them (`1.3333Gi` is
/// kept as `1431619973940m`), empty values left out; of the metadata the name, labels
/// and annotations ([`check`] refuses the rest, and a status).
fn stored(c: &PersistentVolumeClaim) -> Value {
    let mut spec = serde_json::to_value(c.spec.clone().unwrap_or_default()).unwrap_or_default();
    if let Some(s) = spec.as_object_mut() {
        s.entry("volumeMode")
            .or_insert_with(|| Value::String("Filesystem".into()));
        // Each of dataSource and dataSourceRef is filled in from the other (the
        // reference only when it names no other namespace).
        let source = s.get("dataSource").filter(|v| !v.is_null()).cloned();
        let reference = s.get("dataSourceRef").filter(|v| !v.is_null()).cloned();
        if let (Some(r), None) = (&reference, &source)
            && r.get("namespace").is_none_or(Value::is_null)
        {
            s.insert("dataSource".into(), r.clone());
        }
        if let (None, Some(d)) = (reference, source) {
            s.insert("dataSourceRef".into(), d);
        }
    }
    for part in ["/resources/requests", "/resources/limits"] {
        let Some(sizes) = spec.pointer_mut(part).and_then(Value::as_object_mut) else {
            continue;
        };
        for v in sizes.values_mut() {
            if let Some(n) = v.as_str().and_then(quantity) {
                *v = Value::String(format!("{}n", up_to_thousandths(n)));
            }
        }
    }
    let mut out = serde_json::json!({
        "metadata": {
            "name": c.metadata.name,
            "labels": c.metadata.labels,
            "annotations": c.metadata.annotations,
        },
        "spec": spec,
    });
    prune(&mut out);
    out
}

/// `n` billionths rounded up (away from zero) to a whole thousandth.
fn up_to_thousandths(n: i128) -> i128 {
    const MILLI: i128 = 1_000_000;
    let rest = n % MILLI;
    if rest == 0 {
        n
    } else {
        n - rest + MILLI * n.signum()
    }
}

/// Removes nulls, empty maps and empty lists, which the server does not keep.
fn prune(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for x in m.values_mut() {
                prune(x);
            }
            m.retain(|_, x| !crate::controller::apply::is_empty(x));
        }
        Value::Array(a) => a.iter_mut().for_each(prune),
        _ => {}
    }
}

/// The paths at which `a` and `b` differ (objects key by key, anything else whole).
fn differences(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                differences(
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    &path,
                    out,
                );
            }
        }
        _ if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

/// The storage request of a template, as written.
fn size(c: &PersistentVolumeClaim) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

/// The problem when the templates the operator builds (`wanted`, with its labels)
/// differ from the live StatefulSet's (`live`, as the API server keeps them): the API
/// server refuses any such update. What the server fills in or spells its own way
/// does not count.
pub fn changed(
    wanted: &[PersistentVolumeClaim],
    live: &[PersistentVolumeClaim],
) -> Option<Problem> {
    let mut what = Vec::new();
    if wanted.len() == live.len() {
        for (w, l) in wanted.iter().zip(live) {
            let name = w.metadata.name.clone().unwrap_or_default();
            let (w, l) = (stored(w), stored(l));
            let mut paths = Vec::new();
            differences(&w, &l, "", &mut paths);
            if !paths.is_empty() {
                what.push(format!("`{name}` differs in {}", paths.join(", ")));
            }
        }
    } else {
        what.push(format!(
            "{} template(s) instead of {}",
            wanted.len(),
            live.len()
        ));
    }
    if what.is_empty() {
        return None;
    }
    let names = |l: &[PersistentVolumeClaim]| {
        l.iter()
            .map(|c| {
                format!(
                    "{} ({})",
                    c.metadata.name.clone().unwrap_or_default(),
                    size(c)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(Problem {
        field: FIELD.to_owned(),
        message: format!(
            "cannot change once the cluster's StatefulSet exists (Kubernetes forbids it): {}; it has [{}], the spec asks for [{}]; change it back, or recreate the cluster (claims are kept unless their retention says Delete)",
            what.join("; "),
            names(live),
            names(wanted)
        ),
    })
}

#[cfg(test)]
mod tests;
