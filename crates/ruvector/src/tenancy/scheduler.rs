//! Admission control: per-tenant rate limits and weighted fair scheduling of statements.
//!
//! 1. Every statement on a tenant table, nested ones (inside functions) included, and every
//!    `ruhnsw` search after the first of a statement takes a token from its tenant's bucket
//!    (rate `max_qps`, burst `max_qps × ruvector.rate_burst_seconds`), or fails with 53000
//!    and "retry after N ms".
//! 2. Every run of a top-level statement takes an execution slot: at most
//!    `ruvector.max_active_statements` tenant statements run at once server-wide, and at most
//!    `max_concurrent` per tenant; the last quarter of the slots only goes to tenants that
//!    run nothing (`ruvector_tenancy::admission::reserve`). When none is free the statement
//!    waits on its latch in a queue ordered by weighted fair tags (`ruvector_tenancy::fair`);
//!    a releasing statement admits the next waiter and sets its latch. Where a backlogged
//!    tenant's statements run is set by `place` (see `affinity.rs`). A wait longer than
//!    `ruvector.admission_timeout` fails with 53000; a tenant suspended while its statement
//!    waits gets 55000.
//!
//! Slots are released when the run ends: at ExecutorEnd for a statement run to completion,
//! at the end of each FETCH for a cursor (an idle session with an open cursor holds no
//! slot), and by error cleanup (transaction or savepoint abort) and backend exit, so
//! cancellations, statement timeouts and crashes of a statement never leak a slot. Nested
//! statements run under their top-level statement's slot.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::*};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_tenancy::admission::{self, Header, Queue, Runner, WaitSlot};
use ruvector_tenancy::rate::{self, Admission};
use ruvector_tenancy::registry::TenantState;

use super::{affinity, shmem};
use crate::backend::now_ms;
use crate::errors::{refusal as refuse, Refusal};
use crate::gucs;

static mut QUEUE: *mut u8 = std::ptr::null_mut();

fn waiters_len() -> usize {
    // SAFETY: MaxBackends is final before shared memory is sized (PostgreSQL 15+).
    (unsafe { pg_sys::MaxBackends }).max(1) as usize
}

fn bytes() -> usize {
    admission::bytes(waiters_len())
}

/// # Safety
/// `base` points at `bytes()` shared bytes, zeroed on first start.
unsafe fn attach(base: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { QUEUE = base };
}

/// This module's shared memory: the admission queue, one wait slot per backend.
pub const REGION: super::shmem::Region = super::shmem::Region {
    name: c"ruvector admission queue",
    bytes,
    attach,
};

fn queue() -> Queue<'static> {
    // SAFETY: attached at shared-memory startup before any backend runs: a Header followed
    // by MaxBackends wait slots and MaxBackends runner records (aligned by runners_at
    // within admission::bytes), all atomics.
    unsafe {
        let header = &*(QUEUE as *const Header);
        let slots_at = QUEUE.add(std::mem::size_of::<Header>());
        let slots = std::slice::from_raw_parts(slots_at as *const WaitSlot, waiters_len());
        let runners = std::slice::from_raw_parts(
            admission::runners_at(QUEUE, waiters_len()) as *const Runner,
            waiters_len(),
        );
        Queue::new(header, slots, runners)
    }
}

/// The position of a process's PGPROC in the server's array: its runner record. Backends,
/// background and parallel workers come first in that array, below MaxBackends.
fn process_of(proc_: *const pg_sys::PGPROC) -> usize {
    // SAFETY: ProcGlobal and every PGPROC live in shared memory for the life of the server.
    let first = unsafe { (*pg_sys::ProcGlobal).allProcs } as usize;
    (proc_ as usize - first) / std::mem::size_of::<pg_sys::PGPROC>()
}

/// This process's runner record.
fn this_process() -> usize {
    thread_local! {
        static PROCESS: std::cell::OnceCell<usize> = const { std::cell::OnceCell::new() };
    }
    // SAFETY: MyProc is set before any statement runs.
    PROCESS.with(|p| *p.get_or_init(|| process_of(unsafe { pg_sys::MyProc })))
}

fn set_runner(tenant: Option<usize>) {
    // SAFETY: plain read of a backend global.
    let pid = unsafe { pg_sys::MyProcPid };
    queue().set_runner(this_process(), pid, tenant);
}

/// This backend holds no slot any more: it runs no tenant's statement.
fn forget_runner() {
    if !holding() && KEPT.with(|k| k.borrow().is_empty()) {
        set_runner(None);
    }
}

