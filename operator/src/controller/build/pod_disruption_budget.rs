//! The PodDisruptionBudget: voluntary disruptions (drains) take at most
//! `spec.disruptionBudget.maxUnavailable` pods at a time (one by default); none when
//! the spec turns it off.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::{Selection, meta};
use crate::crd::ClusterSpec;

pub fn build(cs: &ClusterSpec, selection: Selection) -> Option<PodDisruptionBudget> {
    let budget = &cs.spec.disruption_budget;
    budget.enabled.then(|| PodDisruptionBudget {
        metadata: meta(cs, &cs.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            // Checked before building; the default if it is somehow not valid.
            max_unavailable: Some(
                budget
                    .max_unavailable()
                    .unwrap_or(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1)),
            ),
            selector: Some(LabelSelector {
                match_labels: Some(selection.labels(cs)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}
