//! The agent end to end (issue #6's benchmark; run it in the kernel lab
//! with `cargo xtask bench agent`): `kipvs proxy` started on N Services × E
//! endpoints read from manifests or from an in-process fake API server
//! (real HTTP list/watch), then single endpoint changes, written to disk or
//! applied to the API.
//!
//! Measured:
//! - **converge**: from starting the agent to its first sync's log line
//!   (manifests parsed, `kube-ipvs0` created and given N addresses, N
//!   virtual servers and N × E real servers added), then verified by
//!   reading the kernel;
//! - **one endpoint change**: from renaming the rewritten manifest file
//!   into place (or from the API server accepting the new EndpointSlice,
//!   which the agent then gets as a watch event) to the agent's log line for the sync that applied it (the
//!   line is written after the kernel acknowledged every change), with the
//!   netlink messages that sync sent; each change is verified in the kernel;
//! - the agent's own time writing its nftables table, from the same log
//!   lines (`nft_us`, `nft_elements`): at converge the whole table, per
//!   change the few elements that change (issue #9's measurement);
//! - the agent's resident memory after converging (VmRSS and VmHWM);
//! - optionally its CPU over an idle window, and then over a churn of one
//!   endpoint change a second (issue #16's scale benchmark), with its
//!   memory after the churn.
//!
//! The baseline, [`baseline`], builds the same kernel state with
//! `ipvsadm -R` and `ip -batch` (what a shell script or kube-proxy's
//! restore-style sync would do), and changes one endpoint with two
//! `ipvsadm` commands.

use crate::ipvs_load::{restore_rules, run_with_stdin, service_key};
use crate::synthetic::{self, cluster_ip, endpoint_ip};
use crate::{BenchError, seconds_since};
use kipvs_ipvs::Client;
use kipvs_testkit::fake_api::FakeApiServer;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Services per manifest file.
pub const SERVICES_PER_FILE: u32 = 100;

/// What one agent run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRun {
    pub converge_secs: f64,
    /// Netlink messages of the converging sync.
    pub converge_messages: u64,
    /// The converging sync's nftables write.
    pub converge_nft: NftWrite,
    /// One entry per endpoint change.
    pub changes: Vec<ChangeRun>,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// With an idle window: the agent's CPU over it (percent of one core,
    /// the periodic repair every 30 s included) and its RSS after it.
    pub idle: Option<IdleRun>,
    /// With a churn window (after the idle one): one endpoint change a
    /// second through it.
    pub churn: Option<ChurnRun>,
    pub start: StartProfile,
}

/// Where the time from start to the end of the first sync went, from the
/// agent's log: seconds since start when each list arrived, and the first
/// sync's parts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartProfile {
    pub services_listed: Option<f64>,
    pub slices_listed: Option<f64>,
    /// The first sync: recomputing every Service, binding addresses with
    /// applying IPVS, writing the nftables table, and the whole sync.
    pub compute: Option<f64>,
    pub apply: Option<f64>,
    pub nft: Option<f64>,
    pub sync: Option<f64>,
}

/// The agent with nothing to do for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct IdleRun {
    pub seconds: f64,
    pub cpu_percent: f64,
    /// Periodic repairs (resyncs) in the window.
    pub resyncs: u64,
    pub rss_kib: u64,
}

/// The agent through one endpoint change a second, each made without
/// waiting for its sync.
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnRun {
    /// The window's length, from the first change.
    pub seconds: f64,
    /// Changes made; the last one, and the final state of every Service
    /// the churn touched, were verified in the kernel.
    pub changes: u64,
    /// Syncs logged from the first change until the last one was seen in
    /// the kernel (periodic repairs included).
    pub syncs: u64,
    /// VmRSS and VmHWM after the churn.
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// The agent's CPU over the window, percent of one core.
    pub cpu_percent: f64,
}

/// One endpoint change, as the sync that applied it reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRun {
    /// From making the change to the sync's log line.
    pub secs: f64,
    /// IPVS and address netlink messages of the sync.
    pub messages: u64,
    pub nft: NftWrite,
}

