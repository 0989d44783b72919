//! The PostgreSQL-independent core of RuVector.
//!
//! Everything here is plain Rust with its own tests: the `vector` value rules (text format,
//! validation, arithmetic, ordering) and the distance kernels. The `ruvector` extension crate
//! adapts these to PostgreSQL datums and error reports; it holds no vector logic of its own.
//!
//! `unsafe` is denied in this crate except in the SIMD kernels, where `std::arch` intrinsics
//! behind run-time CPU feature detection require it.
#![deny(unsafe_code)]

pub mod distance;
pub mod error;
pub mod halfvec;
pub mod hnsw;
pub mod mincut;
pub mod text;
pub mod vector;

pub use error::VectorError;
pub use vector::VECTOR_MAX_DIM;
