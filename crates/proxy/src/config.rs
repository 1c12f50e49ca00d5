//! kube-proxy's configuration file, `KubeProxyConfiguration`
//! (`kubeproxy.config.k8s.io/v1alpha1`), and its flag precedence.
//!
//! Everything here is pure: [`parse`] turns the file's text into a
//! [`KubeProxyConfiguration`] (a malformed file is an error naming file,
//! line and field) plus warnings, [`apply`] maps it onto
//! [`ProxyOptions`] with kube-proxy's defaults (an empty or zero value means
//! "the default", as kube-proxy's defaulting does), [`ignored_flags`] is
//! kube-proxy's precedence (with `--config` the file wins over every flag
//! that has a field in it, except `--hostname-override`), and
//! [`conntrack_settings`] is what kube-proxy writes to the conntrack
//! sysctls. Fields kipvs does not implement are never silently ignored:
//! when set to anything but their zero value they are named in one warning.

use crate::options::{
    Conntrack, DEFAULT_BURST, DEFAULT_OOM_SCORE_ADJ, DEFAULT_QPS, DetectLocal, InvalidValue,
    LogFormat, ProxyOptions, Source, parse_cidr, parse_duration,
};
use ipnet::IpNet;
use kipvs_engine::desired::NodePortFilter;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// The API version kipvs reads.
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The kind kipvs reads.
pub const KIND: &str = "KubeProxyConfiguration";

/// A Go duration (`metav1.Duration`): `30s`, `1m0s`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GoDuration(pub Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(GoDuration).ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not a duration (like 30s, 1m0s, 500ms)"))
        })
    }
}

/// A CIDR or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_cidr(&s)
            .map(Cidr)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a CIDR")))
    }
}

/// `clusterCIDR`: one CIDR or a comma-separated dual-stack pair.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CidrList(pub Vec<IpNet>);

impl<'de> Deserialize<'de> for CidrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                parse_cidr(c)
                    .ok_or_else(|| serde::de::Error::custom(format!("`{c}` is not a CIDR")))
            })
            .collect::<Result<_, _>>()
            .map(CidrList)
    }
}

/// An `IP:PORT` (or, as kube-proxy accepts, a bare IP taking the default
/// port); empty is "the default".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindAddress(pub Option<BindSpec>);

/// A bind address as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindSpec {
    Full(SocketAddr),
    Ip(IpAddr),
}

impl<'de> Deserialize<'de> for BindAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_bind(&s)
            .map(BindAddress)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not IP:PORT")))
    }
}

/// Parses `IP:PORT`, `[IPv6]:PORT`, a bare IP or empty (`Some(None)`).
pub fn parse_bind(s: &str) -> Option<Option<BindSpec>> {
    let s = s.trim();
    if s.is_empty() {
        return Some(None);
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(Some(BindSpec::Full(a)));
    }
    s.parse::<IpAddr>().ok().map(|ip| Some(BindSpec::Ip(ip)))
}

impl BindSpec {
    fn with_default_port(self, port: u16) -> SocketAddr {
        match self {
            BindSpec::Full(a) => a,
            BindSpec::Ip(ip) => SocketAddr::new(ip, port),
        }
    }
}

/// The file's fields kipvs reads. Every field is optional: absent, `null`
/// and zero all mean kube-proxy's default. Fields of the file that are not
/// here are checked by [`unapplied_fields`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeProxyConfiguration {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub feature_gates: Option<BTreeMap<String, bool>>,
    pub client_connection: Option<ClientConnection>,
    pub logging: Option<LoggingConfiguration>,
    pub hostname_override: Option<String>,
    pub bind_address: Option<String>,
    pub healthz_bind_address: Option<BindAddress>,
    pub metrics_bind_address: Option<BindAddress>,
    pub bind_address_hard_fail: Option<bool>,
    pub mode: Option<String>,
    pub iptables: Option<IptablesConfiguration>,
    pub ipvs: Option<IpvsConfiguration>,
    pub detect_local_mode: Option<String>,
    pub detect_local: Option<DetectLocalConfiguration>,
    #[serde(rename = "clusterCIDR")]
    pub cluster_cidr: Option<CidrList>,
    pub node_port_addresses: Option<Vec<String>>,
    pub oom_score_adj: Option<i32>,
    pub conntrack: Option<ConntrackConfiguration>,
    pub config_sync_period: Option<GoDuration>,
}

/// `clientConnection`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientConnection {
    pub kubeconfig: Option<PathBuf>,
    pub qps: Option<f32>,
    pub burst: Option<i32>,
    pub content_type: Option<String>,
    pub accept_content_types: Option<String>,
}

/// `logging`: kipvs reads the format and the verbosity.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggingConfiguration {
    pub format: Option<String>,
    pub verbosity: Option<u32>,
}

/// `detectLocal`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetectLocalConfiguration {
    pub bridge_interface: Option<String>,
    pub interface_name_prefix: Option<String>,
}

/// kube-proxy's `qps`/`burst` as client-go reads them: 0 is the default,
/// a negative QPS is no limit, a negative burst an error.
pub fn client_rate(qps: f32, burst: i32) -> Result<(f32, u32), String> {
    if burst < 0 {
        return Err(format!("burst {burst} must be non-negative"));
    }
    if !qps.is_finite() {
        return Err(format!("qps {qps} is not a number"));
    }
    let qps = if qps == 0.0 { DEFAULT_QPS } else { qps };
    let burst = if burst == 0 {
        DEFAULT_BURST
    } else {
        burst as u32
    };
    Ok((qps, burst))
}

/// The content types kipvs's client speaks: JSON only (kube-rs has no
/// protobuf codec). `Ok(Some(warning))` for protobuf, an error for a type
/// no client speaks. `what` names the field or flag.
pub fn content_type_warning(what: &str, value: &str) -> Result<Option<String>, String> {
    let mut warn = false;
    for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match t.split(';').next().unwrap_or(t).trim() {
            "application/json" | "*/*" => {}
            "application/vnd.kubernetes.protobuf" => warn = true,
            other => {
                return Err(format!(
                    "{what}: `{other}` is not application/json or application/vnd.kubernetes.protobuf"
                ));
            }
        }
    }
    Ok(warn.then(|| {
        format!(
            "{what} `{value}`: kipvs's Kubernetes client (kube-rs) speaks JSON only; it uses application/json"
        )
    }))
}

/// Feature gates kipvs knows: each is a kube-proxy behaviour kipvs always
/// has, as with the gate enabled (its default in kube-proxy 1.36).
pub const KNOWN_FEATURE_GATES: &[&str] = &[
    "LoadBalancerIPMode",
    "PreferSameTrafficDistribution",
    "ServiceTrafficDistribution",
    "TopologyAwareHints",
];

