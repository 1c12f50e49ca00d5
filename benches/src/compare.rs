//! kipvs side by side with the tools kube-proxy drives (issue #8; run it
//! in the kernel lab with `cargo xtask bench`, a fresh VM per backend ×
//! size): the same synthetic cluster loaded and updated by
//!
//! - [`Backend::Kipvs`]: the real controller path, an [`Engine`] over the
//!   kernel data plane (desired state → diff → pipelined IPVS batch,
//!   addresses on `kube-ipvs0`); a time is the whole sync, desired-state
//!   computation included;
//! - [`Backend::Ipvsadm`]: `ipvsadm -R` plus `ip -batch` to load, single
//!   `ipvsadm -A/-a/-e/-D` and `ip addr` commands to update;
//! - [`Backend::IptablesLegacy`], [`Backend::IptablesNft`]: kube-proxy's
//!   iptables-mode rules ([`peer_rules`]), loaded with one
//!   `iptables-restore`, updated both as a full and as a partial
//!   `--noflush` restore;
//! - [`Backend::Nftables`]: kube-proxy's nftables-mode table, loaded and
//!   updated with one `nft -f` transaction each.
//!
//! For the peer tools a time is the command alone (its input is generated
//! before the clock starts), as a person timing `iptables-restore < file`
//! would measure it.
//!
//! Scenarios ([`Scenario`]): the full load from empty, then adding one
//! Service (index N, E endpoints), moving endpoint 0 of Service N/2 to a new
//! address, and deleting the added Service. Every step is verified against
//! the kernel before its time counts (IPVS services and live destinations,
//! iptables chains and rule count, nftables chains and map elements). After
//! the load, the data path is measured: TCP connects from a client network
//! namespace to the last Service's ClusterIP, served by a listener in a
//! server namespace holding that Service's endpoint addresses
//! ([`connect_latency`]).

use crate::agent_sync::moved_ip;
use crate::ipvs_load::restore_rules;
use crate::peer_rules::{self, Cluster};
use crate::synthetic::{self, cluster_ip, endpoint_ip};
use crate::{BenchError, seconds_since};
use kipvs_engine::controller::{Engine, Input, Ownership};
use kipvs_engine::desired;
use kipvs_engine::diff::DiffConfig;
use kipvs_ipvs::Client;
use kipvs_proxy::kernel::{Firewall, KernelDataplane, LinkBinder};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// What loads and updates the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Backend {
    Kipvs,
    Ipvsadm,
    IptablesLegacy,
    IptablesNft,
    Nftables,
}

impl Backend {
    pub const ALL: [Backend; 5] = [
        Backend::Kipvs,
        Backend::Ipvsadm,
        Backend::IptablesLegacy,
        Backend::IptablesNft,
        Backend::Nftables,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Kipvs => "kipvs",
            Backend::Ipvsadm => "ipvsadm",
            Backend::IptablesLegacy => "iptables-legacy",
            Backend::IptablesNft => "iptables-nft",
            Backend::Nftables => "nftables",
        }
    }

    /// The update methods measured in one VM of this backend: iptables
    /// updates both as a full and as a partial restore.
    pub fn methods(self) -> Vec<String> {
        match self {
            Backend::IptablesLegacy | Backend::IptablesNft => vec![
                format!("{} full", self.name()),
                format!("{} partial", self.name()),
            ],
            _ => vec![self.name().to_owned()],
        }
    }
}

/// A timed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    Load,
    AddService,
    ChangeEndpoint,
    DeleteService,
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Load,
        Scenario::AddService,
        Scenario::ChangeEndpoint,
        Scenario::DeleteService,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Load => "load",
            Scenario::AddService => "add-service",
            Scenario::ChangeEndpoint => "change-endpoint",
            Scenario::DeleteService => "delete-service",
        }
    }

    pub fn from_name(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// One timed, verified step.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The backend, or for iptables the backend and its update style
    /// (`iptables-nft partial`).
    pub method: String,
    pub scenario: Scenario,
    /// Seconds, or why there is no number: `> N s` when the step ran out
    /// of time (the kernel still holds the previous state, checked), or
    /// `not run` after such a step.
    pub seconds: Result<f64, String>,
}

