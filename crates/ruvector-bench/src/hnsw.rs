//! `ruhnsw` against pgvector's `hnsw` in one PostgreSQL server: the same rows, the same `m`
//! and `ef_construction`, one database per extension. Build time (with each number of
//! parallel maintenance workers asked for), index size, and a sweep of `ef_search` giving
//! recall@10, QPS and latency quantiles; passes of the engines rotate so the machine's noise
//! falls on all. With several `ruhnsw` storages (`--ruhnsw-storage full,half`), each is an
//! engine of its own, on its own copy of the table in the ruvector database. With `--clients`,
//! QPS of several sessions at once at the ef_search each engine needs for recall 0.95 and 0.99.
//! The rows are synthetic embedding-like vectors, or a real corpus (`--corpus`). With
//! `--column halfvec` both tables hold them as `halfvec` (each extension's own type) and the
//! indexes use `halfvec_cosine_ops`; recall is still against the exact results over the
//! original single-precision vectors.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pgvector::Vector;
use serde::Serialize;
use tokio_postgres::Client;

use crate::corpus::Corpus;
use crate::data::{ground_truth, recall, Space};
use crate::pg::{self, Result};
use crate::report::{self, Series};

/// `ruvector-bench hnsw`: build both extensions' indexes on the same data and sweep
/// `ef_search`, single session and concurrent.
#[derive(clap::Args)]
pub struct Config {
    /// Connection string of the server with ruvector.
    #[arg(long)]
    pub ruvector_dsn: String,
    /// Connection string of the server with pgvector (may be the same server).
    #[arg(long)]
    pub pgvector_dsn: String,
    #[arg(long, default_value_t = 100_000)]
    pub rows: usize,
    #[arg(long, default_value_t = 384)]
    pub dims: usize,
    /// Intrinsic dimensions of the data (see `data::Space`).
    #[arg(long, default_value_t = 32)]
    pub latent: usize,
    #[arg(long, default_value_t = 500)]
    pub queries: usize,
    #[arg(long, default_value_t = 16)]
    pub m: u32,
    #[arg(long, default_value_t = 64)]
    pub ef_construction: u32,
    /// The `ef_search` values to sweep (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 80, 100, 128, 160, 200, 250, 320, 400])]
    pub ef_search: Vec<u32>,
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
    /// Build each index with each of these numbers of parallel maintenance workers, in this
    /// order; the sweep runs on the last build.
    #[arg(long, value_delimiter = ',', default_values_t = [0, 2])]
    pub build_workers: Vec<u32>,
    /// The `storage` reloption of each `ruhnsw` index to measure (`auto`, `full`, `half`).
    #[arg(long = "ruhnsw-storage", value_delimiter = ',', default_values_t = ["auto".to_string()])]
    pub storages: Vec<String>,
    /// The column's type.
    #[arg(long, default_value = "vector", value_parser = ["vector", "halfvec"])]
    pub column: String,
    /// Numbers of concurrent sessions to measure QPS with (none by default).
    #[arg(long, value_delimiter = ',')]
    pub clients: Vec<usize>,
    /// Length of each concurrent measurement, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub client_seconds: f64,
    /// A corpus directory (`corpus::Corpus`): its documents are the rows (`rows`, `dims` and
    /// `latent` do not apply) and the query texts of `queries` of them, evenly spread, the
    /// queries.
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Base name of the output files.
    #[arg(long, default_value = "ruhnsw")]
    pub name: String,
    /// Directory of the JSON, markdown and PNG results.
    #[arg(long, default_value = "target/bench")]
    pub out: PathBuf,
}

const K: usize = 10;
const TARGETS: [f64; 2] = [0.95, 0.99];
const PGVECTOR: &str = "pgvector hnsw";

struct Engine {
    name: String,
    dsn: String,
    client: Client,
    extension: &'static str,
    access_method: &'static str,
    ef_search_guc: &'static str,
    table: String,
    /// Reloptions beyond `m` and `ef_construction`.
    options: String,
    /// The column's type (`vector` or `halfvec`).
    column: String,
}

