//! `kipvs-sched` against the lab's real kernel, through `kipvs-ipvs`:
//!
//! - every scheduler the kernel ships, and every valid flag combination of
//!   `sh` and `mh`, is accepted and read back identically, by `ipvsadm -S -n`
//!   and by [`SchedulerConfig::from_kernel`]; a scheduler newer than the
//!   running kernel (`twos`, Linux 6.2) is [`Error::SchedulerUnavailable`];
//! - real traffic from a client network namespace to three real-server
//!   namespaces (busybox httpd answering its own name) through a masqueraded
//!   virtual service: `rr` rotates, `wrr` follows the weights, `sh` pins a
//!   client address to one real server;
//! - the draining rule of [`SchedulerConfig::drain`]: under `sh` without
//!   `sh-fallback`, a client whose real server gets weight 0 is served by
//!   nobody; with `sh-fallback` it moves to another real server.
//!
//! Run as root inside the kernel lab by `cargo xtask vm test`; ignored on the
//! host, whose kernel has no IPVS.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use kipvs_ipvs::{Client, Destination, Error, Forward, Op, Service, ServiceFlags, ServiceKey};
use kipvs_sched::{Drain, SchedFlag, Scheduler, SchedulerConfig};

/// The virtual address: on a dummy link for the traffic tests.
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 77, 1);
/// The virtual port of the traffic tests.
const VPORT: u16 = 80;
/// The real servers' port.
const RPORT: u16 = 8080;
/// The client's network namespace; its veth is `10.77.9.0/24`.
const CLIENT: &str = "ks-client";
/// The real servers' namespaces: `ks-rsN` is `10.77.N.2`, answering
/// `ks-rsN` on [`RPORT`].
const SERVERS: [&str; 3] = ["ks-rs1", "ks-rs2", "ks-rs3"];
/// The dummy link holding [`VIP`].
const VIP_LINK: &str = "ks-vip0";
/// The client's addresses (`curl --interface`); `.2` is its first one.
const CLIENT_ADDRS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(10, 77, 9, 2),
    Ipv4Addr::new(10, 77, 9, 3),
    Ipv4Addr::new(10, 77, 9, 4),
    Ipv4Addr::new(10, 77, 9, 5),
];

// ---------------------------------------------------------------- helpers

/// Runs a bash command line; panics with its output when it fails.
fn sh(cmd: &str) -> String {
    let out = Command::new("bash")
        .args(["-c", cmd])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs a bash command line whose failure is fine (cleanup).
fn sh_quiet(cmd: &str) {
    let _ = Command::new("bash").args(["-c", cmd]).output();
}

/// The running kernel's (major, minor), from `/proc/sys/kernel/osrelease`
/// (`6.1.0-56-cloud-amd64` is (6, 1)).
fn running_kernel() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>());
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor),
        _ => panic!("cannot read a kernel version from {release:?}"),
    }
}

/// `ipvsadm -S -n`, as a map from `ADDR:PORT` to its `-A` line.
fn saved_services() -> BTreeMap<String, String> {
    sh("ipvsadm -S -n")
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(|l| {
            let addr = l.split_whitespace().nth(2).unwrap_or_default().to_owned();
            (addr, l.trim_end().to_owned())
        })
        .collect()
}

/// The `-A` line `ipvsadm -S -n` writes for a TCP service with `cfg`.
fn expected_save_line(addr: Ipv4Addr, port: u16, cfg: &SchedulerConfig) -> String {
    let flags = cfg.flags_string();
    let mut line = format!("-A -t {addr}:{port} -s {}", cfg.scheduler().name());
    if !flags.is_empty() {
        line.push_str(&format!(" -b {flags}"));
    }
    line
}

/// A service of `cfg`, as crates/ipvs sends it.
fn service_of(key: ServiceKey, cfg: &SchedulerConfig) -> Service {
    Service::new(key, cfg.scheduler().name()).with_flags(ServiceFlags::from_bits(cfg.flag_bits()))
}

/// What the kernel holds for a service, as a scheduler configuration.
fn kernel_config(service: &Service) -> SchedulerConfig {
    SchedulerConfig::from_kernel(&service.scheduler, service.flags.bits())
        .unwrap_or_else(|e| panic!("{}: {e}", service.key))
}

// ------------------------------------------- configurations, no traffic

