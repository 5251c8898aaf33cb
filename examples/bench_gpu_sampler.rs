//! GPU counterpart of `bench_sampler` (run by `scripts/gpu-run.sh sampler` on a machine with a
//! GPU): `NeighborSampler` over the part's CSR on the GPU (`CudaBackend::upload_csr` +
//! `GpuCsrSource`) against the same sampler over `LocalCsr` on all of the machine's cores, in
//! sampled edges per second, in one run on the same batches.
//!
//! A batch is what a training step samples (as in `bench_sampler`): 512 positive training edges
//! in the epoch's shuffled order give their two endpoints plus one uniform negative target each;
//! the distinct ids are the seeds. Fan-outs default to OGB's 15,10,5. Time per batch is split
//! into the neighbour source's share (`sample_neighbors` and `relabel`; on the GPU: uploading the
//! frontier, the sampling and deduplication kernels, and the downloads) and the rest (the
//! sampler's own work on the host, such as each block's reverse index; first-seen relabelling
//! too where the source leaves it to the host, as `LocalCsr` does). A third row times the block
//! chain (`PartSampler::sample_blocks`: every hop, its deduplication and the reverse index built
//! on the device, the host copies downloaded once per batch), which the trainer uses on one rank.
//!
//! The first batch's blocks from the GPU (both ways) must equal the CPU's exactly (the sampling rule is
//! bit-identical by design). A difference is still measured, but reported as such, and the
//! program exits non-zero.
//!
//! Writes `bench/results/gpu-sampler.json`, `gpu-sampler.svg` and the `bench-gpu-sampler` section
//! of `bench/RESULTS.md`. Without a usable GPU it stops with the reason.
//!
//! Usage: `bench_gpu_sampler --dataset FILE [--batches N] [--reps N] [--batch-size N]
//! [--fanouts 15,10,5] [--data-info FILE]` (`--data-info`: a JSON object about how the dataset
//! was made, e.g. its generation time, copied into the result).

#[path = "../bench/common.rs"]
mod common;

use std::cell::Cell;
use std::path::PathBuf;
use std::time::Instant;

use common::*;
use shardsage::backend::cuda::{CudaBackend, GpuCsrSource};
use shardsage::backend::prelude::*;
use shardsage::backend::PartSampler;
use shardsage::graph::store::GraphPart;
use shardsage::sample::block::SampledBlocks;
use shardsage::sample::neighbor::{LocalCsr, NeighborSampler, NeighborSource};
use shardsage::sample::rng::Stream;

/// A neighbour source that adds up the time spent in the source it wraps.
struct Timed<'a> {
    inner: &'a dyn NeighborSource,
    seconds: Cell<f64>,
}

impl NeighborSource for Timed<'_> {
    fn sample_neighbors(
        &self,
        nodes: &[u64],
        fanout: i32,
        stream: Stream,
        out_counts: &mut Vec<u32>,
        out_nbrs: &mut Vec<u64>,
    ) -> shardsage::Result<()> {
        let t = Instant::now();
        let r = self
            .inner
            .sample_neighbors(nodes, fanout, stream, out_counts, out_nbrs);
        self.seconds
            .set(self.seconds.get() + t.elapsed().as_secs_f64());
        r
    }

    // Forwarded, so a source that numbers a block's sources itself (the GPU's dedup kernels)
    // does so here too, and its time counts as the source's.
    fn relabel(
        &self,
        frontier: &[u64],
        nbrs: &[u64],
    ) -> shardsage::Result<Option<(Vec<u64>, Vec<u32>)>> {
        let t = Instant::now();
        let r = self.inner.relabel(frontier, nbrs);
        self.seconds
            .set(self.seconds.get() + t.elapsed().as_secs_f64());
        r
    }
}

struct Measured {
    name: String,
    sampled_edges_per_s: f64,
    batches_per_s: f64,
    source_share: f64,
    seconds: Vec<f64>,
}

