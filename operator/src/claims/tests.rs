use serde_json::json;

use super::*;

fn claims(v: serde_json::Value) -> Vec<PersistentVolumeClaim> {
    parse(&v).expect("claim templates")
}

fn taken() -> BTreeSet<String> {
    ["config", "cluster-key", "scratch"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_claim_template_needs_a_free_name_and_a_storage_request() {
    let good = claims(json!([
        {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
    ]));
    assert_eq!(check(&good, &taken()), vec![]);
    let bad = claims(json!([
        {"metadata": {"name": "Data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}},
        {"metadata": {"name": "scratch"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}},
        {"metadata": {"name": "logs"}, "spec": {}},
        {"metadata": {"name": "logs"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}},
    ]));
    let fields: Vec<String> = check(&bad, &taken()).into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "spec.volumeClaimTemplates[0].metadata.name",
            "spec.volumeClaimTemplates[1].metadata.name",
            "spec.volumeClaimTemplates[2].spec.resources.requests.storage",
            "spec.volumeClaimTemplates[3].metadata.name",
        ]
    );
}

#[test]
fn a_template_of_the_wrong_shape_names_its_field() {
    let problems = parse(&json!([{"metadata": {"name": "data"}, "spec": {"accessModes": "RWO"}}]))
        .expect_err("refused");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].field,
        "spec.volumeClaimTemplates[0].spec.accessModes"
    );
    let problems = parse(&json!({"name": "data"})).expect_err("refused");
    assert_eq!(problems[0].field, "spec.volumeClaimTemplates");
}

#[test]
fn a_change_of_the_templates_is_refused_but_server_defaults_are_not_one() {
    let wanted = claims(json!([
        {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}},
    ]));
    // As the API server keeps it: class and access modes filled in, a status added.
    let live = claims(json!([
        {"metadata": {"name": "data"}, "spec": {"storageClassName": "standard", "accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem", "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}},
    ]));
    assert_eq!(changed(&wanted, &live), None);
    let bigger = claims(json!([
        {"metadata": {"name": "data"}, "spec": {"resources": {"requests": {"storage": "2Gi"}}}},
    ]));
    let p = changed(&bigger, &live).expect("refused");
    assert_eq!(p.field, "spec.volumeClaimTemplates");
    assert!(
        p.message.contains("data (1Gi)") && p.message.contains("data (2Gi)"),
        "{p:?}"
    );
    assert!(changed(&[], &live).is_some(), "removing them is a change");
    assert!(changed(&wanted, &[]).is_some(), "adding them is a change");
    assert_eq!(changed(&[], &[]), None);
}
