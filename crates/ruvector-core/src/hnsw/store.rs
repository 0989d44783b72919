//! Where the graph lives. The algorithm only needs these operations; the PostgreSQL index
//! implements them on buffer pages, [`MemoryStore`] on vectors.

/// A node's position in the store.
pub type NodeId = u32;
/// A tenant's small integer in the index (the directory maps tenant ids to ordinals).
pub type TenantOrd = u32;

/// Storage of an HNSW graph.
pub trait GraphStore {
    /// Runs `f` on node `id`'s vector (a page store reads it from a pinned buffer).
    fn with_vector<R>(&self, id: NodeId, f: impl FnOnce(&[f32]) -> R) -> R;
    /// The node's tenant.
    fn tenant(&self, id: NodeId) -> TenantOrd;
    /// The node's top layer.
    fn level(&self, id: NodeId) -> u8;
    /// The node's neighbours on `layer` (≤ its level).
    fn neighbors(&self, id: NodeId, layer: u8) -> Vec<NodeId>;
    /// Replaces the node's neighbours on `layer`.
    fn set_neighbors(&mut self, id: NodeId, layer: u8, neighbors: &[NodeId]);
    /// Adds a node without links.
    fn push(&mut self, vector: &[f32], tenant: TenantOrd, level: u8) -> NodeId;
    /// The tenant's entry point and its level.
    fn entry(&self, tenant: TenantOrd) -> Option<(NodeId, u8)>;
    fn set_entry(&mut self, tenant: TenantOrd, node: NodeId, level: u8);
    /// Every node of `tenant` (for exact scans of small tenants).
    fn tenant_nodes(&self, tenant: TenantOrd) -> Vec<NodeId>;
    /// Number of nodes of `tenant`.
    fn tenant_len(&self, tenant: TenantOrd) -> usize;
}

/// An in-memory store for tests and benchmarks of the algorithm.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    dims: usize,
    vectors: Vec<f32>,
    tenants: Vec<TenantOrd>,
    levels: Vec<u8>,
    /// links[node][layer]
    links: Vec<Vec<Vec<NodeId>>>,
    entries: std::collections::HashMap<TenantOrd, (NodeId, u8)>,
    by_tenant: std::collections::HashMap<TenantOrd, Vec<NodeId>>,
}

impl MemoryStore {
    pub fn new(dims: usize) -> MemoryStore {
        MemoryStore {
            dims,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }
}

impl GraphStore for MemoryStore {
    fn with_vector<R>(&self, id: NodeId, f: impl FnOnce(&[f32]) -> R) -> R {
        let i = id as usize * self.dims;
        f(&self.vectors[i..i + self.dims])
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

    fn set_neighbors(&mut self, id: NodeId, layer: u8, neighbors: &[NodeId]) {
        self.links[id as usize][layer as usize] = neighbors.to_vec();
    }

    fn push(&mut self, vector: &[f32], tenant: TenantOrd, level: u8) -> NodeId {
        assert_eq!(vector.len(), self.dims, "vector dimensions");
        let id = self.tenants.len() as NodeId;
        self.vectors.extend_from_slice(vector);
        self.tenants.push(tenant);
        self.levels.push(level);
        self.links.push(vec![Vec::new(); level as usize + 1]);
        self.by_tenant.entry(tenant).or_default().push(id);
        id
    }

    fn entry(&self, tenant: TenantOrd) -> Option<(NodeId, u8)> {
        self.entries.get(&tenant).copied()
    }

    fn set_entry(&mut self, tenant: TenantOrd, node: NodeId, level: u8) {
        self.entries.insert(tenant, (node, level));
    }

    fn tenant_nodes(&self, tenant: TenantOrd) -> Vec<NodeId> {
        self.by_tenant.get(&tenant).cloned().unwrap_or_default()
    }

    fn tenant_len(&self, tenant: TenantOrd) -> usize {
        self.by_tenant.get(&tenant).map_or(0, Vec::len)
    }
}
