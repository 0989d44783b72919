//! `ruhnsw`: the HNSW index access method.
//!
//! The algorithm is `ruvector_core::hnsw`, running on [`store::PageStore`] (the graph on
//! buffer pages, every change WAL-logged through one guard). One module per callback group:
//! [`build`], [`insert`], [`scan`], [`vacuum`], [`cost`]; every callback asks [`route`] where
//! a tenant's graph lives (its own pages, or a [`dedicated`] index of its own). [`check`] is `ruvector_index_check()`; [`ddl`] keys indexes on
//! tenant tables by tenant. See docs/ruhnsw-design.md for the page format and locking.

pub mod build;
pub mod check;
pub mod cost;
pub mod ddl;
pub mod dedicated;
pub mod directory;
pub mod insert;
pub mod options;
pub mod page;
pub mod route;
pub mod scan;
pub mod store;
pub mod vacuum;

use pgrx::pg_sys;
use ruvector_core::hnsw::page::{node_id, node_position};
use ruvector_core::hnsw::NodeId;

/// Registers the reloptions; from `_PG_init`.
pub fn init() {
    options::init();
}

/// A heap TID as the node payload.
///
/// # Safety
/// `tid` points to a valid item pointer.
pub unsafe fn heap_tid(tid: pg_sys::ItemPointer) -> NodeId {
    // SAFETY: guaranteed by the caller.
    let t = unsafe { &*tid };
    let block = (t.ip_blkid.bi_hi as u32) << 16 | t.ip_blkid.bi_lo as u32;
    node_id(block, t.ip_posid)
}

/// Writes a node payload into an item pointer.
pub fn set_heap_tid(tid: &mut pg_sys::ItemPointerData, payload: NodeId) {
    let (block, offset) = node_position(payload);
    tid.ip_blkid.bi_hi = (block >> 16) as u16;
    tid.ip_blkid.bi_lo = block as u16;
    tid.ip_posid = offset;
}

/// The longest bit string a `ruhnsw` index takes as a key or a search argument.
pub const MAX_BITS: usize = 64_000;

/// The elements of an index key or search argument of `index` (detoasted in the current
/// memory context): a `vector`'s, a `halfvec`'s widened to `f32`, or for the bit operator
/// classes the bits of a `bit` string as 0.0 and 1.0 (see `Metric::Hamming`).
///
/// # Safety
/// `index` is open; `datum` is a non-null value of its first key column's operator class
/// input type.
pub unsafe fn key_elements<'a>(
    index: pg_sys::Relation,
    datum: pg_sys::Datum,
) -> std::borrow::Cow<'a, [f32]> {
    // SAFETY: an open index has its operator classes' input types.
    let input_type = unsafe { *(*index).rd_opcintype };
    // SAFETY: guaranteed by the caller; pg_detoast_datum returns a 4-byte header.
    unsafe {
        if input_type != pg_sys::BITOID {
            return crate::vector::elements(key_kind(index), datum);
        }
        let (bits, data) =
            crate::vector::bits_of(pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *const u8);
        let bits = bits as usize;
        // Four bytes per bit here: a longer string (pgvector's limit for its index) is refused
        // before its elements are allocated.
        if bits > MAX_BITS {
            crate::errors::index_error(
                pgrx::PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!("bit strings of {bits} bits cannot be indexed (at most {MAX_BITS})"),
                None,
            );
        }
        std::borrow::Cow::Owned(ruvector_core::vector::bits_as_elements(data, bits))
    }
}

/// Which vector type the index's first key column is (`vector` for the bit operator
/// classes too, whose keys are not vectors).
pub fn key_kind(index: pg_sys::Relation) -> crate::vector::Kind {
    // SAFETY: an open index has its operator classes' input types.
    let input_type = unsafe { *(*index).rd_opcintype };
    // A syscache lookup (a hash probe), per insert and per scan: cheap, and never stale.
    if type_named(input_type, b"halfvec") {
        crate::vector::Kind::Halfvec
    } else {
        crate::vector::Kind::Vector
    }
}

