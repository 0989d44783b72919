//! Online migration of a tenant between isolation levels: one background worker per
//! database, started by the maintenance worker while `ruvector.tenant_migrations` has a
//! migration that is not done or failed, carries them out one after the other.
//!
//! - **To `dedicated`**: for every shared `ruhnsw` index (keyed by tenant, no predicate) of
//!   every tenant table, `CREATE INDEX CONCURRENTLY` of the tenant's dedicated index (see
//!   `ruhnsw::dedicated`). PostgreSQL copies the tenant's rows while inserts go on
//!   (`copying`), then takes in the rows written meanwhile (`catching_up`); the commit that
//!   makes the index valid is the switch, WAL-logged like any catalog change: from then on
//!   the shared index sends the tenant's searches to it and leaves its new rows to it.
//! - **From `dedicated`**: each dedicated index is marked `retiring` (the shared index takes
//!   the tenant's new rows again, searches stay on the dedicated index), the shared index is
//!   rebuilt by `REINDEX INDEX CONCURRENTLY` so that it holds every row of the tenant, and the
//!   dedicated index is dropped concurrently (`switching`).
//! - **Between `shared` and `partition`**: the level in `ruvector.tenants` changes first (new
//!   nodes go where it puts them at once), then `REINDEX INDEX CONCURRENTLY` of each shared
//!   index moves the tenant's existing nodes: packed with other shared tenants' nodes, or on
//!   pages of its own.
//!
//! Every step can run again: after a crash or a restart the worker takes the migration up
//! at its recorded phase (an index build that was cut off leaves an invalid index, which is
//! dropped and built again).

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::spi::Spi;
use pgrx::PgTryBuilder;

use super::worker::{self, run_top_level};
use super::{affinity, catalog, scheduler, shmem};

/// A migration to carry out.
struct Migration {
    id: i64,
    tenant: String,
    to: String,
    phase: String,
}

/// A shared `ruhnsw` index of a tenant table.
struct Shared {
    oid: pg_sys::Oid,
    /// `CREATE INDEX CONCURRENTLY` of the tenant's dedicated index, with `%1$I` for its name.
    create: String,
    /// The qualified name, for REINDEX.
    name: String,
    /// The dedicated index's name and the table's schema.
    dedicated_name: String,
    schema: String,
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, arg: pg_sys::Datum) {
    let (db, i) = ((arg.value() as u64 >> 32) as u32, arg.value() & 0xffff_ffff);
    worker::migration_done(i, db);
}

#[pgrx::pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn ruvector_migration_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let i = arg.value();
    let db = worker::migration_database(i);
    // SAFETY: registered once in this short-lived process; frees the position however the
    // process ends.
    unsafe {
        pg_sys::before_shmem_exit(
            Some(on_exit),
            pg_sys::Datum::from((u64::from(db) << 32) | i as u64),
        )
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(pg_sys::Oid::from(db)), None);
    // The tenants' statements first: the copy uses what CPU they leave.
    affinity::background();
    while !BackgroundWorker::sigterm_received() {
        let Some(m) = BackgroundWorker::transaction(next) else {
            break;
        };
        let slot = admit(&m);
        let result = attempt(|| run(&m));
        if let Some(slot) = slot {
            scheduler::give_back(slot);
        }
        if let Err(message) = result {
            BackgroundWorker::transaction(|| {
                Spi::run_with_args(
                    "UPDATE ruvector.tenant_migrations \
                     SET phase = 'failed', error = $2, finished_at = now() WHERE id = $1",
                    &[m.id.into(), message.into()],
                )
                .expect("recording a failed migration")
            });
        }
    }
}

