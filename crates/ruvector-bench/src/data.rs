//! Deterministic embedding-like data and exact ground truth.
//!
//! Real embeddings have a low intrinsic dimension: documents cluster around shared topics.
//! The generator draws points around `topics` centres in a `latent`-dimensional space and
//! maps them into `dims` dimensions with one fixed random linear map, plus a little isotropic
//! noise. Queries come from the same distribution (other seeds), as real queries do. Every
//! caller with the same `dims` shares the topics and the map, so data and queries overlap.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ruvector_core::distance::cosine_distance;

/// Topic centres shared by all data of one dimensionality.
const TOPICS: usize = 40;

/// The shared topic space of one dimensionality.
pub struct Space {
    dims: usize,
    latent: usize,
    /// `latent` rows of `dims` values.
    map: Vec<f32>,
    centres: Vec<Vec<f32>>,
}

/// A standard normal sample (Box–Muller; one of the pair is enough here).
fn normal(rng: &mut StdRng) -> f32 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    let v: f64 = rng.gen();
    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
}

impl Space {
    /// The space of `dims`-dimensional vectors with `latent` intrinsic dimensions: the fewer,
    /// the easier the data is for a graph index.
    pub fn new(dims: usize, latent: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(1234 + dims as u64 * 1000 + latent as u64);
        let scale = 1.0 / (latent as f32).sqrt();
        let map = (0..latent * dims)
            .map(|_| normal(&mut rng) * scale)
            .collect();
        let centres = (0..TOPICS)
            .map(|_| (0..latent).map(|_| normal(&mut rng) * 2.0).collect())
            .collect();
        Self {
            dims,
            latent,
            map,
            centres,
        }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// `n` vectors from the stream `seed`; topic `t` of each drawn by `topic(rng)`.
    pub fn sample_with(
        &self,
        n: usize,
        seed: u64,
        mut topic: impl FnMut(&mut StdRng) -> usize,
    ) -> Vec<Vec<f32>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let centre = &self.centres[topic(&mut rng) % TOPICS];
                let z: Vec<f32> = centre.iter().map(|c| c + normal(&mut rng) * 0.6).collect();
                (0..self.dims)
                    .map(|d| {
                        let mapped: f32 = (0..self.latent)
                            .map(|i| z[i] * self.map[i * self.dims + d])
                            .sum();
                        mapped + normal(&mut rng) * 0.02
                    })
                    .collect()
            })
            .collect()
    }

    /// `n` vectors from the stream `seed`, topics uniform.
    pub fn sample(&self, n: usize, seed: u64) -> Vec<Vec<f32>> {
        self.sample_with(n, seed, |rng| rng.gen_range(0..TOPICS))
    }
}

/// Indexes (into `data`) of the `k` nearest vectors to `query` by cosine distance, nearest
/// first; ties broken by index.
pub fn exact_top_k(data: &[Vec<f32>], query: &[f32], k: usize) -> Vec<usize> {
    let mut best: Vec<(f64, usize)> = Vec::with_capacity(k + 1);
    for (i, v) in data.iter().enumerate() {
        let d = cosine_distance(v, query);
        if best.len() == k && d >= best[k - 1].0 {
            continue;
        }
        let at = best.partition_point(|&(bd, _)| bd <= d);
        best.insert(at, (d, i));
        best.truncate(k);
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// Ground truth for many queries, split over the machine's cores.
pub fn ground_truth(data: &[Vec<f32>], queries: &[Vec<f32>], k: usize) -> Vec<Vec<usize>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = queries.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = queries
            .chunks(chunk)
            .map(|qs| {
                s.spawn(move || {
                    qs.iter()
                        .map(|q| exact_top_k(data, q, k))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|h| h.join().expect("ground truth thread"))
            .collect()
    })
}

/// Share of `truth` found in `got` (recall@k with k = `truth.len()`).
pub fn recall(truth: &[i64], got: &[i64]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let found = truth.iter().filter(|t| got.contains(t)).count();
    found as f64 / truth.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shared_space() {
        let a = Space::new(16, 4).sample(5, 7);
        let b = Space::new(16, 4).sample(5, 7);
        assert_eq!(a, b);
        assert_ne!(a, Space::new(16, 4).sample(5, 8));
        assert!(a.iter().all(|v| v.len() == 16));
    }

    #[test]
    fn exact_top_k_matches_a_full_sort() {
        let space = Space::new(24, 6);
        let data = space.sample(500, 1);
        let q = &space.sample(1, 2)[0];
        let mut all: Vec<usize> = (0..data.len()).collect();
        all.sort_by(|&a, &b| cosine_distance(&data[a], q).total_cmp(&cosine_distance(&data[b], q)));
        assert_eq!(exact_top_k(&data, q, 10), all[..10]);
        let gt = ground_truth(&data, &[q.clone(), q.clone()], 10);
        assert_eq!(gt, vec![all[..10].to_vec(), all[..10].to_vec()]);
    }

    #[test]
    fn recall_counts_the_overlap() {
        assert_eq!(recall(&[1, 2, 3, 4], &[4, 3, 9, 8]), 0.5);
        assert_eq!(recall(&[], &[1]), 1.0);
    }
}
