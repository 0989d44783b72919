//! Conditions that name another tenant: `WHERE tenant_id = 'globex'` run under tenant
//! `acme`. Row-level security already filters the other tenant's rows out, so such a
//! statement would quietly return or change nothing; it is refused instead (42501) and
//! audited as a cross-tenant attempt.
//!
//! The search reads the plan: every scan's conditions (filters, index and bitmap
//! conditions), in every subplan, CTE and partition, for `column = 'constant'` and
//! `column IN ('constant', ...)` on a tenant table's tenant column, in either order and
//! under AND and OR. A parameter counts when the plan was made for its value (one-off
//! statements and the first runs of a prepared statement); a generic plan's parameters
//! (`tenant_id = $1`) are not seen, and row-level security still confines them.

use pgrx::pg_sys;

use super::catalog;
use crate::fmgr::{list_iter, list_ptrs};

/// `texteq`, the function of `text = text`.
const F_TEXTEQ: u32 = 67;

/// The first tenant id other than `tenant` that a condition of `stmt` compares a tenant
/// table's tenant column with.
///
/// # Safety
/// `stmt` is a valid PlannedStmt.
pub unsafe fn other_tenant(stmt: *mut pg_sys::PlannedStmt, tenant: &str) -> Option<String> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let walk = Walk {
            rtable: (*stmt).rtable,
            tenant,
        };
        std::iter::once((*stmt).planTree as *mut std::ffi::c_void)
            .chain(list_iter((*stmt).subplans))
            .find_map(|p| walk.plan(p as *mut pg_sys::Plan))
    }
}

struct Walk<'a> {
    rtable: *mut pg_sys::List,
    tenant: &'a str,
}

impl Walk<'_> {
    /// # Safety
    /// `plan` is null or a valid Plan of the statement.
    unsafe fn plan(&self, plan: *mut pg_sys::Plan) -> Option<String> {
        if plan.is_null() {
            return None;
        }
        // SAFETY: guaranteed by the caller; each cast matches the node's tag. Nothing is
        // allocated per node: this runs for every statement of a tenant.
        unsafe {
            let mut scanrelid = 0;
            let mut index_qual: *mut pg_sys::List = std::ptr::null_mut();
            let mut child_plans: *mut pg_sys::List = std::ptr::null_mut();
            let mut subplan: *mut pg_sys::Plan = std::ptr::null_mut();
            match (*plan).type_ {
                pg_sys::NodeTag::T_SeqScan
                | pg_sys::NodeTag::T_SampleScan
                | pg_sys::NodeTag::T_TidScan
                | pg_sys::NodeTag::T_TidRangeScan
                | pg_sys::NodeTag::T_IndexOnlyScan
                | pg_sys::NodeTag::T_CustomScan
                | pg_sys::NodeTag::T_ForeignScan => {
                    scanrelid = (*(plan as *mut pg_sys::Scan)).scanrelid;
                }
                pg_sys::NodeTag::T_IndexScan => {
                    let s = plan as *mut pg_sys::IndexScan;
                    scanrelid = (*s).scan.scanrelid;
                    index_qual = (*s).indexqualorig;
                }
                pg_sys::NodeTag::T_BitmapHeapScan => {
                    let s = plan as *mut pg_sys::BitmapHeapScan;
                    scanrelid = (*s).scan.scanrelid;
                    index_qual = (*s).bitmapqualorig;
                }
                pg_sys::NodeTag::T_Append => {
                    child_plans = (*(plan as *mut pg_sys::Append)).appendplans;
                }
                pg_sys::NodeTag::T_MergeAppend => {
                    child_plans = (*(plan as *mut pg_sys::MergeAppend)).mergeplans;
                }
                pg_sys::NodeTag::T_BitmapAnd => {
                    child_plans = (*(plan as *mut pg_sys::BitmapAnd)).bitmapplans;
                }
                pg_sys::NodeTag::T_BitmapOr => {
                    child_plans = (*(plan as *mut pg_sys::BitmapOr)).bitmapplans;
                }
                pg_sys::NodeTag::T_SubqueryScan => {
                    subplan = (*(plan as *mut pg_sys::SubqueryScan)).subplan;
                }
                _ => {}
            }
            if scanrelid > 0 {
                if let Some(col) = self.tenant_attnum(scanrelid) {
                    for q in [(*plan).qual, index_qual] {
                        for e in list_iter(q) {
                            if let Some(id) = self.expr(e as *mut pg_sys::Node, scanrelid, col) {
                                return Some(id);
                            }
                        }
                    }
                }
            }
            [(*plan).lefttree, (*plan).righttree, subplan]
                .into_iter()
                .find_map(|c| self.plan(c))
                .or_else(|| plans(child_plans).find_map(|c| self.plan(c)))
        }
    }

    /// The tenant column's number if range-table entry `rti` is a tenant table.
    ///
    /// # Safety
    /// `rti` is an index of the statement's range table.
    unsafe fn tenant_attnum(&self, rti: u32) -> Option<i16> {
        // SAFETY: guaranteed by the caller.
        unsafe {
            let rte = pg_sys::list_nth(self.rtable, rti as i32 - 1) as *mut pg_sys::RangeTblEntry;
            if rte.is_null() || (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
                return None;
            }
            catalog::tenant_attnum((*rte).relid)
        }
    }

    /// A tenant id other than ours that `e` compares column `col` of relation `rti` with.
    ///
    /// # Safety
    /// `e` is null or a valid expression node.
    unsafe fn expr(&self, e: *mut pg_sys::Node, rti: u32, col: i16) -> Option<String> {
        if e.is_null() {
            return None;
        }
        // SAFETY: guaranteed by the caller; each cast matches the node's tag.
        unsafe {
            match (*e).type_ {
                pg_sys::NodeTag::T_BoolExpr => list_ptrs((*(e as *mut pg_sys::BoolExpr)).args)
                    .into_iter()
                    .find_map(|a| self.expr(a as *mut pg_sys::Node, rti, col)),
                pg_sys::NodeTag::T_OpExpr => {
                    let op = e as *mut pg_sys::OpExpr;
                    let (a, b) = text_equality((*op).opfuncid, (*op).args)?;
                    let value = if is_column(a, rti, col) {
                        text_const(b)
                    } else if is_column(b, rti, col) {
                        text_const(a)
                    } else {
                        None
                    };
                    value.filter(|v| v != self.tenant)
                }
                pg_sys::NodeTag::T_ScalarArrayOpExpr => {
                    let op = e as *mut pg_sys::ScalarArrayOpExpr;
                    let (a, b) = text_equality((*op).opfuncid, (*op).args)?;
                    if !is_column(a, rti, col) {
                        return None;
                    }
                    text_array_const(b).into_iter().find(|v| v != self.tenant)
                }
                _ => None,
            }
        }
    }
}

