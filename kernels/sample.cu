// sample.cu: uniform neighbour sampling without replacement, and the deterministic
// deduplication / relabelling of sampled nodes into a block.
//
// Semantics (the CPU sampler produces identical output):
//  - A frontier node with degree <= fanout, or fanout < 0, keeps all its neighbours in CSR order.
//  - Otherwise Floyd's algorithm picks `fanout` distinct positions: for j in deg-fanout .. deg,
//    t = below(fold(idstate, j), j + 1); take t unless already taken, else take j. The positions
//    are sorted ascending and the neighbours at those positions are emitted in that order.
//    idstate = fold(stream_state, global node id), stream_state = the folded
//    (seed, epoch, step, purpose) prefix.
//  - Deduplication keeps the first occurrence of each id in the order of `keys` (the destination
//    nodes first, then the sampled candidates) and numbers the unique ids 0, 1, 2, ... in that
//    order.
#include "common.cuh"

// The whole warp sorts a[0 .. len) ascending in place: odd-even transposition, len phases over
// disjoint pairs (for lists longer than a warp's in-register ranking takes).
template <typename T>
__device__ void ss_warp_sort(T* a, u32 len, u32 lane) {
    for (u32 phase = 0; phase < len; ++phase) {
        for (u32 i = 2 * lane + (phase & 1); i + 1 < len; i += 2 * SS_WARP) {
            const T x = a[i];
            const T y = a[i + 1];
            if (x > y) {
                a[i] = y;
                a[i + 1] = x;
            }
        }
        __syncwarp();
    }
}

// Number of samples each frontier node produces: deg if fanout < 0 or deg <= fanout, else fanout.
extern "C" __global__ void sample_counts(const u64* indptr, u64 first_node, const u64* nodes,
                                         u64 n_nodes, int fanout, u64* counts) {
    for (u64 i = ss_thread_index(); i < n_nodes; i += ss_thread_stride()) {
        const u64 local = nodes[i] - first_node;
        const u64 deg = indptr[local + 1] - indptr[local];
        counts[i] = (fanout < 0 || deg <= (u64)fanout) ? deg : (u64)fanout;
    }
}

// One warp per frontier node; the node's samples go to out[offsets[i] ..] (global ids).
// offsets come from an exclusive scan of sample_counts (or a fixed stride of fanout).
extern "C" __global__ void sample_neighbors(const u64* indptr, const u32* indices, u64 first_node,
                                            const u64* nodes, u64 n_nodes, int fanout,
                                            u64 stream_state, const u64* offsets, u64* out) {
    const u32 lane = ss_lane();
    for (u64 w = ss_warp_index(); w < n_nodes; w += ss_warp_stride()) {
        const u64 node = nodes[w];
        const u64 local = node - first_node;
        const u64 begin = indptr[local];
        const u64 deg = indptr[local + 1] - begin;
        u64* dst = out + offsets[w];
        if (fanout < 0 || deg <= (u64)fanout) {
            for (u64 e = lane; e < deg; e += SS_WARP) dst[e] = indices[begin + e];
            continue;
        }
        const u64 idstate = ss_fold(stream_state, node);
        const u32 k = (u32)fanout;
        if (k <= SS_WARP) {
            // Lane i holds the i-th Floyd position; "already taken" is a warp vote.
            u64 pos = ~0ULL;
            for (u32 i = 0; i < k; ++i) {
                const u64 j = deg - k + i;
                const u64 t = ss_below(ss_fold(idstate, j), j + 1);
                const bool taken = __any_sync(SS_FULL_MASK, lane < i && pos == t);
                if (lane == i) pos = taken ? j : t;
            }
            // Positions are distinct: a lane's rank is the number of smaller positions.
            u32 rank = 0;
            for (u32 l = 0; l < k; ++l) {
                const u64 other = __shfl_sync(SS_FULL_MASK, pos, l);
                rank += other < pos ? 1u : 0u;
            }
            if (lane < k) dst[rank] = indices[begin + pos];
        } else {
            // Large fanouts: the output slots hold the positions while they are drawn and sorted.
            for (u32 i = 0; i < k; ++i) {
                const u64 j = deg - k + i;
                const u64 t = ss_below(ss_fold(idstate, j), j + 1);
                bool hit = false;
                for (u32 l = lane; l < i; l += SS_WARP) hit |= dst[l] == t;
                const bool taken = __any_sync(SS_FULL_MASK, hit);
                if (lane == 0) dst[i] = taken ? j : t;
                __syncwarp();
            }
            ss_warp_sort(dst, k, lane);
            for (u32 l = lane; l < k; l += SS_WARP) dst[l] = indices[begin + dst[l]];
            __syncwarp();
        }
    }
}

// ---- Deduplication with a hash table (open addressing, linear probing) ----
// table_keys[capacity] and table_pos[capacity], capacity a power of two >= 2 * n.

#define SS_EMPTY_KEY 0xFFFFFFFFFFFFFFFFULL

