//! Random walks: node2vec's transition probabilities checked by chi-square on a small graph
//! (return and in-out cases, and DeepWalk's uniform steps), walks that end at nodes without
//! neighbours, identical walk files at W = 1, 2 and 4 under real `mpirun`, bad settings, and
//! node2vec embeddings: deterministic for a seed and world size, better than chance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use shardsage::distributed::graph::DistGraph;
use shardsage::distributed::Comm;
use shardsage::graph::store::GraphPart;
use shardsage::walk::{random_walks, WalkConfig, NO_NODE};

mod common;
use common::mpi::mpirun;
use common::{check_ok, run_err, run_ok};

const BIN: &str = env!("CARGO_BIN_EXE_shardsage");

/// A one-part graph with the given undirected adjacency (rows sorted, as the CSR is).
fn part_with(adj: &[Vec<u32>]) -> GraphPart {
    let mut part = common::random_part(adj.len(), 2, 1, 1, 0, 0);
    part.indptr = vec![0];
    part.indices.clear();
    for row in adj {
        let mut r = row.clone();
        r.sort_unstable();
        part.indices.extend_from_slice(&r);
        part.indptr.push(part.indices.len() as u64);
    }
    part
}

/// Counts of the step after `prev -> cur` over every walk of every round.
fn transitions(part: &GraphPart, cfg: &WalkConfig, prev: u32, cur: u32) -> BTreeMap<u32, u64> {
    let comm = Comm::single();
    let g = DistGraph::new(part, &comm, 0).unwrap();
    let mut counts = BTreeMap::new();
    random_walks(&g, cfg, &mut |round| {
        for w in round.nodes.chunks_exact(round.length) {
            for t in 2..w.len() {
                if w[t - 2] == prev && w[t - 1] == cur && w[t] != NO_NODE {
                    *counts.entry(w[t]).or_insert(0) += 1;
                }
            }
        }
        Ok(())
    })
    .unwrap();
    counts
}

/// Pearson's chi-square statistic of `counts` against probabilities proportional to `weights`.
fn chi_square(counts: &BTreeMap<u32, u64>, weights: &BTreeMap<u32, f64>) -> f64 {
    let total: u64 = counts.values().sum();
    let wsum: f64 = weights.values().sum();
    assert!(
        counts.keys().all(|k| weights.contains_key(k)),
        "a step to a node that is not a neighbour: {counts:?}"
    );
    weights
        .iter()
        .map(|(k, w)| {
            let expected = total as f64 * w / wsum;
            let seen = *counts.get(k).unwrap_or(&0) as f64;
            (seen - expected).powi(2) / expected
        })
        .sum()
}

#[test]
fn second_steps_follow_node2vec_probabilities() {
    // Node 1's neighbours: 0 (the previous node), 2 and 3 (also neighbours of 0), 4 and 5 (not).
    let adj = vec![
        vec![1, 2, 3],
        vec![0, 2, 3, 4, 5],
        vec![0, 1],
        vec![0, 1],
        vec![1],
        vec![1],
    ];
    let part = part_with(&adj);
    for (p, q) in [(1.0, 1.0), (4.0, 0.25), (0.25, 4.0), (2.0, 2.0)] {
        let cfg = WalkConfig {
            length: 8,
            walks_per_node: 6000,
            p,
            q,
            seed: 11,
        };
        let counts = transitions(&part, &cfg, 0, 1);
        let weights: BTreeMap<u32, f64> =
            [(0, 1.0 / p), (2, 1.0), (3, 1.0), (4, 1.0 / q), (5, 1.0 / q)]
                .into_iter()
                .collect();
        let total: u64 = counts.values().sum();
        assert!(total > 2000, "too few 0 -> 1 transitions: {total}");
        let chi2 = chi_square(&counts, &weights);
        eprintln!("p={p} q={q}: {total} transitions, chi-square {chi2:.2}: {counts:?}");
        // 4 degrees of freedom: P(chi2 > 18.47) = 0.001.
        assert!(
            chi2 < 18.47,
            "p={p} q={q}: chi-square {chi2:.1} for {counts:?} against weights {weights:?}"
        );
    }
}

