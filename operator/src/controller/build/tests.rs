use super::*;
use crate::crd::ClusterSpecSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn cluster(spec_yaml: &str) -> ClusterSpec {
    let spec: ClusterSpecSpec = serde_yaml::from_str(spec_yaml).expect("a spec");
    let mut cs = ClusterSpec::new("shop", spec);
    cs.metadata.namespace = Some("prod".into());
    cs.metadata.uid = Some("0b0e7c6e-1d2a-4c1f-9a55-3c1d2e4f5a6b".into());
    cs
}

fn yaml<T: serde::Serialize>(x: &T) -> String {
    serde_yaml::to_string(x).expect("yaml")
}

const OWNER: &str = "  ownerReferences:
  - apiVersion: muster.dev/v1alpha1
    controller: true
    kind: ClusterSpec
    name: shop
    uid: 0b0e7c6e-1d2a-4c1f-9a55-3c1d2e4f5a6b
";

#[test]
fn the_headless_service_publishes_not_ready_pods_on_both_ports() {
    let o = owned(&cluster("{}"), true, &Site::new(Selection::Muster)).expect("built");
    let expected = format!(
        "apiVersion: v1
kind: Service
metadata:
  labels:
    app.kubernetes.io/instance: shop
    app.kubernetes.io/managed-by: muster-operator
    app.kubernetes.io/name: muster
  name: shop
  namespace: prod
{OWNER}spec:
  clusterIP: None
  ports:
  - name: management
    port: 8558
    protocol: TCP
    targetPort: management
  - name: cluster
    port: 2552
    protocol: TCP
    targetPort: cluster
  publishNotReadyAddresses: true
  selector:
    muster.dev/cluster: shop
"
    );
    assert_eq!(yaml(&o.service), expected);
    // A StatefulSet made by an earlier operator selects by the instance label: the
    // Service, the PDB and discovery go on finding the same pods.
    let legacy = owned(&cluster("{}"), true, &Site::new(Selection::Legacy)).expect("built");
    assert_eq!(
        yaml(&legacy.service),
        expected.replace(
            "muster.dev/cluster: shop",
            "app.kubernetes.io/instance: shop"
        )
    );
    let pdb = legacy.pod_disruption_budget.clone().expect("a PDB");
    assert_eq!(
        pdb.spec
            .and_then(|s| s.selector)
            .and_then(|s| s.match_labels),
        Some(Selection::Legacy.labels(&cluster("{}")))
    );
    assert_eq!(
        legacy.stateful_set.spec.selector.match_labels,
        Some(Selection::Legacy.labels(&cluster("{}")))
    );
    let text = |o: &Owned| o.config_map.data.clone().expect("data")["agent.yaml"].clone();
    assert!(text(&legacy).contains("pod-label-selector: app.kubernetes.io/instance=%s"));
    assert!(
        text(&o).contains("pod-label-selector: muster.dev/cluster=%s"),
        "{}",
        text(&o)
    );
    // Either way the pods carry both labels, so the StatefulSet can be made again
    // selecting by muster's own.
    for built in [&o, &legacy] {
        let labels = built
            .stateful_set
            .spec
            .template
            .metadata
            .clone()
            .and_then(|m| m.labels);
        let labels = labels.unwrap_or_default();
        assert_eq!(
            labels.get("muster.dev/cluster").map(String::as_str),
            Some("shop")
        );
        assert_eq!(
            labels.get("app.kubernetes.io/instance").map(String::as_str),
            Some("shop")
        );
    }
}

#[test]
fn the_selection_follows_the_live_stateful_set() {
    let cs = cluster("{}");
    assert_eq!(Selection::of(&cs, None), Selection::Muster, "a new cluster");
    let mut live = owned(&cs, true, &Site::new(Selection::Legacy))
        .expect("built")
        .stateful_set;
    assert_eq!(Selection::of(&cs, Some(&live)), Selection::Legacy);
    live.spec.selector.match_labels = Some(Selection::Muster.labels(&cs));
    assert_eq!(Selection::of(&cs, Some(&live)), Selection::Muster);
    assert_eq!(Selection::Muster.query(&cs), "muster.dev/cluster=shop");
}

