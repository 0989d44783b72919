//! Tenant-confined search in one shared `ruhnsw` index against (a) the same tenant alone in
//! its own table and index and (b) post-filtering: pgvector 0.8.2 HNSW with row-level
//! security, iterative scan off and on, in the same PostgreSQL 18 server. Tenants have
//! Zipf-distributed sizes and draw from shared topics, or are the owners of a real corpus
//! (`--corpus`). Per size band: recall@10, rows returned, p50/p99 latency.

use std::path::PathBuf;
use std::time::Instant;

use pgvector::Vector;
use rand::Rng;
use serde::Serialize;
use tokio_postgres::Client;

use crate::corpus::Corpus;
use crate::data::{ground_truth, Space};
use crate::pg::{self, Result};
use crate::report::{self, Series};

/// `ruvector-bench tenants`: tenant-confined search in one shared index, against each
/// tenant's own table and pgvector with row-level security.
#[derive(clap::Args)]
pub struct Config {
    /// Connection string of the server with ruvector.
    #[arg(long)]
    pub ruvector_dsn: String,
    /// Connection string of the server with pgvector (may be the same server).
    #[arg(long)]
    pub pgvector_dsn: String,
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// Smallest and largest tenant (Zipf-distributed sizes between them).
    #[arg(long, default_value_t = 10)]
    pub min_size: usize,
    #[arg(long, default_value_t = 100_000)]
    pub max_size: usize,
    #[arg(long, default_value_t = 384)]
    pub dims: usize,
    /// Intrinsic dimensions of the data (see `data::Space`).
    #[arg(long, default_value_t = 32)]
    pub latent: usize,
    /// Tenants measured per size band.
    #[arg(long, default_value_t = 5)]
    pub per_band: usize,
    /// Queries per measured tenant.
    #[arg(long, default_value_t = 50)]
    pub queries: usize,
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
    /// A corpus directory (`corpus::Corpus`): its owners are the tenants, and it sets the
    /// number of tenants, their sizes and the dimensions.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Base name of the output files.
    #[arg(long, default_value = "tenants")]
    pub name: String,
    /// Directory of the JSON, markdown and PNG results.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

const K: usize = 10;
const BANDS: [(&str, usize, usize); 3] = [
    ("≤1k", 0, 1_000),
    ("1k–10k", 1_001, 10_000),
    ("10k–100k", 10_001, 100_000),
];

/// Zipf-like sizes from `max` (tenant 0) down to `min`.
pub fn sizes(tenants: usize, min: usize, max: usize) -> Vec<usize> {
    let alpha = (max as f64 / min as f64).ln() / (tenants.max(2) as f64).ln();
    (0..tenants)
        .map(|i| ((max as f64 / ((i + 1) as f64).powf(alpha)) as usize).max(min))
        .collect()
}

/// Each tenant draws from 6 of the space's topics; neighbouring tenants share some.
fn topic_of(tenant: usize, rng: &mut rand::rngs::StdRng) -> usize {
    3 * tenant + rng.gen_range(0..6)
}

/// The tenants and their rows.
enum Source {
    /// Zipf-sized tenants drawing from shared topics of a synthetic space.
    Synthetic { space: Space, sizes: Vec<usize> },
    /// The owners of a real corpus, largest first.
    Corpus(Corpus),
}

impl Source {
    fn new(cfg: &Config) -> Result<Self> {
        Ok(match &cfg.corpus {
            Some(dir) => Self::Corpus(Corpus::load(dir)?),
            None => Self::Synthetic {
                space: Space::new(cfg.dims, cfg.latent),
                sizes: sizes(cfg.tenants, cfg.min_size, cfg.max_size),
            },
        })
    }

    fn dims(&self) -> usize {
        match self {
            Self::Synthetic { space, .. } => space.dims(),
            Self::Corpus(c) => c.dims,
        }
    }

