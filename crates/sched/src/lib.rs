//! IPVS scheduler configuration: every scheduler the Linux kernel has, the
//! scheduler flags, and what each scheduler means for weights and draining,
//! parsed and validated once from the spellings users write.
//!
//! # Spellings
//!
//! - kube-proxy's configuration and flags: `ipvs.scheduler: "wrr"`,
//!   `--ipvs-scheduler=wrr`; an empty string means `rr`, as in kube-proxy.
//! - Per Service (kipvs's own; kube-router has the like, kube-proxy not):
//!   the annotations [`ANNOTATION_SCHEDULER`] (`kipvs.io/scheduler: "sh"`)
//!   and [`ANNOTATION_SCHEDULER_FLAGS`]
//!   (`kipvs.io/scheduler-flags: "sh-port,sh-fallback"`).
//!
//! Names are lowercase, as the kernel's (`ip_vs_<name>` is the module the
//! kernel loads); whitespace around names and flags is ignored. An unknown
//! name is an error listing the valid ones.
//!
//! # Flags
//!
//! The kernel has three scheduler flag bits, `IP_VS_SVC_F_SCHED1..3`, whose
//! meaning belongs to the scheduler: `sh-fallback`/`mh-fallback` are
//! SCHED1, `sh-port`/`mh-port` SCHED2. The kernel accepts any bits on any
//! scheduler; ipvsadm refuses a flag of another scheduler, and so does this
//! crate ([`Error::FlagNotForScheduler`]). Like kube-proxy, `mh` gets
//! `mh-port` when no flags are given.
//!
//! # Draining
//!
//! To take a real server out gracefully, kube-proxy sets its weight to 0 so
//! that it gets no new connections while existing ones finish. That holds
//! for every scheduler except the hashing ones without fallback: `sh` and
//! `mh` map a client to a real server by hash, and a client hashing to a
//! weight-0 server gets *no* server at all unless `sh-fallback` /
//! `mh-fallback` is set. For those, [`SchedulerConfig::drain`] says
//! [`Drain::RemoveNow`].
//!
//! ```
//! use kipvs_sched::{Drain, Scheduler, SchedulerConfig};
//!
//! let cfg = SchedulerConfig::from_annotations("sh", Some("sh-port, sh-fallback")).unwrap();
//! assert_eq!(cfg.scheduler(), Scheduler::Sh);
//! assert_eq!(cfg.flag_bits(), 0x18);
//! assert_eq!(cfg.flags_string(), "sh-fallback,sh-port"); // as `ipvsadm -S` writes it
//! assert_eq!(cfg.drain(), Drain::ZeroWeight);
//!
//! let mh: SchedulerConfig = "mh".parse().unwrap();
//! assert_eq!(mh.flags_string(), "mh-port"); // kube-proxy's default
//! assert_eq!(mh.drain(), Drain::RemoveNow);
//!
//! let err = SchedulerConfig::from_annotations("rr", Some("sh-port")).unwrap_err();
//! assert_eq!(err.to_string(), "scheduler flag `sh-port` is only for the `sh` scheduler, not `rr`");
//! ```

use std::fmt;
use std::str::FromStr;

/// The per-Service annotation choosing the scheduler.
pub const ANNOTATION_SCHEDULER: &str = "kipvs.io/scheduler";
/// The per-Service annotation setting scheduler flags.
pub const ANNOTATION_SCHEDULER_FLAGS: &str = "kipvs.io/scheduler-flags";

/// `IP_VS_SVC_F_SCHED1`.
pub const SCHED1: u32 = 0x0008;
/// `IP_VS_SVC_F_SCHED2`.
pub const SCHED2: u32 = 0x0010;
/// `IP_VS_SVC_F_SCHED3`.
pub const SCHED3: u32 = 0x0020;
/// All scheduler flag bits.
pub const SCHED_MASK: u32 = SCHED1 | SCHED2 | SCHED3;

/// An IPVS scheduler of the Linux kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections (ipvsadm's default).
    Wlc,
    /// Locality-based least connections.
    Lblc,
    /// Locality-based least connections with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Maglev hashing.
    Mh,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
    /// Weighted random twos choice (Linux 6.2+).
    Twos,
}