/// TCP connect latency through a backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub connects: u32,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One backend's run at one size.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRun {
    pub samples: Vec<Sample>,
    /// `None` when the load ran out of time (nothing after it was run).
    pub connect: Option<Latency>,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub backend: Backend,
    pub services: u32,
    pub endpoints: u32,
    /// Connects timed for the data-path latency.
    pub connects: u32,
    /// Limit for each peer-tool command.
    pub step_timeout: Duration,
}

/// The synthetic cluster of `n` Services × `e` endpoints.
pub fn cluster(n: u32, e: u32) -> Cluster {
    (0..n)
        .map(|i| (i, (0..e).map(|j| endpoint_ip(i, j, e)).collect()))
        .collect()
}

/// The update steps after the load, from `start`: add Service `n`, flip
/// endpoint 0 of Service `n / 2` between its two addresses, delete
/// Service `n`. Each step with the cluster it leads to.
pub fn updates(start: &Cluster, n: u32, e: u32) -> Vec<(Scenario, Cluster)> {
    let mut added = start.clone();
    added.insert(n, (0..e).map(|j| endpoint_ip(n, j, e)).collect());
    let mut changed = added.clone();
    let i = n / 2;
    if let Some(first) = changed.get_mut(&i).and_then(|eps| eps.first_mut()) {
        *first = if *first == endpoint_ip(i, 0, e) {
            moved_ip(i, 0, e)
        } else {
            endpoint_ip(i, 0, e)
        };
    }
    let mut deleted = changed.clone();
    deleted.remove(&n);
    vec![
        (Scenario::AddService, added),
        (Scenario::ChangeEndpoint, changed),
        (Scenario::DeleteService, deleted),
    ]
}

/// Something that loads and updates the cluster's rules and checks what
/// the kernel holds.
trait Peer {
    /// Makes the kernel hold `new` (it holds `old`); returns the seconds
    /// the timed part took.
    fn apply(&mut self, old: &Cluster, new: &Cluster) -> Result<f64, BenchError>;
    /// The kernel holds exactly `c`'s rules.
    fn verify(&mut self, c: &Cluster) -> Result<(), BenchError>;
}

/// Runs one backend: load, verify, data path, then the updates (twice for
/// iptables: full and partial restores).
pub fn run(plan: &Plan) -> Result<CompareRun, BenchError> {
    let (n, e) = (plan.services, plan.endpoints);
    let base = cluster(n, e);
    let empty = Cluster::new();
    let mut samples = Vec::new();
    let methods = plan.backend.methods();
    let mut peers: Vec<Box<dyn Peer>> = match plan.backend {
        Backend::Kipvs => {
            ipvs_sysctls()?;
            vec![Box::new(Kipvs::new(e)?)]
        }
        Backend::Ipvsadm => {
            ipvs_sysctls()?;
            vec![Box::new(Ipvsadm::new(plan.step_timeout)?)]
        }
        Backend::IptablesLegacy | Backend::IptablesNft => {
            let variant = if plan.backend == Backend::IptablesLegacy {
                "legacy"
            } else {
                "nft"
            };
            let make = |partial| Iptables {
                variant,
                partial,
                timeout: plan.step_timeout,
            };
            make(false).prepare()?;
            vec![Box::new(make(false)), Box::new(make(true))]
        }
        Backend::Nftables => vec![Box::new(Nftables::new(plan.step_timeout)?)],
    };
    let load = match peers[0].apply(&empty, &base) {
        Ok(t) => t,
        Err(BenchError::Timeout(_)) => {
            // Nothing else can be measured without the table loaded.
            for m in &methods {
                samples.push(Sample {
                    method: m.clone(),
                    scenario: Scenario::Load,
                    seconds: Err(format!("> {} s", plan.step_timeout.as_secs())),
                });
                for (scenario, _) in updates(&base, n, e) {
                    samples.push(Sample {
                        method: m.clone(),
                        scenario,
                        seconds: Err("not run".to_owned()),
                    });
                }
            }
            return Ok(CompareRun {
                samples,
                connect: None,
            });
        }
        Err(err) => return Err(err),
    };
    peers[0].verify(&base)?;
    for m in &methods {
        samples.push(Sample {
            method: m.clone(),
            scenario: Scenario::Load,
            seconds: Ok(load),
        });
    }
    let connect = measure_datapath(plan, &base)?;
    let mut now = base;
    for (peer, method) in peers.iter_mut().zip(&methods) {
        let mut timed_out = false;
        for (scenario, next) in updates(&now, n, e) {
            let seconds = if timed_out {
                Err("not run".to_owned())
            } else {
                match peer.apply(&now, &next) {
                    Ok(t) => {
                        peer.verify(&next).map_err(|err| {
                            BenchError::Failed(format!("{method} {}: {err}", scenario.name()))
                        })?;
                        now = next;
                        Ok(t)
                    }
                    Err(BenchError::Timeout(_)) => {
                        // The killed command committed nothing: the next
                        // method starts from the state before it.
                        timed_out = true;
                        peer.verify(&now)?;
                        Err(format!("> {} s", plan.step_timeout.as_secs()))
                    }
                    Err(err) => return Err(err),
                }
            };
            samples.push(Sample {
                method: method.clone(),
                scenario,
                seconds,
            });
        }
    }
    Ok(CompareRun {
        samples,
        connect: Some(connect),
    })
}

