//! PyTorch `.pt` files written by real torch (`tests/data/make_pt_fixtures.py`, committed), read
//! without Python: the values of every supported kind, the refusals of what is not supported,
//! and `ingest --ogb` on an ogbl-citation2-shaped directory using OGB's own split.

use std::path::{Path, PathBuf};

use shardsage::graph::ingest::torch_pt::{self, DType, Value};
use shardsage::graph::ingest::{self, IngestArgs};
use shardsage::graph::store::GraphPart;

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn ints(v: &Value, key: &str) -> (Vec<usize>, Vec<i64>) {
    let t = torch_pt::tensor(Path::new("x"), v, key).unwrap();
    (t.shape.clone(), t.to_i64().unwrap())
}

#[test]
fn tensors_of_every_supported_kind_read_as_torch_wrote_them() {
    let v = torch_pt::load(&data("pt/mixed.pt")).unwrap();
    assert_eq!(
        ints(&v, "i64"),
        (vec![2, 3], vec![0, -1, 2, 3, 1 << 40, -(1i64 << 33)])
    );
    assert_eq!(ints(&v, "i32"), (vec![2, 3], vec![0, 1, 2, 3, 4, 5]));
    assert_eq!(ints(&v, "u8"), (vec![3], vec![0, 255, 7]));
    assert_eq!(ints(&v, "bool"), (vec![3], vec![1, 0, 1]));
    let f32t = torch_pt::tensor(Path::new("x"), &v, "f32").unwrap();
    assert_eq!(f32t.dtype, DType::F32);
    assert_eq!(f32t.to_f32().unwrap(), vec![1.5, -2.25, 3.0e-3]);
    assert!(f32t.to_i64().is_none());
    let f64t = torch_pt::tensor(Path::new("x"), &v, "f64").unwrap();
    assert_eq!(f64t.shape, vec![2, 1]);
    assert_eq!(f64t.to_f32().unwrap()[0], 0.1f32);
    assert_eq!(ints(&v, "empty"), (vec![0, 4], vec![]));
    // A view with a storage offset, and a second view of the same storage.
    assert_eq!(ints(&v, "view"), (vec![4], vec![5, 6, 7, 8]));
    assert_eq!(ints(&v, "shared"), (vec![3], vec![0, 1, 2]));
    let ordered = v.get("ordered").unwrap();
    assert_eq!(ints(ordered, "x"), (vec![2], vec![9, 8]));
    assert_eq!(
        v.get("plain"),
        Some(&Value::List(vec![
            Value::Int(1),
            Value::Int(300),
            Value::Int(70000),
            Value::Int(-5),
            Value::Int(1 << 62),
            Value::Float(2.5),
            Value::Str("text".into()),
            Value::None,
            Value::Bool(true),
            Value::Tuple(vec![Value::Int(1), Value::Int(2)]),
        ]))
    );
    // Keys keep torch's insertion order.
    assert_eq!(v.keys()[..3], ["i64", "i32", "u8"]);
    let err = torch_pt::tensor(&data("pt/mixed.pt"), &v, "nope")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mixed.pt") && err.contains("no 'nope'") && err.contains("i64"));
    let err = torch_pt::tensor(&data("pt/mixed.pt"), &v, "plain")
        .unwrap_err()
        .to_string();
    assert!(err.contains("'plain' is a list"), "{err}");
}

#[test]
fn unsupported_and_damaged_files_are_refused_with_the_file_and_the_reason() {
    for (file, expect) in [
        ("pt/legacy.pt", "legacy format of torch < 1.6"),
        ("pt/numpy.pt", "numpy array"),
        ("pt/noncontiguous.pt", "non-contiguous tensor"),
        ("pt/truncated.pt", "truncated or damaged"),
        (
            "ogb-citation-tiny/raw/edge.csv.gz",
            "not a PyTorch .pt file",
        ),
    ] {
        let path = data(file);
        let err = torch_pt::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(expect),
            "{file}: {err}"
        );
    }
    // A pickle cut anywhere inside is an error, never a panic or a partial value.
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(data("pt/mixed.pt")).unwrap();
    for cut in [4, 30, 100, whole.len() - 30, whole.len() - 1] {
        let p = dir.path().join(format!("cut{cut}.pt"));
        std::fs::write(&p, &whole[..cut]).unwrap();
        assert!(torch_pt::load(&p).is_err(), "cut at {cut} was accepted");
    }
    // A zip that torch did not write.
    let p = dir.path().join("other.pt");
    {
        let f = std::fs::File::create(&p).unwrap();
        let mut w = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        w.start_file("readme.txt", opts).unwrap();
        std::io::Write::write_all(&mut w, b"hello").unwrap();
        w.finish().unwrap();
    }
    let err = torch_pt::load(&p).unwrap_err().to_string();
    assert!(err.contains("without data.pkl"), "{err}");
}

