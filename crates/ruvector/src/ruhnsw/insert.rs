//! `aminsert`: one row into the graph, WAL-logged change by change.

use std::sync::atomic::{AtomicU64, Ordering};

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_core::VectorError;

use super::route::{self, Want};
use super::{heap_tid, key_elements, page};
use crate::errors;

/// This backend's level-generator state; every insert draws from it.
static SEED: AtomicU64 = AtomicU64::new(0);

fn next_seed() -> u64 {
    let mut s = SEED.load(Ordering::Relaxed);
    if s == 0 {
        // SAFETY: plain reads of backend state.
        s = unsafe { pg_sys::MyProcPid as u64 ^ (pg_sys::GetCurrentTimestamp() as u64) << 20 };
    }
    // splitmix64
    s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    SEED.store(s, Ordering::Relaxed);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `aminsert`.
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    tid: pg_sys::ItemPointer,
    _heap: pg_sys::Relation,
    _unique: pg_sys::IndexUniqueCheck::Type,
    _unchanged: bool,
    _info: *mut pg_sys::IndexInfo,
) -> bool {
    // SAFETY: PostgreSQL's insert protocol: the index's key columns, a valid heap TID; the guard
    // turns panics into errors.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            if *isnull {
                return false; // NULL vectors are not indexed
            }
            let Some(tenant_key) = super::tuple_tenant(index, values, isnull) else {
                return false; // a NULL tenant: no tenant can see the row
            };
            let vector = key_elements(index, *values);
            let vector = &vector[..];
            let mut graph = match route::open(index) {
                Some(g) => g,
                None => {
                    // The first vector of an index without declared dimensions sets them,
                    // and the storage with the metapage's m (the pages' layout), not the
                    // reloption's: ALTER INDEX ... SET (m) takes effect only at a rebuild.
                    let storage = super::options::storage(index);
                    page::update_meta(index, |meta| {
                        if meta.dims == 0 {
                            let layout =
                                super::build::layout_for(vector.len(), meta.m as usize, storage);
                            meta.dims = vector.len() as u32;
                            meta.half = layout.half;
                        }
                    });
                    route::open(index).expect("dimensions are set")
                }
            };
            let dims = graph.store().layout().dims;
            if vector.len() != dims {
                errors::index_error(
                    PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                    VectorError::DimensionMismatch { expected: dims, actual: vector.len() }.to_string(),
                    Some(&format!(
                        "The ruhnsw index \"{}\" holds vectors of {dims} dimensions; declare the column as vector({dims}).",
                        page::rel_name(index)
                    )),
                );
            }
            let Some(place) = route::tenant(index, &tenant_key, Want::Insert) else {
                return false; // the tenant's dedicated index holds its rows
            };
            if place.rel != index {
                graph = route::open(place.rel)
                    .expect("a tenant's own index has the shared index's dimensions");
            }
            if !graph.params().metric.indexes(vector) {
                return false; // a zero vector in a cosine index: not indexed
            }
            super::build::check_storable(graph.store().layout(), graph.params().metric, vector);
            graph.store_mut().set_packed(place.packed);
            graph.reseed(next_seed());
            graph.insert(vector, place.tenant, heap_tid(tid));
            crate::tenancy::metrics::count_index_insert();
            false
        })
    }
}
