//! The real data plane: IPVS through crates/ipvs, kube-ipvs0 through
//! crates/link, kipvs's nftables table through crates/nft, and the
//! conversions between the controller's model and the kernel's types.

use kipvs_engine::controller::{ConntrackCleared, Dataplane, DataplaneError, FirewallWrite};
use kipvs_engine::diff::{Change, ObservedRealServer, ObservedVirtualServer};
use kipvs_engine::model::{Persistence, Protocol, VirtualServer, VirtualServerKey};
use kipvs_ipvs as ipvs;
use kipvs_sched::SchedulerConfig;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// The kernel's service for a desired virtual server: masquerade
/// forwarding, the scheduler and its flags, client-IP persistence with the
/// full netmask (as kube-proxy).
pub fn to_ipvs_service(vs: &VirtualServer) -> ipvs::Service {
    let mut s = ipvs::Service::new(service_key(&vs.key), vs.scheduler.scheduler().name())
        .with_flags(ipvs::ServiceFlags::from_bits(vs.scheduler.flag_bits()));
    if let Some(p) = vs.persistence {
        s = s.persistent(p.timeout_secs);
    }
    s
}

/// The kernel's key of a virtual server.
pub fn service_key(key: &VirtualServerKey) -> ipvs::ServiceKey {
    match key.protocol {
        Protocol::Tcp => ipvs::ServiceKey::tcp(key.address, key.port),
        Protocol::Udp => ipvs::ServiceKey::udp(key.address, key.port),
        Protocol::Sctp => ipvs::ServiceKey::sctp(key.address, key.port),
    }
}

/// The model's key of a kernel service; firewall-mark services have none
/// (kipvs never makes them).
pub fn model_key(key: &ipvs::ServiceKey) -> Option<VirtualServerKey> {
    let ipvs::ServiceKey::Addr {
        protocol,
        addr,
        port,
    } = key
    else {
        return None;
    };
    let protocol = match protocol {
        ipvs::Protocol::Tcp => Protocol::Tcp,
        ipvs::Protocol::Udp => Protocol::Udp,
        ipvs::Protocol::Sctp => Protocol::Sctp,
    };
    Some(VirtualServerKey {
        protocol,
        address: *addr,
        port: *port,
    })
}

/// A kernel table entry as the controller sees it. Settings kipvs never
/// writes (a partial persistence netmask, one-packet scheduling, a
/// persistence engine, a scheduler or flags it would not accept) make the
/// scheduler `None`, so the virtual server is edited back.
pub fn observe(entry: &ipvs::TableEntry) -> Option<ObservedVirtualServer> {
    let mut vs = observe_service(&entry.service)?;
    vs.real_servers = entry.destinations.iter().map(observe_destination).collect();
    vs.counts_fresh = true;
    Some(vs)
}

/// A kernel service alone ([`observe`]): no real servers, no counts.
fn observe_service(entry: &ipvs::ServiceEntry) -> Option<ObservedVirtualServer> {
    let s = &entry.service;
    let key = model_key(&s.key)?;
    let sched_bits = s.flags.bits()
        & (ipvs::ServiceFlags::SCHED1 | ipvs::ServiceFlags::SCHED2 | ipvs::ServiceFlags::SCHED3)
            .bits();
    let other_bits = s.flags.bits() & !sched_bits & !ipvs::ServiceFlags::PERSISTENT.bits();
    let full_mask = s.netmask == s.key.family().full_netmask();
    let plain = other_bits == 0 && s.persistence_engine.is_none() && full_mask;
    let scheduler = if plain {
        SchedulerConfig::from_kernel(&s.scheduler, sched_bits).ok()
    } else {
        None
    };
    let persistence = s
        .flags
        .contains(ipvs::ServiceFlags::PERSISTENT)
        .then_some(Persistence {
            timeout_secs: s.timeout,
        });
    Some(ObservedVirtualServer {
        key,
        scheduler,
        persistence,
        real_servers: BTreeMap::new(),
        counts_fresh: false,
    })
}

/// A kernel destination as the controller sees it; one that does not
/// masquerade is reported with weight `u32::MAX`, so it is edited back.
fn observe_destination(d: &ipvs::DestinationEntry) -> (SocketAddr, ObservedRealServer) {
    let weight = if d.destination.forward == ipvs::Forward::Masquerade {
        d.destination.weight
    } else {
        u32::MAX
    };
    (
        SocketAddr::new(d.destination.addr, d.destination.port),
        ObservedRealServer {
            weight,
            active_conns: d.active_conns,
            inactive_conns: d.inactive_conns,
        },
    )
}

