//! `cargo xtask bench agent --scale` (issue #16): the agent from the fake
//! API server at each size, one VM per size, written to
//! `benches/results/agent-scale.md`, `.csv` and `.png`.

use super::chart::RssPoint;
use super::{BenchOpts, Binaries, machine, measure, secs, summary};
use crate::lab::Lab;
use anyhow::Result;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// The resident-memory goals: (Services, MiB).
pub(super) const RSS_GOALS_MIB: [(u32, f64); 4] =
    [(1000, 40.0), (5000, 80.0), (10000, 120.0), (50000, 250.0)];
/// kube-proxy's IPVS mode, as measured for the issue: (Services, MiB).
pub(super) const KUBE_PROXY_RSS_MIB: [(u32, f64); 2] = [(1000, 78.0), (5000, 169.0)];
/// CPU with no change, percent of one core.
const IDLE_GOAL_PERCENT: f64 = 0.5;
/// The first sync: (Services, seconds).
const FIRST_SYNC_GOALS_SECS: [(u32, f64); 2] = [(1000, 3.0), (5000, 12.0)];
/// One endpoint change, API → kernel (the median of the run's).
const CHANGE_GOAL_SECS: f64 = 0.02;

fn goal_at(goals: &[(u32, f64)], n: u32) -> Option<f64> {
    goals.iter().find(|g| g.0 == n).map(|g| g.1)
}

/// One size's measurement: the guest's JSON line, or why there is none.
pub(super) struct Row {
    pub services: u32,
    pub endpoints: u32,
    pub result: Result<Value, String>,
}

/// The numbers of one JSON line (None where it has none).
#[derive(Debug, Default, PartialEq)]
struct Numbers {
    converge: Option<f64>,
    changes: Vec<f64>,
    messages: Vec<u64>,
    rss_kib: Option<f64>,
    hwm_kib: Option<f64>,
    idle_seconds: Option<f64>,
    idle_cpu: Option<f64>,
    idle_resyncs: Option<u64>,
    churn_seconds: Option<f64>,
    churn_changes: Option<u64>,
    churn_syncs: Option<u64>,
    churn_cpu: Option<f64>,
    churn_rss_kib: Option<f64>,
    churn_hwm_kib: Option<f64>,
}

impl Numbers {
    fn of(v: &Value) -> Numbers {
        let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
        Numbers {
            converge: v["converge_seconds"].as_f64(),
            changes: list("change_seconds")
                .iter()
                .filter_map(Value::as_f64)
                .collect(),
            messages: list("change_messages")
                .iter()
                .filter_map(Value::as_u64)
                .collect(),
            rss_kib: v["rss_kib"].as_f64(),
            hwm_kib: v["hwm_kib"].as_f64(),
            idle_seconds: v["idle_seconds"].as_f64(),
            idle_cpu: v["idle_cpu_percent"].as_f64(),
            idle_resyncs: v["idle_resyncs"].as_u64(),
            churn_seconds: v["churn_seconds"].as_f64(),
            churn_changes: v["churn_changes"].as_u64(),
            churn_syncs: v["churn_syncs"].as_u64(),
            churn_cpu: v["churn_cpu_percent"].as_f64(),
            churn_rss_kib: v["churn_rss_kib"].as_f64(),
            churn_hwm_kib: v["churn_hwm_kib"].as_f64(),
        }
    }

    fn change_median(&self) -> Option<f64> {
        super::med(&self.changes)
    }
}

fn mib(kib: f64) -> String {
    format!("{:.0} MiB", kib / 1024.0)
}

/// "37 MiB (peak 39 MiB)".
fn memory(rss: Option<f64>, hwm: Option<f64>) -> Option<String> {
    Some(match hwm {
        Some(h) => format!("{} (peak {})", mib(rss?), mib(h)),
        None => mib(rss?),
    })
}

/// A window's length in words: "10 min", "90 s".
pub(super) fn window(seconds: u64) -> String {
    if seconds >= 60 && seconds.is_multiple_of(60) {
        format!("{} min", seconds / 60)
    } else {
        format!("{seconds} s")
    }
}

