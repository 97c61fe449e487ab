//! Pods that may still run where nobody can see them (issue 19 A3, akka-management
//! #570): a pod stuck Terminating past its grace period (its kubelet never confirmed
//! that it stopped), or a pod on a node that is not Ready (its kubelet is cut off: the
//! pod may run on behind a partition, as a member of the cluster). While any exists,
//! forming a new cluster is refused whatever `newClusterEnabled` says — the old members
//! may be alive — and condition `StrandedPods` names them.
//!
//! Node readiness needs `get` on Nodes, which only the cluster-wide install has; the
//! namespaced install sees stuck-terminating pods only (after the node lifecycle
//! controller's eviction, 5 minutes by default, a pod on a lost node is one).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

/// A terminating pod is stuck once its deletion time (set to the request's time plus
/// its grace period) is this far behind: its kubelet had all that time to stop it.
pub const STUCK_AFTER: Duration = Duration::from_secs(15);

/// A node's readiness, as the operator could read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    Ready,
    /// Its Ready condition is `False` or `Unknown` (or missing), in words.
    NotReady(String),
    /// Not read: no right to read Nodes (a namespaced install).
    Unknown,
    /// The Node object is gone: the machine was removed (Kubernetes then deletes its
    /// pods itself).
    Gone,
    /// The read failed: its readiness is unknown, so its pods count as stranded
    /// (failing closed: one failed read must not lift the fence).
    Unreadable(String),
}

impl NodeState {
    pub fn of(node: &Node) -> Self {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        match ready {
            Some(c) if c.status == "True" => Self::Ready,
            Some(c) => Self::NotReady(format!(
                "Ready is {}{}{}",
                c.status,
                c.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                c.last_transition_time
                    .as_ref()
                    .map(|t| format!(" since {}", t.0))
                    .unwrap_or_default()
            )),
            None => Self::NotReady("it reports no Ready condition".into()),
        }
    }
}

/// A pod that may still run unseen, and why, in words (as kept in status).
pub type Stranded = crate::crd::StrandedPod;

/// The annotation by which a person confirms pods gone (their uids, comma-separated)
/// that the operator cannot: e.g. pods force-deleted on a node it may not read.
pub const CONFIRMED_GONE: &str = "muster.dev/pods-confirmed-gone";

/// The pods of `pods` that may still run where nobody can see them.
pub fn stranded(
    pods: &[Pod],
    nodes: &BTreeMap<String, NodeState>,
    now: Timestamp,
) -> Vec<Stranded> {
    let stuck_after = SignedDuration::try_from(STUCK_AFTER).unwrap_or_default();
    pods.iter()
        .filter_map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
            let why = if let Some(at) = p.metadata.deletion_timestamp.as_ref()
                && now.duration_since(at.0) >= stuck_after
                && !stopped(p)
            {
                format!(
                    "terminating since {} (past its grace period) on node {}: its kubelet has not confirmed that it stopped",
                    at.0,
                    node.unwrap_or("?")
                )
            } else if let Some(node) = node
                && let Some(NodeState::NotReady(words)) = nodes.get(node)
            {
                format!("on node {node}, which is not Ready ({words}): it may still run there, cut off")
            } else if let Some(node) = node
                && let Some(NodeState::Unreadable(e)) = nodes.get(node)
            {
                format!("on node {node}, whose readiness could not be read ({e})")
            } else {
                return None;
            };
            Some(Stranded {
                pod: p.name_any(),
                uid: p.metadata.uid.clone().unwrap_or_default(),
                node: node.map(str::to_owned),
                why,
            })
        })
        .collect()
}

