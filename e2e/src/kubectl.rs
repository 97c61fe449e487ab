//! Running kubectl against a platform, for tests and the demo: what a user would type.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `kubectl ARGS` with `KUBECONFIG` set to `kubeconfig` (when given; else kubectl's
/// own choice, as on kind) and `stdin` as its input. Ok: its output; Err: the command
/// and its output, for the message.
pub fn run(
    kubeconfig: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    let mut cmd = Command::new("kubectl");
    cmd.args(args);
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run kubectl ({e}): is it installed?"))?;
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .map_err(|e| format!("kubectl {}: {e}", args.join(" ")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("kubectl {}: {e}", args.join(" ")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("kubectl {}: {}", args.join(" "), text.trim()))
    }
}