#[test]
fn walks_end_at_nodes_without_neighbours_and_are_padded() {
    // 0 - 1 - 2, node 3 isolated: a walk from 3 is [3] then padding.
    let part = part_with(&[vec![1], vec![0, 2], vec![1], vec![]]);
    let comm = Comm::single();
    let g = DistGraph::new(&part, &comm, 0).unwrap();
    let cfg = WalkConfig {
        length: 6,
        walks_per_node: 3,
        p: 0.5,
        q: 2.0,
        seed: 3,
    };
    let mut rounds = 0;
    random_walks(&g, &cfg, &mut |round| {
        rounds += 1;
        let walks: Vec<&[u32]> = round.nodes.chunks_exact(6).collect();
        assert_eq!(walks[3], &[3, NO_NODE, NO_NODE, NO_NODE, NO_NODE, NO_NODE]);
        for (v, w) in walks.iter().enumerate().take(3) {
            assert_eq!(w[0], v as u32);
            for s in w.windows(2) {
                assert!(adj_has(&part, s[0], s[1]), "{w:?} is not a walk");
            }
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(rounds, 3);
}

fn adj_has(part: &GraphPart, u: u32, v: u32) -> bool {
    part.neighbors(u as u64).contains(&v)
}

/// A generated graph in 4 parts, shared by the tests.
fn parts() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        common::generated_parts(&common::tmp("walk", "data"), 1500, 9, 8, 5, 4, Some("ldg"))
    })
}

fn walk_file(w: usize, data: &Path, out: &Path, p: &str, q: &str) -> Vec<u32> {
    check_ok(mpirun(
        w,
        300,
        Path::new(BIN),
        &[
            "walk",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--length",
            "12",
            "--walks-per-node",
            "3",
            "--p",
            p,
            "--q",
            q,
            "--threads",
            "1",
        ],
    ));
    let f = hdf5::File::open(out).unwrap();
    let ds = f.dataset("walks").unwrap();
    assert_eq!(ds.shape(), vec![4500, 12]);
    ds.read_raw().unwrap()
}

#[test]
fn walks_are_identical_at_every_world_size() {
    require_mpi!();
    let data = parts();
    let d = common::tmp("walk", "worlds");
    for (p, q) in [("1", "1"), ("0.5", "2")] {
        let w1 = walk_file(1, data, &d.join("w1.h5"), p, q);
        for w in [2, 4] {
            let other = walk_file(w, data, &d.join(format!("w{w}.h5")), p, q);
            assert!(other == w1, "p={p} q={q}: walks at W={w} differ from W=1");
        }
        // The same walk from every start node, and each step along an edge of the CSR.
        assert!((0..1500u32).all(|v| w1[v as usize * 12] == v));
    }
}

