//! The blocking client: one generic-netlink socket, its own request/ack loop,
//! pipelined batches, and a parallel whole-table read.

use std::fmt::Debug;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NetlinkBuffer, NlasIterator,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

use crate::error::{Error, op_error, read_error, resolve_error};
use crate::message::{
    IPVS_GENL_NAME, IpvsMessage, config, dest, emit_genl, emit_request, info, service,
};
use crate::op::{Op, Read};
use crate::types::{
    Destination, DestinationEntry, DestinationKey, Info, Service, ServiceEntry, ServiceKey,
    TableEntry, Timeouts,
};

/// Receive buffer per `recv`: the kernel never builds a netlink skb larger
/// than 32 KiB for a dump, nor 8 KiB for a reply.
const RX_BUF: usize = 64 * 1024;
/// Socket receive buffer asked for (`SO_RCVBUFFORCE`, else `SO_RCVBUF`).
const WANT_RCVBUF: i32 = 4 << 20;
/// Receive-buffer bytes reserved per outstanding acknowledgement: an ack is
/// a small skb whose true size (with `sk_buff` and shared info) stays below
/// this.
const ACK_BUDGET: usize = 2048;
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
/// How long a reply may take before the request fails with a timeout.
const RECV_TIMEOUT: Duration = Duration::from_secs(60);
/// Acknowledgements received per `recvmmsg`.
const ACK_SLOTS: usize = 64;
/// Bytes per acknowledgement slot: an ack is 36 bytes (with
/// `NETLINK_CAP_ACK`; without it an error ack echoes the request, and its
/// first 20 bytes, all that is read, still fit).
const ACK_SLOT: usize = 512;
/// Fewest services per extra thread when reading the whole table.
const SERVICES_PER_THREAD: usize = 16;

/// Why a request failed, before it is named.
#[derive(Debug)]
pub(crate) enum Fail {
    /// The kernel answered with this errno (positive).
    Errno(i32),
    /// The socket failed.
    Io(io::Error),
    /// A reply could not be read.
    Decode(DecodeError),
}

fn copy_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(errno) => io::Error::from_raw_os_error(errno),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

