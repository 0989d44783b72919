//! The audit trail: `ruvector.tenant_audit_log`, written when `ruvector.audit_enabled` is on.
//!
//! - Operations that succeed (search, insert, update, delete with row counts), every use of
//!   the '*' context, and lifecycle calls are written in the statement's own transaction, so
//!   they commit exactly when the operation does.
//! - Refused attempts abort their transaction, so they cannot be written there. They go into
//!   a queue in shared memory instead, and the database's maintenance worker writes them
//!   (normally within a second); `ruvector_audit_flush()` writes them at once.

use std::ffi::CStr;
use std::sync::atomic::AtomicU64;

use pgrx::pg_sys;
use pgrx::spi::Spi;
use ruvector_tenancy::audit_queue::{self, Entry, Queue, Record, QUEUE_LEN};
use ruvector_tenancy::tenant_id::TenantContext;

use super::catalog;
use super::statement::Operation;
use crate::errors::Refusal;

static mut QUEUE: *mut u8 = std::ptr::null_mut();

/// Called after a refusal is queued: the maintenance launcher registers how to be woken, so
/// that the queue is written within a second without this file knowing the launcher.
static mut ON_QUEUED: Option<fn()> = None;

/// Registers what to do when a refusal is queued; from `_PG_init`.
pub fn on_queued(f: fn()) {
    // SAFETY: called once in _PG_init, single-threaded, before any backend exists.
    unsafe { ON_QUEUED = Some(f) };
}

fn queued() {
    // SAFETY: written once in _PG_init, read-only afterwards.
    if let Some(f) = unsafe { ON_QUEUED } {
        f();
    }
}

fn bytes() -> usize {
    audit_queue::bytes(QUEUE_LEN)
}

/// # Safety
/// `base` points at `bytes()` zeroed (or previously initialized) shared bytes.
unsafe fn attach(base: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { QUEUE = base };
}

/// This module's shared memory: the queue of refusals (512 kB).
pub const REGION: super::shmem::Region = super::shmem::Region {
    name: c"ruvector audit queue",
    bytes,
    attach,
};

fn queue() -> Option<Queue<'static>> {
    // SAFETY: attached at shared-memory startup (NULL when not preloaded): a dropped counter
    // in the first entry-sized block, then QUEUE_LEN entries, all atomics.
    unsafe {
        let base = QUEUE;
        if base.is_null() {
            return None;
        }
        let entries = std::slice::from_raw_parts(
            base.add(std::mem::size_of::<Entry>()) as *const Entry,
            QUEUE_LEN,
        );
        Some(Queue::new(&*(base as *const AtomicU64), entries))
    }
}

/// The user an audit record names: `ruvector.app_user` when the application set it, else
/// the database role.
fn user_name() -> String {
    if let Some(u) = crate::gucs::app_user() {
        return u;
    }
    // SAFETY: a plain read of the current user (callers are in a transaction).
    crate::backend::role_name(unsafe { pg_sys::GetUserId() })
}

