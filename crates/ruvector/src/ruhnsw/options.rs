//! Reloptions of `ruhnsw` indexes (`WITH (m = 16, ef_construction = 64)`) and the
//! operator class's metric.

use std::sync::atomic::{AtomicU32, Ordering};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_core::hnsw::page::Storage;
use ruvector_core::hnsw::{Exact, Metric};

use crate::errors;

pub const M_DEFAULT: i32 = 16;
pub const M_MIN: i32 = 2;
pub const M_MAX: i32 = 100;
pub const EF_CONSTRUCTION_DEFAULT: i32 = 64;
pub const EF_CONSTRUCTION_MIN: i32 = 4;
pub const EF_CONSTRUCTION_MAX: i32 = 1000;
/// `exact_threshold = -1`: a tenant is searched exactly when that is expected to cost no
/// more than its graph search (`ruvector_core::hnsw::exact_is_cheaper`).
pub const EXACT_THRESHOLD_BY_COST: i32 = -1;
pub const EXACT_THRESHOLD_MAX: i32 = 1_000_000;

/// The parsed reloptions, as `build_reloptions` fills them.
#[repr(C)]
struct RelOptions {
    vl_len_: i32,
    m: i32,
    ef_construction: i32,
    exact_threshold: i32,
    retiring: bool,
    storage: i32,
}

/// The values of the `storage` option, in the order of their numbers.
const STORAGE: [(&std::ffi::CStr, Storage); 3] = [
    (c"auto", Storage::Auto),
    (c"full", Storage::Full),
    (c"half", Storage::Half),
];

static KIND: AtomicU32 = AtomicU32::new(0);

/// Registers the reloptions; from `_PG_init`.
pub fn init() {
    // SAFETY: called once while preloading; the strings are static.
    unsafe {
        let kind = pg_sys::add_reloption_kind();
        KIND.store(kind, Ordering::Relaxed);
        pg_sys::add_int_reloption(
            kind,
            c"m".as_ptr(),
            c"Links per node on the upper layers (twice as many on layer 0)".as_ptr(),
            M_DEFAULT,
            M_MIN,
            M_MAX,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
        pg_sys::add_int_reloption(
            kind,
            c"ef_construction".as_ptr(),
            c"Candidate list size while building (at least 2 * m)".as_ptr(),
            EF_CONSTRUCTION_DEFAULT,
            EF_CONSTRUCTION_MIN,
            EF_CONSTRUCTION_MAX,
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
        // A search setting only: takes effect at once, without a rebuild.
        pg_sys::add_int_reloption(
            kind,
            c"exact_threshold".as_ptr(),
            c"Tenants with at most this many vectors are searched exactly (-1: when cheaper than the graph)".as_ptr(),
            EXACT_THRESHOLD_BY_COST,
            EXACT_THRESHOLD_BY_COST,
            EXACT_THRESHOLD_MAX,
            pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE,
        );
        // On a dedicated index: its tenant's rows go back into the shared index (see
        // dedicated.rs). Changing it does not block searches or inserts.
        pg_sys::add_bool_reloption(
            kind,
            c"retiring".as_ptr(),
            c"This dedicated index is being given up: the shared index takes its tenant's rows again".as_ptr(),
            false,
            pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE,
        );
        // The reloption machinery keeps the pointer: the array lives as long as the process.
        let members: &'static mut [pg_sys::relopt_enum_elt_def] = Box::leak(
            STORAGE
                .iter()
                .enumerate()
                .map(|(i, (name, _))| pg_sys::relopt_enum_elt_def {
                    string_val: name.as_ptr(),
                    symbol_val: i as i32,
                })
                .chain([pg_sys::relopt_enum_elt_def {
                    string_val: std::ptr::null(),
                    symbol_val: 0,
                }])
                .collect(),
        );
        // Read when the index is built (the metapage records the choice): a change takes
        // effect at the next REINDEX.
        pg_sys::add_enum_reloption(
            kind,
            c"storage".as_ptr(),
            c"How index pages hold vector elements: auto, full (4 bytes) or half (2 bytes, rows re-ranked by the table's vectors)".as_ptr(),
            members.as_mut_ptr(),
            0,
            c"Valid values are \"auto\", \"full\" and \"half\".".as_ptr(),
            pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE,
        );
    }
}

fn int_option(name: &'static std::ffi::CStr, offset: usize) -> pg_sys::relopt_parse_elt {
    option(name, pg_sys::relopt_type::RELOPT_TYPE_INT, offset)
}

fn option(
    name: &'static std::ffi::CStr,
    opttype: pg_sys::relopt_type::Type,
    offset: usize,
) -> pg_sys::relopt_parse_elt {
    pg_sys::relopt_parse_elt {
        optname: name.as_ptr(),
        opttype,
        offset: offset as i32,
        #[cfg(feature = "pg18")]
        isset_offset: 0,
    }
}

/// `amoptions`: parses and validates `WITH (...)`.
pub unsafe extern "C-unwind" fn amoptions(
    reloptions: pg_sys::Datum,
    validate: bool,
) -> *mut pg_sys::bytea {
    let table = [
        int_option(c"m", std::mem::offset_of!(RelOptions, m)),
        int_option(
            c"ef_construction",
            std::mem::offset_of!(RelOptions, ef_construction),
        ),
        int_option(
            c"exact_threshold",
            std::mem::offset_of!(RelOptions, exact_threshold),
        ),
        option(
            c"retiring",
            pg_sys::relopt_type::RELOPT_TYPE_BOOL,
            std::mem::offset_of!(RelOptions, retiring),
        ),
        option(
            c"storage",
            pg_sys::relopt_type::RELOPT_TYPE_ENUM,
            std::mem::offset_of!(RelOptions, storage),
        ),
    ];
    // SAFETY: the table describes RelOptions; build_reloptions pallocs and fills it, or
    // raises an error (out-of-range values), which the guard passes on to PostgreSQL.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            pg_sys::build_reloptions(
                reloptions,
                validate,
                KIND.load(Ordering::Relaxed),
                std::mem::size_of::<RelOptions>(),
                table.as_ptr(),
                table.len() as i32,
            ) as *mut pg_sys::bytea
        })
    }
}

