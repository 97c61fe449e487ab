//! Rotating the cluster key on request, without splitting the cluster.
//!
//! A user asks by setting the annotation [`ROTATE_ANNOTATION`] on the ClusterSpec to a
//! value not handled yet (any text: a date, a counter). The operator then makes a new
//! key and moves the key file in the cluster's Secret through the three steps of
//! [`crate::rotation`] — the new key accepted, then signing, then alone — writing the
//! next step only once every pod's agent shows the current one (or, for a pod whose
//! agent is not running, once its volume surely holds it). The Secret records the
//! rotation between reconciles, so an operator that restarts (or a standby that takes
//! over) goes on where it stood: [`TARGET_ANNOTATION`] (the key moved to),
//! [`HANDLED_ANNOTATION`] (the request taken) and [`WRITTEN_AT_ANNOTATION`] (when the
//! key file last changed).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use node_agent::base::secret::{ClusterKey, key_id};

use super::build::{self, CLUSTER_KEY};
use super::{Context, Error};
use crate::ClusterSpec;
use crate::agents::Agents;
use crate::crd::ClusterKeyStatus;
use crate::rotation::{self, Credentials, Id, Report, Step};

/// On the ClusterSpec: a new value asks for a new cluster key.
pub const ROTATE_ANNOTATION: &str = "muster.dev/rotate-cluster-key";
/// On the Secret: the value of [`ROTATE_ANNOTATION`] last taken.
pub const HANDLED_ANNOTATION: &str = "muster.dev/cluster-key-rotated-for";
/// On the Secret, while a rotation runs: the id of the key it moves to.
pub const TARGET_ANNOTATION: &str = "muster.dev/cluster-key-target";
/// On the Secret: when the key file last changed (RFC 3339).
pub const WRITTEN_AT_ANNOTATION: &str = "muster.dev/cluster-key-written-at";

/// The longest id an agent may report for a key (ours are 16 hex characters).
const MAX_ID_CHARS: usize = 64;

/// How a request (an annotation's value, anyone's text) is recorded as handled: as it
/// is up to 63 characters, else by its SHA-256, so the record stays small.
pub fn mark(value: &str) -> String {
    use sha2::{Digest, Sha256};
    if value.len() <= 63 {
        value.to_owned()
    } else {
        format!(
            "sha256:{}",
            node_agent::base::hex(&Sha256::digest(value.as_bytes()))
        )
    }
}

/// What the operator moves the key file to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// One key and no request pending: nothing to do, no agent asked.
    Nothing,
    /// To the key of this id (in the file already): a rotation under way, or extra
    /// keys left by hand to drop.
    To(Id),
    /// A request not taken yet: a new key, made now.
    NewKey,
}

/// What to move to, from the key file's state and the annotations.
pub fn want(
    mounted: &Credentials,
    target: Option<&str>,
    requested: Option<&str>,
    handled: Option<&str>,
) -> Want {
    if let Some(t) = target.filter(|t| mounted.accepted.contains(*t)) {
        return Want::To(t.to_owned());
    }
    if mounted.accepted.len() > 1 {
        // Two keys but no rotation recorded (a hand edit, a lost annotation): back to
        // the one that signs, before anything new.
        return Want::To(mounted.in_use.clone());
    }
    if requested.is_some_and(|r| Some(r) != handled) {
        return Want::NewKey;
    }
    Want::Nothing
}

/// The key file's keys (the signing key first) and their state.
#[derive(Debug, Clone)]
pub struct Ring {
    pub keys: Vec<Vec<u8>>,
    pub state: Credentials,
}

impl Ring {
    /// The keys of a key file as the Secret holds it.
    pub fn parse(text: &[u8]) -> Result<Self, String> {
        let keys = ClusterKey::parse_file(text)?;
        let ids: Vec<Id> = keys.iter().map(|k| key_id(k)).collect();
        let in_use = ids.first().cloned().ok_or("no key")?;
        Ok(Self {
            keys,
            state: Credentials {
                accepted: ids.into_iter().collect(),
                in_use,
            },
        })
    }

