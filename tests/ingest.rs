//! `shardsage ingest` on real files: the small real graphs in `../shared/data` (Cora, cit-HepTh),
//! edge-list variants, an OGB raw directory, temporal and given splits, read back through
//! `GraphPart::read` and checked against the invariants the trainer relies on.

use std::collections::{BTreeSet, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use shardsage::graph::ingest::{self, IngestArgs};
use shardsage::graph::npy;
use shardsage::graph::store::GraphPart;

/// `../shared/data` next to the crate, or `$SHARDSAGE_SHARED_DATA` (for checkouts elsewhere).
fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("SHARDSAGE_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")));
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: {} is absent", dir.display());
        None
    }
}

/// Runs `shardsage ingest` (the library entry point the binary calls) and reads the file back.
fn ingest_to(out: &Path, flags: &[&str]) -> GraphPart {
    let mut all: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    all.push("--out".into());
    all.push(out.display().to_string());
    let args = IngestArgs::from_flags(&all).unwrap();
    ingest::run(&args).unwrap();
    GraphPart::read(out).unwrap()
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn gz(path: &Path, text: &str) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap();
}

/// The invariants every ingested dataset must hold.
fn check_invariants(part: &GraphPart) {
    let n = part.meta.num_nodes;
    // The CSR holds exactly the training edges (both directions when undirected), rows ascending
    // and distinct.
    let mut expected: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); n as usize];
    for e in &part.train_edges {
        expected[e[0] as usize].insert(e[1]);
        if part.meta.undirected_message_passing {
            expected[e[1] as usize].insert(e[0]);
        }
    }
    for u in 0..n {
        let row: Vec<u64> = part.neighbors(u).iter().map(|&v| v as u64).collect();
        assert!(
            row.windows(2).all(|w| w[0] < w[1]),
            "row {u} not ascending/distinct"
        );
        let want: Vec<u64> = expected[u as usize].iter().copied().collect();
        assert_eq!(row, want, "CSR row {u} differs from the training edges");
    }
    // No held-out edge (in either direction under undirected message passing) in the CSR.
    for e in part.valid_edges.iter().chain(&part.test_edges) {
        assert!(
            !part.neighbors(e[0]).contains(&(e[1] as u32)),
            "held-out {e:?} in CSR"
        );
        if part.meta.undirected_message_passing {
            assert!(
                !part.neighbors(e[1]).contains(&(e[0] as u32)),
                "held-out reverse {e:?} in CSR"
            );
        }
    }
    // Held-out edges are not training edges.
    let train: HashSet<[u64; 2]> = part.train_edges.iter().copied().collect();
    for e in part.valid_edges.iter().chain(&part.test_edges) {
        assert!(!train.contains(e), "held-out {e:?} is also a training edge");
    }
    // Negatives exclude the source and the positive target.
    let k = part.num_neg;
    for (edges, negs) in [
        (&part.valid_edges, &part.valid_neg),
        (&part.test_edges, &part.test_neg),
    ] {
        assert_eq!(negs.len(), edges.len() * k);
        for (e, row) in edges.iter().zip(negs.chunks(k.max(1))) {
            for &v in row {
                assert!(v < n && v != e[0] && v != e[1], "negative {v} for {e:?}");
            }
        }
    }
}

