//! The tenant registry in shared memory, and its lock.
//!
//! Requested in the postmaster (sized by `ruvector.max_tenants`), attached by every backend.
//! One named LWLock: shared for lookups, exclusive for allocating slots and loading a
//! database's tenants. Counters inside slots are atomics and need no lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::*};

use pgrx::pg_sys;
use ruvector_tenancy::registry::{self, Header, Registry, TenantSlot};

const SHMEM_NAME: &CStr = c"ruvector tenant registry";
const LOCK_TRANCHE: &CStr = c"ruvector";

use std::ffi::CStr;

/// Databases whose tenants are loaded into the registry (64 databases with ruvector per
/// server; each entry is a database oid, 0 = free).
const MAX_DATABASES: usize = 64;

#[repr(C)]
struct Loaded {
    dbs: [AtomicU32; MAX_DATABASES],
    /// Loaded during recovery: the usage counted then misses every row replayed since, so it
    /// is counted again once the server is promoted.
    in_recovery: [AtomicBool; MAX_DATABASES],
}

static mut REGISTRY_BASE: *mut u8 = std::ptr::null_mut();
static mut PREV_SHMEM_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_SHMEM_STARTUP: pg_sys::shmem_startup_hook_type = None;

fn align(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// A block of shared memory that a module owns (the audit queue, the launcher's state, the
/// admission queue): its name (how `pg_shmem_allocations` shows it), its size, known in the
/// postmaster once settings are loaded, and the function that keeps its address and types
/// it. Modules hand theirs to [`init`], so this file imports none of them.
#[derive(Clone, Copy)]
pub struct Region {
    pub name: &'static CStr,
    pub bytes: fn() -> usize,
    /// # Safety
    /// Called once per process with the region's `bytes()` shared bytes, zeroed on first start.
    pub attach: unsafe fn(*mut u8),
}

const MAX_REGIONS: usize = 8;

/// `AddinShmemInitLock`: lock 21 of the main LWLock array (`lwlocknames.h`; a macro, not a
/// symbol the library could link to, in PostgreSQL 15 to 18).
const ADDIN_SHMEM_INIT_LOCK: usize = 21;
static mut REGIONS: [Option<Region>; MAX_REGIONS] = [None; MAX_REGIONS];

fn regions() -> impl Iterator<Item = Region> {
    // SAFETY: written once in _PG_init (postmaster, before any backend), read-only afterwards;
    // read by copy.
    let all = unsafe { REGIONS };
    all.into_iter().flatten()
}

/// Where each part of the registry's block lives.
#[derive(Clone, Copy)]
struct Layout {
    header: usize,
    loaded: usize,
    index: usize,
    slots: usize,
    total: usize,
    /// Tenant slots, and bytes of the hash index.
    capacity: usize,
    index_bytes: usize,
}

fn layout() -> Layout {
    let capacity = crate::gucs::max_tenants();
    let (h, i, s) = registry::layout(capacity);
    let a = std::mem::align_of::<TenantSlot>();
    let header = 0;
    let loaded = align(header + h, 8);
    let index = align(loaded + std::mem::size_of::<Loaded>(), 8);
    let slots = align(index + i, a);
    Layout {
        header,
        loaded,
        index,
        slots,
        total: slots + s + a,
        capacity: capacity as usize,
        index_bytes: i,
    }
}

/// Registers the shared-memory request with the registry and `regions`; called from
/// `_PG_init` while preloading.
pub fn init(with: &[Region]) {
    assert!(
        with.len() <= MAX_REGIONS,
        "at most {MAX_REGIONS} shared regions"
    );
    // SAFETY: hook chaining and the region list in the postmaster during preload,
    // single-threaded.
    unsafe {
        for (n, r) in with.iter().enumerate() {
            REGIONS[n] = Some(*r);
        }
        PREV_SHMEM_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(shmem_request);
        PREV_SHMEM_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(shmem_startup);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_request() {
    // SAFETY: called by the postmaster at the point where add-in requests are allowed.
    unsafe {
        if let Some(prev) = PREV_SHMEM_REQUEST {
            prev();
        }
        // ShmemInitStruct aligns each allocation to a cache line: one line of slack each.
        let regions: usize = regions().map(|r| (r.bytes)() + 128).sum();
        pg_sys::RequestAddinShmemSpace(layout().total + regions);
        // 0: the registry; 1: the scheduler.
        pg_sys::RequestNamedLWLockTranche(LOCK_TRANCHE.as_ptr(), 2);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn shmem_startup() {
    // SAFETY: the standard ShmemInitStruct protocol under AddinShmemInitLock; fresh memory is
    // zeroed before the registry header is initialized.
    unsafe {
        if let Some(prev) = PREV_SHMEM_STARTUP {
            prev();
        }
        let lock = &raw mut (*pg_sys::MainLWLockArray.add(ADDIN_SHMEM_INIT_LOCK)).lock;
        pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let layout = layout();
        let mut found = false;
        let base =
            pg_sys::ShmemInitStruct(SHMEM_NAME.as_ptr(), layout.total, &mut found) as *mut u8;
        if !found {
            std::ptr::write_bytes(base, 0, layout.total);
        }
        REGISTRY_BASE = base;
        let _ = with_base(base, |r| r.capacity(), !found);
        for r in regions() {
            let bytes = (r.bytes)();
            let mut found = false;
            let region = pg_sys::ShmemInitStruct(r.name.as_ptr(), bytes, &mut found) as *mut u8;
            if !found {
                std::ptr::write_bytes(region, 0, bytes);
            }
            (r.attach)(region);
        }
        pg_sys::LWLockRelease(lock);
    }
}

/// # Safety
/// `base` is the registry memory laid out by [`layout`].
unsafe fn with_base<R>(base: *mut u8, f: impl FnOnce(&Registry<'_>) -> R, initialize: bool) -> R {
    // `ruvector.max_tenants` is fixed at server start: the layout is computed once per
    // process (every statement reads the registry several times).
    static LAYOUT: std::sync::OnceLock<Layout> = std::sync::OnceLock::new();
    let l = *LAYOUT.get_or_init(layout);
    // SAFETY: guaranteed by the caller; all parts are atomics, so shared references are sound.
    let reg = unsafe {
        Registry::new(
            &*(base.add(l.header) as *const Header),
            std::slice::from_raw_parts(base.add(l.index) as *const AtomicU32, l.index_bytes / 4),
            std::slice::from_raw_parts(base.add(l.slots) as *const TenantSlot, l.capacity),
            initialize,
        )
    };
    f(&reg)
}

fn base() -> *mut u8 {
    // SAFETY: set in the postmaster before any backend forks; read-only afterwards.
    let base = unsafe { REGISTRY_BASE };
    if base.is_null() {
        crate::errors::not_preloaded();
    }
    base
}

/// Lock `n` of the ruvector tranche (0: registry, 1: scheduler).
pub fn lock_n(n: usize) -> *mut pg_sys::LWLock {
    // SAFETY: the tranche of 2 locks was requested in shmem_request; it lives in shared memory.
    unsafe { &raw mut (*pg_sys::GetNamedLWLockTranche(LOCK_TRANCHE.as_ptr()).add(n)).lock }
}

/// Runs `f` on the registry without taking the lock: for atomic counters only.
pub fn unlocked<R>(f: impl FnOnce(&Registry<'_>) -> R) -> R {
    // SAFETY: base() is the registry memory.
    unsafe { with_base(base(), f, false) }
}

/// Runs `f` with the registry lock held in `mode`. `f` must not raise errors (the lock is
/// released by error cleanup anyway, but keep critical sections short and infallible).
pub fn locked<R>(exclusive: bool, f: impl FnOnce(&Registry<'_>) -> R) -> R {
    // SAFETY: base() is the registry memory.
    with_lock(0, exclusive, || unsafe { with_base(base(), f, false) })
}

/// What the modules with per-slot records do when a slot is given to a tenant afresh; they
/// register it from `_PG_init`, so this file imports none of them.
static mut ON_FRESH_SLOT: [Option<fn(usize)>; MAX_REGIONS] = [None; MAX_REGIONS];

/// Registers `f` to run when a registry slot is given to a tenant afresh; from `_PG_init`.
pub fn on_fresh_slot(f: fn(usize)) {
    // SAFETY: called in _PG_init, single-threaded, before any backend exists.
    unsafe {
        let mut all = ON_FRESH_SLOT;
        if let Some(free) = all.iter_mut().find(|s| s.is_none()) {
            *free = Some(f);
        }
        ON_FRESH_SLOT = all;
    }
}

/// Registry slot `n` was just given to a tenant afresh (allocated or reset).
pub fn fresh_slot(n: usize) {
    // SAFETY: written in _PG_init only, read-only afterwards; read by copy.
    let all = unsafe { ON_FRESH_SLOT };
    for f in all.into_iter().flatten() {
        f(n);
    }
}

/// The registry slot and state of tenant `id` of this backend's database.
pub fn find(id: &str) -> Option<(usize, registry::TenantState)> {
    let slot = slot_of(id)?;
    Some((slot, unlocked(|r| r.slot(slot).state())))
}

thread_local! {
    /// Tenant id -> registry slot, of this backend's database: a slot once given to a
    /// tenant stays its slot while the server runs (see `ruvector_tenancy::registry`), so
    /// only the lookup under the lock is saved, never a state.
    static SLOTS: RefCell<HashMap<String, usize>> = RefCell::new(HashMap::new());
}

/// Tenants a backend remembers the slot of, at most (a connection pool's backend serves
/// many tenants; the memory stays bounded).
const REMEMBERED_SLOTS: usize = 4096;

/// The registry slot of tenant `id` of this database, in any state.
fn slot_of(id: &str) -> Option<usize> {
    if let Some(slot) = SLOTS.with(|s| s.borrow().get(id).copied()) {
        return Some(slot);
    }
    let db = crate::backend::db();
    let slot = locked(false, |r| r.lookup(db, id).map(|(n, _)| n))?;
    SLOTS.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() >= REMEMBERED_SLOTS {
            s.clear();
        }
        s.insert(id.to_owned(), slot);
    });
    Some(slot)
}

/// Whether tenant `id`'s `ruhnsw` nodes go on pages of its own: its isolation level is
/// `partition` or `dedicated`, or it is no registered tenant of this database (an index
/// without a tenant column, rows of an unknown tenant). Shared tenants' nodes are packed.
pub fn own_pages(id: &str) -> bool {
    slot_of(id).is_none_or(|n| unlocked(|r| r.slot(n).own_pages()))
}

/// Runs `f` holding lock `n` of the ruvector tranche (0: registry, 1: scheduler).
pub fn with_lock<R>(n: usize, exclusive: bool, f: impl FnOnce() -> R) -> R {
    let mode = if exclusive {
        pg_sys::LWLockMode::LW_EXCLUSIVE
    } else {
        pg_sys::LWLockMode::LW_SHARED
    };
    let lock = lock_n(n);
    // SAFETY: acquire/release pair around a closure that does not longjmp in practice; if it
    // did, LWLockReleaseAll in error cleanup releases the lock.
    unsafe {
        pg_sys::LWLockAcquire(lock, mode);
        let r = f();
        pg_sys::LWLockRelease(lock);
        r
    }
}

/// Runs `f` holding lock `n` exclusively if it is free now; `None` without waiting if not.
pub fn try_with_lock<R>(n: usize, f: impl FnOnce() -> R) -> Option<R> {
    let lock = lock_n(n);
    // SAFETY: as in with_lock.
    unsafe {
        if !pg_sys::LWLockConditionalAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE) {
            return None;
        }
        let r = f();
        pg_sys::LWLockRelease(lock);
        Some(r)
    }
}

fn loaded() -> &'static Loaded {
    let l = layout().loaded;
    // SAFETY: the Loaded block lies inside the registry memory; all atomics.
    unsafe { &*(base().add(l) as *const Loaded) }
}

/// Database `db`'s position in the loaded list.
fn position(db: u32) -> Option<usize> {
    loaded().dbs.iter().position(|d| d.load(Acquire) == db)
}

/// Whether database `db`'s tenants are in the registry.
pub fn is_loaded(db: u32) -> bool {
    position(db).is_some()
}

/// `None` when database `db`'s tenants are not in the registry; else whether they were
/// loaded during recovery and their usage not counted since (one look at the loaded list,
/// for the start of every statement).
pub fn loaded_state(db: u32) -> Option<bool> {
    position(db).map(|p| loaded().in_recovery[p].load(Acquire))
}

/// Marks `db` loaded, during recovery or not. Caller holds the exclusive lock. False when 64
/// databases already are.
pub fn mark_loaded(db: u32, recovering: bool) -> bool {
    if is_loaded(db) {
        return true;
    }
    let l = loaded();
    // A free position holds database 0.
    match position(0) {
        Some(free) => {
            l.in_recovery[free].store(recovering, Release);
            l.dbs[free].store(db, Release);
            true
        }
        None => false,
    }
}

/// `db`'s usage is counted again after recovery.
pub fn counted(db: u32) {
    if let Some(p) = position(db) {
        loaded().in_recovery[p].store(false, Release);
    }
}

/// The databases whose tenants are loaded, by position (0 = free position).
pub fn loaded_databases() -> Vec<u32> {
    loaded().dbs.iter().map(|d| d.load(Acquire)).collect()
}

/// DROP DATABASE `db` succeeded: its tenants are refused from now on and its position in the
/// loaded list is free again (for another database, and for the maintenance launcher, which
/// no longer starts workers for it); returns that position. The tenants' registry slots stay
/// taken until restart, like deleted tenants'.
pub fn forget_database(db: u32) -> Option<usize> {
    locked(true, |r| {
        for (_, slot) in r.iter_db(db) {
            slot.set_state(registry::TenantState::Deleted);
        }
        let p = position(db)?;
        loaded().dbs[p].store(0, Release);
        Some(p)
    })
}
