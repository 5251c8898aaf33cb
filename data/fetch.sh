#!/usr/bin/env bash
# Fetches a public graph dataset and converts it with `shardsage ingest`, on a machine with
# internet access:
#
#   data/fetch.sh NAME [OUT_DIR]        (OUT_DIR defaults to data/)
#
# NAME is one of
#   ogbl-citation2   OGB link prediction, 2.9M papers / 30.6M citations, OGB's own time split and
#                    1000 fixed negatives per held-out edge (split/time/*.pt)
#   ogbn-arxiv       OGB node classification, 169k papers / 1.17M citations, 40 classes, OGB's
#                    time split (split/time/*.csv.gz)
#   cit-HepTh        SNAP arXiv hep-th citations, 27.8k papers / 352k citations, no features
#   cit-HepPh        SNAP arXiv hep-ph citations, 34.5k papers / 421k citations, no features
#   cit-Patents      SNAP US patent citations, 3.77M patents / 16.5M citations, no features
#
# The download goes to OUT_DIR/raw/NAME/ (kept, so a rerun only converts), the dataset to
# OUT_DIR/NAME.h5. SNAP graphs get 128-dim seeded N(0,1) features, a random per-source split
# (5% / 5%) and 100 fixed negatives per held-out edge, as this project's benchmarks use them.
# Extra arguments for ingest go through INGEST_ARGS, e.g. INGEST_ARGS="--num-neg 1000".
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:?usage: data/fetch.sh NAME [OUT_DIR] (see the header of this script)}
out=${2:-$root/data}
B=${SHARDSAGE:-$root/target/release/shardsage}
[ -x "$B" ] || { echo "fetch: $B not built; run 'make build' first" >&2; exit 1; }
raw="$out/raw/$name"
mkdir -p "$raw"

fetch() { # URL FILE
  if [ ! -s "$2" ]; then
    echo "fetch: downloading $1"
    curl -fL --retry 3 -o "$2.part" "$1"
    mv "$2.part" "$2"
  fi
}

case "$name" in
  ogbl-citation2)
    fetch http://snap.stanford.edu/ogb/data/linkproppred/citation-v2.zip "$raw/citation-v2.zip"
    [ -d "$raw/citation-v2" ] || (cd "$raw" && unzip -q citation-v2.zip)
    "$B" ingest --ogb "$raw/citation-v2" --name ogbl-citation2 ${INGEST_ARGS:-} --out "$out/$name.h5"
    ;;
  ogbn-arxiv)
    fetch http://snap.stanford.edu/ogb/data/nodeproppred/arxiv.zip "$raw/arxiv.zip"
    [ -d "$raw/arxiv" ] || (cd "$raw" && unzip -q arxiv.zip)
    "$B" ingest --ogb "$raw/arxiv" --name ogbn-arxiv ${INGEST_ARGS:-} --out "$out/$name.h5"
    ;;
  cit-HepTh | cit-HepPh | cit-Patents)
    fetch "https://snap.stanford.edu/data/$name.txt.gz" "$raw/$name.txt.gz"
    "$B" ingest --edges "$raw/$name.txt.gz" --name "$name" --num-neg 100 --seed 1 \
      ${INGEST_ARGS:-} --out "$out/$name.h5"
    ;;
  *)
    echo "fetch: unknown dataset '$name' (see the header of $0)" >&2
    exit 2
    ;;
esac
echo "fetch: wrote $out/$name.h5; next: $B partition --dataset $out/$name.h5 --parts P --out-dir $out/$name-parts"
