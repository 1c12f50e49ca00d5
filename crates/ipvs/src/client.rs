//! The blocking client: IPVS requests over the shared netlink transport
//! (`kipvs-netlink`), pipelined batches paced by the kernel's time, and a
//! parallel whole-table read.

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kipvs_netlink::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, Options, Socket};
use netlink_packet_core::{DecodeError, NlasIterator};
use netlink_packet_generic::GenlMessage;
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_sys::protocols::NETLINK_GENERIC;

use crate::error::{Error, op_error, read_error, resolve_error};
use crate::message::{
    IPVS_GENL_NAME, IpvsMessage, config, dest, emit_genl, emit_request, info, service,
};
use crate::op::{Op, Read};
use crate::types::{
    Destination, DestinationEntry, DestinationKey, Info, Service, ServiceEntry, ServiceKey,
    TableEntry, Timeouts,
};

/// Most requests in flight at once.
const MAX_WINDOW: usize = 1024;
/// How long one `sendmsg` of [`Client::apply`] should keep the kernel
/// busy. The kernel runs every request of one `sendmsg` before it returns
/// to user space, and on a kernel built without preemption nothing else
/// runs on that CPU meanwhile. A request's cost varies a thousandfold:
/// each added destination first walks the kernel's destination trash
/// (everything deleted in the last two minutes) under a spinlock. In the
/// lab (`preempt=none`, `cargo xtask bench stall`), reloading 10k × 10 right
/// after deleting it made one `sendmsg` of 1024 requests take 13.8 s and
/// hold a CPU for 6.1 s; a fresh load runs 1024 requests in about 25 ms.
/// So the window is paced: each [`Client::apply`] starts at no more than
/// [`FIRST_WINDOW`] requests and sizes every next `sendmsg` from the last
/// one's time per request to take about this long (see [`paced_window`]).
const SEND_TARGET: Duration = Duration::from_millis(20);
/// The first window of every [`Client::apply`] call. A request's cost can
/// jump a thousandfold between calls (a sync that deleted many Services
/// fills the trash the next one's adds walk), so each call starts small
/// again and grows from what it measures: in the lab, pacing from the last
/// call's window still let one `sendmsg` hold a CPU for 4.3 s.
const FIRST_WINDOW: usize = 16;
/// Most bytes per `sendmsg` (well below the default 208 KiB send buffer).
const MAX_SEND: usize = 64 * 1024;
/// Fewest services per extra thread when reading the whole table.
const SERVICES_PER_THREAD: usize = 16;

/// Why a request failed, before it is named.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The kernel answered with this errno (positive).
    Errno(i32),
    /// The socket failed, or the reply was lost.
    Netlink(kipvs_netlink::Error),
    /// A reply could not be read.
    Decode(DecodeError),
}

impl From<kipvs_netlink::Error> for Fail {
    fn from(e: kipvs_netlink::Error) -> Fail {
        match e.errno() {
            Some(errno) => Fail::Errno(errno),
            None => Fail::Netlink(e),
        }
    }
}

/// A generic-netlink socket (the transport's defaults: a 4 MiB receive
/// buffer where the kernel grants it, a 60 s reply timeout).
fn open() -> Result<Socket, Error> {
    Socket::open(NETLINK_GENERIC, Options::default()).map_err(|source| Error::Netlink {
        op: "open a generic-netlink socket".into(),
        source,
    })
}

/// Appends an IPVS request; returns its sequence number.
fn push_ipvs(socket: &mut Socket, family: u16, msg: IpvsMessage, flags: u16) -> u32 {
    socket.push(|seq, tx| emit_request(tx, family, seq, flags, msg))
}

/// Sends the one request queued on `socket` (sequence `seq`) and reads its
/// answer, handing each data payload (generic header included) and its
/// message type to `on_data`. A reply that fails to decode does not stop
/// the reading: the request is always read to its end, so the socket stays
/// in step.
fn transact(
    socket: &mut Socket,
    seq: u32,
    mut on_data: impl FnMut(u16, &[u8]) -> Result<(), DecodeError>,
) -> Result<(), Fail> {
    let mut first_error = None;
    socket.request(seq, |m| {
        if let Err(e) = on_data(m.kind, m.payload) {
            first_error.get_or_insert(e);
        }
    })?;
    match first_error {
        Some(e) => Err(Fail::Decode(e)),
        None => Ok(()),
    }
}