#[test]
fn cora_with_features_labels_and_the_planetoid_split() {
    let Some(data) = shared_data() else { return };
    let cora = data.join("cora");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cora.h5");
    let part = ingest_to(
        &out,
        &[
            "--edges",
            &p(&cora.join("edges.tsv")),
            "--features",
            &p(&cora.join("features.npy")),
            "--labels",
            &p(&cora.join("labels.npy")),
            "--train-idx",
            &p(&cora.join("train_idx.npy")),
            "--valid-idx",
            &p(&cora.join("val_idx.npy")),
            "--test-idx",
            &p(&cora.join("test_idx.npy")),
            "--undirected",
            "--num-neg",
            "50",
        ],
    );
    let m = &part.meta;
    assert_eq!(
        (m.num_nodes, m.num_edges, m.num_classes, m.feature_dim),
        (2708, 5278, 7, 1433)
    );
    assert_eq!(m.dataset_name, "cora");
    assert_eq!(m.split, "random");
    assert_eq!(
        (
            part.train_idx.len(),
            part.valid_idx.len(),
            part.test_idx.len()
        ),
        (140, 500, 1000)
    );
    let given = |f: &str| {
        npy::read_npy(&cora.join(f))
            .unwrap()
            .into_ids(&cora.join(f))
            .unwrap()
    };
    assert_eq!(part.train_idx, given("train_idx.npy"));
    assert_eq!(part.test_idx, given("test_idx.npy"));
    let features = npy::read_npy(&cora.join("features.npy")).unwrap();
    assert_eq!(
        part.features,
        features.into_f32(&cora.join("features.npy")).unwrap()
    );
    assert_eq!(part.orig_id, (0..2708).collect::<Vec<u64>>());
    assert_eq!(
        part.train_edges.len() + part.valid_edges.len() + part.test_edges.len(),
        5278
    );
    assert!(!part.valid_edges.is_empty() && !part.test_edges.is_empty());
    assert_eq!(part.num_neg, 50);
    check_invariants(&part);
}

#[test]
fn cit_hepth_without_features_gets_synthetic_ones() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hep.h5");
    let edges = data.join("cit-HepTh/edges.tsv.gz");
    let args = IngestArgs::from_flags([
        "--edges",
        &p(&edges),
        "--synthetic-features",
        "degree",
        "--feature-dim",
        "16",
        "--num-neg",
        "20",
        "--out",
        &p(&out),
    ])
    .unwrap();
    let (raw, stats) = ingest::read_input(&args).unwrap();
    assert_eq!(stats.edge_lines, 352_807);
    assert_eq!(raw.orig_id.len(), 27_770);
    ingest::run(&args).unwrap();
    let part = GraphPart::read(&out).unwrap();
    let m = &part.meta;
    // 352,807 lines hold 39 self-loops (a paper citing itself), which are dropped.
    assert_eq!(
        (m.num_nodes, m.num_edges, m.feature_dim),
        (27_770, 352_807 - 39, 16)
    );
    assert_eq!(m.dataset_name, "cit-HepTh");
    assert!(m.directed && m.undirected_message_passing);
    assert_eq!(part.num_neg, 20);
    let held = part.valid_edges.len() + part.test_edges.len();
    assert!(held > 20_000 && held < 60_000, "{held} held out");
    check_invariants(&part);
}

/// A small citation graph with years: sources of the latest year have 0..4 references.
fn write_temporal_graph(dir: &Path) -> (PathBuf, PathBuf, Vec<i64>, Vec<[u64; 2]>) {
    let n = 40u64;
    let time: Vec<i64> = (0..n)
        .map(|i| if i >= 30 { 2020 } else { 2000 + (i % 5) as i64 })
        .collect();
    let mut edges = Vec::new();
    for s in 0..n {
        let refs = if s >= 30 { s % 5 } else { 3 };
        for k in 0..refs {
            edges.push([s, (s * 7 + k * 3 + 1) % 30]);
        }
    }
    // A reverse pair: node 5 also cites latest-year node 31.
    edges.push([5, 31]);
    let edge_file = dir.join("cites.tsv");
    let text: String = edges
        .iter()
        .map(|e| format!("{}\t{}\n", e[0], e[1]))
        .collect();
    std::fs::write(&edge_file, text).unwrap();
    let times = dir.join("year.npy");
    npy::write_npy(&times, &[n as usize], &time).unwrap();
    (edge_file, times, time, edges)
}