thread_local! {
    /// This connection's client address, once read.
    static CLIENT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    /// A record is being made while an error is reported: nothing may be queried.
    static REPORTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The client's address, as `inet_client_addr()` gives it (empty for Unix-socket
/// connections and background processes); read once per connection.
fn client_addr() -> String {
    if let Some(a) = CLIENT.with(|c| c.borrow().clone()) {
        return a;
    }
    if REPORTING.get() {
        return String::new();
    }
    // Cached before the query runs: the query is a statement too, and its start prepares
    // audit records again.
    CLIENT.with(|c| *c.borrow_mut() = Some(String::new()));
    // A read-only query: `Spi::get_one` would assign the transaction an id (on every audited
    // read-only statement), which a standby refuses.
    let a = Spi::connect(|c| {
        c.select("SELECT host(inet_client_addr())", Some(1), &[])?
            .first()
            .get_one::<String>()
    })
    .ok()
    .flatten()
    .unwrap_or_default();
    CLIENT.with(|c| *c.borrow_mut() = Some(a.clone()));
    a
}

/// Reads what a record needs ahead (the client address), when audit is on: a refusal that
/// PostgreSQL raises is recorded while the error is reported, when nothing may be queried.
pub fn prepare() {
    if crate::gucs::audit_enabled() {
        client_addr();
    }
}

fn now_us() -> i64 {
    crate::backend::now_ms() * 1000
}

fn context_name(ctx: TenantContext<'_>) -> String {
    match ctx {
        TenantContext::None => String::new(),
        TenantContext::All => "*".into(),
        TenantContext::Tenant(t) => t.into(),
    }
}

/// Queues a refused attempt (called just before the error is raised).
pub fn refused(ctx: TenantContext<'_>, op: Operation, r: &Refusal) {
    queue_refusal(context_name(ctx), op.name(), r.reason, &sqlstate(r.code));
}

fn queue_refusal(tenant: String, operation: &str, reason: &str, sqlstate: &str) {
    if !crate::gucs::audit_enabled() {
        return;
    }
    if queue().is_none() {
        return;
    }
    let record = Record {
        at_us: now_us(),
        tenant,
        operation: format!("refused:{operation}"),
        user: user_name(),
        address: client_addr(),
        detail: format!(
            "{{\"refused\": true, \"reason\": \"{reason}\", \"sqlstate\": \"{sqlstate}\"}}"
        ),
    };
    if crate::backend::in_recovery() && !REPORTING.get() {
        to_server_log(
            &record.tenant,
            &record.operation,
            &record.user,
            &record.address,
            &record.detail,
        );
        return;
    }
    enqueue(&record);
}

/// Puts `record` on the shared queue the maintenance worker writes; false when there is no
/// queue or it is full.
fn enqueue(record: &Record) -> bool {
    match queue() {
        Some(q) if q.push(crate::backend::db(), record) => {
            queued();
            true
        }
        _ => false,
    }
}

/// A standby cannot write the audit log: its records go to the server log instead, one LOG
/// line each, with the fields of the audit log's columns.
fn to_server_log(tenant: &str, operation: &str, user: &str, address: &str, detail: &str) {
    pgrx::log!(
        "ruvector audit on a standby: tenant_id={tenant:?} operation={operation:?} user_id={user:?} ip_address={address:?} details={detail}"
    );
}

static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;

/// Installs the log hook that audits refusals PostgreSQL raises itself; from `_PG_init`.
pub fn install_log_hook() {
    // SAFETY: hook chaining in _PG_init, single-threaded, once.
    unsafe {
        PREV_EMIT_LOG = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
    }
}

/// Audits row-level security's refusal of a row of another tenant (the policies' WITH
/// CHECK), which PostgreSQL raises, not the extension: an ERROR whose untranslated message
/// is the policy violation, during a statement resolved for one tenant. Nothing here can
/// raise an error (the server is reporting one).
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    // SAFETY: PostgreSQL passes the error being reported; the hook chain is called first.
    unsafe {
        if let Some(prev) = PREV_EMIT_LOG {
            prev(edata);
        }
        if (*edata).elevel < pg_sys::PGERROR as i32
            || (*edata).message_id.is_null()
            || !CStr::from_ptr((*edata).message_id)
                .to_bytes()
                .starts_with(b"new row violates row-level security policy")
        {
            return;
        }
    }
    REPORTING.set(true);
    let r = std::panic::catch_unwind(|| {
        if let Some(Some(ruvector_tenancy::statement::Resolved::Tenant { key, .. })) =
            super::statement::current()
        {
            queue_refusal(key.as_str().into(), "write", "other_tenants_row", "42501");
        }
    });
    REPORTING.set(false);
    drop(r);
}

fn sqlstate(code: pgrx::PgSqlErrorCode) -> String {
    // SAFETY: unpack_sql_state returns a static buffer with the 5-character code.
    unsafe {
        CStr::from_ptr(pg_sys::unpack_sql_state(code as i32))
            .to_string_lossy()
            .into_owned()
    }
}