impl Engine {
    fn index(&self) -> String {
        format!("{}_vec", self.table)
    }

    /// The search statement; its parameter is a `vector` either way (cast to the column's
    /// type in the statement, as an application holding single-precision embeddings does).
    fn query(&self) -> String {
        let cast = if self.column == "vector" {
            ""
        } else {
            "::vector"
        };
        format!(
            "SELECT id FROM {} ORDER BY vec <=> $1{cast} LIMIT 10",
            self.table
        )
    }
}

/// Recall and QPS of each pass at one ef_search, and the latencies of all its queries.
#[derive(Default, Clone)]
struct Runs(Vec<f64>, Vec<f64>, Vec<f64>);

#[derive(Serialize)]
struct Build {
    engine: String,
    workers: u32,
    seconds: f64,
    index_bytes: i64,
}

#[derive(Serialize, Clone)]
struct Point {
    engine: String,
    ef_search: u32,
    recall: f64,
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// QPS of each pass, for the spread.
    pass_qps: Vec<f64>,
}

/// QPS of several sessions at once, at the smallest swept ef_search reaching a recall target.
#[derive(Serialize)]
struct Concurrent {
    engine: String,
    target: f64,
    ef_search: u32,
    recall: f64,
    clients: usize,
    qps: f64,
    pass_qps: Vec<f64>,
}

#[derive(Serialize)]
struct Report<'a> {
    data: String,
    rows: usize,
    dims: usize,
    latent: usize,
    queries: usize,
    m: u32,
    ef_construction: u32,
    passes: usize,
    server_version: String,
    builds: &'a [Build],
    sweep: &'a [Point],
    /// Each engine at exactly each recall target (`at_recall`); absent when not reached.
    equal_recall: Vec<Point>,
    concurrent: &'a [Concurrent],
}

/// One pass of every query at the current `ef_search`: (recall, seconds, latencies in ms).
async fn pass(
    engine: &Engine,
    statement: &tokio_postgres::Statement,
    queries: &[Vector],
    truth: &[Vec<i64>],
) -> Result<(f64, f64, Vec<f64>)> {
    let mut latencies = Vec::with_capacity(queries.len());
    let mut recalls = Vec::with_capacity(queries.len());
    let start = Instant::now();
    for (q, t) in queries.iter().zip(truth) {
        let began = Instant::now();
        let rows = engine.client.query(statement, &[q]).await?;
        latencies.push(began.elapsed().as_secs_f64() * 1e3);
        let got: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        recalls.push(recall(t, &got));
    }
    Ok((
        report::mean(&recalls),
        start.elapsed().as_secs_f64(),
        latencies,
    ))
}

/// Queries per second of `clients` sessions searching `engine` together for `seconds` at
/// `ef_search`; each session runs the queries in turn from its own starting point.
async fn concurrent_qps(
    engine: &Engine,
    clients: usize,
    ef_search: u32,
    queries: &[Vector],
    seconds: f64,
) -> Result<f64> {
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        let client = pg::connect(&engine.dsn).await?;
        pg::set(&client, engine.ef_search_guc, ef_search).await?;
        let statement = client.prepare(&engine.query()).await?;
        sessions.push((client, statement));
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let done = futures_util::future::try_join_all(sessions.iter().enumerate().map(
        |(i, (client, statement))| async move {
            let mut n = 0;
            let mut q = i * queries.len() / clients;
            while Instant::now() < deadline {
                client
                    .query(statement, &[&queries[q % queries.len()]])
                    .await?;
                n += 1;
                q += 1;
            }
            Ok::<usize, tokio_postgres::Error>(n)
        },
    ))
    .await?;
    Ok(done.iter().sum::<usize>() as f64 / start.elapsed().as_secs_f64())
}

