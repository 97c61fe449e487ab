//! The binaries script explains itself when it cannot help.

use std::process::Command;

#[test]
fn an_incomplete_kubebuilder_assets_folder_is_refused_with_the_fix() {
    let empty = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("empty-assets");
    std::fs::create_dir_all(&empty).expect("folder");
    let out = Command::new("bash")
        .arg(e2e::binaries::script())
        .env("KUBEBUILDER_ASSETS", &empty)
        .output()
        .expect("run the script");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&empty.display().to_string()),
        "names the folder: {stderr}"
    );
    for binary in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        assert!(stderr.contains(binary), "names {binary}: {stderr}");
    }
    assert!(stderr.contains("Unset it"), "says what to do: {stderr}");
    assert!(out.stdout.is_empty(), "prints no folder");
}
