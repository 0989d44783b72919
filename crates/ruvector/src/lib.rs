//! `ruvector`: the PostgreSQL extension. A thin adapter over `ruvector-core`: it turns datums
//! into slices, calls the core, and turns core errors into PostgreSQL errors with SQLSTATEs.
//!
//! The SQL surface is written by hand in `sql/` (reviewed DDL, versioned with the extension);
//! the Rust functions behind it are plain fmgr V1 functions declared with [`pg_fn!`].

use pgrx::prelude::*;

::pgrx::pg_module_magic!(name, version);

mod backend;
mod errors;
#[macro_use]
mod fmgr;
mod gucs;
mod ruhnsw;
mod tenancy;
mod vector;

pgrx::extension_sql_file!("../sql/vector.sql", name = "vector", bootstrap);
pgrx::extension_sql_file!(
    "../sql/halfvec.sql",
    name = "halfvec",
    requires = ["vector"]
);
pgrx::extension_sql_file!(
    "../sql/tenancy.sql",
    name = "tenancy",
    requires = ["halfvec"]
);
pgrx::extension_sql_file!("../sql/ruhnsw.sql", name = "ruhnsw", requires = ["tenancy"]);

/// Library initialization. RuVector keeps tenant state in shared memory and installs
/// executor hooks, which PostgreSQL allows only while it preloads libraries at server start,
/// so loading it any other way fails at once with the fix in the hint.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: a plain read of a PostgreSQL global, on the backend's only thread.
    let preloading = unsafe { pg_sys::process_shared_preload_libraries_in_progress };
    if !preloading {
        errors::not_preloaded();
    }
    gucs::init();
    ruhnsw::init();
    tenancy::init();
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Runs `sql` in a subtransaction and requires it to fail with `condition` (a PL/pgSQL
    /// condition name); success or any other error fails the test.
    fn expect_error(sql: &str, condition: &str) {
        Spi::run(&format!(
            "DO $t$ BEGIN {sql}; RAISE EXCEPTION 'statement succeeded: %', $s${sql}$s$; \
             EXCEPTION WHEN {condition} THEN NULL; END $t$"
        ))
        .unwrap();
    }

    #[pg_test]
    fn literal_round_trip() {
        let text = Spi::get_one::<String>("SELECT '[1, 2.5 ,3]'::vector::text").unwrap();
        assert_eq!(text.as_deref(), Some("[1,2.5,3]"));
    }

    #[pg_test]
    fn l2_distance_matches_definition() {
        let d = Spi::get_one::<f64>("SELECT '[1,2,3]'::vector <-> '[3,2,1]'").unwrap();
        assert_eq!(d, Some(8.0f64.sqrt()));
    }

    #[pg_test]
    fn typmod_is_enforced_on_insert() {
        Spi::run("CREATE TEMP TABLE t (v vector(3))").unwrap();
        Spi::run("INSERT INTO t VALUES ('[1,2,3]')").unwrap();
        expect_error("INSERT INTO t VALUES ('[1,2]')", "data_exception");
        expect_error("UPDATE t SET v = '[1,2,3,4]'", "data_exception");
        expect_error(
            "INSERT INTO t VALUES ('[1,2]'::vector(2))",
            "data_exception",
        );
    }

    #[pg_test]
    fn avg_and_sum() {
        Spi::run("CREATE TEMP TABLE a (v vector(2))").unwrap();
        Spi::run("INSERT INTO a VALUES ('[1,2]'), ('[3,4]'), ('[5,9]')").unwrap();
        let avg = Spi::get_one::<String>("SELECT avg(v)::text FROM a").unwrap();
        assert_eq!(avg.as_deref(), Some("[3,5]"));
        let sum = Spi::get_one::<String>("SELECT sum(v)::text FROM a").unwrap();
        assert_eq!(sum.as_deref(), Some("[9,15]"));
        let none = Spi::get_one::<String>("SELECT avg(v)::text FROM a WHERE false").unwrap();
        assert_eq!(none, None);
    }

    #[pg_test]
    fn btree_orders_and_deduplicates() {
        Spi::run("CREATE TEMP TABLE b (v vector)").unwrap();
        Spi::run("CREATE UNIQUE INDEX ON b (v)").unwrap();
        Spi::run("INSERT INTO b VALUES ('[2]'), ('[1,5]'), ('[1]')").unwrap();
        expect_error("INSERT INTO b VALUES ('[1,5]')", "unique_violation");
        let order =
            Spi::get_one::<String>("SELECT string_agg(v::text, ' ' ORDER BY v) FROM b").unwrap();
        assert_eq!(order.as_deref(), Some("[1] [1,5] [2]"));
    }
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'ruvector'",
            "ruvector.max_tenants = 1000",
        ]
    }
}
