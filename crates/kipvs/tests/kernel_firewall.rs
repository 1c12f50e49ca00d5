//! kipvs's nftables table end to end in the kernel lab, with real traffic
//! through the real `kipvs proxy` binary: masquerade (NodePort from outside,
//! `externalTrafficPolicy: Local`, hairpin), the VIP port filter, immediate
//! refusal without endpoints, `loadBalancerSourceRanges`, and the table
//! changing by elements only and surviving a restart unchanged, cross-checked
//! with `nft`. Run by `cargo xtask vm test firewall_`; ignored on the host.
//!
//! The network: "pods" are namespaces `10.244.N.2` behind `10.244.N.1` that
//! route only `10.244.0.0/16` and `10.96.0.0/16` to the node, so a reply to an outside
//! client returns only when the node masqueraded the request. Outside
//! clients are namespaces `192.168.N.2` (N = 50, 60) whose default route is
//! the node (`192.168.N.1`, a node address, so a NodePort address).

use kipvs_testkit::lab::{manifests, netns, pod_netns, reset, sh, try_sh, wait_until, write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A pod answering its own name on 9376 (`/`) and the client address it
/// sees (`/cgi-bin/ip`), with routes to the pod and Service networks only.
fn pod(name: &str, n: u8) {
    pod_netns(name, n);
    sh(&format!(
        "mkdir -p /tmp/www-{name}/cgi-bin && echo {name} > /tmp/www-{name}/index.html && \
         printf '#!/bin/bash\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' \
           > /tmp/www-{name}/cgi-bin/ip && chmod +x /tmp/www-{name}/cgi-bin/ip && \
         ip netns exec {name} busybox httpd -p 9376 -h /tmp/www-{name}"
    ));
}

fn outside(name: &str, n: u8) {
    netns(name, &format!("192.168.{n}"), "default");
}

/// An HTTP GET from a namespace: the body, or curl's error.
fn get(ns: &str, url: &str) -> Result<String, String> {
    let (ok, out, err) = try_sh(&format!("ip netns exec {ns} curl -sS --max-time 2 {url}"));
    if ok {
        Ok(out.trim().to_owned())
    } else {
        Err(err.trim().to_owned())
    }
}

/// A Service `name` with port 80 → 9376 and `spec` lines added.
fn service(name: &str, vip: &str, spec: &str, port_extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  clusterIP: {vip}\n{spec}  ports:\n\
         \x20 - {{name: http, port: 80, targetPort: 9376, protocol: TCP{port_extra}}}\n"
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
    let eps = if eps.is_empty() {
        " []\n".to_owned()
    } else {
        format!("\n{eps}")
    };
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {service}-1, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports:\n  - {{name: http, port: 9376, protocol: TCP}}\n\
         endpoints:{eps}"
    )
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(dir: &Path, extra: &[&str], log: &str) -> Agent {
        let log = PathBuf::from(format!("/tmp/fw-{log}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kipvs"))
            .args(["proxy", "--manifests", dir.to_str().unwrap()])
            .args(["--hostname-override", "lab", "--ip-families", "ipv4"])
            .args(["--healthz-bind-address", "", "--metrics-bind-address", ""])
            .args(extra)
            .env("RUST_LOG", "info,kipvs_proxy=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("kipvs starts");
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn table() -> String {
    sh("nft -a list table inet kipvs")
}

/// Whether a set of kipvs's table holds an element (the lab has no
/// /etc/protocols, so nft prints protocols by number there).
fn set_has(set: &str, element: &str) -> bool {
    let listed = try_sh(&format!("nft list set inet kipvs {set}")).1;
    let numeric = element
        .replace(" . tcp . ", " . 6 . ")
        .replace(" . udp . ", " . 17 . ");
    listed.contains(element) || listed.contains(&numeric)
}

/// Lines of `a` not in `b` and of `b` not in `a`.
fn changed_lines(a: &str, b: &str) -> Vec<String> {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    la.iter()
        .filter(|l| !lb.contains(l))
        .map(|l| format!("- {l}"))
        .chain(
            lb.iter()
                .filter(|l| !la.contains(l))
                .map(|l| format!("+ {l}")),
        )
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn firewall_masquerades_node_ports_keeps_local_client_ips_and_hairpins() {
    reset();
    pod("pod-a", 1);
    pod("pod-b", 2);
    pod("pod-c", 3);
    // pod-b serves an externalTrafficPolicy: Local Service: the client's
    // address is kept, so pod-b needs a route back to it (as a real
    // network would have).
    sh("ip -n pod-b route add 192.168.50.0/24 via 10.244.2.1");
    outside("outside", 50);
    let dir = manifests("fw-masq");
    let np = "  type: NodePort\n";
    write(
        &dir,
        "web.yaml",
        &service("web", "10.96.2.10", np, ", nodePort: 30080"),
    );
    write(&dir, "web-slice.yaml", &slice("web", &[1]));
    let local = "  type: NodePort\n  externalTrafficPolicy: Local\n";
    write(
        &dir,
        "local.yaml",
        &service("local", "10.96.2.11", local, ", nodePort: 30081"),
    );
    write(&dir, "local-slice.yaml", &slice("local", &[2]));
    write(&dir, "self.yaml", &service("self", "10.96.2.12", "", ""));
    write(&dir, "self-slice.yaml", &slice("self", &[1]));
    let extra = [
        "--cluster-cidr",
        "10.244.0.0/16",
        "--ipvs-sync-period",
        "2s",
    ];
    let agent = Agent::start(&dir, &extra, "masq");
    wait_until(
        "the table and the NodePorts",
        Duration::from_secs(20),
        || {
            set_has("external-ports-v4", "192.168.50.1 . tcp . 30080")
                && try_sh("ipvsadm -Ln -t 192.168.50.1:30081").0
        },
    );

    // Outside → NodePort → pod-a: the reply returns only through the
    // node's masquerade (pod-a has no route to 192.168.50.0/24).
    assert_eq!(
        get("outside", "http://192.168.50.1:30080/"),
        Ok("pod-a".into())
    );
    // Outside → ClusterIP: from outside clusterCIDR, so masqueraded too.
    assert_eq!(get("outside", "http://10.96.2.10/"), Ok("pod-a".into()));
    // externalTrafficPolicy: Local keeps the client's address.
    let seen = get("outside", "http://192.168.50.1:30081/cgi-bin/ip").unwrap();
    assert!(seen.contains("192.168.50.2"), "pod-b saw {seen}");
    // Hairpin: pod-a reaches a Service whose only endpoint is pod-a.
    assert_eq!(get("pod-a", "http://10.96.2.12/"), Ok("pod-a".into()));
    // Inside clusterCIDR, pod-c → web is not masqueraded: pod-a sees pod-c.
    let seen = get("pod-c", "http://10.96.2.10/cgi-bin/ip").unwrap();
    assert!(seen.contains("10.244.3.2"), "pod-a saw {seen}");

    // Without kipvs's table the NodePort fails: the reply has no way back.
    // (The agent is stopped first: its 2 s resync would put the table back.)
    drop(agent);
    sh("nft delete table inet kipvs");
    let without = get("outside", "http://192.168.50.1:30080/");
    assert!(without.is_err(), "without masquerade: {without:?}");
    let hairpin_without = get("pod-a", "http://10.96.2.12/");
    assert!(
        hairpin_without.is_err(),
        "hairpin without masquerade: {hairpin_without:?}"
    );
    // A new agent writes the table whole again.
    let agent = Agent::start(&dir, &extra, "masq-again");
    wait_until("the table back", Duration::from_secs(20), || {
        set_has("external-ports-v4", "192.168.50.1 . tcp . 30080")
    });
    assert_eq!(
        get("outside", "http://192.168.50.1:30080/"),
        Ok("pod-a".into())
    );
    assert!(agent.log().contains("nft_replaced=true"), "{}", agent.log());
    // The first sync wrote the table whole and kept the ruleset generation
    // its write left: the next resync reads none of the table back.
    wait_until("a second resync", Duration::from_secs(10), || {
        agent.log().matches("kernel read").count() >= 2
    });
    let log = agent.log();
    let second = log
        .lines()
        .filter(|l| l.contains("kernel read"))
        .nth(1)
        .unwrap();
    assert!(second.contains("nft_unchanged=true"), "{log}");
    // The periodic resync (2 s here) repairs a table deleted by hand.
    sh("nft delete table inet kipvs");
    wait_until("the table repaired", Duration::from_secs(10), || {
        set_has("external-ports-v4", "192.168.50.1 . tcp . 30080")
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        get("outside", "http://192.168.50.1:30080/"),
        Ok("pod-a".into())
    );
    // One element deleted by hand is repaired too: the resync skips reading
    // the table only while the ruleset generation is the one kipvs left, and
    // this deletion moves it.
    sh("nft delete element inet kipvs external-ports-v4 '{ 192.168.50.1 . tcp . 30080 }'");
    assert!(!set_has("external-ports-v4", "192.168.50.1 . tcp . 30080"));
    wait_until("the element repaired", Duration::from_secs(10), || {
        set_has("external-ports-v4", "192.168.50.1 . tcp . 30080")
    });

    // An endpoint change alters set elements only: web moves to pod-c.
    let before = table();
    write(&dir, "web-slice.yaml", &slice("web", &[3]));
    wait_until(
        "pod-c in web's hairpin elements",
        Duration::from_secs(10),
        || set_has("hairpin-v4", "10.244.3.2 . tcp . 9376 . 10.244.3.2"),
    );
    let after = table();
    let changed = changed_lines(&before, &after);
    eprintln!(
        "an endpoint change, `nft -a list table` lines changed:\n{}",
        changed.join("\n")
    );
    assert!(!changed.is_empty() && changed.len() <= 4, "{changed:#?}");
    assert!(
        changed.iter().all(|l| l.contains("10.244.")),
        "only hairpin elements changed: {changed:#?}"
    );
    assert_eq!(
        get("outside", "http://192.168.50.1:30080/"),
        Ok("pod-c".into())
    );

    // A restart adopts the table: identical, handles included (no rewrite).
    let before = table();
    drop(agent);
    let agent = Agent::start(&dir, &extra, "masq-restart");
    wait_until(
        "the restarted agent's first sync",
        Duration::from_secs(20),
        || agent.log().contains("synced"),
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(table(), before, "{}", agent.log());
    assert!(
        !agent.log().contains("nft_replaced=true"),
        "{}",
        agent.log()
    );
    assert_eq!(
        get("outside", "http://192.168.50.1:30080/"),
        Ok("pod-c".into())
    );
}

/// Seconds a TCP connect from `ns` took and whether (and how) it failed.
fn connect(ns: &str, addr: &str, port: u16) -> (f64, Result<(), String>) {
    let start = Instant::now();
    let (ok, _, err) = try_sh(&format!(
        "ip netns exec {ns} timeout 5 bash -c 'exec 3<>/dev/tcp/{addr}/{port}'"
    ));
    let secs = start.elapsed().as_secs_f64();
    (
        secs,
        if ok {
            Ok(())
        } else {
            Err(err.trim().to_owned())
        },
    )
}

/// A TCP connect from namespace `ns`, timed: seconds and the outcome.
///
/// In the lab the node is a few function calls away: the client's SYN is
/// processed, and IPVS's ICMP port unreachable delivered back, inside the
/// client's own connect() call while it holds its socket, where Linux
/// records an ICMP error only as a soft error, and the connect ends at the
/// SYN retransmit (1 s). A real client is a network away. So the client runs
/// on CPU 1 and the node's side of its veth is steered to CPU 0 (RPS): the
/// ICMP arrives while the client waits, as on a network.
fn connect_from_afar(ns: &str, addr: &str, port: u16) -> (f64, Result<(), String>) {
    use std::os::fd::AsRawFd;
    sh(&format!(
        "echo 1 > /sys/class/net/h-{ns}/queues/rx-0/rps_cpus"
    ));
    let target: std::net::SocketAddr = format!("{addr}:{port}").parse().unwrap();
    let netns = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: plain syscalls on this thread only, with valid arguments.
        unsafe {
            assert_eq!(libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET), 0);
            let mut cpus: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(1, &mut cpus);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &cpus);
        }
        let start = Instant::now();
        let r = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .map(|_| ())
            .map_err(|e| e.to_string());
        (start.elapsed().as_secs_f64(), r)
    })
    .join()
    .unwrap()
}

#[test]
#[ignore = "needs the kernel lab"]
fn firewall_rejects_non_service_ports_on_vips_and_refuses_at_once_without_endpoints() {
    reset();
    pod("pod-a", 1);
    netns("client", "10.244.9", "default");
    // The node's own "sshd": listening on every address, VIPs included.
    let listener =
        sh("busybox nc -ll -p 2222 -e /usr/bin/cat </dev/null >/dev/null 2>&1 & echo $!");
    let dir = manifests("fw-filter");
    write(&dir, "web.yaml", &service("web", "10.96.3.10", "", ""));
    write(&dir, "web-slice.yaml", &slice("web", &[1]));
    write(&dir, "empty.yaml", &service("empty", "10.96.3.11", "", ""));
    write(&dir, "empty-slice.yaml", &slice("empty", &[]));
    let udp = "apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: default}\n\
               spec:\n  clusterIP: 10.96.3.12\n  ports:\n  - {name: dns, port: 53, protocol: UDP}\n";
    write(&dir, "dns.yaml", udp);
    let agent = Agent::start(&dir, &["--ipvs-sync-period", "2s"], "filter");
    wait_until("the VIP filter's elements", Duration::from_secs(20), || {
        set_has("vip-ports-v4", "10.96.3.12 . udp . 53")
            && set_has("vip-ports-v4", "10.96.3.11 . tcp . 80")
    });

    // The service port works; another port on the VIP is refused at once.
    assert_eq!(get("client", "http://10.96.3.10/"), Ok("pod-a".into()));
    // Timed in-process: `ip netns exec … bash` alone can take over a second
    // of a busy TCG guest.
    let (secs, r) = connect_from_afar("client", "10.96.3.10", 2222);
    eprintln!("VIP:2222 with the filter: {r:?} after {secs:.3} s");
    assert!(
        r.as_ref().is_err_and(|e| e.contains("Connection refused")),
        "{r:?}"
    );
    assert!(secs < 1.0, "{secs}");
    // From the node itself, too.
    let (ok, _, _) = try_sh("timeout 3 bash -c 'exec 3<>/dev/tcp/10.96.3.10/2222'");
    assert!(!ok, "the node reaches its own :2222 through a VIP");

    // Without the table, VIP:2222 reaches the node's listener (k/k #72236).
    // (The agent is stopped first: its 2 s resync would put the table back.)
    drop(agent);
    sh("nft delete table inet kipvs");
    let (_, r) = connect("client", "10.96.3.10", 2222);
    assert_eq!(r, Ok(()), "without the filter the node's port answers");
    let (secs, r) = connect_from_afar("client", "10.96.3.11", 80);
    eprintln!("no endpoints, without kipvs's table: {r:?} after {secs:.3} s");
    let agent = Agent::start(&dir, &["--ipvs-sync-period", "2s"], "filter-again");
    wait_until("the table back", Duration::from_secs(20), || {
        set_has("vip-ports-v4", "10.96.3.10 . tcp . 80")
    });
    let (_, r) = connect("client", "10.96.3.10", 2222);
    assert!(r.is_err(), "{r:?}");

    // No endpoints: IPVS refuses at once, and nothing of kipvs drops it.
    let (secs, r) = connect_from_afar("client", "10.96.3.11", 80);
    eprintln!("a Service without endpoints: {r:?} after {secs:.3} s");
    let (s2, r2) = connect("client", "10.96.3.11", 80);
    eprintln!("the same from bash in the client namespace (no CPU split): {r2:?} after {s2:.3} s");
    assert!(r.as_ref().is_err_and(|e| e.contains("refused")), "{r:?}");
    assert!(secs < 1.0, "refused, not timed out: {secs}");
    assert!(r2.is_err_and(|e| e.contains("Connection refused")));
    let curl = get("client", "http://10.96.3.11/");
    // curl's 7: could not connect (refused), not 28 (timed out).
    assert!(curl.as_ref().is_err_and(|e| e.contains("(7)")), "{curl:?}");
    // UDP: the ICMP port unreachable comes back; a connected socket's next
    // send reports it.
    let (ok, _, err) = try_sh(
        "ip netns exec client timeout 5 bash -c \
         'exec 3<>/dev/udp/10.96.3.12/53; echo a >&3; sleep 0.3; echo b >&3'",
    );
    assert!(!ok && err.contains("Connection refused"), "UDP: {err}");
    drop(agent);
    let _ = try_sh(&format!("kill {}", listener.trim()));
}

#[test]
#[ignore = "needs the kernel lab"]
fn firewall_lets_only_source_ranges_reach_a_load_balancer_ip() {
    reset();
    pod("pod-a", 1);
    outside("allowed", 50);
    outside("other", 60);
    let dir = manifests("fw-lb");
    let lb = service(
        "lb",
        "10.96.4.10",
        "  type: LoadBalancer\n  loadBalancerSourceRanges: [192.168.50.0/24]\n",
        ", nodePort: 30090",
    ) + "status:\n  loadBalancer:\n    ingress:\n    - ip: 203.0.113.10\n";
    write(&dir, "lb.yaml", &lb);
    write(&dir, "lb-slice.yaml", &slice("lb", &[1]));
    let _agent = Agent::start(&dir, &[], "lb");
    wait_until("the source ranges", Duration::from_secs(20), || {
        set_has("lb-allowed-v4", "203.0.113.10 . tcp . 80 . 192.168.50.0/24")
            && try_sh("ipvsadm -Ln -t 203.0.113.10:80").0
    });
    // 192.168.50.0/24 holds a node address (192.168.50.1): the LB IP itself
    // is an allowed source, so the node reaches its own LB IP.
    assert!(set_has(
        "lb-allowed-v4",
        "203.0.113.10 . tcp . 80 . 203.0.113.10"
    ));
    assert_eq!(get("allowed", "http://203.0.113.10/"), Ok("pod-a".into()));
    let other = get("other", "http://203.0.113.10/");
    assert!(
        other.is_err(),
        "192.168.60.2 is outside the ranges: {other:?}"
    );
    // The NodePort of the same Service is not restricted.
    assert_eq!(
        get("other", "http://192.168.60.1:30090/"),
        Ok("pod-a".into())
    );
    let (ok, out, _) = try_sh("curl -sS --max-time 2 http://203.0.113.10/");
    assert!(
        ok && out.trim() == "pod-a",
        "the node reaches its LB IP: {out}"
    );

    // k/k #119656: with no range holding a node address, the node itself
    // (and a hostNetwork pod) is refused too, as in kube-proxy's iptables
    // mode, not let through as kube-proxy's IPVS mode once did.
    write(
        &dir,
        "lb.yaml",
        &lb.replace("[192.168.50.0/24]", "[198.51.100.0/24]"),
    );
    wait_until("the new source range", Duration::from_secs(20), || {
        set_has("lb-allowed-v4", "203.0.113.10 . tcp . 80 . 198.51.100.0/24")
            && !set_has("lb-allowed-v4", "203.0.113.10 . tcp . 80 . 203.0.113.10")
    });
    let (ok, out, err) = try_sh("curl -sS --max-time 2 http://203.0.113.10/");
    assert!(!ok, "the node is outside the ranges: {out} {err}");
    let allowed = get("allowed", "http://203.0.113.10/");
    assert!(allowed.is_err(), "192.168.50.2 is outside now: {allowed:?}");
    assert_eq!(
        get("other", "http://192.168.60.1:30090/"),
        Ok("pod-a".into()),
        "the NodePort still answers"
    );
}
