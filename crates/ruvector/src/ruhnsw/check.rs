//! `ruvector_index_check(regclass)`: verifies a `ruhnsw` index's structure, like amcheck.
//!
//! Reads every page under share locks (concurrent writes may go on) and returns one row per
//! check: `(check, ok, detail)`. Structural checks (`metapage`, `pages`, `nodes`, `links`,
//! `entry point`, `erasure`) fail only on corruption. `reachability` reports live nodes that
//! no search can reach from the entry point; HNSW's neighbour pruning can leave a few such
//! nodes, so it fails only when fewer than 99.9% are reachable (a graph that hides rows from
//! searches, not a damaged one).

use std::collections::HashMap;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_core::hnsw::inspect::{Node, Problem, Snapshot};
use ruvector_core::hnsw::page::{self as layout, node_id, NodeRef, KIND_NODES};
use ruvector_core::hnsw::{NodeId, TenantOrd};

use super::directory;
use super::page::{self, Buf, Lock};
use crate::{errors, fmgr};

/// Problems beyond this many per check are counted, not listed.
const LISTED: usize = 10;

#[derive(Default)]
struct Findings {
    rows: Vec<(&'static str, bool, String)>,
}

impl Findings {
    fn add_problems(&mut self, check: &'static str, problems: &[Problem], ok_detail: String) {
        let words: Vec<String> = problems.iter().map(|p| p.describe(fmt_id)).collect();
        self.add(check, &words, ok_detail);
    }