/// An nftables write of one sync, as the agent timed it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NftWrite {
    pub elements: u64,
    pub secs: f64,
}

/// The address endpoint `j` of Service `i` moves to when it is "changed".
pub fn moved_ip(i: u32, j: u32, e: u32) -> Ipv4Addr {
    let [_, b, c, d] = endpoint_ip(i, j, e).octets();
    Ipv4Addr::new(11, b, c, d)
}

/// One manifest file: Services `first..first + count`, each with its
/// EndpointSlice; `moved` names the Services whose endpoint 0 moved.
pub fn manifest_file(first: u32, count: u32, e: u32, moved: &dyn Fn(u32) -> bool) -> String {
    let mut s = String::new();
    for i in first..first + count {
        let ip = cluster_ip(i);
        let _ = write!(
            s,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: bench}}\n\
             spec:\n  clusterIP: {ip}\n  clusterIPs: [{ip}]\n  \
             ports: [{{name: http, protocol: TCP, port: 80, targetPort: 8080}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: svc-{i}-0\n  namespace: bench\n  \
             labels: {{kubernetes.io/service-name: svc-{i}}}\naddressType: IPv4\n\
             ports: [{{name: http, protocol: TCP, port: 8080}}]\nendpoints:\n"
        );
        for j in 0..e {
            let addr = if j == 0 && moved(i) {
                moved_ip(i, j, e)
            } else {
                endpoint_ip(i, j, e)
            };
            let _ = writeln!(s, "- addresses: [{addr}]\n  conditions: {{ready: true}}");
        }
        s.push_str("---\n");
    }
    s
}

fn file_of(dir: &Path, i: u32) -> (PathBuf, u32) {
    let first = i / SERVICES_PER_FILE * SERVICES_PER_FILE;
    (dir.join(format!("svc-{first:06}.yaml")), first)
}

/// Writes the cluster as manifests into `dir` (created if missing).
pub fn write_manifests(dir: &Path, n: u32, e: u32) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir)?;
    for first in (0..n).step_by(SERVICES_PER_FILE as usize) {
        let count = SERVICES_PER_FILE.min(n - first);
        let (path, _) = file_of(dir, first);
        std::fs::write(path, manifest_file(first, count, e, &|_| false))?;
    }
    Ok(())
}

/// A "synced" log line of the agent: when it was read, its messages and
/// its nftables write.
struct Synced {
    at: Instant,
    messages: u64,
    nft: NftWrite,
}

/// Where the agent reads the cluster from, and how a change is made.
pub enum Source<'a> {
    /// `--manifests DIR` (already written by [`write_manifests`]); a change
    /// rewrites one file and renames it into place.
    Manifests(&'a Path),
    /// `--kubeconfig` pointing at an in-process fake API server speaking
    /// real HTTP list/watch, loaded with the cluster; a change replaces one
    /// EndpointSlice in it (a watch event).
    Api,
}

/// What [`run_agent`] does after the agent converged.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Phases {
    /// Single endpoint changes, each timed to its sync.
    pub changes: u32,
    /// Then a window with no change, its CPU read (zero: none).
    pub idle: Duration,
    /// Then a window of one endpoint change a second (zero: none).
    pub churn: Duration,
}

impl Phases {
    /// The agent's `--ipvs-sync-period`: kube-proxy's default 30 s when
    /// there is an idle or churn window (its repairs are part of what they
    /// measure), otherwise an hour, so that no repair lands among the
    /// timed changes.
    fn sync_period(&self) -> &'static str {
        if self.idle.is_zero() && self.churn.is_zero() {
            "1h"
        } else {
            "30s"
        }
    }
}

