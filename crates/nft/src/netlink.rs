//! Set elements over nfnetlink, in-process: one batch is one nf_tables
//! transaction, as with `nft -f`, without a process to start or a script
//! for it to parse.
//!
//! At 10,000 Services kipvs's table holds about 130,000 elements; `nft`
//! spends most of its time parsing and evaluating them (in the QEMU TCG lab,
//! 26 s for one full write), where the kernel's own share is a few seconds.
//! So elements go to the kernel directly, and the `nft` binary is kept for
//! what is rare and rule-shaped: creating the skeleton and reading back.
//!
//! The messages (kernel ABI, `include/uapi/linux/netfilter/nf_tables.h`,
//! `nfnetlink.h`):
//!
//! - `NFNL_MSG_BATCH_BEGIN` (`res_id` = `NFNL_SUBSYS_NFTABLES`), then one
//!   `NFT_MSG_DELSETELEM`/`NFT_MSG_NEWSETELEM` per set and chunk, then
//!   `NFNL_MSG_BATCH_END`, all in one datagram: the kernel applies all of
//!   them or none.
//! - A set-element message: `nfgenmsg` (family `NFPROTO_INET`), then
//!   `NFTA_SET_ELEM_LIST_TABLE`, `NFTA_SET_ELEM_LIST_SET` and the nested
//!   `NFTA_SET_ELEM_LIST_ELEMENTS`, each element an `NFTA_LIST_ELEM` holding
//!   `NFTA_SET_ELEM_KEY` → `NFTA_DATA_VALUE`. A nested attribute's length is
//!   16 bits, so a message carries at most [`ELEMENTS_PER_MESSAGE`].
//! - A key is the element's fields in network byte order, each padded to 4
//!   bytes in a concatenation (nft's `NFT_REG32_SIZE`); a lone field is not
//!   padded (`hc-ports`' keys are 2 bytes).
//!
//! - Reading back: `NFT_MSG_GETSETELEM` with `NLM_F_DUMP` per set; the
//!   kernel answers with `NFT_MSG_NEWSETELEM` messages laid out as above,
//!   then `NLMSG_DONE`. Each key is decoded by the set's type
//!   ([`decode_key`]); a key of another shape means the set is not kipvs's.
//!
//! - The ruleset's generation: `NFT_MSG_GETGEN` (family `AF_UNSPEC`); the
//!   kernel answers `NFT_MSG_NEWGEN` with `NFTA_GEN_ID` (big-endian u32),
//!   which every committed transaction, anyone's, increments. Equal
//!   generations mean an unchanged ruleset, so a periodic read can stop
//!   there ([`ElementSocket::generation`]).
//!
//! Interval sets (`lb-allowed`) need range ends and stay with `nft`
//! ([`supported`]).

use crate::element::{Element, Proto, SetName, Vs};
use crate::{ElementDiff, TABLE};
use kipvs_netlink::{Options, Socket};
use std::collections::BTreeMap;
use std::net::IpAddr;

// nfnetlink.h / nfnetlink_compat.h / netlink.h
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_INET: u8 = 1;
const NFNETLINK_V0: u8 = 0;
// nf_tables.h
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 1 << 15;
// netlink.h
use kipvs_netlink::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST};
/// `NETLINK_NETFILTER`.
const NETLINK_NETFILTER: isize = 12;

/// Elements per set-element message: the nested element list must stay
/// under 64 KiB (the largest element, IPv6 hairpin, takes 52 bytes).
pub const ELEMENTS_PER_MESSAGE: usize = 1000;

/// Whether an element can go over netlink (everything but interval sets).
pub fn supported(e: &Element) -> bool {
    !matches!(e, Element::LbAllowed(..))
}

/// Why a batch failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket failed, or the kernel did not answer (the transport
    /// replaces the socket before its next request).
    #[error("nfnetlink socket: {0}")]
    Socket(#[source] kipvs_netlink::Error),
    /// The kernel refused a message: nothing of the batch was applied.
    #[error("the kernel refused {what}: {source}")]
    Refused {
        what: String,
        source: kipvs_netlink::Error,
    },
    #[error("{0} cannot be written over netlink (an interval set)")]
    Unsupported(String),
    /// An element the kernel listed is not shaped like one of kipvs's.
    #[error("reading {set}: {what}")]
    Decode { set: String, what: String },
}

