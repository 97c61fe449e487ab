//! Prints the `ClusterSpec` CustomResourceDefinition as YAML:
//! `cargo run -p operator --bin crdgen > manifests/crd.yaml`; with the argument
//! `reference`, the field table of README.md's "ClusterSpec reference". Tests fail when
//! the committed files differ.

fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("reference") {
        print!("{}", operator::reference::markdown());
        return std::process::ExitCode::SUCCESS;
    }
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
