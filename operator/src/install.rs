//! What installs the operator without Helm (`manifests/operator.yaml`, written by
//! `cargo run -p operator --bin generate`): its namespace
//! (Pod Security "restricted" enforced), ServiceAccount, the ClusterRole with exactly
//! the verbs it uses, the binding, and a Deployment of one replica (leader election makes
//! more safe). Each rule says why in the generated file.

use serde_json::{Value, json};

/// Where the operator runs.
pub const NAMESPACE: &str = "muster-system";
pub const NAME: &str = "muster-operator";
/// The image the manifests name.
pub const IMAGE: &str = "ghcr.io/muster-dev/muster-operator:0.1.0";

/// One ClusterRole rule and why the operator needs it.
#[derive(Clone, Copy)]
struct Rule {
    why: &'static str,
    groups: &'static [&'static str],
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        why: "ClusterSpecs are what the operator reconciles; patch: its full-shutdown finalizer, added at the first reconcile and removed on deletion once the cluster was asked to prepare for a full shutdown",
        groups: &["muster.dev"],
        resources: &["clusterspecs"],
        verbs: &["get", "list", "watch", "patch"],
    },
    Rule {
        why: "the status is written by server-side apply",
        groups: &["muster.dev"],
        resources: &["clusterspecs/status"],
        verbs: &["patch"],
    },
    Rule {
        why: "owner references with blockOwnerDeletion, where OwnerReferencesPermissionEnforcement is on",
        groups: &["muster.dev"],
        resources: &["clusterspecs/finalizers"],
        verbs: &["update"],
    },
    Rule {
        why: "owned objects: read, compare, server-side apply (create: an apply that creates needs it)",
        groups: &[""],
        resources: &["services", "serviceaccounts"],
        verbs: &["get", "create", "patch"],
    },
    Rule {
        why: "the agents' settings; watched so that a changed or deleted ConfigMap is put back (get on its own ConfigMap is granted to the agents, which read new-cluster-enabled from the API server when they claim the formation record)",
        groups: &[""],
        resources: &["configmaps"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    Rule {
        why: "the StatefulSet of each cluster, watched for its rollout state",
        groups: &["apps"],
        resources: &["statefulsets"],
        verbs: &["get", "list", "watch", "create", "patch"],
    },
    Rule {
        why: "the cluster key and management token: created once, read for Leave, the key file rewritten step by step when a rotation is asked for (update); with spec.tls the cluster's CA (created once, and a new one at each CA rotation) and the agents' certificate (update: renewed before it ends, and its trusted CAs and certificate rewritten step by step in a CA rotation)",
        groups: &[""],
        resources: &["secrets"],
        verbs: &["get", "create", "update"],
    },
    Rule {
        why: "the agents' Role, one per cluster because its rules name that cluster's formation record, Lease and ConfigMap (resourceNames), which a fixed ClusterRole cannot; patch: its rules follow spec.bootstrap.discovery and spec.membership.downing; the API server lets the operator grant no right it does not hold itself; no delete (owner references remove it with the ClusterSpec)",
        groups: &["rbac.authorization.k8s.io"],
        resources: &["roles"],
        verbs: &["get", "create", "patch"],
    },
    Rule {
        why: "the binding of that Role to the cluster's ServiceAccount: created once, never changed (no patch, no delete)",
        groups: &["rbac.authorization.k8s.io"],
        resources: &["rolebindings"],
        verbs: &["get", "create"],
    },
    Rule {
        why: "a rollout deletes pods one at a time; pods are watched to see replacements Ready (and granted to agents for kubernetes-api discovery)",
        groups: &[""],
        resources: &["pods"],
        verbs: &["get", "list", "watch", "delete"],
    },
    Rule {
        why: "the PodDisruptionBudget of each cluster (Kubernetes >= 1.21); removed when spec.disruptionBudget turns it off",
        groups: &["policy"],
        resources: &["poddisruptionbudgets"],
        verbs: &["get", "create", "patch", "delete"],
    },
    Rule {
        why: "the NetworkPolicy of each cluster (Kubernetes >= 1.25): listed to see whether other policies of the namespace isolate the pods; removed when spec.networkPolicy turns it off",
        groups: &["networking.k8s.io"],
        resources: &["networkpolicies"],
        verbs: &["get", "list", "create", "patch", "delete"],
    },
    Rule {
        why: "leader election; each cluster's formation record (created here, claimed by the agent that forms) and lease-majority Lease (created here, taken by agents); get and update on those two are granted to the agents, which needs the operator to hold them",
        groups: &["coordination.k8s.io"],
        resources: &["leases"],
        verbs: &["get", "create", "update"],
    },
    Rule {
        why: "Events for each milestone",
        groups: &["events.k8s.io"],
        resources: &["events"],
        verbs: &["create", "patch"],
    },
];

/// Rules only the cluster-wide install has (cluster-scoped objects: a Role cannot grant
/// them, so the namespaced install goes without).
const CLUSTER_RULES: &[Rule] = &[Rule {
    why: "whether the node of a cluster's pod is Ready: a pod on a node that is not may still run behind a partition, so forming a new cluster waits (the namespaced install goes without and sees such pods once they are stuck terminating)",
    groups: &[""],
    resources: &["nodes"],
    verbs: &["get"],
}];

/// Every rule of the cluster-wide install.
fn cluster_rules() -> Vec<Rule> {
    RULES.iter().chain(CLUSTER_RULES).copied().collect()
}

/// The namespace `manifests/namespaced/operator.yaml` watches (replace it with yours).
pub const EXAMPLE_WATCHED: &str = "muster-apps";
/// The namespaced install's Role for leader election, in [`NAMESPACE`].
pub const LEADER_ELECTION: &str = "muster-operator-leader-election";

/// The objects, in apply order: with a ClusterRole (every namespace).
pub fn objects(image: &str) -> Vec<Value> {
    objects_for(image, &[])
}

/// The objects, in apply order, for ClusterSpecs in `watched` only (a Role and a
/// RoleBinding in each, and one for leader election in [`NAMESPACE`]); in every
/// namespace (a ClusterRole) when it is empty.
pub fn objects_for(image: &str, watched: &[&str]) -> Vec<Value> {
    let labels = json!({
        "app.kubernetes.io/name": NAME,
        "app.kubernetes.io/part-of": "muster",
    });
    let meta = |name: &str| json!({"name": name, "namespace": NAMESPACE, "labels": labels});
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| json!({"apiGroups": r.groups, "resources": r.resources, "verbs": r.verbs}))
        .collect();
    let restricted = json!({
        "runAsNonRoot": true,
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    let field = |path: &str| json!({"fieldRef": {"fieldPath": path}});
    let subjects = json!([{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]);
    let mut objects = vec![
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": NAMESPACE, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "app.kubernetes.io/part-of": "muster",
            }},
        }),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(NAME)}),
    ];
    let mut args = vec![json!("--listen"), json!("$(POD_IP):8080")];
    if watched.is_empty() {
        let rules: Vec<Value> = cluster_rules()
            .iter()
            .map(|r| json!({"apiGroups": r.groups, "resources": r.resources, "verbs": r.verbs}))
            .collect();
        objects.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": NAME, "labels": labels},
            "rules": rules,
        }));
        objects.push(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": subjects,
        }));
    } else {
        let lease_rules: Vec<Value> = RULES
            .iter()
            .filter(|r| is_lease_rule(r))
            .map(|r| json!({"apiGroups": r.groups, "resources": r.resources, "verbs": r.verbs}))
            .collect();
        let role = |name: &str, ns: &str, rules: &[Value]| {
            [
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "rules": rules,
                }),
                json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                    "subjects": subjects,
                }),
            ]
        };
        objects.extend(role(LEADER_ELECTION, NAMESPACE, &lease_rules));
        for ns in watched {
            objects.extend(role(NAME, ns, &rules));
        }
        args.push(json!("--namespace"));
        args.push(json!(watched.join(",")));
    }
    objects.push(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(NAME),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [{
                            "name": "operator",
                            "image": image,
                            "args": args,
                            "env": [
                                {"name": "POD_IP", "valueFrom": field("status.podIP")},
                                {"name": "POD_NAME", "valueFrom": field("metadata.name")},
                                {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
                            ],
                            "ports": [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 5},
                            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10},
                            "resources": {
                                "requests": {"cpu": "20m", "memory": "32Mi"},
                                "limits": {"memory": "128Mi"},
                            },
                            "securityContext": restricted,
                        }],
                    },
                },
            },
    }));
    objects
}

