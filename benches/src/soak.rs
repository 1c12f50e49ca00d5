//! The soak run (issue 14): `kipvs proxy` on a synthetic cluster served by
//! the fake API server (real HTTP list/watch) for many minutes of churn, on
//! the lab kernel booted with `softlockup_panic=1`:
//!
//! - one endpoint change a second; a Service added and one deleted every
//!   10 s; a virtual server deleted by hand (as `ipvsadm -D`) every minute,
//!   timed until the agent's periodic repair puts it back;
//! - one SIGKILL and restart a third of the way in, one SIGTERM and restart
//!   in the middle of a burst of EndpointSlice updates two thirds in;
//! - established TCP connections from a client namespace through a VIP to a
//!   server namespace, opened before the churn and checked after it.
//!
//! Each minute records the agent's syncs and netlink messages (from its
//! `/metrics`), the changes made, and its RSS; at the end, the kernel log.
//! The numbers are reported, not judged: `cargo xtask soak` writes them to
//! `benches/results/soak.md`, deciding there which log lines are warnings.

use crate::BenchError;
use crate::agent_sync::memory_kib;
use crate::synthetic::{self, cluster_ip};
use kipvs_ipvs::{Client, ServiceKey};
use kipvs_testkit::fake_api::{FakeApiServer, Kind};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    pub services: u32,
    pub endpoints: u32,
    pub minutes: u32,
    /// EndpointSlice updates in the burst the SIGTERM lands in.
    pub burst: u32,
    /// Established connections held through the churn.
    pub connections: u32,
}

/// One minute of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Minute {
    pub minute: u32,
    pub syncs: f64,
    pub netlink_messages: f64,
    pub endpoint_changes: u32,
    pub services_added: u32,
    pub services_deleted: u32,
    pub slice_updates_in_burst: u32,
    pub hand_deletes: u32,
    pub rss_kib: u64,
    /// What happened to the agent this minute (`SIGKILL`, `SIGTERM`).
    pub restarts: Vec<String>,
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct SoakRun {
    pub converge_secs: f64,
    pub rss_after_converge_kib: u64,
    pub minutes: Vec<Minute>,
    /// Seconds from each hand deletion to the virtual server being back
    /// (`None`: not back within two sync periods).
    pub repairs: Vec<Option<f64>>,
    pub connections_opened: u32,
    pub connections_kept: u32,
    /// The kernel's log at the end (every line).
    pub kernel_log: Vec<String>,
}

impl SoakRun {
    pub fn to_json(&self, plan: &SoakPlan) -> serde_json::Value {
        json!({
            "bench": "soak", "services": plan.services, "endpoints": plan.endpoints,
            "minutes_planned": plan.minutes, "burst": plan.burst,
            "converge_seconds": self.converge_secs,
            "rss_after_converge_kib": self.rss_after_converge_kib,
            "minutes": self.minutes.iter().map(|m| json!({
                "minute": m.minute, "syncs": m.syncs, "netlink_messages": m.netlink_messages,
                "endpoint_changes": m.endpoint_changes, "services_added": m.services_added,
                "services_deleted": m.services_deleted,
                "slice_updates_in_burst": m.slice_updates_in_burst,
                "hand_deletes": m.hand_deletes, "rss_kib": m.rss_kib, "restarts": m.restarts,
            })).collect::<Vec<_>>(),
            "repairs_seconds": self.repairs,
            "connections_opened": self.connections_opened,
            "connections_kept": self.connections_kept,
            "kernel_log": self.kernel_log,
        })
    }
}

/// The Service whose connections are held: its VIP and port, and the
/// server namespace's address it reaches.
const HELD_VIP: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const HELD_SERVER: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 2);
const METRICS: &str = "127.0.0.1:10249";

/// Service indices below this are the ones deleted during the run; endpoint
/// changes and hand deletions use the others.
const DELETABLE: u32 = 200;

fn sh(cmd: &str) -> Result<(), BenchError> {
    let out = Command::new("bash").args(["-c", cmd]).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::Failed(format!(
            "`{cmd}`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A namespace `name` with `prefix.2/24` inside and `prefix.1` on the node,
/// routing everything to the node.
fn netns(name: &str, prefix: &str) -> Result<(), BenchError> {
    sh(&format!(
        "ip netns del {name} 2>/dev/null; ip link del h-{name} 2>/dev/null; \
         ip netns add {name} && ip link add h-{name} type veth peer name eth0 netns {name} && \
         ip addr add {prefix}.1/24 dev h-{name} && ip link set h-{name} up && \
         ip -n {name} addr add {prefix}.2/24 dev eth0 && ip -n {name} link set lo up && \
         ip -n {name} link set eth0 up && ip -n {name} route add default via {prefix}.1"
    ))
}

/// Runs `f` on a thread that has entered network namespace `name`.
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<T>, BenchError> {
    let ns = std::fs::File::open(format!("/run/netns/{name}"))?;
    Ok(std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only, with a valid namespace file.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    }))
}

/// An echo server on 8080 in the server namespace, one thread a client.
fn echo_server() -> Result<(), BenchError> {
    let ready = Arc::new(std::sync::Barrier::new(2));
    let r = ready.clone();
    in_netns("soaks", move || {
        let listener = std::net::TcpListener::bind("0.0.0.0:8080").expect("bind 8080");
        r.wait();
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    })?;
    ready.wait();
    Ok(())
}

/// Whether an echo round trip works on `c`.
fn echoes(c: &mut TcpStream) -> bool {
    c.write_all(b"ping").is_ok() && {
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).is_ok() && &buf == b"ping"
    }
}

