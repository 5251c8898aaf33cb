// walk.cu: the trial scan of a random-walk step (DeepWalk and node2vec), one thread per walker.
//
// Semantics (src/walk/mod.rs `scan_walker` produces identical output, bit for bit):
//  - Draws of trial k of a walker: h_x = hash(seed, 0, step, PURPOSE_WALK, walk, 2k) picks the
//    candidate x = neighbours(cur)[below(h_x, deg)]; u = (double)unit_f32(hash(.., 2k + 1)) * bound,
//    bound = max(1/p, 1, 1/q), in double precision.
//  - A walker at a node without neighbours ends (status 2). The first step of a walk (no previous
//    node) and every step of a first-order walk take trial 0 (status 1).
//  - Otherwise trials run from next_trial on: x == prev accepts iff u < 1/p; else u below
//    min(1, 1/q) accepts, u at or above max(1, 1/q) rejects, and a u in between accepts iff
//    "x neighbours prev" says so (u < 1 for a neighbour, u < 1/q for another node). That question is
//    answered here when this part owns prev (binary search of its sorted neighbours); otherwise
//    the trial is recorded as asked. The scan stops at the first accept or after SS_WALK_ASKS asked
//    trials. With no asked trial the step is decided (status 1, node = the accepted x); with asked
//    trials node holds the accepted x after them (or SS_NO_NODE) and status stays 0.
#include "common.cuh"

#define SS_WALK_ASKS 4
#define SS_NO_NODE 0xFFFFFFFFu
// sample::rng::Purpose::Walk.
#define SS_PURPOSE_WALK 0xA00ULL

// Whether the sorted list a[0 .. n) holds x.
__device__ __forceinline__ bool ss_sorted_contains(const u32* a, u64 n, u32 x) {
    u64 lo = 0, hi = n;
    while (lo < hi) {
        const u64 mid = lo + (hi - lo) / 2;
        if (a[mid] < x) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < n && a[lo] == x;
}

// status: in 0 (open) or 1/2 (decided: skipped); out 0 (asking), 1 (decided: node), 2 (ended).
// asked_x / asked_u hold SS_WALK_ASKS slots per walker, asked_len how many are used.
extern "C" __global__ void walk_trials(const u64* indptr, const u32* indices, u64 first_node,
                                       u64 num_local, const u64* walk, const u32* cur,
                                       const u32* prev, const u32* step, u64 n_walkers, u64 seed,
                                       double p, double q, double bound, u32 first_order,
                                       u32* status, u64* next_trial, u32* node, u32* asked_len,
                                       u32* asked_x, double* asked_u) {
    const double inv_p = 1.0 / p;
    const double inv_q = 1.0 / q;
    const double lo = inv_q < 1.0 ? inv_q : 1.0;
    const double hi = inv_q > 1.0 ? inv_q : 1.0;
    for (u64 i = ss_thread_index(); i < n_walkers; i += ss_thread_stride()) {
        if (status[i] != 0) continue;
        asked_len[i] = 0;
        const u64 c = (u64)cur[i] - first_node;
        const u64 begin = indptr[c];
        const u64 deg = indptr[c + 1] - begin;
        if (deg == 0) {
            status[i] = 2;
            node[i] = SS_NO_NODE;
            continue;
        }
        const u64 stream = ss_stream(seed, 0, step[i], SS_PURPOSE_WALK);
        const u64 w = walk[i];
        const u32 pv = prev[i];
        if (pv == SS_NO_NODE || first_order) {
            status[i] = 1;
            node[i] = indices[begin + ss_below(ss_hash_at(stream, w, 0), deg)];
            continue;
        }
        const bool prev_here = (u64)pv >= first_node && (u64)pv - first_node < num_local;
        u64 pbegin = 0, pdeg = 0;
        if (prev_here) {
            pbegin = indptr[(u64)pv - first_node];
            pdeg = indptr[(u64)pv - first_node + 1] - pbegin;
        }
        u64 k = next_trial[i];
        u32 asked = 0;
        u32 accepted = SS_NO_NODE;
        while (asked < SS_WALK_ASKS) {
            const u64 hx = ss_hash_at(stream, w, 2 * k);
            const double u = (double)ss_unit_f32(ss_hash_at(stream, w, 2 * k + 1)) * bound;
            ++k;
            const u32 x = indices[begin + ss_below(hx, deg)];
            // 0 reject, 1 accept, 2 ask.
            int verdict;
            if (x == pv) {
                verdict = u < inv_p ? 1 : 0;
            } else if (u < lo) {
                verdict = 1;
            } else if (u >= hi) {
                verdict = 0;
            } else if (prev_here) {
                const bool nb = ss_sorted_contains(indices + pbegin, pdeg, x);
                verdict = u < (nb ? 1.0 : inv_q) ? 1 : 0;
            } else {
                verdict = 2;
            }
            if (verdict == 1) {
                accepted = x;
                break;
            }
            if (verdict == 2) {
                asked_x[i * SS_WALK_ASKS + asked] = x;
                asked_u[i * SS_WALK_ASKS + asked] = u;
                ++asked;
            }
        }
        next_trial[i] = k;
        asked_len[i] = asked;
        node[i] = accepted;
        if (asked == 0) status[i] = 1;
    }
}
