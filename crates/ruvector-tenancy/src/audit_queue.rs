//! The queue of refused attempts waiting to be written to the audit log.
//!
//! A refusal aborts its transaction, so its audit record cannot be written there; the
//! refusing backend pushes it here and a maintenance worker drains it into the log. The queue
//! is a fixed array of 512-byte entries made only of atomics, so it can live in shared memory
//! and be written by many processes at once without a lock:
//!
//! - a writer claims a free entry (`db == 0`) by compare-and-swap to [`WRITING`], fills it,
//!   and publishes it by storing its database oid last (release);
//! - a reader claims the entries of its database the same way (compare-and-swap from the
//!   oid, acquire), copies them and frees them by storing 0 (release), after which a writer
//!   may claim them again.
//!
//! When every entry is taken a new record is counted as dropped instead ([`Queue::take_dropped`]).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::*};

use crate::atomic_text;

/// Entries of the queue the extension places in shared memory (512 kB): when full, the
/// queued records are kept and new ones counted as dropped.
pub const QUEUE_LEN: usize = 1024;

/// The `db` of an entry being written.
const WRITING: u32 = u32::MAX;

/// Bytes kept of each text field: tenant, operation, user, client address, detail (each a
/// multiple of 8: whole words).
const CAPACITY: [usize; 5] = [64, 24, 64, 48, 288];
const TEXT_WORDS: usize = (64 + 24 + 64 + 48 + 288) / 8;

/// One refused attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// When, in microseconds since the Unix epoch.
    pub at_us: i64,
    pub tenant: String,
    pub operation: String,
    pub user: String,
    pub address: String,
    pub detail: String,
}

/// One queue entry: 512 bytes.
#[repr(C)]
pub struct Entry {
    db: AtomicU32,
    _pad: AtomicU32,
    at_us: AtomicI64,
    /// The five field lengths, 9 bits each.
    lens: AtomicU64,
    text: [AtomicU64; TEXT_WORDS],
}
const _: () = assert!(std::mem::size_of::<Entry>() == 512);

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            db: AtomicU32::new(0),
            _pad: AtomicU32::new(0),
            at_us: AtomicI64::new(0),
            lens: AtomicU64::new(0),
            text: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Entry {
    /// The words of field `i` (its capacity is a multiple of 8 bytes).
    fn field(&self, i: usize) -> &[AtomicU64] {
        let start: usize = CAPACITY[..i].iter().sum::<usize>() / 8;
        &self.text[start..start + CAPACITY[i] / 8]
    }

    fn fill(&self, r: &Record) {
        let fields = [&r.tenant, &r.operation, &r.user, &r.address, &r.detail];
        let mut lens = 0u64;
        for (i, field) in fields.iter().enumerate() {
            lens |= (atomic_text::store(self.field(i), field) as u64) << (9 * i);
        }
        self.at_us.store(r.at_us, Relaxed);
        self.lens.store(lens, Relaxed);
    }

    fn read(&self) -> Record {
        let lens = self.lens.load(Relaxed);
        let field = |i: usize| {
            let len = ((lens >> (9 * i)) & 0x1ff) as usize;
            atomic_text::load(self.field(i), Some(len))
        };
        Record {
            at_us: self.at_us.load(Relaxed),
            tenant: field(0),
            operation: field(1),
            user: field(2),
            address: field(3),
            detail: field(4),
        }
    }
}

/// Bytes of a queue of `len` entries: a dropped counter, then the entries.
pub fn bytes(len: usize) -> usize {
    std::mem::size_of::<Entry>() * (len + 1)
}

/// The queue over its dropped counter and entries.
pub struct Queue<'a> {
    dropped: &'a AtomicU64,
    entries: &'a [Entry],
}

