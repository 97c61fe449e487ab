//! The ClusterSpec reference in README.md ("ClusterSpec reference"), generated from the
//! CRD's schema — the same doc comments `kubectl explain` shows — so the two never
//! disagree (see [`crate::generated`]).

use kube::CustomResourceExt;
use serde_json::Value;

use crate::ClusterSpec;

/// A Markdown table of every `spec` field two levels deep (deeper ones are Kubernetes'
/// own types, documented by Kubernetes).
pub fn markdown() -> String {
    let crd = serde_json::to_value(ClusterSpec::crd()).unwrap_or_default();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut rows = Vec::new();
    for (name, field) in properties(spec) {
        let path = format!("spec.{name}");
        let children = properties(field);
        if children.is_empty() {
            rows.push(row(&path, field));
        } else {
            for (child, f) in children {
                rows.push(row(&format!("{path}.{child}"), f));
            }
        }
    }
    let mut out = String::from("| field | type | meaning and default |\n|---|---|---|\n");
    for r in rows {
        out.push_str(&r);
    }
    out
}

fn properties(v: &Value) -> Vec<(&String, &Value)> {
    v.get("properties")
        .and_then(Value::as_object)
        .map(|o| o.iter().collect())
        .unwrap_or_default()
}

fn row(path: &str, field: &Value) -> String {
    let mut kind = field["type"].as_str().unwrap_or("object").to_owned();
    if let Some(values) = field.get("enum").and_then(Value::as_array) {
        let names: Vec<&str> = values.iter().filter_map(Value::as_str).collect();
        kind = format!("{kind}: {}", names.join(" \\| "));
    }
    let text = field["description"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|");
    format!("| `{path}` | {kind} | {text} |\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_lists_the_fields_users_set_most() {
        let table = markdown();
        for field in [
            "spec.replicas",
            "spec.bootstrap.newClusterEnabled",
            "spec.rollout.strategy",
        ] {
            assert!(table.contains(&format!("`{field}`")), "{table}");
        }
    }
}
