//! The comparison harness against the real kernel: every backend loads a
//! small cluster, applies the three updates, and carries TCP connects to
//! the last Service, each step verified by the harness itself (IPVS table,
//! iptables-save, nft listings); here the samples it reports are checked
//! too, and the kernel is cross-checked with the peer tools after a run.

use kipvs_benches::compare::{self, Backend, Plan, Scenario};
use std::process::Command;
use std::time::Duration;

fn sh(script: &str) -> String {
    let out = Command::new("bash").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {:?}", out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the kernel lab"]
fn every_backend_loads_updates_and_carries_connects() {
    let (n, e) = (30, 4);
    for backend in Backend::ALL {
        compare::reset().unwrap();
        let plan = Plan {
            backend,
            services: n,
            endpoints: e,
            connects: 20,
            step_timeout: Duration::from_secs(120),
        };
        let run = compare::run(&plan).unwrap_or_else(|err| panic!("{}: {err}", backend.name()));
        let methods = backend.methods();
        // One load per method and three updates per method.
        assert_eq!(run.samples.len(), methods.len() * 4, "{backend:?}");
        for m in &methods {
            for s in Scenario::ALL {
                let hits = run
                    .samples
                    .iter()
                    .filter(|x| {
                        &x.method == m
                            && x.scenario == s
                            && x.seconds.as_ref().is_ok_and(|t| *t > 0.0)
                    })
                    .count();
                assert_eq!(hits, 1, "{m} {s:?}");
            }
        }
        let connect = run
            .connect
            .expect("the load finished, so connects were timed");
        assert_eq!(connect.connects, 20);
        assert!(connect.p50_us > 0.0 && connect.p50_us <= connect.p99_us);
        // Cross-check the final state with the peer tools: N Services.
        match backend {
            Backend::Kipvs | Backend::Ipvsadm => {
                let list = sh("ipvsadm -Ln");
                assert_eq!(
                    list.lines().filter(|l| l.starts_with("TCP")).count(),
                    n as usize
                );
            }
            Backend::IptablesLegacy | Backend::IptablesNft => {
                let v = if backend == Backend::IptablesLegacy {
                    "legacy"
                } else {
                    "nft"
                };
                let save = sh(&format!("iptables-{v}-save -t nat"));
                let svc = save.lines().filter(|l| l.starts_with(":KUBE-SVC-")).count();
                let sep = save.lines().filter(|l| l.starts_with(":KUBE-SEP-")).count();
                assert_eq!((svc, sep), (n as usize, (n * e) as usize));
                assert!(save.contains("-m statistic --mode random --probability 0.25"));
            }
            Backend::Nftables => {
                let map = sh("nft list map ip kube-proxy service-ips");
                assert_eq!(map.matches(": goto ").count(), n as usize);
            }
        }
    }
    compare::reset().unwrap();
}