impl Scheduler {
    /// Every scheduler, in the kernel's Kconfig order.
    pub const ALL: [Scheduler; 14] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Fo,
        Scheduler::Ovf,
        Scheduler::Lblc,
        Scheduler::Lblcr,
        Scheduler::Dh,
        Scheduler::Sh,
        Scheduler::Mh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Twos,
    ];

    /// The kernel's name (`rr`, `wlc` …).
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
            Scheduler::Dh => "dh",
            Scheduler::Sh => "sh",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Mh => "mh",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
            Scheduler::Twos => "twos",
        }
    }

    /// The kernel module implementing it (`ip_vs_rr` …), which the kernel
    /// loads when a service first asks for the scheduler.
    pub fn module(self) -> String {
        format!("ip_vs_{}", self.name())
    }

    /// The first kernel that has it, as (major, minor).
    pub fn since_kernel(self) -> (u32, u32) {
        match self {
            Scheduler::Twos => (6, 2),
            Scheduler::Ovf => (4, 3),
            Scheduler::Fo => (3, 18),
            Scheduler::Mh => (4, 18),
            _ => (2, 6),
        }
    }

    /// Whether real-server weights shape the distribution. For `rr`, `lc`
    /// and `dh` a weight only matters as 0 (unavailable) or not.
    pub fn uses_weights(self) -> bool {
        !matches!(self, Scheduler::Rr | Scheduler::Lc | Scheduler::Dh)
    }

    /// The named flags of this scheduler.
    pub fn flags(self) -> &'static [SchedFlag] {
        match self {
            Scheduler::Sh => &[SchedFlag::ShFallback, SchedFlag::ShPort],
            Scheduler::Mh => &[SchedFlag::MhFallback, SchedFlag::MhPort],
            _ => &[],
        }
    }

    /// Parses a kernel name; `""` is `rr` (kube-proxy's default).
    pub fn parse(name: &str) -> Result<Scheduler, Error> {
        let name = name.trim();
        if name.is_empty() {
            return Ok(Scheduler::Rr);
        }
        Scheduler::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| Error::UnknownScheduler {
                name: name.to_owned(),
            })
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Scheduler::parse(s)
    }
}

/// A named scheduler flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SchedFlag {
    /// `sh-fallback`: a client hashing to an unavailable server is sent to another.
    ShFallback,
    /// `sh-port`: hash the source port too.
    ShPort,
    /// `mh-fallback`.
    MhFallback,
    /// `mh-port`.
    MhPort,
}

impl SchedFlag {
    /// Every named flag.
    pub const ALL: [SchedFlag; 4] = [
        SchedFlag::ShFallback,
        SchedFlag::ShPort,
        SchedFlag::MhFallback,
        SchedFlag::MhPort,
    ];

    /// Its spelling (`sh-port` …).
    pub fn name(self) -> &'static str {
        match self {
            SchedFlag::ShFallback => "sh-fallback",
            SchedFlag::ShPort => "sh-port",
            SchedFlag::MhFallback => "mh-fallback",
            SchedFlag::MhPort => "mh-port",
        }
    }

    /// The kernel bit (`IP_VS_SVC_F_SCHED_SH_FALLBACK` …).
    pub fn bit(self) -> u32 {
        match self {
            SchedFlag::ShFallback | SchedFlag::MhFallback => SCHED1,
            SchedFlag::ShPort | SchedFlag::MhPort => SCHED2,
        }
    }

    /// The scheduler it belongs to.
    pub fn scheduler(self) -> Scheduler {
        match self {
            SchedFlag::ShFallback | SchedFlag::ShPort => Scheduler::Sh,
            SchedFlag::MhFallback | SchedFlag::MhPort => Scheduler::Mh,
        }
    }

    /// Parses a spelling.
    pub fn parse(name: &str) -> Result<SchedFlag, Error> {
        let name = name.trim();
        SchedFlag::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| Error::UnknownFlag {
                flag: name.to_owned(),
            })
    }
}

impl fmt::Display for SchedFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a real server leaves gracefully under a scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drain {
    /// Weight 0: no new connections, existing ones finish.
    ZeroWeight,
    /// Remove it at once: weight 0 would strand the clients hashing to it
    /// (`sh`/`mh` without their fallback flag).
    RemoveNow,
}

