//! What the server holds once ready, and how it answers a query: every node's final embedding,
//! the original ids and the training graph's links, the retrieval index, and (for a GraphSAGE
//! checkpoint) the inputs of every layer, so that a new paper's embedding is computed from its
//! references exactly as layer-wise inference computes a stored paper's.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use super::index::{fit_linear, top_by_score, Ivf};
use crate::backend::{CpuBackend, Memory};
use crate::error::{Error, Result};
use crate::nn::model::{Model, ModelConfig};
use crate::sample::block::Block;
use crate::sample::rng::{below, hash};
use crate::util::dot;

/// How pairs are scored exactly.
#[derive(Clone)]
pub enum Scoring {
    /// The checkpoint's link predictor (an MLP on `h_u ⊙ h_v`).
    Predictor {
        config: ModelConfig,
        params: Vec<f32>,
    },
    /// `h_u · h_v` (walk embeddings).
    Dot,
}

/// Message-passing links of every node (global ids), CSR.
pub struct Links {
    pub indptr: Vec<u64>,
    pub indices: Vec<u32>,
}

impl Links {
    pub fn of(&self, id: u32) -> &[u32] {
        let i = id as usize;
        &self.indices[self.indptr[i] as usize..self.indptr[i + 1] as usize]
    }
}

/// Retrieval settings.
#[derive(Clone, Copy, Debug)]
pub struct Retrieval {
    /// Candidates re-scored exactly per query (at least `top_k` plus the excluded links).
    pub shortlist: usize,
    /// Clusters probed per query.
    pub nprobe: usize,
    /// Values per code of the index (0: the embeddings' width; fewer: principal directions).
    pub code_dim: usize,
}

/// Everything a query needs, immutable once built (shared by the HTTP threads and the scorer).
pub struct ServedModel {
    pub name: String,
    pub orig_ids: Vec<u64>,
    id_of: HashMap<u64, u32>,
    pub links: Option<Links>,
    /// `[n, dim]` final embeddings in global id order.
    pub emb: Vec<f32>,
    pub dim: usize,
    /// Inputs of every SAGE layer for every node (layer 0: the features), when new papers can
    /// be embedded.
    pub layer_inputs: Vec<(Vec<f32>, usize)>,
    pub scoring: Scoring,
    /// `q_u = surrogate ⊙ h_u` is the retrieval query of paper `u`.
    pub surrogate: Vec<f32>,
    pub index: Ivf,
    pub retrieval: Retrieval,
}

/// Who a query is about.
#[derive(Clone, Debug)]
pub enum Subject {
    /// A paper of the graph (global id).
    Known(u32),
    /// A new paper: its feature row and the papers it cites (global ids).
    New {
        features: Vec<f32>,
        references: Vec<u32>,
    },
}

#[derive(Clone, Debug)]
pub struct Query {
    pub subject: Subject,
    pub top_k: usize,
    /// List papers the subject already links to as well.
    pub include_known: bool,
    /// Score every node instead of the index's shortlist.
    pub exact: bool,
    pub want_embedding: bool,
}

/// Ranked candidates `(original id, score)`, best first.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub candidates: Vec<(u64, f32)>,
    pub embedding: Option<Vec<f32>>,
}

/// Rows of exact scores computed per call (bounds the scorer's buffers).
const SCORE_ROWS: usize = 32768;
/// Best candidates of the first pass whose mean is the point the second pass linearises at.
const LOCAL_FIT_ROWS: usize = 10;
/// Pairs sampled to fit the retrieval surrogate.
const SURROGATE_PAIRS: usize = 16384;

