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
