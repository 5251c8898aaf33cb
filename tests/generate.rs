//! The synthetic citation graph: citation direction, heavy tails, communities, determinism across
//! thread counts, and the raw files it writes.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;

use shardsage::graph::generate::{generate, write_raw, GenerateOptions};

fn small(nodes: usize, seed: u64) -> GenerateOptions {
    GenerateOptions {
        nodes,
        seed,
        ..GenerateOptions::default()
    }
}

#[test]
fn citations_point_to_older_papers_with_heavy_tails_inside_communities() {
    let g = generate(&small(20_000, 3)).expect("generate");
    let n = g.orig_id.len();
    let time = g.time.as_ref().expect("time");
    let label = g.label.as_ref().expect("label");
    assert_eq!(n, 20_000);
    assert_eq!(g.features.as_ref().expect("features").len(), n * 128);

    let mean_degree = g.edges.len() as f64 / n as f64;
    assert!(
        (mean_degree - 10.4).abs() < 0.6,
        "mean out-degree {mean_degree}, asked for 10.4"
    );
    let mut seen = HashSet::new();
    let mut in_degree = vec![0u64; n];
    let mut out_degree = vec![0u64; n];
    let mut intra = 0usize;
    for e in &g.edges {
        let (s, t) = (e[0] as usize, e[1] as usize);
        assert!(
            time[s] > time[t],
            "edge {s}->{t} cites a paper of year {} from year {}",
            time[t],
            time[s]
        );
        assert!(seen.insert((s, t)), "duplicate citation {s}->{t}");
        in_degree[t] += 1;
        out_degree[s] += 1;
        intra += (label[s] == label[t]) as usize;
    }
    let intra_share = intra as f64 / g.edges.len() as f64;
    assert!(
        intra_share > 0.85,
        "only {intra_share:.3} of citations stay in the community"
    );
    let max_in = *in_degree.iter().max().unwrap();
    let max_out = *out_degree.iter().max().unwrap();
    assert!(
        max_in as f64 > 20.0 * mean_degree,
        "max in-degree {max_in} is not heavy-tailed against mean {mean_degree}"
    );
    assert!(
        max_out as f64 > 5.0 * mean_degree,
        "max out-degree {max_out} is not heavy-tailed against mean {mean_degree}"
    );
    // Volume grows over time: the last year has several times the papers of the first.
    let first = time.iter().filter(|&&t| t == 1990).count();
    let last = time.iter().filter(|&&t| t == 2019).count();
    assert!(last > 5 * first, "first year {first} papers, last {last}");
    // Features carry the community: a paper is closer to its own community mean than to others.
    let f = 128;
    let feats = g.features.as_ref().unwrap();
    let classes = 40;
    let mut centroid = vec![0f64; classes * f];
    let mut count = vec![0f64; classes];
    for v in 0..n {
        let c = label[v] as usize;
        count[c] += 1.0;
        for j in 0..f {
            centroid[c * f + j] += feats[v * f + j] as f64;
        }
    }
    for c in 0..classes {
        for j in 0..f {
            centroid[c * f + j] /= count[c].max(1.0);
        }
    }
    let nearest_right = (0..n)
        .filter(|&v| {
            let dist = |c: usize| -> f64 {
                (0..f)
                    .map(|j| (feats[v * f + j] as f64 - centroid[c * f + j]).powi(2))
                    .sum()
            };
            let best = (0..classes)
                .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
                .unwrap();
            best == label[v] as usize
        })
        .count();
    let acc = nearest_right as f64 / n as f64;
    assert!(
        acc > 0.5 && acc < 0.999,
        "nearest-centroid accuracy {acc} (features should carry a learnable, noisy signal)"
    );
}

#[test]
fn bad_options_are_config_errors() {
    for opts in [
        GenerateOptions {
            nodes: 1,
            ..GenerateOptions::default()
        },
        GenerateOptions {
            years: 1,
            ..small(100, 0)
        },
        GenerateOptions {
            communities: 0,
            ..small(100, 0)
        },
        GenerateOptions {
            avg_degree: -1.0,
            ..small(100, 0)
        },
    ] {
        let err = generate(&opts).expect_err("must be refused").to_string();
        assert!(err.starts_with("config:"), "{err}");
    }
}

