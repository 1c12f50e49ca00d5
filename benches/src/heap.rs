//! Where the agent's memory goes (issue #16): the agent's own code path —
//! kube's watchers on the fake API server (real HTTP list/watch, in a
//! child process: [`serve`]),
//! [`kipvs_proxy::source::watch_api`], the mailbox and the sync thread
//! ([`kipvs_proxy::agent::run`]) — converging on N Services × E endpoints,
//! with a data plane that counts what it is asked and keeps nothing, so
//! the heap holds exactly what the agent does. The `kipvs-heap` binary runs
//! it under `dhat`'s allocator and turns dhat's profile into a breakdown
//! by the kipvs function that made each live allocation
//! ([`breakdown`]).

use crate::BenchError;
use crate::synthetic;
use kipvs_engine::controller::{Dataplane, DataplaneError, Engine, FirewallWrite, Ownership};
use kipvs_engine::diff::{Change, DiffConfig, ObservedRealServer, ObservedVirtualServer};
use kipvs_engine::model::VirtualServerKey;
use kipvs_nft::Element;
use kipvs_proxy::agent;
use kipvs_proxy::api::Status;
use kipvs_proxy::options::Timing;
use kipvs_testkit::fake_api::FakeApiServer;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A data plane with an empty kernel that accepts everything, keeps
/// nothing, and counts the virtual servers it was asked to add.
pub struct Counting {
    pub added: Arc<AtomicU64>,
    messages: u64,
}

impl Dataplane for Counting {
    fn read_virtual_servers(&mut self) -> Result<Vec<ObservedVirtualServer>, DataplaneError> {
        Ok(Vec::new())
    }
    fn list_virtual_servers(&mut self) -> Result<Vec<ObservedVirtualServer>, DataplaneError> {
        Ok(Vec::new())
    }
    fn read_addresses(&mut self) -> Result<BTreeSet<IpAddr>, DataplaneError> {
        Ok(BTreeSet::new())
    }
    fn read_real_servers(
        &mut self,
        _: &VirtualServerKey,
    ) -> Result<BTreeMap<SocketAddr, ObservedRealServer>, DataplaneError> {
        Ok(BTreeMap::new())
    }
    fn apply(&mut self, changes: &[Change]) -> Vec<Result<(), DataplaneError>> {
        self.messages += changes.len() as u64;
        let adds = changes
            .iter()
            .filter(|c| matches!(c, Change::AddVirtualServer(_)))
            .count();
        self.added.fetch_add(adds as u64, Ordering::Relaxed);
        changes.iter().map(|_| Ok(())).collect()
    }
    fn bind(&mut self, add: &[IpAddr], remove: &[IpAddr]) -> Vec<Result<(), DataplaneError>> {
        (0..add.len() + remove.len()).map(|_| Ok(())).collect()
    }
    fn messages_sent(&self) -> u64 {
        self.messages
    }
    fn read_firewall(&mut self) -> Result<Option<BTreeSet<Element>>, DataplaneError> {
        Ok(None)
    }
    fn write_firewall(&mut self, _: &FirewallWrite) -> Result<(), DataplaneError> {
        Ok(())
    }
}

