//! The sync engine's decisions, on the host: what it sends for each input
//! change. The data plane here is an in-memory table that records calls;
//! the real kernel path is tested in the lab (tests/kernel_*.rs).

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kipvs_conntrack::{Filter, IPPROTO_UDP};
use kipvs_engine::controller::{Engine, FirewallWrite, Input, Ownership};
use kipvs_engine::desired::{Context, Family};
use kipvs_engine::diff::{Change, DiffConfig, ObservedVirtualServer};
use kipvs_engine::model::{ObjectRef, Protocol, VirtualServerKey};
use kipvs_nft::Element;
use kipvs_testkit::memory::MemoryDataplane;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

fn ctx() -> Context {
    Context {
        node_name: "node-a".into(),
        node_zone: None,
        families: [Family::V4].into(),
        nodeport_addresses: vec!["192.168.1.10".parse().unwrap()],
        local_addresses: BTreeSet::new(),
        default_scheduler: "rr".parse().unwrap(),
        local_fallback_to_cluster: false,
        service_proxy_name: None,
    }
}

fn ownership() -> Ownership {
    Ownership {
        nodeport_addresses: ["192.168.1.10".parse().unwrap()].into(),
        nodeport_range: 30000..=32767,
        exclude: vec![],
    }
}

fn service(name: &str, ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
    }))
    .unwrap()
}

fn slice(name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
    let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": eps
    }))
    .unwrap()
}

/// Gives the engine `n` Services of 3 endpoints each.
fn feed(e: &mut Engine<MemoryDataplane>, n: u8) {
    e.replace_services(
        (0..n)
            .map(|i| service(&format!("s{i}"), &format!("10.96.0.{i}")))
            .collect(),
    );
    let ips = |i: u8| [1, 2, 3].map(|j| format!("10.244.{i}.{j}"));
    e.replace_slices(
        (0..n)
            .map(|i| {
                let ips = ips(i);
                slice(
                    &format!("s{i}-1"),
                    &format!("s{i}"),
                    &[&ips[0], &ips[1], &ips[2]],
                )
            })
            .collect(),
    );
}

/// An engine synced with `n` Services of 3 endpoints each.
fn loaded(n: u8) -> Engine<MemoryDataplane> {
    let mut e = Engine::new(
        MemoryDataplane::default(),
        ctx(),
        ownership(),
        DiffConfig::default(),
    );
    feed(&mut e, n);
    let r = e.resync(0);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(e.dataplane().table.len(), n as usize);
    e
}

fn vs(last: u8) -> VirtualServerKey {
    VirtualServerKey {
        protocol: Protocol::Tcp,
        address: IpAddr::from([10, 96, 0, last]),
        port: 80,
    }
}

#[test]
fn one_endpoint_change_costs_one_message_per_change() {
    let mut e = loaded(50);
    let before = e.dataplane().messages;
    e.input(Input::SliceApplied(Box::new(slice(
        "s7-1",
        "s7",
        &["10.244.7.1", "10.244.7.2", "10.244.7.9"],
    ))));
    let r = e.sync(10);
    assert_eq!(r.services, 1);
    assert_eq!(
        r.changes, 2,
        "add the new endpoint, weight 0 on the old one (its counts are stale)"
    );
    assert_eq!(e.dataplane().messages - before, 2, "two changes, no read");
    assert_eq!(r.messages, 2);
    // The drain check reads s7's real servers (one dump) and deletes the
    // idle one: two more messages, off the latency path.
    let r = e.check_drains(15);
    assert_eq!(r.changes, 1);
    assert_eq!(r.messages, 2);
    assert!(!e.has_pending());
}

/// Sets the kernel's active connection count of one real server.
fn set_active_conns(
    e: &mut Engine<MemoryDataplane>,
    vs_last: u8,
    addr: std::net::SocketAddr,
    n: u32,
) {
    let rs = e.dataplane_mut().table.get_mut(&vs(vs_last)).unwrap();
    rs.real_servers.get_mut(&addr).unwrap().active_conns = n;
}

