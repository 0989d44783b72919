//! Where a tenant's graph lives: the one question every `ruhnsw` callback asks before it
//! touches a tenant's nodes.
//!
//! An insert asks [`tenant`] with [`Want::Insert`] (the tenant gets a directory entry if it
//! has none), a scan asks [`tenant`] with [`Want::Search`] for the tenant it is confined to or
//! [`every_tenant`] under `'*'`, and VACUUM walks [`graphs`]. Each answer is a [`Place`]: the
//! relation whose pages hold the graph and the tenant's ordinal there. Today every tenant's
//! graph lives on the index's own pages, so the relation is always the index itself; this
//! module is where another answer (a dedicated index of its own for a tenant) is given, and
//! no callback has to change for it.

use pgrx::pg_sys;
use ruvector_core::hnsw::page::DirEntry;
use ruvector_core::hnsw::{Hnsw, Params, TenantOrd};

use super::store::PageStore;
use super::{build, directory, options, page};

/// Where one tenant's graph lives.
pub struct Place {
    /// The relation whose pages hold the graph.
    pub rel: pg_sys::Relation,
    /// The tenant's ordinal in that relation's directory.
    pub tenant: TenantOrd,
    /// The tenant's directory entry, when the lookup read it (a search reads it once).
    pub entry: Option<DirEntry>,
}

/// What the caller is about to do with the graph.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Read it: a tenant without an entry has no graph (`None`).
    Search,
    /// Add a node: a tenant without an entry gets one.
    Insert,
}

/// Where the graph of the tenant with `key` in `index` lives (the empty key for an index
/// without a tenant column).
pub fn tenant(index: pg_sys::Relation, key: &[u8], want: Want) -> Option<Place> {
    match want {
        Want::Search => directory::find_entry(index, key).map(|(tenant, e)| Place {
            rel: index,
            tenant,
            entry: Some(e),
        }),
        Want::Insert => Some(Place {
            rel: index,
            tenant: directory::find_or_add(index, key),
            entry: None,
        }),
    }
}

/// Every tenant graph of `index` (a search under `'*'`).
pub fn every_tenant(index: pg_sys::Relation) -> Vec<Place> {
    (0..page::read_meta(index).tenants)
        .map(|tenant| Place {
            rel: index,
            tenant,
            entry: None,
        })
        .collect()
}

/// The relations that hold graphs of `index` (VACUUM visits each).
pub fn graphs(index: pg_sys::Relation) -> Vec<pg_sys::Relation> {
    vec![index]
}

/// The graph stored on `rel`'s pages; `None` while it has no dimensions yet (an index
/// created on an empty table without `vector(n)`).
pub fn open(rel: pg_sys::Relation) -> Option<Hnsw<PageStore>> {
    let meta = page::read_meta(rel);
    if meta.dims == 0 {
        return None;
    }
    // From the metapage, not the reloptions: no catalog lookups per scan or insert, and the
    // layout stays the one the pages were written with even after ALTER INDEX ... SET (m).
    let (params, layout) = build::graph_params(
        meta.dims as usize,
        meta.m as usize,
        meta.ef_construction as usize,
        meta.metric,
    );
    let params = Params {
        exact_threshold: options::exact_threshold(rel),
        ..params
    };
    Some(Hnsw::new(PageStore::new(rel, layout), params))
}
