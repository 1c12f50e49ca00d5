//! What kipvs's tests and benchmarks share, and nothing ships: a dev-only
//! crate (`publish = false`; only dev-dependencies and the benches crate
//! use it, so `cargo tree -p kipvs -e normal` never shows it).
//!
//! - [`fake_api`]: an in-process fake Kubernetes API server speaking real
//!   HTTP list/watch, so controller tests and benchmarks run kube's real
//!   client code;
//! - [`memory`]: an in-memory `Dataplane` that records what the engine
//!   asks of the kernel, with switchable faults;
//! - [`metrics_text`]: reads the agent's `/metrics` text back;
//! - [`lab`]: the kernel-lab tests' shell, namespace and waiting helpers.

pub mod fake_api;
pub mod lab;
pub mod memory;
pub mod metrics_text;
