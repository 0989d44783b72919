//! Per-tenant metrics in shared memory, and the Prometheus endpoint.
//!
//! One [`TenantMetrics`] record per registry slot (a named region sized by
//! `ruvector.max_tenants`), plus server-wide `ruhnsw` counters. The statement path adds to
//! atomics only; the launcher closes every tenant's window (`ruvector.metrics_window`, a
//! minute by default: [`rotate_all`]); the
//! maintenance worker records collection counts. When `ruvector.metrics_address` is set at
//! server start, a background worker (`ruvector metrics`) serves `GET /metrics` there, built
//! by `ruvector_tenancy::exposition` from the registry and these records.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::*};
use std::time::Duration;

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use ruvector_tenancy::exposition::{self, ServerFigures, TenantFigures};
use ruvector_tenancy::metrics::TenantMetrics;
use ruvector_tenancy::registry::{TenantSlot, TenantState};

use super::shmem;
use crate::gucs;

/// Server-wide counters, in front of the tenant records.
#[repr(C, align(64))]
struct ServerCounters {
    index_searches: AtomicU64,
    index_inserts: AtomicU64,
}

static mut BASE: *mut u8 = std::ptr::null_mut();

fn bytes() -> usize {
    std::mem::size_of::<ServerCounters>()
        + gucs::max_tenants() as usize * std::mem::size_of::<TenantMetrics>()
}

/// # Safety
/// `base` points at `bytes()` zeroed (or previously initialized) shared bytes.
unsafe fn attach(base: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { BASE = base };
}

/// This module's shared memory: 256 bytes per tenant slot.
pub const REGION: super::shmem::Region = super::shmem::Region {
    name: c"ruvector tenant metrics",
    bytes,
    attach,
};

fn server() -> Option<&'static ServerCounters> {
    // SAFETY: attached at shared-memory startup (NULL when not preloaded); atomics only.
    unsafe { (BASE as *const ServerCounters).as_ref() }
}

/// The metrics record of registry slot `slot`.
fn tenant(slot: usize) -> Option<&'static TenantMetrics> {
    // SAFETY: as in server(); one record per registry slot follows the counters, and slots
    // are below ruvector.max_tenants.
    unsafe {
        let base = BASE;
        if base.is_null() || slot >= gucs::max_tenants() as usize {
            return None;
        }
        let records = base.add(std::mem::size_of::<ServerCounters>()) as *const TenantMetrics;
        Some(&*records.add(slot))
    }
}

/// A search statement of tenant slot `slot` took `us` microseconds.
pub fn observe_search(slot: usize, us: u64) {
    if let Some(m) = tenant(slot) {
        m.observe_search(us);
    }
}

/// A `ruhnsw` index scan started.
pub fn count_index_search() {
    if let Some(s) = server() {
        s.index_searches.fetch_add(1, Relaxed);
    }
}

/// A row was inserted into a `ruhnsw` index.
pub fn count_index_insert() {
    if let Some(s) = server() {
        s.index_inserts.fetch_add(1, Relaxed);
    }
}

/// Registry slot `slot` was given to a tenant afresh.
pub fn reset(slot: usize) {
    if let Some(m) = tenant(slot) {
        m.reset(crate::backend::now_ms());
    }
}

fn statements(s: &TenantSlot) -> u64 {
    [&s.searches, &s.inserts, &s.updates, &s.deletes]
        .iter()
        .map(|c| c.load(Relaxed))
        .sum()
}

/// Closes every tenant's window (the launcher, once a minute).
pub fn rotate_all(now_ms: i64) {
    shmem::unlocked(|r| {
        for n in 0..r.used() as usize {
            let s = r.slot(n);
            if let Some(m) = tenant(n) {
                m.rotate(now_ms, s.searches.load(Relaxed), statements(s));
            }
        }
    });
}

/// The last window of registry slot `slot`.
pub fn window(slot: usize) -> Option<ruvector_tenancy::metrics::Window> {
    tenant(slot)?.window()
}

/// Records each tenant's collection count and limit (the maintenance worker, from the
/// catalog of this backend's database).
pub fn set_collections(rows: &[(String, u32, u32)]) {
    for (id, count, max) in rows {
        if let Some(m) = shmem::find(id).and_then(|(slot, _)| tenant(slot)) {
            m.set_collections(*count, *max);
        }
    }
}

