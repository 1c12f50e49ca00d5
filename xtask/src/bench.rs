//! `cargo xtask bench`: runs `kipvs-bench` measurements in the kernel lab,
//! a fresh VM for every measurement (reloading a table right after
//! flushing it is markedly slower than loading a fresh kernel), and writes
//! the tables under `benches/results/`.
//!
//! - `cargo xtask bench` (or `bench compare`): kipvs against ipvsadm,
//!   iptables-legacy, iptables-nft and nftables, load, updates and connect
//!   latency, with a markdown table, a CSV and PNG charts (issue #8; see
//!   [`compare`]);
//! - `cargo xtask bench ipvs`: N services × E destinations loaded three
//!   ways (kipvs pipelined, kipvs one request per round trip, `ipvsadm -R`)
//!   and read back (issue #4);
//! - `cargo xtask bench agent`: `kipvs proxy --manifests` converging and
//!   applying single endpoint changes, against `ipvsadm -R` + `ip -batch`
//!   (issue #6);
//! - `cargo xtask bench agent --scale`: the agent from the fake API server
//!   at each of `--scale-sizes` (default 1k, 5k, 10k, 50k Services): start
//!   → converged, single endpoint changes, RSS, CPU over an idle window and
//!   through a churn of one endpoint change a second, RSS after it; a
//!   table with the goals marked, a CSV and a chart (issue #16;
//!   see [`scale`]);
//! - `cargo xtask bench stall`: real-time probes per CPU time how long the
//!   kernel keeps a CPU while IPVS loads N × E, holds it (rate estimator on
//!   and off) and reloads it with the deleted destinations still in the
//!   kernel's trash, at each requests-per-`sendmsg` in `--batches`, in a
//!   guest booted `preempt=none` (issue #14's soft lockup).
//!
//! The binary is built in release mode. A measurement that fails or runs
//! out of time is reported as such, never as a number.

mod chart;
mod compare;
mod scale;

use crate::lab::{Job, Lab};
use anyhow::{Context, Result};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// kipvs vs ipvsadm, iptables-legacy/-nft and nftables (the default).
    Compare,
    Ipvs,
    Agent,
    /// How long the kernel holds a CPU while IPVS loads, holds and reloads
    /// a table, per requests-per-sendmsg (booted `preempt=none`).
    Stall,
}

#[derive(Debug, clap::Args)]
pub struct BenchOpts {
    /// Which benchmark (default: compare).
    #[arg(value_enum)]
    suite: Option<Suite>,
    /// Numbers of Services, comma-separated (default: compare and ipvs
    /// 1000,5000,10000; agent 10000).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<u32>,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: u32,
    /// Repetitions of each measurement (each in its own VM); the median
    /// is reported with min–max (default: compare 3, otherwise 1).
    #[arg(long)]
    repeat: Option<u32>,
    /// compare: only these backends (kipvs, ipvsadm, iptables-legacy,
    /// iptables-nft, nftables), comma-separated; default all.
    #[arg(long, value_delimiter = ',')]
    backends: Vec<String>,
    /// compare: TCP connects timed per backend and size.
    #[arg(long, default_value_t = 200)]
    connects: u32,
    /// compare: limit for each peer-tool command in the guest, in seconds
    /// (a step over it is reported as "> N s").
    #[arg(long, default_value_t = 120)]
    step_timeout: u64,
    /// agent: single endpoint changes timed per run.
    #[arg(long, default_value_t = 10)]
    changes: u32,
    /// agent: extra sizes at which only convergence and memory are measured.
    #[arg(long, value_delimiter = ',', default_value = "50000")]
    memory_sizes: Vec<u32>,
    /// stall: requests per `sendmsg` to compare, comma-separated; 0 is
    /// kipvs's pacing (1024 was the fixed window before it).
    #[arg(long, value_delimiter = ',', default_value = "1024,64,0")]
    batches: Vec<usize>,
    /// stall: kernel command line of the guest.
    #[arg(long, default_value = "preempt=none")]
    stall_kernel_args: String,
    /// Limit per VM, in seconds.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// Guest memory for the agent benchmark's memory sizes, and with
    /// --scale for the sizes above 10,000 Services, in MiB (the guest's
    /// root file system is in RAM, and the fake API server holds the whole
    /// cluster too).
    #[arg(long, default_value_t = 12288)]
    memory_size_mib: u32,
    /// agent: only the scale benchmark (issue #16): for each of
    /// --scale-sizes, one VM running the agent from the fake API server
    /// through --changes single changes, an --idle-seconds window and
    /// --churn-seconds of one change a second.
    #[arg(long)]
    scale: bool,
    /// agent --scale: numbers of Services, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000,50000")]
    scale_sizes: Vec<u32>,
    /// agent --scale: seconds with no change, the agent's CPU read over
    /// them.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// agent --scale: seconds of one endpoint change a second, after the
    /// idle window.
    #[arg(long, default_value_t = 600)]
    churn_seconds: u64,
    /// compare: only draw the charts again from benches/results/compare.csv
    /// (after a change to the charts), running nothing.
    #[arg(long)]
    redraw: bool,
}

