//! The byte layout of the `ruhnsw` index pages, independent of PostgreSQL.
//!
//! The extension places these records on 8 kB buffer pages (block 0 is the metapage, the
//! others hold the tenant directory, one tenant's node tuples, or the packed nodes of several
//! shared tenants); this module defines what the bytes mean and how nodes are packed onto
//! pages, so that the layout is tested here and the extension only moves bytes.
//! See docs/ruhnsw-design.md.
//!
//! A node tuple:
//!
//! | bytes | field |
//! |---|---|
//! | 0..6 | heap TID (block `u32`, offset `u16`) |
//! | 6 | level |
//! | 7 | flags (bit 0: deleted) |
//! | 8..12 | tenant ordinal |
//! | 12..18 | the tenant's previous packed node (its node id; 0: none) |
//! | 20.. | link count per layer (`u8`), padded to 4 bytes |
//! | then | the vector: `dims` × `f32`, or in an index with half-precision storage its [`Rounding`] (12 bytes) and `dims` × binary16 |
//! | then | links: layer 0 has room for `2m`, each upper layer for `m`; a link is a node id in 6 bytes |
//!
//! All integers are little-endian. Node tuples have a fixed size for a given level, so link
//! changes are made in place.

use super::rounding::{self, Rounding, ROUNDING_BYTES};
use super::{Metric, NodeId, TenantOrd, MAX_LEVEL};

/// PostgreSQL's page size (`BLCKSZ`).
pub const PAGE_SIZE: usize = 8192;
/// Page header size (`SizeOfPageHeaderData`).
pub const PAGE_HEADER: usize = 24;
/// Size of the special area at the end of every index page.
pub const SPECIAL_SIZE: usize = 8;
/// Bytes of a page available for line pointers and tuples.
pub const PAGE_ITEM_SPACE: usize = PAGE_SIZE - PAGE_HEADER - SPECIAL_SIZE;
/// A line pointer (`ItemIdData`).
const LINE_POINTER: usize = 4;
/// Identifies a `ruhnsw` page in its special area.
pub const PAGE_ID: u16 = 0xFF91;
/// Page kinds (special area, byte 2).
pub const KIND_META: u8 = 1;
pub const KIND_NODES: u8 = 2;

const NODE_HEADER: usize = 20;
const LINK_BYTES: usize = 6;
const FLAG_DELETED: u8 = 1;

/// `(block, offset)` of a tuple as a [`NodeId`].
pub fn node_id(block: u32, offset: u16) -> NodeId {
    (block as u64) << 16 | offset as u64
}

/// The `(block, offset)` in a [`NodeId`].
pub fn node_position(id: NodeId) -> (u32, u16) {
    ((id >> 16) as u32, id as u16)
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// An index's `storage` setting: how its node tuples hold vector elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Full precision while a node fits a page, half precision beyond.
    Auto,
    /// `f32` elements.
    Full,
    /// Half-precision elements (see [`rounding`]).
    Half,
}

/// Sizes and offsets of node tuples of one index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLayout {
    pub dims: usize,
    pub m: usize,
    /// Elements are stored in half precision (2 bytes; see [`rounding`]), not as `f32`.
    pub half: bool,
}

impl NodeLayout {
    /// The layout an index with storage setting `storage` uses for `dims` and `m`: under
    /// [`Storage::Auto`], full precision while a node of layer 0 fits a page, half precision
    /// beyond. `None` when no node fits.
    pub fn choose(dims: usize, m: usize, storage: Storage) -> Option<NodeLayout> {
        let full = NodeLayout {
            dims,
            m,
            half: false,
        };
        let half = NodeLayout { half: true, ..full };
        let layout = match storage {
            Storage::Full => full,
            Storage::Half => half,
            Storage::Auto if full.max_level().is_some() => full,
            Storage::Auto => half,
        };
        layout.max_level().map(|_| layout)
    }

