//! Execution slots and the queue of statements waiting for one.
//!
//! At most `cap` statements run at once server-wide, and at most a tenant's
//! `max_concurrent` of its own. The last [`reserve`] slots go only to tenants that run
//! nothing yet: however many sessions one tenant opens, another tenant's statement finds a
//! slot at once instead of queueing behind the busy tenant's long statements, and the busy
//! tenant alone still has `cap - reserve` slots, three per CPU at the extension's default
//! cap (four times the CPUs). A statement takes a slot with [`Queue::try_admit`] (two compare-and-swaps, no
//! lock) or, when none is free to it, queues with [`Queue::enqueue`] and is admitted by
//! [`Queue::dispatch`] in weighted fair order ([`crate::fair`]); whoever frees a slot
//! ([`Queue::release`]) dispatches when statements wait.
//!
//! [`Queue::others_active`] tells whether quiet tenants (admitted while they ran nothing and
//! had nothing waiting) other than a given one were admitted within the last
//! [`ACTIVE_WINDOW_MS`]: a backlogged tenant ([`Queue::backlogged`]) then runs half as many
//! statements, and the extension keeps it off one CPU (see its `affinity` module). Alone, or
//! among busy tenants only (whose shares the fair queue sets), it uses every slot and CPU.
//!
//! Placement changes at statement boundaries, and one statement may run for seconds: when a
//! quiet tenant becomes active, [`Queue::note_admission`] says so and [`Queue::to_move`]
//! names the statements already running for tenants that are now crowded, from the
//! [`Runner`] record each process keeps of the tenant it runs a statement for; the caller
//! moves them at once instead of letting them run beside the quiet tenant until they end.
//!
//! Everything is an atomic, so the queue can live in shared memory, one wait slot and one
//! runner record per process. The lock discipline is the caller's: [`Queue::enqueue`], [`Queue::dispatch`],
//! [`Queue::finish_wait`] and [`Queue::leave`] run under one exclusive lock; the fast path
//! ([`Queue::try_admit`], [`Queue::release`], [`Queue::is_admitted`]) runs without it. A
//! waiter is told it was admitted through an opaque `wake` value it queued with (the
//! extension stores the address of the backend's latch and sets it).
//!
//! A release never waits for the lock: it [requests](Queue::request_dispatch) a dispatch
//! and tries the lock; when someone holds it, the holder dispatches before it lets go and
//! looks for requests again after ([`Queue::take_dispatch_request`]). A quiet tenant's
//! statement therefore never sleeps behind a busy tenant's backend that was preempted while
//! holding the lock (that cost one scheduler tick, 4 ms, to about one statement in a
//! hundred).

use std::sync::atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering::*};

use crate::fair::{self, Waiter};
use crate::registry::Registry;

const FREE: u32 = 0;
const WAITING: u32 = 1;
const ADMITTED: u32 = 2;

/// Server-wide counters and the fair queue's clock.
#[repr(C)]
#[derive(Default)]
pub struct Header {
    running: AtomicU32,
    waiting: AtomicU32,
    vclock_bits: AtomicU64,
    seq: AtomicU64,
    /// The quiet tenant admitted last and when (ms, to 10 ms), and when another quiet tenant
    /// was admitted before it: whether tenants other than a given one were admitted lately,
    /// without a write per admission.
    last_tenant: AtomicU32,
    last_ms: AtomicI64,
    others_ms: AtomicI64,
    /// A release freed a slot while statements waited and left their dispatch to the
    /// lock's holder.
    dispatch_requested: AtomicU32,
}

/// How long (ms) after its last admission a tenant counts as active for others.
pub const ACTIVE_WINDOW_MS: i64 = 1000;

/// Execution slots out of `cap` kept for tenants that run nothing yet: a quarter, at least
/// one (none with a cap of one, which serializes everything by choice).
pub fn reserve(cap: u32) -> u32 {
    if cap < 2 {
        0
    } else {
        (cap / 4).max(1)
    }
}

/// One process's place in the queue.
#[repr(C)]
#[derive(Default)]
pub struct WaitSlot {
    state: AtomicU32,
    tenant: AtomicU32,
    start_bits: AtomicU64,
    finish_bits: AtomicU64,
    /// How to wake the waiter (opaque here).
    wake: AtomicU64,
    /// Arrival order, for ties.
    seq: AtomicU64,
}

/// What one process runs, for others to see: the tenant whose statement it runs and its
/// process id, so that a quiet tenant's admission can move a crowded tenant's running
/// statements ([`Queue::to_move`]). Each record has its cache line: its process writes it at
/// the start and end of every statement.
#[repr(C, align(64))]
#[derive(Default)]
pub struct Runner {
    pid: AtomicI32,
    /// The tenant slot + 1; 0: no tenant statement.
    tenant: AtomicU32,
    /// Another process changed where this one runs since it last placed itself.
    moved: AtomicU32,
}

/// Bytes of a queue for `processes` processes: a [`Header`] followed by a wait slot per
/// process, then (at the next multiple of a [`Runner`]'s alignment: see [`runners_at`]) a
/// runner record per process.
pub fn bytes(processes: usize) -> usize {
    std::mem::size_of::<Header>()
        + processes * std::mem::size_of::<WaitSlot>()
        + (std::mem::align_of::<Runner>() - 1)
        + processes * std::mem::size_of::<Runner>()
}