impl ServedModel {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        orig_ids: Vec<u64>,
        links: Option<Links>,
        emb: Vec<f32>,
        dim: usize,
        layer_inputs: Vec<(Vec<f32>, usize)>,
        scoring: Scoring,
        retrieval: Retrieval,
        nlist: usize,
    ) -> Result<ServedModel> {
        let n = orig_ids.len();
        if emb.len() != n * dim {
            return Err(Error::Other(format!(
                "embeddings hold {} values, expected {n} rows x {dim}",
                emb.len()
            )));
        }
        if let Scoring::Predictor { config, .. } = &scoring {
            if config.hidden != dim {
                return Err(Error::config(
                    "embeddings",
                    format!(
                        "embeddings of width {dim} for a predictor of width {}",
                        config.hidden
                    ),
                ));
            }
        }
        let mut id_of = HashMap::with_capacity(n);
        for (i, &o) in orig_ids.iter().enumerate() {
            if id_of.insert(o, i as u32).is_some() {
                return Err(Error::Other(format!("original id {o} appears twice")));
            }
        }
        let backend = CpuBackend::on_global_pool();
        let surrogate = match &scoring {
            Scoring::Dot => vec![1.0; dim],
            Scoring::Predictor { .. } => {
                let scorer = Scorer::new(&scoring)?;
                fit_surrogate(&scorer, &emb, dim, links.as_ref())?
            }
        };
        let index = Ivf::build(&backend, &emb, dim, nlist, retrieval.code_dim, 0x5e77e)?;
        Ok(ServedModel {
            name,
            orig_ids,
            id_of,
            links,
            emb,
            dim,
            layer_inputs,
            scoring,
            surrogate,
            index,
            retrieval,
        })
    }

    pub fn num_nodes(&self) -> usize {
        self.orig_ids.len()
    }

    /// Global id of an original id.
    pub fn resolve(&self, orig: u64) -> Option<u32> {
        self.id_of.get(&orig).copied()
    }

    /// Width of a new paper's feature row, when new papers can be embedded.
    pub fn feature_dim(&self) -> Option<usize> {
        self.layer_inputs.first().map(|l| l.1)
    }

    fn row(&self, id: u32) -> &[f32] {
        &self.emb[id as usize * self.dim..(id as usize + 1) * self.dim]
    }

    /// Bytes of the tables held (embeddings, layer inputs, links).
    pub fn resident_bytes(&self) -> usize {
        let layers: usize = self.layer_inputs.iter().map(|l| l.0.len() * 4).sum();
        let links = self
            .links
            .as_ref()
            .map_or(0, |l| l.indptr.len() * 8 + l.indices.len() * 4);
        self.emb.len() * 4 + layers + links + self.orig_ids.len() * 8
    }
}

/// The exact scorer and new-paper embedder; one per scoring thread (it owns its buffers).
pub struct Scorer {
    backend: CpuBackend,
    /// A one-thread backend for a new paper's layers: their products are a few rows.
    small: CpuBackend,
    model: Option<(Model<CpuBackend>, Vec<f32>)>,
}

impl Scorer {
    pub fn new(scoring: &Scoring) -> Result<Scorer> {
        let backend = CpuBackend::on_global_pool();
        let model = match scoring {
            Scoring::Dot => None,
            Scoring::Predictor { config, params } => {
                let model = Model::<CpuBackend>::new(config.clone())?;
                if model.num_params() != params.len() {
                    return Err(Error::Other(format!(
                        "checkpoint holds {} parameters, its model needs {}",
                        params.len(),
                        model.num_params()
                    )));
                }
                Some((model, params.clone()))
            }
        };
        let small = CpuBackend::new(1)?;
        Ok(Scorer {
            backend,
            small,
            model,
        })
    }

    /// Exact scores of row-aligned pairs (`[m, dim]` each).
    fn score(&self, a: &[f32], b: &[f32], dim: usize) -> Result<Vec<f32>> {
        let d = dim.max(1);
        self.score_with(dim, a.len() / d, |i| {
            (&a[i * d..(i + 1) * d], &b[i * d..(i + 1) * d])
        })
    }