use crate::message::parse_reply as parse_ipvs;

fn missing(name: &str) -> DecodeError {
    DecodeError::from(format!("{name}: missing"))
}

/// Each service key once, in the order keys first appear, with the entry
/// seen last for it: a dump resumed by index after a concurrent change can
/// repeat a service, and the later copy is the fresher one.
pub fn dedupe_services(entries: Vec<ServiceEntry>) -> Vec<ServiceEntry> {
    let mut at: std::collections::HashMap<ServiceKey, usize> =
        std::collections::HashMap::with_capacity(entries.len());
    let mut out: Vec<ServiceEntry> = Vec::with_capacity(entries.len());
    for e in entries {
        match at.entry(e.service.key) {
            std::collections::hash_map::Entry::Occupied(i) => out[*i.get()] = e,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(out.len());
                out.push(e);
            }
        }
    }
    out
}

/// Read the destinations of one service on `socket`.
fn dump_destinations(
    socket: &mut Socket,
    family: u16,
    key: &ServiceKey,
) -> Result<Vec<DestinationEntry>, Error> {
    let read = Read::Destinations(*key);
    socket.clear();
    let seq = push_ipvs(socket, family, read.message(), NLM_F_REQUEST | NLM_F_DUMP);
    let af = key.family();
    let mut out = Vec::new();
    let result = transact(socket, seq, |kind, payload| {
        let msg = parse_ipvs(kind, payload)?;
        let attrs = msg.dest().ok_or_else(|| missing("IPVS_CMD_ATTR_DEST"))?;
        out.push(dest::parse_entry(attrs, af)?);
        Ok(())
    });
    result.map_err(|f| name_read(&read, f))?;
    Ok(out)
}

fn name_read(read: &Read, fail: Fail) -> Error {
    match fail {
        Fail::Errno(errno) => read_error(read, errno),
        Fail::Netlink(source) => Error::Netlink {
            op: read.to_string(),
            source,
        },
        Fail::Decode(source) => Error::Decode {
            op: read.to_string(),
            source,
        },
    }
}

fn name_op(op: &Op, fail: Fail) -> Error {
    match fail {
        Fail::Errno(errno) => op_error(op, errno),
        Fail::Netlink(source) => Error::Netlink {
            op: op.to_string(),
            source,
        },
        Fail::Decode(source) => Error::Decode {
            op: op.to_string(),
            source,
        },
    }
}

/// A blocking IPVS client over one generic-netlink socket.
///
/// Every method is one request and its reply (or one dump), except
/// [`apply`](Client::apply), which pipelines many, and
/// [`dump_all`](Client::dump_all), which reads the whole table over several
/// sockets in parallel. The client is `Send`: keep it on a dedicated thread
/// or move it into `tokio::task::spawn_blocking`.
pub struct Client {
    family: u16,
    socket: Socket,
    /// Extra sockets for parallel table reads, opened on first use.
    spare: Vec<Socket>,
    dump_threads: usize,
    /// Requests per `sendmsg` in [`apply`](Client::apply).
    batch: Batch,
    /// The longest `sendmsg` of `apply` since [`take_longest_send`](Client::take_longest_send).
    longest_send: Duration,
}

/// How [`Client::apply`] sizes its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Batch {
    /// Paced to [`SEND_TARGET`]; the window the next `sendmsg` uses.
    Paced(usize),
    /// A fixed number of requests per `sendmsg`.
    Fixed(usize),
}

impl Batch {
    /// Requests in the next `sendmsg`, at most `window` (what the receive
    /// buffer holds acknowledgements for).
    fn requests(self, window: usize) -> usize {
        match self {
            Batch::Paced(n) | Batch::Fixed(n) => n.min(window),
        }
    }
}

/// The window after a `sendmsg` of `sent` requests took `took`, when the
/// window was `current`: as many requests as the last ones' time per
/// request fits in [`SEND_TARGET`], growing at most twofold per `sendmsg`,
/// between 1 and `max`.
fn paced_window(current: usize, sent: usize, took: Duration, max: usize) -> usize {
    let sent = sent.max(1);
    let per_request = took.as_secs_f64() / sent as f64;
    let fits = if per_request > 0.0 {
        (SEND_TARGET.as_secs_f64() / per_request).min(usize::MAX as f64) as usize
    } else {
        usize::MAX
    };
    fits.min(current.max(sent).saturating_mul(2))
        .min(max)
        .max(1)
}

