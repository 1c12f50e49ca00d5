//! `kipvs-bench`: the benchmark harness's command line, a binary of its own
//! so that the shipped `kipvs` links no benchmark. The measurements live in
//! this crate's library; each command runs one of them on this machine's
//! kernel (normally inside the kernel lab, driven by `cargo xtask bench`)
//! and prints its result as one JSON line on stdout. The commands that run
//! the agent run the `kipvs` binary beside this one (or `--agent PATH`).

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use kipvs_benches::{agent_sync, compare, ipvs_load, peer_rules, soak, stall};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// Benchmarks against this machine's kernel (run them in the kernel lab:
/// `cargo xtask bench`). Each prints one JSON line.
#[derive(Debug, Parser)]
#[command(name = "kipvs-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Load an empty IPVS table with N services × E destinations one way,
    /// verify it, and optionally time reading it back.
    IpvsLoad {
        #[arg(long, value_enum)]
        method: ipvs_load::Method,
        #[command(flatten)]
        size: Size,
        /// Also time reading the whole table back, on 1 and on 4 sockets.
        #[arg(long)]
        dump: bool,
    },
    /// Start `kipvs proxy` on a synthetic cluster (manifests or the fake
    /// API server), time its convergence and single endpoint changes, read
    /// its memory, and optionally its CPU idle and through a churn.
    Agent {
        #[command(flatten)]
        size: Size,
        /// How many single endpoint changes to time.
        #[arg(long, default_value_t = 10)]
        changes: u32,
        /// Where the agent reads the cluster: manifest files, or an
        /// in-process fake API server (real HTTP list/watch).
        #[arg(long, value_enum, default_value = "manifests")]
        source: SourceKind,
        /// Where to write the manifests.
        #[arg(long, default_value = "/tmp/kipvs-bench-manifests")]
        manifests: PathBuf,
        /// Limit for each step, in seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// After the changes, leave the agent alone this long and read its
        /// CPU time (it then repairs every 30 s, else every hour).
        #[arg(long, default_value_t = 0)]
        idle_seconds: u64,
        /// After the idle window, make one endpoint change a second for
        /// this long (without waiting for each sync), then verify the last
        /// one in the kernel and read the agent's CPU over the window and
        /// its memory after it.
        #[arg(long, default_value_t = 0)]
        churn_seconds: u64,
        /// The `kipvs` binary to run as the agent (default: the one beside
        /// this binary), to measure another build with the same harness.
        #[arg(long)]
        agent: Option<PathBuf>,
    },
    /// The agent benchmark's baseline: the same state with `ipvsadm -R`
    /// and `ip -batch`, and one endpoint change with two `ipvsadm` commands.
    AgentBaseline {
        #[command(flatten)]
        size: Size,
    },
    /// Load the synthetic cluster with one backend (kipvs, ipvsadm,
    /// iptables-legacy/-nft, nftables), time adding a Service, changing an
    /// endpoint and deleting a Service, each verified in the kernel, and the
    /// TCP connect latency to the last Service through it.
    Compare {
        #[arg(long, value_enum)]
        backend: compare::Backend,
        #[command(flatten)]
        size: Size,
        /// Connects timed for the connect latency.
        #[arg(long, default_value_t = 200)]
        connects: u32,
        /// Limit for each peer-tool command, in seconds.
        #[arg(long, default_value_t = 120)]
        step_timeout: u64,
    },
    /// The soak: the agent on the fake API server through minutes of churn
    /// (an endpoint change a second, a Service added and deleted every
    /// 10 s, a hand deletion a minute, a SIGKILL and a mid-burst SIGTERM),
    /// holding established connections; per-minute syncs, messages, RSS.
    Soak {
        #[command(flatten)]
        size: Size,
        #[arg(long, default_value_t = 10)]
        minutes: u32,
        /// EndpointSlice updates in the burst the SIGTERM lands in.
        #[arg(long, default_value_t = 5000)]
        burst: u32,
        /// Established connections held through the run.
        #[arg(long, default_value_t = 20)]
        connections: u32,
        /// The `kipvs` binary to run as the agent (default: the one beside
        /// this binary).
        #[arg(long)]
        agent: Option<PathBuf>,
    },
    /// Real-time probes, one per CPU, time how late they wake while IPVS
    /// loads N × E, holds it (rate estimator on, then off), deletes it and
    /// loads it again with the deleted destinations in the kernel's trash.
    Stall {
        #[command(flatten)]
        size: Size,
        /// Requests per `sendmsg`; 0 (the default) paces them as kipvs
        /// does.
        #[arg(long, default_value_t = 0)]
        batch: usize,
        /// Seconds of each idle phase.
        #[arg(long, default_value_t = 10)]
        idle: u64,
    },
    /// Print the input a peer tool loads the synthetic cluster from, as
    /// `compare` feeds it, to time a load by hand: e.g.
    /// `kipvs-bench rules iptables > f; time iptables-legacy-restore --noflush < f`.
    Rules {
        #[arg(value_enum)]
        tool: RulesFor,
        #[command(flatten)]
        size: Size,
    },
}