/// The IPVS operation of a change.
pub fn to_op(change: &Change) -> ipvs::Op {
    let dest = |addr: &SocketAddr, weight: u32| {
        ipvs::Destination::new(addr.ip(), addr.port())
            .with_forward(ipvs::Forward::Masquerade)
            .with_weight(weight)
    };
    match change {
        Change::AddVirtualServer(vs) => ipvs::Op::AddService(to_ipvs_service(vs)),
        Change::EditVirtualServer(vs) => ipvs::Op::EditService(to_ipvs_service(vs)),
        Change::DeleteVirtualServer(k) => ipvs::Op::DeleteService(service_key(k)),
        Change::AddRealServer { vs, addr, weight } => ipvs::Op::AddDestination {
            service: service_key(vs),
            destination: dest(addr, *weight),
        },
        Change::EditRealServer { vs, addr, weight } => ipvs::Op::EditDestination {
            service: service_key(vs),
            destination: dest(addr, *weight),
        },
        Change::DeleteRealServer { vs, addr } => ipvs::Op::DeleteDestination {
            service: service_key(vs),
            destination: ipvs::DestinationKey::new(addr.ip(), addr.port()),
        },
    }
}

/// Whether an error means the kernel was not what the mirror said
/// (someone else changed it): the controller then re-reads the kernel.
fn is_stale(e: &ipvs::Error) -> bool {
    matches!(
        e,
        ipvs::Error::ServiceExists(_)
            | ipvs::Error::NoSuchService(_)
            | ipvs::Error::DestinationExists { .. }
            | ipvs::Error::NoSuchDestination { .. }
    )
}

/// Binds and unbinds addresses on the dummy interface.
pub trait Binder {
    fn addresses(&mut self) -> Result<BTreeSet<IpAddr>, kipvs_link::Error>;
    fn bind(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Vec<Result<(), kipvs_link::Error>>;
    /// Netlink messages sent so far.
    fn messages(&self) -> u64;
}

/// kipvs's nftables table: the `nft` binary and the skeleton the
/// configuration asks for, plus an nfnetlink socket for elements.
///
/// Elements go to the kernel over netlink ([`kipvs_nft::netlink`]): at 10k
/// Services the table holds ~130k of them, which `nft` takes long to parse.
/// `nft` writes the skeleton and the interval set (`lb-allowed`), and
/// replaces a table that is not kipvs's current one in one transaction.
#[derive(Debug)]
pub struct Firewall {
    pub nft: kipvs_nft::Nft,
    pub skeleton: kipvs_nft::Skeleton,
    /// Opened at the first element write; dropped after an I/O failure.
    elements: Option<kipvs_nft::netlink::ElementSocket>,
    /// The last read found a table named `inet kipvs` (kipvs's or not).
    table_found: bool,
    /// The ruleset generation after kipvs last read the table, or wrote
    /// elements to it, with nothing else committed in between: while the
    /// kernel still reports it, the table is as kipvs left it.
    generation: Option<u32>,
}

impl Firewall {
    pub fn new(nft: kipvs_nft::Nft, skeleton: kipvs_nft::Skeleton) -> Firewall {
        Firewall {
            nft,
            skeleton,
            elements: None,
            // Unknown until read: assume there is one to replace atomically.
            table_found: true,
            generation: None,
        }
    }

    /// The ruleset's generation now; `None` when it cannot be read.
    fn current_generation(&mut self) -> Option<u32> {
        match self.elements_socket().map(|s| s.generation()) {
            Ok(Ok(g)) => Some(g),
            Ok(Err(e)) | Err(e) => {
                tracing::debug!(error = %e, "reading the nftables generation");
                self.elements = None;
                None
            }
        }
    }

    /// Whether nothing committed an nftables transaction since kipvs last
    /// read the table or wrote elements to it.
    pub fn unchanged(&mut self) -> bool {
        self.generation.is_some() && self.current_generation() == self.generation
    }

    /// The table's elements if it is kipvs's current skeleton; `None` if it
    /// is missing, of another skeleton, or holds what kipvs never writes.
    ///
    /// The skeleton comes from `nft --terse` (no elements), the elements
    /// over netlink, set by set: at 10k Services `nft` took 27 s of the TCG
    /// lab to list the table's 130k elements, and every periodic resync
    /// reads them. The interval set `lb-allowed` is listed by `nft`.
    pub fn read(&mut self) -> Result<Option<BTreeSet<kipvs_nft::Element>>, FirewallError> {
        let before = self.current_generation();
        self.generation = None;
        let read = self.read_whole()?;
        // The read is of one generation only if none came between.
        if read.is_some() && before.is_some() && self.current_generation() == before {
            self.generation = before;
        }
        Ok(read)
    }

