//! The sync engine: it holds the inputs (Services, EndpointSlices, the
//! Node), a mirror of what the kernel holds for kipvs, and turns input
//! changes into the smallest set of kernel changes.
//!
//! - An input change marks its Service dirty; [`Engine::sync`] recomputes only
//!   dirty Services ([`crate::desired::service_state`]), diffs them against
//!   the mirror ([`crate::diff::diff`]) and applies the difference through
//!   the [`Dataplane`] in one batch. The mirror is updated with what the
//!   kernel accepted, so a failed change is retried at the next sync.
//! - [`Engine::resync`] reads the kernel afresh, replaces the mirror with what
//!   kipvs owns there and compares every virtual server, address and table
//!   element with the desired state: it repairs drift (a virtual server
//!   deleted by hand) and writes nothing when nothing differs. It
//!   recomputes only the Services a sync would (dirty or due), plus those
//!   in error. [`Engine::repair`], the periodic one, reads less: the
//!   virtual server list, and the real servers of one share of them in
//!   rotation ([`REPAIR_ROTATION`]).
//! - A Service whose new version is invalid keeps its last good state, and
//!   its error is reported; every other Service proceeds.
//!
//! - The same sync keeps kipvs's nftables table ([`kipvs_nft`]) in step:
//!   each recomputed Service's table elements
//!   ([`crate::desired::firewall::service_elements`]) are compared with its
//!   last ones, and only elements no Service needs any more, or newly
//!   needed, are written, in one transaction before any address is bound
//!   (the masquerade rules are in place before a VIP answers). A resync
//!   reads the table back unless the ruleset generation is the one kipvs
//!   left: kipvs's current skeleton is adopted and its elements repaired,
//!   anything else is replaced whole, atomically.
//!
//! The engine is synchronous; the agent drives it from one thread and feeds
//! it from the async watchers.

use crate::desired::{self, Context, ServiceError};
use crate::diff::{self, Change, DiffConfig, Draining, ObservedVirtualServer};
use crate::model::*;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kipvs_conntrack::Filter;
use kipvs_nft::{Element, ElementDiff};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

/// The least socket address (`0.0.0.0:0`), to range over one virtual
/// server's entries in a map keyed by (virtual server, address).
const MIN_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// A periodic [`Engine::repair`] reads the real servers of this share of
/// kipvs's virtual servers (one in ten), the next share each time: every
/// real server is compared with the kernel at least once in this many
/// repairs.
pub const REPAIR_ROTATION: usize = 10;

/// What a sync compares with the kernel's mirror besides what the
/// Services it recomputes touch.
#[derive(Debug)]
enum Compare {
    /// Nothing more: an incremental sync.
    Touched,
    /// Every virtual server, address and element: the kernel was just read
    /// whole.
    All,
    /// These virtual servers (read afresh, or found different by a repair)
    /// and desired ones the kernel lacks, every address, and every element
    /// if the table was read.
    Repair {
        virtual_servers: BTreeSet<VirtualServerKey>,
        elements: bool,
    },
}

/// Which connection counts a sync reads from the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counts {
    /// None: the mirror's counts are stale.
    Stale,
    /// Those of virtual servers with a draining real server.
    ReadDraining,
    /// As each mirror entry says: the kernel (or a share of its real
    /// servers) was just read.
    Read,
}

/// What the engine needs of the kernel. The real one is IPVS plus
/// kube-ipvs0 (`kipvs_proxy::kernel`).
pub trait Dataplane {
    /// Every virtual server in the kernel, with real servers and their
    /// connection counts (the engine decides which are kipvs's).
    fn read_virtual_servers(&mut self) -> Result<Vec<ObservedVirtualServer>, DataplaneError>;
    /// Every virtual server in the kernel without its real servers (one
    /// dump): `real_servers` empty and `counts_fresh` false.
    fn list_virtual_servers(&mut self) -> Result<Vec<ObservedVirtualServer>, DataplaneError>;
    /// The addresses bound on kube-ipvs0.
    fn read_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError>;
    /// The real servers of one virtual server with their current connection
    /// counts (one dump), for deciding how a removed one drains.
    fn read_real_servers(
        &mut self,
        key: &VirtualServerKey,
    ) -> Result<BTreeMap<std::net::SocketAddr, diff::ObservedRealServer>, DataplaneError>;
    /// [`read_real_servers`](Dataplane::read_real_servers) of each key, in
    /// order; the first failure fails all.
    #[allow(clippy::type_complexity)]
    fn read_real_servers_of(
        &mut self,
        keys: &[VirtualServerKey],
    ) -> Result<Vec<BTreeMap<std::net::SocketAddr, diff::ObservedRealServer>>, DataplaneError> {
        keys.iter().map(|k| self.read_real_servers(k)).collect()
    }
    /// Applies IPVS changes as one batch; one result per change, in order.
    fn apply(&mut self, changes: &[Change]) -> Vec<Result<(), DataplaneError>>;
    /// Binds and unbinds addresses on kube-ipvs0; one result per address.
    fn bind(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Vec<Result<(), DataplaneError>>;
    /// Netlink messages sent so far (for the per-sync count).
    fn messages_sent(&self) -> u64;
    /// Binds `add` and applies `changes`: independent kernel work, which a
    /// data plane may do at the same time (both results in order).
    #[allow(clippy::type_complexity)]
    fn bind_and_apply(
        &mut self,
        add: &[IpAddr],
        changes: &[Change],
    ) -> (
        Vec<Result<(), DataplaneError>>,
        Vec<Result<(), DataplaneError>>,
    ) {
        (self.bind(add, &[]), self.apply(changes))
    }
    /// The elements of kipvs's nftables table, or `None` when there is no
    /// table or it is not kipvs's current skeleton (it is then replaced).
    fn read_firewall(&mut self) -> Result<Option<BTreeSet<Element>>, DataplaneError> {
        Ok(None)
    }
    /// Writes kipvs's nftables table, as one transaction.
    fn write_firewall(&mut self, write: &FirewallWrite) -> Result<(), DataplaneError> {
        let _ = write;
        Ok(())
    }
    /// Whether the table certainly holds what the last
    /// [`read_firewall`](Dataplane::read_firewall) found plus the
    /// [`write_firewall`](Dataplane::write_firewall)s since, because nothing
    /// else changed the ruleset (a resync then skips reading it). `false`
    /// when unsure.
    fn firewall_unchanged(&mut self) -> bool {
        false
    }
    /// Deletes the conntrack entries any filter matches
    /// ([`crate::conntrack::stale_flows`]), after the IPVS changes that
    /// made them stale.
    fn clear_conntrack(&mut self, filters: &[Filter]) -> Result<ConntrackCleared, DataplaneError> {
        let _ = filters;
        Ok(ConntrackCleared::default())
    }
}

/// What one conntrack cleanup did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConntrackCleared {
    /// Entries deleted (or already gone).
    pub deleted: usize,
    /// Deletes the kernel refused, each naming its flow.
    pub errors: Vec<String>,
}

