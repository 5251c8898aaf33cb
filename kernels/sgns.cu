// sgns.cu: one sub-round of skip-gram with negative sampling under the conflict-free block
// schedule (src/walk/sgns.rs): input block a of this rank against output block (a + s) mod
// blocks of the rank q whose output rows are here, for every a at once, one warp (one thread
// block of 32 threads) per input block and the bucket's pairs in their order.
//
// Semantics (src/walk/sgns.rs `run_bucket` computes the same operations in the same order):
//  - Pair e of bucket k = (a * ranks + q) * blocks + b, b = (a + s) mod blocks, holds the
//    centre's row within input block a, the context's row within q's output block b and a
//    random word. Its targets: the context, then `negatives` draws from block (q, b)'s alias
//    table (h = hash(seed, word, j, PURPOSE_WALK + 5, 0, 0); i = below(h, len); i if
//    unit_f32(rotl(h, 32) ^ 0x5DEECE66D1CE4E5B) < prob[i], else alias[i]), a draw equal to the
//    context skipped.
//  - rate = lr0 + (lr1 - lr0) * (e / n) in f32. Per target (label 1 for the context, 0 after):
//    x = dot(v, u) with eight partial sums (element 8c + l into sum l, c ascending), combined as
//    ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7)), then the dim % 8 remaining elements;
//    g = rate * (label - 1 / (1 + exp(-clamp(x, -30, 30)))); neu += g * u; u += g * v. After the
//    last target v += neu.
//  - Pairs whose index in the episode (bucket_start[k] + e) is a multiple of SS_SGNS_LOSS_EVERY
//    add their loss times SS_SGNS_LOSS_EVERY to loss[a] (an estimate, only reported).
// Compiled with --fmad=false, so every product and sum is rounded as on the CPU; expf and log1p
// are the device's, so results agree with the CPU's to rounding (exactly on the host emulation).
#include "common.cuh"

#define SS_SGNS_MAX_DIM 1024
#define SS_SGNS_LOSS_EVERY 16
// sample::rng::Purpose::Walk + 5: the negatives' draws.
#define SS_PURPOSE_NEGATIVES (0xA00ULL + 5)

__device__ __forceinline__ float ss_sgns_dot(const float* v, const float* u, u32 dim) {
    const u32 lane = ss_lane();
    const u32 full = dim - dim % 8;
    float acc = 0.0f;
    if (lane < 8) {
        for (u32 j = lane; j < full; j += 8) acc += v[j] * u[j];
    }
    float p[8];
#pragma unroll
    for (int l = 0; l < 8; ++l) p[l] = __shfl_sync(SS_FULL_MASK, acc, l);
    float x = ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
    for (u32 j = full; j < dim; ++j) x += v[j] * u[j];
    return x;
}

extern "C" __global__ void __launch_bounds__(32)
sgns_sub_round(float* input, float* output, u32 dim, u32 blocks, u32 ranks, u32 q, u32 s,
               const u64* in_start, const u64* out_start, const u64* bucket_start,
               const u32* input_row, const u32* output_row, const u32* word, u32 negatives,
               u64 seed, const float* neg_prob, const u32* neg_alias, const u64* neg_offset,
               float lr0, float lr1, double* loss) {
    __shared__ float neu[SS_SGNS_MAX_DIM];
    const u32 lane = ss_lane();
    for (u32 a = blockIdx.x; a < blocks; a += gridDim.x) {
        const u32 b = (a + s) % blocks;
        const u64 k = ((u64)a * ranks + q) * blocks + b;
        const u64 first = bucket_start[k];
        const u64 n = bucket_start[k + 1] - first;
        float* in_block = input + in_start[a] * dim;
        float* out_block = output + out_start[b] * dim;
        const u64 table = (u64)q * blocks + b;
        const u64 t_begin = neg_offset[table];
        const u64 t_len = neg_offset[table + 1] - t_begin;
        double block_loss = 0.0;
        for (u64 e = 0; e < n; ++e) {
            const float rate = lr0 + (lr1 - lr0) * ((float)e / (float)n);
            const bool with_loss = (first + e) % SS_SGNS_LOSS_EVERY == 0;
            float* v = in_block + (u64)input_row[first + e] * dim;
            const u32 context = output_row[first + e];
            for (u32 j = lane; j < dim; j += SS_WARP) neu[j] = 0.0f;
            __syncwarp();
            double pair_loss = 0.0;
            // Target 0 is the context; 1 .. negatives the draws (none without a table).
            const u32 draws = t_len > 0 ? negatives : 0;
            for (u32 d = 0; d <= draws; ++d) {
                u32 t = context;
                if (d > 0) {
                    const u64 h = ss_hash_at(ss_stream(seed, word[first + e], d - 1, SS_PURPOSE_NEGATIVES), 0, 0);
                    const u64 i = ss_below(h, t_len);
                    const u64 r = ((h << 32) | (h >> 32)) ^ 0x5DEECE66D1CE4E5BULL;
                    t = ss_unit_f32(r) < neg_prob[t_begin + i] ? (u32)i : neg_alias[t_begin + i];
                    if (t == context) continue;
                }
                float* u = out_block + (u64)t * dim;
                const float x = ss_sgns_dot(v, u, dim);
                // Every lane has read u before any lane writes it.
                __syncwarp();
                const float label = d == 0 ? 1.0f : 0.0f;
                const float xc = fminf(fmaxf(x, -30.0f), 30.0f);
                const float ex = expf(-xc);
                const float sig = 1.0f / (1.0f + ex);
                if (with_loss) {
                    const double softplus = log1p((double)ex);
                    pair_loss += d == 0 ? softplus : (double)xc + softplus;
                }
                const float g = rate * (label - sig);
                for (u32 j = lane; j < dim; j += SS_WARP) {
                    neu[j] += g * u[j];
                    u[j] += g * v[j];
                }
                __syncwarp();
            }
            for (u32 j = lane; j < dim; j += SS_WARP) v[j] += neu[j];
            __syncwarp();
            block_loss += pair_loss * SS_SGNS_LOSS_EVERY;
        }
        if (lane == 0) loss[a] = block_loss;
    }
}
