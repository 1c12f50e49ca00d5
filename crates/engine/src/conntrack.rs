//! Which conntrack entries a Service change leaves stale (pure).
//!
//! IPVS keeps a conntrack entry per UDP flow (`net.ipv4.vs.conntrack=1`),
//! and a UDP client that keeps its source port keeps hitting that entry. So,
//! as kube-proxy does (`pkg/proxy/conntrack/cleanup.go`; UDP only, SCTP and
//! TCP are left alone), after a sync kipvs deletes:
//!
//! - for an endpoint that left a UDP virtual server: flows sent to the
//!   virtual server's address and port (a NodePort: to the port on any
//!   address) whose reply comes from that endpoint (address and port);
//! - for a UDP virtual server that gained its first endpoint (or is new with
//!   endpoints): flows sent to its address and port (a NodePort: the port)
//!   that were never translated, the ones that went nowhere while it had no
//!   endpoint (kubernetes/kubernetes#48370). kube-proxy deletes every flow
//!   to the address then; kipvs spares translated ones, so the first sync
//!   after a restart, which sees every Service as new, cuts no live flow.
//!
//! [`stale_flows`] is the decision; the controller hands its filters to the
//! data plane after the IPVS changes are applied.

use crate::model::{AddressKind, Protocol, ServiceState, VirtualServer};
use kipvs_conntrack::{Filter, IPPROTO_UDP};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// The conntrack filters for one Service going from `old` to `new`
/// (sorted, without duplicates; empty when nothing UDP changed).
pub fn stale_flows(old: &ServiceState, new: &ServiceState) -> Vec<Filter> {
    let mut out = BTreeSet::new();
    let keys = old
        .virtual_servers
        .keys()
        .chain(new.virtual_servers.keys())
        .filter(|k| k.protocol == Protocol::Udp);
    for key in keys {
        let before = old.virtual_servers.get(key);
        let after = new.virtual_servers.get(key);
        let Some((_, port)) = after.or(before) else {
            continue;
        };
        let orig_dst = match port.kind {
            AddressKind::NodePort => None,
            _ => Some(key.address),
        };
        let endpoints = |v: Option<&(VirtualServer, _)>| -> BTreeSet<SocketAddr> {
            v.map(|(vs, _)| vs.real_servers.keys().copied().collect())
                .unwrap_or_default()
        };
        let (had, has) = (endpoints(before), endpoints(after));
        let base = Filter {
            orig_dst,
            orig_dst_port: Some(key.port),
            ..Filter::protocol(IPPROTO_UDP)
        };
        if had.is_empty() && !has.is_empty() {
            out.insert(Filter {
                untranslated: true,
                ..base
            });
        }
        for gone in had.difference(&has) {
            out.insert(Filter {
                reply_src: Some(gone.ip()),
                reply_src_port: Some(gone.port()),
                ..base
            });
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectRef, RealServer, ServicePortRef, VirtualServerKey};
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// One virtual server of `kind` at `addr:port` with endpoints `eps`
    /// (10.244.0.X:5353).
    fn state(vss: &[(Protocol, AddressKind, &str, u16, &[u8])]) -> ServiceState {
        let mut s = ServiceState::default();
        for (proto, kind, addr, port, eps) in vss {
            let key = VirtualServerKey {
                protocol: *proto,
                address: ip(addr),
                port: *port,
            };
            let vs = VirtualServer {
                key,
                scheduler: "rr".parse().unwrap(),
                persistence: None,
                real_servers: eps
                    .iter()
                    .map(|l| (ep(*l), RealServer { weight: 1 }))
                    .collect(),
            };
            let port_ref = ServicePortRef {
                service: ObjectRef {
                    namespace: "default".into(),
                    name: "dns".into(),
                },
                port_name: String::new(),
                kind: *kind,
            };
            s.virtual_servers.insert(key, (vs, port_ref));
        }
        s
    }

    fn ep(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 244, 0, last], 5353))
    }

    fn gone(dst: Option<&str>, port: u16, last: u8) -> Filter {
        Filter {
            orig_dst: dst.map(ip),
            orig_dst_port: Some(port),
            reply_src: Some(ep(last).ip()),
            reply_src_port: Some(5353),
            ..Filter::protocol(IPPROTO_UDP)
        }
    }

    fn gained(dst: Option<&str>, port: u16) -> Filter {
        Filter {
            orig_dst: dst.map(ip),
            orig_dst_port: Some(port),
            untranslated: true,
            ..Filter::protocol(IPPROTO_UDP)
        }
    }

    use AddressKind::*;
    use Protocol::*;

    #[test]
    fn table() {
        let none = ServiceState::default();
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, ServiceState, ServiceState, Vec<Filter>)] = &[
            ("nothing", none.clone(), none.clone(), vec![]),
            (
                "endpoint replaced: the old one's flows, at every address",
                state(&[
                    (Udp, ClusterIp, "10.96.0.10", 53, &[7]),
                    (Udp, ExternalIp, "192.0.2.1", 53, &[7]),
                    (Udp, LoadBalancer, "203.0.113.9", 53, &[7]),
                    (Udp, NodePort, "172.18.0.2", 30053, &[7]),
                    (Udp, NodePort, "172.18.0.3", 30053, &[7]),
                ]),
                state(&[
                    (Udp, ClusterIp, "10.96.0.10", 53, &[8]),
                    (Udp, ExternalIp, "192.0.2.1", 53, &[8]),
                    (Udp, LoadBalancer, "203.0.113.9", 53, &[8]),
                    (Udp, NodePort, "172.18.0.2", 30053, &[8]),
                    (Udp, NodePort, "172.18.0.3", 30053, &[8]),
                ]),
                vec![
                    gone(None, 30053, 7),
                    gone(Some("10.96.0.10"), 53, 7),
                    gone(Some("192.0.2.1"), 53, 7),
                    gone(Some("203.0.113.9"), 53, 7),
                ],
            ),
            (
                "0 → 1 endpoints: the untranslated flows",
                state(&[
                    (Udp, ClusterIp, "10.96.0.10", 53, &[]),
                    (Udp, NodePort, "172.18.0.2", 30053, &[]),
                ]),
                state(&[
                    (Udp, ClusterIp, "10.96.0.10", 53, &[7]),
                    (Udp, NodePort, "172.18.0.2", 30053, &[7]),
                ]),
                vec![gained(None, 30053), gained(Some("10.96.0.10"), 53)],
            ),
            (
                "new Service with endpoints (or the first sync)",
                none.clone(),
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[7])]),
                vec![gained(Some("10.96.0.10"), 53)],
            ),
            (
                "new Service without endpoints",
                none.clone(),
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[])]),
                vec![],
            ),
            (
                "an endpoint added to others: nothing",
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[7])]),
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[7, 8])]),
                vec![],
            ),
            (
                "one of two endpoints leaves",
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[7, 8])]),
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[8])]),
                vec![gone(Some("10.96.0.10"), 53, 7)],
            ),
            (
                "last endpoint leaves",
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[7])]),
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[])]),
                vec![gone(Some("10.96.0.10"), 53, 7)],
            ),
            (
                "Service deleted",
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[7])]),
                none.clone(),
                vec![gone(Some("10.96.0.10"), 53, 7)],
            ),
            (
                "TCP and SCTP: nothing (as kube-proxy)",
                state(&[
                    (Tcp, ClusterIp, "10.96.0.10", 53, &[7]),
                    (Sctp, ClusterIp, "10.96.0.10", 53, &[7]),
                ]),
                state(&[
                    (Tcp, ClusterIp, "10.96.0.10", 53, &[8]),
                    (Sctp, ClusterIp, "10.96.0.10", 53, &[8]),
                ]),
                vec![],
            ),
            (
                "unchanged: nothing",
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[7])]),
                state(&[(Udp, ClusterIp, "10.96.0.10", 53, &[7])]),
                vec![],
            ),
        ];
        for (name, old, new, want) in cases {
            assert_eq!(&stale_flows(old, new), want, "{name}");
        }
    }
}
