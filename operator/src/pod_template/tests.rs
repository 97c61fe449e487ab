use serde_json::json;

use super::*;

fn cx() -> Context<'static> {
    Context {
        application: Some("app".into()),
        leave_timeout: Duration::from_secs(15),
        scheduling_set: vec!["nodeSelector"],
        volumes: &["config", "cluster-key", "kube-api-access"],
        agent_only_volumes: &["cluster-key", "kube-api-access"],
        mount_paths: &[
            "/etc/muster/config",
            "/etc/muster/key",
            "/var/run/secrets/kubernetes.io/serviceaccount",
        ],
        ports: &[8558, 2552],
        label_keys: &["app.kubernetes.io/instance"],
        annotation_keys: &["muster.dev/config-hash"],
    }
}

/// The fields of the problems of `raw`.
fn fields(raw: serde_json::Value) -> Vec<String> {
    check(&raw, &cx()).into_iter().map(|p| p.field).collect()
}

#[test]
fn named_lists_merge_by_their_key_and_other_lists_are_replaced() {
    let mut base = json!({
        "metadata": {"labels": {"a": "1"}},
        "spec": {
            "terminationGracePeriodSeconds": 30,
            "tolerations": [{"key": "x"}],
            "containers": [
                {"name": "agent", "env": [{"name": "POD_IP"}], "volumeMounts": [{"name": "config", "mountPath": "/etc/muster/config"}]},
                {"name": "app", "image": "shop:1", "env": [{"name": "A", "value": "1"}], "args": ["--x"]},
            ],
            "volumes": [{"name": "config"}],
        },
    });
    let user = json!({
        "metadata": {"labels": {"b": "2"}, "annotations": {"c": "3"}},
        "spec": {
            "terminationGracePeriodSeconds": 60,
            "tolerations": [{"key": "y"}],
            "containers": [
                {"name": "app", "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}],
                 "ports": [{"containerPort": 8080}], "args": ["--y"]},
                {"name": "agent", "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]},
                {"name": "proxy", "image": "envoy:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "priorityClassName": null,
        },
    });
    merge(&mut base, &user);
    assert_eq!(
        base,
        json!({
            "metadata": {"labels": {"a": "1", "b": "2"}, "annotations": {"c": "3"}},
            "spec": {
                "terminationGracePeriodSeconds": 60,
                "tolerations": [{"key": "y"}],
                "containers": [
                    {"name": "agent", "env": [{"name": "POD_IP"}], "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/muster/config"},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ]},
                    {"name": "app", "image": "shop:1",
                     "env": [{"name": "A", "value": "2"}, {"name": "B", "value": "3"}],
                     "args": ["--y"], "ports": [{"containerPort": 8080}]},
                    {"name": "proxy", "image": "envoy:1"},
                ],
                "volumes": [{"name": "config"}, {"name": "data", "emptyDir": {}}],
            },
        })
    );
}

#[test]
fn a_good_override_has_no_problems() {
    let raw = json!({
        "metadata": {"labels": {"team": "shop"}},
        "spec": {
            "terminationGracePeriodSeconds": 45,
            "imagePullSecrets": [{"name": "registry"}],
            "initContainers": [{"name": "migrate", "image": "shop:1"}],
            "containers": [
                {"name": "app", "ports": [{"containerPort": 8080, "name": "http"}],
                 "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}},
                {"name": "agent", "env": [{"name": "RUST_LOG", "value": "debug"}],
                 "securityContext": {"readOnlyRootFilesystem": true}},
            ],
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}],
        },
    });
    assert_eq!(check(&raw, &cx()), vec![]);
}

