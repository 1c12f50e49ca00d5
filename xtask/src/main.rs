//! `cargo xtask`: the project's automation.
//!
//! - `cargo xtask vm run [--bin PATH]… -- CMD…` boots the kernel lab and runs
//!   CMD as root inside it, exiting with CMD's status;
//! - `cargo xtask vm test [FILTER]` builds every `tests/kernel_*.rs` test of
//!   the workspace and runs them all (with `--ignored`) in one VM boot;
//! - `cargo xtask demo` shows IPVS round-robin between two namespace "pods";
//! - `cargo xtask bench [compare|ipvs|agent]` runs the lab benchmarks (see
//!   [`bench`]; the default compares kipvs with iptables and nftables);
//! - `cargo xtask soak` runs the agent through minutes of churn in the lab
//!   (see [`bench::soak`]);
//! - `cargo xtask fuzz` fuzzes the IPVS decoder for a bounded time;
//! - `cargo xtask image` writes the container image as an OCI archive (see
//!   [`image`]); `vm test` hands it to the guest when it exists;
//! - `cargo xtask ci` runs what CI runs: fmt, clippy, tests, fuzzing, the
//!   image, kernel tests.
//!
//! The lab itself is described in [`lab`].

mod bench;
mod cpio;
mod fuzz;
mod image;
mod lab;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lab::{Job, Lab};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "kipvs project automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The kernel lab: a Debian kernel with IPVS under QEMU.
    Vm {
        #[command(subcommand)]
        command: VmCmd,
    },
    /// Boot the lab and show IPVS balancing real HTTP requests.
    Demo,
    /// Run a benchmark in the lab, a fresh VM per measurement; write
    /// benches/results/.
    Bench(bench::BenchOpts),
    /// The soak run in the lab (booted softlockup_panic=1): the agent on the
    /// fake API server through minutes of churn; writes
    /// benches/results/soak.md.
    Soak(bench::SoakOpts),
    /// Fuzz the IPVS decoder (cargo fuzz, stable, no sanitizer).
    Fuzz {
        /// How long to fuzz each target, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Build the container image with no registry and no network: an OCI
    /// archive (plus docker's manifest.json) at
    /// <target>/kipvs-image-<version>.tar.
    Image,
    /// Everything CI checks: fmt, clippy, host tests, fuzzing, the image,
    /// kernel tests.
    Ci,
}

#[derive(Debug, Subcommand)]
enum VmCmd {
    /// Run one command as root in a fresh VM; exit with its status.
    Run {
        /// A host binary to copy into the guest's /usr/local/bin (repeatable).
        #[arg(long = "bin", value_name = "PATH")]
        bins: Vec<PathBuf>,
        #[command(flatten)]
        vm: VmOpts,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Build the workspace's kernel tests and run them all in one VM boot.
    Test {
        #[command(flatten)]
        vm: VmOpts,
        /// Passed to every test binary, like `cargo test FILTER`.
        filter: Option<String>,
    },
    /// Install tools, download the kernel, build the base initramfs.
    Prepare,
}

/// The VM's default wall-clock limit (`vm run`, `vm test`), and CI's.
const VM_TEST_TIMEOUT_SECS: u64 = 1500;

#[derive(Debug, clap::Args)]
struct VmOpts {
    /// Wall-clock limit for the VM, boot included, in seconds (one boot of
    /// every kernel test takes ~800 s on 2 uncontended cores; CI passes the
    /// same limit).
    #[arg(long, default_value_t = VM_TEST_TIMEOUT_SECS)]
    timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 4096)]
    memory: u32,
    /// Extra kernel command-line arguments (e.g. `preempt=none`).
    #[arg(long, default_value = "")]
    kernel_args: String,
}

