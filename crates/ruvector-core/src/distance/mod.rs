//! Distance kernels.
//!
//! Every kernel has a scalar reference (a plain left-to-right `f32` loop, which the compiler
//! keeps sequential because float addition is not associative) and SIMD versions for x86-64:
//! AVX2 with FMA, and AVX-512F where the CPU has it. [`Kernels::best`] picks one at run time,
//! once per process. SIMD versions sum in a different order than the scalar loop, so results
//! differ in the last bits; `tests` bound that difference (see [`tolerance`]).
//!
//! The SQL-level distances ([`l2_distance`] etc.) widen the `f32` sums to `f64` exactly as
//! pgvector does, so results agree with pgvector to within that rounding.

/// A kernel over two equally long slices.
pub type Kernel = fn(&[f32], &[f32]) -> f32;

/// Decodes little-endian half-precision floats into `f32` ([`halves_to_f32`]).
pub type Decoder = fn(&[u8], &mut [f32]);

/// The cosine kernel: (Σ aᵢ·bᵢ, Σ aᵢ², Σ bᵢ²).
pub type CosineKernel = fn(&[f32], &[f32]) -> (f32, f32, f32);

/// The inner loops one vector distance needs, as plain function pointers.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Which implementation these are: `"scalar"`, `"avx2+fma"` or `"avx512f"`.
    pub name: &'static str,
    /// Σ (aᵢ − bᵢ)²
    pub l2_squared: Kernel,
    /// Σ aᵢ·bᵢ
    pub dot: Kernel,
    /// Σ |aᵢ − bᵢ|
    pub l1: Kernel,
    /// (Σ aᵢ·bᵢ, Σ aᵢ², Σ bᵢ²) in one pass
    pub cosine_parts: CosineKernel,
}

impl Kernels {
    /// The scalar reference kernels.
    pub const fn scalar() -> Kernels {
        Kernels {
            name: "scalar",
            l2_squared: scalar::l2_squared,
            dot: scalar::dot,
            l1: scalar::l1,
            cosine_parts: scalar::cosine_parts,
        }
    }

    /// AVX2+FMA kernels, if this CPU has both.
    pub fn avx2() -> Option<Kernels> {
        simd::avx2_kernels()
    }

    /// AVX-512F kernels, if this CPU has AVX-512F.
    pub fn avx512() -> Option<Kernels> {
        simd::avx512_kernels()
    }

    /// The fastest kernels this CPU supports, chosen once per process.
    pub fn best() -> &'static Kernels {
        static BEST: std::sync::OnceLock<Kernels> = std::sync::OnceLock::new();
        BEST.get_or_init(|| {
            Kernels::avx512()
                .or_else(Kernels::avx2)
                .unwrap_or_else(Kernels::scalar)
        })
    }
}

/// The scalar reference kernels: the definition the SIMD kernels are tested against.
pub mod scalar {
    /// Σ (aᵢ − bᵢ)², summed left to right.
    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let mut sum = 0.0f32;
        for (x, y) in a.iter().zip(b) {
            let d = x - y;
            sum += d * d;
        }
        sum
    }

    /// Σ aᵢ·bᵢ, summed left to right.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut sum = 0.0f32;
        for (x, y) in a.iter().zip(b) {
            sum += x * y;
        }
        sum
    }

    /// Σ |aᵢ − bᵢ|, summed left to right.
    pub fn l1(a: &[f32], b: &[f32]) -> f32 {
        let mut sum = 0.0f32;
        for (x, y) in a.iter().zip(b) {
            sum += (x - y).abs();
        }
        sum
    }

    /// Little-endian halves to `f32`, one by one.
    pub fn halves_to_f32(src: &[u8], dst: &mut [f32]) {
        for (x, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
            *x = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        }
    }

    /// (Σ aᵢ·bᵢ, Σ aᵢ², Σ bᵢ²), each summed left to right.
    pub fn cosine_parts(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
        for (x, y) in a.iter().zip(b) {
            ab += x * y;
            aa += x * x;
            bb += y * y;
        }
        (ab, aa, bb)
    }
}

#[allow(unsafe_code)]
mod simd;

/// A hint that `v` is about to be read: the CPU starts loading all of its cache lines
/// (the hardware prefetcher would find only the later ones, after the first miss). Graph
/// searches wait on memory more than on arithmetic.
pub fn prefetch(v: &[f32]) {
    prefetch_bytes(v.as_ptr().cast(), std::mem::size_of_val(v))
}

