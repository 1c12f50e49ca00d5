//! The fixed part of the table: sets and chains, from the configuration
//! alone. Services never change it; only their elements change.

use crate::element::{SetKind, SetName};
use crate::{FAMILY, TABLE};
use ipnet::IpNet;
use std::fmt::Write;

/// kube-proxy's masquerade mark (`masqueradeBit` 14).
pub const DEFAULT_MASQUERADE_MARK: u32 = 1 << 14;

/// The configuration the table's rules depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skeleton {
    /// `masqueradeAll`: masquerade all traffic to ClusterIPs.
    pub masquerade_all: bool,
    /// How traffic from this node's pods is told from the rest
    /// (`detectLocalMode`): traffic to ClusterIPs that is not local is
    /// masqueraded.
    pub local: LocalTraffic,
    /// The packet mark that asks for masquerade.
    pub mark: u32,
}

impl Default for Skeleton {
    fn default() -> Self {
        Skeleton {
            masquerade_all: false,
            local: LocalTraffic::ClusterCidrs(Vec::new()),
            mark: DEFAULT_MASQUERADE_MARK,
        }
    }
}

/// kube-proxy's local-traffic detectors (`detectLocalMode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalTraffic {
    /// `ClusterCIDR`: sources in the pods' CIDRs (`clusterCIDR`, one per
    /// family at most is usual) are local. A family without one masquerades
    /// traffic whose source is a VIP instead (kube-proxy without a
    /// local-traffic detector).
    ClusterCidrs(Vec<IpNet>),
    /// `NodeCIDR`: sources in this node's `spec.podCIDRs` are local; a
    /// family without one as for `ClusterCidrs`.
    NodeCidrs(Vec<IpNet>),
    /// `BridgeInterface`: packets that came in on this interface are local.
    BridgeInterface(String),
    /// `InterfaceNamePrefix`: packets that came in on an interface whose
    /// name starts with this are local.
    InterfaceNamePrefix(String),
}

/// Whether `name` can stand in the table as an interface name or prefix:
/// 1 to 15 bytes (IFNAMSIZ), none of them a quote, a backslash, a `*`,
/// whitespace or a control character, so the rule text stays one nft
/// string.
pub fn interface_name_ok(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\\' | '*' | '/'))
}

/// One family's spelling.
struct Fam {
    ip: &'static str,
    v6: bool,
}

const FAMS: [Fam; 2] = [
    Fam {
        ip: "ip",
        v6: false,
    },
    Fam {
        ip: "ip6",
        v6: true,
    },
];

impl Fam {
    fn set(&self, kind: SetKind) -> SetName {
        SetName { kind, v6: self.v6 }
    }
}

impl Skeleton {
    /// The table as one nft `table { … }` block, with its fingerprint as
    /// the table's comment. The rules, per family:
    ///
    /// - `mark-masquerade` (from `prerouting` and `output`, priority -100 like
    ///   dstnat, before IPVS sees the packet): marks traffic to ClusterIP virtual servers per
    ///   `masqueradeAll` / the local-traffic detector ([`LocalTraffic`]: a
    ///   source outside the pod CIDRs, or an input interface other than the
    ///   pods' bridge or prefix; with no CIDR for a family, traffic whose
    ///   source is a VIP: the node reaching a VIP picks the VIP as source),
    ///   and traffic to externalIP, load-balancer and NodePort virtual
    ///   servers except `externalTrafficPolicy: Local` ones (their elements
    ///   are left out of `external-ports`), so the client IP is kept.
    /// - `source-ranges` (also from `prerouting` and `output`): traffic to a
    ///   load-balancer virtual server with `loadBalancerSourceRanges` from a
    ///   source outside them is dropped.
    /// - `vip-filter` (input): a new connection to an address bound on
    ///   kube-ipvs0 on a protocol/port that is no virtual server and no
    ///   health-check node port is rejected (TCP reset, else ICMP port
    ///   unreachable), so `ClusterIP:22` never reaches the node's sshd.
    ///   Virtual servers without real servers stay in `vip-ports`, so IPVS's
    ///   own ICMP port-unreachable answers them at once.
    /// - `forward`: accepts marked and established/related forwarded traffic
    ///   (kube-proxy's KUBE-FORWARD). In nftables an accept is final only
    ///   for its own base chain: a drop policy in another table still drops.
    /// - `postrouting` (NAT): hairpin traffic (an endpoint reached
    ///   from itself, matched after IPVS rewrote the destination) and marked
    ///   traffic are masqueraded with fully random ports, the mark cleared;
    ///   loopback sources are left alone.
    ///
    /// The fingerprint is the comment of the table and of the `hc-ports`
    /// set (nft 1.0.6's JSON lists set comments but not table comments).
    pub fn render(&self) -> String {
        let fp = self.fingerprint();
        let body = self.body().replace(
            "set hc-ports { type inet_service; }",
            &format!("set hc-ports {{ type inet_service; comment \"{fp}\"; }}"),
        );
        format!("table {FAMILY} {TABLE} {{\n\tcomment \"{fp}\"\n{body}}}\n")
    }

    /// What the table's comment says: a hash of the skeleton's text.
    pub fn fingerprint(&self) -> String {
        format!("kipvs skeleton {:016x}", fnv1a(self.body().as_bytes()))
    }

