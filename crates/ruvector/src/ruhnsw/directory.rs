//! The tenant directory: one entry per tenant of the index (layout in
//! `ruvector_core::hnsw::page::DirEntry`), on a chain of pages that starts at the metapage's
//! `directory` block. A tenant's ordinal is its entry's position; entries are only appended,
//! so ordinals never change. An index without a tenant column has one entry, with an empty
//! key.
//!
//! Locking: readers share-lock one directory page at a time. An entry is changed under an
//! exclusive lock of its page. A tenant is added under an exclusive lock of the metapage
//! (which serializes additions), then of the last directory page; nobody waits for the
//! metapage while holding a directory page lock.
//!
//! Each backend remembers where it found entries ([`cache`]): a search looks its tenant up
//! several times, and without the memory every lookup would read the metapage and walk the
//! directory chain up to the tenant's page.

use pgrx::pg_sys;
use ruvector_core::hnsw::page::{
    self as layout, DirEntry, DIR_ENTRIES_PER_PAGE, KIND_DIRECTORY, PAGE_ITEM_SPACE,
};
use ruvector_core::hnsw::TenantOrd;

use super::page::{self, Buf, Lock, WalRecord};
use crate::errors;

/// The contents area of a page (after the header, before the special area).
///
/// # Safety
/// `page` is locked (or a registered image) for as long as the slice is used.
unsafe fn contents<'a>(page: pg_sys::Page) -> &'a mut [u8] {
    // SAFETY: every ruhnsw page has PAGE_ITEM_SPACE bytes between header and special area.
    unsafe {
        std::slice::from_raw_parts_mut(pg_sys::PageGetContents(page) as *mut u8, PAGE_ITEM_SPACE)
    }
}

/// Keeps pd_lower past the used entries, so that full-page images keep them.
fn set_count(page: pg_sys::Page, count: usize) {
    // SAFETY: a registered page image or a new buffer page we may write.
    unsafe {
        let c = contents(page);
        layout::set_dir_count(c, count);
        let end = layout::dir_slot(count.max(1) - 1).end;
        let header = page as *mut pg_sys::PageHeaderData;
        (*header).pd_lower = (c.as_ptr().add(end) as usize - page as usize) as u16;
    }
}

fn corrupted(index: pg_sys::Relation, what: String) -> ! {
    errors::index_corrupted(&page::rel_name(index), format!("tenant directory: {what}"))
}

/// Where this backend found directory pages and tenant keys, per index. Entries are only
/// appended and directory pages never move, so what was found stays true for as long as the
/// index keeps its file: the memory is keyed by the index and its file number (a REINDEX or
/// TRUNCATE gives a new one) and dropped on a relcache invalidation of the index. Only
/// tenants that exist are remembered; a tenant's key is checked again in its slot on every
/// use.
mod cache {
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    use pgrx::pg_sys;
    use ruvector_core::hnsw::TenantOrd;

    use super::page;

    /// Keys remembered per index before its map starts over.
    const KEYS: usize = 1 << 17;

    #[derive(Default)]
    struct Known {
        file: u32,
        /// The block of each directory page, from the first.
        pages: Vec<u32>,
        ordinals: HashMap<Box<[u8]>, TenantOrd>,
    }

    thread_local! {
        static INDEXES: RefCell<HashMap<pg_sys::Oid, Known>> = RefCell::default();
        static REGISTERED: Cell<bool> = const { Cell::new(false) };
    }

    #[pgrx::pg_guard]
    unsafe extern "C-unwind" fn invalidate(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
        INDEXES.with(|m| {
            let mut m = m.borrow_mut();
            if relid == pg_sys::InvalidOid {
                m.clear();
            } else {
                m.remove(&relid);
            }
        });
    }