async fn build(engine: &Engine, cfg: &Config, workers: u32) -> Result<Build> {
    let c = &engine.client;
    let (table, index) = (&engine.table, engine.index());
    c.batch_execute(&format!("DROP INDEX IF EXISTS {index}; CHECKPOINT"))
        .await?;
    pg::set(c, "max_parallel_maintenance_workers", workers).await?;
    // The table's parallel_workers makes PostgreSQL plan exactly `workers` (its size would
    // otherwise cap them).
    let reloption = if workers > 0 {
        format!("SET (parallel_workers = {workers})")
    } else {
        "RESET (parallel_workers)".into()
    };
    c.batch_execute(&format!("ALTER TABLE {table} {reloption}"))
        .await?;
    let sql = format!(
        "CREATE INDEX {index} ON {table} USING {} (vec {}_cosine_ops) WITH (m = {}, ef_construction = {}{})",
        engine.access_method, engine.column, cfg.m, cfg.ef_construction, engine.options
    );
    let start = Instant::now();
    c.batch_execute(&sql).await?;
    let seconds = start.elapsed().as_secs_f64();
    let index_bytes = pg::relation_size(c, &index).await?;
    eprintln!(
        "  {} build, {workers} workers: {seconds:.1} s, {} MB",
        engine.name,
        index_bytes >> 20
    );
    Ok(Build {
        engine: engine.name.clone(),
        workers,
        seconds,
        index_bytes,
    })
}

