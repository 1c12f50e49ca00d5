//! `save` and `list` against what ipvsadm 1.31's printf formats produce
//! (expected text computed independently from its format strings; the
//! saved lines are also those the kernel lab recorded from `ipvsadm -S -n`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use kipvs_ipvs::{Destination, ServiceEntry, TunnelFlags};

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn dest(d: Destination) -> DestinationEntry {
    DestinationEntry {
        destination: d,
        active_conns: 0,
        inactive_conns: 0,
        persistent_conns: 0,
        stats: Stats::default(),
    }
}

fn entry(service: Service, destinations: Vec<DestinationEntry>) -> TableEntry {
    TableEntry {
        service: ServiceEntry {
            service,
            stats: Stats::default(),
        },
        destinations,
    }
}

fn stats(v: [u64; 10]) -> Stats {
    Stats {
        conns: v[0],
        inpkts: v[1],
        outpkts: v[2],
        inbytes: v[3],
        outbytes: v[4],
        cps: v[5],
        inpps: v[6],
        outpps: v[7],
        inbps: v[8],
        outbps: v[9],
    }
}

/// The kernel lab's cross-check table, in a scrambled (kernel-like) order.
fn table() -> Vec<TableEntry> {
    let web = ServiceKey::tcp(v4(10, 0, 0, 1), 80);
    let mut masq = Destination::new(v4(10, 1, 0, 1), 8080).with_weight(3);
    masq.upper_threshold = 100;
    masq.lower_threshold = 10;
    let mut masq = dest(masq);
    masq.active_conns = 1;
    masq.inactive_conns = 2;
    masq.persistent_conns = 3;
    masq.stats = stats([
        123_456_789,
        1_000_000_000,
        99_999_999_999,
        100_000_000_000_000,
        5,
        1,
        2,
        3,
        123_456_789,
        100_000_000_000,
    ]);
    let dr = Destination::new(v4(10, 1, 0, 2), 80).with_forward(Forward::Route);
    let mut gue = Destination::new(v4(10, 1, 0, 3), 80).with_forward(Forward::Tunnel);
    gue.tunnel_type = TunnelType::Gue;
    gue.tunnel_port = 6080;
    let mut gre = Destination::new(v4(10, 1, 0, 4), 80).with_forward(Forward::Tunnel);
    gre.tunnel_type = TunnelType::Gre;
    gre.tunnel_flags = TunnelFlags::CSUM;
    let mut sip = Service::new(ServiceKey::udp(v4(10, 0, 0, 4), 5060), "rr").persistent(100);
    sip.persistence_engine = Some("sip".into());
    let mut web_entry = entry(
        Service::new(web, "rr"),
        vec![dest(gre), masq, dest(gue), dest(dr)],
    );
    web_entry.service.stats = stats([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    vec![
        entry(
            Service::new(ServiceKey::fwmark(AddressFamily::Inet6, 6), "rr")
                .persistent(60)
                .with_netmask(Netmask::V6(64)),
            vec![],
        ),
        entry(
            Service::new(ServiceKey::udp(v6("fd00::1"), 53), "wlc")
                .with_flags(ServiceFlags::ONE_PACKET),
            vec![dest(Destination::new(v6("fd00::2"), 53))],
        ),
        entry(
            Service::new(ServiceKey::sctp(v4(10, 0, 0, 2), 9000), "sh")
                .with_flags(ServiceFlags::SCHED1 | ServiceFlags::SCHED2),
            vec![],
        ),
        web_entry,
        entry(
            Service::new(ServiceKey::fwmark(AddressFamily::Inet, 5), "rr")
                .persistent(300)
                .with_netmask(Netmask::v4_prefix(24)),
            vec![],
        ),
        entry(
            Service::new(ServiceKey::tcp(v6("fd00::1"), 80), "rr"),
            vec![dest(
                Destination::new(v4(10, 1, 0, 5), 80).with_forward(Forward::Tunnel),
            )],
        ),
        entry(sip, vec![]),
        entry(
            Service::new(ServiceKey::tcp(v4(10, 0, 0, 3), 443), "mh")
                .with_flags(ServiceFlags::SCHED2),
            vec![],
        ),
    ]
}

const SAVED: &str = "\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3
-a -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 1
-a -t 10.0.0.1:80 -r 10.1.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 10.0.0.1:80 -r 10.1.0.4:80 -i -w 1 --tun-type gre --tun-csum
-A -t 10.0.0.3:443 -s mh -b mh-port
-A -u 10.0.0.4:5060 -s rr -p 100 --pe sip
-A --sctp-service 10.0.0.2:9000 -s sh -b sh-fallback,sh-port
-A -t [fd00::1]:80 -s rr
-a -t [fd00::1]:80 -r 10.1.0.5:80 -i -w 1 --tun-type ipip
-A -u [fd00::1]:53 -s wlc -o
-a -u [fd00::1]:53 -r [fd00::2]:53 -m -w 1
-A -f 5 -s rr -p 300 -M 255.255.255.0
-A -f 6 -6 -s rr -p 60 -M 64
";

const SAVED_NOSORT: &str = "\
-A -f 6 -6 -s rr -p 60 -M 64
-A -u [fd00::1]:53 -s wlc -o
-a -u [fd00::1]:53 -r [fd00::2]:53 -m -w 1
-A --sctp-service 10.0.0.2:9000 -s sh -b sh-fallback,sh-port
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.1.0.4:80 -i -w 1 --tun-type gre --tun-csum
-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3
-a -t 10.0.0.1:80 -r 10.1.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 1
-A -f 5 -s rr -p 300 -M 255.255.255.0
-A -t [fd00::1]:80 -s rr
-a -t [fd00::1]:80 -r 10.1.0.5:80 -i -w 1 --tun-type ipip
-A -u 10.0.0.4:5060 -s rr -p 100 --pe sip
-A -t 10.0.0.3:443 -s mh -b mh-port
";

#[test]
fn save_matches_ipvsadm() {
    assert_eq!(save(&table(), true), SAVED);
    assert_eq!(save(&table(), false), SAVED_NOSORT);
    assert_eq!(save(&[], true), "");
}

const INFO: Info = Info {
    version: 0x010201,
    conn_table_size: 4096,
};

const PLAIN: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.1:80 rr
  -> 10.1.0.1:8080                Masq    3      1          2         
  -> 10.1.0.2:80                  Route   1      0          0         
  -> 10.1.0.3:80                  Tunnel  1      0          0         
  -> 10.1.0.4:80                  Tunnel  1      0          0         
TCP  10.0.0.3:443 mh (mh-port)
UDP  10.0.0.4:5060 rr persistent 100 pe sip
SCTP 10.0.0.2:9000 sh (sh-fallback,sh-port)
TCP  [fd00::1]:80 rr
  -> 10.1.0.5:80                  Tunnel  1      0          0         
UDP  [fd00::1]:53 wlc ops
  -> [fd00::2]:53                 Masq    1      0          0         
FWM  5 rr persistent 300 mask 255.255.255.0
FWM  6 IPv6 rr persistent 60 mask 64
";

const STATS: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                         1        2        3        4        5
  -> 10.1.0.1:8080                 123456K    1000M   99999M     100T        5
  -> 10.1.0.2:80                         0        0        0        0        0
  -> 10.1.0.3:80                         0        0        0        0        0
  -> 10.1.0.4:80                         0        0        0        0        0
TCP  10.0.0.3:443                        0        0        0        0        0
UDP  10.0.0.4:5060                       0        0        0        0        0
SCTP 10.0.0.2:9000                       0        0        0        0        0
TCP  [fd00::1]:80                        0        0        0        0        0
  -> 10.1.0.5:80                         0        0        0        0        0
UDP  [fd00::1]:53                        0        0        0        0        0
  -> [fd00::2]:53                        0        0        0        0        0
FWM  5                                   0        0        0        0        0
FWM  6 IPv6                              0        0        0        0        0
";

const STATS_EXACT: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                         1        2        3        4        5
  -> 10.1.0.1:8080                123456789 1000000000 99999999999 100000000000000        5
  -> 10.1.0.2:80                         0        0        0        0        0
  -> 10.1.0.3:80                         0        0        0        0        0
  -> 10.1.0.4:80                         0        0        0        0        0
TCP  10.0.0.3:443                        0        0        0        0        0
UDP  10.0.0.4:5060                       0        0        0        0        0
SCTP 10.0.0.2:9000                       0        0        0        0        0
TCP  [fd00::1]:80                        0        0        0        0        0
  -> 10.1.0.5:80                         0        0        0        0        0
UDP  [fd00::1]:53                        0        0        0        0        0
  -> [fd00::2]:53                        0        0        0        0        0
FWM  5                                   0        0        0        0        0
FWM  6 IPv6                              0        0        0        0        0
";

const RATE: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.0.0.1:80                         6        7        8        9       10
  -> 10.1.0.1:8080                       1        2        3  123456K     100G
  -> 10.1.0.2:80                         0        0        0        0        0
  -> 10.1.0.3:80                         0        0        0        0        0
  -> 10.1.0.4:80                         0        0        0        0        0
TCP  10.0.0.3:443                        0        0        0        0        0
UDP  10.0.0.4:5060                       0        0        0        0        0
SCTP 10.0.0.2:9000                       0        0        0        0        0
TCP  [fd00::1]:80                        0        0        0        0        0
  -> 10.1.0.5:80                         0        0        0        0        0
UDP  [fd00::1]:53                        0        0        0        0        0
  -> [fd00::2]:53                        0        0        0        0        0
FWM  5                                   0        0        0        0        0
FWM  6 IPv6                              0        0        0        0        0
";

const RATE_EXACT: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.0.0.1:80                         6        7        8        9       10
  -> 10.1.0.1:8080                       1        2        3 123456789 100000000000
  -> 10.1.0.2:80                         0        0        0        0        0
  -> 10.1.0.3:80                         0        0        0        0        0
  -> 10.1.0.4:80                         0        0        0        0        0
TCP  10.0.0.3:443                        0        0        0        0        0
UDP  10.0.0.4:5060                       0        0        0        0        0
SCTP 10.0.0.2:9000                       0        0        0        0        0
TCP  [fd00::1]:80                        0        0        0        0        0
  -> 10.1.0.5:80                         0        0        0        0        0
UDP  [fd00::1]:53                        0        0        0        0        0
  -> [fd00::2]:53                        0        0        0        0        0
FWM  5                                   0        0        0        0        0
FWM  6 IPv6                              0        0        0        0        0
";

const THRESHOLDS: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  10.0.0.1:80 rr
  -> 10.1.0.1:8080                100        10         1          2         
  -> 10.1.0.2:80                  0          0          0          0         
  -> 10.1.0.3:80                  0          0          0          0         
  -> 10.1.0.4:80                  0          0          0          0         
TCP  10.0.0.3:443 mh (mh-port)
UDP  10.0.0.4:5060 rr persistent 100 pe sip
SCTP 10.0.0.2:9000 sh (sh-fallback,sh-port)
TCP  [fd00::1]:80 rr
  -> 10.1.0.5:80                  0          0          0          0         
UDP  [fd00::1]:53 wlc ops
  -> [fd00::2]:53                 0          0          0          0         
FWM  5 rr persistent 300 mask 255.255.255.0
FWM  6 IPv6 rr persistent 60 mask 64
";

const PC: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  10.0.0.1:80 rr
  -> 10.1.0.1:8080                3         3           1          2         
  -> 10.1.0.2:80                  1         0           0          0         
  -> 10.1.0.3:80                  1         0           0          0         
  -> 10.1.0.4:80                  1         0           0          0         
TCP  10.0.0.3:443 mh (mh-port)
UDP  10.0.0.4:5060 rr persistent 100 pe sip
SCTP 10.0.0.2:9000 sh (sh-fallback,sh-port)
TCP  [fd00::1]:80 rr
  -> 10.1.0.5:80                  1         0           0          0         
UDP  [fd00::1]:53 wlc ops
  -> [fd00::2]:53                 1         0           0          0         
FWM  5 rr persistent 300 mask 255.255.255.0
FWM  6 IPv6 rr persistent 60 mask 64
";

const TUN: &str = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn
TCP  10.0.0.1:80 rr
  -> 10.1.0.1:8080                Masq    n/a           3      1          2         
  -> 10.1.0.2:80                  Route   n/a           1      0          0         
  -> 10.1.0.3:80                  Tunnel  gue:6080:-c   1      0          0         
  -> 10.1.0.4:80                  Tunnel  gre:+c        1      0          0         
TCP  10.0.0.3:443 mh (mh-port)
UDP  10.0.0.4:5060 rr persistent 100 pe sip
SCTP 10.0.0.2:9000 sh (sh-fallback,sh-port)
TCP  [fd00::1]:80 rr
  -> 10.1.0.5:80                  Tunnel  ipip          1      0          0         
UDP  [fd00::1]:53 wlc ops
  -> [fd00::2]:53                 Masq    n/a           1      0          0         
FWM  5 rr persistent 300 mask 255.255.255.0
FWM  6 IPv6 rr persistent 60 mask 64
";

const ONLY_WEB_STATS: &str = "\
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.1:80                         1        2        3        4        5
  -> 10.1.0.1:8080                 123456K    1000M   99999M     100T        5
  -> 10.1.0.2:80                         0        0        0        0        0
  -> 10.1.0.3:80                         0        0        0        0        0
  -> 10.1.0.4:80                         0        0        0        0        0
";

fn opts() -> ListOptions {
    ListOptions::default()
}

#[test]
fn list_matches_ipvsadm() {
    let t = table();
    assert_eq!(list(&t, &INFO, &opts()), PLAIN);
    let stats = ListOptions {
        stats: true,
        ..opts()
    };
    assert_eq!(list(&t, &INFO, &stats), STATS);
    let exact = ListOptions {
        exact: true,
        ..stats.clone()
    };
    assert_eq!(list(&t, &INFO, &exact), STATS_EXACT);
    let rate = ListOptions {
        rate: true,
        ..opts()
    };
    assert_eq!(list(&t, &INFO, &rate), RATE);
    let rate_exact = ListOptions {
        exact: true,
        ..rate.clone()
    };
    assert_eq!(list(&t, &INFO, &rate_exact), RATE_EXACT);
    let thresholds = ListOptions {
        thresholds: true,
        ..opts()
    };
    assert_eq!(list(&t, &INFO, &thresholds), THRESHOLDS);
    let pc = ListOptions {
        persistent_conn: true,
        ..opts()
    };
    assert_eq!(list(&t, &INFO, &pc), PC);
    let tun = ListOptions {
        tun_info: true,
        ..opts()
    };
    assert_eq!(list(&t, &INFO, &tun), TUN);
    // --stats wins over --rate, as in ipvsadm.
    let both = ListOptions {
        rate: true,
        ..stats.clone()
    };
    assert_eq!(list(&t, &INFO, &both), STATS);
}

#[test]
fn list_one_service() {
    let t = table();
    let only = ListOptions {
        stats: true,
        only: Some(ServiceKey::tcp(v4(10, 0, 0, 1), 80)),
        ..opts()
    };
    assert_eq!(list(&t, &INFO, &only), ONLY_WEB_STATS);
    let fwm6 = ListOptions {
        only: Some(ServiceKey::fwmark(AddressFamily::Inet6, 6)),
        ..opts()
    };
    assert_eq!(
        list(&t, &INFO, &fwm6),
        "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           \
         Forward Weight ActiveConn InActConn\nFWM  6 IPv6 rr persistent 60 mask 64\n"
    );
    // ipvsadm prints nothing (and an error) for a service it has not.
    let missing = ListOptions {
        only: Some(ServiceKey::fwmark(AddressFamily::Inet, 6)),
        ..opts()
    };
    assert_eq!(list(&t, &INFO, &missing), "");
    // An empty table: the header and titles.
    assert_eq!(
        list(&[], &INFO, &opts()),
        "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    );
}

#[test]
fn large_numbers_as_print_largenum() {
    let cases: &[(u64, &str, &str)] = &[
        (0, "        0", "        0"),
        (99_999_999, " 99999999", " 99999999"),
        (100_000_000, "  100000K", " 100000000"),
        (999_999_999, "  999999K", " 999999999"),
        (1_000_000_000, "    1000M", " 1000000000"),
        (99_999_999_999, "   99999M", " 99999999999"),
        (100_000_000_000, "     100G", " 100000000000"),
        (99_999_999_999_999, "   99999G", " 99999999999999"),
        (100_000_000_000_000, "     100T", " 100000000000000"),
        (u64::MAX, "18446744T", " 18446744073709551615"),
    ];
    for (n, short, exact) in cases {
        let mut s = String::new();
        large_number(&mut s, *n, false);
        assert_eq!(s, *short, "{n}");
        let mut s = String::new();
        large_number(&mut s, *n, true);
        assert_eq!(s, *exact, "{n}");
    }
}

#[test]
fn sorting_reproduces_ipvsadms_overflowing_comparators() {
    let svc = |a: IpAddr| entry(Service::new(ServiceKey::tcp(a, 80), "rr"), vec![]);
    let t = vec![
        svc(v4(10, 0, 0, 1)),
        svc(v4(192, 168, 0, 1)),
        svc(v4(10, 0, 0, 2)),
    ];
    // 10.x - 192.168.x overflows into a positive int: 192.168.0.1 sorts
    // first.
    assert_eq!(
        save(&t, true),
        "-A -t 192.168.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.2:80 -s rr\n"
    );
    // A firewall mark of 2^31 and more sorts before mark 0 (address
    // services) and is printed negative.
    let t = vec![
        svc(v4(10, 0, 0, 1)),
        entry(
            Service::new(ServiceKey::fwmark(AddressFamily::Inet, 0x8000_0001), "rr"),
            vec![],
        ),
    ];
    assert_eq!(
        save(&t, true),
        "-A -f -2147483647 -s rr\n-A -t 10.0.0.1:80 -s rr\n"
    );
    assert!(list(&t, &INFO, &opts()).contains("\nFWM  -2147483647 rr\n"));
    // Destinations of another family (tunnels): compared by the first one's.
    let mixed = entry(
        Service::new(ServiceKey::tcp(v6("fd00::1"), 80), "rr"),
        vec![
            dest(Destination::new(v6("fd00::9"), 80).with_forward(Forward::Tunnel)),
            dest(Destination::new(v4(10, 0, 0, 9), 80).with_forward(Forward::Tunnel)),
        ],
    );
    let saved = save(&[mixed], true);
    let order: Vec<&str> = saved
        .lines()
        .skip(1)
        .map(|l| l.split(' ').nth(4).unwrap())
        .collect();
    // fd00:: - 10.0.0.9 in the first word is negative as an int: the IPv6
    // one first.
    assert_eq!(order, ["[fd00::9]:80", "10.0.0.9:80"]);
}

#[test]
fn odd_values_print_as_ipvsadm_prints_them() {
    let key = ServiceKey::tcp(v4(10, 0, 0, 1), 80);
    let mut local = Destination::new(v4(10, 1, 0, 1), 80).with_forward(Forward::Local);
    local.weight = 7;
    let bypass = Destination::new(v4(10, 1, 0, 2), 80).with_forward(Forward::Bypass);
    let mut odd_tunnel = Destination::new(v4(10, 1, 0, 3), 80).with_forward(Forward::Tunnel);
    odd_tunnel.tunnel_type = TunnelType::Other(9);
    let t = vec![entry(
        // sh has no name for its third flag: ipvsadm prints "-b " and "()".
        Service::new(key, "sh").with_flags(ServiceFlags::SCHED3),
        vec![dest(local), dest(bypass), dest(odd_tunnel)],
    )];
    assert_eq!(
        save(&t, true),
        "-A -t 10.0.0.1:80 -s sh -b \n\
         -a -t 10.0.0.1:80 -r 10.1.0.1:80 -g -w 7\n\
         -a -t 10.0.0.1:80 -r 10.1.0.2:80 (null) -w 1\n\
         -a -t 10.0.0.1:80 -r 10.1.0.3:80 -i -w 1\n"
    );
    let listed = list(&t, &INFO, &opts());
    let lines: Vec<&str> = listed.lines().skip(3).collect();
    assert_eq!(lines[0], "TCP  10.0.0.1:80 sh ()");
    assert_eq!(
        lines[1],
        "  -> 10.1.0.1:80                  Local   7      0          0         "
    );
    assert_eq!(
        lines[2],
        "  -> 10.1.0.2:80                  (null)  1      0          0         "
    );
    // Persistence without the full mask; the default mask is not shown; a
    // non-persistent service never shows its mask.
    let p = |m: Netmask, persistent: bool| {
        let mut s = Service::new(ServiceKey::tcp(v4(10, 0, 0, 1), 0), "wlc").with_netmask(m);
        if persistent {
            s = s.persistent(1);
        }
        save(&[entry(s, vec![])], true)
    };
    assert_eq!(
        p(Netmask::v4_prefix(32), true),
        "-A -t 10.0.0.1:0 -s wlc -p 1\n"
    );
    assert_eq!(
        p(Netmask::v4_prefix(16), true),
        "-A -t 10.0.0.1:0 -s wlc -p 1 -M 255.255.0.0\n"
    );
    assert_eq!(
        p(Netmask::v4_prefix(16), false),
        "-A -t 10.0.0.1:0 -s wlc\n"
    );
    // Weights above INT_MAX (which the kernel refuses) print as ipvsadm's
    // int does.
    let heavy = Destination::new(v4(10, 1, 0, 1), 80).with_weight(u32::MAX);
    let t = vec![entry(Service::new(key, "rr"), vec![dest(heavy)])];
    assert!(save(&t, true).ends_with(" -m -w -1\n"));
}