    fn with<R>(index: pg_sys::Relation, f: impl FnOnce(&mut Known) -> R) -> R {
        if !REGISTERED.get() {
            // SAFETY: registers a callback that lives as long as the backend, once.
            unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(invalidate), 0.into()) };
            REGISTERED.set(true);
        }
        // SAFETY: `index` is an open relation.
        let relid = unsafe { (*index).rd_id };
        let file = page::file_number(index);
        INDEXES.with(|m| {
            let mut m = m.borrow_mut();
            let known = m.entry(relid).or_default();
            if known.file != file {
                *known = Known {
                    file,
                    ..Known::default()
                };
            }
            f(known)
        })
    }

    /// The block of directory page `n`, if known.
    pub fn page(index: pg_sys::Relation, n: usize) -> Option<u32> {
        with(index, |k| k.pages.get(n).copied())
    }

    /// The highest directory page known: its number and block.
    pub fn last_page(index: pg_sys::Relation) -> Option<(usize, u32)> {
        with(index, |k| k.pages.last().map(|&b| (k.pages.len() - 1, b)))
    }

    /// Directory page `n` is at `block` (remembered when the pages before it are known).
    pub fn add_page(index: pg_sys::Relation, n: usize, block: u32) {
        with(index, |k| {
            if k.pages.len() == n {
                k.pages.push(block);
            }
        })
    }

    pub fn ordinal(index: pg_sys::Relation, key: &[u8]) -> Option<TenantOrd> {
        with(index, |k| k.ordinals.get(key).copied())
    }

    pub fn add_key(index: pg_sys::Relation, key: &[u8], ordinal: TenantOrd) {
        with(index, |k| {
            if k.ordinals.len() >= KEYS {
                k.ordinals.clear();
            }
            k.ordinals.insert(key.into(), ordinal);
        })
    }

    /// Forgets everything about `index` (what was remembered did not match the pages).
    pub fn forget(index: pg_sys::Relation) {
        // SAFETY: `index` is an open relation.
        let relid = unsafe { (*index).rd_id };
        INDEXES.with(|m| m.borrow_mut().remove(&relid));
    }
}

/// The number of entries on a directory page, `None` if it is not one.
fn entries_on(pg: pg_sys::Page) -> Option<usize> {
    // SAFETY: the page is locked by the caller.
    (page::page_kind(pg) == Some(KIND_DIRECTORY))
        .then(|| layout::dir_count(unsafe { contents(pg) }))
}

/// The entry in `slot` of a locked directory page.
pub fn read_slot(index: pg_sys::Relation, pg: pg_sys::Page, slot: usize) -> DirEntry {
    // SAFETY: the page is locked by the caller.
    let c = unsafe { contents(pg) };
    if page::page_kind(pg) != Some(KIND_DIRECTORY) {
        corrupted(index, "an entry's page is not a directory page".into());
    }
    if slot >= layout::dir_count(c) {
        corrupted(index, format!("slot {slot} is not in use"));
    }
    DirEntry::from_bytes(&c[layout::dir_slot(slot)]).unwrap_or_else(|e| corrupted(index, e))
}

pub fn write_slot(pg: pg_sys::Page, slot: usize, entry: &DirEntry) {
    // SAFETY: a registered page image or a new buffer page we may write.
    let c = unsafe { contents(pg) };
    c[layout::dir_slot(slot)].copy_from_slice(&entry.to_bytes());
}

/// The block of the `n`-th directory page (from 0), walking the chain from the last page
/// this backend knows (or from `first`).
fn page_block(index: pg_sys::Relation, first: u32, n: usize) -> u32 {
    if let Some(block) = cache::page(index, n) {
        return block;
    }
    let (mut i, mut block) = cache::last_page(index).unwrap_or((0, first));
    cache::add_page(index, 0, first);
    while i < n {
        let buf = Buf::read(index, block, Lock::Share);
        if entries_on(buf.page()).is_none() {
            corrupted(index, format!("block {block} is not a directory page"));
        }
        block = page::next_block(buf.page());
        if block == 0 {
            corrupted(index, format!("the chain ends before page {n}"));
        }
        i += 1;
        cache::add_page(index, i, block);
    }
    block
}

