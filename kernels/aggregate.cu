// aggregate.cu: GraphSAGE mean aggregation over a sampled block, forward and backward, and row
// gathers.
//
// A block has n_dst destination rows; the neighbours of destination v are
// indices[indptr[v] .. indptr[v+1]] (row positions into h_src). Sums run over a row's edges in
// order, so results are deterministic; the backward pass uses a reverse index (edges of each
// source row in ascending edge order) and no float atomics.
#include "common.cuh"

__device__ __forceinline__ bool ss_aligned16(const void* p) {
    return (((unsigned long long)p) & 15ULL) == 0;
}

__device__ __forceinline__ void ss_add4(float4& acc, const float4 v) {
    acc.x += v.x;
    acc.y += v.y;
    acc.z += v.z;
    acc.w += v.w;
}

// acc += v * s, rounding the product and the sum separately (no fused multiply-add: the CPU
// backend rounds twice).
__device__ __forceinline__ void ss_add_scaled4(float4& acc, const float4 v, const float s) {
    acc.x += v.x * s;
    acc.y += v.y * s;
    acc.z += v.z * s;
    acc.w += v.w * s;
}

// Row v of out (out_stride floats) holds at column mean_col the mean of h_src[u, :] over the
// neighbours u of v: (1 / deg(v)) * their sum, 0 where deg(v) = 0. With mean_col = dim the
// row starts with v's own input row, h_src[v, :] (a block's destinations are its first sources);
// with mean_col = 0 (out_stride = dim) it is the mean alone.
// One warp per destination row, float4 columns when dim % 4 == 0.
extern "C" __global__ void sage_mean_forward(const u32* indptr, const u32* indices, u64 n_dst,
                                             const float* h_src, u32 dim, float* out,
                                             u32 out_stride, u32 mean_col) {
    const u32 lane = ss_lane();
    const bool vec = (dim % 4 == 0) && (out_stride % 4 == 0) && (mean_col % 4 == 0) &&
                     ss_aligned16(h_src) && ss_aligned16(out);
    for (u64 v = ss_warp_index(); v < n_dst; v += ss_warp_stride()) {
        const u32 begin = indptr[v];
        const u32 end = indptr[v + 1];
        const float inv = end > begin ? 1.0f / (float)(end - begin) : 0.0f;
        for (u32 c = lane; c < mean_col; c += SS_WARP) out[v * out_stride + c] = h_src[v * dim + c];
        if (vec) {
            const u32 dim4 = dim / 4;
            const float4* src4 = reinterpret_cast<const float4*>(h_src);
            float4* out4 = reinterpret_cast<float4*>(out + v * out_stride + mean_col);
            for (u32 c = lane; c < dim4; c += SS_WARP) {
                float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                u32 e = begin;
                // Four rows in flight per lane (loads first, then the adds in edge order), so a
                // warp waits on memory once per four edges instead of once per edge.
                for (; e + 4 <= end; e += 4) {
                    const float4 a = src4[(u64)indices[e] * dim4 + c];
                    const float4 b = src4[(u64)indices[e + 1] * dim4 + c];
                    const float4 d = src4[(u64)indices[e + 2] * dim4 + c];
                    const float4 f = src4[(u64)indices[e + 3] * dim4 + c];
                    ss_add4(acc, a);
                    ss_add4(acc, b);
                    ss_add4(acc, d);
                    ss_add4(acc, f);
                }
                for (; e < end; ++e) ss_add4(acc, src4[(u64)indices[e] * dim4 + c]);
                out4[c] = make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
            }
        } else {
            for (u32 c = lane; c < dim; c += SS_WARP) {
                float acc = 0.0f;
                for (u32 e = begin; e < end; ++e) acc += h_src[(u64)indices[e] * dim + c];
                out[v * out_stride + mean_col + c] = acc * inv;
            }
        }
    }
}

