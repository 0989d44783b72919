//! Buffers, WAL records and the metapage of a `ruhnsw` index.
//!
//! Every change to an index page after the build goes through [`WalRecord`]: it starts a
//! GenericXLog record, hands out the page images to modify, and either finishes the record
//! (the changes become visible and are logged atomically) or, when dropped unfinished (an
//! error or panic unwinding, or a change abandoned), aborts it and the pages stay as they
//! were. Buffers are pinned and locked by [`Buf`], which unlocks and unpins when dropped.

use pgrx::pg_sys;
use ruvector_core::hnsw::page::{self as layout, Meta, KIND_META, KIND_NODES, META_SIZE};
use ruvector_core::hnsw::NodeId;

use crate::errors;

/// A pinned, locked buffer of an index.
pub struct Buf {
    buf: pg_sys::Buffer,
    /// The buffer's block, kept: a scan compares it once per node it reads.
    block: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    Share,
    Exclusive,
}

/// The buffer each index block was last found in, per backend. A search visits hundreds of
/// nodes; `ReadRecentBuffer` pins a block through such a hint without the shared buffer
/// mapping table (its hash lookup and partition lock were a fifth of a search's time). The
/// hint is checked against the buffer's tag, so a stale one (the block was evicted, the index
/// rebuilt) only costs the fallback to a normal read. Hints are kept per index file in an
/// array indexed by block (4 bytes per block; a hash map's lookups missed the CPU caches).
mod recent {
    use std::cell::RefCell;

    use pgrx::pg_sys;

    /// Index files with hints kept; the oldest is dropped beyond this.
    const FILES: usize = 8;
    /// Blocks past this have no hints (16 MiB of hints, a 32 GiB index).
    const BLOCKS: u32 = 1 << 22;

    /// Hints of one index file: `buffers[block]`, 0 for none.
    struct Hints {
        file: u32,
        buffers: Vec<pg_sys::Buffer>,
    }

    thread_local! {
        static HINTS: RefCell<Vec<Hints>> = const { RefCell::new(Vec::new()) };
    }

    /// Runs `f` with a lookup of the hints of `index`'s file (`None`: no hint).
    pub fn with_hints<R>(
        index: pg_sys::Relation,
        f: impl FnOnce(&dyn Fn(u32) -> Option<pg_sys::Buffer>) -> R,
    ) -> R {
        let file = super::file_number(index);
        HINTS.with(|h| {
            let h = h.borrow();
            let buffers = h.iter().find(|x| x.file == file).map(|x| &x.buffers[..]);
            f(&|block| {
                buffers
                    .and_then(|b| b.get(block as usize).copied())
                    .filter(|&b| b > 0)
            })
        })
    }

    fn remember(file: u32, block: u32, buf: pg_sys::Buffer) {
        if block >= BLOCKS {
            return;
        }
        HINTS.with(|h| {
            let mut h = h.borrow_mut();
            let at = match h.iter().position(|x| x.file == file) {
                Some(at) => at,
                None => {
                    if h.len() >= FILES {
                        h.remove(0);
                    }
                    h.push(Hints {
                        file,
                        buffers: Vec::new(),
                    });
                    h.len() - 1
                }
            };
            let buffers = &mut h[at].buffers;
            if buffers.len() <= block as usize {
                buffers.resize(block as usize + 1, 0);
            }
            buffers[block as usize] = buf;
        });
    }

