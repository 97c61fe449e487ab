//! Bad input from the network and from the user: a real agent process drops and counts
//! it, or refuses to start with a message that says what to fix.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use node_agent::api::seed_nodes::{self, NONCE_HEADER, SIGNATURE_HEADER};
use node_agent::base::address::{NodeAddress, UniqueAddress};
use node_agent::base::member::MemberStatus;
use node_agent::base::secret::ClusterKey;
use node_agent::membership::gossip::Gossip;
use node_agent::membership::member::{Member, MemberInfo};
use node_agent::membership::messages::{Envelope, Message};
use node_agent::transport::frame::{self, GREETING_LEN, HEADER_LEN, Sealer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

/// The test cluster key: the bytes of the key file.
fn test_key() -> ClusterKey {
    ClusterKey::new(KEY_HEX.as_bytes().to_vec()).expect("a valid key")
}

/// The value of header `name` in a raw request head.
fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A request's head (up to the blank line), or `None` if the connection ends first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    Some(String::from_utf8_lossy(&request).into_owned())
}

/// A peer whose management port answers every request with `body` (HTTP 200, JSON),
/// signed with the test cluster key when `signed`.
async fn fake_peer(ip: IpAddr, body: Vec<u8>, signed: bool) {
    fake_peer_with(ip, move |_| body.clone(), signed).await;
}

/// A peer that answers each request with what `answer` makes of the request's head.
async fn fake_peer_with<F>(ip: IpAddr, answer: F, signed: bool)
where
    F: Fn(&str) -> Vec<u8> + Send + Sync + 'static,
{
    let answer = std::sync::Arc::new(answer);
    let listener = TcpListener::bind(SocketAddr::new(ip, MANAGEMENT_PORT))
        .await
        .expect("bind the fake peer");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            tokio::spawn(async move {
                let Some(request) = read_head(&mut stream).await else {
                    return;
                };
                let body = answer(&request);
                let signature = header_value(&request, NONCE_HEADER)
                    .filter(|_| signed)
                    .map(|nonce| {
                        format!(
                            "{SIGNATURE_HEADER}: {}\r\n",
                            seed_nodes::sign(&test_key(), &nonce, &body)
                        )
                    })
                    .unwrap_or_default();
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{signature}connection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_seed_node_answers_are_counted_and_shown() {
    let subnet = (22, 1);
    let work = Workdir::new("bad-seed-nodes");
    let fakes: Vec<(u8, Vec<u8>, &str)> = vec![
        (1, b"{\"selfNode\": ".to_vec(), "malformed answer"),
        (2, vec![b' '; 1024 * 1024], "larger than"),
        (
            3,
            br#"{"selfNode":"muster://other@127.22.1.3:2552","seedNodes":[]}"#.to_vec(),
            "another cluster",
        ),
        (
            4,
            br#"{"selfNode":"not an address","seedNodes":[]}"#.to_vec(),
            "malformed answer",
        ),
        (
            5,
            br#"{"selfNode":"muster://demo@127.22.1.5:2552","seedNodes":[]}"#.to_vec(),
            "not signed",
        ),
    ];
    for (host, body, _) in &fakes {
        fake_peer(ip(subnet, *host), body.clone(), *host != 5).await;
    }
    let agent_ip = ip(subnet, 10);
    let endpoints: Vec<String> = [1, 2, 3, 4, 5, 10]
        .iter()
        .map(|h| format!("'{}:{MANAGEMENT_PORT}'", ip(subnet, *h)))
        .collect();
    let config = work.config(&format!(
        "cluster:\n  key-file: {}\nbootstrap:\n  service-name: demo\n  discovery-method: config\n  required-contact-point-nr: 2\n  expected-contact-point-nr: 2\ndiscovery:\n  config:\n    endpoints: [{}]\n",
        work.key_file().display(),
        endpoints.join(", ")
    ));
    let mut agent = AgentProcess::start(&work, &config, agent_ip, "agent");

    let status = eventually(
        "every bad answer shown in /bootstrap/status",
        Duration::from_secs(30),
        || async {
            let s = json(management(agent_ip), "/bootstrap/status").await?;
            let points = s["bootstrap"]["contactPoints"]
                .as_array()
                .ok_or("no contact points yet")?;
            for (host, _, error) in &fakes {
                let cp = format!("{}:{MANAGEMENT_PORT}", ip(subnet, *host));
                let p = points
                    .iter()
                    .find(|p| p["contactPoint"] == cp.as_str())
                    .ok_or(format!("{cp} not listed: {s}"))?;
                let last = p["lastError"].as_str().unwrap_or_default();
                if !last.contains(error) || !p["answer"].is_null() {
                    return Err(format!("{cp}: lastError {last:?}, expected {error:?}: {s}"));
                }
            }
            Ok(s)
        },
    )
    .await;
    // Bad answers never count as answers: no cluster is formed on them.
    assert_eq!(status["phase"], "probing", "{status}");
    assert_eq!(
        status["bootstrap"]["decision"]["decision"], "wait",
        "{status}"
    );

    let m = metrics(management(agent_ip)).await.expect("metrics");
    let malformed =
        metric(&m, r#"muster_bootstrap_probes_total{result="malformed"}"#).unwrap_or(0.0);
    assert!(
        malformed >= 4.0,
        "malformed probes counted: {malformed}\n{m}"
    );
    let unauthenticated = metric(
        &m,
        r#"muster_bootstrap_probes_total{result="unauthenticated"}"#,
    )
    .unwrap_or(0.0);
    assert!(
        unauthenticated >= 1.0,
        "unsigned answers counted: {unauthenticated}\n{m}"
    );
    assert_eq!(agent.exited(), None, "the agent keeps running");
    let (code, _) = client()
        .get(management(agent_ip), "/alive")
        .await
        .expect("/alive");
    assert_eq!(code, 200);
}

/// A contact point that relays each probe to the prober's own management port (named
/// in the `muster-prober` header) and returns that agent's own, signed answer.
async fn fake_relay(ip: IpAddr) {
    let listener = TcpListener::bind(SocketAddr::new(ip, MANAGEMENT_PORT))
        .await
        .expect("bind the relay");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let Some(head) = read_head(&mut stream).await else {
                    return;
                };
                let Some(prober) =
                    header_value(&head, "muster-prober").and_then(|p| p.parse::<SocketAddr>().ok())
                else {
                    return;
                };
                let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
                    return;
                };
                let _ = socket.bind(SocketAddr::new(ip, 0));
                let Ok(mut upstream) = socket.connect(prober).await else {
                    return;
                };
                let head = head.replacen("\r\n\r\n", "\r\nconnection: close\r\n\r\n", 1);
                if upstream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let mut answer = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), upstream.read_to_end(&mut answer))
                        .await;
                let _ = stream.write_all(&answer).await;
            });
        }
    });
}

