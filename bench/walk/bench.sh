#!/usr/bin/env bash
# `make bench-node2vec`: shardsage node2vec and PecanPy + gensim back to back on the same graph,
# hyper-parameters and threads; writes bench/results/node2vec-<graph>.json with both runs, the
# machine's CPU and caches.
#
#   bench/walk/bench.sh [DATASET.h5] [-- extra flags for both, e.g. --p 4 --q 0.25]
# The dataset (default bench/.data/cit-HepTh.h5, made by `make bench-pyg`) is cut into one part.
set -euo pipefail
cd "$(dirname "$0")/../.."
dataset=${1:-bench/.data/cit-HepTh.h5}
shift || true
[ "${1:-}" = "--" ] && shift
extra=("$@")
threads=${THREADS:-2}
name=$(basename "$dataset" .h5)
parts=bench/.data/$name-p1
out=bench/results/node2vec-$name${extra:+-$(echo "${extra[*]}" | tr -d ' -')}.json
bin=target/release/shardsage
[ -f "$parts/manifest.json" ] || "$bin" partition --dataset "$dataset" --parts 1 --out-dir "$parts"
bench/walk/setup.sh
mkdir -p bench/runs/node2vec bench/results
ours=bench/runs/node2vec/$name-shardsage.json
theirs=bench/runs/node2vec/$name-pecanpy-gensim.json
"$bin" node2vec --data "$parts" --out bench/runs/node2vec/$name.h5 --threads "$threads" \
  --json "$ours" "${extra[@]}"
bench/walk/.venv/bin/python bench/walk/rival.py --data "$parts" --threads "$threads" \
  --out "$theirs" "${extra[@]}"
python3 - "$ours" "$theirs" "$out" <<'PY'
import json, subprocess, sys
ours, theirs = (json.load(open(p)) for p in sys.argv[1:3])
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
keep = ("Model name", "L2 cache", "L3 cache", "CPU(s)")
machine = {l.split(":")[0].strip(): l.split(":", 1)[1].strip() for l in cpu.splitlines()
           if l.split(":")[0].strip() in keep}
json.dump({"machine": machine, "shardsage": ours, "pecanpy_gensim": theirs},
          open(sys.argv[3], "w"), indent=1)
for who, r in (("shardsage", ours), ("pecanpy+gensim", theirs)):
    secs = r.get("train_s", r.get("wall_s"))
    m = r["metrics"]
    print(f"{who:15} {secs:7.1f} s  valid MRR {m['valid']['mrr']:.4f}  test MRR {m['test']['mrr']:.4f}")
print("wrote", sys.argv[3])
PY
