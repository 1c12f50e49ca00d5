//! The kipvs controller.
//!
//! It watches Services, EndpointSlices and this node's Node, computes the
//! desired IPVS state as a pure function of them and the configuration,
//! diffs it against the kernel incrementally and applies only the
//! difference. It owns the sync loop, graceful termination, metrics and
//! health. Kubernetes objects come from the API server or, in manifest
//! mode, from plain YAML files.
//!
//! The layers, inputs to kernel:
//! - [`source`]: kube watchers or a manifest directory → [`source::SourceEvent`]s;
//!   [`manifest`] parses plain YAML and mirrors Endpoints to EndpointSlices,
//!   [`dirwatch`] wakes manifest mode on file changes (inotify); [`yaml`]
//!   reads the YAML subset manifests use 8× faster than serde-saphyr and
//!   hands anything else to it;
//! - [`desired`] (pure): Services + EndpointSlices + [`desired::Context`] →
//!   the virtual servers and kube-ipvs0 addresses ([`model`]);
//!   [`desired::explain`] tells the same rules per endpoint;
//! - [`diff`] (pure): kernel state + desired state → [`diff::Change`]s, with
//!   graceful termination;
//! - [`controller`]: the sync engine, incremental per Service, with a mirror
//!   of the kernel and the ownership rule; [`agent`] runs it with
//!   kube-proxy's timing;
//! - [`kernel`]: the real data plane (crates/ipvs and crates/link);
//! - [`http`]: `/healthz`, `/livez` and the local inspection API the CLI
//!   uses (`kipvs list` names, `kipvs explain`), answered by the sync thread.
//!
//! Around them: [`config`] reads kube-proxy's `KubeProxyConfiguration`
//! and its flag precedence (pure), [`configwatch`] notices that file
//! change, [`client`] makes the rate-limited Kubernetes client, [`oom`]
//! sets the agent's OOM score, [`run`] starts the agent (node setup,
//! IPVS timeouts, the scheduler probe), [`cleanup`] removes what kipvs (or,
//! on migration, kube-proxy) left, [`events`] records kube-proxy's
//! `Starting` event on the Node (API mode).
//!
//! `fake_api` (feature `fake-api`) is an in-process fake API server speaking
//! real HTTP list/watch, for tests.

pub mod agent;
pub mod cleanup;
pub mod client;
pub mod config;
pub mod configwatch;
pub mod conntrack;
pub mod controller;
pub mod desired;
pub mod diff;
pub mod dirwatch;
pub mod events;
pub mod healthcheck;
pub mod http;
pub mod kernel;
pub mod labels;
pub mod mailbox;
pub mod manifest;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod oom;
pub mod run;
pub mod slim;
pub mod source;
pub mod yaml;

#[cfg(feature = "fake-api")]
pub mod fake_api;