/// One encoded batch and what each acknowledged message was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// Sequence number → "add 1000 elements to hairpin-v4", for errors.
    pub messages: BTreeMap<u32, String>,
}

/// Encodes `diff` (deletions first, as [`crate::update_script`]) as one
/// batch whose messages are numbered from `first_seq`; `None` when there is
/// nothing to send.
pub fn encode(diff: &ElementDiff, first_seq: u32) -> Result<Option<Batch>, NetlinkError> {
    if let Some(e) = diff.add.iter().chain(&diff.delete).find(|e| !supported(e)) {
        return Err(NetlinkError::Unsupported(format!(
            "{} in {}",
            e.render(),
            e.set()
        )));
    }
    if diff.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    let mut messages = BTreeMap::new();
    let mut seq = first_seq;
    header(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    for (verb, msg, flags, elements) in [
        ("delete", NFT_MSG_DELSETELEM, 0, &diff.delete),
        ("add", NFT_MSG_NEWSETELEM, NLM_F_CREATE, &diff.add),
    ] {
        for (set, elems) in crate::by_set(elements) {
            for chunk in elems.chunks(ELEMENTS_PER_MESSAGE) {
                seq = seq.wrapping_add(1);
                set_elements(&mut out, set, msg, flags, seq, chunk);
                let what = format!("{verb} of {} element(s) of {set}", chunk.len());
                messages.insert(seq, what);
            }
        }
    }
    seq = seq.wrapping_add(1);
    header(
        &mut out,
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
    );
    Ok(Some(Batch {
        bytes: out,
        messages,
    }))
}

/// Appends a netlink header and `nfgenmsg`; the length is patched by
/// [`finish`].
fn header(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let start = out.len();
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(NFNETLINK_V0);
    out.extend_from_slice(&res_id.to_be_bytes());
    finish(out, start);
    start
}

/// Writes the length of the message or attribute that starts at `start`
/// (u32 for a message, u16 for an attribute) and pads to 4 bytes.
fn finish(out: &mut [u8], start: usize) {
    let len = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn pad(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Opens an attribute; returns where it starts.
fn attr_open(out: &mut Vec<u8>, kind: u16) -> usize {
    let start = out.len();
    out.extend_from_slice(&0u16.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    start
}

fn attr_close(out: &mut Vec<u8>, start: usize) {
    let len = u16::try_from(out.len() - start).expect("attributes stay under 64 KiB");
    out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    pad(out);
}

fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let start = attr_open(out, kind);
    out.extend_from_slice(value);
    attr_close(out, start);
}

fn attr_str(out: &mut Vec<u8>, kind: u16, value: &str) {
    let mut v = value.as_bytes().to_vec();
    v.push(0);
    attr(out, kind, &v);
}

fn set_elements(
    out: &mut Vec<u8>,
    set: SetName,
    msg: u16,
    flags: u16,
    seq: u32,
    elements: &[&Element],
) {
    let start = header(
        out,
        (NFNL_SUBSYS_NFTABLES << 8) | msg,
        NLM_F_REQUEST | NLM_F_ACK | flags,
        seq,
        NFPROTO_INET,
        0,
    );
    attr_str(out, NFTA_SET_ELEM_LIST_TABLE, TABLE);
    attr_str(out, NFTA_SET_ELEM_LIST_SET, &set.to_string());
    let list = attr_open(out, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED);
    let mut key = Vec::with_capacity(40);
    for e in elements {
        let item = attr_open(out, NFTA_LIST_ELEM | NLA_F_NESTED);
        let k = attr_open(out, NFTA_SET_ELEM_KEY | NLA_F_NESTED);
        key.clear();
        element_key(e, &mut key);
        attr(out, NFTA_DATA_VALUE, &key);
        attr_close(out, k);
        attr_close(out, item);
    }
    attr_close(out, list);
    finish(out, start);
}

/// The element's key as the kernel stores it.
pub fn element_key(e: &Element, key: &mut Vec<u8>) {
    fn field(key: &mut Vec<u8>, bytes: &[u8]) {
        key.extend_from_slice(bytes);
        pad(key);
    }
    fn addr(key: &mut Vec<u8>, a: &IpAddr) {
        match a {
            IpAddr::V4(a) => field(key, &a.octets()),
            IpAddr::V6(a) => field(key, &a.octets()),
        }
    }
    fn vs(key: &mut Vec<u8>, v: &Vs) {
        addr(key, &v.addr);
        field(key, &[proto_number(v.proto)]);
        field(key, &v.port.to_be_bytes());
    }
    match e {
        Element::VipAddress(a) => addr(key, a),
        Element::VipPort(v)
        | Element::ClusterPort(v)
        | Element::ExternalPort(v)
        | Element::LbRestricted(v)
        | Element::Owned(v) => vs(key, v),
        Element::Hairpin(v) => {
            vs(key, v);
            addr(key, &v.addr);
        }
        // A lone inet_service: 2 bytes, not padded.
        Element::HealthCheckPort(p) => key.extend_from_slice(&p.to_be_bytes()),
        Element::LbAllowed(..) => unreachable!("interval elements are refused by encode"),
    }
}

/// The element a key of `set` stands for; `None` when the key is not shaped
/// like the set's elements (or the set is an interval set).
pub fn decode_key(set: SetName, key: &[u8]) -> Option<Element> {
    use crate::element::SetKind;
    let alen = if set.v6 { 16 } else { 4 };
    let addr = |b: &[u8]| -> Option<IpAddr> {
        Some(if set.v6 {
            IpAddr::from(<[u8; 16]>::try_from(b).ok()?)
        } else {
            IpAddr::from(<[u8; 4]>::try_from(b).ok()?)
        })
    };
    // addr, then the protocol padded to 4 bytes, then the port padded to 4.
    let vs = |b: &[u8]| -> Option<Vs> {
        let proto = match b.get(alen)? {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            132 => Proto::Sctp,
            _ => return None,
        };
        let port = u16::from_be_bytes([*b.get(alen + 4)?, *b.get(alen + 5)?]);
        Some(Vs::new(addr(b.get(..alen)?)?, proto, port))
    };
    let vs_len = alen + 8;
    match set.kind {
        SetKind::VipAddrs if key.len() == alen => addr(key).map(Element::VipAddress),
        SetKind::VipPorts if key.len() == vs_len => vs(key).map(Element::VipPort),
        SetKind::ClusterPorts if key.len() == vs_len => vs(key).map(Element::ClusterPort),
        SetKind::ExternalPorts if key.len() == vs_len => vs(key).map(Element::ExternalPort),
        SetKind::LbRestricted if key.len() == vs_len => vs(key).map(Element::LbRestricted),
        SetKind::Owned if key.len() == vs_len => vs(key).map(Element::Owned),
        SetKind::Hairpin if key.len() == vs_len + alen => {
            let v = vs(key)?;
            // kipvs's hairpin elements repeat the endpoint's address.
            (addr(&key[vs_len..])? == v.addr).then_some(Element::Hairpin(v))
        }
        SetKind::HealthCheckPorts if key.len() == 2 => {
            Some(Element::HealthCheckPort(u16::from_be_bytes([
                key[0], key[1],
            ])))
        }
        _ => None,
    }
}

/// The attributes of one level: (type without flags, value).
fn attributes(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & !(NLA_F_NESTED | 0x4000);
        if len < 4 || len > b.len() {
            return None;
        }
        let value = &b[4..len];
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((kind, value))
    })
}

/// The keys of one `NFT_MSG_NEWSETELEM` message's payload (after the
/// `nfgenmsg`).
pub fn element_keys(payload: &[u8]) -> Vec<&[u8]> {
    fn find(b: &[u8], kind: u16) -> Option<&[u8]> {
        attributes(b).find(|a| a.0 == kind).map(|a| a.1)
    }
    let mut out = Vec::new();
    for (kind, list) in attributes(payload) {
        if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
            continue;
        }
        for (kind, elem) in attributes(list) {
            if kind != NFTA_LIST_ELEM {
                continue;
            }
            if let Some(value) =
                find(elem, NFTA_SET_ELEM_KEY).and_then(|k| find(k, NFTA_DATA_VALUE))
            {
                out.push(value);
            }
        }
    }
    out
}