/// The one warning for `featureGates` / `--feature-gates`, if any: gates
/// kipvs does not know, and known gates turned off (kipvs cannot turn
/// them off).
pub fn feature_gate_warning(what: &str, gates: &BTreeMap<String, bool>) -> Option<String> {
    let unknown: Vec<&str> = gates
        .keys()
        .filter(|g| !KNOWN_FEATURE_GATES.contains(&g.as_str()))
        .map(String::as_str)
        .collect();
    let off: Vec<&str> = gates
        .iter()
        .filter(|(g, on)| KNOWN_FEATURE_GATES.contains(&g.as_str()) && !**on)
        .map(|(g, _)| g.as_str())
        .collect();
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!(
            "kipvs does not know these gates, they are ignored: {}",
            unknown.join(", ")
        ));
    }
    if !off.is_empty() {
        parts.push(format!(
            "kipvs always behaves as with these gates on, `false` is ignored: {}",
            off.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| format!("{what}: {}", parts.join("; ")))
}

/// Parses `--feature-gates`: `Name=bool,Name=bool` (Go's booleans).
pub fn parse_feature_gates(s: &str) -> Result<BTreeMap<String, bool>, String> {
    let mut out = BTreeMap::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not Name=true|false"))?;
        let v =
            parse_go_bool(v.trim()).ok_or_else(|| format!("`{item}`: `{v}` is not a boolean"))?;
        out.insert(k.trim().to_string(), v);
    }
    Ok(out)
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// `oomScoreAdj` / `--oom-score-adj`: within [-1000, 1000].
pub fn oom_score_adj(v: i32) -> Result<i32, String> {
    if (-1000..=1000).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is not within [-1000, 1000]"))
    }
}

/// `bindAddress` / `--bind-address`: an IP; the unspecified address (or
/// empty) overrides nothing.
pub fn bind_ip(s: &str) -> Result<Option<IpAddr>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address"))?;
    Ok((!ip.is_unspecified()).then_some(ip))
}

/// A duration as Go prints it (`30s`, `1m30s`, `24h0m0s`, `500ms`, `0s`),
/// as kube-proxy writes its configuration.
pub fn go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        let ms = d.as_secs_f64() * 1e3;
        return if ms.fract() == 0.0 {
            format!("{ms}ms")
        } else {
            format!("{}µs", d.as_micros())
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = d.subsec_nanos();
    let s = if frac == 0 {
        s.to_string()
    } else {
        let f = format!("{:09}", frac);
        format!("{s}.{}", f.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `iptables`: in IPVS mode kube-proxy reads only these two.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IptablesConfiguration {
    pub masquerade_all: Option<bool>,
    pub masquerade_bit: Option<i32>,
}

/// `ipvs`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpvsConfiguration {
    pub scheduler: Option<String>,
    pub sync_period: Option<GoDuration>,
    pub min_sync_period: Option<GoDuration>,
    #[serde(rename = "excludeCIDRs")]
    pub exclude_cidrs: Option<Vec<Cidr>>,
    #[serde(rename = "strictARP")]
    pub strict_arp: Option<bool>,
    pub tcp_timeout: Option<GoDuration>,
    pub tcp_fin_timeout: Option<GoDuration>,
    pub udp_timeout: Option<GoDuration>,
}

/// `conntrack`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConntrackConfiguration {
    pub max_per_core: Option<i32>,
    pub min: Option<i32>,
    pub tcp_established_timeout: Option<GoDuration>,
    pub tcp_close_wait_timeout: Option<GoDuration>,
    pub tcp_be_liberal: Option<bool>,
    pub udp_timeout: Option<GoDuration>,
    pub udp_stream_timeout: Option<GoDuration>,
}

/// What kube-proxy writes for the conntrack settings on a node with `cpus`
/// CPUs: sysctls under `net.netfilter.` as (name, value), in order. The
/// hash table size (`/sys/module/nf_conntrack/parameters/hashsize`) is
/// raised to `nf_conntrack_max / 4` when smaller, see [`conntrack_hashsize`].
pub fn conntrack_settings(c: &Conntrack, cpus: u32) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(max) = conntrack_max(c, cpus) {
        out.push(("net.netfilter.nf_conntrack_max", max.to_string()));
    }
    let secs = |d: Duration| (d.as_secs() > 0).then(|| d.as_secs().to_string());
    if let Some(v) = secs(c.tcp_established_timeout) {
        out.push(("net.netfilter.nf_conntrack_tcp_timeout_established", v));
    }
    if let Some(v) = secs(c.tcp_close_wait_timeout) {
        out.push(("net.netfilter.nf_conntrack_tcp_timeout_close_wait", v));
    }
    if c.tcp_be_liberal {
        out.push(("net.netfilter.nf_conntrack_tcp_be_liberal", "1".into()));
    }
    if let Some(v) = secs(c.udp_timeout) {
        out.push(("net.netfilter.nf_conntrack_udp_timeout", v));
    }
    if let Some(v) = secs(c.udp_stream_timeout) {
        out.push(("net.netfilter.nf_conntrack_udp_timeout_stream", v));
    }
    out
}

/// kube-proxy's `nf_conntrack_max`: `max_per_core` × CPUs, at least `min`;
/// `None` (leave it) when `max_per_core` is 0.
pub fn conntrack_max(c: &Conntrack, cpus: u32) -> Option<u64> {
    (c.max_per_core > 0).then(|| (u64::from(c.max_per_core) * u64::from(cpus)).max(c.min.into()))
}

/// The hash table size to write, given the current one: `max / 4` when the
/// current is smaller, else nothing.
pub fn conntrack_hashsize(max: u64, current: u64) -> Option<u64> {
    (current < max / 4).then_some(max / 4)
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// Malformed YAML or a bad value: where and which field.
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        file: String,
        line: usize,
        field: String,
        message: String,
    },
}

/// Reads and parses a configuration file.
pub fn load(path: &std::path::Path) -> Result<(KubeProxyConfiguration, Vec<String>), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&file, &text)
}

/// Parses a configuration file's text: the configuration and the warnings
/// (at most one naming every field kipvs does not apply). `file` names the
/// file in errors.
pub fn parse(file: &str, text: &str) -> Result<(KubeProxyConfiguration, Vec<String>), ConfigError> {
    let mut path = String::new();
    let typed = serde_saphyr::with_deserializer_from_str(text, |de| {
        serde_path_to_error::deserialize::<_, KubeProxyConfiguration>(de).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        })
    });
    let invalid = |e: serde_saphyr::Error, field: String| {
        let line = e.location().map(|l| l.line() as usize).unwrap_or(1);
        let text = e.without_snippet().to_string();
        let text = text.trim_start_matches("error: ");
        let message = text.split(" at line ").next().unwrap_or(text).to_string();
        let message = match message.split_once(": ") {
            Some((pos, rest)) if pos.starts_with("line ") => rest.to_string(),
            _ => message,
        };
        ConfigError::Invalid {
            file: file.to_string(),
            line,
            field,
            message,
        }
    };
    let cfg = typed.map_err(|e| {
        let field = if path.is_empty() || path == "." {
            "(document)".to_string()
        } else {
            path.clone()
        };
        invalid(e, field)
    })?;
    let tree: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| invalid(e, "(document)".into()))?;
    let bad_header = |field: &str, message: String| ConfigError::Invalid {
        file: file.to_string(),
        line: line_of(text, field),
        field: field.to_string(),
        message,
    };
    if let Some(v) = cfg.api_version.as_deref().filter(|v| *v != API_VERSION) {
        return Err(bad_header(
            "apiVersion",
            format!("`{v}`: kipvs reads {API_VERSION}"),
        ));
    }
    if let Some(k) = cfg.kind.as_deref().filter(|k| *k != KIND) {
        return Err(bad_header("kind", format!("`{k}`: kipvs reads {KIND}")));
    }
    if let Some(m) = cfg
        .mode
        .as_deref()
        .filter(|m| !m.is_empty() && *m != "ipvs")
    {
        return Err(bad_header(
            "mode",
            format!("`{m}`: kipvs is an IPVS proxy, mode must be `ipvs` (or empty)"),
        ));
    }
    if let Some(b) = cfg
        .iptables
        .as_ref()
        .and_then(|i| i.masquerade_bit)
        .filter(|b| !(0..=31).contains(b))
    {
        return Err(ConfigError::Invalid {
            file: file.to_string(),
            line: line_of(text, "masqueradeBit"),
            field: "iptables.masqueradeBit".into(),
            message: format!("{b} is not within [0, 31]"),
        });
    }
    let mut warnings = Vec::new();
    let unapplied = unapplied_fields(&tree);
    if !unapplied.is_empty() {
        warnings.push(format!(
            "{file}: kipvs does not implement these fields, they are ignored: {}",
            unapplied.join(", ")
        ));
    }
    if let Some(w) = cfg
        .feature_gates
        .as_ref()
        .and_then(|g| feature_gate_warning(&format!("{file}: featureGates"), g))
    {
        warnings.push(w);
    }
    if let Some(c) = &cfg.client_connection {
        for (field, v) in [
            ("contentType", &c.content_type),
            ("acceptContentTypes", &c.accept_content_types),
        ] {
            let what = format!("clientConnection.{field}");
            match content_type_warning(&format!("{file}: {what}"), v.as_deref().unwrap_or("")) {
                Ok(w) => warnings.extend(w),
                Err(e) => {
                    return Err(ConfigError::Invalid {
                        file: file.to_string(),
                        line: line_of(text, field),
                        field: what,
                        message: e.split_once(": ").map_or(e.clone(), |(_, m)| m.to_string()),
                    });
                }
            }
        }
    }
    Ok((cfg, warnings))
}

