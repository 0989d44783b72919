//! The tenant context layer's decisions, as pure functions of the facts they depend on: who
//! may use a context, which commands need the `'*'` context, and which tenants an index scan
//! searches. The extension gathers the facts (lazily: each is a catalog or shared-memory
//! lookup) and turns a [`Denial`] into an error with its SQLSTATE.

use crate::registry::TenantState;
use crate::statement::Resolved;
use crate::tenant_id::TenantContext;

/// Why a context may not be used, or a command not run under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No context on a statement that needs one.
    NoContext,
    /// `'*'` for someone who is not an administrator.
    WildcardDenied,
    /// The session's role is bound to another tenant.
    RoleBound { role: String, bound: String },
    /// The tenant is suspended.
    Suspended,
    /// The tenant was deleted.
    Deleted,
    /// No tenant with this id in this database.
    Unknown,
    /// The command needs `'*'` (it ignores row-level security, or blocks every tenant).
    NeedsWildcard,
}

/// Whether `ctx` may be used now. Facts are asked for only when the decision needs them:
/// `is_admin` for `'*'`; `binding` (the session role and the tenant it is bound to, if any)
/// and `lookup` (the tenant's registry slot and state) for a tenant id. Returns the tenant's
/// slot (`None` for `'*'`).
pub fn may_use(
    ctx: TenantContext<'_>,
    is_admin: impl FnOnce() -> bool,
    binding: impl FnOnce() -> Option<(String, String)>,
    lookup: impl FnOnce(&str) -> Option<(usize, TenantState)>,
) -> Result<Option<usize>, Denial> {
    match ctx {
        TenantContext::None => Err(Denial::NoContext),
        TenantContext::All if is_admin() => Ok(None),
        TenantContext::All => Err(Denial::WildcardDenied),
        TenantContext::Tenant(id) => {
            if let Some((role, bound)) = binding().filter(|(_, b)| b != id) {
                return Err(Denial::RoleBound { role, bound });
            }
            match lookup(id) {
                Some((slot, state)) => active(state).map(|()| Some(slot)),
                None => Err(Denial::Unknown),
            }
        }
    }
}

/// Whether a registered tenant in `state` may act (also checked again while a statement of
/// it runs).
pub fn active(state: TenantState) -> Result<(), Denial> {
    match state {
        TenantState::Active => Ok(()),
        TenantState::Suspended => Err(Denial::Suspended),
        _ => Err(Denial::Deleted),
    }
}

/// TRUNCATE ignores row-level security: on a tenant table only `'*'` may run it (and no
/// context is refused as such).
pub fn truncate(ctx: TenantContext<'_>) -> Result<(), Denial> {
    match ctx {
        TenantContext::All => Ok(()),
        TenantContext::None => Err(Denial::NoContext),
        TenantContext::Tenant(_) => Err(Denial::NeedsWildcard),
    }
}

/// `LOCK TABLE` of a tenant table: a tenant may take the locks its own statements take (up
/// to ROW EXCLUSIVE, `blocks_others` false); a stronger lock blocks every tenant's writes,
/// so it needs `'*'`.
pub fn lock(resolved: &Resolved, blocks_others: bool) -> Result<(), Denial> {
    match resolved {
        Resolved::None => Err(Denial::NoContext),
        Resolved::All => Ok(()),
        Resolved::Tenant { .. } if blocks_others => Err(Denial::NeedsWildcard),
        Resolved::Tenant { .. } => Ok(()),
    }
}

/// Which tenants an index scan of a tenant-keyed index searches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Search<'a> {
    /// Only this tenant's graph.
    One(&'a [u8]),
    /// Every tenant's graph, merged in distance order.
    All,
    /// No tenant: the conditions exclude every row the statement may see.
    Nothing,
}

