//! ctnetlink messages as bytes: requests encoded, replies decoded.
//!
//! Numbers are the kernel's ABI (`include/uapi/linux/netlink.h`,
//! `netfilter/nfnetlink.h`, `netfilter/nfnetlink_conntrack.h`). Header
//! fields are in host order; ports inside attributes are big-endian.
//! Decoding never panics: every length is checked and a short or
//! inconsistent message is a [`DecodeError`].

use crate::{Family, Flow, Tuple};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The netlink protocol of netfilter's subsystems.
pub const NETLINK_NETFILTER: isize = 12;
/// The ctnetlink subsystem id (the high byte of a message type).
pub const NFNL_SUBSYS_CTNETLINK: u16 = 1;
/// A conntrack entry (dump replies carry this type).
pub const IPCTNL_MSG_CT_NEW: u16 = 0;
/// Get (with `NLM_F_DUMP`: dump) conntrack entries.
pub const IPCTNL_MSG_CT_GET: u16 = 1;
/// Delete a conntrack entry.
pub const IPCTNL_MSG_CT_DELETE: u16 = 2;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;

/// `CTA_TUPLE_ORIG`: the original-direction tuple (nested).
pub const CTA_TUPLE_ORIG: u16 = 1;
/// `CTA_TUPLE_REPLY`: the reply-direction tuple (nested).
pub const CTA_TUPLE_REPLY: u16 = 2;
/// `CTA_TUPLE_IP` inside a tuple (nested).
pub const CTA_TUPLE_IP: u16 = 1;
/// `CTA_TUPLE_PROTO` inside a tuple (nested).
pub const CTA_TUPLE_PROTO: u16 = 2;
/// `CTA_IP_V4_SRC`.
pub const CTA_IP_V4_SRC: u16 = 1;
/// `CTA_IP_V4_DST`.
pub const CTA_IP_V4_DST: u16 = 2;
/// `CTA_IP_V6_SRC`.
pub const CTA_IP_V6_SRC: u16 = 3;
/// `CTA_IP_V6_DST`.
pub const CTA_IP_V6_DST: u16 = 4;
/// `CTA_PROTO_NUM` (u8).
pub const CTA_PROTO_NUM: u16 = 1;
/// `CTA_PROTO_SRC_PORT` (be16).
pub const CTA_PROTO_SRC_PORT: u16 = 2;
/// `CTA_PROTO_DST_PORT` (be16).
pub const CTA_PROTO_DST_PORT: u16 = 3;

/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;
/// The attribute type without `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg`.
const NFGENMSG_LEN: usize = 4;

/// Why bytes are not a ctnetlink message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("{what}: need {need} bytes, have {have}")]
    Truncated {
        /// Which structure.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes there are.
        have: usize,
    },
    /// A length field smaller than its own header.
    #[error("{what}: length {len} is shorter than its header")]
    BadLength {
        /// Which structure.
        what: &'static str,
        /// The length field.
        len: usize,
    },
    /// A conntrack entry without a required attribute.
    #[error("conntrack entry without {0}")]
    Missing(&'static str),
    /// An address family other than IPv4 and IPv6.
    #[error("unknown address family {0}")]
    Family(u8),
    /// An address attribute of the wrong size.
    #[error("{what}: {len} bytes is not an address")]
    Address {
        /// Which attribute.
        what: &'static str,
        /// Its payload length.
        len: usize,
    },
}

/// A netlink message type of the ctnetlink subsystem.
pub fn msg_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_CTNETLINK << 8) | msg
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Bytes being built: netlink header, nfgenmsg, attributes.
struct Builder {
    buf: Vec<u8>,
}

impl Builder {
    fn new(msg: u16, flags: u16, seq: u32, family: Family) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish
        buf.extend_from_slice(&msg_type(msg).to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        buf.extend_from_slice(&[family.af(), 0]); // family, NFNETLINK_V0
        buf.extend_from_slice(&0u16.to_be_bytes()); // res_id
        Builder { buf }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
    }

    /// Opens a nested attribute; returns where its length goes.
    fn open(&mut self, ty: u16) -> usize {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        at
    }

