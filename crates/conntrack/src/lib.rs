//! Connection-tracking cleanup over ctnetlink, in process.
//!
//! IPVS handles UDP "connections" that the kernel's conntrack also tracks
//! (`net.ipv4.vs.conntrack=1`). When a UDP endpoint goes away, or a UDP
//! Service gains its first endpoint, entries left in the conntrack table keep
//! steering a client's packets to the old place (the DNS blackhole of
//! kubernetes/kubernetes#48370). kube-proxy deletes those entries with the
//! `conntrack` tool or its netlink library; kipvs does it here, without a
//! subprocess:
//!
//! - plain data: a [`Flow`] (family, protocol, original and reply
//!   [`Tuple`]s) and a pure [`Filter`] that matches flows;
//! - [`wire`]: the ctnetlink messages as bytes (requests encoded, dump
//!   replies decoded with typed errors, never a panic on truncated input);
//! - [`Conntrack`]: a blocking client over `NETLINK_NETFILTER` that dumps one
//!   family's table, deletes flows by their original tuple (pipelined, one
//!   acknowledgement each; an entry already gone is not an error) and
//!   combines the two in [`Conntrack::clear`] (feature `kernel`, default;
//!   without it the crate is the plain data and the wire format alone).

#[cfg(feature = "kernel")]
mod client;
pub mod wire;

#[cfg(feature = "kernel")]
pub use client::{Cleared, Conntrack};
pub use wire::DecodeError;

use std::net::IpAddr;

/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of SCTP.
pub const IPPROTO_SCTP: u8 = 132;

/// An address family of the conntrack table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The `AF_*` number netlink uses.
    pub fn af(self) -> u8 {
        match self {
            Family::V4 => libc::AF_INET as u8,
            Family::V6 => libc::AF_INET6 as u8,
        }
    }
}

/// One direction of a flow: addresses and ports (ports are 0 for protocols
/// without them, such as ICMP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

/// One conntrack entry: what the client sent (`orig`) and what the reply is
/// expected to look like (`reply`; its source is the endpoint after DNAT or
/// IPVS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// The address family of both tuples.
    pub family: Family,
    /// IANA protocol number ([`IPPROTO_UDP`] …).
    pub protocol: u8,
    /// The original direction.
    pub orig: Tuple,
    /// The reply direction.
    pub reply: Tuple,
}

impl Flow {
    /// Whether the flow was never translated: its reply comes from where
    /// the client sent it (no endpoint was chosen).
    pub fn untranslated(&self) -> bool {
        self.reply.src == self.orig.dst && self.reply.src_port == self.orig.dst_port
    }
}

/// Which flows to delete: every field set must match (all `None` and
/// `untranslated: false` match every flow of the protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Filter {
    /// IANA protocol number.
    pub protocol: u8,
    /// The original destination address (a Service IP); `None` for any
    /// (a NodePort, on any node address).
    pub orig_dst: Option<IpAddr>,
    /// The original destination port (the Service port or NodePort).
    pub orig_dst_port: Option<u16>,
    /// The reply source address (the endpoint).
    pub reply_src: Option<IpAddr>,
    /// The reply source port (the endpoint's port).
    pub reply_src_port: Option<u16>,
    /// Only flows that were never translated ([`Flow::untranslated`]).
    pub untranslated: bool,
}

impl Filter {
    /// A filter matching every flow of `protocol`.
    pub fn protocol(protocol: u8) -> Filter {
        Filter {
            protocol,
            orig_dst: None,
            orig_dst_port: None,
            reply_src: None,
            reply_src_port: None,
            untranslated: false,
        }
    }

    /// The families this filter can match (both when it names no address).
    pub fn families(&self) -> Vec<Family> {
        match (self.orig_dst, self.reply_src) {
            (Some(a), _) | (None, Some(a)) => vec![Family::of(a)],
            (None, None) => vec![Family::V4, Family::V6],
        }
    }

    /// Whether `flow` matches.
    pub fn matches(&self, flow: &Flow) -> bool {
        flow.protocol == self.protocol
            && self.orig_dst.is_none_or(|a| a == flow.orig.dst)
            && self.orig_dst_port.is_none_or(|p| p == flow.orig.dst_port)
            && self.reply_src.is_none_or(|a| a == flow.reply.src)
            && self.reply_src_port.is_none_or(|p| p == flow.reply.src_port)
            && (!self.untranslated || flow.untranslated())
    }
}

/// A conntrack error.
#[cfg(feature = "kernel")]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The netlink socket could not be opened.
    #[error("ctnetlink socket: {0}")]
    Socket(#[source] kipvs_netlink::Error),
    /// A request failed: the kernel refused it (its errno kept), or the
    /// socket did.
    #[error("{op}: {source}")]
    Netlink {
        /// What was asked (`dump of V4 flows`, `delete of …`).
        op: String,
        /// Why.
        #[source]
        source: kipvs_netlink::Error,
    },
    /// A reply could not be decoded.
    #[error("malformed ctnetlink reply: {0}")]
    Decode(#[from] DecodeError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(a: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, a))
    }

    fn flow(dst: u8, dport: u16, rsrc: u8, rport: u16) -> Flow {
        Flow {
            family: Family::V4,
            protocol: IPPROTO_UDP,
            orig: Tuple {
                src: v4(1),
                dst: v4(dst),
                src_port: 5000,
                dst_port: dport,
            },
            reply: Tuple {
                src: v4(rsrc),
                dst: v4(1),
                src_port: rport,
                dst_port: 5000,
            },
        }
    }

    #[test]
    fn filter_matches_every_set_field() {
        let f = Filter {
            orig_dst: Some(v4(100)),
            orig_dst_port: Some(53),
            reply_src: Some(v4(7)),
            ..Filter::protocol(IPPROTO_UDP)
        };
        assert!(f.matches(&flow(100, 53, 7, 5353)));
        assert!(!f.matches(&flow(100, 53, 8, 5353)));
        assert!(!f.matches(&flow(100, 54, 7, 5353)));
        assert!(!f.matches(&flow(101, 53, 7, 5353)));
        let tcp = Flow {
            protocol: IPPROTO_TCP,
            ..flow(100, 53, 7, 5353)
        };
        assert!(!f.matches(&tcp));
        let port = Filter {
            reply_src_port: Some(53),
            ..f
        };
        assert!(!port.matches(&flow(100, 53, 7, 5353)));
        assert!(port.matches(&flow(100, 53, 7, 53)));
    }

    #[test]
    fn untranslated_filter_keeps_translated_flows() {
        let f = Filter {
            orig_dst: Some(v4(100)),
            orig_dst_port: Some(53),
            untranslated: true,
            ..Filter::protocol(IPPROTO_UDP)
        };
        assert!(f.matches(&flow(100, 53, 100, 53)));
        assert!(!f.matches(&flow(100, 53, 7, 53)));
        assert_eq!(f.families(), vec![Family::V4]);
        assert_eq!(
            Filter::protocol(IPPROTO_UDP).families(),
            vec![Family::V4, Family::V6]
        );
    }
}
