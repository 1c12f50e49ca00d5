//! The inspection CLI against the real kernel, cross-checked with ipvsadm:
//! on the same state, built once by ipvsadm and once by `kipvs restore`,
//! `kipvs save` and `kipvs list` print exactly what ipvsadm prints. Run by
//! `cargo xtask vm test`; ignored on the host.

use kipvs_testkit::lab::{sh, try_sh as run};
use std::process::Command;

const KIPVS: &str = env!("CARGO_BIN_EXE_kipvs");

/// A state touching every feature `-S` and `-L` print.
const STATE: &str = "
ipvsadm -A -t 10.0.0.1:80 -s rr
ipvsadm -a -t 10.0.0.1:80 -r 10.1.0.1:8080 -m -w 3
ipvsadm -a -t 10.0.0.1:80 -r 10.1.0.2:8080 -m -w 0 -x 100 -y 10
ipvsadm -A -u 10.0.0.2:53 -s wlc -p 600 -M 255.255.0.0
ipvsadm -a -u 10.0.0.2:53 -r 10.1.0.3:53 -g
ipvsadm -A --sctp-service 10.0.0.3:3868 -s sh -b sh-port,sh-fallback
ipvsadm -a --sctp-service 10.0.0.3:3868 -r 10.1.0.4:3868 -i
ipvsadm -A -t [fd00::1]:443 -s mh -b mh-port
ipvsadm -a -t [fd00::1]:443 -r [fd00::10]:8443 -m -w 2
ipvsadm -A -f 7 -s lc -o
ipvsadm -a -f 7 -r 10.1.0.5:0 -g
ipvsadm -A -f 8 -6 -s sed -p 60 -M 64
ipvsadm -A -t 192.168.7.1:8080 -s dh -b flag-3
ipvsadm -a -t 192.168.7.1:8080 -r 10.1.0.6:8080 -i --tun-type gue --tun-port 6080 --tun-csum
";

fn build_with_ipvsadm() {
    sh("ipvsadm -C");
    sh(STATE);
}

