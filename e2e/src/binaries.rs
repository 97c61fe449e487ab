//! Finding the Kubernetes binaries: `scripts/k8s-binaries.sh` decides (envtest's
//! `KUBEBUILDER_ASSETS`, the cache, or a build from Debian's source package) and prints
//! the folder. Run once per test process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Error;

/// The script, from the crate's source folder.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/k8s-binaries.sh")
}

/// The folder with `etcd`, `kube-apiserver`, `kube-controller-manager` and
/// `kube-scheduler`; builds them the first time (minutes; progress on stderr).
pub fn folder() -> Result<PathBuf, Error> {
    static FOLDER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOLDER
        .get_or_init(|| {
            let script = script();
            let out = Command::new("bash")
                .arg(&script)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}); its messages are above",
                    script.display(),
                    out.status
                ));
            }
            let stdout = String::from_utf8_lossy(&out.stdout);
            stdout
                .lines()
                .last()
                .map(|l| PathBuf::from(l.trim()))
                .ok_or_else(|| format!("{} printed no folder", script.display()))
        })
        .clone()
        .map_err(Error::Setup)
}
