use super::*;
use crate::desired::{Family, service_state};
use crate::model::Slice;
use proptest::prelude::*;
use serde_json::json;

fn ctx() -> Context {
    Context {
        node_name: "node-a".into(),
        node_zone: None,
        families: [Family::V4, Family::V6].into(),
        nodeport_addresses: vec!["192.168.1.10".parse().unwrap()],
        local_addresses: ["192.168.1.10".parse().unwrap()].into(),
        default_scheduler: "rr".parse().unwrap(),
        local_fallback_to_cluster: false,
        service_proxy_name: None,
    }
}

fn slice(pods: &[&str]) -> Slice {
    let eps: Vec<_> = pods
        .iter()
        .map(|p| json!({"addresses": [p], "conditions": {"ready": true}, "nodeName": "node-a"}))
        .collect();
    crate::slim::slice_from_json(json!({
        "metadata": {"name": "web-x", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 9376}],
        "endpoints": eps
    }))
}

/// A Service `web` with `spec` merged over a ClusterIP one (port 80 → 9376).
fn web(spec: serde_json::Value, status: serde_json::Value) -> Service {
    let mut base = json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9376}]});
    for (k, v) in spec.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": base, "status": status
    }))
    .unwrap()
}

/// The filtering elements as `set: element` lines, sorted (the ownership
/// record has a test of its own).
fn lines(svc: &Service, pods: &[&str], ctx: &Context) -> Vec<String> {
    let s = slice(pods);
    let state = service_state(svc, &[&s], ctx).unwrap();
    let mut out: Vec<String> = service_elements(svc, &state, ctx)
        .iter()
        .filter(|e| !matches!(e, Element::Owned(_)))
        .map(|e| format!("{}: {}", e.set(), e.render()))
        .collect();
    out.sort();
    out
}

#[test]
fn every_virtual_server_is_recorded_as_owned_and_read_back() {
    let svc = web(
        json!({"type": "NodePort", "externalIPs": ["1.2.3.4"], "ipFamilies": ["IPv4"]}),
        json!({}),
    );
    let s = slice(&["10.244.1.2"]);
    let state = service_state(&svc, &[&s], &ctx()).unwrap();
    let elements = service_elements(&svc, &state, &ctx());
    let owned: Vec<&Element> = elements
        .iter()
        .filter(|e| matches!(e, Element::Owned(_)))
        .collect();
    assert_eq!(owned.len(), state.virtual_servers.len());
    let keys: BTreeSet<_> = state.virtual_servers.keys().copied().collect();
    assert_eq!(recorded(owned), keys);
}

#[test]
fn a_cluster_ip_service() {
    let got = lines(
        &web(json!({}), json!({})),
        &["10.244.1.2", "10.244.2.2"],
        &ctx(),
    );
    assert_eq!(
        got,
        [
            "cluster-ports-v4: 10.96.0.10 . tcp . 80",
            "hairpin-v4: 10.244.1.2 . tcp . 9376 . 10.244.1.2",
            "hairpin-v4: 10.244.2.2 . tcp . 9376 . 10.244.2.2",
            "vip-addrs-v4: 10.96.0.10",
            "vip-ports-v4: 10.96.0.10 . tcp . 80",
        ]
    );
}

#[test]
fn no_endpoints_keeps_the_vip_port_open_so_ipvs_refuses_it() {
    let got = lines(&web(json!({}), json!({})), &[], &ctx());
    assert!(
        got.contains(&"vip-ports-v4: 10.96.0.10 . tcp . 80".to_owned()),
        "{got:?}"
    );
    assert!(!got.iter().any(|l| l.starts_with("hairpin")), "{got:?}");
}

