//! End-to-end tests of ruvector through the Rust `pgvector` crate; see `tests/`.