/// `manifests/operator.yaml`: the objects as one YAML stream, each ClusterRole rule
/// preceded by why the operator needs it.
pub fn operator_yaml(image: &str) -> Result<String, serde_yaml::Error> {
    let mut out = crate::generated::yaml_header();
    out.push_str(
        "# Installs muster-operator in namespace muster-system; apply manifests/crd.yaml first.\n",
    );
    out.push_str(&documents(objects(image))?);
    Ok(out)
}

/// `manifests/namespaced/operator.yaml`: the namespaced install, for ClusterSpecs in
/// [`EXAMPLE_WATCHED`] only.
pub fn operator_namespaced_yaml(image: &str) -> Result<String, serde_yaml::Error> {
    let mut out = crate::generated::yaml_header();
    out.push_str(&format!(
        "# Installs muster-operator in namespace {NAMESPACE} for ClusterSpecs in namespace\n\
         # {EXAMPLE_WATCHED} only: Roles there and in {NAMESPACE} (leader election), no\n\
         # ClusterRole, so the operator can read or change nothing in any other namespace.\n\
         # Apply manifests/crd.yaml first (a cluster administrator's step). For your namespace:\n\
         #   sed 's/{EXAMPLE_WATCHED}/YOUR-NAMESPACE/g' manifests/namespaced/operator.yaml | kubectl apply -f -\n\
         # For several, repeat the Role and RoleBinding named {NAME} for each and list them,\n\
         # comma-separated, after --namespace (or use the Helm chart's watchNamespaces).\n"
    ));
    out.push_str(&documents(objects_for(image, &[EXAMPLE_WATCHED]))?);
    Ok(out)
}

