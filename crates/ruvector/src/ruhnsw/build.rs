//! `ambuild` and `ambuildempty`: CREATE INDEX and REINDEX.
//!
//! The graph is built in memory with the core's [`MemoryStore`] while it fits in
//! `maintenance_work_mem`, then written out page by page in one pass and WAL-logged as full
//! page images. If the table's vectors do not fit, the part built so far is written out and
//! the rest is inserted through the page store, one WAL record per change, as `INSERT` does.
//!
//! The in-memory graph is linked in parallel when PostgreSQL plans parallel workers for the
//! build (`plan_create_index_workers`: `max_parallel_maintenance_workers`, the table's size
//! and its `parallel_workers` option, `maintenance_work_mem`): the table scan adds the
//! nodes unlinked, then the backend and one thread per planned worker link them together
//! ([`ParallelLink`]). The threads run the core's code only, never PostgreSQL's, with every
//! signal blocked; the backend's own thread polls for interrupts and reports progress.
//!
//! Progress is reported in `pg_stat_progress_create_index`: the table scan's blocks, the
//! tuples loaded (then linked), and the phase ("loading tuples", "linking the graph",
//! "writing index pages").

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use ruvector_core::hnsw::page::{self as layout, DirEntry, Meta, NodeLayout, NodeMut, Storage};
use ruvector_core::hnsw::rounding;
use ruvector_core::hnsw::{GraphStore, Hnsw, MemoryStore, NodeId, ParallelLink, Params, TenantOrd};

use super::directory;
use super::page::{self, Buf};
use super::store::PageStore;
use super::{heap_tid, key_elements, options};
use crate::errors;

/// Build subphases reported in `pg_stat_progress_create_index.phase`.
pub const PHASE_LOAD: i64 = 2;
pub const PHASE_WRITE: i64 = 3;
pub const PHASE_LINK: i64 = 4;

/// `ambuildphasename`.
pub unsafe extern "C-unwind" fn phase_name(phase: i64) -> *mut std::ffi::c_char {
    let name: &'static std::ffi::CStr = match phase {
        PHASE_LOAD => c"loading tuples",
        PHASE_WRITE => c"writing index pages",
        PHASE_LINK => c"linking the graph",
        _ => return std::ptr::null_mut(),
    };
    name.as_ptr() as *mut _
}

fn progress(param: u32, value: i64) {
    // SAFETY: a plain update of this backend's progress slot.
    unsafe { pg_sys::pgstat_progress_update_param(param as i32, value) };
}

/// The index's parameters and node layout for vectors of `dims` dimensions, from its
/// reloptions and operator class (at build time; afterwards they are in the metapage).
pub fn params_for(index: pg_sys::Relation, dims: usize) -> (Params, NodeLayout) {
    let (m, ef_construction) = options::of(index);
    let layout = layout_for(dims, m, options::storage(index));
    (
        graph_params(layout, ef_construction, options::metric(index)),
        layout,
    )
}

/// The node layout for `dims` and `m` under the `storage` option; raises 54000 when no node
/// fits a page.
pub fn layout_for(dims: usize, m: usize, storage: Storage) -> NodeLayout {
    NodeLayout::choose(dims, m, storage).unwrap_or_else(|| {
        no_room(NodeLayout {
            dims,
            m,
            half: true,
        })
    })
}

/// Parameters of a graph with node layout `layout`.
pub fn graph_params(
    layout: NodeLayout,
    ef_construction: usize,
    metric: ruvector_core::hnsw::Metric,
) -> Params {
    let max_level = layout.max_level().unwrap_or_else(|| no_room(layout));
    Params {
        m: layout.m,
        ef_construction,
        metric,
        max_level,
        ..Params::default()
    }
}

/// Raises 54000: a node of `layout` does not fit a page.
fn no_room(layout: NodeLayout) -> ! {
    let NodeLayout { dims, m, .. } = layout;
    errors::index_error(
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        format!("vectors of {dims} dimensions do not fit in a ruhnsw index page with m = {m}"),
        Some(&format!(
            "With m = {m} a page holds {} dimensions in full precision and {} in half precision \
             (storage = 'auto', the default, switches by itself). Lower m, or reduce the dimensions.",
            NodeLayout::max_dims(m, false),
            NodeLayout::max_dims(m, true)
        )),
    )
}