fn ingest_ogb(root: &Path, out: &Path) -> shardsage::Result<GraphPart> {
    let args = IngestArgs::from_flags([
        "--ogb",
        &root.display().to_string(),
        "--out",
        &out.display().to_string(),
    ])?;
    ingest::run(&args)?;
    GraphPart::read(out)
}

#[test]
fn ogb_directory_with_split_files_uses_ogbs_own_split_and_negatives() {
    let root = data("ogb-citation-tiny");
    let dir = tempfile::tempdir().unwrap();
    let part = ingest_ogb(&root, &dir.path().join("ogb.h5")).unwrap();
    let split = |name: &str| torch_pt::load(&root.join("split/time").join(name)).unwrap();
    let pairs = |v: &Value| -> Vec<[u64; 2]> {
        let (_, s) = ints(v, "source_node");
        let (_, t) = ints(v, "target_node");
        s.iter()
            .zip(&t)
            .map(|(&a, &b)| [a as u64, b as u64])
            .collect()
    };
    assert_eq!(part.meta.split, "given");
    assert_eq!(part.meta.num_nodes, 40);
    assert_eq!(part.num_neg, 3);
    let (valid, test, train) = (split("valid.pt"), split("test.pt"), split("train.pt"));
    assert_eq!(part.valid_edges, pairs(&valid));
    assert_eq!(part.test_edges, pairs(&test));
    let neg = |v: &Value| -> Vec<u64> {
        ints(v, "target_node_neg")
            .1
            .iter()
            .map(|&x| x as u64)
            .collect()
    };
    assert_eq!(part.valid_neg, neg(&valid));
    assert_eq!(part.test_neg, neg(&test));
    let mut want_train = pairs(&train);
    want_train.sort();
    let mut got_train = part.train_edges.clone();
    got_train.sort();
    assert_eq!(got_train, want_train);
    // Every held-out source is a paper of the last year, and no held-out edge is trained on.
    let time = part.time.as_ref().unwrap();
    for e in part.valid_edges.iter().chain(&part.test_edges) {
        assert_eq!(time[e[0] as usize], 2019);
        assert!(!part.train_edges.contains(e));
    }
    assert_eq!(part.meta.feature_dim, 8);

    // A damaged split file stops the ingest with its name, and writes nothing.
    let bad = dir.path().join("bad");
    copy_dir(&root, &bad);
    let test_pt = bad.join("split/time/test.pt");
    let bytes = std::fs::read(&test_pt).unwrap();
    std::fs::write(&test_pt, &bytes[..bytes.len() / 2]).unwrap();
    let out = dir.path().join("bad.h5");
    let err = ingest_ogb(&bad, &out).unwrap_err().to_string();
    assert!(
        err.contains("test.pt") && err.contains("truncated"),
        "{err}"
    );
    assert!(!out.exists());
    // A file of another shape is refused with the key it lacks.
    std::fs::copy(data("pt/mixed.pt"), &test_pt).unwrap();
    let err = ingest_ogb(&bad, &out).unwrap_err().to_string();
    assert!(
        err.contains("test.pt") && err.contains("no 'source_node'"),
        "{err}"
    );
    // A node id outside the graph is refused with the file, key and entry.
    std::fs::copy(data("pt/out_of_range.pt"), &test_pt).unwrap();
    let err = ingest_ogb(&bad, &out).unwrap_err().to_string();
    assert!(
        err.contains("test.pt") && err.contains("'source_node' entry 1 is node 99"),
        "{err}"
    );
    assert!(!out.exists());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}
