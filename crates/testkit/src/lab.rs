//! Helpers of the kernel-lab tests, every crate's: shell commands, a clean
//! node, namespaces with a veth to the node, manifest directories, and
//! waiting with a diagnosis. They run inside the lab VM, as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `cmd` with bash; its stdout, or a panic naming the command.
pub fn sh(cmd: &str) -> String {
    let (ok, out, err) = try_sh(cmd);
    assert!(ok, "`{cmd}` failed: {out}{err}");
    out
}

/// Whether it succeeded, stdout and stderr.
pub fn try_sh(cmd: &str) -> (bool, String, String) {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .output()
        .expect("bash runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `ok` until it holds; on timeout panics with the agents' last log
/// lines (`/tmp/fw-*.log`, `/tmp/ct-*.log`), the IPVS table and kipvs's
/// nftables table.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        if start.elapsed() > timeout {
            let (_, logs, _) = try_sh("tail -n 30 /tmp/*.log 2>/dev/null");
            let (_, ipvs, _) = try_sh("ipvsadm -Ln");
            let (_, table, _) = try_sh("nft list table inet kipvs");
            panic!(
                "timed out after {timeout:?} waiting for {what}\nipvs:\n{ipvs}\nnft:\n{table}\n\
                 logs:\n{logs}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills every namespace's processes, deletes the node's veths (any name:
/// `h-*`, a test's `veth-*`) and then the namespaces. A veth goes at once
/// with its peer when its node end is deleted; left to the namespace's
/// teardown, which the kernel finishes later, it could still exist when the
/// next test adds one of the same name ("File exists").
pub const CLEAN_NETNS: &str = "for ns in $(ip netns list | cut -d' ' -f1); do \
    ip netns pids $ns | xargs -r kill -9; done; \
    for l in $(ip -o link show type veth | cut -d: -f2 | cut -d@ -f1); do ip link del $l; done; \
    ip -all netns delete 2>/dev/null; true";

/// A clean node: no kipvs, no IPVS services, no kube-ipvs0, no kipvs table,
/// no conntrack entries, no namespaces; forwarding on.
pub fn reset() {
    let _ = try_sh(
        "pkill -9 -x kipvs; ipvsadm -C; ip link del kube-ipvs0 2>/dev/null; \
         nft delete table inet kipvs 2>/dev/null; conntrack -F 2>/dev/null",
    );
    sh(CLEAN_NETNS);
    sh("sysctl -qw net.ipv4.ip_forward=1");
}

/// A namespace `NAME` with `PREFIX.2/24` inside and `PREFIX.1` on the node
/// (veth `h-NAME`), routing `routes` to the node.
pub fn netns(name: &str, prefix: &str, routes: &str) {
    sh(&format!(
        "ip netns add {name} && ip link add h-{name} type veth peer name eth0 netns {name} && \
         ip addr add {prefix}.1/24 dev h-{name} && ip link set h-{name} up && \
         ip -n {name} addr add {prefix}.2/24 dev eth0 && ip -n {name} link set lo up && \
         ip -n {name} link set eth0 up && ip -n {name} route add {routes} via {prefix}.1"
    ));
}

/// A pod namespace `10.244.N.2` routing the pod and Service networks
/// (10.244.0.0/16, 10.96.0.0/16) to the node.
pub fn pod_netns(name: &str, n: u8) {
    netns(name, &format!("10.244.{n}"), "10.244.0.0/16");
    sh(&format!(
        "ip -n {name} route add 10.96.0.0/16 via 10.244.{n}.1"
    ));
}

/// An empty manifest directory for one test.
pub fn manifests(test: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/kipvs-test-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a manifest file atomically (the agent never reads half of it).
pub fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}
