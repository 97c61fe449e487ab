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
