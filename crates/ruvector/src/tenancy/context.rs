//! The tenant context layer: every statement that touches a registered tenant table is
//! resolved when it starts ([`resolve`], from the ExecutorStart and ProcessUtility hooks):
//! it is refused unless the session has a valid tenant context that may be used now, and the
//! context becomes the statement's [`Resolved`] tenant. Row-level security, index scans and
//! the quota trigger read that value ([`current`]), checked against the setting each time,
//! and every run of the statement (each FETCH of a cursor) checks it again.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering::*;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_tenancy::decide;
use ruvector_tenancy::statement::{Resolved, TenantKey};
use ruvector_tenancy::tenant_id::TenantContext;

use super::statement::{self, Operation};
use super::{catalog, shmem};
use crate::errors::{refusal, Refusal};
use crate::fmgr::list_ptrs;
use crate::{backend, gucs};

thread_local! {
    /// The session user's oid and name (the name is looked up once per session user).
    static SESSION_ROLE: RefCell<(pg_sys::Oid, String)> = const { RefCell::new((pg_sys::InvalidOid, String::new())) };
}

fn session_role_name() -> String {
    // SAFETY: GetSessionUserId is valid in any connected backend.
    let oid = unsafe { pg_sys::GetSessionUserId() };
    SESSION_ROLE.with(|r| {
        let mut r = r.borrow_mut();
        if r.0 != oid {
            *r = (oid, backend::role_name(oid));
        }
        r.1.clone()
    })
}

/// Checks that `ctx` may be used by this session now: the wildcard only by admins, a bound
/// role only for its tenant, a tenant only if it exists and is active in this database.
/// Returns the tenant's registry slot (None for '*').
pub fn may_use(ctx: TenantContext<'_>) -> Result<Option<usize>, Refusal> {
    if let TenantContext::Tenant(_) = ctx {
        catalog::ensure_loaded();
    }
    decide::may_use(
        ctx,
        backend::is_admin,
        || {
            let role = catalog::has_bindings().then(session_role_name)?;
            catalog::binding(&role).map(|bound| (role, bound))
        },
        shmem::find,
    )
    .map_err(|d| denied(ctx, d))
}

fn denied(ctx: TenantContext<'_>, d: decide::Denial) -> Refusal {
    let id = match ctx {
        TenantContext::Tenant(id) => id,
        _ => "",
    };
    crate::errors::denied(d, id)
}

/// Resolves a context for a statement starting now (see [`may_use`]).
pub fn resolve(ctx: TenantContext<'_>) -> Result<Resolved, Refusal> {
    may_use(ctx).map(|slot| resolved(ctx, slot))
}

/// The resolution of a context that may be used, with the tenant's slot (`None` for '*').
fn resolved(ctx: TenantContext<'_>, slot: Option<usize>) -> Resolved {
    match (ctx, slot) {
        (TenantContext::Tenant(id), Some(slot)) => Resolved::Tenant {
            slot,
            key: TenantKey::new(id).expect("a validated tenant id fits a key"),
        },
        (TenantContext::None, _) => Resolved::None,
        _ => Resolved::All,
    }
}

/// The context of a resolution, for messages, counters and the audit log.
pub fn context_of(r: &Resolved) -> TenantContext<'_> {
    match r {
        Resolved::None => TenantContext::None,
        Resolved::All => TenantContext::All,
        Resolved::Tenant { key, .. } => TenantContext::Tenant(key.as_str()),
    }
}

/// A statement's tenant is still usable: the setting still names it and (for one tenant)
/// the tenant is still active. Checked at every run of a statement (a cursor may be fetched
/// long after it was opened, after a suspension, or after the setting changed).
pub fn still_valid(r: &Resolved) -> Result<(), Refusal> {
    let setting = gucs::tenant_id();
    if !r.matches(setting) {
        return Err(changed(r, setting));
    }
    if let Resolved::Tenant { slot, key } = r {
        let state = shmem::unlocked(|reg| reg.slot(*slot).state());
        decide::active(state).map_err(|d| crate::errors::denied(d, key.as_str()))?;
    }
    Ok(())
}

