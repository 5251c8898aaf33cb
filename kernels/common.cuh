// common.cuh: helpers shared by every shardsage kernel file.
//
// The counter-based hash here is bit-identical to src/sample/rng.rs (mix64, fold, GOLDEN, the
// stream prefix (seed, epoch, step, purpose) then id then k, below, unit_f32): the same node in the
// same batch gets the same random draws on the CPU and on the GPU. Change both or neither.
//
// NVRTC compiles these files at run time with no include paths: this header is handed to NVRTC
// as a named in-memory header, so it must not include anything itself.
#pragma once

typedef unsigned long long u64;
typedef unsigned int u32;
typedef long long i64;

#define SS_WARP 32
#define SS_FULL_MASK 0xffffffffu

// Odd constant added before each mix so that zero words still change the state.
#define SS_GOLDEN 0x9E3779B97F4A7C15ULL

// SplitMix64 finaliser.
__device__ __forceinline__ u64 ss_mix64(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// Folds one counter word into a hash state.
__device__ __forceinline__ u64 ss_fold(u64 state, u64 word) {
    return ss_mix64(state ^ (word + SS_GOLDEN));
}

// The folded prefix (seed, epoch, step, purpose); kernels usually receive it ready-made.
__device__ __forceinline__ u64 ss_stream(u64 seed, u64 epoch, u64 step, u64 purpose) {
    return ss_fold(ss_fold(ss_fold(ss_fold(SS_GOLDEN, seed), epoch), step), purpose);
}

// hash(seed, epoch, step, purpose, id, k) given the folded prefix.
__device__ __forceinline__ u64 ss_hash_at(u64 stream_state, u64 id, u64 k) {
    return ss_fold(ss_fold(stream_state, id), k);
}

// A 64-bit hash mapped to [0, n): multiply-high for n < 2^32, modulo otherwise.
__device__ __forceinline__ u64 ss_below(u64 h, u64 n) {
    if (n <= 0xFFFFFFFFULL) {
        return ((h >> 32) * n) >> 32;
    }
    return h % n;
}

// A 64-bit hash mapped to a uniform float in [0, 1) from its top 24 bits (exact in f32).
__device__ __forceinline__ float ss_unit_f32(u64 h) {
    return (float)(u32)(h >> 40) * (1.0f / 16777216.0f);
}

// Global index of this thread and the grid-stride step, as 64-bit values.
__device__ __forceinline__ u64 ss_thread_index() {
    return (u64)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ u64 ss_thread_stride() {
    return (u64)gridDim.x * blockDim.x;
}

// Global warp index, warp-grid stride and lane, for one-warp-per-row kernels.
__device__ __forceinline__ u64 ss_warp_index() {
    return ss_thread_index() / SS_WARP;
}
__device__ __forceinline__ u64 ss_warp_stride() {
    return ss_thread_stride() / SS_WARP;
}
__device__ __forceinline__ u32 ss_lane() {
    return threadIdx.x & (SS_WARP - 1);
}

// Inclusive warp scan of an integer (Hillis-Steele with shuffles; every lane participates).
template <typename T>
__device__ __forceinline__ T ss_warp_inclusive_scan(T v) {
    const u32 lane = ss_lane();
#pragma unroll
    for (u32 d = 1; d < SS_WARP; d <<= 1) {
        T n = __shfl_up_sync(SS_FULL_MASK, v, d);
        if (lane >= d) v += n;
    }
    return v;
}
