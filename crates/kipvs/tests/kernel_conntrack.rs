//! Stale UDP conntrack entries, end to end in the kernel lab, with real
//! traffic through the real `kipvs proxy` binary: a client in a "pod"
//! namespace keeps one UDP flow (a fixed source port, a datagram every
//! 100 ms) to a Service whose only endpoint is replaced; the agent deletes
//! the flow's conntrack entry and the client gets answers from the new
//! endpoint; then again with the client paused, so that only kipvs can
//! have deleted the entry. A last phase replaces the endpoint by hand (`ipvsadm`, no
//! agent) to show what the entry does when nobody deletes it: on this
//! kernel IPVS drops it itself at the next packet (`expire_nodest_conn`).
//! Run by
//! `cargo xtask vm test conntrack_`; ignored on the host.
//!
//! The network is kernel_firewall.rs's: pods are namespaces `10.244.N.2`
//! behind `10.244.N.1`, routing the pod and Service networks to the node.

use kipvs_testkit::lab::{manifests, pod_netns, reset, sh, try_sh, wait_until, write};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `f` on a thread inside namespace `name` (sockets it opens stay
/// there).
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("the namespace");
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// A UDP server in pod `name` answering every datagram with its name.
fn echo(name: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    in_netns(name, move || {
        let s = UdpSocket::bind("0.0.0.0:5353").expect("bind 5353");
        tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(name.as_bytes(), from);
        }
    });
    rx.recv().unwrap();
}

/// Answers the client got: when, and from which pod.
type Answers = Arc<Mutex<Vec<(Instant, String)>>>;

/// A client in pod `name` sending to `vip:53` from port 40000 every 100 ms
/// until `stop`; its thread ends (and its socket closes) after that.
fn client(
    name: &str,
    vip: &'static str,
    stop: Arc<AtomicBool>,
) -> (Answers, std::thread::JoinHandle<()>) {
    let answers: Answers = Arc::default();
    let out = answers.clone();
    let thread = in_netns(name, move || {
        let s = UdpSocket::bind("0.0.0.0:40000").expect("bind 40000");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            let sent = Instant::now();
            // An ICMP error (no endpoint) makes send or recv fail: go on.
            let _ = s.send_to(b"q", format!("{vip}:53"));
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let who = String::from_utf8_lossy(&buf[..n]).into_owned();
                out.lock().unwrap().push((Instant::now(), who));
            }
            std::thread::sleep(Duration::from_millis(100).saturating_sub(sent.elapsed()));
        }
    });
    (answers, thread)
}

/// The first answer from `who` after `since`.
fn first_from(answers: &Answers, who: &str, since: Instant) -> Option<Instant> {
    answers
        .lock()
        .unwrap()
        .iter()
        .find(|(t, w)| *t >= since && w == who)
        .map(|(t, _)| *t)
}

/// Who answered since `since`, in order, run-length encoded.
fn summary(answers: &Answers, since: Instant) -> String {
    let mut out: Vec<(String, usize)> = Vec::new();
    for (_, w) in answers.lock().unwrap().iter().filter(|(t, _)| *t >= since) {
        match out.last_mut() {
            Some((last, n)) if last == w => *n += 1,
            _ => out.push((w.clone(), 1)),
        }
    }
    out.iter()
        .map(|(w, n)| format!("{w}×{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A measurement line on the test's stderr, which the harness does not
/// capture (the lab log shows it even when the test passes).
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "kernel_conntrack: {line}");
}

const VIP: &str = "10.96.5.10";

fn dns_service() -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: dns, namespace: default}}\n\
         spec:\n  clusterIP: {VIP}\n  ports:\n\
         \x20 - {{name: dns, port: 53, targetPort: 5353, protocol: UDP}}\n"
    )
}

fn dns_slice(pod: u8) -> String {
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: dns-1, namespace: default, labels: {{kubernetes.io/service-name: dns}}}}\n\
         addressType: IPv4\nports:\n  - {{name: dns, port: 5353, protocol: UDP}}\n\
         endpoints:\n  - {{addresses: [10.244.{pod}.2], conditions: {{ready: true}}, nodeName: lab}}\n"
    )
}

struct Agent {
    child: Child,
}