#[test]
fn what_would_break_the_cluster_is_refused_by_field() {
    assert_eq!(
        fields(
            json!({"spec": {"containers": [{"name": "agent", "image": "evil:1", "ports": []}]}})
        ),
        [
            "spec.podTemplate.spec.containers[agent].image",
            "spec.podTemplate.spec.containers[agent].ports"
        ]
    );
    assert_eq!(
        fields(json!({"spec": {"terminationGracePeriodSeconds": 10}})),
        ["spec.podTemplate.spec.terminationGracePeriodSeconds"]
    );
    assert_eq!(
        fields(json!({"spec": {"terminationGracePeriodSeconds": 19}})),
        ["spec.podTemplate.spec.terminationGracePeriodSeconds"],
        "the leave timeout and no time to exit"
    );
    assert_eq!(
        fields(json!({"spec": {"terminationGracePeriodSeconds": 20}})),
        Vec::<String>::new(),
        "the leave timeout and 5 s to exit"
    );
    assert_eq!(
        fields(json!({"spec": {"volumes": [{"name": "config", "emptyDir": {}}]}})),
        ["spec.podTemplate.spec.volumes[config]"]
    );
    assert_eq!(
        fields(json!({"metadata": {"labels": {"app.kubernetes.io/instance": "other"}}})),
        ["spec.podTemplate.metadata.labels.app.kubernetes.io/instance"]
    );
    assert_eq!(
        fields(json!({"metadata": {"annotations": {"muster.dev/config-hash": "x"}}})),
        ["spec.podTemplate.metadata.annotations.muster.dev/config-hash"]
    );
    assert_eq!(
        fields(
            json!({"spec": {"serviceAccountName": "x", "automountServiceAccountToken": true, "hostNetwork": true, "restartPolicy": "Never"}})
        ),
        [
            "spec.podTemplate.spec.serviceAccountName",
            "spec.podTemplate.spec.automountServiceAccountToken",
            "spec.podTemplate.spec.hostNetwork",
            "spec.podTemplate.spec.restartPolicy"
        ]
    );
    assert_eq!(
        fields(json!({"spec": {"nodeSelector": {"disk": "ssd"}}})),
        ["spec.podTemplate.spec.nodeSelector"],
        "set in spec.scheduling already"
    );
    assert_eq!(
        fields(json!({"spec": {"containers": [
            {"name": "proxy"},
            {"name": "app", "ports": [{"containerPort": 2552}]},
            {"name": "agent", "env": [{"name": "MUSTER_CLUSTER_PORT", "value": "1"}],
             "volumeMounts": [{"name": "x", "mountPath": "/etc/muster/key"}]},
        ]}})),
        [
            "spec.podTemplate.spec.containers[proxy].image",
            "spec.podTemplate.spec.containers[app].ports[2552]",
            "spec.podTemplate.spec.containers[agent].env[MUSTER_CLUSTER_PORT]",
            "spec.podTemplate.spec.containers[agent].volumeMounts[/etc/muster/key]"
        ]
    );
}

#[test]
fn a_template_of_the_wrong_shape_is_refused_at_the_field() {
    let problems = check(
        &json!({"spec": {"containers": [{"name": "app", "ports": [{"containerPort": "eighty"}]}]}}),
        &cx(),
    );
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].field,
        "spec.podTemplate.spec.containers[0].ports[0].containerPort"
    );
    assert!(
        problems[0].message.contains("PodTemplateSpec"),
        "{problems:?}"
    );
}

#[test]
fn mounts_near_the_agents_files_init_containers_and_app_fields_are_refused() {
    assert_eq!(
        fields(
            json!({"spec": {"containers": [{"name": "agent", "volumeMounts": [
                {"name": "a", "mountPath": "/etc/muster/config/agent.yaml", "subPath": "x"},
                {"name": "b", "mountPath": "/etc/muster/key/"},
                {"name": "c", "mountPath": "/etc"},
                {"name": "d", "mountPath": "/etc/muster-extra"},
            ]}]}})
        ),
        [
            "spec.podTemplate.spec.containers[agent].volumeMounts[/etc/muster/config/agent.yaml]",
            "spec.podTemplate.spec.containers[agent].volumeMounts[/etc/muster/key/]",
            "spec.podTemplate.spec.containers[agent].volumeMounts[/etc]",
        ]
    );
    assert_eq!(
        fields(json!({"spec": {
            "ephemeralContainers": [],
            "securityContext": {"runAsUser": 0},
            "initContainers": [
                {"name": "agent", "image": "x:1"},
                {"name": "app", "image": "x:1"},
                {"name": "proxy", "image": "x:1", "restartPolicy": "Always", "ports": [{"containerPort": 8558}]},
            ],
            "containers": [
                {"name": "app", "image": "other:2", "env": [{"name": "MUSTER_AGENT_URL", "value": "x"}]},
                {"name": "agent", "securityContext": {"privileged": true}},
            ],
        }})),
        [
            "spec.podTemplate.spec.ephemeralContainers",
            "spec.podTemplate.spec.securityContext.runAsUser",
            "spec.podTemplate.spec.containers[app].image",
            "spec.podTemplate.spec.containers[app].env[MUSTER_AGENT_URL]",
            "spec.podTemplate.spec.containers[agent].securityContext",
            "spec.podTemplate.spec.initContainers[agent]",
            "spec.podTemplate.spec.initContainers[app]",
            "spec.podTemplate.spec.initContainers[proxy].ports[8558]",
        ]
    );
}

