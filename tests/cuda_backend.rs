//! The CUDA backend against the CPU backend on random inputs: element-wise operations, Adam and
//! reductions bit for bit, GEMMs and aggregation within 1e-5 relative, neighbour sampling and
//! deduplication bit-identical, the block chain's blocks the host sampler's, a whole
//! `Model::link_step` within tolerance and bit-identical across two GPU runs and with chained
//! blocks. Every GPU test prints a reason and returns when there is no driver or
//! device (CI and most development machines); they run on a machine with a GPU.

use std::collections::HashMap;

use shardsage::backend::cuda::{cuda_available, CudaBackend, GpuCsrSource};
use shardsage::backend::prelude::*;
use shardsage::backend::{AdamCoeffs, CpuBackend, DeviceBlock, DropoutKey, PartSampler};
use shardsage::nn::model::{Model, ModelConfig, StepCtx, Task};
use shardsage::nn::ParamInit;
use shardsage::sample::block::Block;
use shardsage::sample::neighbor::{sample_node, NeighborSampler, NeighborSource, SamplingRule};
use shardsage::sample::rng::{below, hash, unit_f32, Purpose, Stream};
use shardsage::Result;

mod common;
use common::{eval_json, printed_checksum, run_ok};

/// The GPU backend, or `None` with the reason printed.
fn gpu(test: &str) -> Option<CudaBackend> {
    if let Err(reason) = cuda_available() {
        eprintln!("SKIPPED {test}: {reason}");
        return None;
    }
    match CudaBackend::try_new() {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

fn cpu() -> CpuBackend {
    CpuBackend::new(2).expect("CPU backend")
}

/// Uniform values in [-1, 1) from the counter-based hash.
fn rand_f32(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| unit_f32(hash(seed, 0, 0, 0, i, 0)) * 2.0 - 1.0)
        .collect()
}

fn rand_below(n: usize, bound: u64, seed: u64) -> Vec<u64> {
    (0..n as u64)
        .map(|i| hash(seed, 1, 0, 0, i, 0) % bound.max(1))
        .collect()
}

fn assert_bits(what: &str, cpu: &[f32], gpu: &[f32]) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: lengths");
    if let Some(i) = (0..cpu.len()).find(|&i| cpu[i].to_bits() != gpu[i].to_bits()) {
        panic!("{what}: element {i} differs: cpu {} gpu {}", cpu[i], gpu[i]);
    }
}

fn assert_close(what: &str, cpu: &[f32], gpu: &[f32], rel: f32) {
    assert_eq!(cpu.len(), gpu.len(), "{what}: lengths");
    let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    for i in 0..cpu.len() {
        // Relative to the value, plus the same share of the largest magnitude for values that
        // cancel (a different summation order moves them by a few ulps of the terms).
        let tol = rel * cpu[i].abs().max(gpu[i].abs()) + rel * scale;
        assert!(
            (cpu[i] - gpu[i]).abs() <= tol,
            "{what}: element {i}: cpu {} gpu {} (tolerance {tol})",
            cpu[i],
            gpu[i]
        );
    }
}

#[test]
fn try_new_explains_why_without_a_gpu() {
    match cuda_available() {
        Ok(()) => eprintln!("SKIPPED try_new_explains_why_without_a_gpu: CUDA is available here"),
        Err(reason) => {
            let err = match CudaBackend::try_new() {
                Ok(_) => panic!("try_new succeeded although CUDA is unavailable: {reason}"),
                Err(e) => e.to_string(),
            };
            assert!(err.starts_with("cuda: "), "a typed Cuda error: {err}");
            assert!(err.contains(&reason), "{err} carries the reason {reason}");
        }
    }
}