/// Samples every batch `reps` times (after one warm-up pass) with the block chain: every hop on
/// the device, the host copies downloaded once per batch (the time in the source is all of it).
fn measure_chain(
    name: String,
    sampler: &NeighborSampler,
    src: &GpuCsrSource,
    seed_sets: &[Vec<u64>],
    reps: usize,
) -> BenchResult<Measured> {
    let mut edges = 0usize;
    let mut err = None;
    let times = time_reps(reps, || {
        edges = 0;
        for (step, seeds) in seed_sets.iter().enumerate() {
            match src.sample_blocks(sampler, seeds, 0, step as u64) {
                Ok(Some(s)) => {
                    edges += s
                        .blocks
                        .blocks
                        .iter()
                        .map(|bl| bl.num_edges())
                        .sum::<usize>()
                }
                Ok(None) => err = Some("the block chain declined the dataset".to_string()),
                Err(e) => err = Some(e.to_string()),
            }
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    let s = median(&times);
    Ok(Measured {
        name,
        sampled_edges_per_s: edges as f64 / s,
        batches_per_s: seed_sets.len() as f64 / s,
        source_share: 1.0,
        seconds: times,
    })
}

/// Samples every batch `reps` times (after one warm-up pass) through `src`.
fn measure(
    name: String,
    sampler: &NeighborSampler,
    src: &dyn NeighborSource,
    seed_sets: &[Vec<u64>],
    reps: usize,
) -> BenchResult<(Measured, usize)> {
    let timed = Timed {
        inner: src,
        seconds: Cell::new(0.0),
    };
    let mut edges = 0usize;
    let mut err = None;
    let mut source_s = 0.0;
    let mut total_s = 0.0;
    let times = time_reps(reps, || {
        timed.seconds.set(0.0);
        let t = Instant::now();
        edges = 0;
        for (step, seeds) in seed_sets.iter().enumerate() {
            match sampler.sample(&timed, seeds, 0, step as u64) {
                Ok(b) => edges += b.blocks.iter().map(|bl| bl.num_edges()).sum::<usize>(),
                Err(e) => err = Some(e),
            }
        }
        // The warm-up pass is included here too; a ratio does not mind.
        source_s += timed.seconds.get();
        total_s += t.elapsed().as_secs_f64();
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    let s = median(&times);
    Ok((
        Measured {
            name,
            sampled_edges_per_s: edges as f64 / s,
            batches_per_s: seed_sets.len() as f64 / s,
            source_share: source_s / total_s,
            seconds: times,
        },
        edges,
    ))
}

/// Where two samples first differ, in words.
fn first_difference(a: &SampledBlocks, b: &SampledBlocks) -> String {
    if a.blocks.len() != b.blocks.len() {
        return format!("{} vs {} blocks", a.blocks.len(), b.blocks.len());
    }
    for (l, (x, y)) in a.blocks.iter().zip(&b.blocks).enumerate() {
        if x.src_nodes != y.src_nodes {
            let i = x
                .src_nodes
                .iter()
                .zip(&y.src_nodes)
                .take_while(|(p, q)| p == q)
                .count();
            return format!(
                "block {l}: {} vs {} source nodes, first different at position {i}",
                x.src_nodes.len(),
                y.src_nodes.len()
            );
        }
        if x.indptr != y.indptr || x.indices != y.indices {
            return format!("block {l}: same sources, different edges");
        }
    }
    "same blocks, different seeds or reverse indices".into()
}

fn main() -> BenchResult<()> {
    shardsage::graph::store::init_hdf5();
    // Info lines: the device chosen and the NVRTC compile time.
    shardsage::runtime::init_logging();
    let dataset = PathBuf::from(arg("--dataset").ok_or("--dataset FILE is required")?);
    let batches: usize = arg("--batches").and_then(|v| v.parse().ok()).unwrap_or(40);
    let reps: usize = arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(5);
    let batch_size: usize = arg("--batch-size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let fanouts: Vec<i32> = arg("--fanouts")
        .unwrap_or_else(|| "15,10,5".into())
        .split(',')
        .map(|x| x.trim().parse())
        .collect::<Result<_, _>>()?;
    let data_info: serde_json::Value = match arg("--data-info") {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(&p)?)?,
        None => serde_json::Value::Null,
    };
    // The GPU first: without one, stop before loading gigabytes.
    let be = CudaBackend::try_new()
        .map_err(|e| format!("this benchmark needs a CUDA GPU, and there is none usable: {e}"))?;
    let device = be.name();
    println!("device: {device}");
    let meta = run_meta();

    let t = Instant::now();
    let part = GraphPart::read(&dataset)?;
    let load_s = t.elapsed().as_secs_f64();
    let nodes = part.meta.num_nodes;
    let csr_edges = part.indices.len();
    println!(
        "loaded {} in {load_s:.1}s: {nodes} nodes, {csr_edges} message-passing edges, {} training edges",
        dataset.display(),
        part.train_edges.len()
    );

    // The seeds of `batches` training batches, built once (not timed).
    let seed_sets = batch_seed_sets(&part, batches, batch_size);

    let t = Instant::now();
    let csr = be.upload_csr(part.first_node(), &part.indptr, &part.indices)?;
    be.synchronize()?;
    let upload_s = t.elapsed().as_secs_f64();
    println!("uploaded the CSR to the GPU in {upload_s:.2}s");
    let holds_every_node =
        part.first_node() == 0 && part.num_local_nodes() as u64 == part.meta.num_nodes;
    let gpu_src = GpuCsrSource {
        backend: &be,
        csr,
        holds_every_node,
    };
    let cpu_src = LocalCsr::new(&part);
    let sampler = NeighborSampler::new(fanouts.clone(), 0);
    // The CPU source runs on rayon's global pool: one thread per core.
    let threads = rayon::current_num_threads();

    // Same rule, same draws: the GPU's blocks must be the CPU's. A difference is measured all
    // the same (a GPU session is scarce), but reported and failed at the end.
    let from_gpu = sampler.sample(&gpu_src, &seed_sets[0], 0, 0)?;
    let from_cpu = sampler.sample(&cpu_src, &seed_sets[0], 0, 0)?;
    let from_chain = gpu_src
        .sample_blocks(&sampler, &seed_sets[0], 0, 0)?
        .ok_or("the block chain needs a dataset of one part (the whole graph)")?
        .blocks;
    let identical = from_gpu == from_cpu && from_chain == from_cpu;
    let checked = if identical {
        "The first batch's blocks are identical on both.".to_string()
    } else {
        format!(
            "**The first batch's blocks differ between GPU and CPU ({}): the GPU figures are of \
             a sampler that breaks the sampling rule.**",
            if from_gpu != from_cpu {
                first_difference(&from_gpu, &from_cpu)
            } else {
                format!("block chain: {}", first_difference(&from_chain, &from_cpu))
            }
        )
    };
    println!("first batch: {checked}");

    let (gpu_m, edges) = measure(
        format!("GPU ({device})"),
        &sampler,
        &gpu_src,
        &seed_sets,
        reps,
    )?;
    let (cpu_m, _) = measure(
        format!("CPU, {threads} threads"),
        &sampler,
        &cpu_src,
        &seed_sets,
        reps,
    )?;
    let chain_m = measure_chain(
        format!("GPU block chain ({device})"),
        &sampler,
        &gpu_src,
        &seed_sets,
        reps,
    )?;
    let results = [gpu_m, cpu_m, chain_m];
    let speedup = results[0].sampled_edges_per_s / results[1].sampled_edges_per_s;
    let fan = fanouts
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                si(m.sampled_edges_per_s),
                format!("{:.1}", m.batches_per_s),
                format!("{:.0}%", 100.0 * m.source_share),
            ]
        })
        .collect();
    let tbl = table(
        &[
            "neighbour source",
            "sampled edges/s",
            "batches/s",
            "time in the source",
        ],
        &rows,
    );
    let edges_per_batch = edges as f64 / batches as f64;
    let summary = format!(
        "GPU / CPU ({threads} threads): {speedup:.2}x; block chain / GPU hop by hop: {:.2}x; \
         {edges_per_batch:.0} sampled edges per batch; CSR upload {upload_s:.2}s, dataset load \
         {load_s:.1}s.",
        results[2].sampled_edges_per_s / results[0].sampled_edges_per_s
    );
    println!("neighbour sampling, fan-outs {fan}, {batches} batches of {batch_size} positives, median of {reps}:\n{tbl}{summary}");

    let json = serde_json::json!({
        "scenario": "gpu-sampler",
        "meta": meta,
        "device": device,
        "dataset": dataset,
        "data_info": data_info,
        "nodes": nodes,
        "csr_edges": csr_edges,
        "train_edges": part.train_edges.len(),
        "dataset_load_s": load_s,
        "csr_upload_s": upload_s,
        "fanouts": fanouts,
        "batch_size": batch_size,
        "batches": batches,
        "reps": reps,
        "edges_per_batch": edges_per_batch,
        "gpu_over_cpu": speedup,
        "first_batch_identical": identical,
        "results": results.iter().map(|m| serde_json::json!({
            "source": m.name,
            "sampled_edges_per_s": m.sampled_edges_per_s,
            "batches_per_s": m.batches_per_s,
            "share_of_time_in_source": m.source_share,
            "seconds": m.seconds,
        })).collect::<Vec<_>>(),
    });
    let jpath = write_json("gpu-sampler", &json)?;
    let svg = results_dir().join("gpu-sampler.svg");
    bar_chart(
        &svg,
        &format!("Neighbour sampling, fan-outs {fan}, {nodes} nodes"),
        "million sampled edges/s",
        &results.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
        &[(
            "NeighborSampler".into(),
            results
                .iter()
                .map(|m| m.sampled_edges_per_s / 1e6)
                .collect(),
        )],
        None,
    )?;
    let made = match data_info["generate_s"].as_f64() {
        Some(s) => format!(" (generated on that machine in {s:.0}s)"),
        None => String::new(),
    };
    update_results_md(
        "bench-gpu-sampler",
        &format!(
            "## GPU neighbour sampler (`scripts/gpu-run.sh sampler`)\n\n{}\n\n\
             Device: {device}. Generated citation graph{made}: {nodes} nodes, {csr_edges} \
             message-passing (CSR) edges, {} training edges. Fan-outs {fan}; a batch = \
             {batch_size} positive training edges' two endpoints plus one uniform negative target \
             each (distinct ids as seeds); {batches} batches per repetition, median of {reps}. \
             `NeighborSampler` over `GpuCsrSource` (the CSR on the GPU) against `LocalCsr` with \
             all {threads} cores (the GPU source also relabels on the device; reverse indices \
             are built on the host for both), and the block chain (`GpuCsrSource::sample_blocks`: \
             every hop, its deduplication and the reverse index on the device, the host copies \
             downloaded once per batch). \
             {checked}\n\n{tbl}\n{summary}\n\n\
             Plot: `bench/results/gpu-sampler.svg`; data: `bench/results/gpu-sampler.json`.\n",
            meta_line(&meta),
            part.train_edges.len()
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());
    if !identical {
        return Err(checked.into());
    }
    Ok(())
}
