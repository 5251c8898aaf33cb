//! Partitioning a generated dataset and loading it back: the union of the parts is exactly the
//! dataset, every method balances training edges, LDG cuts fewer edges than hashing, outputs are
//! deterministic, the rank loader merges and refuses mismatched parts, and bad inputs fail cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use shardsage::graph::build::{build_dataset, BuildOptions};
use shardsage::graph::generate::{generate, GenerateOptions};
use shardsage::graph::loader::{load_rank_parts, read_manifest, verify_checksums};
use shardsage::graph::manifest::{part_file_name, Manifest};
use shardsage::graph::partition::{partition_dataset, Method, PartitionOptions, RangeOrder};
use shardsage::graph::store::{owner_of, GraphPart};

/// Serialises the tests of this file. HDF5 opens files without close-on-exec and holds an
/// `flock` on them, so a child process spawned by one test (the CLI runs) can inherit an
/// open file of another test and make its next open fail with "unable to lock file".
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A generated graph of `nodes` papers written as a dataset file in `dir`.
fn dataset(dir: &Path, nodes: usize, seed: u64) -> PathBuf {
    let raw = generate(&GenerateOptions {
        nodes,
        seed,
        ..GenerateOptions::default()
    })
    .expect("generate");
    let opts = BuildOptions {
        seed,
        num_neg: 20,
        ..BuildOptions::default()
    };
    let (part, _) = build_dataset(raw, &opts).expect("build_dataset");
    let path = dir.join(format!("dataset-{nodes}-{seed}.h5"));
    part.write(&path).expect("write dataset");
    path
}

fn opts(parts: usize, method: Method, by: RangeOrder) -> PartitionOptions {
    PartitionOptions {
        parts,
        method,
        by,
        seed: 5,
    }
}

const METHODS: [(Method, RangeOrder); 4] = [
    (Method::Random, RangeOrder::Input),
    (Method::Range, RangeOrder::Input),
    (Method::Range, RangeOrder::Time),
    (Method::Ldg, RangeOrder::Input),
];

fn read_parts(dir: &Path, m: &Manifest) -> Vec<GraphPart> {
    (0..m.num_parts as usize)
        .map(|p| GraphPart::read(&dir.join(part_file_name(p))).expect("read part"))
        .collect()
}

/// A node's feature bits, time, label and sorted neighbours, all in original ids.
type NodeRow = (Vec<u32>, Option<i64>, Option<i64>, Vec<u64>);

/// Everything of a graph keyed by original ids, comparable across relabellings.
#[derive(Debug, PartialEq)]
struct ByOrigId {
    train: BTreeSet<(u64, u64)>,
    heldout: [BTreeSet<(u64, u64, Vec<u64>)>; 2],
    rows: BTreeMap<u64, NodeRow>,
    node_splits: [BTreeSet<u64>; 3],
    edge_count: usize,
}

fn by_orig_id(parts: &[GraphPart]) -> ByOrigId {
    let n = parts[0].meta.num_nodes as usize;
    let mut orig = vec![u64::MAX; n];
    for g in parts {
        for (i, &o) in g.orig_id.iter().enumerate() {
            orig[g.first_node() as usize + i] = o;
        }
    }
    assert!(
        orig.iter().all(|&o| o != u64::MAX),
        "a node is owned by no part"
    );
    let o = |v: u64| orig[v as usize];
    let mut out = ByOrigId {
        train: BTreeSet::new(),
        heldout: [BTreeSet::new(), BTreeSet::new()],
        rows: BTreeMap::new(),
        node_splits: [BTreeSet::new(), BTreeSet::new(), BTreeSet::new()],
        edge_count: 0,
    };
    for g in parts {
        out.edge_count += g.train_edges.len() + g.valid_edges.len() + g.test_edges.len();
        out.train
            .extend(g.train_edges.iter().map(|e| (o(e[0]), o(e[1]))));
        for (k, (edges, negs)) in [(&g.valid_edges, &g.valid_neg), (&g.test_edges, &g.test_neg)]
            .into_iter()
            .enumerate()
        {
            for (i, e) in edges.iter().enumerate() {
                let neg: Vec<u64> = negs[i * g.num_neg..(i + 1) * g.num_neg]
                    .iter()
                    .map(|&v| o(v))
                    .collect();
                out.heldout[k].insert((o(e[0]), o(e[1]), neg));
            }
        }
        let f = g.meta.feature_dim as usize;
        for i in 0..g.num_local_nodes() {
            let v = g.first_node() + i as u64;
            let mut nbrs: Vec<u64> = g.neighbors(v).iter().map(|&u| o(u as u64)).collect();
            nbrs.sort_unstable();
            let feat: Vec<u32> = g.features[i * f..(i + 1) * f]
                .iter()
                .map(|x| x.to_bits())
                .collect();
            let time = g.time.as_ref().map(|t| t[i]);
            let label = g.label.as_ref().map(|l| l[i]);
            out.rows.insert(o(v), (feat, time, label, nbrs));
        }
        for (k, idx) in [&g.train_idx, &g.valid_idx, &g.test_idx]
            .into_iter()
            .enumerate()
        {
            out.node_splits[k].extend(idx.iter().map(|&v| o(v)));
        }
    }
    out
}

