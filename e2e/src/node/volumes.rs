//! ConfigMap, Secret, emptyDir and persistentVolumeClaim volumes (a bound `hostPath`
//! volume's folder, see [`crate::provisioner`]) for pod processes, laid out as the kubelet lays
//! them out: a ConfigMap/Secret volume is a folder whose visible entries are symlinks
//! into `..data`, itself a symlink to a hidden, timestamped folder. An update writes a
//! new hidden folder and swaps `..data` with one rename, so a reader sees all the old
//! files or all the new ones, never a mix. Containers get each volume bind-mounted at
//! its `mountPath` inside their own mount namespace, so an update reaches them.
//!
//! Updates arrive late, as from a real kubelet ([`VolumeRefresh`]): a mounted volume is
//! brought up to date only when its pod is synced, every `--sync-frequency` (1 minute)
//! plus up to half of it, timed from the pod's start, so anywhere up to 90 s after the
//! object changed; with the `Cache` change-detection strategy the sync reads a node-wide
//! copy up to `cache_ttl` old. A new pod's volumes are set up from a fresh read (a
//! kubelet drops its copy when a pod starts using an object). A container that restarts
//! in a running pod sees the volume as it was: that is where a stale value lives. (A
//! real kubelet also syncs a pod on some events, e.g. a container's death, so it can be
//! sooner than this model; tests must not depend on the staleness lasting.)

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Volume,
};
use kube::Client;
use kube::api::Api;
use node_agent::base::rng::Rng;

use super::SERVICE_ACCOUNT_DIR;

/// How late ConfigMap and Secret updates reach mounted volumes. The default is the
/// kubelet's: `--sync-frequency` 1 minute, each pod's sync jittered by up to half of it
/// (`workerResyncIntervalJitterFactor`), and the default `Watch` strategy, whose object
/// copies are current (no `cache_ttl`).
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRefresh {
    /// A mounted volume is refreshed when its pod is synced, this often...
    pub sync_period: Duration,
    /// ...plus a random share of it up to this fraction.
    pub jitter: f64,
    /// The `Cache` strategy (`configMapAndSecretChangeDetectionStrategy: Cache`): a
    /// pod's sync reads the node's copy of each object while it is younger than this
    /// (a new pod's set-up always reads afresh). Zero: the `Watch` strategy, current.
    pub cache_ttl: Duration,
}

impl Default for VolumeRefresh {
    fn default() -> Self {
        Self {
            sync_period: Duration::from_secs(60),
            jitter: 0.5,
            cache_ttl: Duration::ZERO,
        }
    }
}

impl VolumeRefresh {
    /// The wait until a pod's next sync.
    fn next_sync(&self, rng: &mut Rng) -> Duration {
        self.sync_period
            .mul_f64(1.0 + self.jitter.clamp(0.0, 1.0) * rng.unit())
    }
}

/// The data of an object as last fetched: `None` when it did not exist.
type ObjectData = Option<BTreeMap<String, Vec<u8>>>;
/// Kind, namespace and name of an object.
type ObjectKey = (String, String, String);

/// The node's copies of ConfigMaps and Secrets, by kind, namespace and name: the
/// `Cache` strategy when `ttl` is not zero.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectCache {
    ttl: Duration,
    copies: Arc<Mutex<HashMap<ObjectKey, (Instant, ObjectData)>>>,
}

impl ObjectCache {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            copies: Arc::default(),
        }
    }

    /// The object's data: the node's copy while it is younger than the TTL (unless
    /// `fresh`), else fetched now (and kept).
    async fn get(
        &self,
        client: &Client,
        ns: &str,
        source: &Source,
        fresh: bool,
    ) -> Result<ObjectData, String> {
        let key = match source {
            Source::ConfigMap(k) => ("configmap", &k.object),
            Source::Secret(k) => ("secret", &k.object),
            Source::EmptyDir | Source::Claim(_) => return Ok(None),
        };
        let key = (key.0.to_owned(), ns.to_owned(), key.1.clone());
        if !self.ttl.is_zero() && !fresh {
            let copies = self.copies.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, data)) = copies.get(&key)
                && at.elapsed() < self.ttl
            {
                return Ok(data.clone());
            }
        }
        let data = fetch(client, ns, source).await?;
        if !self.ttl.is_zero() {
            self.copies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, (Instant::now(), data.clone()));
        }
        Ok(data)
    }
}

