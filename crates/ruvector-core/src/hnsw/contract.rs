//! A tenant's HNSW graph contracted into regions, and its normalized connectivity λ_cut.
//!
//! The integrity monitor never cuts the raw graph: it contracts the live nodes of one
//! tenant's layer 0 into at most `max_regions` regions and takes the global minimum cut of
//! that small weighted graph ([`crate::mincut`]).
//!
//! - **Regions.** Seeds are the tenant's highest-level nodes (HNSW levels are drawn at
//!   random, so they are spread over the graph), one per 32 live nodes, at least 10 (or every
//!   node of a smaller tenant), at most `max_regions`. Every live node joins the seed it is
//!   nearest to in hops over layer-0 links (either direction). Nodes no seed reaches get seeds
//!   of their own while regions are left, then share one last region.
//! - **Edges.** The capacity between two regions is the number of layer-0 links between
//!   their live nodes. A link to a dead node (deleted in the index, or whose row is dead) is
//!   an error: a region's error rate is its dead links over all its links, and an edge's
//!   weight is capacity × (1 − the mean error rate of its two regions), at least 0.01.
//! - **λ_cut** is the minimum cut's weight divided by the smallest capacity degree of any
//!   region (the cut that isolates that region, with no errors), clamped to [0, 1]. A healthy
//!   graph of any size has λ near 1: its cheapest cut isolates one region. Links to dead nodes
//!   lower it in proportion (half the links dead: about 0.5); a graph falling apart into
//!   pieces has λ 0.

use std::collections::{HashMap, VecDeque};

use super::inspect::Snapshot;
use super::NodeId;
use crate::mincut::{stoer_wagner, WeightedGraph};

/// Live nodes per region seed.
pub const NODES_PER_REGION: usize = 32;
/// Fewest regions (for tenants large enough).
pub const MIN_REGIONS: usize = 10;
/// Smallest weight of an edge between regions that share a link.
pub const WEIGHT_FLOOR: f64 = 0.01;

/// A contracted graph and its connectivity.
#[derive(Debug, Clone)]
pub struct Contraction {
    /// Regions and weighted edges between them.
    pub graph: WeightedGraph,
    /// Live nodes per region.
    pub sizes: Vec<usize>,
    /// Dead links per region (to deleted nodes or dead rows) and all links per region.
    pub dead_links: Vec<u64>,
    pub links: Vec<u64>,
    /// Weight of the minimum cut.
    pub cut: f64,
    /// λ_cut in [0, 1].
    pub lambda: f64,
}

impl Contraction {
    /// Live nodes contracted.
    pub fn nodes(&self) -> usize {
        self.sizes.iter().sum()
    }

    /// Dead links over all links.
    pub fn error_rate(&self) -> f64 {
        let all: u64 = self.links.iter().sum();
        if all == 0 {
            0.0
        } else {
            self.dead_links.iter().sum::<u64>() as f64 / all as f64
        }
    }
}

