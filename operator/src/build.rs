//! The objects a `ClusterSpec` owns, built as pure functions of the resource (and, for
//! the ConfigMap, whether forming is allowed now). The controller applies them in the
//! order of [`Owned`]'s fields; each carries the owner reference and the labels.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::crd::{ClusterSpec, Discovery, Downing, RolloutStrategy};

/// Ports of the agent (ARCHITECTURE.md).
pub const MANAGEMENT_PORT: i32 = 8558;
pub const CLUSTER_PORT: i32 = 2552;
/// Where the pods find the agent settings and the cluster key.
pub const CONFIG_DIR: &str = "/etc/muster/config";
pub const KEY_DIR: &str = "/etc/muster/key";
/// ConfigMap key the agents follow at run time (`bootstrap.new-cluster-enabled-file`).
pub const NEW_CLUSTER_ENABLED_KEY: &str = "new-cluster-enabled";
/// Secret keys: the key that authenticates agent-to-agent traffic, and the bearer
/// token of the agents' mutating management routes (the operator's Leave).
pub const CLUSTER_KEY: &str = "cluster.key";
pub const MANAGEMENT_TOKEN: &str = "management.token";

/// Every owned object but the Secret (created once by the controller, never rebuilt),
/// in apply order: identity and permissions first, the pods last. The Role and its
/// binding exist only when the agents use the Kubernetes API; otherwise the controller
/// removes any left from before (minimal RBAC).
#[derive(Debug, Clone)]
pub struct Owned {
    pub service_account: ServiceAccount,
    pub role: Option<Role>,
    pub role_binding: Option<RoleBinding>,
    pub service: Service,
    pub config_map: ConfigMap,
    pub stateful_set: StatefulSet,
    pub pod_disruption_budget: PodDisruptionBudget,
}

/// Labels of every owned object; the pods' selector is the `instance` one.
pub fn labels(cs: &ClusterSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "muster".to_owned()),
        ("app.kubernetes.io/instance".to_owned(), cs.name_any()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "muster-operator".to_owned(),
        ),
    ])
}

fn selector(cs: &ClusterSpec) -> BTreeMap<String, String> {
    BTreeMap::from([("app.kubernetes.io/instance".to_owned(), cs.name_any())])
}

/// Name, namespace, labels and owner reference, as JSON for the builders below.
fn meta(cs: &ClusterSpec, name: &str) -> serde_json::Value {
    let owner = cs.controller_owner_ref(&());
    json!({
        "name": name,
        "namespace": cs.namespace(),
        "labels": labels(cs),
        "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
    })
}

/// Name of the Secret with the cluster key and the management token.
pub fn secret_name(cs: &ClusterSpec) -> String {
    format!("{}-cluster-key", cs.name_any())
}

/// The Secret, from 64 random bytes: the first half becomes the cluster key, the second
/// the management token (hex). The controller creates it once and never rebuilds it:
/// a new key would split running agents from restarted ones.
pub fn secret(cs: &ClusterSpec, random: &[u8; 64]) -> Result<Secret, serde_json::Error> {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut secret: Secret = serde_json::from_value(json!({
        "metadata": meta(cs, &secret_name(cs)),
        "type": "Opaque",
    }))?;
    secret.data = Some(BTreeMap::from([
        (
            CLUSTER_KEY.to_owned(),
            ByteString(hex(&random[..32]).into_bytes()),
        ),
        (
            MANAGEMENT_TOKEN.to_owned(),
            ByteString(hex(&random[32..]).into_bytes()),
        ),
    ]));
    Ok(secret)
}

/// What the agents may do through the Kubernetes API: read pods for `kubernetes-api`
/// discovery, take the Lease for `lease-majority`; nothing otherwise.
fn rbac_rules(cs: &ClusterSpec) -> Vec<serde_json::Value> {
    let mut rules = Vec::new();
    if cs.spec.bootstrap.discovery == Discovery::KubernetesApi {
        rules.push(json!({
            "apiGroups": [""],
            "resources": ["pods"],
            "verbs": ["get", "list", "watch"],
        }));
    }
    if cs.spec.membership.downing == Downing::LeaseMajority {
        rules.push(json!({
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }));
    }
    rules
}

/// Every owned object for `cs`; `new_cluster_enabled` goes to the ConfigMap.
pub fn owned(cs: &ClusterSpec, new_cluster_enabled: bool) -> Result<Owned, serde_json::Error> {
    let name = cs.name_any();
    let rules = rbac_rules(cs);
    let (role, role_binding) = if rules.is_empty() {
        (None, None)
    } else {
        (
            Some(serde_json::from_value(
                json!({ "metadata": meta(cs, &name), "rules": rules }),
            )?),
            Some(serde_json::from_value(json!({
                "metadata": meta(cs, &name),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": cs.namespace()}],
            }))?),
        )
    };
    Ok(Owned {
        service_account: serde_json::from_value(json!({ "metadata": meta(cs, &name) }))?,
        role,
        role_binding,
        service: serde_json::from_value(json!({
            "metadata": meta(cs, &name),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": selector(cs),
                // The protocol is the list's key for server-side apply (older servers
                // refuse a port without it).
                "ports": [
                    {"name": "management", "port": MANAGEMENT_PORT, "targetPort": "management", "protocol": "TCP"},
                    {"name": "cluster", "port": CLUSTER_PORT, "targetPort": "cluster", "protocol": "TCP"},
                ],
            },
        }))?,
        config_map: serde_json::from_value(json!({
            "metadata": meta(cs, &name),
            "data": {
                "agent.yaml": agent_config(cs),
                NEW_CLUSTER_ENABLED_KEY: new_cluster_enabled.to_string(),
            },
        }))?,
        stateful_set: stateful_set(cs)?,
        pod_disruption_budget: serde_json::from_value(json!({
            "metadata": meta(cs, &name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(cs)}},
        }))?,
    })
}