/// The file mode the kubelet gives ConfigMap/Secret files when none is set.
const DEFAULT_MODE: i32 = 0o644;

/// Where a volume's files come from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    ConfigMap(Keyed),
    Secret(Keyed),
    EmptyDir,
    /// A PersistentVolumeClaim (by name): its bound volume's `hostPath` folder.
    Claim(String),
}

impl Source {
    /// A plain folder the containers write (emptyDir, a claim's volume), not files the
    /// node keeps in step with an object.
    pub fn is_folder(&self) -> bool {
        matches!(self, Self::EmptyDir | Self::Claim(_))
    }
}

/// A ConfigMap or Secret volume's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Keyed {
    pub object: String,
    pub items: Vec<KeyToPath>,
    pub optional: bool,
    pub default_mode: i32,
}

/// One volume of a pod, with its folder on the host.
#[derive(Debug, Clone)]
pub(crate) struct PodVolume {
    pub name: String,
    pub source: Source,
    pub dir: PathBuf,
}

/// A file of a volume: path relative to the volume, contents, mode.
pub(crate) type VolumeFile = (PathBuf, Vec<u8>, u32);

/// Whether `v`, a volume mounted at [`SERVICE_ACCOUNT_DIR`], asks for what the node
/// serves there (a TokenRequest token, the cluster CA, the namespace): the token Secret
/// that the ServiceAccount admission plugin adds before Kubernetes 1.21, or a projected
/// volume of exactly those three sources, as the plugin adds from 1.21 on (and as the
/// operator builds for the agent container alone). Anything else mounted there is an
/// error: this node cannot serve it, and serving the token instead would hide it.
fn service_account_volume(v: &Volume, account: &str) -> Result<(), String> {
    // The plugin's Secret is the account's token Secret, `<account>-token-<random>`;
    // another Secret there would be mounted with its own contents by a real kubelet.
    if let Some(secret) = &v.secret {
        let name = secret.secret_name.as_deref().unwrap_or_default();
        return if name.starts_with(&format!("{account}-token-")) {
            Ok(())
        } else {
            Err(format!(
                "volume {:?} at {SERVICE_ACCOUNT_DIR}: Secret {name:?} is not a token Secret of the pod's service account {account:?}; this node serves only that token there",
                v.name
            ))
        };
    }
    let refused = || {
        format!(
            "volume {:?} at {SERVICE_ACCOUNT_DIR}: this node serves only the service-account \
             token there, from a secret volume or a projected volume of serviceAccountToken \
             (path token), configMap kube-root-ca.crt (ca.crt) and downwardAPI \
             (namespace from metadata.namespace)",
            v.name
        )
    };
    let sources = v.projected.as_ref().and_then(|p| p.sources.as_ref());
    let Some(sources) = sources else {
        return Err(refused());
    };
    let (mut token, mut ca, mut namespace) = (false, false, false);
    for s in sources {
        if let Some(t) = &s.service_account_token {
            // A token for another audience would not be valid for the API server,
            // which this node's token is.
            token = t.path == "token" && t.audience.as_deref().is_none_or(str::is_empty);
        } else if let Some(cm) = &s.config_map {
            ca = cm.name == "kube-root-ca.crt"
                && cm
                    .items
                    .as_ref()
                    .is_some_and(|i| i.len() == 1 && i[0].key == "ca.crt" && i[0].path == "ca.crt");
        } else if let Some(d) = &s.downward_api {
            namespace = d.items.as_ref().is_some_and(|i| {
                i.len() == 1
                    && i[0].path == "namespace"
                    && i[0]
                        .field_ref
                        .as_ref()
                        .is_some_and(|f| f.field_path == "metadata.namespace")
            });
        } else {
            return Err(refused());
        }
    }
    if token && ca && namespace && sources.len() == 3 {
        Ok(())
    } else {
        Err(refused())
    }
}