pub async fn run(cfg: Config) -> Result<()> {
    let (data, query_vectors, about) = match &cfg.corpus {
        Some(dir) => {
            let c = Corpus::load(dir)?;
            let all = 0..c.len();
            let queries = c.queries(all.clone(), cfg.queries);
            let about = format!(
                "{}; queries: the one-line synopses of {} of its documents, evenly spread",
                c.description,
                queries.len()
            );
            (c.docs(all), queries, about)
        }
        None => {
            eprintln!(
                "generating {} x {} vectors and {} queries",
                cfg.rows, cfg.dims, cfg.queries
            );
            let space = Space::new(cfg.dims, cfg.latent);
            let about = format!(
                "deterministic embedding-like vectors ({} intrinsic dimensions around shared \
                 topics); {} queries from the data's distribution",
                cfg.latent, cfg.queries
            );
            (
                space.sample(cfg.rows, 1),
                space.sample(cfg.queries, 2),
                about,
            )
        }
    };
    let (rows, dims) = (data.len(), data.first().map_or(0, Vec::len));
    let truth: Vec<Vec<i64>> = ground_truth(&data, &query_vectors, K)
        .into_iter()
        .map(|ids| ids.into_iter().map(|i| i as i64 + 1).collect())
        .collect();

    // The ruhnsw engines, then pgvector last.
    let mut engines = Vec::new();
    for storage in &cfg.storages {
        let (name, table, options) = match storage.as_str() {
            "auto" => (
                "ruvector ruhnsw".to_string(),
                "bench_items".to_string(),
                String::new(),
            ),
            s => (
                format!("ruvector ruhnsw, {s}"),
                format!("bench_items_{s}"),
                format!(", storage = {s}"),
            ),
        };
        // ef_search as the width searched, as pgvector's: the sweep measures the curve of
        // recall against QPS from its low end (the default widening would start it at 4x).
        let dsn = format!(
            "{} options='-c ruvector.scale_ef_search=off'",
            cfg.ruvector_dsn
        );
        engines.push(Engine {
            name,
            client: pg::connect(&dsn).await?,
            dsn,
            extension: "ruvector",
            access_method: "ruhnsw",
            ef_search_guc: "ruvector.ef_search",
            table,
            options,
            column: cfg.column.clone(),
        });
    }
    engines.push(Engine {
        name: PGVECTOR.into(),
        dsn: cfg.pgvector_dsn.clone(),
        client: pg::connect(&cfg.pgvector_dsn).await?,
        extension: "vector",
        access_method: "hnsw",
        ef_search_guc: "hnsw.ef_search",
        table: "bench_items".into(),
        options: String::new(),
        column: cfg.column.clone(),
    });
    let server_version: String = engines[0]
        .client
        .query_one("SELECT version()", &[])
        .await?
        .get(0);

    for e in &engines {
        eprintln!("loading {rows} rows for {}", e.name);
        e.client
            .batch_execute(&format!(
                "SET client_min_messages = warning;
                 CREATE EXTENSION IF NOT EXISTS {ext};
                 DROP TABLE IF EXISTS {table};
                 CREATE TABLE {table} (id bigint PRIMARY KEY, vec vector({dims}))
                     WITH (autovacuum_enabled = off);",
                ext = e.extension,
                table = e.table,
                dims = dims
            ))
            .await?;
        pg::copy_vectors(&e.client, &e.table, 1, &data, None).await?;
        if cfg.column != "vector" {
            e.client
                .batch_execute(&format!(
                    "ALTER TABLE {} ALTER COLUMN vec TYPE {}({dims})",
                    e.table, cfg.column
                ))
                .await?;
        }
        e.client
            .batch_execute(&format!("VACUUM ANALYZE {}", e.table))
            .await?;
        // Both builds get all the memory they want: the comparison is of the algorithms.
        pg::set(&e.client, "maintenance_work_mem", "4GB").await?;
    }

    eprintln!(
        "building (m = {}, ef_construction = {})",
        cfg.m, cfg.ef_construction
    );
    let mut builds = Vec::new();
    for &workers in &cfg.build_workers {
        for e in &engines {
            builds.push(build(e, &cfg, workers).await?);
        }
    }

    let queries: Vec<Vector> = query_vectors
        .iter()
        .map(|q| Vector::from(q.clone()))
        .collect();
    let mut statements = Vec::new();
    for e in &engines {
        let plan = pg::explain(&e.client, &e.query(), &query_vectors[0]).await?;
        if !plan.contains(&format!("Index Scan using {}", e.index())) {
            return Err(format!("{}: the planner does not use the index:\n{plan}", e.name).into());
        }
        statements.push(e.client.prepare(&e.query()).await?);
        // Warm the caches: one pass at the widest search.
        let widest = cfg.ef_search.iter().copied().max().unwrap_or(40);
        pg::set(&e.client, e.ef_search_guc, widest).await?;
        pass(e, statements.last().unwrap(), &queries, &truth).await?;
    }

    eprintln!(
        "sweeping ef_search over {:?}, {} passes of {} queries",
        cfg.ef_search, cfg.passes, cfg.queries
    );
    // (engine, ef) -> (recalls, qps per pass, all latencies)
    let mut runs: Vec<Vec<Runs>> = vec![vec![Runs::default(); cfg.ef_search.len()]; engines.len()];
    for p in 0..cfg.passes {
        for (j, &ef) in cfg.ef_search.iter().enumerate() {
            // Rotate which engine goes first.
            let n = engines.len();
            for i in (0..n).map(|k| (k + p + j) % n) {
                let e = &engines[i];
                pg::set(&e.client, e.ef_search_guc, ef).await?;
                let (r, secs, lat) = pass(e, &statements[i], &queries, &truth).await?;
                let slot = &mut runs[i][j];
                slot.0.push(r);
                slot.1.push(queries.len() as f64 / secs);
                slot.2.extend(lat);
            }
        }
        eprintln!("  pass {} of {} done", p + 1, cfg.passes);
    }

    let mut sweep = Vec::new();
    for (i, e) in engines.iter().enumerate() {
        for (j, &ef) in cfg.ef_search.iter().enumerate() {
            let Runs(recalls, qps, lat) = &runs[i][j];
            sweep.push(Point {
                engine: e.name.clone(),
                ef_search: ef,
                recall: report::mean(recalls),
                qps: report::median(qps),
                p50_ms: report::quantile(lat, 0.5),
                p99_ms: report::quantile(lat, 0.99),
                pass_qps: qps.clone(),
            });
        }
    }

    let mut concurrent = Vec::new();
    if !cfg.clients.is_empty() {
        eprintln!(
            "concurrent sessions {:?} at recall {TARGETS:?}, {} passes of {} s",
            cfg.clients, cfg.passes, cfg.client_seconds
        );
    }
    for target in TARGETS {
        for &clients in &cfg.clients {
            // (engine, its figures); an engine whose two targets need the same ef_search is
            // measured once and reported for both.
            let mut at: Vec<(&Engine, Concurrent)> = engines
                .iter()
                .filter_map(|e| {
                    let p = first_reaching(&sweep, &e.name, target)?;
                    let same = concurrent.iter().find(|c: &&Concurrent| {
                        c.engine == e.name && c.ef_search == p.ef_search && c.clients == clients
                    });
                    let pass_qps = same.map_or(Vec::new(), |c| c.pass_qps.clone());
                    Some((
                        e,
                        Concurrent {
                            engine: e.name.clone(),
                            target,
                            ef_search: p.ef_search,
                            recall: p.recall,
                            clients,
                            qps: 0.0,
                            pass_qps,
                        },
                    ))
                })
                .collect();
            let fresh: Vec<usize> = (0..at.len())
                .filter(|&i| at[i].1.pass_qps.is_empty())
                .collect();
            for p in 0..cfg.passes {
                for k in 0..fresh.len() {
                    let (e, c) = &mut at[fresh[(k + p) % fresh.len()]];
                    let qps = concurrent_qps(e, clients, c.ef_search, &queries, cfg.client_seconds)
                        .await?;
                    c.pass_qps.push(qps);
                }
            }
            for (_, mut c) in at {
                c.qps = report::median(&c.pass_qps);
                concurrent.push(c);
            }
        }
    }

    std::fs::create_dir_all(&cfg.out)?;
    let name = &cfg.name;
    let json = serde_json::to_string_pretty(&Report {
        data: about.clone(),
        rows,
        dims,
        latent: cfg.latent,
        queries: query_vectors.len(),
        m: cfg.m,
        ef_construction: cfg.ef_construction,
        passes: cfg.passes,
        server_version: server_version.clone(),
        builds: &builds,
        sweep: &sweep,
        equal_recall: TARGETS
            .iter()
            .flat_map(|&t| engines.iter().map(move |e| (t, e)))
            .filter_map(|(t, e)| Some(at_recall(&sweep, &e.name, t)?.0))
            .collect(),
        concurrent: &concurrent,
    })?;
    std::fs::write(cfg.out.join(format!("{name}.json")), json)?;

    let title = format!(
        "{}{} x {}{}, cosine, m = {}, ef_construction = {}",
        if cfg.corpus.is_some() {
            "real corpus, "
        } else {
            ""
        },
        thousands(rows),
        dims,
        if cfg.column == "vector" {
            String::new()
        } else {
            format!(" {}", cfg.column)
        },
        cfg.m,
        cfg.ef_construction
    );
    let series: Vec<Series> = engines
        .iter()
        .map(|e| Series {
            label: e.name.clone(),
            points: sweep
                .iter()
                .filter(|p| p.engine == e.name)
                .map(|p| (p.recall, p.qps))
                .collect(),
        })
        .collect();
    report::plot(
        &cfg.out.join(format!("{name}.png")),
        &format!("recall@10 vs QPS (1 client): {title}"),
        ("recall@10", "queries per second"),
        &series,
        true,
        report::Draw::Lines,
    )?;

    let mut markdown = markdown(
        &cfg,
        &title,
        &about,
        &server_version,
        &engines,
        &builds,
        &sweep,
    );
    markdown.push_str(&concurrency(&cfg, &concurrent));
    markdown.push_str(&format!(
        "\nPlot: `{name}.png`; raw figures: `{name}.json`.\n"
    ));
    std::fs::write(cfg.out.join(format!("{name}.md")), &markdown)?;
    println!("{markdown}");
    Ok(())
}