#[test]
fn the_agents_token_and_key_stay_in_the_agent_container() {
    let problems = fields(json!({"spec": {
        "volumes": [
            {"name": "mine", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
            {"name": "certs", "projected": {"sources": [{"configMap": {"name": "ca"}}]}},
        ],
        "containers": [
            {"name": "app", "volumeMounts": [
                {"name": "kube-api-access", "mountPath": "/token"},
                {"name": "config", "mountPath": "/settings"},
            ]},
            {"name": "agent", "volumeMounts": [
                {"name": "x", "mountPath": "/var/run/secrets/kubernetes.io"},
            ]},
        ],
        "initContainers": [
            {"name": "init", "image": "busybox", "volumeMounts": [{"name": "cluster-key", "mountPath": "/k"}]},
        ],
    }}));
    assert_eq!(
        problems,
        [
            "spec.podTemplate.spec.volumes[mine].projected",
            "spec.podTemplate.spec.containers[app].volumeMounts[/token]",
            "spec.podTemplate.spec.initContainers[init].volumeMounts[/k]",
            "spec.podTemplate.spec.containers[agent].volumeMounts[/var/run/secrets/kubernetes.io]",
        ]
    );
}

#[test]
fn nothing_in_the_template_reaches_the_agents_secrets() {
    let problems = fields(json!({"spec": {
        "shareProcessNamespace": true,
        "hostPID": false,
        "hostIPC": true,
        "volumes": [{"name": "node", "hostPath": {"path": "/var/lib/kubelet"}}],
    }}));
    assert_eq!(
        problems,
        [
            "spec.podTemplate.spec.shareProcessNamespace",
            "spec.podTemplate.spec.hostIPC",
            "spec.podTemplate.spec.volumes[node].hostPath",
        ]
    );
    let template = json!({"spec": {
        "volumes": [
            {"name": "k", "secret": {"secretName": "shop-cluster-key"}},
            {"name": "t", "secret": {"secretName": "shop-token-x7k2p"}},
            {"name": "p", "projected": {"sources": [{"secret": {"name": "shop-cluster-key"}}]}},
            {"name": "fine", "secret": {"secretName": "shop-tls"}},
            {"name": "theirs", "secret": {"secretName": "cache-cluster-key"}},
        ],
        "containers": [{"name": "app", "envFrom": [{"secretRef": {"name": "shop-cluster-key"}}],
                        "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "shop-cluster-key", "key": "cluster.key"}}}]}],
        "initContainers": [{"name": "init", "image": "x", "envFrom": [{"secretRef": {"name": "other"}}]}],
    }});
    let app_env: Vec<EnvVar> = serde_json::from_value(json!([
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "shop-cluster-key", "key": "management.token"}}},
        {"name": "OK", "valueFrom": {"secretKeyRef": {"name": "shop-db", "key": "password"}}},
    ]))
    .expect("env");
    let found: Vec<String> =
        secret_references(&app_env, Some(&template), "shop-cluster-key", "shop")
            .into_iter()
            .map(|p| p.field)
            .collect();
    assert_eq!(
        found,
        [
            "spec.application.env[T]",
            "spec.podTemplate.spec.volumes[k]",
            "spec.podTemplate.spec.volumes[t]",
            "spec.podTemplate.spec.volumes[p]",
            "spec.podTemplate.spec.volumes[theirs]",
            "spec.podTemplate.spec.containers[app].env[K]",
            "spec.podTemplate.spec.containers[app].envFrom[0]",
        ]
    );
}

#[test]
fn no_container_is_privileged_or_gains_capabilities() {
    let problems = fields(json!({"spec": {
        "containers": [
            {"name": "app", "securityContext": {"privileged": true, "capabilities": {"add": ["NET_BIND_SERVICE", "SYS_ADMIN"]}}},
        ],
        "initContainers": [{"name": "init", "image": "x", "securityContext": {"privileged": true}}],
    }}));
    assert_eq!(
        problems,
        [
            "spec.podTemplate.spec.containers[app].securityContext.privileged",
            "spec.podTemplate.spec.containers[app].securityContext.capabilities.add[SYS_ADMIN]",
            "spec.podTemplate.spec.initContainers[init].securityContext.privileged",
        ]
    );
}
