//! Why each endpoint of a Service is, or is not, a real server: the rules
//! of [`super::service_state`] told per endpoint, for `kipvs explain`. Pure,
//! like the rest of the desired state; the agent adds what only the kernel
//! knows (real servers draining with weight 0).

use super::*;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One Service explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    /// `namespace/name`.
    pub service: String,
    /// Why the Service has no virtual servers at all, if it has none by
    /// design (headless, ExternalName, another proxy's) or by error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_programmed: Option<String>,
    pub ports: Vec<PortExplanation>,
}

/// One Service port in one IP family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortExplanation {
    /// The port's name (empty for an unnamed single port) and number.
    pub port: String,
    pub protocol: String,
    pub family: String,
    /// The virtual servers of this port, e.g. `TCP 10.96.0.10:80 (ClusterIP)`.
    pub virtual_servers: Vec<String>,
    pub endpoints: Vec<EndpointExplanation>,
}

/// One endpoint of one EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointExplanation {
    /// `ip:port` when the slice has the port, else the IP.
    pub address: String,
    pub slice: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// For the ClusterIP (internal traffic policy applies).
    pub cluster: Verdict,
    /// For externalIPs, load-balancer IPs and NodePorts (external traffic
    /// policy applies), when the Service has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<Verdict>,
}

/// Whether an endpoint is a real server, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Ready: a real server.
    RealServer,
    /// Not ready but serving and terminating, and no endpoint is ready: a
    /// real server, as the fallback.
    ServingTerminatingFallback,
    /// Neither ready nor serving-and-terminating.
    NotReady,
    /// Terminating while other endpoints are ready.
    TerminatingWhileOthersReady,
    /// On another node, and the traffic policy is `Local`.
    OtherNodeLocalPolicy { node: Option<String> },
    /// Topology hints send this node's traffic to other endpoints.
    TopologyHintsElsewhere,
    /// The slice has no port of this name and protocol.
    NoMatchingPort { slice_ports: Vec<String> },
    /// An address of another family, or not an IP.
    OtherFamily,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::RealServer => f.write_str("real server (ready)"),
            Verdict::ServingTerminatingFallback => {
                f.write_str("real server (terminating but serving, and no endpoint is ready)")
            }
            Verdict::NotReady => f.write_str("not a real server: not ready"),
            Verdict::TerminatingWhileOthersReady => {
                f.write_str("not a real server: terminating, and other endpoints are ready")
            }
            Verdict::OtherNodeLocalPolicy { node } => write!(
                f,
                "not a real server: on node {}, and the traffic policy is Local",
                node.as_deref().unwrap_or("(none)")
            ),
            Verdict::TopologyHintsElsewhere => {
                f.write_str("not a real server: topology hints send this node's traffic elsewhere")
            }
            Verdict::NoMatchingPort { slice_ports } => write!(
                f,
                "not a real server: its slice has no port of this name and protocol (it has {})",
                if slice_ports.is_empty() {
                    "none".to_owned()
                } else {
                    slice_ports.join(", ")
                }
            ),
            Verdict::OtherFamily => f.write_str("not a real server: not an address of this family"),
        }
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Service {}", self.service)?;
        if let Some(why) = &self.not_programmed {
            writeln!(f, "  not programmed: {why}")?;
        }
        for p in &self.ports {
            let port = if p.port.is_empty() {
                "(unnamed)"
            } else {
                &p.port
            };
            writeln!(f, "  port {port} {} {}", p.protocol, p.family)?;
            for vs in &p.virtual_servers {
                writeln!(f, "    virtual server {vs}")?;
            }
            if p.endpoints.is_empty() {
                writeln!(
                    f,
                    "    no endpoints: the virtual servers have no real servers"
                )?;
            }
            for e in &p.endpoints {
                let node = e.node.as_deref().unwrap_or("-");
                write!(
                    f,
                    "    {:<24} node {node:<12} slice {}: ",
                    e.address, e.slice
                )?;
                match &e.external {
                    Some(x) if *x != e.cluster => {
                        writeln!(f, "ClusterIP: {}; external addresses: {x}", e.cluster)?
                    }
                    _ => writeln!(f, "{}", e.cluster)?,
                }
            }
        }
        Ok(())
    }
}

impl Verdict {
    /// Whether the endpoint is a real server.
    pub fn is_real_server(&self) -> bool {
        matches!(
            self,
            Verdict::RealServer | Verdict::ServingTerminatingFallback
        )
    }
}

