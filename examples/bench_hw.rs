//! `make bench-hw`: the hardware limits every other benchmark is compared with: STREAM-like copy
//! and triad bandwidth on arrays far beyond the last-level cache (1 thread and all threads), and
//! the GFLOP/s of the CPU backend's `gemm` on the model's shapes.
//!
//! Options: `--array-mib N` (default 256), `--reps N` (default 7).

#[path = "../bench/common.rs"]
mod common;

use common::*;
use shardsage::backend::CpuBackend;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> BenchResult<()> {
    let array_mib = arg("--array-mib", 256);
    let reps = arg("--reps", 7);
    let meta = run_meta();
    let all = all_threads();
    let mut threads = vec![1];
    if all > 1 {
        threads.push(all);
    }

    let mut stream = Stream::new(array_mib << 20);
    let mut bw_rows = Vec::new();
    let mut bw_json = Vec::new();
    for &t in &threads {
        let p = pool(t)?;
        let (copy, copy_all) = stream.copy_bandwidth(&p, reps);
        let (triad, triad_all) = stream.triad_bandwidth(&p, reps);
        bw_rows.push(vec![
            t.to_string(),
            format!("{:.2}", copy / GB),
            format!("{:.2}", triad / GB),
        ]);
        bw_json.push(serde_json::json!({
            "threads": t,
            "copy_bytes_per_s": copy,
            "triad_bytes_per_s": triad,
            "copy_samples": copy_all,
            "triad_samples": triad_all,
        }));
    }
    drop(stream);

    let shapes = [
        (4096usize, 256usize, 256usize),
        (512, 512, 512),
        (512, 256, 128),
    ];
    let mut gemm_rows = Vec::new();
    let mut gemm_json = Vec::new();
    for &(m, n, k) in &shapes {
        for &t in &threads {
            let s = gemm_seconds(&CpuBackend::new(t)?, false, false, m, n, k, reps)?;
            let gflops = 2.0 * (m * n * k) as f64 / s / 1e9;
            gemm_rows.push(vec![
                format!("{m}x{k} · {k}x{n}"),
                t.to_string(),
                format!("{:.3}", s * 1e3),
                format!("{gflops:.1}"),
            ]);
            gemm_json.push(serde_json::json!({
                "m": m, "n": n, "k": k, "threads": t, "seconds": s, "gflops": gflops,
            }));
        }
    }

    let bw_table = table(&["threads", "copy GB/s", "triad GB/s"], &bw_rows);
    let gemm_table = table(&["shape", "threads", "ms", "GFLOP/s"], &gemm_rows);
    println!("memory bandwidth ({array_mib} MiB arrays, median of {reps}):\n{bw_table}");
    println!("gemm (CpuBackend::gemm, median of {reps}):\n{gemm_table}");

    let json = serde_json::json!({
        "scenario": "hw",
        "meta": meta,
        "array_bytes": array_mib << 20,
        "reps": reps,
        "bandwidth": bw_json,
        "gemm": gemm_json,
    });
    let jpath = write_json("hw", &json)?;
    let svg = results_dir().join("hw.svg");
    let cats: Vec<String> = threads.iter().map(|t| format!("{t} thread(s)")).collect();
    let col = |key: &str| -> Vec<f64> {
        bw_json
            .iter()
            .map(|r| r[key].as_f64().unwrap_or(f64::NAN) / GB)
            .collect()
    };
    bar_chart(
        &svg,
        &format!("STREAM-like bandwidth, {array_mib} MiB arrays"),
        "GB/s",
        &cats,
        &[
            ("copy".to_string(), col("copy_bytes_per_s")),
            ("triad".to_string(), col("triad_bytes_per_s")),
        ],
        None,
    )?;
    update_results_md(
        "bench-hw",
        &format!(
            "## Hardware limits (`make bench-hw`)\n\n{}\n\nSTREAM-like bandwidth ({array_mib} MiB \
             arrays, copy counts 2 and triad 3 array sizes, median of {reps}):\n\n{bw_table}\n\
             GEMM through `CpuBackend::gemm` (the `gemm` crate), median of {reps}:\n\n{gemm_table}\n\
             Plot: `bench/results/hw.svg`; data: `bench/results/hw.json`.\n",
            meta_line(&meta)
        ),
    )?;
    println!("wrote {} and {}", jpath.display(), svg.display());
    Ok(())
}