/// A scheduler with its flags, valid together.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SchedulerConfig {
    scheduler: Scheduler,
    /// `SCHED1..3` bits.
    bits: u32,
}

impl Default for SchedulerConfig {
    /// `rr`, kube-proxy's default.
    fn default() -> Self {
        SchedulerConfig {
            scheduler: Scheduler::Rr,
            bits: 0,
        }
    }
}

impl SchedulerConfig {
    /// A scheduler with explicit flags, each of which must be its own.
    /// With no flags, `mh` gets `mh-port` (kube-proxy's default).
    pub fn new(scheduler: Scheduler, flags: &[SchedFlag]) -> Result<Self, Error> {
        let mut bits = 0;
        for f in flags {
            if f.scheduler() != scheduler {
                return Err(Error::FlagNotForScheduler {
                    flag: *f,
                    scheduler,
                });
            }
            bits |= f.bit();
        }
        if flags.is_empty() && scheduler == Scheduler::Mh {
            bits = SchedFlag::MhPort.bit();
        }
        Ok(SchedulerConfig { scheduler, bits })
    }

    /// From the per-Service annotations' values: a scheduler name and an
    /// optional comma-separated flag list. An empty list (`""`) means no
    /// flags at all, even for `mh`; an absent one means the default.
    pub fn from_annotations(scheduler: &str, flags: Option<&str>) -> Result<Self, Error> {
        let scheduler = Scheduler::parse(scheduler)?;
        let Some(list) = flags else {
            return SchedulerConfig::new(scheduler, &[]);
        };
        let mut parsed = Vec::new();
        for item in list.split(',') {
            if item.trim().is_empty() {
                if list.trim().is_empty() {
                    break;
                }
                return Err(Error::EmptyFlag {
                    list: list.to_owned(),
                });
            }
            let f = SchedFlag::parse(item)?;
            if parsed.contains(&f) {
                return Err(Error::DuplicateFlag { flag: f });
            }
            parsed.push(f);
        }
        if parsed.is_empty() {
            return Ok(SchedulerConfig { scheduler, bits: 0 });
        }
        SchedulerConfig::new(scheduler, &parsed)
    }

    /// What the kernel holds: its scheduler name and flag bits (other bits
    /// are ignored). The kernel accepted them, so any bits are kept as they
    /// are; only an unknown name is an error.
    pub fn from_kernel(name: &str, flag_bits: u32) -> Result<Self, Error> {
        Ok(SchedulerConfig {
            scheduler: Scheduler::parse(name)?,
            bits: flag_bits & SCHED_MASK,
        })
    }

    /// The scheduler.
    pub fn scheduler(&self) -> Scheduler {
        self.scheduler
    }

    /// The `IP_VS_SVC_F_SCHED*` bits to send to the kernel.
    pub fn flag_bits(&self) -> u32 {
        self.bits
    }

    /// The flags as `ipvsadm -S` writes them after `-b`: named for `sh` and
    /// `mh`, `flag-N` otherwise, in bit order, comma-separated; empty when
    /// there are none.
    pub fn flags_string(&self) -> String {
        let mut out = Vec::new();
        for (n, bit) in [(1, SCHED1), (2, SCHED2), (3, SCHED3)] {
            if self.bits & bit == 0 {
                continue;
            }
            let named = self.scheduler.flags().iter().find(|f| f.bit() == bit);
            out.push(named.map_or_else(|| format!("flag-{n}"), |f| f.name().to_owned()));
        }
        out.join(",")
    }

    /// How a real server drains under this configuration.
    pub fn drain(&self) -> Drain {
        let hashing_without_fallback =
            matches!(self.scheduler, Scheduler::Sh | Scheduler::Mh) && self.bits & SCHED1 == 0;
        if hashing_without_fallback {
            Drain::RemoveNow
        } else {
            Drain::ZeroWeight
        }
    }
}

impl fmt::Display for SchedulerConfig {
    /// `rr`, or `sh (sh-fallback,sh-port)` with flags.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = self.flags_string();
        if flags.is_empty() {
            write!(f, "{}", self.scheduler)
        } else {
            write!(f, "{} ({flags})", self.scheduler)
        }
    }
}

