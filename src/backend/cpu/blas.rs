//! Which library computes the CPU backend's matrix products: the `gemm` crate (built in) or a
//! system CBLAS loaded at run time (OpenBLAS or BLIS from the distribution), so a build needs no
//! BLAS and a user can pick the fastest one their machine has (`--cpu-gemm` or
//! `SHARDSAGE_CPU_GEMM`; `make bench-gemm` measures them on the model's shapes).
//!
//! The default, `auto`, decides by the instruction set, not by timing (a timed choice could flip
//! between two runs on one machine and break their determinism): OpenBLAS where the CPU has
//! AVX-512 and the library loads, since the `gemm` crate's stable build has no AVX-512 kernels
//! and OpenBLAS's are about 1.8x faster there on the model's shapes (bench/RESULTS.md, Intel
//! Xeon); the `gemm` crate elsewhere, where it matched or beat OpenBLAS (AMD EPYC, AVX2).
//!
//! Every library gives the same result for the same inputs on the same machine and thread
//! count; libraries differ from each other in the last bits (their summation orders differ), so
//! a run's determinism holds for a fixed choice.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The library behind the CPU backend's `gemm`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CpuGemm {
    /// OpenBLAS on CPUs with AVX-512 when it loads, else the `gemm` crate.
    #[default]
    Auto,
    /// The `gemm` crate (pure Rust, runs on the backend's rayon workers).
    Builtin,
    /// OpenBLAS (`libopenblas.so.0`, Debian's libopenblas0), with its own threads.
    Openblas,
    /// BLIS (`libblis.so.4`, Debian's libblis4), with its own threads.
    Blis,
}

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

type SgemmFn = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    *const f32,
    i32,
    *const f32,
    i32,
    f32,
    *mut f32,
    i32,
);

impl CpuGemm {
    /// The library `auto` stands for on this CPU (the others stand for themselves).
    pub fn resolve(self) -> CpuGemm {
        if self != CpuGemm::Auto {
            return self;
        }
        if cpu_has_avx512() {
            // SAFETY: as in `Cblas::load`. The probe stays loaded (`forget`): OpenBLAS starts
            // its threads when loaded, and unloading it under them is what `Cblas` avoids.
            if let Ok(lib) = unsafe { libloading::Library::new("libopenblas.so.0") } {
                std::mem::forget(lib);
                return CpuGemm::Openblas;
            }
            log::info!("gemm: this CPU has AVX-512 but libopenblas.so.0 does not load (Debian: apt-get install libopenblas0); using the gemm crate");
        }
        CpuGemm::Builtin
    }
}

fn cpu_has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A loaded CBLAS: `cblas_sgemm` and the library kept open.
pub struct Cblas {
    sgemm: SgemmFn,
    pub name: &'static str,
    /// Never closed: unloading a BLAS whose worker threads still run crashes the process.
    _lib: std::mem::ManuallyDrop<libloading::Library>,
}

impl Cblas {
    /// Loads `which` and sets its thread count (the libraries keep their own threads).
    pub fn load(which: CpuGemm, threads: usize) -> Result<Arc<Cblas>> {
        let (file, name, set_threads) = match which {
            CpuGemm::Builtin | CpuGemm::Auto => {
                return Err(Error::Other(format!("{which:?} gemm loads no library")))
            }
            CpuGemm::Openblas => (
                "libopenblas.so.0",
                "OpenBLAS",
                b"openblas_set_num_threads\0".as_slice(),
            ),
            CpuGemm::Blis => (
                "libblis.so.4",
                "BLIS",
                b"bli_thread_set_num_threads\0".as_slice(),
            ),
        };
        let missing = |e: libloading::Error| {
            Error::config(
                "--cpu-gemm",
                format!("{name} cannot be loaded ({file}: {e}); install it (Debian: apt-get install {}) or use --cpu-gemm builtin",
                    if which == CpuGemm::Openblas { "libopenblas0" } else { "libblis4" }),
            )
        };
        // SAFETY: loading a system BLAS runs its initialisers, which set up its thread pool only.
        let lib = unsafe { libloading::Library::new(file) }.map_err(missing)?;
        // SAFETY: the symbols have the CBLAS signatures; `bli_thread_set_num_threads` takes a
        // `dim_t` (i64 on LP64 builds), `openblas_set_num_threads` an int, so each is called
        // with its own type.
        let sgemm = unsafe { *lib.get::<SgemmFn>(b"cblas_sgemm\0").map_err(missing)? };
        unsafe {
            if which == CpuGemm::Blis {
                let f = lib
                    .get::<unsafe extern "C" fn(i64)>(set_threads)
                    .map_err(missing)?;
                f(threads as i64);
            } else {
                let f = lib
                    .get::<unsafe extern "C" fn(i32)>(set_threads)
                    .map_err(missing)?;
                f(threads as i32);
            }
        }
        Ok(Arc::new(Cblas {
            sgemm,
            name,
            _lib: std::mem::ManuallyDrop::new(lib),
        }))
    }

    /// `C = alpha * op(A) * op(B) + beta * C`, all row-major and contiguous (the backend's
    /// contract, checked by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &mut [f32],
    ) -> Result<()> {
        let dim = |x: usize| {
            i32::try_from(x).map_err(|_| {
                Error::Other(format!(
                    "{} needs 32-bit dimensions; {x} is too large",
                    self.name
                ))
            })
        };
        let (mi, ni, ki) = (dim(m)?, dim(n)?, dim(k)?);
        let lda = if trans_a { mi } else { ki };
        let ldb = if trans_b { ki } else { ni };
        let t = |x: bool| if x { TRANS } else { NO_TRANS };
        debug_assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
        // SAFETY: the caller checked the views against the shapes; `c` is a unique borrow.
        unsafe {
            (self.sgemm)(
                ROW_MAJOR,
                t(trans_a),
                t(trans_b),
                mi,
                ni,
                ki,
                alpha,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                beta,
                c.as_mut_ptr(),
                ni,
            );
        }
        Ok(())
    }
}
