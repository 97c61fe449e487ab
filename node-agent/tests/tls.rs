//! TLS on both ports with real `muster-agent` processes: a cluster forms over TLS; the
//! management port serves HTTPS only and answers a probe that checks no certificate
//! (the kubelet's); a peer that holds the cluster key but no certificate of the
//! cluster's CA never gets into the cluster; and the CA rotates under a running cluster
//! — trust both, move each agent to the new CA, drop the old — with no split, no member
//! downed, and a newcomer that knows only the new CA joining afterwards.

mod support;

use std::sync::Arc;
use std::time::Duration;

use node_agent::api::{ManagementClient, TlsInUse};
use node_agent::base::member::MemberStatus;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::certs::{TestCa, TlsPaths};
use support::*;

const NAME: &str = "demo.tls-test.muster";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A management client that trusts `cas` and checks agents against [`NAME`].
fn tls_client(cas: &[&TestCa]) -> ManagementClient {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
            roots.add(c.expect("CA pem")).expect("CA");
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    ManagementClient::new(Duration::from_secs(2))
        .with_tls((Arc::new(config), ServerName::try_from(NAME).expect("name")))
}

// The process kubelet's probes (no crate dependency: e2e depends on node-agent).
#[allow(dead_code)]
#[path = "../../e2e/src/node/probes.rs"]
mod probes;

/// Writes agent `i`'s config: the shared config-discovery settings of `base` and its
/// own `tls:` section.
fn agent_config(work: &Workdir, base: &str, i: u8) -> (std::path::PathBuf, TlsPaths) {
    let paths = TlsPaths::new(&work.path, &format!("agent-{i}"));
    let config = work.config_named(
        &format!("agent-{i}"),
        &format!("{base}{}", paths.yaml(NAME)),
    );
    (config, paths)
}