/// Serves the synthetic cluster from the fake API server until killed;
/// prints the server's URL on stdout first. The profiled process starts
/// this in a child process, so the server's copy of the cluster is not in
/// the heap it measures.
pub fn serve(n: u32, e: u32) -> Result<(), BenchError> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let api = FakeApiServer::start().await?;
        let (services, slices) = synthetic::cluster(n, e);
        for s in &services {
            api.apply(s);
        }
        for s in &slices {
            api.apply(s);
        }
        println!("{}", api.url());
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// Starts the agent's source and sync thread on the API server at `url`;
/// returns once the agent has asked for all `n` virtual servers, with the
/// seconds that took. The agent keeps running (its threads are leaked) so
/// its memory can be read.
pub fn converge(
    rt: &tokio::runtime::Runtime,
    url: &str,
    n: u32,
    timeout: Duration,
) -> Result<f64, BenchError> {
    let url = url
        .parse()
        .map_err(|e| BenchError::Failed(format!("API server URL {url:?}: {e}")))?;
    let client = {
        let _in_runtime = rt.enter();
        kube::Client::try_from(kube::Config::new(url))
            .map_err(|e| BenchError::Failed(format!("kube client: {e}")))?
    };
    let start = Instant::now();
    let added = Arc::new(AtomicU64::new(0));
    let dataplane = Counting {
        added: added.clone(),
        messages: 0,
    };
    let ownership = Ownership {
        nodeport_addresses: BTreeSet::new(),
        nodeport_range: 30000..=32767,
        exclude: Vec::new(),
    };
    let engine = Engine::new(
        dataplane,
        synthetic::context(),
        ownership,
        DiffConfig::default(),
    );
    let (tx, rx) = kipvs_proxy::mailbox::mailbox();
    rt.spawn(async move {
        kipvs_proxy::source::watch_api(client, "bench-node".into(), None, tx).await;
    });
    let timing = Timing {
        sync_period: Duration::from_secs(3600),
        ..Timing::default()
    };
    let status = Arc::new(Mutex::new(Status::default()));
    std::thread::spawn(move || {
        agent::run(
            engine,
            rx,
            Box::new(|_| synthetic::context()),
            timing,
            status,
            || 0,
        )
    });
    while added.load(Ordering::Relaxed) < u64::from(n) {
        if start.elapsed() > timeout {
            return Err(BenchError::Timeout(format!(
                "{} of {n} virtual servers after {timeout:?}",
                added.load(Ordering::Relaxed)
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Live bytes at the end of a dhat profile (`dhat-heap.json`), grouped by
/// the innermost kipvs frame on each allocation's stack (`file:line
/// function`), largest first: (label, bytes, blocks).
pub fn breakdown(profile: &Value) -> Vec<(String, u64, u64)> {
    let frames: Vec<&str> = profile["ftbl"]
        .as_array()
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut groups: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for pp in profile["pps"].as_array().into_iter().flatten() {
        let bytes = pp["eb"].as_u64().unwrap_or(0);
        if bytes == 0 {
            continue;
        }
        let stack: Vec<&str> = pp["fs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| frames.get(i.as_u64()? as usize).copied())
            .collect();
        let label = stack
            .iter()
            .find_map(|f| kipvs_frame(f))
            .unwrap_or_else(|| "[no kipvs frame]".to_owned());
        let g = groups.entry(label).or_default();
        g.0 += bytes;
        g.1 += pp["ebk"].as_u64().unwrap_or(0);
    }
    let mut v: Vec<_> = groups.into_iter().map(|(k, (b, n))| (k, b, n)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

/// The crates whose frames label a row (dhat names a frame's file from its
/// crate's root: `proxy/src/controller.rs`; other crates carry a version:
/// `serde_json-1.0.154/src/…`).
const KIPVS_CRATES: &[&str] = &[
    "engine",
    "proxy",
    "ipvs",
    "ipvsadm",
    "nft",
    "link",
    "sched",
    "conntrack",
    "kipvs",
];

/// `file:line function` of a dhat frame (`0x…: name<generics> (file:line:col)`)
/// in one of [`KIPVS_CRATES`].
fn kipvs_frame(frame: &str) -> Option<String> {
    let rest = frame.split_once(": ").map_or(frame, |(_, r)| r);
    let (name, place) = rest.rsplit_once(" (")?;
    let place = place.trim_end_matches(')');
    let krate = place.split('/').next()?;
    if !KIPVS_CRATES.contains(&krate) {
        return None;
    }
    let (file, line) = match place.rsplitn(3, ':').collect::<Vec<_>>()[..] {
        [_col, line, file] => (file, line),
        _ => (place, "?"),
    };
    let name = name.split('<').next().unwrap_or(name);
    Some(format!("{file}:{line} {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_live_bytes_by_innermost_kipvs_frame() {
        let profile = json!({
            "ftbl": [
                "[root]",
                "0x1: alloc (alloc/src/alloc.rs:1:1)",
                "0x2: replace_slices<Memory> (proxy/src/controller.rs:9:9)",
                "0x3: from_slice<T> (serde_json-1.0.1/src/de.rs:2:2)",
                "0x4: {closure#0} (proxy/src/source.rs:3:3)",
            ],
            "pps": [
                {"eb": 100, "ebk": 2, "fs": [1, 2]},
                {"eb": 50, "ebk": 1, "fs": [1, 2]},
                {"eb": 400, "ebk": 4, "fs": [3, 4]},
                {"eb": 7, "ebk": 1, "fs": [3]},
                {"eb": 0, "ebk": 0, "fs": [1]},
            ]
        });
        assert_eq!(
            breakdown(&profile),
            vec![
                ("proxy/src/source.rs:3 {closure#0}".to_owned(), 400, 4),
                (
                    "proxy/src/controller.rs:9 replace_slices".to_owned(),
                    150,
                    3
                ),
                ("[no kipvs frame]".to_owned(), 7, 1),
            ]
        );
    }
}
