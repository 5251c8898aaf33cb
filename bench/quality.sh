#!/usr/bin/env bash
# Model quality on real and generated graphs (issue figures; not a timed test):
#   1. node classification on Cora with the standard Planetoid split (test accuracy, 3 seeds),
#   2. link prediction on Cora (random split, 100 fixed negatives) — MRR,
#   3. link prediction on a generated citation graph with OGB's reference config — MRR,
#      epoch time and throughput.
# Usage: bench/quality.sh [OUT_DIR]   (needs target/release/shardsage; uses ../shared/data)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
B=target/release/shardsage
out=${1:-bench/.quality}
shared=${SHARED_DATA:-../shared/data}
rm -rf "$out"; mkdir -p "$out"
log() { echo "== $*"; }

log "Cora node classification (features row-normalised as Planetoid's loaders do; 2 layers, hidden 64, fan-outs 25,10, dropout 0.6 on the input and after layer 1, lr 0.01, weight decay 5e-4, 200 epochs)"
$B ingest --edges "$shared/cora/edges.tsv" --undirected --features "$shared/cora/features.npy" \
  --labels "$shared/cora/labels.npy" --train-idx "$shared/cora/train_idx.npy" \
  --valid-idx "$shared/cora/val_idx.npy" --test-idx "$shared/cora/test_idx.npy" \
  --row-normalize-features --name cora --num-neg 100 --seed 1 --out "$out/cora.h5"
$B partition --dataset "$out/cora.h5" --parts 1 --out-dir "$out/cora-parts" >/dev/null
for seed in 1 2 3; do
  $B train --data "$out/cora-parts" --run-dir "$out/cora-nc-$seed" --task node-classification \
    --layers 2 --fanouts 25,10 --hidden 64 --dropout 0.6 --input-dropout 0.6 --lr 0.01 \
    --weight-decay 0.0005 --batch-size 140 --epochs 200 --eval-every 1 --seed $seed 2>/dev/null | tail -2
  $B eval --data "$out/cora-parts" --checkpoint "$out/cora-nc-$seed/checkpoints/best.ssck" \
    --split test --json "$out/cora-nc-$seed/test.json" 2>/dev/null | grep -E '"accuracy"|"macro_f1"'
done

log "Cora link prediction (random split, 100 negatives; 2 layers, hidden 128)"
$B ingest --edges "$shared/cora/edges.tsv" --undirected --features "$shared/cora/features.npy" \
  --name cora-lp --num-neg 100 --seed 1 --out "$out/cora-lp.h5" | tail -1
$B partition --dataset "$out/cora-lp.h5" --parts 1 --out-dir "$out/cora-lp-parts" >/dev/null
$B train --data "$out/cora-lp-parts" --run-dir "$out/cora-lp" --layers 2 --fanouts 15,10 \
  --hidden 128 --batch-size 512 --steps-per-epoch 0 --epochs 30 --eval-every 5 --lr 0.005 2>/dev/null | tail -3
$B eval --data "$out/cora-lp-parts" --checkpoint "$out/cora-lp/checkpoints/best.ssck" --split test 2>/dev/null | grep -E '"mrr"|"hits@10"'

nodes=${QUALITY_NODES:-100000}
log "generated citation graph, $nodes papers, OGB reference config (3 layers, hidden 256, 15,10,5, batch 512, lr 0.0005), 1000 negatives"
$B generate --nodes "$nodes" --seed 1 --out "$out/gen.h5" | tail -1
$B partition --dataset "$out/gen.h5" --parts 2 --method ldg --out-dir "$out/gen-parts" | tail -1
mpirun -np 2 $B train --data "$out/gen-parts" --run-dir "$out/gen" --epochs "${QUALITY_EPOCHS:-4}" \
  --steps-per-epoch "${QUALITY_STEPS:-100}" 2>&1 | grep -E "epoch .* done|eval valid|final|best|trained"
mpirun -np 2 $B eval --data "$out/gen-parts" --checkpoint "$out/gen/checkpoints/best.ssck" --split test 2>/dev/null | grep -E '"mrr"|"hits@10"|"auc"'