/// Takes an execution slot of the migrating tenant for the migration's work, waiting in the
/// fair queue like its statements (and trying again after a refusal, up to a minute);
/// returns the tenant's registry slot to give it back, `None` when the work runs uncounted.
fn admit(m: &Migration) -> Option<usize> {
    let slot = BackgroundWorker::transaction(|| {
        catalog::ensure_loaded();
        shmem::find(&m.tenant).map(|(n, _)| n)
    })?;
    for _ in 0..60 {
        if scheduler::keep(slot, &m.tenant).is_ok() {
            affinity::background(); // admission may have restored the normal policy
            return Some(slot);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    None
}

/// Runs `f`; a PostgreSQL error (or panic) becomes its message, with the transaction it
/// left behind aborted.
fn attempt(f: impl FnOnce()) -> Result<(), String> {
    let f = std::panic::AssertUnwindSafe(f);
    let r = PgTryBuilder::new(move || {
        f();
        Ok(())
    })
    .catch_others(|e| {
        Err(match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r.message().to_string(),
            CaughtError::RustPanic { ereport, .. } => ereport.message().to_string(),
        })
    })
    .execute();
    if r.is_err() {
        // SAFETY: the error left a transaction (or one of a command's own) in progress.
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    r
}

/// The oldest migration not yet done or failed.
fn next() -> Option<Migration> {
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT id, tenant_id, to_level, phase FROM ruvector.tenant_migrations \
                 WHERE phase NOT IN ('done', 'failed') ORDER BY id LIMIT 1",
                None,
                &[],
            )
            .ok()?;
        let r = rows.into_iter().next()?;
        Some(Migration {
            id: r.get::<i64>(1).ok()??,
            tenant: r.get::<String>(2).ok()??,
            to: r.get::<String>(3).ok()??,
            phase: r.get::<String>(4).ok()??,
        })
    })
}

fn set_phase(m: &Migration, phase: &str) {
    BackgroundWorker::transaction(|| {
        Spi::run_with_args(
            "UPDATE ruvector.tenant_migrations SET phase = $2, worker_pid = pg_backend_pid(), \
             rows_total = coalesce(rows_total, (SELECT current_vectors FROM ruvector._live_stats() \
                                                WHERE tenant_id = $3)) \
             WHERE id = $1",
            &[m.id.into(), phase.into(), m.tenant.as_str().into()],
        )
        .expect("recording a migration's phase")
    });
}

fn run(m: &Migration) {
    let from = BackgroundWorker::transaction(|| {
        Spi::get_one_with_args::<String>(
            "SELECT isolation_level FROM ruvector.tenants WHERE id = $1",
            &[m.tenant.as_str().into()],
        )
        .ok()
        .flatten()
    });
    let Some(from) = from else {
        return finish(m, None); // the tenant was purged meanwhile
    };
    let shared = BackgroundWorker::transaction(|| shared_indexes(m));
    if m.to == "dedicated" {
        set_phase(m, "copying");
        for s in &shared {
            promote(s);
        }
    } else {
        // The level first: the rebuilds below place the tenant's nodes by it.
        set_level(m, &m.to);
        // Dedicated indexes made by hand count as much as those of a migration.
        if !demote(&shared, m) && (from == "shared") != (m.to == "shared") {
            // Between packed and own pages: the shared indexes are rebuilt with the tenant's
            // nodes where its new level puts them.
            set_phase(m, "catching_up");
            for s in &shared {
                drop_leftovers(s);
                run_top_level(&format!("REINDEX INDEX CONCURRENTLY {}", s.name));
            }
        }
    }
    finish(m, Some(&m.to));
}

/// Creates the tenant's dedicated index for shared index `s`, unless it exists and is valid.
fn promote(s: &Shared) {
    let existing = BackgroundWorker::transaction(|| {
        Spi::get_one_with_args::<bool>(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = $1 AND n.nspname = $2",
            &[s.dedicated_name.as_str().into(), s.schema.as_str().into()],
        )
        .ok()
        .flatten()
    });
    match existing {
        Some(true) => {}
        Some(false) => {
            // An earlier attempt was cut off.
            run_top_level(&format!(
                "DROP INDEX CONCURRENTLY IF EXISTS {}",
                qualified(&s.schema, &s.dedicated_name)
            ));
            run_top_level(&s.create);
        }
        None => run_top_level(&s.create),
    }
    BackgroundWorker::transaction(|| {
        let dedicated = Spi::get_one_with_args::<pg_sys::Oid>(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND n.nspname = $2",
            &[s.dedicated_name.as_str().into(), s.schema.as_str().into()],
        )
        .ok()
        .flatten()
        .expect("the dedicated index exists");
        depends_on(dedicated, s.oid);
    });
}