/// The tenants a scan searches, for the statement's tenant and the tenant its conditions
/// name (`named`: `Some` when `tenant_id = x` appears; two different names leave nothing,
/// which the caller decides before). One tenant's statement searches that tenant alone
/// whatever it names; `'*'` searches the named tenant or all.
pub fn scan<'a>(resolved: &'a Resolved, named: Option<&'a [u8]>) -> Result<Search<'a>, Denial> {
    match resolved {
        Resolved::None => Err(Denial::NoContext),
        Resolved::Tenant { key, .. } => {
            let own = key.as_str().as_bytes();
            Ok(match named {
                Some(n) if n != own => Search::Nothing,
                _ => Search::One(own),
            })
        }
        Resolved::All => Ok(named.map_or(Search::All, Search::One)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::TenantKey;

    fn tenant(id: &str) -> Resolved {
        Resolved::Tenant {
            slot: 3,
            key: TenantKey::new(id).unwrap(),
        }
    }

    fn found_active(_: &str) -> Option<(usize, TenantState)> {
        Some((3, TenantState::Active))
    }

    fn unbound() -> Option<(String, String)> {
        None
    }

    #[test]
    fn no_context_is_refused() {
        let r = may_use(TenantContext::None, || true, unbound, found_active);
        assert_eq!(r, Err(Denial::NoContext));
    }

    #[test]
    fn the_wildcard_is_for_administrators_only() {
        assert_eq!(
            may_use(TenantContext::All, || true, unbound, found_active),
            Ok(None)
        );
        assert_eq!(
            may_use(TenantContext::All, || false, unbound, found_active),
            Err(Denial::WildcardDenied)
        );
        // An administrator's wildcard needs no binding or tenant lookup.
        let r = may_use(
            TenantContext::All,
            || true,
            || panic!("no binding lookup for '*'"),
            |_| panic!("no tenant lookup for '*'"),
        );
        assert_eq!(r, Ok(None));
    }

    #[test]
    fn a_tenant_must_be_active_and_the_roles_own() {
        let t = TenantContext::Tenant("acme");
        assert_eq!(
            may_use(t, || panic!("no admin check"), unbound, found_active),
            Ok(Some(3))
        );
        let bound_elsewhere = || Some(("app".to_string(), "beta".to_string()));
        assert_eq!(
            may_use(t, || true, bound_elsewhere, found_active),
            Err(Denial::RoleBound {
                role: "app".into(),
                bound: "beta".into()
            }),
            "a binding holds for administrators too"
        );
        let bound_here = || Some(("app".to_string(), "acme".to_string()));
        assert_eq!(may_use(t, || false, bound_here, found_active), Ok(Some(3)));
        for (state, denial) in [
            (TenantState::Suspended, Denial::Suspended),
            (TenantState::Deleted, Denial::Deleted),
        ] {
            assert_eq!(
                may_use(t, || false, unbound, |_| Some((3, state))),
                Err(denial)
            );
        }
        assert_eq!(
            may_use(t, || false, unbound, |_| None),
            Err(Denial::Unknown)
        );
    }

    #[test]
    fn only_active_tenants_act() {
        assert_eq!(active(TenantState::Active), Ok(()));
        assert_eq!(active(TenantState::Suspended), Err(Denial::Suspended));
        assert_eq!(active(TenantState::Deleted), Err(Denial::Deleted));
    }

    #[test]
    fn truncate_needs_the_wildcard() {
        assert_eq!(truncate(TenantContext::All), Ok(()));
        assert_eq!(truncate(TenantContext::None), Err(Denial::NoContext));
        assert_eq!(
            truncate(TenantContext::Tenant("acme")),
            Err(Denial::NeedsWildcard)
        );
    }

    #[test]
    fn tenants_may_take_only_the_locks_their_statements_take() {
        assert_eq!(lock(&tenant("a"), false), Ok(()));
        assert_eq!(lock(&tenant("a"), true), Err(Denial::NeedsWildcard));
        assert_eq!(lock(&Resolved::All, true), Ok(()));
        assert_eq!(lock(&Resolved::None, false), Err(Denial::NoContext));
    }

    #[test]
    fn a_scan_searches_its_own_tenant_whatever_it_names() {
        let a = tenant("a");
        assert_eq!(scan(&a, None), Ok(Search::One(b"a")));
        assert_eq!(scan(&a, Some(b"a")), Ok(Search::One(b"a")));
        assert_eq!(scan(&a, Some(b"b")), Ok(Search::Nothing));
        assert_eq!(scan(&Resolved::All, None), Ok(Search::All));
        assert_eq!(scan(&Resolved::All, Some(b"b")), Ok(Search::One(b"b")));
        assert_eq!(scan(&Resolved::None, None), Err(Denial::NoContext));
    }
}
