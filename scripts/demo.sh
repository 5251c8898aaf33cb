#!/usr/bin/env bash
# The demo: generate a citation graph, partition it, and summarise it.
set -euo pipefail
bin=$1; out=$2
rm -rf "$out"; mkdir -p "$out"
"$bin" generate --nodes 20000 --seed 1 --dataset "$out/dataset.h5"
"$bin" partition --dataset "$out/dataset.h5" --parts 2 --method ldg --out "$out/parts"
"$bin" inspect "$out/parts"
