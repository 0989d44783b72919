//! Data and measures shared by the graph's unit tests.

use std::collections::HashSet;

use super::graph::Hnsw;
use super::store::{GraphStore, MemoryStore, NodeId, TenantOrd};

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn gauss(&mut self) -> f32 {
        ((-2.0 * self.next().ln()).sqrt() * (std::f64::consts::TAU * self.next()).cos()) as f32
    }
}

/// Clustered vectors: tenants draw from shared topics (cluster centres), as real tenants'
/// embeddings do.
pub fn dataset(n: usize, dims: usize, tenants: u32, seed: u64) -> Vec<(Vec<f32>, TenantOrd)> {
    let mut rng = Rng(seed);
    let centres: Vec<Vec<f32>> = (0..20)
        .map(|_| (0..dims).map(|_| rng.gauss() * 3.0).collect())
        .collect();
    (0..n)
        .map(|i| {
            let c = &centres[(rng.next() * 20.0) as usize % 20];
            let v = c.iter().map(|x| x + rng.gauss()).collect();
            (v, (i as u32) % tenants)
        })
        .collect()
}

pub fn recall(
    h: &Hnsw<MemoryStore>,
    queries: &[(Vec<f32>, TenantOrd)],
    k: usize,
    ef: usize,
) -> f64 {
    let mut hit = 0;
    for (q, t) in queries {
        let want: HashSet<NodeId> = h.exact(q, *t, k).into_iter().map(|s| s.id).collect();
        let got = h.search(q, *t, k, ef);
        assert!(
            got.iter().all(|s| h.store().tenant(s.id) == *t),
            "only the tenant's own nodes"
        );
        hit += got.iter().filter(|s| want.contains(&s.id)).count();
    }
    hit as f64 / (queries.len() * k) as f64
}
