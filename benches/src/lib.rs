//! Benchmarks for kipvs, and the synthetic clusters they load.
//!
//! - `benches/desired.rs` (criterion): the desired-state computation and the
//!   diff at 10k and 50k Services, on the host — pure code, no kernel.
//! - `benches/encode.rs` (criterion): message encoding — the IPVS requests
//!   of a whole load at 10k/50k Services and of one endpoint change, parsing
//!   a destination back, and the nfnetlink element batches of the whole
//!   nftables table at 10k Services and of one endpoint change.
//! - `benches/manifests.rs` (criterion): reading the agent benchmark's
//!   manifest directory at 10k Services (`Manifests::parse`), with the
//!   fast YAML reader and with serde-saphyr alone
//!   (`benches/results/manifests.md`).
//! - [`synthetic`]: N Services × E endpoints, shaped like a real cluster's
//!   ClusterIP Services, shared by the micro-benchmarks and the lab benches.
//! - [`ipvs_load`]: an empty IPVS table loaded three ways (kipvs pipelined,
//!   kipvs one request per round trip, `ipvsadm -R`) and read back.
//! - [`agent_sync`]: `kipvs proxy --manifests` converging on a cluster and
//!   applying single endpoint changes, against `ipvsadm -R` + `ip -batch`.
//! - [`soak`]: the agent on the fake API server through minutes of churn,
//!   restarts and hand deletions, per minute syncs, messages and RSS.
//! - [`heap`]: the agent's live heap after converging from the fake API
//!   server, by the kipvs function that allocated it (`kipvs-heap`, dhat).
//! - [`stall`]: how late real-time probes wake, one per CPU, while IPVS
//!   loads, holds (rate estimator on and off) and deletes a large table.
//! - [`compare`]: kipvs side by side with `ipvsadm`, `iptables-legacy`,
//!   `iptables-nft` and `nftables` (rules shaped like kube-proxy's, from
//!   [`peer_rules`]): load, add a Service, change an endpoint, delete a
//!   Service, and TCP connect latency through each.
//!
//! The kernel-side benchmarks run inside the kernel lab (`kipvs-bench …`,
//! driven by `cargo xtask bench …`, a fresh VM per measurement) and publish
//! their results under `benches/results/`.

pub mod agent_sync;
pub mod compare;
pub mod heap;
pub mod ipvs_load;
pub mod peer_rules;
pub mod soak;
pub mod stall;
pub mod synthetic;

use std::time::Instant;

/// Why a measurement did not produce a number.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Ipvs(#[from] kipvs_ipvs::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The backend did not end up holding what it should, or a step failed.
    #[error("{0}")]
    Failed(String),
    /// A step took longer than the measurement's limit.
    #[error("timeout: {0}")]
    Timeout(String),
}

pub(crate) fn seconds_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
