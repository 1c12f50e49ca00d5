//! The dummy-interface manager.
//!
//! IPVS only sees traffic to addresses the node treats as local, so every
//! virtual-server address (ClusterIP, externalIP, LoadBalancer IP) is bound
//! as a host address (/32, /128) on a dummy interface, `kube-ipvs0`, as
//! kube-proxy's IPVS mode does. This crate:
//!
//! - ensures that interface exists ([`Links::ensure_dummy`]), created as
//!   kube-proxy leaves it (a dummy link, down, NOARP) and never touches a
//!   link of that name that is not a dummy ([`Error::NotDummy`]);
//! - keeps its address set equal to a desired set ([`Links::sync`]): one
//!   address dump, then one pipelined message per address added or removed
//!   and nothing else; IPv6 addresses get `IFA_F_NODAD` so they are usable
//!   at once. The decision is the pure [`diff`];
//! - removes the interface for `--cleanup` ([`Links::remove_dummy`]), again
//!   only if it is a dummy;
//! - applies the node sysctls IPVS service proxying needs ([`sysctl`]).
//!
//! It is blocking, like crates/ipvs: the controller's sync engine runs on a
//! thread of its own and pipelines address changes in the same batch as its
//! IPVS changes. That is why it encodes rtnetlink with
//! `netlink-packet-route` over kipvs's blocking transport (`kipvs-netlink`)
//! rather than through the async `rtnetlink` crate.

mod netlink;
pub mod sysctl;

use netlink::Conn;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// The interface kube-proxy's IPVS mode binds service addresses on.
pub const DEFAULT_DUMMY: &str = "kube-ipvs0";

/// What went wrong, naming the link or address.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A link of that name exists and is not a dummy: kipvs will not touch it.
    #[error(
        "link {name} exists but is not a dummy interface (kind {kind}); kipvs will not use or change it"
    )]
    NotDummy { name: String, kind: String },
    /// No link of that name.
    #[error("no link named {0}")]
    NoSuchLink(String),
    /// rtnetlink needs CAP_NET_ADMIN for changes.
    #[error("{what}: permission denied (kipvs needs CAP_NET_ADMIN)")]
    PermissionDenied { what: String },
    /// Creating the dummy link failed (no `dummy` module?).
    #[error("creating dummy link {name}: {source}")]
    Create {
        name: String,
        source: kipvs_netlink::Error,
    },
    /// Adding or removing an address failed.
    #[error("{verb} address {addr} on {link}: {source}")]
    Address {
        verb: &'static str,
        addr: IpAddr,
        link: String,
        source: kipvs_netlink::Error,
    },
    /// Any other netlink failure.
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: kipvs_netlink::Error,
    },
}

fn io_error(what: impl Into<String>, source: kipvs_netlink::Error) -> Error {
    let what = what.into();
    if source.errno() == Some(libc::EPERM) {
        Error::PermissionDenied { what }
    } else {
        Error::Io { what, source }
    }
}

/// The addresses to add and remove to go from `current` to `desired`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddrDiff {
    pub add: Vec<IpAddr>,
    pub remove: Vec<IpAddr>,
}

/// The pure decision behind [`Links::sync`].
pub fn diff(current: &BTreeSet<IpAddr>, desired: &BTreeSet<IpAddr>) -> AddrDiff {
    AddrDiff {
        add: desired.difference(current).copied().collect(),
        remove: current.difference(desired).copied().collect(),
    }
}

/// What a [`Links::sync`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
    /// Netlink requests sent, the dump included.
    pub messages: u64,
}

/// A link as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    /// Whether [`Links::ensure_dummy`] created it just now.
    pub created: bool,
}

/// An rtnetlink connection for links and addresses.
pub struct Links {
    conn: Conn,
}

impl Links {
    /// Opens an rtnetlink socket.
    pub fn open() -> Result<Links, Error> {
        Ok(Links {
            conn: Conn::open().map_err(|e| io_error("opening an rtnetlink socket", e))?,
        })
    }

    /// Netlink requests sent so far.
    pub fn messages(&self) -> u64 {
        self.conn.messages()
    }