/// Finding 15.2: a contact point answering every prober with `selfNode` = the prober's
/// own address made three agents with the cluster key form three clusters, and one
/// listing 2,500 seed nodes made each open thousands of connections. Now answers
/// without the cluster key's signature never count, "self" is never taken from an
/// answer, and the three agents form one cluster next to the two liars.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_contact_points_without_the_key_do_not_split_the_cluster() {
    let subnet = (22, 4);
    let work = Workdir::new("lying-contact-points");
    // The liars have the lowest addresses.
    fake_peer_with(
        ip(subnet, 1),
        |request| {
            let prober = header_value(request, "muster-prober").unwrap_or_default();
            let host = prober.rsplit_once(':').map_or("", |(h, _)| h).to_owned();
            format!(r#"{{"selfNode":"muster://demo@{host}:2552","seedNodes":[]}}"#).into_bytes()
        },
        false,
    )
    .await;
    let many: Vec<String> = (1..=2500u32)
        .map(|k| {
            let [_, _, x, y] = k.to_be_bytes();
            format!(r#"{{"node":"muster://demo@10.9.{x}.{y}:2552","nodeUid":1,"status":"Up","roles":[]}}"#)
        })
        .collect();
    let many = format!(
        r#"{{"selfNode":"muster://demo@{}:2552","seedNodes":[{}]}}"#,
        ip(subnet, 2),
        many.join(",")
    )
    .into_bytes();
    fake_peer(ip(subnet, 2), many, false).await;
    // Review finding: a liar without the key that relays each probe to the prober
    // itself got the prober's own signed answer, and the prober took it for itself.
    fake_relay(ip(subnet, 3)).await;

    let hosts = [1u8, 2, 3, 10, 11, 12];
    let endpoints: Vec<String> = hosts
        .iter()
        .map(|h| format!("'{}:{MANAGEMENT_PORT}'", ip(subnet, *h)))
        .collect();
    let config = work.config(&format!(
        "cluster:\n  key-file: {}\nbootstrap:\n  service-name: demo\n  discovery-method: config\n  required-contact-point-nr: 3\n  expected-contact-point-nr: 3\n  contact-with-all-contact-points: false\ndiscovery:\n  config:\n    endpoints: [{}]\n",
        work.key_file().display(),
        endpoints.join(", ")
    ));
    let agents: Vec<AgentProcess> = [10u8, 11, 12]
        .iter()
        .map(|h| AgentProcess::start(&work, &config, ip(subnet, *h), &format!("agent-{h}")))
        .collect();
    let views = wait_for_one_cluster(&agents, 3).await;
    assert_eq!(views[0].members.len(), 3);
    let mut formed = vec![];
    for a in &agents {
        let s = json(a.management(), "/bootstrap/status")
            .await
            .expect("status");
        if s["bootstrap"]["instruction"] == "form" {
            formed.push(a.name.clone());
        }
        for (liar, error) in [
            (1, "not signed"),
            (2, "not signed"),
            (3, "not at this contact point's address"),
        ] {
            let cp = format!("{}:{MANAGEMENT_PORT}", ip(subnet, liar));
            let p = s["bootstrap"]["contactPoints"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["contactPoint"] == cp.as_str()))
                .unwrap_or_else(|| panic!("{}: {cp} listed: {s}", a.name));
            assert!(
                p["lastError"].as_str().is_some_and(|e| e.contains(error))
                    && p["answer"].is_null()
                    && p["self"] == false,
                "{}: the liar {cp} never counts ({error}): {s}",
                a.name
            );
        }
    }
    assert_eq!(
        formed,
        vec!["agent-10".to_owned()],
        "exactly the lowest agent formed"
    );
}