#[test]
fn parts_reassemble_to_the_dataset_for_every_method_and_part_count() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 3000, 7);
    let d = GraphPart::read(&data).unwrap();
    assert!(!d.valid_edges.is_empty() && !d.train_idx.is_empty());
    let expected = by_orig_id(std::slice::from_ref(&d));
    for (method, by) in METHODS {
        for p in 1..=4 {
            let o = opts(p, method, by);
            let out = tmp.path().join(format!("{}-{p}", o.method_name()));
            let m = partition_dataset(&data, &out, &o, vec!["test".into()]).unwrap();
            let parts = read_parts(&out, &m);
            let ctx = format!("{} P={p}", o.method_name());
            assert_eq!(m.node_offset.len(), p + 1, "{ctx}");
            assert_eq!(m.node_offset[0], 0);
            assert_eq!(*m.node_offset.last().unwrap(), d.meta.num_nodes);
            for (i, g) in parts.iter().enumerate() {
                assert_eq!(g.meta.part_id as usize, i, "{ctx}");
                assert_eq!(g.meta.num_parts as usize, p, "{ctx}");
                assert_eq!(g.meta.node_offset, m.node_offset, "{ctx}");
                assert_eq!(g.meta.fingerprint, d.meta.fingerprint, "{ctx}");
                assert_eq!(g.meta.partition_method, o.method_name(), "{ctx}");
                assert!(g.num_local_nodes() > 0, "{ctx}: part {i} is empty");
                for e in g
                    .train_edges
                    .iter()
                    .chain(&g.valid_edges)
                    .chain(&g.test_edges)
                {
                    assert_eq!(
                        owner_of(&m.node_offset, e[0]),
                        i,
                        "{ctx}: edge stored away from its source"
                    );
                }
                for w in g.indptr.windows(2) {
                    let row = &g.indices[w[0] as usize..w[1] as usize];
                    assert!(
                        row.windows(2).all(|x| x[0] <= x[1]),
                        "{ctx}: unsorted CSR row"
                    );
                }
            }
            let got = by_orig_id(&parts);
            assert_eq!(
                got.edge_count, expected.edge_count,
                "{ctx}: edges not stored exactly once"
            );
            assert!(got == expected, "{ctx}: parts differ from the dataset");
            let train: Vec<usize> = parts.iter().map(|g| g.train_edges.len()).collect();
            let mean = train.iter().sum::<usize>() as f64 / p as f64;
            for &t in &train {
                assert!(
                    (t as f64 - mean).abs() <= 0.05 * mean,
                    "{ctx}: training edges per part {train:?} not within 5% of the mean"
                );
            }
            assert!(m.balance.train_edges <= 1.05);
        }
    }
}

#[test]
fn ldg_cuts_far_fewer_edges_than_random() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 6000, 2);
    let cut = |method| {
        let o = opts(4, method, RangeOrder::Input);
        partition_dataset(&data, &tmp.path().join(o.method_name()), &o, vec![])
            .unwrap()
            .edge_cut
    };
    let (random, ldg) = (cut(Method::Random), cut(Method::Ldg));
    assert!(
        random > 0.6,
        "random cut {random} (expected about 3/4 for 4 parts)"
    );
    assert!(
        ldg < 0.5 * random,
        "ldg edge cut {ldg:.3} is not clearly below random {random:.3}"
    );
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn datasets_and_parts_are_byte_identical_across_runs_and_thread_counts() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_shardsage");
    for (threads, name) in [("1", "a.h5"), ("2", "b.h5")] {
        let status = Command::new(exe)
            .args([
                "generate",
                "--nodes",
                "2000",
                "--seed",
                "4",
                "--num-neg",
                "10",
                "--out",
            ])
            .arg(tmp.path().join(name))
            .env("RAYON_NUM_THREADS", threads)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let (a, b) = (tmp.path().join("a.h5"), tmp.path().join("b.h5"));
    assert!(
        bytes(&a) == bytes(&b),
        "generate --out differs between 1 and 2 threads"
    );
    for method in ["ldg", "random"] {
        let mut dirs = Vec::new();
        for (threads, tag) in [("1", "x"), ("2", "y")] {
            let out = tmp.path().join(format!("{method}-{tag}"));
            let status = Command::new(exe)
                .args(["partition", "--parts", "3", "--method", method, "--dataset"])
                .arg(&a)
                .arg("--out-dir")
                .arg(&out)
                .env("RAYON_NUM_THREADS", threads)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
            dirs.push(out);
        }
        for p in 0..3 {
            let name = part_file_name(p);
            assert!(
                bytes(&dirs[0].join(&name)) == bytes(&dirs[1].join(&name)),
                "{method}: {name} differs between runs"
            );
        }
        let (m0, m1) = (
            read_manifest(&dirs[0]).unwrap(),
            read_manifest(&dirs[1]).unwrap(),
        );
        assert_eq!(m0.files, m1.files);
    }
}