#[test]
fn node_ports_and_external_ips_are_masqueraded_unless_local() {
    let spec = json!({"type": "NodePort", "externalIPs": ["203.0.113.7"],
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9376, "nodePort": 30080}]});
    let got = lines(&web(spec.clone(), json!({})), &["10.244.1.2"], &ctx());
    for want in [
        "external-ports-v4: 192.168.1.10 . tcp . 30080",
        "external-ports-v4: 203.0.113.7 . tcp . 80",
        "vip-ports-v4: 203.0.113.7 . tcp . 80",
        "vip-addrs-v4: 203.0.113.7",
    ] {
        assert!(got.contains(&want.to_owned()), "{want} not in {got:?}");
    }
    // The node address is not bound on kube-ipvs0: not guarded by the filter.
    assert!(!got.contains(&"vip-ports-v4: 192.168.1.10 . tcp . 30080".to_owned()));

    let mut local = spec;
    local["externalTrafficPolicy"] = json!("Local");
    let got = lines(&web(local, json!({})), &["10.244.1.2"], &ctx());
    assert!(
        !got.iter().any(|l| l.starts_with("external-ports")),
        "{got:?}"
    );
    assert!(got.contains(&"cluster-ports-v4: 10.96.0.10 . tcp . 80".to_owned()));
}

#[test]
fn load_balancer_source_ranges() {
    let spec = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
        "healthCheckNodePort": 31999,
        "loadBalancerSourceRanges": ["192.168.0.0/16", " 10.1.2.3/8", "fd00::/64", "bogus"],
        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 9376, "nodePort": 30080}]});
    let status = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}});
    let got = lines(&web(spec, status), &["10.244.1.2"], &ctx());
    for want in [
        "lb-restricted-v4: 198.51.100.1 . tcp . 80",
        "lb-allowed-v4: 198.51.100.1 . tcp . 80 . 192.168.0.0/16",
        "lb-allowed-v4: 198.51.100.1 . tcp . 80 . 10.0.0.0/8",
        // 192.168.0.0/16 holds the node's 192.168.1.10.
        "lb-allowed-v4: 198.51.100.1 . tcp . 80 . 198.51.100.1",
        "hc-ports: 31999",
        "vip-ports-v4: 198.51.100.1 . tcp . 80",
    ] {
        assert!(got.contains(&want.to_owned()), "{want} not in {got:?}");
    }
    assert!(!got.iter().any(|l| l.contains("fd00")), "{got:?}");
    // The ClusterIP and NodePort are not restricted.
    assert_eq!(
        got.iter()
            .filter(|l| l.starts_with("lb-restricted"))
            .count(),
        1
    );
}

#[test]
fn a_range_without_a_node_address_does_not_allow_the_lb_ip() {
    let spec = json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["172.16.0.0/12"]});
    let status = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}});
    let got = lines(&web(spec, status), &[], &ctx());
    let allowed: Vec<&String> = got.iter().filter(|l| l.starts_with("lb-allowed")).collect();
    assert_eq!(
        allowed,
        ["lb-allowed-v4: 198.51.100.1 . tcp . 80 . 172.16.0.0/12"]
    );
}

#[test]
fn a_service_kipvs_does_not_proxy_has_no_elements() {
    let svc = web(
        json!({"clusterIP": "None", "clusterIPs": ["None"]}),
        json!({}),
    );
    assert!(lines(&svc, &["10.244.1.2"], &ctx()).is_empty());
}

proptest! {
    /// Every element names an address of the Service's state or one of its
    /// real servers, and hairpin elements are exactly the real servers.
    #[test]
    fn elements_follow_the_state(pods in proptest::collection::btree_set(1u8..250, 0..6), local in any::<bool>()) {
        let pods: Vec<String> = pods.iter().map(|n| format!("10.244.{n}.2")).collect();
        let refs: Vec<&str> = pods.iter().map(String::as_str).collect();
        let mut spec = json!({"type": "NodePort", "ports": [{"name": "http", "protocol": "TCP",
            "port": 80, "targetPort": 9376, "nodePort": 30080}]});
        if local { spec["externalTrafficPolicy"] = json!("Local"); }
        let svc = web(spec, json!({}));
        let s = slice(&refs);
        let state = service_state(&svc, &[&s], &ctx()).unwrap();
        let els = service_elements(&svc, &state, &ctx());
        let hairpins: BTreeSet<IpAddr> = els.iter().filter_map(|e| match e {
            Element::Hairpin(v) => Some(v.addr),
            _ => None,
        }).collect();
        let want: BTreeSet<IpAddr> = pods.iter().map(|p| p.parse().unwrap()).collect();
        prop_assert_eq!(hairpins, want);
        let externals = els.iter().filter(|e| matches!(e, Element::ExternalPort(_))).count();
        prop_assert_eq!(externals, if local { 0 } else { 1 });
    }
}
