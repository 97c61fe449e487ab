//! What a reconcile reads: the StatefulSet, its pods and the agents' member list.

use std::net::IpAddr;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use node_agent::api::ClusterMembers;
use node_agent::base::member::MemberStatus;

use super::apply::controlled_by;
use super::build::{Selection, tls};
use super::certificates::TlsSecrets;
use super::{Context, Error};
use crate::ClusterSpec;
use crate::agents::Agents;
use crate::rollout::PodView;

/// The observed state of one cluster.
#[derive(Debug)]
pub struct World {
    pub namespace: String,
    pub stateful_set: Option<StatefulSet>,
    /// The cluster's pods, ordered by name.
    pub pods: Vec<Pod>,
    /// The member list of the first agent that answered; else why none did.
    pub members: Result<ClusterMembers, String>,
    /// No agent answered, and asking took long (agents that hang or dribble, see
    /// [`SLOW_SCAN`]): the cluster is looked at again later, not at the busy pace.
    pub members_slow: bool,
    /// How this cluster's agents are reached (with `spec.tls`, over HTTPS trusting the
    /// cluster's CA only); why they cannot be (no CA yet): never plain HTTP then.
    pub agents: Result<Agents, String>,
    /// With `spec.tls`: the TLS Secrets as read (whoever's they are).
    pub tls: Option<TlsSecrets>,
}

/// A failed look at the agents that took at least this long is slow.
pub const SLOW_SCAN: std::time::Duration = std::time::Duration::from_secs(1);

impl World {
    /// Whether the member list says who is a member: an agent answered, and its list
    /// is not empty while some pod is Ready (a Ready pod's agent is a member, so an
    /// empty list then came from an agent that has not joined, while the members failed
    /// to answer). Rollouts and scale-downs act on Ready pods only when it does.
    pub fn members_known(&self) -> bool {
        match &self.members {
            Ok(m) => !m.members.is_empty() || !self.pods.iter().any(is_ready),
            Err(_) => false,
        }
    }

    /// Pods that exist and are not being deleted.
    pub fn live_pods(&self) -> i32 {
        let n = self
            .pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        i32::try_from(n).unwrap_or(i32::MAX)
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
    }

    /// The revision every pod should run, once the StatefulSet controller has seen the
    /// current template (`None` before: a rollout waits).
    pub fn update_revision(&self) -> Option<String> {
        let set = self.stateful_set.as_ref()?;
        let status = set.status.as_ref()?;
        if status.observed_generation < set.metadata.generation {
            return None;
        }
        status.update_revision.clone()
    }
}

pub async fn world(ctx: &Context, cs: &ClusterSpec, ns: &str) -> Result<World, Error> {
    let name = cs.name_any();
    let stateful_set = Api::<StatefulSet>::namespaced(ctx.client.clone(), ns)
        .get_opt(&name)
        .await
        .map_err(|e| Error::kube(format!("read StatefulSet {name}"), e))?;
    let selector = Selection::of(cs, stateful_set.as_ref()).query(cs);
    let listed = Api::<Pod>::namespaced(ctx.client.clone(), ns)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube(format!("list the pods of {name}"), e))?
        .items;
    // Another's StatefulSet under the cluster's name (a conflict) has no pods of ours.
    let ours = stateful_set
        .as_ref()
        .filter(|s| controlled_by(&s.metadata, cs.uid().as_deref().unwrap_or_default()));
    let mut pods = of_stateful_set(listed, ours);
    pods.sort_by_key(ResourceExt::name_any);
    // Ready pods first: their agents are members and answer soonest.
    let mut ips: Vec<(bool, IpAddr)> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| Some((!is_ready(p), pod_ip(p)?)))
        .collect();
    ips.sort();
    let ips: Vec<IpAddr> = ips.into_iter().map(|(_, ip)| ip).collect();
    let (agents, tls) = if cs.spec.tls.enabled {
        let secrets = TlsSecrets::read(ctx, cs, ns).await?;
        (tls_agents(ctx, cs, &secrets), Some(secrets))
    } else {
        (Ok(ctx.agents.clone()), None)
    };
    let asked = std::time::Instant::now();
    let members = match &agents {
        Ok(agents) => agents.members(&ips).await,
        Err(e) if ips.is_empty() => Err(format!("no pod has an IP yet; {e}")),
        Err(e) => Err(e.clone()),
    };
    let members_slow = members.is_err() && asked.elapsed() >= SLOW_SCAN;
    if let Err(e) = &members {
        tracing::debug!(error = %e, "no agent answered /cluster/members");
    }
    Ok(World {
        namespace: ns.to_owned(),
        stateful_set,
        pods,
        members,
        members_slow,
        agents,
        tls,
    })
}