    /// Tenant sizes, largest first.
    fn sizes(&self) -> Vec<usize> {
        match self {
            Self::Synthetic { sizes, .. } => sizes.clone(),
            Self::Corpus(c) => c.owners.iter().map(|o| o.rows.len()).collect(),
        }
    }

    fn vectors(&self, t: usize) -> Vec<Vec<f32>> {
        match self {
            Self::Synthetic { space, sizes } => {
                space.sample_with(sizes[t], 1000 + t as u64, |rng| topic_of(t, rng))
            }
            Self::Corpus(c) => c.docs(c.owners[t].rows.clone()),
        }
    }

    /// Up to `n` queries of tenant `t`: from its own topics, or the query texts of its own
    /// documents.
    fn queries(&self, t: usize, n: usize) -> Vec<Vec<f32>> {
        match self {
            Self::Synthetic { space, .. } => {
                space.sample_with(n, 500_000 + t as u64, |rng| topic_of(t, rng))
            }
            Self::Corpus(c) => c.queries(c.owners[t].rows.clone(), n),
        }
    }

    /// What the data is, for the report.
    fn describe(&self, cfg: &Config, total: usize) -> String {
        match self {
            Self::Synthetic { sizes, .. } => format!(
                "{} tenants, {} vectors of {} dimensions (Zipf sizes {}–{}, tenants drawing from \
                 shared topics); queries from the tenant's own topics",
                sizes.len(),
                total,
                cfg.dims,
                cfg.min_size,
                cfg.max_size
            ),
            Self::Corpus(c) => format!(
                "a real corpus: {}; {} dimensions, each owner a tenant (sizes {}–{}); queries \
                 are the one-line synopses of the tenant's own documents",
                c.description,
                c.dims,
                c.owners.last().map_or(0, |o| o.rows.len()),
                c.owners.first().map_or(0, |o| o.rows.len()),
            ),
        }
    }
}

struct Target {
    label: &'static str,
    client: Client,
    /// SQL run before each tenant's queries; `{t}` is the tenant id.
    set_tenant: &'static str,
    table: fn(&str) -> String,
}

#[derive(Serialize, Clone)]
struct Measure {
    target: &'static str,
    band: &'static str,
    tenant: String,
    size: usize,
    recall: f64,
    rows: f64,
    latencies_ms: Vec<f64>,
}

#[derive(Serialize)]
struct BandRow {
    target: &'static str,
    band: &'static str,
    tenants: usize,
    recall: f64,
    rows: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The p50 of each timed pass, for the spread.
    pass_p50_ms: Vec<f64>,
}

pub async fn run(cfg: Config) -> Result<()> {
    let source = Source::new(&cfg)?;
    let sizes = source.sizes();
    let tenants = sizes.len();
    let total: usize = sizes.iter().sum();
    eprintln!(
        "{tenants} tenants, {total} vectors in all ({} to {} per tenant)",
        sizes.last().unwrap_or(&0),
        sizes.first().unwrap_or(&0)
    );

    let ruv = pg::connect(&cfg.ruvector_dsn).await?;
    let pgv = pg::connect(&cfg.pgvector_dsn).await?;
    let d = source.dims();
    ruv.batch_execute(&format!(
        "SET client_min_messages = warning;
         CREATE EXTENSION IF NOT EXISTS ruvector;
         DROP TABLE IF EXISTS docs CASCADE;
         CREATE TABLE docs (id bigint PRIMARY KEY, tenant_id text NOT NULL, vec vector({d}))
             WITH (autovacuum_enabled = off);
         SELECT ruvector_enable_tenant_rls('docs');
         DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_app')
             THEN CREATE ROLE bench_app LOGIN; END IF; END $$;
         GRANT ruvector_user TO bench_app;
         GRANT SELECT ON docs TO bench_app;
         SET ruvector.tenant_id = '*';"
    ))
    .await?;
    pgv.batch_execute(&format!(
        "SET client_min_messages = warning;
         CREATE EXTENSION IF NOT EXISTS vector;
         DROP TABLE IF EXISTS docs CASCADE;
         CREATE TABLE docs (id bigint PRIMARY KEY, tenant_id text NOT NULL, vec vector({d}))
             WITH (autovacuum_enabled = off);
         ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
         ALTER TABLE docs FORCE ROW LEVEL SECURITY;
         CREATE POLICY tenant_isolation ON docs USING (tenant_id = current_setting('app.tenant_id', true));
         DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_app')
             THEN CREATE ROLE bench_app LOGIN; END IF; END $$;
         GRANT SELECT ON docs TO bench_app;"
    ))
    .await?;

    // Which tenants are measured: evenly spread over each band.
    let mut measured: Vec<(usize, &'static str)> = Vec::new();
    for (band, lo, hi) in BANDS {
        let members: Vec<usize> = (0..tenants)
            .filter(|&t| sizes[t] >= lo && sizes[t] <= hi)
            .collect();
        let step = (members.len() / cfg.per_band.max(1)).max(1);
        measured.extend(
            members
                .iter()
                .step_by(step)
                .take(cfg.per_band)
                .map(|&t| (t, band)),
        );
    }

    eprintln!("loading");
    let mut next_id = 1i64;
    let mut tenant_data: Vec<(i64, Vec<Vec<f32>>)> = Vec::new();
    for (t, &n) in sizes.iter().enumerate() {
        let vecs = source.vectors(t);
        let name = format!("t{t}");
        if t > 0 && t % 100 == 0 {
            eprintln!("  {t} tenants");
        }
        ruv.execute(
            "SELECT ruvector_tenant_create($1, '{\"max_vectors\": 10000000, \"max_qps\": 0}')",
            &[&name],
        )
        .await?;
        pg::copy_vectors(&ruv, "docs", next_id, &vecs, Some(("tenant_id", &name))).await?;
        pg::copy_vectors(&pgv, "docs", next_id, &vecs, Some(("tenant_id", &name))).await?;
        let keep = measured.iter().any(|&(m, _)| m == t);
        tenant_data.push((next_id, if keep { vecs } else { Vec::new() }));
        next_id += n as i64;
    }
    // Own tables for the measured tenants (the single-tenant baseline).
    for &(t, _) in &measured {
        let (first, vecs) = &tenant_data[t];
        ruv.batch_execute(&format!(
            "DROP TABLE IF EXISTS own_t{t}; CREATE TABLE own_t{t} (id bigint PRIMARY KEY, vec vector({d}));
             GRANT SELECT ON own_t{t} TO bench_app;"
        ))
        .await?;
        pg::copy_vectors(&ruv, &format!("own_t{t}"), *first, vecs, None).await?;
    }

    eprintln!("building indexes");
    let start = Instant::now();
    ruv.batch_execute("SET maintenance_work_mem = '4GB'; CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_cosine_ops); ANALYZE docs")
        .await?;
    let ruv_build = start.elapsed().as_secs_f64();
    for &(t, _) in &measured {
        ruv.batch_execute(&format!(
            "CREATE INDEX ON own_t{t} USING ruhnsw (vec vector_cosine_ops); ANALYZE own_t{t}"
        ))
        .await?;
    }
    let start = Instant::now();
    pgv.batch_execute("SET maintenance_work_mem = '4GB'; CREATE INDEX docs_vec ON docs USING hnsw (vec vector_cosine_ops); ANALYZE docs")
        .await?;
    let pgv_build = start.elapsed().as_secs_f64();
    eprintln!("  shared ruhnsw {ruv_build:.1} s, pgvector hnsw {pgv_build:.1} s");
    let ruv_index = pg::relation_size(&ruv, "docs_vec").await?;
    let pgv_index = pg::relation_size(&pgv, "docs_vec").await?;
    // The tenant catalog: every table of the extension's schema, with its indexes and TOAST.
    let catalog: i64 = ruv
        .query_one(
            "SELECT sum(pg_total_relation_size(c.oid))::int8 FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'ruvector' AND c.relkind = 'r'",
            &[],
        )
        .await?
        .get(0);

    // Sessions as the application role (row-level security applies).
    let app_dsn = |dsn: &str| format!("{dsn} user=bench_app");
    let targets = [
        Target {
            label: "ruhnsw shared index",
            client: pg::connect(&app_dsn(&cfg.ruvector_dsn)).await?,
            set_tenant: "SET ruvector.tenant_id = '{t}'",
            table: |_| "docs".into(),
        },
        Target {
            label: "ruhnsw own table",
            client: pg::connect(&app_dsn(&cfg.ruvector_dsn)).await?,
            set_tenant: "SET ruvector.tenant_id = '{t}'",
            table: |t| format!("own_{t}"),
        },
        Target {
            label: "pgvector + RLS, iterative off",
            client: pg::connect(&app_dsn(&cfg.pgvector_dsn)).await?,
            set_tenant: "SET app.tenant_id = '{t}'; SET hnsw.iterative_scan = off",
            table: |_| "docs".into(),
        },
        Target {
            label: "pgvector + RLS, iterative on",
            client: pg::connect(&app_dsn(&cfg.pgvector_dsn)).await?,
            set_tenant: "SET app.tenant_id = '{t}'; SET hnsw.iterative_scan = relaxed_order",
            table: |_| "docs".into(),
        },
    ];

    eprintln!(
        "measuring {} tenants x {} queries x {} passes",
        measured.len(),
        cfg.queries,
        cfg.passes
    );
    let mut results: Vec<Measure> = Vec::new();
    for &(t, band) in &measured {
        let (first, vecs) = &tenant_data[t];
        let queries = source.queries(t, cfg.queries);
        let truth: Vec<Vec<i64>> = ground_truth(vecs, &queries, K)
            .into_iter()
            .map(|ids| ids.into_iter().map(|i| first + i as i64).collect())
            .collect();
        let name = format!("t{t}");
        let qv: Vec<Vector> = queries.iter().map(|q| Vector::from(q.clone())).collect();
        let mut stmts = Vec::new();
        for target in &targets {
            target
                .client
                .batch_execute(&target.set_tenant.replace("{t}", &name))
                .await?;
            let sql = format!(
                "SELECT id FROM {} ORDER BY vec <=> $1 LIMIT {K}",
                (target.table)(&name)
            );
            let plan = pg::explain(&target.client, &sql, &queries[0]).await?;
            if !plan.contains("Index Scan") {
                eprintln!(
                    "  note: {} for {name} ({} rows) does not use the index",
                    target.label,
                    vecs.len()
                );
            }
            let stmt = target.client.prepare(&sql).await?;
            // One untimed pass: the tenant's pages into shared buffers (all indexes and
            // tables together exceed them), as they are for a tenant in use.
            for q in &qv {
                target.client.query(&stmt, &[q]).await?;
            }
            stmts.push(stmt);
        }
        // Passes alternate between the searches, each pass starting with a different one, so
        // that all of them are timed under the same conditions (the machine is shared). A
        // pass sends all queries to one search in a row: interleaving single queries would
        // time how fast an idle backend wakes up, not the search.
        let n = targets.len();
        let mut latencies = vec![Vec::new(); n];
        let (mut recall, mut rows) = (vec![0.0; n], vec![0.0; n]);
        for pass in 0..cfg.passes {
            for j in 0..n {
                let i = (pass + j) % n;
                for (q, want) in qv.iter().zip(&truth) {
                    let began = Instant::now();
                    let got = targets[i].client.query(&stmts[i], &[q]).await?;
                    latencies[i].push(began.elapsed().as_secs_f64() * 1e3);
                    if pass == 0 {
                        let ids: Vec<i64> = got.iter().map(|r| r.get(0)).collect();
                        recall[i] += crate::data::recall(want, &ids);
                        rows[i] += ids.len() as f64;
                    }
                }
            }
        }
        for (i, latencies_ms) in latencies.into_iter().enumerate() {
            results.push(Measure {
                target: targets[i].label,
                band,
                tenant: name.clone(),
                size: vecs.len(),
                recall: recall[i] / qv.len() as f64,
                rows: rows[i] / qv.len() as f64,
                latencies_ms,
            });
        }
    }

    let mut bands = Vec::new();
    for (band, _, _) in BANDS {
        for target in &targets {
            let ms: Vec<&Measure> = results
                .iter()
                .filter(|m| m.band == band && m.target == target.label)
                .collect();
            if ms.is_empty() {
                continue;
            }
            let lat: Vec<f64> = ms
                .iter()
                .flat_map(|m| m.latencies_ms.iter().copied())
                .collect();
            bands.push(BandRow {
                target: target.label,
                band,
                tenants: ms.len(),
                recall: report::mean(&ms.iter().map(|m| m.recall).collect::<Vec<_>>()),
                rows: report::mean(&ms.iter().map(|m| m.rows).collect::<Vec<_>>()),
                p50_ms: report::quantile(&lat, 0.5),
                p99_ms: report::quantile(&lat, 0.99),
                // A tenant's latencies are its passes one after another.
                pass_p50_ms: (0..cfg.passes)
                    .map(|p| {
                        let pass: Vec<f64> = ms
                            .iter()
                            .flat_map(|m| {
                                let n = m.latencies_ms.len() / cfg.passes;
                                m.latencies_ms[p * n..(p + 1) * n].iter().copied()
                            })
                            .collect();
                        report::median(&pass)
                    })
                    .collect(),
            });
        }
    }

    std::fs::create_dir_all(&cfg.out)?;
    std::fs::write(
        cfg.out.join(format!("{}.json", cfg.name)),
        serde_json::to_string_pretty(&serde_json::json!({
            "data": source.describe(&cfg, total),
            "tenants": tenants, "vectors": total, "dims": d,
            "queries_per_tenant": cfg.queries, "passes": cfg.passes,
            "build_seconds": {"ruhnsw_shared": ruv_build, "pgvector": pgv_build},
            "index_bytes": {"ruhnsw_shared": ruv_index, "pgvector": pgv_index},
            "catalog_bytes": catalog,
            "bands": bands, "tenants_measured": results,
        }))?,
    )?;

    let mut md = format!(
        "# Tenant-confined search: shared ruhnsw index vs own table vs pgvector + RLS\n\n\
         {}; cosine, m = 16, ef_construction = 64, default ef_search (40) for both \
         extensions; {} measured tenants per band, up to {} queries each, \
         {} timed passes after an untimed one, alternating between the searches; one client \
         connection per search, prepared statements, as a role without BYPASSRLS. Recall@10 is \
         against the exact top 10 of the tenant's own rows; rows = rows returned per query \
         (10 expected, or the tenant's size when smaller). Build: shared ruhnsw {:.1} s, \
         pgvector {:.1} s ({:.0} and {:.0} vectors/s). Index size: shared ruhnsw {:.1} MiB \
         ({:.0} bytes per vector), pgvector {:.1} MiB ({:.0} bytes per vector). Tenant catalog \
         (the tables of schema `ruvector`): {:.0} bytes per tenant on disk, besides 714 bytes \
         of shared memory per tenant slot.\n\n",
        source.describe(&cfg, total),
        cfg.per_band,
        cfg.queries,
        cfg.passes,
        ruv_build,
        pgv_build,
        total as f64 / ruv_build,
        total as f64 / pgv_build,
        ruv_index as f64 / (1 << 20) as f64,
        ruv_index as f64 / total as f64,
        pgv_index as f64 / (1 << 20) as f64,
        pgv_index as f64 / total as f64,
        catalog as f64 / tenants as f64,
    );
    let rows: Vec<Vec<String>> = bands
        .iter()
        .map(|b| {
            vec![
                b.band.to_string(),
                b.target.to_string(),
                b.tenants.to_string(),
                format!("{:.3}", b.recall),
                format!("{:.1}", b.rows),
                format!("{:.2}", b.p50_ms),
                format!("{:.2}", b.p99_ms),
            ]
        })
        .collect();
    md.push_str(&report::table(
        &[
            "band",
            "search",
            "tenants",
            "recall@10",
            "rows",
            "p50 ms",
            "p99 ms",
        ],
        &[false, false, true, true, true, true, true],
        &rows,
    ));
    md.push_str("\n## Shared-index overhead (shared / own table, per band)\n\n");
    let mut rows = Vec::new();
    for (band, _, _) in BANDS {
        let find = |label: &str| bands.iter().find(|b| b.band == band && b.target == label);
        if let (Some(s), Some(o)) = (find("ruhnsw shared index"), find("ruhnsw own table")) {
            let each: Vec<f64> = s
                .pass_p50_ms
                .iter()
                .zip(&o.pass_p50_ms)
                .map(|(s, o)| 100.0 * (s / o - 1.0))
                .collect();
            let (lo, hi) = report::range(&each);
            rows.push(vec![
                band.to_string(),
                format!("{:+.1}%", 100.0 * (s.p50_ms / o.p50_ms - 1.0)),
                format!("{lo:+.1}% to {hi:+.1}%"),
                format!("{:+.1}%", 100.0 * (s.p99_ms / o.p99_ms - 1.0)),
                format!("{:.3} / {:.3}", s.recall, o.recall),
            ]);
        }
    }
    md.push_str(&report::table(
        &[
            "band",
            "p50 overhead",
            "p50 overhead, each pass",
            "p99 overhead",
            "recall shared / own",
        ],
        &[false, true, true, true, true],
        &rows,
    ));
    let name = &cfg.name;
    let plots: Vec<String> = BANDS
        .iter()
        .enumerate()
        .filter(|(_, (band, _, _))| bands.iter().any(|b| b.band == *band))
        .map(|(n, (band, _, _))| format!("`{name}-band{}.png` ({band})", n + 1))
        .collect();
    md.push_str(&format!(
        "\nPlots per band (a point per measured tenant and search): {}; raw figures: \
         `{name}.json`.\n",
        plots.join(", ")
    ));
    std::fs::write(cfg.out.join(format!("{name}.md")), &md)?;

    // A plot per band: each measured tenant's recall and p50 for each search.
    for (n, (band, _, _)) in BANDS.iter().enumerate() {
        let series: Vec<Series> = targets
            .iter()
            .map(|t| Series {
                label: t.label.to_string(),
                points: results
                    .iter()
                    .filter(|m| m.band == *band && m.target == t.label)
                    .map(|m| (m.recall, report::median(&m.latencies_ms)))
                    .collect(),
            })
            .collect();
        if series.iter().all(|s| s.points.is_empty()) {
            continue;
        }
        report::plot(
            &cfg.out.join(format!("{name}-band{}.png", n + 1)),
            &format!("tenants of {band} vectors: recall@10 vs p50, a point per tenant"),
            ("recall@10", "p50 ms"),
            &series,
            true,
            report::Draw::Points,
        )?;
    }
    println!("{md}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_sizes_span_the_bands() {
        let s = sizes(1000, 10, 100_000);
        assert_eq!(s[0], 100_000);
        assert!((10..=11).contains(&s[999]), "{}", s[999]);
        assert!(s.windows(2).all(|w| w[0] >= w[1]));
        for (_, lo, hi) in BANDS {
            assert!(
                s.iter().any(|&n| n >= lo && n <= hi),
                "a tenant in {lo}..{hi}"
            );
        }
    }
}
