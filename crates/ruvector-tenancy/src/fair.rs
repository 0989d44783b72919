//! Weighted fair admission of statements when the server is saturated.
//!
//! Start-time fair queuing: a waiting statement of tenant `t` gets the tag
//! `finish = max(vclock, t.last_finish) + 1 / weight(t)`; the lowest tag goes first, and
//! admitting it advances the virtual clock to its start. Backlogged tenants are admitted in
//! proportion to their weights; an idle tenant does not bank credit (its next tag starts at
//! the clock). Per-tenant concurrency limits are respected when choosing.

/// One waiting statement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waiter {
    /// Identifies the waiter to the caller (a backend's process number).
    pub id: usize,
    /// The tenant slot.
    pub tenant: usize,
    pub start: f64,
    pub finish: f64,
}

/// Tags a new waiter of a tenant whose last tag was `last_finish`; returns the waiter and the
/// tenant's new last tag.
pub fn tag(id: usize, tenant: usize, weight: f64, vclock: f64, last_finish: f64) -> Waiter {
    let start = vclock.max(last_finish);
    Waiter {
        id,
        tenant,
        start,
        finish: start + 1.0 / weight.max(1e-6),
    }
}

/// The index in `waiting` of the next statement to admit: the lowest finish tag among
/// waiters whose tenant may run another statement (`may_run(tenant)`), ties by arrival
/// order (position).
pub fn next(waiting: &[Waiter], may_run: impl Fn(usize) -> bool) -> Option<usize> {
    waiting
        .iter()
        .enumerate()
        .filter(|(_, w)| may_run(w.tenant))
        .min_by(|(i, a), (j, b)| a.finish.total_cmp(&b.finish).then(i.cmp(j)))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two always-backlogged tenants with weights 2 and 1 and one server slot: admissions
    /// split 2:1.
    #[test]
    fn backlogged_tenants_share_by_weight() {
        let weights = [2.0, 1.0];
        let mut last = [0.0f64; 2];
        let mut vclock = 0.0;
        let mut waiting: Vec<Waiter> = Vec::new();
        let mut id = 0;
        for t in 0..2 {
            for _ in 0..3 {
                let w = tag(id, t, weights[t], vclock, last[t]);
                last[t] = w.finish;
                waiting.push(w);
                id += 1;
            }
        }
        let mut admitted = [0usize; 2];
        for _ in 0..3000 {
            let i = next(&waiting, |_| true).unwrap();
            let w = waiting.remove(i);
            vclock = w.start;
            admitted[w.tenant] += 1;
            // The tenant immediately queues another statement.
            let n = tag(id, w.tenant, weights[w.tenant], vclock, last[w.tenant]);
            last[w.tenant] = n.finish;
            waiting.push(n);
            id += 1;
        }
        assert_eq!(admitted, [2000, 1000]);
    }

    #[test]
    fn per_tenant_limits_are_respected() {
        let waiting = vec![tag(0, 0, 1.0, 0.0, 0.0), tag(1, 1, 1.0, 0.0, 5.0)];
        assert_eq!(next(&waiting, |t| t != 0), Some(1));
        assert_eq!(next(&waiting, |_| false), None);
        assert_eq!(next(&waiting, |_| true), Some(0));
    }

    #[test]
    fn idle_tenants_do_not_bank_credit() {
        // Tenant 1 was idle while the clock moved to 100: its tag starts at the clock.
        let w = tag(0, 1, 1.0, 100.0, 3.0);
        assert_eq!((w.start, w.finish), (100.0, 101.0));
    }
}
