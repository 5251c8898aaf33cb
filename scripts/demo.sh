#!/usr/bin/env bash
# The demo: the whole path on a generated citation graph — generate, partition into 2 parts,
# train with `mpirun -np 2`, evaluate the best checkpoint on the test split, and list the most
# likely missing citations of one paper.
set -euo pipefail
bin=$1; out=$2
nodes=${DEMO_NODES:-20000}
rm -rf "$out"; mkdir -p "$out"
echo "== generate: a citation graph of $nodes papers"
"$bin" generate --nodes "$nodes" --seed 1 --num-neg 100 --out "$out/dataset.h5"
echo "== partition into 2 parts (locality-aware LDG)"
"$bin" partition --dataset "$out/dataset.h5" --parts 2 --method ldg --out-dir "$out/parts"
"$bin" inspect "$out/parts"
echo "== train on 2 MPI ranks"
mpirun -np 2 "$bin" train --data "$out/parts" --run-dir "$out/run" \
  --epochs "${DEMO_EPOCHS:-3}" --steps-per-epoch "${DEMO_STEPS:-60}" --hidden 128 --batch-size 512
echo "== evaluate the best checkpoint on the test split (2 ranks)"
mpirun -np 2 "$bin" eval --data "$out/parts" --checkpoint "$out/run/checkpoints/best.ssck" --split test
echo "== most likely missing citations of paper 19999"
"$bin" predict --data "$out/parts" --checkpoint "$out/run/checkpoints/best.ssck" --node 19999 --top-k 5
"$bin" plot "$out/run" --out "$out/run/curves.svg"
echo "== done: metrics in $out/run/metrics.jsonl, TensorBoard events in $out/run/tb, curves in $out/run/curves.svg"