/// The first line (1-based) whose key is `key`, for errors found after
/// parsing.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with(':'))
        })
        .map_or(1, |i| i + 1)
}

/// Every field of kube-proxy's `KubeProxyConfiguration` (v1alpha1, as of
/// Kubernetes 1.36), as dotted paths: what `docs/flags.md` accounts for.
pub const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "featureGates",
    "clientConnection.kubeconfig",
    "clientConnection.acceptContentTypes",
    "clientConnection.contentType",
    "clientConnection.qps",
    "clientConnection.burst",
    "logging.format",
    "logging.flushFrequency",
    "logging.verbosity",
    "logging.vmodule",
    "logging.options.text.splitStream",
    "logging.options.text.infoBufferSize",
    "logging.options.json.splitStream",
    "logging.options.json.infoBufferSize",
    "hostnameOverride",
    "bindAddress",
    "healthzBindAddress",
    "metricsBindAddress",
    "bindAddressHardFail",
    "enableProfiling",
    "showHiddenMetricsForVersion",
    "mode",
    "iptables.masqueradeBit",
    "iptables.masqueradeAll",
    "iptables.localhostNodePorts",
    "iptables.snatNodeInternalIP",
    "iptables.syncPeriod",
    "iptables.minSyncPeriod",
    "ipvs.syncPeriod",
    "ipvs.minSyncPeriod",
    "ipvs.scheduler",
    "ipvs.excludeCIDRs",
    "ipvs.strictARP",
    "ipvs.tcpTimeout",
    "ipvs.tcpFinTimeout",
    "ipvs.udpTimeout",
    "nftables.masqueradeBit",
    "nftables.masqueradeAll",
    "nftables.syncPeriod",
    "nftables.minSyncPeriod",
    "winkernel.networkName",
    "winkernel.sourceVip",
    "winkernel.enableDSR",
    "winkernel.rootHnsEndpointName",
    "winkernel.forwardHealthCheckVip",
    "detectLocalMode",
    "detectLocal.bridgeInterface",
    "detectLocal.interfaceNamePrefix",
    "clusterCIDR",
    "nodePortAddresses",
    "oomScoreAdj",
    "conntrack.maxPerCore",
    "conntrack.min",
    "conntrack.tcpEstablishedTimeout",
    "conntrack.tcpCloseWaitTimeout",
    "conntrack.tcpBeLiberal",
    "conntrack.udpTimeout",
    "conntrack.udpStreamTimeout",
    "configSyncPeriod",
    "portRange",
    "windowsRunAsService",
];

/// The fields of the file [`apply`] uses (dotted paths). A field below one
/// of them is used too.
pub const APPLIED: &[&str] = &[
    "apiVersion",
    "kind",
    "featureGates",
    "clientConnection.kubeconfig",
    "clientConnection.qps",
    "clientConnection.burst",
    "clientConnection.contentType",
    "clientConnection.acceptContentTypes",
    "logging.format",
    "logging.verbosity",
    "logging.flushFrequency",
    "hostnameOverride",
    "bindAddress",
    "healthzBindAddress",
    "metricsBindAddress",
    "bindAddressHardFail",
    "mode",
    "iptables.masqueradeAll",
    "iptables.masqueradeBit",
    "ipvs.scheduler",
    "ipvs.syncPeriod",
    "ipvs.minSyncPeriod",
    "ipvs.excludeCIDRs",
    "ipvs.strictARP",
    "ipvs.tcpTimeout",
    "ipvs.tcpFinTimeout",
    "ipvs.udpTimeout",
    "detectLocalMode",
    "detectLocal.bridgeInterface",
    "detectLocal.interfaceNamePrefix",
    "clusterCIDR",
    "nodePortAddresses",
    "oomScoreAdj",
    "configSyncPeriod",
    "conntrack.maxPerCore",
    "conntrack.min",
    "conntrack.tcpEstablishedTimeout",
    "conntrack.tcpCloseWaitTimeout",
    "conntrack.tcpBeLiberal",
    "conntrack.udpTimeout",
    "conntrack.udpStreamTimeout",
];

/// Fields kube-proxy has that kipvs does not apply but that are set to
/// what kipvs does anyway: kube-proxy's defaults for `iptables` and
/// `nftables` sync periods and localhost NodePorts (which IPVS mode does not
/// use either), and the logging options' defaults.
fn harmless(path: &str, v: &serde_json::Value) -> bool {
    let duration =
        |secs: u64| v.as_str().and_then(parse_duration) == Some(Duration::from_secs(secs));
    match path {
        "iptables.syncPeriod" | "nftables.syncPeriod" => duration(30),
        "iptables.minSyncPeriod" | "nftables.minSyncPeriod" => duration(1),
        "iptables.localhostNodePorts" => v.as_bool() == Some(true),
        "nftables.masqueradeBit" => v.as_i64() == Some(14),
        _ => false,
    }
}

/// Every field of the file that is set (to anything but its zero value:
/// null, false, 0, "", "0", "0s", empty) and that kipvs does not apply,
/// as dotted paths in alphabetical order.
pub fn unapplied_fields(tree: &serde_json::Value) -> Vec<String> {
    fn zero(v: &serde_json::Value) -> bool {
        use serde_json::Value::*;
        match v {
            Null => true,
            Bool(b) => !b,
            Number(n) => n.as_f64() == Some(0.0),
            String(s) => s.is_empty() || parse_duration(s) == Some(Duration::ZERO),
            Array(a) => a.is_empty(),
            Object(o) => o.values().all(zero),
        }
    }
    /// Zero, or at a value kipvs has anyway, all through.
    fn quiet(prefix: &str, v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(o) => o
                .iter()
                .all(|(k, child)| quiet(&format!("{prefix}.{k}"), child)),
            _ => zero(v) || harmless(prefix, v),
        }
    }
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        if APPLIED.contains(&prefix) {
            return;
        }
        match v {
            serde_json::Value::Object(_)
                if !prefix.is_empty()
                    && !APPLIED.iter().any(|a| a.starts_with(&format!("{prefix}."))) =>
            {
                if !quiet(prefix, v) {
                    out.push(prefix.to_string());
                }
            }
            serde_json::Value::Object(o) => {
                for (k, child) in o {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, child, out);
                }
            }
            _ if zero(v) || harmless(prefix, v) => {}
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

