//! The Helm chart (`charts/muster`): rendered with its defaults and with every value it
//! documents, each result accepted by a real API server (server-side dry-run); a bad
//! values file rejected by `values.schema.json` before anything is rendered; the chart's
//! RBAC the same as the generated manifests'; installed on the local platform, where a
//! ClusterSpec then forms under the chart's RBAC. Rendering is `helm template` on kind and
//! `e2e/chart-render` here (see support/chart.rs).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use e2e::{Platform, Target};
use serde_json::{Value, json};

mod support;
use support::chart::{Rendered, chart_dir, documents, render};
use support::operator::{
    a_cluster_forms_under, never_reconciled, operator_pod, platform_with_images,
    stray_cluster_elsewhere,
};
use support::{local, wait_for_crd};

/// A values file in a fresh temporary folder.
fn values_file(dir: &Path, name: &str, values: &Value) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(values).expect("YAML")).expect("write values");
    path
}

fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chart-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

fn rendered(r: Rendered) -> String {
    assert!(r.ok, "rendering failed:\n{}", r.stderr);
    r.stdout
}

/// One documented option: values that change it, and what the output must then say.
struct Case {
    values: Value,
    shows: &'static [&'static str],
}

/// Every value in values.yaml, changed (the test below checks that none is missing).
fn cases() -> Vec<Case> {
    vec![
        Case {
            values: json!({"image": {"repository": "registry.example/muster-operator", "tag": "9.9.9", "pullPolicy": "Always"}}),
            shows: &[
                "image: registry.example/muster-operator:9.9.9",
                "imagePullPolicy: Always",
            ],
        },
        Case {
            values: json!({"imagePullSecrets": [{"name": "regcred"}]}),
            shows: &["imagePullSecrets:\n        - name: regcred"],
        },
        Case {
            values: json!({"replicaCount": 2}),
            shows: &["replicas: 2"],
        },
        Case {
            values: json!({"watchNamespace": "shop"}),
            shows: &[
                "kind: Role\nmetadata:\n  name: muster-operator\n  namespace: \"shop\"",
                "- --namespace\n            - \"shop\"",
                "name: muster-operator-leader-election\n  namespace: muster-system",
            ],
        },
        Case {
            values: json!({"maxConcurrentReconciles": 8, "reconcileTimeoutSeconds": 120,
                "secretRefreshSeconds": 300}),
            shows: &[
                "- --max-concurrent-reconciles\n            - \"8\"",
                "- --reconcile-timeout-seconds\n            - \"120\"",
                "- --secret-refresh-seconds\n            - \"300\"",
            ],
        },
        Case {
            values: json!({"watchNamespaces": ["shop", "cart"], "watchNamespace": "shop"}),
            shows: &[
                "kind: Role\nmetadata:\n  name: muster-operator\n  namespace: \"cart\"",
                "kind: Role\nmetadata:\n  name: muster-operator\n  namespace: \"shop\"",
                "- --namespace\n            - \"cart,shop\"",
                "name: muster-operator-leader-election\n  namespace: muster-system",
            ],
        },
        Case {
            // Names YAML would read as something else unquoted (a boolean, a number).
            values: json!({"watchNamespaces": ["on", "123"], "podMonitor": {"enabled": true}}),
            shows: &[
                "namespace: \"on\"",
                "namespace: \"123\"",
                "- --namespace\n            - \"123,on\"",
                "matchNames: [\"123\",\"on\"]",
            ],
        },
        Case {
            values: json!({"leaseName": "other-lease"}),
            shows: &["- --lease-name\n            - other-lease"],
        },
        Case {
            values: json!({"logLevel": "info,operator=debug", "logFormat": "json"}),
            shows: &[
                "value: \"info,operator=debug\"",
                "- --log-format\n            - json",
            ],
        },
        Case {
            values: json!({"serviceAccount": {"name": "custom", "annotations": {"iam.example/role": "muster"}}}),
            shows: &[
                "kind: ServiceAccount\nmetadata:\n  name: custom",
                "iam.example/role: muster",
                "serviceAccountName: custom",
            ],
        },
        Case {
            values: json!({"serviceAccount": {"create": false, "name": "existing"}}),
            shows: &["serviceAccountName: existing"],
        },
        Case {
            values: json!({"rbac": {"create": false}}),
            shows: &["kind: Deployment"],
        },
        Case {
            values: json!({"metricsPort": 9090}),
            shows: &["$(POD_IP):9090", "containerPort: 9090", "port: 9090"],
        },
        Case {
            values: json!({"resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}}),
            shows: &["cpu: 50m", "memory: 64Mi", "memory: 256Mi"],
        },
        Case {
            values: json!({"podAnnotations": {"example.com/note": "hello"}, "podLabels": {"team": "payments"}}),
            shows: &["example.com/note: hello", "team: payments"],
        },
        Case {
            values: json!({
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                    "weight": 1,
                    "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "muster-operator"}}},
                }]}},
                "priorityClassName": "system-cluster-critical",
            }),
            shows: &[
                "kubernetes.io/os: linux",
                "key: dedicated",
                "topologyKey: kubernetes.io/hostname",
                "priorityClassName: system-cluster-critical",
            ],
        },
        Case {
            values: json!({"serviceMonitor": {"enabled": true, "interval": "15s", "labels": {"release": "prometheus"}}}),
            shows: &[
                "kind: ServiceMonitor",
                "interval: 15s",
                "release: prometheus",
            ],
        },
        Case {
            values: json!({"podMonitor": {"enabled": true, "interval": "20s", "labels": {"release": "prometheus"}}}),
            shows: &[
                "kind: PodMonitor",
                "interval: 20s",
                "port: management",
                "any: true",
            ],
        },
    ]
}

