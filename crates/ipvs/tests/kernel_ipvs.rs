//! Kernel tests: every client operation against a real IPVS, cross-checked
//! both ways with `ipvsadm`. Run in the lab VM as root with
//! `--ignored --test-threads=1`; each test starts from `ipvsadm -C` and
//! cleans up after itself.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::{ipvsadm, lines, listed, reset, saved, sh};
use kipvs_ipvs::{
    AddressFamily, Client, Destination, DestinationKey, Error, Forward, Netmask, Op, Service,
    ServiceFlags, ServiceKey, TableEntry, Timeouts, TunnelFlags, TunnelType,
};

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn client() -> Client {
    Client::new().expect("IPVS in the lab")
}

/// The table used by the cross-checks: v4, v6, fwmark (both families), UDP,
/// SCTP, persistence with netmask and engine, sh and mh flags, one-packet,
/// masq/DR/tunnel (GUE, GRE with checksum, mixed family), thresholds.
fn table() -> Vec<(Service, Vec<Destination>)> {
    let web = ServiceKey::tcp(v4(10, 0, 0, 1), 80);
    let dns6 = ServiceKey::udp(v6("fd00::1"), 53);
    let web6 = ServiceKey::tcp(v6("fd00::1"), 80);
    let mut masq = Destination::new(v4(10, 1, 0, 1), 8080).with_weight(3);
    masq.upper_threshold = 100;
    masq.lower_threshold = 10;
    let dr = Destination::new(v4(10, 1, 0, 2), 80).with_forward(Forward::Route);
    let mut gue = Destination::new(v4(10, 1, 0, 3), 80).with_forward(Forward::Tunnel);
    gue.tunnel_type = TunnelType::Gue;
    gue.tunnel_port = 6080;
    let mut gre = Destination::new(v4(10, 1, 0, 4), 80).with_forward(Forward::Tunnel);
    gre.tunnel_type = TunnelType::Gre;
    gre.tunnel_flags = TunnelFlags::CSUM;
    let mut sip = Service::new(ServiceKey::udp(v4(10, 0, 0, 4), 5060), "rr").persistent(100);
    sip.persistence_engine = Some("sip".into());
    vec![
        (Service::new(web, "rr"), vec![masq, dr, gue, gre]),
        (
            Service::new(dns6, "wlc").with_flags(ServiceFlags::ONE_PACKET),
            vec![Destination::new(v6("fd00::2"), 53)],
        ),
        (
            Service::new(web6, "rr"),
            // A mixed-family destination must be tunnelled.
            vec![Destination::new(v4(10, 1, 0, 5), 80).with_forward(Forward::Tunnel)],
        ),
        (
            Service::new(ServiceKey::fwmark(AddressFamily::Inet, 5), "rr")
                .persistent(300)
                .with_netmask(Netmask::v4_prefix(24)),
            vec![],
        ),
        (
            Service::new(ServiceKey::fwmark(AddressFamily::Inet6, 6), "rr")
                .persistent(60)
                .with_netmask(Netmask::V6(64)),
            vec![],
        ),
        (
            Service::new(ServiceKey::sctp(v4(10, 0, 0, 2), 9000), "sh")
                .with_flags(ServiceFlags::SCHED1 | ServiceFlags::SCHED2),
            vec![],
        ),
        (
            Service::new(ServiceKey::tcp(v4(10, 0, 0, 3), 443), "mh")
                .with_flags(ServiceFlags::SCHED2),
            vec![],
        ),
        (sip, vec![]),
    ]
}

