//! rtnetlink messages over the shared transport (`kipvs-netlink`): this
//! module encodes `netlink-packet-route` requests and decodes their replies;
//! the socket, acknowledgements and dumps are the transport's.

use kipvs_netlink::{Error, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, Options, Socket};
use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;

/// One rtnetlink socket.
pub(crate) struct Conn {
    socket: Socket,
}

/// Appends `msg` with sequence number `seq` and `flags`.
fn encode(msg: RouteNetlinkMessage, flags: u16) -> impl FnOnce(u32, &mut Vec<u8>) {
    move |seq, tx| {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut m = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        m.finalize();
        let start = tx.len();
        tx.resize(start + m.buffer_len(), 0);
        m.serialize(&mut tx[start..]);
    }
}

impl Conn {
    pub(crate) fn open() -> Result<Conn, Error> {
        Ok(Conn {
            socket: Socket::open(NETLINK_ROUTE, Options::default())?,
        })
    }

    /// Requests sent so far.
    pub(crate) fn messages(&self) -> u64 {
        self.socket.requests_sent()
    }

    /// The answer to one request (`flags` beside `NLM_F_REQUEST`): every
    /// reply message, until its end or the kernel's error. A reply that
    /// does not decode is an error once the answer is read.
    fn answer(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let seq = self.socket.push(encode(msg, NLM_F_REQUEST | flags));
        let mut out = Vec::new();
        let mut bad = None;
        self.socket.request(seq, |m| {
            let mut header = NetlinkHeader::default();
            header.message_type = m.kind;
            match RouteNetlinkMessage::deserialize(&header, m.payload) {
                Ok(i) => out.push(i),
                Err(e) => {
                    bad.get_or_insert_with(|| format!("an rtnetlink message: {e}"));
                }
            }
        })?;
        match bad {
            Some(what) => Err(Error::Malformed(what)),
            None => Ok(out),
        }
    }

    /// A dump: every reply message until `NLMSG_DONE`.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.answer(msg, NLM_F_DUMP)
    }

    /// A request with an answer and an acknowledgement: the reply messages,
    /// or the kernel's error.
    pub(crate) fn get(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        self.answer(msg, NLM_F_ACK)
    }

    /// Sends the requests pipelined, as many at a time as the receive
    /// buffer holds acknowledgements for, each with `NLM_F_ACK | flags`;
    /// one result per request, in order.
    pub(crate) fn batch(
        &mut self,
        msgs: Vec<RouteNetlinkMessage>,
        flags: u16,
    ) -> Vec<Result<(), Error>> {
        let window = self.socket.ack_window();
        let mut results = Vec::with_capacity(msgs.len());
        let mut msgs = msgs.into_iter().peekable();
        while msgs.peek().is_some() {
            let mut first = None;
            let mut count = 0;
            for m in msgs.by_ref().take(window) {
                let seq = self
                    .socket
                    .push(encode(m, NLM_F_REQUEST | NLM_F_ACK | flags));
                first.get_or_insert(seq);
                count += 1;
            }
            results.extend(self.socket.acknowledgements(first.unwrap_or(0), count));
        }
        results
    }
}