/// The setting no longer names the tenant the running statement was validated for.
fn changed(r: &Resolved, setting: Option<&str>) -> Refusal {
    refusal(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        "context_changed",
        "the tenant context changed during the statement".into(),
        format!(
            "The statement was validated for {}; ruvector.tenant_id is now {}.",
            describe(r.name()),
            describe(setting.filter(|s| !s.is_empty()))
        ),
        "Change ruvector.tenant_id between statements, not inside one (set_config() in a query, or a function's SET clause around a cursor).",
    )
}

fn describe(name: Option<&str>) -> String {
    name.map_or_else(|| "no tenant".into(), |n| format!("\"{n}\""))
}

/// The tenant of the running statement: the one its start validated, as long as the setting
/// still names it; resolved now (and kept for the rest of the statement) for a statement
/// that touches no tenant table. `Resolved::None` without a context. Raises a refusal.
pub fn current() -> Resolved {
    // A parallel worker runs part of a statement its leader validated, with the leader's
    // settings, which nobody can change during a parallel operation.
    // SAFETY: plain read of a backend global.
    if unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        return in_parallel_worker();
    }
    match statement::current() {
        Some(Some(r)) => {
            let setting = gucs::tenant_id();
            // The extension's own statements (erasure) act for a tenant with no context set.
            if !r.matches(setting) && !current_is_internal() {
                refused(context_of(&r), Operation::Other, changed(&r, setting));
            }
            r
        }
        frame => {
            let ctx = gucs::tenant_context();
            let r = match ctx {
                TenantContext::None => Resolved::None,
                _ => resolve(ctx).unwrap_or_else(|e| refused(ctx, Operation::Other, e)),
            };
            if frame.is_some() {
                statement::set_current(r);
            }
            r
        }
    }
}

fn in_parallel_worker() -> Resolved {
    // The leader checked '*' and any role binding; only the tenant's state can have changed.
    let ctx = gucs::tenant_context();
    if ctx == TenantContext::None {
        return Resolved::None;
    }
    decide::may_use(ctx, || true, || None, shmem::find)
        .map(|slot| resolved(ctx, slot))
        .unwrap_or_else(|d| crate::errors::refuse(denied(ctx, d)))
}

thread_local! {
    /// Started statements on tenant tables (and the extension's own, `internal`), by
    /// QueryDesc address.
    static RUNNING: RefCell<HashMap<usize, Running>> = RefCell::new(HashMap::new());
    /// An EXPLAIN ANALYZE is being processed (its statement is instrumented).
    static EXPLAIN_ANALYZE: RefCell<bool> = const { RefCell::new(false) };
}

struct Running {
    resolved: Resolved,
    /// Started by the extension itself: no admission, statistics or audit.
    internal: bool,
    /// This statement holds an execution slot of the scheduler.
    holds: bool,
    op: Operation,
    start_us: i64,
    relids: Vec<pg_sys::Oid>,
    /// `ruhnsw` searches started: the statement's admission covers the first, every further
    /// one takes a token of the tenant's rate limit.
    searches: u32,
}

/// Forgets statements that ended without ExecutorEnd (errors); at transaction end.
pub fn forget_running() {
    RUNNING.with(|r| r.borrow_mut().clear());
    EXPLAIN_ANALYZE.with(|e| *e.borrow_mut() = false);
}

/// Marks the processing of an EXPLAIN ANALYZE (from the utility hook).
pub fn set_explain_analyze(on: bool) {
    EXPLAIN_ANALYZE.with(|e| *e.borrow_mut() = on);
}

fn in_internal() -> bool {
    statement::internal_here().is_some()
}

/// Whether the innermost statement was started by the extension itself.
fn current_is_internal() -> bool {
    statement::current_statement()
        .is_some_and(|stmt| RUNNING.with(|r| r.borrow().get(&stmt).is_some_and(|run| run.internal)))
}

