//! One Kubernetes for a test, wherever the tests run: `E2E_TARGET=local` (the default)
//! starts this crate's control plane, cluster DNS and process kubelet; `E2E_TARGET=kind`
//! uses the cluster of the current kubeconfig (made by `e2e/kind/create-cluster.sh`)
//! and real images (built and loaded by `e2e/kind/load-images.sh`). A test gets a
//! namespace of its own either way and reaches pods' ports through [`Platform::pod_get`]:
//! directly on the local platform, through the API server's port-forward on kind.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{Api, PostParams};
use node_agent::api::ClusterMembers;
use node_agent::api::client::get_over;
use serde_json::json;

use crate::{ClusterDns, ControlPlane, Error, ImageTable, LocalNode, NodeConfig, VolumeRefresh};

/// The agents' management port.
pub const MANAGEMENT_PORT: u16 = 8558;

/// Where the e2e tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// This crate's platform, started per test (needs root; no Docker).
    Local,
    /// The cluster of the current kubeconfig, e.g. a kind cluster.
    Kind,
}

impl Target {
    /// From `E2E_TARGET`: unset or `local`, or `kind`.
    pub fn from_env() -> Result<Self, Error> {
        Self::parse(std::env::var("E2E_TARGET").ok().as_deref())
    }

    /// The target a value of `E2E_TARGET` names (`None`: unset).
    pub fn parse(value: Option<&str>) -> Result<Self, Error> {
        match value {
            None | Some("") | Some("local") => Ok(Self::Local),
            Some("kind") => Ok(Self::Kind),
            Some(other) => Err(Error::Setup(format!(
                "E2E_TARGET={other:?} is not a target: use `local` (the default, this crate's platform) or `kind` (the current kubeconfig)"
            ))),
        }
    }
}

/// What the local platform needs that kind does not: its addresses and binaries.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// The cluster DNS listens on `127.0.<dns_net>.53:53`.
    pub dns_net: u8,
    /// Pods get `127.0.<pod_net>.N`.
    pub pod_net: u8,
    /// Image name → binary for the process kubelet.
    pub images: ImageTable,
    /// How late the process kubelet refreshes mounted ConfigMaps and Secrets (default:
    /// as a real kubelet, at pod syncs 60–90 s apart).
    pub volume_refresh: VolumeRefresh,
}

/// The image of `muster-agent` pods: on kind, `E2E_AGENT_IMAGE` or the tag
/// `e2e/kind/load-images.sh` loads; locally any name ending in `muster-agent`.
pub const KIND_AGENT_IMAGE: &str = "localhost/muster/muster-agent:e2e";
const LOCAL_AGENT_IMAGE: &str = "registry.example/muster/muster-agent:dev";

struct LocalParts {
    control_plane: ControlPlane,
    _dns: ClusterDns,
    node: LocalNode,
    _volumes: crate::provisioner::FolderProvisioner,
}

/// A Kubernetes and a namespace for one test. On kind the namespace is deleted when
/// this is dropped; the local platform stops altogether.
pub struct Platform {
    pub target: Target,
    pub client: Client,
    /// The test's namespace.
    pub namespace: String,
    agent_image: String,
    local: Option<LocalParts>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("target", &self.target)
            .field("namespace", &self.namespace)
            .field("agent_image", &self.agent_image)
            .finish_non_exhaustive()
    }
}

