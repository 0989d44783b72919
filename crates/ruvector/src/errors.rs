//! Every user-facing error of the extension, with its SQLSTATE, DETAIL and HINT.
//! Messages of vector errors follow pgvector word for word; hints are ours.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use ruvector_core::{VectorError, VECTOR_MAX_DIM};
use ruvector_tenancy::decide::Denial;

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
        | VectorError::DifferentDimensions { .. }
        | VectorError::DifferentBitLengths { .. } => ERRCODE_DATA_EXCEPTION,
    }
}

/// Raises a vector error. `literal` is the input text, for syntax errors.
#[track_caller]
pub fn vector_error(err: VectorError, literal: Option<&str>) -> ! {
    type_error("vector", err, literal)
}

/// Raises an error of a value of SQL type `type_name` (`vector` or `halfvec`). `literal` is
/// the input text, for syntax errors.
#[track_caller]
pub fn type_error(type_name: &str, err: VectorError, literal: Option<&str>) -> ! {
    let message = match (&err, literal) {
        (VectorError::InvalidSyntax { .. }, Some(lit)) => {
            format!("invalid input syntax for type {type_name}: \"{lit}\"")
        }
        _ => err.message(type_name),
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
            Some(&format!(
                "The value's dimensions must equal the column's {type_name}(n) modifier."
            )),
        ),
        VectorError::DifferentDimensions { .. } => {
            (None, Some("Both operands must have the same number of dimensions."))
        }
        VectorError::DifferentBitLengths { .. } => {
            (None, Some("Both bit strings must have the same length."))
        }
        VectorError::NotANumber | VectorError::Infinite => {
            (None, Some("Vector elements must be finite numbers."))
        }
        VectorError::OutOfRange { .. } if type_name == "halfvec" => (
            None,
            Some("halfvec elements are 2-byte floats, at most 65504 in magnitude."),
        ),
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

/// Raises a core result's error for a value of SQL type `type_name`, or returns its value.
#[track_caller]
pub fn check_as<T>(type_name: &str, r: Result<T, VectorError>) -> T {
    r.unwrap_or_else(|e| type_error(type_name, e, None))
}

/// A typmod outside 1..=16000, or with more than one number.
pub fn invalid_typmod(type_name: &str, message: String) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            message,
            "ruvector",
        )
        .set_hint(format!(
            "Declare the column as {type_name}(n) with n from 1 to {VECTOR_MAX_DIM}."
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

/// Why a tenant context may not be used.
pub struct Refusal {
    pub code: PgSqlErrorCode,
    pub message: String,
    pub detail: String,
    pub hint: String,
    /// Short reason for the audit log.
    pub reason: &'static str,
}

pub fn refusal(
    code: PgSqlErrorCode,
    reason: &'static str,
    message: String,
    detail: String,
    hint: &str,
) -> Refusal {
    Refusal {
        code,
        message,
        detail,
        hint: hint.to_string(),
        reason,
    }
}

/// The refusal for a context the tenant context layer's rules deny (`id`: the tenant the
/// context names, for messages).
pub fn denied(d: Denial, id: &str) -> Refusal {
    use PgSqlErrorCode::*;
    match d {
        Denial::NoContext => refusal(
            ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            "no_context",
            "no tenant context".into(),
            "This statement uses a tenant table and ruvector.tenant_id is not set.".into(),
            "Run SET ruvector.tenant_id = '<tenant>' (or SET LOCAL in a transaction) first.",
        ),
        Denial::WildcardDenied => refusal(
            ERRCODE_INSUFFICIENT_PRIVILEGE,
            "wildcard_denied",
            "permission denied to use the tenant context \"*\"".into(),
            "Only superusers and members of ruvector_admin can act on all tenants.".into(),
            "Set ruvector.tenant_id to your own tenant.",
        ),
        Denial::RoleBound { role, bound } => refusal(
            ERRCODE_INSUFFICIENT_PRIVILEGE,
            "role_bound",
            format!("role \"{role}\" is bound to another tenant"),
            format!("Sessions of role \"{role}\" can only use tenant \"{bound}\"."),
            "Connect as the role of the tenant you need, or ask an administrator.",
        ),
        Denial::Suspended => refusal(
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "suspended",
            format!("tenant \"{id}\" is suspended"),
            "Every operation of a suspended tenant is refused, reads included.".into(),
            "An administrator can resume it with ruvector_tenant_resume().",
        ),
        Denial::Unknown => refusal(
            ERRCODE_UNDEFINED_OBJECT,
            "unknown",
            format!("tenant \"{id}\" does not exist"),
            "No tenant with this id is registered in this database.".into(),
            "Check ruvector.tenant_id, or create the tenant with ruvector_tenant_create().",
        ),
        Denial::Deleted => refusal(
            ERRCODE_UNDEFINED_OBJECT,
            "deleted",
            format!("tenant \"{id}\" does not exist"),
            "The tenant was deleted.".into(),
            "Check ruvector.tenant_id.",
        ),
        Denial::NeedsWildcard => refusal(
            ERRCODE_INSUFFICIENT_PRIVILEGE,
            "needs_wildcard",
            "this command on a tenant table requires the tenant context \"*\"".into(),
            String::new(),
            "Ask an administrator.",
        ),
    }
}

/// The refusal for a statement on a tenant table without a tenant context.
pub fn no_context() -> Refusal {
    denied(Denial::NoContext, "")
}

/// Raises a refusal.
pub fn refuse(r: Refusal) -> ! {
    let mut report = ErrorReport::new(r.code, r.message, "ruvector").set_hint(r.hint);
    if !r.detail.is_empty() {
        report = report.set_detail(r.detail);
    }
    raise(report)
}

/// The caller is neither superuser nor a member of ruvector_admin.
pub fn not_admin(what: &str) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!("permission denied to {what}"),
            "ruvector",
        )
        .set_detail(
            "Tenant administration is reserved to superusers and members of ruvector_admin.",
        )
        .set_hint("GRANT ruvector_admin TO <role> to allow it."),
    )
}

