//! Input/output, type modifier and cast functions of `vector` and `halfvec`.

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_core::halfvec::{self, Narrowing};
use ruvector_core::{text, vector as rules, VECTOR_MAX_DIM};

use super::Kind;
use crate::errors;
use crate::fmgr::{self, arg_i32, typmod_dims};

/// The input literal of a type input function (argument 0).
///
/// # Safety
/// `fcinfo` is a type input function's call.
unsafe fn literal<'a>(fcinfo: pg_sys::FunctionCallInfo) -> &'a std::ffi::CStr {
    // SAFETY: argument 0 of a type input function is a NUL-terminated C string.
    unsafe { std::ffi::CStr::from_ptr(fmgr::arg(fcinfo, 0).cast_mut_ptr()) }
}

pg_fn! {
    /// `vector_in(cstring, oid, int4)`: text to vector, checked against the typmod.
    fn vector_in(fcinfo) {
        // SAFETY: a type input function's call; argument 2 is the int4 typmod.
        let (lit, typmod) = unsafe { (literal(fcinfo), typmod_dims(arg_i32(fcinfo, 2))) };
        match text::parse(lit.to_bytes(), typmod) {
            Ok(values) => super::from_slice(&values),
            Err(e) => errors::vector_error(e, Some(&lit.to_string_lossy())),
        }
    }
}

pg_fn! {
    /// `halfvec_in(cstring, oid, int4)`: text to halfvec, each element rounded to the nearest
    /// half, checked against the typmod.
    fn halfvec_in(fcinfo) {
        // SAFETY: a type input function's call; argument 2 is the int4 typmod.
        let (lit, typmod) = unsafe { (literal(fcinfo), typmod_dims(arg_i32(fcinfo, 2))) };
        match halfvec::parse(lit.to_bytes(), typmod) {
            Ok(halves) => super::halfvec_from(&halves),
            Err(e) => errors::type_error("halfvec", e, Some(&lit.to_string_lossy())),
        }
    }
}

for_kinds! {
    /// `vector_out(vector)` / `halfvec_out(halfvec)`: the text form, `[1,2.5,3]`.
    fn vector_out / halfvec_out(fcinfo, kind) {
        // SAFETY: argument 0 is a value of the kind.
        let x = unsafe { super::arg_of(fcinfo, 0, kind) };
        fmgr::palloc_cstring(&text::format(&x))
    }
}

for_kinds! {
    /// `vector_typmod_in(cstring[])` / `halfvec_typmod_in`: `vector(n)` with 1 <= n <= 16000.
    fn vector_typmod_in / halfvec_typmod_in(fcinfo, kind) {
        let mut n = 0;
        // SAFETY: argument 0 is a cstring[]; PostgreSQL parses it into integers (or errors).
        let mods = unsafe {
            let arr = fmgr::arg_varlena(fcinfo, 0) as *mut pg_sys::ArrayType;
            let p = pg_sys::ArrayGetIntegerTypmods(arr, &mut n);
            std::slice::from_raw_parts(p, n as usize)
        };
        let name = kind.name();
        let [dims] = mods else {
            errors::invalid_typmod(name, "invalid type modifier".into());
        };
        if *dims < 1 {
            errors::invalid_typmod(name, format!("dimensions for type {name} must be at least 1"));
        }
        if *dims as usize > VECTOR_MAX_DIM {
            errors::invalid_typmod(name, format!("dimensions for type {name} cannot exceed {VECTOR_MAX_DIM}"));
        }
        pg_sys::Datum::from(*dims)
    }
}