/// The stranded pods now: those of `pods` ([`stranded`]) and those `before` listed
/// that are gone from the API server while their node has not been seen Ready since
/// (nor its Node object deleted): a pod force-deleted behind a cut runs on there
/// until its kubelet is back. `confirmed`: uids a person confirmed gone.
pub fn remembered(
    before: &[Stranded],
    now_stranded: Vec<Stranded>,
    pods: &[Pod],
    nodes: &BTreeMap<String, NodeState>,
    confirmed: &[&str],
) -> Vec<Stranded> {
    let live: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.metadata.uid.as_deref())
        .collect();
    let mut out = now_stranded;
    for b in before {
        if live.contains(&b.uid.as_str()) || confirmed.contains(&b.uid.as_str()) {
            continue;
        }
        // Kept only on evidence of a cut: its node not Ready, or unreadable. Where Nodes
        // cannot be read at all (a namespaced install) a pod that finished normally and
        // one force-deleted look the same, so none is kept (documented).
        let state = b.node.as_ref().and_then(|n| nodes.get(n));
        if !matches!(
            state,
            Some(NodeState::NotReady(_) | NodeState::Unreadable(_))
        ) {
            continue;
        }
        let node = b.node.as_deref().unwrap_or("?");
        let why = if b.why.starts_with("gone from the API server") {
            b.why.clone()
        } else {
            format!(
                "gone from the API server (force-deleted?) while it was {}; it may still run on node {node} until that node is Ready again or its Node object is deleted (or annotate the ClusterSpec {CONFIRMED_GONE}: \"{}\" once you know it stopped)",
                b.why, b.uid
            )
        };
        out.push(Stranded { why, ..b.clone() });
    }
    out
}

/// The nodes of the stranded pods `before` listed, to read as well.
pub fn nodes_of_remembered(before: &[Stranded]) -> Vec<String> {
    before.iter().filter_map(|b| b.node.clone()).collect()
}

/// Whether the kubelet has reported the pod stopped: it ended (Succeeded, Failed), or
/// every container it ran has terminated. A pod kept only by someone's finalizer is
/// then no member anywhere.
fn stopped(p: &Pod) -> bool {
    let Some(status) = &p.status else {
        return false;
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return true;
    }
    status.container_statuses.as_ref().is_some_and(|cs| {
        !cs.is_empty()
            && cs
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()))
    })
}

