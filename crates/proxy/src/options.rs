//! What `kipvs proxy` is configured with, in a module that does no work:
//! [`ProxyOptions`] and the option types in it, kube-proxy's defaults, and
//! the value parsers the flags and the configuration file share
//! ([`parse_duration`], [`parse_cidr`]). `config` reads kube-proxy's flags
//! and `KubeProxyConfiguration` into these; `run` starts the agent from
//! them.

use ipnet::IpNet;
use kipvs_engine::desired::{Family, NodePortFilter};
use kipvs_sched::SchedulerConfig;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A value kipvs cannot use, and the configuration field or flag it was
/// given for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidValue {
    /// `ipvs.scheduler`, `--oom-score-adj`, …
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidValue {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> InvalidValue {
        InvalidValue {
            field: field.into(),
            message: message.into(),
        }
    }
}
/// Timing of the sync loop.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Full re-read of the kernel (kube-proxy's `ipvs.syncPeriod`, 30 s).
    pub sync_period: Duration,
    /// Least time between two syncs (`ipvs.minSyncPeriod`, 0).
    pub min_sync_period: Duration,
    /// How often draining real servers are re-checked.
    pub drain_check: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            sync_period: Duration::from_secs(30),
            min_sync_period: Duration::ZERO,
            drain_check: Duration::from_secs(5),
        }
    }
}

/// Where Kubernetes objects come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The API server, from a kubeconfig file or in-cluster configuration.
    Api { kubeconfig: Option<PathBuf> },
    /// A directory of manifests, re-read when a file changes.
    Manifests(PathBuf),
}

/// Everything `kipvs proxy` is configured with.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    pub source: Source,
    pub node_name: String,
    pub scheduler: SchedulerConfig,
    pub timing: Timing,
    pub families: BTreeSet<Family>,
    pub nodeport_filter: NodePortFilter,
    pub nodeport_range: std::ops::RangeInclusive<u16>,
    pub exclude_cidrs: Vec<IpNet>,
    pub strict_arp: bool,
    pub drain_timeout: Duration,
    pub local_fallback_to_cluster: bool,
    pub service_proxy_name: Option<String>,
    pub dummy: String,
    /// Where the sysctls live (`/proc/sys`).
    pub sysctl_root: PathBuf,
    /// The health server (`/healthz`, `/livez`); `None`: not served.
    pub healthz_bind: Option<SocketAddr>,
    /// The local server (health and the inspection API the CLI uses).
    pub metrics_bind: Option<SocketAddr>,
    /// IPVS connection timeouts (`ipvs.tcpTimeout` …); 0 leaves the kernel's.
    pub ipvs_timeouts: kipvs_ipvs::Timeouts,
    /// kube-proxy's conntrack settings, applied at start.
    pub conntrack: Conntrack,
    /// The pods' CIDRs (`clusterCIDR`), for the nftables rules.
    pub cluster_cidrs: Vec<IpNet>,
    /// Masquerade all traffic to Service IPs (`iptables.masqueradeAll`).
    pub masquerade_all: bool,
    /// The fwmark bit for masquerading (`iptables.masqueradeBit`, 14).
    pub masquerade_bit: u8,
    /// The `nft` binary kipvs's nftables table is written with; `None`:
    /// no table (masquerade, VIP filter and source ranges are then not
    /// enforced).
    pub nft: Option<PathBuf>,
    /// How local traffic is detected (`detectLocalMode`); `ClusterCidr`
    /// uses `cluster_cidrs`.
    pub detect_local: DetectLocal,
    /// Written to `/proc/self/oom_score_adj` at start (`oomScoreAdj`,
    /// kube-proxy's -999); `None`: left alone.
    pub oom_score_adj: Option<i32>,
    /// `bindAddress`: this node's primary IP of its family, instead of the
    /// Node object's (`nodePortAddresses: [primary]`).
    pub bind_address: Option<IpAddr>,
    /// `bindAddressHardFail`: a health or metrics server that cannot bind
    /// stops the agent (else it is retried every 5 s).
    pub bind_address_hard_fail: bool,
    /// The Kubernetes client (`clientConnection`, `--master`).
    pub client: ClientOptions,
    /// `configSyncPeriod`: kept for `/configz` and `--write-config-to`;
    /// kube's watchers have no periodic resync.
    pub config_sync_period: Duration,
    /// `featureGates` as given (kipvs's known ones change nothing).
    pub feature_gates: std::collections::BTreeMap<String, bool>,
    /// Logging (applied by the binary).
    pub logging: Logging,
    /// The effective configuration served at `/configz`; `Null`: derived
    /// from these options at start ([`crate::run::configz`]).
    pub configz: serde_json::Value,
}

