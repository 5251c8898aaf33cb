//! Every CUDA kernel file compiles with NVRTC (no GPU needed): PTX for compute_80 and compute_90,
//! and an sm_90 cubin whose ptxas report shows no register spills. Runs in CI, where NVRTC comes
//! from `scripts/setup.sh`; there a missing NVRTC is a failure, elsewhere a printed skip.

mod common;

use shardsage::backend::cuda::kernels::{
    compile_cubin_report, compile_cubin_report_source, compile_ptx, compile_ptx_source,
    nvrtc_available, nvrtc_version, parse_ptxas_report, KERNEL_FILES,
};

/// True when NVRTC can be used; panics in CI (CI=true) when it cannot.
fn nvrtc_or_skip(test: &str) -> bool {
    match nvrtc_available() {
        Ok(()) => true,
        Err(reason) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            if in_ci {
                panic!("{test}: NVRTC is required in CI: {reason}");
            }
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}

#[test]
fn every_kernel_file_compiles_to_ptx_for_compute_80_and_90() {
    if !nvrtc_or_skip("every_kernel_file_compiles_to_ptx_for_compute_80_and_90") {
        return;
    }
    let (major, minor) = nvrtc_version().expect("NVRTC version");
    eprintln!("NVRTC {major}.{minor}");
    for arch in ["compute_80", "compute_90"] {
        for file in KERNEL_FILES {
            let ptx = compile_ptx(file, arch)
                .unwrap_or_else(|e| panic!("{}.cu for {arch}:\n{e}", file.name))
                .to_src();
            let target = format!(".target {}", arch.replace("compute_", "sm_"));
            assert!(
                ptx.contains(&target),
                "{}.cu: PTX lacks {target}",
                file.name
            );
            for kernel in file.kernels {
                assert!(
                    ptx.contains(&format!(".entry {kernel}(")),
                    "{}.cu for {arch}: PTX has no entry {kernel} (name mangled or missing)",
                    file.name
                );
            }
        }
    }
}

#[test]
fn every_kernel_compiles_for_sm_90_without_spills() {
    if !nvrtc_or_skip("every_kernel_compiles_for_sm_90_without_spills") {
        return;
    }
    let mut failures = Vec::new();
    for file in KERNEL_FILES {
        let (cubin, log) = compile_cubin_report(file, "sm_90")
            .unwrap_or_else(|e| panic!("{}.cu for sm_90:\n{e}", file.name));
        assert!(
            cubin.starts_with(b"\x7fELF"),
            "{}.cu: cubin is not an ELF image",
            file.name
        );
        let report = parse_ptxas_report(&log);
        for kernel in file.kernels {
            let Some(found) = report.iter().find(|k| k.name == *kernel) else {
                failures.push(format!("{}.cu: no ptxas report for {kernel}", file.name));
                continue;
            };
            eprintln!(
                "{:>12}.cu {:<24} {:>3} registers, {:>5} B smem, {} B stack",
                file.name, found.name, found.registers, found.shared_bytes, found.stack_frame_bytes
            );
            match (found.spill_store_bytes, found.spill_load_bytes) {
                (Some(0), Some(0)) => {}
                (Some(stores), Some(loads)) => failures.push(format!(
                    "{}.cu: {kernel} spills ({stores} B stores, {loads} B loads)",
                    file.name
                )),
                _ => failures.push(format!(
                    "{}.cu: the ptxas report has no spill figures for {kernel}",
                    file.name
                )),
            }
        }
        if report.len() != file.kernels.len() {
            failures.push(format!(
                "{}.cu: ptxas reported {} kernels, the file lists {}",
                file.name,
                report.len(),
                file.kernels.len()
            ));
        }
        if !failures.is_empty() {
            eprintln!("ptxas log of {}.cu:\n{log}", file.name);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_broken_source_returns_the_nvrtc_log() {
    if !nvrtc_or_skip("a_broken_source_returns_the_nvrtc_log") {
        return;
    }
    let source = "#include \"common.cuh\"\n\
        extern \"C\" __global__ void broken(float* x) { x[0] = undefined_name; }\n";
    let err = compile_ptx_source("broken", source, "compute_80")
        .expect_err("a source with an undefined name must not compile");
    let text = err.to_string();
    assert!(text.contains("broken.cu"), "error names the file: {text}");
    assert!(
        text.contains("undefined_name") && text.contains("identifier"),
        "error carries the NVRTC log: {text}"
    );
    assert!(matches!(err, shardsage::Error::Cuda(_)));
}

/// A kernel that calls every helper of `common.cuh`, so a change there that breaks any of them is
/// caught without a GPU (the helpers are `__forceinline__`: unused ones are never compiled).
#[test]
fn every_common_header_helper_compiles() {
    if !nvrtc_or_skip("every_common_header_helper_compiles") {
        return;
    }
    let source = r#"#include "common.cuh"
extern "C" __global__ void every_helper(u64* out, float* unit, u32* scanned, u64 n) {
    const u64 stream = ss_stream(1, 2, 3, 0x100);
    for (u64 i = ss_thread_index(); i < n; i += ss_thread_stride()) {
        const u64 h = ss_hash_at(stream, i, 7) ^ ss_fold(ss_mix64(i), SS_GOLDEN);
        out[i] = ss_below(h, 10) + ss_below(h, 0x100000000ULL);
        unit[i] = ss_unit_f32(h);
    }
    const u32 v = ss_warp_inclusive_scan<u32>(ss_lane() + (u32)ss_warp_index());
    const u64 w = ss_warp_inclusive_scan<u64>((u64)ss_lane() * ss_warp_stride());
    if (ss_thread_index() < n) scanned[ss_thread_index()] = v + (u32)w;
}
"#;
    compile_ptx_source("every_helper", source, "compute_80")
        .unwrap_or_else(|e| panic!("common.cuh helpers:\n{e}"));
    let (_, log) = compile_cubin_report_source("every_helper", source, "sm_90")
        .unwrap_or_else(|e| panic!("common.cuh helpers for sm_90:\n{e}"));
    let report = parse_ptxas_report(&log);
    assert_eq!(report.len(), 1, "ptxas log:\n{log}");
    assert_eq!(report[0].spill_store_bytes, Some(0), "ptxas log:\n{log}");
    assert_eq!(report[0].spill_load_bytes, Some(0), "ptxas log:\n{log}");
}

/// The spill check sees real spills: a kernel with more live values than the register budget
/// that `__launch_bounds__` leaves it (1024 threads x 2 blocks per SM: 32 registers).
#[test]
fn a_spilling_kernel_is_reported() {
    if !nvrtc_or_skip("a_spilling_kernel_is_reported") {
        return;
    }
    let source = r#"#include "common.cuh"
extern "C" __global__ void __launch_bounds__(1024, 2) spills(const float* x, float* y, u64 n) {
    float acc[96];
#pragma unroll
    for (int j = 0; j < 96; ++j) acc[j] = x[j * n + threadIdx.x];
    for (u64 i = 1; i < n; ++i) {
#pragma unroll
        for (int j = 0; j < 96; ++j) acc[j] = acc[j] * x[i] + acc[(j + 1) % 96];
    }
    float s = 0.0f;
#pragma unroll
    for (int j = 0; j < 96; ++j) s += acc[j];
    y[threadIdx.x] = s;
}
"#;
    let (_, log) = compile_cubin_report_source("spills", source, "sm_90")
        .unwrap_or_else(|e| panic!("spilling kernel:\n{e}"));
    let report = parse_ptxas_report(&log);
    assert_eq!(report.len(), 1, "ptxas log:\n{log}");
    assert!(
        report[0].spill_store_bytes.unwrap_or(0) > 0 && report[0].spill_load_bytes.unwrap_or(0) > 0,
        "expected spills, ptxas log:\n{log}"
    );
}

/// The kernels' logic (warp votes and shuffles, block scans, hash-table atomics, grid-stride
/// loops) checked without a GPU: `tests/kernel_emulation/check_kernels.cpp` runs them on a host
/// emulation of CUDA threads, warps and blocks (`cuda_emu.h`) against reference results:
/// sampling against the rule of `sample_node` for fan-outs -1 .. 150, scans up to 1.1M items,
/// deduplication, a block's index arrays (CSR offsets, the reverse index sorted per source, edge
/// destinations), mean aggregation forward and backward bit for bit, chunked sums, gathers and
/// softmax cross-entropy.
#[test]
fn kernels_compute_the_reference_results_on_a_host_emulation() {
    let test = "kernels_compute_the_reference_results_on_a_host_emulation";
    let Some((_dir, exe)) = common::kernel_emulation(test) else {
        return;
    };
    let run = std::process::Command::new(&exe)
        .output()
        .expect("run check_kernels");
    let report = String::from_utf8_lossy(&run.stdout);
    eprint!("{report}");
    assert!(
        run.status.success(),
        "{test}: kernels disagree with the references:\n{report}"
    );
    assert!(
        report.contains("all emulated kernel checks passed"),
        "{report}"
    );
}

/// `kernels/walk.cu` on the host emulation scans exactly as `walk::HostTrials` (the CPU walk
/// step): on a random part with local and remote neighbours, walkers at their first step, at
/// later steps with a previous node on this part or elsewhere, already decided, or resuming a
/// scan at a later trial, for DeepWalk and node2vec settings on both sides of 1 (return and
/// in-out cases), every output (decision, next trial, asked candidates and their u) bit for bit.
#[test]
fn the_walk_kernel_scans_trials_exactly_as_the_cpu_walker() {
    use shardsage::walk::{
        HostTrials, TrialScan, TrialScanner, WalkConfig, Walker, ASKS_PER_ROUND, NO_NODE,
    };
    let test = "the_walk_kernel_scans_trials_exactly_as_the_cpu_walker";
    let Some((dir, exe)) = common::kernel_emulation(test) else {
        return;
    };
    let mix = |x: u64| {
        let mut z = x
            .wrapping_mul(0x9E3779B97F4A7C15)
            .wrapping_add(0x632BE59BD9B4E019);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    };
    // A part of 300 nodes [1000, 1300) of a 2000-node graph; every tenth node has no neighbours,
    // neighbours are sorted and distinct, a third of them on this part.
    let (first, local, total) = (1000u64, 300u64, 2000u64);
    let mut indptr = vec![0u64];
    let mut indices: Vec<u32> = Vec::new();
    for i in 0..local {
        let deg = if i % 10 == 0 { 0 } else { 1 + mix(i) % 40 };
        let mut nb: Vec<u32> = (0..deg)
            .map(|e| {
                let h = mix(i * 1000 + e);
                if h % 3 == 0 {
                    (first + (h >> 8) % local) as u32
                } else {
                    ((h >> 8) % total) as u32
                }
            })
            .collect();
        nb.sort_unstable();
        nb.dedup();
        indices.extend(&nb);
        indptr.push(indices.len() as u64);
    }
    let host = HostTrials {
        first_node: first,
        indptr: &indptr,
        indices: &indices,
    };
    let n = 2000usize;
    let mut walkers = Vec::with_capacity(n);
    let mut scans = vec![TrialScan::default(); n];
    for i in 0..n as u64 {
        let cur = first + mix(i + 7) % local;
        let c = (cur - first) as usize;
        let nb = &indices[indptr[c] as usize..indptr[c + 1] as usize];
        // The previous node: none (a first step), a neighbour of cur (on this part or not), or
        // any node.
        let prev = match mix(i + 11) % 5 {
            0 => NO_NODE,
            1 | 2 if !nb.is_empty() => nb[(mix(i + 13) % nb.len() as u64) as usize],
            _ => (mix(i + 17) % total) as u32,
        };
        walkers.push(Walker {
            walk: mix(i + 19) % (10 * total),
            cur: cur as u32,
            prev,
            step: (1 + mix(i + 23) % 79) as u32,
        });
        match mix(i + 29) % 8 {
            0 => scans[i as usize].decided = Some(Some(5)),
            1 => scans[i as usize].decided = Some(None),
            2 => scans[i as usize].next_trial = 1 + mix(i + 31) % 12,
            _ => {}
        }
    }
    let mut checked = 0;
    for (p, q) in [
        (1.0, 1.0),
        (4.0, 0.5),
        (0.5, 2.0),
        (0.25, 4.0),
        (1.0, 0.5),
        (2.0, 1.0),
    ] {
        let cfg = WalkConfig {
            length: 80,
            walks_per_node: 10,
            p,
            q,
            seed: 42,
        };
        let mut want = scans.clone();
        host.scan(&cfg, &walkers, &mut want).unwrap();
        let mut input: Vec<u8> = Vec::new();
        let u64s = |v: &mut Vec<u8>, xs: &[u64]| xs.iter().for_each(|x| v.extend(x.to_le_bytes()));
        let u32s = |v: &mut Vec<u8>, xs: &[u32]| xs.iter().for_each(|x| v.extend(x.to_le_bytes()));
        u64s(
            &mut input,
            &[first, local, indices.len() as u64, n as u64, cfg.seed],
        );
        u64s(&mut input, &[cfg.first_order() as u64]);
        for x in [p, q, cfg.bound()] {
            input.extend(x.to_le_bytes());
        }
        u64s(&mut input, &indptr);
        u32s(&mut input, &indices);
        u64s(
            &mut input,
            &walkers.iter().map(|w| w.walk).collect::<Vec<_>>(),
        );
        for field in [
            walkers.iter().map(|w| w.cur).collect::<Vec<_>>(),
            walkers.iter().map(|w| w.prev).collect(),
            walkers.iter().map(|w| w.step).collect(),
            scans
                .iter()
                .map(|s| match s.decided {
                    None => 0,
                    Some(Some(_)) => 1,
                    Some(None) => 2,
                })
                .collect(),
        ] {
            u32s(&mut input, &field);
        }
        u64s(
            &mut input,
            &scans.iter().map(|s| s.next_trial).collect::<Vec<_>>(),
        );
        let out = common::run_emulated_kernel(&exe, dir.path(), "walk-trials", &input);
        let mut at = 0usize;
        let mut take = |bytes: usize| {
            let s = &out[at..at + bytes];
            at += bytes;
            s
        };
        let u32v = |b: &[u8]| -> Vec<u32> {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let u64v = |b: &[u8]| -> Vec<u64> {
            b.chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let status = u32v(take(4 * n));
        let next = u64v(take(8 * n));
        let node = u32v(take(4 * n));
        let asked_len = u32v(take(4 * n));
        let asked_x = u32v(take(4 * n * ASKS_PER_ROUND));
        let asked_u: Vec<f64> = u64v(take(8 * n * ASKS_PER_ROUND))
            .into_iter()
            .map(f64::from_bits)
            .collect();
        assert_eq!(at, out.len(), "walk-trials output size");
        let mut asking = 0;
        for i in 0..n {
            let (w, s) = (&want[i], &scans[i]);
            if s.decided.is_some() {
                assert_eq!(status[i], if s.decided == Some(None) { 2 } else { 1 });
                continue;
            }
            let ctx = format!("p {p} q {q}, walker {i} {:?}", walkers[i]);
            let x = (node[i] != NO_NODE).then_some(node[i]);
            match w.decided {
                Some(Some(d)) => assert!(status[i] == 1 && x == Some(d), "{ctx}: moves to {d}"),
                Some(None) => assert_eq!(status[i], 2, "{ctx}: ends"),
                None => {
                    asking += 1;
                    assert_eq!(status[i], 0, "{ctx}: asks");
                    assert_eq!(x, w.local_accept, "{ctx}: accepted after the asked trials");
                }
            }
            assert_eq!(next[i], w.next_trial, "{ctx}: next trial");
            assert_eq!(asked_len[i] as usize, w.asked_len, "{ctx}: asked");
            for j in 0..w.asked_len {
                let k = i * ASKS_PER_ROUND + j;
                assert_eq!(asked_x[k], w.asked[j].0, "{ctx}: asked candidate {j}");
                assert_eq!(
                    asked_u[k].to_bits(),
                    w.asked[j].1.to_bits(),
                    "{ctx}: asked u {j}"
                );
            }
            checked += 1;
        }
        // Only q != 1 leaves trials to ask about (u between 1 and 1/q).
        if q != 1.0 {
            assert!(asking > 50, "p {p} q {q}: only {asking} walkers ask");
        }
    }
    assert!(checked > 8000, "{checked}");
}
