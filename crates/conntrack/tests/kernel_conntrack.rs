//! The ctnetlink client against the kernel's conntrack table in the lab:
//! entries inserted with `conntrack -I` (IPv4 and IPv6, with translated
//! reply tuples as IPVS leaves them) and a real UDP flow over loopback are
//! dumped, matched by filter and deleted, and the kernel's own view
//! (`conntrack -L`) agrees. Run by `cargo xtask vm test conntrack_`;
//! ignored on the host.

use kipvs_conntrack::{Conntrack, Family, Filter, IPPROTO_UDP};
use std::net::{IpAddr, UdpSocket};
use std::process::Command;

fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Inserts a UDP entry: `src:sport → dst:dport`, answered by `rsrc:rport`
/// (`conntrack -I` takes the family from the addresses).
fn insert(src: &str, dst: &str, sport: u16, dport: u16, rsrc: &str, rport: u16) {
    sh(&format!(
        "conntrack -I -p udp -s {src} -d {dst} --sport {sport} --dport {dport} \
         -r {rsrc} -q {src} --reply-port-src {rport} --reply-port-dst {sport} --timeout 120"
    ));
}

#[test]
#[ignore = "needs the kernel lab"]
fn conntrack_dump_filter_delete_agree_with_the_kernel() {
    let _ = Command::new("conntrack").arg("-F").output();
    // A Service 10.96.0.10:53 whose flows went to 10.244.1.2 and 10.244.2.2,
    // one flow that went nowhere (no endpoint: reply from the VIP), a TCP
    // flow to the same address, and IPv6 flows.
    insert("10.244.9.2", "10.96.0.10", 40001, 53, "10.244.1.2", 5353);
    insert("10.244.9.2", "10.96.0.10", 40002, 53, "10.244.1.2", 5353);
    insert("10.244.9.2", "10.96.0.10", 40003, 53, "10.244.2.2", 5353);
    insert("10.244.9.2", "10.96.0.10", 40004, 53, "10.96.0.10", 53);
    sh(
        "conntrack -I -p tcp -s 10.244.9.2 -d 10.96.0.10 --sport 40005 --dport 53 \
        -r 10.244.1.2 -q 10.244.9.2 --reply-port-src 5353 --reply-port-dst 40005 \
        --state ESTABLISHED --timeout 120",
    );
    insert("fd00::9", "fd00:96::a", 40006, 53, "fd00:244::1", 5353);
    insert("fd00::9", "fd00:96::a", 40007, 53, "fd00:244::2", 5353);

    let mut ct = Conntrack::open().expect("a ctnetlink socket");
    let v4 = ct.dump(Family::V4).expect("IPv4 dump");
    let v6 = ct.dump(Family::V6).expect("IPv6 dump");
    assert_eq!(v4.len(), 5, "{v4:#?}");
    assert_eq!(v6.len(), 2, "{v6:#?}");
    let first = v4
        .iter()
        .find(|f| f.orig.src_port == 40001)
        .expect("the first flow");
    assert_eq!(first.protocol, IPPROTO_UDP);
    assert_eq!(first.orig.dst, ip("10.96.0.10"));
    assert_eq!(first.orig.dst_port, 53);
    assert_eq!(first.reply.src, ip("10.244.1.2"));
    assert_eq!(first.reply.src_port, 5353);
    assert_eq!(first.reply.dst_port, 40001);
    assert!(
        v4.iter()
            .any(|f| f.orig.src_port == 40004 && f.untranslated())
    );

    // The endpoint 10.244.1.2:5353 left: its two UDP flows go, the TCP one
    // and the other endpoint's stay.
    let gone = Filter {
        orig_dst: Some(ip("10.96.0.10")),
        orig_dst_port: Some(53),
        reply_src: Some(ip("10.244.1.2")),
        reply_src_port: Some(5353),
        ..Filter::protocol(IPPROTO_UDP)
    };
    let cleared = ct.clear(&[gone]).expect("clear");
    assert_eq!((cleared.matched, cleared.deleted), (2, 2));
    assert!(cleared.errors.is_empty(), "{:?}", cleared.errors);
    let listed = sh("conntrack -L -f ipv4 2>/dev/null");
    assert!(!listed.contains("sport=40001"), "{listed}");
    assert!(!listed.contains("sport=40002"), "{listed}");
    for kept in ["sport=40003", "sport=40004", "sport=40005"] {
        assert!(listed.contains(kept), "{kept} kept:\n{listed}");
    }

    // The Service gained endpoints: the flow that went nowhere goes.
    let gained = Filter {
        orig_dst: Some(ip("10.96.0.10")),
        orig_dst_port: Some(53),
        untranslated: true,
        ..Filter::protocol(IPPROTO_UDP)
    };
    let cleared = ct.clear(&[gained]).expect("clear");
    assert_eq!(cleared.deleted, 1);
    let listed = sh("conntrack -L -f ipv4 2>/dev/null");
    assert!(!listed.contains("sport=40004"), "{listed}");
    assert!(listed.contains("sport=40003"), "{listed}");

    // IPv6, by reply source only.
    let v6_gone = Filter {
        reply_src: Some(ip("fd00:244::1")),
        ..Filter::protocol(IPPROTO_UDP)
    };
    assert_eq!(ct.clear(&[v6_gone]).expect("clear").deleted, 1);
    let listed = sh("conntrack -L -f ipv6 2>/dev/null");
    assert!(!listed.contains("sport=40006"), "{listed}");
    assert!(listed.contains("sport=40007"), "{listed}");

    // Deleting what is already gone is not an error.
    let stale = v4.iter().find(|f| f.orig.src_port == 40001).unwrap();
    let r = ct.delete(&[*stale]);
    assert!(r[0].is_ok(), "{r:?}");
    let _ = Command::new("conntrack").arg("-F").output();
}