/// A quiet tenant's statement was just admitted (`admitted`) and made quiet tenants active
/// for tenants that saw none a moment before: their statements already running move now,
/// off the CPUs left to the quiet tenants and to SCHED_BATCH, as they would have placed
/// themselves had they started now. Without it they ran beside the quiet tenant until they
/// ended, which for statements of seconds took the quiet tenant's p99 to 5-20 times its
/// p99 alone during that time (measured with scripts/bench-noisy on 2 CPUs).
fn move_crowded(admitted: usize, cap: u32, now: i64) {
    for m in shmem::unlocked(|r| queue().to_move(r, admitted, cap, now)) {
        affinity::move_other(m.pid, m.tenant, m.cpus as usize);
    }
}

/// Runs `f` under the scheduler's lock (the second lock of the ruvector tranche), then runs
/// the dispatches releases asked for meanwhile (see `ruvector_tenancy::admission`).
fn locked<R>(f: impl FnOnce() -> R) -> R {
    let r = shmem::with_lock(1, true, || {
        let r = f();
        dispatch_requested();
        r
    });
    after_unlock();
    r
}

/// Runs the requested dispatches. Caller holds the scheduler lock.
fn dispatch_requested() {
    while queue().take_dispatch_request() {
        shmem::unlocked(|r| queue().dispatch(r, capacity(), now_ms(), wake));
    }
}

/// A release that found the lock taken after its holder's last look left its dispatch to
/// whoever holds it now, or to us.
fn after_unlock() {
    while queue().dispatch_requested() {
        if shmem::try_with_lock(1, dispatch_requested).is_none() {
            // The holder looks again after it lets go.
            return;
        }
    }
}

fn capacity() -> u32 {
    // available_parallelism() reads cgroup files: once per backend, not per statement
    // (per statement it cost ~45 µs, measured with scripts/bench-tenancy).
    static CPUS: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    match gucs::max_active_statements() {
        0 => {
            4 * *CPUS.get_or_init(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get() as u32)
                    .unwrap_or(2)
            })
        }
        n => n as u32,
    }
}

thread_local! {
    /// Slots this backend holds: (tenant slot, transaction nest level).
    static HELD: RefCell<Vec<(usize, i32)>> = const { RefCell::new(Vec::new()) };
    /// Slots kept across transactions ([`keep`]), by tenant.
    static KEPT: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    /// The wait slot this backend is queued in, since when (ms), for which tenant.
    static QUEUED: RefCell<Option<(usize, i64, usize)>> = const { RefCell::new(None) };
}

/// Whether this backend already runs a statement under a slot (nested statements pass).
pub fn holding() -> bool {
    HELD.with(|h| !h.borrow().is_empty())
}

