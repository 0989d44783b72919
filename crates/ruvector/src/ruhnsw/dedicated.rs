//! Dedicated indexes: a tenant's own `ruhnsw` index beside a tenant-keyed ("shared") one.
//!
//! A dedicated index of tenant T for a shared index S is a partial `ruhnsw` index on the
//! same table, keyed like S (the same vector column and operator class, then the tenant
//! column), whose predicate is `<tenant column> = 'T'`: the specification's
//! `CREATE INDEX ... USING ruhnsw (vec vector_cosine_ops) WHERE tenant_id = 'acme-corp'`,
//! or what `ruvector_tenant_isolate` creates. PostgreSQL maintains it like any index (its
//! inserts, VACUUM, `pg_dump`); S's callbacks route T's searches to it (route.rs)
//! and leave T's new rows out of S's own graph, from the moment the index is valid.
//!
//! Which tenants have one is read from the catalogs (`pg_index`, `pg_class`), never from
//! S's pages, so a restored dump or a REINDEX finds them again. A dedicated index with the
//! reloption `retiring = true` is being given up: S takes its tenant's rows again and its
//! searches stay on the dedicated index until it is dropped.
//!
//! Each backend remembers what it found per shared index, until a relcache invalidation of
//! the table or of any of its indexes (CREATE INDEX, DROP INDEX, a change of validity or
//! reloptions all send one).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use pgrx::pg_sys;

use crate::fmgr::{list_oids, list_ptrs};

/// The dedicated indexes of one shared index.
#[derive(Default)]
pub struct Dedicated {
    /// Tenant key → its dedicated index, and whether that one is retiring.
    by_key: HashMap<Vec<u8>, (pg_sys::Oid, bool)>,
    /// The table and every index of it: an invalidation of any of them drops this.
    members: Vec<pg_sys::Oid>,
}

impl Dedicated {
    /// The dedicated index that answers tenant `key`'s searches (a retiring one too: it
    /// stays complete until it is dropped).
    pub fn searched(&self, key: &[u8]) -> Option<pg_sys::Oid> {
        self.by_key.get(key).map(|&(oid, _)| oid)
    }

    /// Whether the shared index leaves tenant `key`'s rows to a dedicated index (one that
    /// is not retiring).
    pub fn keeps_rows(&self, key: &[u8]) -> bool {
        self.by_key.get(key).is_some_and(|&(_, retiring)| !retiring)
    }

    /// Every tenant with a dedicated index, and that index.
    pub fn all(&self) -> impl Iterator<Item = (&[u8], pg_sys::Oid)> {
        self.by_key.iter().map(|(k, &(oid, _))| (k.as_slice(), oid))
    }
}

thread_local! {
    static KNOWN: RefCell<HashMap<pg_sys::Oid, Rc<Dedicated>>> = RefCell::default();
    static REGISTERED: Cell<bool> = const { Cell::new(false) };
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn invalidate(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    KNOWN.with(|k| {
        let mut k = k.borrow_mut();
        if relid == pg_sys::InvalidOid {
            k.clear();
        } else {
            k.retain(|shared, d| *shared != relid && !d.members.contains(&relid));
        }
    });
}

/// Whether `index` is a shared index: keyed by tenant, without a predicate. Only a shared
/// index routes; a dedicated index holds its own tenant's graph.
pub fn is_shared(index: pg_sys::Relation) -> bool {
    // SAFETY: an open index relation has its pg_index tuple in rd_indextuple.
    super::tenant_keyed(index)
        && unsafe {
            pg_sys::heap_attisnull(
                (*index).rd_indextuple,
                pg_sys::Anum_pg_index_indpred as i32,
                std::ptr::null_mut(),
            )
        }
}

/// The dedicated indexes of shared index `index` (none for any other index).
pub fn of(index: pg_sys::Relation) -> Rc<Dedicated> {
    if !is_shared(index) {
        return Rc::default();
    }
    if !REGISTERED.get() {
        // SAFETY: registers a callback that lives as long as the backend, once.
        unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(invalidate), 0.into()) };
        REGISTERED.set(true);
    }
    // SAFETY: an open relation.
    let oid = unsafe { (*index).rd_id };
    if let Some(d) = KNOWN.with(|k| k.borrow().get(&oid).cloned()) {
        return d;
    }
    let d = Rc::new(find(oid));
    KNOWN.with(|k| k.borrow_mut().insert(oid, d.clone()));
    d
}

