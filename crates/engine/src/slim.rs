//! What the engine keeps of an object: only the fields a decision reads.
//!
//! The API server sends every field: `managedFields` (often the largest
//! part of an object), `kubectl`'s last-applied copy of the whole object,
//! owner references, and on every endpoint a `targetRef` naming its Pod.
//! kipvs reads none of them, and holds every Service and EndpointSlice of
//! the cluster, so they are dropped as objects arrive. Dropping
//! `resourceVersion` too means an update that changed only bookkeeping
//! compares equal to what the engine has, and costs no sync.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// `kubectl apply`'s copy of the whole object, as an annotation.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Service with only what kipvs reads: name, namespace, labels,
/// annotations (but the last-applied copy), spec, and the status's load
/// balancer ingress.
pub fn service(mut s: Service) -> Service {
    slim_meta(&mut s.metadata);
    if let Some(status) = &mut s.status {
        status.conditions = None;
    }
    s
}

/// The EndpointSlice with only what kipvs reads: name, namespace, labels,
/// address type, ports, and per endpoint its addresses, conditions, hints,
/// node and zone.
pub fn slice(mut s: EndpointSlice) -> EndpointSlice {
    slim_meta(&mut s.metadata);
    // Read from the input before it is stored (the trigger time), not after.
    s.metadata.annotations = None;
    for ep in &mut s.endpoints {
        ep.target_ref = None;
        ep.deprecated_topology = None;
        ep.hostname = None;
    }
    s
}

fn slim_meta(m: &mut ObjectMeta) {
    let ObjectMeta {
        name: _,
        namespace: _,
        labels: _,
        annotations,
        creation_timestamp,
        deletion_grace_period_seconds,
        deletion_timestamp,
        finalizers,
        generate_name,
        generation,
        managed_fields,
        owner_references,
        resource_version,
        self_link,
        uid,
    } = m;
    if let Some(a) = annotations {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            *annotations = None;
        }
    }
    *creation_timestamp = None;
    *deletion_grace_period_seconds = None;
    *deletion_timestamp = None;
    *finalizers = None;
    *generate_name = None;
    *generation = None;
    *managed_fields = None;
    *owner_references = None;
    *resource_version = None;
    *self_link = None;
    *uid = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_service_keeps_what_decisions_read_and_loses_bookkeeping() {
        let full: Service = serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u-1", "resourceVersion": "42",
                "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 3,
                "labels": {"app": "web"},
                "annotations": {LAST_APPLIED: "{…}", "kipvs.io/scheduler": "wrr"},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x", "uid": "u-2"}]
            },
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]},
                       "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "r", "message": "m"}]}
        }))
        .unwrap();
        let slim = serde_json::to_value(service(full.clone())).unwrap();
        assert_eq!(
            slim,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop", "labels": {"app": "web"},
                             "annotations": {"kipvs.io/scheduler": "wrr"}},
                "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
            })
        );
        // Two versions that differ in bookkeeping only are equal once slim.
        let mut later = full.clone();
        later.metadata.resource_version = Some("43".into());
        assert_eq!(service(later), service(full));
    }

    #[test]
    fn a_slice_keeps_addresses_conditions_hints_node_and_zone() {
        let full: EndpointSlice = serde_json::from_value(json!({
            "metadata": {
                "name": "web-abc", "namespace": "shop", "uid": "u-3", "resourceVersion": "7",
                "labels": {"kubernetes.io/service-name": "web"},
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"},
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{
                "addresses": ["10.244.0.5"], "conditions": {"ready": true},
                "hints": {"forZones": [{"name": "z1"}]}, "nodeName": "n1", "zone": "z1",
                "hostname": "web-0",
                "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "shop", "uid": "u-4"}
            }]
        }))
        .unwrap();
        assert_eq!(
            serde_json::to_value(slice(full)).unwrap(),
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-abc", "namespace": "shop",
                             "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": [{
                    "addresses": ["10.244.0.5"], "conditions": {"ready": true},
                    "hints": {"forZones": [{"name": "z1"}]}, "nodeName": "n1", "zone": "z1"
                }]
            })
        );
    }
}