/// What `ipvsadm -S -n` prints for [`table`].
const TABLE_SAVED: &[&str] = &[
    "-A -t 10.0.0.1:80 -s rr",
    "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3",
    "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 1",
    "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum",
    "-a -t 10.0.0.1:80 -r 10.1.0.4:80 -i -w 1 --tun-type gre --tun-csum",
    "-A -u [fd00::1]:53 -s wlc -o",
    "-a -u [fd00::1]:53 -r [fd00::2]:53 -m -w 1",
    "-A -t [fd00::1]:80 -s rr",
    "-a -t [fd00::1]:80 -r 10.1.0.5:80 -i -w 1 --tun-type ipip",
    "-A -f 5 -s rr -p 300 -M 255.255.255.0",
    "-A -f 6 -6 -s rr -p 60 -M 64",
    "-A --sctp-service 10.0.0.2:9000 -s sh -b sh-fallback,sh-port",
    "-A -t 10.0.0.3:443 -s mh -b mh-port",
    "-A -u 10.0.0.4:5060 -s rr -p 100 --pe sip",
];

/// The same table written with `ipvsadm`.
const TABLE_IPVSADM: &[&str] = &[
    "-A -t 10.0.0.1:80 -s rr",
    "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3 -x 100 -y 10",
    "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 1",
    "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum",
    "-a -t 10.0.0.1:80 -r 10.1.0.4:80 -i -w 1 --tun-type gre --tun-csum",
    "-A -u [fd00::1]:53 -s wlc -o",
    "-a -u [fd00::1]:53 -r [fd00::2]:53 -m -w 1",
    "-A -t [fd00::1]:80 -s rr",
    "-a -t [fd00::1]:80 -r 10.1.0.5:80 -i -w 1",
    "-A -f 5 -s rr -p 300 -M 255.255.255.0",
    "-A -f 6 -6 -s rr -p 60 -M 64",
    "-A --sctp-service 10.0.0.2:9000 -s sh -b sh-port,sh-fallback",
    "-A -t 10.0.0.3:443 -s mh -b mh-port",
    "-A -u 10.0.0.4:5060 -s rr -p 100 --pe sip",
];

fn write_table(ipvs: &mut Client) {
    for (svc, dests) in table() {
        ipvs.add_service(&svc).unwrap();
        for d in dests {
            ipvs.add_destination(&svc.key, &d).unwrap();
        }
    }
}

/// The table as read back, sorted by service and destination, without
/// counters.
fn read_sorted(entries: Vec<TableEntry>) -> Vec<(Service, Vec<Destination>)> {
    let mut out: Vec<(Service, Vec<Destination>)> = entries
        .into_iter()
        .map(|e| {
            let mut d: Vec<Destination> =
                e.destinations.into_iter().map(|d| d.destination).collect();
            d.sort_by_key(|d| d.key());
            (e.service.service, d)
        })
        .collect();
    out.sort_by_key(|(s, _)| s.key);
    out
}

fn sorted_table() -> Vec<(Service, Vec<Destination>)> {
    let mut t = table();
    for (_, d) in &mut t {
        d.sort_by_key(|d| d.key());
    }
    t.sort_by_key(|(s, _)| s.key);
    t
}

#[test]
#[ignore = "needs the kernel lab"]
fn family_resolves_and_info_matches_ipvsadm() {
    reset();
    let mut ipvs = client();
    assert!(ipvs.family_id() >= 16, "a dynamic generic-netlink id");
    let info = ipvs.info().unwrap();
    let header = ipvsadm("-Ln");
    let first = header.lines().next().unwrap();
    let (maj, min, patch) = info.version_triple();
    assert_eq!(
        first,
        format!(
            "IP Virtual Server version {maj}.{min}.{patch} (size={})",
            info.conn_table_size
        )
    );
    assert_eq!(info.version, 0x010201);
}