/// Whether a number meets its goal (at most the goal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    Met,
    Missed,
    /// The issue sets no goal at this size.
    NoGoal,
    /// The number was not measured (the run failed, or the phase was
    /// not run).
    NotMeasured,
}

pub(super) fn mark(value: Option<f64>, goal: Option<f64>) -> Mark {
    match (value, goal) {
        (_, None) => Mark::NoGoal,
        (Some(v), Some(g)) if v.is_finite() => {
            if v <= g {
                Mark::Met
            } else {
                Mark::Missed
            }
        }
        _ => Mark::NotMeasured,
    }
}

/// A goal table cell: the mark with the number against the goal.
fn goal_cell(value: Option<f64>, goal: Option<f64>, fmt: impl Fn(f64) -> String) -> String {
    match (mark(value, goal), value, goal) {
        (Mark::Met, Some(v), Some(g)) => format!("met ({} ≤ {})", fmt(v), fmt(g)),
        (Mark::Missed, Some(v), Some(g)) => format!("**not met** ({} > {})", fmt(v), fmt(g)),
        (Mark::NoGoal, _, _) => "no goal at this size".into(),
        _ => "not measured".into(),
    }
}

/// "1 sync", "2 syncs".
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn messages_cell(m: &[u64]) -> String {
    match (m.iter().min(), m.iter().max()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}–{b}"),
        _ => "–".into(),
    }
}

/// The results table, one row per size.
pub(super) fn table(rows: &[Row], churn_seconds: u64) -> String {
    let mut md = format!(
        "| Services × endpoints | start → converged \
         | one endpoint change, API → kernel (median [min–max]) \
         | netlink messages per change | RSS after convergence (peak) \
         | CPU with no change (% of one core; resyncs in the window) \
         | RSS after {} of 1 change/s (peak) | changes applied in the churn |\n\
         |---|---|---|---|---|---|---|---|\n",
        window(churn_seconds)
    );
    for row in rows {
        let size = format!("{} × {}", row.services, row.endpoints);
        let v = match &row.result {
            Ok(v) => v,
            Err(err) => {
                let _ = writeln!(
                    md,
                    "| {size} | {err} | not measured | not measured | not measured \
                     | not measured | not measured | not measured |"
                );
                continue;
            }
        };
        let x = Numbers::of(v);
        let not_run = || "not run".to_owned();
        let idle = match (x.idle_cpu, x.idle_seconds) {
            (Some(cpu), Some(s)) => format!(
                "{cpu:.2} % ({:.2} s a minute; {} in {s:.0} s)",
                cpu * 0.6,
                count(x.idle_resyncs.unwrap_or(0), "resync")
            ),
            _ => not_run(),
        };
        let churned = match (x.churn_changes, x.churn_seconds) {
            (Some(c), Some(s)) => format!(
                "{c} in {s:.0} s ({}; {:.2} % CPU)",
                count(x.churn_syncs.unwrap_or(0), "sync"),
                x.churn_cpu.unwrap_or(f64::NAN)
            ),
            _ => not_run(),
        };
        let _ = writeln!(
            md,
            "| {size} | {} | {} | {} | {} | {idle} | {} | {churned} |",
            x.converge.map_or("–".into(), secs),
            summary(&x.changes, secs).unwrap_or_else(|| "none timed".into()),
            messages_cell(&x.messages),
            memory(x.rss_kib, x.hwm_kib).unwrap_or_else(|| "–".into()),
            memory(x.churn_rss_kib, x.churn_hwm_kib).unwrap_or_else(not_run),
        );
    }
    md
}

/// Where start-up time went, one row per size: when each list arrived and
/// the first sync's parts (the agent's log).
pub(super) fn start_table(rows: &[Row]) -> String {
    let mut md = String::from(
        "| Services × endpoints | Services listed | EndpointSlices listed \
         | first sync: recompute | IPVS + addresses | nftables write | whole sync \
         | start → converged |\n|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let Ok(v) = &row.result else { continue };
        let at = |k: &str| {
            v[k].as_f64()
                .map_or("–".into(), |s| format!("+{}", secs(s)))
        };
        let took = |k: &str| v[k].as_f64().map_or("–".into(), secs);
        let _ = writeln!(
            md,
            "| {} × {} | {} | {} | {} | {} | {} | {} | {} |",
            row.services,
            row.endpoints,
            at("services_listed_seconds"),
            at("slices_listed_seconds"),
            took("first_sync_compute_seconds"),
            took("first_sync_apply_seconds"),
            took("first_sync_nft_seconds"),
            took("first_sync_seconds"),
            took("converge_seconds"),
        );
    }
    md
}

