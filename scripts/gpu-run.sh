#!/usr/bin/env bash
# Runs the GPU tests and benchmarks on a lent GPU machine (see docs/gpu-runs.md), from the
# repository root, with gpu-bundle.tar.xz (made by `make gpu-bundle` on the build machine)
# carried along. Unpacks the bundle if needed, prints the machine (nvidia-smi, driver, CUDA,
# device), finds the machine's own NVRTC and cuBLAS, then runs the selected phases, each under
# its own time limit inside an overall budget, continuing after a failure:
#
#   tests    the cuda_backend integration tests (log: $OUT/gpu-tests.log)
#   agg      bench_gpu_agg: mean aggregation vs device copy bandwidth
#   sampler  bench_gpu_sampler: GPU vs CPU neighbour sampling on a generated graph
#   train    bench_gpu_train: `shardsage train --device cuda` vs `--device cpu`
#   pyg      bench_gpu_train: `shardsage train --device cuda` vs train_pyg.py --device cuda
#   all      all of them (train and pyg share one shardsage GPU run)
#
# usage: bash scripts/gpu-run.sh [PHASE...]   (default: all)
#
# Results go to $OUT (default ./gpu-out): gpu-run.log (everything), system.txt, gpu-tests.log,
# logs/<phase>.log, results/gpu-*.json and .svg, RESULTS-gpu.md (the refreshed sections of
# bench/RESULTS.md), phases.tsv, runs/ (each training run's log, metrics.jsonl, config.toml). Record them on the build machine with scripts/gpu-record.sh.
#
# Settings (environment): GPU_BUDGET_S (540: all phases together), GPU_NODES (2927963, the size
# of ogbl-citation2), GPU_NUM_NEG (20 fixed negatives per held-out edge), GPU_STEPS (30 training
# steps per run), GPU_TABLE_MIB (2048), GPU_PYTHON (python3, with torch, torch_geometric, h5py).
# The generated graph is kept in bench/.data/gpu/ and reused while the machine is.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$SECONDS
budget=${GPU_BUDGET_S:-540}
nodes=${GPU_NODES:-2927963}
num_neg=${GPU_NUM_NEG:-20}
steps=${GPU_STEPS:-30}
table_mib=${GPU_TABLE_MIB:-2048}
python=${GPU_PYTHON:-python3}
OUT=${OUT:-$root/gpu-out}
mkdir -p "$OUT/results" "$OUT/logs"
OUT=$(cd "$OUT" && pwd)

die() { echo "gpu-run: $*" >&2; exit 1; }
say() { echo "gpu-run: $*"; }

declare -A want=()
(($#)) || set -- all
for p in "$@"; do
    case $p in
    tests | agg | sampler | train | pyg) want[$p]=1 ;;
    all) for q in tests agg sampler train pyg; do want[$q]=1; done ;;
    *) die "unknown phase '$p' (phases: tests agg sampler train pyg all)" ;;
    esac
done

# Everything also goes to $OUT/gpu-run.log (the device tool returns only the output's tail).
exec > >(tee -a "$OUT/gpu-run.log") 2>&1
tee_pid=$!
trap 'exec >&- 2>&-; wait "$tee_pid" 2>/dev/null || true' EXIT
say "phases: $* (budget ${budget}s); results to $OUT"

# ---- the bundle ----
if [ -f gpu-bundle.tar.xz ] && { [ ! -f bundle/.unpacked ] || [ gpu-bundle.tar.xz -nt bundle/.unpacked ]; }; then
    say "unpacking gpu-bundle.tar.xz"
    rm -rf bundle
    tar xJf gpu-bundle.tar.xz
    touch bundle/.unpacked
fi
[ -x bundle/lib/ld-linux-x86-64.so.2 ] ||
    die "no bundle here: run \`make gpu-bundle\` on the build machine and carry gpu-bundle.tar.xz"
work=$root/bundle/run
rm -rf "$work"
mkdir -p "$work/bin" "$work/cudalib"
touch "$work/.start"

