//! Reading manifest mode's input: every document of the directory the
//! agent benchmark writes (`agent_sync::write_manifests`: 100 files of 100
//! Services, each with its EndpointSlice), parsed into the k8s-openapi
//! types, on one thread, from text already in memory.
//!
//! - `agent`: `Manifests::parse`, what the agent runs on each file's text
//!   (the fast reader, falling back to serde-saphyr);
//! - `fast_reader` and `serde_saphyr`: the same steps (split at `---`, the
//!   `kind:` line, one typed parse per document) with the reader switched:
//!   the fast reader in front of serde-saphyr, or serde-saphyr alone.

use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kipvs_benches::agent_sync::{SERVICES_PER_FILE, manifest_file};
use kipvs_proxy::manifest::Manifests;
use kipvs_yaml as yaml;
use serde::de::DeserializeOwned;
use std::hint::black_box;
use std::time::Duration;

/// Endpoints per Service, as in the lab's agent benchmark.
const ENDPOINTS: u32 = 10;

/// One YAML document into its type.
trait Reader {
    fn read<T: DeserializeOwned>(doc: &str) -> Result<T, serde_saphyr::Error>;
}

/// `yaml::from_str`: the fast reader, serde-saphyr when it declines.
struct Fast;
impl Reader for Fast {
    fn read<T: DeserializeOwned>(doc: &str) -> Result<T, serde_saphyr::Error> {
        yaml::from_str(doc)
    }
}

/// serde-saphyr alone.
struct Saphyr;
impl Reader for Saphyr {
    fn read<T: DeserializeOwned>(doc: &str) -> Result<T, serde_saphyr::Error> {
        serde_saphyr::from_str(doc)
    }
}

/// The documents of one generated file (separated by `---` lines).
fn documents(text: &str) -> impl Iterator<Item = &str> {
    text.split("---\n").filter(|d| !d.trim().is_empty())
}

/// What `Manifests::parse` does with these files, with reader `R`.
fn parse_all<R: Reader>(files: &[String]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let (mut services, mut slices) = (Vec::new(), Vec::new());
    for text in files {
        for doc in documents(text) {
            let kind = doc.lines().find_map(|l| l.strip_prefix("kind: "));
            match kind {
                Some("Service") => services.push(R::read(doc).unwrap()),
                Some("EndpointSlice") => slices.push(R::read(doc).unwrap()),
                other => panic!("unexpected kind {other:?}"),
            }
        }
    }
    (services, slices)
}

fn agent_parse(files: &[String]) -> Manifests {
    let mut m = Manifests::default();
    for text in files {
        assert!(m.parse("bench.yaml", text).is_empty());
    }
    m
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("manifests");
    // serde-saphyr takes over a second an iteration: equal samples of a
    // few iterations each, not criterion's growing ones.
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.measurement_time(Duration::from_secs(15));
    let n = 10_000u32;
    let unmoved = |_: u32| false;
    let files: Vec<String> = (0..n)
        .step_by(SERVICES_PER_FILE as usize)
        .map(|first| manifest_file(first, SERVICES_PER_FILE.min(n - first), ENDPOINTS, &unmoved))
        .collect();
    let bytes: usize = files.iter().map(String::len).sum();
    let docs: Vec<&str> = files.iter().flat_map(|f| documents(f)).collect();
    let declined = docs
        .iter()
        .filter(|d| yaml::fast_from_str::<serde_json::Value>(d).is_err())
        .count();
    // All three read the same objects.
    let m = agent_parse(&files);
    let fast = parse_all::<Fast>(&files);
    let slow = parse_all::<Saphyr>(&files);
    assert_eq!((&m.services, &m.endpoint_slices), (&fast.0, &fast.1));
    assert_eq!(fast, slow);
    assert_eq!(m.services.len(), n as usize);
    eprintln!(
        "manifests/{n}: {} files, {} documents, {bytes} bytes, {declined} declined by the fast reader",
        files.len(),
        docs.len()
    );
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_with_input(BenchmarkId::new("agent", n), &n, |b, _| {
        b.iter(|| agent_parse(black_box(&files)))
    });
    g.bench_with_input(BenchmarkId::new("fast_reader", n), &n, |b, _| {
        b.iter(|| parse_all::<Fast>(black_box(&files)))
    });
    g.bench_with_input(BenchmarkId::new("serde_saphyr", n), &n, |b, _| {
        b.iter(|| parse_all::<Saphyr>(black_box(&files)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
