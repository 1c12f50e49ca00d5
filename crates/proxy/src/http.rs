//! The agent's local HTTP endpoints, on kube-proxy's addresses:
//!
//! - the health server (`--healthz-bind-address`, default `0.0.0.0:10256`):
//!   `/healthz` and `/livez` with kube-proxy's semantics and body;
//! - the local server (`--metrics-bind-address`, default `127.0.0.1:10249`):
//!   `/healthz` again, `/metrics` (see [`crate::metrics`]), `/proxyMode`,
//!   `/configz` (the effective configuration as JSON) and kipvs's
//!   read-only inspection API, which the CLI uses to put Kubernetes names
//!   on the IPVS table:
//!   - `GET /kipvs/v1/virtual-servers`: every virtual server kipvs programs
//!     and the Service port it serves;
//!   - `GET /kipvs/v1/explain/{namespace}/{name}`: why each endpoint of a
//!     Service is or is not a real server.
//!
//! Questions are answered by the sync thread itself (a [`SourceEvent::Query`]
//! with a reply channel), so the answer is the engine's state, not a copy.

use crate::api::{Query, SourceEvent, Status, VirtualServerInfo};
use crate::mailbox::Sender;
use crate::metrics::{Metrics, VirtualServerSample};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Node;
use kipvs_engine::model::{ObjectRef, VirtualServerKey};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Reads the counters of every IPVS virtual server (the real one dumps
/// the kernel's table with its own netlink socket; see `run.rs`).
pub type StatsReader =
    Arc<dyn Fn() -> Result<Vec<(VirtualServerKey, kipvs_ipvs::Stats)>, String> + Send + Sync>;

/// The clock health is judged by (`SystemTime::now` but in tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub status: Arc<Mutex<Status>>,
    pub queries: Sender,
    pub sync_period: Duration,
    /// The effective configuration, served at `/configz`.
    pub configz: Arc<serde_json::Value>,
    /// The per-virtual-server counters for `/metrics` (`None`: not served).
    pub stats: Option<StatsReader>,
    pub clock: Clock,
    /// The last per-virtual-server samples and when they were read: a
    /// scrape within [`SAMPLES_MAX_AGE`] of it reuses them, so however often
    /// `/metrics` is scraped the kernel is dumped at most once per period.
    samples: Arc<tokio::sync::Mutex<Option<SamplesRead>>>,
}

/// Per-virtual-server samples and when they were read.
type SamplesRead = (tokio::time::Instant, Vec<VirtualServerSample>);

/// How long `/metrics` reuses the kernel counters it read.
pub const SAMPLES_MAX_AGE: Duration = Duration::from_secs(5);

impl HttpState {
    /// The state with no configuration to show, no kernel counters and the
    /// system clock.
    pub fn new(status: Arc<Mutex<Status>>, queries: Sender, sync_period: Duration) -> Self {
        HttpState {
            status,
            queries,
            sync_period,
            configz: Arc::new(serde_json::Value::Null),
            stats: None,
            clock: Arc::new(SystemTime::now),
            samples: Arc::default(),
        }
    }
}

type Shared = HttpState;

/// The health answer: kube-proxy's rule and body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    #[serde(rename = "lastUpdated")]
    pub last_updated: String,
    #[serde(rename = "currentTime")]
    pub current_time: String,
    #[serde(rename = "nodeEligible")]
    pub node_eligible: bool,
    /// A change has waited longer than twice the sync period.
    #[serde(skip)]
    pub stale: bool,
}

impl Health {
    /// `/healthz`: healthy when no change waits too long and the node is
    /// not being deleted or drained by the cluster autoscaler.
    pub fn healthz_ok(&self) -> bool {
        !self.stale && self.node_eligible
    }

    /// `/livez`: the same, ignoring the node.
    pub fn livez_ok(&self) -> bool {
        !self.stale
    }
}

/// Computes the health from the agent's status (pure: the clock is an
/// input). Unhealthy when a queued change is older than 2 × `sync_period`
/// (kube-proxy's rule).
pub fn health(status: &Status, now: SystemTime, sync_period: Duration) -> Health {
    let stale = status
        .queued_since
        .is_some_and(|q| now.duration_since(q).unwrap_or_default() > 2 * sync_period);
    Health {
        last_updated: rfc3339(status.last_sync.unwrap_or(SystemTime::UNIX_EPOCH)),
        current_time: rfc3339(now),
        node_eligible: node_eligible(status.node.as_deref()),
        stale,
    }
}

