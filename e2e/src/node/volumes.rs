//! ConfigMap, Secret and emptyDir volumes for pod processes, laid out as the kubelet lays
//! them out: a ConfigMap/Secret volume is a folder whose visible entries are symlinks
//! into `..data`, itself a symlink to a hidden, timestamped folder. An update writes a
//! new hidden folder and swaps `..data` with one rename, so a reader sees all the old
//! files or all the new ones, never a mix. Containers get each volume bind-mounted at
//! its `mountPath` inside their own mount namespace, so an update reaches them.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, KeyToPath, Pod, Secret};
use kube::Client;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::SERVICE_ACCOUNT_DIR;

/// The file mode the kubelet gives ConfigMap/Secret files when none is set.
const DEFAULT_MODE: i32 = 0o644;

/// Where a volume's files come from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    ConfigMap(Keyed),
    Secret(Keyed),
    EmptyDir,
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

/// The pod's volumes, each with a folder under `root`. The volume that the
/// ServiceAccount admission plugin adds for the token is left out: the node serves
/// [`SERVICE_ACCOUNT_DIR`] itself, with a TokenRequest token. A volume of another type
/// is an error naming it and the types this node supports.
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
        } else {
            return Err(format!(
                "volume {:?}: this node supports configMap, secret and emptyDir volumes only",
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

/// A container's bind mounts: (host folder, mount path, read-only).
pub(crate) fn mounts(
    c: &Container,
    volumes: &[PodVolume],
) -> Result<Vec<(PathBuf, PathBuf, bool)>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        if m.mount_path.trim_end_matches('/') == SERVICE_ACCOUNT_DIR {
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
        let read_only = m.read_only == Some(true) || v.source != Source::EmptyDir;
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
        Source::EmptyDir => Ok(None),
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
        Source::EmptyDir => Ok(Vec::new()),
    }
}

/// Sets the volume up before the containers start, as the kubelet's MountVolume.SetUp:
/// the error names the volume and what is missing.
pub(crate) async fn set_up(client: &Client, ns: &str, v: &PodVolume) -> Result<(), String> {
    let failed = |e: String| format!("MountVolume.SetUp failed for volume {:?}: {e}", v.name);
    if v.source == Source::EmptyDir {
        return std::fs::create_dir_all(&v.dir)
            .map_err(|e| failed(format!("{}: {e}", v.dir.display())));
    }
    let data = fetch(client, ns, &v.source).await.map_err(failed)?;
    let files = files_of(ns, &v.source, data.as_ref()).map_err(failed)?;
    write(&v.dir, &files).map_err(failed)
}

/// Keeps a ConfigMap/Secret volume in step with its object (a watch on that one
/// object). A deleted object or a change that breaks the volume leaves the last good
/// files in place, as the kubelet does.
pub(crate) async fn keep_in_sync(client: Client, ns: String, v: PodVolume) {
    let object = match &v.source {
        Source::ConfigMap(k) | Source::Secret(k) => k.object.clone(),
        Source::EmptyDir => return,
    };
    let selector = watcher::Config::default().fields(&format!("metadata.name={object}"));
    let mut last: Option<Vec<VolumeFile>> = None;
    let mut apply =
        |data: Option<BTreeMap<String, Vec<u8>>>| match files_of(&ns, &v.source, data.as_ref()) {
            Ok(files) if last.as_ref() != Some(&files) => {
                match write(&v.dir, &files) {
                    Ok(()) => tracing::info!(volume = %v.name, "volume updated"),
                    Err(e) => tracing::warn!(volume = %v.name, error = %e, "volume update failed"),
                }
                last = Some(files);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(volume = %v.name, error = %e, "volume left as it was"),
        };
    match &v.source {
        Source::ConfigMap(_) => {
            let api: Api<ConfigMap> = Api::namespaced(client, &ns);
            let mut s = std::pin::pin!(watcher(api, selector).default_backoff().applied_objects());
            while let Some(m) = s.next().await {
                if let Ok(m) = m {
                    apply(Some(data_of_config_map(m)));
                }
            }
        }
        Source::Secret(_) => {
            let api: Api<Secret> = Api::namespaced(client, &ns);
            let mut s = std::pin::pin!(watcher(api, selector).default_backoff().applied_objects());
            while let Some(m) = s.next().await {
                if let Ok(m) = m {
                    apply(Some(data_of_secret(m)));
                }
            }
        }
        Source::EmptyDir => {}
    }
}

#[cfg(test)]
mod tests;
