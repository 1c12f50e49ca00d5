//! Where Kubernetes objects come from: the API server (kube's watchers) or
//! a directory of manifests. Both produce the same [`SourceEvent`]s.
//!
//! A watcher's (re)list arrives as one `Replace…` event holding the full
//! set, so the engine compares it with what it has and a relist (410 Gone)
//! changes nothing in the kernel unless the objects changed.

use crate::controller::{Input, slice_ref};
use crate::desired;
use crate::labels;
use crate::manifest;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;

/// One change from a source.
#[derive(Debug, Clone)]
pub enum SourceEvent {
    /// One object changed.
    Input(Input),
    /// The full set of Services (a list or relist).
    ReplaceServices(Vec<Service>),
    /// The full set of EndpointSlices (a list or relist).
    ReplaceSlices(Vec<EndpointSlice>),
    /// This node's Node object (None: deleted or not found).
    Node(Option<Box<Node>>),
    /// A source error worth reporting (the source keeps retrying).
    Error(String),
}

/// Watches Services, EndpointSlices and this node's Node with kube's
/// watchers (with backoff, so an unreachable API server is retried forever
/// while the kernel stays as it is). Returns when `tx` closes.
pub async fn watch_api(
    client: kube::Client,
    node_name: String,
    proxy_name: Option<String>,
    tx: mpsc::Sender<SourceEvent>,
) {
    let selector = labels::watch_selector(proxy_name.as_deref());
    let services = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default().labels(&selector),
    );
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&selector),
    );
    let nodes = watcher::watcher(
        Api::<Node>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
    );
    tokio::join!(
        pump(services.default_backoff(), tx.clone(), |e| match e {
            Listed::All(v) => SourceEvent::ReplaceServices(v),
            Listed::Apply(s) => SourceEvent::Input(Input::ServiceApplied(Box::new(s))),
            Listed::Delete(s) =>
                SourceEvent::Input(Input::ServiceDeleted(desired::service_ref(&s))),
        }),
        pump(slices.default_backoff(), tx.clone(), |e| match e {
            Listed::All(v) => SourceEvent::ReplaceSlices(v),
            Listed::Apply(s) => SourceEvent::Input(Input::SliceApplied(Box::new(s))),
            Listed::Delete(s) => SourceEvent::Input(Input::SliceDeleted(slice_ref(&s))),
        }),
        pump(nodes.default_backoff(), tx.clone(), |e| match e {
            Listed::All(mut v) => SourceEvent::Node(v.pop().map(Box::new)),
            Listed::Apply(n) => SourceEvent::Node(Some(Box::new(n))),
            Listed::Delete(_) => SourceEvent::Node(None),
        }),
    );
}

/// A watcher event with the initial list gathered into one.
enum Listed<K> {
    All(Vec<K>),
    Apply(K),
    Delete(K),
}

async fn pump<K, S>(
    stream: S,
    tx: mpsc::Sender<SourceEvent>,
    map: impl Fn(Listed<K>) -> SourceEvent,
) where
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut listing: Option<Vec<K>> = None;
    while let Some(ev) = stream.next().await {
        let out = match ev {
            Ok(Event::Init) => {
                listing = Some(Vec::new());
                continue;
            }
            Ok(Event::InitApply(k)) => {
                listing.get_or_insert_with(Vec::new).push(k);
                continue;
            }
            Ok(Event::InitDone) => map(Listed::All(listing.take().unwrap_or_default())),
            Ok(Event::Apply(k)) => map(Listed::Apply(k)),
            Ok(Event::Delete(k)) => map(Listed::Delete(k)),
            Err(e) => {
                tracing::warn!(error = %e, "watch failed; retrying with backoff");
                SourceEvent::Error(format!("watch: {e}"))
            }
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

/// Manifest mode: reads `dir` now and again whenever a file in it changes,
/// sending the full sets each time (the engine finds what differs). Changes
/// are noticed by inotify at once, with a re-check every `poll` as well
/// (every `poll` only, where inotify is unavailable); only changed files
/// are parsed again. Bad documents are reported with file and line, the
/// rest still applied.
pub async fn watch_manifests(
    dir: PathBuf,
    node_name: String,
    poll: Duration,
    tx: mpsc::Sender<SourceEvent>,
) {
    let watch = match crate::dirwatch::DirWatch::new(&dir) {
        Ok(w) => Some(w),
        Err(e) => {
            let msg = format!("watching {}: {e}; polling every {poll:?}", dir.display());
            if tx.send(SourceEvent::Error(msg)).await.is_err() {
                return;
            }
            None
        }
    };
    let mut cache = manifest::ManifestDir::default();
    let mut first = true;
    loop {
        let events = match cache.refresh(&dir) {
            Ok(changed) if changed || first => {
                first = false;
                let (m, errors) = cache.merged();
                let mut ev: Vec<SourceEvent> = errors
                    .into_iter()
                    .map(|e| SourceEvent::Error(format!("manifest {e}")))
                    .collect();
                let node = m
                    .nodes
                    .iter()
                    .find(|n| n.metadata.name.as_deref() == Some(node_name.as_str()));
                ev.push(SourceEvent::Node(node.cloned().map(Box::new)));
                ev.push(SourceEvent::ReplaceSlices(m.all_slices()));
                ev.push(SourceEvent::ReplaceServices(m.services));
                ev
            }
            Ok(_) => Vec::new(),
            Err(e) => vec![SourceEvent::Error(format!(
                "reading manifests in {}: {e}",
                dir.display()
            ))],
        };
        for e in events {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        match &watch {
            Some(w) => {
                tokio::select! {
                    r = w.changed() => if let Err(e) = r {
                        let msg = format!("watching {}: {e}", dir.display());
                        if tx.send(SourceEvent::Error(msg)).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(poll).await;
                    },
                    _ = tokio::time::sleep(poll) => {}
                }
            }
            None => tokio::time::sleep(poll).await,
        }
    }
}