    fn close(&mut self, at: usize) {
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// A dump request for one family's whole table (the kernel filters by
/// family; the caller filters by protocol).
pub fn dump_request(family: Family, seq: u32) -> Vec<u8> {
    Builder::new(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family).finish()
}

/// A delete request naming `flow` by its original tuple, acknowledged.
pub fn delete_request(flow: &Flow, seq: u32) -> Vec<u8> {
    let mut b = Builder::new(
        IPCTNL_MSG_CT_DELETE,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        flow.family,
    );
    let tuple = b.open(CTA_TUPLE_ORIG);
    let ip = b.open(CTA_TUPLE_IP);
    match (flow.orig.src, flow.orig.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.attr(CTA_IP_V4_SRC, &s.octets());
            b.attr(CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            b.attr(CTA_IP_V6_SRC, &v6(s).octets());
            b.attr(CTA_IP_V6_DST, &v6(d).octets());
        }
    }
    b.close(ip);
    let proto = b.open(CTA_TUPLE_PROTO);
    b.attr(CTA_PROTO_NUM, &[flow.protocol]);
    b.attr(CTA_PROTO_SRC_PORT, &flow.orig.src_port.to_be_bytes());
    b.attr(CTA_PROTO_DST_PORT, &flow.orig.dst_port.to_be_bytes());
    b.close(proto);
    b.close(tuple);
    b.finish()
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn need(what: &'static str, b: &[u8], n: usize) -> Result<(), DecodeError> {
    if b.len() < n {
        return Err(DecodeError::Truncated {
            what,
            need: n,
            have: b.len(),
        });
    }
    Ok(())
}

/// Iterates over attributes: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), DecodeError>> {
    std::iter::from_fn(move || {
        if b.is_empty() {
            return None;
        }
        if b.len() < 4 {
            let have = b.len();
            b = &[];
            return Some(Err(DecodeError::Truncated {
                what: "attribute header",
                need: 4,
                have,
            }));
        }
        let len = u16_at(b, 0) as usize;
        let ty = u16_at(b, 2) & NLA_TYPE_MASK;
        if len < 4 {
            b = &[];
            return Some(Err(DecodeError::BadLength {
                what: "attribute",
                len,
            }));
        }
        if b.len() < len {
            let have = b.len();
            b = &[];
            return Some(Err(DecodeError::Truncated {
                what: "attribute",
                need: len,
                have,
            }));
        }
        let payload = &b[4..len];
        b = b.get(align4(len)..).unwrap_or(&[]);
        Some(Ok((ty, payload)))
    })
}

/// Decodes a conntrack entry (the body after the netlink header).
pub fn parse_flow(body: &[u8]) -> Result<Flow, DecodeError> {
    need("nfgenmsg", body, NFGENMSG_LEN)?;
    let family = match body[0] {
        f if f == Family::V4.af() => Family::V4,
        f if f == Family::V6.af() => Family::V6,
        f => return Err(DecodeError::Family(f)),
    };
    let mut orig = None;
    let mut reply = None;
    for a in attrs(&body[NFGENMSG_LEN..]) {
        match a? {
            (CTA_TUPLE_ORIG, p) => orig = Some(parse_tuple(p)?),
            (CTA_TUPLE_REPLY, p) => reply = Some(parse_tuple(p)?),
            _ => {}
        }
    }
    let (orig, protocol) = orig.ok_or(DecodeError::Missing("CTA_TUPLE_ORIG"))?;
    let (reply, _) = reply.ok_or(DecodeError::Missing("CTA_TUPLE_REPLY"))?;
    Ok(Flow {
        family,
        protocol,
        orig,
        reply,
    })
}

fn addr(what: &'static str, p: &[u8]) -> Result<IpAddr, DecodeError> {
    match p.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(p[0], p[1], p[2], p[3]))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(p);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        len => Err(DecodeError::Address { what, len }),
    }
}

fn port(p: &[u8]) -> Result<u16, DecodeError> {
    need("port", p, 2)?;
    Ok(u16::from_be_bytes([p[0], p[1]]))
}

