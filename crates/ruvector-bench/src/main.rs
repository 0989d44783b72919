//! `ruvector-bench`: benchmarks of RuVector Postgres against real PostgreSQL servers.
//!
//! ```text
//! ruvector-bench hnsw --ruvector-dsn URI --pgvector-dsn URI [--rows N] [--dims D] ...
//! ```
//! Results go to `--out` (default `target/bench`) as JSON, markdown and PNG.

mod corpus;
mod data;
mod graph;
mod hnsw;
mod levels;
mod pg;
mod report;
mod tenants;

use std::collections::HashMap;
use std::process::ExitCode;

use pg::Result;

const USAGE: &str = "usage: ruvector-bench hnsw --ruvector-dsn URI --pgvector-dsn URI
    [--rows 100000] [--dims 384] [--latent 32] [--queries 500] [--m 16] [--ef-construction 64]
    [--ef-search 10,20,...] [--passes 3] [--build-workers 0,2] [--ruhnsw-storage auto|full,half] [--column vector|halfvec]
    [--clients 1,8,32] [--client-seconds 5] [--corpus DIR] [--name ruhnsw] [--out target/bench]
       ruvector-bench graph [--rows 100000] [--dims 384] [--latent 32] [--queries 500] [--m 16]
    [--ef-construction 64] [--ef-search 10,20,...]    (in-memory graph only, no server)
       ruvector-bench tenants --ruvector-dsn URI --pgvector-dsn URI [--tenants 1000]
    [--min-size 10] [--max-size 100000] [--dims 384] [--latent 32] [--per-band 5]
    [--queries 50] [--passes 3] [--corpus DIR] [--name tenants] [--out target/bench]
       ruvector-bench levels --ruvector-dsn URI [--size 50000] [--others 120]
    [--other-size 2000] [--dedicated 100] [--dims 384] [--latent 32] [--queries 200] [--passes 5]
    [--out target/bench]";

/// `--name value` pairs.
struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self> {
        let mut map = HashMap::new();
        let mut args = args.peekable();
        while let Some(flag) = args.next() {
            let name = flag
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {flag:?}"))?;
            let value = args
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_string(), value);
        }
        Ok(Self(map))
    }

    fn text(&mut self, name: &str) -> Result<String> {
        self.0
            .remove(name)
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn get<T: std::str::FromStr>(&mut self, name: &str, default: T) -> Result<T> {
        match self.0.remove(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: not a valid value: {v:?}").into()),
        }
    }

    fn list<T: std::str::FromStr + Clone>(&mut self, name: &str, default: &[T]) -> Result<Vec<T>> {
        match self.0.remove(name) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .map_err(|_| format!("--{name}: not a valid value: {x:?}").into())
                })
                .collect(),
        }
    }

    /// Refuses flags nobody asked for (typos).
    fn done(self) -> Result<()> {
        match self.0.keys().next() {
            Some(k) => Err(format!("unknown option --{k}").into()),
            None => Ok(()),
        }
    }
}

async fn main_with(mut argv: impl Iterator<Item = String>) -> Result<()> {
    let command = argv.next().ok_or(USAGE)?;
    let mut a = Args::parse(argv)?;
    match command.as_str() {
        "hnsw" => {
            let cfg = hnsw::Config {
                ruvector_dsn: a.text("ruvector-dsn")?,
                pgvector_dsn: a.text("pgvector-dsn")?,
                rows: a.get("rows", 100_000)?,
                dims: a.get("dims", 384)?,
                latent: a.get("latent", 32)?,
                queries: a.get("queries", 500)?,
                m: a.get("m", 16)?,
                ef_construction: a.get("ef-construction", 64)?,
                ef_search: a.list(
                    "ef-search",
                    &[
                        10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 64, 80, 100, 128, 160, 200, 250,
                        320, 400,
                    ],
                )?,
                passes: a.get("passes", 3)?,
                build_workers: a.list("build-workers", &[0, 2])?,
                storages: a.list("ruhnsw-storage", &["auto".to_string()])?,
                column: a.get("column", "vector".to_string())?,
                clients: a.list("clients", &[])?,
                client_seconds: a.get("client-seconds", 5.0)?,
                corpus: a.0.remove("corpus").map(Into::into),
                name: a.get("name", "ruhnsw".into())?,
                out: a.get("out", "target/bench".into())?,
            };
            a.done()?;
            hnsw::run(cfg).await
        }
        "graph" => {
            let cfg = graph::Config {
                rows: a.get("rows", 100_000)?,
                dims: a.get("dims", 384)?,
                latent: a.get("latent", 32)?,
                queries: a.get("queries", 500)?,
                m: a.get("m", 16)?,
                ef_construction: a.get("ef-construction", 64)?,
                ef_search: a.list("ef-search", &[10, 20, 40, 80, 160])?,
            };
            a.done()?;
            graph::run(cfg)
        }
        "tenants" => {
            let cfg = tenants::Config {
                ruvector_dsn: a.text("ruvector-dsn")?,
                pgvector_dsn: a.text("pgvector-dsn")?,
                tenants: a.get("tenants", 1000)?,
                min_size: a.get("min-size", 10)?,
                max_size: a.get("max-size", 100_000)?,
                dims: a.get("dims", 384)?,
                latent: a.get("latent", 32)?,
                per_band: a.get("per-band", 5)?,
                queries: a.get("queries", 50)?,
                passes: a.get("passes", 3)?,
                corpus: a.0.remove("corpus").map(Into::into),
                name: a.get("name", "tenants".into())?,
                out: a.get("out", "target/bench".into())?,
            };
            a.done()?;
            tenants::run(cfg).await
        }
        "levels" => {
            let cfg = levels::Config {
                ruvector_dsn: a.text("ruvector-dsn")?,
                size: a.get("size", 50_000)?,
                others: a.get("others", 120)?,
                other_size: a.get("other-size", 2_000)?,
                dedicated: a.get("dedicated", 100)?,
                dims: a.get("dims", 384)?,
                latent: a.get("latent", 32)?,
                queries: a.get("queries", 200)?,
                passes: a.get("passes", 5)?,
                out: a.get("out", "target/bench".into())?,
            };
            a.done()?;
            levels::run(cfg).await
        }
        _ => Err(USAGE.into()),
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(main_with(std::env::args().skip(1))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A server error's own message ("db error" alone says nothing).
            match e
                .downcast_ref::<tokio_postgres::Error>()
                .and_then(|e| e.as_db_error())
            {
                Some(db) => eprintln!("ruvector-bench: {}: {}", db.code().code(), db.message()),
                None => eprintln!("ruvector-bench: {e}"),
            }
            ExitCode::FAILURE
        }
    }
}
