//! The `vector` datum: a varlena holding a 2-byte dimension count, 2 reserved bytes (zero)
//! and the elements as 4-byte floats. The same layout as pgvector, so dumps, binary COPY and
//! client libraries see the same bytes.

pub mod compat;
mod io;
mod ops;

use pgrx::pg_sys;

use crate::fmgr;

/// Bytes before the first element: varlena header (4), dim (2), unused (2).
const HEADER: usize = 8;

/// The elements of argument `n`.
///
/// # Safety
/// `fcinfo` is valid and argument `n` is a non-null `vector`. The slice lives as long as the
/// current function call (it points into the argument or its detoasted copy).
pub unsafe fn arg<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> &'a [f32] {
    // SAFETY: guaranteed by the caller.
    unsafe { from_datum(fmgr::arg(fcinfo, n)) }
}

/// The elements of a non-null `vector` datum.
///
/// # Safety
/// `datum` is a `vector`; the slice lives as long as the datum (or its detoasted copy, in
/// the current memory context).
pub unsafe fn from_datum<'a>(datum: pg_sys::Datum) -> &'a [f32] {
    // SAFETY: guaranteed by the caller; detoasting returns the datum itself or a copy.
    let p = unsafe { pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) } as *const u8;
    // SAFETY: a detoasted vector has a 4-byte header, then dim and unused, then `dim` floats;
    // vector has int4 alignment, so the floats are aligned.
    unsafe {
        let dim = (p.add(4) as *const i16).read() as usize;
        std::slice::from_raw_parts(p.add(HEADER) as *const f32, dim)
    }
}

/// The length in bits and the data of a detoasted `bit` or `bit varying` value (a VarBit:
/// varlena header, bit count, then the bits, most significant first).
///
/// # Safety
/// `p` points to a detoasted VarBit with a 4-byte header.
pub unsafe fn bits_of<'a>(p: *const u8) -> (u32, &'a [u8]) {
    // SAFETY: guaranteed by the caller: the bit count follows the header and the data holds
    // ceil(bits / 8) bytes.
    unsafe {
        let bits = (p.add(4) as *const i32).read_unaligned() as u32;
        (
            bits,
            std::slice::from_raw_parts(p.add(8), bits.div_ceil(8) as usize),
        )
    }
}

/// A new, zeroed vector of `dim` elements in the current memory context, and its elements.
pub fn alloc<'a>(dim: usize) -> (pg_sys::Datum, &'a mut [f32]) {
    debug_assert!((1..=ruvector_core::VECTOR_MAX_DIM).contains(&dim));
    let size = HEADER + 4 * dim;
    // SAFETY: palloc0 returns `size` zeroed bytes, MAXALIGNed; we set the varlena length and
    // dim, and hand out the float area, which lies within the allocation.
    unsafe {
        let p = pg_sys::palloc0(size) as *mut u8;
        pgrx::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        (p.add(4) as *mut i16).write(dim as i16);
        let x = std::slice::from_raw_parts_mut(p.add(HEADER) as *mut f32, dim);
        (pg_sys::Datum::from(p), x)
    }
}

/// A new vector holding `values`.
pub fn from_slice(values: &[f32]) -> pg_sys::Datum {
    let (datum, x) = alloc(values.len());
    x.copy_from_slice(values);
    datum
}
