//! A Kubernetes control plane from local binaries: etcd, kube-apiserver (RBAC, per-run
//! certificates), kube-controller-manager and kube-scheduler on loopback ports chosen
//! at run time, so several can run at once. Everything stops when the value is dropped,
//! also when a test panics; the run folder (certificates, kubeconfigs, logs) is then
//! kept and its path printed.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::Error;
use crate::binaries;
use crate::certs::{CertFiles, Pki};
use crate::process::{self, Proc};

/// The service range; its first address is the `kubernetes` Service.
const SERVICE_RANGE: &str = "10.0.0.0/24";
const SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    /// Run folder: certificates, kubeconfigs, logs, etcd data.
    pub dir: PathBuf,
    /// Admin kubeconfig (user in `system:masters`).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    pub api_port: u16,
    pub pki: Pki,
    /// How long the start took.
    pub started_in: Duration,
    group: u32,
    procs: Vec<Proc>,
    keep: bool,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, Error> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Setup(format!("no free loopback port: {e}")))
}

/// Where runs put their folders: `$E2E_WORKDIR`, else `<tmp>/muster-e2e`.
pub fn work_root() -> PathBuf {
    std::env::var_os("E2E_WORKDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("muster-e2e"))
}

/// Removes the folders of runs whose test process is gone, killing what they left.
fn clean_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let owner = std::fs::read_to_string(e.path().join("owner")).unwrap_or_default();
        let mut it = owner
            .split_whitespace()
            .filter_map(|x| x.parse::<u32>().ok());
        let (Some(pid), Some(group)) = (it.next(), it.next()) else {
            continue;
        };
        if !process::alive(pid) {
            process::kill_leftover_group(group);
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn kubeconfig_yaml(server: &str, ca: &Path, user: &CertFiles) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: muster-e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: user\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: muster-e2e\n  context:\n    cluster: muster-e2e\n    user: user\n    namespace: default\ncurrent-context: muster-e2e\n",
        ca = ca.display(),
        cert = user.cert.display(),
        key = user.key.display(),
    )
}

fn s(x: impl std::fmt::Display) -> String {
    x.to_string()
}

/// Flags kube-controller-manager and kube-scheduler share: their credentials, one
/// instance (no leader election), serving on a loopback port of this run only.
fn component_flags(kubeconfig: &Path, port: u16) -> Vec<String> {
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        s("--leader-elect=false"),
        s("--bind-address=127.0.0.1"),
        format!("--secure-port={port}"),
        // 1.20 still serves insecurely on a fixed port unless told not to.
        s("--port=0"),
        s("--profiling=false"),
        s("--v=1"),
    ]
}

impl ControlPlane {
    /// Starts everything and waits until the API server is ready and the controllers
    /// work (the `default` ServiceAccount exists).
    pub async fn start() -> Result<Self, Error> {
        let started = Instant::now();
        let bin = binaries::folder()?;
        let root = work_root();
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Setup(format!("cannot create {}: {e}", root.display())))?;
        clean_leftovers(&root);
        static RUN: AtomicU32 = AtomicU32::new(0);
        let dir = root.join(format!(
            "run-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etcd"))
            .map_err(|e| Error::Setup(format!("cannot create {}: {e}", dir.display())))?;
        let pki = Pki::generate(&dir, SERVICE_IP)?;

        let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let (cm_port, sched_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Proc::spawn(
            "etcd",
            &bin.join("etcd"),
            &[
                s("--name=e2e"),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                s("--log-level=warn"),
            ],
            &dir,
            None,
        )?;
        let group = etcd.pid();
        std::fs::write(
            dir.join("owner"),
            format!("{} {group}\n", std::process::id()),
        )
        .map_err(|e| Error::Setup(format!("cannot write the owner file: {e}")))?;
        let server = format!("https://127.0.0.1:{api_port}");
        let mut cp = Self {
            kubeconfig: dir.join("admin.kubeconfig"),
            dir,
            server,
            api_port,
            pki,
            started_in: Duration::ZERO,
            group,
            procs: vec![etcd],
            keep: std::env::var_os("E2E_KEEP").is_some(),
        };
        let pki = cp.pki.clone();
        let write = |name: &str, text: String| -> Result<PathBuf, Error> {
            let path = cp.dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| Error::Setup(format!("cannot write {}: {e}", path.display())))?;
            Ok(path)
        };
        write(
            "admin.kubeconfig",
            kubeconfig_yaml(&cp.server, &pki.ca.cert, &pki.admin),
        )?;
        let cm_kubeconfig = write(
            "controller-manager.kubeconfig",
            kubeconfig_yaml(&cp.server, &pki.ca.cert, &pki.controller_manager),
        )?;
        let sched_kubeconfig = write(
            "scheduler.kubeconfig",
            kubeconfig_yaml(&cp.server, &pki.ca.cert, &pki.scheduler),
        )?;

