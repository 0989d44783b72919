//! Where the graph lives. The algorithm only needs these operations; the PostgreSQL index
//! implements them on buffer pages, [`MemoryStore`] on vectors.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::rounding::Rounding;

/// A node's position in the store (the page store packs a block number and a line pointer
/// offset into it, as `block << 16 | offset`).
pub type NodeId = u64;
/// A tenant's small integer in the index (the directory maps tenant ids to ordinals).
pub type TenantOrd = u32;

/// Storage of an HNSW graph.
///
/// Several writers may work on one store at once (PostgreSQL backends inserting into one
/// index), so a neighbour list is changed only by compare-and-replace: a writer reads the
/// list, computes the new one, and replaces it only if nobody changed it meanwhile.
pub trait GraphStore {
    /// Runs `f` on node `id`'s vector; `None` when the node was deleted.
    fn with_vector<R>(&self, id: NodeId, f: impl FnOnce(&[f32]) -> R) -> Option<R>;
    /// The node's tenant.
    fn tenant(&self, id: NodeId) -> TenantOrd;
    /// A hint that node `id`'s vector is about to be read (an in-memory store asks the CPU
    /// to start loading it).
    fn prefetch(&self, _id: NodeId) {}
    /// [`GraphStore::prefetch`] for several nodes about to be read one after the other (a
    /// paged store can then overlap the lookups each one needs).
    fn prefetch_all(&self, ids: &[NodeId]) {
        for &id in ids {
            self.prefetch(id);
        }
    }
    /// Node `id`'s vector, borrowed when the store can (an in-memory store), else a copy;
    /// `None` when the node was deleted.
    fn vector(&self, id: NodeId) -> Option<std::borrow::Cow<'_, [f32]>> {
        self.with_vector(id, |v| std::borrow::Cow::Owned(v.to_vec()))
    }
    /// Runs `f` on node `id`'s vector; when `f` also answers `true`, appends the node's
    /// neighbours on `layer` to `links`, in the same visit of the node (a paged store locks
    /// the node's page once for both). `None` when the node was deleted.
    fn with_vector_links<R>(
        &self,
        id: NodeId,
        layer: u8,
        links: &mut Vec<NodeId>,
        f: impl FnOnce(&[f32]) -> (R, bool),
    ) -> Option<R> {
        let (r, want) = self.with_vector(id, f)?;
        if want {
            links.extend(self.neighbors(id, layer));
        }
        Some(r)
    }
    /// The node's top layer.
    fn level(&self, id: NodeId) -> u8;
    /// The node's neighbours on `layer` (≤ its level); empty for a deleted node.
    fn neighbors(&self, id: NodeId, layer: u8) -> Vec<NodeId>;
    /// Replaces the node's neighbours on `layer` with `new` if they still equal `expected`;
    /// `false` (and no change) when another writer changed them first.
    fn replace_neighbors(
        &mut self,
        id: NodeId,
        layer: u8,
        expected: &[NodeId],
        new: &[NodeId],
    ) -> bool;
    /// Adds a node without links. `payload` is opaque to the algorithm (the index stores the
    /// heap row's TID there).
    fn push(&mut self, vector: &[f32], tenant: TenantOrd, level: u8, payload: u64) -> NodeId;
    /// The node's payload.
    fn payload(&self, id: NodeId) -> u64;
    /// The tenant's entry point and its level.
    fn entry(&self, tenant: TenantOrd) -> Option<(NodeId, u8)>;
    /// Makes `node` the tenant's entry point if the tenant has none or `level` is above the
    /// current entry point's, atomically; returns the entry point before the call.
    fn offer_entry(&mut self, tenant: TenantOrd, node: NodeId, level: u8) -> Option<(NodeId, u8)>;
    /// Sets (or clears) the tenant's entry point unconditionally (VACUUM).
    fn set_entry(&mut self, tenant: TenantOrd, entry: Option<(NodeId, u8)>);
    /// Marks the node deleted, overwrites its vector with zeros and drops its links.
    fn delete(&mut self, id: NodeId);
    /// Calls `f` with every live node of `tenant`, its vector, its payload and its
    /// rounding (an exact scan; a paged store reads each of the tenant's pages once).
    fn for_each_tenant_vector(
        &self,
        tenant: TenantOrd,
        mut f: impl FnMut(NodeId, &[f32], u64, Rounding),
    ) {
        for id in self.tenant_nodes(tenant) {
            let (payload, rounding) = self.payload_and_rounding(id);
            self.with_vector(id, |v| f(id, v, payload, rounding));
        }
    }
    /// Node `id`'s payload, and how far its stored vector is from the vector inserted:
    /// zero unless the store keeps vectors rounded (see [`super::rounding`]).
    fn payload_and_rounding(&self, id: NodeId) -> (u64, Rounding) {
        (self.payload(id), Rounding::default())
    }
    /// Every live node of `tenant` (for exact scans of small tenants).
    fn tenant_nodes(&self, tenant: TenantOrd) -> Vec<NodeId>;
    /// Number of live nodes of `tenant`.
    fn tenant_len(&self, tenant: TenantOrd) -> usize;
}

