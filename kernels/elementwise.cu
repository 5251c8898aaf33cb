// elementwise.cu: the small dense operations of a training step: bias add and its gradient, ReLU,
// dropout (mask from the counter-based hash), element-wise product, losses, Adam, scale/axpy, and
// a fixed-order sum.
//
// Every reduction has a fixed shape, so two runs give bit-identical results. Dropout's mask is
// keyed by (stream for Dropout + layer, id = the row's global node id, k = column): the CPU
// backend draws the same mask.
#include "common.cuh"

// x[i, :] += bias[:] for a row-major [n_rows, dim] matrix.
extern "C" __global__ void add_row_bias(float* x, const float* bias, u64 n_rows, u32 dim) {
    const u64 n = n_rows * dim;
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) x[i] += bias[i % dim];
}

// out[c] (= or +=, by accumulate) sum over rows r = 0, 1, ... in order of x[r, c].
// One thread per column: adjacent threads read adjacent columns.
extern "C" __global__ void column_sums(const float* x, u64 n_rows, u32 dim, float* out,
                                       int accumulate) {
    for (u64 c = ss_thread_index(); c < dim; c += ss_thread_stride()) {
        float acc = 0.0f;
        for (u64 r = 0; r < n_rows; ++r) acc += x[r * dim + c];
        out[c] = accumulate ? out[c] + acc : acc;
    }
}

extern "C" __global__ void relu_forward(const float* x, float* y, u64 n) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

// grad_x = grad_y where the forward output was positive, else 0 (y may be x or relu(x)).
extern "C" __global__ void relu_backward(const float* grad_y, const float* y, float* grad_x, u64 n) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        grad_x[i] = y[i] > 0.0f ? grad_y[i] : 0.0f;
    }
}

// Keep element (row, col) if unit_f32(hash(stream, row_ids[row], col)) >= p.
__device__ __forceinline__ bool ss_dropout_keep(u64 stream_state, u64 row_id, u64 col, float p) {
    return ss_unit_f32(ss_hash_at(stream_state, row_id, col)) >= p;
}

// y = keep ? x * scale : 0, scale = 1 / (1 - p) computed once on the host. Works in place.
extern "C" __global__ void dropout_forward(const float* x, float* y, const u64* row_ids, u64 n_rows,
                                           u32 dim, u64 stream_state, float p, float scale) {
    const u64 n = n_rows * dim;
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const u64 row = i / dim;
        const u64 col = i - row * dim;
        y[i] = ss_dropout_keep(stream_state, row_ids[row], col, p) ? x[i] * scale : 0.0f;
    }
}

// The same mask: grad_x = keep ? grad_y * scale : 0.
extern "C" __global__ void dropout_backward(const float* grad_y, float* grad_x, const u64* row_ids,
                                            u64 n_rows, u32 dim, u64 stream_state, float p,
                                            float scale) {
    const u64 n = n_rows * dim;
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const u64 row = i / dim;
        const u64 col = i - row * dim;
        grad_x[i] = ss_dropout_keep(stream_state, row_ids[row], col, p) ? grad_y[i] * scale : 0.0f;
    }
}

extern "C" __global__ void mul_forward(const float* a, const float* b, float* z, u64 n) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) z[i] = a[i] * b[i];
}

// grad_a = g * b, grad_b = g * a.
extern "C" __global__ void mul_backward(const float* g, const float* a, const float* b,
                                        float* grad_a, float* grad_b, u64 n) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const float gi = g[i];
        const float ai = a[i];
        const float bi = b[i];
        grad_a[i] = gi * bi;
        grad_b[i] = gi * ai;
    }
}

// Binary cross-entropy on logits x with targets y, per element:
// loss = max(x, 0) - x * y + log1p(exp(-|x|)), grad = scale * (sigmoid(x) - y).
extern "C" __global__ void bce_with_logits(const float* x, const float* y, u64 n, float scale,
                                           float* loss, float* grad) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const float xi = x[i];
        const float yi = y[i];
        loss[i] = fmaxf(xi, 0.0f) - xi * yi + log1pf(expf(-fabsf(xi)));
        const float sig = 1.0f / (1.0f + expf(-xi));
        grad[i] = scale * (sig - yi);
    }
}

// Softmax cross-entropy per row of logits [n_rows, n_classes] with integer labels:
// loss[r] = logsumexp(x[r, :]) - x[r, label], grad[r, :] = scale * (softmax(x[r, :]) - onehot).
// One warp per row; the warp reductions have a fixed shape.
extern "C" __global__ void softmax_cross_entropy(const float* logits, const u32* labels, u64 n_rows,
                                                 u32 n_classes, float scale, float* loss,
                                                 float* grad) {
    const u32 lane = ss_lane();
    for (u64 r = ss_warp_index(); r < n_rows; r += ss_warp_stride()) {
        const float* x = logits + r * n_classes;
        float* g = grad + r * n_classes;
        float m = __int_as_float(0xff800000); // -infinity
        for (u32 c = lane; c < n_classes; c += SS_WARP) m = fmaxf(m, x[c]);
        for (u32 d = SS_WARP / 2; d > 0; d >>= 1) m = fmaxf(m, __shfl_xor_sync(SS_FULL_MASK, m, d));
        float s = 0.0f;
        for (u32 c = lane; c < n_classes; c += SS_WARP) s += expf(x[c] - m);
        for (u32 d = SS_WARP / 2; d > 0; d >>= 1) s += __shfl_xor_sync(SS_FULL_MASK, s, d);
        const float lse = m + logf(s);
        const u32 label = labels[r];
        for (u32 c = lane; c < n_classes; c += SS_WARP) {
            const float onehot = c == label ? 1.0f : 0.0f;
            g[c] = scale * (expf(x[c] - lse) - onehot);
        }
        if (lane == 0) loss[r] = lse - x[label];
    }
}

// Adam with bias correction and optional L2 weight decay added to the gradient:
// g' = g + wd * p; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
// p -= lr * (m / bc1) / (sqrt(v / bc2) + eps), bc1 = 1 - b1^t, bc2 = 1 - b2^t from the host.
extern "C" __global__ void adam_update(float* param, const float* grad, float* m, float* v, u64 n,
                                       float lr, float beta1, float beta2, float eps,
                                       float weight_decay, float bias_correction1,
                                       float bias_correction2) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const float p = param[i];
        const float g = grad[i] + weight_decay * p;
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        const float m_hat = mi / bias_correction1;
        const float v_hat = vi / bias_correction2;
        param[i] = p - lr * m_hat / (sqrtf(v_hat) + eps);
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

#define SS_SUM_THREADS 256

// *out = sum of x[0 .. n): thread t sums x[t], x[t + 256], ... in order, then a fixed tree.
// Launch with exactly one block of 256 threads.
extern "C" __global__ void __launch_bounds__(SS_SUM_THREADS)
sum_fixed_order(const float* x, u64 n, float* out) {
    __shared__ float partial[SS_SUM_THREADS];
    float acc = 0.0f;
    for (u64 i = threadIdx.x; i < n; i += SS_SUM_THREADS) acc += x[i];
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (u32 half = SS_SUM_THREADS / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = partial[0];
}
