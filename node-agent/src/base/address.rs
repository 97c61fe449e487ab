//! Addresses of cluster nodes and contact points, and the one order every node agrees on.
//!
//! "The lowest address forms the cluster" is only safe if every node sorts addresses the
//! same way. We compare IPs numerically on a single 128-bit scale (IPv4 mapped into
//! `::ffff:0:0/96`, so `10.0.0.1` and `::ffff:10.0.0.1` are the same node), then ports.
//! Names never take part in the order.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The scheme of cluster node addresses (`muster://name@ip:port`).
pub const SCHEME: &str = "muster";

/// The IP as one number: IPv4 mapped into IPv6 so mixed families order consistently.
pub fn ip_order_key(ip: IpAddr) -> u128 {
    let v6: Ipv6Addr = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    u128::from(v6)
}

/// Collapses an IPv4-mapped IPv6 address to IPv4, so equal nodes compare equal.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn fmt_host_port(f: &mut fmt::Formatter<'_>, ip: IpAddr, port: u16) -> fmt::Result {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => write!(f, "{v4}:{port}"),
        IpAddr::V6(v6) => write!(f, "[{v6}]:{port}"),
    }
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not {expected}")]
pub struct AddressParseError {
    input: String,
    expected: &'static str,
}

/// A cluster node's address: the system (cluster) name, IP and cluster port.
#[derive(Debug, Clone)]
pub struct NodeAddress {
    pub system: String,
    pub ip: IpAddr,
    pub port: u16,
}

impl NodeAddress {
    pub fn new(system: impl Into<String>, ip: IpAddr, port: u16) -> Self {
        Self {
            system: system.into(),
            ip: canonical_ip(ip),
            port,
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    /// Parses `muster://system@ip:port`, or `ip:port` with the given default system.
    pub fn parse_with_default_system(s: &str, system: &str) -> Result<Self, AddressParseError> {
        if s.contains("://") {
            return s.parse();
        }
        let sock: SocketAddr = s.parse().map_err(|_| AddressParseError {
            input: s.to_owned(),
            expected: "a node address (muster://name@ip:port or ip:port)",
        })?;
        Ok(Self::new(system, sock.ip(), sock.port()))
    }
}

impl PartialEq for NodeAddress {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for NodeAddress {}
impl Hash for NodeAddress {
    fn hash<H: Hasher>(&self, state: &mut H) {
        ip_order_key(self.ip).hash(state);
        self.port.hash(state);
        self.system.hash(state);
    }
}
impl PartialOrd for NodeAddress {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for NodeAddress {
    fn cmp(&self, other: &Self) -> Ordering {
        ip_order_key(self.ip)
            .cmp(&ip_order_key(other.ip))
            .then(self.port.cmp(&other.port))
            .then_with(|| self.system.cmp(&other.system))
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}://{}@", self.system)?;
        fmt_host_port(f, self.ip, self.port)
    }
}

impl FromStr for NodeAddress {
    type Err = AddressParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || AddressParseError {
            input: s.chars().take(200).collect(),
            expected: "a node address like muster://name@10.0.0.1:2552",
        };
        let rest = s
            .strip_prefix(SCHEME)
            .and_then(|r| r.strip_prefix("://"))
            .ok_or_else(err)?;
        let (system, host_port) = rest.split_once('@').ok_or_else(err)?;
        if system.is_empty()
            || !system
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(err());
        }
        let sock: SocketAddr = host_port.parse().map_err(|_| err())?;
        Ok(Self::new(system, sock.ip(), sock.port()))
    }
}

impl Serialize for NodeAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for NodeAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One incarnation of a node: a restarted process on the same address has a new `uid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UniqueAddress {
    pub address: NodeAddress,
    pub uid: u64,
}

impl UniqueAddress {
    pub fn new(address: NodeAddress, uid: u64) -> Self {
        Self { address, uid }
    }
}

impl fmt::Display for UniqueAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.address, self.uid)
    }
}

/// A discovered peer's management endpoint (where `/bootstrap/seed-nodes` is served).
///
/// Identity and order are the IP and port only; `name` is what discovery called it, kept
/// for messages.
#[derive(Debug, Clone)]
pub struct ContactPoint {
    pub ip: IpAddr,
    pub port: u16,
    pub name: Option<String>,
}

impl ContactPoint {
    pub fn new(ip: IpAddr, port: u16) -> Self {
        Self {
            ip: canonical_ip(ip),
            port,
            name: None,
        }
    }

    pub fn named(ip: IpAddr, port: u16, name: impl Into<String>) -> Self {
        Self {
            ip: canonical_ip(ip),
            port,
            name: Some(name.into()),
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

impl PartialEq for ContactPoint {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ContactPoint {}
impl Hash for ContactPoint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        ip_order_key(self.ip).hash(state);
        self.port.hash(state);
    }
}
impl PartialOrd for ContactPoint {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ContactPoint {
    fn cmp(&self, other: &Self) -> Ordering {
        ip_order_key(self.ip)
            .cmp(&ip_order_key(other.ip))
            .then(self.port.cmp(&other.port))
    }
}

impl fmt::Display for ContactPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_host_port(f, self.ip, self.port)
    }
}

impl FromStr for ContactPoint {
    type Err = AddressParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sock: SocketAddr = s.parse().map_err(|_| AddressParseError {
            input: s.chars().take(200).collect(),
            expected: "a contact point like 10.0.0.1:8558",
        })?;
        Ok(Self::new(sock.ip(), sock.port()))
    }
}

impl Serialize for ContactPoint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
impl<'de> Deserialize<'de> for ContactPoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(s: &str) -> ContactPoint {
        s.parse().unwrap()
    }

    #[test]
    fn node_address_round_trips_v4_and_v6() {
        for s in [
            "muster://shop@10.0.0.1:2552",
            "muster://shop@[fd00::1]:2552",
        ] {
            let a: NodeAddress = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
        }
        let mapped: NodeAddress = "muster://x@[::ffff:10.0.0.1]:2552".parse().unwrap();
        assert_eq!(mapped.to_string(), "muster://x@10.0.0.1:2552");
    }

    #[test]
    fn node_address_rejects_garbage() {
        for s in [
            "",
            "muster://",
            "akka://a@1.2.3.4:1",
            "muster://@1.2.3.4:1",
            "muster://a@host:1",
            "muster://a b@1.2.3.4:1",
        ] {
            assert!(s.parse::<NodeAddress>().is_err(), "{s}");
        }
    }

    #[test]
    fn order_is_numeric_not_textual() {
        assert!(cp("10.0.0.9:8558") < cp("10.0.0.10:8558"));
        assert!(cp("9.255.255.255:8558") < cp("10.0.0.0:8558"));
        assert!(cp("10.0.0.1:8557") < cp("10.0.0.1:8558"));
    }

    #[test]
    fn mixed_families_order_on_one_scale_and_mapped_equals_v4() {
        assert_eq!(cp("[::ffff:10.0.0.1]:8558"), cp("10.0.0.1:8558"));
        // ::1 < ::ffff:0:0/96 (all IPv4) < fd00::/8
        assert!(cp("[::1]:8558") < cp("0.0.0.1:8558"));
        assert!(cp("255.255.255.255:8558") < cp("[fd00::1]:8558"));
        assert!(cp("[fd00::1]:8558") < cp("[fd00::2]:8558"));
    }

    #[test]
    fn names_do_not_change_identity() {
        let a = ContactPoint::named("10.0.0.1".parse().unwrap(), 8558, "pod-0.svc");
        assert_eq!(a, cp("10.0.0.1:8558"));
    }
}
