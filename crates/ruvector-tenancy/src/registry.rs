//! The tenant registry: a fixed-capacity hash table of tenant slots.
//!
//! The extension places one in shared memory, sized by `ruvector.max_tenants`, so every
//! backend sees the same tenant states, limits and counters. Everything is an atomic, so the
//! table can be shared by reference; the *lock discipline* is the caller's: lookups under a
//! shared lock, [`Registry::upsert`] and field writes that must be seen together under an
//! exclusive lock. Counters (usage, statistics) are atomics updated without the lock.
//!
//! Tenants belong to a database (their catalog is per database), so the key is
//! (database oid, tenant id). Slots are never freed while the server runs: a deleted tenant
//! keeps its slot in state [`TenantState::Deleted`], which also stops a late loader from
//! bringing it back. Recreating the id reuses the slot.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::*};

use crate::tenant_id::MAX_TENANT_ID_LEN;

/// Lifecycle state of a tenant slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum TenantState {
    Unused = 0,
    Active = 1,
    Suspended = 2,
    /// Soft- or hard-deleted: every operation is refused.
    Deleted = 3,
}

impl TenantState {
    fn from_u32(v: u32) -> TenantState {
        match v {
            1 => TenantState::Active,
            2 => TenantState::Suspended,
            3 => TenantState::Deleted,
            _ => TenantState::Unused,
        }
    }
}

/// Limits of a tenant, copied from its catalog rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_vectors: i64,
    pub max_storage_bytes: i64,
    pub max_qps: i32,
    pub max_concurrent: i32,
    /// Share of the server under contention, relative to other tenants' weights.
    pub weight: f64,
}

/// One tenant's shared state: 320 bytes, cache-line aligned so one tenant's hot counters
/// never share a line with the next tenant's.
#[repr(C, align(64))]
pub struct TenantSlot {
    db: AtomicU32,
    state: AtomicU32,
    id_len: AtomicU32,
    id: [AtomicU64; 8],
    pub max_vectors: AtomicI64,
    pub max_storage_bytes: AtomicI64,
    pub max_qps: AtomicI64,
    pub max_concurrent: AtomicI64,
    /// Committed rows in the tenant's registered tables.
    pub vectors: AtomicI64,
    /// Rows inserted by transactions still in progress.
    pub vectors_reserved: AtomicI64,
    /// Committed bytes of those rows.
    pub storage_bytes: AtomicI64,
    pub storage_reserved: AtomicI64,
    /// Statement counters and search latency, for `ruvector_tenant_stats`.
    pub searches: AtomicU64,
    pub inserts: AtomicU64,
    pub updates: AtomicU64,
    pub deletes: AtomicU64,
    pub refused: AtomicU64,
    pub search_micros: AtomicU64,
    pub last_access_ms: AtomicI64,
    /// Searches per ten-minute period over the last hour: (period << 32) | count.
    search_window: [AtomicU64; WINDOW_BUCKETS],
    /// Token bucket of `max_qps` (see [`crate::rate`]).
    pub bucket: AtomicU64,
    /// Statements of this tenant holding an execution slot now.
    pub running: AtomicI64,
    /// Fair-scheduling weight (f64 bits) and the last finish tag handed out (f64 bits,
    /// under the scheduler's lock).
    pub weight_bits: AtomicU64,
    pub last_finish_bits: AtomicU64,
    /// Admission counters: admitted, refused by the rate limit, made to wait, and the total
    /// wait in microseconds.
    pub admitted: AtomicU64,
    pub rate_limited: AtomicU64,
    pub queued: AtomicU64,
    pub wait_micros: AtomicU64,
    /// 1 when the tenant's index nodes go on pages of its own (isolation level `partition`
    /// or `dedicated`), 0 when they are packed with other shared tenants' nodes.
    own_pages: AtomicU32,
    /// Statements of this tenant waiting for an execution slot now.
    pub waiting: AtomicU32,
}

/// Buckets of the searches-in-the-last-hour window (ten minutes each).
pub const WINDOW_BUCKETS: usize = 6;
/// Length of one window bucket.
pub const WINDOW_PERIOD_MS: i64 = 600_000;

const _: () = assert!(std::mem::size_of::<TenantSlot>() == 320);
const _: () = assert!(MAX_TENANT_ID_LEN < 64);