/// A hint that the `len` bytes from `start` are about to be read (see [`prefetch`]). Any
/// address may be given: a prefetch never faults and changes nothing but the caches.
pub fn prefetch_bytes(start: *const u8, len: usize) {
    simd::prefetch_bytes(start, len)
}

/// Euclidean distance (`<->`).
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    f64::from((Kernels::best().l2_squared)(a, b)).sqrt()
}

/// Squared Euclidean distance: orders like [`l2_distance`] without the square root.
pub fn l2_squared_distance(a: &[f32], b: &[f32]) -> f64 {
    f64::from((Kernels::best().l2_squared)(a, b))
}

/// Inner product.
pub fn inner_product(a: &[f32], b: &[f32]) -> f64 {
    f64::from((Kernels::best().dot)(a, b))
}

/// Negative inner product (`<#>`): smaller is more similar, so it sorts ascending.
pub fn negative_inner_product(a: &[f32], b: &[f32]) -> f64 {
    -f64::from((Kernels::best().dot)(a, b))
}

/// Cosine distance (`<=>`), 1 − cos θ, in [0, 2]; NaN when either vector is zero.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let (ab, aa, bb) = (Kernels::best().cosine_parts)(a, b);
    let similarity = f64::from(ab) / (f64::from(aa) * f64::from(bb)).sqrt();
    // Rounding can push |cos θ| slightly past 1. NaN passes through both comparisons.
    1.0 - similarity.clamp(-1.0, 1.0)
}

/// Taxicab distance (`<+>`).
pub fn l1_distance(a: &[f32], b: &[f32]) -> f64 {
    f64::from((Kernels::best().l1)(a, b))
}

/// Decodes little-endian IEEE half-precision floats (`2 × dst.len()` bytes of `src`) into
/// `dst`: with F16C where the CPU has it (chosen once per process), else one by one.
pub fn halves_to_f32(src: &[u8], dst: &mut [f32]) {
    static DECODE: std::sync::OnceLock<Decoder> = std::sync::OnceLock::new();
    let decode = DECODE.get_or_init(|| simd::f16c_decoder().unwrap_or(scalar::halves_to_f32));
    decode(src, dst)
}

/// A bound on the rounding error of a sum of `n` products (or squared differences) whose
/// absolute values add up to `magnitude`, as the kernels [`Kernels::best`] picks compute it.
/// Each term is rounded once and each addition once; an addition chain of the scalar loop is
/// `n` long, and every SIMD kernel keeps at least 16 partial sums in its main loop, then adds
/// at most 3 register steps, its register reductions and a scalar tail: fewer than
/// `n / 16 + 64` additions on any chain. (The bound `ruhnsw` uses to keep the distances it
/// reports for rounded vectors below the exact ones, see `hnsw::rounding`.)
pub fn rounding(n: usize, magnitude: f64) -> f64 {
    let depth = if Kernels::best().name == "scalar" {
        n
    } else {
        n / 16 + 64
    };
    (depth + 2) as f64 * f64::from(f32::EPSILON) * magnitude + f64::from(f32::MIN_POSITIVE)
}

