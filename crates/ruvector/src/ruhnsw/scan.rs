//! Index scans: `ORDER BY vec <op> $q LIMIT k`.
//!
//! The first `amgettuple` call searches with `ruvector.ef_search`; the executor asks for
//! more rows only when it needs them (rows removed by other conditions or invisible to the
//! snapshot), and then the scan continues iteratively (see `ruvector_core::hnsw::Scan`), up
//! to `ruvector.max_scan_tuples` candidates. Rows come in ascending distance within a round;
//! a later round may yield a row slightly closer than the last one of the round before
//! (what an exact search would have found first).
//!
//! An index that stores vectors in half precision reports each row with a lower bound of its
//! exact distance and asks the executor to re-rank (`xs_recheckorderby`): PostgreSQL
//! computes the ORDER BY distance from the table's full-precision vector and returns rows in
//! exact order (see `ruvector_core::hnsw::rounding`).
//!
//! Only MVCC snapshots are supported: the scan keeps heap TIDs of rows it has not yet
//! returned without holding a page pin, which is safe only when a TID recycled by VACUUM
//! can never be visible to the scan's snapshot.

use pgrx::pg_sys;
use pgrx::{IntoDatum, PgSqlErrorCode};
use ruvector_core::hnsw::{GraphStore, Merge, Scan};
use ruvector_core::VectorError;
use ruvector_tenancy::decide::{self, Search};

use super::route::{self, Place, Want};
use super::store::PageStore;
use super::{key_elements, set_heap_tid};
use crate::{errors, gucs};

#[derive(Default)]
struct ScanState {
    /// One scan per relation searched (the index, and dedicated indexes of its tenants).
    merge: Option<Merge<PageStore>>,
    /// Dedicated indexes the scan opened, closed by `amendscan`.
    opened: Vec<Place>,
    /// The index was empty (no dimensions yet): nothing to return.
    empty: bool,
    /// The order key of the row returned last, under `strict_order`.
    last: Option<f64>,
}

impl ScanState {
    /// Closes the dedicated indexes the scan opened (not on an error path: the abort of
    /// the transaction releases them).
    fn close(&mut self) {
        self.merge = None;
        self.last = None;
        for place in self.opened.drain(..) {
            place.close();
        }
    }
}

unsafe extern "C-unwind" fn free_state(arg: *mut std::ffi::c_void) {
    let scan = arg as pg_sys::IndexScanDesc;
    // SAFETY: `arg` is the scan descriptor, still allocated while its memory context runs
    // its reset callbacks; `opaque` is our Box or NULL once freed.
    unsafe {
        let state = (*scan).opaque as *mut ScanState;
        if !state.is_null() {
            (*scan).opaque = std::ptr::null_mut();
            drop(Box::from_raw(state));
        }
    }
}

/// `ambeginscan`.
pub unsafe extern "C-unwind" fn ambeginscan(
    index: pg_sys::Relation,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    // SAFETY: PostgreSQL's scan protocol. The state is freed by amendscan or, if the query
    // fails before that, by a reset callback of the memory context the descriptor lives in.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            let scan = pg_sys::RelationGetIndexScan(index, nkeys, norderbys);
            if norderbys > 0 {
                // Where rows of a half-precision index report their distance bounds.
                let n = norderbys as usize;
                (*scan).xs_orderbyvals =
                    pg_sys::palloc0(n * std::mem::size_of::<pg_sys::Datum>()) as *mut pg_sys::Datum;
                (*scan).xs_orderbynulls =
                    pg_sys::palloc(n * std::mem::size_of::<bool>()) as *mut bool;
                std::ptr::write_bytes((*scan).xs_orderbynulls, 1, n);
            }
            (*scan).opaque = Box::into_raw(Box::<ScanState>::default()) as *mut std::ffi::c_void;
            let cb = pg_sys::palloc0(std::mem::size_of::<pg_sys::MemoryContextCallback>())
                as *mut pg_sys::MemoryContextCallback;
            (*cb).func = Some(free_state);
            (*cb).arg = scan as *mut std::ffi::c_void;
            pg_sys::MemoryContextRegisterResetCallback(pg_sys::CurrentMemoryContext, cb);
            scan
        })
    }
}

fn state<'a>(scan: pg_sys::IndexScanDesc) -> &'a mut ScanState {
    // SAFETY: opaque is the ScanState set in ambeginscan until amendscan.
    unsafe { &mut *((*scan).opaque as *mut ScanState) }
}

/// `amrescan`.
pub unsafe extern "C-unwind" fn amrescan(
    scan: pg_sys::IndexScanDesc,
    keys: pg_sys::ScanKey,
    nkeys: i32,
    orderbys: pg_sys::ScanKey,
    norderbys: i32,
) {
    // SAFETY: the arrays have the sizes given at ambeginscan; copying them into the
    // descriptor is what every index AM does.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            if !keys.is_null() && nkeys > 0 {
                std::ptr::copy(keys, (*scan).keyData, nkeys as usize);
            }
            if !orderbys.is_null() && norderbys > 0 {
                std::ptr::copy(orderbys, (*scan).orderByData, norderbys as usize);
            }
            let s = state(scan);
            s.close();
            s.empty = false;
        })
    }
}

