//! Errors of vector values. The extension maps each variant to a SQLSTATE (see
//! `crates/ruvector/src/errors.rs`); messages follow pgvector's wording so that applications
//! moving between the two see the same text.

use std::fmt;

use crate::vector::VECTOR_MAX_DIM;

/// Why a vector value or operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VectorError {
    /// The text is not a vector literal; `detail` says what was expected where known.
    InvalidSyntax { detail: Option<&'static str> },
    /// `[]`, an empty array, or a zero dimension count.
    NoDimensions,
    /// More than [`VECTOR_MAX_DIM`] elements.
    TooManyDimensions { dims: usize },
    /// An element literal whose magnitude does not fit a 4-byte float.
    OutOfRange { literal: String },
    /// A NaN element.
    NotANumber,
    /// An infinite element.
    Infinite,
    /// The value's dimension count differs from the column's (typmod).
    DimensionMismatch { expected: usize, actual: usize },
    /// The two operands of a binary operation differ in dimensions.
    DifferentDimensions { left: usize, right: usize },
    /// The two bit strings of a bit distance differ in length.
    DifferentBitLengths { left: u32, right: u32 },
    /// An arithmetic result overflowed a 4-byte float.
    Overflow,
    /// A product of non-zero elements underflowed to zero.
    Underflow,
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::InvalidSyntax { .. } => write!(f, "invalid input syntax for type vector"),
            VectorError::NoDimensions => write!(f, "vector must have at least 1 dimension"),
            VectorError::TooManyDimensions { .. } => {
                write!(
                    f,
                    "vector cannot have more than {VECTOR_MAX_DIM} dimensions"
                )
            }
            VectorError::OutOfRange { literal } => {
                write!(f, "\"{literal}\" is out of range for type vector")
            }
            VectorError::NotANumber => write!(f, "NaN not allowed in vector"),
            VectorError::Infinite => write!(f, "infinite value not allowed in vector"),
            VectorError::DimensionMismatch { expected, actual } => {
                write!(f, "expected {expected} dimensions, not {actual}")
            }
            VectorError::DifferentDimensions { left, right } => {
                write!(f, "different vector dimensions {left} and {right}")
            }
            VectorError::DifferentBitLengths { left, right } => {
                write!(f, "different bit lengths {left} and {right}")
            }
            VectorError::Overflow => write!(f, "value out of range: overflow"),
            VectorError::Underflow => write!(f, "value out of range: underflow"),
        }
    }
}

impl std::error::Error for VectorError {}
