//! The table against the real kernel's nftables, through the real `nft`
//! binary: written, read back, updated element by element, and a refused
//! transaction leaves everything as it was. Run by `cargo xtask vm test`.

use kipvs_nft::*;
use std::collections::BTreeSet;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

fn elements(vip: &str, endpoints: &[&str]) -> BTreeSet<Element> {
    let vs = Vs::new(ip(vip), Proto::Tcp, 80);
    let mut out: BTreeSet<Element> = [
        Element::VipAddress(vs.addr),
        Element::VipPort(vs),
        Element::ClusterPort(vs),
        Element::LbRestricted(vs),
        Element::LbAllowed(vs, net("192.168.0.0/16")),
        Element::LbAllowed(vs, net("10.9.9.9/32")),
        Element::HealthCheckPort(30100),
        Element::Owned(vs),
        Element::Owned(Vs::new(ip("fd00::10"), Proto::Udp, 53)),
        Element::VipAddress(ip("fd00::10")),
        Element::ExternalPort(Vs::new(ip("fd00::10"), Proto::Udp, 53)),
        Element::LbAllowed(Vs::new(ip("fd00::10"), Proto::Udp, 53), net("fd01::/64")),
    ]
    .into();
    out.extend(
        endpoints
            .iter()
            .map(|e| Element::Hairpin(Vs::new(ip(e), Proto::Tcp, 9376))),
    );
    out
}