fn setsockopt<T>(sock: &Socket, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes for the
    // duration of the call, and the fd is owned by `sock`.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A handler of reply payloads: message type, payload.
type OnData<'a> = dyn FnMut(u16, &[u8]) -> Result<(), DecodeError> + 'a;

/// One connected generic-netlink socket with its buffers and sequence
/// numbers.
struct Conn {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// `ACK_SLOTS` slots of `ACK_SLOT` bytes for batched acknowledgements,
    /// and the length of each datagram received into them.
    acks: Vec<u8>,
    ack_lens: [usize; ACK_SLOTS],
    /// Requests in flight per window, from the receive buffer's size.
    window: usize,
    /// Set after an I/O failure that may have left replies unread: the
    /// connection is replaced before its next use.
    broken: bool,
}

impl Conn {
    fn open() -> io::Result<Conn> {
        let mut socket = Socket::new(NETLINK_GENERIC)?;
        socket.bind_auto()?;
        // Connected to the kernel: no other process can send to this port.
        socket.connect(&SocketAddr::new(0, 0))?;
        // Error acks without a copy of the request: smaller, more fit.
        let _ = socket.set_cap_ack(true);
        if setsockopt(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &WANT_RCVBUF,
        )
        .is_err()
        {
            let _ = socket.set_rx_buf_sz(WANT_RCVBUF);
        }
        let timeout = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
        let rcvbuf = socket.get_rx_buf_sz().unwrap_or(212_992);
        Ok(Conn {
            socket,
            seq: 0,
            rx: Vec::with_capacity(RX_BUF),
            tx: Vec::with_capacity(4096),
            acks: Vec::new(),
            ack_lens: [0; ACK_SLOTS],
            window: window_for(rcvbuf),
            broken: false,
        })
    }

    /// Append a request to `tx`; return its sequence number.
    fn push<F: GenlFamily + Emitable + Debug>(&mut self, msg: GenlMessage<F>, flags: u16) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        emit_genl(&mut self.tx, msg, self.seq, flags);
        self.seq
    }

    fn push_ipvs(&mut self, family: u16, msg: IpvsMessage, flags: u16) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        emit_request(&mut self.tx, family, self.seq, flags, msg);
        self.seq
    }

    fn send(&mut self) -> io::Result<()> {
        loop {
            match self.socket.send(&self.tx, 0) {
                Ok(n) if n == self.tx.len() => return Ok(()),
                Ok(n) => {
                    return Err(io::Error::other(format!(
                        "netlink send: {n} of {} bytes sent",
                        self.tx.len()
                    )));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive one datagram into `rx`.
    fn recv(&mut self, flags: i32) -> io::Result<()> {
        loop {
            self.rx.clear();
            match self.socket.recv(&mut self.rx, flags | libc::MSG_TRUNC) {
                Ok(n) if n > self.rx.len() => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "netlink datagram of {n} bytes truncated to {}",
                            self.rx.len()
                        ),
                    ));
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && flags == 0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no reply from the kernel in {}s", RECV_TIMEOUT.as_secs()),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive up to `ACK_SLOTS` datagrams in one `recvmmsg` (blocking for
    /// the first only); return how many. Each lands in its slot, truncated
    /// to `ACK_SLOT` bytes, which holds any acknowledgement whole.
    fn recv_acks(&mut self, flags: i32) -> io::Result<usize> {
        self.acks.resize(ACK_SLOTS * ACK_SLOT, 0);
        // SAFETY: all-zero is a valid `iovec` and `mmsghdr` (null pointers,
        // zero lengths); they are filled in below before use.
        let mut iovs: [libc::iovec; ACK_SLOTS] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; ACK_SLOTS] = unsafe { std::mem::zeroed() };
        for (i, (iov, hdr)) in iovs.iter_mut().zip(hdrs.iter_mut()).enumerate() {
            iov.iov_base = self.acks[i * ACK_SLOT..].as_mut_ptr().cast();
            iov.iov_len = ACK_SLOT;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
        }
        loop {
            // SAFETY: `hdrs` holds ACK_SLOTS headers, each pointing at one
            // iovec that points at ACK_SLOT bytes of `self.acks`; all outlive
            // the call, and nothing else touches them meanwhile.
            let n = unsafe {
                libc::recvmmsg(
                    self.socket.as_raw_fd(),
                    hdrs.as_mut_ptr(),
                    ACK_SLOTS as libc::c_uint,
                    flags | libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n >= 0 {
                let n = n as usize;
                for (len, hdr) in self.ack_lens.iter_mut().zip(&hdrs).take(n) {
                    *len = (hdr.msg_len as usize).min(ACK_SLOT);
                }
                return Ok(n);
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock if flags == 0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no reply from the kernel in {}s", RECV_TIMEOUT.as_secs()),
                    ));
                }
                _ => return Err(e),
            }
        }
    }

    /// Datagram `i` of the last [`recv_acks`](Conn::recv_acks).
    fn ack_datagram(&self, i: usize) -> &[u8] {
        &self.acks[i * ACK_SLOT..i * ACK_SLOT + self.ack_lens[i]]
    }

    /// Send `tx` (one request, sequence `seq`) and read its replies until
    /// its ack, error or end of dump, handing each data payload (generic
    /// header included) and its message type to `on_data`. A reply that
    /// fails to decode does not stop the reading: the request is always
    /// read to its end, so the socket stays in step.
    fn transact(
        &mut self,
        seq: u32,
        mut on_data: impl FnMut(u16, &[u8]) -> Result<(), DecodeError>,
    ) -> Result<(), Fail> {
        let result = self.transact_inner(seq, &mut on_data);
        if matches!(result, Err(Fail::Io(_))) {
            self.broken = true;
        }
        result
    }

    fn transact_inner(&mut self, seq: u32, on_data: &mut OnData<'_>) -> Result<(), Fail> {
        self.send().map_err(Fail::Io)?;
        let mut first_error: Option<DecodeError> = None;
        loop {
            self.recv(0).map_err(Fail::Io)?;
            let mut done = None;
            for_each_message(&self.rx, |msg_seq, kind, payload| {
                if msg_seq != seq || done.is_some() {
                    return Ok(());
                }
                match kind {
                    NLMSG_ERROR | NLMSG_DONE => {
                        let code = status(kind, payload)?;
                        done = Some(code);
                    }
                    // NOOP, OVERRUN and the reserved control types.
                    0..NLMSG_MIN_TYPE => {}
                    _ => {
                        if let Err(e) = on_data(kind, payload) {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e| {
                self.broken = true;
                Fail::Decode(e)
            })?;
            match done {
                None => continue,
                Some(0) => break,
                Some(code) => return Err(Fail::Errno(code.saturating_neg())),
            }
        }
        match first_error {
            Some(e) => Err(Fail::Decode(e)),
            None => Ok(()),
        }
    }
}

/// Message types below this are netlink control messages.
const NLMSG_MIN_TYPE: u16 = 16;

/// The window (requests in flight) for a receive buffer of `rcvbuf` bytes.
fn window_for(rcvbuf: usize) -> usize {
    (rcvbuf / ACK_BUDGET).clamp(16, MAX_WINDOW)
}

/// The status of an `NLMSG_ERROR` or `NLMSG_DONE` payload: 0 or a negative
/// errno.
fn status(kind: u16, payload: &[u8]) -> Result<i32, DecodeError> {
    match payload.get(..4) {
        Some(b) => Ok(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        // The kernel may send an empty NLMSG_DONE.
        None if kind == NLMSG_DONE => Ok(0),
        None => Err(DecodeError::from(format!(
            "NLMSG_ERROR: expected at least 4 bytes, got {}",
            payload.len()
        ))),
    }
}

/// Walk the netlink messages of a datagram.
fn for_each_message(
    buf: &[u8],
    mut f: impl FnMut(u32, u16, &[u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut off = 0;
    while off < buf.len() {
        let msg = NetlinkBuffer::new_checked(&buf[off..])?;
        let len = msg.length() as usize;
        f(msg.sequence_number(), msg.message_type(), msg.payload())?;
        off += (len + 3) & !3;
    }
    Ok(())
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

/// Read the destinations of one service on `conn`.
fn dump_destinations(
    conn: &mut Conn,
    family: u16,
    key: &ServiceKey,
) -> Result<Vec<DestinationEntry>, Error> {
    let read = Read::Destinations(*key);
    conn.tx.clear();
    let seq = conn.push_ipvs(family, read.message(), NLM_F_REQUEST | NLM_F_DUMP);
    let af = key.family();
    let mut out = Vec::new();
    let result = conn.transact(seq, |kind, payload| {
        let msg = parse_ipvs(kind, payload)?;
        let attrs = msg.dest().ok_or_else(|| missing("IPVS_CMD_ATTR_DEST"))?;
        out.push(dest::parse_entry(attrs, af)?);
        Ok(())
    });
    conn.tx.clear();
    result.map_err(|f| name_read(&read, f))?;
    Ok(out)
}

fn name_read(read: &Read, fail: Fail) -> Error {
    match fail {
        Fail::Errno(errno) => read_error(read, errno),
        Fail::Io(source) => Error::Io {
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
        Fail::Io(source) => Error::Io {
            op: op.to_string(),
            source,
        },
        Fail::Decode(source) => Error::Decode {
            op: op.to_string(),
            source,
        },
    }
}

fn socket_error(source: io::Error) -> Error {
    Error::Io {
        op: "open a generic-netlink socket".into(),
        source,
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
    conn: Conn,
    /// Extra sockets for parallel table reads, opened on first use.
    spare: Vec<Conn>,
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
            .field("window", &self.conn.window)
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
        let mut conn = Conn::open().map_err(socket_error)?;
        let family = resolve(&mut conn)?;
        // Each dump waits on the kernel more than it computes: more sockets
        // than cores still help (measured in the lab with 2 vCPUs at 10k
        // services: 1 socket 4.3 s, 4 sockets 2.5 s).
        let dump_threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(4, 8);
        Ok(Client {
            family,
            conn,
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
        self.batch.requests(self.conn.window)
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

    fn conn(&mut self) -> Result<&mut Conn, Error> {
        Client::conn_of(&mut self.conn)
    }

    /// `conn`, replaced first if broken, with an empty send buffer.
    fn conn_of(conn: &mut Conn) -> Result<&mut Conn, Error> {
        if conn.broken {
            *conn = Conn::open().map_err(socket_error)?;
        }
        conn.tx.clear();
        Ok(conn)
    }

    /// A read that answers with one message.
    fn get<T>(
        &mut self,
        read: Read,
        mut parse: impl FnMut(&IpvsMessage) -> Result<T, DecodeError>,
    ) -> Result<T, Error> {
        let family = self.family;
        let conn = self.conn()?;
        let seq = conn.push_ipvs(family, read.message(), NLM_F_REQUEST | NLM_F_ACK);
        let mut out = None;
        let result = conn.transact(seq, |kind, payload| {
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
        let conn = self.conn()?;
        let read = Read::Services;
        let seq = conn.push_ipvs(family, read.message(), NLM_F_REQUEST | NLM_F_DUMP);
        let mut out = Vec::new();
        let result = conn.transact(seq, |kind, payload| {
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
        dump_destinations(self.conn()?, family, service)
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
            let conn = self.conn()?;
            return keys
                .iter()
                .map(|k| dump_destinations(conn, family, k))
                .collect();
        }
        self.conn()?;
        for c in &mut self.spare {
            if c.broken {
                *c = Conn::open().map_err(socket_error)?;
            }
        }
        while self.spare.len() < threads - 1 {
            self.spare.push(Conn::open().map_err(socket_error)?);
        }
        let next = AtomicUsize::new(0);
        let work = |conn: &mut Conn| {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(key) = keys.get(i) else { break };
                let result = dump_destinations(conn, family, key);
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
        let (main, spare) = (&mut self.conn, &mut self.spare[..threads - 1]);
        std::thread::scope(|s| {
            let handles: Vec<_> = spare
                .iter_mut()
                .map(|conn| s.spawn(move || work(conn)))
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
        let conn = self.conn()?;
        let seq = conn.push_ipvs(family, op.message(), NLM_F_REQUEST | NLM_F_ACK);
        conn.transact(seq, |_, _| Ok(()))
            .map_err(|f| name_op(op, f))
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
        let (batch, longest) = (&mut self.batch, &mut self.longest_send);
        let conn = match Client::conn_of(&mut self.conn) {
            Ok(conn) => conn,
            Err(e) => {
                let e = match e {
                    Error::Io { source, .. } => source,
                    other => io::Error::other(other.to_string()),
                };
                return ops
                    .iter()
                    .map(|op| {
                        Err(Error::Io {
                            op: op.to_string(),
                            source: copy_io(&e),
                        })
                    })
                    .collect();
            }
        };
        pipeline(conn, family, ops, batch, longest)
            .into_iter()
            .zip(ops)
            .map(|(r, op)| r.map_err(|f| name_op(op, f)))
            .collect()
    }
}

/// Pipeline `ops` on `conn`: the pure bookkeeping of windows and sequence
/// numbers around `send` and `recv`.
fn pipeline(
    conn: &mut Conn,
    family: u16,
    ops: &[Op],
    batch: &mut Batch,
    longest: &mut Duration,
) -> Vec<Result<(), Fail>> {
    let mut results: Vec<Option<Result<(), Fail>>> = (0..ops.len()).map(|_| None).collect();
    let mut next = 0;
    while next < ops.len() {
        conn.tx.clear();
        let start = next;
        let base = conn.seq.wrapping_add(1);
        let window = batch.requests(conn.window);
        while next < ops.len() && next - start < window && conn.tx.len() < MAX_SEND {
            conn.push_ipvs(family, ops[next].message(), NLM_F_REQUEST | NLM_F_ACK);
            next += 1;
        }
        let slots = &mut results[start..next];
        // The kernel runs the requests inside `sendmsg`: its time is theirs.
        let sent_at = Instant::now();
        let sent = conn.send();
        let took = sent_at.elapsed();
        *longest = (*longest).max(took);
        if let Batch::Paced(n) = batch {
            *n = paced_window(*n, next - start, took, MAX_WINDOW);
        }
        if let Err(e) = sent {
            for slot in slots.iter_mut() {
                *slot = Some(Err(Fail::Io(copy_io(&e))));
            }
            continue;
        }
        collect_acks(conn, base, slots);
    }
    conn.tx.clear();
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Fail::Io(io::Error::other("no acknowledgement")))))
        .collect()
}

/// Read acknowledgements for the requests `base..base + slots.len()` into
/// their slots until every slot is filled or the socket fails.
fn collect_acks(conn: &mut Conn, base: u32, slots: &mut [Option<Result<(), Fail>>]) {
    let mut pending = slots.len();
    let mut record = |conn: &Conn, n: usize, pending: &mut usize| {
        for (seq, code) in (0..n).filter_map(|i| ack_of(conn.ack_datagram(i))) {
            if let Some(slot @ None) = slots.get_mut(seq.wrapping_sub(base) as usize) {
                *slot = Some(match code {
                    0 => Ok(()),
                    code => Err(Fail::Errno(code.saturating_neg())),
                });
                *pending -= 1;
            }
        }
    };
    while pending > 0 {
        match conn.recv_acks(0) {
            Ok(n) => record(conn, n, &mut pending),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // The receive buffer overflowed and acknowledgements were
                // dropped: read what is left, the rest is unknown.
                while let Ok(n) = conn.recv_acks(libc::MSG_DONTWAIT) {
                    record(conn, n, &mut pending);
                }
                break;
            }
            Err(e) => {
                conn.broken = true;
                fill(slots, || Fail::Io(copy_io(&e)));
                return;
            }
        }
    }
    fill(slots, || {
        Fail::Io(io::Error::other(
            "acknowledgement lost (ENOBUFS): outcome unknown",
        ))
    });
}

/// The sequence number and status of an acknowledgement datagram (possibly
/// truncated to its slot: the first 20 bytes hold all we need); `None` for
/// anything else.
fn ack_of(datagram: &[u8]) -> Option<(u32, i32)> {
    let field = |at: usize| -> Option<[u8; 4]> { datagram.get(at..at + 4)?.try_into().ok() };
    let kind = u16::from_ne_bytes(datagram.get(4..6)?.try_into().ok()?);
    if kind != NLMSG_ERROR {
        return None;
    }
    Some((
        u32::from_ne_bytes(field(8)?),
        i32::from_ne_bytes(field(16)?),
    ))
}

fn fill(slots: &mut [Option<Result<(), Fail>>], fail: impl Fn() -> Fail) {
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        *slot = Some(Err(fail()));
    }
}

/// Ask the generic-netlink controller for the `IPVS` family id.
fn resolve(conn: &mut Conn) -> Result<u16, Error> {
    let mut msg = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(IPVS_GENL_NAME.to_owned())],
    });
    msg.finalize();
    conn.tx.clear();
    let seq = conn.push(msg, NLM_F_REQUEST | NLM_F_ACK);
    let mut id = None;
    // CTRL_ATTR_FAMILY_ID, read by hand: the rest of the reply (ops,
    // policies, groups) is not ours to judge.
    const CTRL_ATTR_FAMILY_ID: u16 = 1;
    let result = conn.transact(seq, |_, payload| {
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
    conn.tx.clear();
    let op = "resolve the IPVS generic-netlink family";
    match result {
        Ok(()) => id.ok_or_else(|| Error::Decode {
            op: op.into(),
            source: missing("CTRL_ATTR_FAMILY_ID"),
        }),
        Err(Fail::Errno(errno)) => Err(resolve_error(errno)),
        Err(Fail::Io(source)) => Err(Error::Io {
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

    #[test]
    fn window_follows_receive_buffer() {
        assert_eq!(window_for(212_992), 104);
        assert_eq!(window_for(8 << 20), MAX_WINDOW);
        assert_eq!(window_for(0), 16);
    }

    #[test]
    fn walks_messages_and_rejects_truncation() {
        // Two acks (NLMSG_ERROR, code 0) for seq 7 and 8, then a truncated header.
        let mut buf = Vec::new();
        for seq in [7u32, 8] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&0i32.to_ne_bytes());
            buf.extend_from_slice(&[0; 16]);
        }
        let mut seen = Vec::new();
        for_each_message(&buf, |seq, kind, payload| {
            seen.push((seq, kind, status(kind, payload)?));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(7, NLMSG_ERROR, 0), (8, NLMSG_ERROR, 0)]);
        buf.extend_from_slice(&[40, 0, 0, 0, 2, 0]);
        assert!(for_each_message(&buf, |_, _, _| Ok(())).is_err());
    }

    #[test]
    fn acks_are_read_from_truncated_datagrams() {
        let mut ack = Vec::new();
        ack.extend_from_slice(&36u32.to_ne_bytes());
        ack.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        ack.extend_from_slice(&0u16.to_ne_bytes());
        ack.extend_from_slice(&9u32.to_ne_bytes());
        ack.extend_from_slice(&0u32.to_ne_bytes());
        ack.extend_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(ack_of(&ack), Some((9, -libc::EEXIST)));
        assert_eq!(ack_of(&ack[..19]), None);
        ack[4] = 0x24;
        assert_eq!(ack_of(&ack), None, "not an ack");
        assert_eq!(ack_of(&[]), None);
    }

    #[test]
    fn status_reads_errno_and_empty_done() {
        assert_eq!(status(NLMSG_ERROR, &(-17i32).to_ne_bytes()).unwrap(), -17);
        assert_eq!(status(NLMSG_DONE, &[]).unwrap(), 0);
        assert!(status(NLMSG_ERROR, &[1, 2]).is_err());
    }
}
