//! The socket: setup, the send buffer, one request's answer, and pipelined
//! acknowledgements.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::Error;
use crate::message::{Message, NLMSG_DONE, NLMSG_ERROR, NLMSG_MIN_TYPE, ack_of, messages, status};

/// Bytes per `recv`: the kernel never builds a netlink skb larger than
/// 32 KiB for a dump.
const RX_BUF: usize = 64 * 1024;
/// Receive-buffer bytes reserved per outstanding acknowledgement: an ack is
/// a small skb whose true size (with `sk_buff` and shared info) stays below
/// this.
const ACK_BUDGET: usize = 2048;
/// Fewest and most requests [`Socket::ack_window`] allows in flight.
const MIN_WINDOW: usize = 16;
const MAX_WINDOW: usize = 1024;
/// Acknowledgements received per `recvmmsg`.
const ACK_SLOTS: usize = 64;
/// Bytes per acknowledgement slot: an ack is 36 bytes with `NETLINK_CAP_ACK`
/// (without it an error ack echoes the request, and its first 20 bytes,
/// all that is read, still fit). A data reply landing in a slot is cut
/// short and skipped.
const ACK_SLOT: usize = 512;
/// Send buffer kept above the largest datagram sent, for the kernel's own
/// accounting.
const SNDBUF_SLACK: usize = 64 * 1024;