fn base_config(work: &Workdir, subnet: (u8, u8), n: u8, required: u8) -> String {
    let endpoints: Vec<String> = (1..=n)
        .map(|i| format!("'{}:{MANAGEMENT_PORT}'", ip(subnet, i)))
        .collect();
    format!(
        "cluster:\n  key-file: {key}\nbootstrap:\n  service-name: demo\n  discovery-method: config\n  required-contact-point-nr: {required}\n  expected-contact-point-nr: {required}\ndiscovery:\n  config:\n    endpoints: [{endpoints}]\n",
        key = work.key_file().display(),
        endpoints = endpoints.join(", "),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_form_over_tls_and_a_peer_without_the_clusters_certificate_stays_out() {
    let subnet = (25, 1);
    let work = Workdir::new("tls-form");
    let (ca, stranger) = (TestCa::new("cluster-ca"), TestCa::new("other-ca"));
    // Three contact points; the outsider, started later, knows all four.
    let base = base_config(&work, subnet, 3, 3);
    let mut agents = Vec::new();
    for i in 1..=3 {
        let (config, paths) = agent_config(&work, &base, i);
        paths.write(&ca.issue(NAME), &[&ca.pem()]);
        agents.push(AgentProcess::start(
            &work,
            &config,
            ip(subnet, i),
            &format!("agent-{i}"),
        ));
    }
    let client = tls_client(&[&ca]);
    let views = wait_for_one_cluster_with(&client, &agents, 3).await;
    assert_eq!(views[0].members.len(), 3);

    // The certificate's end shows in the status and the metrics (TestCa: 2099).
    let used = in_use(&client, &agents[0])
        .await
        .expect("tls in the status");
    assert_eq!(used.not_after.as_deref(), Some("2099-12-31T00:00:00Z"));
    let text = client
        .metrics(agents[0].management())
        .await
        .expect("metrics");
    assert_eq!(
        metric(
            &text,
            "muster_tls_certificate_not_after_seconds{file=\"tls.cert-file\"}"
        ),
        Some(4_102_358_400.0)
    );

    // Plain HTTP gets nothing from the management port.
    let plain = ManagementClient::new(Duration::from_secs(2));
    let e = plain
        .get(agents[0].management(), "/ready")
        .await
        .expect_err("plain HTTP must not be served");
    println!("plain HTTP to a TLS agent: {e}");
    // A client that trusts another CA refuses the agent's certificate.
    assert!(
        tls_client(&[&stranger])
            .get(agents[0].management(), "/alive")
            .await
            .is_err()
    );
    // The kubelet's probe: HTTPS, no certificate presented, none checked.
    let ready = probes::ProbeSpec {
        check: probes::Check::Http {
            port: MANAGEMENT_PORT,
            path: "/ready".into(),
            tls: true,
        },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        success_threshold: 1,
        failure_threshold: 1,
    };
    probes::run(agents[0].ip, &ready)
        .await
        .expect("an unchecked HTTPS probe is answered 200");

    // The outsider has the cluster key and trusts the cluster's CA (so it can read
    // the seed nodes and ask to join), but its own certificate is from another CA.
    let (config, paths) = agent_config(&work, &base_config(&work, subnet, 4, 3), 4);
    paths.write(&stranger.issue(NAME), &[&stranger.pem(), &ca.pem()]);
    let outsider = AgentProcess::start(&work, &config, ip(subnet, 4), "outsider");
    // Its joins are refused at the TLS handshake of the cluster port, counted there.
    let refused = wait_for_refused_handshakes(&client, &agents, 0.0).await;
    println!("handshakes refused from the outsider: {refused}");
    let outsider_status = tls_client(&[&stranger])
        .bootstrap_status(outsider.management())
        .await
        .expect("the outsider's status");
    assert_ne!(
        outsider_status.self_status,
        Some(MemberStatus::Up),
        "{outsider_status:?}"
    );
    for a in &agents {
        let m = client.members(a.management()).await.expect("members");
        assert_eq!(m.members.len(), 3, "{}: {:?}", a.name, m.members);
        assert!(
            m.members.iter().all(|x| x.node.ip != outsider.ip),
            "{}",
            a.name
        );
    }
}

/// Cluster-port TLS handshakes the agents have refused, in all.
async fn refused_handshakes(client: &ManagementClient, agents: &[AgentProcess]) -> f64 {
    let mut total = 0.0;
    for a in agents {
        let text = client.metrics(a.management()).await.unwrap_or_default();
        total += metric(
            &text,
            "muster_transport_messages_dropped_total{reason=\"tls_handshake\"}",
        )
        .unwrap_or(0.0);
    }
    total
}

/// Waits until the agents have refused at least 3 handshakes more than `before`.
async fn wait_for_refused_handshakes(
    client: &ManagementClient,
    agents: &[AgentProcess],
    before: f64,
) -> f64 {
    eventually(
        "the members refuse the peer's TLS handshakes",
        Duration::from_secs(30),
        || async {
            let total = refused_handshakes(client, agents).await;
            if total >= before + 3.0 {
                Ok(total - before)
            } else {
                Err(format!("{} handshakes refused so far", total - before))
            }
        },
    )
    .await
}

/// What agent `a` reports it uses.
async fn in_use(client: &ManagementClient, a: &AgentProcess) -> Result<TlsInUse, String> {
    client
        .bootstrap_status(a.management())
        .await
        .map_err(|e| format!("{}: {e}", a.name))?
        .tls
        .ok_or_else(|| format!("{}: no tls in /bootstrap/status", a.name))
}

/// Waits until every agent reports `trusted` CAs and a certificate issued by the
/// `expected` fingerprint list's owner (checked by the caller through `certificate`).
async fn wait_until_all_use(
    client: &ManagementClient,
    agents: &[AgentProcess],
    certificates: &[String],
    trusted: &[String],
    what: &str,
) {
    eventually(what, Duration::from_secs(20), || async {
        for (a, cert) in agents.iter().zip(certificates) {
            let u = in_use(client, a).await?;
            if &u.certificate != cert || u.trusted != trusted {
                return Err(format!("{}: {u:?}", a.name));
            }
        }
        Ok(())
    })
    .await;
}

fn fingerprint_of(pem: &str) -> String {
    let der = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("pem");
    node_agent::tls::fingerprint(&der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_rotates_under_a_running_cluster_without_a_split_or_a_downed_member() {
    let subnet = (25, 2);
    let work = Workdir::new("tls-rotate");
    let (old, new) = (TestCa::new("old-ca"), TestCa::new("new-ca"));
    let base = base_config(&work, subnet, 3, 3);
    let (mut agents, mut files) = (Vec::new(), Vec::new());
    for i in 1..=3 {
        let (config, paths) = agent_config(&work, &base, i);
        paths.write(&old.issue(NAME), &[&old.pem()]);
        agents.push(AgentProcess::start(
            &work,
            &config,
            ip(subnet, i),
            &format!("agent-{i}"),
        ));
        files.push(paths);
    }
    // Trusting both CAs, the test reads the agents whichever certificate they serve.
    let client = tls_client(&[&old, &new]);
    let before = wait_for_one_cluster_with(&client, &agents, 3)
        .await
        .remove(0);
    let (old_fp, new_fp) = (fingerprint_of(&old.pem()), fingerprint_of(&new.pem()));
    let leaf_fp = |leaf: &support::certs::Leaf| fingerprint_of(&leaf.cert);

    // 1. Every agent trusts old and new; each keeps its certificate of the old CA.
    let mut certs = Vec::new();
    for (a, paths) in agents.iter().zip(&files) {
        let current = in_use(&client, a).await.expect("in use").certificate;
        let cert = std::fs::read_to_string(&paths.cert).expect("cert");
        let key = std::fs::read_to_string(&paths.key).expect("key");
        paths.write(
            &support::certs::Leaf { cert, key },
            &[&old.pem(), &new.pem()],
        );
        certs.push(current);
    }
    let both = [old_fp, new_fp.clone()];
    wait_until_all_use(
        &client,
        &agents,
        &certs,
        &both,
        "every agent trusts both CAs",
    )
    .await;
    same_members_all_up(&client, &agents, &before).await;

    // 2. One agent after another moves to a certificate of the new CA; meanwhile some
    // serve old and some new certificates, and every connection still works.
    let mut certs = Vec::new();
    for (i, (a, paths)) in agents.iter().zip(&files).enumerate() {
        let leaf = new.issue(NAME);
        paths.write(&leaf, &[&old.pem(), &new.pem()]);
        certs.push(leaf_fp(&leaf));
        wait_until_all_use(
            &client,
            std::slice::from_ref(a),
            &certs[i..],
            &both,
            "the agent serves its new certificate",
        )
        .await;
        fresh_heartbeats(&client, &agents).await;
        same_members_all_up(&client, &agents, &before).await;
    }

    // 3. One agent after another drops the old CA. Each closes its connections when
    // it does (a peer it authenticated with the old CA must not stay), so the members
    // connect anew, with certificates of the new CA, while the others still trust both.
    for (i, (a, paths)) in agents.iter().zip(&files).enumerate() {
        let cert = std::fs::read_to_string(&paths.cert).expect("cert");
        let key = std::fs::read_to_string(&paths.key).expect("key");
        paths.write(&support::certs::Leaf { cert, key }, &[&new.pem()]);
        wait_until_all_use(
            &client,
            std::slice::from_ref(a),
            &certs[i..],
            std::slice::from_ref(&new_fp),
            "the agent trusts only the new CA",
        )
        .await;
        fresh_heartbeats(&client, &agents).await;
        same_members_all_up(&client, &agents, &before).await;
    }

    // New connections in both directions need the new material: a newcomer that
    // knows only the new CA joins, and every member gossips with it.
    let (config, paths) = agent_config(&work, &base_config(&work, subnet, 4, 3), 4);
    paths.write(&new.issue(NAME), &[&new.pem()]);
    agents.push(AgentProcess::start(
        &work,
        &config,
        ip(subnet, 4),
        "agent-4",
    ));
    let after = wait_for_one_cluster_with(&client, &agents, 4)
        .await
        .remove(0);
    still_members(&before, &after);
    // A peer that still has a certificate of the dropped CA (and trusts both) is
    // refused at the cluster port's handshake and stays out.
    let refused_before = refused_handshakes(&client, &agents).await;
    let (config, paths) = agent_config(&work, &base_config(&work, subnet, 5, 3), 5);
    paths.write(&old.issue(NAME), &[&old.pem(), &new.pem()]);
    let stale = AgentProcess::start(&work, &config, ip(subnet, 5), "stale");
    let refused = wait_for_refused_handshakes(&client, &agents, refused_before).await;
    println!("handshakes refused from the peer of the dropped CA: {refused}");
    for a in &agents {
        let m = client.members(a.management()).await.expect("members");
        assert_eq!(m.members.len(), 4, "{}: {:?}", a.name, m.members);
        assert!(
            m.members.iter().all(|x| x.node.ip != stale.ip),
            "{}",
            a.name
        );
    }
    // And a client that trusts only the old CA refuses the agents' certificates.
    assert!(
        tls_client(&[&old])
            .get(agents[0].management(), "/alive")
            .await
            .is_err()
    );
}
