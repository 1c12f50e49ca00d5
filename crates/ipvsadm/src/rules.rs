//! `ipvsadm -R` input: rule lines to [`Rule`]s, checked the way ipvsadm
//! checks them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use kipvs_ipvs::Op;
use kipvs_ipvs::{
    AddressFamily, Destination, Forward, Netmask, Protocol, Service, ServiceFlags, ServiceKey,
    Timeouts, TunnelFlags, TunnelType,
};

/// One command of a rules file (what `ipvsadm -S` writes and `ipvsadm -R`
/// reads) is exactly one [`Op`]: `-A`/`-E`/`-D` are the service ops, `-a`/
/// `-e`/`-d` the destination ops, `-C` is [`Op::Flush`], `-Z` [`Op::Zero`]
/// and `--set` [`Op::SetTimeouts`].
pub type Rule = Op;

/// A rules file that cannot be applied: the 1-based line and what is wrong
/// with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct RuleError {
    /// The line, counting from 1.
    pub line: usize,
    /// What is wrong with it.
    pub kind: RuleErrorKind,
}

/// What is wrong with a rule line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleErrorKind {
    /// The first option is not a command.
    #[error("a rule starts with a command (-A, -E, -D, -a, -e, -d, -C, -Z or --set), not `{0}`")]
    NoCommand(String),
    /// A command that is not a change to the table (`-L`, `-S`, `-R`,
    /// `--start-daemon` …).
    #[error("`{0}` cannot be restored: only -A, -E, -D, -a, -e, -d, -C, -Z and --set are rules")]
    UnsupportedCommand(String),
    /// A second command on the line.
    #[error("more than one command: `{0}`")]
    SecondCommand(String),
    /// An option ipvsadm does not know.
    #[error("unknown option `{0}`")]
    UnknownOption(String),
    /// An option without its value.
    #[error("option `{0}` needs a value")]
    MissingValue(String),
    /// A value given to an option that takes none (`--ops=1`).
    #[error("option `{0}` takes no value")]
    UnwantedValue(String),
    /// A word that belongs to no option.
    #[error("unexpected argument `{0}`")]
    UnexpectedArgument(String),
    /// An option given twice.
    #[error("more than one {0} option")]
    RepeatedOption(&'static str),
    /// An option the command does not take.
    #[error("the {option} option is not allowed with the {command} command")]
    IllegalOption {
        /// The option (`service-address (-t|-u|--sctp-service|-f)` …).
        option: &'static str,
        /// The command (`add-service (-A)` …).
        command: &'static str,
    },
    /// An option the command needs is missing (`-a` without `-r`).
    #[error("the {command} command needs the {option} option")]
    MissingOption {
        /// The option.
        option: &'static str,
        /// The command.
        command: &'static str,
    },
    /// A malformed or unresolvable `ADDR[:PORT]`.
    #[error(
        "bad {what} address `{value}` (a numeric ADDR[:PORT] or [IPv6]:PORT; \
         host and service names are not resolved)"
    )]
    BadAddress {
        /// `virtual service` or `real server`.
        what: &'static str,
        /// As written.
        value: String,
    },
    /// A value out of range or malformed.
    #[error("invalid {what} `{value}`")]
    BadValue {
        /// What it should be (`weight (0-2147483647)` …).
        what: &'static str,
        /// As written.
        value: String,
    },
    /// A name longer than the kernel takes.
    #[error("{what} `{value}` is longer than {max} characters")]
    TooLong {
        /// `scheduler` or `persistence engine`.
        what: &'static str,
        /// As written.
        value: String,
        /// The longest the kernel takes.
        max: usize,
    },
    /// `-6` before `-f`.
    #[error("-6 must follow -f MARK")]
    SixBeforeFwmark,
    /// A scheduler flag ipvsadm does not know.
    #[error(
        "unknown scheduler flag `{0}` (flag-1, flag-2, flag-3, sh-fallback, sh-port, \
         mh-fallback, mh-port)"
    )]
    UnknownSchedFlag(String),
    /// A scheduler flag of another scheduler (`-s rr -b sh-port`).
    #[error("scheduler flag `{flag}` is not for scheduler `{scheduler}`")]
    IncompatibleSchedFlag {
        /// The flag.
        flag: String,
        /// The service's scheduler.
        scheduler: String,
    },
    /// `-b` with no flag in it (`-b ,`).
    #[error("no scheduler flag in `{0}`")]
    NoSchedFlag(String),
    /// Port 0 without persistence.
    #[error("port 0 is only allowed for a persistent service (-p)")]
    ZeroPort,
    /// `-o` on a TCP or SCTP service.
    #[error("one-packet scheduling (-o) is only for UDP and firewall-mark services")]
    OnePacketNotUdp,
    /// A destination of the other family that is not tunnelled.
    #[error("a destination of another address family than its service must be tunnelled (-i)")]
    FamilyMismatch,
    /// Tunnel options without `-i`.
    #[error("tunnel options need the tunnelling forwarding method (-i)")]
    TunnelOptionWithoutTunnel,
    /// A tunnel option the tunnel type does not take.
    #[error("the --{option} option is not allowed with tunnel type {tunnel}")]
    IllegalTunnelOption {
        /// The option.
        option: &'static str,
        /// `ipip`, `gue` or `gre`.
        tunnel: &'static str,
    },
    /// A tunnel option the tunnel type needs (`--tun-port` for `gue`).
    #[error("tunnel type {tunnel} needs the --{option} option")]
    MissingTunnelOption {
        /// The option.
        option: &'static str,
        /// `gue`.
        tunnel: &'static str,
    },
    /// Two checksum options.
    #[error("the --{option} option conflicts with --{other} (tunnel type {tunnel})")]
    ConflictingTunnelOptions {
        /// The second option.
        option: &'static str,
        /// The first.
        other: &'static str,
        /// The tunnel type.
        tunnel: &'static str,
    },
    /// `--set` without three timeouts.
    #[error("--set needs three timeouts: tcp tcpfin udp")]
    MissingTimeouts,
}

