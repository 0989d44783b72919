//! Rules for `vector` values: dimension limits, element checks, element-wise arithmetic,
//! ordering and the running sums behind `avg(vector)`.

use std::cmp::Ordering;

use crate::VectorError;

/// The most dimensions a vector may have. pgvector's limit too, so that values move between
/// the two unchanged; an index page must also hold at least one full vector.
pub const VECTOR_MAX_DIM: usize = 16000;

/// Checks a dimension count: at least 1 and at most [`VECTOR_MAX_DIM`].
pub fn check_dims(dims: usize) -> Result<(), VectorError> {
    if dims < 1 {
        Err(VectorError::NoDimensions)
    } else if dims > VECTOR_MAX_DIM {
        Err(VectorError::TooManyDimensions { dims })
    } else {
        Ok(())
    }
}

/// Checks a value's dimensions against a column's type modifier (`None`: no modifier).
pub fn check_typmod(typmod: Option<usize>, dims: usize) -> Result<(), VectorError> {
    match typmod {
        Some(expected) if expected != dims => Err(VectorError::DimensionMismatch {
            expected,
            actual: dims,
        }),
        _ => Ok(()),
    }
}

/// Checks one element: NaN and infinities are not vector elements.
pub fn check_element(x: f32) -> Result<(), VectorError> {
    if x.is_nan() {
        Err(VectorError::NotANumber)
    } else if x.is_infinite() {
        Err(VectorError::Infinite)
    } else {
        Ok(())
    }
}

/// Checks every element (see [`check_element`]).
pub fn check_elements(x: &[f32]) -> Result<(), VectorError> {
    x.iter().try_for_each(|&v| check_element(v))
}

/// Checks that two operands have the same number of dimensions.
pub fn check_same_dims(a: &[f32], b: &[f32]) -> Result<(), VectorError> {
    if a.len() == b.len() {
        Ok(())
    } else {
        Err(VectorError::DifferentDimensions {
            left: a.len(),
            right: b.len(),
        })
    }
}

fn elementwise(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    op: impl Fn(f32, f32) -> f32,
) -> Result<(), VectorError> {
    check_same_dims(a, b)?;
    assert_eq!(
        out.len(),
        a.len(),
        "output length must equal operand length"
    );
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = op(x, y);
    }
    if out.iter().any(|v| v.is_infinite()) {
        return Err(VectorError::Overflow);
    }
    Ok(())
}

/// `a + b` into `out`.
pub fn add(a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), VectorError> {
    elementwise(a, b, out, |x, y| x + y)
}

/// `a - b` into `out`.
pub fn sub(a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), VectorError> {
    elementwise(a, b, out, |x, y| x - y)
}

/// Element-wise `a * b` into `out`; a product of non-zero elements that rounds to zero is an
/// underflow error, as for `real * real`.
pub fn mul(a: &[f32], b: &[f32], out: &mut [f32]) -> Result<(), VectorError> {
    elementwise(a, b, out, |x, y| x * y)?;
    let underflow = out
        .iter()
        .zip(a.iter().zip(b))
        .any(|(&r, (&x, &y))| r == 0.0 && x != 0.0 && y != 0.0);
    if underflow {
        return Err(VectorError::Underflow);
    }
    Ok(())
}

/// The btree order of vectors: element by element, then the shorter first.
/// Elements are never NaN (see [`check_element`]), so the order is total.
pub fn compare(a: &[f32], b: &[f32]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x < y {
            return Ordering::Less;
        }
        if x > y {
            return Ordering::Greater;
        }
    }
    a.len().cmp(&b.len())
}