#[test]
fn loader_merges_parts_per_rank_and_refuses_mismatches() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 3000, 9);
    let dir = tmp.path().join("parts");
    let o = opts(4, Method::Ldg, RangeOrder::Input);
    let m = partition_dataset(&data, &dir, &o, vec![]).unwrap();
    let parts = read_parts(&dir, &m);

    let whole = load_rank_parts(&dir, 0, 1).unwrap();
    assert_eq!(whole.meta.num_parts, 1);
    assert_eq!(whole.meta.node_offset, vec![0, m.num_nodes]);
    assert!(by_orig_id(std::slice::from_ref(&whole)) == by_orig_id(&parts));
    assert_eq!(
        whole.features,
        parts
            .iter()
            .flat_map(|g| g.features.clone())
            .collect::<Vec<_>>()
    );

    let ranks: Vec<GraphPart> = (0..2)
        .map(|r| load_rank_parts(&dir, r, 2).unwrap())
        .collect();
    for (r, g) in ranks.iter().enumerate() {
        assert_eq!(g.meta.num_parts, 2);
        assert_eq!(g.meta.part_id as usize, r);
        assert_eq!(
            g.meta.node_offset,
            vec![0, m.node_offset[2], m.num_nodes],
            "rank offsets"
        );
        let mine = &parts[2 * r..2 * r + 2];
        assert_eq!(
            g.train_edges,
            [mine[0].train_edges.clone(), mine[1].train_edges.clone()].concat()
        );
        assert_eq!(
            g.test_neg,
            [mine[0].test_neg.clone(), mine[1].test_neg.clone()].concat()
        );
        assert_eq!(
            g.orig_id,
            [mine[0].orig_id.clone(), mine[1].orig_id.clone()].concat()
        );
        assert_eq!(
            g.indices,
            [mine[0].indices.clone(), mine[1].indices.clone()].concat()
        );
        for e in &g.train_edges {
            assert_eq!(owner_of(&g.meta.node_offset, e[0]), r);
        }
    }
    assert!(by_orig_id(&ranks) == by_orig_id(&parts));

    let err = load_rank_parts(&dir, 0, 3).unwrap_err().to_string();
    assert!(
        err.contains("4 parts cannot be split evenly over 3 ranks; use a W that divides 4"),
        "{err}"
    );

    assert!(verify_checksums(&dir).unwrap().iter().all(|(_, ok)| *ok));

    // A part from another dataset.
    let other_data = dataset(tmp.path(), 3000, 10);
    let other = tmp.path().join("other");
    partition_dataset(&other_data, &other, &o, vec![]).unwrap();
    let victim = dir.join(part_file_name(1));
    let saved = bytes(&victim);
    std::fs::copy(other.join(part_file_name(1)), &victim).unwrap();
    let err = load_rank_parts(&dir, 0, 2).unwrap_err().to_string();
    assert!(
        err.contains("part-00001.h5") && err.contains("another dataset"),
        "{err}"
    );
    let sums = verify_checksums(&dir).unwrap();
    assert!(sums.iter().any(|(n, ok)| n == "part-00001.h5" && !ok));
    std::fs::write(&victim, &saved).unwrap();

    // A part of another format version.
    {
        let f = hdf5::File::open_rw(&victim).unwrap();
        f.delete_attr("format_version").unwrap();
        f.new_attr::<u32>()
            .create("format_version")
            .unwrap()
            .write_scalar(&99u32)
            .unwrap();
    }
    let err = load_rank_parts(&dir, 0, 2).unwrap_err().to_string();
    assert!(
        err.contains("part-00001.h5") && err.contains("format_version"),
        "{err}"
    );
    std::fs::write(&victim, &saved).unwrap();
    assert!(load_rank_parts(&dir, 0, 2).is_ok());

    // A missing part.
    std::fs::remove_file(dir.join(part_file_name(2))).unwrap();
    let err = load_rank_parts(&dir, 1, 2).unwrap_err().to_string();
    assert!(
        err.contains("part-00002.h5") && err.contains("missing"),
        "{err}"
    );
    assert!(
        load_rank_parts(&dir, 0, 2).is_ok(),
        "rank 0 does not need part 2"
    );
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn bad_inputs_fail_clearly_and_leave_no_output() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 300, 1);
    let o = opts(2, Method::Ldg, RangeOrder::Input);

    let out = tmp.path().join("too-many");
    let err = partition_dataset(
        &data,
        &out,
        &opts(301, Method::Random, RangeOrder::Input),
        vec![],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("301 parts") && err.contains("300 nodes"),
        "{err}"
    );
    assert!(!out.exists());
    let err = partition_dataset(
        &data,
        &out,
        &opts(0, Method::Ldg, RangeOrder::Input),
        vec![],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("parts"), "{err}");
    assert!(!out.exists());

    let noise = tmp.path().join("noise.h5");
    std::fs::write(
        &noise,
        (0..4096u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let err = partition_dataset(&noise, &out, &o, vec![])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("noise.h5") && err.contains("not an HDF5 file"),
        "{err}"
    );
    assert!(!out.exists());

    let foreign = tmp.path().join("foreign.h5");
    hdf5::File::create(&foreign)
        .unwrap()
        .create_group("x")
        .unwrap();
    let err = partition_dataset(&foreign, &out, &o, vec![])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("foreign.h5") && err.contains("not a shardsage graph file"),
        "{err}"
    );
    assert!(!out.exists());

    let truncated = tmp.path().join("truncated.h5");
    let full = bytes(&data);
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let err = partition_dataset(&truncated, &out, &o, vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("truncated.h5"), "{err}");
    assert!(!out.exists());

    let blocker = tmp.path().join("a-file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = partition_dataset(&data, &blocker.join("parts"), &o, vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("a-file"), "{err}");
    let err = partition_dataset(&data, &blocker, &o, vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a directory"), "{err}");

    // A part file is not a dataset.
    let parts = tmp.path().join("parts");
    partition_dataset(
        &data,
        &parts,
        &opts(4, Method::Random, RangeOrder::Input),
        vec![],
    )
    .unwrap();
    let err = partition_dataset(&parts.join(part_file_name(1)), &out, &o, vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("part 1 of 4"), "{err}");
    assert!(!out.exists());

    // Replacing a larger part set removes its stale parts and leaves no staging files.
    partition_dataset(&data, &parts, &o, vec![]).unwrap();
    assert_eq!(
        entries(&parts),
        ["manifest.json", "part-00000.h5", "part-00001.h5"]
    );
    assert_eq!(read_manifest(&parts).unwrap().num_parts, 2);

    // The command line reports errors with a non-zero exit.
    let output = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .args(["partition", "--parts", "2", "--dataset"])
        .arg(&noise)
        .arg("--out-dir")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("noise.h5"));
    assert!(!out.exists());
}