/// The node sysctls `kipvs proxy` sets at start (kube-proxy's IPVS mode
/// sets the same), for both IPVS backends.
fn ipvs_sysctls() -> Result<(), BenchError> {
    use kipvs_link::sysctl;
    let kernel = sysctl::KernelVersion::running().unwrap_or(sysctl::KernelVersion(6, 1));
    let opts = sysctl::Options {
        dual_stack: false,
        strict_arp: false,
    };
    sysctl::apply(Path::new("/proc/sys"), &sysctl::required(opts, kernel))
        .map_err(|e| BenchError::Failed(format!("setting sysctls: {e}")))?;
    Ok(())
}

/// kipvs: the sync engine over the kernel, with its nftables table (the
/// masquerade, VIP port filter and hairpin elements every sync writes in
/// the agent, as kube-proxy's modes write their own filter rules).
struct Kipvs {
    engine: Engine<KernelDataplane<LinkBinder>>,
    endpoints: u32,
    clock: u64,
}

impl Kipvs {
    fn new(endpoints: u32) -> Result<Kipvs, BenchError> {
        let binder = LinkBinder::ensure("kube-ipvs0")
            .map_err(|e| BenchError::Failed(format!("kube-ipvs0: {e}")))?;
        let ctx = synthetic::context();
        let ownership = Ownership {
            nodeport_addresses: BTreeSet::new(),
            nodeport_range: 30000..=32767,
            exclude: Vec::new(),
        };
        let mut firewall = Firewall::new(
            kipvs_nft::Nft::new("nft"),
            kipvs_nft::Skeleton {
                masquerade_all: false,
                local: kipvs_nft::LocalTraffic::ClusterCidrs(Vec::new()),
                mark: kipvs_nft::DEFAULT_MASQUERADE_MARK,
            },
        );
        firewall
            .read()
            .map_err(|e| BenchError::Failed(format!("nft: {e}")))?;
        let engine = Engine::new(
            KernelDataplane::new(Client::new()?, binder).with_firewall(firewall),
            ctx,
            ownership,
            DiffConfig::default(),
        );
        Ok(Kipvs {
            engine,
            endpoints,
            clock: 0,
        })
    }

    /// The EndpointSlice of Service `i` holding `eps`.
    fn slice(
        &self,
        i: u32,
        eps: &[Ipv4Addr],
    ) -> Box<k8s_openapi::api::discovery::v1::EndpointSlice> {
        let e = self.endpoints;
        let moved = (0..e).find(|&j| eps.get(j as usize) == Some(&moved_ip(i, j, e)));
        Box::new(synthetic::slice(i, e, moved))
    }
}