impl BenchOpts {
    /// The options as `cargo xtask bench` alone gives them.
    fn defaults() -> BenchOpts {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            o: BenchOpts,
        }
        Cli::parse_from(["bench"]).o
    }

    /// The command that repeats this run: the suite, sizes and repeat
    /// count, plus every option the suite uses that is not its default.
    fn reproduce(&self, suite: Suite) -> String {
        if suite == Suite::Agent && self.scale {
            return self.reproduce_scale();
        }
        let d = BenchOpts::defaults();
        let join = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut cmd = String::from("cargo xtask bench");
        match suite {
            Suite::Compare => {}
            Suite::Ipvs => cmd.push_str(" ipvs"),
            Suite::Agent => cmd.push_str(" agent"),
            Suite::Stall => cmd.push_str(" stall"),
        }
        let _ = write!(cmd, " --sizes {}", join(&self.sizes));
        if let Some(r) = self.repeat {
            let _ = write!(cmd, " --repeat {r}");
        }
        if self.endpoints != d.endpoints {
            let _ = write!(cmd, " --endpoints {}", self.endpoints);
        }
        if self.timeout != d.timeout {
            let _ = write!(cmd, " --timeout {}", self.timeout);
        }
        match suite {
            Suite::Compare => {
                if !self.backends.is_empty() {
                    let _ = write!(cmd, " --backends {}", self.backends.join(","));
                }
                if self.connects != d.connects {
                    let _ = write!(cmd, " --connects {}", self.connects);
                }
                if self.step_timeout != d.step_timeout {
                    let _ = write!(cmd, " --step-timeout {}", self.step_timeout);
                }
            }
            Suite::Agent => {
                if self.changes != d.changes {
                    let _ = write!(cmd, " --changes {}", self.changes);
                }
                if self.memory_sizes != d.memory_sizes {
                    let _ = write!(cmd, " --memory-sizes {}", join(&self.memory_sizes));
                }
                if self.memory_size_mib != d.memory_size_mib {
                    let _ = write!(cmd, " --memory-size-mib {}", self.memory_size_mib);
                }
            }
            Suite::Stall => {
                if self.batches != d.batches {
                    let b: Vec<String> = self.batches.iter().map(usize::to_string).collect();
                    let _ = write!(cmd, " --batches {}", b.join(","));
                }
                if self.stall_kernel_args != d.stall_kernel_args {
                    let _ = write!(
                        cmd,
                        " --stall-kernel-args {}",
                        crate::shell_quote(&self.stall_kernel_args)
                    );
                }
            }
            Suite::Ipvs => {}
        }
        cmd
    }

    /// The command that repeats an `agent --scale` run: its sizes, plus
    /// every option it uses that is not its default.
    fn reproduce_scale(&self) -> String {
        let d = BenchOpts::defaults();
        let sizes: Vec<String> = self.scale_sizes.iter().map(u32::to_string).collect();
        let mut cmd = format!(
            "cargo xtask bench agent --scale --scale-sizes {}",
            sizes.join(",")
        );
        let numbers = [
            (
                "--endpoints",
                u64::from(self.endpoints),
                u64::from(d.endpoints),
            ),
            ("--changes", u64::from(self.changes), u64::from(d.changes)),
            ("--idle-seconds", self.idle_seconds, d.idle_seconds),
            ("--churn-seconds", self.churn_seconds, d.churn_seconds),
            (
                "--memory-size-mib",
                u64::from(self.memory_size_mib),
                u64::from(d.memory_size_mib),
            ),
            ("--timeout", self.timeout, d.timeout),
        ];
        for (flag, value, default) in numbers {
            if value != default {
                let _ = write!(cmd, " {flag} {value}");
            }
        }
        cmd
    }
}

