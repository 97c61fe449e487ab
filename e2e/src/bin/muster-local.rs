//! `muster-local up|down|status`: the local Kubernetes platform for people. `up` starts
//! it in the background — control plane, cluster DNS and a process-kubelet node that
//! runs `…/muster-agent:*` images as the `muster-agent` built beside this binary — and
//! prints the kubeconfig; `down` stops it; `status` says whether it runs and answers.

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

/// Where the node puts its pods and the cluster DNS.
#[derive(Debug, Clone, clap::Args)]
struct Addresses {
    /// The cluster DNS listens on this address, port 53.
    #[arg(long, default_value = "127.0.49.53")]
    dns_ip: std::net::Ipv4Addr,
    /// Pods get addresses SUBNET.1 … SUBNET.254.
    #[arg(long, default_value = "127.0.50", value_parser = parse_subnet)]
    pod_subnet: [u8; 3],
}

fn parse_subnet(s: &str) -> Result<[u8; 3], String> {
    let parts: Vec<u8> = s
        .split('.')
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("{s:?} is not three numbers 0-255 like 127.0.50"))?;
    match parts.as_slice() {
        [127, b, c] => Ok([127, *b, *c]),
        [_, _, _] => Err(format!("{s:?}: pods get loopback addresses; use 127.x.y")),
        _ => Err(format!("{s:?} is not three numbers like 127.0.50")),
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start the platform in the background; prints the kubeconfig path.
    Up(Addresses),
    /// Stop the platform and remove its files.
    Down,
    /// Is it running, and does the API server answer?
    Status,
    /// Run the platform in the foreground until SIGTERM or Ctrl-C (what `up` starts).
    #[command(hide = true)]
    Serve(Addresses),
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
    node: String,
}

impl State {
    fn read() -> Option<Self> {
        let text = std::fs::read_to_string(state_dir().join("state")).ok()?;
        let mut lines = text.lines();
        Some(Self {
            pid: lines.next()?.parse().ok()?,
            kubeconfig: lines.next()?.to_owned(),
            server: lines.next()?.to_owned(),
            node: lines.next()?.to_owned(),
        })
    }

    fn alive(&self) -> bool {
        kill(Pid::from_raw(self.pid as i32), None).is_ok()
    }
}

fn print_usage(state: &State) {
    println!("server:     {}", state.server);
    println!("kubeconfig: {}", state.kubeconfig);
    println!("node:       {}", state.node);
    println!("\n  export KUBECONFIG={}", state.kubeconfig);
    println!("  kubectl get namespaces");
    println!("\nstop it with: cargo run -p e2e --bin muster-local -- down");
}

fn up(addresses: &Addresses) -> ExitCode {
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
            .arg("--dns-ip")
            .arg(addresses.dns_ip.to_string())
            .arg("--pod-subnet")
            .arg(addresses.pod_subnet.map(|b| b.to_string()).join("."))
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

async fn serve(addresses: &Addresses) -> ExitCode {
    let cp = match e2e::ControlPlane::start().await {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("cannot start the control plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    let client = match cp.client().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot reach the API server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dns_ip = std::net::IpAddr::V4(addresses.dns_ip);
    let dns = match e2e::ClusterDns::start(client.clone(), (dns_ip, 53).into()).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "cannot start the cluster DNS on {dns_ip}:53 (needs root; another address with --dns-ip?): {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let agent = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("muster-agent")))
        .filter(|p| p.exists());
    let mut images =
        e2e::ImageTable::default().with(e2e::EXAMPLE_IMAGE_NAME, e2e::example_application());
    match agent {
        Some(bin) => images = images.with("muster-agent", bin),
        None => eprintln!(
            "note: no muster-agent beside this binary (cargo build -p node-agent): muster-agent pods will show ErrImagePull"
        ),
    }
    let client_for_volumes = client.clone();
    let node = match e2e::LocalNode::start(
        client,
        e2e::NodeConfig {
            name: "local-1".into(),
            pod_subnet: addresses.pod_subnet,
            images,
            log_dir: cp.dir.clone(),
            api_port: cp.api_port,
            ca_cert: cp.pki.ca.cert.clone(),
            dns: dns_ip,
            volume_refresh: e2e::VolumeRefresh::default(),
        },
    )
    .await
    {
        Ok(n) => n,
        Err(e) => {
            eprintln!("cannot start the node: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Persistent volume claims get a folder each (StorageClass local-folder).
    let volumes = match e2e::provisioner::FolderProvisioner::start(
        client_for_volumes,
        cp.dir.join("volumes"),
    )
    .await
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("cannot start the volume provisioner: {e}");
            return ExitCode::FAILURE;
        }
    };
    let [a, b, c] = addresses.pod_subnet;
    let state = format!(
        "{}\n{}\n{}\nlocal-1, pods on {a}.{b}.{c}.x, logs in {}, cluster DNS {dns_ip}\n",
        std::process::id(),
        cp.kubeconfig.display(),
        cp.server,
        cp.dir.display(),
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
    drop(volumes);
    drop(node);
    drop(dns);
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
        Cmd::Up(a) => up(&a),
        Cmd::Down => down(),
        Cmd::Status => rt().block_on(status()),
        Cmd::Serve(a) => rt().block_on(serve(&a)),
    }
}
