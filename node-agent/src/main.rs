//! `muster-agent`: the node agent process (sidecar or standalone).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use node_agent::config::{self, AgentConfig, Environment};
use node_agent::membership::actor::ViewPhase;
use node_agent::{Agent, agent, local_cluster};
use tracing::{error, info, warn};

#[derive(Debug, Parser)]
#[command(
    name = "muster-agent",
    version,
    about = "muster node agent: finds its peers, forms or joins exactly one cluster, keeps membership"
)]
struct Cli {
    /// YAML configuration file (see `muster-agent reference-config`). Environment
    /// variables MUSTER_<SECTION>_<KEY> override it, POD_IP sets cluster.hostname.
    #[arg(long, short, env = "MUSTER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "MUSTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the agent (the default).
    Run,
    /// Check the configuration and print the effective settings as YAML.
    CheckConfig,
    /// Print the documented reference configuration (every key and its default).
    ReferenceConfig,
    /// List the environment variable of every setting.
    EnvVars,
    /// Start N agents on local loopback addresses and watch them form one cluster.
    LocalCluster(local_cluster::Args),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn load(cli: &Cli) -> Result<AgentConfig, ExitCode> {
    AgentConfig::load(cli.config.as_deref(), &Environment::from_process()).map_err(|e| {
        eprintln!("muster-agent: {e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Cmd::ReferenceConfig) => {
            print!("{}", config::REFERENCE_YAML);
            ExitCode::SUCCESS
        }
        Some(Cmd::EnvVars) => {
            for (var, key) in config::all_variables() {
                println!("{var:<60} {key}");
            }
            ExitCode::SUCCESS
        }
        Some(Cmd::CheckConfig) => match load(&cli) {
            Ok(c) => {
                print!(
                    "{}",
                    serde_yaml::to_string(&c.settings.redacted()).unwrap_or_default()
                );
                eprintln!(
                    "configuration is valid: node {} (cluster `{}`)",
                    c.self_address, c.system_name
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Some(Cmd::LocalCluster(args)) => {
            init_logging(cli.log_format);
            exit_on_panic();
            run_to_end(local_cluster::run(args.clone()))
        }
        None | Some(Cmd::Run) => {
            let config = match load(&cli) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(cli.log_format);
            exit_on_panic();
            run_to_end(run(config))
        }
    }
}

/// Runs `main` on a new runtime, then stops the runtime without waiting long for work
/// on its blocking pool (dropping it would wait for that indefinitely).
fn run_to_end(main: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let rt = runtime();
    let code = rt.block_on(main);
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    code
}

fn runtime() -> tokio::runtime::Runtime {
    // A sidecar needs little: two workers serve the management API and the cluster port.
    #[allow(clippy::expect_used)]
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the async runtime")
}

/// A panic anywhere ends the process: a half-working agent would answer `/alive` and
/// `/ready` and even claim to lead while its membership no longer runs.
fn exit_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        error!(panic = %info, "a panic; exiting, since a half-working agent must not keep answering");
        eprintln!("muster-agent: {info}; exiting");
        std::process::exit(i32::from(agent::TASK_ENDED_EXIT_CODE));
    }));
}

async fn run(config: AgentConfig) -> ExitCode {
    let leave_timeout = config.settings.cluster.leave_timeout;
    let mut agent = match Agent::start(config).await {
        Ok(a) => a,
        Err(e) => {
            error!("{e}");
            eprintln!("muster-agent: {e}");
            return ExitCode::from(1);
        }
    };
    // The process ends on SIGTERM (after leaving), or when the cluster is done with
    // this member: it left (an operator's Leave) or was downed.
    let view = agent.cluster();
    let ended = async {
        match agent::ended(view).await {
            Some(phase) => phase,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        failed = agent.failed() => {
            error!(task = failed.task, how = %failed.how, "an agent task ended; exiting so that the container is restarted");
            eprintln!("muster-agent: {failed}; exiting");
            ExitCode::from(agent::TASK_ENDED_EXIT_CODE)
        }
        () = shutdown_signal() => {
            let started = std::time::Instant::now();
            if agent.leave(leave_timeout).await {
                info!(after_ms = started.elapsed().as_millis() as u64, "left the cluster; shutting down");
            } else {
                warn!(timeout = ?leave_timeout, "did not leave the cluster in time (cluster.leave-timeout); shutting down anyway, the others will detect it");
            }
            handed_over(&agent).await;
            agent.flush(LAST_WORDS).await;
            agent.close_event_streams(LAST_WORDS).await;
            agent.shutdown().await;
            ExitCode::SUCCESS
        }
        phase = ended => {
            if phase == ViewPhase::Left {
                handed_over(&agent).await;
            }
            agent.flush(LAST_WORDS).await;
            agent.close_event_streams(LAST_WORDS).await;
            agent.shutdown().await;
            if phase == ViewPhase::Left {
                info!("left the cluster (asked through the management API); shutting down");
                ExitCode::SUCCESS
            } else if phase == ViewPhase::JoinFailed {
                error!("could not join the cluster within cluster.shutdown-after-unsuccessful-join-seed-nodes; exiting so that a restart starts bootstrap afresh");
                ExitCode::from(JOIN_FAILED_EXIT_CODE)
            } else {
                error!("the cluster downed this member (split brain resolver or by hand); exiting so that a restart joins as a new member");
                ExitCode::from(DOWNED_EXIT_CODE)
            }
        }
    }
}

/// A member that left stays up (its application can still reach it) until the
/// application's handover gate opens or `cluster.handover-timeout` runs out.
async fn handed_over(agent: &Agent) {
    let held = agent.handover().body();
    // Only a member that was asked to stop waits: one that never joined hands nothing
    // over.
    if held.holds.is_empty() || !held.stopping {
        return;
    }
    info!(holds = %held.names(), "left the cluster; waiting for the application to hand over (cluster.handover-timeout)");
    if agent.handed_over().await {
        info!("the application released its holds on the handover gate");
    } else {
        warn!(holds = %agent.handover().body().names(), "the application did not release its holds on the handover gate within cluster.handover-timeout; stopping anyway");
    }
}

/// How long an ending agent waits for its queued cluster messages to be written.
const LAST_WORDS: std::time::Duration = std::time::Duration::from_secs(1);

/// Exit status of an agent the cluster downed (documented in README.md).
const DOWNED_EXIT_CODE: u8 = 3;
/// Exit status of an agent that could not join in time (documented in README.md).
const JOIN_FAILED_EXIT_CODE: u8 = 4;

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}
