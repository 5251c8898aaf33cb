//! Finite-difference checks of every hand-written backward (SAGE layer, predictor, losses, the
//! whole model for both tasks), dropout mask consistency, Adam against a hand-computed step,
//! bit-identical gradients across thread counts, and consistency of the inference API.

mod common;

use shardsage::backend::prelude::*;
use shardsage::backend::{CpuBackend, DeviceBlock, DropoutKey};
use shardsage::graph::store::GraphPart;
use shardsage::nn::loss::{bce_reference, softmax_xent_reference};
use shardsage::nn::predictor::{Linear, LinkPredictor};
use shardsage::nn::sage::SageLayer;
use shardsage::nn::{
    Adam, AdamConfig, Model, ModelConfig, ParamInit, ParamKind, ParamLayout, StepCtx, Task,
};
use shardsage::sample::rng::{hash, unit_f32, Purpose};
use shardsage::sample::{
    dedup_first_seen, Block, LocalCsr, NeighborSampler, SampledBlocks, SamplingRule,
};
use shardsage::Error;

fn rand_vec(n: usize, salt: u64, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (2.0 * unit_f32(hash(17, salt, 0, 0, i as u64, 0)) - 1.0) * scale)
        .collect()
}

/// Central differences of `f` at `x` for the coordinates `idxs`, using the step actually
/// representable in f32.
fn numeric_grad(f: &mut dyn FnMut(&[f32]) -> f64, x: &[f32], idxs: &[usize], h: f32) -> Vec<f64> {
    let mut xs = x.to_vec();
    idxs.iter()
        .map(|&i| {
            let orig = xs[i];
            xs[i] = orig + h;
            let (up, fp) = (xs[i], f(&xs));
            xs[i] = orig - h;
            let (dn, fm) = (xs[i], f(&xs));
            xs[i] = orig;
            (fp - fm) / (up as f64 - dn as f64)
        })
        .collect()
}

/// Asserts `|analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|)` per coordinate.
fn assert_close(
    what: &str,
    analytic: &[f32],
    numeric: &[f64],
    idxs: &[usize],
    rtol: f64,
    atol: f64,
) {
    let mut worst = 0.0f64;
    for (k, &i) in idxs.iter().enumerate() {
        let (a, n) = (analytic[i] as f64, numeric[k]);
        let err = (a - n).abs();
        let tol = atol + rtol * a.abs().max(n.abs());
        assert!(err <= tol, "{what}[{i}]: analytic {a} vs numeric {n}");
        worst = worst.max(err / tol);
    }
    eprintln!(
        "{what}: {} coordinates, worst error {worst:.3} of tolerance",
        idxs.len()
    );
}

/// A random undirected graph of `n` nodes (node 0 isolated), one part, with features.
fn random_graph(n: usize, avg_deg: usize, feat_dim: usize, seed: u64) -> GraphPart {
    common::random_part(n, avg_deg, seed, 1, 0, feat_dim)
}

/// A link-prediction batch: `num_pairs` positive and as many negative pairs over random nodes
/// (node 0, isolated, included), sampled blocks and the gathered input features.
struct LinkBatch {
    blocks: SampledBlocks,
    features: Vec<f32>,
    pos: Vec<(u32, u32)>,
    neg: Vec<(u32, u32)>,
}

fn link_batch(part: &GraphPart, fanouts: Vec<i32>, num_pairs: usize, salt: u64) -> LinkBatch {
    link_batch_with(part, fanouts, num_pairs, salt, SamplingRule::default())
}