#[test]
fn the_role_grants_only_what_the_agents_use() {
    // The formation record, and the agents' own ConfigMap read only.
    const RECORD: &str = "- apiGroups:\n  - coordination.k8s.io\n  resourceNames:\n  - shop-formation\n  resources:\n  - leases\n  verbs:\n  - get\n  - update\n- apiGroups:\n  - ''\n  resourceNames:\n  - shop\n  resources:\n  - configmaps\n  verbs:\n  - get\n";
    let o = owned(&cluster("{}"), true, &Site::new(Selection::Muster)).expect("built");
    let rules = yaml(&o.role.rules);
    assert_eq!(
        rules,
        format!(
            "{RECORD}- apiGroups:\n  - ''\n  resources:\n  - pods\n  verbs:\n  - get\n  - list\n  - watch\n"
        )
    );
    let o = owned(
        &cluster("membership: {downing: lease-majority}"),
        true,
        &Site::new(Selection::Muster),
    )
    .expect("built");
    let rules = yaml(&o.role.rules);
    // The resolver's Lease alone (the operator creates it): no `create`, which RBAC
    // cannot limit to a name, and no other Lease of the namespace.
    assert!(rules.ends_with("- apiGroups:\n  - coordination.k8s.io\n  resourceNames:\n  - shop-muster-sbr\n  resources:\n  - leases\n  verbs:\n  - get\n  - update\n"), "{rules}");
    assert!(!rules.contains("create"), "{rules}");
    // The agents use that Lease, whatever their own default would be.
    let yaml_text = o.config_map.data.as_ref().expect("data")["agent.yaml"].clone();
    assert!(
        yaml_text.contains("lease-name: shop-muster-sbr"),
        "{yaml_text}"
    );
    // DNS discovery without lease-majority: the formation record and the ConfigMap only.
    let o = owned(
        &cluster("bootstrap: {discovery: dns}"),
        true,
        &Site::new(Selection::Muster),
    )
    .expect("built");
    assert_eq!(yaml(&o.role.rules), RECORD);
    assert_eq!(o.role_binding.role_ref.name, "shop");
    let pod = o.stateful_set.spec.template.spec.expect("pod spec");
    // The token goes to the agent container alone, never to every container.
    assert_eq!(pod.automount_service_account_token, Some(false));
    let token = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == TOKEN_VOLUME)
        .expect("the token volume");
    assert_eq!(
        yaml(&token.projected),
        "defaultMode: 292\nsources:\n- serviceAccountToken:\n    expirationSeconds: 3607\n    path: token\n- configMap:\n    items:\n    - key: ca.crt\n      path: ca.crt\n    name: kube-root-ca.crt\n- downwardAPI:\n    items:\n    - fieldRef:\n        apiVersion: v1\n        fieldPath: metadata.namespace\n      path: namespace\n"
    );
    let mounting: Vec<&str> = pod
        .containers
        .iter()
        .filter(|c| {
            c.volume_mounts.iter().flatten().any(|m| {
                m.name == TOKEN_VOLUME && m.mount_path == TOKEN_DIR && m.read_only == Some(true)
            })
        })
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(mounting, ["agent"]);
}

#[test]
fn a_change_of_the_agent_settings_changes_the_pod_template_but_the_lock_does_not() {
    let hash = |spec: &str, lock: bool| {
        let o = owned(&cluster(spec), lock, &Site::new(Selection::Muster)).expect("built");
        o.stateful_set
            .spec
            .template
            .metadata
            .expect("metadata")
            .annotations
            .expect("annotations")[CONFIG_HASH]
            .clone()
    };
    assert_eq!(
        hash("{}", true),
        hash("{}", false),
        "new-cluster-enabled is followed at run time"
    );
    assert_ne!(
        hash("{}", true),
        hash("membership: {stableAfter: 30s}", true)
    );
}

