//! Tenant rules of RuVector, independent of PostgreSQL.
//!
//! - [`tenant_id`]: what a tenant id may look like, and the admin wildcard.
//! - [`registry`]: the fixed-capacity tenant table that lives in shared memory (the
//!   extension places it there and guards it with a lock; here it is plain memory).
//! - [`quota`]: reservations against per-tenant limits that are exact under concurrency and
//!   undone by (sub)transaction aborts.
#![deny(unsafe_code)]

pub mod fair;
pub mod quota;
pub mod rate;
pub mod registry;
pub mod tenant_id;
