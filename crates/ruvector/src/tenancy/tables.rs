//! Tenant tables: registering a table (`ruvector_enable_tenant_rls`) and removing a deleted
//! tenant's rows from every one (`ruvector._delete_tenant_rows`).
//!
//! Only ordinary, permanent, stand-alone tables can be tenant tables: row-level security of
//! a parent does not cover rows read through a child or partition, a view or foreign table
//! has no rows of its own to protect, and a temporary table belongs to one session. The
//! extension reads registered tables as a superuser only to count rows (no one's code runs
//! for that), and changes their rows only as the table's owner inside a security-restricted
//! operation, so a trigger on a tenant table never runs with more rights than its owner's.

use pgrx::pg_sys;
use pgrx::spi::{quote_identifier, quote_literal, Spi};
use pgrx::{PgLogLevel, PgSqlErrorCode};
use ruvector_tenancy::statement::{Resolved, TenantKey};

use super::{catalog, quota, shmem, statement};
use crate::fmgr::arg_text;

fn fail(code: PgSqlErrorCode, message: String, detail: &str, hint: &str) -> ! {
    crate::errors::refuse(crate::errors::refusal(
        code,
        "registration",
        message,
        detail.into(),
        hint,
    ))
}

/// What registration needs to know about a relation.
struct Relation {
    qualified: String,
    relkind: u8,
    persistence: u8,
    partition: bool,
    inherits: bool,
    column_type: Option<pg_sys::Oid>,
    column_number: i16,
}

fn describe(rel: pg_sys::Oid, column: &str) -> Relation {
    catalog::as_superuser(|| {
        Spi::connect(|client| {
            let rows = client
                .select(
                    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                     c.relkind::text, c.relpersistence::text, c.relispartition, \
                     EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i \
                             WHERE i.inhrelid = c.oid OR i.inhparent = c.oid), \
                     a.atttypid, a.attnum \
                     FROM pg_catalog.pg_class c \
                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                     LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
                          AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped \
                     WHERE c.oid = $1",
                    None,
                    &[rel.into(), column.into()],
                )
                .expect("reading pg_class");
            let row = rows.first();
            let text = |n| -> String { row.get::<String>(n).ok().flatten().unwrap_or_default() };
            Relation {
                qualified: text(1),
                relkind: text(2).bytes().next().unwrap_or(0),
                persistence: text(3).bytes().next().unwrap_or(0),
                partition: row.get::<bool>(4).ok().flatten().unwrap_or(false),
                inherits: row.get::<bool>(5).ok().flatten().unwrap_or(false),
                column_type: row.get::<pg_sys::Oid>(6).ok().flatten(),
                column_number: row.get::<i16>(7).ok().flatten().unwrap_or(0),
            }
        })
    })
}

fn owns(rel: pg_sys::Oid) -> bool {
    // SAFETY: ownership check in a transaction.
    unsafe {
        #[cfg(feature = "pg15")]
        {
            pg_sys::pg_class_ownercheck(rel, pg_sys::GetUserId())
        }
        #[cfg(not(feature = "pg15"))]
        {
            pg_sys::object_ownercheck(pg_sys::RelationRelationId, rel, pg_sys::GetUserId())
        }
    }
}

/// Refuses every relation registration does not accept, with the reason.
fn check(rel: &Relation, name: &str, column: &str) {
    if rel.relkind == b'p' || rel.partition || rel.inherits {
        fail(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("table {name} takes part in inheritance or partitioning"),
            "Row-level security of a parent does not protect rows read through a child or partition, and a child's own policies do not apply through its parent.",
            "Register a stand-alone table; a tenant-keyed ruhnsw index gives each tenant its own graph in one table.",
        );
    }
    if rel.relkind != b'r' {
        fail(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("\"{name}\" is not an ordinary table"),
            "Only tables hold tenant rows: views, materialized views, foreign tables and sequences cannot be tenant tables.",
            "Register the table a view reads; the view is then confined with it.",
        );
    }
    if rel.persistence == b't' {
        fail(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            format!("temporary table {name} cannot be a tenant table"),
            "A temporary table belongs to one session; tenant deletion and erasure must reach every tenant table.",
            "Use an ordinary table.",
        );
    }
    match rel.column_type {
        None => fail(
            PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
            format!("column \"{column}\" of relation {name} does not exist"),
            "",
            "Name the tenant column as the second argument.",
        ),
        Some(t) if t != pg_sys::TEXTOID && t != pg_sys::VARCHAROID => fail(
            PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
            format!("tenant column \"{column}\" of {name} must be of type text or varchar"),
            "Tenant ids are text; the column is compared with ruvector.current_tenant().",
            "ALTER TABLE ... ALTER COLUMN ... TYPE text.",
        ),
        _ => {}
    }
}

