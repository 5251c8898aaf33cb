//! The retrieval index's integer scan: dot products of 16-bit queries with 8-bit row codes,
//! exact in i32, with the widest instruction set the CPU has (AVX-512 VNNI, AVX2, or portable
//! Rust). Every path returns the same integers, so a search ranks the same rows on any CPU.

/// The instruction set a scan runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Portable,
    /// Codes widened to 16 bits, `vpmaddwd`.
    Avx2,
    /// `vpdpbusd` on 64 bytes at a time: the 16-bit query split into its low (unsigned) and
    /// high (signed) bytes, two byte products per query value instead of a widening.
    Avx512Vnni,
}

impl Isa {
    /// The widest set this CPU reports, or the one `SHARDSAGE_SCAN_ISA` names (`portable`,
    /// `avx2`, `avx512vnni`) when the CPU has it: for comparing them on one machine.
    pub fn detect() -> Isa {
        let all = Isa::available();
        let asked = std::env::var("SHARDSAGE_SCAN_ISA").ok().and_then(|name| {
            let found = all.iter().copied().find(|isa| isa.name() == name);
            if found.is_none() {
                log::warn!("SHARDSAGE_SCAN_ISA={name}: not one of {all:?} on this CPU; ignored");
            }
            found
        });
        asked.unwrap_or(*all.last().unwrap_or(&Isa::Portable))
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// Every set this CPU can run, narrowest first.
    pub fn available() -> Vec<Isa> {
        let mut out = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                out.push(Isa::Avx2);
            }
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512vnni")
            {
                out.push(Isa::Avx512Vnni);
            }
        }
        out
    }
}

/// A query quantised for the scan: its 16-bit values, and the same values as bytes for VNNI
/// (`q = 256 hi + lo`, `lo` in 0..=255, `hi` in -128..=127).
pub struct QueryCode {
    pub values: Vec<i16>,
    lo: Vec<u8>,
    hi: Vec<i8>,
    /// `128 Σ hi`: what the high bytes' products gain when codes are offset by 128 to be
    /// unsigned (`vpdpbusd` multiplies unsigned by signed bytes).
    hi_offset: i32,
}

impl QueryCode {
    /// The scaled query `qs` at the largest scale that keeps a row's sum of products (16-bit
    /// query by 8-bit code, at most 127 in size) inside i32. The scan then ranks by exact
    /// integer sums.
    pub fn new(qs: &[f32]) -> QueryCode {
        let max = qs.iter().fold(0f32, |m, x| m.max(x.abs()));
        let values: Vec<i16> = if max > 0.0 && max.is_finite() {
            let limit = (i32::MAX as f64 / (qs.len().max(1) as f64 * 127.0)).min(i16::MAX as f64);
            let f = limit / max as f64;
            qs.iter()
                .map(|&x| (x as f64 * f).round().clamp(-limit, limit) as i16)
                .collect()
        } else {
            vec![0; qs.len()]
        };
        QueryCode::from_values(values)
    }

    pub fn from_values(values: Vec<i16>) -> QueryCode {
        let lo = values.iter().map(|&v| (v & 0xff) as u8).collect();
        let hi: Vec<i8> = values.iter().map(|&v| (v >> 8) as i8).collect();
        let hi_offset = hi.iter().fold(0i32, |s, &h| s.wrapping_add(128 * h as i32));
        QueryCode {
            values,
            lo,
            hi,
            hi_offset,
        }
    }
}

/// `q · code` for every query of `qs` (at most four; the rest of the result is 0).
#[inline(always)]
pub fn dot_many(isa: Isa, qs: &[&QueryCode], code: &[i8]) -> [i32; 4] {
    #[cfg(target_arch = "x86_64")]
    match (isa, qs.len()) {
        // SAFETY (every arm): `isa` comes from `Isa::available`, which checked the CPU's
        // features.
        (Isa::Avx512Vnni, 4) => return unsafe { dot_vnni([qs[0], qs[1], qs[2], qs[3]], code) },
        (Isa::Avx512Vnni, 3) => {
            let [a, b, c] = unsafe { dot_vnni([qs[0], qs[1], qs[2]], code) };
            return [a, b, c, 0];
        }
        (Isa::Avx512Vnni, 2) => {
            let [a, b] = unsafe { dot_vnni([qs[0], qs[1]], code) };
            return [a, b, 0, 0];
        }
        (Isa::Avx2, 4) => return unsafe { dot4_avx2([qs[0], qs[1], qs[2], qs[3]], code) },
        _ => {}
    }
    let mut out = [0i32; 4];
    for (o, q) in out.iter_mut().zip(qs) {
        *o = dot(isa, q, code);
    }
    out
}

