//! Link-prediction and node-classification metrics on hand-made scores, against a direct
//! reference implementation on random scores with ties, merged across simulated ranks; and the
//! metrics.jsonl writer/reader.

use std::collections::BTreeMap;

use shardsage::eval::link::{rank_of, LinkAccumulator, HITS_AT};
use shardsage::eval::nodeclass::{argmax_rows, NodeClassAccumulator};
use shardsage::sample::rng::{hash, unit_f32};
use shardsage::train::metrics::{read_metrics, EvalRecord, MetricsWriter, Record, StepRecord};

fn metrics_of(pos: &[f32], neg: &[f32], k: usize) -> shardsage::eval::link::LinkMetrics {
    let mut acc = LinkAccumulator::new(k);
    acc.add(pos, neg).unwrap();
    acc.finish()
}

#[test]
fn link_hand_made_cases() {
    // Ties count half: optimistic 0, pessimistic 2, rank 2.
    let m = metrics_of(&[0.5], &[0.5, 0.5, 0.1], 3);
    assert_eq!(m.mrr, 0.5);
    assert_eq!(m.hits[&1], 0.0);
    assert_eq!(m.hits[&3], 1.0);

    // Three queries: rank 1 (all better), rank 4 (all worse, K=3), rank 1.5 (one tie).
    let pos = [0.9, 0.0, 0.3];
    let neg = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.3, 0.2, 0.1];
    let m = metrics_of(&pos, &neg, 3);
    let expected_mrr = (1.0 + 0.25 + 1.0 / 1.5) / 3.0;
    assert!((m.mrr - expected_mrr).abs() < 1e-15, "{}", m.mrr);
    assert_eq!(m.hits[&1], 1.0 / 3.0);
    assert_eq!(m.hits[&3], 2.0 / 3.0);
    assert_eq!(m.hits[&10], 1.0);
    // AUC per query: 1, 0, (2 + 0.5)/3
    let expected_auc = (1.0 + 0.0 + 2.5 / 3.0) / 3.0;
    assert!((m.auc - expected_auc).abs() < 1e-15, "{}", m.auc);
    assert_eq!(m.count, 3);

    let map = m.to_map();
    for key in [
        "mrr", "hits@1", "hits@3", "hits@10", "hits@50", "hits@100", "auc", "count",
    ] {
        assert!(map.contains_key(key), "missing {key}");
    }
}

/// Straightforward OGB-style evaluation: per query, rank and pairwise AUC.
fn reference(pos: &[f32], neg: &[f32], k: usize) -> (f64, BTreeMap<u32, f64>, f64) {
    let mut rr = 0.0;
    let mut hits = BTreeMap::new();
    let mut auc = 0.0;
    for (i, &p) in pos.iter().enumerate() {
        let negs = &neg[i * k..(i + 1) * k];
        let optimistic = negs.iter().filter(|&&n| n > p).count() as f64;
        let pessimistic = negs.iter().filter(|&&n| n >= p).count() as f64;
        let rank = 1.0 + (optimistic + pessimistic) / 2.0;
        assert_eq!(rank, rank_of(p, negs));
        rr += 1.0 / rank;
        for at in HITS_AT {
            *hits.entry(at).or_insert(0.0) += f64::from(u8::from(rank <= f64::from(at)));
        }
        let pairs: f64 = negs
            .iter()
            .map(|&n| {
                if p > n {
                    1.0
                } else if p == n {
                    0.5
                } else {
                    0.0
                }
            })
            .sum();
        auc += pairs / k as f64;
    }
    let n = pos.len() as f64;
    for v in hits.values_mut() {
        *v /= n;
    }
    (rr / n, hits, auc / n)
}