/// Starts the search on the first `amgettuple`.
fn start(scan: pg_sys::IndexScanDesc) {
    // SAFETY: a live scan descriptor.
    let (index, norderbys, snapshot) = unsafe {
        (
            (*scan).indexRelation,
            (*scan).numberOfOrderBys,
            (*scan).xs_snapshot,
        )
    };
    if norderbys < 1 {
        errors::index_error(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "a ruhnsw index can only be scanned in distance order".into(),
            Some("Use ORDER BY column <operator> value LIMIT k."),
        );
    }
    // SAFETY: the snapshot of a running scan.
    let mvcc = unsafe {
        !snapshot.is_null()
            && matches!(
                (*snapshot).snapshot_type,
                pg_sys::SnapshotType::SNAPSHOT_MVCC | pg_sys::SnapshotType::SNAPSHOT_HISTORIC_MVCC
            )
    };
    if !mvcc {
        errors::index_error(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "ruhnsw index scans need an MVCC snapshot".into(),
            None,
        );
    }
    // Each search counts against the tenant's rate limit (the statement's first is covered
    // by its own admission).
    crate::tenancy::context::count_index_search();
    crate::tenancy::metrics::count_index_search();
    let s = state(scan);
    let Some(graph) = route::open(index) else {
        s.empty = true;
        return;
    };
    let dims = graph.store().layout().dims;
    // SAFETY: norderbys ≥ 1, so orderByData[0] is the search key; its argument is a vector
    // unless the NULL flag is set.
    let (query, null) = unsafe {
        let key = &*(*scan).orderByData;
        if key.sk_flags & pg_sys::SK_ISNULL as i32 != 0 {
            (vec![0.0; dims], true) // like a sequential scan, all rows, in no useful order
        } else {
            (key_elements(index, key.sk_argument).into_owned(), false)
        }
    };
    if query.len() != dims {
        errors::vector_error(
            VectorError::DifferentDimensions {
                left: dims,
                right: query.len(),
            },
            None,
        );
    }
    let places = tenants_to_search(scan, index);
    let mut merge = Merge::default();
    let mut shared = Some(graph);
    // One part per relation, with the tenants whose graphs it holds.
    let mut rels: Vec<pg_sys::Relation> = places.iter().map(|p| p.rel).collect();
    rels.dedup();
    let mut parts = Vec::new();
    for rel in rels {
        let here: Vec<&Place> = places.iter().filter(|p| p.rel == rel).collect();
        let mut graph = if rel == index {
            shared.take().expect("the index is one part")
        } else {
            count_scan(rel);
            route::open(rel).expect("a dedicated index has its tenant's graph")
        };
        if graph.store().layout().dims != dims {
            errors::index_corrupted(
                &super::page::rel_name(rel),
                format!(
                    "a dedicated index of {} dimensions beside {dims}",
                    graph.store().layout().dims
                ),
            );
        }
        graph.store_mut().set_scan_entries(
            here.iter()
                .filter_map(|p| Some((p.tenant, p.entry.as_ref()?))),
        );
        let tenants = here.iter().map(|p| p.tenant).collect();
        let scan = Scan::new(
            query.clone(),
            tenants,
            gucs::ef_search(),
            gucs::max_scan_tuples(),
        );
        parts.push((graph, scan));
    }
    // Rows of a graph stored in half precision come with bounds to re-rank by; then every
    // part's rows do (a dedicated index may store its tenant's vectors in full precision),
    // so that the merge compares like with like. A halfvec's halves are stored exactly, and
    // the query is a halfvec too: its distances are exact, nothing to re-rank (cosine
    // included: Metric::HalfCosine does not scale them).
    let rerank = super::key_kind(index) != crate::vector::Kind::Halfvec
        && parts
            .iter()
            .any(|(g, _)| g.store().layout().half && g.params().metric.rounds_halves());
    // In f64: the squared length of a float4 vector can underflow or overflow in f32.
    let query_norm = (rerank && !null).then(|| {
        query
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            .sqrt()
    });
    for (graph, scan) in parts {
        match query_norm {
            Some(norm) => merge.push(graph, scan.with_bounds(norm)),
            None => merge.push(graph, scan),
        }
    }
    s.opened = places.into_iter().filter(Place::dedicated).collect();
    s.merge = Some(merge);
}