/// An in-memory store, for tests, benchmarks of the algorithm, and index builds that fit in
/// `maintenance_work_mem`. Node ids are positions, from 0.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    dims: usize,
    vectors: Vec<f32>,
    tenants: Vec<TenantOrd>,
    levels: Vec<u8>,
    payloads: Vec<u64>,
    deleted: Vec<bool>,
    /// links[node][layer]
    links: Vec<Vec<Vec<NodeId>>>,
    entries: HashMap<TenantOrd, (NodeId, u8)>,
    by_tenant: HashMap<TenantOrd, Vec<NodeId>>,
}

impl MemoryStore {
    pub fn new(dims: usize) -> MemoryStore {
        MemoryStore {
            dims,
            ..Default::default()
        }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Number of nodes, deleted ones included.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn is_deleted(&self, id: NodeId) -> bool {
        self.deleted[id as usize]
    }

    /// Every tenant's entry point.
    pub fn entries(&self) -> impl Iterator<Item = (TenantOrd, NodeId, u8)> + '_ {
        self.entries.iter().map(|(&t, &(n, l))| (t, n, l))
    }

    /// Bytes held per node of `level` with `m` links, for memory accounting.
    pub fn node_bytes(dims: usize, m: usize, level: u8) -> usize {
        const FIXED: usize = 4 + 1 + 8 + 1 + 24 + 32;
        FIXED + 4 * dims + (level as usize + 1) * 24 + 8 * (2 * m + level as usize * m)
    }
}

impl GraphStore for MemoryStore {
    fn with_vector<R>(&self, id: NodeId, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        if self.deleted[id as usize] {
            return None;
        }
        let i = id as usize * self.dims;
        Some(f(&self.vectors[i..i + self.dims]))
    }

    fn prefetch(&self, id: NodeId) {
        let start = id as usize * self.dims;
        if let Some(v) = self.vectors.get(start..start + self.dims) {
            crate::distance::prefetch(v);
        }
    }