/// The directory page (block) and slot of tenant `ordinal`'s entry. The caller checks the
/// slot with [`read_slot`] (an ordinal past the last entry is an error there).
pub fn locate(index: pg_sys::Relation, ordinal: TenantOrd) -> (u32, usize) {
    let (n, slot) = layout::ordinal_position(ordinal);
    if let Some(block) = cache::page(index, n) {
        return (block, slot);
    }
    let meta = page::read_meta(index);
    if ordinal >= meta.tenants {
        corrupted(index, format!("no tenant ordinal {ordinal}"));
    }
    (page_block(index, meta.directory, n), slot)
}

/// Tenant `ordinal`'s entry.
pub fn get(index: pg_sys::Relation, ordinal: TenantOrd) -> DirEntry {
    let (block, slot) = locate(index, ordinal);
    let buf = Buf::read(index, block, Lock::Share);
    read_slot(index, buf.page(), slot)
}

/// Changes tenant `ordinal`'s entry with `f`, WAL-logged when it changed; returns what `f`
/// returns.
pub fn update<R>(
    index: pg_sys::Relation,
    ordinal: TenantOrd,
    f: impl FnOnce(&mut DirEntry) -> R,
) -> R {
    let (block, slot) = locate(index, ordinal);
    let buf = Buf::read(index, block, Lock::Exclusive);
    let mut entry = read_slot(index, buf.page(), slot);
    let before = entry.clone();
    let r = f(&mut entry);
    if entry != before {
        let mut rec = WalRecord::start(index);
        let pg = rec.register(&buf, false);
        write_slot(pg, slot, &entry);
        rec.finish();
    }
    r
}

/// Calls `f` with every entry, in ordinal order, each under a share lock of its page,
/// until `f` returns `false`.
pub fn for_each(index: pg_sys::Relation, f: impl FnMut(TenantOrd, DirEntry) -> bool) {
    for_each_in(index, &page::read_meta(index), f)
}

/// [`for_each`] with the metapage record already read (the caller may hold the metapage).
fn for_each_in(
    index: pg_sys::Relation,
    meta: &layout::Meta,
    mut f: impl FnMut(TenantOrd, DirEntry) -> bool,
) {
    let mut block = meta.directory;
    let mut n = 0;
    while block != 0 && ((n * DIR_ENTRIES_PER_PAGE) as u32) < meta.tenants {
        let buf = Buf::read(index, block, Lock::Share);
        let Some(count) = entries_on(buf.page()) else {
            corrupted(index, format!("block {block} is not a directory page"));
        };
        cache::add_page(index, n, block);
        for slot in 0..count {
            if !f(layout::ordinal(n, slot), read_slot(index, buf.page(), slot)) {
                return;
            }
        }
        block = page::next_block(buf.page());
        n += 1;
    }
}

/// The ordinal of the tenant with `key`, if it has an entry.
pub fn find(index: pg_sys::Relation, key: &[u8]) -> Option<TenantOrd> {
    find_entry(index, key).map(|(ordinal, _)| ordinal)
}

/// The ordinal and entry of the tenant with `key`, if it has one.
pub fn find_entry(index: pg_sys::Relation, key: &[u8]) -> Option<(TenantOrd, DirEntry)> {
    if let Some(ordinal) = cache::ordinal(index, key) {
        let (n, slot) = layout::ordinal_position(ordinal);
        if let Some(block) = cache::page(index, n) {
            let buf = Buf::read(index, block, Lock::Share);
            if entries_on(buf.page()).is_some_and(|count| slot < count) {
                let entry = read_slot(index, buf.page(), slot);
                if entry.key == key {
                    return Some((ordinal, entry));
                }
            }
        }
        cache::forget(index);
    }
    find_in(index, &page::read_meta(index), key)
}