/// Refuses (22003) a vector whose elements half-precision storage cannot hold, as the index
/// stores it: a cosine index scales vectors to unit length (all fit, unless the length
/// itself overflows single precision).
pub fn check_storable(layout: NodeLayout, metric: ruvector_core::hnsw::Metric, vector: &[f32]) {
    if !layout.half {
        return;
    }
    if let Some((i, _)) = rounding::first_unstorable(&metric.prepare(vector)) {
        let x = vector[i];
        errors::index_error(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "element {} of the vector is {x}, out of range for a ruhnsw index that stores \
                 half-precision elements",
                i + 1
            ),
            Some(&format!(
                "Half precision holds values up to ±{}. Scale the vectors, or build the index \
                 WITH (storage = 'full') (up to {} dimensions with m = {}).",
                rounding::HALF_MAX,
                NodeLayout::max_dims(layout.m, false),
                layout.m
            )),
        );
    }
}

/// The dimensions of the indexed column's `vector(n)` (or `bit(n)`) type, if it has a
/// modifier. A bit string key must have one length: `bit varying` is refused, and so are
/// more than 64,000 bits (pgvector's limits and messages).
fn declared_dims(index: pg_sys::Relation) -> Option<usize> {
    let (mut typid, mut typmod, mut coll) = (pg_sys::Oid::INVALID, -1, pg_sys::Oid::INVALID);
    // SAFETY: the index is open; attribute 1 exists.
    unsafe { pg_sys::get_atttypetypmodcoll((*index).rd_id, 1, &mut typid, &mut typmod, &mut coll) };
    let dims = crate::fmgr::typmod_dims(typmod);
    if typid == pg_sys::VARBITOID {
        errors::index_error(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "type not supported for hnsw index".into(),
            Some("Index bit strings of one length: cast the column, as in ((val::bit(n)) bit_hamming_ops)."),
        );
    }
    if typid == pg_sys::BITOID && dims.is_some_and(|d| d > super::MAX_BITS) {
        errors::index_error(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "column cannot have more than 64000 dimensions for hnsw index".into(),
            Some("ruhnsw stores each bit as an element: up to 3,962 bits fit a page with m = 16."),
        );
    }
    dims
}

struct BuildState {
    index: pg_sys::Relation,
    dims: Option<usize>,
    /// The node layout, once the dimensions are known.
    layout: Option<NodeLayout>,
    memory: Option<Hnsw<MemoryStore>>,
    disk: Option<Hnsw<PageStore>>,
    budget: usize,
    used: usize,
    tuples: f64,
    /// The table's estimated rows (the load phase's `tuples_total`).
    estimate: i64,
    /// Threads that link the in-memory graph; with one, each node is linked as it is added.
    threads: usize,
    /// Tenant keys by ordinal while the graph is in memory.
    keys: Vec<Vec<u8>>,
    ordinals: std::collections::HashMap<Vec<u8>, TenantOrd>,
    /// The index's metric (zero vectors stay out of a cosine index).
    metric: ruvector_core::hnsw::Metric,
    /// The dedicated indexes beside this one: their tenants' rows stay out.
    dedicated: std::rc::Rc<super::dedicated::Dedicated>,
    /// Tenants (in memory) whose rows a dedicated index holds: their entries are stale.
    stale: std::collections::HashSet<TenantOrd>,
    /// Per ordinal (in memory): the tenant's nodes are packed with other shared tenants'.
    packed: Vec<bool>,
}

impl BuildState {
    /// The ordinal of the tenant with `key` in the graph being built.
    fn ordinal(&mut self, key: &[u8]) -> TenantOrd {
        if self.disk.is_some() {
            return directory::find_or_add(self.index, key);
        }
        if let Some(&o) = self.ordinals.get(key) {
            return o;
        }
        if key.len() > layout::MAX_KEY {
            directory::key_too_long(key);
        }
        let o = self.keys.len() as TenantOrd;
        self.keys.push(key.to_vec());
        self.packed.push(super::packed_tenant(key));
        self.ordinals.insert(key.to_vec(), o);
        o
    }

    /// Leaves the row of tenant `key` to its dedicated index; the tenant's entry here is
    /// stale (it answers no search while the dedicated index exists).
    fn leave_out(&mut self, key: &[u8]) {
        let tenant = self.ordinal(key);
        if self.disk.is_some() {
            directory::update(self.index, tenant, |e| e.stale = true);
        } else {
            self.stale.insert(tenant);
        }
    }