/// L2 norm with double-precision accumulation.
pub fn norm(a: &[f32]) -> f64 {
    a.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// `a / ‖a‖` into `out`; the zero vector stays zero.
pub fn l2_normalize(a: &[f32], out: &mut [f32]) -> Result<(), VectorError> {
    assert_eq!(
        out.len(),
        a.len(),
        "output length must equal operand length"
    );
    let n = norm(a);
    if n > 0.0 {
        for (o, &x) in out.iter_mut().zip(a) {
            *o = (f64::from(x) / n) as f32;
        }
        if out.iter().any(|v| v.is_infinite()) {
            return Err(VectorError::Overflow);
        }
    } else {
        out.fill(0.0);
    }
    Ok(())
}

/// Adds `x` into running double-precision sums (the state of `avg(vector)`).
pub fn accumulate(sums: &mut [f64], x: &[f32]) -> Result<(), VectorError> {
    if sums.len() != x.len() {
        return Err(VectorError::DimensionMismatch {
            expected: sums.len(),
            actual: x.len(),
        });
    }
    for (s, &v) in sums.iter_mut().zip(x) {
        *s += f64::from(v);
        if s.is_infinite() {
            return Err(VectorError::Overflow);
        }
    }
    Ok(())
}

/// Adds the partial sums `other` into `sums` (the combine step of a parallel `avg`).
pub fn combine(sums: &mut [f64], other: &[f64]) -> Result<(), VectorError> {
    if sums.len() != other.len() {
        return Err(VectorError::DimensionMismatch {
            expected: sums.len(),
            actual: other.len(),
        });
    }
    for (s, &v) in sums.iter_mut().zip(other) {
        *s += v;
        if s.is_infinite() {
            return Err(VectorError::Overflow);
        }
    }
    Ok(())
}

/// The mean from running sums over `count` vectors, into `out`.
pub fn mean(sums: &[f64], count: f64, out: &mut [f32]) -> Result<(), VectorError> {
    assert_eq!(
        out.len(),
        sums.len(),
        "output length must equal state length"
    );
    for (o, &s) in out.iter_mut().zip(sums) {
        *o = (s / count) as f32;
        check_element(*o)?;
    }
    Ok(())
}

/// `a || b`: the elements of `a` followed by those of `b`.
pub fn concat(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    check_dims(a.len() + b.len())?;
    Ok([a, b].concat())
}

/// `subvector(x, start, count)`: `count` elements from position `start` (1-based, like
/// `substring`), cut to the vector's ends; nothing left is an error.
pub fn subvector(x: &[f32], start: i32, count: i32) -> Result<&[f32], VectorError> {
    if count < 1 {
        return Err(VectorError::NoDimensions);
    }
    let dims = x.len() as i64;
    let (start, count) = (i64::from(start), i64::from(count));
    let end = (start + count).min(dims + 1);
    if start > dims {
        return Err(VectorError::NoDimensions);
    }
    let first = start.max(1);
    if end <= first {
        return Err(VectorError::NoDimensions);
    }
    Ok(&x[(first - 1) as usize..(end - 1) as usize])
}

/// `binary_quantize(x)`: one bit per element, set when the element is positive, packed most
/// significant bit first (the layout of a `bit(n)` value's data).
pub fn binary_quantize(x: &[f32]) -> Vec<u8> {
    let mut bits = vec![0u8; x.len().div_ceil(8)];
    for (i, &v) in x.iter().enumerate() {
        if v > 0.0 {
            bits[i / 8] |= 0x80 >> (i % 8);
        }
    }
    bits
}

/// Bit distances need bit strings of one length.
pub fn check_same_bits(left: u32, right: u32) -> Result<(), VectorError> {
    if left == right {
        Ok(())
    } else {
        Err(VectorError::DifferentBitLengths { left, right })
    }
}

/// Counts of set bits over two bit strings' data, eight bytes at a time: `f` maps a pair of
/// words to the number it adds.
fn count_bits(a: &[u8], b: &[u8], f: impl Fn(u64, u64) -> u64) -> u64 {
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: u64 = wa
        .remainder()
        .iter()
        .zip(wb.remainder())
        .map(|(&x, &y)| f(u64::from(x), u64::from(y)))
        .sum();
    wa.zip(wb)
        .map(|(x, y)| {
            let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            f(word(x), word(y))
        })
        .sum::<u64>()
        + tail
}

/// The first `bits` bits of `data` (most significant first, as a `bit` value holds them) as
/// elements 0.0 and 1.0: how an index on bit strings stores and compares them.
pub fn bits_as_elements(data: &[u8], bits: usize) -> Vec<f32> {
    (0..bits)
        .map(|i| f32::from((data[i / 8] >> (7 - i % 8)) & 1))
        .collect()
}

/// `hamming_distance(a, b)`: the positions where two bit strings of one length differ. The
/// padding bits of a `bit` value's last byte are zero in both.
pub fn hamming(a: &[u8], b: &[u8]) -> u64 {
    count_bits(a, b, |x, y| u64::from((x ^ y).count_ones()))
}

/// `jaccard_distance(a, b)`: 1 - |a AND b| / |a OR b| over the set bits; 1 when no bit is set
/// in both (including two strings without any set bit).
pub fn jaccard(a: &[u8], b: &[u8]) -> f64 {
    let both = count_bits(a, b, |x, y| u64::from((x & y).count_ones()));
    if both == 0 {
        return 1.0;
    }
    let either = count_bits(a, b, |x, y| u64::from((x | y).count_ones()));
    1.0 - both as f64 / either as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_as_elements_give_the_bit_distances_exactly() {
        use crate::hnsw::Metric;
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut byte = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng as u8
        };
        for bits in [1usize, 7, 8, 9, 64, 100, 1000] {
            for _ in 0..20 {
                let len = bits.div_ceil(8);
                let mut a: Vec<u8> = (0..len).map(|_| byte()).collect();
                let mut b: Vec<u8> = (0..len).map(|_| byte()).collect();
                // A `bit` value's padding bits are zero.
                let pad = (8 - bits % 8) % 8;
                a[len - 1] &= 0xffu8 << pad;
                b[len - 1] &= 0xffu8 << pad;
                let (x, y) = (bits_as_elements(&a, bits), bits_as_elements(&b, bits));
                assert_eq!(Metric::Hamming.distance(&x, &y), hamming(&a, &b) as f32);
                let j = Metric::Jaccard.distance(&x, &y);
                assert!((f64::from(j) - jaccard(&a, &b)).abs() < 1e-6, "{bits}: {j}");
            }
        }
        let zero = bits_as_elements(&[0], 3);
        assert_eq!(Metric::Jaccard.distance(&zero, &zero), 1.0);
        assert_eq!(bits_as_elements(&[0b1010_0000], 3), [1.0, 0.0, 1.0]);
    }

    #[test]
    fn bit_distances_count_set_bits() {
        let a = [0b1010_0000u8, 0xff, 0, 0, 0, 0, 0, 0, 0b1000_0000];
        let b = [0b0110_0000u8, 0xff, 0, 0, 0, 0, 0, 0, 0b1000_0000];
        // Differ in two bits; 10 set in both, 12 in either.
        assert_eq!(hamming(&a, &b), 2);
        assert!((jaccard(&a, &b) - (1.0 - 10.0 / 12.0)).abs() < 1e-12);
        assert_eq!(hamming(&a, &a), 0);
        assert_eq!(jaccard(&a, &a), 0.0);
        assert_eq!(jaccard(&[0u8; 3], &[0u8; 3]), 1.0, "no bit set in both");
        assert_eq!(jaccard(&[0xf0], &[0x0f]), 1.0);
        assert_eq!(hamming(&[], &[]), 0);
        assert_eq!(
            check_same_bits(3, 4),
            Err(VectorError::DifferentBitLengths { left: 3, right: 4 })
        );
        assert_eq!(
            VectorError::DifferentBitLengths { left: 3, right: 4 }.to_string(),
            "different bit lengths 3 and 4"
        );
    }

    #[test]
    fn concat_joins_and_checks_the_limit() {
        assert_eq!(concat(&[1.0], &[2.0, 3.0]).unwrap(), vec![1.0, 2.0, 3.0]);
        let big = vec![0.0; VECTOR_MAX_DIM];
        assert!(matches!(
            concat(&big, &[1.0]),
            Err(VectorError::TooManyDimensions { .. })
        ));
    }

    #[test]
    fn subvector_counts_from_one_and_cuts_at_the_ends() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(subvector(&x, 1, 3).unwrap(), &[1.0, 2.0, 3.0]);
        assert_eq!(subvector(&x, 4, 10).unwrap(), &[4.0, 5.0]);
        assert_eq!(
            subvector(&x, 0, 2).unwrap(),
            &[1.0],
            "position 0 counts toward the length"
        );
        assert_eq!(subvector(&x, -1, 4).unwrap(), &[1.0, 2.0]);
        assert_eq!(subvector(&x, 3, i32::MAX).unwrap(), &[3.0, 4.0, 5.0]);
        for (start, count) in [(6, 1), (1, 0), (-3, 2), (-5, 5), (2, -1), (i32::MIN, 1)] {
            assert_eq!(
                subvector(&x, start, count),
                Err(VectorError::NoDimensions),
                "({start}, {count})"
            );
        }
    }

    #[test]
    fn binary_quantize_sets_positive_elements_msb_first() {
        assert_eq!(binary_quantize(&[1.0, -1.0, 0.0, 2.0]), vec![0b1001_0000]);
        let x: Vec<f32> = (0..9)
            .map(|i| if i % 2 == 0 { 1.0 } else { -0.5 })
            .collect();
        assert_eq!(binary_quantize(&x), vec![0b1010_1010, 0b1000_0000]);
    }

    #[test]
    fn dims_bounds() {
        assert_eq!(check_dims(0), Err(VectorError::NoDimensions));
        assert!(check_dims(1).is_ok());
        assert!(check_dims(VECTOR_MAX_DIM).is_ok());
        assert_eq!(
            check_dims(VECTOR_MAX_DIM + 1),
            Err(VectorError::TooManyDimensions { dims: 16001 })
        );
    }

    #[test]
    fn typmod() {
        assert!(check_typmod(None, 7).is_ok());
        assert!(check_typmod(Some(3), 3).is_ok());
        assert_eq!(
            check_typmod(Some(3), 2),
            Err(VectorError::DimensionMismatch {
                expected: 3,
                actual: 2
            })
        );
    }

    #[test]
    fn arithmetic_and_errors() {
        let mut out = [0.0; 3];
        add(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], &mut out).unwrap();
        assert_eq!(out, [5.0, 7.0, 9.0]);
        sub(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], &mut out).unwrap();
        assert_eq!(out, [-3.0, -3.0, -3.0]);
        mul(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0], &mut out).unwrap();
        assert_eq!(out, [4.0, 10.0, 18.0]);
        let mut two = [0.0; 2];
        assert_eq!(
            add(&[1.0, 2.0, 3.0], &[1.0, 2.0], &mut two),
            Err(VectorError::DifferentDimensions { left: 3, right: 2 })
        );
        let mut one = [0.0; 1];
        assert_eq!(
            add(&[f32::MAX], &[f32::MAX], &mut one),
            Err(VectorError::Overflow)
        );
        assert_eq!(
            mul(&[1e-30], &[1e-30], &mut one),
            Err(VectorError::Underflow)
        );
        assert!(mul(&[0.0], &[1e-30], &mut one).is_ok());
    }

    #[test]
    fn order() {
        assert_eq!(compare(&[1.0, 2.0], &[1.0, 3.0]), Ordering::Less);
        assert_eq!(compare(&[1.0, 2.0], &[1.0, 2.0]), Ordering::Equal);
        assert_eq!(compare(&[1.0, 2.0], &[1.0, 2.0, 0.0]), Ordering::Less);
        assert_eq!(compare(&[2.0], &[1.0, 9.0]), Ordering::Greater);
    }

    #[test]
    fn normalize() {
        let mut out = [0.0; 2];
        l2_normalize(&[3.0, 4.0], &mut out).unwrap();
        assert_eq!(out, [0.6, 0.8]);
        l2_normalize(&[0.0, 0.0], &mut out).unwrap();
        assert_eq!(out, [0.0, 0.0]);
        assert_eq!(norm(&[3.0, 4.0]), 5.0);
    }

    #[test]
    fn running_mean() {
        let mut sums = vec![0.0; 2];
        accumulate(&mut sums, &[1.0, 2.0]).unwrap();
        accumulate(&mut sums, &[3.0, 6.0]).unwrap();
        let mut other = vec![0.0; 2];
        accumulate(&mut other, &[2.0, 1.0]).unwrap();
        combine(&mut sums, &other).unwrap();
        let mut out = [0.0; 2];
        mean(&sums, 3.0, &mut out).unwrap();
        assert_eq!(out, [2.0, 3.0]);
        assert!(accumulate(&mut sums, &[1.0]).is_err());
    }
}
