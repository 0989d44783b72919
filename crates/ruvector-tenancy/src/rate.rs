//! Per-tenant token buckets, lock-free in shared memory.
//!
//! The state is one `AtomicU64`: the bucket's fill in millitokens (upper 24 bits would not
//! do for large rates, so the split is 32/32: millitokens | milliseconds since an epoch the
//! caller supplies, wrapping every 49 days, which only matters for a bucket idle that long,
//! and then it is simply full). Refill and take happen in one compare-and-swap, so a bucket
//! never goes negative and concurrent statements of one tenant never overdraw it.

use std::sync::atomic::{AtomicU64, Ordering::*};

/// The outcome of [`take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused; a token will be there after this many milliseconds.
    Limited {
        retry_after_ms: u64,
    },
}

fn pack(millitokens: u64, ms: u32) -> u64 {
    (millitokens.min(u32::MAX as u64) << 32) | ms as u64
}

fn unpack(v: u64) -> (u64, u32) {
    (v >> 32, v as u32)
}

/// Takes one token from `bucket` at `now_ms`, refilling at `rate` tokens per second up to
/// `burst` tokens. `rate == 0` means no limit. A fresh (zero) bucket starts full.
pub fn take(bucket: &AtomicU64, now_ms: u64, rate: f64, burst: f64) -> Admission {
    if rate <= 0.0 {
        return Admission::Allowed;
    }
    let capacity = (burst.max(1.0) * 1000.0) as u64;
    let now = now_ms as u32;
    let mut cur = bucket.load(Acquire);
    loop {
        let (fill, then) = if cur == 0 {
            (capacity, now)
        } else {
            unpack(cur)
        };
        let elapsed = now.wrapping_sub(then) as u64;
        let refilled = (fill + (elapsed as f64 * rate) as u64).min(capacity);
        let (next, verdict) = if refilled >= 1000 {
            (pack(refilled - 1000, now), Admission::Allowed)
        } else {
            let missing = (1000 - refilled) as f64;
            let retry = (missing / rate).ceil() as u64;
            (
                pack(refilled, now),
                Admission::Limited {
                    retry_after_ms: retry.max(1),
                },
            )
        };
        // Never store 0: it means "fresh".
        let next = if next == 0 { 1 } else { next };
        match bucket.compare_exchange_weak(cur, next, AcqRel, Acquire) {
            Ok(_) => return verdict,
            Err(actual) => cur = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let b = AtomicU64::new(0);
        let t0 = 1_000_000;
        // A full bucket of 50 at 50/s.
        let allowed = (0..60)
            .filter(|_| take(&b, t0, 50.0, 50.0) == Admission::Allowed)
            .count();
        assert_eq!(allowed, 50);
        match take(&b, t0, 50.0, 50.0) {
            Admission::Limited { retry_after_ms } => assert_eq!(retry_after_ms, 20),
            a => panic!("{a:?}"),
        }
        // 1 s later: 50 more, not more.
        let allowed = (0..60)
            .filter(|_| take(&b, t0 + 1000, 50.0, 50.0) == Admission::Allowed)
            .count();
        assert_eq!(allowed, 50);
    }

    #[test]
    fn driven_at_ten_times_the_rate_gets_rate_times_time_plus_burst() {
        let b = AtomicU64::new(0);
        let mut allowed = 0;
        // 500 requests per second for 2 s against 50/s with a burst of 50.
        for i in 0..1000u64 {
            if take(&b, 5_000 + i * 2, 50.0, 50.0) == Admission::Allowed {
                allowed += 1;
            }
        }
        assert!((149..=151).contains(&allowed), "{allowed}");
    }

    #[test]
    fn unlimited_and_independent_buckets() {
        let a = AtomicU64::new(0);
        let b = AtomicU64::new(0);
        for _ in 0..10 {
            take(&a, 1, 1.0, 1.0);
        }
        assert_eq!(
            take(&b, 1, 1.0, 1.0),
            Admission::Allowed,
            "another tenant's bucket is untouched"
        );
        assert_eq!(
            take(&a, 1, 0.0, 0.0),
            Admission::Allowed,
            "rate 0 is unlimited"
        );
    }

    #[test]
    fn concurrent_takes_never_overdraw() {
        let b = std::sync::Arc::new(AtomicU64::new(0));
        let n: usize = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    (0..1000)
                        .filter(|_| take(&b, 42, 10.0, 100.0) == Admission::Allowed)
                        .count()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(n, 100);
    }
}
