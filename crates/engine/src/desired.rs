//! The desired IPVS state as a pure function of Services, EndpointSlices,
//! this node's facts and the configuration. No I/O: every input is a value,
//! so every rule here is table-tested.
//!
//! The rules follow kube-proxy's IPVS mode, except where its behaviour
//! contradicts the API (see [`Context::local_fallback_to_cluster`]).

use crate::labels;
pub use crate::model::Family;
use crate::model::*;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use kipvs_sched::SchedulerConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

pub mod explain;
pub mod firewall;

/// Session affinity timeout when the Service does not set one (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10800;

/// Everything besides the Kubernetes objects that the desired state
/// depends on: this node's facts and the proxy's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// This node's name (`--hostname-override` or the hostname).
    pub node_name: String,
    /// This node's zone label, for topology-aware routing.
    pub node_zone: Option<String>,
    /// The IP families this proxy serves.
    pub families: BTreeSet<Family>,
    /// Addresses NodePorts are served on (already filtered by
    /// `nodePortAddresses`; see [`nodeport_addresses`]).
    pub nodeport_addresses: Vec<IpAddr>,
    /// Addresses already bound on interfaces other than kube-ipvs0:
    /// externalIPs and load-balancer IPs among them are not bound again.
    pub local_addresses: BTreeSet<IpAddr>,
    /// The scheduler of Services without a `kipvs.io/scheduler` annotation.
    pub default_scheduler: SchedulerConfig,
    /// kube-proxy's IPVS mode sends `Local`-policy traffic to all cluster
    /// endpoints when the node has none of its own; its iptables and
    /// nftables modes, and the API's meaning, drop it. kipvs follows the API
    /// (false) unless this is set.
    pub local_fallback_to_cluster: bool,
    /// The `serviceProxyName` this proxy answers to, if any.
    pub service_proxy_name: Option<String>,
}

/// Why a Service (or one of its ports) was not programmed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Service {service}: {field}: {reason}")]
pub struct ServiceError {
    pub service: ObjectRef,
    /// The offending field, e.g. `spec.ports[1].protocol`.
    pub field: String,
    pub reason: String,
}

/// Whether this proxy serves an object with these labels (the watch's label
/// selector, `!service.kubernetes.io/service-proxy-name` or `=NAME`, applied
/// in-process for manifest mode).
pub fn is_ours(labels: Option<&BTreeMap<String, String>>, ctx: &Context) -> bool {
    let proxy = labels.and_then(|l| l.get(labels::SERVICE_PROXY_NAME));
    let headless = labels.is_some_and(|l| l.contains_key(labels::HEADLESS));
    !headless && proxy == ctx.service_proxy_name.as_ref()
}

