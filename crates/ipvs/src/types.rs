//! Plain data: what a virtual service, a destination, their counters, the
//! timeouts and the module information are. No I/O and no netlink here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// An address family, as IPVS knows them (`AF_INET`, `AF_INET6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddressFamily {
    /// IPv4 (`AF_INET`, 2).
    Inet,
    /// IPv6 (`AF_INET6`, 10).
    Inet6,
}

impl AddressFamily {
    /// The kernel's number for this family.
    pub const fn to_raw(self) -> u16 {
        match self {
            AddressFamily::Inet => libc::AF_INET as u16,
            AddressFamily::Inet6 => libc::AF_INET6 as u16,
        }
    }

    /// The family of a kernel number, if IPVS supports it.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw as i32 {
            libc::AF_INET => Some(AddressFamily::Inet),
            libc::AF_INET6 => Some(AddressFamily::Inet6),
            _ => None,
        }
    }

    /// The family of an address.
    pub const fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        }
    }

    /// The netmask that makes persistence per client address: `255.255.255.255`
    /// for IPv4, prefix length 128 for IPv6 (what `ipvsadm` sends by default).
    pub const fn full_netmask(self) -> Netmask {
        match self {
            AddressFamily::Inet => Netmask::V4(Ipv4Addr::BROADCAST),
            AddressFamily::Inet6 => Netmask::V6(128),
        }
    }
}

impl fmt::Display for AddressFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressFamily::Inet => "IPv4",
            AddressFamily::Inet6 => "IPv6",
        })
    }
}

/// The transport protocol of an address-based virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (6).
    Tcp,
    /// UDP (17).
    Udp,
    /// SCTP (132).
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub const fn to_raw(self) -> u16 {
        match self {
            Protocol::Tcp => libc::IPPROTO_TCP as u16,
            Protocol::Udp => libc::IPPROTO_UDP as u16,
            Protocol::Sctp => libc::IPPROTO_SCTP as u16,
        }
    }

    /// The protocol of an IP protocol number, if IPVS balances it.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw as i32 {
            libc::IPPROTO_TCP => Some(Protocol::Tcp),
            libc::IPPROTO_UDP => Some(Protocol::Udp),
            libc::IPPROTO_SCTP => Some(Protocol::Sctp),
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

/// What identifies a virtual service: a protocol, address and port, or a
/// firewall mark (with the address family of the packets it matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// `ipvsadm -t|-u|--sctp-service addr:port`.
    Addr {
        /// The transport protocol.
        protocol: Protocol,
        /// The virtual address; its family is the service's.
        addr: IpAddr,
        /// The virtual port.
        port: u16,
    },
    /// `ipvsadm -f mark` (`-6` for IPv6). The mark is never 0: the kernel
    /// reads mark 0 as "no mark".
    FwMark {
        /// The family of the packets the mark matches.
        family: AddressFamily,
        /// The firewall mark.
        mark: u32,
    },
}

impl ServiceKey {
    /// A TCP service.
    pub fn tcp(addr: impl Into<IpAddr>, port: u16) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr: addr.into(),
            port,
        }
    }

    /// A UDP service.
    pub fn udp(addr: impl Into<IpAddr>, port: u16) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr: addr.into(),
            port,
        }
    }

    /// An SCTP service.
    pub fn sctp(addr: impl Into<IpAddr>, port: u16) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Sctp,
            addr: addr.into(),
            port,
        }
    }

    /// A firewall-mark service.
    pub fn fwmark(family: AddressFamily, mark: u32) -> Self {
        ServiceKey::FwMark { family, mark }
    }

    /// The service's address family.
    pub fn family(&self) -> AddressFamily {
        match self {
            ServiceKey::Addr { addr, .. } => AddressFamily::of(addr),
            ServiceKey::FwMark { family, .. } => *family,
        }
    }
}

