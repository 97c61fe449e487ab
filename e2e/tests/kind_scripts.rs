//! The kind scripts cannot run without kind and a container engine; they must say so
//! plainly, and point at the local platform, rather than fail obscurely.

use std::path::{Path, PathBuf};

/// A PATH holding only the tools the scripts use to check, so kind, docker and kubectl
/// are absent whatever the machine has.
fn bare_path(dir: &Path) {
    std::fs::create_dir_all(dir).expect("folder");
    for tool in ["bash", "dirname", "grep", "printf"] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is needed"));
        let link = dir.join(tool);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(found, link).expect("symlink");
    }
}

#[test]
fn kind_scripts_say_plainly_that_they_cannot_run_without_kind() {
    let kind_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kind");
    let path = std::env::temp_dir().join(format!("muster-kind-test-{}", std::process::id()));
    bare_path(&path);
    for script in [
        "create-cluster.sh",
        "load-images.sh",
        "test.sh",
        "install.sh",
        "delete-cluster.sh",
    ] {
        let out = std::process::Command::new(path.join("bash"))
            .arg(kind_dir.join(script))
            .env_clear()
            .env("PATH", &path)
            .output()
            .expect("run the script");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{script}: {err}");
        assert!(
            err.contains("this machine cannot run kind"),
            "{script}: {err}"
        );
        for missing in ["the kind binary", "kubectl", "docker"] {
            assert!(err.contains(missing), "{script} names {missing}: {err}");
        }
        if matches!(script, "install.sh" | "test.sh") {
            assert!(err.contains("helm ("), "{script} names helm: {err}");
        }
        assert!(
            err.contains("cargo test -p e2e"),
            "{script} says what to use: {err}"
        );
    }
    std::fs::remove_dir_all(&path).expect("clean up");
}
