//! Starting the agent: node setup (sysctls, kube-ipvs0), the real data
//! plane, the source, and the sync loop on its own thread. Flushes nothing,
//! on start or on exit.

use crate::agent;
use crate::api::Status;
use crate::kernel::{KernelDataplane, LinkBinder};
use crate::options::{DetectLocal, ProxyOptions, Source, parse_cidr};
use crate::source;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use kipvs_engine::controller::{Engine, Ownership};
use kipvs_engine::desired::{self, Context, Family, NodePortFilter};
use kipvs_engine::diff::DiffConfig;
use kipvs_engine::labels;
use kipvs_sched::SchedulerConfig;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sysctl(#[from] kipvs_link::sysctl::SysctlError),
    #[error(transparent)]
    Link(#[from] kipvs_link::Error),
    #[error(transparent)]
    Ipvs(#[from] kipvs_ipvs::Error),
    #[error("nftables: {0}")]
    Nft(#[from] kipvs_nft::NftError),
    #[error("nftables: {0}")]
    Firewall(#[from] crate::kernel::FirewallError),
    /// The API-server source was asked for and no client was made for it
    /// (a bug in start-up's order, not a cluster's fault).
    #[error("Kubernetes client: none was made for the API-server source")]
    NoClient,
    /// A kernel module the agent needs is neither built in nor loadable.
    #[error(
        "kernel module {module} is not loaded and could not be loaded on demand \
         (needed for {needed_for}; is it installed, and does /sbin/modprobe work?): {reason}"
    )]
    ModuleMissing {
        module: &'static str,
        needed_for: &'static str,
        reason: String,
    },
    #[error("the sync loop stopped unexpectedly")]
    Stopped,
    /// Only IPv6 was asked for and the kernel has none.
    #[error("no IP family to serve: {0}")]
    NoFamily(String),
    /// The configured scheduler cannot make a virtual server.
    #[error(
        "IPVS scheduler `{scheduler}` does not work on this kernel (module {module}): {source}"
    )]
    Scheduler {
        scheduler: String,
        module: String,
        source: kipvs_ipvs::Error,
    },
    #[error("Kubernetes client: {0}")]
    Client(#[from] crate::client::ClientError),
    /// `detectLocalMode: NodeCIDR` without the Node's pod CIDRs.
    #[error("detectLocalMode NodeCIDR: {0}")]
    NodeCidr(String),
    /// kube-proxy exits then too, to start over with the new facts.
    #[error("{0}; exiting so that the agent restarts with it (nothing is flushed)")]
    Restart(String),
    /// `bindAddressHardFail`: a health or metrics server could not serve.
    #[error("serving {addr} (bindAddressHardFail): {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Loads `ip_vs` (and with it `nf_conntrack`) the way a node without
/// preloaded modules does: by using it. Resolving the IPVS generic-netlink
/// family makes the kernel run `/sbin/modprobe net-pf-16-proto-16-family-IPVS`
/// when the family is not registered yet. The IPVS sysctls and conntrack's
/// exist only once the modules are in, so this comes before any of them.
pub fn load_ipvs() -> Result<kipvs_ipvs::Client, RunError> {
    kipvs_ipvs::Client::new().map_err(|e| match e {
        kipvs_ipvs::Error::IpvsUnavailable => RunError::ModuleMissing {
            module: "ip_vs",
            needed_for: "IPVS virtual servers and the net.ipv4.vs.* sysctls",
            reason: e.to_string(),
        },
        other => RunError::Ipvs(other),
    })
}

/// The node settings kube-proxy makes before proxying (and alone with
/// `--init-only`): the IPVS sysctls and the conntrack settings. Each is
/// written only when it differs, so after a privileged init container the
/// agent itself needs no writable `/proc/sys`. `ip_vs` is loaded first
/// ([`load_ipvs`]), so this works on a node where nothing loaded it yet;
/// the IPVS client that loaded it is returned for the agent to use.
pub fn setup_node(opts: &ProxyOptions) -> Result<kipvs_ipvs::Client, RunError> {
    let ipvs = load_ipvs()?;
    let families = node_families(opts)?;
    let local = kipvs_link::Links::open()
        .and_then(|mut l| crate::kernel::local_addresses(&mut l, &opts.dummy))
        .unwrap_or_default();
    let kernel = kipvs_link::sysctl::KernelVersion::running()
        .unwrap_or(kipvs_link::sysctl::KernelVersion(6, 1));
    let wanted = kipvs_link::sysctl::required(
        kipvs_link::sysctl::Options {
            // IPv6 forwarding (which makes the kernel ignore router
            // advertisements) only on a node that uses IPv6.
            dual_stack: families.contains(&Family::V6) && uses_ipv6(&local, &opts.dummy),
            strict_arp: opts.strict_arp,
        },
        kernel,
    );
    for a in kipvs_link::sysctl::apply(&opts.sysctl_root, &wanted)? {
        if a.changed() {
            tracing::info!(sysctl = a.name, old = %a.old, new = %a.new, "set sysctl");
        }
    }
    apply_conntrack(opts);
    Ok(ipvs)
}

/// The families the node serves: the configured ones, less IPv6 when the
/// kernel has none (booted with `ipv6.disable=1`, or built without it), as
/// kube-proxy serves a second family only where the kernel supports it.
pub fn node_families(opts: &ProxyOptions) -> Result<BTreeSet<Family>, RunError> {
    let mut families = opts.families.clone();
    if families.contains(&Family::V6) && !opts.sysctl_root.join("net/ipv6").exists() {
        families.remove(&Family::V6);
        if families.is_empty() {
            return Err(RunError::NoFamily(
                "IPv6 was asked for and this kernel has no IPv6 (ipv6.disable=1?)".into(),
            ));
        }
        tracing::info!("the kernel has no IPv6: serving IPv4 only");
    }
    Ok(families)
}

/// Whether the node uses IPv6: it has a global IPv6 address on an interface
/// other than kipvs's dummy (loopback and link-local ones do not count).
pub fn uses_ipv6(local: &[(String, IpAddr)], dummy: &str) -> bool {
    local.iter().any(|(link, a)| match a {
        IpAddr::V6(a) => link != dummy && !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80,
        IpAddr::V4(_) => false,
    })
}

/// Writes kube-proxy's conntrack settings ([`crate::config::conntrack_settings`]):
/// the sysctls (each only when it differs), then the hash table size when
/// it is below a quarter of `nf_conntrack_max`. A setting that cannot be
/// written (`nf_conntrack` not loaded, a read-only `/proc/sys` or `/sys`,
/// `nf_conntrack_max` outside the initial network namespace) is a warning
/// naming it, not a failure: proxying works without it.
fn apply_conntrack(opts: &ProxyOptions) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    for (name, value) in crate::config::conntrack_settings(&opts.conntrack, cpus) {
        let path = kipvs_link::sysctl::path(&opts.sysctl_root, name);
        let written = std::fs::read_to_string(&path).and_then(|old| {
            if old.trim() != value {
                std::fs::write(&path, &value)?;
                tracing::info!(sysctl = name, old = old.trim(), new = %value, "set conntrack sysctl");
            }
            Ok(())
        });
        if let Err(e) = written {
            tracing::warn!(sysctl = name, value = %value, error = %e, "cannot apply conntrack setting");
        }
    }
    if let Some(max) = crate::config::conntrack_max(&opts.conntrack, cpus) {
        let path = "/sys/module/nf_conntrack/parameters/hashsize";
        let current = std::fs::read_to_string(path)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(size) = current.and_then(|c| crate::config::conntrack_hashsize(max, c)) {
            match std::fs::write(path, size.to_string()) {
                Ok(()) => tracing::info!(hashsize = size, "set conntrack hash table size"),
                Err(e) => tracing::warn!(error = %e, hashsize = size,
                    "cannot raise the conntrack hash table size (read-only /sys?)"),
            }
        }
    }
}

/// The probe virtual server: TEST-NET-2 (RFC 5737), never a Service's
/// address, as kube-proxy's own scheduler check.
pub const PROBE_SERVICE: (std::net::Ipv4Addr, u16) =
    (std::net::Ipv4Addr::new(198, 51, 100, 0), 20000);

/// Checks that the default scheduler really works, as kube-proxy does at
/// start: creates a probe virtual server with it, reads it back, deletes
/// it.
pub fn probe_scheduler(
    ipvs: &mut kipvs_ipvs::Client,
    scheduler: &SchedulerConfig,
) -> Result<(), RunError> {
    let key = kipvs_ipvs::ServiceKey::tcp(PROBE_SERVICE.0, PROBE_SERVICE.1);
    let name = scheduler.scheduler().name();
    let service = kipvs_ipvs::Service::new(key, name);
    let added = match ipvs.add_service(&service) {
        // A probe left by a crash between add and delete: replace it.
        Err(kipvs_ipvs::Error::ServiceExists(_)) => ipvs
            .delete_service(&key)
            .and_then(|()| ipvs.add_service(&service)),
        other => other,
    };
    let probed = added.and_then(|()| ipvs.service(&key).map(|_| ()));
    let _ = ipvs.delete_service(&key);
    probed.map_err(|source| RunError::Scheduler {
        scheduler: name.to_string(),
        module: scheduler.scheduler().module(),
        source,
    })
}

/// The node facts the desired state depends on, from the Node object and
/// the local addresses.
pub fn context(opts: &ProxyOptions, node: Option<&Node>, local: &[(String, IpAddr)]) -> Context {
    let zone = node
        .and_then(|n| n.metadata.labels.as_ref())
        .and_then(|l| l.get(labels::ZONE))
        .cloned();
    let primary: Vec<IpAddr> = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    let primary = with_bind_address(primary, opts.bind_address);
    let nodeport = desired::nodeport_addresses(local, &opts.dummy, &opts.nodeport_filter, &primary);
    Context {
        node_name: opts.node_name.clone(),
        node_zone: zone,
        families: opts.families.clone(),
        nodeport_addresses: nodeport,
        local_addresses: local
            .iter()
            .filter(|(i, _)| *i != opts.dummy)
            .map(|(_, a)| *a)
            .collect(),
        default_scheduler: opts.scheduler.clone(),
        local_fallback_to_cluster: opts.local_fallback_to_cluster,
        service_proxy_name: opts.service_proxy_name.clone(),
    }
}

/// kube-proxy's `bindAddress`: it replaces the node's primary IP of its
/// family.
pub fn with_bind_address(mut primary: Vec<IpAddr>, bind: Option<IpAddr>) -> Vec<IpAddr> {
    if let Some(b) = bind {
        primary.retain(|a| a.is_ipv4() != b.is_ipv4());
        primary.insert(0, b);
    }
    primary
}

/// A Node's `spec.podCIDRs` (unparsable ones left out).
pub fn pod_cidrs(node: &Node) -> Vec<IpNet> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidrs.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| parse_cidr(c))
        .collect()
}