/// Read a rules file: what `ipvsadm -S` writes and `ipvsadm -R` reads, one
/// command per line, with ipvsadm's short and long options in any order.
/// Blank lines, lines starting with `#` and everything from a word starting
/// with `#` are ignored, and so is the word `ipvsadm` (as `ipvsadm -R`
/// does). Every line is checked as ipvsadm checks it; the first bad line is
/// the error, and nothing is returned for the others (unlike `ipvsadm -R`,
/// which applies the lines before the bad one).
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, RuleError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_rule_line(line) {
            Ok(Some(rule)) => rules.push(rule),
            Ok(None) => {}
            Err(kind) => return Err(RuleError { line: i + 1, kind }),
        }
    }
    Ok(rules)
}

/// Read one line of a rules file: `None` for a blank or comment line.
pub fn parse_rule_line(line: &str) -> Result<Option<Rule>, RuleErrorKind> {
    let mut words = Vec::new();
    for w in line
        .split([' ', '\t', '\r', '\n'])
        .filter(|w| !w.is_empty())
    {
        if w.starts_with('#') {
            break;
        }
        if w != "ipvsadm" {
            words.push(w);
        }
    }
    if words.is_empty() {
        return Ok(None);
    }
    let items = popt(&words)?;
    Ok(Some(Parser::default().run(items)?))
}

// ---------------------------------------------------------------------------
// Options, as ipvsadm declares them to popt.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    AddService,
    EditService,
    DeleteService,
    Clear,
    List,
    Zero,
    AddServer,
    EditServer,
    DeleteServer,
    Set,
    Help,
    Version,
    Restore,
    Save,
    StartDaemon,
    StopDaemon,
    Tcp,
    Udp,
    Sctp,
    FwMark,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Masq,
    Ipip,
    Gatewaying,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ArgKind {
    None,
    Required,
    Optional,
}

struct Spec {
    long: &'static str,
    short: Option<char>,
    arg: ArgKind,
    opt: Opt,
}

const fn spec(long: &'static str, short: Option<char>, arg: ArgKind, opt: Opt) -> Spec {
    Spec {
        long,
        short,
        arg,
        opt,
    }
}

use ArgKind::{None as N, Optional as O, Required as R};

/// ipvsadm 1.31's popt table, in its order.
const SPECS: &[Spec] = &[
    spec("add-service", Some('A'), N, Opt::AddService),
    spec("edit-service", Some('E'), N, Opt::EditService),
    spec("delete-service", Some('D'), N, Opt::DeleteService),
    spec("clear", Some('C'), N, Opt::Clear),
    spec("list", Some('L'), N, Opt::List),
    spec("list", Some('l'), N, Opt::List),
    spec("zero", Some('Z'), N, Opt::Zero),
    spec("add-server", Some('a'), N, Opt::AddServer),
    spec("edit-server", Some('e'), N, Opt::EditServer),
    spec("delete-server", Some('d'), N, Opt::DeleteServer),
    spec("set", None, N, Opt::Set),
    spec("help", Some('h'), N, Opt::Help),
    spec("version", Some('v'), N, Opt::Version),
    spec("restore", Some('R'), N, Opt::Restore),
    spec("save", Some('S'), N, Opt::Save),
    spec("start-daemon", None, R, Opt::StartDaemon),
    spec("stop-daemon", None, R, Opt::StopDaemon),
    spec("tcp-service", Some('t'), R, Opt::Tcp),
    spec("udp-service", Some('u'), R, Opt::Udp),
    spec("sctp-service", None, R, Opt::Sctp),
    spec("fwmark-service", Some('f'), R, Opt::FwMark),
    spec("scheduler", Some('s'), R, Opt::Scheduler),
    spec("persistent", Some('p'), O, Opt::Persistent),
    spec("netmask", Some('M'), R, Opt::Netmask),
    spec("real-server", Some('r'), R, Opt::RealServer),
    spec("masquerading", Some('m'), N, Opt::Masq),
    spec("ipip", Some('i'), N, Opt::Ipip),
    spec("gatewaying", Some('g'), N, Opt::Gatewaying),
    spec("weight", Some('w'), R, Opt::Weight),
    spec("u-threshold", Some('x'), R, Opt::UThreshold),
    spec("l-threshold", Some('y'), R, Opt::LThreshold),
    spec("numeric", Some('n'), N, Opt::Numeric),
    spec("connection", Some('c'), N, Opt::Connection),
    spec("mcast-interface", None, R, Opt::McastInterface),
    spec("syncid", None, R, Opt::SyncId),
    spec("timeout", None, N, Opt::Timeout),
    spec("daemon", None, N, Opt::Daemon),
    spec("stats", None, N, Opt::Stats),
    spec("rate", None, N, Opt::Rate),
    spec("thresholds", None, N, Opt::Thresholds),
    spec("persistent-conn", None, N, Opt::PersistentConn),
    spec("nosort", None, N, Opt::NoSort),
    spec("sort", None, N, Opt::Sort),
    spec("exact", Some('X'), N, Opt::Exact),
    spec("ipv6", Some('6'), N, Opt::Ipv6),
    spec("ops", Some('o'), N, Opt::Ops),
    spec("pe", None, R, Opt::Pe),
    spec("sched-flags", Some('b'), R, Opt::SchedFlags),
    spec("mcast-group", None, R, Opt::McastGroup),
    spec("mcast-port", None, R, Opt::McastPort),
    spec("mcast-ttl", None, R, Opt::McastTtl),
    spec("sync-maxlen", None, R, Opt::SyncMaxlen),
    spec("tun-info", None, N, Opt::TunInfo),
    spec("tun-type", None, R, Opt::TunType),
    spec("tun-port", None, R, Opt::TunPort),
    spec("tun-nocsum", None, N, Opt::TunNocsum),
    spec("tun-csum", None, N, Opt::TunCsum),
    spec("tun-remcsum", None, N, Opt::TunRemcsum),
];

