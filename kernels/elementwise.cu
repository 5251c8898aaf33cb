// elementwise.cu: the small dense operations of a training step: bias add and its gradient, ReLU,
// dropout (mask from the counter-based hash), element-wise product, losses, Adam, scale/axpy/fill,
// and fixed-order sums.
//
// Each kernel follows the CPU backend's arithmetic operation by operation (compiled with
// --fmad=false, so no multiply-add is fused where the CPU has two roundings) and every reduction
// has the CPU's shape: chunk partials in a fixed order. Only library functions (expf, log1p, ...)
// may differ from the CPU's by an ulp. Dropout's mask is keyed by (stream for Dropout + layer,
// id = the row's global node id, k = column), exactly as on the CPU.
#include "common.cuh"

// x[i, :] += bias[:] for a row-major [n_rows, dim] matrix.
extern "C" __global__ void add_row_bias(float* x, const float* bias, u64 n_rows, u32 dim) {
    const u64 n = n_rows * dim;
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) x[i] += bias[i % dim];
}

// Column sums, pass 1: partials[chunk, c] = sum over the rows of the chunk (ascending) of x[r, c],
// chunks of chunk_rows consecutive rows. One thread per (chunk, column).
extern "C" __global__ void column_sums_partial(const float* x, u64 n_rows, u32 dim, u32 chunk_rows,
                                               float* partials) {
    const u64 n_chunks = (n_rows + chunk_rows - 1) / chunk_rows;
    const u64 n = n_chunks * dim;
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const u64 chunk = i / dim;
        const u64 c = i - chunk * dim;
        const u64 begin = chunk * chunk_rows;
        const u64 end = begin + chunk_rows < n_rows ? begin + chunk_rows : n_rows;
        float acc = 0.0f;
        // Unrolling issues several loads ahead; the additions stay in row order.
#pragma unroll 8
        for (u64 r = begin; r < end; ++r) acc += x[r * dim + c];
        partials[i] = acc;
    }
}

// Column sums, pass 2: out[c] = 0 + partials[0, c] + partials[1, c] + ... in chunk order.
extern "C" __global__ void column_sums_finish(const float* partials, u64 n_chunks, u32 dim,
                                              float* out) {
    for (u64 c = ss_thread_index(); c < dim; c += ss_thread_stride()) {
        float acc = 0.0f;
        for (u64 k = 0; k < n_chunks; ++k) acc += partials[k * dim + c];
        out[c] = acc;
    }
}

// x = max(x, 0) in place.
extern "C" __global__ void relu_forward(float* x, u64 n) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) x[i] = fmaxf(x[i], 0.0f);
}

// grad = 0 where y <= 0 (y is the ReLU's output or has its sign pattern), in place.
extern "C" __global__ void relu_backward(const float* y, float* grad, u64 n) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        if (y[i] <= 0.0f) grad[i] = 0.0f;
    }
}

// Dropout mask, in place on a [n_rows, dim] matrix (forward and backward are the same operation):
// element (r, c) is kept iff unit_f32(hash(stream, row_ids[r], c)) >= p and then multiplied by
// scale = 1 / (1 - p) (computed once on the host), else set to 0.
extern "C" __global__ void dropout_apply(float* x, const u32* row_ids, u64 n_rows, u32 dim,
                                         u64 stream_state, float p, float scale) {
    const u64 n = n_rows * dim;
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const u64 row = i / dim;
        const u64 col = i - row * dim;
        const bool keep = ss_unit_f32(ss_hash_at(stream_state, (u64)row_ids[row], col)) >= p;
        x[i] = keep ? x[i] * scale : 0.0f;
    }
}

extern "C" __global__ void mul_forward(const float* a, const float* b, float* z, u64 n) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) z[i] = a[i] * b[i];
}

// grad_a = g * b, grad_b = g * a.
extern "C" __global__ void mul_backward(const float* a, const float* b, const float* g,
                                        float* grad_a, float* grad_b, u64 n) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const float gi = g[i];
        grad_a[i] = gi * b[i];
        grad_b[i] = gi * a[i];
    }
}

// Binary cross-entropy on logits x with targets y, per element: loss[i] (f64) =
// max(x, 0) - x * y + log1p(exp(-|x|)) evaluated in double, grad[i] = scale * (sigmoid(x) - y) in
// float with the CPU's two-branch sigmoid. The host or chunk_sums_f64 adds the losses.
extern "C" __global__ void bce_with_logits(const float* x, const float* y, u64 n, float scale,
                                           double* loss, float* grad) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const float xf = x[i];
        const float yf = y[i];
        float sig;
        if (xf >= 0.0f) {
            sig = 1.0f / (1.0f + expf(-xf));
        } else {
            const float e = expf(xf);
            sig = e / (1.0f + e);
        }
        grad[i] = scale * (sig - yf);
        const double xd = (double)xf;
        const double yd = (double)yf;
        loss[i] = fmax(xd, 0.0) - xd * yd + log1p(exp(-fabs(xd)));
    }
}

