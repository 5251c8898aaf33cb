//! `shardsage eval`, `embed` and `predict`: a checkpoint applied to a directory of parts, on one
//! process or on W ranks (the same collectives as training).

use std::path::{Path, PathBuf};

use crate::backend::Backend;
use crate::distributed::fault::StopSignal;
use crate::distributed::graph::DistGraph;
use crate::distributed::Comm;
use crate::error::{Error, Result};
use crate::eval::inference;
use crate::graph::store::atomic_write;
use crate::nn::model::{Model, ModelConfig, Task};
use crate::runtime::{
    init_execution, load_rank_graph, with_backend, with_rank, BackendJob, ExecutionArgs,
};
use crate::train::checkpoint::Checkpoint;

/// What every checkpoint-applying command needs.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Directory of parts the model was trained on (same dataset fingerprint).
    #[arg(long)]
    pub data: PathBuf,
    /// A checkpoint file (e.g. RUN_DIR/checkpoints/best.ssck).
    #[arg(long)]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

/// Evaluate a checkpoint on the validation or test split (OGB MRR / Hits@K / AUC for link
/// prediction; accuracy / macro-F1 for node classification).
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// valid or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    #[command(flatten)]
    pub scoring: crate::eval::ScoringArgs,
    /// Also write the metrics as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Write the final-layer embedding of every node to an HDF5 file (`/embedding` [N, hidden] in
/// global id order, `/orig_id` [N]).
#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The HDF5 file to write (replaced atomically if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Rows gathered on rank 0 and written at a time, which bounds rank 0's memory whatever
    /// the graph's size (0 = 64 MiB of rows).
    #[arg(long, default_value_t = 0)]
    pub block_rows: usize,
}

/// Takes one block of embeddings: its first global id, its rows and their original ids.
type EmbeddingSink<'s> = dyn FnMut(u64, &[f32], &[u64]) -> Result<()> + 's;

/// Rank 0's buffer when `--block-rows` is 0.
const EMBED_BLOCK_BYTES: usize = 64 << 20;

/// List the most likely missing citations (link targets) of one paper, by original id.
#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The paper's id in the raw input (orig_id).
    #[arg(long)]
    pub node: u64,
    /// How many targets to list.
    #[arg(long, default_value_t = 10)]
    pub top_k: usize,
    /// Also list targets the paper already cites in the training graph.
    #[arg(long)]
    pub include_known: bool,
}

/// Rank 0 reads the checkpoint; everyone gets its parameters and the model's shape.
pub fn load_checkpoint(
    comm: &Comm,
    path: &Path,
    part: &crate::graph::store::GraphPart,
) -> Result<(Vec<f32>, ModelConfig)> {
    let fingerprint = part.meta.fingerprint.as_str();
    let mut bytes = Vec::new();
    let mut status = [0u64];
    let mut params = Vec::new();
    if comm.is_root() {
        match Checkpoint::load(path) {
            Ok(ck) => {
                if ck.dataset_fingerprint != fingerprint {
                    status[0] = 1;
                    bytes = format!(
                        "{}: checkpoint is from another dataset (fingerprint {} != parts' {})",
                        path.display(),
                        ck.dataset_fingerprint,
                        fingerprint
                    )
                    .into_bytes();
                } else {
                    match ck.model_config(
                        path,
                        part.meta.feature_dim as usize,
                        part.meta.num_classes as usize,
                    ) {
                        Ok(model) => {
                            bytes = serde_json::to_vec(&model).unwrap_or_default();
                            params = ck.params;
                        }
                        Err(e) => {
                            status[0] = 1;
                            bytes = e.to_string().into_bytes();
                        }
                    }
                }
            }
            Err(e) => {
                status[0] = 1;
                bytes = e.to_string().into_bytes();
            }
        }
    }
    comm.broadcast(&mut status, 0);
    comm.broadcast_bytes(&mut bytes, 0);
    if status[0] != 0 {
        return Err(Error::Other(String::from_utf8_lossy(&bytes).into_owned()));
    }
    let cfg: ModelConfig = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(path, format!("model stored in the checkpoint: {e}")))?;
    let mut n = [params.len() as u64];
    comm.broadcast(&mut n, 0);
    params.resize(n[0] as usize, 0.0);
    comm.broadcast(&mut params[..], 0);
    Ok((params, cfg))
}

