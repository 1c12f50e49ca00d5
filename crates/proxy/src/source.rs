//! Where Kubernetes objects come from: the API server (kube's watchers) or
//! a directory of manifests. Both produce the same [`SourceEvent`]s.
//!
//! A watcher's (re)list arrives as one `Replace…` event holding the full
//! set, so the engine compares it with what it has and a relist (410 Gone)
//! changes nothing in the kernel unless the objects changed.

use crate::api::SourceEvent;
use crate::manifest;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kipvs_engine::controller::{Input, slice_ref};
use kipvs_engine::desired;
use kipvs_engine::labels;
use kipvs_engine::model::ObjectRef;
use kipvs_engine::slim;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// The API access [`watch_api`] needs, as (API group, resource, verbs):
/// the deployed ClusterRole grants exactly these and [`EVENTS`]
/// (`deploy/`'s test compares them).
pub const WATCHED: &[(&str, &str, &[&str])] = &[
    ("", "services", &["get", "list", "watch"]),
    (
        "discovery.k8s.io",
        "endpointslices",
        &["get", "list", "watch"],
    ),
    ("", "nodes", &["get", "list", "watch"]),
];

/// Recording events ([`crate::events`]): kube's `Recorder` creates
/// `events.k8s.io/v1` Events and patches a repeat into a series; it never
/// uses the core `v1` Events API nor `update`. kube-proxy's ClusterRole
/// (`system:node-proxier`) also grants core events and `update`, for
/// client-go's fallback to `v1` Events on API servers older than 1.19;
/// kipvs needs neither, so its role leaves them out (least privilege).
pub const EVENTS: &[(&str, &str, &[&str])] = &[("events.k8s.io", "events", &["create", "patch"])];

