//! The one queue between the sources (API watchers or manifests, and the
//! HTTP server's questions) and the sync thread.
//!
//! It is bounded by the size of the cluster, not by the rate of change: it
//! keeps only the latest version of each Service and EndpointSlice not yet
//! taken (a later list replaces everything before it), the latest Node,
//! at most [`MAX_QUERIES`] questions and the newest [`MAX_ERRORS`] source
//! errors. A burst of 5,000 EndpointSlice updates to one Service while a
//! sync runs is one update when the sync thread looks again. Sending never
//! blocks, so a slow sync never stalls a watcher (whose stream would
//! otherwise back up into the API server's connection).
//!
//! The sync thread takes everything at once, in an order that keeps each
//! kind's history: the Service list, then Service changes since it, the
//! EndpointSlice list, slice changes, the Node, errors, questions.

use crate::api::{Query, SourceEvent};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kipvs_engine::controller::{Input, slice_ref};
use kipvs_engine::desired;
use kipvs_engine::model::ObjectRef;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Questions waiting at most; one more is dropped at once (its asker gets
/// 503), so a flood of `kipvs list` never grows the queue.
pub const MAX_QUERIES: usize = 64;

/// Source errors kept at most (the oldest go first).
pub const MAX_ERRORS: usize = 50;

#[derive(Default)]
struct Pending {
    services_listed: Option<Vec<Service>>,
    services: BTreeMap<ObjectRef, Input>,
    slices_listed: Option<Vec<EndpointSlice>>,
    slices: BTreeMap<ObjectRef, Input>,
    node: Option<Option<Box<Node>>>,
    errors: VecDeque<String>,
    queries: VecDeque<Query>,
    /// Changes replaced by a later one before the sync thread took them.
    coalesced: u64,
    senders: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.services_listed.is_none()
            && self.services.is_empty()
            && self.slices_listed.is_none()
            && self.slices.is_empty()
            && self.node.is_none()
            && self.errors.is_empty()
            && self.queries.is_empty()
    }

    fn push(&mut self, ev: SourceEvent) {
        match ev {
            SourceEvent::Input(input) => {
                let (map, id) = match &input {
                    Input::ServiceApplied(s) => (&mut self.services, desired::service_ref(s)),
                    Input::ServiceDeleted(id) => (&mut self.services, id.clone()),
                    Input::SliceApplied(s) => (&mut self.slices, slice_ref(s)),
                    Input::SliceDeleted(id) => (&mut self.slices, id.clone()),
                };
                if map.insert(id, input).is_some() {
                    self.coalesced += 1;
                }
            }
            SourceEvent::ReplaceServices(v) => {
                self.coalesced += self.services.len() as u64;
                self.services.clear();
                self.services_listed = Some(v);
            }
            SourceEvent::ReplaceSlices(v) => {
                self.coalesced += self.slices.len() as u64;
                self.slices.clear();
                self.slices_listed = Some(v);
            }
            SourceEvent::Node(n) => self.node = Some(n),
            SourceEvent::Error(e) => {
                if self.errors.len() == MAX_ERRORS {
                    self.errors.pop_front();
                }
                self.errors.push_back(e);
            }
            SourceEvent::Query(q) => {
                // Dropped when full: the asker's channel closes, it answers 503.
                if self.queries.len() < MAX_QUERIES {
                    self.queries.push_back(q);
                }
            }
        }
    }

    fn take(&mut self) -> Vec<SourceEvent> {
        let mut out = Vec::new();
        out.extend(
            self.services_listed
                .take()
                .map(SourceEvent::ReplaceServices),
        );
        out.extend(
            std::mem::take(&mut self.services)
                .into_values()
                .map(SourceEvent::Input),
        );
        out.extend(self.slices_listed.take().map(SourceEvent::ReplaceSlices));
        out.extend(
            std::mem::take(&mut self.slices)
                .into_values()
                .map(SourceEvent::Input),
        );
        out.extend(self.node.take().map(SourceEvent::Node));
        out.extend(self.errors.drain(..).map(SourceEvent::Error));
        out.extend(self.queries.drain(..).map(SourceEvent::Query));
        out
    }
}

struct Shared {
    pending: Mutex<Pending>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The receiving end has gone, or every sender has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the mailbox is closed")]
pub struct Closed;

/// A new mailbox: its sending and receiving ends.
pub fn mailbox() -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending {
            senders: 1,
            ..Pending::default()
        }),
        ready: Condvar::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// Puts changes and questions in the mailbox; never blocks. Cloned freely;
/// when the last one is dropped the receiver sees [`Closed`].
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// Adds `ev`, replacing an older version of the same object.
    /// [`Closed`] when the receiver is gone.
    pub fn send(&self, ev: SourceEvent) -> Result<(), Closed> {
        let mut pending = self.shared.lock();
        // Only senders hold the shared part: the receiver is gone.
        if Arc::strong_count(&self.shared) == pending.senders {
            return Err(Closed);
        }
        pending.push(ev);
        drop(pending);
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.lock().senders -= 1;
        self.shared.ready.notify_one();
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("mailbox::Sender")
    }
}

