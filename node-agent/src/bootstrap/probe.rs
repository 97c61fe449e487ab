//! Probing a contact point: `GET /bootstrap/seed-nodes` with the management API's
//! client, from this node's own address, over one kept-alive connection per peer (probes
//! of one peer never overlap). Answers are size-limited and checked against this node's
//! cluster name; anything odd is a clear error for `/bootstrap/status`, never a crash.
//!
//! Each probe sends a fresh random nonce. With a cluster key the answer must be signed
//! over that nonce (see [`crate::api::seed_nodes::sign`]), so a process without the key
//! cannot take part in the decision, and a recorded answer cannot be replayed. The nonce
//! also tells who "self" is: when this node's own server receives a nonce that this
//! node's prober sent, on a connection from this node's own address, the contact point
//! is this node, whatever address discovery gave. (A contact point that relays our own
//! probe back to us connects from its address, so it does not pass as us.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::{ClientError, ManagementClient, SeedNodes};
use crate::base::address::ContactPoint;
use crate::base::rng::os_random_bytes;
use crate::base::secret::ClusterKey;
use crate::tls::Tls;

/// Nonces of this node's probes in flight, and whether this node's own server saw them.
#[derive(Debug, Clone, Default)]
pub struct SelfProbes(Arc<Mutex<HashMap<String, bool>>>);

/// Probes in flight at once are bounded by the contact points; this bounds the map
/// even if that changes.
const MAX_IN_FLIGHT: usize = 65_536;

impl SelfProbes {
    /// Registers `nonce` until the returned guard is dropped (also when the probe is
    /// cancelled).
    fn register(&self, nonce: &str) -> InFlight<'_> {
        let mut m = self.0.lock().expect("self-probe map");
        if m.len() < MAX_IN_FLIGHT {
            m.insert(nonce.to_owned(), false);
        }
        InFlight {
            probes: self,
            nonce: nonce.to_owned(),
        }
    }

    /// The management server received `nonce`: if it is one of ours, remember that.
    pub fn saw(&self, nonce: &str) {
        if let Some(seen) = self.0.lock().expect("self-probe map").get_mut(nonce) {
            *seen = true;
        }
    }
}

struct InFlight<'a> {
    probes: &'a SelfProbes,
    nonce: String,
}

impl InFlight<'_> {
    /// Whether this node's own server saw the nonce.
    fn seen_by_self(&self) -> bool {
        self.probes
            .0
            .lock()
            .expect("self-probe map")
            .get(&self.nonce)
            .copied()
            .unwrap_or(false)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.probes.0.lock() {
            m.remove(&self.nonce);
        }
    }
}

/// A fresh random nonce: 32 hex digits.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    os_random_bytes(&mut bytes);
    crate::base::hex(&bytes)
}

/// The client of all probes of this node.
#[derive(Debug, Clone)]
pub struct Prober {
    client: ManagementClient,
    me: ContactPoint,
    system: String,
    key: Option<ClusterKey>,
    self_probes: SelfProbes,
}

/// A probe's answer, and whether this node's own server gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub answer: SeedNodes,
    pub from_self: bool,
}

impl Prober {
    /// Probes from `local_ip`, naming `me` as the prober, for cluster `system`; each
    /// probe gives up after `timeout`. With `key`, only signed answers are accepted.
    pub fn new(
        local_ip: IpAddr,
        me: &ContactPoint,
        system: &str,
        timeout: Duration,
        key: Option<ClusterKey>,
        tls: Option<&Tls>,
        self_probes: SelfProbes,
    ) -> Self {
        let client = ManagementClient::from_ip(local_ip, timeout);
        Self {
            client: match tls {
                Some(t) => client.with_tls(t.for_clients()),
                None => client,
            },
            me: me.clone(),
            system: system.to_owned(),
            key,
            self_probes,
        }
    }

    pub async fn probe(&self, cp: &ContactPoint) -> Result<Probed, ClientError> {
        let nonce = nonce();
        let in_flight = self.self_probes.register(&nonce);
        let answer = self
            .client
            .seed_nodes(cp, &self.system, Some(&self.me), &nonce, self.key.as_ref())
            .await;
        answer.map(|answer| Probed {
            answer,
            from_self: in_flight.seen_by_self(),
        })
    }
}
