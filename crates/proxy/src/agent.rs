//! The agent: a source feeding the [`Engine`] on a thread of its own, with
//! kube-proxy's timing: changes are coalesced for at least
//! `min_sync_period` (0: applied at once), the kernel is re-read every
//! `sync_period` to repair drift, and draining real servers are re-checked
//! every few seconds.
//!
//! Nothing is written before both Services and EndpointSlices have been
//! listed once: a half-known cluster must not delete the other half's
//! virtual servers. Then the first sync is a [`Engine::resync`]: adopt what
//! the kernel holds, change only what differs, flush nothing.

use crate::api::{Query, SourceEvent, Status, VirtualServerInfo};
use crate::options::Timing;
use k8s_openapi::api::core::v1::Node;
use kipvs_engine::controller::{Dataplane, Engine, Input, SyncReport};
use kipvs_engine::desired::{Context, Family};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Answers a question, unless its asker gave up waiting (then it is
/// dropped, never run late).
fn answer<D: Dataplane>(engine: &mut Engine<D>, q: Query) {
    match q {
        Query::VirtualServers(tx) if tx.is_closed() => {}
        Query::Explain(_, tx) if tx.is_closed() => {}
        Query::VirtualServers(tx) => {
            let list = engine
                .owners()
                .map(|(k, o)| VirtualServerInfo {
                    protocol: k.protocol.to_string(),
                    address: k.address,
                    port: k.port,
                    service: o.service.to_string(),
                    port_name: o.port_name.clone(),
                    kind: kipvs_engine::desired::explain::kind_name(o.kind).to_owned(),
                    service_port: engine.service_port_number(o),
                })
                .collect();
            let _ = tx.send(list);
        }
        Query::Explain(id, tx) => {
            let _ = tx.send(engine.explain(&id));
        }
    }
}

/// Derives the node-dependent part of the context from the Node (its zone,
/// primary addresses) and the node's current local addresses.
pub type ContextFn = Box<dyn Fn(Option<&Node>) -> Context + Send>;

/// Runs the sync loop until `events` closes. Blocking: call it on a
/// dedicated thread.
pub fn run<D: Dataplane>(
    mut engine: Engine<D>,
    events: crate::mailbox::Receiver,
    context: ContextFn,
    timing: Timing,
    status: Arc<Mutex<Status>>,
    clock: impl Fn() -> u64,
) {
    let mut services_listed = false;
    let mut slices_listed = false;
    let mut last_sync: Option<Instant> = None;
    let mut last_resync: Option<Instant> = None;
    let mut last_drain_check = Instant::now();
    // The kernel differed from the mirror at the last sync: re-read it,
    // at once the first time, then after 1 s, 2 s … (at most `sync_period`)
    // while each re-read finds it different again.
    let mut stale = false;
    let mut stale_wait = Duration::ZERO;
    // Freed heap goes back to the kernel after a sync, at most every
    // TRIM_EVERY (crate::memory).
    let mut last_trim: Option<Instant> = None;
    let metrics = status.lock().unwrap().metrics.clone();
    // Trigger times of the EndpointSlice changes not yet synced.
    let mut triggers: Vec<(Family, SystemTime)> = Vec::new();
    loop {
        let now = Instant::now();
        let ready = services_listed && slices_listed;
        let mut deadline = now + Duration::from_secs(3600);
        if ready {
            if stale {
                deadline = last_resync.map_or(now, |r| r + stale_wait);
            }
            if let Some(at) = engine.next_retry() {
                let wait = Duration::from_secs(at.saturating_sub(clock()));
                let earliest = last_sync.map_or(now, |l| l + timing.min_sync_period);
                deadline = deadline.min((now + wait).max(earliest));
            }
            if let Some(r) = last_resync {
                deadline = deadline.min(r + timing.sync_period);
            }
            if engine.pending() > 0 {
                deadline = deadline.min(last_sync.map_or(now, |l| l + timing.min_sync_period));
            }
            if engine.draining() > 0 {
                deadline = deadline.min(last_drain_check + timing.drain_check);
            }
        }
        let wait = deadline.saturating_duration_since(now);
        // Everything queued, coalesced by object (crate::mailbox).
        let Ok(taken) = events.recv_timeout(wait) else {
            return;
        };
        for ev in taken {
            match ev {
                SourceEvent::Input(i) => {
                    observe_input(&metrics, &i, &mut triggers);
                    engine.input(i)
                }
                // A (re)list counts the Services it made dirty.
                SourceEvent::ReplaceServices(v) => {
                    tracing::info!(objects = v.len(), "Services listed");
                    services_listed = true;
                    let before = engine.pending();
                    engine.replace_services(v);
                    (before..engine.pending()).for_each(|_| metrics.service_changed());
                }
                SourceEvent::ReplaceSlices(v) => {
                    tracing::info!(objects = v.len(), "EndpointSlices listed");
                    slices_listed = true;
                    let before = engine.pending();
                    engine.replace_slices(v);
                    (before..engine.pending()).for_each(|_| metrics.endpoint_changed());
                }
                SourceEvent::Node(n) => {
                    let ctx = context(n.as_deref());
                    engine.set_context(ctx);
                    status.lock().unwrap().node = n;
                }
                SourceEvent::Query(q) => answer(&mut engine, q),
                SourceEvent::Error(e) => {
                    tracing::warn!(error = %e, "source");
                    let mut s = status.lock().unwrap();
                    s.source_errors.push(e);
                    let excess = s.source_errors.len().saturating_sub(50);
                    s.source_errors.drain(..excess);
                }
            }
        }
        if engine.pending() > 0 {
            let mut s = status.lock().unwrap();
            if s.queued_since.is_none() {
                let now = SystemTime::now();
                s.queued_since = Some(now);
                metrics.queued(engine.context().families.iter().copied(), unix_secs(now));
            }
        }
        if !(services_listed && slices_listed) {
            continue;
        }
        let now = Instant::now();
        let sync_started = Instant::now();
        let was_draining = engine.draining() > 0;
        let drain_due = was_draining && now >= last_drain_check + timing.drain_check;
        let stale_due = stale && last_resync.is_none_or(|r| now >= r + stale_wait);
        let retry_due = engine.next_retry().is_some_and(|at| at <= clock());
        let report = if stale_due || last_resync.is_none_or(|r| now >= r + timing.sync_period) {
            stale_wait = if stale_due {
                (stale_wait * 2)
                    .max(Duration::from_secs(1))
                    .min(timing.sync_period)
            } else {
                Duration::ZERO
            };
            // Node addresses change (DHCP, new interfaces): re-read them.
            let node = status.lock().unwrap().node.clone();
            engine.set_context(context(node.as_deref()));
            // The first sync and one after a refusal read the kernel
            // whole; the periodic one reads what changed and a share.
            let whole = stale_due || last_resync.is_none();
            let r = if whole {
                engine.resync(clock())
            } else {
                engine.repair(clock())
            };
            last_resync = Some(now);
            status.lock().unwrap().resyncs += 1;
            tracing::info!(
                whole,
                virtual_servers = r.read_virtual_servers,
                real_servers_of = r.read_real_servers_of,
                read_ipvs_us = r.read_ipvs_micros,
                read_real_servers_us = r.read_real_servers_micros,
                read_nft_us = r.read_firewall_micros,
                nft_unchanged = r.firewall_unchanged,
                write_nft_us = r.firewall_micros,
                compute_us = r.compute_micros,
                apply_us = r.apply_micros,
                services = r.services,
                total_us = u64::try_from(sync_started.elapsed().as_micros()).unwrap_or(u64::MAX),
                "kernel read"
            );
            Some(r)
        } else if drain_due {
            Some(engine.check_drains(clock()))
        } else if (engine.pending() > 0 || retry_due)
            && last_sync.is_none_or(|l| now >= l + timing.min_sync_period)
        {
            Some(engine.sync(clock()))
        } else {
            None
        };
        // Checked now, or the first real server started draining: the next
        // check is one `drain_check` away.
        if drain_due || (!was_draining && engine.draining() > 0) {
            last_drain_check = now;
        }
        if let Some(report) = report {
            last_sync = Some(now);
            stale = report.stale;
            if !stale {
                stale_wait = Duration::ZERO;
            }
            log_report(&report);
            let done = SystemTime::now();
            observe_sync(
                &metrics,
                &engine,
                &report,
                sync_started.elapsed(),
                done,
                &mut triggers,
            );
            let ports = kipvs_engine::local::service_health(engine.local_endpoints());
            let mut s = status.lock().unwrap();
            s.service_health = ports;
            s.nodeport_addresses = engine.context().nodeport_addresses.clone();
            // Every sync: the servers compare cheaply, and a listener that
            // failed to bind (port in use) is retried.
            s.service_health_changed.notify_one();
            s.ready = true;
            s.syncs += 1;
            s.messages += report.messages;
            s.last_sync = Some(SystemTime::now());
            if engine.pending() == 0 {
                s.queued_since = None;
            }
            s.errors = engine.errors().collect();
            s.last_report = report;
            drop(s);
            if last_trim.is_none_or(|t| now >= t + TRIM_EVERY) {
                crate::memory::trim();
                last_trim = Some(Instant::now());
            }
        }
    }
}

/// How often freed heap may be handed back to the kernel: a trim walks
/// every arena (milliseconds at 10k Services), and a sync's garbage is
/// freed by the time it ends.
const TRIM_EVERY: Duration = Duration::from_secs(10);

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Counts a change and keeps an EndpointSlice's trigger time (the
/// `endpoints.kubernetes.io/last-change-trigger-time` annotation) for
/// `kubeproxy_network_programming_duration_seconds`.
fn observe_input(
    metrics: &crate::metrics::Metrics,
    input: &Input,
    triggers: &mut Vec<(Family, SystemTime)>,
) {
    match input {
        Input::ServiceApplied(_) | Input::ServiceDeleted(_) => metrics.service_changed(),
        Input::SliceDeleted(_) => metrics.endpoint_changed(),
        Input::SliceApplied(slice) => {
            metrics.endpoint_changed();
            let family = match slice.address_type.as_str() {
                "IPv4" => Family::V4,
                "IPv6" => Family::V6,
                _ => return,
            };
            let trigger = slice
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(kipvs_engine::labels::LAST_CHANGE_TRIGGER_TIME))
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(SystemTime::from);
            if let Some(t) = trigger {
                triggers.push((family, t));
            }
        }
    }
}

