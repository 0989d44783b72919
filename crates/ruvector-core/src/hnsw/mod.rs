//! HNSW over a graph store, tenant-aware from the ground up.
//!
//! The algorithm (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
//! search using Hierarchical Navigable Small World graphs") lives here, generic over
//! [`GraphStore`], so the same code runs on [`MemoryStore`] in unit tests and on PostgreSQL
//! pages in the `ruhnsw` index. Every node carries a tenant ordinal; a node links only to
//! nodes of its own tenant, and each tenant has its own entry point, so a search for one
//! tenant walks only that tenant's graph (filtering inside the graph, never after it).

pub mod contract;
mod graph;
pub mod inspect;
pub mod page;
mod parallel;
pub mod rounding;
mod store;
#[cfg(test)]
mod testdata;

pub use graph::{
    exact_is_cheaper, search_width, Exact, Hit, Hnsw, IdHasher, IdSet, Merge, Params, Scan, Scored,
    MAX_LEVEL, MAX_WIDENING,
};
pub use parallel::{link_all, ParallelLink};
pub use store::{GraphStore, MemoryStore, NodeId, SharedStore, TenantOrd};

/// Distance functions the index orders by (smaller is closer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Metric {
    L2 = 1,
    Cosine,
    InnerProduct,
    L1,
    /// Hamming distance of bit strings, stored one bit per element as 0.0 or 1.0 (see
    /// [`crate::vector::bits_as_elements`]): the L1 distance of such vectors, exactly.
    Hamming,
    /// Jaccard distance of bit strings, stored as for [`Metric::Hamming`].
    Jaccard,
    /// Cosine distance of half-precision vectors (`halfvec_cosine_ops`), stored as given
    /// rather than scaled to unit length ([`Metric::prepare`]): a `halfvec`'s halves are
    /// stored exactly, so the index's distance is the operator's and its rows need no
    /// re-ranking (scaled, they would be rounded again). A comparison computes three sums
    /// instead of one.
    HalfCosine,
}

impl Metric {
    /// The distance as the index compares it: squared L2 (same order as L2, no square
    /// root), cosine distance, negative inner product, L1; for bit strings the Hamming and
    /// Jaccard distances, with `jaccard_distance`'s value (1 when no bit is set in both).
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        let k = crate::distance::Kernels::best();
        match self {
            Metric::L2 => (k.l2_squared)(a, b),
            Metric::Cosine | Metric::HalfCosine => {
                let (ab, aa, bb) = (k.cosine_parts)(a, b);
                let denom = (aa * bb).sqrt();
                if denom > 0.0 {
                    1.0 - (ab / denom).clamp(-1.0, 1.0)
                } else {
                    1.0
                }
            }
            Metric::InnerProduct => -(k.dot)(a, b),
            Metric::L1 | Metric::Hamming => (k.l1)(a, b),
            Metric::Jaccard => {
                // Elements are 0 or 1: the dot product counts the bits set in both, a
                // vector's own dot product its set bits; sums of integers below 2^24 are
                // exact in f32.
                let both = (k.dot)(a, b);
                if both == 0.0 {
                    return 1.0;
                }
                1.0 - both / ((k.dot)(a, a) + (k.dot)(b, b) - both)
            }
        }
    }

    /// The distance the graph's structure is built with: the metric itself, except
    /// Euclidean distance for inner product. Inner product is not a metric: a node of small
    /// norm is nobody's near neighbour under it, so the selection heuristic drops every
    /// link to it and it becomes unreachable (63% of the nodes of small non-negative
    /// vectors; pgvector's graph leaves over 80% unreachable on the same data). Links
    /// chosen by Euclidean distance reach every node; an inner-product graph adds links
    /// chosen by inner product itself for its searches (see `Hnsw::link`).
    pub fn construction(self) -> Metric {
        match self {
            Metric::InnerProduct => Metric::L2,
            m => m,
        }
    }
}

impl Metric {
    /// A vector as the index stores and compares it: scaled to unit length for cosine (a
    /// comparison is then one dot product instead of three), unchanged otherwise. A zero
    /// vector stays zero (its cosine distance to anything is 1 either way).
    pub fn prepare(self, v: &[f32]) -> std::borrow::Cow<'_, [f32]> {
        if self != Metric::Cosine {
            return std::borrow::Cow::Borrowed(v);
        }
        let k = crate::distance::Kernels::best();
        let norm = (k.dot)(v, v).sqrt();
        if norm > 0.0 && norm.is_finite() {
            std::borrow::Cow::Owned(v.iter().map(|x| x / norm).collect())
        } else {
            std::borrow::Cow::Borrowed(v)
        }
    }

    /// The distance between two prepared vectors ([`Metric::prepare`]); orders like
    /// [`Metric::distance`] on the original vectors.
    #[inline]
    pub fn prepared_distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine => {
                let k = crate::distance::Kernels::best();
                1.0 - (k.dot)(a, b).clamp(-1.0, 1.0)
            }
            _ => self.distance(a, b),
        }
    }

    /// Whether the index holds `v`: a zero vector has no direction, so a cosine index leaves
    /// it out (its distance to anything is undefined), as pgvector does.
    pub fn indexes(self, v: &[f32]) -> bool {
        !matches!(self, Metric::Cosine | Metric::HalfCosine) || v.iter().any(|&x| x != 0.0)
    }

    /// The metric's code in the index metapage.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Metric> {
        [
            Metric::L2,
            Metric::Cosine,
            Metric::InnerProduct,
            Metric::L1,
            Metric::Hamming,
            Metric::Jaccard,
            Metric::HalfCosine,
        ]
        .into_iter()
        .find(|m| m.code() == code)
    }
}
