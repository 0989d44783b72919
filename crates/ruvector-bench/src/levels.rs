//! Isolation levels: one tenant searched through the shared `ruhnsw` index, through its
//! dedicated index after `ruvector_tenant_isolate`, and alone in a table of its own (the
//! specification's "dedicated vs single tenant: equivalent"); and the migration itself: its
//! throughput, and the migrating tenant's and a bystander's latency during it against
//! before; then many more tenants isolated one after another (the specification's "100+
//! tenants with dedicated isolation"): the time each takes, and the first tenant's search
//! again with all those dedicated indexes beside its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgvector::Vector;
use serde::Serialize;
use tokio_postgres::Client;

use crate::data::{ground_truth, Space};
use crate::pg::{self, Result};
use crate::report;

/// `ruvector-bench levels`: a tenant's search in the shared index, in a dedicated index and
/// in its own table; its migration under load; many dedicated tenants.
#[derive(clap::Args)]
pub struct Config {
    /// Connection string of the server with ruvector.
    #[arg(long)]
    pub ruvector_dsn: String,
    /// Vectors of the tenant that is isolated.
    #[arg(long, default_value_t = 50_000)]
    pub size: usize,
    /// Other tenants sharing the table, and their vectors each.
    #[arg(long, default_value_t = 120)]
    pub others: usize,
    #[arg(long, default_value_t = 2_000)]
    pub other_size: usize,
    /// Other tenants isolated after the first (at most `others`).
    #[arg(long, default_value_t = 100)]
    pub dedicated: usize,
    #[arg(long, default_value_t = 384)]
    pub dims: usize,
    /// Intrinsic dimensions of the data (see `data::Space`).
    #[arg(long, default_value_t = 32)]
    pub latent: usize,
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    #[arg(long, default_value_t = 5)]
    pub passes: usize,
    /// Directory of the JSON, markdown and PNG results.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

const K: usize = 10;

#[derive(Serialize)]
struct Search {
    search: &'static str,
    recall: f64,
    p50_ms: f64,
    p99_ms: f64,
}

#[derive(Serialize)]
struct During {
    who: &'static str,
    p50_before_ms: f64,
    p99_before_ms: f64,
    p50_during_ms: f64,
    p99_during_ms: f64,
}

/// Queries `sql` with each of `queries` in a loop until `stop`, returning the latencies (ms).
async fn loop_queries(
    client: Client,
    sql: String,
    queries: Vec<Vector>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<f64>> {
    let stmt = client.prepare(&sql).await?;
    let mut latencies = Vec::new();
    for q in queries.iter().cycle() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let began = Instant::now();
        client.query(&stmt, &[q]).await?;
        latencies.push(began.elapsed().as_secs_f64() * 1e3);
    }
    Ok(latencies)
}

/// The two query loops (the tenant and a bystander) for `duration`, or until `until` is done.
async fn measure_both(
    dsn: &str,
    loops: &[(&str, Vec<Vector>)],
    until: impl std::future::Future<Output = Result<()>>,
) -> Result<Vec<Vec<f64>>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (tenant, queries) in loops {
        let client = pg::connect(&format!("{dsn} user=bench_app")).await?;
        client
            .batch_execute(&format!("SET ruvector.tenant_id = '{tenant}'"))
            .await?;
        handles.push(tokio::spawn(loop_queries(
            client,
            format!("SELECT id FROM docs ORDER BY vec <=> $1 LIMIT {K}"),
            queries.clone(),
            stop.clone(),
        )));
    }
    until.await?;
    stop.store(true, Ordering::Relaxed);
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await??);
    }
    Ok(out)
}

