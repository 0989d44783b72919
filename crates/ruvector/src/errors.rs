//! Every user-facing error of the extension, with its SQLSTATE, DETAIL and HINT.
//! Messages of vector errors follow pgvector word for word; hints are ours.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use ruvector_core::{VectorError, VECTOR_MAX_DIM};

fn raise(report: ErrorReport) -> ! {
    report.report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}

/// The SQLSTATE of a vector error (see docs/sql-reference.md, "Errors").
pub fn sqlstate(err: &VectorError) -> PgSqlErrorCode {
    use PgSqlErrorCode::*;
    match err {
        VectorError::InvalidSyntax { .. } => ERRCODE_INVALID_TEXT_REPRESENTATION,
        VectorError::TooManyDimensions { .. } => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        VectorError::OutOfRange { .. } | VectorError::Overflow | VectorError::Underflow => {
            ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE
        }
        VectorError::NoDimensions
        | VectorError::NotANumber
        | VectorError::Infinite
        | VectorError::DimensionMismatch { .. }
        | VectorError::DifferentDimensions { .. } => ERRCODE_DATA_EXCEPTION,
    }
}

/// Raises a vector error. `literal` is the input text, for syntax errors.
#[track_caller]
pub fn vector_error(err: VectorError, literal: Option<&str>) -> ! {
    let message = match (&err, literal) {
        (VectorError::InvalidSyntax { .. }, Some(lit)) => {
            format!("invalid input syntax for type vector: \"{lit}\"")
        }
        _ => err.to_string(),
    };
    let mut report = ErrorReport::new(sqlstate(&err), message, "ruvector");
    let (detail, hint): (Option<String>, Option<&str>) = match &err {
        VectorError::InvalidSyntax { detail } => (
            detail.map(str::to_string),
            Some("A vector literal is a bracketed, comma-separated list of numbers, such as '[1,2.5,3]'."),
        ),
        VectorError::TooManyDimensions { .. } => (
            None,
            Some("Reduce the dimensions, for example with a smaller embedding model or subvector selection."),
        ),
        VectorError::DimensionMismatch { .. } => (
            None,
            Some("The value's dimensions must equal the column's vector(n) modifier."),
        ),
        VectorError::DifferentDimensions { .. } => {
            (None, Some("Both operands must have the same number of dimensions."))
        }
        VectorError::NotANumber | VectorError::Infinite => {
            (None, Some("Vector elements must be finite numbers."))
        }
        VectorError::OutOfRange { .. } => (
            None,
            Some("Vector elements are 4-byte floats, at most 3.4028235e38 in magnitude."),
        ),
        _ => (None, None),
    };
    if let Some(d) = detail {
        report = report.set_detail(d);
    }
    if let Some(h) = hint {
        report = report.set_hint(h);
    }
    raise(report)
}

/// Raises a core result's error, or returns its value.
#[track_caller]
pub fn check<T>(r: Result<T, VectorError>) -> T {
    r.unwrap_or_else(|e| vector_error(e, None))
}

/// A typmod outside 1..=16000, or with more than one number.
pub fn invalid_typmod(message: String) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            message,
            "ruvector",
        )
        .set_hint(format!(
            "Declare the column as vector(n) with n from 1 to {VECTOR_MAX_DIM}."
        )),
    )
}

/// An array that cannot become a vector.
pub fn bad_array(code: PgSqlErrorCode, message: &'static str) -> ! {
    raise(ErrorReport::new(code, message, "ruvector"))
}

/// A binary value whose reserved field is not zero.
pub fn bad_binary_unused(unused: i32) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("expected unused to be 0, not {unused}"),
            "ruvector",
        )
        .set_detail("The binary format is a 2-byte dimension count, 2 reserved zero bytes and 4-byte floats."),
    )
}

/// The library was loaded without `shared_preload_libraries`.
pub fn not_preloaded() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "ruvector must be loaded via shared_preload_libraries",
            "ruvector",
        )
        .set_detail("RuVector keeps tenant state in shared memory, which is only available to preloaded libraries.")
        .set_hint("Add 'ruvector' to shared_preload_libraries in postgresql.conf and restart the server."),
    )
}