#[test]
#[ignore = "needs the kernel lab"]
fn firewall_table_is_written_read_back_and_updated_by_elements() {
    let mut nft = Nft::default();
    nft.delete_table().unwrap();
    assert_eq!(nft.read().unwrap(), None);
    let skeleton = Skeleton {
        local: LocalTraffic::ClusterCidrs(vec![net("10.244.0.0/16")]),
        ..Skeleton::default()
    };
    let a = elements("10.96.0.10", &["10.244.1.2", "10.244.2.2"]);
    nft.apply(&replace_script(&skeleton, &a)).unwrap();
    let read = nft.read().unwrap().expect("the table exists");
    assert_eq!(read.comment, Some(skeleton.fingerprint()));
    assert_eq!(read.elements, a);
    assert!(read.unknown_sets.is_empty());

    // Replacing again is atomic and idempotent.
    nft.apply(&replace_script(&skeleton, &a)).unwrap();
    assert_eq!(nft.read().unwrap().unwrap().elements, a);

    let b = elements("10.96.0.10", &["10.244.2.2", "10.244.3.2"]);
    let diff = ElementDiff::between(&a, &b);
    assert_eq!(diff.len(), 2);
    nft.apply(&update_script(&diff)).unwrap();
    assert_eq!(nft.read().unwrap().unwrap().elements, b);

    // Deleting an element that is not there refuses the whole transaction.
    let bad = ElementDiff {
        add: [Element::HealthCheckPort(31000)].into(),
        delete: [Element::VipAddress(ip("10.96.9.9"))].into(),
    };
    let err = nft.apply(&update_script(&bad)).unwrap_err();
    assert!(matches!(err, NftError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("10.96.9.9"), "{err}");
    assert_eq!(nft.read().unwrap().unwrap().elements, b);

    nft.delete_table().unwrap();
    assert_eq!(nft.read().unwrap(), None);
}

fn nft_list(set: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "set", "inet", "kipvs", set])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The in-process writer's elements are the ones `nft` itself writes: read
/// back equal through `nft -j`, and listed by `nft` as it spells them.
#[test]
#[ignore = "needs the kernel lab"]
fn netlink_elements_are_what_nft_reads_back() {
    let mut nft = Nft::default();
    nft.delete_table().unwrap();
    let skeleton = Skeleton::default();
    // The skeleton and the interval set's elements by nft, the rest by
    // netlink, as the agent writes a fresh table.
    let a = elements("10.96.0.10", &["10.244.1.2", "10.244.2.2"]);
    let (by_netlink, by_nft): (BTreeSet<Element>, BTreeSet<Element>) =
        a.iter().cloned().partition(netlink::supported);
    assert!(by_netlink.contains(&Element::VipAddress(ip("fd00::10"))));
    nft.apply(&replace_script(&skeleton, &by_nft)).unwrap();
    let mut socket = netlink::ElementSocket::open().unwrap();
    socket
        .apply(&ElementDiff {
            add: by_netlink.clone(),
            delete: BTreeSet::new(),
        })
        .unwrap();
    assert_eq!(nft.read().unwrap().unwrap().elements, a);
    for (set, element) in [
        // The lab has no /etc/protocols: nft prints protocol numbers.
        ("hairpin-v4", "10.244.1.2 . 6 . 9376 . 10.244.1.2"),
        ("hc-ports", "30100"),
        ("external-ports-v6", "fd00::10 . 17 . 53"),
    ] {
        let listed = nft_list(set);
        assert!(listed.contains(element), "{set} lacks {element}: {listed}");
    }

    // An update: deletions and additions in one transaction.
    let b = elements("10.96.0.10", &["10.244.2.2", "10.244.3.2"]);
    socket.apply(&ElementDiff::between(&a, &b)).unwrap();
    assert_eq!(nft.read().unwrap().unwrap().elements, b);

    // A refused message refuses the whole batch, and names itself.
    let bad = ElementDiff {
        add: [Element::HealthCheckPort(31000)].into(),
        delete: [Element::VipAddress(ip("10.96.9.9"))].into(),
    };
    let err = socket.apply(&bad).unwrap_err().to_string();
    assert!(
        err.contains("delete of 1 element(s) of vip-addrs-v4"),
        "{err}"
    );
    assert_eq!(nft.read().unwrap().unwrap().elements, b);
    // The socket is still good after a refusal.
    socket
        .apply(&ElementDiff {
            add: [Element::HealthCheckPort(31000)].into(),
            delete: BTreeSet::new(),
        })
        .unwrap();
    assert!(nft_list("hc-ports").contains("31000"));

    // 130,000 elements, as at 10,000 Services × 10 endpoints, in one batch.
    let mut many = BTreeSet::new();
    for s in 0..10_000u32 {
        let vip = IpAddr::from(std::net::Ipv4Addr::from(0x0a60_0000 + s));
        let vs = Vs::new(vip, Proto::Tcp, 80);
        many.extend([
            Element::VipAddress(vip),
            Element::VipPort(vs),
            Element::ClusterPort(vs),
        ]);
        for e in 0..10 {
            let ep = IpAddr::from(std::net::Ipv4Addr::from(0x0af4_0000 + s * 10 + e));
            many.insert(Element::Hairpin(Vs::new(ep, Proto::Tcp, 8080)));
        }
    }
    socket
        .apply(&ElementDiff {
            add: many.clone(),
            delete: BTreeSet::new(),
        })
        .unwrap();
    let t = std::time::Instant::now();
    let read = nft.read().unwrap().unwrap().elements;
    let by_nft = t.elapsed();
    assert!(many.is_subset(&read), "every element is in the table");
    let mut all = b.clone();
    all.insert(Element::HealthCheckPort(31000));
    all.extend(many);
    assert_eq!(read, all);

    // Read back the way the agent's resync does: the skeleton by nft
    // --terse, every set but the interval one dumped over netlink.
    let t = std::time::Instant::now();
    let skeleton_read = nft.read_skeleton().unwrap().unwrap();
    assert!(
        skeleton_read.elements.is_empty(),
        "--terse lists no elements"
    );
    assert_eq!(
        skeleton_read.sets,
        kipvs_nft::SetName::all().collect::<BTreeSet<_>>()
    );
    let mut dumped = BTreeSet::new();
    for set in kipvs_nft::SetName::all() {
        if set.kind == kipvs_nft::element::SetKind::LbAllowed {
            dumped.extend(nft.read_set(set).unwrap());
        } else {
            dumped.extend(socket.dump(set).unwrap());
        }
    }
    let by_dump = t.elapsed();
    assert_eq!(dumped, all);
    eprintln!(
        "reading {} elements back: nft -j list {by_nft:?}, nft -t + netlink dumps {by_dump:?}",
        all.len()
    );
    nft.delete_table().unwrap();
}

/// Every local-traffic detector's skeleton is one nft accepts, and reads
/// back as kipvs's own (its fingerprint).
#[test]
#[ignore = "needs the kernel lab"]
fn every_local_traffic_detector_is_accepted_by_nft() {
    let mut nft = Nft::default();
    for local in [
        LocalTraffic::ClusterCidrs(vec![net("10.244.0.0/16"), net("fd00:10::/56")]),
        LocalTraffic::NodeCidrs(vec![net("10.244.7.0/24")]),
        LocalTraffic::BridgeInterface("cbr0".into()),
        LocalTraffic::InterfaceNamePrefix("veth".into()),
    ] {
        let skeleton = Skeleton {
            local: local.clone(),
            ..Skeleton::default()
        };
        let els = elements("10.96.0.10", &["10.244.1.2"]);
        nft.apply(&replace_script(&skeleton, &els))
            .unwrap_or_else(|e| panic!("{local:?}: {e}"));
        let read = nft.read().unwrap().expect("the table exists");
        assert_eq!(read.comment, Some(skeleton.fingerprint()), "{local:?}");
        assert_eq!(read.elements, els, "{local:?}");
    }
    nft.delete_table().unwrap();
}