/// Records that dropping shared index `shared` drops `dedicated` too.
fn depends_on(dedicated: pg_sys::Oid, shared: pg_sys::Oid) {
    let address = |oid| pg_sys::ObjectAddress {
        classId: pg_sys::RelationRelationId,
        objectId: oid,
        objectSubId: 0,
    };
    // SAFETY: both relations exist (checked by the caller's lookups in this transaction).
    unsafe {
        pg_sys::deleteDependencyRecordsForSpecific(
            pg_sys::RelationRelationId,
            dedicated,
            pg_sys::DependencyType::DEPENDENCY_AUTO as std::ffi::c_char,
            pg_sys::RelationRelationId,
            shared,
        );
        pg_sys::recordDependencyOn(
            &address(dedicated),
            &address(shared),
            pg_sys::DependencyType::DEPENDENCY_AUTO,
        );
    }
}

/// Gives the tenant's rows back to the shared indexes and drops its dedicated indexes;
/// whether it had any.
fn demote(shared: &[Shared], m: &Migration) -> bool {
    let key = m.tenant.as_bytes();
    // By name: REINDEX CONCURRENTLY gives the shared index a new OID.
    let of = |s: &Shared| BackgroundWorker::transaction(|| dedicated_of(&s.name, key));
    if !shared.iter().any(|s| of(s).is_some()) {
        return false;
    }
    if m.phase != "switching" {
        set_phase(m, "copying");
        for s in shared {
            if let Some(d) = of(s) {
                run_top_level(&format!("ALTER INDEX {d} SET (retiring = true)"));
            }
        }
        set_phase(m, "catching_up");
        for s in shared {
            if of(s).is_some() {
                drop_leftovers(s);
                run_top_level(&format!("REINDEX INDEX CONCURRENTLY {}", s.name));
            }
        }
    }
    set_phase(m, "switching");
    for s in shared {
        if let Some(d) = of(s) {
            run_top_level(&format!("DROP INDEX CONCURRENTLY IF EXISTS {d}"));
        }
    }
    true
}

/// Records the tenant's level (the registry follows at commit).
fn set_level(m: &Migration, level: &str) {
    BackgroundWorker::transaction(|| {
        Spi::run_with_args(
            "UPDATE ruvector.tenants SET isolation_level = $2 WHERE id = $1",
            &[m.tenant.as_str().into(), level.into()],
        )
        .expect("recording the tenant's level")
    });
}

/// The qualified name of the tenant's dedicated index for the shared index named `shared`.
fn dedicated_of(shared: &str, key: &[u8]) -> Option<String> {
    let shared =
        Spi::get_one_with_args::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[shared.into()])
            .ok()
            .flatten()?;
    // SAFETY: the shared index is opened for reading and closed again.
    let oid = unsafe {
        let rel = pg_sys::try_relation_open(shared, pg_sys::AccessShareLock as i32);
        if rel.is_null() {
            return None;
        }
        let oid = crate::ruhnsw::dedicated::of(rel).searched(key);
        pg_sys::relation_close(rel, pg_sys::NoLock as i32);
        oid?
    };
    Spi::get_one_with_args::<String>("SELECT $1::regclass::text", &[oid.into()])
        .ok()
        .flatten()
}

/// Drops what an interrupted `REINDEX INDEX CONCURRENTLY` of `s` left behind (an invalid
/// copy named `<index>_ccnew...`).
fn drop_leftovers(s: &Shared) {
    let leftovers: Vec<String> = BackgroundWorker::transaction(|| {
        Spi::connect(|client| {
            client
                .select(
                    "SELECT c.oid::regclass::text FROM pg_index i \
                     JOIN pg_class c ON c.oid = i.indexrelid \
                     WHERE i.indrelid = (SELECT indrelid FROM pg_index WHERE indexrelid = $1) \
                       AND NOT i.indisvalid \
                       AND c.relname LIKE (SELECT relname FROM pg_class WHERE oid = $1) || '_ccnew%'",
                    None,
                    &[s.oid.into()],
                )
                .map(|rows| rows.filter_map(|r| r.get::<String>(1).ok().flatten()).collect())
                .unwrap_or_default()
        })
    });
    for name in leftovers {
        run_top_level(&format!("DROP INDEX CONCURRENTLY IF EXISTS {name}"));
    }
}

