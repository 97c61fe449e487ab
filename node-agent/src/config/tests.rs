use std::time::Duration;

use super::*;

/// `pairs`, plus permission to run without a cluster key (most tests are not about it).
fn env(pairs: &[(&str, &str)]) -> Environment {
    Environment::from_pairs(
        pairs
            .iter()
            .map(|(k, v)| (*k, *v))
            .chain([("MUSTER_CLUSTER_ALLOW_UNAUTHENTICATED", "true")]),
    )
}

fn pod_env() -> Environment {
    env(&[("POD_IP", "10.0.0.7"), ("POD_NAMESPACE", "shop")])
}

const CONFIG_DISCOVERY: &str = "
bootstrap:
  discovery-method: config
discovery:
  config:
    endpoints: ['10.0.0.7:8558', '10.0.0.8:8558']
";

fn err(yaml: &str, env: &Environment) -> String {
    AgentConfig::from_yaml(yaml, env).unwrap_err().to_string()
}

#[test]
fn reference_yaml_is_exactly_the_defaults() {
    let parsed: Settings = serde_yaml::from_str(REFERENCE_YAML).unwrap();
    assert_eq!(parsed, Settings::default());
}

#[test]
fn reference_yaml_documents_every_key() {
    let reference: serde_yaml::Value = serde_yaml::from_str(REFERENCE_YAML).unwrap();
    for (_, key) in env::all_variables() {
        let mut cur = &reference;
        for seg in key.split('.') {
            cur = cur
                .get(seg)
                .unwrap_or_else(|| panic!("reference.yaml lacks `{key}`"));
        }
    }
}

#[test]
fn minimal_config_takes_akka_defaults_and_the_pod_ip() {
    let c = AgentConfig::from_yaml(CONFIG_DISCOVERY, &pod_env()).unwrap();
    let b = &c.settings.bootstrap;
    assert_eq!(b.stable_margin, Duration::from_secs(5));
    assert_eq!(b.required_contact_point_nr, 2);
    assert_eq!(b.probing_failure_timeout, Duration::from_secs(3));
    assert!(b.new_cluster_enabled && b.contact_with_all_contact_points);
    assert_eq!(c.self_address.to_string(), "muster://muster@10.0.0.7:2552");
    assert_eq!(c.management_ip.to_string(), "10.0.0.7");
    assert_eq!(c.fallback_port, 8558);
    assert_eq!(c.namespace, "shop");
    assert!(c.cluster_key.is_none());
}

#[test]
fn empty_file_and_no_file_mean_defaults() {
    let e = env(&[
        ("POD_IP", "10.0.0.7"),
        ("MUSTER_BOOTSTRAP_DISCOVERY_METHOD", "config"),
        ("MUSTER_DISCOVERY_CONFIG_ENDPOINTS", "10.0.0.7"),
    ]);
    assert!(AgentConfig::from_yaml("", &e).is_ok());
    assert!(AgentConfig::load(None, &e).is_ok());
}