/// `TCP 10.0.0.1:80`, `UDP [fd00::1]:53`, `FWM 7 IPv6`: the spelling of
/// `ipvsadm -Ln`.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V4(a),
                port,
            } => write!(f, "{protocol} {a}:{port}"),
            ServiceKey::Addr {
                protocol,
                addr: IpAddr::V6(a),
                port,
            } => write!(f, "{protocol} [{a}]:{port}"),
            ServiceKey::FwMark { family, mark } => write!(f, "FWM {mark} {family}"),
        }
    }
}

/// The persistence netmask of a service: which client addresses share a
/// persistence template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Netmask {
    /// An IPv4 mask (the kernel keeps any 32 bits, contiguous or not).
    V4(Ipv4Addr),
    /// An IPv6 prefix length, 1–128 (the kernel refuses anything else).
    V6(u32),
}

impl Netmask {
    /// The IPv4 mask of a prefix length (0–32, longer is clamped to 32).
    pub fn v4_prefix(len: u8) -> Self {
        let len = u32::from(len.min(32));
        let bits = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Netmask::V4(Ipv4Addr::from(bits))
    }

    /// The prefix length, if the mask is a prefix (IPv6 always is).
    pub fn prefix_len(&self) -> Option<u32> {
        match self {
            Netmask::V4(m) => {
                let bits = u32::from(*m);
                let ones = bits.leading_ones();
                (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones)
            }
            Netmask::V6(len) => Some(*len),
        }
    }
}

impl fmt::Display for Netmask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netmask::V4(m) => write!(f, "{m}"),
            Netmask::V6(len) => write!(f, "{len}"),
        }
    }
}

/// Service flags (`IP_VS_SVC_F_*`) as the user sets them. The kernel's
/// internal `hashed` bit (0x2) is never part of a decoded value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceFlags(u32);

impl ServiceFlags {
    /// No flags.
    pub const NONE: Self = ServiceFlags(0);
    /// `IP_VS_SVC_F_PERSISTENT` (`-p`).
    pub const PERSISTENT: Self = ServiceFlags(0x0001);
    /// `IP_VS_SVC_F_HASHED`: kernel-internal, masked away on decode.
    pub const HASHED: Self = ServiceFlags(0x0002);
    /// `IP_VS_SVC_F_ONEPACKET` (`-o`, UDP only).
    pub const ONE_PACKET: Self = ServiceFlags(0x0004);
    /// `IP_VS_SVC_F_SCHED1`: `sh-fallback`, `mh-fallback`.
    pub const SCHED1: Self = ServiceFlags(0x0008);
    /// `IP_VS_SVC_F_SCHED2`: `sh-port`, `mh-port`.
    pub const SCHED2: Self = ServiceFlags(0x0010);
    /// `IP_VS_SVC_F_SCHED3`: `flag-3`.
    pub const SCHED3: Self = ServiceFlags(0x0020);

    /// The flags of raw bits, with the kernel's `hashed` bit removed.
    pub const fn from_bits(bits: u32) -> Self {
        ServiceFlags(bits & !Self::HASHED.0)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every flag of `other` is set here.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        ServiceFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ServiceFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// A virtual service and its settings: everything `ipvsadm -A|-E` sets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    /// What identifies it.
    pub key: ServiceKey,
    /// Scheduler name (`rr`, `wlc`, `sh`, `mh` …): the kernel loads
    /// `ip_vs_<name>` on demand.
    pub scheduler: String,
    /// Flags (persistent, one-packet, scheduler flags).
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (meaningful with `PERSISTENT`).
    pub timeout: u32,
    /// Persistence netmask (IPv4) or prefix length (IPv6).
    pub netmask: Netmask,
    /// Persistence engine (`sip`), loaded as `ip_vs_pe_<name>`.
    pub persistence_engine: Option<String>,
}

impl Service {
    /// A service with the given scheduler, no flags, no persistence and the
    /// full netmask of its family (what `ipvsadm -A` creates).
    pub fn new(key: ServiceKey, scheduler: impl Into<String>) -> Self {
        Service {
            key,
            scheduler: scheduler.into(),
            flags: ServiceFlags::NONE,
            timeout: 0,
            netmask: key.family().full_netmask(),
            persistence_engine: None,
        }
    }

