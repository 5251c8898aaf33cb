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
runs=()
for seed in ${SEEDS:-0 1 2}; do
  ours=bench/runs/node2vec/$name-s$seed-shardsage.json
  theirs=bench/runs/node2vec/$name-s$seed-pecanpy-gensim.json
  # Back to back, the same seed, threads and settings; both embeddings scored by rival.py too.
  "$bin" node2vec --data "$parts" --out bench/runs/node2vec/$name-s$seed.h5 --threads "$threads" \
    --seed "$seed" --json "$ours" "${extra[@]}"
  bench/walk/.venv/bin/python bench/walk/rival.py --data "$parts" --threads "$threads" \
    --seed "$seed" --out "$theirs" "${extra[@]}"
  bench/walk/.venv/bin/python bench/walk/rival.py --data "$parts" \
    --score-embeddings bench/runs/node2vec/$name-s$seed.h5 --out "$ours.scored" > /dev/null
  runs+=("$ours" "$theirs" "$ours.scored")
done
python3 - "$out" "${runs[@]}" <<'PY'
import json, statistics, subprocess, sys
out, files = sys.argv[1], sys.argv[2:]
seeds = [files[i:i + 3] for i in range(0, len(files), 3)]
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
keep = ("Model name", "L2 cache", "L3 cache", "CPU(s)")
machine = {l.split(":")[0].strip(): l.split(":", 1)[1].strip() for l in cpu.splitlines()
           if l.split(":")[0].strip() in keep}
runs = [{"shardsage": json.load(open(a)), "pecanpy_gensim": json.load(open(b)),
         "shardsage_scored_by_rival": json.load(open(c))["metrics"]} for a, b, c in seeds]
json.dump({"machine": machine, "runs": runs}, open(out, "w"), indent=1)

def stat(xs):
    return f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs) if len(xs) > 1 else 0:.4f}"

rows = [("shardsage", "shardsage", lambda r: r["train_s"], lambda r: r["tokens_per_s"]),
        ("pecanpy+gensim", "pecanpy_gensim", lambda r: r["walk_s"] + r["sgns_s"],
         lambda r: r["sgns_tokens_per_s"])]
print(f"{len(runs)} seeds on {machine.get('Model name')}, L3 {machine.get('L3 cache')}")
for label, key, secs, tps in rows:
    rs = [r[key] for r in runs]
    line = f"{label:15} walks+SGNS {statistics.mean(secs(r) for r in rs):7.1f} s  tokens/s {statistics.mean(tps(r) for r in rs):9.0f}"
    m = [r["metrics"] for r in rs]
    for split in ("valid", "test"):
        if split in m[0]:
            line += f"  {split} MRR {stat([x[split]['mrr'] for x in m])}"
    for split in ("valid_nodeclass", "test_nodeclass"):
        if split in m[0]:
            line += f"  {split} macro-F1 {stat([x[split]['macro_f1'] for x in m])}"
    line += f"  peak RSS {max(r.get('peak_rss_mib', 0) for r in rs):.0f} MiB"
    print(line)
print("wrote", out)
PY