pg_fn! {
    /// `ruvector_enable_tenant_rls(table text, column text DEFAULT 'tenant_id')`: makes an
    /// ordinary table a tenant table. The caller must own it. Enables and forces row-level
    /// security with the policies `tenant_isolation` and `admin_bypass` (both comparing with
    /// `ruvector.current_tenant()`), installs the quota trigger, registers the table, and
    /// counts the rows it already holds against their tenants' quotas.
    fn enable_tenant_rls(fcinfo) {
        // SAFETY: two non-null text arguments (STRICT).
        let (name, column) = unsafe { (arg_text(fcinfo, 0), arg_text(fcinfo, 1)) };
        // Resolved with the caller's search_path, as the spec's unqualified names expect.
        let rel = Spi::get_one_with_args::<pg_sys::Oid>("SELECT $1::regclass::oid", &[name.as_str().into()])
            .ok()
            .flatten()
            .expect("regclass resolves or raises");
        let info = describe(rel, &column);
        if !owns(rel) {
            fail(
                PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
                format!("must be owner of table {}", info.qualified),
                "Only a table's owner can make it a tenant table.",
                "Run this as the table's owner.",
            );
        }
        check(&info, &info.qualified, &column);
        let q = &info.qualified;
        let col = quote_identifier(&column);
        // The caller owns the table: its own DDL, as itself. Existing policies of these names
        // are replaced (without a notice per object).
        let existing = |catalog_sql: &str| {
            Spi::get_one_with_args::<bool>(catalog_sql, &[rel.into()])
                .ok()
                .flatten()
                .unwrap_or(false)
        };
        let mut ddl = vec![
            format!("ALTER TABLE {q} ENABLE ROW LEVEL SECURITY"),
            format!("ALTER TABLE {q} FORCE ROW LEVEL SECURITY"),
        ];
        for policy in ["tenant_isolation", "admin_bypass"] {
            if existing(&format!(
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = $1 AND polname = '{policy}')"
            )) {
                ddl.push(format!("DROP POLICY {policy} ON {q}"));
            }
        }
        ddl.push(format!(
            "CREATE POLICY tenant_isolation ON {q} \
             USING ({col} OPERATOR(pg_catalog.=) ruvector.current_tenant()) \
             WITH CHECK ({col} OPERATOR(pg_catalog.=) ruvector.current_tenant())"
        ));
        // Administrators see every tenant only under the '*' context; under a tenant id they
        // are confined like everyone else.
        ddl.push(format!(
            "CREATE POLICY admin_bypass ON {q} FOR ALL TO ruvector_admin \
             USING (ruvector.current_tenant() OPERATOR(pg_catalog.=) '*') \
             WITH CHECK (ruvector.current_tenant() OPERATOR(pg_catalog.=) '*')"
        ));
        // The extension's own statements: re-registering replaces the policies.
        statement::internal(None, || {
            for sql in ddl {
                Spi::run(&sql).expect("row-level security of the tenant table");
            }
        });
        let had_trigger = existing(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = $1 AND tgname = 'ruvector_quota')",
        );
        let fresh = catalog::as_superuser(|| {
            // The quota trigger's function is not executable by anyone but the extension.
            if had_trigger {
                Spi::run(&format!("DROP TRIGGER ruvector_quota ON {q}")).expect("the quota trigger");
            }
            Spi::run(&format!(
                "CREATE TRIGGER ruvector_quota AFTER INSERT OR UPDATE OR DELETE ON {q} \
                 FOR EACH ROW EXECUTE FUNCTION ruvector._quota_trigger()"
            ))
            .expect("the quota trigger");
            let fresh = !Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM ruvector.tenant_tables WHERE relid = $1::oid::regclass)",
                &[rel.into()],
            )
            .ok()
            .flatten()
            .unwrap_or(false);
            Spi::run_with_args(
                "INSERT INTO ruvector.tenant_tables (relid, tenant_column) VALUES ($1::oid::regclass, $2) \
                 ON CONFLICT (relid) DO UPDATE SET tenant_column = excluded.tenant_column",
                &[rel.into(), column.as_str().into()],
            )
            .expect("registering the tenant table");
            fresh
        });
        if fresh {
            adopt_rows(q, &col);
        }
        key_by_tenant(rel, &col);
        super::functions::mark_tables_changed();
        warn_shared_keys(rel, info.column_number);
        warn_raw_setting_policies(rel);
        pg_sys::Datum::from(0)
    }
}