/// One write of kipvs's nftables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallWrite {
    /// The whole table with these elements, replacing what is there.
    Replace(BTreeSet<Element>),
    /// Only these elements change.
    Update(ElementDiff),
}

impl FirewallWrite {
    /// Elements written.
    pub fn len(&self) -> usize {
        match self {
            FirewallWrite::Replace(all) => all.len(),
            FirewallWrite::Update(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A data-plane failure. The concrete error (crates/ipvs's, crates/link's,
/// the firewall's, conntrack's, or a test data plane's) is kept whole: it
/// names the object and keeps the kernel's reason, and
/// [`downcast_ref`](DataplaneError::downcast_ref) gives it back. Display
/// and `source()` are the concrete error's own.
#[derive(Debug, Clone)]
pub struct DataplaneError {
    error: Arc<dyn std::error::Error + Send + Sync + 'static>,
    /// The kernel was not what the mirror said (someone else changed it):
    /// the kernel should be re-read before the next sync.
    pub stale: bool,
}

impl DataplaneError {
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        DataplaneError {
            error: Arc::new(error),
            stale: false,
        }
    }

    /// A failure that shows the mirror is out of date.
    pub fn stale(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        DataplaneError {
            stale: true,
            ..DataplaneError::new(error)
        }
    }

    /// The concrete error, if it is a `T`.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        self.error.downcast_ref()
    }
}

impl std::fmt::Display for DataplaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for DataplaneError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

/// Which virtual servers are kipvs's.
///
/// kipvs records every virtual server it programs in its own nftables table
/// (the `owned-v4`/`owned-v6` sets, [`kipvs_nft::Element::Owned`]), written
/// before the virtual server is made and removed after it is deleted, so
/// the record survives restarts with no file on disk. With a record, kipvs
/// owns exactly what it names: an externalIP that is a node address, a
/// NodePort outside 30000–32767, a VIP inside `excludeCIDRs`, and never a
/// virtual server someone else made at an address kipvs also uses.
///
/// Without one (no table of kipvs's current skeleton: the first start on a
/// node, or a node kube-proxy ran on) the address rule adopts: virtual
/// servers on an address bound on kube-ipvs0, plus NodePort-shaped ones (a
/// node address and a port in the NodePort range), never any inside
/// `exclude`. The first sync then writes the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub nodeport_addresses: BTreeSet<IpAddr>,
    pub nodeport_range: std::ops::RangeInclusive<u16>,
    /// `excludeCIDRs` (host bits ignored).
    pub exclude: Vec<IpNet>,
}

impl Ownership {
    /// Whether kipvs owns `key`, given the addresses on kube-ipvs0 and the
    /// ownership record when there is one.
    pub fn owns(
        &self,
        key: &VirtualServerKey,
        bound: &BTreeSet<IpAddr>,
        record: Option<&BTreeSet<VirtualServerKey>>,
    ) -> bool {
        if let Some(record) = record {
            return record.contains(key);
        }
        if self.exclude.iter().any(|net| net.contains(&key.address)) {
            return false;
        }
        bound.contains(&key.address)
            || (self.nodeport_addresses.contains(&key.address)
                && self.nodeport_range.contains(&key.port))
    }
}

/// A Service whose kernel changes were refused, retried with exponential
/// backoff (1 s doubling to [`MAX_RETRY_SECS`]) instead of at every sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Consecutive failed attempts.
    pub attempts: u32,
    /// When to try again, in seconds of the engine's clock.
    pub at_secs: u64,
    /// The last refusal, naming the object and keeping the kernel's reason.
    pub error: String,
}

/// The longest wait between two attempts at a refused Service (5 min).
pub const MAX_RETRY_SECS: u64 = 300;

impl Retry {
    /// The wait after `attempts` failures: 1, 2, 4 … seconds, at most
    /// [`MAX_RETRY_SECS`].
    pub fn delay_secs(attempts: u32) -> u64 {
        1u64.checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u64::MAX)
            .min(MAX_RETRY_SECS)
    }
}

/// [`Engine::explain`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentExplanation {
    #[serde(flatten)]
    pub explanation: desired::explain::Explanation,
    /// Real servers kept with weight 0 until their connections end.
    pub draining: Vec<DrainingRealServer>,
    /// The Service's current sync error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl std::fmt::Display for AgentExplanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.explanation)?;
        for d in &self.draining {
            let n = |c: Option<u32>| c.map_or("?".to_owned(), |c| c.to_string());
            writeln!(
                f,
                "  draining {} -> {}: weight 0 until its connections end \
                 ({} active, {} inactive now)",
                d.virtual_server,
                d.real_server,
                n(d.active_conns),
                n(d.inactive_conns)
            )?;
        }
        if let Some(e) = &self.error {
            writeln!(f, "  error: {e}")?;
        }
        Ok(())
    }
}

/// A real server draining (weight 0) in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DrainingRealServer {
    pub virtual_server: String,
    pub real_server: String,
    /// Connection counts, read for the answer (`None`: the read failed).
    pub active_conns: Option<u32>,
    pub inactive_conns: Option<u32>,
    /// When draining started, in seconds of the agent's clock.
    pub draining_since_secs: u64,
}

/// An input change.
#[derive(Debug, Clone)]
pub enum Input {
    ServiceApplied(Box<Service>),
    ServiceDeleted(ObjectRef),
    SliceApplied(Box<EndpointSlice>),
    SliceDeleted(ObjectRef),
}