impl FromStr for SchedulerConfig {
    type Err = Error;
    /// A scheduler name with its default flags (the configuration's and
    /// the flag's spelling), or the [`Display`](fmt::Display) form
    /// `name (flag,flag)`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().split_once(" (") {
            Some((name, rest)) => {
                let flags = rest
                    .strip_suffix(')')
                    .ok_or_else(|| Error::UnknownScheduler { name: s.to_owned() })?;
                SchedulerConfig::from_annotations(name, Some(flags))
            }
            None => SchedulerConfig::from_annotations(s, None),
        }
    }
}

/// A scheduler configuration that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not a scheduler of the kernel.
    #[error("unknown IPVS scheduler `{name}` (valid: {})", valid_schedulers())]
    UnknownScheduler { name: String },
    /// Not a scheduler flag.
    #[error("unknown scheduler flag `{flag}` (valid: sh-fallback, sh-port, mh-fallback, mh-port)")]
    UnknownFlag { flag: String },
    /// A flag of another scheduler.
    #[error("scheduler flag `{flag}` is only for the `{}` scheduler, not `{scheduler}`", flag.scheduler())]
    FlagNotForScheduler {
        flag: SchedFlag,
        scheduler: Scheduler,
    },
    /// A flag named twice.
    #[error("scheduler flag `{flag}` is given twice")]
    DuplicateFlag { flag: SchedFlag },
    /// An empty item in a flag list (`sh-port,,`).
    #[error("empty item in scheduler flag list `{list}`")]
    EmptyFlag { list: String },
}

