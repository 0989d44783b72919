//! Where a tenant's graph lives: the one question every `ruhnsw` callback asks before it
//! touches a tenant's nodes.
//!
//! An insert asks [`tenant`] with [`Want::Insert`] (the tenant gets a directory entry if it
//! has none), a scan asks [`tenant`] with [`Want::Search`] for the tenant it is confined to or
//! [`every_tenant`] under `'*'`, and VACUUM walks [`graphs`]. Each answer is a [`Place`]: the
//! relation whose pages hold the graph and the tenant's ordinal there.
//!
//! A tenant's graph lives on the index's own pages, unless the tenant has a dedicated index
//! ([`dedicated`]): then its searches go to that index, and an insert into the shared index
//! gets no place (PostgreSQL inserts the row into the dedicated index itself). The shared
//! graph of such a tenant is then marked stale: should the dedicated index disappear, a
//! search refuses rather than answer from a graph that misses rows.
//!
//! An insert's place also says whether the node is packed onto the index's shared page with
//! other shared tenants' nodes or goes on a page of the tenant's own (levels `partition`
//! and `dedicated`, and an index without a tenant column).

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_core::hnsw::page::DirEntry;
use ruvector_core::hnsw::{Hnsw, Params, TenantOrd};

use super::store::PageStore;
use super::{build, dedicated, directory, options, page};
use crate::errors;

/// Where one tenant's graph lives.
pub struct Place {
    /// The relation whose pages hold the graph.
    pub rel: pg_sys::Relation,
    /// The tenant's ordinal in that relation's directory.
    pub tenant: TenantOrd,
    /// The tenant's directory entry, when the lookup read it (a search reads it once).
    pub entry: Option<DirEntry>,
    /// `rel` is a dedicated index this lookup opened: [`Place::close`] closes it.
    opened: bool,
    /// New nodes of the tenant are packed with other shared tenants' (an insert's answer).
    pub packed: bool,
}

impl Place {
    /// A place on the pages of `rel`, the index asked.
    fn own(
        rel: pg_sys::Relation,
        tenant: TenantOrd,
        entry: Option<DirEntry>,
        packed: bool,
    ) -> Place {
        Place {
            rel,
            tenant,
            entry,
            opened: false,
            packed,
        }
    }

    /// Whether the graph is in a dedicated index rather than the index asked.
    pub fn dedicated(&self) -> bool {
        self.opened
    }

    /// Closes the dedicated index the lookup opened (its lock is kept to the end of the
    /// transaction). Not on an error path: the transaction's abort releases it.
    pub fn close(&self) {
        if self.opened {
            // SAFETY: opened by `open_dedicated` and closed once, by the owner of the place.
            unsafe { pg_sys::index_close(self.rel, pg_sys::NoLock as i32) };
        }
    }
}

/// What the caller is about to do with the graph.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Read it: a tenant without an entry has no graph (`None`).
    Search,
    /// Add a node: a tenant without an entry gets one; `None` when the tenant's rows go to
    /// its dedicated index instead.
    Insert,
}

/// Where the graph of the tenant with `key` in `index` lives (the empty key for an index
/// without a tenant column).
pub fn tenant(index: pg_sys::Relation, key: &[u8], want: Want) -> Option<Place> {
    match want {
        Want::Search => {
            if let Some(place) = in_dedicated_of(index, key) {
                return place;
            }
            let (tenant, entry) = directory::find_entry(index, key)?;
            if entry.stale {
                // The switch to a dedicated index may have committed after this statement
                // took its locks (and last read the catalogs): read them again first.
                // SAFETY: processing invalidations is allowed wherever a lock could be taken.
                unsafe { pg_sys::AcceptInvalidationMessages() };
                if let Some(place) = in_dedicated_of(index, key) {
                    return place;
                }
                stale(index, key);
            }
            Some(Place::own(index, tenant, Some(entry), false))
        }
        Want::Insert => {
            let tenant = directory::find_or_add(index, key);
            if dedicated::of(index).keeps_rows(key) {
                if !directory::get(index, tenant).stale {
                    directory::update(index, tenant, |e| e.stale = true);
                }
                return None;
            }
            Some(Place::own(index, tenant, None, super::packed_tenant(key)))
        }
    }
}

/// The place of tenant `key` when a dedicated index of `index` answers for it: `Some(None)`
/// when that index holds no graph of the tenant yet.
fn in_dedicated_of(index: pg_sys::Relation, key: &[u8]) -> Option<Option<Place>> {
    let rel = open_dedicated(dedicated::of(index).searched(key)?)?;
    Some(in_dedicated(rel, key))
}

/// The place of tenant `key` in its dedicated index `rel` (opened); closes `rel` again
/// when the tenant has no graph there yet.
fn in_dedicated(rel: pg_sys::Relation, key: &[u8]) -> Option<Place> {
    let Some((tenant, entry)) = directory::find_entry(rel, key) else {
        // SAFETY: opened by open_dedicated and not handed out.
        unsafe { pg_sys::index_close(rel, pg_sys::NoLock as i32) };
        return None;
    };
    Some(Place {
        rel,
        tenant,
        entry: Some(entry),
        opened: true,
        packed: false,
    })
}

/// Opens dedicated index `oid` for reading; `None` if it was dropped meanwhile.
fn open_dedicated(oid: pg_sys::Oid) -> Option<pg_sys::Relation> {
    // SAFETY: try_relation_open returns NULL for a relation that no longer exists; the lock
    // keeps it until the end of the transaction.
    unsafe {
        let rel = pg_sys::try_relation_open(oid, pg_sys::AccessShareLock as i32);
        if rel.is_null() {
            return None;
        }
        if (*(*rel).rd_rel).relkind != pg_sys::RELKIND_INDEX as std::ffi::c_char {
            pg_sys::relation_close(rel, pg_sys::AccessShareLock as i32);
            return None;
        }
        Some(rel)
    }
}

/// Refuses a search of a stale tenant graph (its dedicated index is gone).
fn stale(index: pg_sys::Relation, key: &[u8]) -> ! {
    let name = page::rel_name(index);
    errors::index_error(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "tenant \"{}\" has no complete graph in ruhnsw index \"{name}\": its dedicated index was dropped",
            String::from_utf8_lossy(key)
        ),
        Some(&format!(
            "REINDEX INDEX CONCURRENTLY \"{name}\" takes the tenant's rows back; \
             ruvector_tenant_migrate() moves a tenant between levels without this step."
        )),
    )
}

/// Every tenant graph of `index` (a search under `'*'`): its own tenants' and those of its
/// tenants' dedicated indexes.
pub fn every_tenant(index: pg_sys::Relation) -> Vec<Place> {
    let own = dedicated::of(index);
    let mut places = Vec::new();
    directory::for_each(index, |tenant, entry| {
        if !entry.stale && own.searched(&entry.key).is_none() {
            places.push(Place::own(index, tenant, Some(entry), false));
        }
        true
    });
    for (key, oid) in own.all() {
        if let Some(place) = open_dedicated(oid).and_then(|rel| in_dedicated(rel, key)) {
            places.push(place);
        }
    }
    places
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
    let layout = meta.layout();
    let params = build::graph_params(layout, meta.ef_construction as usize, meta.metric);
    let params = Params {
        exact: options::exact(rel),
        widen_above: crate::gucs::widen_above(),
        ..params
    };
    Some(Hnsw::new(PageStore::new(rel, layout), params))
}
