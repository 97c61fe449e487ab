//! `kubernetes-api` discovery: pods of the namespace that match a label selector.
//!
//! Pods that can never answer a probe are left out here, each with its reason:
//! terminating, not Running, without an IP, or (with `container-name`) whose agent
//! container is waiting (crash-looping, pulling) or not running. The management port is
//! the container port named `port-name`, else the fallback port.
//!
//! Credentials: in-cluster config or KUBECONFIG (kube's `Client::try_default`). In a pod,
//! kube re-reads the projected service-account token file, so hourly-rotated bound
//! tokens keep working. A 403 names the verb, resource and namespace and the Role that
//! grants it.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::sync::OnceCell;

use crate::config::AgentConfig;

use super::{BoxFuture, Discovered, Discovery, DiscoveryError, ResolvedTarget, Skipped};

#[derive(Clone)]
pub struct KubernetesDiscovery {
    client: std::sync::Arc<OnceCell<Client>>,
    namespace: String,
    selector: String,
    port_name: Option<String>,
    container_name: Option<String>,
}

impl std::fmt::Debug for KubernetesDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesDiscovery")
            .field("namespace", &self.namespace)
            .field("selector", &self.selector)
            .field("port_name", &self.port_name)
            .field("container_name", &self.container_name)
            .finish_non_exhaustive()
    }
}

impl KubernetesDiscovery {
    pub fn from_config(config: &AgentConfig) -> Self {
        let k = &config.settings.discovery.kubernetes_api;
        let b = &config.settings.bootstrap;
        let service = b.service_name.clone().unwrap_or_default();
        Self {
            client: Default::default(),
            namespace: k
                .pod_namespace
                .clone()
                .unwrap_or_else(|| config.namespace.clone()),
            selector: k.pod_label_selector.replace("%s", &service),
            port_name: (!b.port_name.is_empty()).then(|| b.port_name.clone()),
            container_name: k.container_name.clone(),
        }
    }

    /// With a ready client (tests use a mocked API server).
    pub fn with_client(
        client: Client,
        namespace: &str,
        selector: &str,
        port_name: Option<&str>,
        container_name: Option<&str>,
    ) -> Self {
        let cell = OnceCell::new();
        let _ = cell.set(client);
        Self {
            client: std::sync::Arc::new(cell),
            namespace: namespace.to_owned(),
            selector: selector.to_owned(),
            port_name: port_name.map(str::to_owned),
            container_name: container_name.map(str::to_owned),
        }
    }

    async fn client(&self) -> Result<&Client, DiscoveryError> {
        self.client
            .get_or_try_init(|| async {
                Client::try_default().await.map_err(|e| {
                    DiscoveryError::Kubernetes(format!(
                        "no Kubernetes API credentials (in-cluster service account or KUBECONFIG): {e}"
                    ))
                })
            })
            .await
    }

    fn explain(&self, e: kube::Error) -> DiscoveryError {
        match e {
            kube::Error::Api(status) if status.code == 403 => DiscoveryError::Kubernetes(format!(
                "forbidden to list pods in namespace `{ns}` ({msg}). The pod's service account needs \
                 verb `list` on resource `pods` there: a Role with rules \
                 [{{apiGroups: [\"\"], resources: [\"pods\"], verbs: [\"get\", \"list\", \"watch\"]}}] \
                 and a RoleBinding of that Role to the service account",
                ns = self.namespace,
                msg = status.message
            )),
            kube::Error::Api(status) if status.code == 401 => DiscoveryError::Kubernetes(format!(
                "the API server rejected our credentials (401 {}); check the service account token",
                status.message
            )),
            other => DiscoveryError::Kubernetes(format!(
                "listing pods `{}` in namespace `{}` failed: {other}",
                self.selector, self.namespace
            )),
        }
    }
}

/// Turns listed pods into targets; pure, so the rules are tested without a server.
pub fn select_pods(
    pods: &[Pod],
    port_name: Option<&str>,
    container_name: Option<&str>,
) -> Discovered {
    let mut out = Discovered::default();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let skip = |reason: String| Skipped {
            target: format!("pod {name}"),
            reason,
        };
        if pod.metadata.deletion_timestamp.is_some() {
            out.skipped.push(skip("terminating".into()));
            continue;
        }
        let status = pod.status.as_ref();
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
        if phase != "Running" {
            out.skipped
                .push(skip(format!("phase {phase}, not Running")));
            continue;
        }
        let Some(ip) = status
            .and_then(|s| s.pod_ip.as_deref())
            .filter(|s| !s.is_empty())
        else {
            out.skipped.push(skip("no pod IP yet".into()));
            continue;
        };
        let Ok(ip) = ip.parse() else {
            out.skipped
                .push(skip(format!("pod IP `{ip}` is not an IP address")));
            continue;
        };
        if let Some(container) = container_name {
            let cs = status
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|all| all.iter().find(|c| c.name == container));
            let state = cs.and_then(|c| c.state.as_ref());
            if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
                let why = waiting.reason.clone().unwrap_or_else(|| "waiting".into());
                out.skipped
                    .push(skip(format!("container `{container}` is waiting ({why})")));
                continue;
            }
            if state.and_then(|s| s.running.as_ref()).is_none() {
                out.skipped
                    .push(skip(format!("container `{container}` is not running")));
                continue;
            }
        }
        let port = port_name.and_then(|pn| {
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .filter(|c| container_name.is_none_or(|n| n == c.name))
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(pn))
                .and_then(|p| u16::try_from(p.container_port).ok())
        });
        out.targets.push(ResolvedTarget {
            host: name,
            port,
            ip,
        });
    }
    out
}

impl Discovery for KubernetesDiscovery {
    fn method(&self) -> &'static str {
        "kubernetes-api"
    }

    fn lookup(&self) -> BoxFuture<'_, Result<Discovered, DiscoveryError>> {
        Box::pin(async move {
            let client = self.client().await?.clone();
            let pods: Api<Pod> = Api::namespaced(client, &self.namespace);
            let list = pods
                .list(&ListParams::default().labels(&self.selector))
                .await
                .map_err(|e| self.explain(e))?;
            Ok(select_pods(
                &list.items,
                self.port_name.as_deref(),
                self.container_name.as_deref(),
            ))
        })
    }
}

#[cfg(test)]
mod tests;
