//! The node sysctls IPVS service proxying needs, chosen by a pure function
//! of the options and the kernel version, and applied idempotently with a
//! report of each (name, old → new).
//!
//! | sysctl | value | why |
//! |---|---|---|
//! | `net.ipv4.vs.conntrack` | 1 | keep conntrack entries for IPVS connections, so masquerade and filtering rules see them |
//! | `net.ipv4.vs.expire_nodest_conn` | 1 | drop connections to a deleted real server at once instead of black-holing them |
//! | `net.ipv4.vs.expire_quiescent_template` | 1 | expire persistence templates of weight-0 real servers, so session affinity moves off a draining server |
//! | `net.ipv4.ip_forward` | 1 | forward to real servers |
//! | `net.ipv6.conf.all.forwarding` | 1 | the same for IPv6, with dual-stack (kipvs's addition: kube-proxy sets only IPv4 forwarding) |
//! | `net.ipv4.vs.conn_reuse_mode` | 0 | only on kernels 4.1–5.8, against the 1-second connect delay (kubernetes #70747, #71114); 0 itself causes #81775, so from 5.9 on it is left alone |
//! | `net.ipv4.conf.all.arp_ignore` / `arp_announce` | 1 / 2 | with strict ARP: the node does not answer ARP for addresses on kube-ipvs0 |

use std::fmt;
use std::path::{Path, PathBuf};

/// A kernel version, (major, minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion(pub u32, pub u32);

impl KernelVersion {
    /// Parses `uname -r` style strings (`6.1.0-56-cloud-amd64`, `5.4.0`).
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelVersion(major, minor))
    }

    /// The running kernel's version, from `/proc/sys/kernel/osrelease`.
    pub fn running() -> Option<KernelVersion> {
        KernelVersion::parse(&std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?)
    }
}

/// What the node is set up for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// IPv6 is served too.
    pub dual_stack: bool,
    /// kube-proxy's `ipvs.strictARP`.
    pub strict_arp: bool,
}

/// One sysctl and the value it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub name: &'static str,
    pub value: &'static str,
}

/// The sysctls the node needs, in the order they are applied.
pub fn required(opts: Options, kernel: KernelVersion) -> Vec<Sysctl> {
    let s = |name, value| Sysctl { name, value };
    let mut out = vec![
        s("net.ipv4.vs.conntrack", "1"),
        s("net.ipv4.vs.expire_nodest_conn", "1"),
        s("net.ipv4.vs.expire_quiescent_template", "1"),
        s("net.ipv4.ip_forward", "1"),
    ];
    if opts.dual_stack {
        out.push(s("net.ipv6.conf.all.forwarding", "1"));
    }
    if kernel >= KernelVersion(4, 1) && kernel < KernelVersion(5, 9) {
        out.push(s("net.ipv4.vs.conn_reuse_mode", "0"));
    }
    if opts.strict_arp {
        out.push(s("net.ipv4.conf.all.arp_ignore", "1"));
        out.push(s("net.ipv4.conf.all.arp_announce", "2"));
    }
    out
}

/// What applying one sysctl did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub name: &'static str,
    pub old: String,
    pub new: String,
}

impl Applied {
    pub fn changed(&self) -> bool {
        self.old != self.new
    }
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.changed() {
            write!(f, "{}: {} → {}", self.name, self.old, self.new)
        } else {
            write!(f, "{}: {} (unchanged)", self.name, self.new)
        }
    }
}

/// A sysctl that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The file does not exist: the module providing it is not loaded.
    #[error(
        "sysctl {name} does not exist (is the module providing it loaded? IPVS sysctls appear with ip_vs)"
    )]
    Missing { name: &'static str },
    #[error("sysctl {name}: {source}")]
    Io {
        name: &'static str,
        source: std::io::Error,
    },
}

/// The file of a sysctl under `root` (normally `/proc/sys`).
pub fn path(root: &Path, name: &str) -> PathBuf {
    root.join(name.replace('.', "/"))
}