impl Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("family", &self.family)
            .field("window", &self.window())
            .field("batch", &self.batch)
            .field("dump_threads", &self.dump_threads)
            .finish_non_exhaustive()
    }
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Client>();
};

impl Client {
    /// Open a socket and resolve the `IPVS` family. Resolution makes the
    /// kernel load `ip_vs` if it can; if it cannot, this is
    /// [`Error::IpvsUnavailable`].
    pub fn new() -> Result<Client, Error> {
        let mut socket = open()?;
        let family = resolve(&mut socket)?;
        // Each dump waits on the kernel more than it computes: more sockets
        // than cores still help (measured in the lab with 2 vCPUs at 10k
        // services: 1 socket 4.3 s, 4 sockets 2.5 s).
        let dump_threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(4, 8);
        Ok(Client {
            family,
            socket,
            spare: Vec::new(),
            dump_threads,
            batch: Batch::Paced(FIRST_WINDOW),
            longest_send: Duration::ZERO,
        })
    }

    /// The generic-netlink family id the kernel assigned to `IPVS`.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// How many requests the next `sendmsg` of [`apply`](Client::apply)
    /// carries: paced so that one `sendmsg` keeps the kernel busy about
    /// 20 ms (or what [`set_requests_per_send`](Client::set_requests_per_send)
    /// fixed), and never more than the socket's receive buffer holds
    /// acknowledgements for (or the kernel drops acknowledgements).
    pub fn window(&self) -> usize {
        self.batch.requests(self.socket.ack_window())
    }

    /// Send exactly `n` (at least 1) requests per `sendmsg` in
    /// [`apply`](Client::apply) instead of pacing them (for measuring
    /// what pacing is worth).
    pub fn set_requests_per_send(&mut self, n: usize) {
        self.batch = Batch::Fixed(n.max(1));
    }

    /// The longest `sendmsg` of [`apply`](Client::apply) (the kernel runs
    /// the requests inside it) since the last call; resets it.
    pub fn take_longest_send(&mut self) -> Duration {
        std::mem::take(&mut self.longest_send)
    }

    /// Use at most `threads` sockets (and threads) for
    /// [`dump_all`](Client::dump_all). The default is the number of CPUs,
    /// at most 8; 1 reads serially.
    pub fn set_dump_threads(&mut self, threads: usize) {
        self.dump_threads = threads.max(1);
    }

    /// The socket, with an empty send buffer.
    fn socket(&mut self) -> &mut Socket {
        self.socket.clear();
        &mut self.socket
    }

    /// A read that answers with one message.
    fn get<T>(
        &mut self,
        read: Read,
        mut parse: impl FnMut(&IpvsMessage) -> Result<T, DecodeError>,
    ) -> Result<T, Error> {
        let family = self.family;
        let socket = self.socket();
        let seq = push_ipvs(socket, family, read.message(), NLM_F_REQUEST | NLM_F_ACK);
        let mut out = None;
        let result = transact(socket, seq, |kind, payload| {
            let msg = parse_ipvs(kind, payload)?;
            out = Some(parse(&msg)?);
            Ok(())
        });
        result.map_err(|f| name_read(&read, f))?;
        out.ok_or_else(|| Error::Decode {
            op: read.to_string(),
            source: DecodeError::from("no reply before the acknowledgement"),
        })
    }

    /// The module version and connection table size (`ipvsadm -Ln`'s first
    /// line).
    pub fn info(&mut self) -> Result<Info, Error> {
        self.get(Read::Info, info::parse_info)
    }

    /// The connection timeouts (`ipvsadm -L --timeout`).
    pub fn timeouts(&mut self) -> Result<Timeouts, Error> {
        self.get(Read::Timeouts, config::parse_timeouts)
    }

    /// Set the connection timeouts; a zero value is left unchanged.
    pub fn set_timeouts(&mut self, timeouts: &Timeouts) -> Result<(), Error> {
        self.execute(&Op::SetTimeouts(*timeouts))
    }

    /// One service, with its counters.
    pub fn service(&mut self, key: &ServiceKey) -> Result<ServiceEntry, Error> {
        self.get(Read::Service(*key), |msg| {
            service::parse_entry(
                msg.service()
                    .ok_or_else(|| missing("IPVS_CMD_ATTR_SERVICE"))?,
            )
        })
    }