/// A dump request for the elements of `set`.
fn dump_request(set: SetName, seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let start = header(
        &mut out,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETSETELEM,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NFPROTO_INET,
        0,
    );
    attr_str(&mut out, NFTA_SET_ELEM_LIST_TABLE, TABLE);
    attr_str(&mut out, NFTA_SET_ELEM_LIST_SET, &set.to_string());
    finish(&mut out, start);
    out
}

/// A request for the ruleset's generation (acknowledged, so the answer
/// has an end the transport sees).
fn generation_request(seq: u32) -> Vec<u8> {
    let mut out = Vec::new();
    header(
        &mut out,
        (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        0,
    );
    out
}

/// The generation an `NFT_MSG_NEWGEN` message of type `kind` says, `None`
/// for a message of another type; `Some(None)` when it holds no id.
fn generation_id(kind: u16, body: &[u8]) -> Option<Option<u32>> {
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
        return None;
    }
    // After the 4-byte nfgenmsg: attributes.
    Some(
        attributes(body.get(4..).unwrap_or_default())
            .filter(|(kind, _)| *kind == NFTA_GEN_ID)
            .find_map(|(_, v)| Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))),
    )
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
        Proto::Sctp => 132,
    }
}

/// A netfilter netlink socket for element batches.
pub struct ElementSocket {
    socket: Socket,
    /// Batches the kernel accepted.
    pub batches: u64,
}