/// The pod's volumes, each with a folder under `root`. A volume mounted at
/// [`SERVICE_ACCOUNT_DIR`] is left out once checked ([`service_account_volume`]): the
/// node serves that folder itself, with a TokenRequest token, to the containers that
/// mount it ([`mounts`]). A volume of another type is an error naming it and the types
/// this node supports.
pub(crate) fn plan(pod: &Pod, root: &Path) -> Result<Vec<PodVolume>, String> {
    let spec = pod.spec.as_ref();
    let token_volumes: BTreeSet<&str> = spec
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .filter(|m| m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR)
        .map(|m| m.name.as_str())
        .collect();
    let mut out = Vec::new();
    for v in spec.into_iter().flat_map(|s| s.volumes.iter().flatten()) {
        if token_volumes.contains(v.name.as_str()) {
            let account = spec
                .and_then(|s| s.service_account_name.as_deref())
                .unwrap_or("default");
            service_account_volume(v, account)?;
            continue;
        }
        let source = if let Some(cm) = &v.config_map {
            Source::ConfigMap(Keyed {
                object: cm.name.clone(),
                items: cm.items.clone().unwrap_or_default(),
                optional: cm.optional == Some(true),
                default_mode: cm.default_mode.unwrap_or(DEFAULT_MODE),
            })
        } else if let Some(s) = &v.secret {
            Source::Secret(Keyed {
                object: s.secret_name.clone().unwrap_or_default(),
                items: s.items.clone().unwrap_or_default(),
                optional: s.optional == Some(true),
                default_mode: s.default_mode.unwrap_or(DEFAULT_MODE),
            })
        } else if v.empty_dir.is_some() {
            Source::EmptyDir
        } else if let Some(c) = &v.persistent_volume_claim {
            Source::Claim(c.claim_name.clone())
        } else {
            return Err(format!(
                "volume {:?}: this node supports configMap, secret, emptyDir and persistentVolumeClaim volumes only",
                v.name
            ));
        };
        out.push(PodVolume {
            dir: root.join(&v.name),
            name: v.name.clone(),
            source,
        });
    }
    Ok(out)
}

/// A container's bind mounts: (host folder, mount path, read-only). A mount at
/// [`SERVICE_ACCOUNT_DIR`] gets the pod's `service_account` folder, read-only; a
/// container without one sees no token (as with `automountServiceAccountToken: false`,
/// or a token volume mounted into another container only).
pub(crate) fn mounts(
    c: &Container,
    volumes: &[PodVolume],
    service_account: &Path,
) -> Result<Vec<(PathBuf, PathBuf, bool)>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR {
            out.push((
                service_account.to_owned(),
                PathBuf::from(SERVICE_ACCOUNT_DIR),
                true,
            ));
            continue;
        }
        if m.sub_path.as_deref().is_some_and(|s| !s.is_empty())
            || m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty())
        {
            return Err(format!(
                "volumeMount {:?} of container {:?}: subPath is not supported by this node; mount the whole volume",
                m.name, c.name
            ));
        }
        let v = volumes.iter().find(|v| v.name == m.name).ok_or_else(|| {
            format!(
                "container {:?} mounts volume {:?}, which the pod does not declare",
                c.name, m.name
            )
        })?;
        let read_only = m.read_only == Some(true) || !v.source.is_folder();
        out.push((v.dir.clone(), PathBuf::from(&m.mount_path), read_only));
    }
    Ok(out)
}

