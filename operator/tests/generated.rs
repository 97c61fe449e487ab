//! The generated files (`operator::generated`) must not drift from the code that makes
//! them, and the examples must be valid ClusterSpecs.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn every_generated_file_is_up_to_date() {
    let stale = operator::generated::stale(root()).expect("the generated files");
    assert!(
        stale.is_empty(),
        "out of date: {}; run `{}` and commit the result",
        stale.join(", "),
        operator::generated::COMMAND
    );
}

#[test]
fn every_example_is_a_valid_cluster_spec() {
    let dir = root().join("manifests/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("manifests/examples") {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let mut cs: operator::ClusterSpec =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        cs.metadata.namespace = Some("default".into());
        let problems = operator::validate::validate(&cs.spec);
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        operator::controller::build::owned(
            &cs,
            true,
            &operator::controller::build::Site::new(operator::controller::build::Selection::Muster),
        )
        .expect("builds");
        seen += 1;
    }
    assert_eq!(seen, 4, "minimal, DNS discovery, sidecar, keyowner");
}
