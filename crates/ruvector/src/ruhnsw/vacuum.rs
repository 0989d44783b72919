//! VACUUM: `ambulkdelete` removes the nodes of dead rows, `amvacuumcleanup` reports.
//!
//! Three passes over the index: find the nodes whose heap rows are dead; repair every live
//! node that links to one (its lists are rebuilt from its live neighbours and theirs, see
//! `Hnsw::repair`) and move entry points off dead nodes; then delete the dead nodes, which
//! overwrites their vectors and links with zeros in the page (erasure), one WAL record per
//! page. Searches running meanwhile skip nodes as soon as they are deleted.

use std::collections::BTreeMap;

use pgrx::pg_sys;
use ruvector_core::hnsw::page::node_position;
use ruvector_core::hnsw::{GraphStore, IdSet, NodeId, TenantOrd};

use super::{directory, page, route};

fn stats_or_new(stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    if stats.is_null() {
        // SAFETY: a zeroed result in the current (VACUUM's) memory context.
        unsafe {
            pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBulkDeleteResult>())
                as *mut pg_sys::IndexBulkDeleteResult
        }
    } else {
        stats
    }
}

/// `ambulkdelete`: every graph of the index ([`route::graphs`]) in turn.
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    // SAFETY: PostgreSQL's VACUUM protocol; the guard turns panics into errors.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            let stats = stats_or_new(stats);
            let callback = callback.expect("VACUUM passes a callback");
            let is_dead = |payload: u64| {
                let mut tid = pg_sys::ItemPointerData::default();
                super::set_heap_tid(&mut tid, payload);
                callback(&mut tid, callback_state)
            };
            (*stats).num_index_tuples = 0.0;
            for rel in route::graphs((*info).index) {
                let (removed, live) = bulk_delete(rel, &is_dead);
                (*stats).tuples_removed += removed as f64;
                (*stats).num_index_tuples += live as f64;
            }
            stats
        })
    }
}

/// Removes the nodes whose heap rows `row_is_dead` from the graph on `rel`'s pages; returns
/// how many were removed and how many live nodes remain.
fn bulk_delete(rel: pg_sys::Relation, row_is_dead: &dyn Fn(u64) -> bool) -> (u64, u64) {
    let Some(mut graph) = route::open(rel) else {
        return (0, 0);
    };

    // Pass 1: classify.
    let mut dead = IdSet::default();
    let mut newly_dead: Vec<NodeId> = Vec::new();
    let mut removed: BTreeMap<TenantOrd, u64> = BTreeMap::new();
    let mut live: Vec<NodeId> = Vec::new();
    let mut best: BTreeMap<TenantOrd, (NodeId, u8)> = BTreeMap::new();
    graph.store().for_each_node(|id, node| {
        if node.deleted() {
            dead.insert(id); // deleted earlier: links to it are repaired too
            return;
        }
        if row_is_dead(node.heap_tid()) {
            dead.insert(id);
            newly_dead.push(id);
            *removed.entry(node.tenant()).or_default() += 1;
        } else {
            live.push(id);
            let e = best.entry(node.tenant()).or_insert((id, node.level()));
            if node.level() > e.1 {
                *e = (id, node.level());
            }
        }
    });
    let counts = (newly_dead.len() as u64, live.len() as u64);
    if newly_dead.is_empty() {
        return counts;
    }

    // Pass 2: repair the lists that name dead nodes, then the entry points.
    let is_dead = |id: NodeId| dead.contains(&id);
    for (i, &id) in live.iter().enumerate() {
        if i % 64 == 0 {
            page::delay_point();
        }
        graph.repair(id, &is_dead);
    }
    for &tenant in removed.keys() {
        let entry = graph.store().entry(tenant);
        if entry.is_none_or(|(e, _)| dead.contains(&e)) {
            graph
                .store_mut()
                .set_entry(tenant, best.get(&tenant).copied());
        }
    }

    // Pass 3: delete (zero) the dead nodes, page by page.
    let mut by_page: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
    for id in newly_dead {
        let (block, offset) = node_position(id);
        by_page.entry(block).or_default().push(offset);
    }
    for (block, offsets) in by_page {
        page::delay_point();
        graph.store().delete_on_page(block, &offsets);
    }
    for (tenant, n) in removed {
        directory::update(rel, tenant, |e| e.nodes = e.nodes.saturating_sub(n));
    }
    counts
}

/// `amvacuumcleanup`.
pub unsafe extern "C-unwind" fn amvacuumcleanup(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    // SAFETY: PostgreSQL's VACUUM protocol; the guard turns panics into errors.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            if (*info).analyze_only {
                return stats;
            }
            let graphs = route::graphs((*info).index);
            let stats = if stats.is_null() {
                // No bulk delete ran (nothing to remove): count the live nodes.
                let stats = stats_or_new(stats);
                for graph in graphs.iter().filter_map(|&rel| route::open(rel)) {
                    graph.store().for_each_node(|_, node| {
                        (*stats).num_index_tuples += (!node.deleted()) as u8 as f64
                    });
                }
                stats
            } else {
                stats
            };
            (*stats).num_pages = page::nblocks((*info).index);
            (*stats).estimated_count = false;
            stats
        })
    }
}
