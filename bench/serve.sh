#!/usr/bin/env bash
# `make bench-serve`: `shardsage serve` under load on a generated citation graph (default the
# 200k-paper one; NODES=2927963 NAME=citation2-size for ogbl-citation2's size), 2 threads.
# Trains a checkpoint once (STEPS steps of the OGB reference model, kept in bench/runs/serve/),
# writes its embeddings with `embed`, then for each start-up (embeddings computed from the
# checkpoint at start-up; read from the embeddings file) measures the time to ready and the
# RSS at ready, and runs bench_serve's load: known-paper top-10 at 1 and 32 clients, new papers,
# recall@10 of the fast path against exhaustive scoring. Results in bench/results/serve-*.json
# and bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${NODES:-200000}
name=${NAME:-cit-200k}
steps=${STEPS:-300}
threads=${THREADS:-2}
port=${PORT:-18123}
bin=target/release/shardsage
load=target/release/examples/bench_serve
data=bench/.data/$name.h5
parts=bench/.data/$name-p1
run=bench/runs/serve/$name
mkdir -p bench/.data "$run"
[ -f "$data" ] || "$bin" generate --nodes "$nodes" --out "$data"
[ -f "$parts/manifest.json" ] || "$bin" partition --dataset "$data" --parts 1 --out-dir "$parts"
ckpt=$run/checkpoints/best.ssck
[ -f "$ckpt" ] || "$bin" train --data "$parts" --run-dir "$run" --epochs 1 \
  --steps-per-epoch "$steps" --threads "$threads" --eval-every 0
[ -f "$run/embeddings.h5" ] || "$bin" embed --data "$parts" --checkpoint "$ckpt" \
  --out "$run/embeddings.h5" --threads "$threads"
if curl -s "http://127.0.0.1:$port/" > /dev/null; then
  echo "bench/serve.sh: port $port is taken (another server?); set PORT" >&2
  exit 1
fi
pid=
trap '[ -n "$pid" ] && kill "$pid" 2> /dev/null || true' EXIT
for mode in checkpoint file; do
  extra=()
  [ "$mode" = file ] && extra=(--embeddings "$run/embeddings.h5")
  started=$(date +%s.%N)
  "$bin" serve --data "$parts" --checkpoint "$ckpt" "${extra[@]}" --threads "$threads" \
    --address "127.0.0.1:$port" > "$run/serve-$mode.log" 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/v2/health/ready" > /dev/null; do
    kill -0 "$pid" 2> /dev/null || { cat "$run/serve-$mode.log"; exit 1; }
    sleep 0.2
  done
  ready=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$started" "$(date +%s.%N)")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  BENCH_COMMAND="bench/serve.sh (NODES=$nodes)" "$load" --url "127.0.0.1:$port" --data "$parts" \
    --out "serve-$name-$mode" --label "$name, embeddings from the $mode" --ready-s "$ready" \
    --ready-rss-kib "$rss" "$@"
  kill -TERM "$pid"
  wait "$pid"
  pid=
done
