//! Distributed training under real `mpirun` with 1, 2 and 4 ranks (every launch under `timeout`):
//! sampling and training equivalence across world sizes, identical parameters on all ranks,
//! identical evaluation at every W, faults (a killed rank, SIGTERM), uneven parts, and the clear
//! errors for a wrong part count, a missing part and parts from two datasets.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

mod common;
use common::mpi::{last_step, mpirun, processes_matching, rank_pids, wait_for_steps};
use common::{check_ok, eval_json, final_params, printed_checksum, same_bits, SMALL_MODEL};

const BIN: &str = env!("CARGO_BIN_EXE_shardsage");

fn example(name: &str) -> PathBuf {
    // Examples are built next to the test binaries: target/<profile>/examples/<name>.
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join("examples").join(name);
    assert!(
        p.exists(),
        "{} not built (cargo test builds examples)",
        p.display()
    );
    p
}

/// A small generated citation graph partitioned into 4 parts, shared by the tests.
fn parts() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::generated_parts(&tmp("data"), 1500, 5, 16, 20, 4, Some("ldg")))
}

fn tmp(name: &str) -> PathBuf {
    common::tmp("dist", name)
}

/// The small model on one thread per rank, logging every step.
const SMALL: &[&str] = &["--threads", "1", "--log-every", "1"];

fn train_args<'a>(data: &'a str, run: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train", "--data", data, "--run-dir", run];
    v.extend_from_slice(SMALL_MODEL);
    v.extend_from_slice(SMALL);
    v.extend_from_slice(extra);
    v
}