        let apiserver = Proc::spawn(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                s("--bind-address=127.0.0.1"),
                s("--advertise-address=127.0.0.1"),
                format!("--secure-port={api_port}"),
                s("--insecure-port=0"),
                format!("--tls-cert-file={}", pki.apiserver.cert.display()),
                format!("--tls-private-key-file={}", pki.apiserver.key.display()),
                format!("--client-ca-file={}", pki.ca.cert.display()),
                format!(
                    "--service-account-key-file={}",
                    pki.service_account_public_key.display()
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    pki.service_account_key.display()
                ),
                s("--service-account-issuer=https://kubernetes.default.svc.cluster.local"),
                format!("--service-cluster-ip-range={SERVICE_RANGE}"),
                s("--authorization-mode=RBAC"),
                s("--allow-privileged=true"),
                s("--profiling=false"),
                s("--v=1"),
            ],
            &cp.dir,
            Some(group),
        )?;
        cp.procs.push(apiserver);
        let client = cp.wait_ready().await?;

        let mut cm_args = component_flags(&cm_kubeconfig, cm_port);
        cm_args.extend([
            // No kubelet heartbeats here: the process kubelet keeps its node usable.
            s("--controllers=*,-nodelifecycle"),
            format!(
                "--service-account-private-key-file={}",
                pki.service_account_key.display()
            ),
            format!("--root-ca-file={}", pki.ca.cert.display()),
            s("--use-service-account-credentials=true"),
        ]);
        let controller_manager = Proc::spawn(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &cm_args,
            &cp.dir,
            Some(group),
        )?;
        cp.procs.push(controller_manager);
        let scheduler = Proc::spawn(
            "kube-scheduler",
            &bin.join("kube-scheduler"),
            &component_flags(&sched_kubeconfig, sched_port),
            &cp.dir,
            Some(group),
        )?;
        cp.procs.push(scheduler);

        // The service-account controller creating `default` shows the controllers run
        // with working credentials; pods need that account anyway.
        let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
        cp.poll(
            "the `default` ServiceAccount (controller-manager working)",
            || {
                let accounts = accounts.clone();
                async move {
                    match accounts.get_opt("default").await {
                        Ok(Some(_)) => Ok(Some(())),
                        Ok(None) => Ok(None),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await?;
        cp.started_in = started.elapsed();
        eprintln!(
            "e2e: control plane ready in {:.1} s at {} (kubeconfig {})",
            cp.started_in.as_secs_f64(),
            cp.server,
            cp.kubeconfig.display()
        );
        Ok(cp)
    }

    /// A client with admin rights.
    pub async fn client(&self) -> Result<kube::Client, Error> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| Error::Setup(format!("cannot read {}: {e}", self.kubeconfig.display())))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Setup(format!("bad kubeconfig: {e}")))?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A client that authenticates with a bearer token (a service account's, say), so
    /// that RBAC applies to it as to a pod.
    pub async fn client_with_token(
        &self,
        token: &str,
        namespace: &str,
    ) -> Result<kube::Client, Error> {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: muster-e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: token\n  user:\n    token: {token}\ncontexts:\n- name: token\n  context:\n    cluster: muster-e2e\n    user: token\n    namespace: {namespace}\ncurrent-context: token\n",
            server = self.server,
            ca = self.pki.ca.cert.display(),
        );
        let kubeconfig = Kubeconfig::from_yaml(&yaml)
            .map_err(|e| Error::Setup(format!("token kubeconfig: {e}")))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Setup(format!("bad kubeconfig: {e}")))?;
        Ok(kube::Client::try_from(config)?)
    }

    async fn wait_ready(&mut self) -> Result<kube::Client, Error> {
        let client = self.client().await?;
        let c = client.clone();
        self.poll("kube-apiserver /readyz", || {
            let c = c.clone();
            async move {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| e.to_string())?;
                match c.request_text(req).await {
                    Ok(body) if body.trim() == "ok" => Ok(Some(())),
                    Ok(body) => Err(body),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await?;
        Ok(client)
    }

    /// Polls `check` every 100 ms until it returns `Some`, failing early if a process
    /// of the platform has exited.
    async fn poll<T, F, Fut>(&mut self, what: &str, mut check: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, String>>,
    {
        let start = Instant::now();
        let mut every = tokio::time::interval(Duration::from_millis(100));
        loop {
            every.tick().await;
            for p in &mut self.procs {
                p.check_running()?;
            }
            let last = match check().await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => "not yet".to_owned(),
                Err(e) => e,
            };
            if start.elapsed() > START_TIMEOUT {
                return Err(Error::Timeout {
                    what: what.to_owned(),
                    after: START_TIMEOUT,
                    last,
                });
            }
        }
    }

    /// Process ids of the components (etcd first).
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        process::stop_group(self.group, &mut self.procs, Duration::from_secs(5));
        if std::thread::panicking() || self.keep {
            eprintln!(
                "e2e: control plane files and logs kept in {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
