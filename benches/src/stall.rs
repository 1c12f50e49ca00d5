//! How long the kernel keeps a CPU from running anything else while IPVS
//! holds a large table (issue #14, point 5: a soft lockup at 5,000
//! Services in the lab).
//!
//! One probe thread per CPU, pinned and `SCHED_FIFO`, sleeps 1 ms in a loop
//! and records how late it wakes. A real-time thread that wakes late was
//! kept off its CPU by the kernel itself: a softirq (timers run there) or
//! kernel code that did not reach a preemption point. That lateness is what
//! the soft-lockup watchdog measures at its extreme (20 s by default).
//!
//! The run goes through phases, each with its own probe figures:
//!
//! 1. idle with an empty table (the baseline);
//! 2. loading N × E with [`Client::apply`] (1024 requests per call), paced
//!    as kipvs paces them or `batch` requests per `sendmsg`
//!    ([`Client::set_requests_per_send`]), noting the slowest `sendmsg`;
//! 3. idle with the full table, the rate estimator on (6.1 walks every
//!    service and destination in one timer every 2 s);
//! 4. idle with the full table, `net.ipv4.vs.run_estimation=0` (when the
//!    kernel has it; restored afterwards);
//! 5. deleting the N services, `batch` per call: their destinations go to
//!    the kernel's destination trash, where they stay for up to two minutes;
//! 6. loading the same table again at once: every added destination first
//!    searches that trash (a list walk under a BH-disabled spinlock), so
//!    this is the slow case a restart or a mass re-creation meets;
//! 7. deleting it again.

use crate::ipvs_load::{ops, service_key};
use crate::{BenchError, seconds_since};
use kipvs_ipvs::{Client, Op};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The sysctl that turns the IPVS rate estimator off (Linux 5.18+).
pub const RUN_ESTIMATION: &str = "/proc/sys/net/ipv4/vs/run_estimation";

/// How long each probe sleeps per round.
const TICK: Duration = Duration::from_millis(1);

/// Lateness thresholds counted per phase, in microseconds.
const OVER_US: [u64; 4] = [1_000, 10_000, 100_000, 1_000_000];

/// What the probes saw in one phase.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Lateness {
    /// Most microseconds any probe woke late.
    pub max_us: u64,
    /// Wake-ups later than 1 ms, 10 ms, 100 ms and 1 s.
    pub over_1ms: u64,
    pub over_10ms: u64,
    pub over_100ms: u64,
    pub over_1s: u64,
    /// Wake-ups in all.
    pub wakeups: u64,
}

/// One phase's figures.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Phase {
    pub name: String,
    pub seconds: f64,
    /// For phases that send requests: `apply` calls made and the slowest
    /// `sendmsg`.
    pub calls: u64,
    pub max_send_ms: f64,
    pub lateness: Lateness,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    pub services: u32,
    pub endpoints: u32,
    /// Requests per `sendmsg`; 0: paced.
    pub batch: usize,
    pub cpus: usize,
    /// Whether the kernel has `run_estimation` (phase 4 ran).
    pub run_estimation_sysctl: bool,
    pub phases: Vec<Phase>,
}

/// Shared counters the probes write and the phases read and reset.
#[derive(Default)]
struct Counters {
    max_us: AtomicU64,
    over: [AtomicU64; 4],
    wakeups: AtomicU64,
}

