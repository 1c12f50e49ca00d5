//! Benchmarks for kipvs, and the synthetic clusters they load.
//!
//! - `benches/desired.rs` (criterion): the desired-state computation and the
//!   diff at 10k and 50k Services, on the host — pure code, no kernel.
//! - [`synthetic`]: N Services × E endpoints, shaped like a real cluster's
//!   ClusterIP Services, shared by the micro-benchmarks and the lab benches.
//!
//! Kernel-side benchmarks (rule-update latency against ipvsadm, iptables and
//! nftables) run in the kernel lab and publish their results under
//! `benches/results/`.

pub mod synthetic;
