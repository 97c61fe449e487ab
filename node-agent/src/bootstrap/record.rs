//! The formation record (`bootstrap.formation-lease`): a `coordination.k8s.io/v1` Lease
//! whose holder is the node that formed the cluster. A node claims it just before it
//! forms; while it is held, no node forms.
//!
//! Why: `new-cluster-enabled` reaches pods through a mounted ConfigMap key, and a
//! kubelet refreshes mounted volumes only when it syncs the pod (every minute or so,
//! plus its cache). A container that starts in that window reads `true` although the
//! cluster formed long ago, and if it cannot see the members (a partition, a discovery
//! view without them) it would form a second cluster. The record is read from the API
//! server at the moment of forming, and the claim is a write conditional on the
//! `resourceVersion` read, so of two claims exactly one wins: whatever a kubelet shows,
//! at most one node forms per record.
//!
//! The record never runs out (no `renewTime`, no duration): only the operator clears it,
//! when forming is allowed again (`newClusterEnabled: true`, a cluster stopped or lost
//! as a whole, a claimant gone before the cluster was seen formed; see the README).
//!
//! Whether forming is allowed at all may be read from the API server with it: a record
//! annotated [`CONFIG_MAP_ANNOTATION`] names a ConfigMap of its namespace whose key
//! `new-cluster-enabled` the node otherwise sees only through a mounted file (the
//! operator annotates its records so), which a kubelet refreshes at its own pace (a
//! minute or more). Read after the record is found free and before it is claimed, that
//! key decides over the node's own setting: a node whose file still says false forms as
//! soon as the operator allows forming again and opens the record (a cluster lost as a
//! whole comes back without waiting for every kubelet), and one whose file still says
//! true does not form once the key says false. A named ConfigMap that is missing, or
//! whose key is missing or neither true nor false, or that does not answer, fails the
//! claim (retried with back-off), as a record that cannot be read does; one this node
//! may not read (403: an older operator's Role) leaves it to the node's own setting,
//! warned about. So that a node can learn the key is on, the lowest node claims the
//! record every 10 s while no cluster is found, even while its own setting is off (every
//! minute where the record names no ConfigMap). A record without the annotation leaves
//! it to the node's own setting. The record `NAME-formation` may name ConfigMap `NAME`
//! alone (the operator's naming): a stolen agent token can hold or clear the record, or
//! drop the annotation, but cannot point it at another ConfigMap whose key says true,
//! and agents may only read theirs, so it cannot turn forming on.
//!
//! RBAC: `get` and `update` on that one Lease (`resourceNames`); with the annotation,
//! `get` on the ConfigMap it names.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Error};
use tracing::warn;

use super::state::ClaimOutcome;

/// A claim gives up after this long (the API server may be slow or cut off).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// The record, and who this node is to it.
#[derive(Clone)]
pub struct FormationRecord {
    api: Api<Lease>,
    name: String,
    namespace: String,
    holder: String,
    /// ConfigMaps of the namespace, for the one a record names.
    config_maps: Api<ConfigMap>,
    /// Whether this node was refused that ConfigMap and said so (said once).
    forbidden_said: Arc<AtomicBool>,
}

impl std::fmt::Debug for FormationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FormationRecord")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("holder", &self.holder)
            .finish()
    }
}

/// The record's annotation naming the ConfigMap whose [`NEW_CLUSTER_ENABLED_KEY`] says
/// whether forming is allowed (see the module docs).
pub const CONFIG_MAP_ANNOTATION: &str = "muster.dev/new-cluster-enabled-config-map";

/// The key of that ConfigMap (the one the operator's agents also see as a file).
pub const NEW_CLUSTER_ENABLED_KEY: &str = "new-cluster-enabled";

/// The suffix of a record that may name a ConfigMap: record `NAME-formation` names
/// ConfigMap `NAME` alone.
pub const RECORD_SUFFIX: &str = "-formation";

/// The ConfigMap record `lease` (called `record`) names: `None` without the annotation,
/// `Err` when it names another than `record` without [`RECORD_SUFFIX`] (never sent to
/// the API server).
pub fn config_map_of<'a>(lease: &'a Lease, record: &str) -> Option<Result<&'a str, String>> {
    let name = lease
        .metadata
        .annotations
        .as_ref()?
        .get(CONFIG_MAP_ANNOTATION)?;
    let allowed = record.strip_suffix(RECORD_SUFFIX).filter(|n| !n.is_empty());
    Some(if allowed == Some(name.as_str()) {
        Ok(name.as_str())
    } else {
        Err(format!(
            "its annotation {CONFIG_MAP_ANNOTATION} names `{}`, but record {record} may only name {}",
            name.chars().take(64).collect::<String>(),
            allowed.map_or_else(
                || format!("a ConfigMap if it is called <ConfigMap>{RECORD_SUFFIX}"),
                |n| format!("ConfigMap {n}")
            )
        ))
    })
}

