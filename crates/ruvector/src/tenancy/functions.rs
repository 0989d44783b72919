//! SQL-callable internals of the tenancy layer (declared in `sql/tenancy.sql`), and the
//! transaction callbacks that apply registry changes only when their transaction commits.

use std::cell::RefCell;
use std::ffi::c_void;

use pgrx::pg_sys;
use ruvector_tenancy::registry::{Limits, TenantState};
use ruvector_tenancy::statement::Resolved;
use ruvector_tenancy::tenant_id::{self, TenantContext};

use super::{catalog, context, quota, shmem};
use crate::fmgr::{self, arg_text};

/// A registry change waiting for its transaction to commit.
struct PendingSync {
    id: String,
    state: TenantState,
    limits: Limits,
    /// Created (again): start from zero usage.
    reset: bool,
    /// Its index nodes go on pages of its own (not the shared level).
    own_pages: bool,
}

thread_local! {
    static PENDING: RefCell<Vec<PendingSync>> = const { RefCell::new(Vec::new()) };
    static TABLES_CHANGED: RefCell<bool> = const { RefCell::new(false) };
    static WAKE: RefCell<bool> = const { RefCell::new(false) };
}

pg_fn! {
    /// `ruvector._wake_maintenance()`: the background worker runs when this transaction
    /// commits (it starts the migrations asked for). The launcher serves the databases whose
    /// tenants are loaded: right after a server start, a migration asked for before any
    /// tenant statement ran stayed pending until one did.
    fn wake_maintenance(_fcinfo) {
        super::catalog::ensure_loaded();
        WAKE.with(|w| *w.borrow_mut() = true);
        pg_sys::Datum::from(0)
    }
}

pg_fn! {
    /// `ruvector._registry_sync(id, state, max_vectors, max_storage_gb, max_qps,
    /// max_concurrent, weight, created, own_pages)`
    fn registry_sync(fcinfo) {
        if !crate::backend::is_admin() {
            crate::errors::not_admin("change the tenant registry");
        }
        // SAFETY: the SQL declaration: text, text, int8, float4, int4, int4, float4, bool,
        // bool, all non-null.
        let (id, state, max_vectors, max_storage_gb, max_qps, max_concurrent, weight, created, own_pages) = unsafe {
            (
                arg_text(fcinfo, 0),
                arg_text(fcinfo, 1),
                fmgr::arg(fcinfo, 2).value() as i64,
                f32::from_bits(fmgr::arg(fcinfo, 3).value() as u32),
                fmgr::arg_i32(fcinfo, 4),
                fmgr::arg_i32(fcinfo, 5),
                f32::from_bits(fmgr::arg(fcinfo, 6).value() as u32),
                fmgr::arg(fcinfo, 7).value() != 0,
                fmgr::arg(fcinfo, 8).value() != 0,
            )
        };
        let state = catalog::state_from_name(&state);
        let limits = catalog::limits(max_vectors, max_storage_gb, max_qps, max_concurrent, weight);
        if created {
            // The slot is taken at commit, where no error may be raised: check for room now.
            let db = crate::backend::db();
            let pending = PENDING.with(|p| p.borrow().iter().filter(|s| s.reset).count() as u32);
            let (fits, capacity) = shmem::locked(false, |r| {
                (r.lookup(db, &id).is_some() || r.used() + pending < r.capacity(), r.capacity())
            });
            if !fits {
                crate::errors::registry_full(capacity);
            }
        }
        // Standbys hear of the change through the commit record.
        catalog::invalidate(c"tenants");
        // A tenant row inserted now starts from zero usage; updates keep the counters.
        PENDING.with(|p| p.borrow_mut().push(PendingSync { id, state, limits, reset: created, own_pages }));
        pg_sys::Datum::from(0)
    }
}

pg_fn! {
    /// `ruvector._tables_changed()`: every backend reloads its tenant-table cache after commit.
    fn tables_changed(_fcinfo) {
        TABLES_CHANGED.with(|t| *t.borrow_mut() = true);
        // Standbys hear of the change through the commit record.
        catalog::invalidate(c"tenant_tables");
        catalog::invalidate(c"tenant_role_bindings");
        pg_sys::Datum::from(0)
    }
}

pg_fn! {
    /// `ruvector._require_admin(what)`: 42501 unless superuser or ruvector_admin.
    fn require_admin(fcinfo) {
        if !crate::backend::is_admin() {
            // SAFETY: argument 0 is non-null text.
            let what = unsafe { arg_text(fcinfo, 0) };
            crate::errors::not_admin(&what);
        }
        pg_sys::Datum::from(0)
    }
}

pg_fn! {
    /// `ruvector._require_tenant()`: the tenant of the running statement if it is one
    /// usable tenant (not '*', not none), else a refusal.
    fn require_tenant(_fcinfo) {
        match context::current() {
            Resolved::Tenant { key, .. } => fmgr::text_datum(key.as_str()),
            Resolved::None => context::refused(
                TenantContext::None,
                super::statement::Operation::Other,
                crate::errors::no_context(),
            ),
            Resolved::All => crate::errors::refuse(crate::errors::refusal(
                pgrx::PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
                "no_single_tenant",
                "this function needs one tenant's context".into(),
                "It acts for the tenant in ruvector.tenant_id, which is \"*\" here.".into(),
                "SET ruvector.tenant_id to the tenant first.",
            )),
        }
    }
}