#[test]
fn scaling_a_formed_cluster_rolls_no_pod() {
    // The expected contact points follow the replicas until the cluster formed, then
    // stay: agent.yaml, and with it the pod template, does not change with a scale (a
    // rollout of every pod on every scale would restart members for nothing).
    let built = |replicas: i32, formed: bool, new_cluster: &str| {
        let mut cs = cluster(&format!(
            "replicas: {replicas}\nbootstrap: {{newClusterEnabled: \"{new_cluster}\"}}"
        ));
        cs.status = Some(crate::crd::ClusterSpecStatus {
            required_contact_points: Some(3),
            expected_contact_points: Some(3),
            formed_at: formed.then(|| "2026-11-30T12:00:00Z".to_owned()),
            ..Default::default()
        });
        owned(&cs, false, &Site::new(Selection::Muster)).expect("built")
    };
    let template = |o: &Owned| o.stateful_set.spec.clone().template;
    let agent_yaml = |o: &Owned| o.config_map.data.clone().expect("data")["agent.yaml"].clone();
    let (three, five) = (built(3, true, "auto"), built(5, true, "auto"));
    assert_eq!(
        template(&three),
        template(&five),
        "formed: the template stays"
    );
    assert_eq!(agent_yaml(&three), agent_yaml(&five));
    assert!(agent_yaml(&five).contains("expected-contact-point-nr: 3"));
    // A required number set later above the kept one lifts it (the agent refuses an
    // expected number below the required).
    let mut cs = cluster("replicas: 7\nbootstrap: {requiredContactPoints: 5}");
    cs.status = Some(crate::crd::ClusterSpecStatus {
        required_contact_points: Some(3),
        expected_contact_points: Some(3),
        formed_at: Some("2026-11-30T12:00:00Z".to_owned()),
        ..Default::default()
    });
    let yaml = agent_yaml(&owned(&cs, false, &Site::new(Selection::Muster)).expect("built"));
    assert!(yaml.contains("required-contact-point-nr: 5"), "{yaml}");
    assert!(yaml.contains("expected-contact-point-nr: 5"), "{yaml}");
    // Still forming, or forming explicitly allowed again: the agents must know every
    // replica, so a scale-up reaches them.
    for (formed, new_cluster) in [(false, "auto"), (true, "true")] {
        let five = built(5, formed, new_cluster);
        assert!(agent_yaml(&five).contains("expected-contact-point-nr: 5"));
        assert_ne!(template(&built(3, formed, new_cluster)), template(&five));
    }
}

#[test]
fn every_object_is_owned_and_labelled() {
    let o = owned(&cluster("{}"), true, &Site::new(Selection::Muster)).expect("built");
    let owner = cluster("{}")
        .controller_owner_ref(&())
        .expect("an owner reference");
    let metas = [
        &o.service_account.metadata,
        &o.role.metadata,
        &o.role_binding.metadata,
        &o.service.metadata,
        &o.config_map.metadata,
        &o.stateful_set.metadata,
        &o.pod_disruption_budget
            .as_ref()
            .expect("a PodDisruptionBudget")
            .metadata,
    ];
    for m in metas {
        assert_eq!(m.owner_references, Some(vec![owner.clone()]), "{m:?}");
        assert_eq!(m.labels, Some(labels(&cluster("{}"))), "{m:?}");
        assert_eq!(m.namespace.as_deref(), Some("prod"), "{m:?}");
    }
}

#[test]
fn pods_meet_pod_security_restricted() {
    let o = owned(
        &cluster("application: {image: 'shop:1.2'}"),
        true,
        &Site::new(Selection::Muster),
    )
    .expect("built");
    let pod = o.stateful_set.spec.template.spec.expect("pod spec");
    let p = pod.security_context.expect("pod security context");
    assert_eq!(p.run_as_non_root, Some(true));
    assert_eq!(
        p.seccomp_profile.map(|s| s.type_),
        Some("RuntimeDefault".into())
    );
    assert_eq!(pod.containers.len(), 2, "agent and application");
    for c in &pod.containers {
        let sc = c
            .security_context
            .clone()
            .expect("container security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        let caps = sc.capabilities.expect("capabilities");
        assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]), "{}", c.name);
    }
}

#[test]
fn the_rollout_strategy_picks_the_update_strategy() {
    let s = |spec: &str| {
        let o = owned(&cluster(spec), true, &Site::new(Selection::Muster)).expect("built");
        let st = o.stateful_set.spec;
        assert_eq!(st.pod_management_policy.as_deref(), Some("Parallel"));
        st.update_strategy.and_then(|u| u.type_).unwrap_or_default()
    };
    assert_eq!(
        s("{}"),
        "OnDelete",
        "OldestLast: the operator replaces pods itself"
    );
    assert_eq!(s("rollout: {strategy: Ordinal}"), "RollingUpdate");
}

