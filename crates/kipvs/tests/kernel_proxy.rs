//! `kipvs proxy` end to end in the kernel lab, with real traffic: network
//! namespace "pods" running busybox httpd that answer their own name, a
//! client namespace, the real kernel's IPVS, cross-checked with ipvsadm.
//! Run by `cargo xtask vm test`; ignored on the host.

use kipvs_testkit::fake_api::{FakeApiServer, Kind};
use kipvs_testkit::lab::{self, reset, sh, try_sh, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A namespace with a veth to the root namespace: `10.244.N.2` inside,
/// `10.244.N.1` outside (the client is N = 9).
fn netns(name: &str, n: u8) {
    lab::netns(name, &format!("10.244.{n}"), "default");
}

/// A pod answering its own name over HTTP on 9376, and echoing on 9000.
fn pod(name: &str, n: u8) {
    netns(name, n);
    sh(&format!(
        "mkdir -p /tmp/www-{name} && echo {name} > /tmp/www-{name}/index.html && \
         ip netns exec {name} busybox httpd -p 9376 -h /tmp/www-{name} && \
         (ip netns exec {name} busybox nc -ll -p 9000 -e /usr/bin/cat </dev/null >/dev/null 2>&1 &)"
    ));
}

/// One HTTP request from the client namespace; the answer or None.
fn curl(url: &str) -> Option<String> {
    let (ok, out, _) = try_sh(&format!("ip netns exec client curl -sS --max-time 3 {url}"));
    ok.then(|| out.trim().to_owned())
}

fn curl_n(url: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| curl(url).unwrap_or_else(|| panic!("request to {url} failed")))
        .collect()
}

/// A Service with one port 80 → 9376 (and 9000 → 9000 named `echo`).
fn service(name: &str, vip: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n\
         spec:\n  clusterIP: {vip}\n  selector: {{app: {name}}}\n{extra_spec}  ports:\n\
         \x20 - {{name: http, port: 80, targetPort: 9376, protocol: TCP}}\n\
         \x20 - {{name: echo, port: 9000, targetPort: 9000, protocol: TCP}}\n"
    )
}