/// The files a ConfigMap/Secret volume holds, given the object's data (`None`: the
/// object does not exist). A missing object or item key is an error unless the volume
/// is optional; item paths must stay inside the volume.
pub(crate) fn files(
    kind: &str,
    ns: &str,
    keyed: &Keyed,
    data: Option<&BTreeMap<String, Vec<u8>>>,
) -> Result<Vec<VolumeFile>, String> {
    let Some(data) = data else {
        return if keyed.optional {
            Ok(Vec::new())
        } else {
            Err(format!("{kind} {ns}/{} not found", keyed.object))
        };
    };
    let mode = |m: Option<i32>| (m.unwrap_or(keyed.default_mode) & 0o777) as u32;
    if keyed.items.is_empty() {
        return Ok(data
            .iter()
            .map(|(k, v)| (PathBuf::from(k), v.clone(), mode(None)))
            .collect());
    }
    let mut out = Vec::new();
    for item in &keyed.items {
        let path = Path::new(&item.path);
        let inside = !item.path.is_empty()
            && !item.path.starts_with("..")
            && path.components().all(|c| matches!(c, Component::Normal(_)));
        if !inside {
            return Err(format!(
                "{kind} {ns}/{} item path {:?} must be relative, without '..'",
                keyed.object, item.path
            ));
        }
        match data.get(&item.key) {
            Some(v) => out.push((path.to_owned(), v.clone(), mode(item.mode))),
            None if keyed.optional => {}
            None => {
                return Err(format!(
                    "{kind} {ns}/{} has no key {:?}",
                    keyed.object, item.key
                ));
            }
        }
    }
    Ok(out)
}

/// Writes a new version of the volume at `dir` and swaps it in atomically.
pub(crate) fn write(dir: &Path, files: &[VolumeFile]) -> Result<(), String> {
    let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let version = dir.join(&stamp);
    std::fs::create_dir(&version).map_err(|e| io(&version, e))?;
    for (path, bytes, mode) in files {
        let file = version.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        std::fs::write(&file, bytes).map_err(|e| io(&file, e))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| io(&file, e))?;
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    symlink(&stamp, &tmp).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, dir.join("..data")).map_err(|e| io(dir, e))?;

    // Visible entries: one symlink per top-level name, into `..data`.
    let tops: BTreeSet<std::ffi::OsString> = files
        .iter()
        .filter_map(|(p, _, _)| p.components().next())
        .map(|c| c.as_os_str().to_owned())
        .collect();
    for top in &tops {
        let link = dir.join(top);
        if link.symlink_metadata().is_err() {
            symlink(Path::new("..data").join(top), &link).map_err(|e| io(&link, e))?;
        }
    }
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.flatten() {
        let name = entry.file_name();
        let hidden = name.to_string_lossy().starts_with("..");
        let path = entry.path();
        if !hidden && !tops.contains(&name) {
            std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        } else if hidden && name != "..data" && name.as_os_str() != stamp.as_str() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    Ok(())
}

/// A ConfigMap's or Secret's data as bytes; `None` when it does not exist.
fn data_of_config_map(m: ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = m
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    out.extend(
        m.binary_data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0)),
    );
    out
}

