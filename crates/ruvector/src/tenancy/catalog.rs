//! Backend-local caches of the tenancy catalog, and loading a database's tenants into the
//! shared registry.
//!
//! - Tenant tables and role bindings: read from `ruvector.tenant_tables` and
//!   `ruvector.tenant_role_bindings`, reloaded when any backend changes them (a generation
//!   counter in shared memory) or when the catalog table itself is invalidated (DROP
//!   EXTENSION).
//! - The registry: the first backend of a database that needs it after server start loads
//!   every tenant of the database with its usage counted from the tenant tables, so nothing
//!   in shared memory is the only copy of anything.
//! - On a hot standby no trigger or commit callback runs: every change of the catalog reaches
//!   the standby as WAL. A change of `ruvector.tenants`, `tenant_tables` or
//!   `tenant_role_bindings` on the primary also invalidates that table's relation cache
//!   entry; the invalidation is part of the commit record, so every standby backend hears of
//!   it when it replays the commit, and re-reads the tenants (state and limits) into the
//!   registry at its next statement. A backend also re-reads them once when it starts, since
//!   the invalidations sent before it connected never reach it. After a promotion, the first
//!   statement counts the tenants' usage again (the standby never counted the rows replayed).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::atomic::Ordering::*;

use std::ffi::CStr;

use pgrx::pg_sys;
use pgrx::spi::{Spi, SpiClient};
use ruvector_tenancy::registry::{Limits, TenantState};

use super::shmem;

#[derive(Default)]
struct Cache {
    valid: bool,
    generation: u64,
    /// Oid of ruvector.tenant_tables, to notice its invalidation; InvalidOid when the
    /// extension is not installed in this database.
    catalog_rel: pg_sys::Oid,
    /// Oids of ruvector.tenant_role_bindings and ruvector.tenants, likewise.
    bindings_rel: pg_sys::Oid,
    tenants_rel: pg_sys::Oid,
    /// relid -> (qualified relation name, tenant column)
    tables: HashMap<pg_sys::Oid, (String, String)>,
    bindings: HashMap<String, String>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    /// The registry may be behind the catalog: set when this backend starts and when it
    /// hears that `ruvector.tenants` changed; acted upon only during recovery (a primary's
    /// registry follows its commits).
    static REGISTRY_STALE: Cell<bool> = const { Cell::new(true) };
    /// relid -> the tenant column's attribute number, looked up on first use; forgotten
    /// when the table's relation cache entry is invalidated (ALTER TABLE) and when the
    /// catalog cache reloads.
    static ATTNUMS: RefCell<HashMap<pg_sys::Oid, i16>> = RefCell::new(HashMap::new());
}

static mut CALLBACK_REGISTERED: bool = false;

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn relcache_callback(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    CACHE.with(|c| {
        ATTNUMS.with(|a| {
            let mut a = a.borrow_mut();
            if relid == pg_sys::InvalidOid {
                a.clear();
            } else {
                a.remove(&relid);
            }
        });
        let mut c = c.borrow_mut();
        // InvalidOid: everything (the invalidation queue overflowed, or a reset).
        if relid == pg_sys::InvalidOid || relid == c.catalog_rel || relid == c.bindings_rel {
            c.valid = false;
        }
        if relid == pg_sys::InvalidOid || relid == c.tenants_rel {
            REGISTRY_STALE.set(true);
        }
    });
}

/// Runs `f` as the bootstrap superuser (row-level security does not apply), with the
/// context layer off. The previous user is restored afterwards, and by transaction abort on
/// error.
pub fn as_superuser<R>(f: impl FnOnce() -> R) -> R {
    let (mut user, mut sec) = (pg_sys::InvalidOid, 0);
    // SAFETY: standard save/switch/restore of the current user id inside a transaction.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut sec);
        pg_sys::SetUserIdAndSecContext(
            pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
            sec | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
        );
    }
    let r = super::statement::internal(None, f);
    // SAFETY: as above.
    unsafe { pg_sys::SetUserIdAndSecContext(user, sec) };
    r
}

/// The oid of the catalog table `ruvector.<name>`; InvalidOid without the extension.
fn relid(name: &CStr) -> pg_sys::Oid {
    // SAFETY: syscache lookups in a transaction.
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"ruvector".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return pg_sys::InvalidOid;
        }
        pg_sys::get_relname_relid(name.as_ptr(), nsp)
    }
}

