//! crates/link against the real kernel in the lab, cross-checked with
//! iproute2. Run by `cargo xtask vm test`; ignored on the host.

use kipvs_link::{Error, Links, sysctl};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

fn ip(args: &str) -> String {
    let out = Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("iproute2 runs");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fresh(name: &str) {
    let _ = Command::new("ip")
        .args(["link", "del", name])
        .stderr(std::process::Stdio::null())
        .status();
}

/// `ip -o addr show dev NAME` as "addr/len" lines, sorted.
fn ip_addrs(name: &str) -> Vec<String> {
    let mut v: Vec<String> = ip(&format!("-o addr show dev {name}"))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect();
    v.sort();
    v
}

fn set(v: &[&str]) -> BTreeSet<IpAddr> {
    v.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn ensure_creates_a_down_noarp_dummy_once() {
    fresh("kube-ipvs0");
    let mut links = Links::open().unwrap();
    let first = links.ensure_dummy("kube-ipvs0").unwrap();
    assert!(first.created);
    let shown = ip("-d -o link show kube-ipvs0");
    assert!(shown.contains("kube-ipvs0: <BROADCAST,NOARP>"), "{shown}");
    assert!(shown.contains("state DOWN"), "{shown}");
    assert!(shown.contains(" dummy "), "{shown}");
    let again = links.ensure_dummy("kube-ipvs0").unwrap();
    assert_eq!((again.index, again.created), (first.index, false));
    assert!(links.remove_dummy("kube-ipvs0").unwrap());
    assert!(!links.remove_dummy("kube-ipvs0").unwrap());
    assert!(!ip("-o link show").contains("kube-ipvs0"));
}

#[test]
#[ignore = "needs the kernel lab"]
fn a_non_dummy_of_that_name_is_refused_and_left_intact() {
    fresh("kube-ipvs0");
    ip("link add kube-ipvs0 type veth peer name kipvs-peer");
    let before = ip("-d -o link show kube-ipvs0");
    let mut links = Links::open().unwrap();
    let e = links.ensure_dummy("kube-ipvs0").unwrap_err();
    assert!(
        matches!(&e, Error::NotDummy { kind, .. } if kind == "veth"),
        "{e}"
    );
    assert!(
        e.to_string().contains("not a dummy interface (kind veth)"),
        "{e}"
    );
    assert!(links.remove_dummy("kube-ipvs0").is_err());
    assert_eq!(ip("-d -o link show kube-ipvs0"), before, "untouched");
    fresh("kube-ipvs0");
}

#[test]
#[ignore = "needs the kernel lab"]
fn sync_binds_host_addresses_and_touches_nothing_else() {
    fresh("kube-ipvs0");
    let mut links = Links::open().unwrap();
    let l = links.ensure_dummy("kube-ipvs0").unwrap();
    let r = links
        .sync(
            "kube-ipvs0",
            l.index,
            &set(&["10.96.0.1", "10.96.0.2", "fd00:96::1"]),
        )
        .unwrap();
    assert_eq!((r.added.len(), r.removed.len()), (3, 0));
    assert_eq!(
        ip_addrs("kube-ipvs0"),
        ["10.96.0.1/32", "10.96.0.2/32", "fd00:96::1/128"]
    );
    let v6 = ip("-o -6 addr show dev kube-ipvs0");
    assert!(!v6.contains("tentative"), "nodad: usable at once: {v6}");
    assert_eq!(
        links.addresses(l.index).unwrap(),
        set(&["10.96.0.1", "10.96.0.2", "fd00:96::1"])
    );

    let r = links
        .sync("kube-ipvs0", l.index, &set(&["10.96.0.2", "10.96.0.3"]))
        .unwrap();
    assert_eq!(r.added, vec!["10.96.0.3".parse::<IpAddr>().unwrap()]);
    assert_eq!(r.removed.len(), 2);
    assert_eq!(ip_addrs("kube-ipvs0"), ["10.96.0.2/32", "10.96.0.3/32"]);
    // Other links' addresses are untouched.
    assert!(ip("-o addr show dev lo").contains("127.0.0.1/8"));
    links.remove_dummy("kube-ipvs0").unwrap();
}

#[test]
#[ignore = "needs the kernel lab"]
fn five_thousand_addresses_then_one_change_costs_one_dump_one_add_one_delete() {
    fresh("kube-ipvs0");
    let mut links = Links::open().unwrap();
    let l = links.ensure_dummy("kube-ipvs0").unwrap();
    let many: BTreeSet<IpAddr> = (0..5000u32)
        .map(|i| IpAddr::from((0x0a60_0000u32 + i + 1).to_be_bytes()))
        .collect();
    let r = links.sync("kube-ipvs0", l.index, &many).unwrap();
    assert_eq!(r.added.len(), 5000);
    assert_eq!(ip_addrs("kube-ipvs0").len(), 5000);

    let mut changed = many.clone();
    let gone = *changed.iter().next().unwrap();
    changed.remove(&gone);
    let new: IpAddr = "10.97.0.1".parse().unwrap();
    changed.insert(new);
    let r = links.sync("kube-ipvs0", l.index, &changed).unwrap();
    assert_eq!(
        (r.added.clone(), r.removed.clone()),
        (vec![new], vec![gone])
    );
    assert_eq!(r.messages, 3, "one dump request, one add, one delete");
    let shown = ip_addrs("kube-ipvs0");
    assert_eq!(shown.len(), 5000);
    assert!(shown.contains(&"10.97.0.1/32".to_string()) && !shown.contains(&format!("{gone}/32")));
    links.remove_dummy("kube-ipvs0").unwrap();
}

#[test]
#[ignore = "needs the kernel lab"]
fn node_sysctls_are_applied_and_read_back() {
    let kernel = sysctl::KernelVersion::running().expect("kernel version");
    assert_eq!(kernel, sysctl::KernelVersion(6, 1));
    let want = sysctl::required(
        sysctl::Options {
            dual_stack: true,
            strict_arp: true,
        },
        kernel,
    );
    let root = Path::new("/proc/sys");
    let applied = sysctl::apply(root, &want).unwrap();
    assert_eq!(applied.len(), want.len());
    for s in &want {
        let v = std::fs::read_to_string(sysctl::path(root, s.name)).unwrap();
        assert_eq!(v.trim(), s.value, "{}", s.name);
    }
    assert!(
        sysctl::apply(root, &want)
            .unwrap()
            .iter()
            .all(|a| !a.changed()),
        "idempotent"
    );
    // A sysctl of a module that is not loaded is a clear error.
    let e = sysctl::apply(
        root,
        &[sysctl::Sysctl {
            name: "net.ipv4.vs.no_such_knob",
            value: "1",
        }],
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("net.ipv4.vs.no_such_knob does not exist"),
        "{e}"
    );
}
