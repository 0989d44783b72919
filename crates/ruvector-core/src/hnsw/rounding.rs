//! Vectors stored in half precision, and the distances a scan reports for them.
//!
//! An index with `storage = 'half'` keeps each element as an IEEE binary16 float (2 bytes)
//! and searches with those. The table keeps the full-precision vector, so a scan reports, for
//! each row, a *lower bound* of the exact distance and lets PostgreSQL re-rank: the executor
//! computes the ORDER BY distance from the heap row and returns rows in exact order (its
//! reorder queue, as for GiST's lossy distances). The bound must never exceed the value the
//! distance operator computes; PostgreSQL stops the query otherwise ("index returned tuples
//! in wrong order"). It comes from the triangle inequality (or Cauchy–Schwarz) with the
//! rounding each node records ([`Rounding`]), less the rounding error of the `f32` sums
//! ([`crate::distance::rounding`]).

use half::f16;

use super::Metric;

/// How far a node's stored (rounded) vector `x̃` is from the vector inserted, `x`: each an
/// upper bound, rounded up to `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rounding {
    /// ‖x − x̃‖₁
    pub l1: f32,
    /// ‖x − x̃‖₂
    pub l2: f32,
    /// ‖x̃‖₂
    pub norm: f32,
}

/// Bytes of a [`Rounding`] in a node tuple.
pub const ROUNDING_BYTES: usize = 12;

/// The largest finite half-precision value; larger elements cannot be stored.
pub const HALF_MAX: f32 = 65504.0;

