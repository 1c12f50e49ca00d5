//! The IPVS generic-netlink messages, byte for byte, in the rust-netlink
//! style: [`IpvsMessage`] is the generic-netlink payload (`Emitable`,
//! `ParseableParametrized<[u8], GenlHeader>`, `GenlFamily`); each attribute
//! family has its module with an `Nla` + `Parseable<NlaBuffer>` enum and the
//! pure conversions to and from the plain types of [`crate::types`].
//!
//! Layout facts (from `include/uapi/linux/ip_vs.h` and `ip_vs_ctl.c`):
//! addresses are the 16-byte `union nf_inet_addr` (IPv4 in the first four
//! bytes), ports are big-endian, everything else is host order; flags are
//! `struct ip_vs_flags { u32 flags; u32 mask; }`; strings are NUL-terminated.
//! Decoding never panics: a short, long or unknown value is a
//! [`DecodeError`] naming the attribute.

pub mod config;
pub mod dest;
pub mod info;
pub mod service;
pub mod stats;

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    Nla, NlaBuffer, NlasIterator, Parseable, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};

pub use dest::DestAttr;
pub use service::ServiceAttr;

/// The family name the kernel registers (`IPVS_GENL_NAME`).
pub const IPVS_GENL_NAME: &str = "IPVS";
/// The family version (`IPVS_GENL_VERSION`).
pub const IPVS_GENL_VERSION: u8 = 1;

/// `IPVS_CMD_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IpvsCmd {
    /// Add a service.
    NewService = 1,
    /// Edit a service.
    SetService = 2,
    /// Delete a service.
    DelService = 3,
    /// Get one service or dump all (also the kind of a service reply).
    GetService = 4,
    /// Add a destination.
    NewDest = 5,
    /// Edit a destination.
    SetDest = 6,
    /// Delete a destination.
    DelDest = 7,
    /// Dump the destinations of a service (also the kind of the replies).
    GetDest = 8,
    /// Start a sync daemon.
    NewDaemon = 9,
    /// Stop a sync daemon.
    DelDaemon = 10,
    /// Get the sync daemons.
    GetDaemon = 11,
    /// Set timeouts (also the kind of the `GetConfig` reply).
    SetConfig = 12,
    /// Get timeouts.
    GetConfig = 13,
    /// Kind of the `GetInfo` reply.
    SetInfo = 14,
    /// Get version and connection table size.
    GetInfo = 15,
    /// Zero counters (of one service, or all).
    Zero = 16,
    /// Delete every service.
    Flush = 17,
}

impl IpvsCmd {
    /// The command of a raw value.
    pub fn from_raw(raw: u8) -> Result<Self, DecodeError> {
        use IpvsCmd::*;
        Ok(match raw {
            1 => NewService,
            2 => SetService,
            3 => DelService,
            4 => GetService,
            5 => NewDest,
            6 => SetDest,
            7 => DelDest,
            8 => GetDest,
            9 => NewDaemon,
            10 => DelDaemon,
            11 => GetDaemon,
            12 => SetConfig,
            13 => GetConfig,
            14 => SetInfo,
            15 => GetInfo,
            16 => Zero,
            17 => Flush,
            other => return Err(format!("unknown IPVS command {other}").into()),
        })
    }
}

