//! Every GUC of the extension, defined once in [`init`], read through typed getters.

use std::ffi::{c_char, c_int, c_void, CStr};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use ruvector_tenancy::tenant_id::{parse_context, TenantContext};

/// `ruvector.tenant_id`: the tenant of this session or transaction (`SET` / `SET LOCAL`).
/// Defined directly (not through pgrx's setting type) so the per-statement read is a pointer
/// read, not an allocation.
static mut TENANT_ID: *mut c_char = std::ptr::null_mut();

/// `ruvector.audit_enabled`: write tenant operations and refusals to the audit log.
/// Superuser-only, with SET granted to ruvector_admin by the extension script, so a tenant
/// session can never turn its own audit trail off.
static AUDIT_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(false);

/// `ruvector.max_tenants`: capacity of the shared tenant registry, fixed at server start.
/// About 714 bytes of shared memory per tenant (a 320-byte slot, its share of the hash index,
/// a 256-byte metrics record and a 128-byte integrity record): 100000 tenants take 71 MB.
pub const MAX_TENANTS_DEFAULT: i32 = 100_000;
pub const MAX_TENANTS_MIN: i32 = 16;
pub const MAX_TENANTS_MAX: i32 = 10_000_000;
static MAX_TENANTS: GucSetting<i32> = GucSetting::<i32>::new(MAX_TENANTS_DEFAULT);

/// `ruvector.tenant_purge_delay`: seconds between a soft delete and the purge of the
/// tenant's rows. A week by default: long enough to undo a mistaken delete from a backup
/// conversation, short enough for erasure obligations.
pub const PURGE_DELAY_DEFAULT: i32 = 7 * 24 * 3600;
static PURGE_DELAY: GucSetting<i32> = GucSetting::<i32>::new(PURGE_DELAY_DEFAULT);

/// `ruvector.admission_control`: rate limits and fair scheduling of tenant statements.
static ADMISSION_CONTROL: GucSetting<bool> = GucSetting::<bool>::new(true);

/// `ruvector.max_active_statements`: tenant statements executing at once, server-wide;
/// 0 = four times the CPUs: a busy tenant alone keeps three quarters (three statements per
/// CPU, enough for every core while some wait on memory or I/O: scans of one tenant ran at
/// 0.85x their speed without admission control with two per CPU), half of that while quiet
/// tenants are active, and the last quarter is kept for tenants that run nothing.
static MAX_ACTIVE: GucSetting<i32> = GucSetting::<i32>::new(0);

/// `ruvector.admission_timeout`: the longest a statement waits for admission (ms).
pub const ADMISSION_TIMEOUT_DEFAULT_MS: i32 = 30_000;
static ADMISSION_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(ADMISSION_TIMEOUT_DEFAULT_MS);

/// `ruvector.scale_ef_search`: search tenant graphs of more than [`SCALE_EF_ABOVE`] vectors
/// with a candidate list growing with their size (`ruvector_core::hnsw::search_width`).
static SCALE_EF_SEARCH: GucSetting<bool> = GucSetting::<bool>::new(true);

/// The graph size up to which `ruvector.ef_search` is used as set. On 384-dimension
/// embedding-like data, `ef_search` 40 gives recall@10 0.990 at 10,000 vectors; scaled from
/// half that, graphs of 10,000 to 100,000 vectors keep about 0.997
/// (measured with `ruvector-bench graph`).
pub const SCALE_EF_ABOVE: usize = 5_000;

/// `ruvector.rate_burst_seconds`: a tenant's bucket holds this many seconds of `max_qps`.
static RATE_BURST: GucSetting<f64> = GucSetting::<f64>::new(1.0);
/// The search settings: `ruvector.ef_search`, `ruvector.iterative_scan` and
/// `ruvector.max_scan_tuples`, and in a database with ruvector and without pgvector also
/// pgvector's names for them (`hnsw.ef_search`, ...), defined on the same variables (see
/// [`define_pgvector_names`]). Defined directly so that two names can share one variable.
static mut EF_SEARCH: c_int = 40;
static mut ITERATIVE_SCAN: c_int = ITERATIVE_RELAXED;
static mut MAX_SCAN_TUPLES: c_int = 20_000;
/// pgvector's settings without a ruvector meaning: accepted and shown as pgvector does.
static mut SCAN_MEM_MULTIPLIER: f64 = 1.0;
static mut IVFFLAT_PROBES: c_int = 1;
static mut IVFFLAT_ITERATIVE_SCAN: c_int = ITERATIVE_OFF;
static mut IVFFLAT_MAX_PROBES: c_int = 32_768;

