//! Per-tenant metrics: a search-latency histogram and the figures of the last closed window
//! (a minute by default), kept in shared memory without locks.
//!
//! The statement path only adds to atomics ([`TenantMetrics::observe_search`]: two
//! `fetch_add`s). At the end of each window the maintenance launcher closes it for every tenant
//! ([`TenantMetrics::rotate`]): it compares the cumulative counts with the marks it left at
//! the window's start and stores the window's search and statement counts and its latency
//! quantiles, which readers (SQL, the Prometheus endpoint) take as they are. The cumulative
//! histogram itself is what Prometheus scrapes.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::*};

/// Upper bounds of the latency buckets, in microseconds; a last bucket holds the rest.
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];
/// Latency buckets, the unbounded one included.
pub const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// The bucket a search of `us` microseconds falls in.
pub fn bucket_of(us: u64) -> usize {
    LATENCY_BOUNDS_US.partition_point(|&b| b < us)
}

const NONE: u32 = u32::MAX;

/// One tenant's metrics record: 256 bytes, cache-line aligned.
#[repr(C, align(64))]
#[derive(Default)]
pub struct TenantMetrics {
    /// Searches per latency bucket since the tenant's slot was (re)set.
    latency: [AtomicU64; BUCKETS],
    latency_sum_us: AtomicU64,
    /// The counts at the start of the current window (low 32 bits: deltas within a window
    /// are far below 2^32).
    mark_latency: [AtomicU32; BUCKETS],
    mark_searches: AtomicU64,
    mark_statements: AtomicU64,
    mark_at_ms: AtomicI64,
    /// The last closed window: its start, `(p50_us << 32) | p99_us`, and
    /// `(searches << 32) | statements`; its end is `mark_at_ms`.
    window_start_ms: AtomicI64,
    window_quantiles: AtomicU64,
    window_counts: AtomicU64,
    /// `(count << 32) | max_collections` as of the last maintenance run.
    collections: AtomicU64,
}
const _: () = assert!(std::mem::size_of::<TenantMetrics>() == 256);

/// A latency histogram: searches per bucket (not cumulative) and their total time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Histogram {
    pub counts: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Histogram {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Adds `other`'s searches to these.
    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }
}

/// The `q` quantile (0 < q <= 1) of bucketed `counts`, in microseconds, interpolated
/// linearly inside its bucket as Prometheus' `histogram_quantile` does; a quantile in the
/// unbounded bucket is reported as the highest bound. `None` without observations.
pub fn quantile(counts: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (below + c) as f64 >= rank {
            let Some(&upper) = LATENCY_BOUNDS_US.get(i) else {
                return Some(LATENCY_BOUNDS_US[BUCKETS - 2] as f64);
            };
            let lower = if i == 0 { 0 } else { LATENCY_BOUNDS_US[i - 1] };
            let within = (rank - below as f64) / c as f64;
            return Some(lower as f64 + (upper - lower) as f64 * within);
        }
        below += c;
    }
    Some(LATENCY_BOUNDS_US[BUCKETS - 2] as f64)
}

/// The figures of one closed window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
    pub searches: u32,
    pub statements: u32,
    pub p50_us: Option<u32>,
    pub p99_us: Option<u32>,
}

impl Window {
    fn seconds(&self) -> f64 {
        ((self.end_ms - self.start_ms).max(1)) as f64 / 1000.0
    }

    /// Searches per second.
    pub fn qps(&self) -> f64 {
        self.searches as f64 / self.seconds()
    }

    /// Statements per second (searches, inserts, updates, deletes).
    pub fn statements_per_second(&self) -> f64 {
        self.statements as f64 / self.seconds()
    }
}