fn slice(service: &str, pods: &[u8]) -> String {
    let eps: String = pods
        .iter()
        .map(|n| {
            format!(
                "  - {{addresses: [10.244.{n}.2], conditions: {{ready: true}}, nodeName: lab}}\n"
            )
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {service}-1, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports:\n  - {{name: http, port: 9376, protocol: TCP}}\n  - {{name: echo, port: 9000, protocol: TCP}}\n\
         endpoints:\n{eps}"
    )
}

/// Writes a manifest file atomically (kipvs must never read half a file).
fn write(dir: &Path, file: &str, text: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

fn manifests(test: &str) -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/kipvs-test-{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A running agent; killed (SIGKILL) when dropped. Its log is kept.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(source: &[&str], extra: &[&str], log: &str) -> Agent {
        let log = PathBuf::from(format!("/tmp/{log}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kipvs"))
            .arg("proxy")
            .args(source)
            .args(["--hostname-override", "lab", "--ip-families", "ipv4"])
            .args(extra)
            // Debug shows the syncs that change nothing too.
            .env("RUST_LOG", "info,kipvs_proxy=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("kipvs starts");
        Agent { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, as the kubelet stops a pod.
    fn terminate(mut self) -> std::process::ExitStatus {
        sh(&format!("kill -TERM {}", self.child.id()));
        self.child.wait().unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn real_servers(vip: &str) -> Vec<String> {
    let (_, out, _) = try_sh(&format!("ipvsadm -Ln -t {vip}"));
    out.lines()
        .filter(|l| l.trim_start().starts_with("->") && !l.contains("RemoteAddress"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>()[1..=3].join(" "))
        .collect()
}

fn save() -> String {
    sh("ipvsadm -S -n")
}

#[test]
#[ignore = "needs the kernel lab"]
fn cluster_ip_round_robins_and_a_scale_down_drains_without_failed_requests() {
    reset();
    for (name, n) in [("pod-a", 1), ("pod-b", 2), ("pod-c", 3)] {
        pod(name, n);
    }
    netns("client", 9);
    let dir = manifests("rr");
    write(&dir, "svc.yaml", &service("web", "10.96.1.10", ""));
    write(&dir, "slice.yaml", &slice("web", &[1, 2, 3]));
    let agent = Agent::start(&["--manifests", dir.to_str().unwrap()], &[], "rr");
    wait_until("three real servers", Duration::from_secs(20), || {
        real_servers("10.96.1.10:80").len() == 3
    });
    assert_eq!(
        sh("ip -o addr show dev kube-ipvs0 | awk '{print $4}'"),
        "10.96.1.10/32\n"
    );

    let answers = curl_n("http://10.96.1.10/", 6);
    let first: Vec<&String> = answers[..3].iter().collect();
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "all three pods answer: {answers:?}");
    assert_eq!(answers[..3], answers[3..], "strict rotation: {answers:?}");

    // Scale down while requests run: none may fail.
    let during = std::thread::spawn(|| {
        (0..20)
            .map(|_| curl("http://10.96.1.10/"))
            .collect::<Vec<_>>()
    });
    std::thread::sleep(Duration::from_millis(300));
    write(&dir, "slice.yaml", &slice("web", &[1, 2]));
    let during = during.join().unwrap();
    assert!(
        during.iter().all(Option::is_some),
        "no request failed during the scale-down: {during:?}"
    );
    // pod-c drains (weight 0 while it has connections) or is gone.
    wait_until("pod-c out of rotation", Duration::from_secs(10), || {
        real_servers("10.96.1.10:80")
            .iter()
            .all(|r| !r.starts_with("10.244.3.2") || r.ends_with(" 0"))
    });
    let after = curl_n("http://10.96.1.10/", 6);
    assert!(after.iter().all(|a| a != "pod-c"), "{after:?}");
    assert!(agent.log().contains("synced"), "{}", agent.log());
}

#[test]
#[ignore = "needs the kernel lab"]
fn health_and_explain_answer_from_the_running_agent() {
    reset();
    pod("pod-a", 1);
    let dir = manifests("explain");
    write(&dir, "svc.yaml", &service("web", "10.96.1.20", ""));
    let mut one_not_ready = slice("web", &[1]);
    one_not_ready
        .push_str("  - {addresses: [10.244.7.2], conditions: {ready: false}, nodeName: lab}\n");
    write(&dir, "slice.yaml", &one_not_ready);
    let agent = Agent::start(&["--manifests", dir.to_str().unwrap()], &[], "explain");
    wait_until("the virtual server", Duration::from_secs(20), || {
        real_servers("10.96.1.20:80").len() == 1
    });
    let kipvs = env!("CARGO_BIN_EXE_kipvs");
    wait_until("/healthz", Duration::from_secs(10), || {
        try_sh("curl -sf http://127.0.0.1:10256/healthz").0
    });
    let health = sh("curl -sf http://127.0.0.1:10256/healthz");
    assert!(health.contains("\"nodeEligible\":true"), "{health}");
    assert!(sh("curl -sf http://127.0.0.1:10249/livez").contains("lastUpdated"));
    assert_eq!(sh("curl -sf http://127.0.0.1:10249/proxyMode"), "ipvs");

    // By name and by VIP, with each endpoint's reason.
    let text = sh(&format!("{kipvs} explain default/web:http"));
    assert!(
        text.contains("virtual server TCP 10.96.1.20:80 (ClusterIP)"),
        "{text}"
    );
    assert!(
        text.contains("10.244.1.2:9376") && text.contains("real server (ready)"),
        "{text}"
    );
    assert!(
        text.contains("10.244.7.2:9376") && text.contains("not a real server: not ready"),
        "{text}"
    );
    assert!(!text.contains("port echo"), "only the asked port: {text}");
    let by_vip = sh(&format!("{kipvs} explain 10.96.1.20:80"));
    assert_eq!(by_vip, text);
    let json = sh(&format!("{kipvs} explain --json default/web"));
    assert!(json.contains("\"verdict\": \"not-ready\""), "{json}");
    let (ok, _, _) = try_sh(&format!("{kipvs} explain default/nope"));
    assert!(!ok);
    let vs = sh("curl -sf http://127.0.0.1:10249/kipvs/v1/virtual-servers");
    assert!(vs.contains("\"service\":\"default/web\""), "{vs}");
    drop(agent);
    let (ok, _, _) = try_sh(&format!("{kipvs} explain default/web"));
    assert!(!ok, "no agent, a clear error");
}

#[test]
#[ignore = "needs the kernel lab"]
fn node_port_from_a_client_namespace_and_client_ip_affinity() {
    reset();
    for (name, n) in [("pod-a", 1), ("pod-b", 2)] {
        pod(name, n);
    }
    netns("client", 9);
    let dir = manifests("np");
    let np = "  type: NodePort\n  sessionAffinity: ClientIP\n";
    let svc = service("np", "10.96.1.20", np).replace(
        "targetPort: 9376, protocol: TCP}",
        "targetPort: 9376, protocol: TCP, nodePort: 30080}",
    );
    write(&dir, "svc.yaml", &svc);
    write(&dir, "slice.yaml", &slice("np", &[1, 2]));
    let _agent = Agent::start(&["--manifests", dir.to_str().unwrap()], &[], "np");
    // 10.244.9.1 is a node address (the client's veth peer): a NodePort there.
    wait_until(
        "the NodePort virtual server",
        Duration::from_secs(20),
        || real_servers("10.244.9.1:30080").len() == 2,
    );
    let line = sh("ipvsadm -S -n | grep -- '-A -t 10.244.9.1:30080'");
    assert_eq!(line.trim(), "-A -t 10.244.9.1:30080 -s rr -p 10800");
    let answers = curl_n("http://10.244.9.1:30080/", 8);
    assert!(
        answers.iter().all(|a| a == &answers[0]),
        "affinity pins one pod: {answers:?}"
    );
    let cluster = curl_n("http://10.96.1.20/", 8);
    assert!(
        cluster.iter().all(|a| a == &cluster[0]),
        "affinity on the ClusterIP too: {cluster:?}"
    );
    // NodePort addresses are not bound on kube-ipvs0.
    assert!(!sh("ip -o addr show dev kube-ipvs0").contains("10.244.9.1"));
}

#[test]
#[ignore = "needs the kernel lab"]
fn a_hand_deleted_virtual_server_is_repaired_and_foreign_ones_survive() {
    reset();
    pod("pod-a", 1);
    netns("client", 9);
    sh("ipvsadm -A -t 192.0.2.1:80 -s wlc && ipvsadm -a -t 192.0.2.1:80 -r 192.0.2.7:80 -g");
    let dir = manifests("repair");
    write(&dir, "svc.yaml", &service("web", "10.96.1.30", ""));
    write(&dir, "slice.yaml", &slice("web", &[1]));
    let agent = Agent::start(
        &["--manifests", dir.to_str().unwrap()],
        &["--ipvs-sync-period", "2s"],
        "repair",
    );
    wait_until("the virtual server", Duration::from_secs(20), || {
        real_servers("10.96.1.30:80").len() == 1
    });
    sh("ipvsadm -A -u 198.51.100.9:53 -s rr");
    sh("ipvsadm -D -t 10.96.1.30:80");
    wait_until("repair at the next resync", Duration::from_secs(10), || {
        real_servers("10.96.1.30:80").len() == 1
    });
    assert_eq!(curl("http://10.96.1.30/").as_deref(), Some("pod-a"));
    // `ipvsadm -d`: a real server is compared at least every tenth repair
    // (here, with one virtual server, at every one).
    let rs = real_servers("10.96.1.30:80").remove(0);
    let addr = rs.split_whitespace().next().unwrap().to_owned();
    sh(&format!("ipvsadm -d -t 10.96.1.30:80 -r {addr}"));
    assert!(real_servers("10.96.1.30:80").is_empty());
    wait_until("the real server back", Duration::from_secs(10), || {
        real_servers("10.96.1.30:80") == [rs.clone()]
    });
    assert!(agent.log().contains("real_servers_of=1"), "{}", agent.log());
    // Delete the Service: its virtual server goes, the foreign ones stay.
    std::fs::remove_file(dir.join("svc.yaml")).unwrap();
    wait_until(
        "the Service's virtual server removed",
        Duration::from_secs(10),
        || !save().contains("10.96.1.30"),
    );
    std::thread::sleep(Duration::from_secs(3)); // a resync later
    let saved = save();
    assert!(saved.contains("-A -t 192.0.2.1:80 -s wlc"), "{saved}");
    assert!(
        saved.contains("-a -t 192.0.2.1:80 -r 192.0.2.7:80 -g -w 1"),
        "{saved}"
    );
    assert!(saved.contains("-A -u 198.51.100.9:53 -s rr"), "{saved}");
    assert!(
        !sh("ip -o addr show dev kube-ipvs0").contains("10.96.1.30"),
        "unbound"
    );
    drop(agent);
}

#[test]
#[ignore = "needs the kernel lab"]
fn kill_9_and_restart_keeps_established_connections_and_flushes_nothing() {
    reset();
    for (name, n) in [("pod-a", 1), ("pod-b", 2)] {
        pod(name, n);
    }
    netns("client", 9);
    let dir = manifests("restart");
    write(&dir, "svc.yaml", &service("web", "10.96.1.40", ""));
    write(&dir, "slice.yaml", &slice("web", &[1, 2]));
    let agent = Agent::start(&["--manifests", dir.to_str().unwrap()], &[], "restart-1");
    wait_until("two echo real servers", Duration::from_secs(20), || {
        real_servers("10.96.1.40:9000").len() == 2
    });

    // A long-lived TCP connection through the VIP to an echo server.
    let _ = std::fs::remove_file("/tmp/go");
    let conn = Command::new("ip")
        .args(["netns", "exec", "client", "bash", "-c"])
        .arg(
            "exec 3<>/dev/tcp/10.96.1.40/9000 && echo one >&3 && read -t 5 a <&3 && echo \"got:$a\" && \
             touch /tmp/connected && while [ ! -e /tmp/go ]; do sleep 0.1; done && \
             echo two >&3 && read -t 5 b <&3 && echo \"got:$b\"",
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("the connection", Duration::from_secs(10), || {
        Path::new("/tmp/connected").exists()
    });
    let before = save();

    agent.kill9();
    assert_eq!(save(), before, "nothing flushed by a crash");
    let agent = Agent::start(&["--manifests", dir.to_str().unwrap()], &[], "restart-2");
    wait_until(
        "the restarted agent's first sync",
        Duration::from_secs(20),
        || agent.log().contains("synced"),
    );
    assert_eq!(save(), before, "the restart adopted the kernel as it was");
    let log = agent.log();
    assert!(
        !log.contains("changes="),
        "the restart changed nothing: {log}"
    );

    std::fs::write("/tmp/go", "").unwrap();
    let out = conn.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "got:one\ngot:two\n",
        "the connection survived"
    );

    // SIGTERM leaves every rule in place too.
    assert!(agent.terminate().success());
    assert_eq!(save(), before);
    assert!(sh("ip -o addr show dev kube-ipvs0").contains("10.96.1.40/32"));
}

fn kubeconfig(server: &str) -> PathBuf {
    let path = PathBuf::from("/tmp/kipvs-fake-kubeconfig.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: \"{server}\"}}}}]\n\
             users: [{{name: fake, user: {{}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n"
        ),
    )
    .unwrap();
    path
}

fn yaml<K: serde::de::DeserializeOwned>(text: &str) -> K {
    serde_saphyr::from_str(text).unwrap()
}

#[test]
#[ignore = "needs the kernel lab"]
fn against_a_fake_api_server_create_update_delete_relist_and_reconnect() {
    reset();
    for (name, n) in [("pod-a", 1), ("pod-b", 2)] {
        pod(name, n);
    }
    netns("client", 9);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(FakeApiServer::start()).unwrap();
    let _guard = rt.enter();
    let kc = kubeconfig(&api.url());
    let agent = Agent::start(
        &["--kubeconfig", kc.to_str().unwrap()],
        &["--ipvs-sync-period", "3s"],
        "fake-api",
    );

    // Create.
    api.apply(&yaml::<k8s_openapi::api::core::v1::Service>(&service(
        "web",
        "10.96.1.50",
        "",
    )));
    api.apply(&yaml::<k8s_openapi::api::discovery::v1::EndpointSlice>(
        &slice("web", &[1]),
    ));
    wait_until(
        "the virtual server from the API",
        Duration::from_secs(20),
        || real_servers("10.96.1.50:80").len() == 1,
    );
    assert_eq!(curl("http://10.96.1.50/").as_deref(), Some("pod-a"));

    // kube-proxy's birth cry: one Starting event on the Node, from kipvs.
    wait_until("the Starting event", Duration::from_secs(10), || {
        !api.recorded_events().is_empty()
    });
    let events = api.recorded_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0];
    assert_eq!(
        (&e["reason"], &e["type"], &e["reportingController"]),
        (&"Starting".into(), &"Normal".into(), &"kipvs".into()),
        "{e:#}"
    );
    assert_eq!(
        (&e["regarding"]["kind"], &e["regarding"]["name"]),
        (&"Node".into(), &"lab".into()),
        "{e:#}"
    );

    // Update: a second endpoint.
    api.apply(&yaml::<k8s_openapi::api::discovery::v1::EndpointSlice>(
        &slice("web", &[1, 2]),
    ));
    wait_until("the new endpoint", Duration::from_secs(10), || {
        real_servers("10.96.1.50:80").len() == 2
    });
    // The agent explains what it got from the API.
    let explained = sh(&format!(
        "{} explain default/web:http",
        env!("CARGO_BIN_EXE_kipvs")
    ));
    assert_eq!(
        explained.matches("real server (ready)").count(),
        2,
        "{explained}"
    );

    // 410 Gone: the agent relists and changes nothing.
    let before = save();
    let syncs_before = agent.log().matches("changes=").count();
    api.compact();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(save(), before);
    assert_eq!(
        agent.log().matches("changes=").count(),
        syncs_before,
        "a relist flaps nothing"
    );

    // Cut the watches, then change something: it arrives after reconnecting.
    api.disconnect_watches();
    api.apply(&yaml::<k8s_openapi::api::discovery::v1::EndpointSlice>(
        &slice("web", &[2]),
    ));
    wait_until(
        "the change after reconnect",
        Duration::from_secs(15),
        || {
            let rs = real_servers("10.96.1.50:80");
            rs.iter()
                .all(|r| !r.starts_with("10.244.1.2") || r.ends_with(" 0"))
        },
    );

    // The idle echo endpoint went to weight 0 with the change and is deleted
    // at the next drain check, which reads its connections.
    wait_until(
        "the idle endpoint deleted by the drain check",
        Duration::from_secs(15),
        || !save().contains("10.244.1.2:9000"),
    );

    // API down: the kernel stays as it is.
    api.set_available(false);
    let down = save();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        save(),
        down,
        "nothing changes while the API server is unreachable"
    );
    api.set_available(true);

    // Delete.
    assert!(api.delete(Kind::Service, "default", "web"));
    wait_until(
        "the virtual server removed",
        Duration::from_secs(15),
        || !save().contains("10.96.1.50"),
    );
    drop(agent);
}

/// The counters `ipvsadm -Ln --stats --exact` shows for one virtual server:
/// connections, packets in, packets out, bytes in, bytes out.
fn ipvsadm_stats(vip: &str) -> [f64; 5] {
    let out = sh(&format!("ipvsadm -Ln --stats --exact -t {vip}"));
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("TCP  {vip}")))
        .unwrap_or_else(|| panic!("no {vip} in\n{out}"));
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(2)
        .map(|n| n.parse().unwrap())
        .collect();
    [v[0], v[1], v[2], v[3], v[4]]
}

/// `/metrics` after real syncs and real traffic: kube-proxy's sync metrics
/// are there, and the per-virtual-server counters carry the Service's
/// names, equal ipvsadm's and rise with traffic. The Service's
/// healthCheckNodePort answers 200 with a local endpoint and 503 once the
/// endpoint moves to another node. `/configz` shows the configuration.
#[test]
#[ignore = "needs the kernel lab"]
fn metrics_count_real_traffic_and_the_health_check_port_follows_local_endpoints() {
    use kipvs_testkit::metrics_text as parse;
    reset();
    pod("pod-a", 1);
    netns("client", 9);
    let dir = manifests("metrics");
    let lb = "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  healthCheckNodePort: 31999\n";
    write(&dir, "svc.yaml", &service("web", "10.96.1.30", lb));
    write(&dir, "slice.yaml", &slice("web", &[1]));
    let _agent = Agent::start(&["--manifests", dir.to_str().unwrap()], &[], "metrics");
    wait_until("the virtual server", Duration::from_secs(20), || {
        real_servers("10.96.1.30:80").len() == 1
    });
    let scrape = || {
        let text = sh("curl -sf http://127.0.0.1:10249/metrics");
        parse::samples(&text).unwrap_or_else(|| panic!("unparsable /metrics:\n{text}"))
    };
    let web = [
        ("namespace", "default"),
        ("service", "web"),
        ("port_name", "http"),
        ("virtual_server", "10.96.1.30:80"),
        ("kind", "ClusterIP"),
    ];
    let vs = |s: &[parse::Sample], name: &str, dir: Option<&str>| {
        let mut l: Vec<(&str, &str)> = web.to_vec();
        l.extend(dir.map(|d| ("direction", d)));
        parse::value(s, name, &l).unwrap_or_else(|| panic!("no {name} {l:?}"))
    };

    // The kernel folds its per-CPU counters into the totals every 2 s (the
    // estimator): wait for them, then for one more fold so the last packets
    // of the closed connections are in.
    let conns = |s: &[parse::Sample]| {
        parse::value(s, "kipvs_virtual_server_connections_total", &web).unwrap_or(0.0)
    };
    curl_n("http://10.96.1.30/", 3);
    wait_until("3 connections counted", Duration::from_secs(10), || {
        conns(&scrape()) == 3.0
    });
    std::thread::sleep(Duration::from_secs(3));
    let s = scrape();
    let v4 = [("ip_family", "IPv4")];
    assert!(
        parse::value(&s, "kubeproxy_sync_proxy_rules_duration_seconds_count", &v4).unwrap() >= 1.0
    );
    assert!(
        parse::value(&s, "kubeproxy_sync_proxy_rules_last_timestamp_seconds", &v4).unwrap() > 1.7e9
    );
    assert!(parse::value(&s, "kipvs_netlink_messages_total", &[]).unwrap() > 0.0);
    let before = [
        vs(&s, "kipvs_virtual_server_connections_total", None),
        vs(&s, "kipvs_virtual_server_packets_total", Some("in")),
        vs(&s, "kipvs_virtual_server_packets_total", Some("out")),
        vs(&s, "kipvs_virtual_server_bytes_total", Some("in")),
        vs(&s, "kipvs_virtual_server_bytes_total", Some("out")),
    ];
    assert_eq!(
        before,
        ipvsadm_stats("10.96.1.30:80"),
        "the kernel's counters"
    );
    assert_eq!(before[0], 3.0, "three connections");

    curl_n("http://10.96.1.30/", 2);
    wait_until("5 connections counted", Duration::from_secs(10), || {
        conns(&scrape()) == 5.0
    });
    let s = scrape();
    let out = vs(&s, "kipvs_virtual_server_bytes_total", Some("out"));
    assert!(
        out > before[4],
        "bytes rise with traffic: {out} > {}",
        before[4]
    );

    // The health check port: one local endpoint, healthy.
    wait_until("the health check port", Duration::from_secs(10), || {
        try_sh("curl -sf http://127.0.0.1:31999/").0
    });
    let head = sh("curl -si http://127.0.0.1:31999/");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("x-load-balancing-endpoint-weight: 1"),
        "{head}"
    );
    let body = sh("curl -s http://127.0.0.1:31999/");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"service": {"namespace": "default", "name": "web"},
                           "localEndpoints": 1, "serviceProxyHealthy": true})
    );
    // The endpoint moves to another node: 503, no local endpoints.
    write(
        &dir,
        "slice.yaml",
        &slice("web", &[1]).replace("nodeName: lab", "nodeName: other"),
    );
    wait_until("the health check to fail", Duration::from_secs(10), || {
        sh("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:31999/") == "503"
    });
    let body = sh("curl -s http://127.0.0.1:31999/");
    assert!(body.contains("\"localEndpoints\":0"), "{body}");
    let s = scrape();
    let external = [("traffic_policy", "external"), ("ip_family", "IPv4")];
    assert_eq!(
        parse::value(
            &s,
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            &external
        ),
        Some(1.0)
    );

    let configz = sh("curl -sf http://127.0.0.1:10249/configz");
    let configz: serde_json::Value = serde_json::from_str(&configz).unwrap();
    assert_eq!(configz["mode"], "ipvs");
    assert_eq!(configz["hostnameOverride"], "lab");
}

