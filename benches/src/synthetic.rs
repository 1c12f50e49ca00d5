//! A synthetic cluster: `n` ClusterIP Services, each with one port (80 →
//! 8080) and `e` ready endpoints in one EndpointSlice. Addresses are
//! deterministic: Service i has ClusterIP 10.96.0.0/12 + i and its
//! endpoints 10.128.0.0/9 + i·e + j.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kipvs_proxy::desired::{Context, Family};
use serde_json::json;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// The node every benchmark's desired state is computed for: IPv4, `rr`,
/// no NodePort addresses (the synthetic Services are ClusterIP only).
pub fn context() -> Context {
    Context {
        node_name: "bench-node".into(),
        node_zone: None,
        families: BTreeSet::from([Family::V4]),
        nodeport_addresses: Vec::new(),
        local_addresses: BTreeSet::new(),
        default_scheduler: "rr".parse().expect("rr is a scheduler"),
        local_fallback_to_cluster: false,
        service_proxy_name: None,
    }
}

/// The ClusterIP of Service `i`.
pub fn cluster_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i + 1)
}

/// The address of endpoint `j` of Service `i`.
pub fn endpoint_ip(i: u32, j: u32, e: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * e + j + 1)
}

/// Service `i`.
pub fn service(i: u32) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"clusterIP": cluster_ip(i).to_string(), "clusterIPs": [cluster_ip(i).to_string()],
                 "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}
    }))
    .expect("valid Service")
}

/// The EndpointSlice of Service `i` with endpoints `0..e`, endpoint `moved`
/// (if any) replaced by a new address.
pub fn slice(i: u32, e: u32, moved: Option<u32>) -> EndpointSlice {
    let eps: Vec<_> = (0..e)
        .map(|j| {
            let ip = if Some(j) == moved {
                endpoint_ip(i, j, e).to_string().replacen("10.", "11.", 1)
            } else {
                endpoint_ip(i, j, e).to_string()
            };
            json!({"addresses": [ip], "conditions": {"ready": true}})
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-0"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": eps
    }))
    .expect("valid EndpointSlice")
}

/// The whole cluster.
pub fn cluster(n: u32, e: u32) -> (Vec<Service>, Vec<EndpointSlice>) {
    (
        (0..n).map(service).collect(),
        (0..n).map(|i| slice(i, e, None)).collect(),
    )
}
