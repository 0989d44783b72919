//! The tenant context layer: every statement that touches a registered tenant table passes
//! through [`check_relations`] first (from the ExecutorStart and ProcessUtility hooks), which
//! refuses it unless the session has a valid tenant context that may be used now.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::Ordering::*;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_tenancy::registry::TenantState;
use ruvector_tenancy::tenant_id::TenantContext;

use super::{catalog, shmem};
use crate::gucs;

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

/// Whether the current user may administer tenants: a superuser or a member of
/// ruvector_admin (with its privileges, not only nominally).
pub fn is_admin() -> bool {
    // SAFETY: catalog lookups in a transaction (callers check IsTransactionState).
    unsafe {
        let user = pg_sys::GetUserId();
        if pg_sys::superuser_arg(user) {
            return true;
        }
        let admin = pg_sys::get_role_oid(c"ruvector_admin".as_ptr(), true);
        admin != pg_sys::InvalidOid && pg_sys::has_privs_of_role(user, admin)
    }
}

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
            // SAFETY: GetUserNameFromId returns a palloc'd copy or NULL.
            let name = unsafe {
                let p = pg_sys::GetUserNameFromId(oid, true);
                if p.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            *r = (oid, name);
        }
        r.1.clone()
    })
}

/// Checks that `ctx` may be used by this session now: the wildcard only by admins, a bound
/// role only for its tenant, a tenant only if it exists and is active in this database.
/// Returns the tenant's registry slot (None for '*').
pub fn may_use(ctx: TenantContext<'_>) -> Result<Option<usize>, Refusal> {
    match ctx {
        TenantContext::None => Err(refusal(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            "no_context",
            "no tenant context".into(),
            "This statement uses a tenant table and ruvector.tenant_id is not set.".into(),
            "Run SET ruvector.tenant_id = '<tenant>' (or SET LOCAL in a transaction) first.",
        )),
        TenantContext::All => {
            if is_admin() {
                Ok(None)
            } else {
                Err(refusal(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    "wildcard_denied",
                    "permission denied to use the tenant context \"*\"".into(),
                    "Only superusers and members of ruvector_admin can act on all tenants.".into(),
                    "Set ruvector.tenant_id to your own tenant.",
                ))
            }
        }
        TenantContext::Tenant(id) => {
            catalog::ensure_loaded();
            if let Some((role, bound)) = catalog::has_bindings()
                .then(session_role_name)
                .and_then(|role| catalog::binding(&role).map(|b| (role, b)))
            {
                if bound != id {
                    return Err(refusal(
                        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                        "role_bound",
                        format!("role \"{role}\" is bound to another tenant"),
                        format!("Sessions of role \"{role}\" can only use tenant \"{bound}\"."),
                        "Connect as the role of the tenant you need, or ask an administrator.",
                    ));
                }
            }
            // SAFETY: plain read of a backend global.
            let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
            let found = shmem::locked(false, |r| r.lookup(db, id).map(|(n, s)| (n, s.state())));
            match found.map(|(_, st)| st) {
                Some(TenantState::Active) => Ok(found.map(|(n, _)| n)),
                Some(TenantState::Suspended) => Err(refusal(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "suspended",
                    format!("tenant \"{id}\" is suspended"),
                    "Every operation of a suspended tenant is refused, reads included.".into(),
                    "An administrator can resume it with ruvector_tenant_resume().",
                )),
                Some(TenantState::Deleted) => Err(refusal(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    "deleted",
                    format!("tenant \"{id}\" does not exist"),
                    "The tenant was deleted.".into(),
                    "Check ruvector.tenant_id.",
                )),
                _ => Err(refusal(
                    PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                    "unknown",
                    format!("tenant \"{id}\" does not exist"),
                    "No tenant with this id is registered in this database.".into(),
                    "Check ruvector.tenant_id, or create the tenant with ruvector_tenant_create().",
                )),
            }
        }
    }
}

/// What a statement does to a tenant table, for statistics and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Search,
    Insert,
    Update,
    Delete,
    Truncate,
    Other,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Search => "search",
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Truncate => "truncate",
            Operation::Other => "other",
        }
    }
}