pg_fn! {
    /// `ruvector._check_tenant_id(id)`: 22023 for a malformed id.
    fn check_tenant_id(fcinfo) {
        // SAFETY: argument 0 is non-null text.
        let id = unsafe { arg_text(fcinfo, 0) };
        if let Err(e) = tenant_id::validate(&id) {
            crate::errors::invalid_tenant_id(&id, &e.to_string());
        }
        pg_sys::Datum::from(0)
    }
}

pg_fn! {
    /// `ruvector.current_tenant()`: the tenant of the running statement (validated; see
    /// `context::current`), '*', or NULL without a context. Row-level security policies of
    /// tenant tables compare with it.
    fn current_tenant(fcinfo) {
        // Called once per row a policy filters: no allocation but the result.
        match context::current().name() {
            Some(id) => fmgr::text_from_bytes(id.as_bytes()),
            // SAFETY: fcinfo is valid.
            None => unsafe { pgrx::fcinfo::pg_return_null(fcinfo) },
        }
    }
}

/// Microseconds between the Unix and the PostgreSQL epochs (1970-01-01 and 2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// A `timestamptz` datum value of Unix milliseconds.
fn pg_timestamp(unix_ms: i64) -> i64 {
    unix_ms * 1000 - PG_EPOCH_OFFSET_US
}