/// Explains one Service given its EndpointSlices and the context.
pub fn explain(svc: &Service, slices: &[&Slice], ctx: &Context) -> Explanation {
    let id = service_ref(svc);
    let mut out = Explanation {
        service: id.to_string(),
        not_programmed: None,
        ports: Vec::new(),
    };
    let state = match service_state(svc, slices, ctx) {
        Ok(s) => s,
        Err(e) => {
            out.not_programmed = Some(e.to_string());
            return out;
        }
    };
    let Some(spec) = &svc.spec else {
        out.not_programmed = Some("the Service has no spec".into());
        return out;
    };
    if state.virtual_servers.is_empty() {
        out.not_programmed = Some(if !is_ours(svc.metadata.labels.as_ref(), ctx) {
            "headless, or served by another proxy (service-proxy-name)".into()
        } else if spec.type_.as_deref() == Some("ExternalName") {
            "an ExternalName Service: DNS only".into()
        } else {
            "no ClusterIP (headless) or no port of a served IP family".into()
        });
        return out;
    }
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let topology = Topology::of(svc);
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = Protocol::from_k8s(port.protocol.as_deref()) else {
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        for family in [Family::V4, Family::V6] {
            let vss: Vec<(&VirtualServerKey, &ServicePortRef)> = state
                .virtual_servers
                .iter()
                .filter(|(k, (_, owner))| {
                    owner.port_name == port_name
                        && k.protocol == protocol
                        && Family::of(&k.address) == family
                })
                .map(|(k, (_, owner))| (k, owner))
                .collect();
            if vss.is_empty() {
                continue;
            }
            let has_external = vss.iter().any(|(_, o)| o.kind.is_external());
            let candidates = candidates(slices, port, protocol, family);
            let policy = Policies {
                internal_local,
                external_local,
                topology,
            };
            let (cluster_set, external_set) = endpoint_sets(&candidates, &policy, ctx);
            let verdict = |c: &Candidate, set: &[SocketAddr], local: bool| {
                verdict_of(c, set, local, &candidates, ctx)
            };
            let mut endpoints = Vec::new();
            for slice in slices {
                let slice_name = slice.name.clone();
                if slice.family != Some(family) {
                    continue;
                }
                let target = slice.ports.iter().find(|p| {
                    p.name.as_deref().unwrap_or("") == port_name
                        && Protocol::from_k8s(p.protocol.as_deref()) == Some(protocol)
                });
                let target_port = target.and_then(|p| p.port).and_then(valid_port);
                for ep in &slice.endpoints {
                    let ip = ep.address.to_string();
                    let node = ep.node.as_deref().map(str::to_owned);
                    let Some(target_port) = target_port else {
                        let v = Verdict::NoMatchingPort {
                            slice_ports: slice
                                .ports
                                .iter()
                                .map(|p| {
                                    format!(
                                        "{}/{}",
                                        p.name.as_deref().unwrap_or(""),
                                        p.protocol.as_deref().unwrap_or("TCP")
                                    )
                                })
                                .collect(),
                        };
                        endpoints.push(EndpointExplanation {
                            address: ip,
                            slice: slice_name.clone(),
                            node,
                            cluster: v.clone(),
                            external: has_external.then_some(v),
                        });
                        continue;
                    };
                    let Some(c) = candidate(ep, target_port, family) else {
                        endpoints.push(EndpointExplanation {
                            address: ip,
                            slice: slice_name.clone(),
                            node,
                            cluster: Verdict::OtherFamily,
                            external: has_external.then_some(Verdict::OtherFamily),
                        });
                        continue;
                    };
                    endpoints.push(EndpointExplanation {
                        address: c.addr.to_string(),
                        slice: slice_name.clone(),
                        node,
                        cluster: verdict(&c, &cluster_set, internal_local),
                        external: has_external.then(|| verdict(&c, &external_set, external_local)),
                    });
                }
            }
            out.ports.push(PortExplanation {
                port: if port_name.is_empty() {
                    port.port.to_string()
                } else {
                    format!("{port_name} ({})", port.port)
                },
                protocol: protocol.to_string(),
                family: family.address_type().to_owned(),
                virtual_servers: vss
                    .iter()
                    .map(|(k, o)| format!("{k} ({})", kind_name(o.kind)))
                    .collect(),
                endpoints,
            });
        }
    }
    out
}

/// How the API names an address kind.
pub fn kind_name(k: AddressKind) -> &'static str {
    match k {
        AddressKind::ClusterIp => "ClusterIP",
        AddressKind::ExternalIp => "externalIP",
        AddressKind::LoadBalancer => "LoadBalancer",
        AddressKind::NodePort => "NodePort",
    }
}