    /// The most dimensions a node fits a page with, for `m` and `half`.
    pub fn max_dims(m: usize, half: bool) -> usize {
        let fits = |dims| NodeLayout { dims, m, half }.max_level().is_some();
        let (mut lo, mut hi) = (0, PAGE_SIZE);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Bytes of a node's vector.
    #[inline]
    fn vector_size(&self) -> usize {
        if self.half {
            ROUNDING_BYTES + 2 * self.dims
        } else {
            4 * self.dims
        }
    }

    #[inline]
    pub fn capacity(&self, layer: u8) -> usize {
        if layer == 0 {
            2 * self.m
        } else {
            self.m
        }
    }

    #[inline]
    fn vector_offset(&self, level: u8) -> usize {
        NODE_HEADER + align4(level as usize + 1)
    }

    #[inline]
    fn links_offset(&self, level: u8, layer: u8) -> usize {
        let before = if layer == 0 {
            0
        } else {
            2 * self.m + (layer as usize - 1) * self.m
        };
        self.vector_offset(level) + self.vector_size() + LINK_BYTES * before
    }

    /// Bytes of a node tuple of `level`.
    #[inline]
    pub fn size(&self, level: u8) -> usize {
        self.links_offset(level, level) + LINK_BYTES * self.capacity(level)
    }

    /// Page space a node of `level` takes: the aligned tuple and its line pointer.
    pub fn space(&self, level: u8) -> usize {
        align8(self.size(level)) + LINE_POINTER
    }

    /// The highest level whose nodes fit on a page; `None` when not even a layer-0 node
    /// fits (too many dimensions for this `m`).
    pub fn max_level(&self) -> Option<u8> {
        (0..=MAX_LEVEL)
            .rev()
            .find(|&l| self.space(l) <= PAGE_ITEM_SPACE)
    }

    /// Byte range of the vector in a tuple of `level` (4-byte aligned when the tuple is),
    /// with its [`Rounding`] under half precision.
    #[inline]
    pub fn vector_range(&self, level: u8) -> std::ops::Range<usize> {
        let v = self.vector_offset(level);
        v..v + self.vector_size()
    }

    /// Assigns node ids to nodes of the given levels, in order, packing them onto pages from
    /// block `first_block` on: what an index build writes.
    pub fn pack(&self, levels: impl IntoIterator<Item = u8>, first_block: u32) -> Vec<NodeId> {
        let mut block = first_block;
        let mut used = 0;
        let mut offset: u16 = 0;
        levels
            .into_iter()
            .map(|level| {
                let space = self.space(level);
                if used + space > PAGE_ITEM_SPACE {
                    block += 1;
                    used = 0;
                    offset = 0;
                }
                used += space;
                offset += 1;
                node_id(block, offset)
            })
            .collect()
    }
}

/// Where an index build puts its nodes ([`NodeLayout::pack_by_tenant`]).
#[derive(Debug, Default)]
pub struct Packing {
    /// Each node's id, in input order.
    pub ids: Vec<NodeId>,
    /// The pages of each tenant with pages of its own, in chain order.
    pub chains: std::collections::BTreeMap<TenantOrd, Vec<u32>>,
    /// The shared pages holding packed tenants' nodes, in order.
    pub shared: Vec<u32>,
}

impl NodeLayout {
    /// Assigns node ids to `(tenant, level)` nodes from block `first_block` on. Tenants for
    /// which `packed` says false get pages of their own (a tenant's search and exact scan
    /// read no other tenant's pages): in ascending ordinal, each on its own run of pages.
    /// The others' nodes follow, packed onto shared pages one after the other, grouped by
    /// tenant. Nodes of a tenant keep their input order.
    pub fn pack_by_tenant(
        &self,
        nodes: &[(TenantOrd, u8)],
        packed: impl Fn(TenantOrd) -> bool,
        first_block: u32,
    ) -> Packing {
        let mut order: Vec<usize> = (0..nodes.len()).collect();
        // Stable: input order within a tenant; own-page tenants first.
        order.sort_by_key(|&i| (packed(nodes[i].0), nodes[i].0));
        let mut p = Packing {
            ids: vec![0; nodes.len()],
            ..Packing::default()
        };
        let mut block = first_block;
        let (mut used, mut offset) = (0, 0u16);
        // The current page's owner: a tenant, or `None` for a shared page.
        let mut current: Option<Option<TenantOrd>> = None;
        for i in order {
            let (tenant, level) = nodes[i];
            let owner = (!packed(tenant)).then_some(tenant);
            let space = self.space(level);
            if current.is_some() && (current != Some(owner) || used + space > PAGE_ITEM_SPACE) {
                block += 1;
                (used, offset) = (0, 0);
            }
            if used == 0 {
                match owner {
                    Some(t) => p.chains.entry(t).or_default().push(block),
                    None => p.shared.push(block),
                }
            }
            current = Some(owner);
            used += space;
            offset += 1;
            p.ids[i] = node_id(block, offset);
        }
        p
    }
}

/// Read access to a node tuple.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    bytes: &'a [u8],
    layout: NodeLayout,
}

impl<'a> NodeRef<'a> {
    /// A view of `bytes`, or a description of why they are not a node tuple of this layout.
    #[inline]
    pub fn new(bytes: &'a [u8], layout: NodeLayout) -> Result<NodeRef<'a>, String> {
        if bytes.len() < NODE_HEADER {
            return Err(format!(
                "tuple of {} bytes is shorter than a node header",
                bytes.len()
            ));
        }
        let level = bytes[6];
        if level > MAX_LEVEL {
            return Err(format!("level {level} exceeds {MAX_LEVEL}"));
        }
        if bytes.len() != layout.size(level) {
            return Err(format!(
                "tuple of {} bytes, expected {} for level {level}",
                bytes.len(),
                layout.size(level)
            ));
        }
        let node = NodeRef { bytes, layout };
        for layer in 0..=level {
            if node.count(layer) > layout.capacity(layer) {
                return Err(format!(
                    "layer {layer} holds {} links, room for {}",
                    node.count(layer),
                    layout.capacity(layer)
                ));
            }
        }
        Ok(node)
    }

    #[inline]
    pub fn heap_tid(&self) -> NodeId {
        read_id(&self.bytes[0..6])
    }

    #[inline]
    pub fn level(&self) -> u8 {
        self.bytes[6]
    }

    #[inline]
    pub fn deleted(&self) -> bool {
        self.bytes[7] & FLAG_DELETED != 0
    }

    #[inline]
    pub fn tenant(&self) -> TenantOrd {
        u32::from_le_bytes(self.bytes[8..12].try_into().expect("4 bytes"))
    }

    /// The tenant's previous packed node (packed nodes are linked newest to oldest).
    #[inline]
    pub fn prev(&self) -> Option<NodeId> {
        Some(read_id(&self.bytes[12..18])).filter(|&id| id != 0)
    }

    #[inline]
    fn count(&self, layer: u8) -> usize {
        self.bytes[NODE_HEADER + layer as usize] as usize
    }

    /// The vector's bytes, as stored (see [`NodeRef::vector`]).
    #[inline]
    pub fn vector_bytes(&self) -> &'a [u8] {
        &self.bytes[self.layout.vector_range(self.level())]
    }