#[test]
fn the_agent_settings_are_accepted_by_the_agent_itself() {
    let cs = cluster(
        "replicas: 5\nbootstrap: {discovery: dns}\nmembership: {downing: keep-oldest, stableAfter: 30s}",
    );
    let o = owned(&cs, false, &Site::new(Selection::Muster)).expect("built");
    let data = o.config_map.data.expect("data");
    assert_eq!(data[NEW_CLUSTER_ENABLED_KEY], "false");
    let dir = std::env::temp_dir().join(format!("muster-operator-build-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    // The pod gets the key and the token from the Secret, mounted at KEY_DIR; here the
    // Secret's files are written to a folder of our own.
    let secret = secret(&cs, &[7; 64]);
    for (key, value) in secret.data.expect("data") {
        std::fs::write(dir.join(key), value.0).expect("write a secret file");
    }
    let file = dir.join("agent.yaml");
    let text = data["agent.yaml"].replace(KEY_DIR, &dir.display().to_string());
    std::fs::write(&file, &text).expect("write");
    let env = node_agent::config::Environment::from_pairs([
        ("POD_IP", "10.1.2.3"),
        ("POD_NAMESPACE", "prod"),
    ]);
    let loaded = node_agent::AgentConfig::load(Some(&file), &env)
        .unwrap_or_else(|e| panic!("{e}\n{}", data["agent.yaml"]));
    let b = &loaded.settings.bootstrap;
    assert_eq!(b.required_contact_point_nr, 5);
    assert_eq!(loaded.system_name, "shop");
    assert_eq!(
        b.new_cluster_enabled_file.as_deref(),
        Some(std::path::Path::new(
            "/etc/muster/config/new-cluster-enabled"
        ))
    );
    assert!(
        loaded.management_token.is_some(),
        "the management token is read from the Secret"
    );
    let sbr = &loaded.settings.cluster.split_brain_resolver;
    assert_eq!(sbr.stable_after, std::time::Duration::from_secs(30));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_secret_holds_a_key_and_a_token_from_the_random_bytes() {
    let cs = cluster("replicas: 3");
    let mut random = [0u8; 64];
    random[0] = 0xab;
    random[32] = 0xcd;
    let s = secret(&cs, &random);
    assert_eq!(s.metadata.name.as_deref(), Some("shop-cluster-key"));
    assert!(s.metadata.owner_references.is_some_and(|o| o.len() == 1));
    let data = s.data.expect("data");
    let key = String::from_utf8(data[CLUSTER_KEY].0.clone()).expect("text");
    let token = String::from_utf8(data[MANAGEMENT_TOKEN].0.clone()).expect("text");
    assert_eq!(key.len(), 64, "32 bytes, hex");
    assert!(
        key.starts_with("ab00") && token.starts_with("cd00"),
        "{key} {token}"
    );
    assert_ne!(key, token, "the two halves are separate secrets");
}

#[test]
fn the_ports_are_the_agents_defaults() {
    let defaults = node_agent::config::Settings::default();
    assert_eq!(MANAGEMENT_PORT, defaults.management.port);
    assert_eq!(CLUSTER_PORT, defaults.cluster.port);
}

#[test]
fn the_agent_settings_name_only_what_differs_from_the_agents_defaults() {
    let o = owned(&cluster("replicas: 5"), true, &Site::new(Selection::Muster)).expect("built");
    let yaml = &o.config_map.data.expect("data")["agent.yaml"];
    for key in [
        "name: shop",
        "required-contact-point-nr: 5",
        "port-name: management",
        "service-name: shop",
    ] {
        assert!(yaml.contains(key), "{key} in:\n{yaml}");
    }
    for default in [
        "gossip-interval",
        "threshold",
        "stable-margin",
        "discovery-method",
    ] {
        assert!(
            !yaml.contains(default),
            "{default} is the agent's default:\n{yaml}"
        );
    }
    let bad = cluster("membership: {stableAfter: soon}");
    assert_eq!(
        owned(&bad, true, &Site::new(Selection::Muster))
            .expect_err("refused")
            .0[0]
            .field,
        "spec.membership.stableAfter"
    );
}

#[test]
fn pods_of_an_older_template_are_found() {
    let o = owned(&cluster("replicas: 3"), true, &Site::new(Selection::Muster)).expect("built");
    let hash = o
        .stateful_set
        .spec
        .template
        .metadata
        .clone()
        .expect("meta")
        .annotations
        .expect("annotations")[CONFIG_HASH]
        .clone();
    let pod = |hash: &str, terminating: bool| {
        let mut p = k8s_openapi::api::core::v1::Pod::default();
        p.metadata.annotations = Some(BTreeMap::from([(CONFIG_HASH.to_owned(), hash.to_owned())]));
        if terminating {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        p
    };
    assert!(!pods_on_other_template(
        &o,
        &[pod(&hash, false), pod(&hash, false)]
    ));
    assert!(pods_on_other_template(
        &o,
        &[pod(&hash, false), pod("0123", false)]
    ));
    assert!(
        !pods_on_other_template(&o, &[pod(&hash, false), pod("0123", true)]),
        "a terminating pod is going"
    );
    assert!(
        pods_on_other_template(&o, &[k8s_openapi::api::core::v1::Pod::default()]),
        "no hash: some other template"
    );
}

#[test]
fn the_application_is_told_where_its_agent_listens() {
    let env_of = |spec: &str| {
        let o = owned(&cluster(spec), true, &Site::new(Selection::Muster)).expect("built");
        let pod = o.stateful_set.spec.template.spec.expect("pod spec");
        let app = pod
            .containers
            .iter()
            .find(|c| c.name == "app")
            .expect("app");
        app.env.clone().unwrap_or_default()
    };
    let env = env_of("application: {image: 'shop:1.2', env: [{name: A, value: b}]}");
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["MUSTER_POD_IP", "MUSTER_AGENT_URL", "A"]);
    let ip = env[0]
        .value_from
        .as_ref()
        .and_then(|f| f.field_ref.as_ref());
    assert_eq!(ip.map(|f| f.field_path.as_str()), Some("status.podIP"));
    // Declared before the URL, so the kubelet expands it there.
    assert_eq!(
        env[1].value.as_deref(),
        Some("http://$(MUSTER_POD_IP):8558")
    );
    // Setting them in the spec is refused by the checks (it would break the URL).
    let spec: crate::crd::ClusterSpecSpec = serde_yaml::from_str(
        "application: {image: 'shop:1.2', env: [{name: MUSTER_POD_IP, value: '::1'}]}",
    )
    .expect("a spec");
    let problems = crate::validate::validate(&spec);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field, "spec.application.env");
}

#[test]
fn the_pod_template_override_is_merged_into_the_pods() {
    let o = owned(
        &cluster(
            "application: {image: 'shop:1.2'}
podTemplate:
  metadata: {labels: {team: shop}}
  spec:
    terminationGracePeriodSeconds: 45
    containers:
    - name: app
      ports: [{name: http, containerPort: 8080}]
      volumeMounts: [{name: data, mountPath: /data}]
    - name: agent
      env: [{name: RUST_LOG, value: debug}]
    volumes: [{name: data, emptyDir: {}}]",
        ),
        true,
        &Site::new(Selection::Muster),
    )
    .expect("built");
    let t = o.stateful_set.spec.template;
    let labels = t.metadata.and_then(|m| m.labels).unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
    assert_eq!(
        labels.get("app.kubernetes.io/instance").map(String::as_str),
        Some("shop"),
        "the selector label stays"
    );
    let pod = t.spec.expect("pod spec");
    assert_eq!(pod.termination_grace_period_seconds, Some(45));
    let app = pod
        .containers
        .iter()
        .find(|c| c.name == "app")
        .expect("app");
    assert_eq!(
        app.image.as_deref(),
        Some("shop:1.2"),
        "the spec's image stays"
    );
    assert_eq!(app.ports.as_ref().map(Vec::len), Some(1));
    let agent = pod
        .containers
        .iter()
        .find(|c| c.name == "agent")
        .expect("agent");
    let env: Vec<&str> = agent
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        env,
        [
            "POD_IP",
            "POD_NAME",
            "POD_NAMESPACE",
            "MUSTER_CLUSTER_APP_VERSION",
            "RUST_LOG"
        ]
    );
    assert_eq!(
        agent.ports.as_ref().map(Vec::len),
        Some(2),
        "the agent's ports stay"
    );
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        ["config", "cluster-key", "kube-api-access", "data"]
    );
}

