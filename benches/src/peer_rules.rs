//! The rules kube-proxy's iptables and nftables modes would write for a
//! synthetic cluster, as `iptables-restore` and `nft -f` input: the peers
//! [`crate::compare`] measures kipvs against. Pure text generation, no I/O.
//!
//! A cluster here is a [`Cluster`]: Service index → its endpoint addresses
//! (ClusterIP [`cluster_ip`]`(i)`:80/TCP → endpoint:8080).
//!
//! iptables (kube-proxy's iptables mode): `KUBE-SERVICES` jumps per
//! ClusterIP to `KUBE-SVC-*`, which marks off-cluster sources for
//! masquerade and picks one `KUBE-SEP-*` with `statistic --mode random
//! --probability 1/(E−k)`; each `KUBE-SEP-*` marks hairpin traffic and
//! DNATs. Every restore is `--noflush` and declares the chains it rewrites
//! (a declaration flushes the chain), and deletes stale chains with `-X`,
//! as kube-proxy does. A *full* restore rewrites every chain; a *partial*
//! one (kube-proxy ≥ 1.28) rewrites `KUBE-SERVICES` and the top-level
//! chains, plus only the chains of the Services that changed.
//!
//! nftables (kube-proxy's nftables mode): one table `kube-proxy`, a verdict
//! map `service-ips` (address . protocol . port → `goto service-*`), one
//! chain per Service choosing an endpoint chain with `numgen random mod E
//! vmap`, one chain per endpoint that marks hairpin traffic and DNATs. An
//! update is one `nft -f` transaction touching only what changed.

use crate::synthetic::cluster_ip;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// Service index → its endpoint addresses.
pub type Cluster = BTreeMap<u32, Vec<Ipv4Addr>>;

/// The Services whose endpoints differ between two clusters (added,
/// removed or changed).
pub fn changed(old: &Cluster, new: &Cluster) -> BTreeSet<u32> {
    old.keys()
        .chain(new.keys())
        .filter(|i| old.get(i) != new.get(i))
        .copied()
        .collect()
}

/// 64-bit FNV-1a, for chain names shaped like kube-proxy's hashed ones.
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

fn port_name(i: u32) -> String {
    format!("bench/svc-{i}:http")
}

/// The `KUBE-SVC-*` chain of Service `i`.
pub fn svc_chain(i: u32) -> String {
    format!("KUBE-SVC-{}", hash(&format!("{}tcp", port_name(i))))
}

/// The `KUBE-SEP-*` chain of endpoint `ep` of Service `i`.
pub fn sep_chain(i: u32, ep: Ipv4Addr) -> String {
    format!(
        "KUBE-SEP-{}",
        hash(&format!("{}tcp{ep}:8080", port_name(i)))
    )
}

/// Every per-Service chain (`KUBE-SVC-*`, `KUBE-SEP-*`) of a cluster.
pub fn iptables_chains(c: &Cluster) -> BTreeSet<String> {
    c.iter()
        .flat_map(|(&i, eps)| {
            std::iter::once(svc_chain(i)).chain(eps.iter().map(move |&ep| sep_chain(i, ep)))
        })
        .collect()
}

/// The rules (`-A` lines) a cluster's nat table holds in kipvs-benches'
/// kube-proxy shape, counting the jumps from the built-in chains.
pub fn iptables_rule_count(c: &Cluster) -> usize {
    // 3 jumps from built-in chains, 1 in KUBE-MARK-MASQ, 3 in
    // KUBE-POSTROUTING; per Service 1 in KUBE-SERVICES and 1 + E in its
    // KUBE-SVC; 2 per KUBE-SEP.
    7 + c.values().map(|eps| 2 + 3 * eps.len()).sum::<usize>()
}

