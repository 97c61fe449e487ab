//! Writes every generated file of the repository (see `operator::generated`): the CRD
//! and its chart copy, the install manifest, the chart's RBAC rules and README.md's
//! generated tables. `--check` writes nothing and exits 1 when a file is out of date.
//!
//! `cargo run -p operator --bin generate [-- --check]`

use std::path::Path;
use std::process::ExitCode;

use operator::generated;

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("generate: unknown argument {other:?}; use no argument (write) or --check");
            return ExitCode::from(2);
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = match generated::files(&root) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("generate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stale = 0;
    for f in files {
        let path = root.join(f.path);
        if std::fs::read_to_string(&path).ok().as_deref() == Some(&*f.contents) {
            continue;
        }
        stale += 1;
        if check {
            eprintln!("out of date: {}", f.path);
        } else if let Err(e) = std::fs::write(&path, &f.contents) {
            eprintln!("generate: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        } else {
            println!("wrote {}", f.path);
        }
    }
    if check && stale > 0 {
        eprintln!("run `{}` to bring them up to date", generated::COMMAND);
        return ExitCode::FAILURE;
    }
    if stale == 0 {
        println!("every generated file is up to date");
    }
    ExitCode::SUCCESS
}
