//! `kipvs proxy`: flags (kube-proxy's names where kube-proxy has them) →
//! [`kipvs_proxy::run::ProxyOptions`] → the agent.

use anyhow::{Context, Result, bail};
use clap::Args;
use kipvs_proxy::agent::Status;
use kipvs_proxy::config;
use kipvs_proxy::desired::Family;
use kipvs_proxy::run::{self, ProxyOptions, Source, parse_cidr, parse_duration};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// kube-proxy's configuration file (KubeProxyConfiguration,
    /// kubeproxy.config.k8s.io/v1alpha1). With it the file wins: the flags
    /// that have a field in it are ignored (with a warning), except
    /// --hostname-override.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// Only `ipvs` (kube-proxy's flag; kipvs has no other mode).
    #[arg(long, value_name = "MODE", value_parser = ["ipvs"])]
    proxy_mode: Option<String>,
    /// Default IPVS scheduler (rr, wrr, lc, wlc, sh, mh …; default rr).
    #[arg(long, value_name = "NAME")]
    ipvs_scheduler: Option<String>,
    /// How often the kernel is re-read and repaired (default 30s).
    #[arg(long, value_name = "DURATION")]
    ipvs_sync_period: Option<String>,
    /// Least time between two syncs (default 0s: apply every change at once).
    #[arg(long, value_name = "DURATION")]
    ipvs_min_sync_period: Option<String>,
    /// Comma-separated CIDRs whose virtual servers kipvs never touches.
    #[arg(long, value_delimiter = ',', value_name = "CIDRS")]
    ipvs_exclude_cidrs: Vec<String>,
    /// Do not answer ARP for addresses on kube-ipvs0.
    #[arg(long)]
    ipvs_strict_arp: bool,
    /// IPVS timeout of idle TCP connections (0: leave the kernel's).
    #[arg(long, value_name = "DURATION")]
    ipvs_tcp_timeout: Option<String>,
    /// IPVS timeout of TCP connections after a FIN (0: leave the kernel's).
    #[arg(long, value_name = "DURATION")]
    ipvs_tcpfin_timeout: Option<String>,
    /// IPVS timeout of UDP flows (0: leave the kernel's).
    #[arg(long, value_name = "DURATION")]
    ipvs_udp_timeout: Option<String>,
    /// The pods' CIDR(s), comma-separated (one per family).
    #[arg(long, value_name = "CIDRS")]
    cluster_cidr: Option<String>,
    /// Masquerade all traffic sent to Service IPs.
    #[arg(long)]
    masquerade_all: bool,
    /// Where NodePorts are served: comma-separated CIDRs, or the keywords
    /// `primary`, `all`, `localhost`.
    #[arg(long, value_delimiter = ',', value_name = "CIDRS|primary")]
    nodeport_addresses: Vec<String>,
    /// Where /healthz and /livez are served (default 0.0.0.0:10256; empty: not served).
    #[arg(long, value_name = "IP:PORT")]
    healthz_bind_address: Option<String>,
    /// Where the local endpoints are served: /healthz and the read-only
    /// inspection API `kipvs list` and `kipvs explain` use (default
    /// 127.0.0.1:10249; empty: not served).
    #[arg(long, value_name = "IP:PORT")]
    metrics_bind_address: Option<String>,
    /// Remove what kipvs made (its virtual servers, kube-ipvs0, its
    /// nftables table) and exit. Sysctls stay.
    #[arg(long)]
    cleanup: bool,
    /// After the first sync has adopted kube-proxy's virtual servers, remove
    /// kube-proxy's leftover KUBE-* iptables chains and KUBE-* ipsets.
    #[arg(long)]
    cleanup_kube_proxy: bool,
    /// Set the node up (sysctls, conntrack) and exit: for a privileged init
    /// container, so the agent itself needs only CAP_NET_ADMIN.
    #[arg(long)]
    init_only: bool,
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
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

