//! `kipvs proxy`: kube-proxy's command line (every flag of kube-proxy
//! 1.36's `--help`, in Go's pflag syntax: `--flag=value`, `--flag value`,
//! booleans as `--flag` or `--flag=true|false`, `_` for `-` in names) and
//! kipvs's own flags → [`kipvs_proxy::options::ProxyOptions`] → the agent.
//! What each flag does in kipvs is in `docs/flags.md` (a test holds the
//! two together).

use anyhow::{Context, Result, bail};
use clap::Args;
use kipvs_engine::desired::Family;
use kipvs_proxy::api::Status;
use kipvs_proxy::config::{self, parse_go_bool};
use kipvs_proxy::configwatch::ConfigWatch;
use kipvs_proxy::options::{
    self, DetectLocal, LogFormat, ProxyOptions, Source, parse_cidr, parse_duration,
};
use kipvs_proxy::run;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KP: &str = "kube-proxy flags";
const IPVS: &str = "kube-proxy flags: IPVS";
const TRAFFIC: &str = "kube-proxy flags: traffic";
const NODE: &str = "kube-proxy flags: node (conntrack, OOM score)";
const LOG: &str = "kube-proxy flags: logging";
const IGNORED: &str = "kube-proxy flags that do not apply (accepted, ignored with a warning)";
const OWN: &str = "kipvs's own flags";

/// Go's booleans for a flag given as `--flag` or `--flag=VALUE`.
fn go_bool(s: &str) -> Result<bool, String> {
    parse_go_bool(s).ok_or_else(|| format!("`{s}` is not a boolean (true, false, 1, 0, t, f)"))
}

