//! The context layer for utility statements (the ProcessUtility hook): commands that reach
//! a tenant table's rows or block its tenants without going through the executor, defaults
//! of `ruvector.tenant_id` that would bypass a role binding, and object kinds whose rows
//! row-level security would not cover.

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_tenancy::decide::{self, Denial};
use ruvector_tenancy::statement::Resolved;
use ruvector_tenancy::tenant_id::{parse_context, TenantContext};

use super::context::{guarded, refused, resolve, resolve_utility};
use super::statement::Operation;
use super::{catalog, statement};
use crate::errors::refusal;
use crate::fmgr::list_ptrs;
use crate::gucs;

static mut PREV_PROCESS_UTILITY: pg_sys::ProcessUtility_hook_type = None;

/// PostgreSQL's own utility entry point, called without pgrx's FFI guard (see
/// `context::raw`).
mod raw {
    use pgrx::pg_sys;

    unsafe extern "C-unwind" {
        #[allow(clippy::too_many_arguments)]
        pub fn standard_ProcessUtility(
            pstmt: *mut pg_sys::PlannedStmt,
            query_string: *const std::ffi::c_char,
            read_only_tree: bool,
            context: pg_sys::ProcessUtilityContext::Type,
            params: pg_sys::ParamListInfo,
            query_env: *mut pg_sys::QueryEnvironment,
            dest: *mut pg_sys::DestReceiver,
            qc: *mut pg_sys::QueryCompletion,
        );
    }
}

pub fn install_hook() {
    // SAFETY: hook chaining in _PG_init, single-threaded, once.
    unsafe {
        PREV_PROCESS_UTILITY = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// What the hook does around the command.
#[derive(Default)]
struct Around {
    /// The command reads or writes a tenant table's rows (COPY): its frame's tenant.
    frame: Option<Resolved>,
    /// An EXPLAIN ANALYZE: its statement is refused on tenant tables outside '*'.
    explain_analyze: bool,
    /// DROP DATABASE of this database oid: forget its tenants once it is gone.
    dropped_database: Option<u32>,
    /// A partial index of this tenant table: it may be a tenant's dedicated index.
    partial_index_on: Option<pg_sys::Oid>,
    /// `SET` of this setting: a pgvector setting without pgvector is checked, or warned about.
    set_name: Option<String>,
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: PostgreSQL passes a valid utility statement.
    let around = guarded(|| unsafe { before_process_utility(pstmt) });
    // SAFETY: as above; a statement that changes is a copy.
    let pstmt = guarded(|| unsafe {
        let pstmt = crate::ruhnsw::ddl::pgvector_method(pstmt, in_internal());
        crate::ruhnsw::ddl::with_tenant_key(pstmt, in_internal())
    });
    if around.explain_analyze {
        super::context::set_explain_analyze(true);
    }
    if around.frame.is_some() {
        statement::push(pstmt as usize, around.frame);
    }
    // SAFETY: chaining to the previous hook or the standard function with the same arguments.
    unsafe {
        PREV_PROCESS_UTILITY.unwrap_or(raw::standard_ProcessUtility)(
            pstmt,
            query_string,
            read_only_tree,
            context,
            params,
            query_env,
            dest,
            qc,
        )
    }
    if around.frame.is_some() {
        statement::pop(pstmt as usize);
    }
    if around.explain_analyze {
        super::context::set_explain_analyze(false);
    }
    if let Some(name) = &around.set_name {
        guarded(|| crate::vector::compat::after_set(name));
    }
    if let Some(table) = around.partial_index_on {
        guarded(|| super::tables::record_dedicated(table));
    }
    if let Some(db) = around.dropped_database {
        guarded(|| {
            if let Some(position) = super::shmem::forget_database(db) {
                super::worker::forget_position(position);
            }
        });
    }
}

fn in_internal() -> bool {
    statement::internal_here().is_some()
}

/// The relation a RangeVar names, without locking it (the command locks it next);
/// `InvalidOid` when it does not exist.
///
/// # Safety
/// `rv` is a valid RangeVar.
unsafe fn relation_of(rv: *mut pg_sys::RangeVar) -> pg_sys::Oid {
    // SAFETY: guaranteed by the caller.
    unsafe {
        pg_sys::RangeVarGetRelidExtended(
            rv,
            pg_sys::NoLock as _,
            pg_sys::RVROption::RVR_MISSING_OK,
            None,
            std::ptr::null_mut(),
        )
    }
}

/// # Safety
/// `list` is NULL or a List of RangeVars.
unsafe fn relations_of(list: *mut pg_sys::List) -> Vec<pg_sys::Oid> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        list_ptrs(list)
            .into_iter()
            .map(|rv| relation_of(rv as *mut pg_sys::RangeVar))
            .filter(|oid| *oid != pg_sys::InvalidOid)
            .collect()
    }
}

