//! `/proc/net/ip_vs_conn` and `ipvsadm -Lcn`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::addr_port;

/// One IPVS connection (or persistence template), as the kernel lists it in
/// `/proc/net/ip_vs_conn`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// `TCP`, `UDP`, `SCTP`, `IP` (a firewall-mark template) … as the kernel
    /// names it.
    pub protocol: String,
    /// The client's address.
    pub client: IpAddr,
    /// The client's port.
    pub client_port: u16,
    /// The virtual address.
    pub virtual_addr: IpAddr,
    /// The virtual port.
    pub virtual_port: u16,
    /// The destination's (real server's) address.
    pub destination: IpAddr,
    /// The destination's port.
    pub destination_port: u16,
    /// The state (`ESTABLISHED`, `SYN_RECV`, `FIN_WAIT`, `NONE` …).
    pub state: String,
    /// Seconds until it expires.
    pub expires: u32,
    /// The persistence engine's name (`sip`), when the connection has
    /// engine data.
    pub pe_name: Option<String>,
    /// The persistence engine's data (the SIP Call-ID).
    pub pe_data: Option<String>,
}

/// A line of `/proc/net/ip_vs_conn` that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("/proc/net/ip_vs_conn line {line}: {what} `{value}`")]
pub struct ConnError {
    /// The line, counting from 1.
    pub line: usize,
    /// What is wrong (`bad client address` …).
    pub what: &'static str,
    /// What was there.
    pub value: String,
}

/// Read `/proc/net/ip_vs_conn`: the kernel's header line, then one line per
/// connection, `PRO CADDR CPORT VADDR VPORT DADDR DPORT STATE EXPIRES
/// [PENAME PEDATA]`, with IPv4 addresses and every port in hex and IPv6
/// addresses in full (`fd00:0000:…:0001`). Blank lines are skipped.
pub fn parse_conns(proc_net_ip_vs_conn: &str) -> Result<Vec<Connection>, ConnError> {
    let mut conns = Vec::new();
    for (i, line) in proc_net_ip_vs_conn.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() || (i == 0 && line.starts_with("Pro ")) {
            continue;
        }
        let err = |what: &'static str, value: &str| ConnError {
            line: line_no,
            what,
            value: value.to_owned(),
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 {
            return Err(err("too few fields (want 9 or 11) in", line));
        }
        let addr = |what, s: &str| parse_addr(s).ok_or_else(|| err(what, s));
        let port = |what, s: &str| parse_port(s).ok_or_else(|| err(what, s));
        conns.push(Connection {
            protocol: fields[0].to_owned(),
            client: addr("bad client address", fields[1])?,
            client_port: port("bad client port", fields[2])?,
            virtual_addr: addr("bad virtual address", fields[3])?,
            virtual_port: port("bad virtual port", fields[4])?,
            destination: addr("bad destination address", fields[5])?,
            destination_port: port("bad destination port", fields[6])?,
            state: fields[7].to_owned(),
            expires: fields[8]
                .parse()
                .map_err(|_| err("bad expiry (seconds)", fields[8]))?,
            pe_name: fields.get(9).map(|s| (*s).to_owned()),
            pe_data: fields.get(10).map(|s| (*s).to_owned()),
        });
    }
    Ok(conns)
}

