//! The join decision: a pure function of what this node has observed, its settings and
//! the time. Akka Cluster Bootstrap's `LowestAddressJoinDecider` rules, in Akka's order,
//! plus one muster rule that lets a node skip the stable-margin wait safely.
//!
//! - (0) No successful lookup yet, or the last lookup failed: no decision.
//! - (a) A contact point reports seed nodes: join them.
//! - (b) Fewer than `required-contact-point-nr` contact points have answered: wait.
//! - (c) The discovered set changed less than `stable-margin` ago: wait — unless every
//!   discovered contact point reports exactly the set this node sees, and this node's
//!   current set is everything it has ever seen (contact-point agreement).
//! - (d) With `contact-with-all-contact-points`, a discovered point has no fresh
//!   answer: wait.
//! - (e) The lowest answering contact point forms the cluster, if it is this node and
//!   `new-cluster-enabled` is on.
//!
//! Why agreement is safe. Assume what holds for the Kubernetes API and a headless
//! Service's DNS: every lookup returns a snapshot of one growing set of pods, at most
//! `stable-margin − probing-failure-timeout` stale (2 s with the defaults). Views are then
//! nested. Suppose X formed by agreement on `S_X` and Y formed on `S_Y`, X ≠ Y.
//! - `Y ∈ S_X`: Y answered X (rule d) without seed nodes, so before Y formed, reporting
//!   its ever-seen set, which was `S_X ∋ X`. Y's ever-seen set only grows, so Y could not
//!   later form by agreement on a set without X; with X in `S_Y`, X answered Y and X < Y
//!   (X was lowest in `S_X`), so Y was not lowest. Forming by stable margin on a set
//!   without X is the staleness case the assumption excludes.
//! - `Y ∉ S_X`: then `S_X ⊂ S_Y`, X answered Y before X formed, reporting its ever-seen
//!   set. If Y formed by agreement that set was `S_Y ∋ Y`, so X's ever-seen set held Y
//!   and X could not agree on `S_X`. If Y formed by stable margin, `S_Y` had been in the
//!   source for `stable-margin`, and X looked up within `probing-failure-timeout` of it,
//!   so X's view held Y: a contradiction again.
//!
//! The seeded simulation (`tests/simulation.rs`) checks this across thousands of runs.
//! Answers older than `probing-failure-timeout` never count.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use crate::api::SeedNodes;
use crate::base::address::{ContactPoint, NodeAddress};
use crate::base::time::Time;

/// What one probe of a contact point's `/bootstrap/seed-nodes` returned, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// When the answer arrived.
    pub at: Time,
    pub answer: SeedNodes,
}

/// Everything the decision looks at.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    /// Successful lookups so far.
    pub lookups: u64,
    /// The error of the latest lookup, if it failed.
    pub lookup_error: Option<String>,
    /// The contact points of the latest successful lookup.
    pub discovered: BTreeSet<ContactPoint>,
    /// When `discovered` last changed (as a set).
    pub discovered_changed_at: Time,
    /// Every contact point any lookup has returned.
    pub ever_seen: BTreeSet<ContactPoint>,
    /// The latest answer of each discovered contact point.
    pub answers: BTreeMap<ContactPoint, ProbeAnswer>,
}

/// The settings the decision uses.
#[derive(Debug, Clone, PartialEq)]
pub struct DeciderSettings {
    pub required_contact_point_nr: usize,
    pub stable_margin: Duration,
    pub contact_with_all_contact_points: bool,
    pub new_cluster_enabled: bool,
    pub probing_failure_timeout: Duration,
    pub contact_point_agreement: bool,
}

/// Who "self" is: its management endpoint and its cluster address. A contact point is
/// this node if its IP and port are ours, or if its answer names our cluster address
/// (discovery may report a name or another IP for us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfIdentity {
    pub management: ContactPoint,
    pub address: NodeAddress,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "decision",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Decision {
    /// Join these seed nodes (reported by contact points).
    Join { seed_nodes: Vec<NodeAddress> },
    /// Form a new cluster: this node joins itself.
    Form {
        /// True when contact-point agreement let the node skip the stable margin.
        by_agreement: bool,
    },
    /// Keep discovering and probing.
    Wait(Waiting),
}

/// Why there is no decision yet; each names what blocks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "waiting",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum Waiting {
    NoLookupYet,
    LookupFailed {
        error: String,
    },
    NotEnoughContactPoints {
        answered: usize,
        required: usize,
        not_answered: Vec<ContactPoint>,
    },
    NotStable {
        changed_ago_ms: u64,
        stable_margin_ms: u64,
        disagreeing: Vec<ContactPoint>,
    },
    Unanswered {
        contact_points: Vec<ContactPoint>,
    },
    NotLowest {
        lowest: ContactPoint,
        /// Whether this node may form: when not, neither may the lowest (they share
        /// the setting), and the wait lasts until a cluster appears or it is turned on.
        new_cluster_enabled: bool,
    },
    NewClusterDisabled,
}

