#!/usr/bin/env bash
# `make gpu-bundle`: packs what a session with a lent GPU machine runs into gpu-bundle.tar.xz.
#
# The GPU machines have no Rust toolchain, no registry access and an unknown distribution and
# glibc. So this builds here, in release mode, the `shardsage` binary, the `cuda_backend` test
# binary and the GPU benchmark programs, strips them, and copies every shared library they load
# next to them, glibc and its loader included. There they start as
#   bundle/lib/ld-linux-x86-64.so.2 --library-path bundle/lib:<CUDA dirs> bundle/bin/PROG
# which never touches the machine's own glibc (scripts/gpu-run.sh does this). Not bundled: the
# driver (libcuda, which must match the kernel module) and NVRTC/cuBLAS (the machine's own CUDA
# libraries are used; the NVRTC wheel alone is ~110 MB).
#
# Then it checks that the bundled programs start with ONLY the bundle on the library path (and
# every library really comes from it), and runs a tiny generate/partition/train on the CPU with
# them. Output: gpu-bundle.tar.xz at the repository root (git-ignored), under 60 MiB.
#
# Environment: CARGO_TARGET_DIR (default ./target), GPU_BUNDLE_SKIP_CHECK=1 skips the CPU run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/env.sh
source scripts/env.sh
target=${CARGO_TARGET_DIR:-$root/target}
stage=$target/gpu-bundle
bundle=$stage/bundle
tarball=$root/gpu-bundle.tar.xz
max_bytes=$((60 * 1024 * 1024))
examples=(bench_gpu_agg bench_gpu_sampler bench_gpu_train)

die() { echo "gpu-bundle: $*" >&2; exit 1; }
say() { echo "gpu-bundle: $*"; }

[ "$(uname -m)" = x86_64 ] || die "the bundle is for x86-64 GPU machines; this is $(uname -m)"
for tool in cargo ldd strip python3 xz tar; do
    command -v "$tool" >/dev/null || die "$tool not found (run scripts/setup.sh)"
done

say "building release binaries (shardsage, ${examples[*]})"
ex_args=()
for e in "${examples[@]}"; do ex_args+=(--example "$e"); done
cargo build --release --quiet --bin shardsage "${ex_args[@]}"

