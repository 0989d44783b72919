//! Nanoseconds per distance, scalar reference vs SIMD, at common embedding sizes.
//! `scripts/bench-kernels` runs this and writes the table to target/bench/kernels.md.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use rand::{Rng, SeedableRng};
use ruvector_core::distance::Kernels;
use std::time::Duration;

const DIMS: [usize; 4] = [128, 384, 768, 1536];

/// One distance computed with a given kernel set.
type Op = fn(&Kernels, &[f32], &[f32]) -> f32;

fn kernels() -> Vec<Kernels> {
    [Some(Kernels::scalar()), Kernels::avx2(), Kernels::avx512()]
        .into_iter()
        .flatten()
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for dim in DIMS {
        let a: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let b: Vec<f32> = (0..dim).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let ops: [(&str, Op); 4] = [
            ("l2_squared", |k, a, b| (k.l2_squared)(a, b)),
            ("dot", |k, a, b| (k.dot)(a, b)),
            ("cosine", |k, a, b| {
                let (ab, aa, bb) = (k.cosine_parts)(a, b);
                ab + aa + bb
            }),
            ("l1", |k, a, b| (k.l1)(a, b)),
        ];
        for (op, f) in ops {
            let mut group = c.benchmark_group(format!("{op}/{dim}"));
            for k in kernels() {
                group.bench_with_input(BenchmarkId::from_parameter(k.name), &k, |bench, k| {
                    bench.iter(|| f(k, black_box(&a), black_box(&b)))
                });
            }
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
