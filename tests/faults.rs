//! Fault injection under real `mpirun` (4 parts; 2 ranks, 4 for one watchdog case) (every launch under `timeout`): a rank stopped with
//! SIGSTOP (the watchdog ends the job naming it), ranks killed with SIGKILL and stopped with
//! SIGTERM at chosen moments (loading, mid-step, evaluation, checkpoint writing), each followed
//! by `--resume` to the end, whose parameters must equal an uninterrupted run's bit for bit.
//!
//! The moments are reached by watching the run from outside (its processes, its metrics file,
//! its checkpoint directory), so a fault lands in the phase named or just after it; the
//! assertions hold wherever it lands.

use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::mpi::{last_step, mpirun, processes_matching, rank_pids, steps_logged, wait_for_steps};
use common::{check_ok, final_params, same_bits, SMALL_MODEL};

const BIN: &str = env!("CARGO_BIN_EXE_shardsage");
/// Steps per epoch and epochs of the runs that are interrupted and resumed.
const STEPS: u64 = 8;
const EPOCHS: u64 = 3;

fn parts() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::generated_parts(&tmp("data"), 2500, 7, 16, 30, 4, Some("ldg")))
}

fn tmp(name: &str) -> PathBuf {
    common::tmp("faults", name)
}

/// A seed for "random" moments that differs between test runs; printed for reproduction.
fn moment_seed(what: &str) -> u64 {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    eprintln!("{what}: moment seed {s}");
    s
}

/// The runs that are interrupted and resumed: evaluation every epoch, checkpoints every 3 steps.
const CHECKPOINTED: &[&str] = &["--eval-every", "1", "--checkpoint-every", "3"];

/// `train` over the parts (`STEPS` steps per epoch unless `extra` says otherwise).
fn train_args(run: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "train",
        "--data",
        parts().to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
        "--threads",
        "1",
        "--log-every",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !extra.contains(&"--steps-per-epoch") {
        v.extend(["--steps-per-epoch".to_string(), STEPS.to_string()]);
    }
    v.extend(SMALL_MODEL.iter().map(|s| s.to_string()));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn launch(w: usize, run: &Path, extra: &[&str]) -> Child {
    let args = train_args(run, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    mpirun(w, 300, Path::new(BIN), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs to the end (resuming when there is a checkpoint) and returns the output.
fn finish(run: &Path) -> Output {
    finish_epochs(run, EPOCHS)
}

/// [`finish`] for a run of `epochs` epochs.
fn finish_epochs(run: &Path, epochs: u64) -> Output {
    let epochs = epochs.to_string();
    let mut extra = vec!["--epochs", &epochs, "--resume"];
    extra.extend_from_slice(CHECKPOINTED);
    let args = train_args(run, &extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    check_ok(mpirun(2, 300, Path::new(BIN), &args))
}

/// The parameters of an uninterrupted run, computed once.
fn reference() -> &'static [f32] {
    static P: OnceLock<Vec<f32>> = OnceLock::new();
    P.get_or_init(|| {
        let run = tmp("reference").join("run");
        let out = finish(&run);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&format!("trained {} steps", EPOCHS * STEPS)),
            "{stdout}"
        );
        final_params(&run)
    })
}

/// The MPI rank of a rank process, from the launcher's variables in its environment.
fn rank_of(pid: u32) -> Option<usize> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix("OMPI_COMM_WORLD_RANK=")?.parse().ok()
    })
}

