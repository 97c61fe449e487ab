//! The chart renderer's own Go source (`e2e/chart-render`): formatted as `gofmt` writes
//! it and clean under `go vet`, with Debian's Go packages in GOPATH mode as the chart
//! tests build it (`./test` installs them).

use std::path::Path;
use std::process::{Command, Output};

fn source() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/chart-render"))
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.current_dir(source())
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env(
            "GOCACHE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown} ({e}): install golang-go (./test does)"))
}

#[test]
fn the_renderer_source_is_formatted_as_gofmt_writes_it() {
    let out = run(Command::new("gofmt").args(["-l", "."]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unformatted = String::from_utf8_lossy(&out.stdout);
    assert!(
        unformatted.trim().is_empty(),
        "not formatted: {unformatted}; run `gofmt -w e2e/chart-render`"
    );
}

#[test]
fn the_renderer_passes_go_vet() {
    let out = run(Command::new("go").args(["vet", "main.go"]));
    assert!(
        out.status.success(),
        "go vet e2e/chart-render/main.go:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