async fn greeted(addr: SocketAddr) -> (TcpStream, [u8; frame::NONCE_LEN]) {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to the cluster port");
    let mut g = [0u8; GREETING_LEN];
    s.read_exact(&mut g).await.expect("greeting");
    let nonce = frame::parse_greeting(&g).expect("a muster greeting");
    (s, nonce)
}

/// Waits until the agent has closed the connection (it does at the first bad frame).
async fn closed_by_agent(mut s: TcpStream) {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the agent closes a connection after a bad frame");
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "nothing is sent back on a cluster connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_unsigned_and_replayed_cluster_messages_are_dropped_and_counted() {
    let subnet = (22, 2);
    let work = Workdir::new("bad-frames");
    let agent_ip = ip(subnet, 1);
    let config = work.config(&format!(
        "cluster:\n  key-file: {}\nbootstrap:\n  service-name: demo\n  discovery-method: config\n  required-contact-point-nr: 1\n  expected-contact-point-nr: 1\ndiscovery:\n  config:\n    endpoints: ['{}:{MANAGEMENT_PORT}']\n",
        work.key_file().display(),
        agent_ip
    ));
    let mut agent = AgentProcess::start(&work, &config, agent_ip, "agent");
    wait_for_one_cluster(std::slice::from_ref(&agent), 1).await;
    let cluster = SocketAddr::new(agent_ip, CLUSTER_PORT);
    let key = ClusterKey::new(KEY_HEX.as_bytes().to_vec()).expect("key");

    // Not the protocol at all: an HTTP request on the cluster port.
    let (mut s, _) = greeted(cluster).await;
    s.write_all(b"GET / HTTP/1.1\r\nhost: muster.example\r\naccept: */*\r\n\r\n")
        .await
        .expect("write");
    closed_by_agent(s).await;

    // A header announcing more than the frame limit.
    let (mut s, _) = greeted(cluster).await;
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&(64u32 << 20).to_be_bytes());
    s.write_all(&header).await.expect("write");
    closed_by_agent(s).await;

    // Unsigned: a well-formed frame without a tag.
    let (mut s, nonce) = greeted(cluster).await;
    let unsigned = Sealer::new(None, nonce).seal(b"{}");
    s.write_all(&unsigned).await.expect("write");
    closed_by_agent(s).await;

    // Signed with the cluster key but not a message: authenticated, then dropped as
    // malformed; the connection stays. The same frame again on it is a replay.
    let (mut s, nonce) = greeted(cluster).await;
    let recorded = Sealer::new(Some(key.clone()), nonce).seal(b"not json");
    s.write_all(&recorded).await.expect("write");
    s.write_all(&recorded).await.expect("write");
    closed_by_agent(s).await;
    // ... and replayed on a new connection.
    let (mut s, _) = greeted(cluster).await;
    s.write_all(&recorded).await.expect("write");
    closed_by_agent(s).await;

    // Signed with another key.
    let (mut s, nonce) = greeted(cluster).await;
    let other = ClusterKey::new(b"another-key-of-enough-bytes".to_vec()).expect("key");
    s.write_all(&Sealer::new(Some(other), nonce).seal(b"{}"))
        .await
        .expect("write");
    closed_by_agent(s).await;

    // Finding 15.5: a gossip (here signed, as from an insider or with
    // allow-unauthenticated) whose member has upNumber 4294967295, next to a joining
    // member: the membership task panicked on overflow moving it Up, while /alive and
    // /ready went on answering. Now it is dropped as implausible.
    let me = client()
        .members(management(agent_ip))
        .await
        .expect("members")
        .members
        .into_iter()
        .next()
        .expect("the agent is a member");
    let me = UniqueAddress::new(me.node, me.node_uid);
    let intruder = UniqueAddress::new(
        NodeAddress::new(me.address.system.clone(), ip(subnet, 9), CLUSTER_PORT),
        9,
    );
    let info = MemberInfo {
        roles: Default::default(),
        app_version: "1".into(),
    };
    let mut top = Member::joining(me.clone(), info.clone());
    top.status = MemberStatus::Up;
    top.up_number = u32::MAX;
    // A version far ahead of the agent's, seen by both: convergence, so the agent, as
    // leader, at once moves the joining intruder Up with the next upNumber.
    let mut ahead = Gossip::default();
    for _ in 0..1000 {
        ahead.bump(&intruder);
    }
    let gossip = Gossip::from_parts(
        [top, Member::joining(intruder.clone(), info)],
        Default::default(),
        ahead.version().clone(),
        [me.clone(), intruder.clone()].into(),
    );
    let poisoned = serde_json::to_vec(&Envelope {
        from: intruder,
        to: me.address.clone(),
        to_uid: Some(me.uid),
        message: Message::Gossip { gossip },
    })
    .expect("json");
    let (mut s, nonce) = greeted(cluster).await;
    s.write_all(&Sealer::new(Some(key.clone()), nonce).seal(&poisoned))
        .await
        .expect("write");

    let dropped = |m: &str, reason: &str| {
        metric(
            m,
            &format!("muster_transport_messages_dropped_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let m = eventually("every drop counted", Duration::from_secs(10), || async {
        let m = metrics(management(agent_ip)).await?;
        let counts = [
            ("oversized", 2.0),
            ("unsigned", 1.0),
            ("malformed", 1.0),
            ("bad_signature", 3.0),
            ("implausible", 1.0),
        ];
        for (reason, at_least) in counts {
            if dropped(&m, reason) < at_least {
                return Err(format!(
                    "{reason}: {} < {at_least}\n{m}",
                    dropped(&m, reason)
                ));
            }
        }
        Ok(m)
    })
    .await;
    assert_eq!(
        metric(
            &m,
            r#"muster_transport_messages_received_total{kind="join"}"#
        ),
        None,
        "nothing was accepted as a message"
    );
    assert_eq!(agent.exited(), None, "the agent keeps running");
    wait_for_one_cluster(std::slice::from_ref(&agent), 1).await;
}