fn link_batch_with(
    part: &GraphPart,
    fanouts: Vec<i32>,
    num_pairs: usize,
    salt: u64,
    rule: SamplingRule,
) -> LinkBatch {
    let n = part.num_local_nodes() as u64;
    let mut ends: Vec<u64> = vec![0];
    for i in 0..(4 * num_pairs) as u64 {
        ends.push(hash(5, salt, 0, 3, i, 0) % n);
    }
    ends.truncate(4 * num_pairs);
    let (seeds, pos_of) = dedup_first_seen(&ends);
    let pairs: Vec<(u32, u32)> = pos_of.chunks(2).map(|c| (c[0], c[1])).collect();
    let (pos, neg) = pairs.split_at(num_pairs);
    let blocks = NeighborSampler::new(fanouts, 3)
        .with_rule(rule)
        .sample(&LocalCsr::new(part), &seeds, 1, 2)
        .unwrap();
    let f = part.meta.feature_dim as usize;
    let features = blocks
        .input_nodes()
        .iter()
        .flat_map(|&v| part.feature_row(v).to_vec())
        .collect();
    LinkBatch {
        blocks,
        features,
        pos: pos.to_vec(),
        neg: neg.to_vec(),
    }
    .check(f)
}

impl LinkBatch {
    fn check(self, f: usize) -> Self {
        assert_eq!(self.features.len(), self.blocks.input_nodes().len() * f);
        self
    }
}

fn sage_setup() -> (Block, ParamLayout, SageLayer) {
    // 4 destinations (the third has no neighbours) over 9 sources.
    let block = Block::new(
        vec![10, 11, 12, 13, 14, 15, 16, 17, 18],
        4,
        vec![0, 3, 5, 5, 9],
        vec![4, 5, 1, 6, 0, 7, 8, 2, 4],
    )
    .unwrap();
    let (i, o) = (5, 6);
    let mut layout = ParamLayout::default();
    let weights = layout.push("w_self", i, o, ParamKind::Weight);
    layout.push("w_neigh", i, o, ParamKind::Weight);
    let bias = layout.push("bias", 1, o, ParamKind::Bias { fan_in: i });
    let layer = SageLayer {
        in_dim: i,
        out_dim: o,
        weights,
        bias,
        activation: true,
    };
    (block, layout, layer)
}

#[test]
fn sage_layer_gradients_match_finite_differences() {
    let be = CpuBackend::new(2).unwrap();
    let (block, layout, layer) = sage_setup();
    let db = DeviceBlock::upload(&be, &block).unwrap();
    let mut params = layout.init(1, ParamInit::Glorot);
    // Non-zero biases so the ReLU sees both signs.
    for (k, v) in params[layout.get("bias").unwrap().range()]
        .iter_mut()
        .enumerate()
    {
        *v = 0.1 * (k as f32 - 2.5);
    }
    let h_src = rand_vec(block.num_src() * layer.in_dim, 1, 1.0);
    let r = rand_vec(block.num_dst * layer.out_dim, 2, 1.0);
    let key = DropoutKey {
        seed: 4,
        epoch: 0,
        step: 1,
        purpose: Purpose::Dropout as u64,
        p: 0.3,
    };
    let loss = |p: &[f32], h: &[f32]| -> f64 {
        let fwd = layer
            .forward(&be, &p.to_vec(), &db, &h.to_vec(), Some(key))
            .unwrap();
        fwd.out
            .iter()
            .zip(&r)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    };
    let fwd = layer.forward(&be, &params, &db, &h_src, Some(key)).unwrap();
    assert!(fwd.out.contains(&0.0) && fwd.out.iter().any(|&v| v > 0.0));
    let mut grad_out = r.clone();
    let mut grads = vec![f32::NAN; layout.total_len()];
    let grad_h = layer
        .backward(
            &be,
            &params,
            &db,
            &fwd,
            &mut grad_out,
            Some(key),
            &mut grads,
            true,
        )
        .unwrap()
        .unwrap();
    let idx: Vec<usize> = (0..params.len()).collect();
    let num = numeric_grad(&mut |p| loss(p, &h_src), &params, &idx, 1e-3);
    assert_close("sage params", &grads, &num, &idx, 2e-3, 2e-4);
    let idx: Vec<usize> = (0..h_src.len()).collect();
    let num = numeric_grad(&mut |h| loss(&params, h), &h_src, &idx, 1e-3);
    assert_close("sage inputs", &grad_h, &num, &idx, 2e-3, 2e-4);
    // Without the input gradient the parameter gradients are the same.
    let mut grad_out = r.clone();
    let mut grads2 = vec![f32::NAN; layout.total_len()];
    let none = layer
        .backward(
            &be,
            &params,
            &db,
            &fwd,
            &mut grad_out,
            Some(key),
            &mut grads2,
            false,
        )
        .unwrap();
    assert!(none.is_none());
    assert_eq!(grads, grads2);
}