fn pack(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

fn unpack(v: u64) -> (u32, u32) {
    ((v >> 32) as u32, v as u32)
}

impl TenantMetrics {
    /// Zeroes the record for a new tenant in the slot at `now_ms`: its first window starts now.
    pub fn reset(&self, now_ms: i64) {
        for (a, m) in self.latency.iter().zip(&self.mark_latency) {
            a.store(0, Relaxed);
            m.store(0, Relaxed);
        }
        for a in [
            &self.latency_sum_us,
            &self.mark_searches,
            &self.mark_statements,
            &self.window_counts,
            &self.collections,
        ] {
            a.store(0, Relaxed);
        }
        self.window_quantiles.store(pack(NONE, NONE), Relaxed);
        self.window_start_ms.store(0, Relaxed);
        self.mark_at_ms.store(now_ms, Release);
    }

    /// Records one search of `us` microseconds.
    pub fn observe_search(&self, us: u64) {
        self.latency[bucket_of(us)].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }

    /// The cumulative histogram.
    pub fn histogram(&self) -> Histogram {
        Histogram {
            counts: std::array::from_fn(|i| self.latency[i].load(Relaxed)),
            sum_us: self.latency_sum_us.load(Relaxed),
        }
    }

    /// Closes the current window at `now_ms` (one caller at a time: the launcher), given the
    /// tenant's cumulative search and statement counts, and opens the next. On a record never
    /// reset (`mark_at_ms` 0) it only sets the marks.
    pub fn rotate(&self, now_ms: i64, searches_total: u64, statements_total: u64) {
        let started = self.mark_at_ms.load(Relaxed);
        let counts: [u32; BUCKETS] = std::array::from_fn(|i| {
            let now = self.latency[i].load(Relaxed) as u32;
            now.wrapping_sub(self.mark_latency[i].swap(now, Relaxed))
        });
        let searches =
            searches_total.wrapping_sub(self.mark_searches.swap(searches_total, Relaxed));
        let statements =
            statements_total.wrapping_sub(self.mark_statements.swap(statements_total, Relaxed));
        self.mark_at_ms.store(now_ms, Release);
        if started == 0 {
            return;
        }
        let counts64 = counts.map(u64::from);
        let q = |p: f64| quantile(&counts64, p).map_or(NONE, |us| us.round() as u32);
        self.window_quantiles.store(pack(q(0.5), q(0.99)), Relaxed);
        let clamp = |v: u64| v.min(u64::from(u32::MAX)) as u32;
        self.window_counts
            .store(pack(clamp(searches), clamp(statements)), Relaxed);
        self.window_start_ms.store(started, Release);
    }

    /// The last closed window; `None` before the second rotation.
    pub fn window(&self) -> Option<Window> {
        let start_ms = self.window_start_ms.load(Acquire);
        if start_ms == 0 {
            return None;
        }
        let (p50, p99) = unpack(self.window_quantiles.load(Relaxed));
        let (searches, statements) = unpack(self.window_counts.load(Relaxed));
        let some = |v: u32| (v != NONE).then_some(v);
        Some(Window {
            start_ms,
            end_ms: self.mark_at_ms.load(Acquire),
            searches,
            statements,
            p50_us: some(p50),
            p99_us: some(p99),
        })
    }

    /// Records the tenant's collections and its limit.
    pub fn set_collections(&self, count: u32, max: u32) {
        self.collections.store(pack(count, max), Relaxed);
    }

    /// The tenant's collections and its limit, as last recorded.
    pub fn collections(&self) -> (u32, u32) {
        unpack(self.collections.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_upper_bound() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(25), 0);
        assert_eq!(bucket_of(26), 1);
        assert_eq!(bucket_of(100), 2);
        assert_eq!(bucket_of(1_000_000), 14);
        assert_eq!(bucket_of(1_000_001), 15);
    }

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let mut counts = [0u64; BUCKETS];
        assert_eq!(quantile(&counts, 0.5), None);
        counts[3] = 100; // 100 searches between 100 and 250 µs
        assert_eq!(quantile(&counts, 0.5), Some(175.0));
        assert_eq!(quantile(&counts, 1.0), Some(250.0));
        counts[15] = 1; // one beyond a second
        assert_eq!(quantile(&counts, 1.0), Some(1_000_000.0));
        let p99 = quantile(&counts, 0.99).unwrap();
        assert!(p99 > 240.0 && p99 <= 250.0, "{p99}");
    }

    #[test]
    fn a_window_holds_what_happened_in_it() {
        let m = TenantMetrics::default();
        m.rotate(500, 0, 0);
        assert_eq!(m.window(), None, "a record never reset is only marked");
        m.reset(1_000);
        assert_eq!(m.window(), None);
        for _ in 0..99 {
            m.observe_search(150);
        }
        m.observe_search(40_000);
        m.rotate(61_000, 100, 130);
        let w = m.window().unwrap();
        assert_eq!(
            (w.start_ms, w.end_ms, w.searches, w.statements),
            (1_000, 61_000, 100, 130)
        );
        assert!((w.qps() - 100.0 / 60.0).abs() < 1e-9);
        let (p50, p99) = (w.p50_us.unwrap(), w.p99_us.unwrap());
        assert!((100..=250).contains(&p50), "{p50}");
        assert!(
            (100..=250).contains(&p99),
            "{p99}: 99 of 100 searches were fast"
        );
        // A quiet minute: no searches, no quantiles; the histogram stays cumulative.
        m.rotate(121_000, 100, 130);
        let w = m.window().unwrap();
        assert_eq!((w.searches, w.p99_us), (0, None));
        assert_eq!(m.histogram().count(), 100);
        assert_eq!(m.histogram().sum_us, 99 * 150 + 40_000);
    }

    #[test]
    fn concurrent_observers_lose_nothing() {
        let m = std::sync::Arc::new(TenantMetrics::default());
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        m.observe_search((t * 1000 + i) % 3000);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(m.histogram().count(), 40_000);
    }
}