impl Peer for Kipvs {
    fn apply(&mut self, old: &Cluster, new: &Cluster) -> Result<f64, BenchError> {
        for i in peer_rules::changed(old, new) {
            match new.get(&i) {
                Some(eps) => {
                    if !old.contains_key(&i) {
                        let svc = Box::new(synthetic::service(i));
                        self.engine.input(Input::ServiceApplied(svc));
                    }
                    let slice = self.slice(i, eps);
                    self.engine.input(Input::SliceApplied(slice));
                }
                None => {
                    let svc = synthetic::service(i);
                    let slice = synthetic::slice(i, self.endpoints, None);
                    self.engine
                        .input(Input::SliceDeleted(kipvs_engine::controller::slice_ref(
                            &slice,
                        )));
                    self.engine
                        .input(Input::ServiceDeleted(desired::service_ref(&svc)));
                }
            }
        }
        self.clock += 1;
        let start = Instant::now();
        // The agent's first sync is a resync: it reads the kernel and adopts.
        let report = if old.is_empty() {
            self.engine.resync(self.clock)
        } else {
            self.engine.sync(self.clock)
        };
        let t = seconds_since(start);
        if !report.errors.is_empty() || report.failed_changes > 0 {
            return Err(BenchError::Failed(format!(
                "kipvs sync: {} failed changes; {}",
                report.failed_changes,
                report.errors.join("; ")
            )));
        }
        Ok(t)
    }

    fn verify(&mut self, c: &Cluster) -> Result<(), BenchError> {
        verify_ipvs(c)?;
        // The nftables table holds what the engine derived, as `nft` reads
        // it back.
        let held = kipvs_nft::Nft::new("nft")
            .read()
            .map_err(|e| BenchError::Failed(format!("nft: {e}")))?
            .ok_or_else(|| BenchError::Failed("kipvs's nftables table is missing".into()))?
            .elements;
        let want: BTreeSet<_> = self.engine.firewall_elements().cloned().collect();
        if held != want || want.len() < c.len() {
            return Err(BenchError::Failed(format!(
                "kipvs's nftables table holds {} elements, the engine derived {} for {} Services",
                held.len(),
                want.len(),
                c.len()
            )));
        }
        Ok(())
    }
}

/// ipvsadm: `ipvsadm -R` + `ip -batch`, then single commands.
struct Ipvsadm {
    timeout: Duration,
}

impl Ipvsadm {
    fn new(timeout: Duration) -> Result<Ipvsadm, BenchError> {
        run_cmd(
            &["ip", "link", "add", "kube-ipvs0", "type", "dummy"],
            b"",
            timeout,
        )?;
        Ok(Ipvsadm { timeout })
    }
}

/// The `ipvsadm`/`ip` commands that turn `old` into `new`, one Service at
/// a time; a leaving destination gets weight 0 (it drains, as with kipvs).
pub fn ipvsadm_commands(old: &Cluster, new: &Cluster) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    let cmd = |s: String| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
    for i in peer_rules::changed(old, new) {
        let vip = cluster_ip(i);
        let before: BTreeSet<Ipv4Addr> = old.get(&i).into_iter().flatten().copied().collect();
        match new.get(&i) {
            Some(eps) => {
                if !old.contains_key(&i) {
                    cmds.push(cmd(format!("ip addr add {vip}/32 dev kube-ipvs0")));
                    cmds.push(cmd(format!("ipvsadm -A -t {vip}:80 -s rr")));
                }
                for ep in eps.iter().filter(|ep| !before.contains(ep)) {
                    cmds.push(cmd(format!("ipvsadm -a -t {vip}:80 -r {ep}:8080 -m -w 1")));
                }
                for ep in before.iter().filter(|ep| !eps.contains(ep)) {
                    cmds.push(cmd(format!("ipvsadm -e -t {vip}:80 -r {ep}:8080 -m -w 0")));
                }
            }
            None => {
                cmds.push(cmd(format!("ipvsadm -D -t {vip}:80")));
                cmds.push(cmd(format!("ip addr del {vip}/32 dev kube-ipvs0")));
            }
        }
    }
    cmds
}