/// `out[c] = q · rows[c]` for the `[n, dim]` f32 rows (the index's centroids), each by
/// `util::dot`: the same additions in the same order whatever the instruction set, so the same
/// bits; built for AVX2 where the CPU has it, where that order fills one 8-lane register.
pub fn f32_dots(isa: Isa, q: &[f32], rows: &[f32], dim: usize, out: &mut Vec<f32>) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable {
        // SAFETY: every set but the portable one implies AVX2 (`Isa::available`).
        unsafe { f32_dots_avx2(q, rows, dim, out) };
        return;
    }
    let _ = isa;
    f32_dots_portable(q, rows, dim, out)
}

#[inline(always)]
fn f32_dots_portable(q: &[f32], rows: &[f32], dim: usize, out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        rows.chunks_exact(dim.max(1))
            .map(|r| crate::util::dot(q, r)),
    );
}

/// `util::dot`'s arithmetic in AVX2 registers: lane `l` sums the products of elements
/// `l mod 8` (a multiply, then an add: no fused rounding), the lanes are added in its tree, the
/// tail one by one; four rows at a time, so four independent chains of additions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn f32_dots_avx2(q: &[f32], rows: &[f32], dim: usize, out: &mut Vec<f32>) {
    use std::arch::x86_64::*;
    let dim = dim.max(1);
    let n = rows.len() / dim;
    let full = dim.min(q.len()) / 8 * 8;
    out.clear();
    out.reserve(n);
    let finish = |acc: __m256, r: &[f32]| {
        let mut l = [0f32; 8];
        // SAFETY: `l` holds 8 f32, 32 bytes.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), acc) };
        let mut s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
        for (x, y) in q[full..].iter().zip(&r[full..]) {
            s += x * y;
        }
        s
    };
    let mut c = 0;
    while c < n {
        let take = (n - c).min(4);
        let r: [&[f32]; 4] = std::array::from_fn(|k| {
            let row = c + k.min(take - 1);
            &rows[row * dim..(row + 1) * dim]
        });
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: every load reads 8 floats from `i` with `i + 8 <= full`, inside `q` and
        // every row (`full` is at most both lengths).
        unsafe {
            while i < full {
                let x = _mm256_loadu_ps(q.as_ptr().add(i));
                for k in 0..4 {
                    let y = _mm256_loadu_ps(r[k].as_ptr().add(i));
                    acc[k] = _mm256_add_ps(acc[k], _mm256_mul_ps(x, y));
                }
                i += 8;
            }
        }
        for k in 0..take {
            out.push(finish(acc[k], r[k]));
        }
        c += take;
    }
}

/// `out[k][r] = qs[k] · codes[r]` for up to four queries and four codes of one width (the
/// rest of `out` is 0). On VNNI the sixteen sums are kept apart across the whole width and
/// reduced together at the end, which costs a third of reducing each dot product alone.
#[inline(always)]
pub fn dot_rows4(isa: Isa, qs: &[&QueryCode], codes: [&[i8]; 4]) -> [[i32; 4]; 4] {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni {
        let v = |k: usize| qs[k].values.as_slice();
        // SAFETY (every arm): `isa` comes from `Isa::available`, which checked the CPU's
        // features.
        unsafe {
            match qs.len() {
                4 => return dot_rows4_vnni([v(0), v(1), v(2), v(3)], codes),
                3 => return dot_rows4_vnni([v(0), v(1), v(2)], codes),
                2 => return dot_rows4_vnni([v(0), v(1)], codes),
                1 => return dot_rows4_vnni([v(0)], codes),
                _ => {}
            }
        }
    }
    let mut out = [[0i32; 4]; 4];
    for (r, code) in codes.iter().enumerate() {
        for (k, s) in dot_many(isa, qs, code).into_iter().enumerate() {
            out[k][r] = s;
        }
    }
    out
}