/// A Go duration (`30s`, `1m30s`, `500ms`, `0`).
fn go_duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| format!("`{s}` is not a duration (like 30s, 1m, 500ms)"))
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// kube-proxy's configuration file (KubeProxyConfiguration,
    /// kubeproxy.config.k8s.io/v1alpha1). With it the file wins: flags with a
    /// field in it are ignored (with a warning); --hostname-override, --master,
    /// the logging flags and kipvs's own flags still apply. When the file's
    /// content changes, kipvs exits (1) so that it restarts with it.
    #[arg(long, value_name = "FILE", help_heading = KP)]
    config: Option<PathBuf>,
    /// Write the effective configuration (KubeProxyConfiguration YAML) to
    /// FILE and exit.
    #[arg(long, value_name = "FILE", help_heading = KP)]
    write_config_to: Option<PathBuf>,
    /// kubeconfig file (default: in-cluster configuration, then $KUBECONFIG).
    #[arg(long, value_name = "FILE", help_heading = KP)]
    kubeconfig: Option<PathBuf>,
    /// The API server's URL, instead of the kubeconfig's.
    #[arg(long, value_name = "URL", help_heading = KP)]
    master: Option<String>,
    /// This node's name (default: the hostname).
    #[arg(long, value_name = "NAME", help_heading = KP)]
    hostname_override: Option<String>,
    /// Client-side limit of API requests a second (default 5; negative: no limit).
    #[arg(long, value_name = "QPS", allow_negative_numbers = true, help_heading = KP)]
    kube_api_qps: Option<f32>,
    /// Burst of API requests above --kube-api-qps (default 10).
    #[arg(long, value_name = "N", allow_negative_numbers = true, help_heading = KP)]
    kube_api_burst: Option<i32>,
    /// Content type of API requests: kipvs speaks application/json only
    /// (protobuf is accepted with a warning).
    #[arg(long, value_name = "TYPE", help_heading = KP)]
    kube_api_content_type: Option<String>,
    /// kube-proxy's informer resync period (default 15m0s): accepted; kipvs's
    /// watchers have no resync (--ipvs-sync-period repairs the kernel).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = KP)]
    config_sync_period: Option<Duration>,
    /// Feature gates, Name=true|false,…: the ones kipvs knows describe what
    /// it always does; others are ignored with a warning.
    #[arg(long, value_name = "GATES", help_heading = KP)]
    feature_gates: Option<String>,
    /// `ipvs` (or empty): kipvs is an IPVS proxy; any other mode is refused.
    #[arg(long, value_name = "MODE", help_heading = KP)]
    proxy_mode: Option<String>,
    /// Where /healthz and /livez are served (default 0.0.0.0:10256; a bare IP
    /// takes the default port; empty: not served).
    #[arg(long, value_name = "IP[:PORT]", help_heading = KP)]
    healthz_bind_address: Option<String>,
    /// Where the local endpoints are served: /metrics, /configz, /healthz and
    /// the inspection API `kipvs list` and `kipvs explain` use (default
    /// 127.0.0.1:10249; empty: not served).
    #[arg(long, value_name = "IP[:PORT]", help_heading = KP)]
    metrics_bind_address: Option<String>,
    /// Deprecated (kube-proxy's): the health server's port; 0: not served.
    #[arg(long, value_name = "PORT", help_heading = KP)]
    healthz_port: Option<u16>,
    /// Deprecated (kube-proxy's): the local server's port; 0: not served.
    #[arg(long, value_name = "PORT", help_heading = KP)]
    metrics_port: Option<u16>,
    /// Exit (1) when the health or local server cannot serve, instead of
    /// retrying every 5 s.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = KP)]
    bind_address_hard_fail: Option<bool>,
    /// Remove what kipvs made (its virtual servers, kube-ipvs0, its
    /// nftables table) and exit. Sysctls stay.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = KP)]
    cleanup: Option<bool>,
    /// Set the node up (sysctls, conntrack) and exit: for a privileged init
    /// container, so the agent itself needs only CAP_NET_ADMIN.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = KP)]
    init_only: Option<bool>,

    /// Default IPVS scheduler (rr, wrr, lc, wlc, sh, mh …; default rr).
    #[arg(long, value_name = "NAME", help_heading = IPVS)]
    ipvs_scheduler: Option<String>,
    /// How often the kernel is re-read and repaired (default 30s).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = IPVS)]
    ipvs_sync_period: Option<Duration>,
    /// Least time between two syncs (default 0s: apply every change at once).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = IPVS)]
    ipvs_min_sync_period: Option<Duration>,
    /// Comma-separated CIDRs whose virtual servers kipvs never touches.
    #[arg(long, value_delimiter = ',', value_name = "CIDRS", help_heading = IPVS)]
    ipvs_exclude_cidrs: Vec<String>,
    /// Do not answer ARP for addresses on kube-ipvs0.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = IPVS)]
    ipvs_strict_arp: Option<bool>,
    /// IPVS timeout of idle TCP connections (0: leave the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = IPVS)]
    ipvs_tcp_timeout: Option<Duration>,
    /// IPVS timeout of TCP connections after a FIN (0: leave the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = IPVS)]
    ipvs_tcpfin_timeout: Option<Duration>,
    /// IPVS timeout of UDP flows (0: leave the kernel's).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = IPVS)]
    ipvs_udp_timeout: Option<Duration>,

    /// The pods' CIDR(s), comma-separated (one per family): with
    /// --detect-local-mode=ClusterCIDR, traffic to ClusterIPs from outside
    /// them is masqueraded.
    #[arg(long, value_name = "CIDRS", help_heading = TRAFFIC)]
    cluster_cidr: Option<String>,
    /// How pod traffic is told from the rest: ClusterCIDR (default),
    /// NodeCIDR (the Node's spec.podCIDRs at start), BridgeInterface,
    /// InterfaceNamePrefix.
    #[arg(long, value_name = "MODE", help_heading = TRAFFIC)]
    detect_local_mode: Option<String>,
    /// With --detect-local-mode=BridgeInterface: the pods' bridge.
    #[arg(long, value_name = "NAME", help_heading = TRAFFIC)]
    pod_bridge_interface: Option<String>,
    /// With --detect-local-mode=InterfaceNamePrefix: the prefix of the pods'
    /// interfaces.
    #[arg(long, value_name = "PREFIX", help_heading = TRAFFIC)]
    pod_interface_name_prefix: Option<String>,
    /// Masquerade all traffic sent to Service IPs.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = TRAFFIC)]
    masquerade_all: Option<bool>,
    /// The fwmark bit that asks for masquerade (0-31, default 14).
    #[arg(long, value_name = "BIT", help_heading = TRAFFIC)]
    iptables_masquerade_bit: Option<u8>,
    /// Where NodePorts are served: comma-separated CIDRs, or the keywords
    /// `primary`, `all`, `localhost`.
    #[arg(long, value_delimiter = ',', value_name = "CIDRS|primary", help_heading = TRAFFIC)]
    nodeport_addresses: Vec<String>,
    /// This node's primary IP, instead of the Node object's (for
    /// --nodeport-addresses=primary); 0.0.0.0 or :: changes nothing.
    #[arg(long, value_name = "IP", help_heading = TRAFFIC)]
    bind_address: Option<String>,

    /// The agent's oom_score_adj, -1000 to 1000 (default -999; lowering it
    /// needs CAP_SYS_RESOURCE, else a warning).
    #[arg(long, value_name = "N", allow_negative_numbers = true, help_heading = NODE)]
    oom_score_adj: Option<i32>,
    /// nf_conntrack_max = this × CPUs, at least --conntrack-min (default
    /// 32768; 0: leave the limit).
    #[arg(long, value_name = "N", allow_negative_numbers = true, help_heading = NODE)]
    conntrack_max_per_core: Option<i32>,
    /// Least nf_conntrack_max (default 131072).
    #[arg(long, value_name = "N", allow_negative_numbers = true, help_heading = NODE)]
    conntrack_min: Option<i32>,
    /// nf_conntrack_tcp_timeout_established (default 24h0m0s; 0: leave it).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = NODE)]
    conntrack_tcp_timeout_established: Option<Duration>,
    /// nf_conntrack_tcp_timeout_close_wait (default 1h0m0s; 0: leave it).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = NODE)]
    conntrack_tcp_timeout_close_wait: Option<Duration>,
    /// Set nf_conntrack_tcp_be_liberal to 1.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = NODE)]
    conntrack_tcp_be_liberal: Option<bool>,
    /// nf_conntrack_udp_timeout (0: leave it).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = NODE)]
    conntrack_udp_timeout: Option<Duration>,
    /// nf_conntrack_udp_timeout_stream (0: leave it).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = NODE)]
    conntrack_udp_timeout_stream: Option<Duration>,

    /// klog verbosity: 0-1 info, 2-3 kipvs at debug, 4-5 kipvs at trace, 6-7
    /// libraries at debug, 8+ everything at trace ($RUST_LOG, when set, wins).
    #[arg(short = 'v', long = "v", value_name = "LEVEL", help_heading = LOG)]
    v: Option<u32>,
    /// Log format: text or json.
    #[arg(long, alias = "log-format", value_name = "FORMAT", help_heading = LOG)]
    logging_format: Option<String>,
    /// Accepted: kipvs writes every log line at once (nothing to flush).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = LOG)]
    log_flush_frequency: Option<Duration>,

    /// Per-file verbosity (klog's; kipvs has --v and $RUST_LOG).
    #[arg(long, value_name = "PATTERN=N,…", help_heading = IGNORED)]
    vmodule: Option<String>,
    /// klog's split stream (alpha).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = IGNORED)]
    log_text_split_stream: Option<bool>,
    /// klog's info buffer (alpha).
    #[arg(long, value_name = "SIZE", help_heading = IGNORED)]
    log_text_info_buffer_size: Option<String>,
    /// klog's split stream (alpha).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = IGNORED)]
    log_json_split_stream: Option<bool>,
    /// klog's info buffer (alpha).
    #[arg(long, value_name = "SIZE", help_heading = IGNORED)]
    log_json_info_buffer_size: Option<String>,
    /// Go's pprof handlers.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = IGNORED)]
    profiling: Option<bool>,
    /// kipvs hides no metrics.
    #[arg(long, value_name = "VERSION", help_heading = IGNORED)]
    show_hidden_metrics_for_version: Option<String>,
    /// iptables mode only (IPVS mode never serves NodePorts on localhost).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = go_bool, help_heading = IGNORED)]
    iptables_localhost_nodeports: Option<bool>,
    /// iptables mode only (kipvs: --ipvs-sync-period).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = IGNORED)]
    iptables_sync_period: Option<Duration>,
    /// iptables mode only (kipvs: --ipvs-min-sync-period).
    #[arg(long, value_name = "DURATION", value_parser = go_duration, help_heading = IGNORED)]
    iptables_min_sync_period: Option<Duration>,
    /// cAdvisor's, unused by kube-proxy too.
    #[arg(long, value_name = "FILES", help_heading = IGNORED)]
    boot_id_file: Option<String>,
    /// cAdvisor's, unused by kube-proxy too.
    #[arg(long, value_name = "FILES", help_heading = IGNORED)]
    machine_id_file: Option<String>,

    /// Read Services, EndpointSlices, Endpoints and Nodes from the YAML
    /// files in DIR instead of an API server (re-read when they change).
    #[arg(long, value_name = "DIR", help_heading = OWN)]
    manifests: Option<PathBuf>,
    /// After the first sync has adopted kube-proxy's virtual servers, remove
    /// kube-proxy's leftover KUBE-* iptables chains and KUBE-* ipsets.
    #[arg(long, help_heading = OWN)]
    cleanup_kube_proxy: bool,
    /// Longest time a removed TCP endpoint drains (weight 0) before it is deleted.
    #[arg(long, default_value = "15m", value_name = "DURATION", value_parser = go_duration, help_heading = OWN)]
    drain_timeout: Duration,
    /// With `Local` traffic policy and no local endpoint, send to all
    /// endpoints (kube-proxy IPVS mode's old behaviour) instead of none.
    #[arg(long, help_heading = OWN)]
    local_fallback_to_cluster: bool,
    /// Serve only objects labelled service.kubernetes.io/service-proxy-name=NAME.
    #[arg(long, value_name = "NAME", help_heading = OWN)]
    service_proxy_name: Option<String>,
    /// IP families to serve.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ipv4,ipv6",
        value_name = "FAMILIES",
        help_heading = OWN
    )]
    ip_families: Vec<String>,
    /// The dummy interface virtual-server addresses are bound on.
    #[arg(long, default_value = "kube-ipvs0", value_name = "NAME", help_heading = OWN)]
    dummy_interface: String,
}

