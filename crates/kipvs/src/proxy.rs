//! `kipvs proxy`: flags (kube-proxy's names where kube-proxy has them) →
//! [`kipvs_proxy::run::ProxyOptions`] → the agent.

use anyhow::{Context, Result, bail};
use clap::Args;
use kipvs_proxy::agent::Status;
use kipvs_proxy::desired::{Family, NodePortFilter};
use kipvs_proxy::run::{self, ProxyOptions, Source, parse_cidr, parse_duration};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Read Services, EndpointSlices, Endpoints and Nodes from the YAML
    /// files in DIR instead of an API server (re-read when they change).
    #[arg(long, value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// kubeconfig file (default: in-cluster configuration, then $KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// This node's name (default: the hostname).
    #[arg(long, value_name = "NAME")]
    hostname_override: Option<String>,
    /// Default IPVS scheduler (rr, wrr, lc, wlc, sh, mh …; empty = rr).
    #[arg(long, default_value = "rr", value_name = "NAME")]
    ipvs_scheduler: String,
    /// How often the kernel is re-read and repaired.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    ipvs_sync_period: String,
    /// Least time between two syncs (0: apply every change at once).
    #[arg(long, default_value = "0s", value_name = "DURATION")]
    ipvs_min_sync_period: String,
    /// Comma-separated CIDRs whose virtual servers kipvs never touches.
    #[arg(long, value_delimiter = ',', value_name = "CIDRS")]
    ipvs_exclude_cidrs: Vec<String>,
    /// Do not answer ARP for addresses on kube-ipvs0.
    #[arg(long)]
    ipvs_strict_arp: bool,
    /// Where NodePorts are served: comma-separated CIDRs, or `primary`.
    #[arg(long, value_delimiter = ',', value_name = "CIDRS|primary")]
    nodeport_addresses: Vec<String>,
    /// Longest time a removed TCP endpoint drains (weight 0) before it is deleted.
    #[arg(long, default_value = "15m", value_name = "DURATION")]
    drain_timeout: String,
    /// With `Local` traffic policy and no local endpoint, send to all
    /// endpoints (kube-proxy IPVS mode's old behaviour) instead of none.
    #[arg(long)]
    local_fallback_to_cluster: bool,
    /// Serve only objects labelled service.kubernetes.io/service-proxy-name=NAME.
    #[arg(long, value_name = "NAME")]
    service_proxy_name: Option<String>,
    /// IP families to serve.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ipv4,ipv6",
        value_name = "FAMILIES"
    )]
    ip_families: Vec<String>,
    /// The dummy interface virtual-server addresses are bound on.
    #[arg(long, default_value = "kube-ipvs0", value_name = "NAME")]
    dummy_interface: String,
    /// Where /healthz and /livez are served (empty: not served).
    #[arg(long, default_value = "0.0.0.0:10256", value_name = "IP:PORT")]
    healthz_bind_address: String,
    /// Where the local endpoints are served: /healthz and the read-only
    /// inspection API `kipvs list` and `kipvs explain` use (empty: not served).
    #[arg(long, default_value = "127.0.0.1:10249", value_name = "IP:PORT")]
    metrics_bind_address: String,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

fn bind_address(flag: &str, v: &str) -> Result<Option<std::net::SocketAddr>> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse()
        .map(Some)
        .with_context(|| format!("--{flag}: `{v}` is not IP:PORT"))
}

fn duration(flag: &str, v: &str) -> Result<std::time::Duration> {
    parse_duration(v)
        .with_context(|| format!("--{flag}: `{v}` is not a duration (like 30s, 1m, 500ms)"))
}

fn options(a: ProxyArgs) -> Result<ProxyOptions> {
    let source = match (&a.manifests, &a.kubeconfig) {
        (Some(dir), None) => Source::Manifests(dir.clone()),
        (None, kubeconfig) => Source::Api {
            kubeconfig: kubeconfig.clone(),
        },
        (Some(_), Some(_)) => bail!("--manifests and --kubeconfig exclude each other"),
    };
    let node = match a.hostname_override {
        Some(n) => n,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .context("reading the hostname (or pass --hostname-override)")?,
    };
    let mut o = ProxyOptions::new(source, node);
    o.scheduler = kipvs_sched::SchedulerConfig::from_annotations(&a.ipvs_scheduler, None)
        .with_context(|| "--ipvs-scheduler".to_string())?;
    o.timing.sync_period = duration("ipvs-sync-period", &a.ipvs_sync_period)?;
    o.timing.min_sync_period = duration("ipvs-min-sync-period", &a.ipvs_min_sync_period)?;
    o.drain_timeout = duration("drain-timeout", &a.drain_timeout)?;
    o.exclude_cidrs = a
        .ipvs_exclude_cidrs
        .iter()
        .map(|c| {
            parse_cidr(c).with_context(|| format!("--ipvs-exclude-cidrs: `{c}` is not a CIDR"))
        })
        .collect::<Result<_>>()?;
    o.nodeport_filter = match a.nodeport_addresses.as_slice() {
        [] => NodePortFilter::All,
        [p] if p == "primary" => NodePortFilter::Primary,
        list => NodePortFilter::Cidrs(
            list.iter()
                .map(|c| {
                    parse_cidr(c)
                        .with_context(|| format!("--nodeport-addresses: `{c}` is not a CIDR"))
                })
                .collect::<Result<_>>()?,
        ),
    };
    o.families = a
        .ip_families
        .iter()
        .map(|f| match f.trim() {
            "ipv4" => Ok(Family::V4),
            "ipv6" => Ok(Family::V6),
            other => bail!("--ip-families: `{other}` is not ipv4 or ipv6"),
        })
        .collect::<Result<_>>()?;
    o.strict_arp = a.ipvs_strict_arp;
    o.local_fallback_to_cluster = a.local_fallback_to_cluster;
    o.service_proxy_name = a.service_proxy_name;
    o.dummy = a.dummy_interface;
    o.healthz_bind = bind_address("healthz-bind-address", &a.healthz_bind_address)?;
    o.metrics_bind = bind_address("metrics-bind-address", &a.metrics_bind_address)?;
    Ok(o)
}

pub fn run(args: ProxyArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let opts = options(args)?;
    tracing::info!(node = %opts.node_name, source = ?opts.source, scheduler = %opts.scheduler, "starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let status = Arc::new(Mutex::new(Status::default()));
    runtime.block_on(run::run(opts, status, shutdown_signal()))?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
