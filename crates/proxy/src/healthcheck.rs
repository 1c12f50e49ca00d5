//! The Services' health-check node ports.
//!
//! A LoadBalancer Service with `externalTrafficPolicy: Local` has a
//! `healthCheckNodePort`: cloud load balancers probe it on every node and
//! send traffic only to nodes that answer 200. As kube-proxy, kipvs answers
//! 200 when this node has ready endpoints of the Service and the proxy is
//! healthy (the `/healthz` rule), else 503, with the body
//! `{"service":{"namespace","name"},"localEndpoints":N,"serviceProxyHealthy":bool}`
//! and the headers `Content-Type: application/json`,
//! `X-Content-Type-Options: nosniff` and
//! `X-Load-Balancing-Endpoint-Weight: N`.
//!
//! - The count comes from the engine ([`kipvs_engine::local`], pure): each
//!   Service's `Local` policies and this node's ready endpoints, kept per
//!   Service with the Service.
//! - [`serve_service_health`]: one small HTTP server per health-check port
//!   and listen address: the node's NodePort addresses as of the last sync
//!   when `nodePortAddresses` restricts them, else `0.0.0.0`/`[::]`. After
//!   each sync (the agent publishes [`crate::api::Status::service_health`]
//!   and [`crate::api::Status::nodeport_addresses`] and wakes it) only the
//!   listeners that differ change ([`plan_listeners`], pure): a changed
//!   `healthCheckNodePort` or an address added or removed moves its
//!   listeners, the other Services' keep running; a failed bind is logged
//!   with the Service and retried after the next sync. The answer is read
//!   from the status at request time.

use crate::api::Status;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kipvs_engine::desired::Family;
use kipvs_engine::local::ServiceHealth;
use kipvs_engine::model::ObjectRef;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The health-check answer body.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceHealthBody {
    pub service: ServiceName,
    #[serde(rename = "localEndpoints")]
    pub local_endpoints: usize,
    #[serde(rename = "serviceProxyHealthy")]
    pub service_proxy_healthy: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone)]
struct PortState {
    port: u16,
    status: Arc<Mutex<Status>>,
    sync_period: Duration,
}

async fn answer(State(s): State<PortState>) -> Response {
    let (entry, healthy) = {
        let status = s.status.lock().unwrap_or_else(|e| e.into_inner());
        let healthy = crate::http::health(&status, SystemTime::now(), s.sync_period).healthz_ok();
        (status.service_health.get(&s.port).cloned(), healthy)
    };
    let Some(entry) = entry else {
        return (
            StatusCode::NOT_FOUND,
            "no Service has this health check port\n",
        )
            .into_response();
    };
    health_check_response(&entry, healthy)
}

/// kube-proxy's answer for one Service: 200 with local endpoints and a
/// healthy proxy, else 503.
pub fn health_check_response(entry: &ServiceHealth, proxy_healthy: bool) -> Response {
    let body = ServiceHealthBody {
        service: ServiceName {
            namespace: entry.service.namespace.clone(),
            name: entry.service.name.clone(),
        },
        local_endpoints: entry.local_endpoints,
        service_proxy_healthy: proxy_healthy,
    };
    let code = if entry.local_endpoints > 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut r = (code, serde_json::to_string(&body).unwrap_or_default()).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "X-Content-Type-Options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "X-Load-Balancing-Endpoint-Weight",
        HeaderValue::from(entry.local_endpoints),
    );
    r
}

/// Every listener the health-check ports want: each port on each listen
/// address, with the Service it answers for.
pub fn wanted_listeners(
    addresses: &[IpAddr],
    ports: &BTreeMap<u16, ServiceHealth>,
) -> BTreeMap<SocketAddr, ObjectRef> {
    ports
        .iter()
        .flat_map(|(port, h)| {
            addresses
                .iter()
                .map(move |ip| (SocketAddr::new(*ip, *port), h.service.clone()))
        })
        .collect()
}

/// The listeners to stop (running, no longer wanted) and to start (wanted,
/// not running — new ones and those whose bind failed before).
pub fn plan_listeners<'a>(
    running: impl IntoIterator<Item = &'a SocketAddr>,
    wanted: &BTreeMap<SocketAddr, ObjectRef>,
) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    let running: BTreeSet<SocketAddr> = running.into_iter().copied().collect();
    let stop = running
        .iter()
        .filter(|a| !wanted.contains_key(a))
        .copied()
        .collect();
    let start = wanted
        .keys()
        .filter(|a| !running.contains(a))
        .copied()
        .collect();
    (stop, start)
}

