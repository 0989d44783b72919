//! `ruvector-bench`: benchmarks of RuVector Postgres against real PostgreSQL servers.
//!
//! ```text
//! ruvector-bench hnsw --ruvector-dsn URI --pgvector-dsn URI [--rows N] [--dims D] ...
//! ruvector-bench help hnsw
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

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks of RuVector Postgres against real PostgreSQL servers.
#[derive(Parser)]
#[command(name = "ruvector-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// ruhnsw against pgvector's hnsw on the same data and server: build time, recall and
    /// QPS over an ef_search sweep.
    Hnsw(hnsw::Config),
    /// The in-memory graph alone (no server): build time, recall and vectors read per query.
    Graph(graph::Config),
    /// Tenant-confined search among many tenants, per tenant-size band.
    Tenants(tenants::Config),
    /// Isolation levels: shared, dedicated, own table; a migration under load.
    Levels(levels::Config),
}

async fn run(command: Command) -> pg::Result<()> {
    match command {
        Command::Hnsw(cfg) => hnsw::run(cfg).await,
        Command::Graph(cfg) => graph::run(cfg),
        Command::Tenants(cfg) => tenants::run(cfg).await,
        Command::Levels(cfg) => levels::run(cfg).await,
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(Cli::parse().command)) {
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