impl Counters {
    fn record(&self, late_us: u64) {
        self.max_us.fetch_max(late_us, Ordering::Relaxed);
        self.wakeups.fetch_add(1, Ordering::Relaxed);
        for (count, limit) in self.over.iter().zip(OVER_US) {
            if late_us > limit {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn take(&self) -> Lateness {
        let over = |i: usize| self.over[i].swap(0, Ordering::Relaxed);
        Lateness {
            max_us: self.max_us.swap(0, Ordering::Relaxed),
            over_1ms: over(0),
            over_10ms: over(1),
            over_100ms: over(2),
            over_1s: over(3),
            wakeups: self.wakeups.swap(0, Ordering::Relaxed),
        }
    }
}

/// Real-time probe threads, one per CPU, until dropped.
struct Probes {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Probes {
    fn start(cpus: usize) -> Result<Probes, BenchError> {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let threads = (0..cpus)
            .map(|cpu| {
                let (counters, stop, ready) = (counters.clone(), stop.clone(), ready_tx.clone());
                std::thread::spawn(move || {
                    let setup = pin_realtime(cpu);
                    let ok = setup.is_ok();
                    let _ = ready.send(setup);
                    if ok {
                        probe(&counters, &stop);
                    }
                })
            })
            .collect();
        let probes = Probes {
            counters,
            stop,
            threads,
        };
        for _ in 0..cpus {
            ready_rx
                .recv()
                .map_err(|_| BenchError::Failed("a probe thread died".into()))??;
        }
        probes.counters.take();
        Ok(probes)
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Pins the calling thread to `cpu` and makes it `SCHED_FIFO` priority 50.
fn pin_realtime(cpu: usize) -> Result<(), BenchError> {
    // SAFETY: plain system calls on the calling thread with a zeroed,
    // correctly sized cpu_set_t and sched_param.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let param = libc::sched_param { sched_priority: 50 };
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

fn probe(counters: &Counters, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        std::thread::sleep(TICK);
        let late = start.elapsed().saturating_sub(TICK);
        counters.record(late.as_micros() as u64);
    }
}

/// Runs the five phases; the kernel must hold no service with the
/// synthetic addresses beforehand, and holds none afterwards.
pub fn run(n: u32, e: u32, batch: usize, idle: Duration) -> Result<Report, BenchError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut ipvs = Client::new()?;
    if batch > 0 {
        ipvs.set_requests_per_send(batch);
    }
    let probes = Probes::start(cpus)?;
    let mut phases = Vec::new();

    phases.push(idle_phase(&probes, "idle, empty table", idle));
    phases.push(send_phase(&probes, &mut ipvs, "load", &ops(n, e), batch)?);
    crate::ipvs_load::verify(n, e)?;
    phases.push(idle_phase(&probes, "idle, full table, estimator on", idle));

    let had = std::fs::read_to_string(RUN_ESTIMATION).ok();
    if had.is_some() {
        std::fs::write(RUN_ESTIMATION, "0")?;
        phases.push(idle_phase(
            &probes,
            "idle, full table, run_estimation=0",
            idle,
        ));
        std::fs::write(RUN_ESTIMATION, had.as_deref().unwrap_or("1").trim())?;
    }

    let deletes: Vec<Op> = (0..n).map(|i| Op::DeleteService(service_key(i))).collect();
    phases.push(send_phase(&probes, &mut ipvs, "delete", &deletes, batch)?);
    phases.push(send_phase(
        &probes,
        &mut ipvs,
        "reload, destinations in the trash",
        &ops(n, e),
        batch,
    )?);
    crate::ipvs_load::verify(n, e)?;
    phases.push(send_phase(
        &probes,
        &mut ipvs,
        "delete again",
        &deletes,
        batch,
    )?);
    drop(probes);
    Ok(Report {
        services: n,
        endpoints: e,
        batch,
        cpus,
        run_estimation_sysctl: had.is_some(),
        phases,
    })
}

fn idle_phase(probes: &Probes, name: &str, idle: Duration) -> Phase {
    probes.counters.take();
    let start = Instant::now();
    std::thread::sleep(idle);
    Phase {
        name: name.to_owned(),
        seconds: seconds_since(start),
        calls: 0,
        max_send_ms: 0.0,
        lateness: probes.counters.take(),
    }
}

/// How requests were batched: `0` is kipvs's pacing.
fn per_send(batch: usize) -> String {
    match batch {
        0 => "paced".to_owned(),
        n => format!("{n} per sendmsg"),
    }
}

fn send_phase(
    probes: &Probes,
    ipvs: &mut Client,
    name: &str,
    ops: &[Op],
    batch: usize,
) -> Result<Phase, BenchError> {
    probes.counters.take();
    ipvs.take_longest_send();
    let start = Instant::now();
    // In slices of 1024, as the agent's syncs send them at most.
    let (mut calls, mut failed) = (0, 0);
    for chunk in ops.chunks(1024) {
        failed += ipvs.apply(chunk).iter().filter(|r| r.is_err()).count();
        calls += 1;
    }
    let max_send = ipvs.take_longest_send();
    if failed > 0 {
        return Err(BenchError::Failed(format!(
            "{name}: {failed} of {} requests failed",
            ops.len()
        )));
    }
    Ok(Phase {
        name: format!("{name}, {}", per_send(batch)),
        seconds: seconds_since(start),
        calls,
        max_send_ms: max_send.as_secs_f64() * 1e3,
        lateness: probes.counters.take(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_thresholds_and_reset() {
        let c = Counters::default();
        for us in [10, 1_500, 20_000, 150_000, 2_000_000] {
            c.record(us);
        }
        let l = c.take();
        assert_eq!(
            l,
            Lateness {
                max_us: 2_000_000,
                over_1ms: 4,
                over_10ms: 3,
                over_100ms: 2,
                over_1s: 1,
                wakeups: 5,
            }
        );
        assert_eq!(c.take().wakeups, 0);
        assert_eq!(c.take().max_us, 0);
    }
}