/// Dotted paths of the leaves of a values tree (a list or an empty map is a leaf).
fn leaves(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, child) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(child, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_owned());
        }
    }
}

fn chart_values() -> Value {
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    serde_yaml::from_str(&text).expect("values.yaml is YAML")
}

#[test]
fn every_value_is_documented_and_has_a_case() {
    let values = chart_values();
    let mut all = BTreeSet::new();
    leaves(&values, "", &mut all);
    let mut covered = BTreeSet::new();
    for case in cases() {
        leaves(&case.values, "", &mut covered);
    }
    // A map value (annotations, labels, resources) counts as covered by any key under it.
    let missing: Vec<&String> = all
        .iter()
        .filter(|v| {
            !covered
                .iter()
                .any(|c| c == *v || c.starts_with(&format!("{v}.")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "values without a rendering case: {missing:?}"
    );

    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(chart_dir().join("values.schema.json")).expect("schema"),
    )
    .expect("the schema is JSON");
    for path in &all {
        let mut node = &schema;
        for key in path.split('.') {
            if node.get("properties").is_none() {
                break; // a free-form map (resources.requests, labels): described above
            }
            node = &node["properties"][key];
            assert!(node.is_object(), "{path} is not in values.schema.json");
        }
    }

    // values.yaml: a comment above every key (siblings may share one), down to the
    // second level.
    let text = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let is_key = |l: &str| !l.trim_start().starts_with(['#', '-']) && l.contains(':');
    for (i, line) in lines.iter().enumerate() {
        if !is_key(line) || indent(line) > 2 {
            continue;
        }
        let documented = lines[..i]
            .iter()
            .rev()
            .find(|above| {
                !(is_key(above) && indent(above) == indent(line) && !above.ends_with(':'))
            })
            .is_some_and(|above| above.trim_start().starts_with('#'));
        assert!(
            documented,
            "values.yaml line {}: `{}` has no comment saying what it is for",
            i + 1,
            line.trim()
        );
    }
}

#[test]
fn the_schema_rejects_a_bad_values_file_and_says_where() {
    let dir = scratch("schema");
    let bad = [
        (json!({"replicaCount": "two"}), "replicaCount"),
        (json!({"replicaCount": 0}), "replicaCount"),
        (json!({"image": {"tag": 1.5}}), "image.tag"),
        (
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "image.pullPolicy",
        ),
        (json!({"logFormat": "yaml"}), "logFormat"),
        (json!({"metricsPort": 80}), "metricsPort"),
        (
            json!({"serviceMonitor": {"enabled": "yes"}}),
            "serviceMonitor.enabled",
        ),
        (
            json!({"watchNamespace": "Not_A_Namespace"}),
            "watchNamespace",
        ),
        (json!({"replicas": 3}), "replicas"),
    ];
    for (i, (values, field)) in bad.iter().enumerate() {
        let file = values_file(&dir, &format!("bad-{i}"), values);
        let r = render("muster", "muster-system", &[&file], &[]);
        assert!(!r.ok, "{values} was accepted:\n{}", r.stdout);
        assert!(r.stdout.is_empty(), "nothing is rendered for {values}");
        assert!(
            r.stderr
                .contains("values don't meet the specifications of the schema"),
            "{values}: {}",
            r.stderr
        );
        assert!(
            r.stderr.contains(field),
            "{values} names {field}: {}",
            r.stderr
        );
    }
}

#[test]
fn the_chart_needs_kubernetes_1_26() {
    let r = render(
        "muster",
        "muster-system",
        &[],
        &["--kube-version", "1.25.9"],
    );
    assert!(!r.ok, "rendered for 1.25:\n{}", r.stdout);
    assert!(r.stderr.contains("kubeVersion"), "{}", r.stderr);
}

#[test]
fn the_chart_grants_what_the_generated_manifests_grant() {
    let manifests = operator::install::objects(operator::install::IMAGE);
    let cluster_role = manifests
        .iter()
        .find(|o| o["kind"] == "ClusterRole")
        .expect("install.rs has a ClusterRole");
    let docs = documents(&rendered(render("muster", "muster-system", &[], &[])));
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment"
        ]
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    assert_eq!(role["rules"], cluster_role["rules"]);
    // The Deployment runs the same container as manifests/operator.yaml's.
    let ours = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("Deployment");
    let theirs = manifests
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("Deployment");
    let pod = |d: &Value| d["spec"]["template"]["spec"].clone();
    assert_eq!(pod(ours)["securityContext"], pod(theirs)["securityContext"]);
    let container = |d: &Value| pod(d)["containers"][0].clone();
    for field in [
        "image",
        "securityContext",
        "ports",
        "readinessProbe",
        "livenessProbe",
        "resources",
    ] {
        assert_eq!(container(ours)[field], container(theirs)[field], "{field}");
    }

    // One namespace: the same rules in a Role there, the Lease rule in the release's.
    let dir = scratch("rbac");
    let file = values_file(&dir, "ns", &json!({"watchNamespace": "shop"}));
    let docs = documents(&rendered(render("muster", "muster-system", &[&file], &[])));
    assert!(docs.iter().all(|d| d["kind"] != "ClusterRole"));
    let roles: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Role").collect();
    assert_eq!(roles.len(), 2);
    assert_eq!(roles[0]["metadata"]["namespace"], "shop");
    // Cluster-scoped rules (Nodes) are the ClusterRole's alone: a Role cannot grant them.
    let namespaced: Vec<&Value> = cluster_role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["resources"] != json!(["nodes"]))
        .collect();
    assert_eq!(
        namespaced.len() + 1,
        cluster_role["rules"].as_array().map_or(0, Vec::len),
        "the ClusterRole has the nodes rule"
    );
    assert_eq!(roles[0]["rules"], json!(namespaced));
    assert_eq!(roles[1]["metadata"]["namespace"], "muster-system");
    let lease_rules: Vec<&Value> = cluster_role["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .filter(|r| r["resources"] == json!(["leases"]))
        .collect();
    assert_eq!(roles[1]["rules"], json!(lease_rules));
}

/// The rendered NOTES.txt (`helm install --dry-run` prints it on kind).
fn notes(values: &[&Path]) -> String {
    if Target::from_env().ok() == Some(Target::Kind) {
        let mut cmd = Command::new("helm");
        cmd.args(["install", "muster", &chart_dir().to_string_lossy()])
            .args(["--namespace", "muster-system", "--dry-run"]);
        for v in values {
            cmd.arg("--values").arg(v);
        }
        let out = cmd.output().expect("helm install --dry-run");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split_once("NOTES:\n")
            .map(|(_, n)| n.to_owned())
            .unwrap_or(text)
    } else {
        rendered(render("muster", "muster-system", values, &["--notes"]))
    }
}

#[test]
fn the_notes_say_what_to_do_next() {
    let text = notes(&[]);
    for expected in [
        "kubectl -n muster-system rollout status deployment/muster-operator",
        "kubectl apply -f -",
        "kubectl get clusterspecs -w",
        "/bootstrap/status",
    ] {
        assert!(
            text.contains(expected),
            "NOTES.txt lacks {expected:?}:\n{text}"
        );
    }
    let dir = scratch("notes");
    let file = values_file(
        &dir,
        "ns",
        &json!({"watchNamespace": "shop", "podMonitor": {"enabled": true}, "rbac": {"create": false}}),
    );
    let text = notes(&[&file]);
    for expected in [
        "watching ClusterSpecs in namespace shop",
        "kubectl apply -n shop -f -",
        "PodMonitor muster-operator-agents",
        "rbac.create is false",
    ] {
        assert!(
            text.contains(expected),
            "NOTES.txt lacks {expected:?}:\n{text}"
        );
    }
    let file = values_file(
        &dir,
        "several",
        &json!({"watchNamespaces": ["shop", "cart"]}),
    );
    let text = notes(&[&file]);
    for expected in [
        "watching ClusterSpecs in namespaces cart, shop.",
        "kubectl apply -n cart -f -",
    ] {
        assert!(
            text.contains(expected),
            "NOTES.txt lacks {expected:?}:\n{text}"
        );
    }
}

/// `kubectl ARGS` on the platform, without a default namespace (the chart names its own).
fn kubectl(p: &Platform, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let kubeconfig = p.control_plane().map(|cp| cp.kubeconfig.as_path());
    e2e::kubectl::run(kubeconfig, args, stdin)
}

/// `kubectl apply [--dry-run=server] -f -` of a YAML stream.
fn kubectl_apply(p: &Platform, yaml: &str, dry_run: bool) -> Result<String, String> {
    let args: &[&str] = if dry_run {
        &["apply", "--dry-run=server", "-f", "-"]
    } else {
        &["apply", "-f", "-"]
    };
    kubectl(p, args, Some(yaml))
}

/// Prometheus Operator's ServiceMonitor and PodMonitor kinds, when the cluster has none:
/// their API group and names only (any fields are accepted), so that a dry-run can check
/// everything but the Prometheus Operator's own schema.
fn monitoring_kinds(p: &Platform) {
    for (kind, plural) in [
        ("ServiceMonitor", "servicemonitors"),
        ("PodMonitor", "podmonitors"),
    ] {
        let crd = format!("{plural}.monitoring.coreos.com");
        let exists = kubectl(p, &["get", "crd", &crd], None).is_ok();
        if exists {
            continue;
        }
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.monitoring.coreos.com")},
            "spec": {
                "group": "monitoring.coreos.com", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}],
            },
        });
        kubectl_apply(p, &crd.to_string(), false).expect("a monitoring CRD");
    }
}