#[test]
fn a_removed_endpoint_with_connections_drains_until_a_drain_check_reads_it_idle() {
    let mut e = loaded(3);
    let leaving: std::net::SocketAddr = "10.244.1.1:8080".parse().unwrap();
    // Connections arrived since the last full read.
    set_active_conns(&mut e, 1, leaving, 2);
    e.input(Input::SliceApplied(Box::new(slice(
        "s1-1",
        "s1",
        &["10.244.1.2", "10.244.1.3"],
    ))));
    let r = e.sync(10);
    let drain = Change::EditRealServer {
        vs: vs(1),
        addr: leaving,
        weight: 0,
    };
    assert_eq!(e.dataplane().log.last(), Some(&drain));
    assert_eq!(r.changes, 1);
    assert!(e.has_pending(), "draining");
    // Still connected at the drain check: nothing changes.
    let r = e.check_drains(15);
    assert_eq!(r.changes, 0);
    assert_eq!(r.messages, 1, "one dump of s1's real servers");
    assert!(e.has_pending(), "draining");
    // An ordinary sync reads nothing and deletes nothing.
    set_active_conns(&mut e, 1, leaving, 0);
    assert_eq!(e.sync(16).changes, 0);
    // `kipvs explain` shows it draining, with the kernel's count now (not
    // the 2 the last drain check read).
    let x = e.explain(&ObjectRef::new("default", "s1")).unwrap();
    assert_eq!(x.draining.len(), 1);
    assert_eq!(x.draining[0].real_server, "10.244.1.1:8080");
    assert_eq!(x.draining[0].active_conns, Some(0), "read now");
    assert!(
        x.to_string()
            .contains("draining TCP 10.96.0.1:80 -> 10.244.1.1:8080"),
        "{x}"
    );
    // Connections gone: the next drain check deletes it.
    let r = e.check_drains(20);
    assert_eq!(r.changes, 1);
    let delete = Change::DeleteRealServer {
        vs: vs(1),
        addr: leaving,
    };
    assert_eq!(e.dataplane().log.last(), Some(&delete));
    assert!(!e.has_pending());
    let x = e.explain(&ObjectRef::new("default", "s1")).unwrap();
    assert!(x.draining.is_empty());
    assert_eq!(x.explanation.ports[0].endpoints.len(), 2);
    assert!(e.explain(&ObjectRef::new("default", "nope")).is_none());
    let owners: Vec<String> = e.owners().map(|(k, o)| format!("{k} {o}")).collect();
    assert!(
        owners.contains(&"TCP 10.96.0.1:80 default/s1".to_owned()),
        "{owners:?}"
    );
}

#[test]
fn a_relist_with_nothing_new_changes_nothing() {
    let mut e = loaded(20);
    let before = e.dataplane().messages;
    e.replace_services(
        (0..20)
            .map(|i| service(&format!("s{i}"), &format!("10.96.0.{i}")))
            .collect(),
    );
    let r = e.sync(10);
    assert_eq!((r.services, r.changes, r.messages), (0, 0, 0));
    assert_eq!(e.dataplane().messages, before);
}

#[test]
fn resync_repairs_a_hand_deleted_virtual_server_and_otherwise_writes_nothing() {
    let mut e = loaded(5);
    let r = e.resync(5);
    assert_eq!(
        r.changes,
        0,
        "nothing differs: {:?}",
        e.dataplane().log.last()
    );
    e.dataplane_mut().table.remove(&vs(3));
    let r = e.resync(6);
    assert_eq!(r.changes, 4, "the virtual server and its 3 real servers");
    assert_eq!(e.dataplane().table.len(), 5);
    // A real server deleted by hand comes back too, and no Service was
    // recomputed for either repair: nothing of theirs changed.
    let dests = &mut e
        .dataplane_mut()
        .table
        .get_mut(&vs(1))
        .unwrap()
        .real_servers;
    let gone = *dests.keys().next().unwrap();
    dests.remove(&gone);
    let r = e.resync(7);
    assert_eq!((r.services, r.changes), (0, 1));
    assert!(e.dataplane().table[&vs(1)].real_servers.contains_key(&gone));
}

#[test]
fn a_repair_reads_a_tenth_of_the_real_servers_and_repairs_a_deleted_virtual_server_at_once() {
    let mut e = loaded(30);
    let reads = e.dataplane().real_server_reads;
    let r = e.repair(1);
    assert_eq!(r.changes, 0);
    assert_eq!((r.read_virtual_servers, r.read_real_servers_of), (30, 3));
    assert_eq!(
        e.dataplane().real_server_reads - reads,
        3,
        "one share, no full read"
    );
    // `ipvsadm -D`: the list shows it gone; the next repair adds it back
    // with its real servers, whatever the share.
    e.dataplane_mut().table.remove(&vs(17));
    let r = e.repair(2);
    assert_eq!(r.changes, 4, "the virtual server and its 3 real servers");
    assert_eq!(e.dataplane().table[&vs(17)].real_servers.len(), 3);
    // One edited by hand (another scheduler) is edited back at once too.
    e.dataplane_mut().table.get_mut(&vs(23)).unwrap().scheduler = Some("wlc".parse().unwrap());
    let r = e.repair(3);
    assert_eq!(r.changes, 1);
    assert_eq!(
        e.dataplane().table[&vs(23)].scheduler,
        Some("rr".parse().unwrap())
    );
    assert_eq!(r.services, 0, "no Service recomputed");
}

