//! The retrieval stage of the server: an inverted-file index (IVF) over the node embeddings
//! and the linear surrogate of the link predictor that queries it.
//!
//! The predictor is an MLP on `h_u ⊙ h_v`, so its exact top-k scores every candidate. The
//! server first shortlists candidates by an inner product `q_u · h_v` with `q_u = a ⊙ h_u`,
//! where `a` is the least-squares fit of the predictor's logits on `h_u ⊙ h_v` over sampled
//! pairs (half of them training edges, so the fit sees the high-scoring region); a dot-product
//! model has `a = 1` and the shortlist is exact for it. The index clusters the embeddings with
//! k-means (deterministic: seeded by the counter-based hash, sums in row order), probes the
//! `nprobe` clusters whose centroids score highest for `q_u`, and returns the best rows of those
//! clusters by `q_u · h_v`; the exact scorer then ranks the shortlist.

use std::sync::atomic::{AtomicI32, Ordering};

use rayon::prelude::*;

use crate::backend::{CpuBackend, DenseOps};
use crate::error::{Error, Result};
use crate::sample::rng::{below, hash};
use crate::util::dot;

use super::scan::{self, Isa, QueryCode};

/// Lloyd iterations of the index's k-means.
const KMEANS_ITERS: usize = 8;
/// Training rows of k-means per cluster (FAISS's advice: 30 to 256).
const KMEANS_ROWS_PER_CLUSTER: usize = 64;
/// Parallel groups of an index search per pool thread. A group keeps the best rows of each
/// query it scans and only rows above the worst of those once it has enough, so fewer, larger
/// groups push and select fewer rows; several per thread balance the load.
const SCAN_GROUPS_PER_THREAD: usize = 4;
/// Rows ahead of the scan whose codes are asked for into L2.
const SCAN_AHEAD_ROWS: usize = 16;
/// Rows a query's scan buffer holds beyond twice its `want` before it is cut back to `want`.
const KEEP_SLACK: usize = 64;
/// Rows per matrix product while assigning rows to clusters.
const ASSIGN_CHUNK: usize = 16384;

/// Clusters of the embedding rows and their members.
pub struct Ivf {
    pub dim: usize,
    pub nlist: usize,
    /// `[nlist, dim]` row-major.
    centroids: Vec<f32>,
    /// Members of cluster `c`: `list_ids[list_indptr[c]..list_indptr[c + 1]]`, ascending.
    list_indptr: Vec<u32>,
    list_ids: Vec<u32>,
    /// Width of a code: `dim`, or the number of principal directions the rows are projected on.
    pub code_dim: usize,
    /// `[dim, code_dim]` row-major: orthonormal columns spanning the rows' largest second
    /// moments (`None`: codes are the rows themselves).
    basis: Option<Vec<f32>>,
    /// The rows (projected on `basis`) quantised to 8 bits per value, in list order (row `p` is
    /// node `list_ids[p]`): a quarter of the bytes of the f32 rows or less, read front to back,
    /// for the shortlist's scan.
    codes: Vec<i8>,
    /// Per code column: value = code * scale.
    scale: Vec<f32>,
    isa: Isa,
}

/// Clusters for `n` rows when none are asked for: about `4 sqrt(n)` (finer clusters probe
/// better at the same share of rows scanned: recall@10 0.78 -> 0.83 on cit-HepTh at 10%).
pub fn default_nlist(n: usize) -> usize {
    ((4.0 * (n as f64).sqrt()).round() as usize).clamp(1, 16384)
}

