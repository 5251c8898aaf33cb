//! A probe for the distributed tests, launched under `mpirun` by `tests/distributed.rs`.
//!
//! `mpi_check sample DATA SEED OUT RULE`: under sampling rule RULE (`subgraph` or `per-layer`),
//! every rank samples the blocks of the same global batch of seed nodes (most of them owned
//! elsewhere) and rank 0 writes a digest of them to OUT. Then the batch is split, each rank
//! sampling every W-th seed, and rank r writes `OUT.split<r>`: one line per block destination,
//! `step S hop H node V: neighbours`, so the test can check that every node got the samples it
//! gets at W = 1.
//!
//! `mpi_check mpi-info DATA`: every rank prints its node-local rank (from MPI and from the
//! launcher) and whether its MPI library says it is CUDA-aware.
//!
//! `mpi_check exchange`: an all-to-all of known contents (sizes 0 to 60 per pair) in rounds of
//! a few elements and in one round; every rank checks what it received and prints `exchange ok`.
//!
//! `mpi_check exchange-large BYTES`: rank 0 sends BYTES bytes of a known pattern to rank 1 (more
//! than 2^31 needs several rounds of 32-bit counts), rank 1 a few to rank 0; rank 1 checks every
//! byte and prints `large exchange ok`.
//!
//! `mpi_check panic-worker`: the last rank panics on a worker thread while every rank's main
//! thread waits in a collective; the job must end at once (the panic hook may not call MPI there).
//!
//! `mpi_check step DATA BATCH OUT RULE`: training steps (sampling rule RULE) on a hash-chosen
//! share of the training edges, each rank taking the edges whose source it owns; rank 0 writes
//! the parameters after the steps (raw f32 bits), and every rank's parameter checksum.

use std::io::Write;
use std::path::PathBuf;

use shardsage::backend::CpuBackend;
use shardsage::distributed::fault::install_abort_on_panic;
use shardsage::distributed::graph::DistGraph;
use shardsage::distributed::Comm;
use shardsage::sample::neighbor::{NeighborSampler, SamplingRule};
use shardsage::train::config::TrainConfig;
use shardsage::train::trainer::{RunPaths, Trainer};

fn main() {
    if let Err(e) = run() {
        eprintln!("mpi_check: {e}");
        std::process::exit(1);
    }
}

/// Elements rank `from` sends to rank `to` in the `exchange` probe, and their values.
fn probe_len(from: usize, to: usize) -> usize {
    if from == 1 {
        return 0; // one rank sends nothing at all
    }
    (from * 7 + to * 13 + 5) % 61
}
fn probe_value(from: usize, to: usize, i: usize) -> u64 {
    ((from as u64) << 40) | ((to as u64) << 20) | i as u64
}

fn exchange(comm: &Comm) -> shardsage::Result<()> {
    let me = comm.rank();
    let send: Vec<Vec<u64>> = (0..comm.size())
        .map(|to| {
            (0..probe_len(me, to))
                .map(|i| probe_value(me, to, i))
                .collect()
        })
        .collect();
    let whole = comm.all_to_all_v(&send)?;
    for round_elems in [1, 3, 7 * comm.size(), 1000] {
        let rounds = comm.all_to_all_v_chunked(&send, round_elems)?;
        if rounds != whole {
            return Err(shardsage::Error::Other(format!(
                "rank {me}: rounds of {round_elems} differ from one exchange"
            )));
        }
    }
    for (from, got) in whole.iter().enumerate() {
        let want: Vec<u64> = (0..probe_len(from, me))
            .map(|i| probe_value(from, me, i))
            .collect();
        if *got != want {
            return Err(shardsage::Error::Other(format!(
                "rank {me}: wrong data from rank {from}"
            )));
        }
    }
    println!("exchange ok on rank {me}");
    Ok(())
}

fn large_byte(i: usize) -> u8 {
    ((i * 31 + 7) % 251) as u8
}