pub fn run(ws: &Path, mut opts: BenchOpts) -> Result<()> {
    let suite = opts.suite.unwrap_or(Suite::Compare);
    if opts.redraw {
        anyhow::ensure!(suite == Suite::Compare, "--redraw is for the compare suite");
        return compare::redraw(ws);
    }
    if opts.scale {
        anyhow::ensure!(suite == Suite::Agent, "--scale is for the agent suite");
        anyhow::ensure!(
            opts.sizes.is_empty(),
            "--scale measures --scale-sizes, not --sizes"
        );
        anyhow::ensure!(
            opts.repeat.is_none_or(|r| r == 1),
            "--scale runs each size once"
        );
        anyhow::ensure!(!opts.scale_sizes.is_empty(), "--scale-sizes is empty");
        let lab = Lab::prepare(ws)?;
        let bins = build_bench(ws)?;
        return scale::run(ws, &lab, &bins, &opts);
    }
    if opts.sizes.is_empty() {
        opts.sizes = match suite {
            Suite::Compare | Suite::Ipvs => vec![1000, 5000, 10000],
            Suite::Agent => vec![10000],
            Suite::Stall => vec![5000, 10000],
        };
    }
    for b in &opts.backends {
        if !compare::BACKENDS.iter().any(|(name, _)| name == b) {
            anyhow::bail!("unknown backend {b:?}");
        }
    }
    let repeat = opts
        .repeat
        .unwrap_or(if suite == Suite::Compare { 3 } else { 1 });
    opts.repeat = Some(repeat);
    let lab = Lab::prepare(ws)?;
    let bins = build_bench(ws)?;
    if suite == Suite::Compare {
        return compare::run(ws, &lab, &bins, &opts, repeat);
    }
    let machine = machine();
    let results = ws.join("benches/results");
    std::fs::create_dir_all(&results)?;
    let (name, table) = match suite {
        Suite::Ipvs => ("ipvs-load", ipvs(&lab, &bins, &opts, repeat)?),
        Suite::Agent => ("agent", agent(&lab, &bins, &opts, repeat)?),
        Suite::Stall => ("stall", stall(&lab, &bins, &opts)?),
        Suite::Compare => unreachable!("handled above"),
    };
    let md = format!(
        "{}\n\nMachine: {machine}; guest kernel {} under QEMU TCG (2 vCPUs, no KVM). \
         One fresh VM per measurement; median of {} run(s), min–max in brackets \
         when repeated. Reproduce: `{}`.\n",
        table.markdown,
        crate::lab::KERNEL_VERSION,
        repeat,
        opts.reproduce(suite),
    );
    std::fs::write(results.join(format!("{name}.md")), &md)?;
    std::fs::write(results.join(format!("{name}.csv")), &table.csv)?;
    println!("\n{md}");
    eprintln!("xtask: wrote benches/results/{name}.md and .csv");
    Ok(())
}

struct Table {
    markdown: String,
    csv: String,
}

/// The shipped `kipvs`, release build.
pub(crate) fn build_release(ws: &Path) -> Result<PathBuf> {
    let (_, bins) = crate::build(ws, &[&["build", "--release", "-p", "kipvs"]])?;
    find_bin(bins, "kipvs")
}

pub(crate) fn find_bin(bins: Vec<PathBuf>, name: &str) -> Result<PathBuf> {
    bins.into_iter()
        .find(|b| b.file_name().is_some_and(|n| n == name))
        .with_context(|| format!("cargo built no {name} binary"))
}

/// What a lab benchmark runs: the shipped `kipvs` (the agent, as users
/// get it) and the harness `kipvs-bench`, which runs it.
pub(crate) struct Binaries {
    kipvs: PathBuf,
    bench: PathBuf,
}

impl Binaries {
    /// Both, where the guest's `PATH` finds them.
    fn files(&self) -> Vec<(PathBuf, PathBuf)> {
        vec![
            (PathBuf::from("/usr/local/bin/kipvs"), self.kipvs.clone()),
            (
                PathBuf::from("/usr/local/bin/kipvs-bench"),
                self.bench.clone(),
            ),
        ]
    }
}

/// Release builds of both, in two cargo runs so that the harness's
/// features (the fake API server) do not end up in the measured `kipvs`.
pub(crate) fn build_bench(ws: &Path) -> Result<Binaries> {
    let kipvs = build_release(ws)?;
    let (_, bins) = crate::build(
        ws,
        &[&[
            "build",
            "--release",
            "-p",
            "kipvs-benches",
            "--bin",
            "kipvs-bench",
        ]],
    )?;
    Ok(Binaries {
        kipvs,
        bench: find_bin(bins, "kipvs-bench")?,
    })
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("host {cpu}, {cores} cores")
}