/// Opens `n` connections from the client namespace to the held VIP.
fn open_connections(n: u32) -> Result<Vec<TcpStream>, BenchError> {
    let h = in_netns("soakc", move || {
        let addr = SocketAddr::from((HELD_VIP, 80));
        (0..n)
            .filter_map(|_| {
                let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
                c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
                echoes(&mut c).then_some(c)
            })
            .collect::<Vec<_>>()
    })?;
    h.join()
        .map_err(|_| BenchError::Failed("the client thread panicked".into()))
}

fn held_service() -> k8s_openapi::api::core::v1::Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "held", "namespace": "bench"},
        "spec": {"clusterIP": HELD_VIP.to_string(), "clusterIPs": [HELD_VIP.to_string()],
                 "ports": [{"name": "echo", "protocol": "TCP", "port": 80, "targetPort": 8080}]}
    }))
    .expect("valid Service")
}

fn held_slice() -> k8s_openapi::api::discovery::v1::EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "held-0", "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": "held"}},
        "addressType": "IPv4",
        "ports": [{"name": "echo", "protocol": "TCP", "port": 8080}],
        "endpoints": [{"addresses": [HELD_SERVER.to_string()], "conditions": {"ready": true}}]
    }))
    .expect("valid EndpointSlice")
}

/// The agent process and where its log goes.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(kipvs: &Path, kubeconfig: &Path, generation: u32) -> Result<Agent, BenchError> {
        let log = std::fs::File::create(format!("/tmp/soak-agent-{generation}.log"))?;
        let child = Command::new(kipvs)
            .args(["proxy", "--log-format", "json"])
            .args(["--hostname-override", "bench-node"])
            .args(["--metrics-bind-address", METRICS])
            .args(["--healthz-bind-address", "127.0.0.1:10256"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Agent { child })
    }

    fn signal(&mut self, sig: i32) -> Result<(), BenchError> {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of a metric's samples on the agent's `/metrics` (0 when it does
/// not answer).
pub fn metric(name: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect_timeout(&METRICS.parse().unwrap(), Duration::from_secs(2))
    else {
        return 0.0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const SYNCS: &str = "kubeproxy_sync_proxy_rules_duration_seconds_count";
const MESSAGES: &str = "kipvs_netlink_messages_total";

/// Counters across restarts: each agent's counters start at 0.
#[derive(Default)]
struct Counters {
    /// Totals of agents that have exited.
    done: (f64, f64),
    /// The running agent's last reading.
    last: (f64, f64),
}

impl Counters {
    fn read(&mut self) -> (f64, f64) {
        let now = (metric(SYNCS), metric(MESSAGES));
        if now.0 >= self.last.0 {
            self.last = now;
        }
        (self.done.0 + self.last.0, self.done.1 + self.last.1)
    }

    /// Before the agent is stopped: keep what it counted.
    fn retire(&mut self) {
        self.read();
        self.done.0 += self.last.0;
        self.done.1 += self.last.1;
        self.last = (0.0, 0.0);
    }
}

fn wait_converged(n: u32, timeout: Duration) -> Result<f64, BenchError> {
    let start = Instant::now();
    loop {
        if metric(SYNCS) >= 1.0
            && let Ok(services) = Client::new().and_then(|mut c| c.services())
            && services.len() as u32 > n
        {
            return Ok(start.elapsed().as_secs_f64());
        }
        if start.elapsed() > timeout {
            return Err(BenchError::Timeout(format!("convergence at {n} Services")));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn key(i: u32) -> ServiceKey {
    ServiceKey::tcp(cluster_ip(i), 80)
}

/// Deletes Service `i`'s virtual server by hand and, on a thread, times the
/// agent's repair (the table back with all its destinations).
fn hand_delete(i: u32, e: u32, repairs: Arc<Mutex<Vec<Option<f64>>>>) -> Result<(), BenchError> {
    Client::new()?.delete_service(&key(i))?;
    let t0 = Instant::now();
    std::thread::spawn(move || {
        let back = loop {
            if let Ok(d) = Client::new().and_then(|mut c| c.destinations(&key(i)))
                && d.len() as u32 == e
            {
                break Some(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() > Duration::from_secs(70) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        repairs.lock().unwrap().push(back);
    });
    Ok(())
}

/// The kernel's log at the end of the run (`dmesg`), every line: which
/// of them are warnings `cargo xtask soak` decides when it writes the
/// report, in one place.
fn kernel_log() -> Vec<String> {
    let out = Command::new("dmesg")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs the soak. `kipvs` is the binary to run as the agent.
pub fn run(kipvs: &Path, plan: &SoakPlan) -> Result<SoakRun, BenchError> {
    let (n, e) = (plan.services, plan.endpoints);
    if n <= DELETABLE + 10 {
        return Err(BenchError::Failed(format!(
            "a soak needs more than {} Services",
            DELETABLE + 10
        )));
    }
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    netns("soakc", "10.251.0")?;
    netns("soaks", "10.252.0")?;
    echo_server()?;
    let server = rt.block_on(FakeApiServer::start())?;
    for i in 0..n {
        server.apply(&synthetic::service(i));
        server.apply(&synthetic::slice(i, e, None));
    }
    server.apply(&held_service());
    server.apply(&held_slice());
    let kubeconfig = PathBuf::from("/tmp/kipvs-soak-kubeconfig.yaml");
    std::fs::write(
        &kubeconfig,
        crate::agent_sync::kubeconfig_text(&server.url()),
    )?;

    let mut generation = 0;
    let mut agent = Agent::start(kipvs, &kubeconfig, generation)?;
    let mut out = SoakRun {
        converge_secs: wait_converged(n, Duration::from_secs(1800))?,
        ..SoakRun::default()
    };
    out.rss_after_converge_kib = memory_kib(agent.child.id())?.0;
    let mut held = open_connections(plan.connections)?;
    out.connections_opened = held.len() as u32;

    let repairs = Arc::new(Mutex::new(Vec::new()));
    let mut counters = Counters::default();
    let mut last = counters.read();
    let mut moved = std::collections::BTreeSet::new();
    let (mut added, mut deleted) = (0u32, 0u32);
    let total = plan.minutes * 60;
    let (kill_at, term_at) = (total / 3, 2 * total / 3);
    let start = Instant::now();
    let mut minute = Minute {
        minute: 1,
        ..Minute::default()
    };
    for t in 1..=total {
        // One step a second, on the wall clock.
        let due = start + Duration::from_secs(u64::from(t));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let i = DELETABLE + (t * 7919 + 13) % (n - DELETABLE);
        let m = moved.insert(i) || !moved.remove(&i);
        server.apply(&synthetic::slice(i, e, m.then_some(0)));
        minute.endpoint_changes += 1;
        if t % 10 == 0 {
            server.apply(&synthetic::service(n + added));
            server.apply(&synthetic::slice(n + added, e, None));
            added += 1;
            minute.services_added += 1;
            if deleted < DELETABLE {
                server.delete(Kind::EndpointSlice, "bench", &format!("svc-{deleted}-0"));
                server.delete(Kind::Service, "bench", &format!("svc-{deleted}"));
                deleted += 1;
                minute.services_deleted += 1;
            }
        }
        if t % 60 == 30 {
            let victim = DELETABLE + (t * 104_729) % (n - DELETABLE);
            if hand_delete(victim, e, repairs.clone()).is_ok() {
                minute.hand_deletes += 1;
            }
        }
        if t == kill_at {
            counters.retire();
            agent.signal(libc::SIGKILL)?;
            generation += 1;
            agent = Agent::start(kipvs, &kubeconfig, generation)?;
            minute.restarts.push(format!("SIGKILL + restart at {t} s"));
        }
        if t == term_at {
            // A burst of slice updates (as a controller manager recreating
            // EndpointSlices), with SIGTERM and a restart in its middle.
            for b in 0..plan.burst {
                let j = DELETABLE + b % (n - DELETABLE);
                server.apply(&synthetic::slice(j, e, (b % 2 == 0).then_some(1)));
                if b == plan.burst / 2 {
                    counters.retire();
                    agent.signal(libc::SIGTERM)?;
                    generation += 1;
                    agent = Agent::start(kipvs, &kubeconfig, generation)?;
                }
            }
            minute.slice_updates_in_burst += plan.burst;
            minute
                .restarts
                .push(format!("SIGTERM + restart at {t} s, mid-burst"));
        }
        if t % 60 == 0 {
            let now = counters.read();
            minute.syncs = now.0 - last.0;
            minute.netlink_messages = now.1 - last.1;
            last = now;
            minute.rss_kib = memory_kib(agent.child.id()).map_or(0, |m| m.0);
            eprintln!("soak: {minute:?}");
            let next = minute.minute + 1;
            out.minutes.push(std::mem::replace(
                &mut minute,
                Minute {
                    minute: next,
                    ..Minute::default()
                },
            ));
        }
    }
    // Let the last repair finish.
    std::thread::sleep(Duration::from_secs(5));
    out.connections_kept = held.iter_mut().map(echoes).filter(|ok| *ok).count() as u32;
    out.repairs = repairs.lock().unwrap().clone();
    out.kernel_log = kernel_log();
    Ok(out)
}
