//! The CPU backend's `DenseOps`: matrix products through the `gemm` crate, element-wise
//! operations, dropout, losses, Adam and the chunked f64 reductions, each row-parallel or
//! chunk-parallel in the backend's pool with a fixed order of operations.

use rayon::prelude::*;

use super::{CpuBackend, ELEM_CHUNK};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::backend::{
    checks, AdamCoeffs, DenseOps, DropoutKey, GemmWork, COL_SUM_CHUNK, REDUCE_CHUNK,
};
use crate::error::Result;
use crate::sample::rng::{unit_f32, Stream};

/// `sum` of `f(i)` over `0..n` as f64: chunk partials in parallel, added in chunk order.
fn reduce_f64(n: usize, f: impl Fn(usize) -> f64 + Sync) -> f64 {
    let chunks = n.div_ceil(REDUCE_CHUNK);
    let partials: Vec<f64> = (0..chunks)
        .into_par_iter()
        .map(|c| {
            let mut s = 0.0f64;
            for i in c * REDUCE_CHUNK..((c + 1) * REDUCE_CHUNK).min(n) {
                s += f(i);
            }
            s
        })
        .collect();
    partials.iter().sum()
}

#[inline(always)]
fn dropout_scale(key: &DropoutKey) -> f32 {
    1.0f32 / (1.0f32 - key.p)
}

/// Applies the dropout mask of `key` to rows of `x` in place.
fn apply_dropout(x: &mut [f32], rows: usize, cols: usize, ids: &[u32], key: DropoutKey) {
    if key.p == 0.0 || cols == 0 {
        return;
    }
    let stream = Stream::new(key.seed, key.epoch, key.step, key.purpose);
    let scale = dropout_scale(&key);
    x[..rows * cols]
        .par_chunks_mut(cols)
        .zip(ids[..rows].par_iter())
        .with_min_len(16)
        .for_each(|(row, &id)| {
            let s = stream.for_id(id as u64);
            for (j, v) in row.iter_mut().enumerate() {
                let keep = unit_f32(s.at(j as u64)) >= key.p;
                *v = if keep { *v * scale } else { 0.0 };
            }
        });
}

