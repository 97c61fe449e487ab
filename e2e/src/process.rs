//! Child processes of the platform, all in one process group so that one signal stops
//! them all — on drop, after a panic, and at the next start when an earlier test process
//! was killed before it could clean up (the group id is recorded in the run folder).

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::Error;

/// One running program with its log file.
#[derive(Debug)]
pub struct Proc {
    pub name: &'static str,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts `program` in the group `group` (None: a new group led by this process).
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        dir: &Path,
        group: Option<u32>,
    ) -> Result<Self, Error> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log)
            .map_err(|e| Error::Setup(format!("cannot create {}: {e}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::Setup(format!("cannot open {}: {e}", log.display())))?;
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(group.map_or(0, |g| g as i32))
            .spawn()
            .map_err(|e| Error::Setup(format!("cannot start {}: {e}", program.display())))?;
        Ok(Self { name, log, child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error with the end of the log if the process has exited.
    pub fn check_running(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Error::Exited {
                name: self.name,
                status: status.to_string(),
                log: self.log.display().to_string(),
                tail: tail(&self.log, 30),
            }),
            Err(e) => Err(Error::Setup(format!("cannot query {}: {e}", self.name))),
        }
    }

    /// Waits for the process to end, at most `limit`; true if it did.
    pub fn wait_for_exit(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        loop {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return true;
            }
            if start.elapsed() > limit {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Stops a group: SIGTERM, up to `grace` for the given members to exit, then SIGKILL.
pub fn stop_group(group: u32, members: &mut [Proc], grace: Duration) {
    let pgid = Pid::from_raw(group as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    for p in members.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        p.wait_for_exit(left);
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    for p in members.iter_mut() {
        p.wait_for_exit(Duration::from_secs(5));
    }
}

/// Is a process with this id alive?
pub fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Kills what an earlier, crashed test process left in `group`.
pub fn kill_leftover_group(group: u32) {
    let _ = killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
}