impl TenantSlot {
    fn pack(id: &str) -> [u64; 8] {
        let mut bytes = [0u8; 64];
        bytes[..id.len()].copy_from_slice(id.as_bytes());
        std::array::from_fn(|i| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap()))
    }

    fn matches(&self, db: u32, id: &str) -> bool {
        if self.db.load(Relaxed) != db || self.id_len.load(Relaxed) as usize != id.len() {
            return false;
        }
        let want = Self::pack(id);
        self.id.iter().zip(want).all(|(a, b)| a.load(Relaxed) == b)
    }

    /// The tenant id stored in this slot.
    pub fn id(&self) -> String {
        let mut bytes = [0u8; 64];
        for (i, w) in self.id.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.load(Relaxed).to_le_bytes());
        }
        let len = (self.id_len.load(Relaxed) as usize).min(MAX_TENANT_ID_LEN);
        String::from_utf8_lossy(&bytes[..len]).into_owned()
    }

    pub fn db(&self) -> u32 {
        self.db.load(Relaxed)
    }

    pub fn state(&self) -> TenantState {
        TenantState::from_u32(self.state.load(Acquire))
    }

    pub fn set_state(&self, state: TenantState) {
        self.state.store(state as u32, Release);
    }

    /// Whether the tenant's index nodes go on pages of its own (else packed with others').
    pub fn own_pages(&self) -> bool {
        self.own_pages.load(Relaxed) != 0
    }

    pub fn set_own_pages(&self, own: bool) {
        self.own_pages.store(u32::from(own), Relaxed);
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_vectors: self.max_vectors.load(Relaxed),
            max_storage_bytes: self.max_storage_bytes.load(Relaxed),
            max_qps: self.max_qps.load(Relaxed) as i32,
            max_concurrent: self.max_concurrent.load(Relaxed) as i32,
            weight: f64::from_bits(self.weight_bits.load(Relaxed)),
        }
    }

    pub fn set_limits(&self, limits: Limits) {
        self.max_vectors.store(limits.max_vectors, Relaxed);
        self.max_storage_bytes
            .store(limits.max_storage_bytes, Relaxed);
        self.max_qps.store(limits.max_qps.into(), Relaxed);
        self.max_concurrent
            .store(limits.max_concurrent.into(), Relaxed);
        self.weight_bits.store(limits.weight.to_bits(), Relaxed);
    }

    /// Counts one search at `now_ms` in the last-hour window.
    pub fn count_search(&self, now_ms: i64) {
        let period = (now_ms / WINDOW_PERIOD_MS) as u64 & 0xffff_ffff;
        let bucket = &self.search_window[period as usize % WINDOW_BUCKETS];
        let mut cur = bucket.load(Relaxed);
        loop {
            let next = if cur >> 32 == period {
                cur + 1
            } else {
                (period << 32) | 1
            };
            match bucket.compare_exchange_weak(cur, next, Relaxed, Relaxed) {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Searches counted in the current and the previous five ten-minute periods.
    pub fn searches_last_hour(&self, now_ms: i64) -> u64 {
        let period = (now_ms / WINDOW_PERIOD_MS) as u64 & 0xffff_ffff;
        self.search_window
            .iter()
            .map(|b| b.load(Relaxed))
            .filter(|v| period.wrapping_sub(v >> 32) < WINDOW_BUCKETS as u64)
            .map(|v| v & 0xffff_ffff)
            .sum()
    }

    fn reset(&self, db: u32, id: &str) {
        for b in &self.search_window {
            b.store(0, Relaxed);
        }
        for c in [
            &self.bucket,
            &self.last_finish_bits,
            &self.admitted,
            &self.rate_limited,
            &self.queued,
            &self.wait_micros,
        ] {
            c.store(0, Relaxed);
        }
        self.running.store(0, Relaxed);
        self.waiting.store(0, Relaxed);
        self.own_pages.store(0, Relaxed);
        for counter in [
            &self.vectors,
            &self.vectors_reserved,
            &self.storage_bytes,
            &self.storage_reserved,
            &self.last_access_ms,
        ] {
            counter.store(0, Relaxed);
        }
        for counter in [
            &self.searches,
            &self.inserts,
            &self.updates,
            &self.deletes,
            &self.refused,
            &self.search_micros,
        ] {
            counter.store(0, Relaxed);
        }
        for (w, v) in self.id.iter().zip(Self::pack(id)) {
            w.store(v, Relaxed);
        }
        self.id_len.store(id.len() as u32, Relaxed);
        self.db.store(db, Relaxed);
    }
}

/// The header of a registry: sizes and change counters.
#[repr(C)]
pub struct Header {
    capacity: AtomicU32,
    index_len: AtomicU32,
    used: AtomicU32,
    /// Bumped whenever the set of registered tenant tables changes anywhere; backends
    /// compare it with the value their cache was built at.
    pub tables_generation: AtomicU64,
}

/// Why [`Registry::upsert`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryFull {
    pub capacity: u32,
}

/// A view of a registry's memory.
pub struct Registry<'a> {
    header: &'a Header,
    index: &'a [AtomicU32],
    slots: &'a [TenantSlot],
}

