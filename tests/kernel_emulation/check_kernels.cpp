// check_kernels.cpp: runs the CUDA kernels of kernels/ on the host emulation of cuda_emu.h and
// compares them with straightforward references (the rules of src/sample and the CPU backend).
// Built and run by tests/kernels_compile.rs; prints one line per failure and exits non-zero.
// With arguments it runs one kernel on inputs a Rust test wrote (see walk_trials_file).
#include "cuda_emu.h"
#include <algorithm>
#include <cstdio>
#include <unordered_map>
#include "sample.cu"
#include "aggregate.cu"
#include "elementwise.cu"
#include "walk.cu"
#include "sgns.cu"
#include <cstring>
#include <fstream>
#include <iterator>
static int failures = 0;
#define CHECK(c, ...) do { if (!(c)) { ++failures; std::printf("FAIL %s:%d: ", __FILE__, __LINE__); std::printf(__VA_ARGS__); std::printf("\n"); } } while (0)
static u64 rnd(u64 i, u64 seed) { return ss_mix64(i * 0x9E3779B97F4A7C15ULL + seed); }

// Reference: sample::neighbor::sample_node.
static void ref_sample(const std::vector<u32>& nb, int fanout, u64 ids, std::vector<u64>& out) {
    out.clear(); u64 deg = nb.size();
    if (fanout < 0 || deg <= (u64)fanout) { for (auto v : nb) out.push_back(v); return; }
    std::vector<u64> pos;
    for (u64 j = deg - fanout; j < deg; ++j) {
        u64 t = ss_below(ss_fold(ids, j), j + 1);
        pos.push_back(std::find(pos.begin(), pos.end(), t) != pos.end() ? j : t);
    }
    std::sort(pos.begin(), pos.end());
    for (auto p : pos) out.push_back(nb[p]);
}

template <class T> static void scan(const std::vector<T>& in, std::vector<T>& out, T& total) {
    u64 n = in.size(); u64 tiles = std::max<u64>(1, (n + 1023) / 1024);
    out.assign(std::max<u64>(n, 1), 0); std::vector<T> sums(tiles); std::vector<T> tot(1);
    if constexpr (sizeof(T) == 8) {
        launch(tiles, 256, [&] { scan_tiles_u64(in.data(), out.data(), sums.data(), n); });
        launch(1, 256, [&] { scan_sums_u64(sums.data(), tiles, tot.data()); });
        launch(1, 32, [&] { scan_add_u64(out.data(), sums.data(), n); });
    } else {
        launch(tiles, 256, [&] { scan_tiles_u32(in.data(), out.data(), sums.data(), n); });
        launch(1, 256, [&] { scan_sums_u32(sums.data(), tiles, tot.data()); });
        launch(1, 32, [&] { scan_add_u32(out.data(), sums.data(), n); });
    }
    total = tot[0];
}

