use super::*;
use proptest::prelude::*;
use std::net::IpAddr;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().unwrap()
}

fn vs(a: &str, proto: Proto, port: u16) -> Vs {
    Vs::new(ip(a), proto, port)
}

#[test]
fn elements_render_as_nft_spells_them() {
    let cases = [
        (
            Element::VipAddress(ip("10.96.0.1")),
            "vip-addrs-v4",
            "10.96.0.1",
        ),
        (
            Element::VipAddress(ip("fd00::1")),
            "vip-addrs-v6",
            "fd00::1",
        ),
        (
            Element::VipPort(vs("10.96.0.1", Proto::Tcp, 80)),
            "vip-ports-v4",
            "10.96.0.1 . tcp . 80",
        ),
        (
            Element::ExternalPort(vs("fd00::1", Proto::Sctp, 9)),
            "external-ports-v6",
            "fd00::1 . sctp . 9",
        ),
        (
            Element::Hairpin(vs("10.244.1.2", Proto::Udp, 53)),
            "hairpin-v4",
            "10.244.1.2 . udp . 53 . 10.244.1.2",
        ),
        (
            Element::LbAllowed(vs("1.2.3.4", Proto::Tcp, 443), net("192.168.0.0/16")),
            "lb-allowed-v4",
            "1.2.3.4 . tcp . 443 . 192.168.0.0/16",
        ),
        (
            Element::LbAllowed(vs("1.2.3.4", Proto::Tcp, 443), net("192.168.7.7/32")),
            "lb-allowed-v4",
            "1.2.3.4 . tcp . 443 . 192.168.7.7",
        ),
        (Element::HealthCheckPort(30123), "hc-ports", "30123"),
        (
            Element::Owned(vs("192.168.50.1", Proto::Tcp, 35000)),
            "owned-v4",
            "192.168.50.1 . tcp . 35000",
        ),
    ];
    for (e, set, text) in cases {
        assert_eq!(e.set().to_string(), set, "{e:?}");
        assert_eq!(e.render(), text, "{e:?}");
    }
}

#[test]
fn set_names_round_trip() {
    let names: Vec<String> = SetName::all().map(|n| n.to_string()).collect();
    assert_eq!(names.len(), 17);
    for n in SetName::all() {
        assert_eq!(SetName::parse(&n.to_string()), Some(n));
    }
    assert_eq!(SetName::parse("KUBE-CLUSTER-IP"), None);
}

/// What nft 1.0.6 printed for such a table in a network namespace.
#[cfg(feature = "kernel")]
const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "kipvs", "handle": 1, "comment": "kipvs skeleton 00"}}, {"set": {"family": "inet", "name": "lb-allowed-v4", "table": "kipvs", "type": ["ipv4_addr", "inet_proto", "inet_service", "ipv4_addr"], "handle": 1, "flags": ["interval"], "elem": [{"concat": ["10.0.0.1", "tcp", 80, {"prefix": {"addr": "10.1.0.0", "len": 16}}]}, {"concat": ["10.0.0.1", "udp", 53, "1.2.3.4"]}]}}, {"set": {"family": "inet", "name": "hc-ports", "table": "kipvs", "type": "inet_service", "handle": 2, "elem": [30123]}}, {"set": {"family": "inet", "name": "hairpin-v4", "table": "kipvs", "type": ["ipv4_addr", "inet_proto", "inet_service", "ipv4_addr"], "handle": 3, "elem": [{"concat": ["10.244.1.2", "tcp", 9376, "10.244.1.2"]}]}}]}"#;

#[test]
#[cfg(feature = "kernel")]
fn a_listed_table_parses_to_its_elements() {
    let t = exec::parse_table(LISTED).unwrap().unwrap();
    assert_eq!(t.comment.as_deref(), Some("kipvs skeleton 00"));
    let want: BTreeSet<Element> = [
        Element::LbAllowed(vs("10.0.0.1", Proto::Tcp, 80), net("10.1.0.0/16")),
        Element::LbAllowed(vs("10.0.0.1", Proto::Udp, 53), net("1.2.3.4/32")),
        Element::HealthCheckPort(30123),
        Element::Hairpin(vs("10.244.1.2", Proto::Tcp, 9376)),
    ]
    .into();
    assert_eq!(t.elements, want);
    assert!(t.unknown_sets.is_empty());
}