impl ProxyOptions {
    /// kube-proxy's defaults for a node, reading `source`.
    pub fn new(source: Source, node_name: String) -> Self {
        ProxyOptions {
            source,
            node_name,
            scheduler: SchedulerConfig::default(),
            timing: Timing::default(),
            families: [Family::V4, Family::V6].into(),
            nodeport_filter: NodePortFilter::All,
            nodeport_range: 30000..=32767,
            exclude_cidrs: Vec::new(),
            strict_arp: false,
            drain_timeout: Duration::from_secs(15 * 60),
            local_fallback_to_cluster: false,
            service_proxy_name: None,
            dummy: kipvs_link::DEFAULT_DUMMY.into(),
            sysctl_root: PathBuf::from("/proc/sys"),
            healthz_bind: Some(SocketAddr::from(([0, 0, 0, 0], 10256))),
            metrics_bind: Some(SocketAddr::from(([127, 0, 0, 1], 10249))),
            ipvs_timeouts: kipvs_ipvs::Timeouts::default(),
            conntrack: Conntrack::default(),
            cluster_cidrs: Vec::new(),
            masquerade_all: false,
            masquerade_bit: 14,
            nft: Some(PathBuf::from("nft")),
            detect_local: DetectLocal::ClusterCidr,
            oom_score_adj: Some(DEFAULT_OOM_SCORE_ADJ),
            bind_address: None,
            bind_address_hard_fail: false,
            client: ClientOptions::default(),
            config_sync_period: DEFAULT_CONFIG_SYNC_PERIOD,
            feature_gates: Default::default(),
            logging: Logging::default(),
            configz: serde_json::Value::Null,
        }
    }
}

/// kube-proxy's `detectLocalMode`: how traffic from this node's pods is
/// told from the rest (the nftables masquerade rule, [`kipvs_nft::LocalTraffic`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DetectLocal {
    /// Sources in `clusterCIDR` (kube-proxy's default).
    #[default]
    ClusterCidr,
    /// Sources in the Node's `spec.podCIDRs`, read at start.
    NodeCidr,
    /// Packets in from this bridge.
    BridgeInterface(String),
    /// Packets in from an interface whose name starts with this.
    InterfaceNamePrefix(String),
}

impl DetectLocal {
    /// kube-proxy's name of the mode.
    pub fn mode(&self) -> &'static str {
        match self {
            DetectLocal::ClusterCidr => "ClusterCIDR",
            DetectLocal::NodeCidr => "NodeCIDR",
            DetectLocal::BridgeInterface(_) => "BridgeInterface",
            DetectLocal::InterfaceNamePrefix(_) => "InterfaceNamePrefix",
        }
    }

    /// From kube-proxy's mode name and its two settings, checked as
    /// kube-proxy does (the interface modes need their name). `what` names
    /// the source (a field or a flag) in errors.
    pub fn from_mode(
        mode: &str,
        bridge: &str,
        prefix: &str,
        what: (&str, &str, &str),
    ) -> Result<DetectLocal, InvalidValue> {
        let name = |v: &str, field: &str| {
            if kipvs_nft::interface_name_ok(v) {
                Ok(v.to_string())
            } else if v.is_empty() {
                Err(InvalidValue::new(
                    field,
                    format!("must be set when {} is {mode}", what.0),
                ))
            } else {
                Err(InvalidValue::new(
                    field,
                    format!(
                        "`{v}` is not an interface name (1 to 15 printable characters, no quote, backslash, slash or `*`)"
                    ),
                ))
            }
        };
        match mode.trim() {
            "" | "ClusterCIDR" => Ok(DetectLocal::ClusterCidr),
            "NodeCIDR" => Ok(DetectLocal::NodeCidr),
            "BridgeInterface" => name(bridge, what.1).map(DetectLocal::BridgeInterface),
            "InterfaceNamePrefix" => name(prefix, what.2).map(DetectLocal::InterfaceNamePrefix),
            other => Err(InvalidValue::new(
                what.0,
                format!(
                    "`{other}` is not ClusterCIDR, NodeCIDR, BridgeInterface or InterfaceNamePrefix"
                ),
            )),
        }
    }
}