    fn add(&mut self, vector: &[f32], key: &[u8], tid: u64) {
        if self.dedicated.keeps_rows(key) {
            return self.leave_out(key);
        }
        if !self.metric.indexes(vector) {
            return;
        }
        let dims = *self.dims.get_or_insert(vector.len());
        if vector.len() != dims {
            errors::vector_error(
                ruvector_core::VectorError::DifferentDimensions {
                    left: dims,
                    right: vector.len(),
                },
                None,
            );
        }
        if self.memory.is_none() && self.disk.is_none() {
            let (params, layout) = params_for(self.index, dims);
            self.layout = Some(layout);
            self.memory = Some(Hnsw::new(MemoryStore::new(dims), params));
        }
        let layout = self.layout.expect("set with the graph");
        check_storable(layout, self.metric, vector);
        let tenant = self.ordinal(key);
        if let Some(h) = &mut self.memory {
            let id = if self.threads > 1 {
                h.push(vector, tenant, tid)
            } else {
                h.insert(vector, tenant, tid)
            };
            let m = h.params().m;
            self.used += MemoryStore::node_bytes(dims, m, h.store().level(id));
            if self.used > self.budget {
                let h = self.memory.take().expect("in memory");
                let params = *h.params();
                write_graph(
                    self.index,
                    linked(h, self.threads),
                    layout,
                    &self.keys,
                    &self.stale,
                    &self.packed,
                );
                let mut disk = Hnsw::new(PageStore::new(self.index, layout), params);
                disk.reseed(params.seed ^ self.tuples as u64);
                self.disk = Some(disk);
                // Back to loading (a parallel build reported linking meanwhile).
                progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_LOAD);
                progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL, self.estimate);
                pgrx::notice!(
                    "ruhnsw graph no longer fits in maintenance_work_mem after {} tuples; \
                     the rest is inserted page by page (slower)",
                    self.tuples as u64 + 1
                );
            }
        } else if let Some(h) = &mut self.disk {
            h.store_mut().set_packed(super::packed_tenant(key));
            h.insert(vector, tenant, tid);
        }
        self.tuples += 1.0;
        progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, self.tuples as i64);
    }
}

unsafe extern "C-unwind" fn build_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    // SAFETY: PostgreSQL calls this with the BuildState pointer we passed and the index's
    // key columns; the guard turns Rust panics into errors.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            if *isnull {
                return;
            }
            let state = &mut *(state as *mut BuildState);
            let Some(tenant) = super::tuple_tenant(state.index, values, isnull) else {
                return;
            };
            let vector = key_elements(state.index, *values);
            state.add(&vector, &tenant, heap_tid(tid));
        })
    }
}

/// The graph's store with every node linked: as it is when its nodes were inserted one by
/// one (`threads` 1), else linked now by the backend and `threads - 1` more threads.
fn linked(h: Hnsw<MemoryStore>, threads: usize) -> MemoryStore {
    if threads <= 1 {
        return h.into_store();
    }
    let params = *h.params();
    let build = ParallelLink::new(h.into_store(), params);
    pgrx::debug1!(
        "ruhnsw: linking {} nodes with {threads} threads",
        build.len()
    );
    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_LINK);
    progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL, build.len() as i64);
    progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, 0);
    loop {
        let mut reported = 0;
        build.run(threads, block_signals, |done| {
            if done >= reported + 1024 {
                progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, done as i64);
                reported = done;
            }
            !interrupt_pending()
        });
        // Every thread has returned: a cancel may raise its error now.
        pgrx::check_for_interrupts!();
        if build.finished() {
            break;
        }
        build.resume(); // the interrupt raised no error (a barrier, a config reload)
    }
    build.into_store()
}

/// Whether the backend has an interrupt to process (`CHECK_FOR_INTERRUPTS` would act).
fn interrupt_pending() -> bool {
    // SAFETY: plain reads of the backend's interrupt flags, on the backend's thread.
    unsafe {
        std::ptr::read_volatile(&raw const pg_sys::InterruptPending) != 0
            && std::ptr::read_volatile(&raw const pg_sys::InterruptHoldoffCount) == 0
            && std::ptr::read_volatile(&raw const pg_sys::CritSectionCount) == 0
    }
}