    /// The index and kind of a link, if it exists.
    pub fn find(&mut self, name: &str) -> Result<Option<(u32, Option<InfoKind>)>, Error> {
        let mut req = LinkMessage::default();
        req.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = match self.conn.get(RouteNetlinkMessage::GetLink(req)) {
            Ok(r) => r,
            Err(e) if e.errno() == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(io_error(format!("looking up link {name}"), e)),
        };
        Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some((l.header.index, link_kind(&l))),
            _ => None,
        }))
    }

    /// Creates the dummy link `name` if absent (down, NOARP, as kube-proxy
    /// leaves it); refuses a non-dummy link of that name.
    pub fn ensure_dummy(&mut self, name: &str) -> Result<LinkState, Error> {
        if let Some((index, kind)) = self.find(name)? {
            return match kind {
                Some(InfoKind::Dummy) => Ok(LinkState {
                    index,
                    created: false,
                }),
                other => Err(Error::NotDummy {
                    name: name.to_owned(),
                    kind: kind_name(other.as_ref()),
                }),
            };
        }
        let mut req = LinkMessage::default();
        req.header.flags = LinkFlags::Noarp;
        req.header.change_mask = LinkFlags::Noarp;
        req.attributes.push(LinkAttribute::IfName(name.to_owned()));
        req.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Dummy,
            )]));
        let r = self.conn.batch(
            vec![RouteNetlinkMessage::NewLink(req)],
            NLM_F_CREATE | NLM_F_EXCL,
        );
        match r.into_iter().next().expect("one result") {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EPERM) => {
                return Err(Error::PermissionDenied {
                    what: format!("creating dummy link {name}"),
                });
            }
            Err(e) => {
                return Err(Error::Create {
                    name: name.to_owned(),
                    source: e,
                });
            }
        }
        let (index, _) = self
            .find(name)?
            .ok_or_else(|| Error::NoSuchLink(name.to_owned()))?;
        Ok(LinkState {
            index,
            created: true,
        })
    }

    /// Deletes the dummy link `name` (for `--cleanup`); absent is fine, a
    /// non-dummy is refused. Returns whether it existed.
    pub fn remove_dummy(&mut self, name: &str) -> Result<bool, Error> {
        let Some((index, kind)) = self.find(name)? else {
            return Ok(false);
        };
        if kind != Some(InfoKind::Dummy) {
            return Err(Error::NotDummy {
                name: name.to_owned(),
                kind: kind_name(kind.as_ref()),
            });
        }
        let mut req = LinkMessage::default();
        req.header.index = index;
        let r = self.conn.batch(vec![RouteNetlinkMessage::DelLink(req)], 0);
        r.into_iter()
            .next()
            .expect("one result")
            .map_err(|e| io_error(format!("deleting link {name}"), e))?;
        Ok(true)
    }

    /// The addresses bound on a link (one dump).
    pub fn addresses(&mut self, index: u32) -> Result<BTreeSet<IpAddr>, Error> {
        let replies = self
            .conn
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .map_err(|e| io_error("dumping addresses", e))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => address_of(&a),
                _ => None,
            })
            .collect())
    }

    /// Every address of every link: (link index, address).
    pub fn all_addresses(&mut self) -> Result<Vec<(u32, IpAddr)>, Error> {
        let replies = self
            .conn
            .dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))
            .map_err(|e| io_error("dumping addresses", e))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => address_of(&a).map(|ip| (a.header.index, ip)),
                _ => None,
            })
            .collect())
    }

    /// Adds and removes host addresses on a link, pipelined; one result per
    /// address (adds first, then removes). An address already there (on
    /// add) or already gone (on remove) counts as done.
    pub fn change(
        &mut self,
        link: &str,
        index: u32,
        add: &[IpAddr],
        remove: &[IpAddr],
    ) -> Vec<Result<(), Error>> {
        let mut results = Vec::with_capacity(add.len() + remove.len());
        if !add.is_empty() {
            let msgs = add
                .iter()
                .map(|a| RouteNetlinkMessage::NewAddress(address_message(index, *a)))
                .collect();
            for (addr, r) in add
                .iter()
                .zip(self.conn.batch(msgs, NLM_F_CREATE | NLM_F_EXCL))
            {
                results.push(match r {
                    Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
                    r => r.map_err(|e| address_error("adding", *addr, link, e)),
                });
            }
        }
        if !remove.is_empty() {
            let msgs = remove
                .iter()
                .map(|a| RouteNetlinkMessage::DelAddress(address_message(index, *a)))
                .collect();
            for (addr, r) in remove.iter().zip(self.conn.batch(msgs, 0)) {
                results.push(match r {
                    Err(e) if e.errno() == Some(libc::EADDRNOTAVAIL) => Ok(()),
                    r => r.map_err(|e| address_error("removing", *addr, link, e)),
                });
            }
        }
        results
    }

    /// Makes the link's address set equal to `desired`: one dump, then one
    /// message per address that differs. Touches nothing else.
    pub fn sync(
        &mut self,
        link: &str,
        index: u32,
        desired: &BTreeSet<IpAddr>,
    ) -> Result<SyncReport, Error> {
        let before = self.messages();
        let current = self.addresses(index)?;
        let d = diff(&current, desired);
        for r in self.change(link, index, &d.add, &d.remove) {
            r?;
        }
        Ok(SyncReport {
            added: d.add,
            removed: d.remove,
            messages: self.messages() - before,
        })
    }
}