/// The node name kube-proxy derives from `hostnameOverride` or the
/// hostname: trimmed and lower-cased.
pub fn node_name(hostname: &str) -> String {
    hostname.trim().to_lowercase()
}

/// Maps the file onto `opts` (which carries kube-proxy's defaults and the
/// source): every field set to a non-zero value replaces the option.
pub fn apply(
    cfg: &KubeProxyConfiguration,
    mut opts: ProxyOptions,
) -> Result<ProxyOptions, InvalidValue> {
    if let Some(h) = cfg
        .hostname_override
        .as_deref()
        .filter(|h| !h.trim().is_empty())
    {
        opts.node_name = node_name(h);
    }
    if let Some(k) = cfg
        .client_connection
        .as_ref()
        .and_then(|c| c.kubeconfig.clone())
        .filter(|k| !k.as_os_str().is_empty())
        && let Source::Api { kubeconfig } = &mut opts.source
    {
        *kubeconfig = Some(k);
    }
    if let Some(c) = &cfg.client_connection {
        let (qps, burst) = client_rate(c.qps.unwrap_or(0.0), c.burst.unwrap_or(0))
            .map_err(|e| InvalidValue::new("clientConnection", e))?;
        opts.client.qps = qps;
        opts.client.burst = burst;
    }
    if let Some(l) = &cfg.logging {
        opts.logging.format = LogFormat::parse(l.format.as_deref().unwrap_or(""))
            .map_err(|e| InvalidValue::new("logging.format", e))?;
        opts.logging.verbosity = l.verbosity.unwrap_or(0);
    }
    if let Some(g) = &cfg.feature_gates {
        opts.feature_gates = g.clone();
    }
    opts.bind_address = bind_ip(cfg.bind_address.as_deref().unwrap_or(""))
        .map_err(|e| InvalidValue::new("bindAddress", e))?;
    opts.bind_address_hard_fail = cfg.bind_address_hard_fail.unwrap_or(false);
    let detect = cfg.detect_local.clone().unwrap_or_default();
    opts.detect_local = DetectLocal::from_mode(
        cfg.detect_local_mode.as_deref().unwrap_or(""),
        detect.bridge_interface.as_deref().unwrap_or(""),
        detect.interface_name_prefix.as_deref().unwrap_or(""),
        (
            "detectLocalMode",
            "detectLocal.bridgeInterface",
            "detectLocal.interfaceNamePrefix",
        ),
    )?;
    opts.oom_score_adj = Some(
        oom_score_adj(cfg.oom_score_adj.unwrap_or(DEFAULT_OOM_SCORE_ADJ))
            .map_err(|e| InvalidValue::new("oomScoreAdj", e))?,
    );
    if let Some(d) = cfg.config_sync_period.map(|d| d.0).filter(|d| !d.is_zero()) {
        opts.config_sync_period = d;
    }
    // kube-proxy's default bind addresses follow bindAddress's family.
    let v6 = cfg
        .bind_address
        .as_deref()
        .and_then(|b| b.trim().parse::<IpAddr>().ok())
        .is_some_and(|a| a.is_ipv6());
    let (healthz_default, metrics_default): (IpAddr, IpAddr) = if v6 {
        ("::".parse().unwrap(), "::1".parse().unwrap())
    } else {
        ([0, 0, 0, 0].into(), [127, 0, 0, 1].into())
    };
    opts.healthz_bind = Some(
        cfg.healthz_bind_address
            .as_ref()
            .and_then(|b| b.0)
            .map_or(SocketAddr::new(healthz_default, 10256), |b| {
                b.with_default_port(10256)
            }),
    );
    opts.metrics_bind = Some(
        cfg.metrics_bind_address
            .as_ref()
            .and_then(|b| b.0)
            .map_or(SocketAddr::new(metrics_default, 10249), |b| {
                b.with_default_port(10249)
            }),
    );
    if let Some(i) = &cfg.iptables {
        opts.masquerade_all = i.masquerade_all.unwrap_or(false);
        if let Some(b) = i.masquerade_bit {
            opts.masquerade_bit = b as u8;
        }
    }
    let nonzero = |d: &Option<GoDuration>| d.map(|d| d.0).filter(|d| !d.is_zero());
    if let Some(i) = &cfg.ipvs {
        if let Some(s) = i.scheduler.as_deref().filter(|s| !s.is_empty()) {
            opts.scheduler = kipvs_sched::SchedulerConfig::from_annotations(s, None)
                .map_err(|e| InvalidValue::new("ipvs.scheduler", e.to_string()))?;
        }
        if let Some(d) = nonzero(&i.sync_period) {
            opts.timing.sync_period = d;
        }
        if let Some(d) = i.min_sync_period {
            opts.timing.min_sync_period = d.0;
        }
        if let Some(c) = &i.exclude_cidrs {
            opts.exclude_cidrs = c.iter().map(|c| c.0).collect();
        }
        opts.strict_arp = i.strict_arp.unwrap_or(false);
        let secs = |d: &Option<GoDuration>| nonzero(d).map_or(0, |d| d.as_secs() as u32);
        opts.ipvs_timeouts = kipvs_ipvs::Timeouts {
            tcp: secs(&i.tcp_timeout),
            tcp_fin: secs(&i.tcp_fin_timeout),
            udp: secs(&i.udp_timeout),
        };
    }
    if let Some(c) = &cfg.cluster_cidr {
        opts.cluster_cidrs = c.0.clone();
    }
    if let Some(list) = cfg.node_port_addresses.as_ref().filter(|l| !l.is_empty()) {
        opts.nodeport_filter =
            nodeport_filter(list).map_err(|e| InvalidValue::new("nodePortAddresses", e))?;
    }
    if let Some(c) = &cfg.conntrack {
        let d = Conntrack::default();
        let count = |v: Option<i32>, default: u32| v.map_or(default, |v| v.max(0) as u32);
        let timeout = |v: &Option<GoDuration>, default: Duration| v.map_or(default, |v| v.0);
        opts.conntrack = Conntrack {
            max_per_core: count(c.max_per_core, d.max_per_core),
            min: count(c.min, d.min),
            tcp_established_timeout: timeout(&c.tcp_established_timeout, d.tcp_established_timeout),
            tcp_close_wait_timeout: timeout(&c.tcp_close_wait_timeout, d.tcp_close_wait_timeout),
            tcp_be_liberal: c.tcp_be_liberal.unwrap_or(false),
            udp_timeout: timeout(&c.udp_timeout, d.udp_timeout),
            udp_stream_timeout: timeout(&c.udp_stream_timeout, d.udp_stream_timeout),
        };
    }
    Ok(opts)
}

/// `nodePortAddresses` / `--nodeport-addresses`: CIDRs and the keywords
/// `primary`, `all` and `localhost` (kube-proxy's). `all` anywhere serves
/// every address; `primary` cannot be mixed with CIDRs here.
pub fn nodeport_filter(list: &[String]) -> Result<NodePortFilter, String> {
    let list: Vec<&str> = list
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() || list.contains(&"all") {
        return Ok(NodePortFilter::All);
    }
    if list.contains(&"primary") {
        return if list.iter().all(|s| *s == "primary") {
            Ok(NodePortFilter::Primary)
        } else {
            Err("kipvs cannot combine `primary` with CIDRs".into())
        };
    }
    let mut cidrs = Vec::new();
    for s in list {
        if s == "localhost" {
            cidrs.push(IpNet::new_assert([127, 0, 0, 0].into(), 8));
            cidrs.push(IpNet::from(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)));
        } else {
            cidrs.push(parse_cidr(s).ok_or_else(|| format!("`{s}` is not a CIDR or keyword"))?);
        }
    }
    Ok(NodePortFilter::Cidrs(cidrs))
}

