//! Background maintenance.
//!
//! A launcher (started with the server) wakes every second, or at once when a backend queues
//! an audit record, and starts a short-lived maintenance worker for each database whose
//! tenants are loaded and that has work: queued refusals to write to the audit log, soft-
//! deleted tenants due for purging, and tenant counters to copy into `ruvector.tenants`.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU32, Ordering::*};
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::spi::Spi;

use super::{audit, integrity, metrics, shmem};

/// Seconds between full maintenance runs of a database (purge, counters, erasure). Queued
/// audit records are written sooner: a backend that queues one wakes the launcher, which
/// starts an audit-only run.
const INTERVAL_SECS: i64 = 10;
/// Worker argument bit: run the full maintenance, not only the audit queue.
const FULL: usize = 1 << 16;

/// Launcher state in shared memory.
#[repr(C)]
pub struct Launcher {
    pid: AtomicI32,
    /// A backend queued work: start workers now.
    poked: AtomicBool,
    /// Per database slot (same order as the registry's loaded list): a worker runs, and when
    /// the last run started.
    running: [AtomicU32; 64],
    last_run: [AtomicI64; 64],
    /// Per database slot: the database whose migration worker runs (0: none).
    migrating: [AtomicU32; 64],
}

static mut LAUNCHER: *mut Launcher = std::ptr::null_mut();

pub fn launcher_bytes() -> usize {
    std::mem::size_of::<Launcher>()
}

/// # Safety
/// `base` points at `launcher_bytes()` shared bytes, zeroed on first start.
pub unsafe fn attach(base: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { LAUNCHER = base as *mut Launcher };
}

/// This module's shared memory.
pub const REGION: super::shmem::Region = super::shmem::Region {
    name: c"ruvector maintenance launcher",
    bytes: launcher_bytes,
    attach,
};

fn launcher() -> Option<&'static Launcher> {
    // SAFETY: set in the postmaster at shared-memory startup; all fields are atomics.
    unsafe { LAUNCHER.as_ref() }
}

/// Asks the launcher to run maintenance now (for example to write queued audit records).
pub fn wake_launcher() {
    if let Some(l) = launcher() {
        l.poked.store(true, Release);
        let pid = l.pid.load(Acquire);
        if pid > 0 {
            // SAFETY: SIGUSR1 on the launcher process sets its latch (pgrx's handler).
            unsafe { libc_kill(pid) };
        }
    }
}

unsafe fn libc_kill(pid: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    /// SIGUSR1 on Linux.
    const SIGUSR1: i32 = 10;
    // SAFETY: sending SIGUSR1 to a process we know; failure is harmless.
    unsafe {
        kill(pid, SIGUSR1);
    }
}

pub fn register() {
    audit::on_queued(wake_launcher);
    BackgroundWorkerBuilder::new("ruvector launcher")
        .set_function("ruvector_launcher_main")
        .set_library("ruvector")
        .enable_shmem_access(None)
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pgrx::pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ruvector_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let l = launcher().expect("launcher shared memory");
    l.pid.store(std::process::id() as i32, Release);
    let mut rotated_at = 0;
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        if BackgroundWorker::sigterm_received() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the standard reload of a worker's configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let now_ms = crate::backend::now_ms();
        if now_ms - rotated_at >= crate::gucs::metrics_window_ms() {
            metrics::rotate_all(now_ms);
            rotated_at = now_ms;
        }
        let poked = l.poked.swap(false, AcqRel);
        let now = crate::backend::now_ms() / 1000;
        for (i, db) in shmem::loaded_databases().into_iter().enumerate() {
            if db == 0 || l.running[i].load(Acquire) != 0 {
                continue;
            }
            let full = now - l.last_run[i].load(Acquire) >= INTERVAL_SECS;
            if !poked && !full {
                continue;
            }
            l.running[i].store(db, Release);
            if full {
                l.last_run[i].store(now, Release);
            }
            if !start_worker(
                "ruvector maintenance",
                "ruvector_maintenance_main",
                i | if full { FULL } else { 0 },
            ) {
                l.running[i].store(0, Release);
            }
        }
    }
    l.pid.store(0, Release);
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn worker_done(_code: i32, arg: pg_sys::Datum) {
    let (db, i) = ((arg.value() as u64 >> 32) as u32, arg.value() & 0xffff_ffff);
    // Only if the position still belongs to this worker's database: it may have been dropped
    // and the position given to another database meanwhile.
    if let Some(running) = launcher().and_then(|l| l.running.get(i)) {
        let _ = running.compare_exchange(db, 0, AcqRel, Relaxed);
    }
}

/// Position `i` of the loaded databases has no maintenance worker (any more): its worker
/// ended, or its database was dropped.
pub fn forget_position(i: usize) {
    if let Some(l) = launcher() {
        if let Some(running) = l.running.get(i) {
            running.store(0, Release);
        }
    }
}