impl Peer for Ipvsadm {
    fn apply(&mut self, old: &Cluster, new: &Cluster) -> Result<f64, BenchError> {
        if old.is_empty() {
            let n = new.len() as u32;
            let e = new.values().next().map_or(0, |v| v.len() as u32);
            let rules = restore_rules(n, e);
            let mut batch = String::new();
            for i in 0..n {
                let _ = writeln!(batch, "address add {}/32 dev kube-ipvs0", cluster_ip(i));
            }
            let a = run_cmd(&["ipvsadm", "-R"], rules.as_bytes(), self.timeout)?;
            let b = run_cmd(&["ip", "-batch", "-"], batch.as_bytes(), self.timeout)?;
            return Ok(a + b);
        }
        let mut total = 0.0;
        for c in ipvsadm_commands(old, new) {
            let args: Vec<&str> = c.iter().map(String::as_str).collect();
            total += run_cmd(&args, b"", self.timeout)?;
        }
        Ok(total)
    }

    fn verify(&mut self, c: &Cluster) -> Result<(), BenchError> {
        verify_ipvs(c)
    }
}

/// The kernel's IPVS table holds one virtual server per Service, whose
/// live (weight > 0) destinations are its endpoints, and `kube-ipvs0`
/// holds every ClusterIP.
fn verify_ipvs(c: &Cluster) -> Result<(), BenchError> {
    let table = Client::new()?.dump_all()?;
    let mut held: BTreeMap<IpAddr, BTreeSet<IpAddr>> = BTreeMap::new();
    for entry in &table {
        let live = entry
            .destinations
            .iter()
            .filter(|d| d.destination.weight > 0)
            .map(|d| d.destination.addr)
            .collect();
        let kipvs_ipvs::ServiceKey::Addr { addr, .. } = entry.service.service.key else {
            return Err(BenchError::Failed(
                "IPVS holds a firewall-mark service".into(),
            ));
        };
        held.insert(addr, live);
    }
    let want: BTreeMap<IpAddr, BTreeSet<IpAddr>> = c
        .iter()
        .map(|(&i, eps)| {
            let live = eps.iter().map(|&a| IpAddr::V4(a)).collect();
            (IpAddr::V4(cluster_ip(i)), live)
        })
        .collect();
    if held != want {
        let wrong = want
            .iter()
            .find(|(vip, eps)| held.get(vip) != Some(eps))
            .map_or("an extra virtual server".to_owned(), |(vip, _)| {
                vip.to_string()
            });
        return Err(BenchError::Failed(format!(
            "IPVS holds {} virtual servers, not the {} expected (first difference: {wrong})",
            held.len(),
            want.len()
        )));
    }
    let out = output(&["ip", "-o", "-4", "addr", "show", "dev", "kube-ipvs0"])?;
    let bound = out.lines().count();
    if bound != c.len() {
        return Err(BenchError::Failed(format!(
            "kube-ipvs0 holds {bound} addresses, not {}",
            c.len()
        )));
    }
    Ok(())
}

/// kube-proxy's iptables mode through `iptables-{legacy,nft}-restore`.
struct Iptables {
    variant: &'static str,
    partial: bool,
    timeout: Duration,
}

impl Iptables {
    /// The jumps from the built-in chains, made once, untimed.
    fn prepare(&self) -> Result<(), BenchError> {
        let tool = format!("iptables-{}", self.variant);
        for args in peer_rules::IPTABLES_JUMPS {
            let mut cmd = vec![tool.as_str()];
            cmd.extend_from_slice(args);
            run_cmd(&cmd, b"", self.timeout)?;
        }
        Ok(())
    }
}

impl Peer for Iptables {
    fn apply(&mut self, old: &Cluster, new: &Cluster) -> Result<f64, BenchError> {
        let text = peer_rules::iptables_restore(old, new, self.partial);
        let tool = format!("iptables-{}-restore", self.variant);
        run_cmd(&[&tool, "--noflush"], text.as_bytes(), self.timeout)
    }

    fn verify(&mut self, c: &Cluster) -> Result<(), BenchError> {
        let save = output(&[&format!("iptables-{}-save", self.variant), "-t", "nat"])?;
        let chains: BTreeSet<String> = save
            .lines()
            .filter(|l| l.starts_with(":KUBE-SVC-") || l.starts_with(":KUBE-SEP-"))
            .filter_map(|l| l[1..].split(' ').next().map(str::to_owned))
            .collect();
        let rules = save.lines().filter(|l| l.starts_with("-A ")).count();
        let want = peer_rules::iptables_chains(c);
        if chains != want || rules != peer_rules::iptables_rule_count(c) {
            return Err(BenchError::Failed(format!(
                "the nat table holds {} service chains and {rules} rules, not {} and {}",
                chains.len(),
                want.len(),
                peer_rules::iptables_rule_count(c)
            )));
        }
        Ok(())
    }
}

