//! kube-proxy's command lines on the real `kipvs proxy` binary in the
//! kernel lab (issue 17's acceptance): kubeadm's (`--config` from a mounted
//! ConfigMap and `--hostname-override`), a GKE-like one (`--v=2
//! --feature-gates=… --oom-score-adj=-998 --cluster-cidr=…
//! --conntrack-max-per-core=0`) and `--detect-local-mode=InterfaceNamePrefix
//! --pod-interface-name-prefix=veth`, each with real traffic; and the
//! config reload: a changed ConfigMap makes the agent exit 1, and the
//! restarted agent changes nothing in the kernel when the desired state did
//! not change. Run by `cargo xtask vm test flags_`; ignored on the host.
//!
//! The network, as in `kernel_firewall.rs`: "pods" are namespaces
//! `10.244.N.2` routing only the pod and Service networks to the node, so a
//! reply to an outside client (`192.168.70.2`) returns only when the node
//! masqueraded the request.

use kipvs_testkit::lab::{manifests, netns, reset, sh, try_sh, wait_until, write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A pod `10.244.N.2` whose node-side veth is `NODE_LINK`, answering its
/// name on 9376 (`/`) and the client address it sees (`/cgi-bin/ip`).
fn pod(name: &str, n: u8, node_link: &str) {
    sh(&format!(
        "ip netns add {name} && ip link add {node_link} type veth peer name eth0 netns {name} && \
         ip addr add 10.244.{n}.1/24 dev {node_link} && ip link set {node_link} up && \
         ip -n {name} addr add 10.244.{n}.2/24 dev eth0 && ip -n {name} link set lo up && \
         ip -n {name} link set eth0 up && \
         ip -n {name} route add 10.244.0.0/16 via 10.244.{n}.1 && \
         ip -n {name} route add 10.96.0.0/16 via 10.244.{n}.1"
    ));
    sh(&format!(
        "mkdir -p /tmp/www-{name}/cgi-bin && echo {name} > /tmp/www-{name}/index.html && \
         printf '#!/bin/bash\\necho Content-Type: text/plain\\necho\\necho $REMOTE_ADDR\\n' \
           > /tmp/www-{name}/cgi-bin/ip && chmod +x /tmp/www-{name}/cgi-bin/ip && \
         ip netns exec {name} busybox httpd -p 9376 -h /tmp/www-{name}"
    ));
}

/// An HTTP GET from a namespace: the body, or curl's error. busybox httpd
/// listens on both families, so a client address comes as
/// `[::ffff:10.244.3.2]`: shown as the IPv4 address.
fn get(ns: &str, url: &str) -> Result<String, String> {
    let (ok, out, err) = try_sh(&format!("ip netns exec {ns} curl -sS --max-time 2 {url}"));
    if ok {
        let out = out.trim();
        Ok(out
            .strip_prefix("[::ffff:")
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(out)
            .to_owned())
    } else {
        Err(err.trim().to_owned())
    }
}

/// Service `web` (10.96.3.10:80 → pod-a:9376) and its slice.
fn web(dir: &Path) {
    write(
        dir,
        "web.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
         spec:\n  clusterIP: 10.96.3.10\n  ports:\n\
         \x20 - {name: http, port: 80, targetPort: 9376, protocol: TCP}\n",
    );
    write(
        dir,
        "web-slice.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}\n\
         addressType: IPv4\nports:\n  - {name: http, port: 9376, protocol: TCP}\n\
         endpoints:\n  - {addresses: [10.244.1.2], conditions: {ready: true}, nodeName: lab}\n",
    );
}

/// A pod-a behind `veth-a`, an outside client, Service `web`.
fn network(test: &str) -> PathBuf {
    reset();
    pod("pod-a", 1, "veth-a");
    netns("outside", "192.168.70", "default");
    let dir = manifests(test);
    web(&dir);
    dir
}

struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// `kipvs proxy ARGS` with its log in /tmp/fw-flags-NAME.log (so that
    /// `wait_until` shows it), $RUST_LOG unset: `--v` decides.
    fn start(args: &[&str], name: &str) -> Agent {
        let log = PathBuf::from(format!("/tmp/fw-flags-{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kipvs"))
            .arg("proxy")
            .args(args)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("kipvs starts");
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the exit; its code.
    fn exit_code(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > timeout {
                panic!("kipvs still runs after {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mark_rules() -> String {
    sh("nft list chain inet kipvs mark-masquerade")
}

fn served() -> bool {
    try_sh("ipvsadm -Ln -t 10.96.3.10:80")
        .1
        .contains("10.244.1.2:9376")
}

/// A mounted ConfigMap: `config.conf -> ..data/config.conf`, `..data ->
/// ..v1`.
fn config_map(text: &str) -> PathBuf {
    let dir = PathBuf::from("/tmp/kipvs-test-flags-cm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/config.conf"), text).unwrap();
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/config.conf", dir.join("config.conf")).unwrap();
    dir.join("config.conf")
}

/// The kubelet's update of a mounted ConfigMap: a new version directory,
/// `..data` swapped to it by a rename.
fn update_config_map(version: &str, text: &str) {
    let dir = Path::new("/tmp/kipvs-test-flags-cm");
    std::fs::create_dir_all(dir.join(version)).unwrap();
    std::fs::write(dir.join(version).join("config.conf"), text).unwrap();
    symlink(version, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
}

const KUBEADM_CONFIG: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
    kind: KubeProxyConfiguration\nbindAddress: 0.0.0.0\nclusterCIDR: 10.244.0.0/16\n\
    configSyncPeriod: 0s\nhostnameOverride: \"\"\nmode: ipvs\n\
    metricsBindAddress: 127.0.0.1:10249\nhealthzBindAddress: 127.0.0.1:10256\n\
    ipvs: {syncPeriod: 5s}\n";

/// kubeadm's command line, the ConfigMap updated under the running agent,
/// and the restart.
#[test]
#[ignore = "needs the kernel lab"]
fn flags_kubeadm_config_map_reload_exits_and_the_restart_changes_nothing() {
    let dir = network("flags-kubeadm");
    let config = config_map(KUBEADM_CONFIG);
    let args = [
        &format!("--config={}", config.display()),
        "--hostname-override=lab",
        // kipvs's own flags: they apply with --config too.
        "--manifests",
        dir.to_str().unwrap(),
        "--ip-families",
        "ipv4",
        // Logging flags beat the file: the debug line of an empty sync.
        "--v=2",
    ];
    let mut agent = Agent::start(&args, "kubeadm");
    wait_until("the virtual server", Duration::from_secs(30), served);
    assert!(
        mark_rules().contains("ip saddr != 10.244.0.0/16"),
        "{}",
        mark_rules()
    );
    // From outside clusterCIDR: masqueraded, so pod-a's reply comes back.
    assert_eq!(get("outside", "http://10.96.3.10/"), Ok("pod-a".into()));
    wait_until("a first empty sync", Duration::from_secs(20), || {
        agent.log().contains("synced, nothing to change")
    });
    let (ipvs, table) = (sh("ipvsadm -Sn"), sh("nft -a list table inet kipvs"));

    // A change that alters nothing kipvs programs (a touch first: no exit).
    let touched = config.canonicalize().unwrap();
    std::fs::write(&touched, KUBEADM_CONFIG).unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert!(agent.child.try_wait().unwrap().is_none(), "{}", agent.log());
    update_config_map(
        "..v2",
        &format!("{KUBEADM_CONFIG}conntrack: {{tcpBeLiberal: false}}\n"),
    );
    assert_eq!(agent.exit_code(Duration::from_secs(15)), Some(1));
    let log = agent.log();
    assert!(log.contains("the configuration file changed"), "{log}");
    assert!(log.contains(&config.display().to_string()), "{log}");
    assert_eq!(sh("ipvsadm -Sn"), ipvs, "nothing is flushed on exit");

    // The DaemonSet's restart: same command line, the new file.
    let agent = Agent::start(&args, "kubeadm-restart");
    wait_until(
        "the restarted agent's first sync",
        Duration::from_secs(30),
        || agent.log().contains("synced"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let log = agent.log();
    assert!(log.contains("synced, nothing to change"), "{log}");
    assert!(
        !log.contains("synced services="),
        "a sync changed something: {log}"
    );
    assert_eq!(sh("ipvsadm -Sn"), ipvs);
    assert_eq!(sh("nft -a list table inet kipvs"), table);
    assert_eq!(get("outside", "http://10.96.3.10/"), Ok("pod-a".into()));
}

/// The GKE-like line: verbosity, feature gates, the OOM score, the
/// cluster CIDR, and conntrack's limit left alone.
#[test]
#[ignore = "needs the kernel lab"]
fn flags_gke_like_command_line() {
    let dir = network("flags-gke");
    // The lab boots like a node: nf_conntrack loads on demand.
    sh("modprobe nf_conntrack; sysctl -qw net.netfilter.nf_conntrack_max=123456");
    let agent = Agent::start(
        &[
            "--v=2",
            "--feature-gates=TopologyAwareHints=true,SomeAlphaGate=true",
            "--oom-score-adj=-998",
            "--cluster-cidr=10.244.0.0/16",
            "--conntrack-max-per-core=0",
            "--ipvs-sync-period=2s",
            "--hostname-override=lab",
            "--manifests",
            dir.to_str().unwrap(),
            "--ip-families=ipv4",
            "--healthz-bind-address=",
            "--metrics-bind-address=",
        ],
        "gke",
    );
    wait_until("the virtual server", Duration::from_secs(30), served);
    assert_eq!(
        sh(&format!("cat /proc/{}/oom_score_adj", agent.pid())).trim(),
        "-998"
    );
    assert_eq!(
        sh("sysctl -n net.netfilter.nf_conntrack_max").trim(),
        "123456",
        "--conntrack-max-per-core=0 leaves the limit"
    );
    // The other conntrack settings keep kube-proxy's defaults.
    assert_eq!(
        sh("sysctl -n net.netfilter.nf_conntrack_tcp_timeout_established").trim(),
        "86400"
    );
    assert!(
        mark_rules().contains("ip saddr != 10.244.0.0/16"),
        "{}",
        mark_rules()
    );
    assert_eq!(get("outside", "http://10.96.3.10/"), Ok("pod-a".into()));
    assert!(
        agent
            .log()
            .contains("kipvs does not know these gates, they are ignored: SomeAlphaGate"),
        "{}",
        agent.log()
    );
    // --v=2: kipvs at debug (an empty periodic sync says so).
    wait_until("a debug line", Duration::from_secs(20), || {
        agent.log().contains("DEBUG")
    });
}

/// `--detect-local-mode=InterfaceNamePrefix --pod-interface-name-prefix=veth`:
/// traffic in from a `veth*` interface is local (a pod sees its client
/// pod's address), traffic from elsewhere is masqueraded.
#[test]
#[ignore = "needs the kernel lab"]
fn flags_interface_name_prefix_detects_local_traffic() {
    let dir = network("flags-prefix");
    pod("pod-c", 3, "veth-c");
    let agent = Agent::start(
        &[
            "--detect-local-mode=InterfaceNamePrefix",
            "--pod-interface-name-prefix=veth",
            "--hostname-override=lab",
            "--manifests",
            dir.to_str().unwrap(),
            "--ip-families=ipv4",
            "--healthz-bind-address=",
            "--metrics-bind-address=",
        ],
        "prefix",
    );
    wait_until("the virtual server", Duration::from_secs(30), served);
    let rules = mark_rules();
    assert!(rules.contains("iifname != \"veth*\""), "{rules}");
    assert!(!rules.contains("saddr !="), "{rules}");
    // pod-c (in from veth-c): local, not masqueraded.
    assert_eq!(
        get("pod-c", "http://10.96.3.10/cgi-bin/ip"),
        Ok("10.244.3.2".into()),
        "{}",
        agent.log()
    );
    // outside (in from h-outside): masqueraded, so the reply returns.
    assert_eq!(get("outside", "http://10.96.3.10/"), Ok("pod-a".into()));
    let seen = get("outside", "http://10.96.3.10/cgi-bin/ip").unwrap();
    assert!(!seen.contains("192.168.70.2"), "pod-a saw {seen}");
}