/// The log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl LogFormat {
    /// kube-proxy's `text` and `json` (empty: text).
    pub fn parse(s: &str) -> Result<LogFormat, String> {
        match s.trim() {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format (text, json)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Logging (`logging`, `--v`, `--logging-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Logging {
    pub format: LogFormat,
    /// klog's verbosity, mapped onto tracing levels by [`log_filter`].
    pub verbosity: u32,
}

/// The tracing filter for a klog verbosity: kipvs's own crates at `info`
/// up to 1, `debug` from 2 (kube-proxy's "useful steady-state
/// information"), `trace` from 4; from 6 (client-go's request logging)
/// the libraries too, at `debug`, and everything at `trace` from 8.
pub fn log_filter(verbosity: u32) -> String {
    match verbosity {
        0..=1 => "info".into(),
        2..=3 => "info,kipvs=debug".into(),
        4..=5 => "info,kipvs=trace".into(),
        6..=7 => "debug,kipvs=trace".into(),
        _ => "trace".into(),
    }
}

/// The Kubernetes client's settings (`clientConnection`, `--master`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOptions {
    /// Requests a second (token bucket, client-go's); negative: no limit.
    pub qps: f32,
    /// The bucket's size.
    pub burst: u32,
    /// Overrides the kubeconfig's server (`--master`).
    pub master: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            qps: DEFAULT_QPS,
            burst: DEFAULT_BURST,
            master: None,
        }
    }
}

/// client-go's (and so kube-proxy's) default client rate limit: 5 requests
/// a second, bursts of 10; 0 means these.
pub const DEFAULT_QPS: f32 = 5.0;
pub const DEFAULT_BURST: u32 = 10;

/// The conntrack settings kube-proxy applies at start, with its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conntrack {
    /// `nf_conntrack_max` = max(`max_per_core` × CPUs, `min`); 0 leaves it.
    pub max_per_core: u32,
    pub min: u32,
    /// 0 leaves the kernel's value.
    pub tcp_established_timeout: Duration,
    pub tcp_close_wait_timeout: Duration,
    pub tcp_be_liberal: bool,
    pub udp_timeout: Duration,
    pub udp_stream_timeout: Duration,
}

impl Default for Conntrack {
    fn default() -> Self {
        Conntrack {
            max_per_core: 32 * 1024,
            min: 128 * 1024,
            tcp_established_timeout: Duration::from_secs(24 * 3600),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        }
    }
}

/// kube-proxy's default `oomScoreAdj` (`qos.KubeProxyOOMScoreAdj`).
pub const DEFAULT_OOM_SCORE_ADJ: i32 = -999;

/// kube-proxy's default `configSyncPeriod`.
pub const DEFAULT_CONFIG_SYNC_PERIOD: Duration = Duration::from_secs(15 * 60);

/// Parses a Go duration as kube-proxy's flags and configuration write
/// them (`30s`, `1m0s`, `500ms`, `2h45m`, `1.5s`, `0`), with kube-core's
/// parser ([`kube::core::Duration`], which reads what Go's
/// `time.ParseDuration` reads). Refused: negative durations (no option of
/// kube-proxy's takes one), the empty string, and three inputs kube-core
/// reads but Go refuses: more than one sign (`+-5s`), a number after the
/// last unit (`1s0`), and numbers adding up to 10^15 or more. (That many
/// ms, s, m or h is past Go's limit of ~292 years, and kube-core panics
/// once a total passes `u64` seconds; so 10^15 ns or µs and more are
/// refused too, which Go reads.)
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    if unsigned.is_empty()
        || unsigned.starts_with(['+', '-'])
        || !(unsigned == "0" || unsigned.ends_with(char::is_alphabetic))
    {
        return None;
    }
    let numbers: f64 = unsigned
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|n| n.parse::<f64>().ok())
        .sum();
    if numbers >= 1e15 {
        return None;
    }
    let d: kube::core::Duration = s.parse().ok()?;
    (!d.is_negative()).then(|| d.into())
}

/// Parses a CIDR (`10.0.0.0/8`, `fd00::/64`, with ipnet) or a bare address
/// (its host prefix, `/32` or `/128`). Host bits are kept as written
/// (`10.0.0.1/8`, so `--write-config-to` writes what was given); what
/// matches addresses against a CIDR ignores them ([`IpNet::contains`]),
/// and the nftables table is given the network ([`IpNet::trunc`]).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    match s.parse::<IpNet>() {
        Ok(net) => Some(net),
        Err(_) => s.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let ok = [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("fd00::/8", "fd00::/8"),
            ("fd00::/64", "fd00::/64"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            (" 10.244.0.0/16 ", "10.244.0.0/16"),
            // Host bits are kept as written.
            ("10.0.0.1/8", "10.0.0.1/8"),
            // A bare address is its host prefix.
            ("10.1.2.3", "10.1.2.3/32"),
            ("fd00::1", "fd00::1/128"),
            ("10.0.0.0/08", "10.0.0.0/8"),
            // ipnet's address parser reads leading zeros as decimal (as
            // kube-proxy's ParseCIDRSloppy does); std's, for a bare
            // address, refuses them.
            ("010.0.0.0/8", "10.0.0.0/8"),
        ];
        for (s, want) in ok {
            assert_eq!(
                parse_cidr(s).map(|n| n.to_string()).as_deref(),
                Some(want),
                "{s}"
            );
        }
        for s in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "nope/8",
            "10.0.0.0/",
            "/8",
            "10.0.0.0/+8",
            "10.0.0.0/008",
            "10.0.0/8",
            "010.0.0.1",
            "fd00::/64/1",
        ] {
            assert_eq!(parse_cidr(s), None, "{s}");
        }
        // Matching ignores host bits.
        let net = parse_cidr("10.0.0.1/8").unwrap();
        assert!(net.contains(&"10.200.0.1".parse::<IpAddr>().unwrap()));
        assert_eq!(net.trunc().to_string(), "10.0.0.0/8");
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("30s", Duration::from_secs(30)),
            ("1m0s", Duration::from_secs(60)),
            ("1m30s", Duration::from_secs(90)),
            ("2h45m", Duration::from_secs(2 * 3600 + 45 * 60)),
            ("15m0s", Duration::from_secs(15 * 60)),
            ("24h0m0s", Duration::from_secs(24 * 3600)),
            ("500ms", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("250μs", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("+0", Duration::ZERO),
            ("+5s", Duration::from_secs(5)),
            (" 30s ", Duration::from_secs(30)),
            (
                "999999999999999ns",
                Duration::from_nanos(999_999_999_999_999),
            ),
        ];
        for (s, d) in ok {
            assert_eq!(parse_duration(s), Some(d), "{s}");
        }
        let bad = [
            "",
            " ",
            "s",
            "10",
            "10x",
            "1m-",
            "-1s",
            "-0",
            "+-5s",
            "++5s",
            "--5s",
            "1s0",
            "1h30",
            "00",
            "1 s",
            "1e3s",
            "1000000000000000ns",
            "99999999999999999999999h",
            "900000000000000h900000000000000h",
        ];
        for s in bad {
            assert_eq!(parse_duration(s), None, "{s}");
        }
    }
}