#[pgrx::pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ruvector_maintenance_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let (i, full) = (arg.value() & (FULL - 1), arg.value() & FULL != 0);
    let l = launcher().expect("launcher shared memory");
    let db = l.running[i].load(Acquire);
    // However the worker ends (a FATAL error while connecting to a database dropped since the
    // launcher chose it ends the process without unwinding), its position is free again.
    // SAFETY: registered once in this short-lived process; runs while shared memory is
    // attached.
    unsafe {
        pg_sys::before_shmem_exit(
            Some(worker_done),
            pg_sys::Datum::from((u64::from(db) << 32) | i as u64),
        )
    };
    // Maintenance is background work: the tenants' own statements take the CPUs first.
    super::affinity::background();
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    let installed = BackgroundWorker::transaction(|| {
        Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'ruvector')",
        )
        .ok()
        .flatten()
        .unwrap_or(false)
    });
    if !installed {
        return;
    }
    // Queued refusals first, in a transaction of their own, so a failure of the rest cannot
    // lose them.
    BackgroundWorker::transaction(|| {
        audit::drain();
    });
    // Migrations between isolation levels: those the policy calls for (on full runs), and a
    // migration worker for any waiting.
    if full {
        BackgroundWorker::transaction(|| {
            Spi::run("SELECT ruvector._apply_isolation_policy()")
                .expect("ruvector._apply_isolation_policy()")
        });
    }
    let waiting = BackgroundWorker::transaction(|| {
        Spi::get_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM ruvector.tenant_migrations WHERE phase NOT IN ('done', 'failed'))",
        )
        .ok()
        .flatten()
        .unwrap_or(false)
    });
    if waiting {
        start_migration_worker(i, db);
    }
    if !full {
        return;
    }
    // Purge soft-deleted tenants whose delay has passed, and refresh the counters.
    BackgroundWorker::transaction(|| {
        Spi::run("SELECT ruvector._maintenance()").expect("ruvector._maintenance()");
        metrics::set_collections(&collections());
    });
    // Integrity samples of the tenants that are due, within a twentieth of the run interval.
    BackgroundWorker::transaction(|| integrity::sample_due(INTERVAL_SECS * 1000 / 20));
    erase();
}

/// Starts the migration worker of the database at position `i` (`db`) unless it runs.
fn start_migration_worker(i: usize, db: u32) {
    let l = launcher().expect("launcher shared memory");
    if l.migrating[i]
        .compare_exchange(0, db, AcqRel, Acquire)
        .is_err()
    {
        return;
    }
    if !start_worker("ruvector migration", "ruvector_migration_main", i) {
        l.migrating[i].store(0, Release);
    }
}

/// Starts a short-lived worker of a database running `function` with `arg`, connected
/// through SPI, not restarted when it ends; whether it started.
fn start_worker(name: &str, function: &str, arg: usize) -> bool {
    BackgroundWorkerBuilder::new(name)
        .set_function(function)
        .set_library("ruvector")
        .set_argument(Some(pg_sys::Datum::from(arg)))
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .load_dynamic()
        .is_ok()
}

/// The database of the migration worker at position `i`.
pub fn migration_database(i: usize) -> u32 {
    launcher().map_or(0, |l| l.migrating[i].load(Acquire))
}

/// The migration worker at position `i` (of database `db`) ended.
pub fn migration_done(i: usize, db: u32) {
    if let Some(m) = launcher().and_then(|l| l.migrating.get(i)) {
        let _ = m.compare_exchange(db, 0, AcqRel, Relaxed);
    }
}

/// Every live tenant's collections and collection limit (`u32::MAX`: none).
fn collections() -> Vec<(String, u32, u32)> {
    Spi::connect(|client| {
        client
            .select(
                "SELECT t.id, count(c.id)::int4, coalesce(t.max_collections, -1) \
                 FROM ruvector.tenants t LEFT JOIN ruvector.collections c ON c.tenant_id = t.id \
                 WHERE t.deleted_at IS NULL GROUP BY t.id",
                None,
                &[],
            )
            .map(|rows| {
                rows.filter_map(|r| {
                    Some((
                        r.get::<String>(1).ok()??,
                        r.get::<i32>(2).ok()?? as u32,
                        r.get::<i32>(3).ok()?? as u32,
                    ))
                })
                .collect()
            })
            .unwrap_or_default()
    })
}

/// The oldest transaction id any snapshot, transaction, prepared transaction or replication
/// slot may still need: VACUUM cannot remove rows deleted by it or later.
const HORIZON: &str = "SELECT x::text FROM ( \
    SELECT backend_xmin AS x FROM pg_stat_activity WHERE backend_xmin IS NOT NULL \
    UNION ALL SELECT backend_xid FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
    UNION ALL SELECT transaction FROM pg_prepared_xacts \
    UNION ALL SELECT xmin FROM pg_replication_slots WHERE xmin IS NOT NULL \
    UNION ALL SELECT xid(pg_current_xact_id())) s ORDER BY age(x) DESC LIMIT 1";