/// Each scheduler with its default flags, then the valid flag combinations
/// of `sh` and `mh`, spelled as the annotations spell them; no duplicates.
fn every_configuration() -> Vec<SchedulerConfig> {
    let mut all: Vec<SchedulerConfig> = Scheduler::ALL
        .iter()
        .map(|s| SchedulerConfig::new(*s, &[]).expect("defaults are valid"))
        .collect();
    let combinations = [
        ("sh", None),                         // none
        ("sh", Some("sh-fallback")),          // fallback
        ("sh", Some("sh-port")),              // port
        ("sh", Some("sh-port, sh-fallback")), // both
        ("mh", None),                         // the default: mh-port
        ("mh", Some("mh-fallback")),          // fallback only
        ("mh", Some("mh-fallback,mh-port")),  // both
        ("mh", Some("")),                     // none at all
    ];
    for (name, flags) in combinations {
        let cfg = SchedulerConfig::from_annotations(name, flags)
            .unwrap_or_else(|e| panic!("{name} {flags:?}: {e}"));
        if !all.contains(&cfg) {
            all.push(cfg);
        }
    }
    all
}

#[test]
#[ignore = "needs the kernel lab"]
fn kernel_accepts_every_scheduler_and_flag_combination_and_reads_it_back() {
    let mut ipvs = Client::new().expect("IPVS");
    ipvs.flush().expect("flush");
    let kernel = running_kernel();
    let configs = every_configuration();
    // Sanity on the list itself: every flag combination is there.
    for bits in [0, 0x08, 0x10, 0x18] {
        for s in [Scheduler::Sh, Scheduler::Mh] {
            assert!(
                configs
                    .iter()
                    .any(|c| c.scheduler() == s && c.flag_bits() == bits),
                "{s} {bits:#x} missing"
            );
        }
    }
    let key = |i: usize| ServiceKey::tcp(VIP, 3000 + i as u16);

    // One pipelined batch: a refused service must not hide the others.
    let ops: Vec<Op> = configs
        .iter()
        .enumerate()
        .map(|(i, cfg)| Op::AddService(service_of(key(i), cfg)))
        .collect();
    let results = ipvs.apply(&ops);
    assert_eq!(results.len(), configs.len());

    let mut shipped = Vec::new();
    let mut too_new = Vec::new();
    for (i, (cfg, result)) in configs.iter().zip(results).enumerate() {
        let since = cfg.scheduler().since_kernel();
        if since <= kernel {
            result.unwrap_or_else(|e| panic!("{cfg} on Linux {kernel:?}: {e}"));
            shipped.push((i, cfg));
        } else {
            match result {
                Err(Error::SchedulerUnavailable { service, module }) => {
                    assert_eq!(service, key(i), "{cfg}");
                    assert_eq!(module, cfg.scheduler().module(), "{cfg}");
                }
                other => panic!(
                    "{cfg} needs Linux {since:?}, the lab runs {kernel:?}: expected \
                     SchedulerUnavailable naming {}, got {other:?}",
                    cfg.scheduler().module()
                ),
            }
            too_new.push(cfg.scheduler());
        }
    }
    println!(
        "Linux {kernel:?}: {} configurations accepted, too new: {too_new:?}",
        shipped.len()
    );
    if kernel < (6, 2) {
        assert_eq!(
            too_new,
            [Scheduler::Twos],
            "only twos is newer than {kernel:?}"
        );
    }

    // ipvsadm reads back exactly what kipvs-sched says it writes, and
    // nothing was created for a refused scheduler.
    let saved = saved_services();
    assert_eq!(saved.len(), shipped.len(), "ipvsadm -S -n: {saved:#?}");
    for (i, cfg) in &shipped {
        let port = 3000 + *i as u16;
        let want = expected_save_line(VIP, port, cfg);
        let got = saved
            .get(&format!("{VIP}:{port}"))
            .unwrap_or_else(|| panic!("{cfg}: no line for {VIP}:{port} in {saved:#?}"));
        assert_eq!(got, &want, "{cfg}");
    }

    // crates/ipvs reads back the same configuration, by dump and by get.
    let dumped: BTreeMap<String, Service> = ipvs
        .services()
        .expect("dump services")
        .into_iter()
        .map(|e| (e.service.key.to_string(), e.service))
        .collect();
    assert_eq!(dumped.len(), shipped.len());
    for (i, cfg) in &shipped {
        let service = &dumped[&key(*i).to_string()];
        assert_eq!(service.scheduler, cfg.scheduler().name());
        assert_eq!(
            service.flags.bits(),
            cfg.flag_bits(),
            "{cfg}: no other flag"
        );
        let back = kernel_config(service);
        assert_eq!(&back, *cfg);
        assert_eq!(back.flags_string(), cfg.flags_string());
        assert_eq!(back.drain(), cfg.drain());
        let got = ipvs.service(&key(*i)).expect("get service").service;
        assert_eq!(&kernel_config(&got), *cfg);
    }
    ipvs.flush().expect("flush");
}