    fn vector(&self, id: NodeId) -> Option<std::borrow::Cow<'_, [f32]>> {
        if self.deleted[id as usize] {
            return None;
        }
        let i = id as usize * self.dims;
        Some(std::borrow::Cow::Borrowed(&self.vectors[i..i + self.dims]))
    }

    fn with_vector_links<R>(
        &self,
        id: NodeId,
        layer: u8,
        links: &mut Vec<NodeId>,
        f: impl FnOnce(&[f32]) -> (R, bool),
    ) -> Option<R> {
        let (r, want) = self.with_vector(id, f)?;
        if want {
            links.extend_from_slice(&self.links[id as usize][layer as usize]);
        }
        Some(r)
    }

    fn tenant(&self, id: NodeId) -> TenantOrd {
        self.tenants[id as usize]
    }

    fn level(&self, id: NodeId) -> u8 {
        self.levels[id as usize]
    }

    fn neighbors(&self, id: NodeId, layer: u8) -> Vec<NodeId> {
        self.links[id as usize][layer as usize].clone()
    }

    fn replace_neighbors(
        &mut self,
        id: NodeId,
        layer: u8,
        expected: &[NodeId],
        new: &[NodeId],
    ) -> bool {
        replace(&mut self.links[id as usize][layer as usize], expected, new)
    }

    fn push(&mut self, vector: &[f32], tenant: TenantOrd, level: u8, payload: u64) -> NodeId {
        assert_eq!(vector.len(), self.dims, "vector dimensions");
        let id = self.tenants.len() as NodeId;
        self.vectors.extend_from_slice(vector);
        self.tenants.push(tenant);
        self.levels.push(level);
        self.payloads.push(payload);
        self.deleted.push(false);
        self.links.push(vec![Vec::new(); level as usize + 1]);
        self.by_tenant.entry(tenant).or_default().push(id);
        id
    }

    fn payload(&self, id: NodeId) -> u64 {
        self.payloads[id as usize]
    }

    fn entry(&self, tenant: TenantOrd) -> Option<(NodeId, u8)> {
        self.entries.get(&tenant).copied()
    }

    fn offer_entry(&mut self, tenant: TenantOrd, node: NodeId, level: u8) -> Option<(NodeId, u8)> {
        offer(&mut self.entries, tenant, node, level)
    }

    fn set_entry(&mut self, tenant: TenantOrd, entry: Option<(NodeId, u8)>) {
        set(&mut self.entries, tenant, entry);
    }

    fn delete(&mut self, id: NodeId) {
        let i = id as usize;
        if self.deleted[i] {
            return;
        }
        self.deleted[i] = true;
        self.vectors[i * self.dims..(i + 1) * self.dims].fill(0.0);
        for list in &mut self.links[i] {
            list.clear();
        }
        if let Some(nodes) = self.by_tenant.get_mut(&self.tenants[i]) {
            nodes.retain(|&n| n != id);
        }
    }

    fn tenant_nodes(&self, tenant: TenantOrd) -> Vec<NodeId> {
        self.by_tenant.get(&tenant).cloned().unwrap_or_default()
    }

    fn tenant_len(&self, tenant: TenantOrd) -> usize {
        self.by_tenant.get(&tenant).map_or(0, Vec::len)
    }
}

/// [`GraphStore::replace_neighbors`] on one list.
fn replace(list: &mut Vec<NodeId>, expected: &[NodeId], new: &[NodeId]) -> bool {
    if list != expected {
        return false;
    }
    *list = new.to_vec();
    true
}

/// [`GraphStore::offer_entry`] on a map of entry points.
fn offer(
    entries: &mut HashMap<TenantOrd, (NodeId, u8)>,
    tenant: TenantOrd,
    node: NodeId,
    level: u8,
) -> Option<(NodeId, u8)> {
    let before = entries.get(&tenant).copied();
    if before.is_none_or(|(_, l)| level > l) {
        entries.insert(tenant, (node, level));
    }
    before
}

/// [`GraphStore::set_entry`] on a map of entry points.
fn set(
    entries: &mut HashMap<TenantOrd, (NodeId, u8)>,
    tenant: TenantOrd,
    entry: Option<(NodeId, u8)>,
) {
    match entry {
        Some(e) => entries.insert(tenant, e),
        None => entries.remove(&tenant),
    };
}

/// A [`MemoryStore`] whose nodes several threads link at once (a parallel index build, see
/// [`super::ParallelLink`]): the nodes are added first, then shared; each thread links
/// through its own `&SharedStore`. Vectors, tenants and levels are read without locks; each
/// node's neighbour lists sit behind a mutex of their own, the entry points behind one.
#[derive(Debug)]
pub struct SharedStore {
    /// The nodes; their links are in `links`, their entry points in `entries`.
    nodes: MemoryStore,
    links: Vec<Mutex<Vec<Vec<NodeId>>>>,
    entries: Mutex<HashMap<TenantOrd, (NodeId, u8)>>,
}