#[test]
fn temporal_split_holds_out_one_valid_and_one_test_edge_per_latest_source() {
    let dir = tempfile::tempdir().unwrap();
    let (edge_file, times, time, edges) = write_temporal_graph(dir.path());
    let out = dir.path().join("t.h5");
    let part = ingest_to(
        &out,
        &[
            "--edges",
            &p(&edge_file),
            "--times",
            &p(&times),
            "--feature-dim",
            "4",
            "--num-neg",
            "7",
        ],
    );
    assert_eq!(part.meta.split, "temporal");
    assert_eq!(part.time.as_deref(), Some(&time[..]));
    let out_deg = |s: u64| edges.iter().filter(|e| e[0] == s).count();
    let mut eligible = 0;
    for s in 0..40u64 {
        let v = part.valid_edges.iter().filter(|e| e[0] == s).count();
        let t = part.test_edges.iter().filter(|e| e[0] == s).count();
        let expect = usize::from(time[s as usize] == 2020 && out_deg(s) >= 2);
        eligible += expect;
        assert_eq!((v, t), (expect, expect), "source {s}");
    }
    assert_eq!(part.valid_edges.len(), eligible);
    assert!(eligible >= 4);
    assert_eq!(part.num_neg, 7);
    check_invariants(&part);
}

#[test]
fn given_split_is_used_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let edges: Vec<[u64; 2]> = (0..30u64)
        .flat_map(|s| (1..4).map(move |k| [s, (s + k) % 30]))
        .collect();
    let text: String = edges
        .iter()
        .map(|e| format!("{} {}\n", e[0], e[1]))
        .collect();
    std::fs::write(dir.path().join("g.txt"), text).unwrap();
    // Valid edges as text (one present in the input, one not); test edges and negatives as .npy.
    std::fs::write(dir.path().join("valid.tsv"), "0\t1\n4\t20\n").unwrap();
    std::fs::write(dir.path().join("valid_neg.tsv"), "5\t6\t7\n8\t9\t10\n").unwrap();
    npy::write_npy(&dir.path().join("test.npy"), &[1, 2], &[2i64, 3]).unwrap();
    npy::write_npy(&dir.path().join("test_neg.npy"), &[1, 3], &[11u32, 12, 13]).unwrap();
    let d = |f: &str| p(&dir.path().join(f));
    let part = ingest_to(
        &dir.path().join("g.h5"),
        &[
            "--edges",
            &d("g.txt"),
            "--valid-edges",
            &d("valid.tsv"),
            "--test-edges",
            &d("test.npy"),
            "--valid-neg",
            &d("valid_neg.tsv"),
            "--test-neg",
            &d("test_neg.npy"),
            "--feature-dim",
            "3",
        ],
    );
    assert_eq!(part.meta.split, "given");
    assert_eq!(part.valid_edges, vec![[0, 1], [4, 20]]);
    assert_eq!(part.test_edges, vec![[2, 3]]);
    assert_eq!(part.valid_neg, vec![5, 6, 7, 8, 9, 10]);
    assert_eq!(part.test_neg, vec![11, 12, 13]);
    assert_eq!(part.num_neg, 3);
    assert!(!part.train_edges.contains(&[0, 1]) && !part.train_edges.contains(&[2, 3]));
    assert_eq!(part.train_edges.len(), edges.len() - 2);
    check_invariants(&part);

    // Raw ids are relabelled; a node that appears only in a held-out edge or as a negative
    // (every edge of it held out) is still a node.
    std::fs::write(dir.path().join("valid.tsv"), "0\t1\n4\t77\n").unwrap();
    std::fs::write(dir.path().join("valid_neg.tsv"), "5\t6\t7\n8\t9\t88\n").unwrap();
    let part = ingest_to(
        &dir.path().join("g2.h5"),
        &[
            "--edges",
            &d("g.txt"),
            "--valid-edges",
            &d("valid.tsv"),
            "--test-edges",
            &d("test.npy"),
            "--valid-neg",
            &d("valid_neg.tsv"),
            "--test-neg",
            &d("test_neg.npy"),
            "--feature-dim",
            "3",
        ],
    );
    assert_eq!(part.meta.num_nodes, 32);
    assert_eq!(&part.orig_id[29..], &[29, 77, 88]);
    assert_eq!(part.valid_edges, vec![[0, 1], [4, 30]]);
    assert_eq!(&part.valid_neg[3..], &[8, 9, 31]);
    check_invariants(&part);
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (edge_file, times, _, _) = write_temporal_graph(dir.path());
    let flags = |seed: &str| {
        vec![
            "--edges".to_string(),
            p(&edge_file),
            "--seed".into(),
            seed.into(),
            "--feature-dim".into(),
            "8".into(),
        ]
    };
    let run = |name: &str, seed: &str| {
        let out = dir.path().join(name);
        let f = flags(seed);
        let part = ingest_to(&out, &f.iter().map(String::as_str).collect::<Vec<_>>());
        (std::fs::read(&out).unwrap(), part)
    };
    let (a, pa) = run("a.h5", "3");
    let (b, pb) = run("b.h5", "3");
    let (c, pc) = run("c.h5", "4");
    assert_eq!(a, b, "same input and seed must give byte-identical files");
    assert_eq!(pa.meta.fingerprint, pb.meta.fingerprint);
    assert_ne!(a, c);
    assert_ne!(pa.meta.fingerprint, pc.meta.fingerprint);
    assert_ne!(
        (&pa.valid_edges, &pa.features),
        (&pc.valid_edges, &pc.features)
    );
    let _ = times;
}

