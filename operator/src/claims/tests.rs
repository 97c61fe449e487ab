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
        {"metadata": {"name": "Data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        {"metadata": {"name": "scratch"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        {"metadata": {"name": "logs"}, "spec": {"accessModes": ["ReadWriteOnce"]}},
        {"metadata": {"name": "logs"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
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
        {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
    ]));
    // As the API server keeps it: a volume mode filled in, a status added.
    let live = claims(json!([
        {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem", "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}},
    ]));
    assert_eq!(changed(&wanted, &live), None);
    let bigger = claims(json!([
        {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}},
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

#[test]
fn quantities_compare_by_value() {
    assert_eq!(quantity("1Gi"), quantity("1024Mi"));
    assert_eq!(quantity("1Gi"), Some(1_073_741_824_000_000_000));
    assert_eq!(quantity("1.5Ki"), quantity("1536"));
    assert_eq!(quantity("1k"), quantity("1e3"));
    assert_eq!(quantity("1000M"), quantity("1G"));
    assert_eq!(quantity("100m"), quantity("0.1"));
    assert_eq!(quantity("1n"), Some(1));
    assert_eq!(
        quantity("0.5n"),
        Some(1),
        "finer than a billionth rounds up"
    );
    // The server keeps sizes rounded up to thousandths.
    assert_eq!(
        up_to_thousandths(quantity("1.3333Gi").expect("a size")),
        quantity("1431619973940m").expect("a size")
    );
    assert_eq!(up_to_thousandths(1), 1_000_000);
    assert_eq!(up_to_thousandths(2_000_000), 2_000_000);
    assert_eq!(quantity("-1Ki"), Some(-1_024_000_000_000));
    assert_ne!(quantity("1G"), quantity("1Gi"));
    for bad in [
        "", "Gi", "1.2.3", "1 Gi", "1GB", "1e", "1e99", "ten", "1gi", ".",
    ] {
        assert_eq!(quantity(bad), None, "{bad:?}");
    }
    assert_eq!(quantity("99999999999999999999999999999999999999Ei"), None);
}

#[test]
fn a_claim_template_needs_access_modes_and_a_positive_size() {
    let bad = claims(json!([
        {"metadata": {"name": "a"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}},
        {"metadata": {"name": "b"}, "spec": {"accessModes": [], "resources": {"requests": {"storage": "1Gi"}}}},
        {"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "lots"}}}},
        {"metadata": {"name": "d"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "0"}}}},
    ]));
    let problems = check(&bad, &taken());
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.volumeClaimTemplates[0].spec.accessModes",
            "spec.volumeClaimTemplates[1].spec.accessModes",
            "spec.volumeClaimTemplates[2].spec.resources.requests.storage",
            "spec.volumeClaimTemplates[3].spec.resources.requests.storage",
        ]
    );
    assert!(
        problems[2].message.contains("`lots` is not a size"),
        "{problems:?}"
    );
}

#[test]
fn the_stored_form_of_a_template_is_no_change() {
    let wanted = claims(json!([
        {"metadata": {"name": "data", "labels": {"app.kubernetes.io/instance": "one"}},
         "spec": {"accessModes": ["ReadWriteOnce"], "dataSource": {"kind": "PersistentVolumeClaim", "name": "seed"},
                  "resources": {"requests": {"storage": "1024Mi"}}}},
    ]));
    // What the API server keeps: its own spelling of the size, a volume mode, the data
    // source copied to dataSourceRef, type fields, a status.
    let live = claims(json!([
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
         "metadata": {"name": "data", "labels": {"app.kubernetes.io/instance": "one"}, "creationTimestamp": null},
         "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                  "dataSource": {"kind": "PersistentVolumeClaim", "name": "seed"},
                  "dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "seed"},
                  "resources": {"requests": {"storage": "1Gi"}}},
         "status": {"phase": "Pending"}},
    ]));
    assert_eq!(changed(&wanted, &live), None);
}

#[test]
fn labels_modes_class_and_limits_are_changes_and_are_named() {
    let base = json!({"metadata": {"name": "data", "labels": {"a": "1"}},
                      "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let live = claims(json!([base.clone()]));
    let with = |pointer: &str, v: serde_json::Value| {
        let mut t = base.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("pointer");
        t.pointer_mut(parent)
            .and_then(serde_json::Value::as_object_mut)
            .expect("parent")
            .insert(key.to_owned(), v);
        claims(json!([t]))
    };
    for (pointer, value, named) in [
        ("/metadata/labels", json!({"a": "2"}), "metadata.labels"),
        (
            "/metadata/annotations",
            json!({"b": "1"}),
            "metadata.annotations",
        ),
        (
            "/spec/accessModes",
            json!(["ReadWriteOncePod"]),
            "spec.accessModes",
        ),
        (
            "/spec/storageClassName",
            json!("fast"),
            "spec.storageClassName",
        ),
        ("/spec/volumeMode", json!("Block"), "spec.volumeMode"),
        (
            "/spec/resources",
            json!({"requests": {"storage": "1Gi"}, "limits": {"storage": "2Gi"}}),
            "spec.resources.limits",
        ),
        (
            "/spec/selector",
            json!({"matchLabels": {"disk": "ssd"}}),
            "spec.selector",
        ),
    ] {
        let p = changed(&with(pointer, value), &live)
            .unwrap_or_else(|| panic!("{pointer} is a change"));
        assert!(p.message.contains(named), "{pointer}: {p:?}");
    }
    // Removing a class that was set is a change too (the server fills none in a
    // StatefulSet's templates).
    let with_class = with("/spec/storageClassName", json!("fast"));
    let p = changed(&live, &with_class).expect("the class removed");
    assert!(p.message.contains("spec.storageClassName"), "{p:?}");
}

#[test]
fn a_claim_template_takes_no_other_metadata_and_no_status() {
    let bad = claims(json!([
        {"metadata": {"name": "data", "namespace": "other", "finalizers": ["x"]},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
         "status": {"phase": "Pending"}},
    ]));
    let fields: Vec<String> = check(&bad, &taken()).into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "spec.volumeClaimTemplates[0].metadata.finalizers",
            "spec.volumeClaimTemplates[0].metadata.namespace",
            "spec.volumeClaimTemplates[0].status",
        ]
    );
}

#[test]
fn a_size_finer_than_a_thousandth_is_compared_as_the_server_rounds_it() {
    let fine = claims(json!([
        {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1.3333Gi"}}}},
    ]));
    let kept = claims(json!([
        {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem", "resources": {"requests": {"storage": "1431619973940m"}}}},
    ]));
    assert_eq!(changed(&fine, &kept), None);
}
