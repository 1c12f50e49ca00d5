//! The table against the real kernel's nftables, through the real `nft`
//! binary: written, read back, updated element by element, and a refused
//! transaction leaves everything as it was. Run by `cargo xtask vm test`.

use kipvs_nft::*;
use std::collections::BTreeSet;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn elements(vip: &str, endpoints: &[&str]) -> BTreeSet<Element> {
    let vs = Vs::new(ip(vip), Proto::Tcp, 80);
    let mut out: BTreeSet<Element> = [
        Element::VipAddress(vs.addr),
        Element::VipPort(vs),
        Element::ClusterPort(vs),
        Element::LbRestricted(vs),
        Element::LbAllowed(vs, ip("192.168.0.0"), 16),
        Element::LbAllowed(vs, ip("10.9.9.9"), 32),
        Element::HealthCheckPort(30100),
        Element::VipAddress(ip("fd00::10")),
        Element::ExternalPort(Vs::new(ip("fd00::10"), Proto::Udp, 53)),
        Element::LbAllowed(Vs::new(ip("fd00::10"), Proto::Udp, 53), ip("fd01::"), 64),
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
        cluster_cidrs: vec![(ip("10.244.0.0"), 16)],
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
