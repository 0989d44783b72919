//! `amcostestimate`: what a `ruhnsw` scan costs the planner.
//!
//! Without `ORDER BY vec <op> value` the index is useless (it has no searchable operators),
//! so such paths cost `disable_cost`. With it, the startup cost is the first search round:
//! about `ef_search × 2m` nodes visited, each a distance computation, on the proportional
//! share of the index's pages; fetching every row costs as much as a full index read, so the
//! planner takes the index for `ORDER BY … LIMIT k` and a sequential scan and sort when all
//! rows are wanted (a scan stops after `ruvector.max_scan_tuples` candidates).

use pgrx::pg_sys;

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
            let visited = (gucs::ef_search() as f64 * 2.0 * M_DEFAULT as f64).min(tuples);
            let per_node = pg_sys::cpu_index_tuple_cost + 2.0 * pg_sys::cpu_operator_cost;
            let pages_read = (index_pages * visited / tuples).max(1.0);
            *startup = visited * per_node + pages_read * pg_sys::random_page_cost;
            *total = *startup
                + (tuples - visited).max(0.0) * per_node
                + index_pages * pg_sys::random_page_cost;
            *pages = pages_read;
        })
    }
}