#[test]
fn a_repair_puts_back_a_hand_deleted_real_server_within_one_rotation() {
    let mut e = loaded(30);
    let gone = {
        let dests = &mut e
            .dataplane_mut()
            .table
            .get_mut(&vs(29))
            .unwrap()
            .real_servers;
        let gone = *dests.keys().next().unwrap();
        dests.remove(&gone);
        gone
    };
    let mut repaired_at = None;
    for n in 1..=kipvs_engine::controller::REPAIR_ROTATION as u64 {
        let r = e.repair(n);
        if r.changes > 0 {
            assert_eq!(r.changes, 1, "only the deleted real server");
            repaired_at.get_or_insert(n);
        }
    }
    assert!(repaired_at.is_some(), "repaired within one rotation");
    assert!(
        e.dataplane().table[&vs(29)]
            .real_servers
            .contains_key(&gone)
    );
    // Every virtual server's real servers were read once in the rotation.
    let r = e.repair(11);
    assert_eq!(r.changes, 0);
}

#[test]
fn a_repair_adopts_nothing_it_does_not_own_and_deletes_what_no_service_wants() {
    let mut e = loaded(3);
    // A foreign virtual server appears: never read further, never touched.
    let foreign = VirtualServerKey {
        protocol: Protocol::Udp,
        address: IpAddr::from([198, 51, 100, 9]),
        port: 53,
    };
    e.dataplane_mut().table.insert(
        foreign,
        ObservedVirtualServer {
            key: foreign,
            scheduler: Some("rr".parse().unwrap()),
            persistence: None,
            real_servers: BTreeMap::new(),
            counts_fresh: true,
        },
    );
    let r = e.repair(1);
    assert_eq!(r.changes, 0);
    assert!(e.dataplane().table.contains_key(&foreign));
    // A Service deleted: its virtual server goes at the next sync.
    e.input(Input::ServiceDeleted(ObjectRef::new("default", "s1")));
    let r = e.repair(2);
    assert!(r.changes >= 1);
    assert!(!e.dataplane().table.contains_key(&vs(1)));
    assert!(e.dataplane().table.contains_key(&foreign));
}

#[test]
fn a_resync_retries_a_service_in_conflict_once_the_other_claim_is_gone() {
    let mut e = loaded(1);
    // s9 asks for s0's virtual server: an error naming it, s0 unchanged.
    e.input(Input::ServiceApplied(Box::new(service("s9", "10.96.0.0"))));
    let r = e.sync(1);
    assert!(
        r.errors.iter().any(|m| m.contains("already served")),
        "{:?}",
        r.errors
    );
    // s0 goes; s9 was not touched since, but the next resync takes it.
    e.input(Input::ServiceDeleted(ObjectRef::new("default", "s0")));
    e.sync(2);
    let r = e.resync(3);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.services, 1, "only the Service in error is recomputed");
    assert!(e.dataplane().table.contains_key(&vs(0)));
}

#[test]
fn a_foreign_virtual_server_is_never_touched() {
    let mut m = MemoryDataplane::default();
    let foreign = ObservedVirtualServer {
        key: VirtualServerKey {
            protocol: Protocol::Tcp,
            address: "172.16.0.1".parse().unwrap(),
            port: 443,
        },
        scheduler: Some("wlc".parse().unwrap()),
        persistence: None,
        real_servers: BTreeMap::new(),
        counts_fresh: true,
    };
    m.table.insert(foreign.key, foreign.clone());
    let mut e = Engine::new(m, ctx(), ownership(), DiffConfig::default());
    e.replace_services(vec![service("a", "10.96.0.1")]);
    e.replace_slices(vec![]);
    e.resync(0);
    e.input(Input::ServiceDeleted(ObjectRef::new("default", "a")));
    e.sync(1);
    assert_eq!(e.dataplane().table.get(&foreign.key), Some(&foreign));
    assert_eq!(e.dataplane().table.len(), 1);
}

#[test]
fn adoption_after_restart_changes_only_the_difference() {
    let first = loaded(10);
    let kernel = first.dataplane();
    let mut m = MemoryDataplane {
        table: kernel.table.clone(),
        bound: kernel.bound.clone(),
        ..Default::default()
    };
    // While kipvs was down, one endpoint of s2 changed.
    m.table.get_mut(&vs(2)).unwrap().real_servers.clear();
    let mut e = Engine::new(m, ctx(), ownership(), DiffConfig::default());
    feed(&mut e, 10);
    let r = e.resync(0);
    assert_eq!(r.changes, 3, "only s2's three real servers are re-added");
    assert!(
        e.dataplane()
            .log
            .iter()
            .all(|c| matches!(c, Change::AddRealServer { .. })),
        "{:?}",
        e.dataplane().log
    );
    assert_eq!((r.bound, r.unbound), (0, 0));
}

