//! A synthetic cluster: `n` ClusterIP Services, each with one port (80 →
//! 8080) and `e` ready endpoints in one EndpointSlice. Addresses are
//! deterministic: Service i has ClusterIP 10.96.0.0/12 + i and its
//! endpoints 10.128.0.0/9 + i·e + j.
//!
//! The objects carry what a real API server sends with them, so that
//! memory measured on the fake API server is memory a cluster costs: a
//! Service made by `kubectl apply` has its last-applied annotation, its
//! `managedFields`, uid, resourceVersion and defaulted spec fields; an
//! EndpointSlice made by the EndpointSlice controller has its owner
//! reference, labels, trigger-time annotation and `managedFields`, and
//! every endpoint its node and a `targetRef` to its Pod.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kipvs_engine::desired::{Context, Family};
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

/// When every synthetic object was created.
const CREATED: &str = "2026-01-01T00:00:00Z";

/// A uid shaped like the API server's, distinct per `kind` and `i`.
fn uid(kind: u32, i: u32) -> String {
    format!("{kind:08x}-{:04x}-4000-8000-{i:012x}", i >> 16)
}

/// Service `i`, as `kubectl apply` of its manifest leaves it.
pub fn service(i: u32) -> Service {
    let name = format!("svc-{i}");
    let applied = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"annotations": {}, "name": name, "namespace": "bench"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                 "selector": {"app": name}}
    });
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": name, "namespace": "bench", "uid": uid(1, i),
            "resourceVersion": (1000 + i).to_string(), "creationTimestamp": CREATED,
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied.to_string() + "\n"},
            "managedFields": [{
                "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "v1",
                "time": CREATED, "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                    "f:spec": {"f:internalTrafficPolicy": {}, "f:ports": {".": {},
                        "k:{\"port\":80,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                        "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}
                }
            }]
        },
        "spec": {"clusterIP": cluster_ip(i).to_string(), "clusterIPs": [cluster_ip(i).to_string()],
                 "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
                 "selector": {"app": name}, "sessionAffinity": "None", "type": "ClusterIP"},
        "status": {"loadBalancer": {}}
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
            json!({"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false},
                   "nodeName": format!("node-{}", (i * e + j) % 500),
                   "targetRef": {"kind": "Pod", "namespace": "bench",
                                 "name": format!("svc-{i}-7d9f8c6b5-{j:05}"), "uid": uid(3, i * e + j)}})
        })
        .collect();
    let service = format!("svc-{i}");
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("svc-{i}-0"), "generateName": format!("svc-{i}-"), "namespace": "bench",
            "uid": uid(2, i), "resourceVersion": (2000 + i).to_string(), "generation": 1,
            "creationTimestamp": CREATED,
            "labels": {"app": service, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                       "kubernetes.io/service-name": service},
            "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": CREATED},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": uid(1, i),
                                 "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{
                "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "discovery.k8s.io/v1",
                "time": CREATED, "fieldsType": "FieldsV1",
                "fieldsV1": {"f:addressType": {}, "f:endpoints": {}, "f:metadata": {
                    "f:annotations": {".": {}, "f:endpoints.kubernetes.io/last-change-trigger-time": {}},
                    "f:generateName": {}, "f:labels": {".": {}, "f:app": {},
                        "f:endpointslice.kubernetes.io/managed-by": {}, "f:kubernetes.io/service-name": {}},
                    "f:ownerReferences": {".": {}, format!("k:{{\"uid\":\"{}\"}}", uid(1, i)): {}}},
                    "f:ports": {}}
            }]
        },
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