impl Waiting {
    /// The reason in plain words, for `/bootstrap/status` and logs.
    pub fn explain(&self) -> String {
        fn list(points: &[ContactPoint]) -> String {
            let mut s: Vec<String> = points.iter().take(10).map(ToString::to_string).collect();
            if points.len() > 10 {
                s.push(format!("and {} more", points.len() - 10));
            }
            s.join(", ")
        }
        match self {
            Self::NoLookupYet => "discovering contact points: no lookup has succeeded yet".into(),
            Self::LookupFailed { error } => format!("the last discovery lookup failed, so no decision is made until one succeeds: {error}"),
            Self::NotEnoughContactPoints { answered, required, not_answered } => {
                let mut s = format!("{answered} of the required {required} contact points have answered (bootstrap.required-contact-point-nr)");
                if !not_answered.is_empty() {
                    s.push_str(&format!("; not answering: {}", list(not_answered)));
                }
                s
            }
            Self::NotStable { changed_ago_ms, stable_margin_ms, disagreeing } => {
                let mut s = format!(
                    "the discovered contact points changed {:.1}s ago; a new cluster forms once they are unchanged for {:.1}s (bootstrap.stable-margin)",
                    *changed_ago_ms as f64 / 1000.0,
                    *stable_margin_ms as f64 / 1000.0
                );
                if !disagreeing.is_empty() {
                    s.push_str(&format!(" or every contact point reports the same set; these report another set: {}", list(disagreeing)));
                }
                s
            }
            Self::Unanswered { contact_points } => format!(
                "waiting for an answer from every discovered contact point (bootstrap.contact-with-all-contact-points); no fresh answer from: {}",
                list(contact_points)
            ),
            Self::NotLowest { lowest, new_cluster_enabled: true } => format!("waiting for {lowest}, the lowest contact point, to form the cluster; this node will then join it"),
            Self::NotLowest { lowest, new_cluster_enabled: false } => format!("no contact point reports an existing cluster, and bootstrap.new-cluster-enabled is off, so {lowest}, the lowest contact point, will not form one either: waiting for a cluster to join"),
            Self::NewClusterDisabled => "this node would form a new cluster, but bootstrap.new-cluster-enabled is off: it only joins an existing cluster, and no contact point reports one".into(),
        }
    }
}

impl SelfIdentity {
    pub fn is_self(&self, cp: &ContactPoint, answer: Option<&ProbeAnswer>) -> bool {
        *cp == self.management || answer.is_some_and(|a| a.answer.self_node == self.address)
    }
}

/// The decision (see the module docs for the rules and their order).
pub fn decide(
    obs: &Observations,
    settings: &DeciderSettings,
    me: &SelfIdentity,
    now: Time,
) -> Decision {
    if let Some(error) = &obs.lookup_error {
        return Decision::Wait(Waiting::LookupFailed {
            error: error.clone(),
        });
    }
    if obs.lookups == 0 {
        return Decision::Wait(Waiting::NoLookupYet);
    }
    let fresh = |cp: &ContactPoint| {
        obs.answers
            .get(cp)
            .filter(|a| now.saturating_sub(a.at) <= settings.probing_failure_timeout)
    };
    let answering: Vec<(&ContactPoint, &ProbeAnswer)> = obs
        .discovered
        .iter()
        .filter_map(|cp| fresh(cp).map(|a| (cp, a)))
        .collect();

    // (a) an existing cluster wins over everything.
    let seeds: BTreeSet<NodeAddress> = answering
        .iter()
        .flat_map(|(_, a)| a.answer.nodes().cloned())
        .collect();
    if !seeds.is_empty() {
        return Decision::Join {
            seed_nodes: seeds.into_iter().collect(),
        };
    }
    let not_answered: Vec<ContactPoint> = obs
        .discovered
        .iter()
        .filter(|cp| fresh(cp).is_none())
        .cloned()
        .collect();

    // (b) enough answers.
    if answering.len() < settings.required_contact_point_nr {
        return Decision::Wait(Waiting::NotEnoughContactPoints {
            answered: answering.len(),
            required: settings.required_contact_point_nr,
            not_answered,
        });
    }

    // (c) stable, or agreed.
    let changed_ago = now.saturating_sub(obs.discovered_changed_at);
    let stable = changed_ago >= settings.stable_margin;
    let mut by_agreement = false;
    if !stable {
        let disagreeing: Vec<ContactPoint> = obs
            .discovered
            .iter()
            .filter(|cp| {
                fresh(cp).and_then(|a| a.answer.contact_points.as_ref()) != Some(&obs.discovered)
            })
            .cloned()
            .collect();
        let agreed = settings.contact_point_agreement
            && obs.ever_seen == obs.discovered
            && disagreeing.is_empty();
        if !agreed {
            return Decision::Wait(Waiting::NotStable {
                changed_ago_ms: changed_ago.as_millis() as u64,
                stable_margin_ms: settings.stable_margin.as_millis() as u64,
                disagreeing: if settings.contact_point_agreement {
                    disagreeing
                } else {
                    vec![]
                },
            });
        }
        by_agreement = true;
    }

    // (d) everyone answered.
    if settings.contact_with_all_contact_points && !not_answered.is_empty() {
        return Decision::Wait(Waiting::Unanswered {
            contact_points: not_answered,
        });
    }

    // (e) the lowest answering point forms.
    let Some((lowest, lowest_answer)) = answering.first() else {
        return Decision::Wait(Waiting::NoLookupYet);
    };
    if !me.is_self(lowest, Some(lowest_answer)) {
        return Decision::Wait(Waiting::NotLowest {
            lowest: (*lowest).clone(),
            new_cluster_enabled: settings.new_cluster_enabled,
        });
    }
    if !settings.new_cluster_enabled {
        return Decision::Wait(Waiting::NewClusterDisabled);
    }
    Decision::Form { by_agreement }
}

/// Settings for tests: 2 required contact points, 5 s stable margin, 3 s probing
/// failure timeout, everything else on.
#[cfg(test)]
impl DeciderSettings {
    pub(crate) fn example() -> Self {
        Self {
            required_contact_point_nr: 2,
            stable_margin: std::time::Duration::from_secs(5),
            contact_with_all_contact_points: true,
            new_cluster_enabled: true,
            probing_failure_timeout: std::time::Duration::from_secs(3),
            contact_point_agreement: true,
        }
    }
}

#[cfg(test)]
mod tests;
