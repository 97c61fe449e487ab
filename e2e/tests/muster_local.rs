//! `muster-local up|status|down`, run as a person would, in a work folder of its own.

use std::path::Path;
use std::process::Command;

fn muster_local(workdir: &Path, command: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_muster-local"))
        .arg(command)
        .env("E2E_WORKDIR", workdir)
        .output()
        .expect("run muster-local");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn up_status_down() {
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("muster-local");
    let _ = std::fs::remove_dir_all(&workdir);
    let (code, up) = muster_local(&workdir, "up");
    assert_eq!(code, Some(0), "{up}");
    let kubeconfig = up
        .lines()
        .find_map(|l| l.strip_prefix("kubeconfig: "))
        .expect("up prints the kubeconfig")
        .trim()
        .to_owned();
    assert!(Path::new(&kubeconfig).exists(), "{kubeconfig}");

    assert!(
        up.contains("node:       local-1, pods on 127.0.50.x"),
        "{up}"
    );
    let nodes = Command::new("kubectl")
        .args(["get", "nodes", "--no-headers"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("run kubectl");
    let nodes = String::from_utf8_lossy(&nodes.stdout);
    assert!(
        nodes.contains("local-1") && nodes.contains(" Ready"),
        "the node is registered and Ready: {nodes}"
    );

    let (code, again) = muster_local(&workdir, "up");
    assert_eq!(code, Some(0), "{again}");
    assert!(again.contains("already running"), "{again}");

    let (code, status) = muster_local(&workdir, "status");
    assert_eq!(code, Some(0), "{status}");
    assert!(status.contains("API server ready"), "{status}");

    let pid: u32 = status
        .split("pid ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .expect("status names the pid");
    let (code, down) = muster_local(&workdir, "down");
    assert_eq!(code, Some(0), "{down}");
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the platform process has ended"
    );
    assert!(!Path::new(&kubeconfig).exists(), "its files are removed");

    let (code, status) = muster_local(&workdir, "status");
    assert_eq!(code, Some(3), "{status}");
    assert!(status.contains("not running"), "{status}");
}