impl DenseOps for CpuBackend {
    fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: (&Vec<f32>, usize),
        b: (&Vec<f32>, usize),
        beta: f32,
        c: (&mut Vec<f32>, usize),
    ) -> Result<()> {
        checks::gemm(m, n, k, a.0.len(), a.1, b.0.len(), b.1, c.0.len(), c.1)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let c_view = &mut c.0[c.1..c.1 + m * n];
        if k == 0 {
            for x in c_view.iter_mut() {
                *x = if beta == 0.0 { 0.0 } else { beta * *x };
            }
            return Ok(());
        }
        let a_view = &a.0[a.1..a.1 + m * k];
        let b_view = &b.0[b.1..b.1 + k * n];
        let started = Instant::now();
        let done = |r: Result<()>| {
            let [flops, nanos] = &*self.gemm_work;
            flops.fetch_add(2 * (m * n * k) as u64, Ordering::Relaxed);
            nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            r
        };
        if let Some(lib) = &self.cblas {
            let r = lib.sgemm(
                trans_a, trans_b, m, n, k, alpha, a_view, b_view, beta, c_view,
            );
            return done(r);
        }
        // Row-major strides: element (i, j) of op(A) is at i*rs + j*cs.
        let (a_rs, a_cs) = if trans_a {
            (1, m as isize)
        } else {
            (k as isize, 1)
        };
        let (b_rs, b_cs) = if trans_b {
            (1, k as isize)
        } else {
            (n as isize, 1)
        };
        let par = if self.threads > 1 {
            gemm::Parallelism::Rayon(self.threads)
        } else {
            gemm::Parallelism::None
        };
        self.pool.install(|| {
            // SAFETY: the three views were bounds-checked above for the shapes and strides given;
            // `c_view` is a unique borrow, so it does not alias `a_view` or `b_view`. The gemm
            // crate computes dst = alpha_g * dst + beta_g * lhs * rhs, reading dst only when
            // `read_dst` is true.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c_view.as_mut_ptr(),
                    1,
                    n as isize,
                    beta != 0.0,
                    a_view.as_ptr(),
                    a_cs,
                    a_rs,
                    b_view.as_ptr(),
                    b_cs,
                    b_rs,
                    beta,
                    alpha,
                    false,
                    false,
                    false,
                    par,
                )
            }
        });
        done(Ok(()))
    }

    fn take_gemm_work(&self) -> GemmWork {
        let [flops, nanos] = &*self.gemm_work;
        GemmWork {
            flops: flops.swap(0, Ordering::Relaxed) as f64,
            seconds: nanos.swap(0, Ordering::Relaxed) as f64 * 1e-9,
        }
    }

    fn add_row_bias(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        bias: (&Vec<f32>, usize),
    ) -> Result<()> {
        self.bias_rows(x, rows, cols, bias, false)
    }

    fn col_sums(
        &self,
        x: &Vec<f32>,
        rows: usize,
        cols: usize,
        out: (&mut Vec<f32>, usize),
    ) -> Result<()> {
        checks::col_sums(x.len(), rows, cols, out.0.len(), out.1)?;
        let partials: Vec<Vec<f32>> = self.pool.install(|| {
            x.par_chunks(COL_SUM_CHUNK * cols.max(1))
                .map(|chunk| chunk_col_sums(chunk, cols))
                .collect()
        });
        add_partials(&mut out.0[out.1..out.1 + cols], &partials);
        Ok(())
    }

    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        checks::axpy(x.len(), y.len())?;
        self.pool.install(|| {
            y.par_chunks_mut(ELEM_CHUNK)
                .zip(x.par_chunks(ELEM_CHUNK))
                .for_each(|(y, x)| {
                    for (a, b) in y.iter_mut().zip(x) {
                        *a += alpha * *b;
                    }
                })
        });
        Ok(())
    }

    fn scale(&self, alpha: f32, x: &mut Vec<f32>) -> Result<()> {
        self.pool.install(|| {
            x.par_chunks_mut(ELEM_CHUNK)
                .for_each(|c| c.iter_mut().for_each(|v| *v *= alpha))
        });
        Ok(())
    }

    fn mul(&self, a: &Vec<f32>, b: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        checks::mul(a.len(), b.len(), out.len())?;
        self.pool.install(|| {
            out.par_chunks_mut(ELEM_CHUNK)
                .zip(a.par_chunks(ELEM_CHUNK).zip(b.par_chunks(ELEM_CHUNK)))
                .for_each(|(o, (a, b))| {
                    for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                        *o = *a * *b;
                    }
                })
        });
        Ok(())
    }

    fn mul_bwd(
        &self,
        a: &Vec<f32>,
        b: &Vec<f32>,
        grad_out: &Vec<f32>,
        grad_a: &mut Vec<f32>,
        grad_b: &mut Vec<f32>,
    ) -> Result<()> {
        let n = a.len();
        checks::mul_bwd(n, b.len(), grad_out.len(), grad_a.len(), grad_b.len())?;
        self.pool.install(|| {
            grad_a
                .par_chunks_mut(ELEM_CHUNK)
                .zip(grad_b.par_chunks_mut(ELEM_CHUNK))
                .enumerate()
                .for_each(|(c, (ga, gb))| {
                    let base = c * ELEM_CHUNK;
                    for i in 0..ga.len() {
                        let g = grad_out[base + i];
                        ga[i] = g * b[base + i];
                        gb[i] = g * a[base + i];
                    }
                })
        });
        Ok(())
    }

    fn add_row_bias_relu(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        bias: (&Vec<f32>, usize),
    ) -> Result<()> {
        self.bias_rows(x, rows, cols, bias, true)
    }

    fn relu_bwd_col_sums(
        &self,
        y: &Vec<f32>,
        grad: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        out: (&mut Vec<f32>, usize),
    ) -> Result<()> {
        checks::relu_bwd(y.len(), grad.len())?;
        checks::col_sums(grad.len(), rows, cols, out.0.len(), out.1)?;
        // The chunks of `col_sums`, so the sums are bit-identical to the two passes; each chunk
        // is masked and then summed while it is in cache.
        let chunk = COL_SUM_CHUNK * cols.max(1);
        let partials: Vec<Vec<f32>> = self.pool.install(|| {
            grad.par_chunks_mut(chunk)
                .zip(y.par_chunks(chunk))
                .map(|(g, y)| {
                    relu_mask(g, y);
                    chunk_col_sums(g, cols)
                })
                .collect()
        });
        add_partials(&mut out.0[out.1..out.1 + cols], &partials);
        Ok(())
    }

    fn relu_fwd(&self, x: &mut Vec<f32>) -> Result<()> {
        self.pool.install(|| {
            x.par_chunks_mut(ELEM_CHUNK)
                .for_each(|c| c.iter_mut().for_each(|v| *v = v.max(0.0)))
        });
        Ok(())
    }

    fn relu_bwd(&self, y: &Vec<f32>, grad: &mut Vec<f32>) -> Result<()> {
        checks::relu_bwd(y.len(), grad.len())?;
        self.pool.install(|| {
            grad.par_chunks_mut(ELEM_CHUNK)
                .zip(y.par_chunks(ELEM_CHUNK))
                .for_each(|(g, y)| relu_mask(g, y))
        });
        Ok(())
    }

    fn dropout_fwd(
        &self,
        x: &mut Vec<f32>,
        rows: usize,
        cols: usize,
        row_ids: &Vec<u32>,
        key: DropoutKey,
    ) -> Result<()> {
        checks::dropout(x.len(), rows, cols, row_ids.len(), key.p)?;
        self.pool
            .install(|| apply_dropout(x, rows, cols, row_ids, key));
        Ok(())
    }

    fn bce_with_logits(
        &self,
        logits: &Vec<f32>,
        labels: &Vec<f32>,
        grad_scale: f32,
        grad: &mut Vec<f32>,
    ) -> Result<f64> {
        let n = logits.len();
        checks::bce_with_logits(n, labels.len(), grad.len())?;
        Ok(self.pool.install(|| {
            grad.par_iter_mut().enumerate().for_each(|(i, g)| {
                let (x, y) = (logits[i], labels[i]);
                *g = grad_scale * (sigmoid(x) - y);
            });
            reduce_f64(n, |i| {
                let (x, y) = (logits[i] as f64, labels[i] as f64);
                x.max(0.0) - x * y + (-x.abs()).exp().ln_1p()
            })
        }))
    }

    fn softmax_xent(
        &self,
        logits: &Vec<f32>,
        classes: usize,
        labels: &Vec<u32>,
        grad_scale: f32,
        grad: &mut Vec<f32>,
    ) -> Result<f64> {
        let rows = labels.len();
        checks::softmax_xent(rows, classes, logits.len(), grad.len())?;
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(checks::label_outside_classes(l, classes));
        }
        if rows == 0 {
            return Ok(0.0);
        }
        let row_loss: Vec<f64> = self.pool.install(|| {
            grad.par_chunks_mut(classes)
                .enumerate()
                .map(|(r, g)| {
                    let x = &logits[r * classes..(r + 1) * classes];
                    let mx = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let mut s = 0.0f32;
                    for (g, &v) in g.iter_mut().zip(x) {
                        *g = (v - mx).exp();
                        s += *g;
                    }
                    let inv = 1.0f32 / s;
                    let label = labels[r] as usize;
                    for (j, g) in g.iter_mut().enumerate() {
                        let onehot = if j == label { 1.0 } else { 0.0 };
                        *g = grad_scale * (*g * inv - onehot);
                    }
                    mx as f64 + (s as f64).ln() - x[label] as f64
                })
                .collect()
        });
        Ok(row_loss.iter().sum())
    }

    fn adam_update(
        &self,
        params: &mut Vec<f32>,
        grads: &Vec<f32>,
        m: &mut Vec<f32>,
        v: &mut Vec<f32>,
        c: &AdamCoeffs,
    ) -> Result<()> {
        let n = params.len();
        checks::adam_update(n, grads.len(), m.len(), v.len())?;
        let step_size = c.lr / c.bias1;
        let sqrt_bias2 = c.bias2.sqrt();
        self.pool.install(|| {
            params
                .par_chunks_mut(ELEM_CHUNK)
                .zip(m.par_chunks_mut(ELEM_CHUNK))
                .zip(v.par_chunks_mut(ELEM_CHUNK))
                .zip(grads.par_chunks(ELEM_CHUNK))
                .for_each(|(((p, m), v), g)| {
                    for i in 0..p.len() {
                        let gi = g[i] + c.weight_decay * p[i];
                        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * gi;
                        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * gi * gi;
                        let denom = v[i].sqrt() / sqrt_bias2 + c.eps;
                        p[i] -= step_size * m[i] / denom;
                    }
                })
        });
        Ok(())
    }

    fn sq_norm(&self, x: &Vec<f32>) -> Result<f64> {
        Ok(self
            .pool
            .install(|| reduce_f64(x.len(), |i| (x[i] as f64) * (x[i] as f64))))
    }

    fn sum(&self, x: &Vec<f32>) -> Result<f64> {
        Ok(self.pool.install(|| reduce_f64(x.len(), |i| x[i] as f64)))
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl CpuBackend {
    /// `x[r, j] += bias[j]`, followed by the ReLU when `relu`, in one pass.
    fn bias_rows(
        &self,
        x: &mut [f32],
        rows: usize,
        cols: usize,
        bias: (&Vec<f32>, usize),
        relu: bool,
    ) -> Result<()> {
        checks::add_row_bias(x.len(), rows, cols, bias.0.len(), bias.1)?;
        if cols == 0 {
            return Ok(());
        }
        let bias = &bias.0[bias.1..bias.1 + cols];
        self.pool.install(|| {
            x.par_chunks_mut(cols).with_min_len(64).for_each(|row| {
                // Two loops rather than a branch per element, so each vectorises.
                if relu {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v = (*v + *b).max(0.0);
                    }
                } else {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v += *b;
                    }
                }
            })
        });
        Ok(())
    }
}

