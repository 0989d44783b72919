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

/// The entry in `slot` of a locked directory page.
pub fn read_slot(index: pg_sys::Relation, pg: pg_sys::Page, slot: usize) -> DirEntry {
    // SAFETY: the page is locked by the caller.
    let c = unsafe { contents(pg) };
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

/// The block of the `n`-th directory page (from 0).
fn page_block(index: pg_sys::Relation, first: u32, n: usize) -> u32 {
    let mut block = first;
    for _ in 0..n {
        let buf = Buf::read(index, block, Lock::Share);
        if page::page_kind(buf.page()) != Some(KIND_DIRECTORY) {
            corrupted(index, format!("block {block} is not a directory page"));
        }
        block = page::next_block(buf.page());
        if block == 0 {
            corrupted(index, format!("the chain ends before page {n}"));
        }
    }
    block
}

/// The directory page (block) and slot of tenant `ordinal`'s entry.
pub fn locate(index: pg_sys::Relation, ordinal: TenantOrd) -> (u32, usize) {
    let meta = page::read_meta(index);
    if ordinal >= meta.tenants {
        corrupted(index, format!("no tenant ordinal {ordinal}"));
    }
    let (n, slot) = layout::ordinal_position(ordinal);
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
        if page::page_kind(buf.page()) != Some(KIND_DIRECTORY) {
            corrupted(index, format!("block {block} is not a directory page"));
        }
        // SAFETY: the page is share-locked.
        let count = layout::dir_count(unsafe { contents(buf.page()) });
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
    find_in(index, &page::read_meta(index), key)
}

fn find_in(index: pg_sys::Relation, meta: &layout::Meta, key: &[u8]) -> Option<TenantOrd> {
    let mut found = None;
    for_each_in(index, meta, |ordinal, entry| {
        if entry.key == key {
            found = Some(ordinal);
        }
        found.is_none()
    });
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
    if let Some(o) = find_in(index, &meta, key) {
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
