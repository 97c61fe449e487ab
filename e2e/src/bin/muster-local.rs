//! `muster-local up|down|status`: the local Kubernetes platform for people. `up` starts
//! it in the background and prints the kubeconfig; `down` stops it; `status` says
//! whether it runs and answers.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[derive(Debug, Parser)]
#[command(
    name = "muster-local",
    about = "A local Kubernetes control plane for trying and testing muster (no Docker needed)"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the platform in the background; prints the kubeconfig path.
    Up,
    /// Stop the platform and remove its files.
    Down,
    /// Is it running, and does the API server answer?
    Status,
    /// Run the platform in the foreground until SIGTERM or Ctrl-C (what `up` starts).
    #[command(hide = true)]
    Serve,
}

/// Where `up` records the running platform.
fn state_dir() -> PathBuf {
    e2e::control_plane::work_root().join("local")
}

#[derive(Debug)]
struct State {
    pid: u32,
    kubeconfig: String,
    server: String,
}

impl State {
    fn read() -> Option<Self> {
        let text = std::fs::read_to_string(state_dir().join("state")).ok()?;
        let mut lines = text.lines();
        Some(Self {
            pid: lines.next()?.parse().ok()?,
            kubeconfig: lines.next()?.to_owned(),
            server: lines.next()?.to_owned(),
        })
    }

    fn alive(&self) -> bool {
        kill(Pid::from_raw(self.pid as i32), None).is_ok()
    }
}

fn print_usage(state: &State) {
    println!("server:     {}", state.server);
    println!("kubeconfig: {}", state.kubeconfig);
    println!("\n  export KUBECONFIG={}", state.kubeconfig);
    println!("  kubectl get namespaces");
    println!("\nstop it with: cargo run -p e2e --bin muster-local -- down");
}

fn up() -> ExitCode {
    if let Some(s) = State::read().filter(State::alive) {
        println!("already running (pid {})", s.pid);
        print_usage(&s);
        return ExitCode::SUCCESS;
    }
    let dir = state_dir();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let _ = std::fs::remove_file(dir.join("state"));
    let log = dir.join("platform.log");
    let spawned = std::fs::File::create(&log).and_then(|out| {
        let err = out.try_clone()?;
        Command::new(std::env::current_exe()?)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: it outlives this command and the terminal's Ctrl-C.
            .process_group(0)
            .spawn()
    });
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start the platform: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("starting the control plane (log: {}) ...", log.display());
    println!("(the first time this builds Kubernetes from Debian's sources: about 10 minutes)");
    let start = Instant::now();
    loop {
        if let Some(s) = State::read() {
            println!("ready in {:.1} s", start.elapsed().as_secs_f64());
            print_usage(&s);
            return ExitCode::SUCCESS;
        }
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "the platform stopped during start-up ({status}); its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            return ExitCode::FAILURE;
        }
        if start.elapsed() > Duration::from_secs(1800) {
            eprintln!("not ready after 30 minutes; see {}", log.display());
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn down() -> ExitCode {
    let Some(s) = State::read() else {
        println!("not running");
        return ExitCode::SUCCESS;
    };
    if s.alive() {
        let _ = kill(Pid::from_raw(s.pid as i32), Signal::SIGTERM);
        let start = Instant::now();
        while s.alive() {
            if start.elapsed() > Duration::from_secs(30) {
                eprintln!("pid {} did not stop within 30 s; kill it by hand", s.pid);
                return ExitCode::FAILURE;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = std::fs::remove_file(state_dir().join("state"));
    println!("stopped");
    ExitCode::SUCCESS
}

async fn status() -> ExitCode {
    let Some(s) = State::read().filter(State::alive) else {
        println!("not running (start it with: cargo run -p e2e --bin muster-local -- up)");
        return ExitCode::from(3);
    };
    let answer = async {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&s.kubeconfig).map_err(|e| e.to_string())?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let client = kube::Client::try_from(config).map_err(|e| e.to_string())?;
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        client.request_text(req).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(5), answer).await {
        Ok(Ok(body)) if body.trim() == "ok" => {
            println!("running (pid {}), API server ready", s.pid);
            print_usage(&s);
            ExitCode::SUCCESS
        }
        Ok(Ok(body)) => {
            println!("running (pid {}), API server not ready: {body}", s.pid);
            ExitCode::from(1)
        }
        Ok(Err(e)) => {
            println!("running (pid {}), API server does not answer: {e}", s.pid);
            ExitCode::from(1)
        }
        Err(_) => {
            println!(
                "running (pid {}), API server does not answer within 5 s",
                s.pid
            );
            ExitCode::from(1)
        }
    }
}

async fn serve() -> ExitCode {
    let cp = match e2e::ControlPlane::start().await {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("cannot start the control plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    let state = format!(
        "{}\n{}\n{}\n",
        std::process::id(),
        cp.kubeconfig.display(),
        cp.server
    );
    let tmp = state_dir().join("state.tmp");
    if let Err(e) =
        std::fs::write(&tmp, state).and_then(|()| std::fs::rename(&tmp, state_dir().join("state")))
    {
        eprintln!("cannot record the platform's state: {e}");
        return ExitCode::FAILURE;
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot wait for SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("stopping");
    drop(cp);
    let _ = std::fs::remove_file(state_dir().join("state"));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("cannot start the async runtime")
    };
    match cli.command {
        Cmd::Up => up(),
        Cmd::Down => down(),
        Cmd::Status => rt().block_on(status()),
        Cmd::Serve => rt().block_on(serve()),
    }
}