impl std::fmt::Debug for ElementSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElementSocket")
            .field("socket", &self.socket)
            .field("batches", &self.batches)
            .finish()
    }
}

/// A failure of request `what`: the kernel's refusal, or the socket's.
fn failed(what: impl FnOnce() -> String, e: kipvs_netlink::Error) -> NetlinkError {
    match e {
        e @ kipvs_netlink::Error::Kernel { .. } => NetlinkError::Refused {
            what: what(),
            source: e,
        },
        e => NetlinkError::Socket(e),
    }
}

impl ElementSocket {
    pub fn open() -> Result<ElementSocket, NetlinkError> {
        Ok(ElementSocket {
            socket: Socket::open(NETLINK_NETFILTER, Options::default())
                .map_err(NetlinkError::Socket)?,
            batches: 0,
        })
    }

    /// Applies `diff` as one transaction (nothing when it is empty).
    pub fn apply(&mut self, diff: &ElementDiff) -> Result<(), NetlinkError> {
        let Some(batch) = encode(diff, self.socket.next_seq())? else {
            return Ok(());
        };
        // The batch is one datagram: begin, the messages, end.
        let begin = self
            .socket
            .push_numbered(batch.messages.len() as u32 + 2, |_, tx| {
                tx.extend_from_slice(&batch.bytes)
            });
        // One acknowledgement per message; the first refusal names it.
        let acks = self
            .socket
            .acknowledgements(begin.wrapping_add(1), batch.messages.len());
        for (r, what) in acks.into_iter().zip(batch.messages.into_values()) {
            r.map_err(|e| failed(|| what, e))?;
        }
        self.batches += 1;
        Ok(())
    }

    /// The ruleset's generation: it changes with every committed nftables
    /// transaction in this network namespace, kipvs's or anyone's.
    pub fn generation(&mut self) -> Result<u32, NetlinkError> {
        let what = "reading the ruleset generation";
        let seq = self
            .socket
            .push(|seq, tx| tx.extend_from_slice(&generation_request(seq)));
        let mut id = None;
        self.socket
            .request(seq, |m| {
                if let Some(got) = generation_id(m.kind, m.payload) {
                    id.get_or_insert(got);
                }
            })
            .map_err(|e| failed(|| what.to_owned(), e))?;
        id.flatten().ok_or_else(|| NetlinkError::Decode {
            set: what.to_owned(),
            what: "no NFT_MSG_NEWGEN with a generation id".to_owned(),
        })
    }

