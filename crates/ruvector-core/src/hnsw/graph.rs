//! Insert and search.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashSet};

use super::store::{GraphStore, NodeId, TenantOrd};
use super::Metric;

/// Index parameters.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Links per node on upper layers (twice this on layer 0).
    pub m: usize,
    /// Candidate list size while inserting.
    pub ef_construction: usize,
    pub metric: Metric,
    /// Tenants with at most this many nodes are searched exactly.
    pub exact_threshold: usize,
    /// Seed of the level generator (deterministic builds).
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            m: 16,
            ef_construction: 64,
            metric: Metric::L2,
            exact_threshold: 0,
            seed: 0x5eed_1234_abcd_0001,
        }
    }
}

/// A node and its distance to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    pub dist: f32,
    pub id: NodeId,
}

impl Eq for Scored {}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// An HNSW graph over a store.
pub struct Hnsw<S> {
    store: S,
    params: Params,
    rng: u64,
}

impl<S: GraphStore> Hnsw<S> {
    pub fn new(store: S, params: Params) -> Hnsw<S> {
        assert!(params.m >= 2, "m must be at least 2");
        Hnsw {
            store,
            params,
            rng: params.seed | 1,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    fn max_links(&self, layer: u8) -> usize {
        if layer == 0 {
            2 * self.params.m
        } else {
            self.params.m
        }
    }

    /// A level drawn from the exponential distribution with mL = 1 / ln(m).
    fn random_level(&mut self) -> u8 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let u = ((self.rng >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let ml = 1.0 / (self.params.m as f64).ln();
        ((-u.ln() * ml).floor() as u32).min(15) as u8
    }

    fn dist(&self, q: &[f32], id: NodeId) -> f32 {
        let metric = self.params.metric;
        self.store.with_vector(id, |v| metric.distance(q, v))
    }

    /// The `ef` nearest nodes to `q` reachable on `layer` from `entry`, nearest first.
    fn search_layer(&self, q: &[f32], entry: &[Scored], ef: usize, layer: u8) -> Vec<Scored> {
        let mut visited: HashSet<NodeId> = entry.iter().map(|s| s.id).collect();
        let mut candidates: BinaryHeap<Reverse<Scored>> =
            entry.iter().map(|s| Reverse(*s)).collect();
        let mut results: BinaryHeap<Scored> = entry.iter().copied().collect();
        while let Some(Reverse(c)) = candidates.pop() {
            let worst = results.peek().map_or(f32::INFINITY, |w| w.dist);
            if c.dist > worst && results.len() >= ef {
                break;
            }
            for n in self.store.neighbors(c.id, layer) {
                if !visited.insert(n) {
                    continue;
                }
                let d = self.dist(q, n);
                let worst = results.peek().map_or(f32::INFINITY, |w| w.dist);
                if results.len() < ef || d < worst {
                    let s = Scored { dist: d, id: n };
                    candidates.push(Reverse(s));
                    results.push(s);
                    if results.len() > ef {
                        results.pop();
                    }
                }
            }
        }
        results.into_sorted_vec()
    }

    /// The neighbour-selection heuristic: keep a candidate only if it is closer to the base
    /// than to every neighbour kept so far (spreads links across directions), then fill up
    /// with the nearest pruned ones.
    fn select(&self, candidates: &[Scored], m: usize) -> Vec<NodeId> {
        let mut kept: Vec<Scored> = Vec::with_capacity(m);
        let mut pruned = Vec::new();
        for &c in candidates {
            if kept.len() >= m {
                break;
            }
            let diverse = self
                .store
                .with_vector(c.id, |cv| kept.iter().all(|k| self.dist(cv, k.id) > c.dist));
            if diverse {
                kept.push(c);
            } else {
                pruned.push(c);
            }
        }
        for p in pruned {
            if kept.len() >= m {
                break;
            }
            kept.push(p);
        }
        kept.into_iter().map(|s| s.id).collect()
    }

    /// Inserts a vector of `tenant`; links it only to that tenant's nodes.
    pub fn insert(&mut self, vector: &[f32], tenant: TenantOrd) -> NodeId {
        let level = self.random_level();
        let id = self.store.push(vector, tenant, level);
        let Some((ep, ep_level)) = self.store.entry(tenant) else {
            self.store.set_entry(tenant, id, level);
            return id;
        };
        let mut cur = vec![Scored {
            dist: self.dist(vector, ep),
            id: ep,
        }];
        for layer in (level.saturating_add(1)..=ep_level).rev() {
            cur = self.search_layer(vector, &cur, 1, layer);
        }
        for layer in (0..=level.min(ep_level)).rev() {
            let found = self.search_layer(vector, &cur, self.params.ef_construction, layer);
            let neighbors = self.select(&found, self.params.m);
            self.store.set_neighbors(id, layer, &neighbors);
            for &n in &neighbors {
                let mut links = self.store.neighbors(n, layer);
                links.push(id);
                if links.len() > self.max_links(layer) {
                    let base = n;
                    let mut scored: Vec<Scored> = self.store.with_vector(base, |bv| {
                        links
                            .iter()
                            .map(|&l| Scored {
                                dist: self.dist(bv, l),
                                id: l,
                            })
                            .collect()
                    });
                    scored.sort();
                    links = self.select(&scored, self.max_links(layer));
                }
                self.store.set_neighbors(n, layer, &links);
            }
            cur = found;
        }
        if level > ep_level {
            self.store.set_entry(tenant, id, level);
        }
        id
    }

    /// The `k` nearest nodes of `tenant` to `q` (exact for small tenants), nearest first.
    pub fn search(&self, q: &[f32], tenant: TenantOrd, k: usize, ef: usize) -> Vec<Scored> {
        if self.store.tenant_len(tenant) <= self.params.exact_threshold {
            return self.exact(q, tenant, k);
        }
        let Some((ep, ep_level)) = self.store.entry(tenant) else {
            return Vec::new();
        };
        let mut cur = vec![Scored {
            dist: self.dist(q, ep),
            id: ep,
        }];
        for layer in (1..=ep_level).rev() {
            cur = self.search_layer(q, &cur, 1, layer);
        }
        let mut found = self.search_layer(q, &cur, ef.max(k), 0);
        found.truncate(k);
        found
    }

    /// The exact `k` nearest nodes of `tenant`, nearest first.
    pub fn exact(&self, q: &[f32], tenant: TenantOrd, k: usize) -> Vec<Scored> {
        let mut all: Vec<Scored> = self
            .store
            .tenant_nodes(tenant)
            .into_iter()
            .map(|id| Scored {
                dist: self.dist(q, id),
                id,
            })
            .collect();
        all.sort();
        all.truncate(k);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::super::MemoryStore;
    use super::*;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            ((self.0 >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        fn gauss(&mut self) -> f32 {
            ((-2.0 * self.next().ln()).sqrt() * (std::f64::consts::TAU * self.next()).cos()) as f32
        }
    }

    /// Clustered vectors: tenants draw from shared topics (cluster centres), as real tenants'
    /// embeddings do.
    fn dataset(n: usize, dims: usize, tenants: u32, seed: u64) -> Vec<(Vec<f32>, TenantOrd)> {
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

    fn build(data: &[(Vec<f32>, TenantOrd)], params: Params) -> Hnsw<MemoryStore> {
        let mut h = Hnsw::new(MemoryStore::new(data[0].0.len()), params);
        for (v, t) in data {
            h.insert(v, *t);
        }
        h
    }

    fn recall(
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

    #[test]
    fn recall_at_10_for_each_metric() {
        let data = dataset(3000, 32, 3, 7);
        let queries = dataset(60, 32, 3, 99);
        for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct, Metric::L1] {
            let h = build(
                &data,
                Params {
                    metric,
                    ..Params::default()
                },
            );
            let r = recall(&h, &queries, 10, 40);
            assert!(r >= 0.95, "{metric:?}: recall@10 {r}");
        }
    }

    #[test]
    fn graph_invariants_hold() {
        let data = dataset(2000, 16, 4, 3);
        let h = build(
            &data,
            Params {
                m: 8,
                ..Params::default()
            },
        );
        let s = h.store();
        for id in 0..s.len() as NodeId {
            for layer in 0..=s.level(id) {
                let links = s.neighbors(id, layer);
                assert!(links.len() <= h.max_links(layer), "degree bound");
                let unique: HashSet<_> = links.iter().collect();
                assert_eq!(unique.len(), links.len(), "no duplicate links");
                for n in links {
                    assert_ne!(n, id, "no self links");
                    assert_eq!(s.tenant(n), s.tenant(id), "links stay within the tenant");
                    assert!(s.level(n) >= layer, "a neighbour exists on the layer");
                }
            }
        }
        // Every node of each tenant is reachable on layer 0 from the tenant's entry point.
        for t in 0..4 {
            let (ep, _) = s.entry(t).unwrap();
            let mut seen = HashSet::from([ep]);
            let mut stack = vec![ep];
            while let Some(n) = stack.pop() {
                for m in s.neighbors(n, 0) {
                    if seen.insert(m) {
                        stack.push(m);
                    }
                }
            }
            assert_eq!(seen.len(), s.tenant_len(t), "tenant {t} is connected");
        }
    }

    #[test]
    fn small_tenants_are_searched_exactly() {
        let mut data = dataset(1000, 8, 1, 5);
        data.extend(dataset(7, 8, 1, 6).into_iter().map(|(v, _)| (v, 1)));
        let h = build(
            &data,
            Params {
                exact_threshold: 50,
                ..Params::default()
            },
        );
        let q = vec![0.0; 8];
        assert_eq!(h.search(&q, 1, 10, 40), h.exact(&q, 1, 10));
        assert_eq!(
            h.search(&q, 1, 10, 40).len(),
            7,
            "all of a small tenant's rows"
        );
        assert!(
            h.search(&q, 2, 10, 40).is_empty(),
            "an empty tenant has no rows"
        );
    }

    #[test]
    fn builds_are_deterministic() {
        let data = dataset(300, 8, 2, 11);
        let a = build(&data, Params::default());
        let b = build(&data, Params::default());
        for id in 0..300 {
            assert_eq!(a.store().neighbors(id, 0), b.store().neighbors(id, 0));
        }
    }
}