/// Rebuilds every `ruhnsw` index of the table that is not keyed by tenant (made before the
/// table was registered, as the specification's order does) with the tenant column `col`
/// as its second key, under its own name: each tenant then gets its own graph. The caller
/// owns the table; ALTER TABLE above already holds it exclusively, so the rebuild blocks
/// nothing more.
fn key_by_tenant(rel: pg_sys::Oid, col: &str) {
    let indexes = Spi::connect(|client| {
        client
            .select(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_catalog.pg_get_indexdef(i.indexrelid)                  FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid                  JOIN pg_catalog.pg_am a ON a.oid = c.relam                  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace                  WHERE i.indrelid = $1 AND a.amname = 'ruhnsw' AND i.indnkeyatts = 1",
                None,
                &[rel.into()],
            )
            .expect("reading pg_index")
            .filter_map(|r| Some((r.get::<String>(1).ok()??, r.get::<String>(2).ok()??)))
            .collect::<Vec<_>>()
    });
    for (name, definition) in indexes {
        let Some(keyed) = ruvector_tenancy::index_ddl::with_key_column(&definition, col) else {
            continue;
        };
        Spi::run(&format!("DROP INDEX {name}")).expect("dropping the index to rebuild");
        Spi::run(&keyed).expect("rebuilding the index keyed by tenant");
        pgrx::notice!(
            "ruhnsw index {name} was rebuilt keyed by tenant: each tenant has its own graph"
        );
    }
    record_dedicated(rel);
}

/// Records the level of tenants that a new partial index made dedicated (the DDL form of a
/// dedicated index) in `ruvector.tenants`. Outside a migration (whose worker builds such
/// indexes itself) the index is an operator's decision: it is recorded as a finished, pinned
/// move, which the isolation policy leaves alone, as it does every operator's move.
pub fn record_dedicated(table: pg_sys::Oid) {
    let tenants = crate::ruhnsw::dedicated::tenants_of_table(table);
    if tenants.is_empty() {
        return;
    }
    catalog::as_superuser(|| {
        Spi::run_with_args(
            "WITH moved AS ( \
                 UPDATE ruvector.tenants t SET isolation_level = 'dedicated' \
                 FROM (SELECT id, isolation_level FROM ruvector.tenants \
                       WHERE id = ANY ($1) AND isolation_level <> 'dedicated' FOR UPDATE) before \
                 WHERE t.id = before.id \
                 RETURNING t.id, before.isolation_level AS from_level), \
             recorded AS ( \
                 INSERT INTO ruvector.tenant_migrations \
                     (tenant_id, from_level, to_level, reason, pinned, options, phase, finished_at) \
                 SELECT id, from_level, 'dedicated', 'operator', true, '{\"ddl\": true}', 'done', now() \
                 FROM moved WHERE NOT EXISTS (SELECT 1 FROM ruvector.tenant_migrations m \
                     WHERE m.tenant_id = moved.id AND m.phase NOT IN ('done', 'failed')) \
                 RETURNING tenant_id, from_level) \
             SELECT ruvector._audit(tenant_id, 'migrate', jsonb_build_object( \
                 'from', from_level, 'to', 'dedicated', 'reason', 'ddl')::text) FROM recorded",
            &[tenants.into()],
        )
        .expect("recording the tenants' level")
    });
}

