#!/usr/bin/env bash
# Records what scripts/gpu-run.sh wrote to $OUT on a GPU machine (the folder the device tool
# hands back) in this checkout: results/gpu-*.json and .svg into bench/results/, system.txt as
# bench/results/gpu-system.txt, and each section of RESULTS-gpu.md into bench/RESULTS.md (a
# section with the same markers is replaced, a new one appended). Idempotent; commit afterwards.
#
# usage: scripts/gpu-record.sh DIR   (DIR holds results/, RESULTS-gpu.md, system.txt)
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR (the \$OUT folder of a scripts/gpu-run.sh run)" >&2; exit 2; }
src=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
[ -f "$src/phases.tsv" ] || { echo "gpu-record: $src has no phases.tsv: not a gpu-run.sh output folder" >&2; exit 1; }

shopt -s nullglob
copied=()
for f in "$src"/results/gpu-*.json "$src"/results/gpu-*.svg; do
    cp "$f" bench/results/
    copied+=("bench/results/${f##*/}")
done
if [ -f "$src/system.txt" ]; then
    cp "$src/system.txt" bench/results/gpu-system.txt
    copied+=(bench/results/gpu-system.txt)
fi
((${#copied[@]})) || { echo "gpu-record: no results in $src/results (see $src/phases.tsv)" >&2; exit 1; }

if [ -s "$src/RESULTS-gpu.md" ]; then
    python3 - "$src/RESULTS-gpu.md" bench/RESULTS.md <<'EOF'
import re, sys
new, path = open(sys.argv[1]).read(), sys.argv[2]
text = open(path).read()
for m in re.finditer(r"<!-- (bench-gpu-[a-z0-9-]+):begin -->.*?<!-- \1:end -->", new, re.S):
    name, section = m.group(1), m.group(0)
    old = re.search(r"<!-- %s:begin -->.*?<!-- %s:end -->" % (name, name), text, re.S)
    if old:
        text = text[: old.start()] + section + text[old.end():]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    print("gpu-record: section %s of %s" % (name, path))
open(path, "w").write(text)
EOF
fi
echo "gpu-record: copied ${copied[*]}"
echo "gpu-record: phases of that run:"
column -t -s $'\t' "$src/phases.tsv" 2>/dev/null || cat "$src/phases.tsv"
