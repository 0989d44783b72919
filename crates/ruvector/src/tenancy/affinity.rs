//! Where a backend runs (Linux): its CPU scheduling policy and its CPU affinity, which
//! admission control changes for backends of backlogged tenants (see `scheduler.rs`). Every
//! call changes this process, or with [`move_other`] another backend (a process of the same
//! user), needs no privilege, and leaves it as it was on failure.

use std::cell::RefCell;

thread_local! {
    /// This backend runs as SCHED_BATCH (see `set_batch`); `None`: not known (another
    /// process changed it).
    static BATCH: RefCell<Option<bool>> = const { RefCell::new(Some(false)) };
}

const SCHED_OTHER: i32 = 0;
const SCHED_BATCH: i32 = 3;

/// Sets the scheduling policy of process `pid` (0: this one) to SCHED_BATCH or SCHED_OTHER.
fn set_policy(pid: i32, batch: bool) {
    #[repr(C)]
    struct SchedParam {
        priority: i32,
    }
    unsafe extern "C" {
        fn sched_setscheduler(pid: i32, policy: i32, param: *const SchedParam) -> i32;
    }
    let param = SchedParam { priority: 0 };
    // SAFETY: changes one process's policy between two normal ones, which needs no privilege
    // for a process of the same user; failure leaves it as it was, harmlessly.
    unsafe {
        sched_setscheduler(pid, if batch { SCHED_BATCH } else { SCHED_OTHER }, &param);
    }
}

/// Runs this process (a background worker: maintenance, or moving a tenant between
/// isolation levels) at low CPU priority: SCHED_BATCH and nice 10, on every CPU but the last
/// one (see [`confine`]), so that the tenants' own statements take the CPUs first and the
/// work still runs at full speed on idle ones. Measured on 2 CPUs: an integrity sample of a
/// large tenant running beside a quiet tenant, even at nice 10, took that tenant's p99 from
/// 0.15 ms to 4 ms (one scheduler tick). Raising one's own nice value needs no privilege,
/// and these processes never lower it again.
pub fn background() {
    set_batch(true);
    confine(0, usize::MAX);
    unsafe extern "C" {
        fn setpriority(which: i32, who: u32, prio: i32) -> i32;
    }
    const PRIO_PROCESS: i32 = 0;
    // SAFETY: changes only this process's nice value; failure leaves it as it was.
    unsafe {
        setpriority(PRIO_PROCESS, 0, 10);
    }
}

/// Linux CPU scheduling policy of this backend: a statement that has to queue waits and runs
/// as SCHED_BATCH, which the kernel does not let preempt running tasks when it wakes up. A
/// backlogged tenant's statements are woken one after another as slots free up; as normal
/// tasks each wake-up would preempt whatever other tenants run on that CPU, which is what
/// bent a quiet tenant's p99 latency (2.2–3.5× on a 2-CPU machine). Switching between
/// SCHED_OTHER and SCHED_BATCH needs no privilege.
pub fn set_batch(batch: bool) {
    if BATCH.with(|b| *b.borrow()) == Some(batch) {
        return;
    }
    set_policy(0, batch);
    BATCH.with(|b| *b.borrow_mut() = Some(batch));
}

/// A Linux CPU set (1024 CPUs), as `sched_{get,set}affinity` take it.
type CpuSet = [u64; 16];

unsafe extern "C" {
    fn sched_getaffinity(pid: i32, size: usize, mask: *mut CpuSet) -> i32;
    fn sched_setaffinity(pid: i32, size: usize, mask: *const CpuSet) -> i32;
}

thread_local! {
    /// The CPUs this backend may use when not confined (read once).
    static ALLOWED: std::cell::OnceCell<Vec<usize>> = const { std::cell::OnceCell::new() };
    /// The CPUs this backend is confined to, if it is.
    static CONFINED: RefCell<Option<Vec<usize>>> = const { RefCell::new(None) };
}

fn allowed_cpus() -> Vec<usize> {
    ALLOWED.with(|a| {
        a.get_or_init(|| {
            let mut set: CpuSet = [0; 16];
            // SAFETY: reads this process's affinity into a buffer of the size we pass.
            let ok = unsafe { sched_getaffinity(0, std::mem::size_of::<CpuSet>(), &mut set) } == 0;
            if !ok {
                return Vec::new();
            }
            (0..1024)
                .filter(|c| set[c / 64] & (1u64 << (c % 64)) != 0)
                .collect()
        })
        .clone()
    })
}