/// Alternating timed passes of the same queries over the given statements (one client
/// each); the latencies and recall@10 of each.
async fn compare(
    targets: &[(&Client, String)],
    queries: &[Vector],
    truth: &[Vec<i64>],
    passes: usize,
) -> Result<Vec<(f64, Vec<f64>)>> {
    let mut stmts = Vec::new();
    for (client, sql) in targets {
        let stmt = client.prepare(sql).await?;
        for q in queries {
            client.query(&stmt, &[q]).await?; // warm: the pages into shared buffers
        }
        stmts.push(stmt);
    }
    let n = targets.len();
    let mut latencies = vec![Vec::new(); n];
    let mut recall = vec![0.0; n];
    for pass in 0..passes {
        for j in 0..n {
            let i = (pass + j) % n;
            for (q, want) in queries.iter().zip(truth) {
                let began = Instant::now();
                let rows = targets[i].0.query(&stmts[i], &[q]).await?;
                latencies[i].push(began.elapsed().as_secs_f64() * 1e3);
                if pass == 0 {
                    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
                    recall[i] += crate::data::recall(want, &ids) / queries.len() as f64;
                }
            }
        }
    }
    Ok(recall.into_iter().zip(latencies).collect())
}

fn table(searches: &[Search]) -> String {
    report::table(
        &["search", "recall@10", "p50 ms", "p99 ms"],
        &[false, true, true, true],
        &searches
            .iter()
            .map(|s| {
                vec![
                    s.search.to_string(),
                    format!("{:.3}", s.recall),
                    format!("{:.3}", s.p50_ms),
                    format!("{:.3}", s.p99_ms),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

/// Waits until `tenant`'s latest migration is done; an error if it failed.
async fn migration_done(status: &Client, tenant: &str) -> Result<()> {
    loop {
        let row = status
            .query_one(
                "SELECT phase, coalesce(error, '') FROM ruvector_tenant_migration_status($1)",
                &[&tenant],
            )
            .await?;
        let phase: String = row.get(0);
        if phase == "done" {
            return Ok(());
        }
        if phase == "failed" {
            let error: String = row.get(1);
            return Err(format!("the migration of {tenant} failed: {error}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(cfg: Config) -> Result<()> {
    let space = Space::new(cfg.dims, cfg.latent);
    let d = cfg.dims;
    let admin = pg::connect(&cfg.ruvector_dsn).await?;
    admin
        .batch_execute(&format!(
            "SET client_min_messages = warning;
             CREATE EXTENSION IF NOT EXISTS ruvector;
             DROP TABLE IF EXISTS docs CASCADE; DROP TABLE IF EXISTS own_t0;
             DELETE FROM ruvector.tenant_migrations;
             CREATE TABLE docs (id bigint, tenant_id text NOT NULL, vec vector({d}),
                 PRIMARY KEY (tenant_id, id)) WITH (autovacuum_enabled = off);
             SELECT ruvector_enable_tenant_rls('docs');
             CREATE TABLE own_t0 (id bigint PRIMARY KEY, vec vector({d}));
             DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_app')
                 THEN CREATE ROLE bench_app LOGIN; END IF; END $$;
             GRANT ruvector_user TO bench_app;
             GRANT SELECT ON docs, own_t0 TO bench_app;
             SELECT ruvector_tenant_set_policy('{{\"enabled\": false}}');
             SET ruvector.tenant_id = '*';"
        ))
        .await?;
    eprintln!(
        "loading: t0 {} vectors, {} others of {}",
        cfg.size, cfg.others, cfg.other_size
    );
    let mut next_id = 1i64;
    let mut t0 = Vec::new();
    for t in 0..=cfg.others {
        let n = if t == 0 { cfg.size } else { cfg.other_size };
        let name = format!("t{t}");
        let topic = move |rng: &mut rand::rngs::StdRng| {
            use rand::Rng;
            3 * t + rng.gen_range(0..6)
        };
        let vecs = space.sample_with(n, 2000 + t as u64, topic);
        admin
            .execute(
                "SELECT ruvector_tenant_create($1, '{\"max_vectors\": 100000000, \"max_qps\": 0, \"max_concurrent\": 0}')",
                &[&name],
            )
            .await?;
        pg::copy_vectors(&admin, "docs", next_id, &vecs, Some(("tenant_id", &name))).await?;
        if t == 0 {
            pg::copy_vectors(&admin, "own_t0", next_id, &vecs, None).await?;
            t0 = vecs;
        }
        next_id += n as i64;
    }
    eprintln!("building indexes");
    admin
        .batch_execute(
            "SET maintenance_work_mem = '2GB';
             CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_cosine_ops);
             CREATE INDEX ON own_t0 USING ruhnsw (vec vector_cosine_ops);
             ANALYZE docs; ANALYZE own_t0;",
        )
        .await?;

    let queries_of = |t: usize, n: usize, seed: u64| -> Vec<Vec<f32>> {
        space.sample_with(n, seed, move |rng: &mut rand::rngs::StdRng| {
            use rand::Rng;
            3 * t + rng.gen_range(0..6)
        })
    };
    let q0 = queries_of(0, cfg.queries, 900_000);
    let truth: Vec<Vec<i64>> = ground_truth(&t0, &q0, K)
        .into_iter()
        .map(|ids| ids.into_iter().map(|i| 1 + i as i64).collect())
        .collect();
    let qv0: Vec<Vector> = q0.iter().map(|q| Vector::from(q.clone())).collect();
    let qv1: Vec<Vector> = queries_of(1, cfg.queries, 900_001)
        .into_iter()
        .map(Vector::from)
        .collect();
    let app = |dsn: &str| format!("{dsn} user=bench_app");
    let shared = pg::connect(&app(&cfg.ruvector_dsn)).await?;
    let own = pg::connect(&app(&cfg.ruvector_dsn)).await?;
    for c in [&shared, &own] {
        c.batch_execute("SET ruvector.tenant_id = 't0'").await?;
    }
    let docs_sql = format!("SELECT id FROM docs ORDER BY vec <=> $1 LIMIT {K}");
    let own_sql = format!("SELECT id FROM own_t0 ORDER BY vec <=> $1 LIMIT {K}");

    eprintln!("shared index vs own table");
    let before = compare(
        &[(&shared, docs_sql.clone()), (&own, own_sql.clone())],
        &qv0,
        &truth,
        cfg.passes,
    )
    .await?;

    eprintln!("latency before the migration");
    let loops = [("t0", qv0.clone()), ("t1", qv1.clone())];
    let quiet = measure_both(&cfg.ruvector_dsn, &loops, async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(())
    })
    .await?;

    eprintln!("isolating t0");
    admin
        .batch_execute("SELECT ruvector_tenant_isolate('t0')")
        .await?;
    let status = pg::connect(&cfg.ruvector_dsn).await?;
    let during = measure_both(&cfg.ruvector_dsn, &loops, migration_done(&status, "t0")).await?;
    let row = status
        .query_one(
            "SELECT rows_total, extract(epoch FROM finished_at - started_at)::float8 \
             FROM ruvector.tenant_migrations WHERE tenant_id = 't0' ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await?;
    let (rows_total, seconds): (i64, f64) = (row.get(0), row.get(1));

    eprintln!("dedicated index vs own table");
    let dedicated = pg::connect(&app(&cfg.ruvector_dsn)).await?;
    dedicated
        .batch_execute("SET ruvector.tenant_id = 't0'")
        .await?;
    let after = compare(
        &[(&dedicated, docs_sql.clone()), (&own, own_sql.clone())],
        &qv0,
        &truth,
        cfg.passes,
    )
    .await?;

    let many = cfg.dedicated.min(cfg.others);
    eprintln!("isolating {many} more tenants");
    let mut isolate_seconds = Vec::new();
    for t in 1..=many {
        let began = Instant::now();
        admin
            .execute("SELECT ruvector_tenant_isolate($1)", &[&format!("t{t}")])
            .await?;
        migration_done(&status, &format!("t{t}")).await?;
        isolate_seconds.push(began.elapsed().as_secs_f64());
    }
    let crowded = if many > 0 {
        eprintln!(
            "dedicated index vs own table, {} dedicated tenants",
            many + 1
        );
        // New sessions: plans made before the other indexes existed would not see them.
        let dedicated = pg::connect(&app(&cfg.ruvector_dsn)).await?;
        let own = pg::connect(&app(&cfg.ruvector_dsn)).await?;
        for c in [&dedicated, &own] {
            c.batch_execute("SET ruvector.tenant_id = 't0'").await?;
        }
        compare(
            &[(&dedicated, docs_sql.clone()), (&own, own_sql)],
            &qv0,
            &truth,
            cfg.passes,
        )
        .await?
    } else {
        Vec::new()
    };

    let search = |label, (recall, lat): &(f64, Vec<f64>)| Search {
        search: label,
        recall: *recall,
        p50_ms: report::quantile(lat, 0.5),
        p99_ms: report::quantile(lat, 0.99),
    };
    let searches = [
        search("shared index", &before[0]),
        search("own table (with shared)", &before[1]),
        search("dedicated index", &after[0]),
        search("own table (with dedicated)", &after[1]),
    ];
    let crowded: Vec<Search> = crowded
        .iter()
        .zip(["dedicated index", "own table"])
        .map(|(r, label)| search(label, r))
        .collect();
    let who = ["migrating tenant", "bystander"];
    let durings: Vec<During> = (0..2)
        .map(|i| During {
            who: who[i],
            p50_before_ms: report::quantile(&quiet[i], 0.5),
            p99_before_ms: report::quantile(&quiet[i], 0.99),
            p50_during_ms: report::quantile(&during[i], 0.5),
            p99_during_ms: report::quantile(&during[i], 0.99),
        })
        .collect();

    std::fs::create_dir_all(&cfg.out)?;
    std::fs::write(
        cfg.out.join("levels.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "size": cfg.size, "others": cfg.others, "other_size": cfg.other_size,
            "dims": cfg.dims, "queries": cfg.queries, "passes": cfg.passes,
            "searches": searches, "during_migration": durings,
            "migration": {"rows": rows_total, "seconds": seconds},
            "dedicated_tenants": many + 1, "isolate_seconds": isolate_seconds,
            "with_all_dedicated": crowded,
        }))?,
    )?;
    let mut md = format!(
        "# Isolation levels: shared, dedicated, own table\n\n\
         Tenant t0 with {} vectors of {} dimensions among {} other tenants of {} (cosine, m = 16, \
         ef_construction = 64, default ef_search); {} queries from t0's topics, {} timed passes \
         after an untimed one, alternating between the two searches compared; prepared \
         statements, as a role without BYPASSRLS.\n\n",
        cfg.size, cfg.dims, cfg.others, cfg.other_size, cfg.queries, cfg.passes
    );
    md.push_str(&table(&searches));
    md.push_str(&format!(
        "\nDedicated / own table, same run: p50 {:.3}, p99 {:.3}. Shared / own table: p50 {:.3}.\n\n",
        searches[2].p50_ms / searches[3].p50_ms,
        searches[2].p99_ms / searches[3].p99_ms,
        searches[0].p50_ms / searches[1].p50_ms,
    ));
    md.push_str(&format!(
        "## The migration\n\n`ruvector_tenant_isolate('t0')`: {rows_total} vectors in {seconds:.1} s \
         ({:.0} vectors/s), with one session searching t0 and one searching t1 throughout \
         (before: the same two sessions for 5 s).\n\n",
        rows_total as f64 / seconds.max(1e-9)
    ));
    md.push_str(&report::table(
        &[
            "session",
            "p50 before ms",
            "p99 before ms",
            "p50 during ms",
            "p99 during ms",
        ],
        &[false, true, true, true, true],
        &durings
            .iter()
            .map(|d| {
                vec![
                    d.who.to_string(),
                    format!("{:.3}", d.p50_before_ms),
                    format!("{:.3}", d.p99_before_ms),
                    format!("{:.3}", d.p50_during_ms),
                    format!("{:.3}", d.p99_during_ms),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    if !crowded.is_empty() {
        let (fastest, slowest) = report::range(&isolate_seconds);
        md.push_str(&format!(
            "\n## {} dedicated tenants\n\nTenants t1 to t{many} ({} vectors each) isolated one \
             after another: {:.2} s each (median; {:.2}–{:.2} s). Then t0's search again, through \
             its dedicated index among {} and in its own table:\n\n",
            many + 1,
            cfg.other_size,
            report::median(&isolate_seconds),
            fastest,
            slowest,
            many + 1,
        ));
        md.push_str(&table(&crowded));
        md.push_str(&format!(
            "\nDedicated / own table with {} dedicated tenants: p50 {:.3}, p99 {:.3}.\n",
            many + 1,
            crowded[0].p50_ms / crowded[1].p50_ms,
            crowded[0].p99_ms / crowded[1].p99_ms,
        ));
    }
    std::fs::write(cfg.out.join("levels.md"), &md)?;
    println!("{md}");
    Ok(())
}