fn read_npy_header(path: &Path) -> (String, usize) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00", "{}", path.display());
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + len) % 64, 0, "header not 64-byte aligned");
    let header = String::from_utf8(bytes[10..10 + len].to_vec()).unwrap();
    assert!(header.ends_with('\n'));
    (header, bytes.len() - 10 - len)
}

#[test]
fn raw_files_have_the_documented_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let g = generate(&small(500, 1)).unwrap();
    write_raw(dir.path(), &g).unwrap();
    let (h, data) = read_npy_header(&dir.path().join("features.npy"));
    assert!(
        h.contains("'descr': '<f4'") && h.contains("'shape': (500, 128)"),
        "{h}"
    );
    assert_eq!(data, 500 * 128 * 4);
    for name in ["times.npy", "labels.npy"] {
        let (h, data) = read_npy_header(&dir.path().join(name));
        assert!(
            h.contains("'descr': '<i8'") && h.contains("'shape': (500,)"),
            "{h}"
        );
        assert_eq!(data, 500 * 8);
    }
    let mut text = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(std::fs::File::open(dir.path().join("edges.tsv.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("source\ttarget"));
    let rows: Vec<(u64, u64)> = lines
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(rows.len(), g.edges.len());
    assert_eq!(rows[0], (g.edges[0][0] as u64, g.edges[0][1] as u64));
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

fn run_generate(threads: &str, out: &Path, extra: &[&str]) {
    let status = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .args(["generate", "--nodes", "3000", "--seed", "11"])
        .args(extra)
        .arg("--out-dir")
        .arg(out)
        .env("RAYON_NUM_THREADS", threads)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run shardsage generate");
    assert!(status.success());
}

#[test]
fn generate_is_identical_with_one_and_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    run_generate("1", &a, &[]);
    run_generate("2", &b, &[]);
    for name in ["edges.tsv.gz", "features.npy", "times.npy", "labels.npy"] {
        let x = std::fs::read(a.join(name)).unwrap();
        let y = std::fs::read(b.join(name)).unwrap();
        assert!(x == y, "{name} differs between 1 and 2 threads");
    }
    // A different seed gives a different graph.
    let c = dir.path().join("c");
    let status = Command::new(env!("CARGO_BIN_EXE_shardsage"))
        .args(["generate", "--nodes", "3000", "--seed", "12", "--out-dir"])
        .arg(&c)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_ne!(
        std::fs::read(a.join("edges.tsv.gz")).unwrap(),
        std::fs::read(c.join("edges.tsv.gz")).unwrap()
    );
}

#[test]
fn ingesting_the_raw_files_gives_the_same_dataset_as_generate_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_shardsage");
    let run = |args: &[&std::ffi::OsStr]| {
        let out = Command::new(exe)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |name: &str| dir.path().join(name).into_os_string();
    let common =
        ["--nodes", "2500", "--seed", "8", "--num-neg", "30"].map(std::ffi::OsString::from);
    let mut gen_raw = vec!["generate".into(), "--out-dir".into(), p("raw")];
    gen_raw.extend(common.iter().take(4).cloned());
    let mut gen_ds = vec!["generate".into(), "--out".into(), p("generated.h5")];
    gen_ds.extend(common.iter().cloned());
    let ingest: Vec<std::ffi::OsString> = vec![
        "ingest".into(),
        "--edges".into(),
        p("raw/edges.tsv.gz"),
        "--features".into(),
        p("raw/features.npy"),
        "--times".into(),
        p("raw/times.npy"),
        "--labels".into(),
        p("raw/labels.npy"),
        "--name".into(),
        "synthetic-citation".into(),
        "--seed".into(),
        "8".into(),
        "--num-neg".into(),
        "30".into(),
        "--out".into(),
        p("ingested.h5"),
    ];
    for args in [gen_raw, gen_ds, ingest] {
        let refs: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        run(&refs);
    }
    let a = std::fs::read(dir.path().join("generated.h5")).unwrap();
    let b = std::fs::read(dir.path().join("ingested.h5")).unwrap();
    assert!(
        a == b,
        "ingest of the raw files differs from generate --dataset"
    );
}
