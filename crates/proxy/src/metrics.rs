//! The agent's Prometheus metrics, served at `/metrics` on the local
//! server (`127.0.0.1:10249`).
//!
//! kube-proxy's names, types, help (with the `[ALPHA] ` prefix kube-proxy's
//! stability framework puts on the wire) and buckets ([`KUBE_PROXY_METRICS`]), with the `ip_family` label of
//! kube-proxy ≥ 1.33 (`IPv4`/`IPv6`) on the per-family metrics:
//! `kubeproxy_sync_proxy_rules_duration_seconds`,
//! `kubeproxy_sync_proxy_rules_last_timestamp_seconds`,
//! `kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds`,
//! `kubeproxy_network_programming_duration_seconds` and
//! `kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy}`;
//! the change counters and gauges
//! (`kubeproxy_sync_proxy_rules_{endpoint,service}_changes_{total,pending}`)
//! and `kubeproxy_proxy_{healthz,livez}_total{code}` have no family, as in
//! kube-proxy (its change trackers are shared by both families).
//!
//! kipvs syncs both families in one pass: a sync's duration and time are
//! recorded under every family the agent serves.
//!
//! kipvs's own: `kipvs_netlink_messages_total`, `kipvs_sync_errors_total{kind}`
//! and, per virtual server, `kipvs_virtual_server_connections_total`,
//! `kipvs_virtual_server_packets_total{direction}` and
//! `kipvs_virtual_server_bytes_total{direction}`, labelled with the Service
//! (`namespace`, `service`, `port_name`) and the virtual server
//! (`protocol`, `virtual_server`, `kind`). Those counters are the kernel's
//! (IPVS stats64), read at scrape time: see [`VirtualServerSample`].

use kipvs_engine::desired::Family;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family as MetricFamily;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// `ip_family="IPv4"` or `"IPv6"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct IpFamilyLabel {
    ip_family: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NoLocalLabels {
    traffic_policy: &'static str,
    ip_family: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

fn family_label(f: Family) -> IpFamilyLabel {
    IpFamilyLabel {
        ip_family: family_name(f),
    }
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// Which `Local` traffic policy a Service without local endpoints has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficPolicy {
    /// `internalTrafficPolicy: Local`.
    Internal,
    /// `externalTrafficPolicy: Local`.
    External,
}

/// The kinds of sync error counted by `kipvs_sync_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SyncErrorKind {
    /// A Service or one of its fields is invalid.
    Service,
    /// The kernel refused an IPVS change.
    Ipvs,
    /// Binding or unbinding an address on kube-ipvs0 failed.
    Address,
    /// Reading the kernel failed.
    Read,
    /// Clearing stale UDP conntrack entries failed.
    Conntrack,
}

impl SyncErrorKind {
    fn name(self) -> &'static str {
        match self {
            SyncErrorKind::Service => "service",
            SyncErrorKind::Ipvs => "ipvs",
            SyncErrorKind::Address => "address",
            SyncErrorKind::Read => "read",
            SyncErrorKind::Conntrack => "conntrack",
        }
    }

    /// Classifies one of [`kipvs_engine::controller::SyncReport::errors`] (they
    /// are text naming their object; see `Engine::sync_with`).
    pub fn of_report_error(e: &str) -> SyncErrorKind {
        if e.starts_with("Service ") {
            SyncErrorKind::Service
        } else if e.starts_with("binding ") || e.starts_with("unbinding ") {
            SyncErrorKind::Address
        } else if e.starts_with("reading ") {
            SyncErrorKind::Read
        } else if e.starts_with("clearing stale UDP conntrack") {
            SyncErrorKind::Conntrack
        } else {
            SyncErrorKind::Ipvs
        }
    }
}

/// One virtual server's kernel counters and the Service port it serves, read
/// at scrape time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServerSample {
    pub namespace: String,
    pub service: String,
    pub port_name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// `10.96.0.1:80`, `[fd00::1]:80`.
    pub virtual_server: String,
    /// `ClusterIP`, `externalIP`, `LoadBalancer` or `NodePort`.
    pub kind: String,
    pub connections: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
}

/// The per-virtual-server counters of the scrape in progress.
#[derive(Debug, Default)]
struct VirtualServerStats {
    samples: Mutex<Vec<VirtualServerSample>>,
}