#[test]
fn an_override_that_removes_the_operators_essentials_is_refused_by_field() {
    let fields = |override_yaml: &str| -> Vec<String> {
        let cs = cluster(&format!(
            "application: {{image: 'shop:1.2'}}\npodTemplate: {override_yaml}"
        ));
        match owned(&cs, true, &Site::new(Selection::Muster)) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|p| p.field).collect(),
        }
    };
    assert_eq!(
        fields("{spec: {containers: [{name: agent, env: null, volumeMounts: null}]}}"),
        [
            "spec.podTemplate.spec.containers[agent].env[POD_IP]",
            "spec.podTemplate.spec.containers[agent].env[POD_NAME]",
            "spec.podTemplate.spec.containers[agent].env[POD_NAMESPACE]",
            "spec.podTemplate.spec.containers[agent].env[MUSTER_CLUSTER_APP_VERSION]",
            "spec.podTemplate.spec.containers[agent].volumeMounts[/etc/muster/config]",
            "spec.podTemplate.spec.containers[agent].volumeMounts[/etc/muster/key]",
            "spec.podTemplate.spec.containers[agent].volumeMounts[/var/run/secrets/kubernetes.io/serviceaccount]",
        ]
    );
    assert_eq!(
        fields("{metadata: {annotations: null}, spec: {securityContext: null}}"),
        [
            "spec.podTemplate.metadata.annotations.muster.dev/config-hash",
            "spec.podTemplate.spec.securityContext.runAsNonRoot",
            "spec.podTemplate.spec.securityContext.seccompProfile",
        ]
    );
    assert_eq!(
        fields(
            "{spec: {containers: [{name: agent, securityContext: {allowPrivilegeEscalation: true, readOnlyRootFilesystem: true}}]}}"
        ),
        ["spec.podTemplate.spec.containers[agent].securityContext.allowPrivilegeEscalation"],
        "adding a field is fine, changing the operator's is not"
    );
    assert_eq!(
        fields("{spec: {volumes: null, containers: null}}"),
        [
            "spec.podTemplate.spec.volumes[config]",
            "spec.podTemplate.spec.volumes[cluster-key]",
            "spec.podTemplate.spec.volumes[kube-api-access]",
            "spec.podTemplate.spec.containers[agent]",
        ]
    );
    assert_eq!(
        fields("{spec: {containers: [{name: agent, env: [{name: X, value: y}]}]}}"),
        Vec::<String>::new()
    );
}