/// Whose input `kipvs-bench rules` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RulesFor {
    /// `ipvsadm -R` input (the addresses go with `ip -batch`, not printed).
    Ipvsadm,
    /// `iptables-restore --noflush` input: kube-proxy's iptables-mode nat
    /// chains.
    Iptables,
    /// `nft -f` input: kube-proxy's nftables-mode table.
    Nftables,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SourceKind {
    Manifests,
    Api,
}

#[derive(Debug, Args)]
struct Size {
    /// Number of Services (virtual servers).
    #[arg(long, default_value_t = 1000)]
    services: u32,
    /// Endpoints (real servers) per Service.
    #[arg(long, default_value_t = 10)]
    endpoints: u32,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli.command) {
        eprintln!("kipvs-bench: error: {e:#}");
        std::process::exit(1);
    }
}

/// The agent binary: `--agent PATH`, else `kipvs` beside this executable,
/// else `kipvs` on `PATH`.
fn agent_binary(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("kipvs")))
            .filter(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("kipvs"))
    })
}

fn run(cmd: BenchCommand) -> Result<()> {
    let line = match cmd {
        BenchCommand::Rules { tool, size } => {
            let (n, e) = (size.services, size.endpoints);
            let (empty, full) = (Default::default(), compare::cluster(n, e));
            let text = match tool {
                RulesFor::Ipvsadm => ipvs_load::restore_rules(n, e),
                RulesFor::Iptables => peer_rules::iptables_restore(&empty, &full, false),
                RulesFor::Nftables => {
                    peer_rules::nft_skeleton() + &peer_rules::nft_update(&empty, &full)
                }
            };
            print!("{text}");
            return Ok(());
        }
        BenchCommand::Stall { size, batch, idle } => {
            let (n, e) = (size.services, size.endpoints);
            let r = stall::run(n, e, batch, Duration::from_secs(idle))
                .with_context(|| format!("the stall probe at {n} × {e}, batch {batch}"))?;
            let mut v = serde_json::to_value(r)?;
            v["bench"] = json!("stall");
            v
        }
        BenchCommand::IpvsLoad { method, size, dump } => {
            let (n, e) = (size.services, size.endpoints);
            let seconds = ipvs_load::load(method, n, e)
                .with_context(|| format!("loading {n} × {e} with {}", method.name()))?;
            let mut v = json!({
                "bench": "ipvs-load", "method": method.name(), "services": n,
                "endpoints": e, "seconds": seconds,
            });
            if dump {
                v["dump_1_socket_seconds"] = json!(ipvs_load::dump(n, e, 1)?);
                v["dump_4_sockets_seconds"] = json!(ipvs_load::dump(n, e, 4)?);
            }
            v
        }
        BenchCommand::Agent {
            size,
            changes,
            source,
            manifests,
            timeout,
            idle_seconds,
            churn_seconds,
            agent,
        } => {
            let (n, e) = (size.services, size.endpoints);
            let src = match source {
                SourceKind::Manifests => {
                    agent_sync::write_manifests(&manifests, n, e)
                        .with_context(|| format!("writing manifests to {}", manifests.display()))?;
                    agent_sync::Source::Manifests(&manifests)
                }
                SourceKind::Api => agent_sync::Source::Api,
            };
            let exe = agent_binary(agent);
            let timeout = Duration::from_secs(timeout);
            let phases = agent_sync::Phases {
                changes,
                idle: Duration::from_secs(idle_seconds),
                churn: Duration::from_secs(churn_seconds),
            };
            let r = match agent_sync::run_agent(&exe, src, n, e, phases, timeout) {
                Ok(r) => r,
                Err(err) => {
                    // One line the driver can show in its table.
                    let timeout = matches!(err, kipvs_benches::BenchError::Timeout(_));
                    println!(
                        "{}",
                        json!({"bench": "agent", "services": n, "endpoints": e,
                               "error": err.to_string(), "timeout": timeout})
                    );
                    return Err(err).with_context(|| format!("the agent at {n} × {e}"));
                }
            };
            json!({
                "bench": "agent", "services": n, "endpoints": e,
                "source": format!("{source:?}").to_lowercase(),
                "converge_seconds": r.converge_secs, "converge_messages": r.converge_messages,
                "converge_nft_elements": r.converge_nft.elements,
                "converge_nft_seconds": r.converge_nft.secs,
                "change_seconds": r.changes.iter().map(|c| c.secs).collect::<Vec<_>>(),
                "change_messages": r.changes.iter().map(|c| c.messages).collect::<Vec<_>>(),
                "change_nft_elements": r.changes.iter().map(|c| c.nft.elements).collect::<Vec<_>>(),
                "change_nft_seconds": r.changes.iter().map(|c| c.nft.secs).collect::<Vec<_>>(),
                "rss_kib": r.rss_kib, "hwm_kib": r.hwm_kib,
                "idle_seconds": r.idle.as_ref().map(|i| i.seconds),
                "idle_cpu_percent": r.idle.as_ref().map(|i| i.cpu_percent),
                "idle_resyncs": r.idle.as_ref().map(|i| i.resyncs),
                "idle_rss_kib": r.idle.as_ref().map(|i| i.rss_kib),
                "churn_seconds": r.churn.as_ref().map(|c| c.seconds),
                "churn_changes": r.churn.as_ref().map(|c| c.changes),
                "churn_syncs": r.churn.as_ref().map(|c| c.syncs),
                "churn_rss_kib": r.churn.as_ref().map(|c| c.rss_kib),
                "churn_hwm_kib": r.churn.as_ref().map(|c| c.hwm_kib),
                "churn_cpu_percent": r.churn.as_ref().map(|c| c.cpu_percent),
                "services_listed_seconds": r.start.services_listed,
                "slices_listed_seconds": r.start.slices_listed,
                "first_sync_compute_seconds": r.start.compute,
                "first_sync_apply_seconds": r.start.apply,
                "first_sync_nft_seconds": r.start.nft,
                "first_sync_seconds": r.start.sync,
            })
        }
        BenchCommand::Soak {
            size,
            minutes,
            burst,
            connections,
            agent,
        } => {
            let plan = soak::SoakPlan {
                services: size.services,
                endpoints: size.endpoints,
                minutes,
                burst,
                connections,
            };
            soak::run(&agent_binary(agent), &plan)?.to_json(&plan)
        }
        BenchCommand::AgentBaseline { size } => {
            let (n, e) = (size.services, size.endpoints);
            let r = agent_sync::baseline(n, e)?;
            json!({
                "bench": "agent-baseline", "services": n, "endpoints": e,
                "load_seconds": r.load_secs, "restore_seconds": r.restore_secs,
                "addresses_seconds": r.addresses_secs, "change_seconds": r.change_secs,
            })
        }
        BenchCommand::Compare {
            backend,
            size,
            connects,
            step_timeout,
        } => {
            let plan = compare::Plan {
                backend,
                services: size.services,
                endpoints: size.endpoints,
                connects,
                step_timeout: Duration::from_secs(step_timeout),
            };
            let r = match compare::run(&plan) {
                Ok(r) => r,
                Err(err) => {
                    // One line the driver can show in its table.
                    let timeout = matches!(err, kipvs_benches::BenchError::Timeout(_));
                    println!(
                        "{}",
                        json!({"bench": "compare", "error": err.to_string(), "timeout": timeout})
                    );
                    return Err(err).with_context(|| {
                        format!("{} at {} services", backend.name(), size.services)
                    });
                }
            };
            let samples: Vec<_> = r
                .samples
                .iter()
                .map(|s| {
                    let (seconds, error) = match &s.seconds {
                        Ok(t) => (Some(*t), None),
                        Err(why) => (None, Some(why.clone())),
                    };
                    json!({"method": s.method, "scenario": s.scenario.name(),
                           "seconds": seconds, "error": error})
                })
                .collect();
            json!({
                "bench": "compare", "backend": backend.name(), "services": size.services,
                "endpoints": size.endpoints, "samples": samples,
                "connects": r.connect.map(|c| c.connects),
                "connect_p50_us": r.connect.map(|c| c.p50_us),
                "connect_p99_us": r.connect.map(|c| c.p99_us),
            })
        }
    };
    println!("{line}");
    Ok(())
}
