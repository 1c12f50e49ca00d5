//! Rule lines as ipvsadm 1.31 reads them, and `parse_rules(save(t))`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::{list, save};
use kipvs_ipvs::DestinationKey;
use kipvs_ipvs::{DestinationEntry, Info, ServiceEntry, Stats, TableEntry};

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn one(line: &str) -> Rule {
    match parse_rule_line(line) {
        Ok(Some(r)) => r,
        other => panic!("{line}: {other:?}"),
    }
}

fn fails(line: &str) -> RuleErrorKind {
    match parse_rule_line(line) {
        Err(e) => e,
        other => panic!("{line}: {other:?}"),
    }
}

fn web() -> ServiceKey {
    ServiceKey::tcp(v4(10, 0, 0, 1), 80)
}

#[test]
fn reads_what_ipvsadm_saves() {
    let text = "\
-A -t 10.0.0.1:80 -s rr
-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3
-a -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 1
-a -t 10.0.0.1:80 -r 10.1.0.3:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 10.0.0.1:80 -r 10.1.0.4:80 -i -w 1 --tun-type gre --tun-csum
-A -u [fd00::1]:53 -s wlc -o
-a -u [fd00::1]:53 -r [fd00::2]:53 -m -w 1
-A -t [fd00::1]:80 -s rr
-a -t [fd00::1]:80 -r 10.1.0.5:80 -i -w 1 --tun-type ipip
-A -f 5 -s rr -p 300 -M 255.255.255.0
-A -f 6 -6 -s rr -p 60 -M 64
-A --sctp-service 10.0.0.2:9000 -s sh -b sh-fallback,sh-port
-A -t 10.0.0.3:443 -s mh -b mh-port
-A -u 10.0.0.4:5060 -s rr -p 100 --pe sip
";
    let rules = parse_rules(text).unwrap();
    assert_eq!(rules.len(), 14);
    assert_eq!(rules[0], Rule::AddService(Service::new(web(), "rr")));
    assert_eq!(
        rules[1],
        Rule::AddDestination {
            service: web(),
            destination: Destination::new(v4(10, 1, 0, 1), 8080).with_weight(3),
        }
    );
    assert_eq!(
        rules[2],
        Rule::AddDestination {
            service: web(),
            destination: Destination::new(v4(10, 1, 0, 2), 80).with_forward(Forward::Route),
        }
    );
    let mut gue = Destination::new(v4(10, 1, 0, 3), 80).with_forward(Forward::Tunnel);
    gue.tunnel_type = TunnelType::Gue;
    gue.tunnel_port = 6080;
    assert_eq!(
        rules[3],
        Rule::AddDestination {
            service: web(),
            destination: gue,
        }
    );
    let Rule::AddDestination { destination, .. } = &rules[4] else {
        panic!()
    };
    assert_eq!(
        (destination.tunnel_type, destination.tunnel_flags),
        (TunnelType::Gre, TunnelFlags::CSUM)
    );
    assert_eq!(
        rules[5],
        Rule::AddService(
            Service::new(ServiceKey::udp(v6("fd00::1"), 53), "wlc")
                .with_flags(ServiceFlags::ONE_PACKET)
        )
    );
    assert_eq!(
        rules[9],
        Rule::AddService(
            Service::new(ServiceKey::fwmark(AddressFamily::Inet, 5), "rr")
                .persistent(300)
                .with_netmask(Netmask::v4_prefix(24))
        )
    );
    assert_eq!(
        rules[10],
        Rule::AddService(
            Service::new(ServiceKey::fwmark(AddressFamily::Inet6, 6), "rr")
                .persistent(60)
                .with_netmask(Netmask::V6(64))
        )
    );
    assert_eq!(
        rules[11],
        Rule::AddService(
            Service::new(ServiceKey::sctp(v4(10, 0, 0, 2), 9000), "sh")
                .with_flags(ServiceFlags::SCHED1 | ServiceFlags::SCHED2)
        )
    );
    let mut sip = Service::new(ServiceKey::udp(v4(10, 0, 0, 4), 5060), "rr").persistent(100);
    sip.persistence_engine = Some("sip".into());
    assert_eq!(rules[13], Rule::AddService(sip));
}