/// A node being deleted, or tainted by the cluster autoscaler for removal,
/// should get no new load-balancer traffic.
pub fn node_eligible(node: Option<&Node>) -> bool {
    let Some(node) = node else { return true };
    let deleting = node.metadata.deletion_timestamp.is_some();
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == "ToBeDeletedByClusterAutoscaler"));
    !deleting && !tainted
}

fn rfc3339(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The health server's routes: `/healthz` and `/livez`.
pub fn health_router(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state(state)
}

/// The local server's routes: health, `/metrics`, `/proxyMode`,
/// `/configz` and the inspection API. The inspection API (`/kipvs/v1/…`)
/// answers only clients on this node's loopback, even when the server
/// listens on every address (`metricsBindAddress: 0.0.0.0:10249`, as a
/// migration from kube-proxy may copy): others get 403.
pub fn local_router(state: HttpState) -> axum::Router {
    let inspection = axum::Router::new()
        .route("/kipvs/v1/virtual-servers", get(virtual_servers))
        .route("/kipvs/v1/explain/{namespace}/{name}", get(explain))
        .route_layer(axum::middleware::from_fn(loopback_only));
    axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics))
        .route("/configz", get(configz))
        .route("/proxyMode", get(|| async { "ipvs" }))
        .merge(inspection)
        .with_state(state)
}

/// Whether a client address is this node's loopback (an IPv4-mapped one
/// included, as a dual-stack listener reports it).
pub fn is_loopback(peer: std::net::IpAddr) -> bool {
    match peer {
        std::net::IpAddr::V6(a) => {
            a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        a => a.is_loopback(),
    }
}

async fn loopback_only(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if is_loopback(peer.ip()) {
        next.run(request).await
    } else {
        (
            StatusCode::FORBIDDEN,
            "the kipvs inspection API answers only on this node's loopback\n",
        )
            .into_response()
    }
}

/// Serves `app` on `listener` until the task is dropped, with each
/// client's address for the handlers that check it.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    app: axum::Router,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Serves `app` on `addr` until the task is dropped.
pub async fn serve_router(addr: SocketAddr, app: axum::Router) -> std::io::Result<()> {
    serve_listener(tokio::net::TcpListener::bind(addr).await?, app).await
}

/// Serves the health endpoints on `addr` until the task is dropped.
pub async fn serve_health(
    addr: SocketAddr,
    status: Arc<Mutex<Status>>,
    queries: Sender,
    sync_period: Duration,
) -> std::io::Result<()> {
    serve_router(
        addr,
        health_router(HttpState::new(status, queries, sync_period)),
    )
    .await
}

/// Serves the local endpoints (health and the inspection API) on `addr`.
pub async fn serve_local(
    addr: SocketAddr,
    status: Arc<Mutex<Status>>,
    queries: Sender,
    sync_period: Duration,
) -> std::io::Result<()> {
    serve_router(
        addr,
        local_router(HttpState::new(status, queries, sync_period)),
    )
    .await
}

/// The current health as a response: 200 when `ok` says so, else 503.
fn health_response(s: &Shared, ok: fn(&Health) -> bool, count: fn(&Metrics, u16)) -> Response {
    let (h, metrics) = {
        let status = s.status.lock().unwrap_or_else(|e| e.into_inner());
        (
            health(&status, (s.clock)(), s.sync_period),
            status.metrics.clone(),
        )
    };
    let code = if ok(&h) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    count(&metrics, code.as_u16());
    let mut r = (code, Json(h)).into_response();
    r.headers_mut().insert(
        "X-Content-Type-Options",
        axum::http::HeaderValue::from_static("nosniff"),
    );
    r
}

async fn healthz(State(s): State<Shared>) -> Response {
    health_response(&s, Health::healthz_ok, Metrics::healthz)
}

async fn livez(State(s): State<Shared>) -> Response {
    health_response(&s, Health::livez_ok, Metrics::livez)
}

async fn configz(State(s): State<Shared>) -> Response {
    Json(s.configz.as_ref().clone()).into_response()
}

/// `/metrics`: the registry, plus the kernel's counters of every virtual
/// server kipvs programs. The owners come from the sync thread (a list of
/// what it applied, no kernel access); the counters are read here, on a
/// blocking thread with a socket of its own, so a scrape never holds the
/// sync loop for a kernel dump.
async fn metrics(State(s): State<Shared>) -> Response {
    let metrics = s
        .status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .metrics
        .clone();
    let samples = match s.stats.clone() {
        Some(read) => {
            // Concurrent scrapes wait here for one read and share it.
            let mut cached = s.samples.lock().await;
            let now = tokio::time::Instant::now();
            match &*cached {
                Some((at, v)) if now.duration_since(*at) < SAMPLES_MAX_AGE => v.clone(),
                _ => {
                    let fresh = read_samples(&s, read).await;
                    *cached = Some((now, fresh.clone()));
                    fresh
                }
            }
        }
        None => Vec::new(),
    };
    let text = metrics.encode(samples);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Asks the sync thread for the owners and reads the kernel's counters
/// (one dump, on a blocking thread); empty when either fails.
async fn read_samples(s: &Shared, read: StatsReader) -> Vec<VirtualServerSample> {
    match ask::<Vec<VirtualServerInfo>>(s, Query::VirtualServers).await {
        Ok(owners) => match tokio::task::spawn_blocking(move || read()).await {
            Ok(Ok(stats)) => virtual_server_samples(&owners, &stats),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading IPVS counters for /metrics");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading IPVS counters for /metrics");
                Vec::new()
            }
        },
        Err(_) => {
            tracing::warn!("the sync loop did not list its virtual servers for /metrics");
            Vec::new()
        }
    }
}