// `check_kernels walk-trials IN OUT`: runs walk_trials on the scans a Rust test wrote to IN and
// writes the kernel's outputs to OUT, for the test to compare with walk::HostTrials bit for bit.
// IN: u64 first_node, num_local, nnz, n_walkers, seed, first_order; f64 p, q, bound; then
// indptr (u64, num_local + 1), indices (u32, nnz), walk (u64), cur, prev, step, status (u32),
// next_trial (u64), each n_walkers long. OUT: status, next_trial, node, asked_len, asked_x
// (SS_WALK_ASKS per walker), asked_u (f64, SS_WALK_ASKS per walker).
struct Reader {
    std::vector<char> bytes; size_t at = 0;
    template <class T> T one() { T v; std::memcpy(&v, bytes.data() + at, sizeof(T)); at += sizeof(T); return v; }
    template <class T> std::vector<T> many(u64 n) {
        std::vector<T> v(n); if (n) std::memcpy(v.data(), bytes.data() + at, n * sizeof(T)); at += n * sizeof(T); return v;
    }
};
template <class T> static void put(std::ofstream& f, const std::vector<T>& v) {
    f.write(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
static int walk_trials_file(const char* in_path, const char* out_path) {
    std::ifstream in(in_path, std::ios::binary);
    Reader r{std::vector<char>(std::istreambuf_iterator<char>(in), {})};
    const u64 first = r.one<u64>(), local = r.one<u64>(), nnz = r.one<u64>(), n = r.one<u64>();
    const u64 seed = r.one<u64>(), first_order = r.one<u64>();
    const double p = r.one<double>(), q = r.one<double>(), bound = r.one<double>();
    auto indptr = r.many<u64>(local + 1); auto indices = r.many<u32>(nnz);
    auto walk = r.many<u64>(n); auto cur = r.many<u32>(n); auto prev = r.many<u32>(n);
    auto step = r.many<u32>(n); auto status = r.many<u32>(n); auto next = r.many<u64>(n);
    if (r.at != r.bytes.size()) { std::printf("walk-trials: %s has %zu bytes, expected %zu\n", in_path, r.bytes.size(), r.at); return 2; }
    std::vector<u32> node(n, 0xdeadbeef), asked_len(n, 0xdeadbeef), asked_x(n * SS_WALK_ASKS, 0);
    std::vector<double> asked_u(n * SS_WALK_ASKS, 0.0);
    // Fewer threads than walkers, so the grid-stride loop is exercised too.
    launch(3, 64, [&] {
        walk_trials(indptr.data(), indices.data(), first, local, walk.data(), cur.data(), prev.data(), step.data(), n,
                    seed, p, q, bound, (u32)first_order, status.data(), next.data(), node.data(), asked_len.data(),
                    asked_x.data(), asked_u.data());
    });
    std::ofstream out(out_path, std::ios::binary);
    put(out, status); put(out, next); put(out, node); put(out, asked_len); put(out, asked_x); put(out, asked_u);
    return out.good() ? 0 : 2;
}

// `check_kernels sgns IN OUT`: the `blocks` sub-rounds of one ring position (sgns_sub_round,
// s = 0 .. blocks) on tables a Rust test wrote. IN: u64 dim, blocks, ranks, q, negatives, seed,
// n_buckets, n_pairs, n_prob, input_len, output_len; f32 lr0, lr1; then in_start, out_start
// (u64, blocks + 1), bucket_start (u64, n_buckets + 1), input_row, output_row, word (u32,
// n_pairs), prob (f32, n_prob), alias (u32, n_prob), neg_offset (u64, ranks * blocks + 1), input,
// output (f32). OUT: input, output (f32), loss (f64, blocks * blocks: sub-round s at s * blocks).
static int sgns_file(const char* in_path, const char* out_path) {
    std::ifstream in(in_path, std::ios::binary);
    Reader r{std::vector<char>(std::istreambuf_iterator<char>(in), {})};
    const u64 dim = r.one<u64>(), blocks = r.one<u64>(), ranks = r.one<u64>(), q = r.one<u64>();
    const u64 negatives = r.one<u64>(), seed = r.one<u64>(), n_buckets = r.one<u64>();
    const u64 n_pairs = r.one<u64>(), n_prob = r.one<u64>(), in_len = r.one<u64>(), out_len = r.one<u64>();
    const float lr0 = r.one<float>(), lr1 = r.one<float>();
    auto in_start = r.many<u64>(blocks + 1); auto out_start = r.many<u64>(blocks + 1);
    auto bucket_start = r.many<u64>(n_buckets + 1);
    auto input_row = r.many<u32>(n_pairs); auto output_row = r.many<u32>(n_pairs); auto word = r.many<u32>(n_pairs);
    auto prob = r.many<float>(n_prob); auto alias = r.many<u32>(n_prob); auto neg_offset = r.many<u64>(ranks * blocks + 1);
    auto input = r.many<float>(in_len); auto output = r.many<float>(out_len);
    if (r.at != r.bytes.size()) { std::printf("sgns: %s has %zu bytes, expected %zu\n", in_path, r.bytes.size(), r.at); return 2; }
    std::vector<double> loss(blocks * blocks, -1.0);
    for (u32 s = 0; s < blocks; ++s) {
        // Fewer thread blocks than input blocks when there are several: the grid-stride loop too.
        launch(blocks > 2 ? blocks - 1 : blocks, 32, [&] {
            sgns_sub_round(input.data(), output.data(), (u32)dim, (u32)blocks, (u32)ranks, (u32)q, s, in_start.data(),
                           out_start.data(), bucket_start.data(), input_row.data(), output_row.data(), word.data(),
                           (u32)negatives, seed, prob.data(), alias.data(), neg_offset.data(), lr0, lr1,
                           loss.data() + (u64)s * blocks);
        });
    }
    std::ofstream out(out_path, std::ios::binary);
    put(out, input); put(out, output); put(out, loss);
    return out.good() ? 0 : 2;
}

int main(int argc, char** argv) {
    if (argc == 4 && std::strcmp(argv[1], "walk-trials") == 0) return walk_trials_file(argv[2], argv[3]);
    if (argc == 4 && std::strcmp(argv[1], "sgns") == 0) return sgns_file(argv[2], argv[3]);
    // The hash against Python's port of rng.rs: hash(1, 2, 3, 4, 5, 6).
    CHECK(ss_hash_at(ss_stream(1, 2, 3, 4), 5, 6) == 0xf41d7abcfb5b9246ULL, "hash");
    // Scans, including sizes around tile boundaries and more than one tile-sum chunk.
    for (u64 n : {0ull, 1ull, 5ull, 1023ull, 1024ull, 1025ull, 5000ull, 1100000ull}) {
        std::vector<u64> in(n); for (u64 i = 0; i < n; ++i) in[i] = rnd(i, n) % 100;
        std::vector<u64> out; u64 total;
        scan(in, out, total);
        u64 acc = 0; bool ok = true;
        for (u64 i = 0; i < n; ++i) { ok &= out[i] == acc; acc += in[i]; }
        CHECK(ok && total == acc, "scan u64 n=%llu total %llu want %llu", n, total, acc);
        std::vector<u32> in32(n); for (u64 i = 0; i < n; ++i) in32[i] = in[i];
        std::vector<u32> out32; u32 total32; scan(in32, out32, total32);
        ok = true; u32 a32 = 0; for (u64 i = 0; i < n; ++i) { ok &= out32[i] == a32; a32 += in32[i]; }
        CHECK(ok && total32 == a32, "scan u32 n=%llu", n);
    }
    // Sampling on a random CSR.
    const u64 first = 1000, nn = 400;
    std::vector<u64> indptr{0}; std::vector<u32> indices;
    for (u64 i = 0; i < nn; ++i) {
        u64 d = (i % 10 == 0) ? 0 : rnd(i, 1) % 201;
        for (u64 e = 0; e < d; ++e) indices.push_back(rnd(e, i + 7) % (1u << 20));
        indptr.push_back(indices.size());
    }
    std::vector<u64> nodes; for (u64 i = 0; i < 300; ++i) nodes.push_back(first + rnd(i, 3) % nn);
    u64 state = ss_stream(9, 4, 7, 0x101);
    for (int fanout : {-1, 0, 1, 5, 10, 31, 32, 33, 64, 150}) {
        u64 n = nodes.size();
        std::vector<u64> counts(n);
        launch(1, 32, [&] { sample_counts(indptr.data(), first, nodes.data(), n, fanout, counts.data()); });
        std::vector<u64> offsets; u64 total; scan(counts, offsets, total);
        std::vector<u64> out(total + 1, 0xdeadbeef);
        launch(3, 256, [&] { sample_neighbors(indptr.data(), indices.data(), first, nodes.data(), n, fanout, state, offsets.data(), out.data()); });
        std::vector<u64> want, got_all, want_all;
        for (u64 i = 0; i < n; ++i) {
            u64 l = nodes[i] - first;
            std::vector<u32> nb(indices.begin() + indptr[l], indices.begin() + indptr[l + 1]);
            ref_sample(nb, fanout, ss_fold(state, nodes[i]), want);
            CHECK(counts[i] == want.size(), "fanout %d node %llu count", fanout, nodes[i]);
            want_all.insert(want_all.end(), want.begin(), want.end());
        }
        got_all.assign(out.begin(), out.begin() + total);
        CHECK(got_all == want_all, "fanout %d: samples differ (total %llu)", fanout, total);
        CHECK(out[total] == 0xdeadbeef, "fanout %d: wrote past the end", fanout);
    }
    // Dedup.
    {
        u64 n = 3000; std::vector<u64> keys(n); for (u64 i = 0; i < n; ++i) keys[i] = rnd(i, 11) % 700;
        u64 cap = 1; while (cap < 2 * n) cap <<= 1;
        std::vector<u64> tk(cap); std::vector<u32> tp(cap), slot(n), firstf(n);
        launch(1, 32, [&] { dedup_clear(tk.data(), tp.data(), cap); });
        launch(3, 256, [&] { dedup_insert(keys.data(), n, tk.data(), tp.data(), cap, slot.data()); });
        launch(1, 32, [&] { dedup_flags(slot.data(), tp.data(), n, firstf.data()); });
        std::vector<u32> np; u32 uniq; scan(firstf, np, uniq);
        std::vector<u64> uk(uniq); std::vector<u32> labels(n);
        launch(1, 32, [&] { dedup_emit(keys.data(), slot.data(), tp.data(), np.data(), n, uk.data(), labels.data()); });
        std::unordered_map<u64, u32> pos; std::vector<u64> wu; std::vector<u32> wl;
        for (auto k : keys) { auto it = pos.find(k); if (it == pos.end()) { pos[k] = wu.size(); wu.push_back(k); } wl.push_back(pos[k]); }
        CHECK(uk == wu, "dedup unique (%u vs %zu)", uniq, wu.size());
        CHECK(labels == wl, "dedup labels");
    }
    // A block's index arrays on the device against Block::new's: destinations of degree 0,
    // sources never mentioned, repeated sources, and one source in more than a warp's edges.
    {
        const u64 nd = 300, ns = 900, kept = 17;
        std::vector<u64> counts(nd);
        for (u64 v = 0; v < nd; ++v) counts[v] = v % 9 == 0 ? 0 : rnd(v, 31) % 12;
        std::vector<u64> offsets; u64 total; scan(counts, offsets, total);
        std::vector<u32> ip(nd + 1, 0xdeadbeef);
        launch(2, 256, [&] { block_indptr(offsets.data(), nd, (u32)kept, total, ip.data()); });
        bool ok = ip[nd] == kept + total;
        for (u64 v = 0, acc = kept; v < nd; acc += counts[v], ++v) ok &= ip[v] == acc;
        CHECK(ok, "block indptr");
        // The reverse index of the CSR of these counts (no kept edges).
        ip.assign(1, 0); for (u64 v = 0; v < nd; ++v) ip.push_back(ip.back() + counts[v]);
        const u64 ne = ip[nd];
        std::vector<u32> ix(ne);
        for (u64 e = 0; e < ne; ++e) ix[e] = e % 5 == 0 ? 7 : (u32)(rnd(e, 33) % (ns / 2));
        std::vector<u32> cnt(ns, 0), cursor(ns, 0), re(ne), ed(ne);
        launch(2, 256, [&] { block_rev_count(ix.data(), ne, cnt.data()); });
        std::vector<u32> rip; u32 rtotal; scan(cnt, rip, rtotal); rip.push_back(rtotal);
        launch(2, 256, [&] { block_rev_fill(ix.data(), ne, rip.data(), cursor.data(), re.data()); });
        // The device's atomics fill a segment in any order: scramble them before the sort.
        for (u64 u = 0; u < ns; ++u) std::reverse(re.begin() + rip[u], re.begin() + rip[u + 1]);
        for (u64 u = 0; u + 1 < ns; u += 3) if (rip[u + 1] - rip[u] > 2) std::swap(re[rip[u]], re[rip[u] + 1]);
        launch(3, 256, [&] { block_rev_sort(rip.data(), ns, re.data()); });
        launch(2, 256, [&] { block_edge_dst(ip.data(), nd, ed.data()); });
        std::vector<u32> wrip(ns + 1, 0), wre(ne), wed(ne);
        for (auto u : ix) wrip[u + 1]++;
        for (u64 i = 0; i < ns; ++i) wrip[i + 1] += wrip[i];
        std::vector<u32> fill(wrip.begin(), wrip.end() - 1);
        for (u64 v = 0; v < nd; ++v) for (u32 e = ip[v]; e < ip[v + 1]; ++e) { wre[fill[ix[e]]++] = e; wed[e] = v; }
        CHECK(rtotal == ne && rip == wrip, "block reverse offsets");
        CHECK(rip[8] - rip[7] > 32, "block test: source 7 should have more than a warp's edges");
        CHECK(re == wre, "block reverse edges");
        CHECK(ed == wed, "block edge destinations");
        std::vector<u64> ids{0, 5, 4294967295ull, 123456789};
        std::vector<u32> narrow(ids.size());
        launch(1, 32, [&] { narrow_ids(ids.data(), ids.size(), narrow.data()); });
        CHECK((narrow == std::vector<u32>{0, 5, 4294967295u, 123456789}), "narrow ids");
    }
    // Mean aggregation forward/backward against the CPU's loops, bit for bit.
    for (u32 dim : {16u, 13u}) {
        u64 nd = 200, ns = 500; std::vector<u32> ip{0}, ix;
        for (u64 v = 0; v < nd; ++v) { u64 d = v % 7 == 0 ? 0 : rnd(v, 5) % 9; for (u64 e = 0; e < d; ++e) ix.push_back(rnd(e, v * 3 + 1) % ns); ip.push_back(ix.size()); }
        // 16-byte aligned buffers for the float4 path.
        std::vector<float4> hbuf((ns * dim + 3) / 4 + 1); float* h = (float*)hbuf.data();
        for (u64 i = 0; i < ns * dim; ++i) h[i] = ss_unit_f32(rnd(i, 9)) * 2 - 1;
        std::vector<float4> obuf((nd * dim + 3) / 4 + 1); float* o = (float*)obuf.data();
        launch(2, 256, [&] { sage_mean_forward(ip.data(), ix.data(), nd, h, dim, o, dim, 0); });
        bool ok = true;
        for (u64 v = 0; v < nd; ++v) for (u32 c = 0; c < dim; ++c) {
            float acc = 0; for (u32 e = ip[v]; e < ip[v + 1]; ++e) acc += h[(u64)ix[e] * dim + c];
            if (ip[v + 1] > ip[v]) acc *= 1.0f / (float)(ip[v + 1] - ip[v]);
            ok &= acc == o[v * dim + c];
        }
        CHECK(ok, "mean forward dim %u", dim);
        // Reverse index by counting sort (ascending edge ids), as Block::new does.
        std::vector<u32> rip(ns + 1, 0), re(ix.size()), ed(ix.size());
        for (auto u : ix) rip[u + 1]++;
        for (u64 i = 0; i < ns; ++i) rip[i + 1] += rip[i];
        std::vector<u32> fill(rip.begin(), rip.end() - 1);
        for (u64 v = 0; v < nd; ++v) for (u32 e = ip[v]; e < ip[v + 1]; ++e) { re[fill[ix[e]]++] = e; ed[e] = v; }
        std::vector<float4> gbuf((ns * dim + 3) / 4 + 1); float* g = (float*)gbuf.data();
        launch(2, 256, [&] { sage_mean_backward(ip.data(), rip.data(), re.data(), ed.data(), ns, o, dim, g, dim, 0, nd); });
        ok = true;
        for (u64 u = 0; u < ns; ++u) for (u32 c = 0; c < dim; ++c) {
            float acc = 0;
            for (u32 r = rip[u]; r < rip[u + 1]; ++r) { u32 v = ed[re[r]]; acc += o[(u64)v * dim + c] * (1.0f / (float)(ip[v + 1] - ip[v])); }
            ok &= acc == g[u * dim + c];
        }
        CHECK(ok, "mean backward dim %u", dim);
        // The fused layer's layout: rows [h[v] | mean[v]] (stride 2·dim), and its backward with
        // the self half added to the destinations' rows.
        const u32 w2 = 2 * dim;
        std::vector<float4> cbuf((nd * w2 + 3) / 4 + 1); float* cat = (float*)cbuf.data();
        launch(2, 256, [&] { sage_mean_forward(ip.data(), ix.data(), nd, h, dim, cat, w2, dim); });
        ok = true;
        for (u64 v = 0; v < nd; ++v) for (u32 c = 0; c < dim; ++c) {
            ok &= cat[v * w2 + c] == h[v * dim + c];
            ok &= cat[v * w2 + dim + c] == o[v * dim + c];
        }
        CHECK(ok, "self-and-mean forward dim %u", dim);
        std::vector<float4> g2buf((nd * w2 + 3) / 4 + 1); float* g2 = (float*)g2buf.data();
        for (u64 i = 0; i < nd * w2; ++i) g2[i] = ss_unit_f32(rnd(i, 17)) * 2 - 1;
        launch(2, 256, [&] { sage_mean_backward(ip.data(), rip.data(), re.data(), ed.data(), ns, g2, dim, g, w2, dim, nd); });
        ok = true;
        for (u64 u = 0; u < ns; ++u) for (u32 c = 0; c < dim; ++c) {
            float acc = 0;
            for (u32 r = rip[u]; r < rip[u + 1]; ++r) { u32 v = ed[re[r]]; acc += g2[(u64)v * w2 + dim + c] * (1.0f / (float)(ip[v + 1] - ip[v])); }
            if (u < nd) acc += g2[u * w2 + c];
            ok &= acc == g[u * dim + c];
        }
        CHECK(ok, "self-and-mean backward dim %u", dim);
    }
    // Column sums in chunks, and the f64 chunk sums.
    {
        u64 rows = 700; u32 dim = 5, chunk = 256; std::vector<float> x(rows * dim);
        for (u64 i = 0; i < x.size(); ++i) x[i] = ss_unit_f32(rnd(i, 21)) - 0.5f;
        u64 nch = (rows + chunk - 1) / chunk; std::vector<float> part(nch * dim), out(dim);
        launch(1, 32, [&] { column_sums_partial(x.data(), rows, dim, chunk, part.data()); });
        launch(1, 32, [&] { column_sums_finish(part.data(), nch, dim, out.data()); });
        bool ok = true;
        for (u32 c = 0; c < dim; ++c) { float tot = 0; for (u64 k = 0; k < nch; ++k) { float a = 0; for (u64 r = k * chunk; r < std::min(rows, (k + 1) * chunk); ++r) a += x[r * dim + c]; tot += a; } ok &= tot == out[c]; }
        CHECK(ok, "column sums");
        // f64 chunk sums of squares, chunks of 1000 elements.
        std::vector<double> ps((x.size() + 999) / 1000);
        launch(1, 32, [&] { chunk_sums_f32(x.data(), x.size(), 1000, 1, ps.data()); });
        ok = true;
        for (u64 k = 0; k < ps.size(); ++k) {
            double a = 0;
            for (u64 i = k * 1000; i < std::min<u64>(x.size(), (k + 1) * 1000); ++i) a += (double)x[i] * (double)x[i];
            ok &= a == ps[k];
        }
        CHECK(ok, "chunk sums");
    }
    // Gather flags a row outside the table and copies the others.
    {
        u32 dim = 6; u64 table_rows = 10; std::vector<float> table(table_rows * dim);
        for (u64 i = 0; i < table.size(); ++i) table[i] = (float)i;
        std::vector<u32> rows{3, 9, 10, 0}; std::vector<float> out(rows.size() * dim, -1.0f); std::vector<u32> bad(1, 0);
        launch(1, 32, [&] { gather_rows(table.data(), table_rows, rows.data(), rows.size(), dim, out.data(), bad.data()); });
        CHECK(bad[0] == 1, "gather flags row 10");
        CHECK(out[0] == 18.0f && out[dim] == 54.0f && out[2 * dim] == -1.0f && out[3 * dim + 5] == 5.0f, "gather rows");
    }
    // Scatter writes rows at their positions (vectorised and scalar widths), leaves the others
    // alone, and flags a position outside the output.
    for (u32 dim : {8u, 6u}) {
        u64 out_rows = 7; std::vector<float> src(3 * dim);
        for (u64 i = 0; i < src.size(); ++i) src[i] = (float)(i + 1);
        std::vector<u32> pos{5, 0, 7}; std::vector<float> out(out_rows * dim, -1.0f); std::vector<u32> bad(1, 0);
        launch(2, 64, [&] { scatter_rows(src.data(), pos.size(), pos.data(), out_rows, dim, out.data(), bad.data()); });
        bool ok = bad[0] == 1;
        for (u64 r = 0; r < out_rows; ++r)
            for (u32 c = 0; c < dim; ++c) {
                float want = r == 5 ? src[c] : r == 0 ? src[dim + c] : -1.0f;
                ok &= out[r * dim + c] == want;
            }
        CHECK(ok, "scatter rows, width %u", dim);
    }
    // Softmax cross-entropy: gradients sum to zero per row; a bad label is flagged.
    {
        u64 rows = 40; u32 classes = 7; std::vector<float> x(rows * classes), g(rows * classes); std::vector<double> loss(rows);
        for (u64 i = 0; i < x.size(); ++i) x[i] = ss_unit_f32(rnd(i, 31)) * 10 - 5;
        std::vector<u32> labels(rows); for (u64 r = 0; r < rows; ++r) labels[r] = r % classes;
        std::vector<u32> bad(1, 0);
        launch(1, 32, [&] { softmax_cross_entropy(x.data(), labels.data(), rows, classes, 1.0f, loss.data(), g.data(), bad.data()); });
        bool ok = bad[0] == 0;
        for (u64 r = 0; r < rows; ++r) {
            double s = 0; for (u32 c = 0; c < classes; ++c) s += g[r * classes + c];
            ok &= std::fabs(s) < 1e-5 && loss[r] > 0 && g[r * classes + labels[r]] < 0;
        }
        CHECK(ok, "softmax cross-entropy");
        labels[3] = classes;
        launch(1, 32, [&] { softmax_cross_entropy(x.data(), labels.data(), rows, classes, 1.0f, loss.data(), g.data(), bad.data()); });
        CHECK(bad[0] == 1, "softmax flags label %u", classes);
    }
    std::printf("%s (%d failures)\n", failures ? "FAILED" : "all emulated kernel checks passed", failures);
    return failures != 0;
}