#[test]
fn ipvsadm_defaults() {
    // No -s: wlc. No -w: 1. No forwarding method: direct routing, with the
    // service's port. No port: the service's.
    assert_eq!(
        one("-A -t 10.0.0.1:80"),
        Rule::AddService(Service::new(web(), "wlc"))
    );
    assert_eq!(
        one("-a -t 10.0.0.1:80 -r 10.1.0.9"),
        Rule::AddDestination {
            service: web(),
            destination: Destination::new(v4(10, 1, 0, 9), 80).with_forward(Forward::Route),
        }
    );
    // DR and tunnels take the service's port, whatever is written.
    let Rule::AddDestination { destination, .. } = one("-a -t 10.0.0.1:80 -r 10.1.0.9:8080 -g")
    else {
        panic!()
    };
    assert_eq!(destination.port, 80);
    let Rule::AddDestination { destination, .. } = one("-a -t 10.0.0.1:80 -r 10.1.0.9:8080 -i")
    else {
        panic!()
    };
    assert_eq!(destination.port, 80);
    let Rule::AddDestination { destination, .. } = one("-a -t 10.0.0.1:80 -r 10.1.0.9:8080 -m")
    else {
        panic!()
    };
    assert_eq!(destination.port, 8080);
    // ... but not for a firewall-mark service.
    let Rule::AddDestination { destination, .. } = one("-a -f 3 -r 10.1.0.9:8080 -g") else {
        panic!()
    };
    assert_eq!(destination.port, 8080);
    // -p without a value: 360 seconds; port 0 needs persistence.
    assert_eq!(
        one("-A -t 10.0.0.1:0 -p"),
        Rule::AddService(Service::new(ServiceKey::tcp(v4(10, 0, 0, 1), 0), "wlc").persistent(360))
    );
    assert_eq!(
        one("-A -t 10.0.0.1:0 -p -s rr"),
        Rule::AddService(Service::new(ServiceKey::tcp(v4(10, 0, 0, 1), 0), "rr").persistent(360))
    );
    // -6 after -f: IPv6 with prefix length 128 unless -M says otherwise.
    assert_eq!(
        one("-A -f 5 -6 -p -M 48"),
        Rule::AddService(
            Service::new(ServiceKey::fwmark(AddressFamily::Inet6, 5), "wlc")
                .persistent(360)
                .with_netmask(Netmask::V6(48))
        )
    );
}