/// Resolves the tenant of a utility statement that touches `relids` (COPY, LOCK), like an
/// executor statement's; `None` when none of them is a tenant table.
pub fn resolve_utility(relids: &[pg_sys::Oid], op: Operation) -> Option<Resolved> {
    if in_internal() || !relids.iter().any(|r| catalog::is_tenant_table(*r)) {
        return None;
    }
    let ctx = gucs::tenant_context();
    Some(resolve(ctx).unwrap_or_else(|e| refused(ctx, op, e)))
}

/// Counts a statement in its tenant's statistics.
fn count_statement(r: &Resolved, op: Operation) {
    if let Some(n) = r.slot() {
        shmem::unlocked(|reg| {
            let s = reg.slot(n);
            let counter = match op {
                Operation::Search => &s.searches,
                Operation::Insert => &s.inserts,
                Operation::Update | Operation::Merge => &s.updates,
                Operation::Delete | Operation::Truncate => &s.deletes,
                Operation::Other => return,
            };
            counter.fetch_add(1, Relaxed);
            s.last_access_ms.store(backend::now_ms(), Relaxed);
        });
    }
}

/// A `ruhnsw` search starts (each rescan of a join's inner side is one): every search after
/// the first of a statement takes a token of the tenant's rate limit, so a statement cannot
/// run thousands of searches for the price of one.
pub fn count_index_search() {
    let Some(stmt) = statement::current_statement() else {
        return;
    };
    let extra = RUNNING.with(|r| {
        let mut r = r.borrow_mut();
        let run = r.get_mut(&stmt)?;
        if run.internal {
            return None;
        }
        run.searches = run.searches.saturating_add(1);
        (run.searches > 1).then_some((run.resolved, run.op))
    });
    if let Some((r @ Resolved::Tenant { slot, key }, op)) = extra {
        if let Err(e) = super::scheduler::take_token(slot, key.as_str()) {
            refused(context_of(&r), op, e);
        }
    }
}

/// Counts, audits and raises a refusal.
pub fn refused(ctx: TenantContext<'_>, op: Operation, r: Refusal) -> ! {
    if let Some((n, _)) = match ctx {
        TenantContext::Tenant(id) => shmem::find(id),
        _ => None,
    } {
        shmem::unlocked(|reg| reg.slot(n).refused.fetch_add(1, Relaxed));
    }
    super::audit::refused(ctx, op, &r);
    crate::errors::refuse(r)
}

// ---- executor hooks ----------------------------------------------------------------------

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static mut PREV_EXECUTOR_FINISH: pg_sys::ExecutorFinish_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;

/// What `SET ruvector.tenant_id` accepts: a context this session may use now (in a database
/// with ruvector).
fn validate_setting(ctx: TenantContext<'_>) -> Result<(), Refusal> {
    if !catalog::extension_present() {
        return Ok(());
    }
    may_use(ctx).map(|_| ())
}

pub fn install_hooks() {
    gucs::set_tenant_validator(validate_setting);
    // SAFETY: hook chaining in _PG_init, single-threaded, once.
    unsafe {
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run);
        PREV_EXECUTOR_FINISH = pg_sys::ExecutorFinish_hook;
        pg_sys::ExecutorFinish_hook = Some(executor_finish);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
        PREV_POST_PARSE_ANALYZE = pg_sys::post_parse_analyze_hook;
        pg_sys::post_parse_analyze_hook = Some(post_parse_analyze);
    }
}

static mut PREV_POST_PARSE_ANALYZE: pg_sys::post_parse_analyze_hook_type = None;

/// After the parse analysis of every statement: pgvector's setting names in a database with
/// ruvector (`vector::compat`).
unsafe extern "C-unwind" fn post_parse_analyze(
    pstate: *mut pg_sys::ParseState,
    query: *mut pg_sys::Query,
    jstate: *mut pg_sys::JumbleState,
) {
    guarded(|| crate::vector::compat::define_names(super::catalog::extension_present));
    // SAFETY: chaining to the previous hook with PostgreSQL's arguments.
    unsafe {
        if let Some(prev) = PREV_POST_PARSE_ANALYZE {
            prev(pstate, query, jstate);
        }
    }
}