/// The effective configuration as a `KubeProxyConfiguration`: what
/// `--write-config-to` writes. Only the fields kipvs applies, so the file
/// loads back with `--config` to the same options and no warning;
/// `hostnameOverride` only when one was given (`hostname_override`), so the
/// file serves any node.
pub fn effective(opts: &ProxyOptions, hostname_override: Option<&str>) -> serde_json::Value {
    use serde_json::json;
    let cidr = IpNet::to_string;
    let bind = |b: Option<SocketAddr>| b.map(|a| a.to_string()).unwrap_or_default();
    let (bridge, prefix) = match &opts.detect_local {
        DetectLocal::BridgeInterface(b) => (b.as_str(), ""),
        DetectLocal::InterfaceNamePrefix(p) => ("", p.as_str()),
        _ => ("", ""),
    };
    let nodeport: Option<Vec<String>> = match &opts.nodeport_filter {
        NodePortFilter::All => None,
        NodePortFilter::Primary => Some(vec!["primary".into()]),
        NodePortFilter::Cidrs(c) => Some(c.iter().map(cidr).collect()),
    };
    let kubeconfig = match &opts.source {
        Source::Api {
            kubeconfig: Some(k),
        } => k.display().to_string(),
        _ => String::new(),
    };
    let c = &opts.conntrack;
    let mut out = json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "bindAddress": opts.bind_address.map(|a| a.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
        "bindAddressHardFail": opts.bind_address_hard_fail,
        "clientConnection": {
            "kubeconfig": kubeconfig,
            "qps": opts.client.qps,
            "burst": opts.client.burst,
            "contentType": "application/json",
            "acceptContentTypes": "",
        },
        "clusterCIDR": opts.cluster_cidrs.iter().map(cidr).collect::<Vec<_>>().join(","),
        "configSyncPeriod": go_duration(opts.config_sync_period),
        "conntrack": {
            "maxPerCore": c.max_per_core,
            "min": c.min,
            "tcpEstablishedTimeout": go_duration(c.tcp_established_timeout),
            "tcpCloseWaitTimeout": go_duration(c.tcp_close_wait_timeout),
            "tcpBeLiberal": c.tcp_be_liberal,
            "udpTimeout": go_duration(c.udp_timeout),
            "udpStreamTimeout": go_duration(c.udp_stream_timeout),
        },
        "detectLocalMode": opts.detect_local.mode(),
        "detectLocal": {"bridgeInterface": bridge, "interfaceNamePrefix": prefix},
        "healthzBindAddress": bind(opts.healthz_bind),
        "metricsBindAddress": bind(opts.metrics_bind),
        "iptables": {
            "masqueradeAll": opts.masquerade_all,
            "masqueradeBit": opts.masquerade_bit,
        },
        "ipvs": {
            "scheduler": opts.scheduler.to_string(),
            "syncPeriod": go_duration(opts.timing.sync_period),
            "minSyncPeriod": go_duration(opts.timing.min_sync_period),
            "excludeCIDRs": opts.exclude_cidrs.iter().map(cidr).collect::<Vec<_>>(),
            "strictARP": opts.strict_arp,
            "tcpTimeout": go_duration(Duration::from_secs(opts.ipvs_timeouts.tcp.into())),
            "tcpFinTimeout": go_duration(Duration::from_secs(opts.ipvs_timeouts.tcp_fin.into())),
            "udpTimeout": go_duration(Duration::from_secs(opts.ipvs_timeouts.udp.into())),
        },
        "logging": {
            "format": opts.logging.format.name(),
            "verbosity": opts.logging.verbosity,
        },
        "mode": "ipvs",
        "nodePortAddresses": nodeport,
        "oomScoreAdj": opts.oom_score_adj,
    });
    if !opts.feature_gates.is_empty() {
        out["featureGates"] = json!(opts.feature_gates);
    }
    if let Some(h) = hostname_override {
        out["hostnameOverride"] = json!(h);
    }
    out
}

/// kube-proxy's flags that have a field in the file, as (flag, field):
/// with `--config` they are ignored (the file wins). `--healthz-port` and
/// `--metrics-port` (deprecated) set the port of theirs.
pub const FILE_FLAGS: &[(&str, &str)] = &[
    ("feature-gates", "featureGates"),
    ("kubeconfig", "clientConnection.kubeconfig"),
    ("kube-api-content-type", "clientConnection.contentType"),
    ("kube-api-burst", "clientConnection.burst"),
    ("kube-api-qps", "clientConnection.qps"),
    ("bind-address", "bindAddress"),
    ("healthz-bind-address", "healthzBindAddress"),
    ("metrics-bind-address", "metricsBindAddress"),
    ("healthz-port", "healthzBindAddress"),
    ("metrics-port", "metricsBindAddress"),
    ("bind-address-hard-fail", "bindAddressHardFail"),
    ("profiling", "enableProfiling"),
    (
        "show-hidden-metrics-for-version",
        "showHiddenMetricsForVersion",
    ),
    ("proxy-mode", "mode"),
    ("iptables-masquerade-bit", "iptables.masqueradeBit"),
    ("masquerade-all", "iptables.masqueradeAll"),
    (
        "iptables-localhost-nodeports",
        "iptables.localhostNodePorts",
    ),
    ("iptables-sync-period", "iptables.syncPeriod"),
    ("iptables-min-sync-period", "iptables.minSyncPeriod"),
    ("ipvs-scheduler", "ipvs.scheduler"),
    ("ipvs-sync-period", "ipvs.syncPeriod"),
    ("ipvs-min-sync-period", "ipvs.minSyncPeriod"),
    ("ipvs-exclude-cidrs", "ipvs.excludeCIDRs"),
    ("ipvs-strict-arp", "ipvs.strictARP"),
    ("ipvs-tcp-timeout", "ipvs.tcpTimeout"),
    ("ipvs-tcpfin-timeout", "ipvs.tcpFinTimeout"),
    ("ipvs-udp-timeout", "ipvs.udpTimeout"),
    ("detect-local-mode", "detectLocalMode"),
    ("pod-bridge-interface", "detectLocal.bridgeInterface"),
    (
        "pod-interface-name-prefix",
        "detectLocal.interfaceNamePrefix",
    ),
    ("cluster-cidr", "clusterCIDR"),
    ("nodeport-addresses", "nodePortAddresses"),
    ("oom-score-adj", "oomScoreAdj"),
    ("conntrack-max-per-core", "conntrack.maxPerCore"),
    ("conntrack-min", "conntrack.min"),
    (
        "conntrack-tcp-timeout-established",
        "conntrack.tcpEstablishedTimeout",
    ),
    (
        "conntrack-tcp-timeout-close-wait",
        "conntrack.tcpCloseWaitTimeout",
    ),
    ("conntrack-tcp-be-liberal", "conntrack.tcpBeLiberal"),
    ("conntrack-udp-timeout", "conntrack.udpTimeout"),
    ("conntrack-udp-timeout-stream", "conntrack.udpStreamTimeout"),
    ("config-sync-period", "configSyncPeriod"),
];

