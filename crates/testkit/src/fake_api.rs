//! An in-process fake Kubernetes API server that speaks real HTTP list and
//! watch for Services, EndpointSlices and Nodes, so controller tests run
//! `kube`'s real client and watcher code against it.
//!
//! It implements what a watcher relies on: lists carry a resourceVersion
//! and come in pages of `limit` items with a continue token;
//! watches replay every event after the requested resourceVersion and then
//! stream new ones as newline-delimited JSON; bookmarks when asked for,
//! once a minute as kube-apiserver sends them;
//! `410 Gone` (an ERROR event) for a resourceVersion older than the last
//! [`FakeApiServer::compact`]; label selectors (`k`, `!k`, `k=v`, `k!=v`) and
//! `metadata.name` field selectors. It also accepts `events.k8s.io/v1`
//! Events (POST, and merge PATCH of one it holds), kept for
//! [`FakeApiServer::recorded_events`]. Tests can cut every open watch
//! ([`FakeApiServer::disconnect_watches`]) or make the server answer 503
//! ([`FakeApiServer::set_available`]).
//!
//! Dev-only (this crate): no shipped binary links it.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    EndpointSlice,
    Node,
}

impl Kind {
    fn of(kind: &str) -> Option<Kind> {
        match kind {
            "Service" => Some(Kind::Service),
            "EndpointSlice" => Some(Kind::EndpointSlice),
            "Node" => Some(Kind::Node),
            _ => None,
        }
    }