    /// Every service, with its counters (a multi-part dump).
    ///
    /// The kernel resumes a dump by index, so a service added or deleted
    /// between two parts can shift the table and repeat an entry; exact
    /// repeats of a service key are dropped ([`dedupe_services`]: each key
    /// once, where it first appeared, with the entry seen last).
    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, Error> {
        let family = self.family;
        let socket = self.socket();
        let read = Read::Services;
        let seq = push_ipvs(socket, family, read.message(), NLM_F_REQUEST | NLM_F_DUMP);
        let mut out = Vec::new();
        let result = transact(socket, seq, |kind, payload| {
            let msg = parse_ipvs(kind, payload)?;
            let attrs = msg
                .service()
                .ok_or_else(|| missing("IPVS_CMD_ATTR_SERVICE"))?;
            out.push(service::parse_entry(attrs)?);
            Ok(())
        });
        result.map_err(|f| name_read(&read, f))?;
        Ok(dedupe_services(out))
    }

    /// The destinations of a service, with their counters. The kernel
    /// answers an empty list, not an error, for a service that does not
    /// exist.
    pub fn destinations(&mut self, service: &ServiceKey) -> Result<Vec<DestinationEntry>, Error> {
        let family = self.family;
        dump_destinations(self.socket(), family, service)
    }

    /// The whole table: every service and all its destinations.
    ///
    /// The kernel has no dump of all destinations, so this is one service
    /// dump and one destination dump per service. The destination dumps run
    /// on up to [`set_dump_threads`](Client::set_dump_threads) sockets in
    /// parallel (a netlink socket runs one dump at a time). It is not an
    /// atomic snapshot: a service deleted meanwhile shows no destinations,
    /// and a service the kernel's resumed dump repeated is listed once
    /// (see [`services`](Client::services)).
    pub fn dump_all(&mut self) -> Result<Vec<TableEntry>, Error> {
        let services = self.services()?;
        let keys: Vec<ServiceKey> = services.iter().map(|s| s.service.key).collect();
        let dests = self.destinations_of(&keys)?;
        Ok(services
            .into_iter()
            .zip(dests)
            .map(|(service, destinations)| TableEntry {
                service,
                destinations,
            })
            .collect())
    }