    /// The key file of `next`, from this ring's keys and `new` (a key made for it).
    pub fn file_of(&self, next: &Credentials, new: Option<&[u8]>) -> Result<Vec<u8>, String> {
        let mut lines = Vec::new();
        for id in next.ring() {
            let key = self
                .keys
                .iter()
                .map(Vec::as_slice)
                .chain(new)
                .find(|k| key_id(k) == id)
                .ok_or_else(|| format!("no key of id {id} at hand"))?;
            lines.push(key.to_vec());
        }
        Ok(lines.join(&b'\n'))
    }
}

/// What one agent's `/bootstrap/status` says of its keys, as a report.
pub fn report_of(cluster_keys: &[String]) -> Report {
    if cluster_keys.is_empty() {
        return Report::Unknown(
            "it reports no cluster key (an agent older than key rotation: update its image)".into(),
        );
    }
    if cluster_keys.len() > ClusterKey::MAX_KEYS
        || cluster_keys.iter().any(|k| k.len() > MAX_ID_CHARS)
    {
        return Report::Unknown("its key ids are malformed".into());
    }
    Report::Uses(Credentials {
        accepted: cluster_keys.iter().cloned().collect::<BTreeSet<_>>(),
        in_use: cluster_keys[0].clone(),
    })
}

/// Whether the agent container of `pod` runs now.
fn agent_running(pod: &Pod) -> bool {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .any(|c| c.name == "agent" && c.state.as_ref().is_some_and(|s| s.running.is_some()))
}

/// What the rotation did and where it stands.
#[derive(Debug, Default)]
pub struct Kept {
    /// Events: (reason, action, note).
    pub done: Vec<(&'static str, &'static str, String)>,
    pub status: Option<ClusterKeyStatus>,
    /// A rotation is under way: look again soon.
    pub rotating: bool,
}

/// When the files of `secret` were last written, at the latest: the latest of the
/// server's times on it (creation, each field manager's last write, which covers
/// edits by hand) and the operator's own record (`annotation`), plus a second (the server's times
/// are cut to whole seconds). None when it carries no time at all.
fn written_at(secret: &Secret, annotation: &str) -> Option<SystemTime> {
    let m = &secret.metadata;
    let server = m.creation_timestamp.iter().map(|t| t.0).chain(
        m.managed_fields
            .iter()
            .flatten()
            .filter_map(|f| f.time.as_ref().map(|t| t.0)),
    );
    let recorded = m
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation))
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
    server
        .chain(recorded)
        .max()
        .map(|t| SystemTime::from(t) + Duration::from_secs(1))
}

/// The pods that must report before a step: those seen, and every pod the
/// StatefulSet should have by its ordinals (one not seen is waited for). Without the
/// cluster's StatefulSet (deleted, or left by `--cascade=orphan`) its pods cannot be
/// told apart from others': a stand-in name that never reports holds the rotation.
fn expected_pods(name: &str, stateful_set: Option<&StatefulSet>, pods: &[Pod]) -> Vec<String> {
    let mut names: BTreeSet<String> = pods.iter().map(ResourceExt::name_any).collect();
    match stateful_set {
        Some(set) => {
            let want = set.spec.replicas.unwrap_or(1);
            let has = set.status.as_ref().map_or(0, |s| s.replicas);
            for i in 0..want.max(has).clamp(0, 10_000) {
                names.insert(format!("{}-{i}", set.name_any()));
            }
        }
        None => {
            names.insert(format!(
                "StatefulSet {name} (not there: pods it left cannot be followed)"
            ));
        }
    }
    names.into_iter().collect()
}

