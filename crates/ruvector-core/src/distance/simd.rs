//! x86-64 SIMD kernels. Each is an `unsafe fn` with `#[target_feature]`; the safe wrappers
//! below are only reachable through [`avx2_kernels`] / [`avx512_kernels`], which check the
//! CPU first, so the wrappers never run on a CPU without the feature.
//!
//! Four independent accumulators per kernel hide the FMA latency (4 cycles, 2 per cycle on
//! current cores); the remainder is handled by a narrower loop (AVX2) or a masked load
//! (AVX-512), then scalar for AVX2's last < 8 elements.

use super::Kernels;

/// Asks the CPU to start loading every cache line of the `len` bytes from `start` (a no-op
/// off x86_64).
pub(super) fn prefetch_bytes(start: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for at in (0..len).step_by(64) {
        // SAFETY: SSE is part of x86_64; a prefetch of any address, valid or not, never
        // faults and has no effect beyond the caches.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                start.wrapping_add(at) as *const i8,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// Decodes little-endian IEEE half-precision floats with F16C, when the CPU has it: 8 per
/// instruction. `None` when it does not.
pub(super) fn f16c_decoder() -> Option<super::Decoder> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c") {
        return Some(|src, dst| {
            // SAFETY: f16c_decoder checked that the CPU has AVX and F16C.
            unsafe { x86::halves_to_f32(src, dst) }
        });
    }
    None
}

pub(super) fn avx2_kernels() -> Option<Kernels> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        return Some(Kernels {
            name: "avx2+fma",
            l2_squared: |a, b| {
                // SAFETY: avx2_kernels checked that the CPU has AVX2 and FMA.
                unsafe { x86::avx2::l2_squared(a, b) }
            },
            dot: |a, b| {
                // SAFETY: as above.
                unsafe { x86::avx2::dot(a, b) }
            },
            l1: |a, b| {
                // SAFETY: as above.
                unsafe { x86::avx2::l1(a, b) }
            },
            cosine_parts: |a, b| {
                // SAFETY: as above.
                unsafe { x86::avx2::cosine_parts(a, b) }
            },
        });
    }
    None
}