for_kinds! {
    /// `vector_recv(internal, oid, int4)` / `halfvec_recv`: the binary form (pgvector's):
    /// int16 dim, int16 unused (0), then dim × float4 (`vector`) or dim × the 2-byte halves
    /// (`halfvec`), all big-endian.
    fn vector_recv / halfvec_recv(fcinfo, kind) {
        // SAFETY: argument 0 of a receive function is the message StringInfo.
        let buf = unsafe { fmgr::arg(fcinfo, 0).cast_mut_ptr::<pg_sys::StringInfoData>() };
        // SAFETY: argument 2 is the int4 typmod.
        let typmod = typmod_dims(unsafe { arg_i32(fcinfo, 2) });
        // SAFETY: pq_getmsg* check the remaining length and raise a protocol error if short.
        let (dim, unused) = unsafe { (pg_sys::pq_getmsgint(buf, 2) as usize, pg_sys::pq_getmsgint(buf, 2) as i16) };
        kind.check(rules::check_dims(dim));
        kind.check(rules::check_typmod(typmod, dim));
        if unused != 0 {
            errors::bad_binary_unused(unused.into());
        }
        let width = kind.width();
        // SAFETY: as above; the returned pointer addresses width * dim bytes of the message.
        let bytes = unsafe { std::slice::from_raw_parts(pg_sys::pq_getmsgbytes(buf, (width * dim) as i32) as *const u8, width * dim) };
        let x: Vec<f32> = match kind {
            Kind::Vector => bytes.chunks_exact(4).map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Kind::Halfvec => bytes.chunks_exact(2).map(|b| halfvec::from_half(u16::from_be_bytes([b[0], b[1]]))).collect(),
        };
        kind.check(rules::check_elements(&x));
        // Halves widened and narrowed again are the same halves.
        kind.datum(&x, Narrowing::Value)
    }
}

for_kinds! {
    /// `vector_send(vector)` / `halfvec_send(halfvec)`: the binary form, byte-identical to
    /// pgvector's.
    fn vector_send / halfvec_send(fcinfo, kind) {
        // SAFETY: argument 0 is a value of the kind.
        let (datum, dim) = unsafe {
            let datum = fmgr::arg(fcinfo, 0);
            (datum, super::dims(datum))
        };
        let size = 4 + 4 + kind.width() * dim;
        // SAFETY: a bytea of `size` bytes: 4-byte header, then the payload we write in full;
        // the datum's elements are read as its kind stores them.
        unsafe {
            let p = pg_sys::palloc(size) as *mut u8;
            pgrx::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
            let out = std::slice::from_raw_parts_mut(p.add(4), size - 4);
            out[..2].copy_from_slice(&(dim as u16).to_be_bytes());
            out[2..4].copy_from_slice(&0u16.to_be_bytes());
            match kind {
                Kind::Vector => {
                    for (chunk, v) in out[4..].chunks_exact_mut(4).zip(super::from_datum(datum)) {
                        chunk.copy_from_slice(&v.to_be_bytes());
                    }
                }
                // The stored halves, each turned big-endian.
                Kind::Halfvec => {
                    for (chunk, h) in out[4..].chunks_exact_mut(2).zip(super::half_bytes(datum).chunks_exact(2)) {
                        chunk.copy_from_slice(&u16::from_le_bytes([h[0], h[1]]).to_be_bytes());
                    }
                }
            }
            pg_sys::Datum::from(p)
        }
    }
}

for_kinds! {
    /// `vector(vector, int4, bool)` / `halfvec(halfvec, int4, bool)`: the length-coercion cast
    /// that enforces `vector(n)`.
    fn vector_typmod_cast / halfvec_typmod_cast(fcinfo, kind) {
        // SAFETY: argument 0 is a value of the kind, argument 1 the int4 typmod.
        let (dims, typmod) = unsafe { (super::dims(fmgr::arg(fcinfo, 0)), arg_i32(fcinfo, 1)) };
        kind.check(rules::check_typmod(typmod_dims(typmod), dims));
        // SAFETY: returning argument 0 unchanged.
        unsafe { fmgr::arg(fcinfo, 0) }
    }
}

pg_fn! {
    /// `halfvec_to_vector(halfvec, int4, bool)`: the cast to `vector` (exact).
    fn halfvec_to_vector(fcinfo) {
        // SAFETY: argument 0 is a halfvec, argument 1 the int4 typmod.
        let (x, typmod) = unsafe { (super::arg_of(fcinfo, 0, Kind::Halfvec), arg_i32(fcinfo, 1)) };
        Kind::Vector.check(rules::check_typmod(typmod_dims(typmod), x.len()));
        super::from_slice(&x)
    }
}