fn valid_schedulers() -> String {
    Scheduler::ALL
        .iter()
        .map(|s| s.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_scheduler_spelling_and_module() {
        for s in Scheduler::ALL {
            assert_eq!(Scheduler::parse(s.name()), Ok(s));
            assert_eq!(s.module(), format!("ip_vs_{}", s.name()));
        }
        assert_eq!(
            Scheduler::parse(""),
            Ok(Scheduler::Rr),
            "kube-proxy: empty is rr"
        );
        assert_eq!(Scheduler::parse("  wrr "), Ok(Scheduler::Wrr));
        assert_eq!(Scheduler::ALL.len(), 14);
        assert_eq!(Scheduler::Twos.since_kernel(), (6, 2));
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = Scheduler::parse("fastest").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown IPVS scheduler `fastest` (valid: rr, wrr, lc, wlc, fo, ovf, lblc, lblcr, dh, sh, mh, sed, nq, twos)"
        );
        assert!(
            matches!(Scheduler::parse("RR"), Err(Error::UnknownScheduler { .. })),
            "lowercase, as the kernel"
        );
    }

    #[test]
    fn flags_map_to_the_kernel_bits() {
        // include/uapi/linux/ip_vs.h: IP_VS_SVC_F_SCHED_SH_FALLBACK = SCHED1 …
        assert_eq!(SchedFlag::ShFallback.bit(), 0x08);
        assert_eq!(SchedFlag::ShPort.bit(), 0x10);
        assert_eq!(SchedFlag::MhFallback.bit(), 0x08);
        assert_eq!(SchedFlag::MhPort.bit(), 0x10);
    }

    #[test]
    fn annotation_table() {
        let ok = |s: &str, f: Option<&str>| {
            SchedulerConfig::from_annotations(s, f).map(|c| (c.scheduler(), c.flag_bits()))
        };
        assert_eq!(
            ok("sh", Some("sh-port,sh-fallback")),
            Ok((Scheduler::Sh, 0x18))
        );
        assert_eq!(ok("sh", Some(" sh-port ")), Ok((Scheduler::Sh, 0x10)));
        assert_eq!(ok("sh", None), Ok((Scheduler::Sh, 0)));
        assert_eq!(
            ok("mh", None),
            Ok((Scheduler::Mh, 0x10)),
            "mh-port by default"
        );
        assert_eq!(
            ok("mh", Some("mh-fallback")),
            Ok((Scheduler::Mh, 0x08)),
            "explicit flags replace the default"
        );
        assert_eq!(
            ok("mh", Some("")),
            Ok((Scheduler::Mh, 0)),
            "an empty list means none"
        );
        assert_eq!(ok("wrr", Some("")), Ok((Scheduler::Wrr, 0)));
        assert_eq!(
            ok("rr", Some("sh-port")),
            Err(Error::FlagNotForScheduler {
                flag: SchedFlag::ShPort,
                scheduler: Scheduler::Rr
            })
        );
        assert_eq!(
            ok("sh", Some("mh-port")),
            Err(Error::FlagNotForScheduler {
                flag: SchedFlag::MhPort,
                scheduler: Scheduler::Sh
            })
        );
        assert_eq!(
            ok("sh", Some("sh-port,sh-port")),
            Err(Error::DuplicateFlag {
                flag: SchedFlag::ShPort
            })
        );
        assert_eq!(
            ok("sh", Some("sh-port,,")),
            Err(Error::EmptyFlag {
                list: "sh-port,,".into()
            })
        );
        assert_eq!(
            ok("sh", Some("sh-turbo")),
            Err(Error::UnknownFlag {
                flag: "sh-turbo".into()
            })
        );
        assert!(matches!(
            ok("nope", None),
            Err(Error::UnknownScheduler { .. })
        ));
    }

    #[test]
    fn flags_print_as_ipvsadm_writes_them() {
        let k = |s: &str, b: u32| SchedulerConfig::from_kernel(s, b).unwrap().flags_string();
        assert_eq!(k("sh", 0x18), "sh-fallback,sh-port");
        assert_eq!(k("sh", 0x20), "flag-3");
        assert_eq!(k("mh", 0x10 | 0x20), "mh-port,flag-3");
        assert_eq!(k("rr", 0x08), "flag-1");
        assert_eq!(k("wlc", 0), "");
        assert_eq!(
            k("sh", 0x02 | 0x01),
            "",
            "non-scheduler bits are not scheduler flags"
        );
    }

    #[test]
    fn weights_and_draining_per_scheduler() {
        for s in Scheduler::ALL {
            let expect = !matches!(s, Scheduler::Rr | Scheduler::Lc | Scheduler::Dh);
            assert_eq!(s.uses_weights(), expect, "{s}");
            let cfg = SchedulerConfig::new(s, &[]).unwrap();
            let drain = if matches!(s, Scheduler::Sh | Scheduler::Mh) {
                Drain::RemoveNow
            } else {
                Drain::ZeroWeight
            };
            assert_eq!(cfg.drain(), drain, "{s}");
        }
        let sh_fb = SchedulerConfig::new(Scheduler::Sh, &[SchedFlag::ShFallback]).unwrap();
        assert_eq!(sh_fb.drain(), Drain::ZeroWeight);
        let mh_fb =
            SchedulerConfig::new(Scheduler::Mh, &[SchedFlag::MhFallback, SchedFlag::MhPort])
                .unwrap();
        assert_eq!(mh_fb.drain(), Drain::ZeroWeight);
        let sh_port = SchedulerConfig::new(Scheduler::Sh, &[SchedFlag::ShPort]).unwrap();
        assert_eq!(sh_port.drain(), Drain::RemoveNow);
    }

    fn arb_config() -> impl Strategy<Value = SchedulerConfig> {
        (
            proptest::sample::select(Scheduler::ALL.to_vec()),
            proptest::collection::vec(any::<bool>(), 2),
        )
            .prop_map(|(s, pick)| {
                let flags: Vec<SchedFlag> = s
                    .flags()
                    .iter()
                    .zip(pick)
                    .filter(|(_, p)| *p)
                    .map(|(f, _)| *f)
                    .collect();
                SchedulerConfig::new(s, &flags).unwrap()
            })
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(cfg in arb_config()) {
            let text = cfg.to_string();
            prop_assert_eq!(text.parse::<SchedulerConfig>(), Ok(cfg.clone()));
            prop_assert_eq!(SchedulerConfig::from_kernel(cfg.scheduler().name(), cfg.flag_bits()), Ok(cfg));
        }

        #[test]
        fn parsing_never_panics(name in ".{0,20}", flags in proptest::option::of(".{0,40}")) {
            let _ = SchedulerConfig::from_annotations(&name, flags.as_deref());
            let _ = name.parse::<SchedulerConfig>();
        }
    }
}