/// The objects as one YAML stream; each rule list (all the operator's rules, or the
/// leader election's) is written by hand, so that each rule says why.
fn documents(objects: Vec<Value>) -> Result<String, serde_yaml::Error> {
    let lease: Vec<Rule> = RULES.iter().filter(|r| is_lease_rule(r)).copied().collect();
    let mut out = String::new();
    for mut obj in objects {
        out.push_str("---\n");
        let rules = obj.as_object_mut().and_then(|o| o.remove("rules"));
        out.push_str(&serde_yaml::to_string(&obj)?);
        if rules.is_some() {
            let all = cluster_rules();
            let explained = if obj["metadata"]["name"] == LEADER_ELECTION {
                &lease[..]
            } else if obj["kind"] == "ClusterRole" {
                &all[..]
            } else {
                RULES
            };
            out.push_str("rules:\n");
            out.push_str(&rules_yaml(explained));
        }
    }
    Ok(out)
}

/// Rules as a YAML list, each preceded by a comment saying why.
fn rules_yaml(rules: &[Rule]) -> String {
    let list = |items: &[&str]| serde_json::to_string(items).unwrap_or_default();
    rules
        .iter()
        .map(|r| {
            format!(
                "# {}\n- apiGroups: {}\n  resources: {}\n  verbs: {}\n",
                r.why,
                list(r.groups),
                list(r.resources),
                list(r.verbs)
            )
        })
        .collect()
}

/// The rule that covers leader election (the Lease lives in the operator's own namespace).
fn is_lease_rule(r: &Rule) -> bool {
    r.resources == ["leases"]
}