# ---- the machine ----
{
    echo "== date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "== host: $(uname -srm); $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); $(ldd --version 2>/dev/null | head -1)"
    echo "== cores: $(nproc); memory: $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "== nvidia-smi"
    nvidia-smi || echo "(nvidia-smi failed)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.memory --format=csv || true
    echo "== nvcc: $({ command -v nvcc || ls /usr/local/cuda/bin/nvcc; } 2>/dev/null | head -1)"
    { nvcc --version || /usr/local/cuda/bin/nvcc --version; } 2>/dev/null | tail -2 || true
    echo "== python: $python"
    "$python" -c 'import sys, torch, torch_geometric, h5py, numpy
print("python", sys.version.split()[0], "torch", torch.__version__, "(CUDA", torch.version.cuda, ") torch_geometric",
      torch_geometric.__version__, "h5py", h5py.__version__, "numpy", numpy.__version__)
print("torch sees", torch.cuda.device_count(), "device(s):", [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())])' ||
        echo "(the PyG phase needs torch, torch_geometric, h5py and numpy in $python)"
    echo "== bundle"
    cat bundle/BUNDLE_INFO
} 2>&1 | tee "$OUT/system.txt"
driver_cuda=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | awk '{ print $3 }' || true)

# ---- the machine's CUDA libraries ----
# cudarc (built for CUDA 12.9) opens libcublas.so / libnvrtc.so first, then .so.12 and older
# majors, never .so.13; so a private directory of links with the names it tries points at
# whatever this machine has, CUDA 12 preferred (its PTX suits any driver >= R575), else 13.
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
roots=()
for d in /usr/local/cuda* /usr/local/nvidia /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib/wsl/lib /opt; do
    [ -d "$d" ] && roots+=("$d")
done
while read -r d; do
    [ -n "$d" ] && [ -d "$d" ] && roots+=("$d")
done < <("$python" -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null || true)
IFS=: read -ra ldp <<<"${LD_LIBRARY_PATH:-}"
for d in "${ldp[@]}"; do [ -n "$d" ] && [ -d "$d" ] && roots+=("$d"); done
mapfile -t found < <({
    find -H "${roots[@]}" -maxdepth 6 \( -name 'libcublas.so*' -o -name 'libcublasLt.so*' \
        -o -name 'libnvrtc.so*' -o -name 'libnvrtc-builtins.so*' -o -name 'libcuda.so*' \) \
        \( -type f -o -type l \) 2>/dev/null
    $ldconfig -p 2>/dev/null | awk '/libcuda\.so|libcublas|libnvrtc/ { print $NF }'
} | sort -u)

