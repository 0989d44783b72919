//! pgvector's names, for applications that port unchanged to a server with ruvector and
//! without pgvector:
//! - `CREATE INDEX ... USING hnsw` / `USING ivfflat` build a `ruhnsw` index ([`index_method`]);
//! - pgvector's settings (`SET hnsw.ef_search = 100`) are defined in each backend of a
//!   database with ruvector, on ruvector's own variables ([`define_names`]); a `SET` of one
//!   without a ruvector meaning gets a warning naming what ruvector reads ([`after_set`]).
//!
//! Nothing here applies where pgvector itself is present: in a database where an access
//! method `hnsw` exists, pgvector's library defines its settings and builds its indexes.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::gucs;

/// The ruvector setting that has a pgvector setting's meaning, where one does.
fn ours(name: &str) -> Option<&'static str> {
    match name {
        "hnsw.ef_search" => Some("ruvector.ef_search"),
        "hnsw.iterative_scan" => Some("ruvector.iterative_scan"),
        "hnsw.max_scan_tuples" | "hnsw.scan_mem_multiplier" => Some("ruvector.max_scan_tuples"),
        _ => None,
    }
}

/// Whether this database has pgvector's own index methods (pgvector installed here).
fn pgvector_here() -> bool {
    // SAFETY: a syscache lookup with missing_ok, inside a transaction.
    unsafe { pg_sys::get_am_oid(c"hnsw".as_ptr(), true) != pg_sys::InvalidOid }
}

static mut DEFINED: bool = false;

/// Defines pgvector's settings in this backend once its database has ruvector
/// (`ruvector_here`) and not pgvector (see `gucs::define_pgvector_names`); after the parse
/// analysis of every statement, which comes before anything looks a setting up (`SHOW`
/// does so before the statement runs).
pub fn define_names(ruvector_here: impl FnOnce() -> bool) {
    // SAFETY: the backend's only thread.
    if unsafe { DEFINED } || !ruvector_here() || pgvector_here() {
        return;
    }
    gucs::define_pgvector_names();
    // SAFETY: as above.
    unsafe { DEFINED = true };
}

/// After `SET name = ...` of a pgvector setting that has no effect here: a warning naming
/// what ruvector reads instead. That is an `ivfflat.*` setting once [`define_names`] has
/// run, and any pgvector setting in a database without ruvector (where it is only a
/// placeholder, and pgvector is not installed either).
pub fn after_set(name: &str) {
    let lower = name.to_ascii_lowercase();
    if !(lower.starts_with("hnsw.") || lower.starts_with("ivfflat.")) {
        return;
    }
    let Ok(c) = CString::new(lower.as_str()) else {
        return;
    };
    // SAFETY: a NUL-terminated name; missing_ok returns 0 for an unknown setting.
    let flags = unsafe { pg_sys::GetConfigOptionFlags(c.as_ptr(), true) };
    let placeholder = flags & pg_sys::GUC_CUSTOM_PLACEHOLDER as i32 != 0;
    // SAFETY: the backend's only thread.
    let (message, hint) = if unsafe { DEFINED } {
        if !lower.starts_with("ivfflat.") {
            return;
        }
        (
            format!("{lower} has no effect: an ivfflat index is a ruhnsw index here"),
            "ruvector.ef_search sets its search width.".to_string(),
        )
    } else {
        if !placeholder || pgvector_here() {
            return; // pgvector is loaded and owns it, or adopts the value when it loads
        }
        let hint = match ours(&lower) {
            Some(o) => format!("ruvector's ruhnsw index reads {o}."),
            None => {
                "ruvector's ruhnsw index has no such setting; see the ruvector.* settings.".into()
            }
        };
        (
            format!("{lower} has no effect: pgvector is not loaded"),
            hint,
        )
    };
    pgrx::pg_sys::panic::ErrorReport::new(PgSqlErrorCode::ERRCODE_WARNING, message, "ruvector")
        .set_hint(hint)
        .report(pgrx::PgLogLevel::WARNING);
}

/// The index method that `CREATE INDEX ... USING method` builds: `ruhnsw` for pgvector's
/// `hnsw` and `ivfflat` where no method of that name exists; `None` to leave the statement
/// as it is. `ivfflat` has no counterpart here: a notice says so.
pub fn index_method(method: &CStr) -> Option<&'static CStr> {
    let name = method.to_bytes();
    if name != b"hnsw" && name != b"ivfflat" {
        return None;
    }
    // SAFETY: a syscache lookup with missing_ok, inside the CREATE INDEX's transaction.
    if unsafe { pg_sys::get_am_oid(method.as_ptr(), true) } != pg_sys::InvalidOid {
        return None;
    }
    if name == b"ivfflat" {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            "ivfflat index built as a ruhnsw index; lists is ignored",
            "ruvector",
        )
        .set_hint("ruvector has no IVFFlat index: a ruhnsw (HNSW) index answers the same queries without training, and ruvector.ef_search sets its search width.")
        .report(pgrx::PgLogLevel::NOTICE);
    }
    Some(c"ruhnsw")
}

/// Whether reloption `name` is pgvector's `ivfflat` `lists`, which a ruhnsw index does not
/// take.
pub fn ignored_option(method: &CStr, name: &CStr) -> bool {
    method.to_bytes() == b"ivfflat" && name.to_bytes() == b"lists"
}
