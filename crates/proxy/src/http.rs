//! The agent's local HTTP endpoints, on kube-proxy's addresses:
//!
//! - the health server (`--healthz-bind-address`, default `0.0.0.0:10256`):
//!   `/healthz` and `/livez` with kube-proxy's semantics and body;
//! - the local server (`--metrics-bind-address`, default `127.0.0.1:10249`):
//!   `/healthz` again and kipvs's read-only inspection API, which the CLI
//!   uses to put Kubernetes names on the IPVS table:
//!   - `GET /kipvs/v1/virtual-servers`: every virtual server kipvs programs
//!     and the Service port it serves;
//!   - `GET /kipvs/v1/explain/{namespace}/{name}`: why each endpoint of a
//!     Service is or is not a real server.
//!
//! Questions are answered by the sync thread itself (a [`SourceEvent::Query`]
//! with a reply channel), so the answer is the engine's state, not a copy.

use crate::agent::{Query, Status, VirtualServerInfo};
use crate::model::ObjectRef;
use crate::source::SourceEvent;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Node;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What the handlers share.
#[derive(Clone)]
struct Shared {
    status: Arc<Mutex<Status>>,
    queries: Sender<SourceEvent>,
    sync_period: Duration,
}

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

/// Serves the health endpoints on `addr` until the task is dropped.
pub async fn serve_health(
    addr: SocketAddr,
    status: Arc<Mutex<Status>>,
    queries: Sender<SourceEvent>,
    sync_period: Duration,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez));
    serve(addr, app, status, queries, sync_period).await
}

async fn serve(
    addr: SocketAddr,
    app: axum::Router<Shared>,
    status: Arc<Mutex<Status>>,
    queries: Sender<SourceEvent>,
    sync_period: Duration,
) -> std::io::Result<()> {
    let shared = Shared {
        status,
        queries,
        sync_period,
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app.with_state(shared)).await
}

/// Serves the local endpoints (health and the inspection API) on `addr`.
pub async fn serve_local(
    addr: SocketAddr,
    status: Arc<Mutex<Status>>,
    queries: Sender<SourceEvent>,
    sync_period: Duration,
) -> std::io::Result<()> {
    let app = axum::Router::new()
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/proxyMode", get(|| async { "ipvs" }))
        .route("/kipvs/v1/virtual-servers", get(virtual_servers))
        .route("/kipvs/v1/explain/{namespace}/{name}", get(explain));
    serve(addr, app, status, queries, sync_period).await
}

/// The current health as a response: 200 when `ok` says so, else 503.
fn health_response(s: &Shared, ok: fn(&Health) -> bool) -> Response {
    let h = {
        let status = s.status.lock().unwrap_or_else(|e| e.into_inner());
        health(&status, SystemTime::now(), s.sync_period)
    };
    let code = if ok(&h) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h)).into_response()
}

async fn healthz(State(s): State<Shared>) -> Response {
    health_response(&s, Health::healthz_ok)
}

async fn livez(State(s): State<Shared>) -> Response {
    health_response(&s, Health::livez_ok)
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
}