/// A lock whose holder panicked still guards a consistent value here (every change is one
/// assignment), so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    unpoisoned(m.lock())
}

fn unpoisoned<T>(r: std::sync::LockResult<T>) -> T {
    r.unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SharedStore {
    pub fn new(mut nodes: MemoryStore) -> SharedStore {
        let links = std::mem::take(&mut nodes.links)
            .into_iter()
            .map(Mutex::new)
            .collect();
        let entries = Mutex::new(std::mem::take(&mut nodes.entries));
        SharedStore {
            nodes,
            links,
            entries,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The store with its links, for writing out.
    pub fn into_memory(self) -> MemoryStore {
        let mut nodes = self.nodes;
        nodes.links = self
            .links
            .into_iter()
            .map(|m| unpoisoned(m.into_inner()))
            .collect();
        nodes.entries = unpoisoned(self.entries.into_inner());
        nodes
    }
}

impl GraphStore for &SharedStore {
    fn with_vector<R>(&self, id: NodeId, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        self.nodes.with_vector(id, f)
    }

    fn prefetch(&self, id: NodeId) {
        self.nodes.prefetch(id)
    }

    fn vector(&self, id: NodeId) -> Option<std::borrow::Cow<'_, [f32]>> {
        self.nodes.vector(id)
    }

    fn with_vector_links<R>(
        &self,
        id: NodeId,
        layer: u8,
        links: &mut Vec<NodeId>,
        f: impl FnOnce(&[f32]) -> (R, bool),
    ) -> Option<R> {
        let (r, want) = self.nodes.with_vector(id, f)?;
        if want {
            links.extend_from_slice(&lock(&self.links[id as usize])[layer as usize]);
        }
        Some(r)
    }

    fn tenant(&self, id: NodeId) -> TenantOrd {
        self.nodes.tenant(id)
    }

    fn level(&self, id: NodeId) -> u8 {
        self.nodes.level(id)
    }

    fn neighbors(&self, id: NodeId, layer: u8) -> Vec<NodeId> {
        lock(&self.links[id as usize])[layer as usize].clone()
    }

    fn replace_neighbors(
        &mut self,
        id: NodeId,
        layer: u8,
        expected: &[NodeId],
        new: &[NodeId],
    ) -> bool {
        replace(
            &mut lock(&self.links[id as usize])[layer as usize],
            expected,
            new,
        )
    }

    /// Nodes are added before the store is shared.
    fn push(&mut self, _vector: &[f32], _tenant: TenantOrd, _level: u8, _payload: u64) -> NodeId {
        panic!("a shared store's nodes are added before it is shared")
    }

    fn payload(&self, id: NodeId) -> u64 {
        self.nodes.payload(id)
    }

    fn entry(&self, tenant: TenantOrd) -> Option<(NodeId, u8)> {
        lock(&self.entries).get(&tenant).copied()
    }

    fn offer_entry(&mut self, tenant: TenantOrd, node: NodeId, level: u8) -> Option<(NodeId, u8)> {
        offer(&mut lock(&self.entries), tenant, node, level)
    }

    fn set_entry(&mut self, tenant: TenantOrd, entry: Option<(NodeId, u8)>) {
        set(&mut lock(&self.entries), tenant, entry);
    }

    /// A build deletes nothing.
    fn delete(&mut self, _id: NodeId) {
        panic!("nodes of a shared store are not deleted")
    }

    fn tenant_nodes(&self, tenant: TenantOrd) -> Vec<NodeId> {
        self.nodes.tenant_nodes(tenant)
    }

    fn tenant_len(&self, tenant: TenantOrd) -> usize {
        self.nodes.tenant_len(tenant)
    }
}
