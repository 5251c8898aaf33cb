#!/usr/bin/env bash
# `make bench-walks`: random walks alone, `shardsage walk` (its HDF5 file written included) and
# PecanPy (`--walks-only`: FirstOrderUnweighted for DeepWalk, PreComp for node2vec) back to back
# on the same one-part graph, walks and threads, for DeepWalk and node2vec (p 1, q 0.5); writes
# bench/results/walks-<graph>.json with the machine's CPU and caches and prints a table.
#
#   bench/walk/walks.sh [PARTS_DIR]   (default bench/.data/cit-200k-p1, a one-part directory)
# THREADS (default 2), WALKS (walks per node, default 10), LENGTH (default 40).
set -euo pipefail
cd "$(dirname "$0")/../.."
parts=${1:-bench/.data/cit-200k-p1}
threads=${THREADS:-2}
walks=${WALKS:-10}
length=${LENGTH:-40}
bin=target/release/shardsage
[ -f "$parts/manifest.json" ] || { echo "no parts at $parts (shardsage partition --parts 1)" >&2; exit 1; }
bench/walk/setup.sh
name=$(basename "$parts")
name=${name%-p1}
runs=bench/runs/walks
mkdir -p "$runs" bench/results
records=()
for pq in "1 1" "1 0.5"; do
  read -r p q <<<"$pq"
  ours=$runs/$name-p$p-q$q-shardsage.txt
  theirs=$runs/$name-p$p-q$q-pecanpy.json
  /usr/bin/time -f "peak_kib %M" -o "$ours.time" "$bin" walk --data "$parts" \
    --out "$runs/$name.h5" --threads "$threads" --walks-per-node "$walks" --length "$length" \
    --p "$p" --q "$q" > "$ours"
  bench/walk/.venv/bin/python bench/walk/rival.py --data "$parts" --threads "$threads" \
    --walks-per-node "$walks" --length "$length" --p "$p" --q "$q" --walks-only \
    --out "$theirs" > /dev/null
  records+=("$p" "$q" "$ours" "$theirs")
done
rm -f "$runs/$name.h5"
python3 - "bench/results/walks-$name.json" "$parts" "$threads" "$walks" "$length" "${records[@]}" <<'PY'
import json, re, subprocess, sys
out, parts, threads, walks, length, rest = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
keep = ("Model name", "L2 cache", "L3 cache", "CPU(s)")
machine = {l.split(":")[0].strip(): l.split(":", 1)[1].strip() for l in cpu.splitlines()
           if l.split(":")[0].strip() in keep}
commit = subprocess.run(["git", "log", "-1", "--format=%h %s"], capture_output=True, text=True).stdout.strip()[:72]
runs = []
for i in range(0, len(rest), 4):
    p, q, ours, theirs = rest[i:i + 4]
    text = open(ours).read()
    m = re.search(r"in ([0-9.]+) s \(([0-9.]+)M steps/s\)", text)
    if not m:
        sys.exit(f"no timing line in {ours}: {text!r}")
    kib = int(open(ours + ".time").read().split()[-1])
    runs.append({"p": float(p), "q": float(q),
                 "shardsage": {"walk_s_including_hdf5_write": float(m.group(1)),
                               "steps_per_s": float(m.group(2)) * 1e6, "peak_rss_mib": kib / 1024},
                 "pecanpy": json.load(open(theirs))})
json.dump({"machine": machine, "commit": commit,
           "graph": parts, "settings": f"{walks} walks x {length} per node, {threads} threads",
           "runs": runs}, open(out, "w"), indent=1)
t = int(threads)
print(f"{machine.get('Model name')}, L3 {machine.get('L3 cache')}; {parts}, {walks} x {length} per node, {t} threads")
print("| walk | shardsage steps/s (per thread) | PecanPy steps/s | PecanPy preprocessing s | ratio | peak RSS MiB (ours / theirs) |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for r in runs:
    o, th = r["shardsage"], r["pecanpy"]
    kind = "DeepWalk" if r["p"] == 1 and r["q"] == 1 else f"node2vec (p {r['p']:g}, q {r['q']:g})"
    print(f"| {kind} | {o['steps_per_s'] / 1e6:.2f}M ({o['steps_per_s'] / t / 1e6:.2f}M) | "
          f"{th['walk_steps_per_s'] / 1e6:.2f}M ({th['implementation']}) | {th['load_s']:.1f} | "
          f"{o['steps_per_s'] / th['walk_steps_per_s']:.2f}x | {o['peak_rss_mib']:.0f} / {th['peak_rss_mib']:.0f} |")
print("wrote", out)
PY
