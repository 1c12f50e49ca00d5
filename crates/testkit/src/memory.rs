//! An in-memory [`Dataplane`]: the engine's host tests run against it, and
//! it records what the engine asked for (IPVS changes, bound addresses,
//! nftables writes, conntrack cleanups, messages). Faults are switches:
//! refused keys, failing nftables writes, failing conntrack cleanups.

use kipvs_conntrack::Filter;
use kipvs_engine::controller::{ConntrackCleared, Dataplane, DataplaneError, FirewallWrite};
use kipvs_engine::diff::{self, Change, ObservedVirtualServer};
use kipvs_engine::model::VirtualServerKey;
use kipvs_nft::Element;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// What the in-memory data plane refuses, as the kernel crates' errors
/// would say it.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// A change to a refused key.
    #[error("refused {0}")]
    Refused(VirtualServerKey),
    /// `fw_fails` is set.
    #[error("nftables: Operation not supported")]
    Firewall,
    /// A deleted element the table does not have.
    #[error("no element {0}")]
    NoElement(String),
    /// `conntrack_fails` is set.
    #[error("ctnetlink socket: permission denied")]
    Conntrack,
}

/// An in-memory data plane: a table that records every call.
#[derive(Debug, Default)]
pub struct MemoryDataplane {
    pub table: BTreeMap<VirtualServerKey, ObservedVirtualServer>,
    pub bound: BTreeSet<IpAddr>,
    pub messages: u64,
    /// Changes the "kernel" refuses (by key), to test error isolation.
    pub refuse: BTreeSet<VirtualServerKey>,
    pub log: Vec<Change>,
    /// The nftables table's elements (`None`: no table of kipvs's).
    pub fw: Option<BTreeSet<Element>>,
    pub fw_writes: Vec<FirewallWrite>,
    /// Conntrack cleanups: how many IPVS changes had been applied, the
    /// filters.
    pub conntrack: Vec<(usize, Vec<Filter>)>,
    /// Conntrack cleanups fail.
    pub conntrack_fails: bool,
    /// nftables writes fail.
    pub fw_fails: bool,
    /// The ruleset generation: bumped by every write, and by a test that
    /// changes `fw` behind the engine's back.
    pub fw_generation: u64,
    /// The generation the engine last read or wrote at.
    pub fw_seen: Option<u64>,
    /// Whole-table reads.
    pub fw_reads: usize,
    /// Reads of one virtual server's real servers.
    pub real_server_reads: usize,
}

impl Dataplane for MemoryDataplane {
    fn read_virtual_servers(&mut self) -> Result<Vec<ObservedVirtualServer>, DataplaneError> {
        self.messages += 1 + self.table.len() as u64;
        Ok(self.table.values().cloned().collect())
    }
    fn list_virtual_servers(&mut self) -> Result<Vec<ObservedVirtualServer>, DataplaneError> {
        self.messages += 1;
        Ok(self
            .table
            .values()
            .map(|vs| ObservedVirtualServer {
                real_servers: BTreeMap::new(),
                counts_fresh: false,
                ..vs.clone()
            })
            .collect())
    }
    fn read_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        self.messages += 1;
        Ok(self.bound.clone())
    }
    fn read_real_servers(
        &mut self,
        key: &VirtualServerKey,
    ) -> Result<BTreeMap<std::net::SocketAddr, diff::ObservedRealServer>, DataplaneError> {
        self.messages += 1;
        self.real_server_reads += 1;
        Ok(self
            .table
            .get(key)
            .map(|v| v.real_servers.clone())
            .unwrap_or_default())
    }

    fn apply(&mut self, changes: &[Change]) -> Vec<Result<(), DataplaneError>> {
        changes
            .iter()
            .map(|c| {
                self.messages += 1;
                let key = match c {
                    Change::AddVirtualServer(v) | Change::EditVirtualServer(v) => v.key,
                    Change::DeleteVirtualServer(k) => *k,
                    Change::AddRealServer { vs, .. }
                    | Change::EditRealServer { vs, .. }
                    | Change::DeleteRealServer { vs, .. } => *vs,
                };
                if self.refuse.contains(&key) {
                    return Err(DataplaneError::new(Fault::Refused(key)));
                }
                self.log.push(c.clone());
                diff::apply_one(&mut self.table, c);
                Ok(())
            })
            .collect()
    }
    fn bind(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Vec<Result<(), DataplaneError>> {
        self.messages += (add.len() + remove.len()) as u64;
        self.bound.extend(add);
        remove.iter().for_each(|a| {
            self.bound.remove(a);
        });
        add.iter().chain(remove).map(|_| Ok(())).collect()
    }
    fn messages_sent(&self) -> u64 {
        self.messages
    }
    fn read_firewall(&mut self) -> Result<Option<BTreeSet<Element>>, DataplaneError> {
        self.fw_reads += 1;
        self.fw_seen = Some(self.fw_generation);
        Ok(self.fw.clone())
    }
    fn firewall_unchanged(&mut self) -> bool {
        self.fw_seen == Some(self.fw_generation)
    }
    fn write_firewall(&mut self, write: &FirewallWrite) -> Result<(), DataplaneError> {
        if self.fw_fails {
            return Err(DataplaneError::new(Fault::Firewall));
        }
        match write {
            FirewallWrite::Replace(all) => self.fw = Some(all.clone()),
            FirewallWrite::Update(d) => {
                let table = self.fw.as_mut().expect("an update needs a table");
                for e in &d.delete {
                    if !table.remove(e) {
                        return Err(DataplaneError::new(Fault::NoElement(e.render())));
                    }
                }
                table.extend(d.add.iter().cloned());
            }
        }
        self.fw_writes.push(write.clone());
        self.fw_generation += 1;
        // A diff leaves a known table known; a whole table is known.
        if self.fw_seen.is_some() || matches!(write, FirewallWrite::Replace(_)) {
            self.fw_seen = Some(self.fw_generation);
        }
        Ok(())
    }
    fn clear_conntrack(&mut self, filters: &[Filter]) -> Result<ConntrackCleared, DataplaneError> {
        if self.conntrack_fails {
            return Err(DataplaneError::new(Fault::Conntrack));
        }
        self.conntrack.push((self.log.len(), filters.to_vec()));
        Ok(ConntrackCleared {
            deleted: filters.len(),
            errors: vec![],
        })
    }
}
