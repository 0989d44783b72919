//! Settings of pgvector that applications port unchanged: `SET hnsw.ef_search = 100` on a
//! server without pgvector only creates a placeholder that nothing reads. A warning names the
//! setting ruvector reads instead.

use std::ffi::CString;

use pgrx::pg_sys;

/// ruvector's setting for a pgvector setting, where one maps.
fn ours(name: &str) -> Option<&'static str> {
    match name {
        "hnsw.ef_search" => Some("ruvector.ef_search"),
        "hnsw.iterative_scan" => Some("ruvector.iterative_scan"),
        "hnsw.max_scan_tuples" => Some("ruvector.max_scan_tuples"),
        _ => None,
    }
}

/// After `SET name = ...`: warns when `name` is a pgvector setting that no loaded library
/// defines (a placeholder) and pgvector is not installed in this database (where it is, it
/// adopts the value when it loads).
pub fn warn_if_placeholder(name: &str) {
    let lower = name.to_ascii_lowercase();
    if !(lower.starts_with("hnsw.") || lower.starts_with("ivfflat.")) {
        return;
    }
    let Ok(c) = CString::new(lower.as_str()) else {
        return;
    };
    // SAFETY: a NUL-terminated name; missing_ok returns 0 for an unknown setting.
    let flags = unsafe { pg_sys::GetConfigOptionFlags(c.as_ptr(), true) };
    if flags & pg_sys::GUC_CUSTOM_PLACEHOLDER as i32 == 0 {
        return; // pgvector is loaded and owns it
    }
    // SAFETY: a catalog lookup inside the SET's transaction; missing_ok.
    if unsafe { pg_sys::get_extension_oid(c"vector".as_ptr(), true) } != pg_sys::InvalidOid {
        return;
    }
    let hint = match ours(&lower) {
        Some(o) => format!("ruvector's ruhnsw index reads {o}."),
        None => "ruvector's ruhnsw index has no such setting; see the ruvector.* settings.".into(),
    };
    pgrx::pg_sys::panic::ErrorReport::new(
        pgrx::PgSqlErrorCode::ERRCODE_WARNING,
        format!("{lower} has no effect: pgvector is not loaded"),
        "ruvector",
    )
    .set_hint(hint)
    .report(pgrx::PgLogLevel::WARNING);
}