pick() { # NAME [DIR]: the best NAME.so.<12|13>* (in DIR when given and present there)
    local name=$1 dir=${2:-} major f
    for major in 12 13; do
        for f in "${found[@]}"; do
            [ -z "$dir" ] || [ "$(dirname "$f")" = "$dir" ] || continue
            case ${f##*/} in "$name.so.$major" | "$name.so.$major".*)
                echo "$f"
                return 0
                ;;
            esac
        done
    done
    return 1
}
link_as() { # FILE NAME: links FILE into the private directory as NAME, NAME.<major>, its own name
    local f=$1 name=$2 base major
    base=${f##*/}
    major=${base#"$name".}
    major=${major%%.*}
    ln -sfn "$f" "$work/cudalib/$name"
    ln -sfn "$f" "$work/cudalib/$name.$major"
    ln -sfn "$f" "$work/cudalib/$base"
}
cublas=$(pick libcublas || true)
nvrtc=$(pick libnvrtc || true)
cublaslt=
[ -z "$cublas" ] || cublaslt=$(pick libcublasLt "$(dirname "$cublas")" || pick libcublasLt || true)
libdirs=()
if [ -n "$cublas" ] && [ -n "$cublaslt" ]; then
    link_as "$cublas" libcublas.so
    link_as "$cublaslt" libcublasLt.so
    libdirs+=("$(dirname "$cublas")" "$(dirname "$cublaslt")")
else
    say "WARNING: no libcublas.so.12/13 with libcublasLt found under ${roots[*]}"
fi
if [ -n "$nvrtc" ]; then
    link_as "$nvrtc" libnvrtc.so
    # libnvrtc loads its builtins library by name from beside itself or the library path.
    for b in "$(dirname "$nvrtc")"/libnvrtc-builtins.so*; do
        [ -e "$b" ] && ln -sfn "$b" "$work/cudalib/${b##*/}"
    done
    libdirs+=("$(dirname "$nvrtc")")
    # The builtins library's name carries NVRTC's major.minor version; PTX from an NVRTC newer
    # than the driver's CUDA version does not load (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
    nvrtc_version=$(find "$(dirname "$nvrtc")" -maxdepth 1 -name 'libnvrtc-builtins.so.*' -printf '%f\n' |
        sed -n 's/^libnvrtc-builtins\.so\.\([0-9]*\.[0-9]*\).*/\1/p' | head -1)
    if [ -n "$driver_cuda" ] && [ -n "$nvrtc_version" ] &&
        awk -v a="$nvrtc_version" -v b="$driver_cuda" 'BEGIN { split(a, x, "."); split(b, y, ".");
            exit !(x[1] * 1000 + x[2] > y[1] * 1000 + y[2]) }'; then
        say "WARNING: NVRTC $nvrtc_version is newer than the driver's CUDA $driver_cuda: its PTX may not load"
    fi
else
    say "WARNING: no libnvrtc.so.12/13 found under ${roots[*]}"
fi
libcuda=$($ldconfig -p 2>/dev/null | awk '$1 == "libcuda.so.1" { print $NF; exit }')
[ -n "$libcuda" ] || libcuda=$(printf '%s\n' "${found[@]}" | grep '/libcuda\.so\.1$' | head -1 || true)
[ -z "$libcuda" ] || libdirs+=("$(dirname "$libcuda")")
# The bundle first (its glibc must win), then the links, the libraries' own directories, the
# driver's, and whatever the machine's LD_LIBRARY_PATH names.
libpath=$root/bundle/lib:$work/cudalib
for d in "${libdirs[@]}" "${ldp[@]}"; do
    [ -n "$d" ] && case ":$libpath:" in *":$d:"*) ;; *) libpath=$libpath:$d ;; esac
done
{
    echo "== CUDA libraries (driver CUDA ${driver_cuda:-unknown})"
    echo "libcuda.so.1: ${libcuda:-not found by ldconfig or search}"
    echo "libcublas:    ${cublas:-not found}"
    echo "libcublasLt:  ${cublaslt:-not found}"
    echo "libnvrtc:     ${nvrtc:-not found} (version ${nvrtc_version:-unknown})"
    echo "library path: $libpath"
} | tee -a "$OUT/system.txt"

# A wrapper per bundled program: the bundled loader with the bundled glibc; the machine's
# LD_LIBRARY_PATH is not changed, so system tools and Python started by the programs are unaffected.
for prog in bundle/bin/*; do
    name=${prog##*/}
    cat >"$work/bin/$name" <<EOF
#!/bin/sh
exec "$root/bundle/lib/ld-linux-x86-64.so.2" --library-path "$libpath" "$root/bundle/bin/$name" "\$@"
EOF
    chmod +x "$work/bin/$name"
done
"$work/bin/shardsage" --version || die "the bundled shardsage does not start (see above)"

# Single-process runs: no launcher variables may make the programs look for MPI ranks.
unset OMPI_COMM_WORLD_SIZE OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_LOCAL_RANK OMPI_COMM_WORLD_LOCAL_SIZE \
    PMI_SIZE PMI_RANK PMIX_SIZE PMIX_RANK MPI_LOCALRANKID MPI_LOCALNRANKS SLURM_LOCALID SLURM_NTASKS_PER_NODE
