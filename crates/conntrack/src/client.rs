//! The blocking ctnetlink client, over the shared transport
//! (`kipvs-netlink`): this module encodes requests and decodes flows.

use crate::wire::{self, NETLINK_NETFILTER};
use crate::{Error, Family, Filter, Flow};
use kipvs_netlink::{Options, Socket};
use std::collections::BTreeSet;

/// A ctnetlink socket (`NETLINK_NETFILTER`).
pub struct Conntrack {
    socket: Socket,
}

/// What [`Conntrack::clear`] did.
#[derive(Debug, Default)]
pub struct Cleared {
    /// Flows the filters matched.
    pub matched: usize,
    /// Flows deleted (or already gone).
    pub deleted: usize,
    /// Deletes the kernel refused, each with its flow.
    pub errors: Vec<(Flow, Error)>,
}

impl Conntrack {
    /// Opens a socket (needs `CAP_NET_ADMIN` to delete).
    pub fn open() -> Result<Conntrack, Error> {
        Ok(Conntrack {
            socket: Socket::open(NETLINK_NETFILTER, Options::default()).map_err(Error::Socket)?,
        })
    }

    /// Requests sent so far.
    pub fn messages_sent(&self) -> u64 {
        self.socket.requests_sent()
    }

    /// Every flow of one family (one dump).
    pub fn dump(&mut self, family: Family) -> Result<Vec<Flow>, Error> {
        let seq = self
            .socket
            .push(|seq, tx| tx.extend_from_slice(&wire::dump_request(family, seq)));
        let mut out = Vec::new();
        let mut bad = None;
        self.socket
            .request(seq, |m| {
                if m.kind == wire::msg_type(wire::IPCTNL_MSG_CT_NEW) {
                    match wire::parse_flow(m.payload) {
                        Ok(f) => out.push(f),
                        Err(e) => {
                            bad.get_or_insert(e);
                        }
                    }
                }
            })
            .map_err(|source| Error::Netlink {
                op: format!("dump of {family:?} flows"),
                source,
            })?;
        match bad {
            Some(e) => Err(Error::Decode(e)),
            None => Ok(out),
        }
    }

    /// Deletes flows by their original tuple, pipelined; one result per
    /// flow, in order. An entry already gone (`ENOENT`) is deleted.
    pub fn delete(&mut self, flows: &[Flow]) -> Vec<Result<(), Error>> {
        let window = self.socket.ack_window();
        let mut results = Vec::with_capacity(flows.len());
        for chunk in flows.chunks(window) {
            let first = self.socket.push_numbered(chunk.len() as u32, |first, tx| {
                for (seq, f) in (first..).zip(chunk) {
                    tx.extend_from_slice(&wire::delete_request(f, seq));
                }
            });
            let acks = self.socket.acknowledgements(first, chunk.len());
            results.extend(acks.into_iter().zip(chunk).map(|(r, f)| match r {
                Err(e) if e.errno() == Some(libc::ENOENT) => Ok(()),
                Err(source) => Err(Error::Netlink {
                    op: format!("delete of {}", describe(f)),
                    source,
                }),
                Ok(()) => Ok(()),
            }));
        }
        results
    }

    /// Deletes every flow any filter matches: one dump per family the
    /// filters name, then one pipelined delete per matching flow.
    pub fn clear(&mut self, filters: &[Filter]) -> Result<Cleared, Error> {
        let families: BTreeSet<Family> = filters.iter().flat_map(|f| f.families()).collect();
        let mut matched = Vec::new();
        for family in families {
            matched.extend(
                self.dump(family)?
                    .into_iter()
                    .filter(|flow| filters.iter().any(|f| f.matches(flow))),
            );
        }
        let mut cleared = Cleared {
            matched: matched.len(),
            ..Cleared::default()
        };
        for (flow, r) in matched.iter().zip(self.delete(&matched)) {
            match r {
                Ok(()) => cleared.deleted += 1,
                Err(e) => cleared.errors.push((*flow, e)),
            }
        }
        Ok(cleared)
    }
}

/// `udp 10.0.0.1:5000 → 10.96.0.10:53`.
fn describe(f: &Flow) -> String {
    format!(
        "protocol {} flow {} → {}",
        f.protocol,
        std::net::SocketAddr::new(f.orig.src, f.orig.src_port),
        std::net::SocketAddr::new(f.orig.dst, f.orig.dst_port)
    )
}
