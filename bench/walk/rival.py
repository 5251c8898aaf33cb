"""The rival path of `make bench-node2vec`: PecanPy's walks, then gensim 4's Word2Vec, on the
same graph and held-out edges as `shardsage node2vec`, with the same hyper-parameters.

Reads a one-part directory from `shardsage partition --parts 1` (its part-00000.h5: the
message-passing CSR, the held-out edges and their fixed negatives, all in the part's global ids),
writes the CSR's undirected edges as an edge list, runs PecanPy (`--mode`: FirstOrderUnweighted
for p = q = 1, its fastest; PreComp otherwise, its fastest for graphs of this size), trains
Word2Vec (skip-gram, negative sampling, min_count 0) on the walks, and scores the held-out edges
by dot product with OGB's rank rule (optimistic and pessimistic ranks averaged), as shardsage does.
Prints and writes (--out) a JSON object: walk and SGNS times, steps/s and tokens/s, peak memory,
and the MRR / Hits@10 / AUC per split.
"""

import argparse
import json
import os
import resource
import tempfile
import time

import h5py
import numpy as np


def held_out_metrics(emb, edges, negs):
    pos = (emb[edges[:, 0]] * emb[edges[:, 1]]).sum(1)
    neg = np.einsum("ij,ikj->ik", emb[edges[:, 0]], emb[negs])
    opt = (neg > pos[:, None]).sum(1)
    pes = (neg >= pos[:, None]).sum(1)
    rank = 1 + (opt + pes) / 2
    auc = 1 - ((opt + pes) / 2 / negs.shape[1]).mean()
    return {"mrr": float((1 / rank).mean()), "hits@10": float((rank <= 10).mean()), "auc": float(auc)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a one-part directory of parts")
    ap.add_argument("--p", type=float, default=1.0)
    ap.add_argument("--q", type=float, default=1.0)
    ap.add_argument("--length", type=int, default=40)
    ap.add_argument("--walks-per-node", type=int, default=10)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--negatives", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--sample", type=float, default=1e-3,
                    help="gensim's down-sampling of frequent nodes (its default 1e-3; 0: off)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="auto")
    ap.add_argument("--out")
    ap.add_argument("--walks-only", action="store_true",
                    help="time PecanPy's walks and stop (no skip-gram)")
    ap.add_argument("--score-embeddings", metavar="FILE",
                    help="only score this embeddings file (shardsage's /embedding, rows by global "
                         "id) with this script's evaluation, for a like-for-like comparison")
    a = ap.parse_args()

    from gensim.models import Word2Vec
    from pecanpy import pecanpy

    with h5py.File(os.path.join(a.data, "part-00000.h5"), "r") as f:
        indptr = f["csr/indptr"][:].astype(np.int64)
        indices = f["csr/indices"][:].astype(np.int64)
        held = {s: (f[f"edges/{s}"][:].astype(np.int64), f[f"edges/{s}_neg"][:].astype(np.int64))
                for s in ("valid", "test") if f"edges/{s}" in f}
        labelled = None
        if "node/label" in f and "node/train_idx" in f:
            labelled = {k: f[f"node/{k}"][:].astype(np.int64)
                        for k in ("label", "train_idx", "valid_idx", "test_idx") if f"node/{k}" in f}
    n = len(indptr) - 1
    if a.score_embeddings:
        with h5py.File(a.score_embeddings, "r") as f:
            emb = f["embedding"][:]
        metrics = {s: held_out_metrics(emb, e, ng) for s, (e, ng) in held.items()}
        if labelled is not None:
            metrics.update(node_classification(emb, labelled))
        result = {"scored": a.score_embeddings, "metrics": metrics}
        print(json.dumps(result))
        if a.out:
            with open(a.out, "w") as f:
                json.dump(result, f, indent=1)
        return
    src = np.repeat(np.arange(n), np.diff(indptr))
    keep = src < indices  # each undirected edge once
    tmp = tempfile.NamedTemporaryFile("w", suffix=".edg", delete=False)
    np.savetxt(tmp, np.stack([src[keep], indices[keep]], 1), fmt="%d", delimiter="\t")
    tmp.close()

    mode = a.mode
    if mode == "auto":
        mode = "FirstOrderUnweighted" if a.p == 1.0 and a.q == 1.0 else "PreComp"
    t0 = time.time()
    g = getattr(pecanpy, mode)(p=a.p, q=a.q, workers=a.threads, verbose=False, random_state=a.seed)
    g.read_edg(tmp.name, weighted=False, directed=False)
    if hasattr(g, "preprocess_transition_probs"):
        g.preprocess_transition_probs()
    t_load = time.time() - t0
    t1 = time.time()
    walks = g.simulate_walks(num_walks=a.walks_per_node, walk_length=a.length)
    t_walk = time.time() - t1
    os.unlink(tmp.name)
    tokens = sum(len(w) for w in walks)
    steps = sum(len(w) - 1 for w in walks)
    if a.walks_only:
        result = {"implementation": f"pecanpy {mode}", "threads": a.threads, "load_s": t_load,
                  "walk_s": t_walk, "walk_steps": steps, "walk_steps_per_s": steps / t_walk,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        print(json.dumps(result))
        if a.out:
            with open(a.out, "w") as f:
                json.dump(result, f, indent=1)
        return
    t2 = time.time()
    model = Word2Vec(walks, vector_size=a.dim, window=a.window, min_count=0, sg=1, hs=0,
                     negative=a.negatives, workers=a.threads, epochs=a.epochs, seed=a.seed,
                     sample=a.sample)
    t_sgns = time.time() - t2
    emb = np.zeros((n, a.dim), dtype=np.float32)
    for i, key in enumerate(model.wv.index_to_key):
        emb[int(key)] = model.wv.vectors[i]
    # PecanPy names nodes by the ids in the edge list; nodes without edges get zero vectors.
    ids = [int(k) for k in g.nodes] if hasattr(g, "nodes") else None
    result = {
        "implementation": f"pecanpy {pecanpy.__name__} {mode} + gensim Word2Vec",
        "gensim": __import__("gensim").__version__,
        "threads": a.threads,
        "num_nodes": n,
        "nodes_in_walks": len(ids) if ids else None,
        "settings": vars(a),
        "load_s": t_load,
        "walk_s": t_walk,
        "walk_steps": steps,
        "walk_steps_per_s": steps / t_walk,
        "sgns_s": t_sgns,
        "sgns_tokens_per_s": tokens * a.epochs / t_sgns,
        "wall_s": time.time() - t0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "metrics": {s: held_out_metrics(emb, e, ng) for s, (e, ng) in held.items()},
    }
    if labelled is not None:
        result["metrics"].update(node_classification(emb, labelled))
    print(json.dumps(result))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


def node_classification(emb, d):
    """sklearn's one-vs-rest LogisticRegression (C = 1) on standardised embeddings, trained on
    the train split: micro- and macro-F1 on valid and test, as shardsage reports them."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import StandardScaler

    y = d["label"]
    tr = d["train_idx"]
    scaler = StandardScaler().fit(emb[tr])
    clf = OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=1000)).fit(scaler.transform(emb[tr]), y[tr])
    out = {}
    for split, key in (("valid", "valid_idx"), ("test", "test_idx")):
        if key in d:
            idx = d[key]
            pred = clf.predict(scaler.transform(emb[idx]))
            out[f"{split}_nodeclass"] = {
                "micro_f1": float(f1_score(y[idx], pred, average="micro")),
                "macro_f1": float(f1_score(y[idx], pred, average="macro")),
                "count": float(len(idx)),
            }
    return out


if __name__ == "__main__":
    main()