fn figures(names: &HashMap<u32, String>) -> (ServerFigures, Vec<TenantFigures>) {
    let (running, waiting, capacity) = super::scheduler::figures();
    let mut server = ServerFigures {
        admission_running: running,
        admission_waiting: waiting,
        admission_capacity: capacity,
        ..Default::default()
    };
    if let Some(s) = self::server() {
        server.index_searches = s.index_searches.load(Relaxed);
        server.index_inserts = s.index_inserts.load(Relaxed);
    }
    let mut tenants = Vec::new();
    shmem::unlocked(|r| {
        server.registry_capacity = r.capacity();
        server.registry_used = r.used();
        for n in 0..r.used() as usize {
            let s = r.slot(n);
            match s.state() {
                TenantState::Active => server.tenants_active += 1,
                TenantState::Suspended => server.tenants_suspended += 1,
                _ => {
                    server.tenants_deleted += 1;
                    continue;
                }
            }
            let Some(m) = tenant(n) else { continue };
            let limits = s.limits();
            let (collections, max_collections) = m.collections();
            tenants.push(TenantFigures {
                database: names
                    .get(&s.db())
                    .cloned()
                    .unwrap_or_else(|| s.db().to_string()),
                tenant: s.id(),
                vectors: s.vectors.load(Relaxed),
                max_vectors: limits.max_vectors,
                storage_bytes: s.storage_bytes.load(Relaxed),
                max_storage_bytes: limits.max_storage_bytes,
                collections,
                max_collections,
                searches: s.searches.load(Relaxed),
                inserts: s.inserts.load(Relaxed),
                updates: s.updates.load(Relaxed),
                deletes: s.deletes.load(Relaxed),
                refused: s.refused.load(Relaxed),
                admitted: s.admitted.load(Relaxed),
                rate_limited: s.rate_limited.load(Relaxed),
                queued: s.queued.load(Relaxed),
                wait_us: s.wait_micros.load(Relaxed),
                latency: m.histogram(),
                window: m.window(),
                last_access_ms: s.last_access_ms.load(Relaxed),
                integrity: super::integrity::current(n).map(|(s, l)| (s as u32, l)),
            });
        }
    });
    (server, tenants)
}

/// Registers the metrics worker when `ruvector.metrics_address` is set; from `_PG_init`.
pub fn register() {
    if gucs::metrics_address().is_none() {
        return;
    }
    BackgroundWorkerBuilder::new("ruvector metrics")
        .set_function("ruvector_metrics_main")
        .set_library("ruvector")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

/// Names of the databases that have tenants in the registry (read in a transaction of their
/// own; the worker is connected to no database, pg_database is shared).
fn database_names(known: &mut HashMap<u32, String>) {
    let mut missing: Vec<u32> = shmem::unlocked(|r| {
        (0..r.used() as usize)
            .map(|n| r.slot(n).db())
            .filter(|db| *db != 0 && !known.contains_key(db))
            .collect()
    });
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return;
    }
    let found: Vec<(u32, String)> = BackgroundWorker::transaction(|| {
        missing
            .into_iter()
            .filter_map(|db| {
                // SAFETY: a syscache lookup of a shared catalog inside a transaction; NULL
                // when the database is gone.
                let name = unsafe { pg_sys::get_database_name(pg_sys::Oid::from(db)) };
                if name.is_null() {
                    return None;
                }
                // SAFETY: a palloc'd NUL-terminated name.
                let name = unsafe { CStr::from_ptr(name) };
                Some((db, name.to_string_lossy().into_owned()))
            })
            .collect()
    });
    known.extend(found);
}

/// Responses being written by their own threads (a slow client never holds the worker).
static WRITING: AtomicUsize = AtomicUsize::new(0);
const MAX_WRITING: usize = 16;

fn respond(request: tiny_http::Request, status: u16, content_type: &str, body: String) {
    if WRITING.fetch_add(1, AcqRel) >= MAX_WRITING {
        WRITING.fetch_sub(1, AcqRel);
        return; // dropping the request closes its connection
    }
    let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("ASCII");
    let response = tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(header);
    // The thread only writes bytes to a socket: it never calls into PostgreSQL.
    let spawned = std::thread::Builder::new()
        .name("ruvector metrics response".into())
        .spawn(move || {
            let _ = request.respond(response);
            WRITING.fetch_sub(1, AcqRel);
        });
    if spawned.is_err() {
        WRITING.fetch_sub(1, AcqRel);
    }
}

fn handle(request: tiny_http::Request, names: &mut HashMap<u32, String>) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let method = request.method().clone();
    const TEXT: &str = "text/plain; charset=utf-8";
    if path != "/metrics" {
        respond(
            request,
            404,
            TEXT,
            "not found: the metrics are at /metrics\n".into(),
        );
        return;
    }
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        respond(request, 405, TEXT, "method not allowed: use GET\n".into());
        return;
    }
    database_names(names);
    let (server, tenants) = figures(names);
    let body = exposition::render(&server, tenants, gucs::metrics_max_tenants());
    respond(
        request,
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        body,
    );
}

#[pgrx::pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ruvector_metrics_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    let address = gucs::metrics_address().unwrap_or_default();
    let server = match tiny_http::Server::http(address.as_str()) {
        Ok(s) => s,
        Err(e) => {
            // Restarted by the postmaster after 10 s: the port may be free by then.
            pgrx::warning!("ruvector: the metrics endpoint cannot listen on {address}: {e}");
            return;
        }
    };
    pgrx::log!("ruvector: metrics at http://{address}/metrics");
    let mut names = HashMap::new();
    while BackgroundWorker::wait_latch(Some(Duration::ZERO)) {
        if BackgroundWorker::sighup_received() {
            // SAFETY: the standard reload of a worker's configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        match server.recv_timeout(Duration::from_millis(250)) {
            Ok(Some(request)) => handle(request, &mut names),
            Ok(None) => {}
            Err(e) => pgrx::warning!("ruvector: metrics endpoint: {e}"),
        }
    }
}