/// Sizes of the three parts of a registry of `capacity` tenants.
pub fn layout(capacity: u32) -> (usize, usize, usize) {
    let index_len = index_len(capacity);
    (
        std::mem::size_of::<Header>(),
        index_len * std::mem::size_of::<AtomicU32>(),
        capacity as usize * std::mem::size_of::<TenantSlot>(),
    )
}

/// Bytes a registry of `capacity` tenants needs, including alignment slack.
pub fn bytes_needed(capacity: u32) -> usize {
    let (h, i, s) = layout(capacity);
    h + i + s + 2 * std::mem::align_of::<TenantSlot>()
}

fn index_len(capacity: u32) -> usize {
    // Load factor at most 1/2: short probe sequences even when full.
    (2 * capacity.max(1) as usize).next_power_of_two()
}

fn hash(db: u32, id: &str) -> u64 {
    // FNV-1a: small, no dependency, and good enough over short ASCII keys.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in db.to_le_bytes().iter().chain(id.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl<'a> Registry<'a> {
    /// A registry over memory laid out by [`layout`]. `initialize` sets the header of fresh
    /// (zeroed) memory; attach without it.
    pub fn new(
        header: &'a Header,
        index: &'a [AtomicU32],
        slots: &'a [TenantSlot],
        initialize: bool,
    ) -> Registry<'a> {
        assert_eq!(index.len(), index_len(slots.len() as u32), "index length");
        if initialize {
            header.capacity.store(slots.len() as u32, Relaxed);
            header.index_len.store(index.len() as u32, Relaxed);
            header.used.store(0, Relaxed);
        }
        Registry {
            header,
            index,
            slots,
        }
    }

    pub fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Slots in use, deleted tenants included.
    pub fn used(&self) -> u32 {
        self.header.used.load(Acquire)
    }

    pub fn header(&self) -> &Header {
        self.header
    }

    fn probe(&self, db: u32, id: &str) -> Result<(usize, Option<usize>), RegistryFull> {
        // (index position, slot number if present)
        let mask = self.index.len() - 1;
        let mut pos = hash(db, id) as usize & mask;
        for _ in 0..self.index.len() {
            match self.index[pos].load(Acquire) {
                0 => return Ok((pos, None)),
                n => {
                    let slot = n as usize - 1;
                    if self.slots[slot].matches(db, id) {
                        return Ok((pos, Some(slot)));
                    }
                }
            }
            pos = (pos + 1) & mask;
        }
        Err(RegistryFull {
            capacity: self.capacity(),
        })
    }

    /// The slot of a tenant, in any state. Caller holds at least a shared lock.
    pub fn lookup(&self, db: u32, id: &str) -> Option<(usize, &TenantSlot)> {
        match self.probe(db, id) {
            Ok((_, Some(slot))) => Some((slot, &self.slots[slot])),
            _ => None,
        }
    }

    /// A slot by number (from [`Registry::lookup`]).
    pub fn slot(&self, n: usize) -> &TenantSlot {
        &self.slots[n]
    }

    /// The tenant's slot, allocated if absent (with zeroed counters and state Unused, which
    /// the caller then sets). `fresh` is true when the slot was allocated or reset. Caller
    /// holds the exclusive lock.
    pub fn upsert(
        &self,
        db: u32,
        id: &str,
        reset: bool,
    ) -> Result<(usize, &TenantSlot, bool), RegistryFull> {
        let (pos, found) = self.probe(db, id)?;
        if let Some(n) = found {
            let slot = &self.slots[n];
            if reset {
                slot.reset(db, id);
            }
            return Ok((n, slot, reset));
        }
        let n = self.header.used.load(Relaxed) as usize;
        if n >= self.slots.len() {
            return Err(RegistryFull {
                capacity: self.capacity(),
            });
        }
        let slot = &self.slots[n];
        slot.reset(db, id);
        slot.set_state(TenantState::Unused);
        self.header.used.store(n as u32 + 1, Release);
        self.index[pos].store(n as u32 + 1, Release);
        Ok((n, slot, true))
    }

    /// Every slot of database `db` in use, deleted ones included.
    pub fn iter_db(&self, db: u32) -> impl Iterator<Item = (usize, &TenantSlot)> + '_ {
        let used = self.used() as usize;
        self.slots[..used]
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.db() == db && s.state() != TenantState::Unused)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub struct Owned {
        pub header: Header,
        pub index: Vec<AtomicU32>,
        pub slots: Vec<TenantSlot>,
    }

    pub fn owned(capacity: u32) -> Owned {
        let zero_slot = || TenantSlot {
            db: AtomicU32::new(0),
            state: AtomicU32::new(0),
            id_len: AtomicU32::new(0),
            id: Default::default(),
            max_vectors: AtomicI64::new(0),
            max_storage_bytes: AtomicI64::new(0),
            max_qps: AtomicI64::new(0),
            max_concurrent: AtomicI64::new(0),
            vectors: AtomicI64::new(0),
            vectors_reserved: AtomicI64::new(0),
            storage_bytes: AtomicI64::new(0),
            storage_reserved: AtomicI64::new(0),
            searches: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            search_micros: AtomicU64::new(0),
            last_access_ms: AtomicI64::new(0),
            search_window: Default::default(),
            bucket: AtomicU64::new(0),
            running: AtomicI64::new(0),
            weight_bits: AtomicU64::new(0),
            last_finish_bits: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            wait_micros: AtomicU64::new(0),
            own_pages: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
        };
        Owned {
            header: Header {
                capacity: AtomicU32::new(0),
                index_len: AtomicU32::new(0),
                used: AtomicU32::new(0),
                tables_generation: AtomicU64::new(0),
            },
            index: (0..index_len(capacity))
                .map(|_| AtomicU32::new(0))
                .collect(),
            slots: (0..capacity).map(|_| zero_slot()).collect(),
        }
    }

    impl Owned {
        pub fn registry(&self, init: bool) -> Registry<'_> {
            Registry::new(&self.header, &self.index, &self.slots, init)
        }
    }

    #[test]
    fn upsert_lookup_and_capacity() {
        let mem = owned(1000);
        let reg = mem.registry(true);
        for i in 0..1000 {
            let (_, slot, fresh) = reg.upsert(1, &format!("t{i}"), false).unwrap();
            assert!(fresh);
            slot.set_state(TenantState::Active);
        }
        assert_eq!(
            reg.upsert(1, "one-too-many", false).err(),
            Some(RegistryFull { capacity: 1000 })
        );
        for i in 0..1000 {
            let (_, slot) = reg.lookup(1, &format!("t{i}")).expect("present");
            assert_eq!(slot.id(), format!("t{i}"));
            assert_eq!(slot.state(), TenantState::Active);
        }
        assert!(reg.lookup(2, "t1").is_none(), "tenants are per database");
        assert!(reg.lookup(1, "t1000").is_none());
        assert_eq!(reg.iter_db(1).count(), 1000);
        assert_eq!(reg.iter_db(2).count(), 0);
    }

    #[test]
    fn deleted_slots_stay_and_are_reused() {
        let mem = owned(4);
        let reg = mem.registry(true);
        let (n, slot, _) = reg.upsert(1, "acme", false).unwrap();
        slot.set_state(TenantState::Active);
        slot.vectors.store(10, Relaxed);
        slot.set_state(TenantState::Deleted);
        let (m, again, fresh) = reg.upsert(1, "acme", false).unwrap();
        assert_eq!((m, fresh), (n, false));
        assert_eq!(
            again.state(),
            TenantState::Deleted,
            "a loader never revives a deleted tenant"
        );
        let (_, recreated, fresh) = reg.upsert(1, "acme", true).unwrap();
        assert!(fresh);
        assert_eq!(recreated.vectors.load(Relaxed), 0);
        assert_eq!(reg.used(), 1);
    }

    #[test]
    fn limits_round_trip() {
        let mem = owned(1);
        let reg = mem.registry(true);
        let (_, slot, _) = reg.upsert(1, "t", false).unwrap();
        let limits = Limits {
            max_vectors: 7,
            max_storage_bytes: 8,
            max_qps: 9,
            max_concurrent: 10,
            weight: 2.5,
        };
        slot.set_limits(limits);
        assert_eq!(slot.limits(), limits);
    }

    #[test]
    fn search_window_keeps_the_last_hour() {
        let mem = owned(1);
        let reg = mem.registry(true);
        let (_, slot, _) = reg.upsert(1, "t", false).unwrap();
        let t0 = 1_000 * WINDOW_PERIOD_MS;
        for i in 0..10 {
            slot.count_search(t0 + i * WINDOW_PERIOD_MS / 2);
        }
        assert_eq!(slot.searches_last_hour(t0 + 5 * WINDOW_PERIOD_MS), 10);
        assert_eq!(
            slot.searches_last_hour(t0 + 6 * WINDOW_PERIOD_MS),
            8,
            "the first period left the window"
        );
        assert_eq!(slot.searches_last_hour(t0 + 20 * WINDOW_PERIOD_MS), 0);
    }

    #[test]
    fn attach_sees_the_same_table() {
        let mem = owned(8);
        mem.registry(true)
            .upsert(7, "x.y-z_1", false)
            .unwrap()
            .1
            .set_state(TenantState::Suspended);
        let other = mem.registry(false);
        assert_eq!(
            other.lookup(7, "x.y-z_1").unwrap().1.state(),
            TenantState::Suspended
        );
        let per_tenant = bytes_needed(100_000) / 100_000;
        assert!(
            per_tenant <= 335,
            "docs promise at most 335 bytes per tenant, got {per_tenant}"
        );
    }
}