export BENCH_REPO_ROOT=$root SHARDSAGE_BIN=$work/bin/shardsage BENCH_COMMAND="scripts/gpu-run.sh $*"
BENCH_COMMIT=$(sed -n 's/^commit: //p' bundle/BUNDLE_INFO)
export BENCH_COMMIT RUST_LOG=${RUST_LOG:-info} RUST_BACKTRACE=${RUST_BACKTRACE:-1}

# Which libraries a GPU process really loads (one small GPU test under LD_DEBUG; the loader is
# called directly so that the wrapper's shell does not log its own libraries).
timeout 120 env LD_DEBUG=libs "$root/bundle/lib/ld-linux-x86-64.so.2" --library-path "$libpath" \
    "$root/bundle/bin/cuda_backend" device_hash_is_bit_identical_to_the_cpu_hash --exact \
    2>"$work/ld-debug.log" >/dev/null || true
{
    echo "== libraries a GPU test process loaded"
    awk '/calling init:/ { print $NF }' "$work/ld-debug.log" | sort -u
} | tee -a "$OUT/system.txt"

# ---- phases ----
printf 'phase\tstatus\tseconds\n' >"$OUT/phases.tsv"
failures=0
run_phase() { # NAME LIMIT LOG CMD...: CMD under `timeout` (LIMIT, or less if the budget ends first)
    local name=$1 limit=$2 log=$3 left rc t0 status
    shift 3
    left=$((budget - (SECONDS - start)))
    if ((left < 30)); then
        say "== $name: SKIPPED, ${left}s of the ${budget}s budget left (run it in another call)"
        printf '%s\tskipped (budget)\t0\n' "$name" >>"$OUT/phases.tsv"
        failures=$((failures + 1))
        return 1
    fi
    ((limit <= left)) || limit=$left
    say "== $name (limit ${limit}s): $*"
    t0=$SECONDS
    set +e
    timeout --kill-after=15 "$limit" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    case $rc in
    0) status=ok ;;
    124 | 137) status="timed out after ${limit}s" ;;
    *) status="failed (exit $rc)" ;;
    esac
    say "== $name: $status in $((SECONDS - t0))s"
    printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - t0))" >>"$OUT/phases.tsv"
    [ "$rc" = 0 ] || { failures=$((failures + 1)); return 1; }
}

data=$root/bench/.data/gpu
dname=cit-$nodes-n$num_neg
dataset=$data/$dname.h5
parts=$data/$dname-p1
info=$data/$dname.json
mkdir -p "$data"
write_info() {
    printf '{"nodes": %s, "num_neg": %s, "seed": 0, "generate_s": %s, "partition_s": %s, "dataset_bytes": %s, "made_on_cores": %s}\n' \
        "$nodes" "$num_neg" "$(cat "$data/$dname.generate_s" 2>/dev/null || echo null)" \
        "$(cat "$data/$dname.partition_s" 2>/dev/null || echo null)" \
        "$(stat -c %s "$dataset" 2>/dev/null || echo null)" "$(nproc)" >"$info"
}
ensure_dataset() { # the generated graph (kept; its generation time recorded)
    [ -f "$dataset" ] && return 0
    local t0=$SECONDS
    run_phase generate 300 "$OUT/logs/generate.log" "$work/bin/shardsage" generate \
        --nodes "$nodes" --num-neg "$num_neg" --seed 0 --out "$dataset" || return 1
    echo $((SECONDS - t0)) >"$data/$dname.generate_s"
    write_info
}
ensure_parts() { # one part of it, for `shardsage train`
    ensure_dataset || return 1
    [ -f "$parts/manifest.json" ] && return 0
    local t0=$SECONDS
    run_phase partition 300 "$OUT/logs/partition.log" "$work/bin/shardsage" partition \
        --dataset "$dataset" --parts 1 --out-dir "$parts" || return 1
    echo $((SECONDS - t0)) >"$data/$dname.partition_s"
    write_info
}

