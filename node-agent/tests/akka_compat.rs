//! The management API against Akka Management's documented answers, field by field:
//! for each route the agent has too, an answer in the shape Akka's documentation shows
//! (values of our own) is compared with what real agents answer. Every field Akka has
//! must be there with the same JSON type; the agent's extra fields and the differences
//! that remain are listed here, and the test fails when either list changes, so a new
//! field or a new difference is a decision, written down (README, "Management API").

mod support;

use serde_json::{Value, json};
use support::*;

/// What differs between `akka` (the documented shape) and `ours`, at `path`: missing
/// fields and other JSON types in `differences`, our extra fields in `extras`.
fn compare(
    akka: &Value,
    ours: &Value,
    path: &str,
    extras: &mut Vec<String>,
    differences: &mut Vec<String>,
) {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    match (akka, ours) {
        (Value::Object(a), Value::Object(o)) => {
            for (k, av) in a {
                let p = format!("{path}.{k}");
                match o.get(k) {
                    Some(ov) => compare(av, ov, &p, extras, differences),
                    None => differences.push(format!("{p}: missing")),
                }
            }
            extras.extend(
                o.keys()
                    .filter(|k| !a.contains_key(*k))
                    .map(|k| format!("{path}.{k}")),
            );
        }
        // An array's elements: the first of each (the documented one) when both have one.
        (Value::Array(a), Value::Array(o)) => {
            if let (Some(av), Some(ov)) = (a.first(), o.first()) {
                compare(av, ov, &format!("{path}[]"), extras, differences);
            }
        }
        (a, o) if kind(a) != kind(o) => {
            differences.push(format!("{path}: {} here, {} in Akka", kind(o), kind(a)));
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answers_have_every_field_of_akka_managements_in_its_type() {
    let work = Workdir::new("akka-compat");
    let subnet = (23, 13);
    let config = config_discovery_with(&work, subnet, 3, "  roles: [backend]\n");
    let agents = start_agents(&work, &config, subnet, 3);
    wait_for_one_cluster(&agents, 3).await;
    let at = agents[0].management();
    let member = agents[1].address().to_string();

    // Akka's documented shapes (cluster-http-management.md; bootstrap's
    // HttpBootstrapJsonProtocol), with values of our own.
    let akka_member = json!({"node": "akka://shop@10.1.0.2:25520", "nodeUid": "20481",
        "status": "Up", "roles": ["backend"]});
    let documented = [
        (
            "/cluster/members",
            "/cluster/members".to_owned(),
            json!({"selfNode": "akka://shop@10.1.0.1:25520", "members": [akka_member],
                "unreachable": [], "leader": "akka://shop@10.1.0.1:25520",
                "oldest": "akka://shop@10.1.0.1:25520",
                "oldestPerRole": {"backend": "akka://shop@10.1.0.1:25520"}}),
        ),
        (
            "/cluster/members/{address}",
            format!("/cluster/members/{member}"),
            akka_member.clone(),
        ),
        (
            "/bootstrap/seed-nodes",
            "/bootstrap/seed-nodes".to_owned(),
            json!({"selfNode": "akka://shop@10.1.0.1:25520", "seedNodes": [
                {"node": "akka://shop@10.1.0.2:25520", "nodeUid": 20481, "status": "Up",
                 "roles": ["backend"]}]}),
        ),
    ];
    let (mut extras, mut differences) = (Vec::new(), Vec::new());
    for (route, path, akka) in &documented {
        let ours = eventually(path, std::time::Duration::from_secs(10), || json(at, path)).await;
        compare(akka, &ours, route, &mut extras, &mut differences);
    }
    // One uid, one value: the string of /cluster/members is the number of
    // /bootstrap/seed-nodes, within Akka's signed Long.
    let members = json(at, "/cluster/members").await.expect("members");
    let seeds = json(at, "/bootstrap/seed-nodes").await.expect("seed nodes");
    for seed in seeds["seedNodes"].as_array().expect("seed nodes") {
        let listed = members["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["node"] == seed["node"]))
            .unwrap_or_else(|| panic!("{seed} is a member"));
        let uid = seed["nodeUid"].as_i64().expect("a signed Long");
        assert_eq!(listed["nodeUid"].as_str(), Some(uid.to_string().as_str()));
    }

    // An unreachable member, as Akka lists one: the third agent paused (SIGSTOP) until
    // the others' failure detectors give up on it.
    let paused = agents[2].pid().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &paused])
        .status();
    let ours = eventually(
        "an unreachable member listed",
        std::time::Duration::from_secs(30),
        || async {
            let m = json(at, "/cluster/members").await?;
            if m["unreachable"].as_array().is_some_and(|u| !u.is_empty()) {
                Ok(m)
            } else {
                Err(format!("{m}"))
            }
        },
    )
    .await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &paused])
        .status();
    let akka = json!({"unreachable": [{"node": "akka://shop@10.1.0.3:25520",
        "observedBy": ["akka://shop@10.1.0.1:25520"]}]});
    let ours = json!({"unreachable": ours["unreachable"]});
    compare(
        &akka,
        &ours,
        "/cluster/members",
        &mut extras,
        &mut differences,
    );
    // (/cluster/domain-events: its payloads are checked against Akka's documented
    // example in src/api/domain_events.rs, and read from real agents in tests/events.rs.)
    println!("extra fields: {extras:?}\ndifferences: {differences:?}");
    extras.sort();
    assert_eq!(
        extras,
        [
            "/bootstrap/seed-nodes.contactPoints",
            "/cluster/members.members[].appVersion",
            "/cluster/members.members[].upNumber",
            "/cluster/members/{address}.appVersion",
            "/cluster/members/{address}.upNumber",
        ],
        "muster's extra fields (README, Management API)"
    );
    assert!(
        differences.is_empty(),
        "fields missing or of another type than Akka's: {differences:?}"
    );
}

