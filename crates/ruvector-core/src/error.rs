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
    /// An element literal (or, in a cast to `halfvec`, a value) whose magnitude does not fit
    /// the type's floats.
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
    /// An arithmetic result overflowed the type's floats.
    Overflow,
    /// A product of non-zero elements underflowed to zero.
    Underflow,
}

impl VectorError {
    /// The message for a value of SQL type `type_name` (`vector` or `halfvec`), in pgvector's
    /// words for that type.
    pub fn message(&self, type_name: &str) -> String {
        match self {
            VectorError::InvalidSyntax { .. } => {
                format!("invalid input syntax for type {type_name}")
            }
            VectorError::NoDimensions => format!("{type_name} must have at least 1 dimension"),
            VectorError::TooManyDimensions { .. } => {
                format!("{type_name} cannot have more than {VECTOR_MAX_DIM} dimensions")
            }
            VectorError::OutOfRange { literal } => {
                format!("\"{literal}\" is out of range for type {type_name}")
            }
            VectorError::NotANumber => format!("NaN not allowed in {type_name}"),
            VectorError::Infinite => format!("infinite value not allowed in {type_name}"),
            VectorError::DimensionMismatch { expected, actual } => {
                format!("expected {expected} dimensions, not {actual}")
            }
            VectorError::DifferentDimensions { left, right } => {
                format!("different {type_name} dimensions {left} and {right}")
            }
            VectorError::DifferentBitLengths { left, right } => {
                format!("different bit lengths {left} and {right}")
            }
            VectorError::Overflow => "value out of range: overflow".to_string(),
            VectorError::Underflow => "value out of range: underflow".to_string(),
        }
    }
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message("vector"))
    }
}

impl std::error::Error for VectorError {}
