//! The cluster key rotates under a running cluster of real `muster-agent` processes,
//! each with its own key file changed one agent at a time (as a Secret volume reaches
//! pods at different moments): add the new key second, move it first, drop the old.
//! Every frame on the open connections is signed with the key in use at that moment,
//! so a wrong order would show at once as unreachable members; none may appear, no
//! member is restarted or downed, a newcomer with only the new key joins, and an agent
//! with only the old key stays out.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use node_agent::api::ManagementClient;
use node_agent::base::member::MemberStatus;
use node_agent::base::secret::key_id;
use support::*;

const OLD: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0-old-key";
const NEW: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90-new-key";
const OTHER: &str = "ffeeddccbbaa99887766554433221100-unrelated";

/// Replaces `file` at once, as the kubelet swaps a Secret volume's contents.
fn write_keys(file: &Path, keys: &[&str]) {
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", keys.join("\n"))).expect("write the keys");
    std::fs::rename(&tmp, file).expect("swap the key file");
}

/// Agent `i`'s config with its own key file, knowing the first `n` contact points.
fn agent_config(work: &Workdir, subnet: (u8, u8), i: u8, n: u8) -> (PathBuf, PathBuf) {
    let key = work.path.join(format!("agent-{i}.key"));
    let endpoints: Vec<String> = (1..=n)
        .map(|j| format!("'{}:{MANAGEMENT_PORT}'", ip(subnet, j)))
        .collect();
    let yaml = format!(
        "cluster:\n  key-file: {key}\nbootstrap:\n  service-name: demo\n  discovery-method: config\n  required-contact-point-nr: 3\n  expected-contact-point-nr: 3\ndiscovery:\n  config:\n    endpoints: [{endpoints}]\n",
        key = key.display(),
        endpoints = endpoints.join(", "),
    );
    (work.config_named(&format!("agent-{i}"), &yaml), key)
}

/// Waits until agent `a` reports `keys` in use (by id, signing key first).
async fn wait_for_keys(client: &ManagementClient, a: &AgentProcess, keys: &[&str]) {
    let want: Vec<String> = keys.iter().map(|k| key_id(k.as_bytes())).collect();
    eventually(
        &format!("{} uses keys {want:?}", a.name),
        Duration::from_secs(20),
        || async {
            let s = client
                .bootstrap_status(a.management())
                .await
                .map_err(|e| e.to_string())?;
            if s.cluster_keys == want {
                Ok(())
            } else {
                Err(format!("in use: {:?}", s.cluster_keys))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_key_rotates_in_three_steps_without_a_split_or_a_downed_member() {
    let subnet = (25, 3);
    let work = Workdir::new("key-rotation");
    let (mut agents, mut keys) = (Vec::new(), Vec::new());
    for i in 1..=3 {
        let (config, key) = agent_config(&work, subnet, i, 3);
        write_keys(&key, &[OLD]);
        agents.push(AgentProcess::start(
            &work,
            &config,
            ip(subnet, i),
            &format!("agent-{i}"),
        ));
        keys.push(key);
    }
    let client = client();
    let before = wait_for_one_cluster(&agents, 3).await.remove(0);

    for (step, ring) in [
        ("accept the new key", &[OLD, NEW][..]),
        ("sign with the new key", &[NEW, OLD][..]),
        ("drop the old key", &[NEW][..]),
    ] {
        for (a, key) in agents.iter().zip(&keys) {
            write_keys(key, ring);
            wait_for_keys(&client, a, ring).await;
            // Before looking, every member must have accepted fresh heartbeats and
            // answers, signed with whatever keys its peers use now.
            fresh_heartbeats(&client, &agents).await;
            same_members_all_up(&client, &agents, &before).await;
            println!("{step}: {} done, cluster unchanged", a.name);
        }
    }

    // A key file that would split the cluster (a key no member accepts, signing at
    // once) is refused: the agent logs why and keeps its keys.
    write_keys(&keys[0], &[OTHER]);
    eventually(
        "agent-1 refuses an unrelated key",
        Duration::from_secs(20),
        || async {
            let log = agents[0].log();
            if log.contains("would split the cluster") && log.contains(&key_id(OTHER.as_bytes())) {
                Ok(())
            } else {
                Err("not logged yet".to_owned())
            }
        },
    )
    .await;
    wait_for_keys(&client, &agents[0], &[NEW]).await;
    fresh_heartbeats(&client, &agents).await;
    same_members_all_up(&client, &agents, &before).await;

    // An agent holding only the old key is kept out; one with only the new key joins.
    let (config, key) = agent_config(&work, subnet, 5, 4);
    write_keys(&key, &[OLD]);
    let stale = AgentProcess::start(&work, &config, ip(subnet, 5), "stale");
    let (config, key) = agent_config(&work, subnet, 4, 4);
    write_keys(&key, &[NEW]);
    agents.push(AgentProcess::start(
        &work,
        &config,
        ip(subnet, 4),
        "agent-4",
    ));
    let after = wait_for_one_cluster(&agents, 4).await.remove(0);
    still_members(&before, &after);
    let status = client
        .bootstrap_status(stale.management())
        .await
        .expect("the stale agent's status");
    assert_ne!(status.self_status, Some(MemberStatus::Up), "{status:?}");
    for a in &agents {
        let m = client.members(a.management()).await.expect("members");
        assert!(
            m.members.iter().all(|x| x.node.ip != stale.ip),
            "{}: {:?}",
            a.name,
            m.members
        );
    }
}
