//! Every scheduler and flag combination against the real kernel through
//! crates/ipvs, read back with ipvsadm; and scheduling behaviour with real
//! traffic (a client namespace, three real-server namespaces answering their
//! own name). Run by `cargo xtask vm test`; ignored on the host.

use kipvs_ipvs::{Client, Destination, Error, Forward, Op, Service, ServiceFlags, ServiceKey};
use kipvs_sched::{Drain, SchedFlag, Scheduler, SchedulerConfig};
use std::net::Ipv4Addr;
use std::process::Command;

fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "`{cmd}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn try_sh(cmd: &str) -> (bool, String) {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .output()
        .expect("bash runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

fn running_kernel() -> (u32, u32) {
    let r = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut p = r
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap());
    (p.next().unwrap(), p.next().unwrap())
}

fn vip(port: u16) -> ServiceKey {
    ServiceKey::tcp(Ipv4Addr::new(10, 96, 3, 1), port)
}

/// Every configuration worth checking: each scheduler with its defaults,
/// and every valid flag combination of sh and mh.
fn configs() -> Vec<SchedulerConfig> {
    let mut v: Vec<SchedulerConfig> = Scheduler::ALL
        .iter()
        .map(|s| SchedulerConfig::new(*s, &[]).unwrap())
        .collect();
    for flags in [
        &[SchedFlag::ShFallback][..],
        &[SchedFlag::ShPort],
        &[SchedFlag::ShFallback, SchedFlag::ShPort],
        &[SchedFlag::MhFallback],
        &[SchedFlag::MhPort],
        &[SchedFlag::MhFallback, SchedFlag::MhPort],
    ] {
        v.push(SchedulerConfig::new(flags[0].scheduler(), flags).unwrap());
    }
    v.push(SchedulerConfig::from_annotations("mh", Some("")).unwrap()); // mh with no flags
    v
}

#[test]
#[ignore = "needs the kernel lab"]
fn every_scheduler_and_flag_combination_is_accepted_and_read_back() {
    sh("ipvsadm -C");
    let mut ipvs = Client::new().unwrap();
    let kernel = running_kernel();
    for (i, cfg) in configs().into_iter().enumerate() {
        let key = vip(1000 + i as u16);
        let svc = Service::new(key, cfg.scheduler().name())
            .with_flags(ServiceFlags::from_bits(cfg.flag_bits()));
        let result = ipvs.add_service(&svc);
        if cfg.scheduler().since_kernel() > kernel {
            match result {
                Err(Error::SchedulerUnavailable { module, .. }) => {
                    assert!(module.contains(&cfg.scheduler().module()), "{module}")
                }
                other => {
                    panic!("{cfg} on {kernel:?}: expected SchedulerUnavailable, got {other:?}")
                }
            }
            continue;
        }
        result.unwrap_or_else(|e| panic!("{cfg}: {e}"));
        // ipvsadm prints what the kernel holds, as kipvs spells it.
        let line = sh(&format!(
            "ipvsadm -S -n | grep -- '-A -t 10.96.3.1:{}'",
            1000 + i
        ));
        let flags = cfg.flags_string();
        let want = if flags.is_empty() {
            format!("-A -t 10.96.3.1:{} -s {}", 1000 + i, cfg.scheduler())
        } else {
            format!(
                "-A -t 10.96.3.1:{} -s {} -b {flags}",
                1000 + i,
                cfg.scheduler()
            )
        };
        assert_eq!(line.trim(), want);
        // crates/ipvs reads back the same configuration.
        let back = ipvs.service(&key).unwrap().service;
        assert_eq!(
            SchedulerConfig::from_kernel(&back.scheduler, back.flags.bits()).unwrap(),
            cfg
        );
    }
    sh("ipvsadm -C");
}

/// Removes every network namespace with the processes that keep it alive
/// (`ip netns delete` alone leaves a namespace, and its veths, while a
/// process still runs in it), and every `h-*` veth end left behind.
const CLEAN_NETNS: &str = "for ns in $(ip netns list | cut -d' ' -f1); do \
    ip netns pids $ns | xargs -r kill -9; done; ip -all netns delete 2>/dev/null; \
    for l in $(ip -o link show | cut -d: -f2 | cut -d@ -f1 | grep '^ h-'); do ip link del $l; done; true";