#[test]
fn edge_list_variants_give_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    // Sparse raw ids: relabelled by sorted unique id.
    let raw_ids = [1000u64, 7, 42, 99_999_999_999, 5, 300];
    let mut pairs = Vec::new();
    for (i, &a) in raw_ids.iter().enumerate() {
        for (j, &b) in raw_ids.iter().enumerate() {
            if (i + 2 * j) % 3 == 0 && i != j {
                pairs.push((a, b));
            }
        }
    }
    pairs.push((7, 7)); // self-loop
    pairs.push(pairs[0]); // duplicate
    let tsv: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let csv: String = "source,target\n".to_string()
        + &pairs
            .iter()
            .map(|(a, b)| format!("{a},{b}\r\n"))
            .collect::<String>();
    let ws: String = "# SNAP style comment\n% another\n\n".to_string()
        + &pairs
            .iter()
            .map(|(a, b)| format!("  {a}   {b} \n"))
            .collect::<String>();
    std::fs::write(dir.path().join("g.tsv"), &tsv).unwrap();
    std::fs::write(dir.path().join("g.csv"), &csv).unwrap();
    std::fs::write(dir.path().join("g.txt"), &ws).unwrap();
    gz(&dir.path().join("g.tsv.gz"), &tsv);
    // Concatenated gzip members (as `cat a.gz b.gz` or bgzip write them) read as one stream.
    let half = tsv.len() / 2;
    let cut = half + tsv[half..].find('\n').unwrap() + 1;
    gz(&dir.path().join("a.gz"), &tsv[..cut]);
    gz(&dir.path().join("b.gz"), &tsv[cut..]);
    let mut members = std::fs::read(dir.path().join("a.gz")).unwrap();
    members.extend(std::fs::read(dir.path().join("b.gz")).unwrap());
    std::fs::write(dir.path().join("multi.tsv.gz"), members).unwrap();
    let mut parts = Vec::new();
    for f in ["g.tsv", "g.csv", "g.txt", "g.tsv.gz", "multi.tsv.gz"] {
        let part = ingest_to(
            &dir.path().join(format!("{f}.h5")),
            &[
                "--edges",
                &p(&dir.path().join(f)),
                "--name",
                "variants",
                "--feature-dim",
                "2",
                "--num-neg",
                "2",
            ],
        );
        parts.push(part);
    }
    let mut sorted = raw_ids.to_vec();
    sorted.sort_unstable();
    assert_eq!(parts[0].orig_id, sorted);
    let distinct: BTreeSet<(u64, u64)> = pairs.iter().copied().filter(|(a, b)| a != b).collect();
    assert_eq!(parts[0].meta.num_edges, distinct.len() as u64);
    for part in &parts[1..] {
        assert_eq!(part, &parts[0]);
    }
    // Every stored edge maps back to an input pair through orig_id.
    let o = &parts[0].orig_id;
    for e in parts[0]
        .train_edges
        .iter()
        .chain(&parts[0].valid_edges)
        .chain(&parts[0].test_edges)
    {
        assert!(distinct.contains(&(o[e[0] as usize], o[e[1] as usize])));
    }
    check_invariants(&parts[0]);
    // An explicit delimiter and header flag read the same CSV.
    let explicit = ingest_to(
        &dir.path().join("explicit.h5"),
        &[
            "--edges",
            &p(&dir.path().join("g.csv")),
            "--delimiter",
            "comma",
            "--header",
            "--name",
            "variants",
            "--feature-dim",
            "2",
            "--num-neg",
            "2",
        ],
    );
    assert_eq!(explicit, parts[0]);
}

