//! The kipvs controller.
//!
//! It watches Services, EndpointSlices and this node's Node, computes the
//! desired IPVS state as a pure function of them and the configuration,
//! diffs it against the kernel incrementally and applies only the
//! difference. It owns the sync loop, graceful termination, metrics and
//! health. Kubernetes objects come from the API server or, in manifest
//! mode, from plain YAML files.
//!
//! Modules:
//! - [`labels`]: the well-known labels and annotations, and the watch selector;
//! - [`manifest`]: manifest mode's input, with Endpoints mirrored to EndpointSlices;
//! - `fake_api` (feature `fake-api`): an in-process fake API server speaking
//!   real HTTP list/watch, for tests.

pub mod labels;
pub mod manifest;

#[cfg(feature = "fake-api")]
pub mod fake_api;
