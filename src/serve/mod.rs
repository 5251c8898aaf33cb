//! `shardsage serve`: a KServe-compatible model server for citation predictions.
//!
//! Start-up is a collective: every rank computes its nodes' embeddings by layer-wise inference
//! (or rank 0 reads an embeddings file), rank 0 gathers the tables, builds the retrieval index
//! and answers HTTP requests; the other ranks wait without spinning until rank 0 stops. The
//! modules: `model` (the served tables and how a query is answered), `index` (retrieval),
//! `api` (V1 and V2 request and response shapes), `http` (routes, limits, batching, drain).

pub mod api;
pub mod http;
pub mod index;
pub mod model;
pub mod scan;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::distributed::fault::StopSignal;
use crate::distributed::graph::DistGraph;
use crate::distributed::Comm;
use crate::error::{Error, Result};
use crate::eval::cli::load_checkpoint;
use crate::eval::inference::embed_local_each;
use crate::nn::model::{Model, ModelConfig, Task};
use crate::runtime::{
    init_execution, load_rank_graph, with_backend, with_rank, BackendJob, ExecutionArgs,
};
use model::{Links, Retrieval, Scoring, ServedModel};

/// Serve top-k citation predictions over HTTP (KServe V1 and V2 protocols).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Directory of parts: the graph whose papers are served (needed for new papers, for
    /// excluding known citations, and with --checkpoint).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// A GraphSAGE link-prediction checkpoint: embeddings are computed at start-up (unless
    /// --embeddings is given) and pairs are scored by its predictor.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// An embeddings file written by `embed` or `node2vec` (`/embedding`, `/orig_id`); without
    /// --checkpoint pairs are scored by the dot product.
    #[arg(long)]
    pub embeddings: Option<PathBuf>,
    /// The model's name in the URLs (/v1/models/<name>:predict, /v2/models/<name>/infer).
    #[arg(long, default_value = "citations")]
    pub name: String,
    /// Address to listen on (KServe's containers listen on port 8080).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub address: SocketAddr,
    /// Largest top_k a request may ask for.
    #[arg(long, default_value_t = 1000)]
    pub max_top_k: usize,
    /// Largest number of queries (instances) in one request.
    #[arg(long, default_value_t = 256)]
    pub max_instances: usize,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Requests answered at once; more are refused with 503.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// Queries scored together in one pass of the scoring thread.
    #[arg(long, default_value_t = 64)]
    pub max_batch: usize,
    /// Seconds a client has to send its request headers, and again its body.
    #[arg(long, default_value_t = 10)]
    pub client_timeout_seconds: u64,
    /// Seconds a stop signal waits for in-flight requests before exiting.
    #[arg(long, default_value_t = 20)]
    pub drain_seconds: u64,
    /// Candidates per query re-scored exactly after retrieval.
    #[arg(long, default_value_t = 100)]
    pub shortlist: usize,
    /// Clusters of the retrieval index probed per query (0: 15% of them, at least 8).
    #[arg(long, default_value_t = 0)]
    pub nprobe: usize,
    /// Clusters of the retrieval index (0: about 4 sqrt of the papers).
    #[arg(long, default_value_t = 0)]
    pub nlist: usize,
    /// Values per row in the retrieval index's codes (0: the embeddings' width; fewer: the
    /// rows' coordinates on that many principal directions, a narrower and faster scan).
    #[arg(long, default_value_t = 0)]
    pub code_dim: usize,
    #[command(flatten)]
    pub execution: ExecutionArgs,
}

const NEEDS_A_MODEL: &str = "serve needs --checkpoint (with --data) or --embeddings";

/// Poll interval of the ranks that wait while rank 0 serves.
const IDLE_POLL: Duration = Duration::from_millis(50);