#[test]
fn a_refused_change_is_reported_and_others_proceed_and_it_is_retried() {
    let mut e = loaded(3);
    e.dataplane_mut().refuse.insert(vs(9));
    e.input(Input::ServiceApplied(Box::new(service("s9", "10.96.0.9"))));
    e.input(Input::ServiceApplied(Box::new(service("s8", "10.96.0.8"))));
    let r = e.sync(1);
    assert_eq!(r.failed_changes, 1);
    assert!(r.errors[0].contains("10.96.0.9"), "{:?}", r.errors);
    assert!(e.dataplane().table.contains_key(&vs(8)));
    assert!(
        !e.has_pending(),
        "s9 waits for its retry, not for the next sync"
    );
    assert_eq!(e.next_retry(), Some(2), "one second after the refusal");
    e.dataplane_mut().refuse.clear();
    let r = e.sync(2);
    assert_eq!((r.changes, r.failed_changes), (1, 0));
    assert!(e.dataplane().table.contains_key(&vs(9)));
}

#[test]
fn an_invalid_update_keeps_the_last_good_state_and_names_the_service() {
    let mut e = loaded(3);
    let mut bad = service("s1", "10.96.0.1");
    bad.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].protocol = Some("ICMP".into());
    e.input(Input::ServiceApplied(Box::new(bad)));
    e.input(Input::ServiceApplied(Box::new(service("s5", "10.96.0.5"))));
    let r = e.sync(1);
    assert_eq!(
        r.errors,
        ["Service default/s1: spec.ports[0].protocol: unknown protocol \"ICMP\""]
    );
    assert_eq!(
        e.dataplane().table[&vs(1)].real_servers.len(),
        3,
        "s1 untouched"
    );
    assert!(e.dataplane().table.contains_key(&vs(5)));
}

#[test]
fn deleting_a_service_removes_its_virtual_server_and_address() {
    let mut e = loaded(3);
    e.input(Input::ServiceDeleted(ObjectRef::new("default", "s1")));
    let r = e.sync(1);
    assert_eq!((r.changes, r.unbound), (1, 1));
    assert!(!e.dataplane().table.contains_key(&vs(1)));
    assert!(
        !e.dataplane()
            .bound
            .contains(&"10.96.0.1".parse::<IpAddr>().unwrap())
    );
}

#[test]
fn the_nft_table_is_written_whole_once_then_by_changed_elements_only() {
    let mut e = loaded(50);
    assert_eq!(e.dataplane().fw_writes.len(), 1);
    assert!(matches!(
        e.dataplane().fw_writes[0],
        FirewallWrite::Replace(_)
    ));
    let all = e.dataplane().fw.clone().unwrap();
    // Per Service: VIP, its port in vip-ports and cluster-ports, 3 hairpins,
    // the ownership record.
    assert_eq!(all.len(), 50 * 7);

    e.input(Input::SliceApplied(Box::new(slice(
        "s7-1",
        "s7",
        &["10.244.7.1", "10.244.7.2", "10.244.7.9"],
    ))));
    let r = e.sync(10);
    assert_eq!(r.firewall_elements, 2);
    assert!(!r.firewall_replaced);
    let FirewallWrite::Update(d) = e.dataplane().fw_writes.last().unwrap() else {
        panic!("an update")
    };
    let show = |s: &BTreeSet<Element>| s.iter().map(|e| e.render()).collect::<Vec<_>>();
    assert_eq!(show(&d.delete), ["10.244.7.3 . tcp . 8080 . 10.244.7.3"]);
    assert_eq!(show(&d.add), ["10.244.7.9 . tcp . 8080 . 10.244.7.9"]);

    // A Service deleted takes its elements along; nothing else changes.
    // Its ownership record goes after its virtual server, in a second write.
    e.input(Input::ServiceDeleted(ObjectRef::new("default", "s9")));
    let r = e.sync(11);
    assert_eq!(r.firewall_elements, 7);
    let FirewallWrite::Update(d) = e.dataplane().fw_writes.last().unwrap() else {
        panic!("an update")
    };
    assert_eq!(show(&d.delete), ["10.96.0.9 . tcp . 80"]);

    // A restarted engine adopts the table: a resync writes nothing.
    let mut memory = std::mem::take(e.dataplane_mut());
    memory.fw_writes.clear();
    let mut again = Engine::new(memory, ctx(), ownership(), DiffConfig::default());
    feed(&mut again, 50);
    again.input(Input::ServiceDeleted(ObjectRef::new("default", "s9")));
    again.input(Input::SliceApplied(Box::new(slice(
        "s7-1",
        "s7",
        &["10.244.7.1", "10.244.7.2", "10.244.7.9"],
    ))));
    let r = again.resync(20);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.firewall_elements, 0);
    assert!(again.dataplane().fw_writes.is_empty());

    // An element deleted by hand is put back by the next resync.
    let hairpin = again
        .firewall_elements()
        .find(|e| matches!(e, Element::Hairpin(_)))
        .unwrap()
        .clone();
    again.dataplane_mut().fw.as_mut().unwrap().remove(&hairpin);
    again.dataplane_mut().fw_generation += 1;
    let r = again.resync(30);
    assert_eq!(r.firewall_elements, 1);
    assert!(again.dataplane().fw.as_ref().unwrap().contains(&hairpin));
}

