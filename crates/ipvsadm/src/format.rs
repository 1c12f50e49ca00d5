//! `ipvsadm -S -n` and `ipvsadm -Ln`: the table as text.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};

use super::{addr_port, glibc_qsort};
use kipvs_ipvs::{
    AddressFamily, DestinationEntry, Forward, Info, Netmask, Protocol, Service, ServiceFlags,
    ServiceKey, Stats, TableEntry, TunnelType,
};

/// What `ipvsadm -Ln` is asked to show: its listing options. `Default` is
/// plain `ipvsadm -Ln` (sorted, every service).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// `--stats`: counters (connections, packets, bytes).
    pub stats: bool,
    /// `--rate`: rates (connections, packets, bytes per second).
    pub rate: bool,
    /// `--exact`: counters and rates in full, not abbreviated with K/M/G/T.
    pub exact: bool,
    /// `--thresholds`: the destinations' upper and lower thresholds.
    pub thresholds: bool,
    /// `--persistent-conn`: the destinations' persistence templates.
    pub persistent_conn: bool,
    /// `--tun-info`: the destinations' tunnel settings.
    pub tun_info: bool,
    /// Sort services and destinations the way ipvsadm does (its default);
    /// `false` is `--nosort`: the table's order.
    pub sort: bool,
    /// Only this service (`-t|-u|--sctp-service ADDR:PORT`, `-f MARK [-6]`):
    /// no version header then.
    pub only: Option<ServiceKey>,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            stats: false,
            rate: false,
            exact: false,
            thresholds: false,
            persistent_conn: false,
            tun_info: false,
            sort: true,
            only: None,
        }
    }
}

/// What `ipvsadm -S -n` prints for `table`: one `-A` line per service,
/// followed by one `-a` line per destination, services and destinations
/// sorted as ipvsadm sorts them. With `sort = false`, the same lines in the
/// table's order (`ipvsadm -S` always sorts; it refuses `--nosort`).
///
/// Thresholds are not part of it, and a `Local` destination is written as
/// `-g`, as ipvsadm does.
pub fn save(table: &[TableEntry], sort: bool) -> String {
    let mut out = String::new();
    for entry in ordered_services(table, sort) {
        let svc = &entry.service.service;
        let name = rule_name(&svc.key);
        let _ = write!(out, "-A {name} -s {}", svc.scheduler);
        if svc.flags.contains(ServiceFlags::PERSISTENT) {
            let _ = write!(out, " -p {}", svc.timeout);
            if let Some(mask) = shown_netmask(svc) {
                let _ = write!(out, " -M {mask}");
            }
        }
        if let Some(pe) = pe_name(svc) {
            let _ = write!(out, " --pe {pe}");
        }
        if svc.flags.contains(ServiceFlags::ONE_PACKET) {
            out.push_str(" -o");
        }
        if has_sched_flags(svc.flags) {
            let _ = write!(out, " -b {}", sched_flags(svc));
        }
        out.push('\n');
        for d in ordered_destinations(&entry.destinations, sort) {
            let dest = &d.destination;
            let _ = write!(
                out,
                "-a {name} -r {} {} -w {}",
                addr_port(&dest.addr, dest.port),
                forward_switch(dest.forward),
                dest.weight as i32
            );
            if dest.forward == Forward::Tunnel {
                let flags = tunnel_flags_option(dest.tunnel_flags.0);
                match dest.tunnel_type {
                    TunnelType::Ipip => out.push_str(" --tun-type ipip"),
                    TunnelType::Gue => {
                        let _ = write!(out, " --tun-type gue --tun-port {}", dest.tunnel_port);
                        push_flags(&mut out, flags);
                    }
                    TunnelType::Gre => {
                        out.push_str(" --tun-type gre");
                        push_flags(&mut out, flags);
                    }
                    TunnelType::Other(_) => {}
                }
            }
            out.push('\n');
        }
    }
    out
}

fn push_flags(out: &mut String, flags: Option<&str>) {
    if let Some(f) = flags {
        out.push(' ');
        out.push_str(f);
    }
}

/// What `ipvsadm -Ln` prints for `table` with the options `opts`: the
/// version header (unless one service is asked for), the column titles,
/// one line per service and one `  ->` line per destination.
///
/// With `opts.only` naming a service that is not in `table`, ipvsadm prints
/// nothing on standard output (`No such service` on standard error), and so
/// this returns an empty string.
pub fn list(table: &[TableEntry], info: &Info, opts: &ListOptions) -> String {
    let mut out = String::new();
    match &opts.only {
        Some(key) => {
            let Some(entry) = table.iter().find(|e| e.service.service.key == *key) else {
                return out;
            };
            title(&mut out, opts);
            list_entry(&mut out, entry, opts);
        }
        None => {
            let v = info.version;
            let _ = writeln!(
                out,
                "IP Virtual Server version {}.{}.{} (size={})",
                (v >> 16) & 0xff,
                (v >> 8) & 0xff,
                v & 0xff,
                info.conn_table_size as i32
            );
            title(&mut out, opts);
            for entry in ordered_services(table, opts.sort) {
                list_entry(&mut out, entry, opts);
            }
        }
    }
    out
}