pg_fn! {
    /// `ruvector._live_stats()`: one row per tenant of this database, from shared memory.
    fn live_stats(fcinfo) {
        let rows = live_rows();
        // SAFETY: materialize-mode SRF protocol: InitMaterializedSRF sets up the tuplestore
        // and descriptor from the declared OUT parameters; each row matches them (text, text,
        // eight int8, float8, int8, timestamptz, four int8, three float8, int8, timestamptz,
        // text, float4).
        unsafe {
            pg_sys::InitMaterializedSRF(fcinfo, 0);
            let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
            for r in rows {
                let int = |v: i64| pg_sys::Datum::from(v);
                let float = |v: Option<f64>| pg_sys::Datum::from(v.unwrap_or(0.0).to_bits());
                let w = r.window;
                let ms = |us: Option<u32>| us.map(|us| f64::from(us) / 1000.0);
                let (p50, p99) = (ms(w.and_then(|w| w.p50_us)), ms(w.and_then(|w| w.p99_us)));
                let mut values = [
                    fmgr::text_datum(&r.id),
                    fmgr::text_datum(r.state),
                    int(r.vectors),
                    int(r.reserved_vectors),
                    int(r.storage_bytes),
                    int(r.searches),
                    int(r.inserts),
                    int(r.updates),
                    int(r.deletes),
                    int(r.refused),
                    pg_sys::Datum::from(r.search_ms_total.to_bits()),
                    int(r.searches_last_hour),
                    int(r.last_access_ms.map_or(0, pg_timestamp)),
                    int(r.admitted),
                    int(r.rate_limited),
                    int(r.queued),
                    int(r.wait_ms_total),
                    float(p50),
                    float(p99),
                    float(w.map(|w| w.qps())),
                    int(w.map_or(0, |w| i64::from(w.statements))),
                    int(w.map_or(0, |w| pg_timestamp(w.start_ms))),
                    fmgr::text_datum(r.integrity.map_or("", |(s, _)| s.name())),
                    pg_sys::Datum::from(r.integrity.map_or(0.0f32, |(_, l)| l as f32).to_bits()),
                ];
                let mut nulls = [false; 24];
                nulls[22] = r.integrity.is_none();
                nulls[23] = r.integrity.is_none();
                nulls[12] = r.last_access_ms.is_none();
                nulls[17] = p50.is_none();
                nulls[18] = p99.is_none();
                nulls[19] = w.is_none();
                nulls[20] = w.is_none();
                nulls[21] = w.is_none();
                pg_sys::tuplestore_putvalues((*rsinfo).setResult, (*rsinfo).setDesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            }
        }
        pg_sys::Datum::from(0)
    }
}

/// The set of tenant tables changed: every backend reloads its cache after commit.
pub fn mark_tables_changed() {
    TABLES_CHANGED.with(|t| *t.borrow_mut() = true);
}

/// One tenant's live statistics, as `ruvector._live_stats()` returns them.
pub struct LiveStats {
    pub id: String,
    pub state: &'static str,
    pub vectors: i64,
    pub reserved_vectors: i64,
    pub storage_bytes: i64,
    pub searches: i64,
    pub inserts: i64,
    pub updates: i64,
    pub deletes: i64,
    pub refused: i64,
    pub search_ms_total: f64,
    pub searches_last_hour: i64,
    /// Unix milliseconds; `None` before the first statement.
    pub last_access_ms: Option<i64>,
    pub admitted: i64,
    pub rate_limited: i64,
    pub queued: i64,
    pub wait_ms_total: i64,
    /// The last closed window (`ruvector.metrics_window`); `None` until a first full window closed.
    pub window: Option<ruvector_tenancy::metrics::Window>,
    /// The integrity state in force and the last λ_cut; `None` before the first sample.
    pub integrity: Option<(ruvector_tenancy::integrity::State, f64)>,
}

/// Live statistics of the tenants of this database the caller may see: every tenant for
/// administrators, the running statement's tenant for everyone else (validated like any use
/// of a context: a suspended or deleted tenant is refused).
pub fn live_rows() -> Vec<LiveStats> {
    use std::sync::atomic::Ordering::Relaxed;
    catalog::ensure_loaded();
    let db = crate::backend::db();
    let now = crate::backend::now_ms();
    let only: Option<String> = if crate::backend::is_admin() {
        None
    } else {
        Some(context::current().name().unwrap_or_default().to_string())
    };
    shmem::locked(false, |r| {
        r.iter_db(db)
            .filter(|(_, s)| only.as_ref().is_none_or(|t| s.id() == *t))
            .map(|(n, s)| {
                let last = s.last_access_ms.load(Relaxed);
                LiveStats {
                    id: s.id(),
                    state: match s.state() {
                        TenantState::Active => "active",
                        TenantState::Suspended => "suspended",
                        _ => "deleted",
                    },
                    vectors: s.vectors.load(Relaxed),
                    reserved_vectors: s.vectors_reserved.load(Relaxed),
                    storage_bytes: s.storage_bytes.load(Relaxed),
                    searches: s.searches.load(Relaxed) as i64,
                    inserts: s.inserts.load(Relaxed) as i64,
                    updates: s.updates.load(Relaxed) as i64,
                    deletes: s.deletes.load(Relaxed) as i64,
                    refused: s.refused.load(Relaxed) as i64,
                    search_ms_total: s.search_micros.load(Relaxed) as f64 / 1000.0,
                    searches_last_hour: s.searches_last_hour(now) as i64,
                    last_access_ms: (last > 0).then_some(last),
                    admitted: s.admitted.load(Relaxed) as i64,
                    rate_limited: s.rate_limited.load(Relaxed) as i64,
                    queued: s.queued.load(Relaxed) as i64,
                    wait_ms_total: (s.wait_micros.load(Relaxed) / 1000) as i64,
                    window: super::metrics::window(n),
                    integrity: super::integrity::current(n),
                }
            })
            .collect()
    })
}

/// Applies pending registry changes after commit, drops them after abort.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn xact_callback(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_COMMIT => {
            let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
            if !pending.is_empty() {
                apply(pending);
            }
            if TABLES_CHANGED.with(|t| std::mem::take(&mut *t.borrow_mut())) {
                catalog::bump_generation();
            }
            if WAKE.with(|w| std::mem::take(&mut *w.borrow_mut())) {
                super::worker::wake_launcher();
            }
            quota::end_of_transaction(true);
            context::forget_running();
            super::statement::abort(None);
            super::scheduler::abort(None);
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            PENDING.with(|p| p.borrow_mut().clear());
            TABLES_CHANGED.with(|t| *t.borrow_mut() = false);
            WAKE.with(|w| *w.borrow_mut() = false);
            quota::end_of_transaction(false);
            context::forget_running();
            super::statement::abort(None);
            super::scheduler::abort(None);
        }
        _ => {}
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    // SAFETY: plain query of the nesting level of the subtransaction ending now.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => {
            quota::end_of_subtransaction(level, false);
            super::scheduler::abort(Some(level));
            super::statement::abort(Some(level));
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_COMMIT_SUB => quota::end_of_subtransaction(level, true),
        _ => {}
    }
}

fn apply(pending: Vec<PendingSync>) {
    let db = crate::backend::db();
    // After commit no error may be raised: a full registry is reported at the next use.
    shmem::locked(true, |r| {
        for p in pending {
            if let Ok((n, slot, fresh)) = r.upsert(db, &p.id, p.reset) {
                if fresh {
                    shmem::fresh_slot(n);
                }
                slot.set_limits(p.limits);
                slot.set_state(p.state);
                slot.set_own_pages(p.own_pages);
            }
        }
    });
}

pub fn register_callbacks() {
    // SAFETY: registration once, in _PG_init.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

pg_fn! {
    /// `ruvector._recount(tenant_id)`: the tenant's rows and bytes counted again and made its
    /// usage (`ruvector_tenant_recount` checks the caller first).
    fn recount(fcinfo) {
        // SAFETY: argument 0 is non-null text (STRICT).
        let id = unsafe { crate::fmgr::arg_text(fcinfo, 0) };
        let (rows, bytes) = super::catalog::recount(&id);
        // SAFETY: materialize-mode SRF with the two declared OUT bigints.
        unsafe {
            pg_sys::InitMaterializedSRF(fcinfo, 0);
            let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
            let mut values = [pg_sys::Datum::from(rows), pg_sys::Datum::from(bytes)];
            let mut nulls = [false; 2];
            pg_sys::tuplestore_putvalues((*rsinfo).setResult, (*rsinfo).setDesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        }
        pg_sys::Datum::from(0)
    }
}
