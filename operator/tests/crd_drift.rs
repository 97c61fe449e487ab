//! `manifests/crd.yaml` is generated from the Rust types; it must not drift from them.

#[test]
fn the_committed_crd_is_what_crdgen_writes() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crd.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = operator::crd_yaml().expect("the CRD as YAML");
    assert!(
        committed == generated,
        "manifests/crd.yaml is out of date: run `cargo run -p operator --bin crdgen > manifests/crd.yaml`"
    );
}