#[test]
fn environment_overrides_every_kind_of_key() {
    let e = env(&[
        ("POD_IP", "10.0.0.7"),
        ("MUSTER_BOOTSTRAP_STABLE_MARGIN", "4s"),
        ("MUSTER_BOOTSTRAP_REQUIRED_CONTACT_POINT_NR", "3"),
        ("MUSTER_BOOTSTRAP_EXPECTED_CONTACT_POINT_NR", "5"),
        ("MUSTER_BOOTSTRAP_FALLBACK_PORT", "9000"),
        ("MUSTER_BOOTSTRAP_NEW_CLUSTER_ENABLED", "false"),
        ("MUSTER_BOOTSTRAP_SERVICE_NAME", "123"),
        ("MUSTER_CLUSTER_ROLES", "frontend, backend"),
        ("MUSTER_CLUSTER_APP_VERSION", "1.10"),
        ("MUSTER_CLUSTER_ALLOW_WEAKLY_UP_MEMBERS", "off"),
        (
            "MUSTER_DISCOVERY_KUBERNETES_API_POD_LABEL_SELECTOR",
            "app.kubernetes.io/name=%s",
        ),
        // Service links Kubernetes injects for a Service called `muster`.
        ("MUSTER_SERVICE_HOST", "10.96.0.10"),
        ("MUSTER_PORT_8558_TCP_ADDR", "10.96.0.10"),
        ("MUSTER_PORT", "tcp://10.96.0.10:8558"),
    ]);
    let c = AgentConfig::from_yaml("", &e).unwrap();
    let b = &c.settings.bootstrap;
    assert_eq!(b.stable_margin, Duration::from_secs(4));
    assert_eq!(b.required_contact_point_nr, 3);
    assert_eq!(b.expected_contact_point_nr, Some(5));
    assert_eq!(b.fallback_port, Some(9000));
    assert_eq!(c.fallback_port, 9000);
    assert!(!b.new_cluster_enabled);
    assert_eq!(b.service_name.as_deref(), Some("123"));
    assert_eq!(c.settings.cluster.roles, vec!["frontend", "backend"]);
    assert_eq!(c.settings.cluster.app_version, "1.10");
    assert_eq!(c.settings.cluster.allow_weakly_up_members, None);
    assert_eq!(
        c.settings.discovery.kubernetes_api.pod_label_selector,
        "app.kubernetes.io/name=%s"
    );
}

#[test]
fn precedence_file_then_pod_ip_then_muster_variable() {
    let file = "cluster:\n  hostname: 10.0.0.1\nbootstrap:\n  service-name: shop\n";
    let c = AgentConfig::from_yaml(file, &env(&[])).unwrap();
    assert_eq!(c.self_address.ip.to_string(), "10.0.0.1");
    let c = AgentConfig::from_yaml(file, &env(&[("POD_IP", "10.0.0.2")])).unwrap();
    assert_eq!(c.self_address.ip.to_string(), "10.0.0.2");
    let c = AgentConfig::from_yaml(
        file,
        &env(&[
            ("POD_IP", "10.0.0.2"),
            ("MUSTER_CLUSTER_HOSTNAME", "10.0.0.3"),
        ]),
    )
    .unwrap();
    assert_eq!(c.self_address.ip.to_string(), "10.0.0.3");
    assert_eq!(
        c.system_name, "shop",
        "cluster name defaults to the service name"
    );
}

#[test]
fn unknown_key_is_named_with_a_suggestion() {
    let e = err("bootstrap:\n  stable-marjin: 5s\n", &pod_env());
    assert!(e.contains("unknown key `stable-marjin`"), "{e}");
    assert!(e.contains("did you mean `stable-margin`"), "{e}");
    let e = err("bootstrapp: {}\n", &pod_env());
    assert!(e.contains("`bootstrapp`") && e.contains("bootstrap"), "{e}");
}

#[test]
fn unknown_variable_is_an_error_with_a_suggestion() {
    let e = err(
        CONFIG_DISCOVERY,
        &env(&[
            ("POD_IP", "10.0.0.7"),
            ("MUSTER_BOOTSTRAP_STABLE_MARGN", "1s"),
        ]),
    );
    assert!(
        e.contains("MUSTER_BOOTSTRAP_STABLE_MARGN") && e.contains("MUSTER_BOOTSTRAP_STABLE_MARGIN"),
        "{e}"
    );
}