    fn body(&self) -> String {
        let mut t = String::new();
        let mark = format!("meta mark set meta mark | {:#x}", self.mark);
        for name in crate::element::SetName::all() {
            let addr = if name.v6 { "ipv6_addr" } else { "ipv4_addr" };
            let _ = writeln!(t, "\tset {name} {{ {} }}", name.kind.declaration(addr));
        }
        // Marking for masquerade.
        let _ = writeln!(t, "\tchain mark-masquerade {{");
        for f in &FAMS {
            let ip = f.ip;
            let cluster = f.set(SetKind::ClusterPorts);
            let cidrs: Vec<String> = match &self.local {
                LocalTraffic::ClusterCidrs(c) | LocalTraffic::NodeCidrs(c) => c
                    .iter()
                    .filter(|n| matches!(n, IpNet::V6(_)) == f.v6)
                    .map(|n| n.trunc().to_string())
                    .collect(),
                _ => Vec::new(),
            };
            // An interface name the table cannot hold renders as no
            // detector (callers check names with `interface_name_ok`).
            let iif = match &self.local {
                LocalTraffic::BridgeInterface(n) if interface_name_ok(n) => Some(n.clone()),
                LocalTraffic::InterfaceNamePrefix(p) if interface_name_ok(p) => {
                    Some(format!("{p}*"))
                }
                _ => None,
            };
            if self.masquerade_all {
                let _ = writeln!(
                    t,
                    "\t\t{ip} daddr . meta l4proto . th dport @{cluster} {mark}"
                );
            } else if let Some(iif) = iif {
                // Locally generated packets have no input interface
                // (iifname ""), so they count as not local, as with
                // kube-proxy's `! -i`.
                let _ = writeln!(
                    t,
                    "\t\tiifname != \"{iif}\" {ip} daddr . meta l4proto . th dport @{cluster} {mark}"
                );
            } else if !cidrs.is_empty() {
                let _ = writeln!(
                    t,
                    "\t\t{ip} saddr != {{ {} }} {ip} daddr . meta l4proto . th dport @{cluster} {mark}",
                    cidrs.join(", ")
                );
            } else {
                let _ = writeln!(
                    t,
                    "\t\t{ip} saddr . meta l4proto . th dport @{cluster} {mark}"
                );
            }
            let _ = writeln!(
                t,
                "\t\t{ip} daddr . meta l4proto . th dport @{} {mark}",
                f.set(SetKind::ExternalPorts)
            );
        }
        let _ = writeln!(t, "\t}}");
        // loadBalancerSourceRanges.
        let _ = writeln!(t, "\tchain source-ranges {{");
        for f in &FAMS {
            let ip = f.ip;
            let _ = writeln!(
                t,
                "\t\t{ip} daddr . meta l4proto . th dport @{} {ip} daddr . meta l4proto . th dport . {ip} saddr != @{} drop",
                f.set(SetKind::LbRestricted),
                f.set(SetKind::LbAllowed)
            );
        }
        let _ = writeln!(t, "\t}}");
        for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
            let _ = writeln!(
                t,
                "\tchain {chain} {{\n\t\ttype filter hook {hook} priority -100; policy accept;\n\
                 \t\tjump source-ranges\n\t\tjump mark-masquerade\n\t}}"
            );
        }
        // The VIP port filter.
        let _ = writeln!(
            t,
            "\tchain vip-reject {{\n\t\tmeta l4proto tcp reject with tcp reset\n\
             \t\treject with icmpx port-unreachable\n\t}}"
        );
        let _ = writeln!(
            t,
            "\tchain vip-filter {{\n\t\ttype filter hook input priority filter; policy accept;"
        );
        for f in &FAMS {
            let ip = f.ip;
            let _ = writeln!(
                t,
                "\t\tct state new {ip} daddr @{} {ip} daddr . meta l4proto . th dport != @{} th dport != @{} jump vip-reject",
                f.set(SetKind::VipAddrs),
                f.set(SetKind::VipPorts),
                SetName {
                    kind: SetKind::HealthCheckPorts,
                    v6: false
                }
            );
        }
        let _ = writeln!(t, "\t}}");
        // Forwarding.
        let _ = writeln!(
            t,
            "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tmeta mark & {m:#x} == {m:#x} accept\n\
             \t\tct state related,established accept\n\t}}",
            m = self.mark
        );
        // Masquerade.
        let _ = writeln!(
            t,
            "\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\tip saddr 127.0.0.0/8 return\n\t\tip6 saddr ::1 return"
        );
        for f in &FAMS {
            let ip = f.ip;
            let _ = writeln!(
                t,
                "\t\t{ip} daddr . meta l4proto . th dport . {ip} saddr @{} {mark}",
                f.set(SetKind::Hairpin)
            );
        }
        let _ = writeln!(
            t,
            "\t\tmeta mark & {m:#x} == 0 return\n\
             \t\tmeta mark set meta mark ^ {m:#x} masquerade fully-random\n\t}}",
            m = self.mark
        );
        t
    }
}

/// 64-bit FNV-1a: a stable fingerprint (std's hashers may change between
/// releases, and the fingerprint outlives the process).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