fn title(out: &mut String, opts: &ListOptions) {
    let prot = "Prot LocalAddress:Port";
    if opts.stats {
        let _ = writeln!(
            out,
            "{prot:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        );
    } else if opts.rate {
        let _ = writeln!(
            out,
            "{prot:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        );
    } else if opts.thresholds {
        let _ = writeln!(
            out,
            "{prot:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
    } else if opts.persistent_conn {
        let _ = writeln!(
            out,
            "{prot:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        );
    } else if opts.tun_info {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           \
             Forward TunnelInfo    Weight ActiveConn InActConn\n",
        );
    } else {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           \
             Forward Weight ActiveConn InActConn\n",
        );
    }
}

fn list_entry(out: &mut String, entry: &TableEntry, opts: &ListOptions) {
    let svc = &entry.service.service;
    let name = list_name(&svc.key);
    if opts.stats || opts.rate {
        let _ = write!(out, "{name:<33}");
        counters(out, &entry.service.stats, opts);
    } else {
        let _ = write!(out, "{name} {}", svc.scheduler);
        if has_sched_flags(svc.flags) {
            let _ = write!(out, " ({})", sched_flags(svc));
        }
        if svc.flags.contains(ServiceFlags::PERSISTENT) {
            let _ = write!(out, " persistent {}", svc.timeout);
            if let Some(mask) = shown_netmask(svc) {
                let _ = write!(out, " mask {mask}");
            }
            if let Some(pe) = pe_name(svc) {
                let _ = write!(out, " pe {pe}");
            }
        }
        if svc.flags.contains(ServiceFlags::ONE_PACKET) {
            out.push_str(" ops");
        }
    }
    out.push('\n');
    for d in ordered_destinations(&entry.destinations, opts.sort) {
        let dest = &d.destination;
        let dname = addr_port(&dest.addr, dest.port);
        if opts.stats {
            let _ = write!(out, "  -> {dname:<28}");
            counters(out, &d.stats, opts);
            out.push('\n');
        } else if opts.rate {
            let s = &d.stats;
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                s.cps, s.inpps, s.outpps
            );
            large_number(out, s.inbps, opts.exact);
            large_number(out, s.outbps, opts.exact);
            out.push('\n');
        } else if opts.thresholds {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                dest.upper_threshold, dest.lower_threshold, d.active_conns, d.inactive_conns
            );
        } else if opts.persistent_conn {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                dest.weight, d.persistent_conns, d.active_conns, d.inactive_conns
            );
        } else if opts.tun_info {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<13} {:<6} {:<10} {:<10}",
                forward_name(dest.forward),
                tunnel_info(d).as_deref().unwrap_or("n/a"),
                dest.weight as i32,
                d.active_conns,
                d.inactive_conns
            );
        } else {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                forward_name(dest.forward),
                dest.weight as i32,
                d.active_conns,
                d.inactive_conns
            );
        }
    }
}

/// The five counters (`--stats`) or rates (`--rate`) of a service line or a
/// `--stats` destination line.
fn counters(out: &mut String, s: &Stats, opts: &ListOptions) {
    let values = if opts.stats {
        [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes]
    } else {
        [s.cps, s.inpps, s.outpps, s.inbps, s.outbps]
    };
    for v in values {
        large_number(out, v, opts.exact);
    }
}

/// ipvsadm's `print_largenum`: nine columns, right-aligned; without
/// `--exact`, from 100 million on, thousands (`K`), millions (`M`),
/// billions (`G`) or trillions (`T`) in eight columns and the unit.
fn large_number(out: &mut String, i: u64, exact: bool) {
    let _ = if exact {
        let len = i.to_string().len();
        let width = if len <= 8 { 9 } else { len + 1 };
        write!(out, "{i:>width$}")
    } else if i < 100_000_000 {
        write!(out, "{i:>9}")
    } else if i < 1_000_000_000 {
        write!(out, "{:>8}K", i / 1_000)
    } else if i < 100_000_000_000 {
        write!(out, "{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        write!(out, "{:>8}G", i / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", i / 1_000_000_000_000)
    };
}

