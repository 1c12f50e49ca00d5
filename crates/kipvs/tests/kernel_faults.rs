//! Faults a real node has and the happy path hides, each on the real kernel
//! with the real `kipvs proxy` binary (issue 14):
//!
//! - a node where nothing loaded IPVS: the agent and `--init-only` load what
//!   they need by using it (the lab boots with no module preloaded, and
//!   `cargo xtask vm test` runs this file first so the first test sees a
//!   fresh kernel);
//! - virtual servers kipvs makes that the address rule cannot claim (an
//!   externalIP that is a node address, a NodePort outside 30000–32767, a
//!   VIP inside `excludeCIDRs`): owned through the record in kipvs's
//!   nftables table across resyncs, removed by `--cleanup`, while a foreign
//!   virtual server at the same addresses survives;
//! - a Service the kernel refuses (scheduler `twos`, not in 6.1): bounded
//!   retries, every other Service serving, health still 200;
//! - an nftables write the kernel refuses (a full set): no new VIP is bound
//!   or served until the table can be written again.
//!
//! Ignored on the host; `cargo xtask vm test faults_` runs them (test names
//! sort so the fresh-node test comes first).

use kipvs_testkit::lab::{manifests, pod_netns, reset, sh, try_sh, wait_until, write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KIPVS: &str = env!("CARGO_BIN_EXE_kipvs");

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// `kipvs proxy` on a manifest directory, its log in `/tmp/faults-NAME.log`,
    /// with `PATH` overridden when `path` is given.
    fn start(dir: &Path, extra: &[&str], name: &str, path: Option<&str>) -> Agent {
        let log = PathBuf::from(format!("/tmp/faults-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(KIPVS);
        cmd.args(["proxy", "--manifests", dir.to_str().unwrap()])
            .args(["--hostname-override", "lab", "--ip-families", "ipv4"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        Agent {
            child: cmd.spawn().expect("kipvs starts"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        sh(&format!("kill -TERM {}", self.child.id()));
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A measurement line the test harness does not capture.
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "kernel_faults: {line}");
}

fn service(name: &str, vip: &str, extra_spec: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\n\
         metadata: {{name: {name}, namespace: default{annotations}}}\n\
         spec:\n  clusterIP: {vip}\n{extra_spec}  ports:\n\
         \x20 - {{name: http, port: 80, targetPort: 9376, protocol: TCP}}\n"
    )
}

fn slice(service: &str, pods: &[u8]) -> String {
    let eps: String = pods
        .iter()
        .map(|n| {
            format!(
                "  - {{addresses: [10.244.{n}.2], conditions: {{ready: true}}, nodeName: lab}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {service}-1, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports:\n  - {{name: http, port: 9376, protocol: TCP}}\n\
         endpoints:\n{eps}"
    )
}

/// A pod namespace answering its name on 9376.
fn pod(name: &str, n: u8) {
    pod_netns(name, n);
    sh(&format!(
        "mkdir -p /tmp/www-{name} && echo {name} > /tmp/www-{name}/index.html && \
         ip netns exec {name} busybox httpd -p 9376 -h /tmp/www-{name}"
    ));
}

fn ipvs() -> String {
    sh("ipvsadm -Ln")
}

fn has_vs(listing: &str, vs: &str) -> bool {
    listing
        .lines()
        .any(|l| l.starts_with(&format!("TCP  {vs} ")))
}

fn loaded(module: &str) -> bool {
    std::fs::read_to_string("/proc/modules")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').next() == Some(module))
}

/// A metric's value from the agent's `/metrics` on 127.0.0.1:10249.
fn metric(name: &str) -> f64 {
    let text = try_sh("curl -s --max-time 3 http://127.0.0.1:10249/metrics").1;
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn http_code(url: &str) -> String {
    try_sh(&format!(
        "curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 {url}"
    ))
    .1
}

/// Named to run first: `cargo xtask vm test` boots with no module
/// preloaded and runs this file before any other, so nothing loaded IPVS,
/// dummy or nf_tables yet (a node that never ran kube-proxy in IPVS mode).
#[test]
#[ignore = "needs the kernel lab"]
fn faults_a_node_that_never_loaded_ipvs_starts_the_agent_and_init_only() {
    for m in ["ip_vs", "dummy", "nf_tables"] {
        assert!(
            !loaded(m),
            "{m} is loaded already: run this test first in a fresh lab VM \
             (cargo xtask vm test runs kernel_faults first)"
        );
    }
    let dir = manifests("faults-fresh");
    write(&dir, "svc.yaml", &service("web", "10.96.0.10", "", ""));
    write(&dir, "eps.yaml", &slice("web", &[1]));
    let mut agent = Agent::start(
        &dir,
        &["--healthz-bind-address", "", "--metrics-bind-address", ""],
        "fresh",
        None,
    );
    // Every module loads on demand (IPVS, scheduler, dummy, nf_tables and
    // each nft expression through busybox's modprobe): slow under TCG on a
    // busy host, so a generous limit, but an agent that exits fails at once.
    let started = Instant::now();
    wait_until(
        "the agent programs the Service",
        Duration::from_secs(180),
        || {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("the agent exited ({status}):\n{}", agent.log());
            }
            has_vs(&ipvs(), "10.96.0.10:80")
        },
    );
    report(&format!(
        "fresh node: the agent programmed its first Service {:?} after starting",
        started.elapsed()
    ));
    for m in ["ip_vs", "ip_vs_rr", "dummy", "nf_tables"] {
        assert!(loaded(m), "{m} was loaded on demand");
    }
    assert_eq!(sh("sysctl -n net.ipv4.vs.conntrack").trim(), "1");
    assert!(sh("ip -o addr show dev kube-ipvs0").contains("10.96.0.10"));
    agent.stop();
    sh(&format!(
        "{KIPVS} proxy --cleanup --hostname-override lab --ip-families ipv4"
    ));

    // The init container's part alone, on a kernel where ip_vs is gone
    // again (unloaded: nothing uses it after the cleanup).
    sh("ipvsadm -C; rmmod ip_vs_rr; rmmod ip_vs");
    assert!(!loaded("ip_vs"));
    let (ok, out, err) = try_sh(&format!(
        "{KIPVS} proxy --init-only --hostname-override lab --ip-families ipv4"
    ));
    assert!(ok, "--init-only on a node without ip_vs: {out}{err}");
    assert!(loaded("ip_vs"));
    assert_eq!(sh("sysctl -n net.ipv4.vs.expire_nodest_conn").trim(), "1");
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn faults_ownership_covers_node_address_external_ips_high_node_ports_and_excluded_vips() {
    reset();
    // A node address (bare metal: the externalIP is the node's own).
    sh("ip link add node0 type dummy; ip addr add 192.168.50.1/24 dev node0; ip link set node0 up");
    // Someone else's virtual servers at addresses and ports kipvs also uses.
    sh("ipvsadm -A -t 10.96.0.20:9999 -s wlc; ipvsadm -A -t 192.168.50.1:443 -s wlc");
    let dir = manifests("faults-owned");
    write(
        &dir,
        "edge.yaml",
        &service(
            "edge",
            "10.96.0.20",
            "  type: NodePort\n  externalIPs: [192.168.50.1]\n",
            "",
        )
        .replace("protocol: TCP}", "protocol: TCP, nodePort: 35000}"),
    );
    write(&dir, "edge-eps.yaml", &slice("edge", &[1]));
    write(&dir, "hidden.yaml", &service("hidden", "10.97.0.5", "", ""));
    write(&dir, "hidden-eps.yaml", &slice("hidden", &[1]));
    let flags = [
        "--ipvs-sync-period",
        "5s",
        "--ipvs-exclude-cidrs",
        "10.97.0.0/16",
        "--healthz-bind-address",
        "127.0.0.1:10256",
        "--metrics-bind-address",
        "127.0.0.1:10249",
    ];
    let agent = Agent::start(&dir, &flags, "owned", None);
    let ours = [
        "10.96.0.20:80",
        "192.168.50.1:80",
        "192.168.50.1:35000",
        "10.97.0.5:80",
    ];
    wait_until(
        "every virtual server of both Services",
        Duration::from_secs(60),
        || {
            let l = ipvs();
            ours.iter().all(|vs| has_vs(&l, vs))
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let (syncs, messages) = (
        metric("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        metric("kipvs_netlink_messages_total"),
    );
    // Five resync periods.
    std::thread::sleep(Duration::from_secs(25));
    let (syncs2, messages2) = (
        metric("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        metric("kipvs_netlink_messages_total"),
    );
    report(&format!(
        "in 25 s at a 5 s sync period: {} syncs, {} netlink messages",
        syncs2 - syncs,
        messages2 - messages
    ));
    assert!(
        syncs2 - syncs <= 6.0,
        "{} syncs in 5 periods\n{}",
        syncs2 - syncs,
        agent.log()
    );
    assert!(
        !agent.log().contains("already exists"),
        "no fight over its own virtual servers:\n{}",
        agent.log()
    );
    assert_eq!(http_code("http://127.0.0.1:10256/healthz"), "200");
    assert_eq!(http_code("http://127.0.0.1:10256/livez"), "200");
    let l = ipvs();
    assert!(l.contains("TCP  10.96.0.20:9999 wlc"), "{l}");
    assert!(l.contains("TCP  192.168.50.1:443 wlc"), "{l}");
    // The record, in the kernel.
    let record = sh("nft list set inet kipvs owned-v4");
    for (addr, port) in [("192.168.50.1", "35000"), ("10.97.0.5", "80")] {
        assert!(record.contains(addr) && record.contains(port), "{record}");
    }

    // A restart adopts them all and changes nothing.
    agent.stop();
    let before = ipvs();
    let agent = Agent::start(&dir, &flags, "owned-2", None);
    wait_until(
        "the restarted agent's first sync",
        Duration::from_secs(30),
        || metric("kubeproxy_sync_proxy_rules_duration_seconds_count") >= 1.0,
    );
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(ipvs(), before, "a restart changed the table");
    assert!(!agent.log().contains("already exists"), "{}", agent.log());
    agent.stop();

    // --cleanup removes all of kipvs's, and only kipvs's.
    sh(&format!(
        "{KIPVS} proxy --cleanup --hostname-override lab --ip-families ipv4 \
         --ipvs-exclude-cidrs 10.97.0.0/16"
    ));
    let l = ipvs();
    for vs in ours {
        assert!(!has_vs(&l, vs), "{vs} left behind:\n{l}");
    }
    assert!(l.contains("TCP  10.96.0.20:9999 wlc"), "{l}");
    assert!(l.contains("TCP  192.168.50.1:443 wlc"), "{l}");
    sh("ip link del node0");
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn faults_refused_scheduler_costs_bounded_retries_while_other_services_serve() {
    reset();
    pod("p1", 1);
    let dir = manifests("faults-refused");
    write(
        &dir,
        "bad.yaml",
        &service(
            "bad",
            "10.96.0.30",
            "",
            ", annotations: {kipvs.io/scheduler: twos}",
        ),
    );
    write(&dir, "bad-eps.yaml", &slice("bad", &[1]));
    write(&dir, "good.yaml", &service("good", "10.96.0.31", "", ""));
    write(&dir, "good-eps.yaml", &slice("good", &[1]));
    let agent = Agent::start(
        &dir,
        &[
            "--ipvs-sync-period",
            "5s",
            "--healthz-bind-address",
            "127.0.0.1:10256",
            // As a migration from kube-proxy may copy it.
            "--metrics-bind-address",
            "0.0.0.0:10249",
        ],
        "refused",
        None,
    );
    wait_until("the good Service", Duration::from_secs(60), || {
        has_vs(&ipvs(), "10.96.0.31:80")
    });
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(20));
    let log = agent.log();
    let attempts = log
        .lines()
        .filter(|l| l.contains("retrying later") && l.contains("default/bad"))
        .count();
    report(&format!(
        "{attempts} attempts at the refused Service in {:?}",
        start.elapsed()
    ));
    // 1 s, 2 s, 4 s, 8 s … apart: at most 6 in ~21 s, whatever the
    // 5 s resyncs do.
    assert!((3..=6).contains(&attempts), "{attempts} attempts:\n{log}");
    let refusal = log
        .lines()
        .find(|l| l.contains("retrying later"))
        .unwrap()
        .to_owned();
    assert!(
        refusal.contains("ip_vs_twos"),
        "names the module: {refusal}"
    );
    assert!(!has_vs(&ipvs(), "10.96.0.30:80"));
    assert_eq!(
        sh("curl -s --max-time 3 http://10.96.0.31/").trim(),
        "p1",
        "the other Service serves"
    );
    assert_eq!(http_code("http://127.0.0.1:10256/healthz"), "200");
    assert!(metric("kipvs_sync_errors_total") >= attempts as f64);
    let explained = sh(&format!("{KIPVS} explain default/bad"));
    assert!(explained.contains("ip_vs_twos"), "{explained}");
    // On every address, /metrics answers anyone; the inspection API only
    // this node's loopback.
    let from_pod = |path: &str| {
        try_sh(&format!(
            "ip netns exec p1 curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 \
             http://10.244.1.1:10249{path}"
        ))
        .1
    };
    assert_eq!(from_pod("/metrics"), "200");
    assert_eq!(from_pod("/kipvs/v1/virtual-servers"), "403");
    assert_eq!(from_pod("/kipvs/v1/explain/default/bad"), "403");
    agent.stop();
    reset();
}

#[test]
#[ignore = "needs the kernel lab"]
fn faults_unwritable_nft_table_binds_no_new_vip_until_it_can() {
    reset();
    pod("p1", 1);
    // The injection: `nft -f` (whole-table writes) fails while
    // /tmp/nft-fail exists; element writes go over netlink and meet a
    // real kernel refusal, a full set.
    sh("mkdir -p /tmp/fault-bin && printf '%s\\n' '#!/bin/bash' \
        'if [ -e /tmp/nft-fail ] && [[ \" $* \" == *\" -f \"* ]]; then echo \"Error: injected\" >&2; exit 1; fi' \
        'exec /usr/sbin/nft \"$@\"' > /tmp/fault-bin/nft && chmod +x /tmp/fault-bin/nft");
    let dir = manifests("faults-nft");
    write(&dir, "a.yaml", &service("a", "10.96.0.40", "", ""));
    write(&dir, "a-eps.yaml", &slice("a", &[1]));
    let agent = Agent::start(
        &dir,
        &["--healthz-bind-address", "", "--metrics-bind-address", ""],
        "nft",
        Some("/tmp/fault-bin:/usr/local/bin:/usr/sbin:/usr/bin"),
    );
    wait_until("Service a", Duration::from_secs(60), || {
        has_vs(&ipvs(), "10.96.0.40:80")
    });
    std::thread::sleep(Duration::from_secs(1));
    // The owned-v4 set made full at its current size (same skeleton
    // comment, so kipvs keeps it as its own).
    let table = sh("/usr/sbin/nft list table inet kipvs");
    let n = sh("/usr/sbin/nft -j list set inet kipvs owned-v4")
        .matches("\"concat\"")
        .count();
    assert!(n >= 1, "{table}");
    let limited = table.replacen(
        "set owned-v4 {\n\t\ttype ipv4_addr . inet_proto . inet_service\n",
        &format!("set owned-v4 {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\tsize {n}\n"),
        1,
    );
    assert_ne!(limited, table, "the set declaration was found:\n{table}");
    std::fs::write(
        "/tmp/limited.nft",
        format!("delete table inet kipvs\n{limited}"),
    )
    .unwrap();
    sh("/usr/sbin/nft -f /tmp/limited.nft && touch /tmp/nft-fail");

    write(&dir, "b.yaml", &service("b", "10.96.0.41", "", ""));
    write(&dir, "b-eps.yaml", &slice("b", &[1]));
    wait_until("the refused write", Duration::from_secs(30), || {
        agent.log().contains("held back")
    });
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert!(!has_vs(&ipvs(), "10.96.0.41:80"), "{}", agent.log());
        assert!(
            !sh("ip -o addr show dev kube-ipvs0").contains("10.96.0.41"),
            "a VIP bound without its filter"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        sh("curl -s --max-time 3 http://10.96.0.40/").trim(),
        "p1",
        "what was in place stays"
    );
    // Writable again: the next retry writes the table whole, then serves b.
    sh("rm /tmp/nft-fail");
    wait_until(
        "Service b after the table is written",
        Duration::from_secs(30),
        || has_vs(&ipvs(), "10.96.0.41:80"),
    );
    let record = sh("/usr/sbin/nft list set inet kipvs owned-v4");
    assert!(record.contains("10.96.0.41"), "{record}");
    assert_eq!(sh("curl -s --max-time 3 http://10.96.0.41/").trim(), "p1");
    agent.stop();
    reset();
}
