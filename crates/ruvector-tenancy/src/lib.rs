//! Tenant rules of RuVector, independent of PostgreSQL.
//!
//! - [`admission`]: execution slots and the fair queue of statements waiting for one.
//! - [`integrity`]: the integrity state machine (hysteresis) and the gate by risk class.
//! - [`metrics`]: per-tenant latency histograms and recent windows in shared memory;
//!   [`exposition`]: the Prometheus scrape built from them.
//! - [`atomic_text`]: text in shared-memory records, as atomic words.
//! - [`audit_queue`]: refused attempts on their way to the audit log, across processes.
//! - [`tenant_id`]: what a tenant id may look like, and the admin wildcard.
//! - [`decide`]: the context layer's decisions (who may use a context, which commands need
//!   `'*'`, which tenants a scan searches) as pure functions.
//! - [`registry`]: the fixed-capacity tenant table that lives in shared memory (the
//!   extension places it there and guards it with a lock; here it is plain memory).
//! - [`quota`]: reservations against per-tenant limits that are exact under concurrency and
//!   undone by (sub)transaction aborts.
//! - [`statement`]: the tenant a statement was validated for, and the stack of running
//!   statements that carries it.
#![deny(unsafe_code)]

pub mod admission;
pub mod atomic_text;
pub mod audit_queue;
pub mod decide;
pub mod exposition;
pub mod fair;
pub mod index_ddl;
pub mod integrity;
pub mod metrics;
pub mod quota;
pub mod rate;
pub mod registry;
pub mod statement;
pub mod tenant_id;
