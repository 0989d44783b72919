//! What the per-statement bookkeeping costs: the metrics a search statement records
//! (`observe_search`) and the integrity gate's decision (`gate`), plus closing a tenant's
//! window (`rotate`) and building a scrape of 10,000 tenants (`render`).
//! `scripts/bench-tenancy` measures the whole endpoint over HTTP and integrity sampling.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ruvector_tenancy::exposition::{render, ServerFigures, TenantFigures};
use ruvector_tenancy::integrity::{gate, Actions, Operation, State};
use ruvector_tenancy::metrics::{Histogram, TenantMetrics, Window, BUCKETS};

fn bench(c: &mut Criterion) {
    let m = TenantMetrics::default();
    m.reset(1);
    let mut us = 0u64;
    c.bench_function("observe_search", |b| {
        b.iter(|| {
            us = (us + 37) % 5_000;
            m.observe_search(black_box(us));
        })
    });
    let actions = Actions::default();
    let mut ticket = 0u64;
    for (name, state) in [
        ("gate (normal)", State::Normal),
        ("gate (critical)", State::Critical),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                ticket += 1;
                gate(black_box(state), Operation::Read, &actions, ticket, 1)
            })
        });
    }
    let mut now = 1;
    c.bench_function("rotate", |b| {
        b.iter(|| {
            now += 60_000;
            m.rotate(black_box(now), 1000, 2000);
        })
    });
    let tenants: Vec<TenantFigures> = (0..10_000u32)
        .map(|i| TenantFigures {
            database: "app".into(),
            tenant: format!("tenant-{i}"),
            vectors: i64::from(i),
            max_vectors: 1_000_000,
            searches: u64::from(i),
            latency: Histogram {
                counts: [u64::from(i); BUCKETS],
                sum_us: u64::from(i) * 300,
            },
            window: Some(Window {
                start_ms: 0,
                end_ms: 60_000,
                searches: i % 97,
                statements: i % 97,
                p50_us: Some(200),
                p99_us: Some(900),
            }),
            max_collections: u32::MAX,
            ..Default::default()
        })
        .collect();
    c.bench_function("render 10,000 tenants (top 100 + _other)", |b| {
        b.iter(|| render(&ServerFigures::default(), black_box(tenants.clone()), 100).len())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