/// What a ConfigMap says of forming: `Err` when it says nothing usable.
pub fn forming_of(config_map: &ConfigMap) -> Result<bool, String> {
    let text = config_map
        .data
        .as_ref()
        .and_then(|d| d.get(NEW_CLUSTER_ENABLED_KEY))
        .ok_or_else(|| format!("it has no key `{NEW_CLUSTER_ENABLED_KEY}`"))?;
    parse_flag(text)
}

/// The value in a `new-cluster-enabled` file or ConfigMap key: `true`/`false` (also
/// `on`/`off`), surrounding whitespace ignored.
pub fn parse_flag(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" | "on" => Ok(true),
        "false" | "off" => Ok(false),
        other => Err(format!("`{other}` is neither true nor false")),
    }
}

/// Who holds a record, from its spec: `None` when it is free.
pub fn holder_of(spec: Option<&LeaseSpec>) -> Option<&str> {
    spec.and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.trim().is_empty())
}

/// What a record held by `holder` and saying `forming` means to node `me` (its holder
/// string, which carries its uid) whose own `new-cluster-enabled` is `own`: `None` when
/// it is free to claim. A record held by `me` is this very process's own claim whose
/// answer was lost (a timeout or reset after the write was applied): it is claimed, not
/// held by someone else.
pub fn judge(
    holder: Option<&str>,
    forming: Option<bool>,
    own: bool,
    me: &str,
) -> Option<ClaimOutcome> {
    match holder {
        Some(h) if h == me => Some(ClaimOutcome::Claimed),
        Some(h) => Some(ClaimOutcome::HeldBy(h.to_owned())),
        None if !forming.unwrap_or(own) => Some(ClaimOutcome::Disabled {
            from_api: forming.is_some(),
        }),
        None => None,
    }
}