/// How a socket is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Receive buffer to ask for, in bytes: `SO_RCVBUFFORCE` (needs
    /// `CAP_NET_ADMIN`), else `SO_RCVBUF` (capped by `net.core.rmem_max`).
    /// It bounds how many requests [`Socket::acknowledgements`] can have in
    /// flight.
    pub receive_buffer: usize,
    /// How long a reply may take before the request fails with
    /// [`Error::Timeout`].
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            receive_buffer: 4 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// One blocking netlink socket connected to the kernel, with its send
/// buffer and sequence numbers.
///
/// Requests are appended to the send buffer with [`push`](Socket::push)
/// and leave in one `sendmsg` with [`request`](Socket::request) (one
/// request, its answer read) or [`acknowledgements`](Socket::acknowledgements)
/// (many requests, one result each). Replies to other sequence numbers are
/// skipped.
pub struct Socket {
    protocol: isize,
    options: Options,
    socket: netlink_sys::Socket,
    seq: u32,
    tx: Vec<u8>,
    rx: Vec<u8>,
    /// `ACK_SLOTS` slots of `ACK_SLOT` bytes, and the length of each
    /// datagram the last `recvmmsg` put in them.
    acks: Vec<u8>,
    ack_lens: [usize; ACK_SLOTS],
    /// The receive buffer the kernel granted.
    rcvbuf: usize,
    /// The send buffer set so far (0: the kernel's default).
    sndbuf: usize,
    /// Set after a failure that may have left replies unread: the socket
    /// is replaced before its next send.
    broken: bool,
    requests: u64,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("protocol", &self.protocol)
            .field("rcvbuf", &self.rcvbuf)
            .field("seq", &self.seq)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

fn setsockopt<T>(socket: &netlink_sys::Socket, level: i32, name: i32, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes for the
    // duration of the call, and the fd is owned by `socket`.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
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

/// A socket of `protocol` set up per `options`; the receive buffer granted.
fn connect(protocol: isize, options: &Options) -> io::Result<(netlink_sys::Socket, usize)> {
    let mut socket = netlink_sys::Socket::new(protocol)?;
    socket.bind_auto()?;
    // Connected to the kernel: no other process can send to this port.
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    // Error acks without a copy of the request: smaller, more fit.
    let _ = socket.set_cap_ack(true);
    let want = options.receive_buffer.min(i32::MAX as usize) as libc::c_int;
    if setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &want).is_err() {
        let _ = socket.set_rx_buf_sz(want);
    }
    let timeout = libc::timeval {
        tv_sec: options.timeout.as_secs() as libc::time_t,
        tv_usec: options.timeout.subsec_micros() as libc::suseconds_t,
    };
    setsockopt(&socket, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
    let rcvbuf = socket.get_rx_buf_sz().unwrap_or(212_992);
    Ok((socket, rcvbuf))
}

/// Requests in flight for a receive buffer of `rcvbuf` bytes.
fn window_for(rcvbuf: usize) -> usize {
    (rcvbuf / ACK_BUDGET).clamp(MIN_WINDOW, MAX_WINDOW)
}

impl Socket {
    /// Opens a socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_GENERIC`,
    /// `NETLINK_NETFILTER`, …).
    pub fn open(protocol: isize, options: Options) -> Result<Socket, Error> {
        let (socket, rcvbuf) = connect(protocol, &options).map_err(Error::Socket)?;
        Ok(Socket {
            protocol,
            options,
            socket,
            seq: 0,
            tx: Vec::with_capacity(4096),
            rx: Vec::with_capacity(RX_BUF),
            acks: Vec::new(),
            ack_lens: [0; ACK_SLOTS],
            rcvbuf,
            sndbuf: 0,
            broken: false,
            requests: 0,
        })
    }

    /// Requests pushed since the socket was opened.
    pub fn requests_sent(&self) -> u64 {
        self.requests
    }

    /// The receive buffer the kernel granted, in bytes.
    pub fn receive_buffer(&self) -> usize {
        self.rcvbuf
    }

    /// The most requests to have in flight at once: as many as the receive
    /// buffer holds acknowledgements for (16 to 1024). Beyond it the kernel
    /// drops acknowledgements ([`Error::Overrun`]).
    pub fn ack_window(&self) -> usize {
        window_for(self.rcvbuf)
    }

    /// Appends one request: `encode` writes one whole netlink message with
    /// the sequence number it is given. Returns that number.
    pub fn push(&mut self, encode: impl FnOnce(u32, &mut Vec<u8>)) -> u32 {
        self.push_numbered(1, encode)
    }

    /// The sequence number the next [`push`](Socket::push) gives.
    pub fn next_seq(&self) -> u32 {
        self.seq.wrapping_add(1)
    }

    /// Appends `count` messages that `encode` numbers itself, consecutively
    /// from the first sequence number it is given (an nfnetlink batch).
    /// Returns that first number.
    pub fn push_numbered(&mut self, count: u32, encode: impl FnOnce(u32, &mut Vec<u8>)) -> u32 {
        let first = self.seq.wrapping_add(1);
        encode(first, &mut self.tx);
        self.seq = self.seq.wrapping_add(count);
        self.requests += u64::from(count);
        first
    }

    /// Bytes waiting in the send buffer.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Drops what waits in the send buffer.
    pub fn clear(&mut self) {
        self.tx.clear();
    }

    /// Sends the send buffer as one datagram and empties it (nothing when
    /// it is empty). The kernel runs every request in it before `sendmsg`
    /// returns.
    pub fn send(&mut self) -> Result<(), Error> {
        if self.tx.is_empty() {
            return Ok(());
        }
        let result = self.send_inner();
        self.tx.clear();
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn send_inner(&mut self) -> Result<(), Error> {
        if self.broken {
            let (socket, rcvbuf) = connect(self.protocol, &self.options).map_err(Error::Socket)?;
            (self.socket, self.rcvbuf, self.sndbuf) = (socket, rcvbuf, 0);
            self.broken = false;
        }
        if self.tx.len() + SNDBUF_SLACK > self.sndbuf.max(208 * 1024) {
            // One datagram must fit the send buffer (an nfnetlink batch can
            // be megabytes). SO_SNDBUFFORCE needs CAP_NET_ADMIN.
            let want = (self.tx.len() + SNDBUF_SLACK).min(i32::MAX as usize) as libc::c_int;
            if setsockopt(&self.socket, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &want).is_err() {
                let _ = setsockopt(&self.socket, libc::SOL_SOCKET, libc::SO_SNDBUF, &want);
            }
            self.sndbuf = want as usize;
        }
        loop {
            match self.socket.send(&self.tx, 0) {
                Ok(n) if n == self.tx.len() => return Ok(()),
                Ok(n) => {
                    return Err(Error::Socket(io::Error::other(format!(
                        "sent {n} of {} bytes",
                        self.tx.len()
                    ))));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Socket(e)),
            }
        }
    }

    /// The failure of a receive call.
    fn receive_error(&self, e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::ENOBUFS) => Error::Overrun,
            Some(libc::EAGAIN) => Error::Timeout(self.options.timeout),
            _ => Error::Socket(e),
        }
    }

    /// Receives one datagram into `rx`.
    fn receive(&mut self) -> Result<(), Error> {
        loop {
            self.rx.clear();
            match self.socket.recv(&mut self.rx, libc::MSG_TRUNC) {
                Ok(n) if n > self.rx.len() => {
                    return Err(Error::Malformed(format!(
                        "a datagram of {n} bytes cut to {}",
                        self.rx.len()
                    )));
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.receive_error(e)),
            }
        }
    }

    /// Sends what is queued (one request, sequence number `seq`) and reads
    /// its answer: each data message of the reply, or of every part of a
    /// dump, goes to `each`, until the acknowledgement, `NLMSG_DONE`, or
    /// the kernel's error ([`Error::Kernel`]).
    pub fn request(&mut self, seq: u32, mut each: impl FnMut(Message<'_>)) -> Result<(), Error> {
        self.send()?;
        let result = self.answer(seq, &mut each);
        if matches!(result, Err(ref e) if e.errno().is_none()) {
            self.broken = true;
        }
        result
    }

    fn answer(&mut self, seq: u32, each: &mut dyn FnMut(Message<'_>)) -> Result<(), Error> {
        loop {
            self.receive()?;
            let mut done = None;
            for m in messages(&self.rx) {
                let m = m?;
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_ERROR | NLMSG_DONE => {
                        done = Some(status(m.kind, m.payload)?);
                        break;
                    }
                    // NOOP, OVERRUN and the reserved control types.
                    0..NLMSG_MIN_TYPE => {}
                    _ => each(m),
                }
            }
            match done {
                None => continue,
                Some(0) => return Ok(()),
                Some(code) => {
                    return Err(Error::Kernel {
                        errno: code.saturating_neg(),
                    });
                }
            }
        }
    }

    /// Sends what is queued, requests `first..first + count` each with
    /// `NLM_F_ACK`, and reads their acknowledgements: one result per
    /// request, in order. A refused request neither stops nor hides the
    /// others. Keep `count` within [`ack_window`](Socket::ack_window): an
    /// acknowledgement the overflowing receive buffer dropped is
    /// [`Error::Overrun`].
    pub fn acknowledgements(&mut self, first: u32, count: usize) -> Vec<Result<(), Error>> {
        let mut slots: Vec<Option<Result<(), Error>>> = (0..count).map(|_| None).collect();
        match self.send() {
            Ok(()) => self.collect_acks(first, &mut slots),
            Err(e) => fill(&mut slots, || e.duplicate()),
        }
        slots
            .into_iter()
            .map(|s| s.unwrap_or(Err(Error::Overrun)))
            .collect()
    }

    fn collect_acks(&mut self, first: u32, slots: &mut [Option<Result<(), Error>>]) {
        let mut pending = slots.len();
        let mut record = |socket: &Socket, n: usize, pending: &mut usize| {
            for (seq, code) in (0..n).filter_map(|i| ack_of(socket.ack_datagram(i))) {
                if let Some(slot @ None) = slots.get_mut(seq.wrapping_sub(first) as usize) {
                    *slot = Some(match code {
                        0 => Ok(()),
                        code => Err(Error::Kernel {
                            errno: code.saturating_neg(),
                        }),
                    });
                    *pending -= 1;
                }
            }
        };
        while pending > 0 {
            match self.receive_acks(0) {
                Ok(n) => record(self, n, &mut pending),
                Err(Error::Overrun) => {
                    // Acknowledgements were dropped: read what is left; the
                    // rest stays unknown (Overrun).
                    while let Ok(n) = self.receive_acks(libc::MSG_DONTWAIT) {
                        if n == 0 {
                            break;
                        }
                        record(self, n, &mut pending);
                    }
                    return;
                }
                Err(e) => {
                    self.broken = true;
                    fill(slots, || e.duplicate());
                    return;
                }
            }
        }
    }

    /// Receives up to `ACK_SLOTS` datagrams in one `recvmmsg` (waiting for
    /// the first only, unless `flags` says not to); returns how many.
    fn receive_acks(&mut self, flags: i32) -> Result<usize, Error> {
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
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(self.receive_error(e));
            }
        }
    }

    /// Datagram `i` of the last [`receive_acks`](Socket::receive_acks).
    fn ack_datagram(&self, i: usize) -> &[u8] {
        &self.acks[i * ACK_SLOT..i * ACK_SLOT + self.ack_lens[i]]
    }
}

fn fill(slots: &mut [Option<Result<(), Error>>], fail: impl Fn() -> Error) {
    for slot in slots.iter_mut().filter(|s| s.is_none()) {
        *slot = Some(Err(fail()));
    }
}

const _: () = {
    const fn assert_send<T: Send>() {}
    assert_send::<Socket>();
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_follows_the_receive_buffer() {
        assert_eq!(window_for(0), MIN_WINDOW);
        assert_eq!(window_for(212_992), 104);
        assert_eq!(window_for(8 << 20), MAX_WINDOW);
    }
}