/// Runs `kipvs-bench ARGS` in a fresh VM; its JSON line, or why not.
fn measure(
    lab: &Lab,
    bins: &Binaries,
    args: &str,
    timeout: u64,
    memory: u32,
    kernel_args: &str,
) -> Result<Value, String> {
    eprintln!("\n==> bench: kipvs-bench {args} (kernel: {kernel_args:?})");
    let job = Job {
        files: bins.files(),
        script: format!("exec kipvs-bench {args}\n"),
        timeout: Duration::from_secs(timeout),
        memory_mib: memory,
        kernel_args: kernel_args.to_owned(),
    };
    match lab.run(&job) {
        Ok(out) if out.exit_code == 0 => out
            .stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .ok_or_else(|| "no result line".to_owned()),
        Ok(out) => Err(out
            .stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
            .and_then(|v| v["error"].as_str().map(short_error))
            .unwrap_or_else(|| format!("failed (exit {})", out.exit_code))),
        Err(e) if e.to_string().contains("timed out") => Err(format!("> {timeout} s")),
        Err(e) => Err(format!("failed: {e:#}")),
    }
}

/// A guest's error for a table cell: `> N s` for a timeout, else the
/// first 80 characters.
fn short_error(e: &str) -> String {
    if let Some(rest) = e.strip_prefix("timeout: ") {
        return rest.split(':').next().unwrap_or(rest).to_owned();
    }
    let e = e.replace('|', "/");
    match e.char_indices().nth(80) {
        Some((i, _)) => format!("failed: {}…", &e[..i]),
        None => format!("failed: {e}"),
    }
}

/// Median and range of a sample, formatted with `unit` (None: empty).
fn summary(xs: &[f64], fmt: impl Fn(f64) -> String) -> Option<String> {
    let mut v: Vec<f64> = xs.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = median(&v);
    Some(if v.len() > 1 {
        format!("{} [{}–{}]", fmt(mid), fmt(v[0]), fmt(v[v.len() - 1]))
    } else {
        fmt(mid)
    })
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn med(xs: &[f64]) -> Option<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| median(&v))
}