say "building the cuda_backend test binary"
# The test executable's name carries a hash: take it from cargo's own report.
test_exe=$(cargo test --release --quiet --no-run --test cuda_backend --message-format=json |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda_backend" \
            and m["profile"]["test"] and m.get("executable"):
        print(m["executable"])
')
if [ -z "$test_exe" ] || [ ! -x "$test_exe" ]; then
    die "cargo did not report the cuda_backend test executable"
fi

rm -rf "$stage"
mkdir -p "$bundle/bin" "$bundle/lib"
cp "$target/release/shardsage" "$bundle/bin/"
cp "$test_exe" "$bundle/bin/cuda_backend"
for e in "${examples[@]}"; do cp "$target/release/examples/$e" "$bundle/bin/"; done
# Debug info off, symbol names kept: panics there still print readable backtraces.
strip --strip-debug "$bundle"/bin/*

# Every library the programs need (ldd lists the whole closure), except the driver's.
declare -A libs=()
for prog in "$bundle"/bin/*; do
    while read -r name path; do
        libs[$name]=$path
    done < <(ldd "$prog" | awk '
        /not found/ { print "MISSING " $1; next }
        $2 == "=>" && $3 ~ /^\// { print $1, $3; next }
        $1 ~ /^\// { n = $1; sub(/.*\//, "", n); print n, $1 }')
done
[ -z "${libs[MISSING]:-}" ] || die "ldd reports a missing library: ${libs[MISSING]} (run scripts/setup.sh)"
# glibc's pieces and the C++ runtime are added even where our programs do not list them: the
# machine's CUDA libraries (dlopened there) need them, and the machine's own copies would not
# match the bundled libc.
libdir=$(dirname "$(ldd "$bundle/bin/shardsage" | awk '$1 == "libc.so.6" { print $3 }')")
for name in libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libresolv.so.2 \
    libutil.so.1 libstdc++.so.6 libgcc_s.so.1; do
    [ -n "${libs[$name]:-}" ] && continue
    [ -e "$libdir/$name" ] || die "$libdir/$name not found"
    libs[$name]=$libdir/$name
done
loader=
for name in "${!libs[@]}"; do
    case $name in
    libcuda.so* | libnvidia* | libnvrtc* | libcublas*) continue ;; # the machine's own
    ld-linux-x86-64.so.2) loader=${libs[$name]} ;;
    esac
    cp -L "${libs[$name]}" "$bundle/lib/$name"
done
[ -n "$loader" ] || die "ldd did not name the dynamic loader"
chmod +x "$bundle/lib/ld-linux-x86-64.so.2"

glibc=$(ldd --version | head -1 | awk '{ print $NF }')
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- . ':!bench/results' ':!bench/RESULTS.md' 2>/dev/null || commit="$commit (with uncommitted changes)"
cat >"$bundle/BUNDLE_INFO" <<EOF
commit: $commit
built: $(date -u '+%Y-%m-%d %H:%M UTC') on $(. /etc/os-release && echo "$PRETTY_NAME"), glibc $glibc
programs: $(cd "$bundle/bin" && echo *)
libraries: $(cd "$bundle/lib" && echo *)
EOF

# ---- checks with only the bundle on the library path ----
run_bundled() { # PROG ARGS...: a bundled program in an empty environment
    local prog=$1
    shift
    env -i PATH=/usr/bin:/bin HOME="$stage" RUST_LOG="${RUST_LOG:-warn}" \
        "$bundle/lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$bundle/lib" \
        "$bundle/bin/$prog" "$@"
}
say "checking that every program starts with the bundle alone"
for prog in shardsage "${examples[@]}"; do
    # LD_DEBUG names each library as it is initialised: all must come from the bundle.
    stray=$(env -i PATH=/usr/bin:/bin LD_DEBUG=libs \
        "$bundle/lib/ld-linux-x86-64.so.2" --inhibit-cache --library-path "$bundle/lib" \
        "$bundle/bin/$prog" --help 2>&1 >/dev/null |
        awk '/calling init:/ { print $NF }' | grep -v "^$bundle/lib/" || true)
    [ -z "$stray" ] || die "$prog loads libraries from outside the bundle: $stray"
done
run_bundled shardsage --help >/dev/null || die "bundled shardsage --help failed"
run_bundled cuda_backend --list >/dev/null || die "bundled cuda_backend --list failed"

if [ "${GPU_BUNDLE_SKIP_CHECK:-0}" != 1 ]; then
    say "tiny generate + partition + train (--device auto: CPU here) with the bundled binary"
    work=$stage/check
    rm -rf "$work"
    mkdir -p "$work"
    run_bundled shardsage generate --nodes 3000 --num-neg 20 --out "$work/d.h5" >"$work/log" 2>&1 ||
        { cat "$work/log"; die "bundled generate failed"; }
    run_bundled shardsage partition --dataset "$work/d.h5" --parts 1 --out-dir "$work/parts" >>"$work/log" 2>&1 ||
        { cat "$work/log"; die "bundled partition failed"; }
    RUST_LOG=info run_bundled shardsage train --data "$work/parts" --run-dir "$work/run" --device auto \
        --epochs 1 --steps-per-epoch 2 --batch-size 256 --hidden 32 >>"$work/log" 2>&1 ||
        { cat "$work/log"; die "bundled train failed"; }
    grep -q '"kind":"step"' "$work/run/metrics.jsonl" || die "bundled train wrote no step records"
    grep -o 'device: .*' "$work/log" | head -1 | sed 's/^/gpu-bundle:   /'
    # Without a GPU the benchmark programs must stop with the reason, not crash.
    if run_bundled bench_gpu_agg --reps 1 >"$work/agg.log" 2>&1; then
        nvidia-smi >/dev/null 2>&1 || die "bench_gpu_agg succeeded without a GPU?"
    else
        grep -q 'no CUDA driver\|CUDA' "$work/agg.log" || { cat "$work/agg.log"; die "bench_gpu_agg failed without naming CUDA"; }
        say "  without a GPU bench_gpu_agg stops with: $(grep -m1 -i 'cuda' "$work/agg.log")"
    fi
    rm -rf "$work"
fi

say "packing"
rm -f "$tarball"
tar -C "$stage" -cf - bundle | xz -T0 -6 >"$tarball.tmp"
mv "$tarball.tmp" "$tarball"
size=$(stat -c %s "$tarball")
((size < max_bytes)) || die "$tarball is $size bytes, over the 60 MiB limit"
say "bundle contents: $(du -sh "$bundle" | cut -f1) unpacked; $(find "$bundle/lib" -type f | wc -l) libraries"
say "wrote $tarball: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }') MiB)"