#[test]
fn every_spelling_of_options() {
    let want = Rule::AddService(
        Service::new(web(), "rr")
            .persistent(120)
            .with_netmask(Netmask::v4_prefix(16)),
    );
    for line in [
        "-A -t 10.0.0.1:80 -s rr -p 120 -M 255.255.0.0",
        "--add-service --tcp-service 10.0.0.1:80 --scheduler rr --persistent 120 --netmask 255.255.0.0",
        "--add-service --tcp-service=10.0.0.1:80 --scheduler=rr --persistent=120 --netmask=255.255.0.0",
        "-A -t10.0.0.1:80 -srr -p120 -M255.255.0.0",
        "ipvsadm -A -t 10.0.0.1:80 -s rr -p 120 -M 255.255.0.0",
        "  -A\t-t 10.0.0.1:80 -s rr -p 120 -M 0xffff0000 --sort # a comment",
        // inet_aton forms: 10.1 is 10.0.0.1.
        "-A -t 10.1:80 -s rr -p 120 -M 255.255.0.0",
        "-A -M 255.255.0.0 -s rr -p 120 -t 10.0.0.1:80",
    ] {
        assert_eq!(one(line), want, "{line}");
    }
    let want = Rule::AddDestination {
        service: web(),
        destination: {
            let mut d = Destination::new(v4(10, 1, 0, 1), 8080).with_weight(3);
            d.upper_threshold = 100;
            d.lower_threshold = 10;
            d
        },
    };
    for line in [
        "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3 -x 100 -y 10",
        "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -mw3 -x100 -y10",
        "--add-server --tcp-service 10.0.0.1:80 --real-server 10.1.0.1:8080 --masquerading \
         --weight 3 --u-threshold 100 --l-threshold 10",
    ] {
        assert_eq!(one(line), want, "{line}");
    }
    for (line, want) in [
        ("-C", Rule::Flush),
        ("--clear", Rule::Flush),
        ("-Z", Rule::Zero(None)),
        ("-Z -t 10.0.0.1:80", Rule::Zero(Some(web()))),
        ("-D -t 10.0.0.1:80", Rule::DeleteService(web())),
        (
            "-D -f 6 -6",
            Rule::DeleteService(ServiceKey::fwmark(AddressFamily::Inet6, 6)),
        ),
        (
            "-d -t 10.0.0.1:80 -r 10.1.0.1",
            Rule::DeleteDestination {
                service: web(),
                destination: DestinationKey::new(v4(10, 1, 0, 1), 80),
            },
        ),
        (
            "-d -u [fd00::1]:53 -r fd00::2",
            Rule::DeleteDestination {
                service: ServiceKey::udp(v6("fd00::1"), 53),
                destination: DestinationKey::new(v6("fd00::2"), 53),
            },
        ),
        (
            "-E -t 10.0.0.1:80 -s sh -b sh-port",
            Rule::EditService(Service::new(web(), "sh").with_flags(ServiceFlags::SCHED2)),
        ),
        (
            "-e -t 10.0.0.1:80 -r 10.1.0.1:80 -w 0",
            Rule::EditDestination {
                service: web(),
                destination: Destination::new(v4(10, 1, 0, 1), 80)
                    .with_forward(Forward::Route)
                    .with_weight(0),
            },
        ),
        (
            "--set 900 120 300",
            Rule::SetTimeouts(Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300,
            }),
        ),
        (
            "-A -f -1 -s rr",
            Rule::AddService(Service::new(
                ServiceKey::fwmark(AddressFamily::Inet, u32::MAX),
                "rr",
            )),
        ),
        (
            "-A -f 4294967295 -s rr",
            Rule::AddService(Service::new(
                ServiceKey::fwmark(AddressFamily::Inet, u32::MAX),
                "rr",
            )),
        ),
        (
            "-A -t 10.0.0.1:80 -s rr -b flag-1,flag-3",
            Rule::AddService(
                Service::new(web(), "rr").with_flags(ServiceFlags::SCHED1 | ServiceFlags::SCHED3),
            ),
        ),
    ] {
        assert_eq!(one(line), want, "{line}");
    }
    // Blank lines and comments.
    for line in ["", "   \t", "# -A -t 10.0.0.1:80", "ipvsadm", "  # x"] {
        assert_eq!(parse_rule_line(line), Ok(None), "{line:?}");
    }
}

