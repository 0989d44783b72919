//! HNSW over a graph store, tenant-aware from the ground up.
//!
//! The algorithm (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
//! search using Hierarchical Navigable Small World graphs") lives here, generic over
//! [`GraphStore`], so the same code runs on [`MemoryStore`] in unit tests and on PostgreSQL
//! pages in the `ruhnsw` index. Every node carries a tenant ordinal; a node links only to
//! nodes of its own tenant, and each tenant has its own entry point, so a search for one
//! tenant walks only that tenant's graph (filtering inside the graph, never after it).

mod graph;
pub mod page;
mod store;

pub use graph::{Hnsw, IdHasher, IdSet, Params, Scan, Scored, MAX_LEVEL};
pub use store::{GraphStore, MemoryStore, NodeId, TenantOrd};

/// Distance functions the index orders by (smaller is closer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Metric {
    L2 = 1,
    Cosine,
    InnerProduct,
    L1,
}

impl Metric {
    /// The distance as the index compares it: squared L2 (same order as L2, no square
    /// root), cosine distance, negative inner product, L1.
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        let k = crate::distance::Kernels::best();
        match self {
            Metric::L2 => (k.l2_squared)(a, b),
            Metric::Cosine => {
                let (ab, aa, bb) = (k.cosine_parts)(a, b);
                let denom = (aa * bb).sqrt();
                if denom > 0.0 {
                    1.0 - (ab / denom).clamp(-1.0, 1.0)
                } else {
                    1.0
                }
            }
            Metric::InnerProduct => -(k.dot)(a, b),
            Metric::L1 => (k.l1)(a, b),
        }
    }
}

impl Metric {
    /// The metric's code in the index metapage.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Metric> {
        [Metric::L2, Metric::Cosine, Metric::InnerProduct, Metric::L1]
            .into_iter()
            .find(|m| m.code() == code)
    }
}
