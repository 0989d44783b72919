//! Rules for `halfvec` values: vectors of IEEE half-precision (2-byte) floats, as pgvector
//! has them. Their elements are read as `f32` and every rule of [`crate::vector`] applies to
//! them; what is particular to half precision is how an `f32` becomes a half (rounded to the
//! nearest, ties to even) and when that is an error:
//! - a value given as text or by a cast beyond ±65504 is out of range, named as written;
//! - an arithmetic result beyond it overflows; a product of non-zero elements that rounds to
//!   zero underflows.
//!
//! Halves are held as their bit patterns (`u16`); a `halfvec` datum stores them
//! little-endian, pgvector's layout on the platforms both run on.

use crate::text;
use crate::VectorError;

/// The largest finite `halfvec` element.
pub const HALF_MAX: f32 = 65504.0;

/// How a narrowing to half precision reports an element beyond the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Narrowing {
    /// A value converted from text, `vector` or an array: out of range, named.
    Value,
    /// The result of addition, subtraction or an aggregate: overflow.
    Sum,
    /// The result of an element-wise product: overflow, or underflow to zero.
    Product,
}

/// `x` rounded to half precision, or `None` when it is finite but beyond the half range.
pub fn to_half(x: f32) -> Option<u16> {
    let h = half::f16::from_f32(x);
    (!h.is_infinite() || x.is_infinite()).then_some(h.to_bits())
}

/// The `f32` value of a half.
pub fn from_half(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

/// Narrows `values` into `out` (halves, little-endian, two bytes per element).
pub fn narrow(values: &[f32], out: &mut [u8], how: Narrowing) -> Result<(), VectorError> {
    assert_eq!(out.len(), 2 * values.len(), "two bytes per element");
    for (o, &x) in out.chunks_exact_mut(2).zip(values) {
        let Some(h) = to_half(x) else {
            return Err(match how {
                Narrowing::Value => {
                    let mut literal = String::new();
                    text::write_f32(&mut literal, x);
                    VectorError::OutOfRange { literal }
                }
                Narrowing::Sum | Narrowing::Product => VectorError::Overflow,
            });
        };
        if how == Narrowing::Product && x != 0.0 && h & 0x7fff == 0 {
            return Err(VectorError::Underflow);
        }
        o.copy_from_slice(&h.to_le_bytes());
    }
    Ok(())
}

/// Parses a `halfvec` literal: `vector`'s syntax, each element rounded to half precision; an
/// element beyond ±65504 is out of range, named as written.
pub fn parse(input: &[u8], typmod: Option<usize>) -> Result<Vec<u16>, VectorError> {
    text::parse_with(input, typmod, |value, token| {
        to_half(value).ok_or_else(|| VectorError::OutOfRange {
            literal: token.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widen(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(2)
            .map(|c| from_half(u16::from_le_bytes([c[0], c[1]])))
            .collect()
    }

    #[test]
    fn text_rounds_to_the_nearest_half_and_refuses_what_does_not_fit() {
        let parsed = parse(b"[1.23456, 65519, -65519, 1e-8, 1e-46]", None).unwrap();
        let values: Vec<f32> = parsed.iter().map(|&h| from_half(h)).collect();
        assert_eq!(values, [1.234375, HALF_MAX, -HALF_MAX, 0.0, 0.0]);
        assert_eq!(
            parse(b"[1,65520]", None),
            Err(VectorError::OutOfRange {
                literal: "65520".into()
            })
        );
        // Beyond f32 too: the same error, from the f32 reading.
        assert_eq!(
            parse(b"[4e38]", None),
            Err(VectorError::OutOfRange {
                literal: "4e38".into()
            })
        );
        assert_eq!(parse(b"[NaN]", None), Err(VectorError::NotANumber));
        assert_eq!(
            parse(b"[1,2,3]", Some(2)),
            Err(VectorError::DimensionMismatch {
                expected: 2,
                actual: 3
            })
        );
        assert_eq!(
            VectorError::DifferentDimensions { left: 2, right: 1 }.message("halfvec"),
            "different halfvec dimensions 2 and 1"
        );
    }

    #[test]
    fn narrowing_names_values_and_reports_arithmetic() {
        let mut out = [0u8; 4];
        narrow(&[0.6, -1e-8], &mut out, Narrowing::Value).unwrap();
        assert_eq!(widen(&out), [0.60009766, -0.0]);
        assert_eq!(
            narrow(&[1.0, 65520.0], &mut out, Narrowing::Value),
            Err(VectorError::OutOfRange {
                literal: "65520".into()
            })
        );
        assert_eq!(
            narrow(&[1.0, 131008.0], &mut out, Narrowing::Sum),
            Err(VectorError::Overflow)
        );
        // 1e-7 as a half is 1.1920929e-7; its square rounds to zero as a half.
        let tiny = from_half(to_half(1e-7).unwrap());
        assert_eq!(
            narrow(&[1.0, tiny * tiny], &mut out, Narrowing::Product),
            Err(VectorError::Underflow)
        );
        // A product that is zero because an element is: no underflow; -0 stays -0.
        narrow(&[0.0, -0.0], &mut out, Narrowing::Product).unwrap();
        assert_eq!(widen(&out), [0.0, -0.0]);
    }
}