/// Starts `kipvs proxy` on the cluster, waits for it to converge, makes
/// the single endpoint changes of `phases`, then its idle and churn
/// windows when they are not zero, and stops it.
pub fn run_agent(
    kipvs: &Path,
    source: Source<'_>,
    n: u32,
    e: u32,
    phases: Phases,
    timeout: Duration,
) -> Result<AgentRun, BenchError> {
    if n == 0 {
        return Err(BenchError::Failed(
            "the cluster needs at least one Service".into(),
        ));
    }
    if e == 0 && (phases.changes > 0 || !phases.churn.is_zero()) {
        return Err(BenchError::Failed(
            "endpoint changes need at least one endpoint per Service".into(),
        ));
    }
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let mut api = None;
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    match source {
        Source::Manifests(dir) => {
            args.push("--manifests".into());
            args.push(dir.into());
        }
        Source::Api => {
            let server = rt.block_on(FakeApiServer::start())?;
            for i in 0..n {
                server.apply(&synthetic::service(i));
                server.apply(&synthetic::slice(i, e, None));
            }
            let kubeconfig = std::env::temp_dir().join("kipvs-bench-kubeconfig.yaml");
            std::fs::write(&kubeconfig, kubeconfig_text(&server.url()))?;
            args.push("--kubeconfig".into());
            args.push(kubeconfig.into());
            api = Some(server);
        }
    }
    let start = Instant::now();
    let mut child = Command::new(kipvs)
        .args(["proxy", "--log-format", "json", "--ipvs-sync-period"])
        .arg(phases.sync_period())
        .args(["--hostname-override", "bench-node"])
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| BenchError::Failed(format!("starting {}: {err}", kipvs.display())))?;
    let resyncs = Arc::new(AtomicU64::new(0));
    let profile = Arc::new(Mutex::new(StartProfile::default()));
    let synced = follow_log(&mut child, start, resyncs.clone(), profile.clone());
    let mut change = |i: u32, moved: &BTreeSet<u32>| -> Result<Instant, BenchError> {
        match (&source, &api) {
            (Source::Manifests(dir), _) => {
                let (path, first) = file_of(dir, i);
                let count = SERVICES_PER_FILE.min(n - first);
                let text = manifest_file(first, count, e, &|s| moved.contains(&s));
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, text)?;
                let t0 = Instant::now();
                std::fs::rename(&tmp, &path)?;
                Ok(t0)
            }
            (Source::Api, Some(server)) => {
                let slice = synthetic::slice(i, e, moved.contains(&i).then_some(0));
                let t0 = Instant::now();
                server.apply(&slice);
                Ok(t0)
            }
            (Source::Api, None) => unreachable!("the server was started above"),
        }
    };
    let mut flips = Flips::new(n);
    let result = measure(
        &child,
        &synced,
        start,
        (n, e),
        phases.changes,
        timeout,
        &mut flips,
        &mut change,
    )
    .and_then(|mut run| {
        if !phases.idle.is_zero() {
            run.idle = Some(measure_idle(&child, &synced, &resyncs, phases.idle)?);
        }
        if !phases.churn.is_zero() {
            let churn = Churn {
                window: phases.churn,
                endpoints: e,
                timeout,
            };
            run.churn = Some(measure_churn(
                &child,
                &synced,
                &churn,
                &mut flips,
                &mut change,
            )?);
        }
        run.start = profile.lock().unwrap().clone();
        Ok(run)
    });
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// A kubeconfig for a plain-HTTP API server at `server`.
pub fn kubeconfig_text(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: bench\n\
         clusters: [{{name: bench, cluster: {{server: \"{server}\"}}}}]\n\
         users: [{{name: bench, user: {{}}}}]\n\
         contexts: [{{name: bench, context: {{cluster: bench, user: bench}}}}]\n"
    )
}

type ChangeFn<'a> = dyn FnMut(u32, &BTreeSet<u32>) -> Result<Instant, BenchError> + 'a;

/// The endpoint changes of a run, spread over the table: the k-th flips
/// endpoint 0 of Service (k × 7919 + 13) mod n between its two addresses.
#[derive(Debug, Clone, PartialEq)]
struct Flips {
    n: u32,
    next: u64,
    /// The Services whose endpoint 0 is at its moved address now.
    moved: BTreeSet<u32>,
}

/// One flip: the Service, and the addresses its endpoint 0 moved to and
/// from.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Flip {
    service: u32,
    new: IpAddr,
    old: IpAddr,
}

impl Flips {
    fn new(n: u32) -> Flips {
        Flips {
            n,
            next: 0,
            moved: BTreeSet::new(),
        }
    }

    /// The next flip (n = 0 is taken as 1, not divided by).
    fn flip(&mut self, e: u32) -> Flip {
        let i = ((self.next * 7919 + 13) % u64::from(self.n.max(1))) as u32;
        self.next += 1;
        if !self.moved.insert(i) {
            self.moved.remove(&i);
        }
        let (new, old) = self.state(i, e);
        Flip {
            service: i,
            new,
            old,
        }
    }

    /// What endpoint 0 of Service `i` is now, and the address it is not.
    fn state(&self, i: u32, e: u32) -> (IpAddr, IpAddr) {
        let (moved, home) = (moved_ip(i, 0, e).into(), endpoint_ip(i, 0, e).into());
        if self.moved.contains(&i) {
            (moved, home)
        } else {
            (home, moved)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn measure(
    child: &Child,
    synced: &Receiver<Synced>,
    start: Instant,
    (n, e): (u32, u32),
    changes: u32,
    timeout: Duration,
    flips: &mut Flips,
    change: &mut ChangeFn<'_>,
) -> Result<AgentRun, BenchError> {
    let first = wait_synced(synced, timeout, "the first sync")?;
    let converge_secs = first.at.duration_since(start).as_secs_f64();
    crate::ipvs_load::verify(n, e)?;
    let (rss_kib, hwm_kib) = memory_kib(child.id())?;
    let mut ipvs = Client::new()?;
    let mut out = Vec::new();
    for _ in 0..changes {
        let Flip {
            service: i,
            new,
            old,
        } = flips.flip(e);
        let t0 = change(i, &flips.moved)?;
        // The first sync after which the kernel shows the change is the one
        // that applied it (an earlier line may be the drain check of the
        // previous change).
        loop {
            let s = wait_synced(synced, timeout, "the sync of an endpoint change")?;
            match check_change(&mut ipvs, i, new, old) {
                Ok(()) => {
                    out.push(ChangeRun {
                        secs: s.at.duration_since(t0).as_secs_f64(),
                        messages: s.messages,
                        nft: s.nft,
                    });
                    break;
                }
                Err(_) if s.at.duration_since(t0) < timeout => continue,
                Err(err) => return Err(err),
            }
        }
    }
    Ok(AgentRun {
        converge_secs,
        converge_messages: first.messages,
        converge_nft: first.nft,
        changes: out,
        rss_kib,
        hwm_kib,
        idle: None,
        churn: None,
        start: StartProfile::default(),
    })
}

/// The agent's CPU time over `window` with no change made, and the
/// periodic repairs it logged meanwhile.
fn measure_idle(
    child: &Child,
    synced: &Receiver<Synced>,
    resyncs: &AtomicU64,
    window: Duration,
) -> Result<IdleRun, BenchError> {
    // Whatever was logged before the window is not part of it.
    while synced.try_recv().is_ok() {}
    let repairs = resyncs.load(Ordering::Relaxed);
    let before = cpu_ticks(child.id())?;
    let start = Instant::now();
    std::thread::sleep(window);
    let ticks = cpu_ticks(child.id())?.saturating_sub(before);
    let seconds = start.elapsed().as_secs_f64();
    Ok(IdleRun {
        seconds,
        cpu_percent: cpu_percent(ticks, seconds),
        resyncs: resyncs.load(Ordering::Relaxed) - repairs,
        rss_kib: memory_kib(child.id())?.0,
    })
}

/// CPU time in clock ticks over `seconds` of wall time, as percent of one
/// core (0 for an empty window).
fn cpu_percent(ticks: u64, seconds: f64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    if seconds > 0.0 {
        ticks as f64 / per_second / seconds * 100.0
    } else {
        0.0
    }
}

/// A churn window: its length, the endpoints per Service, and how long
/// the last change may take to reach the kernel.
struct Churn {
    window: Duration,
    endpoints: u32,
    timeout: Duration,
}

/// One endpoint change a second through `churn.window` (the next flips of
/// `flips`), made on schedule without waiting for the agent; the agent's
/// CPU over the window; then the last change waited for in the kernel,
/// every Service the churn touched checked to hold its final state, and
/// the agent's memory read.
fn measure_churn(
    child: &Child,
    synced: &Receiver<Synced>,
    churn: &Churn,
    flips: &mut Flips,
    change: &mut ChangeFn<'_>,
) -> Result<ChurnRun, BenchError> {
    let e = churn.endpoints;
    while synced.try_recv().is_ok() {}
    let before = cpu_ticks(child.id())?;
    let start = Instant::now();
    let mut touched = BTreeSet::new();
    let mut last = None;
    let changes = churn.window.as_secs().max(1);
    for k in 0..changes {
        std::thread::sleep(
            (start + Duration::from_secs(k)).saturating_duration_since(Instant::now()),
        );
        let flip = flips.flip(e);
        change(flip.service, &flips.moved)?;
        touched.insert(flip.service);
        last = Some(flip);
    }
    std::thread::sleep((start + churn.window).saturating_duration_since(Instant::now()));
    let ticks = cpu_ticks(child.id())?.saturating_sub(before);
    let seconds = start.elapsed().as_secs_f64();
    let mut syncs = synced.try_iter().count() as u64;
    let mut ipvs = Client::new()?;
    if let Some(last) = last {
        syncs += wait_in_kernel(&mut ipvs, synced, last, churn.timeout)?;
    }
    for &i in &touched {
        let (new, old) = flips.state(i, e);
        check_change(&mut ipvs, i, new, old)?;
    }
    let (rss_kib, hwm_kib) = memory_kib(child.id())?;
    Ok(ChurnRun {
        seconds,
        changes,
        syncs,
        rss_kib,
        hwm_kib,
        cpu_percent: cpu_percent(ticks, seconds),
    })
}

/// Polls the kernel until it shows `flip`, at least after every sync and
/// every 100 ms; the syncs seen meanwhile.
fn wait_in_kernel(
    ipvs: &mut Client,
    synced: &Receiver<Synced>,
    flip: Flip,
    timeout: Duration,
) -> Result<u64, BenchError> {
    let deadline = Instant::now() + timeout;
    let mut syncs = 0;
    loop {
        let err = match check_change(ipvs, flip.service, flip.new, flip.old) {
            Ok(()) => return Ok(syncs),
            Err(err) => err,
        };
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout(format!(
                "> {} s: the churn's last change: {err}",
                timeout.as_secs()
            )));
        }
        match synced.recv_timeout(Duration::from_millis(100)) {
            Ok(_) => syncs += 1,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(BenchError::Failed(
                    "the churn's last change: the agent exited".into(),
                ));
            }
        }
    }
}

/// User plus system CPU time of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, BenchError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .ok_or_else(|| BenchError::Failed(format!("/proc/{pid}/stat: unreadable: {stat:?}")))
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the
/// command name in parentheses may hold spaces).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // `rest` starts at field 3 (state).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The new address serves with weight 1; the old one is gone or drains
/// with weight 0.
fn check_change(ipvs: &mut Client, i: u32, new: IpAddr, old: IpAddr) -> Result<(), BenchError> {
    let dests = ipvs.destinations(&service_key(i))?;
    let weight = |a: IpAddr| {
        dests
            .iter()
            .find(|d| d.destination.addr == a)
            .map(|d| d.destination.weight)
    };
    if weight(new) != Some(1) || weight(old).is_some_and(|w| w != 0) {
        return Err(BenchError::Failed(format!(
            "svc-{i}: after the change the kernel has {new} at weight {:?} and {old} at {:?}",
            weight(new),
            weight(old)
        )));
    }
    Ok(())
}

fn wait_synced(rx: &Receiver<Synced>, timeout: Duration, what: &str) -> Result<Synced, BenchError> {
    match rx.recv_timeout(timeout) {
        Ok(s) => Ok(s),
        Err(RecvTimeoutError::Timeout) => Err(BenchError::Timeout(format!(
            "> {} s: {what}: no sync",
            timeout.as_secs()
        ))),
        Err(RecvTimeoutError::Disconnected) => {
            Err(BenchError::Failed(format!("{what}: the agent exited")))
        }
    }
}

/// Reads the agent's JSON log lines on a thread; sends each "synced" one.
/// Errors the agent logs are echoed to our stderr, and so are its lists
/// and resyncs (with the time since `start`: the first sync's profile).
/// `resyncs` counts the resyncs and repairs; `profile` gets the lists'
/// times and the first sync's parts.
fn follow_log(
    child: &mut Child,
    start: Instant,
    resyncs: Arc<AtomicU64>,
    profile: Arc<Mutex<StartProfile>>,
) -> Receiver<Synced> {
    let (tx, rx) = channel();
    let stderr = child.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let at = Instant::now();
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                eprintln!("agent: {line}");
                continue;
            };
            let fields = &v["fields"];
            let since = (at - start).as_secs_f64();
            let us = |k: &str| fields[k].as_f64().map(|v| v / 1e6);
            match fields["message"].as_str() {
                // The first whole read is the first sync.
                Some("kernel read") if resyncs.fetch_add(1, Ordering::Relaxed) == 0 => {
                    let mut p = profile.lock().unwrap();
                    p.compute = us("compute_us");
                    p.apply = us("apply_us");
                    p.nft = us("write_nft_us");
                    p.sync = us("total_us");
                }
                Some("Services listed") => {
                    profile.lock().unwrap().services_listed.get_or_insert(since);
                }
                Some("EndpointSlices listed") => {
                    profile.lock().unwrap().slices_listed.get_or_insert(since);
                }
                _ => {}
            }
            if fields["message"] == "synced" {
                let messages = fields["messages"].as_u64().unwrap_or(0);
                let nft = NftWrite {
                    elements: fields["nft_elements"].as_u64().unwrap_or(0),
                    secs: fields["nft_us"].as_u64().unwrap_or(0) as f64 / 1e6,
                };
                if tx.send(Synced { at, messages, nft }).is_err() {
                    return;
                }
            } else if v["level"] == "ERROR"
                || v["level"] == "WARN"
                || fields["message"] == "kernel read"
                || fields["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with(" listed"))
            {
                eprintln!("agent +{since:.1}s: {line}");
            }
        }
    });
    rx
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn memory_kib(pid: u32) -> Result<(u64, u64), BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// What the baseline measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRun {
    /// `ipvsadm -R` of the table plus `ip -batch` of the addresses.
    pub load_secs: f64,
    pub restore_secs: f64,
    pub addresses_secs: f64,
    /// One endpoint change: `ipvsadm -a` of the new address and
    /// `ipvsadm -e -w 0` of the old one.
    pub change_secs: f64,
}

