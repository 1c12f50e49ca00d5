//! Removing state: `kipvs proxy --cleanup` removes exactly what kipvs made
//! (the virtual servers its ownership record names, or where there is no
//! record the address rule claims ([`Ownership`]), kube-ipvs0, its
//! nftables table; sysctls are left as they are, as kube-proxy leaves
//! them), and `--cleanup-kube-proxy`, after a migration from kube-proxy's
//! IPVS mode, removes what kube-proxy left and kipvs does not use: the
//! `KUBE-*` iptables chains (with the rules jumping to them) and the
//! `KUBE-*` ipsets. kube-ipvs0 and the virtual servers are adopted, never
//! removed, on migration.
//!
//! The decisions are pure functions of text the tools print
//! ([`kube_proxy_iptables_restore`], [`kube_proxy_ipsets`]); the I/O runs
//! the tools (`iptables-save`/`iptables-restore --noflush`, `ipset`, `nft`).

use crate::kernel;
use crate::options::ProxyOptions;
use crate::run;
use kipvs_engine::controller::Ownership;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::{Command, Output};

/// What a cleanup removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Virtual servers deleted.
    pub virtual_servers: Vec<String>,
    /// Links deleted.
    pub links: Vec<String>,
    /// nftables tables deleted (`family name`).
    pub nft_tables: Vec<String>,
    /// iptables chains deleted (`tool table chain`).
    pub chains: Vec<String>,
    /// ipsets destroyed.
    pub ipsets: Vec<String>,
}