fn nest_level() -> i32 {
    // SAFETY: plain query.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

/// Sets the latch whose address a waiter queued with.
fn wake(latch: u64) {
    let latch = latch as *mut pg_sys::Latch;
    if !latch.is_null() {
        // SAFETY: the latch of a live backend waiting in the queue (it stays queued until it
        // sees itself admitted or leaves under the scheduler's lock).
        unsafe { pg_sys::SetLatch(latch) };
    }
}

fn release_one(tenant: usize) {
    // Only a queue needs a dispatch, and it never waits for the lock. A waiter that
    // enqueues after this check dispatches itself under the lock, so no wake-up is lost.
    if shmem::unlocked(|r| queue().release(r, tenant)) {
        queue().request_dispatch();
        after_unlock();
    }
}

/// Takes a token of tenant slot `tenant`'s rate limit (`id` for messages): one per statement
/// on a tenant table, nested ones included, and one per further `ruhnsw` search of a
/// statement. On refusal returns why; the caller counts, audits and raises it.
pub fn take_token(tenant: usize, id: &str) -> Result<(), Refusal> {
    if !gucs::admission_control() {
        return Ok(());
    }
    let (rate, state) = shmem::unlocked(|r| {
        let s = r.slot(tenant);
        (
            s.max_qps.load(Relaxed) as f64,
            &s.bucket as *const AtomicU64,
        )
    });
    // SAFETY: the bucket lives in shared memory for the life of the server.
    let bucket = unsafe { &*state };
    if let Admission::Limited { retry_after_ms } = rate::take(
        bucket,
        now_ms() as u64,
        rate,
        rate * gucs::rate_burst_seconds(),
    ) {
        shmem::unlocked(|r| r.slot(tenant).rate_limited.fetch_add(1, Relaxed));
        return Err(refuse(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
            "rate_limited",
            format!("tenant \"{id}\" is over its rate limit of {rate} statements per second"),
            format!("retry after {retry_after_ms} ms"),
            "Slow down, or ask an administrator to raise max_qps.",
        ));
    }
    Ok(())
}

/// Takes an execution slot for a run of a top-level statement of tenant slot `tenant`,
/// waiting in the fair queue when none is free. Returns whether a slot was taken (none when
/// admission control is off); on refusal returns why.
pub fn acquire(tenant: usize, id: &str) -> Result<bool, Refusal> {
    if !gucs::admission_control() {
        return Ok(false);
    }
    let cap = capacity();
    // SAFETY: MyProc is this backend's PGPROC in shared memory.
    let latch = unsafe { &raw mut (*pg_sys::MyProc).procLatch } as u64;
    let now = now_ms();
    if shmem::unlocked(|r| queue().try_admit(r, tenant, cap, now)) {
        set_runner(Some(tenant));
        // Only a statement admitted without waiting can mark its tenant as a quiet one.
        if shmem::unlocked(|r| queue().note_admission(r, tenant, now)) {
            move_crowded(tenant, cap, now);
        }
        place(tenant, cap, now, false);
        return Ok(admitted(tenant, 0));
    }
    let i = locked(|| shmem::unlocked(|r| queue().enqueue(r, tenant, latch, cap, now, wake)))
        .expect("one wait slot per backend");
    let started = now;
    QUEUED.with(|q| *q.borrow_mut() = Some((i, started, tenant)));
    // Sleep and wake where the statement will run, so that the wake-up does not preempt
    // other tenants.
    place(tenant, cap, started, true);
    shmem::unlocked(|r| r.slot(tenant).queued.fetch_add(1, Relaxed));
    let timeout = gucs::admission_timeout_ms() as i64;
    loop {
        if queue().is_admitted(i) {
            locked(|| queue().finish_wait(i));
            QUEUED.with(|q| *q.borrow_mut() = None);
            set_runner(Some(tenant));
            let now = now_ms();
            place(tenant, cap, now, true);
            return Ok(admitted(tenant, (now - started) * 1000));
        }
        let waited = now_ms() - started;
        let suspended = shmem::unlocked(|r| r.slot(tenant).state()) != TenantState::Active;
        if suspended || waited >= timeout {
            leave_queue();
            return Err(if suspended {
                refuse(
                    PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "suspended",
                    format!("tenant \"{id}\" is suspended"),
                    "The tenant was suspended while this statement waited for admission.".into(),
                    "An administrator can resume it with ruvector_tenant_resume().",
                )
            } else {
                refuse(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
                    "admission_timeout",
                    "the server is busy: statement not admitted in time".into(),
                    format!("retry after {} ms", timeout.clamp(100, 5000)),
                    "Retry later; ruvector.admission_timeout bounds the wait.",
                )
            });
        }
        // SAFETY: waiting on our own latch; interrupts (cancel, statement_timeout,
        // termination) are serviced right after, and error cleanup leaves the queue.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                (timeout - waited).clamp(1, 1000),
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        pgrx::check_for_interrupts!();
    }
}

/// Sets where this backend runs a statement of `tenant` (and waits for its slot, if
/// `queued`). A backlogged tenant (its statement had to queue, or it runs as many as it may:
/// `Queue::at_own_limit`) can never use more CPUs than it may run statements; while quiet
/// tenants are active (`Queue::others_active` at `now`), its backends run as SCHED_BATCH on
/// that many CPUs (never the last one), the same ones for all of them, and leave the rest to
/// the others. A statement that
/// had to queue runs as SCHED_BATCH even alone: a backlogged tenant's statements are woken
/// one after another as slots free up, and each wake-up must not preempt other tenants.
/// Everything else runs normally on every CPU (a pooled connection may have been confined
/// for another tenant before).
fn place(tenant: usize, cap: u32, now: i64, queued: bool) {
    if queue().take_moved(this_process()) {
        affinity::forget();
    }
    let crowding = shmem::unlocked(|r| queue().crowding(r, tenant, cap, now, queued));
    match crowding {
        Some(n) => affinity::confine(tenant, n as usize),
        None => affinity::unconfine(),
    }
    affinity::set_batch(crowding.is_some() || queued);
}

fn admitted(tenant: usize, waited_us: i64) -> bool {
    HELD.with(|h| h.borrow_mut().push((tenant, nest_level())));
    shmem::unlocked(|r| {
        let s = r.slot(tenant);
        s.admitted.fetch_add(1, Relaxed);
        s.wait_micros.fetch_add(waited_us.max(0) as u64, Relaxed);
    });
    true
}

/// Leaves the wait queue (error cleanup, timeout, suspension), counting the time waited. If
/// the slot was granted meanwhile, it is handed back.
fn leave_queue() {
    let Some((i, started, tenant)) = QUEUED.with(|q| q.borrow_mut().take()) else {
        return;
    };
    let waited_us = ((now_ms() - started) * 1000).max(0) as u64;
    shmem::unlocked(|r| r.slot(tenant).wait_micros.fetch_add(waited_us, Relaxed));
    if let Some(tenant) = locked(|| shmem::unlocked(|r| queue().leave(r, i))) {
        release_one(tenant);
    }
}

/// The statement that took a slot for `tenant` finished.
pub fn release(tenant: usize) {
    let removed = HELD.with(|h| {
        let mut h = h.borrow_mut();
        h.iter()
            .rposition(|(t, _)| *t == tenant)
            .map(|i| h.remove(i))
    });
    if removed.is_some() {
        forget_runner();
        release_one(tenant);
    }
}

/// Error cleanup: a (sub)transaction at `level` or below it aborted.
pub fn abort(level: Option<i32>) {
    leave_queue();
    let gone: Vec<(usize, i32)> = HELD.with(|h| {
        let mut h = h.borrow_mut();
        let (gone, kept) = h
            .drain(..)
            .partition(|(_, l)| level.is_none_or(|lv| *l >= lv));
        *h = kept;
        gone
    });
    if !gone.is_empty() {
        forget_runner();
    }
    for (tenant, _) in gone {
        release_one(tenant);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    abort(None);
    for tenant in KEPT.with(|k| std::mem::take(&mut *k.borrow_mut())) {
        release_one(tenant);
    }
    set_runner(None);
}

/// Runs this parallel worker where its leader (`leader`) runs (`affinity::follow`), and
/// records it as running the leader's tenant's statement, so that it is moved with the
/// leader's other processes (`move_crowded`).
pub fn follow(leader: *const pg_sys::PGPROC) {
    // SAFETY: the leader's PGPROC lives in shared memory; the worker is in its lock group.
    affinity::follow(unsafe { (*leader).pid });
    if let Some(tenant) = queue().runner_tenant(process_of(leader)) {
        register_exit_cleanup();
        set_runner(Some(tenant));
    }
}

/// Takes an execution slot of tenant slot `tenant` (`id` for messages) for work done on the
/// tenant's behalf across transactions, such as a migration's index builds: the work counts
/// against the tenant's `max_concurrent` and the server's limit like one of its statements.
/// The slot is kept until [`give_back`] or the process exits, not released at commit.
pub fn keep(tenant: usize, id: &str) -> Result<(), Refusal> {
    register_exit_cleanup();
    if acquire(tenant, id)? {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|(t, _)| *t == tenant) {
                h.remove(i);
            }
        });
        KEPT.with(|k| k.borrow_mut().push(tenant));
    }
    Ok(())
}

