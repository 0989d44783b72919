//! Per-tenant integrity: sampling λ_cut from the tenant's own `ruhnsw` graphs, the state
//! machine in shared memory, events, and the gate on the tenant's statements.
//!
//! A sample reads, for every tenant-keyed `ruhnsw` index of a registered tenant table, the
//! tenant's graph (`ruvector_core::hnsw::inspect::Snapshot` through the routing seam), marks
//! the nodes whose rows are no longer visible (deleted, not yet vacuumed) as dead, contracts
//! it (`ruvector_core::hnsw::contract`) and takes the lowest λ_cut over the indexes. A tenant
//! whose graphs are all at the exact-scan size (or who has none) has no graph to cut: its
//! λ_cut is 1 and its state normal. The state machine (`ruvector_tenancy::integrity`) lives in
//! a shared-memory record per registry slot, so the maintenance worker's samples, a manual
//! sample and the gate in every backend see one state.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::*};

use pgrx::pg_sys;
use pgrx::spi::Spi;
use pgrx::PgSqlErrorCode;
use ruvector_core::hnsw::contract::contract;
use ruvector_core::hnsw::inspect::Snapshot;
use ruvector_core::hnsw::{GraphStore, IdSet};
use ruvector_tenancy::atomic_text;
use ruvector_tenancy::integrity::{self, Actions, Decision, Hysteresis, Machine, State};

use super::statement::Operation;
use super::{catalog, shmem};
use crate::errors::{refusal, Refusal};
use crate::ruhnsw::route::{self, Want};
use crate::{gucs, ruhnsw};

/// Regions of a contracted graph at most (Stoer-Wagner is cubic in them).
const MAX_REGIONS: usize = 256;

/// One tenant's integrity record.
#[repr(C, align(64))]
struct Record {
    /// A sample is being applied (compare-and-swap 0 → 1).
    busy: AtomicU32,
    /// `Machine::state` + 1; 0 = never sampled.
    state: AtomicU32,
    below_high: AtomicU32,
    below_low: AtomicU32,
    restore_since_ms: AtomicI64,
    changed_at_ms: AtomicI64,
    lambda_bits: AtomicU64,
    sampled_at_ms: AtomicI64,
    /// Override: state + 1 (0 = none) until a time.
    override_state: AtomicU32,
    override_until_ms: AtomicI64,
    /// Statements the gate throttled a share of.
    ticket: AtomicU64,
    /// The policy's actions, packed ([`Actions::pack`]).
    actions: [AtomicU64; 2],
    /// The policy's sampling interval.
    interval_ms: AtomicI64,
    /// The policy's name (its first 24 bytes), for messages.
    policy: [AtomicU64; 3],
}

const _: () = assert!(std::mem::size_of::<Record>() == 128);

static mut BASE: *mut u8 = std::ptr::null_mut();

fn bytes() -> usize {
    gucs::max_tenants() as usize * std::mem::size_of::<Record>()
}

/// # Safety
/// `base` points at `bytes()` zeroed (or previously initialized) shared bytes.
unsafe fn attach(base: *mut u8) {
    // SAFETY: guaranteed by the caller.
    unsafe { BASE = base };
}

/// This module's shared memory: 128 bytes per tenant slot.
pub const REGION: super::shmem::Region = super::shmem::Region {
    name: c"ruvector tenant integrity",
    bytes,
    attach,
};

fn record(slot: usize) -> Option<&'static Record> {
    // SAFETY: attached at shared-memory startup (NULL when not preloaded); one record per
    // registry slot, atomics only.
    unsafe {
        let base = BASE;
        if base.is_null() || slot >= gucs::max_tenants() as usize {
            return None;
        }
        Some(&*(base as *const Record).add(slot))
    }
}

/// Registry slot `slot` was given to a tenant afresh.
pub fn reset(slot: usize) {
    if let Some(r) = record(slot) {
        for a in [&r.state, &r.below_high, &r.below_low, &r.override_state] {
            a.store(0, Relaxed);
        }
        for a in [
            &r.restore_since_ms,
            &r.changed_at_ms,
            &r.sampled_at_ms,
            &r.override_until_ms,
            &r.interval_ms,
        ] {
            a.store(0, Relaxed);
        }
        for a in r.actions.iter().chain(&r.policy) {
            a.store(0, Relaxed);
        }
    }
}