/// `ruvector.iterative_scan`: pgvector's values and meanings (`hnsw.iterative_scan`), with
/// relaxed order as the default where pgvector's is off.
/// - off: the first round (`ruvector.ef_search` candidates) only;
/// - relaxed_order: further rounds while rows are filtered out; a later round can yield a
///   row slightly closer than the last one of the round before;
/// - strict_order: further rounds, and rows strictly in distance order (a row closer than
///   one already returned is skipped).
const ITERATIVE_OFF: c_int = 0;
const ITERATIVE_RELAXED: c_int = 1;
const ITERATIVE_STRICT: c_int = 2;

const fn entry(name: &'static CStr, val: c_int, hidden: bool) -> pg_sys::config_enum_entry {
    pg_sys::config_enum_entry {
        name: name.as_ptr(),
        val,
        hidden,
    }
}

const ENUM_END: pg_sys::config_enum_entry = pg_sys::config_enum_entry {
    name: std::ptr::null(),
    val: 0,
    hidden: false,
};

/// The tables PostgreSQL reads the enum values from (static, NUL-terminated strings).
struct EnumTable<const N: usize>([pg_sys::config_enum_entry; N]);
// SAFETY: immutable tables of pointers to static strings.
unsafe impl<const N: usize> Sync for EnumTable<N> {}

/// `on`, the boolean setting of version 0.1.0, still means relaxed_order (hidden).
static ITERATIVE_SCAN_VALUES: EnumTable<5> = EnumTable([
    entry(c"off", ITERATIVE_OFF, false),
    entry(c"relaxed_order", ITERATIVE_RELAXED, false),
    entry(c"strict_order", ITERATIVE_STRICT, false),
    entry(c"on", ITERATIVE_RELAXED, true),
    ENUM_END,
]);
static HNSW_ITERATIVE_SCAN_VALUES: EnumTable<4> = EnumTable([
    entry(c"off", ITERATIVE_OFF, false),
    entry(c"relaxed_order", ITERATIVE_RELAXED, false),
    entry(c"strict_order", ITERATIVE_STRICT, false),
    ENUM_END,
]);
static IVFFLAT_ITERATIVE_SCAN_VALUES: EnumTable<3> = EnumTable([
    entry(c"off", ITERATIVE_OFF, false),
    entry(c"relaxed_order", ITERATIVE_RELAXED, false),
    ENUM_END,
]);

/// `ruvector.app_user`: the application's user, recorded in the audit log when set.
static APP_USER: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);

/// `ruvector.metrics_address`: host:port of the Prometheus endpoint; empty = no endpoint.
static METRICS_ADDRESS: GucSetting<Option<std::ffi::CString>> =
    GucSetting::<Option<std::ffi::CString>>::new(None);
/// `ruvector.metrics_max_tenants`: tenant series per database in a scrape (the most active);
/// the others are folded into `tenant="_other"`.
static METRICS_MAX_TENANTS: GucSetting<i32> = GucSetting::<i32>::new(100);
/// `ruvector.metrics_window`: seconds of the window that recent rates and latency quantiles
/// are computed over.
static METRICS_WINDOW: GucSetting<i32> = GucSetting::<i32>::new(60);