/// Sets the CPUs of process `pid` (0: this one); failure leaves it as it was.
fn set_affinity(pid: i32, cpus: &[usize]) {
    let mut set: CpuSet = [0; 16];
    for &c in cpus {
        set[c / 64] |= 1u64 << (c % 64);
    }
    // SAFETY: sets one process's affinity to CPUs this process was allowed, which needs no
    // privilege for a process of the same user; failure is harmless.
    unsafe {
        sched_setaffinity(pid, std::mem::size_of::<CpuSet>(), &set);
    }
}

/// The CPUs a confined backend of `tenant` may use when it may run `limit` statements at
/// once (see [`confine`]); `None` with fewer than 2 CPUs (nothing to keep free).
fn confined_cpus(tenant: usize, limit: usize) -> Option<Vec<usize>> {
    let all = allowed_cpus();
    if all.len() < 2 {
        return None;
    }
    let shared = all.len() - 1;
    let n = limit.clamp(1, shared);
    Some((0..n).map(|i| all[(tenant + i) % shared]).collect())
}

/// Keeps this backend on `limit` of its allowed CPUs but the last one, chosen by the tenant
/// so that all of a tenant's backends share the same ones. The last CPU is never given to a
/// confined backend: whatever the number of backlogged tenants, tenants that are not
/// backlogged find it free. A backlogged tenant's statements run in whichever of its
/// backends the queue admits next; left free to move, those rotating CPU-bound processes
/// land on every CPU in turn and stretch other tenants' tail latency (measured on 2 CPUs: a
/// quiet tenant's p99 5.8x its p99 alone floating, 0.9x confined). The tenant loses nothing
/// it may have: it cannot run more than `limit` at once.
pub fn confine(tenant: usize, limit: usize) {
    let Some(cpus) = confined_cpus(tenant, limit) else {
        return;
    };
    CONFINED.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref() != Some(&cpus) {
            set_affinity(0, &cpus);
            *c = Some(cpus);
        }
    });
}

/// Confines another backend, `pid`, running a statement of `tenant` that may run `limit`
/// at once, as [`confine`] and [`set_batch`] would from inside it: for a statement that
/// started before quiet tenants became active. The backend learns it was moved through the
/// admission queue and calls [`forget`] before it next places itself.
pub fn move_other(pid: i32, tenant: usize, limit: usize) {
    if let Some(cpus) = confined_cpus(tenant, limit) {
        set_affinity(pid, &cpus);
    }
    set_policy(pid, true);
}

/// Forgets where this backend was placed (another process moved it, see [`move_other`]):
/// the next [`confine`], [`unconfine`] and [`set_batch`] set their values whatever they
/// last set.
pub fn forget() {
    BATCH.with(|b| *b.borrow_mut() = None);
    // No confinement is empty: an empty set differs from every real one and is not `None`.
    CONFINED.with(|c| *c.borrow_mut() = Some(Vec::new()));
}

/// Runs this process (a parallel worker) where process `leader` (its leader) runs: the same
/// CPUs and, if it is SCHED_BATCH, as SCHED_BATCH. A statement's parallel workers are part
/// of its run; left free, a confined tenant's statements would still spread over every CPU.
/// Reading another process's affinity and policy needs no privilege.
pub fn follow(leader: i32) {
    unsafe extern "C" {
        fn sched_getscheduler(pid: i32) -> i32;
    }
    let mut set: CpuSet = [0; 16];
    // SAFETY: reads the leader's affinity into a buffer of the size we pass, then sets this
    // process's own; failure leaves it as it was.
    unsafe {
        if sched_getaffinity(leader, std::mem::size_of::<CpuSet>(), &mut set) == 0 {
            sched_setaffinity(0, std::mem::size_of::<CpuSet>(), &set);
        }
    }
    // SAFETY: reads the leader's policy.
    if unsafe { sched_getscheduler(leader) } == SCHED_BATCH {
        set_batch(true);
    }
}

/// Lets this backend use all its CPUs again.
pub fn unconfine() {
    if CONFINED.with(|c| c.borrow_mut().take()).is_some() {
        set_affinity(0, &allowed_cpus());
    }
}