/// Loads graph + checkpoint and runs `f` with the model on the configured backend.
fn with_model<T>(args: &ModelArgs, f: impl FnOnce(&ModelCtx<'_>) -> Result<T> + Send) -> Result<T> {
    with_rank(|comm| {
        let threads = init_execution(comm, &args.execution);
        let part = load_rank_graph(comm, &args.data)?;
        let (params, cfg) = load_checkpoint(comm, &args.checkpoint, &part)?;
        let graph = DistGraph::new(&part, comm, 0)?;
        struct Job<'a, F> {
            graph: &'a DistGraph<'a>,
            params: Vec<f32>,
            cfg: ModelConfig,
            f: F,
            path: &'a Path,
        }
        impl<'a, T, F: FnOnce(&ModelCtx<'_>) -> Result<T>> BackendJob for Job<'a, F> {
            type Output = T;
            fn run<B: Backend>(self, b: B) -> Result<T> {
                let model = Model::<B>::new(self.cfg.clone())?;
                if model.num_params() != self.params.len() {
                    return Err(Error::invalid(
                        self.path,
                        format!(
                            "checkpoint holds {} parameters, the model it describes needs {}",
                            self.params.len(),
                            model.num_params()
                        ),
                    ));
                }
                let params = b.upload(&self.params)?;
                // Nothing to save: a stop signal ends these commands as it would any program.
                let never = StopSignal::never();
                let (h, dim) = inference::embed_local(self.graph, &b, &model, &params, &never)?;
                let ctx = ModelCtx {
                    graph: self.graph,
                    task: self.cfg.task,
                    h,
                    dim,
                    scorer: &|a: &[f32], c: &[f32]| -> Result<Vec<f32>> {
                        model.score_host_pairs(&b, &params, a, c)
                    },
                    evaluator: &|split: &str, batch: usize, h: &[f32], dim: usize| match self
                        .cfg
                        .task
                    {
                        Task::LinkPrediction => inference::evaluate_link(
                            self.graph, &b, &model, &params, h, dim, split, batch, &never,
                        ),
                        Task::NodeClassification => inference::evaluate_nodes(
                            self.graph, &b, &model, &params, h, dim, split,
                        ),
                    },
                };
                (self.f)(&ctx)
            }
        }
        with_backend(
            &args.execution,
            threads,
            comm.local_rank(),
            Job {
                graph: &graph,
                params,
                cfg,
                f,
                path: &args.checkpoint,
            },
        )
    })
}

type Scorer<'a> = &'a dyn Fn(&[f32], &[f32]) -> Result<Vec<f32>>;
type Evaluator<'a> =
    &'a dyn Fn(&str, usize, &[f32], usize) -> Result<std::collections::BTreeMap<String, f64>>;

/// A loaded model and this rank's final embeddings.
struct ModelCtx<'a> {
    graph: &'a DistGraph<'a>,
    task: Task,
    h: Vec<f32>,
    dim: usize,
    scorer: Scorer<'a>,
    evaluator: Evaluator<'a>,
}

pub fn run_eval(args: &EvalArgs) -> Result<()> {
    with_model(&args.model, |m| {
        let metrics = (m.evaluator)(&args.split, args.scoring.eval_batch_size, &m.h, m.dim)?;
        if m.graph.comm.is_root() {
            let json = serde_json::json!({
                "split": args.split,
                "checkpoint": args.model.checkpoint,
                "world_size": m.graph.comm.size(),
                "metrics": metrics,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
            if let Some(p) = &args.json {
                atomic_write(p, |tmp| {
                    std::fs::write(tmp, json.to_string()).map_err(|e| Error::io(tmp, e))
                })?;
            }
        }
        Ok(())
    })
}

pub fn run_embed(args: &EmbedArgs) -> Result<()> {
    with_model(&args.model, |m| {
        write_node_table(m.graph, &m.h, m.dim, &args.out, args.block_rows)
    })
}

/// Writes a per-owned-node table (each rank's rows, `dim` columns) as an embeddings file
/// (`/embedding` [N, dim] in global id order, `/orig_id` [N]): rank 0 gathers and writes blocks
/// of `block_rows` rows (0 = 64 MiB of rows), so its memory does not grow with the graph. A
/// collective.
pub fn write_node_table(
    g: &DistGraph<'_>,
    table: &[f32],
    dim: usize,
    out: &Path,
    block_rows: usize,
) -> Result<()> {
    let n = g.part.meta.num_nodes;
    let block = match block_rows {
        0 => (EMBED_BLOCK_BYTES / (dim * 4).max(1)).max(1),
        b => b,
    } as u64;
    let first = g.part.first_node();
    // Block by block in global id order (every rank takes part in each block's exchanges):
    // rank 0 asks the owners for the rows and original ids and hands them to `sink`.
    let stream = |sink: &mut EmbeddingSink<'_>| -> Result<()> {
        for (start, ids) in g.root_id_blocks(block) {
            let rows = g.exchange_rows(&ids, dim, table)?;
            let (_, orig) = g.ask_owners(&ids, |id, out: &mut Vec<u64>| {
                out.push(g.part.orig_id[(id - first) as usize])
            })?;
            if g.comm.is_root() {
                sink(start, &rows, &orig)?;
            }
        }
        Ok(())
    };
    if !g.comm.is_root() {
        return stream(&mut |_, _, _| Ok(()));
    }
    write_embeddings(out, n as usize, dim, block as usize, stream)?;
    println!("wrote {n} embeddings of width {dim} to {}", out.display());
    Ok(())
}

/// Writes `/embedding` [n, dim] and `/orig_id` [n] (chunked) from the blocks `fill` hands over,
/// atomically: the file appears only once every block is written.
fn write_embeddings(
    path: &Path,
    n: usize,
    dim: usize,
    block: usize,
    fill: impl FnOnce(&mut EmbeddingSink<'_>) -> Result<()>,
) -> Result<()> {
    crate::graph::store::init_hdf5();
    // A run directory on a fresh volume may not exist yet.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    atomic_write(path, |tmp| {
        let h = |e: hdf5::Error| Error::hdf5(tmp, e);
        let file = hdf5::File::create(tmp).map_err(h)?;
        let chunk = block.clamp(1, n.max(1));
        let emb = file
            .new_dataset::<f32>()
            .chunk((chunk, dim.max(1)))
            .shape((n, dim))
            .create("embedding")
            .map_err(h)?;
        let ids = file
            .new_dataset::<u64>()
            .chunk(chunk)
            .shape(n)
            .create("orig_id")
            .map_err(h)?;
        fill(&mut |start, rows, orig| {
            let (a, b) = (start as usize, start as usize + orig.len());
            let view = ndarray::ArrayView2::from_shape((orig.len(), dim), rows)
                .map_err(|e| Error::invalid(tmp, e.to_string()))?;
            emb.write_slice(&view, ndarray::s![a..b, ..]).map_err(h)?;
            ids.write_slice(orig, ndarray::s![a..b]).map_err(h)?;
            Ok(())
        })?;
        file.flush().map_err(h)?;
        Ok(())
    })
}