/// Builds the same kernel state with `ipvsadm -R` and `ip -batch` on a
/// fresh `kube-ipvs0`, then changes one endpoint with two commands.
pub fn baseline(n: u32, e: u32) -> Result<BaselineRun, BenchError> {
    let status = Command::new("ip")
        .args(["link", "add", "kube-ipvs0", "type", "dummy"])
        .status()?;
    if !status.success() {
        return Err(BenchError::Failed("ip link add kube-ipvs0 failed".into()));
    }
    let rules = restore_rules(n, e);
    let mut batch = String::new();
    for i in 0..n {
        let _ = writeln!(batch, "address add {}/32 dev kube-ipvs0", cluster_ip(i));
    }
    let start = Instant::now();
    run_with_stdin(Command::new("ipvsadm").arg("-R"), rules.as_bytes())?;
    let restore_secs = seconds_since(start);
    let t = Instant::now();
    run_with_stdin(Command::new("ip").args(["-batch", "-"]), batch.as_bytes())?;
    let addresses_secs = seconds_since(t);
    let load_secs = seconds_since(start);
    crate::ipvs_load::verify(n, e)?;
    let i = n / 2;
    let vip = format!("{}:80", cluster_ip(i));
    let t = Instant::now();
    run(Command::new("ipvsadm")
        .args(["-a", "-t", &vip, "-r"])
        .arg(format!("{}:8080", moved_ip(i, 0, e)))
        .args(["-m", "-w", "1"]))?;
    run(Command::new("ipvsadm")
        .args(["-e", "-t", &vip, "-r"])
        .arg(format!("{}:8080", endpoint_ip(i, 0, e)))
        .args(["-m", "-w", "0"]))?;
    let change_secs = seconds_since(t);
    let mut ipvs = Client::new()?;
    check_change(
        &mut ipvs,
        i,
        moved_ip(i, 0, e).into(),
        endpoint_ip(i, 0, e).into(),
    )?;
    Ok(BaselineRun {
        load_secs,
        restore_secs,
        addresses_secs,
        change_secs,
    })
}