/// Watches Services, EndpointSlices and this node's Node with kube's
/// watchers (with backoff, so an unreachable API server is retried forever
/// while the kernel stays as it is). Returns when `tx` closes.
pub async fn watch_api(
    client: kube::Client,
    node_name: String,
    proxy_name: Option<String>,
    tx: crate::mailbox::Sender,
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
    // Objects are slimmed as they arrive: a first list is held whole
    // until its last object, and most of an object is bookkeeping.
    let services = services.map_ok(|e| e.modify(|s| *s = slim::service(std::mem::take(s))));
    let slices = slices.map_ok(|e| e.modify(|s| *s = slim::endpoint_slice(std::mem::take(s))));
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

async fn pump<K, S>(stream: S, tx: crate::mailbox::Sender, map: impl Fn(Listed<K>) -> SourceEvent)
where
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
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// Manifest mode: reads `dir` now and again whenever a file in it changes:
/// the full sets first, then one event per object that may have changed. Changes
/// are noticed by inotify at once, with a re-check every `poll` as well
/// (every `poll` only, where inotify is unavailable); only changed files
/// are parsed again. Bad documents are reported with file and line, the
/// rest still applied.
pub async fn watch_manifests(
    dir: PathBuf,
    node_name: String,
    poll: Duration,
    tx: crate::mailbox::Sender,
) {
    let mut watch = match crate::dirwatch::DirWatch::new(&dir) {
        Ok(w) => Some(w),
        Err(e) => {
            let msg = format!("watching {}: {e}; polling every {poll:?}", dir.display());
            if tx.send(SourceEvent::Error(msg)).is_err() {
                return;
            }
            None
        }
    };
    let mut cache = manifest::ManifestDir::default();
    // Slices mirrored from each Endpoints (by the Endpoints' name).
    let mut mirrored: BTreeMap<ObjectRef, BTreeSet<ObjectRef>> = BTreeMap::new();
    let mut first = true;
    loop {
        let events = match cache.refresh(&dir) {
            Ok(_) if first => {
                first = false;
                let (m, errors) = cache.merged();
                let mut ev: Vec<SourceEvent> = errors
                    .into_iter()
                    .map(|e| SourceEvent::Error(format!("manifest {e}")))
                    .collect();
                let mut slices = m.endpoint_slices;
                for ep in &m.endpoints {
                    let r = object_ref(&ep.metadata);
                    let mine = cache.mirrored_slices(&r);
                    mirrored.insert(r, mine.iter().map(slice_ref).collect());
                    slices.extend(mine);
                }
                ev.push(SourceEvent::Node(
                    cache.node(&node_name).cloned().map(Box::new),
                ));
                ev.push(SourceEvent::ReplaceSlices(slices));
                ev.push(SourceEvent::ReplaceServices(m.services));
                ev
            }
            Ok(touched) => manifest_changes(&cache, touched, &node_name, &mut mirrored),
            Err(e) => vec![SourceEvent::Error(format!(
                "reading manifests in {}: {e}",
                dir.display()
            ))],
        };
        for e in events {
            if tx.send(e).is_err() {
                return;
            }
        }
        match &mut watch {
            Some(w) => {
                tokio::select! {
                    r = w.changed() => if let Err(e) = r {
                        let msg = format!("watching {}: {e}", dir.display());
                        if tx.send(SourceEvent::Error(msg)).is_err() {
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

fn object_ref(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjectRef {
    ObjectRef::new(
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

/// The events for what a manifest refresh touched: each touched Service
/// and EndpointSlice as it is now (or deleted), the mirrored slices of
/// touched Endpoints and of Services whose selector may have changed, and
/// this node's Node if it was touched.
fn manifest_changes(
    cache: &manifest::ManifestDir,
    touched: manifest::Touched,
    node_name: &str,
    mirrored: &mut BTreeMap<ObjectRef, BTreeSet<ObjectRef>>,
) -> Vec<SourceEvent> {
    let mut ev: Vec<SourceEvent> = touched
        .errors
        .iter()
        .map(|e| SourceEvent::Error(format!("manifest {e}")))
        .collect();
    if touched.nodes.contains(node_name) {
        ev.push(SourceEvent::Node(
            cache.node(node_name).cloned().map(Box::new),
        ));
    }
    for r in &touched.slices {
        ev.push(match cache.slice(r) {
            Some(s) => SourceEvent::Input(Input::SliceApplied(Box::new(s.clone()))),
            None => SourceEvent::Input(Input::SliceDeleted(r.clone())),
        });
    }
    for r in touched.endpoints.iter().chain(&touched.services) {
        let now = cache.mirrored_slices(r);
        let now_refs: BTreeSet<ObjectRef> = now.iter().map(slice_ref).collect();
        let before = mirrored.remove(r).unwrap_or_default();
        for gone in before.difference(&now_refs) {
            ev.push(SourceEvent::Input(Input::SliceDeleted(gone.clone())));
        }
        for s in now {
            ev.push(SourceEvent::Input(Input::SliceApplied(Box::new(s))));
        }
        if !now_refs.is_empty() {
            mirrored.insert(r.clone(), now_refs);
        }
    }
    for r in &touched.services {
        ev.push(match cache.service(r) {
            Some(s) => SourceEvent::Input(Input::ServiceApplied(Box::new(s.clone()))),
            None => SourceEvent::Input(Input::ServiceDeleted(r.clone())),
        });
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ev: &[SourceEvent]) -> Vec<String> {
        ev.iter()
            .map(|e| match e {
                SourceEvent::Input(Input::ServiceApplied(s)) => {
                    format!("service {}", s.metadata.name.as_deref().unwrap_or(""))
                }
                SourceEvent::Input(Input::ServiceDeleted(r)) => format!("service- {}", r.name),
                SourceEvent::Input(Input::SliceApplied(s)) => {
                    format!("slice {}", s.metadata.name.as_deref().unwrap_or(""))
                }
                SourceEvent::Input(Input::SliceDeleted(r)) => format!("slice- {}", r.name),
                SourceEvent::Node(n) => format!("node {}", n.is_some()),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn manifest_changes_are_per_object_and_follow_mirroring() {
        let dir = std::env::temp_dir().join(format!("kipvs-source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let svc = |selector: &str| {
            format!(
                "kind: Service\nmetadata: {{name: db}}\nspec:\n  clusterIP: 10.96.0.9\n  \
                 ports: [{{port: 5432}}]\n{selector}---\n\
                 kind: Service\nmetadata: {{name: web}}\nspec: {{clusterIP: 10.96.0.8, ports: [{{port: 80}}]}}\n"
            )
        };
        let eps = |ip: &str| {
            format!(
                "kind: Endpoints\nmetadata: {{name: db}}\n\
                 subsets: [{{addresses: [{{ip: {ip}}}], ports: [{{port: 5432}}]}}]\n"
            )
        };
        std::fs::write(dir.join("svc.yaml"), svc("")).unwrap();
        std::fs::write(dir.join("eps.yaml"), eps("10.1.0.1")).unwrap();
        let mut cache = manifest::ManifestDir::default();
        cache.refresh(&dir).unwrap();
        let mut mirrored = BTreeMap::from([(
            ObjectRef::new("default", "db"),
            BTreeSet::from([ObjectRef::new("default", "db-mirror-0-ipv4")]),
        )]);

        // One address changes: the mirrored slice, nothing else.
        std::fs::write(dir.join("eps.yaml"), eps("10.1.0.2")).unwrap();
        let t = cache.refresh(&dir).unwrap();
        let ev = manifest_changes(&cache, t, "node-1", &mut mirrored);
        assert_eq!(names(&ev), ["slice db-mirror-0-ipv4"]);

        // The Service gains a selector: its mirrored slice goes; the other
        // Service in the file is not touched.
        std::fs::write(dir.join("svc.yaml"), svc("  selector: {app: db}\n")).unwrap();
        let t = cache.refresh(&dir).unwrap();
        let ev = manifest_changes(&cache, t, "node-1", &mut mirrored);
        assert_eq!(names(&ev), ["slice- db-mirror-0-ipv4", "service db"]);
        assert!(mirrored.is_empty());

        // This node's Node appears; a file goes.
        std::fs::write(
            dir.join("node.yaml"),
            "kind: Node\nmetadata: {name: node-1}\n",
        )
        .unwrap();
        std::fs::remove_file(dir.join("svc.yaml")).unwrap();
        let t = cache.refresh(&dir).unwrap();
        let ev = manifest_changes(&cache, t, "node-1", &mut mirrored);
        assert_eq!(names(&ev), ["node true", "service- db", "service- web"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