pg_fn! {
    /// `vector_to_halfvec(vector, int4, bool)`: the cast to `halfvec`, each element rounded
    /// to the nearest half; one beyond ±65504 is out of range.
    fn vector_to_halfvec(fcinfo) {
        // SAFETY: argument 0 is a vector, argument 1 the int4 typmod.
        let (x, typmod) = unsafe { (super::arg(fcinfo, 0), arg_i32(fcinfo, 1)) };
        Kind::Halfvec.check(rules::check_typmod(typmod_dims(typmod), x.len()));
        Kind::Halfvec.datum(x, Narrowing::Value)
    }
}

for_kinds! {
    /// `array_to_vector(integer[] | real[] | double precision[] | numeric[], int4, bool)` /
    /// `array_to_halfvec(...)`.
    fn array_to_vector / array_to_halfvec(fcinfo, kind) {
        // SAFETY: argument 0 is an array of one of the four element types of the SQL
        // declarations; argument 1 the typmod.
        let (arr, typmod) = unsafe { (fmgr::arg_varlena(fcinfo, 0) as *mut pg_sys::ArrayType, arg_i32(fcinfo, 1)) };
        // SAFETY: arr is a detoasted array.
        let (ndim, elemtype) = unsafe { ((*arr).ndim, (*arr).elemtype) };
        if ndim > 1 {
            errors::bad_array(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "array must be 1-D");
        }
        // SAFETY: arr is a valid array.
        if unsafe { pg_sys::array_contains_nulls(arr) } {
            errors::bad_array(PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED, "array must not contain nulls");
        }
        let (mut typlen, mut byval, mut align) = (0i16, false, 0 as std::ffi::c_char);
        let (mut elems, mut n) = (std::ptr::null_mut::<pg_sys::Datum>(), 0);
        // SAFETY: standard deconstruction of a null-free array into datums.
        let elems = unsafe {
            pg_sys::get_typlenbyvalalign(elemtype, &mut typlen, &mut byval, &mut align);
            pg_sys::deconstruct_array(arr, elemtype, typlen.into(), byval, align, &mut elems, std::ptr::null_mut(), &mut n);
            std::slice::from_raw_parts(elems, n as usize)
        };
        kind.check(rules::check_dims(elems.len()));
        kind.check(rules::check_typmod(typmod_dims(typmod), elems.len()));
        let x: Vec<f32> = elems.iter().map(|d| match elemtype {
            pg_sys::INT4OID => d.value() as i32 as f32,
            pg_sys::FLOAT4OID => f32::from_bits(d.value() as u32),
            pg_sys::FLOAT8OID => f64::from_bits(d.value() as u64) as f32,
            // SAFETY: numeric_float4 takes one numeric and returns a float4 (or raises
            // PostgreSQL's own out-of-range error).
            pg_sys::NUMERICOID => unsafe {
                pgrx::fcinfo::direct_function_call::<f32>(pg_sys::numeric_float4, &[Some(*d)])
                    .expect("numeric_float4 of a non-null numeric is not null")
            },
            _ => errors::bad_array(PgSqlErrorCode::ERRCODE_DATA_EXCEPTION, "unsupported array type"),
        }).collect();
        // float8 values beyond the f32 range became infinite here: refused like pgvector does.
        kind.check(rules::check_elements(&x));
        kind.datum(&x, Narrowing::Value)
    }
}

for_kinds! {
    /// `vector_to_float4(vector, int4, bool)` / `halfvec_to_float4`: the cast to `real[]`.
    fn vector_to_float4 / halfvec_to_float4(fcinfo, kind) {
        // SAFETY: argument 0 is a value of the kind.
        let x = unsafe { super::arg_of(fcinfo, 0, kind) };
        let datums: Vec<pg_sys::Datum> = x.iter().map(|v| pg_sys::Datum::from(v.to_bits())).collect();
        // SAFETY: float4 is 4 bytes, by value, int-aligned.
        unsafe {
            let a = pg_sys::construct_array(datums.as_ptr() as *mut _, datums.len() as i32, pg_sys::FLOAT4OID, 4, true, pg_sys::TYPALIGN_INT as std::ffi::c_char);
            pg_sys::Datum::from(a)
        }
    }
}
