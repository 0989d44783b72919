//! The PostgreSQL side: connections, bulk loads, settings.

use futures_util::pin_mut;
use pgvector::Vector;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A connection whose driver task runs on the current runtime.
pub async fn connect(dsn: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .map_err(|e| format!("connecting to {dsn}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    Ok(client)
}

/// Loads `(first_id + i, vectors[i])` rows into `table (id bigint, vec vector)` with one binary
/// COPY; `extra` is a constant text value for a third column (`None`: two columns).
pub async fn copy_vectors(
    client: &Client,
    table: &str,
    first_id: i64,
    vectors: &[Vec<f32>],
    extra: Option<(&str, &str)>,
) -> Result<()> {
    // The vector type's OID differs between extensions and databases: ask the server.
    let vector_type = client.prepare("SELECT $1::vector").await?.params()[0].clone();
    let (columns, types) = match extra {
        Some((column, _)) => (
            format!("id, vec, {column}"),
            vec![Type::INT8, vector_type, Type::TEXT],
        ),
        None => ("id, vec".to_string(), vec![Type::INT8, vector_type]),
    };
    let sink = client
        .copy_in(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &types);
    pin_mut!(writer);
    for (i, v) in vectors.iter().enumerate() {
        let id = first_id + i as i64;
        let vec = Vector::from(v.clone());
        match extra {
            Some((_, value)) => writer.as_mut().write(&[&id, &vec, &value]).await?,
            None => writer.as_mut().write(&[&id, &vec]).await?,
        }
    }
    writer.finish().await?;
    Ok(())
}

/// `SET name = value` (session level).
pub async fn set(client: &Client, name: &str, value: impl std::fmt::Display) -> Result<()> {
    client
        .batch_execute(&format!("SET {name} = '{value}'"))
        .await?;
    Ok(())
}

/// Size in bytes of a relation.
pub async fn relation_size(client: &Client, relation: &str) -> Result<i64> {
    let row = client
        .query_one("SELECT pg_relation_size($1::text::regclass)", &[&relation])
        .await?;
    Ok(row.get(0))
}

/// The text of `EXPLAIN` for a statement with one vector parameter.
pub async fn explain(client: &Client, sql: &str, query: &[f32]) -> Result<String> {
    let rows = client
        .query(&format!("EXPLAIN {sql}"), &[&Vector::from(query.to_vec())])
        .await?;
    Ok(rows
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n"))
}