/// One parsed word (or cluster): an option as written with its value, or a
/// free argument.
enum Item {
    Opt {
        opt: Opt,
        written: String,
        value: Option<String>,
    },
    Arg(String),
}

/// popt's reading of argv: `--long`, `--long=value`, `--long value`, short
/// clusters (`-Ln`, `-w3`), an optional value (`-p [timeout]`) taken only
/// when the next word does not start with `-`, and `--` ending options.
fn popt(words: &[&str]) -> Result<Vec<Item>, RuleErrorKind> {
    let mut items = Vec::new();
    let mut i = 0;
    let mut only_args = false;
    while let Some(&word) = words.get(i) {
        i += 1;
        if only_args || !word.starts_with('-') || word == "-" {
            items.push(Item::Arg(word.to_owned()));
            continue;
        }
        if word == "--" {
            only_args = true;
            continue;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let Some(spec) = SPECS.iter().find(|s| s.long == name) else {
                return Err(RuleErrorKind::UnknownOption(format!("--{name}")));
            };
            let written = format!("--{name}");
            let value = match (spec.arg, inline) {
                (ArgKind::None, Some(_)) => return Err(RuleErrorKind::UnwantedValue(written)),
                (ArgKind::None, None) => None,
                (_, Some(v)) => Some(v.to_owned()),
                (arg, None) => next_value(words, &mut i, arg, &written)?,
            };
            items.push(Item::Opt {
                opt: spec.opt,
                written,
                value,
            });
            continue;
        }
        let cluster = &word[1..];
        for (at, c) in cluster.char_indices() {
            let Some(spec) = SPECS.iter().find(|s| s.short == Some(c)) else {
                return Err(RuleErrorKind::UnknownOption(format!("-{c}")));
            };
            let written = format!("-{c}");
            if spec.arg == ArgKind::None {
                items.push(Item::Opt {
                    opt: spec.opt,
                    written,
                    value: None,
                });
                continue;
            }
            let rest = &cluster[at + c.len_utf8()..];
            let value = if rest.is_empty() {
                next_value(words, &mut i, spec.arg, &written)?
            } else {
                Some(rest.to_owned())
            };
            items.push(Item::Opt {
                opt: spec.opt,
                written,
                value,
            });
            break;
        }
    }
    Ok(items)
}

fn next_value(
    words: &[&str],
    i: &mut usize,
    arg: ArgKind,
    written: &str,
) -> Result<Option<String>, RuleErrorKind> {
    match words.get(*i) {
        Some(w) if !(arg == ArgKind::Optional && w.starts_with('-')) => {
            *i += 1;
            Ok(Some((*w).to_owned()))
        }
        _ if arg == ArgKind::Optional => Ok(None),
        _ => Err(RuleErrorKind::MissingValue(written.to_owned())),
    }
}

// ---------------------------------------------------------------------------
// ipvsadm's option codes (OPTC_*), its names for them and the table of
// which command takes which.

const OPTC_SERVICE: usize = 2;
const OPTC_SCHEDULER: usize = 3;
const OPTC_PERSISTENT: usize = 4;
const OPTC_NETMASK: usize = 5;
const OPTC_SERVER: usize = 6;
const OPTC_FORWARD: usize = 7;
const OPTC_WEIGHT: usize = 8;
const OPTC_UTHRESHOLD: usize = 9;
const OPTC_LTHRESHOLD: usize = 10;
const OPTC_ONEPACKET: usize = 21;
const OPTC_PE: usize = 22;
const OPTC_SCHED_FLAGS: usize = 23;
const OPTC_TUN_TYPE: usize = 29;
const OPTC_TUN_PORT: usize = 30;
const OPTC_TUN_NOCSUM: usize = 31;
const OPTC_TUN_CSUM: usize = 32;
const OPTC_TUN_REMCSUM: usize = 33;

