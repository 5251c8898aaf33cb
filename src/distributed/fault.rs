//! Never hang, never lose the run: a panic on any rank aborts the whole MPI job (instead of the
//! other ranks waiting forever in a collective), and SIGTERM / SIGUSR1 — what Slurm and Kubernetes
//! send before they stop a job — set a flag that the training loop turns into a checkpoint at the
//! next step boundary, agreed by all ranks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::Comm;
use crate::error::{Error, Result};

/// Installs a panic hook that prints the rank, the thread and the cause, then ends the job so
/// that no rank is left waiting: MPI_Abort on the main thread, an immediate process abort on any
/// other (which the launcher turns into the end of the job). Only for multi-rank MPI runs.
#[cfg(feature = "mpi")]
pub fn install_abort_on_panic(rank: usize, size: usize) {
    if size <= 1 {
        return;
    }
    let default = std::panic::take_hook();
    // MPI was initialised with MPI_THREAD_FUNNELED: only this (the main) thread may call it.
    let main_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        eprintln!(
            "shardsage: rank {rank}: panic on thread {}: {info}",
            thread.name().unwrap_or("main")
        );
        default(info);
        if thread.id() == main_thread {
            // SAFETY: MPI is initialised (we were given a world of size > 1) and this is the
            // thread that initialised it; MPI_Abort does not return.
            unsafe {
                mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, 101);
            }
        }
        // Elsewhere (a rayon worker, the step's compute thread) MPI must not be called; the
        // process ends at once and the launcher ends the other ranks, as for a killed rank.
        std::process::abort();
    }));
}

#[cfg(not(feature = "mpi"))]
pub fn install_abort_on_panic(_rank: usize, _size: usize) {}

/// A flag raised by SIGTERM or SIGUSR1.
#[derive(Clone)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
}

impl StopSignal {
    /// Registers the handlers (async-signal-safe: an atomic swap and, for a second signal,
    /// `_exit`). A second signal while the flag is already raised ends the process at once with
    /// status 128 + the signal (a user or scheduler that insists is not kept waiting for the next
    /// step boundary). The swap matters: two signals that arrive together (e.g. both pending on
    /// SIGCONT) run their handlers on two threads at once, and a separate load and store would let
    /// both see the flag down and neither exit.
    pub fn install() -> Result<StopSignal> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
            let seen = Arc::clone(&flag);
            let handler = move || {
                if seen.swap(true, Ordering::SeqCst) {
                    signal_hook::low_level::exit(128 + sig);
                }
            };
            // SAFETY: the handler only does an atomic swap and `_exit`, both async-signal-safe.
            unsafe { signal_hook::low_level::register(sig, handler) }
                .map_err(|e| Error::Other(format!("cannot install signal handler {sig}: {e}")))?;
        }
        Ok(StopSignal { flag })
    }
    /// A flag that no signal raises (for library callers and tests).
    pub fn never() -> StopSignal {
        StopSignal {
            flag: Arc::new(AtomicBool::new(false)),
        }
    }
    pub fn raised(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
    pub fn raise(&self) {
        self.flag.store(true, Ordering::Relaxed)
    }

    /// At a lock-step point of a long phase: whether any rank has seen the signal (a
    /// collective, so every rank stops at the same point), as `Error::Stopped` naming `during`.
    pub fn check_agreed(&self, comm: &Comm, during: &str) -> Result<()> {
        let mut raised = [self.raised() as u64];
        comm.all_reduce_max_u64(&mut raised);
        if raised[0] > 0 {
            return Err(Error::Stopped(during.to_string()));
        }
        Ok(())
    }
}
