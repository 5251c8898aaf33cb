//! Measures the CPU hot paths: copy bandwidth (STREAM-like), gather-mean forward/backward, and a
//! full link-prediction step (sampling, feature gather, forward + backward, Adam) at the OGB
//! reference shape. Run: `cargo run --release --example nn_bench -- [threads] [nodes]`.

use std::time::Instant;

use shardsage::backend::{Backend, CpuBackend, DeviceBlock};
use shardsage::graph::store::{GraphMeta, GraphPart, FORMAT_VERSION};
use shardsage::nn::{Adam, AdamConfig, Model, ModelConfig, StepCtx, Task};
use shardsage::sample::rng::{hash, unit_f32};
use shardsage::sample::{dedup_first_seen, negative_targets, Block, LocalCsr, NeighborSampler};

/// CPU seconds (user + system) this process has used: less sensitive than wall time to other
/// programs sharing the cores.
fn cpu_seconds() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn time_it(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Random undirected graph: each node draws `half_deg` uniform targets, both directions kept.
fn random_part(n: usize, half_deg: usize, feat_dim: usize) -> GraphPart {
    let mut deg = vec![0u64; n + 1];
    let edge = |u: usize, j: usize| (hash(1, 0, 0, 0, u as u64, j as u64) % n as u64) as usize;
    for u in 0..n {
        for j in 0..half_deg {
            deg[u + 1] += 1;
            deg[edge(u, j) + 1] += 1;
        }
    }
    for i in 0..n {
        deg[i + 1] += deg[i];
    }
    let mut fill = deg.clone();
    let mut indices = vec![0u32; deg[n] as usize];
    for u in 0..n {
        for j in 0..half_deg {
            let v = edge(u, j);
            indices[fill[u] as usize] = v as u32;
            fill[u] += 1;
            indices[fill[v] as usize] = u as u32;
            fill[v] += 1;
        }
    }
    let features = (0..n * feat_dim)
        .map(|i| unit_f32(hash(2, 0, 0, 0, i as u64, 0)) - 0.5)
        .collect();
    GraphPart {
        meta: GraphMeta {
            format_version: FORMAT_VERSION,
            dataset_name: "bench".into(),
            fingerprint: "0".into(),
            num_parts: 1,
            part_id: 0,
            num_nodes: n as u64,
            num_edges: (n * half_deg) as u64,
            feature_dim: feat_dim as u32,
            node_offset: vec![0, n as u64],
            directed: false,
            undirected_message_passing: true,
            split: "random".into(),
            num_classes: 0,
            partition_method: "none".into(),
        },
        indptr: deg,
        indices,
        features,
        orig_id: (0..n as u64).collect(),
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

fn main() -> shardsage::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let nodes: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let be = CpuBackend::new(threads)?;
    println!("backend: {}", be.name());

    // STREAM-like copy: 64 Mi floats (256 MiB) read + written, in the backend's pool.
    let src = vec![1.0f32; 64 << 20];
    let mut dst = vec![0.0f32; 64 << 20];
    let t = time_it(5, || {
        be.copy((&src, 0), (&mut dst, 0), src.len()).ok();
    });
    let t_par = time_it(5, || {
        use rayon::prelude::*;
        be.install(|| {
            dst.par_chunks_mut(1 << 16)
                .zip(src.par_chunks(1 << 16))
                .for_each(|(d, s)| d.copy_from_slice(s))
        });
    });
    let copy_bytes = 2.0 * src.len() as f64 * 4.0;
    let copy_gbs = copy_bytes / t_par / 1e9;
    println!(
        "copy bandwidth: {:.1} GB/s (1 thread memcpy {:.1} GB/s), counting read + write",
        copy_gbs,
        copy_bytes / t / 1e9
    );
    drop((src, dst));

    // A GEMM of a hidden-256 layer, to calibrate against published single-machine figures.
    {
        let (m, n, k) = (4096usize, 256usize, 256usize);
        let a = be.upload(&vec![0.5f32; m * k])?;
        let b = be.upload(&vec![0.25f32; k * n])?;
        let mut c = be.zeros(m * n)?;
        let t = time_it(20, || {
            be.gemm(
                false,
                false,
                m,
                n,
                k,
                1.0,
                (&a, 0),
                (&b, 0),
                0.0,
                (&mut c, 0),
            )
            .ok();
        });
        println!(
            "gemm 4096x256 . 256x256: {:.2} ms = {:.0} GFLOP/s",
            t * 1e3,
            2.0 * (m * n * k) as f64 / t / 1e9
        );
    }

    // Gather-mean: 4096 destinations x 15 distinct random neighbours from a 61,440-row table.
    let (num_dst, fan) = (4096usize, 15usize);
    let num_src = num_dst * fan;
    let indptr: Vec<u32> = (0..=num_dst as u32).map(|v| v * fan as u32).collect();
    let indices: Vec<u32> = (0..num_dst * fan)
        .map(|e| (hash(3, 0, 0, 0, e as u64, 0) % num_src as u64) as u32)
        .collect();
    let block = Block::new((0..num_src as u64).collect(), num_dst, indptr, indices)?;
    let db = DeviceBlock::upload(&be, &block)?;
    for dim in [128usize, 256] {
        let h = be.upload(&vec![0.5f32; num_src * dim])?;
        let mut out = be.zeros(num_dst * dim)?;
        let c0 = cpu_seconds();
        let t = time_it(20, || {
            be.mean_agg_fwd(&db, &h, dim, &mut out).ok();
        });
        let cpu_fwd = (cpu_seconds() - c0) / 21.0;
        let bytes = ((num_dst * fan + num_dst) * dim * 4) as f64;
        let mut grad_src = be.zeros(num_src * dim)?;
        let tb = time_it(20, || {
            be.mean_agg_bwd(&db, &out, dim, &mut grad_src).ok();
        });
        let bytes_b = ((num_dst * fan + num_src) * dim * 4) as f64;
        println!(
            "gather-mean dim {dim}: forward {:.3} ms = {:.1} GB/s ({:.0}% of copy; {:.3} CPU-ms); backward {:.3} ms = {:.1} GB/s",
            t * 1e3,
            bytes / t / 1e9,
            100.0 * bytes / t / 1e9 / copy_gbs,
            cpu_fwd * 1e3,
            tb * 1e3,
            bytes_b / tb / 1e9
        );
    }

    if std::env::var_os("NN_BENCH_KERNELS_ONLY").is_some() {
        return Ok(());
    }

    // A full link step at the OGB reference shape.
    let t = Instant::now();
    let part = random_part(nodes, 10, 128);
    println!(
        "graph: {nodes} nodes, {} directed CSR entries, 128-dim features (built in {:.1} s)",
        part.indices.len(),
        t.elapsed().as_secs_f64()
    );
    let cfg = ModelConfig {
        task: Task::LinkPrediction,
        in_dim: 128,
        hidden: 256,
        num_layers: 3,
        dropout: 0.0,
        predictor_layers: 3,
        num_classes: 0,
    };
    let model = Model::<CpuBackend>::new(cfg)?;
    let mut params = be.upload(&model.init_params(0))?;
    let mut grads = be.zeros(model.num_params())?;
    let mut adam = Adam::new(&be, AdamConfig::default(), model.num_params())?;
    let sampler = NeighborSampler::new(vec![15, 10, 5], 0);
    let batch = 512usize;
    let mut rows = Vec::new();
    for step in 0..6u64 {
        let t0 = Instant::now();
        let edge_ids: Vec<u64> = (0..batch as u64).map(|i| step * batch as u64 + i).collect();
        let srcs: Vec<u64> = edge_ids
            .iter()
            .map(|&e| (e * 7919) % nodes as u64)
            .collect();
        let dsts: Vec<u64> = srcs
            .iter()
            .map(|&s| {
                let nb = part.neighbors(s);
                nb[(s as usize) % nb.len().max(1)] as u64
            })
            .collect();
        let negs = negative_targets(0, 0, step, &edge_ids, 1, nodes as u64);
        let ends: Vec<u64> = srcs.iter().chain(&dsts).chain(&negs).copied().collect();
        let (seeds, pos_of) = dedup_first_seen(&ends);
        let pos: Vec<(u32, u32)> = (0..batch).map(|i| (pos_of[i], pos_of[batch + i])).collect();
        let neg: Vec<(u32, u32)> = (0..batch)
            .map(|i| (pos_of[i], pos_of[2 * batch + i]))
            .collect();
        let blocks = be.install(|| sampler.sample(&LocalCsr::new(&part), &seeds, 0, step))?;
        let t_sample = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut feats = Vec::with_capacity(blocks.input_nodes().len() * 128);
        for &v in blocks.input_nodes() {
            feats.extend_from_slice(part.feature_row(v));
        }
        let feats = be.upload(&feats)?;
        let t_gather = t1.elapsed().as_secs_f64();
        let ctx = StepCtx {
            seed: 0,
            epoch: 0,
            step,
            train: true,
        };
        let t2 = Instant::now();
        let c2 = cpu_seconds();
        let stats = model.link_step(
            &be,
            &params,
            &mut grads,
            &blocks,
            &feats,
            &pos,
            &neg,
            1.0 / (2 * batch) as f32,
            ctx,
        )?;
        let t_step = t2.elapsed().as_secs_f64();
        let c_step = cpu_seconds() - c2;
        let t3 = Instant::now();
        adam.step(&be, &mut params, &grads)?;
        let t_adam = t3.elapsed().as_secs_f64();
        let sizes: Vec<usize> = blocks.blocks.iter().map(|b| b.num_src()).collect();
        println!(
            "step {step}: sample {:.1} ms, gather {:.1} ms, link_step {:.1} ms (fwd {:.1}, bwd {:.1}; {:.1} CPU-ms), adam {:.1} ms, loss {:.4}, block sources {:?}",
            t_sample * 1e3,
            t_gather * 1e3,
            t_step * 1e3,
            stats.timings.forward_s * 1e3,
            stats.timings.backward_s * 1e3,
            c_step * 1e3,
            t_adam * 1e3,
            stats.loss_sum / stats.count as f64,
            sizes
        );
        if step > 0 {
            rows.push((t_sample + t_gather + t_step + t_adam, t_step, c_step));
        }
    }
    let total = median(rows.iter().map(|r| r.0).collect());
    let step = median(rows.iter().map(|r| r.1).collect());
    let cpu = median(rows.iter().map(|r| r.2).collect());
    println!(
        "median link_step CPU time {:.1} CPU-ms ({:.1} ms per thread)",
        cpu * 1e3,
        cpu * 1e3 / be.threads() as f64
    );
    println!(
        "median: link_step {:.1} ms, whole step {:.1} ms = {:.0} positive edges/s",
        step * 1e3,
        total * 1e3,
        batch as f64 / total
    );
    Ok(())
}