/// The indexes of table `heap` (none if it does not exist). The table is locked by whoever
/// uses one of its indexes (a scan, an insert, a build) or is about to be by the command
/// that asks (DROP INDEX, CREATE INDEX).
fn indexes_of(heap: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    // SAFETY: the relcache entry is only read for its index list and closed again.
    unsafe {
        let rel = pg_sys::RelationIdGetRelation(heap);
        if rel.is_null() {
            return Vec::new();
        }
        let list = list_oids(pg_sys::RelationGetIndexList(rel));
        pg_sys::RelationClose(rel);
        list
    }
}

/// What the catalogs say about one index.
struct IndexRow {
    heap: pg_sys::Oid,
    am: pg_sys::Oid,
    keys: Vec<i16>,
    nkeys: i16,
    class0: pg_sys::Oid,
    usable: bool,
    predicate: Option<String>,
    retiring: bool,
}

/// The catalog rows of index `oid`, if it exists.
fn index_row(oid: pg_sys::Oid) -> Option<IndexRow> {
    // SAFETY: syscache lookups by OID; the tuples are read while held and released; the
    // attributes read are of the catalogs' declared types.
    unsafe {
        let tup = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::INDEXRELID as i32,
            pg_sys::Datum::from(oid),
        );
        if tup.is_null() {
            return None;
        }
        let form = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_index>(tup);
        let keys = (*form)
            .indkey
            .values
            .as_slice((*form).indnatts as usize)
            .to_vec();
        let mut isnull = false;
        let classes = pg_sys::SysCacheGetAttr(
            pg_sys::SysCacheIdentifier::INDEXRELID as i32,
            tup,
            pg_sys::Anum_pg_index_indclass as pg_sys::AttrNumber,
            &mut isnull,
        );
        let class0 = if isnull {
            pg_sys::InvalidOid
        } else {
            let v = classes.cast_mut_ptr::<pg_sys::oidvector>();
            (*v).values
                .as_slice((*v).dim1 as usize)
                .first()
                .copied()
                .unwrap_or_default()
        };
        let pred = pg_sys::SysCacheGetAttr(
            pg_sys::SysCacheIdentifier::INDEXRELID as i32,
            tup,
            pg_sys::Anum_pg_index_indpred as pg_sys::AttrNumber,
            &mut isnull,
        );
        let predicate = (!isnull).then(|| crate::fmgr::text_to_string(pred));
        let row = IndexRow {
            heap: (*form).indrelid,
            am: pg_sys::InvalidOid,
            keys,
            nkeys: (*form).indnkeyatts,
            class0,
            usable: (*form).indisvalid && (*form).indisready && (*form).indislive,
            predicate,
            retiring: false,
        };
        pg_sys::ReleaseSysCache(tup);
        let tup = pg_sys::SearchSysCache1(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            pg_sys::Datum::from(oid),
        );
        if tup.is_null() {
            return None;
        }
        let class = pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_class>(tup);
        let am = (*class).relam;
        let options = pg_sys::SysCacheGetAttr(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            tup,
            pg_sys::Anum_pg_class_reloptions as pg_sys::AttrNumber,
            &mut isnull,
        );
        let retiring = !isnull
            && list_ptrs(pg_sys::untransformRelOptions(options))
                .into_iter()
                .any(|d| {
                    let def = d as *mut pg_sys::DefElem;
                    std::ffi::CStr::from_ptr((*def).defname).to_bytes() == b"retiring"
                        && pg_sys::defGetBoolean(def)
                });
        pg_sys::ReleaseSysCache(tup);
        Some(IndexRow {
            am,
            retiring,
            ..row
        })
    }
}