// ------------------------------------------------------ real traffic

/// Removes everything the traffic tests create: the namespaces with their
/// processes, the veths, the dummy link, the web roots and every virtual
/// service. Nothing here may fail.
fn clean() {
    let mut script = String::new();
    for ns in SERVERS.iter().chain([&CLIENT]) {
        script.push_str(&format!(
            "ip netns pids {ns} 2>/dev/null | xargs -r kill -9; \
             ip link del ksh-{short} 2>/dev/null; \
             ip netns delete {ns} 2>/dev/null; \
             rm -rf /tmp/www-{ns}; ",
            short = &ns[3..]
        ));
    }
    script.push_str(&format!("ip link del {VIP_LINK} 2>/dev/null; ipvsadm -C"));
    sh_quiet(&script);
}

/// The lab network for one test; cleaned again when dropped, even when the
/// test panics.
struct Lab {
    ipvs: Client,
}

impl Drop for Lab {
    fn drop(&mut self) {
        clean();
    }
}

/// A namespace `ns` whose `eth0` is `10.77.N.2/24`, with a veth `ksh-…` to
/// the root namespace at `10.77.N.1` as its default route.
fn namespace(ns: &str, n: u8) {
    let host = format!("ksh-{}", &ns[3..]);
    sh(&format!(
        "ip netns add {ns} && ip link add {host} type veth peer name eth0 netns {ns} && \
         ip addr add 10.77.{n}.1/24 dev {host} && ip link set {host} up && \
         ip -n {ns} link set lo up && ip -n {ns} addr add 10.77.{n}.2/24 dev eth0 && \
         ip -n {ns} link set eth0 up && ip -n {ns} route add default via 10.77.{n}.1"
    ));
}

fn server_addr(n: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, n as u8 + 1, 2)
}

/// The answer of the server at `addr`.
fn server_name(addr: Ipv4Addr) -> &'static str {
    SERVERS[addr.octets()[2] as usize - 1]
}

/// A clean lab: the client with all of [`CLIENT_ADDRS`], the first
/// `servers` real servers answering their name, the VIP on a dummy link,
/// IP forwarding on.
fn lab(servers: usize) -> Lab {
    clean();
    sh(&format!(
        "sysctl -qw net.ipv4.ip_forward=1 && ip link add {VIP_LINK} type dummy && \
         ip addr add {VIP}/32 dev {VIP_LINK} && ip link set {VIP_LINK} up"
    ));
    namespace(CLIENT, 9);
    for extra in &CLIENT_ADDRS[1..] {
        sh(&format!("ip -n {CLIENT} addr add {extra}/24 dev eth0"));
    }
    for (i, ns) in SERVERS[..servers].iter().enumerate() {
        namespace(ns, i as u8 + 1);
        sh(&format!(
            "mkdir -p /tmp/www-{ns} && echo {ns} > /tmp/www-{ns}/index.html && \
             ip netns exec {ns} busybox httpd -p {RPORT} -h /tmp/www-{ns}"
        ));
    }
    // httpd may return before it listens: wait until each answers directly.
    for (i, name) in SERVERS[..servers].iter().enumerate() {
        let url = format!("http://{}:{RPORT}/", server_addr(i));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "1", &url])
                .output()
                .expect("curl runs");
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == *name {
                break;
            }
            assert!(Instant::now() < deadline, "{name} never answered on {url}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Lab {
        ipvs: Client::new().expect("IPVS"),
    }
}

impl Lab {
    fn key(&self) -> ServiceKey {
        ServiceKey::tcp(VIP, VPORT)
    }

    /// The virtual service with `cfg`, one masqueraded real server per
    /// weight (server N gets `weights[N]`), added through crates/ipvs.
    fn program(&mut self, cfg: &SchedulerConfig, weights: &[u32]) {
        let key = self.key();
        let mut ops = vec![Op::AddService(service_of(key, cfg))];
        for (i, w) in weights.iter().enumerate() {
            ops.push(Op::AddDestination {
                service: key,
                destination: Destination::new(server_addr(i), RPORT)
                    .with_forward(Forward::Masquerade)
                    .with_weight(*w),
            });
        }
        for (op, result) in ops.iter().zip(self.ipvs.apply(&ops)) {
            result.unwrap_or_else(|e| panic!("{op}: {e}"));
        }
        let held = self.ipvs.service(&key).expect("get service").service;
        assert_eq!(&kernel_config(&held), cfg, "the kernel holds {cfg}");
    }