/// Blocks every signal on the calling thread, so that the backend's signal handlers run on
/// the backend's own thread only.
fn block_signals() {
    // SAFETY: sigfillset initializes the set; pthread_sigmask changes this thread's mask.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// `ambuild`.
pub unsafe extern "C-unwind" fn ambuild(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    info: *mut pg_sys::IndexInfo,
) -> *mut pg_sys::IndexBuildResult {
    // SAFETY: PostgreSQL's build protocol: both relations are open and locked, the index
    // is empty. The guard turns panics into errors.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            if (*(*index).rd_index).indnkeyatts > 2 {
                errors::index_error(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "a ruhnsw index has at most two key columns: the vector and the tenant".into(),
                    Some("Index the vector, optionally followed by the tenant column."),
                );
            }
            if page::nblocks(index) != 0 {
                pgrx::error!("index \"{}\" already contains data", page::rel_name(index));
            }
            let dims = declared_dims(index);
            if let Some(d) = dims {
                params_for(index, d); // fail early on unsupported sizes
            } else {
                options::of(index);
            }
            write_empty_meta(index, pg_sys::ForkNumber::MAIN_FORKNUM, dims.unwrap_or(0));
            let mut state = BuildState {
                index,
                dims,
                layout: None,
                memory: None,
                disk: None,
                budget: pg_sys::maintenance_work_mem as usize * 1024,
                used: 0,
                tuples: 0.0,
                estimate: (*(*heap).rd_rel).reltuples.max(0.0) as i64,
                threads: pg_sys::plan_create_index_workers((*heap).rd_id, (*index).rd_id).max(0)
                    as usize
                    + 1,
                keys: Vec::new(),
                ordinals: Default::default(),
                metric: options::metric(index),
                dedicated: super::dedicated::of(index),
                stale: Default::default(),
                packed: Vec::new(),
            };
            if super::tenant_keyed(index) {
                crate::tenancy::catalog::ensure_loaded(); // the tenants' levels
            }
            progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_LOAD);
            progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL, state.estimate);
            pg_sys::table_index_build_scan(
                heap,
                index,
                info,
                true,
                true,
                Some(build_callback),
                &mut state as *mut BuildState as *mut std::ffi::c_void,
                std::ptr::null_mut(),
            );
            if let Some(h) = state.memory.take() {
                let store = linked(h, state.threads);
                progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_WRITE);
                write_graph(
                    index,
                    store,
                    state.layout.expect("set with the graph"),
                    &state.keys,
                    &state.stale,
                    &state.packed,
                );
            } else if state.disk.is_none() && !state.keys.is_empty() {
                // Only tenants whose rows are in dedicated indexes: their stale entries.
                let first = page::nblocks(index);
                write_directory(index, first, &state.keys, &state.stale, |_, e| e);
            }
            let result = pg_sys::palloc0(std::mem::size_of::<pg_sys::IndexBuildResult>())
                as *mut pg_sys::IndexBuildResult;
            (*result).heap_tuples = state.tuples;
            (*result).index_tuples = state.tuples;
            result
        })
    }
}

/// Writes the metapage of an empty index with `dims` (0: learned from the first vector).
fn write_empty_meta(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type, dims: usize) {
    let (m, ef_construction) = options::of(index);
    let meta = Meta {
        shared_page: 0,
        dims: dims as u32,
        m: m as u16,
        ef_construction: ef_construction as u16,
        metric: options::metric(index),
        tenant_key: super::tenant_keyed(index),
        half: dims > 0 && params_for(index, dims).1.half,
        directory: 0,
        tenants: 0,
    };
    // SAFETY: a new, empty fork of an index being built: nobody else reads it; the page is
    // initialized, filled, marked dirty and WAL-logged as a full image.
    unsafe {
        let buf = pg_sys::ReadBufferExtended(
            index,
            fork,
            pg_sys::InvalidBlockNumber,
            pg_sys::ReadBufferMode::RBM_NORMAL,
            std::ptr::null_mut(),
        );
        pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
        let pg = pg_sys::BufferGetPage(buf);
        page::init_page(pg, layout::KIND_META);
        page::write_meta(pg, &meta);
        pg_sys::MarkBufferDirty(buf);
        if page::needs_wal(index) || fork == pg_sys::ForkNumber::INIT_FORKNUM {
            pg_sys::log_newpage_buffer(buf, true);
        }
        pg_sys::UnlockReleaseBuffer(buf);
    }
}