/// Waits until the `w` rank processes of a job exist and have installed their SIGTERM handler
/// (bit 15 of SigCgt), i.e. are past the first instructions of `train`; returns them by rank.
fn ranks_ready(tag: &str, w: usize, limit: Duration) -> Vec<u32> {
    let t = Instant::now();
    while t.elapsed() < limit {
        let pids = rank_pids(BIN, tag);
        let caught = |p: &u32| common::mpi::catches_sigterm(*p);
        if pids.len() == w && pids.iter().all(caught) {
            let mut by_rank: Vec<(usize, u32)> = pids
                .iter()
                .filter_map(|&p| Some((rank_of(p)?, p)))
                .collect();
            by_rank.sort();
            if by_rank.len() == w {
                return by_rank.into_iter().map(|(_, p)| p).collect();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("the {w} rank processes of {tag} did not start in {limit:?}");
}

/// Where in a run a fault is injected.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// As soon as the ranks can take a signal (they install the handlers once MPI is up):
    /// loading the parts.
    Loading,
    /// After the given number of steps.
    MidStep(u64),
    /// When the last step of an epoch has been logged: evaluation comes next.
    Evaluation,
    /// While a checkpoint's temporary file exists (or right after the checkpoint appears).
    CheckpointWrite,
}

/// Waits for `moment` in a run whose processes carry `tag`; returns the ranks' pids.
fn reach(moment: Moment, run: &Path, tag: &str) -> Vec<u32> {
    let ranks = ranks_ready(tag, 2, Duration::from_secs(60));
    let limit = Duration::from_secs(120);
    let t = Instant::now();
    match moment {
        Moment::Loading => {}
        Moment::MidStep(k) => wait_for_steps(run, k as usize, limit),
        Moment::Evaluation => {
            while steps_logged(run) < STEPS as usize {
                assert!(t.elapsed() < limit, "no epoch end in {limit:?}");
                std::thread::sleep(Duration::from_micros(500));
            }
        }
        Moment::CheckpointWrite => {
            let dir = run.join("checkpoints");
            loop {
                assert!(t.elapsed() < limit, "no checkpoint in {limit:?}");
                let names: Vec<String> = std::fs::read_dir(&dir)
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                if names
                    .iter()
                    .any(|n| n.contains("tmp") || n.ends_with(".ssck"))
                {
                    break;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }
    ranks
}

fn signal_all(pids: &[u32], sig: i32) {
    for &p in pids {
        unsafe { libc::kill(p as i32, sig) };
    }
}

/// Waits for the job to end (at most `limit`, then kills it); returns its output and how long
/// it took.
fn ended_within(child: Child, limit: Duration, tag: &str) -> (Output, Duration) {
    let t = Instant::now();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() && t.elapsed() < limit + Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !waiter.is_finished() {
        for p in processes_matching(tag) {
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let out = waiter.join().unwrap();
    let took = t.elapsed();
    assert!(
        took < limit,
        "the job took {took:?} to end (limit {limit:?}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(300));
    let left = processes_matching(tag);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    (out, took)
}

fn run_dir(name: &str) -> (PathBuf, String) {
    let d = tmp(name);
    let _ = std::fs::remove_dir_all(d.join("run"));
    let tag = d.file_name().unwrap().to_string_lossy().to_string();
    (d.join("run"), tag)
}

#[test]
fn a_stopped_rank_ends_the_job_within_the_watchdog_deadline_naming_it() {
    require_mpi!();
    // W = 2 under the default deadline (derived from the first steps: 30 s at least), W = 4
    // under --watchdog-seconds 8.
    for (w, extra, deadline_s) in [
        (2usize, vec![], 30u64),
        (4, vec!["--watchdog-seconds", "8"], 8),
    ] {
        let (run, tag) = run_dir(&format!("sigstop-w{w}"));
        let seed = moment_seed("sigstop");
        // No epoch end, evaluation or checkpoint write (where ranks wait for rank 0 under the
        // configured deadline) in the steps the stop can land on: full passes of ~380 steps.
        let mut args = vec![
            "--epochs",
            "1000",
            "--eval-every",
            "0",
            "--checkpoint-every",
            "0",
            "--steps-per-epoch",
            "0",
        ];
        args.extend(extra);
        let child = launch(w, &run, &args);
        let ranks = ranks_ready(&tag, w, Duration::from_secs(60));
        // After the warm-up steps that set the step deadline.
        wait_for_steps(&run, 8 + (seed % 8) as usize, Duration::from_secs(120));
        let stopped = (seed / 8) as usize % w;
        unsafe { libc::kill(ranks[stopped] as i32, libc::SIGSTOP) };
        let (out, took) = ended_within(child, Duration::from_secs(deadline_s + 10), &tag);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("rank {stopped} did not arrive")),
            "the stopped rank {stopped} is not named: {stderr}"
        );
        assert!(stderr.contains("watchdog: no progress for"), "{stderr}");
        eprintln!(
            "W={w}: rank {stopped} stopped; the job ended after {:.1} s",
            took.as_secs_f64()
        );
    }
}

#[test]
fn killed_ranks_at_any_moment_resume_to_the_uninterrupted_parameters() {
    require_mpi!();
    let want = reference();
    let seed = moment_seed("sigkill");
    let moments = [
        Moment::Loading,
        Moment::MidStep(1 + seed % 6),
        Moment::Evaluation,
        Moment::CheckpointWrite,
        Moment::MidStep(9 + (seed / 7) % 12),
    ];
    for (i, moment) in moments.into_iter().enumerate() {
        let (run, tag) = run_dir(&format!("sigkill-{i}"));
        let child = launch(
            2,
            &run,
            &[&["--epochs", &EPOCHS.to_string()], CHECKPOINTED].concat(),
        );
        let ranks = reach(moment, &run, &tag);
        // One rank dies (a lost node or pod); the launcher ends the rest.
        signal_all(&ranks[(i % 2)..=(i % 2)], libc::SIGKILL);
        let (out, took) = ended_within(child, Duration::from_secs(10), &tag);
        assert!(!out.status.success());
        let out = finish(&run);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            same_bits(&final_params(&run), want),
            "{moment:?}: resumed parameters differ from the uninterrupted run's: {stdout}"
        );
        eprintln!(
            "SIGKILL at {moment:?}: the job ended in {:.1} s; resumed bit-identical",
            took.as_secs_f64()
        );
    }
}

#[test]
fn a_run_killed_twice_in_a_row_still_resumes_to_the_same_parameters() {
    require_mpi!();
    // Longer than the other runs: steps take milliseconds, and a loaded machine can delay this
    // test's polling by many of them; the kills must land before the run's end.
    const LONG_EPOCHS: u64 = 4 * EPOCHS;
    let epochs = LONG_EPOCHS.to_string();
    let reference_run = tmp("reference-long").join("run");
    let _ = std::fs::remove_dir_all(&reference_run);
    finish_epochs(&reference_run, LONG_EPOCHS);
    let want = final_params(&reference_run);
    let (run, tag) = run_dir("sigkill-twice");
    for k in [4u64, 13] {
        let child = launch(
            2,
            &run,
            &[&["--epochs", &epochs, "--resume"], CHECKPOINTED].concat(),
        );
        let ranks = ranks_ready(&tag, 2, Duration::from_secs(60));
        // `k` steps of this run's own records: the metrics file only grows.
        let before = steps_logged(&run);
        wait_for_steps(&run, before + k as usize % 7 + 1, Duration::from_secs(120));
        signal_all(&ranks[..1], libc::SIGKILL);
        let (out, _) = ended_within(child, Duration::from_secs(10), &tag);
        assert!(!out.status.success());
        let reached = last_step(&run);
        assert!(
            reached < LONG_EPOCHS * STEPS,
            "the kill landed after the last step ({reached}): nothing left to resume"
        );
    }
    finish_epochs(&run, LONG_EPOCHS);
    assert!(same_bits(&final_params(&run), &want));
}

#[test]
fn sigterm_at_any_moment_exits_cleanly_with_a_checkpoint_and_resumes_bit_identical() {
    require_mpi!();
    let want = reference();
    let seed = moment_seed("sigterm");
    let moments = [
        Moment::Loading,
        Moment::MidStep(1 + seed % 5),
        Moment::Evaluation,
        Moment::CheckpointWrite,
        Moment::MidStep(10 + (seed / 5) % 10),
    ];
    for (i, moment) in moments.into_iter().enumerate() {
        let (run, tag) = run_dir(&format!("sigterm-{i}"));
        let child = launch(
            2,
            &run,
            &[&["--epochs", &EPOCHS.to_string()], CHECKPOINTED].concat(),
        );
        let ranks = reach(moment, &run, &tag);
        // What Slurm and Kubernetes do: SIGTERM to every rank.
        signal_all(&ranks, libc::SIGTERM);
        let (out, took) = ended_within(child, Duration::from_secs(10), &tag);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{moment:?}: a requested stop must exit 0: {stdout}\n{stderr}"
        );
        let finished = stdout.contains(&format!("trained {} steps", EPOCHS * STEPS));
        let before_training = stdout.contains("stopped by signal before training started");
        let checkpointed = stdout.contains("checkpointed at step");
        assert!(
            finished || before_training || checkpointed,
            "{moment:?}: {stdout}"
        );
        if checkpointed {
            // The checkpoint it names is there and verifies.
            let line = stdout
                .lines()
                .find(|l| l.starts_with("checkpointed at step"))
                .unwrap();
            let step: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
            let dir =
                shardsage::train::checkpoint::CheckpointDir::new(run.join("checkpoints")).unwrap();
            let (_, ck) = dir.latest_good().unwrap().expect("a checkpoint");
            assert_eq!(ck.global_step, step, "{moment:?}");
        }
        let out = finish(&run);
        assert!(
            same_bits(&final_params(&run), want),
            "{moment:?}: resumed parameters differ: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        eprintln!(
            "SIGTERM at {moment:?}: exit 0 after {:.2} s ({}); resumed bit-identical",
            took.as_secs_f64(),
            if before_training {
                "before training"
            } else if checkpointed {
                "checkpointed"
            } else {
                "had finished"
            }
        );
    }
}