thread_local! {
    /// Depth of internal SPI work (catalog loads): its statements are not checked.
    static INTERNAL: RefCell<u32> = const { RefCell::new(0) };
    /// Running statements on tenant tables, by QueryDesc address.
    static RUNNING: RefCell<HashMap<usize, Running>> = RefCell::new(HashMap::new());
}

struct Running {
    slot: Option<usize>,
    /// This statement holds an execution slot of the scheduler.
    holds: bool,
    op: Operation,
    start_us: i64,
    relids: Vec<pg_sys::Oid>,
}

/// Forgets statements that ended without ExecutorEnd (errors); at transaction end.
pub fn forget_running() {
    RUNNING.with(|r| r.borrow_mut().clear());
}

/// Runs `f` with the context layer switched off (for the extension's own catalog queries).
pub fn internal<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            INTERNAL.with(|d| *d.borrow_mut() -= 1);
        }
    }
    INTERNAL.with(|d| *d.borrow_mut() += 1);
    let _g = Guard;
    f()
}

fn in_internal() -> bool {
    INTERNAL.with(|d| *d.borrow() > 0)
}

/// Checks a statement that touches `relids`. Returns the tenant slot the statement acts for
/// (None for '*' or when no tenant table is touched). Raises the refusal as an error.
pub fn check_relations(relids: &[pg_sys::Oid], op: Operation) -> Option<Option<usize>> {
    // Parallel workers run what their leader already checked, with its GUC state.
    // SAFETY: plain read of a backend global.
    if in_internal() || relids.is_empty() || unsafe { pg_sys::ParallelWorkerNumber } >= 0 {
        return None;
    }
    if !relids.iter().any(|r| catalog::is_tenant_table(*r)) {
        return None;
    }
    let ctx = gucs::tenant_context();
    let slot = match may_use(ctx) {
        Ok(slot) => slot,
        Err(r) => refused(ctx, op, r),
    };
    if let Some(n) = slot {
        shmem::unlocked(|r| {
            let s = r.slot(n);
            let counter = match op {
                Operation::Search => &s.searches,
                Operation::Insert => &s.inserts,
                Operation::Update => &s.updates,
                Operation::Delete | Operation::Truncate => &s.deletes,
                Operation::Other => return,
            };
            counter.fetch_add(1, Relaxed);
            s.last_access_ms.store(now_ms(), Relaxed);
        });
    }
    Some(slot)
}