/// The reference of a Service object.
pub fn service_ref(svc: &Service) -> ObjectRef {
    ObjectRef::new(
        svc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// The desired state of every Service, and the errors of those skipped.
/// `slices` maps each Service to its EndpointSlices.
pub fn desired_state<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: &BTreeMap<ObjectRef, Vec<&'a Slice>>,
    ctx: &Context,
) -> (DesiredState, Vec<ServiceError>) {
    let mut state = DesiredState::default();
    let mut errors = Vec::new();
    let mut sorted: Vec<&Service> = services.into_iter().collect();
    sorted.sort_by_key(|s| service_ref(s));
    for svc in sorted {
        let id = service_ref(svc);
        let own = slices.get(&id).map(Vec::as_slice).unwrap_or_default();
        match service_state(svc, own, ctx) {
            Ok(s) => {
                if let Err(e) = merge(&mut state, s, &id) {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    (state, errors)
}

/// Adds one Service's state to the whole; a virtual server another Service
/// already claimed is an error for this one, which is then left out whole.
pub fn merge(
    state: &mut DesiredState,
    s: ServiceState,
    id: &ObjectRef,
) -> Result<(), ServiceError> {
    for (key, (_, _)) in &s.virtual_servers {
        if let Some((_, other)) = state.virtual_servers.get(key) {
            return Err(ServiceError {
                service: id.clone(),
                field: "spec".into(),
                reason: format!(
                    "virtual server {key} is already served for Service {}",
                    other.service
                ),
            });
        }
    }
    state.virtual_servers.extend(s.virtual_servers);
    state.addresses.extend(s.addresses);
    Ok(())
}

/// The virtual servers and kube-ipvs0 addresses one Service needs.
/// Services kipvs does not proxy (headless, ExternalName, no ClusterIP, or
/// another proxy's) give an empty state.
pub fn service_state(
    svc: &Service,
    slices: &[&Slice],
    ctx: &Context,
) -> Result<ServiceState, ServiceError> {
    let id = service_ref(svc);
    let err = |field: String, reason: String| ServiceError {
        service: id.clone(),
        field,
        reason,
    };
    let mut out = ServiceState::default();
    let Some(spec) = &svc.spec else {
        return Ok(out);
    };
    if !is_ours(svc.metadata.labels.as_ref(), ctx) || spec.type_.as_deref() == Some("ExternalName")
    {
        return Ok(out);
    }
    let cluster_ips: Vec<&String> = match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => ips.iter().collect(),
        _ => spec.cluster_ip.iter().collect(),
    };
    if cluster_ips.is_empty()
        || cluster_ips
            .iter()
            .any(|ip| ip.as_str() == "None" || ip.is_empty())
    {
        return Ok(out); // headless, or no ClusterIP allocated yet
    }
    // Gathered in a B-tree, kept as an exactly sized sorted vector.
    let mut virtual_servers = BTreeMap::new();
    let mut cluster = Vec::new();
    for (i, ip) in cluster_ips.iter().enumerate() {
        let ip: IpAddr = ip.parse().map_err(|_| {
            err(
                format!("spec.clusterIPs[{i}]"),
                format!("invalid IP {ip:?}"),
            )
        })?;
        if ctx.families.contains(&Family::of(&ip)) {
            cluster.push(ip);
        }
    }
    let served: BTreeSet<Family> = cluster.iter().map(Family::of).collect();
    let mut external = Vec::new();
    for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
        let ip: IpAddr = ip.parse().map_err(|_| {
            err(
                format!("spec.externalIPs[{i}]"),
                format!("invalid IP {ip:?}"),
            )
        })?;
        external.push(ip);
    }
    let mut balancers = Vec::new();
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref());
    for (i, ing) in ingress.into_iter().flatten().enumerate() {
        if ing.ip_mode.as_deref() == Some("Proxy") {
            continue; // the load balancer proxies: traffic arrives for the node, not the VIP
        }
        let Some(ip) = &ing.ip else { continue };
        let ip: IpAddr = ip.parse().map_err(|_| {
            err(
                format!("status.loadBalancer.ingress[{i}].ip"),
                format!("invalid IP {ip:?}"),
            )
        })?;
        balancers.push(ip);
    }

    let scheduler = scheduler_for(svc, ctx).map_err(|(field, reason)| err(field, reason))?;
    let persistence = match spec.session_affinity.as_deref() {
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_secs = match t {
                None => DEFAULT_AFFINITY_TIMEOUT_SECS,
                Some(t) if (1..=86400).contains(&t) => t as u32,
                Some(t) => {
                    return Err(err(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                        format!("{t} is outside 1..=86400"),
                    ));
                }
            };
            Some(Persistence { timeout_secs })
        }
        _ => None,
    };
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = matches!(spec.external_traffic_policy.as_deref(), Some("Local"));
    let topology = Topology::of(svc);

    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let protocol = Protocol::from_k8s(port.protocol.as_deref()).ok_or_else(|| {
            err(
                format!("spec.ports[{i}].protocol"),
                format!(
                    "unknown protocol {:?}",
                    port.protocol.as_deref().unwrap_or("")
                ),
            )
        })?;
        let vs_port = valid_port(port.port).ok_or_else(|| {
            err(
                format!("spec.ports[{i}].port"),
                format!("{} is not a port", port.port),
            )
        })?;
        let node_port = match port.node_port {
            None | Some(0) => None,
            Some(p) => Some(valid_port(p).ok_or_else(|| {
                err(
                    format!("spec.ports[{i}].nodePort"),
                    format!("{p} is not a port"),
                )
            })?),
        };
        let port_name = port.name.clone().unwrap_or_default();
        for family in &served {
            let candidates = candidates(slices, port, protocol, *family);
            let policy = Policies {
                internal_local,
                external_local,
                topology,
            };
            let (cluster_set, external_set) = endpoint_sets(&candidates, &policy, ctx);
            let mut add = |address: IpAddr, port: u16, kind: AddressKind| {
                let key = VirtualServerKey {
                    protocol,
                    address,
                    port,
                };
                let endpoints = if kind.is_external() {
                    &external_set
                } else {
                    &cluster_set
                };
                let vs = VirtualServer {
                    key,
                    scheduler: scheduler.clone(),
                    persistence,
                    real_servers: endpoints
                        .iter()
                        .map(|a| {
                            (
                                *a,
                                RealServer {
                                    weight: DEFAULT_WEIGHT,
                                },
                            )
                        })
                        .collect(),
                };
                let owner = ServicePortRef {
                    service: id.clone(),
                    port_name: port_name.clone(),
                    kind,
                };
                if kind.is_bound()
                    && (kind == AddressKind::ClusterIp || !ctx.local_addresses.contains(&address))
                {
                    out.addresses.insert(address);
                }
                virtual_servers.insert(key, (vs, owner));
            };
            let same = |ip: &&IpAddr| Family::of(ip) == *family;
            for ip in cluster.iter().filter(same) {
                add(*ip, vs_port, AddressKind::ClusterIp);
            }
            for ip in external.iter().filter(same) {
                add(*ip, vs_port, AddressKind::ExternalIp);
            }
            for ip in balancers.iter().filter(same) {
                add(*ip, vs_port, AddressKind::LoadBalancer);
            }
            if let Some(np) = node_port {
                for ip in ctx.nodeport_addresses.iter().filter(same) {
                    add(*ip, np, AddressKind::NodePort);
                }
            }
        }
    }
    out.virtual_servers = virtual_servers.into_iter().collect();
    Ok(out)
}