/// Gives back the slot [`keep`] took for `tenant`.
pub fn give_back(tenant: usize) {
    let kept = KEPT.with(|k| {
        let mut k = k.borrow_mut();
        k.iter().position(|&t| t == tenant).map(|i| k.remove(i))
    });
    if kept.is_some() {
        forget_runner();
        release_one(tenant);
    }
}

/// Registers backend-exit cleanup (once per backend, at first admission).
pub fn register_exit_cleanup() {
    static mut DONE: bool = false;
    // SAFETY: per-backend flag; before_shmem_exit runs while shared memory is attached.
    unsafe {
        if !DONE {
            pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0));
            DONE = true;
        }
    }
}

/// Live scheduler figures: (running, waiting, capacity).
pub fn figures() -> (u32, u32, u32) {
    let (running, waiting) = queue().figures();
    (running, waiting, capacity())
}

pg_fn! {
    /// `ruvector_admission_status()`: statements holding execution slots, statements waiting,
    /// and the server-wide limit.
    fn admission_status(fcinfo) {
        let (running, waiting, cap) = figures();
        // SAFETY: materialize-mode SRF with the three declared OUT integers.
        unsafe {
            pg_sys::InitMaterializedSRF(fcinfo, 0);
            let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
            let mut values = [pg_sys::Datum::from(running as i32), pg_sys::Datum::from(waiting as i32), pg_sys::Datum::from(cap as i32)];
            let mut nulls = [false; 3];
            pg_sys::tuplestore_putvalues((*rsinfo).setResult, (*rsinfo).setDesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        }
        pg_sys::Datum::from(0)
    }
}
