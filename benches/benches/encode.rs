//! Message encoding, the other pure part of a sync: the IPVS requests that
//! load N Services × 10 endpoints (one pipelined batch), one endpoint
//! change's two requests, parsing a destination reply back, and the
//! nfnetlink element batch of the whole nftables table (the first sync's
//! write) and of one endpoint change.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use kipvs_benches::{ipvs_load, synthetic};
use kipvs_engine::desired;
use kipvs_engine::model::Slice;
use kipvs_ipvs::message::{emit_request, parse_reply};
use kipvs_ipvs::{Destination, Op};
use kipvs_nft::{Element, ElementDiff};
use std::collections::BTreeSet;
use std::hint::black_box;

/// A family id as nlctrl might resolve it; the bytes do not depend on it
/// beyond the header.
const FAMILY_ID: u16 = 0x1c;
const FLAGS: u16 = 0x05; // NLM_F_REQUEST | NLM_F_ACK

fn encode_all(ops: &[Op]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(ops.len() * 96);
    for (seq, op) in ops.iter().enumerate() {
        emit_request(&mut buf, FAMILY_ID, seq as u32, FLAGS, op.message());
    }
    buf
}

/// Every nftables element of the synthetic cluster, as the agent derives
/// them.
fn elements(n: u32, e: u32) -> BTreeSet<Element> {
    let ctx = synthetic::context();
    let mut out = BTreeSet::new();
    for i in 0..n {
        let svc = synthetic::service(i);
        let slice = Slice::from(synthetic::slice(i, e, None));
        let state = desired::service_state(&svc, &[&slice], &ctx).expect("a valid Service");
        out.extend(desired::firewall::service_elements(&svc, &state, &ctx));
    }
    out
}

fn ipvs(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_ipvs");
    g.sample_size(10);
    for n in [10_000u32, 50_000] {
        let ops = ipvs_load::ops(n, 10);
        g.throughput(Throughput::Elements(ops.len() as u64));
        g.bench_with_input(BenchmarkId::new("load_batch", n), &ops, |b, ops| {
            b.iter(|| encode_all(black_box(ops)))
        });
    }
    let key = ipvs_load::service_key(7);
    let change = [
        Op::AddDestination {
            service: key,
            destination: Destination::new(synthetic::endpoint_ip(7, 0, 10), 8080),
        },
        Op::EditDestination {
            service: key,
            destination: Destination::new(synthetic::endpoint_ip(7, 1, 10), 8080).with_weight(0),
        },
    ];
    g.throughput(Throughput::Elements(2));
    g.bench_function("one_endpoint_change", |b| {
        b.iter(|| encode_all(black_box(&change)))
    });
    // A destination as the kernel returns it in a dump: the same
    // attributes, parsed back.
    let reply = {
        let mut buf = Vec::new();
        emit_request(&mut buf, FAMILY_ID, 1, 0, change[0].message());
        buf
    };
    let payload = &reply[16..]; // after nlmsghdr: genlmsghdr + attributes
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_destination", |b| {
        b.iter(|| parse_reply(FAMILY_ID, black_box(payload)).expect("parses"))
    });
    g.finish();
}

fn nft(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_nft");
    g.sample_size(10);
    let n = 10_000;
    let all = elements(n, 10);
    let add_all = ElementDiff {
        add: all
            .iter()
            .filter(|e| kipvs_nft::netlink::supported(e))
            .cloned()
            .collect(),
        delete: BTreeSet::new(),
    };
    g.throughput(Throughput::Elements(add_all.add.len() as u64));
    g.bench_with_input(BenchmarkId::new("whole_table", n), &add_all, |b, d| {
        b.iter(|| kipvs_nft::netlink::encode(black_box(d), 1).expect("encodes"))
    });
    // One endpoint of one Service moved: its elements before and after.
    let ctx = synthetic::context();
    let svc = synthetic::service(n / 2);
    let of = |moved: Option<u32>| {
        let slice = Slice::from(synthetic::slice(n / 2, 10, moved));
        let state = desired::service_state(&svc, &[&slice], &ctx).expect("a valid Service");
        desired::firewall::service_elements(&svc, &state, &ctx)
    };
    let (before, after) = (of(None), of(Some(0)));
    let change = ElementDiff {
        add: after.difference(&before).cloned().collect(),
        delete: before.difference(&after).cloned().collect(),
    };
    g.throughput(Throughput::Elements(
        (change.add.len() + change.delete.len()) as u64,
    ));
    g.bench_with_input(
        BenchmarkId::new("one_endpoint_change", n),
        &change,
        |b, d| b.iter(|| kipvs_nft::netlink::encode(black_box(d), 1).expect("encodes")),
    );
    g.finish();
}

criterion_group!(benches, ipvs, nft);
criterion_main!(benches);