/// kube-proxy's flags that do not apply to kipvs: accepted, named in one
/// warning.
pub const NOT_APPLICABLE: &[&str] = &[
    "vmodule",
    "log-text-split-stream",
    "log-text-info-buffer-size",
    "log-json-split-stream",
    "log-json-info-buffer-size",
    "profiling",
    "show-hidden-metrics-for-version",
    "iptables-localhost-nodeports",
    "iptables-sync-period",
    "iptables-min-sync-period",
    "boot-id-file",
    "machine-id-file",
];

/// Go's pflag reads `_` as `-` in flag names (`--hostname_override`):
/// `kipvs proxy`'s arguments spelled so are rewritten; values are not
/// touched, and nothing after `--`.
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let is_proxy = args
        .iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'));
    if is_proxy.is_none_or(|a| a != "proxy") {
        return args;
    }
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for a in args {
        let Some(s) = a
            .to_str()
            .filter(|s| !rest && s.starts_with("--") && s.len() > 2)
        else {
            rest |= a == "--";
            out.push(a);
            continue;
        };
        let (name, value) = s.split_once('=').map_or((s, None), |(n, v)| (n, Some(v)));
        let name = name.replace('_', "-");
        out.push(match value {
            Some(v) => format!("{name}={v}").into(),
            None => name.into(),
        });
    }
    out
}

impl ProxyArgs {
    /// The kube-proxy flags given, by name.
    fn given_flags(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut given = |flag: &'static str, set: bool| {
            if set {
                out.push(flag);
            }
        };
        given("feature-gates", self.feature_gates.is_some());
        given("kubeconfig", self.kubeconfig.is_some());
        given(
            "kube-api-content-type",
            self.kube_api_content_type.is_some(),
        );
        given("kube-api-burst", self.kube_api_burst.is_some());
        given("kube-api-qps", self.kube_api_qps.is_some());
        given("bind-address", self.bind_address.is_some());
        given("healthz-bind-address", self.healthz_bind_address.is_some());
        given("metrics-bind-address", self.metrics_bind_address.is_some());
        given("healthz-port", self.healthz_port.is_some());
        given("metrics-port", self.metrics_port.is_some());
        given(
            "bind-address-hard-fail",
            self.bind_address_hard_fail.is_some(),
        );
        given("profiling", self.profiling.is_some());
        given(
            "show-hidden-metrics-for-version",
            self.show_hidden_metrics_for_version.is_some(),
        );
        given("proxy-mode", self.proxy_mode.is_some());
        given(
            "iptables-masquerade-bit",
            self.iptables_masquerade_bit.is_some(),
        );
        given("masquerade-all", self.masquerade_all.is_some());
        given(
            "iptables-localhost-nodeports",
            self.iptables_localhost_nodeports.is_some(),
        );
        given("iptables-sync-period", self.iptables_sync_period.is_some());
        given(
            "iptables-min-sync-period",
            self.iptables_min_sync_period.is_some(),
        );
        given("ipvs-scheduler", self.ipvs_scheduler.is_some());
        given("ipvs-sync-period", self.ipvs_sync_period.is_some());
        given("ipvs-min-sync-period", self.ipvs_min_sync_period.is_some());
        given("ipvs-exclude-cidrs", !self.ipvs_exclude_cidrs.is_empty());
        given("ipvs-strict-arp", self.ipvs_strict_arp.is_some());
        given("ipvs-tcp-timeout", self.ipvs_tcp_timeout.is_some());
        given("ipvs-tcpfin-timeout", self.ipvs_tcpfin_timeout.is_some());
        given("ipvs-udp-timeout", self.ipvs_udp_timeout.is_some());
        given("detect-local-mode", self.detect_local_mode.is_some());
        given("pod-bridge-interface", self.pod_bridge_interface.is_some());
        given(
            "pod-interface-name-prefix",
            self.pod_interface_name_prefix.is_some(),
        );
        given("cluster-cidr", self.cluster_cidr.is_some());
        given("nodeport-addresses", !self.nodeport_addresses.is_empty());
        given("oom-score-adj", self.oom_score_adj.is_some());
        given(
            "conntrack-max-per-core",
            self.conntrack_max_per_core.is_some(),
        );
        given("conntrack-min", self.conntrack_min.is_some());
        given(
            "conntrack-tcp-timeout-established",
            self.conntrack_tcp_timeout_established.is_some(),
        );
        given(
            "conntrack-tcp-timeout-close-wait",
            self.conntrack_tcp_timeout_close_wait.is_some(),
        );
        given(
            "conntrack-tcp-be-liberal",
            self.conntrack_tcp_be_liberal.is_some(),
        );
        given(
            "conntrack-udp-timeout",
            self.conntrack_udp_timeout.is_some(),
        );
        given(
            "conntrack-udp-timeout-stream",
            self.conntrack_udp_timeout_stream.is_some(),
        );
        given("config-sync-period", self.config_sync_period.is_some());
        given("vmodule", self.vmodule.is_some());
        given(
            "log-text-split-stream",
            self.log_text_split_stream.is_some(),
        );
        given(
            "log-text-info-buffer-size",
            self.log_text_info_buffer_size.is_some(),
        );
        given(
            "log-json-split-stream",
            self.log_json_split_stream.is_some(),
        );
        given(
            "log-json-info-buffer-size",
            self.log_json_info_buffer_size.is_some(),
        );
        given("boot-id-file", self.boot_id_file.is_some());
        given("machine-id-file", self.machine_id_file.is_some());
        out
    }
}

