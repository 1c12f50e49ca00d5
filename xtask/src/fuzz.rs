//! `cargo xtask fuzz`: runs the IPVS decoder's fuzz target
//! (`crates/ipvs/fuzz`) for a bounded time with `cargo fuzz` on the stable
//! toolchain. Without a sanitizer (`--sanitizer none`: AddressSanitizer
//! needs nightly, and the decoder is safe Rust, so what the fuzzer looks
//! for is a panic); libFuzzer's coverage guidance still works. Installs
//! cargo-fuzz from crates.io when it is missing.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// The fuzz targets, with their seed corpora under `fuzz/seeds/`.
const TARGETS: &[&str] = &["decode_reply"];

pub fn run(ws: &Path, seconds: u64) -> Result<()> {
    let cargo = env!("CARGO");
    let have = Command::new(cargo)
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("xtask: installing cargo-fuzz from crates.io");
        let ok = Command::new(cargo)
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("running cargo install")?
            .success();
        if !ok {
            bail!("`cargo install cargo-fuzz` failed");
        }
    }
    let dir = ws.join("crates/ipvs/fuzz");
    for target in TARGETS {
        let corpus = dir.join("corpus").join(target);
        std::fs::create_dir_all(&corpus)?;
        let seeds = dir.join("seeds").join(target);
        let ok = Command::new(cargo)
            .args(["fuzz", "run", "--sanitizer", "none", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .current_dir(&dir)
            .status()
            .context("running cargo fuzz")?
            .success();
        if !ok {
            bail!(
                "fuzz target {target} failed: the crashing input is under {}",
                dir.join("artifacts").join(target).display()
            );
        }
    }
    Ok(())
}