/// Writes an in-memory graph to new pages after the metapage: each tenant's nodes on its
/// own chain of pages, then the tenant directory (`keys[ordinal]` is each tenant's key), and
/// points the metapage at it.
fn write_graph(
    index: pg_sys::Relation,
    store: MemoryStore,
    layout: NodeLayout,
    keys: &[Vec<u8>],
    stale: &std::collections::HashSet<TenantOrd>,
    packed: &[bool],
) {
    let n = store.len();
    let first = page::nblocks(index);
    if n == 0 {
        return write_directory(index, first, keys, stale, |_, e| e);
    }
    let nodes: Vec<(TenantOrd, u8)> = (0..n as NodeId)
        .map(|id| (store.tenant(id), store.level(id)))
        .collect();
    let placed = layout.pack_by_tenant(
        &nodes,
        |t| packed.get(t as usize).copied().unwrap_or(false),
        first,
    );
    let (ids, chains) = (&placed.ids, &placed.chains);
    let map = |id: NodeId| ids[id as usize];
    // Each packed tenant's nodes linked newest to oldest, in the order they were placed.
    let mut prev: Vec<Option<NodeId>> = vec![None; n];
    let mut packed_head: std::collections::HashMap<TenantOrd, NodeId> = Default::default();
    for (i, &(tenant, _)) in nodes.iter().enumerate() {
        if packed.get(tenant as usize).copied().unwrap_or(false) {
            prev[i] = packed_head.insert(tenant, ids[i]);
        }
    }
    // Node ids in page order, so pages are filled one after the other.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| ids[i]);
    let next_of: std::collections::HashMap<u32, u32> = chains
        .values()
        .flat_map(|blocks| blocks.windows(2).map(|w| (w[0], w[1])))
        .collect();
    let mut bytes = Vec::new();
    let mut current: Option<Buf> = None;
    for i in order {
        let target = ids[i];
        let (block, offset) = layout::node_position(target);
        if current.as_ref().is_none_or(|b| b.block() != block) {
            if let Some(b) = current.take() {
                // SAFETY: the buffer is exclusively locked by `b`.
                unsafe { pg_sys::MarkBufferDirty(b.buffer()) };
            }
            let b = Buf::extend(index);
            assert_eq!(b.block(), block, "node pages are allocated in order");
            page::init_page(b.page(), layout::KIND_NODES);
            page::set_next_block(b.page(), next_of.get(&block).copied().unwrap_or(0));
            current = Some(b);
            page::delay_point();
        }
        let id = i as NodeId;
        let level = store.level(id);
        bytes.resize(layout.size(level), 0);
        let vector = store.vector(id).expect("builds delete nothing");
        let mut node = NodeMut::init(
            &mut bytes,
            layout,
            store.payload(id),
            store.tenant(id),
            level,
            &vector,
        );
        node.set_prev(prev[i]);
        for layer in 0..=level {
            let links: Vec<NodeId> = store.neighbors(id, layer).into_iter().map(map).collect();
            node.set_neighbors(layer, &links);
        }
        let page = current.as_ref().expect("a page").page();
        let got = page::add_item(page, &bytes);
        assert_eq!(got, Some(offset), "node placement follows the packing");
    }
    if let Some(b) = current.take() {
        // SAFETY: the buffer is exclusively locked by `b`.
        unsafe { pg_sys::MarkBufferDirty(b.buffer()) };
    }
    write_directory(index, first, keys, stale, |ordinal, entry| {
        let blocks = chains.get(&ordinal).map(Vec::as_slice).unwrap_or_default();
        DirEntry {
            entry: store.entry(ordinal).map(|(node, level)| (map(node), level)),
            first_block: blocks.first().copied().unwrap_or(0),
            last_block: blocks.last().copied().unwrap_or(0),
            nodes: store.tenant_len(ordinal) as u64,
            packed_head: packed_head.get(&ordinal).copied(),
            ..entry
        }
    });
    page::update_meta(index, |meta| {
        meta.dims = layout.dims as u32;
        meta.half = layout.half;
        meta.shared_page = placed.shared.last().copied().unwrap_or(0);
    });
}

/// Writes the tenant directory of a new index (one entry per key, completed by `fill`,
/// stale where `stale` says) after its pages, logs every page from `first` on, and points
/// the metapage at the directory.
fn write_directory(
    index: pg_sys::Relation,
    first: u32,
    keys: &[Vec<u8>],
    stale: &std::collections::HashSet<TenantOrd>,
    fill: impl Fn(TenantOrd, DirEntry) -> DirEntry,
) {
    let entries: Vec<DirEntry> = keys
        .iter()
        .enumerate()
        .map(|(ordinal, key)| {
            let ordinal = ordinal as TenantOrd;
            let entry = DirEntry {
                stale: stale.contains(&ordinal),
                ..DirEntry::new(key).expect("tenant keys are checked when added")
            };
            fill(ordinal, entry)
        })
        .collect();
    let dir = directory::write_new(index, &entries);
    let last = page::nblocks(index);
    if page::needs_wal(index) {
        // SAFETY: the pages were written through the buffer manager and are not logged yet.
        unsafe {
            pg_sys::log_newpage_range(index, pg_sys::ForkNumber::MAIN_FORKNUM, first, last, true)
        };
    }
    page::update_meta(index, |meta| {
        meta.directory = dir;
        meta.tenants = entries.len() as u32;
    });
}

/// `ambuildempty`: the init fork of an unlogged index (a metapage).
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    // SAFETY: the guard turns panics into errors.
    unsafe {
        pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| {
            write_empty_meta(
                index,
                pg_sys::ForkNumber::INIT_FORKNUM,
                declared_dims(index).unwrap_or(0),
            );
        })
    }
}
