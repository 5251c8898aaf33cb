//! The watchdog: no rank waits in a collective forever. Every collective is started as a
//! non-blocking MPI call and completed by polling on the rank's main thread; a rank that has
//! waited past the deadline asks every other rank, on a communicator of its own, where it is,
//! then ends the job (MPI_Abort) naming the ranks that did not arrive and where the others wait.
//!
//! The deadline is `--watchdog-seconds` (every command; default 600 s, generous enough for a
//! slow filesystem or a long evaluation layer on one rank) and, inside training steps once the
//! first steps have been timed, a tighter one derived from them (`step_deadline`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The deadline outside training steps (and the cap inside them) unless `--watchdog-seconds`
/// says otherwise: ten minutes.
pub const DEFAULT_DEADLINE_S: u64 = 600;

/// Inside training steps the deadline is this many times the slowest warm-up step ...
pub const STEP_DEADLINE_FACTOR: f64 = 10.0;
/// ... but never below this (a rank's step can stall briefly on a shared machine or a
/// filesystem hiccup without anything being wrong).
pub const STEP_DEADLINE_FLOOR: Duration = Duration::from_secs(30);
/// Steps timed before the step deadline is derived (the first ones compile kernels, fill
/// caches and allocate).
pub const WARMUP_STEPS: usize = 5;

/// How long a rank that has passed its deadline waits for the others to say where they are.
pub const ANSWER_GRACE: Duration = Duration::from_secs(3);

/// Message tags on the watchdog's own communicator.
pub(crate) const TAG_ASK: i32 = 7101;
pub(crate) const TAG_ANSWER: i32 = 7102;

/// What the watchdog knows about this rank: the deadlines, the collectives so far and the phase
/// of the program (shown to the other ranks when one of them asks).
pub(crate) struct Watchdog {
    /// `--watchdog-seconds` in milliseconds; 0 = off (collectives wait without a deadline).
    configured_ms: AtomicU64,
    /// The deadline of the current phase when it is tighter than the configured one; 0 = none.
    phase_ms: AtomicU64,
    /// Collectives started by this rank (lock-step: the same number on every rank).
    seq: AtomicU64,
    phase: Mutex<String>,
}