/// The goals, each cell marked from the numbers.
pub(super) fn goals(rows: &[Row], churn_seconds: u64) -> String {
    let mut md = format!(
        "| Services | RSS after convergence | RSS after {} of churn \
         | CPU with no change ≤ {IDLE_GOAL_PERCENT} % of a core | start → converged \
         | one endpoint change ≤ {} (median) |\n|---|---|---|---|---|---|\n",
        window(churn_seconds),
        secs(CHANGE_GOAL_SECS)
    );
    for row in rows {
        let n = row.services;
        let x = match &row.result {
            Ok(v) => Numbers::of(v),
            Err(_) => Numbers::default(),
        };
        let rss = goal_at(&RSS_GOALS_MIB, n).map(|m| m * 1024.0);
        let percent = |p: f64| format!("{p:.2} %");
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} | {} |",
            goal_cell(x.rss_kib, rss, mib),
            goal_cell(x.churn_rss_kib, rss, mib),
            goal_cell(x.idle_cpu, Some(IDLE_GOAL_PERCENT), percent),
            goal_cell(x.converge, goal_at(&FIRST_SYNC_GOALS_SECS, n), secs),
            goal_cell(x.change_median(), Some(CHANGE_GOAL_SECS), secs),
        );
    }
    md
}

/// One CSV field: quoted when it holds a comma, quote or newline.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A row a measurement: converge, each change, the idle and the churn
/// windows, or the failure.
pub(super) fn csv(rows: &[Row]) -> String {
    let mut csv = String::from(
        "services,endpoints,what,seconds,messages,rss_kib,hwm_kib,cpu_percent,syncs,changes,error\n",
    );
    let o = |x: Option<f64>| x.map_or(String::new(), |x| x.to_string());
    let u = |x: Option<u64>| x.map_or(String::new(), |x| x.to_string());
    for row in rows {
        let (n, e) = (row.services, row.endpoints);
        let v = match &row.result {
            Ok(v) => v,
            Err(err) => {
                let _ = writeln!(csv, "{n},{e},failed,,,,,,,,{}", field(err));
                continue;
            }
        };
        let x = Numbers::of(v);
        let _ = writeln!(
            csv,
            "{n},{e},converge,{},{},{},{},,,,",
            o(x.converge),
            u(v["converge_messages"].as_u64()),
            o(x.rss_kib),
            o(x.hwm_kib)
        );
        for (k, s) in x.changes.iter().enumerate() {
            let _ = writeln!(
                csv,
                "{n},{e},change,{s},{},,,,,,",
                u(x.messages.get(k).copied())
            );
        }
        if x.idle_seconds.is_some() {
            let _ = writeln!(
                csv,
                "{n},{e},idle,{},,{},,{},{},,",
                o(x.idle_seconds),
                o(v["idle_rss_kib"].as_f64()),
                o(x.idle_cpu),
                u(x.idle_resyncs)
            );
        }
        if x.churn_seconds.is_some() {
            let _ = writeln!(
                csv,
                "{n},{e},churn,{},,{},{},{},{},{},",
                o(x.churn_seconds),
                o(x.churn_rss_kib),
                o(x.churn_hwm_kib),
                o(x.churn_cpu),
                u(x.churn_syncs),
                u(x.churn_changes)
            );
        }
    }
    csv
}

/// What the chart draws of each size.
pub(super) fn chart_points(rows: &[Row]) -> Vec<RssPoint> {
    rows.iter()
        .map(|r| {
            let x = r.result.as_ref().map(Numbers::of).unwrap_or_default();
            RssPoint {
                services: r.services,
                converged: x.rss_kib.map(|k| k / 1024.0),
                churned: x.churn_rss_kib.map(|k| k / 1024.0),
            }
        })
        .collect()
}