#[test]
fn node_arrays_make_ids_row_indices_and_keep_isolated_nodes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("e.tsv"), "0\t1\n1\t2\n2\t0\n0\t3\n3\t1\n").unwrap();
    let feats: Vec<f64> = (0..12).map(|i| i as f64 * 0.5).collect();
    npy::write_npy(&dir.path().join("x.npy"), &[6, 2], &feats).unwrap();
    npy::write_npy(&dir.path().join("y.npy"), &[6], &[0i32, 1, 0, 1, 2, 2]).unwrap();
    let part = ingest_to(
        &dir.path().join("o.h5"),
        &[
            "--edges",
            &p(&dir.path().join("e.tsv")),
            "--features",
            &p(&dir.path().join("x.npy")),
            "--labels",
            &p(&dir.path().join("y.npy")),
            "--directed-message-passing",
            "--node-split",
            "0.5,0.25,0.25",
        ],
    );
    assert_eq!(part.meta.num_nodes, 6);
    assert_eq!(part.orig_id, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(
        part.features,
        feats.iter().map(|&v| v as f32).collect::<Vec<_>>()
    );
    assert_eq!(part.meta.num_classes, 3);
    assert!(!part.meta.undirected_message_passing);
    assert!(part.neighbors(4).is_empty() && part.neighbors(5).is_empty());
    let mut all: Vec<u64> = part
        .train_idx
        .iter()
        .chain(&part.valid_idx)
        .chain(&part.test_idx)
        .copied()
        .collect();
    // Boolean masks select rows of the node arrays.
    let d = |f: &str| p(&dir.path().join(f));
    npy::write_npy(
        &dir.path().join("m0.npy"),
        &[6],
        &[true, true, false, false, false, true],
    )
    .unwrap();
    npy::write_npy(
        &dir.path().join("m1.npy"),
        &[6],
        &[false, false, true, false, false, false],
    )
    .unwrap();
    npy::write_npy(&dir.path().join("m2.npy"), &[2], &[3i64, 4]).unwrap();
    let masked = ingest_to(
        &dir.path().join("m.h5"),
        &[
            "--edges",
            &d("e.tsv"),
            "--labels",
            &d("y.npy"),
            "--train-idx",
            &d("m0.npy"),
            "--valid-idx",
            &d("m1.npy"),
            "--test-idx",
            &d("m2.npy"),
            "--feature-dim",
            "2",
        ],
    );
    assert_eq!(
        (
            masked.train_idx.clone(),
            masked.valid_idx.clone(),
            masked.test_idx.clone()
        ),
        (vec![0, 1, 5], vec![2], vec![3, 4])
    );
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2, 3, 4, 5]);
    check_invariants(&part);
}

#[test]
fn ogb_raw_layout_is_read_and_split_by_year() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ogbl-tiny");
    let raw = root.join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::create_dir_all(root.join("split/time")).unwrap();
    std::fs::write(root.join("split/time/train.pt"), b"not read").unwrap();
    let n = 12u64;
    let mut edges = String::new();
    for s in 1..n {
        for k in 1..4 {
            edges += &format!("{s},{}\n", (s + 5 * k) % n);
        }
    }
    gz(&raw.join("edge.csv.gz"), &edges);
    let feat: String = (0..n)
        .map(|i| format!("{},{},-0.5\n", i, i as f32 * 0.25))
        .collect();
    gz(&raw.join("node-feat.csv.gz"), &feat);
    let years: String = (0..n)
        .map(|i| format!("{}\n", if i >= 8 { 2019 } else { 2010 }))
        .collect();
    gz(&raw.join("node_year.csv.gz"), &years);
    let labels: String = (0..n).map(|i| format!("{}\n", i % 4)).collect();
    gz(&raw.join("node-label.csv.gz"), &labels);
    gz(&raw.join("num-node-list.csv.gz"), &format!("{n}\n"));
    for dir_flag in [root.clone(), raw.clone()] {
        let out = dir.path().join("ogb.h5");
        let part = ingest_to(&out, &["--ogb", &p(&dir_flag), "--num-neg", "4"]);
        let m = &part.meta;
        assert_eq!(m.dataset_name, "ogbl-tiny");
        assert_eq!((m.num_nodes, m.feature_dim, m.num_classes), (12, 3, 4));
        assert_eq!(m.split, "temporal");
        assert_eq!(&part.features[3 * 3..4 * 3], &[3.0, 0.75, -0.5]);
        assert_eq!(part.time.as_ref().unwrap()[9], 2019);
        // Each 2019 source with two or more references holds out one of each.
        for s in 8..12u64 {
            assert_eq!(part.valid_edges.iter().filter(|e| e[0] == s).count(), 1);
            assert_eq!(part.test_edges.iter().filter(|e| e[0] == s).count(), 1);
        }
        assert_eq!(part.valid_edges.len(), 4);
        check_invariants(&part);
    }
}

