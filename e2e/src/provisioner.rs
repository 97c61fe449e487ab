//! Persistent volumes for the local platform: a StorageClass `local-folder` (the
//! default, so claims that name no class get it) and a provisioner that gives each
//! pending claim of that class a folder of its own, as a `hostPath` PersistentVolume
//! pre-bound to the claim; kube-controller-manager's binder then binds them, as with any
//! external provisioner. A released volume (its claim deleted) loses its folder and is
//! deleted (reclaim policy `Delete`). The process kubelet mounts a claim's folder into
//! the pod ([`crate::node`]), so data survives the pod's replacement exactly as long as
//! the claim lives.
//!
//! Like a real provisioner it is asynchronous: a claim is Pending until its volume
//! exists and the binder has bound it, and a pod that uses it is not scheduled before.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::task::JoinSet;

use crate::Error;

/// The StorageClass, and the provisioner name it names.
pub const STORAGE_CLASS: &str = "local-folder";
pub const PROVISIONER: &str = "muster.dev/local-folder";

/// The running provisioner; stops when dropped.
#[derive(Debug)]
pub struct FolderProvisioner {
    tasks: JoinSet<()>,
}

impl FolderProvisioner {
    /// Creates the StorageClass and starts provisioning under `root`.
    pub async fn start(client: Client, root: PathBuf) -> Result<Self, Error> {
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }))
        .map_err(|e| Error::Setup(format!("the StorageClass: {e}")))?;
        match Api::<StorageClass>::all(client.clone())
            .create(&PostParams::default(), &class)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => {
                return Err(Error::Setup(format!(
                    "create StorageClass {STORAGE_CLASS}: {e}"
                )));
            }
        }
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::Setup(format!("{}: {e}", root.display())))?;
        let mut tasks = JoinSet::new();
        tasks.spawn(provision(client.clone(), root.clone()));
        tasks.spawn(reclaim(client, root));
        Ok(Self { tasks })
    }
}

impl Drop for FolderProvisioner {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// The volume's name for a claim (as external provisioners name them).
fn volume_name(claim: &PersistentVolumeClaim) -> Option<String> {
    claim.metadata.uid.as_ref().map(|uid| format!("pvc-{uid}"))
}

/// Whether this provisioner serves the claim: its class is ours, it waits for a
/// volume, and it names none yet.
fn wanted(claim: &PersistentVolumeClaim) -> bool {
    let spec = claim.spec.as_ref();
    let class = spec.and_then(|s| s.storage_class_name.as_deref());
    let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound");
    class == Some(STORAGE_CLASS)
        && pending
        && spec.and_then(|s| s.volume_name.as_deref()).is_none()
        && claim.metadata.deletion_timestamp.is_none()
}

/// The PersistentVolume for `claim`, in `folder`, pre-bound to it.
fn volume(claim: &PersistentVolumeClaim, name: &str, folder: &Path) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage").cloned())
        .map_or_else(|| "1Gi".to_owned(), |q| q.0);
    let modes = spec
        .access_modes
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| vec!["ReadWriteOnce".into()]);
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": "Filesystem",
            "hostPath": {"path": folder.display().to_string(), "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
            },
        },
    }))
    .unwrap_or_default()
}

/// Gives every wanted claim a folder and a volume: each in a task of its own that
/// retries with backoff, so one failing claim delays no other.
async fn provision(client: Client, root: PathBuf) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client);
    // Volumes made or being made; a claim whose tries all failed leaves it, so that
    // its next change is tried again.
    let busy: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut tries = JoinSet::new();
    let mut stream = watcher(claims, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(next) = stream.next().await {
        while tries.try_join_next().is_some() {}
        let Ok(claim) = next else { continue };
        if !wanted(&claim) {
            continue;
        }
        let Some(name) = volume_name(&claim) else {
            continue;
        };
        if !busy
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone())
        {
            continue;
        }
        let (volumes, root, busy) = (volumes.clone(), root.clone(), busy.clone());
        tries.spawn(async move {
            if !create_volume(&volumes, &root, &claim, &name).await {
                busy.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            }
        });
    }
}

/// Tries at creating one volume, and the longest wait between two.
const CREATE_ATTEMPTS: u32 = 20;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Makes the folder and the volume of `claim`; false when it gave up.
async fn create_volume(
    volumes: &Api<PersistentVolume>,
    root: &Path,
    claim: &PersistentVolumeClaim,
    name: &str,
) -> bool {
    let folder = root.join(name);
    let pv = volume(claim, name, &folder);
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=CREATE_ATTEMPTS {
        let made = std::fs::create_dir_all(&folder)
            .map_err(|e| format!("folder {}: {e}", folder.display()));
        let result = match made {
            Err(e) => Err((None, e)),
            Ok(()) => volumes
                .create(&PostParams::default(), &pv)
                .await
                .map(|_| ())
                .map_err(|e| match e {
                    kube::Error::Api(s) => (Some(s.code), s.message),
                    e => (None, e.to_string()),
                }),
        };
        match result {
            Ok(()) => {
                tracing::info!(volume = %name, claim = ?claim.metadata.name, "provisioned");
                return true;
            }
            Err((Some(409), _)) => return true,
            // Refused for what it is (forbidden, invalid): trying again changes nothing.
            Err((Some(code), e)) if (400..500).contains(&code) && code != 429 => {
                tracing::warn!(volume = %name, code, error = %e, "the volume was refused");
                return false;
            }
            Err((_, e)) => {
                tracing::warn!(volume = %name, attempt, error = %e, "cannot create the volume; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }
    false
}

/// Deletes released volumes of this provisioner and their folders.
async fn reclaim(client: Client, root: PathBuf) {
    let volumes: Api<PersistentVolume> = Api::all(client);
    let mut stream = watcher(volumes.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(next) = stream.next().await {
        let Ok(pv) = next else { continue };
        // Made by this provisioner: a volume someone made by hand in the class is not
        // this provisioner's to delete.
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
            .map(String::as_str)
            == Some(PROVISIONER);
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let Some(name) = pv.metadata.name.clone() else {
            continue;
        };
        if !(ours && released) {
            continue;
        }
        let _ = std::fs::remove_dir_all(root.join(&name));
        match volumes.delete(&name, &DeleteParams::default()).await {
            Ok(_) => tracing::info!(volume = %name, "released volume deleted"),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                tracing::warn!(volume = %name, error = %e, "cannot delete a released volume");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
