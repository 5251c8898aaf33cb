//! The CUDA kernel sources and their run-time compilation with NVRTC.
//!
//! The `.cu` files in `kernels/` are embedded into the binary (`include_str!`), so a built
//! `shardsage` needs no source tree: at start-up the CUDA backend compiles them to PTX for the
//! device it found. `kernels/common.cuh` (the counter-based hash, bit-identical to
//! `sample::rng`, and small thread-index helpers) is handed to NVRTC as a named in-memory header,
//! so no include path is searched at run time.
//!
//! This module owns compilation only; loading modules onto a device and launching kernels is the
//! CUDA backend's job. NVRTC is loaded dynamically: every entry point first checks that the
//! library can be loaded and returns `Error::Cuda` (never a panic) when it cannot.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::OnceLock;

use cudarc::nvrtc::sys as nvrtc;
use cudarc::nvrtc::Ptx;

use crate::{Error, Result};

/// One kernel source file and the `extern "C"` kernels it defines.
#[derive(Clone, Copy, Debug)]
pub struct KernelFile {
    /// File name without extension (`sample` for `kernels/sample.cu`).
    pub name: &'static str,
    /// The CUDA C++ source.
    pub source: &'static str,
    /// The kernels it defines, as the backend looks them up after loading.
    pub kernels: &'static [&'static str],
}

/// Name under which the common header is included (`#include "common.cuh"`).
pub const COMMON_HEADER_NAME: &str = "common.cuh";

/// The header shared by every kernel file.
pub const COMMON_HEADER: &str = include_str!("../../../kernels/common.cuh");

/// Sampling, deduplication/relabelling, a block's index arrays, exclusive scans, and a hash probe.
pub const SAMPLE: KernelFile = KernelFile {
    name: "sample",
    source: include_str!("../../../kernels/sample.cu"),
    kernels: &[
        "sample_counts",
        "sample_neighbors",
        "dedup_clear",
        "dedup_insert",
        "dedup_flags",
        "dedup_emit",
        "block_indptr",
        "block_rev_count",
        "block_rev_fill",
        "block_rev_sort",
        "block_edge_dst",
        "narrow_ids",
        "scan_tiles_u32",
        "scan_tiles_u64",
        "scan_sums_u32",
        "scan_sums_u64",
        "scan_add_u32",
        "scan_add_u64",
        "hash_probe",
    ],
};

/// SAGE mean aggregation forward/backward, row gathers and scatters.
pub const AGGREGATE: KernelFile = KernelFile {
    name: "aggregate",
    source: include_str!("../../../kernels/aggregate.cu"),
    kernels: &[
        "sage_mean_forward",
        "sage_mean_backward",
        "gather_rows",
        "scatter_rows",
    ],
};

/// Bias and column sums, activations, dropout, products, losses, Adam, scale/axpy/fill, and
/// fixed-order chunk sums.
pub const ELEMENTWISE: KernelFile = KernelFile {
    name: "elementwise",
    source: include_str!("../../../kernels/elementwise.cu"),
    kernels: &[
        "add_row_bias",
        "column_sums_partial",
        "column_sums_finish",
        "relu_forward",
        "relu_backward",
        "dropout_apply",
        "mul_forward",
        "mul_backward",
        "bce_with_logits",
        "softmax_cross_entropy",
        "adam_update",
        "scale_f32",
        "axpy_f32",
        "fill_f32",
        "chunk_sums_f32",
        "chunk_sums_f64",
    ],
};

/// The trial scan of a random-walk step (DeepWalk, node2vec).
pub const WALK: KernelFile = KernelFile {
    name: "walk",
    source: include_str!("../../../kernels/walk.cu"),
    kernels: &["walk_trials"],
};

/// One sub-round of skip-gram under the block schedule (node2vec, DeepWalk embeddings).
pub const SGNS: KernelFile = KernelFile {
    name: "sgns",
    source: include_str!("../../../kernels/sgns.cu"),
    kernels: &["sgns_sub_round"],
};

/// Every kernel file, in the order the backend loads them.
pub const KERNEL_FILES: &[KernelFile] = &[SAMPLE, AGGREGATE, ELEMENTWISE, WALK, SGNS];

/// Threads per block of the scan kernels and items each block scans (see `kernels/sample.cu`).
pub const SCAN_THREADS: u32 = 256;
pub const SCAN_TILE: u64 = 1024;

/// Options for every compilation. No fast math and no fused multiply-add contraction: results
/// depend only on the source order of operations, like the CPU backend's.
const BASE_OPTIONS: &[&str] = &[
    "--std=c++17",
    "-default-device",
    "-lineinfo",
    "--fmad=false",
];

