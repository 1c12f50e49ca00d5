//! A node booted with `ipv6.disable=1` (issue 14): `cargo xtask vm test`
//! runs this file alone in a VM booted so. With kipvs's default families
//! (no `--ip-families`), `--init-only` and the agent start, serve IPv4, and
//! set no IPv6 sysctl. Ignored on the host.

use kipvs_testkit::lab::{manifests, reset, sh, try_sh, wait_until, write};
use std::process::{Command, Stdio};
use std::time::Duration;

const KIPVS: &str = env!("CARGO_BIN_EXE_kipvs");

#[test]
#[ignore = "needs the kernel lab booted with ipv6.disable=1"]
fn a_node_without_ipv6_starts_with_the_default_families_and_serves_ipv4() {
    assert!(
        !std::path::Path::new("/proc/sys/net/ipv6").exists(),
        "this test needs a kernel booted with ipv6.disable=1 (cargo xtask vm test does that)"
    );
    reset();
    let (ok, out, err) = try_sh(&format!(
        "{KIPVS} proxy --init-only --hostname-override lab"
    ));
    assert!(ok, "--init-only: {out}{err}");
    assert_eq!(sh("sysctl -n net.ipv4.vs.conntrack").trim(), "1");

    let dir = manifests("no-ipv6");
    write(
        &dir,
        "svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec:\n  clusterIP: 10.96.0.60\n  ports:\n  - {port: 80, targetPort: 9376}\n",
    );
    write(
        &dir,
        "eps.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports:\n  - {port: 9376, protocol: TCP}\n\
         endpoints:\n  - {addresses: [10.244.1.2], conditions: {ready: true}}\n",
    );
    let log = "/tmp/no-ipv6.log";
    let mut agent = Command::new(KIPVS)
        .args(["proxy", "--manifests", dir.to_str().unwrap()])
        .args(["--hostname-override", "lab"])
        .args(["--healthz-bind-address", "127.0.0.1:10256"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_until("the IPv4 Service", Duration::from_secs(60), || {
        try_sh("ipvsadm -Ln").1.contains("TCP  10.96.0.60:80 rr")
    });
    assert_eq!(
        try_sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:10256/healthz").1,
        "200"
    );
    let text = std::fs::read_to_string(log).unwrap();
    assert!(text.contains("the kernel has no IPv6"), "{text}");
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent runs:\n{text}"
    );
    let _ = agent.kill();
    let _ = agent.wait();
    reset();
}