/// An address of `/proc/net/ip_vs_conn`: IPv6 in colon form, IPv4 as eight
/// hex digits (dotted IPv4 is taken too, as ipvsadm does).
fn parse_addr(s: &str) -> Option<IpAddr> {
    if s.contains(':') {
        return s.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(a));
    }
    if s.is_empty() || s.len() > 8 {
        return None;
    }
    u32::from_str_radix(s, 16)
        .ok()
        .map(|v| IpAddr::V4(Ipv4Addr::from(v)))
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 4 {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// What `ipvsadm -Lcn` prints for these connections, in their order.
pub fn list_conns(conns: &[Connection]) -> String {
    render(conns, false)
}

/// What `ipvsadm -Lcn --persistent-conn` prints: with the persistence
/// engine's name and data for the connections that have both.
pub fn list_conns_persistent(conns: &[Connection]) -> String {
    render(conns, true)
}

fn render(conns: &[Connection], pe: bool) -> String {
    let mut out = String::from("IPVS connection entries\n");
    if pe {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        );
    } else {
        let _ = writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        );
    }
    for c in conns {
        let expire = format!(
            "{:02}:{:02}",
            (c.expires / 60) as i32,
            (c.expires % 60) as i32
        );
        let cname = addr_port(&c.client, c.client_port);
        let vname = addr_port(&c.virtual_addr, c.virtual_port);
        let dname = addr_port(&c.destination, c.destination_port);
        let _ = match (pe, &c.pe_name, &c.pe_data) {
            (true, Some(name), Some(data)) => writeln!(
                out,
                "{:<3} {expire:<6} {:<11} {cname:<18} {vname:<18} {dname:<16} {name:<18} {data}",
                c.protocol, c.state
            ),
            _ => writeln!(
                out,
                "{:<3} {expire:<6} {:<11} {cname:<18} {vname:<18} {dname}",
                c.protocol, c.state
            ),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "\
Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData
TCP 0A000005 C822 0A000001 0050 0A010001 1F90 ESTABLISHED     899
UDP FD000000000000000000000000000005 0035 0A000001 0035 0A010002 0035 UDP             299
TCP fd00:0000:0000:0000:0000:0000:0000:0005 D431 fd00:0000:0000:0000:0000:0000:0000:0001 0050 fd00:0000:0000:0000:0000:0000:0000:0002 0050 SYN_RECV         59
IP  0A000005 0000 00000005 0000 0A010001 0000 NONE            359
UDP 0A000005 13C4 0A000004 13C4 0A010001 13C4 UDP             179 sip abc@host
";

    #[test]
    fn parses_the_kernels_format() {
        // The second line is malformed on purpose (a v6 address in hex).
        let err = parse_conns(PROC).unwrap_err();
        assert_eq!(err.line, 3);
        assert_eq!(err.what, "bad client address");
        let text: String = PROC
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let conns = parse_conns(&text).unwrap();
        assert_eq!(conns.len(), 4);
        assert_eq!(
            conns[0],
            Connection {
                protocol: "TCP".into(),
                client: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
                client_port: 51234,
                virtual_addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                virtual_port: 80,
                destination: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
                destination_port: 8080,
                state: "ESTABLISHED".into(),
                expires: 899,
                pe_name: None,
                pe_data: None,
            }
        );
        assert_eq!(conns[1].client, "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(conns[1].state, "SYN_RECV");
        assert_eq!(conns[3].pe_name.as_deref(), Some("sip"));
        assert_eq!(conns[3].pe_data.as_deref(), Some("abc@host"));

        assert_eq!(
            list_conns(&conns),
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination\n\
             TCP 14:59  ESTABLISHED 10.0.0.5:51234     10.0.0.1:80        10.1.0.1:8080\n\
             TCP 00:59  SYN_RECV    [fd00::5]:54321    [fd00::1]:80       [fd00::2]:80\n\
             IP  05:59  NONE        10.0.0.5:0         0.0.0.5:0          10.1.0.1:0\n\
             UDP 02:59  UDP         10.0.0.5:5060      10.0.0.4:5060      10.1.0.1:5060\n"
        );
        assert_eq!(
            list_conns_persistent(&conns[3..]),
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination        \
             pe name          pe_data\n\
             UDP 02:59  UDP         10.0.0.5:5060      10.0.0.4:5060      10.1.0.1:5060    \
             sip                abc@host\n"
        );
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line, what) in [
            ("TCP 0A000005 C822\n", 1, "too few fields (want 9 or 11) in"),
            (
                "Pro x\nTCP 0A000005 C822 0A000001 0050 0A010001 1F90 X 12x\n",
                2,
                "bad expiry (seconds)",
            ),
            (
                "TCP 0A000005 12345 0A000001 0050 0A010001 1F90 X 1\n",
                1,
                "bad client port",
            ),
            (
                "TCP 0A000005 C822 0A000001 0050 zz 1F90 X 1\n",
                1,
                "bad destination address",
            ),
        ] {
            let e = parse_conns(text).unwrap_err();
            assert_eq!((e.line, e.what), (line, what), "{text}");
        }
        assert_eq!(parse_conns("").unwrap(), vec![]);
        assert_eq!(list_conns(&[]).lines().count(), 2);
    }

    #[test]
    fn long_expiry_widens() {
        let c = Connection {
            protocol: "SCTP".into(),
            client: IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4)),
            client_port: 1,
            virtual_addr: IpAddr::V4(Ipv4Addr::new(1, 2, 3, 5)),
            virtual_port: 2,
            destination: "::ffff:1.2.3.6".parse().unwrap(),
            destination_port: 3,
            state: "ESTABLISHED".into(),
            expires: 6000 * 60 + 5,
            pe_name: None,
            pe_data: None,
        };
        assert_eq!(
            list_conns(&[c]).lines().nth(2).unwrap(),
            "SCTP 6000:05 ESTABLISHED 1.2.3.4:1          1.2.3.5:2          [::ffff:1.2.3.6]:3"
        );
    }
}
