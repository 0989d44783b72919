//! Distance functions, arithmetic, comparisons and the aggregate support functions of
//! `vector` and `halfvec`, and the bit distances.

use std::cmp::Ordering;

use pgrx::pg_sys;
use ruvector_core::halfvec::Narrowing;
use ruvector_core::{distance, vector as rules};

use crate::errors::check;

/// Defines `name(vector, vector) -> float8` and its `halfvec` twin from a core distance
/// function, checking that the operands have the same dimensions first.
macro_rules! distance_fn {
    ($($name:ident / $half:ident => $f:path),* $(,)?) => {$(
        for_kinds! {
            fn $name / $half(fcinfo, kind) {
                // SAFETY: the SQL declaration takes two values of the kind.
                let d = unsafe {
                    super::with_two(fcinfo, kind, |a, b| {
                        kind.check(rules::check_same_dims(a, b));
                        $f(a, b)
                    })
                };
                pg_sys::Datum::from(d.to_bits())
            }
        }
    )*};
}

distance_fn! {
    l2_distance / halfvec_l2_distance => distance::l2_distance,
    vector_l2_squared_distance / halfvec_l2_squared_distance => distance::l2_squared_distance,
    inner_product / halfvec_inner_product => distance::inner_product,
    vector_negative_inner_product / halfvec_negative_inner_product => distance::negative_inner_product,
    cosine_distance / halfvec_cosine_distance => distance::cosine_distance,
    l1_distance / halfvec_l1_distance => distance::l1_distance,
}

/// Defines `name(vector, vector) -> vector` and its `halfvec` twin from a core element-wise
/// function; a `halfvec` result is narrowed as `$narrowing` says.
macro_rules! elementwise_fn {
    ($($name:ident / $half:ident => $f:path, $narrowing:ident),* $(,)?) => {$(
        for_kinds! {
            fn $name / $half(fcinfo, kind) {
                // SAFETY: the SQL declaration takes two values of the kind.
                unsafe {
                    super::with_two(fcinfo, kind, |a, b| {
                        kind.check(rules::check_same_dims(a, b));
                        let mut out = vec![0.0; a.len()];
                        kind.check($f(a, b, &mut out));
                        kind.datum(&out, Narrowing::$narrowing)
                    })
                }
            }
        }
    )*};
}

elementwise_fn! {
    vector_add / halfvec_add => rules::add, Sum,
    vector_sub / halfvec_sub => rules::sub, Sum,
    vector_mul / halfvec_mul => rules::mul, Product,
}

/// Defines `name(vector, vector) -> bool` and its `halfvec` twin from the btree order.
macro_rules! compare_fn {
    ($($name:ident / $half:ident => $test:expr),* $(,)?) => {$(
        for_kinds! {
            fn $name / $half(fcinfo, kind) {
                let test: fn(Ordering) -> bool = $test;
                // SAFETY: the SQL declaration takes two values of the kind.
                let order = unsafe { super::with_two(fcinfo, kind, rules::compare) };
                pg_sys::Datum::from(test(order))
            }
        }
    )*};
}

compare_fn! {
    vector_lt / halfvec_lt => Ordering::is_lt,
    vector_le / halfvec_le => Ordering::is_le,
    vector_eq / halfvec_eq => Ordering::is_eq,
    vector_ne / halfvec_ne => Ordering::is_ne,
    vector_ge / halfvec_ge => Ordering::is_ge,
    vector_gt / halfvec_gt => Ordering::is_gt,
}

for_kinds! {
    /// `vector_cmp(vector, vector) -> int4` / `halfvec_cmp`: btree support function 1.
    fn vector_cmp / halfvec_cmp(fcinfo, kind) {
        // SAFETY: the SQL declaration takes two values of the kind.
        let order = unsafe { super::with_two(fcinfo, kind, rules::compare) };
        pg_sys::Datum::from(order as i32)
    }
}

for_kinds! {
    /// `vector_concat(vector, vector) -> vector` / `halfvec_concat`: the `||` operator.
    fn vector_concat / halfvec_concat(fcinfo, kind) {
        // SAFETY: the SQL declaration takes two values of the kind.
        let joined = unsafe { super::with_two(fcinfo, kind, rules::concat) };
        kind.datum(&kind.check(joined), Narrowing::Value)
    }
}

for_kinds! {
    /// `subvector(vector, int4, int4) -> vector` (and of a halfvec): `count` elements from
    /// `start` (1-based).
    fn subvector / halfvec_subvector(fcinfo, kind) {
        // SAFETY: a value of the kind and two int4 arguments, none null (STRICT).
        let (x, start, count) = unsafe {
            (super::arg_of(fcinfo, 0, kind), crate::fmgr::arg_i32(fcinfo, 1), crate::fmgr::arg_i32(fcinfo, 2))
        };
        kind.datum(kind.check(rules::subvector(&x, start, count)), Narrowing::Value)
    }
}