#[test]
#[ignore = "needs the kernel lab"]
fn conntrack_sees_and_deletes_a_real_udp_flow() {
    let _ = Command::new("conntrack").arg("-F").output();
    // Track loopback traffic: a ct expression makes the kernel track this
    // namespace's IPv4 flows.
    sh("nft add table ip ct-lab && \
        nft add chain ip ct-lab out '{ type filter hook output priority 0; }' && \
        nft add rule ip ct-lab out ct state new counter");
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (sport, dport) = (
        client.local_addr().unwrap().port(),
        server.local_addr().unwrap().port(),
    );
    client
        .send_to(b"ping", server.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 16];
    let (_, from) = server.recv_from(&mut buf).unwrap();
    server.send_to(b"pong", from).unwrap();
    client.recv_from(&mut buf).unwrap();

    let mut ct = Conntrack::open().unwrap();
    let flows = ct.dump(Family::V4).unwrap();
    let mine = |f: &&kipvs_conntrack::Flow| f.orig.src_port == sport && f.orig.dst_port == dport;
    let flow = flows
        .iter()
        .find(mine)
        .unwrap_or_else(|| panic!("{flows:#?}"));
    assert_eq!(flow.protocol, IPPROTO_UDP);
    assert!(flow.untranslated());
    assert!(
        sh("conntrack -L -p udp 2>/dev/null").contains(&format!("sport={sport} dport={dport}"))
    );
    let filter = Filter {
        orig_dst_port: Some(dport),
        ..Filter::protocol(IPPROTO_UDP)
    };
    let cleared = ct.clear(&[filter]).unwrap();
    assert_eq!(cleared.deleted, 1);
    assert!(!ct.dump(Family::V4).unwrap().iter().any(|f| mine(&f)));
    assert!(
        !sh("conntrack -L -p udp 2>/dev/null").contains(&format!("sport={sport} dport={dport}"))
    );
    sh("nft delete table ip ct-lab");
}