#[test]
fn predictor_gradients_match_finite_differences() {
    let be = CpuBackend::new(1).unwrap();
    let (d, rows) = (6, 5);
    let mut layout = ParamLayout::default();
    let mut layers = Vec::new();
    for (l, out) in [d, d, 1].into_iter().enumerate() {
        let weight = layout.push(format!("pred.{l}.weight"), d, out, ParamKind::Weight);
        let bias = layout.push(
            format!("pred.{l}.bias"),
            1,
            out,
            ParamKind::Bias { fan_in: d },
        );
        layers.push(Linear {
            in_dim: d,
            out_dim: out,
            weight,
            bias,
        });
    }
    let pred = LinkPredictor { layers };
    let mut params = layout.init(3, ParamInit::Glorot);
    for e in &layout.entries {
        if matches!(e.kind, ParamKind::Bias { .. }) {
            params[e.range()].copy_from_slice(&rand_vec(e.len(), e.offset as u64, 0.2));
        }
    }
    let x0 = rand_vec(rows * d, 7, 1.5);
    let r = rand_vec(rows, 8, 1.0);
    let loss = |p: &[f32], x: &[f32]| -> f64 {
        let acts = pred.forward(&be, &p.to_vec(), &x.to_vec(), rows).unwrap();
        acts.last()
            .unwrap()
            .iter()
            .zip(&r)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum()
    };
    let acts = pred.forward(&be, &params, &x0, rows).unwrap();
    let mut grads = vec![f32::NAN; layout.total_len()];
    let gx = pred
        .backward(&be, &params, &x0, &acts, rows, r.clone(), &mut grads)
        .unwrap();
    let idx: Vec<usize> = (0..params.len()).collect();
    let num = numeric_grad(&mut |p| loss(p, &x0), &params, &idx, 1e-3);
    assert_close("predictor params", &grads, &num, &idx, 2e-3, 2e-4);
    let idx: Vec<usize> = (0..x0.len()).collect();
    let num = numeric_grad(&mut |x| loss(&params, x), &x0, &idx, 1e-3);
    assert_close("predictor input", &gx, &num, &idx, 2e-3, 2e-4);
}

