//! Helpers for the kernel tests: run `ipvsadm` and friends, read their
//! output. Only used inside the lab VM (root, real IPVS).
#![allow(dead_code)]

use std::process::Command;

/// iproute2's `ip` (busybox `sh` prefers its own, smaller `ip` applet).
pub fn iproute2() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| {
            std::fs::canonicalize(p).is_ok_and(|c| c.file_name().is_some_and(|n| n != "busybox"))
        })
        .unwrap_or("ip")
}

/// `sh -c` with `ip` meaning iproute2.
pub fn shell(cmd: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ip() {{ {} \"$@\"; }}\n{cmd}", iproute2()));
    c
}

/// Run a shell command line, panic with its output if it fails, return its
/// stdout.
pub fn sh(cmd: &str) -> String {
    let out = shell(cmd)
        .output()
        .unwrap_or_else(|e| panic!("running `{cmd}`: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Run a shell command line that is expected to fail; return its stderr.
pub fn sh_fails(cmd: &str) -> String {
    let out = shell(cmd).output().unwrap();
    assert!(!out.status.success(), "`{cmd}` succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ipvsadm ARGS`.
pub fn ipvsadm(args: &str) -> String {
    sh(&format!("ipvsadm {args}"))
}

/// The lines of `ipvsadm -S -n`, sorted (dump order is hash order).
pub fn saved() -> Vec<String> {
    let mut lines: Vec<String> = ipvsadm("-S -n").lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Sorted owned lines.
pub fn lines(expected: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The whitespace-separated fields of the `ipvsadm -Ln --exact ARGS` line
/// that starts with `prefix` (after trimming).
pub fn listed(args: &str, prefix: &str) -> Vec<String> {
    let out = ipvsadm(&format!("-Ln --exact {args}"));
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{out}"));
    line.split_whitespace().map(str::to_owned).collect()
}

/// A clean table (the lab kernel is throwaway).
pub fn reset() {
    ipvsadm("-C");
    ipvsadm("--set 900 120 300");
}

/// A client namespace `kc` (192.168.10.2) and a server namespace `ks`
/// (192.168.20.2, busybox httpd on :80 answering `hello-from-ks`), routed
/// through this node, with `vip` on `lo`. Leftovers of an earlier test that
/// failed before its teardown are removed first.
pub fn setup_namespaces(vip: &str) {
    teardown_namespaces(vip);
    sh("ip netns add kc && ip netns add ks");
    sh("ip link add kc0 type veth peer name eth0 netns kc");
    sh("ip link add ks0 type veth peer name eth0 netns ks");
    sh("ip addr add 192.168.10.1/24 dev kc0 && ip link set kc0 up");
    sh("ip addr add 192.168.20.1/24 dev ks0 && ip link set ks0 up");
    for (ns, net) in [("kc", 10), ("ks", 20)] {
        sh(&format!(
            "ip -n {ns} link set lo up && ip -n {ns} addr add 192.168.{net}.2/24 dev eth0 \
             && ip -n {ns} link set eth0 up && ip -n {ns} route add default via 192.168.{net}.1"
        ));
    }
    sh("echo 1 > /proc/sys/net/ipv4/ip_forward");
    sh(&format!("ip addr add {vip}/32 dev lo"));
    sh("mkdir -p /tmp/www && echo hello-from-ks > /tmp/www/index.html");
    sh("ip netns exec ks busybox httpd -p 80 -h /tmp/www");
}

/// Removes what [`setup_namespaces`] made (missing parts are fine). The
/// node's veth ends go first: deleting one takes its peer at once, while a
/// namespace's own teardown finishes later and could leave `kc0` in the way
/// of the next `ip link add`.
pub fn teardown_namespaces(vip: &str) {
    let _ = shell(&format!(
        "for p in $(ip netns pids ks 2>/dev/null); do kill $p; done; \
         ip link del kc0 2>/dev/null; ip link del ks0 2>/dev/null; \
         ip netns del kc 2>/dev/null; ip netns del ks 2>/dev/null; \
         ip addr del {vip}/32 dev lo 2>/dev/null"
    ))
    .status();
}
