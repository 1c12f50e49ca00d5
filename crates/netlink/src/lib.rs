//! One small blocking netlink transport, shared by kipvs's kernel crates
//! (`kipvs-ipvs` over generic netlink, `kipvs-link` over rtnetlink,
//! `kipvs-nft` and `kipvs-conntrack` over nfnetlink).
//!
//! It knows netlink framing and nothing of any family: callers encode their
//! own requests into the send buffer ([`Socket::push`]) and decode the
//! payloads handed back. What it does:
//!
//! - socket setup ([`Socket::open`]): bound, connected to the kernel (no
//!   other process can write to it), `NETLINK_CAP_ACK` (an error
//!   acknowledgement without a copy of the request), a large receive buffer
//!   (`SO_RCVBUFFORCE`, else `SO_RCVBUF`), a receive timeout;
//! - one request and its whole answer ([`Socket::request`]): the data
//!   messages of a reply or of a multi-part dump, until the acknowledgement,
//!   `NLMSG_DONE` or the kernel's error;
//! - pipelined requests ([`Socket::acknowledgements`]): many requests in one
//!   `sendmsg`, each acknowledged by sequence number (read with `recvmmsg`),
//!   each with its own result;
//! - errno mapping and typed failures ([`Error`]): the kernel's refusal keeps
//!   its errno; a receive-buffer overflow that lost acknowledgements is
//!   [`Error::Overrun`], not a hang or a guess;
//! - after a failure that may have left replies unread the socket is
//!   replaced before its next send, so one bad reply never poisons the next
//!   request.
//!
//! Messages are read with [`messages`], a pure walker over one datagram.

mod error;
mod message;
mod socket;

pub use error::Error;
pub use message::{
    Message, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_MULTI, NLM_F_REQUEST,
    NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN, NLMSG_MIN_TYPE, ack_of, messages, status,
};
pub use socket::{Options, Socket};