    fn read_whole(&mut self) -> Result<Option<BTreeSet<kipvs_nft::Element>>, FirewallError> {
        use kipvs_nft::element::SetKind;
        use kipvs_nft::netlink::NetlinkError;
        let table = match self.nft.read_skeleton()? {
            Some(t) => t,
            None => {
                self.table_found = false;
                return Ok(None);
            }
        };
        self.table_found = true;
        let fingerprint = self.skeleton.fingerprint();
        let all_sets = kipvs_nft::SetName::all().collect::<BTreeSet<_>>();
        if table.comment.as_deref() != Some(fingerprint.as_str())
            || !table.unknown_sets.is_empty()
            || table.sets != all_sets
        {
            tracing::info!(
                found = table.comment.as_deref().unwrap_or(""),
                want = %fingerprint,
                "the nftables table has another skeleton; replacing it"
            );
            return Ok(None);
        }
        let mut elements = BTreeSet::new();
        for set in all_sets {
            let read = if set.kind == SetKind::LbAllowed {
                match self.nft.read_set(set) {
                    Err(kipvs_nft::NftError::Element(e)) => Err(e.to_string()),
                    other => Ok(other?),
                }
            } else {
                match self.elements_socket()?.dump(set) {
                    Ok(v) => Ok(v.into_iter().collect()),
                    Err(e @ NetlinkError::Decode { .. }) => Err(e.to_string()),
                    Err(e) => {
                        self.elements = None;
                        return Err(e.into());
                    }
                }
            };
            match read {
                Ok(v) => elements.extend(v),
                Err(e) => {
                    tracing::warn!(error = %e, "the nftables table is not kipvs's; replacing it");
                    return Ok(None);
                }
            }
        }
        Ok(Some(elements))
    }

    fn elements_socket(
        &mut self,
    ) -> Result<&mut kipvs_nft::netlink::ElementSocket, kipvs_nft::netlink::NetlinkError> {
        if self.elements.is_none() {
            self.elements = Some(kipvs_nft::netlink::ElementSocket::open()?);
        }
        Ok(self.elements.as_mut().expect("opened above"))
    }

    /// One transaction, except for a fresh table: the skeleton (by `nft`)
    /// and then its elements (over netlink), both before any address they
    /// guard is bound, and with no table of kipvs's in place to keep.
    pub fn write(&mut self, write: &FirewallWrite) -> Result<(), FirewallError> {
        use kipvs_nft::netlink::supported;
        // Generations only grow, one per committed transaction: the one
        // before a write plus kipvs's transactions is what the kernel
        // reports after it only if nobody else committed since; otherwise
        // the next resync reads the table. A diff is known to leave the
        // table as the mirror says only if the table was known before it;
        // a whole table is, whatever was there.
        let known = self.generation.take();
        match write {
            FirewallWrite::Update(diff) if diff.add.iter().chain(&diff.delete).all(supported) => {
                self.write_elements(diff)?;
                if let Some(known) = known {
                    self.settle(known, u32::from(!diff.is_empty()));
                }
            }
            FirewallWrite::Update(diff) => {
                self.nft.apply(&kipvs_nft::update_script(diff))?;
                if let Some(known) = known {
                    self.settle(known, 1);
                }
            }
            FirewallWrite::Replace(all) if !self.table_found => {
                let before = self.current_generation();
                let (netlink, nft): (BTreeSet<_>, BTreeSet<_>) =
                    all.iter().cloned().partition(supported);
                self.nft
                    .apply(&kipvs_nft::replace_script(&self.skeleton, &nft))?;
                self.table_found = true;
                let diff = kipvs_nft::ElementDiff {
                    add: netlink,
                    delete: BTreeSet::new(),
                };
                self.write_elements(&diff)?;
                if let Some(before) = before {
                    self.settle(before, 1 + u32::from(!diff.is_empty()));
                }
            }
            FirewallWrite::Replace(all) => {
                let before = self.current_generation();
                self.nft
                    .apply(&kipvs_nft::replace_script(&self.skeleton, all))?;
                if let Some(before) = before {
                    self.settle(before, 1);
                }
            }
        }
        Ok(())
    }

    /// After `ours` transactions of kipvs's since generation `before`:
    /// remembers the generation if nobody else committed in between.
    fn settle(&mut self, before: u32, ours: u32) {
        let expected = before.wrapping_add(ours);
        if self.current_generation() == Some(expected) {
            self.generation = Some(expected);
        }
    }

