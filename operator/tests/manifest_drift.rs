//! The files in `manifests/` are generated from code; they must not drift from it.

fn committed(file: &str) -> String {
    let path = format!("{}/../manifests/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap_or_default()
}

fn in_chart(file: &str) -> String {
    let path = format!("{}/../charts/muster/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn the_chart_has_the_same_crd_and_rules() {
    assert!(
        in_chart("crds/clusterspecs.muster.dev.yaml") == committed("crd.yaml"),
        "charts/muster/crds is out of date: run `cp manifests/crd.yaml charts/muster/crds/clusterspecs.muster.dev.yaml`"
    );
    assert!(
        in_chart("templates/_rules.tpl") == operator::install::chart_rules_tpl(),
        "charts/muster/templates/_rules.tpl is out of date: run \
         `cargo run -p operator --bin manifestgen -- chart-rules > charts/muster/templates/_rules.tpl`"
    );
}

#[test]
fn the_committed_crd_is_what_crdgen_writes() {
    let generated = operator::crd_yaml().expect("the CRD as YAML");
    assert!(
        committed("crd.yaml") == generated,
        "manifests/crd.yaml is out of date: run `cargo run -p operator --bin crdgen > manifests/crd.yaml`"
    );
}

#[test]
fn the_committed_install_manifest_is_what_manifestgen_writes() {
    let generated = operator::install::operator_yaml(operator::install::IMAGE).expect("YAML");
    assert!(
        committed("operator.yaml") == generated,
        "manifests/operator.yaml is out of date: run `cargo run -p operator --bin manifestgen > manifests/operator.yaml`"
    );
}

#[test]
fn every_example_is_a_valid_cluster_spec() {
    let dir = format!("{}/../manifests/examples", env!("CARGO_MANIFEST_DIR"));
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("manifests/examples") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let mut cs: operator::ClusterSpec =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        cs.metadata.namespace = Some("default".into());
        let problems = operator::validate::validate(&cs.spec);
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        operator::build::owned(&cs, true).expect("builds");
        seen += 1;
    }
    assert_eq!(seen, 3, "minimal, DNS discovery, sidecar");
}
