//! Set elements as plain data: which set each belongs to, how nft spells
//! it, and how `nft -j` reports it back.

use ipnet::IpNet;
use serde_json::Value;
use std::fmt;
use std::net::IpAddr;

/// A transport protocol of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// nft's name (`inet_proto`).
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
        }
    }

    fn from_json(v: &Value) -> Option<Proto> {
        match v {
            Value::String(s) => match s.as_str() {
                "tcp" => Some(Proto::Tcp),
                "udp" => Some(Proto::Udp),
                "sctp" => Some(Proto::Sctp),
                _ => None,
            },
            Value::Number(n) => match n.as_u64()? {
                6 => Some(Proto::Tcp),
                17 => Some(Proto::Udp),
                132 => Some(Proto::Sctp),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A virtual server's address, protocol and port (`addr . proto . port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vs {
    pub addr: IpAddr,
    pub proto: Proto,
    pub port: u16,
}

impl Vs {
    pub fn new(addr: IpAddr, proto: Proto, port: u16) -> Vs {
        Vs { addr, proto, port }
    }

    fn render(&self) -> String {
        format!("{} . {} . {}", self.addr, self.proto.name(), self.port)
    }
}

/// What a set holds; each kind but [`SetKind::HealthCheckPorts`] has an
/// IPv4 and an IPv6 set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// Addresses bound on kube-ipvs0 (the VIP filter guards them).
    VipAddrs,
    /// Virtual servers on kube-ipvs0 addresses (the VIP filter lets them through).
    VipPorts,
    /// ClusterIP virtual servers (masqueraded per `masqueradeAll`/`clusterCIDR`).
    ClusterPorts,
    /// externalIP, load-balancer and NodePort virtual servers whose traffic is
    /// masqueraded (all but `externalTrafficPolicy: Local`).
    ExternalPorts,
    /// `endpoint . proto . port . endpoint`: a pod reaching itself through a
    /// Service (always masqueraded).
    Hairpin,
    /// Load-balancer virtual servers with `loadBalancerSourceRanges`.
    LbRestricted,
    /// `lb . proto . port . source network` allowed to reach a restricted one.
    LbAllowed,
    /// Health-check node ports (`inet_service`, both families): never filtered.
    HealthCheckPorts,
    /// Every virtual server kipvs programs: the ownership record, kept in
    /// the kernel so it survives a restart. No rule reads it.
    Owned,
}

impl SetKind {
    pub const ALL: [SetKind; 9] = [
        SetKind::VipAddrs,
        SetKind::VipPorts,
        SetKind::ClusterPorts,
        SetKind::ExternalPorts,
        SetKind::Hairpin,
        SetKind::LbRestricted,
        SetKind::LbAllowed,
        SetKind::HealthCheckPorts,
        SetKind::Owned,
    ];

    fn stem(self) -> &'static str {
        match self {
            SetKind::VipAddrs => "vip-addrs",
            SetKind::VipPorts => "vip-ports",
            SetKind::ClusterPorts => "cluster-ports",
            SetKind::ExternalPorts => "external-ports",
            SetKind::Hairpin => "hairpin",
            SetKind::LbRestricted => "lb-restricted",
            SetKind::LbAllowed => "lb-allowed",
            SetKind::HealthCheckPorts => "hc-ports",
            SetKind::Owned => "owned",
        }
    }

    /// The set's `type` and `flags`, for one family's address type.
    pub(crate) fn declaration(self, addr_type: &str) -> String {
        let vs = format!("{addr_type} . inet_proto . inet_service");
        match self {
            SetKind::VipAddrs => format!("type {addr_type};"),
            SetKind::VipPorts
            | SetKind::ClusterPorts
            | SetKind::ExternalPorts
            | SetKind::LbRestricted
            | SetKind::Owned => format!("type {vs};"),
            SetKind::Hairpin => format!("type {vs} . {addr_type};"),
            SetKind::LbAllowed => format!("type {vs} . {addr_type}; flags interval;"),
            SetKind::HealthCheckPorts => "type inet_service;".into(),
        }
    }

    pub fn has_families(self) -> bool {
        self != SetKind::HealthCheckPorts
    }
}

/// A set of kipvs's table: its kind and, for address sets, the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetName {
    pub kind: SetKind,
    /// The IPv6 set (false: IPv4, or a set without family).
    pub v6: bool,
}

impl SetName {
    /// Every set of the table.
    pub fn all() -> impl Iterator<Item = SetName> {
        SetKind::ALL.into_iter().flat_map(|kind| {
            let families: &[bool] = if kind.has_families() {
                &[false, true]
            } else {
                &[false]
            };
            families.iter().map(move |&v6| SetName { kind, v6 })
        })
    }

    pub fn parse(s: &str) -> Option<SetName> {
        SetName::all().find(|n| n.to_string() == s)
    }
}

impl fmt::Display for SetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind.has_families(), self.v6) {
            (false, _) => f.write_str(self.kind.stem()),
            (true, false) => write!(f, "{}-v4", self.kind.stem()),
            (true, true) => write!(f, "{}-v6", self.kind.stem()),
        }
    }
}