fn valid_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// The traffic policies that narrow a port's endpoints.
#[derive(Debug, Clone, Copy)]
struct Policies {
    internal_local: bool,
    external_local: bool,
    topology: Topology,
}

/// The real servers of a port's cluster addresses and of its external
/// addresses (externalIPs, load-balancer IPs, NodePorts).
fn endpoint_sets(
    candidates: &[Candidate],
    p: &Policies,
    ctx: &Context,
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let pick = |local_only: bool| select(candidates, local_only, &p.topology, ctx);
    let set = |local: bool| {
        if local {
            local_set(&pick, ctx)
        } else {
            pick(false)
        }
    };
    (set(p.internal_local), set(p.external_local))
}

/// The local endpoint set, or all cluster endpoints under kube-proxy IPVS
/// mode's old fallback when the node has none.
fn local_set(pick: &dyn Fn(bool) -> Vec<SocketAddr>, ctx: &Context) -> Vec<SocketAddr> {
    let local = pick(true);
    if local.is_empty() && ctx.local_fallback_to_cluster {
        pick(false)
    } else {
        local
    }
}

fn scheduler_for(svc: &Service, ctx: &Context) -> Result<SchedulerConfig, (String, String)> {
    let ann = svc.metadata.annotations.as_ref();
    let name = ann.and_then(|a| a.get(kipvs_sched::ANNOTATION_SCHEDULER));
    let flags = ann.and_then(|a| a.get(kipvs_sched::ANNOTATION_SCHEDULER_FLAGS));
    if name.is_none() && flags.is_none() {
        return Ok(ctx.default_scheduler.clone());
    }
    let field = |k: &str| format!("metadata.annotations[{k:?}]");
    let base = match name {
        Some(n) => n.clone(),
        None => ctx.default_scheduler.scheduler().name().to_owned(),
    };
    SchedulerConfig::from_annotations(&base, flags.map(String::as_str)).map_err(|e| {
        let key = if name.is_some() {
            kipvs_sched::ANNOTATION_SCHEDULER
        } else {
            kipvs_sched::ANNOTATION_SCHEDULER_FLAGS
        };
        (field(key), e.to_string())
    })
}

/// An endpoint as one Service port sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Candidate {
    addr: SocketAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<Arc<str>>,
    zone_hints: Option<Box<[Arc<str>]>>,
    node_hints: Option<Box<[Arc<str>]>>,
}

impl Candidate {
    fn rank(&self) -> u8 {
        match (self.ready, self.serving) {
            (true, _) => 2,
            (false, true) => 1,
            _ => 0,
        }
    }
}