extern "C" __global__ void dedup_clear(u64* table_keys, u32* table_pos, u64 capacity) {
    for (u64 i = ss_thread_index(); i < capacity; i += ss_thread_stride()) {
        table_keys[i] = SS_EMPTY_KEY;
        table_pos[i] = 0xFFFFFFFFu;
    }
}

// Inserts every key; each slot ends with the smallest position at which its key occurs.
extern "C" __global__ void dedup_insert(const u64* keys, u64 n, u64* table_keys, u32* table_pos,
                                        u64 capacity, u32* slot_of) {
    const u64 mask = capacity - 1;
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const u64 key = keys[i];
        u64 slot = ss_mix64(key) & mask;
        while (true) {
            const u64 prev = atomicCAS(&table_keys[slot], SS_EMPTY_KEY, key);
            if (prev == SS_EMPTY_KEY || prev == key) {
                atomicMin(&table_pos[slot], (u32)i);
                slot_of[i] = (u32)slot;
                break;
            }
            slot = (slot + 1) & mask;
        }
    }
}

// first[i] = 1 where position i is the first occurrence of its key.
extern "C" __global__ void dedup_flags(const u32* slot_of, const u32* table_pos, u64 n, u32* first) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        first[i] = table_pos[slot_of[i]] == (u32)i ? 1u : 0u;
    }
}

// new_pos = exclusive scan of first. Writes the unique keys in first-seen order and, for every
// position, the new id of its key.
extern "C" __global__ void dedup_emit(const u64* keys, const u32* slot_of, const u32* table_pos,
                                      const u32* new_pos, u64 n, u64* unique_keys, u32* labels) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const u32 p = table_pos[slot_of[i]];
        labels[i] = new_pos[p];
        if (p == (u32)i) unique_keys[new_pos[i]] = keys[i];
    }
}

// ---- A block's index arrays on the device (the block chain: no host round trip) ----
// The same arrays as sample::block::Block: the CSR by destination (indptr, indices), the reverse
// index by source with each source's edge ids ascending (rev_indptr, rev_edges), edge_dst, and the
// u32 node ids the dropout keys read.

// indptr[i] = base + offsets[i] for i < n and indptr[n] = base + total: a hop's destination offsets
// from the u64 exclusive scan of its sample counts, after `base` edges kept from the hop before.
extern "C" __global__ void block_indptr(const u64* offsets, u64 n, u32 base, u64 total, u32* indptr) {
    for (u64 i = ss_thread_index(); i <= n; i += ss_thread_stride()) {
        indptr[i] = base + (u32)(i < n ? offsets[i] : total);
    }
}

// counts[u] += the number of edges whose source is u (counts zeroed first).
extern "C" __global__ void block_rev_count(const u32* indices, u64 n_edges, u32* counts) {
    for (u64 e = ss_thread_index(); e < n_edges; e += ss_thread_stride()) atomicAdd(&counts[indices[e]], 1u);
}

// Puts every edge into its source's segment of rev_edges (cursor zeroed first). The order inside a
// segment is the atomics' order; block_rev_sort then makes it ascending, so the result is fixed.
extern "C" __global__ void block_rev_fill(const u32* indices, u64 n_edges, const u32* rev_indptr, u32* cursor,
                                          u32* rev_edges) {
    for (u64 e = ss_thread_index(); e < n_edges; e += ss_thread_stride()) {
        const u32 u = indices[e];
        rev_edges[rev_indptr[u] + atomicAdd(&cursor[u], 1u)] = (u32)e;
    }
}

// One warp per source: sorts its segment of rev_edges ascending (the ids in a segment are distinct).
extern "C" __global__ void block_rev_sort(const u32* rev_indptr, u64 n_src, u32* rev_edges) {
    const u32 lane = ss_lane();
    for (u64 w = ss_warp_index(); w < n_src; w += ss_warp_stride()) {
        const u32 begin = rev_indptr[w];
        const u32 len = rev_indptr[w + 1] - begin;
        u32* seg = rev_edges + begin;
        if (len <= 1) continue;
        if (len <= SS_WARP) {
            // A lane's rank is the number of smaller ids.
            const u32 v = lane < len ? seg[lane] : 0xFFFFFFFFu;
            u32 rank = 0;
            for (u32 l = 0; l < len; ++l) rank += __shfl_sync(SS_FULL_MASK, v, l) < v ? 1u : 0u;
            __syncwarp();
            if (lane < len) seg[rank] = v;
        } else {
            ss_warp_sort(seg, len, lane);
        }
        __syncwarp();
    }
}

// One warp per destination v: edge_dst[e] = v for its edges.
extern "C" __global__ void block_edge_dst(const u32* indptr, u64 n_dst, u32* edge_dst) {
    const u32 lane = ss_lane();
    for (u64 v = ss_warp_index(); v < n_dst; v += ss_warp_stride()) {
        for (u32 e = indptr[v] + lane; e < indptr[v + 1]; e += SS_WARP) edge_dst[e] = (u32)v;
    }
}

// out[i] = ids[i] as u32 (a part's node ids fit: its CSR indices are u32).
extern "C" __global__ void narrow_ids(const u64* ids, u64 n, u32* out) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) out[i] = (u32)ids[i];
}

