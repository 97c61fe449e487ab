//! One container of a pod: started once the pod's files and volumes are there, with
//! its environment, in a mount namespace of its own; probed; restarted per the pod's
//! `restartPolicy` with the kubelet's back-off; every step reported in the pod status.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::env::{Referenced, environment, expand, referenced_env};
use super::pod::{PodCtx, record_event, restart_delay};
use super::service_account::{PodFiles, prepare_pod_files};
use super::volumes::{self, PodVolume};
use super::{now, probes};

/// Runs container `c` of the pod for as long as the pod runs: waits for the pod's files
/// and its image, sets up mounts and probes, then runs and restarts it.
pub(super) async fn keep_running(
    ctx: Arc<PodCtx>,
    c: Container,
    files: Arc<tokio::sync::OnceCell<PodFiles>>,
    mut volumes_rx: tokio::sync::watch::Receiver<Option<Arc<Vec<PodVolume>>>>,
    policy: String,
    grace: Duration,
) {
    let log = ctx
        .config
        .log_dir
        .join(format!("{}_{}_{}.log", ctx.ns, ctx.name, c.name));
    let files = loop {
        match files
            .get_or_try_init(|| prepare_pod_files(&ctx.client, &ctx.config, &ctx.pod))
            .await
        {
            Ok(f) => break f.clone(),
            Err(e) => {
                let _ = std::fs::write(&log, format!("process kubelet: {e}\n"));
                ctx.waiting(&c.name, "ContainerCreating", e).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    // An image without a local binary never starts, as an image that cannot be
    // pulled: the status says so, and it is retried with a back-off.
    let image = c.image.clone().unwrap_or_default();
    let binary = loop {
        if let Some(b) = ctx.config.images.binary(&image) {
            break b.clone();
        }
        let known: Vec<&String> = ctx.config.images.names().collect();
        let reason = if ctx.state.lock().await.waiting.contains_key(&c.name) {
            "ImagePullBackOff"
        } else {
            "ErrImagePull"
        };
        let message = format!(
            "no local binary for image {image:?}; this node runs images named {known:?} (add it to the node's ImageTable)"
        );
        ctx.waiting(&c.name, reason, message).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    let Ok(planned) = volumes_rx
        .wait_for(Option::is_some)
        .await
        .map(|v| v.clone())
    else {
        return;
    };
    let planned = planned.unwrap_or_default();
    // Errors in the container's own spec cannot change (a pod is immutable):
    // reported once, and the container never starts.
    let setup = (|| {
        let mounts = volumes::mounts(&c, &planned, &files.service_account)?;
        for (_, target, _) in &mounts {
            std::fs::create_dir_all(target)
                .map_err(|e| format!("cannot create the mount point {}: {e}", target.display()))?;
        }
        let readiness = c
            .readiness_probe
            .as_ref()
            .map(|p| probes::spec(&c, p))
            .transpose()?;
        let liveness = c
            .liveness_probe
            .as_ref()
            .map(|p| probes::spec(&c, p))
            .transpose()?;
        let startup = c
            .startup_probe
            .as_ref()
            .map(|p| probes::spec(&c, p))
            .transpose()?;
        Ok::<_, String>((mounts, readiness, liveness, startup))
    })();
    let (mounts, readiness, liveness, startup) = match setup {
        Ok(s) => s,
        Err(e) => return ctx.waiting(&c.name, "CreateContainerConfigError", e).await,
    };
    let container = ContainerPlan {
        c: &c,
        log: &log,
        binary: &binary,
        files: &files,
        mounts: &mounts,
        readiness: readiness.as_ref(),
        liveness: liveness.as_ref(),
        startup: startup.as_ref(),
        grace,
    };
    let mut quick_exits = 0;
    loop {
        let referenced = match referenced_env(&ctx.client, &ctx.pod, &c).await {
            Ok(r) => {
                ctx.state.lock().await.waiting.remove(&c.name);
                r
            }
            Err(message) => {
                ctx.waiting(&c.name, "CreateContainerConfigError", message)
                    .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let started = tokio::time::Instant::now();
        let exit = run_container(&ctx, &container, &referenced).await;
        {
            let mut s = ctx.state.lock().await;
            s.running.remove(&c.name);
            s.ready.remove(&c.name);
            s.started_ok.remove(&c.name);
            s.last.insert(c.name.clone(), exit.clone());
        }
        ctx.patch_status().await;
        let restart = match policy.as_str() {
            "Always" => true,
            "OnFailure" => exit.0 != 0,
            _ => false,
        };
        if !restart {
            return;
        }
        quick_exits = if started.elapsed() < Duration::from_secs(10) {
            quick_exits + 1
        } else {
            0
        };
        let delay = restart_delay(quick_exits);
        *ctx.state
            .lock()
            .await
            .restarts
            .entry(c.name.clone())
            .or_default() += 1;
        if quick_exits > 1 {
            ctx.state.lock().await.waiting.insert(
                c.name.clone(),
                (
                    "CrashLoopBackOff".into(),
                    format!("back-off {delay:?} restarting failed container"),
                ),
            );
            ctx.patch_status().await;
        }
        tokio::time::sleep(delay).await;
    }
}

/// One container of a pod, as the node runs it.
struct ContainerPlan<'a> {
    c: &'a Container,
    log: &'a std::path::Path,
    binary: &'a std::path::Path,
    files: &'a PodFiles,
    /// (host folder, mount path, read-only)
    mounts: &'a [(PathBuf, PathBuf, bool)],
    readiness: Option<&'a probes::ProbeSpec>,
    liveness: Option<&'a probes::ProbeSpec>,
    /// Until it succeeds, neither readiness nor liveness is probed (and the container
    /// is not ready); failing it `failureThreshold` times restarts the container.
    startup: Option<&'a probes::ProbeSpec>,
    grace: Duration,
}

/// Runs the container's process once, with its probes; returns how it ended:
/// (exit code, reason, message), a signal `n` giving code 128 + n.
async fn run_container(
    ctx: &PodCtx,
    k: &ContainerPlan<'_>,
    referenced: &Referenced,
) -> (i32, String, String) {
    let c = k.c;
    let failed = |e: String| (128, "StartError".to_owned(), e);
    let out = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(k.log)
    {
        Ok(f) => f,
        Err(e) => return failed(format!("cannot open {}: {e}", k.log.display())),
    };
    let Ok(err) = out.try_clone() else {
        return failed("cannot duplicate the log file".into());
    };
    // A mount namespace of its own, where the pod's resolv.conf and volumes (the
    // service-account folder among them where the container mounts it) are
    // bind-mounted over the host's paths; then the container's program.
    let mut script = String::from(
        "set -e; mount --bind \"$1\" /etc/resolv.conf; shift 1; \
         while [ \"$1\" != -- ]; do mount --bind \"$1\" \"$2\"; \
         if [ \"$3\" = ro ]; then mount -o remount,bind,ro \"$2\"; fi; shift 3; done; shift; ",
    );
    script.push_str("exec \"$@\"");
    let mut cmd = tokio::process::Command::new("/usr/bin/unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
        .arg(script)
        .arg("sh")
        .arg(&k.files.resolv_conf);
    for (host, target, read_only) in k.mounts {
        cmd.arg(host)
            .arg(target)
            .arg(if *read_only { "ro" } else { "rw" });
    }
    let env = environment(&ctx.pod, c, ctx.ip, ctx.config.api_port, referenced);
    let expanded = |a: &String| expand(a, &env);
    cmd.arg("--")
        .arg(k.binary)
        .args(c.command.iter().flatten().skip(1).map(expanded))
        .args(c.args.iter().flatten().map(expanded))
        .env_clear()
        .envs(env.iter().cloned())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return failed(format!("cannot start {}: {e}", k.binary.display())),
    };
    let pid = child.id();
    if let Some(pid) = pid {
        ctx.pids.lock().await.insert(c.name.clone(), pid);
    }
    let began = tokio::time::Instant::now();
    ctx.state.lock().await.running.insert(c.name.clone(), now());
    ctx.patch_status().await;

    let readiness = async {
        let Some(p) = k.readiness else {
            ctx.state.lock().await.ready.insert(c.name.clone());
            ctx.patch_status().await;
            return std::future::pending().await;
        };
        tokio::time::sleep_until(began + p.initial_delay).await;
        let mut verdict = probes::Verdict::new(p, false);
        let mut every = tokio::time::interval(p.period);
        loop {
            every.tick().await;
            let ready = verdict.record(probes::run(ctx.ip, p).await.is_ok());
            let changed = {
                let mut s = ctx.state.lock().await;
                if ready {
                    s.ready.insert(c.name.clone())
                } else {
                    s.ready.remove(&c.name)
                }
            };
            if changed {
                ctx.patch_status().await;
            }
        }
    };
    let liveness = async {
        let Some(p) = k.liveness else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(began + p.initial_delay).await;
        let mut verdict = probes::Verdict::new(p, true);
        let mut every = tokio::time::interval(p.period);
        loop {
            every.tick().await;
            match probes::run(ctx.ip, p).await {
                Ok(()) => {
                    verdict.record(true);
                }
                Err(e) => {
                    ctx.event(
                        &c.name,
                        "Warning",
                        "Unhealthy",
                        &format!("Liveness probe failed: {e}"),
                    )
                    .await;
                    if !verdict.record(false) {
                        return e;
                    }
                }
            }
        }
    };
    let startup = async {
        let Some(p) = k.startup else { return Ok(()) };
        tokio::time::sleep_until(began + p.initial_delay).await;
        let mut failures = 0;
        let mut every = tokio::time::interval(p.period);
        loop {
            every.tick().await;
            match probes::run(ctx.ip, p).await {
                // The kubelet requires successThreshold 1 for startup probes.
                Ok(()) => return Ok(()),
                Err(e) => {
                    ctx.event(
                        &c.name,
                        "Warning",
                        "Unhealthy",
                        &format!("Startup probe failed: {e}"),
                    )
                    .await;
                    failures += 1;
                    if failures >= p.failure_threshold {
                        return Err(e);
                    }
                }
            }
        }
    };
    // Readiness and liveness only once the container has started (their initial
    // delays still count from the container's start, as the kubelet's do).
    let probes = async {
        if let Err(e) = startup.await {
            return ("startup", e);
        }
        ctx.state.lock().await.started_ok.insert(c.name.clone());
        ctx.patch_status().await;
        tokio::select! {
            () = readiness => unreachable!("readiness probing never ends"),
            why = liveness => ("liveness", why),
        }
    };
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        (kind, why) = probes => {
            let message = format!("Container {} failed {kind} probe, will be restarted", c.name);
            tracing::warn!(pod = %ctx.name, %message, probe = %why);
            record_event(&ctx.client, &ctx.pod, &c.name, "Normal", "Killing", &message).await;
            if let Some(pid) = pid {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            match tokio::time::timeout(k.grace, child.wait()).await {
                Ok(status) => status.ok(),
                Err(_) => {
                    let _ = child.kill().await;
                    child.wait().await.ok()
                }
            }
        }
    };
    ctx.pids.lock().await.remove(&c.name);
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(0), _) => (0, "Completed".into(), String::new()),
            (Some(code), _) => (code, "Error".into(), String::new()),
            (None, Some(signal)) => (
                128 + signal,
                "Error".into(),
                format!("killed by signal {signal}"),
            ),
            (None, None) => (128, "Error".into(), String::new()),
        },
        None => (128, "Error".into(), "lost track of the process".into()),
    }
}
