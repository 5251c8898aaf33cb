//! Training on one process through the real binary: determinism, bit-identical resume, the
//! evaluation commands, node classification, and the clear errors for bad configs, a diverging
//! run and an incompatible checkpoint.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use shardsage::train::checkpoint::Checkpoint;

mod common;
use common::{run_err, run_ok, SMALL_MODEL};

fn tmp(name: &str) -> PathBuf {
    common::tmp("train", name)
}

/// A generated citation graph in 2 parts (single process loads both).
fn parts() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::generated_parts(&tmp("data"), 1200, 2, 16, 30, 2, None))
}

/// The small model, on 2 threads, 4 steps per epoch (`[1]` is the hidden width).
fn small() -> Vec<&'static str> {
    let mut v = SMALL_MODEL.to_vec();
    v.extend_from_slice(&["--threads", "2", "--steps-per-epoch", "4"]);
    v
}

fn train(run_dir: &Path, extra: &[&str]) -> Output {
    let mut a = vec![
        "train",
        "--data",
        parts().to_str().unwrap(),
        "--run-dir",
        run_dir.to_str().unwrap(),
    ];
    a.extend(small());
    a.extend_from_slice(extra);
    run_ok(&a)
}

fn latest_params(run_dir: &Path) -> Vec<f32> {
    let dir =
        shardsage::train::checkpoint::CheckpointDir::new(run_dir.join("checkpoints")).unwrap();
    dir.latest_good().unwrap().expect("a checkpoint").1.params
}

const RULES: [&str; 2] = ["subgraph", "per-layer"];

#[test]
fn same_seed_gives_bit_identical_parameters() {
    for rule in RULES {
        let d = tmp(&format!("det-{rule}"));
        let with = |extra: &[&'static str]| -> Vec<&str> {
            let mut v = vec!["--sampling", rule];
            v.extend_from_slice(extra);
            v
        };
        train(&d.join("a"), &with(&["--epochs", "2"]));
        train(&d.join("b"), &with(&["--epochs", "2"]));
        let (a, b) = (latest_params(&d.join("a")), latest_params(&d.join("b")));
        assert!(!a.is_empty());
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{rule}: runs differ"
        );
        train(&d.join("c"), &with(&["--epochs", "2", "--seed", "9"]));
        assert_ne!(
            a,
            latest_params(&d.join("c")),
            "{rule}: another seed must give other parameters"
        );
    }
}

#[test]
fn an_interrupted_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let mut finals = Vec::new();
    for rule in RULES {
        let d = tmp(&format!("resume-{rule}"));
        let with = |extra: &[&'static str]| -> Vec<&str> {
            let mut v = vec!["--sampling", rule];
            v.extend_from_slice(extra);
            v
        };
        train(&d.join("full"), &with(&["--epochs", "3"]));
        // The same run stopped after one epoch, then resumed for the remaining two.
        train(&d.join("split"), &with(&["--epochs", "1"]));
        let out = train(&d.join("split"), &with(&["--epochs", "3", "--resume"]));
        assert!(String::from_utf8_lossy(&out.stderr).contains("resuming from"));
        let full = latest_params(&d.join("full"));
        let split = latest_params(&d.join("split"));
        assert!(
            full.iter()
                .zip(&split)
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{rule}: resumed run differs"
        );
        let ck = Checkpoint::load(&d.join("split/checkpoints/best.ssck")).unwrap();
        assert!(ck.best_metric.is_some());
        finals.push(full);
    }
    assert_ne!(finals[0], finals[1], "the two rules must train differently");
}

