//! Per-tenant integrity: the state machine that turns λ_cut samples into a state with
//! hysteresis, and the gate that decides, by state and risk class, what a tenant's statement
//! may do.
//!
//! - States: normal (λ ≥ T_high), stress (T_low < λ < T_high), critical (λ ≤ T_low).
//! - normal → stress after `degrade_samples` consecutive samples below T_high; stress →
//!   critical after `critical_samples` consecutive samples at or below T_low.
//! - Recovery one step at a time (critical → stress → normal) once λ has stayed above the
//!   threshold plus `restore_threshold_offset` for `restore_hold_seconds`.
//! - No transition within `cooldown_after_transition_seconds` of the last one.
//! - An operator's override fixes the state until it expires; sampling goes on underneath.

/// A tenant's integrity state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum State {
    Normal = 0,
    Stress = 1,
    Critical = 2,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Normal => "normal",
            State::Stress => "stress",
            State::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        match s {
            "normal" => Some(State::Normal),
            "stress" => Some(State::Stress),
            "critical" => Some(State::Critical),
            _ => None,
        }
    }

    pub fn from_u32(v: u32) -> State {
        match v {
            1 => State::Stress,
            2 => State::Critical,
            _ => State::Normal,
        }
    }
}

/// Thresholds and hysteresis of a policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hysteresis {
    pub threshold_high: f64,
    pub threshold_low: f64,
    pub degrade_samples: u32,
    pub critical_samples: u32,
    pub restore_threshold_offset: f64,
    pub restore_hold_ms: i64,
    pub cooldown_ms: i64,
}

impl Default for Hysteresis {
    /// The 'standard' policy.
    fn default() -> Hysteresis {
        Hysteresis {
            threshold_high: 0.4,
            threshold_low: 0.15,
            degrade_samples: 3,
            critical_samples: 2,
            restore_threshold_offset: 0.1,
            restore_hold_ms: 300_000,
            cooldown_ms: 60_000,
        }
    }
}

/// What the machine remembers between samples.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Machine {
    pub state: Option<State>,
    /// Consecutive samples below T_high, and at or below T_low.
    pub below_high: u32,
    pub below_low: u32,
    /// Since when λ has stayed above the current restore threshold (0: it has not).
    pub restore_since_ms: i64,
    /// When the last transition happened (0: never).
    pub changed_at_ms: i64,
}

/// A state change and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: String,
}

impl Machine {
    pub fn state(&self) -> State {
        self.state.unwrap_or(State::Normal)
    }

    /// Applies a sample of λ taken at `now_ms`.
    pub fn sample(&mut self, lambda: f64, now_ms: i64, h: &Hysteresis) -> Option<Transition> {
        let from = self.state();
        self.state = Some(from);
        if lambda < h.threshold_high {
            self.below_high += 1;
        } else {
            self.below_high = 0;
        }
        if lambda <= h.threshold_low {
            self.below_low += 1;
        } else {
            self.below_low = 0;
        }
        let restore_at = match from {
            State::Normal => None,
            State::Stress => Some(h.threshold_high + h.restore_threshold_offset),
            State::Critical => Some(h.threshold_low + h.restore_threshold_offset),
        };
        match restore_at {
            Some(t) if lambda > t => {
                if self.restore_since_ms == 0 {
                    self.restore_since_ms = now_ms;
                }
            }
            _ => self.restore_since_ms = 0,
        }
        if self.changed_at_ms != 0 && now_ms - self.changed_at_ms < h.cooldown_ms {
            return None;
        }
        let (to, reason) = match from {
            State::Normal if self.below_high >= h.degrade_samples => (
                State::Stress,
                format!(
                    "{} consecutive samples below {}",
                    self.below_high, h.threshold_high
                ),
            ),
            State::Stress if self.below_low >= h.critical_samples => (
                State::Critical,
                format!(
                    "{} consecutive samples at or below {}",
                    self.below_low, h.threshold_low
                ),
            ),
            State::Stress | State::Critical
                if self.restore_since_ms != 0
                    && now_ms - self.restore_since_ms >= h.restore_hold_ms =>
            {
                let to = if from == State::Critical {
                    State::Stress
                } else {
                    State::Normal
                };
                (
                    to,
                    format!(
                        "above {} for {} s",
                        restore_at.unwrap_or_default(),
                        (now_ms - self.restore_since_ms) / 1000
                    ),
                )
            }
            _ => return None,
        };
        self.state = Some(to);
        self.changed_at_ms = now_ms;
        self.restore_since_ms = 0;
        Some(Transition { from, to, reason })
    }
}