    fn write_elements(&mut self, diff: &kipvs_nft::ElementDiff) -> Result<(), FirewallError> {
        let r = self.elements_socket()?.apply(diff);
        if let Err(kipvs_nft::netlink::NetlinkError::Socket(_)) = &r {
            self.elements = None;
        }
        Ok(r?)
    }
}

/// Why writing kipvs's nftables table failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(transparent)]
    Nft(#[from] kipvs_nft::NftError),
    #[error("nftables elements: {0}")]
    Netlink(#[from] kipvs_nft::netlink::NetlinkError),
}

/// IPVS plus kube-ipvs0, plus kipvs's nftables table when given one.
pub struct KernelDataplane<B> {
    ipvs: ipvs::Client,
    binder: B,
    messages: u64,
    firewall: Option<Firewall>,
    /// The ctnetlink socket, opened at the first conntrack cleanup.
    conntrack: Option<kipvs_conntrack::Conntrack>,
}

impl<B: Binder> KernelDataplane<B> {
    pub fn new(ipvs: ipvs::Client, binder: B) -> Self {
        KernelDataplane {
            ipvs,
            binder,
            messages: 0,
            firewall: None,
            conntrack: None,
        }
    }

    /// Also keeps kipvs's nftables table.
    pub fn with_firewall(mut self, firewall: Firewall) -> Self {
        self.firewall = Some(firewall);
        self
    }

    /// nft transactions applied so far.
    pub fn firewall_transactions(&self) -> u64 {
        self.firewall.as_ref().map_or(0, |f| f.nft.transactions)
    }

    pub fn ipvs(&mut self) -> &mut ipvs::Client {
        &mut self.ipvs
    }
}

fn ipvs_results(results: Vec<Result<(), ipvs::Error>>) -> Vec<Result<(), DataplaneError>> {
    results
        .into_iter()
        .map(|r| {
            r.map_err(|e| match is_stale(&e) {
                true => DataplaneError::stale(e),
                false => DataplaneError::new(e),
            })
        })
        .collect()
}

fn bind_results(results: Vec<Result<(), kipvs_link::Error>>) -> Vec<Result<(), DataplaneError>> {
    results
        .into_iter()
        .map(|r| r.map_err(DataplaneError::new))
        .collect()
}

/// Below this many addresses or IPVS changes, binding and applying run one
/// after the other: a thread costs more than it saves.
const CONCURRENT_AT: usize = 256;

impl<B: Binder + Send> Dataplane for KernelDataplane<B> {
    fn read_virtual_servers(&mut self) -> Result<Vec<ObservedVirtualServer>, DataplaneError> {
        let table = self.ipvs.dump_all().map_err(DataplaneError::new)?;
        self.messages += 1 + table.len() as u64;
        Ok(table.iter().filter_map(observe).collect())
    }

    fn list_virtual_servers(&mut self) -> Result<Vec<ObservedVirtualServer>, DataplaneError> {
        let services = self.ipvs.services().map_err(DataplaneError::new)?;
        self.messages += 1;
        Ok(services.iter().filter_map(observe_service).collect())
    }

    fn read_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        self.binder.addresses().map_err(DataplaneError::new)
    }

    fn read_real_servers_of(
        &mut self,
        keys: &[VirtualServerKey],
    ) -> Result<Vec<BTreeMap<SocketAddr, ObservedRealServer>>, DataplaneError> {
        let keys: Vec<ipvs::ServiceKey> = keys.iter().map(service_key).collect();
        let dests = self
            .ipvs
            .destinations_of(&keys)
            .map_err(DataplaneError::new)?;
        self.messages += keys.len() as u64;
        Ok(dests
            .iter()
            .map(|d| d.iter().map(observe_destination).collect())
            .collect())
    }

    fn read_real_servers(
        &mut self,
        key: &VirtualServerKey,
    ) -> Result<BTreeMap<SocketAddr, ObservedRealServer>, DataplaneError> {
        let dests = self
            .ipvs
            .destinations(&service_key(key))
            .map_err(DataplaneError::new)?;
        self.messages += 1;
        Ok(dests.iter().map(observe_destination).collect())
    }

    fn apply(&mut self, changes: &[Change]) -> Vec<Result<(), DataplaneError>> {
        let ops: Vec<ipvs::Op> = changes.iter().map(to_op).collect();
        self.messages += ops.len() as u64;
        ipvs_results(self.ipvs.apply(&ops))
    }

    fn bind(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Vec<Result<(), DataplaneError>> {
        bind_results(self.binder.bind(add, remove))
    }

    fn messages_sent(&self) -> u64 {
        self.messages + self.binder.messages()
    }

    fn read_firewall(&mut self) -> Result<Option<BTreeSet<kipvs_nft::Element>>, DataplaneError> {
        match &mut self.firewall {
            None => Ok(Some(BTreeSet::new())),
            Some(f) => f.read().map_err(DataplaneError::new),
        }
    }

    fn write_firewall(&mut self, write: &FirewallWrite) -> Result<(), DataplaneError> {
        match &mut self.firewall {
            None => Ok(()),
            Some(f) => f.write(write).map_err(DataplaneError::new),
        }
    }

    fn firewall_unchanged(&mut self) -> bool {
        self.firewall.as_mut().is_some_and(Firewall::unchanged)
    }

    /// One dump per family the filters name, then one pipelined delete per
    /// matching entry (ctnetlink's messages are not counted in
    /// [`Dataplane::messages_sent`], which counts IPVS and kube-ipvs0's).
    fn clear_conntrack(
        &mut self,
        filters: &[kipvs_conntrack::Filter],
    ) -> Result<ConntrackCleared, DataplaneError> {
        let ct = match &mut self.conntrack {
            Some(ct) => ct,
            None => self
                .conntrack
                .insert(kipvs_conntrack::Conntrack::open().map_err(DataplaneError::new)?),
        };
        match ct.clear(filters) {
            Ok(c) => Ok(ConntrackCleared {
                deleted: c.deleted,
                errors: c.errors.iter().map(|(_, e)| e.to_string()).collect(),
            }),
            Err(e) => {
                // A fresh socket next time (the dump may have left replies).
                self.conntrack = None;
                Err(DataplaneError::new(e))
            }
        }
    }

    /// Large batches (a start on a big cluster) bind addresses on one
    /// thread while IPVS changes go out on this one: both are mostly
    /// kernel time, on different netlink sockets.
    fn bind_and_apply(
        &mut self,
        add: &[IpAddr],
        changes: &[Change],
    ) -> (
        Vec<Result<(), DataplaneError>>,
        Vec<Result<(), DataplaneError>>,
    ) {
        if add.len() < CONCURRENT_AT || changes.len() < CONCURRENT_AT {
            return (self.bind(add, &[]), self.apply(changes));
        }
        let ops: Vec<ipvs::Op> = changes.iter().map(to_op).collect();
        self.messages += ops.len() as u64;
        let (binder, ipvs) = (&mut self.binder, &mut self.ipvs);
        std::thread::scope(|s| {
            let bound = s.spawn(move || binder.bind(add, &[]));
            let applied = ipvs_results(ipvs.apply(&ops));
            let bound = bound.join().expect("binding does not panic");
            (bind_results(bound), applied)
        })
    }
}

/// Every local address with its interface: the dummy's by its name, the
/// others as `ifN` (only the dummy's name matters to the desired state).
pub fn local_addresses(
    links: &mut kipvs_link::Links,
    dummy: &str,
) -> Result<Vec<(String, IpAddr)>, kipvs_link::Error> {
    let dummy_index = links.find(dummy)?.map(|(i, _)| i);
    Ok(links
        .all_addresses()?
        .into_iter()
        .map(|(i, a)| {
            (
                if Some(i) == dummy_index {
                    dummy.to_owned()
                } else {
                    format!("if{i}")
                },
                a,
            )
        })
        .collect())
}

/// kube-ipvs0 through crates/link.
pub struct LinkBinder {
    links: kipvs_link::Links,
    name: String,
    index: u32,
}

impl LinkBinder {
    /// Ensures the dummy link exists and binds through it.
    pub fn ensure(name: &str) -> Result<LinkBinder, kipvs_link::Error> {
        let mut links = kipvs_link::Links::open()?;
        let state = links.ensure_dummy(name)?;
        if state.created {
            tracing::info!(link = name, "created the dummy interface");
        }
        Ok(LinkBinder {
            links,
            name: name.to_owned(),
            index: state.index,
        })
    }

    /// The dummy link's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Every local address with its interface (see [`local_addresses`]).
    pub fn local_addresses(&mut self) -> Result<Vec<(String, IpAddr)>, kipvs_link::Error> {
        local_addresses(&mut self.links, &self.name)
    }
}

impl Binder for LinkBinder {
    fn addresses(&mut self) -> Result<BTreeSet<IpAddr>, kipvs_link::Error> {
        self.links.addresses(self.index)
    }

    fn bind(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Vec<Result<(), kipvs_link::Error>> {
        self.links.change(&self.name, self.index, add, remove)
    }

    fn messages(&self) -> u64 {
        self.links.messages()
    }
}