impl Ivf {
    /// Clusters the `[n, dim]` rows of `vectors` into `nlist` lists, with codes of `code_dim`
    /// values per row (0 or at least `dim`: the rows themselves; fewer: the rows' coordinates on
    /// their `code_dim` principal directions of the uncentred second moment, so a scan reads
    /// and multiplies `code_dim / dim` of what it would, at the cost of the rows' remainder
    /// outside those directions).
    pub fn build(
        backend: &CpuBackend,
        vectors: &[f32],
        dim: usize,
        nlist: usize,
        code_dim: usize,
        seed: u64,
    ) -> Result<Ivf> {
        let n = vectors.len() / dim.max(1);
        if dim == 0 || n == 0 {
            return Err(Error::config("embeddings", "no rows to index"));
        }
        let nlist = nlist.clamp(1, n);
        // Training rows: an evenly spread, seeded sample.
        let train_rows = (nlist * KMEANS_ROWS_PER_CLUSTER).min(n);
        let train: Vec<u32> = if train_rows == n {
            (0..n as u32).collect()
        } else {
            let mut t: Vec<u32> = (0..train_rows as u64)
                .map(|i| below(hash(seed, 0, 0, 0x1f, i, 0), n as u64) as u32)
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        let train_vecs: Vec<f32> = train
            .iter()
            .flat_map(|&r| {
                vectors[r as usize * dim..(r as usize + 1) * dim]
                    .iter()
                    .copied()
            })
            .collect();
        let tn = train.len();
        // Initial centroids: distinct training rows picked by the hash.
        let mut picked: Vec<usize> = Vec::with_capacity(nlist);
        let mut seen = std::collections::HashSet::new();
        let mut k = 0u64;
        while picked.len() < nlist.min(tn) {
            let r = below(hash(seed, 0, 0, 0x2f, k, 0), tn as u64) as usize;
            k += 1;
            if seen.insert(r) || k > 64 * nlist as u64 {
                picked.push(r);
            }
        }
        let nlist = picked.len();
        let mut centroids: Vec<f32> = picked
            .iter()
            .flat_map(|&r| train_vecs[r * dim..(r + 1) * dim].iter().copied())
            .collect();
        for _ in 0..KMEANS_ITERS {
            let assign = assign_rows(backend, &train_vecs, dim, &centroids, nlist)?;
            // Sums in row order per cluster: the same centroids at any thread count.
            let mut sums = vec![0f64; nlist * dim];
            let mut counts = vec![0u64; nlist];
            for (r, &c) in assign.iter().enumerate() {
                counts[c as usize] += 1;
                let row = &train_vecs[r * dim..(r + 1) * dim];
                for (s, &x) in sums[c as usize * dim..(c as usize + 1) * dim]
                    .iter_mut()
                    .zip(row)
                {
                    *s += x as f64;
                }
            }
            for c in 0..nlist {
                if counts[c] > 0 {
                    for j in 0..dim {
                        centroids[c * dim + j] = (sums[c * dim + j] / counts[c] as f64) as f32;
                    }
                }
            }
        }
        let assign = assign_rows(backend, vectors, dim, &centroids, nlist)?;
        let mut list_indptr = vec![0u32; nlist + 1];
        for &c in &assign {
            list_indptr[c as usize + 1] += 1;
        }
        for c in 0..nlist {
            list_indptr[c + 1] += list_indptr[c];
        }
        let mut fill = list_indptr.clone();
        let mut list_ids = vec![0u32; n];
        for (r, &c) in assign.iter().enumerate() {
            list_ids[fill[c as usize] as usize] = r as u32;
            fill[c as usize] += 1;
        }
        let basis = (code_dim > 0 && code_dim < dim)
            .then(|| principal_basis(&train_vecs, dim, code_dim, seed));
        let code_dim = basis.as_ref().map_or(dim, |_| code_dim);
        let basis_ref = basis.as_deref();
        // Two passes over the rows (the largest value per code column, then the codes), each
        // row's code values computed in place: no f32 copy of the whole table.
        let mut scale = vectors
            .par_chunks(dim)
            .fold(
                || (vec![0f32; code_dim], vec![0f32; code_dim]),
                |(mut max, mut buf), row| {
                    code_values(basis_ref, code_dim, row, &mut buf);
                    for (m, &x) in max.iter_mut().zip(&buf) {
                        *m = m.max(x.abs());
                    }
                    (max, buf)
                },
            )
            .map(|(max, _)| max)
            .reduce(
                || vec![0f32; code_dim],
                |a, b| a.iter().zip(&b).map(|(x, y)| x.max(*y)).collect(),
            );
        scale
            .iter_mut()
            .for_each(|m| *m = if *m > 0.0 { *m / 127.0 } else { 1.0 });
        let mut codes = vec![0i8; n * code_dim];
        // Searches read the codes of whole clusters at scattered places: fewer TLB misses.
        crate::util::advise_huge_pages(&codes);
        codes
            .par_chunks_mut(code_dim)
            .zip(list_ids.par_iter())
            .for_each_init(
                || vec![0f32; code_dim],
                |buf, (code, &id)| {
                    let row = &vectors[id as usize * dim..(id as usize + 1) * dim];
                    code_values(basis_ref, code_dim, row, buf);
                    for ((c, &x), &sc) in code.iter_mut().zip(buf.iter()).zip(&scale) {
                        *c = (x / sc).round().clamp(-127.0, 127.0) as i8;
                    }
                },
            );
        Ok(Ivf {
            dim,
            nlist,
            centroids,
            list_indptr,
            list_ids,
            code_dim,
            basis,
            codes,
            scale,
            isa: Isa::detect(),
        })
    }

    /// For every `(query, want)`: up to `want` row ids with the largest `query · row` (rows as
    /// quantised) among the `nprobe` clusters whose centroids score highest for the query (ties
    /// by id), best first. All at once: each probed cluster is read once for all the queries
    /// that probe it (a batch's queries share the rows they read), the clusters in groups
    /// scanned in parallel. Each query gets the result it would get alone.
    pub fn search_batch(&self, queries: &[(&[f32], usize)], nprobe: usize) -> Vec<Vec<u32>> {
        let dim = self.dim;
        let nprobe = nprobe.clamp(1, self.nlist);
        // Per query: its clusters (those whose centroid scores highest; weighting in the
        // clusters' radii, an upper bound of their members' scores, measured worse: recall@10
        // 0.78 -> 0.75 at a weight of 0.05, 0.18 at 1) and its 16-bit query.
        let probes: Vec<(Vec<u32>, QueryCode)> = queries
            .par_iter()
            .map(|&(q, _)| {
                let mut scores = Vec::with_capacity(self.nlist);
                scan::f32_dots(self.isa, q, &self.centroids, dim, &mut scores);
                let mut cluster_scores: Vec<(f32, u32)> = scores.into_iter().zip(0u32..).collect();
                cluster_scores.select_nth_unstable_by(nprobe - 1, |a, b| {
                    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
                });
                let mut clusters: Vec<u32> = cluster_scores[..nprobe].iter().map(|x| x.1).collect();
                clusters.sort_unstable();
                let mut qc = vec![0f32; self.code_dim];
                code_values(self.basis.as_deref(), self.code_dim, q, &mut qc);
                let qs: Vec<f32> = qc.iter().zip(&self.scale).map(|(a, b)| a * b).collect();
                (clusters, QueryCode::new(&qs))
            })
            .collect();
        // Cluster -> the queries probing it, clusters in order.
        let mut by_cluster: Vec<(u32, Vec<u32>)> = Vec::new();
        {
            let mut lists: Vec<Vec<u32>> = vec![Vec::new(); self.nlist];
            for (qi, (clusters, _)) in probes.iter().enumerate() {
                for &c in clusters {
                    lists[c as usize].push(qi as u32);
                }
            }
            for (c, l) in lists.into_iter().enumerate() {
                if !l.is_empty() {
                    by_cluster.push((c as u32, l));
                }
            }
        }
        // Highest score, then lowest id: a total order on integer scores, so the same result
        // on any CPU and however the groups were split.
        let order = |a: &(i32, u32), b: &(i32, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
        let keep = |v: &mut Vec<(i32, u32)>, want: usize| {
            if v.len() > want {
                if want == 0 {
                    v.clear();
                } else {
                    v.select_nth_unstable_by(want - 1, order);
                    v.truncate(want);
                }
            }
        };
        let nq = queries.len();
        // Consecutive clusters in groups of about equal work (rows times queries).
        let groups: Vec<&[(u32, Vec<u32>)]> = {
            let work = |(c, members): &(u32, Vec<u32>)| {
                let c = *c as usize;
                (self.list_indptr[c + 1] - self.list_indptr[c]) as usize * members.len()
            };
            let total: usize = by_cluster.iter().map(work).sum();
            let parts = (rayon::current_num_threads() * SCAN_GROUPS_PER_THREAD).max(1);
            let per_group = total.div_ceil(parts).max(1);
            let mut groups = Vec::with_capacity(parts + 1);
            let (mut start, mut acc) = (0, 0);
            for (i, cm) in by_cluster.iter().enumerate() {
                acc += work(cm);
                if acc >= per_group {
                    groups.push(&by_cluster[start..=i]);
                    (start, acc) = (i + 1, 0);
                }
            }
            if start < by_cluster.len() {
                groups.push(&by_cluster[start..]);
            }
            groups
        };
        let shared_floor: Vec<AtomicI32> = (0..nq).map(|_| AtomicI32::new(i32::MIN)).collect();
        let mut found: Vec<Vec<(i32, u32)>> = groups
            .par_iter()
            .map(|&group| {
                let mut part: Vec<Vec<(i32, u32)>> = vec![Vec::new(); nq];
                // Per query: the lowest score that can still make its top `want` (the
                // `want`-th best kept once a buffer was cut, in this group or, through
                // `shared_floor`, another: `want` rows at or above it exist, so a lower one
                // never makes the answer); lower scores are not kept, equal ones are (their
                // ids decide). Which floor a group sees when only changes how much it keeps.
                let mut floor = vec![i32::MIN; nq];
                let next_cluster_start = |ci: usize| {
                    group
                        .get(ci + 1)
                        .map_or(0, |(c, _)| self.list_indptr[*c as usize] as usize)
                };
                for (ci, (c, members)) in group.iter().enumerate() {
                    for &qi in members {
                        let shared = shared_floor[qi as usize].load(Ordering::Relaxed);
                        floor[qi as usize] = floor[qi as usize].max(shared);
                    }
                    let (s, e) = (
                        self.list_indptr[*c as usize] as usize,
                        self.list_indptr[*c as usize + 1] as usize,
                    );
                    let cd = self.code_dim;
                    let code = |p: usize| &self.codes[p * cd..(p + 1) * cd];
                    // Four queries at a time against four rows at a time: each code is read
                    // once for the four queries, each query once for the four rows.
                    // The first quad reads the cluster's codes from memory: it asks for the
                    // rows SCAN_AHEAD_ROWS on (into the next cluster near the end), since the
                    // hardware's prefetcher stops at every 4 KiB page. The others find them
                    // in L2.
                    let next_s = next_cluster_start(ci);
                    let prefetch_ahead = |q: usize| {
                        let q = if q < e { q } else { next_s + (q - e) };
                        let at = (q * cd).min(self.codes.len());
                        crate::util::prefetch_lines(
                            self.codes[at..].as_ptr() as *const u8,
                            4 * cd,
                            false,
                        );
                    };
                    for (quad_no, quad) in members.chunks(4).enumerate() {
                        let first_quad = quad_no == 0;
                        let qs: Vec<&QueryCode> =
                            quad.iter().map(|&qi| &probes[qi as usize].1).collect();
                        // `scores[k][..rows]`: rows `p..p + rows` for query `quad[k]`. Most
                        // are below its floor once the first rows are in: that test first.
                        let mut offer = |p: usize, scores: [[i32; 4]; 4], rows: usize| {
                            for (&qi, row) in quad.iter().zip(&scores) {
                                let (qi, row) = (qi as usize, &row[..rows]);
                                if row.iter().all(|&score| score < floor[qi]) {
                                    continue;
                                }
                                for (r, &score) in row.iter().enumerate() {
                                    if score >= floor[qi] {
                                        let v = &mut part[qi];
                                        v.push((score, self.list_ids[p + r]));
                                        let want = queries[qi].1;
                                        if v.len() >= 2 * want + KEEP_SLACK {
                                            keep(v, want);
                                            // `keep` leaves the want-th best last.
                                            floor[qi] = v.last().map_or(i32::MIN, |x| x.0);
                                            shared_floor[qi]
                                                .fetch_max(floor[qi], Ordering::Relaxed);
                                        }
                                    }
                                }
                            }
                        };
                        let mut p = s;
                        while p + 4 <= e {
                            if first_quad {
                                prefetch_ahead(p + SCAN_AHEAD_ROWS);
                            }
                            let block = scan::dot_rows4(
                                self.isa,
                                &qs,
                                [code(p), code(p + 1), code(p + 2), code(p + 3)],
                            );
                            offer(p, block, 4);
                            p += 4;
                        }
                        for p in p..e {
                            let scores = scan::dot_many(self.isa, &qs, code(p));
                            offer(p, scores.map(|s| [s, 0, 0, 0]), 1);
                        }
                    }
                }
                for (v, &(_, want)) in part.iter_mut().zip(queries) {
                    keep(v, want);
                }
                part
            })
            .reduce(
                || vec![Vec::new(); nq],
                |mut a, b| {
                    for ((x, y), &(_, want)) in a.iter_mut().zip(b).zip(queries) {
                        x.extend(y);
                        keep(x, want);
                    }
                    a
                },
            );
        found
            .iter_mut()
            .zip(queries)
            .map(|(v, &(_, want))| {
                keep(v, want);
                v.sort_by(order);
                v.iter().map(|&(_, id)| id).collect()
            })
            .collect()
    }

    /// The instruction set of the scan.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The largest cluster's size (for logs: k-means on embeddings can be lopsided).
    pub fn max_list_len(&self) -> usize {
        self.list_indptr
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }
}

/// Rows of the second moment's sample for the principal directions.
const BASIS_ROWS: usize = 16384;
/// Subspace iterations for the principal directions.
const BASIS_ITERS: usize = 60;

/// The `k` code values of `x` (rows and queries alike): its coordinates on the basis columns,
/// `out[j] = sum_i basis[i][j] * x[i]`, or `x` itself without a basis.
fn code_values(basis: Option<&[f32]>, k: usize, x: &[f32], out: &mut [f32]) {
    let Some(basis) = basis else {
        out.copy_from_slice(x);
        return;
    };
    out.iter_mut().for_each(|o| *o = 0.0);
    for (&xi, brow) in x.iter().zip(basis.chunks_exact(k)) {
        for (o, &b) in out.iter_mut().zip(brow) {
            *o += xi * b;
        }
    }
}

/// `k` orthonormal directions (`[dim, k]` row-major) spanning the largest eigenvalues of the
/// uncentred second moment `sum x xᵀ` of (a seeded sample of) `rows`: subspace iteration from
/// a hashed start, in f64 on one thread, so the same basis on every machine and thread count.
fn principal_basis(rows: &[f32], dim: usize, k: usize, seed: u64) -> Vec<f32> {
    let n = rows.len() / dim;
    let step = n.div_ceil(BASIS_ROWS).max(1);
    // The second moment, upper triangle, from every `step`-th row.
    let mut m = vec![0f64; dim * dim];
    for row in rows.chunks_exact(dim).step_by(step) {
        for i in 0..dim {
            let xi = row[i] as f64;
            if xi == 0.0 {
                continue;
            }
            for (mij, &xj) in m[i * dim + i..(i + 1) * dim].iter_mut().zip(&row[i..]) {
                *mij += xi * xj as f64;
            }
        }
    }
    for i in 0..dim {
        for j in 0..i {
            m[i * dim + j] = m[j * dim + i];
        }
    }
    // q: k columns, stored as k rows of length dim.
    let mut q: Vec<f64> = (0..k * dim)
        .map(|i| unit_from_hash(hash(seed, 0, 0, 0x3f, i as u64, 0)))
        .collect();
    orthonormalise(&mut q, dim);
    let mut z = vec![0f64; k * dim];
    for _ in 0..BASIS_ITERS {
        for (zc, qc) in z.chunks_exact_mut(dim).zip(q.chunks_exact(dim)) {
            for (zi, mrow) in zc.iter_mut().zip(m.chunks_exact(dim)) {
                *zi = mrow.iter().zip(qc).map(|(a, b)| a * b).sum();
            }
        }
        std::mem::swap(&mut q, &mut z);
        orthonormalise(&mut q, dim);
    }
    let mut basis = vec![0f32; dim * k];
    for (j, qc) in q.chunks_exact(dim).enumerate() {
        for (i, &v) in qc.iter().enumerate() {
            basis[i * k + j] = v as f32;
        }
    }
    basis
}

/// A value in [-1, 1) from a hash.
fn unit_from_hash(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Modified Gram-Schmidt over the rows (length `dim`) of `q`, in order; a row that vanishes
/// becomes a unit vector orthogonal to the others where one is found.
fn orthonormalise(q: &mut [f64], dim: usize) {
    let k = q.len() / dim;
    for j in 0..k {
        for _pass in 0..2 {
            for p in 0..j {
                let (done, rest) = q.split_at_mut(j * dim);
                let prev = &done[p * dim..(p + 1) * dim];
                let cur = &mut rest[..dim];
                let d: f64 = prev.iter().zip(cur.iter()).map(|(a, b)| a * b).sum();
                for (c, &a) in cur.iter_mut().zip(prev) {
                    *c -= d * a;
                }
            }
        }
        let cur = &mut q[j * dim..(j + 1) * dim];
        let norm = cur.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > 1e-300 {
            cur.iter_mut().for_each(|x| *x /= norm);
        } else {
            cur.iter_mut().for_each(|x| *x = 0.0);
            cur[j % dim] = 1.0;
        }
    }
}

/// Keeps the `want` best `(score, id)` (highest score, then lowest id), sorted best first.
pub fn top_by_score(v: &mut Vec<(f32, u32)>, want: usize) {
    let order = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if want == 0 {
        v.clear();
        return;
    }
    if v.len() > want {
        v.select_nth_unstable_by(want - 1, order);
        v.truncate(want);
    }
    v.sort_by(order);
}

/// The nearest centroid (largest `x·c - |c|²/2`, i.e. smallest distance) of every row.
fn assign_rows(
    backend: &CpuBackend,
    rows: &[f32],
    dim: usize,
    centroids: &[f32],
    nlist: usize,
) -> Result<Vec<u32>> {
    let n = rows.len() / dim;
    let half_norms: Vec<f32> = centroids
        .chunks_exact(dim)
        .map(|c| 0.5 * dot(c, c))
        .collect();
    let cvec = centroids.to_vec();
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(ASSIGN_CHUNK) {
        let end = (start + ASSIGN_CHUNK).min(n);
        let m = end - start;
        let x = rows[start * dim..end * dim].to_vec();
        let mut prod = vec![0f32; m * nlist];
        backend.gemm(
            false,
            true,
            m,
            nlist,
            dim,
            1.0,
            (&x, 0),
            (&cvec, 0),
            0.0,
            (&mut prod, 0),
        )?;
        let best: Vec<u32> = prod
            .par_chunks(nlist)
            .map(|p| {
                let mut bi = 0usize;
                let mut bv = f32::NEG_INFINITY;
                for (c, (&v, &h)) in p.iter().zip(&half_norms).enumerate() {
                    let s = v - h;
                    if s > bv {
                        bv = s;
                        bi = c;
                    }
                }
                bi as u32
            })
            .collect();
        out.extend(best);
    }
    Ok(out)
}

/// Least-squares weights `a` (ridge `lambda` on the mean diagonal) with `y ≈ a · x` for the
/// `[m, dim]` rows `x`; solved in f64 by Cholesky.
pub fn fit_linear(x: &[f32], y: &[f32], dim: usize, lambda: f64) -> Result<Vec<f32>> {
    let m = y.len();
    let mut xtx = vec![0f64; dim * dim];
    let mut xty = vec![0f64; dim];
    for r in 0..m {
        let row = &x[r * dim..(r + 1) * dim];
        for i in 0..dim {
            let xi = row[i] as f64;
            xty[i] += xi * y[r] as f64;
            for j in 0..=i {
                xtx[i * dim + j] += xi * row[j] as f64;
            }
        }
    }
    let mean_diag = (0..dim).map(|i| xtx[i * dim + i]).sum::<f64>() / dim as f64;
    let ridge = lambda * mean_diag.max(1e-12);
    for i in 0..dim {
        xtx[i * dim + i] += ridge;
        for j in 0..i {
            xtx[j * dim + i] = xtx[i * dim + j];
        }
    }
    // Cholesky: xtx = L L^T.
    let mut l = vec![0f64; dim * dim];
    for i in 0..dim {
        for j in 0..=i {
            let mut s = xtx[i * dim + j];
            for k in 0..j {
                s -= l[i * dim + k] * l[j * dim + k];
            }
            if i == j {
                if s <= 0.0 {
                    return Err(Error::Other(
                        "surrogate fit: the sampled products are degenerate".into(),
                    ));
                }
                l[i * dim + i] = s.sqrt();
            } else {
                l[i * dim + j] = s / l[j * dim + j];
            }
        }
    }
    let mut z = vec![0f64; dim];
    for i in 0..dim {
        let mut s = xty[i];
        for k in 0..i {
            s -= l[i * dim + k] * z[k];
        }
        z[i] = s / l[i * dim + i];
    }
    let mut a = vec![0f64; dim];
    for i in (0..dim).rev() {
        let mut s = z[i];
        for k in i + 1..dim {
            s -= l[k * dim + i] * a[k];
        }
        a[i] = s / l[i * dim + i];
    }
    Ok(a.into_iter().map(|v| v as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Ivf {
        /// One query's search.
        fn search(&self, q: &[f32], nprobe: usize, want: usize) -> Vec<u32> {
            self.search_batch(&[(q, want)], nprobe)
                .pop()
                .unwrap_or_default()
        }
    }

    fn table(n: usize, dim: usize) -> Vec<f32> {
        (0..n * dim)
            .map(|i| (below(hash(3, 0, 0, 1, i as u64, 0), 2001) as f32 - 1000.0) / 1000.0)
            .collect()
    }

    #[test]
    fn probing_every_list_returns_the_exact_inner_product_top() {
        let (n, dim) = (3000, 16);
        let v = table(n, dim);
        let be = CpuBackend::new(2).unwrap();
        let ivf = Ivf::build(&be, &v, dim, 40, 0, 9).unwrap();
        assert_eq!(ivf.list_ids.len(), n);
        let q: Vec<f32> = (0..dim).map(|j| (j as f32 - 7.5) / 8.0).collect();
        let got = ivf.search(&q, ivf.nlist, 25);
        let mut all: Vec<(f32, u32)> = (0..n as u32)
            .map(|i| (dot(&q, &v[i as usize * dim..(i as usize + 1) * dim]), i))
            .collect();
        top_by_score(&mut all, 40);
        // Every row returned is among the exact top 40 (8-bit rows move close scores a little),
        // and most of the exact top 25 are returned.
        let top40: Vec<u32> = all.iter().map(|x| x.1).collect();
        assert!(
            got.iter().all(|g| top40.contains(g)),
            "{got:?} vs {top40:?}"
        );
        let overlap = got.iter().filter(|g| top40[..25].contains(g)).count();
        assert!(overlap >= 22, "{overlap} of 25");
        // Fewer probes scan fewer rows but still return the best of what they scan.
        let few = ivf.search(&q, 4, 25);
        assert_eq!(few.len(), 25);
    }

    #[test]
    fn a_search_of_every_list_is_the_exact_integer_top_with_ties_by_id() {
        // Values in {-1, 0, 1}: many rows score the same, so ties decide much of the top.
        let (n, dim) = (5000, 8);
        let v: Vec<f32> = (0..n * dim)
            .map(|i| below(hash(4, 0, 0, 3, i as u64, 0), 3) as f32 - 1.0)
            .collect();
        let be = CpuBackend::new(2).unwrap();
        let ivf = Ivf::build(&be, &v, dim, 30, 0, 2).unwrap();
        let queries: Vec<Vec<f32>> = (0..9)
            .map(|k| table(k + 1, dim)[k * dim..].to_vec())
            .collect();
        for want in [0usize, 1, 7, 40, 300] {
            let batch: Vec<(&[f32], usize)> =
                queries.iter().map(|q| (q.as_slice(), want)).collect();
            let got = ivf.search_batch(&batch, ivf.nlist);
            for (q, got) in queries.iter().zip(got) {
                let qs: Vec<f32> = q.iter().zip(&ivf.scale).map(|(a, b)| a * b).collect();
                let qc = QueryCode::new(&qs);
                let mut all: Vec<(i32, u32)> = (0..n)
                    .map(|p| {
                        let code = &ivf.codes[p * dim..(p + 1) * dim];
                        (scan::dot(Isa::Portable, &qc, code), ivf.list_ids[p])
                    })
                    .collect();
                all.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                let exact: Vec<u32> = all[..want].iter().map(|x| x.1).collect();
                assert_eq!(got, exact, "want {want}");
            }
        }
    }

    #[test]
    fn codes_on_principal_directions_rank_low_rank_rows_as_the_full_rows() {
        // Rows of rank 6 in 64 dimensions: 8 principal directions hold all of them, so the
        // projected scan ranks as the full one (up to quantisation: compare the top sets).
        let (n, dim, rank) = (3000usize, 64usize, 6usize);
        let factors = table(n, rank);
        let mix = table(rank, dim);
        let mut v = vec![0f32; n * dim];
        for r in 0..n {
            for j in 0..dim {
                v[r * dim + j] = (0..rank)
                    .map(|t| factors[r * rank + t] * mix[t * dim + j])
                    .sum();
            }
        }
        let be = CpuBackend::new(2).unwrap();
        let full = Ivf::build(&be, &v, dim, 20, 0, 3).unwrap();
        let narrow = Ivf::build(&be, &v, dim, 20, 8, 3).unwrap();
        assert_eq!((full.code_dim, narrow.code_dim), (dim, 8));
        assert_eq!(narrow.codes.len(), n * 8);
        let q = &table(1, dim);
        let a = full.search_batch(&[(q, 50)], 20).remove(0);
        let b = narrow.search_batch(&[(q, 50)], 20).remove(0);
        let common = a[..20].iter().filter(|id| b[..30].contains(id)).count();
        assert!(
            common >= 19,
            "top 20 of the full scan in the narrow top 30: {common}"
        );
        // The basis is orthonormal and the same at any thread count.
        let basis = narrow.basis.as_ref().unwrap();
        for i in 0..8 {
            for j in 0..8 {
                let d: f32 = (0..dim).map(|r| basis[r * 8 + i] * basis[r * 8 + j]).sum();
                assert!(
                    (d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-4,
                    "{i},{j}: {d}"
                );
            }
        }
        let other = Ivf::build(&CpuBackend::new(1).unwrap(), &v, dim, 20, 8, 3).unwrap();
        assert_eq!(other.codes, narrow.codes);
    }

    #[test]
    fn a_batch_search_finds_what_each_query_finds_alone() {
        let (n, dim) = (4000, 40);
        let v = table(n, dim);
        let be = CpuBackend::new(2).unwrap();
        let ivf = Ivf::build(&be, &v, dim, 60, 0, 4).unwrap();
        let qs: Vec<Vec<f32>> = (0..7)
            .map(|k| v[k * 13 * dim..(k * 13 + 1) * dim].to_vec())
            .collect();
        let wants = [10usize, 1, 0, 50, 10, 200, 3];
        let batch: Vec<(&[f32], usize)> = qs.iter().map(|q| q.as_slice()).zip(wants).collect();
        let together = ivf.search_batch(&batch, 9);
        for ((q, want), got) in batch.iter().zip(&together) {
            // Alone, on a one-thread pool: the grouping of the scan does not matter either.
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let alone = pool.install(|| ivf.search(q, 9, *want));
            assert_eq!(got, &alone);
            assert_eq!(got.len(), (*want).min(got.len()));
        }
        assert!(together[2].is_empty() && together[5].len() > 50);
    }

    #[test]
    fn the_index_is_the_same_at_any_thread_count() {
        let (n, dim) = (2000, 8);
        let v = table(n, dim);
        let a = Ivf::build(&CpuBackend::new(1).unwrap(), &v, dim, 30, 0, 1).unwrap();
        let b = Ivf::build(&CpuBackend::new(3).unwrap(), &v, dim, 30, 0, 1).unwrap();
        assert_eq!(a.centroids, b.centroids);
        assert_eq!(a.list_ids, b.list_ids);
    }

    #[test]
    fn the_linear_fit_recovers_a_linear_map() {
        let (m, dim) = (500, 6);
        let x = table(m, dim);
        let truth = [0.5f32, -1.0, 2.0, 0.0, 0.25, -0.75];
        let y: Vec<f32> = x.chunks_exact(dim).map(|r| dot(r, &truth)).collect();
        let a = fit_linear(&x, &y, dim, 1e-9).unwrap();
        for (g, t) in a.iter().zip(truth) {
            assert!((g - t).abs() < 1e-3, "{a:?}");
        }
    }
}