fn catalog_relid() -> pg_sys::Oid {
    relid(c"tenant_tables")
}

/// Invalidates, at commit, every backend's cached view of the catalog table
/// `ruvector.<name>`, on this server and, through the commit record, on its standbys.
pub fn invalidate(name: &CStr) {
    let rel = relid(name);
    if rel != pg_sys::InvalidOid {
        // SAFETY: registers a relcache invalidation of an existing relation in a transaction.
        unsafe { pg_sys::CacheInvalidateRelcacheByRelid(rel) };
    }
}

/// Whether the ruvector catalog exists in this database.
pub fn extension_present() -> bool {
    catalog_relid() != pg_sys::InvalidOid
}

fn generation() -> u64 {
    shmem::unlocked(|r| r.header().tables_generation.load(Acquire))
}

/// Bumps the shared generation: every backend reloads its cache at its next statement.
pub fn bump_generation() {
    shmem::unlocked(|r| r.header().tables_generation.fetch_add(1, AcqRel));
}

fn ensure_cache() {
    // SAFETY: registration once per backend.
    unsafe {
        if !CALLBACK_REGISTERED {
            pg_sys::CacheRegisterRelcacheCallback(Some(relcache_callback), pg_sys::Datum::from(0));
            CALLBACK_REGISTERED = true;
        }
    }
    let current = generation();
    let fresh = CACHE.with(|c| {
        let c = c.borrow();
        c.valid && c.generation == current
    });
    if fresh {
        return;
    }
    let rel = catalog_relid();
    let mut tables = HashMap::new();
    let mut bindings = HashMap::new();
    if rel != pg_sys::InvalidOid {
        as_superuser(|| {
            Spi::connect(|client| {
                let rows = client
                    // Only ordinary, permanent tables (what registration accepts): the registry
                    // load reads them as a superuser, which must never run anyone's code.
                    .select(
                        "SELECT t.relid::oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                         t.tenant_column::text FROM ruvector.tenant_tables t \
                         JOIN pg_catalog.pg_class c ON c.oid = t.relid \
                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                         WHERE c.relkind = 'r' AND c.relpersistence <> 't'",
                        None,
                        &[],
                    )
                    .expect("reading ruvector.tenant_tables");
                for row in rows {
                    let oid: pg_sys::Oid = row.get(1).ok().flatten().expect("relid");
                    let name: String = row.get(2).ok().flatten().expect("relation name");
                    let col: String = row.get(3).ok().flatten().expect("tenant_column");
                    tables.insert(oid, (name, col));
                }
                let rows = client
                    .select(
                        "SELECT role_name::text, tenant_id FROM ruvector.tenant_role_bindings",
                        None,
                        &[],
                    )
                    .expect("reading ruvector.tenant_role_bindings");
                for row in rows {
                    let role: String = row.get(1).ok().flatten().expect("role_name");
                    let tenant: String = row.get(2).ok().flatten().expect("tenant_id");
                    bindings.insert(role, tenant);
                }
            })
        });
    }
    ATTNUMS.with(|a| a.borrow_mut().clear());
    CACHE.with(|c| {
        *c.borrow_mut() = Cache {
            valid: true,
            generation: current,
            catalog_rel: rel,
            bindings_rel: relid(c"tenant_role_bindings"),
            tenants_rel: relid(c"tenants"),
            tables,
            bindings,
        }
    });
}

/// Whether `relid` is a registered tenant table.
pub fn is_tenant_table(relid: pg_sys::Oid) -> bool {
    ensure_cache();
    CACHE.with(|c| c.borrow().tables.contains_key(&relid))
}

/// The tenant column of a registered tenant table.
pub fn tenant_column(relid: pg_sys::Oid) -> Option<String> {
    ensure_cache();
    CACHE.with(|c| c.borrow().tables.get(&relid).map(|(_, col)| col.clone()))
}

/// The attribute number of a registered tenant table's tenant column (`None` for another
/// relation, or a column that no longer exists).
pub fn tenant_attnum(relid: pg_sys::Oid) -> Option<i16> {
    ensure_cache();
    if let Some(n) = ATTNUMS.with(|a| a.borrow().get(&relid).copied()) {
        return Some(n);
    }
    let name = std::ffi::CString::new(tenant_column(relid)?).ok()?;
    // SAFETY: a syscache lookup in a transaction.
    let n = unsafe { pg_sys::get_attnum(relid, name.as_ptr()) };
    if n <= 0 {
        return None;
    }
    ATTNUMS.with(|a| a.borrow_mut().insert(relid, n));
    Some(n)
}