/// Whether NVRTC can be loaded; `Err` carries a reason fit for a skip or error message.
///
/// Looks in the dynamic loader's path first (`LD_LIBRARY_PATH`, as `scripts/env.sh` sets), then
/// in `$SHARDSAGE_CUDA_HOME/cuda_nvrtc/lib`, then in this checkout's `.deps/cuda` (what
/// `scripts/setup.sh` installs).
pub fn nvrtc_available() -> std::result::Result<(), String> {
    static STATE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    STATE.get_or_init(probe_nvrtc).clone()
}

fn probe_nvrtc() -> std::result::Result<(), String> {
    // SAFETY: only tries to open the library; nothing is called through it here.
    if unsafe { nvrtc::is_culib_present() } {
        return Ok(());
    }
    let mut tried = Vec::new();
    let mut dirs = Vec::new();
    if let Some(home) = std::env::var_os("SHARDSAGE_CUDA_HOME") {
        dirs.push(std::path::PathBuf::from(home).join("cuda_nvrtc/lib"));
    }
    dirs.push(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/cuda/nvidia/cuda_nvrtc/lib"),
    );
    for dir in dirs {
        let path = dir.join("libnvrtc.so.12");
        tried.push(path.display().to_string());
        if preload(&path) && unsafe { nvrtc::is_culib_present() } {
            return Ok(());
        }
    }
    Err(format!(
        "libnvrtc (CUDA 12 NVRTC) cannot be loaded: not on the loader path and not at {}; run \
         scripts/setup.sh and `source scripts/env.sh`",
        tried.join(", ")
    ))
}

/// Opens a shared library by full path and keeps it loaded for the life of the process, so that
/// a later open by its soname (as cudarc does) finds it.
fn preload(path: &std::path::Path) -> bool {
    let Some(c_path) = path.to_str().and_then(|p| CString::new(p).ok()) else {
        return false;
    };
    if !path.exists() {
        return false;
    }
    // SAFETY: dlopen with a valid NUL-terminated path; the handle is deliberately never closed.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !handle.is_null()
}

fn ensure_nvrtc() -> Result<()> {
    nvrtc_available().map_err(Error::Cuda)
}

/// The NVRTC version `(major, minor)`.
pub fn nvrtc_version() -> Result<(i32, i32)> {
    ensure_nvrtc()?;
    let (mut major, mut minor): (c_int, c_int) = (0, 0);
    // SAFETY: NVRTC is loaded (checked above); both pointers are valid for writes.
    check(
        unsafe { nvrtc::nvrtcVersion(&mut major, &mut minor) },
        "nvrtcVersion",
    )?;
    Ok((major, minor))
}

fn check(result: nvrtc::nvrtcResult, what: &str) -> Result<()> {
    if result == nvrtc::nvrtcResult::NVRTC_SUCCESS {
        return Ok(());
    }
    // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string for any result code.
    let text = unsafe { CStr::from_ptr(nvrtc::nvrtcGetErrorString(result)) };
    Err(Error::Cuda(format!("{what}: {}", text.to_string_lossy())))
}

/// An NVRTC program that is destroyed when dropped.
struct Program {
    handle: nvrtc::nvrtcProgram,
    name: String,
}

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from nvrtcCreateProgram and is destroyed exactly once.
        unsafe {
            nvrtc::nvrtcDestroyProgram(&mut self.handle);
        }
    }
}

fn to_cstring(text: &str, what: &str) -> Result<CString> {
    CString::new(text).map_err(|_| Error::Cuda(format!("{what} contains a NUL byte")))
}

