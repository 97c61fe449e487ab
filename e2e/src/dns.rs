//! Cluster DNS for the local platform: an authoritative server for `cluster.local.`
//! (hickory's server crate) whose records follow the API server's Services and Pods,
//! as CoreDNS's kubernetes plugin does for what muster needs:
//!
//! - a ClusterIP Service: `SVC.NS.svc.cluster.local` A → its cluster IP; SRV per named
//!   port → that name, the Service's port;
//! - a headless Service: A → the IP of every ready pod its selector matches (also
//!   not-ready ones with `publishNotReadyAddresses`); SRV per named port → one target
//!   per pod, `HOSTNAME.SVC.NS.svc.cluster.local` when the pod's `hostname` and
//!   `subdomain` name it (StatefulSet pods), else `A-B-C-D.SVC.NS.svc.cluster.local`;
//!   those names have A records too; the port is the target port.
//!
//! Records are rebuilt from watch caches on every change (coalesced over 50 ms), so a
//! change is visible well within a second. TTL 5 s; pods read it through their own
//! `/etc/resolv.conf`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordSet, RrKey};
use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};
use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::Error;

pub const DOMAIN: &str = "cluster.local.";
const TTL: u32 = 5;

fn name(s: &str) -> Option<Name> {
    Name::from_str(s).ok()
}

/// `true` when the pod's Ready condition is True.
fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn matches(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

fn address(host: Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => Record::from_rdata(host, TTL, RData::A(A(v4))),
        IpAddr::V6(v6) => Record::from_rdata(host, TTL, RData::AAAA(AAAA(v6))),
    }
}

/// The container port a Service's target port means for one pod.
fn target_port(target: Option<&IntOrString>, port: i32, pod: &Pod) -> Option<u16> {
    let p = match target {
        None => port,
        Some(IntOrString::Int(p)) => *p,
        Some(IntOrString::String(named)) => {
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(named.as_str()))?
                .container_port
        }
    };
    u16::try_from(p).ok()
}

/// `_PORT._PROTO.SERVICE` → `target:port`, for a named Service port.
fn srv(p: &ServicePort, base: &Name, port: u16, target: &Name) -> Option<Record> {
    let port_name = p.name.as_deref()?;
    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
    let owner = name(&format!("_{port_name}._{proto}.{base}"))?;
    Some(Record::from_rdata(
        owner,
        TTL,
        RData::SRV(SRV::new(0, 100, port, target.clone())),
    ))
}

/// Every record of the zone for these Services and Pods (pure: unit-tested).
pub fn zone_records(services: &[Arc<Service>], pods: &[Arc<Pod>]) -> Vec<Record> {
    let mut out = Vec::new();
    for svc in services {
        let (Some(svc_name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
            continue;
        };
        let Some(spec) = &svc.spec else { continue };
        let Some(base) = name(&format!("{svc_name}.{ns}.svc.{DOMAIN}")) else {
            continue;
        };
        let ports = spec.ports.clone().unwrap_or_default();
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
                out.push(address(base.clone(), ip));
            }
            for p in &ports {
                if let Ok(port) = u16::try_from(p.port) {
                    out.extend(srv(p, &base, port, &base));
                }
            }
            continue;
        }
        let selector = spec.selector.clone().unwrap_or_default();
        let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
        for pod in pods {
            if pod.metadata.namespace.as_ref() != Some(ns) || !matches(&selector, pod) {
                continue;
            }
            let terminating = pod.metadata.deletion_timestamp.is_some();
            if !publish_not_ready && (terminating || !ready(pod)) {
                continue;
            }
            let Some(ip) = pod_ip(pod) else { continue };
            out.push(address(base.clone(), ip));
            let pod_spec = pod.spec.as_ref();
            let host = match (
                pod_spec.and_then(|s| s.hostname.as_deref()),
                pod_spec.and_then(|s| s.subdomain.as_deref()),
            ) {
                (Some(h), Some(sub)) if sub == svc_name => h.to_owned(),
                _ => ip.to_string().replace(['.', ':'], "-"),
            };
            let Some(target) = name(&format!("{host}.{base}")) else {
                continue;
            };
            out.push(address(target.clone(), ip));
            for p in &ports {
                if let Some(port) = target_port(p.target_port.as_ref(), p.port, pod) {
                    out.extend(srv(p, &base, port, &target));
                }
            }
        }
    }
    out
}

/// The running DNS server; stops when dropped.
#[derive(Debug)]
pub struct ClusterDns {
    pub addr: SocketAddr,
    tasks: JoinSet<()>,
}

fn soa(origin: &Name, serial: u32) -> Record {
    let soa = SOA::new(
        Name::from_str("ns.dns.cluster.local.").unwrap_or_else(|_| origin.clone()),
        Name::from_str("hostmaster.cluster.local.").unwrap_or_else(|_| origin.clone()),
        serial,
        3600,
        600,
        86400,
        TTL,
    );
    Record::from_rdata(origin.clone(), TTL, RData::SOA(soa))
}