/// `N` 16-bit queries against four codes widened to 16 bits, 32 values per step
/// (`vpdpwssd`: two products per 32-bit lane; the tail by masked loads), `4N` accumulators, then
/// one transposing reduction of all of them. The sums wrap in i32; the true totals fit (the
/// query's scale guarantees it), so the results are exact.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
fn dot_rows4_vnni<const N: usize>(q: [&[i16]; N], codes: [&[i8]; 4]) -> [[i32; 4]; 4] {
    use std::arch::x86_64::*;
    let n = q
        .iter()
        .map(|x| x.len())
        .chain(codes.iter().map(|c| c.len()))
        .min()
        .unwrap_or(0);
    let mut acc = [[_mm512_setzero_si512(); 4]; N];
    let mut i = 0;
    while i < n {
        let take = (n - i).min(32);
        let mask: u32 = if take == 32 { !0 } else { (1u32 << take) - 1 };
        // SAFETY: masked loads touch only the `take` elements from `i`, inside every slice (`n`
        // is the shortest length); masked-off lanes read as 0 and add nothing.
        unsafe {
            let c = codes.map(|code| {
                _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(mask, code.as_ptr().add(i)))
            });
            for k in 0..N {
                let qv = _mm512_maskz_loadu_epi16(mask, q[k].as_ptr().add(i));
                for r in 0..4 {
                    acc[k][r] = _mm512_dpwssd_epi32(acc[k][r], qv, c[r]);
                }
            }
        }
        i += take;
    }
    // Sixteen vectors to sixteen sums: pairs interleaved and added (32-bit, then 64-bit
    // halves) leave each 128-bit lane with one partial sum of four vectors; two lane
    // shuffles and adds then total the lanes. `x[4k + r]` ends in lane `4k + r`.
    let zero = _mm512_setzero_si512();
    let x: [__m512i; 16] =
        std::array::from_fn(|j| if j / 4 < N { acc[j / 4][j % 4] } else { zero });
    let y: [__m512i; 8] = std::array::from_fn(|j| {
        let (a, b) = (x[2 * j], x[2 * j + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    });
    let z: [__m512i; 4] = std::array::from_fn(|j| {
        let (a, b) = (y[2 * j], y[2 * j + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    });
    let lanes = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0x88>(a, b),
            _mm512_shuffle_i32x4::<0xdd>(a, b),
        )
    };
    let total = lanes(lanes(z[0], z[1]), lanes(z[2], z[3]));
    let mut sums = [0i32; 16];
    // SAFETY: `sums` holds 16 i32, 64 bytes.
    unsafe { _mm512_storeu_si512(sums.as_mut_ptr() as *mut __m512i, total) };
    let mut out = [[0i32; 4]; 4];
    for k in 0..N {
        out[k].copy_from_slice(&sums[4 * k..4 * k + 4]);
    }
    out
}

/// `q · code`.
#[inline(always)]
pub fn dot(isa: Isa, q: &QueryCode, code: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `isa` comes from `Isa::available`, which checked the CPU's features.
        Isa::Avx512Vnni => return unsafe { dot_vnni([q], code)[0] },
        // SAFETY: as above.
        Isa::Avx2 => return unsafe { dot_avx2(&q.values, code) },
        Isa::Portable => {}
    }
    let _ = isa;
    dot_portable(&q.values, code)
}

