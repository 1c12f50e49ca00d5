//! Module information (`IPVS_CMD_GET_INFO`, answered with `IPVS_CMD_SET_INFO`
//! carrying `IPVS_INFO_ATTR_VERSION` and `IPVS_INFO_ATTR_CONN_TAB_SIZE`).

use netlink_packet_core::DecodeError;

use super::{IpvsAttr, IpvsCmd, IpvsMessage};
use crate::types::Info;

/// The kernel's reply to `GET_INFO`. For tests and fakes.
pub fn info_reply(info: &Info) -> IpvsMessage {
    IpvsMessage::new(
        IpvsCmd::SetInfo,
        vec![
            IpvsAttr::InfoVersion(info.version),
            IpvsAttr::InfoConnTabSize(info.conn_table_size),
        ],
    )
}

/// The information of a `GET_INFO` reply; both attributes must be present.
pub fn parse_info(msg: &IpvsMessage) -> Result<Info, DecodeError> {
    let (mut version, mut size) = (None, None);
    for a in &msg.attrs {
        match a {
            IpvsAttr::InfoVersion(v) => version = Some(*v),
            IpvsAttr::InfoConnTabSize(v) => size = Some(*v),
            _ => {}
        }
    }
    let missing = |name: &str| DecodeError::from(format!("{name}: missing"));
    Ok(Info {
        version: version.ok_or_else(|| missing("IPVS_INFO_ATTR_VERSION"))?,
        conn_table_size: size.ok_or_else(|| missing("IPVS_INFO_ATTR_CONN_TAB_SIZE"))?,
    })
}