/// The counters of kipvs's virtual servers, labelled with their Service.
pub fn virtual_server_samples(
    owners: &[VirtualServerInfo],
    stats: &[(VirtualServerKey, kipvs_ipvs::Stats)],
) -> Vec<VirtualServerSample> {
    let by_key: std::collections::BTreeMap<VirtualServerKey, &kipvs_ipvs::Stats> =
        stats.iter().map(|(k, s)| (*k, s)).collect();
    owners
        .iter()
        .filter_map(|o| {
            let protocol = kipvs_engine::model::Protocol::from_k8s(Some(&o.protocol))?;
            let key = VirtualServerKey {
                protocol,
                address: o.address,
                port: o.port,
            };
            let st = by_key.get(&key)?;
            let (namespace, service) = o.service.split_once('/').unwrap_or(("", &o.service));
            Some(VirtualServerSample {
                namespace: namespace.to_owned(),
                service: service.to_owned(),
                port_name: o.port_name.clone(),
                protocol: o.protocol.clone(),
                virtual_server: SocketAddr::new(o.address, o.port).to_string(),
                kind: o.kind.clone(),
                connections: st.conns,
                in_packets: st.inpkts,
                out_packets: st.outpkts,
                in_bytes: st.inbytes,
                out_bytes: st.outbytes,
            })
        })
        .collect()
}

/// Asks the sync thread; 503 if it does not answer within 5 s.
async fn ask<T>(
    s: &Shared,
    make: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> Query,
) -> Result<T, Response> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let unavailable =
        |why: &str| (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    if s.queries.send(SourceEvent::Query(make(tx))).is_err() {
        return Err(unavailable("the sync loop has stopped"));
    }
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(v)) => Ok(v),
        _ => Err(unavailable("the sync loop did not answer within 5 s")),
    }
}