/// kube-proxy's nftables mode through `nft -f`.
struct Nftables {
    timeout: Duration,
}

impl Nftables {
    fn new(timeout: Duration) -> Result<Nftables, BenchError> {
        Ok(Nftables { timeout })
    }
}

impl Peer for Nftables {
    fn apply(&mut self, old: &Cluster, new: &Cluster) -> Result<f64, BenchError> {
        let mut text = if old.is_empty() {
            peer_rules::nft_skeleton()
        } else {
            String::new()
        };
        text.push_str(&peer_rules::nft_update(old, new));
        run_cmd(&["nft", "-f", "-"], text.as_bytes(), self.timeout)
    }

    fn verify(&mut self, c: &Cluster) -> Result<(), BenchError> {
        let t = peer_rules::NFT_TABLE;
        // Only this table is in the `ip` family in this run's VM.
        let listing = output(&["nft", "list", "chains", "ip"])?;
        let chains: BTreeSet<String> = listing
            .lines()
            .filter_map(|l| l.trim().strip_prefix("chain "))
            .map(|l| l.trim_end_matches('{').trim().trim_matches('"').to_owned())
            .collect();
        let mut want = peer_rules::nft_chains(c);
        let per_service = want.len();
        want.extend(
            [
                "mark-for-masquerade",
                "masquerading",
                "services",
                "nat-prerouting",
                "nat-output",
                "nat-postrouting",
            ]
            .map(str::to_owned),
        );
        let map = output(&["nft", "list", "map", "ip", t, "service-ips"])?;
        let elements = map.matches(": goto ").count();
        if chains != want || elements != c.len() {
            return Err(BenchError::Failed(format!(
                "table {t} holds {} chains and {elements} map elements, not {} and {}",
                chains.len(),
                per_service + peer_rules::NFT_BASE_CHAINS,
                c.len()
            )));
        }
        Ok(())
    }
}

/// Removes everything a run leaves in the kernel (namespaces, IPVS
/// table, `kube-ipvs0`, nftables ruleset, iptables nat tables, the legacy
/// nat module: an empty legacy nat table still takes the NAT decision
/// first and leaves nftables nothing to DNAT), so several
/// backends can run in one boot (the lab test does; `cargo xtask bench`
/// boots a fresh VM instead).
pub fn reset() -> Result<(), BenchError> {
    let script = format!(
        "ip netns del {CLIENT_NS} 2>/dev/null; ip netns del {SERVER_NS} 2>/dev/null; \
         ip link del kb-c 2>/dev/null; ip link del kb-s 2>/dev/null; \
         ip link del kube-ipvs0 2>/dev/null; ipvsadm -C; \
         for v in legacy nft; do iptables-$v -t nat -F; iptables-$v -t nat -X; done; rmmod iptable_nat; \
         nft flush ruleset; true"
    );
    run_cmd(&["bash", "-c", &script], b"", Duration::from_secs(120))?;
    Ok(())
}

const CLIENT_NS: &str = "kb-client";
const SERVER_NS: &str = "kb-server";