/// Why `c` is or is not in `set` (the real servers of one address kind).
fn verdict_of(
    c: &Candidate,
    set: &[SocketAddr],
    local_policy: bool,
    all: &[Candidate],
    ctx: &Context,
) -> Verdict {
    if set.contains(&c.addr) {
        return if c.ready {
            Verdict::RealServer
        } else {
            Verdict::ServingTerminatingFallback
        };
    }
    let me = Some(ctx.node_name.as_str());
    let set_has_local = all
        .iter()
        .any(|c| c.node.as_deref() == me && set.contains(&c.addr));
    let fell_back = ctx.local_fallback_to_cluster && !set_has_local;
    if local_policy && c.node.as_deref() != me && !fell_back {
        return Verdict::OtherNodeLocalPolicy {
            node: c.node.as_deref().map(str::to_owned),
        };
    }
    if !(c.ready || (c.serving && c.terminating)) {
        return Verdict::NotReady;
    }
    if !c.ready {
        return Verdict::TerminatingWhileOthersReady;
    }
    Verdict::TopologyHintsElsewhere
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    fn web(policy: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "externalTrafficPolicy": policy,
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}
        }))
        .unwrap()
    }

    fn slices() -> Vec<Slice> {
        let s = crate::slim::slice_from_json;
        vec![
            s(json!({
                "metadata": {"name": "web-a", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
                "endpoints": [
                    {"addresses": ["10.244.0.5"], "conditions": {"ready": true}, "nodeName": "node-a"},
                    {"addresses": ["10.244.1.6"], "conditions": {"ready": true}, "nodeName": "node-b"},
                    {"addresses": ["10.244.1.7"], "conditions": {"ready": false}, "nodeName": "node-b"},
                    {"addresses": ["10.244.0.8"], "conditions": {"ready": false, "serving": true, "terminating": true}, "nodeName": "node-a"}
                ]
            })),
            s(json!({
                "metadata": {"name": "web-old", "namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": "IPv4",
                "ports": [{"name": "metrics", "protocol": "TCP", "port": 9090}],
                "endpoints": [{"addresses": ["10.244.2.9"], "nodeName": "node-c"}]
            })),
        ]
    }

    #[test]
    fn every_endpoint_gets_its_reason() {
        let slices = slices();
        let refs: Vec<&Slice> = slices.iter().collect();
        let e = explain(&web("Local"), &refs, &ctx());
        assert_eq!(e.service, "shop/web");
        assert_eq!(e.not_programmed, None);
        assert_eq!(e.ports.len(), 1);
        let p = &e.ports[0];
        assert_eq!(p.port, "http (80)");
        assert_eq!(
            p.virtual_servers,
            [
                "TCP 10.96.0.10:80 (ClusterIP)",
                "TCP 192.168.1.10:30080 (NodePort)"
            ]
        );
        let got: Vec<(&str, &Verdict, Option<&Verdict>)> = p
            .endpoints
            .iter()
            .map(|e| (e.address.as_str(), &e.cluster, e.external.as_ref()))
            .collect();
        let other_b = Verdict::OtherNodeLocalPolicy {
            node: Some("node-b".into()),
        };
        let no_port = Verdict::NoMatchingPort {
            slice_ports: vec!["metrics/TCP".into()],
        };
        assert_eq!(
            got,
            [
                (
                    "10.244.0.5:8080",
                    &Verdict::RealServer,
                    Some(&Verdict::RealServer)
                ),
                ("10.244.1.6:8080", &Verdict::RealServer, Some(&other_b)),
                ("10.244.1.7:8080", &Verdict::NotReady, Some(&other_b)),
                (
                    "10.244.0.8:8080",
                    &Verdict::TerminatingWhileOthersReady,
                    Some(&Verdict::TerminatingWhileOthersReady)
                ),
                ("10.244.2.9", &no_port, Some(&no_port)),
            ]
        );
        // The verdicts agree with the desired state itself.
        let state = service_state(&web("Local"), &refs, &ctx()).unwrap();
        for (key, (vs, owner)) in &state.virtual_servers {
            for ep in &p.endpoints {
                let v = if owner.kind.is_external() {
                    ep.external.as_ref().unwrap()
                } else {
                    &ep.cluster
                };
                let in_kernel = ep
                    .address
                    .parse::<SocketAddr>()
                    .is_ok_and(|a| vs.real_servers.contains_key(&a));
                assert_eq!(v.is_real_server(), in_kernel, "{key} {}", ep.address);
            }
        }
    }

    #[test]
    fn the_serving_terminating_fallback_and_skipped_services_are_named() {
        let mut slices = slices();
        for ep in &mut slices[0].endpoints {
            if ep.terminating != Some(true) {
                ep.ready = Some(false);
            }
        }
        let refs: Vec<&Slice> = slices.iter().collect();
        let e = explain(&web("Cluster"), &refs, &ctx());
        let fallback = &e.ports[0].endpoints[3];
        assert_eq!(fallback.cluster, Verdict::ServingTerminatingFallback);
        assert_eq!(e.ports[0].endpoints[0].cluster, Verdict::NotReady);

        let mut headless = web("Cluster");
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let e = explain(&headless, &refs, &ctx());
        assert!(e.not_programmed.unwrap().contains("headless"));
        let mut bad = web("Cluster");
        bad.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 0;
        let e = explain(&bad, &refs, &ctx());
        assert_eq!(
            e.not_programmed.as_deref(),
            Some("Service shop/web: spec.ports[0].port: 0 is not a port")
        );
    }
}
