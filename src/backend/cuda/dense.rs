//! The CUDA backend's `DenseOps`: GEMMs through cuBLAS, and the element-wise, dropout, loss,
//! Adam and reduction kernels, which follow the CPU backend's arithmetic and chunk shapes (chunk
//! partials are added on the host in chunk order). Graph operations are in `graph`.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{cuda_err, dim_u32, to_i32, CudaBackend};
use crate::backend::{checks, AdamCoeffs, DenseOps, DropoutKey, COL_SUM_CHUNK, REDUCE_CHUNK};
use crate::error::Result;
use crate::sample::rng::Stream;

impl CudaBackend {
    /// Sum of f64 partials computed on the device, added on the host in chunk order.
    fn host_sum(&self, partials: &CudaSlice<f64>) -> Result<f64> {
        Ok(self.to_host(partials)?.iter().sum())
    }

    /// `sum_i f(x_i)` in the CPU backend's order (chunks of `REDUCE_CHUNK`).
    fn reduce_f32(&self, x: &CudaSlice<f32>, square: bool) -> Result<f64> {
        let n = x.len() as u64;
        let chunks = (x.len()).div_ceil(REDUCE_CHUNK);
        if chunks == 0 {
            return Ok(Vec::<f64>::new().iter().sum());
        }
        let mut partials = self.alloc::<f64>(chunks)?;
        let chunk = REDUCE_CHUNK as u32;
        let sq: i32 = square as i32;
        let f = self.func("chunk_sums_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&n).arg(&chunk).arg(&sq).arg(&mut partials);
        // SAFETY: argument types match the kernel; `partials` has one slot per chunk.
        unsafe { b.launch(self.threads(chunks as u64)) }
            .map_err(|e| cuda_err("chunk_sums_f32", e))?;
        self.host_sum(&partials)
    }
}

impl DenseOps for CudaBackend {
    fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: (&CudaSlice<f32>, usize),
        b: (&CudaSlice<f32>, usize),
        beta: f32,
        c: (&mut CudaSlice<f32>, usize),
    ) -> Result<()> {
        checks::gemm(m, n, k, a.0.len(), a.1, b.0.len(), b.1, c.0.len(), c.1)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            // C = beta * C, and C is not read when beta == 0 (as on the CPU).
            let mut c_view = c.0.slice_mut(c.1..c.1 + m * n);
            let len = (m * n) as u64;
            let f = self.func(if beta == 0.0 { "fill_f32" } else { "scale_f32" })?;
            let mut l = self.stream.launch_builder(f);
            let value = if beta == 0.0 { 0.0f32 } else { beta };
            l.arg(&mut c_view).arg(&len).arg(&value);
            // SAFETY: the view holds `len` elements.
            unsafe { l.launch(self.threads(len)) }.map_err(|e| cuda_err("gemm k=0", e))?;
            return Ok(());
        }
        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: a row-major buffer
        // read column-major is its transpose, so B goes first and the transposes carry over.
        let cfg = GemmConfig {
            transb: if trans_a {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            },
            transa: if trans_b {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            },
            m: to_i32("gemm", "n", n)?,
            n: to_i32("gemm", "m", m)?,
            k: to_i32("gemm", "k", k)?,
            alpha,
            lda: to_i32("gemm", "ldb", if trans_b { k } else { n })?,
            ldb: to_i32("gemm", "lda", if trans_a { m } else { k })?,
            beta,
            ldc: to_i32("gemm", "ldc", n)?,
        };
        let a_view = a.0.slice(a.1..a.1 + m * k);
        let b_view = b.0.slice(b.1..b.1 + k * n);
        let mut c_view = c.0.slice_mut(c.1..c.1 + m * n);
        // SAFETY: the views were bounds-checked for these shapes and leading dimensions.
        unsafe { self.blas.gemm(cfg, &b_view, &a_view, &mut c_view) }
            .map_err(|e| cuda_err(&format!("cuBLAS sgemm {m}x{n}x{k}"), e))
    }

    fn add_row_bias(
        &self,
        x: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
        bias: (&CudaSlice<f32>, usize),
    ) -> Result<()> {
        checks::add_row_bias(x.len(), rows, cols, bias.0.len(), bias.1)?;
        if rows * cols == 0 {
            return Ok(());
        }
        let bias_view = bias.0.slice(bias.1..bias.1 + cols);
        let (r, c) = (rows as u64, dim_u32("add_row_bias", cols)?);
        let f = self.func("add_row_bias")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&bias_view).arg(&r).arg(&c);
        // SAFETY: shapes checked above.
        unsafe { b.launch(self.threads((rows * cols) as u64)) }
            .map_err(|e| cuda_err("add_row_bias", e))?;
        Ok(())
    }

    fn col_sums(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
        out: (&mut CudaSlice<f32>, usize),
    ) -> Result<()> {
        checks::col_sums(x.len(), rows, cols, out.0.len(), out.1)?;
        if cols == 0 {
            return Ok(());
        }
        let chunks = rows.div_ceil(COL_SUM_CHUNK);
        let mut partials = self.alloc::<f32>((chunks * cols).max(1))?;
        let (r, c, chunk_rows) = (
            rows as u64,
            dim_u32("col_sums", cols)?,
            COL_SUM_CHUNK as u32,
        );
        if chunks > 0 {
            let f = self.func("column_sums_partial")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(x).arg(&r).arg(&c).arg(&chunk_rows).arg(&mut partials);
            // SAFETY: `partials` holds chunks x cols values.
            unsafe { b.launch(self.threads((chunks * cols) as u64)) }
                .map_err(|e| cuda_err("column_sums_partial", e))?;
        }
        let mut out_view = out.0.slice_mut(out.1..out.1 + cols);
        let n_chunks = chunks as u64;
        let f = self.func("column_sums_finish")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&partials).arg(&n_chunks).arg(&c).arg(&mut out_view);
        unsafe { b.launch(self.threads(cols as u64)) }
            .map_err(|e| cuda_err("column_sums_finish", e))?;
        Ok(())
    }

    fn axpy(&self, alpha: f32, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        checks::axpy(x.len(), y.len())?;
        let n = x.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("axpy_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(y).arg(&n).arg(&alpha);
        // SAFETY: equal lengths checked.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("axpy", e))?;
        Ok(())
    }

    fn scale(&self, alpha: f32, x: &mut CudaSlice<f32>) -> Result<()> {
        let n = x.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("scale_f32")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&n).arg(&alpha);
        // SAFETY: the kernel touches `n` elements of `x`.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("scale", e))?;
        Ok(())
    }

    fn mul(&self, a: &CudaSlice<f32>, b: &CudaSlice<f32>, out: &mut CudaSlice<f32>) -> Result<()> {
        checks::mul(a.len(), b.len(), out.len())?;
        let n = a.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("mul_forward")?;
        let mut l = self.stream.launch_builder(f);
        l.arg(a).arg(b).arg(out).arg(&n);
        // SAFETY: equal lengths checked.
        unsafe { l.launch(self.threads(n)) }.map_err(|e| cuda_err("mul", e))?;
        Ok(())
    }

    fn mul_bwd(
        &self,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        grad_out: &CudaSlice<f32>,
        grad_a: &mut CudaSlice<f32>,
        grad_b: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let n = a.len();
        checks::mul_bwd(n, b.len(), grad_out.len(), grad_a.len(), grad_b.len())?;
        if n == 0 {
            return Ok(());
        }
        let n = n as u64;
        let f = self.func("mul_backward")?;
        let mut l = self.stream.launch_builder(f);
        l.arg(a)
            .arg(b)
            .arg(grad_out)
            .arg(grad_a)
            .arg(grad_b)
            .arg(&n);
        // SAFETY: equal lengths checked.
        unsafe { l.launch(self.threads(n)) }.map_err(|e| cuda_err("mul_bwd", e))?;
        Ok(())
    }

    fn relu_fwd(&self, x: &mut CudaSlice<f32>) -> Result<()> {
        let n = x.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("relu_forward")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&n);
        // SAFETY: in place over `n` elements.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("relu_fwd", e))?;
        Ok(())
    }

    fn relu_bwd(&self, y: &CudaSlice<f32>, grad: &mut CudaSlice<f32>) -> Result<()> {
        checks::relu_bwd(y.len(), grad.len())?;
        let n = y.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.func("relu_backward")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(y).arg(grad).arg(&n);
        // SAFETY: equal lengths checked.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("relu_bwd", e))?;
        Ok(())
    }

    fn dropout_fwd(
        &self,
        x: &mut CudaSlice<f32>,
        rows: usize,
        cols: usize,
        row_ids: &CudaSlice<u32>,
        key: DropoutKey,
    ) -> Result<()> {
        checks::dropout(x.len(), rows, cols, row_ids.len(), key.p)?;
        if key.p == 0.0 || rows * cols == 0 {
            return Ok(());
        }
        let state = Stream::new(key.seed, key.epoch, key.step, key.purpose).state();
        let scale = 1.0f32 / (1.0f32 - key.p);
        let (r, c) = (rows as u64, dim_u32("dropout", cols)?);
        let f = self.func("dropout_apply")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(x)
            .arg(row_ids)
            .arg(&r)
            .arg(&c)
            .arg(&state)
            .arg(&key.p)
            .arg(&scale);
        // SAFETY: x is rows x cols and row_ids has at least `rows` entries.
        unsafe { b.launch(self.threads((rows * cols) as u64)) }
            .map_err(|e| cuda_err("dropout", e))?;
        Ok(())
    }

    fn bce_with_logits(
        &self,
        logits: &CudaSlice<f32>,
        labels: &CudaSlice<f32>,
        grad_scale: f32,
        grad: &mut CudaSlice<f32>,
    ) -> Result<f64> {
        let n = logits.len();
        checks::bce_with_logits(n, labels.len(), grad.len())?;
        if n == 0 {
            return Ok(Vec::<f64>::new().iter().sum());
        }
        let mut loss = self.alloc::<f64>(n)?;
        let n64 = n as u64;
        let f = self.func("bce_with_logits")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(logits)
            .arg(labels)
            .arg(&n64)
            .arg(&grad_scale)
            .arg(&mut loss)
            .arg(grad);
        // SAFETY: equal lengths checked.
        unsafe { b.launch(self.threads(n64)) }.map_err(|e| cuda_err("bce_with_logits", e))?;
        let chunks = n.div_ceil(REDUCE_CHUNK);
        let mut partials = self.alloc::<f64>(chunks)?;
        let chunk = REDUCE_CHUNK as u32;
        let f = self.func("chunk_sums_f64")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&loss).arg(&n64).arg(&chunk).arg(&mut partials);
        unsafe { b.launch(self.threads(chunks as u64)) }
            .map_err(|e| cuda_err("chunk_sums_f64", e))?;
        self.host_sum(&partials)
    }

    fn softmax_xent(
        &self,
        logits: &CudaSlice<f32>,
        classes: usize,
        labels: &CudaSlice<u32>,
        grad_scale: f32,
        grad: &mut CudaSlice<f32>,
    ) -> Result<f64> {
        let rows = labels.len();
        checks::softmax_xent(rows, classes, logits.len(), grad.len())?;
        if rows == 0 {
            return Ok(0.0);
        }
        let mut loss = self.alloc::<f64>(rows)?;
        let mut bad = self.alloc::<u32>(1)?;
        let (r, c) = (rows as u64, dim_u32("softmax_xent", classes)?);
        let f = self.func("softmax_cross_entropy")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(logits)
            .arg(labels)
            .arg(&r)
            .arg(&c)
            .arg(&grad_scale)
            .arg(&mut loss)
            .arg(grad)
            .arg(&mut bad);
        // SAFETY: logits and grad are rows x classes; bad labels are skipped and flagged.
        unsafe { b.launch(self.threads(r)) }.map_err(|e| cuda_err("softmax_xent", e))?;
        if self.flag_set(&bad)? {
            let l = self
                .to_host(labels)?
                .into_iter()
                .find(|&l| l as usize >= classes)
                .unwrap_or(0);
            return Err(checks::label_outside_classes(l, classes));
        }
        Ok(self.to_host(&loss)?.iter().sum())
    }

    fn adam_update(
        &self,
        params: &mut CudaSlice<f32>,
        grads: &CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        c: &AdamCoeffs,
    ) -> Result<()> {
        let n = params.len();
        checks::adam_update(n, grads.len(), m.len(), v.len())?;
        if n == 0 {
            return Ok(());
        }
        let step_size = c.lr / c.bias1;
        let sqrt_bias2 = c.bias2.sqrt();
        let n = n as u64;
        let f = self.func("adam_update")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(params)
            .arg(grads)
            .arg(m)
            .arg(v)
            .arg(&n)
            .arg(&c.beta1)
            .arg(&c.beta2)
            .arg(&c.eps)
            .arg(&c.weight_decay)
            .arg(&step_size)
            .arg(&sqrt_bias2);
        // SAFETY: four buffers of equal length checked.
        unsafe { b.launch(self.threads(n)) }.map_err(|e| cuda_err("adam_update", e))?;
        Ok(())
    }

    fn sq_norm(&self, x: &CudaSlice<f32>) -> Result<f64> {
        self.reduce_f32(x, true)
    }

    fn sum(&self, x: &CudaSlice<f32>) -> Result<f64> {
        self.reduce_f32(x, false)
    }
}