/// Waits (bounded) until `cond` holds of the agent's status.
fn wait_for(
    status: &std::sync::Mutex<kipvs_proxy::api::Status>,
    what: &str,
    cond: impl Fn(&kipvs_proxy::api::Status) -> bool,
) {
    for _ in 0..2000 {
        if cond(&status.lock().unwrap()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the sync loop never got to: {what}");
}

/// The sync loop feeds kube-proxy's metrics and the health-check ports:
/// change counters, sync durations, the network programming latency from an
/// EndpointSlice's trigger time, Services with a Local policy and no local
/// endpoints, and the local endpoint count a health-check port answers.
#[test]
fn the_sync_loop_updates_the_metrics_and_the_health_check_ports() {
    use kipvs_proxy::agent;
    use kipvs_proxy::api::SourceEvent;
    use kipvs_proxy::api::Status;
    use kipvs_proxy::options::Timing;
    use kipvs_testkit::metrics_text as parse;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, SystemTime};

    let engine = Engine::new(
        MemoryDataplane::default(),
        ctx(),
        ownership(),
        DiffConfig {
            drain_timeout_secs: 900,
        },
    );
    let (tx, rx) = kipvs_proxy::mailbox::mailbox();
    let status = Arc::new(Mutex::new(Status::default()));
    let st = status.clone();
    let sync = std::thread::spawn(move || {
        agent::run(engine, rx, Box::new(|_| ctx()), Timing::default(), st, || 0)
    });
    let lb: Service = serde_json::from_value(json!({
        "metadata": {"name": "lb", "namespace": "default"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.50",
                 "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000,
                 "ports": [{"port": 80, "nodePort": 30080}]}
    }))
    .unwrap();
    tx.send(SourceEvent::ReplaceServices(vec![
        lb,
        service("s0", "10.96.0.1"),
    ]))
    .unwrap();
    tx.send(SourceEvent::ReplaceSlices(vec![])).unwrap();
    wait_for(&status, "the first sync", |s| s.syncs >= 1);
    assert_eq!(
        status.lock().unwrap().service_health[&31000].local_endpoints,
        0
    );
    let text = status.lock().unwrap().metrics.encode(Vec::new());
    let s = parse::samples(&text).unwrap();
    let external_v4 = [("traffic_policy", "external"), ("ip_family", "IPv4")];
    assert_eq!(
        parse::value(
            &s,
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            &external_v4
        ),
        Some(1.0)
    );

    // A local endpoint arrives, triggered 2 s ago by the endpoints controller.
    let triggered = SystemTime::now() - Duration::from_secs(2);
    let mut local = slice("lb-1", "lb", &["10.244.9.1"]);
    local.endpoints[0].node_name = Some("node-a".into());
    local.metadata.annotations = Some(
        [(
            kipvs_engine::labels::LAST_CHANGE_TRIGGER_TIME.to_owned(),
            k8s_openapi::jiff::Timestamp::try_from(triggered)
                .unwrap()
                .to_string(),
        )]
        .into(),
    );
    tx.send(SourceEvent::Input(Input::SliceApplied(Box::new(local))))
        .unwrap();
    wait_for(&status, "the health check counting 1", |s| {
        s.service_health.get(&31000).map(|h| h.local_endpoints) == Some(1)
    });
    let text = status.lock().unwrap().metrics.encode(Vec::new());
    let s = parse::samples(&text).unwrap_or_else(|| panic!("unparsable\n{text}"));
    let v = |n: &str, l: &[(&str, &str)]| {
        parse::value(&s, n, l).unwrap_or_else(|| panic!("no {n} {l:?} in\n{text}"))
    };
    let v4 = [("ip_family", "IPv4")];
    assert_eq!(
        v("kubeproxy_sync_proxy_rules_endpoint_changes_total", &[]),
        1.0
    );
    assert_eq!(
        v("kubeproxy_sync_proxy_rules_endpoint_changes_pending", &[]),
        0.0
    );
    assert_eq!(
        v("kubeproxy_network_programming_duration_seconds_count", &v4),
        1.0
    );
    let under_2s = [("ip_family", "IPv4"), ("le", "1.0")];
    assert_eq!(
        v(
            "kubeproxy_network_programming_duration_seconds_bucket",
            &under_2s
        ),
        0.0,
        "programmed at least 2 s after the trigger"
    );
    assert!(v("kubeproxy_sync_proxy_rules_duration_seconds_count", &v4) >= 2.0);
    assert!(v("kubeproxy_sync_proxy_rules_last_timestamp_seconds", &v4) > 1.7e9);
    assert!(
        v(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            &v4
        ) > 1.7e9
    );
    assert!(v("kipvs_netlink_messages_total", &[]) > 0.0);
    assert_eq!(
        v(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            &external_v4
        ),
        0.0
    );

    // The Service goes: so does its health-check port.
    tx.send(SourceEvent::Input(Input::ServiceDeleted(ObjectRef::new(
        "default", "lb",
    ))))
    .unwrap();
    wait_for(&status, "the port to go", |s| s.service_health.is_empty());
    let text = status.lock().unwrap().metrics.encode(Vec::new());
    let s = parse::samples(&text).unwrap();
    assert_eq!(
        parse::value(&s, "kubeproxy_sync_proxy_rules_service_changes_total", &[]),
        Some(3.0),
        "two Services listed, one deleted"
    );
    drop(tx);
    sync.join().unwrap();
}

fn udp_service(name: &str, ip: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": [{"port": 53, "protocol": "UDP"}]}
    }))
    .unwrap()
}

