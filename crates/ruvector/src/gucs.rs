//! Every GUC of the extension, defined once in [`init`], read through typed getters.

use std::ffi::{c_char, c_int, c_void, CStr};

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::pg_sys;
use ruvector_tenancy::tenant_id::{parse_context, TenantContext};

use crate::vector::compat;

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

/// `ruvector.rate_burst_seconds`: a tenant's bucket holds this many seconds of `max_qps`.
static RATE_BURST: GucSetting<f64> = GucSetting::<f64>::new(1.0);
static EF_SEARCH: GucSetting<i32> = GucSetting::<i32>::new(40);
/// `ruvector.iterative_scan`: pgvector's values and meanings (`hnsw.iterative_scan`), with
/// relaxed order as the default where pgvector's is off.
#[derive(pgrx::PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum IterativeScan {
    /// The first round (`ruvector.ef_search` candidates) only.
    #[name = c"off"]
    Off,
    /// Further rounds while rows are filtered out; a later round can yield a row slightly
    /// closer than the last one of the round before.
    #[name = c"relaxed_order"]
    RelaxedOrder,
    /// Further rounds, and rows strictly in distance order: a row closer than one already
    /// returned is skipped.
    #[name = c"strict_order"]
    StrictOrder,
    /// `on`, the boolean setting of version 0.1.0: relaxed order.
    #[name = c"on"]
    #[hidden = true]
    On,
}

static ITERATIVE_SCAN: GucSetting<IterativeScan> =
    GucSetting::<IterativeScan>::new(IterativeScan::RelaxedOrder);
static MAX_SCAN_TUPLES: GucSetting<i32> = GucSetting::<i32>::new(20_000);

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
    GucRegistry::define_int_guc(
        c"ruvector.ef_search",
        c"Candidate list size of a ruhnsw index search (higher: better recall, slower).",
        c"The first round of every ruhnsw scan considers this many candidates.",
        &EF_SEARCH,
        1,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_enum_guc(
        c"ruvector.iterative_scan",
        c"Let a ruhnsw scan continue past ef_search when rows are filtered out: off, relaxed_order or strict_order.",
        c"relaxed_order and strict_order: ORDER BY ... LIMIT k with further conditions returns k rows whenever k qualify, up to ruvector.max_scan_tuples candidates; strict_order skips rows closer than one already returned.",
        &ITERATIVE_SCAN,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.max_scan_tuples",
        c"Most candidates an iterative ruhnsw scan considers before it stops.",
        c"Bounds the work of a filtered vector search; each round doubles its candidate list up to this size.",
        &MAX_SCAN_TUPLES,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
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

/// `ruvector.ef_search`, or pgvector's `hnsw.ef_search` where an application set it on a
/// server without pgvector (see `vector::compat`; the same for the two below).
pub fn ef_search() -> usize {
    compat::int(c"hnsw.ef_search").unwrap_or_else(|| EF_SEARCH.get()) as usize
}

fn iterative_scan() -> IterativeScan {
    match compat::iterative_scan() {
        Some(0) => IterativeScan::Off,
        Some(1) => IterativeScan::RelaxedOrder,
        Some(_) => IterativeScan::StrictOrder,
        None => ITERATIVE_SCAN.get(),
    }
}

/// Candidates an index scan may consider in all: `ef_search` alone when iterative scans are
/// off.
pub fn max_scan_tuples() -> usize {
    if iterative_scan() != IterativeScan::Off {
        let max = compat::int(c"hnsw.max_scan_tuples").unwrap_or_else(|| MAX_SCAN_TUPLES.get());
        (max as usize).max(ef_search())
    } else {
        ef_search()
    }
}

/// Whether index scans return rows strictly in distance order (`strict_order`).
pub fn strict_order() -> bool {
    iterative_scan() == IterativeScan::StrictOrder
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
