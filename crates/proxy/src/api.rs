//! The agent's shared message and status types, in a module that does no
//! work, so that the sources, the mailbox, the sync thread and the HTTP
//! servers all depend on it and not on each other:
//!
//! - [`SourceEvent`]: what a source (or the HTTP server) sends the sync
//!   thread;
//! - [`Query`]: a question for the sync thread, with its answer channel;
//! - [`Status`]: what the sync thread publishes (health, metrics, the
//!   health-check ports);
//! - [`VirtualServerInfo`]: the `/kipvs/v1/virtual-servers` wire type.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kipvs_engine::controller::{Input, SyncReport};
use kipvs_engine::model::ObjectRef;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

/// One change from a source.
#[derive(Debug)]
pub enum SourceEvent {
    /// One object changed.
    Input(Input),
    /// The full set of Services (a list or relist).
    ReplaceServices(Vec<Service>),
    /// The full set of EndpointSlices (a list or relist).
    ReplaceSlices(Vec<EndpointSlice>),
    /// This node's Node object (None: deleted or not found).
    Node(Option<Box<Node>>),
    /// A source error worth reporting (the source keeps retrying).
    Error(String),
    /// Not a change: a question for the sync thread from the local HTTP
    /// endpoints (`kipvs list`, `kipvs explain`), answered on its channel.
    Query(Query),
}

/// What the agent shows the outside (health, metrics, `kipvs explain`).
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// When the kernel was last brought up to date.
    pub last_sync: Option<SystemTime>,
    /// When the oldest change still waiting was queued.
    pub queued_since: Option<SystemTime>,
    pub last_report: SyncReport,
    pub syncs: u64,
    pub resyncs: u64,
    /// Netlink messages sent by all syncs.
    pub messages: u64,
    /// The current per-Service errors.
    pub errors: Vec<String>,
    /// Source errors (watch failures, bad manifests), latest last, capped.
    pub source_errors: Vec<String>,
    /// Whether the first full sync has happened.
    pub ready: bool,
    /// This node's Node object, when known.
    pub node: Option<Box<Node>>,
    /// The metrics the sync loop updates and `/metrics` serves.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The health-check node ports and what they answer for.
    pub service_health: BTreeMap<u16, kipvs_engine::local::ServiceHealth>,
    /// This node's NodePort addresses as of the last sync (the engine's
    /// [`kipvs_engine::desired::Context::nodeport_addresses`]): the health-check
    /// servers listen there when `nodePortAddresses` restricts them.
    pub nodeport_addresses: Vec<std::net::IpAddr>,
    /// Woken after every sync that published `service_health` and
    /// `nodeport_addresses`: the health-check servers then follow a port or
    /// address change and retry the listeners that failed to bind.
    pub service_health_changed: Arc<tokio::sync::Notify>,
}

/// A question for the sync thread, with where to send the answer.
#[derive(Debug)]
pub enum Query {
    /// Every virtual server kipvs programs, with its Service port.
    VirtualServers(tokio::sync::oneshot::Sender<Vec<VirtualServerInfo>>),
    /// [`kipvs_engine::controller::Engine::explain`] of one Service.
    Explain(
        ObjectRef,
        tokio::sync::oneshot::Sender<Option<kipvs_engine::controller::AgentExplanation>>,
    ),
}

/// A virtual server and the Service port it serves (the inspection API's
/// `/kipvs/v1/virtual-servers`; a stable schema).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtualServerInfo {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    pub address: std::net::IpAddr,
    pub port: u16,
    /// `namespace/name`.
    pub service: String,
    /// The Service port's name (empty for an unnamed single port).
    pub port_name: String,
    /// `ClusterIP`, `externalIP`, `LoadBalancer` or `NodePort`.
    pub kind: String,
    /// The Service port's number (`spec.ports[].port`; for a NodePort
    /// virtual server too, whose own port is the node port). Absent from
    /// agents older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u16>,
}

impl VirtualServerInfo {
    /// The Service port as `kipvs list` shows it: its name when it has one,
    /// its number otherwise (`?` if an older agent did not say).
    pub fn port_label(&self) -> String {
        if !self.port_name.is_empty() {
            self.port_name.clone()
        } else {
            self.service_port
                .map_or_else(|| "?".to_owned(), |p| p.to_string())
        }
    }
}