/// The endpoints of every slice of `family` for a Service port, matched by
/// port name and protocol, merged and de-duplicated across slices (the
/// readiest copy wins).
fn candidates(
    slices: &[&Slice],
    port: &ServicePort,
    protocol: Protocol,
    family: Family,
) -> Vec<Candidate> {
    let want_name = port.name.as_deref().unwrap_or("");
    let mut out: BTreeMap<SocketAddr, Candidate> = BTreeMap::new();
    for slice in slices {
        if slice.family != Some(family) {
            continue; // FQDN slices and the other family
        }
        let target = slice.ports.iter().find(|p| {
            p.name.as_deref().unwrap_or("") == want_name
                && Protocol::from_k8s(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(target_port) = target.and_then(|p| p.port).and_then(valid_port) else {
            continue;
        };
        for ep in &slice.endpoints {
            let Some(c) = candidate(ep, target_port, family) else {
                continue;
            };
            match out.get(&c.addr) {
                Some(old) if old.rank() >= c.rank() => {}
                _ => {
                    out.insert(c.addr, c);
                }
            }
        }
    }
    out.into_values().collect()
}

fn candidate(ep: &SliceEndpoint, port: u16, family: Family) -> Option<Candidate> {
    // kube-proxy uses an endpoint's first address only.
    let EndpointAddress::Ip(ip) = ep.address else {
        return None;
    };
    if Family::of(&ip) != family {
        return None;
    }
    Some(Candidate {
        addr: SocketAddr::new(ip, port),
        ready: ep.ready.unwrap_or(true),
        serving: ep.serving.unwrap_or(true),
        terminating: ep.terminating.unwrap_or(false),
        node: ep.node.clone(),
        zone_hints: ep.zone_hints.clone(),
        node_hints: ep.node_hints.clone(),
    })
}

/// Topology-aware routing a Service asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    None,
    /// `PreferClose`, `PreferSameZone`, or the `topology-mode: Auto` annotation.
    Zone,
    /// `PreferSameNode`: this node's endpoints, else the zone's.
    Node,
}

impl Topology {
    fn of(svc: &Service) -> Topology {
        let dist = svc
            .spec
            .as_ref()
            .and_then(|s| s.traffic_distribution.as_deref());
        let ann = svc.metadata.annotations.as_ref();
        let auto = [labels::TOPOLOGY_MODE, labels::TOPOLOGY_AWARE_HINTS]
            .iter()
            .any(|k| {
                ann.and_then(|a| a.get(*k))
                    .is_some_and(|v| v.eq_ignore_ascii_case("auto"))
            });
        match dist {
            Some("PreferSameNode") => Topology::Node,
            Some("PreferClose" | "PreferSameZone") => Topology::Zone,
            _ if auto => Topology::Zone,
            _ => Topology::None,
        }
    }
}

/// The usable endpoints: ready ones (narrowed by topology hints for the
/// cluster set), or if there are none, the serving-and-terminating ones.
fn select(
    all: &[Candidate],
    local_only: bool,
    topology: &Topology,
    ctx: &Context,
) -> Vec<SocketAddr> {
    let pool: Vec<&Candidate> = all
        .iter()
        .filter(|c| !local_only || c.node.as_deref() == Some(ctx.node_name.as_str()))
        .collect();
    let ready: Vec<&Candidate> = pool.iter().copied().filter(|c| c.ready).collect();
    if !ready.is_empty() {
        let narrowed = if local_only {
            None
        } else {
            by_topology(&ready, topology, ctx)
        };
        return narrowed.unwrap_or(ready).iter().map(|c| c.addr).collect();
    }
    pool.iter()
        .filter(|c| c.serving && c.terminating)
        .map(|c| c.addr)
        .collect()
}

/// kube-proxy's rule: hints are used only when every ready endpoint has
/// them and at least one names this node (or zone); otherwise all ready
/// endpoints are used.
fn by_topology<'c>(
    ready: &[&'c Candidate],
    topology: &Topology,
    ctx: &Context,
) -> Option<Vec<&'c Candidate>> {
    if *topology == Topology::None {
        return None;
    }
    if *topology == Topology::Node && ready.iter().all(|c| c.node_hints.is_some()) {
        let mine: Vec<&Candidate> = ready
            .iter()
            .copied()
            .filter(|c| {
                c.node_hints
                    .as_ref()
                    .is_some_and(|h| h.iter().any(|n| **n == *ctx.node_name))
            })
            .collect();
        if !mine.is_empty() {
            return Some(mine);
        }
    }
    let zone = ctx.node_zone.as_ref()?;
    if !ready
        .iter()
        .all(|c| c.zone_hints.as_ref().is_some_and(|h| !h.is_empty()))
    {
        return None;
    }
    let mine: Vec<&Candidate> = ready
        .iter()
        .copied()
        .filter(|c| {
            c.zone_hints
                .as_ref()
                .is_some_and(|h| h.iter().any(|z| **z == **zone))
        })
        .collect();
    if mine.is_empty() { None } else { Some(mine) }
}

/// Which `nodePortAddresses` filter applies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NodePortFilter {
    /// Every usable node address.
    #[default]
    All,
    /// kube-proxy's `primary`: the node's primary IP of each family.
    Primary,
    /// Addresses inside any of these CIDRs (host bits ignored).
    Cidrs(Vec<IpNet>),
}