/// The bound used by the tests for |SIMD − scalar| of a sum of `n` terms whose absolute
/// values add up to `magnitude`: each order of summation is off the exact sum by at most
/// (depth · ε) · magnitude, where depth ≤ n for the sequential loop; the two together stay
/// under 2 · n · ε · magnitude. Exposed so the bound is stated once.
pub fn tolerance(n: usize, magnitude: f64) -> f64 {
    2.0 * n as f64 * f64::from(f32::EPSILON) * magnitude + f64::from(f32::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_decode_alike_with_and_without_f16c() {
        // Every bit pattern: zeros, subnormals, normals, infinities, NaNs; then a tail.
        let src: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
        for n in [65536usize, 13, 7, 0] {
            let (mut fast, mut slow) = (vec![0f32; n], vec![0f32; n]);
            halves_to_f32(&src, &mut fast);
            scalar::halves_to_f32(&src, &mut slow);
            assert!(fast
                .iter()
                .zip(&slow)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())));
        }
        let mut one = [0f32; 2];
        halves_to_f32(&[0x00, 0x3c, 0x00, 0xc0], &mut one);
        assert_eq!(one, [1.0, -2.0]);
    }
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};

    fn exact_parts(a: &[f32], b: &[f32]) -> [(f64, f64); 4] {
        // (exact sum, sum of |terms|) for l2², dot, l1, and aa
        let mut r = [(0.0, 0.0); 4];
        for (&x, &y) in a.iter().zip(b) {
            let (x, y) = (f64::from(x), f64::from(y));
            let terms = [(x - y) * (x - y), x * y, (x - y).abs(), x * x];
            for (acc, t) in r.iter_mut().zip(terms) {
                acc.0 += t;
                acc.1 += t.abs();
            }
        }
        r
    }

    /// SIMD must agree with the scalar reference within `tolerance`, and both with the exact
    /// (f64) sum. The SIMD bound is much tighter than the scalar one: its summation tree has
    /// depth about n/32 + 16, so a dropped or doubled element shows up even at n = 2048.
    fn check(k: &Kernels, a: &[f32], b: &[f32]) -> Result<(), String> {
        let n = a.len();
        let s = Kernels::scalar();
        let exact = exact_parts(a, b);
        let simd_depth = (n / 32 + 24) as f64;
        let eps = f64::from(f32::EPSILON);
        let pairs = [
            (
                "l2_squared",
                (k.l2_squared)(a, b),
                (s.l2_squared)(a, b),
                exact[0],
            ),
            ("dot", (k.dot)(a, b), (s.dot)(a, b), exact[1]),
            ("l1", (k.l1)(a, b), (s.l1)(a, b), exact[2]),
        ];
        let (cab, caa, cbb) = (k.cosine_parts)(a, b);
        let (sab, saa, sbb) = (s.cosine_parts)(a, b);
        let cos = [
            ("cos.ab", cab, sab, exact[1]),
            ("cos.aa", caa, saa, exact[3]),
        ];
        let bb_exact: f64 = b.iter().map(|&y| f64::from(y) * f64::from(y)).sum();
        let cos_bb = [("cos.bb", cbb, sbb, (bb_exact, bb_exact))];
        for (what, got, reference, (exact, magnitude)) in pairs.into_iter().chain(cos).chain(cos_bb)
        {
            let (got, reference) = (f64::from(got), f64::from(reference));
            if (got - reference).abs() > tolerance(n, magnitude) {
                return Err(format!(
                    "{} {what} n={n}: simd {got} scalar {reference}",
                    k.name
                ));
            }
            let simd_bound = simd_depth * eps * magnitude + f64::from(f32::MIN_POSITIVE);
            if (got - exact).abs() > simd_bound {
                return Err(format!("{} {what} n={n}: simd {got} exact {exact}", k.name));
            }
        }
        Ok(())
    }

    fn simd_kernels() -> Vec<Kernels> {
        let found: Vec<Kernels> = [Kernels::avx2(), Kernels::avx512()]
            .into_iter()
            .flatten()
            .collect();
        if std::env::var_os("RUVECTOR_REQUIRE_SIMD").is_some() {
            assert!(
                !found.is_empty(),
                "RUVECTOR_REQUIRE_SIMD is set but this CPU has no AVX2+FMA"
            );
        }
        found
    }

    #[test]
    fn simd_equals_scalar_for_every_length_up_to_2048() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let kernels = simd_kernels();
        for n in 1..=2048 {
            let a: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            for k in &kernels {
                check(k, &a, &b).unwrap();
            }
        }
    }

    #[test]
    fn best_is_the_widest_available() {
        let best = Kernels::best().name;
        if Kernels::avx512().is_some() {
            assert_eq!(best, "avx512f");
        } else if Kernels::avx2().is_some() {
            assert_eq!(best, "avx2+fma");
        } else {
            assert_eq!(best, "scalar");
        }
    }

    #[test]
    fn sql_distances() {
        let a = [1.0, 2.0, 3.0];
        let b = [3.0, 2.0, 1.0];
        assert_eq!(l2_distance(&a, &b), 8.0f64.sqrt());
        assert_eq!(l2_squared_distance(&a, &b), 8.0);
        assert_eq!(inner_product(&a, &b), 10.0);
        assert_eq!(negative_inner_product(&a, &b), -10.0);
        assert_eq!(l1_distance(&a, &b), 4.0);
        assert!((cosine_distance(&a, &b) - (1.0 - 10.0 / 14.0)).abs() < 1e-7);
        assert_eq!(cosine_distance(&a, &a), 0.0);
        assert_eq!(cosine_distance(&[1.0, 0.0], &[-1.0, 0.0]), 2.0);
        assert!(cosine_distance(&[0.0, 0.0], &[1.0, 0.0]).is_nan());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn simd_equals_scalar_on_arbitrary_values(
            pairs in proptest::collection::vec((-1e4f32..1e4f32, -1e4f32..1e4f32), 1..2049)
        ) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            for k in simd_kernels() {
                prop_assert!(check(&k, &a, &b).is_ok(), "{}", check(&k, &a, &b).unwrap_err());
            }
        }
    }
}