pub fn run_predict(args: &PredictArgs) -> Result<()> {
    with_model(&args.model, |m| {
        let g = m.graph;
        let part = g.part;
        let first = part.first_node();
        if m.task != Task::LinkPrediction {
            return Err(Error::config(
                "task",
                "predict needs a link-prediction checkpoint",
            ));
        }
        // Which global id has this original id (at most one rank finds it).
        let local = part
            .orig_id
            .iter()
            .position(|&o| o == args.node)
            .map(|i| first + i as u64);
        let mut found = [local.unwrap_or(u64::MAX)];
        g.comm.all_reduce_min_u64(&mut found);
        if found[0] == u64::MAX {
            return Err(Error::config(
                "node",
                format!("no node has original id {}", args.node),
            ));
        }
        let query = found[0];
        let qrow = g.exchange_rows(&[query], m.dim, &m.h)?;
        let known: std::collections::HashSet<u64> = if args.include_known {
            Default::default()
        } else {
            let (_, nbrs) = g.ask_owners(&[query], |id, out: &mut Vec<u64>| {
                out.extend(part.neighbors(id).iter().map(|&v| v as u64))
            })?;
            nbrs.into_iter().collect()
        };
        // Score every local candidate, keep this rank's top K, send them to rank 0.
        let n = part.num_local_nodes();
        let mut best: Vec<(f32, u64)> = Vec::new();
        for start in (0..n).step_by(8192) {
            let end = (start + 8192).min(n);
            let mut a = Vec::with_capacity((end - start) * m.dim);
            for _ in start..end {
                a.extend_from_slice(&qrow);
            }
            let scores = (m.scorer)(&a, &m.h[start * m.dim..end * m.dim])?;
            for (i, s) in scores.into_iter().enumerate() {
                let id = first + (start + i) as u64;
                if id != query && !known.contains(&id) {
                    best.push((s, id));
                }
            }
            best.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            best.truncate(args.top_k);
        }
        let mut send = vec![Vec::new(); g.comm.size()];
        send[0] = best
            .iter()
            .flat_map(|&(s, id)| [s.to_bits() as u64, id, part.orig_id[(id - first) as usize]])
            .collect();
        let got = g.comm.all_to_all_v(&send)?;
        if g.comm.is_root() {
            let mut all: Vec<(f32, u64, u64)> = got
                .iter()
                .flat_map(|v| {
                    v.chunks_exact(3)
                        .map(|c| (f32::from_bits(c[0] as u32), c[1], c[2]))
                })
                .collect();
            all.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            all.truncate(args.top_k);
            println!(
                "most likely missing citations of paper {} (score = predictor logit):",
                args.node
            );
            println!("{:>4}  {:>12}  {:>9}", "rank", "orig_id", "score");
            for (i, (s, _, orig)) in all.iter().enumerate() {
                println!("{:>4}  {:>12}  {:>9.4}", i + 1, orig, s);
            }
        }
        Ok(())
    })
}