pub fn run(args: &ServeArgs) -> Result<()> {
    if args.checkpoint.is_none() && args.embeddings.is_none() {
        return Err(Error::config("checkpoint", NEEDS_A_MODEL));
    }
    if args.checkpoint.is_some() && args.data.is_none() {
        return Err(Error::config(
            "data",
            "--checkpoint needs --data (the parts it was trained on)",
        ));
    }
    with_rank(|comm| {
        // Handlers once MPI is up (see train): the first SIGTERM drains, a second exits at once.
        let stop = StopSignal::install()?;
        let threads = init_execution(comm, &args.execution);
        let started = Instant::now();
        let server = if comm.is_root() {
            let timeout = Duration::from_secs(args.client_timeout_seconds.max(1));
            let cfg = http::ServerConfig {
                addr: args.address,
                name: args.name.clone(),
                max_body_bytes: args.max_body_bytes,
                max_in_flight: args.max_in_flight,
                max_batch: args.max_batch,
                body_timeout: timeout,
                header_timeout: timeout,
                drain_timeout: Duration::from_secs(args.drain_seconds),
                limits: api::Limits {
                    max_top_k: args.max_top_k.max(1),
                    max_instances: args.max_instances.max(1),
                },
                http_threads: threads.clamp(1, 4),
            };
            let server = http::Server::start(cfg, stop.clone())?;
            println!("shardsage serve: listening on http://{}", server.local_addr);
            Some(server)
        } else {
            None
        };
        match build(comm, args, threads, &stop) {
            Ok(Some(model)) => {
                if let Some(server) = &server {
                    let resident = model.resident_bytes();
                    let (n, dim, nlist) = (model.num_nodes(), model.dim, model.index.nlist);
                    let (nprobe, largest) = (model.retrieval.nprobe, model.index.max_list_len());
                    let isa = model.index.isa().name();
                    let new_papers = model.feature_dim().is_some();
                    server.set_ready(model)?;
                    log::info!(
                        "ready after {:.1} s: {n} papers, embeddings of width {dim}, {nlist} \
                         index clusters (largest {largest}, {nprobe} probed, {isa} scan), {:.0} MiB of \
                         tables, new papers {}",
                        started.elapsed().as_secs_f64(),
                        resident as f64 / (1 << 20) as f64,
                        if new_papers {
                            "embedded on the fly"
                        } else {
                            "not served"
                        }
                    );
                }
            }
            Ok(None) => {}
            Err(Error::Stopped(during)) => log::info!("stopped during {during}, before ready"),
            Err(e) => return Err(e),
        }
        if let Some(server) = server {
            server.wait()?;
        }
        comm.idle_barrier(IDLE_POLL);
        Ok(())
    })
}

/// Builds the served model on rank 0 (`None` elsewhere). A collective.
fn build(
    comm: &Comm,
    args: &ServeArgs,
    threads: usize,
    stop: &StopSignal,
) -> Result<Option<ServedModel>> {
    let retrieval = |n: usize| Retrieval {
        shortlist: args.shortlist.max(1),
        nprobe: match args.nprobe {
            0 => (nlist(args, n) * 3).div_ceil(20).max(8),
            k => k,
        },
        code_dim: args.code_dim,
    };
    let Some(data) = &args.data else {
        // An embeddings file alone: rank 0 reads it.
        if !comm.is_root() {
            return Ok(None);
        }
        let path = args.embeddings.as_deref().unwrap_or(Path::new(""));
        let (emb, dim, orig) = read_embeddings(path)?;
        let (nlist, retrieval) = (nlist(args, orig.len()), retrieval(orig.len()));
        return ServedModel::new(
            args.name.clone(),
            orig,
            None,
            emb,
            dim,
            Vec::new(),
            Scoring::Dot,
            retrieval,
            nlist,
        )
        .map(Some);
    };
    let part = load_rank_graph(comm, data)?;
    stop.check_agreed(comm, "loading")?;
    let scoring = match &args.checkpoint {
        Some(ck) => {
            let (params, config) = load_checkpoint(comm, ck, &part)?;
            if config.task != Task::LinkPrediction {
                return Err(Error::config(
                    "checkpoint",
                    format!("{}: serve needs a link-prediction checkpoint", ck.display()),
                ));
            }
            Scoring::Predictor { config, params }
        }
        None => Scoring::Dot,
    };
    let graph = DistGraph::new(&part, comm, 0)?;
    let (orig, links) = gather_graph(&graph)?;
    let (emb, dim, layer_inputs) = match (&args.embeddings, &scoring) {
        (Some(path), _) => {
            let (emb, dim, file_orig) = if comm.is_root() {
                read_embeddings(path)?
            } else {
                (Vec::new(), 0, Vec::new())
            };
            if comm.is_root() && file_orig != orig {
                return Err(Error::invalid(
                    path,
                    "orig_id differs from the papers of --data (embeddings of another graph?)",
                ));
            }
            (emb, dim, Vec::new())
        }
        (None, Scoring::Predictor { config, params }) => {
            let job = EmbedJob {
                graph: &graph,
                config: config.clone(),
                params: params.clone(),
                stop,
            };
            with_backend(&args.execution, threads, comm.local_rank(), job)?
        }
        (None, Scoring::Dot) => return Err(Error::config("checkpoint", NEEDS_A_MODEL)),
    };
    if !comm.is_root() {
        return Ok(None);
    }
    let (nlist, retrieval) = (nlist(args, orig.len()), retrieval(orig.len()));
    ServedModel::new(
        args.name.clone(),
        orig,
        Some(links),
        emb,
        dim,
        layer_inputs,
        scoring,
        retrieval,
        nlist,
    )
    .map(Some)
}

fn nlist(args: &ServeArgs, n: usize) -> usize {
    match args.nlist {
        0 => index::default_nlist(n),
        k => k,
    }
}