/// Whether any login role of this database is bound to a tenant.
pub fn has_bindings() -> bool {
    ensure_cache();
    CACHE.with(|c| !c.borrow().bindings.is_empty())
}

/// The tenant a login role is bound to.
pub fn binding(role: &str) -> Option<String> {
    ensure_cache();
    CACHE.with(|c| c.borrow().bindings.get(role).cloned())
}

/// A tenant's catalog row, as the registry needs it.
pub struct TenantRow {
    pub id: String,
    pub state: TenantState,
    pub limits: Limits,
    /// Its index nodes go on pages of its own (not the shared level).
    pub own_pages: bool,
}

pub fn state_from_name(name: &str) -> TenantState {
    match name {
        "active" => TenantState::Active,
        "suspended" => TenantState::Suspended,
        _ => TenantState::Deleted,
    }
}

pub fn limits(
    max_vectors: i64,
    max_storage_gb: f32,
    max_qps: i32,
    max_concurrent: i32,
    weight: f32,
) -> Limits {
    Limits {
        max_vectors,
        max_storage_bytes: (f64::from(max_storage_gb) * 1024.0 * 1024.0 * 1024.0) as i64,
        max_qps,
        max_concurrent,
        weight: f64::from(weight),
    }
}

fn read_tenants(client: &SpiClient<'_>) -> Vec<TenantRow> {
    let result = client
        .select(
            "SELECT id, CASE WHEN deleted_at IS NOT NULL THEN 'deleted' \
             WHEN suspended_at IS NOT NULL THEN 'suspended' ELSE 'active' END, \
             max_vectors, max_storage_gb, max_qps, max_concurrent, weight, \
             isolation_level IS DISTINCT FROM 'shared' FROM ruvector.tenants",
            None,
            &[],
        )
        .expect("reading ruvector.tenants");
    result
        .map(|row| {
            let state: String = row.get(2).ok().flatten().expect("state");
            TenantRow {
                id: row.get(1).ok().flatten().expect("id"),
                state: state_from_name(&state),
                limits: limits(
                    row.get(3).ok().flatten().unwrap_or(0),
                    row.get(4).ok().flatten().unwrap_or(0.0),
                    row.get(5).ok().flatten().unwrap_or(0),
                    row.get(6).ok().flatten().unwrap_or(0),
                    row.get(7).ok().flatten().unwrap_or(1.0),
                ),
                own_pages: row.get(8).ok().flatten().unwrap_or(true),
            }
        })
        .collect()
}

/// Each tenant's rows and bytes in the registered tenant tables; only tenant `only`'s when
/// given.
fn count_usage(client: &SpiClient<'_>, only: Option<&str>) -> HashMap<String, (i64, i64)> {
    let tables: Vec<(String, String)> =
        CACHE.with(|c| c.borrow().tables.values().cloned().collect());
    let mut usage: HashMap<String, (i64, i64)> = HashMap::new();
    for (rel, col) in &tables {
        let col = pgrx::spi::quote_identifier(col);
        let filter = if only.is_some() {
            format!("WHERE {col}::text = $1")
        } else {
            String::new()
        };
        let sql = format!(
            "SELECT {col}::text, count(*)::bigint, coalesce(sum(pg_column_size(t.*)), 0)::bigint \
             FROM {rel} t {filter} GROUP BY 1"
        );
        let args: Vec<pgrx::datum::DatumWithOid> = only.into_iter().map(Into::into).collect();
        for row in client
            .select(&sql, None, &args)
            .expect("counting tenant rows")
        {
            let tenant: Option<String> = row.get(1).ok().flatten();
            let n: i64 = row.get(2).ok().flatten().unwrap_or(0);
            let bytes: i64 = row.get(3).ok().flatten().unwrap_or(0);
            if let Some(t) = tenant {
                let e = usage.entry(t).or_default();
                e.0 += n;
                e.1 += bytes;
            }
        }
    }
    usage
}

/// Counts tenant `id`'s rows and bytes in the registered tenant tables and makes them its
/// usage in the registry: for rows that arrived without the quota trigger (logical
/// replication applies rows with triggers off). Returns (rows, bytes).
pub fn recount(id: &str) -> (i64, i64) {
    ensure_loaded();
    ensure_cache();
    let counted = as_superuser(|| Spi::connect(|client| count_usage(client, Some(id))))
        .get(id)
        .copied()
        .unwrap_or((0, 0));
    let db = crate::backend::db();
    shmem::locked(false, |reg| {
        if let Some((_, slot)) = reg.lookup(db, id) {
            slot.vectors.store(counted.0, Relaxed);
            slot.storage_bytes.store(counted.1, Relaxed);
        }
    });
    counted
}

