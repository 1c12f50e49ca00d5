//! Kernel tests of `kipvs_ipvsadm`: the table is built with `ipvsadm`,
//! read with `kipvs_ipvs`'s client, and `save`/`list` must print exactly what
//! `ipvsadm -S -n` / `ipvsadm -Ln …` print; rules that `ipvsadm -S` wrote,
//! read by `parse_rules` and applied by the client, must rebuild the same
//! table; rule lines must mean to `parse_rules` what they mean to
//! `ipvsadm -R`; `/proc/net/ip_vs_conn` read by `parse_conns` must list as
//! `ipvsadm -Lcn`. Run in the lab VM as root with `--ignored
//! --test-threads=1`; each test starts from `ipvsadm -C`.

// The lab helpers `kipvs-ipvs`'s kernel tests use; one copy for both crates.
#[path = "../../ipvs/tests/common/mod.rs"]
mod common;

use common::{ipvsadm, reset, setup_namespaces, sh, teardown_namespaces};
use kipvs_ipvs::{AddressFamily, Client, Op, ServiceKey};
use kipvs_ipvsadm::{
    ListOptions, list, list_conns, list_conns_persistent, parse_conns, parse_rules, save,
};

fn client() -> Client {
    Client::new().expect("IPVS in the lab")
}

/// A table with every kind of service and destination ipvsadm can make:
/// IPv4, IPv6, firewall marks (both families, one above 2^31), TCP, UDP,
/// SCTP, port 0, persistence with netmasks and an engine, one-packet,
/// sh/mh/other scheduler flags, masq/DR/tunnels (ipip, gue with each
/// checksum option, gre, mixed family), weights (0, above 65535),
/// thresholds, addresses whose order overflows ipvsadm's comparators, and
/// IPv6 addresses glibc prints in unusual forms.
const STATE: &[&str] = &[
    "-A -t 10.0.0.1:80 -s rr",
    "-a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3 -x 100 -y 10",
    "-a -t 10.0.0.1:80 -r 10.1.0.2:80 -g -w 1",
    "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -i --tun-type gue --tun-port 6080",
    "-a -t 10.0.0.1:80 -r 10.1.0.4:80 -i --tun-type gre --tun-csum",
    "-a -t 10.0.0.1:80 -r 10.1.0.6:80 -i --tun-type gue --tun-port 6081 --tun-remcsum",
    "-a -t 10.0.0.1:80 -r 10.1.0.9:80 -i --tun-type gue --tun-port 6082 --tun-csum",
    "-a -t 10.0.0.1:80 -r 192.168.7.1:8080 -m -w 100000",
    "-a -t 10.0.0.1:80 -r 172.16.0.1:8080 -m -w 0 -x 5",
    "-A -u [fd00::1]:53 -s wlc -o",
    "-a -u [fd00::1]:53 -r [fd00::2]:53 -m -w 0",
    "-a -u [fd00::1]:53 -r [fd00::10]:53 -m -w 5 -x 20 -y 7",
    "-A -t [fd00::1]:80 -s rr",
    "-a -t [fd00::1]:80 -r 10.1.0.5:80 -i",
    "-a -t [fd00::1]:80 -r [fd00::5]:80 -i --tun-type gre",
    "-A -t [2001:db8::1:0:0:1]:8080 -s wrr",
    "-a -t [2001:db8::1:0:0:1]:8080 -r [::2:3]:80 -m -w 2",
    "-A -f 5 -s rr -p 300 -M 255.255.255.0",
    "-a -f 5 -r 10.1.0.7 -g",
    "-a -f 5 -r 10.1.0.8:8080 -m",
    "-A -f 6 -6 -s rr -p 60 -M 64",
    "-A -f 4294967295 -s lc",
    "-A -f 7 -s rr -o",
    "-A --sctp-service 10.0.0.2:9000 -s sh -b sh-port,sh-fallback",
    "-a --sctp-service 10.0.0.2:9000 -r 10.1.0.8:9000 -m",
    "-A -t 10.0.0.3:443 -s mh -b mh-port",
    "-A -t 10.0.0.3:444 -s mh -b mh-fallback,mh-port",
    "-A -t 10.0.0.3:445 -s sh -b sh-fallback",
    "-A -u 10.0.0.4:5060 -s rr -p 100 --pe sip",
    "-A -t 192.168.1.1:80 -s lc -p",
    "-A -t 10.0.0.1:0 -s rr -p 30 -M 255.255.0.0",
    "-A -u 10.0.0.5:53 -s rr -o -b flag-1,flag-3",
    "-A -t 10.200.0.1:80 -s wlc -p 3600 -M 255.255.255.255",
    "-a -t 10.200.0.1:80 -r 10.1.0.1:80 -m",
    "-a -t 10.200.0.1:80 -r 10.1.0.1:81 -m",
    "-a -t 10.200.0.1:80 -r 200.1.0.1:80 -m",
    "-a -t 10.200.0.1:80 -r 1.1.0.1:80 -m",
];

