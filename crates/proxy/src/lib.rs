//! The kipvs agent: everything around the pure engine that does I/O.
//!
//! It watches Services, EndpointSlices and this node's Node, feeds them to
//! the engine (`kipvs-engine`: desired state, diff, the sync engine, all
//! pure) from one sync thread with kube-proxy's timing, and gives the
//! engine the real kernel. Kubernetes objects come from the API server or,
//! in manifest mode, from plain YAML files.
//!
//! The layers, inputs to kernel:
//! - [`source`]: kube watchers or a manifest directory → [`api::SourceEvent`]s;
//!   [`manifest`] parses plain YAML and mirrors Endpoints to EndpointSlices,
//!   [`dirwatch`] wakes manifest mode on file changes (inotify); the
//!   `kipvs-yaml` crate reads the YAML subset manifests use 7× faster than
//!   serde-saphyr and hands anything else to it;
//! - [`mailbox`]: the bounded, coalescing queue to the sync thread;
//! - [`agent`]: the sync thread, running the engine with kube-proxy's
//!   timing and publishing its status; [`memory`] gives freed heap back;
//! - [`kernel`]: the real data plane (crates/ipvs, crates/link, crates/nft,
//!   crates/conntrack) behind the engine's `Dataplane` trait;
//! - [`http`]: `/healthz`, `/livez` and the local inspection API the CLI
//!   uses (`kipvs list` names, `kipvs explain`), answered by the sync thread;
//!   [`healthcheck`] serves the Services' health-check node ports;
//!   [`metrics`] kube-proxy's metric names.
//!
//! Shared types live in modules that do no work, so that every arrow
//! between modules points one way (no import cycle): [`api`] (the agent's
//! messages, status and wire types) and [`options`] (what the agent is
//! configured with, kube-proxy's defaults, the value parsers).
//!
//! Around them: [`config`] reads kube-proxy's `KubeProxyConfiguration`
//! and its flag precedence into [`options`] (pure), [`configwatch`] notices that file
//! change, [`client`] makes the rate-limited Kubernetes client, [`oom`]
//! sets the agent's OOM score, [`run`] starts the agent (node setup,
//! IPVS timeouts, the scheduler probe), [`cleanup`] removes what kipvs (or,
//! on migration, kube-proxy) left, [`events`] records kube-proxy's
//! `Starting` event on the Node (API mode).
//!
//! Its tests' fake API server, in-memory data plane and metrics reader are in
//! the dev-only `kipvs-testkit`.

pub mod agent;
pub mod api;
pub mod cleanup;
pub mod client;
pub mod config;
pub mod configwatch;
pub mod dirwatch;
pub mod events;
pub mod healthcheck;
pub mod http;
pub mod kernel;
pub mod mailbox;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod oom;
pub mod options;
pub mod run;
pub mod source;
