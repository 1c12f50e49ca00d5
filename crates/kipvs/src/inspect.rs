//! `kipvs list | save | restore | conns`: the ipvsadm-style inspection and
//! restore commands. The text formats are `kipvs_ipvsadm`'s (byte for
//! byte ipvsadm's); this module reads the kernel, asks the agent for names,
//! and prints.

use crate::agent_client;
use crate::json;
use anyhow::{Context, Result, bail};
use clap::Args;
use kipvs_ipvs::{AddressFamily, Client, Protocol, ServiceKey, TableEntry};
use kipvs_ipvsadm::{self as ipvsadm, ListOptions};
use kipvs_proxy::api::VirtualServerInfo;
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Opens the IPVS client; the two errors every command can meet get the
/// operator's wording.
fn client() -> Result<Client> {
    Client::new().map_err(friendly)
}

fn friendly(e: kipvs_ipvs::Error) -> anyhow::Error {
    match e {
        kipvs_ipvs::Error::PermissionDenied { .. } => {
            anyhow::anyhow!("kipvs needs CAP_NET_ADMIN (run as root): {e}")
        }
        e => e.into(),
    }
}

fn read_table(ipvs: &mut Client) -> Result<Vec<TableEntry>> {
    ipvs.dump_all().map_err(friendly)
}

#[derive(Debug, Args)]
#[command(after_help = "\
Each line is byte for byte ipvsadm's. A virtual server the agent programs gets
`  # NAMESPACE/NAME:PORT (KIND)` appended: PORT is the Service port's name, or its
number when the port is unnamed; KIND is ClusterIP, externalIP, LoadBalancer or
NodePort. Cut each line at `  # ` (or use --no-names) for ipvsadm's text.
Firewall-mark virtual servers are never named (kipvs makes none).
The --json schema, every field with its type and unit: docs/json.md.")]
pub struct ListArgs {
    /// Numeric output (always; accepted for ipvsadm's muscle memory).
    #[arg(short = 'n', long)]
    numeric: bool,
    /// Counters: connections, packets and bytes.
    #[arg(long)]
    stats: bool,
    /// Rates: connections, packets and bytes per second.
    #[arg(long)]
    rate: bool,
    /// Counters and rates in full, not abbreviated with K/M/G.
    #[arg(long)]
    exact: bool,
    /// The real servers' upper and lower connection thresholds.
    #[arg(long)]
    thresholds: bool,
    /// The real servers' persistence templates.
    #[arg(long)]
    persistent_conn: bool,
    /// The real servers' tunnel settings.
    #[arg(long)]
    tun_info: bool,
    /// Keep the kernel's order instead of sorting.
    #[arg(long)]
    nosort: bool,
    /// Only this TCP virtual server.
    #[arg(
        short = 't',
        long = "tcp-service",
        value_name = "ADDR:PORT",
        group = "only"
    )]
    tcp: Option<SocketAddr>,
    /// Only this UDP virtual server.
    #[arg(
        short = 'u',
        long = "udp-service",
        value_name = "ADDR:PORT",
        group = "only"
    )]
    udp: Option<SocketAddr>,
    /// Only this SCTP virtual server.
    #[arg(long = "sctp-service", value_name = "ADDR:PORT", group = "only")]
    sctp: Option<SocketAddr>,
    /// Only this firewall-mark virtual server.
    #[arg(
        short = 'f',
        long = "fwmark-service",
        value_name = "MARK",
        group = "only"
    )]
    fwmark: Option<u32>,
    /// The firewall mark matches IPv6 packets.
    #[arg(short = '6', long = "ipv6", requires = "fwmark")]
    ipv6: bool,
    /// Only the virtual servers of this Service (asks the agent; a name
    /// without a namespace is in `default`).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    service: Option<String>,
    /// One JSON object per virtual server, with its real servers, counters
    /// and Service (a stable schema, every field described in docs/json.md).
    #[arg(long)]
    json: bool,
    /// Refresh every --interval, like `watch` (with --rate for live rates).
    #[arg(long)]
    watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    interval: f64,
    /// Do not ask the agent for Service names.
    #[arg(long)]
    no_names: bool,
    /// Where the agent serves its local endpoints.
    #[arg(long, default_value = agent_client::DEFAULT_AGENT, value_name = "IP:PORT")]
    agent: SocketAddr,
}