impl Agent {
    fn start(dir: &Path) -> Agent {
        let file = std::fs::File::create("/tmp/ct-agent.log").unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kipvs"))
            .args(["proxy", "--manifests", dir.to_str().unwrap()])
            .args(["--hostname-override", "lab", "--ip-families", "ipv4"])
            .args(["--healthz-bind-address", "", "--metrics-bind-address", ""])
            .args(["--cluster-cidr", "10.244.0.0/16"])
            .env("RUST_LOG", "info,kipvs_proxy=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("kipvs starts");
        Agent { child }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kernel's UDP conntrack entries to the Service.
fn entries() -> String {
    try_sh(&format!("conntrack -L -p udp --orig-dst {VIP} 2>/dev/null")).1
}

#[test]
#[ignore = "needs the kernel lab"]
fn conntrack_a_udp_client_follows_its_replaced_endpoint() {
    reset();
    pod_netns("pod-a", 1);
    pod_netns("pod-b", 2);
    pod_netns("pod-c", 3);
    pod_netns("pod-d", 4);
    pod_netns("client", 9);
    echo("pod-a");
    echo("pod-b");
    echo("pod-c");
    echo("pod-d");
    let dir = manifests("conntrack");
    write(&dir, "dns.yaml", &dns_service());
    write(&dir, "dns-slice.yaml", &dns_slice(1));
    let agent = Agent::start(&dir);
    wait_until("the virtual server", Duration::from_secs(20), || {
        try_sh("ipvsadm -Ln").1.contains("10.244.1.2:5353")
    });

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let (answers, running) = client("client", VIP, stop.clone());
    wait_until("answers from pod-a", Duration::from_secs(10), || {
        first_from(&answers, "pod-a", start).is_some()
    });
    // IPVS keeps the kernel's entry, with the endpoint as the reply source.
    let before = entries();
    report(&format!("the entry IPVS leaves: {}", before.trim()));
    assert!(
        before.contains("sport=40000") && before.contains("src=10.244.1.2"),
        "{before}"
    );

    // Replace the endpoint: pod-a goes away, pod-b takes its place.
    sh("ip link del h-pod-a");
    let replaced = Instant::now();
    write(&dir, "dns-slice.yaml", &dns_slice(2));
    wait_until("answers from pod-b", Duration::from_secs(10), || {
        first_from(&answers, "pod-b", replaced).is_some()
    });
    let took = first_from(&answers, "pod-b", replaced).unwrap() - replaced;
    report(&format!(
        "with kipvs: pod-b answered {took:?} after the endpoint was replaced ({})",
        summary(&answers, replaced)
    ));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let after = entries();
    assert!(!after.contains("src=10.244.1.2"), "{after}");

    // Whether kipvs or IPVS (below) deleted that entry depends on whether a
    // datagram came between the real server's removal and the cleanup. With
    // the client paused, only kipvs can: pod-b → pod-c, and the entry to
    // pod-b must be gone before the client sends again.
    stop.store(true, Ordering::Relaxed);
    running.join().unwrap();
    let stale = entries();
    assert!(stale.contains("src=10.244.2.2"), "{stale}");
    let cleanups = || {
        std::fs::read_to_string("/tmp/ct-agent.log")
            .unwrap_or_default()
            .matches("conntrack_deleted=1")
            .count()
    };
    let before = cleanups();
    sh("ip link del h-pod-b");
    write(&dir, "dns-slice.yaml", &dns_slice(3));
    wait_until("kipvs's cleanup", Duration::from_secs(10), || {
        cleanups() > before
    });
    let after = entries();
    assert!(!after.contains("src=10.244.2.2"), "{after}");
    let stop = Arc::new(AtomicBool::new(false));
    let resumed = Instant::now();
    let (answers, _running) = client("client", VIP, stop.clone());
    wait_until("answers from pod-c", Duration::from_secs(10), || {
        first_from(&answers, "pod-c", resumed).is_some()
    });
    report(&format!(
        "with kipvs, client paused: the entry to pod-b deleted by kipvs; pod-c answered {:?} \
         after the client resumed",
        first_from(&answers, "pod-c", resumed).unwrap() - resumed
    ));

    // Without kipvs: the same replacement by hand, and nobody deletes the
    // entry. With kipvs's sysctls (`expire_nodest_conn=1`, `conntrack=1`)
    // IPVS itself expires the connection to the removed real server at its
    // next packet and drops that packet and its conntrack entry; the next
    // one is scheduled afresh. So on this kernel the cleanup is the
    // kube-proxy rule kept as a guarantee, not the only way out.
    drop(agent);
    sh(
        "ipvsadm -a -u 10.96.5.10:53 -r 10.244.4.2:5353 -m && ip link del h-pod-c && \
        ipvsadm -d -u 10.96.5.10:53 -r 10.244.3.2:5353",
    );
    let by_hand = Instant::now();
    wait_until("answers from pod-d", Duration::from_secs(5), || {
        first_from(&answers, "pod-d", by_hand).is_some()
    });
    let took = first_from(&answers, "pod-d", by_hand).unwrap() - by_hand;
    let entry = entries();
    report(&format!(
        "without the cleanup (by hand, no agent): pod-d answered {took:?} after the real \
         server was replaced ({}); entry: {}",
        summary(&answers, by_hand),
        entry.trim()
    ));
    assert!(
        entry.contains("src=10.244.4.2") && !entry.contains("src=10.244.3.2"),
        "{entry}"
    );
    stop.store(true, Ordering::Relaxed);
}