/// Why a cleanup failed.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(transparent)]
    Ipvs(#[from] kipvs_ipvs::Error),
    #[error(transparent)]
    Link(#[from] kipvs_link::Error),
    #[error("running {command}: {message}")]
    Tool { command: String, message: String },
}

/// The nftables tables kipvs makes, as (family, name).
pub const NFT_TABLES: &[(&str, &str)] = &[("inet", "kipvs"), ("ip", "kipvs"), ("ip6", "kipvs")];

/// `--cleanup`: deletes the virtual servers kipvs owns under `opts` (the
/// same rule the sync engine uses, [`Ownership`]: those its record in the
/// nftables table names; without a record, an address on kube-ipvs0 or a
/// NodePort address and port, outside `excludeCIDRs`), then kube-ipvs0,
/// then the `kipvs` nftables tables. Virtual servers kipvs does not own
/// stay.
pub fn cleanup_kipvs(opts: &ProxyOptions) -> Result<Report, CleanupError> {
    let mut report = Report::default();
    let mut links = kipvs_link::Links::open()?;
    let local = kernel::local_addresses(&mut links, &opts.dummy)?;
    let bound: BTreeSet<IpAddr> = local
        .iter()
        .filter(|(i, _)| *i == opts.dummy)
        .map(|(_, a)| *a)
        .collect();
    let ctx = run::context(opts, None, &local);
    let ownership = Ownership {
        nodeport_addresses: ctx.nodeport_addresses.iter().copied().collect(),
        nodeport_range: opts.nodeport_range.clone(),
        exclude: opts.exclude_cidrs.clone(),
    };
    let record = read_ownership_record();
    if record.is_none() {
        tracing::info!("no ownership record in the kipvs nftables table: using the address rule");
    }
    let mut ipvs = kipvs_ipvs::Client::new()?;
    for entry in ipvs.services()? {
        let key = entry.service.key;
        let Some(model) = kernel::model_key(&key) else {
            continue;
        };
        if ownership.owns(&model, &bound, record.as_ref()) {
            ipvs.delete_service(&key)?;
            tracing::info!(virtual_server = %model, "deleted");
            report.virtual_servers.push(model.to_string());
        }
    }
    if links.remove_dummy(&opts.dummy)? {
        tracing::info!(link = %opts.dummy, "deleted");
        report.links.push(opts.dummy.clone());
    }
    for (family, name) in NFT_TABLES {
        if delete_nft_table(family, name)? {
            tracing::info!(family, table = name, "deleted nftables table");
            report.nft_tables.push(format!("{family} {name}"));
        }
    }
    Ok(report)
}

/// The virtual servers kipvs's ownership record names (the `owned-v4` and
/// `owned-v6` sets of its table, read over netlink), or `None` when there
/// is no such record (no table, or one from before the record existed).
pub fn read_ownership_record() -> Option<BTreeSet<kipvs_engine::model::VirtualServerKey>> {
    use kipvs_nft::element::SetKind;
    let mut socket = kipvs_nft::netlink::ElementSocket::open().ok()?;
    let mut elements = Vec::new();
    for v6 in [false, true] {
        match socket.dump(kipvs_nft::SetName {
            kind: SetKind::Owned,
            v6,
        }) {
            Ok(e) => elements.extend(e),
            Err(e) => {
                tracing::debug!(error = %e, "reading the ownership record");
                return None;
            }
        }
    }
    Some(kipvs_engine::desired::firewall::recorded(&elements))
}

/// Deletes one nftables table if it exists (`nft list table` first, so a
/// missing table, or a missing `nft`, is not an error).
pub fn delete_nft_table(family: &str, name: &str) -> Result<bool, CleanupError> {
    match Command::new("nft")
        .args(["list", "table", family, name])
        .output()
    {
        Ok(o) if o.status.success() => {}
        _ => return Ok(false),
    }
    run_tool("nft", &["delete", "table", family, name], None)?;
    Ok(true)
}

/// `--cleanup-kube-proxy`: removes kube-proxy's `KUBE-*` iptables chains
/// (IPv4 and IPv6, legacy and nft backends) and then its `KUBE-*` ipsets.
pub fn cleanup_kube_proxy() -> Result<Report, CleanupError> {
    let mut report = Report::default();
    for tool in iptables_tools() {
        let save = format!("{tool}-save");
        let Ok(out) = Command::new(&save).output() else {
            continue;
        };
        if !out.status.success() {
            tracing::warn!(tool = %save, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "skipped");
            continue;
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(restore) = kube_proxy_iptables_restore(&text) else {
            continue;
        };
        run_tool(
            &format!("{tool}-restore"),
            &["--noflush"],
            Some(&restore.input),
        )?;
        for (table, chain) in restore.chains {
            tracing::info!(tool = %tool, table = %table, chain = %chain, "deleted kube-proxy chain");
            report.chains.push(format!("{tool} {table} {chain}"));
        }
    }
    if let Ok(out) = Command::new("ipset").args(["list", "-n"]).output()
        && out.status.success()
    {
        for set in kube_proxy_ipsets(&String::from_utf8_lossy(&out.stdout)) {
            run_tool("ipset", &["destroy", &set], None)?;
            tracing::info!(ipset = %set, "destroyed kube-proxy ipset");
            report.ipsets.push(set);
        }
    }
    Ok(report)
}

/// The iptables tools present: each backend's (`iptables-legacy`,
/// `iptables-nft`, and the IPv6 ones), else plain `iptables`/`ip6tables`.
fn iptables_tools() -> Vec<String> {
    let exists = |t: &str| {
        Command::new(format!("{t}-save"))
            .arg("--version")
            .output()
            .is_ok()
    };
    let mut out = Vec::new();
    for base in ["iptables", "ip6tables"] {
        let backends: Vec<String> = ["legacy", "nft"]
            .iter()
            .map(|b| format!("{base}-{b}"))
            .filter(|t| exists(t))
            .collect();
        if backends.is_empty() {
            if exists(base) {
                out.push(base.to_string());
            }
        } else {
            out.extend(backends);
        }
    }
    out
}

fn run_tool(tool: &str, args: &[&str], stdin: Option<&str>) -> Result<Output, CleanupError> {
    use std::io::Write;
    let command = format!("{tool} {}", args.join(" "));
    let fail = |message: String| CleanupError::Tool {
        command: command.clone(),
        message,
    };
    let mut child = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(out)
}

/// An `iptables-restore --noflush` input removing kube-proxy's chains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IptablesRestore {
    pub input: String,
    /// (table, chain) deleted.
    pub chains: Vec<(String, String)>,
}

/// From `iptables-save` output: the restore input that deletes, per table,
/// the rules of other chains jumping to a `KUBE-*` chain, then flushes and
/// deletes every `KUBE-*` chain. `None` when there is none.
pub fn kube_proxy_iptables_restore(save: &str) -> Option<IptablesRestore> {
    let kube = |c: &str| c.starts_with("KUBE-");
    let mut input = String::new();
    let mut chains = Vec::new();
    let mut table: Option<String> = None;
    let (mut jumps, mut declared) = (Vec::<String>::new(), Vec::<String>::new());
    let mut flush = |table: &str, jumps: &mut Vec<String>, declared: &mut Vec<String>| {
        if declared.is_empty() {
            jumps.clear();
            return;
        }
        input.push_str(&format!("*{table}\n"));
        for rule in jumps.drain(..) {
            input.push_str(&format!("-D {rule}\n"));
        }
        // In a --noflush restore, declaring a chain flushes it.
        for chain in declared.iter() {
            input.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for chain in declared.drain(..) {
            input.push_str(&format!("-X {chain}\n"));
            chains.push((table.to_string(), chain));
        }
        input.push_str("COMMIT\n");
    };
    for line in save.lines() {
        let line = line.trim_end();
        if let Some(t) = line.strip_prefix('*') {
            table = Some(t.to_string());
        } else if line == "COMMIT" {
            if let Some(t) = table.take() {
                flush(&t, &mut jumps, &mut declared);
            }
        } else if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap_or("");
            if kube(chain) {
                declared.push(chain.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or("");
            let target = rule
                .split_whitespace()
                .skip_while(|w| *w != "-j" && *w != "-g")
                .nth(1);
            if !kube(chain) && target.is_some_and(kube) {
                jumps.push(rule.to_string());
            }
        }
    }
    (!chains.is_empty()).then_some(IptablesRestore { input, chains })
}

/// From `ipset list -n`: kube-proxy's sets (`KUBE-*`).
pub fn kube_proxy_ipsets(list: &str) -> Vec<String> {
    list.lines()
        .map(str::trim)
        .filter(|s| s.starts_with("KUBE-"))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "\
# Generated by iptables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-FIREWALL - [0:0]
:KUBE-FORWARD - [0:0]
:MY-CHAIN - [0:0]
-A INPUT -j KUBE-FIREWALL
-A INPUT -s 10.0.0.0/8 -j MY-CHAIN
-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
-A PREROUTING -j MARK --set-xmark 0x1/0x1
COMMIT
";

    #[test]
    fn iptables_restore_removes_only_kube_chains_and_their_jumps() {
        let r = kube_proxy_iptables_restore(SAVE).unwrap();
        assert_eq!(
            r.input,
            "*filter\n\
             -D INPUT -j KUBE-FIREWALL\n\
             -D FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
             :KUBE-FIREWALL - [0:0]\n:KUBE-FORWARD - [0:0]\n\
             -X KUBE-FIREWALL\n-X KUBE-FORWARD\nCOMMIT\n\
             *nat\n\
             -D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -D POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             :KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
             -X KUBE-SERVICES\n-X KUBE-POSTROUTING\nCOMMIT\n"
        );
        assert_eq!(r.chains.len(), 4);
        assert!(r.chains.contains(&("nat".into(), "KUBE-SERVICES".into())));
    }

    #[test]
    fn nothing_to_remove_without_kube_chains() {
        let save =
            "*filter\n:INPUT ACCEPT [0:0]\n:MY-CHAIN - [0:0]\n-A INPUT -j MY-CHAIN\nCOMMIT\n";
        assert_eq!(kube_proxy_iptables_restore(save), None);
        assert_eq!(kube_proxy_iptables_restore(""), None);
    }

    #[test]
    fn ipsets_are_kube_proxys_only() {
        assert_eq!(
            kube_proxy_ipsets("KUBE-CLUSTER-IP\nmyset\nKUBE-LOOP-BACK\n\n"),
            vec!["KUBE-CLUSTER-IP", "KUBE-LOOP-BACK"]
        );
    }
}
