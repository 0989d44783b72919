//! fmgr V1 glue: the [`pg_fn!`] macro and typed argument accessors.

use pgrx::pg_sys;

/// Declares an fmgr V1 function: its `pg_finfo_` record and a guarded body, so that
/// Rust panics and PostgreSQL errors cross the boundary correctly. The C symbol is
/// `rv_<name>`: prefixed so that it never interposes on pgvector's same-named symbols when
/// both libraries are loaded in one backend. The SQL in `sql/` refers to it by that name.
macro_rules! pg_fn {
    ($(#[$attr:meta])* fn $name:ident($fcinfo:ident) $body:block) => {
        paste::paste! {
            #[unsafe(no_mangle)]
            #[doc(hidden)]
            pub extern "C" fn [<pg_finfo_rv_ $name>]() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
                const V1: ::pgrx::pg_sys::Pg_finfo_record = ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
                &V1
            }

            $(#[$attr])*
            ///
            /// # Safety
            /// Called by PostgreSQL's function manager with a valid `fcinfo` whose arguments
            /// match the SQL declaration in `sql/`.
            #[unsafe(no_mangle)]
            pub unsafe extern "C-unwind" fn [<rv_ $name>]($fcinfo: ::pgrx::pg_sys::FunctionCallInfo) -> ::pgrx::pg_sys::Datum {
                let body = move || $body;
                // SAFETY: the guard turns Rust panics into PostgreSQL errors and lets
                // PostgreSQL errors unwind through Rust frames, which is what #[pg_guard] does.
                unsafe { ::pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(body) }
            }
        }
    };
}

/// The raw datum of argument `n`.
///
/// # Safety
/// `fcinfo` is valid and has more than `n` arguments.
pub unsafe fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> pg_sys::Datum {
    // SAFETY: guaranteed by the caller.
    unsafe { pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, n) }
}

/// Argument `n` as an `int4`.
///
/// # Safety
/// As [`arg`]; the argument is an `int4`.
pub unsafe fn arg_i32(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> i32 {
    // SAFETY: guaranteed by the caller; int4 datums are passed by value.
    unsafe { arg(fcinfo, n) }.value() as i32
}

/// Argument `n` as a detoasted varlena pointer.
///
/// # Safety
/// As [`arg`]; the argument is a non-null varlena.
pub unsafe fn arg_varlena(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> *mut pg_sys::varlena {
    // SAFETY: guaranteed by the caller; detoasting returns the datum itself or a palloc'd copy.
    unsafe { pg_sys::pg_detoast_datum(arg(fcinfo, n).cast_mut_ptr()) }
}

/// A type modifier as an optional dimension count (`-1` means none).
pub fn typmod_dims(typmod: i32) -> Option<usize> {
    usize::try_from(typmod).ok()
}

/// Copies `s` into a palloc'd, NUL-terminated C string.
pub fn palloc_cstring(s: &str) -> pg_sys::Datum {
    // SAFETY: palloc returns s.len() + 1 writable bytes (or raises an error); we fill them all.
    unsafe {
        let p = pg_sys::palloc(s.len() + 1) as *mut u8;
        std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
        *p.add(s.len()) = 0;
        pg_sys::Datum::from(p)
    }
}

/// Argument `n` as a Rust string (from `text`).
///
/// # Safety
/// As [`arg`]; the argument is non-null `text`.
pub unsafe fn arg_text(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> String {
    // SAFETY: guaranteed by the caller.
    unsafe { text_to_string(arg(fcinfo, n)) }
}

/// A non-null `text` datum (possibly toasted) as a Rust string.
///
/// # Safety
/// `d` is a valid `text` datum.
pub unsafe fn text_to_string(d: pg_sys::Datum) -> String {
    // SAFETY: guaranteed by the caller; text_to_cstring detoasts and returns a palloc'd copy.
    unsafe {
        let c = pg_sys::text_to_cstring(d.cast_mut_ptr());
        std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned()
    }
}

/// A `text` datum holding `s`.
pub fn text_datum(s: &str) -> pg_sys::Datum {
    let c = std::ffi::CString::new(s).expect("no NUL in text");
    // SAFETY: cstring_to_text copies the string into a palloc'd text.
    unsafe { pg_sys::Datum::from(pg_sys::cstring_to_text(c.as_ptr())) }
}

/// A `text` datum holding `bytes` (valid UTF-8 without NUL), built in one palloc.
pub fn text_from_bytes(bytes: &[u8]) -> pg_sys::Datum {
    let size = pg_sys::VARHDRSZ + bytes.len();
    // SAFETY: palloc returns `size` writable bytes (or raises an error): a 4-byte varlena
    // header, then the data.
    unsafe {
        let p = pg_sys::palloc(size) as *mut u8;
        pgrx::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(pg_sys::VARHDRSZ), bytes.len());
        pg_sys::Datum::from(p)
    }
}

/// The pointers of a PostgreSQL pointer List (NIL is empty).
///
/// # Safety
/// `list` is NULL or a valid pointer List.
pub unsafe fn list_ptrs(list: *mut pg_sys::List) -> Vec<*mut std::ffi::c_void> {
    // SAFETY: guaranteed by the caller.
    unsafe { list_iter(list) }.collect()
}

/// [`list_ptrs`] without collecting them: the list must not change while the iterator is
/// used.
///
/// # Safety
/// `list` is NULL or a valid pointer List that outlives the iterator, unchanged.
pub unsafe fn list_iter(list: *mut pg_sys::List) -> impl Iterator<Item = *mut std::ffi::c_void> {
    // SAFETY: guaranteed by the caller; a pointer List's cells hold pointers.
    unsafe { cells(list) }.map(|cell| unsafe { cell.ptr_value })
}

/// The members of a PostgreSQL OID List (NIL is empty).
///
/// # Safety
/// `list` is NULL or a valid OID List.
pub unsafe fn list_oids(list: *mut pg_sys::List) -> Vec<pg_sys::Oid> {
    // SAFETY: guaranteed by the caller; an OID List's cells hold OIDs.
    unsafe { cells(list) }
        .map(|cell| unsafe { cell.oid_value })
        .collect()
}

/// The cells of a PostgreSQL List (NIL has none), read one at a time.
///
/// # Safety
/// `list` is NULL or a valid List that outlives the iterator, unchanged.
unsafe fn cells(list: *mut pg_sys::List) -> impl Iterator<Item = pg_sys::ListCell> {
    let len = if list.is_null() {
        0
    } else {
        // SAFETY: guaranteed by the caller: a valid List, with `length` cells at `elements`.
        unsafe { (*list).length as usize }
    };
    // SAFETY: i < length, read while the list is unchanged (the caller's guarantee).
    (0..len).map(move |i| unsafe { *(*list).elements.add(i) })
}
