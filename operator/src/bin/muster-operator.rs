//! `muster-operator`: reconciles `ClusterSpec` resources into self-forming clusters of
//! muster agents. Runs in the cluster (in-cluster credentials) or outside it
//! (KUBECONFIG). Exit codes: 0 after SIGTERM/SIGINT, 1 when leadership was lost, 2 when
//! it cannot start (no API server, CRD missing, port taken) — with the reason and what to
//! do on stderr.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kube::api::{Api, ListParams};
use kube::client::ClientBuilder;
use node_agent::lease::KubernetesLease;
use operator::ClusterSpec;
use operator::controller::{self, Context};
use operator::leader;
use operator::metrics::Metrics;
use operator::server::{self, Health};
use tokio::sync::watch;

/// Runs self-forming clusters from ClusterSpec resources (muster.dev/v1alpha1).
#[derive(Debug, Parser)]
#[command(name = "muster-operator", version)]
struct Args {
    /// Watch ClusterSpecs in these namespaces only (comma-separated; a namespaced
    /// install, whose RBAC grants nothing elsewhere). Default: every namespace.
    #[arg(long, env = "MUSTER_WATCH_NAMESPACE", value_delimiter = ',')]
    namespace: Vec<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "MUSTER_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Namespace of the leader election Lease (in a pod: its own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, env = "MUSTER_LEASE_NAME", default_value = "muster-operator")]
    lease_name: String,
    /// This replica's name in the Lease and in Events. Default: the pod name, else
    /// `<hostname>-<pid>`.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format: `text` or `json`. The level comes from RUST_LOG (default `info`).
    #[arg(long, env = "MUSTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Reconcile at most this many ClusterSpecs at once (each one is never reconciled
    /// twice at once). At least 1.
    #[arg(long, env = "MUSTER_MAX_CONCURRENT_RECONCILES", default_value_t = controller::CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// Stop a reconcile that takes longer than this many seconds, report it in the
    /// ClusterSpec's status and try again with the back-off. At least 15 (a reconcile
    /// may ask the agents twice, 5 s each, besides the API server).
    #[arg(long, env = "MUSTER_RECONCILE_TIMEOUT_SECONDS", default_value_t = controller::RECONCILE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(15..=3600))]
    reconcile_timeout_seconds: u64,
    /// How late, in seconds, a kubelet shows a changed Secret in a pod's volume (its
    /// sync period, 1 min by default, and jitter): a cluster-key or CA rotation takes a
    /// pod whose agent is not running as holding the files written this long ago. Raise
    /// it where kubelets run with a longer `syncFrequency`.
    #[arg(long, env = "MUSTER_SECRET_REFRESH_SECONDS", default_value_t = controller::SECRET_REFRESH.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    secret_refresh_seconds: u64,
    /// For tests of leadership fencing only: wait this many milliseconds between
    /// deciding to delete a pod in a rollout and deleting it.
    #[arg(long, hide = true, default_value_t = 0)]
    test_delay_before_delete_ms: u64,
    /// For the local test platform only, where every process shares one network
    /// namespace: connect to agents from this address (as from a pod's IP), so that a
    /// test can cut the operator off from some pods.
    #[arg(long, hide = true)]
    test_agents_source_ip: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("muster-operator: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let code = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

/// Why the operator cannot start, with what to do.
fn fail(message: String) -> ExitCode {
    tracing::error!("{message}");
    eprintln!("muster-operator: {message}");
    ExitCode::from(2)
}

async fn run(mut args: Args) -> ExitCode {
    // `MUSTER_WATCH_NAMESPACE=""` (or a stray comma) means no namespace there.
    for ns in &mut args.namespace {
        *ns = ns.trim().to_owned();
    }
    args.namespace.retain(|ns| !ns.is_empty());
    args.namespace.sort();
    args.namespace.dedup();
    if let Some(bad) = args
        .namespace
        .iter()
        .find(|ns| !operator::validate::is_dns_label(ns))
    {
        return fail(format!(
            "--namespace: {bad:?} is not a namespace name (lowercase letters, digits and '-', at most 63 characters); give a comma-separated list, or nothing for every namespace"
        ));
    }
    let metrics = Metrics::new();
    let config = match kube::Config::infer().await {
        Ok(c) => c,
        Err(e) => {
            return fail(format!(
                "no Kubernetes configuration ({e}): run in a pod with a service account, or set KUBECONFIG"
            ));
        }
    };
    // Every request to the API server is counted (muster_operator_api_requests_total).
    let counted = metrics.clone();
    let count = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        counted.api_request(req.method());
        req
    });
    // Two clients: the leader Lease's own, and the one for everything else, whose
    // writes go out only while the fence holds (leadership, see `leader`).
    let fence = leader::Fence::default();
    // The fenced client does not retry by itself: a retry could go out after the fence
    // ended (the reconcile is retried instead).
    let mut fenced_config = config.clone();
    fenced_config.default_retry = false;
    let (lease_client, client) = match (
        ClientBuilder::try_from(config),
        ClientBuilder::try_from(fenced_config),
    ) {
        (Ok(a), Ok(b)) => (
            a.with_layer(&count).build(),
            b.with_layer(&count)
                .with_layer(&leader::FenceLayer(fence.clone()))
                .build(),
        ),
        (Err(e), _) | (_, Err(e)) => {
            return fail(format!("cannot build a Kubernetes client: {e}"));
        }
    };