type Labels = Vec<(&'static str, String)>;

impl Collector for VirtualServerStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let conns = MetricFamily::<Labels, Counter>::default();
        let packets = MetricFamily::<Labels, Counter>::default();
        let bytes = MetricFamily::<Labels, Counter>::default();
        for s in samples.iter() {
            let base: Labels = vec![
                ("namespace", s.namespace.clone()),
                ("service", s.service.clone()),
                ("port_name", s.port_name.clone()),
                ("protocol", s.protocol.clone()),
                ("virtual_server", s.virtual_server.clone()),
                ("kind", s.kind.clone()),
            ];
            conns.get_or_create(&base).inc_by(s.connections);
            for (dir, p, b) in [
                ("in", s.in_packets, s.in_bytes),
                ("out", s.out_packets, s.out_bytes),
            ] {
                let mut l = base.clone();
                l.push(("direction", dir.to_owned()));
                packets.get_or_create(&l).inc_by(p);
                bytes.get_or_create(&l).inc_by(b);
            }
        }
        for (name, help, family) in [
            (
                "kipvs_virtual_server_connections",
                "Connections the kernel scheduled to a virtual server",
                &conns,
            ),
            (
                "kipvs_virtual_server_packets",
                "Packets through a virtual server",
                &packets,
            ),
            (
                "kipvs_virtual_server_bytes",
                "Bytes through a virtual server",
                &bytes,
            ),
        ] {
            let m = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(m)?;
        }
        Ok(())
    }
}

/// kube-proxy's metrics as kube-proxy (≥ 1.33) exposes them: (name as
/// exposed, type, label names, help without the `[ALPHA] ` prefix).
pub const KUBE_PROXY_METRICS: &[(&str, &str, &[&str], &str)] = &[
    (
        "kubeproxy_sync_proxy_rules_duration_seconds",
        "histogram",
        &["ip_family"],
        "SyncProxyRules latency in seconds",
    ),
    (
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "gauge",
        &["ip_family"],
        "The last time proxy rules were successfully synced",
    ),
    (
        "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
        "gauge",
        &["ip_family"],
        "The last time a sync of proxy rules was queued",
    ),
    (
        "kubeproxy_network_programming_duration_seconds",
        "histogram",
        &["ip_family"],
        "In Cluster Network Programming Latency in seconds",
    ),
    (
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "counter",
        &[],
        "Cumulative proxy rules Endpoint changes",
    ),
    (
        "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
        "gauge",
        &[],
        "Pending proxy rules Endpoint changes",
    ),
    (
        "kubeproxy_sync_proxy_rules_service_changes_total",
        "counter",
        &[],
        "Cumulative proxy rules Service changes",
    ),
    (
        "kubeproxy_sync_proxy_rules_service_changes_pending",
        "gauge",
        &[],
        "Pending proxy rules Service changes",
    ),
    (
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
        "gauge",
        &["traffic_policy", "ip_family"],
        "Number of services with a Local traffic policy and no endpoints",
    ),
    (
        "kubeproxy_proxy_healthz_total",
        "counter",
        &["code"],
        "Cumulative proxy healthz HTTP status",
    ),
    (
        "kubeproxy_proxy_livez_total",
        "counter",
        &["code"],
        "Cumulative proxy livez HTTP status",
    ),
];

/// The help of a [`KUBE_PROXY_METRICS`] entry.
fn kube_proxy_help(name: &str) -> String {
    let help = KUBE_PROXY_METRICS
        .iter()
        .find(|m| m.0 == name)
        .map_or("", |m| m.3);
    format!("[ALPHA] {help}")
}

/// Encodes kube-proxy's metrics with kube-proxy's help (see [`Metrics::new`]).
#[derive(Debug, Clone)]
struct KubeProxyCollector {
    sync_duration: MetricFamily<IpFamilyLabel, Histogram>,
    last_sync: MetricFamily<IpFamilyLabel, Gauge<f64, AtomicU64>>,
    last_queued: MetricFamily<IpFamilyLabel, Gauge<f64, AtomicU64>>,
    network_programming: MetricFamily<IpFamilyLabel, Histogram>,
    endpoint_changes: Counter,
    endpoint_changes_pending: Gauge,
    service_changes: Counter,
    service_changes_pending: Gauge,
    no_local_endpoints: MetricFamily<NoLocalLabels, Gauge>,
    healthz: MetricFamily<CodeLabel, Counter>,
    livez: MetricFamily<CodeLabel, Counter>,
}