/// The sync thread's end.
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    /// Everything waiting, once something is (or nothing after `wait`);
    /// [`Closed`] when every sender is gone and nothing is left.
    pub fn recv_timeout(&self, wait: Duration) -> Result<Vec<SourceEvent>, Closed> {
        let deadline = Instant::now() + wait;
        let mut p = self.shared.lock();
        loop {
            if !p.is_empty() {
                return Ok(p.take());
            }
            if p.senders == 0 {
                return Err(Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            p = self
                .shared
                .ready
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Changes replaced by a later version before they were taken, so far.
    pub fn coalesced(&self) -> u64 {
        self.shared.lock().coalesced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    fn names(ev: &[SourceEvent]) -> Vec<String> {
        ev.iter()
            .map(|e| match e {
                SourceEvent::Input(Input::ServiceApplied(s)) => format!(
                    "apply {} {}",
                    s.metadata.name.as_deref().unwrap(),
                    s.spec.as_ref().unwrap().cluster_ip.as_deref().unwrap()
                ),
                SourceEvent::Input(Input::ServiceDeleted(id)) => format!("delete {id}"),
                SourceEvent::ReplaceServices(v) => format!("list {}", v.len()),
                SourceEvent::Error(e) => format!("error {e}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_burst_to_one_service_is_its_latest_version() {
        let (tx, rx) = mailbox();
        for i in 0..5000 {
            tx.send(SourceEvent::Input(Input::ServiceApplied(Box::new(svc(
                "a",
                &format!("10.96.{}.{}", i / 256, i % 256),
            )))))
            .unwrap();
        }
        tx.send(SourceEvent::Input(Input::ServiceApplied(Box::new(svc(
            "b",
            "10.96.100.1",
        )))))
        .unwrap();
        let got = rx.recv_timeout(Duration::ZERO).unwrap();
        assert_eq!(names(&got), ["apply a 10.96.19.135", "apply b 10.96.100.1"]);
        assert_eq!(rx.coalesced(), 4999);
        assert!(rx.recv_timeout(Duration::ZERO).unwrap().is_empty());
    }

    #[test]
    fn a_list_replaces_earlier_changes_and_later_ones_follow_it() {
        let (tx, rx) = mailbox();
        tx.send(SourceEvent::Input(Input::ServiceApplied(Box::new(svc(
            "a",
            "10.96.0.1",
        )))))
        .unwrap();
        tx.send(SourceEvent::ReplaceServices(vec![svc("a", "10.96.0.2")]))
            .unwrap();
        tx.send(SourceEvent::Input(Input::ServiceDeleted(ObjectRef::new(
            "default", "a",
        ))))
        .unwrap();
        let got = rx.recv_timeout(Duration::ZERO).unwrap();
        assert_eq!(names(&got), ["list 1", "delete default/a"]);
    }

    #[test]
    fn questions_and_errors_are_bounded() {
        let (tx, rx) = mailbox();
        let mut answers = Vec::new();
        for _ in 0..MAX_QUERIES + 10 {
            let (q, a) = tokio::sync::oneshot::channel();
            answers.push(a);
            tx.send(SourceEvent::Query(Query::VirtualServers(q)))
                .unwrap();
        }
        for i in 0..MAX_ERRORS + 5 {
            tx.send(SourceEvent::Error(format!("e{i}"))).unwrap();
        }
        let got = rx.recv_timeout(Duration::ZERO).unwrap();
        let queries = got
            .iter()
            .filter(|e| matches!(e, SourceEvent::Query(_)))
            .count();
        assert_eq!(queries, MAX_QUERIES);
        assert!(matches!(&got[0], SourceEvent::Error(e) if e == "e5"));
        // The dropped questions' askers learn at once.
        let mut last = answers.pop().unwrap();
        assert!(last.try_recv().is_err());
    }

    #[test]
    fn the_receiver_waits_and_learns_when_every_sender_is_gone() {
        let (tx, rx) = mailbox();
        let t2 = tx.clone();
        let started = Instant::now();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            t2.send(SourceEvent::Error("late".into())).unwrap();
        });
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(names(&got), ["error late"]);
        assert!(started.elapsed() < Duration::from_secs(5));
        h.join().unwrap();
        assert!(
            rx.recv_timeout(Duration::from_millis(10))
                .unwrap()
                .is_empty()
        );
        drop(tx);
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap_err(),
            Closed
        );
    }

    #[test]
    fn sending_to_a_dropped_receiver_fails() {
        let (tx, rx) = mailbox();
        drop(rx);
        assert_eq!(tx.send(SourceEvent::Error("x".into())), Err(Closed));
    }
}
