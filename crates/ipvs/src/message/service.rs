//! Service attributes (`IPVS_SVC_ATTR_*`), nested in `IPVS_CMD_ATTR_SERVICE`.

use netlink_packet_core::{DecodeError, DefaultNla, NLA_F_NESTED, Nla, NlaBuffer, Parseable};

use super::stats::{emit_stats, parse_stats, stats_len};
use super::{
    addr_bytes, addr_of, emit_cstr, parse_addr, parse_be16, parse_cstr, parse_u16, parse_u32,
};
use crate::types::{
    AddressFamily, Netmask, Protocol, Service, ServiceEntry, ServiceFlags, ServiceKey, Stats,
};

const AF: u16 = 1;
const PROTOCOL: u16 = 2;
const ADDR: u16 = 3;
const PORT: u16 = 4;
const FWMARK: u16 = 5;
const SCHED_NAME: u16 = 6;
const FLAGS: u16 = 7;
const TIMEOUT: u16 = 8;
const NETMASK: u16 = 9;
const STATS: u16 = 10;
const PE_NAME: u16 = 11;
const STATS64: u16 = 12;

/// One service attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttr {
    /// `IPVS_SVC_ATTR_AF`, u16.
    Af(u16),
    /// `IPVS_SVC_ATTR_PROTOCOL`, u16.
    Protocol(u16),
    /// `IPVS_SVC_ATTR_ADDR`, `union nf_inet_addr`.
    Addr([u8; 16]),
    /// `IPVS_SVC_ATTR_PORT`, big-endian u16 (held here in host order).
    Port(u16),
    /// `IPVS_SVC_ATTR_FWMARK`, u32.
    FwMark(u32),
    /// `IPVS_SVC_ATTR_SCHED_NAME`, NUL-terminated.
    SchedName(String),
    /// `IPVS_SVC_ATTR_FLAGS`, `struct ip_vs_flags`.
    Flags {
        /// The flag values.
        flags: u32,
        /// Which flags to set.
        mask: u32,
    },
    /// `IPVS_SVC_ATTR_TIMEOUT`, u32 seconds.
    Timeout(u32),
    /// `IPVS_SVC_ATTR_NETMASK`, four raw bytes: an IPv4 mask in network
    /// order, or an IPv6 prefix length in host order.
    Netmask([u8; 4]),
    /// `IPVS_SVC_ATTR_STATS`, nested 32-bit counters.
    Stats(Stats),
    /// `IPVS_SVC_ATTR_PE_NAME`, NUL-terminated.
    PeName(String),
    /// `IPVS_SVC_ATTR_STATS64`, nested 64-bit counters.
    Stats64(Stats),
    /// Anything else, kept raw.
    Other(DefaultNla),
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        use ServiceAttr::*;
        match self {
            Af(_) | Protocol(_) | Port(_) => 2,
            FwMark(_) | Timeout(_) | Netmask(_) => 4,
            Addr(_) => 16,
            Flags { .. } => 8,
            SchedName(s) | PeName(s) => s.len() + 1,
            Stats(s) => stats_len(s, false),
            Stats64(s) => stats_len(s, true),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use ServiceAttr::*;
        match self {
            Af(_) => AF,
            Protocol(_) => PROTOCOL,
            Addr(_) => ADDR,
            Port(_) => PORT,
            FwMark(_) => FWMARK,
            SchedName(_) => SCHED_NAME,
            Flags { .. } => FLAGS,
            Timeout(_) => TIMEOUT,
            Netmask(_) => NETMASK,
            Stats(_) => STATS | NLA_F_NESTED,
            PeName(_) => PE_NAME,
            Stats64(_) => STATS64 | NLA_F_NESTED,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use ServiceAttr::*;
        match self {
            Af(v) | Protocol(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Port(v) => buf.copy_from_slice(&v.to_be_bytes()),
            FwMark(v) | Timeout(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Netmask(b) => buf.copy_from_slice(b),
            Addr(a) => buf.copy_from_slice(a),
            Flags { flags, mask } => {
                buf[..4].copy_from_slice(&flags.to_ne_bytes());
                buf[4..].copy_from_slice(&mask.to_ne_bytes());
            }
            SchedName(s) | PeName(s) => emit_cstr(buf, s),
            Stats(s) => emit_stats(s, false, buf),
            Stats64(s) => emit_stats(s, true, buf),
            Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ServiceAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use ServiceAttr::*;
        let v = buf.value();
        Ok(match buf.kind() {
            AF => Af(parse_u16(v, "IPVS_SVC_ATTR_AF")?),
            PROTOCOL => Protocol(parse_u16(v, "IPVS_SVC_ATTR_PROTOCOL")?),
            ADDR => Addr(parse_addr(v, "IPVS_SVC_ATTR_ADDR")?),
            PORT => Port(parse_be16(v, "IPVS_SVC_ATTR_PORT")?),
            FWMARK => FwMark(parse_u32(v, "IPVS_SVC_ATTR_FWMARK")?),
            SCHED_NAME => SchedName(parse_cstr(v, "IPVS_SVC_ATTR_SCHED_NAME")?),
            FLAGS => match v {
                [f0, f1, f2, f3, m0, m1, m2, m3] => Flags {
                    flags: u32::from_ne_bytes([*f0, *f1, *f2, *f3]),
                    mask: u32::from_ne_bytes([*m0, *m1, *m2, *m3]),
                },
                _ => {
                    return Err(
                        format!("IPVS_SVC_ATTR_FLAGS: expected 8 bytes, got {}", v.len()).into(),
                    );
                }
            },
            TIMEOUT => Timeout(parse_u32(v, "IPVS_SVC_ATTR_TIMEOUT")?),
            NETMASK => Netmask(v.try_into().map_err(|_| {
                format!("IPVS_SVC_ATTR_NETMASK: expected 4 bytes, got {}", v.len())
            })?),
            STATS => Stats(parse_stats(v, "IPVS_SVC_ATTR_STATS")?),
            PE_NAME => PeName(parse_cstr(v, "IPVS_SVC_ATTR_PE_NAME")?),
            STATS64 => Stats64(parse_stats(v, "IPVS_SVC_ATTR_STATS64")?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The attributes that identify a service (enough for get, delete, zero and
/// the destination commands).
pub fn key_attrs(key: &ServiceKey) -> Vec<ServiceAttr> {
    let mut out = Vec::with_capacity(10);
    push_key(&mut out, key);
    out
}

fn push_key(out: &mut Vec<ServiceAttr>, key: &ServiceKey) {
    out.push(ServiceAttr::Af(key.family().to_raw()));
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            out.push(ServiceAttr::Protocol(protocol.to_raw()));
            out.push(ServiceAttr::Addr(addr_bytes(addr)));
            out.push(ServiceAttr::Port(*port));
        }
        ServiceKey::FwMark { mark, .. } => out.push(ServiceAttr::FwMark(*mark)),
    }
}

/// The four bytes of a netmask.
pub fn netmask_bytes(netmask: &Netmask) -> [u8; 4] {
    match netmask {
        Netmask::V4(m) => m.octets(),
        Netmask::V6(len) => len.to_ne_bytes(),
    }
}

/// The full attributes of a service (add and edit), in the kernel's order.
/// All flags are written (mask `0xffff_ffff`), so an edit sets exactly the
/// given flags.
pub fn service_attrs(s: &Service) -> Vec<ServiceAttr> {
    let mut out = Vec::with_capacity(10);
    push_key(&mut out, &s.key);
    out.push(ServiceAttr::SchedName(s.scheduler.clone()));
    if let Some(pe) = &s.persistence_engine {
        out.push(ServiceAttr::PeName(pe.clone()));
    }
    out.push(ServiceAttr::Flags {
        // Never the kernel's own `hashed` bit: on add, the kernel would
        // take the service for hashed already and leave it out of its table.
        flags: s.flags.bits() & !ServiceFlags::HASHED.bits(),
        mask: u32::MAX,
    });
    out.push(ServiceAttr::Timeout(s.timeout));
    out.push(ServiceAttr::Netmask(netmask_bytes(&s.netmask)));
    out
}

/// The attributes of a service as the kernel reports it (`ip_vs_genl_fill_service`):
/// the full attributes and both counter sets. For tests and fakes.
pub fn entry_attrs(e: &ServiceEntry) -> Vec<ServiceAttr> {
    let mut out = service_attrs(&e.service);
    out.push(ServiceAttr::Stats(e.stats));
    out.push(ServiceAttr::Stats64(e.stats));
    out
}

fn missing(name: &str) -> DecodeError {
    DecodeError::from(format!("{name}: missing"))
}

/// The service key of parsed attributes.
pub fn parse_key(attrs: &[ServiceAttr]) -> Result<ServiceKey, DecodeError> {
    let (mut af, mut protocol, mut addr, mut port, mut fwmark) = (None, None, None, None, None);
    for a in attrs {
        match a {
            ServiceAttr::Af(v) => af = Some(*v),
            ServiceAttr::Protocol(v) => protocol = Some(*v),
            ServiceAttr::Addr(v) => addr = Some(v),
            ServiceAttr::Port(v) => port = Some(*v),
            ServiceAttr::FwMark(v) => fwmark = Some(*v),
            _ => {}
        }
    }
    let af = af.ok_or_else(|| missing("IPVS_SVC_ATTR_AF"))?;
    let family = AddressFamily::from_raw(af)
        .ok_or_else(|| format!("IPVS_SVC_ATTR_AF: unsupported address family {af}"))?;
    if let Some(mark) = fwmark.filter(|m| *m != 0) {
        return Ok(ServiceKey::FwMark { family, mark });
    }
    let protocol = protocol.ok_or_else(|| missing("IPVS_SVC_ATTR_PROTOCOL"))?;
    let protocol = Protocol::from_raw(protocol)
        .ok_or_else(|| format!("IPVS_SVC_ATTR_PROTOCOL: unsupported protocol {protocol}"))?;
    let addr = addr.ok_or_else(|| missing("IPVS_SVC_ATTR_ADDR"))?;
    let port = port.ok_or_else(|| missing("IPVS_SVC_ATTR_PORT"))?;
    Ok(ServiceKey::Addr {
        protocol,
        addr: addr_of(addr, family),
        port,
    })
}

/// The service (and counters, zero if absent) of parsed attributes. 64-bit
/// counters win over 32-bit ones; the kernel's `hashed` flag is dropped.
pub fn parse_entry(attrs: &[ServiceAttr]) -> Result<ServiceEntry, DecodeError> {
    let key = parse_key(attrs)?;
    let (mut sched, mut flags, mut timeout, mut netmask, mut pe) = (None, None, None, None, None);
    let (mut stats32, mut stats64) = (None, None);
    for a in attrs {
        match a {
            ServiceAttr::SchedName(s) => sched = Some(s),
            ServiceAttr::Flags { flags: f, mask } => flags = Some(f & mask),
            ServiceAttr::Timeout(t) => timeout = Some(*t),
            ServiceAttr::Netmask(m) => netmask = Some(*m),
            ServiceAttr::PeName(p) => pe = Some(p),
            ServiceAttr::Stats(s) => stats32 = Some(*s),
            ServiceAttr::Stats64(s) => stats64 = Some(*s),
            _ => {}
        }
    }
    let netmask = netmask.ok_or_else(|| missing("IPVS_SVC_ATTR_NETMASK"))?;
    let netmask = match key.family() {
        AddressFamily::Inet => Netmask::V4(netmask.into()),
        AddressFamily::Inet6 => Netmask::V6(u32::from_ne_bytes(netmask)),
    };
    Ok(ServiceEntry {
        service: Service {
            key,
            scheduler: sched
                .ok_or_else(|| missing("IPVS_SVC_ATTR_SCHED_NAME"))?
                .clone(),
            flags: ServiceFlags::from_bits(flags.ok_or_else(|| missing("IPVS_SVC_ATTR_FLAGS"))?),
            timeout: timeout.ok_or_else(|| missing("IPVS_SVC_ATTR_TIMEOUT"))?,
            netmask,
            // The kernel leaves the name out when there is no engine; an
            // empty name means none as well.
            persistence_engine: pe.filter(|p| !p.is_empty()).cloned(),
        },
        stats: stats64.or(stats32).unwrap_or_default(),
    })
}