/// What one sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Services recomputed.
    pub services: usize,
    /// IPVS changes sent, and how many the kernel refused.
    pub changes: usize,
    pub failed_changes: usize,
    /// Addresses bound and unbound on kube-ipvs0.
    pub bound: usize,
    pub unbound: usize,
    /// Netlink messages this sync sent.
    pub messages: u64,
    /// Errors of this sync, each naming its object.
    pub errors: Vec<String>,
    /// The kernel differed from the mirror: re-read it ([`Engine::resync`]).
    pub stale: bool,
    /// nftables elements written (all of them when the table was replaced).
    pub firewall_elements: usize,
    /// The nftables table was written whole.
    pub firewall_replaced: bool,
    /// Time spent writing the nftables table, in microseconds.
    pub firewall_micros: u64,
    /// Time recomputing the dirty Services, and binding addresses with
    /// applying the IPVS changes, in microseconds.
    pub compute_micros: u64,
    pub apply_micros: u64,
    /// A resync found the ruleset unchanged since kipvs last read or wrote
    /// it, and did not read the table back.
    pub firewall_unchanged: bool,
    /// A resync's time reading the nftables table (or only its generation)
    /// and the IPVS table with the node's addresses, in microseconds.
    pub read_firewall_micros: u64,
    pub read_ipvs_micros: u64,
    /// Virtual servers a resync read from the kernel (kipvs's or not), and
    /// how many of them a repair read the real servers of.
    pub read_virtual_servers: usize,
    pub read_real_servers_of: usize,
    /// Of `read_ipvs_micros`, a repair's time reading its share of real
    /// servers.
    pub read_real_servers_micros: u64,
    /// Stale UDP conntrack entries deleted, and the cleanups or deletes that
    /// failed (each also in `errors`, naming its Services).
    pub conntrack_deleted: usize,
    pub conntrack_errors: usize,
}

/// The engine. See the module docs.
pub struct Engine<D> {
    dataplane: D,
    ctx: Context,
    ownership: Ownership,
    diff_cfg: DiffConfig,
    inputs: Inputs,
    applied: Applied,
    mirror: Mirror,
    pending: Pending,
}

/// The cluster as the sources gave it.
#[derive(Default)]
struct Inputs {
    services: BTreeMap<ObjectRef, Service>,
    slices: BTreeMap<ObjectRef, Slice>,
    /// The one copy of each node, zone and port name the slices hold.
    names: crate::slim::Names,
    /// The slices of each Service.
    slices_of: BTreeMap<ObjectRef, BTreeSet<ObjectRef>>,
}

/// What the engine last applied per Service, and the counts derived from
/// it, so a sync looks only at what the Services it recomputed touch.
#[derive(Default)]
struct Applied {
    /// The last state applied per Service.
    states: BTreeMap<ObjectRef, ServiceState>,
    /// Which Service each desired virtual server belongs to.
    owner_of: BTreeMap<VirtualServerKey, ObjectRef>,
    /// How many applied Services need each address on kube-ipvs0.
    address_users: BTreeMap<IpAddr, usize>,
    /// The nftables elements each applied Service needs.
    fw_of: BTreeMap<ObjectRef, BTreeSet<Element>>,
    /// How many Services need each element.
    fw_users: BTreeMap<Element, usize>,
    /// Services with a `Local` traffic policy: their local endpoints.
    local: BTreeMap<ObjectRef, crate::local::LocalEndpoints>,
}

/// What the kernel holds of kipvs's, as last read or written.
#[derive(Default)]
struct Mirror {
    /// kipvs's virtual servers.
    kernel: BTreeMap<VirtualServerKey, ObservedVirtualServer>,
    /// kube-ipvs0's addresses.
    bound: BTreeSet<IpAddr>,
    /// The nftables table's elements; `None`: write it whole at the next
    /// sync.
    fw_kernel: Option<BTreeSet<Element>>,
    /// Where the next repair's share of real servers starts
    /// ([`REPAIR_ROTATION`]); `None`: at the first virtual server.
    repair_from: Option<VirtualServerKey>,
}

/// Work not done yet.
struct Pending {
    /// Services whose inputs changed since their last sync.
    dirty: BTreeSet<ObjectRef>,
    /// Invalid Services, each with its error.
    errors: BTreeMap<ObjectRef, ServiceError>,
    /// Services the kernel refused, waiting for their next attempt.
    retries: BTreeMap<ObjectRef, Retry>,
    /// Real servers at weight 0 until their connections end.
    draining: Draining,
}

impl<D: Dataplane> Engine<D> {
    pub fn new(dataplane: D, ctx: Context, ownership: Ownership, diff_cfg: DiffConfig) -> Self {
        Engine {
            dataplane,
            ctx,
            ownership,
            diff_cfg,
            inputs: Inputs::default(),
            applied: Applied::default(),
            mirror: Mirror::default(),
            pending: Pending {
                dirty: BTreeSet::new(),
                errors: BTreeMap::new(),
                retries: BTreeMap::new(),
                draining: Draining::new(),
            },
        }
    }

    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    pub fn dataplane_mut(&mut self) -> &mut D {
        &mut self.dataplane
    }