#[test]
fn the_disruption_budget_is_configurable_or_off() {
    let max = |spec: &str| {
        owned(&cluster(spec), true, &Site::new(Selection::Muster))
            .expect("built")
            .pod_disruption_budget
            .and_then(|p| p.spec)
            .and_then(|s| s.max_unavailable)
    };
    assert_eq!(max("{}"), Some(IntOrString::Int(1)));
    assert_eq!(
        max("disruptionBudget: {maxUnavailable: 25%}"),
        Some(IntOrString::String("25%".into()))
    );
    let o = owned(
        &cluster("disruptionBudget: {enabled: false}"),
        true,
        &Site::new(Selection::Muster),
    )
    .expect("built");
    assert!(o.pod_disruption_budget.is_none());
    for bad in ["0", "'0%'", "'x'", "'150%'", "'+5%'", "null", "4294967296"] {
        let spec: crate::crd::ClusterSpecSpec =
            serde_yaml::from_str(&format!("disruptionBudget: {{maxUnavailable: {bad}}}"))
                .expect("a spec");
        let fields: Vec<String> = crate::validate::validate(&spec)
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(fields, ["spec.disruptionBudget.maxUnavailable"], "{bad}");
    }
}

#[test]
fn the_agents_app_version_is_their_pods_template_revision() {
    let o = owned(&cluster("{}"), true, &Site::new(Selection::Muster)).expect("built");
    let pod = o.stateful_set.spec.template.spec.expect("pod spec");
    let agent = pod
        .containers
        .iter()
        .find(|c| c.name == "agent")
        .expect("agent");
    let version = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "MUSTER_CLUSTER_APP_VERSION")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|f| f.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(
        version.as_deref(),
        Some("metadata.labels['controller-revision-hash']")
    );
}

