//! The join decision: a pure function of what this node has observed, its settings and
//! the time. Akka Cluster Bootstrap's `LowestAddressJoinDecider` rules, in Akka's order,
//! plus one muster rule that lets a node skip the stable-margin wait safely.
//!
//! - (0) No successful lookup yet, or the last lookup failed: no decision.
//! - (a) A contact point reports seed nodes: join them (at most
//!   [`MAX_JOIN_SEED_NODES`], those most contact points report first).
//! - (b) Fewer than `required-contact-point-nr` contact points have answered: wait.
//! - (c) The discovered set changed less than `stable-margin` ago: wait — unless
//!   contact-point agreement holds: at least `expected-contact-point-nr` contact points
//!   are discovered, this node's current set is everything it has ever seen, and every
//!   discovered contact point's fresh answer reports exactly that set.
//! - (d) With `contact-with-all-contact-points`, a discovered point has no fresh
//!   answer: wait.
//! - (e) The lowest answering contact point forms the cluster, if it is this node and
//!   `new-cluster-enabled` is on. "This node" is known only from its own identity (its
//!   management address, or its own server having answered the probe), never from what
//!   an answer claims; an answer naming a node at another address than the contact
//!   point's is refused ([`super::state::Bootstrap::on_probe`]).
//!
//! Why agreement never makes a second cluster. An earlier version allowed agreement on
//! a set of any size and argued from one assumption: every lookup is a snapshot of one
//! growing set. Discovery does not promise that — two DNS servers or caches that
//! disagree, a set shrinking while pods terminate, stale answers — and with disjoint
//! views two halves each agreed on their half and formed two clusters. The rule now
//! stands on counting instead, which holds whatever discovery returns:
//!
//! - Let `E` be `expected-contact-point-nr`, the number of agents that start together.
//!   Let `H` agents answer honestly while the cluster forms and `L` lie (an agent that
//!   restarts during formation forgets its ever-seen set, so it counts as a liar).
//!   Assume `H + 2L < 2E`. A StatefulSet of `E` replicas runs at most `E` pods at a
//!   time, so with the operator this means fewer than `E/2` liars.
//! - Suppose X formed by agreement on `S_X` and Y on `S_Y`, X ≠ Y. Each set has at least
//!   `E` contact points, each answered freshly, out of `H + L`; so the two share at
//!   least `2E − H − L > L` of them, among them an honest agent Z.
//! - Z reported `S_X` to X and `S_Y` to Y, each as its ever-seen set, which only grows:
//!   say `S_X ⊆ S_Y`. If equal, X and Y are both its lowest member: X = Y.
//! - Otherwise X ∈ S_Y answered Y reporting `S_Y`. X's reported set stops growing when
//!   it decides to form ([`super::state::Bootstrap::ever_seen`]), when it was `S_X ≠ S_Y`;
//!   and before that it was a subset of `S_X`. So X never reported `S_Y`: contradiction.
//! - A formation by agreement next to one by stable margin is Akka's rule against a
//!   faster Akka rule: the agreeing node formed on a set that includes every expected
//!   agent, and a stable-margin formation elsewhere needs a view that left it out for
//!   `stable-margin`, which is exactly when Akka's rule fails on its own.
//!
//! Without `expected-contact-point-nr` there is no agreement: Akka's stable-margin rule
//! only. `stable-margin` must exceed `probing-failure-timeout` (the configuration
//! refuses less). The seeded simulation (`tests/simulation.rs`) runs split, stale,
//! shrinking, TTL-cached and flapping discovery and lying contact points across 10,000
//! runs and counts the clusters formed. Answers older than `probing-failure-timeout`
//! never count.

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
    /// This node's own management server answered (it saw the nonce of this very
    /// probe): the contact point is this node under another address. Never taken from
    /// the answer's content, which anyone can write.
    pub from_self: bool,
}

/// At most this many seed nodes are joined (Akka's bootstrap also uses a handful).
pub const MAX_JOIN_SEED_NODES: usize = 5;

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
    /// How many agents will start (e.g. the StatefulSet's replicas). Contact-point
    /// agreement only counts on a set of at least this many; unset, it never does.
    pub expected_contact_point_nr: Option<usize>,
}