/// Applies the sysctls under `root`, writing only those that differ.
pub fn apply(root: &Path, sysctls: &[Sysctl]) -> Result<Vec<Applied>, SysctlError> {
    let mut out = Vec::new();
    for s in sysctls {
        let p = path(root, s.name);
        let old = match std::fs::read_to_string(&p) {
            Ok(v) => v.trim().to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SysctlError::Missing { name: s.name });
            }
            Err(e) => {
                return Err(SysctlError::Io {
                    name: s.name,
                    source: e,
                });
            }
        };
        if old != s.value {
            std::fs::write(&p, s.value).map_err(|e| SysctlError::Io {
                name: s.name,
                source: e,
            })?;
        }
        out.push(Applied {
            name: s.name,
            old,
            new: s.value.to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(
            KernelVersion::parse("6.1.0-56-cloud-amd64"),
            Some(KernelVersion(6, 1))
        );
        assert_eq!(KernelVersion::parse("5.4.0"), Some(KernelVersion(5, 4)));
        assert_eq!(KernelVersion::parse("4.19"), Some(KernelVersion(4, 19)));
        assert_eq!(KernelVersion::parse("garbage"), None);
    }

    #[test]
    fn conn_reuse_mode_only_on_4_1_to_5_8() {
        let has = |k| {
            required(Options::default(), k)
                .iter()
                .any(|s| s.name == "net.ipv4.vs.conn_reuse_mode")
        };
        assert!(!has(KernelVersion(4, 0)));
        assert!(has(KernelVersion(4, 1)));
        assert!(has(KernelVersion(5, 8)));
        assert!(!has(KernelVersion(5, 9)));
        assert!(!has(KernelVersion(6, 1)));
    }

    #[test]
    fn ipv6_forwarding_with_dual_stack_and_arp_with_strict_arp() {
        let names = |o| {
            required(o, KernelVersion(6, 1))
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(Options::default()),
            [
                "net.ipv4.vs.conntrack",
                "net.ipv4.vs.expire_nodest_conn",
                "net.ipv4.vs.expire_quiescent_template",
                "net.ipv4.ip_forward"
            ]
        );
        let all = names(Options {
            dual_stack: true,
            strict_arp: true,
        });
        assert!(all.contains(&"net.ipv6.conf.all.forwarding"));
        assert!(all.ends_with(&[
            "net.ipv4.conf.all.arp_ignore",
            "net.ipv4.conf.all.arp_announce"
        ]));
    }

    #[test]
    fn apply_reports_old_and_new_and_is_idempotent() {
        let root = std::env::temp_dir().join(format!("kipvs-sysctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (name, v) in [
            ("net.ipv4.vs.conntrack", "0\n"),
            ("net.ipv4.ip_forward", "1\n"),
        ] {
            let p = path(&root, name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        }
        let want = [
            Sysctl {
                name: "net.ipv4.vs.conntrack",
                value: "1",
            },
            Sysctl {
                name: "net.ipv4.ip_forward",
                value: "1",
            },
        ];
        let first = apply(&root, &want).unwrap();
        assert_eq!(first[0].to_string(), "net.ipv4.vs.conntrack: 0 → 1");
        assert_eq!(first[1].to_string(), "net.ipv4.ip_forward: 1 (unchanged)");
        assert_eq!(
            std::fs::read_to_string(path(&root, "net.ipv4.vs.conntrack")).unwrap(),
            "1"
        );
        assert!(apply(&root, &want).unwrap().iter().all(|a| !a.changed()));

        let missing = apply(
            &root,
            &[Sysctl {
                name: "net.ipv4.vs.expire_nodest_conn",
                value: "1",
            }],
        )
        .unwrap_err();
        assert!(matches!(
            missing,
            SysctlError::Missing {
                name: "net.ipv4.vs.expire_nodest_conn"
            }
        ));
        assert!(
            missing
                .to_string()
                .contains("net.ipv4.vs.expire_nodest_conn does not exist")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