/// With a full- and a half-precision ruhnsw index: recall@10 of each at every ef_search and
/// their difference.
fn precision(engines: &[Engine], sweep: &[Point]) -> String {
    let named = |storage: &str| engines.iter().find(|e| e.options.contains(storage));
    let (Some(full), Some(half)) = (named("storage = full"), named("storage = half")) else {
        return String::new();
    };
    let of = |e: &Engine| -> Vec<&Point> { sweep.iter().filter(|p| p.engine == e.name).collect() };
    let rows: Vec<Vec<String>> = of(full)
        .iter()
        .zip(of(half))
        .map(|(f, h)| {
            vec![
                f.ef_search.to_string(),
                format!("{:.4}", f.recall),
                format!("{:.4}", h.recall),
                format!("{:+.4}", h.recall - f.recall),
                format!("{:.2}x", h.qps / f.qps),
            ]
        })
        .collect();
    let worst = of(full)
        .iter()
        .zip(of(half))
        .map(|(f, h)| f.recall - h.recall)
        .fold(f64::NEG_INFINITY, f64::max);
    let mut out = String::from("\n## Half precision\n\n");
    out.push_str(&format!(
        "The same rows in a `storage = half` index (2-byte elements, rows re-ranked by the \
         table's vectors) beside `storage = full`: recall@10 is at most {worst:.4} lower at any \
         ef_search.\n\n"
    ));
    out.push_str(&report::table(
        &[
            "ef_search",
            "recall, full",
            "recall, half",
            "half − full",
            "QPS half / full",
        ],
        &[true, true, true, true, true],
        &rows,
    ));
    out
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The sweep of `engine` at exactly `target` recall: QPS and latencies interpolated linearly
/// between the last point below the target and the first at or above it (the first point
/// alone when none is below); `None` when no point reaches it. Returns the estimate and the
/// ef_search range it lies in.
fn at_recall(sweep: &[Point], engine: &str, target: f64) -> Option<(Point, String)> {
    let mut points: Vec<&Point> = sweep.iter().filter(|p| p.engine == engine).collect();
    points.sort_by_key(|p| p.ef_search);
    let hi = points.iter().position(|p| p.recall >= target)?;
    let h = points[hi];
    if hi == 0 || h.recall == target {
        return Some((h.clone(), h.ef_search.to_string()));
    }
    let l = points[hi - 1];
    let t = (target - l.recall) / (h.recall - l.recall);
    let lerp = |a: f64, b: f64| a + t * (b - a);
    let p = Point {
        engine: h.engine.clone(),
        ef_search: h.ef_search,
        recall: target,
        qps: lerp(l.qps, h.qps),
        p50_ms: lerp(l.p50_ms, h.p50_ms),
        p99_ms: lerp(l.p99_ms, h.p99_ms),
        pass_qps: Vec::new(),
    };
    Some((p, format!("{}–{}", l.ef_search, h.ef_search)))
}

/// The swept point of `engine` with the smallest ef_search reaching `target` recall.
fn first_reaching<'a>(sweep: &'a [Point], engine: &str, target: f64) -> Option<&'a Point> {
    sweep
        .iter()
        .filter(|p| p.engine == engine && p.recall >= target)
        .min_by_key(|p| p.ef_search)
}