pub(super) fn avx512_kernels() -> Option<Kernels> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return Some(Kernels {
            name: "avx512f",
            l2_squared: |a, b| {
                // SAFETY: avx512_kernels checked that the CPU has AVX-512F.
                unsafe { x86::avx512::l2_squared(a, b) }
            },
            dot: |a, b| {
                // SAFETY: as above.
                unsafe { x86::avx512::dot(a, b) }
            },
            l1: |a, b| {
                // SAFETY: as above.
                unsafe { x86::avx512::l1(a, b) }
            },
            cosine_parts: |a, b| {
                // SAFETY: as above.
                unsafe { x86::avx512::cosine_parts(a, b) }
            },
        });
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// Defines a kernel Σ f(aᵢ, bᵢ): `$step` folds one register of `x`, `y` into `acc`,
    /// `$tail` folds one scalar pair into `sum`.
    macro_rules! avx2_sum {
        ($name:ident, |$x:ident, $y:ident, $acc:ident| $step:expr, |$sx:ident, $sy:ident, $sum:ident| $tail:expr) => {
            /// # Safety
            /// The CPU must have AVX2 and FMA.
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn $name(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let mut accs = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                while i + 32 <= n {
                    for (k, $acc) in accs.iter_mut().enumerate() {
                        // SAFETY: i + 8k + 8 <= i + 32 <= n, so 8 floats are in bounds.
                        let ($x, $y) = unsafe {
                            (
                                _mm256_loadu_ps(pa.add(i + 8 * k)),
                                _mm256_loadu_ps(pb.add(i + 8 * k)),
                            )
                        };
                        *$acc = $step;
                    }
                    i += 32;
                }
                while i + 8 <= n {
                    let $acc = &mut accs[0];
                    let ($x, $y) =
                        // SAFETY: i + 8 <= n.
                        unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
                    *$acc = $step;
                    i += 8;
                }
                let v = _mm256_add_ps(
                    _mm256_add_ps(accs[0], accs[1]),
                    _mm256_add_ps(accs[2], accs[3]),
                );
                let mut $sum = hsum256(v);
                for (&$sx, &$sy) in a[i..n].iter().zip(&b[i..n]) {
                    $sum = $tail;
                }
                $sum
            }
        };
    }

    /// Defines a kernel Σ f(aᵢ, bᵢ) for AVX-512F; the tail is a masked load of zeros, which
    /// every `$step` here maps to a zero contribution.
    macro_rules! avx512_sum {
        ($name:ident, |$x:ident, $y:ident, $acc:ident| $step:expr) => {
            /// # Safety
            /// The CPU must have AVX-512F.
            #[target_feature(enable = "avx512f")]
            pub unsafe fn $name(a: &[f32], b: &[f32]) -> f32 {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let mut accs = [_mm512_setzero_ps(); 4];
                let mut i = 0;
                while i + 64 <= n {
                    for (k, $acc) in accs.iter_mut().enumerate() {
                        // SAFETY: i + 16k + 16 <= i + 64 <= n.
                        let ($x, $y) = unsafe {
                            (
                                _mm512_loadu_ps(pa.add(i + 16 * k)),
                                _mm512_loadu_ps(pb.add(i + 16 * k)),
                            )
                        };
                        *$acc = $step;
                    }
                    i += 64;
                }
                while i < n {
                    let $acc = &mut accs[0];
                    let left = (n - i).min(16);
                    let mask: __mmask16 = if left == 16 {
                        0xffff
                    } else {
                        (1u16 << left) - 1
                    };
                    // SAFETY: the mask enables only lanes i..i+left, all < n; masked-off lanes
                    // are not read.
                    let ($x, $y) = unsafe {
                        (
                            _mm512_maskz_loadu_ps(mask, pa.add(i)),
                            _mm512_maskz_loadu_ps(mask, pb.add(i)),
                        )
                    };
                    *$acc = $step;
                    i += left;
                }
                let v = _mm512_add_ps(
                    _mm512_add_ps(accs[0], accs[1]),
                    _mm512_add_ps(accs[2], accs[3]),
                );
                _mm512_reduce_add_ps(v)
            }
        };
    }

    /// Decodes `dst.len()` little-endian halves of `src` (2 bytes each) into `dst`; the last
    /// fewer than 8 one by one.
    ///
    /// # Safety
    /// The CPU must have AVX and F16C.
    #[target_feature(enable = "avx,f16c")]
    pub unsafe fn halves_to_f32(src: &[u8], dst: &mut [f32]) {
        use std::arch::x86_64::*;
        let n = dst.len().min(src.len() / 2);
        let mut i = 0;
        while i + 8 <= n {
            // SAFETY: 2i + 16 <= 2n <= src.len() bytes and i + 8 <= n floats are in bounds;
            // both accesses are unaligned loads and stores.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
            i += 8;
        }
        for (x, b) in dst[i..n].iter_mut().zip(src[2 * i..].chunks_exact(2)) {
            *x = half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32();
        }
    }

    pub mod avx2 {
        use std::arch::x86_64::*;

        #[target_feature(enable = "avx2,fma")]
        fn hsum256(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }

        avx2_sum!(
            l2_squared,
            |x, y, acc| {
                let d = _mm256_sub_ps(x, y);
                _mm256_fmadd_ps(d, d, *acc)
            },
            |x, y, sum| sum + (x - y) * (x - y)
        );

        avx2_sum!(
            dot,
            |x, y, acc| _mm256_fmadd_ps(x, y, *acc),
            |x, y, sum| sum + x * y
        );

        avx2_sum!(
            l1,
            |x, y, acc| {
                let d = _mm256_sub_ps(x, y);
                _mm256_add_ps(*acc, _mm256_andnot_ps(_mm256_set1_ps(-0.0), d))
            },
            |x, y, sum| sum + (x - y).abs()
        );

        /// # Safety
        /// The CPU must have AVX2 and FMA.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn cosine_parts(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
            let n = a.len().min(b.len());
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let (mut ab, mut aa, mut bb) = (
                [_mm256_setzero_ps(); 2],
                [_mm256_setzero_ps(); 2],
                [_mm256_setzero_ps(); 2],
            );
            let mut i = 0;
            while i + 16 <= n {
                for k in 0..2 {
                    // SAFETY: i + 8k + 8 <= i + 16 <= n.
                    let (x, y) = unsafe {
                        (
                            _mm256_loadu_ps(pa.add(i + 8 * k)),
                            _mm256_loadu_ps(pb.add(i + 8 * k)),
                        )
                    };
                    ab[k] = _mm256_fmadd_ps(x, y, ab[k]);
                    aa[k] = _mm256_fmadd_ps(x, x, aa[k]);
                    bb[k] = _mm256_fmadd_ps(y, y, bb[k]);
                }
                i += 16;
            }
            if i + 8 <= n {
                // SAFETY: i + 8 <= n.
                let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
                ab[0] = _mm256_fmadd_ps(x, y, ab[0]);
                aa[0] = _mm256_fmadd_ps(x, x, aa[0]);
                bb[0] = _mm256_fmadd_ps(y, y, bb[0]);
                i += 8;
            }
            let mut s_ab = hsum256(_mm256_add_ps(ab[0], ab[1]));
            let mut s_aa = hsum256(_mm256_add_ps(aa[0], aa[1]));
            let mut s_bb = hsum256(_mm256_add_ps(bb[0], bb[1]));
            for (&x, &y) in a[i..n].iter().zip(&b[i..n]) {
                s_ab += x * y;
                s_aa += x * x;
                s_bb += y * y;
            }
            (s_ab, s_aa, s_bb)
        }
    }

    pub mod avx512 {
        use std::arch::x86_64::*;

        avx512_sum!(l2_squared, |x, y, acc| {
            let d = _mm512_sub_ps(x, y);
            _mm512_fmadd_ps(d, d, *acc)
        });

        avx512_sum!(dot, |x, y, acc| _mm512_fmadd_ps(x, y, *acc));

        avx512_sum!(l1, |x, y, acc| _mm512_add_ps(
            *acc,
            _mm512_abs_ps(_mm512_sub_ps(x, y))
        ));

        /// # Safety
        /// The CPU must have AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn cosine_parts(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
            let n = a.len().min(b.len());
            let (pa, pb) = (a.as_ptr(), b.as_ptr());
            let (mut ab, mut aa, mut bb) = (
                [_mm512_setzero_ps(); 2],
                [_mm512_setzero_ps(); 2],
                [_mm512_setzero_ps(); 2],
            );
            let mut i = 0;
            while i + 32 <= n {
                for k in 0..2 {
                    // SAFETY: i + 16k + 16 <= i + 32 <= n.
                    let (x, y) = unsafe {
                        (
                            _mm512_loadu_ps(pa.add(i + 16 * k)),
                            _mm512_loadu_ps(pb.add(i + 16 * k)),
                        )
                    };
                    ab[k] = _mm512_fmadd_ps(x, y, ab[k]);
                    aa[k] = _mm512_fmadd_ps(x, x, aa[k]);
                    bb[k] = _mm512_fmadd_ps(y, y, bb[k]);
                }
                i += 32;
            }
            while i < n {
                let left = (n - i).min(16);
                let mask: __mmask16 = if left == 16 {
                    0xffff
                } else {
                    (1u16 << left) - 1
                };
                // SAFETY: only lanes i..i+left (< n) are read.
                let (x, y) = unsafe {
                    (
                        _mm512_maskz_loadu_ps(mask, pa.add(i)),
                        _mm512_maskz_loadu_ps(mask, pb.add(i)),
                    )
                };
                ab[0] = _mm512_fmadd_ps(x, y, ab[0]);
                aa[0] = _mm512_fmadd_ps(x, x, aa[0]);
                bb[0] = _mm512_fmadd_ps(y, y, bb[0]);
                i += left;
            }
            (
                _mm512_reduce_add_ps(_mm512_add_ps(ab[0], ab[1])),
                _mm512_reduce_add_ps(_mm512_add_ps(aa[0], aa[1])),
                _mm512_reduce_add_ps(_mm512_add_ps(bb[0], bb[1])),
            )
        }
    }
}