impl FormationRecord {
    /// `holder`: what this node writes as holder (its unique cluster address).
    pub fn new(client: Client, namespace: &str, name: &str, holder: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            holder: holder.to_owned(),
            config_maps: Api::namespaced(client, namespace),
            forbidden_said: Arc::new(AtomicBool::new(false)),
        }
    }

    /// What the ConfigMap `lease` names says of forming now: `Ok(None)` when it names
    /// none; `Err` when it names one that says nothing usable.
    async fn forming(&self, lease: &Lease) -> Result<Option<bool>, String> {
        let Some(name) = config_map_of(lease, &self.name) else {
            return Ok(None);
        };
        let name = name?;
        let why = |e: String| {
            format!(
                "cannot read whether forming is allowed from ConfigMap {}/{name} (named by the formation record): {e}",
                self.namespace
            )
        };
        match self.config_maps.get_opt(name).await {
            Ok(Some(cm)) => {
                self.forbidden_said.store(false, Ordering::Relaxed);
                forming_of(&cm).map(Some).map_err(why)
            }
            Ok(None) => Err(why("it does not exist".into())),
            // Not granted (an older operator's Role): as if no ConfigMap were named —
            // no weaker than dropping the annotation, which the agents' token may do.
            Err(Error::Api(s)) if s.code == 403 => {
                if !self.forbidden_said.swap(true, Ordering::Relaxed) {
                    warn!(config_map = %format!("{}/{name}", self.namespace), error = %s, "the formation record names a ConfigMap this node may not read (it needs get on it); this node's own new-cluster-enabled decides");
                }
                Ok(None)
            }
            Err(e) => Err(why(e.to_string())),
        }
    }

    /// `namespace/name`, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Claims the record, bounded by [`CLAIM_TIMEOUT`]; `new_cluster_enabled`: this
    /// node's own setting (see the module docs for when the record's decides).
    pub async fn claim(&self, new_cluster_enabled: bool) -> ClaimOutcome {
        match tokio::time::timeout(CLAIM_TIMEOUT, self.try_claim(new_cluster_enabled)).await {
            Ok(outcome) => outcome,
            Err(_) => ClaimOutcome::Failed(format!(
                "no answer from the Kubernetes API server within {}s",
                CLAIM_TIMEOUT.as_secs()
            )),
        }
    }

    async fn try_claim(&self, own: bool) -> ClaimOutcome {
        let lease = match self.api.get_opt(&self.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => {
                return ClaimOutcome::Failed(format!(
                    "Lease {} does not exist; whoever set bootstrap.formation-lease (the operator) creates it, and no node forms without it",
                    self.describe()
                ));
            }
            Err(e) => return ClaimOutcome::Failed(self.error("read", &e)),
        };
        let holder = holder_of(lease.spec.as_ref());
        // The ConfigMap only for a free record, read after it: the claim below is
        // conditional on the record as read, so a hold the operator wrote since (it
        // holds the record before it turns the key off) fails the claim.
        let forming = match holder {
            Some(_) => None,
            None => match self.forming(&lease).await {
                Ok(forming) => forming,
                Err(error) => return ClaimOutcome::Failed(error),
            },
        };
        if let Some(outcome) = judge(holder, forming, own, &self.holder) {
            return outcome;
        }
        let mut claimed = lease;
        let now = MicroTime(Timestamp::now());
        let spec = claimed.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = Some(self.holder.clone());
        spec.acquire_time = Some(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        // The replace carries the resourceVersion read: a concurrent claim makes it 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &claimed)
            .await
        {
            Ok(_) => ClaimOutcome::Claimed,
            Err(Error::Api(s)) if s.code == 409 => match self.api.get_opt(&self.name).await {
                Ok(l) => match judge(
                    l.as_ref().and_then(|l| holder_of(l.spec.as_ref())),
                    forming,
                    own,
                    &self.holder,
                ) {
                    Some(outcome) => outcome,
                    None => ClaimOutcome::Failed(format!(
                        "Lease {} changed while it was claimed; trying again",
                        self.describe()
                    )),
                },
                Err(e) => ClaimOutcome::Failed(self.error("read", &e)),
            },
            Err(e) => ClaimOutcome::Failed(self.error("update", &e)),
        }
    }

    fn error(&self, verb: &str, e: &Error) -> String {
        let hint = match e {
            Error::Api(s) if s.code == 403 => format!(
                " — the service account needs get and update on leases.coordination.k8s.io `{}` in namespace `{}`",
                self.name, self.namespace
            ),
            _ => String::new(),
        };
        format!("cannot {verb} Lease {}: {e}{hint}", self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_free_only_without_a_holder() {
        assert_eq!(holder_of(None), None);
        assert_eq!(holder_of(Some(&LeaseSpec::default())), None);
        let blank = LeaseSpec {
            holder_identity: Some("  ".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(holder_of(Some(&blank)), None);
        let held = LeaseSpec {
            holder_identity: Some("muster://shop@10.0.0.1:2552#7".into()),
            ..LeaseSpec::default()
        };
        assert_eq!(
            holder_of(Some(&held)),
            Some("muster://shop@10.0.0.1:2552#7")
        );
    }

    #[test]
    fn our_own_claim_with_a_lost_answer_is_ours_and_an_earlier_incarnation_is_not() {
        let me = "muster://shop@10.0.0.1:2552#7";
        assert_eq!(judge(None, None, true, me), None);
        assert_eq!(judge(Some(me), None, true, me), Some(ClaimOutcome::Claimed));
        assert_eq!(
            judge(Some(me), Some(false), false, me),
            Some(ClaimOutcome::Claimed),
            "a claim that went through stays ours whatever is said since"
        );
        let before_restart = "muster://shop@10.0.0.1:2552#6";
        assert_eq!(
            judge(Some(before_restart), Some(true), true, me),
            Some(ClaimOutcome::HeldBy(before_restart.into()))
        );
    }

    fn config_map(value: Option<&str>) -> ConfigMap {
        ConfigMap {
            data: value.map(|v| {
                std::iter::once((NEW_CLUSTER_ENABLED_KEY.to_owned(), v.to_owned())).collect()
            }),
            ..ConfigMap::default()
        }
    }

    fn annotated(name: Option<&str>) -> Lease {
        let mut l = Lease::default();
        l.metadata.annotations = name
            .map(|n| std::iter::once((CONFIG_MAP_ANNOTATION.to_owned(), n.to_owned())).collect());
        l
    }

    #[test]
    fn a_record_names_only_the_config_map_its_name_implies() {
        assert_eq!(config_map_of(&annotated(None), "shop-formation"), None);
        assert_eq!(
            config_map_of(&annotated(Some("shop")), "shop-formation"),
            Some(Ok("shop"))
        );
        for other in [
            "",
            "other",
            "shop-formation",
            "../secrets/x",
            "Shop",
            "shop ",
        ] {
            assert!(
                matches!(
                    config_map_of(&annotated(Some(other)), "shop-formation"),
                    Some(Err(_))
                ),
                "{other:?}"
            );
        }
        // A record not named <ConfigMap>-formation names none.
        assert!(matches!(
            config_map_of(&annotated(Some("shop")), "shop"),
            Some(Err(_))
        ));
        assert!(matches!(
            config_map_of(&annotated(Some("")), "-formation"),
            Some(Err(_))
        ));
    }

    #[test]
    fn the_config_map_read_at_the_claim_overrides_the_nodes_own_setting() {
        let me = "muster://shop@10.0.0.1:2552#7";
        // Nothing read: the node's own setting decides, as before.
        assert_eq!(judge(None, None, true, me), None);
        assert_eq!(
            judge(None, None, false, me),
            Some(ClaimOutcome::Disabled { from_api: false })
        );
        // Allowed again (the operator opened the record): a node whose file lags forms.
        assert_eq!(judge(None, Some(true), false, me), None);
        // Turned off: a node whose file still says true does not.
        assert_eq!(
            judge(None, Some(false), true, me),
            Some(ClaimOutcome::Disabled { from_api: true })
        );
        // A holder wins over any setting.
        assert_eq!(
            judge(Some("muster-operator: x"), Some(true), true, me),
            Some(ClaimOutcome::HeldBy("muster-operator: x".into()))
        );
        // The ConfigMap's key is read as the file is; anything else says nothing.
        assert_eq!(forming_of(&config_map(Some("true\n"))), Ok(true));
        assert_eq!(forming_of(&config_map(Some("false"))), Ok(false));
        assert!(forming_of(&config_map(Some("yes"))).is_err());
        assert!(forming_of(&config_map(None)).is_err());
    }

    /// A claim's exact traffic against a stand-in API server.
    mod api {
        use super::*;
        use kube::client::Body;
        use serde_json::{Value, json};
        use std::sync::Mutex;

        const ME: &str = "muster://shop@10.0.0.1:2552#7";

        fn status(code: u16) -> Value {
            let reason = match code {
                404 => "NotFound",
                403 => "Forbidden",
                _ => "InternalError",
            };
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "refused", "reason": reason, "code": code})
        }

        fn record(holder: Option<&str>, names: Option<&str>) -> Value {
            let mut meta =
                json!({"name": "shop-formation", "namespace": "prod", "resourceVersion": "5"});
            if let Some(n) = names {
                meta["annotations"] = json!({CONFIG_MAP_ANNOTATION: n});
            }
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": holder.map_or_else(|| json!({}), |h| json!({"holderIdentity": h}))})
        }

        fn key(value: &str) -> (u16, Value) {
            (
                200,
                json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "shop", "namespace": "prod"},
                    "data": {"new-cluster-enabled": value}}),
            )
        }

        /// Claims record `shop-formation` as a node whose own setting is `own`, against
        /// an API server holding `lease` and answering a ConfigMap GET with
        /// `config_map`: the outcome and the calls ("METHOD path").
        async fn claim(
            lease: Value,
            config_map: (u16, Value),
            own: bool,
        ) -> (ClaimOutcome, Vec<String>) {
            let (svc, mut handle) =
                crate::testing::pair::<http::Request<Body>, http::Response<Body>>();
            let record =
                FormationRecord::new(Client::new(svc, "prod"), "prod", "shop-formation", ME);
            let calls = Arc::new(Mutex::new(Vec::new()));
            let seen = calls.clone();
            let server = tokio::spawn(async move {
                while let Some((req, send)) = handle.next_request().await {
                    let (parts, body) = req.into_parts();
                    let bytes = body.collect_bytes().await.expect("a body");
                    let path = parts.uri.path().to_owned();
                    seen.lock()
                        .expect("calls")
                        .push(format!("{} {path}", parts.method));
                    let (code, answer) = match (parts.method.as_str(), path.as_str()) {
                        (
                            "GET",
                            "/apis/coordination.k8s.io/v1/namespaces/prod/leases/shop-formation",
                        ) => (200, lease.clone()),
                        (
                            "PUT",
                            "/apis/coordination.k8s.io/v1/namespaces/prod/leases/shop-formation",
                        ) => (200, serde_json::from_slice(&bytes).expect("a Lease")),
                        ("GET", "/api/v1/namespaces/prod/configmaps/shop") => config_map.clone(),
                        _ => (404, status(404)),
                    };
                    send.send_response(
                        http::Response::builder()
                            .status(code)
                            .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                            .expect("a response"),
                    );
                }
            });
            let outcome = record.claim(own).await;
            server.abort();
            let calls = calls.lock().expect("calls").clone();
            (outcome, calls)
        }

        const GET_RECORD: &str =
            "GET /apis/coordination.k8s.io/v1/namespaces/prod/leases/shop-formation";
        const PUT_RECORD: &str =
            "PUT /apis/coordination.k8s.io/v1/namespaces/prod/leases/shop-formation";
        const GET_KEY: &str = "GET /api/v1/namespaces/prod/configmaps/shop";

        #[tokio::test]
        async fn the_key_is_read_after_the_free_record_and_before_the_claim() {
            let (outcome, calls) = claim(record(None, Some("shop")), key("true"), false).await;
            assert_eq!(
                outcome,
                ClaimOutcome::Claimed,
                "on in the ConfigMap: off here does not matter"
            );
            assert_eq!(calls, [GET_RECORD, GET_KEY, PUT_RECORD]);
            let (outcome, calls) = claim(record(None, Some("shop")), key("false"), true).await;
            assert_eq!(
                outcome,
                ClaimOutcome::Disabled { from_api: true },
                "off in the ConfigMap: on here does not matter"
            );
            assert_eq!(calls, [GET_RECORD, GET_KEY]);
        }

        #[tokio::test]
        async fn a_held_record_is_not_claimed_and_its_config_map_not_read() {
            let (outcome, calls) = claim(
                record(Some("muster-operator: x"), Some("shop")),
                key("true"),
                true,
            )
            .await;
            assert_eq!(outcome, ClaimOutcome::HeldBy("muster-operator: x".into()));
            assert_eq!(calls, [GET_RECORD]);
        }

        #[tokio::test]
        async fn a_config_map_that_says_nothing_usable_fails_the_claim() {
            for (answer, what) in [
                ((404, status(404)), "does not exist"),
                (key("maybe"), "neither true nor false"),
                ((500, status(500)), "refused"),
            ] {
                let (outcome, calls) = claim(record(None, Some("shop")), answer, true).await;
                match outcome {
                    ClaimOutcome::Failed(e) => {
                        assert!(e.contains(what) && e.contains("prod/shop"), "{e}")
                    }
                    other => panic!("{what}: {other:?}"),
                }
                assert_eq!(calls, [GET_RECORD, GET_KEY], "{what}: never claimed");
            }
            // Naming another ConfigMap than its own: not even read.
            let (outcome, calls) = claim(record(None, Some("other")), key("true"), true).await;
            assert!(
                matches!(outcome, ClaimOutcome::Failed(ref e) if e.contains("may only name ConfigMap shop")),
                "{outcome:?}"
            );
            assert_eq!(calls, [GET_RECORD]);
        }

        #[tokio::test]
        async fn a_config_map_this_node_may_not_read_leaves_it_to_its_own_setting() {
            let (outcome, calls) =
                claim(record(None, Some("shop")), (403, status(403)), true).await;
            assert_eq!(outcome, ClaimOutcome::Claimed);
            assert_eq!(calls, [GET_RECORD, GET_KEY, PUT_RECORD]);
            let (outcome, _) = claim(record(None, Some("shop")), (403, status(403)), false).await;
            assert_eq!(outcome, ClaimOutcome::Disabled { from_api: false });
        }

        #[tokio::test]
        async fn a_record_that_names_no_config_map_leaves_it_to_the_nodes_own_setting() {
            let (outcome, calls) = claim(record(None, None), key("false"), true).await;
            assert_eq!(outcome, ClaimOutcome::Claimed);
            assert_eq!(calls, [GET_RECORD, PUT_RECORD]);
            let (outcome, calls) = claim(record(None, None), key("true"), false).await;
            assert_eq!(outcome, ClaimOutcome::Disabled { from_api: false });
            assert_eq!(calls, [GET_RECORD]);
        }
    }
}
