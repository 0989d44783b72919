//! Multi-tenancy: the tenant context layer, the shared registry, lifecycle support and quotas.

pub mod affinity;
pub mod audit;
pub mod catalog;
pub mod context;
pub mod functions;
pub mod integrity;
pub mod metrics;
pub mod migrate;
pub mod named;
pub mod quota;
pub mod scheduler;
pub mod shmem;
pub mod statement;
pub mod tables;
pub mod utility;
pub mod worker;

/// Installs shared memory, hooks and transaction callbacks; from `_PG_init` while preloading.
pub fn init() {
    shmem::init(&[
        audit::REGION,
        worker::REGION,
        scheduler::REGION,
        metrics::REGION,
        integrity::REGION,
    ]);
    context::install_hooks();
    utility::install_hook();
    audit::install_log_hook();
    functions::register_callbacks();
    shmem::on_fresh_slot(metrics::reset);
    shmem::on_fresh_slot(integrity::reset);
    worker::register();
    metrics::register();
}