// Top-level attributes (`IPVS_CMD_ATTR_*`).
const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;
const CMD_ATTR_DAEMON: u16 = 3;
const CMD_ATTR_TIMEOUT_TCP: u16 = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
const CMD_ATTR_TIMEOUT_UDP: u16 = 6;
// Top-level attributes of the info reply (`IPVS_INFO_ATTR_*`), which reuse
// the numbers of the command attributes.
const INFO_ATTR_VERSION: u16 = 1;
const INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// A top-level attribute of an IPVS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsAttr {
    /// `IPVS_CMD_ATTR_SERVICE`, nested.
    Service(Vec<ServiceAttr>),
    /// `IPVS_CMD_ATTR_DEST`, nested.
    Dest(Vec<DestAttr>),
    /// `IPVS_CMD_ATTR_DAEMON`, nested, kept raw.
    Daemon(Vec<DefaultNla>),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP`, seconds.
    TimeoutTcp(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_TCP_FIN`, seconds.
    TimeoutTcpFin(u32),
    /// `IPVS_CMD_ATTR_TIMEOUT_UDP`, seconds.
    TimeoutUdp(u32),
    /// `IPVS_INFO_ATTR_VERSION` (info replies only).
    InfoVersion(u32),
    /// `IPVS_INFO_ATTR_CONN_TAB_SIZE` (info replies only).
    InfoConnTabSize(u32),
    /// Anything else, kept raw.
    Other(DefaultNla),
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            IpvsAttr::Service(attrs) => attrs.as_slice().buffer_len(),
            IpvsAttr::Dest(attrs) => attrs.as_slice().buffer_len(),
            IpvsAttr::Daemon(attrs) => attrs.as_slice().buffer_len(),
            IpvsAttr::TimeoutTcp(_)
            | IpvsAttr::TimeoutTcpFin(_)
            | IpvsAttr::TimeoutUdp(_)
            | IpvsAttr::InfoVersion(_)
            | IpvsAttr::InfoConnTabSize(_) => 4,
            IpvsAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            IpvsAttr::Service(_) => CMD_ATTR_SERVICE | NLA_F_NESTED,
            IpvsAttr::Dest(_) => CMD_ATTR_DEST | NLA_F_NESTED,
            IpvsAttr::Daemon(_) => CMD_ATTR_DAEMON | NLA_F_NESTED,
            IpvsAttr::TimeoutTcp(_) => CMD_ATTR_TIMEOUT_TCP,
            IpvsAttr::TimeoutTcpFin(_) => CMD_ATTR_TIMEOUT_TCP_FIN,
            IpvsAttr::TimeoutUdp(_) => CMD_ATTR_TIMEOUT_UDP,
            IpvsAttr::InfoVersion(_) => INFO_ATTR_VERSION,
            IpvsAttr::InfoConnTabSize(_) => INFO_ATTR_CONN_TAB_SIZE,
            IpvsAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            IpvsAttr::Service(attrs) => attrs.as_slice().emit(buffer),
            IpvsAttr::Dest(attrs) => attrs.as_slice().emit(buffer),
            IpvsAttr::Daemon(attrs) => attrs.as_slice().emit(buffer),
            IpvsAttr::TimeoutTcp(v)
            | IpvsAttr::TimeoutTcpFin(v)
            | IpvsAttr::TimeoutUdp(v)
            | IpvsAttr::InfoVersion(v)
            | IpvsAttr::InfoConnTabSize(v) => buffer.copy_from_slice(&v.to_ne_bytes()),
            IpvsAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl IpvsAttr {
    /// Parse one top-level attribute of a message of command `cmd`.
    pub fn parse_for(cmd: IpvsCmd, buf: &NlaBuffer<&[u8]>) -> Result<Self, DecodeError> {
        let value = buf.value();
        if matches!(cmd, IpvsCmd::SetInfo | IpvsCmd::GetInfo) {
            return Ok(match buf.kind() {
                INFO_ATTR_VERSION => {
                    IpvsAttr::InfoVersion(parse_u32(value, "IPVS_INFO_ATTR_VERSION")?)
                }
                INFO_ATTR_CONN_TAB_SIZE => {
                    IpvsAttr::InfoConnTabSize(parse_u32(value, "IPVS_INFO_ATTR_CONN_TAB_SIZE")?)
                }
                _ => IpvsAttr::Other(DefaultNla::parse(buf)?),
            });
        }
        Ok(match buf.kind() {
            CMD_ATTR_SERVICE => IpvsAttr::Service(parse_nested(value, "IPVS_CMD_ATTR_SERVICE")?),
            CMD_ATTR_DEST => IpvsAttr::Dest(parse_nested(value, "IPVS_CMD_ATTR_DEST")?),
            CMD_ATTR_DAEMON => IpvsAttr::Daemon(parse_nested(value, "IPVS_CMD_ATTR_DAEMON")?),
            CMD_ATTR_TIMEOUT_TCP => {
                IpvsAttr::TimeoutTcp(parse_u32(value, "IPVS_CMD_ATTR_TIMEOUT_TCP")?)
            }
            CMD_ATTR_TIMEOUT_TCP_FIN => {
                IpvsAttr::TimeoutTcpFin(parse_u32(value, "IPVS_CMD_ATTR_TIMEOUT_TCP_FIN")?)
            }
            CMD_ATTR_TIMEOUT_UDP => {
                IpvsAttr::TimeoutUdp(parse_u32(value, "IPVS_CMD_ATTR_TIMEOUT_UDP")?)
            }
            _ => IpvsAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// The payload of an IPVS generic-netlink message: a command and its
/// attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    /// The command (`genlmsghdr.cmd`).
    pub cmd: IpvsCmd,
    /// The top-level attributes.
    pub attrs: Vec<IpvsAttr>,
}

impl IpvsMessage {
    /// A message of a command with attributes.
    pub fn new(cmd: IpvsCmd, attrs: Vec<IpvsAttr>) -> Self {
        IpvsMessage { cmd, attrs }
    }

    /// The nested service attributes, if any.
    pub fn service(&self) -> Option<&[ServiceAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Service(s) => Some(s.as_slice()),
            _ => None,
        })
    }

    /// The nested destination attributes, if any.
    pub fn dest(&self) -> Option<&[DestAttr]> {
        self.attrs.iter().find_map(|a| match a {
            IpvsAttr::Dest(d) => Some(d.as_slice()),
            _ => None,
        })
    }

    /// The message's bytes after the generic-netlink header.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0; self.buffer_len()];
        self.emit(&mut buf);
        buf
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd as u8
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from_raw(header.cmd)?;
        let mut attrs = Vec::new();
        for nla in NlasIterator::new(buf) {
            let nla = nla.map_err(|e| within("IPVS message attributes", e))?;
            attrs.push(IpvsAttr::parse_for(cmd, &nla)?);
        }
        Ok(IpvsMessage { cmd, attrs })
    }
}