/// Where the runner records of a queue at `base` for `processes` processes start: the first
/// address after the wait slots aligned for a [`Runner`] (a slice of them must be aligned).
pub fn runners_at(base: *mut u8, processes: usize) -> *mut u8 {
    let end = base
        .wrapping_add(std::mem::size_of::<Header>() + processes * std::mem::size_of::<WaitSlot>());
    end.wrapping_add(end.align_offset(std::mem::align_of::<Runner>()))
}

/// Increments `counter` if it is below `limit` (`limit <= 0`: no limit).
fn try_increment(counter: &AtomicI64, limit: i64) -> bool {
    let mut cur = counter.load(Acquire);
    loop {
        if limit > 0 && cur >= limit {
            return false;
        }
        match counter.compare_exchange_weak(cur, cur + 1, AcqRel, Acquire) {
            Ok(_) => return true,
            Err(actual) => cur = actual,
        }
    }
}

/// Increments `counter` if it is below `limit`.
fn try_increment_u32(counter: &AtomicU32, limit: u32) -> bool {
    let mut cur = counter.load(Acquire);
    loop {
        if cur >= limit {
            return false;
        }
        match counter.compare_exchange_weak(cur, cur + 1, AcqRel, Acquire) {
            Ok(_) => return true,
            Err(actual) => cur = actual,
        }
    }
}

/// The queue over a header, its wait slots and the processes' runner records.
pub struct Queue<'a> {
    header: &'a Header,
    slots: &'a [WaitSlot],
    runners: &'a [Runner],
}

/// A running statement to move: its process, its tenant, and on how many CPUs it may run
/// ([`Queue::crowding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub pid: i32,
    pub tenant: usize,
    pub cpus: u32,
}