/// A tuple and its protocol number.
fn parse_tuple(p: &[u8]) -> Result<(Tuple, u8), DecodeError> {
    let (mut src, mut dst) = (None, None);
    let (mut proto, mut sport, mut dport) = (None, 0, 0);
    for a in attrs(p) {
        match a? {
            (CTA_TUPLE_IP, ip) => {
                for a in attrs(ip) {
                    match a? {
                        (CTA_IP_V4_SRC | CTA_IP_V6_SRC, v) => src = Some(addr("source", v)?),
                        (CTA_IP_V4_DST | CTA_IP_V6_DST, v) => dst = Some(addr("destination", v)?),
                        _ => {}
                    }
                }
            }
            (CTA_TUPLE_PROTO, pr) => {
                for a in attrs(pr) {
                    match a? {
                        (CTA_PROTO_NUM, v) => {
                            need("protocol number", v, 1)?;
                            proto = Some(v[0]);
                        }
                        (CTA_PROTO_SRC_PORT, v) => sport = port(v)?,
                        (CTA_PROTO_DST_PORT, v) => dport = port(v)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok((
        Tuple {
            src: src.ok_or(DecodeError::Missing("CTA_IP_*_SRC"))?,
            dst: dst.ok_or(DecodeError::Missing("CTA_IP_*_DST"))?,
            src_port: sport,
            dst_port: dport,
        },
        proto.ok_or(DecodeError::Missing("CTA_PROTO_NUM"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IPPROTO_UDP;
    use proptest::prelude::*;

    /// An attribute in bytes: length, type, payload, padding.
    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        v.resize(align4(v.len()), 0);
        v
    }

    fn nested(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        nla(ty | NLA_F_NESTED, &parts.concat())
    }

    fn tuple(ty: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        nested(
            ty,
            &[
                nested(
                    CTA_TUPLE_IP,
                    &[nla(CTA_IP_V4_SRC, &src), nla(CTA_IP_V4_DST, &dst)],
                ),
                nested(
                    CTA_TUPLE_PROTO,
                    &[
                        nla(CTA_PROTO_NUM, &[17]),
                        nla(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
                        nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
                    ],
                ),
            ],
        )
    }

    fn message(ty: u16, flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = ((16 + body.len()) as u32).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(body);
        v
    }

    /// A dump reply as the kernel sends it: an IPv4 UDP flow from
    /// 10.0.0.1:5000 to 10.96.0.10:53, answered by 10.244.0.7:5353, plus a
    /// status attribute (CTA_STATUS = 3) the decoder skips.
    fn golden_entry() -> Vec<u8> {
        let body = [
            vec![2, 0, 0, 0],
            tuple(CTA_TUPLE_ORIG, [10, 0, 0, 1], [10, 96, 0, 10], 5000, 53),
            tuple(CTA_TUPLE_REPLY, [10, 244, 0, 7], [10, 0, 0, 1], 5353, 5000),
            nla(3, &0x188u32.to_be_bytes()),
        ]
        .concat();
        message(0x0100, 0x2, 7, &body)
    }

    fn golden_flow() -> Flow {
        Flow {
            family: Family::V4,
            protocol: IPPROTO_UDP,
            orig: Tuple {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.96.0.10".parse().unwrap(),
                src_port: 5000,
                dst_port: 53,
            },
            reply: Tuple {
                src: "10.244.0.7".parse().unwrap(),
                dst: "10.0.0.1".parse().unwrap(),
                src_port: 5353,
                dst_port: 5000,
            },
        }
    }

    #[test]
    fn dump_request_bytes() {
        let want = message(0x0101, 0x0301, 9, &[2, 0, 0, 0]);
        assert_eq!(dump_request(Family::V4, 9), want);
        assert_eq!(dump_request(Family::V6, 9)[16], 10);
    }

    #[test]
    fn delete_request_bytes() {
        let body = [
            vec![2, 0, 0, 0],
            tuple(CTA_TUPLE_ORIG, [10, 0, 0, 1], [10, 96, 0, 10], 5000, 53),
        ]
        .concat();
        assert_eq!(
            delete_request(&golden_flow(), 3),
            message(0x0102, 0x0005, 3, &body)
        );
    }

    #[test]
    fn decodes_a_dump_entry() {
        assert_eq!(
            parse_flow(&golden_entry()[NLMSG_HDRLEN..]).unwrap(),
            golden_flow()
        );
    }

    #[test]
    fn decodes_ipv6_and_ignores_unknown_attributes() {
        let a: Ipv6Addr = "fd00::1".parse().unwrap();
        let b: Ipv6Addr = "fd00:96::a".parse().unwrap();
        let t = |ty, s: Ipv6Addr, d: Ipv6Addr| {
            nested(
                ty,
                &[
                    nested(
                        CTA_TUPLE_IP,
                        &[
                            nla(CTA_IP_V6_SRC, &s.octets()),
                            nla(CTA_IP_V6_DST, &d.octets()),
                        ],
                    ),
                    nested(CTA_TUPLE_PROTO, &[nla(CTA_PROTO_NUM, &[58]), nla(9, &[1])]),
                ],
            )
        };
        let body = [
            vec![10, 0, 0, 0],
            t(CTA_TUPLE_ORIG, a, b),
            t(CTA_TUPLE_REPLY, b, a),
        ]
        .concat();
        let flow = parse_flow(&body).unwrap();
        assert_eq!(flow.family, Family::V6);
        assert_eq!(flow.protocol, 58);
        assert_eq!(flow.orig.dst, IpAddr::V6(b));
        assert_eq!(flow.orig.dst_port, 0);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let entry = &golden_entry()[NLMSG_HDRLEN..];
        // Cut anywhere but exactly before the trailing 8-byte status
        // attribute (that is a whole entry).
        for n in (0..entry.len() - 8).chain(entry.len() - 7..entry.len()) {
            assert!(parse_flow(&entry[..n]).is_err(), "{n} bytes decoded");
        }
    }

    #[test]
    fn missing_reply_and_unknown_family_are_typed() {
        let body = [
            vec![2, 0, 0, 0],
            tuple(CTA_TUPLE_ORIG, [10, 0, 0, 1], [10, 96, 0, 10], 5000, 53),
        ]
        .concat();
        assert_eq!(
            parse_flow(&body),
            Err(DecodeError::Missing("CTA_TUPLE_REPLY"))
        );
        assert_eq!(parse_flow(&[7, 0, 0, 0]), Err(DecodeError::Family(7)));
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_flow(&bytes);
        }

        #[test]
        fn decoder_never_panics_on_mutated_entries(
            at in 0usize..200, byte in any::<u8>(), cut in 0usize..200,
        ) {
            let mut e = golden_entry();
            let i = at % e.len();
            e[i] = byte;
            e.truncate(e.len() - cut % e.len());
            let _ = parse_flow(e.get(NLMSG_HDRLEN..).unwrap_or_default());
        }
    }
}