#[test]
fn wrong_types_name_key_value_and_what_is_allowed() {
    let e = err("cluster:\n  port: abc\n", &pod_env());
    assert!(
        e.contains("`cluster.port`") && e.contains("abc") && e.contains("1-65535"),
        "{e}"
    );
    let e = err("cluster:\n  port: 70000\n", &pod_env());
    assert!(e.contains("`cluster.port`") && e.contains("70000"), "{e}");
    let e = err("bootstrap:\n  stable-margin: 5\n", &pod_env());
    assert!(
        e.contains("`bootstrap.stable-margin`") && e.contains("`5`") && e.contains("5s"),
        "{e}"
    );
    let e = err("bootstrap:\n  new-cluster-enabled: maybe\n", &pod_env());
    assert!(
        e.contains("`bootstrap.new-cluster-enabled`") && e.contains("maybe"),
        "{e}"
    );
    let e = err("bootstrap:\n  discovery-method: consul\n", &pod_env());
    assert!(
        e.contains("consul") && e.contains("kubernetes-api") && e.contains("dns"),
        "{e}"
    );
    let e = err("cluster:\n  roles: frontend\n", &pod_env());
    assert!(e.contains("`cluster.roles`"), "{e}");
    let e = err("- a\n- b\n", &pod_env());
    assert!(e.contains("mapping"), "{e}");
    let e = err("cluster: [\n", &pod_env());
    assert!(e.contains("not valid YAML"), "{e}");
}

#[test]
fn bad_values_from_the_environment_name_the_variable() {
    let e = err(
        CONFIG_DISCOVERY,
        &env(&[
            ("POD_IP", "10.0.0.7"),
            ("MUSTER_BOOTSTRAP_PROBE_INTERVAL", "fast"),
        ]),
    );
    assert!(
        e.contains("`bootstrap.probe-interval` (from MUSTER_BOOTSTRAP_PROBE_INTERVAL)")
            && e.contains("fast"),
        "{e}"
    );
    let e = err(CONFIG_DISCOVERY, &env(&[("POD_IP", "my-pod")]));
    assert!(
        e.contains("`cluster.hostname` (from POD_IP)") && e.contains("my-pod"),
        "{e}"
    );
}

#[test]
fn range_and_consistency_checks_report_every_problem() {
    let yaml = "
cluster:
  port: 8558
  roles: ['a b']
bootstrap:
  probe-interval-jitter: 1.5
  required-contact-point-nr: 0
  probe-interval: 0s
  discovery-method: dns
discovery:
  dns:
    nameserver: 'not-an-ip'
";
    let e = AgentConfig::from_yaml(yaml, &pod_env()).unwrap_err();
    let keys: Vec<_> = e.problems.iter().filter_map(|p| p.key.clone()).collect();
    for k in [
        "management.port",
        "cluster.roles",
        "bootstrap.probe-interval-jitter",
        "bootstrap.required-contact-point-nr",
        "bootstrap.probe-interval",
        "bootstrap.service-name",
        "discovery.dns.nameserver",
    ] {
        assert!(keys.iter().any(|x| x == k), "missing {k} in {e}");
    }
}

#[test]
fn failure_detector_settings_are_checked_and_set_by_variables() {
    let yaml = "
cluster:
  failure-detector:
    threshold: 0
    monitored-by-nr-of-members: 0
    heartbeat-interval: 0s
";
    let e = AgentConfig::from_yaml(yaml, &pod_env()).unwrap_err();
    let keys: Vec<_> = e.problems.iter().filter_map(|p| p.key.clone()).collect();
    for k in [
        "cluster.failure-detector.threshold",
        "cluster.failure-detector.monitored-by-nr-of-members",
        "cluster.failure-detector.heartbeat-interval",
    ] {
        assert!(keys.iter().any(|x| x == k), "missing {k} in {e}");
    }
    let vars = env(&[
        ("POD_IP", "10.0.0.7"),
        (
            "MUSTER_CLUSTER_FAILURE_DETECTOR_ACCEPTABLE_HEARTBEAT_PAUSE",
            "7s",
        ),
    ]);
    let c = AgentConfig::from_yaml(CONFIG_DISCOVERY, &vars).unwrap();
    assert_eq!(
        c.settings
            .cluster
            .failure_detector
            .acceptable_heartbeat_pause,
        Duration::from_secs(7)
    );
}