fn udp_slice(name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
    let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "ports": [{"port": 5353, "protocol": "UDP"}], "endpoints": eps
    }))
    .unwrap()
}

#[test]
fn a_replaced_udp_endpoint_clears_its_conntrack_entries_after_the_ipvs_changes() {
    let mut e = Engine::new(
        MemoryDataplane::default(),
        ctx(),
        ownership(),
        DiffConfig::default(),
    );
    e.replace_services(vec![
        udp_service("dns", "10.96.0.10"),
        service("web", "10.96.0.11"),
    ]);
    e.replace_slices(vec![
        udp_slice("dns-1", "dns", &["10.244.0.7"]),
        slice("web-1", "web", &["10.244.0.8"]),
    ]);
    let r = e.resync(0);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let vip: IpAddr = "10.96.0.10".parse().unwrap();
    let base = Filter {
        orig_dst: Some(vip),
        orig_dst_port: Some(53),
        ..Filter::protocol(IPPROTO_UDP)
    };
    // The first sync: only flows that went nowhere (never translated).
    let (_, first) = &e.dataplane().conntrack[0];
    assert_eq!(
        first,
        &vec![Filter {
            untranslated: true,
            ..base
        }]
    );
    // The TCP Service and an unchanged sync ask for nothing.
    let r = e.sync(1);
    assert_eq!(r.conntrack_deleted, 0);
    assert_eq!(e.dataplane().conntrack.len(), 1);

    e.input(Input::SliceApplied(Box::new(udp_slice(
        "dns-1",
        "dns",
        &["10.244.0.9"],
    ))));
    let r = e.sync(2);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.conntrack_deleted, 1);
    let log_len = e.dataplane().log.len();
    let (applied_before, filters) = e.dataplane().conntrack.last().unwrap();
    assert_eq!(*applied_before, log_len, "after the IPVS changes");
    assert_eq!(
        filters,
        &vec![Filter {
            reply_src: Some("10.244.0.7".parse().unwrap()),
            reply_src_port: Some(5353),
            ..base
        }]
    );
}

#[test]
fn a_failed_conntrack_cleanup_is_reported_with_its_service_and_is_not_fatal() {
    let mut e = Engine::new(
        MemoryDataplane::default(),
        ctx(),
        ownership(),
        DiffConfig::default(),
    );
    e.replace_services(vec![udp_service("dns", "10.96.0.10")]);
    e.replace_slices(vec![udp_slice("dns-1", "dns", &["10.244.0.7"])]);
    e.dataplane_mut().conntrack_fails = true;
    let r = e.resync(0);
    assert_eq!(r.conntrack_errors, 1);
    assert_eq!(
        r.errors,
        vec![
            "clearing stale UDP conntrack entries of default/dns: ctnetlink socket: permission denied"
        ]
    );
    assert_eq!(e.dataplane().table.len(), 1, "the IPVS changes went in");
    assert!(!r.stale);
}