/// The data path for the last Service: a client namespace routed through
/// this one, a server namespace holding the Service's endpoint addresses
/// with a listener on 8080; then TCP connects timed from the client.
fn measure_datapath(plan: &Plan, c: &Cluster) -> Result<Latency, BenchError> {
    let (&last, eps) = c
        .iter()
        .next_back()
        .ok_or_else(|| BenchError::Failed("no Service to connect to".into()))?;
    let mut script = format!(
        "set -e\necho 1 > /proc/sys/net/ipv4/ip_forward\n\
         ip netns add {CLIENT_NS}\nip link add kb-c type veth peer name eth0 netns {CLIENT_NS}\n\
         ip addr add 192.168.201.1/24 dev kb-c\nip link set kb-c up\n\
         ip -n {CLIENT_NS} addr add 192.168.201.2/24 dev eth0\n\
         ip -n {CLIENT_NS} link set eth0 up\nip -n {CLIENT_NS} link set lo up\n\
         ip -n {CLIENT_NS} route add default via 192.168.201.1\n\
         ip netns add {SERVER_NS}\nip link add kb-s type veth peer name eth0 netns {SERVER_NS}\n\
         ip addr add 192.168.202.1/24 dev kb-s\nip link set kb-s up\n\
         ip -n {SERVER_NS} addr add 192.168.202.2/24 dev eth0\n\
         ip -n {SERVER_NS} link set eth0 up\nip -n {SERVER_NS} link set lo up\n\
         ip -n {SERVER_NS} route add default via 192.168.202.1\n"
    );
    for ep in eps {
        let _ = writeln!(
            script,
            "ip -n {SERVER_NS} addr add {ep}/32 dev eth0\nip route add {ep}/32 via 192.168.202.2"
        );
    }
    run_cmd(&["bash", "-c", &script], b"", plan.step_timeout)?;
    let to = SocketAddr::from((cluster_ip(last), 80));
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready) = channel();
    let listener = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            in_netns(SERVER_NS, || {
                listen(8080, &stop, || {
                    let _ = ready_tx.send(());
                })
            })
        })
    };
    // The first connect must find the listener bound: on a busy host the
    // thread can start late, and a SYN before bind() is refused.
    if ready.recv_timeout(Duration::from_secs(30)).is_err() {
        stop.store(true, Ordering::Relaxed);
        let why = match listener.join() {
            Ok(Err(e)) => e.to_string(),
            _ => "no listener after 30 s".to_owned(),
        };
        return Err(BenchError::Failed(format!("the server's listener: {why}")));
    }
    let connects = plan.connects;
    let latency = std::thread::spawn(move || in_netns(CLIENT_NS, || connect_latency(to, connects)))
        .join()
        .map_err(|_| BenchError::Failed("the connect thread panicked".into()))?;
    stop.store(true, Ordering::Relaxed);
    let listened = listener
        .join()
        .map_err(|_| BenchError::Failed("the listener thread panicked".into()))?;
    listened?;
    latency
}

/// Runs `f` on this thread inside the named network namespace (`ip netns
/// add`): sockets it opens belong to that namespace. Call it on a thread
/// of its own; the thread stays in the namespace.
fn in_netns<T>(name: &str, f: impl FnOnce() -> Result<T, BenchError>) -> Result<T, BenchError> {
    let ns = std::fs::File::open(format!("/var/run/netns/{name}"))
        .map_err(|e| BenchError::Failed(format!("opening netns {name}: {e}")))?;
    // SAFETY: setns on a valid, open namespace file descriptor changes only
    // this thread's network namespace.
    let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(BenchError::Failed(format!(
            "entering netns {name}: {}",
            std::io::Error::last_os_error()
        )));
    }
    f()
}

/// Accepts TCP connections on `port` and closes each at once, until
/// `stop`: the server end of [`connect_latency`] (a forking server such as
/// busybox httpd lets its small accept queue overflow under TCG, and a
/// dropped SYN costs a 1 s retransmit that is no cost of the data path).
/// The handshake completes in the kernel, so polling here adds nothing to
/// a connect's time.
pub fn listen(port: u16, stop: &AtomicBool, bound: impl FnOnce()) -> Result<(), BenchError> {
    let listener = std::net::TcpListener::bind(("0.0.0.0", port))?;
    listener.set_nonblocking(true)?;
    bound();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok(conn) => drop(conn),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Connects `count` times to `to` (after 5 untimed warm-up connects), each
/// connection closed at once; p50 and p99 of the connect times. A connect
/// that fails or takes over 2 s is an error.
pub fn connect_latency(to: SocketAddr, count: u32) -> Result<Latency, BenchError> {
    let mut times = Vec::with_capacity(count as usize);
    for k in 0..count + 5 {
        let start = Instant::now();
        TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .map_err(|e| BenchError::Failed(format!("connect {k} to {to}: {e}")))?;
        let t = start.elapsed().as_secs_f64() * 1e6;
        if k >= 5 {
            times.push(t);
        }
    }
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let idx = ((q * times.len() as f64).ceil() as usize).clamp(1, times.len()) - 1;
        times[idx]
    };
    Ok(Latency {
        connects: count,
        p50_us: pick(0.50),
        p99_us: pick(0.99),
    })
}