#[test]
fn split_brain_resolver_settings_are_checked() {
    let e = err(
        &format!(
            "{CONFIG_DISCOVERY}\ncluster:\n  split-brain-resolver:\n    active-strategy: static-quorum\n"
        ),
        &pod_env(),
    );
    assert!(
        e.contains("static-quorum.quorum-size") && e.contains("cluster size / 2 + 1"),
        "{e}"
    );
    let e = err(
        &format!(
            "{CONFIG_DISCOVERY}\ncluster:\n  split-brain-resolver:\n    down-all-when-unstable: sometimes\n"
        ),
        &pod_env(),
    );
    assert!(
        e.contains("down-all-when-unstable") && e.contains("`on` / `off`"),
        "{e}"
    );
    let e = err(
        &format!(
            "{CONFIG_DISCOVERY}\ncluster:\n  split-brain-resolver:\n    active-strategy: lease-majority\n    lease-majority:\n      lease-name: Shop_SBR\n      release-after: 0s\n"
        ),
        &pod_env(),
    );
    assert!(
        e.contains("lease-majority.lease-name") && e.contains("`Shop_SBR`"),
        "{e}"
    );
    assert!(
        e.contains("lease-majority.release-after") && e.contains("at least 1s"),
        "{e}"
    );
    let e = err(
        &format!(
            "{CONFIG_DISCOVERY}\ncluster:\n  split-brain-resolver:\n    active-strategy: keep-biggest\n"
        ),
        &pod_env(),
    );
    assert!(
        e.contains("keep-biggest") && e.contains("keep-majority"),
        "{e}"
    );
    let sbr = |value: &str| {
        AgentConfig::from_yaml(
            &format!("{CONFIG_DISCOVERY}\ncluster:\n  split-brain-resolver:\n    down-all-when-unstable: {value}\n"),
            &pod_env(),
        )
        .unwrap()
        .settings
        .cluster
        .split_brain_resolver
    };
    assert_eq!(sbr("off").down_all_when_unstable, DownAllWhenUnstable::Off);
    assert_eq!(sbr("'on'").down_all_when_unstable, DownAllWhenUnstable::On);
    assert_eq!(sbr("true").down_all_when_unstable, DownAllWhenUnstable::On);
    assert_eq!(
        sbr("12s").down_all_when_unstable,
        DownAllWhenUnstable::After(Duration::from_secs(12))
    );
    assert_eq!(sbr("off").stable_after, Duration::from_secs(20));
}

#[test]
fn typed_values_name_what_is_allowed() {
    let e = err(
        "bootstrap:\n  protocol: sctp\n  discovery-method: config\ndiscovery:\n  config:\n    endpoints: ['10.0.0.7:8558']\n",
        &pod_env(),
    );
    assert!(
        e.contains("bootstrap.protocol") && e.contains("sctp") && e.contains("tcp"),
        "{e}"
    );
    let vars = env(&[("POD_IP", "10.0.0.7"), ("MUSTER_BOOTSTRAP_PROTOCOL", "udp")]);
    let c = AgentConfig::from_yaml(CONFIG_DISCOVERY, &vars).unwrap();
    assert_eq!(c.settings.bootstrap.protocol, Protocol::Udp);
}

#[test]
fn missing_address_says_how_to_set_it() {
    let e = err(CONFIG_DISCOVERY, &env(&[]));
    assert!(
        e.contains("POD_IP") && e.contains("cluster.hostname"),
        "{e}"
    );
}

#[test]
fn discovery_requirements() {
    let e = err("bootstrap:\n  discovery-method: config\n", &pod_env());
    assert!(e.contains("discovery.config.endpoints"), "{e}");
    let e = err(
        "bootstrap:\n  discovery-method: config\ndiscovery:\n  config:\n    endpoints: ['a b:1']\n",
        &pod_env(),
    );
    assert!(e.contains("`a b:1` is not an endpoint"), "{e}");
    let e = err("", &pod_env());
    assert!(
        e.contains("bootstrap.service-name") && e.contains("%s"),
        "{e}"
    );
    let e = err(
        "bootstrap:\n  discovery-method: aggregate\ndiscovery:\n  aggregate:\n    discovery-methods: [aggregate, dns, dns]\n",
        &pod_env(),
    );
    assert!(
        e.contains("cannot contain `aggregate`") && e.contains("twice"),
        "{e}"
    );
    // Explicit seed nodes need no discovery settings at all.
    assert!(
        AgentConfig::from_yaml("cluster:\n  seed-nodes: ['10.0.0.7:2552']\n", &pod_env()).is_ok()
    );
}