/// A tenant's integrity as SQL and metrics report it: the state in force (an override
/// included) and the last λ_cut; `None` before the first sample.
pub fn current(slot: usize) -> Option<(State, f64)> {
    let r = record(slot)?;
    let s = r.state.load(Acquire);
    if s == 0 {
        return None;
    }
    let lambda = f64::from_bits(r.lambda_bits.load(Relaxed));
    Some((state_of(r, crate::backend::now_ms()), lambda))
}

/// The override in force, if any.
fn effective(r: &Record, now_ms: i64) -> Option<State> {
    let o = r.override_state.load(Acquire);
    (o != 0 && now_ms < r.override_until_ms.load(Acquire)).then(|| State::from_u32(o - 1))
}

fn state_of(r: &Record, now_ms: i64) -> State {
    effective(r, now_ms).unwrap_or_else(|| State::from_u32(r.state.load(Acquire).saturating_sub(1)))
}

/// A tenant's policy, as read from `ruvector.integrity_policies`.
struct Policy {
    name: String,
    hysteresis: Hysteresis,
    actions: Actions,
    interval_ms: i64,
}

/// The policy of tenant `id`: its own newest row, else the one `tenants.integrity_policy_id`
/// names, else 'standard'. JSON fields missing from a row take the 'standard' values.
fn policy(id: &str) -> Policy {
    const Q: &str = "SELECT p.name, p.threshold_high::float8, p.threshold_low::float8, \
        coalesce((p.hysteresis->>'degrade_samples')::int, 3), \
        coalesce((p.hysteresis->>'critical_samples')::int, 2), \
        coalesce((p.hysteresis->>'restore_threshold_offset')::float8, 0.1), \
        coalesce((p.hysteresis->>'restore_hold_seconds')::float8, 300), \
        coalesce((p.hysteresis->>'cooldown_after_transition_seconds')::float8, 60), \
        p.sample_interval_secs, \
        (p.actions->>'allow_reads')::bool, (p.actions->>'allow_single_insert')::bool, \
        (p.actions->>'allow_bulk_insert')::bool, (p.actions->>'allow_delete')::bool, \
        (p.actions->>'allow_update')::bool, (p.actions->>'allow_index_rewire')::bool, \
        (p.actions->>'throttle_inserts_pct')::int, (p.actions->>'throttle_searches_pct')::int, \
        (p.actions->>'max_concurrent_searches')::int, (p.actions->>'max_insert_batch_size')::int8 \
        FROM ruvector.integrity_policies p \
        WHERE p.tenant_id = $1 \
           OR p.id = (SELECT integrity_policy_id FROM ruvector.tenants WHERE id = $1) \
           OR (p.tenant_id IS NULL AND p.name = 'standard') \
        ORDER BY (p.tenant_id IS NOT NULL) DESC, \
                 (p.id = (SELECT integrity_policy_id FROM ruvector.tenants WHERE id = $1)) DESC NULLS LAST, \
                 p.id DESC LIMIT 1";
    let standard = Policy {
        name: "standard".into(),
        hysteresis: Hysteresis::default(),
        actions: Actions::default(),
        interval_ms: 60_000,
    };
    catalog::as_superuser(|| {
        Spi::connect(|client| {
            let rows = client.select(Q, Some(1), &[id.into()]).ok()?;
            let row = rows.into_iter().next()?;
            let f = |n: usize| row.get::<f64>(n).ok().flatten();
            let i = |n: usize| row.get::<i32>(n).ok().flatten();
            let b = |n: usize| row.get::<bool>(n).ok().flatten();
            let pct = |n: usize| i(n).map(|v| v.clamp(0, 100) as u8);
            Some(Policy {
                name: row.get::<String>(1).ok().flatten()?,
                hysteresis: Hysteresis {
                    threshold_high: f(2)?,
                    threshold_low: f(3)?,
                    degrade_samples: i(4)?.max(1) as u32,
                    critical_samples: i(5)?.max(1) as u32,
                    restore_threshold_offset: f(6)?,
                    restore_hold_ms: (f(7)? * 1000.0) as i64,
                    cooldown_ms: (f(8)? * 1000.0) as i64,
                },
                interval_ms: i64::from(i(9)?) * 1000,
                actions: Actions {
                    allow_reads: b(10),
                    allow_single_insert: b(11),
                    allow_bulk_insert: b(12),
                    allow_delete: b(13),
                    allow_update: b(14),
                    allow_index_rewire: b(15),
                    throttle_inserts_pct: pct(16),
                    throttle_searches_pct: pct(17),
                    max_concurrent_searches: i(18).map(|v| v.max(0) as u32),
                    max_insert_batch_size: row
                        .get::<i64>(19)
                        .ok()
                        .flatten()
                        .map(|v| v.max(0) as u64),
                },
            })
        })
    })
    .unwrap_or(standard)
}