/// Who "self" is: its management endpoint and its cluster address. A contact point is
/// this node if its IP and port are ours, or if our own server answered its probe
/// (discovery may report another IP for us). What an answer claims never makes it us: a
/// liar could then make every node believe it is the lowest.
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

/// Why contact-point agreement does not let this node skip the stable margin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "because",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum NoAgreement {
    /// `expected-contact-point-nr` is not set: the fast path is off.
    NoExpectedNumber,
    /// Fewer contact points than expected are discovered.
    TooFew { discovered: usize, expected: usize },
    /// This node has seen contact points that are no longer discovered.
    SetShrank { gone: Vec<ContactPoint> },
    /// These contact points report another set (or none, or no fresh answer).
    Disagreeing { contact_points: Vec<ContactPoint> },
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
        /// Why contact-point agreement does not apply (none when it is off).
        agreement: Option<NoAgreement>,
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
    /// This node may form and is claiming the formation record first.
    ClaimingFormation {
        lease: String,
    },
    /// The formation record is held: a cluster was formed (or forming is locked), so
    /// this node never forms.
    FormationRecorded {
        lease: String,
        holder: String,
    },
    /// Nobody holds the formation record, but the ConfigMap it names, read from the API
    /// server at the claim, says forming is off.
    NewClusterDisabledInConfigMap {
        lease: String,
    },
    /// The formation record could not be read or written: no formation until it can.
    FormationRecordUnavailable {
        lease: String,
        error: String,
    },
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
            Self::NotStable { changed_ago_ms, stable_margin_ms, agreement } => {
                let mut s = format!(
                    "the discovered contact points changed {:.1}s ago; a new cluster forms once they are unchanged for {:.1}s (bootstrap.stable-margin)",
                    *changed_ago_ms as f64 / 1000.0,
                    *stable_margin_ms as f64 / 1000.0
                );
                match agreement {
                    None => {}
                    Some(NoAgreement::NoExpectedNumber) => s.push_str("; contact-point agreement is not used because bootstrap.expected-contact-point-nr is not set"),
                    Some(NoAgreement::TooFew { discovered, expected }) => s.push_str(&format!(" or {expected} contact points (bootstrap.expected-contact-point-nr) all report the same set; {discovered} are discovered")),
                    Some(NoAgreement::SetShrank { gone }) => s.push_str(&format!("; contact-point agreement is not used because contact points this node saw are no longer discovered: {}", list(gone))),
                    Some(NoAgreement::Disagreeing { contact_points }) => s.push_str(&format!(" or every contact point reports the same set; these report another set: {}", list(contact_points))),
                }
                s
            }
            Self::Unanswered { contact_points } => format!(
                "waiting for an answer from every discovered contact point (bootstrap.contact-with-all-contact-points); no fresh answer from: {}",
                list(contact_points)
            ),
            Self::NotLowest { lowest, new_cluster_enabled: true } => format!("waiting for {lowest}, the lowest contact point, to form the cluster; this node will then join it"),
            Self::NotLowest { lowest, new_cluster_enabled: false } => format!("no contact point reports an existing cluster, and bootstrap.new-cluster-enabled is off here, so {lowest}, the lowest contact point, will not form one either (unless the formation record names a ConfigMap that allows it): waiting for a cluster to join"),
            Self::NewClusterDisabled => "this node would form a new cluster, but bootstrap.new-cluster-enabled is off: it joins an existing cluster once a contact point reports one (with a formation record that names a ConfigMap, that ConfigMap's key decides instead, read at each claim)".into(),
            Self::ClaimingFormation { lease } => format!("this node is the lowest contact point and may form the cluster: claiming the formation record (Lease {lease}, bootstrap.formation-lease) first"),
            Self::FormationRecorded { lease, holder } => format!("this node would form a new cluster, but the formation record (Lease {lease}, bootstrap.formation-lease) is held by {holder}: a cluster was formed before (or forming is locked), so this node never forms one; it joins a cluster once a contact point reports one"),
            Self::NewClusterDisabledInConfigMap { lease } => format!("this node would form a new cluster, but the ConfigMap that the formation record (Lease {lease}) names, read from the API server just now, says new-cluster-enabled is false: it keeps asking while no cluster is found, and joins one once a contact point reports it"),
            Self::FormationRecordUnavailable { lease, error } => format!("this node would form a new cluster, but cannot claim the formation record (Lease {lease}, bootstrap.formation-lease), so it does not form yet: {error}"),
        }
    }
}