/// The pods of a cluster as one reconcile read them, and how their agents are reached:
/// what a rotation asks before each step.
#[derive(Debug, Clone, Copy)]
pub struct Pods<'a> {
    pub stateful_set: Option<&'a StatefulSet>,
    pub pods: &'a [Pod],
    /// How the agents are reached; why they cannot be (no TLS client yet, and why).
    pub agents: Result<&'a Agents, &'a str>,
    /// How late, at most, a kubelet shows a Secret change in a pod's volume.
    pub settle: Duration,
    /// When the pods were read (before this reconcile asked anything).
    pub read_at: SystemTime,
}

impl Pods<'_> {
    /// Every pod that must report, and what each one's agent reports (`report` reads
    /// an answer), asked 8 at a time within the agents' scan deadline.
    pub async fn reports(
        &self,
        name: &str,
        report: impl Fn(&node_agent::api::BootstrapStatusBody) -> Report,
    ) -> (Vec<String>, Vec<(String, Report)>) {
        let names = expected_pods(name, self.stateful_set, self.pods);
        let mut reports: Vec<(String, Report)> = Vec::new();
        let mut ask: Vec<(String, IpAddr)> = Vec::new();
        for pod in self.pods {
            let pod_name = pod.name_any();
            if !agent_running(pod) {
                reports.push((pod_name, Report::NotRunning));
            } else if let Some(ip) = super::observe::pod_ip(pod) {
                ask.push((pod_name, ip));
            } else {
                reports.push((pod_name, Report::Unknown("no pod IP".into())));
            }
        }
        match self.agents {
            Ok(agents) => {
                for (pod_name, answer) in agents.statuses(&ask).await {
                    let r = match answer {
                        Ok(s) => report(&s),
                        Err(e) => Report::Unknown(e),
                    };
                    reports.push((pod_name, r));
                }
            }
            Err(why) => reports.extend(
                ask.into_iter()
                    .map(|(p, _)| (p, Report::Unknown(why.to_owned()))),
            ),
        }
        (names, reports)
    }

    /// How long `secret` (its last change recorded under `annotation`) had been
    /// written when the pods were read (a pod seen not running then may have started
    /// since, on the files its volume held).
    pub fn mounted_for(&self, secret: &Secret, annotation: &str) -> Duration {
        written_at(secret, annotation)
            .and_then(|w| self.read_at.duration_since(w).ok())
            .unwrap_or_default()
    }
}

/// The text of a rotation's wait (`to`: where it goes): the first pods that lag and
/// why, and, once the mounted state is older than a kubelet takes to show it, what to
/// do about an agent that keeps other files (`files`: what they are; `interval`: the
/// agent setting of how often it reads them, if it has one).
pub fn waiting_text(
    to: &str,
    files: &str,
    interval: Option<&str>,
    lagging: &[(String, String)],
    mounted_for: Duration,
    settle: Duration,
) -> String {
    let shown: Vec<String> = lagging
        .iter()
        .take(4)
        .map(|(p, why)| format!("{p}: {why}"))
        .collect();
    let more = lagging.len().saturating_sub(shown.len());
    let mut text = format!(
        "{to}: waiting until every agent uses the {files} as written ({})",
        shown.join("; ")
    );
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    if mounted_for >= settle {
        // Longer than a kubelet takes: not a volume still to refresh.
        let why = match interval {
            Some(setting) => {
                format!("refused them or reads them less often (its log and {setting} say which)")
            }
            None => "refused them (its log says why)".to_owned(),
        };
        text.push_str(&format!(
            "; an agent that keeps other {files} this long {why}: a pod deleted starts on the {files} as written; one that does not answer is waited for as long as it runs"
        ));
    }
    text
}