for_kinds! {
    /// `binary_quantize(vector) -> bit` (and of a halfvec): a bit per element, set when it is
    /// positive.
    fn binary_quantize / halfvec_binary_quantize(fcinfo, kind) {
        // SAFETY: argument 0 is a value of the kind.
        let x = unsafe { super::arg_of(fcinfo, 0, kind) };
        let bits = rules::binary_quantize(&x);
        // A `bit(n)` value: varlena header, the bit count, then the bits (VarBit).
        let size = 8 + bits.len();
        // SAFETY: palloc0 returns `size` zeroed bytes; the header, bit count and bits are
        // written within them.
        unsafe {
            let p = pg_sys::palloc0(size) as *mut u8;
            pgrx::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
            (p.add(4) as *mut i32).write(x.len() as i32);
            std::ptr::copy_nonoverlapping(bits.as_ptr(), p.add(8), bits.len());
            pg_sys::Datum::from(p)
        }
    }
}

/// The length in bits and the data of `bit` argument `n`.
///
/// # Safety
/// Argument `n` of `fcinfo` is a non-null `bit` or `bit varying`.
unsafe fn bit_arg<'a>(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> (u32, &'a [u8]) {
    // SAFETY: guaranteed by the caller; arg_varlena detoasts to a 4-byte header.
    unsafe { super::bits_of(crate::fmgr::arg_varlena(fcinfo, n) as *const u8) }
}

/// Defines `name(bit, bit) -> float8` from a core bit distance, checking the lengths first.
macro_rules! bit_distance_fn {
    ($($name:ident => $f:expr),* $(,)?) => {$(
        pg_fn! {
            fn $name(fcinfo) {
                // SAFETY: the SQL declaration takes two bit strings.
                let ((la, a), (lb, b)) = unsafe { (bit_arg(fcinfo, 0), bit_arg(fcinfo, 1)) };
                check(rules::check_same_bits(la, lb));
                let d: f64 = $f(a, b);
                pg_sys::Datum::from(d.to_bits())
            }
        }
    )*};
}

bit_distance_fn! {
    hamming_distance => |a, b| rules::hamming(a, b) as f64,
    jaccard_distance => rules::jaccard,
}

for_kinds! {
    /// `vector_dims(vector) -> int4` (and of a halfvec).
    fn vector_dims / halfvec_vector_dims(fcinfo, _kind) {
        // SAFETY: argument 0 is a value of the kind.
        let dims = unsafe { super::dims(crate::fmgr::arg(fcinfo, 0)) };
        pg_sys::Datum::from(dims as i32)
    }
}

for_kinds! {
    /// `vector_norm(vector) -> float8` / `l2_norm(halfvec)`: the Euclidean norm.
    fn vector_norm / halfvec_l2_norm(fcinfo, kind) {
        // SAFETY: argument 0 is a value of the kind.
        let x = unsafe { super::arg_of(fcinfo, 0, kind) };
        pg_sys::Datum::from(rules::norm(&x).to_bits())
    }
}

for_kinds! {
    /// `l2_normalize(vector) -> vector` (and of a halfvec): unit length (the zero vector
    /// stays zero).
    fn l2_normalize / halfvec_l2_normalize(fcinfo, kind) {
        // SAFETY: argument 0 is a value of the kind.
        let x = unsafe { super::arg_of(fcinfo, 0, kind) };
        let mut out = vec![0.0; x.len()];
        kind.check(rules::l2_normalize(&x, &mut out));
        kind.datum(&out, Narrowing::Sum)
    }
}

// ---- avg(vector): the state is float8[] {count, sum_1, ..., sum_dim}, as in pgvector, so
// partial aggregates and dumps of aggregate states are interchangeable.

