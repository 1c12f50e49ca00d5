//! `kipvs list --json`: the IPVS table as JSON, one object per virtual
//! server with its real servers, counters and (when the agent answers) the
//! Kubernetes Service port it serves. The schema is stable: fields are only
//! ever added. Every field, with its type, unit and when it is null or
//! absent, is described for users in `docs/json.md` (with `kipvs conns
//! --json`'s).
//!
//! ```json
//! [{"protocol": "TCP", "address": "10.96.0.10", "port": 80, "fwmark": null,
//!   "family": "IPv4", "scheduler": "rr", "flags": ["persistent"],
//!   "persistence_timeout": 10800, "netmask": "255.255.255.255",
//!   "persistence_engine": null,
//!   "service": {"name": "default/hostnames", "port": "http", "port_number": 80,
//!               "kind": "ClusterIP"},
//!   "stats": {"conns": 3, "in_packets": 18, "out_packets": 12, "in_bytes": 1200,
//!             "out_bytes": 2400, "cps": 0, "in_pps": 0, "out_pps": 0,
//!             "in_bps": 0, "out_bps": 0},
//!   "real_servers": [{"address": "10.244.1.2", "port": 9376, "forward": "masq",
//!     "weight": 1, "upper_threshold": 0, "lower_threshold": 0,
//!     "active_conns": 0, "inactive_conns": 1, "persistent_conns": 0,
//!     "stats": {…}}]}]
//! ```

use kipvs_ipvs::{Forward, ServiceFlags, ServiceKey, Stats, TableEntry};
use kipvs_proxy::api::VirtualServerInfo;
use serde::Serialize;
use std::net::IpAddr;

#[derive(Debug, Serialize)]
pub struct VirtualServer {
    pub protocol: Option<String>,
    pub address: Option<IpAddr>,
    pub port: Option<u16>,
    pub fwmark: Option<u32>,
    pub family: String,
    pub scheduler: String,
    pub flags: Vec<String>,
    pub persistence_timeout: Option<u32>,
    pub netmask: String,
    pub persistence_engine: Option<String>,
    pub service: Option<ServicePort>,
    pub stats: StatsJson,
    pub real_servers: Vec<RealServer>,
}

#[derive(Debug, Serialize)]
pub struct ServicePort {
    pub name: String,
    /// The Service port's name, or its number (as a string) when unnamed:
    /// what `kipvs list` shows after `namespace/name:`.
    pub port: String,
    /// The Service port's number; absent when the agent is older.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u16>,
    pub kind: String,
}

#[derive(Debug, Serialize)]
pub struct RealServer {
    pub address: IpAddr,
    pub port: u16,
    pub forward: String,
    pub weight: u32,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persistent_conns: u32,
    pub stats: StatsJson,
}

#[derive(Debug, Serialize)]
pub struct StatsJson {
    pub conns: u64,
    pub in_packets: u64,
    pub out_packets: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub cps: u64,
    pub in_pps: u64,
    pub out_pps: u64,
    pub in_bps: u64,
    pub out_bps: u64,
}

impl From<&Stats> for StatsJson {
    fn from(s: &Stats) -> Self {
        StatsJson {
            conns: s.conns,
            in_packets: s.inpkts,
            out_packets: s.outpkts,
            in_bytes: s.inbytes,
            out_bytes: s.outbytes,
            cps: s.cps,
            in_pps: s.inpps,
            out_pps: s.outpps,
            in_bps: s.inbps,
            out_bps: s.outbps,
        }
    }
}

fn forward_name(f: Forward) -> String {
    match f {
        Forward::Masquerade => "masq".into(),
        Forward::Local => "local".into(),
        Forward::Tunnel => "tunnel".into(),
        Forward::Route => "route".into(),
        Forward::Bypass => "bypass".into(),
        Forward::Other(v) => format!("other-{v}"),
    }
}