impl ProxyArgs {
    /// The kube-proxy flags given that have a field in the config file.
    fn given_file_flags(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut given = |flag: &'static str, set: bool| {
            if set {
                out.push(flag);
            }
        };
        given("kubeconfig", self.kubeconfig.is_some());
        given("proxy-mode", self.proxy_mode.is_some());
        given("ipvs-scheduler", self.ipvs_scheduler.is_some());
        given("ipvs-sync-period", self.ipvs_sync_period.is_some());
        given("ipvs-min-sync-period", self.ipvs_min_sync_period.is_some());
        given("ipvs-exclude-cidrs", !self.ipvs_exclude_cidrs.is_empty());
        given("ipvs-strict-arp", self.ipvs_strict_arp);
        given("ipvs-tcp-timeout", self.ipvs_tcp_timeout.is_some());
        given("ipvs-tcpfin-timeout", self.ipvs_tcpfin_timeout.is_some());
        given("ipvs-udp-timeout", self.ipvs_udp_timeout.is_some());
        given("cluster-cidr", self.cluster_cidr.is_some());
        given("masquerade-all", self.masquerade_all);
        given("nodeport-addresses", !self.nodeport_addresses.is_empty());
        given("healthz-bind-address", self.healthz_bind_address.is_some());
        given("metrics-bind-address", self.metrics_bind_address.is_some());
        out
    }
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

fn timeout_secs(flag: &str, v: &Option<String>) -> Result<u32> {
    v.as_deref()
        .map_or(Ok(0), |v| duration(flag, v).map(|d| d.as_secs() as u32))
}

fn cidrs(flag: &str, list: &[String]) -> Result<Vec<(std::net::IpAddr, u8)>> {
    list.iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .map(|c| parse_cidr(c).with_context(|| format!("--{flag}: `{c}` is not a CIDR")))
        .collect()
}

/// The options and the warnings to log: flags, or with `--config` the file
/// (kube-proxy's precedence, [`config::ignored_flags`]), then kipvs's own
/// flags and `--hostname-override`. `hostname` is asked only when no name
/// is given.
fn options(
    a: ProxyArgs,
    hostname: impl FnOnce() -> Result<String>,
) -> Result<(ProxyOptions, Vec<String>)> {
    let given = a.given_file_flags();
    let ignored = config::ignored_flags(a.config.is_some(), &given);
    let mut warnings: Vec<String> = ignored
        .iter()
        .map(|f| format!("--{f} is ignored: --config is given and the file wins"))
        .collect();
    let source = |kubeconfig: Option<PathBuf>| match &a.manifests {
        Some(dir) => Source::Manifests(dir.clone()),
        None => Source::Api { kubeconfig },
    };
    let mut o = ProxyOptions::new(source(None), String::new());
    if let Some(path) = &a.config {
        let (cfg, file_warnings) = config::load(path)?;
        warnings.extend(file_warnings);
        o = config::apply(&cfg, o).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if a.manifests.is_some() {
            o.source = source(None);
        }
    } else {
        if a.manifests.is_some() && a.kubeconfig.is_some() {
            bail!("--manifests and --kubeconfig exclude each other");
        }
        o.source = source(a.kubeconfig.clone());
        if let Some(s) = &a.ipvs_scheduler {
            o.scheduler = kipvs_sched::SchedulerConfig::from_annotations(s, None)
                .with_context(|| "--ipvs-scheduler".to_string())?;
        }
        if let Some(d) = &a.ipvs_sync_period {
            o.timing.sync_period = duration("ipvs-sync-period", d)?;
        }
        if let Some(d) = &a.ipvs_min_sync_period {
            o.timing.min_sync_period = duration("ipvs-min-sync-period", d)?;
        }
        o.exclude_cidrs = cidrs("ipvs-exclude-cidrs", &a.ipvs_exclude_cidrs)?;
        o.strict_arp = a.ipvs_strict_arp;
        o.ipvs_timeouts = kipvs_ipvs::Timeouts {
            tcp: timeout_secs("ipvs-tcp-timeout", &a.ipvs_tcp_timeout)?,
            tcp_fin: timeout_secs("ipvs-tcpfin-timeout", &a.ipvs_tcpfin_timeout)?,
            udp: timeout_secs("ipvs-udp-timeout", &a.ipvs_udp_timeout)?,
        };
        if let Some(c) = &a.cluster_cidr {
            let list: Vec<String> = c.split(',').map(str::to_string).collect();
            o.cluster_cidrs = cidrs("cluster-cidr", &list)?;
        }
        o.masquerade_all = a.masquerade_all;
        o.nodeport_filter = config::nodeport_filter(&a.nodeport_addresses)
            .map_err(|e| anyhow::anyhow!("--nodeport-addresses: {e}"))?;
        if let Some(b) = &a.healthz_bind_address {
            o.healthz_bind = bind_address("healthz-bind-address", b)?;
        }
        if let Some(b) = &a.metrics_bind_address {
            o.metrics_bind = bind_address("metrics-bind-address", b)?;
        }
    }
    if let Some(n) = &a.hostname_override {
        o.node_name = config::node_name(n);
    }
    if o.node_name.is_empty() {
        o.node_name = config::node_name(
            &hostname().context("reading the hostname (or pass --hostname-override)")?,
        );
    }
    o.drain_timeout = duration("drain-timeout", &a.drain_timeout)?;
    o.families = a
        .ip_families
        .iter()
        .map(|f| match f.trim() {
            "ipv4" => Ok(Family::V4),
            "ipv6" => Ok(Family::V6),
            other => bail!("--ip-families: `{other}` is not ipv4 or ipv6"),
        })
        .collect::<Result<_>>()?;
    o.local_fallback_to_cluster = a.local_fallback_to_cluster;
    o.service_proxy_name = a.service_proxy_name;
    o.dummy = a.dummy_interface;
    Ok((o, warnings))
}