/// How risky an operation is for a tenant whose graph is degrading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Risk {
    Low,
    Medium,
    High,
}

/// The operations the gate tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A search or any read.
    Read,
    /// An insert of `rows` rows (one: a point insert).
    Insert {
        rows: u64,
    },
    /// A delete of about `rows` rows (one: a point delete).
    Delete {
        rows: u64,
    },
    Update,
    /// Index rebuild or rewiring, compaction, isolation-level migration.
    Rewire,
}

impl Operation {
    pub fn risk(self) -> Risk {
        match self {
            Operation::Read => Risk::Low,
            Operation::Insert { rows } | Operation::Delete { rows } if rows <= 1 => Risk::Low,
            Operation::Insert { .. } | Operation::Delete { .. } | Operation::Update => Risk::Medium,
            Operation::Rewire => Risk::High,
        }
    }
}

/// A policy's `actions` overrides (all optional).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Actions {
    pub allow_reads: Option<bool>,
    pub allow_single_insert: Option<bool>,
    pub allow_bulk_insert: Option<bool>,
    pub allow_delete: Option<bool>,
    pub allow_update: Option<bool>,
    pub allow_index_rewire: Option<bool>,
    /// Share (percent) of inserts / searches admitted while they are throttled.
    pub throttle_inserts_pct: Option<u8>,
    pub throttle_searches_pct: Option<u8>,
    /// Statements of the tenant running at once beyond which reads wait (are deferred).
    pub max_concurrent_searches: Option<u32>,
    /// Inserts of more rows are deferred.
    pub max_insert_batch_size: Option<u64>,
}

impl Actions {
    /// Two words for shared memory ([`Actions::unpack`] reverses it); zeros are no actions.
    pub fn pack(&self) -> (u64, u64) {
        let tri = |b: Option<bool>| match b {
            None => 0u64,
            Some(false) => 1,
            Some(true) => 2,
        };
        let flags = [
            self.allow_reads,
            self.allow_single_insert,
            self.allow_bulk_insert,
            self.allow_delete,
            self.allow_update,
            self.allow_index_rewire,
        ];
        let mut a = 0u64;
        for (i, f) in flags.into_iter().enumerate() {
            a |= tri(f) << (2 * i);
        }
        // Values are stored plus one: 0 means absent.
        let pct = |p: Option<u8>| p.map_or(0, |p| u64::from(p.min(100)) + 1);
        a |= pct(self.throttle_inserts_pct) << 12;
        a |= pct(self.throttle_searches_pct) << 20;
        a |= self
            .max_concurrent_searches
            .map_or(0, |v| u64::from(v.min(u32::MAX - 1)) + 1)
            << 32;
        (
            a,
            self.max_insert_batch_size
                .map_or(0, |v| v.min(u64::MAX - 1) + 1),
        )
    }