#[test]
fn device_hash_is_bit_identical_to_the_cpu_hash() -> Result<()> {
    let Some(g) = gpu("device_hash_is_bit_identical_to_the_cpu_hash") else {
        return Ok(());
    };
    let ids: Vec<u64> = (0..5000u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    for bound in [
        1u64,
        7,
        1000,
        u32::MAX as u64,
        (u32::MAX as u64) + 10,
        u64::MAX,
    ] {
        let (seed, epoch, step, purpose, k) = (123, 4, 56, Purpose::Dropout as u64 + 2, 9);
        let (h, b, u) = g.hash_probe(seed, epoch, step, purpose, &ids, k, bound)?;
        for (i, &id) in ids.iter().enumerate() {
            let want = hash(seed, epoch, step, purpose, id, k);
            assert_eq!(h[i], want, "hash of id {id}");
            assert_eq!(b[i], below(want, bound), "below({want}, {bound})");
            assert_eq!(u[i].to_bits(), unit_f32(want).to_bits(), "unit_f32({want})");
        }
    }
    Ok(())
}

#[test]
fn element_wise_ops_adam_and_reductions_are_bit_identical() -> Result<()> {
    let Some(g) = gpu("element_wise_ops_adam_and_reductions_are_bit_identical") else {
        return Ok(());
    };
    let c = cpu();
    let (rows, cols) = (1000usize, 37usize);
    let x = rand_f32(rows * cols, 1);
    let y = rand_f32(rows * cols, 2);
    let bias = rand_f32(cols + 3, 3);
    let ids: Vec<u32> = (0..rows as u32).map(|i| i * 7 + 3).collect();

    // add_row_bias with a bias view at offset 3, then col_sums into a view at offset 2.
    let (mut xc, mut xg) = (x.clone(), g.upload(&x)?);
    let (bc, bg) = (bias.clone(), g.upload(&bias)?);
    c.add_row_bias(&mut xc, rows, cols, (&bc, 3))?;
    g.add_row_bias(&mut xg, rows, cols, (&bg, 3))?;
    assert_bits("add_row_bias", &xc, &g.download(&xg)?);
    let (mut sc, mut sg) = (vec![0.0; cols + 2], g.zeros(cols + 2)?);
    c.col_sums(&xc, rows, cols, (&mut sc, 2))?;
    g.col_sums(&xg, rows, cols, (&mut sg, 2))?;
    assert_bits("col_sums", &sc, &g.download(&sg)?);

    // axpy, scale, mul, mul_bwd.
    let yg = g.upload(&y)?;
    c.axpy(0.37, &y, &mut xc)?;
    g.axpy(0.37, &yg, &mut xg)?;
    assert_bits("axpy", &xc, &g.download(&xg)?);
    c.scale(-1.7, &mut xc)?;
    g.scale(-1.7, &mut xg)?;
    assert_bits("scale", &xc, &g.download(&xg)?);
    let (mut pc, mut pg) = (vec![0.0; x.len()], g.zeros(x.len())?);
    c.mul(&xc, &y, &mut pc)?;
    g.mul(&xg, &yg, &mut pg)?;
    assert_bits("mul", &pc, &g.download(&pg)?);
    let (mut gac, mut gbc) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let (mut gag, mut gbg) = (g.zeros(x.len())?, g.zeros(x.len())?);
    c.mul_bwd(&xc, &y, &pc, &mut gac, &mut gbc)?;
    g.mul_bwd(&xg, &yg, &pg, &mut gag, &mut gbg)?;
    assert_bits("mul_bwd a", &gac, &g.download(&gag)?);
    assert_bits("mul_bwd b", &gbc, &g.download(&gbg)?);

    // ReLU and dropout, forward and backward.
    c.relu_fwd(&mut xc)?;
    g.relu_fwd(&mut xg)?;
    assert_bits("relu_fwd", &xc, &g.download(&xg)?);
    let (mut grc, mut grg) = (y.clone(), g.upload(&y)?);
    c.relu_bwd(&xc, &mut grc)?;
    g.relu_bwd(&xg, &mut grg)?;
    assert_bits("relu_bwd", &grc, &g.download(&grg)?);
    let key = DropoutKey {
        seed: 11,
        epoch: 2,
        step: 5,
        purpose: Purpose::Dropout as u64 + 1,
        p: 0.3,
    };
    let ids_g = g.upload_u32(&ids)?;
    c.dropout_fwd(&mut xc, rows, cols, &ids, key)?;
    g.dropout_fwd(&mut xg, rows, cols, &ids_g, key)?;
    assert_bits("dropout_fwd", &xc, &g.download(&xg)?);
    c.dropout_bwd(&mut grc, rows, cols, &ids, key)?;
    g.dropout_bwd(&mut grg, rows, cols, &ids_g, key)?;
    assert_bits("dropout_bwd", &grc, &g.download(&grg)?);

    // copy between views, fill.
    let mut dst_c = vec![5.0f32; 100];
    let mut dst_g = g.upload(&dst_c)?;
    c.copy((&xc, 17), (&mut dst_c, 9), 50)?;
    g.copy((&xg, 17), (&mut dst_g, 9), 50)?;
    assert_bits("copy", &dst_c, &g.download(&dst_g)?);
    g.fill(&mut dst_g, -0.25)?;
    assert!(g.download(&dst_g)?.iter().all(|&v| v == -0.25));

    // Adam over three steps, and the f64 reductions.
    let n = 10_000;
    let mut params_c = rand_f32(n, 7);
    let mut params_g = g.upload(&params_c)?;
    let (mut mc, mut vc) = (vec![0.0; n], vec![0.0; n]);
    let (mut mg, mut vg) = (g.zeros(n)?, g.zeros(n)?);
    for t in 1..=3 {
        let grads = rand_f32(n, 100 + t);
        let grads_g = g.upload(&grads)?;
        let coeffs = AdamCoeffs {
            lr: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-4,
            bias1: (1.0 - 0.9f64.powi(t as i32)) as f32,
            bias2: (1.0 - 0.999f64.powi(t as i32)) as f32,
        };
        c.adam_update(&mut params_c, &grads, &mut mc, &mut vc, &coeffs)?;
        g.adam_update(&mut params_g, &grads_g, &mut mg, &mut vg, &coeffs)?;
    }
    assert_bits("adam params", &params_c, &g.download(&params_g)?);
    assert_bits("adam m", &mc, &g.download(&mg)?);
    assert_bits("adam v", &vc, &g.download(&vg)?);
    assert_eq!(c.sum(&params_c)?.to_bits(), g.sum(&params_g)?.to_bits());
    assert_eq!(
        c.sq_norm(&params_c)?.to_bits(),
        g.sq_norm(&params_g)?.to_bits()
    );
    Ok(())
}

#[test]
fn gemm_matches_cpu_for_every_transpose() -> Result<()> {
    let Some(g) = gpu("gemm_matches_cpu_for_every_transpose") else {
        return Ok(());
    };
    let c = cpu();
    let (m, n, k) = (33, 20, 47);
    let a = rand_f32(m * k + 5, 21);
    let b = rand_f32(k * n + 4, 22);
    let (ag, bg) = (g.upload(&a)?, g.upload(&b)?);
    for (trans_a, trans_b) in [(false, false), (true, false), (false, true), (true, true)] {
        for beta in [0.0f32, 0.5] {
            // NaNs in C must not leak through when beta == 0.
            let init: Vec<f32> = if beta == 0.0 {
                vec![f32::NAN; m * n + 3]
            } else {
                rand_f32(m * n + 3, 23)
            };
            let (mut cc, mut cg) = (init.clone(), g.upload(&init)?);
            c.gemm(
                trans_a,
                trans_b,
                m,
                n,
                k,
                0.8,
                (&a, 5),
                (&b, 4),
                beta,
                (&mut cc, 3),
            )?;
            g.gemm(
                trans_a,
                trans_b,
                m,
                n,
                k,
                0.8,
                (&ag, 5),
                (&bg, 4),
                beta,
                (&mut cg, 3),
            )?;
            let got = g.download(&cg)?;
            assert!(
                got[3..].iter().all(|v| v.is_finite()),
                "NaN with beta {beta}"
            );
            assert_close(
                &format!("gemm ta={trans_a} tb={trans_b} beta={beta}"),
                &cc[3..],
                &got[3..],
                1e-5,
            );
        }
    }
    Ok(())
}

/// A random block: `num_dst` destinations (some with no edges) over `num_src` sources.
fn random_block(num_dst: usize, num_src: usize, seed: u64) -> Block {
    let degrees = rand_below(num_dst, 9, seed);
    let mut indptr = vec![0u32];
    let mut indices = Vec::new();
    for (v, &d) in degrees.iter().enumerate() {
        let d = if v % 7 == 0 { 0 } else { d };
        indices.extend(
            rand_below(d as usize, num_src as u64, seed + v as u64)
                .iter()
                .map(|&u| u as u32),
        );
        indptr.push(indices.len() as u32);
    }
    let src_nodes: Vec<u64> = (0..num_src as u64).map(|i| i * 3 + 1).collect();
    Block::new(src_nodes, num_dst, indptr, indices).expect("valid random block")
}

#[test]
fn aggregation_and_gather_match_cpu() -> Result<()> {
    let Some(g) = gpu("aggregation_and_gather_match_cpu") else {
        return Ok(());
    };
    let c = cpu();
    let block = random_block(300, 700, 31);
    let bc = DeviceBlock::upload(&c, &block)?;
    let bgpu = DeviceBlock::upload(&g, &block)?;
    for dim in [16usize, 13] {
        let h = rand_f32(block.num_src() * dim, 32);
        let hg = g.upload(&h)?;
        for layout in [AggLayout::Mean, AggLayout::SelfAndMean] {
            let width = layout.width(dim);
            let (mut oc, mut og) = (
                vec![0.0; block.num_dst * width],
                g.zeros(block.num_dst * width)?,
            );
            c.mean_agg_fwd(&bc, layout, &h, dim, &mut oc)?;
            g.mean_agg_fwd(&bgpu, layout, &hg, dim, &mut og)?;
            assert_close(
                &format!("mean_agg_fwd {layout:?} dim {dim}"),
                &oc,
                &g.download(&og)?,
                1e-5,
            );
            let grad_out = rand_f32(block.num_dst * width, 33);
            let grad_out_g = g.upload(&grad_out)?;
            let (mut gc, mut gg) = (vec![1.0; h.len()], g.upload(&vec![1.0; h.len()])?);
            c.mean_agg_bwd(&bc, layout, &grad_out, dim, &mut gc)?;
            g.mean_agg_bwd(&bgpu, layout, &grad_out_g, dim, &mut gg)?;
            assert_close(
                &format!("mean_agg_bwd {layout:?} dim {dim}"),
                &gc,
                &g.download(&gg)?,
                1e-5,
            );
        }

        let rows: Vec<u32> = rand_below(500, block.num_src() as u64, 34)
            .iter()
            .map(|&r| r as u32)
            .collect();
        let rows_g = g.upload_u32(&rows)?;
        let (mut tc, mut tg) = (vec![0.0; rows.len() * dim], g.zeros(rows.len() * dim)?);
        c.gather_rows(&h, dim, &rows, &mut tc)?;
        g.gather_rows(&hg, dim, &rows_g, &mut tg)?;
        assert_bits(&format!("gather_rows dim {dim}"), &tc, &g.download(&tg)?);
        let bad = g.upload_u32(&[0, block.num_src() as u32])?;
        let mut out = g.zeros(2 * dim)?;
        let err = g
            .gather_rows(&hg, dim, &bad, &mut out)
            .expect_err("row out of range");
        assert!(err.to_string().contains("table rows"), "{err}");

        // Scatter a few rows into a copy of the table, at distinct positions.
        let positions: Vec<u32> = (0..40u32)
            .map(|i| (i * 17 + 3) % block.num_src() as u32)
            .collect();
        let src = rand_f32(positions.len() * dim, 35);
        let (src_g, pos_g) = (g.upload(&src)?, g.upload_u32(&positions)?);
        let (mut sc, mut sg) = (h.clone(), g.upload(&h)?);
        c.scatter_rows(&src, dim, &positions, &mut sc)?;
        g.scatter_rows(&src_g, dim, &pos_g, &mut sg)?;
        assert_bits(&format!("scatter_rows dim {dim}"), &sc, &g.download(&sg)?);
        let bad = g.upload_u32(&[block.num_src() as u32])?;
        let err = g
            .scatter_rows(&g.upload(&src[..dim])?, dim, &bad, &mut sg)
            .expect_err("position out of range");
        assert!(err.to_string().contains("output rows"), "{err}");
    }
    Ok(())
}

#[test]
fn staged_uploads_and_round_trips_keep_every_value() -> Result<()> {
    let Some(g) = gpu("staged_uploads_and_round_trips_keep_every_value") else {
        return Ok(());
    };
    let (free, total) = g.device_memory()?.expect("a GPU reports its memory");
    assert!(free > 0 && free <= total, "free {free} total {total}");
    // Sizes below and above the staging area's limit, and growing ones (the area is regrown).
    for len in [0usize, 1, 1000, 3 << 20, (64 << 20) + 5] {
        let values = rand_f32(len, len as u64);
        let mut buf = g.upload_with(len, &mut |dst: &mut [f32]| {
            dst.copy_from_slice(&values);
            Ok(())
        })?;
        assert_bits(&format!("upload_with {len}"), &values, &g.download(&buf)?);
        g.host_round_trip(&mut buf, &mut |host: &mut [f32]| {
            assert_bits(&format!("staged copy {len}"), &values, host);
            host.iter_mut().for_each(|v| *v *= 2.0);
            Ok(())
        })?;
        let doubled: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
        assert_bits(&format!("round trip {len}"), &doubled, &g.download(&buf)?);
    }
    Ok(())
}

#[test]
fn losses_match_cpu() -> Result<()> {
    let Some(g) = gpu("losses_match_cpu") else {
        return Ok(());
    };
    let c = cpu();
    let n = 9000;
    let logits: Vec<f32> = rand_f32(n, 41).iter().map(|v| v * 12.0).collect();
    let labels: Vec<f32> = rand_below(n, 2, 42).iter().map(|&v| v as f32).collect();
    let (lg, yg) = (g.upload(&logits)?, g.upload(&labels)?);
    let (mut gc, mut gg) = (vec![0.0; n], g.zeros(n)?);
    let loss_c = c.bce_with_logits(&logits, &labels, 0.01, &mut gc)?;
    let loss_g = g.bce_with_logits(&lg, &yg, 0.01, &mut gg)?;
    assert!(
        (loss_c - loss_g).abs() <= 1e-9 * loss_c.abs(),
        "bce loss {loss_c} vs {loss_g}"
    );
    assert_close("bce grad", &gc, &g.download(&gg)?, 1e-5);

    let (rows, classes) = (700, 11);
    let x: Vec<f32> = rand_f32(rows * classes, 43)
        .iter()
        .map(|v| v * 8.0)
        .collect();
    let y: Vec<u32> = rand_below(rows, classes as u64, 44)
        .iter()
        .map(|&v| v as u32)
        .collect();
    let (xg, ylg) = (g.upload(&x)?, g.upload_u32(&y)?);
    let (mut gc, mut gg) = (vec![0.0; x.len()], g.zeros(x.len())?);
    let loss_c = c.softmax_xent(&x, classes, &y, 0.5, &mut gc)?;
    let loss_g = g.softmax_xent(&xg, classes, &ylg, 0.5, &mut gg)?;
    assert!(
        (loss_c - loss_g).abs() <= 1e-6 * loss_c.abs(),
        "xent loss {loss_c} vs {loss_g}"
    );
    assert_close("softmax_xent grad", &gc, &g.download(&gg)?, 1e-5);
    let bad = g.upload_u32(&vec![classes as u32; rows])?;
    let err = g
        .softmax_xent(&xg, classes, &bad, 0.5, &mut gg)
        .expect_err("label out of range");
    assert!(err.to_string().contains("classes"), "{err}");
    Ok(())
}

/// A random CSR over `n` nodes with degrees 0..=200 (global neighbour ids).
fn random_csr(n: usize, seed: u64) -> (Vec<u64>, Vec<u32>) {
    let degrees = rand_below(n, 201, seed);
    let mut indptr = vec![0u64];
    let mut indices = Vec::new();
    for (i, &d) in degrees.iter().enumerate() {
        let d = if i % 10 == 0 { 0 } else { d };
        indices.extend(
            rand_below(d as usize, 1 << 20, seed * 31 + i as u64)
                .iter()
                .map(|&v| v as u32),
        );
        indptr.push(indices.len() as u64);
    }
    (indptr, indices)
}

/// The host reference: a `NeighborSource` over the same CSR.
struct HostCsr {
    first: u64,
    indptr: Vec<u64>,
    indices: Vec<u32>,
}

impl HostCsr {
    fn neighbors(&self, node: u64) -> &[u32] {
        let i = (node - self.first) as usize;
        &self.indices[self.indptr[i] as usize..self.indptr[i + 1] as usize]
    }
}

impl NeighborSource for HostCsr {
    fn sample_neighbors(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> Result<()> {
        out_counts.clear();
        out_nbrs.clear();
        let mut scratch = Vec::new();
        for &n in nodes {
            sample_node(self.neighbors(n), fanout, stream.for_id(n), &mut scratch);
            out_counts.push(scratch.len() as u32);
            out_nbrs.extend_from_slice(&scratch);
        }
        Ok(())
    }
}

#[test]
fn sampling_and_dedup_are_bit_identical_to_cpu() -> Result<()> {
    let Some(g) = gpu("sampling_and_dedup_are_bit_identical_to_cpu") else {
        return Ok(());
    };
    let first = 5000;
    let (indptr, indices) = random_csr(3000, 51);
    let host = HostCsr {
        first,
        indptr: indptr.clone(),
        indices: indices.clone(),
    };
    let csr = g.upload_csr(first, &indptr, &indices)?;
    let nodes: Vec<u64> = rand_below(2500, 3000, 52)
        .iter()
        .map(|&v| v + first)
        .collect();
    for fanout in [-1, 0, 1, 5, 10, 15, 32, 33, 64, 150] {
        let stream = Stream::new(9, 4, 7, Purpose::NeighborSample as u64 + 1);
        let (mut counts_c, mut nbrs_c) = (Vec::new(), Vec::new());
        host.sample_neighbors(&nodes, fanout, stream, &mut counts_c, &mut nbrs_c)?;
        let (counts_g, nbrs_g) = g.sample_neighbors(&csr, &nodes, fanout, stream.state())?;
        assert_eq!(counts_c, counts_g, "fanout {fanout}: counts");
        assert_eq!(nbrs_c, nbrs_g, "fanout {fanout}: neighbours");
    }

    // First-seen deduplication against a host map.
    let keys: Vec<u64> = rand_below(20_000, 3000, 53);
    let (unique_g, labels_g) = g.dedup_relabel(&keys)?;
    let mut pos: HashMap<u64, u32> = HashMap::new();
    let mut unique_c = Vec::new();
    let labels_c: Vec<u32> = keys
        .iter()
        .map(|&k| {
            *pos.entry(k).or_insert_with(|| {
                unique_c.push(k);
                unique_c.len() as u32 - 1
            })
        })
        .collect();
    assert_eq!(unique_c, unique_g, "unique keys in first-seen order");
    assert_eq!(labels_c, labels_g, "labels");
    Ok(())
}

/// The block chain (every hop sampled, deduplicated and built into a block on the device)
/// gives the host sampler's blocks, under both rules, with fan-outs -1 and 0, nodes of degree
/// 0, neighbours sampled twice, and a seed list with isolated seeds; and refuses what the host
/// refuses. A part that lacks nodes gets `None` (the host's hop-by-hop path).
#[test]
fn block_chain_builds_the_host_samplers_blocks_on_the_device() -> Result<()> {
    let Some(g) = gpu("block_chain_builds_the_host_samplers_blocks_on_the_device") else {
        return Ok(());
    };
    let n = 3000u64;
    let (indptr, mut indices) = random_csr(n as usize, 71);
    for v in indices.iter_mut() {
        *v %= 1500; // neighbours concentrated on half the nodes: many repeats across a hop
    }
    let host = HostCsr {
        first: 0,
        indptr: indptr.clone(),
        indices: indices.clone(),
    };
    let chain = GpuCsrSource {
        backend: &g,
        csr: g.upload_csr(0, &indptr, &indices)?,
        holds_every_node: true,
    };
    // Every tenth node has degree 0 (random_csr), so some seeds are isolated.
    let seeds: Vec<u64> = (0..700u64).map(|i| (i * 37 + 10) % n).collect();
    for rule in [SamplingRule::PerLayer, SamplingRule::Subgraph] {
        for fanouts in [vec![15, 10, 5], vec![-1, 3], vec![0, 4], vec![40]] {
            let sampler = NeighborSampler::new(fanouts.clone(), 91).with_rule(rule);
            let want = sampler.sample(&host, &seeds, 3, 8)?;
            let got = chain
                .sample_blocks(&sampler, &seeds, 3, 8)?
                .expect("the part holds every node");
            assert_eq!(got.blocks, want, "{rule:?} {fanouts:?}: blocks");
            DeviceBlock::check_match(&got.device, &want)?;
        }
    }
    let sampler = NeighborSampler::new(vec![5, 5], 91);
    let twice = [seeds[0], seeds[1], seeds[0]];
    assert!(chain.sample_blocks(&sampler, &twice, 0, 0).is_err());
    let outside = [n + 5];
    assert!(chain.sample_blocks(&sampler, &outside, 0, 0).is_err());
    let part_only = GpuCsrSource {
        backend: &g,
        csr: g.upload_csr(0, &indptr, &indices)?,
        holds_every_node: false,
    };
    assert!(part_only.sample_blocks(&sampler, &seeds, 0, 0)?.is_none());
    Ok(())
}

#[test]
fn link_step_matches_cpu_and_repeats_bit_identically() -> Result<()> {
    let Some(g) = gpu("link_step_matches_cpu_and_repeats_bit_identically") else {
        return Ok(());
    };
    let c = cpu();
    let first = 0;
    let (indptr, mut indices) = random_csr(2000, 61);
    for v in indices.iter_mut() {
        *v %= 2000; // neighbours inside the graph, so every hop can be sampled here
    }
    let host = HostCsr {
        first,
        indptr: indptr.clone(),
        indices: indices.clone(),
    };
    let seeds: Vec<u64> = (0..64u64).map(|i| i * 29 + 3).collect();
    let gpu_source = GpuCsrSource {
        backend: &g,
        csr: g.upload_csr(first, &indptr, &indices)?,
        holds_every_node: true,
    };
    // The GPU sampler gives the same blocks under either rule.
    for rule in [SamplingRule::PerLayer, SamplingRule::Subgraph] {
        let sampler = NeighborSampler::new(vec![10, 5], 77).with_rule(rule);
        assert_eq!(
            sampler.sample(&host, &seeds, 1, 2)?,
            sampler.sample(&gpu_source, &seeds, 1, 2)?,
            "sampled blocks ({rule:?})"
        );
    }
    let sampler = NeighborSampler::new(vec![10, 5], 77);
    let blocks = sampler.sample(&host, &seeds, 1, 2)?;

    let config = ModelConfig {
        task: Task::LinkPrediction,
        in_dim: 12,
        hidden: 16,
        num_layers: 2,
        dropout: 0.2,
        input_dropout: 0.1,
        predictor_layers: 2,
        num_classes: 0,
        init: ParamInit::default(),
    };
    let features = rand_f32(blocks.blocks[0].num_src() * config.in_dim, 62);
    let pos: Vec<(u32, u32)> = (0..32u32).map(|i| (i, (i * 5 + 1) % 64)).collect();
    let neg: Vec<(u32, u32)> = (0..32u32).map(|i| (i, (i * 11 + 7) % 64)).collect();
    let ctx = StepCtx {
        seed: 5,
        epoch: 1,
        step: 2,
        train: true,
    };

    let model_c: Model<CpuBackend> = Model::new(config.clone())?;
    let params = model_c.init_params(3);
    let mut grads_c = vec![0.0; params.len()];
    let stats_c = model_c.link_step(
        &c,
        &params,
        &mut grads_c,
        &blocks,
        None,
        &features,
        &pos,
        &neg,
        0.01,
        ctx,
    )?;

    let model_g: Model<CudaBackend> = Model::new(config)?;
    // `chained`: the blocks as the block chain built them on the device, not uploaded.
    let run_gpu = |chained: bool| -> Result<(f64, Vec<f32>)> {
        let params_g = g.upload(&params)?;
        let features_g = g.upload(&features)?;
        let mut grads_g = g.zeros(params.len())?;
        let device_blocks = if chained {
            let s = gpu_source
                .sample_blocks(&sampler, &seeds, 1, 2)?
                .expect("the part holds every node");
            assert_eq!(s.blocks, blocks, "block chain: host copies");
            Some(s.device)
        } else {
            None
        };
        let stats = model_g.link_step(
            &g,
            &params_g,
            &mut grads_g,
            &blocks,
            device_blocks,
            &features_g,
            &pos,
            &neg,
            0.01,
            ctx,
        )?;
        Ok((stats.loss_sum, g.download(&grads_g)?))
    };
    let (loss_1, grads_1) = run_gpu(false)?;
    let (loss_2, grads_2) = run_gpu(false)?;
    assert_eq!(loss_1.to_bits(), loss_2.to_bits(), "GPU loss repeats");
    assert_bits("GPU gradients repeat", &grads_1, &grads_2);
    let (loss_3, grads_3) = run_gpu(true)?;
    assert_eq!(
        loss_1.to_bits(),
        loss_3.to_bits(),
        "GPU loss with chained blocks"
    );
    assert_bits("GPU gradients with chained blocks", &grads_1, &grads_3);
    assert!(
        (stats_c.loss_sum - loss_1).abs() <= 1e-4 * stats_c.loss_sum.abs(),
        "loss cpu {} gpu {loss_1}",
        stats_c.loss_sum
    );
    assert_close("link_step gradients", &grads_c, &grads_1, 1e-3);
    Ok(())
}

/// `shardsage train --device cuda` end to end on one process: GPU sampling, resident features,
/// the GPU step; two GPU runs give the same parameters bit for bit, a CPU run the same quality;
/// and one checkpoint evaluates to the same metrics on the GPU and the CPU.
#[test]
fn train_and_eval_on_the_gpu_match_the_cpu() {
    let test = "train_and_eval_on_the_gpu_match_the_cpu";
    if gpu(test).is_none() {
        return;
    }
    let dir = common::tmp("gpu", "e2e");
    let parts = common::generated_parts(&dir, 3000, 9, 32, 50, 1, None);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let train = |device: &str, name: &str| {
        let run = dir.join(name);
        let out = run_ok(&[
            "train",
            "--data",
            &s(&parts),
            "--run-dir",
            &s(&run),
            "--device",
            device,
            "--hidden",
            "64",
            "--layers",
            "2",
            "--fanouts",
            "10,5",
            "--batch-size",
            "256",
            "--epochs",
            "2",
            "--steps-per-epoch",
            "8",
            "--dropout",
            "0.1",
            "--threads",
            "4",
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let mrr = stdout
            .lines()
            .find_map(|l| l.split("final valid mrr=").nth(1))
            .unwrap_or_else(|| panic!("no final valid MRR in:\n{stdout}"))
            .trim()
            .to_string();
        (
            printed_checksum(&out.stdout),
            mrr,
            String::from_utf8_lossy(&out.stderr).to_string(),
            run,
        )
    };
    let (sum_g1, mrr_g1, log_g, run_g) = train("cuda", "gpu1");
    assert!(log_g.contains("CUDA backend"), "no GPU in use:\n{log_g}");
    assert!(
        log_g.contains("resident on cuda"),
        "features not resident:\n{log_g}"
    );
    assert!(
        log_g.contains("sampling this rank's"),
        "no GPU sampling:\n{log_g}"
    );
    let (sum_g2, mrr_g2, _, _) = train("cuda", "gpu2");
    assert_eq!(sum_g1, sum_g2, "two GPU runs differ");
    assert_eq!(mrr_g1, mrr_g2, "two GPU runs evaluate differently");
    let (_, mrr_c, _, _) = train("cpu", "cpu");
    let (g, c): (f64, f64) = (mrr_g1.parse().unwrap(), mrr_c.parse().unwrap());
    assert!((g - c).abs() <= 0.02, "valid MRR: GPU {g}, CPU {c}");

    let best = run_g.join("checkpoints").join("best.ssck");
    let eval = |device: &str| {
        eval_json(
            &run_ok(&[
                "eval",
                "--data",
                &s(&parts),
                "--checkpoint",
                &s(&best),
                "--split",
                "test",
                "--device",
                device,
            ])
            .stdout,
        )["metrics"]
            .clone()
    };
    let (mg, mc) = (eval("cuda"), eval("cpu"));
    for key in ["mrr", "hits@10", "auc"] {
        let (a, b) = (mg[key].as_f64().unwrap(), mc[key].as_f64().unwrap());
        assert!((a - b).abs() <= 2e-3, "test {key}: GPU {a}, CPU {b}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `shardsage walk --device cuda` (the trial scan of `kernels/walk.cu`) writes the same walks as
/// the CPU, bit for bit, for DeepWalk and for node2vec's return and in-out cases; `node2vec
/// --device cuda` (walks and skip-gram, `kernels/sgns.cu`, on the GPU) repeats bit for bit and
/// reaches the CPU's link-prediction MRR within 0.02 (the device's `exp` rounds differently).
#[test]
fn walks_and_skip_gram_on_the_gpu_match_the_cpu() {
    let test = "walks_and_skip_gram_on_the_gpu_match_the_cpu";
    if gpu(test).is_none() {
        return;
    }
    let dir = common::tmp("gpu", "walks");
    let parts = common::generated_parts(&dir, 3000, 9, 16, 30, 1, None);
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    // `cmd` on `device` into `out` (walks of length 20), checking that a GPU run says the GPU
    // did `gpu_work`.
    let run_on =
        |cmd: &str, device: &str, out: &std::path::Path, extra: &[&str], gpu_work: &str| {
            let mut args = vec![
                cmd.to_string(),
                "--data".into(),
                s(&parts),
                "--out".into(),
                s(out),
            ];
            args.extend(["--length", "20", "--device", device].map(String::from));
            args.extend(extra.iter().map(|a| a.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = run_ok(&args);
            let log = String::from_utf8_lossy(&run.stderr);
            if device == "cuda" {
                assert!(log.contains(gpu_work), "{cmd}: not on the GPU:\n{log}");
            }
            run
        };
    let walks = |device: &str, p: &str, q: &str| -> Vec<u32> {
        let out = dir.join(format!("walks-{device}-{p}-{q}.h5"));
        let extra = ["--walks-per-node", "3", "--p", p, "--q", q];
        run_on("walk", device, &out, &extra, ": walk steps");
        let f = hdf5::File::open(&out).unwrap();
        f.dataset("walks").unwrap().read_raw().unwrap()
    };
    for (p, q) in [("1", "1"), ("4", "0.5"), ("0.5", "2")] {
        let (c, g) = (walks("cpu", p, q), walks("cuda", p, q));
        assert_eq!(c.len(), 3000 * 3 * 20);
        assert!(c == g, "p={p} q={q}: GPU walks differ from the CPU's");
    }
    let embed = |device: &str, name: &str| -> (Vec<u32>, f64) {
        let out = dir.join(format!("emb-{name}.h5"));
        let extra = ["--walks-per-node", "4", "--q", "0.5", "--dim", "64"];
        let run = run_on("node2vec", device, &out, &extra, "walk steps and skip-gram");
        let stdout = String::from_utf8_lossy(&run.stdout);
        let mrr: f64 = stdout
            .lines()
            .find(|l| l.starts_with("test (dot product):"))
            .and_then(|l| l.split("mrr=").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("no test MRR printed:\n{stdout}"));
        let f = hdf5::File::open(&out).unwrap();
        let e: Vec<f32> = f.dataset("embedding").unwrap().read_raw().unwrap();
        (e.iter().map(|x| x.to_bits()).collect(), mrr)
    };
    let (g1, mrr_g) = embed("cuda", "gpu-1");
    let (g2, _) = embed("cuda", "gpu-2");
    let (_, mrr_c) = embed("cpu", "cpu");
    assert!(g1 == g2, "two GPU runs differ");
    assert!(
        (mrr_g - mrr_c).abs() <= 0.02,
        "test MRR: GPU {mrr_g}, CPU {mrr_c}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
