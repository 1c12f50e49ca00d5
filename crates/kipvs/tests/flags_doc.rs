//! `docs/flags.md` and the binary agree: every flag row is run with its
//! example and does what the row says (implemented and kipvs's own: exit 0,
//! no warning; warned: exit 0, a warning naming the flag; refused: exit 1),
//! every flag of `kipvs proxy --help` has a row, and every field row is
//! what the configuration reader applies (implemented) or warns about.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A table row: its cells, without the backticks.
struct Row {
    cells: Vec<String>,
}

fn rows(section: &str) -> Vec<Row> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/flags.md"))
            .expect("docs/flags.md");
    let start = doc
        .find(&format!("## {section}"))
        .unwrap_or_else(|| panic!("no section {section}"));
    let body = &doc[start + 3..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    body.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| Row {
            cells: l
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_string())
                .collect(),
        })
        .collect()
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kipvs-flags-doc-{}-{name}", std::process::id()))
}

fn kipvs(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kipvs"))
        .args(args)
        .env("COLUMNS", "100")
        .env_remove("RUST_LOG")
        .output()
        .expect("kipvs runs")
}

/// The flags `kipvs proxy --help` lists.
fn help_flags() -> BTreeSet<String> {
    let out = kipvs(&["proxy".into(), "--help".into()]);
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix("-v, ")
                .or_else(|| l.strip_prefix("-h, "))
                .unwrap_or(l);
            let l = l.strip_prefix("-V, ").unwrap_or(l);
            l.starts_with("--")
                .then(|| l.split([' ', '[', '=']).next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn every_flag_row_does_what_it_says_and_every_flag_has_a_row() {
    let config = tmp("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n",
    )
    .unwrap();
    let out = tmp("out.yaml");
    let mut documented = BTreeSet::new();
    let mut counts = std::collections::BTreeMap::new();
    for section in ["kube-proxy's flags", "kipvs's own flags"] {
        for row in rows(section) {
            let [flag, example, _field, kind, why] = &row.cells[..] else {
                panic!(
                    "{section}: a row of {} cells: {:?}",
                    row.cells.len(),
                    row.cells
                );
            };
            assert!(!why.is_empty(), "{flag}: say why");
            documented.insert(flag.clone());
            *counts.entry((section, kind.clone())).or_insert(0) += 1;
            if flag == "--help" || flag == "--version" {
                let o = kipvs(&["proxy".into(), flag.clone()]);
                assert_eq!(o.status.code(), Some(0), "{flag}");
                assert!(!o.stdout.is_empty(), "{flag}");
                continue;
            }
            let example = example
                .replace("{config}", &config.display().to_string())
                .replace("{out}", &out.display().to_string());
            let mut args = vec!["proxy".to_string()];
            if flag != "--write-config-to" {
                args.push(format!("--write-config-to={}", out.display()));
            }
            if flag != "--hostname-override" {
                args.push("--hostname-override=n".into());
            }
            args.push(if example.is_empty() {
                flag.clone()
            } else {
                format!("{flag}={example}")
            });
            let _ = std::fs::remove_file(&out);
            let o = kipvs(&args);
            let stderr = String::from_utf8_lossy(&o.stderr);
            let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
            match kind.as_str() {
                "implemented" | "kipvs" => {
                    assert_eq!(o.status.code(), Some(0), "{args:?}: {stderr}");
                    assert!(warnings.is_empty(), "{args:?} warns: {stderr}");
                    assert!(out.exists(), "{args:?} wrote no configuration: {stderr}");
                }
                "warned" => {
                    assert_eq!(o.status.code(), Some(0), "{args:?}: {stderr}");
                    assert!(
                        warnings
                            .iter()
                            .any(|w| w.contains(&format!("{flag},")) || w.ends_with(flag.as_str())),
                        "{args:?} does not warn about {flag}: {stderr}"
                    );
                }
                "refused" => {
                    assert_eq!(o.status.code(), Some(1), "{args:?}: {stderr}");
                    assert!(stderr.contains("kipvs: error:"), "{args:?}: {stderr}");
                }
                other => panic!("{flag}: `{other}` is not implemented, warned, refused or kipvs"),
            }
        }
    }
    let help = help_flags();
    let missing: Vec<&String> = help.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "flags of --help without a row: {missing:?}"
    );
    // The other way: a row for a flag --help does not list is a hidden one.
    let hidden: Vec<&String> = documented.difference(&help).collect();
    assert_eq!(hidden, vec!["--log-format"], "rows for flags --help lacks");
    // kube-proxy 1.36's flags: 55 in its --help (and --help, --version), and
    // the two hidden deprecated ports.
    let kube_proxy: usize = counts
        .iter()
        .filter(|((s, _), _)| *s == "kube-proxy's flags")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(kube_proxy, 57 + 2, "{counts:?}");
    let _ = std::fs::remove_file(config);
    let _ = std::fs::remove_file(out);
}

#[test]
fn every_field_row_is_what_the_reader_does() {
    let mut documented = BTreeSet::new();
    for row in rows("Configuration fields") {
        let [field, kind, why] = &row.cells[..] else {
            panic!("a row of {} cells: {:?}", row.cells.len(), row.cells);
        };
        assert!(!why.is_empty(), "{field}: say why");
        assert!(
            kipvs_proxy::config::FIELDS.contains(&field.as_str()),
            "{field} is no field of KubeProxyConfiguration"
        );
        assert!(documented.insert(field.clone()), "{field} twice");
        let applied = kipvs_proxy::config::APPLIED.contains(&field.as_str());
        match kind.as_str() {
            "implemented" => assert!(applied, "{field} is documented implemented but not applied"),
            "warned" => assert!(!applied, "{field} is documented warned but applied"),
            other => panic!("{field}: `{other}`"),
        }
    }
    let all: BTreeSet<String> = kipvs_proxy::config::FIELDS
        .iter()
        .map(|f| f.to_string())
        .collect();
    let missing: Vec<&String> = all.difference(&documented).collect();
    assert!(missing.is_empty(), "fields without a row: {missing:?}");
}