#[test]
fn a_resync_skips_reading_an_unchanged_nftables_table_and_rereads_a_changed_one() {
    let mut e = loaded(3);
    assert_eq!(e.dataplane().fw_reads, 1);
    let writes = e.dataplane().fw_writes.len();
    // Nothing changed the ruleset since the engine's own write.
    let r = e.resync(0);
    assert!(r.firewall_unchanged);
    assert_eq!(e.dataplane().fw_reads, 1, "no read of an unchanged table");
    assert_eq!(e.dataplane().fw_writes.len(), writes, "and no write");
    // Someone deletes an element: the generation moves, the next resync
    // reads the table and puts it back.
    let gone = e
        .dataplane()
        .fw
        .as_ref()
        .unwrap()
        .iter()
        .next()
        .cloned()
        .unwrap();
    e.dataplane_mut().fw.as_mut().unwrap().remove(&gone);
    e.dataplane_mut().fw_generation += 1;
    let r = e.resync(0);
    assert!(!r.firewall_unchanged);
    assert_eq!(e.dataplane().fw_reads, 2);
    assert!(
        e.dataplane().fw.as_ref().unwrap().contains(&gone),
        "repaired"
    );
    // A failed write leaves the engine unsure: it reads again.
    e.dataplane_mut().fw_fails = true;
    e.input(Input::ServiceDeleted(ObjectRef {
        namespace: "default".into(),
        name: "s1".into(),
    }));
    let r = e.sync(0);
    assert!(!r.errors.is_empty());
    e.dataplane_mut().fw_fails = false;
    let r = e.resync(0);
    assert!(!r.firewall_unchanged);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

/// An engine whose kernel already has a table of kipvs's (so an ownership
/// record, empty) and the given foreign virtual servers.
fn with_record(foreign: &[ObservedVirtualServer]) -> MemoryDataplane {
    let mut m = MemoryDataplane {
        fw: Some(BTreeSet::new()),
        ..Default::default()
    };
    for f in foreign {
        m.table.insert(f.key, f.clone());
    }
    m
}

fn observed(key: VirtualServerKey) -> ObservedVirtualServer {
    ObservedVirtualServer {
        key,
        scheduler: Some("wlc".parse().unwrap()),
        persistence: None,
        real_servers: BTreeMap::new(),
        counts_fresh: true,
    }
}

fn key(addr: &str, port: u16) -> VirtualServerKey {
    VirtualServerKey {
        protocol: Protocol::Tcp,
        address: addr.parse().unwrap(),
        port,
    }
}

/// A NodePort Service with node port 35000 (outside 30000–32767) and an
/// externalIP that is the node's own address.
fn outside_the_address_rule() -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "edge", "namespace": "default"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.50",
                 "externalIPs": ["192.168.1.10"],
                 "ports": [{"port": 8080, "nodePort": 35000}]}
    }))
    .unwrap()
}

fn node_ctx() -> Context {
    Context {
        local_addresses: ["192.168.1.10".parse().unwrap()].into(),
        ..ctx()
    }
}

#[test]
fn the_ownership_record_claims_what_kipvs_made_across_resyncs_and_restarts_and_nothing_else() {
    // A user's virtual server on a port of a VIP kipvs binds.
    let foreign = observed(key("10.96.0.50", 9999));
    let mut e = Engine::new(
        with_record(std::slice::from_ref(&foreign)),
        node_ctx(),
        ownership(),
        DiffConfig::default(),
    );
    e.replace_services(vec![outside_the_address_rule()]);
    e.replace_slices(vec![slice("edge-1", "edge", &["10.244.1.1"])]);
    let r = e.resync(0);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let ours = [
        key("10.96.0.50", 8080),
        key("192.168.1.10", 8080),
        key("192.168.1.10", 35000),
    ];
    for k in &ours {
        assert!(e.dataplane().table.contains_key(k), "{k} made");
    }
    assert!(
        !e.dataplane()
            .bound
            .contains(&"192.168.1.10".parse::<IpAddr>().unwrap()),
        "a node address is not bound on kube-ipvs0"
    );
    let recorded: Vec<String> = e
        .dataplane()
        .fw
        .as_ref()
        .unwrap()
        .iter()
        .filter(|el| matches!(el, Element::Owned(_)))
        .map(Element::render)
        .collect();
    assert_eq!(
        recorded,
        [
            "10.96.0.50 . tcp . 8080",
            "192.168.1.10 . tcp . 8080",
            "192.168.1.10 . tcp . 35000"
        ]
    );
    // Five resync periods: nothing to change, nothing stale.
    for t in 1..=5 {
        let r = e.resync(t * 30);
        assert_eq!((r.changes, r.stale), (0, false), "{:?}", r.errors);
        assert_eq!(r.firewall_elements, 0);
    }
    // A restart adopts all three and changes nothing.
    let memory = std::mem::take(e.dataplane_mut());
    let mut e = Engine::new(memory, node_ctx(), ownership(), DiffConfig::default());
    e.replace_services(vec![outside_the_address_rule()]);
    e.replace_slices(vec![slice("edge-1", "edge", &["10.244.1.1"])]);
    let r = e.resync(200);
    assert_eq!((r.changes, r.bound, r.firewall_elements), (0, 0, 0));
    // Deleted: all three go with their records; the user's stays.
    e.input(Input::ServiceDeleted(ObjectRef::new("default", "edge")));
    e.sync(201);
    assert_eq!(
        e.dataplane().table.keys().collect::<Vec<_>>(),
        [&foreign.key]
    );
    assert!(
        !e.dataplane()
            .fw
            .as_ref()
            .unwrap()
            .iter()
            .any(|el| matches!(el, Element::Owned(_)))
    );
}

