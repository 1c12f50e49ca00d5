//! Counters (`IPVS_STATS_ATTR_*`), nested in `IPVS_SVC_ATTR_STATS{,64}` and
//! `IPVS_DEST_ATTR_STATS{,64}`.
//!
//! In `STATS64` every counter is a `u64`. In the older `STATS` the
//! connection and packet counters and all rates are `u32`, the byte counters
//! `u64`. The kernel may add `IPVS_STATS_ATTR_PAD` attributes to align 64-bit
//! values; they are skipped.

use netlink_packet_core::{DecodeError, Emitable, Nla, NlasIterator};

use super::{parse_counter, within};
use crate::types::Stats;

const CONNS: u16 = 1;
const INPKTS: u16 = 2;
const OUTPKTS: u16 = 3;
const INBYTES: u16 = 4;
const OUTBYTES: u16 = 5;
const CPS: u16 = 6;
const INPPS: u16 = 7;
const OUTPPS: u16 = 8;
const INBPS: u16 = 9;
const OUTBPS: u16 = 10;
const PAD: u16 = 11;

/// One counter, with the width it is carried in.
struct Counter {
    kind: u16,
    value: u64,
    wide: bool,
}

impl Nla for Counter {
    fn value_len(&self) -> usize {
        if self.wide { 8 } else { 4 }
    }
    fn kind(&self) -> u16 {
        self.kind
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        if self.wide {
            buffer.copy_from_slice(&self.value.to_ne_bytes());
        } else {
            // Narrow counters are what a 32-bit kernel counter holds.
            buffer.copy_from_slice(&(self.value as u32).to_ne_bytes());
        }
    }
}

fn counters(s: &Stats, all_wide: bool) -> [Counter; 10] {
    let c = |kind, value, wide| Counter {
        kind,
        value,
        wide: wide || all_wide,
    };
    [
        c(CONNS, s.conns, false),
        c(INPKTS, s.inpkts, false),
        c(OUTPKTS, s.outpkts, false),
        c(INBYTES, s.inbytes, true),
        c(OUTBYTES, s.outbytes, true),
        c(CPS, s.cps, false),
        c(INPPS, s.inpps, false),
        c(OUTPPS, s.outpps, false),
        c(INBPS, s.inbps, false),
        c(OUTBPS, s.outbps, false),
    ]
}

/// The length of the nested counters.
pub(crate) fn stats_len(s: &Stats, wide: bool) -> usize {
    counters(s, wide).as_slice().buffer_len()
}

/// Emit the nested counters, in the kernel's order.
pub(crate) fn emit_stats(s: &Stats, wide: bool, buf: &mut [u8]) {
    counters(s, wide).as_slice().emit(buf)
}

/// Parse nested counters; `name` is the enclosing attribute.
pub(crate) fn parse_stats(buf: &[u8], name: &str) -> Result<Stats, DecodeError> {
    let mut s = Stats::default();
    for nla in NlasIterator::new(buf) {
        let nla = nla.map_err(|e| within(name, e))?;
        let v = nla.value();
        let field = match nla.kind() {
            CONNS => &mut s.conns,
            INPKTS => &mut s.inpkts,
            OUTPKTS => &mut s.outpkts,
            INBYTES => &mut s.inbytes,
            OUTBYTES => &mut s.outbytes,
            CPS => &mut s.cps,
            INPPS => &mut s.inpps,
            OUTPPS => &mut s.outpps,
            INBPS => &mut s.inbps,
            OUTBPS => &mut s.outbps,
            PAD => continue,
            // A newer kernel's counter: not ours to judge.
            _ => continue,
        };
        *field = parse_counter(v, stat_name(nla.kind())).map_err(|e| within(name, e))?;
    }
    Ok(s)
}

fn stat_name(kind: u16) -> &'static str {
    match kind {
        CONNS => "IPVS_STATS_ATTR_CONNS",
        INPKTS => "IPVS_STATS_ATTR_INPKTS",
        OUTPKTS => "IPVS_STATS_ATTR_OUTPKTS",
        INBYTES => "IPVS_STATS_ATTR_INBYTES",
        OUTBYTES => "IPVS_STATS_ATTR_OUTBYTES",
        CPS => "IPVS_STATS_ATTR_CPS",
        INPPS => "IPVS_STATS_ATTR_INPPS",
        OUTPPS => "IPVS_STATS_ATTR_OUTPPS",
        INBPS => "IPVS_STATS_ATTR_INBPS",
        OUTBPS => "IPVS_STATS_ATTR_OUTBPS",
        _ => "IPVS_STATS_ATTR_?",
    }
}
