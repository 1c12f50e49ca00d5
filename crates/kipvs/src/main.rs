//! `kipvs`: the one binary, thin on purpose. `kipvs proxy` runs the agent
//! (crates/proxy); the inspection and benchmark commands come with their
//! issues. Errors become `kipvs: error: …` and exit code 1 here, at the edge.

mod agent_client;
mod bench;
mod explain;
mod proxy;

use clap::{Parser, Subcommand};

/// IPVS-based Kubernetes service proxy.
#[derive(Debug, Parser)]
#[command(name = "kipvs", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: program IPVS from Services and EndpointSlices.
    Proxy(Box<proxy::ProxyArgs>),
    /// Benchmarks against this machine's kernel (run them in the kernel
    /// lab: `cargo xtask bench`). Each prints one JSON line.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Why each endpoint of a Service is, or is not, a real server (asks
    /// the running agent).
    Explain(explain::ExplainArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Proxy(args) => proxy::run(*args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Explain(args) => explain::run(args),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "kipvs", &mut std::io::stdout());
            Ok(())
        }
    };
    if let Err(e) = result {
        eprintln!("kipvs: error: {e:#}");
        std::process::exit(1);
    }
}
