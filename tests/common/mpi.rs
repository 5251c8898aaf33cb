//! Running the binary under real `mpirun` in the tests: the launcher's environment for a
//! single machine, every launch under `timeout`, finding a job's processes, and following a
//! run's progress through its metrics file.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn have_mpirun() -> bool {
    Command::new("mpirun")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Returns from the test (printing why) when there is no `mpirun`; fails it under CI.
#[macro_export]
macro_rules! require_mpi {
    () => {
        if !common::mpi::have_mpirun() {
            if std::env::var_os("CI").is_some() {
                panic!("mpirun not found: run scripts/setup.sh");
            }
            eprintln!("skipped: mpirun not found (run scripts/setup.sh)");
            return;
        }
    };
}

/// Environment for single-machine Open MPI runs as root, as scripts/env.sh sets it.
pub fn mpi_env(cmd: &mut Command) -> &mut Command {
    cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_pml", "ob1")
        .env("OMPI_MCA_btl", "self,vader")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMPI_MCA_mpi_yield_when_idle", "1")
        .env("RUST_LOG", "info")
}

/// `timeout LIMIT mpirun -np W PROGRAM ARGS...`
pub fn mpirun(w: usize, limit_s: u64, program: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.arg("-k")
        .arg("5")
        .arg(limit_s.to_string())
        .arg("mpirun")
        .arg("-np")
        .arg(w.to_string());
    c.arg(program).args(args);
    mpi_env(&mut c);
    c
}

/// Processes whose command line mentions `needle`, other than this test process.
pub fn processes_matching(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// The rank processes of a job (the program `bin` itself, not mpirun or timeout) whose command
/// line mentions `tag`.
pub fn rank_pids(bin: &str, tag: &str) -> Vec<u32> {
    processes_matching(tag)
        .into_iter()
        .filter(|&p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| c.starts_with(bin.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Step records in a run's metrics file so far.
pub fn steps_logged(run: &Path) -> usize {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|m| {
            m.lines()
                .filter(|l| l.contains("\"kind\":\"step\""))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until a metrics file shows at least `steps` step records.
pub fn wait_for_steps(run: &Path, steps: usize, limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if steps_logged(run) >= steps {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("training did not reach {steps} steps in {limit:?}");
}

/// The highest global step in a run's metrics file.
pub fn last_step(run: &Path) -> u64 {
    let m = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    m.lines()
        .filter(|l| l.contains("\"kind\":\"step\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["global_step"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Whether process `pid` has a SIGTERM handler installed (bit 15 of SigCgt in /proc).
pub fn catches_sigterm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("SigCgt:"))?.to_string();
            u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

/// Waits (at most 60 s) until `w` rank processes of `bin` whose command line mentions `tag` exist
/// and catch SIGTERM, i.e. are past their first instructions; returns their pids.
pub fn ranks_catching_sigterm(bin: &str, tag: &str, w: usize) -> Vec<u32> {
    let t0 = std::time::Instant::now();
    loop {
        let pids = rank_pids(bin, tag);
        if pids.len() == w && pids.iter().all(|&p| catches_sigterm(p)) {
            return pids;
        }
        assert!(
            t0.elapsed().as_secs() < 60,
            "the ranks of {tag} did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