// Softmax cross-entropy, one thread per row of [n_rows, n_classes] logits, in the CPU's order:
// m = max; g[j] = exp(x[j] - m) summed in order into s; grad[j] = scale * (g[j] * (1/s) - onehot);
// loss[r] (f64) = m + ln(s) - x[label]. A label >= n_classes sets *bad and skips the row.
extern "C" __global__ void softmax_cross_entropy(const float* logits, const u32* labels, u64 n_rows,
                                                 u32 n_classes, float scale, double* loss,
                                                 float* grad, u32* bad) {
    for (u64 r = ss_thread_index(); r < n_rows; r += ss_thread_stride()) {
        const float* x = logits + r * n_classes;
        float* g = grad + r * n_classes;
        const u32 label = labels[r];
        if (label >= n_classes) {
            *bad = 1u;
            loss[r] = 0.0;
            continue;
        }
        float m = __int_as_float(0xff800000); // -infinity
        for (u32 c = 0; c < n_classes; ++c) m = fmaxf(m, x[c]);
        float s = 0.0f;
        for (u32 c = 0; c < n_classes; ++c) {
            const float e = expf(x[c] - m);
            g[c] = e;
            s += e;
        }
        const float inv = 1.0f / s;
        for (u32 c = 0; c < n_classes; ++c) {
            const float onehot = c == label ? 1.0f : 0.0f;
            g[c] = scale * (g[c] * inv - onehot);
        }
        loss[r] = (double)m + log((double)s) - (double)x[label];
    }
}

// Adam with coupled L2 weight decay, the CPU's expression: g' = g + wd * p;
// m = b1 * m + (1 - b1) * g'; v = b2 * v + (1 - b2) * g' * g';
// p -= step_size * m / (sqrt(v) / sqrt_bias2 + eps), step_size = lr / bias1 and
// sqrt_bias2 = sqrt(bias2) computed on the host in f32.
extern "C" __global__ void adam_update(float* param, const float* grad, float* m, float* v, u64 n,
                                       float beta1, float beta2, float eps, float weight_decay,
                                       float step_size, float sqrt_bias2) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const float p = param[i];
        const float g = grad[i] + weight_decay * p;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float denom = sqrtf(vi) / sqrt_bias2 + eps;
        param[i] = p - step_size * mi / denom;
    }
}

extern "C" __global__ void scale_f32(float* x, u64 n, float a) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) x[i] *= a;
}

// y += a * x.
extern "C" __global__ void axpy_f32(const float* x, float* y, u64 n, float a) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) y[i] += a * x[i];
}

extern "C" __global__ void fill_f32(float* x, u64 n, float value) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) x[i] = value;
}

// partials[k] = sum over i in chunk k (chunk elements, ascending) of x[i] as f64, or of x[i]^2
// when square != 0: the CPU's reduce_f64. One thread per chunk; the host adds the partials in
// chunk order.
extern "C" __global__ void chunk_sums_f32(const float* x, u64 n, u32 chunk, int square,
                                          double* partials) {
    const u64 n_chunks = (n + chunk - 1) / chunk;
    for (u64 k = ss_thread_index(); k < n_chunks; k += ss_thread_stride()) {
        const u64 begin = k * chunk;
        const u64 end = begin + chunk < n ? begin + chunk : n;
        double acc = 0.0;
        // Unrolling issues several loads ahead; the additions stay in index order.
#pragma unroll 8
        for (u64 i = begin; i < end; ++i) {
            const double v = (double)x[i];
            acc += square ? v * v : v;
        }
        partials[k] = acc;
    }
}

// The same for f64 values (per-element losses).
extern "C" __global__ void chunk_sums_f64(const double* x, u64 n, u32 chunk, double* partials) {
    const u64 n_chunks = (n + chunk - 1) / chunk;
    for (u64 k = ss_thread_index(); k < n_chunks; k += ss_thread_stride()) {
        const u64 begin = k * chunk;
        const u64 end = begin + chunk < n ? begin + chunk : n;
        double acc = 0.0;
#pragma unroll 8
        for (u64 i = begin; i < end; ++i) acc += x[i];
        partials[k] = acc;
    }
}