#[test]
fn the_network_policy_follows_its_spec_and_the_server() {
    let site = Site::new(Selection::Muster);
    let policy = |spec: &str, site: &Site<'_>| {
        owned(&cluster(spec), true, site)
            .expect("built")
            .network_policy
    };
    let kept = policy("{}", &site).expect("by default");
    let spec = kept.spec.expect("a spec");
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    assert_eq!(
        spec.pod_selector.and_then(|s| s.match_labels),
        Some(Selection::Muster.labels(&cluster("{}")))
    );
    assert_eq!(spec.ingress.map(|i| i.len()), Some(3));
    assert!(policy("networkPolicy: {enabled: false}", &site).is_none());
    // A legacy cluster: the policy covers pods with muster's label only (never another
    // release's pod with the instance label), while every pod of the cluster, labelled
    // yet or not, may reach them (the rollout that labels them).
    let legacy = policy("{}", &Site::new(Selection::Legacy))
        .and_then(|p| p.spec)
        .expect("kept");
    assert_eq!(
        legacy.pod_selector.and_then(|s| s.match_labels),
        Some(Selection::Muster.labels(&cluster("{}")))
    );
    let peers = legacy.ingress.expect("rules")[0]
        .from
        .clone()
        .expect("peers");
    assert_eq!(
        peers[0].pod_selector.clone().and_then(|s| s.match_labels),
        Some(Selection::Legacy.labels(&cluster("{}")))
    );
    let old = Site {
        network_policy_supported: false,
        ..site.clone()
    };
    assert!(policy("{}", &old).is_none(), "no port ranges before 1.25");
    let monitored = policy(
        "networkPolicy: {managementFrom: [{namespaceSelector: {matchLabels: {team: monitoring}}}]}",
        &Site {
            open_other_ports: false,
            ..site.clone()
        },
    )
    .expect("kept");
    let rules = monitored.spec.and_then(|s| s.ingress).expect("rules");
    assert_eq!(
        rules.len(),
        3,
        "the agents' pods, the operator, managementFrom"
    );
    assert_eq!(
        yaml(&rules[2]),
        "from:\n- namespaceSelector:\n    matchLabels:\n      team: monitoring\nports:\n- port: 8558\n  protocol: TCP\n"
    );
}

#[test]
fn other_policies_isolate_the_pods_when_they_select_them_for_ingress() {
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let labels: BTreeMap<String, String> = [("muster.dev/cluster", "shop"), ("team", "a")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    let isolates = |spec: &str| {
        let p: NetworkPolicy =
            serde_yaml::from_str(&format!("metadata: {{name: p}}\nspec: {spec}"))
                .expect("a policy");
        network_policy::isolates(&p, &labels)
    };
    assert!(isolates("{podSelector: {}}"), "a default deny");
    assert!(isolates(
        "{podSelector: {matchLabels: {team: a}}, policyTypes: [Ingress, Egress]}"
    ));
    assert!(!isolates("{podSelector: {matchLabels: {team: b}}}"));
    assert!(
        !isolates("{podSelector: {}, policyTypes: [Egress]}"),
        "egress only"
    );
    assert!(isolates(
        "{podSelector: {matchExpressions: [{key: team, operator: In, values: [a, b]}]}}"
    ));
    assert!(!isolates(
        "{podSelector: {matchExpressions: [{key: team, operator: NotIn, values: [a]}]}}"
    ));
    assert!(isolates(
        "{podSelector: {matchExpressions: [{key: gone, operator: DoesNotExist}]}}"
    ));
    assert!(!isolates(
        "{podSelector: {matchExpressions: [{key: gone, operator: Exists}]}}"
    ));
    assert!(
        isolates("{podSelector: {matchExpressions: [{key: team, operator: Someday}]}}"),
        "unknown: assumed to isolate"
    );
}