/// The agents' client of a cluster with `spec.tls`: trusting the cluster's CAs that
/// its agents trust, and nothing else.
fn tls_agents(ctx: &Context, cs: &ClusterSpec, secrets: &TlsSecrets) -> Result<Agents, String> {
    let pem = secrets
        .client_pem(cs)
        .map_err(|e| format!("the agents are not asked: {e}"))?;
    ctx.agents
        .with_tls(pem.as_bytes(), &tls::server_name(cs))
        .map_err(|e| format!("the agents are not asked: {e}"))
}

/// The pods the StatefulSet controls (its uid in their controller reference): a pod
/// that merely carries the labels — another team's, or one made to look like ours — is
/// never a rollout's to delete, never asked for its member list and never sent a Leave
/// with the management token. No StatefulSet, no pods.
fn of_stateful_set(pods: Vec<Pod>, stateful_set: Option<&StatefulSet>) -> Vec<Pod> {
    let Some(uid) = stateful_set.and_then(|s| s.metadata.uid.as_deref()) else {
        return Vec::new();
    };
    pods.into_iter()
        .filter(|p| controlled_by(&p.metadata, uid))
        .collect()
}

/// Whether a container of `p` ever started (running, ended, or restarted).
pub fn started(p: &Pod) -> bool {
    p.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .any(|c| {
            let ran = |s: Option<&k8s_openapi::api::core::v1::ContainerState>| {
                s.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            };
            c.restart_count > 0 || ran(c.state.as_ref()) || ran(c.last_state.as_ref())
        })
}

pub fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub fn pod_view(p: &Pod) -> PodView {
    PodView {
        name: p.name_any(),
        revision: p
            .labels()
            .get("controller-revision-hash")
            .cloned()
            .unwrap_or_default(),
        ready: is_ready(p),
        terminating: p.metadata.deletion_timestamp.is_some(),
        ip: pod_ip(p),
    }
}

/// The pod's IP, once it has one.
pub fn pod_ip(p: &Pod) -> Option<IpAddr> {
    p.status.as_ref()?.pod_ip.as_ref()?.parse().ok()
}