async fn send_form(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    content_type: &str,
    body: &str,
) -> (u16, String) {
    send_with_token(addr, method, path, token, Some((content_type, body))).await
}

/// `POST /cluster/members`, as Akka's documentation calls it (`curl -F address=…`):
/// an agent that cannot find the cluster (it discovers only itself) is told to join it
/// by address, and does; told to form one instead, it is refused, as bootstrap would
/// not form there; and a member is never moved elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_where_they_are_told_and_only_once() {
    const TOKEN: &str = "akka-compat-join-token-0123";
    let work = Workdir::new("akka-compat-join");
    let subnet = (23, 14);
    let yaml = |endpoints: &[u8], required: usize, may_form: bool| {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|i| format!("'{}:{MANAGEMENT_PORT}'", ip(subnet, *i)))
            .collect();
        format!(
            "cluster:\n  key-file: {key}\nmanagement:\n  token: {TOKEN}\nbootstrap:\n  service-name: demo\n  discovery-method: config\n  required-contact-point-nr: {required}\n  new-cluster-enabled: {may_form}\ndiscovery:\n  config:\n    endpoints: [{list}]\n",
            key = work.key_file().display(),
            list = endpoints.join(", "),
        )
    };
    // Agent 2 forms alone by bootstrap; 1 discovers only itself (and would need a
    // second contact point to form, which it may not anyway); 3 discovers every agent
    // and joins by bootstrap.
    let agents = vec![
        AgentProcess::start(
            &work,
            &work.config_named("one.yaml", &yaml(&[1], 2, false)),
            ip(subnet, 1),
            "agent-1",
        ),
        AgentProcess::start(
            &work,
            &work.config_named("two.yaml", &yaml(&[2], 1, true)),
            ip(subnet, 2),
            "agent-2",
        ),
        AgentProcess::start(
            &work,
            &work.config_named("all.yaml", &yaml(&[1, 2, 3], 3, false)),
            ip(subnet, 3),
            "agent-3",
        ),
    ];
    let post = |i: usize, content_type: &'static str, body: String| {
        let at = agents[i].management();
        async move { send_form(at, "POST", "/cluster/members", TOKEN, content_type, &body).await }
    };
    let urlencoded = "application/x-www-form-urlencoded";
    eventually(
        "agent 1 probing, alone",
        std::time::Duration::from_secs(20),
        || async {
            let st = json(agents[0].management(), "/bootstrap/status").await?;
            if st["phase"] == "probing" {
                Ok(())
            } else {
                Err(format!("{st}"))
            }
        },
    )
    .await;

    // Without the token: refused, nothing happens.
    let (status, body) = send_form(
        agents[1].management(),
        "POST",
        "/cluster/members",
        "not-the-token-at-all-0000",
        urlencoded,
        "address=x",
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // Agent 1 may not form (new-cluster-enabled is off): refused.
    let one = agents[0].address();
    let (status, body) = post(0, urlencoded, format!("address={one}")).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("new-cluster-enabled is off"), "{body}");
    let two = agents[1].address();
    // Agent 1, which cannot discover it, joins it by host:port, in Akka's multipart form.
    let multipart = format!(
        "--b1\r\nContent-Disposition: form-data; name=\"address\"\r\n\r\n{}:{CLUSTER_PORT}\r\n--b1--\r\n",
        agents[1].ip
    );
    let (status, body) = post(0, "multipart/form-data; boundary=b1", multipart).await;
    assert_eq!(status, 200, "{body}");
    // Agent 3 finds the cluster by bootstrap and joins it.
    let views = wait_for_one_cluster(&agents, 3).await;
    assert_eq!(
        views[0].oldest.as_ref(),
        Some(&two),
        "the agent that formed is the oldest"
    );
    // A member is not moved, and forming again is refused.
    for (i, to) in [(2, agents[2].address()), (0, agents[0].address())] {
        let (status, body) = post(i, urlencoded, format!("address={to}")).await;
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("joins no other cluster"), "{body}");
    }
    wait_for_one_cluster(&agents, 3).await;
}
