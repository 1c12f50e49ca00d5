//! Local endpoints (pure): what one Service's `Local` traffic policies
//! and this node's ready endpoints are. The engine keeps them per Service
//! with a `Local` policy, recomputed with the Service
//! ([`crate::controller::Engine::local_endpoints`]); the agent serves them
//! on the Services' health-check node ports and counts
//! `kubeproxy_sync_proxy_rules_no_local_endpoints_total` from them.

use crate::desired::{self, Context, Family};
use crate::model::{EndpointAddress, ObjectRef, Slice};
use k8s_openapi::api::core::v1::Service;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// One Service's `Local` traffic policies and this node's ready endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalEndpoints {
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` on a Service reachable from outside
    /// (NodePort, LoadBalancer or externalIPs).
    pub external_local: bool,
    /// `spec.healthCheckNodePort`, when `external_local`.
    pub health_check_node_port: Option<u16>,
    /// The families the Service is proxied in.
    pub families: BTreeSet<Family>,
    /// Ready endpoints on this node, per family (distinct addresses).
    pub ready: BTreeMap<Family, usize>,
}

impl LocalEndpoints {
    /// Ready local endpoints of every family (the health check's count).
    pub fn total_ready(&self) -> usize {
        self.ready.values().sum()
    }
}

/// The local-policy facts of one Service; `None` when it has no `Local`
/// policy or kipvs does not proxy it (another proxy's, ExternalName,
/// headless, no ClusterIP).
pub fn local_endpoints(svc: &Service, slices: &[&Slice], ctx: &Context) -> Option<LocalEndpoints> {
    let spec = svc.spec.as_ref()?;
    if !desired::is_ours(svc.metadata.labels.as_ref(), ctx)
        || spec.type_.as_deref() == Some("ExternalName")
    {
        return None;
    }
    let ips: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    if ips.is_empty() || ips.iter().any(|ip| ip.as_str() == "None") {
        return None;
    }
    let families: BTreeSet<Family> = ips
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| Family::of(&ip))
        .filter(|f| ctx.families.contains(f))
        .collect();
    let external = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"))
        || spec.external_ips.as_ref().is_some_and(|e| !e.is_empty());
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = external && spec.external_traffic_policy.as_deref() == Some("Local");
    if !internal_local && !external_local {
        return None;
    }
    let health_check_node_port = spec
        .health_check_node_port
        .filter(|_| external_local)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0);
    let mut ready: BTreeMap<Family, BTreeSet<IpAddr>> = BTreeMap::new();
    for slice in slices {
        for ep in &slice.endpoints {
            if ep.node.as_deref() != Some(ctx.node_name.as_str()) {
                continue;
            }
            let ok = ep.ready.unwrap_or(true);
            // kube-proxy uses an endpoint's first address only.
            let EndpointAddress::Ip(ip) = ep.address else {
                continue;
            };
            if ok && families.contains(&Family::of(&ip)) {
                ready.entry(Family::of(&ip)).or_default().insert(ip);
            }
        }
    }
    Some(LocalEndpoints {
        internal_local,
        external_local,
        health_check_node_port,
        ready: families
            .iter()
            .map(|f| (*f, ready.get(f).map_or(0, BTreeSet::len)))
            .collect(),
        families,
    })
}

/// What a health-check port answers for: published by the agent after
/// each sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceHealth {
    pub service: ObjectRef,
    pub local_endpoints: usize,
}

/// The health-check ports of the Services that have one.
pub fn service_health<'a>(
    local: impl IntoIterator<Item = (&'a ObjectRef, &'a LocalEndpoints)>,
) -> BTreeMap<u16, ServiceHealth> {
    local
        .into_iter()
        .filter_map(|(id, l)| {
            Some((
                l.health_check_node_port?,
                ServiceHealth {
                    service: id.clone(),
                    local_endpoints: l.total_ready(),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            node_name: "node-a".into(),
            node_zone: None,
            families: [Family::V4].into(),
            nodeport_addresses: vec![],
            local_addresses: Default::default(),
            default_scheduler: Default::default(),
            local_fallback_to_cluster: false,
            service_proxy_name: None,
        }
    }

    fn lb(policy: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {
                "type": "LoadBalancer", "clusterIP": "10.96.0.10",
                "externalTrafficPolicy": policy, "healthCheckNodePort": 31000,
                "ports": [{"port": 80, "nodePort": 30080}]
            }
        }))
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> Slice {
        crate::slim::slice_from_json(serde_json::json!({
            "metadata": {"namespace": "default", "name": "web-1",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"port": 8080}],
            "endpoints": endpoints
        }))
    }

    #[test]
    fn only_ready_endpoints_on_this_node_count() {
        let s = slice(serde_json::json!([
            {"addresses": ["10.0.1.1"], "nodeName": "node-a"},
            {"addresses": ["10.0.1.2"], "nodeName": "node-a", "conditions": {"ready": false}},
            {"addresses": ["10.0.1.3"], "nodeName": "node-b"},
            {"addresses": ["10.0.1.4"], "nodeName": "node-a", "conditions": {"ready": true}},
        ]));
        let l = local_endpoints(&lb("Local"), &[&s], &ctx()).unwrap();
        assert_eq!(l.health_check_node_port, Some(31000));
        assert!(l.external_local && !l.internal_local);
        assert_eq!(l.total_ready(), 2);
        assert_eq!(l.ready[&Family::V4], 2);
    }

    #[test]
    fn a_cluster_policy_has_no_health_check() {
        assert_eq!(local_endpoints(&lb("Cluster"), &[], &ctx()), None);
        let mut internal = lb("Cluster");
        internal.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        let l = local_endpoints(&internal, &[], &ctx()).unwrap();
        assert_eq!(l.health_check_node_port, None);
        assert_eq!(l.ready[&Family::V4], 0, "no endpoints: counted as 0");
    }

    #[test]
    fn health_check_ports_map_to_their_service() {
        let l = local_endpoints(&lb("Local"), &[], &ctx()).unwrap();
        let id = ObjectRef::new("default", "web");
        let m = service_health([(&id, &l)]);
        assert_eq!(
            m.get(&31000),
            Some(&ServiceHealth {
                service: id,
                local_endpoints: 0
            })
        );
    }
}