/// Append a whole netlink request (`nlmsghdr`, `genlmsghdr`, attributes)
/// for the IPVS family `family_id` to `buf`.
pub fn emit_request(buf: &mut Vec<u8>, family_id: u16, seq: u32, flags: u16, msg: IpvsMessage) {
    let mut genl = GenlMessage::from_payload(msg);
    genl.set_resolved_family_id(family_id);
    emit_genl(buf, genl, seq, flags);
}

/// Append a whole generic-netlink request to `buf`.
pub fn emit_genl<F>(buf: &mut Vec<u8>, msg: GenlMessage<F>, seq: u32, flags: u16)
where
    F: GenlFamily + Emitable + std::fmt::Debug,
{
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = seq;
    let mut nl = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
    nl.finalize();
    let start = buf.len();
    buf.resize(start + nl.buffer_len(), 0);
    nl.serialize(&mut buf[start..]);
}

/// Parse the payload of an IPVS reply (`genlmsghdr` and attributes) whose
/// netlink message type was `message_type`.
pub fn parse_reply(message_type: u16, payload: &[u8]) -> Result<IpvsMessage, DecodeError> {
    GenlMessage::<IpvsMessage>::parse_with_param(payload, message_type).map(|m| m.payload)
}

/// Prefix an error with where it happened.
pub(crate) fn within(what: &str, e: DecodeError) -> DecodeError {
    DecodeError::from(format!("{what}: {e}"))
}

/// Parse nested attributes of type `A`, naming the enclosing attribute on
/// error.
pub(crate) fn parse_nested<A>(buf: &[u8], name: &str) -> Result<Vec<A>, DecodeError>
where
    A: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    let mut out = Vec::new();
    for nla in NlasIterator::new(buf) {
        let nla = nla.map_err(|e| within(name, e))?;
        out.push(A::parse(&nla).map_err(|e| within(name, e))?);
    }
    Ok(out)
}

fn bad_len(name: &str, want: &str, got: usize) -> DecodeError {
    DecodeError::from(format!("{name}: expected {want} bytes, got {got}"))
}

pub(crate) fn parse_u8(v: &[u8], name: &str) -> Result<u8, DecodeError> {
    match v {
        [b] => Ok(*b),
        _ => Err(bad_len(name, "1", v.len())),
    }
}

pub(crate) fn parse_u16(v: &[u8], name: &str) -> Result<u16, DecodeError> {
    v.try_into()
        .map(u16::from_ne_bytes)
        .map_err(|_| bad_len(name, "2", v.len()))
}

pub(crate) fn parse_be16(v: &[u8], name: &str) -> Result<u16, DecodeError> {
    v.try_into()
        .map(u16::from_be_bytes)
        .map_err(|_| bad_len(name, "2", v.len()))
}

pub(crate) fn parse_u32(v: &[u8], name: &str) -> Result<u32, DecodeError> {
    v.try_into()
        .map(u32::from_ne_bytes)
        .map_err(|_| bad_len(name, "4", v.len()))
}

/// A counter of 4 or 8 bytes (the 32-bit `STATS` mixes both widths).
pub(crate) fn parse_counter(v: &[u8], name: &str) -> Result<u64, DecodeError> {
    match v.len() {
        4 => Ok(u64::from(u32::from_ne_bytes([v[0], v[1], v[2], v[3]]))),
        8 => Ok(u64::from_ne_bytes([
            v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
        ])),
        n => Err(bad_len(name, "4 or 8", n)),
    }
}

/// A NUL-terminated string (a missing terminator is tolerated).
pub(crate) fn parse_cstr(v: &[u8], name: &str) -> Result<String, DecodeError> {
    let v = match v.iter().position(|&b| b == 0) {
        Some(nul) => &v[..nul],
        None => v,
    };
    String::from_utf8(v.to_vec()).map_err(|_| DecodeError::from(format!("{name}: not UTF-8")))
}

/// A `union nf_inet_addr`: 16 bytes, or 4 for IPv4 from lenient senders.
pub(crate) fn parse_addr(v: &[u8], name: &str) -> Result<[u8; 16], DecodeError> {
    let mut out = [0; 16];
    match v.len() {
        4 | 16 => {
            out[..v.len()].copy_from_slice(v);
            Ok(out)
        }
        n => Err(bad_len(name, "4 or 16", n)),
    }
}

/// The 16 bytes of an address as `union nf_inet_addr`.
pub(crate) fn addr_bytes(addr: &std::net::IpAddr) -> [u8; 16] {
    let mut out = [0; 16];
    match addr {
        std::net::IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        std::net::IpAddr::V6(a) => out = a.octets(),
    }
    out
}

/// The address of 16 bytes in a family.
pub(crate) fn addr_of(bytes: &[u8; 16], family: crate::AddressFamily) -> std::net::IpAddr {
    match family {
        crate::AddressFamily::Inet => {
            std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into()
        }
        crate::AddressFamily::Inet6 => std::net::Ipv6Addr::from(*bytes).into(),
    }
}

/// Emit a string with its NUL terminator.
pub(crate) fn emit_cstr(buf: &mut [u8], s: &str) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

#[cfg(test)]
pub(crate) mod tests;
