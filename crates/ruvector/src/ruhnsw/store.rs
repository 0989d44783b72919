//! [`GraphStore`] on the pages of a `ruhnsw` index.
//!
//! Locking protocol (see docs/ruhnsw-design.md): a reader share-locks one node page at a
//! time; a writer exclusive-locks one node page at a time and changes it in one WAL record;
//! the metapage is share-locked to read the entry point and exclusive-locked only to change
//! it or the insert page. No code path waits for a second page lock while holding one,
//! except adding a node (insert page, then a new page after releasing it), so there are no
//! lock-order cycles.

use std::collections::HashMap;

use pgrx::pg_sys;
use ruvector_core::hnsw::page::{
    self as layout, node_id, node_position, DirEntry, NodeLayout, NodeMut, NodeRef,
};
use ruvector_core::hnsw::rounding::Rounding;
use ruvector_core::hnsw::{GraphStore, NodeId, TenantOrd};

use super::directory;
use super::page::{self, Buf, Lock, WalRecord};
use crate::errors;

/// How much of each node a search prefetches before it reads the nodes: the header and the
/// start of the vector; the CPU's own prefetcher follows the rest of the vector once it is
/// read. Measured on 100,000 × 384 (pgbench, one session, `ef_search` 40, the same run as
/// pgvector): without prefetching 0.95x pgvector's QPS; prefetching 128 bytes, 256 or the
/// whole node (about 1.8 kB) 1.5-1.6x, the same within the machine's noise.
const PREFETCH_BYTES: usize = 256;

pub struct PageStore {
    index: pg_sys::Relation,
    layout: NodeLayout,
    /// What a scan's tenant lookups read ([`PageStore::set_scan_entries`]).
    scan_entries: HashMap<TenantOrd, ScanTenant>,
    /// Nodes added now are packed onto the shared page ([`PageStore::set_packed`]).
    packed: bool,
    /// Where half-precision vectors are decoded for a distance.
    scratch: std::cell::RefCell<Vec<f32>>,
}

/// The parts of a tenant's directory entry a scan reads once.
#[derive(Clone, Copy)]
struct ScanTenant {
    nodes: u64,
    first_block: u32,
    packed_head: Option<NodeId>,
}

impl From<&DirEntry> for ScanTenant {
    fn from(e: &DirEntry) -> ScanTenant {
        ScanTenant {
            nodes: e.nodes,
            first_block: e.first_block,
            packed_head: e.packed_head,
        }
    }
}

impl PageStore {
    pub fn new(index: pg_sys::Relation, layout: NodeLayout) -> PageStore {
        PageStore {
            index,
            layout,
            scan_entries: HashMap::new(),
            packed: false,
            scratch: Default::default(),
        }
    }

    /// Where the nodes added from now on go: packed with other shared tenants' nodes on the
    /// index's shared page (`true`), or on pages of their tenant's own.
    pub fn set_packed(&mut self, packed: bool) {
        self.packed = packed;
    }

    /// A scan's tenants' directory entries as the scan found them when it started: their
    /// node counts (exact scan or graph) and first pages are taken from here instead of
    /// reading the directory again. Entry points are always read afresh (VACUUM may move
    /// them during a long scan). Only for a store that searches and never writes.
    pub fn set_scan_entries<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (TenantOrd, &'a DirEntry)>,
    ) {
        self.scan_entries = entries.into_iter().map(|(t, e)| (t, e.into())).collect();
    }

    /// Tenant `tenant`'s node count and first page: the scan's, or read now.
    fn scan_tenant(&self, tenant: TenantOrd) -> ScanTenant {
        match self.scan_entries.get(&tenant) {
            Some(&t) => t,
            None => (&directory::get(self.index, tenant)).into(),
        }
    }

    pub fn layout(&self) -> NodeLayout {
        self.layout
    }

    fn corrupted(&self, what: String) -> ! {
        errors::index_corrupted(&page::rel_name(self.index), what)
    }

    fn bad_node(&self, block: u32, offset: u16, why: String) -> ! {
        self.corrupted(format!("node ({block},{offset}): {why}"))
    }

    /// The bytes of the node at `offset` of `page` (block `block`); a missing node is
    /// corruption (node tuples are never removed, and only existing nodes are linked to).
    ///
    /// # Safety
    /// The caller holds a lock on the page (or owns the image) while the bytes are used.
    unsafe fn node_bytes<'a>(&self, page: pg_sys::Page, block: u32, offset: u16) -> &'a mut [u8] {
        // SAFETY: guaranteed by the caller.
        unsafe { page::item(page, offset) }
            .unwrap_or_else(|| self.corrupted(format!("link to missing node ({block},{offset})")))
    }