impl<'a> Queue<'a> {
    pub fn new(dropped: &'a AtomicU64, entries: &'a [Entry]) -> Queue<'a> {
        Queue { dropped, entries }
    }

    /// Queues `record` for database `db` (not 0); false when the queue is full (counted).
    pub fn push(&self, db: u32, record: &Record) -> bool {
        debug_assert!(db != 0 && db != WRITING);
        for e in self.entries {
            if e.db.compare_exchange(0, WRITING, AcqRel, Relaxed).is_ok() {
                e.fill(record);
                e.db.store(db, Release);
                return true;
            }
        }
        self.dropped.fetch_add(1, Relaxed);
        false
    }

    /// Takes database `db`'s queued records, oldest first.
    pub fn drain(&self, db: u32) -> Vec<Record> {
        let mut out: Vec<Record> = self
            .entries
            .iter()
            // Claimed like a writer claims, so two readers never take one record twice.
            .filter(|e| {
                e.db.load(Relaxed) == db
                    && e.db.compare_exchange(db, WRITING, Acquire, Relaxed).is_ok()
            })
            .map(|e| {
                let r = e.read();
                e.db.store(0, Release);
                r
            })
            .collect();
        out.sort_by_key(|r| r.at_us);
        out
    }

    /// Records dropped since the last call (the queue was full).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(n: i64, tenant: &str) -> Record {
        Record {
            at_us: n,
            tenant: tenant.into(),
            operation: "insert".into(),
            user: format!("user{n}"),
            address: "10.0.0.1".into(),
            detail: format!("{{\"n\": {n}}}"),
        }
    }

    struct Mem {
        dropped: AtomicU64,
        entries: Vec<Entry>,
    }

    fn mem(len: usize) -> Arc<Mem> {
        Arc::new(Mem {
            dropped: AtomicU64::new(0),
            entries: (0..len).map(|_| Entry::default()).collect(),
        })
    }

    impl Mem {
        fn queue(&self) -> Queue<'_> {
            Queue::new(&self.dropped, &self.entries)
        }
    }

    #[test]
    fn records_round_trip_per_database_oldest_first() {
        let m = mem(8);
        let q = m.queue();
        assert!(q.push(5, &record(3, "b")));
        assert!(q.push(6, &record(1, "other db")));
        assert!(q.push(5, &record(2, "a")));
        assert_eq!(q.drain(5), vec![record(2, "a"), record(3, "b")]);
        assert!(q.drain(5).is_empty(), "drained entries are gone");
        assert_eq!(q.drain(6), vec![record(1, "other db")]);
    }

    #[test]
    fn long_fields_are_cut_on_character_boundaries() {
        let m = mem(1);
        let q = m.queue();
        let mut r = record(1, &"é".repeat(40)); // 80 bytes
        r.detail = "x".repeat(1000);
        assert!(q.push(1, &r));
        let back = &q.drain(1)[0];
        assert_eq!(back.tenant, "é".repeat(32), "64 bytes, whole characters");
        assert_eq!(back.detail.len(), 288);
    }

    #[test]
    fn a_full_queue_counts_what_it_drops_and_takes_more_once_drained() {
        let m = mem(2);
        let q = m.queue();
        assert!(q.push(1, &record(1, "a")));
        assert!(q.push(1, &record(2, "a")));
        assert!(!q.push(1, &record(3, "a")));
        assert_eq!(q.take_dropped(), 1);
        assert_eq!(q.take_dropped(), 0);
        assert_eq!(q.drain(1).len(), 2);
        assert!(q.push(1, &record(4, "a")));
    }

    /// Writers on several threads and a reader draining meanwhile: every record arrives
    /// exactly once and intact, or is counted as dropped.
    #[test]
    fn concurrent_writers_and_a_reader_lose_and_tear_nothing() {
        let m = mem(16);
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for n in 0..2000 {
                        m.queue()
                            .push(7, &record(t * 100_000 + n, &format!("t{t}-{n}")));
                    }
                })
            })
            .collect();
        let reader = {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while got.len() + (m.dropped.load(SeqCst) as usize) < 8000 {
                    got.extend(m.queue().drain(7));
                    std::thread::yield_now();
                }
                got
            })
        };
        for w in writers {
            w.join().unwrap();
        }
        let mut got = reader.join().unwrap();
        got.extend(m.queue().drain(7));
        let dropped = m.queue().take_dropped() as usize;
        assert_eq!(got.len() + dropped, 8000);
        let mut seen = std::collections::HashSet::new();
        for r in &got {
            let (t, n) = (r.at_us / 100_000, r.at_us % 100_000);
            assert_eq!(*r, record(r.at_us, &format!("t{t}-{n}")), "intact");
            assert!(seen.insert(r.at_us), "once");
        }
    }
}
