//! DDL of `ruhnsw` indexes (called from the utility hook of the tenancy layer): pgvector's
//! `USING hnsw` and `USING ivfflat` build one, and on a tenant table the specification's
//! one-column `CREATE INDEX ... USING ruhnsw (vec opclass)` gets the table's tenant column as
//! its second key.

use pgrx::pg_sys;

use crate::fmgr::list_ptrs;
use crate::tenancy::catalog;
use crate::vector::compat;

/// The CREATE INDEX statement of utility statement `pstmt`, unless the extension itself runs
/// it (`internal`: it is left as it is).
///
/// # Safety
/// `pstmt` is a valid utility PlannedStmt.
unsafe fn index_stmt(
    pstmt: *mut pg_sys::PlannedStmt,
    internal: bool,
) -> Option<*mut pg_sys::IndexStmt> {
    // SAFETY: guaranteed by the caller.
    let node = unsafe { (*pstmt).utilityStmt };
    // SAFETY: a non-null node has a tag.
    if internal || node.is_null() || unsafe { (*node).type_ } != pg_sys::NodeTag::T_IndexStmt {
        return None;
    }
    Some(node as *mut pg_sys::IndexStmt)
}

/// `CREATE INDEX ... USING hnsw` or `USING ivfflat` of a pgvector application, in a database
/// with ruvector and without pgvector, becomes `USING ruhnsw` with the same operator class
/// and options (`ivfflat`'s `lists` is dropped, with a notice). Returns `pstmt` itself or a
/// changed copy.
///
/// # Safety
/// `pstmt` is a valid utility PlannedStmt.
pub unsafe fn pgvector_method(
    pstmt: *mut pg_sys::PlannedStmt,
    internal: bool,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: guaranteed by the caller; the copy is a new tree in the current memory context
    // and the option list is rebuilt from its elements.
    unsafe {
        let Some(stmt) = index_stmt(pstmt, internal) else {
            return pstmt;
        };
        if (*stmt).accessMethod.is_null() || !catalog::extension_present() {
            return pstmt;
        }
        let method = std::ffi::CStr::from_ptr((*stmt).accessMethod);
        let Some(ours) = compat::index_method(method) else {
            return pstmt;
        };
        let method = method.to_owned();
        let copy =
            pg_sys::copyObjectImpl(pstmt as *const std::ffi::c_void) as *mut pg_sys::PlannedStmt;
        let stmt = (*copy).utilityStmt as *mut pg_sys::IndexStmt;
        (*stmt).accessMethod = pg_sys::pstrdup(ours.as_ptr());
        let mut options = std::ptr::null_mut();
        for d in list_ptrs((*stmt).options) {
            let def = d as *mut pg_sys::DefElem;
            if !compat::ignored_option(&method, std::ffi::CStr::from_ptr((*def).defname)) {
                options = pg_sys::lappend(options, d);
            }
        }
        (*stmt).options = options;
        copy
    }
}

/// `CREATE INDEX ... USING ruhnsw (vec opclass)` on a tenant table, as the specification
/// writes it, becomes `(vec opclass, tenant_column)`: the index is keyed by tenant, so each
/// tenant gets its own graph and a search reads only the current tenant's (and a HOT update
/// can never move a row to another tenant behind the index's back). Returns the statement to
/// run: `pstmt` itself, or a changed copy (the original may be cached and must not change).
///
/// `internal`: the extension itself runs the statement (it is left as it is).
///
/// # Safety
/// `pstmt` is a valid utility PlannedStmt.
pub unsafe fn with_tenant_key(
    pstmt: *mut pg_sys::PlannedStmt,
    internal: bool,
) -> *mut pg_sys::PlannedStmt {
    // SAFETY: guaranteed by the caller; the IndexStmt's fields are valid nodes, the relation
    // is resolved without a lock (DefineIndex locks it next), and the copy is a new tree in
    // the current memory context.
    unsafe {
        let Some(stmt) = index_stmt(pstmt, internal) else {
            return pstmt;
        };
        if (*stmt).accessMethod.is_null()
            || std::ffi::CStr::from_ptr((*stmt).accessMethod).to_bytes() != b"ruhnsw"
            || list_ptrs((*stmt).indexParams).len() != 1
        {
            return pstmt;
        }
        let relid = pg_sys::RangeVarGetRelidExtended(
            (*stmt).relation,
            pg_sys::NoLock as _,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        );
        if relid == pg_sys::InvalidOid || !catalog::extension_present() {
            return pstmt;
        }
        let Some(column) = catalog::tenant_column(relid) else {
            return pstmt;
        };
        let copy =
            pg_sys::copyObjectImpl(pstmt as *const std::ffi::c_void) as *mut pg_sys::PlannedStmt;
        let stmt = (*copy).utilityStmt as *mut pg_sys::IndexStmt;
        let elem =
            pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexElem>()) as *mut pg_sys::IndexElem;
        (*elem).type_ = pg_sys::NodeTag::T_IndexElem;
        let name = std::ffi::CString::new(column).expect("a column name has no NUL");
        (*elem).name = pg_sys::pstrdup(name.as_ptr());
        (*elem).ordering = pg_sys::SortByDir::SORTBY_DEFAULT;
        (*elem).nulls_ordering = pg_sys::SortByNulls::SORTBY_NULLS_DEFAULT;
        (*stmt).indexParams = pg_sys::lappend((*stmt).indexParams, elem as *mut std::ffi::c_void);
        copy
    }
}