    /// Pins `block` of `index` (main fork).
    pub fn read(index: pg_sys::Relation, block: u32) -> pg_sys::Buffer {
        // SAFETY: `index` is an open relation.
        #[cfg(feature = "pg15")]
        let locator = unsafe { (*index).rd_node };
        // SAFETY: as above.
        #[cfg(feature = "pg18")]
        let locator = unsafe { (*index).rd_locator };
        if let Some(hint) = with_hints(index, |hint| hint(block)) {
            // SAFETY: a shared buffer number (only those are kept); ReadRecentBuffer pins it
            // only if it holds this block of this relation.
            if unsafe {
                pg_sys::ReadRecentBuffer(locator, pg_sys::ForkNumber::MAIN_FORKNUM, block, hint)
            } {
                return hint;
            }
        }
        // SAFETY: `index` is an open relation; ReadBufferExtended raises an error for a
        // block past the end.
        let buf = unsafe {
            pg_sys::ReadBufferExtended(
                index,
                pg_sys::ForkNumber::MAIN_FORKNUM,
                block,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            )
        };
        // Local buffers (temporary indexes) are negative and not worth a hint.
        if buf > 0 {
            remember(super::file_number(index), block, buf);
        }
        buf
    }
}

/// Asks the CPU to start loading the nodes `ids` of `index` (each up to `node_bytes` long)
/// and what reading them takes: their buffers' descriptors and line pointers, then the node
/// tuples the line pointers point to. Only blocks with a buffer hint are prefetched. Nothing
/// is pinned or locked: the buffers may hold other pages by now, and then the wrong memory
/// is loaded, which costs a little time and nothing else.
pub fn prefetch_nodes(index: pg_sys::Relation, ids: &[NodeId], node_bytes: usize) {
    const MAX: usize = 256;
    let header = std::mem::offset_of!(pg_sys::PageHeaderData, pd_linp);
    let item = std::mem::size_of::<pg_sys::ItemIdData>();
    let page_size = pg_sys::BLCKSZ as usize;
    let mut at: [(usize, *const u32); MAX] = [(0, std::ptr::null()); MAX];
    let mut n = 0;
    recent::with_hints(index, |hint| {
        for &id in ids.iter().take(MAX) {
            let (block, offset) = layout::node_position(id);
            let Some(buf) = hint(block) else { continue };
            let i = buf as usize - 1;
            // SAFETY: `buf` is a shared buffer number (hints hold only those), so both
            // addresses lie in the buffer pool's shared memory; nothing is read here.
            let (desc, page) = unsafe {
                (
                    pg_sys::BufferDescriptors.add(i) as *const u8,
                    pg_sys::BufferBlocks.add(i * page_size) as *const u8,
                )
            };
            let line = page.wrapping_add(header + item * (offset as usize).saturating_sub(1));
            ruvector_core::distance::prefetch_bytes(desc, 1);
            ruvector_core::distance::prefetch_bytes(line, item);
            if line as usize + item <= page as usize + page_size {
                at[n] = (page as usize, line as *const u32);
                n += 1;
            }
        }
    });
    for &(page, line) in &at[..n] {
        // SAFETY: `line` is an aligned u32 inside a shared buffer page (checked above); it is
        // read atomically, as other backends may change it.
        let lp = unsafe { std::sync::atomic::AtomicU32::from_ptr(line as *mut u32) }
            .load(std::sync::atomic::Ordering::Relaxed);
        let off = (lp & 0x7fff) as usize; // lp_off: the low 15 bits
        if off < page_size {
            ruvector_core::distance::prefetch_bytes(
                (page + off) as *const u8,
                node_bytes.min(page_size - off),
            );
        }
    }
}

/// The relation's file number: a REINDEX or TRUNCATE gives the index a new one.
pub fn file_number(rel: pg_sys::Relation) -> u32 {
    // SAFETY: `rel` is an open relation.
    #[cfg(feature = "pg15")]
    let number = unsafe { (*rel).rd_node.relNode };
    // SAFETY: as above.
    #[cfg(feature = "pg18")]
    let number = unsafe { (*rel).rd_locator.relNumber };
    u32::from(number)
}

impl Buf {
    /// Reads `block` of `index` and locks it.
    pub fn read(index: pg_sys::Relation, block: u32, lock: Lock) -> Buf {
        // The buffer is pinned until Drop.
        let b = Buf {
            buf: recent::read(index, block),
            block,
        };
        b.lock(lock);
        b
    }