/// The relation oids of a plan's range table.
///
/// # Safety
/// `stmt` is a valid PlannedStmt.
unsafe fn plan_relations(stmt: *mut pg_sys::PlannedStmt) -> Vec<pg_sys::Oid> {
    // SAFETY: guaranteed by the caller; rtable is a List of RangeTblEntry.
    unsafe {
        list_ptrs((*stmt).rtable)
            .into_iter()
            .filter_map(|p| {
                let rte = p as *mut pg_sys::RangeTblEntry;
                ((*rte).rtekind == pg_sys::RTEKind::RTE_RELATION).then(|| (*rte).relid)
            })
            .collect()
    }
}

/// PostgreSQL's own executor and utility entry points, called without pgrx's FFI guard:
/// an error inside them must propagate to PostgreSQL untouched (with its cursor position and
/// context), not be caught and re-raised by Rust. The hooks hold no values with destructors
/// across these calls, so a longjmp through their frames is sound; what they pushed is
/// dropped by (sub)transaction abort.
pub mod raw {
    use pgrx::pg_sys;

    unsafe extern "C-unwind" {
        pub fn standard_ExecutorStart(query: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int);
        #[cfg(not(feature = "pg18"))]
        pub fn standard_ExecutorRun(
            query: *mut pg_sys::QueryDesc,
            direction: pg_sys::ScanDirection::Type,
            count: u64,
            execute_once: bool,
        );
        #[cfg(feature = "pg18")]
        pub fn standard_ExecutorRun(
            query: *mut pg_sys::QueryDesc,
            direction: pg_sys::ScanDirection::Type,
            count: u64,
        );
        pub fn standard_ExecutorFinish(query: *mut pg_sys::QueryDesc);
        pub fn standard_ExecutorEnd(query: *mut pg_sys::QueryDesc);
    }
}

/// Runs Rust code of a hook under pgrx's guard: its panics and errors become PostgreSQL
/// errors raised from here.
pub fn guarded<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the guard is the documented way to run Rust code called from C.
    unsafe { pg_sys::submodules::panic::pgrx_extern_c_guard(f) }
}

unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int) {
    // SAFETY: PostgreSQL passes a valid QueryDesc.
    let resolved = guarded(|| unsafe { before_executor_start(query, eflags) });
    // Initial partition pruning may evaluate the tenant condition already.
    statement::push(query as usize, resolved);
    // SAFETY: chaining to the previous hook or the standard function with the same arguments.
    unsafe { PREV_EXECUTOR_START.unwrap_or(raw::standard_ExecutorStart)(query, eflags) }
    statement::pop(query as usize);
}

/// The relations a plan checks permissions on, each with the role it checks them as
/// (`InvalidOid`: the current user). A view's tables are checked as the view's owner, a
/// SECURITY DEFINER function's statements as its owner.
///
/// # Safety
/// `stmt` is a valid PlannedStmt.
unsafe fn checked_relations(stmt: *mut pg_sys::PlannedStmt) -> Vec<(pg_sys::Oid, pg_sys::Oid)> {
    // SAFETY: guaranteed by the caller; PostgreSQL 15 keeps the checking role in the range
    // table, later versions in a list of RTEPermissionInfo.
    unsafe {
        #[cfg(feature = "pg15")]
        {
            list_ptrs((*stmt).rtable)
                .into_iter()
                .filter_map(|p| {
                    let rte = p as *mut pg_sys::RangeTblEntry;
                    ((*rte).rtekind == pg_sys::RTEKind::RTE_RELATION)
                        .then(|| ((*rte).relid, (*rte).checkAsUser))
                })
                .collect()
        }
        #[cfg(not(feature = "pg15"))]
        {
            list_ptrs((*stmt).permInfos)
                .into_iter()
                .map(|p| {
                    let info = p as *mut pg_sys::RTEPermissionInfo;
                    ((*info).relid, (*info).checkAsUser)
                })
                .collect()
        }
    }
}