/// kube-proxy's precedence: with a configuration file, the file replaces
/// everything the flags would set, so every given flag that has a field in
/// it ([`FILE_FLAGS`]) is ignored. What still applies: `--hostname-override`,
/// the logging flags (they beat `logging`), the flags that are no
/// configuration (`--config`, `--write-config-to`, `--cleanup`,
/// `--init-only`, `--master`), and kipvs's own flags. Returns the ignored
/// flags, in the order given.
pub fn ignored_flags<'a>(config_given: bool, given: &[&'a str]) -> Vec<&'a str> {
    if !config_given {
        return Vec::new();
    }
    given
        .iter()
        .copied()
        .filter(|f| FILE_FLAGS.iter().any(|(flag, _)| flag == f))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{ClientOptions, Logging, log_filter};
    use kipvs_engine::desired::NodePortFilter;

    fn base() -> ProxyOptions {
        ProxyOptions::new(Source::Api { kubeconfig: None }, "node-a".into())
    }

    fn parsed(text: &str) -> (ProxyOptions, Vec<String>) {
        let (cfg, warnings) = parse("kp.yaml", text).unwrap();
        (apply(&cfg, base()).unwrap(), warnings)
    }

    fn err(text: &str) -> (usize, String, String) {
        match parse("kp.yaml", text) {
            Err(ConfigError::Invalid {
                file,
                line,
                field,
                message,
            }) => {
                assert_eq!(file, "kp.yaml");
                (line, field, message)
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// kubeadm's generated ConfigMap: every field present, zero or null.
    const KUBEADM: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: ""
mode: ipvs
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

    #[test]
    fn kubeadm_config_is_kube_proxys_defaults_without_warnings() {
        let (o, warnings) = parsed(KUBEADM);
        assert_eq!(warnings, Vec::<String>::new());
        let d = base();
        assert_eq!(
            o.source,
            Source::Api {
                kubeconfig: Some("/var/lib/kube-proxy/kubeconfig.conf".into())
            }
        );
        assert_eq!(o.cluster_cidrs, vec!["10.244.0.0/16".parse().unwrap()]);
        assert_eq!(o.scheduler, d.scheduler);
        assert_eq!(o.timing.sync_period, Duration::from_secs(30));
        assert_eq!(o.timing.min_sync_period, Duration::ZERO);
        assert_eq!(o.healthz_bind, d.healthz_bind);
        assert_eq!(o.metrics_bind, d.metrics_bind);
        assert_eq!(o.ipvs_timeouts, kipvs_ipvs::Timeouts::default());
        assert_eq!(o.conntrack, Conntrack::default());
        assert_eq!(o.nodeport_filter, NodePortFilter::All);
        assert_eq!(o.node_name, "node-a");
        assert!(!o.strict_arp && !o.masquerade_all);
    }

    #[test]
    fn every_field_maps_to_its_option() {
        type Check = fn(&ProxyOptions) -> bool;
        let table: &[(&str, Check)] = &[
            ("hostnameOverride: Node-B ", |o| o.node_name == "node-b"),
            ("clientConnection: {kubeconfig: /k}", |o| {
                o.source
                    == Source::Api {
                        kubeconfig: Some("/k".into()),
                    }
            }),
            ("bindAddress: '::'", |o| {
                o.healthz_bind == Some("[::]:10256".parse().unwrap())
                    && o.metrics_bind == Some("[::1]:10249".parse().unwrap())
            }),
            ("healthzBindAddress: 10.0.0.1:1234", |o| {
                o.healthz_bind == Some("10.0.0.1:1234".parse().unwrap())
            }),
            ("healthzBindAddress: 10.0.0.1", |o| {
                o.healthz_bind == Some("10.0.0.1:10256".parse().unwrap())
            }),
            ("metricsBindAddress: 0.0.0.0:9999", |o| {
                o.metrics_bind == Some("0.0.0.0:9999".parse().unwrap())
            }),
            ("iptables: {masqueradeAll: true}", |o| o.masquerade_all),
            ("iptables: {masqueradeBit: 5}", |o| o.masquerade_bit == 5),
            ("ipvs: {scheduler: wlc}", |o| {
                o.scheduler.to_string() == "wlc"
            }),
            ("ipvs: {syncPeriod: 1m0s}", |o| {
                o.timing.sync_period == Duration::from_secs(60)
            }),
            ("ipvs: {minSyncPeriod: 2s}", |o| {
                o.timing.min_sync_period == Duration::from_secs(2)
            }),
            ("ipvs: {excludeCIDRs: [10.9.0.0/16, 'fd00::/64']}", |o| {
                o.exclude_cidrs
                    == vec!["10.9.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()]
            }),
            ("ipvs: {strictARP: true}", |o| o.strict_arp),
            (
                "ipvs: {tcpTimeout: 15m, tcpFinTimeout: 30s, udpTimeout: 5s}",
                |o| {
                    o.ipvs_timeouts
                        == kipvs_ipvs::Timeouts {
                            tcp: 900,
                            tcp_fin: 30,
                            udp: 5,
                        }
                },
            ),
            ("ipvs: {tcpFinTimeout: 30s}", |o| {
                o.ipvs_timeouts
                    == kipvs_ipvs::Timeouts {
                        tcp: 0,
                        tcp_fin: 30,
                        udp: 0,
                    }
            }),
            ("clusterCIDR: 10.244.0.0/16,fd00:10::/56", |o| {
                o.cluster_cidrs
                    == vec![
                        "10.244.0.0/16".parse().unwrap(),
                        "fd00:10::/56".parse().unwrap(),
                    ]
            }),
            ("detectLocalMode: ClusterCIDR", |o| o.node_name == "node-a"),
            ("nodePortAddresses: [primary]", |o| {
                o.nodeport_filter == NodePortFilter::Primary
            }),
            ("nodePortAddresses: [192.168.0.0/16]", |o| {
                o.nodeport_filter == NodePortFilter::Cidrs(vec!["192.168.0.0/16".parse().unwrap()])
            }),
            ("nodePortAddresses: [all, primary]", |o| {
                o.nodeport_filter == NodePortFilter::All
            }),
            ("conntrack: {maxPerCore: 0}", |o| {
                o.conntrack.max_per_core == 0
            }),
            ("conntrack: {min: 10}", |o| o.conntrack.min == 10),
            ("conntrack: {tcpEstablishedTimeout: 1h}", |o| {
                o.conntrack.tcp_established_timeout == Duration::from_secs(3600)
            }),
            ("conntrack: {tcpCloseWaitTimeout: 30s}", |o| {
                o.conntrack.tcp_close_wait_timeout == Duration::from_secs(30)
            }),
            ("conntrack: {tcpBeLiberal: true}", |o| {
                o.conntrack.tcp_be_liberal
            }),
            ("conntrack: {udpTimeout: 30s}", |o| {
                o.conntrack.udp_timeout == Duration::from_secs(30)
            }),
            ("conntrack: {udpStreamTimeout: 2m}", |o| {
                o.conntrack.udp_stream_timeout == Duration::from_secs(120)
            }),
            ("mode: ipvs", |o| o.node_name == "node-a"),
        ];
        for (yaml, check) in table {
            let (o, warnings) = parsed(yaml);
            assert!(check(&o), "{yaml}: {o:?}");
            assert!(warnings.is_empty(), "{yaml}: {warnings:?}");
        }
    }

    #[test]
    fn unimplemented_fields_are_named_in_one_warning() {
        let text = "enableProfiling: true\nipvs: {scheduler: rr, bogus: 1}\n\
                    iptables: {syncPeriod: 30s, minSyncPeriod: 5s, localhostNodePorts: true}\n\
                    logging: {verbosity: 2, vmodule: [{filePattern: x, verbosity: 4}]}\n\
                    winkernel: {enableDSR: false}\nnewThing: x\n";
        let (_, warnings) = parsed(text);
        assert_eq!(
            warnings,
            vec![
                "kp.yaml: kipvs does not implement these fields, they are ignored: \
                 enableProfiling, iptables.minSyncPeriod, ipvs.bogus, logging.vmodule, newThing"
            ]
        );
        // Feature gates: one warning for the unknown and the turned off.
        let (_, warnings) = parsed(
            "featureGates: {Foo: true, TopologyAwareHints: true, LoadBalancerIPMode: false}\n",
        );
        assert_eq!(
            warnings,
            vec![
                "kp.yaml: featureGates: kipvs does not know these gates, they are ignored: Foo; \
                 kipvs always behaves as with these gates on, `false` is ignored: LoadBalancerIPMode"
            ]
        );
        let (_, warnings) = parsed("featureGates: {ServiceTrafficDistribution: true}\n");
        assert!(warnings.is_empty(), "{warnings:?}");
        // Protobuf: kube-rs speaks JSON.
        let (_, warnings) = parsed(
            "clientConnection: {contentType: application/vnd.kubernetes.protobuf, \
             acceptContentTypes: application/json}\n",
        );
        assert_eq!(
            warnings,
            vec![
                "kp.yaml: clientConnection.contentType `application/vnd.kubernetes.protobuf`: \
                 kipvs's Kubernetes client (kube-rs) speaks JSON only; it uses application/json"
            ]
        );
        let (line, field, _) = err("\nclientConnection:\n  contentType: text/xml\n");
        assert_eq!((line, field.as_str()), (3, "clientConnection.contentType"));
    }

    #[test]
    fn the_new_fields_map_to_their_options() {
        type Check = fn(&ProxyOptions) -> bool;
        let table: &[(&str, Check)] = &[
            ("{}", |o| {
                o.detect_local == DetectLocal::ClusterCidr
                    && o.oom_score_adj == Some(-999)
                    && o.bind_address.is_none()
                    && !o.bind_address_hard_fail
                    && o.client == ClientOptions::default()
                    && o.config_sync_period == Duration::from_secs(900)
                    && o.logging == Logging::default()
            }),
            ("detectLocalMode: NodeCIDR", |o| {
                o.detect_local == DetectLocal::NodeCidr
            }),
            (
                "detectLocalMode: BridgeInterface\ndetectLocal: {bridgeInterface: cbr0}",
                |o| o.detect_local == DetectLocal::BridgeInterface("cbr0".into()),
            ),
            (
                "detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: veth}",
                |o| o.detect_local == DetectLocal::InterfaceNamePrefix("veth".into()),
            ),
            // The interface settings matter only in their mode.
            ("detectLocal: {bridgeInterface: cbr0}", |o| {
                o.detect_local == DetectLocal::ClusterCidr
            }),
            ("oomScoreAdj: -998", |o| o.oom_score_adj == Some(-998)),
            ("bindAddress: 10.0.0.7", |o| {
                o.bind_address == Some("10.0.0.7".parse().unwrap())
            }),
            ("bindAddress: 0.0.0.0", |o| o.bind_address.is_none()),
            ("bindAddressHardFail: true", |o| o.bind_address_hard_fail),
            ("clientConnection: {qps: 50, burst: 100}", |o| {
                o.client.qps == 50.0 && o.client.burst == 100
            }),
            ("clientConnection: {qps: -1}", |o| {
                o.client.qps == -1.0 && o.client.burst == 10
            }),
            ("clientConnection: {qps: 0, burst: 0}", |o| {
                o.client == ClientOptions::default()
            }),
            ("configSyncPeriod: 1m", |o| {
                o.config_sync_period == Duration::from_secs(60)
            }),
            (
                "logging: {format: json, verbosity: 4, flushFrequency: 5s}",
                |o| {
                    o.logging
                        == Logging {
                            format: LogFormat::Json,
                            verbosity: 4,
                        }
                },
            ),
            ("featureGates: {TopologyAwareHints: true}", |o| {
                o.feature_gates.get("TopologyAwareHints") == Some(&true)
            }),
        ];
        for (yaml, check) in table {
            let (o, warnings) = parsed(yaml);
            assert!(check(&o), "{yaml}: {o:?}");
            assert!(warnings.is_empty(), "{yaml}: {warnings:?}");
        }
        let bad = [
            ("detectLocalMode: Pods", "detectLocalMode: `Pods` is not"),
            (
                "detectLocalMode: BridgeInterface",
                "detectLocal.bridgeInterface: must be set when detectLocalMode is BridgeInterface",
            ),
            (
                "detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: 'a\"b'}",
                "detectLocal.interfaceNamePrefix: `a\"b` is not an interface name",
            ),
            (
                "oomScoreAdj: -1001",
                "oomScoreAdj: -1001 is not within [-1000, 1000]",
            ),
            (
                "bindAddress: nope",
                "bindAddress: `nope` is not an IP address",
            ),
            (
                "clientConnection: {burst: -1}",
                "clientConnection: burst -1 must be non-negative",
            ),
            (
                "logging: {format: xml}",
                "logging.format: `xml` is not a log format",
            ),
        ];
        for (yaml, want) in bad {
            let (cfg, _) = parse("kp.yaml", yaml).unwrap();
            let e = apply(&cfg, base()).unwrap_err().to_string();
            assert!(e.starts_with(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn a_kube_proxy_written_configuration_loads_without_warnings() {
        // What `kube-proxy --write-config-to` writes with its defaults.
        let text = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
            bindAddress: 0.0.0.0\nclientConnection: {burst: 10, contentType: application/vnd.kubernetes.protobuf, qps: 5}\n\
            configSyncPeriod: 15m0s\n\
            iptables: {localhostNodePorts: true, masqueradeBit: 14, minSyncPeriod: 1s, syncPeriod: 30s}\n\
            ipvs: {minSyncPeriod: 0s, syncPeriod: 30s}\n\
            logging: {flushFrequency: 5s, format: text, options: {json: {infoBufferSize: '0'}, text: {infoBufferSize: '0'}}, verbosity: 0}\n\
            nftables: {masqueradeBit: 14, minSyncPeriod: 1s, syncPeriod: 30s}\n\
            oomScoreAdj: -999\nconntrack: {maxPerCore: 32768, min: 131072, tcpCloseWaitTimeout: 1h0m0s, tcpEstablishedTimeout: 24h0m0s}\n";
        let (cfg, warnings) = parse("kp.yaml", text).unwrap();
        // Only the content type: kipvs speaks JSON.
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("speaks JSON only"), "{warnings:?}");
        apply(&cfg, base()).unwrap();
    }

    #[test]
    fn the_written_configuration_loads_back_to_the_same_options() {
        let text = "hostnameOverride: n1\nbindAddress: 10.0.0.7\nbindAddressHardFail: true\n\
            clientConnection: {kubeconfig: /kc, qps: 20, burst: 40}\nclusterCIDR: 10.244.0.0/16,fd00:10::/56\n\
            configSyncPeriod: 1m\nconntrack: {maxPerCore: 0, tcpBeLiberal: true, udpTimeout: 30s}\n\
            detectLocalMode: InterfaceNamePrefix\ndetectLocal: {interfaceNamePrefix: veth}\n\
            featureGates: {TopologyAwareHints: true}\nhealthzBindAddress: 10.0.0.7:10256\n\
            iptables: {masqueradeAll: true, masqueradeBit: 5}\n\
            ipvs: {scheduler: wlc, syncPeriod: 1m, minSyncPeriod: 1s, excludeCIDRs: [10.9.0.0/16], strictARP: true, tcpTimeout: 15m}\n\
            logging: {format: json, verbosity: 3}\nnodePortAddresses: [192.168.0.0/16]\noomScoreAdj: -500\n";
        let (a, warnings) = parsed(text);
        assert!(warnings.is_empty(), "{warnings:?}");
        let written = serde_saphyr::to_string(&effective(&a, Some("n1"))).unwrap();
        let (cfg, warnings) = parse("written.yaml", &written).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}\n{written}");
        let b = apply(&cfg, base()).unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{written}");
        // Defaults too, without a node name.
        let d = base();
        let written = serde_saphyr::to_string(&effective(&d, None)).unwrap();
        assert!(!written.contains("hostnameOverride"), "{written}");
        let (cfg, warnings) = parse("written.yaml", &written).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(
            format!("{d:?}"),
            format!("{:?}", apply(&cfg, base()).unwrap())
        );
    }

    #[test]
    fn small_parsers() {
        assert_eq!(
            parse_feature_gates("A=true, B=false,C=1").unwrap(),
            [
                ("A".to_string(), true),
                ("B".into(), false),
                ("C".into(), true)
            ]
            .into()
        );
        assert!(parse_feature_gates("A").is_err());
        assert!(parse_feature_gates("A=yes").is_err());
        assert_eq!(parse_feature_gates("").unwrap(), BTreeMap::new());
        for (d, want) in [
            (0, "0s"),
            (30, "30s"),
            (90, "1m30s"),
            (900, "15m0s"),
            (3600, "1h0m0s"),
            (86400, "24h0m0s"),
        ] {
            assert_eq!(go_duration(Duration::from_secs(d)), want);
        }
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(client_rate(0.0, 0), Ok((5.0, 10)));
        assert_eq!(client_rate(-1.0, 3), Ok((-1.0, 3)));
        assert!(client_rate(1.0, -1).is_err());
        assert_eq!(log_filter(0), "info");
        assert_eq!(log_filter(2), "info,kipvs=debug");
        assert_eq!(log_filter(4), "info,kipvs=trace");
        assert_eq!(log_filter(10), "trace");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let (line, field, message) =
            err("kind: KubeProxyConfiguration\nipvs:\n  syncPeriod: soon\n");
        assert_eq!((line, field.as_str()), (3, "ipvs.syncPeriod"));
        assert!(message.contains("`soon` is not a duration"), "{message}");

        let (line, field, _) = err("ipvs:\n  excludeCIDRs:\n  - 10.0.0.0/8\n  - nope\n");
        assert_eq!((line, field.as_str()), (4, "ipvs.excludeCIDRs[1]"));

        let (line, field, _) = err("\n\nipvs:\n  strictARP: maybe\n");
        assert_eq!((line, field.as_str()), (4, "ipvs.strictARP"));

        let (line, field, _) = err("clusterCIDR: 10.0.0.0/99\n");
        assert_eq!((line, field.as_str()), (1, "clusterCIDR"));

        let (line, _, _) = err("ipvs:\n  scheduler: rr\n bad indent: [\n");
        assert!(line >= 2, "{line}");

        let (line, field, message) = err("apiVersion: v1\nmode: iptables\n");
        assert_eq!((line, field.as_str()), (1, "apiVersion"), "{message}");
        let (line, field, message) = err("kind: KubeProxyConfiguration\nmode: iptables\n");
        assert_eq!((line, field.as_str()), (2, "mode"));
        assert!(message.contains("ipvs"), "{message}");
        let (line, field, _) = err("iptables:\n  masqueradeBit: 32\n");
        assert_eq!((line, field.as_str()), (2, "iptables.masqueradeBit"));
        let e = parse("kp.yaml", "metricsBindAddress: x:y\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "kp.yaml:1: metricsBindAddress: `x:y` is not IP:PORT"
        );
    }

    #[test]
    fn semantic_errors_from_apply() {
        let (cfg, _) = parse("kp.yaml", "ipvs: {scheduler: nope}\n").unwrap();
        assert!(apply(&cfg, base()).unwrap_err().field == "ipvs.scheduler");
        let (cfg, _) = parse("kp.yaml", "nodePortAddresses: [primary, 10.0.0.0/8]\n").unwrap();
        assert!(apply(&cfg, base()).unwrap_err().field == "nodePortAddresses");
    }

    #[test]
    fn conntrack_as_kube_proxy() {
        let d = Conntrack::default();
        // 4 CPUs: 4 × 32768 = 131072 = min.
        assert_eq!(conntrack_max(&d, 4), Some(131072));
        assert_eq!(conntrack_max(&d, 1), Some(131072));
        assert_eq!(conntrack_max(&d, 8), Some(262144));
        assert_eq!(
            conntrack_max(
                &Conntrack {
                    max_per_core: 0,
                    ..d
                },
                8
            ),
            None
        );
        assert_eq!(
            conntrack_settings(&d, 8),
            vec![
                ("net.netfilter.nf_conntrack_max", "262144".to_string()),
                (
                    "net.netfilter.nf_conntrack_tcp_timeout_established",
                    "86400".into()
                ),
                (
                    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
                    "3600".into()
                ),
            ]
        );
        let all = Conntrack {
            max_per_core: 0,
            min: 0,
            tcp_established_timeout: Duration::ZERO,
            tcp_close_wait_timeout: Duration::ZERO,
            tcp_be_liberal: true,
            udp_timeout: Duration::from_secs(30),
            udp_stream_timeout: Duration::from_secs(120),
        };
        assert_eq!(
            conntrack_settings(&all, 8),
            vec![
                ("net.netfilter.nf_conntrack_tcp_be_liberal", "1".to_string()),
                ("net.netfilter.nf_conntrack_udp_timeout", "30".into()),
                (
                    "net.netfilter.nf_conntrack_udp_timeout_stream",
                    "120".into()
                ),
            ]
        );
        assert_eq!(conntrack_hashsize(262144, 16384), Some(65536));
        assert_eq!(conntrack_hashsize(262144, 65536), None);
    }

    #[test]
    fn precedence_file_wins_except_hostname_and_own_flags() {
        assert_eq!(
            ignored_flags(false, &["ipvs-scheduler", "cluster-cidr"]),
            Vec::<&str>::new()
        );
        assert_eq!(
            ignored_flags(
                true,
                &[
                    "ipvs-scheduler",
                    "hostname-override",
                    "drain-timeout",
                    "kubeconfig",
                    "log-format",
                    "masquerade-all"
                ]
            ),
            vec!["ipvs-scheduler", "kubeconfig", "masquerade-all"]
        );
        for (flag, _) in FILE_FLAGS {
            assert_eq!(ignored_flags(true, &[flag]), vec![*flag]);
        }
    }

    #[test]
    fn every_file_flag_and_applied_field_is_kube_proxys() {
        for (_, field) in FILE_FLAGS {
            assert!(FIELDS.contains(field), "{field}");
        }
        for field in APPLIED {
            assert!(FIELDS.contains(field), "{field}");
        }
        // A field kipvs does not apply is warned about when set.
        for field in FIELDS.iter().filter(|f| !APPLIED.contains(f)) {
            let mut tree = serde_json::json!("x");
            for part in field.rsplit('.') {
                tree = serde_json::json!({ part: tree });
            }
            let named = unapplied_fields(&tree);
            assert!(
                named.len() == 1 && field.starts_with(named[0].as_str()),
                "{field}: {named:?}"
            );
        }
    }
}
