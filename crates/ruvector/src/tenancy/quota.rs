//! Quota enforcement: a row trigger on every tenant table reserves inserted rows (and their
//! bytes) against the tenant's limits in shared memory, and records deletions; the
//! transaction callbacks commit or release them. No table row is updated per insert, so
//! concurrent sessions of one tenant never serialize on a counter row.

use std::cell::RefCell;
use std::ffi::CStr;

use pgrx::pg_sys;
use ruvector_tenancy::quota::{self as rules, Ledger};
use ruvector_tenancy::registry::TenantState;
use ruvector_tenancy::tenant_id::TenantContext;

use super::{catalog, shmem};

thread_local! {
    static LEDGER: RefCell<Ledger> = RefCell::new(Ledger::default());
}

fn level() -> i32 {
    // SAFETY: plain query of the transaction nesting level.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

fn db() -> u32 {
    // SAFETY: plain read of a backend global.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// The tenant slot a row belongs to; refuses rows of unknown or deleted tenants, and rows of
/// a suspended tenant unless an admin acts under '*'.
fn slot_for_row(tenant: &str) -> usize {
    catalog::ensure_loaded();
    let found = shmem::locked(false, |r| {
        r.lookup(db(), tenant).map(|(n, s)| (n, s.state()))
    });
    match found {
        Some((n, TenantState::Active)) => n,
        Some((n, TenantState::Suspended))
            if crate::gucs::tenant_context() == TenantContext::All =>
        {
            n
        }
        Some((_, TenantState::Suspended)) => crate::errors::tenant_suspended(tenant),
        _ => crate::errors::unknown_tenant(tenant),
    }
}

fn reserve(tenant: &str, rows: i64, bytes: i64) {
    let n = slot_for_row(tenant);
    let result = shmem::unlocked(|r| rules::reserve(r.slot(n), rows, bytes));
    match result {
        Ok(()) => LEDGER.with(|l| l.borrow_mut().reserved(n, level(), rows, bytes)),
        Err(e) => crate::errors::quota_exceeded(tenant, e),
    }
}

fn deleted(tenant: &str, rows: i64, bytes: i64) {
    catalog::ensure_loaded();
    if let Some((n, _)) = shmem::locked(false, |r| {
        r.lookup(db(), tenant).map(|(n, s)| (n, s.state()))
    }) {
        LEDGER.with(|l| l.borrow_mut().deleted(n, level(), rows, bytes));
    }
}

/// The tenant column's text value in `tuple`, and the tuple's length.
///
/// # Safety
/// `tuple` belongs to `rel`; `col` is the 1-based attribute number.
unsafe fn tenant_of(
    tuple: pg_sys::HeapTuple,
    desc: pg_sys::TupleDesc,
    col: i32,
) -> (Option<String>, i64) {
    // SAFETY: guaranteed by the caller; SPI_getvalue returns a palloc'd string or NULL.
    unsafe {
        let v = pg_sys::SPI_getvalue(tuple, desc, col);
        let tenant = (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned());
        (tenant, i64::from((*tuple).t_len))
    }
}

pg_fn! {
    /// `ruvector._quota_trigger()`: BEFORE INSERT OR UPDATE and AFTER DELETE, FOR EACH ROW,
    /// with the tenant column's name as its argument.
    fn quota_trigger(fcinfo) {
        // SAFETY: PostgreSQL calls trigger functions with TriggerData as the context node.
        unsafe {
            let td = (*fcinfo).context as *mut pg_sys::TriggerData;
            if td.is_null() || (*td).type_ != pg_sys::NodeTag::T_TriggerData {
                pgrx::error!("ruvector._quota_trigger() must be called as a trigger");
            }
            let event = (*td).tg_event;
            let trigger = (*td).tg_trigger;
            if (*trigger).tgnargs < 1 {
                pgrx::error!("ruvector._quota_trigger() needs the tenant column as its argument");
            }
            let col_name = *(*trigger).tgargs;
            let rel = (*td).tg_relation;
            let desc = (*rel).rd_att;
            let col = pg_sys::SPI_fnumber(desc, col_name);
            if col <= 0 {
                pgrx::error!("ruvector._quota_trigger(): no column {:?}", CStr::from_ptr(col_name));
            }
            let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
            let result = if op == pg_sys::TRIGGER_EVENT_INSERT {
                let (tenant, bytes) = tenant_of((*td).tg_trigtuple, desc, col);
                if let Some(t) = tenant {
                    reserve(&t, 1, bytes);
                }
                (*td).tg_trigtuple
            } else if op == pg_sys::TRIGGER_EVENT_UPDATE {
                let (old_tenant, old_bytes) = tenant_of((*td).tg_trigtuple, desc, col);
                let (new_tenant, new_bytes) = tenant_of((*td).tg_newtuple, desc, col);
                match (old_tenant, new_tenant) {
                    (Some(o), Some(n)) if o == n => {
                        let delta = new_bytes - old_bytes;
                        if delta > 0 {
                            reserve(&n, 0, delta);
                        } else if delta < 0 {
                            deleted(&n, 0, -delta);
                        }
                    }
                    (o, n) => {
                        if let Some(n) = n {
                            reserve(&n, 1, new_bytes);
                        }
                        if let Some(o) = o {
                            deleted(&o, 1, old_bytes);
                        }
                    }
                }
                (*td).tg_newtuple
            } else {
                let (tenant, bytes) = tenant_of((*td).tg_trigtuple, desc, col);
                if let Some(t) = tenant {
                    deleted(&t, 1, bytes);
                }
                std::ptr::null_mut()
            };
            pg_sys::Datum::from(result)
        }
    }
}

/// Commits or releases everything the transaction reserved or deleted.
pub fn end_of_transaction(commit: bool) {
    let entries = LEDGER.with(|l| l.borrow_mut().take());
    if entries.is_empty() {
        return;
    }
    shmem::unlocked(|r| {
        for e in entries {
            let slot = r.slot(e.slot);
            if commit {
                rules::commit(slot, e.reserved_rows, e.reserved_bytes);
                rules::remove(slot, e.deleted_rows, e.deleted_bytes);
            } else {
                rules::release(slot, e.reserved_rows, e.reserved_bytes);
            }
        }
    });
}

/// A savepoint ended: its entries move to the parent, or are released.
pub fn end_of_subtransaction(level: i32, commit: bool) {
    if commit {
        LEDGER.with(|l| l.borrow_mut().subcommit(level));
        return;
    }
    let gone = LEDGER.with(|l| l.borrow_mut().subabort(level));
    shmem::unlocked(|r| {
        for e in gone {
            rules::release(r.slot(e.slot), e.reserved_rows, e.reserved_bytes);
        }
    });
}
