//! The kipvs controller.
//!
//! It watches Services, EndpointSlices and this node's Node, computes the
//! desired IPVS state as a pure function of them and the configuration,
//! diffs it against the kernel incrementally and applies only the
//! difference. It owns the sync loop, graceful termination, metrics and
//! health. Kubernetes objects come from the API server or, in manifest
//! mode, from plain YAML files.
//!
//! Status: not built yet; see ARCHITECTURE.md for the plan of this crate.
