//! The desired IPVS state as plain data: what the kernel should hold, and
//! which Kubernetes object each piece belongs to. No I/O here.

use kipvs_sched::SchedulerConfig;
use litemap::LiteMap;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(addr: &IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The EndpointSlice `addressType` of this family.
    pub fn address_type(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The family of an EndpointSlice `addressType`; `None` for FQDN and
    /// anything else.
    pub fn from_address_type(t: &str) -> Option<Family> {
        [Family::V4, Family::V6]
            .into_iter()
            .find(|f| f.address_type() == t)
    }
}

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// Parses the Kubernetes spelling (`TCP`, `UDP`, `SCTP`); `None` is TCP,
    /// the API default.
    pub fn from_k8s(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// What identifies a virtual server in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualServerKey {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
}

impl fmt::Display for VirtualServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.protocol,
            SocketAddr::new(self.address, self.port)
        )
    }
}

/// Client-IP session affinity, as IPVS persistence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// `sessionAffinityConfig.clientIP.timeoutSeconds`.
    pub timeout_secs: u32,
}

/// A real server of a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RealServer {
    pub weight: u32,
}

/// The weight kube-proxy gives every real server.
pub const DEFAULT_WEIGHT: u32 = 1;

/// One virtual server as the kernel should hold it (masquerade forwarding
/// throughout, as kube-proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    pub key: VirtualServerKey,
    pub scheduler: SchedulerConfig,
    pub persistence: Option<Persistence>,
    pub real_servers: BTreeMap<SocketAddr, RealServer>,
}

/// `namespace/name` of a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How a client reaches a virtual server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AddressKind {
    ClusterIp,
    ExternalIp,
    LoadBalancer,
    NodePort,
}

impl AddressKind {
    /// Whether traffic to this kind of address comes from outside the
    /// cluster (`externalTrafficPolicy` applies) or from inside
    /// (`internalTrafficPolicy` applies).
    pub fn is_external(self) -> bool {
        !matches!(self, AddressKind::ClusterIp)
    }

    /// Whether the address is bound on kube-ipvs0 (node addresses are not).
    pub fn is_bound(self) -> bool {
        !matches!(self, AddressKind::NodePort)
    }
}

/// Which Service port a virtual server serves: `namespace/name:port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortRef {
    pub service: ObjectRef,
    /// The Service port's name (may be empty for a single-port Service).
    pub port_name: String,
    pub kind: AddressKind,
}

impl fmt::Display for ServicePortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port_name.is_empty() {
            write!(f, "{}", self.service)
        } else {
            write!(f, "{}:{}", self.service, self.port_name)
        }
    }
}

/// The virtual servers one Service needs, and the addresses to bind for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceState {
    /// A sorted vector, not a B-tree: a Service has one virtual server or
    /// a few, and the engine keeps a state per Service (a B-tree allocates
    /// a node of eleven entries, ~1.7 KiB, for the first one).
    pub virtual_servers: LiteMap<VirtualServerKey, (VirtualServer, ServicePortRef)>,
    /// Addresses this Service needs on kube-ipvs0.
    pub addresses: BTreeSet<IpAddr>,
}

/// The whole desired state: every Service's virtual servers and the address
/// set of kube-ipvs0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub virtual_servers: BTreeMap<VirtualServerKey, (VirtualServer, ServicePortRef)>,
    pub addresses: BTreeSet<IpAddr>,
}

/// What the engine keeps of an EndpointSlice ([`crate::slim::slice`]): the
/// Service it belongs to, its family and ports, and per endpoint the fields
/// a decision reads. Repeated names (nodes, zones, port names) are shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// The slice's own name.
    pub name: String,
    /// From the `kubernetes.io/service-name` label.
    pub service: Option<ObjectRef>,
    /// From `addressType`; `None` for FQDN slices (and anything else).
    pub family: Option<Family>,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<SliceEndpoint>,
}

/// A port of an EndpointSlice, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: Option<Arc<str>>,
    pub port: Option<i32>,
    /// `None` is TCP, the API default.
    pub protocol: Option<Arc<str>>,
}

/// An endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// The first address: kube-proxy uses only it.
    pub address: EndpointAddress,
    /// The conditions as written (unset is read as ready and serving, not
    /// terminating).
    pub ready: Option<bool>,
    pub serving: Option<bool>,
    pub terminating: Option<bool>,
    pub node: Option<Arc<str>>,
    /// `hints.forZones` and `hints.forNodes` names.
    pub zone_hints: Option<Box<[Arc<str>]>>,
    pub node_hints: Option<Box<[Arc<str>]>>,
}

/// An endpoint's first address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddress {
    Ip(IpAddr),
    /// Not an IP address (the text as written, for `kipvs explain`).
    Invalid(Box<str>),
    /// No address at all.
    Missing,
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointAddress::Ip(ip) => write!(f, "{ip}"),
            EndpointAddress::Invalid(text) => f.write_str(text),
            EndpointAddress::Missing => Ok(()),
        }
    }
}
