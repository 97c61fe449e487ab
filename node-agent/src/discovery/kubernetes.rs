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
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn running(name: &str, ip: &str) -> String {
        format!(
            r#"
metadata: {{ name: {name} }}
spec:
  containers:
  - name: app
    ports: [{{ name: http, containerPort: 8080 }}]
  - name: agent
    ports: [{{ name: management, containerPort: 9558 }}]
status:
  phase: Running
  podIP: "{ip}"
  containerStatuses:
  - {{ name: agent, state: {{ running: {{}} }}, ready: true, restartCount: 0, image: x, imageID: y }}
"#
        )
    }

    #[test]
    fn keeps_running_pods_with_their_named_port() {
        let pods = [
            pod(&running("a", "10.0.0.1")),
            pod(&running("b", "fd00::2")),
        ];
        let found = select_pods(&pods, Some("management"), Some("agent"));
        assert!(found.skipped.is_empty(), "{:?}", found.skipped);
        assert_eq!(found.targets.len(), 2);
        assert_eq!(found.targets[0].port, Some(9558));
        assert_eq!(found.targets[1].ip.to_string(), "fd00::2");
        let found = select_pods(&pods, None, None);
        assert_eq!(
            found.targets[0].port, None,
            "no port name: the fallback port applies"
        );
    }

    #[test]
    fn skips_pods_that_cannot_answer_and_says_why() {
        let terminating = running("t", "10.0.0.3").replace(
            "metadata: { name: t }",
            "metadata: { name: t, deletionTimestamp: '2026-01-01T00:00:00Z' }",
        );
        let pending = running("p", "10.0.0.4").replace("phase: Running", "phase: Pending");
        let finished = running("f", "10.0.0.5").replace("phase: Running", "phase: Succeeded");
        let no_ip = running("n", "").replace("podIP: \"\"", "podIP: null");
        let crash = running("c", "10.0.0.6").replace(
            "state: { running: {} }",
            "state: { waiting: { reason: CrashLoopBackOff } }",
        );
        let not_started = running("s", "10.0.0.7").replace(
            "name: agent, state: { running: {} }",
            "name: app, state: { running: {} }",
        );
        let pods: Vec<Pod> = [terminating, pending, finished, no_ip, crash, not_started]
            .iter()
            .map(|y| pod(y))
            .collect();
        let found = select_pods(&pods, Some("management"), Some("agent"));
        assert!(found.targets.is_empty(), "{:?}", found.targets);
        let reasons: Vec<String> = found
            .skipped
            .iter()
            .map(|s| format!("{}: {}", s.target, s.reason))
            .collect();
        assert_eq!(
            reasons,
            [
                "pod t: terminating",
                "pod p: phase Pending, not Running",
                "pod f: phase Succeeded, not Running",
                "pod n: no pod IP yet",
                "pod c: container `agent` is waiting (CrashLoopBackOff)",
                "pod s: container `agent` is not running",
            ]
        );
        // Without container-name the waiting container is not a reason to skip.
        let crash = pod(&running("c", "10.0.0.6").replace(
            "state: { running: {} }",
            "state: { waiting: { reason: CrashLoopBackOff } }",
        ));
        assert_eq!(select_pods(&[crash], None, None).targets.len(), 1);
    }

    mod api {
        use super::*;
        use http_body_util::BodyExt;
        use kube::client::Body;

        type Handle = tower_test::mock::Handle<http::Request<Body>, http::Response<Body>>;

        fn mocked() -> (KubernetesDiscovery, Handle) {
            let (svc, handle) =
                tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
            let client = Client::new(svc, "shop");
            (
                KubernetesDiscovery::with_client(
                    client,
                    "shop",
                    "app=shop",
                    Some("management"),
                    None,
                ),
                handle,
            )
        }

        #[tokio::test]
        async fn lists_pods_by_label_in_the_namespace() {
            let (d, mut handle) = mocked();
            let server = tokio::spawn(async move {
                let (req, send) = handle.next_request().await.unwrap();
                assert_eq!(req.method(), http::Method::GET);
                let uri = req.uri().to_string();
                assert!(uri.starts_with("/api/v1/namespaces/shop/pods?"), "{uri}");
                assert!(uri.contains("labelSelector=app%3Dshop"), "{uri}");
                let pod: serde_json::Value =
                    serde_yaml::from_str(&running("a", "10.0.0.1")).unwrap();
                let list = serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [pod]});
                send.send_response(
                    http::Response::builder()
                        .body(Body::from(serde_json::to_vec(&list).unwrap()))
                        .unwrap(),
                );
            });
            let found = d.lookup().await.unwrap();
            server.await.unwrap();
            assert_eq!(found.targets.len(), 1);
            assert_eq!(found.targets[0].port, Some(9558));
        }

        #[tokio::test]
        async fn forbidden_says_which_verb_resource_and_role() {
            let (d, mut handle) = mocked();
            tokio::spawn(async move {
                let (_req, send) = handle.next_request().await.unwrap();
                let status = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "pods is forbidden: User \"system:serviceaccount:shop:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"shop\"",
                    "reason": "Forbidden", "code": 403
                });
                send.send_response(
                    http::Response::builder()
                        .status(403)
                        .body(Body::from(serde_json::to_vec(&status).unwrap()))
                        .unwrap(),
                );
            });
            let e = d.lookup().await.unwrap_err().to_string();
            for needle in [
                "namespace `shop`",
                "verb `list`",
                "resource `pods`",
                "Role",
                "RoleBinding",
                "system:serviceaccount:shop:default",
            ] {
                assert!(e.contains(needle), "{needle} missing in: {e}");
            }
            let _ = Body::empty().collect().await;
        }
    }
}