impl Collector for KubeProxyCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        fn one(
            encoder: &mut DescriptorEncoder,
            name: &str,
            metric: &impl EncodeMetric,
        ) -> Result<(), std::fmt::Error> {
            // The encoder adds a counter's `_total`.
            let bare = match metric.metric_type() {
                MetricType::Counter => name.trim_end_matches("_total"),
                _ => name,
            };
            let m = encoder.encode_descriptor(
                bare,
                &kube_proxy_help(name),
                None,
                metric.metric_type(),
            )?;
            metric.encode(m)
        }
        let e = &mut encoder;
        one(
            e,
            "kubeproxy_sync_proxy_rules_duration_seconds",
            &self.sync_duration,
        )?;
        one(
            e,
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            &self.last_sync,
        )?;
        one(
            e,
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            &self.last_queued,
        )?;
        one(
            e,
            "kubeproxy_network_programming_duration_seconds",
            &self.network_programming,
        )?;
        one(
            e,
            "kubeproxy_sync_proxy_rules_endpoint_changes_total",
            &self.endpoint_changes,
        )?;
        one(
            e,
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            &self.endpoint_changes_pending,
        )?;
        one(
            e,
            "kubeproxy_sync_proxy_rules_service_changes_total",
            &self.service_changes,
        )?;
        one(
            e,
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            &self.service_changes_pending,
        )?;
        one(
            e,
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            &self.no_local_endpoints,
        )?;
        one(e, "kubeproxy_proxy_healthz_total", &self.healthz)?;
        one(e, "kubeproxy_proxy_livez_total", &self.livez)
    }
}

