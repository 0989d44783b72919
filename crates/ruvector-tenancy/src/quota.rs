//! Quota reservations.
//!
//! An insert reserves its row (and bytes) against the tenant's limit before it happens:
//! `committed + reserved + n <= max`, checked and taken with one compare-and-swap on the
//! shared counter, so concurrent sessions can never overshoot and no table row is locked.
//! A backend's [`Ledger`] remembers what its transaction reserved, per subtransaction level:
//! commit moves reservations into the committed count, an abort (of the transaction or of a
//! savepoint) gives them back.

use std::sync::atomic::{AtomicI64, Ordering::*};

use crate::registry::TenantSlot;

/// Which limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Vectors,
    StorageBytes,
}

/// A refused reservation: the limit and the usage it would have exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub resource: Resource,
    /// Committed plus reserved before this request.
    pub current: i64,
    pub requested: i64,
    pub max: i64,
}

fn reserve_one(
    committed: &AtomicI64,
    reserved: &AtomicI64,
    max: i64,
    n: i64,
    resource: Resource,
) -> Result<(), QuotaExceeded> {
    let mut r = reserved.load(Acquire);
    loop {
        let current = committed.load(Acquire) + r;
        if n > 0 && current + n > max {
            return Err(QuotaExceeded {
                resource,
                current,
                requested: n,
                max,
            });
        }
        match reserved.compare_exchange_weak(r, r + n, AcqRel, Acquire) {
            Ok(_) => return Ok(()),
            Err(actual) => r = actual,
        }
    }
}

/// Reserves `rows` and `bytes` for a tenant, or refuses if either limit would be exceeded.
pub fn reserve(slot: &TenantSlot, rows: i64, bytes: i64) -> Result<(), QuotaExceeded> {
    let limits = slot.limits();
    reserve_one(
        &slot.vectors,
        &slot.vectors_reserved,
        limits.max_vectors,
        rows,
        Resource::Vectors,
    )?;
    if let Err(e) = reserve_one(
        &slot.storage_bytes,
        &slot.storage_reserved,
        limits.max_storage_bytes,
        bytes,
        Resource::StorageBytes,
    ) {
        slot.vectors_reserved.fetch_sub(rows, AcqRel);
        return Err(e);
    }
    Ok(())
}

/// Gives a reservation back.
pub fn release(slot: &TenantSlot, rows: i64, bytes: i64) {
    slot.vectors_reserved.fetch_sub(rows, AcqRel);
    slot.storage_reserved.fetch_sub(bytes, AcqRel);
}

/// Turns a reservation into committed usage. The committed count rises before the
/// reservation falls, so a concurrent check may briefly count the rows twice (and refuse at
/// the very edge of the limit) but never misses them.
pub fn commit(slot: &TenantSlot, rows: i64, bytes: i64) {
    slot.vectors.fetch_add(rows, AcqRel);
    slot.storage_bytes.fetch_add(bytes, AcqRel);
    release(slot, rows, bytes);
}

/// Applies committed deletions.
pub fn remove(slot: &TenantSlot, rows: i64, bytes: i64) {
    slot.vectors.fetch_sub(rows, AcqRel);
    slot.storage_bytes.fetch_sub(bytes, AcqRel);
}

/// One backend's pending quota changes in the current transaction.
#[derive(Debug, Default)]
pub struct Ledger {
    /// (slot, subtransaction level, reserved rows, reserved bytes, deleted rows, deleted bytes)
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub slot: usize,
    pub level: i32,
    pub reserved_rows: i64,
    pub reserved_bytes: i64,
    pub deleted_rows: i64,
    pub deleted_bytes: i64,
}