#[test]
fn seed_nodes_parse_and_must_be_in_this_cluster() {
    let c = AgentConfig::from_yaml(
        "cluster:\n  name: shop\n  seed-nodes: ['10.0.0.1:2552', 'muster://shop@10.0.0.2:2552']\n",
        &pod_env(),
    )
    .unwrap();
    assert_eq!(c.seed_nodes.len(), 2);
    assert_eq!(c.seed_nodes[0].to_string(), "muster://shop@10.0.0.1:2552");
    let e = err(
        "cluster:\n  name: shop\n  seed-nodes: ['muster://other@10.0.0.2:2552', 'nonsense']\n",
        &pod_env(),
    );
    assert!(
        e.contains("belongs to cluster `other`") && e.contains("nonsense"),
        "{e}"
    );
}

#[test]
fn cluster_key_file_is_read_trimmed_and_checked() {
    let dir = std::env::temp_dir().join(format!("muster-key-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good");
    std::fs::write(&good, "0123456789abcdef0123\n").unwrap();
    let short = dir.join("short");
    std::fs::write(&short, "tooshort").unwrap();
    let yaml = |p: &std::path::Path| {
        format!(
            "{CONFIG_DISCOVERY}\ncluster:\n  key-file: {}\n",
            p.display()
        )
    };
    let c = AgentConfig::from_yaml(&yaml(&good), &pod_env()).unwrap();
    assert_eq!(
        c.cluster_key.unwrap(),
        crate::base::secret::ClusterKey::new(b"0123456789abcdef0123".to_vec()).unwrap()
    );
    let e = err(&yaml(&short), &pod_env());
    assert!(
        e.contains("cluster.key-file") && e.contains("8 bytes") && e.contains("at least 16"),
        "{e}"
    );
    let e = err(&yaml(&dir.join("missing")), &pod_env());
    assert!(e.contains("cannot read the cluster key file"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tls_needs_all_three_files_and_good_material() {
    let dir = std::env::temp_dir().join(format!("muster-tls-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let err_of = |tls: &str| err(&format!("{CONFIG_DISCOVERY}\ntls:\n{tls}"), &pod_env());
    // Some files but not all: each missing one is named.
    let e = err_of("  cert-file: /x/cert.pem\n");
    assert!(
        e.contains("tls.key-file")
            && e.contains("tls.ca-file")
            && e.contains("TLS needs all three"),
        "{e}"
    );
    let e = err_of("  server-name: cache.muster\n");
    assert!(
        e.contains("tls.server-name") && e.contains("TLS is off"),
        "{e}"
    );
    // Files that cannot be read, or that are no certificates, name the file.
    let files = format!(
        "  cert-file: {d}/cert.pem\n  key-file: {d}/key.pem\n  ca-file: {d}/ca.pem\n",
        d = dir.display()
    );
    let e = err_of(&files);
    assert!(
        e.contains("cannot read tls.cert-file") && e.contains("cert.pem"),
        "{e}"
    );
    for f in ["cert.pem", "key.pem", "ca.pem"] {
        std::fs::write(dir.join(f), "not PEM").unwrap();
    }
    let e = err_of(&files);
    assert!(e.contains("tls.cert-file holds no certificate"), "{e}");
    let e = err_of(&format!("{files}  server-name: 'not a name!'\n"));
    assert!(
        e.contains("tls.server-name") && e.contains("not a DNS name"),
        "{e}"
    );
    let e = err_of(&format!("{files}  reload-interval: 10ms\n"));
    assert!(
        e.contains("tls.reload-interval") && e.contains("at least 100ms"),
        "{e}"
    );
    // Without any of them, TLS is off.
    let c = AgentConfig::from_yaml(CONFIG_DISCOVERY, &pod_env()).unwrap();
    assert!(c.tls.is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn endpoints_parse() {
    assert_eq!(
        parse_endpoint("10.0.0.1:8558").unwrap(),
        ("10.0.0.1".into(), Some(8558))
    );
    assert_eq!(
        parse_endpoint("[fd00::1]:8558").unwrap(),
        ("fd00::1".into(), Some(8558))
    );
    assert_eq!(parse_endpoint("fd00::1").unwrap(), ("fd00::1".into(), None));
    assert_eq!(
        parse_endpoint("pod-0.shop").unwrap(),
        ("pod-0.shop".into(), None)
    );
    assert_eq!(
        parse_endpoint("pod-0.shop:9").unwrap(),
        ("pod-0.shop".into(), Some(9))
    );
    for bad in ["", "a:b", "a:0", "-:", "a..b"] {
        assert!(parse_endpoint(bad).is_err(), "{bad}");
    }
}

#[test]
fn changes_are_the_keys_that_differ_from_the_defaults_and_load_back() {
    assert_eq!(
        serde_yaml::to_string(&Settings::default().changes()).unwrap(),
        "{}\n"
    );
    let mut s = Settings::default();
    s.cluster.name = Some("shop".into());
    s.cluster.failure_detector.threshold = 12.0;
    s.cluster.split_brain_resolver.down_all_when_unstable = DownAllWhenUnstable::Off;
    s.bootstrap.required_contact_point_nr = 2; // the default: not written
    s.discovery.config.endpoints = vec!["10.0.0.7:8558".into()];
    s.bootstrap.discovery_method = DiscoveryMethod::Config;
    let yaml = serde_yaml::to_string(&s.changes()).unwrap();
    assert_eq!(
        yaml,
        "cluster:\n  name: shop\n  failure-detector:\n    threshold: 12.0\n  split-brain-resolver:\n    down-all-when-unstable: off\nbootstrap:\n  discovery-method: config\ndiscovery:\n  config:\n    endpoints:\n    - 10.0.0.7:8558\n"
    );
    let loaded = AgentConfig::from_yaml(&yaml, &pod_env()).unwrap();
    s.cluster.hostname = Some("10.0.0.7".into()); // POD_IP
    s.cluster.allow_unauthenticated = true; // pod_env()
    assert_eq!(
        loaded.settings, s,
        "the changes and the defaults give the settings back"
    );
}

/// Finding 15.3: settings that void the formation proof were accepted.
#[test]
fn a_stable_margin_not_longer_than_the_probing_failure_timeout_is_refused() {
    for (margin, timeout) in [("0s", "3s"), ("3s", "3s"), ("2s", "3s"), ("1s", "5s")] {
        let e = err(
            &format!(
                "bootstrap:\n  stable-margin: {margin}\n  probing-failure-timeout: {timeout}\n"
            ),
            &pod_env(),
        );
        assert!(
            e.contains("`bootstrap.stable-margin`")
                && e.contains("bootstrap.probing-failure-timeout")
                && e.contains("longer"),
            "{margin} vs {timeout}: {e}"
        );
    }
    let ok = "bootstrap:\n  discovery-method: config\n  stable-margin: 3100ms\n  probing-failure-timeout: 3s\ndiscovery:\n  config:\n    endpoints: ['10.0.0.7:8558']\n";
    assert!(AgentConfig::from_yaml(ok, &pod_env()).is_ok());
}

#[test]
fn the_expected_number_of_contact_points_is_at_least_the_required_number() {
    let e = err(
        "bootstrap:\n  required-contact-point-nr: 3\n  expected-contact-point-nr: 2\n",
        &pod_env(),
    );
    assert!(
        e.contains("`bootstrap.expected-contact-point-nr`")
            && e.contains("required-contact-point-nr"),
        "{e}"
    );
    let e = err("bootstrap:\n  expected-contact-point-nr: 0\n", &pod_env());
    assert!(e.contains("`bootstrap.expected-contact-point-nr`"), "{e}");
    let ok = "bootstrap:\n  discovery-method: config\n  required-contact-point-nr: 3\n  expected-contact-point-nr: 3\ndiscovery:\n  config:\n    endpoints: ['10.0.0.7:8558']\n";
    assert!(AgentConfig::from_yaml(ok, &pod_env()).is_ok());
}

/// Finding 15.8: without a key the agent only warned, and one unsigned frame could down
/// any member.
#[test]
fn a_node_without_a_cluster_key_is_refused_unless_that_is_asked_for() {
    let bare = Environment::from_pairs([("POD_IP", "10.0.0.7")]);
    let yaml = "bootstrap:\n  discovery-method: config\ndiscovery:\n  config:\n    endpoints: ['10.0.0.7:8558']\n";
    let e = AgentConfig::from_yaml(yaml, &bare).unwrap_err().to_string();
    assert!(
        e.contains("`cluster.key-file`")
            && e.contains("is required")
            && e.contains("cluster.allow-unauthenticated"),
        "{e}"
    );
    let allowed = format!("cluster:\n  allow-unauthenticated: true\n{yaml}");
    assert!(AgentConfig::from_yaml(&allowed, &bare).is_ok());
}

#[test]
fn limits_that_would_wedge_an_agent_are_refused() {
    let yaml = format!(
        "{CONFIG_DISCOVERY}
cluster:
  allow-weakly-up-members: 0s
  shutdown-after-unsuccessful-join-seed-nodes: 0s
management:
  max-connections: 1
  header-read-timeout: 1ms
"
    );
    let e = AgentConfig::from_yaml(&yaml, &pod_env()).unwrap_err();
    let keys: Vec<_> = e.problems.iter().filter_map(|p| p.key.clone()).collect();
    assert_eq!(
        keys,
        [
            "cluster.allow-weakly-up-members",
            "cluster.shutdown-after-unsuccessful-join-seed-nodes",
            "management.max-connections",
            "management.header-read-timeout",
        ],
        "{e}"
    );
    // `off` is how to turn the first two off.
    let off = format!(
        "{CONFIG_DISCOVERY}\ncluster: {{allow-weakly-up-members: 'off', shutdown-after-unsuccessful-join-seed-nodes: 'off'}}"
    );
    if let Err(e) = AgentConfig::from_yaml(&off, &pod_env()) {
        panic!("{e}");
    }
}

#[test]
fn ready_states_are_member_statuses_and_never_none() {
    let e = env(&[
        ("POD_IP", "10.0.0.7"),
        ("MUSTER_MANAGEMENT_READY_STATES", "Up, Joining"),
    ]);
    let c = AgentConfig::from_yaml(CONFIG_DISCOVERY, &e).unwrap();
    assert_eq!(
        c.settings.management.ready_states,
        [
            crate::base::member::MemberStatus::Up,
            crate::base::member::MemberStatus::Joining
        ]
    );
    let e = err(
        &format!("{CONFIG_DISCOVERY}management:\n  ready-states: []\n"),
        &pod_env(),
    );
    assert!(
        e.contains("management.ready-states") && e.contains("is empty"),
        "{e}"
    );
    let e = err(
        &format!("{CONFIG_DISCOVERY}management:\n  ready-states: [Up, Ready]\n"),
        &pod_env(),
    );
    assert!(e.contains("ready-states") && e.contains("Ready"), "{e}");
    let e = err(
        &format!("{CONFIG_DISCOVERY}management:\n  ready-states: [Removed]\n"),
        &pod_env(),
    );
    assert!(e.contains("Removed is no state"), "{e}");
}