/// Layer-wise inference on every rank; rank 0 keeps every layer's input and the final rows.
struct EmbedJob<'a> {
    graph: &'a DistGraph<'a>,
    config: ModelConfig,
    params: Vec<f32>,
    stop: &'a StopSignal,
}

type Tables = (Vec<f32>, usize, Vec<(Vec<f32>, usize)>);

impl BackendJob for EmbedJob<'_> {
    type Output = Tables;
    fn run<B: Backend>(self, b: B) -> Result<Tables> {
        let g = self.graph;
        let model = Model::<B>::new(self.config.clone())?;
        if model.num_params() != self.params.len() {
            return Err(Error::Other(format!(
                "checkpoint holds {} parameters, its model needs {}",
                self.params.len(),
                model.num_params()
            )));
        }
        let params = b.upload(&self.params)?;
        let fdim = g.feature_dim();
        let mut inputs = vec![(gather_rows_to_root(g, &g.part.features, fdim)?, fdim)];
        let layers = model.sage_layers().len();
        let mut last = (Vec::new(), 0);
        embed_local_each(
            g,
            &b,
            &model,
            &params,
            self.stop,
            &mut |layer, rows, dim| {
                let full = gather_rows_to_root(g, rows, dim)?;
                if layer + 1 < layers {
                    inputs.push((full, dim));
                } else {
                    last = (full, dim);
                }
                Ok(())
            },
        )?;
        Ok((last.0, last.1, inputs))
    }
}

/// Rows gathered on rank 0 at a time.
const GATHER_BLOCK_BYTES: usize = 64 << 20;

/// A per-owned-node table gathered on rank 0 in global id order (empty elsewhere). A collective.
fn gather_rows_to_root(g: &DistGraph<'_>, table: &[f32], dim: usize) -> Result<Vec<f32>> {
    let n = g.part.meta.num_nodes;
    let block = (GATHER_BLOCK_BYTES / (dim * 4).max(1)).max(1) as u64;
    let mut out = Vec::new();
    if g.comm.is_root() {
        out.reserve(n as usize * dim);
    }
    for (_, ids) in g.root_id_blocks(block) {
        out.extend(g.exchange_rows(&ids, dim, table)?);
    }
    Ok(out)
}

/// Original ids and message-passing links of every node, on rank 0. A collective.
fn gather_graph(g: &DistGraph<'_>) -> Result<(Vec<u64>, Links)> {
    let part = g.part;
    let first = part.first_node();
    let mut orig = Vec::new();
    let mut indptr = vec![0u64];
    let mut indices = Vec::new();
    for (_, ids) in g.root_id_blocks(1 << 20) {
        let (_, o) = g.ask_owners(&ids, |id, out: &mut Vec<u64>| {
            out.push(part.orig_id[(id - first) as usize])
        })?;
        orig.extend(o);
        let (counts, nbrs) = g.ask_owners(&ids, |id, out: &mut Vec<u64>| {
            out.extend(part.neighbors(id).iter().map(|&v| v as u64))
        })?;
        for c in counts {
            indptr.push(indptr.last().copied().unwrap_or(0) + c as u64);
        }
        indices.extend(nbrs.into_iter().map(|v| v as u32));
    }
    Ok((orig, Links { indptr, indices }))
}

/// `/embedding` [n, dim] and `/orig_id` [n] of an embeddings file.
pub fn read_embeddings(path: &Path) -> Result<(Vec<f32>, usize, Vec<u64>)> {
    crate::graph::store::init_hdf5();
    let h = |e: hdf5::Error| Error::hdf5(path, e);
    let file = hdf5::File::open(path).map_err(h)?;
    let ds = file
        .dataset("embedding")
        .map_err(|e| Error::invalid(path, format!("no /embedding dataset: {e}")))?;
    let shape = ds.shape();
    if shape.len() != 2 {
        return Err(Error::invalid(
            path,
            format!("/embedding has shape {shape:?}, expected [n, dim]"),
        ));
    }
    let emb: Vec<f32> = ds.read_raw().map_err(h)?;
    let orig: Vec<u64> = file
        .dataset("orig_id")
        .map_err(|e| Error::invalid(path, format!("no /orig_id dataset: {e}")))?
        .read_raw()
        .map_err(h)?;
    if orig.len() != shape[0] {
        return Err(Error::invalid(
            path,
            format!(
                "/orig_id has {} ids for {} embeddings",
                orig.len(),
                shape[0]
            ),
        ));
    }
    if let Some(i) = emb.iter().position(|x| !x.is_finite()) {
        return Err(Error::invalid(
            path,
            format!(
                "/embedding row {} holds a non-finite value",
                i / shape[1].max(1)
            ),
        ));
    }
    Ok((emb, shape[1], orig))
}