    /// The vector as floats: read in place when stored in full precision, decoded into
    /// `scratch` when stored in half precision.
    #[inline]
    pub fn vector<'s>(&self, scratch: &'s mut Vec<f32>) -> &'s [f32]
    where
        'a: 's,
    {
        let bytes = self.vector_bytes();
        if !self.layout.half {
            return vector_slice(bytes).expect("tuples are MAXALIGNed");
        }
        scratch.resize(self.layout.dims, 0.0);
        rounding::decode(&bytes[ROUNDING_BYTES..], scratch);
        scratch
    }

    /// How far the stored vector is from the one inserted (zero in full precision).
    #[inline]
    pub fn rounding(&self) -> Rounding {
        if !self.layout.half {
            return Rounding::default();
        }
        Rounding::from_bytes(&self.vector_bytes()[..ROUNDING_BYTES])
    }

    /// The links on `layer`.
    pub fn neighbors(&self, layer: u8) -> impl Iterator<Item = NodeId> + 'a {
        let start = self.layout.links_offset(self.level(), layer);
        let bytes = &self.bytes[start..start + LINK_BYTES * self.count(layer)];
        bytes.chunks_exact(LINK_BYTES).map(read_id)
    }

    /// Whether the links on `layer` are exactly `ids`.
    pub fn neighbors_equal(&self, layer: u8, ids: &[NodeId]) -> bool {
        self.count(layer) == ids.len() && self.neighbors(layer).eq(ids.iter().copied())
    }
}

/// The vector of a node as floats, when its bytes are 4-byte aligned (they are on a page,
/// where tuples start MAXALIGNed).
#[inline]
pub fn vector_slice(bytes: &[u8]) -> Option<&[f32]> {
    if !(bytes.as_ptr() as usize).is_multiple_of(4) || !bytes.len().is_multiple_of(4) {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: the pointer is 4-byte aligned and the length a multiple of 4 (checked above);
    // every bit pattern is a valid f32; the lifetime is the input's.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const f32, bytes.len() / 4) })
}

#[inline]
fn read_id(b: &[u8]) -> NodeId {
    let block = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes"));
    let offset = u16::from_le_bytes(b[4..6].try_into().expect("2 bytes"));
    node_id(block, offset)
}

fn write_id(b: &mut [u8], id: NodeId) {
    let (block, offset) = node_position(id);
    b[0..4].copy_from_slice(&block.to_le_bytes());
    b[4..6].copy_from_slice(&offset.to_le_bytes());
}

/// Write access to a node tuple.
pub struct NodeMut<'a> {
    bytes: &'a mut [u8],
    layout: NodeLayout,
}

impl<'a> NodeMut<'a> {
    /// Initializes `bytes` (exactly [`NodeLayout::size`] of `level`) as a node without links.
    pub fn init(
        bytes: &'a mut [u8],
        layout: NodeLayout,
        heap_tid: NodeId,
        tenant: TenantOrd,
        level: u8,
        vector: &[f32],
    ) -> NodeMut<'a> {
        assert_eq!(bytes.len(), layout.size(level), "node tuple size");
        assert_eq!(vector.len(), layout.dims, "vector dimensions");
        bytes.fill(0);
        write_id(&mut bytes[0..6], heap_tid);
        bytes[6] = level;
        bytes[8..12].copy_from_slice(&tenant.to_le_bytes());
        let area = &mut bytes[layout.vector_range(level)];
        if layout.half {
            let (head, halves) = area.split_at_mut(ROUNDING_BYTES);
            head.copy_from_slice(&rounding::encode(vector, halves).to_bytes());
        } else {
            for (chunk, x) in area.chunks_exact_mut(4).zip(vector) {
                chunk.copy_from_slice(&x.to_le_bytes());
            }
        }
        NodeMut { bytes, layout }
    }

    /// A writable view of an existing node tuple.
    pub fn new(bytes: &'a mut [u8], layout: NodeLayout) -> Result<NodeMut<'a>, String> {
        NodeRef::new(bytes, layout)?;
        Ok(NodeMut { bytes, layout })
    }

    pub fn as_ref(&self) -> NodeRef<'_> {
        NodeRef {
            bytes: self.bytes,
            layout: self.layout,
        }
    }

    /// Links the node to the tenant's previous packed node.
    pub fn set_prev(&mut self, prev: Option<NodeId>) {
        write_id(&mut self.bytes[12..18], prev.unwrap_or(0));
    }

    /// Replaces the links on `layer` (at most the layer's capacity).
    pub fn set_neighbors(&mut self, layer: u8, ids: &[NodeId]) {
        let level = self.bytes[6];
        assert!(layer <= level, "layer above the node's level");
        assert!(ids.len() <= self.layout.capacity(layer), "too many links");
        let start = self.layout.links_offset(level, layer);
        let area = &mut self.bytes[start..start + LINK_BYTES * self.layout.capacity(layer)];
        area.fill(0);
        for (chunk, &id) in area.chunks_exact_mut(LINK_BYTES).zip(ids) {
            write_id(chunk, id);
        }
        self.bytes[NODE_HEADER + layer as usize] = ids.len() as u8;
    }

    /// Marks the node deleted and overwrites its vector and links with zeros (erasure).
    /// The heap TID stays, so that a check can tell which row the node held.
    pub fn delete(&mut self) {
        let level = self.bytes[6];
        self.bytes[7] |= FLAG_DELETED;
        let start = self.layout.vector_range(level).start;
        self.bytes[start..].fill(0);
        self.bytes[NODE_HEADER..NODE_HEADER + level as usize + 1].fill(0);
    }
}