    fn add(&mut self, check: &'static str, problems: &[String], ok_detail: String) {
        if problems.is_empty() {
            self.rows.push((check, true, ok_detail));
        } else {
            let mut d = problems
                .iter()
                .take(LISTED)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            if problems.len() > LISTED {
                d.push_str(&format!("; and {} more", problems.len() - LISTED));
            }
            self.rows.push((check, false, d));
        }
    }
}

fn check(index: pg_sys::Relation) -> Findings {
    let mut f = Findings::default();
    let parsed = page::parse_meta(Buf::read(index, 0, Lock::Share).page());
    let meta = match parsed {
        Ok(m) => m,
        Err(e) => {
            f.add("metapage", &[e], String::new());
            return f;
        }
    };
    let nblocks = page::nblocks(index);
    let mut meta_problems = Vec::new();
    if meta.directory >= nblocks || (meta.directory == 0) != (meta.tenants == 0) {
        meta_problems.push(format!(
            "directory block {} with {} tenants ({nblocks} blocks)",
            meta.directory, meta.tenants
        ));
    }
    f.add(
        "metapage",
        &meta_problems,
        format!(
            "format {}, {} dimensions ({} precision), m {}, ef_construction {}, {:?}",
            meta.version(),
            meta.dims,
            if meta.half { "half" } else { "full" },
            meta.m,
            meta.ef_construction,
            meta.metric
        ),
    );
    let node_layout = meta.layout();

    // Pages and node tuples.
    let mut graph = Snapshot::default();
    let (mut page_problems, mut node_problems, mut erasure_problems) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut empty_pages = 0;
    // Each packed node's link to its tenant's previous packed node.
    let mut prevs: HashMap<NodeId, NodeId> = HashMap::new();
    for block in 1..nblocks {
        page::delay_point();
        let buf = Buf::read(index, block, Lock::Share);
        let pg = buf.page();
        match page::page_kind(pg) {
            Some(KIND_NODES) => {}
            Some(layout::KIND_DIRECTORY) => continue, // checked below, through the chain
            // SAFETY: a share-locked page.
            None if unsafe { pg_sys::PageIsNew(pg) } => {
                empty_pages += 1; // extended, then the writer failed before initializing it
                continue;
            }
            other => {
                page_problems.push(format!("block {block}: not a node page (kind {other:?})"));
                continue;
            }
        }
        // SAFETY: a share-locked page.
        let max = unsafe { page::max_offset(pg) };
        for offset in 1..=max {
            // SAFETY: the page stays share-locked while the item is read.
            let Some(bytes) = (unsafe { page::item(pg, offset) }) else {
                node_problems.push(format!("({block},{offset}): unused line pointer"));
                continue;
            };
            let node = match NodeRef::new(bytes, node_layout) {
                Ok(n) => n,
                Err(e) => {
                    node_problems.push(format!("({block},{offset}): {e}"));
                    continue;
                }
            };
            if node.deleted() && node.vector_bytes().iter().any(|&b| b != 0) {
                erasure_problems.push(format!(
                    "({block},{offset}): deleted node still holds vector bytes"
                ));
            }
            if let Some(p) = node.prev() {
                prevs.insert(node_id(block, offset), p);
            }
            graph.add(
                node_id(block, offset),
                Node {
                    tenant: node.tenant(),
                    level: node.level(),
                    deleted: node.deleted(),
                    links: (0..=node.level())
                        .map(|l| node.neighbors(l).collect())
                        .collect(),
                },
            );
        }
    }
    f.add(
        "pages",
        &page_problems,
        format!("{nblocks} blocks, {empty_pages} uninitialized"),
    );
    let (live, deleted) = (graph.live(), graph.deleted());
    f.add(
        "nodes",
        &node_problems,
        format!("{live} live, {deleted} deleted"),
    );

    let links = graph.check_links();
    f.add_problems(
        "links",
        &links.problems,
        format!(
            "{} links, {} to deleted nodes (repaired by the next VACUUM)",
            links.links, links.to_deleted
        ),
    );
    erasure_problems.extend(links.erasure.iter().map(|p| p.describe(fmt_id)));

    // The directory: every tenant's entry point, page chain and node count.
    let mut dir_problems = Vec::new();
    let mut entries = Vec::new();
    if !meta_problems.is_empty() {
        dir_problems.push("not read: the metapage is wrong".to_string());
    } else {
        directory::for_each(index, |ordinal, e| {
            entries.push((ordinal, e));
            true
        });
    }
    if entries.len() != meta.tenants as usize && meta_problems.is_empty() {
        dir_problems.push(format!(
            "{} entries, the metapage says {}",
            entries.len(),
            meta.tenants
        ));
    }
    let mut chained: HashMap<u32, TenantOrd> = HashMap::new();
    let mut packed: HashMap<NodeId, TenantOrd> = HashMap::new();
    for (ordinal, e) in &entries {
        graph.set_entry(*ordinal, e.entry);
        let who = format!("tenant {ordinal} ({:?})", String::from_utf8_lossy(&e.key));
        let mut block = e.first_block;
        let mut last = 0;
        while block != 0 {
            if block >= nblocks || chained.insert(block, *ordinal).is_some() {
                dir_problems.push(format!(
                    "{who}: chain reaches block {block} twice or past the end"
                ));
                break;
            }
            last = block;
            block = page::next_block(Buf::read(index, block, Lock::Share).page());
        }
        if last != e.last_block {
            dir_problems.push(format!(
                "{who}: chain ends at {last}, the entry says {}",
                e.last_block
            ));
        }
        let mut next = e.packed_head;
        while let Some(id) = next {
            let owner = graph.node(id).map(|n| n.tenant);
            if owner != Some(*ordinal) || packed.insert(id, *ordinal).is_some() {
                dir_problems.push(format!(
                    "{who}: packed list reaches {} ({})",
                    fmt_id(id),
                    match owner {
                        None => "no node".to_string(),
                        Some(t) if t != *ordinal => format!("a node of tenant {t}"),
                        Some(_) => "twice".to_string(),
                    }
                ));
                break;
            }
            next = prevs.get(&id).copied();
        }
        let (count, _) = graph.tenant_live(*ordinal);
        if count as u64 != e.nodes {
            dir_problems.push(format!(
                "{who}: {count} live nodes, the entry says {}",
                e.nodes
            ));
        }
    }
    for (id, n) in graph.nodes() {
        let (block, _) = layout::node_position(id);
        match (chained.get(&block), packed.get(&id)) {
            (Some(&t), None) if t == n.tenant => {}
            (Some(&t), _) if t != n.tenant => dir_problems.push(format!(
                "{}: on a page of tenant {t}, not {}",
                fmt_id(id),
                n.tenant
            )),
            (None, Some(&t)) if t == n.tenant => {}
            (Some(_), Some(_)) => dir_problems.push(format!(
                "{}: packed on a page of its tenant's own",
                fmt_id(id)
            )),
            _ => dir_problems.push(format!(
                "{}: on no tenant's chain of pages or list of packed nodes",
                fmt_id(id)
            )),
        }
        if n.tenant as usize >= entries.len() && meta_problems.is_empty() {
            dir_problems.push(format!("{}: tenant {} has no entry", fmt_id(id), n.tenant));
        }
    }
    f.add(
        "directory",
        &dir_problems,
        format!(
            "{} tenants, {} node pages in their chains, {} packed nodes",
            entries.len(),
            chained.len(),
            packed.len()
        ),
    );
    f.add_problems(
        "entry point",
        &graph.check_entries(),
        format!(
            "{} of {} tenants have one",
            entries.iter().filter(|(_, e)| e.entry.is_some()).count(),
            entries.len()
        ),
    );
    f.add(
        "erasure",
        &erasure_problems,
        format!("{deleted} deleted nodes hold no vector bytes or links"),
    );

    // What a search can find: layer 0, within each tenant's graph from its entry point.
    let reached = graph.reachable().len().min(live);
    f.rows.push((
        "reachability",
        reached * 1000 >= live * 999,
        format!("{reached} of {live} live nodes reachable from their tenant's entry point"),
    ));
    f
}

fn fmt_id(id: NodeId) -> String {
    let (b, o) = layout::node_position(id);
    format!("({b},{o})")
}

pg_fn! {
    /// `ruvector_index_check(index regclass)`: one row per check of the index's structure.
    fn index_check(fcinfo) {
        // SAFETY: argument 0 is a regclass (an oid by value).
        let oid = pg_sys::Oid::from(unsafe { fmgr::arg(fcinfo, 0) }.value() as u32);
        // SAFETY: index_open raises an error unless the relation is an index; the lock is
        // held until the end of the transaction, the relation closed below.
        let index = unsafe { pg_sys::index_open(oid, pg_sys::AccessShareLock as pg_sys::LOCKMODE) };
        // SAFETY: an open index's pg_class row names its access method; get_am_name
        // returns a palloc'd name or NULL.
        let ours = unsafe {
            let name = pg_sys::get_am_name((*(*index).rd_rel).relam);
            !name.is_null() && std::ffi::CStr::from_ptr(name) == c"ruhnsw"
        };
        if !ours {
            errors::index_error(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!("\"{}\" is not a ruhnsw index", page::rel_name(index)),
                None,
            );
        }
        let findings = check(index);
        // SAFETY: close what we opened, keeping the lock; then the materialize-mode SRF
        // protocol with the declared (check text, ok boolean, detail text) columns.
        unsafe {
            pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE);
            pg_sys::InitMaterializedSRF(fcinfo, 0);
            let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
            for (name, ok, detail) in findings.rows {
                let mut values = [fmgr::text_datum(name), pg_sys::Datum::from(ok), fmgr::text_datum(&detail)];
                let mut nulls = [false; 3];
                pg_sys::tuplestore_putvalues((*rsinfo).setResult, (*rsinfo).setDesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            }
        }
        pg_sys::Datum::from(0)
    }
}
