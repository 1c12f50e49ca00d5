//! The pure parts at scale: computing the desired state of every Service,
//! one Service's state (what an endpoint change costs), and the diff of a
//! whole table with one endpoint changed.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kipvs_benches::synthetic;
use kipvs_engine::desired;
use kipvs_engine::diff::{self, DiffConfig, Draining, ObservedRealServer, ObservedVirtualServer};
use kipvs_engine::model::{ObjectRef, Slice};
use std::collections::BTreeMap;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let ctx = synthetic::context();
    let mut g = c.benchmark_group("desired");
    g.sample_size(10);
    for n in [10_000u32, 50_000] {
        let (services, slices) = synthetic::cluster(n, 10);
        let slices: Vec<Slice> = slices.into_iter().map(Slice::from).collect();
        let by_service: BTreeMap<ObjectRef, Vec<_>> = slices
            .iter()
            .map(|s| (s.service.clone().unwrap(), vec![s]))
            .collect();
        g.bench_with_input(BenchmarkId::new("whole_state", n), &n, |b, _| {
            b.iter(|| desired::desired_state(black_box(&services), &by_service, &ctx))
        });
        let one = &services[n as usize / 2];
        let one_slice = Slice::from(synthetic::slice(n / 2, 10, Some(3)));
        g.bench_with_input(BenchmarkId::new("one_service", n), &n, |b, _| {
            b.iter(|| desired::service_state(black_box(one), &[&one_slice], &ctx))
        });

        let (state, _) = desired::desired_state(&services, &by_service, &ctx);
        let observed: BTreeMap<_, _> = state
            .virtual_servers
            .iter()
            .map(|(k, (vs, _))| {
                let rs = vs
                    .real_servers
                    .iter()
                    .map(|(a, r)| {
                        (
                            *a,
                            ObservedRealServer {
                                weight: r.weight,
                                active_conns: 0,
                                inactive_conns: 0,
                            },
                        )
                    })
                    .collect();
                (
                    *k,
                    ObservedVirtualServer {
                        key: *k,
                        scheduler: Some(vs.scheduler.clone()),
                        persistence: None,
                        real_servers: rs,
                        counts_fresh: true,
                    },
                )
            })
            .collect();
        let mut wanted: BTreeMap<_, _> = state
            .virtual_servers
            .iter()
            .map(|(k, (vs, _))| (*k, vs.clone()))
            .collect();
        let changed = desired::service_state(one, &[&one_slice], &ctx).unwrap();
        for (k, (vs, _)) in changed.virtual_servers {
            wanted.insert(k, vs);
        }
        g.bench_with_input(
            BenchmarkId::new("diff_whole_table_one_change", n),
            &n,
            |b, _| {
                b.iter(|| {
                    let (changes, _) = diff::diff(
                        black_box(&observed),
                        &wanted,
                        &Draining::new(),
                        0,
                        DiffConfig::default(),
                    );
                    assert_eq!(changes.len(), 2);
                    changes
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