impl ListArgs {
    fn only(&self) -> Option<ServiceKey> {
        let addr = |protocol, sa: &SocketAddr| ServiceKey::Addr {
            protocol,
            addr: sa.ip(),
            port: sa.port(),
        };
        if let Some(sa) = &self.tcp {
            return Some(addr(Protocol::Tcp, sa));
        }
        if let Some(sa) = &self.udp {
            return Some(addr(Protocol::Udp, sa));
        }
        if let Some(sa) = &self.sctp {
            return Some(addr(Protocol::Sctp, sa));
        }
        self.fwmark.map(|mark| ServiceKey::FwMark {
            family: if self.ipv6 {
                AddressFamily::Inet6
            } else {
                AddressFamily::Inet
            },
            mark,
        })
    }

    fn options(&self) -> ListOptions {
        ListOptions {
            stats: self.stats,
            rate: self.rate,
            exact: self.exact,
            thresholds: self.thresholds,
            persistent_conn: self.persistent_conn,
            tun_info: self.tun_info,
            sort: !self.nosort,
            only: self.only(),
        }
    }
}

pub fn list(a: ListArgs) -> Result<()> {
    let _ = a.numeric;
    let mut ipvs = client()?;
    loop {
        let out = list_once(&a, &mut ipvs)?;
        if !a.watch {
            print!("{out}");
            return Ok(());
        }
        print!("\x1b[H\x1b[2JEvery {:.1}s: kipvs list\n\n{out}", a.interval);
        std::thread::sleep(Duration::from_secs_f64(a.interval.max(0.1)));
    }
}

fn list_once(a: &ListArgs, ipvs: &mut Client) -> Result<String> {
    let mut table = read_table(ipvs)?;
    let names = if a.no_names {
        Vec::new()
    } else {
        agent_client::virtual_servers(a.agent).unwrap_or_default()
    };
    if let Some(svc) = &a.service {
        if names.is_empty() {
            bail!(
                "--service needs the agent's names, and no kipvs agent answers on {}",
                a.agent
            );
        }
        let svc = if svc.contains('/') {
            svc.clone()
        } else {
            format!("default/{svc}")
        };
        table.retain(|t| {
            json::owner(&t.service.service.key, &names).is_some_and(|o| o.service == svc)
        });
    }
    let opts = a.options();
    if let Some(only) = &opts.only
        && !table.iter().any(|t| t.service.service.key == *only)
    {
        bail!("no such service: {only}");
    }
    if a.json {
        let mut shown = table;
        if let Some(only) = &opts.only {
            shown.retain(|t| t.service.service.key == *only);
        }
        return Ok(serde_json::to_string_pretty(&json::table(&shown, &names))? + "\n");
    }
    let info = ipvs.info().map_err(friendly)?;
    Ok(with_names(&ipvsadm::list(&table, &info, &opts), &names))
}

/// Appends `  # namespace/name:port (kind)` to the lines of virtual servers
/// the agent named (`port`: the Service port's name, or its number when it
/// has none); every byte before the two spaces is ipvsadm's, so cutting
/// each line at `  # ` gives `ipvsadm -Ln` back.
fn with_names(listing: &str, names: &[VirtualServerInfo]) -> String {
    if names.is_empty() {
        return listing.to_owned();
    }
    let mut out = String::with_capacity(listing.len());
    for line in listing.lines() {
        out.push_str(line);
        if let Some(o) = vs_line_owner(line, names) {
            out.push_str(&format!(
                "  # {}:{} ({})",
                o.service,
                o.port_label(),
                o.kind
            ));
        }
        out.push('\n');
    }
    out
}

fn vs_line_owner<'a>(line: &str, names: &'a [VirtualServerInfo]) -> Option<&'a VirtualServerInfo> {
    let mut words = line.split_whitespace();
    let protocol = words.next()?;
    if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
        return None;
    }
    let addr: SocketAddr = words.next()?.parse().ok()?;
    names
        .iter()
        .find(|v| v.protocol == protocol && v.address == addr.ip() && v.port == addr.port())
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Numeric output (always).
    #[arg(short = 'n', long)]
    numeric: bool,
    /// Keep the kernel's order instead of sorting.
    #[arg(long)]
    nosort: bool,
}