/// `grad *= (y > 0)`, element by element.
fn relu_mask(grad: &mut [f32], y: &[f32]) {
    // A select rather than a branch, so the loop vectorises.
    for (g, y) in grad.iter_mut().zip(y) {
        *g = if *y <= 0.0 { 0.0 } else { *g };
    }
}

/// The column sums of a chunk of whole rows, rows ascending (`col_sums`' order within a chunk).
fn chunk_col_sums(chunk: &[f32], cols: usize) -> Vec<f32> {
    let mut acc = vec![0.0f32; cols];
    for row in chunk.chunks_exact(cols.max(1)) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += *v;
        }
    }
    acc
}

/// `dst = sum of partials`, added in ascending order (`col_sums`' order across chunks).
fn add_partials(dst: &mut [f32], partials: &[Vec<f32>]) {
    dst.iter_mut().for_each(|v| *v = 0.0);
    for p in partials {
        for (d, v) in dst.iter_mut().zip(p) {
            *d += *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuGemm;
    use crate::backend::GraphOps;
    use crate::sample::rng::hash;

    fn rand(n: usize, salt: u64) -> Vec<f32> {
        (0..n)
            .map(|i| unit_f32(hash(1, salt, 0, 0, i as u64, 0)) - 0.5)
            .collect()
    }

    #[test]
    fn gemm_matches_a_naive_product_for_every_transpose_offset_and_beta() {
        for lib in [CpuGemm::Builtin, CpuGemm::Openblas, CpuGemm::Blis] {
            match CpuBackend::new(2).unwrap().with_gemm(lib) {
                Ok(be) => check_gemm_against_naive(&be),
                // scripts/setup.sh installs both libraries; elsewhere they may be missing.
                Err(e) => println!("skipping {lib:?}: {e}"),
            }
        }
    }

    #[test]
    fn auto_gemm_is_openblas_only_on_avx512_and_the_named_libraries_stand_for_themselves() {
        for lib in [CpuGemm::Builtin, CpuGemm::Openblas, CpuGemm::Blis] {
            assert_eq!(lib.resolve(), lib);
        }
        let auto = CpuGemm::Auto.resolve();
        #[cfg(target_arch = "x86_64")]
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = false;
        let openblas = CpuBackend::new(1)
            .unwrap()
            .with_gemm(CpuGemm::Openblas)
            .is_ok();
        let want = if avx512 && openblas {
            CpuGemm::Openblas
        } else {
            CpuGemm::Builtin
        };
        assert_eq!(auto, want);
        let be = CpuBackend::new(2)
            .unwrap()
            .with_gemm(CpuGemm::Auto)
            .unwrap();
        assert_eq!(
            be.gemm_name(),
            if want == CpuGemm::Openblas {
                "OpenBLAS"
            } else {
                "gemm crate"
            }
        );
        check_gemm_against_naive(&be);
    }

    #[test]
    fn fused_bias_relu_and_relu_col_sums_equal_their_two_passes_bit_for_bit() {
        let be = CpuBackend::new(2).unwrap();
        for (rows, cols) in [
            (0, 8),
            (1, 1),
            (7, 37),
            (COL_SUM_CHUNK * 3 + 5, 19),
            (300, 256),
        ] {
            let x0 = rand(rows * cols, 11);
            let bias = rand(3 + cols, 12);
            let mut two = x0.clone();
            be.add_row_bias(&mut two, rows, cols, (&bias, 3)).unwrap();
            be.relu_fwd(&mut two).unwrap();
            let mut one = x0.clone();
            be.add_row_bias_relu(&mut one, rows, cols, (&bias, 3))
                .unwrap();
            assert_eq!(bits(&one), bits(&two), "bias+relu {rows}x{cols}");
            assert!(one.contains(&0.0) || rows * cols < 4);

            let g0 = rand(rows * cols, 13);
            let (mut g_two, mut s_two) = (g0.clone(), vec![f32::NAN; cols + 2]);
            be.relu_bwd(&two, &mut g_two).unwrap();
            be.col_sums(&g_two, rows, cols, (&mut s_two, 2)).unwrap();
            let (mut g_one, mut s_one) = (g0.clone(), vec![f32::NAN; cols + 2]);
            be.relu_bwd_col_sums(&two, &mut g_one, rows, cols, (&mut s_one, 2))
                .unwrap();
            assert_eq!(bits(&g_one), bits(&g_two), "relu_bwd {rows}x{cols}");
            assert_eq!(bits(&s_one), bits(&s_two), "col sums {rows}x{cols}");
        }
        let mut short = vec![0.0f32; 5];
        assert!(be
            .relu_bwd_col_sums(&vec![0.0; 6], &mut short, 1, 5, (&mut vec![0.0; 5], 0))
            .is_err());
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn check_gemm_against_naive(be: &CpuBackend) {
        let (m, n, k) = (37, 29, 23);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for beta in [0.0f32, 1.0, 0.5] {
                let (aoff, boff, coff) = (3, 5, 7);
                let a = rand(aoff + m * k, 1);
                let b = rand(boff + k * n, 2);
                let c0 = rand(coff + m * n, 3);
                let mut c = c0.clone();
                if beta == 0.0 {
                    c[coff..].iter_mut().for_each(|v| *v = f32::NAN);
                }
                be.gemm(
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    1.5,
                    (&a, aoff),
                    (&b, boff),
                    beta,
                    (&mut c, coff),
                )
                .unwrap();
                for i in 0..m {
                    for j in 0..n {
                        let mut s = 0.0f64;
                        for p in 0..k {
                            let av = if ta {
                                a[aoff + p * m + i]
                            } else {
                                a[aoff + i * k + p]
                            };
                            let bv = if tb {
                                b[boff + j * k + p]
                            } else {
                                b[boff + p * n + j]
                            };
                            s += av as f64 * bv as f64;
                        }
                        let want = 1.5 * s + beta as f64 * c0[coff + i * n + j] as f64;
                        let got = c[coff + i * n + j] as f64;
                        assert!((got - want).abs() < 1e-4, "({ta},{tb},{beta}) [{i},{j}]");
                    }
                }
                assert_eq!(c[..coff], c0[..coff], "gemm wrote before its view");
            }
        }
        let a = rand(10, 1);
        let mut c = rand(10, 2);
        assert!(be
            .gemm(
                false,
                false,
                3,
                3,
                3,
                1.0,
                (&a, 2),
                (&a, 0),
                0.0,
                (&mut c, 0)
            )
            .is_err());
    }

    #[test]
    fn gemm_and_reductions_are_bit_identical_across_thread_counts() {
        // The shapes of a hidden-256 layer: forward (4096 x 256 · 256 x 256) and the weight
        // gradient (256 x 4096 · 4096 x 256).
        let (m, n, k) = (4096, 256, 256);
        let a = rand(m * k, 4);
        let b = rand(k * n, 5);
        let run = |threads: usize| {
            let be = CpuBackend::new(threads).unwrap();
            let mut c = vec![0.0f32; m * n];
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
            .unwrap();
            let mut g = vec![0.0f32; k * n];
            be.gemm(
                true,
                false,
                k,
                n,
                m,
                1.0,
                (&a, 0),
                (&c, 0),
                0.0,
                (&mut g, 0),
            )
            .unwrap();
            let mut cs = vec![0.0f32; n];
            be.col_sums(&c, m, n, (&mut cs, 0)).unwrap();
            let norm = be.sq_norm(&c).unwrap();
            (c, g, cs, norm.to_bits())
        };
        let one = run(1);
        assert!(one == run(2), "1 and 2 threads differ");
        assert!(one == run(3), "1 and 3 threads differ");
    }

    #[test]
    fn element_wise_operations_check_lengths() {
        let be = CpuBackend::new(1).unwrap();
        let mut y = vec![1.0f32; 4];
        assert!(be.axpy(2.0, &vec![1.0; 3], &mut y).is_err());
        be.axpy(2.0, &vec![1.0; 4], &mut y).unwrap();
        assert_eq!(y, vec![3.0; 4]);
        let mut out = vec![0.0f32; 4];
        be.mul(&y, &vec![2.0; 4], &mut out).unwrap();
        assert_eq!(out, vec![6.0; 4]);
        let mut x = vec![-1.0f32, 2.0, 0.0, 3.0];
        be.relu_fwd(&mut x).unwrap();
        let mut g = vec![1.0f32; 4];
        be.relu_bwd(&x, &mut g).unwrap();
        assert_eq!(g, vec![0.0, 1.0, 0.0, 1.0]);
        let mut t = vec![0.0f32; 4];
        be.gather_rows(&vec![1.0, 2.0, 3.0, 4.0], 2, &vec![1, 0], &mut t)
            .unwrap();
        assert_eq!(t, vec![3.0, 4.0, 1.0, 2.0]);
        assert!(be
            .gather_rows(&vec![1.0, 2.0], 2, &vec![1, 0], &mut t)
            .is_err());
        let mut m = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        be.add_row_bias(&mut m, 2, 3, (&vec![9.0, 10.0, 20.0, 30.0], 1))
            .unwrap();
        assert_eq!(m, vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        let mut cs = vec![0.0f32; 5];
        be.col_sums(&m, 2, 3, (&mut cs, 2)).unwrap();
        assert_eq!(cs, vec![0.0, 0.0, 25.0, 47.0, 69.0]);
        assert_eq!(be.sum(&m).unwrap(), 141.0);
    }
}
