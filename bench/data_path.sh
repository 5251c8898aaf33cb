#!/usr/bin/env bash
# The graph data path at a given size: `generate --out` then `partition` with every method,
# each under /usr/bin/time -v, printing wall time, peak RSS and (for partition) the edge cut and
# training-edge balance.
#
# usage: bench/data_path.sh [NODES] [PARTS] [WORKDIR]
#   NODES    papers to generate (default 2900000, the size of ogbl-citation2)
#   PARTS    parts per partitioning (default 4)
#   WORKDIR  where the dataset and part directories go (default bench/work; removed at the end
#            unless KEEP=1)
# The binary is target/release/shardsage (built first if missing); set SHARDSAGE to use another.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${1:-2900000}
PARTS=${2:-4}
WORK=${3:-bench/work}
BIN=${SHARDSAGE:-target/release/shardsage}
[ -x "$BIN" ] || cargo build --release --quiet
mkdir -p "$WORK"
export RUST_LOG=${RUST_LOG:-warn}

# Runs "$@" under /usr/bin/time -v; prints "<label> seconds <s> peak_rss_mib <m>".
timed() {
    local label=$1 log="$WORK/$1.time" out="$WORK/$1.out"
    shift
    /usr/bin/time -v -o "$log" "$@" >"$out" 2>&1 || { cat "$out" "$log" >&2; exit 1; }
    local wall rss
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log" |
        awk -F: '{ if (NF == 3) print $1*3600 + $2*60 + $3; else print $1*60 + $2 }')
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2 / 1024}' "$log")
    printf '%-22s seconds %8.1f  peak_rss_mib %7s\n' "$label" "$wall" "$rss"
}

echo "nodes $NODES, parts $PARTS, $(nproc) cores, binary $BIN"
timed generate "$BIN" generate --nodes "$NODES" --seed 0 --out "$WORK/dataset.h5"
echo "  $(grep -o 'wrote .*' "$WORK/generate.out" | head -1 | cut -c1-120)"
for method in random range range-time ldg; do
    args=(--method "$method")
    [ "$method" = range-time ] && args=(--method range --by time)
    timed "partition-$method" "$BIN" partition --dataset "$WORK/dataset.h5" --parts "$PARTS" \
        "${args[@]}" --out-dir "$WORK/parts-$method"
    summary=$(grep '^method ' "$WORK/partition-$method.out")
    cut=$(sed -E 's/.*edge_cut ([0-9.]+).*/\1/' <<<"$summary")
    train=$(sed -E 's/.*train_edges ([0-9.]+).*/\1/' <<<"$summary")
    nodes=$(sed -E 's/.*nodes ([0-9.]+) csr.*/\1/' <<<"$summary")
    size=$(du -sh "$WORK/parts-$method" | cut -f1)
    echo "  edge_cut $cut  balance(max/mean) train_edges $train nodes $nodes  size $size"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK/parts-$method"
done
echo "dataset size $(du -sh "$WORK/dataset.h5" | cut -f1)"
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
