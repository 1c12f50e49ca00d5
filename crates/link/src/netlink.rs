//! A blocking rtnetlink connection with its own request/ack loop: single
//! requests, dumps, and pipelined batches whose acknowledgements are matched
//! by sequence number.

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use std::collections::HashMap;
use std::io;

/// Requests written per `send` in a batch: their acknowledgements (36
/// bytes each with `NETLINK_CAP_ACK`) fit the default receive buffer.
const WINDOW: usize = 256;
const RX_BUF: usize = 64 * 1024;

/// One rtnetlink socket.
pub(crate) struct Conn {
    socket: Socket,
    seq: u32,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Requests sent so far.
    pub(crate) messages: u64,
}

impl Conn {
    pub(crate) fn open() -> io::Result<Conn> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let _ = socket.set_cap_ack(true);
        Ok(Conn {
            socket,
            seq: 0,
            rx: Vec::with_capacity(RX_BUF),
            tx: Vec::new(),
            messages: 0,
        })
    }

    fn push(&mut self, msg: RouteNetlinkMessage, flags: u16) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let start = self.tx.len();
        self.tx.resize(start + m.buffer_len(), 0);
        m.serialize(&mut self.tx[start..]);
        self.messages += 1;
        self.seq
    }

    fn send(&mut self) -> io::Result<()> {
        let r = loop {
            match self.socket.send(&self.tx, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.tx.clear();
        match r? {
            0 => Err(io::Error::other("netlink send wrote nothing")),
            _ => Ok(()),
        }
    }

    /// Receives one datagram and hands each message in it to `each`.
    fn recv_each(
        &mut self,
        mut each: impl FnMut(NetlinkMessage<RouteNetlinkMessage>),
    ) -> io::Result<()> {
        loop {
            self.rx.clear();
            match self.socket.recv(&mut self.rx, 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        let mut at = 0;
        while at + 16 <= self.rx.len() {
            let len = u32::from_ne_bytes(self.rx[at..at + 4].try_into().expect("4 bytes")) as usize;
            if len < 16 || at + len > self.rx.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "truncated netlink message",
                ));
            }
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.rx[at..at + len])
                .map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("malformed rtnetlink message: {e}"),
                    )
                })?;
            each(msg);
            at += (len + 3) & !3;
        }
        Ok(())
    }

    /// A dump: every reply message until `NLMSG_DONE`.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.push(msg, NLM_F_DUMP);
        self.send()?;
        let mut out = Vec::new();
        let mut done = false;
        let mut err = None;
        while !done {
            self.recv_each(|m| {
                if m.header.sequence_number != seq {
                    return;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(i) => out.push(i),
                    NetlinkPayload::Done(_) => done = true,
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        err = Some(e.to_io());
                        done = true;
                    }
                    _ => {}
                }
            })?;
        }
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// A request with an answer (`NLM_F_ECHO`-less get): the reply
    /// messages, or the kernel's error.
    pub(crate) fn get(&mut self, msg: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        let seq = self.push(msg, NLM_F_ACK);
        self.send()?;
        let mut out = Vec::new();
        let mut result = None;
        while result.is_none() {
            self.recv_each(|m| {
                if m.header.sequence_number != seq {
                    return;
                }
                match m.payload {
                    NetlinkPayload::InnerMessage(i) => out.push(i),
                    NetlinkPayload::Error(e) => result = Some(e.code.map(|_| e.to_io())),
                    NetlinkPayload::Done(_) => result = Some(None),
                    _ => {}
                }
            })?;
        }
        match result.flatten() {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Sends the requests pipelined, `WINDOW` at a time, each with
    /// `NLM_F_ACK | flags`; one result per request, in order.
    pub(crate) fn batch(
        &mut self,
        msgs: Vec<RouteNetlinkMessage>,
        flags: u16,
    ) -> Vec<io::Result<()>> {
        let mut results: Vec<Option<io::Result<()>>> = (0..msgs.len()).map(|_| None).collect();
        let mut msgs = msgs.into_iter().enumerate().peekable();
        while msgs.peek().is_some() {
            let mut pending: HashMap<u32, usize> = HashMap::new();
            for (i, m) in msgs.by_ref().take(WINDOW) {
                let seq = self.push(m, NLM_F_ACK | flags);
                pending.insert(seq, i);
            }
            if let Err(e) = self.send() {
                for (_, i) in pending {
                    results[i] = Some(Err(io::Error::new(e.kind(), e.to_string())));
                }
                continue;
            }
            while !pending.is_empty() {
                let r = self.recv_each(|m| {
                    if let NetlinkPayload::Error(e) = &m.payload
                        && let Some(i) = pending.remove(&m.header.sequence_number)
                    {
                        results[i] = Some(match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        });
                    }
                });
                if let Err(e) = r {
                    for (_, i) in pending.drain() {
                        results[i] = Some(Err(io::Error::new(e.kind(), e.to_string())));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(io::Error::other("no acknowledgement"))))
            .collect()
    }
}
