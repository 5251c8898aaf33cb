#!/usr/bin/env bash
# `make bench-node2vec-scale`: node2vec end to end on the generated graph of ogbl-citation2's size
# (2,927,963 papers, ~30M citations): walks, skip-gram, the embeddings file and the built-in
# evaluation, on one rank with THREADS threads (default 2), the issue's settings (10 walks x 40,
# dim 128, window 10, 5 negatives, 1 epoch). Writes bench/results/node2vec-citation2-size.json
# with the wall time, the process's peak RSS, the run's own figures and the machine.
#
#   bench/walk/scale.sh [extra node2vec flags, e.g. --walks-per-node 2]
# The dataset is made once (bench/.data/citation2-size.h5, as `make bench-sampler` makes it).
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${THREADS:-2}
bin=target/release/shardsage
data=bench/.data/citation2-size.h5
parts=bench/.data/citation2-size-p1
mkdir -p bench/.data bench/runs/node2vec bench/results
[ -f "$data" ] || "$bin" generate --nodes 2927963 --out "$data"
[ -f "$parts/manifest.json" ] || "$bin" partition --dataset "$data" --parts 1 --out-dir "$parts"
run=bench/runs/node2vec/citation2-size
rm -rf "$run"
mkdir -p "$run"
started=$(date +%s.%N)
"$bin" node2vec --data "$parts" --out "$run/embeddings.h5" \
  --threads "$threads" --run-dir "$run" --json "$run/summary.json" "$@"
ended=$(date +%s.%N)
python3 - "$run" "$started" "$ended" "$*" <<'PY'
import json, subprocess, sys
run, started, ended, extra = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
keep = ("Model name", "L2 cache", "L3 cache", "CPU(s)")
machine = {l.split(":")[0].strip(): l.split(":", 1)[1].strip() for l in cpu.splitlines()
           if l.split(":")[0].strip() in keep}
summary = json.load(open(f"{run}/summary.json"))
peak_kib = summary["peak_rss_mib"] * 1024
out = {"machine": machine, "command": f"bench/walk/scale.sh {extra}".strip(),
       "wall_s": ended - started, "peak_rss_gib": peak_kib / 2**20, "node2vec": summary}
json.dump(out, open("bench/results/node2vec-citation2-size.json", "w"), indent=1)
m = summary["metrics"]
print(f"{summary['num_nodes']} nodes on {machine.get('Model name')} ({machine.get('L3 cache')} L3), "
      f"{summary['threads']} threads: {out['wall_s']:.0f} s end to end, training {summary['train_s']:.0f} s, "
      f"{summary['tokens_per_s']:.0f} tokens/s, peak RSS {out['peak_rss_gib']:.2f} GiB, "
      f"test MRR {m['test']['mrr']:.4f}")
PY