if [ -n "${want[tests]:-}" ]; then
    if run_phase tests 180 "$OUT/gpu-tests.log" "$work/bin/cuda_backend" --nocapture --test-threads=1; then
        # On a GPU machine a skipped GPU test means the backend could not start: a failure.
        if grep -q 'SKIPPED [a-z_0-9]*:' "$OUT/gpu-tests.log"; then
            say "tests: $(grep -c 'SKIPPED [a-z_0-9]*:' "$OUT/gpu-tests.log") GPU tests SKIPPED, e.g. $(grep -m1 -o 'SKIPPED [a-z_0-9]*:.*' "$OUT/gpu-tests.log")"
            printf 'tests (GPU ran?)\tfailed: GPU tests skipped\t0\n' >>"$OUT/phases.tsv"
            failures=$((failures + 1))
        fi
    fi
fi
if [ -n "${want[agg]:-}" ]; then
    run_phase agg 180 "$OUT/logs/agg.log" "$work/bin/bench_gpu_agg" --table-mib "$table_mib" || true
fi
if [ -n "${want[sampler]:-}" ]; then
    if ensure_dataset; then
        write_info
        run_phase sampler 240 "$OUT/logs/sampler.log" "$work/bin/bench_gpu_sampler" \
            --dataset "$dataset" --reps 3 --data-info "$info" || true
    fi
fi
if [ -n "${want[train]:-}${want[pyg]:-}" ]; then
    if ensure_parts; then
        write_info
        args=(--data "$parts" --dataset "$dataset" --steps "$steps" --data-info "$info")
        [ -n "${want[pyg]:-}" ] && args+=(--pyg "$python")
        [ -n "${want[train]:-}" ] || args+=(--no-cpu)
        name=train
        [ -n "${want[train]:-}" ] || name=pyg
        [ -n "${want[train]:-}" ] && [ -n "${want[pyg]:-}" ] && name=train+pyg
        left=$((budget - (SECONDS - start)))
        # The program's own budget ends before the phase's limit, so it still writes what it has.
        run_phase "$name" 600 "$OUT/logs/$name.log" "$work/bin/bench_gpu_train" "${args[@]}" \
            --budget-s $((left > 50 ? left - 20 : 30)) --run-timeout 300 || true
    fi
fi

# ---- results ----
[ -z "${want[sampler]:-}${want[train]:-}${want[pyg]:-}" ] || cp "$info" "$OUT/data-info.json" 2>/dev/null || true
# The training runs' own logs and metrics, for reading what happened.
for f in bench/runs/gpu-*.log bench/runs/gpu-*/metrics.jsonl bench/runs/gpu-*/config.toml; do
    [ -f "$f" ] && [ "$f" -nt "$work/.start" ] || continue
    mkdir -p "$OUT/runs"
    cp "$f" "$OUT/runs/$(echo "${f#bench/runs/}" | tr / -)"
done
mapfile -t fresh < <(find bench/results -maxdepth 1 -name 'gpu-*' -newer "$work/.start" | sort)
for f in "${fresh[@]}"; do cp "$f" "$OUT/results/"; done
# The sections of bench/RESULTS.md this run refreshed (those whose JSON it wrote).
"$python" - "$OUT/RESULTS-gpu.md" "${fresh[@]}" <<'EOF' || say "could not extract the RESULTS.md sections"
import os, re, sys
out, files = sys.argv[1], sys.argv[2:]
text = open("bench/RESULTS.md").read()
parts = []
for f in files:
    base = os.path.basename(f)
    if not base.endswith(".json"):
        continue
    name = "bench-" + base[:-5]
    m = re.search(r"<!-- %s:begin -->.*?<!-- %s:end -->" % (re.escape(name), re.escape(name)), text, re.S)
    if m:
        parts.append(m.group(0))
open(out, "w").write("\n\n".join(parts) + ("\n" if parts else ""))
EOF
echo
say "phases ($((SECONDS - start))s of ${budget}s):"
column -t -s $'\t' "$OUT/phases.tsv" 2>/dev/null || cat "$OUT/phases.tsv"
say "results in $OUT: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
((failures == 0)) || { say "$failures phase(s) did not succeed; see the logs above and in $OUT/logs"; exit 1; }