/// ipvsadm's option names (`optnames`), with their short spelling.
const OPT_NAMES: [&str; 34] = [
    "numeric (-n)",
    "connection (-c)",
    "service-address (-t|-u|--sctp-service|-f)",
    "scheduler (-s)",
    "persistent (-p)",
    "netmask (-M)",
    "real-server (-r)",
    "forwarding-method (-g|-i|-m)",
    "weight (-w)",
    "u-threshold (-x)",
    "l-threshold (-y)",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact (-X)",
    "ops (-o)",
    "pe",
    "sched-flags (-b)",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

/// The bare option names, for the tunnel messages.
fn bare_name(optc: usize) -> &'static str {
    ["tun-port", "tun-nocsum", "tun-csum", "tun-remcsum"]
        .get(optc.wrapping_sub(OPTC_TUN_PORT))
        .copied()
        .unwrap_or("?")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Cmd {
    #[default]
    None,
    Add,
    Edit,
    Del,
    Flush,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    Zero,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::None => "?",
            Cmd::Add => "add-service (-A)",
            Cmd::Edit => "edit-service (-E)",
            Cmd::Del => "delete-service (-D)",
            Cmd::Flush => "flush (-C)",
            Cmd::AddDest => "add-server (-a)",
            Cmd::DelDest => "delete-server (-d)",
            Cmd::EditDest => "edit-server (-e)",
            Cmd::Timeout => "set (--set)",
            Cmd::Zero => "zero (-Z)",
        }
    }

    /// ipvsadm's `commands_v_options` row: `+` needed, `x` illegal, ` `
    /// optional, per option code.
    fn allowed(self) -> &'static [u8; 34] {
        const ADD: &[u8; 34] = b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx";
        const DEL: &[u8; 34] = b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        const NONE: &[u8; 34] = b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        const DEST: &[u8; 34] = b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ";
        const DELDEST: &[u8; 34] = b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx";
        const ZERO: &[u8; 34] = b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
        match self {
            Cmd::Add | Cmd::Edit => ADD,
            Cmd::Del => DEL,
            Cmd::AddDest | Cmd::EditDest => DEST,
            Cmd::DelDest => DELDEST,
            Cmd::Zero => ZERO,
            Cmd::None | Cmd::Flush | Cmd::Timeout => NONE,
        }
    }
}

/// The most a persistence timeout can be: 31 days.
const MAX_TIMEOUT: i64 = 86400 * 31;
/// ipvsadm's default persistence timeout (`-p` without a value), libipvs's
/// `IPVS_SVC_PERSISTENT_TIMEOUT`: six minutes.
const DEFAULT_PERSISTENT_TIMEOUT: u32 = 360;
/// `IP_VS_SCHEDNAME_MAXLEN - 1`.
const SCHED_NAME_MAX: usize = 15;
/// `IP_VS_PENAME_MAXLEN`.
const PE_NAME_MAX: usize = 32;

/// ipvsadm's `struct ipvs_command_entry` while it reads one line.
struct Parser {
    cmd: Cmd,
    options: u64,
    // The service.
    af: Option<AddressFamily>,
    protocol: Protocol,
    addr: Option<IpAddr>,
    port: u16,
    fwmark: u32,
    scheduler: String,
    flags: u32,
    timeout: u32,
    netmask: Netmask,
    pe: String,
    sched_flags: Option<String>,
    // The destination.
    dest_addr: Option<IpAddr>,
    dest_port: u16,
    forward: Forward,
    weight: u32,
    upper: u32,
    lower: u32,
    tun_type: TunnelType,
    tun_port: u16,
    tun_flags: u16,
    args: Vec<String>,
}

impl Default for Parser {
    fn default() -> Self {
        Parser {
            cmd: Cmd::None,
            options: 0,
            af: None,
            protocol: Protocol::Tcp,
            addr: None,
            port: 0,
            fwmark: 0,
            scheduler: String::new(),
            flags: 0,
            timeout: 0,
            netmask: Netmask::V4(Ipv4Addr::BROADCAST),
            pe: String::new(),
            sched_flags: None,
            dest_addr: None,
            dest_port: 0,
            // Direct routing is ipvsadm's default.
            forward: Forward::Route,
            weight: 1,
            upper: 0,
            lower: 0,
            tun_type: TunnelType::Ipip,
            tun_port: 0,
            tun_flags: 0,
            args: Vec::new(),
        }
    }
}

fn bad(what: &'static str, value: &str) -> RuleErrorKind {
    RuleErrorKind::BadValue {
        what,
        value: value.to_owned(),
    }
}

impl Parser {
    fn set_option(&mut self, optc: usize) -> Result<(), RuleErrorKind> {
        let bit = 1u64 << optc;
        if self.options & bit != 0 {
            return Err(RuleErrorKind::RepeatedOption(OPT_NAMES[optc]));
        }
        self.options |= bit;
        Ok(())
    }

    fn has(&self, optc: usize) -> bool {
        self.options & (1u64 << optc) != 0
    }

    fn run(mut self, items: Vec<Item>) -> Result<Rule, RuleErrorKind> {
        let mut items = items.into_iter();
        // The first option is the command (free arguments before it are
        // kept, as popt keeps them).
        loop {
            match items.next() {
                None => return Err(RuleErrorKind::NoCommand(String::new())),
                Some(Item::Arg(a)) => self.args.push(a),
                Some(Item::Opt { opt, written, .. }) => {
                    self.cmd = match opt {
                        Opt::AddService => Cmd::Add,
                        Opt::EditService => Cmd::Edit,
                        Opt::DeleteService => Cmd::Del,
                        Opt::AddServer => Cmd::AddDest,
                        Opt::EditServer => Cmd::EditDest,
                        Opt::DeleteServer => Cmd::DelDest,
                        Opt::Clear => Cmd::Flush,
                        Opt::Zero => Cmd::Zero,
                        Opt::Set => Cmd::Timeout,
                        Opt::List
                        | Opt::Help
                        | Opt::Version
                        | Opt::Restore
                        | Opt::Save
                        | Opt::StartDaemon
                        | Opt::StopDaemon => {
                            return Err(RuleErrorKind::UnsupportedCommand(written));
                        }
                        _ => return Err(RuleErrorKind::NoCommand(written)),
                    };
                    break;
                }
            }
        }
        for item in items {
            match item {
                Item::Arg(a) => self.args.push(a),
                Item::Opt {
                    opt,
                    written,
                    value,
                } => self.option(opt, written, value)?,
            }
        }
        self.finish()
    }

