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
//! when forming is allowed again (`newClusterEnabled: true`). A node that claims it and
//! dies in the moment before it forms leaves it held: no cluster forms until someone
//! allows forming again, as after losing a formed cluster (see the README).
//!
//! Whether forming is allowed at all may be read from the API server with it: a record
//! annotated [`CONFIG_MAP_ANNOTATION`] names a ConfigMap of its namespace whose key
//! `new-cluster-enabled` the node otherwise sees only through a mounted file (the
//! operator annotates its records so), which a kubelet refreshes at its own pace (a
//! minute or more). Read after the record is found free and before it is claimed, that
//! key decides over the node's own setting: a node whose file still says false forms as
//! soon as the operator allows forming again and opens the record (a cluster lost as a
//! whole comes back without waiting for every kubelet), and one whose file still says
//! true does not form once the key says false. A named ConfigMap that cannot be read,
//! or whose key is missing or neither true nor false, fails the claim (retried with
//! back-off), as a record that cannot be read does. So that a node can learn the key is
//! on, the lowest node claims the record every 10 s while no cluster is found, even
//! while its own setting is off. A record without the annotation leaves it to the
//! node's own setting. Agents may only read the ConfigMap: a stolen agent token can
//! hold or clear the record, or point it at another ConfigMap, but its RBAC lets it
//! read no other, so it cannot turn forming on.
//!
//! RBAC: `get` and `update` on that one Lease (`resourceNames`); with the annotation,
//! `get` on the ConfigMap it names.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Client, Error};

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

/// The ConfigMap a record names: `None` without the annotation, `Err` when the name is
/// no object name (never sent to the API server as a path).
pub fn config_map_of(lease: &Lease) -> Option<Result<&str, String>> {
    let name = lease
        .metadata
        .annotations
        .as_ref()?
        .get(CONFIG_MAP_ANNOTATION)?;
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    Some(if valid {
        Ok(name.as_str())
    } else {
        Err(format!(
            "its annotation {CONFIG_MAP_ANNOTATION} names no ConfigMap: `{}`",
            name.chars().take(64).collect::<String>()
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
    super::coordinator::parse_flag(text)
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
        }
    }

    /// What the ConfigMap `lease` names says of forming now: `Ok(None)` when it names
    /// none; `Err` when it names one that says nothing usable.
    async fn forming(&self, lease: &Lease) -> Result<Option<bool>, String> {
        let Some(name) = config_map_of(lease) else {
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
            Ok(Some(cm)) => forming_of(&cm).map(Some).map_err(why),
            Ok(None) => Err(why("it does not exist".into())),
            Err(Error::Api(s)) if s.code == 403 => Err(why(format!(
                "{s} — the service account needs get on configmaps `{name}` in namespace `{}`",
                self.namespace
            ))),
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
    fn a_record_names_its_config_map_by_an_object_name_only() {
        assert_eq!(config_map_of(&annotated(None)), None);
        assert_eq!(config_map_of(&annotated(Some("shop"))), Some(Ok("shop")));
        assert_eq!(
            config_map_of(&annotated(Some("shop.v2-1"))),
            Some(Ok("shop.v2-1"))
        );
        for bad in [
            "",
            "Shop",
            "../secrets/x",
            "shop/x",
            "-shop",
            "shop-",
            "a b",
        ] {
            assert!(
                matches!(config_map_of(&annotated(Some(bad))), Some(Err(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            config_map_of(&annotated(Some(&"a".repeat(254)))),
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
}
