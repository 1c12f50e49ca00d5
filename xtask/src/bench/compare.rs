//! `cargo xtask bench` (or `bench compare`): kipvs against ipvsadm,
//! iptables-legacy, iptables-nft and nftables (issue #8). One fresh VM per
//! backend × size × repetition runs `kipvs-bench compare`; this side
//! gathers the JSON lines into `benches/results/compare.{csv,md}` and the
//! charts `compare-update.png` and `compare-connect.png`.

use super::{BenchOpts, Binaries, machine, measure, secs};
use crate::lab::Lab;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The backends, in table order, and the methods (update styles) each
/// reports.
pub const BACKENDS: [(&str, &[&str]); 5] = [
    ("kipvs", &["kipvs"]),
    ("ipvsadm", &["ipvsadm"]),
    (
        "iptables-legacy",
        &["iptables-legacy full", "iptables-legacy partial"],
    ),
    (
        "iptables-nft",
        &["iptables-nft full", "iptables-nft partial"],
    ),
    ("nftables", &["nftables"]),
];

pub const SCENARIOS: [(&str, &str); 4] = [
    ("load", "full load"),
    ("add-service", "add one Service"),
    ("change-endpoint", "change one endpoint"),
    ("delete-service", "delete one Service"),
];

/// Every number gathered, by (services, method, scenario); connect
/// latencies by (services, backend).
#[derive(Default)]
pub struct Results {
    pub times: BTreeMap<(u32, String, String), Vec<f64>>,
    pub p50: BTreeMap<(u32, String), Vec<f64>>,
    pub p99: BTreeMap<(u32, String), Vec<f64>>,
    pub failures: BTreeMap<(u32, String), String>,
    /// Steps without a number (timed out, or not run after one), by
    /// (services, method, scenario).
    pub step_failures: BTreeMap<(u32, String, String), String>,
    pub csv: String,
}

impl Results {
    fn record(&mut self, n: u32, e: u32, backend: &str, run: u32, v: &Value) {
        for s in v["samples"].as_array().into_iter().flatten() {
            let (method, scenario) = (
                s["method"].as_str().unwrap_or("?"),
                s["scenario"].as_str().unwrap_or("?"),
            );
            let key = (n, method.to_owned(), scenario.to_owned());
            match s["seconds"].as_f64() {
                Some(t) => {
                    self.times.entry(key).or_default().push(t);
                    let _ = writeln!(self.csv, "{n},{e},{backend},{method},{scenario},{run},{t},");
                }
                None => {
                    let why = s["error"].as_str().unwrap_or("no number").to_owned();
                    let _ = writeln!(
                        self.csv,
                        "{n},{e},{backend},{method},{scenario},{run},,{}",
                        why.replace([',', '\n'], " ")
                    );
                    self.step_failures.insert(key, why);
                }
            }
        }
        for (key, map) in [
            ("connect_p50_us", &mut self.p50),
            ("connect_p99_us", &mut self.p99),
        ] {
            let scenario = key.trim_end_matches("_us").replace('_', "-");
            let Some(us) = v[key].as_f64() else {
                // The load ran out of time: no connect was made.
                self.failures
                    .insert((n, backend.to_owned()), "not run".to_owned());
                let _ = writeln!(
                    self.csv,
                    "{n},{e},{backend},{backend},{scenario},{run},,not run"
                );
                continue;
            };
            map.entry((n, backend.to_owned()))
                .or_default()
                .push(us / 1e6);
            let _ = writeln!(
                self.csv,
                "{n},{e},{backend},{backend},{scenario},{run},{},",
                us / 1e6
            );
        }
    }

    fn fail(&mut self, n: u32, e: u32, backend: &str, run: u32, why: &str) {
        self.failures
            .insert((n, backend.to_owned()), why.to_owned());
        let why = why.replace([',', '\n'], " ");
        let _ = writeln!(self.csv, "{n},{e},{backend},{backend},,{run},,{why}");
    }

    /// The numbers of a run's `compare.csv` (what [`Results::record`] and
    /// [`Results::fail`] wrote), to draw its charts again.
    pub fn from_csv(text: &str) -> Result<Results> {
        let mut r = Results::default();
        for (i, line) in text.lines().enumerate().skip(1) {
            let f: Vec<&str> = line.splitn(8, ',').collect();
            let [n, _e, backend, method, scenario, _run, seconds, why] = f[..] else {
                anyhow::bail!("compare.csv:{}: expected 8 fields: {line}", i + 1);
            };
            let n: u32 = n
                .parse()
                .map_err(|_| anyhow::anyhow!("compare.csv:{}: bad size {n:?}", i + 1))?;
            let t: Option<f64> = seconds.parse().ok();
            match (scenario, t) {
                ("connect-p50", Some(t)) => r.p50.entry((n, backend.into())).or_default().push(t),
                ("connect-p99", Some(t)) => r.p99.entry((n, backend.into())).or_default().push(t),
                ("", None) => {
                    r.failures.insert((n, backend.into()), why.into());
                }
                (_, Some(t)) => r
                    .times
                    .entry((n, method.into(), scenario.into()))
                    .or_default()
                    .push(t),
                (_, None) => {
                    r.step_failures
                        .insert((n, method.into(), scenario.into()), why.into());
                }
            }
        }
        r.csv = text.to_owned();
        Ok(r)
    }

