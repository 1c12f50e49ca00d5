//! Kubernetes events kipvs records (API mode only).
//!
//! Like kube-proxy's "birth cry", the agent records one `Starting` event
//! (type Normal) on its Node once its watchers run. It goes through kube's
//! [`Recorder`], which writes `events.k8s.io/v1` Events (create, and patch
//! for a repeat within its cache window) in the `default` namespace, as
//! events about cluster-scoped objects go. kube-proxy's event names the same
//! reason and action (`Starting`, `StartKubeProxy`), so alerts and dashboards
//! keyed on them keep matching; the reporting controller is `kipvs`.
//!
//! Recording is best-effort: a failure is logged and retried a few times,
//! never fatal — proxying does not depend on it.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use std::time::Duration;

/// The reporting controller named in kipvs's events (kube-proxy: `kube-proxy`).
pub const COMPONENT: &str = "kipvs";

/// The reason of the event recorded at start (as kube-proxy's).
pub const STARTING_REASON: &str = "Starting";

/// The action of the event recorded at start (as kube-proxy's).
pub const STARTING_ACTION: &str = "StartKubeProxy";

/// The note of the event recorded at start.
pub const STARTING_NOTE: &str = "Starting kipvs.";

/// A reference to this node's Node, as kube-proxy makes it (its UID set to
/// the node's name: the agent need not have read the Node yet).
pub fn node_ref(node_name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: Some(node_name.into()),
        uid: Some(node_name.into()),
        ..Default::default()
    }
}

/// The `Starting` event.
pub fn starting() -> Event {
    Event {
        type_: EventType::Normal,
        reason: STARTING_REASON.into(),
        note: Some(STARTING_NOTE.into()),
        action: STARTING_ACTION.into(),
        secondary: None,
    }
}

/// A recorder reporting as [`COMPONENT`], the instance being this node.
pub fn recorder(client: kube::Client, node_name: &str) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: COMPONENT.into(),
            instance: Some(node_name.into()),
        },
    )
}

/// Records the `Starting` event on `node_name`'s Node, retrying up to
/// `attempts` times `retry` apart; returns whether it was recorded. Failures
/// are logged, never returned: events are advisory.
pub async fn record_starting(
    client: kube::Client,
    node_name: &str,
    attempts: u32,
    retry: Duration,
) -> bool {
    let recorder = recorder(client, node_name);
    let reference = node_ref(node_name);
    let event = starting();
    for attempt in 1..=attempts.max(1) {
        match recorder.publish(&event, &reference).await {
            Ok(()) => {
                tracing::debug!(node = node_name, "recorded the Starting event");
                return true;
            }
            Err(e) => {
                tracing::warn!(node = node_name, attempt, error = %e,
                    "recording the Starting event on the Node");
                if attempt < attempts {
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_reference_is_kube_proxys() {
        let r = node_ref("node-a");
        assert_eq!(r.kind.as_deref(), Some("Node"));
        assert_eq!(r.name.as_deref(), Some("node-a"));
        assert_eq!(r.uid.as_deref(), Some("node-a"));
        assert_eq!(r.namespace, None, "cluster-scoped");
        let e = starting();
        assert_eq!(e.type_, EventType::Normal);
        assert_eq!(e.reason, "Starting");
    }
}