async fn virtual_servers(State(s): State<Shared>) -> Response {
    match ask::<Vec<VirtualServerInfo>>(&s, Query::VirtualServers).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn explain(
    State(s): State<Shared>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let id = ObjectRef::new(namespace, name);
    let what = id.to_string();
    match ask(&s, |tx| Query::Explain(id, tx)).await {
        Ok(Some(e)) => Json(e).into_response(),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            format!("no Service {what} is known to the agent\n"),
        )
            .into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_queued_longer_than_twice_the_sync_period_is_unhealthy() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let period = Duration::from_secs(30);
        let mut s = Status {
            last_sync: Some(t0),
            ..Default::default()
        };
        assert!(health(&s, t0 + Duration::from_secs(600), period).healthz_ok());
        s.queued_since = Some(t0);
        let h = health(&s, t0 + Duration::from_secs(60), period);
        assert!(h.healthz_ok(), "exactly 2 × period is still fine");
        let h = health(&s, t0 + Duration::from_secs(61), period);
        assert!(!h.healthz_ok() && !h.livez_ok());
        assert_eq!(h.last_updated, "2023-11-14T22:13:20Z");
        assert_eq!(h.current_time, "2023-11-14T22:14:21Z");
    }

    #[test]
    fn a_node_being_deleted_or_autoscaled_away_is_not_eligible() {
        let node = |v: serde_json::Value| -> Node { serde_json::from_value(v).unwrap() };
        let mut s = Status::default();
        let now = SystemTime::now();
        s.node = Some(Box::new(node(
            serde_json::json!({"metadata": {"name": "n"}}),
        )));
        assert!(health(&s, now, Duration::from_secs(30)).healthz_ok());
        s.node = Some(Box::new(node(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler", "effect": "NoSchedule"}]}
        }))));
        let h = health(&s, now, Duration::from_secs(30));
        assert!(!h.healthz_ok() && h.livez_ok());
        s.node = Some(Box::new(node(serde_json::json!({
            "metadata": {"name": "n", "deletionTimestamp": "2026-01-01T00:00:00Z"}
        }))));
        assert!(!health(&s, now, Duration::from_secs(30)).node_eligible);
    }

    /// Serves `app` on an ephemeral port of 127.0.0.1.
    async fn spawn_server(app: axum::Router) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_listener(listener, app));
        addr
    }

    #[test]
    fn only_loopback_clients_are_loopback() {
        for (a, ok) in [
            ("127.0.0.1", true),
            ("127.5.0.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("::ffff:10.0.0.1", false),
            ("fd00::1", false),
        ] {
            assert_eq!(is_loopback(a.parse().unwrap()), ok, "{a}");
        }
    }

    /// `GET path` over HTTP/1.1: (status code, headers, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        (code, head.to_ascii_lowercase(), body.to_owned())
    }

    /// /healthz and /livez over real HTTP, with time driven by tokio's
    /// paused clock: a change queued and never synced turns both 503 past
    /// 2 × syncPeriod; a sync makes them healthy again; a node being
    /// removed fails /healthz only. Every answer is counted in /metrics.
    #[tokio::test(start_paused = true)]
    async fn healthz_turns_unhealthy_when_syncs_stop() {
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let start = tokio::time::Instant::now();
        let clock: Clock = Arc::new(move || base + start.elapsed());
        let status = Arc::new(Mutex::new(Status {
            last_sync: Some(base),
            ..Default::default()
        }));
        let (tx, _rx) = crate::mailbox::mailbox();
        let mut state = HttpState::new(status.clone(), tx, Duration::from_secs(30));
        state.clock = clock.clone();
        let addr = spawn_server(local_router(state)).await;

        let (code, head, body) = get(addr, "/healthz").await;
        assert_eq!(code, 200);
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"lastUpdated": "2023-11-14T22:13:20Z",
                               "currentTime": "2023-11-14T22:13:20Z", "nodeEligible": true})
        );

        // A change is queued, and no sync follows.
        tokio::time::advance(Duration::from_secs(5)).await;
        status.lock().unwrap().queued_since = Some(clock());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            get(addr, "/healthz").await.0,
            200,
            "2 × syncPeriod: still fine"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let (code, _, body) = get(addr, "/healthz").await;
        assert_eq!(code, 503);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["currentTime"], "2023-11-14T22:14:26Z");
        assert_eq!(body["lastUpdated"], "2023-11-14T22:13:20Z");
        assert_eq!(get(addr, "/livez").await.0, 503);

        // The sync happens.
        {
            let mut s = status.lock().unwrap();
            s.queued_since = None;
            s.last_sync = Some(clock());
        }
        assert_eq!(get(addr, "/healthz").await.0, 200);
        // Hours without changes are healthy: only a waiting change counts.
        tokio::time::advance(Duration::from_secs(3 * 3600)).await;
        assert_eq!(get(addr, "/healthz").await.0, 200);

        // The node is being deleted: /healthz fails, /livez does not.
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n", "deletionTimestamp": "2026-01-01T00:00:00Z"}
        }))
        .unwrap();
        status.lock().unwrap().node = Some(Box::new(node));
        let (code, _, body) = get(addr, "/healthz").await;
        assert_eq!(code, 503);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["nodeEligible"],
            false
        );
        assert_eq!(get(addr, "/livez").await.0, 200);

        let (code, head, text) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(head.contains("openmetrics-text"), "{head}");
        let s = kipvs_testkit::metrics_text::samples(&text).unwrap();
        let v = |n: &str, code: &str| kipvs_testkit::metrics_text::value(&s, n, &[("code", code)]);
        assert_eq!(v("kubeproxy_proxy_healthz_total", "200"), Some(4.0));
        assert_eq!(v("kubeproxy_proxy_healthz_total", "503"), Some(2.0));
        assert_eq!(v("kubeproxy_proxy_livez_total", "503"), Some(1.0));
        assert_eq!(v("kubeproxy_proxy_livez_total", "200"), Some(1.0));
    }

    /// /metrics labels the kernel's counters with the Service of each
    /// virtual server (owners from the sync thread, counters from the
    /// reader); /configz and /proxyMode answer.
    #[tokio::test]
    async fn metrics_name_virtual_servers_and_configz_serves_the_configuration() {
        let status = Arc::new(Mutex::new(Status::default()));
        let (tx, rx) = crate::mailbox::mailbox();
        // The sync thread's part: answer the owner list.
        std::thread::spawn(move || {
            while let Ok(taken) = rx.recv_timeout(Duration::from_secs(3600)) {
                for ev in taken {
                    let SourceEvent::Query(Query::VirtualServers(reply)) = ev else {
                        continue;
                    };
                    let _ = reply.send(vec![VirtualServerInfo {
                        protocol: "TCP".into(),
                        address: "10.96.0.10".parse().unwrap(),
                        port: 80,
                        service: "default/web".into(),
                        port_name: "http".into(),
                        kind: "ClusterIP".into(),
                        service_port: Some(80),
                    }]);
                }
            }
        });
        let mut state = HttpState::new(status, tx, Duration::from_secs(30));
        state.configz = Arc::new(serde_json::json!({"mode": "ipvs"}));
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = reads.clone();
        state.stats = Some(Arc::new(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let key = |port| VirtualServerKey {
                protocol: kipvs_engine::model::Protocol::Tcp,
                address: "10.96.0.10".parse().unwrap(),
                port,
            };
            let st = kipvs_ipvs::Stats {
                conns: 2,
                inbytes: 300,
                outbytes: 4000,
                ..Default::default()
            };
            // Port 22 is someone else's: not labelled, not shown.
            Ok(vec![(key(80), st), (key(22), st)])
        }));
        let addr = spawn_server(local_router(state)).await;
        let (code, _, text) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        let s = kipvs_testkit::metrics_text::samples(&text).unwrap();
        let web = [
            ("namespace", "default"),
            ("service", "web"),
            ("port_name", "http"),
            ("virtual_server", "10.96.0.10:80"),
            ("kind", "ClusterIP"),
        ];
        let value = |n: &str, extra: &[(&str, &str)]| {
            let l: Vec<_> = web.iter().chain(extra).copied().collect();
            kipvs_testkit::metrics_text::value(&s, n, &l)
        };
        assert_eq!(
            value("kipvs_virtual_server_connections_total", &[]),
            Some(2.0)
        );
        assert_eq!(
            value("kipvs_virtual_server_bytes_total", &[("direction", "out")]),
            Some(4000.0)
        );
        assert_eq!(
            s.iter()
                .filter(|x| x.name == "kipvs_virtual_server_connections_total")
                .count(),
            1
        );
        let (code, _, body) = get(addr, "/configz").await;
        assert_eq!(code, 200);
        assert_eq!(body, r#"{"mode":"ipvs"}"#);
        assert_eq!(get(addr, "/proxyMode").await.2, "ipvs");
        // A scrape storm dumps the kernel once.
        let storm: Vec<_> = (0..20)
            .map(|_| tokio::spawn(async move { get(addr, "/metrics").await.0 }))
            .collect();
        for s in storm {
            assert_eq!(s.await.unwrap(), 200);
        }
        assert_eq!(reads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