/// Writes this database's queued refusals to the audit log; returns how many. Refusals the
/// full queue dropped are reported as a warning (in the server log when the maintenance
/// worker drains, to the caller of `ruvector_audit_flush()`).
pub fn drain() -> i64 {
    let Some(q) = queue() else { return 0 };
    let dropped = q.take_dropped();
    if dropped > 0 {
        pgrx::warning!(
            "{dropped} refused attempts were not audited: the audit queue ({QUEUE_LEN} entries) was full"
        );
    }
    let rows = q.drain(crate::backend::db());
    let n = rows.len() as i64;
    catalog::as_superuser(|| {
        for r in rows {
            Spi::run_with_args(
                "INSERT INTO ruvector.tenant_audit_log (tenant_id, operation, user_id, details, ip_address, created_at) \
                 VALUES ($1, $2, $3, $4::jsonb, nullif($5, '')::inet, to_timestamp($6::float8 / 1e6))",
                &[r.tenant.into(), r.operation.into(), r.user.into(), r.detail.into(), r.address.into(), r.at_us.into()],
            )
            .expect("writing queued audit records");
        }
    });
    n
}

/// Records a completed operation in the current transaction.
pub fn operation(ctx: TenantContext<'_>, op: Operation, rows: u64, relids: &[pg_sys::Oid]) {
    if !crate::gucs::audit_enabled() || op == Operation::Other {
        return;
    }
    let tables: Vec<String> = relids
        .iter()
        .filter(|r| catalog::is_tenant_table(**r))
        .map(|r| r.to_u32().to_string())
        .collect();
    let detail = format!(
        "{{\"rows\": {rows}, \"relations\": [{}]}}",
        tables.join(", ")
    );
    write(&context_name(ctx), op.name(), &detail);
}

/// Runs `f` with an active snapshot (ExecutorEnd of a portal may run without one).
fn with_snapshot<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: push/pop pair of the transaction snapshot inside a transaction.
    let pushed = unsafe {
        if pg_sys::ActiveSnapshotSet() {
            false
        } else {
            pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
            true
        }
    };
    let r = f();
    if pushed {
        // SAFETY: pops the snapshot pushed above.
        unsafe { pg_sys::PopActiveSnapshot() };
    }
    r
}

/// Writes one audit row in the current transaction.
pub fn write(tenant: &str, operation: &str, detail: &str) {
    with_snapshot(|| write_now(tenant, operation, detail))
}

fn write_now(tenant: &str, operation: &str, detail: &str) {
    let (user, addr) = (user_name(), client_addr());
    if crate::backend::in_recovery() {
        to_server_log(tenant, operation, &user, &addr, detail);
        return;
    }
    // SAFETY: a plain read of the transaction's read-only flag.
    if unsafe { pg_sys::XactReadOnly } {
        // A read-only transaction cannot insert (one begun on a standby before its promotion,
        // or SET TRANSACTION READ ONLY): the record goes through the queue, which the
        // maintenance worker writes in transactions of its own; to the server log when full.
        let record = Record {
            at_us: now_us(),
            tenant: tenant.into(),
            operation: operation.into(),
            user,
            address: addr,
            detail: detail.into(),
        };
        if !enqueue(&record) {
            to_server_log(tenant, operation, &record.user, &record.address, detail);
        }
        return;
    }
    catalog::as_superuser(|| {
        Spi::run_with_args(
            "INSERT INTO ruvector.tenant_audit_log (tenant_id, operation, user_id, details, ip_address) \
             VALUES ($1, $2, $3, $4::jsonb, nullif($5, '')::inet)",
            &[tenant.into(), operation.into(), user.into(), detail.into(), addr.into()],
        )
        .expect("writing an audit record");
    });
}

pg_fn! {
    /// `ruvector._audit(tenant, operation, details)`: a lifecycle audit record (admins).
    fn audit(fcinfo) {
        if crate::gucs::audit_enabled() {
            if !crate::backend::is_admin() {
                crate::errors::not_admin("write audit records");
            }
            // SAFETY: three non-null text arguments.
            let (t, o, d) = unsafe { (crate::fmgr::arg_text(fcinfo, 0), crate::fmgr::arg_text(fcinfo, 1), crate::fmgr::arg_text(fcinfo, 2)) };
            write(&t, &o, &d);
        }
        pg_sys::Datum::from(0)
    }
}

pg_fn! {
    /// `ruvector_audit_flush()`: writes this database's queued refusals now; returns the
    /// number written.
    fn audit_flush(_fcinfo) {
        if !crate::backend::is_admin() {
            crate::errors::not_admin("flush the audit queue");
        }
        pg_sys::Datum::from(drain())
    }
}