/// The whole page: what was measured, the table, the goals, the
/// machine and the command, and the chart.
pub(super) fn markdown(rows: &[Row], o: &BenchOpts, machine: &str) -> String {
    let failed = rows.iter().filter(|r| r.result.is_err()).count();
    format!(
        "# The agent at scale (issue 16)\n\n\
         `kipvs proxy` reading N Services × {e} endpoints from the fake API server (real HTTP \
         list/watch, in the same guest), one fresh VM per size:\n\n\
         - start → converged: from starting the agent to its first sync's log line, the \
         kernel then read back and checked;\n\
         - one endpoint change: {c} single changes, each from the API server accepting the \
         EndpointSlice to the log line of the sync that applied it, checked in the kernel;\n\
         - RSS: VmRSS of the agent (VmHWM, its peak so far, in parentheses);\n\
         - CPU with no change: the agent's user + system time over {idle} with nothing to do, \
         as percent of one core (and CPU seconds a minute); the agent's periodic repair \
         runs every 30 s (kube-proxy's default), and the repairs in the window are counted;\n\
         - churn: then one endpoint change a second for {churn}, made on schedule without \
         waiting for the agent; afterwards the last change is waited for in the kernel and \
         every Service the churn touched is checked to hold its final state; the syncs are \
         those logged from the first change until the last one was in the kernel, the CPU is \
         over the window, the RSS is read after it.\n\n\
         Times and CPU are under QEMU's TCG emulation, several times native; the goals are \
         marked against the numbers as measured. A measurement that failed or ran out of time \
         shows why instead of a number{failed_note}.\n\n\
         {table}\n\
         Where start-up time goes (the agent's log: seconds since start when each list \
         arrived, then the first sync's parts; the fake API server shares the guest's two \
         vCPUs):\n\n\
         {start}\n\
         The issue's goals, each marked from the numbers above:\n\n\
         {goals}\n\
         Machine: {machine}; guest kernel {kernel} under QEMU TCG (2 vCPUs, no KVM), guest memory \
         4096 MiB up to 10,000 Services and {big} MiB above. Reproduce: `{cmd}`.\n\n\
         ![the agent's RSS after convergence and after the churn vs Services, with the goals \
         and kube-proxy's](agent-scale.png)\n",
        e = o.endpoints,
        c = o.changes,
        idle = window(o.idle_seconds),
        churn = window(o.churn_seconds),
        failed_note = if failed > 0 {
            format!(" ({failed} of {} sizes failed)", rows.len())
        } else {
            String::new()
        },
        table = table(rows, o.churn_seconds),
        goals = goals(rows, o.churn_seconds),
        start = start_table(rows),
        kernel = crate::lab::KERNEL_VERSION,
        big = o.memory_size_mib,
        cmd = o.reproduce(super::Suite::Agent),
    )
}

/// The guest's command for one size.
fn args(n: u32, o: &BenchOpts) -> String {
    format!(
        "agent --source api --services {n} --endpoints {} --changes {} \
         --idle-seconds {} --churn-seconds {} --timeout {}",
        o.endpoints, o.changes, o.idle_seconds, o.churn_seconds, o.timeout
    )
}