/// The metapage record (block 0, after the page header).
///
/// | bytes | field |
/// |---|---|
/// | 0..4 | magic |
/// | 4..8 | format version |
/// | 8..12 | dimensions (0: not known yet) |
/// | 12..14 | m |
/// | 14..16 | ef_construction |
/// | 16 | metric |
/// | 17 | 1 when the index's second key column is the tenant column |
/// | 18 | 1 when vectors are stored in half precision (0 in indexes of earlier releases) |
/// | 20..24 | first directory page (0: none yet) |
/// | 24..28 | directory entries (tenants) |
/// | 28..32 | the page shared tenants' nodes are packed onto (0: none yet) |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub dims: u32,
    pub m: u16,
    pub ef_construction: u16,
    pub metric: Metric,
    /// The index is keyed by tenant (its second column is the table's tenant column);
    /// otherwise all nodes belong to tenant ordinal 0 with an empty key.
    pub tenant_key: bool,
    /// Vectors are stored in half precision ([`NodeLayout::half`]).
    pub half: bool,
    /// The first page of the tenant directory (0: none yet).
    pub directory: u32,
    /// Entries in the directory (the next ordinal).
    pub tenants: u32,
    /// The page shared tenants' new nodes are packed onto (0: none yet).
    pub shared_page: u32,
}

pub const META_MAGIC: u32 = 0x5256_4857; // "RVHW"
/// Version 4: shared tenants' nodes are packed onto common pages, each tenant's packed nodes
/// linked newest to oldest.
pub const META_VERSION: u32 = 4;
/// Version 5: version 4 with half-precision vectors (byte 18 set), which builds that read
/// only version 4 refuse rather than misread.
pub const META_VERSION_HALF: u32 = 5;
/// Bytes of the metapage record.
pub const META_SIZE: usize = 32;
const NO_ENTRY: u64 = u64::MAX;

impl Meta {
    pub fn layout(&self) -> NodeLayout {
        NodeLayout {
            dims: self.dims as usize,
            m: self.m as usize,
            half: self.half,
        }
    }

    /// The format version the index is written in.
    pub fn version(&self) -> u32 {
        if self.half {
            META_VERSION_HALF
        } else {
            META_VERSION
        }
    }