impl Ledger {
    fn entry(&mut self, slot: usize, level: i32) -> &mut Entry {
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.slot == slot && e.level == level)
        {
            return &mut self.entries[i];
        }
        self.entries.push(Entry {
            slot,
            level,
            reserved_rows: 0,
            reserved_bytes: 0,
            deleted_rows: 0,
            deleted_bytes: 0,
        });
        self.entries.last_mut().unwrap()
    }

    /// Records a reservation already taken with [`reserve`].
    pub fn reserved(&mut self, slot: usize, level: i32, rows: i64, bytes: i64) {
        let e = self.entry(slot, level);
        e.reserved_rows += rows;
        e.reserved_bytes += bytes;
    }

    /// Records a deletion, applied at commit.
    pub fn deleted(&mut self, slot: usize, level: i32, rows: i64, bytes: i64) {
        let e = self.entry(slot, level);
        e.deleted_rows += rows;
        e.deleted_bytes += bytes;
    }

    /// Records rows that existed before their table was registered: committed usage at
    /// commit, nothing on abort.
    pub fn adopted(&mut self, slot: usize, level: i32, rows: i64, bytes: i64) {
        self.deleted(slot, level, -rows, -bytes);
    }

    /// A savepoint at `level` committed: its entries now belong to the parent level.
    pub fn subcommit(&mut self, level: i32) {
        for e in &mut self.entries {
            if e.level >= level {
                e.level = level - 1;
            }
        }
    }

    /// A savepoint at `level` rolled back: its entries, to be released.
    pub fn subabort(&mut self, level: i32) -> Vec<Entry> {
        let (gone, kept) = self.entries.drain(..).partition(|e| e.level >= level);
        self.entries = kept;
        gone
    }

    /// The transaction ended: every entry, to be committed or released.
    pub fn take(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{tests::owned, Limits};
    use std::sync::Arc;

    /// Limits on vectors and storage only.
    fn storage_limits(max_vectors: i64, max_storage_bytes: i64) -> Limits {
        Limits {
            max_vectors,
            max_storage_bytes,
            max_qps: 0,
            max_concurrent: 0,
            weight: 1.0,
        }
    }

    #[test]
    fn reservations_respect_the_limit_and_come_back() {
        let mem = owned(1);
        let reg = mem.registry(true);
        let (_, slot, _) = reg.upsert(1, "t", false).unwrap();
        slot.set_limits(storage_limits(3, 1000));
        reserve(slot, 2, 10).unwrap();
        commit(slot, 2, 10);
        reserve(slot, 1, 10).unwrap();
        let err = reserve(slot, 1, 10).unwrap_err();
        assert_eq!(
            err,
            QuotaExceeded {
                resource: Resource::Vectors,
                current: 3,
                requested: 1,
                max: 3
            }
        );
        release(slot, 1, 10);
        reserve(slot, 1, 10).unwrap();
        let err = reserve(slot, 0, 2000).unwrap_err();
        assert_eq!(err.resource, Resource::StorageBytes);
        assert_eq!(
            slot.vectors_reserved.load(Relaxed),
            1,
            "a refused byte reservation gives its rows back"
        );
        remove(slot, 2, 10);
        assert_eq!(slot.vectors.load(Relaxed), 0);
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let mem = Arc::new(owned(1));
        {
            let reg = mem.registry(true);
            let (_, slot, _) = reg.upsert(1, "t", false).unwrap();
            slot.set_limits(storage_limits(1000, i64::MAX));
        }
        let granted: i64 = (0..8)
            .map(|_| {
                let mem = Arc::clone(&mem);
                std::thread::spawn(move || {
                    let reg = mem.registry(false);
                    let slot = reg.slot(0);
                    let mut n = 0;
                    for i in 0..500 {
                        if reserve(slot, 1, 1).is_ok() {
                            if i % 3 == 0 {
                                release(slot, 1, 1); // an aborted insert
                            } else {
                                commit(slot, 1, 1);
                                n += 1;
                            }
                        }
                    }
                    n
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        let reg = mem.registry(false);
        assert_eq!(granted, 1000, "exactly the limit, never more");
        assert_eq!(reg.slot(0).vectors.load(Relaxed), 1000);
        assert_eq!(reg.slot(0).vectors_reserved.load(Relaxed), 0);
    }

    #[test]
    fn ledger_follows_savepoints() {
        let mut l = Ledger::default();
        l.reserved(0, 1, 1, 10);
        l.reserved(0, 2, 2, 20);
        l.reserved(1, 3, 1, 5);
        let gone = l.subabort(3);
        assert_eq!(gone.len(), 1);
        l.subcommit(2);
        let all = l.take();
        assert_eq!(all.iter().map(|e| e.reserved_rows).sum::<i64>(), 3);
        assert!(all.iter().all(|e| e.level == 1));
        assert!(l.is_empty());
    }

    #[test]
    fn adopted_rows_become_usage_at_commit_and_nothing_on_abort() {
        let reg = owned(4);
        let r = reg.registry(true);
        let (_, slot, _) = r.upsert(1, "a", false).unwrap();
        slot.set_limits(storage_limits(5, 1000));
        let mut l = Ledger::default();
        l.adopted(0, 1, 4, 40);
        for e in l.take() {
            commit(slot, e.reserved_rows, e.reserved_bytes);
            remove(slot, e.deleted_rows, e.deleted_bytes);
        }
        assert_eq!(slot.vectors.load(Relaxed), 4);
        assert_eq!(slot.storage_bytes.load(Relaxed), 40);
        assert!(reserve(slot, 1, 1).is_ok());
        assert!(
            reserve(slot, 1, 1).is_err(),
            "adopted rows count against the limit"
        );
        let mut aborted = Ledger::default();
        aborted.adopted(0, 2, 3, 30);
        assert_eq!(
            aborted
                .subabort(2)
                .iter()
                .map(|e| e.reserved_rows)
                .sum::<i64>(),
            0
        );
    }
}