/// One element of one of kipvs's sets.
///
/// Invariants kept by whoever builds them (the pure code in crates/proxy):
/// an [`Element::Hairpin`]'s and an [`Element::LbAllowed`]'s addresses are
/// of one family, and an `LbAllowed` network has no host bits
/// ([`IpNet::trunc`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Element {
    VipAddress(IpAddr),
    VipPort(Vs),
    ClusterPort(Vs),
    ExternalPort(Vs),
    /// The endpoint (address, protocol, port); the source is the same address.
    Hairpin(Vs),
    LbRestricted(Vs),
    /// A load-balancer virtual server and a source network.
    LbAllowed(Vs, IpNet),
    HealthCheckPort(u16),
    /// A virtual server kipvs programs (the ownership record).
    Owned(Vs),
}

impl Element {
    /// The set this element belongs to.
    pub fn set(&self) -> SetName {
        let (kind, addr) = match self {
            Element::VipAddress(a) => (SetKind::VipAddrs, Some(a)),
            Element::VipPort(v) => (SetKind::VipPorts, Some(&v.addr)),
            Element::ClusterPort(v) => (SetKind::ClusterPorts, Some(&v.addr)),
            Element::ExternalPort(v) => (SetKind::ExternalPorts, Some(&v.addr)),
            Element::Hairpin(v) => (SetKind::Hairpin, Some(&v.addr)),
            Element::LbRestricted(v) => (SetKind::LbRestricted, Some(&v.addr)),
            Element::LbAllowed(v, _) => (SetKind::LbAllowed, Some(&v.addr)),
            Element::HealthCheckPort(_) => (SetKind::HealthCheckPorts, None),
            Element::Owned(v) => (SetKind::Owned, Some(&v.addr)),
        };
        SetName {
            kind,
            v6: addr.is_some_and(IpAddr::is_ipv6),
        }
    }

    /// nft's spelling of the element.
    pub fn render(&self) -> String {
        match self {
            Element::VipAddress(a) => a.to_string(),
            Element::VipPort(v)
            | Element::ClusterPort(v)
            | Element::ExternalPort(v)
            | Element::LbRestricted(v)
            | Element::Owned(v) => v.render(),
            Element::Hairpin(v) => format!("{} . {}", v.render(), v.addr),
            Element::LbAllowed(v, net) if net.prefix_len() == net.max_prefix_len() => {
                format!("{} . {}", v.render(), net.addr())
            }
            Element::LbAllowed(v, net) => format!("{} . {net}", v.render()),
            Element::HealthCheckPort(p) => p.to_string(),
        }
    }

    /// An element of `set` as `nft -j` reports it.
    pub fn from_json(set: SetName, v: &Value) -> Result<Element, ParseError> {
        let bad = || ParseError {
            set: set.to_string(),
            element: v.to_string(),
        };
        // Elements with attributes come as {"elem": {"val": …}}.
        let v = v.pointer("/elem/val").unwrap_or(v);
        let addr = |v: &Value| v.as_str().and_then(|s| s.parse::<IpAddr>().ok());
        let port = |v: &Value| match v {
            Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        let concat = v
            .get("concat")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let vs = || -> Option<Vs> {
            Some(Vs::new(
                addr(concat.first()?)?,
                Proto::from_json(concat.get(1)?)?,
                port(concat.get(2)?)?,
            ))
        };
        let e = match set.kind {
            SetKind::VipAddrs => addr(v).map(Element::VipAddress),
            SetKind::HealthCheckPorts => port(v).map(Element::HealthCheckPort),
            SetKind::VipPorts if concat.len() == 3 => vs().map(Element::VipPort),
            SetKind::ClusterPorts if concat.len() == 3 => vs().map(Element::ClusterPort),
            SetKind::ExternalPorts if concat.len() == 3 => vs().map(Element::ExternalPort),
            SetKind::LbRestricted if concat.len() == 3 => vs().map(Element::LbRestricted),
            SetKind::Owned if concat.len() == 3 => vs().map(Element::Owned),
            SetKind::Hairpin if concat.len() == 4 => vs()
                .filter(|v| addr(&concat[3]) == Some(v.addr))
                .map(Element::Hairpin),
            SetKind::LbAllowed if concat.len() == 4 => {
                let source = &concat[3];
                let net = match source.get("prefix") {
                    Some(p) => p
                        .get("addr")
                        .and_then(addr)
                        .zip(p.get("len").and_then(Value::as_u64))
                        .and_then(|(a, l)| IpNet::new(a, u8::try_from(l).ok()?).ok()),
                    None => addr(source).map(IpNet::from),
                };
                vs().zip(net).map(|(vs, net)| Element::LbAllowed(vs, net))
            }
            _ => None,
        };
        e.filter(|e| e.set() == set).ok_or_else(bad)
    }
}

/// An element `nft -j` reported that kipvs would not have written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("set {set}: element {element} is not one kipvs writes")]
pub struct ParseError {
    pub set: String,
    pub element: String,
}