    let health = Health {
        ready: Arc::default(),
        metrics: metrics.clone(),
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            return fail(format!(
                "cannot listen on {} ({e}): choose another address with --listen",
                args.listen
            ));
        }
    };
    tokio::spawn(node_agent::management::server::serve(
        listener,
        server::router(health.clone()),
        64,
        Duration::from_secs(10),
        None,
    ));

    // The CRD must be installed, and ClusterSpecs readable where they are watched: the
    // controller's watch would fail forever otherwise. (A namespaced install may list
    // them in its namespaces only.)
    let scopes: Vec<(Api<ClusterSpec>, String)> = if args.namespace.is_empty() {
        vec![(Api::all(client.clone()), "every namespace".into())]
    } else {
        args.namespace
            .iter()
            .map(|ns| {
                (
                    Api::namespaced(client.clone(), ns),
                    format!("namespace {ns}"),
                )
            })
            .collect()
    };
    for (specs, scope) in scopes {
        match specs.list(&ListParams::default().limit(1)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return fail(
                    "the ClusterSpec CRD (clusterspecs.muster.dev) is not installed: kubectl apply -f manifests/crd.yaml (or install the Helm chart), then start the operator again".into(),
                );
            }
            Err(e) => {
                return fail(format!(
                    "cannot list ClusterSpecs in {scope} ({e}): check the API server address and that this service account may list clusterspecs.muster.dev there (a namespaced install: --namespace must name the namespaces its Roles are in)"
                ));
            }
        }
    }
    health.ready.store(true, Ordering::Relaxed);

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "operator".into());
        format!("{host}-{}", std::process::id())
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        signal().await;
        tracing::info!("stopping: the current reconciles finish first");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let lease = KubernetesLease::new(
        lease_client,
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        leader::LEASE_DURATION,
    );
    let since = tokio::select! {
        since = leader::acquire(&lease, &fence) => since,
        () = stopped(stop_rx.clone()) => return ExitCode::SUCCESS,
    };
    // Renewals start at once, before anything else can take time.
    let mut keeper = {
        let (lease, fence) = (lease.clone(), fence.clone());
        tokio::spawn(async move { leader::keep(&lease, &fence, since).await })
    };
    metrics.leader.set(1);
    let mut ctx = Context::new(client, metrics.clone(), &identity, fence.clone()).await;
    // Its pods may reach the agents' management port (each cluster's NetworkPolicy).
    ctx.operator_namespace = args.lease_namespace.clone();
    ctx.delay_before_delete = Duration::from_millis(args.test_delay_before_delete_ms);
    if let Some(ip) = args.test_agents_source_ip {
        ctx.agents = operator::agents::Agents::from_ip(ip);
    }
    ctx.concurrency = args.max_concurrent_reconciles;
    ctx.reconcile_timeout = Duration::from_secs(args.reconcile_timeout_seconds);
    ctx.secret_refresh = Duration::from_secs(args.secret_refresh_seconds);
    let ctx = Arc::new(ctx);
    // A graceful stop lets the current reconciles finish; a lost Lease (or a keeper
    // that died) does not: the process ends at once (the fence already refuses their
    // writes).
    let lost = tokio::select! {
        () = controller::run(ctx, &args.namespace, stop_rx.clone()) => false,
        _ = &mut keeper => true,
    };
    keeper.abort();
    metrics.leader.set(0);
    if lost {
        fence.revoke();
        let message = "lost the leader Lease (no renewal in time, or another replica holds it): stopping at once so that two replicas never write together; the Deployment restarts this one";
        tracing::error!("{message}");
        eprintln!("muster-operator: {message}");
        return ExitCode::from(1);
    }
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "could not release the leader Lease; the next replica waits for it to run out");
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
