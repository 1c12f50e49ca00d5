//! `kipvs`: the one binary, thin on purpose. `kipvs proxy` runs the agent
//! (crates/proxy); `list`, `save`, `restore` and `conns` read and write the
//! kernel in ipvsadm's formats (crates/ipvs); `explain` asks the agent.
//! The lab benchmarks are another binary, `kipvs-bench` (benches/), so
//! this one links no benchmark or test server. Errors, argument errors
//! included, become `kipvs: error: …` and exit code 1 here, at the edge;
//! `--help` and `--version` exit 0.

mod agent_client;
mod explain;
mod inspect;
mod json;
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
    /// Run the agent: program IPVS from Services and EndpointSlices. Takes
    /// kube-proxy's command line (docs/flags.md).
    #[command(version, display_name = "kipvs")]
    Proxy(Box<proxy::ProxyArgs>),
    /// The IPVS table in `ipvsadm -Ln` layout, with the Kubernetes Service
    /// of each virtual server when the agent answers.
    List(inspect::ListArgs),
    /// The IPVS table as rules, byte for byte what `ipvsadm -S -n` prints.
    Save(inspect::SaveArgs),
    /// Apply rules as `ipvsadm -S`/`kipvs save` write them, as one batch;
    /// a bad line is reported with its number and nothing is applied.
    Restore(inspect::RestoreArgs),
    /// The IPVS connection table, like `ipvsadm -Lcn`.
    Conns(inspect::ConnsArgs),
    /// Why each endpoint of a Service is, or is not, a real server (asks
    /// the running agent).
    Explain(explain::ExplainArgs),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Parses the command line. Help and version print and exit 0; any other
/// error prints `kipvs: error: …` (clap's message and its usage lines) and
/// exits 1, like every other kipvs error.
fn parse() -> Cli {
    use clap::error::ErrorKind;
    let args = proxy::normalize_args(std::env::args_os().collect());
    let e = match Cli::try_parse_from(args) {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            std::process::exit(0);
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprint!("kipvs: error: a command is required\n\n{}", e.render());
        }
        _ => eprint!("kipvs: {}", error_text(&e.render().to_string())),
    }
    std::process::exit(1);
}

/// clap's rendered error with its own `error: ` prefix replaced by kipvs's.
fn error_text(rendered: &str) -> String {
    let body = rendered.strip_prefix("error: ").unwrap_or(rendered);
    let mut out = format!("error: {body}");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

fn main() {
    let cli = parse();
    let result = match cli.command {
        Command::Proxy(args) => proxy::run(*args),
        Command::Explain(args) => explain::run(args),
        Command::List(args) => inspect::list(args),
        Command::Save(args) => inspect::save(args),
        Command::Restore(args) => inspect::restore(args),
        Command::Conns(args) => inspect::conns(args),
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