/// A clean node with `servers` real-server namespaces (`rs1`… at
/// 10.244.N.2, answering their name on 8080) and a client namespace at
/// 10.244.9.2 (and .3), all routed through the root namespace, and the VIP
/// 10.96.3.1 bound on a dummy link.
fn topology(servers: u8) {
    let _ = try_sh("ipvsadm -C; ip link del sched0 2>/dev/null");
    sh(CLEAN_NETNS);
    sh(
        "sysctl -qw net.ipv4.ip_forward=1 && ip link add sched0 type dummy && ip addr add 10.96.3.1/32 dev sched0",
    );
    let mut names: Vec<(String, u8)> = (1..=servers).map(|n| (format!("rs{n}"), n)).collect();
    names.push(("client".into(), 9));
    for (name, n) in &names {
        sh(&format!(
            "ip netns add {name} && ip link add h-{name} type veth peer name eth0 netns {name} && \
             ip addr add 10.244.{n}.1/24 dev h-{name} && ip link set h-{name} up && \
             ip -n {name} addr add 10.244.{n}.2/24 dev eth0 && ip -n {name} link set lo up && \
             ip -n {name} link set eth0 up && ip -n {name} route add default via 10.244.{n}.1"
        ));
        if name != "client" {
            sh(&format!(
                "mkdir -p /tmp/www-{name} && echo {name} > /tmp/www-{name}/index.html && \
                 ip netns exec {name} busybox httpd -p 8080 -h /tmp/www-{name}"
            ));
        }
    }
    sh("ip -n client addr add 10.244.9.3/24 dev eth0");
}

/// A virtual server on 10.96.3.1:80 with the given config and weights.
fn program(cfg: &SchedulerConfig, weights: &[u32]) {
    let mut ops = vec![Op::AddService(
        Service::new(vip(80), cfg.scheduler().name())
            .with_flags(ServiceFlags::from_bits(cfg.flag_bits())),
    )];
    for (i, w) in weights.iter().enumerate() {
        ops.push(Op::AddDestination {
            service: vip(80),
            destination: Destination::new(Ipv4Addr::new(10, 244, i as u8 + 1, 2), 8080)
                .with_forward(Forward::Masquerade)
                .with_weight(*w),
        });
    }
    let mut ipvs = Client::new().unwrap();
    for r in ipvs.apply(&ops) {
        r.unwrap();
    }
}

/// One request from the client, from source address `.2` or `.3`.
fn get(source: u8) -> Option<String> {
    let (ok, out) = try_sh(&format!(
        "ip netns exec client curl -sS --max-time 2 --interface 10.244.9.{source} http://10.96.3.1/"
    ));
    ok.then_some(out)
}

fn answers(source: u8, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            get(source).unwrap_or_else(|| {
                let (_, diag) = try_sh(
                    "ip netns exec client curl -sS --max-time 2 http://10.96.3.1/ 2>&1; ipvsadm -Ln; \
                     ip -br addr; ip route; ip -n client -br addr",
                );
                panic!("no answer from client .{source}:\n{diag}")
            })
        })
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn rr_cycles_strictly() {
    topology(3);
    program(&"rr".parse().unwrap(), &[1, 1, 1]);
    let a = answers(2, 9);
    let mut first: Vec<&String> = a[..3].iter().collect();
    first.sort();
    first.dedup();
    assert_eq!(first.len(), 3, "{a:?}");
    assert_eq!(a[0..3], a[3..6], "{a:?}");
    assert_eq!(a[3..6], a[6..9], "{a:?}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn wrr_with_weights_3_to_1_gives_3_to_1() {
    topology(2);
    program(&"wrr".parse().unwrap(), &[3, 1]);
    let a = answers(2, 40);
    let rs1 = a.iter().filter(|x| *x == "rs1").count();
    let rs2 = a.iter().filter(|x| *x == "rs2").count();
    assert_eq!((rs1, rs2), (30, 10), "{a:?}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn sh_maps_one_client_address_to_one_real_server() {
    topology(3);
    program(&"sh".parse().unwrap(), &[1, 1, 1]);
    for source in [2, 3] {
        let a = answers(source, 20);
        assert!(a.iter().all(|x| x == &a[0]), "client .{source}: {a:?}");
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn weight_zero_strands_sh_clients_without_fallback_and_not_with_it() {
    // Without sh-fallback: the client hashing to a weight-0 server gets none.
    topology(3);
    let plain: SchedulerConfig = "sh".parse().unwrap();
    assert_eq!(plain.drain(), Drain::RemoveNow);
    program(&plain, &[1, 1, 1]);
    let home = get(2).unwrap();
    let n: u8 = home.trim_start_matches("rs").parse().unwrap();
    sh(&format!(
        "ipvsadm -e -t 10.96.3.1:80 -r 10.244.{n}.2:8080 -m -w 0"
    ));
    assert_eq!(
        get(2),
        None,
        "stranded: why drain() says RemoveNow for sh without fallback"
    );

    // With sh-fallback: the same client is served by another server.
    topology(3);
    let fallback = SchedulerConfig::new(Scheduler::Sh, &[SchedFlag::ShFallback]).unwrap();
    assert_eq!(fallback.drain(), Drain::ZeroWeight);
    program(&fallback, &[1, 1, 1]);
    let home = get(2).unwrap();
    let n: u8 = home.trim_start_matches("rs").parse().unwrap();
    sh(&format!(
        "ipvsadm -e -t 10.96.3.1:80 -r 10.244.{n}.2:8080 -m -w 0"
    ));
    let moved = get(2).expect("served by another real server");
    assert_ne!(moved, home);
    let _ = try_sh("ipvsadm -C; ip link del sched0");
    sh(CLEAN_NETNS);
}
