//! The transport against the running kernel, through requests any process
//! may make: rtnetlink link lookups and the generic-netlink controller's
//! family dump. No privilege, module or namespace is needed, so these run on
//! the host and in the lab alike.

use std::time::Duration;

use kipvs_netlink::{
    Error, Message, NLM_F_ACK, NLM_F_DUMP, NLM_F_MULTI, NLM_F_REQUEST, NLMSG_HDRLEN, Options,
    Socket,
};

const NETLINK_ROUTE: isize = 0;
const NETLINK_GENERIC: isize = 16;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// An interface index no test machine has.
const NO_SUCH_LINK: i32 = 0x7fff_0000;

fn header(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, body: &[u8]) {
    out.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
}

/// `RTM_GETLINK` for one interface index (`struct ifinfomsg`).
fn get_link(index: i32, flags: u16) -> impl FnOnce(u32, &mut Vec<u8>) {
    move |seq, out| {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&index.to_ne_bytes());
        header(out, RTM_GETLINK, NLM_F_REQUEST | flags, seq, &body);
    }
}

fn index_of(m: &Message<'_>) -> i32 {
    i32::from_ne_bytes(m.payload[4..8].try_into().unwrap())
}

fn route() -> Socket {
    Socket::open(NETLINK_ROUTE, Options::default()).unwrap()
}

#[test]
fn an_acknowledged_request_hands_over_its_reply_and_ends_at_the_ack() {
    let mut s = route();
    let seq = s.push(get_link(1, NLM_F_ACK));
    let mut replies = Vec::new();
    s.request(seq, |m| replies.push((m.kind, index_of(&m))))
        .unwrap();
    assert_eq!(replies, vec![(RTM_NEWLINK, 1)]);
    assert_eq!(s.requests_sent(), 1);
}

#[test]
fn a_refused_request_keeps_the_kernels_errno() {
    let mut s = route();
    let seq = s.push(get_link(NO_SUCH_LINK, NLM_F_ACK));
    let err = s.request(seq, |_| panic!("no reply expected")).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
    // The socket goes on.
    let seq = s.push(get_link(1, NLM_F_ACK));
    s.request(seq, |_| {}).unwrap();
}

#[test]
fn a_multi_part_dump_is_read_to_its_end() {
    let mut s = Socket::open(NETLINK_GENERIC, Options::default()).unwrap();
    let seq = s.push(|seq, out| {
        header(
            out,
            GENL_ID_CTRL,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            &[CTRL_CMD_GETFAMILY, 1, 0, 0],
        )
    });
    let mut names = Vec::new();
    s.request(seq, |m| {
        assert_ne!(m.flags & NLM_F_MULTI, 0, "a dump's parts are NLM_F_MULTI");
        // Attributes after the 4-byte generic header.
        let mut a = &m.payload[4..];
        while a.len() >= 4 {
            let len = u16::from_ne_bytes([a[0], a[1]]) as usize;
            let kind = u16::from_ne_bytes([a[2], a[3]]);
            if kind == CTRL_ATTR_FAMILY_NAME {
                names.push(String::from_utf8_lossy(&a[4..len - 1]).into_owned());
            }
            a = &a[((len + 3) & !3).min(a.len())..];
        }
    })
    .unwrap();
    assert!(names.iter().any(|n| n == "nlctrl"), "{names:?}");
    assert!(names.len() > 1, "{names:?}");
}

#[test]
fn pipelined_requests_get_one_result_each_in_order() {
    let mut s = route();
    let indexes = [1, NO_SUCH_LINK, 1, NO_SUCH_LINK, 1];
    let first = s.push(get_link(indexes[0], NLM_F_ACK));
    for &i in &indexes[1..] {
        s.push(get_link(i, NLM_F_ACK));
    }
    let results = s.acknowledgements(first, indexes.len());
    let errnos: Vec<Option<i32>> = results
        .iter()
        .map(|r| r.as_ref().err().map(|e| e.errno().unwrap()))
        .collect();
    assert_eq!(
        errnos,
        vec![None, Some(libc::ENODEV), None, Some(libc::ENODEV), None]
    );
}

#[test]
fn an_overflowing_receive_buffer_is_a_typed_error_not_a_hang() {
    let mut s = Socket::open(
        NETLINK_ROUTE,
        Options {
            receive_buffer: 4096,
            timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    // Each request is answered with a link message and an ack: far more
    // than a 4 KiB receive buffer holds while nothing reads it.
    let n = 400;
    let first = s.push(get_link(1, NLM_F_ACK));
    for _ in 1..n {
        s.push(get_link(1, NLM_F_ACK));
    }
    let results = s.acknowledgements(first, n);
    assert_eq!(results.len(), n);
    let overrun = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Overrun)))
        .count();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(overrun > 0, "no acknowledgement was lost");
    assert_eq!(ok + overrun, n, "{results:?}");
    // The next request is answered.
    let seq = s.push(get_link(1, NLM_F_ACK));
    s.request(seq, |_| {}).unwrap();
}

#[test]
fn a_request_left_unanswered_times_out_and_the_socket_recovers() {
    let mut s = Socket::open(
        NETLINK_ROUTE,
        Options {
            timeout: Duration::from_millis(300),
            ..Options::default()
        },
    )
    .unwrap();
    // Without NLM_F_ACK the kernel sends the link and no acknowledgement.
    let seq = s.push(get_link(1, 0));
    let mut replies = 0;
    let err = s.request(seq, |_| replies += 1).unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
    assert_eq!(replies, 1);
    let seq = s.push(get_link(1, NLM_F_ACK));
    s.request(seq, |_| {}).unwrap();
}