impl<'a> Queue<'a> {
    pub fn new(header: &'a Header, slots: &'a [WaitSlot], runners: &'a [Runner]) -> Queue<'a> {
        Queue {
            header,
            slots,
            runners,
        }
    }

    /// The server-wide slots a statement of `tenant` may fill: all of them while the tenant
    /// runs nothing and has no other statement waiting (`queued`: this one waits), all but
    /// the [`reserve`] otherwise. A backlogged tenant whose statements all ended for a
    /// moment does not take the reserve: its waiters are admitted in fair order.
    fn server_limit(reg: &Registry<'_>, tenant: usize, cap: u32, queued: bool) -> u32 {
        let t = reg.slot(tenant);
        if t.running.load(Relaxed) == 0 && t.waiting.load(Relaxed) <= u32::from(queued) {
            cap
        } else {
            cap - reserve(cap)
        }
    }

    /// The most statements `tenant` may run at once: its `max_concurrent` within the slots
    /// left to a tenant that runs statements (`cap - reserve`), and within half of those
    /// while quiet tenants are active ([`Queue::others_active`] at
    /// `now_ms`): alone, a busy tenant keeps every CPU busy with statements that wait on
    /// memory or I/O; beside quiet tenants, fewer of its statements share its CPUs.
    pub fn concurrency_of(&self, reg: &Registry<'_>, tenant: usize, cap: u32, now_ms: i64) -> u32 {
        let mut server = (cap - reserve(cap)).max(1);
        if self.others_active(tenant, now_ms) {
            server = (server / 2).max(1);
        }
        match reg.slot(tenant).max_concurrent.load(Relaxed) {
            own if own > 0 => server.min(own as u32),
            _ => server,
        }
    }

    /// Whether a statement of `tenant` would be admitted now.
    fn may_run(&self, reg: &Registry<'_>, tenant: usize, cap: u32, now_ms: i64) -> bool {
        !self.at_own_limit(reg, tenant, cap, now_ms)
            && self.header.running.load(Relaxed) < Self::server_limit(reg, tenant, cap, true)
    }

    /// Whether `tenant` runs as many statements as it may ([`Queue::concurrency_of`]): held
    /// back by its own limits rather than by other tenants' statements.
    pub fn at_own_limit(&self, reg: &Registry<'_>, tenant: usize, cap: u32, now_ms: i64) -> bool {
        reg.slot(tenant).running.load(Relaxed)
            >= i64::from(self.concurrency_of(reg, tenant, cap, now_ms))
    }

    /// Takes a server slot and one of `tenant`'s, both or neither (`queued`: for a
    /// statement that waits).
    fn take(&self, reg: &Registry<'_>, tenant: usize, cap: u32, now_ms: i64, queued: bool) -> bool {
        let limit = Self::server_limit(reg, tenant, cap, queued);
        if !try_increment_u32(&self.header.running, limit) {
            return false;
        }
        let limit = i64::from(self.concurrency_of(reg, tenant, cap, now_ms));
        if try_increment(&reg.slot(tenant).running, limit) {
            return true;
        }
        self.header.running.fetch_sub(1, AcqRel);
        false
    }

    /// The lock-free path: takes a slot when there is room server-wide and for the tenant.
    ///
    /// Waiters never see room go unused: whoever frees a slot dispatches the queue under the
    /// lock, so room that exists while statements wait is room none of them may take (their
    /// tenants are at their limit, or run statements and the room is the reserve); taking it
    /// here skips no one. (A newcomer can win the moment between a release and its
    /// dispatch; under saturation newcomers arrive after that dispatch, so weights hold.)
    /// Keeping this path off the lock keeps a quiet tenant's statements off it while a
    /// noisy tenant's are queued.
    pub fn try_admit(&self, reg: &Registry<'_>, tenant: usize, cap: u32, now_ms: i64) -> bool {
        self.take(reg, tenant, cap, now_ms, false)
    }

    /// Whether `tenant` has statements waiting or runs as many as it may.
    pub fn backlogged(&self, reg: &Registry<'_>, tenant: usize, cap: u32, now_ms: i64) -> bool {
        reg.slot(tenant).waiting.load(Relaxed) > 0 || self.at_own_limit(reg, tenant, cap, now_ms)
    }

    /// Records that `tenant` was admitted at `now_ms` if it ran nothing before and has
    /// nothing waiting: a quiet tenant (see [`Queue::others_active`]). A busy tenant's
    /// statements do not count even when its queue runs empty for a moment; counting them
    /// would halve the share of the busy tenants beside it ([`Queue::concurrency_of`]).
    /// Writes shared memory when that tenant is another than the last one, and otherwise
    /// at most every 10 ms.
    ///
    /// Returns whether this admission made quiet tenants active for tenants that did not see
    /// any a moment before: their statements already running should move
    /// ([`Queue::to_move`]).
    pub fn note_admission(&self, reg: &Registry<'_>, tenant: usize, now_ms: i64) -> bool {
        let t = reg.slot(tenant);
        if t.running.load(Relaxed) != 1 || t.waiting.load(Relaxed) != 0 {
            return false;
        }
        let h = self.header;
        let last = h.last_ms.load(Relaxed);
        let lapsed = |at: i64| at <= 0 || now_ms - at >= ACTIVE_WINDOW_MS;
        if h.last_tenant.load(Relaxed) == tenant as u32 {
            if now_ms - last >= 10 {
                h.last_ms.store(now_ms, Relaxed);
            }
            // Tenants other than this one saw it as active until its window lapsed.
            lapsed(last)
        } else {
            // Racing admissions may mix the three fields for a moment; the answer is a
            // placement hint, right again at the next admission.
            let before = h.others_ms.swap(last, Relaxed);
            h.last_tenant.store(tenant as u32, Relaxed);
            h.last_ms.store(now_ms, Relaxed);
            // Tenants other than the last quiet one saw it until its window lapsed; the last
            // one saw the quiet tenant before it.
            lapsed(last) || lapsed(before)
        }
    }

    /// Whether a statement of `tenant` runs crowded at `now_ms` (`queued`: it had to wait
    /// for its slot): quiet tenants are active ([`Queue::others_active`]) and the tenant is
    /// backlogged ([`Queue::backlogged`]) or the statement queued. Returns on how many CPUs
    /// it may then run: as many as statements it may run ([`Queue::concurrency_of`]).
    pub fn crowding(
        &self,
        reg: &Registry<'_>,
        tenant: usize,
        cap: u32,
        now_ms: i64,
        queued: bool,
    ) -> Option<u32> {
        let crowded = self.others_active(tenant, now_ms)
            && (queued || self.backlogged(reg, tenant, cap, now_ms));
        crowded.then(|| self.concurrency_of(reg, tenant, cap, now_ms))
    }

    /// Records that process `process` (`pid`) runs a statement of `tenant`, or none.
    pub fn set_runner(&self, process: usize, pid: i32, tenant: Option<usize>) {
        if let Some(r) = self.runners.get(process) {
            r.tenant.store(0, Relaxed);
            r.pid.store(pid, Relaxed);
            r.tenant.store(tenant.map_or(0, |t| t as u32 + 1), Release);
        }
    }

    /// The tenant whose statement process `process` runs, if any.
    pub fn runner_tenant(&self, process: usize) -> Option<usize> {
        let t = self.runners.get(process)?.tenant.load(Acquire);
        (t > 0).then(|| t as usize - 1)
    }

    /// Whether another process moved process `process` since it last asked (it then places
    /// itself anew rather than trust what it last set).
    pub fn take_moved(&self, process: usize) -> bool {
        self.runners
            .get(process)
            .is_some_and(|r| r.moved.swap(0, AcqRel) != 0)
    }

    /// The statements running for tenants other than `admitted` that run crowded at `now_ms`
    /// ([`Queue::crowding`]), each marked as moved: called when [`Queue::note_admission`]
    /// says quiet tenants just became active, so that statements admitted before do not run
    /// where the quiet tenant's do until they end. A process that ends its statement
    /// meanwhile may be moved for the one it starts next; it places itself again at the
    /// statement after (a placement is a hint, never a limit).
    pub fn to_move(&self, reg: &Registry<'_>, admitted: usize, cap: u32, now_ms: i64) -> Vec<Move> {
        let mut crowded: Vec<(usize, Option<u32>)> = Vec::new();
        let mut moves = Vec::new();
        for r in self.runners {
            let t = r.tenant.load(Acquire);
            if t == 0 || t as usize - 1 == admitted {
                continue;
            }
            let tenant = t as usize - 1;
            let cpus = match crowded.iter().find(|(c, _)| *c == tenant) {
                Some(&(_, cpus)) => cpus,
                None => {
                    let cpus = self.crowding(reg, tenant, cap, now_ms, false);
                    crowded.push((tenant, cpus));
                    cpus
                }
            };
            let pid = r.pid.load(Relaxed);
            if let (Some(cpus), true) = (cpus, pid > 0) {
                r.moved.store(1, Release);
                moves.push(Move { pid, tenant, cpus });
            }
        }
        moves
    }

    /// Whether quiet tenants other than `tenant` were admitted within the last
    /// [`ACTIVE_WINDOW_MS`] before `now_ms`.
    pub fn others_active(&self, tenant: usize, now_ms: i64) -> bool {
        let h = self.header;
        let at = if h.last_tenant.load(Relaxed) == tenant as u32 {
            h.others_ms.load(Relaxed)
        } else {
            h.last_ms.load(Relaxed)
        };
        at > 0 && now_ms - at < ACTIVE_WINDOW_MS
    }

    /// Queues a statement of `tenant` (under the lock), tagged by the tenant's weight, and
    /// dispatches; returns its wait slot, `None` when every slot is taken (one per process
    /// makes that a caller's bug).
    pub fn enqueue(
        &self,
        reg: &Registry<'_>,
        tenant: usize,
        wake: u64,
        cap: u32,
        now_ms: i64,
        on_admit: impl FnMut(u64),
    ) -> Option<usize> {
        let h = self.header;
        let i = self
            .slots
            .iter()
            .position(|w| w.state.load(Acquire) == FREE)?;
        let t = reg.slot(tenant);
        let weight = f64::from_bits(t.weight_bits.load(Relaxed));
        let weight = if weight > 0.0 { weight } else { 1.0 };
        let w = fair::tag(
            i,
            tenant,
            weight,
            f64::from_bits(h.vclock_bits.load(Relaxed)),
            f64::from_bits(t.last_finish_bits.load(Relaxed)),
        );
        t.last_finish_bits.store(w.finish.to_bits(), Relaxed);
        let slot = &self.slots[i];
        slot.tenant.store(tenant as u32, Relaxed);
        slot.start_bits.store(w.start.to_bits(), Relaxed);
        slot.finish_bits.store(w.finish.to_bits(), Relaxed);
        slot.wake.store(wake, Relaxed);
        slot.seq.store(h.seq.fetch_add(1, Relaxed), Relaxed);
        slot.state.store(WAITING, Release);
        h.waiting.fetch_add(1, Relaxed);
        t.waiting.fetch_add(1, Relaxed);
        self.dispatch(reg, cap, now_ms, on_admit);
        Some(i)
    }

    /// Admits waiters in fair order while there is room (under the lock), calling `on_admit`
    /// with each admitted waiter's `wake` value.
    pub fn dispatch(
        &self,
        reg: &Registry<'_>,
        cap: u32,
        now_ms: i64,
        mut on_admit: impl FnMut(u64),
    ) {
        let h = self.header;
        while h.running.load(Relaxed) < cap && h.waiting.load(Relaxed) > 0 {
            // The waiters in arrival order (fair::next breaks ties by position).
            let mut waiting: Vec<(u64, Waiter)> = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, w)| w.state.load(Acquire) == WAITING)
                .map(|(i, w)| {
                    let waiter = Waiter {
                        id: i,
                        tenant: w.tenant.load(Relaxed) as usize,
                        start: f64::from_bits(w.start_bits.load(Relaxed)),
                        finish: f64::from_bits(w.finish_bits.load(Relaxed)),
                    };
                    (w.seq.load(Relaxed), waiter)
                })
                .collect();
            waiting.sort_by_key(|(seq, _)| *seq);
            let tags: Vec<Waiter> = waiting.into_iter().map(|(_, w)| w).collect();
            let Some(pick) = fair::next(&tags, |t| self.may_run(reg, t, cap, now_ms)) else {
                return;
            };
            let chosen = tags[pick];
            // The same compare-and-swaps as the lock-free path, so neither limit is
            // overshot by a concurrent fast admission.
            if !self.take(reg, chosen.tenant, cap, now_ms, true) {
                return;
            }
            let w = &self.slots[chosen.id];
            w.state.store(ADMITTED, Release);
            h.waiting.fetch_sub(1, Relaxed);
            reg.slot(chosen.tenant).waiting.fetch_sub(1, Relaxed);
            h.vclock_bits.store(chosen.start.to_bits(), Relaxed);
            on_admit(w.wake.load(Relaxed));
        }
    }

    /// Whether the waiter in slot `i` was admitted (no lock needed).
    pub fn is_admitted(&self, i: usize) -> bool {
        self.slots[i].state.load(Acquire) == ADMITTED
    }

    /// An admitted waiter frees its wait slot (under the lock); it holds its execution slot.
    pub fn finish_wait(&self, i: usize) {
        self.slots[i].state.store(FREE, Release);
    }

    /// A waiter gives up (timeout, suspension, error; under the lock). Returns its tenant if
    /// it had been admitted meanwhile: the caller then holds an execution slot it must
    /// [`release`](Queue::release).
    pub fn leave(&self, reg: &Registry<'_>, i: usize) -> Option<usize> {
        let w = &self.slots[i];
        let state = w.state.load(Acquire);
        if state == WAITING {
            self.header.waiting.fetch_sub(1, Relaxed);
            reg.slot(w.tenant.load(Relaxed) as usize)
                .waiting
                .fetch_sub(1, Relaxed);
        }
        w.state.store(FREE, Release);
        (state == ADMITTED).then(|| w.tenant.load(Relaxed) as usize)
    }

    /// Frees an execution slot of `tenant`; returns whether statements wait (the caller then
    /// dispatches under the lock; a waiter that queues after this check dispatches itself).
    pub fn release(&self, reg: &Registry<'_>, tenant: usize) -> bool {
        self.header.running.fetch_sub(1, AcqRel);
        reg.slot(tenant).running.fetch_sub(1, AcqRel);
        self.header.waiting.load(Acquire) > 0
    }

    /// Asks for a dispatch: whoever holds the lock, or takes it next, runs it.
    pub fn request_dispatch(&self) {
        self.header.dispatch_requested.store(1, SeqCst);
    }

    /// Whether a dispatch was requested (no lock needed).
    pub fn dispatch_requested(&self) -> bool {
        self.header.dispatch_requested.load(SeqCst) != 0
    }

    /// Takes the pending dispatch request, if any (under the lock).
    pub fn take_dispatch_request(&self) -> bool {
        self.header.dispatch_requested.swap(0, SeqCst) != 0
    }

    /// Statements holding execution slots, and statements waiting.
    pub fn figures(&self) -> (u32, u32) {
        (
            self.header.running.load(Relaxed),
            self.header.waiting.load(Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::owned;
    use crate::registry::Limits;
    use std::sync::{Arc, Mutex};

    struct Mem {
        registry: crate::registry::tests::Owned,
        header: Header,
        slots: Vec<WaitSlot>,
        runners: Vec<Runner>,
        /// The caller's lock.
        lock: Mutex<()>,
    }

    fn mem(tenants: &[(i32, f64)], waiters: usize) -> Arc<Mem> {
        let m = Mem {
            registry: owned(16),
            header: Header::default(),
            slots: (0..waiters).map(|_| WaitSlot::default()).collect(),
            runners: (0..waiters).map(|_| Runner::default()).collect(),
            lock: Mutex::new(()),
        };
        {
            let reg = m.registry.registry(true);
            for (n, &(max_concurrent, weight)) in tenants.iter().enumerate() {
                let limits = Limits {
                    max_vectors: 0,
                    max_storage_bytes: 0,
                    max_qps: 0,
                    max_concurrent,
                    weight,
                };
                let (slot, s, _) = reg.upsert(1, &format!("t{n}"), true).unwrap();
                s.set_limits(limits);
                assert_eq!(slot, n);
            }
        }
        Arc::new(m)
    }

    impl Mem {
        fn queue(&self) -> Queue<'_> {
            Queue::new(&self.header, &self.slots, &self.runners)
        }
    }

    #[test]
    fn fast_path_respects_both_limits() {
        let m = mem(&[(2, 1.0), (0, 1.0)], 4);
        let (reg, q) = (m.registry.registry(false), m.queue());
        assert!(q.try_admit(&reg, 0, 3, 0));
        assert!(q.try_admit(&reg, 0, 3, 0));
        assert!(
            !q.try_admit(&reg, 0, 3, 0),
            "tenant 0 is at max_concurrent 2"
        );
        assert!(q.try_admit(&reg, 1, 3, 0));
        assert!(!q.try_admit(&reg, 1, 3, 0), "the server is at its cap of 3");
        assert_eq!(q.figures(), (3, 0));
        assert!(!q.release(&reg, 0));
        assert!(
            !q.try_admit(&reg, 0, 3, 0),
            "tenant 0 runs one: the last slot is the reserve"
        );
        assert!(!q.release(&reg, 1));
        assert!(q.try_admit(&reg, 0, 3, 0));
    }

    #[test]
    fn the_reserve_goes_to_tenants_that_run_nothing() {
        // Cap 8: two slots are kept for tenants that run nothing.
        let m = mem(&[(0, 1.0), (0, 1.0), (0, 1.0), (0, 1.0)], 8);
        let (reg, q) = (m.registry.registry(false), m.queue());
        assert_eq!(
            (reserve(1), reserve(2), reserve(4), reserve(8), reserve(64)),
            (0, 1, 1, 2, 16)
        );
        for _ in 0..6 {
            assert!(q.try_admit(&reg, 0, 8, 0));
        }
        assert!(
            !q.try_admit(&reg, 0, 8, 0),
            "a busy tenant alone gets cap - reserve"
        );
        assert_eq!(q.concurrency_of(&reg, 0, 8, 0), 6);
        assert!(q.at_own_limit(&reg, 0, 8, 0));
        assert!(
            q.try_admit(&reg, 1, 8, 0),
            "another tenant finds a slot at once"
        );
        assert!(
            !q.try_admit(&reg, 1, 8, 0),
            "but only one while it runs one"
        );
        assert!(q.try_admit(&reg, 2, 8, 0));
        assert!(!q.try_admit(&reg, 3, 8, 0), "the server is at its cap");
        // A queued statement of the busy tenant does not take a freed reserve slot; one of a
        // tenant that runs nothing does.
        let mut woke = Vec::new();
        let busy = q.enqueue(&reg, 0, 10, 8, 0, |w| woke.push(w)).unwrap();
        let quiet = q.enqueue(&reg, 3, 13, 8, 0, |w| woke.push(w)).unwrap();
        assert!(q.release(&reg, 2));
        q.dispatch(&reg, 8, 0, |w| woke.push(w));
        assert_eq!(woke, vec![13]);
        assert!(q.is_admitted(quiet) && !q.is_admitted(busy));
        q.finish_wait(quiet);
        // The busy tenant's waiter is admitted when the reserve is free again, whoever
        // frees a slot.
        for tenant in [0, 1] {
            assert!(q.release(&reg, tenant));
            q.dispatch(&reg, 8, 0, |w| woke.push(w));
            assert_eq!(woke, vec![13]);
        }
        assert!(q.release(&reg, 3));
        q.dispatch(&reg, 8, 0, |w| woke.push(w));
        assert_eq!(woke, vec![13, 10]);
        assert!(q.is_admitted(busy));
        // A tenant's own max_concurrent below cap - reserve is its concurrency.
        let m = mem(&[(2, 1.0)], 1);
        assert_eq!(
            m.queue()
                .concurrency_of(&m.registry.registry(false), 0, 8, 0),
            2
        );
    }

    #[test]
    fn others_are_active_while_another_tenant_was_admitted_within_the_window() {
        let m = mem(&[(0, 1.0), (0, 1.0), (0, 1.0)], 2);
        let (reg, q) = (m.registry.registry(false), m.queue());
        let note = |t: usize, now| {
            // A quiet admission: one statement that runs, then ends.
            assert!(q.try_admit(&reg, t, 8, now));
            q.note_admission(&reg, t, now);
            q.release(&reg, t);
        };
        assert!(!q.others_active(0, 1_000), "nobody was admitted");
        note(0, 1_000);
        note(0, 1_500);
        assert!(!q.others_active(0, 1_500), "tenant 0 alone");
        assert!(q.others_active(1, 1_500), "tenant 0 is active for tenant 1");
        assert!(
            !q.others_active(1, 1_500 + ACTIVE_WINDOW_MS),
            "until its window passed"
        );
        // Tenant 1 is admitted often, tenant 0 seldom (long statements): each sees the other.
        note(1, 2_000);
        note(1, 2_600);
        assert!(
            q.others_active(0, 2_700),
            "tenant 1 was admitted 100 ms ago"
        );
        assert!(
            !q.others_active(1, 2_700),
            "tenant 0 was last admitted 1.2 s ago"
        );
        note(0, 2_800);
        assert!(q.others_active(1, 2_900) && q.others_active(0, 2_900));
        assert!(q.others_active(2, 2_900));
        assert!(
            !q.others_active(0, 2_600 + ACTIVE_WINDOW_MS),
            "tenant 1's window passed"
        );
        // A busy tenant's admissions do not count: tenant 2 runs all it may, then waits (its
        // first statement, admitted while it ran nothing, would look like a quiet one's).
        for _ in 0..6 {
            assert!(q.try_admit(&reg, 2, 8, 5_000));
            if reg.slot(2).running.load(Relaxed) > 1 {
                q.note_admission(&reg, 2, 5_000);
            }
        }
        assert!(q.backlogged(&reg, 2, 8, 5_000));
        assert!(!q.others_active(0, 5_000) && !q.others_active(1, 5_000));
        let i = q.enqueue(&reg, 2, 7, 8, 5_000, |_| {}).unwrap();
        assert!(!q.is_admitted(i), "it waits");
        assert_eq!(reg.slot(2).waiting.load(Relaxed), 1);
        assert_eq!(q.leave(&reg, i), None);
        assert!(q.backlogged(&reg, 2, 8, 5_100), "still at its limit");
        for _ in 0..5 {
            assert!(!q.release(&reg, 2));
        }
        assert!(
            !q.backlogged(&reg, 2, 8, 5_100),
            "one running, none waiting"
        );
        // Even with its queue empty, a tenant that runs statements is not a quiet one.
        assert!(q.try_admit(&reg, 2, 8, 5_200));
        q.note_admission(&reg, 2, 5_200);
        assert!(!q.others_active(0, 5_200));
        assert!(!q.release(&reg, 2));
        assert!(!q.release(&reg, 2));
        note(2, 5_300);
        assert!(q.others_active(0, 5_300));
    }

    #[test]
    fn a_busy_tenant_runs_half_as_many_while_quiet_tenants_are_active() {
        let m = mem(&[(0, 1.0), (0, 1.0), (3, 1.0)], 4);
        let (reg, q) = (m.registry.registry(false), m.queue());
        assert_eq!(
            q.concurrency_of(&reg, 0, 8, 1_000),
            6,
            "alone: cap - reserve"
        );
        for _ in 0..6 {
            assert!(q.try_admit(&reg, 0, 8, 1_000));
        }
        // Tenant 1 runs one statement, admitted while it ran nothing: a quiet tenant.
        assert!(q.try_admit(&reg, 1, 8, 1_000));
        q.note_admission(&reg, 1, 1_000);
        assert_eq!(
            q.concurrency_of(&reg, 0, 8, 1_100),
            3,
            "half while others are active"
        );
        assert!(q.at_own_limit(&reg, 0, 8, 1_100));
        for _ in 0..4 {
            assert!(!q.release(&reg, 0));
        }
        assert!(
            q.try_admit(&reg, 0, 8, 1_100),
            "two running: a third may start"
        );
        assert!(!q.try_admit(&reg, 0, 8, 1_100), "but no fourth");
        assert!(
            q.try_admit(&reg, 0, 8, 1_000 + ACTIVE_WINDOW_MS),
            "alone again"
        );
        // A tenant's own max_concurrent below the halved share still holds.
        assert_eq!(q.concurrency_of(&reg, 2, 8, 1_100), 3);
        assert_eq!(q.concurrency_of(&reg, 2, 4, 1_100), 1);
    }

    #[test]
    fn a_quiet_tenant_becoming_active_names_the_crowded_statements_to_move() {
        let m = mem(&[(0, 1.0), (0, 1.0), (0, 1.0)], 10);
        let (reg, q) = (m.registry.registry(false), m.queue());
        // Tenant 0 alone runs 6 statements in processes 0..6; its first admission was a
        // quiet one, with nobody else to move.
        for p in 0..6 {
            assert!(q.try_admit(&reg, 0, 8, 10_000));
            assert_eq!(q.note_admission(&reg, 0, 10_000), p == 0);
            q.set_runner(p, 100 + p as i32, Some(0));
        }
        assert_eq!(q.to_move(&reg, 0, 8, 10_000), vec![]);
        assert_eq!(q.crowding(&reg, 0, 8, 10_000, false), None, "alone");
        // Tenant 2 runs one statement (process 7): not backlogged.
        assert!(q.try_admit(&reg, 2, 8, 10_000));
        q.set_runner(7, 107, Some(2));
        // Two seconds later tenant 1 starts a statement in process 6: a quiet tenant that
        // nobody saw a moment before.
        assert!(q.try_admit(&reg, 1, 8, 12_000));
        q.set_runner(6, 106, Some(1));
        assert_eq!(q.runner_tenant(6), Some(1));
        assert!(q.note_admission(&reg, 1, 12_000));
        let moves = q.to_move(&reg, 1, 8, 12_000);
        assert_eq!(
            moves,
            (0..6)
                .map(|p| Move {
                    pid: 100 + p,
                    tenant: 0,
                    cpus: 3
                })
                .collect::<Vec<_>>(),
            "tenant 0's statements, on as many CPUs as it may now run statements"
        );
        assert_eq!(q.crowding(&reg, 2, 8, 12_000, false), None);
        assert_eq!(
            q.crowding(&reg, 2, 8, 12_000, true),
            Some(3),
            "a statement that queued runs crowded"
        );
        assert!(q.take_moved(0) && !q.take_moved(0), "taken once");
        assert!(!q.take_moved(6) && !q.take_moved(7));
        assert!(!q.take_moved(1000), "no such process");
        // Tenant 1 again within the window: nobody newly crowded.
        assert!(!q.release(&reg, 1));
        q.set_runner(6, 106, None);
        assert_eq!(q.runner_tenant(6), None);
        assert!(q.try_admit(&reg, 1, 8, 12_500));
        assert!(!q.note_admission(&reg, 1, 12_500));
        assert!(!q.release(&reg, 1));
        // After the window lapsed, tenant 1's next statement crowds tenant 0 again.
        assert!(q.try_admit(&reg, 1, 8, 12_500 + ACTIVE_WINDOW_MS));
        assert!(q.note_admission(&reg, 1, 12_500 + ACTIVE_WINDOW_MS));
        assert!(!q.release(&reg, 1));
        // Tenant 2, quiet, after tenant 1 within the window: tenant 1 saw nobody before it
        // (its own admissions do not count for itself), but tenant 1 runs nothing to move.
        assert!(!q.release(&reg, 2));
        assert!(q.try_admit(&reg, 2, 8, 12_600 + ACTIVE_WINDOW_MS));
        assert!(q.note_admission(&reg, 2, 12_600 + ACTIVE_WINDOW_MS));
        assert!(q.to_move(&reg, 2, 8, 12_600 + ACTIVE_WINDOW_MS).len() == 6);
        // Tenants 1 and 2 taking turns within the window: nobody newly crowded.
        assert!(!q.release(&reg, 2));
        assert!(q.try_admit(&reg, 1, 8, 12_700 + ACTIVE_WINDOW_MS));
        assert!(!q.note_admission(&reg, 1, 12_700 + ACTIVE_WINDOW_MS));
    }

    #[test]
    fn a_backlogged_tenant_between_statements_does_not_take_the_reserve() {
        let m = mem(&[(0, 1.0), (0, 1.0)], 4);
        let (reg, q) = (m.registry.registry(false), m.queue());
        for _ in 0..3 {
            assert!(q.try_admit(&reg, 0, 4, 0));
        }
        assert!(
            q.try_admit(&reg, 1, 4, 0),
            "the reserve, for tenant 1 running nothing"
        );
        let waiter = q.enqueue(&reg, 1, 5, 4, 0, |_| panic!("no room")).unwrap();
        assert!(q.release(&reg, 1));
        // Tenant 1 runs nothing now but has a statement waiting: a newcomer of tenant 1 may
        // not jump the queue into the reserve; its waiter is admitted by the dispatch.
        assert!(!q.try_admit(&reg, 1, 4, 0));
        let mut woke = Vec::new();
        q.dispatch(&reg, 4, 0, |w| woke.push(w));
        assert_eq!(woke, vec![5]);
        assert!(q.is_admitted(waiter));
    }

    #[test]
    fn runner_records_are_aligned_within_the_bytes_asked_for() {
        for processes in [1, 7, 100] {
            let mut mem = vec![0u64; bytes(processes) / 8 + 1];
            for shift in [0, 8, 24, 40] {
                let base = (mem.as_mut_ptr() as *mut u8).wrapping_add(shift);
                let at = runners_at(base, processes);
                assert_eq!(at as usize % std::mem::align_of::<Runner>(), 0);
                let end = at as usize + processes * std::mem::size_of::<Runner>();
                assert!(
                    end <= base as usize + bytes(processes),
                    "{processes} {shift}"
                );
            }
        }
    }

    #[test]
    fn a_dispatch_request_is_taken_once() {
        let m = mem(&[(0, 1.0)], 1);
        let q = m.queue();
        assert!(!q.dispatch_requested() && !q.take_dispatch_request());
        q.request_dispatch();
        q.request_dispatch();
        assert!(q.dispatch_requested());
        assert!(q.take_dispatch_request());
        assert!(!q.dispatch_requested() && !q.take_dispatch_request());
    }

    #[test]
    fn releases_admit_waiters_by_weight() {
        // One server slot; tenant 0 weighs 2, tenant 1 weighs 1; both always backlogged.
        let m = mem(&[(0, 2.0), (0, 1.0)], 8);
        let (reg, q) = (m.registry.registry(false), m.queue());
        assert!(q.try_admit(&reg, 0, 1, 0));
        let mut admitted = Vec::new();
        let mut queued: Vec<usize> = Vec::new();
        // Tenant 1's statements queue first: arrival order alone would admit them first.
        let tenant_of = |wake: u64| usize::from(wake >= 3) ^ 1;
        for wake in 0..6u64 {
            let tenant = tenant_of(wake);
            let i = q
                .enqueue(&reg, tenant, wake, 1, 0, |w| admitted.push(w))
                .unwrap();
            queued.push(i);
        }
        assert!(admitted.is_empty(), "the only slot is taken");
        let mut holder = 0usize;
        let mut order = Vec::new();
        for _ in 0..6 {
            assert!(q.release(&reg, holder));
            q.dispatch(&reg, 1, 0, |w| admitted.push(w));
            let wake = *admitted.last().unwrap();
            let i = queued[wake as usize];
            assert!(q.is_admitted(i));
            q.finish_wait(i);
            holder = tenant_of(wake);
            order.push(holder);
        }
        let first_three: Vec<usize> = order[..3].to_vec();
        assert_eq!(
            first_three.iter().filter(|&&t| t == 0).count(),
            2,
            "2:1 while both wait: {order:?}"
        );
        assert_eq!(q.figures(), (1, 0));
    }

    #[test]
    fn a_waiter_that_leaves_after_being_admitted_hands_the_slot_back() {
        let m = mem(&[(0, 1.0)], 2);
        let (reg, q) = (m.registry.registry(false), m.queue());
        assert!(q.try_admit(&reg, 0, 1, 0));
        let i = q.enqueue(&reg, 0, 7, 1, 0, |_| panic!("no room")).unwrap();
        assert_eq!(
            q.leave(&reg, i),
            None,
            "still waiting: nothing to hand back"
        );
        assert_eq!(q.figures(), (1, 0));
        let i = q.enqueue(&reg, 0, 7, 1, 0, |_| panic!("no room")).unwrap();
        assert!(q.release(&reg, 0));
        let mut woke = None;
        q.dispatch(&reg, 1, 0, |w| woke = Some(w));
        assert_eq!(woke, Some(7));
        assert_eq!(q.leave(&reg, i), Some(0), "admitted, then gave up");
        assert!(!q.release(&reg, 0));
        assert_eq!(q.figures(), (0, 0));
    }

    /// Threads take slots by the fast path or by queueing, as backends do, and check that
    /// neither limit is ever exceeded and that every statement is admitted.
    #[test]
    fn threads_never_exceed_the_limits() {
        const CAP: u32 = 3;
        let m = mem(&[(1, 1.0), (2, 1.0), (0, 3.0)], 12);
        let peak = Arc::new([AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)]);
        let server_peak = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..12)
            .map(|n| {
                let (m, peak, server_peak) = (m.clone(), peak.clone(), server_peak.clone());
                std::thread::spawn(move || {
                    let tenant = n % 3;
                    let reg = m.registry.registry(false);
                    let q = m.queue();
                    for _ in 0..300 {
                        if !q.try_admit(&reg, tenant, CAP, 0) {
                            let i = {
                                let _g = m.lock.lock().unwrap();
                                q.enqueue(&reg, tenant, n as u64, CAP, 0, |_| {}).unwrap()
                            };
                            while !q.is_admitted(i) {
                                std::thread::yield_now();
                            }
                            let _g = m.lock.lock().unwrap();
                            q.finish_wait(i);
                        }
                        let running = reg.slot(tenant).running.load(SeqCst);
                        peak[tenant].fetch_max(running, SeqCst);
                        server_peak.fetch_max(q.figures().0, SeqCst);
                        std::thread::yield_now();
                        if q.release(&reg, tenant) {
                            let _g = m.lock.lock().unwrap();
                            q.dispatch(&reg, CAP, 0, |_| {});
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(server_peak.load(SeqCst) <= CAP);
        assert!(peak[0].load(SeqCst) <= 1, "tenant 0: max_concurrent 1");
        assert!(peak[1].load(SeqCst) <= 2, "tenant 1: max_concurrent 2");
        assert_eq!(m.queue().figures(), (0, 0), "every slot came back");
    }
}