    /// Exact scores of `rows` pairs, pair `i` being the two embeddings `pair(i)`. The
    /// predictor's input (their product) is formed in place on the pool's threads, not copied
    /// out first. Every batch runs on the pool: its workers are awake from the index search
    /// just before (a 50-candidate query: 0.84 -> 0.34 ms against one thread).
    fn score_with<'a>(
        &self,
        dim: usize,
        rows: usize,
        pair: impl Fn(usize) -> (&'a [f32], &'a [f32]) + Sync,
    ) -> Result<Vec<f32>> {
        let be = &self.backend;
        match &self.model {
            None => Ok(be.install(|| {
                (0..rows)
                    .into_par_iter()
                    .map(|i| {
                        let (x, y) = pair(i);
                        dot(x, y)
                    })
                    .collect()
            })),
            Some((model, params)) => {
                let x0 = be.upload_with(rows * dim, &mut |buf| {
                    be.install(|| {
                        buf.par_chunks_mut(dim.max(1))
                            .enumerate()
                            .for_each(|(i, out)| {
                                let (x, y) = pair(i);
                                for ((o, &p), &q) in out.iter_mut().zip(x).zip(y) {
                                    *o = p * q;
                                }
                            })
                    });
                    Ok(())
                })?;
                let scores = model.score_products(be, params, &x0, rows);
                be.recycle(x0);
                scores
            }
        }
    }

    /// A new paper's final embedding: layer by layer, its row from its own previous row and
    /// the mean of its references' rows, as layer-wise inference computes a stored paper's.
    fn embed_new(&self, m: &ServedModel, features: &[f32], references: &[u32]) -> Result<Vec<f32>> {
        let Some((model, params)) = &self.model else {
            return Err(Error::config(
                "features",
                "this model has no GNN to embed a new paper",
            ));
        };
        // The new paper's id in the block: one no stored paper has (ids are only labels here).
        let refs = references.iter().map(|&r| r as u64);
        let block = Block::with_all_neighbors(vec![m.num_nodes() as u64], [refs])?;
        let mut h = features.to_vec();
        for (layer, (table, dim)) in m.layer_inputs.iter().enumerate() {
            let dim = *dim;
            let mut rows = Vec::with_capacity(block.num_src() * dim);
            rows.extend_from_slice(&h);
            for &id in &block.src_nodes[1..] {
                rows.extend_from_slice(&table[id as usize * dim..(id as usize + 1) * dim]);
            }
            let be = &self.small;
            let out = model.layer_forward(be, params, layer, &block, &be.upload(&rows)?)?;
            h = be.download(&out)?;
        }
        Ok(h)
    }

    /// Exact scores of each query embedding against its candidate set, all sets in one
    /// batched pass (bounded chunks).
    fn score_sets(
        &self,
        m: &ServedModel,
        embs: &[&[f32]],
        sets: &[Vec<u32>],
    ) -> Result<Vec<Vec<(f32, u32)>>> {
        let dim = m.dim;
        let pairs: Vec<(usize, u32)> = sets
            .iter()
            .enumerate()
            .flat_map(|(qi, s)| s.iter().map(move |&c| (qi, c)))
            .collect();
        let mut out: Vec<Vec<(f32, u32)>> =
            sets.iter().map(|s| Vec::with_capacity(s.len())).collect();
        for chunk in pairs.chunks(SCORE_ROWS) {
            let scores = self.score_with(dim, chunk.len(), |i| {
                let (qi, c) = chunk[i];
                (embs[qi], m.row(c))
            })?;
            for (&(qi, c), s) in chunk.iter().zip(scores) {
                out[qi].push((s, c));
            }
        }
        Ok(out)
    }

    /// The predictor's gradient with respect to its input at `x` (one row, on the host).
    fn input_gradient(&self, x: &[f32]) -> Option<Vec<f32>> {
        let (model, params) = self.model.as_ref()?;
        let layers = &model.predictor()?.layers;
        // Forward, keeping each layer's pre-activation.
        let mut pre: Vec<Vec<f32>> = Vec::with_capacity(layers.len());
        let mut h = x.to_vec();
        for (l, layer) in layers.iter().enumerate() {
            let w = &params[layer.weight..layer.weight + layer.in_dim * layer.out_dim];
            let mut z = params[layer.bias..layer.bias + layer.out_dim].to_vec();
            for (i, &hi) in h.iter().enumerate() {
                if hi != 0.0 {
                    for (zj, &wij) in z
                        .iter_mut()
                        .zip(&w[i * layer.out_dim..(i + 1) * layer.out_dim])
                    {
                        *zj += hi * wij;
                    }
                }
            }
            h = if l + 1 < layers.len() {
                z.iter().map(|&v| v.max(0.0)).collect()
            } else {
                z.clone()
            };
            pre.push(z);
        }
        // Backward from d(logit) = 1.
        let mut g = vec![1.0f32; layers.last()?.out_dim];
        for (l, layer) in layers.iter().enumerate().rev() {
            if l + 1 < layers.len() {
                for (gj, &zj) in g.iter_mut().zip(&pre[l]) {
                    if zj <= 0.0 {
                        *gj = 0.0;
                    }
                }
            }
            let w = &params[layer.weight..layer.weight + layer.in_dim * layer.out_dim];
            g = (0..layer.in_dim)
                .map(|i| dot(&w[i * layer.out_dim..(i + 1) * layer.out_dim], &g))
                .collect();
        }
        Some(g)
    }

    /// Answers a batch of queries together. Each query is shortlisted by the index with the
    /// global surrogate; the shortlist is scored exactly; then (for a predictor) the predictor
    /// is linearised at the product with the mean of the best candidates so far, and a second
    /// shortlist from that local surrogate is scored too. Both exact passes cover every query
    /// of the batch at once.
    pub fn answer(&self, m: &ServedModel, queries: &[Query]) -> Vec<Result<Answer>> {
        match self.answer_all(m, queries) {
            Ok(v) => v,
            Err(e) => queries.iter().map(|_| Err(clone_err(&e))).collect(),
        }
    }

    fn answer_all(&self, m: &ServedModel, queries: &[Query]) -> Result<Vec<Result<Answer>>> {
        let t0 = std::time::Instant::now();
        // Per query: its embedding and the ids it must not list.
        let prepared: Vec<Result<(Vec<f32>, HashSet<u32>)>> = queries
            .iter()
            .map(|q| {
                Ok(match &q.subject {
                    Subject::Known(id) => {
                        let mut excluded: HashSet<u32> = if q.include_known {
                            HashSet::new()
                        } else {
                            m.links
                                .as_ref()
                                .map(|l| l.of(*id).iter().copied().collect())
                                .unwrap_or_default()
                        };
                        excluded.insert(*id);
                        (m.row(*id).to_vec(), excluded)
                    }
                    Subject::New {
                        features,
                        references,
                    } => {
                        let emb = self.embed_new(m, features, references)?;
                        let excluded = if q.include_known {
                            HashSet::new()
                        } else {
                            references.iter().copied().collect()
                        };
                        (emb, excluded)
                    }
                })
            })
            .collect();
        let ok: Vec<usize> = (0..queries.len())
            .filter(|&i| prepared[i].is_ok())
            .collect();
        let emb_of =
            |i: usize| -> &[f32] { prepared[i].as_ref().map(|p| p.0.as_slice()).unwrap_or(&[]) };
        let excluded_of = |i: usize| prepared[i].as_ref().map(|p| &p.1);
        // Index searches of the batch's queries in one batched scan: `probes[k]` is the k-th
        // searched query's (position in `ok`, probe, ids to skip besides its exclusions, size).
        let shortlists = |probes: Vec<(usize, Vec<f32>, HashSet<u32>, usize)>| -> Vec<Vec<u32>> {
            let mut out = vec![Vec::new(); ok.len()];
            let wants: Vec<usize> = probes
                .iter()
                .map(|(k, _, skip, size)| {
                    let excl = excluded_of(ok[*k]).map_or(0, |e| e.len());
                    (*size).max(queries[ok[*k]].top_k) + excl + skip.len()
                })
                .collect();
            let batch: Vec<(&[f32], usize)> = probes
                .iter()
                .zip(&wants)
                .map(|((_, p, _, _), &w)| (p.as_slice(), w))
                .collect();
            let found = m.index.search_batch(&batch, m.retrieval.nprobe);
            for ((k, _, skip, _), ids) in probes.iter().zip(found) {
                let Ok(excl) = excluded_of(ok[*k]) else {
                    continue;
                };
                out[*k] = ids
                    .into_iter()
                    .filter(|c| !excl.contains(c) && !skip.contains(c))
                    .collect();
            }
            out
        };
        // The first pass only has to find the neighbourhood the second pass linearises at:
        // half the shortlist. Exact queries take every paper instead.
        let first_size = if self.model.is_some() {
            m.retrieval.shortlist.div_ceil(2)
        } else {
            m.retrieval.shortlist
        };
        let mut first = shortlists(
            ok.iter()
                .enumerate()
                .filter(|&(_, &i)| !queries[i].exact)
                .map(|(k, &i)| {
                    let probe: Vec<f32> = emb_of(i)
                        .iter()
                        .zip(&m.surrogate)
                        .map(|(x, a)| x * a)
                        .collect();
                    (k, probe, HashSet::new(), first_size)
                })
                .collect(),
        );
        for (k, &i) in ok.iter().enumerate() {
            if queries[i].exact {
                if let Ok(excl) = excluded_of(i) {
                    first[k] = (0..m.num_nodes() as u32)
                        .filter(|c| !excl.contains(c))
                        .collect();
                }
            }
        }
        let embs: Vec<&[f32]> = ok.iter().map(|&i| emb_of(i)).collect();
        let t1 = t0.elapsed();
        let mut found = self.score_sets(m, &embs, &first)?;
        let t2 = t0.elapsed();
        // The second, local pass (predictor models, fast path only).
        if self.model.is_some() {
            let probes: Vec<(usize, Vec<f32>, HashSet<u32>, usize)> = ok
                .par_iter()
                .enumerate()
                .zip(found.par_iter())
                .filter_map(|((k, &i), f)| {
                    if queries[i].exact || f.is_empty() {
                        return None;
                    }
                    let mut best = f.clone();
                    top_by_score(&mut best, LOCAL_FIT_ROWS);
                    let mut mean = vec![0f32; m.dim];
                    for &(_, c) in &best {
                        for (s, &x) in mean.iter_mut().zip(m.row(c)) {
                            *s += x / best.len() as f32;
                        }
                    }
                    let e = emb_of(i);
                    let x0: Vec<f32> = e.iter().zip(&mean).map(|(a, b)| a * b).collect();
                    let g = self.input_gradient(&x0)?;
                    let probe: Vec<f32> = e.iter().zip(&g).map(|(x, a)| x * a).collect();
                    let seen: HashSet<u32> = f.iter().map(|x| x.1).collect();
                    Some((k, probe, seen, m.retrieval.shortlist))
                })
                .collect();
            let second = shortlists(probes);
            let t3 = t0.elapsed();
            for (f, more) in found.iter_mut().zip(self.score_sets(m, &embs, &second)?) {
                f.extend(more);
            }
            log::debug!(
                "batch of {}: first shortlist {t1:?}, scored {t2:?}, second shortlist {t3:?}, scored {:?}",
                queries.len(),
                t0.elapsed()
            );
        }
        let mut per_query: Vec<Option<Vec<(f32, u32)>>> = vec![None; queries.len()];
        for (&i, f) in ok.iter().zip(found) {
            per_query[i] = Some(f);
        }
        Ok(prepared
            .into_iter()
            .zip(per_query)
            .zip(queries)
            .map(|((p, found), q)| {
                let (emb, _) = p?;
                let mut found = found.unwrap_or_default();
                top_by_score(&mut found, q.top_k);
                Ok(Answer {
                    candidates: found
                        .into_iter()
                        .map(|(s, id)| (m.orig_ids[id as usize], s))
                        .collect(),
                    embedding: q.want_embedding.then_some(emb),
                })
            })
            .collect())
    }
}