/// What one [`HealthServers::apply`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub stopped: Vec<SocketAddr>,
    pub started: Vec<SocketAddr>,
    /// Listeners that could not bind (address, Service, error); retried by
    /// the next apply.
    pub failed: Vec<(SocketAddr, ObjectRef, String)>,
}

/// The running health-check listeners, one task per address and port.
pub struct HealthServers {
    status: Arc<Mutex<Status>>,
    sync_period: Duration,
    running: BTreeMap<SocketAddr, tokio::task::JoinHandle<()>>,
}

impl Drop for HealthServers {
    fn drop(&mut self) {
        self.running.values().for_each(|t| t.abort());
    }
}

impl HealthServers {
    /// No listeners yet; they answer from `status`.
    pub fn new(status: Arc<Mutex<Status>>, sync_period: Duration) -> Self {
        HealthServers {
            status,
            sync_period,
            running: BTreeMap::new(),
        }
    }

    /// The addresses listened on.
    pub fn listening(&self) -> Vec<SocketAddr> {
        self.running.keys().copied().collect()
    }

    /// Makes the listeners `wanted`, touching only those that differ
    /// ([`plan_listeners`]). A failed bind is logged with its Service and
    /// left for the next apply; never an error.
    pub async fn apply(&mut self, wanted: &BTreeMap<SocketAddr, ObjectRef>) -> Applied {
        let mut applied = Applied::default();
        let (stop, start) = plan_listeners(self.running.keys(), wanted);
        for addr in stop {
            if let Some(task) = self.running.remove(&addr) {
                tracing::info!(%addr, "stopping health check server");
                task.abort();
                // Let the listener close before a later bind of the address.
                let _ = task.await;
                applied.stopped.push(addr);
            }
        }
        for addr in start {
            let service = &wanted[&addr];
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(%addr, service = %service, error = %e,
                        "health check server: cannot listen; retrying after the next sync");
                    applied.failed.push((addr, service.clone(), e.to_string()));
                    continue;
                }
            };
            tracing::info!(%addr, service = %service, "serving health check");
            let app = axum::Router::new().fallback(answer).with_state(PortState {
                port: addr.port(),
                status: self.status.clone(),
                sync_period: self.sync_period,
            });
            self.running.insert(
                addr,
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::error!(%addr, error = %e, "health check server");
                    }
                }),
            );
            applied.started.push(addr);
        }
        applied
    }
}

/// The listeners `status` wants: its health-check ports on the
/// [`listen_addresses`] of its NodePort addresses.
pub fn wanted_from_status(
    restricted: bool,
    families: &BTreeSet<Family>,
    status: &Status,
) -> BTreeMap<SocketAddr, ObjectRef> {
    let addresses = listen_addresses(restricted, &status.nodeport_addresses, families);
    wanted_listeners(&addresses, &status.service_health)
}

/// Serves every health-check port in `status.service_health` on each listen
/// address ([`wanted_from_status`]) with [`HealthServers`], until dropped.
/// Re-reads both when `status.service_health_changed` is notified (after
/// every sync): a new port or a new address gets its listeners, a gone one
/// loses them, every other listener keeps running; a bind that failed (the
/// port in use) is retried.
pub async fn serve_service_health(
    restricted: bool,
    families: BTreeSet<Family>,
    status: Arc<Mutex<Status>>,
    sync_period: Duration,
) {
    let changed = status
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .service_health_changed
        .clone();
    let mut servers = HealthServers::new(status.clone(), sync_period);
    loop {
        let wanted = {
            let s = status.lock().unwrap_or_else(|e| e.into_inner());
            wanted_from_status(restricted, &families, &s)
        };
        servers.apply(&wanted).await;
        changed.notified().await;
    }
}

