//! Every CUDA kernel file compiles with NVRTC (no GPU needed): PTX for compute_80 and compute_90,
//! and an sm_90 cubin whose ptxas report shows no register spills. Runs in CI, where NVRTC comes
//! from `scripts/setup.sh`; there a missing NVRTC is a failure, elsewhere a printed skip.

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
/// deduplication, mean aggregation forward and backward bit for bit, chunked sums, gathers and
/// softmax cross-entropy.
#[test]
fn kernels_compute_the_reference_results_on_a_host_emulation() {
    let test = "kernels_compute_the_reference_results_on_a_host_emulation";
    if !cfg!(target_arch = "x86_64") {
        eprintln!("SKIPPED {test}: the emulation's fiber switch is written for x86-64");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let exe = dir.path().join("check_kernels");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let compiled = std::process::Command::new(&cxx)
        .args(["-std=c++20", "-O1", "-Wall", "-Wextra"])
        .args(["-Wno-unused-parameter", "-Wno-unknown-pragmas", "-I"])
        .arg(root.join("kernels"))
        .arg("-I")
        .arg(root.join("tests/kernel_emulation"))
        .arg(root.join("tests/kernel_emulation/check_kernels.cpp"))
        .arg("-o")
        .arg(&exe)
        .output();
    let compiled = match compiled {
        Ok(out) => out,
        Err(e) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !in_ci,
                "{test}: no C++ compiler ({cxx}: {e}); run scripts/setup.sh"
            );
            eprintln!("SKIPPED {test}: no C++ compiler ({cxx}: {e})");
            return;
        }
    };
    assert!(
        compiled.status.success(),
        "{test}: the emulation does not compile:\n{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
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
