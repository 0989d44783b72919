//! The `vector` and `halfvec` datums: a varlena holding a 2-byte dimension count, 2 reserved
//! bytes (zero) and the elements, as 4-byte floats (`vector`) or 2-byte IEEE halves
//! (`halfvec`, little-endian). The same layouts as pgvector, so dumps, binary COPY and client
//! libraries see the same bytes.
//!
//! Every SQL function of the two types is written once, over a [`Kind`]: it reads its
//! arguments' elements as `f32` ([`elements`]; a `vector`'s in place, a `halfvec`'s widened)
//! and makes its result from `f32` values ([`Kind::datum`]; narrowed for a `halfvec`).

/// Defines a SQL function for each type, `$vector` and `$halfvec` (C symbols `rv_$vector`
/// and `rv_$halfvec`), running one `$body` with `$kind` bound to [`Kind::Vector`] and
/// [`Kind::Halfvec`].
macro_rules! for_kinds {
    ($(#[$attr:meta])* fn $vector:ident / $halfvec:ident($fcinfo:ident, $kind:ident) $body:block) => {
        pg_fn! {
            $(#[$attr])*
            fn $vector($fcinfo) {
                let $kind = $crate::vector::Kind::Vector;
                $body
            }
        }
        pg_fn! {
            $(#[$attr])*
            fn $halfvec($fcinfo) {
                let $kind = $crate::vector::Kind::Halfvec;
                $body
            }
        }
    };
}

pub mod compat;
mod io;
mod ops;

use std::borrow::Cow;

use pgrx::pg_sys;
use ruvector_core::halfvec::{self, Narrowing};
use ruvector_core::VectorError;

use crate::errors::check_as;
use crate::fmgr;

/// Which of the two vector types a datum is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `vector`: 4-byte floats.
    Vector,
    /// `halfvec`: 2-byte floats.
    Halfvec,
}

impl Kind {
    /// The SQL type's name, as error messages give it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Vector => "vector",
            Kind::Halfvec => "halfvec",
        }
    }

    /// Bytes per element.
    fn width(self) -> usize {
        match self {
            Kind::Vector => 4,
            Kind::Halfvec => 2,
        }
    }

    /// Raises `r`'s error with this type's name, or returns its value.
    #[track_caller]
    pub fn check<T>(self, r: Result<T, VectorError>) -> T {
        check_as(self.name(), r)
    }

    /// A new datum of this type holding `values` (finite), narrowed to halves for a
    /// `halfvec` as `how` says; raises the narrowing's error.
    pub fn datum(self, values: &[f32], how: Narrowing) -> pg_sys::Datum {
        match self {
            Kind::Vector => from_slice(values),
            Kind::Halfvec => {
                let (datum, bytes) = alloc_bytes(self, values.len());
                self.check(halfvec::narrow(values, bytes, how));
                datum
            }
        }
    }
}

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

/// The elements of a non-null datum of `kind` as `f32`: a `vector`'s in place, a
/// `halfvec`'s widened into a new buffer.
///
/// # Safety
/// `datum` is a `kind` value; the slice lives as long as the datum (or its detoasted copy).
pub unsafe fn elements<'a>(kind: Kind, datum: pg_sys::Datum) -> Cow<'a, [f32]> {
    match kind {
        // SAFETY: guaranteed by the caller.
        Kind::Vector => Cow::Borrowed(unsafe { from_datum(datum) }),
        Kind::Halfvec => {
            let mut x = Vec::new();
            // SAFETY: guaranteed by the caller.
            widen_into(unsafe { half_bytes(datum) }, &mut x);
            Cow::Owned(x)
        }
    }
}

/// The elements of argument `n`, of `kind`, as `f32` (see [`elements`]).
///
/// # Safety
/// `fcinfo` is valid and argument `n` is a non-null `kind` value.
pub unsafe fn arg_of<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize, kind: Kind) -> Cow<'a, [f32]> {
    // SAFETY: guaranteed by the caller.
    unsafe { elements(kind, fmgr::arg(fcinfo, n)) }
}

