//! What the server holds once ready, and how it answers a query: every node's final embedding,
//! the original ids and the training graph's links, the retrieval index, and (for a GraphSAGE
//! checkpoint) the inputs of every layer, so that a new paper's embedding is computed from its
//! references exactly as layer-wise inference computes a stored paper's.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use super::index::{dot, fit_linear, top_by_score, Ivf};
use crate::backend::{CpuBackend, Memory};
use crate::error::{Error, Result};
use crate::nn::model::{Model, ModelConfig};
use crate::sample::block::Block;
use crate::sample::rng::{below, hash};

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
                let scorer = Scorer::new(&scoring, &layer_inputs)?;
                fit_surrogate(&scorer, &emb, dim, links.as_ref())?
            }
        };
        let index = Ivf::build(&backend, &emb, dim, nlist, 0x5e77e)?;
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
    model: Option<(Model<CpuBackend>, Vec<f32>)>,
}

impl Scorer {
    pub fn new(scoring: &Scoring, _layer_inputs: &[(Vec<f32>, usize)]) -> Result<Scorer> {
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
        Ok(Scorer { backend, model })
    }

    /// Exact scores of row-aligned pairs (`[m, dim]` each).
    fn score(&self, a: &[f32], b: &[f32], dim: usize) -> Result<Vec<f32>> {
        match &self.model {
            None => Ok(a
                .par_chunks(dim)
                .zip(b.par_chunks(dim))
                .map(|(x, y)| dot(x, y))
                .collect()),
            Some((model, params)) => {
                let be = &self.backend;
                model.score_pairs(be, params, &be.upload(a)?, &be.upload(b)?)
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
        // Sources: the new paper first, then its distinct references in order of first
        // mention; one edge per mention (as the stored graph's lists).
        let mut src: Vec<u64> = vec![u64::MAX];
        let mut pos: HashMap<u32, u32> = HashMap::new();
        let mut indices = Vec::with_capacity(references.len());
        for &r in references {
            let p = *pos.entry(r).or_insert_with(|| {
                src.push(r as u64);
                (src.len() - 1) as u32
            });
            indices.push(p);
        }
        let block = Block::new(src.clone(), 1, vec![0, indices.len() as u32], indices)?;
        let mut h = features.to_vec();
        for (layer, (table, dim)) in m.layer_inputs.iter().enumerate() {
            let dim = *dim;
            let mut rows = Vec::with_capacity(src.len() * dim);
            rows.extend_from_slice(&h);
            for &id in &src[1..] {
                rows.extend_from_slice(&table[id as usize * dim..(id as usize + 1) * dim]);
            }
            let be = &self.backend;
            let out = model.layer_forward(be, params, layer, &block, &be.upload(&rows)?)?;
            h = be.download(&out)?;
        }
        Ok(h)
    }

    /// Answers a batch of queries together: one exact-scoring pass over all their shortlists.
    pub fn answer(&self, m: &ServedModel, queries: &[Query]) -> Vec<Result<Answer>> {
        let dim = m.dim;
        // Per query: its embedding, the ids it must not list, and its candidates.
        let prepared: Vec<Result<(Vec<f32>, HashSet<u32>, Vec<u32>)>> = queries
            .iter()
            .map(|q| {
                let (emb, mut excluded) = match &q.subject {
                    Subject::Known(id) => {
                        let links = if q.include_known {
                            HashSet::new()
                        } else {
                            m.links
                                .as_ref()
                                .map(|l| l.of(*id).iter().copied().collect())
                                .unwrap_or_default()
                        };
                        (m.row(*id).to_vec(), links)
                    }
                    Subject::New {
                        features,
                        references,
                    } => {
                        let emb = self.embed_new(m, features, references)?;
                        let refs = if q.include_known {
                            HashSet::new()
                        } else {
                            references.iter().copied().collect()
                        };
                        (emb, refs)
                    }
                };
                if let Subject::Known(id) = q.subject {
                    excluded.insert(id);
                }
                let candidates: Vec<u32> = if q.exact {
                    (0..m.num_nodes() as u32)
                        .filter(|c| !excluded.contains(c))
                        .collect()
                } else {
                    let want = m.retrieval.shortlist.max(q.top_k) + excluded.len();
                    let probe: Vec<f32> =
                        emb.iter().zip(&m.surrogate).map(|(x, a)| x * a).collect();
                    m.index
                        .search(&m.emb, &probe, m.retrieval.nprobe, want)
                        .into_iter()
                        .filter(|c| !excluded.contains(c))
                        .collect()
                };
                Ok((emb, excluded, candidates))
            })
            .collect();
        // All shortlists scored in one pass, in bounded chunks.
        let mut pairs: Vec<(usize, u32)> = Vec::new();
        for (qi, p) in prepared.iter().enumerate() {
            if let Ok((_, _, cands)) = p {
                pairs.extend(cands.iter().map(|&c| (qi, c)));
            }
        }
        let mut scores = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(SCORE_ROWS) {
            let mut a = Vec::with_capacity(chunk.len() * dim);
            let mut b = Vec::with_capacity(chunk.len() * dim);
            for &(qi, c) in chunk {
                if let Ok((emb, _, _)) = &prepared[qi] {
                    a.extend_from_slice(emb);
                }
                b.extend_from_slice(m.row(c));
            }
            match self.score(&a, &b, dim) {
                Ok(s) => scores.extend(s),
                Err(e) => return queries.iter().map(|_| Err(clone_err(&e))).collect(),
            }
        }
        let mut per_query: Vec<Vec<(f32, u32)>> = vec![Vec::new(); queries.len()];
        for (&(qi, c), &s) in pairs.iter().zip(&scores) {
            per_query[qi].push((s, c));
        }
        prepared
            .into_iter()
            .zip(per_query)
            .zip(queries)
            .map(|((p, mut found), q)| {
                let (emb, _, _) = p?;
                top_by_score(&mut found, q.top_k);
                Ok(Answer {
                    candidates: found
                        .into_iter()
                        .map(|(s, id)| (m.orig_ids[id as usize], s))
                        .collect(),
                    embedding: q.want_embedding.then_some(emb),
                })
            })
            .collect()
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