/// Records one sync in the metrics.
fn observe_sync<D: Dataplane>(
    metrics: &crate::metrics::Metrics,
    engine: &Engine<D>,
    report: &SyncReport,
    took: Duration,
    done: SystemTime,
    triggers: &mut Vec<(Family, SystemTime)>,
) {
    use crate::metrics::{SyncErrorKind, TrafficPolicy};
    let families = &engine.context().families;
    metrics.synced(
        families.iter().copied(),
        took.as_secs_f64(),
        unix_secs(done),
        engine.pending() == 0,
    );
    metrics.netlink_messages(report.messages);
    for e in &report.errors {
        metrics.sync_error(SyncErrorKind::of_report_error(e));
    }
    // The changes reached the kernel (a failed one is retried, as in
    // kube-proxy, which observes at the end of every sync).
    for (family, t) in triggers.drain(..) {
        let secs = done.duration_since(t).unwrap_or_default().as_secs_f64();
        metrics.network_programmed(family, secs);
    }
    for f in families {
        let (mut internal, mut external) = (0, 0);
        for l in engine.local_endpoints().values() {
            let none = l.families.contains(f) && l.ready.get(f).copied().unwrap_or(0) == 0;
            internal += i64::from(none && l.internal_local);
            external += i64::from(none && l.external_local);
        }
        metrics.set_no_local_endpoints(TrafficPolicy::Internal, *f, internal);
        metrics.set_no_local_endpoints(TrafficPolicy::External, *f, external);
    }
}

fn log_report(r: &SyncReport) {
    for e in &r.errors {
        tracing::error!(error = %e, "sync");
    }
    if r.changes > 0
        || r.bound > 0
        || r.unbound > 0
        || r.firewall_elements > 0
        || r.conntrack_deleted > 0
    {
        tracing::info!(
            services = r.services,
            changes = r.changes,
            failed = r.failed_changes,
            bound = r.bound,
            unbound = r.unbound,
            messages = r.messages,
            nft_elements = r.firewall_elements,
            nft_replaced = r.firewall_replaced,
            nft_us = r.firewall_micros,
            conntrack_deleted = r.conntrack_deleted,
            "synced"
        );
    } else {
        tracing::debug!(services = r.services, "synced, nothing to change");
    }
}