/// Counts the rows a newly registered table already holds against their tenants (at
/// commit, with the registration).
fn adopt_rows(qualified: &str, col: &str) {
    catalog::ensure_loaded();
    let counts: Vec<(String, i64, i64)> = catalog::as_superuser(|| {
        Spi::connect(|client| {
            client
                .select(
                    &format!(
                        "SELECT {col}::text, count(*)::bigint, \
                         coalesce(sum(pg_catalog.pg_column_size(t.*)), 0)::bigint \
                         FROM {qualified} t WHERE {col} IS NOT NULL GROUP BY 1"
                    ),
                    None,
                    &[],
                )
                .expect("counting the table's rows")
                .map(|r| {
                    (
                        r.get::<String>(1).ok().flatten().unwrap_or_default(),
                        r.get::<i64>(2).ok().flatten().unwrap_or(0),
                        r.get::<i64>(3).ok().flatten().unwrap_or(0),
                    )
                })
                .collect()
        })
    });
    for (tenant, rows, bytes) in counts {
        if let Some((slot, _)) = shmem::find(&tenant) {
            quota::adopt(slot, rows, bytes);
        }
    }
}

/// The first column of a catalog query's rows, as text (read as a superuser: catalogs only).
fn catalog_names(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Vec<String> {
    catalog::as_superuser(|| {
        Spi::connect(|client| {
            client
                .select(sql, None, args)
                .expect("reading the catalog")
                .map(|r| r.get::<String>(1).ok().flatten().unwrap_or_default())
                .collect()
        })
    })
}

fn warn(message: String, detail: &str, hint: &str) {
    pgrx::pg_sys::panic::ErrorReport::new(PgSqlErrorCode::ERRCODE_WARNING, message, "ruvector")
        .set_detail(detail)
        .set_hint(hint)
        .report(PgLogLevel::WARNING);
}

/// Unique keys that do not include the tenant column are shared by every tenant: their
/// violations tell one tenant that another's row exists.
fn warn_shared_keys(rel: pg_sys::Oid, column: i16) {
    let shared = catalog_names(
        "SELECT i.indexrelid::regclass::text FROM pg_catalog.pg_index i \
         WHERE i.indrelid = $1 AND i.indisunique \
         AND NOT ($2::int2 = ANY (i.indkey::int2[])) ORDER BY 1",
        &[rel.into(), column.into()],
    );
    for index in shared {
        warn(
            format!("unique index {index} of a tenant table is shared by all tenants"),
            "A duplicate key error (23505), or ON CONFLICT DO NOTHING inserting nothing, tells a tenant that another tenant's row has that key.",
            "Include the tenant column in the key, for example PRIMARY KEY (tenant_id, id), or use keys no tenant can guess (uuid).",
        );
    }
}

/// Other policies of the table that read the raw setting can be turned by changing it in the
/// middle of a statement.
fn warn_raw_setting_policies(rel: pg_sys::Oid) {
    let policies = catalog_names(
        "SELECT p.polname::text FROM pg_catalog.pg_policy p WHERE p.polrelid = $1 \
         AND p.polname NOT IN ('tenant_isolation', 'admin_bypass') \
         AND (coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '') \
              || coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '')) \
             LIKE '%current_setting(%ruvector.tenant_id%' ORDER BY 1",
        &[rel.into()],
    );
    for policy in policies {
        warn(
            format!("policy \"{policy}\" reads the setting ruvector.tenant_id"),
            "A setting can change while a statement runs; the policy would then compare with a tenant no one validated.",
            "Compare with ruvector.current_tenant(), the tenant validated for the running statement.",
        );
    }
}

/// Runs `f` as role `owner` inside a security-restricted operation (no SET ROLE, no
/// temporary objects, no session state that outlives it), the way PostgreSQL runs a table
/// owner's index functions during VACUUM.
fn as_owner<R>(owner: pg_sys::Oid, f: impl FnOnce() -> R) -> R {
    struct Restore(pg_sys::Oid, i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: restores the saved user and security context.
            unsafe { pg_sys::SetUserIdAndSecContext(self.0, self.1) };
        }
    }
    let (mut user, mut sec) = (pg_sys::InvalidOid, 0);
    // SAFETY: standard save/switch of the current user inside a transaction; an abort
    // restores it too.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut user, &mut sec);
        pg_sys::SetUserIdAndSecContext(
            owner,
            sec | (pg_sys::SECURITY_LOCAL_USERID_CHANGE | pg_sys::SECURITY_RESTRICTED_OPERATION)
                as i32,
        );
    }
    let _restore = Restore(user, sec);
    f()
}

/// Runs `f` with `ruvector.tenant_id` empty, the way a function's `SET` clause would: code
/// that `f` runs (a table owner's triggers) acts for no tenant.
fn without_context<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: a new GUC nesting level, a SAVE-action assignment in it, and its end, as
    // PostgreSQL runs a function's SET clause; on error, (sub)transaction abort unwinds it.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"ruvector.tenant_id".as_ptr(),
            c"".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        let r = f();
        pg_sys::AtEOXact_GUC(true, level);
        r
    }
}