/// The `float8` elements of an aggregate state array.
///
/// # Safety
/// `arr` is a detoasted, null-free, one-dimensional `float8[]`.
unsafe fn state_values<'a>(arr: *mut pg_sys::ArrayType) -> &'a mut [f64] {
    // SAFETY: guaranteed by the caller. A null-free array's data starts right after its
    // header and its dimension and lower-bound arrays, MAXALIGNed (ARR_OVERHEAD_NONULLS).
    unsafe {
        let (ndim, elemtype, dataoffset) = ((*arr).ndim, (*arr).elemtype, (*arr).dataoffset);
        if ndim != 1 || elemtype != pg_sys::FLOAT8OID || dataoffset != 0 {
            pgrx::error!("vector aggregate: malformed state array");
        }
        let dims = (arr as *const u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *const i32;
        let n = dims.read() as usize;
        let offset = (std::mem::size_of::<pg_sys::ArrayType>() + 2 * 4 + 7) & !7;
        std::slice::from_raw_parts_mut((arr as *mut u8).add(offset) as *mut f64, n)
    }
}

/// A new state array holding `values`.
fn new_state(values: &[f64]) -> pg_sys::Datum {
    let datums: Vec<pg_sys::Datum> = values
        .iter()
        .map(|v| pg_sys::Datum::from(v.to_bits()))
        .collect();
    // SAFETY: float8 is 8 bytes, by value, double-aligned.
    unsafe {
        let a = pg_sys::construct_array(
            datums.as_ptr() as *mut _,
            datums.len() as i32,
            pg_sys::FLOAT8OID,
            8,
            true,
            pg_sys::TYPALIGN_DOUBLE as std::ffi::c_char,
        );
        pg_sys::Datum::from(a)
    }
}

/// Whether this call is a transition function call of an aggregate, whose state the function
/// may update in place.
///
/// # Safety
/// `fcinfo` is valid.
unsafe fn in_aggregate(fcinfo: pg_sys::FunctionCallInfo) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { pg_sys::AggCheckCallContext(fcinfo, std::ptr::null_mut()) != 0 }
}

for_kinds! {
    /// `vector_accum(float8[], vector) -> float8[]` / `halfvec_accum`: avg's transition
    /// function. Inside an aggregate it adds into the state in place, so a `vector` row costs
    /// no allocation.
    fn vector_accum / halfvec_accum(fcinfo, kind) {
        // SAFETY: argument 0 is the float8[] state, argument 1 a value of the kind.
        let (arr, x) = unsafe { (crate::fmgr::arg_varlena(fcinfo, 0) as *mut pg_sys::ArrayType, super::arg_of(fcinfo, 1, kind)) };
        // SAFETY: the state is a float8[] built by this module or the '{0}' INITCOND.
        let state = unsafe { state_values(arr) };
        let (count, sums) = state.split_first_mut().expect("state has a count");
        if sums.is_empty() {
            // The first row's elements are the sums (not 0 + them: -0 stays -0, as in
            // pgvector).
            let fresh: Vec<f64> = std::iter::once(*count + 1.0).chain(x.iter().map(|&v| f64::from(v))).collect();
            return new_state(&fresh);
        }
        // SAFETY: fcinfo is valid.
        if unsafe { in_aggregate(fcinfo) } {
            kind.check(rules::accumulate(sums, &x));
            *count += 1.0;
            return pg_sys::Datum::from(arr);
        }
        let mut copy = state.to_vec();
        kind.check(rules::accumulate(&mut copy[1..], &x));
        copy[0] += 1.0;
        new_state(&copy)
    }
}

pg_fn! {
    /// `vector_combine(float8[], float8[]) -> float8[]`: merges two partial avg states.
    fn vector_combine(fcinfo) {
        // SAFETY: both arguments are float8[] avg states.
        let (a, b) = unsafe {
            (
                state_values(crate::fmgr::arg_varlena(fcinfo, 0) as *mut pg_sys::ArrayType),
                state_values(crate::fmgr::arg_varlena(fcinfo, 1) as *mut pg_sys::ArrayType),
            )
        };
        let mut merged = if a.len() == 1 { b.to_vec() } else { a.to_vec() };
        if a.len() > 1 && b.len() > 1 {
            check(rules::combine(&mut merged[1..], &b[1..]));
        }
        merged[0] = a[0] + b[0];
        // As in pgvector, the dimension limit is checked by the final function.
        new_state(&merged)
    }
}

for_kinds! {
    /// `vector_avg(float8[]) -> vector` / `halfvec_avg`: avg's final function; NULL over no
    /// rows.
    fn vector_avg / halfvec_avg(fcinfo, kind) {
        // SAFETY: argument 0 is a float8[] avg state.
        let state = unsafe { state_values(crate::fmgr::arg_varlena(fcinfo, 0) as *mut pg_sys::ArrayType) };
        let (count, sums) = state.split_first().expect("state has a count");
        if *count == 0.0 {
            // SAFETY: fcinfo is valid.
            return unsafe { pgrx::fcinfo::pg_return_null(fcinfo) };
        }
        // A state that counted rows has their dimensions ('{1}' has none: an error).
        kind.check(rules::check_dims(sums.len()));
        let mut out = vec![0.0; sums.len()];
        kind.check(rules::mean(sums, *count, &mut out));
        kind.datum(&out, Narrowing::Sum)
    }
}
