//! This backend's running statements and the tenant each was resolved for (see
//! `ruvector_tenancy::statement`). The executor hooks push a frame around every start, run
//! and finish of a statement; row-level security (through `ruvector.current_tenant()`), the
//! index scan and the quota trigger read the innermost frame's tenant.

use std::cell::RefCell;

use pgrx::pg_sys;
use ruvector_tenancy::statement::{Frames, Resolved};

thread_local! {
    static FRAMES: RefCell<Frames> = RefCell::new(Frames::default());
    /// Statements the extension itself runs (catalog queries, erasure), by the frame depth
    /// they start at, with the tenant they act for. Statements those start in turn (a
    /// table owner's triggers) start deeper and are checked like any other.
    static INTERNAL: RefCell<Vec<(usize, Option<Resolved>)>> = const { RefCell::new(Vec::new()) };
}

fn level() -> i32 {
    // SAFETY: plain query of the transaction nesting level.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

pub fn push(statement: usize, resolved: Option<Resolved>) {
    let level = level();
    FRAMES.with(|f| f.borrow_mut().push(statement, level, resolved));
}

pub fn pop(statement: usize) {
    FRAMES.with(|f| f.borrow_mut().pop(statement));
}

/// The innermost frame's tenant: `None` outside any statement, `Some(None)` while not yet
/// resolved.
pub fn current() -> Option<Option<Resolved>> {
    FRAMES.with(|f| f.borrow().current().map(|fr| fr.resolved))
}

/// The statement of the innermost frame.
pub fn current_statement() -> Option<usize> {
    FRAMES.with(|f| f.borrow().current().map(|fr| fr.statement))
}

/// Records the innermost frame's tenant, resolved on first use.
pub fn set_current(resolved: Resolved) {
    FRAMES.with(|f| {
        if let Some(fr) = f.borrow_mut().current_mut() {
            fr.resolved = Some(resolved);
        }
    });
}

/// Error cleanup: a subtransaction at `level` aborted, or (`None`) the transaction ended.
pub fn abort(level: Option<i32>) {
    FRAMES.with(|f| {
        let mut f = f.borrow_mut();
        match level {
            Some(l) => f.abort_subtransaction(l),
            None => f.clear(),
        }
    });
    INTERNAL.with(|i| {
        let mut i = i.borrow_mut();
        if level.is_none() {
            i.clear();
        }
    });
}

/// Runs `f`, whose statements the context layer does not check and which act for `tenant`
/// (`None`: for no tenant; catalog queries only).
pub fn internal<R>(tenant: Option<Resolved>, f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            INTERNAL.with(|i| i.borrow_mut().pop());
        }
    }
    let depth = FRAMES.with(|f| f.borrow().depth());
    INTERNAL.with(|i| i.borrow_mut().push((depth, tenant)));
    let _g = Guard;
    f()
}

/// Whether a statement starting now was started by the extension itself, and for which
/// tenant.
pub fn internal_here() -> Option<Option<Resolved>> {
    let depth = FRAMES.with(|f| f.borrow().depth());
    INTERNAL.with(|i| {
        i.borrow()
            .last()
            .and_then(|(d, t)| (*d == depth).then_some(*t))
    })
}

/// What a statement does to a tenant table, for statistics and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Search,
    Insert,
    Update,
    Delete,
    Merge,
    Truncate,
    Other,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::Search => "search",
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Merge => "merge",
            Operation::Truncate => "truncate",
            Operation::Other => "other",
        }
    }
}