/// Tenant-keyed `ruhnsw` indexes of registered tenant tables.
fn tenant_indexes() -> Vec<pg_sys::Oid> {
    catalog::as_superuser(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT i.indexrelid FROM ruvector.tenant_tables t \
                     JOIN pg_index i ON i.indrelid = t.relid \
                     JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam \
                     WHERE a.amname = 'ruhnsw' AND i.indnkeyatts >= 2 AND i.indisvalid",
                    None,
                    &[],
                )
                .map(|rows| {
                    rows.filter_map(|r| r.get::<pg_sys::Oid>(1).ok().flatten())
                        .collect()
                })
                .unwrap_or_default()
        })
    })
}

/// Heap rows still visible to a fresh snapshot, checked by TID.
struct Visibility {
    heap: pg_sys::Relation,
    fetch: *mut pg_sys::IndexFetchTableData,
    slot: *mut pg_sys::TupleTableSlot,
    snapshot: pg_sys::Snapshot,
}

impl Visibility {
    fn new(index: pg_sys::Relation) -> Visibility {
        // SAFETY: the index's heap, opened with the index's lock level; the table AM's fetch
        // callbacks and a slot of the heap's type; a fresh MVCC snapshot of this transaction.
        unsafe {
            let heap = pg_sys::table_open(
                (*(*index).rd_index).indrelid,
                pg_sys::AccessShareLock as i32,
            );
            let am = (*heap).rd_tableam;
            let fetch = (*am).index_fetch_begin.expect("index_fetch_begin")(heap);
            let slot = pg_sys::table_slot_create(heap, std::ptr::null_mut());
            let snapshot = pg_sys::RegisterSnapshot(pg_sys::GetLatestSnapshot());
            Visibility {
                heap,
                fetch,
                slot,
                snapshot,
            }
        }
    }

    fn visible(&self, payload: u64) -> bool {
        let mut tid = pg_sys::ItemPointerData::default();
        ruhnsw::set_heap_tid(&mut tid, payload);
        let (mut call_again, mut all_dead) = (false, false);
        // SAFETY: the fetch state, snapshot and slot made in new(); a TID of this heap.
        unsafe {
            let am = (*self.heap).rd_tableam;
            let found = (*am).index_fetch_tuple.expect("index_fetch_tuple")(
                self.fetch,
                &mut tid,
                self.snapshot,
                self.slot,
                &mut call_again,
                &mut all_dead,
            );
            pg_sys::ExecClearTuple(self.slot);
            found
        }
    }
}

impl Drop for Visibility {
    fn drop(&mut self) {
        // SAFETY: releases what new() took, once.
        unsafe {
            (*(*self.heap).rd_tableam)
                .index_fetch_end
                .expect("index_fetch_end")(self.fetch);
            pg_sys::ExecDropSingleTupleTableSlot(self.slot);
            pg_sys::UnregisterSnapshot(self.snapshot);
            pg_sys::table_close(self.heap, pg_sys::NoLock as i32);
        }
    }
}

