//! Decoding whatever the kernel might send never panics: the generic
//! netlink header and attributes, then every typed view of them.
//!
//! The first byte picks the netlink message type the reply claims (the
//! family id is only checked against the parsed header), the rest is the
//! payload. Run with `cargo fuzz run decode_reply` from `crates/ipvs`.

#![no_main]

use kipvs_ipvs::AddressFamily;
use kipvs_ipvs::message::{config, dest, info, parse_reply, service};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let family = 0x20 + u16::from(kind & 0x0f);
    if let Ok(msg) = parse_reply(family, payload) {
        let _ = msg.service().map(service::parse_entry);
        let _ = msg.service().map(service::parse_key);
        for af in [AddressFamily::Inet, AddressFamily::Inet6] {
            let _ = msg.dest().map(|d| dest::parse_entry(d, af));
        }
        let _ = config::parse_timeouts(&msg);
        let _ = info::parse_info(&msg);
    }
});