    /// One option, as ipvsadm's `parse_options` loop takes it.
    fn option(
        &mut self,
        opt: Opt,
        written: String,
        value: Option<String>,
    ) -> Result<(), RuleErrorKind> {
        // Only `-p` has an optional value; popt gives the others theirs.
        let v = value.clone().unwrap_or_default();
        match opt {
            Opt::Tcp | Opt::Udp | Opt::Sctp => {
                self.set_option(OPTC_SERVICE)?;
                self.protocol = match opt {
                    Opt::Tcp => Protocol::Tcp,
                    Opt::Udp => Protocol::Udp,
                    _ => Protocol::Sctp,
                };
                let (addr, port) = parse_service(&v).ok_or_else(|| RuleErrorKind::BadAddress {
                    what: "virtual service",
                    value: v.clone(),
                })?;
                self.af = Some(AddressFamily::of(&addr));
                self.addr = Some(addr);
                if addr.is_ipv6() {
                    self.netmask = Netmask::V6(128);
                }
                if let Some(p) = port {
                    self.port = p;
                }
            }
            Opt::FwMark => {
                self.set_option(OPTC_SERVICE)?;
                self.af = Some(AddressFamily::Inet);
                self.protocol = Protocol::Tcp;
                self.fwmark =
                    parse_fwmark(&v).ok_or_else(|| bad("firewall mark (1-4294967295)", &v))?;
            }
            Opt::Scheduler => {
                self.set_option(OPTC_SCHEDULER)?;
                if v.len() > SCHED_NAME_MAX {
                    return Err(RuleErrorKind::TooLong {
                        what: "scheduler",
                        value: v,
                        max: SCHED_NAME_MAX,
                    });
                }
                self.scheduler = v;
            }
            Opt::Persistent => {
                self.set_option(OPTC_PERSISTENT)?;
                self.flags |= ServiceFlags::PERSISTENT.bits();
                self.timeout = match &value {
                    Some(t) => string_to_number(t, 1, MAX_TIMEOUT)
                        .map(|t| t as u32)
                        .ok_or_else(|| bad("persistence timeout (1-2678400)", t))?,
                    None => DEFAULT_PERSISTENT_TIMEOUT,
                };
            }
            Opt::Netmask => {
                self.set_option(OPTC_NETMASK)?;
                if self.af != Some(AddressFamily::Inet6) {
                    let m = inet_aton(&v).ok_or_else(|| bad("persistence netmask", &v))?;
                    self.netmask = Netmask::V4(m);
                } else {
                    let len = atoi(&v);
                    if !(1..=128).contains(&len) {
                        return Err(bad("IPv6 netmask (1-128)", &v));
                    }
                    self.netmask = Netmask::V6(len as u32);
                }
            }
            Opt::RealServer => {
                self.set_option(OPTC_SERVER)?;
                let (addr, port) = parse_service(&v).ok_or_else(|| RuleErrorKind::BadAddress {
                    what: "real server",
                    value: v.clone(),
                })?;
                self.dest_addr = Some(addr);
                // Without a port, the service's (as far as it is known).
                self.dest_port = port.unwrap_or(self.port);
            }
            Opt::Ipip | Opt::Gatewaying | Opt::Masq => {
                self.set_option(OPTC_FORWARD)?;
                self.forward = match opt {
                    Opt::Ipip => Forward::Tunnel,
                    Opt::Gatewaying => Forward::Route,
                    _ => Forward::Masquerade,
                };
            }
            Opt::Weight => {
                self.set_option(OPTC_WEIGHT)?;
                // Debian's ipvsadm takes weights up to INT_MAX (upstream:
                // 65535); so does the kernel.
                self.weight = string_to_number(&v, 0, i64::from(i32::MAX))
                    .ok_or_else(|| bad("weight (0-2147483647)", &v))?
                    as u32;
            }
            Opt::UThreshold => {
                self.set_option(OPTC_UTHRESHOLD)?;
                self.upper = string_to_number(&v, 0, i64::from(i32::MAX))
                    .ok_or_else(|| bad("upper threshold (0-2147483647)", &v))?
                    as u32;
            }
            Opt::LThreshold => {
                self.set_option(OPTC_LTHRESHOLD)?;
                self.lower = string_to_number(&v, 0, i64::from(i32::MAX))
                    .ok_or_else(|| bad("lower threshold (0-2147483647)", &v))?
                    as u32;
            }
            Opt::Numeric => self.set_option(0)?,
            Opt::Connection => self.set_option(1)?,
            Opt::McastInterface => self.set_option(11)?,
            Opt::Timeout => self.set_option(12)?,
            Opt::Daemon => self.set_option(13)?,
            Opt::Stats => self.set_option(14)?,
            Opt::Rate => self.set_option(15)?,
            Opt::Thresholds => self.set_option(16)?,
            Opt::PersistentConn => self.set_option(17)?,
            Opt::NoSort => self.set_option(18)?,
            Opt::SyncId => self.set_option(19)?,
            Opt::Exact => self.set_option(20)?,
            Opt::McastGroup => self.set_option(24)?,
            Opt::McastPort => self.set_option(25)?,
            Opt::McastTtl => self.set_option(26)?,
            Opt::SyncMaxlen => self.set_option(27)?,
            Opt::TunInfo => self.set_option(28)?,
            Opt::Sort => {}
            Opt::Ipv6 => {
                if self.fwmark == 0 {
                    return Err(RuleErrorKind::SixBeforeFwmark);
                }
                self.af = Some(AddressFamily::Inet6);
                self.netmask = Netmask::V6(128);
            }
            Opt::Ops => {
                self.set_option(OPTC_ONEPACKET)?;
                self.flags |= ServiceFlags::ONE_PACKET.bits();
            }
            Opt::Pe => {
                self.set_option(OPTC_PE)?;
                if v.len() > PE_NAME_MAX {
                    return Err(RuleErrorKind::TooLong {
                        what: "persistence engine",
                        value: v,
                        max: PE_NAME_MAX,
                    });
                }
                self.pe = v;
            }
            Opt::SchedFlags => {
                self.set_option(OPTC_SCHED_FLAGS)?;
                self.sched_flags = Some(v);
            }
            Opt::TunType => {
                self.set_option(OPTC_TUN_TYPE)?;
                self.tun_type = match v.as_str() {
                    "ipip" => TunnelType::Ipip,
                    "gue" => TunnelType::Gue,
                    "gre" => TunnelType::Gre,
                    _ => return Err(bad("tunnel type (ipip, gue, gre)", &v)),
                };
            }
            Opt::TunPort => {
                self.set_option(OPTC_TUN_PORT)?;
                self.tun_port = string_to_number(&v, 1, 65535)
                    .ok_or_else(|| bad("tunnel port (1-65535)", &v))?
                    as u16;
            }
            Opt::TunNocsum => {
                self.set_option(OPTC_TUN_NOCSUM)?;
                self.tun_flags |= TunnelFlags::NOCSUM.0;
            }
            Opt::TunCsum => {
                self.set_option(OPTC_TUN_CSUM)?;
                self.tun_flags |= TunnelFlags::CSUM.0;
            }
            Opt::TunRemcsum => {
                self.set_option(OPTC_TUN_REMCSUM)?;
                self.tun_flags |= TunnelFlags::REMCSUM.0;
            }
            Opt::AddService
            | Opt::EditService
            | Opt::DeleteService
            | Opt::Clear
            | Opt::List
            | Opt::Zero
            | Opt::AddServer
            | Opt::EditServer
            | Opt::DeleteServer
            | Opt::Set
            | Opt::Help
            | Opt::Version
            | Opt::Restore
            | Opt::Save
            | Opt::StartDaemon
            | Opt::StopDaemon => return Err(RuleErrorKind::SecondCommand(written)),
        }
        Ok(())
    }

