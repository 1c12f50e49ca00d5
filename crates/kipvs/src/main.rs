//! `kipvs`: the one binary. `kipvs proxy` runs the agent, `kipvs list|save`
//! inspect the kernel's IPVS table, `kipvs bench` measures rule updates.

use clap::Parser;

/// IPVS-based Kubernetes service proxy.
#[derive(Debug, Parser)]
#[command(name = "kipvs", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