thread_local! {
    /// Two buffers the binary functions of `halfvec` widen their arguments into, kept for
    /// the backend's life (a distance per row of a sequential scan allocates nothing).
    static SCRATCH: std::cell::RefCell<[Vec<f32>; 2]> = const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// Runs `f` on the elements of arguments 0 and 1 as `f32`: a `vector`'s in place, a
/// `halfvec`'s widened into this backend's scratch buffers.
///
/// # Safety
/// `fcinfo` is valid and its arguments 0 and 1 are non-null values of `kind`.
pub unsafe fn with_two<R>(
    fcinfo: pg_sys::FunctionCallInfo,
    kind: Kind,
    f: impl FnOnce(&[f32], &[f32]) -> R,
) -> R {
    match kind {
        // SAFETY: guaranteed by the caller.
        Kind::Vector => unsafe { f(arg(fcinfo, 0), arg(fcinfo, 1)) },
        Kind::Halfvec => {
            // SAFETY: guaranteed by the caller.
            let (a, b) = unsafe {
                (
                    half_bytes(fmgr::arg(fcinfo, 0)),
                    half_bytes(fmgr::arg(fcinfo, 1)),
                )
            };
            SCRATCH.with_borrow_mut(|[x, y]| f(widen_into(a, x), widen_into(b, y)))
        }
    }
}

/// `bytes` (halves) widened into `buf`, grown as needed; the widened elements.
fn widen_into<'a>(bytes: &[u8], buf: &'a mut Vec<f32>) -> &'a [f32] {
    let n = bytes.len() / 2;
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    ruvector_core::distance::halves_to_f32(bytes, &mut buf[..n]);
    &buf[..n]
}

/// The number of dimensions of a non-null datum (of either kind), from its header.
///
/// # Safety
/// `datum` is a `vector` or `halfvec`.
pub unsafe fn dims(datum: pg_sys::Datum) -> usize {
    // SAFETY: guaranteed by the caller; the dimension count follows the 4-byte header of the
    // detoasted value.
    unsafe {
        let p = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *const u8;
        (p.add(4) as *const i16).read() as usize
    }
}

/// The element bytes of a non-null `halfvec` datum (two per element).
///
/// # Safety
/// `datum` is a `halfvec`; the slice lives as long as the datum (or its detoasted copy).
unsafe fn half_bytes<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    // SAFETY: guaranteed by the caller; detoasting returns the datum itself or a copy with a
    // 4-byte header, then dim and unused, then `dim` halves.
    unsafe {
        let p = pg_sys::pg_detoast_datum(datum.cast_mut_ptr()) as *const u8;
        let dim = (p.add(4) as *const i16).read() as usize;
        std::slice::from_raw_parts(p.add(HEADER), 2 * dim)
    }
}

/// A new, zeroed datum of `kind` with `dim` elements in the current memory context, and its
/// element bytes.
fn alloc_bytes<'a>(kind: Kind, dim: usize) -> (pg_sys::Datum, &'a mut [u8]) {
    debug_assert!((1..=ruvector_core::VECTOR_MAX_DIM).contains(&dim));
    let size = HEADER + kind.width() * dim;
    // SAFETY: palloc0 returns `size` zeroed bytes, MAXALIGNed; we set the varlena length and
    // dim, and hand out the element area, which lies within the allocation.
    unsafe {
        let p = pg_sys::palloc0(size) as *mut u8;
        pgrx::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        (p.add(4) as *mut i16).write(dim as i16);
        let x = std::slice::from_raw_parts_mut(p.add(HEADER), size - HEADER);
        (pg_sys::Datum::from(p), x)
    }
}

/// A new, zeroed vector of `dim` elements in the current memory context, and its elements.
pub fn alloc<'a>(dim: usize) -> (pg_sys::Datum, &'a mut [f32]) {
    let (datum, bytes) = alloc_bytes(Kind::Vector, dim);
    // SAFETY: the element area of a vector is 4 * dim bytes at offset 8 of a MAXALIGNed
    // allocation, so it is aligned for f32.
    let x = unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut f32, dim) };
    (datum, x)
}

/// A new `halfvec` holding `halves` (bit patterns), and its datum.
pub fn halfvec_from(halves: &[u16]) -> pg_sys::Datum {
    let (datum, bytes) = alloc_bytes(Kind::Halfvec, halves.len());
    for (b, h) in bytes.chunks_exact_mut(2).zip(halves) {
        b.copy_from_slice(&h.to_le_bytes());
    }
    datum
}

/// A new vector holding `values`.
pub fn from_slice(values: &[f32]) -> pg_sys::Datum {
    let (datum, x) = alloc(values.len());
    x.copy_from_slice(values);
    datum
}