/// A health or local server address from its flags: `IP:PORT` or a bare IP
/// (taking `port`), empty for none; the deprecated port flag, when given,
/// replaces a bare IP's port and 0 turns the server off (kube-proxy's rule).
fn server_address(
    flag: &str,
    given: Option<&str>,
    default: SocketAddr,
    port_flag: Option<u16>,
) -> Result<Option<SocketAddr>> {
    if port_flag == Some(0) {
        return Ok(None);
    }
    let spec = match given {
        None => return Ok(Some(default)),
        Some(v) => {
            config::parse_bind(v).with_context(|| format!("--{flag}: `{v}` is not IP[:PORT]"))?
        }
    };
    Ok(spec.map(|s| match s {
        config::BindSpec::Full(a) => a,
        config::BindSpec::Ip(ip) => SocketAddr::new(ip, port_flag.unwrap_or(default.port())),
    }))
}

fn timeout_secs(v: Option<Duration>) -> u32 {
    v.map_or(0, |d| d.as_secs() as u32)
}

fn cidrs(flag: &str, list: &[String]) -> Result<Vec<ipnet::IpNet>> {
    list.iter()
        .map(|c| c.trim())
        .filter(|c| !c.is_empty())
        .map(|c| parse_cidr(c).with_context(|| format!("--{flag}: `{c}` is not a CIDR")))
        .collect()
}

/// `kipvs proxy`'s decisions, before anything runs.
#[derive(Debug)]
pub struct Loaded {
    pub opts: ProxyOptions,
    /// To log once logging is up.
    pub warnings: Vec<String>,
    /// `hostnameOverride` as given (flag or file), for `--write-config-to`.
    pub hostname_override: Option<String>,
    /// The `--config` file and the bytes it was configured from.
    pub config: Option<(PathBuf, Vec<u8>)>,
}