    fn list_kind(self) -> (&'static str, &'static str) {
        match self {
            Kind::Service => ("ServiceList", "v1"),
            Kind::EndpointSlice => ("EndpointSliceList", "discovery.k8s.io/v1"),
            Kind::Node => ("NodeList", "v1"),
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    kind: Kind,
    verb: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Events at or below this resourceVersion are gone: watching from
    /// before it answers 410.
    compacted: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    log: Vec<Event>,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    generation: watch::Sender<u64>,
    available: std::sync::atomic::AtomicBool,
    requests: AtomicU64,
    watches: AtomicU64,
    /// `events.k8s.io/v1` Events by (namespace, name), in creation order.
    recorded: Mutex<Vec<((String, String), Value)>>,
    /// The Kubernetes verb of every Events request (`create`, `patch` …).
    event_verbs: Mutex<Vec<&'static str>>,
}

/// A running fake API server on 127.0.0.1 (a random port).
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Starts the server on a loopback port.
    pub async fn start() -> std::io::Result<FakeApiServer> {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                rv: 1,
                ..Default::default()
            }),
            events: broadcast::channel(65536).0,
            generation: watch::channel(0).0,
            available: true.into(),
            requests: 0.into(),
            watches: 0.into(),
            recorded: Mutex::new(Vec::new()),
            event_verbs: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeApiServer { addr, shared, task })
    }

    /// The server's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube` client talking to this server.
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().expect("valid URL"));
        kube::Client::try_from(config).expect("client from config")
    }

    /// Creates or replaces an object (Service, EndpointSlice or Node).
    pub fn apply<K: Serialize>(&self, object: &K) {
        let mut v = serde_json::to_value(object).expect("serializable object");
        let kind_name = v["kind"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| guess_kind(&v))
            .expect("object has a kind");
        let kind = Kind::of(&kind_name).unwrap_or_else(|| panic!("the fake serves no {kind_name}"));
        let (_, api_version) = kind.list_kind();
        v["kind"] = json!(kind_name);
        v["apiVersion"] = json!(api_version);
        let ns = if kind == Kind::Node {
            String::new()
        } else {
            let ns = v["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_owned();
            v["metadata"]["namespace"] = json!(ns);
            ns
        };
        let name = v["metadata"]["name"]
            .as_str()
            .expect("object has a name")
            .to_owned();
        let mut store = self.shared.store.lock().unwrap();
        store.rv += 1;
        let rv = store.rv;
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        if v["metadata"]["uid"].is_null() {
            v["metadata"]["uid"] = json!(format!("uid-{kind:?}-{ns}-{name}"));
        }
        let verb = if store.objects.insert((kind, ns, name), v.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.record(
            &mut store,
            Event {
                rv,
                kind,
                verb,
                object: v,
            },
        );
    }

    /// Deletes an object; returns whether it existed.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let ns = if kind == Kind::Node { "" } else { namespace };
        let mut store = self.shared.store.lock().unwrap();
        let Some(mut v) = store
            .objects
            .remove(&(kind, ns.to_owned(), name.to_owned()))
        else {
            return false;
        };
        store.rv += 1;
        let rv = store.rv;
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(
            &mut store,
            Event {
                rv,
                kind,
                verb: "DELETED",
                object: v,
            },
        );
        true
    }

    fn record(&self, store: &mut Store, e: Event) {
        store.log.push(e.clone());
        let _ = self.shared.events.send(e);
    }

    /// Forgets the event history: a watch from any resourceVersion up to now
    /// gets `410 Gone`, and open watches are cut so they find out.
    pub fn compact(&self) {
        {
            let mut store = self.shared.store.lock().unwrap();
            // A new revision, as etcd's compaction leaves: everything
            // before it is gone, a list at it can be watched from.
            store.rv += 1;
            store.compacted = store.rv;
            store.log.clear();
        }
        self.disconnect_watches();
    }

    /// Ends every open watch stream (clients reconnect from their last
    /// resourceVersion).
    pub fn disconnect_watches(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// While unavailable, every request is answered 503.
    pub fn set_available(&self, up: bool) {
        self.shared.available.store(up, Ordering::SeqCst);
        if !up {
            self.disconnect_watches();
        }
    }

    /// Requests served so far (lists and watches).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Watch requests served so far.
    pub fn watches(&self) -> u64 {
        self.shared.watches.load(Ordering::SeqCst)
    }

    /// The `events.k8s.io/v1` Events posted so far (as last patched), in
    /// creation order.
    pub fn recorded_events(&self) -> Vec<Value> {
        let recorded = self.shared.recorded.lock().unwrap();
        recorded.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The Kubernetes verb (`create`, `patch`, `update`, …) of every request
    /// made to the `events.k8s.io` Events API, in order.
    pub fn event_verbs(&self) -> Vec<&'static str> {
        self.shared.event_verbs.lock().unwrap().clone()
    }
}

fn guess_kind(v: &Value) -> Option<String> {
    if v.get("addressType").is_some() {
        Some("EndpointSlice".into())
    } else if v.pointer("/spec/ports").is_some() || v.pointer("/spec/clusterIP").is_some() {
        Some("Service".into())
    } else {
        None
    }
}

/// Parses a request path into (kind, namespace filter, name filter).
fn route(path: &str) -> Option<(Kind, Option<String>, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => rest,
        _ => return None,
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let core = parts[0] == "api";
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] => (*plural, Some(name.to_string())),
        _ => return None,
    };
    let kind = match (core, plural) {
        (true, "services") => Kind::Service,
        (true, "nodes") => Kind::Node,
        (false, "endpointslices") => Kind::EndpointSlice,
        _ => return None,
    };
    Some((kind, ns, name))
}

/// `/apis/events.k8s.io/v1/namespaces/NS/events[/NAME]` → (NS, NAME).
fn events_route(path: &str) -> Option<(String, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => Some((ns.to_string(), None)),
        [
            "apis",
            "events.k8s.io",
            "v1",
            "namespaces",
            ns,
            "events",
            name,
        ] => Some((ns.to_string(), Some(name.to_string()))),
        _ => None,
    }
}