/// The node addresses NodePorts are served on: the node's local addresses
/// (`(interface, address)`) except kube-ipvs0's, loopback and IPv6
/// link-local ones, narrowed by the filter. (Localhost NodePorts are not
/// served in IPVS mode.)
pub fn nodeport_addresses(
    local: &[(String, IpAddr)],
    dummy: &str,
    filter: &NodePortFilter,
    primary: &[IpAddr],
) -> Vec<IpAddr> {
    let usable = local.iter().filter(|(ifname, ip)| {
        ifname != dummy
            && !ip.is_loopback()
            && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
            && !ip.is_unspecified()
    });
    let mut out: Vec<IpAddr> = usable
        .map(|(_, ip)| *ip)
        .filter(|ip| match filter {
            NodePortFilter::All => true,
            NodePortFilter::Primary => primary.contains(ip),
            NodePortFilter::Cidrs(cidrs) => cidrs.iter().any(|net| net.contains(ip)),
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> Context {
        Context {
            node_name: "node-a".into(),
            node_zone: Some("zone-1".into()),
            families: [Family::V4, Family::V6].into(),
            nodeport_addresses: vec!["192.168.1.10".parse().unwrap(), "fd00::10".parse().unwrap()],
            local_addresses: ["192.168.1.10".parse().unwrap()].into(),
            default_scheduler: "rr".parse().unwrap(),
            local_fallback_to_cluster: false,
            service_proxy_name: None,
        }
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    use crate::slim::slice_from_json as slice;

    /// The seed's `hostnames` Service: port 80 → 9376, three pods.
    fn hostnames() -> (Service, Slice) {
        let s = svc(json!({
            "metadata": {"name": "hostnames", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"app": "hostnames"},
                     "ports": [{"name": "default", "protocol": "TCP", "port": 80, "targetPort": 9376}]}
        }));
        let es = slice(json!({
            "metadata": {"name": "hostnames-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "hostnames"}},
            "addressType": "IPv4",
            "ports": [{"name": "default", "protocol": "TCP", "port": 9376}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true}, "nodeName": "node-a"},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": true}, "nodeName": "node-b"},
                {"addresses": ["10.244.0.7"], "nodeName": "node-c"}
            ]
        }));
        (s, es)
    }

    fn rs(state: &ServiceState, vs: &str) -> Vec<String> {
        let key = find(state, vs);
        state.virtual_servers[&key]
            .0
            .real_servers
            .keys()
            .map(|a| a.to_string())
            .collect()
    }

    fn find(state: &ServiceState, vs: &str) -> VirtualServerKey {
        *state
            .virtual_servers
            .keys()
            .find(|k| format!("{} {}", k.protocol, SocketAddr::new(k.address, k.port)) == vs)
            .unwrap_or_else(|| {
                panic!(
                    "no {vs} in {:?}",
                    state.virtual_servers.keys().collect::<Vec<_>>()
                )
            })
    }

    fn keys(state: &ServiceState) -> Vec<String> {
        state
            .virtual_servers
            .keys()
            .map(|k| k.to_string())
            .collect()
    }

    #[test]
    fn hostnames_cluster_ip_round_robins_over_three_pods() {
        let (s, es) = hostnames();
        let state = service_state(&s, &[&es], &ctx()).unwrap();
        assert_eq!(keys(&state), ["TCP 10.96.0.10:80"]);
        assert_eq!(
            rs(&state, "TCP 10.96.0.10:80"),
            ["10.244.0.5:9376", "10.244.0.6:9376", "10.244.0.7:9376"]
        );
        let (vs, owner) = &state.virtual_servers[&find(&state, "TCP 10.96.0.10:80")];
        assert_eq!(vs.scheduler.to_string(), "rr");
        assert_eq!(vs.persistence, None);
        assert!(vs.real_servers.values().all(|r| r.weight == 1));
        assert_eq!(owner.to_string(), "default/hostnames:default");
        assert_eq!(owner.kind, AddressKind::ClusterIp);
        assert_eq!(
            state.addresses,
            ["10.96.0.10".parse::<IpAddr>().unwrap()].into()
        );
    }

    #[test]
    fn headless_external_name_and_unallocated_services_are_skipped() {
        for spec in [
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            json!({"type": "ExternalName", "externalName": "example.com", "ports": [{"port": 80}]}),
            json!({"ports": [{"port": 80}]}),
        ] {
            let s = svc(json!({"metadata": {"name": "x", "namespace": "default"}, "spec": spec}));
            assert_eq!(
                service_state(&s, &[], &ctx()).unwrap(),
                ServiceState::default()
            );
        }
    }

    #[test]
    fn another_proxys_service_is_skipped_unless_we_are_that_proxy() {
        let (mut s, es) = hostnames();
        s.metadata.labels =
            Some([(labels::SERVICE_PROXY_NAME.to_string(), "other".to_string())].into());
        assert!(
            service_state(&s, &[&es], &ctx())
                .unwrap()
                .virtual_servers
                .is_empty()
        );
        let mut c = ctx();
        c.service_proxy_name = Some("other".into());
        assert_eq!(
            service_state(&s, &[&es], &c).unwrap().virtual_servers.len(),
            1
        );
    }

    #[test]
    fn a_service_without_endpoints_keeps_its_virtual_server_empty() {
        let (s, _) = hostnames();
        let state = service_state(&s, &[], &ctx()).unwrap();
        assert_eq!(keys(&state), ["TCP 10.96.0.10:80"]);
        assert!(rs(&state, "TCP 10.96.0.10:80").is_empty());
        assert_eq!(
            state.addresses.len(),
            1,
            "still bound, so the kernel refuses at once"
        );
    }

    #[test]
    fn not_ready_endpoints_are_left_out_and_terminating_serving_ones_are_the_fallback() {
        let (s, _) = hostnames();
        let es = slice(json!({
            "metadata": {"name": "e", "namespace": "default", "labels": {"kubernetes.io/service-name": "hostnames"}},
            "addressType": "IPv4", "ports": [{"name": "default", "port": 9376}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.244.0.7"], "conditions": {"ready": false, "serving": false}}
            ]
        }));
        let state = service_state(&s, &[&es], &ctx()).unwrap();
        assert_eq!(rs(&state, "TCP 10.96.0.10:80"), ["10.244.0.5:9376"]);

        let mut only_terminating = es.clone();
        only_terminating.endpoints.remove(0);
        let state = service_state(&s, &[&only_terminating], &ctx()).unwrap();
        assert_eq!(
            rs(&state, "TCP 10.96.0.10:80"),
            ["10.244.0.6:9376"],
            "serving-terminating fallback"
        );
    }

    #[test]
    fn ports_match_by_name_and_protocol() {
        let s = svc(json!({
            "metadata": {"name": "dns", "namespace": "kube-system"},
            "spec": {"clusterIP": "10.96.0.53", "ports": [
                {"name": "dns", "protocol": "UDP", "port": 53},
                {"name": "dns-tcp", "protocol": "TCP", "port": 53}]}
        }));
        let es = slice(json!({
            "metadata": {"name": "dns-1", "namespace": "kube-system", "labels": {"kubernetes.io/service-name": "dns"}},
            "addressType": "IPv4",
            "ports": [{"name": "dns", "protocol": "UDP", "port": 1053}, {"name": "dns-tcp", "protocol": "TCP", "port": 2053},
                      {"name": "metrics", "protocol": "TCP", "port": 9153}],
            "endpoints": [{"addresses": ["10.244.1.2"]}]
        }));
        let state = service_state(&s, &[&es], &ctx()).unwrap();
        assert_eq!(keys(&state), ["TCP 10.96.0.53:53", "UDP 10.96.0.53:53"]);
        assert_eq!(rs(&state, "UDP 10.96.0.53:53"), ["10.244.1.2:1053"]);
        assert_eq!(rs(&state, "TCP 10.96.0.53:53"), ["10.244.1.2:2053"]);
    }

    #[test]
    fn endpoints_merge_and_deduplicate_across_slices() {
        let (s, es) = hostnames();
        let mut second = es.clone();
        second.name = "hostnames-y".into();
        second.endpoints = slice(json!({"addressType": "IPv4", "endpoints": [
            {"addresses": ["10.244.0.7"], "conditions": {"ready": false}},
            {"addresses": ["10.244.0.8"]}
        ]}))
        .endpoints;
        let state = service_state(&s, &[&es, &second], &ctx()).unwrap();
        assert_eq!(
            rs(&state, "TCP 10.96.0.10:80"),
            [
                "10.244.0.5:9376",
                "10.244.0.6:9376",
                "10.244.0.7:9376",
                "10.244.0.8:9376"
            ],
            "10.244.0.7 is ready in one slice: the readiest copy wins"
        );
    }

    #[test]
    fn node_port_is_served_on_node_addresses_and_not_bound() {
        let (mut s, es) = hostnames();
        let spec = s.spec.as_mut().unwrap();
        spec.type_ = Some("NodePort".into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        let state = service_state(&s, &[&es], &ctx()).unwrap();
        assert_eq!(
            keys(&state),
            ["TCP 10.96.0.10:80", "TCP 192.168.1.10:30080"],
            "v6 node address: no v6 ClusterIP"
        );
        assert_eq!(rs(&state, "TCP 192.168.1.10:30080").len(), 3);
        assert_eq!(
            state.virtual_servers[&find(&state, "TCP 192.168.1.10:30080")]
                .1
                .kind,
            AddressKind::NodePort
        );
        assert_eq!(
            state.addresses,
            ["10.96.0.10".parse::<IpAddr>().unwrap()].into()
        );
    }

    #[test]
    fn load_balancer_with_local_external_policy_uses_only_this_nodes_endpoints() {
        let (mut s, es) = hostnames();
        let spec = s.spec.as_mut().unwrap();
        spec.type_ = Some("LoadBalancer".into());
        spec.external_traffic_policy = Some("Local".into());
        spec.external_ips = Some(vec!["198.51.100.7".into(), "192.168.1.10".into()]);
        spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        s.status = Some(serde_json::from_value(json!({"loadBalancer": {"ingress": [
            {"ip": "203.0.113.5"}, {"ip": "203.0.113.6", "ipMode": "Proxy"}, {"hostname": "lb.example"}]}}))
        .unwrap());
        let state = service_state(&s, &[&es], &ctx()).unwrap();
        assert_eq!(
            keys(&state),
            [
                "TCP 10.96.0.10:80",
                "TCP 192.168.1.10:80",
                "TCP 192.168.1.10:30080",
                "TCP 198.51.100.7:80",
                "TCP 203.0.113.5:80"
            ]
        );
        assert_eq!(
            rs(&state, "TCP 10.96.0.10:80").len(),
            3,
            "cluster traffic uses every endpoint"
        );
        for vs in [
            "TCP 203.0.113.5:80",
            "TCP 198.51.100.7:80",
            "TCP 192.168.1.10:30080",
        ] {
            assert_eq!(
                rs(&state, vs),
                ["10.244.0.5:9376"],
                "{vs}: only node-a's endpoint"
            );
        }
        let bound: Vec<String> = state.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            bound,
            ["10.96.0.10", "198.51.100.7", "203.0.113.5"],
            "192.168.1.10 is already local"
        );
    }

    #[test]
    fn local_policy_without_local_endpoints_has_no_real_servers_unless_the_old_fallback_is_asked_for()
     {
        let (mut s, es) = hostnames();
        s.spec.as_mut().unwrap().internal_traffic_policy = Some("Local".into());
        let mut c = ctx();
        c.node_name = "node-z".into();
        let state = service_state(&s, &[&es], &c).unwrap();
        assert!(rs(&state, "TCP 10.96.0.10:80").is_empty());
        c.local_fallback_to_cluster = true;
        let state = service_state(&s, &[&es], &c).unwrap();
        assert_eq!(rs(&state, "TCP 10.96.0.10:80").len(), 3);
    }

    #[test]
    fn client_ip_affinity_is_persistence_with_the_default_or_given_timeout() {
        let (mut s, es) = hostnames();
        s.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        let state = service_state(&s, &[&es], &ctx()).unwrap();
        let vs = &state.virtual_servers[&find(&state, "TCP 10.96.0.10:80")].0;
        assert_eq!(
            vs.persistence,
            Some(Persistence {
                timeout_secs: 10800
            })
        );
        s.spec.as_mut().unwrap().session_affinity_config =
            Some(serde_json::from_value(json!({"clientIP": {"timeoutSeconds": 60}})).unwrap());
        let state = service_state(&s, &[&es], &ctx()).unwrap();
        let vs = &state.virtual_servers[&find(&state, "TCP 10.96.0.10:80")].0;
        assert_eq!(vs.persistence, Some(Persistence { timeout_secs: 60 }));
    }

    #[test]
    fn dual_stack_uses_each_familys_endpoints() {
        let s = svc(json!({
            "metadata": {"name": "ds", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.11", "clusterIPs": ["10.96.0.11", "fd00:96::11"], "ports": [{"port": 443}]}
        }));
        let v4 = slice(
            json!({"metadata": {"name": "ds-4", "namespace": "default", "labels": {"kubernetes.io/service-name": "ds"}},
            "addressType": "IPv4", "ports": [{"port": 8443}], "endpoints": [{"addresses": ["10.244.0.9"]}]}),
        );
        let v6 = slice(
            json!({"metadata": {"name": "ds-6", "namespace": "default", "labels": {"kubernetes.io/service-name": "ds"}},
            "addressType": "IPv6", "ports": [{"port": 8443}], "endpoints": [{"addresses": ["fd00:244::9"]}]}),
        );
        let fqdn = slice(
            json!({"metadata": {"name": "ds-f", "namespace": "default", "labels": {"kubernetes.io/service-name": "ds"}},
            "addressType": "FQDN", "ports": [{"port": 8443}], "endpoints": [{"addresses": ["x.example"]}]}),
        );
        let state = service_state(&s, &[&v4, &v6, &fqdn], &ctx()).unwrap();
        assert_eq!(rs(&state, "TCP 10.96.0.11:443"), ["10.244.0.9:8443"]);
        assert_eq!(rs(&state, "TCP [fd00:96::11]:443"), ["[fd00:244::9]:8443"]);
        let mut only_v4 = ctx();
        only_v4.families = [Family::V4].into();
        assert_eq!(
            keys(&service_state(&s, &[&v4, &v6], &only_v4).unwrap()),
            ["TCP 10.96.0.11:443"]
        );
    }

    #[test]
    fn topology_hints_narrow_the_cluster_set_only_when_usable() {
        let (mut s, _) = hostnames();
        s.spec.as_mut().unwrap().traffic_distribution = Some("PreferClose".into());
        let with_hints = |h6: serde_json::Value| {
            slice(json!({
                "metadata": {"name": "e", "namespace": "default", "labels": {"kubernetes.io/service-name": "hostnames"}},
                "addressType": "IPv4", "ports": [{"name": "default", "port": 9376}],
                "endpoints": [
                    {"addresses": ["10.244.0.5"], "zone": "zone-1", "hints": {"forZones": [{"name": "zone-1"}]}},
                    {"addresses": ["10.244.0.6"], "zone": "zone-2", "hints": h6}
                ]
            }))
        };
        let es = with_hints(json!({"forZones": [{"name": "zone-2"}]}));
        assert_eq!(
            rs(
                &service_state(&s, &[&es], &ctx()).unwrap(),
                "TCP 10.96.0.10:80"
            ),
            ["10.244.0.5:9376"]
        );
        let es = with_hints(json!({}));
        assert_eq!(
            rs(
                &service_state(&s, &[&es], &ctx()).unwrap(),
                "TCP 10.96.0.10:80"
            )
            .len(),
            2,
            "a hint missing"
        );
        let es = with_hints(json!({"forZones": [{"name": "zone-2"}]}));
        let mut elsewhere = ctx();
        elsewhere.node_zone = Some("zone-9".into());
        assert_eq!(
            rs(
                &service_state(&s, &[&es], &elsewhere).unwrap(),
                "TCP 10.96.0.10:80"
            )
            .len(),
            2,
            "no hint for us"
        );
        s.spec.as_mut().unwrap().traffic_distribution = None;
        assert_eq!(
            rs(
                &service_state(&s, &[&es], &ctx()).unwrap(),
                "TCP 10.96.0.10:80"
            )
            .len(),
            2,
            "not asked for"
        );
    }

    #[test]
    fn invalid_fields_are_errors_naming_service_and_field() {
        let cases = [
            (
                json!({"clusterIP": "10.96.0.300", "ports": [{"port": 80}]}),
                "spec.clusterIPs[0]",
            ),
            (
                json!({"clusterIP": "10.96.0.1", "ports": [{"port": 0}]}),
                "spec.ports[0].port",
            ),
            (
                json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}, {"port": 81, "protocol": "ICMP"}]}),
                "spec.ports[1].protocol",
            ),
            (
                json!({"clusterIP": "10.96.0.1", "externalIPs": ["nope"], "ports": [{"port": 80}]}),
                "spec.externalIPs[0]",
            ),
            (
                json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80, "nodePort": 70000}]}),
                "spec.ports[0].nodePort",
            ),
        ];
        for (spec, field) in cases {
            let s = svc(json!({"metadata": {"name": "bad", "namespace": "ns"}, "spec": spec}));
            let e = service_state(&s, &[], &ctx()).unwrap_err();
            assert_eq!(e.service.to_string(), "ns/bad");
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn the_scheduler_annotation_picks_the_scheduler_and_a_bad_one_is_an_error() {
        let (mut s, es) = hostnames();
        s.metadata.annotations = Some(
            [(
                kipvs_sched::ANNOTATION_SCHEDULER.to_string(),
                "sh".to_string(),
            )]
            .into(),
        );
        let state = service_state(&s, &[&es], &ctx()).unwrap();
        assert_eq!(
            state.virtual_servers[&find(&state, "TCP 10.96.0.10:80")]
                .0
                .scheduler
                .to_string(),
            "sh"
        );
        s.metadata.annotations = Some(
            [(
                kipvs_sched::ANNOTATION_SCHEDULER.to_string(),
                "fastest".to_string(),
            )]
            .into(),
        );
        let e = service_state(&s, &[&es], &ctx()).unwrap_err();
        assert!(e.field.contains("kipvs.io/scheduler"), "{e}");
        assert!(
            e.to_string().starts_with("Service default/hostnames: "),
            "{e}"
        );
    }

    #[test]
    fn whole_state_reports_conflicts_and_keeps_going() {
        let (a, es) = hostnames();
        let mut b = a.clone();
        b.metadata.name = Some("copycat".into());
        let c = svc(json!({"metadata": {"name": "zz", "namespace": "default"},
                           "spec": {"clusterIP": "10.96.0.99", "ports": [{"port": 80, "protocol": "NOPE"}]}}));
        let d = svc(
            json!({"metadata": {"name": "other", "namespace": "default"},
                           "spec": {"clusterIP": "10.96.0.12", "ports": [{"port": 80}]}}),
        );
        let slices = BTreeMap::from([(ObjectRef::new("default", "hostnames"), vec![&es])]);
        let (state, errors) = desired_state([&a, &b, &c, &d], &slices, &ctx());
        let vs: Vec<String> = state
            .virtual_servers
            .keys()
            .map(|k| k.to_string())
            .collect();
        assert_eq!(vs, ["TCP 10.96.0.10:80", "TCP 10.96.0.12:80"]);
        let errs: Vec<String> = errors.iter().map(|e| e.service.to_string()).collect();
        assert_eq!(
            errs,
            ["default/hostnames", "default/zz"],
            "copycat sorts first and wins: {errors:?}"
        );
    }

    #[test]
    fn nodeport_addresses_skip_the_dummy_loopback_and_link_local() {
        let local: Vec<(String, IpAddr)> = [
            ("lo", "127.0.0.1"),
            ("eth0", "192.168.1.10"),
            ("eth1", "10.0.0.4"),
            ("kube-ipvs0", "10.96.0.10"),
            ("eth0", "fe80::1"),
            ("eth0", "fd00::10"),
        ]
        .iter()
        .map(|(i, a)| (i.to_string(), a.parse().unwrap()))
        .collect();
        let all = nodeport_addresses(&local, "kube-ipvs0", &NodePortFilter::All, &[]);
        assert_eq!(
            all.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            ["10.0.0.4", "192.168.1.10", "fd00::10"]
        );
        let cidr = NodePortFilter::Cidrs(vec!["192.168.0.0/16".parse().unwrap()]);
        assert_eq!(
            nodeport_addresses(&local, "kube-ipvs0", &cidr, &[]),
            ["192.168.1.10".parse::<IpAddr>().unwrap()]
        );
        let primary = ["10.0.0.4".parse().unwrap()];
        assert_eq!(
            nodeport_addresses(&local, "kube-ipvs0", &NodePortFilter::Primary, &primary),
            primary
        );
    }
}