/// The agent's metrics. Cheap to update from the sync thread (atomics
/// behind each metric); encoded on a scrape.
pub struct Metrics {
    registry: Registry,
    /// kube-proxy's metrics (clones share the values with the registered
    /// collector).
    kube: KubeProxyCollector,
    netlink_messages: Counter,
    sync_errors: MetricFamily<KindLabel, Counter>,
    virtual_servers: Arc<VirtualServerStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// kube-proxy's network programming buckets: 0.25 s, 0.5 s, 1..59 s,
/// 60..115 s by 5, 120..300 s by 30 (after a leading 0).
fn network_programming_buckets() -> Vec<f64> {
    let mut b = vec![0.0, 0.25, 0.5];
    b.extend((1..=59).map(f64::from));
    b.extend((0..12).map(|i| 60.0 + 5.0 * f64::from(i)));
    b.extend((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    b
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        // Histograms need their buckets: families with a constructor.
        let m = Metrics {
            registry: Registry::default(),
            kube: KubeProxyCollector {
                sync_duration: MetricFamily::new_with_constructor(
                    (|| Histogram::new(exponential_buckets(0.001, 2.0, 15))) as fn() -> Histogram,
                ),
                last_sync: Default::default(),
                last_queued: Default::default(),
                network_programming: MetricFamily::new_with_constructor(
                    (|| Histogram::new(network_programming_buckets())) as fn() -> Histogram,
                ),
                endpoint_changes: Default::default(),
                endpoint_changes_pending: Default::default(),
                service_changes: Default::default(),
                service_changes_pending: Default::default(),
                no_local_endpoints: Default::default(),
                healthz: Default::default(),
                livez: Default::default(),
            },
            netlink_messages: Default::default(),
            sync_errors: Default::default(),
            virtual_servers: Default::default(),
        };
        // kube-proxy's metrics go through a collector: the registry would
        // end their help with a period, and kube-proxy's wire help starts
        // with its stability level (`[ALPHA] `).
        registry.register_collector(Box::new(m.kube.clone()));
        registry.register(
            "kipvs_netlink_messages",
            "Netlink messages the syncs sent to the kernel",
            m.netlink_messages.clone(),
        );
        registry.register(
            "kipvs_sync_errors",
            "Sync errors by kind (service: invalid Service; ipvs: a refused IPVS change; \
             address: kube-ipvs0 binding; read: reading the kernel; \
             conntrack: clearing stale UDP conntrack entries)",
            m.sync_errors.clone(),
        );
        registry.register_collector(Box::new(m.virtual_servers.clone()));
        Metrics { registry, ..m }
    }

    /// A Service change arrived (not yet synced).
    pub fn service_changed(&self) {
        self.kube.service_changes.inc();
        self.kube.service_changes_pending.inc();
    }

    /// An EndpointSlice change arrived (not yet synced).
    pub fn endpoint_changed(&self) {
        self.kube.endpoint_changes.inc();
        self.kube.endpoint_changes_pending.inc();
    }

    /// A sync was queued at `unix_secs`.
    pub fn queued(&self, families: impl IntoIterator<Item = Family>, unix_secs: f64) {
        for f in families {
            self.kube
                .last_queued
                .get_or_create(&family_label(f))
                .set(unix_secs);
        }
    }

    /// A sync finished at `unix_secs` after `seconds`; with nothing left
    /// pending, the pending gauges return to 0.
    pub fn synced(
        &self,
        families: impl IntoIterator<Item = Family>,
        seconds: f64,
        unix_secs: f64,
        nothing_pending: bool,
    ) {
        for f in families {
            let l = family_label(f);
            self.kube.sync_duration.get_or_create(&l).observe(seconds);
            self.kube.last_sync.get_or_create(&l).set(unix_secs);
        }
        if nothing_pending {
            self.kube.service_changes_pending.set(0);
            self.kube.endpoint_changes_pending.set(0);
        }
    }

    /// An endpoint change of `family` reached the kernel `seconds` after
    /// its trigger time.
    pub fn network_programmed(&self, family: Family, seconds: f64) {
        self.kube
            .network_programming
            .get_or_create(&family_label(family))
            .observe(seconds.max(0.0));
    }

    /// Services with a `Local` `policy` and no local endpoints, per family.
    pub fn set_no_local_endpoints(&self, policy: TrafficPolicy, family: Family, services: i64) {
        let traffic_policy = match policy {
            TrafficPolicy::Internal => "internal",
            TrafficPolicy::External => "external",
        };
        self.kube
            .no_local_endpoints
            .get_or_create(&NoLocalLabels {
                traffic_policy,
                ip_family: family_name(family),
            })
            .set(services);
    }

    pub fn netlink_messages(&self, n: u64) {
        self.netlink_messages.inc_by(n);
    }

    pub fn sync_error(&self, kind: SyncErrorKind) {
        self.sync_errors
            .get_or_create(&KindLabel { kind: kind.name() })
            .inc();
    }

    /// A `/healthz` answer with HTTP status `code`.
    pub fn healthz(&self, code: u16) {
        self.kube
            .healthz
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// A `/livez` answer with HTTP status `code`.
    pub fn livez(&self, code: u16) {
        self.kube
            .livez
            .get_or_create(&CodeLabel {
                code: code.to_string(),
            })
            .inc();
    }

    /// The text exposition (OpenMetrics) with `virtual_servers` as the
    /// per-virtual-server counters.
    pub fn encode(&self, virtual_servers: Vec<VirtualServerSample>) -> String {
        // One scrape at a time owns the per-virtual-server samples.
        let mut slot = self
            .virtual_servers
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *slot = virtual_servers;
        drop(slot);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        self.virtual_servers
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kipvs_testkit::metrics_text::{samples, value};

    #[test]
    fn kube_proxy_names_and_labels_parse_back() {
        let m = Metrics::new();
        m.service_changed();
        m.endpoint_changed();
        m.endpoint_changed();
        m.queued([Family::V4], 1_700_000_000.0);
        m.synced([Family::V4, Family::V6], 0.003, 1_700_000_001.0, false);
        m.network_programmed(Family::V4, 1.5);
        m.set_no_local_endpoints(TrafficPolicy::External, Family::V4, 2);
        m.healthz(200);
        m.healthz(503);
        m.livez(200);
        m.netlink_messages(7);
        m.sync_error(SyncErrorKind::of_report_error("Service a/b: spec: bad"));
        let text = m.encode(vec![VirtualServerSample {
            namespace: "default".into(),
            service: "web".into(),
            port_name: "http".into(),
            protocol: "TCP".into(),
            virtual_server: "10.96.0.10:80".into(),
            kind: "ClusterIP".into(),
            connections: 3,
            in_packets: 10,
            out_packets: 9,
            in_bytes: 1000,
            out_bytes: 5000,
        }]);
        let s = samples(&text).unwrap_or_else(|| panic!("unparsable:\n{text}"));
        let v = |n: &str, l: &[(&str, &str)]| {
            value(&s, n, l).unwrap_or_else(|| panic!("no {n} {l:?} in\n{text}"))
        };
        assert_eq!(
            v("kubeproxy_sync_proxy_rules_service_changes_total", &[]),
            1.0
        );
        assert_eq!(
            v("kubeproxy_sync_proxy_rules_endpoint_changes_total", &[]),
            2.0
        );
        assert_eq!(
            v("kubeproxy_sync_proxy_rules_endpoint_changes_pending", &[]),
            2.0
        );
        assert_eq!(
            v(
                "kubeproxy_sync_proxy_rules_duration_seconds_count",
                &[("ip_family", "IPv6")]
            ),
            1.0
        );
        assert_eq!(
            v(
                "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
                &[("ip_family", "IPv4"), ("le", "0.004")]
            ),
            1.0
        );
        assert_eq!(
            v(
                "kubeproxy_sync_proxy_rules_duration_seconds_bucket",
                &[("ip_family", "IPv4"), ("le", "0.002")]
            ),
            0.0
        );
        assert_eq!(
            v(
                "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                &[("ip_family", "IPv4")]
            ),
            1_700_000_001.0
        );
        assert_eq!(
            v(
                "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
                &[("ip_family", "IPv4")]
            ),
            1_700_000_000.0
        );
        assert_eq!(
            v(
                "kubeproxy_network_programming_duration_seconds_bucket",
                &[("ip_family", "IPv4"), ("le", "2.0")]
            ),
            1.0
        );
        assert_eq!(
            v(
                "kubeproxy_network_programming_duration_seconds_bucket",
                &[("ip_family", "IPv4"), ("le", "1.0")]
            ),
            0.0
        );
        assert_eq!(
            v(
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
                &[("traffic_policy", "external"), ("ip_family", "IPv4")]
            ),
            2.0
        );
        assert_eq!(v("kubeproxy_proxy_healthz_total", &[("code", "503")]), 1.0);
        assert_eq!(v("kubeproxy_proxy_livez_total", &[("code", "200")]), 1.0);
        assert_eq!(v("kipvs_netlink_messages_total", &[]), 7.0);
        assert_eq!(v("kipvs_sync_errors_total", &[("kind", "service")]), 1.0);
        let vs = [("service", "web"), ("virtual_server", "10.96.0.10:80")];
        assert_eq!(v("kipvs_virtual_server_connections_total", &vs), 3.0);
        let out: Vec<_> = vs.iter().copied().chain([("direction", "out")]).collect();
        assert_eq!(v("kipvs_virtual_server_bytes_total", &out), 5000.0);

        // Every kube-proxy metric: its help, type and exactly its label set.
        for (name, kind, labels, help) in KUBE_PROXY_METRICS {
            let family = match *kind {
                "counter" => name.trim_end_matches("_total"),
                _ => name,
            };
            let help_line = format!("# HELP {family} [ALPHA] {help}\n");
            assert!(text.contains(&help_line), "no {help_line:?} in\n{text}");
            let type_line = format!("# TYPE {family} {kind}\n");
            assert!(text.contains(&type_line), "no {type_line:?} in\n{text}");
            let mine: Vec<_> = s
                .iter()
                .filter(|x| match *kind {
                    "histogram" => x
                        .name
                        .strip_prefix(*name)
                        .is_some_and(|t| ["_bucket", "_sum", "_count"].contains(&t)),
                    _ => x.name == *name,
                })
                .collect();
            assert!(!mine.is_empty(), "no sample of {name}");
            for x in mine {
                let keys: Vec<&str> = x
                    .labels
                    .keys()
                    .map(String::as_str)
                    .filter(|k| *k != "le")
                    .collect();
                let mut want = labels.to_vec();
                want.sort_unstable();
                assert_eq!(keys, want, "{name}'s labels: {x:?}");
            }
        }
        // Nothing else named kubeproxy_*.
        for x in &s {
            assert!(
                !x.name.starts_with("kubeproxy_")
                    || KUBE_PROXY_METRICS.iter().any(|m| x.name.starts_with(m.0)),
                "{} is not kube-proxy's",
                x.name
            );
        }
        assert!(
            text.contains(
                "# HELP kipvs_netlink_messages Netlink messages the syncs sent to the kernel.\n"
            ),
            "kipvs's own help is the registry's: {text}"
        );

        // Synced with nothing pending: the pending gauges drop to 0; the
        // per-virtual-server samples belong to one scrape only.
        m.synced([Family::V4], 0.001, 1_700_000_002.0, true);
        let text = m.encode(Vec::new());
        let s = samples(&text).unwrap();
        assert_eq!(
            value(
                &s,
                "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
                &[]
            ),
            Some(0.0)
        );
        assert_eq!(
            value(&s, "kipvs_virtual_server_connections_total", &[]),
            None
        );
    }

    #[test]
    fn network_programming_buckets_are_kube_proxys() {
        let b = network_programming_buckets();
        assert_eq!(b.len(), 1 + 2 + 59 + 12 + 7);
        assert_eq!(&b[..4], &[0.0, 0.25, 0.5, 1.0]);
        assert_eq!(b[b.len() - 1], 300.0);
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }
}
