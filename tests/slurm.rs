//! The Slurm scripts in `slurm/`, run for real on a single-node Slurm cluster started by
//! `scripts/slurm-cluster.sh` in a temporary directory: prepare (generate + partition), a
//! 2-rank training job (`srun --mpi=pmix`, then `LAUNCHER=mpirun`), a 3-task sweep array
//! followed by `shardsage select`, and a training job that gets the time-limit signal
//! (`scancel --signal=USR1 --batch`), checkpoints, and is resubmitted to finish from that step. The cluster is stopped whatever
//! happens (a Drop guard).
//!
//! Run it alone with `cargo test --test slurm -- --nocapture` (it prints the time of each stage).
//! It needs root (or passwordless sudo) the first time, to install the Slurm packages; without
//! them it is skipped with a message.
//!
//! The binary under test is `CARGO_BIN_EXE_shardsage`: cargo builds it from the current source
//! before running the test, so it is never stale, and the test needs no nested `cargo build`.
//! The job scripts receive its path in `SHARDSAGE`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shardsage");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Stops the cluster when the test ends, passes or panics.
struct Cluster {
    dir: PathBuf,
    /// One cluster at a time: two one-node clusters running jobs at once on this machine left
    /// both tests' first MPI jobs waiting until their time limits (seen with 2 cores).
    _alone: std::sync::MutexGuard<'static, ()>,
}