#[test]
fn link_matches_reference_and_merges_exactly() {
    let k = 200;
    let m = 3000;
    // Scores quantised to 1/64 so that ties are frequent.
    let score =
        |purpose: u64, i: u64| (unit_f32(hash(7, 0, 0, purpose, i, 0)) * 64.0).floor() / 64.0;
    let pos: Vec<f32> = (0..m as u64).map(|i| score(1, i) * 0.5 + 0.5).collect();
    let neg: Vec<f32> = (0..(m * k) as u64).map(|i| score(2, i)).collect();

    let whole = metrics_of(&pos, &neg, k);
    let (mrr, hits, auc) = reference(&pos, &neg, k);
    assert!((whole.mrr - mrr).abs() < 1e-12, "{} vs {}", whole.mrr, mrr);
    assert!((whole.auc - auc).abs() < 1e-12, "{} vs {}", whole.auc, auc);
    for (at, v) in &hits {
        assert!((whole.hits[at] - v).abs() < 1e-12, "hits@{at}");
    }
    assert!(
        whole.hits[&1] < whole.hits[&100],
        "data should spread over ranks"
    );

    // Three "ranks" with uneven shares (one empty), batches of odd sizes, summed like an
    // MPI_Allreduce: bit-identical to the single-process result.
    let cuts = [0, 1234, 1234, m];
    let mut total = vec![0.0f64; 2 * k + 1];
    for r in 0..3 {
        let mut acc = LinkAccumulator::new(k);
        let (a, b) = (cuts[r], cuts[r + 1]);
        let mut i = a;
        while i < b {
            let j = (i + 97).min(b);
            acc.add(&pos[i..j], &neg[i * k..j * k]).unwrap();
            i = j;
        }
        for (t, s) in total.iter_mut().zip(acc.sums()) {
            *t += s;
        }
    }
    let merged = LinkAccumulator::from_sums(&total).unwrap().finish();
    assert_eq!(merged.mrr.to_bits(), whole.mrr.to_bits());
    assert_eq!(merged.auc.to_bits(), whole.auc.to_bits());
    assert_eq!(merged.hits, whole.hits);
    assert_eq!(merged.count, m as u64);
}

#[test]
fn link_rejects_bad_shapes() {
    let mut acc = LinkAccumulator::new(4);
    let err = acc.add(&[0.1, 0.2], &[0.0; 7]).unwrap_err().to_string();
    assert!(err.contains("8 negative scores"), "{err}");
    let mut other = LinkAccumulator::new(5);
    assert!(other.merge(&acc).is_err());
}

#[test]
fn node_classification_accuracy_and_macro_f1() {
    let mut acc = NodeClassAccumulator::new(4);
    // class 0: TP 1, FN 1, FP 1 -> F1 0.5; class 1: TP 2, FP 1 -> 0.8; class 2: FN 1 -> 0;
    // class 3 appears nowhere and is not averaged.
    acc.add(&[0, 1, 1], &[0, 0, 1]).unwrap();
    acc.add(&[1, 0], &[1, 2]).unwrap();
    let m = acc.finish();
    assert_eq!(m.count, 5);
    assert!((m.accuracy - 0.6).abs() < 1e-15);
    assert!(
        (m.macro_f1 - (0.5 + 0.8 + 0.0) / 3.0).abs() < 1e-15,
        "{}",
        m.macro_f1
    );

    // A class that only appears among predictions counts with F1 0.
    let mut acc = NodeClassAccumulator::new(3);
    acc.add(&[0, 2], &[0, 0]).unwrap();
    let m = acc.finish();
    // class 0: TP 1, FN 1 -> 2/3; class 2: FP 1 -> 0
    assert!(
        (m.macro_f1 - (2.0 / 3.0) / 2.0).abs() < 1e-15,
        "{}",
        m.macro_f1
    );

    // Merge by sums.
    let mut a = NodeClassAccumulator::new(3);
    let mut b = NodeClassAccumulator::new(3);
    a.add(&[0, 1], &[0, 2]).unwrap();
    b.add(&[2, 2], &[2, 1]).unwrap();
    let sums: Vec<f64> = a.sums().iter().zip(b.sums()).map(|(x, y)| x + y).collect();
    let mut direct = NodeClassAccumulator::new(3);
    direct.add(&[0, 1, 2, 2], &[0, 2, 2, 1]).unwrap();
    assert_eq!(NodeClassAccumulator::from_sums(&sums).unwrap(), direct);

    assert!(
        acc.add(&[3], &[0]).is_err(),
        "prediction outside the classes"
    );
    assert_eq!(argmax_rows(&[0.1, 0.9, 0.0, 2.0, 2.0, 1.0], 3), vec![1, 0]);
}