/// λ_cut of tenant `id` over its graphs, and the contracted graph of the lowest one; `None`
/// when it has no graph beyond the exact-scan size.
fn measure(id: &str) -> Option<(f64, ruvector_core::hnsw::contract::Contraction)> {
    let mut worst: Option<(f64, ruvector_core::hnsw::contract::Contraction)> = None;
    for oid in tenant_indexes() {
        // SAFETY: an index of a registered table, opened for reading; closed below.
        let index = unsafe { pg_sys::index_open(oid, pg_sys::AccessShareLock as i32) };
        let measured = (|| {
            let place = route::tenant(index, id.as_bytes(), Want::Search)?;
            if place.dedicated() {
                place.close(); // the dedicated index is measured as an index of its own
                return None;
            }
            let graph = route::open(place.rel)?;
            let live = place.entry.as_ref().map_or(0, |e| e.nodes as usize);
            let dims = graph.store().layout().dims;
            if graph
                .params()
                .searches_exactly(live, dims, crate::gucs::ef_search())
            {
                return None; // searched exactly: no graph to cut
            }
            let store = graph.store();
            let snapshot = Snapshot::of_tenant(store, place.tenant);
            let heap = Visibility::new(index);
            let mut dead = IdSet::default();
            store.for_each_tenant_vector(place.tenant, |node, _, payload, _| {
                if !heap.visible(payload) {
                    dead.insert(node);
                }
            });
            drop(heap);
            contract(&snapshot, |n| dead.contains(&n), MAX_REGIONS)
        })();
        // SAFETY: closes what was opened above, keeping the lock to the end of the transaction.
        unsafe { pg_sys::index_close(index, pg_sys::NoLock as i32) };
        if let Some(c) = measured {
            if worst.as_ref().is_none_or(|(l, _)| c.lambda < *l) {
                worst = Some((c.lambda, c));
            }
        }
    }
    worst
}

/// Samples tenant `id` now and applies the sample; returns the state in force and λ_cut.
/// `None` when the tenant is unknown or another sample of it is being applied.
pub fn sample(id: &str) -> Option<(State, f64)> {
    let (slot, _) = shmem::find(id)?;
    let r = record(slot)?;
    let policy = policy(id);
    let measured = measure(id);
    let lambda = measured.as_ref().map_or(1.0, |(l, _)| *l);
    if r.busy.compare_exchange(0, 1, Acquire, Relaxed).is_err() {
        return None;
    }
    let now = crate::backend::now_ms();
    let mut m = Machine {
        state: match r.state.load(Relaxed) {
            0 => None,
            s => Some(State::from_u32(s - 1)),
        },
        below_high: r.below_high.load(Relaxed),
        below_low: r.below_low.load(Relaxed),
        restore_since_ms: r.restore_since_ms.load(Relaxed),
        changed_at_ms: r.changed_at_ms.load(Relaxed),
    };
    let transition = m.sample(lambda, now, &policy.hysteresis);
    r.below_high.store(m.below_high, Relaxed);
    r.below_low.store(m.below_low, Relaxed);
    r.restore_since_ms.store(m.restore_since_ms, Relaxed);
    r.changed_at_ms.store(m.changed_at_ms, Relaxed);
    r.lambda_bits.store(lambda.to_bits(), Relaxed);
    r.sampled_at_ms.store(now, Relaxed);
    r.interval_ms.store(policy.interval_ms, Relaxed);
    let (a, b) = policy.actions.pack();
    r.actions[0].store(a, Relaxed);
    r.actions[1].store(b, Relaxed);
    atomic_text::store(&r.policy, &policy.name);
    r.state.store(m.state() as u32 + 1, Release);
    r.busy.store(0, Release);
    catalog::as_superuser(|| {
        if let Some((_, c)) = &measured {
            write_contracted(id, c);
        }
        if let Some(t) = transition {
            event(
                id,
                t.from.name(),
                t.to.name(),
                Some(lambda),
                &format!("{} (policy {})", t.reason, policy.name),
            );
        }
    });
    Some((state_of(r, now), lambda))
}

fn event(id: &str, from: &str, to: &str, lambda: Option<f64>, reason: &str) {
    Spi::run_with_args(
        "INSERT INTO ruvector.integrity_events (tenant_id, from_state, to_state, lambda_cut, reason) \
         VALUES ($1, $2, $3, $4::real, $5)",
        &[id.into(), from.into(), to.into(), lambda.into(), reason.into()],
    )
    .expect("writing an integrity event");
}