/// A pod that has existed for longer than `spec.rollout.memberUpTimeout` without being
/// Ready and an Up member, in words.
pub fn stalled(cs: &ClusterSpec, world: &World, now: Timestamp) -> Option<String> {
    let timeout = node_agent::config::duration::parse(&cs.spec.rollout.member_up_timeout).ok()?;
    // Without an answer from any agent, the Degraded condition says that instead.
    let members = world.members.as_ref().ok()?;
    let up_ips: Vec<IpAddr> = members
        .members
        .iter()
        .filter(|x| x.status == MemberStatus::Up)
        .map(|x| x.node.ip)
        .collect();
    world.pods.iter().find_map(|p| {
        let created = p.metadata.creation_timestamp.as_ref()?.0;
        let age = now.duration_since(created);
        if age.as_secs() < i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX) {
            return None;
        }
        let member = pod_ip(p).is_some_and(|ip| up_ips.contains(&ip));
        (!is_ready(p) || !member).then(|| {
            format!(
                "pod {} is older than spec.rollout.memberUpTimeout ({}) and still not Ready and an Up member; the rollout waits — see the pod's events and its agent's /bootstrap/status",
                p.name_any(),
                cs.spec.rollout.member_up_timeout,
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use node_agent::api::ClusterMember;
    use serde_json::json;

    use super::*;

    fn pod(name: &str, ip: &str, created: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        }))
        .expect("a pod")
    }

    fn world(pods: Vec<Pod>, up_ips: &[&str]) -> World {
        let address = |ip: &str| {
            node_agent::base::address::NodeAddress::new("shop", ip.parse().expect("an IP"), 2552)
        };
        let member = |ip: &&str| ClusterMember {
            node: address(ip),
            node_uid: 1,
            status: MemberStatus::Up,
            roles: vec![],
            up_number: 1,
            app_version: "1".into(),
        };
        World {
            namespace: "prod".into(),
            stateful_set: None,
            pods,
            members: Ok(ClusterMembers {
                members: up_ips.iter().map(member).collect(),
                ..ClusterMembers::empty(address("10.0.0.9"))
            }),
            members_slow: false,
            agents: Ok(Agents::default()),
            tls: None,
        }
    }

    #[test]
    fn a_pod_older_than_member_up_timeout_that_never_joined_stalls_the_rollout() {
        let cs: ClusterSpec = serde_json::from_value(json!({
            "apiVersion": "muster.dev/v1alpha1", "kind": "ClusterSpec",
            "metadata": {"name": "shop", "namespace": "prod"},
            "spec": {"rollout": {"memberUpTimeout": "2m"}},
        }))
        .expect("a ClusterSpec");
        let now: Timestamp = "2026-11-23T12:10:00Z".parse().expect("a time");
        let old = "2026-11-23T12:00:00Z";
        let young = "2026-11-23T12:09:00Z";
        // Up members, or young enough: fine.
        let fine = world(
            vec![
                pod("shop-0", "10.0.0.1", old, true),
                pod("shop-1", "10.0.0.2", young, false),
            ],
            &["10.0.0.1"],
        );
        assert_eq!(stalled(&cs, &fine, now), None);
        // Old, Ready, but never an Up member.
        let stuck = world(vec![pod("shop-0", "10.0.0.1", old, true)], &[]);
        let why = stalled(&cs, &stuck, now).expect("stalled");
        assert!(
            why.contains("shop-0") && why.contains("memberUpTimeout (2m)"),
            "{why}"
        );
        // No agent answered: reported as that instead.
        let mut silent = stuck;
        silent.members = Err("refused".into());
        assert_eq!(stalled(&cs, &silent, now), None);
    }

    fn owned_by(name: &str, uid: Option<&str>, controller: bool) -> Pod {
        let refs = uid.map(|uid| {
            serde_json::json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "shop",
                                "uid": uid, "controller": controller}])
        });
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "ownerReferences": refs.unwrap_or_default()},
        }))
        .expect("a pod")
    }

    #[test]
    fn only_the_stateful_sets_own_pods_are_the_clusters() {
        let set: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "uid": "s-1"}, "spec": {"selector": {}, "template": {}},
        }))
        .expect("a StatefulSet");
        let pods = vec![
            owned_by("shop-0", Some("s-1"), true),
            owned_by("shop-9", None, false),
            owned_by("shop-x", Some("s-1"), false),
            owned_by("shop-old", Some("s-0"), true),
        ];
        let names: Vec<String> = of_stateful_set(pods.clone(), Some(&set))
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        assert_eq!(names, ["shop-0"]);
        assert!(
            of_stateful_set(pods, None).is_empty(),
            "no StatefulSet, no pods"
        );
    }

    /// An empty list while a pod is Ready (its agent is a member) came from an agent
    /// that has not joined: who is a member is not known then.
    #[test]
    fn an_empty_member_list_beside_a_ready_pod_is_no_knowledge() {
        let t = "2026-01-01T00:00:00Z";
        let forming = world(vec![pod("shop-0", "10.0.0.1", t, false)], &[]);
        assert!(forming.members_known(), "nobody Ready, nobody joined");
        let ready = world(
            vec![
                pod("shop-0", "10.0.0.1", t, true),
                pod("shop-1", "10.0.0.2", t, false),
            ],
            &[],
        );
        assert!(!ready.members_known());
        let listed = world(vec![pod("shop-0", "10.0.0.1", t, true)], &["10.0.0.1"]);
        assert!(listed.members_known());
        let failed = World {
            members: Err("no answer".into()),
            ..world(vec![], &[])
        };
        assert!(!failed.members_known());
    }
}