impl VmOpts {
    fn job(&self, files: Vec<(PathBuf, PathBuf)>, script: String) -> Job {
        Job {
            files,
            script,
            timeout: Duration::from_secs(self.timeout),
            memory_mib: self.memory,
            kernel_args: self.kernel_args.clone(),
        }
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    let ws = workspace_root();
    match cli.command {
        Cmd::Vm {
            command: VmCmd::Prepare,
        } => {
            Lab::prepare(&ws)?;
            Ok(0)
        }
        Cmd::Vm {
            command: VmCmd::Run { bins, vm, command },
        } => {
            let lab = Lab::prepare(&ws)?;
            let mut files = Vec::new();
            for b in bins {
                let name = b.file_name().context("--bin needs a file path")?;
                files.push((Path::new("/usr/local/bin").join(name), b.clone()));
            }
            let script = format!(
                "exec {}\n",
                command
                    .iter()
                    .map(|a| shell_quote(a))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let out = lab.run(&vm.job(files, script))?;
            eprintln!(
                "lab: /init after {:.1}s, command started after {:.1}s",
                secs(out.boot),
                secs(out.ready)
            );
            Ok(out.exit_code)
        }
        Cmd::Vm {
            command: VmCmd::Test { vm, filter },
        } => vm_test(&ws, &vm, filter.as_deref()),
        Cmd::Demo => demo(&ws),
        Cmd::Bench(opts) => bench::run(&ws, opts).map(|()| 0),
        Cmd::Soak(opts) => bench::soak(&ws, &opts).map(|()| 0),
        Cmd::Fuzz { seconds } => fuzz::run(&ws, seconds).map(|()| 0),
        Cmd::Image => bench::build_release(&ws)
            .and_then(|kipvs| image(&ws, &kipvs))
            .map(|()| 0),
        Cmd::Ci => ci(&ws),
    }
}

fn image(ws: &Path, kipvs: &Path) -> Result<()> {
    let built = image::build(ws, kipvs)?;
    println!("{}", built.path.display());
    eprintln!(
        "image: {}:{} ({:.1} MiB), manifest {}",
        image::REPOSITORY,
        image::VERSION,
        built.size as f64 / (1024.0 * 1024.0),
        built.digest
    );
    eprintln!(
        "  podman load -i {0}\n  skopeo copy oci-archive:{0} docker://{1}:{2}",
        built.path.display(),
        image::REPOSITORY,
        image::VERSION
    );
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A kernel test binary: the test target's name, its crate and executable.
struct KernelTest {
    package: String,
    name: String,
    exe: PathBuf,
}

/// Builds the workspace's binaries and tests, returning the kernel tests and
/// the binaries (which the guest gets at their host paths, so
/// `env!("CARGO_BIN_EXE_…")` works inside).
fn build_for_lab(ws: &Path) -> Result<(Vec<KernelTest>, Vec<PathBuf>)> {
    build(
        ws,
        &[
            &["build", "--workspace", "--bins"],
            &["test", "--workspace", "--no-run"],
        ],
    )
}

/// Builds only the workspace's binaries.
fn build_bins(ws: &Path) -> Result<(Vec<KernelTest>, Vec<PathBuf>)> {
    build(ws, &[&["build", "--workspace", "--bins"]])
}

fn build(ws: &Path, commands: &[&[&str]]) -> Result<(Vec<KernelTest>, Vec<PathBuf>)> {
    let mut tests = Vec::new();
    let mut bins = Vec::new();
    for &args in commands {
        let out = Command::new(env!("CARGO"))
            .args(args)
            .arg("--message-format=json-render-diagnostics")
            .current_dir(ws)
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running cargo")?;
        if !out.status.success() {
            bail!("`cargo {}` failed", args.join(" "));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if msg["reason"] != "compiler-artifact" {
                continue;
            }
            let Some(exe) = msg["executable"].as_str() else {
                continue;
            };
            let kind = &msg["target"]["kind"][0];
            let name = msg["target"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let test = msg["profile"]["test"].as_bool().unwrap_or(false);
            if kind == "bin" && !test {
                bins.push(PathBuf::from(exe));
            } else if kind == "test" && name.starts_with("kernel_") {
                let package = msg["package_id"].as_str().unwrap_or_default();
                let package = package_name(package);
                tests.push(KernelTest {
                    package,
                    name,
                    exe: PathBuf::from(exe),
                });
            }
        }
    }
    // `kernel_faults` first: its first test needs a kernel where nothing
    // loaded IPVS, dummy or nf_tables yet (the lab preloads no module).
    tests.sort_by_key(|t| (t.name != "kernel_faults", t.package.clone(), t.name.clone()));
    bins.sort();
    bins.dedup();
    Ok((tests, bins))
}

/// The package name in a cargo package id: `path+file:///w/crates/ipvs#kipvs-ipvs@0.1.0`
/// → `kipvs-ipvs`; `path+file:///w/xtask#0.1.0` → `xtask` (the name is left
/// out when it equals the directory's).
fn package_name(id: &str) -> String {
    let (path, fragment) = id.rsplit_once('#').unwrap_or((id, ""));
    match fragment.split_once('@') {
        Some((name, _)) => name.to_owned(),
        None => path.rsplit('/').next().unwrap_or(path).to_owned(),
    }
}

/// Where `vm test` puts the image archive in the guest (`$KIPVS_IMAGE`).
const IMAGE_IN_GUEST: &str = "/images/kipvs.tar";

/// The kernel tests that need a VM booted with IPv6 disabled
/// (`ipv6.disable=1`), as a node can be.
const NO_IPV6_TESTS: &str = "kernel_no_ipv6";

fn vm_test(ws: &Path, vm: &VmOpts, filter: Option<&str>) -> Result<i32> {
    let lab = Lab::prepare(ws)?;
    let (tests, bins) = build_for_lab(ws)?;
    if tests.is_empty() {
        bail!("no kernel tests found (tests/kernel_*.rs in any workspace crate)");
    }
    let (no_ipv6, normal): (Vec<KernelTest>, Vec<KernelTest>) =
        tests.into_iter().partition(|t| t.name == NO_IPV6_TESTS);
    let image = image::archive_path(ws);
    let image = image.is_file().then_some(image.as_path());
    match image {
        Some(p) => eprintln!("lab: the image tests get {}", p.display()),
        None => eprintln!(
            "lab: no {} (`cargo xtask image` writes it): the image tests will skip",
            image::archive_path(ws).display()
        ),
    }
    let mut ok = true;
    for (group, kernel_args) in [(normal, ""), (no_ipv6, "ipv6.disable=1")] {
        if !group.is_empty() {
            ok &= run_in_vm(&lab, vm, &group, &bins, filter, kernel_args, image)?;
        }
    }
    if !ok {
        bail!("kernel tests failed in the lab");
    }
    Ok(0)
}

/// The workspace binaries kernel tests run.
const LAB_TEST_BINS: &[&str] = &["kipvs"];

/// Runs `tests` in one VM booted with `kernel_args`; whether all passed.
fn run_in_vm(
    lab: &Lab,
    vm: &VmOpts,
    tests: &[KernelTest],
    bins: &[PathBuf],
    filter: Option<&str>,
    kernel_args: &str,
    image: Option<&Path>,
) -> Result<bool> {
    // Only the binaries the kernel tests run (`CARGO_BIN_EXE_kipvs`): the
    // guest's root is in RAM, and the benchmark binaries are 200+ MB each.
    let mut files: Vec<(PathBuf, PathBuf)> = bins
        .iter()
        .filter(|b| {
            b.file_name()
                .is_some_and(|n| LAB_TEST_BINS.iter().any(|t| n == *t))
        })
        .map(|b| (b.clone(), b.clone()))
        .collect();
    let mut script = String::from("failed=0\nmkdir -p /tmp/kt && cd /tmp/kt\n");
    // The image's archive, when `cargo xtask image` wrote one, for the tests
    // that run it (they skip without it).
    if let Some(image) = image {
        let guest = PathBuf::from(IMAGE_IN_GUEST);
        script.push_str(&format!("export KIPVS_IMAGE={}\n", guest.display()));
        files.push((guest, image.to_path_buf()));
    }
    let filter = filter.map(shell_quote).unwrap_or_default();
    for t in tests {
        files.push((t.exe.clone(), t.exe.clone()));
        script.push_str(&format!(
            "echo; echo '     Running {pkg} tests/{name}.rs ({exe}) in the lab {kernel_args}'\n\
             {exe} --ignored --test-threads=1 {filter} || {{ failed=$((failed+1)); echo 'lab: {pkg}/{name} FAILED'; }}\n",
            pkg = t.package,
            name = t.name,
            exe = t.exe.display(),
        ));
    }
    script.push_str(&format!(
        "echo; echo \"lab: {} kernel test binaries ran, $failed failed\"\n[ $failed -eq 0 ]\n",
        tests.len()
    ));
    let mut job = vm.job(files, script);
    job.kernel_args = format!("{} {kernel_args}", vm.kernel_args)
        .trim()
        .to_owned();
    let out = lab.run(&job)?;
    eprintln!(
        "lab: /init after {:.1}s, tests started after {:.1}s",
        secs(out.boot),
        secs(out.ready)
    );
    Ok(out.exit_code == 0)
}

fn demo(ws: &Path) -> Result<i32> {
    let lab = Lab::prepare(ws)?;
    let (_, bins) = build_bins(ws)?;
    let kipvs = bins
        .iter()
        .find(|b| b.file_name().is_some_and(|n| n == "kipvs"))
        .context("cargo built no kipvs binary")?;
    let out = lab.run(&Job {
        files: vec![
            (PathBuf::from("/usr/local/bin/kipvs"), kipvs.clone()),
            (
                PathBuf::from("/payload/manifests/hostnames.yaml"),
                ws.join("deploy/examples/hostnames.yaml"),
            ),
        ],
        script: include_str!("demo.sh").to_owned(),
        timeout: Duration::from_secs(300),
        memory_mib: 1024,
        kernel_args: String::new(),
    })?;
    if out.exit_code != 0 {
        bail!("the demo failed in the lab (exit {})", out.exit_code);
    }
    Ok(0)
}

fn ci(ws: &Path) -> Result<i32> {
    let cargo = env!("CARGO");
    let stages: [(&str, Vec<&str>); 6] = [
        ("fmt", vec![cargo, "fmt", "--all", "--check"]),
        (
            "clippy",
            vec![
                cargo,
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ("test", vec![cargo, "test", "--workspace"]),
        ("fuzz", vec![]),
        ("image", vec![]),
        ("kernel tests", vec![]),
    ];
    let mut timings = Vec::new();
    let mut result = Ok(0);
    for (name, argv) in stages {
        eprintln!("\n==> ci: {name}");
        let start = Instant::now();
        let ok = if name == "fuzz" {
            fuzz::run(ws, 60).map(|()| true)
        } else if name == "image" {
            // Around the dev build the kernel tests run next (built once,
            // here): this stage checks the image is assembled and the lab
            // that it runs. A release build would cost CI 7-9 minutes for
            // the same check; `cargo xtask image` ships the release build.
            build_bins(ws)
                .and_then(|(_, bins)| bench::find_bin(bins, "kipvs"))
                .and_then(|kipvs| image(ws, &kipvs))
                .map(|()| true)
        } else if argv.is_empty() {
            vm_test(
                ws,
                &VmOpts {
                    timeout: VM_TEST_TIMEOUT_SECS,
                    memory: 4096,
                    kernel_args: String::new(),
                },
                None,
            )
            .map(|_| true)
        } else {
            Command::new(argv[0])
                .args(&argv[1..])
                .current_dir(ws)
                .status()
                .map(|s| s.success())
                .map_err(Into::into)
        };
        timings.push((name, start.elapsed()));
        match ok {
            Ok(true) => {}
            Ok(false) => {
                result = Err(anyhow::anyhow!("ci stage `{name}` failed"));
                break;
            }
            Err(e) => {
                result = Err(e.context(format!("ci stage `{name}` failed")));
                break;
            }
        }
    }
    eprintln!("\n==> ci: timings");
    for (name, t) in &timings {
        eprintln!("  {name:<14} {:>7.1}s", secs(*t));
    }
    eprintln!(
        "  {:<14} {:>7.1}s",
        "total",
        timings.iter().map(|(_, t)| secs(*t)).sum::<f64>()
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_from_cargo_ids() {
        assert_eq!(
            package_name("path+file:///w/crates/ipvs#kipvs-ipvs@0.1.0"),
            "kipvs-ipvs"
        );
        assert_eq!(package_name("path+file:///w/xtask#0.1.0"), "xtask");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("ipvsadm"), "ipvsadm");
        assert_eq!(shell_quote("exit 7"), "'exit 7'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