#[test]
fn errors_name_what_is_wrong() {
    use RuleErrorKind as K;
    let cases: Vec<(&str, RuleErrorKind)> = vec![
        ("-t 10.0.0.1:80 -A", K::NoCommand("-t".into())),
        ("foo", K::NoCommand(String::new())),
        ("-L -n", K::UnsupportedCommand("-L".into())),
        ("-R", K::UnsupportedCommand("-R".into())),
        ("-A -E -t 10.0.0.1:80", K::SecondCommand("-E".into())),
        ("-A -t 10.0.0.1:80 --foo", K::UnknownOption("--foo".into())),
        ("-A -t 10.0.0.1:80 -q", K::UnknownOption("-q".into())),
        ("-A --tcp-service", K::MissingValue("--tcp-service".into())),
        ("-A -t 10.0.0.1:80 -s", K::MissingValue("-s".into())),
        (
            "-A -t 10.0.0.1:80 --ops=1",
            K::UnwantedValue("--ops".into()),
        ),
        (
            "-A -t 10.0.0.1:80 extra",
            K::UnexpectedArgument("extra".into()),
        ),
        (
            "-A -t 10.0.0.1:80 -s rr -s wlc",
            K::RepeatedOption("scheduler (-s)"),
        ),
        (
            "-A -t 10.0.0.1:80 -f 3",
            K::RepeatedOption("service-address (-t|-u|--sctp-service|-f)"),
        ),
        (
            "-A -t 10.0.0.1:80 -r 10.1.0.1",
            K::IllegalOption {
                option: "real-server (-r)",
                command: "add-service (-A)",
            },
        ),
        (
            "-A -t 10.0.0.1:80 -n",
            K::IllegalOption {
                option: "numeric (-n)",
                command: "add-service (-A)",
            },
        ),
        (
            "-a -t 10.0.0.1:80 -w 2",
            K::MissingOption {
                option: "real-server (-r)",
                command: "add-server (-a)",
            },
        ),
        (
            "-A -s rr",
            K::MissingOption {
                option: "service-address (-t|-u|--sctp-service|-f)",
                command: "add-service (-A)",
            },
        ),
        (
            "-C -t 10.0.0.1:80",
            K::IllegalOption {
                option: "service-address (-t|-u|--sctp-service|-f)",
                command: "flush (-C)",
            },
        ),
        (
            "-A -t 10.0.0.300:80",
            K::BadAddress {
                what: "virtual service",
                value: "10.0.0.300:80".into(),
            },
        ),
        (
            "-A -t example.com:80",
            K::BadAddress {
                what: "virtual service",
                value: "example.com:80".into(),
            },
        ),
        (
            "-A -t 10.0.0.1:http",
            K::BadAddress {
                what: "virtual service",
                value: "10.0.0.1:http".into(),
            },
        ),
        (
            "-A -t [fd00::1]",
            K::BadAddress {
                what: "virtual service",
                value: "[fd00::1]".into(),
            },
        ),
        (
            "-A -t 8080",
            K::BadAddress {
                what: "virtual service",
                value: "8080".into(),
            },
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1:65536",
            K::BadAddress {
                what: "real server",
                value: "10.1.0.1:65536".into(),
            },
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1 -w 2147483648",
            K::BadValue {
                what: "weight (0-2147483647)",
                value: "2147483648".into(),
            },
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1 -w 1x",
            K::BadValue {
                what: "weight (0-2147483647)",
                value: "1x".into(),
            },
        ),
        (
            "-A -t 10.0.0.1:80 -p 0",
            K::BadValue {
                what: "persistence timeout (1-2678400)",
                value: "0".into(),
            },
        ),
        (
            "-A -t 10.0.0.1:80 -p 2678401",
            K::BadValue {
                what: "persistence timeout (1-2678400)",
                value: "2678401".into(),
            },
        ),
        (
            "-A -f 0",
            K::BadValue {
                what: "firewall mark (1-4294967295)",
                value: "0".into(),
            },
        ),
        (
            "-A -f 4294967296",
            K::BadValue {
                what: "firewall mark (1-4294967295)",
                value: "4294967296".into(),
            },
        ),
        (
            "-A -t 10.0.0.1:80 -p -M 255.255.255.256",
            K::BadValue {
                what: "persistence netmask",
                value: "255.255.255.256".into(),
            },
        ),
        (
            "-A -t [fd00::1]:80 -p -M 129",
            K::BadValue {
                what: "IPv6 netmask (1-128)",
                value: "129".into(),
            },
        ),
        (
            "-A -t 10.0.0.1:80 -s abcdefghijklmnop",
            K::TooLong {
                what: "scheduler",
                value: "abcdefghijklmnop".into(),
                max: 15,
            },
        ),
        ("-A -6 -f 5", K::SixBeforeFwmark),
        (
            "-A -t 10.0.0.1:80 -b foo",
            K::UnknownSchedFlag("foo".into()),
        ),
        (
            "-A -t 10.0.0.1:80 -s rr -b sh-port",
            K::IncompatibleSchedFlag {
                flag: "sh-port".into(),
                scheduler: "rr".into(),
            },
        ),
        (
            "-A -t 10.0.0.1:80 -b mh-port",
            K::IncompatibleSchedFlag {
                flag: "mh-port".into(),
                scheduler: "wlc".into(),
            },
        ),
        ("-A -t 10.0.0.1:80 -b ,", K::NoSchedFlag(",".into())),
        ("-A -t 10.0.0.1:0 -s rr", K::ZeroPort),
        ("-A -t 10.0.0.1:80 -o", K::OnePacketNotUdp),
        ("-a -t 10.0.0.1:80 -r [fd00::1]:80 -m", K::FamilyMismatch),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1 -m --tun-type gue",
            K::TunnelOptionWithoutTunnel,
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue",
            K::MissingTunnelOption {
                option: "tun-port",
                tunnel: "gue",
            },
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-port 1",
            K::IllegalTunnelOption {
                option: "tun-port",
                tunnel: "ipip",
            },
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gre --tun-remcsum",
            K::IllegalTunnelOption {
                option: "tun-remcsum",
                tunnel: "gre",
            },
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue --tun-port 1 --tun-csum --tun-remcsum",
            K::ConflictingTunnelOptions {
                option: "tun-remcsum",
                other: "tun-csum",
                tunnel: "gue",
            },
        ),
        (
            "-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type vxlan",
            K::BadValue {
                what: "tunnel type (ipip, gue, gre)",
                value: "vxlan".into(),
            },
        ),
        ("--set 1 2", K::MissingTimeouts),
        ("--set 1 2 3 4", K::UnexpectedArgument("4".into())),
    ];
    for (line, want) in cases {
        assert_eq!(fails(line), want, "{line}");
    }
}