/// `-t 10.0.0.1:80`, `--sctp-service [fd00::1]:9000`, `-f 5 -6`.
fn rule_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            let opt = match protocol {
                Protocol::Tcp => "-t",
                Protocol::Udp => "-u",
                Protocol::Sctp => "--sctp-service",
            };
            format!("{opt} {}", addr_port(addr, *port))
        }
        ServiceKey::FwMark {
            family: AddressFamily::Inet,
            mark,
        } => format!("-f {}", *mark as i32),
        ServiceKey::FwMark {
            family: AddressFamily::Inet6,
            mark,
        } => format!("-f {} -6", *mark as i32),
    }
}

/// `TCP  10.0.0.1:80`, `SCTP [fd00::1]:9000`, `FWM  5 IPv6`.
fn list_name(key: &ServiceKey) -> String {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => format!("{:<4} {}", protocol.to_string(), addr_port(addr, *port)),
        ServiceKey::FwMark {
            family: AddressFamily::Inet,
            mark,
        } => format!("FWM  {}", *mark as i32),
        ServiceKey::FwMark {
            family: AddressFamily::Inet6,
            mark,
        } => format!("FWM  {} IPv6", *mark as i32),
    }
}

/// The netmask as ipvsadm reads it: the kernel's 32-bit value (an IPv4 mask
/// in network byte order, or an IPv6 prefix length) on a little-endian host.
fn raw_netmask(mask: &Netmask) -> u32 {
    match mask {
        Netmask::V4(m) => u32::from_le_bytes(m.octets()),
        Netmask::V6(len) => *len,
    }
}

/// The netmask ipvsadm shows for a persistent service: none when it is the
/// full mask of the family, a dotted IPv4 mask or an IPv6 prefix length.
fn shown_netmask(svc: &Service) -> Option<String> {
    let raw = raw_netmask(&svc.netmask);
    match svc.key.family() {
        AddressFamily::Inet => {
            (raw != u32::MAX).then(|| Ipv4Addr::from(raw.to_le_bytes()).to_string())
        }
        AddressFamily::Inet6 => (raw != 128).then(|| (raw as i32).to_string()),
    }
}

fn pe_name(svc: &Service) -> Option<&str> {
    svc.persistence_engine.as_deref().filter(|p| !p.is_empty())
}

fn has_sched_flags(flags: ServiceFlags) -> bool {
    flags.bits()
        & (ServiceFlags::SCHED1.bits() | ServiceFlags::SCHED2.bits() | ServiceFlags::SCHED3.bits())
        != 0
}

/// ipvsadm's names of the scheduler flags: `sh-fallback,sh-port` for `sh`,
/// `mh-fallback,mh-port` for `mh` (their third flag has no name, and none is
/// printed), `flag-1,flag-2,flag-3` for every other scheduler.
fn sched_flags(svc: &Service) -> String {
    let f = svc.flags;
    let names: &[(ServiceFlags, &str)] = match svc.scheduler.as_str() {
        "sh" => &[
            (ServiceFlags::SCHED1, "sh-fallback"),
            (ServiceFlags::SCHED2, "sh-port"),
        ],
        "mh" => &[
            (ServiceFlags::SCHED1, "mh-fallback"),
            (ServiceFlags::SCHED2, "mh-port"),
        ],
        _ => &[
            (ServiceFlags::SCHED1, "flag-1"),
            (ServiceFlags::SCHED2, "flag-2"),
            (ServiceFlags::SCHED3, "flag-3"),
        ],
    };
    names
        .iter()
        .filter(|(flag, _)| f.contains(*flag))
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

/// `-m`, `-i`, `-g` (also for `Local`); glibc prints `(null)` for the
/// methods ipvsadm has no switch for.
fn forward_switch(f: Forward) -> &'static str {
    match f {
        Forward::Masquerade => "-m",
        Forward::Tunnel => "-i",
        Forward::Local | Forward::Route => "-g",
        Forward::Bypass | Forward::Other(_) => "(null)",
    }
}

/// `Masq`, `Local`, `Tunnel`, `Route`; `(null)` otherwise, as glibc prints
/// ipvsadm's missing name.
fn forward_name(f: Forward) -> &'static str {
    match f {
        Forward::Masquerade => "Masq",
        Forward::Local => "Local",
        Forward::Tunnel => "Tunnel",
        Forward::Route => "Route",
        Forward::Bypass | Forward::Other(_) => "(null)",
    }
}

/// `--tun-nocsum`, `--tun-csum`, `--tun-remcsum`; ipvsadm has no name for
/// other values (it reads past its table), and none is written.
fn tunnel_flags_option(flags: u16) -> Option<&'static str> {
    match flags {
        0 => Some("--tun-nocsum"),
        1 => Some("--tun-csum"),
        2 => Some("--tun-remcsum"),
        _ => None,
    }
}