    /// Adds a new block to `index` and locks it exclusively (uninitialized page).
    pub fn extend(index: pg_sys::Relation) -> Buf {
        // SAFETY: the relation extension lock serializes extensions of this index, as
        // PostgreSQL's own index AMs do; P_NEW allocates the next block.
        let buf = unsafe {
            pg_sys::LockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
            let buf = pg_sys::ReadBufferExtended(
                index,
                pg_sys::ForkNumber::MAIN_FORKNUM,
                pg_sys::InvalidBlockNumber,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            );
            pg_sys::UnlockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
            buf
        };
        // SAFETY: the buffer is pinned.
        let block = unsafe { pg_sys::BufferGetBlockNumber(buf) };
        let b = Buf { buf, block };
        b.lock(Lock::Exclusive);
        b
    }

    fn lock(&self, lock: Lock) {
        let mode = match lock {
            Lock::Share => pg_sys::BUFFER_LOCK_SHARE,
            Lock::Exclusive => pg_sys::BUFFER_LOCK_EXCLUSIVE,
        };
        // SAFETY: the buffer is pinned by this value.
        unsafe { pg_sys::LockBuffer(self.buf, mode as i32) };
    }

    pub fn buffer(&self) -> pg_sys::Buffer {
        self.buf
    }

    pub fn block(&self) -> u32 {
        self.block
    }

    /// The page in the buffer (read it under the lock this value holds).
    pub fn page(&self) -> pg_sys::Page {
        // SAFETY: the buffer is pinned and valid.
        unsafe { pg_sys::BufferGetPage(self.buf) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: pinned and locked by this value, released once.
        unsafe { pg_sys::UnlockReleaseBuffer(self.buf) };
    }
}

/// One GenericXLog record (see the module documentation).
pub struct WalRecord {
    state: *mut pg_sys::GenericXLogState,
}

impl WalRecord {
    pub fn start(index: pg_sys::Relation) -> WalRecord {
        // SAFETY: `index` is open; the state is palloc'd in the current memory context.
        let state = unsafe { pg_sys::GenericXLogStart(index) };
        WalRecord { state }
    }

    /// Registers an exclusively locked buffer; returns the page image to modify. A new page
    /// is logged as a full image.
    pub fn register(&mut self, buf: &Buf, new_page: bool) -> pg_sys::Page {
        let flags = if new_page {
            pg_sys::GENERIC_XLOG_FULL_IMAGE as i32
        } else {
            0
        };
        // SAFETY: the state is live (not finished or aborted: both consume self); the
        // buffer is pinned and exclusively locked by `buf`, which outlives this record.
        unsafe { pg_sys::GenericXLogRegisterBuffer(self.state, buf.buffer(), flags) }
    }

