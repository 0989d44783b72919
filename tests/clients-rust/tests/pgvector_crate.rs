//! The Rust `pgvector` crate over tokio-postgres, against ruvector, unchanged.
//!
//! Needs a running server with ruvector: `scripts/test` starts one and runs these with
//! `--ignored`, passing its URL in `RUVECTOR_TEST_URL`.

use pgvector::Vector;
use tokio_postgres::{Client, NoTls};

async fn connect() -> Client {
    let url = std::env::var("RUVECTOR_TEST_URL")
        .expect("RUVECTOR_TEST_URL is not set; scripts/test starts a server and sets it");
    let (client, connection) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS ruvector")
        .await
        .unwrap();
    client
}

fn sample(n: usize, dim: usize) -> Vec<Vec<f32>> {
    // A small deterministic generator: no extra dependency for test data.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    };
    let mut rows: Vec<Vec<f32>> = (0..n).map(|_| (0..dim).map(|_| next()).collect()).collect();
    rows[0][..4].copy_from_slice(&[0.0, -0.0, 1e-45, f32::MAX]);
    rows
}

#[tokio::test]
#[ignore = "needs a server with ruvector; scripts/test runs it"]
async fn binary_round_trip_through_the_pgvector_crate() {
    let client = connect().await;
    client
        .batch_execute("DROP TABLE IF EXISTS rs_items; CREATE TABLE rs_items (id bigserial PRIMARY KEY, embedding vector(128))")
        .await
        .unwrap();
    let rows = sample(64, 128);
    let insert = client
        .prepare("INSERT INTO rs_items (embedding) VALUES ($1)")
        .await
        .unwrap();
    for r in &rows {
        client
            .execute(&insert, &[&Vector::from(r.clone())])
            .await
            .unwrap();
    }
    let got = client
        .query("SELECT embedding FROM rs_items ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(got.len(), rows.len());
    for (row, want) in got.iter().zip(&rows) {
        let v: Vector = row.get(0);
        let bits: Vec<u32> = v.to_vec().iter().map(|x| x.to_bits()).collect();
        let want_bits: Vec<u32> = want.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, want_bits, "every bit, signed zero included");
    }

    // A kNN query with a vector parameter returns the exact nearest rows.
    let q = Vector::from(rows[9].clone());
    let nearest = client
        .query(
            "SELECT id - 1 FROM rs_items ORDER BY embedding <-> $1, id LIMIT 3",
            &[&q],
        )
        .await
        .unwrap();
    let mut by_distance: Vec<(f64, i64)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let d: f64 = r
                .iter()
                .zip(&rows[9])
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            (d, i as i64)
        })
        .collect();
    by_distance.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let got_ids: Vec<i64> = nearest.iter().map(|r| r.get(0)).collect();
    assert_eq!(
        got_ids,
        by_distance[..3].iter().map(|p| p.1).collect::<Vec<_>>()
    );
    client.batch_execute("DROP TABLE rs_items").await.unwrap();
}

#[tokio::test]
#[ignore = "needs a server with ruvector; scripts/test runs it"]
async fn text_protocol_and_errors() {
    let client = connect().await;
    // simple_query uses the text protocol end to end.
    let msgs = client
        .simple_query("SELECT '[1, 2.5 ,3]'::vector, '[1,2,3]'::vector <-> '[3,2,1]'")
        .await
        .unwrap();
    let row = msgs
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("one row");
    assert_eq!(row.get(0), Some("[1,2.5,3]"));
    assert_eq!(row.get(1), Some("2.8284271247461903"));

    let err = client
        .query("SELECT '[1,,2]'::vector", &[])
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "22P02");
    assert_eq!(
        db.message(),
        "invalid input syntax for type vector: \"[1,,2]\""
    );

    let err = client
        .query("SELECT $1::vector(3)", &[&Vector::from(vec![1.0, 2.0])])
        .await
        .unwrap_err();
    assert_eq!(
        err.as_db_error().expect("a server error").code().code(),
        "22000"
    );
}
