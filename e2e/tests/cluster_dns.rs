//! The cluster DNS follows Services and Pods on a real API server, and the agent's own
//! `dns` discovery reads it: SRV per named port with per-pod targets, readiness and
//! `publishNotReadyAddresses` honoured, changes visible within a second.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use e2e::{ClusterDns, ControlPlane};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use node_agent::discovery::Discovery;
use node_agent::discovery::dns::DnsDiscovery;
use serde_json::json;

mod support;
use support::create_headless_service;

const SRV: &str = "_management._tcp.demo.default.svc.cluster.local.";
const HOST: &str = "demo.default.svc.cluster.local.";

fn pod_ip(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 40, 0, i))
}

/// What the agent's discovery sees: (SRV target, port, ip).
async fn srv_view(d: &DnsDiscovery) -> Result<BTreeSet<(String, u16, IpAddr)>, String> {
    let found = d.lookup().await.map_err(|e| e.to_string())?;
    Ok(found
        .targets
        .into_iter()
        .map(|t| (t.host, t.port.unwrap_or(0), t.ip))
        .collect())
}

async fn wait_for(
    what: &str,
    d: &DnsDiscovery,
    expected: &BTreeSet<(String, u16, IpAddr)>,
) -> Duration {
    let start = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(20));
    loop {
        every.tick().await;
        let seen = srv_view(d).await;
        if seen.as_ref() == Ok(expected) {
            let took = start.elapsed();
            println!("{what}: visible in DNS after {} ms", took.as_millis());
            return took;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{what}: expected {expected:?}, DNS says {seen:?}"
        );
    }
}

fn entry(i: u8) -> (String, u16, IpAddr) {
    (
        format!("demo-{i}.demo.default.svc.cluster.local"),
        8558,
        pod_ip(i),
    )
}

async fn set_ready(pods: &Api<Pod>, i: u8, ready: bool) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": pod_ip(i).to_string(),
        "podIPs": [{"ip": pod_ip(i).to_string()}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
    }});
    pods.patch_status(
        &format!("demo-{i}"),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .expect("patch pod status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_follows_services_and_pods() {
    let cp = ControlPlane::start().await.expect("control plane");
    let client = cp.client().await.expect("client");
    let dns = ClusterDns::start(client.clone(), SocketAddr::new(pod_ip(53), 0))
        .await
        .expect("cluster DNS");

    create_headless_service(&client, "default", "demo", false).await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 1..=2u8 {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("demo-{i}"), "labels": {"app": "demo"}},
            "spec": {
                "hostname": format!("demo-{i}"),
                "subdomain": "demo",
                "containers": [{
                    "name": "agent",
                    "image": "muster/muster-agent:test",
                    "ports": [{"name": "management", "containerPort": 8558}],
                }],
            },
        }))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }

    let discovery =
        DnsDiscovery::new(Some(SRV.into()), HOST.into(), Some(dns.addr)).expect("resolver");
    wait_for("no pod ready yet", &discovery, &BTreeSet::new()).await;

    set_ready(&pods, 1, true).await;
    set_ready(&pods, 2, true).await;
    let both: BTreeSet<_> = [entry(1), entry(2)].into();
    let mut latencies = vec![wait_for("two ready pods", &discovery, &both).await];

    set_ready(&pods, 2, false).await;
    latencies.push(wait_for("pod 2 not ready", &discovery, &[entry(1)].into()).await);

    services
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"publishNotReadyAddresses": true}})),
        )
        .await
        .expect("patch service");
    latencies.push(wait_for("publishNotReadyAddresses", &discovery, &both).await);

    // Without a port name the agent asks for A records of the service name.
    let by_name = DnsDiscovery::new(None, HOST.into(), Some(dns.addr)).expect("resolver");
    let ips: BTreeSet<IpAddr> = by_name
        .lookup()
        .await
        .expect("A lookup")
        .targets
        .iter()
        .map(|t| t.ip)
        .collect();
    assert_eq!(ips, [pod_ip(1), pod_ip(2)].into());

    let worst = latencies.iter().max().expect("latencies");
    println!(
        "cluster DNS: slowest change took {} ms to show",
        worst.as_millis()
    );
}
