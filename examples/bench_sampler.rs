//! `make bench-sampler`: throughput of the uniform neighbour sampler (`NeighborSampler` over
//! `LocalCsr`) in sampled edges per second, on a dataset file of ogbl-citation2's size, with one
//! thread and with all threads.
//!
//! A batch is what a training step samples: 512 positive training edges (in the epoch's shuffled
//! order) give their two endpoints plus one uniform negative target each; the distinct ids are
//! the seeds. Fan-outs default to OGB's 15,10,5. Blocks are built as the trainer builds them:
//! every block's forward CSR and the reverse index of all but the input layer's
//! (`NeighborSampler::forward_only_input`).
//!
//! Usage: `bench_sampler --dataset FILE [--batches N] [--reps N] [--batch-size N] [--fanouts 15,10,5]`

#[path = "../bench/common.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::*;
use shardsage::graph::store::GraphPart;
use shardsage::sample::neighbor::{LocalCsr, NeighborSampler};

fn main() -> BenchResult<()> {
    // As the shardsage binary does.
    shardsage::runtime::retain_freed_memory();
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

    let sampler = NeighborSampler::new(fanouts.clone(), 0).forward_only_input();
    let src = LocalCsr::new(&part);
    let all = all_threads();
    let mut thread_counts = vec![1];
    if all > 1 {
        thread_counts.push(all);
    }
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for &threads in &thread_counts {
        let p = pool(threads)?;
        let mut edges_per_rep = 0usize;
        let mut input_nodes = 0usize;
        let mut err = None;
        let times = time_reps(reps, || {
            let (e, n) = p.install(|| {
                let (mut e, mut n) = (0usize, 0usize);
                for (step, seeds) in seed_sets.iter().enumerate() {
                    match sampler.sample(&src, seeds, 0, step as u64) {
                        Ok(b) => {
                            e += b.blocks.iter().map(|bl| bl.num_edges()).sum::<usize>();
                            n += b.input_nodes().len();
                        }
                        Err(x) => err = Some(x),
                    }
                }
                (e, n)
            });
            edges_per_rep = e;
            input_nodes = n;
        });
        if let Some(e) = err {
            return Err(e.into());
        }
        let s = median(&times);
        let eps = edges_per_rep as f64 / s;
        let batches_per_s = batches as f64 / s;
        rows.push(vec![
            threads.to_string(),
            si(eps),
            format!("{batches_per_s:.1}"),
            format!("{:.0}", edges_per_rep as f64 / batches as f64),
            format!("{:.0}", input_nodes as f64 / batches as f64),
        ]);
        results.push(serde_json::json!({
            "threads": threads,
            "sampled_edges_per_s": eps,
            "batches_per_s": batches_per_s,
            "edges_per_batch": edges_per_rep as f64 / batches as f64,
            "input_nodes_per_batch": input_nodes as f64 / batches as f64,
            "seconds": times,
        }));
    }
    let fan = fanouts
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let tbl = table(
        &[
            "threads",
            "sampled edges/s",
            "batches/s",
            "edges/batch",
            "input nodes/batch",
        ],
        &rows,
    );
    println!("neighbour sampling, fan-outs {fan}, {batches} batches of {batch_size} positives, median of {reps}:\n{tbl}");
    let json = serde_json::json!({
        "scenario": "sampler",
        "meta": meta,
        "dataset": dataset,
        "nodes": nodes,
        "csr_edges": csr_edges,
        "train_edges": part.train_edges.len(),
        "fanouts": fanouts,
        "batch_size": batch_size,
        "batches": batches,
        "reps": reps,
        "results": results,
    });
    let jpath = write_json("sampler", &json)?;
    let svg = results_dir().join("sampler.svg");
    bar_chart(
        &svg,
        &format!("Neighbour sampling, fan-outs {fan}, {nodes} nodes"),
        "million sampled edges/s",
        &thread_counts
            .iter()
            .map(|t| format!("{t} thread(s)"))
            .collect::<Vec<_>>(),
        &[(
            "NeighborSampler + LocalCsr".into(),
            results
                .iter()
                .map(|r| r["sampled_edges_per_s"].as_f64().unwrap_or(f64::NAN) / 1e6)
                .collect(),
        )],
        None,
    )?;
    update_results_md(
        "bench-sampler",
        &format!(
            "## Neighbour sampler (`make bench-sampler`)\n\n{}\n\nGenerated citation graph of \
             ogbl-citation2's size: {nodes} nodes, {csr_edges} message-passing (CSR) edges, {} \
             training edges. Fan-outs {fan}; a batch = {batch_size} positive training edges' two \
             endpoints plus one uniform negative target each (distinct ids as seeds), as a \
             training step samples them, blocks built as the trainer builds them (reverse \
             indexes of all but the input layer's block); {batches} batches per repetition, \
             median of {reps}.\n\n\
             {tbl}\nPlot: `bench/results/sampler.svg`; data: `bench/results/sampler.json`.\n",
            meta_line(&meta),
            part.train_edges.len()
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());
    Ok(())
}