fn namespace(p: &Platform, name: &str) {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    kubectl_apply(p, &ns.to_string(), false).expect("a namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_option_renders_what_the_api_server_accepts() {
    let p = Platform::start("chart-options", local(61, 62))
        .await
        .expect("platform");
    namespace(&p, "muster-system");
    namespace(&p, "shop");
    namespace(&p, "cart");
    namespace(&p, "on");
    namespace(&p, "123");
    monitoring_kinds(&p);
    let crd = std::fs::read_to_string(chart_dir().join("crds/clusterspecs.muster.dev.yaml"))
        .expect("the chart's CRD");
    kubectl_apply(&p, &crd, false).expect("the chart's CRD");
    wait_for_crd(&p.client).await;

    let dir = scratch("options");
    let default = rendered(render("muster", "muster-system", &[], &[]));
    kubectl_apply(&p, &default, true).expect("the default chart passes a server-side dry-run");
    for (i, case) in cases().iter().enumerate() {
        let file = values_file(&dir, &format!("case-{i}"), &case.values);
        let out = rendered(render("muster", "muster-system", &[&file], &[]));
        assert_ne!(out, default, "{} changes nothing", case.values);
        for expected in case.shows {
            assert!(
                out.contains(expected),
                "{}: no {expected:?} in\n{out}",
                case.values
            );
        }
        if let Err(e) = kubectl_apply(&p, &out, true) {
            panic!("{}: the API server refuses it:\n{e}\n{out}", case.values);
        }
    }
    // rbac.create=false leaves out exactly the RBAC objects.
    let file = values_file(&dir, "no-rbac", &json!({"rbac": {"create": false}}));
    let kinds: Vec<String> = documents(&rendered(render("muster", "muster-system", &[&file], &[])))
        .iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(kinds, ["ServiceAccount", "Service", "Deployment"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_chart_runs_an_operator_that_forms_a_cluster() {
    let p = platform_with_images("chart-install", (63, 64)).await;
    // What `helm install muster charts/muster -n muster-system --create-namespace` does.
    let installed = Instant::now();
    namespace(&p, "muster-system");
    let out = rendered(render("muster", "muster-system", &[], &["--include-crds"]));
    kubectl_apply(&p, &out, false).expect("install the rendered chart");
    wait_for_crd(&p.client).await;
    let log = operator_pod(&p, "muster-system", "muster-operator").await;
    println!(
        "chart installed → operator available: {} ms",
        installed.elapsed().as_millis()
    );
    let formed = a_cluster_forms_under(&p, &log).await;
    println!(
        "ClusterSpec created → Running (chart's operator): {} ms",
        formed.as_millis()
    );
}

/// `helm install … --set watchNamespaces={NS}`: Roles only; a cluster of that namespace
/// forms, one elsewhere is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_installed_for_one_namespace_runs_a_cluster_there_only() {
    let p = platform_with_images("chart-namespaced", (93, 94)).await;
    namespace(&p, "muster-system");
    let dir = scratch("namespaced");
    let file = values_file(
        &dir,
        "ns",
        &json!({"watchNamespaces": [p.namespace.clone()]}),
    );
    let out = rendered(render(
        "muster",
        "muster-system",
        &[&file],
        &["--include-crds"],
    ));
    assert!(!out.contains("kind: ClusterRole"), "{out}");
    kubectl_apply(&p, &out, false).expect("install the rendered chart");
    wait_for_crd(&p.client).await;
    let stray = stray_cluster_elsewhere(&p).await;
    let log = operator_pod(&p, "muster-system", "muster-operator").await;
    let formed = a_cluster_forms_under(&p, &log).await;
    println!(
        "ClusterSpec created → Running (chart, one namespace): {} ms",
        formed.as_millis()
    );
    never_reconciled(&p, &stray).await;
}