#[test]
fn the_error_names_the_line() {
    let text = "# saved\n-A -t 10.0.0.1:80 -s rr\n\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w x\n-C\n";
    let err = parse_rules(text).unwrap_err();
    assert_eq!(err.line, 4);
    assert_eq!(err.to_string(), "line 4: invalid weight (0-2147483647) `x`");
    let err = parse_rules("-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: the add-server (-a) command needs the real-server (-r) option"
    );
}

#[test]
fn rules_become_ops() {
    let rules = parse_rules(
        "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n-e -t 10.0.0.1:80 -r \
         10.1.0.1:80 -m -w 0\n-d -t 10.0.0.1:80 -r 10.1.0.1:80\n-E -t 10.0.0.1:80 -s wlc\n-D -t \
         10.0.0.1:80\n-Z\n--set 0 0 5\n-C\n",
    )
    .unwrap();
    let ops: Vec<Op> = rules.clone();
    let d = Destination::new(v4(10, 1, 0, 1), 80);
    assert_eq!(
        ops,
        vec![
            Op::AddService(Service::new(web(), "rr")),
            Op::AddDestination {
                service: web(),
                destination: d.clone(),
            },
            Op::EditDestination {
                service: web(),
                destination: d.clone().with_weight(0),
            },
            Op::DeleteDestination {
                service: web(),
                destination: d.key(),
            },
            Op::EditService(Service::new(web(), "wlc")),
            Op::DeleteService(web()),
            Op::Zero(None),
            Op::SetTimeouts(Timeouts {
                tcp: 0,
                tcp_fin: 0,
                udp: 5,
            }),
            Op::Flush,
        ]
    );
}