    /// Runs `f` on node `id` under a lock of its page.
    fn with_node<R>(&self, id: NodeId, f: impl FnOnce(NodeRef<'_>) -> R) -> R {
        let (block, offset) = node_position(id);
        let buf = Buf::read(self.index, block, Lock::Share);
        // SAFETY: the page stays share-locked while the item is read.
        let bytes = unsafe { self.node_bytes(buf.page(), block, offset) };
        match NodeRef::new(bytes, self.layout) {
            Ok(node) => f(node),
            Err(e) => self.bad_node(block, offset, e),
        }
    }

    /// Changes node `id` with `f` in one WAL record; `f` returns whether it changed
    /// anything (otherwise the record is abandoned).
    fn change_node(&self, id: NodeId, f: impl FnOnce(&mut NodeMut<'_>) -> bool) -> bool {
        let (block, offset) = node_position(id);
        let buf = Buf::read(self.index, block, Lock::Exclusive);
        let mut rec = WalRecord::start(self.index);
        let image = rec.register(&buf, false);
        // SAFETY: the buffer is exclusively locked; the image is ours until finish/abort.
        let bytes = unsafe { self.node_bytes(image, block, offset) };
        let mut node =
            NodeMut::new(bytes, self.layout).unwrap_or_else(|e| self.bad_node(block, offset, e));
        let changed = f(&mut node);
        if changed {
            rec.finish();
        }
        changed
    }

    /// Deletes the nodes at `offsets` of `block` in one WAL record (VACUUM).
    pub fn delete_on_page(&self, block: u32, offsets: &[u16]) {
        let buf = Buf::read(self.index, block, Lock::Exclusive);
        let mut rec = WalRecord::start(self.index);
        let image = rec.register(&buf, false);
        for &offset in offsets {
            // SAFETY: as in change_node.
            let bytes = unsafe { self.node_bytes(image, block, offset) };
            NodeMut::new(bytes, self.layout)
                .unwrap_or_else(|e| self.bad_node(block, offset, e))
                .delete();
        }
        rec.finish();
    }

    /// Calls `f` for every node of the index, page by page, under a share lock of its page.
    pub fn for_each_node(&self, mut f: impl FnMut(NodeId, NodeRef<'_>)) {
        for block in 1..page::nblocks(self.index) {
            page::delay_point();
            self.nodes_on_page(block, &mut f);
        }
    }

    /// Calls `f` for every node on `block` (nothing for other kinds of pages); returns the
    /// page's next block in its tenant's chain (0 at the end).
    fn nodes_on_page(&self, block: u32, f: &mut impl FnMut(NodeId, NodeRef<'_>)) -> u32 {
        let buf = Buf::read(self.index, block, Lock::Share);
        let pg = buf.page();
        if !page::is_node_page(pg) {
            return 0; // the directory, or a page being added by a backend that crashed
        }
        // SAFETY: the page is share-locked.
        let max = unsafe { page::max_offset(pg) };
        for offset in 1..=max {
            // SAFETY: the page is share-locked while the item is used.
            if let Some(bytes) = unsafe { page::item(pg, offset) } {
                match NodeRef::new(bytes, self.layout) {
                    Ok(node) => f(node_id(block, offset), node),
                    Err(e) => self.bad_node(block, offset, e),
                }
            }
        }
        page::next_block(pg)
    }

    /// Calls `f` for every node of `tenant`: those on its own chain of pages, then its packed
    /// nodes, newest first.
    pub fn for_each_tenant_node(&self, tenant: TenantOrd, mut f: impl FnMut(NodeId, NodeRef<'_>)) {
        let t = self.scan_tenant(tenant);
        let mut block = t.first_block;
        while block != 0 {
            block = self.nodes_on_page(block, &mut f);
        }
        // Consecutive packed nodes are mostly on one page: its lock is kept across them.
        let mut next = t.packed_head;
        let mut buf: Option<Buf> = None;
        let mut steps: u64 = 0;
        // More steps than the index has bytes means a loop. The index's size is asked for (a
        // system call) only once a walk gets long: small tenants' walks, most of them, never
        // come near the smallest possible bound (one page).
        let mut bound: Option<u64> = None;
        while let Some(id) = next {
            steps += 1;
            if steps > layout::PAGE_SIZE as u64
                && steps
                    > *bound.get_or_insert_with(|| {
                        u64::from(page::nblocks(self.index)) * layout::PAGE_SIZE as u64
                    })
            {
                self.corrupted(format!("tenant {tenant}'s packed nodes loop"));
            }
            let (block, offset) = node_position(id);
            if buf.as_ref().is_none_or(|b| b.block() != block) {
                drop(buf.take()); // one page lock at a time
                buf = Some(Buf::read(self.index, block, Lock::Share));
            }
            let pg = buf.as_ref().expect("read above").page();
            // SAFETY: the page is share-locked while the node is used.
            let bytes = unsafe { self.node_bytes(pg, block, offset) };
            let node = NodeRef::new(bytes, self.layout)
                .unwrap_or_else(|e| self.bad_node(block, offset, e));
            if node.tenant() != tenant {
                self.bad_node(
                    block,
                    offset,
                    format!(
                        "packed node of tenant {} on tenant {tenant}'s list",
                        node.tenant()
                    ),
                );
            }
            next = node.prev();
            f(id, node);
        }
    }

    /// Adds a node tuple of `tenant` on the tenant's insert page, or on a new page linked to
    /// the end of the tenant's chain. The tenant's directory page is held exclusively
    /// meanwhile (its entry names the insert page and counts the nodes), so two inserts of
    /// one tenant never extend its chain at once; the lock order is directory page, then
    /// node pages.
    fn add_node(&self, tenant: TenantOrd, bytes: &mut [u8]) -> NodeId {
        if self.packed {
            return self.add_packed(tenant, bytes);
        }
        let (dir, slot) = directory::locate(self.index, tenant);
        let dir_buf = Buf::read(self.index, dir, Lock::Exclusive);
        let entry = directory::read_slot(self.index, dir_buf.page(), slot);
        let mut rec = WalRecord::start(self.index);
        let last = (entry.last_block != 0)
            .then(|| Buf::read(self.index, entry.last_block, Lock::Exclusive));
        if let Some(last) = &last {
            if page::is_node_page(last.page())
                && page::free_space(last.page()) >= bytes.len().next_multiple_of(8)
            {
                let image = rec.register(last, false);
                if let Some(offset) = page::add_item(image, bytes) {
                    let d = rec.register(&dir_buf, false);
                    let updated = DirEntry {
                        nodes: entry.nodes + 1,
                        ..entry
                    };
                    directory::write_slot(d, slot, &updated);
                    rec.finish();
                    return node_id(entry.last_block, offset);
                }
            }
        }
        // The tenant's first page, or a new one following its full last page.
        let new = Buf::extend(self.index);
        let block = new.block();
        let image = rec.register(&new, true);
        page::init_page(image, layout::KIND_NODES);
        let offset = page::add_item(image, bytes).expect("a node fits on an empty page");
        if let Some(last) = &last {
            let prev = rec.register(last, false);
            page::set_next_block(prev, block);
        }
        let d = rec.register(&dir_buf, false);
        let updated = DirEntry {
            first_block: if last.is_some() {
                entry.first_block
            } else {
                block
            },
            last_block: block,
            nodes: entry.nodes + 1,
            ..entry
        };
        directory::write_slot(d, slot, &updated);
        rec.finish();
        node_id(block, offset)
    }

    /// Adds a node tuple of `tenant` on the index's shared page, linked to the tenant's
    /// previous packed node, in one WAL record with the tenant's directory entry (its newest
    /// packed node and count). The shared page's number is read before the directory page
    /// is locked (an addition of a tenant holds the metapage while it waits for a directory
    /// page); when the page is full, a new one is made under the metapage lock alone, and
    /// the addition starts over.
    fn add_packed(&self, tenant: TenantOrd, bytes: &mut [u8]) -> NodeId {
        loop {
            let shared = page::read_meta(self.index).shared_page;
            if shared != 0 {
                let (dir, slot) = directory::locate(self.index, tenant);
                let dir_buf = Buf::read(self.index, dir, Lock::Exclusive);
                let entry = directory::read_slot(self.index, dir_buf.page(), slot);
                let page_buf = Buf::read(self.index, shared, Lock::Exclusive);
                if page::is_node_page(page_buf.page())
                    && page::free_space(page_buf.page()) >= bytes.len().next_multiple_of(8)
                {
                    NodeMut::new(bytes, self.layout)
                        .expect("a node made by push")
                        .set_prev(entry.packed_head);
                    let mut rec = WalRecord::start(self.index);
                    let image = rec.register(&page_buf, false);
                    if let Some(offset) = page::add_item(image, bytes) {
                        let id = node_id(shared, offset);
                        let d = rec.register(&dir_buf, false);
                        let updated = DirEntry {
                            packed_head: Some(id),
                            nodes: entry.nodes + 1,
                            ..entry
                        };
                        directory::write_slot(d, slot, &updated);
                        rec.finish();
                        return id;
                    }
                }
            }
            self.new_shared_page(shared);
        }
    }

    /// Makes a new shared page unless another backend already replaced `full`.
    fn new_shared_page(&self, full: u32) {
        let meta_buf = Buf::read(self.index, 0, Lock::Exclusive);
        let mut meta = page::meta_of(self.index, meta_buf.page());
        if meta.shared_page != full {
            return;
        }
        let new = Buf::extend(self.index);
        let mut rec = WalRecord::start(self.index);
        let image = rec.register(&new, true);
        page::init_page(image, layout::KIND_NODES);
        meta.shared_page = new.block();
        let m = rec.register(&meta_buf, false);
        page::write_meta(m, &meta);
        rec.finish();
    }
}

impl PageStore {
    /// Runs `f` on the vector of `node` unless it is deleted; a half-precision vector is
    /// decoded into the store's scratch buffer (or a new one, if `f` reads another node).
    fn live_vector<R>(&self, node: &NodeRef<'_>, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        if node.deleted() {
            return None;
        }
        Some(match self.scratch.try_borrow_mut() {
            Ok(mut scratch) => f(node.vector(&mut scratch)),
            Err(_) => f(node.vector(&mut Vec::new())),
        })
    }
}

impl GraphStore for PageStore {
    fn prefetch_all(&self, ids: &[NodeId]) {
        page::prefetch_nodes(self.index, ids, self.layout.size(0).min(PREFETCH_BYTES));
    }

    fn with_vector<R>(&self, id: NodeId, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        self.with_node(id, |node| self.live_vector(&node, f))
    }

    fn with_vector_links<R>(
        &self,
        id: NodeId,
        layer: u8,
        links: &mut Vec<NodeId>,
        f: impl FnOnce(&[f32]) -> (R, bool),
    ) -> Option<R> {
        self.with_node(id, |node| {
            let (r, want) = self.live_vector(&node, f)?;
            if want && layer <= node.level() {
                links.extend(node.neighbors(layer));
            }
            Some(r)
        })
    }

    fn tenant(&self, id: NodeId) -> TenantOrd {
        self.with_node(id, |node| node.tenant())
    }

    fn level(&self, id: NodeId) -> u8 {
        self.with_node(id, |node| node.level())
    }

    fn neighbors(&self, id: NodeId, layer: u8) -> Vec<NodeId> {
        self.with_node(id, |node| {
            if layer > node.level() {
                return Vec::new();
            }
            node.neighbors(layer).collect()
        })
    }

    fn replace_neighbors(
        &mut self,
        id: NodeId,
        layer: u8,
        expected: &[NodeId],
        new: &[NodeId],
    ) -> bool {
        let mut replaced = false;
        self.change_node(id, |node| {
            let current = node.as_ref();
            if current.deleted() || !current.neighbors_equal(layer, expected) {
                return false;
            }
            node.set_neighbors(layer, new);
            replaced = true;
            true
        });
        replaced
    }

    fn push(&mut self, vector: &[f32], tenant: TenantOrd, level: u8, payload: u64) -> NodeId {
        let mut bytes = vec![0u8; self.layout.size(level)];
        NodeMut::init(&mut bytes, self.layout, payload, tenant, level, vector);
        self.add_node(tenant, &mut bytes)
    }

    fn payload(&self, id: NodeId) -> u64 {
        self.with_node(id, |node| node.heap_tid())
    }

    fn entry(&self, tenant: TenantOrd) -> Option<(NodeId, u8)> {
        directory::get(self.index, tenant).entry
    }

    fn offer_entry(&mut self, tenant: TenantOrd, node: NodeId, level: u8) -> Option<(NodeId, u8)> {
        directory::update(self.index, tenant, |e| {
            let before = e.entry;
            if before.is_none_or(|(_, l)| level > l) {
                e.entry = Some((node, level));
            }
            before
        })
    }

    fn set_entry(&mut self, tenant: TenantOrd, entry: Option<(NodeId, u8)>) {
        directory::update(self.index, tenant, |e| e.entry = entry);
    }

    fn delete(&mut self, id: NodeId) {
        let (block, offset) = node_position(id);
        self.delete_on_page(block, &[offset]);
    }

    fn for_each_tenant_vector(
        &self,
        tenant: TenantOrd,
        mut f: impl FnMut(NodeId, &[f32], u64, Rounding),
    ) {
        self.for_each_tenant_node(tenant, |id, node| {
            self.live_vector(&node, |v| f(id, v, node.heap_tid(), node.rounding()));
        });
    }

    fn payload_and_rounding(&self, id: NodeId) -> (u64, Rounding) {
        self.with_node(id, |node| (node.heap_tid(), node.rounding()))
    }

    fn tenant_nodes(&self, tenant: TenantOrd) -> Vec<NodeId> {
        let mut ids = Vec::new();
        self.for_each_tenant_node(tenant, |id, node| {
            if !node.deleted() {
                ids.push(id);
            }
        });
        ids
    }

    fn tenant_len(&self, tenant: TenantOrd) -> usize {
        self.scan_tenant(tenant).nodes as usize
    }
}