/// The nodes the pods run on (by name), to read.
pub fn nodes_of(pods: &[Pod]) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The condition's message: every stranded pod (the first five in full).
pub fn words(stranded: &[Stranded]) -> String {
    const SHOWN: usize = 5;
    let mut out: Vec<String> = stranded
        .iter()
        .take(SHOWN)
        .map(|s| format!("pod {} is {}", s.pod, s.why))
        .collect();
    if stranded.len() > SHOWN {
        out.push(format!("and {} more", stranded.len() - SHOWN));
    }
    format!(
        "{}; forming a new cluster is refused while they exist, whatever spec.bootstrap.newClusterEnabled says (the old members may still run). This clears when the node is Ready again or its Node object is deleted; force-deleting a pod does not (it may run on there): once you know it stopped, list its uid in the ClusterSpec annotation {CONFIRMED_GONE}",
        out.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, deleted: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "deletionTimestamp": deleted},
            "spec": {"nodeName": node, "containers": []},
        }))
        .unwrap()
    }

    fn node(ready: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "NodeStatusUnknown",
                                        "lastTransitionTime": "2026-12-03T10:00:00Z"}]},
        }))
        .unwrap()
    }

    #[test]
    fn pods_stuck_terminating_or_on_unready_nodes_are_stranded_and_no_others() {
        let now: Timestamp = "2026-12-03T10:01:00Z".parse().unwrap();
        let pods = [
            pod("shop-0", "a", None),
            pod("shop-1", "b", None),
            // Within its grace period (deletion time not yet 15 s behind): stopping.
            pod("shop-2", "a", Some("2026-12-03T10:00:50Z")),
            pod("shop-3", "a", Some("2026-12-03T10:00:40Z")),
            pod("shop-4", "c", None),
        ];
        let nodes = BTreeMap::from([
            ("a".to_owned(), NodeState::of(&node("True"))),
            ("b".to_owned(), NodeState::of(&node("Unknown"))),
            ("c".to_owned(), NodeState::Unknown),
        ]);
        let s = stranded(&pods, &nodes, now);
        let names: Vec<&str> = s.iter().map(|s| s.pod.as_str()).collect();
        assert_eq!(names, ["shop-1", "shop-3"], "{s:?}");
        // A pod whose containers the kubelet reported terminated is held only by a
        // finalizer: not stranded. A node that could not be read fails closed.
        let mut kept = pods[3].clone();
        kept.status = serde_json::from_value(json!({"phase": "Running", "containerStatuses": [
            {"name": "agent", "image": "a", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0}}}]}))
        .unwrap();
        assert!(stranded(&[kept], &nodes, now).is_empty());
        let mut unread = nodes.clone();
        unread.insert("a".into(), NodeState::Unreadable("timed out".into()));
        let u = stranded(&pods[..1], &unread, now);
        assert!(u[0].why.contains("could not be read (timed out)"), "{u:?}");

        // Remembered once gone from the API server, until the node is Ready or gone.
        let mut before = stranded(&pods, &nodes, now);
        for (i, s) in before.iter_mut().enumerate() {
            s.uid = format!("u{i}");
        }
        let kept = remembered(&before, Vec::new(), &[], &nodes, &[]);
        assert_eq!(
            kept.len(),
            1,
            "shop-3 on node a (Ready) is gone for good: {kept:?}"
        );
        assert_eq!(kept[0].pod, "shop-1");
        assert!(
            kept[0]
                .why
                .contains("gone from the API server (force-deleted?) while it was on node b"),
            "{kept:?}"
        );
        let again = remembered(&kept, Vec::new(), &[], &nodes, &[]);
        assert_eq!(again, kept, "said once, kept as it is");
        let mut healed = nodes.clone();
        healed.insert("b".into(), NodeState::Ready);
        assert!(remembered(&kept, Vec::new(), &[], &healed, &[]).is_empty());
        healed.insert("b".into(), NodeState::Gone);
        assert!(remembered(&kept, Vec::new(), &[], &healed, &[]).is_empty());
        let mut unreadable = nodes.clone();
        unreadable.insert(
            "b".into(),
            NodeState::Unreadable("the request failed".into()),
        );
        assert_eq!(
            remembered(&kept, Vec::new(), &[], &unreadable, &[]).len(),
            1,
            "unreadable: kept"
        );
        let mut forbidden = nodes.clone();
        forbidden.insert("b".into(), NodeState::Unknown);
        assert!(
            remembered(&kept, Vec::new(), &[], &forbidden, &[]).is_empty(),
            "no right to read Nodes: no evidence of a cut, nothing kept"
        );
        assert!(
            remembered(&kept, Vec::new(), &[], &nodes, &["u0"]).is_empty(),
            "a person confirmed it"
        );
        // A pod still listed is judged afresh, not remembered.
        let mut listed = pods[1].clone();
        listed.metadata.uid = Some("u0".into());
        assert!(remembered(&kept, Vec::new(), &[listed], &nodes, &[]).is_empty());
        assert!(s[0].why.contains("node b, which is not Ready (Ready is Unknown (NodeStatusUnknown) since 2026-12-03T10:00:00Z)"), "{s:?}");
        assert!(
            s[1].why.contains("terminating since 2026-12-03T10:00:40Z"),
            "{s:?}"
        );
        assert_eq!(nodes_of(&pods), ["a", "b", "c"]);
        assert!(words(&s).contains("whatever spec.bootstrap.newClusterEnabled says"));
        assert_eq!(
            NodeState::of(&node("False")),
            NodeState::NotReady(
                "Ready is False (NodeStatusUnknown) since 2026-12-03T10:00:00Z".into()
            )
        );
    }
}