#[test]
fn c_number_and_address_parsing() {
    assert_eq!(string_to_number(" 42", 0, 100), Some(42));
    assert_eq!(string_to_number("+42", 0, 100), Some(42));
    assert_eq!(string_to_number("-0", 0, 100), Some(0));
    assert_eq!(string_to_number("", 0, 100), None);
    assert_eq!(string_to_number("42 ", 0, 100), None);
    assert_eq!(string_to_number("99999999999999999999", 0, 100), None);
    assert_eq!(atoi("64abc"), 64);
    assert_eq!(atoi("x"), 0);
    assert_eq!(atoi("4294967360"), 64);
    for (s, want) in [
        ("1.2.3.4", Some([1, 2, 3, 4])),
        ("10.1", Some([10, 0, 0, 1])),
        ("10.1.2", Some([10, 1, 0, 2])),
        ("167772161", Some([10, 0, 0, 1])),
        ("0x0a000001", Some([10, 0, 0, 1])),
        ("012.0.0.1", Some([10, 0, 0, 1])),
        ("24", Some([0, 0, 0, 24])),
        ("1.2.3.4\u{b}junk", Some([1, 2, 3, 4])),
        ("1.2.3.256", None),
        ("1.2.3.4.5", None),
        ("08.0.0.1", None),
        ("1..2", None),
        ("1.", None),
        ("", None),
        ("0x", None),
        ("a.b.c.d", None),
        ("4294967296", None),
    ] {
        assert_eq!(inet_aton(s), want.map(Ipv4Addr::from), "{s}");
    }
    for (s, want) in [
        ("10.0.0.1:80", Some((v4(10, 0, 0, 1), Some(80)))),
        ("10.0.0.1", Some((v4(10, 0, 0, 1), None))),
        ("[fd00::1]:53", Some((v6("fd00::1"), Some(53)))),
        ("fd00::1", Some((v6("fd00::1"), None))),
        // A bare IPv6 address has no port: "fd00::1:80" is an address.
        ("fd00::1:80", Some((v6("fd00::1:80"), None))),
        // Brackets around IPv4: the port after them is dropped, as ipvsadm
        // does.
        ("[10.0.0.1]:80", Some((v4(10, 0, 0, 1), None))),
        ("[fd00::1]", None),
        ("[fd00::1]80", None),
        ("10.0.0.1:", None),
        ("", None),
        ("123", None),
    ] {
        assert_eq!(parse_service(s), want, "{s}");
    }
}

// ---------------------------------------------------------------------------
// Property tests: what save writes, parse_rules reads back; nothing panics.

fn arb_addr(v6: bool) -> BoxedStrategy<IpAddr> {
    if v6 {
        any::<u128>()
            .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
            .boxed()
    } else {
        any::<u32>()
            .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
            .boxed()
    }
}

fn arb_key() -> impl Strategy<Value = ServiceKey> {
    let proto = prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ];
    prop_oneof![
        (proto, any::<bool>(), any::<u16>()).prop_flat_map(|(protocol, v6, port)| {
            arb_addr(v6).prop_map(move |addr| ServiceKey::Addr {
                protocol,
                addr,
                port,
            })
        }),
        (any::<bool>(), 1..=u32::MAX).prop_map(|(v6, mark)| ServiceKey::FwMark {
            family: if v6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            mark,
        }),
    ]
}

fn arb_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_]{0,14}".prop_filter("ipvsadm drops the word ipvsadm", |s| s != "ipvsadm")
}

/// A service ipvsadm can save and restore unchanged.
fn arb_service() -> impl Strategy<Value = Service> {
    (
        arb_key(),
        prop_oneof![
            Just("rr".to_owned()),
            Just("wlc".to_owned()),
            Just("sh".to_owned()),
            Just("mh".to_owned()),
            arb_name()
        ],
        any::<bool>(),
        1..=2_678_400u32,
        any::<u32>(),
        1..=128u32,
        any::<bool>(),
        0..8u32,
        proptest::option::of(arb_name()),
    )
        .prop_map(
            |(key, scheduler, persistent, timeout, mask4, mask6, ops, sched_bits, pe)| {
                let mut s = Service::new(key, scheduler);
                let zero_port = matches!(key, ServiceKey::Addr { port: 0, .. });
                if persistent || zero_port {
                    s = s.persistent(timeout).with_netmask(match key.family() {
                        AddressFamily::Inet => Netmask::V4(Ipv4Addr::from(mask4)),
                        AddressFamily::Inet6 => Netmask::V6(mask6),
                    });
                }
                let udp_or_mark = matches!(
                    key,
                    ServiceKey::FwMark { .. }
                        | ServiceKey::Addr {
                            protocol: Protocol::Udp,
                            ..
                        }
                );
                if ops && udp_or_mark {
                    s.flags |= ServiceFlags::ONE_PACKET;
                }
                // sh and mh have names for two flags only.
                let bits = if matches!(s.scheduler.as_str(), "sh" | "mh") {
                    sched_bits & 3
                } else {
                    sched_bits
                };
                s.flags |= ServiceFlags::from_bits(bits << 3);
                s.persistence_engine = pe;
                s
            },
        )
}