#[test]
#[ignore = "needs the kernel lab"]
fn save_and_list_print_what_ipvsadm_prints() {
    build_with_ipvsadm();
    assert_eq!(sh(&format!("{KIPVS} save")), sh("ipvsadm -S -n"));
    // ipvsadm 1.31 refuses `-S --nosort`; kipvs offers it: the same lines
    // in the kernel's order.
    let lines = |s: String| {
        let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
        v.sort();
        v
    };
    assert_eq!(
        lines(sh(&format!("{KIPVS} save -n --nosort"))),
        lines(sh("ipvsadm -S -n"))
    );
    for opts in [
        "",
        "--stats",
        "--rate",
        "--exact",
        "--stats --exact",
        "--rate --exact",
        "--thresholds",
        "--persistent-conn",
        "--tun-info",
        "--nosort",
        "-t 10.0.0.1:80",
        "-u 10.0.0.2:53",
        "--sctp-service 10.0.0.3:3868",
        "-t [fd00::1]:443",
        "-f 7",
        "-f 8 -6",
        "--stats -t 10.0.0.1:80",
    ] {
        assert_eq!(
            sh(&format!("{KIPVS} list -n {opts} --no-names")),
            sh(&format!("ipvsadm -Ln {opts}")),
            "kipvs list {opts}"
        );
    }
    let (ok, _, err) = run(&format!("{KIPVS} list -t 10.9.9.9:1 --no-names"));
    assert!(!ok && err.contains("no such service"), "{err}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn restore_rebuilds_what_ipvsadm_saved_and_a_bad_line_changes_nothing() {
    build_with_ipvsadm();
    let saved = sh("ipvsadm -S -n");
    std::fs::write("/tmp/kipvs-saved-rules", &saved).unwrap();
    for input in [
        "/tmp/kipvs-saved-rules",
        "- < /tmp/kipvs-saved-rules",
        "< /tmp/kipvs-saved-rules",
    ] {
        sh("ipvsadm -C");
        sh(&format!("{KIPVS} restore {input}"));
        assert_eq!(
            sh("ipvsadm -S -n"),
            saved,
            "restored by kipvs ({input}), read by ipvsadm"
        );
        assert_eq!(sh(&format!("{KIPVS} save")), saved);
    }

    sh("ipvsadm -C");
    std::fs::write(
        "/tmp/kipvs-bad-rules",
        "-A -t 10.0.0.9:80 -s rr\n# a comment\n-a -t 10.0.0.9:80 -r 10.1.0.9:80 -m -w 1\n-a -t 10.0.0.9:80 -q nonsense\n",
    )
    .unwrap();
    let (ok, _, err) = run(&format!("{KIPVS} restore /tmp/kipvs-bad-rules"));
    assert!(!ok, "a bad line fails the restore");
    assert!(
        err.contains("/tmp/kipvs-bad-rules:4:"),
        "names file and line: {err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    assert_eq!(sh("ipvsadm -S -n"), "", "nothing applied");

    // A rule the kernel refuses: reported with its line, the others applied.
    std::fs::write(
        "/tmp/kipvs-dup-rules",
        "-A -t 10.0.0.9:80 -s rr\n-A -t 10.0.0.9:80 -s wlc\n-a -t 10.0.0.9:80 -r 10.1.0.9:80 -m\n",
    )
    .unwrap();
    let (ok, _, err) = run(&format!("{KIPVS} restore /tmp/kipvs-dup-rules"));
    assert!(!ok);
    assert!(err.contains("/tmp/kipvs-dup-rules:2:"), "{err}");
    assert!(sh("ipvsadm -Ln -t 10.0.0.9:80").contains("10.1.0.9:80"));
    sh("ipvsadm -C");
}

#[test]
#[ignore = "needs the kernel lab"]
fn conns_lists_what_ipvsadm_lists() {
    sh("ipvsadm -C");
    // Connection entries without traffic: a persistent UDP service makes
    // templates when packets arrive; send some from a local socket.
    sh(
        "ip link add kipvs-cli type dummy; ip addr add 10.77.0.1/32 dev kipvs-cli; ip link set kipvs-cli up",
    );
    sh("ipvsadm -A -u 10.77.0.1:5353 -s rr && ipvsadm -a -u 10.77.0.1:5353 -r 127.0.0.1:5353 -m");
    run("for i in 1 2 3; do echo x | busybox nc -u -w 1 10.77.0.1 5353; done");
    let strip = |s: &str| -> String {
        // The expiry column counts down between the two reads.
        s.lines()
            .map(|l| {
                let mut w: Vec<&str> = l.split_whitespace().collect();
                if w.len() > 1 && w[0] != "IPVS" && w[0] != "pro" {
                    w.remove(1);
                }
                w.join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ours = sh(&format!("{KIPVS} conns -n"));
    let theirs = sh("ipvsadm -Lcn");
    assert_eq!(strip(&ours), strip(&theirs));
    let json = sh(&format!("{KIPVS} conns --json"));
    assert!(json.trim_start().starts_with('['), "{json}");
    sh("ipvsadm -C; ip link del kipvs-cli");
}

#[test]
#[ignore = "needs the kernel lab"]
fn without_cap_net_admin_every_command_says_so() {
    /// `CAP_NET_ADMIN` in `linux/capability.h`.
    const CAP_NET_ADMIN: libc::c_ulong = 12;
    // Drop CAP_NET_ADMIN from this thread's bounding set: root's children
    // spawned from it run without it.
    let out = std::thread::spawn(|| {
        // SAFETY: prctl with PR_CAPBSET_DROP and a capability number.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0) };
        assert_eq!(
            r,
            0,
            "dropping CAP_NET_ADMIN: {}",
            std::io::Error::last_os_error()
        );
        ["save", "list"].map(|cmd| Command::new(KIPVS).arg(cmd).output().expect("kipvs runs"))
    })
    .join()
    .unwrap();
    for o in out {
        assert_eq!(o.status.code(), Some(1));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with("kipvs: error: kipvs needs CAP_NET_ADMIN (run as root)"),
            "{err}"
        );
    }
}

/// `kipvs list` == `ipvsadm -Ln` on a table kipvs built (`kipvs restore`
/// of ipvsadm's rules), for every display option alone and every pair of
/// them ipvsadm accepts; then, after real packets, `--stats --exact`.
#[test]
#[ignore = "needs the kernel lab"]
fn list_matches_ipvsadm_on_a_kipvs_built_table_for_every_option_pair_and_after_traffic() {
    build_with_ipvsadm();
    let saved = sh("ipvsadm -S -n");
    sh("ipvsadm -C");
    std::fs::write("/tmp/kipvs-pairs-rules", &saved).unwrap();
    sh(&format!("{KIPVS} restore /tmp/kipvs-pairs-rules"));
    assert_eq!(sh("ipvsadm -S -n"), saved, "kipvs built the same table");

    let options = [
        "--stats",
        "--rate",
        "--exact",
        "--thresholds",
        "--persistent-conn",
        "--tun-info",
        "--nosort",
    ];
    let mut combos = vec![String::new()];
    for (i, a) in options.iter().enumerate() {
        combos.push((*a).to_owned());
        for b in &options[i + 1..] {
            combos.push(format!("{a} {b}"));
        }
    }
    let (mut compared, mut refused) = (0, Vec::new());
    for opts in &combos {
        let (ok, theirs, _) = run(&format!("ipvsadm -Ln {opts}"));
        if !ok {
            refused.push(opts.clone());
            continue;
        }
        assert_eq!(
            sh(&format!("{KIPVS} list -n {opts} --no-names")),
            theirs,
            "kipvs list {opts} on a kipvs-built table"
        );
        compared += 1;
    }
    println!(
        "compared {compared} option sets with ipvsadm; ipvsadm refused {}: {refused:?}",
        refused.len()
    );
    assert!(compared >= 20, "{compared} compared, refused {refused:?}");

    // Traffic: TCP connections from a client namespace to a virtual server
    // on a dummy address, masqueraded back to the client's own address where
    // nothing listens (each SYN in, each RST out, counted). Counters settle
    // when the sending stops.
    sh(
        "ip link add kipvs-pairs type dummy; ip addr add 10.78.0.1/32 dev kipvs-pairs; \
        ip link set kipvs-pairs up; sysctl -qw net.ipv4.ip_forward=1; \
        ip netns add kc; ip link add h-kc type veth peer name eth0 netns kc; \
        ip addr add 10.79.0.1/24 dev h-kc; ip link set h-kc up; \
        ip -n kc addr add 10.79.0.2/24 dev eth0; ip -n kc link set eth0 up; \
        ip -n kc link set lo up; ip -n kc route add default via 10.79.0.1",
    );
    sh(&format!(
        "printf '%s\\n' '-A -t 10.78.0.1:5300 -s rr' '-a -t 10.78.0.1:5300 -r 10.79.0.2:5300 -m' \
         | {KIPVS} restore -"
    ));
    run(
        "for i in 1 2 3 4 5; do ip netns exec kc curl -s --max-time 5 http://10.78.0.1:5300/; done",
    );
    let mut last = (String::new(), String::new());
    let mut equal = false;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let ours = sh(&format!("{KIPVS} list --stats --exact --no-names"));
        let theirs = sh("ipvsadm -Ln --stats --exact");
        if ours == theirs {
            equal = true;
            last = (ours, theirs);
            break;
        }
        last = (ours, theirs);
    }
    assert!(
        equal,
        "--stats --exact after traffic:\nkipvs:\n{}\nipvsadm:\n{}",
        last.0, last.1
    );
    let vs = last
        .0
        .lines()
        .find(|l| l.starts_with("TCP  10.78.0.1:5300"))
        .unwrap_or_else(|| panic!("no TCP 10.78.0.1:5300 line:\n{}", last.0))
        .to_owned();
    let in_pkts: u64 = vs.split_whitespace().nth(3).unwrap().parse().unwrap();
    println!("after traffic: {vs}");
    let conns: u64 = vs.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(
        conns >= 5 && in_pkts >= 5,
        "the connections were counted: {vs}"
    );
    sh("ipvsadm -C; ip link del kipvs-pairs; ip link del h-kc; ip netns del kc");
}
