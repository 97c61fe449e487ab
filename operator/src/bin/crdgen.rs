//! Prints the `ClusterSpec` CustomResourceDefinition as YAML:
//! `cargo run -p operator --bin crdgen > manifests/crd.yaml` (a test fails when the
//! committed file differs).

fn main() -> std::process::ExitCode {
    match operator::crd_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: cannot write the CRD as YAML: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