fn run(cmd: &mut Command) -> Result<(), BenchError> {
    run_with_stdin(cmd, b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_spread_over_the_table_and_flip_back() {
        let mut f = Flips::new(1000);
        let a = f.flip(10);
        assert_eq!(a.service, 13);
        assert_eq!(a.new, IpAddr::from(moved_ip(13, 0, 10)));
        assert_eq!(a.old, IpAddr::from(endpoint_ip(13, 0, 10)));
        assert_eq!(f.state(13, 10), (a.new, a.old));
        assert_eq!(f.flip(10).service, (7919 + 13) % 1000);
        // Service 13 again after 1000 flips: back home.
        for _ in 2..1000 {
            f.flip(10);
        }
        let back = f.flip(10);
        assert_eq!(back.service, 13);
        assert_eq!((back.new, back.old), (a.old, a.new));
        assert_eq!(f.state(13, 10), (a.old, a.new));
        // No Service: no division by zero.
        assert_eq!(Flips::new(0).flip(1).service, 0);
    }

    #[test]
    fn the_sync_period_is_kube_proxys_with_a_window() {
        let none = Phases {
            changes: 10,
            ..Phases::default()
        };
        assert_eq!(none.sync_period(), "1h");
        let churn = Phases {
            churn: Duration::from_secs(5),
            ..none
        };
        assert_eq!(churn.sync_period(), "30s");
        assert_eq!(cpu_percent(100, 0.0), 0.0);
    }

    #[test]
    fn cpu_ticks_come_from_fields_14_and_15() {
        let stat =
            "4242 (kipvs sync) S 1 4242 4242 0 -1 4194560 5000 0 0 0 731 269 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
    use kipvs_proxy::manifest::Manifests;

    #[test]
    fn the_manifests_parse_into_the_synthetic_cluster() {
        let text = manifest_file(100, 3, 4, &|i| i == 101);
        let mut m = Manifests::default();
        assert_eq!(m.parse("bench.yaml", &text), vec![]);
        assert_eq!(m.services.len(), 3);
        assert_eq!(m.endpoint_slices.len(), 3);
        let (s, slice) = (&m.services[1], &m.endpoint_slices[1]);
        assert_eq!(s.metadata.name.as_deref(), Some("svc-101"));
        assert_eq!(
            s.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("10.96.0.102")
        );
        let first = &slice.endpoints[0].addresses[0];
        assert_eq!(first, &moved_ip(101, 0, 4).to_string());
        assert_eq!(slice.endpoints.len(), 4);
    }
}