/// Under one tenant's context, a session whose own role is confined by row-level security
/// must not read a tenant table with the rights of a role that is not (a view owned by a
/// superuser, a superuser's SECURITY DEFINER function): every tenant's rows would pass.
///
/// # Safety
/// `stmt` is a valid PlannedStmt.
unsafe fn confined_by_rls(r: &Resolved, stmt: *mut pg_sys::PlannedStmt, op: Operation) {
    let Resolved::Tenant { .. } = r else {
        return;
    };
    // SAFETY: guaranteed by the caller; role and RLS lookups in a transaction.
    unsafe {
        let session = pg_sys::GetSessionUserId();
        let enabled = pg_sys::CheckEnableRlsResult::RLS_ENABLED as i32;
        for (relid, checker) in checked_relations(stmt) {
            let who = if checker == pg_sys::InvalidOid {
                pg_sys::GetUserId()
            } else {
                checker
            };
            // Run as the session's own role (the usual case), nothing is lent: no RLS lookups.
            if who == session
                || !catalog::is_tenant_table(relid)
                || pg_sys::check_enable_rls(relid, who, true) == enabled
                || pg_sys::check_enable_rls(relid, session, true) != enabled
            {
                continue;
            }
            refused(
                context_of(r),
                op,
                refusal(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    "rls_bypassed",
                    "row-level security would not confine this statement".into(),
                    format!(
                        "A tenant table is read with the rights of role \"{}\", which bypasses row-level security (a view it owns, or its SECURITY DEFINER function): every tenant's rows would pass.",
                        crate::backend::role_name(who)
                    ),
                    "Create the view WITH (security_invoker = true), or let a role without SUPERUSER or BYPASSRLS own it.",
                ),
            );
        }
    }
}

/// Under one tenant's context, a statement whose conditions name another tenant (`WHERE
/// tenant_id = 'globex'` under `acme`) is refused and audited as a cross-tenant attempt:
/// row-level security would quietly make it return or change nothing.
///
/// # Safety
/// `stmt` is a valid PlannedStmt.
unsafe fn names_no_other_tenant(r: &Resolved, stmt: *mut pg_sys::PlannedStmt, op: Operation) {
    let Resolved::Tenant { key, .. } = r else {
        return;
    };
    // SAFETY: guaranteed by the caller.
    let Some(other) = (unsafe { super::named::other_tenant(stmt, key.as_str()) }) else {
        return;
    };
    refused(
        context_of(r),
        op,
        refusal(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "cross_tenant",
            format!(
                "the statement names tenant \"{other}\", not the current tenant \"{}\"",
                key.as_str()
            ),
            "A condition compares a tenant table's tenant column with another tenant's id; row-level security would hide that tenant's rows.".into(),
            "Leave the tenant column out of the conditions (the tenant context confines every statement), or act under that tenant's context.",
        ),
    );
}