    pub fn to_bytes(&self) -> [u8; META_SIZE] {
        let mut b = [0u8; META_SIZE];
        b[0..4].copy_from_slice(&META_MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.version().to_le_bytes());
        b[8..12].copy_from_slice(&self.dims.to_le_bytes());
        b[12..14].copy_from_slice(&self.m.to_le_bytes());
        b[14..16].copy_from_slice(&self.ef_construction.to_le_bytes());
        b[16] = self.metric.code();
        b[17] = self.tenant_key as u8;
        b[18] = self.half as u8;
        b[20..24].copy_from_slice(&self.directory.to_le_bytes());
        b[24..28].copy_from_slice(&self.tenants.to_le_bytes());
        b[28..32].copy_from_slice(&self.shared_page.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Result<Meta, String> {
        if b.len() < META_SIZE {
            return Err("metapage record is truncated".into());
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u16_at = |i: usize| u16::from_le_bytes(b[i..i + 2].try_into().expect("2 bytes"));
        if u32_at(0) != META_MAGIC {
            return Err(format!("bad metapage magic {:#x}", u32_at(0)));
        }
        let half = b[18] != 0;
        let version = if half {
            META_VERSION_HALF
        } else {
            META_VERSION
        };
        if u32_at(4) != version {
            return Err(format!(
                "index format version {} (this build reads {META_VERSION} and, with \
                 half-precision vectors, {META_VERSION_HALF}); REINDEX it",
                u32_at(4)
            ));
        }
        let metric = Metric::from_code(b[16]).ok_or_else(|| format!("bad metric {}", b[16]))?;
        Ok(Meta {
            dims: u32_at(8),
            m: u16_at(12),
            ef_construction: u16_at(14),
            metric,
            tenant_key: b[17] != 0,
            half,
            directory: u32_at(20),
            tenants: u32_at(24),
            shared_page: u32_at(28),
        })
    }
}

/// The special area of a page of `kind`.
pub fn special(kind: u8) -> [u8; SPECIAL_SIZE] {
    special_linked(kind, 0)
}

/// The special area of a page of `kind` followed by block `next` (0: none) in its chain: a
/// tenant's node pages, or the directory pages.
pub fn special_linked(kind: u8, next: u32) -> [u8; SPECIAL_SIZE] {
    let mut b = [0u8; SPECIAL_SIZE];
    b[0..2].copy_from_slice(&PAGE_ID.to_le_bytes());
    b[2] = kind;
    b[4..8].copy_from_slice(&next.to_le_bytes());
    b
}

/// The next block in a page's chain (0: none), from its special area.
pub fn special_next(special: &[u8]) -> u32 {
    u32::from_le_bytes(special[4..8].try_into().expect("8-byte special area"))
}

/// Page kind of the tenant directory.
pub const KIND_DIRECTORY: u8 = 3;
/// Longest tenant key a directory entry holds (the tenant id rules allow 63 bytes).
pub const MAX_KEY: usize = 63;
/// Bytes of one directory entry.
pub const DIR_ENTRY_SIZE: usize = 96;
/// Bytes before the first entry of a directory page: the number of entries on it.
const DIR_HEADER: usize = 8;
/// Entries per directory page.
pub const DIR_ENTRIES_PER_PAGE: usize = (PAGE_ITEM_SPACE - DIR_HEADER) / DIR_ENTRY_SIZE;

/// One tenant's record in the directory. A tenant's ordinal (the number every node of the
/// tenant carries) is the entry's position: directory page number in the chain ×
/// [`DIR_ENTRIES_PER_PAGE`] + slot. Entries are never removed, so ordinals are stable.
///
/// | bytes | field |
/// |---|---|
/// | 0 | key length |
/// | 1..64 | key (the tenant column's value) |
/// | 64..72 | entry node id (`u64::MAX`: none) |
/// | 72 | entry node's level |
/// | 73 | flags: bit 0 `stale` |
/// | 74..76 | offset of the tenant's newest packed node |
/// | 76..80 | first node page of the tenant (0: none yet) |
/// | 80..84 | the tenant's insert page (last page of its chain) |
/// | 84..88 | block of the tenant's newest packed node (0: none) |
/// | 88..96 | live nodes (exact for decisions: inserts add, VACUUM subtracts) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub key: Vec<u8>,
    pub entry: Option<(NodeId, u8)>,
    pub first_block: u32,
    pub last_block: u32,
    pub nodes: u64,
    /// The tenant's rows are kept by a dedicated index of its own, and this graph misses
    /// some of them (inserts skipped it, or a build left them out): it must not answer for
    /// the tenant. Only a rebuild of the index clears it.
    pub stale: bool,
    /// The tenant's newest node packed on a shared page; its older packed nodes follow
    /// through each node's `prev`.
    pub packed_head: Option<NodeId>,
}

impl DirEntry {
    /// A tenant without nodes yet; `None` when the key is longer than [`MAX_KEY`].
    pub fn new(key: &[u8]) -> Option<DirEntry> {
        (key.len() <= MAX_KEY).then(|| DirEntry {
            key: key.to_vec(),
            entry: None,
            first_block: 0,
            last_block: 0,
            nodes: 0,
            stale: false,
            packed_head: None,
        })
    }

    pub fn to_bytes(&self) -> [u8; DIR_ENTRY_SIZE] {
        let mut b = [0u8; DIR_ENTRY_SIZE];
        b[0] = self.key.len() as u8;
        b[1..1 + self.key.len()].copy_from_slice(&self.key);
        let (entry, level) = self.entry.unwrap_or((NO_ENTRY, 0));
        b[64..72].copy_from_slice(&entry.to_le_bytes());
        b[72] = level;
        b[73] = u8::from(self.stale);
        let (head_block, head_offset) = node_position(self.packed_head.unwrap_or(0));
        b[74..76].copy_from_slice(&head_offset.to_le_bytes());
        b[84..88].copy_from_slice(&head_block.to_le_bytes());
        b[76..80].copy_from_slice(&self.first_block.to_le_bytes());
        b[80..84].copy_from_slice(&self.last_block.to_le_bytes());
        b[88..96].copy_from_slice(&self.nodes.to_le_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Result<DirEntry, String> {
        if b.len() < DIR_ENTRY_SIZE {
            return Err("directory entry is truncated".into());
        }
        let len = b[0] as usize;
        if len > MAX_KEY {
            return Err(format!("directory key of {len} bytes"));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let entry = u64_at(64);
        Ok(DirEntry {
            key: b[1..1 + len].to_vec(),
            entry: (entry != NO_ENTRY).then_some((entry, b[72])),
            first_block: u32_at(76),
            last_block: u32_at(80),
            nodes: u64_at(88),
            stale: b[73] & 1 != 0,
            packed_head: Some(node_id(
                u32_at(84),
                u16::from_le_bytes(b[74..76].try_into().expect("2 bytes")),
            ))
            .filter(|&id| id != 0),
        })
    }
}

/// The number of entries on a directory page, from its contents.
pub fn dir_count(contents: &[u8]) -> usize {
    u16::from_le_bytes(contents[0..2].try_into().expect("2 bytes")) as usize
}

/// Sets the number of entries on a directory page.
pub fn set_dir_count(contents: &mut [u8], count: usize) {
    assert!(count <= DIR_ENTRIES_PER_PAGE, "directory page overflow");
    contents[0..2].copy_from_slice(&(count as u16).to_le_bytes());
}

/// Byte range of entry `slot` in a directory page's contents.
pub fn dir_slot(slot: usize) -> std::ops::Range<usize> {
    assert!(slot < DIR_ENTRIES_PER_PAGE, "directory slot {slot}");
    let start = DIR_HEADER + slot * DIR_ENTRY_SIZE;
    start..start + DIR_ENTRY_SIZE
}

/// The ordinal of entry `slot` on the `page`-th directory page of the chain (from 0), and
/// back.
pub fn ordinal(page: usize, slot: usize) -> TenantOrd {
    (page * DIR_ENTRIES_PER_PAGE + slot) as TenantOrd
}

pub fn ordinal_position(ordinal: TenantOrd) -> (usize, usize) {
    let o = ordinal as usize;
    (o / DIR_ENTRIES_PER_PAGE, o % DIR_ENTRIES_PER_PAGE)
}

/// The kind of a page from its special area, if it is a `ruhnsw` page.
pub fn page_kind(special: &[u8]) -> Option<u8> {
    (special.len() == SPECIAL_SIZE && special[0..2] == PAGE_ID.to_le_bytes()).then(|| special[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: NodeLayout = NodeLayout {
        dims: 5,
        m: 4,
        half: false,
    };

    #[test]
    fn node_round_trip() {
        let mut buf = vec![0u8; L.size(2)];
        let v = [1.0, -2.5, 3.25, 0.0, 7.0];
        let mut n = NodeMut::init(&mut buf, L, node_id(7, 3), 42, 2, &v);
        n.set_neighbors(0, &[node_id(1, 1), node_id(u32::MAX, 65535)]);
        n.set_neighbors(2, &[node_id(9, 2)]);
        assert_eq!(n.as_ref().prev(), None);
        n.set_prev(Some(node_id(70_000, 12)));
        let r = NodeRef::new(&buf, L).unwrap();
        assert_eq!(r.prev(), Some(node_id(70_000, 12)));
        assert_eq!(r.heap_tid(), node_id(7, 3));
        assert_eq!((r.level(), r.tenant(), r.deleted()), (2, 42, false));
        let floats: Vec<f32> = r
            .vector_bytes()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(floats, v);
        assert_eq!(
            r.neighbors(0).collect::<Vec<_>>(),
            [node_id(1, 1), node_id(u32::MAX, 65535)]
        );
        assert!(r.neighbors_equal(2, &[node_id(9, 2)]));
        assert_eq!(r.neighbors(1).count(), 0);
    }

    #[test]
    fn delete_zeroes_vector_and_links() {
        // The list of packed nodes stays whole: a deleted node keeps its `prev`.
        let mut buf = vec![0u8; L.size(1)];
        let mut n = NodeMut::init(&mut buf, L, node_id(1, 1), 0, 1, &[9.0; 5]);
        n.set_neighbors(0, &[node_id(1, 2)]);
        n.set_prev(Some(node_id(4, 4)));
        n.delete();
        let r = NodeRef::new(&buf, L).unwrap();
        assert!(r.deleted());
        assert!(r.vector_bytes().iter().all(|&b| b == 0));
        assert_eq!(r.neighbors(0).count(), 0);
        assert_eq!(r.heap_tid(), node_id(1, 1));
        assert_eq!(r.prev(), Some(node_id(4, 4)));
    }

    #[test]
    fn malformed_tuples_are_reported() {
        let mut buf = vec![0u8; L.size(0)];
        NodeMut::init(&mut buf, L, 1, 0, 0, &[0.0; 5]);
        assert!(NodeRef::new(&buf[..buf.len() - 1], L).is_err());
        buf[NODE_HEADER] = 9; // more links than layer 0's 8 slots
        assert!(NodeRef::new(&buf, L).unwrap_err().contains("room for 8"));
    }

    #[test]
    fn packing_fills_pages_without_overflow() {
        let layout = NodeLayout {
            dims: 384,
            m: 16,
            half: false,
        };
        let levels: Vec<u8> = (0..1000).map(|i| (i % 7 == 0) as u8).collect();
        let ids = layout.pack(levels.iter().copied(), 1);
        let mut used = std::collections::BTreeMap::<u32, usize>::new();
        for (i, (id, &level)) in ids.iter().zip(&levels).enumerate() {
            let (block, offset) = node_position(*id);
            assert!(offset >= 1);
            if i > 0 && node_position(ids[i - 1]).0 != block {
                // A node starts a new page only when it does not fit on the previous one.
                let prev = used[&node_position(ids[i - 1]).0];
                assert!(prev + layout.space(level) > PAGE_ITEM_SPACE);
            }
            *used.entry(block).or_default() += layout.space(level);
        }
        assert_eq!(*used.keys().next().unwrap(), 1);
        assert!(used.values().all(|&u| u <= PAGE_ITEM_SPACE));
    }

    #[test]
    fn packing_by_tenant_never_shares_a_page() {
        let layout = NodeLayout {
            dims: 128,
            m: 16,
            half: false,
        };
        // Tenants interleaved in input order, of very different sizes.
        let nodes: Vec<(TenantOrd, u8)> = (0..3000u32)
            .map(|i| {
                (
                    if i % 10 == 0 {
                        7
                    } else if i % 3 == 0 {
                        2
                    } else {
                        0
                    },
                    (i % 11 == 0) as u8,
                )
            })
            .chain([(5, 0)])
            .collect();
        let Packing {
            ids, chains: pages, ..
        } = layout.pack_by_tenant(&nodes, |_| false, 1);
        let mut owner = std::collections::HashMap::<u32, TenantOrd>::new();
        let mut used = std::collections::HashMap::<u32, usize>::new();
        let mut seen = std::collections::HashSet::new();
        for (&(tenant, level), &id) in nodes.iter().zip(&ids) {
            assert!(seen.insert(id), "ids are unique");
            let (block, _) = node_position(id);
            assert_eq!(
                *owner.entry(block).or_insert(tenant),
                tenant,
                "one tenant per page"
            );
            *used.entry(block).or_default() += layout.space(level);
            assert!(pages[&tenant].contains(&block));
        }
        assert!(used.values().all(|&u| u <= PAGE_ITEM_SPACE));
        assert_eq!(pages.keys().copied().collect::<Vec<_>>(), [0, 2, 5, 7]);
        assert_eq!(pages[&5].len(), 1);
        let all: Vec<u32> = pages.values().flatten().copied().collect();
        assert_eq!(
            all,
            (1..=all.len() as u32).collect::<Vec<_>>(),
            "pages are consecutive"
        );
        // Within a tenant, input order is kept.
        let t0: Vec<NodeId> = nodes
            .iter()
            .zip(&ids)
            .filter(|(n, _)| n.0 == 0)
            .map(|(_, &id)| id)
            .collect();
        assert!(t0.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn shared_tenants_are_packed_together_after_the_others() {
        let layout = NodeLayout {
            dims: 64,
            m: 16,
            half: false,
        };
        // 500 tenants of 3 nodes (packed) and one of 100 (its own pages), interleaved.
        let mut nodes: Vec<(TenantOrd, u8)> = (0..1500u32).map(|i| (1 + i % 500, 0)).collect();
        nodes.extend((0..100).map(|_| (0, 0)));
        let p = layout.pack_by_tenant(&nodes, |t| t != 0, 1);
        let own: std::collections::HashSet<u32> = p.chains[&0].iter().copied().collect();
        assert_eq!(p.chains.len(), 1);
        let mut used = std::collections::HashMap::<u32, usize>::new();
        for (&(tenant, level), &id) in nodes.iter().zip(&p.ids) {
            let (block, _) = node_position(id);
            assert_eq!(
                own.contains(&block),
                tenant == 0,
                "own pages hold only their tenant"
            );
            if tenant != 0 {
                assert!(p.shared.contains(&block));
            }
            *used.entry(block).or_default() += layout.space(level);
        }
        assert!(used.values().all(|&u| u <= PAGE_ITEM_SPACE));
        // Packed: as few pages as the bytes need.
        let bytes = 1500 * layout.space(0);
        assert_eq!(
            p.shared.len(),
            bytes.div_ceil(PAGE_ITEM_SPACE / layout.space(0) * layout.space(0))
        );
        assert_eq!(
            *p.shared.first().unwrap(),
            *p.chains[&0].last().unwrap() + 1
        );
    }

    #[test]
    fn large_vectors_limit_levels() {
        assert_eq!(
            NodeLayout {
                dims: 128,
                m: 16,
                half: false
            }
            .max_level(),
            Some(MAX_LEVEL)
        );
        assert!(
            NodeLayout {
                dims: 1536,
                m: 16,
                half: false
            }
            .max_level()
            .unwrap()
                >= 8
        );
        assert_eq!(
            NodeLayout {
                dims: 2000,
                m: 16,
                half: false
            }
            .max_level(),
            None
        );
    }

    #[test]
    fn half_precision_doubles_the_dimensions_a_page_holds() {
        assert_eq!(NodeLayout::max_dims(16, false), 1984);
        assert_eq!(NodeLayout::max_dims(16, true), 3962);
        // The table in docs/sql-reference.md.
        let limits: Vec<_> = [8, 32]
            .iter()
            .map(|&m| {
                (
                    NodeLayout::max_dims(m, false),
                    NodeLayout::max_dims(m, true),
                )
            })
            .collect();
        assert_eq!(limits, vec![(2008, 4010), (1936, 3866)]);
        for half in [false, true] {
            let most = NodeLayout::max_dims(16, half);
            let fits = |dims| NodeLayout { dims, m: 16, half }.max_level().is_some();
            assert!(fits(most) && !fits(most + 1));
        }
        let auto = |dims| NodeLayout::choose(dims, 16, Storage::Auto).map(|l| l.half);
        assert_eq!(auto(1984), Some(false));
        assert_eq!(auto(1985), Some(true));
        assert_eq!(auto(3072), Some(true));
        assert!(auto(3962).is_some());
        assert_eq!(auto(3963), None);
        assert_eq!(
            NodeLayout::choose(16, 16, Storage::Half).map(|l| l.half),
            Some(true)
        );
        assert_eq!(NodeLayout::choose(2000, 16, Storage::Full), None);
        assert_eq!(
            NodeLayout::choose(2000, 8, Storage::Full).map(|l| l.half),
            Some(false)
        );
    }

    #[test]
    fn half_precision_nodes_round_trip() {
        let layout = NodeLayout {
            dims: 3,
            m: 4,
            half: true,
        };
        assert_eq!(layout.size(0), 20 + 4 + 12 + 6 + 8 * 6);
        let mut buf = vec![0u8; layout.size(1)];
        let v = [1.0, -2.5, 0.1];
        let mut n = NodeMut::init(&mut buf, layout, node_id(7, 3), 42, 1, &v);
        n.set_neighbors(1, &[node_id(1, 1)]);
        let r = NodeRef::new(&buf, layout).unwrap();
        let mut scratch = Vec::new();
        let back = r.vector(&mut scratch).to_vec();
        assert_eq!(&back[..2], &v[..2]);
        assert!((back[2] - 0.1).abs() < 1e-4 && back[2] != 0.1);
        let rounding = r.rounding();
        assert!(rounding.l2 >= (back[2] - 0.1).abs() && rounding.l2 < 1e-4);
        assert_eq!(r.neighbors(1).collect::<Vec<_>>(), vec![node_id(1, 1)]);
        // Full precision reads in place and has no rounding.
        let mut full = vec![0u8; L.size(0)];
        NodeMut::init(&mut full, L, 1, 1, 0, &[1.0, 2.0, 3.0, 4.0, 0.1]);
        let r = NodeRef::new(&full, L).unwrap();
        assert_eq!(r.vector(&mut scratch), &[1.0, 2.0, 3.0, 4.0, 0.1]);
        assert_eq!(r.rounding(), Rounding::default());
    }

    #[test]
    fn directory_entries_round_trip() {
        let mut e = DirEntry::new(b"acme-corp").unwrap();
        assert_eq!(DirEntry::from_bytes(&e.to_bytes()).unwrap(), e);
        e.entry = Some((node_id(12, 3), 4));
        e.first_block = 9;
        e.last_block = 40;
        e.nodes = 123_456;
        assert_eq!(DirEntry::from_bytes(&e.to_bytes()).unwrap(), e);
        e.stale = true;
        assert_eq!(DirEntry::from_bytes(&e.to_bytes()).unwrap(), e);
        e.packed_head = Some(node_id(70_000, 17));
        assert_eq!(DirEntry::from_bytes(&e.to_bytes()).unwrap(), e);
        let longest = DirEntry::new(&[b'x'; MAX_KEY]).unwrap();
        assert_eq!(DirEntry::from_bytes(&longest.to_bytes()).unwrap(), longest);
        assert!(DirEntry::new(&[b'x'; MAX_KEY + 1]).is_none());
        let mut bad = e.to_bytes();
        bad[0] = 64;
        assert!(DirEntry::from_bytes(&bad).is_err());
    }

    #[test]
    fn directory_pages_hold_whole_entries_and_ordinals_map_back() {
        const { assert!(DIR_HEADER + DIR_ENTRIES_PER_PAGE * DIR_ENTRY_SIZE <= PAGE_ITEM_SPACE) };
        const { assert!(DIR_ENTRIES_PER_PAGE >= 80) };
        let mut contents = vec![0u8; PAGE_ITEM_SPACE];
        set_dir_count(&mut contents, 5);
        assert_eq!(dir_count(&contents), 5);
        assert_eq!(dir_slot(0).start, DIR_HEADER);
        assert_eq!(
            dir_slot(DIR_ENTRIES_PER_PAGE - 1).end,
            DIR_HEADER + DIR_ENTRIES_PER_PAGE * DIR_ENTRY_SIZE
        );
        for o in [0, 1, DIR_ENTRIES_PER_PAGE as TenantOrd, 99_999] {
            let (page, slot) = ordinal_position(o);
            assert_eq!(ordinal(page, slot), o);
        }
        let sp = special_linked(KIND_NODES, 77);
        assert_eq!((page_kind(&sp), special_next(&sp)), (Some(KIND_NODES), 77));
        assert_eq!(special_next(&special(KIND_META)), 0);
    }

    #[test]
    fn meta_round_trip() {
        let m = Meta {
            shared_page: 9,
            dims: 1536,
            m: 16,
            ef_construction: 64,
            metric: Metric::Cosine,
            tenant_key: true,
            half: true,
            directory: 77,
            tenants: 1000,
        };
        assert_eq!(Meta::from_bytes(&m.to_bytes()).unwrap(), m);
        assert_eq!(
            &m.to_bytes()[4..8],
            &5u32.to_le_bytes(),
            "half precision is format 5"
        );
        let plain = Meta {
            shared_page: 0,
            tenant_key: false,
            half: false,
            directory: 0,
            ..m
        };
        assert_eq!(Meta::from_bytes(&plain.to_bytes()).unwrap(), plain);
        let mut bad = m.to_bytes();
        bad[4] = 9;
        assert!(Meta::from_bytes(&bad).unwrap_err().contains("REINDEX"));
    }
}
