//! Prints the operator's install manifest as YAML:
//! `cargo run -p operator --bin manifestgen > manifests/operator.yaml` (a test fails
//! when the committed file differs).

fn main() -> std::process::ExitCode {
    match operator::install::operator_yaml(operator::install::IMAGE) {
        Ok(yaml) => {
            print!("{yaml}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("manifestgen: cannot write the manifest as YAML: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
