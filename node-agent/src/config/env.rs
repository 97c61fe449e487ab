//! Environment overrides: `POD_IP` and `MUSTER_<SECTION>_<KEY>` for every key.
//!
//! The variable for a key is derived from the key's path in the default settings, so a
//! new key gets its variable without a table to maintain. Kubernetes "service links"
//! (`MUSTER_SERVICE_HOST`, `MUSTER_PORT_8558_TCP…`, injected when a Service is named
//! `muster`) are not ours and are ignored; any other unknown `MUSTER_` variable is an
//! error, as a typo would otherwise be silently ignored.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use super::{ConfigError, Settings, closest};

/// The process environment, injected so tests need not touch the real one.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
}

impl Environment {
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }
}

/// Keys whose default is empty but whose value is not text.
const NON_TEXT_OPTIONAL_KEYS: &[&str] = &[
    "bootstrap.fallback-port",
    "bootstrap.expected-contact-point-nr",
];

/// The environment variable name for a dotted key.
pub fn variable_for(key: &str) -> String {
    format!(
        "MUSTER_{}",
        key.replace(['-', '.'], "_").to_ascii_uppercase()
    )
}

/// Dotted paths of every leaf key with its default value.
fn leaf_keys() -> Vec<(Vec<String>, Value)> {
    fn walk(prefix: &mut Vec<String>, v: &Value, out: &mut Vec<(Vec<String>, Value)>) {
        match v {
            Value::Mapping(m) => {
                for (k, child) in m {
                    if let Value::String(k) = k {
                        prefix.push(k.clone());
                        walk(prefix, child, out);
                        prefix.pop();
                    }
                }
            }
            leaf => out.push((prefix.clone(), leaf.clone())),
        }
    }
    let defaults = serde_yaml::to_value(Settings::default()).unwrap_or(Value::Null);
    let mut out = Vec::new();
    walk(&mut Vec::new(), &defaults, &mut out);
    out
}

/// Every key and its variable, for docs and `--help`.
pub fn all_variables() -> Vec<(String, String)> {
    leaf_keys()
        .into_iter()
        .map(|(path, _)| {
            let key = path.join(".");
            (variable_for(&key), key)
        })
        .collect()
}

/// `MUSTER_` variables that are not settings (read by the command line).
pub const COMMAND_LINE_VARIABLES: &[&str] = &["MUSTER_CONFIG", "MUSTER_LOG_FORMAT"];

fn is_service_link(var: &str) -> bool {
    // Docker-link style variables Kubernetes injects for a Service named `muster`.
    var == "MUSTER_PORT"
        || var.starts_with("MUSTER_PORT_")
        || var.starts_with("MUSTER_SERVICE_HOST")
        || var.starts_with("MUSTER_SERVICE_PORT")
}

fn scalar(raw: &str, default: &Value, key: &str) -> Value {
    let parsed = serde_yaml::from_str::<Value>(raw).ok().filter(|v| {
        matches!(
            v,
            Value::Bool(_) | Value::Number(_) | Value::String(_) | Value::Null
        )
    });
    let text_expected = matches!(default, Value::String(_))
        || (matches!(default, Value::Null) && !NON_TEXT_OPTIONAL_KEYS.contains(&key));
    match parsed {
        Some(Value::String(s)) => Value::String(s),
        Some(v) if !text_expected => v,
        _ => Value::String(raw.to_owned()),
    }
}

fn set_path(doc: &mut Value, path: &[String], value: Value) {
    let mut cur = doc;
    for (i, seg) in path.iter().enumerate() {
        if !matches!(cur, Value::Mapping(_)) {
            *cur = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = cur else { return };
        let k = Value::String(seg.clone());
        if i + 1 == path.len() {
            map.insert(k, value);
            return;
        }
        cur = map
            .entry(k)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
}

/// Applies `POD_IP` and `MUSTER_*` to the document. Returns, per dotted key, the variable
/// that set it (so messages can say where a bad value came from).
pub(super) fn apply(
    doc: &mut Value,
    env: &Environment,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut origins = BTreeMap::new();
    if let Some(ip) = env.get("POD_IP").filter(|s| !s.is_empty()) {
        set_path(
            doc,
            &["cluster".into(), "hostname".into()],
            Value::String(ip.to_owned()),
        );
        origins.insert("cluster.hostname".to_owned(), "POD_IP".to_owned());
    }
    let keys = leaf_keys();
    let by_var: BTreeMap<String, (Vec<String>, Value)> = keys
        .into_iter()
        .map(|(path, default)| (variable_for(&path.join(".")), (path, default)))
        .collect();
    let mut problems = Vec::new();
    for (var, raw) in &env.vars {
        if !var.starts_with("MUSTER_")
            || is_service_link(var)
            || COMMAND_LINE_VARIABLES.contains(&var.as_str())
        {
            continue;
        }
        let Some((path, default)) = by_var.get(var) else {
            let names: Vec<&str> = by_var.keys().map(String::as_str).collect();
            let hint = closest(var, &names)
                .map(|c| format!(" (did you mean {c}?)"))
                .unwrap_or_default();
            problems.push(super::Problem {
                key: None,
                origin: None,
                message: format!("unknown environment variable {var}{hint}; every key has one: MUSTER_<SECTION>_<KEY>, e.g. MUSTER_BOOTSTRAP_STABLE_MARGIN"),
            });
            continue;
        };
        let key = path.join(".");
        let value = if matches!(default, Value::Sequence(_)) {
            Value::Sequence(
                raw.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            )
        } else {
            scalar(raw, default, &key)
        };
        set_path(doc, path, value);
        origins.insert(key, var.clone());
    }
    if problems.is_empty() {
        Ok(origins)
    } else {
        Err(ConfigError { problems })
    }
}