/// An EndpointSlice of `service` named `name` with its own port list and
/// endpoint lines (YAML flow maps).
fn slice_yaml(service: &str, name: &str, ports: &str, endpoints: &[&str]) -> String {
    let eps: String = endpoints.iter().map(|e| format!("  - {e}\n")).collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {service}}}}}\n\
         addressType: IPv4\nports: {ports}\nendpoints:\n{eps}"
    )
}

/// `kipvs list` lines cut back to ipvsadm's: everything before `  # `.
fn without_names(listing: &str) -> String {
    listing
        .lines()
        .map(|l| format!("{}\n", l.split("  # ").next().unwrap()))
        .collect()
}

/// Issue #7's operator view against one agent fed by the fake API server:
/// `kipvs explain` gives each reason an endpoint can have (ready, not ready,
/// serving-terminating fallback, another node under a `Local` policy, no
/// port of that name, draining with a live connection), and `kipvs list`
/// names the virtual servers kipvs owns without changing ipvsadm's bytes
/// (`--service`, `--json`, `--watch`, `--no-names`).
#[test]
#[ignore = "needs the kernel lab"]
fn explain_every_reason_and_list_names_from_an_agent_on_the_fake_api() {
    reset();
    for (name, n) in [("pod-a", 1), ("pod-b", 2)] {
        pod(name, n);
    }
    netns("client", 9);
    // A virtual server kipvs does not own: listed, never named.
    sh("ipvsadm -A -t 192.0.2.1:80 -s wrr");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let api = rt.block_on(FakeApiServer::start()).unwrap();
    let _guard = rt.enter();
    let kc = kubeconfig(&api.url());
    let agent = Agent::start(
        &["--kubeconfig", kc.to_str().unwrap()],
        &[],
        "explain-reasons",
    );
    let kipvs = env!("CARGO_BIN_EXE_kipvs");
    let svc = |y: &str| api.apply(&yaml::<k8s_openapi::api::core::v1::Service>(y));
    let eps = |y: &str| api.apply(&yaml::<k8s_openapi::api::discovery::v1::EndpointSlice>(y));
    let web_ports =
        "[{name: http, port: 9376, protocol: TCP}, {name: echo, port: 9000, protocol: TCP}]";

    // web: first pod-b alone, which gets a long-lived connection.
    svc(&service("web", "10.96.1.60", ""));
    eps(&slice_yaml(
        "web",
        "web-1",
        web_ports,
        &["{addresses: [10.244.2.2], conditions: {ready: true}, nodeName: lab}"],
    ));
    // local: both traffic policies Local, one endpoint here, one elsewhere.
    svc(&service(
        "local",
        "10.96.1.61",
        "  type: NodePort\n  externalTrafficPolicy: Local\n  internalTrafficPolicy: Local\n",
    )
    .replace(
        "targetPort: 9376, protocol: TCP}",
        "targetPort: 9376, protocol: TCP, nodePort: 30081}",
    ));
    eps(&slice_yaml(
        "local",
        "local-1",
        web_ports,
        &[
            "{addresses: [10.244.1.2], conditions: {ready: true}, nodeName: lab}",
            "{addresses: [10.244.6.2], conditions: {ready: true}, nodeName: other}",
        ],
    ));
    // fallback: one unnamed port, its only endpoint terminating but serving.
    svc(
        "apiVersion: v1\nkind: Service\nmetadata: {name: fallback, namespace: default}\n\
         spec:\n  clusterIP: 10.96.1.62\n  ports:\n  - {port: 80, targetPort: 9376, protocol: TCP}\n",
    );
    eps(&slice_yaml(
        "fallback",
        "fallback-1",
        "[{port: 9376, protocol: TCP}]",
        &[
            "{addresses: [10.244.2.2], conditions: {ready: false, serving: true, terminating: true}, nodeName: lab}",
        ],
    ));
    wait_until("web's echo virtual server", Duration::from_secs(20), || {
        real_servers("10.96.1.60:9000").len() == 1
            && real_servers("10.96.1.62:80").len() == 1
            && real_servers("10.96.1.61:80").len() == 1
    });
    let mut conn = Command::new("ip")
        .args(["netns", "exec", "client", "bash", "-c"])
        .arg("sleep 600 | busybox nc 10.96.1.60 9000 >/dev/null")
        .stdin(Stdio::null())
        .spawn()
        .expect("nc starts");
    wait_until("the live connection", Duration::from_secs(10), || {
        sh("ipvsadm -Ln -t 10.96.1.60:9000")
            .lines()
            .any(|l| l.contains("10.244.2.2:9000") && l.split_whitespace().nth(4) == Some("1"))
    });
    // Now pod-b leaves web (draining, one connection), pod-a is ready, one
    // endpoint is not ready, and a second slice has none of web's ports.
    eps(&slice_yaml(
        "web",
        "web-1",
        web_ports,
        &[
            "{addresses: [10.244.1.2], conditions: {ready: true}, nodeName: lab}",
            "{addresses: [10.244.7.2], conditions: {ready: false}, nodeName: lab}",
        ],
    ));
    eps(&slice_yaml(
        "web",
        "web-2",
        "[{name: metrics, port: 9100, protocol: TCP}]",
        &["{addresses: [10.244.8.2], conditions: {ready: true}, nodeName: lab}"],
    ));
    wait_until("pod-b draining on web", Duration::from_secs(15), || {
        real_servers("10.96.1.60:9000").contains(&"10.244.2.2:9000 Masq 0".to_owned())
            && real_servers("10.96.1.60:80").contains(&"10.244.1.2:9376 Masq 1".to_owned())
    });

    let web = sh(&format!("{kipvs} explain default/web"));
    for want in [
        "virtual server TCP 10.96.1.60:80 (ClusterIP)",
        "10.244.1.2:9376",
        "real server (ready)",
        "10.244.7.2:9376",
        "not a real server: not ready",
        "not a real server: its slice has no port of this name and protocol (it has ",
        "draining TCP 10.96.1.60:9000 -> 10.244.2.2:9000: weight 0 until its connections end (1 active",
    ] {
        assert!(
            web.contains(want),
            "explain default/web lacks `{want}`:\n{web}"
        );
    }
    let line = |text: &str, addr: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(addr))
            .unwrap_or_else(|| panic!("no line for {addr}:\n{text}"))
            .to_owned()
    };
    assert!(
        line(&web, "10.244.7.2:9376").ends_with("not a real server: not ready"),
        "{web}"
    );
    assert!(
        line(&web, "10.244.8.2").contains("no port of this name"),
        "{web}"
    );
    let web_json = sh(&format!("{kipvs} explain --json default/web"));
    for want in [
        "\"not-ready\"",
        "\"no-matching-port\"",
        "\"real-server\"",
        "\"active_conns\": 1",
    ] {
        assert!(web_json.contains(want), "lacks {want}: {web_json}");
    }

    let local = sh(&format!("{kipvs} explain default/local:http"));
    assert!(
        line(&local, "10.244.6.2:9376")
            .ends_with("not a real server: on node other, and the traffic policy is Local"),
        "{local}"
    );
    assert!(
        line(&local, "10.244.1.2:9376").ends_with("real server (ready)"),
        "{local}"
    );
    assert!(local.contains("(NodePort)"), "{local}");

    let fallback = sh(&format!("{kipvs} explain default/fallback"));
    assert!(
        line(&fallback, "10.244.2.2:9376")
            .ends_with("real server (terminating but serving, and no endpoint is ready)"),
        "{fallback}"
    );
    assert_eq!(sh(&format!("{kipvs} explain 10.96.1.62:80")), fallback);

    // list: ipvsadm's bytes, then the Service of each owned virtual server.
    let mut listing = String::new();
    wait_until(
        "list == ipvsadm -Ln up to the names",
        Duration::from_secs(15),
        || {
            listing = sh(&format!("{kipvs} list"));
            without_names(&listing) == sh("ipvsadm -Ln")
        },
    );
    for want in [
        "TCP  10.96.1.60:80 rr  # default/web:http (ClusterIP)\n",
        "TCP  10.96.1.60:9000 rr  # default/web:echo (ClusterIP)\n",
        "TCP  10.96.1.61:80 rr  # default/local:http (ClusterIP)\n",
        "TCP  10.96.1.62:80 rr  # default/fallback:80 (ClusterIP)\n",
        "TCP  192.0.2.1:80 wrr\n",
    ] {
        assert!(listing.contains(want), "list lacks {want:?}:\n{listing}");
    }
    assert!(
        listing.contains(":30081 rr  # default/local:http (NodePort)\n"),
        "{listing}"
    );
    assert_eq!(
        listing.lines().filter(|l| l.contains("  # ")).count(),
        listing.lines().filter(|l| l.starts_with("TCP ")).count() - 1,
        "every owned virtual server named, the foreign one not:\n{listing}"
    );
    wait_until("--no-names == ipvsadm -Ln", Duration::from_secs(15), || {
        sh(&format!("{kipvs} list --no-names")) == sh("ipvsadm -Ln")
    });

    let only_web = sh(&format!("{kipvs} list --service default/web"));
    let vs_lines: Vec<&str> = only_web.lines().filter(|l| l.starts_with("TCP ")).collect();
    assert_eq!(
        vs_lines,
        [
            "TCP  10.96.1.60:80 rr  # default/web:http (ClusterIP)",
            "TCP  10.96.1.60:9000 rr  # default/web:echo (ClusterIP)"
        ],
        "{only_web}"
    );
    assert!(only_web.contains("  -> 10.244.1.2:9376"), "{only_web}");
    assert_eq!(
        sh(&format!("{kipvs} list --service web"))
            .lines()
            .filter(|l| l.starts_with("TCP "))
            .count(),
        2
    );
    let none = sh(&format!("{kipvs} list --service default/nope"));
    assert!(!none.contains("TCP "), "{none}");

    let json: serde_json::Value =
        serde_json::from_str(&sh(&format!("{kipvs} list --json"))).unwrap();
    let entry = |addr: &str, port: u16| {
        json.as_array()
            .unwrap()
            .iter()
            .find(|v| v["address"] == addr && v["port"] == port)
            .unwrap_or_else(|| panic!("no {addr}:{port} in {json:#}"))
            .clone()
    };
    assert_eq!(
        entry("10.96.1.60", 80)["service"],
        serde_json::json!({"name": "default/web", "port": "http", "port_number": 80, "kind": "ClusterIP"})
    );
    assert_eq!(
        entry("10.96.1.62", 80)["service"],
        serde_json::json!({"name": "default/fallback", "port": "80", "port_number": 80, "kind": "ClusterIP"})
    );
    assert_eq!(entry("192.0.2.1", 80)["service"], serde_json::Value::Null);
    let drained = entry("10.96.1.60", 9000);
    let rs = drained["real_servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == "10.244.2.2")
        .unwrap();
    assert_eq!(
        (rs["weight"].as_u64(), rs["active_conns"].as_u64()),
        (Some(0), Some(1))
    );
    let web_json: serde_json::Value =
        serde_json::from_str(&sh(&format!("{kipvs} list --json --service default/web"))).unwrap();
    assert_eq!(web_json.as_array().unwrap().len(), 2, "{web_json:#}");

    // --watch refreshes: frames under `timeout`, each one named.
    let (_, watched, _) = try_sh(&format!(
        "timeout 4 {kipvs} list --watch --interval 0.2 --service default/web"
    ));
    let frames = watched.matches("Every 0.2s: kipvs list").count();
    let named = watched.matches("# default/web:http (ClusterIP)").count();
    println!("--watch --interval 0.2 for 4 s: {frames} frames");
    assert!(frames >= 3, "{frames} frames in 4 s:\n{watched}");
    assert!(named >= frames - 1, "{named} named of {frames}");
    assert_eq!(watched.matches("\x1b[H\x1b[2J").count(), frames);

    let _ = conn.kill();
    let _ = conn.wait();
    drop(agent);
    sh("ipvsadm -D -t 192.0.2.1:80");
}
