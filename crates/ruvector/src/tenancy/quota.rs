//! Quota enforcement: a row trigger on every tenant table reserves written rows (and their
//! bytes) against the tenant's limits in shared memory, and records deletions; the
//! transaction callbacks commit or release them. The trigger acts only on registered tenant
//! tables and only on rows of the running statement's tenant. No table row is updated per insert, so
//! concurrent sessions of one tenant never serialize on a counter row.

use std::cell::RefCell;
use std::ffi::CStr;

use pgrx::pg_sys;
use ruvector_tenancy::quota::{self as rules, Ledger};
use ruvector_tenancy::registry::TenantState;
use ruvector_tenancy::statement::Resolved;
use ruvector_tenancy::tenant_id::TenantContext;

use super::{catalog, context, shmem};

thread_local! {
    static LEDGER: RefCell<Ledger> = RefCell::new(Ledger::default());
}

fn level() -> i32 {
    // SAFETY: plain query of the transaction nesting level.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

/// The registry slot a row of tenant `tenant` is counted in, for a change made under the
/// statement's tenant `r`. Under one tenant's context every row must be that tenant's (row
/// level security ensures it for ordinary roles; this also holds for roles that bypass it).
/// Under '*' any registered tenant's rows may change; new rows of deleted or unknown
/// tenants are refused (`adding`).
fn slot_for_row(r: &Resolved, tenant: &str, adding: bool) -> usize {
    match r {
        Resolved::Tenant { slot, key } if key.as_str() == tenant => *slot,
        Resolved::Tenant { key, .. } => context::refused(
            TenantContext::Tenant(key.as_str()),
            super::statement::Operation::Insert,
            crate::errors::row_of_other_tenant(tenant, key.as_str()),
        ),
        // Rows a foreign key's cascade removed: their triggers fire at the end of the
        // statement that deleted the referenced row (a tenant's catalog row), under its
        // context, which may be none; the deletion itself was checked as that statement.
        Resolved::None if !adding => counted_in(tenant),
        Resolved::None => context::refused(
            TenantContext::None,
            super::statement::Operation::Other,
            crate::errors::no_context(),
        ),
        Resolved::All => {
            catalog::ensure_loaded();
            match shmem::find(tenant) {
                Some((n, TenantState::Active | TenantState::Suspended)) => n,
                Some((n, _)) if !adding => n,
                _ => crate::errors::unknown_tenant(tenant),
            }
        }
    }
}

/// The slot of tenant `tenant`, whatever its state, for rows leaving it.
fn counted_in(tenant: &str) -> usize {
    catalog::ensure_loaded();
    shmem::find(tenant)
        .map(|(n, _)| n)
        .unwrap_or_else(|| crate::errors::unknown_tenant(tenant))
}

fn reserve(slot: usize, tenant: &str, rows: i64, bytes: i64) {
    let result = shmem::unlocked(|r| rules::reserve(r.slot(slot), rows, bytes));
    match result {
        Ok(()) => LEDGER.with(|l| l.borrow_mut().reserved(slot, level(), rows, bytes)),
        Err(e) => context::refused(
            TenantContext::Tenant(tenant),
            super::statement::Operation::Insert,
            crate::errors::quota_exceeded(tenant, e),
        ),
    }
}

fn deleted(slot: usize, rows: i64, bytes: i64) {
    LEDGER.with(|l| l.borrow_mut().deleted(slot, level(), rows, bytes));
}

/// Rows that were in a table before it was registered, counted at commit.
pub fn adopt(slot: usize, rows: i64, bytes: i64) {
    LEDGER.with(|l| l.borrow_mut().adopted(slot, level(), rows, bytes));
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
    /// `ruvector._quota_trigger()`: AFTER INSERT OR UPDATE OR DELETE, FOR EACH ROW, on tenant
    /// tables only. AFTER, so that only rows really written count: an INSERT that ends in
    /// ON CONFLICT, or that a later BEFORE trigger skips, reserves nothing.
    fn quota_trigger(fcinfo) {
        // SAFETY: PostgreSQL calls trigger functions with TriggerData as the context node.
        unsafe {
            let td = (*fcinfo).context as *mut pg_sys::TriggerData;
            if td.is_null() || (*td).type_ != pg_sys::NodeTag::T_TriggerData {
                pgrx::error!("ruvector._quota_trigger() must be called as a trigger");
            }
            let event = (*td).tg_event;
            let rel = (*td).tg_relation;
            let row_after = event & pg_sys::TRIGGER_EVENT_ROW != 0
                && event & pg_sys::TRIGGER_EVENT_TIMINGMASK == pg_sys::TRIGGER_EVENT_AFTER;
            let Some(col) = catalog::tenant_attnum((*rel).rd_id).filter(|_| row_after) else {
                crate::errors::not_a_tenant_table_trigger();
            };
            let col = i32::from(col);
            let desc = (*rel).rd_att;
            let r = context::current();
            let row = |tuple| {
                let (tenant, bytes) = tenant_of(tuple, desc, col);
                (tenant.unwrap_or_else(|| crate::errors::row_without_tenant()), bytes)
            };
            let op = event & pg_sys::TRIGGER_EVENT_OPMASK;
            if op == pg_sys::TRIGGER_EVENT_INSERT {
                let (tenant, bytes) = row((*td).tg_trigtuple);
                reserve(slot_for_row(&r, &tenant, true), &tenant, 1, bytes);
            } else if op == pg_sys::TRIGGER_EVENT_UPDATE {
                let (old, old_bytes) = row((*td).tg_trigtuple);
                let (new, new_bytes) = row((*td).tg_newtuple);
                let old_slot = slot_for_row(&r, &old, false);
                if old == new {
                    let delta = new_bytes - old_bytes;
                    if delta > 0 {
                        reserve(old_slot, &new, 0, delta);
                    } else if delta < 0 {
                        deleted(old_slot, 0, -delta);
                    }
                } else {
                    reserve(slot_for_row(&r, &new, true), &new, 1, new_bytes);
                    deleted(old_slot, 1, old_bytes);
                }
            } else {
                let (tenant, bytes) = row((*td).tg_trigtuple);
                deleted(slot_for_row(&r, &tenant, false), 1, bytes);
            }
            pg_sys::Datum::from(0)
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