fn record_map(records: Vec<Record>, serial: u32) -> BTreeMap<RrKey, Arc<RecordSet>> {
    let mut sets: BTreeMap<RrKey, RecordSet> = BTreeMap::new();
    for r in records {
        let key = RrKey::new(LowerName::new(&r.name), r.record_type());
        sets.entry(key)
            .or_insert_with(|| RecordSet::new(r.name.clone(), r.record_type(), serial))
            .insert(r, serial);
    }
    sets.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

impl ClusterDns {
    /// Serves on `addr` (UDP and TCP; port 53 for pods' resolv.conf, which needs root)
    /// from the Services and Pods `client` sees.
    pub async fn start(client: Client, addr: SocketAddr) -> Result<Self, Error> {
        let origin = Name::from_str(DOMAIN).map_err(|e| Error::Setup(e.to_string()))?;
        let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        );
        handler.upsert_mut(soa(&origin, 1), 1);
        let handler = Arc::new(handler);
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![handler.clone()]);

        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .map_err(|e| Error::Setup(format!("cluster DNS cannot bind udp {addr}: {e}")))?;
        let addr = udp.local_addr().map_err(|e| Error::Setup(e.to_string()))?;
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Setup(format!("cluster DNS cannot bind tcp {addr}: {e}")))?;
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);

        let (services, svc_writer) = reflector::store::<Service>();
        let (pods, pod_writer) = reflector::store::<Pod>();
        let changed = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let n = changed.clone();
        let svc_stream = reflector(
            svc_writer,
            watcher(
                Api::<Service>::all(client.clone()),
                watcher::Config::default(),
            ),
        )
        .default_backoff()
        .touched_objects();
        tasks.spawn(async move {
            let mut s = std::pin::pin!(svc_stream);
            while s.next().await.is_some() {
                n.notify_one();
            }
        });
        let n = changed.clone();
        let pod_stream = reflector(
            pod_writer,
            watcher(Api::<Pod>::all(client), watcher::Config::default()),
        )
        .default_backoff()
        .touched_objects();
        tasks.spawn(async move {
            let mut s = std::pin::pin!(pod_stream);
            while s.next().await.is_some() {
                n.notify_one();
            }
        });
        tasks.spawn(async move {
            let mut serial = 1u32;
            let mut last: BTreeSet<String> = BTreeSet::new();
            loop {
                changed.notified().await;
                // Coalesce a burst of changes (a StatefulSet creating its pods).
                tokio::time::sleep(Duration::from_millis(50)).await;
                let records = zone_records(&services.state(), &pods.state());
                let text: BTreeSet<String> = records.iter().map(ToString::to_string).collect();
                if text == last {
                    continue;
                }
                last = text;
                serial = serial.wrapping_add(1);
                let mut all = records;
                all.push(soa(&origin, serial));
                *handler.records_mut().await = record_map(all, serial);
            }
        });
        tasks.spawn(async move {
            let _ = server.block_until_done().await;
        });
        Ok(Self { addr, tasks })
    }
}

impl Drop for ClusterDns {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: k8s_openapi::serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).expect("valid object"))
    }

    fn pod(name: &str, ip: &str, ready: bool, terminating: bool) -> Arc<Pod> {
        let mut meta = serde_json::json!({"name": name, "namespace": "ns", "labels": {"app": "x"}});
        if terminating {
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        parse(serde_json::json!({
            "metadata": meta,
            "spec": {"containers": [{"name": "c", "ports": [{"name": "mgmt", "containerPort": 9000}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
    }

    fn lines(records: &[Record]) -> BTreeSet<String> {
        records
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.record_type(), r.data))
            .collect()
    }

    #[test]
    fn headless_service_lists_ready_pods_with_dashed_names_and_target_ports() {
        let svc = parse(serde_json::json!({
            "metadata": {"name": "x", "namespace": "ns"},
            "spec": {"clusterIP": "None", "selector": {"app": "x"},
                     "ports": [{"name": "management", "port": 8558, "targetPort": "mgmt"}]},
        }));
        let pods = [
            pod("a", "10.1.0.1", true, false),
            pod("b", "10.1.0.2", false, false),
            pod("c", "10.1.0.3", true, true),
        ];
        let got = lines(&zone_records(&[svc], &pods));
        let want: BTreeSet<String> = [
            "x.ns.svc.cluster.local. A 10.1.0.1",
            "10-1-0-1.x.ns.svc.cluster.local. A 10.1.0.1",
            "_management._tcp.x.ns.svc.cluster.local. SRV 0 100 9000 10-1-0-1.x.ns.svc.cluster.local.",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn cluster_ip_service_points_at_its_cluster_ip() {
        let svc = parse(serde_json::json!({
            "metadata": {"name": "api", "namespace": "ns"},
            "spec": {"clusterIP": "10.0.0.7", "selector": {"app": "x"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        }));
        let got = lines(&zone_records(&[svc], &[pod("a", "10.1.0.1", true, false)]));
        let want: BTreeSet<String> = [
            "api.ns.svc.cluster.local. A 10.0.0.7",
            "_http._tcp.api.ns.svc.cluster.local. SRV 0 100 80 api.ns.svc.cluster.local.",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(got, want);
    }
}
