//! The text formats of `ipvsadm` (version 1.31, as Debian ships it), byte
//! for byte, as pure functions over [`kipvs_ipvs`]'s plain types
//! ([`TableEntry`](kipvs_ipvs::TableEntry), [`Info`](kipvs_ipvs::Info),
//! [`Op`](kipvs_ipvs::Op)): no I/O, no name resolution, numeric output
//! only. This crate never opens a socket; the caller reads the table with
//! [`kipvs_ipvs::Client`] and applies parsed rules with it.
//!
//! - [`save`] writes what `ipvsadm -S -n` prints, byte for byte (or the
//!   same lines unsorted).
//! - [`list`] writes what `ipvsadm -Ln` prints with `--stats`, `--rate`,
//!   `--exact`, `--thresholds`, `--persistent-conn`, `--tun-info`,
//!   `--nosort` and a service selector (`-t|-u|--sctp-service ADDR:PORT`,
//!   `-f MARK [-6]`), byte for byte.
//! - [`parse_rules`] reads what `ipvsadm -R` reads (the lines `-S` writes,
//!   and every other spelling of the same commands, long options included)
//!   into [`Rule`]s, checking every line the way `ipvsadm` does, before
//!   anything is applied; a [`Rule`] is an [`Op`](kipvs_ipvs::Op), ready
//!   for [`Client::apply`](kipvs_ipvs::Client::apply).
//! - [`parse_conns`] reads `/proc/net/ip_vs_conn` and [`list_conns`] writes
//!   what `ipvsadm -Lcn` prints.
//!
//! # Faithful to ipvsadm, including its quirks
//!
//! - **Sorting.** `ipvsadm` sorts on the client with `qsort` and comparators
//!   that subtract unsigned 32-bit values and read the difference as a
//!   signed `int`: so `10.0.0.1` sorts *after* `192.168.0.1` (their
//!   difference overflows), and for such tables the order is not even a
//!   total order. This crate reproduces both the comparators and glibc's
//!   `qsort` (a top-down merge sort), so given the table in kernel order
//!   (as [`Client::dump_all`](kipvs_ipvs::Client::dump_all) returns it) the
//!   output is the same.
//! - **Firewall marks above 2³¹** are printed as negative numbers (`%d`;
//!   fixed upstream after 1.31). `ipvsadm -R` cannot read them back;
//!   [`parse_rules`] reads them as the mark they stand for.
//! - **What `-S` leaves out**: destination thresholds (`-x`, `-y`) are never
//!   saved, a `Local` destination is saved as `-g`, and the netmask only
//!   with persistence. A saved table therefore restores to the same table
//!   except for these.
//! - **Restoring** sets the port of a direct-routing or tunnelled
//!   destination of an address-based service to the service's port, takes
//!   direct routing (`-g`) as the default forwarding method, `wlc` as the
//!   default scheduler, weight 1 and, for `-p` without a value, 360
//!   seconds, as `ipvsadm` does. Debian's ipvsadm takes weights up to
//!   2³¹−1 (upstream: 65535), and so does [`parse_rules`].
//!
//! What this crate does not do: resolve host or service names (`ipvsadm`
//! without `-n`), or the sync-daemon commands.
//!
//! Addresses are printed the way glibc's `inet_ntop` prints them (which
//! differs from Rust's `Display` for IPv4-compatible IPv6 addresses such as
//! `::0.2.0.3`).
#![warn(missing_docs)]

mod conns;
mod format;
mod rules;

