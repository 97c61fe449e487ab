//! The headless Service: stable DNS names for the pods and SRV records of both ports,
//! published before the pods are Ready (bootstrap needs to find peers that are not
//! members yet).

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{CLUSTER_PORT, MANAGEMENT_PORT, Selection, meta};
use crate::crd::ClusterSpec;

pub fn build(cs: &ClusterSpec, selection: Selection) -> Service {
    // The protocol is the list's key for server-side apply (older servers refuse a
    // port without it).
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.to_owned()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    };
    Service {
        metadata: meta(cs, &cs.name_any()),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selection.labels(cs)),
            ports: Some(vec![
                port("management", MANAGEMENT_PORT),
                port("cluster", CLUSTER_PORT),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}
