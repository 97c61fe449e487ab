//! What a pod's processes see in place of the host's files: its `/etc/resolv.conf`
//! (the cluster DNS) and the service-account folder with `ca.crt`, `namespace` and a
//! pod-bound token, renewed as the kubelet renews it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::OnceCell;

use super::NodeConfig;

/// Where a pod's service-account files appear, as on a real node.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Lifetime asked for service-account tokens; they are renewed at 80 %.
const TOKEN_SECONDS: i64 = 3600;

/// Files a pod's processes see in place of the host's (bind-mounted in a mount
/// namespace of their own).
#[derive(Debug, Clone)]
pub(super) struct PodFiles {
    pub resolv_conf: PathBuf,
    pub service_account: PathBuf,
}

/// A token for the pod's service account, bound to the pod (a TokenRequest).
async fn request_token(client: &Client, pod: &Pod) -> Result<String, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": TOKEN_SECONDS,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                               "name": pod.metadata.name, "uid": pod.metadata.uid},
        },
    });
    let issued: serde_json::Value = accounts
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("TokenRequest for {ns}/{account}: {e}"))?;
    issued["status"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "TokenRequest answered without a token".into())
}

fn write_atomically(path: &std::path::Path, contents: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes the pod's resolv.conf and service-account folder.
pub(super) async fn prepare_pod_files(
    client: &Client,
    config: &NodeConfig,
    pod: &Pod,
) -> Result<PodFiles, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let dir = config.log_dir.join("pods").join(format!("{ns}_{name}"));
    let service_account = dir.join("serviceaccount");
    std::fs::create_dir_all(&service_account)
        .map_err(|e| format!("cannot create {}: {e}", service_account.display()))?;
    let resolv_conf = dir.join("resolv.conf");
    write_atomically(
        &resolv_conf,
        format!(
            "nameserver {}\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
            config.dns
        )
        .as_bytes(),
    )?;
    let ca = std::fs::read(&config.ca_cert)
        .map_err(|e| format!("cannot read {}: {e}", config.ca_cert.display()))?;
    write_atomically(&service_account.join("ca.crt"), &ca)?;
    write_atomically(&service_account.join("namespace"), ns.as_bytes())?;
    let token = request_token(client, pod).await?;
    write_atomically(&service_account.join("token"), token.as_bytes())?;
    // The mount point must exist on the host.
    std::fs::create_dir_all(SERVICE_ACCOUNT_DIR)
        .map_err(|e| format!("cannot create {SERVICE_ACCOUNT_DIR}: {e}"))?;
    Ok(PodFiles {
        resolv_conf,
        service_account,
    })
}

/// Bound tokens expire: renews the pod's token at 80 % of its life, as the kubelet does,
/// once its files exist.
pub(super) async fn renew_tokens(client: Client, pod: Pod, files: Arc<OnceCell<PodFiles>>) {
    let renew = Duration::from_secs((TOKEN_SECONDS * 8 / 10) as u64);
    loop {
        tokio::time::sleep(renew).await;
        let Some(f) = files.get() else { continue };
        match request_token(&client, &pod).await {
            Ok(t) => {
                let _ = write_atomically(&f.service_account.join("token"), t.as_bytes());
            }
            Err(e) => tracing::warn!(error = %e, "token renewal failed"),
        }
    }
}