    /// The destinations of many services, in parallel where it pays.
    pub fn destinations_of(
        &mut self,
        keys: &[ServiceKey],
    ) -> Result<Vec<Vec<DestinationEntry>>, Error> {
        let family = self.family;
        let threads = self
            .dump_threads
            .min(keys.len().div_ceil(SERVICES_PER_THREAD))
            .max(1);
        if threads == 1 {
            let socket = self.socket();
            return keys
                .iter()
                .map(|k| dump_destinations(socket, family, k))
                .collect();
        }
        while self.spare.len() < threads - 1 {
            self.spare.push(open()?);
        }
        let next = AtomicUsize::new(0);
        let work = |socket: &mut Socket| {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else { break };
                let result = dump_destinations(socket, family, key);
                let failed = result.is_err();
                out.push((i, result));
                if failed {
                    // Stop everyone: the first error is the answer.
                    next.store(keys.len(), Ordering::Relaxed);
                    break;
                }
            }
            out
        };
        let work = &work;
        let mut results: Vec<Option<Result<Vec<DestinationEntry>, Error>>> =
            (0..keys.len()).map(|_| None).collect();
        let (main, spare) = (&mut self.socket, &mut self.spare[..threads - 1]);
        std::thread::scope(|s| {
            let handles: Vec<_> = spare
                .iter_mut()
                .map(|socket| s.spawn(move || work(socket)))
                .collect();
            let mut all = work(main);
            for h in handles {
                match h.join() {
                    Ok(part) => all.extend(part),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            for (i, r) in all {
                results[i] = Some(r);
            }
        });
        let mut out = Vec::with_capacity(keys.len());
        let mut first_error = None;
        for r in results {
            match r {
                Some(Ok(d)) => out.push(d),
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                // Skipped after another failure.
                None => {}
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Add a service.
    pub fn add_service(&mut self, service: &Service) -> Result<(), Error> {
        self.execute(&Op::AddService(service.clone()))
    }

    /// Edit a service: every setting is written.
    pub fn edit_service(&mut self, service: &Service) -> Result<(), Error> {
        self.execute(&Op::EditService(service.clone()))
    }

    /// Delete a service and its destinations.
    pub fn delete_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        self.execute(&Op::DeleteService(*key))
    }

    /// Add a destination to a service.
    pub fn add_destination(
        &mut self,
        service: &ServiceKey,
        destination: &Destination,
    ) -> Result<(), Error> {
        self.execute(&Op::AddDestination {
            service: *service,
            destination: destination.clone(),
        })
    }

    /// Edit a destination: every setting is written.
    pub fn edit_destination(
        &mut self,
        service: &ServiceKey,
        destination: &Destination,
    ) -> Result<(), Error> {
        self.execute(&Op::EditDestination {
            service: *service,
            destination: destination.clone(),
        })
    }

    /// Delete a destination from a service.
    pub fn delete_destination(
        &mut self,
        service: &ServiceKey,
        destination: &DestinationKey,
    ) -> Result<(), Error> {
        self.execute(&Op::DeleteDestination {
            service: *service,
            destination: *destination,
        })
    }

    /// Delete every service.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.execute(&Op::Flush)
    }

    /// Zero every counter.
    pub fn zero_all(&mut self) -> Result<(), Error> {
        self.execute(&Op::Zero(None))
    }

    /// Zero the counters of one service and its destinations.
    pub fn zero_service(&mut self, key: &ServiceKey) -> Result<(), Error> {
        self.execute(&Op::Zero(Some(*key)))
    }

    /// Run one operation and wait for its acknowledgement.
    pub fn execute(&mut self, op: &Op) -> Result<(), Error> {
        let family = self.family;
        let socket = self.socket();
        let seq = push_ipvs(socket, family, op.message(), NLM_F_REQUEST | NLM_F_ACK);
        transact(socket, seq, |_, _| Ok(())).map_err(|f| name_op(op, f))
    }

    /// Run many operations, pipelined, and report each one's result, in
    /// order.
    ///
    /// Requests go out in windows: as many as fit one `sendmsg` and whose
    /// acknowledgements fit the socket's receive buffer (see
    /// [`window`](Client::window)); the kernel runs them in order and
    /// acknowledges each, and acknowledgements are matched to operations by
    /// sequence number. A failing operation (say `EEXIST`) neither stops nor
    /// hides the others: later operations still run, and each result names
    /// its own object. Operations are independent — one that depends on an
    /// earlier failed one fails on its own (e.g. `NoSuchService`).
    pub fn apply(&mut self, ops: &[Op]) -> Vec<Result<(), Error>> {
        let family = self.family;
        if let Batch::Paced(n) = &mut self.batch {
            *n = (*n).min(FIRST_WINDOW);
        }
        self.socket.clear();
        pipeline(
            &mut self.socket,
            family,
            ops,
            &mut self.batch,
            &mut self.longest_send,
        )
        .into_iter()
        .zip(ops)
        .map(|(r, op)| r.map_err(|f| name_op(op, f)))
        .collect()
    }
}

/// Pipeline `ops` on `socket`: windows sized by `batch`, each sent in one
/// timed `sendmsg` (the kernel runs the requests inside it: its time is
/// theirs), then its acknowledgements read.
fn pipeline(
    socket: &mut Socket,
    family: u16,
    ops: &[Op],
    batch: &mut Batch,
    longest: &mut Duration,
) -> Vec<Result<(), Fail>> {
    let mut results = Vec::with_capacity(ops.len());
    let mut next = 0;
    while next < ops.len() {
        let start = next;
        let window = batch.requests(socket.ack_window());
        let first = socket.next_seq();
        while next < ops.len() && next - start < window && socket.queued() < MAX_SEND {
            push_ipvs(
                socket,
                family,
                ops[next].message(),
                NLM_F_REQUEST | NLM_F_ACK,
            );
            next += 1;
        }
        let sent_at = Instant::now();
        let sent = socket.send();
        let took = sent_at.elapsed();
        *longest = (*longest).max(took);
        if let Batch::Paced(n) = batch {
            *n = paced_window(*n, next - start, took, MAX_WINDOW);
        }
        match sent {
            Ok(()) => results.extend(
                socket
                    .acknowledgements(first, next - start)
                    .into_iter()
                    .map(|r| r.map_err(Fail::from)),
            ),
            Err(e) => results.extend((start..next).map(|_| Err(Fail::Netlink(e.duplicate())))),
        }
    }
    results
}

/// Ask the generic-netlink controller for the `IPVS` family id.
fn resolve(socket: &mut Socket) -> Result<u16, Error> {
    let mut msg = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_owned())],
    });
    msg.finalize();
    socket.clear();
    let seq = socket.push(|seq, tx| emit_genl(tx, msg, seq, NLM_F_REQUEST | NLM_F_ACK));
    let mut id = None;
    // CTRL_ATTR_FAMILY_ID, read by hand: the rest of the reply (ops,
    // policies, groups) is not ours to judge.
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    let result = transact(socket, seq, |_, payload| {
        let attrs = payload
            .get(4..)
            .ok_or_else(|| DecodeError::from("nlctrl reply: no generic header"))?;
        for nla in NlasIterator::new(attrs) {
            let nla = nla?;
            if nla.kind() == CTRL_ATTR_FAMILY_ID {
                id = Some(crate::message::parse_u16(
                    nla.value(),
                    "CTRL_ATTR_FAMILY_ID",
                )?);
            }
        }
        Ok(())
    });
    let op = "resolve the IPVS generic-netlink family";
    match result {
        Ok(()) => id.ok_or_else(|| Error::Decode {
            op: op.into(),
            source: missing("CTRL_ATTR_FAMILY_ID"),
        }),
        Err(Fail::Errno(errno)) => Err(resolve_error(errno)),
        Err(Fail::Netlink(source)) => Err(Error::Netlink {
            op: op.into(),
            source,
        }),
        Err(Fail::Decode(source)) => Err(Error::Decode {
            op: op.into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stats;

    #[test]
    fn a_repeated_service_is_kept_once_where_it_first_appeared_with_its_last_copy() {
        let entry = |port: u16, conns: u64| ServiceEntry {
            service: Service::new(
                ServiceKey::tcp(std::net::Ipv4Addr::new(10, 0, 0, 1), port),
                "rr",
            ),
            stats: Stats {
                conns,
                ..Default::default()
            },
        };
        let fwmark = ServiceEntry {
            service: Service::new(
                ServiceKey::FwMark {
                    family: crate::AddressFamily::Inet,
                    mark: 80,
                },
                "rr",
            ),
            stats: Stats::default(),
        };
        let got = dedupe_services(vec![
            entry(80, 1),
            entry(81, 1),
            fwmark.clone(),
            entry(80, 2),
            entry(82, 1),
            entry(80, 3),
        ]);
        assert_eq!(
            got,
            vec![entry(80, 3), entry(81, 1), fwmark, entry(82, 1)],
            "each key once, in first-seen order, the last copy"
        );
        let unique = vec![entry(1, 0), entry(2, 0)];
        assert_eq!(dedupe_services(unique.clone()), unique);
        assert_eq!(dedupe_services(Vec::new()), Vec::new());
    }

    #[test]
    fn pacing_fits_the_target_grows_at_most_twofold_and_stays_in_bounds() {
        let ms = Duration::from_millis;
        // 64 requests in 2 ms: 640 would fit in 20 ms, growth stops at 128.
        assert_eq!(paced_window(64, 64, ms(2), MAX_WINDOW), 128);
        // 64 requests in 1.08 s (a full destination trash): one fits.
        assert_eq!(paced_window(64, 64, ms(1080), MAX_WINDOW), 1);
        // 64 requests in 80 ms: 16 fit.
        assert_eq!(paced_window(64, 64, ms(80), MAX_WINDOW), 16);
        // A short last window of a big one does not shrink it.
        assert_eq!(paced_window(512, 3, ms(0), MAX_WINDOW), MAX_WINDOW);
        assert_eq!(paced_window(1, 1, Duration::ZERO, 1), 1);
    }

    proptest::proptest! {
        #[test]
        fn paced_window_is_bounded(
            current in 1usize..5000,
            sent in 0usize..5000,
            micros in 0u64..100_000_000,
            max in 1usize..5000,
        ) {
            let took = Duration::from_micros(micros);
            let w = paced_window(current, sent, took, max);
            proptest::prop_assert!(w >= 1 && w <= max);
            proptest::prop_assert!(w <= current.max(sent).max(1) * 2);
            // A window it picks, at the last rate, fits the target (or is 1).
            let per = took.as_secs_f64() / sent.max(1) as f64;
            proptest::prop_assert!(w == 1 || per * w as f64 <= SEND_TARGET.as_secs_f64() * 1.0001);
        }
    }
}