#[test]
fn a_corrupt_latest_checkpoint_is_skipped_on_resume() {
    let d = tmp("corrupt");
    let r = d.join("run");
    train(&r, &["--epochs", "2"]);
    let dir = shardsage::train::checkpoint::CheckpointDir::new(r.join("checkpoints")).unwrap();
    let list = dir.list().unwrap();
    let (_, newest) = list.iter().max_by_key(|(s, _)| *s).unwrap().clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap();
    let out = train(&r, &["--epochs", "3", "--resume"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(newest.file_name().unwrap().to_str().unwrap()),
        "no warning naming the corrupt file: {err}"
    );
    assert!(err.contains("resuming from"), "{err}");
}

#[test]
fn metrics_tensorboard_plot_eval_embed_and_predict_work_on_a_run() {
    let d = tmp("cmds");
    let r = d.join("run");
    let out = train(&r, &["--epochs", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mrr: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("final valid mrr="))
        .expect("final metric line")
        .parse()
        .unwrap();
    assert!(mrr > 0.0 && mrr <= 1.0);
    assert!(r.join("config.toml").exists());
    let records = shardsage::train::metrics::read_metrics(&r.join("metrics.jsonl")).unwrap();
    assert!(records.len() >= 12 + 3);
    // A finished run ends with its end record; every evaluation also printed a Katib line
    // whose valid-mrr is the eval record's.
    use shardsage::train::metrics::{EndReason, Record};
    match records.last() {
        Some(Record::End(e)) => {
            assert_eq!(
                (e.epoch, e.reason, e.metric.as_str()),
                (3, EndReason::Completed, "mrr")
            );
            assert!(e.best_valid.is_some_and(|b| b >= mrr), "{e:?}");
        }
        other => panic!("the last record is not the end record: {other:?}"),
    }
    let katib: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(" epoch=") && l.contains(" valid-mrr="))
        .collect();
    let evals: Vec<f64> = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval(e) if e.split == "valid" => e.metrics.get("mrr").copied(),
            _ => None,
        })
        .collect();
    assert_eq!(katib.len(), evals.len(), "{stdout}");
    for (line, mrr) in katib.iter().zip(&evals) {
        // Katib reads a leading RFC 3339 timestamp as the values' time.
        let stamp = line.split_whitespace().next().unwrap_or_default();
        assert!(
            stamp.len() == 20
                && stamp.starts_with("20")
                && stamp.ends_with('Z')
                && stamp.as_bytes()[10] == b'T',
            "{line}"
        );
        let printed: f64 = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("valid-mrr="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        assert!((printed - mrr).abs() <= 5e-7, "{line} vs {mrr}");
        assert!(line.contains(" valid-hits_at_10="), "{line}");
    }
    assert!(std::fs::read_dir(r.join("tb")).unwrap().count() == 1);
    run_ok(&[
        "plot",
        r.to_str().unwrap(),
        "--out",
        d.join("c.svg").to_str().unwrap(),
    ]);
    assert!(std::fs::read_to_string(d.join("c.svg"))
        .unwrap()
        .contains("<svg"));

    let best = r.join("checkpoints/best.ssck");
    let data = parts().to_str().unwrap();
    let out = run_ok(&[
        "eval",
        "--data",
        data,
        "--checkpoint",
        best.to_str().unwrap(),
        "--split",
        "valid",
        "--threads",
        "2",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(&text[text.find('{').unwrap()..]).unwrap();
    let best_valid = Checkpoint::load(&best).unwrap().best_metric.unwrap();
    assert_eq!(
        json["metrics"]["mrr"].as_f64().unwrap(),
        best_valid,
        "eval must reproduce the best validation MRR"
    );

    let emb = d.join("emb.h5");
    run_ok(&[
        "embed",
        "--data",
        data,
        "--checkpoint",
        best.to_str().unwrap(),
        "--out",
        emb.to_str().unwrap(),
    ]);
    let f = hdf5::File::open(&emb).unwrap();
    assert_eq!(f.dataset("embedding").unwrap().shape(), vec![1200, 16]);
    let orig: Vec<u64> = f.dataset("orig_id").unwrap().read_raw().unwrap();
    let mut sorted = orig.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1200).collect::<Vec<u64>>());

    let out = run_ok(&[
        "predict",
        "--data",
        data,
        "--checkpoint",
        best.to_str().unwrap(),
        "--node",
        "1100",
        "--top-k",
        "5",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 5, "{text}");
    let err = run_err(&[
        "predict",
        "--data",
        data,
        "--checkpoint",
        best.to_str().unwrap(),
        "--node",
        "999999",
    ]);
    assert!(err.contains("999999"), "{err}");
}

#[test]
fn bad_configs_are_clear_errors_naming_the_field() {
    let d = tmp("badcfg");
    let data = parts().to_str().unwrap();
    let r = d.join("r");
    let r = r.to_str().unwrap();
    for (flags, field) in [
        (vec!["--batch-size", "0"], "batch_size"),
        (vec!["--hidden", "0"], "hidden"),
        (vec!["--layers", "3", "--fanouts", "5,3"], "fanouts"),
        (vec!["--fanouts", "5,x"], "fanouts"),
        (vec!["--lr=-1"], "lr"),
        (vec!["--lr", "nan"], "lr: must be a finite number"),
        (vec!["--dropout", "inf"], "dropout: must be a finite number"),
        (vec!["--dropout", "1.5"], "dropout"),
    ] {
        let mut a = vec!["train", "--data", data, "--run-dir", r];
        a.extend(flags.iter());
        let err = run_err(&a);
        assert!(err.contains(field), "{flags:?}: {err}");
    }
    let cfg = d.join("c.toml");
    std::fs::write(&cfg, "hiden = 3\n").unwrap();
    let err = run_err(&[
        "train",
        "--data",
        data,
        "--run-dir",
        r,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(err.contains("c.toml") && err.contains("hiden"), "{err}");

    // Defaults, then the file, then the flags given: the run directory records the result.
    std::fs::write(&cfg, "hidden = 12\nepochs = 1\nlr = 0.002\nlayers = 1\n").unwrap();
    run_ok(&[
        "train",
        "--data",
        data,
        "--run-dir",
        r,
        "--config",
        cfg.to_str().unwrap(),
        "--lr",
        "0.003",
        "--threads",
        "1",
        "--steps-per-epoch",
        "2",
    ]);
    let written: toml::Table =
        toml::from_str(&std::fs::read_to_string(Path::new(r).join("config.toml")).unwrap())
            .unwrap();
    assert_eq!(written["hidden"].as_integer(), Some(12));
    assert_eq!(written["epochs"].as_integer(), Some(1));
    assert_eq!(written["lr"].as_float().map(|v| v as f32), Some(0.003));
    assert_eq!(written["batch_size"].as_integer(), Some(512));
    let fanouts: Vec<i64> = written["fanouts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_integer())
        .collect();
    assert_eq!(fanouts, vec![15]);
}

#[test]
fn a_diverging_run_stops_with_the_step_and_keeps_the_last_good_checkpoint() {
    let d = tmp("nan");
    let r = d.join("run");
    train(&r, &["--epochs", "1", "--eval-every", "0"]);
    let before = std::fs::read(r.join("checkpoints/best.ssck")).unwrap();
    let mut a = vec![
        "train",
        "--data",
        parts().to_str().unwrap(),
        "--run-dir",
        r.to_str().unwrap(),
    ];
    a.extend(small());
    a.extend_from_slice(&["--epochs", "3", "--resume", "--lr", "3e38"]);
    let err = run_err(&a);
    assert!(err.contains("loss is") && err.contains("step"), "{err}");
    assert_eq!(
        before,
        std::fs::read(r.join("checkpoints/best.ssck")).unwrap()
    );
    let dir = shardsage::train::checkpoint::CheckpointDir::new(r.join("checkpoints")).unwrap();
    assert!(dir
        .latest_good()
        .unwrap()
        .unwrap()
        .1
        .params
        .iter()
        .all(|x| x.is_finite()));
}

#[test]
fn a_checkpoint_from_another_model_shape_or_dataset_is_refused() {
    let d = tmp("incompat");
    let r = d.join("run");
    train(&r, &["--epochs", "1"]);
    let mut a = vec![
        "train",
        "--data",
        parts().to_str().unwrap(),
        "--run-dir",
        r.to_str().unwrap(),
    ];
    // The same flags with another hidden width.
    let mut flags = small();
    flags[1] = "24";
    a.extend_from_slice(&flags);
    a.extend_from_slice(&["--epochs", "2", "--resume"]);
    let err = run_err(&a);
    assert!(err.contains("model shape"), "{err}");
    // Another dataset.
    let other = common::generated_parts(&d.join("other"), 900, 7, 16, 30, 1, None);
    let err = run_err(&[
        "eval",
        "--data",
        other.to_str().unwrap(),
        "--checkpoint",
        r.join("checkpoints/best.ssck").to_str().unwrap(),
    ]);
    assert!(err.contains("another dataset"), "{err}");
}

#[test]
fn node_classification_trains_on_cora_when_the_shared_data_is_there() {
    let cora = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/cora"));
    if !cora.exists() {
        eprintln!("skipped: {} not found", cora.display());
        return;
    }
    let d = tmp("cora");
    let ds = d.join("cora.h5");
    let f = |n: &str| cora.join(n).to_str().unwrap().to_string();
    run_ok(&[
        "ingest",
        "--edges",
        &f("edges.tsv"),
        "--features",
        &f("features.npy"),
        "--labels",
        &f("labels.npy"),
        "--train-idx",
        &f("train_idx.npy"),
        "--valid-idx",
        &f("val_idx.npy"),
        "--test-idx",
        &f("test_idx.npy"),
        "--undirected",
        "--name",
        "cora",
        "--num-neg",
        "50",
        "--out",
        ds.to_str().unwrap(),
    ]);
    run_ok(&[
        "partition",
        "--dataset",
        ds.to_str().unwrap(),
        "--parts",
        "1",
        "--out-dir",
        d.join("p").to_str().unwrap(),
    ]);
    let out = run_ok(&[
        "train",
        "--data",
        d.join("p").to_str().unwrap(),
        "--run-dir",
        d.join("r").to_str().unwrap(),
        "--task",
        "node-classification",
        "--layers",
        "2",
        "--fanouts",
        "10,10",
        "--hidden",
        "64",
        "--batch-size",
        "140",
        "--steps-per-epoch",
        "0",
        "--epochs",
        "30",
        "--lr",
        "0.01",
        "--dropout",
        "0.5",
        "--eval-every",
        "5",
        "--threads",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let acc: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("best valid accuracy="))
        .expect("accuracy line")
        .parse()
        .unwrap();
    // 7 classes: chance is about 0.3 (the largest class); a trained GraphSAGE is far above it.
    assert!(acc > 0.6, "validation accuracy {acc}");
}

#[test]
fn time_based_checkpoints_land_mid_epoch_and_resume_bit_identical() {
    let d = tmp("ckpt-minutes");
    let full = d.join("full");
    train(&full, &["--epochs", "2"]);
    // A deadline that has always passed: rank 0 asks for a checkpoint after every step.
    let timed = d.join("timed");
    train(
        &timed,
        &[
            "--epochs",
            "1",
            "--checkpoint-minutes",
            "0.000001",
            "--keep-last",
            "10",
        ],
    );
    let names: Vec<String> = std::fs::read_dir(timed.join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ckpt-"))
        .collect();
    for step in 1..=4 {
        let want = format!("ckpt-{step:010}.ssck");
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // Resume from the step-2 checkpoint (mid-epoch) for both epochs.
    for n in &names {
        if n != "ckpt-0000000002.ssck" {
            std::fs::remove_file(timed.join("checkpoints").join(n)).unwrap();
        }
    }
    train(
        &timed,
        &["--epochs", "2", "--resume", "--checkpoint-minutes", "0"],
    );
    let (a, b) = (latest_params(&full), latest_params(&timed));
    assert!(
        a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
        "resumed run differs"
    );
    // Refused when negative, naming the setting.
    let err = run_err(&[
        "train",
        "--data",
        parts().to_str().unwrap(),
        "--run-dir",
        d.join("bad").to_str().unwrap(),
        "--checkpoint-minutes=-1",
    ]);
    assert!(err.contains("checkpoint_minutes"), "{err}");
}

/// best.ssck is written before the step's checkpoint: a run stopped between the two (here: the
/// final checkpoint removed, best.ssck of that step kept) resumes from the previous checkpoint
/// and ends with the same parameters and the same best.ssck as the uninterrupted run.
#[test]
fn a_crash_between_best_and_latest_checkpoint_resumes_to_the_same_run() {
    let d = tmp("crash-best");
    let full = d.join("full");
    train(&full, &["--epochs", "3", "--eval-every", "1"]);
    let best_full = Checkpoint::load(&full.join("checkpoints/best.ssck")).unwrap();
    let cut = d.join("cut");
    train(&cut, &["--epochs", "3", "--eval-every", "1"]);
    let dir = shardsage::train::checkpoint::CheckpointDir::new(cut.join("checkpoints")).unwrap();
    let newest = dir.list().unwrap().pop().unwrap().1;
    std::fs::remove_file(&newest).unwrap();
    train(&cut, &["--epochs", "3", "--eval-every", "1", "--resume"]);
    let (a, b) = (latest_params(&full), latest_params(&cut));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let best_cut = Checkpoint::load(&cut.join("checkpoints/best.ssck")).unwrap();
    assert_eq!(best_cut.global_step, best_full.global_step);
    assert!(best_cut
        .params
        .iter()
        .zip(&best_full.params)
        .all(|(x, y)| x.to_bits() == y.to_bits()));
}

/// A second stop signal while the first is still pending ends the process at once (status
/// 128 + the signal) instead of waiting for the next step boundary. The two signals are sent to
/// the stopped process and delivered together on SIGCONT, so the order is deterministic.
#[test]
fn a_second_stop_signal_exits_at_once() {
    let d = tmp("second-signal");
    let run = d.join("run");
    let mut child = std::process::Command::new(common::bin())
        .args([
            "train",
            "--data",
            parts().to_str().unwrap(),
            "--run-dir",
            run.to_str().unwrap(),
            "--epochs",
            "100000",
            "--eval-every",
            "0",
            "--checkpoint-minutes",
            "0",
        ])
        .args(small())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = run.join("metrics.jsonl");
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&metrics).is_ok_and(|m| m.contains("\"kind\":\"step\"")) {
        assert!(started.elapsed().as_secs() < 60, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let pid = child.id().to_string();
    for sig in ["-STOP", "-USR1", "-TERM", "-CONT"] {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
    let sent = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed().as_secs() < 10,
            "still running 10 s after the second signal"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Whichever of the two the kernel delivers second ends the process.
    assert!(
        [Some(128 + 10), Some(128 + 15)].contains(&status.code()),
        "{status:?}"
    );
}
