//! The global minimum cut of a small undirected weighted graph (Stoer and Wagner, "A simple
//! min-cut algorithm", J. ACM 44(4), 1997).
//!
//! O(n³) on a dense weight matrix: meant for contracted graphs of at most a few hundred
//! nodes (the integrity monitor's), never for a raw index graph.

/// A symmetric weight matrix of `n` nodes (row-major, zero diagonal).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedGraph {
    n: usize,
    w: Vec<f64>,
}

impl WeightedGraph {
    pub fn new(n: usize) -> WeightedGraph {
        WeightedGraph {
            n,
            w: vec![0.0; n * n],
        }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Adds `weight` to the undirected edge `a`–`b` (self loops are ignored).
    pub fn add(&mut self, a: usize, b: usize, weight: f64) {
        if a != b {
            self.w[a * self.n + b] += weight;
            self.w[b * self.n + a] += weight;
        }
    }

    pub fn weight(&self, a: usize, b: usize) -> f64 {
        self.w[a * self.n + b]
    }

    /// Sum of the weights of `a`'s edges.
    pub fn degree(&self, a: usize) -> f64 {
        self.w[a * self.n..(a + 1) * self.n].iter().sum()
    }

    /// The edges with a positive weight, each once (`a < b`).
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize, f64)> + '_ {
        (0..self.n).flat_map(move |a| {
            (a + 1..self.n).filter_map(move |b| {
                let w = self.weight(a, b);
                (w > 0.0).then_some((a, b, w))
            })
        })
    }

    /// Total weight of the edges between `side` (a node set, as flags) and the rest.
    pub fn cut_weight(&self, side: &[bool]) -> f64 {
        let mut total = 0.0;
        for a in 0..self.n {
            for b in 0..self.n {
                if side[a] && !side[b] {
                    total += self.weight(a, b);
                }
            }
        }
        total
    }
}

/// A minimum cut: its weight and one side of it.
#[derive(Debug, Clone, PartialEq)]
pub struct MinCut {
    pub weight: f64,
    /// `side[v]`: whether node `v` is on the cut's first side (never every node, never none).
    pub side: Vec<bool>,
}

/// The global minimum cut of `g`; `None` for fewer than two nodes.
pub fn stoer_wagner(g: &WeightedGraph) -> Option<MinCut> {
    let n = g.n;
    if n < 2 {
        return None;
    }
    let mut w = g.w.clone();
    // members[v]: the original nodes merged into v.
    let mut members: Vec<Vec<usize>> = (0..n).map(|v| vec![v]).collect();
    let mut alive: Vec<usize> = (0..n).collect();
    let mut best: Option<(f64, Vec<usize>)> = None;
    let mut key = vec![0.0f64; n];
    let mut added = vec![false; n];
    while alive.len() > 1 {
        // One minimum-cut phase: grow a set by the most tightly connected vertex.
        for &v in &alive {
            key[v] = 0.0;
            added[v] = false;
        }
        let (mut prev, mut last) = (usize::MAX, usize::MAX);
        for _ in 0..alive.len() {
            let next = alive
                .iter()
                .copied()
                .filter(|&v| !added[v])
                .max_by(|&a, &b| key[a].total_cmp(&key[b]).then(b.cmp(&a)))
                .expect("a vertex is left");
            added[next] = true;
            prev = last;
            last = next;
            for &v in &alive {
                if !added[v] {
                    key[v] += w[next * n + v];
                }
            }
        }
        // The cut of the phase separates `last` from the rest.
        let phase = key[last];
        if best.as_ref().is_none_or(|(b, _)| phase < *b) {
            best = Some((phase, members[last].clone()));
        }
        // Merge `last` into `prev`.
        let moved = std::mem::take(&mut members[last]);
        members[prev].extend(moved);
        for &v in &alive {
            if v != prev && v != last {
                w[prev * n + v] += w[last * n + v];
                w[v * n + prev] = w[prev * n + v];
            }
        }
        alive.retain(|&v| v != last);
    }
    let (weight, nodes) = best.expect("at least one phase ran");
    let mut side = vec![false; n];
    for v in nodes {
        side[v] = true;
    }
    Some(MinCut { weight, side })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every cut, by brute force.
    fn brute_force(g: &WeightedGraph) -> f64 {
        let n = g.len();
        (1..(1u32 << n) - 1)
            .map(|mask| {
                let side: Vec<bool> = (0..n).map(|v| mask & (1 << v) != 0).collect();
                g.cut_weight(&side)
            })
            .fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn the_textbook_example() {
        // The 8-node graph of Stoer and Wagner's paper: minimum cut 4.
        let mut g = WeightedGraph::new(8);
        for (a, b, w) in [
            (1, 2, 2.0),
            (1, 5, 3.0),
            (2, 3, 3.0),
            (2, 5, 2.0),
            (2, 6, 2.0),
            (3, 4, 4.0),
            (3, 7, 2.0),
            (4, 7, 2.0),
            (4, 8, 2.0),
            (5, 6, 3.0),
            (6, 7, 1.0),
            (7, 8, 3.0),
        ] {
            g.add(a - 1, b - 1, w);
        }
        let cut = stoer_wagner(&g).unwrap();
        assert_eq!(cut.weight, 4.0);
        assert_eq!(g.cut_weight(&cut.side), 4.0);
    }

    #[test]
    fn a_disconnected_graph_has_a_zero_cut() {
        let mut g = WeightedGraph::new(4);
        g.add(0, 1, 5.0);
        g.add(2, 3, 5.0);
        let cut = stoer_wagner(&g).unwrap();
        assert_eq!(cut.weight, 0.0);
        assert_eq!(cut.side[0], cut.side[1]);
        assert_ne!(cut.side[0], cut.side[2]);
        assert_eq!(stoer_wagner(&WeightedGraph::new(1)), None);
    }

    proptest! {
        #[test]
        fn matches_brute_force_on_small_random_graphs(
            n in 2usize..9,
            edges in proptest::collection::vec((0usize..9, 0usize..9, 0u32..20), 0..40),
        ) {
            let mut g = WeightedGraph::new(n);
            for (a, b, w) in edges {
                g.add(a % n, b % n, f64::from(w));
            }
            let cut = stoer_wagner(&g).unwrap();
            prop_assert_eq!(cut.weight, brute_force(&g));
            prop_assert_eq!(g.cut_weight(&cut.side), cut.weight);
            let on = cut.side.iter().filter(|s| **s).count();
            prop_assert!(on > 0 && on < n);
        }
    }
}