/// The two operands of a `text = text` comparison (function `opfuncid`, arguments `args`).
///
/// # Safety
/// `args` is the argument List of an operator expression.
unsafe fn text_equality(
    opfuncid: pg_sys::Oid,
    args: *mut pg_sys::List,
) -> Option<(*mut pg_sys::Node, *mut pg_sys::Node)> {
    if u32::from(opfuncid) != F_TEXTEQ {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    match unsafe { list_ptrs(args) }[..] {
        [a, b] => Some((a as *mut pg_sys::Node, b as *mut pg_sys::Node)),
        _ => None,
    }
}

/// The plans of a List.
///
/// # Safety
/// `list` is null or a List of Plans.
unsafe fn plans(list: *mut pg_sys::List) -> impl Iterator<Item = *mut pg_sys::Plan> {
    // SAFETY: guaranteed by the caller.
    unsafe { list_iter(list) }.map(|p| p as *mut pg_sys::Plan)
}

/// Strips a RelabelType (a collation or binary-compatible cast) off `e`.
///
/// # Safety
/// `e` is a valid expression node.
unsafe fn bare(mut e: *mut pg_sys::Node) -> *mut pg_sys::Node {
    // SAFETY: guaranteed by the caller.
    unsafe {
        while (*e).type_ == pg_sys::NodeTag::T_RelabelType {
            e = (*(e as *mut pg_sys::RelabelType)).arg as *mut pg_sys::Node;
        }
    }
    e
}

/// Whether `e` is column `col` of range-table entry `rti`.
///
/// # Safety
/// `e` is a valid expression node.
unsafe fn is_column(e: *mut pg_sys::Node, rti: u32, col: i16) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let e = bare(e);
        if (*e).type_ != pg_sys::NodeTag::T_Var {
            return false;
        }
        let v = e as *mut pg_sys::Var;
        (*v).varno as u32 == rti && (*v).varattno == col && (*v).varlevelsup == 0
    }
}

/// The value of a non-null text constant.
///
/// # Safety
/// `e` is a valid expression node.
unsafe fn text_const(e: *mut pg_sys::Node) -> Option<String> {
    // SAFETY: guaranteed by the caller; a text Const's datum is a varlena.
    unsafe {
        let e = bare(e);
        if (*e).type_ != pg_sys::NodeTag::T_Const {
            return None;
        }
        let c = e as *mut pg_sys::Const;
        if (*c).constisnull || !matches!((*c).consttype, pg_sys::TEXTOID | pg_sys::VARCHAROID) {
            return None;
        }
        Some(crate::fmgr::text_to_string((*c).constvalue))
    }
}

/// The non-null elements of a text[] constant.
///
/// # Safety
/// `e` is a valid expression node.
unsafe fn text_array_const(e: *mut pg_sys::Node) -> Vec<String> {
    // SAFETY: guaranteed by the caller; a text[] Const's datum is an array varlena.
    unsafe {
        let e = bare(e);
        if (*e).type_ != pg_sys::NodeTag::T_Const {
            return Vec::new();
        }
        let c = e as *mut pg_sys::Const;
        if (*c).constisnull || (*c).consttype != pg_sys::TEXTARRAYOID {
            return Vec::new();
        }
        let array =
            pg_sys::pg_detoast_datum((*c).constvalue.cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n = 0;
        pg_sys::deconstruct_array(
            array,
            pg_sys::TEXTOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        (0..n as usize)
            .filter(|&i| !*nulls.add(i))
            .map(|i| crate::fmgr::text_to_string(*elems.add(i)))
            .collect()
    }
}