    pub fn median(&self, n: u32, method: &str, scenario: &str) -> Option<f64> {
        let v = self
            .times
            .get(&(n, method.to_owned(), scenario.to_owned()))?;
        super::med(v)
    }
}

/// Draws the charts again from `benches/results/compare.csv`, running
/// nothing (`cargo xtask bench --redraw`).
pub fn redraw(ws: &Path) -> Result<()> {
    let dir = ws.join("benches/results");
    let r = Results::from_csv(&std::fs::read_to_string(dir.join("compare.csv"))?)?;
    let sizes: Vec<u32> = r
        .times
        .keys()
        .map(|k| k.0)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let backends: Vec<&str> = BACKENDS
        .iter()
        .map(|(b, _)| *b)
        .filter(|b| r.csv.lines().any(|l| l.split(',').nth(2) == Some(*b)))
        .collect();
    super::chart::update_chart(&dir.join("compare-update.png"), &r, &sizes, &backends)?;
    super::chart::connect_chart(&dir.join("compare-connect.png"), &r, &sizes, &backends)?;
    eprintln!("xtask: drew compare-update.png and compare-connect.png from compare.csv");
    Ok(())
}

pub fn run(ws: &Path, lab: &Lab, bins: &Binaries, o: &BenchOpts, repeat: u32) -> Result<()> {
    let started = Instant::now();
    let backends: Vec<&str> = BACKENDS
        .iter()
        .map(|(b, _)| *b)
        .filter(|b| o.backends.is_empty() || o.backends.iter().any(|x| x == b))
        .collect();
    let e = o.endpoints;
    let total = o.sizes.len() as u64 * backends.len() as u64 * u64::from(repeat);
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} VMs, ETA {eta_precise} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_secs(1));
    let mut r = Results {
        csv: "services,endpoints,backend,method,scenario,run,seconds,error\n".into(),
        ..Default::default()
    };
    for run in 0..repeat {
        for &n in &o.sizes {
            for &backend in &backends {
                bar.set_message(format!("{backend} at {n} × {e}, run {}", run + 1));
                let args = format!(
                    "compare --backend {backend} --services {n} --endpoints {e} \
                     --connects {} --step-timeout {}",
                    o.connects, o.step_timeout
                );
                let memory = if n > 20000 { 6144 } else { 3072 };
                match measure(lab, bins, &args, o.timeout, memory, "") {
                    Ok(v) => r.record(n, e, backend, run, &v),
                    Err(err) => {
                        bar.println(format!("bench: {backend} at {n}: {err}"));
                        r.fail(n, e, backend, run, &err);
                    }
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_with_message("done");
    let wall = started.elapsed();
    let dir = ws.join("benches/results");
    std::fs::create_dir_all(&dir)?;
    let md = markdown(&r, o, repeat, &backends, wall);
    std::fs::write(dir.join("compare.md"), &md)?;
    std::fs::write(dir.join("compare.csv"), &r.csv)?;
    super::chart::update_chart(&dir.join("compare-update.png"), &r, &o.sizes, &backends)?;
    super::chart::connect_chart(&dir.join("compare-connect.png"), &r, &o.sizes, &backends)?;
    println!("\n{md}");
    eprintln!(
        "xtask: wrote benches/results/compare.md, .csv, compare-update.png and \
         compare-connect.png in {}",
        secs(wall.as_secs_f64())
    );
    Ok(())
}

/// A cell: median [min–max] and the ratio to kipvs, marked when kipvs is
/// slower; or why there is no number.
fn cell(xs: Option<&Vec<f64>>, kipvs: Option<f64>, failure: Option<&String>, us: bool) -> String {
    let fmt = |x: f64| {
        if us {
            format!("{:.0} µs", x * 1e6)
        } else {
            secs(x)
        }
    };
    let Some(s) = xs.and_then(|v| super::summary(v, fmt)) else {
        return failure.cloned().unwrap_or_else(|| "–".into());
    };
    let m = xs.and_then(|v| super::med(v));
    match (m, kipvs) {
        (Some(m), Some(k)) if k > 0.0 => {
            let ratio = m / k;
            if ratio < 1.0 {
                format!("{s} (**{ratio:.2}×, beats kipvs**)")
            } else {
                format!("{s} ({ratio:.2}×)")
            }
        }
        _ => s,
    }
}

fn markdown(r: &Results, o: &BenchOpts, repeat: u32, backends: &[&str], wall: Duration) -> String {
    let e = o.endpoints;
    let mut md = String::new();
    let mut beats = Vec::new();
    for &n in &o.sizes {
        let _ = writeln!(
            md,
            "### {n} Services × {e} endpoints\n\n\
             | method | full load | add one Service | change one endpoint | delete one Service \
             | connect p50 | connect p99 |\n|---|---|---|---|---|---|---|"
        );
        for (backend, methods) in BACKENDS.iter().filter(|(b, _)| backends.contains(b)) {
            let failure = r.failures.get(&(n, (*backend).to_owned()));
            for method in *methods {
                let mut row = format!("| {method} |");
                for (scenario, label) in SCENARIOS {
                    let key = (n, (*method).to_owned(), scenario.to_owned());
                    let xs = r.times.get(&key);
                    let failure = r.step_failures.get(&key).or(failure);
                    let k = r.median(n, "kipvs", scenario);
                    let m = xs.and_then(|v| super::med(v));
                    if let (Some(m), Some(k)) = (m, k)
                        && m < k
                    {
                        beats.push(format!("{method}, {label} at {n} ({:.2}×)", m / k));
                    }
                    let _ = write!(row, " {} |", cell(xs, k, failure, false));
                }
                for (map, label) in [(&r.p50, "connect p50"), (&r.p99, "connect p99")] {
                    let xs = map.get(&(n, (*backend).to_owned()));
                    let k = map
                        .get(&(n, "kipvs".to_owned()))
                        .and_then(|v| super::med(v));
                    let m = xs.and_then(|v| super::med(v));
                    if let (Some(m), Some(k)) = (m, k)
                        && m < k
                        && methods[0] == *method
                    {
                        beats.push(format!("{backend}, {label} at {n} ({:.2}×)", m / k));
                    }
                    let _ = write!(row, " {} |", cell(xs, k, failure, true));
                }
                let _ = writeln!(md, "{row}");
            }
        }
        md.push('\n');
    }
    let _ = writeln!(
        md,
        "Each cell: median of {repeat} run(s) [min–max when repeated] (ratio to kipvs's median; \
         below 1 means faster than kipvs); `> N s`: the step ran out of time (the kernel was \
         checked to still hold the previous state), `not run`: an earlier step of that row ran \
         out of time. {}\n",
        if beats.is_empty() {
            "No peer beat kipvs on any measure in this run.".to_owned()
        } else {
            format!("Faster than kipvs in this run: {}.", beats.join("; "))
        }
    );
    let _ = writeln!(
        md,
        "How: one fresh VM per backend × size × run, each loading N Services × {e} endpoints \
         (ClusterIP:80/TCP → endpoint:8080), then adding Service N, moving endpoint 0 of \
         Service N/2 and deleting Service N; every step is verified in the kernel before its time \
         counts. kipvs: the sync engine (desired state → diff → pipelined netlink, plus the \
         elements of its nftables table over nfnetlink: masquerade, VIP port filter, hairpin), \
         timed from the sync's start to the kernel's last acknowledgement, desired-state \
         computation included. Peer tools: the command alone, its input generated beforehand (ipvsadm: \
         `ipvsadm -R` + `ip -batch` to load, one `ipvsadm`/`ip addr` command per change; \
         iptables: kube-proxy's iptables-mode chains, `iptables-restore --noflush` rewriting \
         every chain (full) or the top-level chains and the changed Service's (partial, \
         kube-proxy ≥ 1.28); the load is the same full restore for both rows; nftables: \
         kube-proxy's nftables-mode table, one `nft -f` transaction per step). Connect: \
         {} TCP connects (after 5 warm-up) from a client netns to the last Service's \
         ClusterIP, through the backend, to a listener in a server netns.\n",
        o.connects
    );
    let _ = writeln!(
        md,
        "Machine: {}; guest kernel {} under QEMU TCG (2 vCPUs, no KVM). The host is shared \
         with other engineers' builds, so absolute times are noisy; the ratios compare runs \
         made side by side, minutes apart. Whole run: {} wall time.\n\n\
         Reproduce: `{}`.",
        machine(),
        crate::lab::KERNEL_VERSION,
        secs(wall.as_secs_f64()),
        o.reproduce(super::Suite::Compare),
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(sizes: Vec<u32>) -> BenchOpts {
        let mut o = BenchOpts::defaults();
        o.sizes = sizes;
        o.repeat = Some(1);
        o
    }

    #[test]
    fn a_load_that_ran_out_of_time_leaves_the_rest_of_its_row_not_run() {
        let mut r = Results::default();
        let v = serde_json::json!({
            "samples": [{"method": "nftables", "scenario": "load", "seconds": null,
                         "error": "> 60 s"},
                        {"method": "nftables", "scenario": "add-service", "seconds": null,
                         "error": "not run"},
                        {"method": "nftables", "scenario": "change-endpoint", "seconds": null,
                         "error": "not run"},
                        {"method": "nftables", "scenario": "delete-service", "seconds": null,
                         "error": "not run"}],
            "connect_p50_us": null, "connect_p99_us": null,
        });
        r.record(5000, 10, "nftables", 0, &v);
        let mut o = opts(vec![5000]);
        o.step_timeout = 60;
        o.backends = vec!["kipvs".into(), "nftables".into()];
        let md = markdown(&r, &o, 1, &["nftables"], Duration::from_secs(9));
        assert!(
            md.contains("| nftables | > 60 s | not run | not run | not run | not run | not run |"),
            "{md}"
        );
        assert!(
            r.csv
                .contains("5000,10,nftables,nftables,connect-p50,0,,not run\n")
        );
        assert!(md.contains(
            "Reproduce: `cargo xtask bench --sizes 5000 --repeat 1 --backends kipvs,nftables \
             --step-timeout 60`"
        ));
    }

    #[test]
    fn the_table_gives_ratios_to_kipvs_and_says_where_a_peer_beats_it() {
        let mut r = Results::default();
        let one = json_sample;
        let v = serde_json::json!({
            "samples": [one("kipvs", "load", 2.0), one("kipvs", "add-service", 0.010)],
            "connect_p50_us": 500.0, "connect_p99_us": 900.0,
        });
        r.record(1000, 10, "kipvs", 0, &v);
        let v = serde_json::json!({
            "samples": [one("nftables", "load", 1.0), one("nftables", "add-service", 0.040),
                        {"method": "nftables", "scenario": "change-endpoint", "seconds": null,
                         "error": "> 120 s"}],
            "connect_p50_us": 1000.0, "connect_p99_us": 2000.0,
        });
        r.record(1000, 10, "nftables", 0, &v);
        r.fail(1000, 10, "ipvsadm", 0, "> 1800 s");
        let md = markdown(
            &r,
            &opts(vec![1000]),
            1,
            &["kipvs", "ipvsadm", "nftables"],
            Duration::from_secs(90),
        );
        assert!(md.contains(
            "| nftables | 1.00 s (**0.50×, beats kipvs**) | 40.0 ms (4.00×) | > 120 s | – |"
        ));
        assert!(
            r.csv
                .contains("1000,10,nftables,nftables,change-endpoint,0,,> 120 s\n")
        );
        assert!(md.contains("| 1000 µs (2.00×) | 2000 µs (2.22×) |"));
        assert!(md.contains("| ipvsadm | > 1800 s | > 1800 s |"));
        assert!(md.contains("Faster than kipvs in this run: nftables, full load at 1000 (0.50×)."));
        assert!(md.contains("Reproduce: `cargo xtask bench --sizes 1000 --repeat 1`"));
        assert!(r.csv.contains("1000,10,ipvsadm,ipvsadm,,0,,> 1800 s\n"));
        assert!(
            r.csv
                .contains("1000,10,kipvs,kipvs,connect-p50,0,0.0005,\n")
        );
    }

    #[test]
    fn the_csv_reads_back_into_the_same_numbers() {
        let mut r = Results {
            csv: "services,endpoints,backend,method,scenario,run,seconds,error\n".into(),
            ..Default::default()
        };
        let v = serde_json::json!({
            "samples": [json_sample("kipvs", "load", 2.0),
                        {"method": "kipvs", "scenario": "add-service", "seconds": null,
                         "error": "> 120 s"}],
            "connect_p50_us": 500.0, "connect_p99_us": 900.0,
        });
        r.record(1000, 10, "kipvs", 0, &v);
        r.fail(1000, 10, "nftables", 0, "the VM ran out of time, 1800 s");
        let back = Results::from_csv(&r.csv).unwrap();
        assert_eq!(back.times, r.times);
        assert_eq!(back.p50, r.p50);
        assert_eq!(back.p99, r.p99);
        assert_eq!(back.step_failures, r.step_failures);
        assert_eq!(
            back.failures
                .get(&(1000, "nftables".into()))
                .map(String::as_str),
            Some("the VM ran out of time  1800 s")
        );
    }

    fn json_sample(method: &str, scenario: &str, t: f64) -> Value {
        serde_json::json!({"method": method, "scenario": scenario, "seconds": t})
    }
}
