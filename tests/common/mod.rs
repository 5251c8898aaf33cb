//! Helpers shared by the integration tests that drive the `shardsage` binary: running it (under
//! `timeout`, with its output in the failure message), per-test temporary directories, a small
//! generated citation graph cut into parts, the small-model flags, and reading what the binary
//! prints. Each test file takes what it needs (`mod common;`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test: `$SHARDSAGE_BIN` when set (a bundled copy on a machine without this
/// build tree), else the one cargo built.
pub fn bin() -> String {
    std::env::var("SHARDSAGE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_shardsage").to_string())
}

/// A fresh directory `<tmp>/shardsage-<suite>-<pid>-<name>`.
pub fn tmp(suite: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shardsage-{suite}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `cmd` and asserts that it succeeded, showing its stdout and stderr otherwise.
pub fn check_ok(mut cmd: Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "command failed ({:?}): {cmd:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `shardsage ARGS` under a 300 s `timeout`, with info logging.
pub fn run(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("300")
        .arg(bin())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("spawn shardsage")
}

/// `run` that must succeed.
pub fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "shardsage {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `run` that must fail; returns its stderr.
pub fn run_err(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "shardsage {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Generates a citation graph of `nodes` papers (`--feature-dim`, `--num-neg` and `--seed` as
/// given) into `dir/dataset.h5` and cuts it into `parts` parts (`--method` when given) in
/// `dir/parts`, which it returns.
pub fn generated_parts(
    dir: &Path,
    nodes: usize,
    seed: u64,
    feature_dim: usize,
    num_neg: usize,
    parts: usize,
    method: Option<&str>,
) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let ds = dir.join("dataset.h5");
    let (nodes, seed, feature_dim, num_neg, parts) = (
        nodes.to_string(),
        seed.to_string(),
        feature_dim.to_string(),
        num_neg.to_string(),
        parts.to_string(),
    );
    run_ok(&[
        "generate",
        "--nodes",
        &nodes,
        "--seed",
        &seed,
        "--feature-dim",
        &feature_dim,
        "--num-neg",
        &num_neg,
        "--dataset",
        ds.to_str().unwrap(),
    ]);
    let out = dir.join("parts");
    let mut args = vec![
        "partition",
        "--dataset",
        ds.to_str().unwrap(),
        "--parts",
        &parts,
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(m) = method {
        args.extend_from_slice(&["--method", m]);
    }
    run_ok(&args);
    out
}

/// A model small enough for many short runs in a test.
pub const SMALL_MODEL: &[&str] = &[
    "--hidden",
    "16",
    "--layers",
    "2",
    "--fanouts",
    "5,3",
    "--batch-size",
    "64",
    "--predictor-layers",
    "2",
    "--eval-batch-size",
    "64",
];

/// The JSON document `shardsage eval` prints.
pub fn eval_json(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    let start = text.find('{').expect("json in eval output");
    serde_json::from_str(&text[start..]).expect("eval json")
}

/// The parameter checksum a training run prints.
pub fn printed_checksum(stdout: &[u8]) -> String {
    let s = String::from_utf8_lossy(stdout);
    s.lines()
        .find_map(|l| l.split("parameter checksum ").nth(1))
        .unwrap_or_else(|| panic!("no checksum in:\n{s}"))
        .trim()
        .to_string()
}