#[test]
fn bce_with_logits_matches_reference_and_is_stable() {
    let be = CpuBackend::new(2).unwrap();
    let x = vec![-30.0f32, -2.0, -0.1, 0.0, 0.5, 3.0, 25.0, 1.25];
    let y = vec![1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
    let mut grad = vec![f32::NAN; x.len()];
    let loss = be.bce_with_logits(&x, &y, 0.25, &mut grad).unwrap();
    let want: f64 = x
        .iter()
        .zip(&y)
        .map(|(a, b)| bce_reference(*a as f64, *b as f64))
        .sum();
    assert!(
        (loss - want).abs() < 1e-9 * want.max(1.0),
        "{loss} vs {want}"
    );
    for i in 0..x.len() {
        let h = 1e-4;
        let fd = (bce_reference(x[i] as f64 + h, y[i] as f64)
            - bce_reference(x[i] as f64 - h, y[i] as f64))
            / (2.0 * h);
        assert!(
            (grad[i] as f64 - 0.25 * fd).abs() < 1e-6,
            "grad[{i}] {} vs {}",
            grad[i],
            0.25 * fd
        );
    }
    // Extreme logits: finite loss (|x| for the wrong label) and bounded gradients.
    let x = vec![1000.0f32, -1000.0, 1000.0, -1000.0];
    let y = vec![0.0f32, 1.0, 1.0, 0.0];
    let mut grad = vec![0.0; 4];
    let loss = be.bce_with_logits(&x, &y, 1.0, &mut grad).unwrap();
    assert!((loss - 2000.0).abs() < 1e-6, "{loss}");
    assert_eq!(grad, vec![1.0, -1.0, 0.0, 0.0]);
}

#[test]
fn softmax_cross_entropy_matches_reference_and_is_stable() {
    let be = CpuBackend::new(2).unwrap();
    let (rows, classes) = (4, 5);
    let x = rand_vec(rows * classes, 9, 3.0);
    let labels = vec![0u32, 4, 2, 2];
    let mut grad = vec![f32::NAN; x.len()];
    let loss = be
        .softmax_xent(&x, classes, &labels, 0.5, &mut grad)
        .unwrap();
    let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let row_loss = |xd: &[f64], r: usize| {
        softmax_xent_reference(&xd[r * classes..(r + 1) * classes], labels[r] as usize)
    };
    let want: f64 = (0..rows).map(|r| row_loss(&xd, r)).sum();
    assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
    for i in 0..x.len() {
        let (r, h) = (i / classes, 1e-5);
        let mut xp = xd.clone();
        xp[i] += h;
        let mut xm = xd.clone();
        xm[i] -= h;
        let fd = (row_loss(&xp, r) - row_loss(&xm, r)) / (2.0 * h);
        assert!((grad[i] as f64 - 0.5 * fd).abs() < 1e-6, "grad[{i}]");
    }
    let x = vec![1000.0f32, 0.0, -1000.0];
    let mut grad = vec![0.0; 3];
    let loss = be.softmax_xent(&x, 3, &vec![1], 1.0, &mut grad).unwrap();
    assert!(
        (loss - 1000.0).abs() < 1e-3 && grad.iter().all(|g| g.is_finite()),
        "{loss} {grad:?}"
    );
    assert!(be.softmax_xent(&x, 3, &vec![3], 1.0, &mut grad).is_err());
}

fn small_config(task: Task) -> ModelConfig {
    ModelConfig {
        task,
        in_dim: 6,
        hidden: 5,
        num_layers: 2,
        dropout: 0.25,
        input_dropout: 0.2,
        predictor_layers: 2,
        num_classes: 3,
        init: ParamInit::default(),
    }
}

/// Randomises the biases (zero at init) so every ReLU sees both signs.
fn perturbed_params(model: &Model<CpuBackend>, seed: u64) -> Vec<f32> {
    let mut p = model.init_params(seed);
    for e in &model.layout().entries {
        if matches!(e.kind, ParamKind::Bias { .. }) {
            p[e.range()].copy_from_slice(&rand_vec(e.len(), e.offset as u64, 0.3));
        }
    }
    p
}

#[test]
fn whole_model_link_gradients_match_finite_differences() {
    for rule in [SamplingRule::Subgraph, SamplingRule::PerLayer] {
        whole_model_link_gradients(rule);
    }
}

fn whole_model_link_gradients(rule: SamplingRule) {
    let be = CpuBackend::new(2).unwrap();
    let part = random_graph(80, 4, 6, 1);
    let batch = link_batch_with(&part, vec![3, 2], 6, 0, rule);
    let model = Model::<CpuBackend>::new(small_config(Task::LinkPrediction)).unwrap();
    let params = perturbed_params(&model, 2);
    let ctx = StepCtx {
        seed: 5,
        epoch: 1,
        step: 2,
        train: true,
    };
    let scale = 0.5f32;
    let mut scratch = vec![0.0f32; model.num_params()];
    let mut loss = |p: &[f32]| -> f64 {
        let s = model
            .link_step(
                &be,
                &p.to_vec(),
                &mut scratch,
                &batch.blocks,
                None,
                &batch.features,
                &batch.pos,
                &batch.neg,
                scale,
                ctx,
            )
            .unwrap();
        s.loss_sum * scale as f64
    };
    let mut grads = vec![f32::NAN; model.num_params()];
    let stats = model
        .link_step(
            &be,
            &params,
            &mut grads,
            &batch.blocks,
            None,
            &batch.features,
            &batch.pos,
            &batch.neg,
            scale,
            ctx,
        )
        .unwrap();
    assert_eq!(stats.count, 12);
    assert!(grads.iter().all(|g| g.is_finite()));
    let idx: Vec<usize> = (0..params.len()).collect();
    // A step of 1e-3 crosses a ReLU kink of the subgraph batch (the differences converge to
    // the analytic value as the step shrinks); 2e-4 stays clear of it.
    let num = numeric_grad(&mut loss, &params, &idx, 2e-4);
    assert_close(
        &format!("link model ({rule:?})"),
        &grads,
        &num,
        &idx,
        5e-3,
        5e-4,
    );
    // Every tensor receives gradient.
    for e in &model.layout().entries {
        assert!(
            grads[e.range()].iter().any(|&g| g != 0.0),
            "{} has zero gradient",
            e.name
        );
    }
}

#[test]
fn whole_model_node_gradients_match_finite_differences() {
    let be = CpuBackend::new(2).unwrap();
    let part = random_graph(70, 4, 6, 2);
    let seeds: Vec<u64> = vec![0, 3, 9, 14, 22, 41, 57, 69];
    let labels: Vec<u32> = seeds.iter().map(|&s| (s % 3) as u32).collect();
    let blocks = NeighborSampler::new(vec![3, 3], 1)
        .sample(&LocalCsr::new(&part), &seeds, 0, 4)
        .unwrap();
    let features: Vec<f32> = blocks
        .input_nodes()
        .iter()
        .flat_map(|&v| part.feature_row(v).to_vec())
        .collect();
    let model = Model::<CpuBackend>::new(small_config(Task::NodeClassification)).unwrap();
    let params = perturbed_params(&model, 3);
    let ctx = StepCtx {
        seed: 6,
        epoch: 0,
        step: 4,
        train: true,
    };
    let mut scratch = vec![0.0f32; model.num_params()];
    let mut loss = |p: &[f32]| -> f64 {
        model
            .node_step(
                &be,
                &p.to_vec(),
                &mut scratch,
                &blocks,
                None,
                &features,
                &labels,
                1.0,
                ctx,
            )
            .unwrap()
            .loss_sum
    };
    let mut grads = vec![f32::NAN; model.num_params()];
    let stats = model
        .node_step(
            &be, &params, &mut grads, &blocks, None, &features, &labels, 1.0, ctx,
        )
        .unwrap();
    assert_eq!(stats.count, seeds.len());
    let idx: Vec<usize> = (0..params.len()).collect();
    let num = numeric_grad(&mut loss, &params, &idx, 1e-3);
    assert_close("node model", &grads, &num, &idx, 5e-3, 5e-4);
}

#[test]
fn dropout_forward_and_backward_use_the_same_mask() {
    let be = CpuBackend::new(2).unwrap();
    let (rows, cols) = (60, 50);
    let ids: Vec<u32> = (1000..1000 + rows as u32 + 5).collect();
    let key = DropoutKey {
        seed: 1,
        epoch: 2,
        step: 3,
        purpose: Purpose::Dropout as u64 + 1,
        p: 0.3,
    };
    let mut fwd = vec![1.0f32; rows * cols];
    be.dropout_fwd(&mut fwd, rows, cols, &ids, key).unwrap();
    let mut bwd = vec![1.0f32; rows * cols];
    be.dropout_bwd(&mut bwd, rows, cols, &ids, key).unwrap();
    assert_eq!(fwd, bwd);
    let scale = 1.0f32 / 0.7;
    assert!(fwd.iter().all(|&v| v == 0.0 || v == scale));
    let dropped = fwd.iter().filter(|&&v| v == 0.0).count() as f64 / fwd.len() as f64;
    assert!((dropped - 0.3).abs() < 0.04, "dropped share {dropped}");
    // The mask is keyed by the row's node id: the same node gets the same mask in another batch.
    let mut one = vec![1.0f32; cols];
    be.dropout_fwd(&mut one, 1, cols, &vec![1007], key).unwrap();
    assert_eq!(one, fwd[7 * cols..8 * cols]);
    let mut other = vec![1.0f32; rows * cols];
    be.dropout_fwd(
        &mut other,
        rows,
        cols,
        &ids,
        DropoutKey {
            purpose: key.purpose + 1,
            ..key
        },
    )
    .unwrap();
    assert_ne!(other, fwd);
    assert!(be
        .dropout_fwd(&mut other, rows, cols, &ids, DropoutKey { p: 1.0, ..key })
        .is_err());
}

#[test]
fn adam_matches_a_hand_computed_update() {
    let be = CpuBackend::new(1).unwrap();
    let cfg = AdamConfig {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut p = vec![1.0f32, -2.0, 0.5];
    let grads = [vec![0.1f32, -0.2, 0.0], vec![-0.3f32, 0.05, 0.2]];
    let mut adam = Adam::new(&be, cfg, 3).unwrap();
    let (mut pd, mut m, mut v) = (vec![1.0f64, -2.0, 0.5], [0.0f64; 3], [0.0f64; 3]);
    for (t, g) in grads.iter().enumerate() {
        adam.step(&be, &mut p, g).unwrap();
        let t = t as i32 + 1;
        for i in 0..3 {
            let gi = g[i] as f64 + 0.1 * pd[i];
            m[i] = 0.9 * m[i] + 0.1 * gi;
            v[i] = 0.999 * v[i] + 0.001 * gi * gi;
            let mhat = m[i] / (1.0 - 0.9f64.powi(t));
            let vhat = v[i] / (1.0 - 0.999f64.powi(t));
            pd[i] -= 0.01 * mhat / (vhat.sqrt() + 1e-8);
        }
        for i in 0..3 {
            assert!(
                (p[i] as f64 - pd[i]).abs() < 1e-6,
                "step {t} param {i}: {} vs {}",
                p[i],
                pd[i]
            );
        }
    }
    let state = adam.state(&be).unwrap();
    assert_eq!(state.t, 2);
    let restored = Adam::from_state(&be, cfg, &state).unwrap();
    assert_eq!(
        (restored.m, restored.v, restored.t),
        (adam.m.clone(), adam.v.clone(), 2)
    );
    assert!(Adam::new(&be, AdamConfig { lr: 0.0, ..cfg }, 3).is_err());
}

#[test]
fn link_step_gradients_are_bit_identical_across_thread_counts() {
    let part = random_graph(3000, 12, 32, 4);
    let batch = link_batch(&part, vec![10, 5], 256, 1);
    let cfg = ModelConfig {
        in_dim: 32,
        hidden: 64,
        num_layers: 2,
        dropout: 0.1,
        ..small_config(Task::LinkPrediction)
    };
    let model = Model::<CpuBackend>::new(cfg).unwrap();
    let params = model.init_params(9);
    let ctx = StepCtx {
        seed: 1,
        epoch: 0,
        step: 0,
        train: true,
    };
    let run_on = |be: &CpuBackend| {
        let mut grads = vec![0.0f32; model.num_params()];
        let s = model
            .link_step(
                be,
                &params,
                &mut grads,
                &batch.blocks,
                None,
                &batch.features,
                &batch.pos,
                &batch.neg,
                1.0 / 512.0,
                ctx,
            )
            .unwrap();
        (
            s.loss_sum.to_bits(),
            grads.iter().map(|g| g.to_bits()).collect::<Vec<u32>>(),
        )
    };
    let single = CpuBackend::new(1).unwrap();
    let one = run_on(&single);
    // The second step on the same backend reuses the first step's buffers.
    assert_eq!(one, run_on(&single), "two runs with one thread differ");
    assert_eq!(
        one,
        run_on(&CpuBackend::new(2).unwrap()),
        "one and two threads differ"
    );
}

#[test]
fn inference_api_agrees_with_the_training_forward() {
    let be = CpuBackend::new(2).unwrap();
    let part = random_graph(90, 5, 6, 3);
    let batch = link_batch(&part, vec![-1, -1], 5, 2);
    let model = Model::<CpuBackend>::new(small_config(Task::LinkPrediction)).unwrap();
    let params = perturbed_params(&model, 4);
    let ctx = StepCtx {
        seed: 0,
        epoch: 0,
        step: 0,
        train: false,
    };
    // Layer by layer equals the stacked forward.
    let mut h = batch.features.clone();
    for (l, block) in batch.blocks.blocks.iter().enumerate() {
        h = model.layer_forward(&be, &params, l, block, &h).unwrap();
    }
    let emb = model
        .embed(&be, &params, &batch.blocks, &batch.features, ctx)
        .unwrap();
    assert_eq!(h, emb);
    // Scores of the pairs reproduce the step's loss.
    let hidden = 5;
    let rows = |sel: &dyn Fn(&(u32, u32)) -> u32| -> Vec<f32> {
        batch
            .pos
            .iter()
            .chain(&batch.neg)
            .flat_map(|p| emb[sel(p) as usize * hidden..(sel(p) as usize + 1) * hidden].to_vec())
            .collect()
    };
    let logits = model
        .score_pairs(&be, &params, &rows(&|p| p.0), &rows(&|p| p.1))
        .unwrap();
    let want: f64 = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| bce_reference(x as f64, if i < batch.pos.len() { 1.0 } else { 0.0 }))
        .sum();
    let mut grads = vec![0.0f32; model.num_params()];
    let stats = model
        .link_step(
            &be,
            &params,
            &mut grads,
            &batch.blocks,
            None,
            &batch.features,
            &batch.pos,
            &batch.neg,
            1.0,
            ctx,
        )
        .unwrap();
    assert!(
        (stats.loss_sum - want).abs() < 1e-5,
        "{} vs {want}",
        stats.loss_sum
    );
    let node = Model::<CpuBackend>::new(small_config(Task::NodeClassification)).unwrap();
    let np = node.init_params(1);
    let logits = node.classify(&be, &np, &emb).unwrap();
    assert_eq!(logits.len(), emb.len() / hidden * 3);
    assert!(node.score_pairs(&be, &np, &emb, &emb).is_err());
    assert!(model
        .layer_forward(&be, &params, 2, &batch.blocks.blocks[0], &batch.features)
        .is_err());
}

#[test]
fn model_config_is_validated() {
    let good = small_config(Task::LinkPrediction);
    assert!(good.validate().is_ok());
    for (bad, field) in [
        (
            ModelConfig {
                hidden: 0,
                ..good.clone()
            },
            "hidden",
        ),
        (
            ModelConfig {
                num_layers: 0,
                ..good.clone()
            },
            "num_layers",
        ),
        (
            ModelConfig {
                in_dim: 0,
                ..good.clone()
            },
            "in_dim",
        ),
        (
            ModelConfig {
                dropout: 1.0,
                ..good.clone()
            },
            "dropout",
        ),
        (
            ModelConfig {
                input_dropout: -0.1,
                ..good.clone()
            },
            "input_dropout",
        ),
        (
            ModelConfig {
                predictor_layers: 0,
                ..good.clone()
            },
            "predictor_layers",
        ),
        (
            ModelConfig {
                task: Task::NodeClassification,
                num_classes: 1,
                ..good.clone()
            },
            "num_classes",
        ),
    ] {
        match Model::<CpuBackend>::new(bad) {
            Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
            Err(e) => panic!("{field}: unexpected error {e}"),
            Ok(_) => panic!("{field}: accepted"),
        }
    }
    let model = Model::<CpuBackend>::new(good).unwrap();
    let names: Vec<&str> = model
        .layout()
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "sage.0.w_self",
            "sage.0.w_neigh",
            "sage.0.bias",
            "sage.1.w_self",
            "sage.1.w_neigh",
            "sage.1.bias",
            "pred.0.weight",
            "pred.0.bias",
            "pred.1.weight",
            "pred.1.bias"
        ]
    );
    assert_eq!(
        model.num_params(),
        6 * 5 * 2 + 5 + 5 * 5 * 2 + 5 + 5 * 5 + 5 + 5 + 1
    );
    let p = model.init_params(1);
    assert_eq!(p, model.init_params(1));
    assert_ne!(p, model.init_params(2));
    let limit = (6.0f32 / 11.0).sqrt();
    assert!(p[..30].iter().all(|v| v.abs() <= limit) && p[60..65].iter().all(|&v| v == 0.0));
}