/// Contracts the live nodes of `snapshot` (nodes it holds that are not deleted and for which
/// `dead` answers false); `None` with fewer than two live nodes (nothing to cut: λ is 1).
pub fn contract(
    snapshot: &Snapshot,
    dead: impl Fn(NodeId) -> bool,
    max_regions: usize,
) -> Option<Contraction> {
    let mut live: Vec<(NodeId, u8)> = snapshot
        .nodes()
        .filter(|(id, n)| !n.deleted && !dead(*id))
        .map(|(id, n)| (id, n.level))
        .collect();
    if live.len() < 2 {
        return None;
    }
    // Highest levels first, then by id: deterministic seeds spread over the graph.
    live.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let index: HashMap<NodeId, usize> = live
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let n = live.len();
    let max_regions = max_regions.max(2);
    let wanted = (n / NODES_PER_REGION)
        .max(MIN_REGIONS.min(n))
        .min(max_regions);

    // Undirected layer-0 adjacency among live nodes; dead links counted per node.
    let mut adjacency: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut dead_of = vec![0u64; n];
    for (i, (id, _)) in live.iter().enumerate() {
        let node = snapshot.node(*id).expect("a snapshot node");
        for t in node.links.first().map_or(&[][..], |l| &l[..]) {
            match index.get(t) {
                Some(&j) => {
                    out[i].push(j);
                    adjacency[i].push(j);
                    adjacency[j].push(i);
                }
                None => dead_of[i] += 1,
            }
        }
    }

    // Regions: multi-source BFS from the seeds, then seeds for what they do not reach.
    let mut region = vec![usize::MAX; n];
    let mut queue = VecDeque::new();
    for (seed, r) in region.iter_mut().enumerate().take(wanted) {
        *r = seed;
        queue.push_back(seed);
    }
    let mut regions = wanted;
    let grow = |queue: &mut VecDeque<usize>, region: &mut Vec<usize>| {
        while let Some(v) = queue.pop_front() {
            for &u in &adjacency[v] {
                if region[u] == usize::MAX {
                    region[u] = region[v];
                    queue.push_back(u);
                }
            }
        }
    };
    grow(&mut queue, &mut region);
    for v in 0..n {
        if region[v] != usize::MAX {
            continue;
        }
        if regions < max_regions {
            region[v] = regions;
            regions += 1;
            queue.push_back(v);
            grow(&mut queue, &mut region);
        } else {
            region[v] = regions - 1; // the last region takes the rest
        }
    }

    let mut sizes = vec![0usize; regions];
    let mut dead_links = vec![0u64; regions];
    let mut links = vec![0u64; regions];
    let mut capacity = WeightedGraph::new(regions);
    for v in 0..n {
        let r = region[v];
        sizes[r] += 1;
        dead_links[r] += dead_of[v];
        links[r] += dead_of[v] + out[v].len() as u64;
        for &u in &out[v] {
            capacity.add(r, region[u], 0.5); // each direction adds half a link to the edge
        }
    }
    let error = |r: usize| {
        if links[r] == 0 {
            0.0
        } else {
            dead_links[r] as f64 / links[r] as f64
        }
    };
    let mut graph = WeightedGraph::new(regions);
    for (a, b, cap) in capacity.edges() {
        let w = cap * (1.0 - (error(a) + error(b)) / 2.0);
        graph.add(a, b, w.max(WEIGHT_FLOOR));
    }
    let cut = stoer_wagner(&graph).map_or(0.0, |c| c.weight);
    let smallest = (0..regions)
        .map(|r| capacity.degree(r))
        .fold(f64::INFINITY, f64::min);
    let lambda = if smallest > 0.0 {
        (cut / smallest).clamp(0.0, 1.0)
    } else {
        0.0 // a region without any link to the others: the graph is in pieces
    };
    Some(Contraction {
        graph,
        sizes,
        dead_links,
        links,
        cut,
        lambda,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hnsw::inspect::Node;
    use crate::hnsw::{GraphStore, Hnsw, MemoryStore, Params};

    fn graph(n: usize, seed: u64) -> Hnsw<MemoryStore> {
        let mut h = Hnsw::new(
            MemoryStore::new(8),
            Params {
                m: 8,
                seed,
                ..Params::default()
            },
        );
        let mut x = seed | 1;
        for i in 0..n {
            let v: Vec<f32> = (0..8)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 10_000) as f32 / 10_000.0
                })
                .collect();
            h.insert(&v, 0, i as u64);
        }
        h
    }

    #[test]
    fn a_healthy_graph_has_lambda_near_one() {
        for (n, seed) in [(300, 1), (2000, 2), (5000, 3)] {
            let h = graph(n, seed);
            let c = contract(&Snapshot::of_tenant(h.store(), 0), |_| false, 256).unwrap();
            assert_eq!(c.nodes(), n);
            assert!(c.graph.len() >= MIN_REGIONS && c.graph.len() <= 256);
            assert_eq!(c.error_rate(), 0.0);
            assert!(c.lambda >= 0.8, "n {n}: λ {}", c.lambda);
        }
    }

    #[test]
    fn dead_rows_thin_the_graph_and_lower_lambda() {
        let h = graph(3000, 4);
        let snap = Snapshot::of_tenant(h.store(), 0);
        let healthy = contract(&snap, |_| false, 256).unwrap().lambda;
        let mut last = healthy;
        for share in [3, 2] {
            // Every share-th node's row is dead (deleted, not yet vacuumed).
            let c = contract(&snap, |id| id.is_multiple_of(share), 256).unwrap();
            assert!(c.error_rate() > 0.2, "{}", c.error_rate());
            assert!(
                c.lambda < last,
                "1/{share} dead: λ {} not below {last}",
                c.lambda
            );
            last = c.lambda;
        }
        assert!(
            last < 0.6 * healthy,
            "half the rows dead: λ {last}, healthy {healthy}"
        );
    }

    #[test]
    fn a_graph_in_two_pieces_has_lambda_zero() {
        let h = graph(600, 5);
        let mut snap = Snapshot::default();
        // Keep only links within each half: two pieces with no link between them.
        for (id, n) in Snapshot::of_tenant(h.store(), 0).nodes() {
            let half = id % 2;
            let links = n
                .links
                .iter()
                .map(|l| l.iter().copied().filter(|t| t % 2 == half).collect())
                .collect();
            snap.add(id, Node { links, ..n.clone() });
        }
        let c = contract(&snap, |_| false, 256).unwrap();
        assert_eq!(c.cut, 0.0);
        assert_eq!(c.lambda, 0.0);
    }

    #[test]
    fn vacuum_style_repair_restores_lambda() {
        let mut h = graph(2000, 6);
        let dead = |id: NodeId| id.is_multiple_of(2);
        let before = contract(&Snapshot::of_tenant(h.store(), 0), dead, 256)
            .unwrap()
            .lambda;
        let ids: Vec<NodeId> = (0..2000).collect();
        for &id in &ids {
            if !dead(id) {
                h.repair(id, &dead);
            }
        }
        let (entry, _) = h.store().entry(0).unwrap();
        if dead(entry) {
            let best = ids
                .iter()
                .copied()
                .filter(|&i| !dead(i))
                .max_by_key(|&i| h.store().level(i))
                .unwrap();
            let level = h.store().level(best);
            h.store_mut().set_entry(0, Some((best, level)));
        }
        for &id in &ids {
            if dead(id) {
                h.store_mut().delete(id);
            }
        }
        let after = contract(&Snapshot::of_tenant(h.store(), 0), |_| false, 256).unwrap();
        assert_eq!(after.error_rate(), 0.0);
        assert!(
            after.lambda > before + 0.2,
            "repaired λ {} vs {before}",
            after.lambda
        );
    }

    #[test]
    fn tiny_tenants_have_no_cut() {
        let h = graph(1, 7);
        assert!(contract(&Snapshot::of_tenant(h.store(), 0), |_| false, 256).is_none());
        let h = graph(5, 7);
        let c = contract(&Snapshot::of_tenant(h.store(), 0), |_| false, 256).unwrap();
        assert_eq!(c.graph.len(), 5, "every node its own region");
    }
}
