//! Well-known Kubernetes labels and annotations kipvs reads.

/// Label on Services and EndpointSlices naming the proxy that serves them;
/// kube-proxy (and kipvs) ignore objects carrying it unless it names them.
pub const SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label on EndpointSlices of headless Services.
pub const HEADLESS: &str = "service.kubernetes.io/headless";
/// Label joining an EndpointSlice to its Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Endpoints labelled `true` are not mirrored to EndpointSlices.
pub const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
/// The label naming an EndpointSlice's managing controller.
pub const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// The Service annotation for topology-aware routing (`Auto`).
pub const TOPOLOGY_MODE: &str = "service.kubernetes.io/topology-mode";
/// Its older spelling.
pub const TOPOLOGY_AWARE_HINTS: &str = "service.kubernetes.io/topology-aware-hints";
/// The node label holding its zone.
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// EndpointSlice annotation: when the change behind it was made (for
/// `kubeproxy_network_programming_duration_seconds`).
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// The label selector kube-proxy watches Services and EndpointSlices with:
/// nothing another proxy serves, no headless Service's slices.
pub fn watch_selector(service_proxy_name: Option<&str>) -> String {
    match service_proxy_name {
        Some(name) => format!("{SERVICE_PROXY_NAME}={name},!{HEADLESS}"),
        None => format!("!{SERVICE_PROXY_NAME},!{HEADLESS}"),
    }
}