#[test]
fn metrics_jsonl_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut step = StepRecord {
        epoch: 1,
        step: 7,
        global_step: 42,
        loss: 0.693,
        lr: 5e-4,
        seeds_per_s: 1000.0,
        peak_rss_bytes: 123456789,
        ..Default::default()
    };
    step.extra
        .insert("time_comm_s".into(), serde_json::json!(0.25));
    step.extra
        .insert("bytes_exchanged".into(), serde_json::json!(1u64 << 40));
    let mut diverged = step.clone();
    diverged.global_step = 43;
    diverged.loss = f64::NAN;
    let mut m = LinkAccumulator::new(1);
    m.add(&[1.0, 0.0], &[0.5, 0.5]).unwrap();
    let eval = EvalRecord {
        epoch: 1,
        global_step: 43,
        split: "valid".into(),
        metrics: m.finish().to_map(),
        extra: BTreeMap::new(),
    };
    {
        let mut w = MetricsWriter::create(dir.path()).unwrap();
        w.step(&step).unwrap();
        w.step(&diverged).unwrap();
        w.eval(&eval).unwrap();
        w.write(&Record::Other(serde_json::json!({"kind": "comm", "x": 1})))
            .unwrap();
    }
    let path = dir.path().join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 4);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["kind"], "step");
    assert_eq!(first["time_comm_s"], 0.25, "extra fields are top-level");
    assert_eq!(first["time_sample_s"], 0.0);

    let records = read_metrics(&path).unwrap();
    assert_eq!(records[0], Record::Step(step.clone()));
    let Record::Step(d) = &records[1] else {
        panic!("{:?}", records[1])
    };
    assert!(d.loss.is_nan());
    assert_eq!(records[2], Record::Eval(eval.clone()));
    assert!(matches!(&records[3], Record::Other(v) if v["kind"] == "comm"));

    // A crash mid-line: the reader skips the partial last line, append() cuts it off.
    std::fs::write(&path, format!("{text}{{\"kind\":\"step\",\"ep")).unwrap();
    assert_eq!(read_metrics(&path).unwrap().len(), 4);
    {
        let mut w = MetricsWriter::append(dir.path()).unwrap();
        w.step(&step).unwrap();
    }
    let records = read_metrics(&path).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(records[4], Record::Step(step));

    // A bad line in the middle is an error naming the line.
    std::fs::write(&path, format!("{text}not json\n{text}")).unwrap();
    let err = read_metrics(&path).unwrap_err().to_string();
    assert!(err.contains("metrics.jsonl:5"), "{err}");
}

#[test]
fn append_cuts_a_long_partial_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.jsonl");
    let step = StepRecord {
        global_step: 1,
        loss: 0.5,
        ..Default::default()
    };
    let line = format!("{}\n", Record::Step(step.clone()).to_json());
    let whole = line.repeat(100_000 / line.len() + 1);
    // A partial line longer than the 64 KiB tail that append() reads at a time.
    let partial = format!("{{\"kind\":\"step\",\"pad\":\"{}", "x".repeat(70_000));
    std::fs::write(&path, format!("{whole}{partial}")).unwrap();
    {
        let mut w = MetricsWriter::append(dir.path()).unwrap();
        w.step(&step).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text, format!("{whole}{line}"));

    // An empty file stays a valid start; a file that is one partial line is emptied.
    std::fs::write(&path, "").unwrap();
    MetricsWriter::append(dir.path()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), 0);
    std::fs::write(&path, "{\"kind\"").unwrap();
    MetricsWriter::append(dir.path()).unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), 0);
}