/// One look at the cluster key of `cs`: its Secret `secret` (as read, this
/// ClusterSpec's) and the cluster's `pods`. Asks the agents only while a rotation is
/// wanted; writes the next step when the planner says so, over the Secret as read (a
/// write since then is looked at next time).
pub async fn keep(
    ctx: &Context,
    cs: &ClusterSpec,
    ns: &str,
    secret: &Secret,
    pods: &Pods<'_>,
) -> Result<Kept, Error> {
    let name = build::secret_name(cs);
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get(CLUSTER_KEY))
        .map(|v| v.0.clone())
        .unwrap_or_default();
    let ring = Ring::parse(&text).map_err(|e| {
        Error::Secret(format!(
            "Secret {ns}/{name} holds no usable {CLUSTER_KEY}: {e}; the operator never makes a key anew under running agents (it would split them): restore the Secret from a backup"
        ))
    })?;
    let annotations = secret.annotations();
    let requested = cs.annotations().get(ROTATE_ANNOTATION).map(|v| mark(v));
    let requested = requested.as_deref();
    let handled = annotations.get(HANDLED_ANNOTATION).map(String::as_str);
    let target = annotations.get(TARGET_ANNOTATION).map(String::as_str);
    let mut kept = Kept {
        status: Some(ClusterKeyStatus {
            keys: ring.state.ring(),
            rotation: None,
        }),
        ..Kept::default()
    };
    let (target_id, new_key) = match want(&ring.state, target, requested, handled) {
        Want::Nothing => return Ok(kept),
        Want::To(id) => (id, None),
        Want::NewKey => {
            let mut random = [0u8; 32];
            getrandom::fill(&mut random)
                .map_err(|e| Error::Secret(format!("no randomness for a new cluster key: {e}")))?;
            let key = node_agent::base::hex(&random).into_bytes();
            (key_id(&key), Some(key))
        }
    };
    kept.rotating = true;

    let mounted_for = pods.mounted_for(secret, WRITTEN_AT_ANNOTATION);
    let (names, reports) = pods
        .reports(&cs.name_any(), |s| report_of(&s.cluster_keys))
        .await;
    let settle = pods.settle;
    let observed = rotation::Observed {
        mounted: &ring.state,
        mounted_for,
        settle,
        pods: &names,
        reports: &reports,
    };
    let step = rotation::plan(&observed, &target_id);
    let short = |id: &str| id.get(..8).unwrap_or(id).to_owned();
    match step {
        Step::Wait(lagging) => {
            // A new key not written yet is made anew next time: no id to show.
            let to = if new_key.is_some() {
                "to a new key".to_owned()
            } else {
                format!("to key {}", short(&target_id))
            };
            let text = waiting_text(&to, "key file", None, &lagging, mounted_for, settle);
            if let Some(s) = kept.status.as_mut() {
                s.rotation = Some(text);
            }
        }
        Step::Done if target.is_none() => kept.rotating = false,
        Step::Done => {
            // Every agent signs with the target alone: the rotation is over.
            let mut next = secret.clone();
            let a = next
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            a.remove(TARGET_ANNOTATION);
            if write(ctx, ns, &name, next).await? {
                kept.rotating = false;
                kept.done.push((
                    "ClusterKeyRotated",
                    "Rotate",
                    format!(
                        "every agent signs with cluster key {} alone now",
                        short(&target_id)
                    ),
                ));
            }
        }
        Step::Mount(next_state) => {
            let file = ring
                .file_of(&next_state, new_key.as_deref())
                .map_err(Error::Secret)?;
            let mut next = secret.clone();
            next.data
                .get_or_insert_with(Default::default)
                .insert(CLUSTER_KEY.to_owned(), ByteString(file));
            let a = next
                .metadata
                .annotations
                .get_or_insert_with(Default::default);
            a.insert(TARGET_ANNOTATION.to_owned(), target_id.clone());
            a.insert(WRITTEN_AT_ANNOTATION.to_owned(), rfc3339(SystemTime::now()));
            if new_key.is_some()
                && let Some(r) = requested
            {
                a.insert(HANDLED_ANNOTATION.to_owned(), r.to_owned());
            }
            if write(ctx, ns, &name, next).await? {
                let what = if next_state.accepted.len() > 1 && next_state.in_use != target_id {
                    format!(
                        "cluster key {} added beside {} (accepted, not signing yet)",
                        short(&target_id),
                        short(&next_state.in_use)
                    )
                } else if next_state.accepted.len() > 1 {
                    format!(
                        "cluster key {} signs now; the old one is still accepted",
                        short(&target_id)
                    )
                } else {
                    format!(
                        "cluster key {} alone in the key file",
                        short(&next_state.in_use)
                    )
                };
                let reason = if new_key.is_some() {
                    "ClusterKeyRotationStarted"
                } else {
                    "ClusterKeyRotationStep"
                };
                tracing::info!(secret = %name, step = %what, "cluster key rotation");
                kept.done.push((reason, "Rotate", what.clone()));
                if let Some(s) = kept.status.as_mut() {
                    s.keys = next_state.ring();
                    s.rotation = Some(format!(
                        "to key {}: {what}; the next step once every agent uses it",
                        short(&target_id)
                    ));
                }
            }
        }
    }
    Ok(kept)
}