/// The concurrent-sessions table: QPS per engine and number of sessions, and ours / pgvector.
fn concurrency(cfg: &Config, concurrent: &[Concurrent]) -> String {
    if concurrent.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n## Concurrent sessions\n\nQPS of 1 to {} sessions searching at once for {} s, each \
         with its own connection and prepared statement, at the smallest swept ef_search that \
         reaches the recall target (measured once when both targets need the same one); the \
         median of {} passes (engines alternating), with the lowest and highest pass.\n\n",
        cfg.clients.iter().max().unwrap_or(&1),
        cfg.client_seconds,
        cfg.passes
    );
    let mut rows = Vec::new();
    for target in TARGETS {
        for &clients in &cfg.clients {
            let here: Vec<&Concurrent> = concurrent
                .iter()
                .filter(|c| c.target == target && c.clients == clients)
                .collect();
            for c in &here {
                let (lo, hi) = report::range(&c.pass_qps);
                rows.push(vec![
                    format!("{target:.2}"),
                    clients.to_string(),
                    c.engine.clone(),
                    format!("{} ({:.4})", c.ef_search, c.recall),
                    format!("{:.0}", c.qps),
                    format!("{lo:.0}–{hi:.0}"),
                ]);
            }
            if let Some(p) = here.iter().find(|c| c.engine == PGVECTOR) {
                for c in here.iter().filter(|c| c.engine != PGVECTOR) {
                    rows.push(vec![
                        format!("{target:.2}"),
                        clients.to_string(),
                        format!("**{} / pgvector**", c.engine),
                        String::new(),
                        format!("**{:.2}x**", c.qps / p.qps),
                        String::new(),
                    ]);
                }
            }
        }
    }
    out.push_str(&report::table(
        &[
            "recall@10",
            "sessions",
            "index",
            "ef_search (recall)",
            "QPS",
            "QPS range",
        ],
        &[true, true, false, false, true, true],
        &rows,
    ));
    out
}

