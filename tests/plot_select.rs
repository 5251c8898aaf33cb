//! `shardsage plot` and `shardsage select` on hand-written metrics.jsonl files: the SVG has a
//! curve per series with the right number of points, resumed duplicates collapse, missing files
//! are named; runs are ranked by their best validation metric, failed runs are listed, JSON
//! output is machine-readable.

use std::path::{Path, PathBuf};
use std::process::Command;

use shardsage::train::plot::plot_run;
use shardsage::train::select::{render_table, select_runs, RunResult};

fn write_lines(run: &Path, lines: &[String]) {
    std::fs::create_dir_all(run).unwrap();
    std::fs::write(run.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
}

fn step_line(global_step: u64, loss: &str) -> String {
    format!(
        r#"{{"kind":"step","epoch":{},"step":{},"global_step":{global_step},"loss":{loss},"lr":0.0005,"seeds_per_s":1000.0,"sampled_edges_per_s":5.0e6,"time_sample_s":0.01,"time_gather_s":0.02,"time_compute_s":0.03,"time_update_s":0.001,"peak_rss_bytes":1000000,"time_comm_s":0.004}}"#,
        global_step / 10,
        global_step % 10
    )
}

fn eval_line(epoch: u64, split: &str, mrr: f64, hits10: f64) -> String {
    format!(
        r#"{{"kind":"eval","epoch":{epoch},"global_step":{},"split":"{split}","metrics":{{"mrr":{mrr},"hits@10":{hits10},"count":100}}}}"#,
        epoch * 10 + 9
    )
}

/// The contents of every `<text>` element, trimmed.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|el| {
            let start = el.find('>').unwrap() + 1;
            let end = el.find("</text>").unwrap();
            el[start..end].trim().to_string()
        })
        .collect()
}

/// Number of points of every `<polyline points="...">` in the SVG.
fn polyline_sizes(svg: &str) -> Vec<usize> {
    svg.split("<polyline")
        .skip(1)
        .map(|el| {
            let start = el.find("points=\"").unwrap() + 8;
            let end = start + el[start..].find('"').unwrap();
            el[start..end].split_whitespace().count()
        })
        .collect()
}

#[test]
fn plot_draws_every_series() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run-a");
    let mut lines: Vec<String> = (0..30)
        .map(|s| step_line(s, &format!("{}", 1.0 / (1.0 + s as f64))))
        .collect();
    lines[7] = step_line(7, "null"); // a diverged step: left out of the curve
                                     // A resume from step 20: steps 20..25 written again, plus an unknown record kind.
    lines.extend((20..25).map(|s| step_line(s, "0.05")));
    lines.push(r#"{"kind":"comm","bytes":5}"#.into());
    for epoch in 0..4 {
        lines.push(eval_line(epoch, "valid", 0.5 + epoch as f64 * 0.1, 0.8));
        lines.push(eval_line(epoch, "test", 0.45 + epoch as f64 * 0.1, 0.75));
    }
    write_lines(&run, &lines);

    let out = dir.path().join("curves.svg");
    plot_run(&run, &out, 0.6).unwrap();
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.trim_start().starts_with("<svg"), "{}", &svg[..100]);
    assert!(svg.trim_end().ends_with("</svg>"));
    let texts = texts(&svg);
    for text in [
        "run-a",
        "training loss",
        "mrr",
        "hits@10",
        "valid",
        "test",
        "global step",
        "epoch",
    ] {
        assert!(
            texts.iter().any(|t| t == text),
            "missing text {text}: {texts:?}"
        );
    }
    assert!(!texts.iter().any(|t| t == "count"), "count is not a curve");
    let sizes = polyline_sizes(&svg);
    // Loss raw + smoothed: 29 points each (30 steps, one null).
    assert_eq!(sizes.iter().filter(|&&n| n == 29).count(), 2, "{sizes:?}");
    // mrr and hits@10, valid and test: 4 epochs each.
    assert_eq!(sizes.iter().filter(|&&n| n == 4).count(), 4, "{sizes:?}");

    // The command line, with the default output path.
    let status = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .args(["plot", run.to_str().unwrap(), "--smooth", "0"])
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let svg = std::fs::read_to_string(run.join("curves.svg")).unwrap();
    assert_eq!(
        polyline_sizes(&svg).iter().filter(|&&n| n == 29).count(),
        1,
        "no smoothed curve with --smooth 0"
    );
}