fn build_state() {
    reset();
    for cmd in STATE {
        ipvsadm(cmd);
    }
}

/// Every listing option and selector, as `ipvsadm` arguments and as
/// [`ListOptions`].
fn list_cases() -> Vec<(&'static str, ListOptions)> {
    let o = ListOptions::default;
    let web = ServiceKey::Addr {
        protocol: kipvs_ipvs::Protocol::Tcp,
        addr: "10.0.0.1".parse().unwrap(),
        port: 80,
    };
    let dns6 = ServiceKey::Addr {
        protocol: kipvs_ipvs::Protocol::Udp,
        addr: "fd00::1".parse().unwrap(),
        port: 53,
    };
    let sctp = ServiceKey::Addr {
        protocol: kipvs_ipvs::Protocol::Sctp,
        addr: "10.0.0.2".parse().unwrap(),
        port: 9000,
    };
    vec![
        ("-Ln", o()),
        ("-Ln --stats", ListOptions { stats: true, ..o() }),
        (
            "-Ln --stats --exact",
            ListOptions {
                stats: true,
                exact: true,
                ..o()
            },
        ),
        ("-Ln --rate", ListOptions { rate: true, ..o() }),
        (
            "-Ln --rate --exact",
            ListOptions {
                rate: true,
                exact: true,
                ..o()
            },
        ),
        (
            "-Ln --thresholds",
            ListOptions {
                thresholds: true,
                ..o()
            },
        ),
        (
            "-Ln --persistent-conn",
            ListOptions {
                persistent_conn: true,
                ..o()
            },
        ),
        (
            "-Ln --tun-info",
            ListOptions {
                tun_info: true,
                ..o()
            },
        ),
        ("-Ln --nosort", ListOptions { sort: false, ..o() }),
        (
            "-Ln --stats --nosort",
            ListOptions {
                stats: true,
                sort: false,
                ..o()
            },
        ),
        (
            "-Ln --stats --rate",
            ListOptions {
                stats: true,
                rate: true,
                ..o()
            },
        ),
        (
            "-Ln -t 10.0.0.1:80",
            ListOptions {
                only: Some(web),
                ..o()
            },
        ),
        (
            "-Ln -t 10.0.0.1:80 --thresholds",
            ListOptions {
                only: Some(web),
                thresholds: true,
                ..o()
            },
        ),
        (
            "-Ln -t 10.0.0.1:80 --stats --nosort",
            ListOptions {
                only: Some(web),
                stats: true,
                sort: false,
                ..o()
            },
        ),
        (
            "-Ln -u [fd00::1]:53 --rate",
            ListOptions {
                only: Some(dns6),
                rate: true,
                ..o()
            },
        ),
        (
            "-Ln --sctp-service 10.0.0.2:9000 --tun-info",
            ListOptions {
                only: Some(sctp),
                tun_info: true,
                ..o()
            },
        ),
        (
            "-Ln -f 5 --persistent-conn",
            ListOptions {
                only: Some(ServiceKey::fwmark(AddressFamily::Inet, 5)),
                persistent_conn: true,
                ..o()
            },
        ),
        (
            "-Ln -f 6 -6",
            ListOptions {
                only: Some(ServiceKey::fwmark(AddressFamily::Inet6, 6)),
                ..o()
            },
        ),
        (
            "-Ln -f 4294967295",
            ListOptions {
                only: Some(ServiceKey::fwmark(AddressFamily::Inet, u32::MAX)),
                ..o()
            },
        ),
    ]
}