/// The options and the warnings to log: flags, or with `--config` the file
/// (kube-proxy's precedence, [`config::ignored_flags`]), then the flags
/// that still apply and kipvs's own. `hostname` is asked only when no name
/// is given.
fn options(a: &ProxyArgs, hostname: impl FnOnce() -> Result<String>) -> Result<Loaded> {
    if let Some(m) = a
        .proxy_mode
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "ipvs")
    {
        bail!(
            "--proxy-mode `{m}`: kipvs is an IPVS proxy and runs only in ipvs mode \
             (leave --proxy-mode unset or set it to ipvs)"
        );
    }
    let given = a.given_flags();
    let ignored = config::ignored_flags(a.config.is_some(), &given);
    let mut warnings = Vec::new();
    if !ignored.is_empty() {
        warnings.push(format!(
            "--config is given and the file wins, these flags are ignored: {}",
            ignored
                .iter()
                .map(|f| format!("--{f}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let not_applicable: Vec<String> = given
        .iter()
        .filter(|f| NOT_APPLICABLE.contains(f) && !ignored.contains(f))
        .map(|f| format!("--{f}"))
        .collect();
    if !not_applicable.is_empty() {
        warnings.push(format!(
            "these kube-proxy flags do not apply to kipvs and are ignored: {}",
            not_applicable.join(", ")
        ));
    }
    let source = |kubeconfig: Option<PathBuf>| match &a.manifests {
        Some(dir) => Source::Manifests(dir.clone()),
        None => Source::Api { kubeconfig },
    };
    let mut o = ProxyOptions::new(source(None), String::new());
    let mut hostname_override = None;
    let mut loaded = None;
    if let Some(path) = &a.config {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| file.clone())?;
        let text = String::from_utf8_lossy(&bytes);
        let (cfg, file_warnings) = config::parse(&file, &text)?;
        warnings.extend(file_warnings);
        o = config::apply(&cfg, o).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        if a.manifests.is_some() {
            o.source = source(None);
        }
        hostname_override = cfg
            .hostname_override
            .as_deref()
            .map(config::node_name)
            .filter(|h| !h.is_empty());
        loaded = Some((path.clone(), bytes));
    } else {
        if a.manifests.is_some() && a.kubeconfig.is_some() {
            bail!("--manifests and --kubeconfig exclude each other");
        }
        flags_onto(a, &mut o, &mut warnings)?;
    }
    // What still applies with --config.
    if let Some(m) = &a.master {
        o.client.master = Some(m.clone());
    }
    // kube-proxy: an empty value is no override, blanks are an error.
    if let Some(n) = a.hostname_override.as_ref().filter(|n| !n.is_empty()) {
        if n.trim().is_empty() {
            bail!("--hostname-override: an empty name is not a name");
        }
        o.node_name = config::node_name(n);
        hostname_override = Some(o.node_name.clone());
    }
    if o.node_name.is_empty() {
        o.node_name = config::node_name(
            &hostname().context("reading the hostname (or pass --hostname-override)")?,
        );
    }
    if let Some(v) = a.v {
        o.logging.verbosity = v;
    }
    if let Some(f) = &a.logging_format {
        o.logging.format =
            LogFormat::parse(f).map_err(|e| anyhow::anyhow!("--logging-format: {e}"))?;
    }
    o.drain_timeout = a.drain_timeout;
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
    o.service_proxy_name = a.service_proxy_name.clone();
    o.dummy = a.dummy_interface.clone();
    Ok(Loaded {
        opts: o,
        warnings,
        hostname_override,
        config: loaded,
    })
}

/// The flags that have a field in the file, onto `o` (no `--config`).
fn flags_onto(a: &ProxyArgs, o: &mut ProxyOptions, warnings: &mut Vec<String>) -> Result<()> {
    fn err(flag: &'static str) -> impl Fn(String) -> anyhow::Error {
        move |e| anyhow::anyhow!("--{flag}: {e}")
    }
    if let Source::Api { kubeconfig } = &mut o.source {
        *kubeconfig = a.kubeconfig.clone();
    }
    if let Some(g) = &a.feature_gates {
        o.feature_gates = config::parse_feature_gates(g).map_err(err("feature-gates"))?;
        warnings.extend(config::feature_gate_warning(
            "--feature-gates",
            &o.feature_gates,
        ));
    }
    if a.kube_api_qps.is_some() || a.kube_api_burst.is_some() {
        let (qps, burst) =
            config::client_rate(a.kube_api_qps.unwrap_or(0.0), a.kube_api_burst.unwrap_or(0))
                .map_err(err("kube-api-qps/--kube-api-burst"))?;
        o.client.qps = qps;
        o.client.burst = burst;
    }
    if let Some(t) = &a.kube_api_content_type {
        warnings.extend(
            config::content_type_warning("--kube-api-content-type", t)
                .map_err(|e| anyhow::anyhow!(e))?,
        );
    }
    if let Some(d) = a.config_sync_period {
        if d.is_zero() {
            bail!("--config-sync-period: must be greater than 0");
        }
        o.config_sync_period = d;
    }
    if let Some(s) = &a.ipvs_scheduler {
        o.scheduler = kipvs_sched::SchedulerConfig::from_annotations(s, None)
            .with_context(|| "--ipvs-scheduler".to_string())?;
    }
    if let Some(d) = a.ipvs_sync_period {
        if d.is_zero() {
            bail!("--ipvs-sync-period: must be greater than 0");
        }
        o.timing.sync_period = d;
    }
    if let Some(d) = a.ipvs_min_sync_period {
        o.timing.min_sync_period = d;
    }
    o.exclude_cidrs = cidrs("ipvs-exclude-cidrs", &a.ipvs_exclude_cidrs)?;
    o.strict_arp = a.ipvs_strict_arp.unwrap_or(false);
    o.ipvs_timeouts = kipvs_ipvs::Timeouts {
        tcp: timeout_secs(a.ipvs_tcp_timeout),
        tcp_fin: timeout_secs(a.ipvs_tcpfin_timeout),
        udp: timeout_secs(a.ipvs_udp_timeout),
    };
    if let Some(c) = &a.cluster_cidr {
        let list: Vec<String> = c.split(',').map(str::to_string).collect();
        o.cluster_cidrs = cidrs("cluster-cidr", &list)?;
    }
    o.detect_local = DetectLocal::from_mode(
        a.detect_local_mode.as_deref().unwrap_or(""),
        a.pod_bridge_interface.as_deref().unwrap_or(""),
        a.pod_interface_name_prefix.as_deref().unwrap_or(""),
        (
            "--detect-local-mode",
            "--pod-bridge-interface",
            "--pod-interface-name-prefix",
        ),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    o.masquerade_all = a.masquerade_all.unwrap_or(false);
    if let Some(b) = a.iptables_masquerade_bit {
        if b > 31 {
            bail!("--iptables-masquerade-bit: {b} is not within [0, 31]");
        }
        o.masquerade_bit = b;
    }
    o.nodeport_filter = config::nodeport_filter(&a.nodeport_addresses)
        .map_err(|e| anyhow::anyhow!("--nodeport-addresses: {e}"))?;
    if let Some(b) = &a.bind_address {
        o.bind_address = config::bind_ip(b).map_err(err("bind-address"))?;
    }
    o.bind_address_hard_fail = a.bind_address_hard_fail.unwrap_or(false);
    o.healthz_bind = server_address(
        "healthz-bind-address",
        a.healthz_bind_address.as_deref(),
        SocketAddr::from(([0, 0, 0, 0], 10256)),
        a.healthz_port,
    )?;
    o.metrics_bind = server_address(
        "metrics-bind-address",
        a.metrics_bind_address.as_deref(),
        SocketAddr::from(([127, 0, 0, 1], 10249)),
        a.metrics_port,
    )?;
    if let Some(v) = a.oom_score_adj {
        o.oom_score_adj = Some(config::oom_score_adj(v).map_err(err("oom-score-adj"))?);
    }
    let count = |flag: &str, v: Option<i32>, default: u32| -> Result<u32> {
        match v {
            None => Ok(default),
            Some(v) if v < 0 => bail!("--{flag}: {v} must be non-negative"),
            Some(v) => Ok(v as u32),
        }
    };
    let c = &mut o.conntrack;
    c.max_per_core = count(
        "conntrack-max-per-core",
        a.conntrack_max_per_core,
        c.max_per_core,
    )?;
    c.min = count("conntrack-min", a.conntrack_min, c.min)?;
    if let Some(d) = a.conntrack_tcp_timeout_established {
        c.tcp_established_timeout = d;
    }
    if let Some(d) = a.conntrack_tcp_timeout_close_wait {
        c.tcp_close_wait_timeout = d;
    }
    c.tcp_be_liberal = a.conntrack_tcp_be_liberal.unwrap_or(false);
    if let Some(d) = a.conntrack_udp_timeout {
        c.udp_timeout = d;
    }
    if let Some(d) = a.conntrack_udp_timeout_stream {
        c.udp_stream_timeout = d;
    }
    Ok(())
}

fn read_hostname() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?)
}

/// Logging: `--v` (or the file's `logging.verbosity`) as a tracing filter
/// ([`options::log_filter`]) unless `$RUST_LOG` is set; text or JSON.
fn init_logging(l: &options::Logging) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(options::log_filter(l.verbosity)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match l.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub fn run(args: ProxyArgs) -> Result<()> {
    let cleanup = args.cleanup.unwrap_or(false);
    let init_only = args.init_only.unwrap_or(false);
    let Loaded {
        opts,
        warnings,
        hostname_override,
        config: loaded,
    } = options(&args, read_hostname)?;
    init_logging(&opts.logging);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    if let Some(path) = &args.write_config_to {
        let yaml = serde_saphyr::to_string(&config::effective(&opts, hostname_override.as_deref()))
            .context("rendering the configuration")?;
        std::fs::write(path, yaml).with_context(|| path.display().to_string())?;
        tracing::info!(file = %path.display(), "wrote the configuration");
        return Ok(());
    }
    if cleanup {
        let r = kipvs_proxy::cleanup::cleanup_kipvs(&opts)?;
        tracing::info!(virtual_servers = r.virtual_servers.len(), links = ?r.links,
            nft_tables = ?r.nft_tables, "cleaned up what kipvs made; sysctls stay");
        return Ok(());
    }
    if init_only {
        drop(run::setup_node(&opts)?);
        tracing::info!("node set up (--init-only)");
        return Ok(());
    }
    if let Some(v) = opts.oom_score_adj {
        match kipvs_proxy::oom::apply(std::path::Path::new("/proc/self/oom_score_adj"), v) {
            Ok(Some(old)) => tracing::info!(old, new = v, "set oom_score_adj"),
            Ok(None) => {}
            Err(e) => tracing::warn!(value = v, error = %e,
                "cannot set oom_score_adj (lowering it needs CAP_SYS_RESOURCE); going on"),
        }
    }
    tracing::info!(node = %opts.node_name, source = ?opts.source, scheduler = %opts.scheduler,
        detect_local = opts.detect_local.mode(), "starting");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let status = Arc::new(Mutex::new(Status::default()));
    if args.cleanup_kube_proxy {
        let status = status.clone();
        std::thread::Builder::new()
            .name("kipvs-cleanup".into())
            .spawn(move || clean_kube_proxy_after_first_sync(&status))?;
    }
    let watch = loaded.map(|(path, bytes)| ConfigWatch::new(&path, bytes));
    let changed = Arc::new(Mutex::new(false));
    let shutdown = {
        let changed = changed.clone();
        async move {
            let file_changed = async {
                match &watch {
                    Some(w) => w.changed(kipvs_proxy::configwatch::POLL).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown_signal() => {}
                _ = file_changed => {
                    if let Some(w) = &watch {
                        tracing::error!(file = %w.path().display(),
                            "the configuration file changed; exiting so that the agent restarts with it");
                    }
                    *changed.lock().unwrap_or_else(|e| e.into_inner()) = true;
                }
            }
        }
    };
    runtime.block_on(run::run(opts, status, shutdown))?;
    if *changed.lock().unwrap_or_else(|e| e.into_inner()) {
        bail!(
            "{}: the configuration file changed; exiting so that the agent restarts with it (nothing is flushed)",
            args.config
                .as_deref()
                .unwrap_or(std::path::Path::new("--config"))
                .display()
        );
    }
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
    use kipvs_engine::desired::NodePortFilter;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ProxyArgs,
    }

    fn parse(argv: &[&str]) -> Result<Loaded> {
        let args: Vec<OsString> = ["kipvs", "proxy"]
            .iter()
            .chain(argv)
            .map(OsString::from)
            .collect();
        let mut args = normalize_args(args);
        args.remove(1);
        let cli = Cli::try_parse_from(args).map_err(|e| anyhow::anyhow!("{e}"))?;
        options(&cli.args, || Ok("Host-1\n".into()))
    }

    fn opts(argv: &[&str]) -> (ProxyOptions, Vec<String>) {
        let l = parse(argv).unwrap_or_else(|e| panic!("{argv:?}: {e:#}"));
        (l.opts, l.warnings)
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
                    && o.oom_score_adj == Some(-999)
                    && o.detect_local == DetectLocal::ClusterCidr
                    && o.client == options::ClientOptions::default()
                    && o.conntrack == options::Conntrack::default()
                    && o.logging == options::Logging::default()
            }),
            (&["--hostname-override", "N1"], |o| o.node_name == "n1"),
            (&["--kubeconfig", "/kc"], |o| {
                o.source
                    == Source::Api {
                        kubeconfig: Some("/kc".into()),
                    }
            }),
            (&["--master=https://10.0.0.1:6443"], |o| {
                o.client.master.as_deref() == Some("https://10.0.0.1:6443")
            }),
            (&["--proxy-mode", "ipvs"], |o| o.node_name == "host-1"),
            (&["--proxy-mode="], |o| o.node_name == "host-1"),
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
            (&["--ipvs-strict-arp=true"], |o| o.strict_arp),
            (&["--ipvs-strict-arp=false"], |o| !o.strict_arp),
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
                        "10.244.0.0/16".parse().unwrap(),
                        "fd00:1::/56".parse().unwrap(),
                    ]
            }),
            (&["--masquerade-all"], |o| o.masquerade_all),
            (&["--masquerade-all=1"], |o| o.masquerade_all),
            (&["--iptables-masquerade-bit=5"], |o| o.masquerade_bit == 5),
            (&["--nodeport-addresses", "primary"], |o| {
                o.nodeport_filter == NodePortFilter::Primary
            }),
            (&["--nodeport-addresses", "10.0.0.0/8"], |o| {
                o.nodeport_filter == NodePortFilter::Cidrs(vec!["10.0.0.0/8".parse().unwrap()])
            }),
            (&["--healthz-bind-address", "127.0.0.1:1"], |o| {
                o.healthz_bind == Some("127.0.0.1:1".parse().unwrap())
            }),
            (&["--healthz-bind-address", "10.0.0.1"], |o| {
                o.healthz_bind == Some("10.0.0.1:10256".parse().unwrap())
            }),
            (&["--healthz-bind-address", ""], |o| {
                o.healthz_bind.is_none()
            }),
            (&["--healthz-port=0"], |o| o.healthz_bind.is_none()),
            (
                &["--healthz-bind-address=10.0.0.1", "--healthz-port=1234"],
                |o| o.healthz_bind == Some("10.0.0.1:1234".parse().unwrap()),
            ),
            (&["--metrics-bind-address", "0.0.0.0:2"], |o| {
                o.metrics_bind == Some("0.0.0.0:2".parse().unwrap())
            }),
            (&["--metrics-port", "0"], |o| o.metrics_bind.is_none()),
            (&["--bind-address=10.0.0.7"], |o| {
                o.bind_address == Some("10.0.0.7".parse().unwrap())
            }),
            (&["--bind-address=0.0.0.0"], |o| o.bind_address.is_none()),
            (&["--bind-address-hard-fail"], |o| o.bind_address_hard_fail),
            (&["--oom-score-adj", "-998"], |o| {
                o.oom_score_adj == Some(-998)
            }),
            (&["--oom-score-adj=1000"], |o| o.oom_score_adj == Some(1000)),
            (&["--detect-local-mode=NodeCIDR"], |o| {
                o.detect_local == DetectLocal::NodeCidr
            }),
            (
                &[
                    "--detect-local-mode",
                    "BridgeInterface",
                    "--pod-bridge-interface",
                    "cbr0",
                ],
                |o| o.detect_local == DetectLocal::BridgeInterface("cbr0".into()),
            ),
            (&["--conntrack-max-per-core=0", "--conntrack-min=5"], |o| {
                o.conntrack.max_per_core == 0 && o.conntrack.min == 5
            }),
            (
                &[
                    "--conntrack-tcp-timeout-established=1h",
                    "--conntrack-tcp-timeout-close-wait=30s",
                    "--conntrack-tcp-be-liberal",
                    "--conntrack-udp-timeout=15s",
                    "--conntrack-udp-timeout-stream=2m",
                ],
                |o| {
                    o.conntrack
                        == options::Conntrack {
                            tcp_established_timeout: Duration::from_secs(3600),
                            tcp_close_wait_timeout: Duration::from_secs(30),
                            tcp_be_liberal: true,
                            udp_timeout: Duration::from_secs(15),
                            udp_stream_timeout: Duration::from_secs(120),
                            ..options::Conntrack::default()
                        }
                },
            ),
            (&["--kube-api-qps=50", "--kube-api-burst=100"], |o| {
                o.client.qps == 50.0 && o.client.burst == 100
            }),
            (&["--kube-api-qps", "-1"], |o| o.client.qps == -1.0),
            (&["--kube-api-content-type=application/json"], |o| {
                o.client.qps == 5.0
            }),
            (&["--config-sync-period=1m"], |o| {
                o.config_sync_period == Duration::from_secs(60)
            }),
            (&["--feature-gates=TopologyAwareHints=true"], |o| {
                o.feature_gates.get("TopologyAwareHints") == Some(&true)
            }),
            (&["--v=4"], |o| o.logging.verbosity == 4),
            (&["-v", "3"], |o| o.logging.verbosity == 3),
            (&["--logging-format=json"], |o| {
                o.logging.format == LogFormat::Json
            }),
            (&["--log-format", "json"], |o| {
                o.logging.format == LogFormat::Json
            }),
            (&["--log-flush-frequency=5s"], |o| o.node_name == "host-1"),
            (&["--hostname-override="], |o| o.node_name == "host-1"),
            // pflag reads `_` as `-`.
            (&["--hostname_override=N2", "--ipvs_strict_arp"], |o| {
                o.node_name == "n2" && o.strict_arp
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
    fn bad_values_are_errors_naming_the_flag() {
        for (argv, want) in [
            (
                &["--proxy-mode=iptables"][..],
                "--proxy-mode `iptables`: kipvs is an IPVS proxy",
            ),
            (&["--proxy-mode", "nftables"], "kipvs is an IPVS proxy"),
            (
                &["--oom-score-adj=-1001"],
                "--oom-score-adj: -1001 is not within [-1000, 1000]",
            ),
            (
                &["--detect-local-mode=Pods"],
                "--detect-local-mode: `Pods` is not",
            ),
            (
                &["--detect-local-mode=InterfaceNamePrefix"],
                "--pod-interface-name-prefix: must be set when --detect-local-mode is InterfaceNamePrefix",
            ),
            (&["--kube-api-burst=-1"], "burst -1 must be non-negative"),
            (
                &["--kube-api-content-type=text/xml"],
                "--kube-api-content-type: `text/xml`",
            ),
            (
                &["--feature-gates=Foo"],
                "--feature-gates: `Foo` is not Name=true|false",
            ),
            (
                &["--config-sync-period=0s"],
                "--config-sync-period: must be greater than 0",
            ),
            (&["--ipvs-sync-period=soon"], "`soon` is not a duration"),
            (&["--masquerade-all=maybe"], "`maybe` is not a boolean"),
            (&["--iptables-masquerade-bit=32"], "not within [0, 31]"),
            (
                &["--conntrack-min=-1"],
                "--conntrack-min: -1 must be non-negative",
            ),
            (
                &["--bind-address=nope"],
                "--bind-address: `nope` is not an IP address",
            ),
            (
                &["--logging-format=xml"],
                "--logging-format: `xml` is not a log format",
            ),
            (
                &["--hostname-override= "],
                "--hostname-override: an empty name",
            ),
            (&["--no-such-flag"], "unexpected argument '--no-such-flag'"),
        ] {
            let e = match parse(argv) {
                Ok(l) => panic!("{argv:?} parsed: {:?}", l.opts),
                Err(e) => format!("{e:#}"),
            };
            assert!(e.contains(want), "{argv:?}: {e}");
        }
    }

    /// The three command lines of issue 17's acceptance.
    #[test]
    fn distributions_command_lines() {
        // kubeadm's.
        let file = config_file(
            "kubeadm",
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             clientConnection: {kubeconfig: /var/lib/kube-proxy/kubeconfig.conf}\n\
             clusterCIDR: 10.244.0.0/16\nmode: ipvs\nhostnameOverride: ''\n",
        );
        let l = parse(&[&format!("--config={file}"), "--hostname-override=Node-7"]).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.opts.node_name, "node-7");
        assert_eq!(
            l.opts.source,
            Source::Api {
                kubeconfig: Some("/var/lib/kube-proxy/kubeconfig.conf".into())
            }
        );
        assert_eq!(l.opts.cluster_cidrs, vec!["10.244.0.0/16".parse().unwrap()]);
        assert_eq!(
            l.config.as_ref().map(|c| c.0.display().to_string()),
            Some(file.clone())
        );
        std::fs::remove_file(&file).unwrap();

        // GKE-like.
        let (o, warnings) = opts(&[
            "--v=2",
            "--feature-gates=TopologyAwareHints=true,DisableCloudProviders=true",
            "--oom-score-adj=-998",
            "--cluster-cidr=10.64.0.0/14",
            "--conntrack-max-per-core=0",
            "--kubeconfig=/var/lib/kube-proxy/kubeconfig",
            "--iptables-sync-period=1m",
            "--iptables-min-sync-period=10s",
            "--ipvs-sync-period=1m",
            "--ipvs-min-sync-period=10s",
            "--detect-local-mode=NodeCIDR",
        ]);
        assert_eq!(o.logging.verbosity, 2);
        assert_eq!(o.oom_score_adj, Some(-998));
        assert_eq!(o.cluster_cidrs, vec!["10.64.0.0/14".parse().unwrap()]);
        assert_eq!(o.conntrack.max_per_core, 0);
        assert_eq!(config::conntrack_max(&o.conntrack, 8), None);
        assert_eq!(o.detect_local, DetectLocal::NodeCidr);
        assert_eq!(o.timing.sync_period, Duration::from_secs(60));
        assert_eq!(o.timing.min_sync_period, Duration::from_secs(10));
        assert_eq!(
            warnings,
            vec![
                "these kube-proxy flags do not apply to kipvs and are ignored: \
                 --iptables-sync-period, --iptables-min-sync-period",
                "--feature-gates: kipvs does not know these gates, they are ignored: DisableCloudProviders",
            ]
        );

        // Interface-name-prefix detection.
        let (o, warnings) = opts(&[
            "--detect-local-mode=InterfaceNamePrefix",
            "--pod-interface-name-prefix=veth",
        ]);
        assert_eq!(
            o.detect_local,
            DetectLocal::InterfaceNamePrefix("veth".into())
        );
        assert_eq!(
            format!("{:?}", run::local_traffic(&o, &[])),
            r#"InterfaceNamePrefix("veth")"#
        );
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn with_config_the_file_wins_except_hostname_logging_and_own_flags() {
        let file = config_file(
            "precedence",
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
             clientConnection: {kubeconfig: /file-kc}\nhostnameOverride: from-file\n\
             ipvs: {scheduler: wlc, tcpTimeout: 10s}\nclusterCIDR: 10.1.0.0/16\n\
             logging: {verbosity: 1}\n",
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
            "--oom-score-adj=-5",
            "--detect-local-mode=NodeCIDR",
            "--profiling",
            "--v=3",
            "--master=https://api:6443",
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
        assert_eq!(o.cluster_cidrs, vec!["10.1.0.0/16".parse().unwrap()]);
        assert_eq!(o.node_name, "from-file");
        assert_eq!(o.drain_timeout, Duration::from_secs(60));
        assert_eq!(o.oom_score_adj, Some(-999));
        assert_eq!(o.detect_local, DetectLocal::ClusterCidr);
        // The logging flags and --master beat the file.
        assert_eq!(o.logging.verbosity, 3);
        assert_eq!(o.client.master.as_deref(), Some("https://api:6443"));
        assert_eq!(
            warnings,
            vec![
                "--config is given and the file wins, these flags are ignored: --kubeconfig, \
                 --profiling, --masquerade-all, --ipvs-scheduler, --ipvs-tcp-timeout, \
                 --detect-local-mode, --oom-score-adj"
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
        let e = parse(&["--config", &file]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{file}:3: ipvs.udpTimeout: `forever` is not a duration (like 30s, 1m0s, 500ms)"
            )
        );
        std::fs::remove_file(file).unwrap();
    }

    #[test]
    fn underscores_are_dashes_in_proxy_flag_names_only() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            normalize_args(os(&[
                "kipvs",
                "proxy",
                "--hostname_override=my_host",
                "--ipvs_scheduler",
                "my_sched",
                "--",
                "--a_b"
            ])),
            os(&[
                "kipvs",
                "proxy",
                "--hostname-override=my_host",
                "--ipvs-scheduler",
                "my_sched",
                "--",
                "--a_b"
            ])
        );
        let list = os(&["kipvs", "list", "--a_b"]);
        assert_eq!(normalize_args(list.clone()), list);
    }
}