/// VACUUMs tables holding deleted tenants' dead rows, then records the erasure of every
/// deletion that VACUUM could remove: those older than the horizon taken before it ran.
fn erase() {
    let pending: Vec<(String, String)> = BackgroundWorker::transaction(|| {
        let horizon = Spi::get_one::<String>(HORIZON)
            .ok()
            .flatten()
            .unwrap_or_default();
        Spi::connect(|client| {
            client
                .select(
                    "SELECT DISTINCT relid::text FROM ruvector.tenant_erasures \
                     WHERE vacuumed_at IS NULL AND to_regclass(relid::text) IS NOT NULL",
                    None,
                    &[],
                )
                .map(|rows| {
                    rows.map(|r| {
                        (
                            r.get::<String>(1).ok().flatten().unwrap_or_default(),
                            horizon.clone(),
                        )
                    })
                    .collect()
                })
                .unwrap_or_default()
        })
    });
    for (rel, horizon) in pending {
        vacuum(&rel);
        BackgroundWorker::transaction(|| {
            Spi::run_with_args(
                "UPDATE ruvector.tenant_erasures SET vacuumed_at = now() \
                 WHERE relid = $1::regclass AND vacuumed_at IS NULL \
                 AND age(xid(delete_xid)) > age($2::xid)",
                &[rel.as_str().into(), horizon.into()],
            )
            .expect("recording erasures");
        });
    }
}

/// Runs `VACUUM <rel>` as a top-level command, as a session would.
fn vacuum(rel: &str) {
    run_top_level(&format!("VACUUM {rel}"));
}

/// Runs `sql` (one or more statements) as a client's simple query would, each at top level
/// and outside a transaction block: the form that commands managing their own transactions
/// need (VACUUM, CREATE INDEX CONCURRENTLY, REINDEX CONCURRENTLY, DROP INDEX CONCURRENTLY).
/// Starts and commits its transaction; an error propagates with the transaction still to be
/// aborted by the caller.
pub fn run_top_level(sql: &str) {
    let text = std::ffi::CString::new(sql).expect("no NUL in a statement");
    // SAFETY: the sequence of PostgreSQL's simple-query protocol: parse, analyze and plan in
    // a memory context that outlives the transactions such a command commits on its way
    // (its portal is active, so those commits leave it alone), run the portal at top level
    // without output, drop it, commit.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        let context = pg_sys::AllocSetContextCreateExtended(
            pg_sys::TopMemoryContext,
            c"ruvector top-level statement".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        pg_sys::MemoryContextSwitchTo(context);
        for raw in crate::fmgr::list_ptrs(pg_sys::pg_parse_query(text.as_ptr())) {
            let raw = raw as *mut pg_sys::RawStmt;
            let tag = pg_sys::CreateCommandTag((*raw).stmt);
            let queries = pg_sys::pg_analyze_and_rewrite_fixedparams(
                raw,
                text.as_ptr(),
                std::ptr::null(),
                0,
                std::ptr::null_mut(),
            );
            let plans = pg_sys::pg_plan_queries(
                queries,
                text.as_ptr(),
                pg_sys::CURSOR_OPT_PARALLEL_OK as i32,
                std::ptr::null_mut(),
            );
            let portal = pg_sys::CreatePortal(c"".as_ptr(), true, true);
            (*portal).visible = false;
            pg_sys::PortalDefineQuery(
                portal,
                std::ptr::null(),
                text.as_ptr(),
                tag,
                plans,
                std::ptr::null_mut(),
            );
            pg_sys::PortalStart(portal, std::ptr::null_mut(), 0, std::ptr::null_mut());
            let dest = pg_sys::CreateDestReceiver(pg_sys::CommandDest::DestNone);
            #[cfg(feature = "pg15")]
            pg_sys::PortalRun(
                portal,
                std::ffi::c_long::MAX,
                true,
                true,
                dest,
                dest,
                std::ptr::null_mut(),
            );
            #[cfg(feature = "pg18")]
            pg_sys::PortalRun(
                portal,
                std::ffi::c_long::MAX,
                true,
                dest,
                dest,
                std::ptr::null_mut(),
            );
            (*dest).rDestroy.expect("rDestroy")(dest);
            pg_sys::PortalDrop(portal, false);
            pg_sys::CommandCounterIncrement();
            pg_sys::MemoryContextSwitchTo(context);
        }
        pg_sys::CommitTransactionCommand();
        pg_sys::MemoryContextDelete(context);
    }
}