impl Program {
    /// Creates the program from `source` with the common header available as `common.cuh`,
    /// and compiles it with the base options plus `extra`. A failed compilation returns the
    /// NVRTC log.
    fn compile(name: &str, source: &str, extra: &[String]) -> Result<Program> {
        ensure_nvrtc()?;
        let file_name = format!("{name}.cu");
        let c_source = to_cstring(source, &file_name)?;
        let c_name = to_cstring(&file_name, "kernel file name")?;
        let c_header = to_cstring(COMMON_HEADER, COMMON_HEADER_NAME)?;
        let c_header_name = to_cstring(COMMON_HEADER_NAME, "header name")?;
        let headers = [c_header.as_ptr()];
        let header_names = [c_header_name.as_ptr()];
        let mut handle: nvrtc::nvrtcProgram = std::ptr::null_mut();
        // SAFETY: all strings outlive the call (NVRTC copies them); arrays have one entry each.
        check(
            unsafe {
                nvrtc::nvrtcCreateProgram(
                    &mut handle,
                    c_source.as_ptr(),
                    c_name.as_ptr(),
                    1,
                    headers.as_ptr(),
                    header_names.as_ptr(),
                )
            },
            &format!("{file_name}: nvrtcCreateProgram"),
        )?;
        let program = Program {
            handle,
            name: file_name,
        };
        let options: Vec<String> = BASE_OPTIONS
            .iter()
            .map(|o| o.to_string())
            .chain(extra.iter().cloned())
            .collect();
        let c_options = options
            .iter()
            .map(|o| to_cstring(o, "NVRTC option"))
            .collect::<Result<Vec<_>>>()?;
        let option_ptrs: Vec<*const c_char> = c_options.iter().map(|o| o.as_ptr()).collect();
        // SAFETY: the program handle is live; option pointers are valid for the call.
        let result = unsafe {
            nvrtc::nvrtcCompileProgram(
                program.handle,
                option_ptrs.len() as c_int,
                option_ptrs.as_ptr(),
            )
        };
        if result != nvrtc::nvrtcResult::NVRTC_SUCCESS {
            let log = program.log().unwrap_or_else(|e| format!("(no log: {e})"));
            // SAFETY: static string for any result code.
            let text = unsafe { CStr::from_ptr(nvrtc::nvrtcGetErrorString(result)) };
            return Err(Error::Cuda(format!(
                "{} failed to compile ({}) with options [{}]:\n{}",
                program.name,
                text.to_string_lossy(),
                options.join(" "),
                log.trim_end()
            )));
        }
        Ok(program)
    }

    /// The compilation log (warnings, and the ptxas report when asked for).
    fn log(&self) -> Result<String> {
        let mut size = 0usize;
        // SAFETY: live handle; NVRTC writes the size, then at most `size` bytes.
        check(
            unsafe { nvrtc::nvrtcGetProgramLogSize(self.handle, &mut size) },
            "nvrtcGetProgramLogSize",
        )?;
        let mut buffer = vec![0u8; size.max(1)];
        check(
            unsafe { nvrtc::nvrtcGetProgramLog(self.handle, buffer.as_mut_ptr().cast()) },
            "nvrtcGetProgramLog",
        )?;
        Ok(c_buffer_to_string(buffer))
    }

    fn ptx(&self) -> Result<String> {
        let mut size = 0usize;
        // SAFETY: live, compiled handle; buffer sized as NVRTC reports.
        check(
            unsafe { nvrtc::nvrtcGetPTXSize(self.handle, &mut size) },
            "nvrtcGetPTXSize",
        )?;
        let mut buffer = vec![0u8; size.max(1)];
        check(
            unsafe { nvrtc::nvrtcGetPTX(self.handle, buffer.as_mut_ptr().cast()) },
            "nvrtcGetPTX",
        )?;
        Ok(c_buffer_to_string(buffer))
    }

    fn cubin(&self) -> Result<Vec<u8>> {
        let mut size = 0usize;
        // SAFETY: live, compiled handle; buffer sized as NVRTC reports.
        check(
            unsafe { nvrtc::nvrtcGetCUBINSize(self.handle, &mut size) },
            "nvrtcGetCUBINSize",
        )?;
        if size == 0 {
            return Err(Error::Cuda(format!(
                "{}: NVRTC produced no cubin (compile for a real sm_XX architecture)",
                self.name
            )));
        }
        let mut buffer = vec![0u8; size];
        check(
            unsafe { nvrtc::nvrtcGetCUBIN(self.handle, buffer.as_mut_ptr().cast()) },
            "nvrtcGetCUBIN",
        )?;
        Ok(buffer)
    }
}

fn c_buffer_to_string(mut buffer: Vec<u8>) -> String {
    if let Some(end) = buffer.iter().position(|&b| b == 0) {
        buffer.truncate(end);
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

fn check_arch(arch: &str, prefix: &str) -> Result<()> {
    let ok = arch
        .strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Error::Cuda(format!(
            "architecture {arch:?} is not of the form {prefix}NN"
        )))
    }
}

/// Compiles a kernel file to PTX for a virtual architecture such as `compute_80`.
pub fn compile_ptx(file: &KernelFile, arch: &str) -> Result<Ptx> {
    compile_ptx_source(file.name, file.source, arch).map(Ptx::from_src)
}

/// Compiles any CUDA source (which may `#include "common.cuh"`) to PTX text.
pub fn compile_ptx_source(name: &str, source: &str, arch: &str) -> Result<String> {
    check_arch(arch, "compute_")?;
    let program = Program::compile(name, source, &[format!("--gpu-architecture={arch}")])?;
    program.ptx()
}