fn markdown(
    cfg: &Config,
    title: &str,
    about: &str,
    server_version: &str,
    engines: &[Engine],
    builds: &[Build],
    sweep: &[Point],
) -> String {
    let mut out = format!("# ruhnsw vs pgvector HNSW: {title}\n\n");
    out.push_str(&format!(
        "{}; one database per extension in the same server. Data: {about}; \
         recall@10 against exact cosine results; one client, prepared statement, \
         `ORDER BY vec <=> $1 LIMIT 10`{}; {} alternating passes per ef_search, QPS is the median \
         pass (the range: the lowest and highest pass), latency quantiles over all passes. \
         ruhnsw runs with `ruvector.scale_ef_search = off`, so that its ef_search is the width \
         searched, as pgvector's is (on, the default, widens it for graphs of more than 5,000 \
         vectors: the same curve, reached at lower settings).\n\n",
        server_version
            .split(" on ")
            .next()
            .unwrap_or(server_version),
        if cfg.column == "vector" {
            String::new()
        } else {
            format!(
                " over a `{0}` column (`$1::vector`, cast to `{0}`), against the exact \
                 results over the original single-precision vectors",
                cfg.column
            )
        },
        cfg.passes
    ));

    out.push_str("## Build and size\n\n");
    out.push_str(
        "Each index built with each number of parallel maintenance workers (the table's \
         `parallel_workers` set to it), in the order listed; the sweeps run on the last build. \
         Speed-up: the time without workers over this time.\n\n",
    );
    let find = |name: &str, workers: u32| {
        builds
            .iter()
            .find(|b| b.engine == name && b.workers == workers)
    };
    let rows: Vec<Vec<String>> = builds
        .iter()
        .map(|b| {
            let speedup = find(&b.engine, 0)
                .map_or(String::new(), |z| format!("{:.2}x", z.seconds / b.seconds));
            let vs = match find(PGVECTOR, b.workers) {
                Some(p) if b.engine != PGVECTOR => format!("{:.2}x", b.seconds / p.seconds),
                _ => String::new(),
            };
            vec![
                b.engine.to_string(),
                b.workers.to_string(),
                format!("{:.1}", b.seconds),
                speedup,
                vs,
                format!("{:.1}", b.index_bytes as f64 / (1 << 20) as f64),
            ]
        })
        .collect();
    out.push_str(&report::table(
        &[
            "index",
            "parallel workers",
            "build s",
            "speed-up",
            "time / pgvector's, same workers",
            "size MiB",
        ],
        &[false, true, true, true, true, true],
        &rows,
    ));
    let ours = &engines[..engines.len() - 1];
    for e in ours {
        if let (Some(r), Some(p)) = (find(&e.name, 0), find(PGVECTOR, 0)) {
            out.push_str(&format!(
                "\nSingle-process build: {} takes {:.2}x pgvector's time; its index is {:.2}x pgvector's size.\n",
                e.name,
                r.seconds / p.seconds,
                r.index_bytes as f64 / p.index_bytes as f64
            ));
        }
    }

    out.push_str("\n## At equal recall\n\n");
    let mut rows = Vec::new();
    for target in TARGETS {
        let found: Vec<Option<(Point, String)>> = engines
            .iter()
            .map(|e| at_recall(sweep, &e.name, target))
            .collect();
        for (e, p) in engines.iter().zip(&found) {
            rows.push(match p {
                Some((p, ef)) => vec![
                    format!("{target:.2}"),
                    e.name.to_string(),
                    ef.clone(),
                    format!("{:.0}", p.qps),
                    format!("{:.2}", p.p50_ms),
                    format!("{:.2}", p.p99_ms),
                ],
                None => vec![
                    format!("{target:.2}"),
                    e.name.to_string(),
                    "not reached".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                ],
            });
        }
        let Some(Some((p, _))) = found.last() else {
            continue;
        };
        for (e, r) in ours.iter().zip(&found) {
            if let Some((r, _)) = r {
                rows.push(vec![
                    format!("{target:.2}"),
                    format!("**{} / pgvector**", e.name),
                    String::new(),
                    format!("**{:.2}x**", r.qps / p.qps),
                    format!("{:.2}x", r.p50_ms / p.p50_ms),
                    format!("{:.2}x", r.p99_ms / p.p99_ms),
                ]);
            }
        }
    }
    out.push_str(&report::table(
        &["recall@10", "index", "ef_search", "QPS", "p50 ms", "p99 ms"],
        &[true, false, true, true, true, true],
        &rows,
    ));
    out.push_str(
        "\nFigures at exactly the target recall, interpolated linearly between the two swept \
         ef_search values around it (see the sweep below for the measured points).\n",
    );

    out.push_str(&precision(engines, sweep));

    out.push_str("\n## Sweep\n\n");
    let rows: Vec<Vec<String>> = sweep
        .iter()
        .map(|p| {
            vec![
                p.engine.to_string(),
                p.ef_search.to_string(),
                format!("{:.4}", p.recall),
                format!("{:.0}", p.qps),
                {
                    let (lo, hi) = report::range(&p.pass_qps);
                    format!("{lo:.0}–{hi:.0}")
                },
                format!("{:.2}", p.p50_ms),
                format!("{:.2}", p.p99_ms),
            ]
        })
        .collect();
    out.push_str(&report::table(
        &[
            "index",
            "ef_search",
            "recall@10",
            "QPS",
            "QPS range",
            "p50 ms",
            "p99 ms",
        ],
        &[false, true, true, true, true, true, true],
        &rows,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(ef: u32, recall: f64, qps: f64) -> Point {
        Point {
            engine: "e".into(),
            ef_search: ef,
            recall,
            qps,
            p50_ms: 1000.0 / qps,
            p99_ms: 2000.0 / qps,
            pass_qps: Vec::new(),
        }
    }

    #[test]
    fn equal_recall_interpolates_between_the_sweep_points_around_the_target() {
        let sweep = [
            point(40, 0.98, 800.0),
            point(10, 0.90, 2000.0),
            point(20, 0.96, 1200.0),
        ];
        let (p, ef) = at_recall(&sweep, "e", 0.95).unwrap();
        assert_eq!(ef, "10–20");
        assert!((p.qps - (2000.0 - 800.0 * 5.0 / 6.0)).abs() < 1e-9);
        // A target the first point already reaches: that point, no extrapolation.
        let (p, ef) = at_recall(&sweep, "e", 0.85).unwrap();
        assert_eq!((ef.as_str(), p.qps), ("10", 2000.0));
        assert!(at_recall(&sweep, "e", 0.99).is_none());
        assert!(at_recall(&sweep, "other", 0.5).is_none());
    }
}
