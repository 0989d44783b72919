//! The audit trail: `ruvector.tenant_audit_log`, written when `ruvector.audit_enabled` is on.
//!
//! - Operations that succeed (search, insert, update, delete with row counts), every use of
//!   the '*' context, and lifecycle calls are written in the statement's own transaction, so
//!   they commit exactly when the operation does.
//! - Refused attempts abort their transaction, so they cannot be written there. They go into
//!   a queue in shared memory instead, and the database's maintenance worker writes them
//!   (normally within a second); `ruvector_audit_flush()` writes them at once.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, Ordering::*};

use pgrx::pg_sys;
use pgrx::spi::Spi;
use ruvector_tenancy::tenant_id::TenantContext;

use super::catalog;
use super::statement::Operation;
use crate::errors::Refusal;

/// Queued refusals: 1024 entries of 512 bytes (512 kB of shared memory). When full, the
/// oldest are kept and new ones counted as dropped (reported in the server log and by
/// `ruvector_audit_flush()`).
pub const QUEUE_LEN: usize = 1024;

#[repr(C)]
#[derive(Clone, Copy)]
struct Entry {
    db: u32,
    len: [u16; 5],
    ts_us: i64,
    tenant: [u8; 64],
    op: [u8; 24],
    user: [u8; 64],
    addr: [u8; 48],
    detail: [u8; 288],
}
const _: () = assert!(std::mem::size_of::<Entry>() == 512);

#[repr(C)]
pub struct Queue {
    dropped: AtomicU64,
    entries: [Entry; QUEUE_LEN],
}

pub fn queue_bytes() -> usize {
    std::mem::size_of::<Queue>()
}

static mut QUEUE: *mut Queue = std::ptr::null_mut();

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

/// # Safety
/// `base` points at `queue_bytes()` zeroed (or previously initialized) shared bytes.
pub unsafe fn attach(base: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { QUEUE = base as *mut Queue };
}

/// This module's shared memory.
pub const REGION: super::shmem::Region = super::shmem::Region {
    bytes: queue_bytes,
    attach,
};

fn copy(dst: &mut [u8], s: &str) -> u16 {
    let mut n = s.len().min(dst.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    dst[..n].copy_from_slice(&s.as_bytes()[..n]);
    n as u16
}

fn text(src: &[u8], len: u16) -> String {
    String::from_utf8_lossy(&src[..(len as usize).min(src.len())]).into_owned()
}

fn user_name() -> String {
    // SAFETY: GetUserNameFromId returns a palloc'd copy (or NULL with noerr).
    unsafe {
        let n = pg_sys::GetUserNameFromId(pg_sys::GetUserId(), true);
        if n.is_null() {
            String::new()
        } else {
            CStr::from_ptr(n).to_string_lossy().into_owned()
        }
    }
}

fn client_addr() -> Option<String> {
    // NULL for Unix-socket connections and background processes.
    Spi::get_one::<String>("SELECT host(inet_client_addr())")
        .ok()
        .flatten()
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
    if !crate::gucs::audit_enabled() {
        return;
    }
    // SAFETY: QUEUE is the shared queue; entries are claimed with a CAS on `db` (0 = free),
    // so two backends never write the same entry, and the maintenance worker only reads an
    // entry after its db field is set, which happens last (Release).
    unsafe {
        let q = QUEUE;
        if q.is_null() {
            return;
        }
        let detail = format!(
            "{{\"refused\": true, \"reason\": \"{}\", \"sqlstate\": \"{}\"}}",
            r.reason,
            sqlstate(r.code)
        );
        for i in 0..QUEUE_LEN {
            let e = &raw mut (*q).entries[i];
            let slot = &*(&raw const (*e).db as *const std::sync::atomic::AtomicU32);
            // u32::MAX = being written; the real db oid is stored when complete.
            if slot.compare_exchange(0, u32::MAX, AcqRel, Relaxed).is_ok() {
                let mut entry = Entry {
                    db: u32::MAX,
                    len: [0; 5],
                    ts_us: now_us(),
                    tenant: [0; 64],
                    op: [0; 24],
                    user: [0; 64],
                    addr: [0; 48],
                    detail: [0; 288],
                };
                entry.len[0] = copy(&mut entry.tenant, &context_name(ctx));
                entry.len[1] = copy(&mut entry.op, op.name());
                entry.len[2] = copy(&mut entry.user, &user_name());
                entry.len[3] = copy(&mut entry.addr, &client_addr().unwrap_or_default());
                entry.len[4] = copy(&mut entry.detail, &detail);
                std::ptr::write(&raw mut (*e).len, entry.len);
                std::ptr::write(&raw mut (*e).ts_us, entry.ts_us);
                std::ptr::write(&raw mut (*e).tenant, entry.tenant);
                std::ptr::write(&raw mut (*e).op, entry.op);
                std::ptr::write(&raw mut (*e).user, entry.user);
                std::ptr::write(&raw mut (*e).addr, entry.addr);
                std::ptr::write(&raw mut (*e).detail, entry.detail);
                slot.store(crate::backend::db(), Release);
                queued();
                return;
            }
        }
        (*q).dropped.fetch_add(1, Relaxed);
    }
}

fn sqlstate(code: pgrx::PgSqlErrorCode) -> String {
    // SAFETY: unpack_sql_state returns a static buffer with the 5-character code.
    unsafe {
        CStr::from_ptr(pg_sys::unpack_sql_state(code as i32))
            .to_string_lossy()
            .into_owned()
    }
}

/// Writes this database's queued refusals to the audit log; returns how many.
pub fn drain() -> i64 {
    let me = crate::backend::db();
    let mut rows: Vec<(i64, String, String, String, String, String)> = Vec::new();
    // SAFETY: entries whose db field is this database were completely written (Release
    // store last); we copy them out, then free them with a store of 0.
    unsafe {
        let q = QUEUE;
        if q.is_null() {
            return 0;
        }
        for i in 0..QUEUE_LEN {
            let e = &raw mut (*q).entries[i];
            let slot = &*(&raw const (*e).db as *const std::sync::atomic::AtomicU32);
            if slot.load(Acquire) == me {
                let entry = std::ptr::read(e);
                rows.push((
                    entry.ts_us,
                    text(&entry.tenant, entry.len[0]),
                    text(&entry.op, entry.len[1]),
                    text(&entry.user, entry.len[2]),
                    text(&entry.addr, entry.len[3]),
                    text(&entry.detail, entry.len[4]),
                ));
                slot.store(0, Release);
            }
        }
    }
    rows.sort_by_key(|r| r.0);
    let n = rows.len() as i64;
    catalog::as_superuser(|| {
        for (ts, tenant, op, user, addr, detail) in rows {
            Spi::run_with_args(
                "INSERT INTO ruvector.tenant_audit_log (tenant_id, operation, user_id, details, ip_address, created_at) \
                 VALUES ($1, 'refused:' || $2, $3, $4::jsonb, nullif($5, '')::inet, to_timestamp($6::float8 / 1e6))",
                &[tenant.into(), op.into(), user.into(), detail.into(), addr.into(), ts.into()],
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
    let (user, addr) = (user_name(), client_addr().unwrap_or_default());
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