/// # Safety
/// `pstmt` is a valid utility PlannedStmt.
unsafe fn before_process_utility(pstmt: *mut pg_sys::PlannedStmt) -> Around {
    let mut around = Around::default();
    // SAFETY: guaranteed by the caller; each branch reads the node type it matched.
    unsafe {
        let node = (*pstmt).utilityStmt;
        if node.is_null() || in_internal() {
            return around;
        }
        match (*node).type_ {
            pg_sys::NodeTag::T_TruncateStmt => truncate(&relations_of(
                (*(node as *mut pg_sys::TruncateStmt)).relations,
            )),
            pg_sys::NodeTag::T_LockStmt => {
                let stmt = node as *mut pg_sys::LockStmt;
                lock(&relations_of((*stmt).relations), (*stmt).mode);
            }
            pg_sys::NodeTag::T_CopyStmt => {
                let stmt = node as *mut pg_sys::CopyStmt;
                // COPY (query) TO runs its query through the executor, which checks it.
                if !(*stmt).relation.is_null() {
                    let op = if (*stmt).is_from {
                        Operation::Insert
                    } else {
                        Operation::Search
                    };
                    around.frame = resolve_utility(&[relation_of((*stmt).relation)], op);
                }
            }
            pg_sys::NodeTag::T_ExplainStmt => {
                let stmt = node as *mut pg_sys::ExplainStmt;
                around.explain_analyze = list_ptrs((*stmt).options).into_iter().any(|d| {
                    let def = d as *mut pg_sys::DefElem;
                    std::ffi::CStr::from_ptr((*def).defname).to_bytes() == b"analyze"
                        && pg_sys::defGetBoolean(def)
                });
            }
            pg_sys::NodeTag::T_VariableSetStmt => {
                let stmt = node as *mut pg_sys::VariableSetStmt;
                if !(*stmt).name.is_null() {
                    around.set_name = Some(
                        std::ffi::CStr::from_ptr((*stmt).name)
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
            pg_sys::NodeTag::T_AlterRoleSetStmt => {
                let stmt = node as *mut pg_sys::AlterRoleSetStmt;
                role_default((*stmt).role, (*stmt).database, (*stmt).setstmt);
            }
            pg_sys::NodeTag::T_AlterDatabaseSetStmt => {
                let stmt = node as *mut pg_sys::AlterDatabaseSetStmt;
                let value = new_default((*stmt).setstmt);
                if parse_context(value.as_deref()) == Ok(TenantContext::All) {
                    crate::errors::refuse(refusal(
                        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                        "wildcard_default",
                        "the tenant context \"*\" cannot be a database default".into(),
                        "It would be every session's context, of every role.".into(),
                        "Administrators set it in their own sessions: SET ruvector.tenant_id = '*'.",
                    ));
                }
            }
            pg_sys::NodeTag::T_CreateStmt => {
                let stmt = node as *mut pg_sys::CreateStmt;
                if relations_of((*stmt).inhRelations)
                    .into_iter()
                    .any(catalog::is_tenant_table)
                {
                    no_inheritance();
                }
            }
            pg_sys::NodeTag::T_AlterTableStmt => {
                let stmt = node as *mut pg_sys::AlterTableStmt;
                for c in list_ptrs((*stmt).cmds) {
                    let cmd = c as *mut pg_sys::AlterTableCmd;
                    let this = relation_of((*stmt).relation);
                    let trigger = || {
                        (*cmd).name.is_null()
                            || std::ffi::CStr::from_ptr((*cmd).name).to_bytes() == b"ruvector_quota"
                    };
                    let other = match (*cmd).subtype {
                        pg_sys::AlterTableType::AT_AddInherit => {
                            relation_of((*cmd).def as *mut pg_sys::RangeVar)
                        }
                        pg_sys::AlterTableType::AT_AttachPartition => {
                            relation_of((*((*cmd).def as *mut pg_sys::PartitionCmd)).name)
                        }
                        pg_sys::AlterTableType::AT_DisableRowSecurity => {
                            keep_confined(this, "DISABLE ROW LEVEL SECURITY");
                            continue;
                        }
                        pg_sys::AlterTableType::AT_NoForceRowSecurity => {
                            keep_confined(this, "NO FORCE ROW LEVEL SECURITY");
                            continue;
                        }
                        pg_sys::AlterTableType::AT_DisableTrig
                        | pg_sys::AlterTableType::AT_DisableTrigAll
                        | pg_sys::AlterTableType::AT_DisableTrigUser
                            if trigger() =>
                        {
                            keep_confined(this, "DISABLE TRIGGER of the quota trigger");
                            continue;
                        }
                        _ => continue,
                    };
                    if catalog::is_tenant_table(this) || catalog::is_tenant_table(other) {
                        no_inheritance();
                    }
                }
            }
            pg_sys::NodeTag::T_IndexStmt => {
                let stmt = node as *mut pg_sys::IndexStmt;
                let table = relation_of((*stmt).relation);
                if !(*stmt).whereClause.is_null() && catalog::is_tenant_table(table) {
                    around.partial_index_on = Some(table);
                }
            }
            pg_sys::NodeTag::T_DropStmt => {
                let stmt = node as *mut pg_sys::DropStmt;
                let kind = (*stmt).removeType;
                for name in list_ptrs((*stmt).objects) {
                    let name = name as *mut pg_sys::List;
                    if kind == pg_sys::ObjectType::OBJECT_INDEX {
                        keep_dedicated(relation_of(pg_sys::makeRangeVarFromNameList(name)));
                    } else if kind == pg_sys::ObjectType::OBJECT_POLICY
                        || kind == pg_sys::ObjectType::OBJECT_TRIGGER
                    {
                        // [schema,] table, policy or trigger
                        let last = list_ptrs(name).last().map(|v| {
                            std::ffi::CStr::from_ptr((*(*v as *mut pg_sys::String)).sval)
                                .to_bytes()
                                .to_vec()
                        });
                        // Ours only: dropping another policy removes a narrowing or a
                        // widening, never more than tenant_isolation allows.
                        let ours: &[&[u8]] = if kind == pg_sys::ObjectType::OBJECT_TRIGGER {
                            &[b"ruvector_quota"]
                        } else {
                            &[b"tenant_isolation", b"admin_bypass"]
                        };
                        if !last.is_some_and(|l| ours.contains(&l.as_slice())) {
                            continue;
                        }
                        let table =
                            pg_sys::list_truncate(pg_sys::list_copy(name), (*name).length - 1);
                        let what = if kind == pg_sys::ObjectType::OBJECT_POLICY {
                            "DROP POLICY"
                        } else {
                            "DROP TRIGGER of the quota trigger"
                        };
                        keep_confined(relation_of(pg_sys::makeRangeVarFromNameList(table)), what);
                    }
                }
            }
            pg_sys::NodeTag::T_CreatePolicyStmt => {
                let stmt = node as *mut pg_sys::CreatePolicyStmt;
                // A restrictive policy only narrows what a tenant sees; a permissive one is
                // ORed with tenant_isolation and can open every row.
                if (*stmt).permissive {
                    keep_confined(relation_of((*stmt).table), "CREATE POLICY (permissive)");
                }
            }
            pg_sys::NodeTag::T_AlterPolicyStmt => {
                let stmt = node as *mut pg_sys::AlterPolicyStmt;
                keep_confined(relation_of((*stmt).table), "ALTER POLICY");
            }
            pg_sys::NodeTag::T_DropdbStmt => {
                let stmt = node as *mut pg_sys::DropdbStmt;
                let db = pg_sys::get_database_oid((*stmt).dbname, true);
                if db != pg_sys::InvalidOid {
                    around.dropped_database = Some(db.to_u32());
                }
            }
            _ => {}
        }
    }
    around
}

/// Refuses `what`, a change that would stop confining the tenants of tenant table `table`
/// (row-level security switched off or widened, the quota trigger dropped or disabled),
/// unless an administrator does it under `'*'`, who gets a warning.
fn keep_confined(table: pg_sys::Oid, what: &str) {
    if table == pg_sys::InvalidOid || !catalog::is_tenant_table(table) {
        return;
    }
    let name = crate::backend::relation_name(table);
    if gucs::tenant_context() == TenantContext::All && crate::backend::is_admin() {
        pgrx::warning!(
            "{what} on tenant table {name}: its tenants are no longer confined as before"
        );
        return;
    }
    crate::errors::refuse(refusal(
        PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        "confinement_weakened",
        format!("{what} on tenant table {name} is refused"),
        "Row-level security with the policies tenant_isolation and admin_bypass, and the quota trigger, confine every tenant to its own rows and limits; this would let a tenant reach other tenants' rows or pass its quota.".into(),
        "An administrator can do it under SET ruvector.tenant_id = '*'. A RESTRICTIVE policy, which only narrows what a tenant sees, can be added by the owner.",
    ));
}

/// Refuses to drop a dedicated index that answers for its tenant: the shared index no
/// longer holds the tenant's newer rows.
fn keep_dedicated(index: pg_sys::Oid) {
    if index == pg_sys::InvalidOid {
        return;
    }
    let Some((shared, tenant)) = crate::ruhnsw::dedicated::serving(index) else {
        return;
    };
    let name = crate::backend::relation_name;
    crate::errors::index_error(
        PgSqlErrorCode::ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST,
        format!(
            "index \"{}\" is the dedicated index of tenant \"{tenant}\"; ruhnsw index \"{}\" does not hold the tenant's newer rows",
            name(index),
            name(shared)
        ),
        Some(&format!(
            "SELECT ruvector_tenant_migrate('{tenant}', 'shared') moves the tenant back and drops it."
        )),
    )
}

fn no_inheritance() -> ! {
    crate::errors::refuse(refusal(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        "inheritance",
        "a tenant table cannot take part in inheritance or partitioning".into(),
        "Row-level security of a parent does not protect rows read through a child or partition, and a child's own policies do not apply through its parent.".into(),
        "Keep tenant tables stand-alone; a tenant-keyed ruhnsw index gives each tenant its own graph in one table.",
    ))
}

/// TRUNCATE ignores row-level security: on a tenant table it needs the '*' context.
fn truncate(relids: &[pg_sys::Oid]) {
    if !relids.iter().any(|r| catalog::is_tenant_table(*r)) {
        return;
    }
    let ctx = gucs::tenant_context();
    let verdict = match decide::truncate(ctx) {
        Err(Denial::NeedsWildcard) => Err(refusal(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "truncate_denied",
            "TRUNCATE of a tenant table requires the tenant context \"*\"".into(),
            "TRUNCATE removes every tenant's rows and ignores row-level security.".into(),
            "Use DELETE to remove this tenant's rows, or ask an administrator.",
        )),
        Err(d) => Err(crate::errors::denied(d, "")),
        // '*' itself is still checked: only administrators may use it.
        Ok(()) => resolve(ctx).map(|_| ()),
    };
    if let Err(r) = verdict {
        refused(ctx, Operation::Truncate, r);
    }
    super::audit::write("*", "truncate", "{}");
}

/// LOCK TABLE: a tenant may take the locks its own statements take (up to ROW EXCLUSIVE);
/// a stronger lock would block every other tenant's statements on the table, so it needs
/// the '*' context.
fn lock(relids: &[pg_sys::Oid], mode: i32) {
    // LOCK on a view locks the tables it reads, recursively.
    let relids = with_view_bases(relids);
    let Some(r) = resolve_utility(&relids, Operation::Other) else {
        return;
    };
    if decide::lock(&r, mode > pg_sys::RowExclusiveLock as i32).is_err() {
        refused(
            super::context::context_of(&r),
            Operation::Other,
            refusal(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "lock_denied",
                "this lock mode on a tenant table requires the tenant context \"*\"".into(),
                "A lock stronger than ROW EXCLUSIVE blocks every tenant's writes to the table."
                    .into(),
                "Lock your own rows with SELECT ... FOR UPDATE, or ask an administrator.",
            ),
        );
    }
}

/// `relids` and every relation the views among them read, recursively (what LOCK TABLE
/// locks).
fn with_view_bases(relids: &[pg_sys::Oid]) -> Vec<pg_sys::Oid> {
    let oids: Vec<i64> = relids.iter().map(|o| i64::from(o.to_u32())).collect();
    catalog::as_superuser(|| {
        pgrx::spi::Spi::connect(|client| {
            client
                .select(
                    "WITH RECURSIVE r(oid) AS ( \
                         SELECT unnest($1::bigint[])::oid \
                         UNION \
                         SELECT d.refobjid FROM r \
                         JOIN pg_catalog.pg_rewrite w ON w.ev_class = r.oid \
                         JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass \
                              AND d.objid = w.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass \
                              AND d.refobjid <> r.oid) \
                     SELECT oid FROM r",
                    None,
                    &[oids.into()],
                )
                .expect("reading view dependencies")
                .filter_map(|row| row.get::<pg_sys::Oid>(1).ok().flatten())
                .collect()
        })
    })
}

/// The value a `SET ruvector.tenant_id = ...` inside ALTER ROLE/DATABASE would store.
///
/// # Safety
/// `set` is a valid VariableSetStmt.
unsafe fn new_default(set: *mut pg_sys::VariableSetStmt) -> Option<String> {
    // SAFETY: guaranteed by the caller; ExtractSetVariableArgs returns a palloc'd string or
    // NULL (RESET).
    unsafe {
        if set.is_null()
            || (*set).name.is_null()
            || (*set).kind != pg_sys::VariableSetKind::VAR_SET_VALUE
            || !std::ffi::CStr::from_ptr((*set).name)
                .to_bytes()
                .eq_ignore_ascii_case(b"ruvector.tenant_id")
        {
            return None;
        }
        let v = pg_sys::ExtractSetVariableArgs(set);
        (!v.is_null()).then(|| std::ffi::CStr::from_ptr(v).to_string_lossy().into_owned())
    }
}

/// `ALTER ROLE ... SET ruvector.tenant_id`: a default is a context like any other, so a role
/// bound to a tenant cannot be given another one (it would be its RESET value), and '*'
/// only to administrators.
///
/// # Safety
/// The arguments come from a valid AlterRoleSetStmt.
unsafe fn role_default(
    role: *mut pg_sys::RoleSpec,
    database: *const std::ffi::c_char,
    set: *mut pg_sys::VariableSetStmt,
) {
    // SAFETY: guaranteed by the caller.
    let Some(value) = (unsafe { new_default(set) }) else {
        return;
    };
    // Malformed values are refused by the setting's own check.
    let Ok(ctx) = parse_context(Some(&value)) else {
        return;
    };
    // SAFETY: a role lookup in a transaction; NULL means ALTER ROLE ALL.
    let oid = (!role.is_null()).then(|| unsafe { pg_sys::get_rolespec_oid(role, true) });
    match ctx {
        TenantContext::All if !oid.is_some_and(crate::backend::role_is_admin) => {
            crate::errors::refuse(refusal(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                "wildcard_default",
                "only an administrator can have the tenant context \"*\" as a default".into(),
                "The context \"*\" is for superusers and members of ruvector_admin.".into(),
                "Set a tenant id, or grant ruvector_admin to the role first.",
            ))
        }
        TenantContext::Tenant(id) => {
            // SAFETY: plain read of a backend global; the name is a palloc'd copy or NULL.
            let here = unsafe {
                database.is_null()
                    || pg_sys::get_database_oid(database, true) == pg_sys::MyDatabaseId
            };
            let Some(oid) = oid else { return };
            if !here || !catalog::extension_present() {
                return;
            }
            let name = crate::backend::role_name(oid);
            if let Some(bound) = catalog::binding(&name).filter(|b| b != id) {
                crate::errors::refuse(refusal(
                    PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                    "role_bound",
                    format!("role \"{name}\" is bound to another tenant"),
                    format!("Sessions of role \"{name}\" can only use tenant \"{bound}\"."),
                    "A bound role's default tenant can only be its own tenant.",
                ))
            }
        }
        _ => {}
    }
}