fn address_error(verb: &'static str, addr: IpAddr, link: &str, e: kipvs_netlink::Error) -> Error {
    if e.errno() == Some(libc::EPERM) {
        Error::PermissionDenied {
            what: format!("{verb} address {addr} on {link}"),
        }
    } else {
        Error::Address {
            verb,
            addr,
            link: link.to_owned(),
            source: e,
        }
    }
}

/// A host address (/32 or /128) on link `index`; IPv6 without duplicate
/// address detection, so it is usable at once.
fn address_message(index: u32, addr: IpAddr) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.scope = AddressScope::Universe;
    match addr {
        IpAddr::V4(_) => {
            m.header.family = AddressFamily::Inet;
            m.header.prefix_len = 32;
            m.attributes.push(AddressAttribute::Local(addr));
            m.attributes.push(AddressAttribute::Address(addr));
        }
        IpAddr::V6(_) => {
            m.header.family = AddressFamily::Inet6;
            m.header.prefix_len = 128;
            m.header.flags = AddressHeaderFlags::Nodad;
            m.attributes.push(AddressAttribute::Address(addr));
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    m
}

fn address_of(a: &AddressMessage) -> Option<IpAddr> {
    // IPv4: IFA_LOCAL is the interface's own address (IFA_ADDRESS is the
    // peer on point-to-point links); IPv6 has only IFA_ADDRESS.
    let local = a.attributes.iter().find_map(|x| match x {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn link_kind(l: &LinkMessage) -> Option<InfoKind> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.clone()),
            _ => None,
        }),
        _ => None,
    })
}

fn kind_name(kind: Option<&InfoKind>) -> String {
    match kind {
        None => "none (a physical or loopback device)".into(),
        Some(k) => format!("{k}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn set(v: &[&str]) -> BTreeSet<IpAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn diff_adds_the_missing_and_removes_the_stale() {
        let d = diff(
            &set(&["10.96.0.1", "10.96.0.2", "fd00::1"]),
            &set(&["10.96.0.2", "10.96.0.3", "fd00::1"]),
        );
        assert_eq!(d.add, vec!["10.96.0.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(d.remove, vec!["10.96.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(diff(&set(&[]), &set(&[])), AddrDiff::default());
    }

    #[test]
    fn address_messages_are_host_addresses_and_v6_skips_dad() {
        let m = address_message(7, "10.96.0.1".parse().unwrap());
        assert_eq!(
            (m.header.index, m.header.prefix_len, m.header.family),
            (7, 32, AddressFamily::Inet)
        );
        let m = address_message(7, "fd00::1".parse().unwrap());
        assert_eq!(
            (m.header.prefix_len, m.header.family),
            (128, AddressFamily::Inet6)
        );
        assert!(
            m.attributes
                .contains(&AddressAttribute::Flags(AddressFlags::Nodad))
        );
    }

    proptest! {
        #[test]
        fn applying_the_diff_yields_the_desired_set(
            cur in proptest::collection::btree_set(any::<u32>().prop_map(|n| IpAddr::from(n.to_be_bytes())), 0..40),
            want in proptest::collection::btree_set(any::<u32>().prop_map(|n| IpAddr::from(n.to_be_bytes())), 0..40),
        ) {
            let d = diff(&cur, &want);
            let mut after = cur.clone();
            after.extend(d.add.iter().copied());
            for r in &d.remove { after.remove(r); }
            prop_assert_eq!(&after, &want);
            prop_assert!(diff(&want, &want) == AddrDiff::default());
            prop_assert_eq!(d.add.len() + d.remove.len(), cur.symmetric_difference(&want).count());
        }
    }
}
