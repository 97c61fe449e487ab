//! A real authoritative DNS server for `cluster.local.` (hickory's server crate) on a
//! loopback address, answering over UDP and TCP like a cluster's DNS would for a
//! headless Service.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::rdata::{A, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

pub const ZONE: &str = "cluster.local.";

/// Records of the zone, built before the server starts.
#[derive(Default)]
pub struct Zone {
    records: Vec<Record>,
}

fn name(s: &str) -> Name {
    Name::from_str(s).expect("a valid DNS name")
}

impl Zone {
    pub fn a(mut self, host: &str, ip: IpAddr) -> Self {
        let IpAddr::V4(v4) = ip else {
            panic!("the test zone holds IPv4 addresses only")
        };
        self.records
            .push(Record::from_rdata(name(host), 5, RData::A(A(v4))));
        self
    }

    pub fn srv(mut self, service: &str, port: u16, target: &str) -> Self {
        self.records.push(Record::from_rdata(
            name(service),
            5,
            RData::SRV(SRV::new(0, 50, port, name(target))),
        ));
        self
    }
}

/// The running server; stops when dropped.
pub struct DnsServer {
    pub addr: SocketAddr,
    server: Server<Catalog>,
}

impl DnsServer {
    pub async fn start(ip: IpAddr, zone: Zone) -> Self {
        Self::start_on(SocketAddr::new(ip, 0), zone).await
    }

    /// Stops this server and serves `zone` on the same address instead (the port is
    /// retried until the old sockets are gone, for at most 5 s).
    pub async fn replace(self, zone: Zone) -> Self {
        let addr = self.addr;
        drop(self);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let free = tokio::net::UdpSocket::bind(addr).await.is_ok()
                && std::net::TcpListener::bind(addr).is_ok();
            if free {
                return Self::start_on(addr, zone).await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the DNS server's port {addr} is still taken 5 s after it stopped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn start_on(addr: SocketAddr, zone: Zone) -> Self {
        let origin = name(ZONE);
        let mut handler =
            InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
                origin.clone(),
                ZoneType::Primary,
                AxfrPolicy::Deny,
            );
        let soa = SOA::new(
            name("ns.cluster.local."),
            name("hostmaster.cluster.local."),
            1,
            3600,
            600,
            86400,
            5,
        );
        handler.upsert_mut(Record::from_rdata(origin.clone(), 5, RData::SOA(soa)), 1);
        for r in zone.records {
            assert!(handler.upsert_mut(r, 1), "record accepted by the zone");
        }
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&origin), vec![Arc::new(handler)]);
        let udp = tokio::net::UdpSocket::bind(addr)
            .await
            .expect("bind the DNS UDP socket");
        let addr = udp.local_addr().expect("UDP address");
        let tcp = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the DNS TCP port (same as UDP)");
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 4096);
        Self { addr, server }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.server.shutdown_token().cancel();
    }
}