// ---- Exclusive scan: tiles of 1024 items per 256-thread block, then the tile sums, then add ----

#define SS_SCAN_THREADS 256
#define SS_SCAN_ITEMS 4
#define SS_SCAN_TILE (SS_SCAN_THREADS * SS_SCAN_ITEMS)

// Exclusive scan of data[base .. base + TILE) (clipped to n) from in to out, by the whole block;
// returns the tile total to every thread.
template <typename T>
__device__ T ss_block_scan_tile(const T* in, T* out, u64 base, u64 n, T carry) {
    __shared__ T warp_sums[SS_SCAN_THREADS / SS_WARP];
    const u32 lane = ss_lane();
    const u32 warp = threadIdx.x / SS_WARP;
    const u64 first = base + (u64)threadIdx.x * SS_SCAN_ITEMS;
    T items[SS_SCAN_ITEMS];
    T local = 0;
#pragma unroll
    for (u32 k = 0; k < SS_SCAN_ITEMS; ++k) {
        const u64 idx = first + k;
        items[k] = idx < n ? in[idx] : (T)0;
        local += items[k];
    }
    const T inclusive = ss_warp_inclusive_scan(local);
    if (lane == SS_WARP - 1) warp_sums[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        T s = lane < SS_SCAN_THREADS / SS_WARP ? warp_sums[lane] : (T)0;
        s = ss_warp_inclusive_scan(s);
        if (lane < SS_SCAN_THREADS / SS_WARP) warp_sums[lane] = s;
    }
    __syncthreads();
    T prefix = carry + (warp > 0 ? warp_sums[warp - 1] : (T)0) + inclusive - local;
#pragma unroll
    for (u32 k = 0; k < SS_SCAN_ITEMS; ++k) {
        const u64 idx = first + k;
        if (idx < n) out[idx] = prefix;
        prefix += items[k];
    }
    const T total = warp_sums[SS_SCAN_THREADS / SS_WARP - 1];
    __syncthreads(); // warp_sums is reused by the next call
    return total;
}

// Pass 1: one block per tile; tile_sums[tile] = the tile's total.
template <typename T>
__device__ void ss_scan_tiles(const T* in, T* out, T* tile_sums, u64 n) {
    const u64 tile = blockIdx.x;
    const T total = ss_block_scan_tile<T>(in, out, tile * SS_SCAN_TILE, n, (T)0);
    if (threadIdx.x == 0) tile_sums[tile] = total;
}

// Pass 2: one block scans the tile sums in place and writes the grand total.
template <typename T>
__device__ void ss_scan_sums(T* tile_sums, u64 n_tiles, T* total) {
    T carry = 0;
    for (u64 base = 0; base < n_tiles; base += SS_SCAN_TILE) {
        carry += ss_block_scan_tile<T>(tile_sums, tile_sums, base, n_tiles, carry);
    }
    if (threadIdx.x == 0) *total = carry;
}

// Pass 3: add each tile's offset.
template <typename T>
__device__ void ss_scan_add(T* out, const T* tile_sums, u64 n) {
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) out[i] += tile_sums[i / SS_SCAN_TILE];
}

extern "C" __global__ void __launch_bounds__(SS_SCAN_THREADS)
scan_tiles_u32(const u32* in, u32* out, u32* tile_sums, u64 n) { ss_scan_tiles<u32>(in, out, tile_sums, n); }
extern "C" __global__ void __launch_bounds__(SS_SCAN_THREADS)
scan_tiles_u64(const u64* in, u64* out, u64* tile_sums, u64 n) { ss_scan_tiles<u64>(in, out, tile_sums, n); }
extern "C" __global__ void __launch_bounds__(SS_SCAN_THREADS)
scan_sums_u32(u32* tile_sums, u64 n_tiles, u32* total) { ss_scan_sums<u32>(tile_sums, n_tiles, total); }
extern "C" __global__ void __launch_bounds__(SS_SCAN_THREADS)
scan_sums_u64(u64* tile_sums, u64 n_tiles, u64* total) { ss_scan_sums<u64>(tile_sums, n_tiles, total); }
extern "C" __global__ void scan_add_u32(u32* out, const u32* tile_sums, u64 n) { ss_scan_add<u32>(out, tile_sums, n); }
extern "C" __global__ void scan_add_u64(u64* out, const u64* tile_sums, u64 n) { ss_scan_add<u64>(out, tile_sums, n); }

// The counter-based hash evaluated on the device, for checking it against src/sample/rng.rs:
// hashes[i] = hash(seed, epoch, step, purpose, ids[i], k), belows[i] = below(hashes[i], bound),
// units[i] = unit_f32(hashes[i]).
extern "C" __global__ void hash_probe(u64 seed, u64 epoch, u64 step, u64 purpose, const u64* ids,
                                      u64 n, u64 k, u64 bound, u64* hashes, u64* belows,
                                      float* units) {
    const u64 stream_state = ss_stream(seed, epoch, step, purpose);
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const u64 h = ss_hash_at(stream_state, ids[i], k);
        hashes[i] = h;
        belows[i] = ss_below(h, bound);
        units[i] = ss_unit_f32(h);
    }
}