impl Watchdog {
    /// The default deadline, or `SHARDSAGE_WATCHDOG_SECONDS` (what `--watchdog-seconds` reads
    /// too) for programs without that flag.
    pub(crate) fn new() -> Watchdog {
        let seconds = std::env::var("SHARDSAGE_WATCHDOG_SECONDS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_DEADLINE_S);
        Watchdog {
            configured_ms: AtomicU64::new(seconds * 1000),
            phase_ms: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            phase: Mutex::new("start-up".to_string()),
        }
    }

    pub(crate) fn configure(&self, deadline: Option<Duration>) {
        let ms = deadline.map_or(0, |d| (d.as_millis() as u64).max(1));
        self.configured_ms.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn configured(&self) -> Option<Duration> {
        match self.configured_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn set_phase(&self, phase: String, tighter: Option<Duration>) {
        self.phase_ms.store(
            tighter.map_or(0, |d| (d.as_millis() as u64).max(1)),
            Ordering::Relaxed,
        );
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    pub(crate) fn phase(&self) -> String {
        self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The deadline for the next collective: the configured one, or the phase's if tighter.
    pub(crate) fn deadline(&self) -> Option<Duration> {
        let configured = self.configured()?;
        Some(match self.phase_ms.load(Ordering::Relaxed) {
            0 => configured,
            ms => configured.min(Duration::from_millis(ms)),
        })
    }

    /// Numbers the next collective.
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The deadline inside training steps, from the slowest of the timed warm-up steps: a multiple
/// of it, at least `STEP_DEADLINE_FLOOR`, at most the configured deadline.
pub fn step_deadline(configured: Duration, slowest_step: Duration) -> Duration {
    slowest_step
        .mul_f64(STEP_DEADLINE_FACTOR)
        .max(STEP_DEADLINE_FLOOR)
        .min(configured)
}

/// The watchdog inside training steps: names the step as the phase, times the first steps and
/// then applies the tighter `step_deadline` to the steps' collectives.
#[derive(Default)]
pub struct StepWatch {
    timed: usize,
    slowest: Duration,
    deadline: Option<Duration>,
}

impl StepWatch {
    /// Before a step (1-based epoch and step in the messages).
    pub fn enter(&self, comm: &super::Comm, epoch: u64, step: u64) {
        comm.set_phase(
            format!("training epoch {} step {}", epoch + 1, step + 1),
            self.deadline,
        );
    }

    /// The deadline inside steps, once derived.
    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// After a step that took `took` (compute, exchanges and all).
    pub fn record(&mut self, comm: &super::Comm, took: Duration) {
        if self.deadline.is_some() || comm.size() == 1 {
            return;
        }
        self.slowest = self.slowest.max(took);
        self.timed += 1;
        if self.timed < WARMUP_STEPS {
            return;
        }
        if let Some(configured) = comm.watchdog_deadline() {
            let d = step_deadline(configured, self.slowest);
            self.deadline = Some(d);
            if comm.is_root() {
                log::info!(
                    "watchdog: {:.0} s per collective inside training steps (slowest of the first \
                     {WARMUP_STEPS} steps {:.3} s), {:.0} s elsewhere",
                    d.as_secs_f64(),
                    self.slowest.as_secs_f64(),
                    configured.as_secs_f64()
                );
            }
        }
    }
}

/// The watchdog's verdict once answers are in: who did not arrive, who waits where.
pub(crate) fn verdict(
    me: usize,
    size: usize,
    here: &str,
    waited: Duration,
    deadline: Duration,
    answers: &std::collections::BTreeMap<usize, String>,
) -> String {
    let missing: Vec<String> = (0..size)
        .filter(|r| *r != me && !answers.contains_key(r))
        .map(|r| r.to_string())
        .collect();
    let mut waiting = vec![format!("rank {me} at {here}")];
    waiting.extend(answers.iter().map(|(r, a)| format!("rank {r} at {a}")));
    let missing = if missing.is_empty() {
        "every rank answered (if they wait in different collectives, a lock-step error; if in \
         the same one, the MPI library is not completing it)"
            .to_string()
    } else {
        format!(
            "rank{} {} did not arrive (stopped, hung, or busy outside any collective for that long)",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", ")
        )
    };
    format!(
        "watchdog: no progress for {:.1} s (deadline {:.1} s; --watchdog-seconds): {missing}; waiting: {}",
        waited.as_secs_f64(),
        deadline.as_secs_f64(),
        waiting.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn the_step_deadline_is_a_multiple_of_the_slowest_step_within_floor_and_cap() {
        let cap = Duration::from_secs(600);
        assert_eq!(
            step_deadline(cap, Duration::from_millis(100)),
            STEP_DEADLINE_FLOOR
        );
        assert_eq!(
            step_deadline(cap, Duration::from_secs(12)),
            Duration::from_secs(120)
        );
        assert_eq!(
            step_deadline(cap, Duration::from_secs(100)),
            Duration::from_secs(600)
        );
        let tight = Duration::from_secs(5);
        assert_eq!(step_deadline(tight, Duration::from_millis(100)), tight);
    }

    #[test]
    fn the_phase_deadline_only_tightens() {
        let w = Watchdog::new();
        w.configure(Some(Duration::from_secs(20)));
        w.set_phase("a".into(), Some(Duration::from_secs(5)));
        assert_eq!(w.deadline(), Some(Duration::from_secs(5)));
        w.set_phase("b".into(), Some(Duration::from_secs(50)));
        assert_eq!(w.deadline(), Some(Duration::from_secs(20)));
        w.set_phase("c".into(), None);
        assert_eq!(w.deadline(), Some(Duration::from_secs(20)));
        w.configure(None);
        assert_eq!(w.deadline(), None);
        assert_eq!(w.phase(), "c");
    }

    #[test]
    fn the_verdict_names_the_ranks_that_did_not_answer() {
        let mut answers = BTreeMap::new();
        answers.insert(2, "#9 all-reduce during x".to_string());
        let v = verdict(
            0,
            4,
            "#9 all-reduce during x",
            Duration::from_secs(31),
            Duration::from_secs(30),
            &answers,
        );
        assert!(v.contains("ranks 1, 3 did not arrive"), "{v}");
        assert!(v.contains("rank 2 at #9"), "{v}");
        let v = verdict(1, 2, "#3", Duration::ZERO, Duration::ZERO, &BTreeMap::new());
        assert!(v.contains("rank 0 did not arrive"), "{v}");
    }
}