/// The jumps from the built-in chains into kube-proxy's, created once
/// before the first restore (kube-proxy adds them with `iptables -I`).
pub const IPTABLES_JUMPS: &[&[&str]] = &[
    &["-t", "nat", "-N", "KUBE-SERVICES"],
    &["-t", "nat", "-N", "KUBE-POSTROUTING"],
    &["-t", "nat", "-A", "PREROUTING", "-j", "KUBE-SERVICES"],
    &["-t", "nat", "-A", "OUTPUT", "-j", "KUBE-SERVICES"],
    &["-t", "nat", "-A", "POSTROUTING", "-j", "KUBE-POSTROUTING"],
];

/// `iptables-restore --noflush` input turning the nat table of `old` into
/// that of `new`: every chain (`partial == false`) or only the top-level
/// chains and those of Services that changed (`partial == true`).
pub fn iptables_restore(old: &Cluster, new: &Cluster, partial: bool) -> String {
    let changed = changed(old, new);
    let rewrite = |i: &u32| !partial || changed.contains(i);
    let stale: Vec<String> = iptables_chains(old)
        .difference(&iptables_chains(new))
        .cloned()
        .collect();
    let mut chains = String::from(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n",
    );
    let mut rules = String::from(
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" \
         -j MASQUERADE --random-fully\n",
    );
    for (&i, eps) in new {
        let (vip, port, svc) = (cluster_ip(i), port_name(i), svc_chain(i));
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{port} cluster IP\" -m tcp -p tcp \
             -d {vip}/32 --dport 80 -j {svc}"
        );
        if !rewrite(&i) {
            continue;
        }
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A {svc} -m comment --comment \"{port} cluster IP\" -m tcp -p tcp -d {vip}/32 \
             --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ"
        );
        for (k, &ep) in eps.iter().enumerate() {
            let sep = sep_chain(i, ep);
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let left = eps.len() - k;
            let pick = if left > 1 {
                format!(
                    " -m statistic --mode random --probability {:.10}",
                    1.0 / left as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                rules,
                "-A {svc} -m comment --comment \"{port} -> {ep}:8080\"{pick} -j {sep}"
            );
            let _ = writeln!(
                rules,
                "-A {sep} -m comment --comment {port} -s {ep}/32 -j KUBE-MARK-MASQ\n\
                 -A {sep} -m comment --comment {port} -m tcp -p tcp -j DNAT \
                 --to-destination {ep}:8080"
            );
        }
    }
    for chain in &stale {
        let _ = writeln!(chains, ":{chain} - [0:0]");
        let _ = writeln!(rules, "-X {chain}");
    }
    chains + &rules + "COMMIT\n"
}

/// The nftables table kube-proxy's nftables mode owns.
pub const NFT_TABLE: &str = "kube-proxy";

fn nft_service_chain(i: u32) -> String {
    let port = format!("bench/svc-{i}/tcp/http");
    format!("service-{}-{port}", &hash(&port)[..8])
}

fn nft_endpoint_chain(i: u32, ep: Ipv4Addr) -> String {
    let port = format!("bench/svc-{i}/tcp/http");
    let name = format!("{port}__{ep}/8080");
    format!("endpoint-{}-{name}", &hash(&name)[..8])
}

/// Every per-Service chain (`service-*`, `endpoint-*`) of a cluster.
pub fn nft_chains(c: &Cluster) -> BTreeSet<String> {
    c.iter()
        .flat_map(|(&i, eps)| {
            std::iter::once(nft_service_chain(i))
                .chain(eps.iter().map(move |&ep| nft_endpoint_chain(i, ep)))
        })
        .collect()
}

/// The chains of the table's skeleton, [`nft_skeleton`].
pub const NFT_BASE_CHAINS: usize = 6;

/// The table with its base chains, the masquerade chains and the empty
/// `service-ips` map.
pub fn nft_skeleton() -> String {
    let t = format!("ip {NFT_TABLE}");
    format!(
        "add table {t}\n\
         add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n\
         add chain {t} mark-for-masquerade\n\
         add rule {t} mark-for-masquerade meta mark set meta mark or 0x4000\n\
         add chain {t} masquerading\n\
         add rule {t} masquerading meta mark & 0x4000 == 0 return\n\
         add rule {t} masquerading meta mark set meta mark xor 0x4000\n\
         add rule {t} masquerading masquerade fully-random\n\
         add chain {t} services\n\
         add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add chain {t} nat-prerouting {{ type nat hook prerouting priority dstnat ; policy accept ; }}\n\
         add rule {t} nat-prerouting jump services\n\
         add chain {t} nat-output {{ type nat hook output priority -100 ; policy accept ; }}\n\
         add rule {t} nat-output jump services\n\
         add chain {t} nat-postrouting {{ type nat hook postrouting priority srcnat ; policy accept ; }}\n\
         add rule {t} nat-postrouting jump masquerading\n"
    )
}

