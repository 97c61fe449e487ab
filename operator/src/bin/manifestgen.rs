//! Prints what installs the operator, generated from `operator::install`:
//! `cargo run -p operator --bin manifestgen > manifests/operator.yaml`, and with the
//! argument `chart-rules`, the Helm chart's RBAC rules:
//! `cargo run -p operator --bin manifestgen -- chart-rules > charts/muster/templates/_rules.tpl`
//! (tests fail when a committed file differs).

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => match operator::install::operator_yaml(operator::install::IMAGE) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("manifestgen: cannot write the manifest as YAML: {e}");
                ExitCode::FAILURE
            }
        },
        Some("chart-rules") => {
            print!("{}", operator::install::chart_rules_tpl());
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "manifestgen: unknown argument {other:?}; use no argument (operator.yaml) or `chart-rules`"
            );
            ExitCode::from(2)
        }
    }
}