/// `detectLocalMode: NodeCIDR`: the Node's pod CIDRs at start, as kube-proxy
/// waits for them: from the API (every second, up to `timeout`, until the
/// Node exists with pod CIDRs) or from the manifest directory (once).
async fn start_pod_cidrs(
    opts: &ProxyOptions,
    client: Option<&kube::Client>,
    timeout: Duration,
) -> Result<Vec<IpNet>, RunError> {
    let name = &opts.node_name;
    match (&opts.source, client) {
        (Source::Manifests(dir), _) => {
            let (m, _) = crate::manifest::load_dir(dir)
                .map_err(|e| RunError::NodeCidr(format!("{}: {e}", dir.display())))?;
            let cidrs = m
                .nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(name.as_str()))
                .map(pod_cidrs)
                .unwrap_or_default();
            if cidrs.is_empty() {
                return Err(RunError::NodeCidr(format!(
                    "no Node {name} with spec.podCIDRs in {}",
                    dir.display()
                )));
            }
            Ok(cidrs)
        }
        (Source::Api { .. }, Some(client)) => {
            let nodes: kube::Api<Node> = kube::Api::all(client.clone());
            let deadline = Instant::now() + timeout;
            loop {
                let why = match nodes.get_opt(name).await {
                    Ok(Some(n)) if !pod_cidrs(&n).is_empty() => return Ok(pod_cidrs(&n)),
                    Ok(Some(_)) => format!("Node {name} has no spec.podCIDRs"),
                    Ok(None) => format!("no Node {name}"),
                    Err(e) => format!("reading Node {name}: {e}"),
                };
                if Instant::now() >= deadline {
                    return Err(RunError::NodeCidr(format!("{why} after {timeout:?}")));
                }
                tracing::info!(
                    "{why}; waiting for the Node's pod CIDRs (detectLocalMode NodeCIDR)"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        (Source::Api { .. }, None) => Err(RunError::NodeCidr("no Kubernetes client".into())),
    }
}

/// The nftables local-traffic detector for the options (`pod_cidrs`: the
/// Node's, for `NodeCidr`).
pub fn local_traffic(opts: &ProxyOptions, pod_cidrs: &[IpNet]) -> kipvs_nft::LocalTraffic {
    use kipvs_nft::LocalTraffic;
    match &opts.detect_local {
        DetectLocal::ClusterCidr => LocalTraffic::ClusterCidrs(opts.cluster_cidrs.clone()),
        DetectLocal::NodeCidr => LocalTraffic::NodeCidrs(pod_cidrs.to_vec()),
        DetectLocal::BridgeInterface(b) => LocalTraffic::BridgeInterface(b.clone()),
        DetectLocal::InterfaceNamePrefix(p) => LocalTraffic::InterfaceNamePrefix(p.clone()),
    }
}

/// Runs the agent until `shutdown` resolves. On return every rule stays in
/// the kernel.
pub async fn run(
    opts: ProxyOptions,
    status: Arc<Mutex<Status>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let mut opts = opts;
    opts.families = node_families(&opts)?;
    let mut ipvs = setup_node(&opts)?;
    probe_scheduler(&mut ipvs, &opts.scheduler)?;
    if opts.ipvs_timeouts != kipvs_ipvs::Timeouts::default() {
        ipvs.set_timeouts(&opts.ipvs_timeouts)?;
        tracing::info!(
            tcp = opts.ipvs_timeouts.tcp,
            tcp_fin = opts.ipvs_timeouts.tcp_fin,
            udp = opts.ipvs_timeouts.udp,
            "set IPVS timeouts (0: unchanged)"
        );
    }
    // Creating the dummy link loads `dummy` on demand (rtnl-link-dummy).
    let mut binder = LinkBinder::ensure(&opts.dummy).map_err(|e| match e {
        kipvs_link::Error::Create { ref source, .. }
            if source.errno() == Some(libc::EOPNOTSUPP) =>
        {
            RunError::ModuleMissing {
                module: "dummy",
                needed_for: "the dummy interface that holds the Service addresses",
                reason: e.to_string(),
            }
        }
        other => RunError::Link(other),
    })?;
    let local = binder.local_addresses()?;
    let ctx = context(&opts, None, &local);
    let ctx_nodeports = ctx.nodeport_addresses.clone();
    let ownership = Ownership {
        nodeport_addresses: ctx.nodeport_addresses.iter().copied().collect(),
        nodeport_range: opts.nodeport_range.clone(),
        exclude: opts.exclude_cidrs.clone(),
    };
    let mut dataplane = KernelDataplane::new(ipvs, binder);
    let client = match &opts.source {
        Source::Api { kubeconfig } => {
            Some(crate::client::kube_client(kubeconfig.clone(), &opts.client).await?)
        }
        Source::Manifests(_) => None,
    };
    // NodeCIDR: the Node's pod CIDRs at start; a later change restarts
    // the agent, as kube-proxy.
    let start_cidrs = if opts.detect_local == DetectLocal::NodeCidr {
        let cidrs = start_pod_cidrs(&opts, client.as_ref(), Duration::from_secs(300)).await?;
        tracing::info!(pod_cidrs = ?cidrs, "local traffic: from the Node's pod CIDRs");
        Some(cidrs)
    } else {
        None
    };
    let (restart_tx, mut restart_rx) = tokio::sync::mpsc::unbounded_channel::<RunError>();
    if let Some(path) = &opts.nft {
        let mut firewall = crate::kernel::Firewall::new(
            kipvs_nft::Nft::new(path),
            kipvs_nft::Skeleton {
                masquerade_all: opts.masquerade_all,
                local: local_traffic(&opts, start_cidrs.as_deref().unwrap_or_default()),
                mark: 1u32
                    .checked_shl(u32::from(opts.masquerade_bit))
                    .unwrap_or(kipvs_nft::DEFAULT_MASQUERADE_MARK),
            },
        );
        // Fail at start, not at every sync, when nft cannot run at all.
        firewall.read()?;
        dataplane = dataplane.with_firewall(firewall);
    }
    let engine = Engine::new(
        dataplane,
        ctx,
        ownership,
        DiffConfig {
            drain_timeout_secs: opts.drain_timeout.as_secs(),
        },
    );

    // One bounded queue, coalescing by object, from the sources and the
    // HTTP server to the sync thread (crate::mailbox).
    let (tx, sync_rx) = crate::mailbox::mailbox();
    let sync_tx = tx.clone();
    let source_task = match opts.source.clone() {
        Source::Manifests(dir) => tokio::spawn(source::watch_manifests(
            dir,
            opts.node_name.clone(),
            Duration::from_millis(500),
            tx,
        )),
        Source::Api { .. } => {
            let client = client.ok_or(RunError::NoClient)?;
            // kube-proxy's birth cry, once the watchers start; best-effort.
            let (events_client, node) = (client.clone(), opts.node_name.clone());
            tokio::spawn(async move {
                crate::events::record_starting(events_client, &node, 5, Duration::from_secs(2))
                    .await;
            });
            tokio::spawn(source::watch_api(
                client,
                opts.node_name.clone(),
                opts.service_proxy_name.clone(),
                tx,
            ))
        }
    };
    let mut servers = Vec::new();
    let mut http = crate::http::HttpState::new(status.clone(), sync_tx, opts.timing.sync_period);
    http.configz = Arc::new(if opts.configz.is_null() {
        configz(&opts)
    } else {
        opts.configz.clone()
    });
    http.stats = Some(Arc::new(read_virtual_server_stats));
    for (addr, local) in [(opts.healthz_bind, false), (opts.metrics_bind, true)] {
        let Some(addr) = addr else { continue };
        let app = if local {
            crate::http::local_router(http.clone())
        } else {
            crate::http::health_router(http.clone())
        };
        // As kube-proxy: retried every 5 s, or with bindAddressHardFail
        // the agent stops.
        let (hard_fail, restart) = (opts.bind_address_hard_fail, restart_tx.clone());
        servers.push(tokio::spawn(async move {
            loop {
                let e = match crate::http::serve_router(addr, app.clone()).await {
                    Ok(()) => std::io::Error::other("the server stopped"),
                    Err(e) => e,
                };
                tracing::error!(%addr, error = %e, "serving HTTP");
                if hard_fail {
                    let _ = restart.send(RunError::Bind { addr, source: e });
                    return;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }));
    }
    // Health-check node ports, on the NodePort addresses when
    // `nodePortAddresses` restricts them (as of each sync).
    let restricted = opts.nodeport_filter != NodePortFilter::All;
    status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .nodeport_addresses = ctx_nodeports;
    servers.push(tokio::spawn(crate::healthcheck::serve_service_health(
        restricted,
        opts.families.clone(),
        status.clone(),
        opts.timing.sync_period,
    )));
    let ctx_opts = opts.clone();
    let context_fn: agent::ContextFn = Box::new(move |node| {
        if let (Some(start), Some(n)) = (&start_cidrs, node) {
            let now = pod_cidrs(n);
            if &now != start {
                let _ = restart_tx.send(RunError::Restart(format!(
                    "the Node's pod CIDRs changed from {start:?} to {now:?} (detectLocalMode NodeCIDR)"
                )));
            }
        }
        // One address dump; on failure keep the addresses from the start.
        let fresh = kipvs_link::Links::open()
            .and_then(|mut l| crate::kernel::local_addresses(&mut l, &ctx_opts.dummy));
        match fresh {
            Ok(now) => context(&ctx_opts, node, &now),
            Err(e) => {
                tracing::warn!(error = %e, "reading local addresses");
                context(&ctx_opts, node, &local)
            }
        }
    });
    let timing = opts.timing;
    let started = Instant::now();
    let sync_thread = std::thread::Builder::new()
        .name("kipvs-sync".into())
        .spawn(move || {
            agent::run(engine, sync_rx, context_fn, timing, status, move || {
                started.elapsed().as_secs()
            })
        })
        .expect("spawning the sync thread");
    let mut stopped = Box::pin(tokio::task::spawn_blocking(move || sync_thread.join()));
    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down; the kernel keeps every rule");
            source_task.abort();
            servers.iter().for_each(|s| s.abort());
            Ok(())
        }
        _ = &mut stopped => Err(RunError::Stopped),
        // The caller's runtime ends the tasks.
        Some(e) = restart_rx.recv() => {
            tracing::error!(error = %e, "stopping; the kernel keeps every rule");
            Err(e)
        }
    }
}

/// Every IPVS virtual server's counters, with a netlink socket of its own
/// (for `/metrics`; one dump of the service table, destinations not read).
fn read_virtual_server_stats()
-> Result<Vec<(kipvs_engine::model::VirtualServerKey, kipvs_ipvs::Stats)>, String> {
    let mut client = kipvs_ipvs::Client::new().map_err(|e| e.to_string())?;
    let services = client.services().map_err(|e| e.to_string())?;
    Ok(services
        .iter()
        .filter_map(|s| Some((crate::kernel::model_key(&s.service.key)?, s.stats)))
        .collect())
}

/// The effective configuration for `/configz`: kube-proxy's
/// `KubeProxyConfiguration` as kipvs applies it ([`crate::config::effective`],
/// with the node's name), and kipvs's own settings under `kipvs`.
pub fn configz(opts: &ProxyOptions) -> serde_json::Value {
    let go = |d: Duration| format!("{}s", d.as_secs_f64());
    let mut out = crate::config::effective(opts, Some(&opts.node_name));
    out["kipvs"] = serde_json::json!({
        "dummy": opts.dummy,
        "drainTimeout": go(opts.drain_timeout),
        "localFallbackToCluster": opts.local_fallback_to_cluster,
        "serviceProxyName": opts.service_proxy_name,
        "families": opts.families.iter().map(|f| match f {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }).collect::<Vec<_>>(),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_uses_ipv6_when_it_has_a_global_ipv6_address_outside_the_dummy() {
        let a = |link: &str, ip: &str| (link.to_owned(), ip.parse::<IpAddr>().unwrap());
        let v4_only = [
            a("if2", "192.168.1.10"),
            a("if1", "::1"),
            a("if2", "fe80::1"),
        ];
        assert!(!uses_ipv6(&v4_only, "kube-ipvs0"));
        assert!(!uses_ipv6(
            &[a("if2", "192.168.1.10"), a("kube-ipvs0", "fd00::10")],
            "kube-ipvs0"
        ));
        assert!(uses_ipv6(&[a("if2", "2001:db8::10")], "kube-ipvs0"));
        assert!(uses_ipv6(&[a("if2", "fd00::10")], "kube-ipvs0"));
    }

    #[test]
    fn a_kernel_without_ipv6_serves_ipv4_only_and_refuses_ipv6_only() {
        let root = std::env::temp_dir().join(format!("kipvs-noipv6-{}", std::process::id()));
        std::fs::create_dir_all(root.join("net/ipv4")).unwrap();
        let mut opts = ProxyOptions::new(Source::Manifests("/nonexistent".into()), "n".into());
        opts.sysctl_root = root.clone();
        assert_eq!(node_families(&opts).unwrap(), [Family::V4].into());
        opts.families = [Family::V6].into();
        assert!(matches!(node_families(&opts), Err(RunError::NoFamily(_))));
        std::fs::create_dir_all(root.join("net/ipv6")).unwrap();
        assert_eq!(node_families(&opts).unwrap(), [Family::V6].into());
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn bind_address_replaces_the_primary_ip_of_its_family() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let node = vec![ip("10.0.0.4"), ip("fd00::4")];
        assert_eq!(with_bind_address(node.clone(), None), node);
        assert_eq!(
            with_bind_address(node.clone(), Some(ip("10.0.0.9"))),
            vec![ip("10.0.0.9"), ip("fd00::4")]
        );
        assert_eq!(
            with_bind_address(node, Some(ip("fd00::9"))),
            vec![ip("fd00::9"), ip("10.0.0.4")]
        );
        assert_eq!(
            with_bind_address(Vec::new(), Some(ip("10.0.0.9"))),
            vec![ip("10.0.0.9")]
        );
    }

    #[test]
    fn the_detector_follows_detect_local_mode() {
        use kipvs_nft::LocalTraffic;
        let mut o = ProxyOptions::new(Source::Manifests("/m".into()), "n".into());
        o.cluster_cidrs = vec!["10.244.0.0/16".parse().unwrap()];
        let pods = ["10.244.3.0/24".parse().unwrap()];
        assert_eq!(
            local_traffic(&o, &pods),
            LocalTraffic::ClusterCidrs(o.cluster_cidrs.clone())
        );
        o.detect_local = DetectLocal::NodeCidr;
        assert_eq!(
            local_traffic(&o, &pods),
            LocalTraffic::NodeCidrs(pods.to_vec())
        );
        o.detect_local = DetectLocal::InterfaceNamePrefix("veth".into());
        assert_eq!(
            local_traffic(&o, &pods),
            LocalTraffic::InterfaceNamePrefix("veth".into())
        );
        o.detect_local = DetectLocal::BridgeInterface("cbr0".into());
        assert_eq!(
            local_traffic(&o, &pods),
            LocalTraffic::BridgeInterface("cbr0".into())
        );
    }

    #[tokio::test]
    async fn node_cidr_reads_the_node_from_the_manifests() {
        let dir = std::env::temp_dir().join(format!("kipvs-podcidr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("node.yaml"),
            "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n\
             spec: {podCIDRs: [10.244.1.0/24, 'fd00:10:1::/64']}\n",
        )
        .unwrap();
        let mut o = ProxyOptions::new(Source::Manifests(dir.clone()), "n1".into());
        o.detect_local = DetectLocal::NodeCidr;
        let got = start_pod_cidrs(&o, None, Duration::ZERO).await.unwrap();
        assert_eq!(
            got,
            vec![
                "10.244.1.0/24".parse().unwrap(),
                "fd00:10:1::/64".parse().unwrap()
            ]
        );
        o.node_name = "n2".into();
        let e = start_pod_cidrs(&o, None, Duration::ZERO).await.unwrap_err();
        assert!(
            e.to_string().contains("no Node n2 with spec.podCIDRs"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
