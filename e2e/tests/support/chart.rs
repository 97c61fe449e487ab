//! Rendering the Helm chart (`charts/muster`) as `helm template` does: with real Helm on
//! kind (`E2E_TARGET=kind`), and here, where Helm cannot be installed, with the small
//! renderer in `e2e/chart-render` (Go's text/template and Debian's sprig), built once per
//! test run into cargo's target folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use e2e::Target;

/// The chart's folder.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/muster")
}

/// The oldest Kubernetes the chart supports (its kubeVersion); rendering says this
/// version. The local platform's API server is 1.20 (built from Debian's source): every
/// API the chart uses (v1, apps/v1, rbac.authorization.k8s.io/v1) is there already.
pub const KUBE_VERSION: &str = "1.26.0";

/// `chart-render`, built with Debian's Go in GOPATH mode against Debian's Go packages.
fn renderer() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("chart-render");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-render");
        let status = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg("main.go")
            .current_dir(&src)
            .env("GO111MODULE", "off")
            .env("GOPATH", "/usr/share/gocode")
            .env(
                "GOCACHE",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
            )
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `go` ({e}): install golang-go golang-github-masterminds-sprig-dev \
                     golang-github-xeipuuv-gojsonschema-dev golang-gopkg-yaml.v2-dev \
                     golang-gopkg-yaml.v3-dev (./test does)"
                )
            });
        assert!(
            status.success(),
            "building e2e/chart-render failed: are Debian's Go packages installed? (./test installs them)"
        );
        out
    })
}

/// What rendering gave: the manifests, or the error output when it failed.
pub struct Rendered {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Renders the chart as release `release` in `namespace` with the given values files
/// (later ones win) and extra flags (`--include-crds`, `--notes`, …).
pub fn render(release: &str, namespace: &str, values: &[&Path], extra: &[&str]) -> Rendered {
    let helm = Target::from_env().ok() == Some(Target::Kind);
    let mut cmd = if helm {
        let mut c = Command::new("helm");
        c.arg("template");
        c
    } else {
        Command::new(renderer())
    };
    cmd.args([release, &chart_dir().to_string_lossy()]).args([
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
    ]);
    for v in values {
        cmd.arg("--values").arg(v);
    }
    cmd.args(extra);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run the chart renderer");
    Rendered {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Every document of a rendered YAML stream.
pub fn documents(yaml: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|d| {
            let v: serde_json::Value = serde::Deserialize::deserialize(d).expect("YAML");
            (!v.is_null()).then_some(v)
        })
        .collect()
}