    /// Applies and logs the changes.
    pub fn finish(mut self) {
        let state = std::mem::replace(&mut self.state, std::ptr::null_mut());
        // SAFETY: a live state; the registered buffers are still locked by the caller.
        unsafe { pg_sys::GenericXLogFinish(state) };
    }
}

impl Drop for WalRecord {
    fn drop(&mut self) {
        if !self.state.is_null() {
            // SAFETY: a live, unfinished state; aborting discards the page images.
            unsafe { pg_sys::GenericXLogAbort(self.state) };
        }
    }
}

/// Initializes `page` as an empty `ruhnsw` page of `kind`.
pub fn init_page(page: pg_sys::Page, kind: u8) {
    // SAFETY: `page` is a BLCKSZ page image we may write (a new buffer or a registered
    // GenericXLog image); the special area PageInit reserves has SPECIAL_SIZE bytes.
    unsafe {
        pg_sys::PageInit(page, pg_sys::BLCKSZ as usize, layout::SPECIAL_SIZE);
        let special = pgrx::pg_sys::PageGetSpecialPointer(page) as *mut u8;
        std::ptr::copy_nonoverlapping(
            layout::special(kind).as_ptr(),
            special,
            layout::SPECIAL_SIZE,
        );
    }
}

/// The special area of `page`.
///
/// # Safety
/// `page` is an initialized `ruhnsw` page, locked (or a registered image) while the slice
/// is used.
unsafe fn special_area<'a>(page: pg_sys::Page) -> &'a mut [u8] {
    // SAFETY: guaranteed by the caller; the special area has SPECIAL_SIZE bytes.
    unsafe {
        std::slice::from_raw_parts_mut(
            pg_sys::PageGetSpecialPointer(page) as *mut u8,
            layout::SPECIAL_SIZE,
        )
    }
}

/// The next block of `page`'s chain (a tenant's node pages, or the directory); 0 at the end.
pub fn next_block(page: pg_sys::Page) -> u32 {
    if page_kind(page).is_none() {
        return 0;
    }
    // SAFETY: a locked ruhnsw page.
    layout::special_next(unsafe { special_area(page) })
}

/// Links `page` (an image we may write) to `next` in its chain.
pub fn set_next_block(page: pg_sys::Page, next: u32) {
    let kind = page_kind(page).expect("a ruhnsw page");
    // SAFETY: an initialized ruhnsw page image we may write.
    unsafe { special_area(page) }.copy_from_slice(&layout::special_linked(kind, next));
}

/// The `ruhnsw` page kind of `page`, if it is one.
pub fn page_kind(page: pg_sys::Page) -> Option<u8> {
    // SAFETY: `page` is a locked page; a zeroed (new) page has special size 0.
    unsafe {
        if pg_sys::PageIsNew(page)
            || pg_sys::PageGetSpecialSize(page) as usize != layout::SPECIAL_SIZE
        {
            return None;
        }
        let special = pg_sys::PageGetSpecialPointer(page) as *const u8;
        layout::page_kind(std::slice::from_raw_parts(special, layout::SPECIAL_SIZE))
    }
}

/// Writes `meta` into the metapage image `page`.
pub fn write_meta(page: pg_sys::Page, meta: &Meta) {
    // SAFETY: `page` is an initialized metapage image we may write; the record fits after
    // the page header, and pd_lower is set past it so that full-page images keep it.
    unsafe {
        let contents = pg_sys::PageGetContents(page) as *mut u8;
        std::ptr::copy_nonoverlapping(meta.to_bytes().as_ptr(), contents, META_SIZE);
        let header = page as *mut pg_sys::PageHeaderData;
        (*header).pd_lower = (contents.add(META_SIZE) as usize - page as usize) as u16;
    }
}

/// Reads the metapage record.
pub fn read_meta(index: pg_sys::Relation) -> Meta {
    let buf = Buf::read(index, 0, Lock::Share);
    meta_of(index, buf.page())
}

/// The metapage record of a locked metapage.
pub fn meta_of(index: pg_sys::Relation, page: pg_sys::Page) -> Meta {
    parse_meta(page).unwrap_or_else(|e| errors::index_corrupted(&rel_name(index), e))
}

/// The metapage record of a locked page, or what is wrong with it.
pub fn parse_meta(page: pg_sys::Page) -> Result<Meta, String> {
    if page_kind(page) != Some(KIND_META) {
        return Err("block 0 is not a ruhnsw metapage".into());
    }
    // SAFETY: a metapage has META_SIZE bytes of record after its header.
    let bytes = unsafe {
        std::slice::from_raw_parts(pg_sys::PageGetContents(page) as *const u8, META_SIZE)
    };
    Meta::from_bytes(bytes)
}

/// Changes the metapage record with `f`, WAL-logged; returns what `f` returns.
pub fn update_meta<R>(index: pg_sys::Relation, f: impl FnOnce(&mut Meta) -> R) -> R {
    let buf = Buf::read(index, 0, Lock::Exclusive);
    let mut meta = meta_of(index, buf.page());
    let before = meta;
    let r = f(&mut meta);
    if meta != before {
        let mut rec = WalRecord::start(index);
        let page = rec.register(&buf, false);
        write_meta(page, &meta);
        rec.finish();
    }
    r
}

/// The number of line pointers on `page` (`PageGetMaxOffsetNumber`, read directly: searches
/// call this for every node they visit, and each call into the server costs a `sigsetjmp`).
///
/// # Safety
/// `page` is a valid page, locked by the caller.
pub unsafe fn max_offset(page: pg_sys::Page) -> u16 {
    // SAFETY: a page starts with its header; pd_lower is in it.
    let lower = unsafe { (*(page as *const pg_sys::PageHeaderData)).pd_lower } as usize;
    let first = std::mem::offset_of!(pg_sys::PageHeaderData, pd_linp);
    (lower.saturating_sub(first) / std::mem::size_of::<pg_sys::ItemIdData>()) as u16
}

/// The bytes of item `offset` on `page`, or `None` when there is no such item (read
/// directly, like [`max_offset`]).
///
/// # Safety
/// `page` is locked by the caller for as long as the slice is used.
pub unsafe fn item<'a>(page: pg_sys::Page, offset: u16) -> Option<&'a mut [u8]> {
    // SAFETY: the offset is checked against the page's line pointer array, and the item's
    // extent against the page size, so the slice lies within the page.
    unsafe {
        if offset == 0 || offset > max_offset(page) {
            return None;
        }
        let header = page as *const pg_sys::PageHeaderData;
        let id = &*(*header).pd_linp.as_ptr().add(offset as usize - 1);
        let (start, len) = (id.lp_off() as usize, id.lp_len() as usize);
        if id.lp_flags() != pg_sys::LP_NORMAL || start + len > pg_sys::BLCKSZ as usize {
            return None;
        }
        Some(std::slice::from_raw_parts_mut(
            (page as *mut u8).add(start),
            len,
        ))
    }
}

/// Adds `bytes` as a new item on `page`; the offset, or `None` when it does not fit.
pub fn add_item(page: pg_sys::Page, bytes: &[u8]) -> Option<u16> {
    // SAFETY: `page` is an exclusively locked (or registered) node page; PageAddItemExtended
    // copies the bytes and returns InvalidOffsetNumber when they do not fit.
    let off = unsafe {
        pg_sys::PageAddItemExtended(
            page,
            bytes.as_ptr() as pg_sys::Item,
            bytes.len(),
            pg_sys::InvalidOffsetNumber,
            0,
        )
    };
    (off != pg_sys::InvalidOffsetNumber).then_some(off)
}

/// Free bytes on `page` for one more item (its line pointer already subtracted).
pub fn free_space(page: pg_sys::Page) -> usize {
    // SAFETY: a locked, initialized page.
    unsafe { pg_sys::PageGetFreeSpace(page) }
}

pub fn is_node_page(page: pg_sys::Page) -> bool {
    page_kind(page) == Some(KIND_NODES)
}

/// Number of blocks of the index's main fork.
pub fn nblocks(index: pg_sys::Relation) -> u32 {
    // SAFETY: an open relation.
    unsafe { pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM) }
}

/// The relation's name, for messages.
pub fn rel_name(rel: pg_sys::Relation) -> String {
    // SAFETY: an open relation's rd_rel is valid; relname is a NUL-terminated NameData.
    unsafe {
        std::ffi::CStr::from_ptr((*(*rel).rd_rel).relname.data.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// Whether changes to `rel` must be WAL-logged (a permanent relation).
pub fn needs_wal(rel: pg_sys::Relation) -> bool {
    // SAFETY: an open relation.
    unsafe { (*(*rel).rd_rel).relpersistence == pg_sys::RELPERSISTENCE_PERMANENT as i8 }
}

/// Checks for interrupts and sleeps for cost-based VACUUM delay, between pages of long
/// passes over the index.
pub fn delay_point() {
    // SAFETY: a plain check of interrupts and the vacuum cost balance.
    unsafe {
        #[cfg(feature = "pg18")]
        pg_sys::vacuum_delay_point(false);
        #[cfg(not(feature = "pg18"))]
        pg_sys::vacuum_delay_point();
    }
}