/// `m` and `ef_construction` of an index, validated together.
pub fn of(index: pg_sys::Relation) -> (usize, usize) {
    // SAFETY: rd_options is NULL or the RelOptions amoptions returned.
    let (m, ef) = unsafe {
        let opts = (*index).rd_options as *const RelOptions;
        if opts.is_null() {
            (M_DEFAULT, EF_CONSTRUCTION_DEFAULT)
        } else {
            ((*opts).m, (*opts).ef_construction)
        }
    };
    if ef < 2 * m {
        // pgvector's message, for applications that match it; the figures in the hint.
        errors::index_error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "ef_construction must be greater than or equal to 2 * m".into(),
            Some(&format!(
                "ef_construction is {ef} and m is {m}: raise ef_construction to at least {} or lower m.",
                2 * m
            )),
        );
    }
    (m as usize, ef as usize)
}

/// Which tenants of an index are searched exactly (the `exact_threshold` reloption): by
/// cost (-1, the default), or those of at most that many live vectors (0: none).
pub fn exact(index: pg_sys::Relation) -> Exact {
    // SAFETY: rd_options is NULL or the RelOptions amoptions returned.
    let t = unsafe {
        let opts = (*index).rd_options as *const RelOptions;
        if opts.is_null() {
            EXACT_THRESHOLD_BY_COST
        } else {
            (*opts).exact_threshold
        }
    };
    match usize::try_from(t) {
        Ok(limit) => Exact::UpTo(limit),
        Err(_) => Exact::ByCost,
    }
}

/// The `storage` option of an index; `auto` is `half` for a `halfvec` column.
pub fn storage(index: pg_sys::Relation) -> Storage {
    // SAFETY: rd_options is NULL or the RelOptions amoptions returned.
    let n = unsafe {
        let opts = (*index).rd_options as *const RelOptions;
        if opts.is_null() {
            0
        } else {
            (*opts).storage
        }
    };
    match STORAGE.get(n as usize).map_or(Storage::Auto, |&(_, s)| s) {
        // A halfvec's elements are halves: stored as such, exactly, in half the room.
        Storage::Auto if super::key_kind(index) == crate::vector::Kind::Halfvec => Storage::Half,
        s => s,
    }
}

/// The metric of the index's operator class, from its distance support function.
pub fn metric(index: pg_sys::Relation) -> Metric {
    // SAFETY: an open index with one key column; support function 1 is declared by every
    // ruhnsw operator class; get_func_name returns a palloc'd name or NULL.
    let name = unsafe {
        let proc = pg_sys::index_getprocid(index, 1, 1);
        let name = pg_sys::get_func_name(proc);
        if name.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    };
    match name.as_str() {
        "l2_distance" | "vector_l2_squared_distance" | "halfvec_l2_squared_distance" => Metric::L2,
        // A halfvec's halves are stored as they are (see Metric::HalfCosine).
        "cosine_distance" if super::key_kind(index) == crate::vector::Kind::Halfvec => {
            Metric::HalfCosine
        }
        "cosine_distance" => Metric::Cosine,
        "vector_negative_inner_product" | "halfvec_negative_inner_product" | "inner_product" => {
            Metric::InnerProduct
        }
        "l1_distance" => Metric::L1,
        "hamming_distance" => Metric::Hamming,
        "jaccard_distance" => Metric::Jaccard,
        other => errors::index_error(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("ruhnsw does not support the distance function \"{other}\""),
            Some("Use one of the operator classes vector_l2_ops, vector_cosine_ops, vector_ip_ops, vector_l1_ops, halfvec_l2_ops, halfvec_cosine_ops, halfvec_ip_ops, halfvec_l1_ops, bit_hamming_ops, bit_jaccard_ops."),
        ),
    }
}
