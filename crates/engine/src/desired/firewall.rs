//! The elements of kipvs's nftables table ([`kipvs_nft`]) one Service
//! needs, as a pure function of the Service, the virtual servers
//! [`super::service_state`] gave it, and the node's addresses. The table's
//! fixed rules look these elements up; see [`kipvs_nft::Skeleton::render`].
//!
//! Per virtual server, following kube-proxy's IPVS mode:
//!
//! | virtual server | elements |
//! |---|---|
//! | ClusterIP | `cluster-ports` (masqueraded per `masqueradeAll`/`clusterCIDR`), `vip-ports` |
//! | externalIP, load balancer | `external-ports` unless `externalTrafficPolicy: Local`; `vip-ports` when bound on kube-ipvs0 |
//! | NodePort | `external-ports` unless `externalTrafficPolicy: Local` |
//! | load balancer with `loadBalancerSourceRanges` | `lb-restricted`, one `lb-allowed` per range of its family, and the LB IP itself as a source when a range holds a node address |
//! | every real server | `hairpin` (the endpoint reaching itself is always masqueraded) |
//!
//! plus every address bound on kube-ipvs0 (`vip-addrs`, guarded by the VIP
//! port filter) and the Service's `healthCheckNodePort` (`hc-ports`, let
//! through the filter).

use crate::desired::Context;
use crate::model::{AddressKind, Protocol, ServiceState, VirtualServerKey};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use kipvs_nft::{Element, Proto, Vs};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// nft's protocol of a model protocol.
pub fn proto(p: Protocol) -> Proto {
    match p {
        Protocol::Tcp => Proto::Tcp,
        Protocol::Udp => Proto::Udp,
        Protocol::Sctp => Proto::Sctp,
    }
}

/// The ownership record element of a virtual server.
pub fn owned(key: &VirtualServerKey) -> Element {
    Element::Owned(Vs::new(key.address, proto(key.protocol), key.port))
}

/// The virtual server an ownership record element names (`None` for
/// every other element).
pub fn owned_key(e: &Element) -> Option<VirtualServerKey> {
    match e {
        Element::Owned(v) => Some(VirtualServerKey {
            protocol: match v.proto {
                Proto::Tcp => Protocol::Tcp,
                Proto::Udp => Protocol::Udp,
                Proto::Sctp => Protocol::Sctp,
            },
            address: v.addr,
            port: v.port,
        }),
        _ => None,
    }
}

/// The virtual servers an ownership record names (the [`Element::Owned`]
/// elements among `elements`).
pub fn recorded<'a>(elements: impl IntoIterator<Item = &'a Element>) -> BTreeSet<VirtualServerKey> {
    elements.into_iter().filter_map(owned_key).collect()
}

/// A `loadBalancerSourceRanges` entry (`10.0.0.0/8`, `fd00::/64`, or a
/// bare address), without host bits (`10.1.2.3/8` is `10.0.0.0/8`).
/// Invalid ones are skipped: with fewer ranges, fewer sources are let in,
/// never more.
fn source_range(s: &str) -> Option<IpNet> {
    let s = s.trim();
    match s.parse::<IpNet>() {
        Ok(net) => Some(net.trunc()),
        Err(_) => s.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

/// The node's own addresses (for source ranges that hold one).
fn node_addresses(ctx: &Context) -> impl Iterator<Item = &IpAddr> {
    ctx.local_addresses.iter().chain(&ctx.nodeport_addresses)
}

/// The table elements one Service needs (empty for a Service kipvs does
/// not proxy, whose `state` is empty), the ownership record of each of its
/// virtual servers ([`Element::Owned`]) included.
pub fn service_elements(svc: &Service, state: &ServiceState, ctx: &Context) -> BTreeSet<Element> {
    let mut out = BTreeSet::new();
    if state.virtual_servers.is_empty() && state.addresses.is_empty() {
        return out;
    }
    let spec = svc.spec.as_ref();
    let external_local = spec.and_then(|s| s.external_traffic_policy.as_deref()) == Some("Local");
    let ranges: Vec<IpNet> = spec
        .and_then(|s| s.load_balancer_source_ranges.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|r| source_range(r))
        .collect();
    let restricted = spec
        .and_then(|s| s.load_balancer_source_ranges.as_ref())
        .is_some_and(|r| !r.is_empty());

    out.extend(state.addresses.iter().copied().map(Element::VipAddress));
    for (key, (vs, owner)) in &state.virtual_servers {
        let v = Vs::new(key.address, proto(key.protocol), key.port);
        // The ownership record: written before the virtual server is made.
        out.insert(owned(key));
        match owner.kind {
            AddressKind::ClusterIp => {
                out.insert(Element::ClusterPort(v));
            }
            AddressKind::ExternalIp | AddressKind::LoadBalancer | AddressKind::NodePort => {
                if !external_local {
                    out.insert(Element::ExternalPort(v));
                }
            }
        }
        if state.addresses.contains(&key.address) {
            out.insert(Element::VipPort(v));
        }
        if owner.kind == AddressKind::LoadBalancer && restricted {
            out.insert(Element::LbRestricted(v));
            let same = |a: &IpAddr| a.is_ipv4() == key.address.is_ipv4();
            for net in ranges.iter().filter(|n| same(&n.addr())) {
                out.insert(Element::LbAllowed(v, *net));
            }
            let holds_node = ranges
                .iter()
                .filter(|n| same(&n.addr()))
                .any(|net| node_addresses(ctx).any(|a| net.contains(a)));
            if holds_node {
                out.insert(Element::LbAllowed(v, IpNet::from(key.address)));
            }
        }
        for rs in vs.real_servers.keys() {
            out.insert(Element::Hairpin(Vs::new(
                rs.ip(),
                proto(key.protocol),
                rs.port(),
            )));
        }
    }
    if let Some(p) = spec
        .and_then(|s| s.health_check_node_port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
    {
        out.insert(Element::HealthCheckPort(p));
    }
    out
}

#[cfg(test)]
mod tests;