    /// Make the service persistent for `timeout` seconds (`ipvsadm -p`).
    pub fn persistent(mut self, timeout: u32) -> Self {
        self.flags |= ServiceFlags::PERSISTENT;
        self.timeout = timeout;
        self
    }

    /// Set flags in addition to those already set.
    pub fn with_flags(mut self, flags: ServiceFlags) -> Self {
        self.flags |= flags;
        self
    }

    /// Set the persistence netmask.
    pub fn with_netmask(mut self, netmask: Netmask) -> Self {
        self.netmask = netmask;
        self
    }
}

/// How packets reach a destination (`IP_VS_CONN_F_FWD_MASK` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Forward {
    /// NAT (`-m`, 0).
    #[default]
    Masquerade,
    /// Local node (1): the kernel delivers locally.
    Local,
    /// IP-in-IP / GUE / GRE tunnel (`-i`, 2).
    Tunnel,
    /// Direct routing (`-g`, 3).
    Route,
    /// Cache bypass (4), never set by `ipvsadm`.
    Bypass,
    /// A value this crate has no name for (5–7).
    Other(u32),
}

impl Forward {
    /// The kernel's value.
    pub const fn to_raw(self) -> u32 {
        match self {
            Forward::Masquerade => 0,
            Forward::Local => 1,
            Forward::Tunnel => 2,
            Forward::Route => 3,
            Forward::Bypass => 4,
            Forward::Other(v) => v,
        }
    }

    /// The method of a kernel value (only the low three bits count).
    pub const fn from_raw(raw: u32) -> Self {
        match raw & 0x7 {
            0 => Forward::Masquerade,
            1 => Forward::Local,
            2 => Forward::Tunnel,
            3 => Forward::Route,
            4 => Forward::Bypass,
            v => Forward::Other(v),
        }
    }
}

/// Encapsulation of a tunnelled destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum TunnelType {
    /// IP in IP (0), the default.
    #[default]
    Ipip,
    /// Generic UDP encapsulation (1), needs a tunnel port.
    Gue,
    /// GRE (2).
    Gre,
    /// A value this crate has no name for.
    Other(u8),
}

impl TunnelType {
    /// The kernel's value.
    pub const fn to_raw(self) -> u8 {
        match self {
            TunnelType::Ipip => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
            TunnelType::Other(v) => v,
        }
    }

    /// The type of a kernel value.
    pub const fn from_raw(raw: u8) -> Self {
        match raw {
            0 => TunnelType::Ipip,
            1 => TunnelType::Gue,
            2 => TunnelType::Gre,
            v => TunnelType::Other(v),
        }
    }
}

/// Tunnel encapsulation flags (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TunnelFlags(pub u16);

impl TunnelFlags {
    /// No checksum (0).
    pub const NOCSUM: Self = TunnelFlags(0);
    /// Checksum (`tun-csum`, 1).
    pub const CSUM: Self = TunnelFlags(1);
    /// Remote checksum offload (`tun-remcsum`, 2).
    pub const REMCSUM: Self = TunnelFlags(2);
}

/// A destination (real server) of a virtual service: everything
/// `ipvsadm -a|-e` sets. Its address family is its address's; only a
/// tunnelled destination may differ from its service's family.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// The real server's address.
    pub addr: IpAddr,
    /// The real server's port (ignored by the kernel for DR and tunnels).
    pub port: u16,
    /// How packets reach it.
    pub forward: Forward,
    /// Scheduling weight; 0 stops new connections (`-w`). The kernel refuses
    /// values above `i32::MAX`.
    pub weight: u32,
    /// Upper connection threshold, 0 = none (`-x`).
    pub upper_threshold: u32,
    /// Lower connection threshold, 0 = none (`-y`).
    pub lower_threshold: u32,
    /// Tunnel encapsulation (with `Forward::Tunnel`).
    pub tunnel_type: TunnelType,
    /// Tunnel (GUE) destination port.
    pub tunnel_port: u16,
    /// Tunnel checksum flags.
    pub tunnel_flags: TunnelFlags,
}