#[test]
fn ogb_node_dataset_uses_its_split_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ogbn-tiny");
    let raw = root.join("raw");
    let split = root.join("split/time");
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::create_dir_all(&split).unwrap();
    let n = 10u64;
    let edges: String = (1..n).map(|s| format!("{s},{}\n", s - 1)).collect();
    gz(&raw.join("edge.csv.gz"), &edges);
    gz(&raw.join("num-node-list.csv.gz"), &format!("{n}\n"));
    let labels: String = (0..n).map(|i| format!("{}\n", i % 3)).collect();
    gz(&raw.join("node-label.csv.gz"), &labels);
    gz(&split.join("train.csv.gz"), "0\n1\n2\n3\n4\n9\n");
    gz(&split.join("valid.csv.gz"), "5\n6\n");
    gz(&split.join("test.csv.gz"), "7\n8\n");
    let part = ingest_to(
        &dir.path().join("n.h5"),
        &["--ogb", &p(&root), "--feature-dim", "4"],
    );
    assert_eq!(part.meta.num_classes, 3);
    assert_eq!(part.train_idx, vec![0, 1, 2, 3, 4, 9]);
    assert_eq!(part.valid_idx, vec![5, 6]);
    assert_eq!(part.test_idx, vec![7, 8]);
    check_invariants(&part);

    // A node index beyond the graph names the file and line.
    gz(&split.join("test.csv.gz"), "7\n80\n");
    let args =
        IngestArgs::from_flags(["--ogb", &p(&root), "--out", &p(&dir.path().join("bad.h5"))])
            .unwrap();
    let err = ingest::run(&args).unwrap_err().to_string();
    assert!(
        err.contains("test.csv.gz:2") && err.contains("node 80 is outside 0..10"),
        "{err}"
    );
}

#[test]
fn row_normalised_features_sum_to_one_per_row_and_zero_rows_stay() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("g.txt"), "0 1\n1 2\n2 3\n3 0\n").unwrap();
    let feats: Vec<f32> = vec![1.0, 0.0, 3.0, 0.0, 0.0, 0.0, -2.0, 2.0, 0.0, 0.5, 0.5, 1.0];
    npy::write_npy(&dir.path().join("x.npy"), &[4, 3], &feats).unwrap();
    let flags = |extra: &[&str]| -> Vec<String> {
        let mut v = vec![
            "--edges".to_string(),
            p(&dir.path().join("g.txt")),
            "--features".into(),
            p(&dir.path().join("x.npy")),
            "--num-neg".into(),
            "2".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    fn strs(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let plain = ingest_to(&dir.path().join("a.h5"), &strs(&flags(&[])));
    assert_eq!(plain.features, feats);
    let norm_flags = flags(&["--row-normalize-features"]);
    let norm = ingest_to(&dir.path().join("b.h5"), &strs(&norm_flags));
    assert_eq!(
        norm.features,
        vec![0.25, 0.0, 0.75, 0.0, 0.0, 0.0, -0.5, 0.5, 0.0, 0.25, 0.25, 0.5]
    );
    check_invariants(&norm);
}