/// One `nft -f` transaction turning the table of `old` into that of `new`,
/// touching only the Services that changed (kube-proxy's partial sync;
/// from an empty `old` it is the full load).
pub fn nft_update(old: &Cluster, new: &Cluster) -> String {
    let t = format!("ip {NFT_TABLE}");
    let mut s = String::new();
    let mut delete_chains = Vec::new();
    for i in changed(old, new) {
        let vip = cluster_ip(i);
        let svc = nft_service_chain(i);
        let before: BTreeSet<Ipv4Addr> = old.get(&i).into_iter().flatten().copied().collect();
        match new.get(&i) {
            Some(eps) => {
                for &ep in eps.iter().filter(|ep| !before.contains(ep)) {
                    let chain = nft_endpoint_chain(i, ep);
                    let _ = writeln!(
                        s,
                        "add chain {t} {chain}\n\
                         add rule {t} {chain} ip saddr {ep} jump mark-for-masquerade\n\
                         add rule {t} {chain} meta l4proto tcp dnat to {ep}:8080"
                    );
                }
                let vmap: Vec<String> = eps
                    .iter()
                    .enumerate()
                    .map(|(k, &ep)| format!("{k} : goto {}", nft_endpoint_chain(i, ep)))
                    .collect();
                let _ = writeln!(
                    s,
                    "add chain {t} {svc}\nflush chain {t} {svc}\n\
                     add rule {t} {svc} ip daddr {vip} tcp dport 80 ip saddr != 10.0.0.0/8 \
                     jump mark-for-masquerade\n\
                     add rule {t} {svc} numgen random mod {} vmap {{ {} }}",
                    eps.len(),
                    vmap.join(", ")
                );
                if !old.contains_key(&i) {
                    let _ = writeln!(
                        s,
                        "add element {t} service-ips {{ {vip} . tcp . 80 : goto {svc} }}"
                    );
                }
                let now: BTreeSet<Ipv4Addr> = eps.iter().copied().collect();
                delete_chains.extend(before.difference(&now).map(|&ep| nft_endpoint_chain(i, ep)));
            }
            None => {
                let _ = writeln!(
                    s,
                    "delete element {t} service-ips {{ {vip} . tcp . 80 }}\nflush chain {t} {svc}"
                );
                delete_chains.push(svc);
                delete_chains.extend(before.iter().map(|&ep| nft_endpoint_chain(i, ep)));
            }
        }
    }
    // Chains go last: nothing may still jump to them.
    for chain in delete_chains {
        let _ = writeln!(s, "delete chain {t} {chain}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(n: u32, e: u32) -> Cluster {
        (0..n)
            .map(|i| {
                let eps = (0..e)
                    .map(|j| crate::synthetic::endpoint_ip(i, j, e))
                    .collect();
                (i, eps)
            })
            .collect()
    }

    fn count(text: &str, prefix: &str) -> usize {
        text.lines().filter(|l| l.starts_with(prefix)).count()
    }

    #[test]
    fn a_full_iptables_load_declares_and_fills_every_chain() {
        let c = cluster(3, 4);
        let text = iptables_restore(&Cluster::new(), &c, false);
        assert!(text.starts_with("*nat\n") && text.ends_with("COMMIT\n"));
        // 3 top-level chains, 3 KUBE-SVC, 12 KUBE-SEP.
        assert_eq!(count(&text, ":"), 3 + 3 + 12);
        // Every rule but the 3 jumps from the built-in chains.
        assert_eq!(count(&text, "-A "), iptables_rule_count(&c) - 3);
        assert_eq!(count(&text, "-X "), 0);
        let svc = svc_chain(1);
        let probabilities: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("-A {svc} ")))
            .map(|l| l.split("--probability ").nth(1).map_or("-", |p| &p[..12]))
            .collect();
        // The masquerade rule, then 1/4, 1/3, 1/2 and the last endpoint unconditionally.
        assert_eq!(
            probabilities,
            ["-", "0.2500000000", "0.3333333333", "0.5000000000", "-"]
        );
        assert!(text.contains(&format!(
            "-A {} -m comment --comment bench/svc-2:http -m tcp -p tcp -j DNAT --to-destination 10.128.0.12:8080",
            sep_chain(2, "10.128.0.12".parse().unwrap())
        )));
    }

    #[test]
    fn a_partial_iptables_restore_rewrites_only_changed_services_and_deletes_stale_chains() {
        let old = cluster(3, 2);
        let mut new = old.clone();
        let gone = new.get_mut(&1).unwrap()[0];
        new.get_mut(&1).unwrap()[0] = "11.0.0.1".parse().unwrap();
        new.remove(&2);
        let text = iptables_restore(&old, &new, true);
        // KUBE-SERVICES is always whole: both remaining Services.
        assert_eq!(count(&text, "-A KUBE-SERVICES "), 2);
        // Service 0 is untouched; Service 1 is rewritten (its chain and two
        // endpoint chains); Service 2's three chains and the stale endpoint
        // chain of Service 1 are declared and deleted.
        assert_eq!(count(&text, &format!(":{}", svc_chain(0))), 0);
        assert_eq!(count(&text, &format!(":{}", svc_chain(1))), 1);
        let deleted: BTreeSet<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix("-X "))
            .map(str::to_owned)
            .collect();
        let mut expected: BTreeSet<String> = old[&2].iter().map(|&ep| sep_chain(2, ep)).collect();
        expected.extend([svc_chain(2), sep_chain(1, gone)]);
        assert_eq!(deleted, expected);
        // The full restore rewrites Service 0 as well.
        let full = iptables_restore(&old, &new, false);
        assert_eq!(count(&full, &format!(":{}", svc_chain(0))), 1);
    }

    #[test]
    fn an_nft_update_touches_only_what_changed() {
        let old = cluster(3, 2);
        let load = nft_update(&Cluster::new(), &old);
        assert_eq!(count(&load, "add chain "), 3 + 6);
        assert_eq!(count(&load, "add element "), 3);
        assert_eq!(count(&load, "delete "), 0);

        let mut new = old.clone();
        new.insert(3, vec!["10.200.0.1".parse().unwrap()]);
        new.get_mut(&1).unwrap()[1] = "11.0.0.1".parse().unwrap();
        new.remove(&0);
        let text = nft_update(&old, &new);
        let lines: Vec<&str> = text.lines().collect();
        // Added: Service 3 and its endpoint; Service 1's new endpoint and
        // its rewritten chain; deleted: Service 0, its endpoints, and
        // Service 1's old endpoint, after every flush.
        assert_eq!(count(&text, "add element "), 1);
        assert_eq!(count(&text, "delete element "), 1);
        assert_eq!(count(&text, "flush chain "), 3);
        assert_eq!(count(&text, "delete chain "), 4);
        assert!(text.contains("numgen random mod 2 vmap { 0 : goto endpoint-"));
        let first_delete = lines
            .iter()
            .position(|l| l.starts_with("delete chain"))
            .unwrap();
        assert!(
            lines[first_delete..]
                .iter()
                .all(|l| l.starts_with("delete chain"))
        );
        assert!(nft_skeleton().contains("add map ip kube-proxy service-ips"));
        assert_eq!(count(&nft_skeleton(), "add chain "), NFT_BASE_CHAINS);
        // Services 1, 2 (two endpoints each) and 3 (one).
        assert_eq!(nft_chains(&new).len(), 3 + 2 + 2 + 1);
    }
}