/// The `--tun-info` column: `ipip`, `gue:PORT:-c|+c|r+c`, `gre:-c|+c`; none
/// for destinations that are not tunnelled.
fn tunnel_info(d: &DestinationEntry) -> Option<String> {
    let dest = &d.destination;
    if dest.forward != Forward::Tunnel {
        return None;
    }
    let flags = match dest.tunnel_flags.0 {
        0 => "-c",
        1 => "+c",
        2 => "r+c",
        _ => "?",
    };
    let info = match dest.tunnel_type {
        TunnelType::Ipip => "ipip".to_owned(),
        TunnelType::Gue => format!("gue:{}:{flags}", dest.tunnel_port),
        TunnelType::Gre => format!("gre:{flags}"),
        TunnelType::Other(_) => return None,
    };
    // snprintf into 16 bytes.
    Some(info.chars().take(15).collect())
}

/// An address as the four host-order words libipvs's comparators read from
/// `union nf_inet_addr` (an IPv4 address fills the first, the rest is zero).
fn words(addr: &IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [u32::from(*a), 0, 0, 0],
        IpAddr::V6(a) => {
            let s = a.segments();
            let w = |i: usize| (u32::from(s[2 * i]) << 16) | u32::from(s[2 * i + 1]);
            [w(0), w(1), w(2), w(3)]
        }
    }
}

/// libipvs's address comparison: all four words when the first address is
/// IPv6, the first word otherwise; each difference read as a signed int.
fn cmp_addr(v6: bool, a: &[u32; 4], b: &[u32; 4]) -> i32 {
    let n = if v6 { 4 } else { 1 };
    a.iter()
        .zip(b)
        .take(n)
        .map(|(x, y)| x.wrapping_sub(*y) as i32)
        .find(|r| *r != 0)
        .unwrap_or(0)
}

/// What libipvs's `ipvs_cmp_services` compares, as libipvs holds it: a
/// firewall-mark service has protocol, address and port 0.
struct ServiceSortKey {
    fwmark: u32,
    af: i32,
    protocol: i32,
    addr: [u32; 4],
    port: i32,
}

fn service_sort_key(key: &ServiceKey) -> ServiceSortKey {
    match key {
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => ServiceSortKey {
            fwmark: 0,
            af: i32::from(AddressFamily::of(addr).to_raw()),
            protocol: i32::from(protocol.to_raw()),
            addr: words(addr),
            port: i32::from(*port),
        },
        ServiceKey::FwMark { family, mark } => ServiceSortKey {
            fwmark: *mark,
            af: i32::from(family.to_raw()),
            protocol: 0,
            addr: [0; 4],
            port: 0,
        },
    }
}

fn cmp_services(a: &ServiceSortKey, b: &ServiceSortKey) -> i32 {
    let r = a.fwmark.wrapping_sub(b.fwmark) as i32;
    if r != 0 {
        return r;
    }
    let r = a.af - b.af;
    if r != 0 {
        return r;
    }
    let r = a.protocol - b.protocol;
    if r != 0 {
        return r;
    }
    let v6 = a.af == i32::from(AddressFamily::Inet6.to_raw());
    let r = cmp_addr(v6, &a.addr, &b.addr);
    if r != 0 {
        return r;
    }
    a.port - b.port
}

fn ordered_services(table: &[TableEntry], sort: bool) -> Vec<&TableEntry> {
    if !sort {
        return table.iter().collect();
    }
    let keys: Vec<ServiceSortKey> = table
        .iter()
        .map(|e| service_sort_key(&e.service.service.key))
        .collect();
    let mut order: Vec<usize> = (0..table.len()).collect();
    glibc_qsort(&mut order, &|a: &usize, b: &usize| {
        cmp_services(&keys[*a], &keys[*b])
    });
    order.iter().map(|i| &table[*i]).collect()
}

fn ordered_destinations(dests: &[DestinationEntry], sort: bool) -> Vec<&DestinationEntry> {
    if !sort {
        return dests.iter().collect();
    }
    let keys: Vec<(bool, [u32; 4], i32)> = dests
        .iter()
        .map(|d| {
            let dest = &d.destination;
            (dest.addr.is_ipv6(), words(&dest.addr), i32::from(dest.port))
        })
        .collect();
    let mut order: Vec<usize> = (0..dests.len()).collect();
    glibc_qsort(&mut order, &|a: &usize, b: &usize| {
        let (a, b) = (&keys[*a], &keys[*b]);
        let r = cmp_addr(a.0, &a.1, &b.1);
        if r != 0 { r } else { a.2 - b.2 }
    });
    order.iter().map(|i| &dests[*i]).collect()
}

#[cfg(test)]
mod tests;