#[test]
fn a_refused_service_is_retried_with_exponential_backoff_and_resyncs_do_not_retry_it() {
    let mut e = loaded(3);
    e.dataplane_mut().refuse.insert(vs(9));
    e.input(Input::ServiceApplied(Box::new(service("s9", "10.96.0.9"))));
    let mut attempts = Vec::new();
    // Ten minutes, as the agent drives it: a resync every 30 s, a sync
    // when something is pending or a retry is due.
    for t in 1..=600u64 {
        let r = if t % 30 == 0 {
            e.resync(t)
        } else if e.pending() > 0 || e.next_retry().is_some_and(|at| at <= t) {
            e.sync(t)
        } else {
            continue;
        };
        assert!(!r.stale);
        if r.failed_changes > 0 {
            attempts.push(t);
            assert_eq!(
                r.errors,
                [format!("Service default/s9: refused {}", vs(9))],
                "one error naming the Service"
            );
        }
        // Every other Service keeps being served.
        assert_eq!(e.dataplane().table.len(), 3);
    }
    assert_eq!(attempts, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]);
    let x = e.explain(&ObjectRef::new("default", "s9")).unwrap();
    assert!(
        x.error.as_deref().unwrap().contains("attempt 10"),
        "{:?}",
        x.error
    );
    assert_eq!(e.errors().count(), 1);
    // Fixed in the kernel: the next attempt succeeds and the error is gone.
    e.dataplane_mut().refuse.clear();
    let r = e.sync(812);
    assert_eq!(r.failed_changes, 0);
    assert!(e.dataplane().table.contains_key(&vs(9)));
    assert_eq!((e.errors().count(), e.next_retry()), (0, None));
}

#[test]
fn a_changed_service_is_retried_at_once() {
    let mut e = loaded(1);
    e.dataplane_mut().refuse.insert(vs(9));
    e.input(Input::ServiceApplied(Box::new(service("s9", "10.96.0.9"))));
    assert_eq!(e.sync(1).failed_changes, 1);
    e.dataplane_mut().refuse.clear();
    let mut fixed = service("s9", "10.96.0.9");
    fixed.metadata.annotations = Some([("note".to_owned(), "fixed".to_owned())].into());
    e.input(Input::ServiceApplied(Box::new(fixed)));
    assert_eq!(e.sync(1).failed_changes, 0, "no wait for the backoff");
    assert!(e.dataplane().table.contains_key(&vs(9)));
}

#[test]
fn when_the_nft_table_cannot_be_written_nothing_new_is_served_and_what_is_stays() {
    let mut e = loaded(3);
    e.dataplane_mut().fw_fails = true;
    e.input(Input::ServiceApplied(Box::new(service("s8", "10.96.0.8"))));
    e.input(Input::SliceApplied(Box::new(slice(
        "s1-1",
        "s1",
        &["10.244.1.1", "10.244.1.2", "10.244.1.3", "10.244.1.4"],
    ))));
    let r = e.sync(1);
    assert!(!e.dataplane().table.contains_key(&vs(8)), "no new VIP");
    assert!(
        !e.dataplane()
            .bound
            .contains(&"10.96.0.8".parse::<IpAddr>().unwrap())
    );
    assert_eq!(
        e.dataplane().table[&vs(1)].real_servers.len(),
        4,
        "an existing virtual server still follows its endpoints"
    );
    assert!(
        r.errors
            .iter()
            .any(|m| m.starts_with("Service default/s8: new virtual servers held back")),
        "{:?}",
        r.errors
    );
    // The table works again: the held-back Service is made at its retry,
    // after the table (with its record) is written whole.
    e.dataplane_mut().fw_fails = false;
    let r = e.sync(2);
    assert!(r.firewall_replaced);
    assert!(e.dataplane().table.contains_key(&vs(8)));
    assert!(
        e.dataplane()
            .fw
            .as_ref()
            .unwrap()
            .contains(&Element::Owned(kipvs_nft::Vs::new(
                "10.96.0.8".parse().unwrap(),
                kipvs_nft::Proto::Tcp,
                80
            )))
    );
}