/// Compare with `ipvsadm`, re-reading both a few times: counters and
/// connection counts may move between two reads while traffic settles.
fn assert_same(what: &str, mut ours: impl FnMut() -> String, mut theirs: impl FnMut() -> String) {
    let mut last = (String::new(), String::new());
    for _ in 0..5 {
        let (a, b) = (theirs(), ours());
        if a == b {
            return;
        }
        last = (a, b);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let (want, got) = last;
    let diff: Vec<String> = want
        .lines()
        .zip(got.lines())
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("ipvsadm: {w:?}\nkipvs:   {g:?}"))
        .collect();
    panic!(
        "{what}: kipvs differs from ipvsadm ({} vs {} lines)\n{}\n--- ipvsadm\n{want}\n--- kipvs\n{got}",
        want.lines().count(),
        got.lines().count(),
        diff.join("\n")
    );
}

#[test]
#[ignore = "needs the kernel lab"]
fn text_save_and_list_equal_ipvsadm_byte_for_byte() {
    build_state();
    let mut ipvs = client();
    let info = ipvs.info().unwrap();
    let table = ipvs.dump_all().unwrap();
    let saved = ipvsadm("-S -n");
    assert_eq!(saved.lines().count(), STATE.len());
    assert_same("-S -n", || save(&table, true), || saved.clone());
    // ipvsadm -S always sorts (it refuses --nosort); unsorted, the same
    // lines in the table's order.
    let mut unsorted: Vec<String> = save(&table, false).lines().map(str::to_owned).collect();
    unsorted.sort();
    assert_eq!(unsorted, common::saved());
    common::sh_fails("ipvsadm -S -n --nosort");
    for (args, opts) in list_cases() {
        assert_same(args, || list(&table, &info, &opts), || ipvsadm(args));
    }
    // Spot checks of what the byte-for-byte comparison covers.
    assert!(saved.contains("-A -f -1 -s lc\n"), "{saved}");
    assert!(saved.contains("-r [::0.2.0.3]:80 -m -w 2\n"), "{saved}");
    assert!(
        saved.contains("-r 192.168.7.1:8080 -m -w 100000\n"),
        "{saved}"
    );
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn text_saved_rules_applied_by_kipvs_rebuild_the_table() {
    build_state();
    let saved = ipvsadm("-S -n");
    let thresholds = ipvsadm("-Ln --thresholds");
    let rules = parse_rules(&saved).unwrap();
    assert_eq!(rules.len(), STATE.len());
    ipvsadm("-C");
    let mut ipvs = client();
    let ops: Vec<Op> = rules.clone();
    for (op, r) in ops.iter().zip(ipvs.apply(&ops)) {
        assert!(r.is_ok(), "{op}: {r:?}");
    }
    assert_eq!(ipvsadm("-S -n"), saved);
    // What -S does not save (thresholds) is lost, as with ipvsadm -R.
    assert_ne!(ipvsadm("-Ln --thresholds"), thresholds);
    // The same rules through ipvsadm -R: the same table, except that
    // ipvsadm 1.31 cannot read back the negative mark it writes for marks
    // from 2^31 on.
    ipvsadm("-C");
    std::fs::write("/tmp/kipvs-saved", &saved).unwrap();
    let refused = common::sh_fails("ipvsadm -R < /tmp/kipvs-saved");
    assert!(refused.contains("invalid fwmark value `-1'"), "{refused}");
    ipvsadm("-C");
    let without: String = saved
        .lines()
        .filter(|l| !l.starts_with("-A -f -1 "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write("/tmp/kipvs-saved", &without).unwrap();
    sh("ipvsadm -R < /tmp/kipvs-saved");
    assert_eq!(ipvsadm("-S -n"), without);
    reset();
}

/// Rules texts that ipvsadm -R applies, in different spellings: applied by
/// kipvs (parse_rules → apply) they must make the same table, thresholds
/// included.
const SPELLINGS: &[&str] = &[
    "-A -t 10.0.0.1:80\n-a -t 10.0.0.1:80 -r 10.1.0.1\n",
    "--add-service --tcp-service=10.0.0.1:80 --scheduler=sh --sched-flags=sh-port \
     --persistent --netmask=255.255.0.0\n",
    "ipvsadm -A -t10.0.0.1:80 -srr\nipvsadm -a -t 10.0.0.1:80 -r 10.1.0.1:8080 -mw3 -x100 -y10\n",
    "-A -u 10.0.0.1:53 -s rr -o\n-a -u 10.0.0.1:53 -r 10.1.0.1:5353 -g\n\
     -a -u 10.0.0.1:53 -r 10.1.0.2:5353 -i --tun-type gue --tun-port 6080 --tun-csum\n",
    "-A -f 9 -6 -p -M 48\n-a -f 9 -6 -r fd00::9 -m\n-a -f 9 -6 -r [fd00::8]:99 -i\n",
    "-A -t 10.1:80 -s rr -p 10 -M 0xffffff00\n-a -t 10.1:80 -r 10.1.0.1:80 -m -x 3\n",
    "-A -t [fd00::1]:80 -s rr\n-a -t [fd00::1]:80 -r 10.9.0.1 -i\n-e -t [fd00::1]:80 -r \
     10.9.0.1 -i -w 4 --tun-type gre --tun-nocsum\n",
    "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n-a -t 10.0.0.1:80 -r \
     10.1.0.2:80 -m\n-d -t 10.0.0.1:80 -r 10.1.0.1:80\n-E -t 10.0.0.1:80 -s wlc -p 20\n",
    "-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.2:80 -s rr\n-D -t 10.0.0.1:80\n",
    "-A -t 10.0.0.1:80 -s rr\n-C\n-A -t 10.0.0.3:80 -s rr\n",
];

/// Rule lines ipvsadm -R refuses: parse_rules must refuse them too, naming
/// the line.
const BAD_LINES: &[&str] = &[
    "-A -t 10.0.0.1:0 -s rr",
    "-A -t 10.0.0.1:80 -o",
    "-A -t 10.0.0.1:80 -s rr -b sh-port",
    "-A -t 10.0.0.1:80 -b nope",
    "-A -t 10.0.0.1:80 --nope",
    "-A -t 10.0.0.1:80 -r 10.1.0.1",
    "-a -t 10.0.0.1:80 -m",
    "-a -t 10.0.0.1:80 -r [fd00::1]:80 -m",
    "-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gue",
    "-a -t 10.0.0.1:80 -r 10.1.0.1 -m --tun-type gre",
    "-a -t 10.0.0.1:80 -r 10.1.0.1 -i --tun-type gre --tun-remcsum",
    "-a -t 10.0.0.1:80 -r 10.1.0.1 -w 2147483648",
    "-A -t 10.0.0.300:80",
    "-A -6 -f 5",
    "-A -f 0",
    "-A -t 10.0.0.1:80 -p 0",
    "-A -t [fd00::1]:80 -p -M 129",
    "-A -t 10.0.0.1:80 -s rr -s wlc",
    "-A -t 10.0.0.1:80 extra",
    "-t 10.0.0.1:80 -A",
    "--set 1 2",
];

/// `ipvsadm -R < text` on an empty table: whether it succeeded.
fn ipvsadm_restore(text: &str) -> bool {
    ipvsadm("-C");
    std::fs::write("/tmp/kipvs-rules", text).unwrap();
    common::shell("ipvsadm -R < /tmp/kipvs-rules")
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
#[ignore = "needs the kernel lab"]
fn text_rules_mean_to_kipvs_what_they_mean_to_ipvsadm() {
    reset();
    let mut ipvs = client();
    for text in SPELLINGS {
        assert!(ipvsadm_restore(text), "ipvsadm -R refused:\n{text}");
        let (want_saved, want_thr) = (ipvsadm("-S -n"), ipvsadm("-Ln --thresholds"));
        ipvsadm("-C");
        let rules = parse_rules(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let ops: Vec<Op> = rules.clone();
        for (op, r) in ops.iter().zip(ipvs.apply(&ops)) {
            assert!(r.is_ok(), "{op}: {r:?}\n{text}");
        }
        assert_eq!(ipvsadm("-S -n"), want_saved, "{text}");
        assert_eq!(ipvsadm("-Ln --thresholds"), want_thr, "{text}");
    }
    for bad in BAD_LINES {
        let text = format!("-A -t 10.9.9.9:80 -s rr\n{bad}\n-A -t 10.9.9.8:80 -s rr\n");
        assert!(!ipvsadm_restore(&format!("{bad}\n")), "ipvsadm took {bad}");
        let err = parse_rules(&text).unwrap_err();
        assert_eq!(err.line, 2, "{bad}: {err}");
        println!("{bad:60} -> {err}");
    }
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn text_a_bad_line_applies_nothing() {
    reset();
    let text = "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m\n\
                -a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w lots\n";
    let err = parse_rules(text).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 3: invalid weight (0-2147483647) `lots`"
    );
    // Nothing was applied: the caller never got rules.
    assert_eq!(ipvsadm("-S -n"), "");
    reset();
}

const VIP: &str = "10.96.0.10";

#[test]
#[ignore = "needs the kernel lab"]
fn text_connections_and_counters_after_traffic_equal_ipvsadm() {
    reset();
    setup_namespaces(VIP);
    // A plain service, a persistent one (templates), a UDP one.
    ipvsadm(&format!("-A -t {VIP}:80 -s rr"));
    ipvsadm(&format!("-a -t {VIP}:80 -r 192.168.20.2:80 -m"));
    ipvsadm(&format!("-A -t {VIP}:8080 -s rr -p 600 -M 255.255.255.0"));
    ipvsadm(&format!("-a -t {VIP}:8080 -r 192.168.20.2:80 -m"));
    ipvsadm(&format!("-A -u {VIP}:53 -s rr"));
    ipvsadm(&format!("-a -u {VIP}:53 -r 192.168.20.2:53 -m"));
    for port in [80, 8080, 80, 8080] {
        let page = sh(&format!(
            "ip netns exec kc curl -s --max-time 10 http://{VIP}:{port}/"
        ));
        assert_eq!(page.trim(), "hello-from-ks");
    }
    // One UDP datagram (nobody answers; the connection entry stays).
    sh(&format!(
        "ip netns exec kc bash -c 'echo x > /dev/udp/{VIP}/53'"
    ));

    // The kernel publishes per-CPU counters from its rate estimator, every
    // two seconds: wait for the connections to show before comparing lists.
    let counted = || {
        ipvsadm("-Ln --stats --exact").lines().any(|l| {
            l.starts_with(&format!("TCP  {VIP}:80 ")) && l.split_whitespace().nth(2) != Some("0")
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !counted() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }

    let proc_conns = || std::fs::read_to_string("/proc/net/ip_vs_conn").unwrap();
    let conns = parse_conns(&proc_conns()).unwrap();
    assert!(conns.len() >= 5, "{conns:?}");
    assert!(conns.iter().any(|c| c.protocol == "UDP"), "{conns:?}");
    assert!(
        conns.iter().any(|c| c.client_port == 0),
        "a persistence template: {conns:?}"
    );
    assert_same(
        "-Lcn",
        || list_conns(&parse_conns(&proc_conns()).unwrap()),
        || ipvsadm("-Lcn"),
    );
    assert_same(
        "-Lcn --persistent-conn",
        || list_conns_persistent(&parse_conns(&proc_conns()).unwrap()),
        || ipvsadm("-Lcn --persistent-conn"),
    );

    // Counters and connection counts after the traffic (rates move with
    // the estimator, so only counters).
    let mut ipvs = client();
    let info = ipvs.info().unwrap();
    for (args, opts) in [
        ("-Ln", ListOptions::default()),
        (
            "-Ln --stats",
            ListOptions {
                stats: true,
                ..ListOptions::default()
            },
        ),
        (
            "-Ln --stats --exact",
            ListOptions {
                stats: true,
                exact: true,
                ..ListOptions::default()
            },
        ),
        (
            "-Ln --persistent-conn",
            ListOptions {
                persistent_conn: true,
                ..ListOptions::default()
            },
        ),
        (
            "-Ln --thresholds",
            ListOptions {
                thresholds: true,
                ..ListOptions::default()
            },
        ),
    ] {
        assert_same(
            args,
            || list(&ipvs.dump_all().unwrap(), &info, &opts),
            || ipvsadm(args),
        );
    }
    let stats = ipvsadm("-Ln --stats --exact");
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("TCP  10.96.0.10:80 ")
                && l.split_whitespace().nth(2) != Some("0")),
        "traffic was counted:\n{stats}"
    );
    teardown_namespaces(VIP);
    reset();
}
