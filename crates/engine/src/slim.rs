//! What the engine keeps of an object: only the fields a decision reads.
//!
//! The API server sends every field: `managedFields` (often the largest
//! part of an object), `kubectl`'s last-applied copy of the whole object,
//! owner references, and on every endpoint a `targetRef` naming its Pod.
//! kipvs reads none of them, and holds every Service and EndpointSlice of
//! the cluster, so they are dropped as objects arrive. Dropping
//! `resourceVersion` too means an update that changed only bookkeeping
//! compares equal to what the engine has, and costs no sync.
//!
//! An EndpointSlice is kept as a [`Slice`], not as the API's type: a slice
//! of ten endpoints held ~7.4 KiB as k8s-openapi's `EndpointSlice` (even
//! slimmed), and ~0.9 KiB as a `Slice` (`benches/results/heap.md`).

use crate::labels;
use crate::model::{EndpointAddress, Family, ObjectRef, Slice, SliceEndpoint, SlicePort};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::HashSet;
use std::sync::Arc;

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

/// The EndpointSlice with only what [`slice`] and the agent's metrics read
/// (its trigger-time annotation): for a source that holds a whole list
/// before the engine takes it, so the list is not held whole.
pub fn endpoint_slice(mut s: EndpointSlice) -> EndpointSlice {
    slim_meta(&mut s.metadata);
    for ep in &mut s.endpoints {
        ep.addresses.truncate(1);
        ep.deprecated_topology = None;
        ep.hostname = None;
        ep.target_ref = None;
        ep.zone = None;
    }
    s
}

/// What the engine keeps of an EndpointSlice ([`Slice`]): its name, its
/// Service, family and ports, and per endpoint the first address, the
/// conditions, the node and the topology hints. Node, zone, port and
/// protocol names come from `names`, so each distinct name is held once.
pub fn slice(s: EndpointSlice, names: &mut Names) -> Slice {
    let service = s
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::SERVICE_NAME))
        .map(|name| ObjectRef::new(s.metadata.namespace.clone().unwrap_or_default(), name));
    let family = Family::from_address_type(&s.address_type);
    let ports = s
        .ports
        .iter()
        .flatten()
        .map(|p| SlicePort {
            name: p.name.as_deref().map(|n| names.get(n)),
            port: p.port,
            protocol: p.protocol.as_deref().map(|n| names.get(n)),
        })
        .collect();
    let endpoints = s.endpoints.iter().map(|ep| endpoint(ep, names)).collect();
    Slice {
        name: s.metadata.name.unwrap_or_default(),
        service,
        family,
        ports,
        endpoints,
    }
}

fn endpoint(ep: &Endpoint, names: &mut Names) -> SliceEndpoint {
    let address = match ep.addresses.first() {
        None => EndpointAddress::Missing,
        Some(text) => match text.parse() {
            Ok(ip) => EndpointAddress::Ip(ip),
            Err(_) => EndpointAddress::Invalid(text.as_str().into()),
        },
    };
    let cond = ep.conditions.as_ref();
    let hints = ep.hints.as_ref();
    SliceEndpoint {
        address,
        ready: cond.and_then(|c| c.ready),
        serving: cond.and_then(|c| c.serving),
        terminating: cond.and_then(|c| c.terminating),
        node: ep.node_name.as_deref().map(|n| names.get(n)),
        zone_hints: hints
            .and_then(|h| h.for_zones.as_ref())
            .map(|z| z.iter().map(|z| names.get(&z.name)).collect()),
        node_hints: hints
            .and_then(|h| h.for_nodes.as_ref())
            .map(|n| n.iter().map(|n| names.get(&n.name)).collect()),
    }
}

/// A [`Slice`] from an EndpointSlice written as JSON (the engine's test
/// fixtures).
#[cfg(test)]
pub(crate) fn slice_from_json(v: serde_json::Value) -> Slice {
    let s: EndpointSlice = serde_json::from_value(v).expect("an EndpointSlice");
    Slice::from(s)
}

impl From<EndpointSlice> for Slice {
    /// The compact slice with names of its own (tests and benchmarks; the
    /// engine shares its [`Names`] across slices).
    fn from(s: EndpointSlice) -> Slice {
        slice(s, &mut Names::default())
    }
}

/// One shared copy of each name endpoints repeat: nodes, zones, port names
/// and protocols (a cluster has few distinct ones and many endpoints).
#[derive(Debug, Default)]
pub struct Names(HashSet<Arc<str>>);

