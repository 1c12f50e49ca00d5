//! The blocking ctnetlink client.

use crate::wire::{self, Message, NETLINK_NETFILTER};
use crate::{Error, Family, Filter, Flow};
use netlink_sys::{Socket, SocketAddr};
use std::collections::{BTreeSet, HashMap};
use std::io;

/// Delete requests written per `send`: their acknowledgements (36 bytes
/// each with `NETLINK_CAP_ACK`) fit the receive buffer.
const WINDOW: usize = 256;
/// Receive buffer: a dump datagram is at most a few pages.
const RX_BUF: usize = 64 * 1024;

/// A ctnetlink socket (`NETLINK_NETFILTER`).
pub struct Conntrack {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
    messages: u64,
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
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(Error::Socket)?;
        socket.bind_auto().map_err(Error::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(Error::Socket)?;
        let _ = socket.set_cap_ack(true);
        Ok(Conntrack {
            socket,
            seq: 0,
            rx: Vec::with_capacity(RX_BUF),
            messages: 0,
        })
    }

    /// Requests sent so far.
    pub fn messages_sent(&self) -> u64 {
        self.messages
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.messages += 1;
        self.seq
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), Error> {
        loop {
            match self.socket.send(bytes, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Socket(e)),
                Ok(0) => {
                    return Err(Error::Socket(io::Error::other(
                        "netlink send wrote nothing",
                    )));
                }
                Ok(_) => return Ok(()),
            }
        }
    }

    fn recv(&mut self) -> Result<Vec<(u32, Message)>, Error> {
        loop {
            self.rx.clear();
            match self.socket.recv(&mut self.rx, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Socket(e)),
                Ok(_) => break,
            }
        }
        Ok(wire::parse_datagram(&self.rx)?)
    }

    /// Every flow of one family (one dump).
    pub fn dump(&mut self, family: Family) -> Result<Vec<Flow>, Error> {
        let seq = self.next_seq();
        self.send(&wire::dump_request(family, seq))?;
        let mut out = Vec::new();
        loop {
            for (s, m) in self.recv()? {
                if s != seq {
                    continue;
                }
                match m {
                    Message::Flow(f) => out.push(f),
                    Message::Done => return Ok(out),
                    Message::Ack { code: 0 } => {}
                    Message::Ack { code } => {
                        return Err(Error::Kernel {
                            op: format!("dump of {family:?} flows"),
                            source: io::Error::from_raw_os_error(-code),
                        });
                    }
                    Message::Other(_) => {}
                }
            }
        }
    }

    /// Deletes flows by their original tuple, pipelined; one result per
    /// flow, in order. An entry already gone (`ENOENT`) is deleted.
    pub fn delete(&mut self, flows: &[Flow]) -> Vec<Result<(), Error>> {
        let mut results: Vec<Option<Result<(), Error>>> = (0..flows.len()).map(|_| None).collect();
        for (chunk_no, chunk) in flows.chunks(WINDOW).enumerate() {
            let mut pending: HashMap<u32, usize> = HashMap::new();
            let mut tx = Vec::new();
            for (j, f) in chunk.iter().enumerate() {
                let seq = self.next_seq();
                tx.extend_from_slice(&wire::delete_request(f, seq));
                pending.insert(seq, chunk_no * WINDOW + j);
            }
            if let Err(e) = self.send(&tx) {
                for (_, i) in pending {
                    results[i] = Some(Err(Error::Socket(io::Error::other(e.to_string()))));
                }
                continue;
            }
            while !pending.is_empty() {
                match self.recv() {
                    Ok(msgs) => {
                        for (seq, m) in msgs {
                            let Message::Ack { code } = m else { continue };
                            let Some(i) = pending.remove(&seq) else {
                                continue;
                            };
                            results[i] = Some(if code == 0 || code == -libc::ENOENT {
                                Ok(())
                            } else {
                                Err(Error::Kernel {
                                    op: format!("delete of {}", describe(&flows[i])),
                                    source: io::Error::from_raw_os_error(-code),
                                })
                            });
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        for (_, i) in pending.drain() {
                            results[i] = Some(Err(Error::Socket(io::Error::other(msg.clone()))));
                        }
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(Error::Socket(io::Error::other("no acknowledgement"))))
            })
            .collect()
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
