//! A network partition between processes on loopback addresses: iptables DROP rules
//! in the INPUT chain for every packet between two sets of addresses. Processes that
//! bind their outbound connections to their own address (muster's agents, pods of the
//! local node) are cut off from each other; traffic from 127.0.0.1 (tests, the API
//! server) still flows. Needs iptables and root (CAP_NET_ADMIN).

use std::net::IpAddr;
use std::process::Command;

/// DROP rules in the INPUT chain for every packet between the two sides, all added in
/// one atomic `iptables-restore`, and removed the same way when dropped (also when the
/// test fails).
#[derive(Debug)]
pub struct Partition {
    rules: Vec<String>,
}

impl Partition {
    pub fn cut(left: &[IpAddr], right: &[IpAddr]) -> Self {
        let mut rules = Vec::new();
        for a in left {
            for b in right {
                rules.push(format!("INPUT -s {a} -d {b} -j DROP"));
                rules.push(format!("INPUT -s {b} -d {a} -j DROP"));
            }
        }
        iptables_restore("-A", &rules).unwrap_or_else(|e| {
            panic!(
                "{e}\nthis test cuts loopback traffic with iptables and needs it installed \
                 (apt-get install iptables; ./test does) and root"
            )
        });
        Self { rules }
    }

    /// Removes the rules (dropping does the same).
    pub fn heal(self) {}
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Err(e) = iptables_restore("-D", &self.rules) {
            eprintln!("could not remove the partition rules: {e}");
        }
    }
}

/// Applies `op` (`-A` or `-D`) to every rule of the filter table in one transaction.
fn iptables_restore(op: &str, rules: &[String]) -> Result<(), String> {
    use std::io::Write;
    let mut script = String::from("*filter\n");
    for r in rules {
        script.push_str(&format!("{op} {r}\n"));
    }
    script.push_str("COMMIT\n");
    let mut child = Command::new("iptables-restore")
        .args(["--noflush", "--wait"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run iptables-restore: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables-restore {op}: {}\n{script}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