fn run_agent(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .expect("run muster-agent");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Finding 15.10: `check-config` printed `management.token` in clear.
#[test]
fn check_config_never_prints_a_secret() {
    let token = "very-secret-management-token-0123456789";
    let out = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .arg("check-config")
        .envs([
            ("POD_IP", "10.0.0.7"),
            ("MUSTER_BOOTSTRAP_SERVICE_NAME", "demo"),
            ("MUSTER_MANAGEMENT_TOKEN", token),
            ("MUSTER_CLUSTER_ALLOW_UNAUTHENTICATED", "true"),
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run muster-agent");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stdout.contains(token) && !stderr.contains(token),
        "the token is printed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("token: <redacted>"), "{stdout}");
}

#[test]
fn a_config_with_a_wrong_value_stops_the_agent_naming_key_value_and_what_is_allowed() {
    let work = Workdir::new("bad-config");
    // (file, what stderr must name: the key, the value, what is allowed)
    let cases: [(&str, [&str; 3]); 5] = [
        (
            "bootstrap:\n  stable-margin: soon\n",
            ["bootstrap.stable-margin", "soon", "5s"],
        ),
        (
            "bootstrap:\n  required-contact-point-nr: two\n",
            ["bootstrap.required-contact-point-nr", "two", "whole number"],
        ),
        (
            "bootstrap:\n  stable-margins: 5s\n",
            ["stable-margins", "did you mean", "stable-margin"],
        ),
        (
            "cluster:\n  port: 70000\n",
            ["cluster.port", "70000", "65535"],
        ),
        (
            "bootstrap:\n  discovery-method: consul\n",
            ["bootstrap.discovery-method", "consul", "kubernetes-api"],
        ),
    ];
    for (yaml, needles) in cases {
        let file = work.config(yaml);
        let (code, stderr) = run_agent(
            &["--config", file.to_str().expect("utf-8 path")],
            &[("POD_IP", "127.22.3.1")],
        );
        assert_eq!(code, Some(2), "exit code 2 for {yaml:?}; stderr:\n{stderr}");
        for needle in needles {
            assert!(
                stderr.contains(needle),
                "for {yaml:?} stderr names {needle:?}:\n{stderr}"
            );
        }
    }
}

#[test]
fn a_bad_environment_override_names_the_variable() {
    let (code, stderr) = run_agent(
        &["check-config"],
        &[
            ("POD_IP", "127.22.3.2"),
            ("MUSTER_BOOTSTRAP_INTERVAL", "fast"),
            ("MUSTER_BOOTSTRAP_SERVICE_NAME", "demo"),
        ],
    );
    assert_eq!(code, Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains("MUSTER_BOOTSTRAP_INTERVAL"), "{stderr}");
    assert!(stderr.contains("fast"), "{stderr}");
}

/// Reads until the server closes the connection (or `limit` passes); what it sent.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<String, String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(limit, s.read_to_end(&mut got)).await;
    match read {
        Ok(_) => Ok(String::from_utf8_lossy(&got).into_owned()),
        Err(_) => Err(format!(
            "still open after {limit:?}; received {:?}",
            String::from_utf8_lossy(&got)
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_oversized_and_stalled_clients_are_cut_off() {
    let subnet = (22, 3);
    let work = Workdir::new("slow-clients");
    let agent_ip = ip(subnet, 1);
    let config = work.config(&format!(
        "cluster:\n  key-file: {}\nbootstrap:\n  service-name: demo\n  discovery-method: config\n  required-contact-point-nr: 1\n  expected-contact-point-nr: 1\ndiscovery:\n  config:\n    endpoints: ['{}:{MANAGEMENT_PORT}']\nmanagement:\n  header-read-timeout: 1s\n  max-body-bytes: 2048\n  token: slow-clients-token-0123456789\n",
        work.key_file().display(),
        agent_ip
    ));
    let mut agent = AgentProcess::start(&work, &config, agent_ip, "agent");
    wait_for_one_cluster(std::slice::from_ref(&agent), 1).await;
    let api = management(agent_ip);

    // Slow headers (slowloris): half a request, then nothing. Dropped after the
    // header-read timeout.
    let mut slow = TcpStream::connect(api).await.expect("connect");
    slow.write_all(b"GET /alive HTTP/1.1\r\nHost: agent\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    read_until_closed(&mut slow, Duration::from_secs(10))
        .await
        .expect("a slow-header client is dropped");
    println!(
        "slow-header client dropped after {} ms (header-read-timeout 1s)",
        started.elapsed().as_millis()
    );

    // A request head larger than the limit: 431, closed.
    let mut big = TcpStream::connect(api).await.expect("connect");
    let filler = "x".repeat(32 * 1024);
    big.write_all(
        format!("GET /alive HTTP/1.1\r\nHost: agent\r\nX-Filler: {filler}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let answer = read_until_closed(&mut big, Duration::from_secs(10))
        .await
        .expect("an oversized head is refused");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // A body above management.max-body-bytes: 413, nothing done.
    let mut fat = TcpStream::connect(api).await.expect("connect");
    let body = format!("operation=Leave&{}", "y".repeat(4096));
    fat.write_all(
        format!(
            "PUT /cluster/members/muster://demo@{agent_ip}:{CLUSTER_PORT} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer slow-clients-token-0123456789\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let answer = read_until_closed(&mut fat, Duration::from_secs(10))
        .await
        .expect("an oversized body is refused");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // The cluster port: a connection that never sends a frame, and a frame that starts
    // and never finishes, are dropped once the frame-read timeout (10 s) passes; they
    // do not hold one of the inbound slots for the 5-minute idle time.
    let (mut silent, _) = greeted(SocketAddr::new(agent_ip, CLUSTER_PORT)).await;
    let (mut stalled, _) = greeted(SocketAddr::new(agent_ip, CLUSTER_PORT)).await;
    stalled.write_all(&[0, 0]).await.expect("write");
    let started = std::time::Instant::now();
    read_until_closed(&mut stalled, Duration::from_secs(30))
        .await
        .expect("a stalled frame ends the connection");
    read_until_closed(&mut silent, Duration::from_secs(5))
        .await
        .expect("a silent cluster connection is dropped");
    println!(
        "stalled cluster frame and silent connection dropped after {} ms",
        started.elapsed().as_millis()
    );

    // None of it hurt: still one Up member, answering.
    assert_eq!(agent.exited(), None, "the agent keeps running");
    wait_for_one_cluster(std::slice::from_ref(&agent), 1).await;
}