impl Rounding {
    pub fn to_bytes(self) -> [u8; ROUNDING_BYTES] {
        let mut b = [0u8; ROUNDING_BYTES];
        b[0..4].copy_from_slice(&self.l1.to_le_bytes());
        b[4..8].copy_from_slice(&self.l2.to_le_bytes());
        b[8..12].copy_from_slice(&self.norm.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Rounding {
        let at = |i: usize| f32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Rounding {
            l1: at(0),
            l2: at(4),
            norm: at(8),
        }
    }
}

/// `v` as `f32`, rounded up (so that a bound computed in `f64` stays a bound).
fn up(v: f64) -> f32 {
    let f = v as f32;
    if f64::from(f) < v {
        f.next_up()
    } else {
        f
    }
}

/// Writes `v` as little-endian halves into `out` (2 bytes each) and returns how far the
/// stored vector is from `v`. Elements beyond ±[`HALF_MAX`] become infinite: check them
/// first ([`first_unstorable`]).
pub fn encode(v: &[f32], out: &mut [u8]) -> Rounding {
    let (mut l1, mut l2, mut norm) = (0.0f64, 0.0f64, 0.0f64);
    for (chunk, &x) in out.chunks_exact_mut(2).zip(v) {
        let h = f16::from_f32(x);
        chunk.copy_from_slice(&h.to_bits().to_le_bytes());
        let (x, h) = (f64::from(x), f64::from(h.to_f32()));
        let e = (x - h).abs();
        l1 += e;
        l2 += e * e;
        norm += h * h;
    }
    // The f64 sums are off by far less than this margin.
    let margin = 1.0 + 1e-9;
    Rounding {
        l1: up(l1 * margin),
        l2: up(l2.sqrt() * margin),
        norm: up(norm.sqrt() * margin),
    }
}

/// Decodes little-endian halves (`2 × out.len()` bytes) into `out`.
pub fn decode(bytes: &[u8], out: &mut [f32]) {
    crate::distance::halves_to_f32(bytes, out)
}

/// The first element of `v` that half precision cannot hold (beyond ±[`HALF_MAX`], or not
/// finite), with its position.
pub fn first_unstorable(v: &[f32]) -> Option<(usize, f32)> {
    v.iter()
        .copied()
        .enumerate()
        .find(|&(_, x)| x.is_nan() || x.abs() > HALF_MAX)
}

impl Metric {
    /// Whether a vector stored in half precision compares differently from the original:
    /// bit strings (elements 0 and 1) are stored exactly, and so are the halves of
    /// [`Metric::HalfCosine`] (a `halfvec` index's other metrics are exact for the same
    /// reason; the index knows its column's type).
    pub fn rounds_halves(self) -> bool {
        !matches!(self, Metric::Hamming | Metric::Jaccard | Metric::HalfCosine)
    }

    /// A lower bound of the distance operator's value on the original vectors (`<->`,
    /// `<=>`, `<#>`, `<+>` of the query and the row), from `approx`, the distance the
    /// index computed ([`Metric::prepared_distance`] of the prepared query and the stored
    /// vector), the stored vector's [`Rounding`], the dimensions and the query's Euclidean
    /// norm (computed in `f64`). See the module documentation.
    ///
    /// Where single precision overflows or underflows (a distance that is not finite, a
    /// cosine query or row too short or too long to be scaled to unit length), the bound is
    /// the bottom of the operator's range: 0, or −∞ for inner product. It is never NaN.
    pub fn order_bound(self, approx: f32, r: Rounding, dims: usize, query_norm: f64) -> f64 {
        use crate::distance::rounding;
        let floor = if self == Metric::InnerProduct {
            f64::NEG_INFINITY
        } else {
            0.0
        };
        if !approx.is_finite() || !query_norm.is_finite() {
            return floor;
        }
        let approx = f64::from(approx);
        let (l1, l2, norm) = (f64::from(r.l1), f64::from(r.l2), f64::from(r.norm));
        // The operator's own sums are off by at most this, relative to their magnitude.
        let relative = rounding(dims, 1.0);
        let bound = match self {
            // ‖q − x‖ ≥ ‖q − x̃‖ − ‖x − x̃‖
            Metric::L2 => {
                let stored = (approx - rounding(dims, approx)).max(0.0).sqrt();
                (stored - l2).max(0.0) * (1.0 - relative)
            }
            // ‖q − x‖₁ ≥ ‖q − x̃‖₁ − ‖x − x̃‖₁
            Metric::L1 | Metric::Hamming => {
                (approx - rounding(dims, approx) - l1).max(0.0) * (1.0 - relative)
            }
            // q·x ≤ q·x̃ + ‖q‖‖x − x̃‖, and both dot products are off by their sums' rounding.
            Metric::InnerProduct => {
                let query_norm = query_norm * (1.0 + relative);
                let magnitude = query_norm * (norm + l2);
                approx - query_norm * l2 - 2.0 * rounding(dims, magnitude)
            }
            // Unit query and unit stored vector before rounding: cos θ ≤ q̂·x̃ + ‖x̂ − x̃‖,
            // less the rounding of the normalisations and of the operator's three sums.
            // Both must have been scaled to unit length (Metric::prepare leaves a vector
            // whose squared length is 0 or infinite in f32 as it is): the query's length
            // within 1e-18..1e18, the stored vector's within its rounding of 1.
            Metric::Cosine
                if !(1e-18..=1e18).contains(&query_norm) || (norm - 1.0).abs() > l2 + 1e-3 =>
            {
                floor
            }
            Metric::Cosine => approx - l2 * (1.0 + relative) - 8.0 * rounding(dims, 1.0 + norm),
            // Exact elements: only the operator's three sums differ in their rounding.
            Metric::HalfCosine => approx - 8.0 * rounding(dims, 2.0),
            Metric::Jaccard => approx,
        };
        if bound.is_nan() {
            floor
        } else {
            bound
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distance;
    use rand::{Rng, SeedableRng};

    /// The distance operator's value on the original vectors (what PostgreSQL re-ranks by).
    fn operator(metric: Metric, q: &[f32], x: &[f32]) -> f64 {
        match metric {
            Metric::L2 => distance::l2_distance(q, x),
            Metric::Cosine | Metric::HalfCosine => distance::cosine_distance(q, x),
            Metric::InnerProduct => distance::negative_inner_product(q, x),
            Metric::L1 | Metric::Hamming => distance::l1_distance(q, x),
            Metric::Jaccard => unreachable!(),
        }
    }

    fn stored(v: &[f32]) -> (Vec<f32>, Rounding) {
        let mut bytes = vec![0u8; 2 * v.len()];
        let r = encode(v, &mut bytes);
        let mut out = vec![0.0; v.len()];
        decode(&bytes, &mut out);
        (out, r)
    }

    #[test]
    fn halves_round_trip_and_record_their_rounding() {
        let v = [1.0f32, -2.5, 0.1, 1e-8, 65504.0, -3.0e-5];
        let (back, r) = stored(&v);
        assert_eq!(&back[..2], &v[..2], "exactly representable values stay");
        assert_eq!(back[4], 65504.0);
        let l1: f64 = v
            .iter()
            .zip(&back)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .sum();
        assert!(f64::from(r.l1) >= l1 && f64::from(r.l1) <= l1 * 1.0001 + 1e-12);
        assert!(r.l2 > 0.0 && r.l2 <= r.l1);
        assert_eq!(first_unstorable(&v), None);
        assert_eq!(first_unstorable(&[1.0, 70000.0]), Some((1, 70000.0)));
        assert_eq!(first_unstorable(&[f32::NAN]).map(|(i, _)| i), Some(0));
        let bits = [0.0f32, 1.0, 1.0, 0.0];
        let (back, r) = stored(&bits);
        assert_eq!((back, r.l1, r.l2), (bits.to_vec(), 0.0, 0.0));
    }

    /// For every metric, on random and adversarial vectors of many sizes and scales: the
    /// bound never exceeds the operator's value on the original vectors, and stays within
    /// a few times the rounding of it (so that re-ranking reads few extra rows).
    #[test]
    fn the_order_bound_is_below_the_exact_distance_and_close_to_it() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let metrics = [Metric::L2, Metric::Cosine, Metric::InnerProduct, Metric::L1];
        let mut checked = 0;
        for &dims in &[1usize, 3, 17, 100, 768, 2000, 3072, 3968] {
            for &scale in &[1e-4f32, 1.0, 300.0] {
                for round in 0..6 {
                    let q: Vec<f32> = (0..dims).map(|_| rng.gen_range(-scale..scale)).collect();
                    let x: Vec<f32> = match round {
                        // the query itself, and a vector very close to it
                        0 => q.clone(),
                        1 => q.iter().map(|a| a * (1.0 + 1e-4)).collect(),
                        // non-negative
                        2 => (0..dims).map(|_| rng.gen_range(0.0..scale)).collect(),
                        _ => (0..dims).map(|_| rng.gen_range(-scale..scale)).collect(),
                    };
                    for metric in metrics {
                        let (qp, xp) = (metric.prepare(&q), metric.prepare(&x));
                        let (xs, r) = stored(&xp);
                        let approx = metric.prepared_distance(&qp, &xs);
                        let qn = distance::inner_product(&q, &q).sqrt();
                        let bound = metric.order_bound(approx, r, dims, qn);
                        let exact = operator(metric, &q, &x);
                        assert!(
                            bound <= exact,
                            "{metric:?} dims {dims} scale {scale} round {round}: bound {bound} > exact {exact}"
                        );
                        // Tight: off by the stored rounding and the sums' rounding only.
                        let slack = match metric {
                            Metric::L1 => 2.0 * f64::from(r.l1),
                            Metric::InnerProduct => 2.0 * qn * f64::from(r.l2),
                            _ => 2.0 * f64::from(r.l2),
                        } + 32.0
                            * distance::rounding(dims, 2.0 * exact.abs().max(qn * qn).max(1.0));
                        assert!(
                            exact - bound <= slack,
                            "{metric:?} dims {dims} scale {scale}: exact {exact} bound {bound} slack {slack}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 8 * 3 * 6 * 4);
    }

    /// Queries and rows whose squared length underflows or overflows in single precision
    /// (cosine cannot scale them to unit length) and distances that overflow: the bound
    /// falls to the bottom of the operator's range, never above the operator, never NaN.
    #[test]
    fn degenerate_lengths_give_the_floor_of_the_range() {
        let dims = 3;
        let cases: [(&[f32], &[f32]); 5] = [
            (&[1e-23, 1e-23, 1e-23], &[0.1, 0.1, 0.1]),
            (&[1e20, 0.0, 0.0], &[-1.0, 0.0, 0.0]),
            (&[0.5, 0.1, 0.2], &[1e-23, 1e-23, 1e-23]),
            (&[3e19, 3e19, 3e19], &[1.0, 2.0, 3.0]),
            (&[0.0, 0.0, 0.0], &[1.0, 2.0, 3.0]),
        ];
        for (q, x) in cases {
            let qn = q.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct, Metric::L1] {
                let (qp, xp) = (metric.prepare(q), metric.prepare(x));
                let (xs, r) = stored(&xp);
                let approx = metric.prepared_distance(&qp, &xs);
                let bound = metric.order_bound(approx, r, dims, qn);
                let exact = operator(metric, q, x);
                assert!(!bound.is_nan(), "{metric:?} {q:?} {x:?}");
                // NaN sorts above every value in PostgreSQL.
                assert!(
                    exact.is_nan() || bound <= exact,
                    "{metric:?} {q:?} {x:?}: bound {bound} > exact {exact}"
                );
            }
        }
        assert_eq!(
            Metric::InnerProduct.order_bound(f32::INFINITY, Rounding::default(), 3, 1.0),
            f64::NEG_INFINITY
        );
        assert_eq!(
            Metric::L2.order_bound(f32::NAN, Rounding::default(), 3, 1.0),
            0.0
        );
    }

    #[test]
    fn bit_strings_are_stored_exactly() {
        assert!(!Metric::Hamming.rounds_halves());
        assert!(!Metric::Jaccard.rounds_halves());
        assert!(Metric::L2.rounds_halves());
    }
}