fn exchange_large(comm: &Comm, bytes: usize) -> shardsage::Result<()> {
    let mut send: Vec<Vec<u8>> = vec![Vec::new(); comm.size()];
    match comm.rank() {
        0 => send[1] = (0..bytes).map(large_byte).collect(),
        1 => send[0] = vec![1, 2, 3],
        _ => {}
    }
    let started = std::time::Instant::now();
    let got = comm.all_to_all_v(&send)?;
    drop(send);
    if comm.rank() == 1 {
        let ok =
            got[0].len() == bytes && got[0].iter().enumerate().all(|(i, &b)| b == large_byte(i));
        if !ok {
            return Err(shardsage::Error::Other(format!(
                "rank 1 received {} bytes, not the {bytes} sent, or wrong ones",
                got[0].len()
            )));
        }
        println!(
            "large exchange ok: {bytes} bytes in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    if comm.rank() == 0 && got[1] != [1, 2, 3] {
        return Err(shardsage::Error::Other(
            "rank 0 received the wrong bytes".into(),
        ));
    }
    Ok(())
}

fn run() -> shardsage::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let comm = Comm::init()?;
    install_abort_on_panic(comm.rank(), comm.size());
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    if args.get(1).map(String::as_str) == Some("exchange") {
        return exchange(&comm);
    }
    if args.get(1).map(String::as_str) == Some("exchange-large") {
        let bytes: usize = args.get(2).and_then(|b| b.parse().ok()).unwrap_or(0);
        return exchange_large(&comm, bytes);
    }
    if args.get(1).map(String::as_str) == Some("panic-worker") {
        if comm.rank() + 1 == comm.size() {
            let worker = std::thread::Builder::new()
                .name("probe-worker".into())
                .spawn(|| panic!("probe panic on a worker thread"))
                .map_err(|e| shardsage::Error::Other(e.to_string()))?;
            let _ = worker.join();
        }
        comm.barrier();
        return Err(shardsage::Error::Other("the job outlived the panic".into()));
    }
    let data = PathBuf::from(&args[2]);
    let rule = match args.get(5).map(String::as_str) {
        Some("per-layer") => SamplingRule::PerLayer,
        Some("subgraph") | None => SamplingRule::Subgraph,
        Some(other) => {
            return Err(shardsage::Error::Other(format!(
                "unknown sampling rule {other}"
            )))
        }
    };
    let part = shardsage::graph::loader::load_rank_parts(&data, comm.rank(), comm.size())?;
    let graph = DistGraph::new(&part, &comm, 64)?;
    match args[1].as_str() {
        "mpi-info" => {
            println!(
                "rank {} of {}: local_rank={} launcher_local_rank={:?} cuda_aware_mpi={:?}",
                comm.rank(),
                comm.size(),
                comm.local_rank(),
                shardsage::distributed::comm::launcher_local_rank(),
                comm.cuda_aware_mpi()
            );
        }
        "sample" => {
            let seed: u64 = args[3].parse().unwrap_or(0);
            let n = part.meta.num_nodes;
            // The same seeds on every rank: a spread of global ids.
            let seeds: Vec<u64> = (0..64u64)
                .map(|i| (i * 7919) % n)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            let sampler = NeighborSampler::new(vec![5, 3, 2], seed).with_rule(rule);
            let mut out = String::new();
            for step in 0..3u64 {
                let blocks = sampler.sample(&graph, &seeds, 1, step)?;
                for (l, b) in blocks.blocks.iter().enumerate() {
                    out.push_str(&format!(
                        "step {step} block {l} dst {} src {:?} indptr {:?} indices {:?}\n",
                        b.num_dst, b.src_nodes, b.indptr, b.indices
                    ));
                }
            }
            if comm.is_root() {
                std::fs::write(&args[4], &out).map_err(|e| shardsage::Error::io(&args[4], e))?;
            }
            // Every rank must have sampled the same blocks: compare hashes.
            let mut h = 0u64;
            for b in out.bytes() {
                h = shardsage::sample::rng::fold(h, b as u64);
            }
            let all = comm.all_gather_u64(h);
            if all.iter().any(|&x| x != all[0]) {
                return Err(shardsage::Error::Other(format!(
                    "ranks sampled different blocks: {all:x?}"
                )));
            }
            // The batch split over the ranks: each node's samples, as this rank saw them.
            let mine: Vec<u64> = seeds
                .iter()
                .enumerate()
                .filter(|(i, _)| i % comm.size() == comm.rank())
                .map(|(_, &s)| s)
                .collect();
            let mut lines = String::new();
            for step in 0..3u64 {
                let blocks = sampler.sample(&graph, &mine, 1, step)?;
                let l = blocks.blocks.len();
                for (k, b) in blocks.blocks.iter().enumerate() {
                    for v in 0..b.num_dst {
                        let nbrs: Vec<u64> = b
                            .neighbors(v)
                            .iter()
                            .map(|&p| b.src_nodes[p as usize])
                            .collect();
                        lines.push_str(&format!(
                            "step {step} hop {} node {}: {nbrs:?}\n",
                            l - 1 - k,
                            b.src_nodes[v]
                        ));
                    }
                }
            }
            let split = format!("{}.split{}", args[4], comm.rank());
            std::fs::write(&split, lines).map_err(|e| shardsage::Error::io(&split, e))?;
        }
        "step" => {
            let batch: usize = args[3].parse().unwrap_or(64);
            let out = PathBuf::from(&args[4]);
            let cfg = TrainConfig {
                hidden: 32,
                layers: 2,
                fanouts: vec![5, 3],
                batch_size: batch,
                predictor_layers: 2,
                seed: 3,
                sampling: rule,
                ..TrainConfig::default()
            };
            let run_dir = out.with_extension("run");
            let backend = CpuBackend::new(1)?;
            let mut trainer = Trainer::new(
                cfg,
                &comm,
                &graph,
                &backend,
                RunPaths {
                    data: data.clone(),
                    run_dir,
                },
                false,
            )?;
            // The global batch: a hash-chosen share of all training edges; each rank trains the
            // ones whose source it owns, so the union over ranks is the same at every W.
            let picked: Vec<usize> = part
                .train_edges
                .iter()
                .enumerate()
                .filter(|(_, e)| shardsage::sample::rng::fold(e[0], e[1]).is_multiple_of(40))
                .map(|(i, _)| i)
                .collect();
            for step in 0..2u64 {
                trainer.train_step(0, step, &picked)?;
            }
            let params = trainer.host_params()?;
            trainer.check_params_agree()?;
            if comm.is_root() {
                let mut f =
                    std::fs::File::create(&out).map_err(|e| shardsage::Error::io(&out, e))?;
                for p in &params {
                    f.write_all(&p.to_le_bytes())
                        .map_err(|e| shardsage::Error::io(&out, e))?;
                }
            }
        }
        other => return Err(shardsage::Error::Other(format!("unknown probe {other}"))),
    }
    Ok(())
}