/// Records the migration as done (and the tenant's new level, when it still exists).
fn finish(m: &Migration, level: Option<&str>) {
    if let Some(level) = level {
        set_level(m, level);
    }
    BackgroundWorker::transaction(|| {
        Spi::run_with_args(
            "UPDATE ruvector.tenant_migrations SET phase = 'done', finished_at = now(), \
             rows_copied = coalesce(rows_total, rows_copied) WHERE id = $1",
            &[m.id.into()],
        )
        .expect("recording a finished migration")
    });
}

fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote(schema), quote(name))
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The shared `ruhnsw` indexes of every tenant table, with the statement that creates the
/// tenant's dedicated index beside each: the same column and operator class, `m` and
/// `ef_construction` from the migration's options or else the shared index's, the shared
/// index's `storage`, the migration's tablespace if it names one.
fn shared_indexes(m: &Migration) -> Vec<Shared> {
    Spi::connect(|client| {
        client
            .select(
                "WITH s AS ( \
                   SELECT i.indexrelid, i.indrelid, n.nspname, \
                          a.attname AS vec, tc.attname AS tenant_col, \
                          quote_ident(on_.nspname) || '.' || quote_ident(oc.opcname) AS opclass, \
                          coalesce(mo.options->>'m', (SELECT split_part(o, '=', 2) FROM unnest(ic.reloptions) o WHERE o LIKE 'm=%'), '16') AS m, \
                          coalesce(mo.options->>'ef_construction', (SELECT split_part(o, '=', 2) FROM unnest(ic.reloptions) o WHERE o LIKE 'ef_construction=%'), '64') AS ef, \
                          coalesce((SELECT split_part(o, '=', 2) FROM unnest(ic.reloptions) o WHERE o LIKE 'storage=%'), 'auto') AS storage, \
                          mo.options->>'tablespace' AS ts, \
                          left(ic.relname, 40) || '_' || left(regexp_replace($2, '[^A-Za-z0-9_]', '_', 'g'), 16) \
                            || '_' || substr(md5($2), 1, 4) AS dedicated_name \
                   FROM ruvector.tenant_tables t \
                   JOIN pg_index i ON i.indrelid = t.relid \
                   JOIN pg_class ic ON ic.oid = i.indexrelid \
                   JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'ruhnsw' \
                   JOIN pg_namespace n ON n.oid = ic.relnamespace \
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                   JOIN pg_attribute tc ON tc.attrelid = i.indrelid AND tc.attnum = i.indkey[1] \
                   JOIN pg_opclass oc ON oc.oid = i.indclass[0] \
                   JOIN pg_namespace on_ ON on_.oid = oc.opcnamespace \
                   CROSS JOIN (SELECT options FROM ruvector.tenant_migrations WHERE id = $1) mo \
                   WHERE i.indnkeyatts = 2 AND i.indpred IS NULL AND i.indisvalid \
                 ) \
                 SELECT s.indexrelid, s.indexrelid::regclass::text, s.nspname::text, s.dedicated_name, \
                        format('CREATE INDEX CONCURRENTLY %I ON %s USING ruhnsw (%I %s) WITH (m = %s, ef_construction = %s, storage = %L) %s WHERE %I = %L', \
                               s.dedicated_name, s.indrelid::regclass, s.vec, s.opclass, s.m::int, s.ef::int, s.storage, \
                               CASE WHEN s.ts IS NOT NULL THEN format('TABLESPACE %I', s.ts) ELSE '' END, \
                               s.tenant_col, $2) \
                 FROM s ORDER BY s.indexrelid",
                None,
                &[m.id.into(), m.tenant.as_str().into()],
            )
            .expect("listing the shared indexes")
            .map(|r| Shared {
                oid: r.get::<pg_sys::Oid>(1).ok().flatten().expect("an index"),
                name: r.get::<String>(2).ok().flatten().expect("a name"),
                schema: r.get::<String>(3).ok().flatten().expect("a schema"),
                dedicated_name: r.get::<String>(4).ok().flatten().expect("a name"),
                create: r.get::<String>(5).ok().flatten().expect("a statement"),
            })
            .collect()
    })
}