/// Resolves the tenant of a statement that touches tenant tables, counts it and takes a
/// token of its tenant's rate limit (nested statements included: a loop in a function
/// cannot run more statements than the tenant's `max_qps` allows).
///
/// # Safety
/// `query` is a valid QueryDesc.
unsafe fn before_executor_start(
    query: *mut pg_sys::QueryDesc,
    eflags: std::ffi::c_int,
) -> Option<Resolved> {
    if let Some(forced) = statement::internal_here() {
        if let Some(r) = forced {
            start_running(query, r, true, Operation::Other, Vec::new());
        }
        return forced;
    }
    // Parallel workers run what their leader already checked, with its settings, and where
    // admission control placed it.
    // SAFETY: plain read of a backend global.
    if unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        // SAFETY: a parallel worker is a member of its leader's lock group before it runs
        // any part of the plan; both PGPROCs live in shared memory.
        let leader = unsafe { (*pg_sys::MyProc).lockGroupLeader };
        if !leader.is_null() {
            super::scheduler::follow(leader);
        }
        return None;
    }
    // SAFETY: guaranteed by the caller.
    let (relids, operation, instrumented) = unsafe {
        (
            plan_relations((*query).plannedstmt),
            (*query).operation,
            (*query).instrument_options != 0,
        )
    };
    if !relids.iter().any(|r| catalog::is_tenant_table(*r)) {
        return None;
    }
    // Referential integrity's own queries (a foreign key's check or cascade, such as the
    // specification's `REFERENCES ruvector.tenants(id) ON DELETE CASCADE`): PostgreSQL runs
    // them for the constraint, with row-level security off, and no user writes them. They
    // may touch any tenant's rows, as under '*'.
    // SAFETY: a plain read of the security context.
    if unsafe { pg_sys::InNoForceRLSOperation() } {
        start_running(query, Resolved::All, true, Operation::Other, Vec::new());
        return Some(Resolved::All);
    }
    let op = match operation {
        pg_sys::CmdType::CMD_SELECT => Operation::Search,
        pg_sys::CmdType::CMD_INSERT => Operation::Insert,
        pg_sys::CmdType::CMD_UPDATE => Operation::Update,
        pg_sys::CmdType::CMD_DELETE => Operation::Delete,
        pg_sys::CmdType::CMD_MERGE => Operation::Merge,
        _ => Operation::Other,
    };
    let ctx = gucs::tenant_context();
    let r = resolve(ctx).unwrap_or_else(|e| refused(ctx, op, e));
    // EXPLAIN plans with every tenant's statistics but runs nothing.
    if eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0 {
        return Some(r);
    }
    // Its "Rows Removed by Filter" counts other tenants' rows: for administrators only.
    if instrumented && EXPLAIN_ANALYZE.with(|e| *e.borrow()) && !backend::is_admin() {
        refused(
            ctx,
            op,
            refusal(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "explain_analyze_denied",
                "permission denied to EXPLAIN ANALYZE a tenant table".into(),
                "Its row counts (\"Rows Removed by Filter\") include other tenants' rows.".into(),
                "Use EXPLAIN without ANALYZE, or ask an administrator (ruvector_admin).",
            ),
        );
    }
    // SAFETY: guaranteed by the caller.
    unsafe { confined_by_rls(&r, (*query).plannedstmt, op) };
    // SAFETY: guaranteed by the caller.
    unsafe { names_no_other_tenant(&r, (*query).plannedstmt, op) };
    count_statement(&r, op);
    if let Resolved::Tenant { slot, key } = r {
        if let Err(e) = super::scheduler::take_token(slot, key.as_str()) {
            refused(ctx, op, e);
        }
        // Rows the statement is planned to read or write (a ModifyTable node estimates
        // none without RETURNING: its input's estimate counts); read only when the tenant's
        // integrity state is not normal.
        let rows = || {
            // SAFETY: the planned statement of the query being started; plan nodes are read
            // only.
            unsafe {
                let mut plan = (*(*query).plannedstmt).planTree;
                if !plan.is_null()
                    && (*plan).type_ == pg_sys::NodeTag::T_ModifyTable
                    && !(*plan).lefttree.is_null()
                {
                    plan = (*plan).lefttree;
                }
                if plan.is_null() {
                    1
                } else {
                    (*plan).plan_rows.max(1.0) as u64
                }
            }
        };
        if let Err(e) = super::integrity::gate(slot, key.as_str(), op, rows) {
            refused(ctx, op, e);
        }
    }
    start_running(query, r, false, op, relids);
    Some(r)
}

fn start_running(
    query: *mut pg_sys::QueryDesc,
    resolved: Resolved,
    internal: bool,
    op: Operation,
    relids: Vec<pg_sys::Oid>,
) {
    let run = Running {
        resolved,
        internal,
        holds: false,
        op,
        start_us: backend::now_us(),
        relids,
        searches: 0,
    };
    RUNNING.with(|r| r.borrow_mut().insert(query as usize, run));
    // What an audit record of a refusal PostgreSQL raises during the statement needs, while
    // the catalogs can still be read.
    super::audit::prepare();
}

#[cfg(not(feature = "pg18"))]
unsafe extern "C-unwind" fn executor_run(
    query: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    let resolved = guarded(|| before_executor_run(query));
    statement::push(query as usize, resolved);
    // SAFETY: chaining to the previous hook or the standard function with the same arguments.
    unsafe {
        PREV_EXECUTOR_RUN.unwrap_or(raw::standard_ExecutorRun)(
            query,
            direction,
            count,
            execute_once,
        )
    }
    statement::pop(query as usize);
    guarded(|| after_executor_run(query, count != 0 || !execute_once));
}