/// The dedicated indexes of shared `ruhnsw` index `shared`, from the catalogs.
fn find(shared: pg_sys::Oid) -> Dedicated {
    let Some(s) = index_row(shared) else {
        return Dedicated::default();
    };
    let mut d = Dedicated {
        members: vec![s.heap],
        ..Dedicated::default()
    };
    for oid in indexes_of(s.heap) {
        d.members.push(oid);
        if oid == shared {
            continue;
        }
        let Some(row) = index_row(oid) else { continue };
        if row.am != s.am
            || row.nkeys != 2
            || row.keys.get(..2) != s.keys.get(..2)
            || row.class0 != s.class0
            || !row.usable
        {
            continue;
        }
        let Some(key) = row
            .predicate
            .as_deref()
            .and_then(|p| tenant_of_predicate(p, s.keys[1]))
        else {
            continue;
        };
        // Two dedicated indexes for one tenant: the first one found answers (a retiring one
        // only when it is the only one).
        match d.by_key.get(&key) {
            Some(&(_, false)) => {}
            _ => {
                d.by_key.insert(key, (oid, row.retiring));
            }
        }
    }
    d
}

/// The tenant a partial index's predicate names: `<tenant column> = '<tenant>'` and
/// nothing else.
fn tenant_of_predicate(predicate: &str, tenant_column: i16) -> Option<Vec<u8>> {
    let text = std::ffi::CString::new(predicate).ok()?;
    // SAFETY: pg_index.indpred is the nodeToString form of one expression; the nodes read
    // are checked for their tag before their fields are.
    unsafe {
        let node = pg_sys::stringToNode(text.as_ptr()) as *mut pg_sys::Node;
        if node.is_null() || (*node).type_ != pg_sys::NodeTag::T_OpExpr {
            return None;
        }
        let op = node as *mut pg_sys::OpExpr;
        if u32::from((*op).opno) != pg_sys::TextEqualOperator {
            return None;
        }
        let args = list_ptrs((*op).args);
        let [a, b] = args.as_slice() else {
            return None;
        };
        let strip = |mut n: *mut pg_sys::Node| {
            while (*n).type_ == pg_sys::NodeTag::T_RelabelType {
                n = (*(n as *mut pg_sys::RelabelType)).arg as *mut pg_sys::Node;
            }
            n
        };
        let (a, b) = (
            strip(*a as *mut pg_sys::Node),
            strip(*b as *mut pg_sys::Node),
        );
        let (var, value) = match ((*a).type_, (*b).type_) {
            (pg_sys::NodeTag::T_Var, pg_sys::NodeTag::T_Const) => (a, b),
            (pg_sys::NodeTag::T_Const, pg_sys::NodeTag::T_Var) => (b, a),
            _ => return None,
        };
        let var = var as *mut pg_sys::Var;
        let value = value as *mut pg_sys::Const;
        if (*var).varattno != tenant_column || (*value).constisnull {
            return None;
        }
        let s: String = pgrx::FromDatum::from_datum((*value).constvalue, false)?;
        Some(s.into_bytes())
    }
}

/// The shared index and tenant that index `oid` is the dedicated index of, if it is one
/// that answers for its tenant (for the DROP INDEX guard).
pub fn serving(oid: pg_sys::Oid) -> Option<(pg_sys::Oid, String)> {
    let row = index_row(oid)?;
    if row.predicate.is_none() || row.retiring || !row.usable {
        return None;
    }
    shared_indexes_of(row.heap).into_iter().find_map(|shared| {
        let d = find(shared);
        let tenant = d
            .all()
            .find(|&(k, o)| o == oid && d.keeps_rows(k))
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned());
        tenant.map(|t| (shared, t))
    })
}

/// The tenants that have a dedicated index (one not retiring) on table `heap`.
pub fn tenants_of_table(heap: pg_sys::Oid) -> Vec<String> {
    let mut tenants: Vec<String> = shared_indexes_of(heap)
        .into_iter()
        .flat_map(|shared| {
            let d = find(shared);
            d.all()
                .filter(|&(k, _)| d.keeps_rows(k))
                .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    tenants.sort();
    tenants.dedup();
    tenants
}

/// The shared `ruhnsw` indexes of table `heap`: keyed by tenant, without a predicate.
fn shared_indexes_of(heap: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    indexes_of(heap)
        .into_iter()
        .filter(|&oid| {
            index_row(oid)
                .is_some_and(|r| r.am == ruhnsw_am() && r.predicate.is_none() && r.nkeys == 2)
        })
        .collect()
}

/// The OID of the `ruhnsw` access method.
fn ruhnsw_am() -> pg_sys::Oid {
    // SAFETY: a syscache lookup by name; missing_ok.
    unsafe { pg_sys::get_am_oid(c"ruhnsw".as_ptr(), true) }
}
