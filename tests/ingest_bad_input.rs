//! Bad input to `shardsage ingest`: every case must fail with an error that names the file and
//! line (or field) at fault, and leave no output file and no temporary file behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use shardsage::graph::ingest::{self, IngestArgs};
use shardsage::graph::npy;

/// A scratch area: inputs under `in/`, the output directory `out/` (which must stay empty).
struct Case {
    _dir: tempfile::TempDir,
    input: PathBuf,
    out_dir: PathBuf,
}

impl Case {
    fn new() -> Case {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        let out_dir = dir.path().join("out");
        std::fs::create_dir_all(&input).unwrap();
        std::fs::create_dir_all(&out_dir).unwrap();
        Case {
            _dir: dir,
            input,
            out_dir,
        }
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.input.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
    fn path(&self, name: &str) -> PathBuf {
        self.input.join(name)
    }
    fn out(&self) -> String {
        self.out_dir.join("dataset.h5").display().to_string()
    }

    /// Runs ingest (library entry point) and returns its error text, asserting that it failed and
    /// left nothing in the output directory.
    fn fails(&self, flags: &[&str]) -> String {
        let mut all: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        if !flags.contains(&"--out") {
            all.push("--out".into());
            all.push(self.out());
        }
        let result = IngestArgs::from_flags(&all).and_then(|a| ingest::run(&a));
        let err = match result {
            Ok(()) => panic!("ingest {all:?} succeeded on bad input"),
            Err(e) => e.to_string(),
        };
        self.assert_no_output();
        err
    }

    fn assert_no_output(&self) {
        let left: Vec<_> = std::fs::read_dir(&self.out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "files left in the output directory: {left:?}"
        );
    }
}

fn contains_all(err: &str, parts: &[&str]) {
    for p in parts {
        assert!(err.contains(p), "error {err:?} does not mention {p:?}");
    }
}

#[test]
fn malformed_edge_lines_name_file_and_line() {
    let c = Case::new();
    let f = c.file("fields.tsv", "0\t1\n1\t2\t3\n");
    contains_all(
        &c.fails(&["--edges", &f]),
        &["fields.tsv:2:", "expected 2 fields", "found 3"],
    );
    let f = c.file("word.txt", "# comment\n0 1\n1 x\n");
    contains_all(
        &c.fails(&["--edges", &f]),
        &["word.txt:3:", "\"x\" is not a non-negative integer"],
    );
    let f = c.file("neg.csv", "0,1\n-4,2\n");
    contains_all(
        &c.fails(&["--edges", &f]),
        &["neg.csv:2:", "negative node id -4"],
    );
    let f = c.file("float.tsv", "src\tdst\n0\t1\n2.5\t1\n");
    contains_all(&c.fails(&["--edges", &f]), &["float.tsv:3:", "\"2.5\""]);
    let f = c.file("one.tsv", "0\t1\n7\n");
    contains_all(&c.fails(&["--edges", &f]), &["one.tsv:2:", "found 1"]);
}

#[test]
fn ids_out_of_range_of_node_arrays_name_file_and_line() {
    let c = Case::new();
    npy::write_npy(&c.path("x.npy"), &[3, 2], &[0f32; 6]).unwrap();
    let f = c.file("e.tsv", "0\t1\n1\t2\n2\t3\n");
    let err = c.fails(&[
        "--edges",
        &f,
        "--features",
        &c.path("x.npy").display().to_string(),
    ]);
    contains_all(
        &err,
        &["e.tsv:3:", "node id 3 is out of range", "x.npy", "3 rows"],
    );
}

#[test]
fn node_arrays_of_different_lengths_name_the_file() {
    let c = Case::new();
    npy::write_npy(&c.path("x.npy"), &[3, 2], &[0f32; 6]).unwrap();
    npy::write_npy(&c.path("y.npy"), &[4], &[0i64, 1, 0, 1]).unwrap();
    let f = c.file("e.tsv", "0\t1\n1\t2\n");
    let err = c.fails(&[
        "--edges",
        &f,
        "--features",
        &c.path("x.npy").display().to_string(),
        "--labels",
        &c.path("y.npy").display().to_string(),
    ]);
    contains_all(&err, &["y.npy", "has 4 rows", "x.npy has 3"]);

    npy::write_npy(&c.path("y.npy"), &[3], &[0i64, -1, 0]).unwrap();
    let err = c.fails(&[
        "--edges",
        &f,
        "--labels",
        &c.path("y.npy").display().to_string(),
    ]);
    contains_all(&err, &["y.npy", "entry 1", "label -1"]);
}

#[test]
fn non_finite_features_name_row_and_column() {
    let c = Case::new();
    let f = c.file("e.tsv", "0\t1\n1\t2\n");
    let x = c.path("x.npy").display().to_string();
    npy::write_npy(
        &c.path("x.npy"),
        &[3, 2],
        &[0f32, 1.0, 2.0, f32::NAN, 4.0, 5.0],
    )
    .unwrap();
    contains_all(
        &c.fails(&["--edges", &f, "--features", &x]),
        &["x.npy", "row 1 column 1", "NaN"],
    );
    npy::write_npy(
        &c.path("x.npy"),
        &[3, 2],
        &[0f64, 1.0, 2.0, 3.0, f64::INFINITY, 5.0],
    )
    .unwrap();
    contains_all(
        &c.fails(&["--edges", &f, "--features", &x]),
        &["x.npy", "row 2 column 0", "inf"],
    );
    npy::write_npy(&c.path("x.npy"), &[3, 2], &[0i32; 6]).unwrap();
    contains_all(
        &c.fails(&["--edges", &f, "--features", &x]),
        &["x.npy", "not a float type"],
    );
}

#[test]
fn empty_graphs_are_refused() {
    let c = Case::new();
    let f = c.file("empty.tsv", "# only a comment\n\n% and another\n");
    contains_all(&c.fails(&["--edges", &f]), &["empty.tsv", "no edges"]);
    let f = c.file("header_only.csv", "source,target\n");
    contains_all(&c.fails(&["--edges", &f]), &["header_only.csv", "no edges"]);
    let f = c.file("loops.tsv", "1\t1\n2\t2\n");
    contains_all(
        &c.fails(&["--edges", &f]),
        &["field `edges`", "no edges left", "2 self-loops"],
    );
}

#[test]
fn truncated_garbage_and_unsupported_npy_name_the_file() {
    let c = Case::new();
    let f = c.file("e.tsv", "0\t1\n1\t2\n");
    let x = c.path("x.npy");
    let xs = x.display().to_string();
    npy::write_npy(&x, &[3, 2], &[0.5f32; 6]).unwrap();
    let bytes = std::fs::read(&x).unwrap();
    std::fs::write(&x, &bytes[..bytes.len() - 5]).unwrap();
    contains_all(
        &c.fails(&["--edges", &f, "--features", &xs]),
        &["x.npy", "truncated"],
    );
    std::fs::write(&x, &bytes[..9]).unwrap();
    contains_all(
        &c.fails(&["--edges", &f, "--features", &xs]),
        &["x.npy", "truncated"],
    );
    std::fs::write(&x, b"this is not an array at all").unwrap();
    contains_all(
        &c.fails(&["--edges", &f, "--features", &xs]),
        &["x.npy", "not a .npy file"],
    );
    let fortran: Vec<u8> = {
        let at = bytes.windows(5).position(|w| w == b"False").unwrap();
        let mut b = bytes.clone();
        b[at..at + 5].copy_from_slice(b"True ");
        b
    };
    std::fs::write(&x, fortran).unwrap();
    contains_all(
        &c.fails(&["--edges", &f, "--features", &xs]),
        &["x.npy", "Fortran"],
    );
    let big_endian: Vec<u8> = {
        let at = bytes.windows(3).position(|w| w == b"<f4").unwrap();
        let mut b = bytes.clone();
        b[at] = b'>';
        b
    };
    std::fs::write(&x, big_endian).unwrap();
    contains_all(
        &c.fails(&["--edges", &f, "--features", &xs]),
        &["x.npy", "\">f4\" is not supported"],
    );
}

#[test]
fn corrupt_gzip_names_the_file() {
    let c = Case::new();
    let p = c.path("e.tsv.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..20_000 {
        writeln!(enc, "{i}\t{}", i + 1).unwrap();
    }
    let gz = enc.finish().unwrap();
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    let err = c.fails(&["--edges", &p.display().to_string()]);
    contains_all(&err, &["e.tsv.gz", "corrupt or truncated"]);
}

#[test]
fn unwritable_or_missing_output_directories_fail_up_front() {
    let c = Case::new();
    let f = c.file("e.tsv", "0\t1\n1\t2\n");
    let missing = c.out_dir.join("no/such/dir/d.h5").display().to_string();
    contains_all(
        &c.fails(&["--edges", &f, "--out", &missing]),
        &["no/such/dir", "does not exist"],
    );
    let through_file = format!("{f}/d.h5");
    contains_all(
        &c.fails(&["--edges", &f, "--out", &through_file]),
        &["e.tsv", "does not exist"],
    );
    // /proc accepts no new files, even for root.
    if Path::new("/proc/self").is_dir() {
        contains_all(
            &c.fails(&["--edges", &f, "--out", "/proc/self/d.h5"]),
            &["/proc/self", "not writable"],
        );
    }
    let as_dir = c.out_dir.display().to_string();
    contains_all(
        &c.fails(&["--edges", &f, "--out", &as_dir]),
        &["must name a file"],
    );
}

#[test]
fn given_splits_must_be_complete_and_consistent() {
    let c = Case::new();
    let f = c.file("e.tsv", "0\t1\n1\t2\n2\t3\n");
    let v = c.file("v.tsv", "0\t2\n");
    let err = c.fails(&["--edges", &f, "--valid-edges", &v]);
    contains_all(&err, &["--valid-edges", "all four"]);
    let vn = c.file("vn.tsv", "1\t3\n3\t1\n");
    let t = c.file("t.tsv", "1\t3\n");
    let tn = c.file("tn.tsv", "0\t2\n");
    let err = c.fails(&[
        "--edges",
        &f,
        "--valid-edges",
        &v,
        "--test-edges",
        &t,
        "--valid-neg",
        &vn,
        "--test-neg",
        &tn,
    ]);
    contains_all(
        &err,
        &["vn.tsv", "2 rows of negatives for 1 held-out edges"],
    );
    // With node arrays, ids are rows: one beyond them is named with its file and line.
    let vn = c.file("vn.tsv", "# negatives\n1\t9\n");
    npy::write_npy(&c.path("y.npy"), &[4], &[0i64, 1, 0, 1]).unwrap();
    let y = c.path("y.npy").display().to_string();
    let err = c.fails(&[
        "--edges",
        &f,
        "--labels",
        &y,
        "--valid-edges",
        &v,
        "--test-edges",
        &t,
        "--valid-neg",
        &vn,
        "--test-neg",
        &tn,
    ]);
    contains_all(&err, &["vn.tsv:2:", "node id 9 is out of range", "y.npy"]);
    let tn = c.file("tn.tsv", "0\t2\t3\n");
    let err = c.fails(&[
        "--edges",
        &f,
        "--valid-edges",
        &v,
        "--test-edges",
        &t,
        "--valid-neg",
        &vn,
        "--test-neg",
        &tn,
    ]);
    contains_all(&err, &["tn.tsv", "3 negatives per edge", "vn.tsv has 2"]);
}

#[test]
fn ogb_layout_errors_name_file_and_line() {
    let c = Case::new();
    let raw = c.path("ogb/raw");
    std::fs::create_dir_all(&raw).unwrap();
    let gz = |name: &str, text: &str| {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        std::fs::write(raw.join(name), enc.finish().unwrap()).unwrap();
    };
    let dir = c.path("ogb").display().to_string();
    contains_all(&c.fails(&["--ogb", &dir]), &["ogb", "no edge.csv.gz"]);
    gz("edge.csv.gz", "0,1\n1,2\n2,0\n");
    gz("num-node-list.csv.gz", "3\n");
    gz("node-feat.csv.gz", "0.1,0.2\n0.3,nan\n0.5,0.6\n");
    contains_all(
        &c.fails(&["--ogb", &dir]),
        &["node-feat.csv.gz:2:", "column 1", "not finite"],
    );
    gz("node-feat.csv.gz", "0.1,0.2\n0.3,0.4\n");
    contains_all(
        &c.fails(&["--ogb", &dir]),
        &["node-feat.csv.gz", "has 2 rows", "3 nodes"],
    );
    gz("node-feat.csv.gz", "0.1,0.2\n0.3,0.4\n0.5,0.6\n");
    gz("edge.csv.gz", "0,1\n1,3\n");
    contains_all(
        &c.fails(&["--ogb", &dir]),
        &["edge.csv.gz:2:", "node id 3 is out of range"],
    );
}

/// The binary exits non-zero and prints the message on standard error.
#[test]
fn the_binary_reports_bad_input_and_exits_non_zero() {
    let c = Case::new();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_shardsage"))
            .arg("ingest")
            .args(args)
            .output()
            .unwrap();
        c.assert_no_output();
        assert!(!out.status.success(), "exit status {:?}", out.status);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let out = c.out();
    let f = c.file("bad.tsv", "0\t1\n1\t2\t3\n");
    contains_all(
        &run(&["--edges", &f, "--out", &out]),
        &["bad.tsv:2:", "expected 2 fields"],
    );
    let g = c.file("good.tsv", "0\t1\n1\t2\n");
    npy::write_npy(&c.path("x.npy"), &[3, 1], &[1f32, f32::NAN, 0.0]).unwrap();
    let x = c.path("x.npy").display().to_string();
    contains_all(
        &run(&["--edges", &g, "--features", &x, "--out", &out]),
        &["x.npy", "row 1 column 0"],
    );
    let missing = c.out_dir.join("nope/d.h5").display().to_string();
    contains_all(
        &run(&["--edges", &g, "--out", &missing]),
        &["nope", "does not exist"],
    );
    // A missing required flag is a usage error from the argument parser.
    contains_all(&run(&["--edges", &g]), &["--out"]);
}