    /// Sets the weight of server `addr`.
    fn set_weight(&mut self, addr: Ipv4Addr, weight: u32) {
        let d = Destination::new(addr, RPORT)
            .with_forward(Forward::Masquerade)
            .with_weight(weight);
        self.ipvs
            .edit_destination(&self.key(), &d)
            .unwrap_or_else(|e| panic!("weight {weight} for {addr}: {e}"));
    }

    /// The servers' names in the kernel's destination order.
    fn kernel_order(&mut self) -> Vec<&'static str> {
        self.ipvs
            .destinations(&self.key())
            .expect("destinations")
            .iter()
            .map(|d| match d.destination.addr {
                std::net::IpAddr::V4(a) => server_name(a),
                other => panic!("unexpected destination {other}"),
            })
            .collect()
    }

    /// What `ipvsadm -Ln` shows, for failure messages.
    fn table(&self) -> String {
        sh("ipvsadm -Ln")
    }
}

/// One HTTP request on a fresh connection from the client's address
/// `from`: the answer, or curl's error with the time it took.
fn request(from: Ipv4Addr) -> Result<String, (String, Duration)> {
    let start = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", CLIENT, "curl", "-sS", "--noproxy", "*"])
        .args(["--max-time", "2", "--interface", &from.to_string()])
        .arg(format!("http://{VIP}:{VPORT}/"))
        .output()
        .expect("ip netns exec curl runs");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err((
            format!(
                "{} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            ),
            start.elapsed(),
        ))
    }
}

/// The client namespace's `Icmp: InDestUnreachs` counter.
fn client_icmp_dest_unreachs() -> u64 {
    let snmp = sh(&format!("ip netns exec {CLIENT} cat /proc/net/snmp"));
    let icmp: Vec<Vec<&str>> = snmp
        .lines()
        .filter(|l| l.starts_with("Icmp: "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let [names, values] = &icmp[..] else {
        panic!("no Icmp lines in /proc/net/snmp:\n{snmp}")
    };
    let at = names
        .iter()
        .position(|n| *n == "InDestUnreachs")
        .expect("InDestUnreachs");
    values[at].parse().expect("a counter")
}

/// `n` requests from `from`, each of which must be answered.
fn answers(lab: &Lab, from: Ipv4Addr, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            request(from).unwrap_or_else(|(e, _)| {
                panic!("request {i} from {from} failed: {e}\n{}", lab.table())
            })
        })
        .collect()
}

#[test]
#[ignore = "needs the kernel lab"]
fn rr_rotates_strictly_over_the_real_servers() {
    let mut lab = lab(3);
    lab.program(&"rr".parse().unwrap(), &[1, 1, 1]);
    let got = answers(&lab, CLIENT_ADDRS[0], 9);
    println!("rr: {got:?}");
    let cycle = &got[..3];
    let mut distinct = cycle.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct, SERVERS, "the first three answers: {got:?}");
    for (i, a) in got.iter().enumerate() {
        assert_eq!(a, &cycle[i % 3], "answer {i} breaks the rotation: {got:?}");
    }
    // The rotation follows the kernel's destination list.
    let order = lab.kernel_order();
    let start = order
        .iter()
        .position(|n| *n == cycle[0])
        .expect("answer is a destination");
    let rotated: Vec<&str> = (0..3).map(|k| order[(start + k) % 3]).collect();
    assert_eq!(cycle, rotated, "kernel order {order:?}");
}