#[cfg(feature = "pg18")]
unsafe extern "C-unwind" fn executor_run(
    query: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
) {
    let resolved = guarded(|| before_executor_run(query));
    statement::push(query as usize, resolved);
    // SAFETY: chaining to the previous hook or the standard function with the same arguments.
    unsafe { PREV_EXECUTOR_RUN.unwrap_or(raw::standard_ExecutorRun)(query, direction, count) }
    statement::pop(query as usize);
    guarded(|| after_executor_run(query, count != 0));
}

/// Every run of a statement (each FETCH of a cursor) checks its tenant again and takes an
/// execution slot for the time it runs.
fn before_executor_run(query: *mut pg_sys::QueryDesc) -> Option<Resolved> {
    let (r, internal, op) = RUNNING.with(|run| {
        run.borrow()
            .get(&(query as usize))
            .map(|s| (s.resolved, s.internal, s.op))
    })?;
    if internal {
        return Some(r);
    }
    if let Err(e) = still_valid(&r) {
        refused(context_of(&r), op, e);
    }
    if let Resolved::Tenant { slot, key } = r {
        if !super::scheduler::holding() {
            super::scheduler::register_exit_cleanup();
            match super::scheduler::acquire(slot, key.as_str()) {
                Ok(holds) => RUNNING.with(|run| {
                    if let Some(s) = run.borrow_mut().get_mut(&(query as usize)) {
                        s.holds = holds;
                    }
                }),
                Err(e) => refused(context_of(&r), op, e),
            }
        }
    }
    Some(r)
}

/// A run that stopped before the end (a cursor's FETCH, a portal with a row limit) gives its
/// execution slot back: the session may now sit idle with the portal open.
fn after_executor_run(query: *mut pg_sys::QueryDesc, partial: bool) {
    if !partial {
        return;
    }
    let held = RUNNING.with(|run| {
        let mut run = run.borrow_mut();
        let s = run.get_mut(&(query as usize))?;
        std::mem::take(&mut s.holds)
            .then_some(s.resolved.slot())
            .flatten()
    });
    if let Some(slot) = held {
        super::scheduler::release(slot);
    }
}

unsafe extern "C-unwind" fn executor_finish(query: *mut pg_sys::QueryDesc) {
    // AFTER triggers (the quota trigger among them) fire here, for the statement's tenant.
    let resolved = RUNNING.with(|run| run.borrow().get(&(query as usize)).map(|s| s.resolved));
    statement::push(query as usize, resolved);
    // SAFETY: chaining to the previous hook or the standard function.
    unsafe { PREV_EXECUTOR_FINISH.unwrap_or(raw::standard_ExecutorFinish)(query) }
    statement::pop(query as usize);
}

unsafe extern "C-unwind" fn executor_end(query: *mut pg_sys::QueryDesc) {
    guarded(|| before_executor_end(query));
    // SAFETY: chaining to the previous hook or the standard function.
    unsafe { PREV_EXECUTOR_END.unwrap_or(raw::standard_ExecutorEnd)(query) }
}

fn before_executor_end(query: *mut pg_sys::QueryDesc) {
    let Some(run) = RUNNING.with(|r| r.borrow_mut().remove(&(query as usize))) else {
        return;
    };
    if run.internal {
        return;
    }
    if let (Some(slot), true) = (run.resolved.slot(), run.holds) {
        super::scheduler::release(slot);
    }
    if let (Some(slot), Operation::Search) = (run.resolved.slot(), run.op) {
        let elapsed = (backend::now_us() - run.start_us).max(0) as u64;
        shmem::unlocked(|r| r.slot(slot).search_micros.fetch_add(elapsed, Relaxed));
        super::catalog::count_search_window(slot);
        super::metrics::observe_search(slot, elapsed);
    }
    // SAFETY: the estate is alive until the standard ExecutorEnd runs after us.
    let rows = unsafe {
        let estate = (*query).estate;
        if estate.is_null() {
            0
        } else {
            (*estate).es_processed
        }
    };
    super::audit::operation(context_of(&run.resolved), run.op, rows, &run.relids);
}