pub fn init() {
    // SAFETY: called once from _PG_init in the postmaster (or a backend for non-preloaded
    // loads, which _PG_init refuses before getting here); the storage is a static that lives
    // as long as the process, and the hook is guarded.
    unsafe {
        pg_sys::DefineCustomStringVariable(
            c"ruvector.tenant_id".as_ptr(),
            c"The tenant of this session: every statement on a tenant table is confined to it.".as_ptr(),
            c"1 to 63 characters of letters, digits, '-', '_' and '.'; '*' (ruvector_admin only) means all tenants. Empty means no tenant context: statements on tenant tables are refused.".as_ptr(),
            &raw mut TENANT_ID,
            c"".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            0,
            Some(check_tenant_id),
            None,
            None,
        );
    }
    GucRegistry::define_bool_guc(
        c"ruvector.audit_enabled",
        c"Record tenant operations and refused attempts in ruvector.tenant_audit_log.",
        c"Only superusers and members of ruvector_admin can change it.",
        &AUDIT_ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.max_tenants",
        c"Capacity of the shared tenant registry (server start only).",
        c"About 714 bytes of shared memory per tenant (registry, metrics, integrity).",
        &MAX_TENANTS,
        MAX_TENANTS_MIN,
        MAX_TENANTS_MAX,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.tenant_purge_delay",
        c"Seconds between a soft tenant delete and the purge of its rows.",
        c"",
        &PURGE_DELAY,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_bool_guc(
        c"ruvector.scale_ef_search",
        c"Search large ruhnsw graphs with a candidate list growing with their size.",
        c"A tenant's graph of more than 5,000 vectors is searched with ef_search times the square root of its size over 5,000, at most four times ef_search; off: ef_search for every graph, as pgvector.",
        &SCALE_EF_SEARCH,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"ruvector.admission_control",
        c"Rate-limit and fairly schedule statements on tenant tables.",
        c"Off: every statement runs at once, without token buckets or execution slots.",
        &ADMISSION_CONTROL,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.max_active_statements",
        c"Statements on tenant tables executing at once, server-wide (0: four times the CPUs).",
        c"When all are taken, statements wait and are admitted in weighted fair order.",
        &MAX_ACTIVE,
        0,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.admission_timeout",
        c"Longest wait for admission of a tenant statement; then it fails with 53000.",
        c"",
        &ADMISSION_TIMEOUT,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_float_guc(
        c"ruvector.rate_burst_seconds",
        c"Burst of a tenant's rate limit, in seconds of its max_qps.",
        c"",
        &RATE_BURST,
        0.001,
        3600.0,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: as for ruvector.tenant_id above: static storage and static strings.
    unsafe {
        define_int(
            c"ruvector.ef_search",
            c"Candidate list size of a ruhnsw index search (higher: better recall, slower).",
            c"The first round of every ruhnsw scan considers this many candidates.",
            &raw mut EF_SEARCH,
            (1, 1000),
        );
        define_enum(
            c"ruvector.iterative_scan",
            c"Let a ruhnsw scan continue past ef_search when rows are filtered out: off, relaxed_order or strict_order.",
            c"relaxed_order and strict_order: ORDER BY ... LIMIT k with further conditions returns k rows whenever k qualify, up to ruvector.max_scan_tuples candidates; strict_order skips rows closer than one already returned.",
            &raw mut ITERATIVE_SCAN,
            &ITERATIVE_SCAN_VALUES,
        );
        define_int(
            c"ruvector.max_scan_tuples",
            c"Most candidates an iterative ruhnsw scan considers before it stops.",
            c"Bounds the work of a filtered vector search; each round doubles its candidate list up to this size.",
            &raw mut MAX_SCAN_TUPLES,
            (1, i32::MAX),
        );
    }
    GucRegistry::define_string_guc(
        c"ruvector.app_user",
        c"The application's user on whose behalf the session runs, for the audit log.",
        c"Set it per request (SET LOCAL) next to ruvector.tenant_id; the audit log records it as user_id instead of the database role. It grants nothing.",
        &APP_USER,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"ruvector.metrics_address",
        c"host:port of the Prometheus metrics endpoint (server start only); empty: no endpoint.",
        c"For example 127.0.0.1:9187. The endpoint serves GET /metrics without authentication: bind it to loopback or a monitoring network.",
        &METRICS_ADDRESS,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.metrics_max_tenants",
        c"Tenant series per database in a metrics scrape; the rest are folded into tenant=\"_other\".",
        c"The most active tenants (statements in the last minute) get series of their own.",
        &METRICS_MAX_TENANTS,
        0,
        100_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.metrics_window",
        c"Length of the window over which per-tenant rates and latency quantiles are computed.",
        c"qps, statements per second and the p50/p99 search latency in ruvector.tenant_stats and the metrics endpoint cover the last closed window.",
        &METRICS_WINDOW,
        1,
        3600,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    // SAFETY: PostgreSQL 15+; reserves the prefix so typos such as ruvector.tenantid fail.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"ruvector".as_ptr()) };
}

/// `ruvector.app_user`, `None` when empty.
pub fn app_user() -> Option<String> {
    APP_USER
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.is_empty())
}

/// `ruvector.metrics_address`, `None` when empty.
pub fn metrics_address() -> Option<String> {
    METRICS_ADDRESS
        .get()
        .and_then(|s| s.into_string().ok())
        .filter(|s| !s.trim().is_empty())
}

pub fn metrics_max_tenants() -> usize {
    METRICS_MAX_TENANTS.get().max(0) as usize
}

/// `ruvector.metrics_window` in milliseconds.
pub fn metrics_window_ms() -> i64 {
    i64::from(METRICS_WINDOW.get().max(1)) * 1000
}

/// The tenant context in force: the `ruvector.tenant_id` setting, `None` when unset or
/// empty; or `'*'` without a setting for a role that bypasses row-level security and has
/// turned `row_security` off. That is how `pg_dump` and `pg_restore` run: they ask for every
/// row or an error, and the role sees every row anyway; it needs no other setting to dump or
/// restore tenant tables (and remains subject to the administrators-only rule of `'*'`).
#[inline]
pub fn tenant_id() -> Option<&'static str> {
    setting().or_else(|| {
        // SAFETY: plain reads of backend state (callers are in a transaction).
        let unfiltered = unsafe {
            !pg_sys::row_security
                && (pg_sys::superuser() || pg_sys::has_bypassrls_privilege(pg_sys::GetUserId()))
        };
        unfiltered.then_some("*")
    })
}

/// The raw `ruvector.tenant_id` setting, `None` when unset or empty.
fn setting() -> Option<&'static str> {
    // SAFETY: PostgreSQL keeps the GUC's string alive until the next assignment, which cannot
    // happen while a statement is using the value; it is NUL-terminated and validated ASCII.
    unsafe {
        let p = TENANT_ID;
        if p.is_null() {
            return None;
        }
        let s = CStr::from_ptr(p).to_str().ok()?;
        (!s.is_empty()).then_some(s)
    }
}

pub fn audit_enabled() -> bool {
    AUDIT_ENABLED.get()
}

/// The graph size above which a search widens its candidate list; 0 when
/// `ruvector.scale_ef_search` is off.
pub fn widen_above() -> usize {
    if SCALE_EF_SEARCH.get() {
        SCALE_EF_ABOVE
    } else {
        0
    }
}

pub fn admission_control() -> bool {
    ADMISSION_CONTROL.get()
}

pub fn max_active_statements() -> i32 {
    MAX_ACTIVE.get()
}

pub fn admission_timeout_ms() -> i32 {
    ADMISSION_TIMEOUT.get()
}

pub fn rate_burst_seconds() -> f64 {
    RATE_BURST.get()
}

/// An integer setting on static storage, changeable by any user at any time.
///
/// # Safety
/// `var` is static storage that only PostgreSQL's GUC machinery writes.
unsafe fn define_int(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    var: *mut c_int,
    (min, max): (c_int, c_int),
) {
    // SAFETY: guaranteed by the caller; the strings are static.
    unsafe {
        pg_sys::DefineCustomIntVariable(
            name.as_ptr(),
            short.as_ptr(),
            long.as_ptr(),
            var,
            *var,
            min,
            max,
            pg_sys::GucContext::PGC_USERSET,
            0,
            None,
            None,
            None,
        )
    };
}

/// An enum setting on static storage, changeable by any user at any time; `values` ends with
/// [`ENUM_END`].
///
/// # Safety
/// As [`define_int`].
unsafe fn define_enum<const N: usize>(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    var: *mut c_int,
    values: &'static EnumTable<N>,
) {
    // SAFETY: guaranteed by the caller; the strings and the table are static.
    unsafe {
        pg_sys::DefineCustomEnumVariable(
            name.as_ptr(),
            short.as_ptr(),
            long.as_ptr(),
            var,
            *var,
            values.0.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            0,
            None,
            None,
            None,
        )
    };
}

/// Defines pgvector's settings in this backend, for a database with ruvector and without
/// pgvector: `hnsw.ef_search`, `hnsw.iterative_scan` and `hnsw.max_scan_tuples` on the
/// variables of their `ruvector.*` counterparts (two names for one setting: the last `SET`
/// of either wins), and `hnsw.scan_mem_multiplier`, `ivfflat.probes`,
/// `ivfflat.iterative_scan` and `ivfflat.max_probes` with pgvector's values and no effect.
/// Both prefixes are then reserved, as pgvector reserves them. Never in the postmaster:
/// pgvector's library, loaded in a database that has pgvector, defines these names itself.
pub fn define_pgvector_names() {
    // SAFETY: static storage and static strings, in a backend (not the postmaster). A value
    // given before (a placeholder from SET, ALTER ROLE ... SET or the configuration file) is
    // adopted by the new setting; otherwise the shared variables keep the value their
    // ruvector.* setting has, which defining the second name would reset to the default.
    unsafe {
        // The shared variables, with the value to put back after the definition (the one
        // the ruvector.* setting has) unless a placeholder gave the new name a value.
        let shared = [
            (c"hnsw.ef_search", &raw mut EF_SEARCH),
            (c"hnsw.iterative_scan", &raw mut ITERATIVE_SCAN),
            (c"hnsw.max_scan_tuples", &raw mut MAX_SCAN_TUPLES),
        ];
        let restore = shared.map(|(name, var)| {
            let placeholder = pg_sys::GetConfigOptionFlags(name.as_ptr(), true)
                & pg_sys::GUC_CUSTOM_PLACEHOLDER as c_int
                != 0;
            (!placeholder).then(|| (var, *var))
        });
        define_int(
            c"hnsw.ef_search",
            c"pgvector's name for ruvector.ef_search.",
            c"",
            &raw mut EF_SEARCH,
            (1, 1000),
        );
        define_enum(
            c"hnsw.iterative_scan",
            c"pgvector's name for ruvector.iterative_scan.",
            c"",
            &raw mut ITERATIVE_SCAN,
            &HNSW_ITERATIVE_SCAN_VALUES,
        );
        define_int(
            c"hnsw.max_scan_tuples",
            c"pgvector's name for ruvector.max_scan_tuples.",
            c"",
            &raw mut MAX_SCAN_TUPLES,
            (1, i32::MAX),
        );
        for (var, value) in restore.into_iter().flatten() {
            *var = value;
        }
        pg_sys::DefineCustomRealVariable(
            c"hnsw.scan_mem_multiplier".as_ptr(),
            c"pgvector's iterative-scan memory, as a multiple of work_mem: no effect on ruhnsw."
                .as_ptr(),
            c"A ruhnsw iterative scan's memory is bounded by ruvector.max_scan_tuples.".as_ptr(),
            &raw mut SCAN_MEM_MULTIPLIER,
            1.0,
            1.0,
            1000.0,
            pg_sys::GucContext::PGC_USERSET,
            0,
            None,
            None,
            None,
        );
        define_int(
            c"ivfflat.probes",
            c"pgvector's IVFFlat probes: no effect (an ivfflat index is a ruhnsw index here).",
            c"ruvector.ef_search sets the search width.",
            &raw mut IVFFLAT_PROBES,
            (1, 32_768),
        );
        define_enum(
            c"ivfflat.iterative_scan",
            c"pgvector's IVFFlat iterative scans: no effect (an ivfflat index is a ruhnsw index here).",
            c"ruvector.iterative_scan applies.",
            &raw mut IVFFLAT_ITERATIVE_SCAN,
            &IVFFLAT_ITERATIVE_SCAN_VALUES,
        );
        define_int(
            c"ivfflat.max_probes",
            c"pgvector's IVFFlat iterative-scan probes: no effect (an ivfflat index is a ruhnsw index here).",
            c"",
            &raw mut IVFFLAT_MAX_PROBES,
            (1, 32_768),
        );
        pg_sys::MarkGUCPrefixReserved(c"hnsw".as_ptr());
        pg_sys::MarkGUCPrefixReserved(c"ivfflat".as_ptr());
    }
}

pub fn ef_search() -> usize {
    // SAFETY: a plain read of a setting's variable in the backend's only thread.
    unsafe { EF_SEARCH as usize }
}

fn iterative_scan() -> c_int {
    // SAFETY: as above.
    unsafe { ITERATIVE_SCAN }
}

/// Candidates an index scan may consider in all: `ef_search` alone when iterative scans are
/// off.
pub fn max_scan_tuples() -> usize {
    if iterative_scan() != ITERATIVE_OFF {
        // SAFETY: as above.
        (unsafe { MAX_SCAN_TUPLES } as usize).max(ef_search())
    } else {
        ef_search()
    }
}

/// Whether index scans return rows strictly in distance order (`strict_order`).
pub fn strict_order() -> bool {
    iterative_scan() == ITERATIVE_STRICT
}

pub fn max_tenants() -> u32 {
    MAX_TENANTS.get() as u32
}

/// GUC check hook of `ruvector.tenant_id`: the format always; the registered validator (the
/// wildcard, role bindings, the tenant's state) when a transaction is open (catalog lookups
/// need one). The context layer checks again when a statement uses the value.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_tenant_id(
    newval: *mut *mut c_char,
    _extra: *mut *mut c_void,
    source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to the proposed value (possibly NULL).
    let value = unsafe {
        let p = *newval;
        if p.is_null() {
            return true;
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    let refuse = |code: pgrx::PgSqlErrorCode, msg: String, detail: &str, hint: &str| {
        // SAFETY: the GUC_check_* globals are how a check hook reports why it refused; the
        // strings are copied by PostgreSQL's format helpers (pstrdup into the error context).
        unsafe {
            pg_sys::GUC_check_errcode(code as c_int);
            pg_sys::GUC_check_errmsg_string =
                pg_sys::pstrdup(std::ffi::CString::new(msg).unwrap().as_ptr());
            pg_sys::GUC_check_errhint_string =
                pg_sys::pstrdup(std::ffi::CString::new(hint).unwrap().as_ptr());
            if !detail.is_empty() {
                pg_sys::GUC_check_errdetail_string =
                    pg_sys::pstrdup(std::ffi::CString::new(detail).unwrap().as_ptr());
            }
        }
        false
    };
    match parse_context(Some(&value)) {
        Err(e) => refuse(
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid tenant id \"{value}\": {e}"),
            "",
            "A tenant id is 1 to 63 characters of letters, digits, '-', '_' and '.'.",
        ),
        Ok(ctx) => {
            // Only an interactive SET (or a function's SET clause) in a running transaction is
            // checked against the catalog here; defaults from ALTER ROLE/DATABASE and
            // connection options are checked when a statement uses them.
            // SAFETY: plain queries of backend state.
            let checkable = source == pg_sys::GucSource::PGC_S_SESSION
                && unsafe { pg_sys::ParallelWorkerNumber } < 0
                && !unsafe { pg_sys::InitializingParallelWorker }
                && unsafe { pg_sys::IsTransactionState() };
            // No context is always a valid value (RESET and SET to '' clear it).
            // SAFETY: set once in _PG_init, read-only afterwards; read by copy.
            let validator = unsafe { VALIDATOR };
            match validator {
                Some(validate) if checkable && ctx != TenantContext::None => match validate(ctx) {
                    Ok(()) => true,
                    Err(refusal) => refuse(
                        refusal.code,
                        refusal.message,
                        &refusal.detail,
                        &refusal.hint,
                    ),
                },
                _ => true,
            }
        }
    }
}

/// Checks a tenant context that SET proposes (the tenancy layer's rules, registered at
/// start so that settings import nothing above them).
pub type TenantValidator = fn(TenantContext<'_>) -> Result<(), crate::errors::Refusal>;

static mut VALIDATOR: Option<TenantValidator> = None;

/// Registers the check of proposed tenant contexts; from `_PG_init`.
pub fn set_tenant_validator(validate: TenantValidator) {
    // SAFETY: called once in _PG_init, single-threaded, before any SET.
    unsafe { VALIDATOR = Some(validate) };
}

/// The tenant context of this session.
pub fn tenant_context() -> TenantContext<'static> {
    // The check hook refused malformed values; treat anything else as no context.
    parse_context(tenant_id()).unwrap_or(TenantContext::None)
}