#[test]
fn inspect_summarises_datasets_and_part_directories() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path(), 1000, 3);
    let dir = tmp.path().join("parts");
    partition_dataset(
        &data,
        &dir,
        &opts(2, Method::Ldg, RangeOrder::Input),
        vec![],
    )
    .unwrap();
    let run = |p: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_shardsage"))
            .arg("inspect")
            .arg(p)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, text, _) = run(&data);
    assert!(ok);
    let d = GraphPart::read(&data).unwrap();
    assert!(text.contains(&d.meta.fingerprint), "{text}");
    assert!(text.contains("features     [1000, 128]"), "{text}");
    assert!(text.contains("median") && text.contains("p99"), "{text}");
    assert!(text.contains("W = 8"), "{text}");
    let (ok, text, _) = run(&dir);
    assert!(ok);
    assert!(text.contains("checksums: all 2 files match"), "{text}");
    assert!(
        text.contains("W = 4") && text.contains("repartition"),
        "{text}"
    );
    let (ok, text, _) = run(&dir.join(part_file_name(1)));
    assert!(ok && text.contains("part 1 of 2"), "{text}");
    let noise = tmp.path().join("model.ckpt");
    std::fs::write(&noise, b"not a graph").unwrap();
    let (ok, _, err) = run(&noise);
    assert!(!ok && err.contains("not a graph file"), "{err}");
}