/// Every size in its own VM; the files are written again after each,
/// so that an interrupted run keeps what it measured.
pub(super) fn run(ws: &Path, lab: &Lab, bins: &Binaries, o: &BenchOpts) -> Result<()> {
    let dir = ws.join("benches/results");
    std::fs::create_dir_all(&dir)?;
    let machine = machine();
    let mut rows = Vec::new();
    let mut md = String::new();
    for &n in &o.scale_sizes {
        let args = args(n, o);
        let memory = if n > 10_000 { o.memory_size_mib } else { 4096 };
        // The guest's --timeout bounds each step; the VM also holds the
        // idle and churn windows.
        let timeout = o.timeout + o.idle_seconds + o.churn_seconds;
        let result = measure(lab, bins, &args, timeout, memory, "");
        if let Err(err) = &result {
            eprintln!("bench: {args}: {err}");
        }
        rows.push(Row {
            services: n,
            endpoints: o.endpoints,
            result,
        });
        md = markdown(&rows, o, &machine);
        std::fs::write(dir.join("agent-scale.md"), &md)?;
        std::fs::write(dir.join("agent-scale.csv"), csv(&rows))?;
        super::chart::scale_chart(&dir.join("agent-scale.png"), &chart_points(&rows))?;
    }
    println!("\n{md}");
    eprintln!("xtask: wrote benches/results/agent-scale.md, .csv and .png");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(args: &[&str]) -> BenchOpts {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            o: BenchOpts,
        }
        Cli::parse_from(std::iter::once("bench").chain(args.iter().copied())).o
    }

    fn sample() -> Vec<Row> {
        let ok = json!({
            "bench": "agent", "services": 1000, "endpoints": 10, "source": "api",
            "converge_seconds": 2.76, "converge_messages": 12000,
            "change_seconds": [0.055, 0.017, 0.012], "change_messages": [2, 2, 3],
            "rss_kib": 38024, "hwm_kib": 39600,
            "idle_seconds": 60.01, "idle_cpu_percent": 0.25, "idle_resyncs": 2,
            "idle_rss_kib": 38100,
            "churn_seconds": 600.2, "churn_changes": 600, "churn_syncs": 590,
            "churn_rss_kib": 45056, "churn_hwm_kib": 46080, "churn_cpu_percent": 1.5,
        });
        let no_windows = json!({
            "bench": "agent", "services": 5000, "endpoints": 10,
            "converge_seconds": 13.0, "converge_messages": 60000,
            "change_seconds": [0.01], "change_messages": [2],
            "rss_kib": 70000, "hwm_kib": 72000,
            "idle_seconds": null, "churn_seconds": null,
        });
        vec![
            Row {
                services: 1000,
                endpoints: 10,
                result: Ok(ok),
            },
            Row {
                services: 5000,
                endpoints: 10,
                result: Ok(no_windows),
            },
            Row {
                services: 50000,
                endpoints: 10,
                result: Err("> 2460 s".into()),
            },
        ]
    }

    #[test]
    fn the_table_has_a_row_per_size_and_failures_as_such() {
        let md = table(&sample(), 600);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].contains("RSS after 10 min of 1 change/s (peak)"));
        assert_eq!(
            lines[2],
            "| 1000 × 10 | 2.76 s | 17.0 ms [12.0 ms–55.0 ms] | 2–3 | 37 MiB (peak 39 MiB) \
             | 0.25 % (0.15 s a minute; 2 resyncs in 60 s) | 44 MiB (peak 45 MiB) \
             | 600 in 600 s (590 syncs; 1.50 % CPU) |"
        );
        assert_eq!(
            lines[3],
            "| 5000 × 10 | 13.00 s | 10.0 ms | 2 | 68 MiB (peak 70 MiB) | not run \
             | not run | not run |"
        );
        assert_eq!(
            lines[4],
            "| 50000 × 10 | > 2460 s | not measured | not measured | not measured \
             | not measured | not measured | not measured |"
        );
    }

    #[test]
    fn goals_are_marked_from_the_numbers() {
        assert_eq!(mark(Some(40.0), Some(40.0)), Mark::Met);
        assert_eq!(mark(Some(40.1), Some(40.0)), Mark::Missed);
        assert_eq!(mark(None, Some(40.0)), Mark::NotMeasured);
        assert_eq!(mark(Some(f64::NAN), Some(40.0)), Mark::NotMeasured);
        assert_eq!(mark(Some(1.0), None), Mark::NoGoal);
        assert_eq!(goal_at(&RSS_GOALS_MIB, 10000), Some(120.0));
        assert_eq!(goal_at(&FIRST_SYNC_GOALS_SECS, 10000), None);

        let md = goals(&sample(), 600);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].contains("RSS after 10 min of churn"));
        assert!(lines[0].contains("≤ 0.5 % of a core"));
        assert!(lines[0].contains("≤ 20.0 ms (median)"));
        assert_eq!(
            lines[2],
            "| 1000 | met (37 MiB ≤ 40 MiB) | **not met** (44 MiB > 40 MiB) \
             | met (0.25 % ≤ 0.50 %) | met (2.76 s ≤ 3.00 s) | met (17.0 ms ≤ 20.0 ms) |"
        );
        assert_eq!(
            lines[3],
            "| 5000 | met (68 MiB ≤ 80 MiB) | not measured | not measured \
             | **not met** (13.00 s > 12.00 s) | met (10.0 ms ≤ 20.0 ms) |"
        );
        assert_eq!(
            lines[4],
            "| 50000 | not measured | not measured | not measured | no goal at this size \
             | not measured |"
        );
    }

    #[test]
    fn the_csv_has_a_row_per_measurement() {
        let csv = csv(&sample());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[1], "1000,10,converge,2.76,12000,38024,39600,,,,");
        assert_eq!(lines[2], "1000,10,change,0.055,2,,,,,,");
        assert_eq!(lines[5], "1000,10,idle,60.01,,38100,,0.25,2,,");
        assert_eq!(lines[6], "1000,10,churn,600.2,,45056,46080,1.5,590,600,");
        assert_eq!(lines[7], "5000,10,converge,13,60000,70000,72000,,,,");
        assert_eq!(lines.last(), Some(&"50000,10,failed,,,,,,,,> 2460 s"));
        assert_eq!(field("a, \"b\""), "\"a, \"\"b\"\"\"");
        let widths: Vec<usize> = lines.iter().map(|l| l.split(',').count()).collect();
        assert!(widths.iter().all(|w| *w == 11), "{widths:?}");
    }

    #[test]
    fn the_page_names_the_windows_and_the_command() {
        let o = opts(&["agent", "--scale"]);
        let md = markdown(&sample(), &o, "host Test CPU, 2 cores");
        assert!(md.contains("over 1 min with nothing to do"));
        assert!(md.contains("for 10 min, made on schedule"));
        assert!(md.contains("(1 of 3 sizes failed)"));
        assert!(md.contains("4096 MiB up to 10,000 Services and 12288 MiB above"));
        assert!(md.contains(
            "Reproduce: `cargo xtask bench agent --scale --scale-sizes 1000,5000,10000,50000`."
        ));
        assert!(md.contains("](agent-scale.png)"));
        assert!(md.contains("several times native"));
        assert_eq!(count(1, "resync"), "1 resync");
        assert_eq!(count(0, "sync"), "0 syncs");
        assert_eq!(window(30), "30 s");
        assert_eq!(window(90), "90 s");
        assert_eq!(window(600), "10 min");
    }

    #[test]
    fn the_reproduce_command_names_what_is_not_default() {
        let o = opts(&[
            "agent",
            "--scale",
            "--scale-sizes",
            "1000",
            "--idle-seconds",
            "20",
            "--churn-seconds",
            "30",
            "--changes",
            "3",
        ]);
        assert_eq!(
            o.reproduce(super::super::Suite::Agent),
            "cargo xtask bench agent --scale --scale-sizes 1000 --changes 3 \
             --idle-seconds 20 --churn-seconds 30"
        );
        let o = opts(&[
            "agent",
            "--scale",
            "--memory-size-mib",
            "16384",
            "--timeout",
            "900",
        ]);
        assert_eq!(
            o.reproduce(super::super::Suite::Agent),
            "cargo xtask bench agent --scale --scale-sizes 1000,5000,10000,50000 \
             --memory-size-mib 16384 --timeout 900"
        );
        // Without --scale the agent suite's command is as before.
        let mut o = opts(&["agent"]);
        o.sizes = vec![10000];
        assert_eq!(
            o.reproduce(super::super::Suite::Agent),
            "cargo xtask bench agent --sizes 10000"
        );
        assert_eq!(
            args(1000, &opts(&["agent", "--scale"])),
            "agent --source api --services 1000 --endpoints 10 --changes 10 \
             --idle-seconds 60 --churn-seconds 600 --timeout 1800"
        );
    }

    #[test]
    fn the_chart_takes_what_was_measured() {
        let drawn: Vec<(u32, Option<f64>, Option<f64>)> = chart_points(&sample())
            .into_iter()
            .map(|p| (p.services, p.converged, p.churned))
            .collect();
        assert_eq!(
            drawn,
            vec![
                (1000, Some(38024.0 / 1024.0), Some(44.0)),
                (5000, Some(70000.0 / 1024.0), None),
                (50000, None, None),
            ]
        );
    }
}