#[test]
#[cfg(feature = "kernel")]
fn a_foreign_element_is_an_error_naming_it() {
    let json = r#"{"nftables": [{"table": {"family": "inet", "name": "kipvs"}}, {"set": {"name": "hairpin-v4", "elem": [{"concat": ["10.244.1.2", "tcp", 9376, "10.244.1.3"]}]}}]}"#;
    let err = exec::parse_table(json).unwrap_err().to_string();
    assert!(err.contains("hairpin-v4"), "{err}");
    assert!(err.contains("10.244.1.3"), "{err}");
    let none = r#"{"nftables": [{"table": {"family": "ip", "name": "kipvs"}}]}"#;
    assert_eq!(exec::parse_table(none).unwrap(), None);
}

#[test]
fn an_update_touches_only_changed_elements_grouped_by_set() {
    let have: BTreeSet<Element> = [
        Element::VipAddress(ip("10.96.0.1")),
        Element::Hairpin(vs("10.244.1.2", Proto::Tcp, 80)),
    ]
    .into();
    let want: BTreeSet<Element> = [
        Element::VipAddress(ip("10.96.0.1")),
        Element::Hairpin(vs("10.244.1.3", Proto::Tcp, 80)),
        Element::Hairpin(vs("10.244.1.4", Proto::Tcp, 80)),
    ]
    .into();
    let d = ElementDiff::between(&have, &want);
    assert_eq!(d.len(), 3);
    assert_eq!(
        update_script(&d),
        "delete element inet kipvs hairpin-v4 { 10.244.1.2 . tcp . 80 . 10.244.1.2 }\n\
         add element inet kipvs hairpin-v4 { 10.244.1.3 . tcp . 80 . 10.244.1.3, \
         10.244.1.4 . tcp . 80 . 10.244.1.4 }\n"
    );
    assert_eq!(update_script(&ElementDiff::between(&want, &want)), "");
}

#[test]
fn the_replace_script_is_one_atomic_transaction() {
    let s = replace_script(&Skeleton::default(), &[Element::HealthCheckPort(1)].into());
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "add table inet kipvs");
    assert_eq!(lines[1], "delete table inet kipvs");
    assert_eq!(lines[2], "table inet kipvs {");
    assert!(lines[3].contains(&Skeleton::default().fingerprint()));
    assert_eq!(lines.last(), Some(&"add element inet kipvs hc-ports { 1 }"));
}

#[test]
fn the_skeleton_follows_the_configuration() {
    let plain = Skeleton::default().render();
    assert!(plain.contains(
        "ip saddr . meta l4proto . th dport @cluster-ports-v4 meta mark set meta mark | 0x4000"
    ));
    let all = Skeleton {
        masquerade_all: true,
        ..Skeleton::default()
    };
    assert!(
        all.render()
            .contains("ip daddr . meta l4proto . th dport @cluster-ports-v4 meta mark")
    );
    let cidr = Skeleton {
        local: LocalTraffic::ClusterCidrs(vec![net("10.244.3.4/16")]),
        ..Skeleton::default()
    };
    let r = cidr.render();
    assert!(
        r.contains(
            "ip saddr != { 10.244.0.0/16 } ip daddr . meta l4proto . th dport @cluster-ports-v4"
        ),
        "{r}"
    );
    // No IPv6 CIDR: IPv6 falls back to VIP sources.
    assert!(
        r.contains("ip6 saddr . meta l4proto . th dport @cluster-ports-v6"),
        "{r}"
    );
    let fps: BTreeSet<String> = [&Skeleton::default(), &all, &cidr]
        .iter()
        .map(|s| s.fingerprint())
        .collect();
    assert_eq!(fps.len(), 3);
    assert!(plain.contains("masquerade fully-random"));
}