#[test]
fn plot_errors_name_the_metrics_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = plot_run(dir.path(), &dir.path().join("x.svg"), 0.9)
        .unwrap_err()
        .to_string();
    assert!(err.contains("metrics.jsonl"), "{err}");
    assert!(!dir.path().join("x.svg").exists());

    write_lines(dir.path(), &["{\"kind\":\"other\"}".to_string()]);
    let err = plot_run(dir.path(), &dir.path().join("x.svg"), 0.9)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("metrics.jsonl") && err.contains("no step or eval"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .args(["plot", dir.path().join("nope").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("metrics.jsonl"));
}

/// The `status` of every run of `select`'s JSON, in its order.
fn statuses(json: &serde_json::Value) -> Vec<String> {
    json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap().to_string())
        .collect()
}

/// The record training writes last when a run is done.
fn end_line(global_step: u64) -> String {
    format!(
        r#"{{"kind":"end","epoch":3,"global_step":{global_step},"reason":"completed","metric":"mrr","best_valid":0.5}}"#
    )
}

/// Five runs: b is best by mrr, a by hits@10 and has a best checkpoint; c has no metrics file;
/// d has only test evaluations; e has the best mrr of all but did not finish (its last record
/// is a step after its last evaluation).
fn make_runs(root: &Path) -> Vec<PathBuf> {
    let a = root.join("a");
    write_lines(
        &a,
        &[
            step_line(0, "0.7"),
            eval_line(0, "valid", 0.60, 0.90),
            eval_line(1, "valid", 0.70, 0.95),
            eval_line(2, "valid", 0.65, 0.93),
            eval_line(2, "test", 0.99, 0.99),
            end_line(29),
        ],
    );
    std::fs::create_dir_all(a.join("checkpoints")).unwrap();
    std::fs::write(a.join("checkpoints/best.ssck"), b"placeholder").unwrap();
    let b = root.join("b");
    write_lines(
        &b,
        &[
            eval_line(0, "valid", 0.75, 0.85),
            eval_line(1, "valid", 0.80, 0.80),
            eval_line(2, "valid", f64::NAN, 0.1).replace("NaN", "null"),
            end_line(29),
        ],
    );
    let c = root.join("c");
    std::fs::create_dir_all(&c).unwrap();
    let d = root.join("d");
    write_lines(&d, &[eval_line(0, "test", 0.9, 0.9), end_line(9)]);
    let e = root.join("e");
    write_lines(
        &e,
        &[
            eval_line(0, "valid", 0.95, 0.99),
            end_line(9),
            step_line(10, "0.5"),
        ],
    );
    vec![c, a, d, b, e]
}