/// A destination of `svc` that ipvsadm saves and restores unchanged: no
/// thresholds, masq/DR/tunnel, the service's port for DR and tunnels of
/// address services.
fn arb_destination(svc: ServiceKey) -> impl Strategy<Value = Destination> {
    (
        any::<bool>(),
        0..3u8,
        0..=i32::MAX as u32,
        any::<u16>(),
        0..3u8,
        1..=u16::MAX,
        0..3u16,
    )
        .prop_flat_map(
            move |(other_family, fwd, weight, port, ttype, tport, tflags)| {
                let forward = [Forward::Masquerade, Forward::Route, Forward::Tunnel][fwd as usize];
                let tunnel = forward == Forward::Tunnel;
                let v6 = (svc.family() == AddressFamily::Inet6) != (other_family && tunnel);
                arb_addr(v6).prop_map(move |addr| {
                    let port = match svc {
                        ServiceKey::Addr { port: p, .. } if forward != Forward::Masquerade => p,
                        _ => port,
                    };
                    let mut d = Destination::new(addr, port)
                        .with_forward(forward)
                        .with_weight(weight);
                    if tunnel {
                        d.tunnel_type = TunnelType::from_raw(ttype);
                        match d.tunnel_type {
                            TunnelType::Gue => {
                                d.tunnel_port = tport;
                                d.tunnel_flags = TunnelFlags(tflags);
                            }
                            TunnelType::Gre => d.tunnel_flags = TunnelFlags(tflags % 2),
                            _ => {}
                        }
                    }
                    d
                })
            },
        )
}

fn arb_entry() -> impl Strategy<Value = TableEntry> {
    arb_service().prop_flat_map(|service| {
        let key = service.key;
        proptest::collection::vec(arb_destination(key), 0..5).prop_map(move |mut dests| {
            let mut seen = std::collections::HashSet::new();
            dests.retain(|d| seen.insert(d.key()));
            TableEntry {
                service: ServiceEntry {
                    service: service.clone(),
                    stats: Stats::default(),
                },
                destinations: dests
                    .into_iter()
                    .map(|destination| DestinationEntry {
                        destination,
                        active_conns: 0,
                        inactive_conns: 0,
                        persistent_conns: 0,
                        stats: Stats::default(),
                    })
                    .collect(),
            }
        })
    })
}

fn arb_table() -> impl Strategy<Value = Vec<TableEntry>> {
    proptest::collection::vec(arb_entry(), 0..8).prop_map(|mut t| {
        let mut seen = std::collections::HashSet::new();
        t.retain(|e| seen.insert(e.service.service.key));
        t
    })
}

/// The table a list of rules builds, sorted, without counters.
fn built(rules: &[Rule]) -> Vec<(Service, Vec<Destination>)> {
    let mut t: Vec<(Service, Vec<Destination>)> = Vec::new();
    for r in rules {
        match r {
            Rule::AddService(s) => t.push((s.clone(), Vec::new())),
            Rule::AddDestination {
                service,
                destination,
            } => {
                let entry = t.iter_mut().find(|(s, _)| s.key == *service);
                entry
                    .expect("service added first")
                    .1
                    .push(destination.clone());
            }
            other => panic!("save wrote {other:?}"),
        }
    }
    normalized(t)
}