/// Whether type `oid` exists and is named `name` (without its schema).
fn type_named(oid: pg_sys::Oid, name: &[u8]) -> bool {
    // SAFETY: a syscache lookup by OID; the name is compared while the tuple is held.
    unsafe {
        let tup = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::TYPEOID as i32,
            pg_sys::Datum::from(oid),
        );
        if tup.is_null() {
            return false;
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_type>(tup);
        let named = std::ffi::CStr::from_ptr((*form).typname.data.as_ptr()).to_bytes() == name;
        pg_sys::ReleaseSysCache(tup);
        named
    }
}

/// Whether the index is keyed by tenant: its second key column holds the tenant id.
pub fn tenant_keyed(index: pg_sys::Relation) -> bool {
    // SAFETY: an open index relation has its pg_index row.
    unsafe { (*(*index).rd_index).indnkeyatts >= 2 }
}

/// The tenant key of an index tuple: the second column's text for a tenant-keyed index, the
/// empty key otherwise; `None` when the tenant is NULL (such rows are not indexed: no tenant
/// can see them).
///
/// # Safety
/// `values` and `isnull` have the index's key columns.
pub unsafe fn tuple_tenant(
    index: pg_sys::Relation,
    values: *const pg_sys::Datum,
    isnull: *const bool,
) -> Option<Vec<u8>> {
    if !tenant_keyed(index) {
        return Some(Vec::new());
    }
    // SAFETY: guaranteed by the caller: column 2 exists and is text.
    unsafe {
        if *isnull.add(1) {
            return None;
        }
        Some(text_bytes(*values.add(1)))
    }
}

/// Whether new nodes of the tenant with `key` are packed with other shared tenants' nodes:
/// a registered tenant at the `shared` level (see `tenancy::shmem::own_pages`).
pub fn packed_tenant(key: &[u8]) -> bool {
    !crate::tenancy::shmem::own_pages(std::str::from_utf8(key).unwrap_or(""))
}

/// The bytes of a non-null `text` datum.
///
/// # Safety
/// `datum` is a non-null text.
pub unsafe fn text_bytes(datum: pg_sys::Datum) -> Vec<u8> {
    // SAFETY: guaranteed by the caller.
    let s: String = unsafe { pgrx::FromDatum::from_datum(datum, false) }.expect("not null");
    s.into_bytes()
}

pg_fn! {
    /// `ruhnsw_handler(internal)`: the access method's routine table.
    fn ruhnsw_handler(_fcinfo) {
        // SAFETY: a zeroed IndexAmRoutine node in the current memory context, filled with
        // this AM's properties and callbacks (fields not set stay false/NULL).
        unsafe {
            let am = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexAmRoutine>())
                as *mut pg_sys::IndexAmRoutine;
            let r = &mut *am;
            r.type_ = pg_sys::NodeTag::T_IndexAmRoutine;
            r.amstrategies = 0;
            r.amsupport = 1;
            r.amcanorderbyop = true;
            r.amcanmulticol = true;
            r.amoptionalkey = true;
            r.amusemaintenanceworkmem = true;
            r.amparallelvacuumoptions = pg_sys::VACUUM_OPTION_PARALLEL_BULKDEL as u8;
            r.amkeytype = pg_sys::InvalidOid;
            r.ambuild = Some(build::ambuild);
            r.ambuildempty = Some(build::ambuildempty);
            r.aminsert = Some(insert::aminsert);
            r.ambulkdelete = Some(vacuum::ambulkdelete);
            r.amvacuumcleanup = Some(vacuum::amvacuumcleanup);
            r.amcostestimate = Some(cost::amcostestimate);
            r.amoptions = Some(options::amoptions);
            r.ambuildphasename = Some(build::phase_name);
            r.amvalidate = Some(amvalidate);
            r.ambeginscan = Some(scan::ambeginscan);
            r.amrescan = Some(scan::amrescan);
            r.amgettuple = Some(scan::amgettuple);
            r.amendscan = Some(scan::amendscan);
            pg_sys::Datum::from(am)
        }
    }
}

/// `amvalidate`: operator classes are created by the extension script only.
unsafe extern "C-unwind" fn amvalidate(_opclass: pg_sys::Oid) -> bool {
    true
}
