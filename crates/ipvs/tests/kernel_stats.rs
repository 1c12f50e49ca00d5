//! Counters after real traffic: a client network namespace fetches a page
//! through a virtual service from a busybox httpd in a server namespace;
//! the counters kipvs reads are non-zero and equal `ipvsadm --stats`.
//! Also captures the kernel's reply bytes and checks the decoder on them.

mod common;

use std::net::Ipv4Addr;

use common::{ipvsadm, reset, setup_namespaces, sh, teardown_namespaces};
use kipvs_ipvs::message::{IpvsMessage, dest, emit_request, parse_reply, service};
use kipvs_ipvs::{AddressFamily, Client, Destination, Read, Service, ServiceKey, Stats};
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 20, 2);
/// A virtual port no other lab test uses. A real server deleted while it
/// still has connections waits in the kernel's destination trash, and adding
/// the same (virtual address, virtual port, real server) again revives it
/// with its old counters: with port 80 this test could inherit a connection
/// from (or leave one to) `kipvs-ipvsadm`'s `kernel_ipvsadm`, which runs in
/// the same VM.
const VPORT: u16 = 81;

/// The five counters of the `ipvsadm -Ln --stats --exact` line starting
/// with `prefix`.
fn ipvsadm_counters(prefix: &str) -> [u64; 5] {
    let out = ipvsadm("-Ln --stats --exact");
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in\n{out}"));
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    fields[fields.len() - 5..].try_into().unwrap()
}

fn counters(s: &Stats) -> [u64; 5] {
    [s.conns, s.inpkts, s.outpkts, s.inbytes, s.outbytes]
}

#[test]
#[ignore = "needs the kernel lab"]
fn stats_after_real_traffic_match_ipvsadm() {
    reset();
    setup_namespaces(&VIP.to_string());
    let mut ipvs = Client::new().unwrap();
    let key = ServiceKey::tcp(VIP, VPORT);
    ipvs.add_service(&Service::new(key, "rr")).unwrap();
    ipvs.add_destination(&key, &Destination::new(SERVER, 80))
        .unwrap();
    for _ in 0..3 {
        let page = sh(&format!(
            "ip netns exec kc curl -s --max-time 10 http://{VIP}:{VPORT}/"
        ));
        assert_eq!(page.trim(), "hello-from-ks");
    }
    // The kernel publishes per-CPU counters from its rate estimator, every
    // two seconds: wait for the three connections to show.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ipvs.service(&key).unwrap().stats.conns < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    // And one more estimator period for the last FIN/ACKs.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let svc = ipvs.service(&key).unwrap().stats;
    let dst = ipvs.destinations(&key).unwrap()[0].stats;
    println!("service {svc:?}\ndestination {dst:?}");
    assert_eq!(svc.conns, 3);
    assert!(svc.inpkts >= 3 * 5 && svc.outpkts >= 3 * 4, "{svc:?}");
    assert!(svc.inbytes > 0 && svc.outbytes > svc.inbytes, "{svc:?}");
    assert_eq!(
        counters(&svc),
        ipvsadm_counters(&format!("TCP  {VIP}:{VPORT}"))
    );
    assert_eq!(counters(&dst), ipvsadm_counters("-> 192.168.20.2:80"));
    assert_eq!(counters(&svc), counters(&dst), "one destination");
    // The table read carries the same counters.
    let table = ipvs.dump_all().unwrap();
    assert_eq!(table[0].service.stats.conns, 3);
    assert_eq!(table[0].destinations[0].stats.conns, 3);

    ipvs.zero_service(&key).unwrap();
    assert_eq!(counters(&ipvs.service(&key).unwrap().stats), [0; 5]);
    assert_eq!(ipvsadm_counters(&format!("TCP  {VIP}:{VPORT}")), [0; 5]);
    teardown_namespaces(&VIP.to_string());
    reset();
}

/// Send one request on a raw socket and return the payloads (generic header
/// included) of the replies carrying data.
fn raw_exchange(family: u16, msg: IpvsMessage, dump: bool) -> Vec<Vec<u8>> {
    let mut sock = Socket::new(NETLINK_GENERIC).unwrap();
    sock.bind_auto().unwrap();
    sock.connect(&SocketAddr::new(0, 0)).unwrap();
    let mut req = Vec::new();
    let flags = if dump {
        NLM_F_REQUEST | NLM_F_DUMP
    } else {
        NLM_F_REQUEST | NLM_F_ACK
    };
    emit_request(&mut req, family, 1, flags, msg);
    sock.send(&req, 0).unwrap();
    let mut out = Vec::new();
    loop {
        let mut buf = Vec::with_capacity(65536);
        sock.recv(&mut buf, 0).unwrap();
        let mut off = 0;
        while off + 16 <= buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            match kind {
                2 | 3 => return out, // ack / error / done
                _ => out.push(buf[off + 16..off + len].to_vec()),
            }
            off += (len + 3) & !3;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join("")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
#[ignore = "needs the kernel lab"]
fn capture_kernel_reply_bytes() {
    reset();
    ipvsadm("-A -t 10.0.0.1:80 -s rr -p 300 -M 255.255.255.0");
    ipvsadm("-a -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 2 -x 9 -y 4");
    ipvsadm("-A -f 7 -6 -s sh -b sh-port -p 60 -M 64");
    ipvsadm("--set 900 120 300");
    let family = Client::new().unwrap().family_id();
    let key = ServiceKey::tcp(Ipv4Addr::new(10, 0, 0, 1), 80);

    let svc = raw_exchange(family, Read::Service(key).message(), false);
    println!("GET_SERVICE reply:\n{}", hex(&svc[0]));
    let fwm = raw_exchange(
        family,
        Read::Service(ServiceKey::fwmark(AddressFamily::Inet6, 7)).message(),
        false,
    );
    println!("GET_SERVICE FWM 7 IPv6 reply:\n{}", hex(&fwm[0]));
    let dests = raw_exchange(family, Read::Destinations(key).message(), true);
    println!("GET_DEST dump reply:\n{}", hex(&dests[0]));
    let timeouts = raw_exchange(family, Read::Timeouts.message(), false);
    println!("GET_CONFIG reply:\n{}", hex(&timeouts[0]));
    let info = raw_exchange(family, Read::Info.message(), false);
    println!("GET_INFO reply:\n{}", hex(&info[0]));

    let msg = parse_reply(family, &svc[0]).unwrap();
    let entry = service::parse_entry(msg.service().unwrap()).unwrap();
    assert_eq!(
        entry.service,
        Service::new(key, "rr")
            .persistent(300)
            .with_netmask(kipvs_ipvs::Netmask::v4_prefix(24))
    );
    let msg = parse_reply(family, &dests[0]).unwrap();
    let d = dest::parse_entry(msg.dest().unwrap(), AddressFamily::Inet).unwrap();
    assert_eq!(d.destination.weight, 2);
    assert_eq!(
        (d.destination.upper_threshold, d.destination.lower_threshold),
        (9, 4)
    );
    reset();
}