fn dot_portable(q: &[i16], code: &[i8]) -> i32 {
    q.iter().zip(code).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// Codes widened to 16 bits, pairs multiplied and added into 32-bit lanes (`vpmaddwd`), two
/// accumulators.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_avx2(q: &[i16], code: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = q.len().min(code.len());
    let (qp, cp) = (q.as_ptr(), code.as_ptr());
    let mut acc0 = _mm256_setzero_si256();
    let mut acc1 = _mm256_setzero_si256();
    let mut i = 0;
    // SAFETY: every load reads `i..i + 16` (or `+ 32`) elements with that end at most `n`,
    // inside both slices; unaligned loads.
    unsafe {
        while i + 32 <= n {
            let c0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(cp.add(i) as *const __m128i));
            let c1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(cp.add(i + 16) as *const __m128i));
            let q0 = _mm256_loadu_si256(qp.add(i) as *const __m256i);
            let q1 = _mm256_loadu_si256(qp.add(i + 16) as *const __m256i);
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(q0, c0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(q1, c1));
            i += 32;
        }
        if i + 16 <= n {
            let c0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(cp.add(i) as *const __m128i));
            let q0 = _mm256_loadu_si256(qp.add(i) as *const __m256i);
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(q0, c0));
            i += 16;
        }
    }
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` holds 8 i32, 32 bytes.
    unsafe {
        _mm256_storeu_si256(
            lanes.as_mut_ptr() as *mut __m256i,
            _mm256_add_epi32(acc0, acc1),
        )
    };
    lanes.iter().sum::<i32>() + dot_portable(&q[i..n], &code[i..n])
}

/// Four queries, one code, AVX2: each 16 code values are widened once for the four.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot4_avx2(q: [&QueryCode; 4], code: &[i8]) -> [i32; 4] {
    use std::arch::x86_64::*;
    let n = q.iter().fold(code.len(), |m, x| m.min(x.values.len()));
    let cp = code.as_ptr();
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut i = 0;
    // SAFETY: every load reads `i..i + 16` elements with `i + 16 <= n`, inside every slice.
    unsafe {
        while i + 16 <= n {
            let c = _mm256_cvtepi8_epi16(_mm_loadu_si128(cp.add(i) as *const __m128i));
            for (a, qk) in acc.iter_mut().zip(&q) {
                let v = _mm256_loadu_si256(qk.values.as_ptr().add(i) as *const __m256i);
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(v, c));
            }
            i += 16;
        }
    }
    let mut out = [0i32; 4];
    for ((o, a), qk) in out.iter_mut().zip(acc).zip(&q) {
        let mut lanes = [0i32; 8];
        // SAFETY: `lanes` holds 8 i32, 32 bytes.
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, a) };
        *o = lanes.iter().sum::<i32>() + dot_portable(&qk.values[i..n], &code[i..n]);
    }
    out
}

/// `N` queries, one code, AVX-512 VNNI, 64 code bytes per step (the tail by masked loads):
/// `q · c = 256 Σ hi·c + Σ lo·c`, with `Σ lo·c` as `vpdpbusd(lo, c)` and `Σ hi·c` as
/// `vpdpbusd(c + 128, hi) - 128 Σ hi`. The sums wrap in i32; the true total fits in i32 (the
/// query's scale guarantees it), so the wrapped result is exact.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dot_vnni<const N: usize>(q: [&QueryCode; N], code: &[i8]) -> [i32; N] {
    use std::arch::x86_64::*;
    let n = q.iter().fold(code.len(), |m, x| m.min(x.values.len()));
    let cp = code.as_ptr();
    let offset = _mm512_set1_epi8(-128);
    let mut lo_acc = [_mm512_setzero_si512(); N];
    let mut hi_acc = [_mm512_setzero_si512(); N];
    let mut i = 0;
    while i < n {
        let take = (n - i).min(64);
        let mask: u64 = if take == 64 { !0 } else { (1u64 << take) - 1 };
        // SAFETY: masked loads touch only the `take` bytes from `i`, inside every slice (`n` is
        // the shortest length); masked-off lanes read as 0 and add nothing (0 · x, and the
        // offset code's lanes meet a zero high byte).
        unsafe {
            let c = _mm512_maskz_loadu_epi8(mask, cp.add(i));
            let cu = _mm512_xor_si512(c, offset);
            for k in 0..N {
                let lo = _mm512_maskz_loadu_epi8(mask, q[k].lo.as_ptr().add(i) as *const i8);
                let hi = _mm512_maskz_loadu_epi8(mask, q[k].hi.as_ptr().add(i));
                lo_acc[k] = _mm512_dpbusd_epi32(lo_acc[k], lo, c);
                hi_acc[k] = _mm512_dpbusd_epi32(hi_acc[k], cu, hi);
            }
        }
        i += take;
    }
    let mut out = [0i32; N];
    for k in 0..N {
        let lo = _mm512_reduce_add_epi32(lo_acc[k]);
        let hi = _mm512_reduce_add_epi32(hi_acc[k]).wrapping_sub(q[k].hi_offset);
        out[k] = hi.wrapping_mul(256).wrapping_add(lo);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::rng::{below, hash};

    fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (below(hash(seed, 0, 0, 1, i as u64, 0), 2001) as f32 - 1000.0) / 1000.0)
            .map(|x| x * scale)
            .collect()
    }

    fn code(seed: u64, dim: usize) -> Vec<i8> {
        (0..dim)
            .map(|i| (below(hash(seed, 0, 0, 2, i as u64, 0), 255) as i32 - 127) as i8)
            .collect()
    }

    fn exact(q: &QueryCode, code: &[i8]) -> i64 {
        q.values
            .iter()
            .zip(code)
            .map(|(&a, &b)| a as i64 * b as i64)
            .sum()
    }

    #[test]
    fn every_instruction_set_gives_the_exact_sum_and_never_overflows() {
        for dim in [
            1usize, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 128, 256, 4100,
        ] {
            let q = QueryCode::new(&values(3, dim, 3.0));
            let c = code(5, dim);
            let top = q.values.iter().map(|x| x.unsigned_abs()).max().unwrap();
            // The worst cases: every product at its largest, of either sign.
            let worst_pos = QueryCode::from_values(vec![top as i16; dim]);
            let worst_neg = QueryCode::from_values(vec![-(top as i16); dim]);
            let (max_code, min_code) = (vec![127i8; dim], vec![-127i8; dim]);
            for isa in Isa::available() {
                assert_eq!(dot(isa, &q, &c) as i64, exact(&q, &c), "{isa:?} dim {dim}");
                for (wq, wc) in [
                    (&worst_pos, &max_code),
                    (&worst_neg, &max_code),
                    (&worst_pos, &min_code),
                ] {
                    let e = exact(wq, wc);
                    assert!(e.abs() <= i32::MAX as i64, "dim {dim}");
                    assert_eq!(dot(isa, wq, wc) as i64, e, "{isa:?} dim {dim}");
                }
            }
        }
        assert!(QueryCode::new(&[0.0, 0.0]).values.iter().all(|&x| x == 0));
        assert_eq!(QueryCode::new(&[f32::NAN, 1.0]).values[0], 0);
    }

    #[test]
    fn four_queries_at_once_score_as_each_alone() {
        for dim in [1usize, 15, 16, 17, 33, 64, 100, 128, 256, 300] {
            let qs: Vec<QueryCode> = (0..4)
                .map(|k| QueryCode::new(&values(10 + k, dim, 1.0)))
                .collect();
            let c = code(6, dim);
            let refs: Vec<&QueryCode> = qs.iter().collect();
            for isa in Isa::available() {
                for take in 1..=4 {
                    let got = dot_many(isa, &refs[..take], &c);
                    for k in 0..take {
                        assert_eq!(got[k] as i64, exact(&qs[k], &c), "{isa:?} dim {dim} q {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn four_codes_at_once_score_as_each_alone() {
        for dim in [1usize, 15, 31, 32, 33, 63, 64, 100, 128, 256, 300] {
            let qs: Vec<QueryCode> = (0..4)
                .map(|k| QueryCode::new(&values(20 + k, dim, 2.0)))
                .collect();
            let codes: Vec<Vec<i8>> = (0..4).map(|r| code(30 + r, dim)).collect();
            let refs: Vec<&QueryCode> = qs.iter().collect();
            let rows = [&codes[0][..], &codes[1][..], &codes[2][..], &codes[3][..]];
            // The largest sums in size: the worst products of either sign.
            let top = qs[0].values.iter().map(|x| x.unsigned_abs()).max().unwrap() as i16;
            let worst = [
                QueryCode::from_values(vec![top; dim]),
                QueryCode::from_values(vec![-top; dim]),
            ];
            let (max_code, min_code) = (vec![127i8; dim], vec![-127i8; dim]);
            let worst_rows = [&max_code[..], &min_code[..], &max_code[..], &codes[0][..]];
            for isa in Isa::available() {
                for take in 1..=4 {
                    let got = dot_rows4(isa, &refs[..take], rows);
                    for k in 0..4 {
                        for r in 0..4 {
                            let want = if k < take { exact(&qs[k], rows[r]) } else { 0 };
                            assert_eq!(got[k][r] as i64, want, "{isa:?} dim {dim} q {k} row {r}");
                        }
                    }
                }
                let wrefs: Vec<&QueryCode> = worst.iter().collect();
                let got = dot_rows4(isa, &wrefs, worst_rows);
                for k in 0..2 {
                    for r in 0..4 {
                        let e = exact(&worst[k], worst_rows[r]);
                        assert!(e.abs() <= i32::MAX as i64);
                        assert_eq!(got[k][r] as i64, e, "{isa:?} dim {dim} worst {k} row {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn centroid_scores_are_the_same_bits_on_every_instruction_set() {
        for dim in [1usize, 7, 8, 9, 64, 100, 256] {
            let q = values(40, dim, 1.0);
            let rows = values(41, dim * 37, 3.0);
            let want: Vec<u32> = rows
                .chunks_exact(dim)
                .map(|r| crate::util::dot(&q, r).to_bits())
                .collect();
            for isa in Isa::available() {
                let mut out = vec![1.0; 3];
                f32_dots(isa, &q, &rows, dim, &mut out);
                let got: Vec<u32> = out.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "{isa:?} dim {dim}");
            }
        }
    }

    #[test]
    fn this_cpu_reports_its_widest_instruction_set() {
        let all = Isa::available();
        assert_eq!(all[0], Isa::Portable);
        if std::env::var_os("SHARDSAGE_SCAN_ISA").is_none() {
            assert_eq!(Isa::detect(), *all.last().unwrap());
        }
        println!("scan instruction sets on this CPU: {all:?}");
    }
}
