//! Snapshot tests of the command line's help: an interface change shows up
//! as a diff of `tests/snapshots/` to review. `UPDATE_SNAPSHOTS=1 cargo test
//! -p kipvs --test help` rewrites them.

use std::path::Path;
use std::process::Command;

fn check(name: &str, args: &[&str]) {
    check_file(&format!("{name}.txt"), args);
}

fn check_file(file: &str, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_kipvs"))
        .args(args)
        .env("COLUMNS", "100")
        .output()
        .expect("kipvs runs");
    assert!(out.status.success(), "kipvs {args:?} failed");
    let got = String::from_utf8(out.stdout).expect("utf-8");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/snapshots/{file}"));
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "no snapshot {}: run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        got,
        want,
        "`kipvs {}` changed; review, then UPDATE_SNAPSHOTS=1",
        args.join(" ")
    );
}

#[test]
fn help_texts_are_reviewed() {
    check("help", &["--help"]);
    for cmd in [
        "proxy",
        "list",
        "save",
        "restore",
        "conns",
        "explain",
        "completions",
    ] {
        check(&format!("help-{cmd}"), &[cmd, "--help"]);
    }
}

/// `kipvs conns --json` is an interface too (docs/json.md): the binary
/// reads a captured `/proc/net/ip_vs_conn` (v4, v6, a firewall-mark
/// template, a SIP persistence engine's data).
#[test]
fn conns_json_is_reviewed() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ip_vs_conn");
    check_file(
        "conns.json",
        &["conns", "--json", "--proc-file", fixture.to_str().unwrap()],
    );
}