fn write_contracted(id: &str, c: &ruvector_core::hnsw::contract::Contraction) {
    let mut nodes = Vec::with_capacity(c.graph.len());
    for r in 0..c.graph.len() {
        let edges: Vec<String> = (0..c.graph.len())
            .filter(|&b| b != r && c.graph.weight(r, b) > 0.0)
            .map(|b| format!("[{b},{:.3}]", c.graph.weight(r, b)))
            .collect();
        nodes.push(format!(
            "({}, '{{\"nodes\": {}, \"links\": {}, \"dead_links\": {}}}', '[{}]')",
            r,
            c.sizes[r],
            c.links[r],
            c.dead_links[r],
            edges.join(",")
        ));
    }
    // One writer per tenant at a time (a sample asked for while the maintenance worker
    // samples the same tenant): the second waits for the first to commit, then its DELETE
    // sees the first's rows and replaces them instead of colliding with them (23505).
    Spi::run_with_args(
        "SELECT pg_advisory_xact_lock(hashtext('ruvector.tenant_contracted_graph'), hashtext($1))",
        &[id.into()],
    )
    .expect("locking the tenant's contracted graph");
    Spi::run_with_args(
        "DELETE FROM ruvector.tenant_contracted_graph WHERE tenant_id = $1",
        &[id.into()],
    )
    .expect("clearing the contracted graph");
    if !nodes.is_empty() {
        Spi::run_with_args(
            &format!(
                "INSERT INTO ruvector.tenant_contracted_graph (tenant_id, collection_id, node_type, node_id, node_data, edges) \
                 SELECT $1, 0, 'region', v.n, v.d::jsonb, v.e::jsonb FROM (VALUES {}) v(n, d, e)",
                nodes.join(", ")
            ),
            &[id.into()],
        )
        .expect("writing the contracted graph");
    }
}