#[test]
fn each_local_traffic_detector_renders_its_masquerade_rule() {
    let render = |local: LocalTraffic| {
        Skeleton {
            local,
            ..Skeleton::default()
        }
        .render()
    };
    let rule = |r: &str, fam: &str| -> String {
        r.lines()
            .find(|l| l.contains(&format!("@cluster-ports-{fam} ")) && l.contains("mark set"))
            .unwrap_or_else(|| panic!("no cluster-ports-{fam} rule in {r}"))
            .trim()
            .to_string()
    };
    let mark = "meta mark set meta mark | 0x4000";
    let cases = [
        (
            LocalTraffic::ClusterCidrs(vec![net("10.244.0.0/16"), net("fd00:10::/56")]),
            format!(
                "ip saddr != {{ 10.244.0.0/16 }} ip daddr . meta l4proto . th dport @cluster-ports-v4 {mark}"
            ),
            format!(
                "ip6 saddr != {{ fd00:10::/56 }} ip6 daddr . meta l4proto . th dport @cluster-ports-v6 {mark}"
            ),
        ),
        // The node's podCIDRs: the same rule over other CIDRs; a family
        // without one falls back to VIP sources.
        (
            LocalTraffic::NodeCidrs(vec![net("10.244.7.0/24")]),
            format!(
                "ip saddr != {{ 10.244.7.0/24 }} ip daddr . meta l4proto . th dport @cluster-ports-v4 {mark}"
            ),
            format!("ip6 saddr . meta l4proto . th dport @cluster-ports-v6 {mark}"),
        ),
        (
            LocalTraffic::BridgeInterface("cbr0".into()),
            format!(
                "iifname != \"cbr0\" ip daddr . meta l4proto . th dport @cluster-ports-v4 {mark}"
            ),
            format!(
                "iifname != \"cbr0\" ip6 daddr . meta l4proto . th dport @cluster-ports-v6 {mark}"
            ),
        ),
        (
            LocalTraffic::InterfaceNamePrefix("veth".into()),
            format!(
                "iifname != \"veth*\" ip daddr . meta l4proto . th dport @cluster-ports-v4 {mark}"
            ),
            format!(
                "iifname != \"veth*\" ip6 daddr . meta l4proto . th dport @cluster-ports-v6 {mark}"
            ),
        ),
        // A name the table cannot hold is no detector (VIP sources).
        (
            LocalTraffic::InterfaceNamePrefix("ve\"th".into()),
            format!("ip saddr . meta l4proto . th dport @cluster-ports-v4 {mark}"),
            format!("ip6 saddr . meta l4proto . th dport @cluster-ports-v6 {mark}"),
        ),
    ];
    let mut fps = BTreeSet::new();
    for (local, v4, v6) in cases {
        let r = render(local.clone());
        assert_eq!(rule(&r, "v4"), v4, "{local:?}");
        assert_eq!(rule(&r, "v6"), v6, "{local:?}");
        fps.insert(
            Skeleton {
                local,
                ..Skeleton::default()
            }
            .fingerprint(),
        );
    }
    // Every detector is its own table, but ClusterCIDR and NodeCIDR over
    // the same CIDRs are one.
    assert_eq!(fps.len(), 5);
    let cidrs = vec![net("10.244.0.0/16")];
    assert_eq!(
        render(LocalTraffic::ClusterCidrs(cidrs.clone())),
        render(LocalTraffic::NodeCidrs(cidrs))
    );
}

#[test]
fn interface_names_the_table_can_hold() {
    for ok in ["veth", "cbr0", "cali", "lxc", "br-1.2_x", "a23456789012345"] {
        assert!(interface_name_ok(ok), "{ok}");
    }
    for bad in [
        "",
        "a234567890123456",
        "ve th",
        "ve\"th",
        "ve*",
        "a\\b",
        "a/b",
        "é",
    ] {
        assert!(!interface_name_ok(bad), "{bad}");
    }
}

fn arb_vs() -> impl Strategy<Value = Vs> {
    (any::<[u8; 4]>(), 0..3u8, any::<u16>()).prop_map(|(a, p, port)| {
        let proto = [Proto::Tcp, Proto::Udp, Proto::Sctp][p as usize];
        Vs::new(IpAddr::from(a), proto, port)
    })
}

fn arb_element() -> impl Strategy<Value = Element> {
    prop_oneof![
        any::<[u8; 16]>().prop_map(|a| Element::VipAddress(IpAddr::from(a))),
        arb_vs().prop_map(Element::VipPort),
        arb_vs().prop_map(Element::Hairpin),
        (arb_vs(), any::<[u8; 4]>(), 0..=32u8).prop_map(|(v, a, l)| {
            Element::LbAllowed(v, ipnet::Ipv4Net::new_assert(a.into(), l).trunc().into())
        }),
        any::<u16>().prop_map(Element::HealthCheckPort),
        arb_vs().prop_map(Element::Owned),
    ]
}

proptest! {
    #[test]
    fn a_diff_applied_to_a_gives_b(
        a in proptest::collection::btree_set(arb_element(), 0..30),
        b in proptest::collection::btree_set(arb_element(), 0..30),
    ) {
        let d = ElementDiff::between(&a, &b);
        let mut got = a.clone();
        d.apply_to(&mut got);
        prop_assert_eq!(&got, &b);
        prop_assert!(d.add.is_disjoint(&d.delete));
        prop_assert_eq!(d.len(), a.symmetric_difference(&b).count());
    }
}
