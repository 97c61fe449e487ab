//! The NetworkPolicy: the agents' ports open to the cluster's own pods and the
//! operator only. NetworkPolicies only allow, and a pod selected by any policy with
//! Ingress is isolated: so where no other policy of the namespace applies to the pods,
//! this one also opens every other port to all (the application's traffic stays as it
//! was); where one does, the pods were isolated before and those policies keep deciding
//! the other ports.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{CLUSTER_PORT, MANAGEMENT_PORT, Selection, Site, meta};
use crate::crd::ClusterSpec;

/// The operator's pods carry this label (the chart and `manifests/`).
pub const OPERATOR_POD_LABEL: (&str, &str) = ("app.kubernetes.io/name", "muster-operator");
/// The label Kubernetes (≥ 1.21) puts on every namespace: its name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The policy for `cs` (`None` when spec.networkPolicy turns it off or the server is
/// too old to express it).
pub fn build(cs: &ClusterSpec, site: &Site<'_>) -> Option<NetworkPolicy> {
    let spec = &cs.spec.network_policy;
    if !spec.enabled || !site.network_policy_supported {
        return None;
    }
    // The policy applies to pods with muster's own label only (never to another
    // team's pod that carries the legacy instance label); the cluster's pods may
    // reach each other by the selection, so that during the rollout that gives a
    // legacy cluster's pods the new label the old ones still reach the new.
    let pods = LabelSelector {
        match_labels: Some(Selection::Muster.labels(cs)),
        ..LabelSelector::default()
    };
    let peers = LabelSelector {
        match_labels: Some(site.selection.labels(cs)),
        ..LabelSelector::default()
    };
    let tcp = |port: u16, end: Option<u16>| NetworkPolicyPort {
        protocol: Some("TCP".into()),
        port: Some(IntOrString::Int(i32::from(port))),
        end_port: end.map(i32::from),
    };
    let labels = |k: &str, v: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_owned(), v.to_owned())])),
        ..LabelSelector::default()
    };
    let mut ingress = vec![
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                pod_selector: Some(peers),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp(MANAGEMENT_PORT, None), tcp(CLUSTER_PORT, None)]),
        },
        NetworkPolicyIngressRule {
            from: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(labels(NAMESPACE_NAME_LABEL, site.operator_namespace)),
                pod_selector: Some(labels(OPERATOR_POD_LABEL.0, OPERATOR_POD_LABEL.1)),
                ..NetworkPolicyPeer::default()
            }]),
            ports: Some(vec![tcp(MANAGEMENT_PORT, None)]),
        },
    ];
    if !spec.management_from.is_empty() {
        ingress.push(NetworkPolicyIngressRule {
            from: Some(spec.management_from.clone()),
            ports: Some(vec![tcp(MANAGEMENT_PORT, None)]),
        });
    }
    if site.open_other_ports {
        let any = |protocol: &str| NetworkPolicyPort {
            protocol: Some(protocol.into()),
            ..NetworkPolicyPort::default()
        };
        let (cluster, management) = (CLUSTER_PORT, MANAGEMENT_PORT);
        ingress.push(NetworkPolicyIngressRule {
            from: None,
            ports: Some(vec![
                tcp(1, Some(cluster - 1)),
                tcp(cluster + 1, Some(management - 1)),
                tcp(management + 1, Some(u16::MAX)),
                any("UDP"),
                any("SCTP"),
            ]),
        });
    }
    Some(NetworkPolicy {
        metadata: meta(cs, &cs.name_any()),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(pods),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..NetworkPolicySpec::default()
        }),
    })
}

/// Whether `policy` restricts ingress to pods labelled `labels`: it selects them and
/// has the Ingress type (named, or implied when no types are named).
pub fn isolates(policy: &NetworkPolicy, labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = &policy.spec else {
        return false;
    };
    let ingress = spec
        .policy_types
        .as_ref()
        .is_none_or(|types| types.iter().any(|t| t == "Ingress"));
    let selector = spec.pod_selector.clone().unwrap_or_default();
    ingress && selects(&selector, labels)
}

/// Whether a label selector matches `labels` (an empty selector matches every pod).
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            // An operator this code does not know: taken as matching, so that the pods
            // are assumed isolated and no port is opened that such a policy closes.
            _ => true,
        }
    });
    exact && expressions
}