// With g[v] = grad_out[v * g_stride + mean_col ..][.. dim] (the gradient of v's mean):
// grad_src[u, :] = sum over the edges e of source row u, in ascending edge order, of
// g[edge_dst[e]] * (1 / deg(edge_dst[e])), deg(v) = indptr[v+1] - indptr[v]; zero for a source
// with no edges; then, when mean_col = dim and u < n_dst, plus the gradient of u's own row
// (grad_out[u * g_stride ..][.. dim]). The edges of u are rev_edges[rev_indptr[u] ..
// rev_indptr[u+1]]. One warp per source row; grad_src is overwritten.
extern "C" __global__ void sage_mean_backward(const u32* indptr, const u32* rev_indptr,
                                              const u32* rev_edges, const u32* edge_dst, u64 n_src,
                                              const float* grad_out, u32 dim, float* grad_src,
                                              u32 g_stride, u32 mean_col, u64 n_dst) {
    const u32 lane = ss_lane();
    const bool vec = (dim % 4 == 0) && (g_stride % 4 == 0) && (mean_col % 4 == 0) &&
                     ss_aligned16(grad_out) && ss_aligned16(grad_src);
    for (u64 u = ss_warp_index(); u < n_src; u += ss_warp_stride()) {
        const u32 begin = rev_indptr[u];
        const u32 end = rev_indptr[u + 1];
        const bool own = mean_col > 0 && u < n_dst;
        if (vec) {
            const u32 dim4 = dim / 4, stride4 = g_stride / 4, col4 = mean_col / 4;
            const float4* g4 = reinterpret_cast<const float4*>(grad_out);
            float4* out4 = reinterpret_cast<float4*>(grad_src) + u * dim4;
            for (u32 c = lane; c < dim4; c += SS_WARP) {
                float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                u32 r = begin;
                // Two edges' index chains (reverse edge -> destination -> degree -> row) in
                // flight at once; the adds stay in ascending edge order.
                for (; r + 2 <= end; r += 2) {
                    const u32 v0 = edge_dst[rev_edges[r]];
                    const u32 v1 = edge_dst[rev_edges[r + 1]];
                    const float inv0 = 1.0f / (float)(indptr[v0 + 1] - indptr[v0]);
                    const float inv1 = 1.0f / (float)(indptr[v1 + 1] - indptr[v1]);
                    const float4 g0 = g4[(u64)v0 * stride4 + col4 + c];
                    const float4 g1 = g4[(u64)v1 * stride4 + col4 + c];
                    ss_add_scaled4(acc, g0, inv0);
                    ss_add_scaled4(acc, g1, inv1);
                }
                if (r < end) {
                    const u32 v = edge_dst[rev_edges[r]];
                    const float inv = 1.0f / (float)(indptr[v + 1] - indptr[v]);
                    ss_add_scaled4(acc, g4[(u64)v * stride4 + col4 + c], inv);
                }
                if (own) ss_add4(acc, g4[u * stride4 + c]);
                out4[c] = acc;
            }
        } else {
            for (u32 c = lane; c < dim; c += SS_WARP) {
                float acc = 0.0f;
                for (u32 r = begin; r < end; ++r) {
                    const u32 v = edge_dst[rev_edges[r]];
                    const float inv = 1.0f / (float)(indptr[v + 1] - indptr[v]);
                    acc += grad_out[(u64)v * g_stride + mean_col + c] * inv;
                }
                if (own) acc += grad_out[u * g_stride + c];
                grad_src[u * dim + c] = acc;
            }
        }
    }
}

// out[i, :] = table[rows[i], :]. One warp per output row. A row index >= table_rows is not read:
// its output row is left alone and *bad is set to 1 (the host checks it).
extern "C" __global__ void gather_rows(const float* table, u64 table_rows, const u32* rows,
                                       u64 n_rows, u32 dim, float* out, u32* bad) {
    const u32 lane = ss_lane();
    const bool vec = (dim % 4 == 0) && ss_aligned16(table) && ss_aligned16(out);
    for (u64 i = ss_warp_index(); i < n_rows; i += ss_warp_stride()) {
        const u64 r = rows[i];
        if (r >= table_rows) {
            if (lane == 0) *bad = 1u;
            continue;
        }
        if (vec) {
            const u32 dim4 = dim / 4;
            const float4* src4 = reinterpret_cast<const float4*>(table) + r * dim4;
            float4* out4 = reinterpret_cast<float4*>(out) + i * dim4;
            for (u32 c = lane; c < dim4; c += SS_WARP) out4[c] = src4[c];
        } else {
            for (u32 c = lane; c < dim; c += SS_WARP) out[i * dim + c] = table[r * dim + c];
        }
    }
}

// out[positions[k], :] = src[k, :]. One warp per source row; positions are distinct (the caller
// guarantees it), so no two warps write the same row. A position >= out_rows is not written and
// sets *bad to 1 (the host checks it).
extern "C" __global__ void scatter_rows(const float* src, u64 n_rows, const u32* positions,
                                        u64 out_rows, u32 dim, float* out, u32* bad) {
    const u32 lane = ss_lane();
    const bool vec = (dim % 4 == 0) && ss_aligned16(src) && ss_aligned16(out);
    for (u64 k = ss_warp_index(); k < n_rows; k += ss_warp_stride()) {
        const u64 p = positions[k];
        if (p >= out_rows) {
            if (lane == 0) *bad = 1u;
            continue;
        }
        if (vec) {
            const u32 dim4 = dim / 4;
            const float4* src4 = reinterpret_cast<const float4*>(src) + k * dim4;
            float4* out4 = reinterpret_cast<float4*>(out) + p * dim4;
            for (u32 c = lane; c < dim4; c += SS_WARP) out4[c] = src4[c];
        } else {
            for (u32 c = lane; c < dim; c += SS_WARP) out[p * dim + c] = src[k * dim + c];
        }
    }
}
