//! `kipvs-heap`: the agent's heap after converging on N Services × E
//! endpoints from the fake API server, under dhat's allocator (see
//! `kipvs_benches::heap`). Runs on the host, no kernel needed:
//!
//! ```text
//! cargo run --release -p kipvs-benches --bin kipvs-heap -- --services 10000 \
//!     --write benches/results/heap.md
//! ```
//!
//! Prints the breakdown as markdown; dhat's own profile goes to
//! `--profile` (open it in dhat's viewer, `dh_view.html`).

use clap::Parser;
use kipvs_benches::heap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 10_000)]
    services: u32,
    #[arg(long, default_value_t = 10)]
    endpoints: u32,
    /// Where dhat writes its profile.
    #[arg(long, default_value = "dhat-heap.json")]
    profile: PathBuf,
    /// Also write the breakdown here.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Rows of the breakdown.
    #[arg(long, default_value_t = 25)]
    rows: usize,
    /// Serve the synthetic cluster from the fake API server instead (the
    /// child process the profiled one talks to).
    #[arg(long, hide = true)]
    serve: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if cli.serve {
        heap::serve(cli.services, cli.endpoints)?;
        return Ok(());
    }
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .args(["--serve", "--services", &cli.services.to_string()])
        .args(["--endpoints", &cli.endpoints.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut url = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().expect("piped")),
        &mut url,
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Whole stacks: the kipvs frame that keeps an object is often deep.
    let profiler = dhat::Profiler::builder()
        .file_name(&cli.profile)
        .trim_backtraces(None)
        .build();
    let seconds = heap::converge(&rt, url.trim(), cli.services, Duration::from_secs(1800))?;
    // Let the sync that asked for the last virtual server finish.
    std::thread::sleep(Duration::from_secs(2));
    let stats = dhat::HeapStats::get();
    drop(profiler);
    let _ = server.kill();
    let profile: serde_json::Value = serde_json::from_slice(&std::fs::read(&cli.profile)?)?;
    let rows = heap::breakdown(&profile);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut md = format!(
        "# The agent's heap at {} Services × {} endpoints\n\n\
         `kipvs-heap` (benches/src/bin/kipvs-heap.rs): kube's watchers on the fake API server \
         (real HTTP list/watch, served from a child process), the agent's source, mailbox and \
         sync thread, with a data plane that keeps nothing, under dhat's allocator. Converged \
         in {seconds:.1} s (dhat slows every allocation). Live heap after converging: \
         **{:.1} MiB** in {} blocks; the peak was {:.1} MiB.\n\n\
         Each row is the innermost kipvs frame (file, line, function) on the stacks of live \
         allocations; `[no kipvs frame]` is memory kube, hyper, tokio and the standard library \
         hold on their own.\n\n\
         | live MiB | blocks | allocated in |\n|---:|---:|---|\n",
        cli.services,
        cli.endpoints,
        mib(stats.curr_bytes as u64),
        stats.curr_blocks,
        mib(stats.max_bytes as u64),
    );
    for (label, bytes, blocks) in rows.iter().take(cli.rows) {
        let _ = writeln!(md, "| {:.1} | {blocks} | `{label}` |", mib(*bytes));
    }
    let rest: u64 = rows.iter().skip(cli.rows).map(|r| r.1).sum();
    let _ = writeln!(
        md,
        "| {:.1} | | everything else ({} sites) |",
        mib(rest),
        rows.len().saturating_sub(cli.rows)
    );
    print!("{md}");
    if let Some(path) = &cli.write {
        std::fs::write(path, &md)?;
    }
    std::process::exit(0);
}