fn read_hostname() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?)
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
    let (cleanup, cleanup_kube_proxy, init_only) =
        (args.cleanup, args.cleanup_kube_proxy, args.init_only);
    let (opts, warnings) = options(args, read_hostname)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if cleanup {
        let r = kipvs_proxy::cleanup::cleanup_kipvs(&opts)?;
        tracing::info!(virtual_servers = r.virtual_servers.len(), links = ?r.links,
            nft_tables = ?r.nft_tables, "cleaned up what kipvs made; sysctls stay");
        return Ok(());
    }
    if init_only {
        run::setup_node(&opts)?;
        tracing::info!("node set up (--init-only)");
        return Ok(());
    }
    tracing::info!(node = %opts.node_name, source = ?opts.source, scheduler = %opts.scheduler, "starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let status = Arc::new(Mutex::new(Status::default()));
    if cleanup_kube_proxy {
        let status = status.clone();
        std::thread::Builder::new()
            .name("kipvs-cleanup".into())
            .spawn(move || clean_kube_proxy_after_first_sync(&status))?;
    }
    runtime.block_on(run::run(opts, status, shutdown_signal()))?;
    Ok(())
}

/// `--cleanup-kube-proxy`: once the first full sync has adopted the
/// kernel's virtual servers, kube-proxy's iptables chains and ipsets go.
fn clean_kube_proxy_after_first_sync(status: &Mutex<Status>) {
    while !status.lock().is_ok_and(|s| s.ready) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    match kipvs_proxy::cleanup::cleanup_kube_proxy() {
        Ok(r) => tracing::info!(
            chains = r.chains.len(),
            ipsets = r.ipsets.len(),
            "removed kube-proxy's leftover iptables chains and ipsets"
        ),
        Err(e) => tracing::error!(error = %e, "removing kube-proxy's leftovers"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kipvs_proxy::desired::NodePortFilter;
    use std::time::Duration;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProxyArgs,
    }

    fn opts(argv: &[&str]) -> (ProxyOptions, Vec<String>) {
        let cli = Cli::try_parse_from(std::iter::once("kipvs").chain(argv.iter().copied()))
            .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        options(cli.args, || Ok("Host-1\n".into())).unwrap()
    }

    fn config_file(name: &str, text: &str) -> String {
        let path = std::env::temp_dir().join(format!("kipvs-{}-{name}.yaml", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    #[test]
    fn every_kube_proxy_flag_sets_its_option() {
        type Check = fn(&ProxyOptions) -> bool;
        let table: &[(&[&str], Check)] = &[
            (&[], |o| {
                o.node_name == "host-1"
                    && o.source == Source::Api { kubeconfig: None }
                    && o.scheduler.to_string() == "rr"
                    && o.healthz_bind == Some("0.0.0.0:10256".parse().unwrap())
                    && o.metrics_bind == Some("127.0.0.1:10249".parse().unwrap())
                    && o.ipvs_timeouts == kipvs_ipvs::Timeouts::default()
            }),
            (&["--hostname-override", "N1"], |o| o.node_name == "n1"),
            (&["--kubeconfig", "/kc"], |o| {
                o.source
                    == Source::Api {
                        kubeconfig: Some("/kc".into()),
                    }
            }),
            (&["--proxy-mode", "ipvs"], |o| o.node_name == "host-1"),
            (&["--ipvs-scheduler", "lc"], |o| {
                o.scheduler.to_string() == "lc"
            }),
            (&["--ipvs-sync-period", "1m"], |o| {
                o.timing.sync_period == Duration::from_secs(60)
            }),
            (&["--ipvs-min-sync-period", "1s"], |o| {
                o.timing.min_sync_period == Duration::from_secs(1)
            }),
            (&["--ipvs-exclude-cidrs", "10.0.0.0/8,fd00::/8"], |o| {
                o.exclude_cidrs.len() == 2
            }),
            (&["--ipvs-strict-arp"], |o| o.strict_arp),
            (&["--ipvs-tcp-timeout", "900s"], |o| {
                o.ipvs_timeouts.tcp == 900
            }),
            (&["--ipvs-tcpfin-timeout", "2m"], |o| {
                o.ipvs_timeouts.tcp_fin == 120
            }),
            (&["--ipvs-udp-timeout", "10s"], |o| {
                o.ipvs_timeouts.udp == 10
            }),
            (&["--cluster-cidr", "10.244.0.0/16,fd00:1::/56"], |o| {
                o.cluster_cidrs
                    == vec![
                        ("10.244.0.0".parse().unwrap(), 16),
                        ("fd00:1::".parse().unwrap(), 56),
                    ]
            }),
            (&["--masquerade-all"], |o| o.masquerade_all),
            (&["--nodeport-addresses", "primary"], |o| {
                o.nodeport_filter == NodePortFilter::Primary
            }),
            (&["--nodeport-addresses", "10.0.0.0/8"], |o| {
                o.nodeport_filter == NodePortFilter::Cidrs(vec![("10.0.0.0".parse().unwrap(), 8)])
            }),
            (&["--healthz-bind-address", "127.0.0.1:1"], |o| {
                o.healthz_bind == Some("127.0.0.1:1".parse().unwrap())
            }),
            (&["--healthz-bind-address", ""], |o| {
                o.healthz_bind.is_none()
            }),
            (&["--metrics-bind-address", "0.0.0.0:2"], |o| {
                o.metrics_bind == Some("0.0.0.0:2".parse().unwrap())
            }),
            (&["--manifests", "/m"], |o| {
                o.source == Source::Manifests("/m".into())
            }),
        ];
        for (argv, check) in table {
            let (o, warnings) = opts(argv);
            assert!(check(&o), "{argv:?}: {o:?}");
            assert!(warnings.is_empty(), "{argv:?}: {warnings:?}");
        }
    }

    #[test]
    fn proxy_mode_is_only_ipvs() {
        assert!(Cli::try_parse_from(["kipvs", "--proxy-mode", "iptables"]).is_err());
    }

    #[test]
    fn with_config_the_file_wins_except_hostname_and_own_flags() {
        let file = config_file(
            "precedence",
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             clientConnection: {kubeconfig: /file-kc}\nhostnameOverride: from-file\n\
             ipvs: {scheduler: wlc, tcpTimeout: 10s}\nclusterCIDR: 10.1.0.0/16\n",
        );
        let (o, warnings) = opts(&[
            "--config",
            &file,
            "--ipvs-scheduler",
            "sh",
            "--kubeconfig",
            "/flag-kc",
            "--masquerade-all",
            "--ipvs-tcp-timeout",
            "1s",
            "--drain-timeout",
            "1m",
        ]);
        assert_eq!(o.scheduler.to_string(), "wlc");
        assert_eq!(
            o.source,
            Source::Api {
                kubeconfig: Some("/file-kc".into())
            }
        );
        assert!(!o.masquerade_all);
        assert_eq!(o.ipvs_timeouts.tcp, 10);
        assert_eq!(o.cluster_cidrs, vec![("10.1.0.0".parse().unwrap(), 16)]);
        assert_eq!(o.node_name, "from-file");
        assert_eq!(o.drain_timeout, Duration::from_secs(60));
        assert_eq!(
            warnings,
            vec![
                "--kubeconfig is ignored: --config is given and the file wins",
                "--ipvs-scheduler is ignored: --config is given and the file wins",
                "--ipvs-tcp-timeout is ignored: --config is given and the file wins",
                "--masquerade-all is ignored: --config is given and the file wins",
            ]
        );
        // --hostname-override beats the file.
        let (o, _) = opts(&["--config", &file, "--hostname-override", "Flag-Node"]);
        assert_eq!(o.node_name, "flag-node");
        // --manifests (kipvs's own) still applies.
        let (o, _) = opts(&["--config", &file, "--manifests", "/m"]);
        assert_eq!(o.source, Source::Manifests("/m".into()));
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn a_bad_config_file_names_file_line_and_field() {
        let file = config_file(
            "bad",
            "kind: KubeProxyConfiguration\nipvs:\n  udpTimeout: forever\n",
        );
        let cli = Cli::try_parse_from(["kipvs", "--config", &file]).unwrap();
        let e = options(cli.args, || Ok("h".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{file}:3: ipvs.udpTimeout: `forever` is not a duration (like 30s, 1m0s, 500ms)"
            )
        );
        std::fs::remove_file(file).unwrap();
    }
}