/// Counts, audits and raises a refusal.
pub fn refused(ctx: TenantContext<'_>, op: Operation, r: Refusal) -> ! {
    if let TenantContext::Tenant(id) = ctx {
        // SAFETY: plain read of a backend global.
        let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
        if let Some(n) = shmem::locked(false, |reg| reg.lookup(db, id).map(|(n, _)| n)) {
            shmem::unlocked(|reg| reg.slot(n).refused.fetch_add(1, Relaxed));
        }
    }
    super::audit::refused(ctx, op, &r);
    crate::errors::refuse(r)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

// ---- hooks -------------------------------------------------------------------------------

static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

pub fn install_hooks() {
    // SAFETY: hook chaining in _PG_init, single-threaded, once.
    unsafe {
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end);
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// The pointers of a PostgreSQL pointer List (NIL is empty).
///
/// # Safety
/// `list` is NULL or a valid pointer List.
unsafe fn list_ptrs(list: *mut pg_sys::List) -> Vec<*mut std::ffi::c_void> {
    if list.is_null() {
        return Vec::new();
    }
    // SAFETY: guaranteed by the caller: `length` cells at `elements`.
    unsafe {
        (0..(*list).length as usize)
            .map(|i| (*(*list).elements.add(i)).ptr_value)
            .collect()
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
/// across these calls, so a longjmp through their frames is sound.
mod raw {
    use pgrx::pg_sys;

    unsafe extern "C-unwind" {
        pub fn standard_ExecutorStart(query: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int);
        pub fn standard_ExecutorEnd(query: *mut pg_sys::QueryDesc);
        #[allow(clippy::too_many_arguments)]
        pub fn standard_ProcessUtility(
            pstmt: *mut pg_sys::PlannedStmt,
            query_string: *const std::ffi::c_char,
            read_only_tree: bool,
            context: pg_sys::ProcessUtilityContext::Type,
            params: pg_sys::ParamListInfo,
            query_env: *mut pg_sys::QueryEnvironment,
            dest: *mut pg_sys::DestReceiver,
            qc: *mut pg_sys::QueryCompletion,
        );
    }
}

/// Runs Rust code of a hook under pgrx's guard: its panics and errors become PostgreSQL
/// errors raised from here.
fn guarded<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the guard is the documented way to run Rust code called from C.
    unsafe { pg_sys::submodules::panic::pgrx_extern_c_guard(f) }
}

unsafe extern "C-unwind" fn executor_start(query: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int) {
    // SAFETY: PostgreSQL passes a valid QueryDesc.
    guarded(|| unsafe { before_executor_start(query, eflags) });
    // SAFETY: chaining to the previous hook or the standard function with the same arguments.
    unsafe {
        match PREV_EXECUTOR_START {
            Some(prev) => prev(query, eflags),
            None => raw::standard_ExecutorStart(query, eflags),
        }
    }
}

/// # Safety
/// `query` is a valid QueryDesc.
unsafe fn before_executor_start(query: *mut pg_sys::QueryDesc, eflags: std::ffi::c_int) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let stmt = (*query).plannedstmt;
        let op = match (*query).operation {
            pg_sys::CmdType::CMD_SELECT => Operation::Search,
            pg_sys::CmdType::CMD_INSERT => Operation::Insert,
            pg_sys::CmdType::CMD_UPDATE => Operation::Update,
            pg_sys::CmdType::CMD_DELETE => Operation::Delete,
            _ => Operation::Other,
        };
        let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
        let relids = plan_relations(stmt);
        let checked = if explain_only {
            None
        } else {
            check_relations(&relids, op)
        };
        if let Some(slot) = checked {
            let mut holds = false;
            if let (Some(n), TenantContext::Tenant(id)) = (slot, gucs::tenant_context()) {
                if !super::scheduler::holding() {
                    super::scheduler::register_exit_cleanup();
                    match super::scheduler::admit(n, id) {
                        Ok(h) => holds = h,
                        Err(r) => refused(gucs::tenant_context(), op, r),
                    }
                }
            }
            RUNNING.with(|r| {
                r.borrow_mut().insert(
                    query as usize,
                    Running {
                        slot,
                        holds,
                        op,
                        start_us: now_us(),
                        relids,
                    },
                )
            });
        }
    }
}

unsafe extern "C-unwind" fn executor_end(query: *mut pg_sys::QueryDesc) {
    guarded(|| before_executor_end(query));
    // SAFETY: chaining to the previous hook or the standard function.
    unsafe {
        match PREV_EXECUTOR_END {
            Some(prev) => prev(query),
            None => raw::standard_ExecutorEnd(query),
        }
    }
}

fn before_executor_end(query: *mut pg_sys::QueryDesc) {
    if let Some(run) = RUNNING.with(|r| r.borrow_mut().remove(&(query as usize))) {
        if let (Some(slot), true) = (run.slot, run.holds) {
            super::scheduler::release(slot);
        }
        if let (Some(slot), Operation::Search) = (run.slot, run.op) {
            let elapsed = (now_us() - run.start_us).max(0) as u64;
            shmem::unlocked(|r| r.slot(slot).search_micros.fetch_add(elapsed, Relaxed));
            super::catalog::count_search_window(slot);
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
        super::audit::operation(gucs::tenant_context(), run.op, rows, &run.relids);
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: PostgreSQL passes a valid utility statement.
    guarded(|| unsafe { before_process_utility(pstmt) });
    // SAFETY: as above; a statement that changes is a copy.
    let pstmt = guarded(|| unsafe { with_tenant_key(pstmt) });
    // SAFETY: chaining to the previous hook or the standard function with the same arguments.
    unsafe {
        match PREV_PROCESS_UTILITY {
            Some(prev) => prev(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => raw::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
}

/// `CREATE INDEX ... USING ruhnsw (vec opclass)` on a tenant table, as the specification
/// writes it, becomes `(vec opclass, tenant_column)`: the index is keyed by tenant, so each
/// tenant gets its own graph and a search reads only the current tenant's (and a HOT update
/// can never move a row to another tenant behind the index's back). Returns the statement to
/// run: `pstmt` itself, or a changed copy (the original may be cached and must not change).
///
/// # Safety
/// `pstmt` is a valid utility PlannedStmt.
unsafe fn with_tenant_key(pstmt: *mut pg_sys::PlannedStmt) -> *mut pg_sys::PlannedStmt {
    // SAFETY: guaranteed by the caller; the IndexStmt's fields are valid nodes, the relation
    // is resolved without a lock (DefineIndex locks it next), and the copy is a new tree in
    // the current memory context.
    unsafe {
        let node = (*pstmt).utilityStmt;
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_IndexStmt || in_internal() {
            return pstmt;
        }
        let stmt = node as *mut pg_sys::IndexStmt;
        if (*stmt).accessMethod.is_null()
            || std::ffi::CStr::from_ptr((*stmt).accessMethod).to_bytes() != b"ruhnsw"
            || list_ptrs((*stmt).indexParams).len() != 1
        {
            return pstmt;
        }
        let relid = pg_sys::RangeVarGetRelidExtended(
            (*stmt).relation,
            pg_sys::NoLock as _,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        );
        if relid == pg_sys::InvalidOid || !catalog::extension_present() {
            return pstmt;
        }
        let Some(column) = catalog::tenant_column(relid) else {
            return pstmt;
        };
        let copy =
            pg_sys::copyObjectImpl(pstmt as *const std::ffi::c_void) as *mut pg_sys::PlannedStmt;
        let stmt = (*copy).utilityStmt as *mut pg_sys::IndexStmt;
        let elem =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexElem>()) as *mut pg_sys::IndexElem;
        (*elem).type_ = pg_sys::NodeTag::T_IndexElem;
        let name = std::ffi::CString::new(column).expect("a column name has no NUL");
        (*elem).name = pg_sys::pstrdup(name.as_ptr());
        (*elem).ordering = pg_sys::SortByDir::SORTBY_DEFAULT;
        (*elem).nulls_ordering = pg_sys::SortByNulls::SORTBY_NULLS_DEFAULT;
        (*stmt).indexParams = pg_sys::lappend((*stmt).indexParams, elem as *mut std::ffi::c_void);
        copy
    }
}

/// TRUNCATE ignores row-level security, so on a tenant table it needs the '*' context.
///
/// # Safety
/// `pstmt` is a valid utility PlannedStmt.
unsafe fn before_process_utility(pstmt: *mut pg_sys::PlannedStmt) {
    // SAFETY: guaranteed by the caller; TRUNCATE's relation list holds RangeVars, resolved
    // here without locking (the real TRUNCATE locks them next).
    unsafe {
        let node = (*pstmt).utilityStmt;
        if !node.is_null() && (*node).type_ == pg_sys::NodeTag::T_TruncateStmt && !in_internal() {
            let stmt = node as *mut pg_sys::TruncateStmt;
            let relids: Vec<pg_sys::Oid> = list_ptrs((*stmt).relations)
                .into_iter()
                .map(|rv| {
                    pg_sys::RangeVarGetRelidExtended(
                        rv as *mut pg_sys::RangeVar,
                        pg_sys::NoLock as _,
                        pg_sys::RVROption::RVR_MISSING_OK,
                        None,
                        std::ptr::null_mut(),
                    )
                })
                .filter(|oid| *oid != pg_sys::InvalidOid)
                .collect();
            if relids.iter().any(|r| catalog::is_tenant_table(*r)) {
                // TRUNCATE ignores row-level security: only the * context may truncate.
                let ctx = gucs::tenant_context();
                let verdict = match ctx {
                    TenantContext::All => may_use(ctx),
                    TenantContext::None => may_use(ctx),
                    TenantContext::Tenant(_) => Err(refusal(
                        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                        "truncate_denied",
                        "TRUNCATE of a tenant table requires the tenant context \"*\"".into(),
                        "TRUNCATE removes every tenant's rows and ignores row-level security."
                            .into(),
                        "Use DELETE to remove this tenant's rows, or ask an administrator.",
                    )),
                };
                if let Err(r) = verdict {
                    refused(ctx, Operation::Truncate, r);
                }
                if ctx == TenantContext::All {
                    super::audit::write("*", "truncate", "{}");
                }
            }
        }
    }
}