pub use conns::{ConnError, Connection, list_conns, list_conns_persistent, parse_conns};
pub use format::{ListOptions, list, save};
pub use rules::{Rule, RuleError, RuleErrorKind, parse_rule_line, parse_rules};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IPv6 address as glibc's `inet_ntop(AF_INET6, …)` writes it: the
/// longest run of two or more zero groups compressed (the first of equal
/// runs), lower-case hex, and the last 32 bits in dotted form for
/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`)
/// addresses.
fn ntop6(addr: &Ipv6Addr) -> String {
    let words = addr.segments();
    // The longest run of zero words.
    let (mut best_base, mut best_len) = (None::<usize>, 0usize);
    let (mut cur_base, mut cur_len) = (None::<usize>, 0usize);
    for (i, w) in words.iter().enumerate() {
        if *w == 0 {
            if cur_base.is_none() {
                cur_base = Some(i);
                cur_len = 1;
            } else {
                cur_len += 1;
            }
        } else if let Some(base) = cur_base {
            if best_base.is_none() || cur_len > best_len {
                best_base = Some(base);
                best_len = cur_len;
            }
            cur_base = None;
        }
    }
    if let Some(base) = cur_base
        && (best_base.is_none() || cur_len > best_len)
    {
        best_base = Some(base);
        best_len = cur_len;
    }
    if best_len < 2 {
        best_base = None;
    }
    let mut out = String::with_capacity(39);
    let mut i = 0;
    while i < 8 {
        if let Some(base) = best_base
            && i >= base
            && i < base + best_len
        {
            if i == base {
                out.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6
            && best_base == Some(0)
            && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))
        {
            let o = addr.octets();
            out.push_str(&Ipv4Addr::new(o[12], o[13], o[14], o[15]).to_string());
            return out;
        }
        out.push_str(&format!("{:x}", words[i]));
        i += 1;
    }
    if let Some(base) = best_base
        && base + best_len == 8
    {
        out.push(':');
    }
    out
}

/// `a.b.c.d:port` or `[v6]:port`, as ipvsadm's numeric `addrport_to_anyname`.
fn addr_port(addr: &IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{}]:{port}", ntop6(a)),
    }
}

/// glibc's `qsort` (2.36: a top-down merge sort, `msort_with_tmp`), with a
/// C comparator: the same comparisons in the same order, so the same result
/// even for a comparator that is not a total order.
fn glibc_qsort<T: Copy>(v: &mut [T], cmp: &impl Fn(&T, &T) -> i32) {
    let n = v.len();
    if n <= 1 {
        return;
    }
    let n1 = n / 2;
    {
        let (a, b) = v.split_at_mut(n1);
        glibc_qsort(a, cmp);
        glibc_qsort(b, cmp);
    }
    let mut merged = Vec::with_capacity(n);
    let (mut i, mut j) = (0, n1);
    while i < n1 && j < n {
        if cmp(&v[i], &v[j]) <= 0 {
            merged.push(v[i]);
            i += 1;
        } else {
            merged.push(v[j]);
            j += 1;
        }
    }
    merged.extend_from_slice(&v[i..n1]);
    // What is left of the second half is already in place.
    let done = merged.len();
    v[..done].copy_from_slice(&merged);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn ntop6_matches_glibc() {
        for (input, want) in [
            ("::", "::"),
            ("::1", "::1"),
            ("fd00::1", "fd00::1"),
            ("fd00:0:0:1::", "fd00:0:0:1::"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
            ("::2:3", "::0.2.0.3"),
            ("::1:0:0", "::1:0:0"),
            ("FD00:ABCD::0001", "fd00:abcd::1"),
            ("2001:db8::ffff:0:1", "2001:db8::ffff:0:1"),
        ] {
            assert_eq!(ntop6(&v6(input)), want, "{input}");
        }
    }

    #[test]
    fn qsort_is_a_stable_merge_sort() {
        let mut v = [5, 3, 9, 1, 3, 7, 0, 2];
        glibc_qsort(&mut v, &|a: &i32, b: &i32| a - b);
        assert_eq!(v, [0, 1, 2, 3, 3, 5, 7, 9]);
        let mut pairs = [(1, 'a'), (0, 'b'), (1, 'c'), (0, 'd')];
        glibc_qsort(&mut pairs, &|a: &(i32, char), b: &(i32, char)| a.0 - b.0);
        assert_eq!(pairs, [(0, 'b'), (0, 'd'), (1, 'a'), (1, 'c')]);
        let mut empty: [u8; 0] = [];
        glibc_qsort(&mut empty, &|_: &u8, _: &u8| 0);
    }

    #[test]
    fn qsort_with_ipvsadms_overflowing_comparator() {
        // 10.0.0.1 - 192.168.0.1 overflows into a positive int: ipvsadm
        // puts 192.168.0.1 first.
        let mut v = [0x0a00_0001u32, 0xc0a8_0001];
        glibc_qsort(&mut v, &|a: &u32, b: &u32| a.wrapping_sub(*b) as i32);
        assert_eq!(v, [0xc0a8_0001, 0x0a00_0001]);
    }
}