/// POST (create) or PATCH (JSON merge patch) of an `events.k8s.io/v1` Event.
async fn event_request(
    shared: &Shared,
    req: Request,
    namespace: String,
    name: Option<String>,
) -> Response {
    let method = req.method().clone();
    let verb = match (method.as_str(), &name) {
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        _ => "other",
    };
    shared.event_verbs.lock().unwrap().push(verb);
    let body = match axum::body::to_bytes(req.into_body(), 1 << 20).await {
        Ok(b) => b,
        Err(e) => {
            let body = status(400, "BadRequest", &e.to_string());
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        let body = status(400, "BadRequest", "the body is not JSON");
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    };
    let rv = {
        let mut store = shared.store.lock().unwrap();
        store.rv += 1;
        store.rv
    };
    let mut recorded = shared.recorded.lock().unwrap();
    match (method.as_str(), name) {
        ("POST", None) => {
            let Some(n) = v["metadata"]["name"].as_str().map(str::to_owned) else {
                let body = status(422, "Invalid", "metadata.name: Required value");
                return (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(body)).into_response();
            };
            let key = (namespace.clone(), n.clone());
            if recorded.iter().any(|(k, _)| *k == key) {
                let body = status(
                    409,
                    "AlreadyExists",
                    &format!("events \"{n}\" already exists"),
                );
                return (StatusCode::CONFLICT, axum::Json(body)).into_response();
            }
            v["kind"] = json!("Event");
            v["apiVersion"] = json!("events.k8s.io/v1");
            v["metadata"]["namespace"] = json!(namespace);
            v["metadata"]["resourceVersion"] = json!(rv.to_string());
            v["metadata"]["uid"] = json!(format!("uid-Event-{namespace}-{n}"));
            recorded.push((key, v.clone()));
            (StatusCode::CREATED, axum::Json(v)).into_response()
        }
        ("PATCH", Some(n)) => {
            let key = (namespace, n.clone());
            let Some((_, old)) = recorded.iter_mut().find(|(k, _)| *k == key) else {
                let body = status(404, "NotFound", &format!("events \"{n}\" not found"));
                return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
            };
            merge_patch(old, v);
            old["metadata"]["resourceVersion"] = json!(rv.to_string());
            axum::Json(old.clone()).into_response()
        }
        (m, _) => {
            let body = status(
                405,
                "MethodNotAllowed",
                &format!("the fake takes no {m} of events"),
            );
            (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
        }
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            let obj = target.as_object_mut().expect("an object");
            for (k, v) in fields {
                if v.is_null() {
                    obj.remove(&k);
                } else {
                    merge_patch(obj.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other,
    }
}

struct Filter {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    labels: Vec<(String, Option<String>, bool)>,
}

impl Filter {
    fn matches(&self, kind: Kind, v: &Value) -> bool {
        if kind != self.kind {
            return false;
        }
        let meta = &v["metadata"];
        if self
            .namespace
            .as_deref()
            .is_some_and(|ns| meta["namespace"].as_str() != Some(ns))
        {
            return false;
        }
        if self
            .name
            .as_deref()
            .is_some_and(|n| meta["name"].as_str() != Some(n))
        {
            return false;
        }
        self.labels.iter().all(|(k, val, positive)| {
            let have = meta["labels"].get(k).and_then(|x| x.as_str());
            match (val, positive) {
                (None, true) => have.is_some(),
                (None, false) => have.is_none(),
                (Some(v), true) => have == Some(v.as_str()),
                (Some(v), false) => have != Some(v.as_str()),
            }
        })
    }
}

/// `a,!b,c=d,e!=f` → terms (key, value, positive).
fn parse_label_selector(s: &str) -> Vec<(String, Option<String>, bool)> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            if let Some(k) = t.strip_prefix('!') {
                (k.to_owned(), None, false)
            } else if let Some((k, v)) = t.split_once("!=") {
                (k.to_owned(), Some(v.to_owned()), false)
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                (k.to_owned(), Some(v.to_owned()), true)
            } else {
                (t.to_owned(), None, true)
            }
        })
        .collect()
}

fn query(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if !shared.available.load(Ordering::SeqCst) {
        let body = status(503, "ServiceUnavailable", "the fake API server is down");
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    if let Some((namespace, name)) = events_route(req.uri().path()) {
        return event_request(&shared, req, namespace, name).await;
    }
    let Some((kind, namespace, name)) = route(req.uri().path()) else {
        let body = status(
            404,
            "NotFound",
            &format!("the fake serves no {}", req.uri().path()),
        );
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    };
    let q = query(&req);
    let mut filter = Filter {
        kind,
        namespace,
        name: None,
        labels: q
            .get("labelSelector")
            .map(|s| parse_label_selector(s))
            .unwrap_or_default(),
    };
    if let Some(n) = q
        .get("fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
    {
        filter.name = Some(n.to_owned());
    }
    let watching = matches!(q.get("watch").map(String::as_str), Some("true" | "1"));
    if let (Some(n), false) = (&name, watching) {
        let store = shared.store.lock().unwrap();
        let key = (
            kind,
            filter.namespace.clone().unwrap_or_default(),
            n.clone(),
        );
        return match store.objects.get(&key) {
            Some(v) => axum::Json(v.clone()).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                axum::Json(status(404, "NotFound", &format!("{n} not found"))),
            )
                .into_response(),
        };
    }
    if name.is_some() {
        filter.name = name;
    }
    if watching {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let bookmarks = q.get("allowWatchBookmarks").is_some_and(|b| b == "true");
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(290u64);
        shared.watches.fetch_add(1, Ordering::SeqCst);
        return watch_response(
            shared,
            filter,
            from,
            bookmarks,
            Duration::from_secs(timeout),
        );
    }
    let store = shared.store.lock().unwrap();
    // Pages of `limit` items, as the API server's watch cache serves them:
    // a continue token names the list's resourceVersion and its last item.
    let limit: Option<usize> = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0);
    let token = q.get("continue").and_then(|t| {
        let mut parts = t.splitn(3, '|');
        let rv: u64 = parts.next()?.parse().ok()?;
        Some((rv, parts.next()?.to_owned(), parts.next()?.to_owned()))
    });
    let (rv, from) = match token {
        Some((rv, ns, name)) => (rv, Bound::Excluded((kind, ns, name))),
        None => (store.rv, Bound::Unbounded),
    };
    let mut items: Vec<&Value> = Vec::new();
    let mut last: Option<&(Kind, String, String)> = None;
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    for (key, v) in store.objects.range((from, Bound::Unbounded)) {
        if !filter.matches(key.0, v) {
            continue;
        }
        if let (Some(l), Some((_, ns, name))) = (limit, last)
            && items.len() == l
        {
            metadata["continue"] = json!(format!("{rv}|{ns}|{name}"));
            break;
        }
        items.push(v);
        last = Some(key);
    }
    let (list_kind, api_version) = kind.list_kind();
    axum::Json(json!({
        "kind": list_kind, "apiVersion": api_version,
        "metadata": metadata,
        "items": items,
    }))
    .into_response()
}

/// How often a watch that asked for bookmarks gets one: kube-apiserver's
/// watch cache sends one about every minute (its `bookmarkFrequency`). A
/// faster pace here is work the agent under test would not do on a real
/// cluster, and it showed up as idle CPU in `bench agent` (twice a second
/// per watch cost 0.3 CPU-seconds a minute at 1,000 Services under TCG).
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

fn watch_line(event_type: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

fn watch_response(
    shared: Arc<Shared>,
    filter: Filter,
    from: u64,
    bookmarks: bool,
    timeout: Duration,
) -> Response {
    // Subscribe before reading the log, so no event falls between the two.
    let mut live = shared.events.subscribe();
    let mut generation = shared.generation.subscribe();
    generation.mark_unchanged();
    let (replay, gone, snapshot_rv) = {
        let store = shared.store.lock().unwrap();
        let gone = from != 0 && from < store.compacted;
        let replay: Vec<Bytes> = store
            .log
            .iter()
            .filter(|e| e.rv > from && filter.matches(e.kind, &e.object))
            .map(|e| watch_line(e.verb, &e.object))
            .collect();
        (replay, gone, store.rv)
    };
    let mut last_rv = snapshot_rv.max(from);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
    let (list_kind, api_version) = filter.kind.list_kind();
    let item_kind = list_kind.trim_end_matches("List").to_owned();
    tokio::spawn(async move {
        if gone {
            let err = status(410, "Expired", &format!("too old resource version: {from}"));
            let _ = tx.send(watch_line("ERROR", &err)).await;
            return;
        }
        for line in replay {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = generation.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let bm = json!({"kind": item_kind, "apiVersion": api_version,
                                    "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(watch_line("BOOKMARK", &bm)).await.is_err() { return; }
                }
                e = live.recv() => match e {
                    Ok(e) => {
                        if e.rv <= snapshot_rv { continue; } // replayed already
                        last_rv = last_rv.max(e.rv);
                        if filter.matches(e.kind, &e.object)
                            && tx.send(watch_line(e.verb, &e.object)).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .map(Ok::<Bytes, Infallible>);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .expect("response")
}