#[test]
fn sampled_blocks_are_identical_at_every_world_size() {
    require_mpi!();
    let probe = example("mpi_check");
    let d = tmp("sample");
    for rule in ["subgraph", "per-layer"] {
        let mut digests = Vec::new();
        let mut split: Vec<Vec<String>> = Vec::new();
        for w in [1usize, 2, 4] {
            let out = d.join(format!("{rule}-w{w}.txt"));
            check_ok(mpirun(
                w,
                120,
                &probe,
                &[
                    "sample",
                    parts().to_str().unwrap(),
                    "11",
                    out.to_str().unwrap(),
                    rule,
                ],
            ));
            digests.push(std::fs::read_to_string(&out).unwrap());
            split.push(
                (0..w)
                    .flat_map(|r| {
                        let f = format!("{}.split{r}", out.display());
                        std::fs::read_to_string(f)
                            .unwrap()
                            .lines()
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            );
        }
        assert!(digests[0].lines().count() >= 9, "{rule}: no blocks written");
        assert_eq!(
            digests[0], digests[1],
            "{rule}: W=1 and W=2 sampled different blocks"
        );
        assert_eq!(
            digests[0], digests[2],
            "{rule}: W=1 and W=4 sampled different blocks"
        );
        // With the batch split over the ranks, every node a rank samples gets exactly its W = 1
        // neighbours at that hop, and every seed is sampled by some rank.
        let single: std::collections::HashSet<&String> = split[0].iter().collect();
        for (w, lines) in [(2, &split[1]), (4, &split[2])] {
            for line in lines {
                assert!(
                    single.contains(line),
                    "{rule}, W={w}: {line} differs from W=1"
                );
            }
            let hop0 = |ls: &Vec<String>| -> std::collections::BTreeSet<String> {
                ls.iter()
                    .filter(|l| l.contains(" hop 0 "))
                    .cloned()
                    .collect()
            };
            assert_eq!(hop0(lines), hop0(&split[0]), "{rule}, W={w}: seeds differ");
        }
    }
}

#[test]
fn every_rank_knows_its_local_rank_and_whether_its_mpi_is_cuda_aware() {
    require_mpi!();
    let out = check_ok(mpirun(
        2,
        120,
        &example("mpi_check"),
        &["mpi-info", parts().to_str().unwrap()],
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    for r in 0..2 {
        // One node: the shared-memory split agrees with the launcher. Open MPI and MPICH both
        // answer the CUDA query; the answer depends on how MPI was built.
        assert!(
            text.contains(&format!(
                "rank {r} of 2: local_rank={r} launcher_local_rank=Some({r}) cuda_aware_mpi=Some("
            )),
            "{text}"
        );
    }
}

#[test]
fn a_step_on_two_ranks_equals_a_single_process_step() {
    require_mpi!();
    let probe = example("mpi_check");
    let d = tmp("step");
    let read = |p: &Path| -> Vec<f32> {
        std::fs::read(p)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut by_rule = Vec::new();
    for rule in ["subgraph", "per-layer"] {
        let mut results = Vec::new();
        for w in [1usize, 2, 4] {
            let out = d.join(format!("{rule}-w{w}.bin"));
            check_ok(mpirun(
                w,
                120,
                &probe,
                &[
                    "step",
                    parts().to_str().unwrap(),
                    "64",
                    out.to_str().unwrap(),
                    rule,
                ],
            ));
            results.push(read(&out));
        }
        let init_changed = results[0].iter().any(|x| *x != 0.0);
        assert!(init_changed && !results[0].is_empty());
        for (w, r) in [(2, &results[1]), (4, &results[2])] {
            assert_eq!(r.len(), results[0].len());
            let max_diff = r
                .iter()
                .zip(&results[0])
                .map(|(a, b)| (a - b).abs() / (1e-3 + b.abs()))
                .fold(0f32, f32::max);
            assert!(
                max_diff < 1e-4,
                "{rule}: W={w} step differs from W=1 by {max_diff} (relative)"
            );
        }
        by_rule.push(results.swap_remove(0));
    }
    // The two rules train on different edges.
    assert_ne!(by_rule[0], by_rule[1]);
}

#[test]
fn two_rank_training_checkpoints_and_evaluates_identically_at_every_world_size() {
    require_mpi!();
    let d = tmp("train2");
    let run = d.join("run");
    let data = parts().to_str().unwrap();
    let out = check_ok(mpirun(
        2,
        300,
        Path::new(BIN),
        &train_args(
            data,
            run.to_str().unwrap(),
            &[
                "--epochs",
                "2",
                "--steps-per-epoch",
                "6",
                "--checksum-every",
                "1",
            ],
        ),
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("final valid mrr="), "{stdout}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(
        metrics
            .lines()
            .filter(|l| l.contains("\"kind\":\"step\""))
            .count()
            >= 12
    );
    assert!(metrics.contains("bytes_exchanged_sum") && metrics.contains("time_allreduce_max_s"));
    let best = run.join("checkpoints").join("best.ssck");
    assert!(best.exists());
    let mut seen = Vec::new();
    for w in [1usize, 2, 4] {
        let o = check_ok(mpirun(
            w,
            300,
            Path::new(BIN),
            &[
                "eval",
                "--data",
                data,
                "--checkpoint",
                best.to_str().unwrap(),
                "--split",
                "test",
                "--threads",
                "1",
            ],
        ));
        seen.push(eval_json(&o.stdout)["metrics"].clone());
    }
    for (w, m) in [(2, &seen[1]), (4, &seen[2])] {
        for key in ["mrr", "hits@10", "auc"] {
            let a = seen[0][key].as_f64().unwrap_or(f64::NAN);
            let b = m[key].as_f64().unwrap_or(f64::NAN);
            assert!((a - b).abs() <= 1e-12, "{key} at W={w}: {b} vs W=1 {a}");
        }
    }
    // `embed` streams blocks of rows to rank 0: the file is the same at every W and block size.
    let mut files = Vec::new();
    for (w, block) in [(1usize, "0"), (2, "37"), (4, "1")] {
        let out = d.join(format!("emb-w{w}-b{block}.h5"));
        check_ok(mpirun(
            w,
            300,
            Path::new(BIN),
            &[
                "embed",
                "--data",
                data,
                "--checkpoint",
                best.to_str().unwrap(),
                "--threads",
                "1",
                "--block-rows",
                block,
                "--out",
                out.to_str().unwrap(),
            ],
        ));
        let f = hdf5::File::open(&out).unwrap();
        let emb: Vec<f32> = f.dataset("embedding").unwrap().read_raw().unwrap();
        let ids: Vec<u64> = f.dataset("orig_id").unwrap().read_raw().unwrap();
        files.push((emb, ids));
    }
    for (i, (emb, ids)) in files.iter().enumerate().skip(1) {
        assert!(same_bits(emb, &files[0].0), "embeddings differ (case {i})");
        assert_eq!(ids, &files[0].1, "orig ids differ (case {i})");
    }
}

#[test]
fn wrong_part_count_missing_part_and_mixed_datasets_fail_clearly() {
    require_mpi!();
    let d = tmp("bad");
    let data = parts().to_str().unwrap();
    // 4 parts on 3 ranks.
    let o = mpirun(
        3,
        60,
        Path::new(BIN),
        &train_args(data, d.join("r1").to_str().unwrap(), &["--epochs", "1"]),
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("4 parts") && err.contains("3 ranks"), "{err}");
    // A missing part file.
    let copy = d.join("missing");
    copy_dir(parts(), &copy);
    std::fs::remove_file(copy.join("part-00002.h5")).unwrap();
    let o = mpirun(
        2,
        60,
        Path::new(BIN),
        &train_args(
            copy.to_str().unwrap(),
            d.join("r2").to_str().unwrap(),
            &["--epochs", "1"],
        ),
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("part-00002.h5"), "{err}");
    // A part from another dataset.
    let other = common::generated_parts(&d.join("other"), 1200, 9, 16, 20, 4, None);
    let mixed = d.join("mixed");
    copy_dir(parts(), &mixed);
    std::fs::copy(other.join("part-00003.h5"), mixed.join("part-00003.h5")).unwrap();
    let o = mpirun(
        2,
        60,
        Path::new(BIN),
        &train_args(
            mixed.to_str().unwrap(),
            d.join("r3").to_str().unwrap(),
            &["--epochs", "1"],
        ),
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("part-00003.h5") && err.contains("rank"),
        "{err}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A long 2-rank run in the background: (run dir, a tag found in every rank's command line, the
/// mpirun child).
fn start_long_run(name: &str) -> (PathBuf, String, std::process::Child) {
    let d = tmp(name);
    let run = d.join("run");
    let tag = d.file_name().unwrap().to_string_lossy().to_string();
    let args = train_args(
        parts().to_str().unwrap(),
        run.to_str().unwrap(),
        // Far more steps than the tests wait for, however fast the machine.
        &[
            "--epochs",
            "4000",
            "--steps-per-epoch",
            "5",
            "--eval-every",
            "0",
        ],
    );
    let child = mpirun(2, 300, Path::new(BIN), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (run, tag, child)
}

/// Resumes `run` on 2 ranks for two more epochs than `from_step` reached; checks the step count.
fn resume_two_more_epochs(run: &Path, from_step: u64) -> Output {
    let epochs = (from_step / 5 + 2).to_string();
    let a = train_args(
        parts().to_str().unwrap(),
        run.to_str().unwrap(),
        &[
            "--epochs",
            &epochs,
            "--steps-per-epoch",
            "5",
            "--eval-every",
            "0",
            "--resume",
        ],
    );
    let out = check_ok(mpirun(2, 300, Path::new(BIN), &a));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let want = format!("trained {} steps", (from_step / 5 + 2) * 5);
    assert!(stdout.contains(&want), "{want} expected: {stdout}");
    out
}

#[test]
fn a_killed_rank_ends_the_job_quickly_and_the_run_resumes() {
    require_mpi!();
    let (run, tag, mut child) = start_long_run("kill");
    wait_for_steps(&run, 12, Duration::from_secs(120));
    let ranks = rank_pids(BIN, &tag);
    assert!(ranks.len() >= 2, "rank processes not found: {ranks:?}");
    let killed_at = Instant::now();
    unsafe { libc::kill(ranks[1] as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    let took = killed_at.elapsed();
    assert!(!status.success(), "job must fail when a rank dies");
    assert!(
        took < Duration::from_secs(10),
        "job took {took:?} to end after a rank died"
    );
    std::thread::sleep(Duration::from_millis(500));
    let left = processes_matching(&tag);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    // Resume from the last checkpoint (written at epoch ends) and finish.
    resume_two_more_epochs(&run, last_step(&run));
}

#[test]
fn sigterm_checkpoints_and_the_resumed_run_continues_from_that_step() {
    require_mpi!();
    let (run, tag, child) = start_long_run("term");
    wait_for_steps(&run, 7, Duration::from_secs(120));
    // What Slurm and Kubernetes do: SIGTERM to every rank.
    for p in rank_pids(BIN, &tag) {
        unsafe { libc::kill(p as i32, libc::SIGTERM) };
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "clean exit expected: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("checkpointed at step"))
        .expect("checkpoint line");
    let step: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert!((7..20_000).contains(&step));
    let out = resume_two_more_epochs(&run, step);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("global step {step})")),
        "resume did not start at step {step}: {stderr}"
    );
}

#[test]
fn uneven_parts_train_without_a_hang() {
    require_mpi!();
    let d = tmp("uneven");
    let data = d.join("parts");
    copy_dir(parts(), &data);
    // Leave part 3 with only 3 training edges; its rank wraps around them every step.
    let p3 = data.join("part-00003.h5");
    let mut part = shardsage::graph::store::GraphPart::read(&p3).unwrap();
    let before = part.train_edges.len();
    part.train_edges.truncate(3);
    part.write(&p3).unwrap();
    assert!(before > 50);
    let run = d.join("run");
    let out = check_ok(mpirun(
        4,
        300,
        Path::new(BIN),
        &train_args(
            data.to_str().unwrap(),
            run.to_str().unwrap(),
            &[
                "--epochs",
                "2",
                "--steps-per-epoch",
                "0",
                "--eval-every",
                "0",
            ],
        ),
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("trained"), "{stdout}");
}

#[test]
fn a_binary_whose_mpi_disagrees_with_the_launcher_stops_with_a_clear_error() {
    require_mpi!();
    // A launcher that says 2 ranks (MPICH's variable) while MPI starts this process alone.
    let d = tmp("launcher");
    let out = Command::new("timeout")
        .args([
            "60",
            BIN,
            "train",
            "--data",
            parts().to_str().unwrap(),
            "--run-dir",
            d.to_str().unwrap(),
            "--epochs",
            "1",
        ])
        .env("PMI_SIZE", "2")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("for 2 ranks") && err.contains("world of 1"),
        "{err}"
    );
}

#[test]
fn resident_features_train_exactly_like_host_gathered_features() {
    require_mpi!();
    let d = tmp("resident");
    let data = parts().to_str().unwrap();
    // A small remote cache, so steps gather owned, cached and fetched rows alike.
    let mut outs = Vec::new();
    for placement in ["host", "device"] {
        let run = d.join(placement);
        outs.push(check_ok(mpirun(
            4,
            300,
            Path::new(BIN),
            &train_args(
                data,
                run.to_str().unwrap(),
                &[
                    "--epochs",
                    "1",
                    "--steps-per-epoch",
                    "4",
                    "--eval-every",
                    "0",
                    "--feature-cache-rows",
                    "40",
                    "--features-on",
                    placement,
                ],
            ),
        )));
    }
    let log = String::from_utf8_lossy(&outs[1].stderr);
    assert!(
        log.contains("40 cached rows x 16") && log.contains("resident on cpu"),
        "the device placement was not used:\n{log}"
    );
    assert_eq!(
        printed_checksum(&outs[0].stdout),
        printed_checksum(&outs[1].stdout),
        "host and resident feature paths trained differently"
    );
    // The resident run's steps really fetched rows the cache misses.
    let metrics = std::fs::read_to_string(d.join("device").join("metrics.jsonl")).unwrap();
    let rate = metrics
        .lines()
        .filter(|l| l.contains("\"kind\":\"step\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["feature_cache_hit_rate"].as_f64())
        .fold(f64::NAN, f64::min);
    assert!(rate < 1.0, "every remote row was cached (hit rate {rate})");
}

#[test]
fn pipelined_training_is_bit_identical_to_unpipelined_at_every_world_size() {
    require_mpi!();
    let d = tmp("pipeline");
    let data = d.join("parts");
    copy_dir(parts(), &data);
    // Part 3 keeps 7 training edges: its rank wraps around them every step at W = 4.
    let p3 = data.join("part-00003.h5");
    let mut part = shardsage::graph::store::GraphPart::read(&p3).unwrap();
    part.train_edges.truncate(7);
    part.write(&p3).unwrap();
    let data = data.to_str().unwrap();
    for w in [1usize, 2, 4] {
        let train = |name: &str, extra: &[&str]| -> PathBuf {
            let run = d.join(format!("w{w}-{name}"));
            let mut args = vec!["--steps-per-epoch", "5", "--eval-every", "0"];
            args.extend_from_slice(extra);
            check_ok(mpirun(
                w,
                300,
                Path::new(BIN),
                &train_args(data, run.to_str().unwrap(), &args),
            ));
            run
        };
        let plain = final_params(&train("plain", &["--epochs", "2", "--pipeline", "off"]));
        let piped = final_params(&train("piped", &["--epochs", "2", "--pipeline", "on"]));
        assert!(same_bits(&plain, &piped), "W={w}: pipelined run differs");

        // Stop after epoch 1 with checkpoints at global steps 2 and 4, keep only step 2's, and
        // resume from there for the rest.
        let run = train(
            "resumed",
            &[
                "--epochs",
                "1",
                "--checkpoint-every",
                "2",
                "--keep-last",
                "5",
                "--pipeline",
                "on",
            ],
        );
        let ckpts = run.join("checkpoints");
        let mut kept = 0;
        for entry in std::fs::read_dir(&ckpts).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "ckpt-0000000002.ssck" {
                kept += 1;
            } else if name.starts_with("ckpt-") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        assert_eq!(kept, 1, "no checkpoint at step 2 in {}", ckpts.display());
        let resumed = final_params(&train(
            "resumed",
            &["--epochs", "2", "--resume", "--pipeline", "on"],
        ));
        assert!(
            same_bits(&plain, &resumed),
            "W={w}: pipelined run resumed at step 2 differs"
        );
    }
}

#[test]
fn pipeline_auto_is_on_only_with_a_cblas_gemm_and_two_threads_per_rank_to_spare() {
    require_mpi!();
    let d = tmp("pipeline-auto");
    let data = parts().to_str().unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let openblas = shardsage::backend::CpuBackend::new(1)
        .unwrap()
        .with_gemm(shardsage::backend::CpuGemm::Openblas)
        .is_ok();
    // (ranks, threads per rank, --cpu-gemm, whether auto pipelines): only with a CBLAS gemm, at
    // least two threads per rank, and no more threads on the node than cores.
    let mut cases = vec![(1usize, 2usize, "builtin", false), (4, 1, "builtin", false)];
    if openblas {
        cases.extend([
            (1, 1, "openblas", false),
            (1, 2, "openblas", cores >= 2),
            (2, 1, "openblas", false),
            (2, 2, "openblas", cores >= 4),
            (4, 1, "openblas", false),
        ]);
    } else {
        println!("OpenBLAS does not load here: only the builtin cases run");
    }
    for (w, threads, gemm, want) in cases {
        let run = d.join(format!("w{w}-t{threads}-{gemm}"));
        let run = run.to_str().unwrap();
        let threads = threads.to_string();
        let mut args = vec!["train", "--data", data, "--run-dir", run];
        args.extend_from_slice(SMALL_MODEL);
        args.extend_from_slice(&[
            "--threads",
            &threads,
            "--log-every",
            "1",
            "--steps-per-epoch",
            "2",
            "--epochs",
            "1",
            "--eval-every",
            "0",
            "--device",
            "cpu",
            "--cpu-gemm",
            gemm,
        ]);
        let mut cmd = mpirun(w, 300, Path::new(BIN), &args);
        // Unbound, as a rank with several threads runs (bound, a rank sees one core).
        cmd.env("OMPI_MCA_hwloc_base_binding_policy", "none");
        let out = check_ok(cmd);
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        let line = format!(
            "batch pipeline: {} (--pipeline auto)",
            if want { "on" } else { "off" }
        );
        assert!(
            log.contains(&line),
            "W={w} x {threads} threads, {gemm} on {cores} cores: no '{line}' in\n{log}"
        );
    }
}

/// Exchanges past MPI's 32-bit counts go in rounds; the rounds (here of a few elements) give what
/// one exchange gives, also when one rank sends nothing.
#[test]
fn all_to_all_in_rounds_equals_one_exchange() {
    require_mpi!();
    let probe = example("mpi_check");
    for w in [2usize, 4] {
        let out = check_ok(mpirun(w, 120, &probe, &["exchange"]));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.matches("exchange ok").count(), w, "{stdout}");
    }
}

/// A panic on a thread other than the main one (a rayon worker, the step's compute thread) must
/// not call MPI (the thread level is FUNNELED), and must still end the whole job at once.
#[test]
fn a_panic_on_a_worker_thread_ends_the_job_quickly() {
    require_mpi!();
    let probe = example("mpi_check");
    let started = std::time::Instant::now();
    let out = mpirun(2, 60, &probe, &["panic-worker"]).output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(secs < 20.0, "the job took {secs:.1} s to end");
    assert!(
        stderr.contains("rank 1: panic on thread probe-worker"),
        "{stderr}"
    );
    assert!(!stderr.contains("outlived"), "{stderr}");
}

/// Bytes of memory the kernel says are available.
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m
                .lines()
                .find(|l| l.starts_with("MemAvailable:"))?
                .to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}

#[test]
fn an_exchange_of_more_than_2_pow_31_bytes_arrives_whole() {
    require_mpi!();
    let bytes: u64 = (1 << 31) + 4099;
    // Rank 0 holds the data and a round's copy, rank 1 the result and a round's buffer.
    let need = 4 * bytes;
    if mem_available() < need + (2 << 30) {
        eprintln!(
            "skipped: {:.1} GiB available, the exchange needs about {:.1} GiB",
            mem_available() as f64 / (1u64 << 30) as f64,
            need as f64 / (1u64 << 30) as f64
        );
        return;
    }
    let probe = example("mpi_check");
    let out = check_ok(mpirun(
        2,
        600,
        &probe,
        &["exchange-large", &bytes.to_string()],
    ));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("large exchange ok"), "{stdout}");
    eprintln!("{}", stdout.trim());
}