fn flag_names(flags: ServiceFlags) -> Vec<String> {
    [
        (ServiceFlags::PERSISTENT, "persistent"),
        (ServiceFlags::ONE_PACKET, "one-packet"),
        (ServiceFlags::SCHED1, "flag-1"),
        (ServiceFlags::SCHED2, "flag-2"),
        (ServiceFlags::SCHED3, "flag-3"),
    ]
    .into_iter()
    .filter(|(f, _)| flags.contains(*f))
    .map(|(_, n)| n.to_owned())
    .collect()
}

/// The owner of a virtual server, if the agent named it.
pub fn owner<'a>(
    key: &ServiceKey,
    names: &'a [VirtualServerInfo],
) -> Option<&'a VirtualServerInfo> {
    let ServiceKey::Addr {
        protocol,
        addr,
        port,
    } = key
    else {
        return None;
    };
    names
        .iter()
        .find(|v| v.address == *addr && v.port == *port && v.protocol == protocol.to_string())
}

/// The table as the JSON schema above.
pub fn table(table: &[TableEntry], names: &[VirtualServerInfo]) -> Vec<VirtualServer> {
    table
        .iter()
        .map(|t| {
            let s = &t.service.service;
            let (protocol, address, port, fwmark) = match s.key {
                ServiceKey::Addr {
                    protocol,
                    addr,
                    port,
                } => (Some(protocol.to_string()), Some(addr), Some(port), None),
                ServiceKey::FwMark { mark, .. } => (None, None, None, Some(mark)),
            };
            let persistent = s.flags.contains(ServiceFlags::PERSISTENT);
            VirtualServer {
                protocol,
                address,
                port,
                fwmark,
                family: s.key.family().to_string(),
                scheduler: s.scheduler.clone(),
                flags: flag_names(s.flags),
                persistence_timeout: persistent.then_some(s.timeout),
                netmask: s.netmask.to_string(),
                persistence_engine: s.persistence_engine.clone(),
                service: owner(&s.key, names).map(|o| ServicePort {
                    name: o.service.clone(),
                    port: o.port_label(),
                    port_number: o.service_port,
                    kind: o.kind.clone(),
                }),
                stats: (&t.service.stats).into(),
                real_servers: t
                    .destinations
                    .iter()
                    .map(|d| RealServer {
                        address: d.destination.addr,
                        port: d.destination.port,
                        forward: forward_name(d.destination.forward),
                        weight: d.destination.weight,
                        upper_threshold: d.destination.upper_threshold,
                        lower_threshold: d.destination.lower_threshold,
                        active_conns: d.active_conns,
                        inactive_conns: d.inactive_conns,
                        persistent_conns: d.persistent_conns,
                        stats: (&d.stats).into(),
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kipvs_ipvs::{Destination, DestinationEntry, Service, ServiceEntry};

    /// The JSON schema is an interface: this snapshot changes only on
    /// purpose (`UPDATE_SNAPSHOTS=1` rewrites it).
    #[test]
    fn the_json_schema_is_reviewed() {
        let key = ServiceKey::tcp(std::net::Ipv4Addr::new(10, 96, 0, 10), 80);
        let stats = Stats {
            conns: 3,
            inpkts: 18,
            outpkts: 12,
            inbytes: 1200,
            outbytes: 2400,
            ..Default::default()
        };
        let table = vec![TableEntry {
            service: ServiceEntry {
                service: Service::new(key, "rr"),
                stats,
            },
            destinations: vec![DestinationEntry {
                destination: Destination::new(std::net::Ipv4Addr::new(10, 244, 1, 2), 9376),
                active_conns: 0,
                inactive_conns: 1,
                persistent_conns: 0,
                stats,
            }],
        }];
        let names = vec![VirtualServerInfo {
            protocol: "TCP".into(),
            address: "10.96.0.10".parse().unwrap(),
            port: 80,
            service: "default/hostnames".into(),
            port_name: "http".into(),
            kind: "ClusterIP".into(),
            service_port: Some(80),
        }];
        let got = serde_json::to_string_pretty(&super::table(&table, &names)).unwrap() + "\n";
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/list.json");
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        assert_eq!(got, std::fs::read_to_string(&path).unwrap());
    }
}
