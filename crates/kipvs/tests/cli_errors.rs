//! Exit codes and error messages of the real binary on the host: 0 for
//! help and version, 1 with `kipvs: error: …` for everything else, argument
//! errors included. The IPVS case needs a kernel without IPVS, which this
//! development machine is (it has no loadable modules); where IPVS is
//! there, that test says so and checks nothing.

use std::process::{Command, Output};

fn kipvs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kipvs"))
        .args(args)
        .env("COLUMNS", "100")
        .output()
        .expect("kipvs runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_and_version_exit_0_on_stdout() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["--version"],
        &["list", "--help"],
        &["help", "list"],
    ] {
        let o = kipvs(args);
        assert_eq!(o.status.code(), Some(0), "kipvs {args:?}: {}", stderr(&o));
        assert!(!o.stdout.is_empty(), "kipvs {args:?} prints on stdout");
        assert!(o.stderr.is_empty(), "kipvs {args:?}: {}", stderr(&o));
    }
    let v = kipvs(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&v.stdout),
        format!("kipvs {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn an_unknown_flag_exits_1_with_kipvs_error_and_clap_usage() {
    let o = kipvs(&["list", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty());
    let e = stderr(&o);
    assert!(
        e.starts_with("kipvs: error: unexpected argument '--no-such-flag' found"),
        "{e}"
    );
    assert!(!e.contains("kipvs: error: error:"), "{e}");
    assert!(e.contains("Usage: kipvs list [OPTIONS]"), "{e}");
    assert!(e.contains("For more information, try '--help'."), "{e}");
    assert!(e.ends_with('\n'), "{e:?}");
    // ANSI colours never reach a pipe.
    assert!(!e.contains('\x1b'), "{e:?}");
}

#[test]
fn a_bad_service_address_exits_1_naming_the_value() {
    let o = kipvs(&["list", "-t", "10.96.0.10"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.starts_with(
            "kipvs: error: invalid value '10.96.0.10' for '--tcp-service <ADDR:PORT>': \
             invalid socket address syntax"
        ),
        "{e}"
    );
    assert!(e.contains("For more information, try '--help'."), "{e}");
}

#[test]
fn a_missing_or_unknown_subcommand_exits_1() {
    for args in [&[][..], &["frobnicate"]] {
        let o = kipvs(args);
        assert_eq!(o.status.code(), Some(1), "kipvs {args:?}: {}", stderr(&o));
        assert!(stderr(&o).starts_with("kipvs: error: "), "{}", stderr(&o));
    }
}

#[test]
fn without_ipvs_list_and_save_exit_1_with_the_clients_message() {
    if std::path::Path::new("/proc/net/ip_vs").exists() {
        eprintln!("skipped: this kernel has IPVS (/proc/net/ip_vs exists)");
        return;
    }
    let want = format!("kipvs: error: {}\n", kipvs_ipvs::Error::IpvsUnavailable);
    assert_eq!(
        want,
        "kipvs: error: the IPVS netlink family is not registered and ip_vs could not be loaded\n"
    );
    for args in [&["list"][..], &["list", "--json"], &["save"]] {
        let o = kipvs(args);
        assert_eq!(o.status.code(), Some(1), "kipvs {args:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "kipvs {args:?}");
        assert_eq!(stderr(&o), want, "kipvs {args:?}");
    }
    let o = kipvs(&["conns"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "kipvs: error: /proc/net/ip_vs_conn does not exist: IPVS is not loaded in this kernel\n"
    );
}