/// Replaces Secret `name` by `next` (with the resource version it was read at):
/// false when it changed since (looked at next time).
pub(super) async fn write(
    ctx: &Context,
    ns: &str,
    name: &str,
    next: Secret,
) -> Result<bool, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api.replace(name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            tracing::info!(secret = %name, "changed since read; looked at again next time");
            Ok(false)
        }
        Err(e) => Err(Error::kube(format!("update Secret {name}"), e)),
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    node_agent::tls::rfc3339(
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(keys: &[&str]) -> Ring {
        Ring::parse(keys.join("\n").as_bytes()).expect("a ring")
    }

    #[test]
    fn a_request_is_taken_once_and_a_rotation_under_way_goes_on() {
        let one = ring_of(&["k-one-0123456789abcdef"]).state;
        assert_eq!(want(&one, None, None, None), Want::Nothing);
        assert_eq!(want(&one, None, Some("a"), None), Want::NewKey);
        assert_eq!(want(&one, None, Some("a"), Some("a")), Want::Nothing);
        assert_eq!(want(&one, None, Some("b"), Some("a")), Want::NewKey);
        // A target that is the one key: the planner finds it done.
        assert_eq!(
            want(&one, Some(&one.in_use), Some("a"), Some("a")),
            Want::To(one.in_use.clone())
        );
        let two = ring_of(&["k-one-0123456789abcdef", "k-two-0123456789abcdef"]).state;
        let second = two.ring()[1].clone();
        assert_eq!(
            want(&two, Some(&second), Some("a"), Some("a")),
            Want::To(second.clone())
        );
        // A new request waits until the rotation under way ends.
        assert_eq!(
            want(&two, Some(&second), Some("b"), Some("a")),
            Want::To(second)
        );
        // Two keys and no record of why: back to the signing one first.
        assert_eq!(
            want(&two, None, Some("b"), Some("a")),
            Want::To(two.in_use.clone())
        );
        // A recorded target that is not in the file (edited by hand) counts for nothing.
        assert_eq!(want(&one, Some("gone"), None, None), Want::Nothing);
    }

    #[test]
    fn the_key_file_follows_the_planned_states_with_the_new_key() {
        let ring = ring_of(&["old-key-0123456789abcdef"]);
        let new = b"new-key-0123456789abcdef".to_vec();
        let new_id = key_id(&new);
        let mut state = ring.state.clone();
        state.accepted.insert(new_id.clone());
        let file = ring.file_of(&state, Some(&new)).expect("a file");
        assert_eq!(file, b"old-key-0123456789abcdef\nnew-key-0123456789abcdef");
        let ring2 = Ring::parse(&file).expect("a ring");
        state.in_use = new_id.clone();
        assert_eq!(
            ring2.file_of(&state, None).expect("a file"),
            b"new-key-0123456789abcdef\nold-key-0123456789abcdef"
        );
        let last = Credentials::single(&new_id);
        assert_eq!(
            ring2.file_of(&last, None).expect("a file"),
            b"new-key-0123456789abcdef"
        );
        // A key that is nowhere at hand is an error, never an empty line.
        assert!(ring.file_of(&Credentials::single("nope"), None).is_err());
    }

    #[test]
    fn the_key_file_counts_as_written_at_the_latest_time_on_the_secret() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
        let at = |s: &str| s.parse::<k8s_openapi::jiff::Timestamp>().expect("a time");
        let mut secret = Secret::default();
        assert_eq!(
            written_at(&secret, WRITTEN_AT_ANNOTATION),
            None,
            "no time: not settled"
        );
        secret.metadata.creation_timestamp = Some(Time(at("2026-01-01T00:00:00Z")));
        let created = SystemTime::from(at("2026-01-01T00:00:01Z"));
        assert_eq!(written_at(&secret, WRITTEN_AT_ANNOTATION), Some(created));
        // An edit by hand long after creation, and the operator's own older record.
        secret.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            time: Some(Time(at("2026-03-01T00:00:00Z"))),
            ..ManagedFieldsEntry::default()
        }]);
        secret.metadata.annotations = Some(
            [(
                WRITTEN_AT_ANNOTATION.to_owned(),
                "2026-02-01T00:00:00Z".to_owned(),
            )]
            .into_iter()
            .collect(),
        );
        let edited = SystemTime::from(at("2026-03-01T00:00:01Z"));
        assert_eq!(written_at(&secret, WRITTEN_AT_ANNOTATION), Some(edited));
        // The operator's record later than the server's times (a write it made whose
        // field times were lost), and one that does not parse.
        let a = secret.metadata.annotations.as_mut().expect("annotations");
        a.insert(
            WRITTEN_AT_ANNOTATION.to_owned(),
            "2026-04-01T00:00:00Z".to_owned(),
        );
        let recorded = SystemTime::from(at("2026-04-01T00:00:01Z"));
        assert_eq!(written_at(&secret, WRITTEN_AT_ANNOTATION), Some(recorded));
        let a = secret.metadata.annotations.as_mut().expect("annotations");
        a.insert(WRITTEN_AT_ANNOTATION.to_owned(), "yesterday".to_owned());
        assert_eq!(written_at(&secret, WRITTEN_AT_ANNOTATION), Some(edited));
    }

    #[test]
    fn pods_the_stateful_set_should_have_are_waited_for_even_unseen() {
        let pod = |n: &str| {
            let mut p = Pod::default();
            p.metadata.name = Some(n.into());
            p
        };
        let mut set = StatefulSet::default();
        set.metadata.name = Some("shop".into());
        set.spec.replicas = Some(3);
        let seen = [pod("shop-0"), pod("shop-2")];
        assert_eq!(
            expected_pods("shop", Some(&set), &seen),
            ["shop-0", "shop-1", "shop-2"]
        );
        // Scaling down: the pods it still has are waited for too.
        set.spec.replicas = Some(1);
        set.status = Some(k8s_openapi::api::apps::v1::StatefulSetStatus {
            replicas: 2,
            ..Default::default()
        });
        assert_eq!(expected_pods("shop", Some(&set), &[]), ["shop-0", "shop-1"]);
        // No StatefulSet: a name that never reports.
        let without = expected_pods("shop", None, &[]);
        assert_eq!(without.len(), 1);
        assert!(without[0].starts_with("StatefulSet shop"), "{without:?}");
    }

    #[test]
    fn what_agents_report_is_bounded_before_it_counts() {
        assert!(matches!(report_of(&[]), Report::Unknown(_)));
        assert!(matches!(
            report_of(&vec!["a".to_owned(); 5]),
            Report::Unknown(_)
        ));
        assert!(matches!(report_of(&["x".repeat(65)]), Report::Unknown(_)));
        match report_of(&["b".into(), "a".into()]) {
            Report::Uses(c) => {
                assert_eq!(c.in_use, "b");
                assert_eq!(c.ring(), ["b", "a"]);
            }
            r => panic!("{r:?}"),
        }
    }
}
