//! Destination attributes (`IPVS_DEST_ATTR_*`), nested in `IPVS_CMD_ATTR_DEST`.

use netlink_packet_core::{DecodeError, DefaultNla, NLA_F_NESTED, Nla, NlaBuffer, Parseable};

use super::stats::{emit_stats, parse_stats, stats_len};
use super::{addr_bytes, addr_of, parse_addr, parse_be16, parse_u8, parse_u16, parse_u32};
use crate::types::{
    AddressFamily, Destination, DestinationEntry, DestinationKey, Forward, Stats, TunnelFlags,
    TunnelType,
};

const ADDR: u16 = 1;
const PORT: u16 = 2;
const FWD_METHOD: u16 = 3;
const WEIGHT: u16 = 4;
const U_THRESH: u16 = 5;
const L_THRESH: u16 = 6;
const ACTIVE_CONNS: u16 = 7;
const INACT_CONNS: u16 = 8;
const PERSIST_CONNS: u16 = 9;
const STATS: u16 = 10;
const ADDR_FAMILY: u16 = 11;
const STATS64: u16 = 12;
const TUN_TYPE: u16 = 13;
const TUN_PORT: u16 = 14;
const TUN_FLAGS: u16 = 15;

/// One destination attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestAttr {
    /// `IPVS_DEST_ATTR_ADDR`, `union nf_inet_addr`.
    Addr([u8; 16]),
    /// `IPVS_DEST_ATTR_PORT`, big-endian u16 (held here in host order).
    Port(u16),
    /// `IPVS_DEST_ATTR_FWD_METHOD`, u32.
    FwdMethod(u32),
    /// `IPVS_DEST_ATTR_WEIGHT`, u32 (an `int` in the kernel).
    Weight(u32),
    /// `IPVS_DEST_ATTR_U_THRESH`, u32.
    UpperThreshold(u32),
    /// `IPVS_DEST_ATTR_L_THRESH`, u32.
    LowerThreshold(u32),
    /// `IPVS_DEST_ATTR_ACTIVE_CONNS`, u32.
    ActiveConns(u32),
    /// `IPVS_DEST_ATTR_INACT_CONNS`, u32.
    InactiveConns(u32),
    /// `IPVS_DEST_ATTR_PERSIST_CONNS`, u32.
    PersistentConns(u32),
    /// `IPVS_DEST_ATTR_STATS`, nested 32-bit counters.
    Stats(Stats),
    /// `IPVS_DEST_ATTR_ADDR_FAMILY`, u16.
    AddrFamily(u16),
    /// `IPVS_DEST_ATTR_STATS64`, nested 64-bit counters.
    Stats64(Stats),
    /// `IPVS_DEST_ATTR_TUN_TYPE`, u8.
    TunnelType(u8),
    /// `IPVS_DEST_ATTR_TUN_PORT`, big-endian u16 (held here in host order).
    TunnelPort(u16),
    /// `IPVS_DEST_ATTR_TUN_FLAGS`, u16.
    TunnelFlags(u16),
    /// Anything else, kept raw.
    Other(DefaultNla),
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        use DestAttr::*;
        match self {
            Addr(_) => 16,
            Port(_) | AddrFamily(_) | TunnelPort(_) | TunnelFlags(_) => 2,
            TunnelType(_) => 1,
            FwdMethod(_) | Weight(_) | UpperThreshold(_) | LowerThreshold(_) | ActiveConns(_)
            | InactiveConns(_) | PersistentConns(_) => 4,
            Stats(s) => stats_len(s, false),
            Stats64(s) => stats_len(s, true),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DestAttr::*;
        match self {
            Addr(_) => ADDR,
            Port(_) => PORT,
            FwdMethod(_) => FWD_METHOD,
            Weight(_) => WEIGHT,
            UpperThreshold(_) => U_THRESH,
            LowerThreshold(_) => L_THRESH,
            ActiveConns(_) => ACTIVE_CONNS,
            InactiveConns(_) => INACT_CONNS,
            PersistentConns(_) => PERSIST_CONNS,
            Stats(_) => STATS | NLA_F_NESTED,
            AddrFamily(_) => ADDR_FAMILY,
            Stats64(_) => STATS64 | NLA_F_NESTED,
            TunnelType(_) => TUN_TYPE,
            TunnelPort(_) => TUN_PORT,
            TunnelFlags(_) => TUN_FLAGS,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use DestAttr::*;
        match self {
            Addr(a) => buf.copy_from_slice(a),
            Port(v) | TunnelPort(v) => buf.copy_from_slice(&v.to_be_bytes()),
            AddrFamily(v) | TunnelFlags(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            TunnelType(v) => buf[0] = *v,
            FwdMethod(v) | Weight(v) | UpperThreshold(v) | LowerThreshold(v) | ActiveConns(v)
            | InactiveConns(v) | PersistentConns(v) => buf.copy_from_slice(&v.to_ne_bytes()),
            Stats(s) => emit_stats(s, false, buf),
            Stats64(s) => emit_stats(s, true, buf),
            Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use DestAttr::*;
        let v = buf.value();
        Ok(match buf.kind() {
            ADDR => Addr(parse_addr(v, "IPVS_DEST_ATTR_ADDR")?),
            PORT => Port(parse_be16(v, "IPVS_DEST_ATTR_PORT")?),
            FWD_METHOD => FwdMethod(parse_u32(v, "IPVS_DEST_ATTR_FWD_METHOD")?),
            WEIGHT => Weight(parse_u32(v, "IPVS_DEST_ATTR_WEIGHT")?),
            U_THRESH => UpperThreshold(parse_u32(v, "IPVS_DEST_ATTR_U_THRESH")?),
            L_THRESH => LowerThreshold(parse_u32(v, "IPVS_DEST_ATTR_L_THRESH")?),
            ACTIVE_CONNS => ActiveConns(parse_u32(v, "IPVS_DEST_ATTR_ACTIVE_CONNS")?),
            INACT_CONNS => InactiveConns(parse_u32(v, "IPVS_DEST_ATTR_INACT_CONNS")?),
            PERSIST_CONNS => PersistentConns(parse_u32(v, "IPVS_DEST_ATTR_PERSIST_CONNS")?),
            STATS => Stats(parse_stats(v, "IPVS_DEST_ATTR_STATS")?),
            ADDR_FAMILY => AddrFamily(parse_u16(v, "IPVS_DEST_ATTR_ADDR_FAMILY")?),
            STATS64 => Stats64(parse_stats(v, "IPVS_DEST_ATTR_STATS64")?),
            TUN_TYPE => TunnelType(parse_u8(v, "IPVS_DEST_ATTR_TUN_TYPE")?),
            TUN_PORT => TunnelPort(parse_be16(v, "IPVS_DEST_ATTR_TUN_PORT")?),
            TUN_FLAGS => TunnelFlags(parse_u16(v, "IPVS_DEST_ATTR_TUN_FLAGS")?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The attributes that identify a destination (enough for delete).
pub fn key_attrs(key: &DestinationKey) -> Vec<DestAttr> {
    vec![
        DestAttr::AddrFamily(AddressFamily::of(&key.addr).to_raw()),
        DestAttr::Addr(addr_bytes(&key.addr)),
        DestAttr::Port(key.port),
    ]
}

/// The full attributes of a destination (add and edit).
pub fn dest_attrs(d: &Destination) -> Vec<DestAttr> {
    let mut out = Vec::with_capacity(16);
    out.extend(key_attrs(&d.key()));
    out.extend([
        DestAttr::FwdMethod(d.forward.to_raw()),
        DestAttr::Weight(d.weight),
        DestAttr::TunnelType(d.tunnel_type.to_raw()),
        DestAttr::TunnelPort(d.tunnel_port),
        DestAttr::TunnelFlags(d.tunnel_flags.0),
        DestAttr::UpperThreshold(d.upper_threshold),
        DestAttr::LowerThreshold(d.lower_threshold),
    ]);
    out
}

/// The attributes of a destination as the kernel reports it
/// (`ip_vs_genl_fill_dest`). For tests and fakes.
pub fn entry_attrs(e: &DestinationEntry) -> Vec<DestAttr> {
    let mut out = dest_attrs(&e.destination);
    out.extend([
        DestAttr::ActiveConns(e.active_conns),
        DestAttr::InactiveConns(e.inactive_conns),
        DestAttr::PersistentConns(e.persistent_conns),
        DestAttr::Stats(e.stats),
        DestAttr::Stats64(e.stats),
    ]);
    out
}

fn missing(name: &str) -> DecodeError {
    DecodeError::from(format!("{name}: missing"))
}

/// The destination (with connection counts and counters, zero if absent)
/// of parsed attributes. Without `ADDR_FAMILY` (kernels before 4.2) the
/// address is read in `service_family`. Absent tunnel attributes (kernels
/// before 5.2/5.3) read as the defaults.
pub fn parse_entry(
    attrs: &[DestAttr],
    service_family: AddressFamily,
) -> Result<DestinationEntry, DecodeError> {
    let mut family = service_family;
    let (mut addr, mut port, mut fwd, mut weight, mut upper, mut lower) =
        (None, None, None, None, None, None);
    let (mut tun_type, mut tun_port, mut tun_flags) = (0, 0, 0);
    let (mut active, mut inactive, mut persistent) = (0, 0, 0);
    let (mut stats32, mut stats64) = (None, None);
    for a in attrs {
        match a {
            DestAttr::Addr(v) => addr = Some(v),
            DestAttr::Port(v) => port = Some(*v),
            DestAttr::FwdMethod(v) => fwd = Some(*v),
            DestAttr::Weight(v) => weight = Some(*v),
            DestAttr::UpperThreshold(v) => upper = Some(*v),
            DestAttr::LowerThreshold(v) => lower = Some(*v),
            DestAttr::ActiveConns(v) => active = *v,
            DestAttr::InactiveConns(v) => inactive = *v,
            DestAttr::PersistentConns(v) => persistent = *v,
            DestAttr::Stats(s) => stats32 = Some(*s),
            DestAttr::Stats64(s) => stats64 = Some(*s),
            DestAttr::AddrFamily(af) => {
                family = AddressFamily::from_raw(*af).ok_or_else(|| {
                    format!("IPVS_DEST_ATTR_ADDR_FAMILY: unsupported address family {af}")
                })?
            }
            DestAttr::TunnelType(v) => tun_type = *v,
            DestAttr::TunnelPort(v) => tun_port = *v,
            DestAttr::TunnelFlags(v) => tun_flags = *v,
            DestAttr::Other(_) => {}
        }
    }
    let addr = addr.ok_or_else(|| missing("IPVS_DEST_ATTR_ADDR"))?;
    Ok(DestinationEntry {
        destination: Destination {
            addr: addr_of(addr, family),
            port: port.ok_or_else(|| missing("IPVS_DEST_ATTR_PORT"))?,
            forward: Forward::from_raw(fwd.ok_or_else(|| missing("IPVS_DEST_ATTR_FWD_METHOD"))?),
            weight: weight.ok_or_else(|| missing("IPVS_DEST_ATTR_WEIGHT"))?,
            upper_threshold: upper.ok_or_else(|| missing("IPVS_DEST_ATTR_U_THRESH"))?,
            lower_threshold: lower.ok_or_else(|| missing("IPVS_DEST_ATTR_L_THRESH"))?,
            tunnel_type: TunnelType::from_raw(tun_type),
            tunnel_port: tun_port,
            tunnel_flags: TunnelFlags(tun_flags),
        },
        active_conns: active,
        inactive_conns: inactive,
        persistent_conns: persistent,
        stats: stats64.or(stats32).unwrap_or_default(),
    })
}