impl Destination {
    /// A masqueraded destination of weight 1 without thresholds (what
    /// `ipvsadm -a -r addr:port` creates).
    pub fn new(addr: impl Into<IpAddr>, port: u16) -> Self {
        Destination {
            addr: addr.into(),
            port,
            forward: Forward::Masquerade,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel_type: TunnelType::Ipip,
            tunnel_port: 0,
            tunnel_flags: TunnelFlags::NOCSUM,
        }
    }

    /// Set the forwarding method.
    pub fn with_forward(mut self, forward: Forward) -> Self {
        self.forward = forward;
        self
    }

    /// Set the weight.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// The destination's address family.
    pub fn family(&self) -> AddressFamily {
        AddressFamily::of(&self.addr)
    }

    /// What identifies it within its service.
    pub fn key(&self) -> DestinationKey {
        DestinationKey {
            addr: self.addr,
            port: self.port,
        }
    }
}

/// What identifies a destination within its service: address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationKey {
    /// The real server's address.
    pub addr: IpAddr,
    /// The real server's port.
    pub port: u16,
}

impl DestinationKey {
    /// The key of an address and port.
    pub fn new(addr: impl Into<IpAddr>, port: u16) -> Self {
        DestinationKey {
            addr: addr.into(),
            port,
        }
    }
}

impl fmt::Display for DestinationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.port),
        }
    }
}

/// Counters and rates of a service or destination. The kernel reports 64-bit
/// counters (`STATS64`) since Linux 4.1; older kernels' 32-bit values are
/// widened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Incoming packets.
    pub inpkts: u64,
    /// Outgoing packets.
    pub outpkts: u64,
    /// Incoming bytes.
    pub inbytes: u64,
    /// Outgoing bytes.
    pub outbytes: u64,
    /// Connection rate (per second).
    pub cps: u64,
    /// Incoming packet rate.
    pub inpps: u64,
    /// Outgoing packet rate.
    pub outpps: u64,
    /// Incoming byte rate.
    pub inbps: u64,
    /// Outgoing byte rate.
    pub outbps: u64,
}

/// A service as the kernel reports it: its settings and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// The settings.
    pub service: Service,
    /// The counters.
    pub stats: Stats,
}

/// A destination as the kernel reports it: its settings, connection counts
/// and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationEntry {
    /// The settings.
    pub destination: Destination,
    /// Active connections.
    pub active_conns: u32,
    /// Inactive connections.
    pub inactive_conns: u32,
    /// Persistence templates pointing at it.
    pub persistent_conns: u32,
    /// The counters.
    pub stats: Stats,
}

/// One service of the whole table with all its destinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The service.
    pub service: ServiceEntry,
    /// Its destinations, in kernel order.
    pub destinations: Vec<DestinationEntry>,
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`). When
/// setting, 0 leaves a value unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timeouts {
    /// Established TCP connections.
    pub tcp: u32,
    /// TCP connections after a FIN.
    pub tcp_fin: u32,
    /// UDP "connections".
    pub udp: u32,
}

/// The IPVS module's version and connection table size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Info {
    /// `IP_VS_VERSION_CODE`, e.g. `0x010201` for 1.2.1.
    pub version: u32,
    /// Connection hash table size (buckets).
    pub conn_table_size: u32,
}

impl Info {
    /// The version as (major, minor, patch).
    pub fn version_triple(&self) -> (u8, u8, u8) {
        (
            (self.version >> 16) as u8,
            (self.version >> 8) as u8,
            self.version as u8,
        )
    }
}