/// [`find_entry`] by walking the directory (the caller may hold the metapage).
fn find_in(
    index: pg_sys::Relation,
    meta: &layout::Meta,
    key: &[u8],
) -> Option<(TenantOrd, DirEntry)> {
    let mut found = None;
    for_each_in(index, meta, |ordinal, entry| {
        if entry.key == key {
            found = Some((ordinal, entry));
        }
        found.is_none()
    });
    if let Some((ordinal, _)) = found {
        cache::add_key(index, key, ordinal);
    }
    found
}

/// Raises the error for a tenant key longer than a directory entry holds.
pub fn key_too_long(key: &[u8]) -> ! {
    errors::index_error(
        pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        format!(
            "tenant key of {} bytes is too long for a ruhnsw index",
            key.len()
        ),
        Some("Tenant ids have at most 63 bytes."),
    )
}

/// The ordinal of the tenant with `key`, adding an entry when it has none.
pub fn find_or_add(index: pg_sys::Relation, key: &[u8]) -> TenantOrd {
    if let Some(o) = find(index, key) {
        return o;
    }
    let Some(entry) = DirEntry::new(key) else {
        key_too_long(key);
    };
    // Additions are serialized by the metapage lock; look again under it.
    let meta_buf = Buf::read(index, 0, Lock::Exclusive);
    let mut meta = page::meta_of(index, meta_buf.page());
    if let Some((o, _)) = find_in(index, &meta, key) {
        return o;
    }
    let ordinal = meta.tenants;
    let (n, slot) = layout::ordinal_position(ordinal);
    if slot == 0 {
        // A new directory page, linked from the last one (or the metapage).
        let prev = (n > 0).then(|| {
            Buf::read(
                index,
                page_block(index, meta.directory, n - 1),
                Lock::Exclusive,
            )
        });
        let new = Buf::extend(index);
        let mut rec = WalRecord::start(index);
        let pg = rec.register(&new, true);
        page::init_page(pg, KIND_DIRECTORY);
        write_slot(pg, 0, &entry);
        set_count(pg, 1);
        if let Some(prev) = &prev {
            let p = rec.register(prev, false);
            page::set_next_block(p, new.block());
        } else {
            meta.directory = new.block();
        }
        meta.tenants += 1;
        let m = rec.register(&meta_buf, false);
        page::write_meta(m, &meta);
        rec.finish();
    } else {
        let last = Buf::read(index, page_block(index, meta.directory, n), Lock::Exclusive);
        let mut rec = WalRecord::start(index);
        let pg = rec.register(&last, false);
        write_slot(pg, slot, &entry);
        set_count(pg, slot + 1);
        meta.tenants += 1;
        let m = rec.register(&meta_buf, false);
        page::write_meta(m, &meta);
        rec.finish();
    }
    ordinal
}

/// Writes the directory of a new index after its node pages (an index build: the caller
/// logs the new pages) and returns its first block (0 when `entries` is empty).
pub fn write_new(index: pg_sys::Relation, entries: &[DirEntry]) -> u32 {
    let mut first = 0;
    let mut prev: Option<Buf> = None;
    for (n, chunk) in entries.chunks(DIR_ENTRIES_PER_PAGE).enumerate() {
        let buf = Buf::extend(index);
        page::init_page(buf.page(), KIND_DIRECTORY);
        for (slot, e) in chunk.iter().enumerate() {
            write_slot(buf.page(), slot, e);
        }
        set_count(buf.page(), chunk.len());
        if n == 0 {
            first = buf.block();
        }
        if let Some(p) = prev.take() {
            page::set_next_block(p.page(), buf.block());
            // SAFETY: the buffer is exclusively locked by `p`.
            unsafe { pg_sys::MarkBufferDirty(p.buffer()) };
        }
        prev = Some(buf);
    }
    if let Some(p) = prev {
        // SAFETY: the buffer is exclusively locked by `p`.
        unsafe { pg_sys::MarkBufferDirty(p.buffer()) };
    }
    first
}