#[test]
#[ignore = "needs the kernel lab"]
fn wrr_with_weights_3_to_1_splits_40_requests_30_to_10() {
    let mut lab = lab(2);
    lab.program(&"wrr".parse().unwrap(), &[3, 1]);
    let got = answers(&lab, CLIENT_ADDRS[0], 40);
    let count = |name: &str| got.iter().filter(|a| *a == name).count();
    println!("wrr 3:1: {got:?}");
    assert_eq!((count(SERVERS[0]), count(SERVERS[1])), (30, 10), "{got:?}");
    // And within every window of four, exactly one goes to the weight-1 one.
    for (w, window) in got.chunks(4).enumerate() {
        let light = window.iter().filter(|a| *a == SERVERS[1]).count();
        assert_eq!(light, 1, "window {w}: {window:?}");
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn sh_pins_each_client_address_to_one_real_server() {
    let mut lab = lab(3);
    let cfg: SchedulerConfig = "sh".parse().unwrap();
    assert_eq!(cfg.flag_bits(), 0, "source address only");
    lab.program(&cfg, &[1, 1, 1]);
    let mut home = BTreeMap::new();
    for from in &CLIENT_ADDRS[..2] {
        let got = answers(&lab, *from, 40);
        assert!(
            got.iter().all(|a| a == &got[0]),
            "{from} moved between servers: {got:?}"
        );
        home.insert(*from, got[0].clone());
    }
    println!("sh: {home:?}");
}

/// Under `cfg` (`sh`, with or without `sh-fallback`): the server a client
/// hashes to, before and after its weight is set to 0.
struct Stranding {
    lab: Lab,
    client: Ipv4Addr,
    home: String,
    home_addr: Ipv4Addr,
}

fn strand(cfg: &SchedulerConfig) -> Stranding {
    let mut lab = lab(3);
    lab.program(cfg, &[1, 1, 1]);
    let client = CLIENT_ADDRS[0];
    let before = answers(&lab, client, 3);
    assert!(before.iter().all(|a| a == &before[0]), "{before:?}");
    let home = before[0].clone();
    let n = SERVERS.iter().position(|s| *s == home).unwrap();
    let home_addr = server_addr(n);
    lab.set_weight(home_addr, 0);
    println!("{cfg}: {client} hashed to {home}; its weight is now 0");
    Stranding {
        lab,
        client,
        home,
        home_addr,
    }
}

#[test]
#[ignore = "needs the kernel lab"]
fn sh_without_fallback_strands_the_clients_of_a_weight_0_server() {
    let cfg: SchedulerConfig = "sh".parse().unwrap();
    assert_eq!(cfg.drain(), Drain::RemoveNow);
    let mut s = strand(&cfg);
    let unreachables = client_icmp_dest_unreachs();
    for attempt in 0..3 {
        match request(s.client) {
            Ok(answer) => panic!(
                "attempt {attempt}: {} was served by {answer} though {} has weight 0 and \
                 there is no sh-fallback\n{}",
                s.client,
                s.home,
                s.lab.table()
            ),
            Err((error, took)) => {
                println!("attempt {attempt}: {error} after {took:?}");
                assert!(took < Duration::from_secs(4), "{took:?}");
            }
        }
    }
    // How the kernel refuses: IPVS finds no server and answers each SYN
    // with an ICMP destination unreachable (ip_vs_leave), so curl fails at
    // once instead of timing out.
    let refusals = client_icmp_dest_unreachs() - unreachables;
    println!(
        "ICMP destination unreachable received by the client: {refusals}; kernel log: {:?}",
        sh("dmesg | grep -i 'no destination available' | tail -n 1").trim()
    );
    assert_eq!(refusals, 3, "one ICMP refusal per connection attempt");
    // Clients hashing elsewhere are still served.
    let mut others = 0;
    for from in &CLIENT_ADDRS[1..] {
        match request(*from) {
            Ok(answer) => {
                assert_ne!(answer, s.home, "{from} reached the weight-0 server");
                others += 1;
            }
            Err((error, _)) => println!("{from} also hashes to {}: {error}", s.home),
        }
    }
    println!(
        "{others} of {} other client addresses still served",
        CLIENT_ADDRS.len() - 1
    );
    // Weight back: the same client is served by its server again.
    s.lab.set_weight(s.home_addr, 1);
    assert_eq!(request(s.client).map_err(|e| e.0), Ok(s.home.clone()));
}

#[test]
#[ignore = "needs the kernel lab"]
fn sh_fallback_moves_the_clients_of_a_weight_0_server_elsewhere() {
    let cfg = SchedulerConfig::new(Scheduler::Sh, &[SchedFlag::ShFallback]).unwrap();
    assert_eq!(cfg.drain(), Drain::ZeroWeight);
    let s = strand(&cfg);
    let after = answers(&s.lab, s.client, 5);
    println!("{cfg}: {} now served by {after:?}", s.client);
    for a in &after {
        assert_ne!(a, &s.home, "served by the weight-0 server: {after:?}");
    }
}