impl Platform {
    /// Starts (local) or connects to (kind) a platform, and creates namespace `test`
    /// (on kind with a random suffix, as tests share the cluster).
    pub async fn start(test: &str, local: LocalSettings) -> Result<Self, Error> {
        let target = Target::from_env()?;
        let (client, namespace, agent_image, local) = match target {
            Target::Local => {
                let control_plane = ControlPlane::start().await?;
                let client = control_plane.client().await?;
                let dns_ip = IpAddr::V4(Ipv4Addr::new(127, 0, local.dns_net, 53));
                let dns = ClusterDns::start(client.clone(), SocketAddr::new(dns_ip, 53)).await?;
                let node = LocalNode::start(
                    client.clone(),
                    NodeConfig {
                        name: "local-1".into(),
                        pod_subnet: [127, 0, local.pod_net],
                        images: local.images,
                        log_dir: control_plane.dir.clone(),
                        api_port: control_plane.api_port,
                        ca_cert: control_plane.pki.ca.cert.clone(),
                        dns: dns_ip,
                        volume_refresh: local.volume_refresh,
                    },
                )
                .await?;
                let volumes = crate::provisioner::FolderProvisioner::start(
                    client.clone(),
                    control_plane.dir.join("volumes"),
                )
                .await?;
                let parts = LocalParts {
                    control_plane,
                    _dns: dns,
                    node,
                    _volumes: volumes,
                };
                (
                    client,
                    test.to_owned(),
                    LOCAL_AGENT_IMAGE.to_owned(),
                    Some(parts),
                )
            }
            Target::Kind => {
                let client = Client::try_default().await.map_err(|e| {
                    Error::Setup(format!(
                        "E2E_TARGET=kind: no usable kubeconfig ({e}); create the cluster with e2e/kind/create-cluster.sh"
                    ))
                })?;
                client.apiserver_version().await.map_err(|e| {
                    Error::Setup(format!(
                        "E2E_TARGET=kind: the current kubeconfig's API server does not answer ({e}); is the kind cluster running (`kind get clusters`)?"
                    ))
                })?;
                let suffix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .subsec_nanos()
                    % 100_000;
                let image =
                    std::env::var("E2E_AGENT_IMAGE").unwrap_or_else(|_| KIND_AGENT_IMAGE.into());
                (client, format!("{test}-{suffix}"), image, None)
            }
        };
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": namespace, "labels": {"muster.dev/e2e": "true"}},
        }))
        .map_err(|e| Error::Setup(e.to_string()))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(Self {
            target,
            client,
            namespace,
            agent_image,
            local,
        })
    }

    /// The image to give `muster-agent` containers.
    pub fn agent_image(&self) -> &str {
        &self.agent_image
    }

    /// The local control plane, when the target is local.
    pub fn control_plane(&self) -> Option<&ControlPlane> {
        self.local.as_ref().map(|l| &l.control_plane)
    }

    /// The local node, when the target is local.
    pub fn node(&self) -> Option<&LocalNode> {
        self.local.as_ref().map(|l| &l.node)
    }

    /// `kubectl` for this platform, in the test's namespace.
    /// Waits until Deployment `namespace/name` has an available replica.
    pub async fn deployment_available(
        &self,
        namespace: &str,
        name: &str,
        limit: Duration,
    ) -> Result<(), Error> {
        let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
            Api::namespaced(self.client.clone(), namespace);
        let what = format!("Deployment {namespace}/{name} available");
        crate::poll(&what, limit, || async {
            let d = deployments.get(name).await.map_err(|e| e.to_string())?;
            match d.status.and_then(|s| s.available_replicas) {
                Some(n) if n >= 1 => Ok(()),
                other => Err(format!("available replicas: {other:?}")),
            }
        })
        .await
    }

    pub fn kubectl(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new("kubectl");
        cmd.args(["--namespace", &self.namespace]);
        if let Some(l) = &self.local {
            cmd.env("KUBECONFIG", &l.control_plane.kubeconfig);
        }
        cmd
    }

    /// `GET path` on a pod's port, with the management API's client: (status code,
    /// body).
    pub async fn pod_get(&self, pod: &str, port: u16, path: &str) -> Result<(u16, String), String> {
        const LIMIT: Duration = Duration::from_secs(5);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let attempt = async {
            let (code, body) = if self.local.is_some() {
                let p = pods.get(pod).await.map_err(|e| e.to_string())?;
                let ip: IpAddr = p
                    .status
                    .and_then(|s| s.pod_ip)
                    .ok_or_else(|| format!("pod {pod} has no IP yet"))?
                    .parse()
                    .map_err(|e| format!("pod {pod}: {e}"))?;
                let stream = tokio::net::TcpStream::connect((ip, port))
                    .await
                    .map_err(|e| format!("{ip}:{port}: {e}"))?;
                get_over(stream, path, LIMIT).await?
            } else {
                let mut forward = pods
                    .portforward(pod, &[port])
                    .await
                    .map_err(|e| format!("port-forward to {pod}:{port}: {e}"))?;
                let stream = forward
                    .take_stream(port)
                    .ok_or("port-forward gave no stream")?;
                let answer = get_over(stream, path, LIMIT).await;
                forward.abort();
                answer?
            };
            Ok((code, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(LIMIT, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("GET {path} on {pod}:{port}: no answer in 5 s")))
    }

    /// [`Platform::pod_get`] of a 200 answer, parsed as JSON.
    pub async fn pod_json<T: serde::de::DeserializeOwned>(
        &self,
        pod: &str,
        port: u16,
        path: &str,
    ) -> Result<T, String> {
        match self.pod_get(pod, port, path).await? {
            (200, body) => serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}")),
            (code, body) => Err(format!("{path}: HTTP {code}: {body}")),
        }
    }

    /// `/cluster/members` of the agent in `pod`.
    pub async fn members(&self, pod: &str) -> Result<ClusterMembers, String> {
        self.pod_json(pod, MANAGEMENT_PORT, "/cluster/members")
            .await
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if self.target == Target::Kind {
            // Tests share the kind cluster: leave nothing behind (not waited for). The
            // test's operator is gone, so its finalizer would hold the namespace's
            // ClusterSpecs (and the namespace) for ever: it is removed first.
            let ns = &self.namespace;
            let _ = std::process::Command::new("sh")
                .args([
                    "-c",
                    &format!(
                        "kubectl get clusterspecs -n {ns} -o name 2>/dev/null | xargs -r kubectl patch -n {ns} --type=merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'"
                    ),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
            let _ = std::process::Command::new("kubectl")
                .args(["delete", "namespace", &self.namespace, "--wait=false"])
                .stdout(std::process::Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_local_by_default_and_unknown_ones_are_refused() {
        assert_eq!(Target::parse(None).unwrap(), Target::Local);
        assert_eq!(Target::parse(Some("")).unwrap(), Target::Local);
        assert_eq!(Target::parse(Some("local")).unwrap(), Target::Local);
        assert_eq!(Target::parse(Some("kind")).unwrap(), Target::Kind);
        let e = Target::parse(Some("minikube")).unwrap_err().to_string();
        assert!(
            e.contains("\"minikube\"") && e.contains("local") && e.contains("kind"),
            "{e}"
        );
    }
}