/// Pod template annotation: a digest of the agents' settings.
pub const CONFIG_HASH: &str = "muster.dev/config-hash";

/// The first 16 hex digits of the settings' SHA-256.
fn config_hash(config: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(config.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The agents' settings file (`node-agent/reference.yaml` documents every key).
pub fn agent_config(cs: &ClusterSpec) -> String {
    let s = &cs.spec;
    let b = &s.bootstrap;
    let required = b
        .required_contact_points
        .or(cs.status.as_ref().and_then(|st| st.required_contact_points))
        .unwrap_or(s.replicas);
    let method = match b.discovery {
        Discovery::KubernetesApi => "kubernetes-api",
        Discovery::Dns => "dns",
    };
    let strategy = match s.membership.downing {
        Downing::KeepMajority => "keep-majority",
        Downing::KeepOldest => "keep-oldest",
        Downing::DownAll => "down-all",
        Downing::LeaseMajority => "lease-majority",
        Downing::Off => "off",
    };
    let config = json!({
        "cluster": {
            "name": cs.name_any(),
            "key-file": format!("{KEY_DIR}/{CLUSTER_KEY}"),
            "failure-detector": {"threshold": s.membership.failure_detector_threshold},
            "split-brain-resolver": {
                "active-strategy": strategy,
                "stable-after": s.membership.stable_after,
            },
        },
        "bootstrap": {
            "service-name": cs.name_any(),
            "discovery-method": method,
            "port-name": "management",
            "required-contact-point-nr": required,
            "stable-margin": b.stable_margin,
            "contact-with-all-contact-points": b.contact_with_all_contact_points,
            "new-cluster-enabled-file": format!("{CONFIG_DIR}/{NEW_CLUSTER_ENABLED_KEY}"),
        },
        "discovery": {
            "kubernetes-api": {"pod-label-selector": "app.kubernetes.io/instance=%s"},
        },
        "management": {"token-file": format!("{KEY_DIR}/{MANAGEMENT_TOKEN}")},
    });
    serde_yaml::to_string(&config).unwrap_or_default()
}

fn stateful_set(cs: &ClusterSpec) -> Result<StatefulSet, serde_json::Error> {
    let name = cs.name_any();
    let s = &cs.spec;
    let restricted = json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    let agent_resources = s.agent.resources.clone().map_or_else(
        || {
            json!({
                "requests": {"cpu": "10m", "memory": "32Mi"},
                "limits": {"memory": "64Mi"},
            })
        },
        |r| serde_json::to_value(r).unwrap_or_default(),
    );
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let agent = json!({
        "name": "agent",
        "image": s.agent.image,
        "imagePullPolicy": s.agent.image_pull_policy,
        "args": ["--config", format!("{CONFIG_DIR}/agent.yaml")],
        "env": [
            {"name": "POD_IP", "valueFrom": field("status.podIP")},
            {"name": "POD_NAME", "valueFrom": field("metadata.name")},
            {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
        ],
        "ports": [
            {"name": "management", "containerPort": MANAGEMENT_PORT, "protocol": "TCP"},
            {"name": "cluster", "containerPort": CLUSTER_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "management"}, "periodSeconds": 2},
        "livenessProbe": {
            "httpGet": {"path": "/alive", "port": "management"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "resources": agent_resources,
        "securityContext": restricted,
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": true},
            {"name": "cluster-key", "mountPath": KEY_DIR, "readOnly": true},
        ],
    });
    let mut containers = vec![agent];
    if let Some(app) = &s.application {
        let mut c = json!({
            "name": app.name,
            "image": app.image,
            "env": app.env,
            "securityContext": restricted,
        });
        if let Some(r) = &app.resources {
            c["resources"] = serde_json::to_value(r)?;
        }
        if !app.command.is_empty() {
            c["command"] = json!(app.command);
        }
        if !app.args.is_empty() {
            c["args"] = json!(app.args);
        }
        containers.push(c);
    }
    let update = match s.rollout.strategy {
        RolloutStrategy::OldestLast => json!({"type": "OnDelete"}),
        RolloutStrategy::Ordinal => json!({"type": "RollingUpdate"}),
    };
    let sched = &s.scheduling;
    let mut pod_spec = json!({
        "serviceAccountName": name,
        // A token only for agents that use the API (least privilege).
        "automountServiceAccountToken": !rbac_rules(cs).is_empty(),
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        "volumes": [
            {"name": "config", "configMap": {"name": name}},
            {"name": "cluster-key", "secret": {"secretName": secret_name(cs)}},
        ],
    });
    if !sched.node_selector.is_empty() {
        pod_spec["nodeSelector"] = json!(sched.node_selector);
    }
    if !sched.tolerations.is_empty() {
        pod_spec["tolerations"] = serde_json::to_value(&sched.tolerations)?;
    }
    if let Some(a) = &sched.affinity {
        pod_spec["affinity"] = serde_json::to_value(a)?;
    }
    if let Some(p) = &sched.priority_class_name {
        pod_spec["priorityClassName"] = json!(p);
    }
    serde_json::from_value(json!({
        "metadata": meta(cs, &name),
        "spec": {
            "replicas": s.replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "updateStrategy": update,
            "selector": {"matchLabels": selector(cs)},
            "template": {
                "metadata": {
                    "labels": labels(cs),
                    // Agents read agent.yaml at start: a change of it changes the
                    // template, so it rolls out (the new-cluster-enabled key, which
                    // they follow at run time, is not part of it).
                    "annotations": {CONFIG_HASH: config_hash(&agent_config(cs))},
                },
                "spec": pod_spec,
            },
        },
    }))
}

#[cfg(test)]
mod tests;