fn data_of_secret(s: Secret) -> BTreeMap<String, Vec<u8>> {
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// Reads the volume's source object now.
async fn fetch(
    client: &Client,
    ns: &str,
    source: &Source,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    match source {
        Source::ConfigMap(k) => Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(&k.object)
            .await
            .map(|m| m.map(data_of_config_map))
            .map_err(|e| format!("configmap {ns}/{}: {e}", k.object)),
        Source::Secret(k) => Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(&k.object)
            .await
            .map(|s| s.map(data_of_secret))
            .map_err(|e| format!("secret {ns}/{}: {e}", k.object)),
        Source::EmptyDir | Source::Claim(_) => Ok(None),
    }
}

fn files_of(
    ns: &str,
    source: &Source,
    data: Option<&BTreeMap<String, Vec<u8>>>,
) -> Result<Vec<VolumeFile>, String> {
    match source {
        Source::ConfigMap(k) => files("configmap", ns, k, data),
        Source::Secret(k) => files("secret", ns, k, data),
        Source::EmptyDir | Source::Claim(_) => Ok(Vec::new()),
    }
}

/// Points each claim's volume at the folder of the PersistentVolume bound to it, as the
/// kubelet waits for a bound claim before it mounts: an error (the pod stays in
/// ContainerCreating, `FailedMount`) while the claim is missing or unbound, or when its
/// volume is not a `hostPath` one (the only kind this node mounts).
pub(crate) async fn resolve_claims(
    client: &Client,
    ns: &str,
    planned: &mut [PodVolume],
) -> Result<(), String> {
    for v in planned.iter_mut() {
        let Source::Claim(claim) = &v.source else {
            continue;
        };
        let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .get_opt(claim)
            .await
            .map_err(|e| format!("persistentvolumeclaim {ns}/{claim}: {e}"))?
            .ok_or_else(|| format!("persistentvolumeclaim {ns}/{claim} not found"))?;
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let volume = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
        let Some(volume) = volume.filter(|_| bound) else {
            return Err(format!(
                "persistentvolumeclaim {ns}/{claim} is not bound to a volume yet"
            ));
        };
        let pv = Api::<PersistentVolume>::all(client.clone())
            .get(&volume)
            .await
            .map_err(|e| format!("persistentvolume {volume} of claim {ns}/{claim}: {e}"))?;
        let path = pv
            .spec
            .and_then(|s| s.host_path)
            .map(|h| h.path)
            .ok_or_else(|| {
                format!(
                    "persistentvolume {volume} of claim {ns}/{claim} is no hostPath volume; this node mounts hostPath volumes only"
                )
            })?;
        v.dir = PathBuf::from(path);
    }
    Ok(())
}

/// Sets the volume up before the containers start, as the kubelet's MountVolume.SetUp
/// (from the node's copy, see [`ObjectCache`]): the error names the volume and what is
/// missing. Returns the files written.
pub(crate) async fn set_up(
    client: &Client,
    cache: &ObjectCache,
    ns: &str,
    v: &PodVolume,
) -> Result<Vec<VolumeFile>, String> {
    let failed = |e: String| format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name);
    if v.source.is_folder() {
        std::fs::create_dir_all(&v.dir).map_err(|e| failed(format!("{}: {e}", v.dir.display())))?;
        return Ok(Vec::new());
    }
    // A pod that starts using an object makes the kubelet drop its copy: a fresh read.
    let data = cache
        .get(client, ns, &v.source, true)
        .await
        .map_err(failed)?;
    let files = files_of(ns, &v.source, data.as_ref()).map_err(failed)?;
    write(&v.dir, &files).map_err(failed)?;
    Ok(files)
}

/// Keeps a pod's ConfigMap/Secret volumes in step with their objects, as late as a
/// kubelet does: at each sync of the pod ([`VolumeRefresh`], timed from its start), from
/// the node's copy. A deleted object or a change that breaks a volume leaves the last
/// good files in place, as the kubelet does. `volumes`: each with the files set up.
pub(crate) async fn keep_in_step(
    client: Client,
    cache: ObjectCache,
    refresh: VolumeRefresh,
    ns: String,
    mut volumes: Vec<(PodVolume, Vec<VolumeFile>)>,
) {
    volumes.retain(|(v, _)| !v.source.is_folder());
    if volumes.is_empty() {
        return;
    }
    let mut rng = Rng::from_entropy();
    loop {
        tokio::time::sleep(refresh.next_sync(&mut rng)).await;
        for (v, last) in &mut volumes {
            let data = match cache.get(&client, &ns, &v.source, false).await {
                Ok(Some(data)) => data,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(volume = %v.name, error = %e, "volume left as it was");
                    continue;
                }
            };
            match files_of(&ns, &v.source, Some(&data)) {
                Ok(files) if files != *last => {
                    match write(&v.dir, &files) {
                        Ok(()) => tracing::info!(volume = %v.name, "volume updated"),
                        Err(e) => {
                            tracing::warn!(volume = %v.name, error = %e, "volume update failed");
                        }
                    }
                    *last = files;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(volume = %v.name, error = %e, "volume left as it was"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