/// Counts a scan of dedicated index `rel` in its statistics (`pg_stat_user_indexes.idx_scan`),
/// as the executor counts the scan of the index it opened.
fn count_scan(rel: pg_sys::Relation) {
    // SAFETY: an open relation; pgstat_info is set up on first use, as the server's
    // pgstat_count_index_scan does.
    unsafe {
        if (*rel).pgstat_info.is_null() && (*rel).pgstat_enabled {
            pg_sys::pgstat_assoc_relation(rel);
        }
        let info = (*rel).pgstat_info;
        if !info.is_null() {
            #[cfg(feature = "pg15")]
            {
                (*info).t_counts.t_numscans += 1;
            }
            #[cfg(feature = "pg18")]
            {
                (*info).counts.numscans += 1;
            }
        }
    }
}

/// The tenants a scan searches. An index without a tenant column has one. A tenant-keyed
/// index confines every scan to the statement's tenant (`ruvector.tenant_id` as validated
/// when the statement started) by itself, even
/// on a table whose row-level security was turned off: a `tenant_id = ...` condition for
/// another tenant finds nothing; without a tenant context the scan is refused (28000);
/// under `'*'` (administrators only) it searches the tenant the condition names, or all.
///
/// Each tenant comes with its place ([`route`]).
fn tenants_to_search(scan: pg_sys::IndexScanDesc, index: pg_sys::Relation) -> Vec<Place> {
    let find = |key: &[u8]| {
        route::tenant(index, key, Want::Search)
            .into_iter()
            .collect()
    };
    if !super::tenant_keyed(index) {
        return find(b"");
    }
    // The tenant the conditions name (at most one: `a = x AND a = y` with x <> y is empty).
    let mut named: Option<Vec<u8>> = None;
    // SAFETY: keyData has numberOfKeys initialized keys (copied in amrescan); a key on the
    // tenant column compares it with a text value unless the NULL flag is set.
    unsafe {
        for i in 0..(*scan).numberOfKeys as usize {
            let key = &*(*scan).keyData.add(i);
            if key.sk_attno != 2 {
                continue;
            }
            if key.sk_flags & pg_sys::SK_ISNULL as i32 != 0 {
                return Vec::new();
            }
            let value = super::text_bytes(key.sk_argument);
            if named.as_ref().is_some_and(|n| *n != value) {
                return Vec::new();
            }
            named = Some(value);
        }
    }
    let resolved = crate::tenancy::context::current();
    match decide::scan(&resolved, named.as_deref()) {
        Ok(Search::One(key)) => find(key),
        Ok(Search::Nothing) => Vec::new(),
        // '*' was validated for an administrator when the statement started.
        Ok(Search::All) => route::every_tenant(index),
        Err(_) => errors::index_error(
            PgSqlErrorCode::ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
            format!(
                "no tenant context for a search of the tenant-keyed index \"{}\"",
                super::page::rel_name(index)
            ),
            Some("SET ruvector.tenant_id to a tenant id (or '*' as an administrator)."),
        ),
    }
}

/// `amgettuple`.
pub unsafe extern "C-unwind" fn amgettuple(
    scan: pg_sys::IndexScanDesc,
    _direction: pg_sys::ScanDirection::Type,
) -> bool {
    // SAFETY: PostgreSQL's scan protocol; the guard turns panics into errors.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            if state(scan).merge.is_none() && !state(scan).empty {
                start(scan);
            }
            let s = state(scan);
            let Some(merge) = &mut s.merge else {
                return false;
            };
            let strict = gucs::strict_order();
            let (graph, found) = loop {
                let Some((graph, found)) = merge.next_hit() else {
                    return false;
                };
                // strict_order: a row closer than one already returned came from a later
                // round, and is skipped (as pgvector does).
                if strict {
                    if s.last.is_some_and(|last| found.order_key() < last) {
                        continue;
                    }
                    s.last = Some(found.order_key());
                }
                break (graph, found);
            };
            // An exact scan had the payload at hand; a graph search's is read now.
            set_heap_tid(
                &mut (*scan).xs_heaptid,
                found
                    .payload
                    .unwrap_or_else(|| graph.store().payload(found.id)),
            );
            (*scan).xs_recheck = false;
            // A row of a half-precision index comes with a bound of its distance: the
            // executor re-ranks by the table's vector.
            (*scan).xs_recheckorderby = found.bound.is_some();
            if let Some(bound) = found.bound {
                // The first ORDER BY key is the one searched; any further key (ORDER BY
                // v <-> a, v <-> b) is left to the executor's exact values: −∞ is below them.
                for i in 0..(*scan).numberOfOrderBys as usize {
                    let value = if i == 0 { bound } else { f64::NEG_INFINITY };
                    *(*scan).xs_orderbyvals.add(i) = value.into_datum().expect("a float8 datum");
                    *(*scan).xs_orderbynulls.add(i) = false;
                }
            }
            true
        })
    }
}

/// `amendscan`.
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    // SAFETY: a live scan; frees the state once, and the reset callback then finds NULL.
    unsafe {
        if !(*scan).opaque.is_null() {
            pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| state(scan).close());
        }
        free_state(scan as *mut std::ffi::c_void)
    };
}