fn normalized(mut t: Vec<(Service, Vec<Destination>)>) -> Vec<(Service, Vec<Destination>)> {
    for (_, d) in &mut t {
        d.sort_by_key(Destination::key);
    }
    t.sort_by_key(|(s, _)| s.key);
    t
}

fn plain(table: &[TableEntry]) -> Vec<(Service, Vec<Destination>)> {
    normalized(
        table
            .iter()
            .map(|e| {
                (
                    e.service.service.clone(),
                    e.destinations
                        .iter()
                        .map(|d| d.destination.clone())
                        .collect(),
                )
            })
            .collect(),
    )
}

proptest! {
    #[test]
    fn save_then_parse_round_trips(table in arb_table(), sort in any::<bool>()) {
        let text = save(&table, sort);
        let rules = parse_rules(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let lines = table.iter().map(|e| 1 + e.destinations.len()).sum::<usize>();
        prop_assert_eq!(rules.len(), lines);
        prop_assert_eq!(built(&rules), plain(&table));
    }

    #[test]
    fn parse_rules_never_panics(text in "\\PC{0,200}") {
        let _ = parse_rules(&text);
    }

    #[test]
    fn parse_rules_never_panics_on_option_soup(
        words in proptest::collection::vec(
            prop_oneof![
                Just("-A"), Just("-a"), Just("-E"), Just("-e"), Just("-d"), Just("-D"),
                Just("-C"), Just("-Z"), Just("--set"), Just("-t"), Just("-u"), Just("-f"),
                Just("--sctp-service"), Just("-6"), Just("-r"), Just("-s"), Just("-p"),
                Just("-M"), Just("-b"), Just("-m"), Just("-g"), Just("-i"), Just("-w"),
                Just("-x"), Just("-y"), Just("--pe"), Just("-o"), Just("--tun-type"),
                Just("--tun-port"), Just("--tun-csum"), Just("--tun-remcsum"),
                Just("10.0.0.1:80"), Just("[fd00::1]:80"), Just("fd00::2"), Just("5"),
                Just("0"), Just("-1"), Just("gue"), Just("gre"), Just("sh"), Just("mh"),
                Just("sh-port"), Just("flag-3,mh-port"), Just("255.255.0.0"), Just("64"),
                Just("--"), Just("-"), Just("#"), Just("--persistent="), Just("-pw"),
            ],
            0..12,
        )
    ) {
        let line = words.join(" ");
        let _ = parse_rule_line(&line);
    }

    #[test]
    fn save_and_list_never_panic(
        table in arb_table(),
        weight in any::<u32>(),
        fwd in 0..8u32,
        ttype in any::<u8>(),
        tflags in any::<u16>(),
        bits in any::<u32>(),
        mask in any::<u32>(),
        opts in any::<[bool; 7]>(),
    ) {
        let mut table = table;
        if let Some(e) = table.first_mut() {
            e.service.service.flags = ServiceFlags::from_bits(bits);
            e.service.service.netmask = if mask % 2 == 0 {
                Netmask::V6(mask)
            } else {
                Netmask::V4(Ipv4Addr::from(mask))
            };
            if let Some(d) = e.destinations.first_mut() {
                d.destination.weight = weight;
                d.destination.forward = Forward::from_raw(fwd);
                d.destination.tunnel_type = TunnelType::from_raw(ttype);
                d.destination.tunnel_flags = TunnelFlags(tflags);
            }
        }
        let _ = save(&table, opts[0]);
        let o = crate::ListOptions {
            stats: opts[1],
            rate: opts[2],
            exact: opts[3],
            thresholds: opts[4],
            persistent_conn: opts[5],
            tun_info: opts[6],
            sort: opts[0],
            only: table.first().map(|e| e.service.service.key),
        };
        let info = Info { version: bits, conn_table_size: mask };
        let _ = list(&table, &info, &o);
    }
}