/// Loads this database's tenants into the registry unless already loaded; on a standby,
/// and after a promotion, brings the registry up to date with the catalog (see the module
/// documentation).
pub fn ensure_loaded() {
    let db = crate::backend::db();
    if let Some(counted_in_recovery) = shmem::loaded_state(db) {
        follow_recovery(db, counted_in_recovery);
        return;
    }
    if catalog_relid() == pg_sys::InvalidOid {
        return;
    }
    ensure_cache();
    REGISTRY_STALE.set(false);
    let recovering = crate::backend::in_recovery();
    let (rows, usage) =
        as_superuser(|| Spi::connect(|client| (read_tenants(client), count_usage(client, None))));
    let full = shmem::locked(true, |reg| {
        if shmem::is_loaded(db) {
            return Ok(());
        }
        // A slot a commit made before the database was loaded keeps that commit's state and
        // limits; the rows counted now are its usage (a restore inserting the catalog's rows).
        apply_rows(reg, db, &rows, false, Some(&usage))?;
        if !shmem::mark_loaded(db, recovering) {
            return Err(0);
        }
        Ok(())
    });
    report(full);
}

/// Puts the catalog's `rows` into the registry (caller holds the exclusive lock): every
/// tenant gets a slot; states and limits are set on fresh slots, or on all with `overwrite`;
/// usage is set from `usage` when given. `Err(capacity)` when the registry is full.
fn apply_rows(
    reg: &ruvector_tenancy::registry::Registry<'_>,
    db: u32,
    rows: &[TenantRow],
    overwrite: bool,
    usage: Option<&HashMap<String, (i64, i64)>>,
) -> Result<(), u32> {
    for row in rows {
        let (n, slot, fresh) = reg.upsert(db, &row.id, false).map_err(|e| e.capacity)?;
        if fresh {
            shmem::fresh_slot(n);
        }
        if fresh || overwrite {
            slot.set_limits(row.limits);
            slot.set_state(row.state);
        }
        slot.set_own_pages(row.own_pages);
        if let Some(usage) = usage {
            let (n, bytes) = usage.get(&row.id).copied().unwrap_or((0, 0));
            slot.vectors.store(n, Relaxed);
            slot.storage_bytes.store(bytes, Relaxed);
        }
    }
    Ok(())
}

fn report(result: Result<(), u32>) {
    match result {
        Ok(()) => {}
        Err(0) => pgrx::error!("ruvector: more than 64 databases use ruvector on this server"),
        Err(capacity) => crate::errors::registry_full(capacity),
    }
}

/// A loaded registry during and after recovery: on a standby, the tenants' states and limits
/// re-read when the catalog changed; after a promotion, their usage counted again. On a
/// primary that never was a standby, two flag reads.
fn follow_recovery(db: u32, counted_in_recovery: bool) {
    let stale = REGISTRY_STALE.get();
    if !stale && !counted_in_recovery {
        return;
    }
    let recovering = crate::backend::in_recovery();
    if recovering && !stale {
        return;
    }
    // Cleared before reading: an invalidation arriving meanwhile makes it stale again.
    REGISTRY_STALE.set(false);
    if !recovering && !counted_in_recovery {
        return;
    }
    ensure_cache();
    let promoted = !recovering;
    let (rows, usage) = as_superuser(|| {
        Spi::connect(|client| {
            let usage = promoted.then(|| count_usage(client, None));
            (read_tenants(client), usage)
        })
    });
    let done = shmem::locked(true, |reg| {
        let listed: std::collections::HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        for (_, slot) in reg.iter_db(db) {
            if !listed.contains(slot.id().as_str()) {
                slot.set_state(TenantState::Deleted);
            }
        }
        apply_rows(reg, db, &rows, true, usage.as_ref())?;
        if promoted {
            shmem::counted(db);
        }
        Ok(())
    });
    report(done);
}

/// Counts a finished search in the tenant's last-hour window.
pub fn count_search_window(slot: usize) {
    shmem::unlocked(|r| r.slot(slot).count_search(crate::backend::now_ms()));
}