#[test]
fn select_ranks_runs_and_lists_failures() {
    let dir = tempfile::tempdir().unwrap();
    let runs = make_runs(dir.path());
    let sel = select_runs(&runs, "mrr", false).unwrap();
    let names = |sel: &shardsage::train::select::Selection| -> Vec<String> {
        sel.runs
            .iter()
            .map(|r| r.run().file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(&sel), ["b", "a", "c", "d", "e"]);
    match &sel.runs[0] {
        RunResult::Ok {
            best_metric,
            epoch,
            checkpoint,
            ..
        } => {
            assert_eq!((*best_metric, *epoch), (0.80, 1));
            assert!(checkpoint.is_none());
        }
        other => panic!("{other:?}"),
    }
    match &sel.runs[1] {
        RunResult::Ok {
            best_metric,
            epoch,
            checkpoint,
            ..
        } => {
            assert_eq!(
                (*best_metric, *epoch),
                (0.70, 1),
                "test split must not count"
            );
            assert_eq!(
                checkpoint.as_deref(),
                Some(runs[1].join("checkpoints/best.ssck").as_path())
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&sel.runs[2], RunResult::Failed { error, .. } if error.contains("metrics.jsonl"))
    );
    assert!(matches!(&sel.runs[3], RunResult::Failed { error, .. } if error.contains("'valid'")));
    assert!(
        matches!(&sel.runs[4], RunResult::Unfinished { reason, best_metric: Some(m), .. }
            if reason.contains("did not finish") && reason.contains("step 10") && *m == 0.95),
        "{:?}",
        sel.runs[4]
    );
    let table = render_table(&sel);
    assert_eq!(table.matches("FAILED").count(), 2, "{table}");
    assert_eq!(table.matches("UNFINISHED").count(), 1, "{table}");
    assert!(
        table.contains("best: ") && table.lines().last().unwrap().contains("/b "),
        "{table}"
    );

    // Another metric, another winner.
    let sel = select_runs(&runs, "hits@10", false).unwrap();
    assert!(
        matches!(&sel.best(), Some(RunResult::Ok { run, best_metric, .. }) if run.ends_with("a") && *best_metric == 0.95)
    );

    // Asked to, the unfinished run is ranked too (and wins), marked as not finished.
    let sel = select_runs(&runs, "mrr", true).unwrap();
    assert_eq!(names(&sel), ["e", "b", "a", "c", "d"]);
    assert!(matches!(
        &sel.runs[0],
        RunResult::Ok {
            finished: false,
            ..
        }
    ));
    assert!(matches!(&sel.runs[1], RunResult::Ok { finished: true, .. }));

    assert!(select_runs(&[], "mrr", false).is_err());
}

/// Equal best values: the run that reached its value in fewer steps first, then the run path;
/// the same order whatever order the runs are given in.
#[test]
fn select_breaks_ties_the_same_way_in_any_argument_order() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, step: u64| -> PathBuf {
        let r = dir.path().join(name);
        let eval = format!(
            r#"{{"kind":"eval","epoch":1,"global_step":{step},"split":"valid","metrics":{{"mrr":0.5}}}}"#
        );
        write_lines(&r, &[eval, end_line(step)]);
        r
    };
    let runs = [run("x", 20), run("y", 10), run("w", 20), run("z", 10)];
    for order in [[0, 1, 2, 3], [3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]] {
        let given: Vec<PathBuf> = order.iter().map(|&i| runs[i].clone()).collect();
        let ranked: Vec<String> = select_runs(&given, "mrr", false)
            .unwrap()
            .runs
            .iter()
            .map(|r| r.run().file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(ranked, ["y", "z", "w", "x"], "given {order:?}");
    }
}

/// `--write-best` and `--json-out`: the chosen checkpoint's path and the ranking land in files
/// for the next step; when the best run has no best.ssck the command fails and an existing file
/// is left as it was.
#[test]
fn select_writes_the_chosen_checkpoint_and_the_ranking_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let runs = make_runs(dir.path());
    let best_file = dir.path().join("best-checkpoint");
    let json_file = dir.path().join("selection.json");
    let out = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .arg("select")
        .args(&runs)
        .args(["--metric", "hits@10", "--write-best"])
        .arg(&best_file)
        .arg("--json-out")
        .arg(&json_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("UNFINISHED") && stdout.contains("best: "),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(&best_file).unwrap(),
        format!("{}\n", runs[1].join("checkpoints/best.ssck").display())
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    assert!(json["best"]["run"].as_str().unwrap().ends_with("/a"));
    assert_eq!(
        statuses(&json),
        ["ok", "ok", "failed", "failed", "unfinished"]
    );

    // By mrr the best finished run is b, which has no best.ssck.
    let out = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .arg("select")
        .args(&runs)
        .arg("--write-best")
        .arg(&best_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("best.ssck") && stderr.contains("/b"),
        "{stderr}"
    );
    assert!(
        std::fs::read_to_string(&best_file)
            .unwrap()
            .ends_with("a/checkpoints/best.ssck\n"),
        "the earlier file was changed"
    );
}

#[test]
fn select_command_line_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let runs = make_runs(dir.path());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardsage"));
    cmd.arg("select")
        .args(&runs)
        .args(["--metric", "hits@10", "--json"]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["metric"], "hits@10");
    assert_eq!(json["best"]["status"], "ok");
    assert!(json["best"]["run"].as_str().unwrap().ends_with("/a"));
    assert_eq!(json["best"]["best_metric"], 0.95);
    assert!(json["best"]["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("checkpoints/best.ssck"));
    assert_eq!(
        statuses(&json),
        ["ok", "ok", "failed", "failed", "unfinished"]
    );

    // Only failed runs: the table is printed, and the exit status says so.
    let out = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .arg("select")
        .args([&runs[0], &runs[2]])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("FAILED")
            .count(),
        2
    );

    // No runs at all: a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .arg("select")
        .output()
        .unwrap();
    assert!(!out.status.success());
}
