//! Helpers shared by the integration tests that drive the `shardsage` binary: running it (under
//! `timeout`, with its output in the failure message), per-test temporary directories, a small
//! generated citation graph cut into parts, the small-model flags, and reading what the binary
//! prints; and an in-memory random graph part for tests of the library itself. Each test file
//! takes what it needs (`mod common;`).

#![allow(dead_code)]

pub mod mpi;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use shardsage::graph::store::{GraphMeta, GraphPart, FORMAT_VERSION};
use shardsage::sample::rng::{hash, unit_f32};

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
        "--out",
        ds.to_str().unwrap(),
    ]);
    let out = dir.join("parts");
    let mut args = vec![
        "partition",
        "--dataset",
        ds.to_str().unwrap(),
        "--parts",
        &parts,
        "--out-dir",
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

/// Trains `SMALL_MODEL` on `parts` into `run` for `epochs` epochs of `steps` steps and returns
/// its best checkpoint.
pub fn train_small_model(parts: &Path, run: &Path, epochs: usize, steps: usize) -> PathBuf {
    let (epochs, steps) = (epochs.to_string(), steps.to_string());
    let mut args = vec![
        "train",
        "--data",
        parts.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
        "--epochs",
        &epochs,
        "--steps-per-epoch",
        &steps,
        "--threads",
        "2",
    ];
    args.extend_from_slice(SMALL_MODEL);
    run_ok(&args);
    run.join("checkpoints/best.ssck")
}

/// Owned copies of argument strings.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

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

/// A random undirected graph of `n` nodes (node 0 isolated) owned by part `part_id` of
/// `num_parts` equal parts (all parts share the same edges; only the owned rows are kept), with
/// `feature_dim` uniform features in [-1, 1) per node. Degrees vary from 0 to about
/// `2 * avg_deg`; neighbour lists are distinct and sorted.
pub fn random_part(
    n: usize,
    avg_deg: usize,
    seed: u64,
    num_parts: u32,
    part_id: u32,
    feature_dim: usize,
) -> GraphPart {
    let mut adj = vec![Vec::<u32>::new(); n];
    for u in 0..n {
        // Node 0 stays isolated; others draw about avg_deg/2 edges each side.
        if u == 0 {
            continue;
        }
        let k = (hash(seed, 0, 0, 1, u as u64, 0) % (avg_deg as u64 + 1)) as usize;
        for j in 0..k {
            let v = 1 + (hash(seed, 0, 0, 2, u as u64, j as u64) % (n as u64 - 1)) as usize;
            if v != u {
                adj[u].push(v as u32);
                adj[v].push(u as u32);
            }
        }
    }
    for a in adj.iter_mut() {
        a.sort_unstable();
        a.dedup();
    }
    let per = n as u64 / num_parts as u64;
    let mut node_offset: Vec<u64> = (0..num_parts as u64).map(|p| p * per).collect();
    node_offset.push(n as u64);
    let (first, end) = (
        node_offset[part_id as usize] as usize,
        node_offset[part_id as usize + 1] as usize,
    );
    let mut indptr = vec![0u64];
    let mut indices = Vec::new();
    for a in &adj[first..end] {
        indices.extend_from_slice(a);
        indptr.push(indices.len() as u64);
    }
    GraphPart {
        meta: GraphMeta {
            format_version: FORMAT_VERSION,
            dataset_name: "random".into(),
            fingerprint: "0".into(),
            num_parts,
            part_id,
            num_nodes: n as u64,
            num_edges: indices.len() as u64 / 2,
            feature_dim: feature_dim as u32,
            node_offset,
            directed: false,
            undirected_message_passing: true,
            split: "random".into(),
            num_classes: 0,
            partition_method: "none".into(),
        },
        indptr,
        indices,
        features: (0..((end - first) * feature_dim) as u64)
            .map(|i| {
                unit_f32(hash(
                    seed,
                    0,
                    0,
                    3,
                    first as u64 * feature_dim as u64 + i,
                    0,
                )) * 2.0
                    - 1.0
            })
            .collect(),
        orig_id: (first as u64..end as u64).collect(),
        time: None,
        label: None,
        train_edges: Vec::new(),
        valid_edges: Vec::new(),
        test_edges: Vec::new(),
        valid_neg: Vec::new(),
        test_neg: Vec::new(),
        num_neg: 0,
        train_idx: Vec::new(),
        valid_idx: Vec::new(),
        test_idx: Vec::new(),
    }
}

/// The parameters of a run's latest good checkpoint.
pub fn final_params(run: &Path) -> Vec<f32> {
    let dir = shardsage::train::checkpoint::CheckpointDir::new(run.join("checkpoints")).unwrap();
    dir.latest_good().unwrap().expect("a checkpoint").1.params
}

/// Bit-for-bit equality of two parameter vectors.
pub fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Builds `tests/kernel_emulation/check_kernels.cpp` (the kernels on a host emulation of CUDA
/// threads, warps and blocks); None (with a printed skip) where it cannot run.
pub fn kernel_emulation(test: &str) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIPPED {test}: the emulation's fiber switch is written for x86-64");
        return None;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let exe = dir.path().join("check_kernels");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let compiled = std::process::Command::new(&cxx)
        .args(["-std=c++20", "-O1", "-Wall", "-Wextra"])
        .args(["-Wno-unused-parameter", "-Wno-unknown-pragmas", "-I"])
        .arg(root.join("kernels"))
        .arg("-I")
        .arg(root.join("tests/kernel_emulation"))
        .arg(root.join("tests/kernel_emulation/check_kernels.cpp"))
        .arg("-o")
        .arg(&exe)
        .output();
    let compiled = match compiled {
        Ok(out) => out,
        Err(e) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !in_ci,
                "{test}: no C++ compiler ({cxx}: {e}); run scripts/setup.sh"
            );
            eprintln!("SKIPPED {test}: no C++ compiler ({cxx}: {e})");
            return None;
        }
    };
    assert!(
        compiled.status.success(),
        "{test}: the emulation does not compile:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    Some((dir, exe))
}

/// Runs one kernel of the emulation built by [`kernel_emulation`] (`check_kernels MODE IN OUT`)
/// on `input`, in `dir`; returns what it wrote, after checking that it succeeded.
pub fn run_emulated_kernel(exe: &Path, dir: &Path, mode: &str, input: &[u8]) -> Vec<u8> {
    let (in_path, out_path) = (
        dir.join(format!("{mode}.in")),
        dir.join(format!("{mode}.out")),
    );
    std::fs::write(&in_path, input).unwrap();
    let run = Command::new(exe)
        .arg(mode)
        .arg(&in_path)
        .arg(&out_path)
        .output()
        .unwrap_or_else(|e| panic!("run check_kernels {mode}: {e}"));
    assert!(
        run.status.success(),
        "check_kernels {mode}: {}",
        String::from_utf8_lossy(&run.stdout)
    );
    std::fs::read(&out_path).unwrap()
}