/// A malformed tenant id.
pub fn invalid_tenant_id(id: &str, why: &str) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid tenant id \"{id}\""),
            "ruvector",
        )
        .set_detail(why.to_string())
        .set_hint("A tenant id is 1 to 63 characters of letters, digits, '-', '_' and '.'."),
    )
}

/// A row for a tenant that does not exist (or was deleted).
pub fn unknown_tenant(id: &str) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
            format!("tenant \"{id}\" does not exist"),
            "ruvector",
        )
        .set_detail("Rows of tenant tables must belong to a registered, not deleted tenant.")
        .set_hint("Create the tenant with ruvector_tenant_create()."),
    )
}

/// A reservation beyond the tenant's quota.
pub fn quota_exceeded(id: &str, e: ruvector_tenancy::quota::QuotaExceeded) -> Refusal {
    use ruvector_tenancy::quota::Resource;
    let (what, current, max, hint) = match e.resource {
        Resource::Vectors => (
            "vector",
            e.current.to_string(),
            e.max.to_string(),
            "Delete rows, or ask an administrator to raise max_vectors.",
        ),
        Resource::StorageBytes => (
            "storage",
            format!("{:.3} GB", e.current as f64 / 1073741824.0),
            format!("{:.3} GB", e.max as f64 / 1073741824.0),
            "Delete rows, or ask an administrator to raise max_storage_gb.",
        ),
    };
    refusal(
        PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
        "quota_exceeded",
        format!("tenant \"{id}\" has exceeded its {what} quota"),
        format!("current: {current}, maximum: {max}"),
        hint,
    )
}

/// The shared registry has no free slot.
pub fn registry_full(capacity: u32) -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_CONFIGURATION_LIMIT_EXCEEDED,
            "the tenant registry is full",
            "ruvector",
        )
        .set_detail(format!(
            "ruvector.max_tenants is {capacity}; deleted tenants keep their slot until restart."
        ))
        .set_hint("Raise ruvector.max_tenants and restart the server."),
    )
}

/// Raises an error of the `ruhnsw` index with `code`, and an optional hint.
#[track_caller]
pub fn index_error(code: PgSqlErrorCode, message: String, hint: Option<&str>) -> ! {
    let mut report = ErrorReport::new(code, message, "ruvector");
    if let Some(h) = hint {
        report = report.set_hint(h);
    }
    raise(report)
}

/// Raises `XX002 index_corrupted` for a page of the `ruhnsw` index that cannot be read.
#[track_caller]
pub fn index_corrupted(index: &str, what: String) -> ! {
    index_error(
        PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
        format!("index \"{index}\" is corrupted: {what}"),
        Some("REINDEX the index; ruvector_index_check() reports what is wrong."),
    )
}

/// A tenant table row of another tenant than the running statement's (a role that bypasses
/// row-level security wrote it, or tried to).
pub fn row_of_other_tenant(row: &str, context: &str) -> Refusal {
    refusal(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        "other_tenants_row",
        format!("row of tenant \"{row}\" outside the tenant context \"{context}\""),
        "Under one tenant's context, a statement can only write that tenant's rows.".into(),
        "Set ruvector.tenant_id to the row's tenant, or to '*' as an administrator.",
    )
}

/// A row of a tenant table whose tenant column is NULL.
pub fn row_without_tenant() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_NOT_NULL_VIOLATION,
            "a row of a tenant table needs a tenant",
            "ruvector",
        )
        .set_detail("The tenant column is NULL: no tenant could ever read the row.")
        .set_hint("Leave the column to its default, current_setting('ruvector.tenant_id')."),
    )
}

/// The quota trigger fired on something other than a registered tenant table, or not as
/// the AFTER ROW trigger that ruvector_enable_tenant_rls creates.
pub fn not_a_tenant_table_trigger() -> ! {
    raise(
        ErrorReport::new(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "ruvector._quota_trigger() fires only as the quota trigger of a tenant table",
            "ruvector",
        )
        .set_hint("ruvector_enable_tenant_rls() installs it; do not attach it yourself."),
    )
}