fn secs(x: f64) -> String {
    if x < 1.0 {
        format!("{:.1} ms", x * 1000.0)
    } else {
        format!("{x:.2} s")
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

/// A cell: the summary, or the failure.
fn cell(xs: &[f64], failure: &Option<String>) -> String {
    summary(xs, secs).unwrap_or_else(|| failure.clone().unwrap_or_else(|| "–".into()))
}

fn ipvs(lab: &Lab, bins: &Binaries, o: &BenchOpts, repeat: u32) -> Result<Table> {
    let methods = ["pipelined", "serial", "restore"];
    let mut md = String::from(
        "| services × destinations | kipvs pipelined | kipvs one per round trip | ipvsadm -R \
         | pipelined / ipvsadm -R | one per round trip / ipvsadm -R \
         | read back, 1 socket | read back, 4 sockets |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut csv =
        String::from("services,endpoints,method,run,seconds,dump_1_socket,dump_4_sockets\n");
    for &n in &o.sizes {
        let mut times: Vec<Vec<f64>> = vec![Vec::new(); 3];
        let mut failures: Vec<Option<String>> = vec![None; 3];
        let (mut d1, mut d4) = (Vec::new(), Vec::new());
        for run in 0..repeat {
            for (m, method) in methods.iter().enumerate() {
                let dump = if *method == "pipelined" {
                    " --dump"
                } else {
                    ""
                };
                let args = format!(
                    "ipvs-load --method {method} --services {n} --endpoints {}{dump}",
                    o.endpoints
                );
                match measure(lab, bins, &args, o.timeout, 2048, "") {
                    Ok(v) => {
                        let s = v["seconds"].as_f64().unwrap_or(f64::NAN);
                        times[m].push(s);
                        let a = v["dump_1_socket_seconds"].as_f64();
                        let b = v["dump_4_sockets_seconds"].as_f64();
                        d1.extend(a);
                        d4.extend(b);
                        let _ = writeln!(
                            csv,
                            "{n},{},{method},{run},{s},{},{}",
                            o.endpoints,
                            a.map_or(String::new(), |x| x.to_string()),
                            b.map_or(String::new(), |x| x.to_string())
                        );
                    }
                    Err(e) => {
                        eprintln!("bench: {args}: {e}");
                        failures[m] = Some(e);
                    }
                }
            }
        }
        let _ = writeln!(
            md,
            "| {n} × {} | {} | {} | {} | {} | {} | {} | {} |",
            o.endpoints,
            cell(&times[0], &failures[0]),
            cell(&times[1], &failures[1]),
            cell(&times[2], &failures[2]),
            ratio(med(&times[0]), med(&times[2])),
            ratio(med(&times[1]), med(&times[2])),
            cell(&d1, &None),
            cell(&d4, &None),
        );
    }
    Ok(Table { markdown: md, csv })
}

/// The stall probe at every size and batch, one VM each.
fn stall(lab: &Lab, bins: &Binaries, o: &BenchOpts) -> Result<Table> {
    let mut md = format!(
        "Guest booted `{}`. \"CPU held\" is the longest a real-time probe pinned to a CPU \
         waited past its 1 ms sleep: the longest stretch the kernel kept that CPU. \
         The soft-lockup watchdog fires at 20 s of it.\n\n\
         | services × destinations | requests per sendmsg | load | CPU held, load \
         | CPU held, idle, estimator on | CPU held, idle, run_estimation=0 \
         | reload, destinations in trash | slowest sendmsg, reload | CPU held, reload \
         | probe wake-ups > 100 ms, reload |\n|---|---|---|---|---|---|---|---|---|---|\n",
        o.stall_kernel_args
    );
    let mut csv = String::from(
        "services,endpoints,batch,phase,seconds,calls,max_send_ms,max_late_us,over_1ms,over_10ms,over_100ms,over_1s\n",
    );
    for &n in &o.sizes {
        for &batch in &o.batches {
            let args = format!(
                "stall --services {n} --endpoints {} --batch {batch}",
                o.endpoints
            );
            let memory = if n > 10_000 { 8192 } else { 4096 };
            let v = match measure(lab, bins, &args, o.timeout, memory, &o.stall_kernel_args) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("bench: {args}: {e}");
                    let _ = writeln!(
                        md,
                        "| {n} × {} | {} | {e} |||||||",
                        o.endpoints,
                        per_send(batch)
                    );
                    continue;
                }
            };
            let phases = v["phases"].as_array().cloned().unwrap_or_default();
            for p in &phases {
                let l = &p["lateness"];
                let _ = writeln!(
                    csv,
                    "{n},{},{batch},{},{},{},{},{},{},{},{},{}",
                    o.endpoints,
                    p["name"]
                        .as_str()
                        .unwrap_or("")
                        .split(',')
                        .next()
                        .unwrap_or(""),
                    p["seconds"],
                    p["calls"],
                    p["max_send_ms"],
                    l["max_us"],
                    l["over_1ms"],
                    l["over_10ms"],
                    l["over_100ms"],
                    l["over_1s"],
                );
            }
            let phase = |prefix: &str| {
                phases
                    .iter()
                    .find(|p| p["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            };
            let held = |prefix: &str| {
                phase(prefix)
                    .and_then(|p| p["lateness"]["max_us"].as_f64())
                    .map_or("–".into(), |us| secs(us / 1e6))
            };
            let time = |prefix: &str, key: &str, scale: f64| {
                phase(prefix)
                    .and_then(|p| p[key].as_f64())
                    .map_or("–".into(), |x| secs(x * scale))
            };
            let _ = writeln!(
                md,
                "| {n} × {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                o.endpoints,
                per_send(batch),
                time("load", "seconds", 1.0),
                held("load"),
                held("idle, full table, estimator on"),
                held("idle, full table, run_estimation"),
                time("reload", "seconds", 1.0),
                time("reload", "max_send_ms", 1e-3),
                held("reload"),
                phase("reload")
                    .and_then(|p| p["lateness"]["over_100ms"].as_u64())
                    .map_or("–".into(), |c| c.to_string()),
            );
        }
    }
    Ok(Table { markdown: md, csv })
}

/// A stall run's batching: 0 is kipvs's pacing.
fn per_send(batch: usize) -> String {
    match batch {
        0 => "paced (kipvs)".to_owned(),
        n => n.to_string(),
    }
}

/// One agent run's numbers, gathered over repeats.
#[derive(Default)]
struct AgentSamples {
    converge: Vec<f64>,
    change: Vec<f64>,
    messages: Vec<u64>,
    /// The agent's nftables writes: (seconds, elements), at converge and
    /// per change.
    converge_nft: Vec<(f64, u64)>,
    change_nft: Vec<(f64, u64)>,
    rss: Vec<f64>,
    hwm: Vec<f64>,
    failure: Option<String>,
}

impl AgentSamples {
    fn record(&mut self, v: &Value, csv: &mut String, prefix: &str, run: u32) {
        let c = v["converge_seconds"].as_f64().unwrap_or(f64::NAN);
        self.converge.push(c);
        self.rss.push(v["rss_kib"].as_f64().unwrap_or(0.0));
        self.hwm.push(v["hwm_kib"].as_f64().unwrap_or(0.0));
        let nft = (
            v["converge_nft_seconds"].as_f64().unwrap_or(f64::NAN),
            v["converge_nft_elements"].as_u64().unwrap_or(0),
        );
        self.converge_nft.push(nft);
        let _ = writeln!(
            csv,
            "{prefix},converge,{run},{c},{},{},{},{},{}",
            v["converge_messages"], v["rss_kib"], v["hwm_kib"], nft.1, nft.0
        );
        let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
        let (secs_list, msgs) = (list("change_seconds"), list("change_messages"));
        let (nft_secs, nft_elements) = (list("change_nft_seconds"), list("change_nft_elements"));
        for (k, (s, m)) in secs_list.iter().zip(&msgs).enumerate() {
            let (s, m) = (s.as_f64().unwrap_or(f64::NAN), m.as_u64().unwrap_or(0));
            let nft = (
                nft_secs.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN),
                nft_elements.get(k).and_then(Value::as_u64).unwrap_or(0),
            );
            self.change.push(s);
            self.messages.push(m);
            self.change_nft.push(nft);
            let _ = writeln!(csv, "{prefix},change,{run},{s},{m},,,{},{}", nft.1, nft.0);
        }
    }

    fn messages_cell(&self) -> String {
        match (self.messages.iter().min(), self.messages.iter().max()) {
            (Some(a), Some(b)) if a == b => a.to_string(),
            (Some(a), Some(b)) => format!("{a}–{b}"),
            _ => "–".into(),
        }
    }

    /// The agent's nftables write time with the elements it wrote.
    fn nft_cell(writes: &[(f64, u64)]) -> String {
        let times: Vec<f64> = writes.iter().map(|w| w.0).collect();
        let (lo, hi) = (
            writes.iter().map(|w| w.1).min(),
            writes.iter().map(|w| w.1).max(),
        );
        match (summary(&times, secs), lo, hi) {
            (Some(t), Some(a), Some(b)) if a == b => format!("{t} ({a} elements)"),
            (Some(t), Some(a), Some(b)) => format!("{t} ({a}–{b} elements)"),
            _ => "–".into(),
        }
    }

    fn memory_cell(&self) -> String {
        let mib = |k: f64| format!("{:.0} MiB", k / 1024.0);
        match (summary(&self.rss, mib), summary(&self.hwm, mib)) {
            (Some(r), Some(h)) => format!("{r} (peak {h})"),
            _ => self.failure.clone().unwrap_or_else(|| "–".into()),
        }
    }
}

fn agent(lab: &Lab, bins: &Binaries, o: &BenchOpts, repeat: u32) -> Result<Table> {
    let mut md = String::from(
        "| services × endpoints | start → converged, manifests | start → converged, API \
         | ipvsadm -R + ip -batch | converged / restore (manifests, API) \
         | one endpoint change, file → kernel | one endpoint change, API → kernel \
         | one endpoint change, 2 × ipvsadm | netlink messages per change \
         | nftables write, converging | nftables write, one endpoint change | agent memory (API) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut csv = String::from(
        "services,endpoints,source,what,run,seconds,messages,rss_kib,hwm_kib,nft_elements,nft_seconds\n",
    );
    let sizes: Vec<(u32, bool)> = o
        .sizes
        .iter()
        .map(|&n| (n, true))
        .chain(o.memory_sizes.iter().map(|&n| (n, false)))
        .collect();
    for (n, full) in sizes {
        let e = o.endpoints;
        let (mut files, mut api) = (AgentSamples::default(), AgentSamples::default());
        let (mut base, mut base_change, mut base_fail) = (Vec::new(), Vec::new(), None);
        for run in 0..repeat {
            let plan: Vec<(&str, u32)> = if full {
                vec![("manifests", o.changes), ("api", o.changes)]
            } else {
                vec![("api", 3)]
            };
            for (source, changes) in plan {
                let args = format!(
                    "agent --source {source} --services {n} --endpoints {e} --changes {changes}"
                );
                let samples = if source == "api" {
                    &mut api
                } else {
                    &mut files
                };
                let memory = if full { 4096 } else { o.memory_size_mib };
                match measure(lab, bins, &args, o.timeout, memory, "") {
                    Ok(v) => samples.record(&v, &mut csv, &format!("{n},{e},{source}"), run),
                    Err(err) => {
                        eprintln!("bench: {args}: {err}");
                        samples.failure = Some(err);
                    }
                }
            }
            if !full {
                continue;
            }
            let args = format!("agent-baseline --services {n} --endpoints {e}");
            match measure(lab, bins, &args, o.timeout, 4096, "") {
                Ok(v) => {
                    let l = v["load_seconds"].as_f64().unwrap_or(f64::NAN);
                    let c = v["change_seconds"].as_f64().unwrap_or(f64::NAN);
                    base.push(l);
                    base_change.push(c);
                    let _ = writeln!(csv, "{n},{e},ipvsadm,restore,{run},{l},,,,,");
                    let _ = writeln!(csv, "{n},{e},ipvsadm,change,{run},{c},,,,,");
                }
                Err(err) => {
                    eprintln!("bench: {args}: {err}");
                    base_fail = Some(err);
                }
            }
        }
        let not_run = || "not run".to_owned();
        let mut all = AgentSamples::default();
        for s in [&files, &api] {
            all.messages.extend(&s.messages);
            all.converge_nft.extend(&s.converge_nft);
            all.change_nft.extend(&s.change_nft);
        }
        let _ = writeln!(
            md,
            "| {n} × {e} | {} | {} | {} | {}, {} | {} | {} | {} | {} | {} | {} | {} |",
            if full {
                cell(&files.converge, &files.failure)
            } else {
                not_run()
            },
            cell(&api.converge, &api.failure),
            if full {
                cell(&base, &base_fail)
            } else {
                not_run()
            },
            ratio(med(&files.converge), med(&base)),
            ratio(med(&api.converge), med(&base)),
            if full {
                cell(&files.change, &files.failure)
            } else {
                not_run()
            },
            cell(&api.change, &api.failure),
            if full {
                cell(&base_change, &base_fail)
            } else {
                not_run()
            },
            all.messages_cell(),
            AgentSamples::nft_cell(&all.converge_nft),
            AgentSamples::nft_cell(&all.change_nft),
            api.memory_cell(),
        );
    }
    Ok(Table { markdown: md, csv })
}

#[derive(Debug, clap::Args)]
pub struct SoakOpts {
    /// Services in the cluster.
    #[arg(long, default_value_t = 10000)]
    services: u32,
    /// Endpoints per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: u32,
    /// Minutes of churn.
    #[arg(long, default_value_t = 10)]
    minutes: u32,
    /// EndpointSlice updates in the burst the SIGTERM lands in.
    #[arg(long, default_value_t = 5000)]
    burst: u32,
    /// Guest memory in MiB (the fake API server holds the cluster too).
    #[arg(long, default_value_t = 8192)]
    memory: u32,
    /// Only write soak.md again from benches/results/soak.json, running
    /// nothing.
    #[arg(long)]
    redraw: bool,
}

/// Whether a line of the soak's kernel log is a warning: soft lockups,
/// RCU stalls, hung tasks, BUGs, WARNINGs, oopses and their call traces.
fn kernel_warning(line: &str) -> bool {
    [
        "soft lockup",
        "BUG:",
        "WARNING:",
        "stall",
        "hung_task",
        "Call Trace",
        "Oops",
    ]
    .iter()
    .any(|w| line.contains(w))
}

/// `cargo xtask soak`: one soak run in a VM booted with
/// `softlockup_panic=1` (a soft lockup ends the run), written to
/// `benches/results/soak.md` (a table a minute) and `soak.json`.
pub fn soak(ws: &Path, o: &SoakOpts) -> Result<()> {
    let dir = ws.join("benches/results");
    let reproduce = format!(
        "cargo xtask soak --services {} --endpoints {} --minutes {} --burst {}",
        o.services, o.endpoints, o.minutes, o.burst
    );
    if o.redraw {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("soak.json"))?)?;
        let md = soak_markdown(
            &v,
            v["machine"].as_str().unwrap_or("host unknown"),
            &reproduce,
        );
        std::fs::write(dir.join("soak.md"), &md)?;
        println!("{md}");
        return Ok(());
    }
    let lab = Lab::prepare(ws)?;
    let bins = build_bench(ws)?;
    let args = format!(
        "soak --services {} --endpoints {} --minutes {} --burst {}",
        o.services, o.endpoints, o.minutes, o.burst
    );
    eprintln!("\n==> soak: kipvs-bench {args}");
    let job = Job {
        files: bins.files(),
        script: format!("kipvs-bench {args}; status=$?; dmesg | tail -n 40 >&2; exit $status\n"),
        timeout: Duration::from_secs(u64::from(o.minutes) * 60 + 2400),
        memory_mib: o.memory,
        kernel_args: "softlockup_panic=1".into(),
    };
    let out = lab.run(&job)?;
    let v = out
        .stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(|_| out.exit_code == 0)
        .with_context(|| format!("the soak failed in the lab (exit {})", out.exit_code))?;
    let mut v = v;
    v["machine"] = Value::from(machine());
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("soak.json"),
        serde_json::to_string_pretty(&v)? + "\n",
    )?;
    let md = soak_markdown(&v, &machine(), &reproduce);
    std::fs::write(dir.join("soak.md"), &md)?;
    println!("{md}");
    Ok(())
}

