//! kipvs's pure core: Kubernetes objects in, kernel changes out, no I/O.
//!
//! Every input is a value (Services, EndpointSlices, this node's facts, the
//! configuration, the kernel's state as read, the clock) and every output
//! is plain data, so every rule here is table- and property-tested on the
//! host. This crate has no async runtime, HTTP, Kubernetes client or
//! socket; the agent (`kipvs-proxy`) does the I/O around it.
//!
//! - [`slim`]: what the engine keeps of an object (only the fields a
//!   decision reads; an EndpointSlice as a compact [`model::Slice`]);
//! - [`desired`]: Services + EndpointSlices + [`desired::Context`] → the
//!   virtual servers and kube-ipvs0 addresses ([`model`]);
//!   [`desired::firewall`] → the nftables set elements;
//!   [`desired::explain`] tells the same rules per endpoint;
//!   [`local`] → each Service's `Local`-policy endpoints (health checks);
//! - [`diff`]: kernel state + desired state → [`diff::Change`]s, with
//!   graceful termination;
//! - [`conntrack`]: which conntrack entries a change leaves stale;
//! - [`controller`]: the sync engine, incremental per Service, with a mirror
//!   of the kernel, the ownership record and the retry backoff, driving a
//!   [`controller::Dataplane`] (the real one is `kipvs_proxy::kernel`, an
//!   in-memory one is in the tests);
//! - [`labels`]: the well-known labels and annotations kipvs reads.

pub mod conntrack;
pub mod controller;
pub mod desired;
pub mod diff;
pub mod labels;
pub mod local;
pub mod model;
pub mod slim;
