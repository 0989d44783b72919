//! One validated tenant per statement.
//!
//! `ruvector.tenant_id` is a setting, and a setting can change while a statement runs: a
//! `set_config(..., NULL, ...)` in a target list resets it to a default nobody checked, a
//! function declared `SET ruvector.tenant_id = ...` restores the previous value on exit
//! (while a cursor it opened is still being fetched). So the context is resolved once,
//! when a statement starts, into a [`Resolved`] value, and everything that acts for a tenant
//! (row-level security, index scans, the quota trigger, admission, statistics) reads that
//! value, never the setting. Whenever the setting is looked at again during the statement
//! it must still say the same ([`Resolved::matches`]); otherwise the statement is refused.
//!
//! [`Frames`] is the stack of statements a backend is running (a statement inside a
//! function runs on top of the one that called it), each with the tenant it was resolved
//! for. Frames are pushed around the executor's entry points and popped when they return;
//! an error unwinds past the pops, so a (sub)transaction abort drops the frames it left.

use crate::tenant_id::MAX_TENANT_ID_LEN;

/// A tenant id held by value (no allocation per statement).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TenantKey {
    len: u8,
    bytes: [u8; MAX_TENANT_ID_LEN],
}

impl TenantKey {
    /// `None` when `id` is longer than a tenant id can be.
    pub fn new(id: &str) -> Option<Self> {
        let b = id.as_bytes();
        if b.len() > MAX_TENANT_ID_LEN {
            return None;
        }
        let mut bytes = [0; MAX_TENANT_ID_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Some(TenantKey {
            len: b.len() as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Built from a &str, so always UTF-8; an empty string is the impossible fallback.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The tenant context a statement was validated for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Resolved {
    /// No context: the statement touches no tenant table (those are refused without one).
    None,
    /// `'*'`, validated for an administrator.
    All,
    /// One tenant, active when resolved, and its registry slot.
    Tenant { slot: usize, key: TenantKey },
}

impl Resolved {
    /// The tenant id, `"*"`, or `None`.
    pub fn name(&self) -> Option<&str> {
        match self {
            Resolved::None => None,
            Resolved::All => Some(crate::tenant_id::WILDCARD),
            Resolved::Tenant { key, .. } => Some(key.as_str()),
        }
    }

    /// The registry slot of a single tenant.
    pub fn slot(&self) -> Option<usize> {
        match self {
            Resolved::Tenant { slot, .. } => Some(*slot),
            _ => None,
        }
    }

    /// Whether the raw setting `setting` still names this context. Settings are validated
    /// when set, so comparing bytes is enough (this runs once per row a policy filters).
    pub fn matches(&self, setting: Option<&str>) -> bool {
        let s = setting.unwrap_or("").as_bytes();
        match self {
            Resolved::None => s.is_empty(),
            Resolved::All => s == crate::tenant_id::WILDCARD.as_bytes(),
            Resolved::Tenant { key, .. } => key.as_str().as_bytes() == s,
        }
    }
}

/// One running executor entry point (start, run or finish of a statement, or a utility
/// command on a tenant table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Identifies the statement (the address of its query descriptor).
    pub statement: usize,
    /// Transaction nesting level when the frame was pushed.
    pub level: i32,
    /// The statement's tenant; `None` until something asks (statements on tenant tables are
    /// resolved when they start).
    pub resolved: Option<Resolved>,
}

/// The frames of one backend, innermost last.
#[derive(Default, Debug)]
pub struct Frames {
    stack: Vec<Frame>,
}

impl Frames {
    pub fn push(&mut self, statement: usize, level: i32, resolved: Option<Resolved>) {
        self.stack.push(Frame {
            statement,
            level,
            resolved,
        });
    }

    /// Pops the innermost frame of `statement`, and any left above it by an error that a
    /// caller caught without a subtransaction.
    pub fn pop(&mut self, statement: usize) {
        if let Some(i) = self.stack.iter().rposition(|f| f.statement == statement) {
            self.stack.truncate(i);
        }
    }

    /// The innermost frame.
    pub fn current(&self) -> Option<&Frame> {
        self.stack.last()
    }

    pub fn current_mut(&mut self) -> Option<&mut Frame> {
        self.stack.last_mut()
    }

    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// A subtransaction at `level` aborted: its frames are gone.
    pub fn abort_subtransaction(&mut self, level: i32) {
        self.stack.retain(|f| f.level < level);
    }

    /// The transaction ended.
    pub fn clear(&mut self) {
        self.stack.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> Resolved {
        Resolved::Tenant {
            slot: 7,
            key: TenantKey::new(id).unwrap(),
        }
    }

    #[test]
    fn keys_hold_every_valid_id() {
        let long = "x".repeat(MAX_TENANT_ID_LEN);
        assert_eq!(TenantKey::new(&long).unwrap().as_str(), long);
        assert_eq!(TenantKey::new("acme").unwrap().as_str(), "acme");
        assert!(TenantKey::new(&"x".repeat(MAX_TENANT_ID_LEN + 1)).is_none());
        assert_ne!(TenantKey::new("a"), TenantKey::new("a\0"));
    }

    #[test]
    fn a_resolution_matches_only_the_setting_it_came_from() {
        let t1 = tenant("t1");
        assert!(t1.matches(Some("t1")));
        for other in [
            Some("t2"),
            Some("t1x"),
            Some("t"),
            Some("*"),
            Some(""),
            None,
        ] {
            assert!(!t1.matches(other), "{other:?}");
        }
        assert!(Resolved::All.matches(Some("*")));
        assert!(!Resolved::All.matches(Some("t1")));
        assert!(!Resolved::All.matches(None));
        assert!(Resolved::None.matches(None));
        assert!(Resolved::None.matches(Some("")));
        assert!(!Resolved::None.matches(Some("t1")));
        assert!(!Resolved::None.matches(Some("*")));
    }

    #[test]
    fn names_and_slots() {
        assert_eq!(tenant("t1").name(), Some("t1"));
        assert_eq!(tenant("t1").slot(), Some(7));
        assert_eq!(Resolved::All.name(), Some("*"));
        assert_eq!(Resolved::All.slot(), None);
        assert_eq!(Resolved::None.name(), None);
    }

    #[test]
    fn frames_nest_and_pop_in_order() {
        let mut f = Frames::default();
        f.push(1, 1, Some(tenant("t1")));
        f.push(2, 1, None);
        assert_eq!(f.current().unwrap().statement, 2);
        f.current_mut().unwrap().resolved = Some(Resolved::All);
        f.pop(2);
        assert_eq!(f.current().unwrap().resolved, Some(tenant("t1")));
        f.pop(1);
        assert!(f.current().is_none());
    }

    #[test]
    fn popping_a_statement_drops_frames_an_error_left_above_it() {
        let mut f = Frames::default();
        f.push(1, 1, None);
        f.push(2, 1, None);
        f.push(3, 1, None); // its pop was skipped by a caught error
        f.pop(2);
        assert_eq!(f.depth(), 1);
        f.pop(99); // unknown: nothing happens
        assert_eq!(f.depth(), 1);
    }

    #[test]
    fn the_same_statement_can_have_several_frames() {
        // A cursor's ExecutorRun pushes a frame each fetch, on top of older frames.
        let mut f = Frames::default();
        f.push(1, 1, Some(tenant("t1")));
        f.push(5, 1, Some(tenant("t1")));
        f.push(5, 1, Some(tenant("t1")));
        f.pop(5);
        assert_eq!(f.depth(), 2);
        assert_eq!(f.current().unwrap().statement, 5);
    }

    #[test]
    fn subtransaction_aborts_drop_only_their_frames() {
        let mut f = Frames::default();
        f.push(1, 1, Some(tenant("t1")));
        f.push(2, 2, None);
        f.push(3, 3, None);
        f.abort_subtransaction(3);
        assert_eq!(f.depth(), 2);
        f.abort_subtransaction(2);
        assert_eq!(f.depth(), 1);
        f.clear();
        assert_eq!(f.depth(), 0);
    }
}
