//! Multi-tenancy: the tenant context layer, the shared registry, lifecycle support and quotas.

pub mod catalog;
pub mod context;
pub mod functions;
pub mod quota;
pub mod shmem;

/// Installs shared memory, hooks and transaction callbacks; from `_PG_init` while preloading.
pub fn init() {
    shmem::init();
    context::install_hooks();
    functions::register_callbacks();
}