static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        // A test that panicked while holding the lock has stopped its cluster (Drop) already.
        let alone = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            _alone: alone,
        };
        let out = Command::new("timeout")
            .arg("300")
            .arg(Path::new(ROOT).join("scripts/slurm-cluster.sh"))
            .arg("start")
            .arg(dir)
            .output()
            .expect("run scripts/slurm-cluster.sh");
        assert!(
            out.status.success(),
            "slurm-cluster.sh start failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "cluster started in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        cluster
    }

    /// A command with the cluster's client settings and the job settings every stage shares.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", self.dir.join("slurm.conf"))
            .env("TMPDIR", self.dir.join("tmp"))
            .env("SHARDSAGE", BIN)
            .env("RUST_LOG", "info")
            // Open MPI as root on one machine (what scripts/env.sh sets).
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_pml", "ob1")
            .env("OMPI_MCA_btl", "self,vader")
            .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
        c
    }

    /// Submits `script` with extra sbatch options and job variables; returns the job id.
    fn sbatch(&self, script: &str, options: &[&str], vars: &[(&str, String)]) -> String {
        let mut c = self.command("sbatch");
        c.arg("--parsable").args(options);
        c.arg(Path::new(ROOT).join("slurm").join(script));
        for (k, v) in vars {
            c.env(k, v);
        }
        let out = run(&mut c);
        assert!(out.status.success(), "sbatch {script}: {}", text(&out));
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            id.chars().all(|c| c.is_ascii_digit()) && !id.is_empty(),
            "sbatch printed no job id: {}",
            text(&out)
        );
        id
    }

    /// True while the job (or any task of the array) is pending, running or completing.
    fn in_queue(&self, job: &str) -> bool {
        let out = run(self.command("squeue").args(["-h", "-o", "%i", "-j", job]));
        // A job already purged from the controller makes squeue fail: it is not in the queue.
        out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }

    /// Polls squeue every 0.5 s (sbatch --wait polls every 10 s) until the job has left the
    /// queue; returns (JobState, ExitCode) of the job, or of each array task.
    fn wait(&self, job: &str, limit: Duration, log: &Path) -> Vec<(String, String)> {
        let started = Instant::now();
        while self.in_queue(job) {
            if started.elapsed() > limit {
                let _ = run(self.command("scancel").arg(job));
                panic!(
                    "job {job} still queued after {} s; its output:\n{}",
                    limit.as_secs(),
                    read_logs(log)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let out = run(self.command("scontrol").args(["show", "-o", "job", job]));
        assert!(
            out.status.success(),
            "scontrol show job {job}: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| (field(line, "JobState"), field(line, "ExitCode")))
            .collect()
    }

    /// Waits for the job and asserts that it (every task of it) completed with exit code 0.
    fn expect_success(&self, job: &str, what: &str, limit: Duration, log: &Path) {
        let states = self.wait(job, limit, log);
        assert!(!states.is_empty(), "{what}: no state for job {job}");
        for (state, exit) in &states {
            assert!(
                state == "COMPLETED" && exit == "0:0",
                "{what} (job {job}) ended {state} with exit code {exit}; output:\n{}",
                read_logs(log)
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = Command::new("timeout")
            .arg("120")
            .arg(Path::new(ROOT).join("scripts/slurm-cluster.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!("slurm-cluster.sh stop: {}", text(&o)),
            Err(e) => eprintln!("slurm-cluster.sh stop: {e}"),
        }
    }
}

fn run(c: &mut Command) -> Output {
    c.output()
        .unwrap_or_else(|e| panic!("cannot run {:?}: {e}", c.get_program()))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `Key=value` out of a one-line `scontrol show -o job` record.
fn field(line: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .unwrap_or("?")
        .to_string()
}

/// The text of a log file, or of every file a `%A_%a`-style pattern expands to (array tasks).
fn read_logs(pattern: &Path) -> String {
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let stem = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(stem))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
        .iter()
        .map(|p| {
            format!(
                "==> {} <==\n{}",
                p.display(),
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The eval records of a run's metrics.jsonl.
fn eval_records(run_dir: &Path) -> Vec<serde_json::Value> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("{}: bad JSON line {l:?}: {e}", path.display()))
        })
        .filter(|r| r["kind"] == "eval")
        .collect()
}

/// The valid MRR of the last eval record, checked to be a probability.
fn last_valid_mrr(run_dir: &Path) -> f64 {
    let evals = eval_records(run_dir);
    let last = evals
        .iter()
        .rev()
        .find(|r| r["split"] == "valid")
        .unwrap_or_else(|| panic!("no valid eval record in {}", run_dir.display()));
    let mrr = last["metrics"]["mrr"]
        .as_f64()
        .unwrap_or_else(|| panic!("eval record without metrics.mrr: {last}"));
    assert!(
        mrr > 0.0 && mrr <= 1.0,
        "valid MRR {mrr} out of range in {}",
        run_dir.display()
    );
    mrr
}

/// The number in the job output's last `final valid mrr=<x>` line.
fn final_mrr_line(log: &str) -> Option<f64> {
    log.lines()
        .rev()
        .find_map(|l| l.split("final valid mrr=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|x| x.parse().ok())
}

/// The steps of the `ckpt-<step>.ssck` files (the step may be zero-padded) in a run directory.
fn checkpoint_steps(run_dir: &Path) -> Vec<u64> {
    let mut steps: Vec<u64> = std::fs::read_dir(run_dir.join("checkpoints"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter_map(|n| n.strip_prefix("ckpt-")?.strip_suffix(".ssck")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    steps.sort_unstable();
    steps
}

/// Whether the Slurm packages are installed, or can be installed here.
fn slurm_available() -> Result<(), String> {
    let installed = ["slurmctld", "slurmd", "slurm-client", "munge"]
        .iter()
        .all(|p| {
            Command::new("dpkg")
                .args(["-s", p])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if installed {
        return Ok(());
    }
    if Command::new("apt-get").arg("--version").output().is_err() {
        return Err("Slurm is not installed and there is no apt-get".into());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo = Command::new("sudo")
        .args(["-n", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if root || sudo {
        Ok(())
    } else {
        Err("Slurm is not installed and installing it needs root or passwordless sudo".into())
    }
}

/// A temporary directory and a cluster started in it, or None (with the reason printed) when
/// Slurm cannot be had here. Bind them in this order: the cluster stops before its directory
/// goes.
fn cluster_or_skip() -> Option<(tempfile::TempDir, Cluster)> {
    if let Err(why) = slurm_available() {
        println!("skipped: {why}");
        return None;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::start(&tmp.path().join("cluster"));
    Some((tmp, cluster))
}

#[test]
fn slurm_scripts_prepare_train_sweep_preempt_resume() {
    let Some((tmp, cluster)) = cluster_or_skip() else {
        return;
    };
    let whole = Instant::now();
    let work = tmp.path().join("work");
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let work_var = ("WORK", work.display().to_string());
    let limit = Duration::from_secs(300);

    // 1. Prepare: generate a small citation graph and split it into 2 parts.
    let stage = Instant::now();
    let log = logs.join("prepare.out");
    let job = cluster.sbatch(
        "prepare.sbatch",
        &[&format!("--output={}", log.display())],
        &[
            work_var.clone(),
            ("NODES", "1500".into()),
            ("PARTS", "2".into()),
            ("SEED", "7".into()),
        ],
    );
    cluster.expect_success(&job, "prepare.sbatch", limit, &log);
    assert!(
        work.join("parts/manifest.json").is_file(),
        "no parts/manifest.json after prepare:\n{}",
        read_logs(&log)
    );
    println!("prepare: {:.1} s", stage.elapsed().as_secs_f64());

    // node2vec on the same parts with 2 ranks through srun; a resubmission resumes from the
    // final round's checkpoint and writes the same embeddings.
    let stage = Instant::now();
    let n2v_dir = work.join("runs/node2vec");
    let n2v_vars = vec![
        work_var.clone(),
        ("RUN_DIR", n2v_dir.display().to_string()),
        ("WALKS_PER_NODE", "4".into()),
        ("LENGTH", "20".into()),
        ("DIM", "32".into()),
        ("Q", "0.5".into()),
        ("CHECKPOINT_MINUTES", "0".into()),
    ];
    let embeddings = |p: &Path| -> Vec<f32> {
        let f = hdf5::File::open(p).expect("node2vec embeddings");
        f.dataset("embedding").unwrap().read_raw().unwrap()
    };
    let mut first = Vec::new();
    for attempt in ["node2vec.out", "node2vec-again.out"] {
        let log = logs.join(attempt);
        let job = cluster.sbatch(
            "node2vec.sbatch",
            &[&format!("--output={}", log.display()), "--ntasks=2"],
            &n2v_vars,
        );
        cluster.expect_success(&job, "node2vec.sbatch", limit, &log);
        let output = read_logs(&log);
        assert!(
            output.contains("test (dot product):") && output.contains("2 ranks"),
            "node2vec.sbatch did not embed on 2 ranks:\n{output}"
        );
        let e = embeddings(&n2v_dir.join("embeddings.h5"));
        if first.is_empty() {
            first = e;
        } else {
            assert!(output.contains("resumed from"), "{output}");
            assert!(
                first
                    .iter()
                    .zip(&e)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "the resubmitted node2vec job wrote other embeddings"
            );
        }
    }
    println!(
        "node2vec.sbatch twice: {:.1} s",
        stage.elapsed().as_secs_f64()
    );

    // Small, fast settings shared by the training jobs below.
    let small = |run_dir: &Path, epochs: &str, steps: &str| -> Vec<(&'static str, String)> {
        vec![
            work_var.clone(),
            ("RUN_DIR", run_dir.display().to_string()),
            ("EPOCHS", epochs.to_string()),
            ("STEPS_PER_EPOCH", steps.to_string()),
            ("BATCH_SIZE", "256".into()),
            ("HIDDEN", "32".into()),
            ("FANOUTS", "5,5,5".into()),
            ("EVAL_EVERY", "1".into()),
            ("DEVICE", "cpu".into()),
            ("THREADS", "1".into()),
        ]
    };

    // 2. Train with 2 ranks (the script's default layout) through srun --mpi=pmix.
    let stage = Instant::now();
    let run_dir = work.join("runs/two-ranks");
    let log = logs.join("train.out");
    let job = cluster.sbatch(
        "train.sbatch",
        &[&format!("--output={}", log.display()), "--ntasks=2"],
        &small(&run_dir, "2", "4"),
    );
    cluster.expect_success(&job, "train.sbatch", limit, &log);
    let output = read_logs(&log);
    assert!(
        output.contains("on 2 ranks"),
        "train.sbatch did not train on 2 ranks:\n{output}"
    );
    let printed = final_mrr_line(&output)
        .unwrap_or_else(|| panic!("no 'final valid mrr=' line in the output:\n{output}"));
    let recorded = last_valid_mrr(&run_dir);
    assert!(
        printed > 0.0 && printed <= 1.0,
        "printed final valid mrr {printed} out of range"
    );
    assert!(
        run_dir.join("checkpoints/best.ssck").is_file(),
        "no best.ssck in {}",
        run_dir.display()
    );
    println!(
        "train (2 ranks): {:.1} s, final valid mrr {printed}, last eval record mrr {recorded}",
        stage.elapsed().as_secs_f64()
    );

    // 2b. The same job with Open MPI's mpirun inside the allocation (LAUNCHER=mpirun).
    let stage = Instant::now();
    let run_dir = work.join("runs/mpirun");
    let log = logs.join("train-mpirun.out");
    let mut vars = small(&run_dir, "1", "2");
    vars.push(("LAUNCHER", "mpirun".into()));
    let job = cluster.sbatch(
        "train.sbatch",
        &[&format!("--output={}", log.display()), "--ntasks=2"],
        &vars,
    );
    cluster.expect_success(&job, "train.sbatch with LAUNCHER=mpirun", limit, &log);
    let output = read_logs(&log);
    assert!(
        output.contains("on 2 ranks") && final_mrr_line(&output).is_some(),
        "mpirun did not train on 2 ranks:\n{output}"
    );
    last_valid_mrr(&run_dir);
    println!(
        "train (LAUNCHER=mpirun, 2 ranks): {:.1} s",
        stage.elapsed().as_secs_f64()
    );

    // 3. A 3-task sweep array over learning rates, then select the best run.
    let stage = Instant::now();
    let runs = work.join("sweep");
    let log = logs.join("sweep");
    let mut vars = small(&runs, "2", "3");
    vars.retain(|(k, _)| *k != "RUN_DIR" && *k != "HIDDEN" && *k != "FANOUTS");
    vars.extend([
        ("RUNS", runs.display().to_string()),
        ("LRS", "0.01 0.003 0.001".into()),
        ("HIDDENS", "16".into()),
        ("FANOUT_SETS", "5,5,5".into()),
    ]);
    let job = cluster.sbatch(
        "sweep.sbatch",
        &[
            &format!("--output={}_%a.out", log.display()),
            "--array=0-2",
            "--ntasks=2",
        ],
        &vars,
    );
    cluster.expect_success(&job, "sweep.sbatch", limit, &log);
    let mut run_dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
        .expect("sweep runs dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    run_dirs.sort();
    let names: Vec<String> = run_dirs
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect();
    assert_eq!(
        names,
        [
            "000-lr0.01-h16-f5x5x5",
            "001-lr0.003-h16-f5x5x5",
            "002-lr0.001-h16-f5x5x5"
        ],
        "sweep run directories"
    );
    let out = run(Command::new(BIN)
        .arg("select")
        .args(&run_dirs)
        .arg("--json"));
    assert!(out.status.success(), "shardsage select: {}", text(&out));
    let selection: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("select --json printed no JSON ({e}): {}", text(&out)));
    let ranked = selection["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(ranked.len(), 3, "select ranks 3 runs: {selection}");
    let best_checkpoint = ranked[0]["checkpoint"].as_str().map(PathBuf::from);
    assert!(
        best_checkpoint.as_ref().is_some_and(|p| p.is_file()),
        "select names no existing best checkpoint: {selection}"
    );
    let best_mrr = ranked[0]["best_metric"].as_f64().unwrap_or(f64::NAN);
    for r in &ranked {
        assert!(
            r["best_metric"].as_f64().is_some_and(|m| m <= best_mrr),
            "select did not put the best run first: {selection}"
        );
    }
    println!(
        "sweep (3 tasks x 2 ranks) + select: {:.1} s, best {} (mrr {best_mrr})",
        stage.elapsed().as_secs_f64(),
        ranked[0]["run"]
    );

    // 4. The time-limit warning: SIGUSR1 to the batch shell (what `--signal=B:USR1@120` sends),
    //    which passes it to the ranks; they checkpoint and exit 0. A resubmission resumes.
    let stage = Instant::now();
    let run_dir = work.join("runs/preempted");
    let log = logs.join("preempted.out");
    // Long enough that the signal always arrives mid-run, however fast the machine is; the
    // resubmission then asks for two epochs past the checkpoint.
    let (long_epochs, steps) = (2000u64, 5u64);
    let mut vars = small(&run_dir, &long_epochs.to_string(), &steps.to_string());
    // One evaluation, at the end: the resubmission's time is then mostly training steps.
    vars.retain(|(k, _)| *k != "EVAL_EVERY");
    vars.push(("EVAL_EVERY", "0".into()));
    let job = cluster.sbatch(
        "train.sbatch",
        &[&format!("--output={}", log.display()), "--ntasks=2"],
        &vars,
    );
    // Signal once training is under way (its first step record is written).
    let metrics = run_dir.join("metrics.jsonl");
    let started = Instant::now();
    while !std::fs::read_to_string(&metrics).is_ok_and(|t| t.contains("\"kind\":\"step\"")) {
        assert!(
            cluster.in_queue(&job),
            "the job to be signalled ended before its first step:\n{}",
            read_logs(&log)
        );
        assert!(
            started.elapsed() < limit,
            "no step record after {} s:\n{}",
            limit.as_secs(),
            read_logs(&log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = run(cluster
        .command("scancel")
        .args(["--signal=USR1", "--batch", &job]));
    assert!(
        out.status.success(),
        "scancel --signal=USR1: {}",
        text(&out)
    );
    cluster.expect_success(&job, "signalled train.sbatch", limit, &log);
    let output = read_logs(&log);
    assert!(
        output.contains("got SIGUSR1"),
        "the batch script did not see the signal:\n{output}"
    );
    let stopped_at: u64 = output
        .lines()
        .find_map(|l| l.split("checkpointed at step ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'checkpointed at step <G> on signal' line:\n{output}"));
    assert!(
        stopped_at < long_epochs * steps,
        "the signal arrived after training finished (step {stopped_at}); nothing to resume"
    );
    let epochs = stopped_at / steps + 2;
    let mut vars = small(&run_dir, &epochs.to_string(), &steps.to_string());
    vars.retain(|(k, _)| *k != "EVAL_EVERY");
    vars.push(("EVAL_EVERY", "0".into()));
    assert!(
        checkpoint_steps(&run_dir).contains(&stopped_at),
        "no checkpoint for step {stopped_at} in {}: {:?}",
        run_dir.display(),
        checkpoint_steps(&run_dir)
    );
    println!(
        "signalled job: checkpointed at step {stopped_at} of {}, {:.1} s",
        long_epochs * steps,
        stage.elapsed().as_secs_f64()
    );

    let stage = Instant::now();
    let log = logs.join("resumed.out");
    let job = cluster.sbatch(
        "train.sbatch",
        &[&format!("--output={}", log.display()), "--ntasks=2"],
        &vars,
    );
    cluster.expect_success(&job, "resubmitted train.sbatch", limit, &log);
    let output = read_logs(&log);
    assert!(
        output.contains(&format!("global step {stopped_at})")),
        "the resubmission did not resume from step {stopped_at}:\n{output}"
    );
    assert!(
        final_mrr_line(&output).is_some(),
        "the resubmission did not finish:\n{output}"
    );
    let last_step = eval_records(&run_dir)
        .iter()
        .filter_map(|r| r["global_step"].as_u64())
        .max()
        .unwrap_or(0);
    assert_eq!(
        last_step,
        epochs * steps,
        "the resumed run's last evaluation is not at the final step"
    );
    println!(
        "resubmission: resumed at step {stopped_at}, finished at {last_step}, {:.1} s",
        stage.elapsed().as_secs_f64()
    );

    // 5. A node failure or preemption: `scontrol requeue` ends the running job (SIGTERM: the
    //    ranks checkpoint) and puts it back in the queue; when it starts again (the same job id
    //    and run directory) its --resume continues from the checkpoint and the job completes,
    //    without anyone resubmitting it.
    let stage = Instant::now();
    let run_dir = work.join("runs/requeued");
    let log = logs.join("requeued.out");
    let (epochs, steps) = (30u64, 5u64);
    let mut vars = small(&run_dir, &epochs.to_string(), &steps.to_string());
    vars.retain(|(k, _)| *k != "EVAL_EVERY");
    vars.push(("EVAL_EVERY", "10".into()));
    let job = cluster.sbatch(
        "train.sbatch",
        &[&format!("--output={}", log.display()), "--ntasks=2"],
        &vars,
    );
    let metrics = run_dir.join("metrics.jsonl");
    let started = Instant::now();
    let steps_logged = || {
        std::fs::read_to_string(&metrics)
            .map(|t| t.matches("\"kind\":\"step\"").count())
            .unwrap_or(0)
    };
    while steps_logged() < 10 {
        assert!(
            cluster.in_queue(&job) && started.elapsed() < limit,
            "the job to be requeued did not reach 10 steps:\n{}",
            read_logs(&log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = run(cluster.command("scontrol").args(["requeue", &job]));
    assert!(out.status.success(), "scontrol requeue: {}", text(&out));
    cluster.expect_success(&job, "requeued train.sbatch", limit, &log);
    let output = read_logs(&log);
    let stopped_at: u64 = output
        .lines()
        .find_map(|l| l.split("checkpointed at step ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the requeued job did not checkpoint on SIGTERM:\n{output}"));
    assert!(
        output.contains(&format!("global step {stopped_at})")),
        "the job did not resume from step {stopped_at} after the requeue:\n{output}"
    );
    assert!(
        output.contains(&format!("trained {} steps", epochs * steps)),
        "the requeued job did not finish:\n{output}"
    );
    let shown = run(cluster
        .command("scontrol")
        .args(["show", "-o", "job", &job]));
    let restarts = field(&String::from_utf8_lossy(&shown.stdout), "Restarts");
    assert_eq!(restarts, "1", "{}", text(&shown));
    println!(
        "requeued job: checkpointed at step {stopped_at}, started again by Slurm, finished {} steps, {:.1} s",
        epochs * steps,
        stage.elapsed().as_secs_f64()
    );

    drop(cluster);
    println!(
        "whole Slurm cycle after start-up (7 jobs, stop): {:.1} s",
        whole.elapsed().as_secs_f64()
    );
}

/// `slurm/pipeline.sh` with the test's settings and extra variables; returns its output.
fn pipeline(cluster: &Cluster, vars: &[(&str, String)]) -> Output {
    let mut c = cluster.command("timeout");
    c.arg("120")
        .arg("bash")
        .arg(Path::new(ROOT).join("slurm/pipeline.sh"));
    for (k, v) in vars {
        c.env(k, v);
    }
    run(&mut c)
}

/// The job ids of the pipeline's last line, `pipeline: jobs: prepare=12 sweep=13 ...`
/// (`skipped` for a step it did not submit).
fn pipeline_jobs(out: &Output) -> std::collections::BTreeMap<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("pipeline: jobs: "))
        .unwrap_or_else(|| panic!("no 'pipeline: jobs:' line:\n{}", text(out)));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An unused TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The whole chain on the local cluster: a bad configuration is refused before anything is
/// submitted; prepare -> sweep array -> select + test score -> serve run to the end with each
/// step waiting for the one before (afterok), and the failure report is cancelled as never
/// needed; a second run skips every step (their outputs exist and verify); a grid with a point
/// training rejects fails that task, Slurm cancels select (its dependency can never be met) and
/// the afternotok report runs and names the failed run.
#[test]
fn slurm_pipeline_chains_the_steps_skips_finished_ones_and_reports_a_failed_task() {
    let Some((tmp, cluster)) = cluster_or_skip() else {
        return;
    };
    let whole = Instant::now();
    let work = tmp.path().join("work");
    let logs = work.join("logs");
    let limit = Duration::from_secs(300);
    let port = free_port();
    let settings: Vec<(&str, String)> = vec![
        ("WORK", work.display().to_string()),
        ("NODES", "800".into()),
        ("SEED", "5".into()),
        ("PARTS", "2".into()),
        ("RANKS", "2".into()),
        ("LRS", "0.01 0.003".into()),
        ("HIDDENS", "16".into()),
        ("FANOUT_SETS", "5,5,5".into()),
        ("EPOCHS", "2".into()),
        ("STEPS_PER_EPOCH", "3".into()),
        ("BATCH_SIZE", "256".into()),
        ("DEVICE", "cpu".into()),
        ("THREADS", "1".into()),
        ("SERVE", "1".into()),
        ("PORT", port.to_string()),
    ];
    let with = |extra: &[(&'static str, &str)]| -> Vec<(&'static str, String)> {
        let mut v = settings.clone();
        for (k, val) in extra {
            v.retain(|(name, _)| name != k);
            v.push((k, val.to_string()));
        }
        v
    };
    let queue_is_empty = || {
        let out = run(cluster.command("squeue").args(["-h", "-o", "%i"]));
        String::from_utf8_lossy(&out.stdout).trim().is_empty()
    };

    // 1. A bad configuration: every problem named, nothing submitted.
    let out = pipeline(&cluster, &with(&[("PARTS", "3"), ("LRS", "0.01 fast")]));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("PARTS (3) must be a multiple of RANKS (2)")
            && said.contains("LRS: 'fast' is not a positive number")
            && said.contains("nothing submitted"),
        "{said}"
    );
    assert!(queue_is_empty(), "a bad configuration submitted jobs");

    // 2. The whole chain.
    let stage = Instant::now();
    let out = pipeline(&cluster, &settings);
    assert!(out.status.success(), "pipeline.sh: {}", text(&out));
    let jobs = pipeline_jobs(&out);
    println!("{}", text(&out));
    for step in ["prepare", "sweep", "select", "serve", "on-failure"] {
        assert!(
            jobs.get(step)
                .is_some_and(|id| id.chars().all(|c| c.is_ascii_digit())),
            "no job id for {step}: {}",
            text(&out)
        );
    }
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("array tasks 0,1 of 2 grid points"),
        "{}",
        text(&out)
    );
    let log = |name: &str, id: &str| logs.join(format!("shardsage-{name}-{id}"));
    cluster.expect_success(
        &jobs["prepare"],
        "prepare",
        limit,
        &log("prepare", &jobs["prepare"]),
    );
    cluster.expect_success(
        &jobs["sweep"],
        "sweep",
        limit,
        &log("sweep", &jobs["sweep"]),
    );
    cluster.expect_success(
        &jobs["select"],
        "select",
        limit,
        &log("select", &jobs["select"]),
    );
    let best = std::fs::read_to_string(work.join("best-checkpoint")).expect("best-checkpoint");
    let best = PathBuf::from(best.trim());
    assert!(
        best.starts_with(work.join("sweep")) && best.is_file(),
        "the chosen checkpoint {} is not one of the sweep's",
        best.display()
    );
    let selection: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.join("selection.json")).expect("selection.json"),
    )
    .expect("selection.json is JSON");
    assert_eq!(
        selection["best"]["checkpoint"].as_str().map(PathBuf::from),
        Some(best.clone()),
        "{selection}"
    );
    let test: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(work.join("test-metrics.json")).expect("test-metrics.json"),
    )
    .expect("test-metrics.json is JSON");
    let test_text = test.to_string();
    assert!(
        test_text.contains("mrr"),
        "test metrics without MRR: {test}"
    );
    println!(
        "prepare -> sweep (2 tasks) -> select + eval: {:.1} s, chosen {}",
        stage.elapsed().as_secs_f64(),
        best.display()
    );

    // The serve job answers on the port the pipeline was given; scancel makes it drain.
    let serve_log = log("serve", &jobs["serve"]);
    let started = Instant::now();
    let ready_url = format!("http://127.0.0.1:{port}/v2/health/ready");
    loop {
        let probe = run(Command::new("curl").args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "2",
            &ready_url,
        ]));
        if String::from_utf8_lossy(&probe.stdout) == "200" {
            break;
        }
        assert!(
            started.elapsed() < limit && cluster.in_queue(&jobs["serve"]),
            "the serve job never became ready:\n{}",
            read_logs(&serve_log)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let endpoint = std::fs::read_to_string(work.join("serve-endpoint")).expect("serve-endpoint");
    assert!(endpoint.trim().ends_with(&format!(":{port}")), "{endpoint}");
    println!(
        "serve job ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let out = run(cluster.command("scancel").arg(&jobs["serve"]));
    assert!(out.status.success(), "scancel: {}", text(&out));
    cluster.wait(&jobs["serve"], limit, &serve_log);
    let served = read_logs(&serve_log);
    assert!(served.contains("drained; exiting"), "{served}");
    // Training succeeded: the failure report's afternotok can never be met, so Slurm cancels it.
    let report = cluster.wait(
        &jobs["on-failure"],
        limit,
        &log("failed", &jobs["on-failure"]),
    );
    assert!(
        report.iter().all(|(state, _)| state == "CANCELLED"),
        "the failure report ran after a successful sweep: {report:?}"
    );

    // 3. Run again: every step's output exists and verifies, so nothing is submitted.
    let out = pipeline(&cluster, &with(&[("SERVE", "0")]));
    assert!(out.status.success(), "pipeline.sh again: {}", text(&out));
    let jobs_again = pipeline_jobs(&out);
    let said = text(&out);
    for step in ["prepare", "sweep", "select"] {
        assert_eq!(
            jobs_again[step], "skipped",
            "{step} was submitted again:\n{said}"
        );
    }
    assert!(
        said.contains("checksums verify") && said.matches("finished").count() >= 2,
        "{said}"
    );
    assert!(queue_is_empty(), "the re-run submitted jobs:\n{said}");
    println!("{said}");

    // 4. A grid point that training refuses (two fan-outs for three layers): its task fails,
    //    select is cancelled, and the afternotok report names the failed run.
    let stage = Instant::now();
    let bad_runs = work.join("sweep-bad");
    let out = pipeline(
        &cluster,
        &with(&[
            ("RUNS", &bad_runs.display().to_string()),
            ("LRS", "0.01"),
            ("FANOUT_SETS", "5,5,5 5,5"),
            ("SERVE", "0"),
        ]),
    );
    assert!(
        out.status.success(),
        "pipeline.sh (bad grid): {}",
        text(&out)
    );
    let jobs = pipeline_jobs(&out);
    assert_eq!(jobs["prepare"], "skipped");
    let sweep = cluster.wait(&jobs["sweep"], limit, &log("sweep", &jobs["sweep"]));
    assert!(
        sweep.iter().any(|(state, _)| state == "COMPLETED")
            && sweep.iter().any(|(state, _)| state == "FAILED"),
        "one task completes and one fails: {sweep:?}"
    );
    let select = cluster.wait(&jobs["select"], limit, &log("select", &jobs["select"]));
    assert!(
        select.iter().all(|(state, _)| state == "CANCELLED"),
        "select was not cancelled after the failed task: {select:?}"
    );
    cluster.expect_success(
        &jobs["on-failure"],
        "failure report",
        limit,
        &log("failed", &jobs["on-failure"]),
    );
    let report = read_logs(&log("failed", &jobs["on-failure"]));
    assert!(
        report.contains(&format!("training (job {}) failed", jobs["sweep"]))
            && report.contains("001-lr0.01-h16-f5x5")
            && report.contains("FAILED")
            && report.contains("has 2 entries"),
        "{report}"
    );
    println!("{report}");
    println!(
        "failed grid point: select cancelled, report ran: {:.1} s",
        stage.elapsed().as_secs_f64()
    );

    drop(cluster);
    println!(
        "whole pipeline cycle: {:.1} s",
        whole.elapsed().as_secs_f64()
    );
}