/// Runs a command with `input` on stdin; the seconds from spawning it to
/// its exit. An error names the command; past `timeout` it is killed.
pub fn run_cmd(args: &[&str], input: &[u8], timeout: Duration) -> Result<f64, BenchError> {
    let name = args.join(" ");
    let name = if name.len() > 200 {
        format!("{}…", &name[..200])
    } else {
        name
    };
    let start = Instant::now();
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| BenchError::Failed(format!("starting {name}: {e}")))?;
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(out) => out.map_err(|e| BenchError::Failed(format!("waiting for {name}: {e}")))?,
        Err(RecvTimeoutError::Timeout) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            return Err(BenchError::Timeout(format!(
                "> {} s: {name}",
                timeout.as_secs()
            )));
        }
        Err(RecvTimeoutError::Disconnected) => {
            return Err(BenchError::Failed(format!("waiting for {name}")));
        }
    };
    let t = seconds_since(start);
    if let Ok(Err(e)) = writer.join() {
        return Err(BenchError::Failed(format!("writing to {name}: {e}")));
    }
    if !out.status.success() {
        return Err(BenchError::Failed(format!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(t)
}

/// A command's stdout; an error names the command.
fn output(args: &[&str]) -> Result<String, BenchError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| BenchError::Failed(format!("starting {}: {e}", args[0])))?;
    if !out.status.success() {
        return Err(BenchError::Failed(format!(
            "{} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_updates_add_flip_and_delete_and_flip_back_on_a_second_pass() {
        let base = cluster(4, 2);
        let first = updates(&base, 4, 2);
        let scenarios: Vec<Scenario> = first.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            scenarios,
            [
                Scenario::AddService,
                Scenario::ChangeEndpoint,
                Scenario::DeleteService
            ]
        );
        assert_eq!(first[0].1.len(), 5);
        assert_eq!(peer_rules::changed(&first[0].1, &first[1].1), [2].into());
        assert_eq!(first[1].1[&2][0], moved_ip(2, 0, 2));
        assert_eq!(first[2].1.len(), 4);
        let second = updates(&first[2].1, 4, 2);
        assert_eq!(second[2].1, base);
    }

    #[test]
    fn ipvsadm_commands_add_drain_and_delete() {
        let base = cluster(2, 2);
        let steps = updates(&base, 2, 2);
        let cmds = |a: &Cluster, b: &Cluster| {
            ipvsadm_commands(a, b)
                .into_iter()
                .map(|c| c.join(" "))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cmds(&base, &steps[0].1),
            [
                "ip addr add 10.96.0.3/32 dev kube-ipvs0",
                "ipvsadm -A -t 10.96.0.3:80 -s rr",
                "ipvsadm -a -t 10.96.0.3:80 -r 10.128.0.5:8080 -m -w 1",
                "ipvsadm -a -t 10.96.0.3:80 -r 10.128.0.6:8080 -m -w 1",
            ]
        );
        assert_eq!(
            cmds(&steps[0].1, &steps[1].1),
            [
                "ipvsadm -a -t 10.96.0.2:80 -r 11.128.0.3:8080 -m -w 1",
                "ipvsadm -e -t 10.96.0.2:80 -r 10.128.0.3:8080 -m -w 0",
            ]
        );
        assert_eq!(
            cmds(&steps[1].1, &steps[2].1),
            [
                "ipvsadm -D -t 10.96.0.3:80",
                "ip addr del 10.96.0.3/32 dev kube-ipvs0"
            ]
        );
    }

    #[test]
    fn connect_latency_counts_real_connects_on_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = listener.local_addr().unwrap();
        let l = connect_latency(to, 20).unwrap();
        assert_eq!(l.connects, 20);
        assert!(l.p50_us > 0.0 && l.p50_us <= l.p99_us);
        drop(listener);
        assert!(connect_latency(to, 1).is_err());
    }
}
