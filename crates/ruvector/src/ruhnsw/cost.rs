//! `amcostestimate`: what a `ruhnsw` scan costs the planner.
//!
//! Without `ORDER BY vec <op> value` the index is useless (it has no searchable operators),
//! so such paths cost `disable_cost`. With it, the startup cost is the first search round:
//! about `width × 2m` nodes visited, costed as the same share of a sequential scan, where
//! the width is `ef_search` widened for the size of the graph searched (see
//! `ruvector_core::hnsw::search_width`);
//! fetching every row costs more than a sequential scan, so the planner takes the index for
//! `ORDER BY … LIMIT k` and a sequential scan and sort when all rows are wanted (a scan stops
//! after `ruvector.max_scan_tuples` candidates). A tenant-keyed index costs the current
//! tenant's share: its selectivity is the rows the table's conditions leave (row-level
//! security's tenant condition, estimated from the column's statistics), so a small tenant's
//! search is cheap and never loses to a sequential scan of every tenant's rows.

use pgrx::pg_sys;

use ruvector_core::hnsw::search_width;

use super::options::M_DEFAULT;
use crate::gucs;

/// `amcostestimate`.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn amcostestimate(
    _root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    _loop_count: f64,
    startup: *mut pg_sys::Cost,
    total: *mut pg_sys::Cost,
    selectivity: *mut pg_sys::Selectivity,
    correlation: *mut f64,
    pages: *mut f64,
) {
    // SAFETY: the planner passes a valid path and output pointers; reads of planner GUCs.
    // The guard turns panics into errors.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            *selectivity = 1.0;
            *correlation = 0.0;
            if (*path).indexorderbys.is_null() {
                *startup = pg_sys::disable_cost;
                *total = pg_sys::disable_cost;
                *pages = 0.0;
                return;
            }
            let info = &*(*path).indexinfo;
            let tuples = info.tuples.max(1.0);
            let index_pages = (info.pages as f64).max(1.0);
            // A search computes distances to about ef_search × 2m nodes: that share of the
            // vectors, costed as a sequential scan reading the same share of the table (which
            // is what it would take to compare them; the planner's sequential-scan estimate
            // omits TOASTed vectors, so the index's own pages would overstate the comparison).
            let heap = &*info.rel;
            let scan_all = heap.pages as f64 * pg_sys::seq_page_cost
                + heap.tuples.max(tuples) * (pg_sys::cpu_tuple_cost + pg_sys::cpu_operator_cost);
            let search = |graph: f64| {
                search_width(gucs::ef_search(), graph as usize, gucs::widen_above()) as f64
                    * 2.0
                    * M_DEFAULT as f64
            };
            if info.nkeycolumns >= 2 {
                // Keyed by tenant: a scan reads only the current tenant's graph, whose size
                // is the rows the table's conditions leave (row-level security's tenant
                // condition among them), and returns only those rows.
                let rows = (*(*path).path.parent).rows.clamp(1.0, tuples);
                let share = rows / tuples;
                let visited = search(rows).min(rows);
                *selectivity = share;
                *startup = visited / tuples * scan_all;
                *total = *startup + share * (scan_all + index_pages * pg_sys::random_page_cost);
                *pages = (index_pages * visited / tuples).max(1.0);
                return;
            }
            let visited = search(tuples).min(tuples);
            let ratio = visited / tuples;
            let pages_read = (index_pages * ratio).max(1.0);
            *startup = ratio * scan_all;
            // Every row: the whole graph, more than a sequential scan (and a scan stops after
            // ruvector.max_scan_tuples), so the planner sorts instead when all rows are wanted.
            *total = scan_all + index_pages * pg_sys::random_page_cost;
            *pages = pages_read;
        })
    }
}