    pub fn unpack(a: u64, b: u64) -> Actions {
        let tri = |i: u32| match (a >> (2 * i)) & 3 {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        };
        let byte = |shift: u32| (((a >> shift) & 0xff) as u8).checked_sub(1);
        Actions {
            allow_reads: tri(0),
            allow_single_insert: tri(1),
            allow_bulk_insert: tri(2),
            allow_delete: tri(3),
            allow_update: tri(4),
            allow_index_rewire: tri(5),
            throttle_inserts_pct: byte(12),
            throttle_searches_pct: byte(20),
            max_concurrent_searches: ((a >> 32) as u32).checked_sub(1),
            max_insert_batch_size: b.checked_sub(1),
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Allow,
    /// Admitted only for `pct` percent of statements; this one was not.
    Throttled {
        pct: u8,
    },
    /// Not now: retry after `retry_ms`.
    Defer {
        retry_ms: u64,
    },
    Reject,
}

/// Default defers of the gate matrix.
const DEFER_MEDIUM_MS: u64 = 60_000;
const DEFER_HIGH_MS: u64 = 300_000;
/// Retry hint for a throttled statement.
const THROTTLE_RETRY_MS: u64 = 1_000;

/// Whether the `ticket`-th throttled statement is in the admitted `pct` percent (exactly
/// `pct` of every 100 consecutive tickets are, the first one included when `pct` > 0).
pub fn throttle_admits(ticket: u64, pct: u8) -> bool {
    let pct = u64::from(pct.min(100));
    ((ticket + 1) * pct).div_ceil(100) > (ticket * pct).div_ceil(100)
}

/// What the gate does with `op` of a tenant in `state`: the matrix of the integrity design,
/// with the policy's `actions` overriding it outside the normal state. `ticket` numbers the
/// tenant's throttled statements; `running` is how many of its statements run now.
pub fn gate(state: State, op: Operation, actions: &Actions, ticket: u64, running: u32) -> Decision {
    if state == State::Normal {
        return Decision::Allow;
    }
    let allowed = match op {
        Operation::Read => actions.allow_reads,
        Operation::Insert { rows } if rows <= 1 => actions.allow_single_insert,
        Operation::Insert { .. } => actions.allow_bulk_insert,
        Operation::Delete { .. } => actions.allow_delete,
        Operation::Update => actions.allow_update,
        Operation::Rewire => actions.allow_index_rewire,
    };
    if allowed == Some(false) {
        return Decision::Reject;
    }
    if let (Operation::Insert { rows }, Some(max)) = (op, actions.max_insert_batch_size) {
        if rows > max {
            return Decision::Defer {
                retry_ms: DEFER_MEDIUM_MS,
            };
        }
    }
    if let (Operation::Read, Some(max)) = (op, actions.max_concurrent_searches) {
        if running > max {
            return Decision::Defer {
                retry_ms: THROTTLE_RETRY_MS,
            };
        }
    }
    if allowed == Some(true) {
        return Decision::Allow;
    }
    let throttle_pct = |default: u8| match op {
        Operation::Read => actions.throttle_searches_pct.unwrap_or(default),
        Operation::Insert { .. } => actions.throttle_inserts_pct.unwrap_or(default),
        _ => default,
    };
    let throttle = |pct: u8| {
        if throttle_admits(ticket, pct) {
            Decision::Allow
        } else {
            Decision::Throttled { pct }
        }
    };
    match (state, op.risk()) {
        (State::Stress, Risk::Low) => Decision::Allow,
        (State::Stress, Risk::Medium) => throttle(throttle_pct(50)),
        (State::Stress, Risk::High) => Decision::Defer {
            retry_ms: DEFER_HIGH_MS,
        },
        (State::Critical, Risk::Low) => throttle(throttle_pct(80)),
        (State::Critical, Risk::Medium) => Decision::Defer {
            retry_ms: DEFER_MEDIUM_MS,
        },
        (State::Critical, Risk::High) => Decision::Reject,
        (State::Normal, _) => Decision::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn run(m: &mut Machine, h: &Hysteresis, samples: &[(f64, i64)]) -> Vec<(State, State)> {
        samples
            .iter()
            .filter_map(|&(l, t)| m.sample(l, t, h))
            .map(|t| (t.from, t.to))
            .collect()
    }

    #[test]
    fn degrading_takes_consecutive_samples_and_respects_the_cooldown() {
        let h = Hysteresis::default();
        let mut m = Machine::default();
        // Two low samples, a good one, then three low ones: stress at the third.
        let t = run(
            &mut m,
            &h,
            &[
                (0.3, 60 * S),
                (0.3, 120 * S),
                (0.9, 180 * S),
                (0.3, 240 * S),
                (0.3, 300 * S),
            ],
        );
        assert!(t.is_empty() && m.state() == State::Normal);
        assert_eq!(
            run(&mut m, &h, &[(0.1, 360 * S)]),
            vec![(State::Normal, State::Stress)]
        );
        // Critical needs two samples at or below 0.15 after the 60 s cooldown.
        assert!(run(&mut m, &h, &[(0.1, 390 * S)]).is_empty(), "cooldown");
        assert_eq!(
            run(&mut m, &h, &[(0.1, 420 * S)]),
            vec![(State::Stress, State::Critical)]
        );
    }

    #[test]
    fn recovery_holds_above_the_threshold_plus_offset() {
        let h = Hysteresis::default();
        let mut m = Machine {
            state: Some(State::Critical),
            changed_at_ms: 1,
            ..Default::default()
        };
        // 0.2 is above T_low but not T_low + 0.1: no recovery however long.
        assert!(run(&mut m, &h, &[(0.2, 100 * S), (0.2, 1000 * S)]).is_empty());
        // 0.3 from 1100 s: stress once held for 300 s.
        assert!(run(&mut m, &h, &[(0.3, 1100 * S), (0.3, 1300 * S)]).is_empty());
        assert_eq!(
            run(&mut m, &h, &[(0.3, 1400 * S)]),
            vec![(State::Critical, State::Stress)]
        );
        // A dip restarts the hold toward normal (needs > 0.5).
        assert!(run(
            &mut m,
            &h,
            &[(0.9, 1500 * S), (0.45, 1700 * S), (0.9, 1800 * S)]
        )
        .is_empty());
        assert!(run(&mut m, &h, &[(0.9, 2000 * S)]).is_empty());
        assert_eq!(
            run(&mut m, &h, &[(0.9, 2100 * S)]),
            vec![(State::Stress, State::Normal)]
        );
    }

    #[test]
    fn policies_change_thresholds() {
        let h = Hysteresis {
            threshold_high: 0.6,
            threshold_low: 0.3,
            degrade_samples: 1,
            critical_samples: 1,
            cooldown_ms: 0,
            ..Hysteresis::default()
        };
        let mut m = Machine::default();
        assert_eq!(
            run(&mut m, &h, &[(0.5, S), (0.25, 2 * S)]),
            vec![
                (State::Normal, State::Stress),
                (State::Stress, State::Critical)
            ]
        );
    }

    #[test]
    fn actions_survive_packing() {
        let a = Actions {
            allow_reads: Some(true),
            allow_update: Some(false),
            throttle_searches_pct: Some(30),
            max_concurrent_searches: Some(4),
            max_insert_batch_size: Some(1000),
            ..Default::default()
        };
        let (x, y) = a.pack();
        assert_eq!(Actions::unpack(x, y), a);
        // Zeroed shared memory reads as no actions at all.
        assert_eq!(Actions::unpack(0, 0), Actions::default());
        let (x, y) = Actions::default().pack();
        assert_eq!(Actions::unpack(x, y), Actions::default());
    }

    #[test]
    fn throttling_admits_exactly_the_share() {
        for pct in [0u8, 1, 50, 80, 100] {
            let admitted = (0..1000).filter(|&t| throttle_admits(t, pct)).count();
            assert_eq!(admitted, 10 * pct as usize);
            assert_eq!(throttle_admits(0, pct), pct > 0, "the first is admitted");
        }
    }

    #[test]
    fn the_gate_matrix() {
        let a = Actions::default();
        let point = Operation::Insert { rows: 1 };
        let bulk = Operation::Insert { rows: 500 };
        for op in [
            Operation::Read,
            point,
            bulk,
            Operation::Update,
            Operation::Rewire,
        ] {
            assert_eq!(gate(State::Normal, op, &a, 0, 0), Decision::Allow);
        }
        assert_eq!(
            gate(State::Stress, Operation::Read, &a, 0, 0),
            Decision::Allow
        );
        assert_eq!(gate(State::Stress, point, &a, 0, 0), Decision::Allow);
        let stress_bulk: Vec<_> = (0..10)
            .map(|t| gate(State::Stress, bulk, &a, t, 0))
            .collect();
        assert_eq!(
            stress_bulk
                .iter()
                .filter(|d| **d == Decision::Allow)
                .count(),
            5
        );
        assert_eq!(
            gate(State::Stress, Operation::Rewire, &a, 0, 0),
            Decision::Defer { retry_ms: 300_000 }
        );
        let critical_reads: Vec<_> = (0..10)
            .map(|t| gate(State::Critical, Operation::Read, &a, t, 0))
            .collect();
        assert_eq!(
            critical_reads
                .iter()
                .filter(|d| **d == Decision::Allow)
                .count(),
            8
        );
        assert!(critical_reads.contains(&Decision::Throttled { pct: 80 }));
        assert_eq!(
            gate(State::Critical, bulk, &a, 0, 0),
            Decision::Defer { retry_ms: 60_000 }
        );
        assert_eq!(
            gate(State::Critical, Operation::Delete { rows: 90 }, &a, 0, 0),
            Decision::Defer { retry_ms: 60_000 }
        );
        assert_eq!(
            gate(State::Critical, Operation::Rewire, &a, 0, 0),
            Decision::Reject
        );
    }

    #[test]
    fn actions_override_the_matrix() {
        let a = Actions {
            allow_bulk_insert: Some(true),
            allow_update: Some(false),
            throttle_searches_pct: Some(10),
            max_insert_batch_size: Some(100),
            ..Default::default()
        };
        assert_eq!(
            gate(State::Critical, Operation::Insert { rows: 50 }, &a, 0, 0),
            Decision::Allow
        );
        assert_eq!(
            gate(State::Critical, Operation::Insert { rows: 500 }, &a, 0, 0),
            Decision::Defer { retry_ms: 60_000 }
        );
        assert_eq!(
            gate(State::Stress, Operation::Update, &a, 0, 0),
            Decision::Reject
        );
        let reads = (0..100)
            .filter(|&t| gate(State::Critical, Operation::Read, &a, t, 0) == Decision::Allow)
            .count();
        assert_eq!(reads, 10);
        assert_eq!(
            gate(State::Normal, Operation::Update, &a, 0, 0),
            Decision::Allow
        );
    }
}