pub fn save(a: SaveArgs) -> Result<()> {
    let _ = a.numeric;
    let table = read_table(&mut client()?)?;
    print!("{}", ipvsadm::save(&table, !a.nosort));
    Ok(())
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Rules as `ipvsadm -S` / `kipvs save` write them (`-` or nothing:
    /// standard input). Every line is checked before anything is applied.
    file: Option<PathBuf>,
}

pub fn restore(a: RestoreArgs) -> Result<()> {
    let (name, text) = match &a.file {
        None => ("<stdin>".to_owned(), read_stdin()?),
        Some(p) if p.as_os_str() == "-" => ("<stdin>".to_owned(), read_stdin()?),
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        ),
    };
    // Validate every line first; apply nothing if one is bad.
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match ipvsadm::parse_rule_line(line) {
            Ok(Some(rule)) => rules.push((i + 1, rule)),
            Ok(None) => {}
            Err(kind) => bail!("{name}:{}: {kind} (nothing was applied)", i + 1),
        }
    }
    let ops: Vec<kipvs_ipvs::Op> = rules.iter().map(|(_, r)| r.clone()).collect();
    let results = client()?.apply(&ops);
    let mut failed = 0;
    for ((line, _), r) in rules.iter().zip(results) {
        if let Err(e) = r {
            failed += 1;
            eprintln!("kipvs: error: {name}:{line}: {}", friendly(e));
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} rules failed; the others were applied",
            ops.len()
        );
    }
    Ok(())
}

fn read_stdin() -> Result<String> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .context("reading standard input")?;
    Ok(s)
}

#[derive(Debug, Args)]
pub struct ConnsArgs {
    /// Numeric output (always).
    #[arg(short = 'n', long)]
    numeric: bool,
    /// Also the persistence engine's data (`ipvsadm -Lcn --persistent-conn`).
    #[arg(long)]
    persistent_conn: bool,
    /// One JSON object per connection.
    #[arg(long)]
    json: bool,
    /// Where the kernel lists connections.
    #[arg(long, default_value = "/proc/net/ip_vs_conn", hide = true)]
    proc_file: PathBuf,
}

#[derive(serde::Serialize)]
struct ConnJson<'a> {
    protocol: &'a str,
    client: SocketAddr,
    virtual_server: SocketAddr,
    real_server: SocketAddr,
    state: &'a str,
    expires_secs: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistence_engine: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    persistence_data: Option<&'a str>,
}

pub fn conns(a: ConnsArgs) -> Result<()> {
    let _ = a.numeric;
    let text = std::fs::read_to_string(&a.proc_file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{} does not exist: IPVS is not loaded in this kernel",
                a.proc_file.display()
            )
        } else {
            anyhow::anyhow!("reading {}: {e}", a.proc_file.display())
        }
    })?;
    let conns = ipvsadm::parse_conns(&text)?;
    if a.json {
        let v: Vec<ConnJson> = conns
            .iter()
            .map(|c| ConnJson {
                protocol: &c.protocol,
                client: SocketAddr::new(c.client, c.client_port),
                virtual_server: SocketAddr::new(c.virtual_addr, c.virtual_port),
                real_server: SocketAddr::new(c.destination, c.destination_port),
                state: &c.state,
                expires_secs: c.expires,
                persistence_engine: c.pe_name.as_deref(),
                persistence_data: c.pe_data.as_deref(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if a.persistent_conn {
        print!("{}", ipvsadm::list_conns_persistent(&conns));
    } else {
        print!("{}", ipvsadm::list_conns(&conns));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_at_the_end_of_virtual_server_lines_only() {
        let names = vec![
            VirtualServerInfo {
                protocol: "TCP".into(),
                address: "10.96.0.10".parse().unwrap(),
                port: 80,
                service: "default/hostnames".into(),
                port_name: "http".into(),
                kind: "ClusterIP".into(),
                service_port: Some(80),
            },
            VirtualServerInfo {
                protocol: "TCP".into(),
                address: "10.96.0.11".parse().unwrap(),
                port: 80,
                service: "shop/one".into(),
                port_name: String::new(),
                kind: "ClusterIP".into(),
                service_port: Some(80),
            },
        ];
        let listing = "IP Virtual Server version 1.2.1 (size=4096)\n\
                       Prot LocalAddress:Port Scheduler Flags\n\
                       \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                       TCP  10.96.0.10:80 rr\n\
                       \x20 -> 10.244.1.2:9376              Masq    1      0          0\n\
                       TCP  10.96.0.11:80 rr\n";
        let named = with_names(listing, &names);
        assert_eq!(
            named.lines().nth(3),
            Some("TCP  10.96.0.10:80 rr  # default/hostnames:http (ClusterIP)")
        );
        assert_eq!(
            named.lines().nth(5),
            Some("TCP  10.96.0.11:80 rr  # shop/one:80 (ClusterIP)"),
            "an unnamed port shows its number"
        );
        assert_eq!(named.lines().nth(4), listing.lines().nth(4));
        let cut: String = named
            .lines()
            .map(|l| format!("{}\n", l.split("  # ").next().unwrap()))
            .collect();
        assert_eq!(cut, listing, "ipvsadm's bytes, untouched");
        assert_eq!(with_names(listing, &[]), listing);
    }
}
