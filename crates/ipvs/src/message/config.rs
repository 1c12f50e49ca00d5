//! Timeouts (`IPVS_CMD_SET_CONFIG` / `IPVS_CMD_GET_CONFIG`): three top-level
//! u32 attributes, `IPVS_CMD_ATTR_TIMEOUT_{TCP,TCP_FIN,UDP}`, in seconds.

use netlink_packet_core::DecodeError;

use super::{IpvsAttr, IpvsCmd, IpvsMessage};
use crate::types::Timeouts;

/// The `SET_CONFIG` request for timeouts. Like `ipvsadm --set`, a zero value
/// is left out, which leaves the kernel's value unchanged.
pub fn set_timeouts(t: &Timeouts) -> IpvsMessage {
    let mut attrs = Vec::with_capacity(3);
    if t.tcp != 0 {
        attrs.push(IpvsAttr::TimeoutTcp(t.tcp));
    }
    if t.tcp_fin != 0 {
        attrs.push(IpvsAttr::TimeoutTcpFin(t.tcp_fin));
    }
    if t.udp != 0 {
        attrs.push(IpvsAttr::TimeoutUdp(t.udp));
    }
    IpvsMessage::new(IpvsCmd::SetConfig, attrs)
}

/// The kernel's reply to `GET_CONFIG` (command `SET_CONFIG`, all three
/// attributes). For tests and fakes.
pub fn timeouts_reply(t: &Timeouts) -> IpvsMessage {
    IpvsMessage::new(
        IpvsCmd::SetConfig,
        vec![
            IpvsAttr::TimeoutTcp(t.tcp),
            IpvsAttr::TimeoutTcpFin(t.tcp_fin),
            IpvsAttr::TimeoutUdp(t.udp),
        ],
    )
}

/// The timeouts of a `GET_CONFIG` reply; all three must be present.
pub fn parse_timeouts(msg: &IpvsMessage) -> Result<Timeouts, DecodeError> {
    let (mut tcp, mut fin, mut udp) = (None, None, None);
    for a in &msg.attrs {
        match a {
            IpvsAttr::TimeoutTcp(v) => tcp = Some(*v),
            IpvsAttr::TimeoutTcpFin(v) => fin = Some(*v),
            IpvsAttr::TimeoutUdp(v) => udp = Some(*v),
            _ => {}
        }
    }
    let missing = |name: &str| DecodeError::from(format!("{name}: missing"));
    Ok(Timeouts {
        tcp: tcp.ok_or_else(|| missing("IPVS_CMD_ATTR_TIMEOUT_TCP"))?,
        tcp_fin: fin.ok_or_else(|| missing("IPVS_CMD_ATTR_TIMEOUT_TCP_FIN"))?,
        udp: udp.ok_or_else(|| missing("IPVS_CMD_ATTR_TIMEOUT_UDP"))?,
    })
}
