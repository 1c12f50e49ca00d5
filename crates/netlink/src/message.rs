//! Netlink framing: the header constants and a pure walker over the messages
//! of one datagram.

use crate::Error;

/// Bytes of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// An acknowledgement or error: the payload starts with an `i32` status.
pub const NLMSG_ERROR: u16 = 2;
/// The end of a multi-part dump; its payload, if any, starts with a status.
pub const NLMSG_DONE: u16 = 3;
/// Types below this are netlink's own control messages.
pub const NLMSG_MIN_TYPE: u16 = 16;

pub const NLM_F_REQUEST: u16 = 0x01;
pub const NLM_F_MULTI: u16 = 0x02;
pub const NLM_F_ACK: u16 = 0x04;
/// `NLM_F_ROOT | NLM_F_MATCH`.
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_EXCL: u16 = 0x200;
pub const NLM_F_CREATE: u16 = 0x400;

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// The bytes after the header, up to the message's length.
    pub payload: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The messages of one datagram, in order. A message whose length does not
/// fit the datagram is an [`Error::Malformed`] and ends the walk.
pub fn messages(mut datagram: &[u8]) -> impl Iterator<Item = Result<Message<'_>, Error>> {
    std::iter::from_fn(move || {
        if datagram.is_empty() {
            return None;
        }
        let len = u32_at(datagram, 0).unwrap_or(0) as usize;
        if datagram.len() < NLMSG_HDRLEN || len < NLMSG_HDRLEN || len > datagram.len() {
            let e = Error::Malformed(format!(
                "a message of {len} bytes in {} bytes left of the datagram",
                datagram.len()
            ));
            datagram = &[];
            return Some(Err(e));
        }
        let msg = Message {
            kind: u16_at(datagram, 4)?,
            flags: u16_at(datagram, 6)?,
            seq: u32_at(datagram, 8)?,
            payload: &datagram[NLMSG_HDRLEN..len],
        };
        datagram = &datagram[((len + 3) & !3).min(datagram.len())..];
        Some(Ok(msg))
    })
}

/// The status of an `NLMSG_ERROR` or `NLMSG_DONE` payload: 0 or a negative
/// errno. The kernel may end a dump with an empty `NLMSG_DONE` (status 0).
pub fn status(kind: u16, payload: &[u8]) -> Result<i32, Error> {
    match payload.get(..4) {
        Some(b) => Ok(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        None if kind == NLMSG_DONE => Ok(0),
        None => Err(Error::Malformed(format!(
            "an NLMSG_ERROR of {} bytes (at least 4 expected)",
            payload.len()
        ))),
    }
}

/// The sequence number and status of an acknowledgement datagram, which may
/// be truncated (its first 20 bytes hold both); `None` for anything else.
pub fn ack_of(datagram: &[u8]) -> Option<(u32, i32)> {
    if u16_at(datagram, 4)? != NLMSG_ERROR {
        return None;
    }
    Some((u32_at(datagram, 8)?, u32_at(datagram, 16)? as i32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn nlmsg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut out = Vec::new();
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize((out.len() + 3) & !3, 0);
        out
    }

    #[test]
    fn walks_padded_messages_in_order() {
        let mut d = nlmsg(20, NLM_F_MULTI, 7, &[1, 2, 3]);
        d.extend(nlmsg(NLMSG_DONE, NLM_F_MULTI, 7, &0i32.to_ne_bytes()));
        let got: Vec<_> = messages(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].kind, got[0].seq, got[0].payload),
            (20, 7, &[1, 2, 3][..])
        );
        assert_eq!(got[0].flags, NLM_F_MULTI);
        assert_eq!(status(got[1].kind, got[1].payload).unwrap(), 0);
    }

    #[test]
    fn a_message_longer_than_the_datagram_is_malformed_and_ends_the_walk() {
        let mut d = nlmsg(20, 0, 1, &[0; 8]);
        d.truncate(20);
        let got: Vec<_> = messages(&d).collect();
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], Err(Error::Malformed(_))));
        // Fewer bytes than a header.
        assert!(matches!(
            messages(&[0u8; 5]).next(),
            Some(Err(Error::Malformed(_)))
        ));
    }

    #[test]
    fn statuses_and_acks_keep_the_errno() {
        let ack = nlmsg(NLMSG_ERROR, 0, 9, &(-17i32).to_ne_bytes());
        assert_eq!(ack_of(&ack), Some((9, -17)));
        // Truncated to the first 20 bytes, as a recvmmsg slot may hold it.
        assert_eq!(ack_of(&ack[..20]), Some((9, -17)));
        assert_eq!(ack_of(&nlmsg(16, 0, 9, &[0; 4])), None);
        assert_eq!(status(NLMSG_DONE, &[]).unwrap(), 0);
        assert!(status(NLMSG_ERROR, &[1]).is_err());
    }

    proptest! {
        #[test]
        fn no_datagram_panics_the_walker(d in proptest::collection::vec(any::<u8>(), 0..200)) {
            let total: usize = messages(&d)
                .map_while(Result::ok)
                .map(|m| NLMSG_HDRLEN + m.payload.len())
                .sum();
            prop_assert!(total <= d.len());
            let _ = ack_of(&d);
        }
    }
}