/// The soak's result as a page: a summary, then a row a minute.
pub fn soak_markdown(v: &Value, machine: &str, reproduce: &str) -> String {
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let minutes = v["minutes"].as_array().cloned().unwrap_or_default();
    // A minute that ended just after a restart shows the agent still
    // loading: the spread is over the others.
    let rss: Vec<f64> = minutes
        .iter()
        .filter(|m| m["restarts"].as_array().is_none_or(Vec::is_empty))
        .filter_map(|m| m["rss_kib"].as_f64())
        .collect();
    let (lo, hi) = rss
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    let repairs: Vec<String> = v["repairs_seconds"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r.as_f64()
                .map_or("not repaired".into(), |s| format!("{s:.1} s"))
        })
        .collect();
    let warnings: Vec<Value> = v["kernel_log"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|w| w.as_str().is_some_and(kernel_warning))
        .cloned()
        .collect();
    let mut md = format!(
        "# Soak: {} Services × {} endpoints, {} minutes of churn\n\n\
         Measured in the kernel lab (Debian 6.1 under QEMU TCG, 2 vCPUs, booted `softlockup_panic=1`), {machine}.\n\
         The agent reads the cluster from the fake API server (real HTTP list/watch). Churn: one endpoint\n\
         change a second, a Service added and one deleted every 10 s, one virtual server deleted by hand\n\
         every minute (timed until the periodic repair puts it back), a SIGKILL + restart a third in, a\n\
         SIGTERM + restart in the middle of a burst of {} EndpointSlice updates two thirds in.\n\n\
         Reproduce: `{reproduce}`\n\n\
         - start → converged: {:.1} s; RSS after converging {:.0} MiB\n\
         - RSS at the end of each minute without a restart: {:.0}–{:.0} MiB ({:.0} % spread)\n\
         - established connections kept: {} of {}\n\
         - hand deletions repaired after: {}\n\
         - kernel warnings: {}\n\n\
         | minute | syncs | netlink messages | endpoint changes | Services added / deleted | burst updates | hand deletes | RSS (MiB) | restarts |\n\
         |---|---|---|---|---|---|---|---|---|\n",
        n("services"),
        n("endpoints"),
        minutes.len(),
        n("burst"),
        n("converge_seconds"),
        n("rss_after_converge_kib") / 1024.0,
        lo / 1024.0,
        hi / 1024.0,
        if lo > 0.0 {
            (hi - lo) / lo * 100.0
        } else {
            0.0
        },
        n("connections_kept"),
        n("connections_opened"),
        if repairs.is_empty() {
            "none".into()
        } else {
            repairs.join(", ")
        },
        if warnings.is_empty() {
            "none".to_owned()
        } else {
            warnings
                .iter()
                .filter_map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    for m in &minutes {
        let f = |k: &str| m[k].as_f64().unwrap_or(0.0);
        let restarts: Vec<&str> = m["restarts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str())
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} / {} | {} | {} | {:.0} | {} |",
            f("minute"),
            f("syncs"),
            f("netlink_messages"),
            f("endpoint_changes"),
            f("services_added"),
            f("services_deleted"),
            f("slice_updates_in_burst"),
            f("hand_deletes"),
            f("rss_kib") / 1024.0,
            restarts.join("; ")
        );
    }
    md
}