    /// What ipvsadm checks after reading the options, and the rule.
    fn finish(mut self) -> Result<Rule, RuleErrorKind> {
        let mut args = std::mem::take(&mut self.args).into_iter();
        let mut timeouts = Timeouts::default();
        if self.cmd == Cmd::Timeout {
            let (Some(tcp), Some(fin), Some(udp)) = (args.next(), args.next(), args.next()) else {
                return Err(RuleErrorKind::MissingTimeouts);
            };
            let parse = |s: &str| {
                string_to_number(s, 0, MAX_TIMEOUT)
                    .map(|t| t as u32)
                    .ok_or_else(|| bad("timeout (0-2678400)", s))
            };
            timeouts = Timeouts {
                tcp: parse(&tcp)?,
                tcp_fin: parse(&fin)?,
                udp: parse(&udp)?,
            };
        }
        if let Some(extra) = args.next() {
            return Err(RuleErrorKind::UnexpectedArgument(extra));
        }
        if let Some(arg) = self.sched_flags.take().filter(|a| !a.is_empty()) {
            let scheduler = if self.scheduler.is_empty() {
                "wlc"
            } else {
                self.scheduler.as_str()
            };
            self.flags &= !(ServiceFlags::SCHED1.bits()
                | ServiceFlags::SCHED2.bits()
                | ServiceFlags::SCHED3.bits());
            self.flags |= parse_sched_flags(scheduler, &arg)?;
        }
        self.check_options()?;

        let cmd = self.cmd;
        if matches!(cmd, Cmd::Add | Cmd::Edit) {
            let persistent = self.flags & ServiceFlags::PERSISTENT.bits() != 0;
            if self.fwmark == 0 && self.port == 0 && !persistent {
                return Err(RuleErrorKind::ZeroPort);
            }
            if self.flags & ServiceFlags::ONE_PACKET.bits() != 0
                && self.fwmark == 0
                && self.protocol != Protocol::Udp
            {
                return Err(RuleErrorKind::OnePacketNotUdp);
            }
            if self.scheduler.is_empty() {
                self.scheduler = "wlc".to_owned();
            }
        }
        if matches!(cmd, Cmd::AddDest | Cmd::EditDest) {
            let tunnel = self.forward == Forward::Tunnel;
            if self.fwmark == 0 && (tunnel || self.forward == Forward::Route) {
                self.dest_port = self.port;
            }
            let dest_af = self.dest_addr.as_ref().map(AddressFamily::of);
            if dest_af != self.af && !tunnel {
                return Err(RuleErrorKind::FamilyMismatch);
            }
            let tunnel_opts = [
                OPTC_TUN_TYPE,
                OPTC_TUN_PORT,
                OPTC_TUN_NOCSUM,
                OPTC_TUN_CSUM,
                OPTC_TUN_REMCSUM,
            ];
            if tunnel_opts.iter().any(|o| self.has(*o)) && !tunnel {
                return Err(RuleErrorKind::TunnelOptionWithoutTunnel);
            }
            self.check_tunnel_options()?;
        }

        let service = || self.service_key();
        Ok(match cmd {
            Cmd::Add | Cmd::Edit => {
                let key = service()?;
                let svc = Service {
                    key,
                    scheduler: self.scheduler.clone(),
                    flags: ServiceFlags::from_bits(self.flags),
                    timeout: self.timeout,
                    netmask: netmask_for(key.family(), self.netmask),
                    persistence_engine: (!self.pe.is_empty()).then(|| self.pe.clone()),
                };
                if cmd == Cmd::Add {
                    Rule::AddService(svc)
                } else {
                    Rule::EditService(svc)
                }
            }
            Cmd::Del => Rule::DeleteService(service()?),
            Cmd::AddDest | Cmd::EditDest => {
                let destination = self.destination()?;
                let service = service()?;
                if cmd == Cmd::AddDest {
                    Rule::AddDestination {
                        service,
                        destination,
                    }
                } else {
                    Rule::EditDestination {
                        service,
                        destination,
                    }
                }
            }
            Cmd::DelDest => Rule::DeleteDestination {
                service: service()?,
                destination: self.destination()?.key(),
            },
            Cmd::Flush => Rule::Flush,
            Cmd::Zero => Rule::Zero(if self.has(OPTC_SERVICE) {
                Some(service()?)
            } else {
                None
            }),
            Cmd::Timeout => Rule::SetTimeouts(timeouts),
            Cmd::None => return Err(RuleErrorKind::NoCommand(String::new())),
        })
    }