    /// The node facts and configuration in use.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The current errors, one per Service at most: an invalid Service,
    /// or the kernel's refusal of a Service waiting for its retry.
    pub fn errors(&self) -> impl Iterator<Item = String> + '_ {
        let refused = self
            .pending
            .retries
            .iter()
            .filter(|(id, _)| !self.pending.errors.contains_key(*id))
            .map(|(_, r)| r.error.clone());
        self.pending
            .errors
            .values()
            .map(|e| e.to_string())
            .chain(refused)
    }

    /// The Services the kernel refused, with their next attempt.
    pub fn retries(&self) -> &BTreeMap<ObjectRef, Retry> {
        &self.pending.retries
    }

    /// When the earliest refused Service is due for its next attempt, in
    /// seconds of the engine's clock.
    pub fn next_retry(&self) -> Option<u64> {
        self.pending.retries.values().map(|r| r.at_secs).min()
    }

    /// The EndpointSlices of a Service.
    fn slices_of_service(&self, id: &ObjectRef) -> Vec<&Slice> {
        self.inputs
            .slices_of
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|s| self.inputs.slices.get(s))
            .collect()
    }

    /// Every virtual server kipvs programs, with the Service port it serves
    /// (for `kipvs list`).
    pub fn owners(&self) -> impl Iterator<Item = (&VirtualServerKey, &ServicePortRef)> {
        self.applied
            .states
            .values()
            .flat_map(|s| s.virtual_servers.iter().map(|(k, (_, owner))| (k, owner)))
    }

    /// The number of the Service port an owner names (`port` in the
    /// Service's spec), if the Service is still known.
    pub fn service_port_number(&self, owner: &ServicePortRef) -> Option<u16> {
        let svc = self.inputs.services.get(&owner.service)?;
        svc.spec
            .as_ref()?
            .ports
            .as_ref()?
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == owner.port_name)
            .and_then(|p| u16::try_from(p.port).ok())
    }

    /// Why each endpoint of a Service is or is not a real server, and which
    /// of its real servers are draining in the kernel with their connection
    /// counts, read now (one dump per virtual server with a draining real
    /// server; for `kipvs explain`). `None` if the Service is unknown.
    pub fn explain(&mut self, id: &ObjectRef) -> Option<AgentExplanation> {
        let svc = self.inputs.services.get(id)?;
        let slices = self.slices_of_service(id);
        let explanation = desired::explain::explain(svc, &slices, &self.ctx);
        let mine: Vec<((VirtualServerKey, SocketAddr), u64)> = self
            .pending
            .draining
            .iter()
            .filter(|((k, _), _)| self.applied.owner_of.get(k) == Some(id))
            .map(|(k, since)| (*k, *since))
            .collect();
        let mut fresh = BTreeMap::new();
        for ((k, _), _) in &mine {
            if !fresh.contains_key(k) {
                let read = self.dataplane.read_real_servers(k).ok();
                fresh.insert(*k, read);
            }
        }
        let draining = mine
            .iter()
            .map(|((k, addr), since)| {
                let rs = fresh
                    .get(k)
                    .and_then(Option::as_ref)
                    .and_then(|m| m.get(addr));
                DrainingRealServer {
                    virtual_server: k.to_string(),
                    real_server: addr.to_string(),
                    active_conns: rs.map(|r| r.active_conns),
                    inactive_conns: rs.map(|r| r.inactive_conns),
                    draining_since_secs: *since,
                }
            })
            .collect();
        Some(AgentExplanation {
            explanation,
            draining,
            error: self
                .pending
                .errors
                .get(id)
                .map(|e| e.to_string())
                .or_else(|| {
                    self.pending.retries.get(id).map(|r| {
                        format!(
                            "{} (attempt {}; retried at {}s of the agent's clock)",
                            r.error, r.attempts, r.at_secs
                        )
                    })
                }),
        })
    }

    /// The Services with a `Local` traffic policy and their local
    /// endpoints, as of the last sync (health-check ports, metrics).
    pub fn local_endpoints(&self) -> &BTreeMap<ObjectRef, crate::local::LocalEndpoints> {
        &self.applied.local
    }

    /// Which Service owns a virtual server (for `list` and `explain`).
    pub fn owner(&self, key: &VirtualServerKey) -> Option<&ServicePortRef> {
        let svc = self.applied.owner_of.get(key)?;
        self.applied
            .states
            .get(svc)?
            .virtual_servers
            .get(key)
            .map(|(_, o)| o)
    }

    /// Every applied virtual server with its owner.
    pub fn applied(
        &self,
    ) -> impl Iterator<Item = (&VirtualServerKey, &(VirtualServer, ServicePortRef))> {
        self.applied
            .states
            .values()
            .flat_map(|s| s.virtual_servers.iter())
    }

    /// Whether there is work for [`Engine::sync`].
    pub fn has_pending(&self) -> bool {
        !self.pending.dirty.is_empty() || !self.pending.draining.is_empty()
    }

    /// Services waiting for a sync.
    pub fn pending(&self) -> usize {
        self.pending.dirty.len()
    }

    /// Real servers draining (weight 0), for [`Engine::check_drains`].
    pub fn draining(&self) -> usize {
        self.pending.draining.len()
    }

    /// Replaces every Service (a list or relist, or manifests re-read):
    /// only Services that changed become dirty, so a relist flaps nothing.
    pub fn replace_services(&mut self, services: Vec<Service>) {
        let new: BTreeMap<ObjectRef, Service> = services
            .into_iter()
            .map(crate::slim::service)
            .map(|s| (desired::service_ref(&s), s))
            .collect();
        for id in self.inputs.services.keys().chain(new.keys()) {
            if self.inputs.services.get(id) != new.get(id) {
                self.pending.dirty.insert(id.clone());
                // A changed Service is tried at once, refused before or not.
                self.pending.retries.remove(id);
            }
        }
        self.inputs.services = new;
    }

    /// Replaces every EndpointSlice; the Services of changed slices become dirty.
    pub fn replace_slices(&mut self, slices: Vec<EndpointSlice>) {
        let names = &mut self.inputs.names;
        let new: BTreeMap<ObjectRef, Slice> = slices
            .into_iter()
            .map(|s| (slice_ref(&s), crate::slim::slice(s, names)))
            .collect();
        for id in self.inputs.slices.keys().chain(new.keys()) {
            if self.inputs.slices.get(id) != new.get(id) {
                let old = self.inputs.slices.get(id).and_then(|s| s.service.clone());
                let now = new.get(id).and_then(|s| s.service.clone());
                self.pending.dirty.extend(old.into_iter().chain(now));
            }
        }
        self.inputs.slices = new;
        self.inputs.names.prune();
        self.inputs.slices_of.clear();
        for (id, s) in &self.inputs.slices {
            if let Some(svc) = &s.service {
                self.inputs
                    .slices_of
                    .entry(svc.clone())
                    .or_default()
                    .insert(id.clone());
            }
        }
    }

    /// Takes one input change.
    pub fn input(&mut self, input: Input) {
        match input {
            Input::ServiceApplied(svc) => {
                let svc = crate::slim::service(*svc);
                let id = desired::service_ref(&svc);
                if self.inputs.services.get(&id) != Some(&svc) {
                    self.inputs.services.insert(id.clone(), svc);
                    // A changed Service is tried at once, refused before or not.
                    self.pending.retries.remove(&id);
                    self.pending.dirty.insert(id);
                }
            }
            Input::ServiceDeleted(id) => {
                if self.inputs.services.remove(&id).is_some() {
                    self.pending.retries.remove(&id);
                    self.pending.dirty.insert(id);
                }
            }
            Input::SliceApplied(slice) => {
                let id = slice_ref(&slice);
                let slice = crate::slim::slice(*slice, &mut self.inputs.names);
                if self.inputs.slices.get(&id) == Some(&slice) {
                    return;
                }
                self.forget_slice(&id);
                if let Some(svc) = slice.service.clone() {
                    self.inputs
                        .slices_of
                        .entry(svc.clone())
                        .or_default()
                        .insert(id.clone());
                    self.pending.dirty.insert(svc);
                }
                self.inputs.slices.insert(id, slice);
            }
            Input::SliceDeleted(id) => {
                self.forget_slice(&id);
                self.inputs.slices.remove(&id);
            }
        }
    }

    fn forget_slice(&mut self, id: &ObjectRef) {
        if let Some(svc) = self.inputs.slices.get(id).and_then(|s| s.service.clone()) {
            if let Some(set) = self.inputs.slices_of.get_mut(&svc) {
                set.remove(id);
            }
            self.pending.dirty.insert(svc);
        }
    }

    /// Takes new node facts or configuration; if they differ, every Service
    /// is recomputed.
    pub fn set_context(&mut self, ctx: Context) {
        if self.ctx != ctx {
            self.ownership.nodeport_addresses = ctx.nodeport_addresses.iter().copied().collect();
            self.ctx = ctx;
            // Every Service: those the sources have and those last applied
            // (a deleted one's state must be removed too).
            let all = self
                .inputs
                .services
                .keys()
                .chain(self.applied.states.keys());
            self.pending.dirty.extend(all.cloned());
        }
    }

    /// Reads the kernel afresh and compares all of kipvs's state with it:
    /// the start-up adoption, and the repair after the kernel refused a
    /// change. Writes only what differs.
    pub fn resync(&mut self, now_secs: u64) -> SyncReport {
        self.read_and_sync(now_secs, false)
    }

    /// The periodic repair: [`Engine::resync`] reading less. The nftables
    /// table is read only if the ruleset changed since kipvs last read or
    /// wrote it, the virtual servers and addresses always (one dump each),
    /// and the real servers of one share of the virtual servers
    /// ([`REPAIR_ROTATION`]) plus those of any virtual server new to the
    /// mirror. A virtual server, address or element changed by hand is
    /// repaired at once, a real server within [`REPAIR_ROTATION`] repairs:
    /// the kernel has no cheaper signal for either, and reading every real
    /// server costs one dump per virtual server.
    pub fn repair(&mut self, now_secs: u64) -> SyncReport {
        self.read_and_sync(now_secs, true)
    }

    fn read_and_sync(&mut self, now_secs: u64, share: bool) -> SyncReport {
        // Names of nodes and zones no slice holds any more (a slice applied
        // alone does not prune them; a relist does).
        self.inputs.names.prune();
        let started = std::time::Instant::now();
        // The table first: it holds the ownership record. Unless nothing
        // changed the ruleset since the mirror was last right.
        let mut report = SyncReport {
            firewall_unchanged: self.mirror.fw_kernel.is_some()
                && self.dataplane.firewall_unchanged(),
            ..SyncReport::default()
        };
        if !report.firewall_unchanged {
            self.mirror.fw_kernel = match self.dataplane.read_firewall() {
                Ok(t) => t,
                Err(e) => {
                    report
                        .errors
                        .push(format!("reading the nftables table: {e}"));
                    None
                }
            };
        }
        report.read_firewall_micros = micros_since(started);
        let started = std::time::Instant::now();
        let compare = match self.read_kernel(share, &mut report) {
            Ok(compare) => compare,
            Err(e) => {
                report.errors.push(format!("reading the kernel: {e}"));
                return report;
            }
        };
        report.read_ipvs_micros = micros_since(started);
        // Every virtual server, address and element is compared with the
        // kernel (`Compare::All`), or what a repair read (`Compare::Repair`),
        // but a Service's desired state is a pure function of inputs that
        // the sources mark dirty when they change: only those, and the
        // Services in error (a conflict may be gone), are recomputed.
        let in_error: Vec<ObjectRef> = self.pending.errors.keys().cloned().collect();
        self.pending.dirty.extend(in_error);
        let mut r = self.sync_with(now_secs, Counts::Read, compare);
        report.errors.append(&mut r.errors);
        SyncReport {
            errors: report.errors,
            firewall_unchanged: report.firewall_unchanged,
            read_firewall_micros: report.read_firewall_micros,
            read_ipvs_micros: report.read_ipvs_micros,
            read_virtual_servers: report.read_virtual_servers,
            read_real_servers_of: report.read_real_servers_of,
            read_real_servers_micros: report.read_real_servers_micros,
            ..r
        }
    }

    /// Reads the addresses and kipvs's virtual servers into the mirror:
    /// all real servers, or a repair's share ([`Engine::read_share`]).
    fn read_kernel(
        &mut self,
        share: bool,
        report: &mut SyncReport,
    ) -> Result<Compare, DataplaneError> {
        let bound = self.dataplane.read_addresses()?;
        let read = if share {
            self.dataplane.list_virtual_servers()?
        } else {
            self.dataplane.read_virtual_servers()?
        };
        report.read_virtual_servers = read.len();
        let record = self
            .mirror
            .fw_kernel
            .as_ref()
            .map(desired::firewall::recorded);
        let kernel: BTreeMap<VirtualServerKey, ObservedVirtualServer> = read
            .into_iter()
            .filter(|vs| self.ownership.owns(&vs.key, &bound, record.as_ref()))
            .map(|vs| (vs.key, vs))
            .collect();
        if !share {
            report.read_real_servers_of = report.read_virtual_servers;
            self.mirror.bound = bound;
            self.mirror.kernel = kernel;
            return Ok(Compare::All);
        }
        let started = std::time::Instant::now();
        let (kernel, read, differs) = self.read_share(kernel)?;
        report.read_real_servers_micros = micros_since(started);
        report.read_real_servers_of = read;
        self.mirror.bound = bound;
        self.mirror.kernel = kernel;
        Ok(Compare::Repair {
            virtual_servers: differs,
            elements: !report.firewall_unchanged,
        })
    }

    /// A repair's view of the kernel from its list of kipvs's virtual
    /// servers (`listed`, without real servers): the real servers of the
    /// next share and of virtual servers new to the mirror read afresh,
    /// the others' carried from the mirror (their counts stale). With it,
    /// the virtual servers to compare: those read afresh, those whose
    /// settings differ from the mirror, and those gone from the kernel.
    #[allow(clippy::type_complexity)]
    fn read_share(
        &mut self,
        mut listed: BTreeMap<VirtualServerKey, ObservedVirtualServer>,
    ) -> Result<
        (
            BTreeMap<VirtualServerKey, ObservedVirtualServer>,
            usize,
            BTreeSet<VirtualServerKey>,
        ),
        DataplaneError,
    > {
        let share = listed.len().div_ceil(REPAIR_ROTATION);
        let rotation: Vec<VirtualServerKey> = match self.mirror.repair_from {
            Some(from) => listed
                .range(from..)
                .chain(listed.range(..from))
                .take(share)
                .map(|(k, _)| *k)
                .collect(),
            None => listed.keys().take(share).copied().collect(),
        };
        self.mirror.repair_from = rotation.last().and_then(|last| {
            listed
                .range((std::ops::Bound::Excluded(*last), std::ops::Bound::Unbounded))
                .next()
                .map(|(k, _)| *k)
        });
        let mut read: BTreeSet<VirtualServerKey> = rotation.into_iter().collect();
        read.extend(
            listed
                .keys()
                .filter(|k| !self.mirror.kernel.contains_key(k)),
        );
        let keys: Vec<VirtualServerKey> = read.iter().copied().collect();
        let fresh = self.dataplane.read_real_servers_of(&keys)?;
        for (key, real_servers) in keys.iter().zip(fresh) {
            if let Some(vs) = listed.get_mut(key) {
                vs.real_servers = real_servers;
                vs.counts_fresh = true;
            }
        }
        let mut before = std::mem::take(&mut self.mirror.kernel);
        let mut differs = read;
        for (key, vs) in listed.iter_mut() {
            let Some(old) = before.remove(key) else {
                continue;
            };
            if vs.scheduler != old.scheduler || vs.persistence != old.persistence {
                differs.insert(*key);
            }
            if !vs.counts_fresh {
                vs.real_servers = old.real_servers;
            }
        }
        // Gone from the kernel.
        differs.extend(before.into_keys());
        Ok((listed, keys.len(), differs))
    }

    /// Applies what changed since the last sync, reading nothing: a real
    /// server that leaves gets weight 0 (for schedulers that drain) and
    /// waits for [`Engine::check_drains`]. One changed endpoint costs one
    /// or two netlink messages.
    pub fn sync(&mut self, now_secs: u64) -> SyncReport {
        self.sync_with(now_secs, Counts::Stale, Compare::Touched)
    }

    /// [`Engine::sync`], and also reads the connection counts of every
    /// virtual server with a draining real server (one dump each), deleting
    /// those that are idle or past the drain timeout.
    pub fn check_drains(&mut self, now_secs: u64) -> SyncReport {
        self.sync_with(now_secs, Counts::ReadDraining, Compare::Touched)
    }

    fn sync_with(&mut self, now_secs: u64, counts: Counts, compare: Compare) -> SyncReport {
        let messages_before = self.dataplane.messages_sent();
        let mut report = SyncReport::default();
        // Refused Services wait for their attempt (an input change to the
        // Service itself clears the wait); due ones are tried now.
        let deferred: BTreeSet<ObjectRef> = self
            .pending
            .retries
            .iter()
            .filter(|(_, r)| r.at_secs > now_secs)
            .map(|(id, _)| id.clone())
            .collect();
        let due = self
            .pending
            .retries
            .keys()
            .filter(|id| !deferred.contains(*id));
        let dirty: Vec<ObjectRef> = std::mem::take(&mut self.pending.dirty)
            .into_iter()
            .chain(due.cloned())
            .filter(|id| !deferred.contains(id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        report.services = dirty.len();

        // 1. Recompute the dirty Services (pure).
        let started = std::time::Instant::now();
        let mut keys: BTreeSet<VirtualServerKey> = BTreeSet::new();
        let mut touched_addresses: BTreeSet<IpAddr> = BTreeSet::new();
        let mut touched_elements: BTreeSet<Element> = BTreeSet::new();
        // Stale UDP conntrack entries, per Service, cleared after the IPVS
        // changes.
        let mut stale_flows: Vec<(ObjectRef, Vec<Filter>)> = Vec::new();
        for id in &dirty {
            if let Some(old) = self.applied.states.get(id) {
                keys.extend(old.virtual_servers.keys().copied());
            }
            let local = self.inputs.services.get(id).and_then(|svc| {
                crate::local::local_endpoints(svc, &self.slices_of_service(id), &self.ctx)
            });
            match local {
                Some(l) => self.applied.local.insert(id.clone(), l),
                None => self.applied.local.remove(id),
            };
            let new = match self.inputs.services.get(id) {
                None => ServiceState::default(),
                Some(svc) => {
                    let slices = self.slices_of_service(id);
                    match desired::service_state(svc, &slices, &self.ctx)
                        .and_then(|s| self.check_conflicts(id, s))
                    {
                        Ok(s) => {
                            self.pending.errors.remove(id);
                            s
                        }
                        Err(e) => {
                            report.errors.push(e.to_string());
                            self.pending.errors.insert(id.clone(), e);
                            // Keep the last good state of this Service.
                            continue;
                        }
                    }
                }
            };
            let new_fw = match self.inputs.services.get(id) {
                Some(svc) => desired::firewall::service_elements(svc, &new, &self.ctx),
                None => BTreeSet::new(),
            };
            let old_fw = self.applied.fw_of.remove(id).unwrap_or_default();
            for e in old_fw.difference(&new_fw) {
                if let Some(n) = self.applied.fw_users.get_mut(e) {
                    *n -= 1;
                    if *n == 0 {
                        self.applied.fw_users.remove(e);
                    }
                }
                touched_elements.insert(e.clone());
            }
            for e in new_fw.difference(&old_fw) {
                *self.applied.fw_users.entry(e.clone()).or_default() += 1;
                touched_elements.insert(e.clone());
            }
            if !new_fw.is_empty() {
                self.applied.fw_of.insert(id.clone(), new_fw);
            }
            keys.extend(new.virtual_servers.keys().copied());
            for k in self
                .applied
                .states
                .get(id)
                .into_iter()
                .flat_map(|s| s.virtual_servers.keys())
            {
                if self.applied.owner_of.get(k) == Some(id) {
                    self.applied.owner_of.remove(k);
                }
            }
            for k in new.virtual_servers.keys() {
                self.applied.owner_of.insert(*k, id.clone());
            }
            let old_addresses = self.applied.states.get(id).map(|s| &s.addresses);
            for a in old_addresses.into_iter().flatten() {
                if let Some(n) = self.applied.address_users.get_mut(a) {
                    *n -= 1;
                    if *n == 0 {
                        self.applied.address_users.remove(a);
                    }
                }
                touched_addresses.insert(*a);
            }
            for a in &new.addresses {
                *self.applied.address_users.entry(*a).or_default() += 1;
                touched_addresses.insert(*a);
            }
            let filters = crate::conntrack::stale_flows(
                self.applied
                    .states
                    .get(id)
                    .unwrap_or(&ServiceState::default()),
                &new,
            );
            if !filters.is_empty() {
                stale_flows.push((id.clone(), filters));
            }
            if new.virtual_servers.is_empty() && new.addresses.is_empty() {
                self.applied.states.remove(id);
            } else {
                self.applied.states.insert(id.clone(), new);
            }
        }
        // Draining real servers are re-examined at every sync.
        keys.extend(self.pending.draining.keys().map(|(k, _)| *k));
        match &compare {
            Compare::Touched => {}
            Compare::All => {
                keys.extend(self.mirror.kernel.keys().copied());
                keys.extend(self.applied.owner_of.keys().copied());
            }
            Compare::Repair {
                virtual_servers, ..
            } => {
                keys.extend(virtual_servers);
                let kernel = &self.mirror.kernel;
                keys.extend(
                    self.applied
                        .owner_of
                        .keys()
                        .filter(|k| !kernel.contains_key(k)),
                );
            }
        }
        // A deferred Service's virtual servers wait with it.
        keys.retain(|k| {
            self.applied
                .owner_of
                .get(k)
                .is_none_or(|o| !deferred.contains(o))
        });

        report.compute_micros = micros_since(started);
        // 2. Diff the touched virtual servers against the kernel's mirror.
        let want: BTreeMap<VirtualServerKey, VirtualServer> = keys
            .iter()
            .filter_map(|k| {
                let svc = self.applied.owner_of.get(k)?;
                let (vs, _) = self.applied.states.get(svc)?.virtual_servers.get(k)?;
                Some((*k, vs.clone()))
            })
            .collect();
        let mut have: BTreeMap<VirtualServerKey, ObservedVirtualServer> = keys
            .iter()
            .filter_map(|k| self.mirror.kernel.get(k).map(|v| (*k, v.clone())))
            .collect();
        // The mirror's connection counts are from the last full read: stale
        // unless read again here. Draining real servers are re-read on a
        // drain check; a real server just leaving starts with weight 0.
        if counts != Counts::Read {
            for (key, vs) in have.iter_mut() {
                vs.counts_fresh = false;
                let draining = self.pending.draining.range((*key, MIN_ADDR)..).next();
                if counts != Counts::ReadDraining || draining.is_none_or(|((k, _), _)| k != key) {
                    continue;
                }
                match self.dataplane.read_real_servers(key) {
                    Ok(rs) => {
                        vs.real_servers = rs.clone();
                        vs.counts_fresh = true;
                        if let Some(m) = self.mirror.kernel.get_mut(key) {
                            m.real_servers = rs;
                        }
                    }
                    Err(e) => report
                        .errors
                        .push(format!("reading real servers of {key}: {e}")),
                }
            }
        }
        let draining: Draining = self
            .pending
            .draining
            .iter()
            .filter(|((k, _), _)| keys.contains(k))
            .map(|(k, v)| (*k, *v))
            .collect();
        let (changes, still_draining) =
            diff::diff(&have, &want, &draining, now_secs, self.diff_cfg);
        self.pending.draining.retain(|(k, _), _| !keys.contains(k));
        self.pending.draining.extend(still_draining);

        // 3. The nftables table (the ownership record and the filters),
        // before any new virtual server exists or new address answers. When
        // it cannot be written, nothing new is made (closed, not open):
        // what is in place stays, new virtual servers and addresses wait
        // for their Service's retry.
        let mut changes = changes;
        let mut add_allowed = true;
        // Services whose changes the kernel refused (or held back), with
        // the error: each waits for a retry.
        let mut refused: BTreeMap<ObjectRef, String> = BTreeMap::new();
        let all_elements = match compare {
            Compare::Touched => false,
            Compare::All => true,
            Compare::Repair { elements, .. } => elements,
        };
        if let Err(e) = self.write_firewall(all_elements, &touched_elements, &mut report) {
            add_allowed = false;
            let kernel = &self.mirror.kernel;
            let (held, kept): (Vec<Change>, Vec<Change>) =
                changes.into_iter().partition(|c| match c {
                    Change::AddVirtualServer(_) => true,
                    Change::AddRealServer { vs, .. } => !kernel.contains_key(vs),
                    _ => false,
                });
            changes = kept;
            let held_by: BTreeSet<ObjectRef> = held
                .iter()
                .filter_map(|c| self.applied.owner_of.get(&change_key(c)).cloned())
                .collect();
            for id in held_by {
                let error = format!(
                    "Service {id}: new virtual servers held back until the nftables table \
                     is written ({e})"
                );
                report.errors.push(error.clone());
                refused.insert(id, error);
            }
        }

        // 4. Bind new addresses, apply, then unbind old ones.
        // A resync or repair compares every address (they were just read);
        // an incremental sync only those of the Services it recomputed.
        let candidates: BTreeSet<IpAddr> = if !matches!(compare, Compare::Touched) {
            self.applied
                .address_users
                .keys()
                .chain(&self.mirror.bound)
                .copied()
                .collect()
        } else {
            touched_addresses
        };
        let wanted = |a: &IpAddr| self.applied.address_users.contains_key(a);
        let add: Vec<IpAddr> = candidates
            .iter()
            .filter(|a| add_allowed && wanted(a) && !self.mirror.bound.contains(a))
            .copied()
            .collect();
        let remove: Vec<IpAddr> = candidates
            .iter()
            .filter(|a| !wanted(a) && self.mirror.bound.contains(a))
            .copied()
            .collect();
        let started = std::time::Instant::now();
        let (bound, applied) = self.dataplane.bind_and_apply(&add, &changes);
        report.apply_micros = micros_since(started);
        if !add.is_empty() {
            for (addr, r) in add.iter().zip(bound) {
                match r {
                    Ok(()) => {
                        self.mirror.bound.insert(*addr);
                        report.bound += 1;
                    }
                    Err(e) => report
                        .errors
                        .push(format!("binding {addr} on kube-ipvs0: {e}")),
                }
            }
        }
        let mut deleted: BTreeSet<Element> = BTreeSet::new();
        if !changes.is_empty() {
            report.changes = changes.len();
            for (change, r) in changes.iter().zip(applied) {
                match r {
                    Ok(()) => {
                        diff::apply_one(&mut self.mirror.kernel, change);
                        if let Change::DeleteVirtualServer(k) = change {
                            deleted.insert(desired::firewall::owned(k));
                        }
                    }
                    Err(e) => {
                        report.failed_changes += 1;
                        report.stale |= e.stale;
                        // Its owner waits for a retry (one error per
                        // Service and attempt, never a loop).
                        match self.applied.owner_of.get(&change_key(change)) {
                            Some(svc) => {
                                let error = format!("Service {svc}: {e}");
                                report.errors.push(error.clone());
                                refused.entry(svc.clone()).or_insert(error);
                            }
                            None => report.errors.push(e.to_string()),
                        }
                    }
                }
            }
        }
        for id in &dirty {
            if !refused.contains_key(id) && !self.pending.errors.contains_key(id) {
                self.pending.retries.remove(id);
            }
        }
        for (id, error) in refused {
            self.refused(&id, error, now_secs);
        }
        // The record of a deleted virtual server goes after it.
        if !deleted.is_empty() && self.mirror.fw_kernel.is_some() {
            let _ = self.write_firewall(false, &deleted, &mut report);
        }
        if !remove.is_empty() {
            for (addr, r) in remove.iter().zip(self.dataplane.bind(&[], &remove)) {
                match r {
                    Ok(()) => {
                        self.mirror.bound.remove(addr);
                        report.unbound += 1;
                    }
                    Err(e) => report
                        .errors
                        .push(format!("unbinding {addr} from kube-ipvs0: {e}")),
                }
            }
        }
        report.messages = self.dataplane.messages_sent() - messages_before;
        // 5. UDP conntrack entries the changes left stale (never fatal).
        self.clear_conntrack(&stale_flows, &mut report);
        report
    }

    /// Deletes the stale UDP conntrack entries of the Services just
    /// recomputed, in one cleanup; a failure is reported naming them (the
    /// agent logs and counts report errors).
    fn clear_conntrack(&mut self, stale: &[(ObjectRef, Vec<Filter>)], report: &mut SyncReport) {
        if stale.is_empty() {
            return;
        }
        let filters: Vec<Filter> = stale.iter().flat_map(|(_, f)| f.iter().copied()).collect();
        let services = || {
            stale
                .iter()
                .map(|(id, _)| id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.dataplane.clear_conntrack(&filters) {
            Ok(cleared) => {
                report.conntrack_deleted += cleared.deleted;
                if !cleared.errors.is_empty() {
                    report.conntrack_errors += cleared.errors.len();
                    let e = format!(
                        "clearing stale UDP conntrack entries of {}: {}",
                        services(),
                        cleared.errors.join("; ")
                    );
                    report.errors.push(e);
                }
                if cleared.deleted > 0 {
                    tracing::debug!(
                        deleted = cleared.deleted,
                        services = %services(),
                        "cleared stale UDP conntrack entries"
                    );
                }
            }
            Err(e) => {
                report.conntrack_errors += 1;
                let e = format!(
                    "clearing stale UDP conntrack entries of {}: {e}",
                    services()
                );
                report.errors.push(e);
            }
        }
    }

    /// Whether the table should hold `e`: a Service needs it, or it is the
    /// ownership record of a virtual server the kernel still holds for
    /// kipvs (removed only after the virtual server).
    fn wants_element(&self, e: &Element) -> bool {
        self.applied.fw_users.contains_key(e)
            || desired::firewall::owned_key(e).is_some_and(|k| self.mirror.kernel.contains_key(&k))
    }

    /// Records a refusal of a Service's kernel changes: its next attempt
    /// waits 1 s, then 2 s, 4 s … up to [`MAX_RETRY_SECS`].
    fn refused(&mut self, id: &ObjectRef, error: String, now_secs: u64) {
        let attempts = self.pending.retries.get(id).map_or(0, |r| r.attempts) + 1;
        let at_secs = now_secs.saturating_add(Retry::delay_secs(attempts));
        tracing::warn!(service = %id, attempts, retry_in_secs = at_secs - now_secs,
            error = %error, "the kernel refused a Service's changes; retrying later");
        self.pending.retries.insert(
            id.clone(),
            Retry {
                attempts,
                at_secs,
                error,
            },
        );
    }

    /// Writes what the table lacks or has too much of, among the elements
    /// just touched (all of them on a full sync), or the whole table when
    /// it is not known to be kipvs's. The error is also in the report.
    fn write_firewall(
        &mut self,
        full: bool,
        touched: &BTreeSet<Element>,
        report: &mut SyncReport,
    ) -> Result<(), DataplaneError> {
        let write = match &self.mirror.fw_kernel {
            None => {
                let mut all: BTreeSet<Element> = self.applied.fw_users.keys().cloned().collect();
                all.extend(self.mirror.kernel.keys().map(desired::firewall::owned));
                FirewallWrite::Replace(all)
            }
            Some(have) => {
                let mut diff = ElementDiff::default();
                let mut look = |e: &Element| match (self.wants_element(e), have.contains(e)) {
                    (true, false) => {
                        diff.add.insert(e.clone());
                    }
                    (false, true) => {
                        diff.delete.insert(e.clone());
                    }
                    _ => {}
                };
                if full {
                    let owned: Vec<Element> = self
                        .mirror
                        .kernel
                        .keys()
                        .map(desired::firewall::owned)
                        .collect();
                    have.iter()
                        .chain(self.applied.fw_users.keys())
                        .chain(&owned)
                        .for_each(&mut look);
                } else {
                    touched.iter().for_each(&mut look);
                }
                if diff.is_empty() {
                    return Ok(());
                }
                FirewallWrite::Update(diff)
            }
        };
        let started = std::time::Instant::now();
        let written = self.dataplane.write_firewall(&write);
        report.firewall_micros += u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        match written {
            Ok(()) => {
                report.firewall_elements += write.len();
                match write {
                    FirewallWrite::Replace(all) => {
                        report.firewall_replaced = true;
                        self.mirror.fw_kernel = Some(all);
                    }
                    FirewallWrite::Update(d) => {
                        if let Some(have) = &mut self.mirror.fw_kernel {
                            d.apply_to(have);
                        }
                    }
                }
                Ok(())
            }
            Err(e) => {
                report
                    .errors
                    .push(format!("writing the nftables table: {e}"));
                // Not knowing what the table holds, write it whole next time.
                self.mirror.fw_kernel = None;
                Err(e)
            }
        }
    }

    /// The nftables elements kipvs wants (for tests and inspection).
    pub fn firewall_elements(&self) -> impl Iterator<Item = &Element> {
        self.applied.fw_users.keys()
    }

    /// A Service may not claim a virtual server another Service has.
    fn check_conflicts(
        &self,
        id: &ObjectRef,
        s: ServiceState,
    ) -> Result<ServiceState, ServiceError> {
        for key in s.virtual_servers.keys() {
            if let Some(other) = self.applied.owner_of.get(key).filter(|o| *o != id) {
                return Err(ServiceError {
                    service: id.clone(),
                    field: "spec".into(),
                    reason: format!("virtual server {key} is already served for Service {other}"),
                });
            }
        }
        Ok(s)
    }
}

fn micros_since(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn change_key(c: &Change) -> VirtualServerKey {
    match c {
        Change::AddVirtualServer(vs) | Change::EditVirtualServer(vs) => vs.key,
        Change::DeleteVirtualServer(k) => *k,
        Change::AddRealServer { vs, .. }
        | Change::EditRealServer { vs, .. }
        | Change::DeleteRealServer { vs, .. } => *vs,
    }
}

/// `namespace/name` of an EndpointSlice.
pub fn slice_ref(s: &EndpointSlice) -> ObjectRef {
    ObjectRef::new(
        s.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        s.metadata.name.clone().unwrap_or_default(),
    )
}