/// Samples the tenants of this database that are due (the maintenance worker), oldest
/// sample first, for at most `budget_ms`.
pub fn sample_due(budget_ms: i64) {
    let started = crate::backend::now_ms();
    let ids: Vec<String> = Spi::connect(|client| {
        client
            .select(
                "SELECT id FROM ruvector.tenants WHERE deleted_at IS NULL AND suspended_at IS NULL \
                 AND coalesce(integrity_enabled, true)",
                None,
                &[],
            )
            .map(|rows| rows.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
            .unwrap_or_default()
    });
    let mut due: Vec<(i64, String)> = ids
        .into_iter()
        .filter_map(|id| {
            let (slot, _) = shmem::find(&id)?;
            let r = record(slot)?;
            let at = r.sampled_at_ms.load(Relaxed);
            let interval = match r.interval_ms.load(Relaxed) {
                0 => 60_000,
                i => i,
            };
            (at == 0 || started - at >= interval).then_some((at, id))
        })
        .collect();
    due.sort();
    for (_, id) in due {
        if crate::backend::now_ms() - started > budget_ms {
            break;
        }
        sample(&id);
    }
}

/// Sets (or with `until_ms` in the past, lifts) an operator's override of tenant `id`.
pub fn set_override(id: &str, state: State, until_ms: i64) -> bool {
    let Some(r) = shmem::find(id).and_then(|(slot, _)| record(slot)) else {
        return false;
    };
    r.override_until_ms.store(until_ms, Release);
    r.override_state.store(state as u32 + 1, Release);
    if r.state.load(Acquire) == 0 {
        // Never sampled: the override is the first state reported.
        r.state.store(State::Normal as u32 + 1, Release);
        r.lambda_bits.store(1f64.to_bits(), Relaxed);
    }
    true
}

/// The gate: what tenant slot `slot` (`id` for messages) may do with a statement of
/// operation `op` writing or reading about `rows()` rows (asked only outside the normal
/// state).
pub fn gate(
    slot: usize,
    id: &str,
    op: Operation,
    rows: impl FnOnce() -> u64,
) -> Result<(), Refusal> {
    let Some(r) = record(slot) else { return Ok(()) };
    let now = crate::backend::now_ms();
    let state = state_of(r, now);
    if state == State::Normal {
        return Ok(());
    }
    let gate_op = match op {
        Operation::Search | Operation::Other => integrity::Operation::Read,
        Operation::Insert => integrity::Operation::Insert { rows: rows() },
        Operation::Delete => integrity::Operation::Delete { rows: rows() },
        Operation::Update | Operation::Merge => integrity::Operation::Update,
        Operation::Truncate => integrity::Operation::Rewire,
    };
    let actions = Actions::unpack(r.actions[0].load(Relaxed), r.actions[1].load(Relaxed));
    let running = shmem::unlocked(|reg| reg.slot(slot).running.load(Relaxed)).max(0) as u32;
    let ticket = r.ticket.fetch_add(1, Relaxed);
    let why = |what: &str| {
        let policy = match atomic_text::load(&r.policy, None) {
            p if p.is_empty() => "standard".to_string(),
            p => p,
        };
        format!(
            "The tenant's integrity state is {}{} (λ_cut {:.2}, policy \"{policy}\"); {what}.",
            state.name(),
            if effective(r, now).is_some() {
                ", set by an operator"
            } else {
                ""
            },
            f64::from_bits(r.lambda_bits.load(Relaxed))
        )
    };
    match integrity::gate(state, gate_op, &actions, ticket, running) {
        Decision::Allow => Ok(()),
        Decision::Throttled { pct } => Err(refusal(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
            "integrity_throttled",
            format!("tenant \"{id}\" is throttled by its integrity state"),
            format!(
                "retry after 1000 ms. {}",
                why(&format!("{pct}% of such statements are admitted"))
            ),
            "The index graph of the tenant is degraded; VACUUM repairs it.",
        )),
        Decision::Defer { retry_ms } => Err(refusal(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_RESOURCES,
            "integrity_deferred",
            format!(
                "tenant \"{id}\": {} deferred by its integrity state",
                op.name()
            ),
            format!(
                "retry after {retry_ms} ms. {}",
                why("operations of this risk wait")
            ),
            "The index graph of the tenant is degraded; VACUUM repairs it.",
        )),
        Decision::Reject => Err(refusal(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "integrity_rejected",
            format!(
                "tenant \"{id}\": {} rejected by its integrity state",
                op.name()
            ),
            why("operations of this risk are refused"),
            "The index graph of the tenant is degraded; VACUUM repairs it.",
        )),
    }
}

pg_fn! {
    /// `ruvector._integrity_sample(tenant_id)`: samples now; `(state, lambda_cut)`.
    fn integrity_sample(fcinfo) {
        if !crate::backend::is_admin() {
            crate::errors::not_admin("sample a tenant's integrity");
        }
        // SAFETY: one non-null text argument.
        let id = unsafe { crate::fmgr::arg_text(fcinfo, 0) };
        catalog::ensure_loaded();
        let Some((state, lambda)) = sample(&id) else {
            crate::errors::index_error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("tenant \"{id}\" does not exist or is being sampled"),
                None,
            );
        };
        crate::fmgr::text_datum(&format!("{} {lambda}", state.name()))
    }
}

pg_fn! {
    /// `ruvector._integrity_override(tenant_id, state, seconds)`: fixes the tenant's state
    /// for `seconds` (0 lifts an override).
    fn integrity_override(fcinfo) {
        if !crate::backend::is_admin() {
            crate::errors::not_admin("override a tenant's integrity state");
        }
        // SAFETY: text, text, float8 arguments, none null (STRICT).
        let (id, state, secs) = unsafe {
            (crate::fmgr::arg_text(fcinfo, 0), crate::fmgr::arg_text(fcinfo, 1), f64::from_bits(crate::fmgr::arg(fcinfo, 2).value() as u64))
        };
        let Some(state) = State::parse(&state) else {
            crate::errors::index_error(
                PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("unknown integrity state \"{state}\""),
                Some("Use normal, stress or critical."),
            );
        };
        catalog::ensure_loaded();
        let before = shmem::find(&id).and_then(|(slot, _)| current(slot)).map_or(State::Normal, |(s, _)| s);
        let until = crate::backend::now_ms() + (secs * 1000.0) as i64;
        if set_override(&id, state, until) {
            // SAFETY: plain query of the current user.
            let user = crate::backend::role_name(unsafe { pg_sys::GetUserId() });
            let reason = format!("override by {user} for {secs} s");
            catalog::as_superuser(|| event(&id, before.name(), state.name(), None, &reason));
        } else {
            crate::errors::index_error(
                PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
                format!("tenant \"{id}\" does not exist"),
                None,
            );
        }
        pg_sys::Datum::from(0)
    }
}