    /// Every element of `set` (not an interval set), dumped from the kernel.
    pub fn dump(&mut self, set: SetName) -> Result<Vec<Element>, NetlinkError> {
        if set.kind == crate::element::SetKind::LbAllowed {
            return Err(NetlinkError::Unsupported(set.to_string()));
        }
        let seq = self
            .socket
            .push(|seq, tx| tx.extend_from_slice(&dump_request(set, seq)));
        let mut out = Vec::new();
        let mut foreign = None;
        self.socket
            .request(seq, |m| {
                if m.kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM {
                    return;
                }
                // After the 4-byte nfgenmsg.
                for key in element_keys(m.payload.get(4..).unwrap_or_default()) {
                    match decode_key(set, key) {
                        Some(e) => out.push(e),
                        None => {
                            foreign.get_or_insert_with(|| key.to_vec());
                        }
                    }
                }
            })
            .map_err(|e| failed(|| format!("listing {set}"), e))?;
        match foreign {
            Some(key) => Err(NetlinkError::Decode {
                set: set.to_string(),
                what: format!("an element keyed {key:02x?} is not kipvs's"),
            }),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(add: &[Element], delete: &[Element]) -> ElementDiff {
        ElementDiff {
            add: add.iter().cloned().collect(),
            delete: delete.iter().cloned().collect(),
        }
    }

    fn nlmsg(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(20 + body.len() as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, 0]);
        m.extend_from_slice(&res_id.to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&(4 + value.len() as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    #[test]
    fn the_generation_request_and_reply_have_the_kernels_layout() {
        // nlmsghdr: len 20, type NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETGEN,
        // NLM_F_REQUEST | NLM_F_ACK, seq 7, pid 0; nfgenmsg: AF_UNSPEC, v0,
        // res_id 0.
        assert_eq!(generation_request(7), nlmsg(0x0a10, 0x0005, 7, 0, 0, &[]));
        // NFT_MSG_NEWGEN: NFTA_GEN_ID 0x01020304 (big-endian), then
        // NFTA_GEN_PROC_PID and NFTA_GEN_PROC_NAME.
        let mut body = vec![0u8; 4];
        body.extend(nla(1, &[1, 2, 3, 4]));
        body.extend(nla(2, &42u32.to_be_bytes()));
        body.extend(nla(3, b"nft\0"));
        assert_eq!(generation_id(0x0a0f, &body), Some(Some(0x0102_0304)));
        // Another message type is not the answer.
        assert_eq!(generation_id(0x0a0c, &body), None);
        // A NEWGEN without the id is malformed, not generation 0.
        assert_eq!(generation_id(0x0a0f, &[0u8; 4]), Some(None));
    }

    #[test]
    fn every_key_decodes_back_to_its_element() {
        let v4 = |p| Vs::new("10.96.0.1".parse().unwrap(), Proto::Tcp, p);
        let v6 = Vs::new("fd00::1".parse().unwrap(), Proto::Sctp, 443);
        let all = [
            Element::VipAddress("10.96.0.1".parse().unwrap()),
            Element::VipAddress("fd00::1".parse().unwrap()),
            Element::VipPort(v4(80)),
            Element::ClusterPort(v6),
            Element::ExternalPort(Vs::new("10.0.0.9".parse().unwrap(), Proto::Udp, 53)),
            Element::LbRestricted(v4(8443)),
            Element::Owned(v4(30080)),
            Element::Owned(v6),
            Element::Hairpin(v4(8080)),
            Element::Hairpin(v6),
            Element::HealthCheckPort(31000),
        ];
        for e in all {
            let mut key = Vec::new();
            element_key(&e, &mut key);
            assert_eq!(decode_key(e.set(), &key), Some(e.clone()), "{e:?}");
        }
        // A key of another shape is not kipvs's.
        let set = Element::VipPort(v4(80)).set();
        assert_eq!(
            decode_key(set, &[10, 96, 0, 1, 99, 0, 0, 0, 0, 80, 0, 0]),
            None
        );
        assert_eq!(decode_key(set, &[10, 96, 0, 1]), None);
        let hairpin = Element::Hairpin(v4(1)).set();
        let mut other = Vec::new();
        element_key(&Element::Hairpin(v4(1)), &mut other);
        other[15] = 7; // the repeated address differs
        assert_eq!(decode_key(hairpin, &other), None);
    }

    #[test]
    fn the_keys_of_an_element_message_are_found_again() {
        let elements = [
            Element::VipAddress("10.96.0.1".parse().unwrap()),
            Element::VipAddress("10.96.0.2".parse().unwrap()),
        ];
        let batch = encode(&diff(&elements, &[]), 1).unwrap().unwrap();
        // The second message of the batch is the NEWSETELEM: skip the
        // batch begin (20 bytes) and the element message's nlmsghdr and
        // nfgenmsg.
        let len = u32::from_ne_bytes(batch.bytes[20..24].try_into().unwrap()) as usize;
        let payload = &batch.bytes[20 + 16 + 4..20 + len];
        let keys = element_keys(payload);
        assert_eq!(keys, vec![&[10, 96, 0, 1][..], &[10, 96, 0, 2][..]]);
        assert!(element_keys(&payload[..payload.len() - 3]).len() < 2);
    }

    #[test]
    fn a_dump_request_names_the_table_and_the_set() {
        let set = Element::VipAddress("10.96.0.1".parse().unwrap()).set();
        let got = dump_request(set, 9);
        let want = nlmsg(
            0x0a0d,
            0x301,
            9,
            1,
            0,
            &[nla(1, b"kipvs\0"), nla(2, b"vip-addrs-v4\0")].concat(),
        );
        assert_eq!(got, want);
    }

    /// The bytes, spelled out from the kernel's ABI numbers: batch begin
    /// (type 0x10, res_id 10 big-endian), NEWSETELEM (0x0a0c) with
    /// REQUEST|ACK|CREATE (0x405) on table "kipvs", set "vip-addrs-v4", one
    /// element keyed 10.0.0.1, batch end (0x11).
    #[test]
    fn one_address_is_the_batch_the_abi_describes() {
        let got = encode(
            &diff(&[Element::VipAddress("10.0.0.1".parse().unwrap())], &[]),
            7,
        )
        .unwrap()
        .unwrap();
        let key = nla(0x8000 | 1, &nla(1, &[10, 0, 0, 1]));
        let elements = nla(0x8000 | 3, &nla(0x8000 | 1, &key));
        let body = [nla(1, b"kipvs\0"), nla(2, b"vip-addrs-v4\0"), elements].concat();
        let want = [
            nlmsg(0x10, 0x1, 7, 0, 10, &[]),
            nlmsg(0x0a0c, 0x405, 8, 1, 0, &body),
            nlmsg(0x11, 0x1, 9, 0, 10, &[]),
        ]
        .concat();
        assert_eq!(got.bytes, want);
        assert_eq!(
            got.messages.into_iter().collect::<Vec<_>>(),
            [(8, "add of 1 element(s) of vip-addrs-v4".to_owned())]
        );
    }

    #[test]
    fn keys_pad_each_field_of_a_concatenation_to_four_bytes() {
        let key = |e: Element| {
            let mut k = Vec::new();
            element_key(&e, &mut k);
            k
        };
        let v4 = Vs::new("10.96.0.1".parse().unwrap(), Proto::Udp, 53);
        assert_eq!(
            key(Element::ClusterPort(v4)),
            [10, 96, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0]
        );
        assert_eq!(
            key(Element::Hairpin(v4)),
            [10, 96, 0, 1, 17, 0, 0, 0, 0, 53, 0, 0, 10, 96, 0, 1]
        );
        let v6 = Vs::new("fd00::1".parse().unwrap(), Proto::Sctp, 443);
        let k = key(Element::VipPort(v6));
        assert_eq!(k.len(), 16 + 4 + 4);
        assert_eq!(&k[16..], [132, 0, 0, 0, 1, 187, 0, 0]);
        assert_eq!(key(Element::HealthCheckPort(30000)), 30000u16.to_be_bytes());
    }

    #[test]
    fn deletions_come_first_and_big_sets_are_split() {
        let add: Vec<Element> = (0..2500u32)
            .map(|i| Element::VipAddress(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))))
            .collect();
        let gone = Element::HealthCheckPort(30001);
        let b = encode(&diff(&add, std::slice::from_ref(&gone)), 1)
            .unwrap()
            .unwrap();
        let what: Vec<String> = b.messages.values().cloned().collect();
        assert_eq!(
            what,
            [
                "delete of 1 element(s) of hc-ports",
                "add of 1000 element(s) of vip-addrs-v4",
                "add of 1000 element(s) of vip-addrs-v4",
                "add of 500 element(s) of vip-addrs-v4",
            ]
        );
        // Every message's length walks the datagram exactly to its end.
        let mut rest = &b.bytes[..];
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[..4].try_into().unwrap()) as usize;
            kinds.push(u16::from_ne_bytes(rest[4..6].try_into().unwrap()));
            rest = &rest[len..];
        }
        assert_eq!(kinds, [0x10, 0x0a0e, 0x0a0c, 0x0a0c, 0x0a0c, 0x11]);
    }

    #[test]
    fn intervals_and_nothing_are_not_batches() {
        let v = Vs::new("10.0.0.1".parse().unwrap(), Proto::Tcp, 80);
        let interval = Element::LbAllowed(v, "10.1.0.0/16".parse().unwrap());
        assert!(!supported(&interval));
        assert!(matches!(
            encode(&diff(&[interval], &[]), 1),
            Err(NetlinkError::Unsupported(_))
        ));
        assert_eq!(encode(&ElementDiff::default(), 1).unwrap(), None);
    }
}