/// `charts/muster/templates/_rules.tpl`: the same rules for the Helm chart, as three
/// named templates — `muster.rules` (everything namespaced, for a ClusterRole or the
/// watched namespace's Role), `muster.clusterRules` (cluster-scoped, the ClusterRole
/// only) and `muster.leaseRules` (leader election only, for the release namespace).
pub fn chart_rules_tpl() -> String {
    let lease: Vec<Rule> = RULES.iter().filter(|r| is_lease_rule(r)).copied().collect();
    format!(
        "{{{{/* Generated by `{}`; do not edit.\n   \
         The operator's RBAC rules, from operator/src/install.rs. */}}}}\n\
         {{{{- define \"muster.rules\" }}}}\n{}{{{{- end }}}}\n\
         {{{{- define \"muster.clusterRules\" }}}}\n{}{{{{- end }}}}\n\
         {{{{- define \"muster.leaseRules\" }}}}\n{}{{{{- end }}}}\n",
        crate::generated::COMMAND,
        rules_yaml(RULES),
        rules_yaml(CLUSTER_RULES),
        rules_yaml(&lease)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documents of a YAML stream, and their kinds.
    fn read_back(yaml: &str) -> (Vec<Value>, Vec<String>) {
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(yaml)
            .map(|d| serde::Deserialize::deserialize(d).expect("a document"))
            .collect();
        let kinds = docs
            .iter()
            .filter_map(|d| d["kind"].as_str().map(str::to_owned))
            .collect();
        (docs, kinds)
    }

    #[test]
    fn every_rule_is_explained_and_the_yaml_reads_back() {
        let yaml = operator_yaml(IMAGE).expect("yaml");
        for r in RULES {
            assert!(
                yaml.contains(&format!("# {}\n", r.why)),
                "{}\n{yaml}",
                r.why
            );
        }
        let (docs, kinds) = read_back(&yaml);
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Deployment"
            ]
        );
        assert_eq!(
            docs[2]["rules"].as_array().map(Vec::len),
            Some(RULES.len() + CLUSTER_RULES.len())
        );
        for r in CLUSTER_RULES {
            assert!(yaml.contains(&format!("# {}\n", r.why)), "{}", r.why);
        }
    }

    #[test]
    fn the_namespaced_install_grants_nothing_outside_its_namespaces() {
        let yaml = operator_namespaced_yaml(IMAGE).expect("yaml");
        let (docs, kinds) = read_back(&yaml);
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "Role",
                "RoleBinding",
                "Deployment"
            ]
        );
        let ns = |d: &Value| d["metadata"]["namespace"].as_str().map(str::to_owned);
        assert_eq!(ns(&docs[2]).as_deref(), Some(NAMESPACE));
        assert_eq!(docs[2]["rules"][0]["resources"], json!(["leases"]));
        assert_eq!(docs[2]["rules"].as_array().map(Vec::len), Some(1));
        assert_eq!(ns(&docs[4]).as_deref(), Some(EXAMPLE_WATCHED));
        assert_eq!(docs[4]["rules"].as_array().map(Vec::len), Some(RULES.len()));
        for binding in [&docs[3], &docs[5]] {
            assert_eq!(binding["roleRef"]["kind"], "Role");
            assert_eq!(binding["roleRef"]["name"], binding["metadata"]["name"]);
            assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
        }
        let args = &docs[6]["spec"]["template"]["spec"]["containers"][0]["args"];
        assert_eq!(
            args,
            &json!(["--listen", "$(POD_IP):8080", "--namespace", EXAMPLE_WATCHED])
        );
        for r in RULES {
            assert!(yaml.contains(&format!("# {}\n", r.why)), "{}", r.why);
        }
        assert!(!yaml.contains("nodes"), "no cluster-scoped rule in a Role");
        // Several namespaces: a Role and a binding in each, all after --namespace.
        let several = objects_for(IMAGE, &["a", "b"]);
        let roles: Vec<&Value> = several.iter().filter(|o| o["kind"] == "Role").collect();
        assert_eq!(roles.len(), 3);
        let args = &several.last().expect("the Deployment")["spec"]["template"]["spec"]["containers"]
            [0]["args"];
        assert_eq!(args[3], "a,b");
    }
}
