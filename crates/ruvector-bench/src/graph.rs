//! The HNSW algorithm alone, on the in-memory store (no server): build time and recall@10
//! over an `ef_search` sweep, for tuning the algorithm on the same data the server
//! benchmarks use.

use std::cell::Cell;
use std::time::Instant;

use ruvector_core::hnsw::{GraphStore, Hnsw, MemoryStore, Metric, NodeId, Params, TenantOrd};

use crate::data::{ground_truth, Space};
use crate::pg::Result;
use crate::report;

/// `ruvector-bench graph`: the in-memory graph alone.
#[derive(clap::Args)]
pub struct Config {
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    #[arg(long, default_value_t = 384)]
    pub dims: usize,
    /// Intrinsic dimensions of the data (see `data::Space`).
    #[arg(long, default_value_t = 32)]
    pub latent: usize,
    #[arg(long, default_value_t = 500)]
    pub queries: usize,
    #[arg(long, default_value_t = 16)]
    pub m: usize,
    #[arg(long, default_value_t = 64)]
    pub ef_construction: usize,
    /// The `ef_search` values to sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 20, 40, 80, 160])]
    pub ef_search: Vec<u32>,
}

/// A read-only view of a store that counts distance computations (vector reads).
struct Counted {
    inner: MemoryStore,
    reads: Cell<u64>,
}

impl GraphStore for Counted {
    fn with_vector<R>(&self, id: NodeId, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        self.reads.set(self.reads.get() + 1);
        self.inner.with_vector(id, f)
    }
    fn tenant(&self, id: NodeId) -> TenantOrd {
        self.inner.tenant(id)
    }
    fn level(&self, id: NodeId) -> u8 {
        self.inner.level(id)
    }
    fn neighbors(&self, id: NodeId, layer: u8) -> Vec<NodeId> {
        self.inner.neighbors(id, layer)
    }
    fn replace_neighbors(&mut self, _: NodeId, _: u8, _: &[NodeId], _: &[NodeId]) -> bool {
        unreachable!("read-only")
    }
    fn push(&mut self, _: &[f32], _: TenantOrd, _: u8, _: u64) -> NodeId {
        unreachable!("read-only")
    }
    fn payload(&self, id: NodeId) -> u64 {
        self.inner.payload(id)
    }
    fn entry(&self, tenant: TenantOrd) -> Option<(NodeId, u8)> {
        self.inner.entry(tenant)
    }
    fn offer_entry(&mut self, _: TenantOrd, _: NodeId, _: u8) -> Option<(NodeId, u8)> {
        unreachable!("read-only")
    }
    fn set_entry(&mut self, _: TenantOrd, _: Option<(NodeId, u8)>) {
        unreachable!("read-only")
    }
    fn delete(&mut self, _: NodeId) {
        unreachable!("read-only")
    }
    fn tenant_nodes(&self, tenant: TenantOrd) -> Vec<NodeId> {
        self.inner.tenant_nodes(tenant)
    }
    fn tenant_len(&self, tenant: TenantOrd) -> usize {
        self.inner.tenant_len(tenant)
    }
}

pub fn run(cfg: Config) -> Result<()> {
    let space = Space::new(cfg.dims, cfg.latent);
    let data = space.sample(cfg.rows, 1);
    let queries = space.sample(cfg.queries, 2);
    let truth = ground_truth(&data, &queries, 10);

    let params = Params {
        m: cfg.m,
        ef_construction: cfg.ef_construction,
        metric: Metric::Cosine,
        ..Params::default()
    };
    let start = Instant::now();
    let mut hnsw = Hnsw::new(MemoryStore::new(cfg.dims), params);
    let ids: Vec<u64> = data
        .iter()
        .enumerate()
        .map(|(i, v)| hnsw.insert(v, 0, i as u64))
        .collect();
    println!(
        "build: {} x {} (latent {}), m = {}, ef_construction = {}: {:.2} s",
        cfg.rows,
        cfg.dims,
        cfg.latent,
        cfg.m,
        cfg.ef_construction,
        start.elapsed().as_secs_f64()
    );
    let store = hnsw.into_store();
    let degree = ids
        .iter()
        .map(|&id| store.neighbors(id, 0).len() as f64)
        .sum::<f64>()
        / ids.len() as f64;
    println!("mean degree on layer 0: {degree:.1}");
    let hnsw = Hnsw::new(
        Counted {
            inner: store,
            reads: Cell::new(0),
        },
        params,
    );
    let mut rows = Vec::new();
    for &ef in &cfg.ef_search {
        hnsw.store().reads.set(0);
        let start = Instant::now();
        let recalls: Vec<f64> = queries
            .iter()
            .zip(&truth)
            .map(|(q, t)| {
                let got = hnsw.search(q, 0, 10, ef as usize);
                let hits = t
                    .iter()
                    .filter(|&&i| got.iter().any(|s| s.id == ids[i]))
                    .count();
                hits as f64 / t.len() as f64
            })
            .collect();
        let secs = start.elapsed().as_secs_f64();
        rows.push(vec![
            ef.to_string(),
            format!("{:.4}", report::mean(&recalls)),
            format!("{:.0}", queries.len() as f64 / secs),
            format!(
                "{:.0}",
                hnsw.store().reads.get() as f64 / queries.len() as f64
            ),
        ]);
    }
    print!(
        "{}",
        report::table(
            &["ef_search", "recall@10", "QPS", "distances per query"],
            &[true, true, true, true],
            &rows
        )
    );
    Ok(())
}