impl SelfIdentity {
    pub fn is_self(&self, cp: &ContactPoint, answer: Option<&ProbeAnswer>) -> bool {
        *cp == self.management || answer.is_some_and(|a| a.from_self)
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
    let fresh = |cp: &ContactPoint| fresh_answer(obs, settings, now, cp);
    let answering: Vec<(&ContactPoint, &ProbeAnswer)> = obs
        .discovered
        .iter()
        .filter_map(|cp| fresh(cp).map(|a| (cp, a)))
        .collect();

    // (a) an existing cluster wins over everything. At most a few seed nodes, those
    // most contact points report first: a liar listing thousands cannot make this node
    // open thousands of connections, nor crowd out what honest contact points report.
    let mut reported: BTreeMap<&NodeAddress, usize> = BTreeMap::new();
    for (_, a) in &answering {
        for n in a.answer.nodes().collect::<BTreeSet<_>>() {
            *reported.entry(n).or_default() += 1;
        }
    }
    if !reported.is_empty() {
        let mut ranked: Vec<(&NodeAddress, usize)> = reported.into_iter().collect();
        ranked.sort_by(|(a, x), (b, y)| y.cmp(x).then_with(|| a.cmp(b)));
        let mut seed_nodes: Vec<NodeAddress> = ranked
            .into_iter()
            .take(MAX_JOIN_SEED_NODES)
            .map(|(n, _)| n.clone())
            .collect();
        seed_nodes.sort();
        return Decision::Join { seed_nodes };
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
        let agreement = if settings.contact_point_agreement {
            no_agreement(obs, settings, now)
        } else {
            None
        };
        if !settings.contact_point_agreement || agreement.is_some() {
            return Decision::Wait(Waiting::NotStable {
                changed_ago_ms: changed_ago.as_millis() as u64,
                stable_margin_ms: settings.stable_margin.as_millis() as u64,
                agreement,
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

/// The answer of `cp` if it is recent enough to count (`probing-failure-timeout`).
fn fresh_answer<'a>(
    obs: &'a Observations,
    settings: &DeciderSettings,
    now: Time,
    cp: &ContactPoint,
) -> Option<&'a ProbeAnswer> {
    obs.answers
        .get(cp)
        .filter(|a| now.saturating_sub(a.at) <= settings.probing_failure_timeout)
}

/// Why contact-point agreement does not hold, or `None` when it does: at least the
/// expected number of contact points are discovered, this node never saw any other, and
/// each one's fresh answer reports exactly this set.
fn no_agreement(obs: &Observations, settings: &DeciderSettings, now: Time) -> Option<NoAgreement> {
    let Some(expected) = settings.expected_contact_point_nr else {
        return Some(NoAgreement::NoExpectedNumber);
    };
    if obs.discovered.len() < expected {
        return Some(NoAgreement::TooFew {
            discovered: obs.discovered.len(),
            expected,
        });
    }
    if obs.ever_seen != obs.discovered {
        return Some(NoAgreement::SetShrank {
            gone: obs.ever_seen.difference(&obs.discovered).cloned().collect(),
        });
    }
    let disagreeing: Vec<ContactPoint> = obs
        .discovered
        .iter()
        .filter(|cp| {
            fresh_answer(obs, settings, now, cp).and_then(|a| a.answer.contact_points.as_ref())
                != Some(&obs.discovered)
        })
        .cloned()
        .collect();
    (!disagreeing.is_empty()).then_some(NoAgreement::Disagreeing {
        contact_points: disagreeing,
    })
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
            expected_contact_point_nr: Some(2),
        }
    }
}

#[cfg(test)]
mod tests;
