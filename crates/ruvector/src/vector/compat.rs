//! pgvector's names, for applications that port unchanged to a server with ruvector and
//! without pgvector:
//! - `CREATE INDEX ... USING hnsw` / `USING ivfflat` build a `ruhnsw` index ([`index_method`]);
//! - pgvector's settings (`SET hnsw.ef_search = 100`) are placeholders that no library
//!   defines; the `ruhnsw` scan reads those that have a ruvector meaning ([`int`],
//!   [`iterative_scan`]), a `SET` of one is checked at once ([`after_set`]), and a setting
//!   without a meaning here gets a warning naming what ruvector reads instead.
//!
//! Nothing here applies where pgvector itself is present: in a database where an access
//! method `hnsw` exists, and for a setting that a loaded library defines.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

/// What a pgvector setting takes.
#[derive(Clone, Copy)]
enum Kind {
    Int { min: i32, max: i32 },
    Real { min: f64, max: f64 },
    Enum(&'static [&'static str]),
}

/// pgvector 0.8's settings: name, values, and the ruvector setting that has its meaning.
const SETTINGS: &[(&str, Kind, Option<&str>)] = &[
    (
        "hnsw.ef_search",
        Kind::Int { min: 1, max: 1000 },
        Some("ruvector.ef_search"),
    ),
    (
        "hnsw.iterative_scan",
        Kind::Enum(&["off", "relaxed_order", "strict_order"]),
        Some("ruvector.iterative_scan"),
    ),
    (
        "hnsw.max_scan_tuples",
        Kind::Int {
            min: 1,
            max: i32::MAX,
        },
        Some("ruvector.max_scan_tuples"),
    ),
    // An iterative scan's memory: ruhnsw's is bounded by max_scan_tuples instead (a few
    // dozen bytes per candidate), so any accepted value has the meaning "enough".
    (
        "hnsw.scan_mem_multiplier",
        Kind::Real {
            min: 1.0,
            max: 1000.0,
        },
        Some("ruvector.max_scan_tuples"),
    ),
    ("ivfflat.probes", Kind::Int { min: 1, max: 32768 }, None),
    (
        "ivfflat.iterative_scan",
        Kind::Enum(&["off", "relaxed_order"]),
        None,
    ),
    ("ivfflat.max_probes", Kind::Int { min: 1, max: 32768 }, None),
];

fn setting(name: &str) -> Option<(Kind, Option<&'static str>)> {
    SETTINGS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, kind, ours)| (kind, ours))
}

fn is_pgvector_name(lower: &str) -> bool {
    lower.starts_with("hnsw.") || lower.starts_with("ivfflat.")
}

/// Whether this database has pgvector's own index methods (pgvector installed here).
fn pgvector_here() -> bool {
    // SAFETY: a syscache lookup with missing_ok, inside a transaction.
    unsafe { pg_sys::get_am_oid(c"hnsw".as_ptr(), true) != pg_sys::InvalidOid }
}

/// The value of placeholder `name` when one is set (not empty); `None` when no such setting
/// exists or a loaded library (pgvector) defines it.
fn placeholder_value(name: &CStr) -> Option<String> {
    // SAFETY: NUL-terminated name; missing_ok returns 0 flags / NULL for an unknown setting;
    // the returned string is copied at once.
    unsafe {
        let flags = pg_sys::GetConfigOptionFlags(name.as_ptr(), true);
        if flags & pg_sys::GUC_CUSTOM_PLACEHOLDER as i32 == 0 {
            return None;
        }
        let value = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        if value.is_null() {
            return None;
        }
        let value = CStr::from_ptr(value).to_string_lossy().into_owned();
        (!value.is_empty()).then_some(value)
    }
}

fn invalid(name: &str, value: &str, hint: String) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{name}\": \"{value}\""),
        "ruvector",
    )
    .set_hint(hint)
    .report(pgrx::PgLogLevel::ERROR);
    unreachable!("an ERROR does not return")
}

/// An enum value's position, matched as PostgreSQL matches enum settings (any case).
fn enum_position(values: &[&str], value: &str) -> Option<usize> {
    values
        .iter()
        .position(|v| v.eq_ignore_ascii_case(value.trim()))
}

/// Checks `value` of pgvector setting `name` as pgvector would, and returns it as a number
/// (an enum as its position); raises 22023 when pgvector would refuse it.
fn parse(name: &str, kind: Kind, value: &str) -> f64 {
    let c = CString::new(value).unwrap_or_default();
    match kind {
        Kind::Int { min, max } => {
            let mut n = 0;
            // SAFETY: a NUL-terminated string; parse_int only writes `n` and the hint.
            let ok = unsafe { pg_sys::parse_int(c.as_ptr(), &mut n, 0, std::ptr::null_mut()) };
            if !ok || n < min || n > max {
                invalid(
                    name,
                    value,
                    format!("{name} takes an integer from {min} to {max}."),
                );
            }
            n as f64
        }
        Kind::Real { min, max } => {
            let mut x = 0.0;
            // SAFETY: as above.
            let ok = unsafe { pg_sys::parse_real(c.as_ptr(), &mut x, 0, std::ptr::null_mut()) };
            if !ok || x.is_nan() || x < min || x > max {
                invalid(
                    name,
                    value,
                    format!("{name} takes a number from {min} to {max}."),
                );
            }
            x
        }
        Kind::Enum(values) => match enum_position(values, value) {
            Some(i) => i as f64,
            None => invalid(
                name,
                value,
                format!("Available values: {}.", values.join(", ")),
            ),
        },
    }
}

/// The value of an integer pgvector setting when it is set and pgvector is not loaded;
/// raises 22023 for a value pgvector would refuse (one set with `set_config` or in a
/// configuration file, which no check saw).
pub fn int(name: &'static CStr) -> Option<i32> {
    let value = placeholder_value(name)?;
    let name = name.to_str().expect("setting names are ASCII");
    let (kind, _) = setting(name).expect("a pgvector setting");
    Some(parse(name, kind, &value) as i32)
}

/// `hnsw.iterative_scan` when set: 0 off, 1 relaxed_order, 2 strict_order.
pub fn iterative_scan() -> Option<usize> {
    let value = placeholder_value(c"hnsw.iterative_scan")?;
    let (kind, _) = setting("hnsw.iterative_scan").expect("a pgvector setting");
    Some(parse("hnsw.iterative_scan", kind, &value) as usize)
}

/// After `SET name = ...`: a pgvector setting that no loaded library defines, in a database
/// without pgvector, is checked as pgvector checks it (22023 undoes the SET with its
/// transaction); one without a ruvector meaning gets a warning naming what ruvector reads.
pub fn after_set(name: &str) {
    let lower = name.to_ascii_lowercase();
    if !is_pgvector_name(&lower) {
        return;
    }
    let Ok(c) = CString::new(lower.as_str()) else {
        return;
    };
    let Some(value) = placeholder_value(&c) else {
        return; // pgvector is loaded and owns it, or RESET
    };
    if pgvector_here() {
        return; // pgvector adopts the value when its library loads
    }
    let hint = match setting(&lower) {
        Some((kind, ours)) => {
            parse(&lower, kind, &value);
            match ours {
                Some(_) => return,
                None => "An index created USING ivfflat is a ruhnsw index here; ruvector.ef_search sets its search width.".to_string(),
            }
        }
        None => "ruvector's ruhnsw index has no such setting; see the ruvector.* settings.".into(),
    };
    pgrx::pg_sys::panic::ErrorReport::new(
        PgSqlErrorCode::ERRCODE_WARNING,
        format!("{lower} has no effect: pgvector is not loaded"),
        "ruvector",
    )
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
