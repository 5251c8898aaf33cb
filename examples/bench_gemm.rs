//! `make bench-gemm`: the CPU backend's matrix products on the shapes of a SAGE step, with every
//! GEMM library the machine has (`--cpu-gemm builtin | openblas | blis`), on 1 thread and on all.
//!
//! The step's products are tall-skinny: the forward `[rows x in] · [in x out]`, the weight
//! gradient `[in x rows] · [rows x out]` (A transposed, K = rows) and the input gradient
//! `[rows x out] · [in x out]^T`; `in` is 256 for a hidden layer, 512 when the self and
//! neighbour products are fused into one (K = 2·in).
//!
//! Options: `--rows N` (default 65536: a 64 MiB operand at in = 256, past the caches), `--reps N`.

#[path = "../bench/common.rs"]
mod common;

use common::*;
use shardsage::backend::{CpuBackend, CpuGemm};

struct Shape {
    what: &'static str,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
}

fn main() -> BenchResult<()> {
    let rows = arg_usize("--rows", 65536);
    let reps = arg_usize("--reps", 7);
    let meta = run_meta();
    let all = all_threads();
    let threads: Vec<usize> = if all > 1 { vec![1, all] } else { vec![1] };
    let out = 256;
    let mut shapes = Vec::new();
    for k_in in [128usize, 256, 512] {
        shapes.push(Shape {
            what: "forward",
            trans_a: false,
            trans_b: false,
            m: rows,
            n: out,
            k: k_in,
        });
        shapes.push(Shape {
            what: "weight grad",
            trans_a: true,
            trans_b: false,
            m: k_in,
            n: out,
            k: rows,
        });
        shapes.push(Shape {
            what: "input grad",
            trans_a: false,
            trans_b: true,
            m: rows,
            n: k_in,
            k: out,
        });
    }
    let mut table_rows = Vec::new();
    let mut json = Vec::new();
    for lib in [CpuGemm::Builtin, CpuGemm::Openblas, CpuGemm::Blis] {
        for &t in &threads {
            let be = match CpuBackend::new(t)?.with_gemm(lib) {
                Ok(be) => be,
                Err(e) => {
                    println!("skipping {lib:?}: {e}");
                    break;
                }
            };
            for s in &shapes {
                let secs = gemm_seconds(&be, s.trans_a, s.trans_b, s.m, s.n, s.k, reps)?;
                let gflops = 2.0 * (s.m * s.n * s.k) as f64 / secs / 1e9;
                let a_shape = if s.trans_a {
                    format!("[{}x{}]^T", s.k, s.m)
                } else {
                    format!("[{}x{}]", s.m, s.k)
                };
                let b_shape = if s.trans_b {
                    format!("[{}x{}]^T", s.n, s.k)
                } else {
                    format!("[{}x{}]", s.k, s.n)
                };
                let shape = format!("{a_shape} · {b_shape}");
                table_rows.push(vec![
                    be.gemm_name().to_string(),
                    t.to_string(),
                    s.what.to_string(),
                    shape,
                    format!("{:.2}", secs * 1e3),
                    format!("{gflops:.1}"),
                ]);
                json.push(serde_json::json!({
                    "library": be.gemm_name(), "threads": t, "what": s.what,
                    "trans_a": s.trans_a, "trans_b": s.trans_b,
                    "m": s.m, "n": s.n, "k": s.k, "seconds": secs, "gflops": gflops,
                }));
            }
        }
    }
    let t = table(
        &["library", "threads", "product", "shape", "ms", "GFLOP/s"],
        &table_rows,
    );
    println!("{}\n{t}", meta_line(&meta));
    let jpath = write_json(
        "gemm",
        &serde_json::json!({
            "scenario": "gemm", "meta": meta, "rows": rows, "reps": reps, "results": json,
        }),
    )?;
    let md = update_results_md(
        "bench-gemm",
        &format!(
            "`make bench-gemm` (`--rows {rows}`, median of {reps}); {}\n\n{t}\nRaw: `{}`\n",
            meta_line(&meta),
            jpath.strip_prefix(repo_root()).unwrap_or(&jpath).display()
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), md.display());
    Ok(())
}