/// Where health-check servers listen: the NodePort addresses when
/// `nodePortAddresses` restricts them (`restricted`), else the unspecified
/// address of each family served.
pub fn listen_addresses(
    restricted: bool,
    nodeport_addresses: &[IpAddr],
    families: &BTreeSet<Family>,
) -> Vec<IpAddr> {
    if restricted {
        return nodeport_addresses.to_vec();
    }
    families
        .iter()
        .map(|f| match f {
            Family::V4 => IpAddr::from([0u8; 4]),
            Family::V6 => IpAddr::from([0u16; 8]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listens_on_nodeport_addresses_only_when_restricted() {
        let fams: BTreeSet<Family> = [Family::V4, Family::V6].into();
        let np = ["192.168.1.10".parse().unwrap()];
        assert_eq!(listen_addresses(true, &np, &fams), np.to_vec());
        assert_eq!(
            listen_addresses(false, &np, &fams),
            vec![
                "0.0.0.0".parse::<IpAddr>().unwrap(),
                "::".parse::<IpAddr>().unwrap()
            ]
        );
    }

    async fn get(addr: SocketAddr) -> (u16, String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        (code, head.to_owned(), body.to_owned())
    }

    /// A free port on 127.0.0.1 (bound, read, released).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn servers_start_answer_and_stop_with_their_services() {
        let status = Arc::new(Mutex::new(Status {
            last_sync: Some(SystemTime::now()),
            ..Default::default()
        }));
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let id = ObjectRef::new("default", "web");
        let notify = status.lock().unwrap().service_health_changed.clone();
        let set = |n: Option<usize>| {
            let mut s = status.lock().unwrap();
            s.service_health = n
                .map(|n| {
                    (
                        port,
                        ServiceHealth {
                            service: id.clone(),
                            local_endpoints: n,
                        },
                    )
                })
                .into_iter()
                .collect();
            drop(s);
            notify.notify_one();
        };
        set(Some(0));
        status.lock().unwrap().nodeport_addresses = vec![addr.ip()];
        let task = tokio::spawn(serve_service_health(
            true,
            [Family::V4].into(),
            status.clone(),
            Duration::from_secs(30),
        ));
        // The server binds asynchronously: retry the first connection.
        let mut first = None;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                first = Some(get(addr).await);
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (code, head, body) = first.expect("the health check server never listened");
        assert_eq!(code, 503, "no local endpoints");
        let b: ServiceHealthBody = serde_json::from_str(&body).unwrap();
        assert_eq!(b.local_endpoints, 0);
        assert!(b.service_proxy_healthy);
        assert!(head.contains("x-content-type-options: nosniff"), "{head}");
        assert!(
            head.contains("x-load-balancing-endpoint-weight: 0"),
            "{head}"
        );

        set(Some(2)); // counts are read per request
        let (code, head, body) = get(addr).await;
        assert_eq!(code, 200);
        assert!(
            head.contains("x-load-balancing-endpoint-weight: 2"),
            "{head}"
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"service": {"namespace": "default", "name": "web"},
                               "localEndpoints": 2, "serviceProxyHealthy": true})
        );

        // An unhealthy proxy fails the check even with local endpoints.
        status.lock().unwrap().queued_since = Some(SystemTime::now() - Duration::from_secs(61));
        assert_eq!(get(addr).await.0, 503);
        status.lock().unwrap().queued_since = None;

        set(None); // the Service is gone: its port closes
        let mut closed = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                closed = true;
                break;
            }
        }
        assert!(closed, "the health check port stayed open");
        task.abort();
    }

    #[test]
    fn the_plan_touches_only_the_listeners_that_differ() {
        let a = ObjectRef::new("default", "a");
        let b = ObjectRef::new("default", "b");
        let h = |id: &ObjectRef| ServiceHealth {
            service: id.clone(),
            local_endpoints: 1,
        };
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        let ip3: IpAddr = "127.0.0.3".parse().unwrap();
        let sa = |ip: IpAddr, p: u16| SocketAddr::new(ip, p);
        let ports: BTreeMap<u16, ServiceHealth> = [(31000, h(&a)), (31001, h(&b))].into();
        let before = wanted_listeners(&[ip2], &ports);
        assert_eq!(before[&sa(ip2, 31001)], b);
        // An address added: only its listeners start.
        let after = wanted_listeners(&[ip2, ip3], &ports);
        assert_eq!(
            plan_listeners(before.keys(), &after),
            (vec![], vec![sa(ip3, 31000), sa(ip3, 31001)])
        );
        // An address removed: only its listeners stop.
        let after = wanted_listeners(&[ip3], &ports);
        assert_eq!(
            plan_listeners(before.keys(), &after),
            (
                vec![sa(ip2, 31000), sa(ip2, 31001)],
                vec![sa(ip3, 31000), sa(ip3, 31001)]
            )
        );
        // a's healthCheckNodePort changes: b is untouched.
        let moved: BTreeMap<u16, ServiceHealth> = [(31002, h(&a)), (31001, h(&b))].into();
        assert_eq!(
            plan_listeners(before.keys(), &wanted_listeners(&[ip2], &moved)),
            (vec![sa(ip2, 31000)], vec![sa(ip2, 31002)])
        );
    }

    /// Node addresses and healthCheckNodePorts change under running
    /// listeners (127.0.0.x loopback addresses as the node's): only the
    /// listeners that differ move; a port in use is logged with its
    /// Service, never fatal, and bound by a later apply.
    #[tokio::test]
    async fn listeners_follow_addresses_and_ports_and_retry_a_port_in_use() {
        let status = Arc::new(Mutex::new(Status {
            last_sync: Some(SystemTime::now()),
            ..Default::default()
        }));
        let (a, b, c) = (
            ObjectRef::new("default", "a"),
            ObjectRef::new("default", "b"),
            ObjectRef::new("default", "c"),
        );
        let (pa, pb, pa2, pc) = (free_port(), free_port(), free_port(), free_port());
        let ip2: IpAddr = "127.0.0.2".parse().unwrap();
        let ip3: IpAddr = "127.0.0.3".parse().unwrap();
        let sa = |ip: IpAddr, p: u16| SocketAddr::new(ip, p);
        let fams: BTreeSet<Family> = [Family::V4].into();
        let publish = |addresses: &[IpAddr], ports: &[(u16, &ObjectRef)]| {
            let mut s = status.lock().unwrap();
            s.nodeport_addresses = addresses.to_vec();
            s.service_health = ports
                .iter()
                .map(|(p, id)| {
                    (
                        *p,
                        ServiceHealth {
                            service: (*id).clone(),
                            local_endpoints: 1,
                        },
                    )
                })
                .collect();
        };
        let sorted = |mut v: Vec<SocketAddr>| {
            v.sort();
            v
        };
        let mut servers = HealthServers::new(status.clone(), Duration::from_secs(30));
        let apply = async |servers: &mut HealthServers| {
            let wanted = wanted_from_status(true, &fams, &status.lock().unwrap());
            servers.apply(&wanted).await
        };

        publish(&[ip2], &[(pa, &a), (pb, &b)]);
        let r = apply(&mut servers).await;
        assert_eq!(r.started, sorted(vec![sa(ip2, pa), sa(ip2, pb)]));
        assert_eq!(get(sa(ip2, pb)).await.0, 200);

        // A node address added (it matches nodePortAddresses): only its
        // listeners start.
        publish(&[ip2, ip3], &[(pa, &a), (pb, &b)]);
        let r = apply(&mut servers).await;
        assert_eq!(
            (r.stopped, r.started),
            (vec![], sorted(vec![sa(ip3, pa), sa(ip3, pb)]))
        );
        assert_eq!(get(sa(ip3, pa)).await.0, 200);

        // One removed: only its listeners stop.
        publish(&[ip3], &[(pa, &a), (pb, &b)]);
        let r = apply(&mut servers).await;
        assert_eq!(
            (r.stopped, r.started),
            (sorted(vec![sa(ip2, pa), sa(ip2, pb)]), vec![])
        );
        assert!(tokio::net::TcpStream::connect(sa(ip2, pa)).await.is_err());
        assert_eq!(get(sa(ip3, pb)).await.0, 200);

        // a's healthCheckNodePort changes; b's listener is not restarted.
        publish(&[ip3], &[(pa2, &a), (pb, &b)]);
        let r = apply(&mut servers).await;
        assert_eq!(
            (r.stopped, r.started),
            (vec![sa(ip3, pa)], vec![sa(ip3, pa2)])
        );
        assert!(tokio::net::TcpStream::connect(sa(ip3, pa)).await.is_err());
        let (code, _, body) = get(sa(ip3, pa2)).await;
        assert_eq!(code, 200);
        assert!(body.contains(r#""name":"a""#), "{body}");

        // c's port is taken by someone else: logged with c, nothing else
        // disturbed, and bound once it is free.
        let blocker = std::net::TcpListener::bind(sa(ip3, pc)).unwrap();
        publish(&[ip3], &[(pa2, &a), (pb, &b), (pc, &c)]);
        let r = apply(&mut servers).await;
        assert_eq!((r.stopped.len(), r.started.len()), (0, 0));
        assert_eq!(r.failed.len(), 1);
        assert_eq!((r.failed[0].0, &r.failed[0].1), (sa(ip3, pc), &c));
        assert_eq!(servers.listening(), sorted(vec![sa(ip3, pb), sa(ip3, pa2)]));
        drop(blocker);
        let r = apply(&mut servers).await;
        assert_eq!((r.started, r.failed), (vec![sa(ip3, pc)], vec![]));
        let (code, _, body) = get(sa(ip3, pc)).await;
        assert_eq!(code, 200);
        assert!(body.contains(r#""name":"c""#), "{body}");
    }
}
