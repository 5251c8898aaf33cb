"""Writes the .pt fixtures of tests/ingest_ogb_pt.rs with real torch (run once; the outputs are
committed, so the tests need neither Python nor torch):

  python3 tests/data/make_pt_fixtures.py    (with torch installed, e.g. bench/pyg/.venv)

- pt/mixed.pt: a dict of tensors of several dtypes and shapes, an OrderedDict, a list of plain
  values, a view with a storage offset and two tensors sharing one storage;
- pt/noncontiguous.pt: a transposed view (refused: not contiguous);
- pt/legacy.pt: the pre-1.6 format (refused: a bare pickle);
- pt/numpy.pt: a numpy array inside the pickle (refused: not a tensor);
- pt/truncated.pt: the first half of mixed.pt (refused: damaged archive);
- pt/out_of_range.pt: a held-out split file naming node 99 of a 40-node graph;
- ogb-citation-tiny/: an OGB raw directory in ogbl-citation2's layout (raw/*.csv.gz and
  split/time/{train,valid,test}.pt) of 40 papers, with 3 negatives per held-out edge.
"""

import collections
import gzip
import os

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
pt = os.path.join(here, "pt")
os.makedirs(pt, exist_ok=True)

base = torch.arange(20, dtype=torch.int64)
mixed = {
    "i64": torch.tensor([[0, -1, 2], [3, 2**40, -(2**33)]], dtype=torch.int64),
    "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
    "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
    "bool": torch.tensor([True, False, True]),
    "f32": torch.tensor([1.5, -2.25, 3.0e-3], dtype=torch.float32),
    "f64": torch.tensor([[0.1], [1e300]], dtype=torch.float64),
    "empty": torch.zeros(0, 4, dtype=torch.int64),
    "view": base[5:9],
    "shared": base[:3],
    "ordered": collections.OrderedDict([("x", torch.tensor([9, 8]))]),
    "plain": [1, 300, 70000, -5, 2**62, 2.5, "text", None, True, (1, 2)],
}
torch.save(mixed, os.path.join(pt, "mixed.pt"))
torch.save({"t": torch.arange(12).reshape(3, 4).t()}, os.path.join(pt, "noncontiguous.pt"))
torch.save({"source_node": torch.arange(3)}, os.path.join(pt, "legacy.pt"), _use_new_zipfile_serialization=False)
torch.save({"source_node": np.arange(3)}, os.path.join(pt, "numpy.pt"))
torch.save(
    {
        "source_node": torch.tensor([30, 99]),
        "target_node": torch.tensor([1, 2]),
        "target_node_neg": torch.zeros(2, 3, dtype=torch.int64),
    },
    os.path.join(pt, "out_of_range.pt"),
)
with open(os.path.join(pt, "mixed.pt"), "rb") as f:
    whole = f.read()
with open(os.path.join(pt, "truncated.pt"), "wb") as f:
    f.write(whole[: len(whole) // 2])

# A tiny ogbl-citation2: 40 papers over 4 years, each citing up to 4 older papers; the newest
# year's papers with at least 3 references lose one to validation and one to test.
rng = np.random.default_rng(0)
n = 40
year = np.repeat([2016, 2017, 2018, 2019], 10)
edges = []
for v in range(10, n):
    older = np.nonzero(year < year[v])[0]
    for t in rng.choice(older, size=min(4, len(older)), replace=False):
        edges.append((v, int(t)))
edges = np.array(edges)
held = {"valid": [], "test": []}
keep = np.ones(len(edges), dtype=bool)
for v in range(30, n):
    rows = np.nonzero(edges[:, 0] == v)[0]
    if len(rows) >= 3:
        held["valid"].append(rows[0])
        held["test"].append(rows[1])
        keep[rows[:2]] = False
train = edges[keep]
root = os.path.join(here, "ogb-citation-tiny")
raw = os.path.join(root, "raw")
split = os.path.join(root, "split", "time")
os.makedirs(raw, exist_ok=True)
os.makedirs(split, exist_ok=True)


def write_gz(name, lines):
    with gzip.GzipFile(os.path.join(raw, name), "wb", mtime=0) as f:
        f.write(("\n".join(lines) + "\n").encode())


write_gz("edge.csv.gz", [f"{a},{b}" for a, b in train])
write_gz("num-node-list.csv.gz", [str(n)])
write_gz("num-edge-list.csv.gz", [str(len(train))])
feat = rng.normal(size=(n, 8)).astype(np.float32)
write_gz("node-feat.csv.gz", [",".join(f"{x:.6f}" for x in row) for row in feat])
write_gz("node_year.csv.gz", [str(y) for y in year])
t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
torch.save({"source_node": t(train[:, 0]), "target_node": t(train[:, 1])}, os.path.join(split, "train.pt"))
for name, rows in held.items():
    e = edges[rows]
    neg = rng.integers(0, n, size=(len(e), 3))
    torch.save(
        {"source_node": t(e[:, 0]), "target_node": t(e[:, 1]), "target_node_neg": t(neg)},
        os.path.join(split, f"{name}.pt"),
    )
print("train", len(train), "valid", len(held["valid"]), "test", len(held["test"]))