    /// ipvsadm's `generic_opt_check`: in option order, a needed option
    /// missing or an illegal one present.
    fn check_options(&self) -> Result<(), RuleErrorKind> {
        let allowed = self.cmd.allowed();
        for (optc, rule) in allowed.iter().enumerate() {
            match (*rule, self.has(optc)) {
                (b'+', false) => {
                    return Err(RuleErrorKind::MissingOption {
                        option: OPT_NAMES[optc],
                        command: self.cmd.name(),
                    });
                }
                (b'x', true) => {
                    return Err(RuleErrorKind::IllegalOption {
                        option: OPT_NAMES[optc],
                        command: self.cmd.name(),
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// ipvsadm's `tunnel_opt_check`: ipip takes no tunnel option, gue needs
    /// a port and at most one checksum option, gre takes no port and one of
    /// `--tun-nocsum`, `--tun-csum`.
    fn check_tunnel_options(&self) -> Result<(), RuleErrorKind> {
        let (tunnel, table): (&'static str, &[u8; 4]) = match self.tun_type {
            TunnelType::Ipip => ("ipip", b"xxxx"),
            TunnelType::Gue => ("gue", b"+111"),
            TunnelType::Gre => ("gre", b"x11x"),
            TunnelType::Other(_) => return Ok(()),
        };
        let mut first: Option<usize> = None;
        for (j, rule) in table.iter().enumerate() {
            let optc = OPTC_TUN_PORT + j;
            match (*rule, self.has(optc)) {
                (b'+', false) => {
                    return Err(RuleErrorKind::MissingTunnelOption {
                        option: bare_name(optc),
                        tunnel,
                    });
                }
                (b'x', true) => {
                    return Err(RuleErrorKind::IllegalTunnelOption {
                        option: bare_name(optc),
                        tunnel,
                    });
                }
                (b'1', true) => match first {
                    None => first = Some(optc),
                    Some(other) => {
                        return Err(RuleErrorKind::ConflictingTunnelOptions {
                            option: bare_name(optc),
                            other: bare_name(other),
                            tunnel,
                        });
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }

    fn service_key(&self) -> Result<ServiceKey, RuleErrorKind> {
        if self.fwmark != 0 {
            return Ok(ServiceKey::FwMark {
                family: self.af.unwrap_or(AddressFamily::Inet),
                mark: self.fwmark,
            });
        }
        let addr = self.addr.ok_or(RuleErrorKind::MissingOption {
            option: OPT_NAMES[OPTC_SERVICE],
            command: self.cmd.name(),
        })?;
        Ok(ServiceKey::Addr {
            protocol: self.protocol,
            addr,
            port: self.port,
        })
    }

    fn destination(&self) -> Result<Destination, RuleErrorKind> {
        let addr = self.dest_addr.ok_or(RuleErrorKind::MissingOption {
            option: OPT_NAMES[OPTC_SERVER],
            command: self.cmd.name(),
        })?;
        let tunnel = self.forward == Forward::Tunnel;
        Ok(Destination {
            addr,
            port: self.dest_port,
            forward: self.forward,
            weight: self.weight,
            upper_threshold: self.upper,
            lower_threshold: self.lower,
            tunnel_type: if tunnel {
                self.tun_type
            } else {
                TunnelType::Ipip
            },
            tunnel_port: if tunnel { self.tun_port } else { 0 },
            tunnel_flags: TunnelFlags(if tunnel { self.tun_flags } else { 0 }),
        })
    }
}

/// The netmask of a service of `family`: a mask of the other kind is the
/// same 32 bits read the other way, as the kernel would.
fn netmask_for(family: AddressFamily, mask: Netmask) -> Netmask {
    match (family, mask) {
        (AddressFamily::Inet, Netmask::V6(len)) => Netmask::V4(Ipv4Addr::from(len.to_le_bytes())),
        (AddressFamily::Inet6, Netmask::V4(m)) => Netmask::V6(u32::from_le_bytes(m.octets())),
        (_, m) => m,
    }
}

/// ipvsadm's `parse_sched_flags`: comma-separated names, each checked
/// against the scheduler.
fn parse_sched_flags(scheduler: &str, arg: &str) -> Result<u32, RuleErrorKind> {
    let mut flags = 0;
    let mut any = false;
    for flag in arg.split(',').filter(|f| !f.is_empty()) {
        any = true;
        let (bit, only_for) = match flag {
            "flag-1" => (ServiceFlags::SCHED1, None),
            "flag-2" => (ServiceFlags::SCHED2, None),
            "flag-3" => (ServiceFlags::SCHED3, None),
            "sh-fallback" => (ServiceFlags::SCHED1, Some("sh")),
            "sh-port" => (ServiceFlags::SCHED2, Some("sh")),
            "mh-fallback" => (ServiceFlags::SCHED1, Some("mh")),
            "mh-port" => (ServiceFlags::SCHED2, Some("mh")),
            _ => return Err(RuleErrorKind::UnknownSchedFlag(flag.to_owned())),
        };
        if let Some(s) = only_for
            && s != scheduler
        {
            return Err(RuleErrorKind::IncompatibleSchedFlag {
                flag: flag.to_owned(),
                scheduler: scheduler.to_owned(),
            });
        }
        flags |= bit.bits();
    }
    if !any {
        return Err(RuleErrorKind::NoSchedFlag(arg.to_owned()));
    }
    Ok(flags)
}

// ---------------------------------------------------------------------------
// The C library's number and address parsing, as ipvsadm uses it.

fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `strtol(s, &end, 10)`: the value (clamped to the `long` range), where it
/// ended (0 when nothing was converted) and whether it overflowed.
fn strtol10(s: &str) -> (i64, usize, bool) {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && is_c_space(b[i]) {
        i += 1;
    }
    let mut negative = false;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        negative = b[i] == b'-';
        i += 1;
    }
    let start = i;
    let mut value: i128 = 0;
    let mut overflow = false;
    while i < b.len() && b[i].is_ascii_digit() {
        if !overflow {
            value = value * 10 + i128::from(b[i] - b'0');
            if value > i128::from(i64::MAX) + 1 {
                overflow = true;
            }
        }
        i += 1;
    }
    if i == start {
        return (0, 0, false);
    }
    let value = if negative { -value } else { value };
    match i64::try_from(value) {
        Ok(v) if !overflow => (v, i, false),
        _ => (if negative { i64::MIN } else { i64::MAX }, i, true),
    }
}

/// ipvsadm's `string_to_number`: a whole word of decimal digits (C `strtol`
/// syntax) within `min..=max`.
fn string_to_number(s: &str, min: i64, max: i64) -> Option<i64> {
    let (v, end, overflow) = strtol10(s);
    (end != 0 && end == s.len() && !overflow && (min..=max).contains(&v)).then_some(v)
}

/// C `atoi`: the leading number, 0 without one, truncated to `int`.
fn atoi(s: &str) -> i32 {
    strtol10(s).0 as i32
}

/// ipvsadm's `parse_fwmark`: 1 to 2³²−1. Also the negative numbers
/// ipvsadm 1.31 writes for marks from 2³¹ on (`-f -1` is mark 4294967295),
/// which ipvsadm itself refuses.
fn parse_fwmark(s: &str) -> Option<u32> {
    let (v, end, overflow) = strtol10(s);
    if end == 0 || end != s.len() || overflow {
        return None;
    }
    match v {
        1..=0xffff_ffff => Some(v as u32),
        -0x8000_0000..=-1 => Some(v as i32 as u32),
        _ => None,
    }
}

/// glibc's `inet_aton`: one to four parts, each decimal, octal (`0…`) or
/// hex (`0x…`), the last filling the remaining bytes; anything after
/// whitespace is ignored.
fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    let mut parts: Vec<u64> = Vec::with_capacity(3);
    let mut i = 0;
    let last = loop {
        if i >= b.len() || !b[i].is_ascii_digit() {
            return None;
        }
        let (v, next) = strtoul0(b, i)?;
        i = next;
        if b.get(i) == Some(&b'.') {
            if parts.len() > 2 || v > 0xff {
                return None;
            }
            parts.push(v);
            i += 1;
        } else {
            break v;
        }
    };
    if let Some(&c) = b.get(i)
        && !is_c_space(c)
    {
        return None;
    }
    let max: u64 = [0xffff_ffff, 0x00ff_ffff, 0xffff, 0xff][parts.len()];
    if last > max {
        return None;
    }
    let mut word = last as u32;
    for (k, p) in parts.iter().enumerate() {
        word |= (*p as u32) << (24 - 8 * k);
    }
    Some(Ipv4Addr::from(word))
}

/// `strtoul(s + i, &end, 0)` from a digit: hex after `0x`, octal after `0`,
/// decimal otherwise; `None` when it overflows.
fn strtoul0(b: &[u8], mut i: usize) -> Option<(u64, usize)> {
    let radix: u64 = if b[i] == b'0' {
        if matches!(b.get(i + 1), Some(b'x' | b'X'))
            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            i += 2;
            16
        } else {
            8
        }
    } else {
        10
    };
    let mut value: u64 = 0;
    while let Some(d) = b.get(i).and_then(|c| (*c as char).to_digit(radix as u32)) {
        value = value.checked_mul(radix)?.checked_add(u64::from(d))?;
        i += 1;
    }
    Some((value, i))
}

/// ipvsadm's `parse_service` for numeric input: `ADDR`, `ADDR:PORT`,
/// `[IPv6]:PORT` or a bare IPv6 address; the port when one was written.
fn parse_service(buf: &str) -> Option<(IpAddr, Option<u16>)> {
    if buf.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut host = buf;
    let mut port: Option<&str> = None;
    if let Some(rest) = buf.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        port = Some(after.strip_prefix(':')?);
        host = inner;
    }
    let addr = if let Ok(a) = host.parse::<Ipv6Addr>() {
        IpAddr::V6(a)
    } else {
        // Not IPv6: the port is after the last colon, if any (even inside
        // brackets, as in ipvsadm).
        port = None;
        if let Some((h, p)) = host.rsplit_once(':') {
            host = h;
            port = Some(p);
        }
        IpAddr::V4(inet_aton(host)?)
    };
    let port = match port {
        Some(p) => Some(string_to_number(p, 0, 65535)? as u16),
        None => None,
    };
    Some((addr, port))
}

#[cfg(test)]
mod tests;