#[test]
#[ignore = "needs the kernel lab"]
fn kipvs_writes_ipvsadm_reads_exactly() {
    reset();
    let mut ipvs = client();
    write_table(&mut ipvs);
    assert_eq!(saved(), lines(TABLE_SAVED));
    // What -S leaves out: thresholds, and the fields of -Ln.
    assert_eq!(
        listed("--thresholds", "-> 10.1.0.1:8080"),
        ["->", "10.1.0.1:8080", "100", "10", "0", "0"]
    );
    assert_eq!(
        listed("", "UDP  10.0.0.4:5060"),
        [
            "UDP",
            "10.0.0.4:5060",
            "rr",
            "persistent",
            "100",
            "pe",
            "sip"
        ]
    );
    assert_eq!(
        listed("", "FWM  6"),
        ["FWM", "6", "IPv6", "rr", "persistent", "60", "mask", "64"]
    );
    // And kipvs reads back what it wrote, exactly.
    assert_eq!(read_sorted(ipvs.dump_all().unwrap()), sorted_table());
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn ipvsadm_writes_kipvs_reads_exactly() {
    reset();
    for cmd in TABLE_IPVSADM {
        ipvsadm(cmd);
    }
    assert_eq!(saved(), lines(TABLE_SAVED));
    let mut ipvs = client();
    // Serial and parallel table reads, and the per-service reads, agree.
    ipvs.set_dump_threads(1);
    let serial = ipvs.dump_all().unwrap();
    assert_eq!(read_sorted(serial.clone()), sorted_table());
    ipvs.set_dump_threads(4);
    assert_eq!(read_sorted(ipvs.dump_all().unwrap()), sorted_table());
    for entry in &serial {
        let key = entry.service.service.key;
        assert_eq!(ipvs.service(&key).unwrap().service, entry.service.service);
        let dests: Vec<Destination> = ipvs
            .destinations(&key)
            .unwrap()
            .into_iter()
            .map(|d| d.destination)
            .collect();
        let want: Vec<Destination> = entry
            .destinations
            .iter()
            .map(|d| d.destination.clone())
            .collect();
        assert_eq!(dests, want);
    }
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn service_get_edit_delete_and_errors() {
    reset();
    let mut ipvs = client();
    let key = ServiceKey::tcp(v4(10, 0, 0, 1), 80);
    let svc = Service::new(key, "wlc");
    assert!(matches!(ipvs.service(&key), Err(Error::NoSuchService(k)) if k == key));
    ipvs.add_service(&svc).unwrap();
    assert_eq!(ipvs.service(&key).unwrap().service, svc);
    assert!(matches!(ipvs.add_service(&svc), Err(Error::ServiceExists(k)) if k == key));

    // Edit: scheduler, persistence, netmask; then back (flags are exact).
    let edited = Service::new(key, "sh")
        .persistent(120)
        .with_flags(ServiceFlags::SCHED1)
        .with_netmask(Netmask::v4_prefix(16));
    ipvs.edit_service(&edited).unwrap();
    assert_eq!(ipvs.service(&key).unwrap().service, edited);
    assert_eq!(
        saved(),
        lines(&["-A -t 10.0.0.1:80 -s sh -p 120 -M 255.255.0.0 -b sh-fallback"])
    );
    ipvs.edit_service(&svc).unwrap();
    assert_eq!(saved(), lines(&["-A -t 10.0.0.1:80 -s wlc"]));

    // The kernel loads ip_vs_<sched> itself; an unknown one is named.
    let bad = Service::new(ServiceKey::tcp(v4(10, 0, 0, 9), 80), "nosuch");
    match ipvs.add_service(&bad) {
        Err(Error::SchedulerUnavailable { service, module }) => {
            assert_eq!(service, bad.key);
            assert_eq!(module, "ip_vs_nosuch");
        }
        other => panic!("{other:?}"),
    }
    let mut bad_pe = Service::new(ServiceKey::udp(v4(10, 0, 0, 9), 80), "rr");
    bad_pe.persistence_engine = Some("nope".into());
    assert!(matches!(
        ipvs.add_service(&bad_pe),
        Err(Error::SchedulerUnavailable { module, .. }) if module == "ip_vs_rr or ip_vs_pe_nope"
    ));
    let mut bad_edit = svc.clone();
    bad_edit.scheduler = "nosuch".into();
    assert!(matches!(
        ipvs.edit_service(&bad_edit),
        Err(Error::SchedulerUnavailable { .. })
    ));
    let missing = Service::new(ServiceKey::tcp(v4(10, 0, 0, 8), 80), "rr");
    assert!(matches!(
        ipvs.edit_service(&missing),
        Err(Error::NoSuchService(_))
    ));

    // EINVAL names the op: an IPv6 prefix outside 1..=128.
    let bad6 = Service::new(ServiceKey::tcp(v6("fd00::9"), 80), "rr").with_netmask(Netmask::V6(0));
    match ipvs.add_service(&bad6) {
        Err(e @ Error::Invalid { .. }) => assert!(
            e.to_string()
                .starts_with("add service TCP [fd00::9]:80 (scheduler rr): invalid request"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }

    ipvs.delete_service(&key).unwrap();
    assert!(matches!(ipvs.delete_service(&key), Err(Error::NoSuchService(k)) if k == key));
    assert!(saved().is_empty());
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn destination_add_edit_delete_and_errors() {
    reset();
    let mut ipvs = client();
    let key = ServiceKey::tcp(v6("fd00::1"), 443);
    let dest = Destination::new(v6("fd00::10"), 8443);
    assert!(matches!(
        ipvs.add_destination(&key, &dest),
        Err(Error::NoSuchService(k)) if k == key
    ));
    // The kernel answers an empty dump for a missing service.
    assert!(ipvs.destinations(&key).unwrap().is_empty());
    ipvs.add_service(&Service::new(key, "wrr")).unwrap();
    ipvs.add_destination(&key, &dest).unwrap();
    match ipvs.add_destination(&key, &dest) {
        Err(e @ Error::DestinationExists { .. }) => assert_eq!(
            e.to_string(),
            "destination [fd00::10]:8443 of service TCP [fd00::1]:443 already exists"
        ),
        other => panic!("{other:?}"),
    }
    let mut edited = dest.clone().with_weight(7);
    edited.upper_threshold = 50;
    edited.lower_threshold = 5;
    ipvs.edit_destination(&key, &edited).unwrap();
    assert_eq!(
        listed("--thresholds", "-> [fd00::10]:8443"),
        ["->", "[fd00::10]:8443", "50", "5", "0", "0"]
    );
    assert_eq!(
        saved(),
        lines(&[
            "-A -t [fd00::1]:443 -s wrr",
            "-a -t [fd00::1]:443 -r [fd00::10]:8443 -m -w 7",
        ])
    );
    // Weight 0 is how a destination drains.
    ipvs.edit_destination(&key, &edited.clone().with_weight(0))
        .unwrap();
    assert_eq!(ipvs.destinations(&key).unwrap()[0].destination.weight, 0);

    let other = Destination::new(v6("fd00::11"), 8443);
    assert!(matches!(
        ipvs.edit_destination(&key, &other),
        Err(Error::NoSuchDestination { destination, .. }) if destination == other.key()
    ));
    ipvs.delete_destination(&key, &dest.key()).unwrap();
    match ipvs.delete_destination(&key, &dest.key()) {
        Err(e @ Error::NoSuchDestination { .. }) => assert_eq!(
            e.to_string(),
            "no such destination [fd00::10]:8443 in service TCP [fd00::1]:443"
        ),
        other => panic!("{other:?}"),
    }
    // A v4 destination in a v6 service must be tunnelled.
    let mixed = Destination::new(v4(10, 1, 0, 1), 443);
    assert!(matches!(
        ipvs.add_destination(&key, &mixed),
        Err(Error::Invalid { .. })
    ));
    assert_eq!(saved(), lines(&["-A -t [fd00::1]:443 -s wrr"]));
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn batch_with_one_bad_op_reports_it_and_applies_the_rest() {
    reset();
    ipvsadm("-A -t 10.0.0.2:80 -s rr");
    let mut ipvs = client();
    let a = ServiceKey::tcp(v4(10, 0, 0, 1), 80);
    let b = ServiceKey::tcp(v4(10, 0, 0, 2), 80);
    let ops = vec![
        Op::AddService(Service::new(a, "rr")),
        Op::AddDestination {
            service: a,
            destination: Destination::new(v4(10, 1, 0, 1), 80),
        },
        // Already there (added by ipvsadm above).
        Op::AddService(Service::new(b, "rr")),
        Op::AddDestination {
            service: b,
            destination: Destination::new(v4(10, 1, 0, 2), 80),
        },
        Op::DeleteDestination {
            service: a,
            destination: DestinationKey::new(v4(10, 1, 0, 9), 80),
        },
        Op::AddDestination {
            service: a,
            destination: Destination::new(v4(10, 1, 0, 3), 80),
        },
    ];
    let results = ipvs.apply(&ops);
    assert_eq!(results.len(), ops.len());
    assert!(results[0].is_ok() && results[1].is_ok() && results[3].is_ok());
    assert!(results[5].is_ok());
    match &results[2] {
        Err(e @ Error::ServiceExists(k)) => {
            assert_eq!(*k, b);
            assert_eq!(e.to_string(), "service TCP 10.0.0.2:80 already exists");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &results[4],
        Err(Error::NoSuchDestination { service, destination })
            if *service == a && *destination == DestinationKey::new(v4(10, 1, 0, 9), 80)
    ));
    assert_eq!(
        saved(),
        lines(&[
            "-A -t 10.0.0.1:80 -s rr",
            "-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1",
            "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -m -w 1",
            "-A -t 10.0.0.2:80 -s rr",
            "-a -t 10.0.0.2:80 -r 10.1.0.2:80 -m -w 1",
        ])
    );
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn batch_of_thousands_pipelines_and_reads_back() {
    reset();
    let mut ipvs = client();
    println!("apply window: {} requests", ipvs.window());
    let mut ops = Vec::new();
    for s in 0..100u8 {
        let key = ServiceKey::tcp(v4(10, 0, 1, s), 80);
        ops.push(Op::AddService(Service::new(key, "rr")));
        for d in 0..50u8 {
            ops.push(Op::AddDestination {
                service: key,
                destination: Destination::new(v4(10, 2, s, d), 8080),
            });
        }
    }
    let started = std::time::Instant::now();
    let results = ipvs.apply(&ops);
    let applied = started.elapsed();
    assert_eq!(results.len(), 5100);
    for (op, r) in ops.iter().zip(&results) {
        assert!(r.is_ok(), "{op}: {r:?}");
    }
    // Again: every op fails, each with its own object.
    let again = ipvs.apply(&ops);
    for (op, r) in ops.iter().zip(&again) {
        match (op, r) {
            (Op::AddService(s), Err(Error::ServiceExists(k))) => assert_eq!(*k, s.key),
            (
                Op::AddDestination {
                    service,
                    destination,
                },
                Err(Error::DestinationExists {
                    service: s,
                    destination: d,
                }),
            ) => {
                assert_eq!((s, *d), (service, destination.key()));
            }
            other => panic!("{other:?}"),
        }
    }
    ipvs.set_dump_threads(1);
    let started = std::time::Instant::now();
    let serial = ipvs.dump_all().unwrap();
    let serial_took = started.elapsed();
    ipvs.set_dump_threads(4);
    let started = std::time::Instant::now();
    let table = ipvs.dump_all().unwrap();
    let parallel_took = started.elapsed();
    assert_eq!(table, serial);
    assert_eq!(table.len(), 100);
    assert!(table.iter().all(|e| e.destinations.len() == 50));
    // For information only (QEMU TCG; never a pass/fail criterion): the
    // same rules through `ipvsadm -R`, one request and ack at a time.
    let rules: String = ops
        .iter()
        .map(|op| match op {
            Op::AddService(s) => format!("-A -t {} -s rr\n", &s.key.to_string()[4..]),
            Op::AddDestination {
                service,
                destination,
            } => format!(
                "-a -t {} -r {} -m -w 1\n",
                &service.to_string()[4..],
                destination.key()
            ),
            _ => unreachable!(),
        })
        .collect();
    std::fs::write("/tmp/kipvs-rules", rules).unwrap();
    ipvsadm("-C");
    let started = std::time::Instant::now();
    sh("ipvsadm -R < /tmp/kipvs-rules");
    let restore = started.elapsed();
    println!(
        "5100 adds: apply {applied:?}, ipvsadm -R {restore:?} ({:.1}x); dump_all of 100x50: \
         serial {serial_took:?}, parallel {parallel_took:?}",
        restore.as_secs_f64() / applied.as_secs_f64()
    );
    let listed_dests = ipvsadm("-Ln").lines().filter(|l| l.contains("->")).count();
    assert_eq!(listed_dests, 1 + 5000, "header line plus destinations");
    // Deleting in a batch, too.
    let deletes: Vec<Op> = table
        .iter()
        .map(|e| Op::DeleteService(e.service.service.key))
        .collect();
    assert!(ipvs.apply(&deletes).iter().all(Result::is_ok));
    assert!(ipvs.services().unwrap().is_empty());
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn flush_zero_and_timeouts() {
    reset();
    let mut ipvs = client();
    assert_eq!(
        ipvs.timeouts().unwrap(),
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300
        }
    );
    ipvs.set_timeouts(&Timeouts {
        tcp: 100,
        tcp_fin: 20,
        udp: 30,
    })
    .unwrap();
    assert_eq!(
        ipvsadm("-L --timeout").trim(),
        "Timeout (tcp tcpfin udp): 100 20 30"
    );
    // Zero leaves a value unchanged.
    ipvs.set_timeouts(&Timeouts {
        tcp: 0,
        tcp_fin: 0,
        udp: 45,
    })
    .unwrap();
    assert_eq!(
        ipvs.timeouts().unwrap(),
        Timeouts {
            tcp: 100,
            tcp_fin: 20,
            udp: 45
        }
    );
    ipvsadm("--set 7 8 9");
    assert_eq!(
        ipvs.timeouts().unwrap(),
        Timeouts {
            tcp: 7,
            tcp_fin: 8,
            udp: 9
        }
    );

    let key = ServiceKey::udp(v4(10, 0, 0, 1), 53);
    ipvs.add_service(&Service::new(key, "rr")).unwrap();
    ipvs.zero_all().unwrap();
    ipvs.zero_service(&key).unwrap();
    let missing = ServiceKey::udp(v4(10, 0, 0, 2), 53);
    assert!(matches!(ipvs.zero_service(&missing), Err(Error::NoSuchService(k)) if k == missing));
    ipvs.flush().unwrap();
    assert!(ipvs.services().unwrap().is_empty());
    assert!(saved().is_empty());
    reset();
}

/// Drop `CAP_NET_ADMIN` from the effective set of the calling thread only
/// (capabilities are per thread).
fn drop_cap_net_admin_in_this_thread() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a v3 header and two data structs.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_capget, &header, data.as_mut_ptr()),
            0
        );
        data[0].effective &= !(1 << CAP_NET_ADMIN);
        assert_eq!(libc::syscall(libc::SYS_capset, &header, data.as_ptr()), 0);
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn permission_denied_without_cap_net_admin() {
    reset();
    let key = ServiceKey::tcp(v4(10, 0, 0, 1), 80);
    std::thread::spawn(move || {
        drop_cap_net_admin_in_this_thread();
        // Resolving the family needs no privilege; every IPVS command does.
        let mut ipvs = client();
        match ipvs.services() {
            Err(e @ Error::PermissionDenied { .. }) => assert_eq!(
                e.to_string(),
                "list services: permission denied (IPVS needs CAP_NET_ADMIN)"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ipvs.add_service(&Service::new(key, "rr")),
            Err(Error::PermissionDenied { op }) if op == "add service TCP 10.0.0.1:80 (scheduler rr)"
        ));
        let results = ipvs.apply(&[Op::Flush, Op::Zero(None)]);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(Error::PermissionDenied { .. })))
        );
    })
    .join()
    .unwrap();
    assert!(saved().is_empty());
    sh("true");
}