#[test]
fn bad_walk_settings_are_refused_naming_the_field() {
    let data = parts();
    let out = common::tmp("walk", "bad").join("w.h5");
    for (flags, field) in [
        (vec!["--p", "0"], "p"),
        (vec!["--q=-1"], "q"),
        (vec!["--length", "0"], "length"),
        (vec!["--walks-per-node", "0"], "walks_per_node"),
    ] {
        let mut a = vec![
            "walk",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend(flags.iter());
        let err = run_err(&a);
        assert!(err.contains(field), "{flags:?}: {err}");
        assert!(!out.exists(), "a refused run wrote {}", out.display());
    }
    run_ok(&[
        "walk",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--length",
        "3",
        "--walks-per-node",
        "1",
    ]);
    assert!(out.exists());
}

fn node2vec(w: usize, threads: &str, out: &Path) -> String {
    let o = check_ok(mpirun(
        w,
        300,
        Path::new(BIN),
        &[
            "node2vec",
            "--data",
            parts().to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--walks-per-node",
            "4",
            "--length",
            "20",
            "--dim",
            "32",
            "--p",
            "0.5",
            "--q",
            "2",
            "--threads",
            threads,
        ],
    ));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn node2vec_embeddings_are_deterministic_learn_and_are_evaluated() {
    require_mpi!();
    let d = common::tmp("walk", "n2v");
    let (a, b) = (d.join("t1.h5"), d.join("t2.h5"));
    let printed = node2vec(2, "1", &a);
    node2vec(2, "2", &b);
    let read = |p: &Path| -> Vec<f32> {
        let f = hdf5::File::open(p).unwrap();
        let ds = f.dataset("embedding").unwrap();
        assert_eq!(ds.shape(), vec![1500, 32]);
        ds.read_raw().unwrap()
    };
    let (ea, eb) = (read(&a), read(&b));
    assert!(
        ea.iter().zip(&eb).all(|(x, y)| x.to_bits() == y.to_bits()),
        "the thread count changed the embeddings"
    );
    // The built-in evaluation (dot product against the fixed negatives) beats chance.
    let auc: f64 = printed
        .lines()
        .find(|l| l.starts_with("test (dot product):"))
        .and_then(|l| l.split("auc=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no test metrics printed: {printed}"));
    assert!(auc > 0.6, "test AUC {auc}: {printed}");
}

fn read_embeddings(p: &Path) -> Vec<f32> {
    let f = hdf5::File::open(p).unwrap();
    f.dataset("embedding").unwrap().read_raw().unwrap()
}

/// `shardsage node2vec` on `data` into `out` with the small settings of these tests and `extra`.
fn node2vec_job(data: &Path, out: &Path, extra: &[&str]) -> std::process::Command {
    let mut args = vec![
        "node2vec",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--walks-per-node",
        "4",
        "--length",
        "20",
        "--dim",
        "32",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    mpirun(2, 300, Path::new(BIN), &args)
}

/// node2vec on `data` at W = 2 with `extra` flags; the job's combined output.
fn node2vec_run(data: &Path, out: &Path, extra: &[&str]) -> String {
    let o = check_ok(node2vec_job(data, out, extra));
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn node2vec_resumes_bit_identically_from_the_newest_complete_checkpoint_set() {
    require_mpi!();
    let d = common::tmp("walk", "n2v-resume");
    let ckpt = d.join("ckpt");
    let plain = node2vec_run(parts(), &d.join("plain.h5"), &[]);
    assert!(!plain.contains("checkpoint"), "{plain}");
    let ckpt_flags = [
        "--checkpoint-dir",
        ckpt.to_str().unwrap(),
        "--checkpoint-minutes",
        "0",
    ];
    node2vec_run(parts(), &d.join("saved.h5"), &ckpt_flags);
    let want = read_embeddings(&d.join("plain.h5"));
    assert!(common::same_bits(
        &want,
        &read_embeddings(&d.join("saved.h5"))
    ));
    // Four rounds: each rank keeps the checkpoints after rounds 3 and 4. Rank 0 loses its
    // newest and rank 1's is damaged: the newest set both have intact is round 3's.
    let (r0, r1) = (ckpt.join("rank-00000"), ckpt.join("rank-00001"));
    // A checkpoint's step holds the rounds done above the episode within the next round.
    let after_round = |k: u64| format!("ckpt-{:010}.ssck", k << 32);
    assert!(r0.join(after_round(3)).exists() && r1.join(after_round(4)).exists());
    std::fs::remove_file(r0.join(after_round(4))).unwrap();
    let newest = r1.join(after_round(4));
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let mut resume = ckpt_flags.to_vec();
    resume.push("--resume");
    let log = node2vec_run(parts(), &d.join("resumed.h5"), &resume);
    assert!(log.contains(&after_round(3)), "{log}");
    assert!(
        log.contains("truncated"),
        "the damaged file is named: {log}"
    );
    assert!(
        common::same_bits(&want, &read_embeddings(&d.join("resumed.h5"))),
        "the resumed run differs from the uninterrupted one"
    );
    // Other settings are refused by name, not resumed from.
    let mut other = resume.clone();
    other.extend_from_slice(&["--window", "3"]);
    let o = node2vec_job(parts(), &d.join("x.h5"), &other)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("other settings"),
        "{err}"
    );
}

/// Runs node2vec into `out` with `flags`, sends SIGTERM to both ranks once they take signals and
/// `wait` has returned, and checks the requested stop: exit 0, `during` in the log, no
/// embeddings. Returns the log and how many checkpoints rank 1 has in `checkpoints`.
fn node2vec_stopped(
    out: &Path,
    flags: &[&str],
    checkpoints: &Path,
    wait: impl FnOnce(),
    during: &str,
) -> (String, usize) {
    let child = node2vec_job(parts(), out, flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ranks = common::mpi::ranks_catching_sigterm(BIN, out.to_str().unwrap(), 2);
    wait();
    for pid in ranks {
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let o = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "a requested stop exits 0: {log}");
    assert!(
        log.contains(&format!("stopped by signal during {during}")),
        "{log}"
    );
    assert!(!out.exists(), "no embeddings from a stopped run");
    let saved = std::fs::read_dir(checkpoints.join("rank-00001"))
        .map(|d| d.count())
        .unwrap_or(0);
    (log, saved)
}

/// SIGTERM at two moments: as soon as the ranks take signals (during the counting pass over
/// the walks, before any training), the run stops after that round of walks with exit 0 and
/// nothing to save; once a training round has been reported, the stop is agreed after the
/// next episode with a checkpoint of that position, and the resume from it ends with the
/// uninterrupted run's embeddings.
#[test]
fn sigterm_stops_node2vec_in_the_walks_or_after_an_episode_and_the_resume_matches() {
    require_mpi!();
    let d = common::tmp("walk", "n2v-sigterm");
    // 10 epochs of 4 rounds of about 8 episodes each: the later stop has rounds to spare on a
    // loaded machine, and lands inside a round (the stop is agreed after every episode).
    const LONG: [&str; 4] = ["--epochs", "10", "--episode-positions", "1000"];
    node2vec_run(parts(), &d.join("plain.h5"), &LONG);
    let early = d.join("early");
    let (log, saved) = node2vec_stopped(
        &d.join("early.h5"),
        &["--run-dir", early.to_str().unwrap()],
        &early.join("checkpoints"),
        || {},
        "node2vec walks",
    );
    assert!(log.contains("nothing trained in this run"), "{log}");
    assert_eq!(saved, 0, "nothing was trained, nothing is saved: {log}");
    let run = d.join("run");
    let mut flags = vec!["--run-dir", run.to_str().unwrap()];
    flags.extend(LONG);
    let (log, saved) = node2vec_stopped(
        &d.join("stopped.h5"),
        &flags,
        &run.join("checkpoints"),
        || common::mpi::wait_for_steps(&run, 1, std::time::Duration::from_secs(120)),
        "node2vec training",
    );
    assert!(saved >= 1 && log.contains("resumes at epoch"), "{log}");
    flags.push("--resume");
    let log = node2vec_run(parts(), &d.join("resumed.h5"), &flags);
    assert!(log.contains("resumed from"), "{log}");
    assert!(
        common::same_bits(
            &read_embeddings(&d.join("plain.h5")),
            &read_embeddings(&d.join("resumed.h5"))
        ),
        "the resumed run differs from the uninterrupted one"
    );
}

#[test]
fn a_node2vec_run_directory_has_metrics_tensorboard_and_a_final_checkpoint() {
    require_mpi!();
    let d = common::tmp("walk", "n2v-run-dir");
    let run = d.join("run");
    let flags = ["--run-dir", run.to_str().unwrap()];
    node2vec_run(parts(), &d.join("e.h5"), &flags);
    let records_of = |run: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect()
    };
    let records = |kind: &str| -> Vec<serde_json::Value> {
        records_of(&run)
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    };
    let steps = records("step");
    assert_eq!(steps.len(), 4, "one record per round: {steps:?}");
    for (k, s) in steps.iter().enumerate() {
        assert_eq!(s["global_step"], (k + 1) as u64);
        assert!(s["loss"].as_f64().is_some_and(|l| l.is_finite() && l > 0.0));
        assert!(s["lr"].as_f64().is_some_and(|l| l > 0.0 && l < 0.025));
    }
    let evals = records("eval");
    for split in ["valid", "test"] {
        assert!(
            evals
                .iter()
                .any(|e| e["split"] == split && e["metrics"]["mrr"].is_number()),
            "{evals:?}"
        );
    }
    let all = records_of(&run);
    assert_eq!(
        all.last().map(|r| r["kind"].clone()),
        Some("end".into()),
        "a finished node2vec run ends with its end record"
    );
    // So `select` ranks it by its valid MRR, as it does GraphSAGE runs.
    let out = run_ok(&["select", run.to_str().unwrap(), "--json"]);
    let sel: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sel["best"]["finished"], true, "{sel}");
    let tb: Vec<_> = std::fs::read_dir(run.join("tb")).unwrap().collect();
    assert_eq!(tb.len(), 1, "one TensorBoard events file");
    // The last round is checkpointed: the same job submitted again trains nothing more and
    // writes the same embeddings.
    let mut again = flags.to_vec();
    again.push("--resume");
    let log = node2vec_run(parts(), &d.join("again.h5"), &again);
    assert!(log.contains("resumed from"), "{log}");
    assert_eq!(records("step").len(), 4, "no round trained again");
    assert!(common::same_bits(
        &read_embeddings(&d.join("e.h5")),
        &read_embeddings(&d.join("again.h5"))
    ));
}

/// A skip-gram device whose sub-rounds run `kernels/sgns.cu` on the host emulation
/// (`check_kernels sgns`), holding its own copy of the tables as a GPU would.
struct EmulatedSgns {
    exe: PathBuf,
    dir: PathBuf,
    input: Vec<f32>,
    output: Vec<f32>,
    negatives: Option<shardsage::walk::sgns::FlatNegatives>,
    ring_steps: usize,
}

impl shardsage::walk::sgns::SgnsDevice for EmulatedSgns {
    fn start(
        &mut self,
        emb: &shardsage::walk::sgns::Embeddings,
        negatives: &shardsage::walk::sgns::FlatNegatives,
    ) -> shardsage::Result<()> {
        self.input = emb.input.clone();
        self.output = emb.output.clone();
        self.negatives = Some(shardsage::walk::sgns::FlatNegatives {
            prob: negatives.prob.clone(),
            alias: negatives.alias.clone(),
            offset: negatives.offset.clone(),
        });
        Ok(())
    }

    fn ring_step(&mut self, step: &shardsage::walk::sgns::RingStep<'_>) -> shardsage::Result<f64> {
        let neg = self.negatives.as_ref().expect("started");
        let mut b: Vec<u8> = Vec::new();
        let u64s = |b: &mut Vec<u8>, xs: &[u64]| xs.iter().for_each(|x| b.extend(x.to_le_bytes()));
        let u32s = |b: &mut Vec<u8>, xs: &[u32]| xs.iter().for_each(|x| b.extend(x.to_le_bytes()));
        let f32s = |b: &mut Vec<u8>, xs: &[f32]| xs.iter().for_each(|x| b.extend(x.to_le_bytes()));
        u64s(
            &mut b,
            &[
                step.dim as u64,
                step.blocks as u64,
                step.ranks as u64,
                step.q as u64,
                step.negatives as u64,
                step.seed,
                step.bucket_start.len() as u64 - 1,
                step.input_row.len() as u64,
                neg.prob.len() as u64,
                self.input.len() as u64,
                self.output.len() as u64,
            ],
        );
        f32s(&mut b, &[step.lr.0, step.lr.1]);
        u64s(&mut b, step.in_start);
        u64s(&mut b, step.out_start);
        u64s(&mut b, step.bucket_start);
        u32s(&mut b, step.input_row);
        u32s(&mut b, step.output_row);
        u32s(&mut b, step.word);
        f32s(&mut b, &neg.prob);
        u32s(&mut b, &neg.alias);
        u64s(&mut b, &neg.offset);
        f32s(&mut b, &self.input);
        f32s(&mut b, &self.output);
        let got = common::run_emulated_kernel(&self.exe, &self.dir, "sgns", &b);
        let words = |bytes: &[u8]| -> Vec<u32> {
            bytes
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let (ni, no) = (self.input.len() * 4, self.output.len() * 4);
        self.input = words(&got[..ni]).into_iter().map(f32::from_bits).collect();
        self.output = words(&got[ni..ni + no])
            .into_iter()
            .map(f32::from_bits)
            .collect();
        let loss: Vec<f64> = got[ni + no..]
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(loss.len(), step.blocks * step.blocks);
        self.ring_steps += 1;
        Ok(loss
            .chunks(step.blocks)
            .fold(0f64, |acc, sub| acc + sub.iter().sum::<f64>()))
    }

    fn output_to_host(
        &mut self,
        emb: &mut shardsage::walk::sgns::Embeddings,
    ) -> shardsage::Result<()> {
        emb.output = self.output.clone();
        Ok(())
    }

    fn output_from_host(
        &mut self,
        emb: &shardsage::walk::sgns::Embeddings,
    ) -> shardsage::Result<()> {
        self.output = emb.output.clone();
        Ok(())
    }

    fn tables_to_host(
        &mut self,
        emb: &mut shardsage::walk::sgns::Embeddings,
    ) -> shardsage::Result<()> {
        emb.input = self.input.clone();
        emb.output = self.output.clone();
        Ok(())
    }
}

/// A rank's input and output tables.
type Tables = (Vec<f32>, Vec<f32>);

/// Skip-gram through the device seam with `kernels/sgns.cu` on the host emulation ends with
/// the CPU's tables and round losses bit for bit (the emulation uses the host's `exp`; on a GPU
/// the device's may round differently): node2vec walks on a random graph, a width that is not
/// a multiple of 8, negatives drawn from every block's table, two epochs, and a mid-run resume
/// through the device (its tables loaded again from a checkpoint-like copy).
#[test]
fn skip_gram_on_the_emulated_device_matches_the_cpu_bit_for_bit() {
    use shardsage::walk::random_walks_from;
    use shardsage::walk::sgns::{train, Embeddings, SgnsConfig, SgnsPosition};
    use shardsage::walk::HostTrials;
    let test = "skip_gram_on_the_emulated_device_matches_the_cpu_bit_for_bit";
    let Some((dir, exe)) = common::kernel_emulation(test) else {
        return;
    };
    let part = common::random_part(400, 6, 5, 1, 0, 0);
    let comm = Comm::single();
    let g = DistGraph::new(&part, &comm, 0).unwrap();
    let walk = WalkConfig {
        length: 10,
        walks_per_node: 3,
        p: 1.0,
        q: 0.5,
        seed: 3,
    };
    let cfg = SgnsConfig {
        dim: 20,
        window: 3,
        negatives: 4,
        lr: 0.025,
        epochs: 2,
        episode_positions: 0,
        blocks: 4,
        sample: 1e-3,
        seed: 3,
    };
    let scanner = HostTrials::of(&part);
    let run = |device: Option<&mut EmulatedSgns>,
               start: SgnsPosition,
               emb: &mut Embeddings,
               stop_after: Option<usize>|
     -> (Vec<u64>, Option<Tables>) {
        let mut losses = Vec::new();
        let mut saved = None;
        let result = train(
            &g,
            &cfg,
            &walk,
            emb,
            start,
            &mut |first, sink| random_walks_from(&g, &walk, &scanner, first, sink),
            &mut |r| {
                losses.push(r.loss.to_bits());
                if stop_after == Some(losses.len()) {
                    saved = Some((r.tables)());
                    return Err(shardsage::Error::Stopped("test".into()));
                }
                Ok(())
            },
            &|| false,
            device.map(|d| d as &mut dyn shardsage::walk::sgns::SgnsDevice),
        );
        match result {
            Ok(()) | Err(shardsage::Error::Stopped(_)) => (losses, saved),
            Err(e) => panic!("{e}"),
        }
    };
    let mut host = Embeddings::init(&g, cfg.dim, cfg.seed);
    let (host_losses, _) = run(None, SgnsPosition::default(), &mut host, None);
    let mut emulated = EmulatedSgns {
        exe,
        dir: dir.path().to_path_buf(),
        input: Vec::new(),
        output: Vec::new(),
        negatives: None,
        ring_steps: 0,
    };
    let mut dev = Embeddings::init(&g, cfg.dim, cfg.seed);
    let (dev_losses, _) = run(Some(&mut emulated), SgnsPosition::default(), &mut dev, None);
    assert_eq!(host_losses.len(), 6);
    assert!(
        emulated.ring_steps >= 6,
        "{} ring steps",
        emulated.ring_steps
    );
    assert_eq!(dev_losses, host_losses, "round losses differ");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&dev.input) == bits(&host.input), "input tables differ");
    assert!(
        bits(&dev.output) == bits(&host.output),
        "output tables differ"
    );
    assert!(host.input.iter().all(|x| x.is_finite()));
    // Stopped after round 2 of epoch 1, the tables as a checkpoint holds them, resumed on the
    // device: the same end.
    let mut cut = Embeddings::init(&g, cfg.dim, cfg.seed);
    let (_, saved) = run(
        Some(&mut emulated),
        SgnsPosition::default(),
        &mut cut,
        Some(2),
    );
    (cut.input, cut.output) = saved.expect("tables at the stop");
    let (resumed, _) = run(
        Some(&mut emulated),
        SgnsPosition {
            epoch: 0,
            round: 2,
            episode: 0,
        },
        &mut cut,
        None,
    );
    assert_eq!(resumed, host_losses[2..].to_vec());
    assert!(
        bits(&cut.input) == bits(&host.input),
        "resumed input tables differ"
    );
}

/// Walks and skip-gram read parts without the features, the training edges and the fixed
/// negatives (most of a part's memory on big graphs); the evaluation reads the negatives alone
/// later. What is read is what a full read gives.
#[test]
fn parts_read_for_walks_skip_features_training_edges_and_negatives() {
    use shardsage::graph::loader::{load_rank_parts, load_rank_parts_selected};
    use shardsage::graph::store::PartSelection;
    let full = load_rank_parts(parts(), 1, 2).unwrap();
    let walks = load_rank_parts_selected(parts(), 1, 2, PartSelection::WALKS).unwrap();
    assert!(!full.features.is_empty() && !full.train_edges.is_empty());
    assert!(!full.valid_neg.is_empty() && !full.test_neg.is_empty());
    assert!(walks.features.is_empty() && walks.train_edges.is_empty());
    assert!(walks.valid_neg.is_empty() && walks.test_neg.is_empty());
    assert_eq!(walks.indptr, full.indptr);
    assert_eq!(walks.indices, full.indices);
    assert_eq!(walks.orig_id, full.orig_id);
    assert_eq!(walks.valid_edges, full.valid_edges);
    assert_eq!(walks.test_edges, full.test_edges);
    assert_eq!(walks.num_neg, full.num_neg);
    assert_eq!(walks.meta.node_offset, full.meta.node_offset);
    let negatives = PartSelection {
        negatives: true,
        ..PartSelection::WALKS
    };
    let eval = load_rank_parts_selected(parts(), 1, 2, negatives).unwrap();
    assert_eq!(eval.valid_neg, full.valid_neg);
    assert_eq!(eval.test_neg, full.test_neg);
    assert!(eval.features.is_empty());
}