/// Compiles a kernel file to a cubin for a real architecture such as `sm_90` and returns it with
/// the ptxas report (`--ptxas-options=-v`: registers, shared memory, spill stores and loads per
/// kernel).
pub fn compile_cubin_report(file: &KernelFile, arch: &str) -> Result<(Vec<u8>, String)> {
    compile_cubin_report_source(file.name, file.source, arch)
}

/// As `compile_cubin_report`, for any source.
pub fn compile_cubin_report_source(
    name: &str,
    source: &str,
    arch: &str,
) -> Result<(Vec<u8>, String)> {
    check_arch(arch, "sm_")?;
    let program = Program::compile(
        name,
        source,
        &[
            format!("--gpu-architecture={arch}"),
            "--ptxas-options=-v".to_string(),
        ],
    )?;
    Ok((program.cubin()?, program.log()?))
}

/// What ptxas reported for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    /// The kernel's (unmangled, `extern "C"`) name.
    pub name: String,
    pub registers: u32,
    /// Spill stores and loads in bytes; `None` when the report had no properties line for the
    /// kernel (so a changed report format cannot pass for "no spills").
    pub spill_store_bytes: Option<u32>,
    pub spill_load_bytes: Option<u32>,
    pub stack_frame_bytes: u32,
    pub shared_bytes: u32,
}

/// Parses a ptxas `-v` report into one entry per kernel.
///
/// The report has, per function, a line `Compiling entry function 'NAME' for 'sm_90'`, then
/// `N bytes stack frame, N bytes spill stores, N bytes spill loads` and
/// `Used N registers, ... N bytes smem ...`.
pub fn parse_ptxas_report(log: &str) -> Vec<KernelResources> {
    let mut kernels: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or("").to_string();
            kernels.push(KernelResources {
                name,
                ..Default::default()
            });
            continue;
        }
        let Some(current) = kernels.last_mut() else {
            continue;
        };
        if line.contains("stack frame") {
            current.stack_frame_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            current.spill_store_bytes = number_before(line, "bytes spill stores");
            current.spill_load_bytes = number_before(line, "bytes spill loads");
        } else if line.contains("Used") && line.contains("registers") {
            current.registers = number_before(line, "registers").unwrap_or(0);
            current.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    kernels
}

/// The integer right before `label` in `line` (`"12 bytes spill stores"` -> 12).
fn number_before(line: &str, label: &str) -> Option<u32> {
    let before = &line[..line.find(label)?];
    let word = before.trim_end().rsplit([' ', ',', '\t']).next()?;
    word.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_report_is_parsed_per_kernel() {
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'sample_counts' for 'sm_90'\n\
ptxas info    : Function properties for sample_counts\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 14 registers, used 0 barriers, 400 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'scan_tiles_u32' for 'sm_90'\n\
ptxas info    : Function properties for scan_tiles_u32\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 40 registers, used 1 barriers, 32 bytes smem, 380 bytes cmem[0]\n";
        let report = parse_ptxas_report(log);
        assert_eq!(report.len(), 2);
        assert_eq!(report[0].name, "sample_counts");
        assert_eq!(report[0].registers, 14);
        assert_eq!(report[0].spill_store_bytes, Some(0));
        assert_eq!(report[1].name, "scan_tiles_u32");
        assert_eq!(report[1].registers, 40);
        assert_eq!(report[1].stack_frame_bytes, 8);
        assert_eq!(report[1].spill_store_bytes, Some(4));
        assert_eq!(report[1].spill_load_bytes, Some(12));
        assert_eq!(report[1].shared_bytes, 32);
        let no_properties =
            parse_ptxas_report("ptxas info : Compiling entry function 'k' for 'sm_90'\n");
        assert_eq!(no_properties[0].spill_store_bytes, None);
    }

    #[test]
    fn every_kernel_file_includes_the_common_header() {
        for file in KERNEL_FILES {
            assert!(
                file.source.contains("#include \"common.cuh\""),
                "{}.cu does not include common.cuh",
                file.name
            );
            for kernel in file.kernels {
                assert!(
                    file.source.contains(&format!("{kernel}(")),
                    "{}.cu does not define {kernel}",
                    file.name
                );
            }
        }
    }

    #[test]
    fn bad_architectures_are_rejected_before_nvrtc() {
        assert!(compile_ptx(&SAMPLE, "sm_90").is_err());
        assert!(compile_cubin_report(&SAMPLE, "compute_90").is_err());
    }
}