fn clone_err(e: &Error) -> Error {
    Error::Other(e.to_string())
}

/// The retrieval surrogate of a predictor: least squares of its logits on `h_u ⊙ h_v` over
/// seeded pairs, half of them links of the graph (when known) and half uniform.
fn fit_surrogate(
    scorer: &Scorer,
    emb: &[f32],
    dim: usize,
    links: Option<&Links>,
) -> Result<Vec<f32>> {
    let n = emb.len() / dim;
    let mut a = Vec::with_capacity(SURROGATE_PAIRS * dim);
    let mut b = Vec::with_capacity(SURROGATE_PAIRS * dim);
    for i in 0..SURROGATE_PAIRS as u64 {
        let u = below(hash(0x5a, 0, 0, 1, i, 0), n as u64) as usize;
        let linked = links.map(|l| l.of(u as u32)).filter(|l| !l.is_empty());
        let v = match linked {
            Some(l) if i % 2 == 0 => {
                l[below(hash(0x5a, 0, 0, 2, i, 0), l.len() as u64) as usize] as usize
            }
            _ => below(hash(0x5a, 0, 0, 3, i, 0), n as u64) as usize,
        };
        a.extend_from_slice(&emb[u * dim..(u + 1) * dim]);
        b.extend_from_slice(&emb[v * dim..(v + 1) * dim]);
    }
    let y = scorer.score(&a, &b, dim)?;
    let x: Vec<f32> = a.iter().zip(&b).map(|(p, q)| p * q).collect();
    fit_linear(&x, &y, dim, 1e-3)
}