pg_fn! {
    /// `ruvector._delete_tenant_rows(tenant text) RETURNS TABLE (table_name regclass,
    /// rows_deleted bigint)`: removes a tenant's rows from every tenant table and records
    /// each removal for erasure. Administrators only (a hard delete, the maintenance
    /// worker's purge). Each table's rows are deleted as its owner, in a security-restricted
    /// operation, for that tenant alone: the owner's triggers run with the owner's rights
    /// and no tenant context, so they can read no tenant's rows.
    fn delete_tenant_rows(fcinfo) {
        if !crate::backend::is_admin() {
            crate::errors::not_admin("delete a tenant's rows");
        }
        // SAFETY: one non-null text argument (STRICT).
        let tenant = unsafe { arg_text(fcinfo, 0) };
        catalog::ensure_loaded();
        let slot = shmem::find(&tenant).map(|(n, _)| n);
        let (Some(slot), Some(key)) = (slot, TenantKey::new(&tenant)) else {
            crate::errors::unknown_tenant(&tenant);
        };
        let acting = Resolved::Tenant { slot, key };
        let tables: Vec<(pg_sys::Oid, String, String, pg_sys::Oid)> = catalog::as_superuser(|| {
            Spi::connect(|client| {
                client
                    .select(
                        "SELECT t.relid::oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                         t.tenant_column::text, c.relowner FROM ruvector.tenant_tables t \
                         JOIN pg_catalog.pg_class c ON c.oid = t.relid \
                         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                         WHERE c.relkind = 'r' AND c.relpersistence <> 't' ORDER BY 2",
                        None,
                        &[],
                    )
                    .expect("reading ruvector.tenant_tables")
                    .map(|r| {
                        (
                            r.get::<pg_sys::Oid>(1).ok().flatten().unwrap_or(pg_sys::InvalidOid),
                            r.get::<String>(2).ok().flatten().unwrap_or_default(),
                            r.get::<String>(3).ok().flatten().unwrap_or_default(),
                            r.get::<pg_sys::Oid>(4).ok().flatten().unwrap_or(pg_sys::InvalidOid),
                        )
                    })
                    .collect()
            })
        });
        let mut results = Vec::with_capacity(tables.len());
        for (rel, qualified, column, owner) in tables {
            let sql = format!(
                "WITH gone AS (DELETE FROM {qualified} WHERE {} OPERATOR(pg_catalog.=) {} RETURNING 1) \
                 SELECT count(*)::bigint FROM gone",
                quote_identifier(&column),
                quote_literal(&tenant)
            );
            let n = without_context(|| {
                as_owner(owner, || {
                    statement::internal(Some(acting), || {
                        Spi::connect_mut(|client| {
                            client
                                .update(sql.as_str(), None, &[])
                                .expect("deleting the tenant's rows")
                                .first()
                                .get::<i64>(1)
                                .ok()
                                .flatten()
                                .unwrap_or(0)
                        })
                    })
                })
            });
            if n > 0 {
                catalog::as_superuser(|| {
                    Spi::run_with_args(
                        "INSERT INTO ruvector.tenant_erasures (tenant_id, relid, rows_deleted) \
                         VALUES ($1, $2::oid::regclass, $3) \
                         ON CONFLICT (tenant_id, relid, delete_xid) DO UPDATE \
                         SET rows_deleted = ruvector.tenant_erasures.rows_deleted + excluded.rows_deleted",
                        &[tenant.as_str().into(), rel.into(), n.into()],
                    )
                    .expect("recording the erasure");
                });
            }
            results.push((rel, n));
        }
        // SAFETY: materialize-mode SRF with the two declared OUT columns (regclass, bigint).
        unsafe {
            pg_sys::InitMaterializedSRF(fcinfo, 0);
            let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
            for (rel, n) in results {
                let mut values = [pg_sys::Datum::from(rel), pg_sys::Datum::from(n)];
                let mut nulls = [false; 2];
                pg_sys::tuplestore_putvalues((*rsinfo).setResult, (*rsinfo).setDesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            }
        }
        pg_sys::Datum::from(0)
    }
}