impl Names {
    /// The shared copy of `name`.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(Arc::clone(&shared));
        shared
    }

    /// Forgets the names no slice holds any more.
    pub fn prune(&mut self) {
        self.0.retain(|n| Arc::strong_count(n) > 1);
    }

    /// Distinct names held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
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
    fn a_slice_keeps_addresses_conditions_hints_and_node() {
        let full: EndpointSlice = serde_json::from_value(json!({
            "metadata": {
                "name": "web-abc", "namespace": "shop", "uid": "u-3", "resourceVersion": "7",
                "labels": {"kubernetes.io/service-name": "web"},
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"},
                "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"port": 53}],
            "endpoints": [{
                "addresses": ["10.244.0.5", "10.244.0.6"], "conditions": {"ready": true},
                "hints": {"forZones": [{"name": "z1"}], "forNodes": [{"name": "n1"}]},
                "nodeName": "n1", "zone": "z1", "hostname": "web-0",
                "targetRef": {"kind": "Pod", "name": "web-0", "namespace": "shop", "uid": "u-4"}
            }, {
                "addresses": ["not-an-ip"], "conditions": {"serving": true, "terminating": true}
            }, {
                "addresses": []
            }]
        }))
        .unwrap();
        let n = |s: &str| Arc::<str>::from(s);
        // The API object slimmed first makes the same compact slice, and
        // keeps the trigger time.
        let slimmed = endpoint_slice(full.clone());
        assert!(slimmed.metadata.managed_fields.is_none());
        assert!(slimmed.endpoints[0].target_ref.is_none());
        assert_eq!(
            slimmed.metadata.annotations.as_ref().unwrap().len(),
            1,
            "the trigger time"
        );
        assert_eq!(Slice::from(slimmed), Slice::from(full.clone()));
        assert_eq!(
            Slice::from(full),
            Slice {
                name: "web-abc".into(),
                service: Some(ObjectRef::new("shop", "web")),
                family: Some(Family::V4),
                ports: vec![
                    SlicePort {
                        name: Some(n("http")),
                        port: Some(8080),
                        protocol: Some(n("TCP"))
                    },
                    SlicePort {
                        name: None,
                        port: Some(53),
                        protocol: None
                    },
                ],
                endpoints: vec![
                    SliceEndpoint {
                        address: EndpointAddress::Ip("10.244.0.5".parse().unwrap()),
                        ready: Some(true),
                        serving: None,
                        terminating: None,
                        node: Some(n("n1")),
                        zone_hints: Some([n("z1")].into()),
                        node_hints: Some([n("n1")].into()),
                    },
                    SliceEndpoint {
                        address: EndpointAddress::Invalid("not-an-ip".into()),
                        ready: None,
                        serving: Some(true),
                        terminating: Some(true),
                        node: None,
                        zone_hints: None,
                        node_hints: None,
                    },
                    SliceEndpoint {
                        address: EndpointAddress::Missing,
                        ready: None,
                        serving: None,
                        terminating: None,
                        node: None,
                        zone_hints: None,
                        node_hints: None,
                    },
                ],
            }
        );
    }

    #[test]
    fn fqdn_and_unlabelled_slices_have_no_family_or_service() {
        let s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "x"}, "addressType": "FQDN", "endpoints": []
        }))
        .unwrap();
        let s = Slice::from(s);
        assert_eq!((s.family, s.service), (None, None));
    }

    #[test]
    fn slices_share_one_copy_of_each_name_until_none_holds_it() {
        let on = |node: &str| -> EndpointSlice {
            serde_json::from_value(json!({
                "metadata": {"name": "s", "namespace": "ns"}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": node}]
            }))
            .unwrap()
        };
        let mut names = Names::default();
        let a = slice(on("node-1"), &mut names);
        let b = slice(on("node-1"), &mut names);
        let (na, nb) = (a.endpoints[0].node.clone(), b.endpoints[0].node.clone());
        assert!(Arc::ptr_eq(&na.unwrap(), &nb.unwrap()));
        let c = slice(on("node-2"), &mut names);
        assert_eq!(names.len(), 2);
        drop((a, b));
        names.prune();
        assert_eq!(names.len(), 1, "only node-2 is still held");
        drop(c);
        names.prune();
        assert!(names.is_empty());
    }

    proptest::proptest! {
        /// Whatever an endpoint says, the kept one reads the same: its
        /// first address (parsed when it is one), conditions and node.
        #[test]
        fn an_endpoint_keeps_what_it_said(
            addresses in proptest::collection::vec("[0-9a-f:.]{0,12}", 0..3),
            ready in proptest::option::of(proptest::bool::ANY),
            serving in proptest::option::of(proptest::bool::ANY),
            terminating in proptest::option::of(proptest::bool::ANY),
            node in proptest::option::of("[a-z]{1,4}"),
        ) {
            let ep = Endpoint {
                addresses: addresses.clone(),
                conditions: Some(k8s_openapi::api::discovery::v1::EndpointConditions {
                    ready, serving, terminating,
                }),
                node_name: node.clone(),
                ..Endpoint::default()
            };
            let kept = endpoint(&ep, &mut Names::default());
            let want = match addresses.first() {
                None => EndpointAddress::Missing,
                Some(a) => a.parse().map_or_else(
                    |_| EndpointAddress::Invalid(a.as_str().into()),
                    EndpointAddress::Ip,
                ),
            };
            proptest::prop_assert_eq!(&kept.address, &want);
            // What `kipvs explain` shows: the text as written, an IP in
            // its canonical form.
            let shown = addresses
                .first()
                .map(|a| a.parse::<std::net::IpAddr>().map_or(a.clone(), |ip| ip.to_string()))
                .unwrap_or_default();
            proptest::prop_assert_eq!(kept.address.to_string(), shown);
            proptest::prop_assert_eq!((kept.ready, kept.serving, kept.terminating), (ready, serving, terminating));
            proptest::prop_assert_eq!(kept.node.as_deref(), node.as_deref());
        }
    }
}
